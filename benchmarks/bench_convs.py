"""Single convolutions of AlexNet, GoogLeNet and VGG16: jaxviz's conv2d against torch, same run.

For each layer geometry (batch ``--batch``, float32, random normal input and kernel):
forward (``y = conv(x, w)``) and input gradient (``dx = J^T dy`` for a random ``dy``;
no weight gradient), jax jitted (``jaxviz.models.layers.conv2d``, compiled before
timing) and torch (``F.conv2d`` and ``torch.nn.grad.conv2d_input``, NCHW), the contenders
called in turn; median of ``--pairs`` calls after one warm-up, milliseconds, and jaxviz's
speedup: the median over those paired rounds of torch time / jax time (above 1: jaxviz is
faster), with each side's GFLOP/s (``2 B H' W' C_out C_in k^2`` over the median time).
Both sides run on a GPU when jax and torch both see one (strict fp32,
``common.torch_device``), else on the CPU. ``--models`` picks the networks.

``--profile`` (GPU only) also names the kernels each side runs for each layer: both
frameworks' launches recorded by torch's profiler (CUPTI sees every kernel in the process,
jax's included), with each kernel's share of the device time; this is what tells XLA's
choice of a cuDNN algorithm from torch's ``cudnn.benchmark`` choice for the same shape.

Run it twice to see what the XLA:CPU switch does (under a minute each on 2 cores)::

    PYTHONPATH=. python benchmarks/bench_convs.py [--batch 32] [--pairs 5] [--out FILE]
    PYTHONPATH=. python benchmarks/bench_convs.py --xla-default    # jaxlib's default
"""

from __future__ import annotations

import argparse
import os
import statistics

import numpy as np

from common import (PROFILE_CALLS, add_pairs_option, add_xla_option, apply_xla_option,
                    kernel_profile, speedup, time_alternating, torch_device, torch_waiter,
                    publish)

# name, input size, C_in, C_out, kernel, stride, padding
LAYERS = [
    ("alexnet conv1", 224, 3, 64, 11, 4, 2),
    ("alexnet conv2", 27, 64, 192, 5, 1, 2),
    ("alexnet conv3", 13, 192, 384, 3, 1, 1),
    ("alexnet conv4", 13, 384, 256, 3, 1, 1),
    ("alexnet conv5", 13, 256, 256, 3, 1, 1),
    ("googlenet conv1", 224, 3, 64, 7, 2, 3),
    ("googlenet inception3a 3x3", 28, 96, 128, 3, 1, 1),
    ("googlenet inception3a 1x1", 28, 192, 64, 1, 1, 0),
    ("vgg16 conv1_2", 224, 64, 64, 3, 1, 1),
    ("vgg16 conv2_2", 112, 128, 128, 3, 1, 1),
    ("vgg16 conv3_2", 56, 256, 256, 3, 1, 1),
    ("vgg16 conv4_2", 28, 512, 512, 3, 1, 1),
    ("vgg16 conv5_2", 14, 512, 512, 3, 1, 1),
]
MODELS = ("alexnet", "googlenet", "vgg16")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--models", default=",".join(MODELS),
                   help=f"comma-separated, from {', '.join(MODELS)} (default: all)")
    add_pairs_option(p, 5)
    p.add_argument("--out", default=None, help="also write the markdown table to this file")
    p.add_argument("--profile", action="store_true",
                   help="GPU only: name the kernels each side runs for each layer")
    add_xla_option(p)
    args = p.parse_args(argv)
    models = [m for m in args.models.split(",") if m]
    unknown = sorted(set(models) - set(MODELS))
    if unknown or not models:
        p.error(f"--models: expected names from {', '.join(MODELS)}, got {args.models!r}")
    xla = apply_xla_option(args)

    import jax
    import jax.numpy as jnp
    import torch
    import torch.nn.functional as F

    from jaxviz.models import layers

    dev, where = torch_device()
    if args.profile and dev.type != "cuda":
        p.error(f"--profile needs a GPU that jax and torch both see; this run is on {where}")
    sync = torch_waiter(dev)
    rows = []
    profiles = []
    rng = np.random.default_rng(0)
    for name, size, cin, cout, k, s, pad in LAYERS:
        if name.split()[0] not in models:
            continue
        x = rng.standard_normal((args.batch, size, size, cin), dtype=np.float32)
        w = rng.standard_normal((k, k, cin, cout), dtype=np.float32)

        def fwd(x, w):
            return layers.conv2d(x, w, stride=s, padding=pad)

        y = jax.eval_shape(fwd, x, w)
        dy = rng.standard_normal(y.shape, dtype=np.float32)
        xj, wj, dyj = jnp.asarray(x), jnp.asarray(w), jnp.asarray(dy)
        j_fwd = jax.jit(fwd).lower(xj, wj).compile()
        j_dx = jax.jit(lambda x, w, dy: jax.vjp(lambda x: fwd(x, w), x)[1](dy)[0]).lower(
            xj, wj, dyj).compile()
        xt = torch.from_numpy(x.transpose(0, 3, 1, 2).copy()).to(dev)
        wt = torch.from_numpy(w.transpose(3, 2, 0, 1).copy()).to(dev)
        dyt = torch.from_numpy(dy.transpose(0, 3, 1, 2).copy()).to(dev)

        def t_fwd():
            F.conv2d(xt, wt, stride=s, padding=pad)
            sync()

        def t_dx():
            torch.nn.grad.conv2d_input(xt.shape, wt, dyt, stride=s, padding=pad)
            sync()

        (jf, tf, jd, td), _ = time_alternating([
            lambda: j_fwd(xj, wj).block_until_ready(), t_fwd,
            lambda: j_dx(xj, wj, dyj).block_until_ready(), t_dx], args.pairs)
        if args.profile:
            for task, calls in (("fwd", (lambda: j_fwd(xj, wj).block_until_ready(), t_fwd)),
                                ("dx", (lambda: j_dx(xj, wj, dyj).block_until_ready(), t_dx))):
                for side, call in zip(("jax", "torch"), calls):
                    profiles.append((name, task, side, kernel_profile(call, sync)))
        gflop = 2 * np.prod(y.shape) * cin * k * k / 1e9
        rows.append((name, f"{k}x{k}/{s}, {cin}->{cout} at {size}", gflop, tf, jf, td, jd))
        print(f"{name}: fwd speedup {speedup(tf, jf):.2f}, dx speedup {speedup(td, jd):.2f}",
              flush=True)

    lines = [f"Batch {args.batch}, float32, {where}, {os.cpu_count()} cores, torch "
             f"{torch.get_num_threads()} threads; jax {jax.__version__}, torch {torch.__version__}; "
             f"{xla}. Median of {args.pairs} calls, ms; speedup = median over the {args.pairs} "
             f"paired rounds of torch / jax time (above 1: jaxviz faster).", "",
             "| layer | geometry | GFLOP | torch fwd | jax fwd | fwd speedup vs torch (>1: jaxviz "
             "faster) | fwd GFLOP/s torch / jax | torch dx | jax dx | dx speedup vs torch (>1: "
             "jaxviz faster) | dx GFLOP/s torch / jax |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, geo, gflop, tf, jf, td, jd in rows:
        med = {k: statistics.median(v) * 1e3 for k, v in dict(tf=tf, jf=jf, td=td, jd=jd).items()}
        rate = {k: gflop / (v / 1e3) for k, v in med.items()}
        lines.append(f"| {name} | {geo} | {gflop:.2f} | {med['tf']:.2f} | {med['jf']:.2f} | "
                     f"{speedup(tf, jf):.2f} | {rate['tf']:.0f} / {rate['jf']:.0f} | "
                     f"{med['td']:.2f} | {med['jd']:.2f} | {speedup(td, jd):.2f} | "
                     f"{rate['td']:.0f} / {rate['jd']:.0f} |")
    if profiles:
        lines += ["", f"Kernels, {PROFILE_CALLS} calls each side (torch.profiler over CUDA "
                  "activity): kernel name, launches a call, device microseconds a call and "
                  "that kernel's share of the side's device time.", "",
                  "| layer | task | side | kernel | launches a call | us a call | share |",
                  "|---|---|---|---|---|---|---|"]
        for name, task, side, kernels in profiles:
            total = sum(us for _, _, us in kernels) or 1.0
            if not kernels:
                lines.append(f"| {name} | {task} | {side} | (no kernel recorded) | | | |")
            for kname, count, us in kernels[:4]:
                lines.append(f"| {name} | {task} | {side} | `{kname[:90]}` | "
                             f"{count / PROFILE_CALLS:g} | {us / PROFILE_CALLS:.1f} | "
                             f"{us / total:.0%} |")
    publish("\n".join(lines), args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

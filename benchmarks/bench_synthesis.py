"""Channel sweep on AlexNet conv5 at 128 px: jaxviz against PyTorch, same work, same run.

Each image maximizes the spatial mean of one conv5 channel (pre-ReLU, torchvision's
``features.10``) of a seeded random AlexNet (``torch.manual_seed(0)``, ported with
``weights_port``). Two configurations, both with Adam (lr 0.05) and ImageNet
normalization before the model:

  lucid   Fourier parameterization (1/f spectrum, decorrelated colour, sigmoid) and
          lucid's standard transforms (pad 12, jitter 8, scale, rotate, jitter 4),
          drawn per image and step (the model sees 140 px);
  pixels  bare pixels (the parameters are the image), no transforms (128 px).

Three implementations per configuration:

  torch loop     one channel at a time, a batch of one image (the usual PyTorch way);
  torch batched  all channels as one batch, the same parameterization, transforms
                 (per-image crops, ``affine_grid``/``grid_sample`` warps) and optimizer;
  jaxviz         ``jv.synthesis.sweep(..., batch_size=C)``: one compiled step per
                 iteration for the whole batch.

Reported, per configuration: channel-steps per second (median of ``--pairs`` timed
rounds after the first calls and a warm-up, each round running jaxviz with its CPU
default, a Python loop of compiled steps, jaxviz with ``loop="scan"`` and torch batched
in turn; the torch loop is timed apart, ``--pairs`` - 1 times, on ``--loop-channels``
channels); jaxviz's speedup against the best torch contender (the higher rate: the median
over the rounds of torch time / jax time for torch batched, the ratio of medians for the
loop) and against the torch loop (above 1: jaxviz faster); and the fraction of this
machine's fp32 limit reached by the jax sweep, from XLA's FLOP count of the forward and
input-gradient to conv5 and the fp32 peak: ``--peak-gflops``, or by default the faster of
a jitted jax and a torch 2048 x 2048 matmul (8192 on a GPU) measured at the start
(``common.measured_peak_gflops``; about 250 GFLOP/s on the 2-core development CPU). The
speedup against the best torch contender is printed as an acceptance row for
``python -m benchmarks`` (target ``sweep``).

A second table gives each contender's first sweep, its median, and their difference
(for jax: tracing and compiling).

Run (from the repository root; about 4 minutes on 2 CPU cores)::

    PYTHONPATH=. python benchmarks/bench_synthesis.py [--channels 32] [--steps 20] \\
        [--loop-channels 8] [--pairs 5] [--out FILE]
"""

from __future__ import annotations

import argparse
import datetime
import math
import os
import platform
import statistics
import sys
import time

import numpy as np

from common import (add_pairs_option, add_tf32_option, add_xla_option, apply_xla_option,
                    emit_row, measured_peak_gflops, seeded_alexnet, speedup, time_alternating,
                    timed, torch_device, publish, xla_flops)

SIZE, LAYER, LR = 128, "conv5", 0.05


# --- torch: the same parameterizations, transforms and optimizer ------------------------------


def torch_sweep(tmodel, channels, steps: int, config: str, seed: int = 0):
    """Optimizes one image per channel as one batch, on the device ``tmodel`` is on; returns
    the images (B, 3, H, W) on the CPU (which waits for a GPU to finish). The random draws
    come from a CPU generator (the same on either device) and move to the device."""
    import torch
    import torch.nn.functional as F

    from jaxviz.synthesis import param as jparam

    dev = next(tmodel.parameters()).device
    g = torch.Generator().manual_seed(seed)
    b = len(channels)
    idx = torch.as_tensor(channels, device=dev)
    mean = torch.tensor([0.485, 0.456, 0.406], device=dev).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225], device=dev).view(1, 3, 1, 1)
    features = tmodel.features[:11]
    if config == "lucid":
        scale = torch.as_tensor(jparam.spectrum_scale(SIZE, SIZE), dtype=torch.float32, device=dev)
        color = torch.as_tensor(jparam.COLOR_CORRELATION_SQRT
                                / np.max(np.linalg.norm(jparam.COLOR_CORRELATION_SQRT, axis=0)),
                                dtype=torch.float32, device=dev)
        p = 0.01 * torch.randn(b, 2, 3, SIZE, SIZE // 2 + 1, generator=g)
    else:
        p = torch.empty(b, 3, SIZE, SIZE).uniform_(-1, 1, generator=g)
    p = p.to(dev).requires_grad_(True)
    opt = torch.optim.Adam([p], lr=LR)
    scales = torch.tensor([1 + (i - 5) / 50.0 for i in range(11)])
    angles = torch.tensor(list(range(-10, 11)) + 5 * [0], dtype=torch.float32) * math.pi / 180

    def image():
        if config != "lucid":
            return p
        spec = torch.complex(p[:, 0], p[:, 1]) * scale
        t = torch.fft.irfft2(spec, s=(SIZE, SIZE)) / 4.0
        return torch.sigmoid(torch.einsum("bchw,dc->bdhw", t, color))

    def jitter(x, d):
        h, w = x.shape[2] - d, x.shape[3] - d
        off = torch.randint(0, d + 1, (b, 2), generator=g).tolist()  # host ints: no GPU sync
        return torch.stack([x[i, :, off[i][0]:off[i][0] + h, off[i][1]:off[i][1] + w]
                            for i in range(b)])

    def warp(x, theta):
        grid = F.affine_grid(theta, list(x.shape), align_corners=True)
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=True)

    def transform(x):
        x = F.pad(x, (12, 12, 12, 12), value=0.5)
        x = jitter(x, 8)
        s = scales[torch.randint(0, len(scales), (b,), generator=g)].to(dev)
        zero = torch.zeros(b, device=dev)
        x = warp(x, torch.stack([torch.stack([1 / s, zero, zero], 1),
                                 torch.stack([zero, 1 / s, zero], 1)], 1))
        a = angles[torch.randint(0, len(angles), (b,), generator=g)].to(dev)
        c, sn = torch.cos(a), torch.sin(a)
        x = warp(x, torch.stack([torch.stack([c, -sn, zero], 1),
                                 torch.stack([sn, c, zero], 1)], 1))
        return jitter(x, 4)

    for _ in range(steps):
        x = image()
        if config == "lucid":
            x = transform(x)
        act = features((x - mean) / std)
        values = act[torch.arange(b, device=dev), idx].mean(dim=(1, 2))
        opt.zero_grad()
        (-values.sum()).backward()
        opt.step()
    with torch.no_grad():
        return image().cpu()


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--channels", type=int, default=32)
    p.add_argument("--loop-channels", type=int, default=8,
                   help="channels for the one-at-a-time torch loop (its rate is per channel-step)")
    p.add_argument("--steps", type=int, default=20)
    add_pairs_option(p, 5)
    p.add_argument("--peak-gflops", type=float, default=None,
                   help="the fp32 peak, GFLOP/s (default: measured with a matmul at the start)")
    p.add_argument("--configs", default="lucid,pixels",
                   help="comma-separated configurations among lucid, pixels (default both)")
    p.add_argument("--out", default=None)
    add_xla_option(p)
    add_tf32_option(p)
    args = p.parse_args(argv)
    names = [c.strip() for c in args.configs.split(",") if c.strip()]
    if not names or set(names) - {"lucid", "pixels"}:
        p.error(f"--configs: expected names among lucid, pixels; got {args.configs!r}")
    xla = apply_xla_option(args)

    import jax
    import jax.numpy as jnp
    import torch

    import jaxviz as jv
    from jaxviz.synthesis import param

    tdev, device_note = torch_device(args.allow_tf32)
    tmodel, model, variables = seeded_alexnet(tdev)
    channels = list(range(args.channels))
    loop_channels = channels[:args.loop_channels]
    configs = {
        "lucid": dict(param=param.Fourier(), transforms="standard"),
        "pixels": dict(param=param.Pixels(-1.0, 1.0), transforms=None),
    }
    configs = {name: configs[name] for name in names}

    def flops_per_image(seen: int) -> float:
        """Forward and input gradient to conv5 of one image (XLA:CPU's count)."""
        def f(x, v):
            return jv.activations(model, v, x, LAYER)[LAYER].mean(axis=(1, 2))[:, 0].sum()

        x = jax.ShapeDtypeStruct((1, seen, seen, 3), jnp.float32)
        return xla_flops(jax.grad(f), x, variables) or math.nan

    if args.peak_gflops is None:
        peak = measured_peak_gflops()
        args.peak_gflops = peak.best
        kind = "TF32" if args.allow_tf32 and tdev.type == "cuda" else "fp32"
        peak_note = f"{kind} peak {peak.phrase()}"
    else:
        peak_note = f"fp32 peak {args.peak_gflops:.0f} GFLOP/s (--peak-gflops)"
    rows, firsts = [], []
    load_before = os.getloadavg()[0]
    for name, cfg in configs.items():
        def jax_sweep(loop="python"):
            return np.asarray(jv.synthesis.sweep(model, variables, LAYER, channels,
                                                 key=jax.random.key(0), steps=args.steps,
                                                 size=SIZE, batch_size=len(channels),
                                                 progress=False, loop=loop, **cfg))

        contenders = {"jaxviz": jax_sweep, "jaxviz, lax.scan loop": lambda: jax_sweep("scan"),
                      "torch batched": lambda: torch_sweep(tmodel, channels, args.steps, name)}
        first = {}
        for who, fn in contenders.items():  # first calls: jax traces and compiles
            t0 = time.perf_counter()
            fn()
            first[who] = time.perf_counter() - t0
        times, _ = time_alternating(list(contenders.values()), args.pairs)
        times = dict(zip(contenders, times))
        med = {who: statistics.median(ts) for who, ts in times.items()}
        firsts.append((name, [(who, first[who], med[who]) for who in contenders]))

        def loop():
            for c in loop_channels:
                torch_sweep(tmodel, [c], args.steps, name, seed=c)

        lmed = timed(loop, max(1, args.pairs - 1))[0]
        work = len(channels) * args.steps
        rate = {who: work / m for who, m in med.items()}
        rate["torch loop"] = len(loop_channels) * args.steps / lmed
        jt = times["jaxviz"]
        gain_loop = rate["jaxviz"] / rate["torch loop"]
        if rate["torch loop"] > rate["torch batched"]:
            best, gain = "torch loop", gain_loop
        else:
            best, gain = "torch batched", speedup(times["torch batched"], jt)
        emit_row("sweep", f"channel sweep ({name}), AlexNet conv5 {SIZE} px, "
                 f"{len(channels)} channels x {args.steps} steps", best, gain, args.pairs)
        seen = SIZE + 12 if name == "lucid" else SIZE
        gflop = flops_per_image(seen) * work / 1e9
        rows.append((name, rate["torch loop"], rate["torch batched"], rate["jaxviz"],
                     rate["jaxviz, lax.scan loop"], best, gain, gain_loop,
                     gflop / med["jaxviz"] / args.peak_gflops, med["jaxviz"]))

    header = (f"AlexNet conv5, {SIZE} px, {args.channels} channels x {args.steps} Adam steps "
              f"(torch loop: {args.loop_channels} channels, one at a time); float32, device: {device_note}; "
              f"{os.cpu_count()} cores, torch {torch.get_num_threads()} threads; median of "
              f"{args.pairs} timed rounds after a warm-up; speedup = median over the rounds of "
              f"torch / jax time. jax {jax.__version__}, torch "
              f"{torch.__version__}, Python {platform.python_version()}. "
              f"{datetime.date.today().isoformat()}; load average {load_before:.2f} before, "
              f"{os.getloadavg()[0]:.2f} after. {xla}. {peak_note}.")
    lines = [header, "",
             "| configuration | torch loop ch-steps/s | torch batched ch-steps/s | jaxviz ch-steps/s "
             "| jaxviz, lax.scan loop ch-steps/s | best torch "
             "| speedup vs best torch (>1: jaxviz faster) "
             "| speedup vs torch loop (>1: jaxviz faster) | fraction of fp32 peak "
             "| jaxviz sweep s |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for name, lr, br, jr, sr, best, gain, gain_loop, frac, jsec in rows:
        lines.append(f"| {name} | {lr:.1f} | {br:.1f} | {jr:.1f} | {sr:.1f} | {best} | {gain:.2f} "
                     f"| {gain_loop:.2f} | {frac:.1%} | {jsec:.2f} |")
    lines += ["", "First sweep against the median, seconds (jax: tracing and compiling the step "
              "in the first; the scan loop compiles all steps as one program):", "",
              "| configuration | contender | first sweep s | median s | compile (first - median) s |",
              "|---|---|---|---|---|"]
    for name, entries in firsts:
        for who, first, median in entries:
            lines.append(f"| {name} | {who} | {first:.2f} | {median:.2f} | {first - median:.2f} |")
    publish("\n".join(lines), args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())

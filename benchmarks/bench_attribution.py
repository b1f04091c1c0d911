"""SmoothGrad and occlusion on AlexNet at 224: jaxviz against PyTorch, same weights, same run.

For one photograph (the bundled cat) and one target class, on seeded random weights
(a torchvision AlexNet, ``torch.manual_seed(0)``, ported with ``weights_port``):

  smoothgrad  50 noisy copies, noise 0.15 of the image's range; the same standard-normal
              draws on both sides. torch loop: one forward+backward per sample; torch batched: all 50 copies in one batch;
              jaxviz: ``jv.attribution.smoothgrad(..., noise_samples=eps)``.
  occlusion   window 32, stride 8 (25 x 25 = 625 windows, zero baseline). torch loop:
              one forward per occluded image; torch batched: 64 occluded images per
              forward; jaxviz: ``jv.attribution.occlusion(..., batch_size=64)``.

Each row: median (minimum) seconds of ``--pairs`` timed rounds after one warm-up call,
each round calling jax then torch batched; the torch loop (2-3x slower than batched) is
timed apart after them (``--pairs`` - 1 calls, at least one; torch is warm by then);
jax compile time apart (first call minus the median); jaxviz's speedup against the best
(lowest median) torch contender, the median over the paired rounds of torch time / jax
time (the ratio of medians should the loop be the best), and against the torch loop
(ratio of medians), above 1 when jaxviz is faster; the max relative difference of the
jax map from the torch batched map. Both speedups against the best torch contender are
also printed as acceptance rows for ``python -m benchmarks`` (targets ``smoothgrad`` and
``occlusion``).

On a GPU both sides run there in strict fp32 (``common.torch_device``); with
``--allow-tf32`` both run at TF32, and a last column gives each side's map against its
own strict-fp32 map.

Run (from the repository root; about 5 minutes on 2 CPU cores with 5 pairs)::

    PYTHONPATH=. python benchmarks/bench_attribution.py [--pairs 5] [--allow-tf32] [--out FILE]
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import sys
import time

import numpy as np

from common import (add_pairs_option, add_tf32_option, add_xla_option, apply_xla_option,
                    best_contender, emit_row, publish, seeded_alexnet, speedup, time_alternating,
                    torch_device)

SAMPLES, NOISE = 50, 0.15
WINDOW, STRIDE, CHUNK = 32, 8, 64


def rel(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-30))


def _device(tmodel):
    return next(tmodel.parameters()).device


def torch_smoothgrad(tmodel, x, eps, sigma, target, batched: bool):
    """On the device ``tmodel`` is on, from host arrays to a host array (the copy back
    waits for a GPU), as a user's call would."""
    import torch

    dev = _device(tmodel)
    xt = torch.from_numpy(x.transpose(0, 3, 1, 2).copy()).to(dev)
    et = torch.from_numpy(eps.transpose(0, 1, 4, 2, 3).copy())[:, 0].to(dev)  # (S, 3, H, W)
    if batched:
        noisy = (xt + sigma * et).requires_grad_(True)
        tmodel(noisy)[:, target].sum().backward()
        return noisy.grad.mean(0, keepdim=True).permute(0, 2, 3, 1).cpu().numpy()
    total = torch.zeros_like(xt)
    for s in range(len(et)):
        noisy = (xt + sigma * et[s : s + 1]).requires_grad_(True)
        tmodel(noisy)[0, target].backward()
        total += noisy.grad
    return (total / len(et)).permute(0, 2, 3, 1).cpu().numpy()


def torch_occlusion(tmodel, x, target, positions, batched: bool):
    import torch

    dev = _device(tmodel)
    xt = torch.from_numpy(x.transpose(0, 3, 1, 2).copy()).to(dev)
    h, w = xt.shape[2:]
    windows = [(i, j) for i in positions for j in positions]
    with torch.no_grad():
        reference = tmodel(xt)[0, target]
        drops = []
        step = CHUNK if batched else 1
        for k in range(0, len(windows), step):
            chunk = windows[k : k + step]
            batch = xt.repeat(len(chunk), 1, 1, 1)
            for b, (i, j) in enumerate(chunk):
                batch[b, :, i : i + WINDOW, j : j + WINDOW] = 0.0
            drops.append(reference - tmodel(batch)[:, target])
        drops = torch.cat(drops)
        total, count = torch.zeros(h, w, device=dev), torch.zeros(h, w, device=dev)
        for d, (i, j) in zip(drops, windows):
            total[i : i + WINDOW, j : j + WINDOW] += d
            count[i : i + WINDOW, j : j + WINDOW] += 1
    return (total / count)[None].cpu().numpy()


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_pairs_option(p, 5)
    p.add_argument("--out", default=None, help="also write the markdown table to this file")
    add_xla_option(p)
    add_tf32_option(p)
    args = p.parse_args(argv)
    xla = apply_xla_option(args)

    import jax
    import jax.numpy as jnp
    import torch

    import jaxviz as jv

    tdev, device_note = torch_device(args.allow_tf32)
    tmodel, model, variables = seeded_alexnet(tdev)
    x = jv.data.preprocess(jv.data.sample_image("chelsea"))
    target = int(np.argmax(np.asarray(jax.jit(model.apply)(variables, x))[0]))
    sigma = NOISE * float(x.max() - x.min())
    eps = np.random.default_rng(0).standard_normal((SAMPLES, *x.shape)).astype(np.float32)
    positions = jv.attribution.window_positions(x.shape[1], WINDOW, STRIDE)
    assert len(positions) ** 2 == 625, positions

    rows = []
    load_before = os.getloadavg()[0]
    loop_calls = max(1, args.pairs - 1)  # the torch loop's timed calls, after the pairs

    def measure(name, target, jax_fn, loop_fn, batched_fn):
        """One row: the jax first call, ``--pairs`` rounds of jax and torch batched, then the
        torch loop."""
        t0 = time.perf_counter()
        jax_fn()
        first = time.perf_counter() - t0
        (jt, bt), (jout, bout) = time_alternating([jax_fn, batched_fn], args.pairs)
        (lt,), (lout,) = time_alternating([loop_fn], loop_calls, warmup=0)
        jmed = statistics.median(jt)
        gain_loop = statistics.median(lt) / jmed
        best = best_contender({"torch loop": lt, "torch batched": bt})
        gain = speedup(bt, jt) if best == "torch batched" else gain_loop
        emit_row(target, f"{name}, AlexNet 224 px, one image", best, gain, args.pairs)
        rows.append((name, lt, bt, jt, best, gain, gain_loop, first - jmed,
                     rel(jout, bout), rel(lout, bout), tf32_error(jax_fn, batched_fn, jout, bout)))

    def tf32_error(jax_fn, batched_fn, jout, bout):
        """With TF32 allowed on a GPU: each side's result against its own strict-fp32 one,
        "jax / torch"; elsewhere "-"."""
        if not (args.allow_tf32 and tdev.type == "cuda"):
            return "-"
        with jax.default_matmul_precision("float32"):
            jref = jax_fn()
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
        try:
            tref = batched_fn()
        finally:
            torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
        return f"{rel(jout, jref):.1e} / {rel(bout, tref):.1e}"

    def jax_smoothgrad():
        return np.asarray(jv.attribution.smoothgrad(model, variables, x, target, noise=NOISE,
                                                    noise_samples=jnp.asarray(eps)))

    measure(f"smoothgrad, {SAMPLES} samples", "smoothgrad", jax_smoothgrad,
            lambda: torch_smoothgrad(tmodel, x, eps, sigma, target, False),
            lambda: torch_smoothgrad(tmodel, x, eps, sigma, target, True))

    def jax_occlusion():
        return np.asarray(jv.attribution.occlusion(model, variables, x, target, window=WINDOW,
                                                   stride=STRIDE, baseline=0.0, batch_size=CHUNK))

    measure(f"occlusion, window {WINDOW}, stride {STRIDE} (625)", "occlusion", jax_occlusion,
            lambda: torch_occlusion(tmodel, x, target, positions, False),
            lambda: torch_occlusion(tmodel, x, target, positions, True))

    def fmt(ts):
        return f"{statistics.median(ts):.3f} ({min(ts):.3f})"

    lines = [
        f"AlexNet, 224 x 224, one image, float32, {device_note} "
        f"({platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} cores, torch {torch.get_num_threads()} threads); median (minimum) of "
        f"{args.pairs} timed rounds (jax, torch batched) after a warm-up, seconds, the torch "
        f"loop timed apart ({loop_calls} call{'s' if loop_calls > 1 else ''}); speedup vs best "
        f"torch = median "
        f"over the rounds of torch / jax time, vs the loop = ratio of medians. jax "
        f"{jax.__version__}, torch "
        f"{torch.__version__}. {datetime.date.today()}; load average {load_before:.2f} before, "
        f"{os.getloadavg()[0]:.2f} after. {xla}.",
        "",
        "| method | torch loop s | torch batched s | jaxviz s | best torch "
        "| speedup vs best torch (>1: jaxviz faster) | speedup vs torch loop (>1: jaxviz faster) "
        "| jax compile s | max rel diff jax vs batched | loop vs batched "
        "| TF32 vs strict fp32, jax / torch batched |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, lt, bt, jt, best, gain, gain_loop, comp, dj, dl, tf in rows:
        lines.append(f"| {name} | {fmt(lt)} | {fmt(bt)} | {fmt(jt)} | {best} | {gain:.2f} "
                     f"| {gain_loop:.2f} | {comp:.2f} | {dj:.1e} | {dl:.1e} | {tf} |")
    publish("\n".join(lines) + "\n", args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())

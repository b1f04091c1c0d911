"""SmoothGrad and occlusion on AlexNet at 224: jaxviz against PyTorch, same weights, same run.

For one photograph (the bundled cat) and one target class, on seeded random weights
(a torchvision AlexNet, ``torch.manual_seed(0)``, ported with ``weights_port``):

  smoothgrad  50 noisy copies, noise 0.15 of the image's range; the same standard-normal
              draws on both sides. torch loop: one forward+backward per sample; torch batched: all 50 copies in one batch;
              jaxviz: ``jv.attribution.smoothgrad(..., noise_samples=eps)``.
  occlusion   window 32, stride 8 (25 x 25 = 625 windows, zero baseline). torch loop:
              one forward per occluded image; torch batched: 64 occluded images per
              forward; jaxviz: ``jv.attribution.occlusion(..., batch_size=64)``.

Each row: median (minimum) of ``--repeats`` timed calls after one warm-up call, seconds,
the three contenders called in turn (jax, torch loop, torch batched, jax, ...);
jax compile time apart; the ratio jax / batched torch; the max relative difference of
the jax map from the torch batched map.

Run (from the repository root; about 4 minutes on 2 CPU cores)::

    PYTHONPATH=. python benchmarks/bench_attribution.py [--repeats 3] [--out FILE]
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import sys
import tempfile
import time

import numpy as np

from common import add_xla_option, apply_xla_option, seeded_alexnet, timed_alternating

SAMPLES, NOISE = 50, 0.15
WINDOW, STRIDE, CHUNK = 32, 8, 64


def rel(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-30))


def torch_smoothgrad(tmodel, x, eps, sigma, target, batched: bool):
    import torch

    xt = torch.from_numpy(x.transpose(0, 3, 1, 2).copy())
    et = torch.from_numpy(eps.transpose(0, 1, 4, 2, 3).copy())[:, 0]  # (S, 3, H, W)
    if batched:
        noisy = (xt + sigma * et).requires_grad_(True)
        tmodel(noisy)[:, target].sum().backward()
        return noisy.grad.mean(0, keepdim=True).permute(0, 2, 3, 1).numpy()
    total = torch.zeros_like(xt)
    for s in range(len(et)):
        noisy = (xt + sigma * et[s : s + 1]).requires_grad_(True)
        tmodel(noisy)[0, target].backward()
        total += noisy.grad
    return (total / len(et)).permute(0, 2, 3, 1).numpy()


def torch_occlusion(tmodel, x, target, positions, batched: bool):
    import torch

    xt = torch.from_numpy(x.transpose(0, 3, 1, 2).copy())
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
        total, count = torch.zeros(h, w), torch.zeros(h, w)
        for d, (i, j) in zip(drops, windows):
            total[i : i + WINDOW, j : j + WINDOW] += d
            count[i : i + WINDOW, j : j + WINDOW] += 1
    return (total / count)[None].numpy()


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--out", default=None, help="also write the markdown table to this file")
    add_xla_option(p)
    args = p.parse_args(argv)
    xla = apply_xla_option(args)

    import jax
    import jax.numpy as jnp
    import torch

    import jaxviz as jv

    tmodel, model, variables = seeded_alexnet()
    x = jv.data.preprocess(jv.data.sample_image("chelsea"))
    target = int(np.argmax(np.asarray(jax.jit(model.apply)(variables, x))[0]))
    sigma = NOISE * float(x.max() - x.min())
    eps = np.random.default_rng(0).standard_normal((SAMPLES, *x.shape)).astype(np.float32)
    positions = jv.attribution.window_positions(x.shape[1], WINDOW, STRIDE)
    assert len(positions) ** 2 == 625, positions

    rows = []
    load_before = os.getloadavg()[0]

    # SmoothGrad
    t0 = time.perf_counter()
    jv.attribution.smoothgrad(model, variables, x, target, noise=NOISE, noise_samples=jnp.asarray(eps)).block_until_ready()
    first = time.perf_counter() - t0
    (jmed, jmin, jout), (lmed, lmin, lout), (bmed, bmin, bout) = timed_alternating([
        lambda: jv.attribution.smoothgrad(model, variables, x, target, noise=NOISE,
                                          noise_samples=jnp.asarray(eps)).block_until_ready(),
        lambda: torch_smoothgrad(tmodel, x, eps, sigma, target, False),
        lambda: torch_smoothgrad(tmodel, x, eps, sigma, target, True)], args.repeats)
    rows.append(("smoothgrad, 50 samples", lmed, lmin, bmed, bmin, jmed, jmin, first - jmed,
                 rel(jout, bout), rel(lout, bout)))

    # Occlusion
    def jax_occ():
        return jv.attribution.occlusion(model, variables, x, target, window=WINDOW, stride=STRIDE,
                                        baseline=0.0, batch_size=CHUNK).block_until_ready()
    t0 = time.perf_counter()
    jax_occ()
    first = time.perf_counter() - t0
    (jmed, jmin, jout), (lmed, lmin, lout), (bmed, bmin, bout) = timed_alternating([
        jax_occ,
        lambda: torch_occlusion(tmodel, x, target, positions, False),
        lambda: torch_occlusion(tmodel, x, target, positions, True)], args.repeats)
    rows.append((f"occlusion, window {WINDOW}, stride {STRIDE} (625)", lmed, lmin, bmed, bmin, jmed, jmin,
                 first - jmed, rel(jout, bout), rel(lout, bout)))

    lines = [
        f"AlexNet, 224 x 224, one image, float32, CPU ({platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} cores, torch {torch.get_num_threads()} threads); median (minimum) of "
        f"{args.repeats} timed calls after a warm-up, seconds. jax {jax.__version__}, torch "
        f"{torch.__version__}. {datetime.date.today()}; load average {load_before:.2f} before, "
        f"{os.getloadavg()[0]:.2f} after. {xla}.",
        "",
        "| method | torch loop s | torch batched s | jaxviz s | jaxviz / batched | jaxviz / loop "
        "| jax compile s | max rel diff jax vs batched | loop vs batched |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, lmed, lmin, bmed, bmin, jmed, jmin, comp, dj, dl in rows:
        lines.append(f"| {name} | {lmed:.3f} ({lmin:.3f}) | {bmed:.3f} ({bmin:.3f}) | {jmed:.3f} ({jmin:.3f}) "
                     f"| {jmed / bmed:.2f} | {jmed / lmed:.2f} | {comp:.2f} | {dj:.1e} | {dl:.1e} |")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        fd, tmp = tempfile.mkstemp(dir=os.path.dirname(os.path.abspath(args.out)) or ".")
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())

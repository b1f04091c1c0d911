"""Random draws: jax.random's shaped draw against jaxviz's flat one (jaxviz/_random.py).

    PYTHONPATH=. python benchmarks/bench_draws.py [--pairs 5]

The two give the same bits (tests/test_random.py); this measures what the flat form saves.
For each draw and shape, a fresh ``jax.jit`` of each form is lowered and compiled in turn
(jax, then jaxviz's form, ``--pairs`` rounds: nothing is cached between rounds, since
each round's function is new), and the compiled draws are then timed in turn, with
``torch.randn`` (or ``torch.rand``) of the same shape as the PyTorch baseline for the
run time. Shapes: a conv kernel, a small batch of images, one SmoothGrad chunk at 224 px
(25 copies), and the same chunk drawn per key under ``vmap`` as SmoothGrad does.
"""

from __future__ import annotations

import argparse
import platform
import statistics

import numpy as np

from benchmarks.common import add_pairs_option, time_alternating

CASES = [  # (label, draw, shape, keys under vmap)
    ("normal, conv kernel", "normal", (64, 3, 3, 3), 0),
    ("uniform, conv kernel", "uniform", (64, 3, 3, 3), 0),
    ("normal, 8 images 64 px", "normal", (8, 64, 64, 3), 0),
    ("normal, SmoothGrad chunk 224 px", "normal", (25, 224, 224, 3), 0),
    ("normal per key (vmap), 25 x 224 px", "normal", (224, 224, 3), 25),
    ("bernoulli, RISE masks", "bernoulli", (64, 7, 7), 0),
]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_pairs_option(p, 5)
    p.add_argument("--out", default=None, help="also write the markdown table to this file")
    args = p.parse_args(argv)

    import jax
    import torch

    from jaxviz import _random

    key = jax.random.key(0)

    def form(draw: str, shape, flat: bool, keys: int):
        module = _random if flat else jax.random

        def one(k):
            if draw == "bernoulli":
                return module.bernoulli(k, 0.5, shape)
            return getattr(module, draw)(k, shape)

        if keys:
            return lambda k: jax.vmap(one)(jax.random.split(k, keys))
        return one

    def torch_draw(draw: str, shape, keys: int):
        full = (keys, *shape) if keys else shape
        if draw == "bernoulli":
            return lambda: (torch.rand(full) < 0.5).numpy()
        return lambda: (torch.randn if draw == "normal" else torch.rand)(full).numpy()

    lines = [
        f"{platform.processor() or platform.machine()}, jax {jax.__version__}, torch "
        f"{torch.__version__} ({torch.get_num_threads()} threads); median of {args.pairs} rounds "
        f"(minimum in brackets). Compile: a fresh jit of each form lowered and compiled, in turn. "
        f"Run: the compiled draw, in turn with torch's.",
        "",
        "| draw | compile s, jax.random | compile s, flat | compile speedup "
        "| run ms, jax.random | run ms, flat | run ms, torch | same bits |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for label, draw, shape, keys in CASES:
        def compile_time(flat: bool):
            return lambda: jax.jit(form(draw, shape, flat, keys)).lower(key).compile()

        (ct_shaped, ct_flat), _ = time_alternating([compile_time(False), compile_time(True)],
                                                   args.pairs, warmup=0)
        shaped = jax.jit(form(draw, shape, False, keys))
        flat = jax.jit(form(draw, shape, True, keys))
        (rt_shaped, rt_flat, rt_torch), (a, b, _) = time_alternating(
            [lambda: np.asarray(shaped(key)), lambda: np.asarray(flat(key)),
             torch_draw(draw, shape, keys)], args.pairs)
        gain = statistics.median(s / f for s, f in zip(ct_shaped, ct_flat))

        def cell(ts, scale=1.0, digits=3):
            return f"{statistics.median(ts) * scale:.{digits}f} ({min(ts) * scale:.{digits}f})"

        full = (keys, *shape) if keys else shape
        lines.append(f"| {label} {full} | {cell(ct_shaped)} | {cell(ct_flat)} | {gain:.1f}x "
                     f"| {cell(rt_shaped, 1e3, 2)} | {cell(rt_flat, 1e3, 2)} "
                     f"| {cell(rt_torch, 1e3, 2)} | {'yes' if np.array_equal(a, b) else 'NO'} |")
        print(lines[-1], flush=True)
    report = "\n".join(lines)
    print()
    print(report)
    if args.out:
        with open(args.out, "w") as f:
            f.write(report + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

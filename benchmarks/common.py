"""Shared by the benchmark scripts: the seeded AlexNet both frameworks run, and timing."""

from __future__ import annotations

import statistics
import time


def add_xla_option(parser) -> None:
    """``--xla-default``: keep XLA:CPU's default convolutions (YNNPACK in jaxlib 0.10)."""
    parser.add_argument("--xla-default", action="store_true",
                        help="do not call jaxviz.cpu.use_fast_convolutions() (keep jaxlib's "
                             "default CPU convolutions)")


def apply_xla_option(args) -> str:
    """Applies ``--xla-default`` before JAX starts; returns a phrase for the report."""
    import jaxviz.cpu

    if not args.xla_default and jaxviz.cpu.use_fast_convolutions():
        return "XLA:CPU convolutions on XLA's own path (jaxviz.cpu.use_fast_convolutions())"
    return "XLA:CPU convolutions as jaxlib's default (YNNPACK in jaxlib 0.10)"


def seeded_alexnet():
    """torchvision's AlexNet with ``torch.manual_seed(0)`` weights, frozen and in eval mode,
    and its port: ``(torch_module, model, variables)``."""
    import torch
    import torchvision

    from weights_port import from_torchvision

    torch.manual_seed(0)
    tmodel = torchvision.models.alexnet(weights=None).eval()
    for prm in tmodel.parameters():
        prm.requires_grad_(False)
    model, variables = from_torchvision(tmodel)
    return tmodel, model, variables


def timed(fn, repeats: int) -> tuple[float, float, object]:
    """One warm-up call, then ``repeats`` timed calls: (median s, minimum s, last output)."""
    return timed_alternating([fn], repeats)[0]


def time_alternating(fns, repeats: int, warmup: int = 1) -> tuple[list[list[float]], list]:
    """``warmup`` untimed calls of each function, then ``repeats`` rounds that call each once
    in turn: (per function, its call times in s; per function, its last output).

    Alternating (jax, torch, jax, torch, ...) spreads load from other processes over every
    contender instead of landing on whichever ran while the machine was busy.
    """
    outs = [None] * len(fns)
    for k, fn in enumerate(fns):
        for _ in range(warmup):
            outs[k] = fn()
    times = [[] for _ in fns]
    for _ in range(repeats):
        for k, fn in enumerate(fns):
            t = time.perf_counter()
            outs[k] = fn()
            times[k].append(time.perf_counter() - t)
    return times, outs


def timed_alternating(fns, repeats: int) -> list[tuple[float, float, object]]:
    """:func:`time_alternating` with one warm-up: per function (median s, minimum s, last output)."""
    times, outs = time_alternating(fns, repeats)
    return [(statistics.median(ts), min(ts), out) for ts, out in zip(times, outs)]

"""Shared by the benchmark scripts: the seeded AlexNet both frameworks run, and timing."""

from __future__ import annotations

import statistics
import time


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
    out = fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), min(times), out

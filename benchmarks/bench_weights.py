"""Expanded weights between two VGG16 layers: jaxviz against the seed's PyTorch way.

    PYTHONPATH=. python benchmarks/bench_weights.py [--width 5] [--pairs 5]

The same seeded torchvision VGG16 on both sides, from ``features.10`` (relu3_1's input
side: conv3_1's output) to ``features.17`` (conv4_1), through ReLUs and a max pool:
- torch, one channel at a time (the Lucid weights notebook's way): the sub-network from the
  earlier layer to the later one with ReLU replaced by the identity and max pooling by
  average pooling, run on a W x W window, and one ``autograd.grad`` per output channel;
- torch batched: the same sub-network, all channels' gradients in one call
  (``torch.func.vmap`` over the output channel's cotangent);
- jaxviz: ``expanded_weights`` (one compiled Jacobian for every channel), first call
  (tracing and compiling included) and warm calls.
The results are compared (float32, relative to the largest magnitude). The three are
called in turn for ``--pairs`` rounds; each speedup is the median over the rounds of that
contender's time / jaxviz's (warm) time: above 1, jaxviz is faster.
"""

from __future__ import annotations

import argparse
import platform
import time

import numpy as np

from benchmarks.common import (add_pairs_option, add_tf32_option, add_xla_option,
                               apply_xla_option, speedup, time_alternating, torch_device)

FROM, TO = "features.10", "features.17"  # conv3_1 -> relu, conv, relu, conv, relu, pool, conv4_1


def torch_side(tmodel, width: int):
    import torch

    start, stop = int(FROM.split(".")[1]) + 1, int(TO.split(".")[1]) + 1
    layers = []
    for m in tmodel.features[start:stop]:
        if isinstance(m, torch.nn.ReLU):
            layers.append(torch.nn.Identity())
        elif isinstance(m, torch.nn.MaxPool2d):
            layers.append(torch.nn.AvgPool2d(m.kernel_size, m.stride, m.padding))
        else:
            layers.append(m)
    net = torch.nn.Sequential(*layers).eval()
    dev = next(tmodel.parameters()).device
    c_from = tmodel.features[int(FROM.split(".")[1])].out_channels
    x = torch.zeros(1, c_from, width, width, requires_grad=True, device=dev)

    def centre(out):
        h, w = out.shape[2:]
        return out[0, :, (h - 1) // 2, (w - 1) // 2]

    def loop():
        out = centre(net(x))
        grads = [torch.autograd.grad(out[j], x, retain_graph=True)[0][0]
                 for j in range(out.shape[0])]
        return torch.stack(grads, -1).permute(1, 2, 0, 3).cpu().numpy()  # (W, W, C_from, C_to)

    def batched():
        out = centre(net(x))
        eye = torch.eye(out.shape[0], device=dev)
        (g,) = torch.autograd.grad(out, x, eye, is_grads_batched=True)
        return g[:, 0].permute(2, 3, 1, 0).cpu().numpy()

    return loop, batched


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--width", type=int, default=5)
    add_pairs_option(p, 5)
    add_xla_option(p)
    add_tf32_option(p)
    args = p.parse_args(argv)
    xla = apply_xla_option(args)

    import jax
    import torch
    import torchvision

    import jaxviz
    from jaxviz.analysis import weights
    from weights_port import from_torchvision

    tdev, device_note = torch_device(args.allow_tf32)
    torch.manual_seed(0)
    tmodel = torchvision.models.vgg16(weights=None).eval()
    for prm in tmodel.parameters():
        prm.requires_grad_(False)
    model, variables = from_torchvision(tmodel)
    loop, batched = torch_side(tmodel.to(tdev), args.width)

    t = time.perf_counter()
    first = weights.expanded_weights(model, variables, FROM, TO, width=args.width)
    jax.block_until_ready(first)
    first_s = time.perf_counter() - t

    def ours():
        return np.asarray(weights.expanded_weights(model, variables, FROM, TO, width=args.width))

    times, outs = time_alternating([loop, batched, ours], args.pairs)
    ref = outs[0]
    err = {name: float(np.abs(o - ref).max() / np.abs(ref).max())
           for name, o in zip(("torch batched", "jaxviz"), outs[1:])}
    med = [float(np.median(t)) for t in times]
    print(f"VGG16 (seeded), expanded weights {FROM} -> {TO}, width {args.width}: "
          f"output {ref.shape}; {device_note}, {platform.machine()} ({torch.get_num_threads()} "
          f"torch threads); jax {jax.__version__}, torch {torch.__version__}, jaxviz "
          f"{jaxviz.__version__}; {xla}; median of {args.pairs} rounds, the three in turn; "
          f"jaxviz's speedup = median over the rounds of the contender's / jaxviz's time.\n")
    print("| contender | s | jaxviz (warm) speedup vs it (>1: jaxviz faster) "
          "| max rel. difference to the torch loop |")
    print("|---|---|---|---|")
    print(f"| torch, one channel at a time (the Lucid notebook's way) | {med[0]:.3f} | "
          f"{speedup(times[0], times[2]):.2f} | - |")
    print(f"| torch, batched (is_grads_batched) | {med[1]:.3f} | {speedup(times[1], times[2]):.2f} "
          f"| {err['torch batched']:.1e} |")
    print(f"| jaxviz, warm | {med[2]:.3f} | - | {err['jaxviz']:.1e} |")
    print(f"| jaxviz, first call (trace + compile) | {first_s:.3f} | - | |")
    print(f"| jaxviz, compile (first call - warm median) | {first_s - med[2]:.3f} | - | |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

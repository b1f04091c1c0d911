"""VGG19 weights from a ``.pth`` file: weights_port's port against torch's own loading,
time and peak memory.

A seeded random torchvision VGG19 (``torch.manual_seed(0)``; 143.7 M parameters, 548 MiB
in float32) is saved as a state_dict to a temporary ``.pth`` file. Each contender then
loads that file in a fresh process, its imports done before the clock starts:

  torch.load          ``torch.load(path, weights_only=True)``: the tensors alone, a floor
                      under both of the others;
  torch model ready   ``torchvision.models.vgg19(weights=None)`` (its random init included)
                      and ``load_state_dict(torch.load(path, weights_only=True))``: what a
                      PyTorch user runs to get the model;
  weights_port        ``weights_port.load_pth("vgg19", path)``: reading the file, every
                      tensor to jaxviz's layout (NHWC activations, HWIO kernels, the first
                      Linear's inputs reordered) as jax arrays, and the Flax model.

Reported: seconds (median and minimum of ``--pairs`` rounds, each round running the three
in turn, every call in its own process; the file is in the page cache for all of them,
as it was just written), the process's peak resident memory (``ru_maxrss``) and its
growth over the resident memory after the imports, and jaxviz's speedup against the torch
model-ready contender: the median over the rounds of its time / weights_port's time
(above 1: jaxviz faster).

Run (from the repository root; about a minute on 2 CPU cores with 5 pairs)::

    PYTHONPATH=. python benchmarks/bench_port.py [--pairs 5] [--out FILE]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time

from common import add_pairs_option, speedup, publish

CONTENDERS = {
    "torch.load": "torch.load(weights_only=True), tensors only",
    "torch": "torch: vgg19() + load_state_dict(torch.load(...))",
    "port": "jaxviz: weights_port.load_pth(\"vgg19\", path)",
}


def _rss_mb() -> float:
    """The resident memory of this process now, MiB (Linux: /proc/self/status)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def child(contender: str, path: str) -> None:
    """One load of ``path`` in this (fresh) process; prints a JSON line with the result."""
    import torch
    import torchvision

    if contender == "port":
        import jax

        import weights_port

        jax.devices()  # the backend starts before the clock (torch has no such step)
    before = _rss_mb()
    t = time.perf_counter()
    if contender == "torch.load":
        torch.load(path, map_location="cpu", weights_only=True)
    elif contender == "torch":
        model = torchvision.models.vgg19(weights=None)
        model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    else:
        _, variables = weights_port.load_pth("vgg19", path)
        jax.block_until_ready(variables)
    seconds = time.perf_counter() - t
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    print(json.dumps({"seconds": seconds, "peak_mb": peak, "after_imports_mb": before}),
          flush=True)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_pairs_option(p, 5)
    p.add_argument("--out", default=None, help="also write the markdown table to this file")
    p.add_argument("--child", nargs=2, metavar=("CONTENDER", "PATH"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        child(*args.child)
        return 0

    import torch
    import torchvision

    results: dict[str, list[dict]] = {name: [] for name in CONTENDERS}
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "vgg19-seeded.pth")
        torch.manual_seed(0)
        tmodel = torchvision.models.vgg19(weights=None)
        n_params = sum(prm.numel() for prm in tmodel.parameters())
        torch.save(tmodel.state_dict(), path)
        del tmodel
        size_mb = os.path.getsize(path) / 2**20
        for _ in range(args.pairs):
            for name in CONTENDERS:
                done = subprocess.run([sys.executable, __file__, "--child", name, path],
                                      capture_output=True, text=True)
                if done.returncode != 0:
                    sys.exit(f"{name} failed:\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}")
                results[name].append(json.loads(done.stdout.strip().splitlines()[-1]))
                print(name, results[name][-1], file=sys.stderr, flush=True)

    import jax

    secs = {name: [r["seconds"] for r in rs] for name, rs in results.items()}
    lines = [f"VGG19 (seeded random weights, {n_params / 1e6:.1f} M parameters), state_dict in a "
             f".pth file of {size_mb:.0f} MiB; each load in a fresh process, imports before the "
             f"clock; median (minimum) of {args.pairs} rounds, the contenders in turn; speedup = "
             f"median over the rounds of torch-model-ready / weights_port time. CPU "
             f"({platform.machine()}, {os.cpu_count()} cores); jax {jax.__version__}, torch "
             f"{torch.__version__}, torchvision {torchvision.__version__}; "
             f"{datetime.date.today().isoformat()}.", "",
             "| contender | s | peak RSS MiB | peak RSS growth over imports MiB "
             "| jaxviz speedup vs it (>1: jaxviz faster) |",
             "|---|---|---|---|---|"]
    for name, label in CONTENDERS.items():
        rs = results[name]
        peak = statistics.median(r["peak_mb"] for r in rs)
        growth = statistics.median(r["peak_mb"] - r["after_imports_mb"] for r in rs)
        gain = "-" if name == "port" else f"{speedup(secs[name], secs['port']):.2f}"
        lines.append(f"| {label} | {statistics.median(secs[name]):.2f} ({min(secs[name]):.2f}) | "
                     f"{peak:.0f} | {growth:.0f} | {gain} |")
    publish("\n".join(lines), args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())

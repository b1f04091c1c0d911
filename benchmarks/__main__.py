"""Every benchmark in one run: ``python -m benchmarks [--quick] [--device cpu|gpu] [--only NAME]``.

Each workload is one of the ``bench_*.py`` scripts, run in its own process (its XLA
flags and threads start clean) with full or ``--quick`` settings. Inside a script the
contenders run side by side on the same weights and inputs, called in turn (jax, torch,
jax, ...), and every table states the ratio against the PyTorch baselines. The reports
are printed as they finish and appended, under one heading with the machine, device,
versions and date, to ``benchmarks/RESULTS.md`` (``--out`` for another file,
``--no-record`` for none), written to a temporary file and renamed.

Run from the repository root::

    python -m benchmarks --quick                 # every workload, small settings
    python -m benchmarks --only peers,synthesis  # two workloads, full settings
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent

# name -> (script, what it measures, full arguments, --quick arguments, takes --out)
WORKLOADS: dict[str, tuple[str, str, list[str], list[str], bool]] = {
    "convs": ("bench_convs.py", "single convolutions, forward and input gradient",
              [], ["--batch", "8", "--repeats", "3"], True),
    "models": ("bench_models.py", "AlexNet / VGG16 / GoogLeNet forward and input gradient",
               [], ["--batch", "4", "--size", "128", "--repeats", "3"], True),
    "attribution": ("bench_attribution.py", "SmoothGrad 50 and occlusion (w32 s8) on AlexNet",
                    [], ["--repeats", "1"], True),
    "peers": ("bench_peers.py", "every method with a reference library, against it",
              [], ["--repeats", "1", "--size", "128"], True),
    "synthesis": ("bench_synthesis.py", "channel sweep, AlexNet conv5 at 128 px",
                  [], ["--channels", "8", "--loop-channels", "2", "--steps", "10",
                       "--repeats", "1"], True),
    "weights": ("bench_weights.py", "expanded weights between two VGG16 layers",
                [], ["--repeats", "1", "--width", "3"], False),
    "topk": ("bench_topk.py", "dataset top-9 of AlexNet conv5 over JPEG files",
             [], ["--sizes", "200"], True),
    "embeddings": ("bench_embeddings.py", "digits through LeNet: k-NN, t-SNE, memory",
                   [], ["--repeats", "1", "--skip", "memory"], True),
}
# scripts that take --device (the others use the GPU when jax and torch both see one,
# or run on the CPU only; the report says which)
TAKES_DEVICE = {"topk"}


def _versions() -> str:
    out = []
    for name in ("jax", "jaxlib", "flax", "torch"):
        try:
            module = __import__(name)
        except ImportError:
            continue
        out.append(f"{name} {getattr(module, '__version__', '?')}")
    return ", ".join(out)


def _device_line(device: str) -> str:
    if device == "gpu":
        try:
            name = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
                                  capture_output=True, text=True, timeout=30).stdout.strip()
        except (OSError, subprocess.TimeoutExpired):
            name = ""
        return f"GPU: {name or 'asked for, none found'}"
    return "device: CPU"


def _run(name: str, args: argparse.Namespace) -> tuple[int, str, float]:
    script, _, full, quick, takes_out = WORKLOADS[name]
    argv = [sys.executable, str(HERE / script), *(quick if args.quick else full)]
    if name in TAKES_DEVICE:
        argv += ["--device", args.device]
    fd, out = tempfile.mkstemp(suffix=".md")
    os.close(fd)
    if takes_out:
        argv += ["--out", out]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)}
    t = time.perf_counter()
    proc = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - t
    report = Path(out).read_text() if takes_out and Path(out).exists() else ""
    Path(out).unlink(missing_ok=True)
    if not report.strip():
        report = proc.stdout
    if proc.returncode != 0:
        report += f"\n\nFAILED (exit {proc.returncode}):\n\n```\n{proc.stderr[-3000:]}\n```\n"
    return proc.returncode, report.strip() + "\n", seconds


def _append(path: Path, text: str) -> None:
    old = path.read_text() if path.exists() else ""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w") as f:
        f.write(old + ("\n" if old and not old.endswith("\n") else "") + text)
    os.replace(tmp, path)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="small settings (minutes, not an hour)")
    p.add_argument("--device", choices=("cpu", "gpu"), default="cpu")
    p.add_argument("--only", default=None,
                   help=f"comma-separated workloads among: {', '.join(WORKLOADS)}")
    p.add_argument("--out", default=str(HERE / "RESULTS.md"),
                   help="append the reports to this file (default benchmarks/RESULTS.md)")
    p.add_argument("--no-record", action="store_true", help="print only, append nothing")
    p.add_argument("--list", action="store_true", help="list the workloads and exit")
    args = p.parse_args(argv)
    if args.list:
        for name, (script, what, *_rest) in WORKLOADS.items():
            print(f"{name:12s} {script:22s} {what}")
        return 0
    names = list(WORKLOADS)
    if args.only is not None:
        names = [n.strip() for n in args.only.split(",") if n.strip()]
        unknown = [n for n in names if n not in WORKLOADS]
        if unknown or not names:
            p.error(f"unknown workload {', '.join(unknown) or repr(args.only)}; expected "
                    f"names among {', '.join(WORKLOADS)}")
    start = time.perf_counter()
    sections, failed = [], []
    for name in names:
        print(f"== {name}: {WORKLOADS[name][1]} ...", flush=True)
        code, report, seconds = _run(name, args)
        print(report, flush=True)
        print(f"({name}: {seconds:.0f} s{'' if code == 0 else f', FAILED with exit {code}'})",
              flush=True)
        sections.append(f"### {name}: {WORKLOADS[name][1]} ({seconds:.0f} s)\n\n{report}")
        if code != 0:
            failed.append(name)
    total = time.perf_counter() - start
    cpu = platform.processor() or platform.machine()
    head = (f"## `python -m benchmarks{' --quick' if args.quick else ''}"
            f"{' --device gpu' if args.device == 'gpu' else ''}` "
            f"({datetime.date.today().isoformat()})\n\n"
            f"Machine: {cpu}, {os.cpu_count()} cores, {_device_line(args.device)}; Python "
            f"{platform.python_version()}, {_versions()}. Load average (1 min) at the end: "
            f"{os.getloadavg()[0]:.2f}. Whole run: {total / 60:.1f} min.\n")
    text = head + "\n" + "\n".join(sections)
    if not args.no_record:
        _append(Path(args.out), text)
        print(f"appended to {args.out}")
    print(f"whole run: {total / 60:.1f} min" + (f"; failed: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

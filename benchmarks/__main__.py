"""Every benchmark in one run: ``python -m benchmarks [--quick] [--pairs N] [--device cpu|gpu] [--only NAME]``.

Each workload is one of the ``bench_*.py`` scripts, run in its own process (its XLA
flags and threads start clean) with full or ``--quick`` settings. Inside a script the
contenders run side by side on the same weights and inputs, called in turn (jax, torch,
jax, ...) for ``--pairs`` rounds (default 5, or 2 with ``--quick``), and every table
states jaxviz's speedup against the PyTorch baselines: baseline time / jaxviz time, the
median over the paired rounds of each round's ratio, so above 1 always means jaxviz is
faster.

Some rows are acceptance rows: the scripts print them as ``@@bench-row {json}`` lines
(``common.emit_row``), and this runner collects them into a last table, each against its
target (``TARGETS``), with the best PyTorch contender of the same run. The reports are
printed as they finish and appended, under one heading with the machine, device,
versions and date, to ``benchmarks/RESULTS.md`` (``--out`` for another file,
``--no-record`` for none), written to a temporary file and renamed.

Run from the repository root::

    python -m benchmarks --quick                 # every workload, small settings
    python -m benchmarks --only peers,synthesis  # two workloads, full settings
    python -m benchmarks --only attribution --pairs 9
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import NamedTuple

from benchmarks.common import ROW_MARKER

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent

CAMS = ("GradCAM,GradCAMPlusPlus,XGradCAM,HiResCAM,LayerCAM,EigenCAM,GradCAM aug_smooth,"
        "GradCAM relu4+relu5")


class Workload(NamedTuple):
    script: str
    what: str
    full: list[str]          # arguments for a full run
    quick: list[str]         # arguments for --quick
    takes_out: bool = True   # writes its Markdown report to --out FILE
    takes_pairs: bool = True  # times paired rounds (--pairs N)
    quick_pairs: int | None = None  # with --quick and no --pairs: at most this many


WORKLOADS: dict[str, Workload] = {
    "convs": Workload("bench_convs.py", "single convolutions, forward and input gradient",
                      [], ["--batch", "8"]),
    "models": Workload("bench_models.py", "AlexNet / VGG16 / GoogLeNet forward and input gradient",
                       [], ["--batch", "4", "--size", "128"]),
    "attribution": Workload("bench_attribution.py",
                            "SmoothGrad 50 and occlusion (w32 s8) on AlexNet", [], []),
    "peers": Workload("bench_peers.py", "every method with a reference library, against it",
                      [], ["--size", "128"]),
    "cams": Workload("bench_peers.py", "the CAM family on a batch, against pytorch-grad-cam",
                     ["--batch", "64", "--only", CAMS],
                     ["--batch", "16", "--size", "128", "--only", CAMS]),
    "synthesis": Workload("bench_synthesis.py", "channel sweep, AlexNet conv5 at 128 px",
                          [], ["--channels", "8", "--loop-channels", "2", "--steps", "10"]),
    "weights": Workload("bench_weights.py", "expanded weights between two VGG16 layers",
                        [], ["--width", "3"], takes_out=False),
    "port": Workload("bench_port.py", "VGG19 .pth to Flax variables: time and peak memory",
                     [], [], quick_pairs=1),  # every call is a fresh process
    "topk": Workload("bench_topk.py", "dataset top-9 of AlexNet conv5 over JPEG files",
                     [], ["--sizes", "200"], takes_pairs=False),
    "embeddings": Workload("bench_embeddings.py", "digits through LeNet: k-NN, t-SNE, memory",
                           [], ["--repeats", "1", "--skip", "memory"], takes_pairs=False),
    "draws": Workload("bench_draws.py",
                      "random draws: jax.random's shaped form against the flat one", [], []),
}
# scripts that take --device (the others use the GPU when jax and torch both see one,
# or run on the CPU only; the report says which)
TAKES_DEVICE = {"topk"}
# pairs when --pairs is not given
FULL_PAIRS, QUICK_PAIRS = 5, 2

# acceptance targets: the rows' "target" -> (workload, the speedup jaxviz must reach)
TARGETS: dict[str, tuple[str, float]] = {
    "sweep": ("channel sweep", 1.5),
    "smoothgrad": ("SmoothGrad", 1.3),
    "integrated_gradients": ("integrated gradients", 1.3),
    "occlusion": ("occlusion", 2.0),
    "vgg16_forward": ("VGG16 forward", 1.0),
}


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


def _run(name: str, args: argparse.Namespace) -> tuple[int, str, float, list[dict]]:
    """Runs one workload's script: (exit code, Markdown report, seconds, acceptance rows)."""
    w = WORKLOADS[name]
    argv = [sys.executable, str(HERE / w.script), *(w.quick if args.quick else w.full)]
    if w.takes_pairs:
        pairs = args.pairs
        if args.quick and not args.pairs_given and w.quick_pairs:
            pairs = min(pairs, w.quick_pairs)
        argv += ["--pairs", str(pairs)]
    if name in TAKES_DEVICE:
        argv += ["--device", args.device]
    fd, out = tempfile.mkstemp(suffix=".md")
    os.close(fd)
    if w.takes_out:
        argv += ["--out", out]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)}
    if args.device == "cpu":  # on a GPU machine too: both frameworks on the CPU
        env.update(JAX_PLATFORMS="cpu", CUDA_VISIBLE_DEVICES="")
    else:  # jax and torch share the GPU: jax allocates on demand
        env.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    t = time.perf_counter()
    proc = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - t
    report = Path(out).read_text() if w.takes_out and Path(out).exists() else ""
    Path(out).unlink(missing_ok=True)
    rows, stdout = [], []
    for line in proc.stdout.splitlines():
        if line.startswith(ROW_MARKER):
            try:
                rows.append(json.loads(line[len(ROW_MARKER):]))
            except json.JSONDecodeError:
                stdout.append(line)  # shown in the report, not taken as a row
        else:
            stdout.append(line)
    if not report.strip():
        report = "\n".join(stdout)
    if proc.returncode != 0:
        report += f"\n\nFAILED (exit {proc.returncode}):\n\n```\n{proc.stderr[-3000:]}\n```\n"
    return proc.returncode, report.strip() + "\n", seconds, rows


def acceptance_table(rows: list[dict]) -> str:
    """The acceptance rows against their targets, in ``TARGETS`` order; a target no workload
    of this run reported is listed as not run."""
    lines = ["| workload | best torch contender | median speedup (>1: jaxviz faster) | pairs "
             "| target | met |", "|---|---|---|---|---|---|"]
    for key, (label, target) in TARGETS.items():
        mine = [r for r in rows if r.get("target") == key]
        if not mine:
            lines.append(f"| {label}: not run | - | - | - | >= {target:g} | - |")
        for r in mine:
            met = "yes" if r["speedup"] >= target else "no"
            lines.append(f"| {r['workload']} | {r['contender']} | {r['speedup']:.2f} | "
                         f"{r['pairs']} | >= {target:g} | {met} |")
    if any(r["pairs"] < FULL_PAIRS for r in rows if r.get("target") in TARGETS):
        lines += ["", f"Rows over fewer than {FULL_PAIRS} pairs (`--quick`) are indicative only: "
                      f"acceptance asks for the median over {FULL_PAIRS} paired runs."]
    return "\n".join(lines) + "\n"


def _append(path: Path, text: str) -> None:
    old = path.read_text() if path.exists() else ""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w") as f:
        f.write(old + ("\n" if old and not old.endswith("\n") else "") + text)
    os.replace(tmp, path)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="small settings (minutes, not an hour)")
    p.add_argument("--pairs", type=int, default=None,
                   help=f"paired timed rounds per measurement (default {FULL_PAIRS}, or "
                        f"{QUICK_PAIRS} with --quick)")
    p.add_argument("--device", choices=("cpu", "gpu"), default="cpu")
    p.add_argument("--only", default=None,
                   help=f"comma-separated workloads among: {', '.join(WORKLOADS)}")
    p.add_argument("--out", default=str(HERE / "RESULTS.md"),
                   help="append the reports to this file (default benchmarks/RESULTS.md)")
    p.add_argument("--no-record", action="store_true", help="print only, append nothing")
    p.add_argument("--list", action="store_true", help="list the workloads and exit")
    args = p.parse_args(argv)
    if args.list:
        for name, w in WORKLOADS.items():
            print(f"{name:12s} {w.script:22s} {w.what}")
        return 0
    args.pairs_given = args.pairs is not None
    if args.pairs is None:
        args.pairs = QUICK_PAIRS if args.quick else FULL_PAIRS
    if args.pairs < 1:
        p.error("--pairs must be at least 1")
    names = list(WORKLOADS)
    if args.only is not None:
        names = [n.strip() for n in args.only.split(",") if n.strip()]
        unknown = [n for n in names if n not in WORKLOADS]
        if unknown or not names:
            p.error(f"unknown workload {', '.join(unknown) or repr(args.only)}; expected "
                    f"names among {', '.join(WORKLOADS)}")
    start = time.perf_counter()
    sections, failed, rows = [], [], []
    for name in names:
        print(f"== {name}: {WORKLOADS[name].what} ...", flush=True)
        code, report, seconds, found = _run(name, args)
        print(report, flush=True)
        print(f"({name}: {seconds:.0f} s{'' if code == 0 else f', FAILED with exit {code}'})",
              flush=True)
        sections.append(f"### {name}: {WORKLOADS[name].what} ({seconds:.0f} s)\n\n{report}")
        rows += found
        if code != 0:
            failed.append(name)
    summary = acceptance_table(rows)
    print(f"== acceptance rows: median speedup over paired rounds against the best PyTorch "
          f"contender of the same run\n\n{summary}", flush=True)
    sections.append("### acceptance rows\n\nEach row: jaxviz's median speedup (torch time / "
                    "jaxviz time, the median over the paired rounds) against the best PyTorch "
                    f"contender of the same run.\n\n{summary}")
    total = time.perf_counter() - start
    cpu = platform.processor() or platform.machine()
    head = (f"## `python -m benchmarks{' --quick' if args.quick else ''} --pairs {args.pairs}"
            f"{' --device gpu' if args.device == 'gpu' else ''}"
            f"{' --only ' + ','.join(names) if args.only is not None else ''}` "
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

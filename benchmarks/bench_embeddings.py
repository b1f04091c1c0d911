"""Layer embeddings of the 1,797 digits through lenet_digits: k-NN per layer, t-SNE backends,
and the memory of streamed features.

Three tables (``jaxviz.analysis.embeddings``):

  knn       every layer of ``jv.load("lenet_digits")`` (``jv.layer_names(model, 28)``) on
            scikit-learn's 1,797 digits (``jv.data.digits("all")``; 1,437 of them were
            the model's training set), each map reduced to its channels' spatial mean:
            the feature size, 5-NN accuracy (stratified 5-fold, seed 0) in the layer's
            space, in its 2-D PCA and in its 2-D t-SNE (perplexity 30, seed 0, the
            default backend), and the t-SNE time.
  tsne      openTSNE 1.0 against scikit-learn's ``TSNE`` on three of those feature sets
            (logits, relu2 pooled, relu2 flattened), each with ``n_jobs=1`` and
            ``n_jobs=-1`` (every core): median (minimum) of ``--repeats`` fits, the
            contenders called in turn; and the 5-NN accuracy of each result.
  memory    the peak resident memory that ``features(..., pool="mean")`` of every layer
            adds, for N = 1,797, 4x and 16x that (the digits repeated), each N in a fresh
            process: the compiled program and the input are made first (one warm-up call
            on 256 images), the kernel's peak-RSS mark is reset (``/proc/self/clear_refs``)
            and the peak over the call is read back (``VmHWM``). Beside it, the same
            numbers for the one-shot way (``jv.activations`` of every layer at once, pooled
            in numpy afterwards), which holds every full map.

Run (from the repository root; about 5 minutes on 2 CPU cores)::

    PYTHONPATH=. python benchmarks/bench_embeddings.py [--repeats 3] [--out FILE]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import time

import numpy as np

from common import add_xla_option, apply_xla_option, time_alternating, publish

SCALES = (1, 4, 16)


def _status_kib() -> dict[str, int]:
    out = {}
    with open("/proc/self/status") as f:
        for line in f:
            key, value = line.split(":", 1)
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(value.split()[0])
    return out


def memory_worker(scale: int, way: str, xla_default: bool) -> None:
    """One measurement in this (fresh) process: prints a JSON line."""
    apply_xla_option(argparse.Namespace(xla_default=xla_default))
    import jax

    import jaxviz as jv
    from jaxviz.analysis import embeddings

    model, variables = jv.load("lenet_digits")
    layers = [info.path for info in jv.layer_names(model, 28)]
    x, _ = jv.data.digits("all")
    x = np.ascontiguousarray(np.tile(x, (scale, 1, 1, 1)))

    def streamed(images):
        return embeddings.features(model, variables, images, layers, pool="mean",
                                   progress=False)

    def one_shot(images):
        acts = jv.activations(model, variables, images, layers)
        return {k: (np.asarray(a).mean(axis=(1, 2)) if a.ndim == 4 else np.asarray(a))
                for k, a in jax.block_until_ready(acts).items()}

    run = streamed if way == "streamed" else one_shot
    run(x[:256])  # compiles (streamed: the one program every slice uses)
    before = _status_kib()["VmRSS"]
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # resets VmHWM to the current RSS
    t = time.perf_counter()
    out = run(x)
    seconds = time.perf_counter() - t
    peak = _status_kib()["VmHWM"]
    print(json.dumps({"n": len(x), "way": way, "growth_mb": (peak - before) / 1024,
                      "input_mb": x.nbytes / 2**20,
                      "output_mb": sum(a.nbytes for a in out.values()) / 2**20,
                      "seconds": seconds}))


def memory_table(xla_default: bool) -> list[str]:
    rows = []
    for scale in SCALES:
        for way in ("streamed", "one-shot"):
            cmd = [sys.executable, __file__, "--memory-worker", str(scale), way]
            if xla_default:
                cmd.append("--xla-default")
            done = subprocess.run(cmd, capture_output=True, text=True, check=True)
            rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
    lines = ["| N | input MB | pooled features MB | streamed: peak RSS growth MB | streamed s "
             "| one-shot: peak RSS growth MB | one-shot s |",
             "|---|---|---|---|---|---|---|"]
    for i in range(0, len(rows), 2):
        s, o = rows[i], rows[i + 1]
        lines.append(f"| {s['n']:,} | {s['input_mb']:.1f} | {s['output_mb']:.1f} | "
                     f"{s['growth_mb']:.1f} | {s['seconds']:.2f} | {o['growth_mb']:.1f} | "
                     f"{o['seconds']:.2f} |")
    return lines


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repeats", type=int, default=3, help="timed t-SNE fits per contender")
    p.add_argument("--out", default=None, help="also write the markdown report to this file")
    p.add_argument("--skip", default="", help="comma-separated tables to skip: knn,tsne,memory")
    p.add_argument("--memory-worker", nargs=2, metavar=("SCALE", "WAY"), help=argparse.SUPPRESS)
    add_xla_option(p)
    args = p.parse_args(argv)
    if args.memory_worker:
        memory_worker(int(args.memory_worker[0]), args.memory_worker[1], args.xla_default)
        return 0
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    xla = apply_xla_option(args)

    import jax
    import openTSNE
    import sklearn
    from sklearn.manifold import TSNE

    import jaxviz as jv
    from jaxviz.analysis import embeddings as emb

    load_before = os.getloadavg()[0]
    model, variables = jv.load("lenet_digits")
    table = jv.layer_names(model, 28)
    layers = [info.path for info in table]
    x, y = jv.data.digits("all")
    t = time.perf_counter()
    feats = emb.features(model, variables, x, layers, progress=False)
    first = time.perf_counter() - t
    t = time.perf_counter()
    emb.features(model, variables, x, layers, progress=False)
    again = time.perf_counter() - t

    out = [f"lenet_digits, the 1,797 digits at 28 x 28, every layer pooled by its spatial mean; "
           f"CPU ({platform.processor() or platform.machine()}, {os.cpu_count()} cores); jax "
           f"{jax.__version__}, scikit-learn {sklearn.__version__}, openTSNE "
           f"{openTSNE.__version__}; {datetime.date.today()}. {xla}. features of all "
           f"{len(layers)} layers: {first:.2f} s first call (compiling), {again:.2f} s again.", ""]

    if "knn" not in skip:
        out += ["5-NN accuracy (stratified 5-fold, seed 0) in each layer's pooled feature space "
                f"and in its 2-D projections; t-SNE: perplexity 30, seed 0, "
                f"{emb.DEFAULT_TSNE_BACKEND} (the default backend).", "",
                "| layer | alias | kind | dim | kNN full | kNN 2-D PCA | kNN 2-D t-SNE | t-SNE s |",
                "|---|---|---|---|---|---|---|---|"]
        for info in table:
            f = feats[info.path]
            pca = emb.project(f, "pca")
            t = time.perf_counter()
            tsne = emb.project(f, "tsne")
            seconds = time.perf_counter() - t
            out.append(f"| {info.path} | {info.alias or ''} | {info.kind} | {f.shape[1]} | "
                       f"{emb.knn_accuracy(f, y):.3f} | {emb.knn_accuracy(pca, y):.3f} | "
                       f"{emb.knn_accuracy(tsne, y):.3f} | {seconds:.2f} |")
            print(out[-1], flush=True)
        out.append("")

    if "tsne" not in skip:
        relu2 = emb.features(model, variables, x, "relu2", pool="flatten", progress=False)
        sets = {"logits (10-d)": feats["classifier"], "relu2, mean (32-d)": feats["features.4"],
                "relu2, flatten (6,272-d)": relu2["relu2"]}
        contenders = {
            "openTSNE, n_jobs=1": lambda f: np.asarray(openTSNE.TSNE(
                perplexity=30.0, random_state=0, n_jobs=1).fit(f)),
            "openTSNE, n_jobs=-1": lambda f: np.asarray(openTSNE.TSNE(
                perplexity=30.0, random_state=0, n_jobs=-1).fit(f)),
            "sklearn, n_jobs=1": lambda f: TSNE(perplexity=30.0, random_state=0,
                                                n_jobs=1).fit_transform(f),
            "sklearn, n_jobs=-1": lambda f: TSNE(perplexity=30.0, random_state=0,
                                                 n_jobs=-1).fit_transform(f),
        }
        for fn in contenders.values():  # imports and first-call set-up, off the clock
            fn(feats["classifier"][:200])
        out += [f"t-SNE of 1,797 points to 2-D, perplexity 30, seed 0: median (minimum) of "
                f"{args.repeats} fits, s, the contenders in turn; 5-NN accuracy of the result "
                f"in brackets.", "",
                "| features | " + " | ".join(contenders) + " |",
                "|---|" + "---|" * len(contenders)]
        for name, f in sets.items():
            times, results = time_alternating(
                [lambda fn=fn: fn(f) for fn in contenders.values()], args.repeats, warmup=0)
            cells = [f"{statistics.median(ts):.2f} ({min(ts):.2f}) [{emb.knn_accuracy(r, y):.3f}]"
                     for ts, r in zip(times, results)]
            out.append(f"| {name} | " + " | ".join(cells) + " |")
            print(out[-1], flush=True)
        out.append("")

    if "memory" not in skip:
        out += ["Peak RSS growth over one call (each N in a fresh process, after a warm-up "
                "call on 256 images), every layer: streamed = `features(..., pool=\"mean\", "
                "batch_size=256)`; one-shot = `jv.activations` of every layer at once, pooled "
                "in numpy after.", ""]
        out += memory_table(args.xla_default)
        print("\n".join(out[-5:]), flush=True)
        out.append("")

    out.append(f"Load average {load_before:.2f} before, {os.getloadavg()[0]:.2f} after.")
    print()
    publish("\n".join(out), args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())

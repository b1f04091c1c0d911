"""Dataset top-9 of AlexNet conv5 over image files: images per second and peak memory.

jaxviz streams the files (``jv.stream.images``: grain, decoding and resizing in reader
threads) into ``jv.analysis.top_k`` (a running top-9 of every channel on the device).
The torch loop does the same work: torchvision's ``Resize(256) -> CenterCrop(224) ->
ToTensor -> Normalize`` in a ``DataLoader`` with worker processes, ``features[:11]``
(conv5, no ReLU after it) and a running ``torch.topk`` per channel over every position.

Each (framework, number of images) runs in a fresh process, after a warm-up batch (the
compilation, the first loader start), so peak RSS growth over the timed pass measures
what streaming keeps: it should not grow from 500 to 2,000 images. The images are
JPEG files made once from the bundled photographs (random crops, flips and noise,
256-384 px on a side) under ``--data``.

    python benchmarks/bench_topk.py --out /tmp/topk.md             # CPU
    python benchmarks/bench_topk.py --device gpu                     # jax and torch on CUDA
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

from common import publish

BATCH = 64


def make_images(folder: Path, n: int) -> list[Path]:
    """``n`` JPEG files (made once; reused when they exist)."""
    import numpy as np
    from PIL import Image

    from jaxviz import data

    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / f"{i:05d}.jpg" for i in range(n)]
    if all(p.exists() for p in paths):
        return paths
    rng = np.random.default_rng(0)
    photos = [data.sample_image(name) for name in data.sample_names()]
    for i, path in enumerate(paths):
        if path.exists():
            continue
        photo = photos[i % len(photos)]
        h, w = photo.shape[:2]
        ch, cw = rng.integers(h // 2, h), rng.integers(w // 2, w)
        y, x = rng.integers(0, h - ch + 1), rng.integers(0, w - cw + 1)
        crop = photo[y:y + ch, x:x + cw].astype(np.float32)
        if rng.random() < 0.5:
            crop = crop[:, ::-1]
        crop = np.clip(crop + rng.normal(0, 8, crop.shape), 0, 255).astype(np.uint8)
        side = int(rng.integers(256, 385))
        image = Image.fromarray(crop).resize((side, int(side * ch / cw) or 1))
        tmp = path.with_suffix(".tmp.jpg")
        image.save(tmp, quality=90)
        os.replace(tmp, path)
    return paths


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_jax(paths: list[Path], device: str) -> dict:
    import jax

    import jaxviz as jv
    from benchmarks.common import seeded_alexnet

    if device == "cpu":
        jv.cpu.use_fast_convolutions()
    _, model, variables = seeded_alexnet()
    variables = jax.device_put(variables, jax.devices()[0])
    warm = jv.stream.images(paths[:BATCH], batch_size=BATCH)
    jax.block_until_ready(jv.analysis.top_k(model, variables, warm, "conv5", k=9).values)
    before = rss_mb()
    t0 = time.perf_counter()
    found = jv.analysis.top_k(model, variables, jv.stream.images(paths, batch_size=BATCH),
                              "conv5", k=9)
    seconds = time.perf_counter() - t0
    return dict(seconds=seconds, rss_growth=rss_mb() - before, peak=rss_mb(),
                top=float(found.values[:, 0].mean()), device=str(jax.devices()[0]))


def run_torch(paths: list[Path], device: str) -> dict:
    import torch
    import torchvision.transforms as T
    from PIL import Image

    from benchmarks.common import seeded_alexnet

    tmodel, _, _ = seeded_alexnet()
    dev = torch.device("cuda" if device == "gpu" else "cpu")
    if device == "gpu":
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    net = tmodel.features[:11].to(dev).eval()
    transform = T.Compose([T.Resize(256), T.CenterCrop(224), T.ToTensor(),
                           T.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))])

    class Files(torch.utils.data.Dataset):
        def __init__(self, files):
            self.files = files

        def __len__(self):
            return len(self.files)

        def __getitem__(self, i):
            return transform(Image.open(self.files[i]).convert("RGB")), i

    workers = min(os.cpu_count() or 1, 16)

    def top9(files):
        loader = torch.utils.data.DataLoader(Files(files), batch_size=BATCH,
                                             num_workers=workers)
        values = ids = None
        with torch.no_grad():
            for x, index in loader:
                a = net(x.to(dev))                                   # (b, C, h, w)
                b, c, h, w = a.shape
                cand = a.permute(1, 0, 2, 3).reshape(c, -1)
                cand_ids = index.to(dev).repeat_interleave(h * w).expand(c, -1)
                if values is not None:
                    cand = torch.cat([values, cand], 1)
                    cand_ids = torch.cat([ids, cand_ids], 1)
                values, where = torch.topk(cand, 9, dim=1)
                ids = torch.gather(cand_ids, 1, where)
        if device == "gpu":
            torch.cuda.synchronize()
        return values

    top9(files=paths[:BATCH])
    before = rss_mb()
    t0 = time.perf_counter()
    values = top9(paths)
    seconds = time.perf_counter() - t0
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return dict(seconds=seconds, rss_growth=rss_mb() - before, peak=rss_mb(),
                top=float(values[:, 0].mean()), device=str(dev), workers=workers,
                worker_peak=children)


def child(framework: str, n: int, data_dir: str, device: str) -> None:
    paths = make_images(Path(data_dir), n)[:n]
    result = (run_jax if framework == "jax" else run_torch)(paths, device)
    print("RESULT " + json.dumps(result), flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", default="500,2000", help="comma-separated image counts")
    p.add_argument("--data", default=str(Path.home() / ".cache" / "jaxviz-bench-images"))
    p.add_argument("--device", choices=("cpu", "gpu"), default="cpu")
    p.add_argument("--out", default=None, help="also write the markdown table to this file")
    p.add_argument("--child", nargs=2, metavar=("FRAMEWORK", "N"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        child(args.child[0], int(args.child[1]), args.data, args.device)
        return
    sizes = [int(s) for s in args.sizes.split(",")]
    make_images(Path(args.data), max(sizes))
    env = dict(os.environ)
    if args.device == "cpu":
        env["JAX_PLATFORMS"] = "cpu"
        env["CUDA_VISIBLE_DEVICES"] = ""
    root = Path(__file__).resolve().parents[1]
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(root), env.get("PYTHONPATH")]))
    rows = []
    for n in sizes:
        for framework in ("jax", "torch"):
            out = subprocess.run([sys.executable, __file__, "--child", framework, str(n),
                                  "--data", args.data, "--device", args.device],
                                 env=env, capture_output=True, text=True, check=False)
            line = [ln for ln in out.stdout.splitlines() if ln.startswith("RESULT ")]
            if not line:
                sys.exit(f"{framework} {n} failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}")
            r = json.loads(line[0][7:])
            rows.append((n, framework, r))
            print(n, framework, r, flush=True)
    import jax
    import torch

    lines = [f"Dataset top-9, AlexNet conv5 (seeded weights), {BATCH} images per batch, "
             f"JPEG files 256-384 px -> 224 px; {platform.machine()}, {os.cpu_count()} cores, "
             f"device {args.device} ({rows[0][2]['device']} / {rows[1][2]['device']}); "
             f"jax {jax.__version__}, torch {torch.__version__}; {time.strftime('%Y-%m-%d')}.",
             "", "| images | contender | images/s | s | peak RSS growth MB | peak RSS MB | "
             "largest worker process, peak RSS MB |", "|---|---|---|---|---|---|---|"]
    names = {"jax": "jaxviz: stream + top_k", "torch": "torch: DataLoader + topk loop"}
    for n, framework, r in rows:
        workers = f"{r['worker_peak']:.0f}" if "worker_peak" in r else "none (reader threads)"
        lines.append(f"| {n:,} | {names[framework]} | {n / r['seconds']:.1f} | "
                     f"{r['seconds']:.1f} | {r['rss_growth']:.0f} | {r['peak']:.0f} | {workers} |")
    for n in sizes:
        jx, tr = (r for m, _, r in rows if m == n)
        lines.append("")
        lines.append(f"{n:,} images: jaxviz speedup vs torch (torch s / jaxviz s; >1: jaxviz "
                     f"faster) = {tr['seconds'] / jx['seconds']:.2f}")
    publish("\n".join(lines), args.out)


if __name__ == "__main__":
    main()

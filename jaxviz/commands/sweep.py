"""Synthesize one image per channel of LAYER (all of them, or --channels), as batches of
one compiled program (``jaxviz.synthesis.sweep``), and write OUT/channel_NNNN.png for
each channel (its index, four digits) and OUT/grid.png (all of them, captioned with
their indices; tiles under 64 px enlarged by pixel repeat).

Image i maximizes the mean over space of channel i with lucid's defaults (Olah,
Mordvintsev & Schubert, "Feature Visualization", Distill 2017): a Fourier
parameterization with decorrelated colour and a sigmoid, random jitter, scale and
rotation at every step, Adam 0.05; its randomness comes from the channel index and
--key alone, so an image does not depend on which other channels are swept or on
--batch-size. Images are RGB in [0, 1] (grey for a one-channel model, as the model sees
them).

Finished channels are saved to OUT/sweep.npz after each batch: a run that is stopped
and started again with the same settings (or a later run with more --channels) reuses
them and computes only the rest. OUT/sweep.json records the model and weights the
checkpoint belongs to; another model or other weights in the same OUT is an error.

Example::

    $ jaxviz sweep alexnet --weights DEFAULT --layer conv3 --steps 256 --out conv3/
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any, TextIO

import jax
import numpy as np

import jaxviz as jv
from jaxviz.commands import _common as c

HELP = "one synthesized image per channel of a layer, resumable (PNGs + grid)"
CHECKPOINT = "sweep.npz"
RECORD = "sweep.json"
GRID_TILE = 64  # grid tiles narrower than this are enlarged by pixel repeat


def _channels(text: str) -> list[int] | None:
    if text == "all":
        return None
    return c.int_list("channels")(text)


def add_arguments(p: argparse.ArgumentParser) -> None:
    c.add_model(p)
    p.add_argument("--layer", required=True, help="a layer with spatial maps (path or alias)")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder (created)")
    p.add_argument("--channels", type=_channels, default=None, metavar="I,J,...|all",
                   help="channels to synthesize (default: all)")
    p.add_argument("--steps", type=c.positive(), default=512,
                   help="optimization steps (default 512)")
    c.add_size(p, "image size", default=c.SYNTHESIS_SIZE)
    p.add_argument("--batch-size", type=c.positive(), default=None, metavar="B",
                   help="images per compiled batch (default: as many as fit in 2 GiB)")
    p.add_argument("--key", type=int, default=0, metavar="N", help="random seed (default 0)")


def grid(images: np.ndarray, channels: list[int]) -> np.ndarray:
    """The sweep's 8-bit pictures (N, H, W[, 3]) in a near-square grid, captioned with
    their channel indices."""
    zoom = max(1, -(-GRID_TILE // images.shape[2]))
    if zoom > 1:
        images = np.repeat(np.repeat(images, zoom, axis=1), zoom, axis=2)
    return jv.render.grid(images, ncols=math.ceil(math.sqrt(len(channels))),
                          labels=[str(ch) for ch in channels])


def _check_record(folder: Path, record: dict[str, Any]) -> None:
    """An existing checkpoint must be this model's, with these weights."""
    if not (folder / CHECKPOINT).exists():
        return
    try:
        found = json.loads((folder / RECORD).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        found = None
    if found != record:
        raise ValueError(f"{folder / CHECKPOINT} holds a sweep of "
                         f"{'an unknown model' if found is None else _describe(found)}, not "
                         f"of {_describe(record)}: remove it or choose another --out")


def _describe(record: dict[str, Any]) -> str:
    weights = c.describe_weights(record["model"], record["weights"], record["seed"])
    return f"{record['model']} with {weights.split(':')[0]}"


def _finished(path: Path) -> set[int]:
    """The channels a checkpoint holds (empty if there is none)."""
    if not path.exists():
        return set()
    try:
        with np.load(path, allow_pickle=False) as f:
            return {int(ch) for ch in f["channels"]}
    except Exception as e:  # a truncated or foreign file: zipfile, pickle or key errors
        raise ValueError(f"cannot read the checkpoint {path} ({type(e).__name__}: {e}): "
                         f"remove it or choose another --out") from None


def run(args: argparse.Namespace, out: TextIO) -> int:
    c.check_model(args)
    spec = c.spec_of(args.model)
    if spec.kind != "image":
        raise ValueError(f"{args.model} takes {spec.describe()}: there is no image to synthesize")
    module = c.module(args.model)
    hw = args.size or c.default_size(spec)
    info = c.spatial_layer(module, args.layer, (1, *hw, spec.channels))
    count = info.shape[-1]
    channels = list(range(count)) if args.channels is None else list(dict.fromkeys(args.channels))
    c.check_indices(channels, count, "--channels", f"{args.layer!r} has {count} channels")
    folder = c.out_folder(args.out, create=False)
    record = {"model": args.model, "weights": args.weights,
              "seed": (args.seed or 0) if c.random_weights(args) else None}
    _check_record(folder, record)
    checkpoint = folder / CHECKPOINT
    reused = len(_finished(checkpoint) & set(channels))

    model, variables = c.load(args)
    folder = c.out_folder(folder)
    c.write_text(folder / RECORD, json.dumps(record) + "\n")
    try:
        with c.sweep_progress(args.quiet, f"sweep {args.layer}") as update:
            images = jv.synthesis.sweep(model, variables, info.path, channels,
                                        key=jax.random.key(args.key), steps=args.steps,
                                        size=hw, batch_size=args.batch_size, progress=update,
                                        checkpoint=checkpoint)
    except jv.InputError as e:
        if "other settings" not in str(e):
            raise
        raise ValueError(f"{checkpoint} holds a sweep with other settings (layer, --steps, "
                         f"--size or --key): remove it or choose another --out") from None
    pictures = c.to_uint8(images, spec.channels == 1)
    for ch, picture in zip(channels, pictures):
        jv.render.save_png(picture, folder / f"channel_{ch:04d}.png")
    sheet = grid(pictures, channels)
    jv.render.save_png(sheet, folder / "grid.png")
    name = args.layer if args.layer == info.path else f"{args.layer} ({info.path})"
    print(f"weights: {c.describe_weights(args.model, args.weights, args.seed)}", file=out)
    print(f"layer:   {name}, {len(channels)} of {count} channels, {hw[0]}x{hw[1]} px, "
          f"{args.steps} steps", file=out)
    if reused:
        print(f"reused:  {reused} finished channel{'' if reused == 1 else 's'} from "
              f"{checkpoint}", file=out)
    print(f"wrote {len(channels)} channel_NNNN.png, grid.png ({sheet.shape[1]}x"
          f"{sheet.shape[0]}) and {CHECKPOINT} to {folder}", file=out)
    return 0


__all__ = ["grid"]

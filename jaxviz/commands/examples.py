"""For every channel of LAYER (or --channels), the receptive-field patches of its K
strongest activations over an image set, above their DeconvNet projections (Zeiler &
Fergus 2014): OUT/LAYER_channelNNNN.png, and OUT/top_k.npz (values, image indices,
positions)."""

from __future__ import annotations

import argparse
from typing import TextIO

import numpy as np

import jaxviz as jv
from jaxviz.analysis import examples as examples_lib
from jaxviz.analysis import receptive
from jaxviz.commands import _common as c

HELP = "every channel's strongest image patches and their projections"


def add_arguments(p: argparse.ArgumentParser) -> None:
    c.add_model(p)
    p.add_argument("--layer", required=True, help="a layer with spatial maps (path or alias)")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder (created)")
    p.add_argument("--images", metavar="FOLDER", default=None,
                   help="image folder (ImageFolder layout or flat); default: the bundled digits "
                        "for the digits model")
    p.add_argument("--k", type=int, default=9, help="examples per channel (default 9)")
    p.add_argument("--channels", type=c.int_list("channels"), default=None, metavar="I,J,...",
                   help="channels to draw (default: all)")
    c.add_size(p, "input size")
    p.add_argument("--batch-size", type=int, default=64, help="images per batch (default 64)")


def run(args: argparse.Namespace, out: TextIO) -> int:
    c.check_model(args)
    if args.k < 1 or args.batch_size < 1:
        raise ValueError(f"--k and --batch-size must be at least 1, got {args.k} and "
                         f"{args.batch_size}")
    spec = c.spec_of(args.model)
    if spec.kind == "vector":
        raise ValueError(f"{args.model} takes {spec.describe()}: it has no image patches")
    hw = args.size or (spec.size, spec.size)
    info = c.spatial_layer(c.module(args.model), args.layer, (1, *hw, spec.channels))
    n = info.shape[-1]
    channels = list(range(n)) if args.channels is None else args.channels
    c.check_indices(channels, n, "--channels", f"{args.layer!r} has {n} channels")
    images, what = c.image_set(args.model, args.images, args.size, spec, args.batch_size)
    model, variables = c.load(args)
    if isinstance(images, np.ndarray):
        found = jv.analysis.top_k(model, variables, images, args.layer, k=args.k,
                                  batch_size=args.batch_size)
    else:  # a stream: a bar over its batches
        with c.progress(images, total=len(images), desc=f"top-{args.k} {args.layer}",
                        quiet=args.quiet) as batches:
            found = jv.analysis.top_k(model, variables, batches, args.layer, k=args.k)
    drawn = examples_lib.example_pictures(model, variables, images, found, channels,
                                          batch_size=args.batch_size, scale=spec.scale)
    field = receptive.receptive_field(model, args.layer, (*hw, spec.channels))
    folder = c.out_folder(args.out)
    print(f"weights: {c.describe_weights(args.model, args.weights, args.seed)}", file=out)
    print(f"images:  {what}", file=out)
    print(f"layer:   {args.layer}, {n} channels, receptive field {field.size[0]}x"
          f"{field.size[1]} px, stride {field.stride[0]}", file=out)
    safe = args.layer.replace("/", "_").replace(".", "_")
    for ch, picture in drawn.items():
        jv.render.save_png(picture, folder / f"{safe}_channel{ch:04d}.png")
    c.save_npz(folder / "top_k.npz", values=found.values[channels], ids=found.ids[channels],
               positions=found.positions[channels], channels=np.asarray(channels))
    print(f"wrote {len(channels)} picture{'' if len(channels) == 1 else 's'} and top_k.npz "
          f"to {folder}", file=out)
    return 0

"""Draw every channel of LAYER for one image, before and after the ReLU, normalization
and pooling that follow it, as Zeiler & Fergus (2014) show a layer: one PNG per stage,
OUT/PATH.png (PATH the stage's module path with dots as underscores: features_0.png,
features_1.png, features_2.png for AlexNet's conv1, relu1 and pool1), and one line of
statistics per stage on stdout.

Each picture is a grid of grey tiles, one per channel, scaled with statistics of the
whole stage (all its channels): by default a stage with negative values (a convolution's
output) at ±1 standard deviation, mid-grey zero, and a rectified one (after a ReLU or a
pool) with zero mid-grey and 2 standard deviations of its positive values white.

Example::

    $ jaxviz activations alexnet --weights DEFAULT --layer conv1 --out conv1
    $ jaxviz activations lenet_digits --layer conv2 --channels 0,1,2,3 --out digit
"""

from __future__ import annotations

import argparse
from typing import TextIO

import numpy as np

import jaxviz as jv
from jaxviz.analysis import maps
from jaxviz.commands import _common as c

HELP = "a layer's maps for one image, before and after its ReLU and pooling"
SCALES = ("auto", *maps.MAP_SCALES)
DESCRIBED = {"sigmas": "±1σ of the stage, zero mid-grey",
             "pos_sigmas": "zero mid-grey, 2σ of the stage's positive values white",
             "per_channel": "each channel from its minimum (black) to its maximum (white)"}


def add_arguments(p: argparse.ArgumentParser) -> None:
    c.add_model(p)
    p.add_argument("--layer", required=True,
                   help="a layer with spatial maps (path or alias); the ReLU, normalization "
                        "and pooling right after it are drawn too")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder (created)")
    p.add_argument("--image", metavar="PATH", default=None,
                   help=f"image file; default: the bundled photograph {c.SAMPLE!r} (a held-out "
                        f"digit for the digits model)")
    c.add_size(p)
    p.add_argument("--scale", choices=SCALES, default="auto",
                   help="sigmas: ±1σ of the stage; pos_sigmas: zero mid-grey, 2σ of the "
                        "positive values white; per_channel: each channel from its own minimum "
                        "to maximum; auto: sigmas for a stage with negative values, else "
                        "pos_sigmas (default auto)")
    p.add_argument("--channels", type=c.int_list("channels"), default=None, metavar="I,J,...",
                   help="channels to draw (default: all)")


def scale_of(a: np.ndarray, scale: str) -> str:
    """The scaling of ``draw_maps`` that ``--scale`` gives to stage ``a``."""
    if scale != "auto":
        return scale
    return "sigmas" if float(np.min(a)) < 0 else "pos_sigmas"


def file_name(path: str) -> str:
    """The picture of stage ``path``: ``features.0`` -> ``features_0.png``."""
    return f"{c.safe_name(path)}.png"


def run(args: argparse.Namespace, out: TextIO) -> int:
    # Everything cheap first: a typo should not wait for the weights.
    c.check_model(args)
    module = c.module(args.model)
    spec = c.spec_of(args.model)
    x, described = c.image_input(args.model, args.image, args.size, spec)
    table = jv.layer_names(module, x.shape)  # an input too small for the model fails here
    (path,) = jv.capture.resolve(module, [args.layer], table)
    shape = next(info.shape for info in table if info.path == path)
    if len(shape) != 4:
        raise ValueError(f"--layer {args.layer!r} has no spatial maps (its output is "
                         f"{tuple(shape)}): choose a convolution, ReLU or pooling layer")
    c.check_indices(args.channels, shape[-1], "--channels",
                    f"{args.layer!r} has {shape[-1]} channels")
    folder = c.out_folder(args.out, create=False)

    model, variables = c.load(args)
    found = maps.activation_maps(model, variables, x, path)
    lines = maps.statistics(found)
    alias = {p: a for a, p in reversed(jv.capture.aliases(model).items())}
    kinds = {info.path: info.kind for info in table}

    def named(p: str) -> str:
        return f"{p} ({alias[p]}, {kinds[p]})" if p in alias else f"{p} ({kinds[p]})"

    pictures = {}
    for p, a in found.items():
        if a.ndim == 4:  # a stage that pools to a vector has no maps to draw
            scale = scale_of(a, args.scale)
            pictures[p] = (maps.draw_maps(a, scale=scale, channels=args.channels), scale)
    folder = c.out_folder(folder)
    print(f"weights: {c.describe_weights(args.model, args.weights, args.seed)}", file=out)
    print(f"input:   {described}", file=out)
    stages = len(found) - 1
    print(f"layer:   {named(path)}"
          + (f", then {', '.join(named(p) for p in list(found)[1:])}" if stages else ""),
          file=out)
    for line in lines.values():
        print(line, file=out)
    for p, (picture, scale) in pictures.items():
        file = jv.render.save_png(picture, folder / file_name(p))
        print(f"wrote {file} ({DESCRIBED[scale]})", file=out)
    return 0

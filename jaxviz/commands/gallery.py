"""Write a static web gallery of the channels of one or more layers, and print the page
to open: an index of the layers, a page per layer with every channel's thumbnail, and a
page per channel with its feature visualization (the image that maximizes it), its
strongest image patches and their DeconvNet projections when there is an image set
(--images, or the bundled digits for the digits model), and its expanded weights from
the most connected channels of the previous layer, linked to their pages. Pictures are
PNG files next to the HTML; no server is needed (open OUT/index.html in a browser).

A rerun with the same settings reuses finished work: the feature visualizations resume
from OUT/LAYER/sweep.npz, and a channel whose page exists is not drawn again.

Example::

    $ jaxviz gallery lenet_digits --layer conv1,conv2,conv3 --out digits-gallery
    $ jaxviz gallery alexnet --weights DEFAULT --layer conv5 --images val/ --channels 32
"""

from __future__ import annotations

import argparse
from typing import TextIO

import jax

import jaxviz as jv
from jaxviz.commands import _common as c
from jaxviz.models.registry import BUNDLED

HELP = "a static web gallery of every channel of some layers (HTML + PNG)"


def _layers(text: str) -> list[str]:
    names = [t.strip() for t in text.split(",") if t.strip()]
    if not names:
        raise argparse.ArgumentTypeError(f"expected comma-separated layer names, got {text!r}")
    return names


def _channels(text: str):
    """N (the first N channels) or I,J,... (those channels)."""
    if "," not in text:
        try:
            n = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected N or comma-separated channels, got {text!r}") from None
        if n < 1:
            raise argparse.ArgumentTypeError(f"expected at least 1 channel, got {text!r}")
        return n
    return c.int_list("channels")(text)


def add_arguments(p: argparse.ArgumentParser) -> None:
    c.add_model(p)
    p.add_argument("--layer", required=True, type=_layers, action="extend", metavar="L[,L2,...]",
                   help="layers with spatial maps (paths or aliases), comma-separated or the "
                        "option repeated")
    p.add_argument("--out", metavar="DIR", default=None,
                   help="output folder (created; default: gallery-MODEL)")
    p.add_argument("--images", metavar="FOLDER", default=None,
                   help="image folder for the strongest patches (ImageFolder layout or flat); "
                        "default: the bundled digits for the digits model, none otherwise")
    p.add_argument("--channels", type=_channels, default=None, metavar="N|I,J,...",
                   help="the first N channels of each layer, or those channels (default: all)")
    p.add_argument("--steps", type=c.positive(), default=256,
                   help="optimization steps per feature visualization (default 256)")
    p.add_argument("--size", dest="side", type=c.positive(), default=None, metavar="N",
                   help="side of the feature visualizations (default: the model's own up to "
                        "64 px, else 128)")
    p.add_argument("--k", type=c.positive(), default=9,
                   help="image patches per channel (default 9)")
    p.add_argument("--connections", type=c.positive(), default=8,
                   help="most connected channels of the previous layer shown (default 8)")
    p.add_argument("--width", type=c.positive(), default=None,
                   help="window of the expanded weights, in the previous layer's positions "
                        "(default: all that one unit reads, e.g. 10 for the digits model's "
                        "conv1 -> conv2)")
    p.add_argument("--batch-size", type=c.positive(), default=64,
                   help="images per batch (default 64)")
    p.add_argument("--key", type=int, default=0, help="seed of the feature visualizations (default 0)")


def run(args: argparse.Namespace, out: TextIO) -> int:
    from jaxviz.analysis import gallery

    c.check_model(args)
    spec = c.spec_of(args.model)
    if spec.kind != "image":
        raise ValueError(f"{args.model} takes {spec.describe()}: it has no channels to show")
    module = c.module(args.model)
    table = jv.layer_names(module, spec.size, partial=True)
    jv.capture.resolve(module, args.layer, table)  # an unknown layer fails before any work
    images, what = None, "none (pass --images FOLDER for each channel's strongest patches)"
    digits = args.model in BUNDLED and spec.channels == 1
    if args.images is not None or digits:
        images, what = c.image_set(args.model, args.images, None, spec, args.batch_size)
    folder = args.out or f"gallery-{args.model}"
    model, variables = c.load(args)
    weights = c.describe_weights(args.model, args.weights, args.seed)
    index = gallery.build(
        model, variables, args.layer, folder, images=images, channels=args.channels,
        key=jax.random.key(args.key), steps=args.steps, size=args.side, k=args.k,
        width=args.width, connections=args.connections, batch_size=args.batch_size,
        title=f"{args.model} gallery", about=[f"weights: {weights}", f"images: {what}"],
        settings={"model": args.model, "weights": args.weights, "seed": args.seed,
                  "images": args.images},
        quiet=args.quiet)
    print(f"weights: {weights}", file=out)
    print(f"images:  {what}", file=out)
    print(f"open {index.resolve()}", file=out)
    return 0

"""Draw the kernel of one convolution layer of MODEL (LAYER; default the first) as tiles
in one PNG file, --out.

A kernel with three input channels (a first layer of an RGB network) gives one RGB tile
per filter, the view of Krizhevsky et al. (2012, fig. 3); a kernel with one input channel
(the first layer of the digits model) gives one grey tile per filter; any other gives a
grid of grey tiles, one row per filter and one column per input channel (by default the
first 20 filters and their first 15 input channels). Every tile is scaled with statistics
of the whole kernel (with --scale per_filter, of each whole filter), whichever filters
and channels are drawn, so the tiles of one picture are comparable. ``--order pca`` orders
the filters by the first principal component of the absolute weights of the next
convolution that reads them (Olah et al., "Visualizing Weights", Distill 2020), which
groups the filters that layer uses together; it needs scikit-learn.

Example::

    $ jaxviz filters alexnet --weights DEFAULT --out conv1.png
    $ jaxviz filters lenet_digits conv2 --filters 0,1,2,3 --channels 0,1,2 --out conv2.png
"""

from __future__ import annotations

import argparse
import importlib.util
from typing import TextIO

import jax
import numpy as np

import jaxviz as jv
from jaxviz.analysis import maps
from jaxviz.commands import _common as c

HELP = "a convolution layer's filters as tiles (RGB for a first layer)"
N_SIGMAS = 3


def add_arguments(p: argparse.ArgumentParser) -> None:
    c.add_model(p)
    p.add_argument("layer", metavar="LAYER", nargs="?", default=None,
                   help="a convolution layer (path or alias); default: the first")
    p.add_argument("--out", required=True, metavar="FILE.png",
                   help="the picture to write (its folder is created)")
    p.add_argument("--scale", choices=maps.FILTER_SCALES, default="sigmas",
                   help="sigmas: --n standard deviations either side of the kernel's mean span "
                        "black to white; per_filter: each filter by its own largest |w|, zero "
                        "mid-grey; max_abs: the kernel's largest |w|, zero mid-grey (default "
                        "sigmas)")
    p.add_argument("--n", type=c.positive(float), default=None,
                   help=f"standard deviations for --scale sigmas (default {N_SIGMAS})")
    p.add_argument("--order", choices=("index", "pca"), default="index",
                   help="index: the filters in index order (or as --filters lists them); pca: "
                        "by the first principal component of the next layer's |weights|, "
                        "every filter unless --filters chooses some (default index)")
    p.add_argument("--filters", type=c.int_list("filter indices"), default=None,
                   metavar="I,J,...",
                   help="the filters to draw (default: all, or the first 20 in a filter by "
                        "input channel grid)")
    p.add_argument("--channels", type=c.int_list("input channels"), default=None,
                   metavar="I,J,...",
                   help="the input channels of a filter by input channel grid (default: the "
                        "first 15)")


# --------------------------------------------------------------------------- checks


def _next_reader(module, variables, names: list[str], i: int, filters: int) -> str | None:
    """The first convolution after ``names[i]`` that reads its ``filters`` channels."""
    for name in names[i + 1:]:
        if jax.eval_shape(lambda v: maps.kernel(module, v, name), variables).shape[-1] == filters:
            return name
    return None


def plan(args: argparse.Namespace) -> tuple[str, bool]:
    """Checks the arguments on the model's shapes alone (nothing loaded or computed):
    (the layer's path, whether its tiles are RGB)."""
    c.check_model(args)
    module = c.module(args.model)
    variables = c.abstract_variables(module)
    names = maps.conv_layers(module, variables)
    if not names:
        raise ValueError(f"{args.model} has no convolution layers")
    layer = names[0] if args.layer is None else args.layer
    shape = jax.eval_shape(lambda v: maps.kernel(module, v, layer), variables).shape
    f, _, _, channels = shape
    rgb = channels == 3 and args.channels is None
    path = jv.capture.aliases(module).get(layer, layer)
    c.check_indices(args.filters, f, "--filters", f"{layer!r} has {f} filters")
    if args.channels is not None and channels == 1:
        raise ValueError(f"--channels chooses the input channels of a filter by input channel "
                         f"grid; {layer!r} has one input channel")
    c.check_indices(args.channels, channels, "--channels",
                    f"{layer!r} reads {channels} input channels")
    if args.n is not None and args.scale != "sigmas":
        raise ValueError(f"--n applies to --scale sigmas, not {args.scale}")
    if args.order == "pca":
        if importlib.util.find_spec("sklearn") is None:
            raise ImportError("--order pca needs scikit-learn: pip install 'jaxviz[analysis]'")
        if path not in names or _next_reader(module, variables, names, names.index(path),
                                             f) is None:
            raise ValueError(f"--order pca orders {layer!r}'s filters by the next convolution "
                             f"that reads them, and none does: use --order index")
    c.output_file(args.out, ".png", create=False)
    return path, rgb


# --------------------------------------------------------------------------- run


def order(model, variables, path: str, filters: list[int] | None) -> np.ndarray:
    """``filters`` (default: all) in the order of
    :func:`jaxviz.analysis.weights.first_layer_order` for layer ``path``."""
    from jaxviz.analysis import weights

    ranked = weights.first_layer_order(model, variables, layer=path)
    if filters is None:
        return ranked
    rank = np.argsort(ranked)  # rank[f]: filter f's position in the order
    return np.asarray(sorted(filters, key=lambda f: rank[f]))


def run(args: argparse.Namespace, out: TextIO) -> int:
    path, rgb = plan(args)
    model, variables = c.load(args)
    k = maps.kernel(model, variables, path)
    filters = args.filters
    if args.order == "pca":
        filters = order(model, variables, path, args.filters)
    n = N_SIGMAS if args.n is None else args.n
    tiles = maps.filter_tiles(k, scale=args.scale, n=n, filters=filters,
                              channels=args.channels, rgb=rgb)
    picture = maps.draw_filters(tiles)

    f, kh, kw, channels = k.shape
    alias = {p: a for a, p in reversed(jv.capture.aliases(model).items())}.get(path)
    named = f"{path} ({alias})" if alias else path
    scaling = {"sigmas": f"±{n:g}σ of the whole kernel",
               "per_filter": "each filter by its largest |w|, zero mid-grey",
               "max_abs": "the kernel's largest |w|, zero mid-grey"}[args.scale]
    if rgb:
        what = f"{len(tiles)} RGB tiles"
    elif channels == 1:
        what = f"{len(tiles)} grey tiles"
    else:
        what = f"{tiles.shape[0]} filters x {tiles.shape[1]} input channels"
    ordered = (", ordered by the first principal component of the next layer's |weights|"
               if args.order == "pca" else "")
    print(f"weights: {c.describe_weights(args.model, args.weights, args.seed)}", file=out)
    print(f"layer:   {named}, kernel {f} x {kh} x {kw} x {channels} (filters, height, width, "
          f"input channels)", file=out)
    print(f"tiles:   {what}, {scaling}{ordered}", file=out)
    file = c.output_file(args.out, ".png")
    print(f"wrote {jv.render.save_png(picture, file)}", file=out)
    return 0

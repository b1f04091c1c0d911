"""Draw the channels of the previous and next layers most strongly connected to one unit
(channel --unit of --layer): one PNG file, --out, with a row per side, each channel's
expanded weights as a heat map (red excites, blue inhibits) captioned with its index
and summed weight; and, with --npz, those expanded weights and rankings as arrays.

Expanded weights (Olah et al., "Visualizing Weights", Distill 2020) are the linear map
between two layers however far apart: the gradient of the unit at the centre of an
N x N window (--width N) of the earlier layer, with ReLUs taken as the identity and max
pools as average pools. They depend on the weights alone; no image enters. Channels are
ranked by the L2 norm of their expanded weights over the window. The previous and next
layers are by default the nearest layers of the same kind (the previous and next
convolution, or inception block).

Example::

    $ jaxviz weights lenet_digits --layer conv2 --unit 3 --out conv2_3.png
    $ jaxviz weights alexnet --weights DEFAULT --layer conv3 --unit 7 --next none --out c3.png
"""

from __future__ import annotations

import argparse
from typing import TextIO

import numpy as np

import jaxviz as jv
from jaxviz.commands import _common as c

HELP = "one unit's strongest connections to the layers before and after it"
SIDES = ("previous", "next")


def add_arguments(p: argparse.ArgumentParser) -> None:
    c.add_model(p)
    p.add_argument("--layer", required=True, help="the unit's layer (path or alias)")
    p.add_argument("--unit", required=True, type=c.positive(int, zero=True), metavar="U",
                   help="the unit: a channel of --layer")
    p.add_argument("--out", required=True, metavar="FILE.png",
                   help="the picture to write (its folder is created)")
    p.add_argument("--k", type=c.positive(int), default=10,
                   help="channels to keep on each side (default 10)")
    p.add_argument("--width", type=c.positive(int), default=5, metavar="N",
                   help="side N of the window of expanded weights, in the earlier layer's grid "
                        "(default 5)")
    for side, where in (("previous", "before"), ("next", "after")):
        p.add_argument(f"--{side}", default="auto", metavar="LAYER",
                       help=f"the layer {where} --layer to rank; auto: the nearest one of the "
                            f"same kind; none: leave this side out (default auto)")
    p.add_argument("--npz", metavar="FILE.npz", default=None,
                   help="also write the rankings and expanded weights as arrays: per side S, "
                        "S_layer, S_channels, S_norm, S_total, S_maps (k, W, W), S_positive, "
                        "S_negative")


def _other(name: str) -> str | None:
    return None if name == "none" else name


def check(args: argparse.Namespace) -> str:
    """Checks the arguments on the model's layer table alone (no weights); returns the
    path of --layer."""
    from jaxviz.models.modules import input_spec

    c.check_model(args)
    module = c.module(args.model)
    spec = input_spec(module)
    shape = (1, spec.channels) if spec.kind == "vector" else (1, spec.size, spec.size,
                                                                spec.channels)
    table = jv.layer_names(module, shape)
    order = {info.path: i for i, info in enumerate(table)}
    (path,) = jv.capture.resolve(module, [args.layer], table)
    channels = table[order[path]].shape[-1]
    c.check_indices([args.unit], channels, "--unit", f"{args.layer!r} has {channels} channels")
    for side, step in (("previous", -1), ("next", 1)):
        other = getattr(args, side)
        if other in ("auto", "none"):
            continue
        (other_path,) = jv.capture.resolve(module, [other], table)
        if (order[other_path] - order[path]) * step <= 0:
            raise ValueError(f"--{side} {other!r} must come {'before' if step < 0 else 'after'} "
                             f"--layer {args.layer!r} in the forward pass")
    if args.previous == "none" and args.next == "none":
        raise ValueError("--previous none and --next none leave nothing to draw")
    c.output_file(args.out, ".png", create=False)
    if args.npz is not None:
        c.output_file(args.npz, ".npz", "--npz", create=False)
    return path


def arrays(connections: dict[str, jv.analysis.weights.Connections]) -> dict[str, np.ndarray]:
    """The ``--npz`` arrays of ``connections``: ``{side}_{field}`` for every field."""
    return {f"{side}_{field}": np.asarray(value)
            for side, found in connections.items() for field, value in found._asdict().items()}


def run(args: argparse.Namespace, out: TextIO) -> int:
    from jaxviz.analysis import weights

    path = check(args)
    model, variables = c.load(args)
    sides = [side for side in SIDES if getattr(args, side) != "none"]
    found: dict[str, weights.Connections] = {}
    with c.bar(len(sides), "expanded weights", args.quiet) as bar:
        for side in sides:  # one side at a time, for the progress bar
            other = {s: (_other(getattr(args, s)) if s == side else None) for s in SIDES}
            found.update(weights.top_connections(model, variables, args.layer, args.unit,
                                                 width=args.width, k=args.k, **other))
            bar.update(1)
    if not found:
        raise ValueError(f"{args.layer!r} has no other layer of its kind before or after it: "
                         f"name one with --previous or --next")
    picture = weights.draw_connections(found)

    alias = {p: a for a, p in reversed(jv.capture.aliases(model).items())}
    named = f"{path} ({alias[path]})" if path in alias else path
    print(f"weights: {c.describe_weights(args.model, args.weights, args.seed)}", file=out)
    print(f"unit:    channel {args.unit} of {named}; expanded weights over a "
          f"{args.width} x {args.width} window", file=out)
    for side, con in found.items():
        named = f"{con.layer} ({alias[con.layer]})" if con.layer in alias else con.layer
        print(f"{side}: {named}, its {len(con.channels)} strongest channels (L2 norm, sum):",
              file=out)
        rows = [(f"  {ch}", f"{norm:.4g}", f"{total:+.4g}")
                for ch, norm, total in zip(con.channels, con.norm, con.total)]
        print("\n".join(c.table(rows)), file=out)
    file = c.output_file(args.out, ".png")
    print(f"wrote {jv.render.save_png(picture, file)}", file=out)
    if args.npz is not None:
        npz = c.output_file(args.npz, ".npz", "--npz")
        print(f"wrote {c.save_npz(npz, **arrays(found))}", file=out)
    return 0

"""Train a one-hidden-layer MLP on two moons and draw each hidden unit's line
w.x + b = 0 over the data at chosen iterations: OUT/frames.png (a grid) and
OUT/training.gif."""

from __future__ import annotations

import argparse
from typing import TextIO

from jaxviz.commands import _common as c

HELP = "a 2-D MLP's hidden units as lines during training (PNG + GIF)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", required=True, metavar="DIR", help="output folder (created)")
    p.add_argument("--hidden", type=c.positive(), default=8, help="hidden units (default 8)")
    p.add_argument("--frames", type=c.int_list("iterations"),
                   default=[0, 25, 50, 100, 200, 400, 800, 2000],
                   metavar="I,J,...", help="iterations to draw; the last is the training length")
    p.add_argument("--seed", type=int, default=None, help="seed of data and weights (default 0)")


def run(args: argparse.Namespace, out: TextIO) -> int:
    from jaxviz.analysis import training

    record = sorted(set(args.frames))
    paths = training.write_frames(args.out, hidden=args.hidden, steps=max(record),
                                  record=record, seed=args.seed or 0)
    for path in paths.values():
        print(f"wrote {path}", file=out)
    return 0

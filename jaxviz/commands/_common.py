"""What the subcommands share: the model and weights arguments, the default input,
progress bars, output folders, and the small parsers of argument values.

Every subcommand module defines ``HELP`` (one line for ``jaxviz --help``), its docstring
(the subcommand's ``--help`` description), ``add_arguments(parser)`` and
``run(args, out) -> int``; ``jaxviz.commands.COMMANDS`` lists them in the order
``jaxviz --help`` shows them.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, TextIO

import flax.linen as nn
import numpy as np

import jaxviz as jv
from jaxviz.models.modules import InputSpec, input_spec
from jaxviz.models.registry import BUNDLED, check_name, create

SAMPLE = "chelsea"
# torchvision's evaluation transform resizes to 256 before a 224 crop; other sizes keep
# that ratio, so the crop shows the whole image's centre at any size, never zero padding.
RESIZE_RATIO = 256 / 224
MODELS = (*jv.models.ARCHITECTURES, *BUNDLED)


# --------------------------------------------------------------------------- argument values


def int_list(what: str):
    """An argparse type: comma-separated non-negative ints (``what`` names them in errors)."""

    def parse(text: str) -> list[int]:
        try:
            values = [int(v) for v in text.split(",") if v.strip()]
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected comma-separated {what}, got {text!r}") from None
        if not values or min(values) < 0:
            raise argparse.ArgumentTypeError(f"expected non-negative {what}, got {text!r}")
        return values

    return parse


def positive(kind: type = int, *, zero: bool = False):
    """An argparse type: a positive number of ``kind`` (or non-negative with ``zero``)."""

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected {'an integer' if kind is int else 'a number'}, got {text!r}") from None
        if value < 0 or (value == 0 and not zero) or value != value:
            raise argparse.ArgumentTypeError(
                f"expected a {'non-negative' if zero else 'positive'} number, got {text!r}")
        return value

    return parse


def size(values: Sequence[int]) -> tuple[int, int]:
    """``--size`` as (H, W); raises ValueError for anything but one or two positive ints."""
    if len(values) not in (1, 2):
        raise ValueError(f"--size takes N or H W, got {len(values)} numbers")
    if any(v <= 0 for v in values):
        raise ValueError(f"--size must be positive, got {' '.join(map(str, values))}")
    return (values[0], values[-1])


def table(rows: Sequence[Sequence[str]]) -> list[str]:
    """Rows of cells as lines with left-aligned columns; the last column is not padded."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    return ["  ".join([*(cell.ljust(w) for cell, w in zip(row, widths)), row[-1]]).rstrip()
            for row in rows]


def safe_name(layer: str) -> str:
    """A layer name as a file-name part: ``features.10`` -> ``features_10``."""
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in layer)


# --------------------------------------------------------------------------- arguments


def add_model(p: argparse.ArgumentParser, *, default: str | None = None) -> None:
    """MODEL (positional; optional when ``default`` is given), --weights and --seed."""
    what = (f"architecture ({', '.join(jv.models.ARCHITECTURES)}) or bundled trained model "
            f"({', '.join(BUNDLED)})")
    if default is None:
        p.add_argument("model", metavar="MODEL", help=what)
    else:
        p.add_argument("model", metavar="MODEL", nargs="?", default=default,
                       help=f"{what}; default: {default}")
    p.add_argument("--weights", metavar="W", default=None,
                   help="DEFAULT (torchvision's ImageNet weights, downloaded), or a .safetensors/"
                        ".pth file; default: seeded random weights (the bundled ones for a "
                        "bundled model)")
    p.add_argument("--seed", type=int, default=None, help="seed of the random weights (default 0)")


def add_size(p: argparse.ArgumentParser, what: str = "input size after preprocessing") -> None:
    p.add_argument("--size", metavar="N", type=int, nargs="+", default=None,
                   help=f"{what}: N (square) or H W (default: the model's own, 224 for "
                        f"ImageNet models, 28 for the digits model)")


def add_quiet(p: argparse.ArgumentParser) -> None:
    p.add_argument("-q", "--quiet", action="store_true",
                   help="no progress bars or progress lines (results and errors still print)")


def check_model(args: argparse.Namespace) -> None:
    """A typo in MODEL, or --seed with weights, fails before anything is loaded."""
    check_name(args.model, MODELS)
    if args.seed is not None and (args.weights is not None or args.model in BUNDLED):
        raise ValueError("--seed chooses random weights; it cannot be used with --weights "
                         "or a bundled trained model")


def module(name: str) -> nn.Module:
    """The module of model ``name``, without weights (nothing made or read)."""
    return create(BUNDLED[name]()[0] if name in BUNDLED else name)


def load(args: argparse.Namespace):
    """(model, variables) for MODEL, --weights and --seed."""
    return jv.load(args.model, weights=args.weights, seed=args.seed or 0)


def describe_weights(name: str, weights: str | None, seed: int | None) -> str:
    if name in BUNDLED and weights is None:
        return f"bundled trained weights ({name})"
    if weights is None:
        return (f"seeded random weights (seed {seed or 0}): activations show the architecture, "
                f"not learned features")
    if weights == "DEFAULT":
        return "torchvision's ImageNet weights (DEFAULT)"
    return f"from {weights}"


def random_weights(args: argparse.Namespace) -> bool:
    return args.weights is None and args.model not in BUNDLED


# --------------------------------------------------------------------------- inputs


def _default_digit(side: int) -> tuple[np.ndarray, str] | None:
    """The first held-out digit as (1, side, side, 1) and its description, or None without
    scikit-learn."""
    try:
        x, labels = jv.data.digits("test", size=side)
    except ImportError:
        return None
    return x[:1], f"held-out digit 0 of jaxviz.data.digits('test') (a {int(labels[0])})"


def image_input(model_name: str, image: str | None, hw: tuple[int, int] | None,
                spec: InputSpec) -> tuple[np.ndarray, str]:
    """One model-ready image for ``model_name`` and a line that says what it is: ``image``
    (a file), or by default the bundled photograph (a held-out digit for the digits
    model), preprocessed as the model expects at ``hw`` (default: its usual size)."""
    if spec.kind == "vector":
        raise ValueError(f"{model_name} takes {spec.describe()}, not images")
    hw = hw or (spec.size, spec.size)
    if spec.scale == "imagenet":
        resize = round(max(hw) * RESIZE_RATIO)
        source = jv.data.sample_image(SAMPLE) if image is None else Path(image)
        x = jv.data.preprocess(source, hw, resize=resize)
        what = f"bundled photograph {SAMPLE!r} (jaxviz.data.sample_image)" if image is None else image
        return x, f"{what}, shorter side resized to {resize}, centre {hw[0]}x{hw[1]} cropped"
    grey = spec.channels == 1
    digits = image is None and grey and spec.size == jv.data.DIGITS_SIZE  # LeNet
    if digits:
        side = min(jv.data.DIGITS_SIZE, *hw)  # the digit at its size, or smaller
        if side < 8:
            raise ValueError(f"--size must be at least 8 for the bundled digit; got "
                             f"{hw[0]} {hw[1]}")
        digit = _default_digit(side)
        if digit is not None:
            x, what = digit
            if tuple(hw) != x.shape[1:3]:  # the digit centred on a blank canvas of that size
                centre = [((hw[0] - side) // 2, (hw[1] - side) // 2)]
                x = jv.data.place_on_canvas(x, hw, centre)
                what = f"{what}, centred on a blank {hw[0]}x{hw[1]} canvas"
            elif side != 28:
                what = f"{what}, at {side}x{side}"
            return x, what
    source = jv.data.sample_image(SAMPLE) if image is None else Path(image)
    x = jv.data.preprocess(source, hw, resize="exact", scale="unit", grey=grey)
    what = f"bundled photograph {SAMPLE!r}" if image is None else image
    what = f"{what}, resized to {hw[0]}x{hw[1]}, {'grey ' if grey else ''}values in [0, 1]"
    if digits:
        what += " (for a held-out digit instead: pip install 'jaxviz[digits]')"
    return x, what


def spec_of(name: str) -> InputSpec:
    return input_spec(module(name))


# --------------------------------------------------------------------------- output


def progress(items: Iterable[Any], *, total: int | None = None, desc: str = "",
             quiet: bool = False):
    """``items`` with a progress bar on stderr (tqdm), or as they are with ``quiet``."""
    if quiet:
        return items
    from tqdm.auto import tqdm

    return tqdm(items, total=total, desc=desc, file=sys.stderr, leave=False,
                dynamic_ncols=True)


def bar(total: int, desc: str, quiet: bool):
    """A tqdm bar to ``update`` by hand (a no-op object with ``quiet``)."""
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, file=sys.stderr, leave=False, disable=quiet,
                dynamic_ncols=True)


def sweep_progress(quiet: bool, desc: str):
    """A ``progress=`` callable for ``jv.synthesis.sweep`` that draws a bar (or False)."""
    if quiet:
        return False, None
    b = bar(0, desc, False)

    def update(done: int, total: int, seconds: float) -> None:
        b.total = total
        b.n = done
        b.refresh()

    return update, b


def out_folder(path: str | os.PathLike) -> Path:
    """``path`` as a folder, created; an existing file there is an error."""
    folder = Path(path)
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"--out {str(folder)!r} is a file; expected a folder (it is created)")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def write_text(path: Path, text: str) -> Path:
    """Writes ``text`` to ``path`` atomically (a temporary file, then a rename)."""
    with tempfile.NamedTemporaryFile("w", dir=path.parent, prefix=f".{path.name}.",
                                     suffix=".tmp", delete=False, encoding="utf-8") as f:
        f.write(text)
    os.replace(f.name, path)
    return path


def save_npz(path: Path, **arrays: Any) -> Path:
    """``np.savez`` to ``path`` atomically."""
    with tempfile.NamedTemporaryFile(dir=path.parent, prefix=f".{path.name}.", suffix=".npz",
                                     delete=False) as f:
        np.savez(f, **arrays)
    os.replace(f.name, path)
    return path


def wrote(out: TextIO, paths: Sequence[Path], what: str = "file") -> None:
    """One line that says what was written."""
    if len(paths) == 1:
        print(f"wrote {paths[0]}", file=out)
    else:
        folders = {p.parent for p in paths}
        where = next(iter(folders)) if len(folders) == 1 else "several folders"
        print(f"wrote {len(paths)} {what}s to {where}", file=out)


def image_set(model_name: str, images: str | None, hw: tuple[int, int] | None,
              spec: InputSpec, batch_size: int):
    """(stream, description) of the image set a command runs over: ``images`` (a folder,
    preprocessed as the model expects at ``hw``), or the bundled digits for the digits
    model."""
    if spec.kind == "vector":
        raise ValueError(f"{model_name} takes {spec.describe()}: it has no images")
    hw = hw or (spec.size, spec.size)
    grey = spec.channels == 1
    if images is not None:
        resize = round(max(hw) * RESIZE_RATIO) if spec.scale == "imagenet" else "exact"
        found = jv.stream.images(images, batch_size=batch_size, size=hw, resize=resize,
                                 scale=spec.scale, grey=grey)
        return found, f"{found.total} images of {images}"
    if grey and spec.size == jv.data.DIGITS_SIZE and tuple(hw) == (spec.size, spec.size):
        found = jv.stream.images(jv.data.digits("all")[0], batch_size=batch_size)
        return found, f"the {found.total:,} bundled digits (jaxviz.data.digits('all'))"
    raise ValueError(f"{model_name} needs an image set: pass --images FOLDER")

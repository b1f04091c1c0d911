"""What the subcommands share: the model and weights arguments, the default input, the
checks of layers and indices on the model's shapes alone, progress bars, output files and
folders, and the small parsers of argument values.

Every subcommand module defines ``HELP`` (one line for ``jaxviz --help``), its docstring
(the subcommand's ``--help`` description), ``add_arguments(parser)`` and
``run(args, out) -> int``; ``jaxviz.commands.COMMANDS`` lists them in the order
``jaxviz --help`` shows them.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import tempfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, TextIO

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

import jaxviz as jv
from jaxviz.models.modules import InputSpec, input_spec
from jaxviz.models.registry import BUNDLED, check_name, create

SAMPLE = "chelsea"
# torchvision's evaluation transform resizes to 256 before a 224 crop; other sizes keep
# that ratio, so the crop shows the whole image's centre at any size, never zero padding.
RESIZE_RATIO = 256 / 224
MODELS = (*jv.models.ARCHITECTURES, *BUNDLED)
# what --size defaults to (the end of its help): the model's input for the commands that
# run the model on an image, 128 px (see default_size) for the ones that synthesize one
MODEL_SIZE = "the model's own, 224 for ImageNet models, 28 for the digits model"
SYNTHESIS_SIZE = ("128 for ImageNet models, the model's own size for the others, 28 for the "
                  "digits model")


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


def add_size(p: argparse.ArgumentParser, what: str = "input size after preprocessing", *,
             default: str = MODEL_SIZE) -> None:
    """--size N or H W (``jaxviz.cli`` checks it and makes it (H, W)); ``what`` it sets
    and its ``default`` (:data:`MODEL_SIZE`, or :data:`SYNTHESIS_SIZE` for a command that
    synthesizes images) start and end its help."""
    p.add_argument("--size", metavar="N", type=int, nargs="+", default=None,
                   help=f"{what}: N (square) or H W (default: {default})")


def add_quiet(p: argparse.ArgumentParser) -> None:
    p.add_argument("-q", "--quiet", action="store_true",
                   help="no progress bars or progress lines (results and errors still print)")


COMPILE_CACHE_ENV = "JAXVIZ_COMPILE_CACHE"


def add_compile_cache(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--compile-cache", metavar="DIR", default=os.environ.get(COMPILE_CACHE_ENV) or None,
        help=f"keep XLA's compiled programs in DIR (created if missing) so that the next run "
             f"with the same model, shapes and settings skips compiling them (default: "
             f"${COMPILE_CACHE_ENV}, else no cache). Only use a folder no one else can write "
             f"to: JAX runs what it finds there")


def use_compile_cache(folder: str | os.PathLike) -> Path:
    """Turn on JAX's persistent compilation cache in ``folder`` for this process.

    Every program is kept, however quickly it compiled (JAX's own default keeps only those
    over one second; a command's many sub-second programs are most of its start-up).
    Process-wide, as JAX's cache is: called from Python, it stays on after the command.

    Raises:
      ValueError: ``folder`` exists and is not a folder.
    """
    path = out_folder(Path(folder).expanduser(), "--compile-cache")
    jax.config.update("jax_compilation_cache_dir", str(path.resolve()))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    return path


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


def default_size(spec: InputSpec) -> tuple[int, int]:
    """The side synthesized images get without --size: 128 px for an ImageNet model, the
    model's own size for the others (28 for the digits model); :data:`SYNTHESIS_SIZE`."""
    side = 128 if spec.scale == "imagenet" or spec.size is None else spec.size
    return (side, side)


# --------------------------------------------------------------------------- checks (no weights)


def abstract_variables(module: nn.Module) -> Any:
    """The shapes and dtypes of ``module``'s variables (nothing computed or read)."""
    from jaxviz.models.modules import example_shape

    x = jax.ShapeDtypeStruct(example_shape(module, 64), jnp.float32)
    return jax.eval_shape(module.init, jax.random.key(0), x)


def spatial_layer(module: nn.Module, layer: str, shape: tuple[int, ...]) -> jv.LayerInfo:
    """The table entry of ``layer`` (path or alias) at input ``shape``; a name the model
    lacks, or a layer without (N, H, W, C) maps, is an error. Nothing is computed."""
    from jaxviz.capture import resolve

    table = jv.layer_names(module, shape, partial=True)
    path = resolve(module, [layer], table)[0]
    info = next(i for i in table if i.path == path)
    if len(info.shape) != 4:
        raise ValueError(f"layer {layer!r} has output shape {info.shape}; expected a layer "
                         f"with spatial maps (N, H, W, C)")
    return info


def check_indices(values: Sequence[int] | None, count: int, option: str, what: str) -> None:
    """An index of ``values`` (``option``) at or past ``count`` is an error; ``what`` says
    what has ``count``: ``"'conv1' has 64 filters"``."""
    if values is not None and max(values) >= count:
        raise ValueError(f"{option} {max(values)} is out of range: {what}")


# --------------------------------------------------------------------------- output


def progress(items: Iterable[Any], *, total: int | None = None, desc: str = "",
             quiet: bool = False):
    """``items`` with a progress bar on stderr (tqdm), only where stderr is a terminal
    (and not with ``quiet``). The result is also a context manager that closes the bar."""
    from tqdm.auto import tqdm

    return tqdm(items, total=total, desc=desc, file=sys.stderr, leave=False,
                dynamic_ncols=True, disable=True if quiet else None)


def bar(total: int, desc: str, quiet: bool):
    """A tqdm bar on stderr to ``update`` by hand; it draws only where stderr is a
    terminal, and not with ``quiet`` (then it is a no-op object)."""
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, file=sys.stderr, leave=False,
                disable=True if quiet else None, dynamic_ncols=True)


@contextlib.contextmanager
def sweep_progress(quiet: bool, desc: str) -> Iterator[Callable[[int, int, float], None] | bool]:
    """A ``progress=`` value for ``jv.synthesis.sweep``: False with ``quiet``, else a
    callable that draws a bar (as :func:`bar`). The bar is made at the first update, so a
    sweep that fails before its first chunk draws none; it is closed on leaving."""
    if quiet:
        yield False
        return
    made = []

    def update(done: int, total: int, seconds: float) -> None:
        if not made:
            made.append(bar(total, desc, False))
        b = made[0]
        b.total = total
        b.n = done
        b.refresh()

    try:
        yield update
    finally:
        for b in made:
            b.close()


def out_folder(path: str | os.PathLike, option: str = "--out", *, create: bool = True) -> Path:
    """``path`` as a folder, created (without ``create``: only checked); an existing file
    there is an error that names ``option``."""
    folder = Path(path)
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"{option} {str(folder)!r} is a file; expected a folder (it is created)")
    if create:
        folder.mkdir(parents=True, exist_ok=True)
    return folder


def output_file(path: str | os.PathLike, suffix: str, option: str = "--out", *,
                create: bool = True) -> Path:
    """``path`` as a file to write with ``suffix``, its folder created (without
    ``create``: only checked, so that a later mistake leaves nothing behind). A folder at
    ``path``, another suffix, or a file where one of its folders should be is an error
    that names ``option``."""
    file = Path(path)
    if file.is_dir():
        raise ValueError(f"{option} {str(file)!r} is a folder; expected a {suffix} file name")
    if file.suffix.lower() != suffix:
        raise ValueError(f"{option} {str(file)!r} must end in {suffix}")
    for parent in file.parents:
        if parent.exists():
            if not parent.is_dir():
                raise ValueError(f"{option} {str(file)!r}: {str(parent)!r} is a file, not a "
                                 f"folder")
            break
    if create:
        file.parent.mkdir(parents=True, exist_ok=True)
    return file


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


def to_uint8(images: Any, grey: bool) -> np.ndarray:
    """Synthesized (N, H, W, 3) images in [0, 1] as 8-bit pictures: (N, H, W, 3), or
    (N, H, W) with ``grey`` (the mean of the colour channels, what a one-channel model
    sees). Values outside [0, 1] are clipped."""
    a = np.asarray(images, np.float32)
    if grey:
        a = a.mean(axis=-1)
    return np.rint(np.clip(a, 0.0, 1.0) * 255.0).astype(np.uint8)


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
    """(images, description) of the image set a command runs over: ``images`` (a folder,
    as a :func:`jaxviz.stream.images` stream preprocessed as the model expects at
    ``hw``), or the bundled digits for the digits model (an (N, 28, 28, 1) array)."""
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
        x = jv.data.digits("all")[0]  # an array: no reader threads needed
        return x, f"the {len(x):,} bundled digits (jaxviz.data.digits('all'))"
    raise ValueError(f"{model_name} needs an image set: pass --images FOLDER")

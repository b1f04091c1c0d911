"""The ``jaxviz`` command.

Subcommands:

``jaxviz layers MODEL [--weights W] [--image PATH] [--size N | --size H W] [--seed S]``
  Every layer of ``MODEL`` (any architecture, or a bundled trained model such as
  ``lenet_digits``) in forward order, with its alias, its kind and a one-line summary
  of its output for one input, then the model's top-5 predictions.

``jaxviz examples MODEL --layer L --out DIR [--images FOLDER] [--k 9] [--channels I,J,...]``
  Zeiler & Fergus's dataset examples: for every channel of ``L``, the receptive-field
  patches of its ``k`` strongest activations over an image folder (the bundled digits
  for the digits model) and their DeconvNet projections, one PNG per channel, with the
  values, image indices and positions in ``DIR/top_k.npz``.

Example::

    $ jaxviz layers alexnet --size 128
    weights: seeded random weights (seed 0): activations show the architecture, not learned features
    image:   bundled photograph 'chelsea' (jaxviz.data.sample_image), shorter side resized to 146, ...
    layer         alias    kind               output
    features.0    [conv1]  Conv2d             (1, 31, 31, 64) n=61504 x∈[-2.353, 2.074] μ=-0.010 σ=0.403
    features.1    [relu1]  ReLU               (1, 31, 31, 64) n=61504 x∈[0., 2.074] μ=0.149 σ=0.239
    ...

Errors (unknown model, missing image, unusable weight file, failed download) print one
``jaxviz: error: ...`` message on stderr and exit with status 2.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

import flax.linen as nn
import numpy as np

import jaxviz as jv
from jaxviz.models.modules import InputSpec, input_spec
from jaxviz.models.registry import BUNDLED, check_name, create

SAMPLE = "chelsea"
TOP = 5
# torchvision's evaluation transform resizes to 256 before a 224 crop; other sizes keep
# that ratio, so the crop shows the whole image's centre at any size, never zero padding.
RESIZE_RATIO = 256 / 224
# What a failed command raises from the library; reported as one message, exit status 2.
USER_ERRORS = (jv.errors.JaxvizError, ValueError, KeyError, OSError, ImportError, RuntimeError)


def _message(error: BaseException) -> str:
    # str(KeyError("x")) is "'x'": use the argument itself.
    if isinstance(error, KeyError) and len(error.args) == 1:
        return str(error.args[0])
    return str(error) or type(error).__name__


def _size(values: Sequence[int]) -> tuple[int, int]:
    """``--size`` as (H, W); raises ValueError for anything but one or two positive ints."""
    if len(values) not in (1, 2):
        raise ValueError(f"--size takes N or H W, got {len(values)} numbers")
    if any(v <= 0 for v in values):
        raise ValueError(f"--size must be positive, got {' '.join(map(str, values))}")
    return (values[0], values[-1])


def _table(rows: Sequence[Sequence[str]]) -> list[str]:
    """Rows of cells as lines with left-aligned columns; the last column is not padded."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    return ["  ".join([*(cell.ljust(w) for cell, w in zip(row, widths)), row[-1]]).rstrip()
            for row in rows]


def _describe_weights(name: str, weights: str | None, seed: int) -> str:
    if name in BUNDLED and weights is None:
        return f"bundled trained weights ({name})"
    if weights is None:
        return (f"seeded random weights (seed {seed}): activations show the architecture, "
                f"not learned features")
    if weights == "DEFAULT":
        return "torchvision's ImageNet weights (DEFAULT)"
    return f"from {weights}"


def _module(name: str) -> nn.Module:
    """The module of model ``name``, without weights (nothing made or read)."""
    return create(BUNDLED[name]()[0] if name in BUNDLED else name)


def _default_digit(side: int) -> tuple[np.ndarray, str] | None:
    """The first held-out digit as (1, side, side, 1) and its description, or None without
    scikit-learn."""
    try:
        x, labels = jv.data.digits("test", size=side)
    except ImportError:
        return None
    return x[:1], f"held-out digit 0 of jaxviz.data.digits('test') (a {int(labels[0])})"


def _input(args: argparse.Namespace, spec: InputSpec, seed: int) -> tuple[np.ndarray, str]:
    """The one-example input of ``jaxviz layers`` and a line that says what it is."""
    if spec.kind == "vector":
        if args.image is not None or args.size is not None:
            raise ValueError(f"{args.model} takes {spec.describe()}, not images: drop "
                             f"--image and --size")
        x = np.random.default_rng(seed).standard_normal((1, spec.channels)).astype(np.float32)
        return x, f"seeded random point {np.array2string(x[0], precision=3)} (seed {seed})"
    hw = args.size or (spec.size, spec.size)
    if spec.scale == "imagenet":
        resize = round(max(hw) * RESIZE_RATIO)
        source = jv.data.sample_image(SAMPLE) if args.image is None else Path(args.image)
        x = jv.data.preprocess(source, hw, resize=resize)
        what = (f"bundled photograph {SAMPLE!r} (jaxviz.data.sample_image)" if args.image is None
                else args.image)
        return x, f"{what}, shorter side resized to {resize}, centre {hw[0]}x{hw[1]} cropped"
    grey = spec.channels == 1
    digits = args.image is None and grey and spec.size == jv.data.DIGITS_SIZE  # LeNet
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
    source = jv.data.sample_image(SAMPLE) if args.image is None else Path(args.image)
    x = jv.data.preprocess(source, hw, resize="exact", scale="unit", grey=grey)
    what = (f"bundled photograph {SAMPLE!r}" if args.image is None else args.image)
    what = f"{what}, resized to {hw[0]}x{hw[1]}, {'grey ' if grey else ''}values in [0, 1]"
    if digits:
        what += " (for a held-out digit instead: pip install 'jaxviz[digits]')"
    return x, what


def layers(args: argparse.Namespace, out: TextIO) -> int:
    """``jaxviz layers``: every layer's output summary for one input, then the top-5."""
    # Everything cheap first: a typo should not wait for the weights.
    check_name(args.model, (*jv.models.ARCHITECTURES, *BUNDLED))
    if args.seed is not None and (args.weights is not None or args.model in BUNDLED):
        raise ValueError("--seed chooses random weights; it cannot be used with --weights "
                         "or a bundled trained model")
    seed = 0 if args.seed is None else args.seed
    module = _module(args.model)
    spec = input_spec(module)
    x, described = _input(args, spec, seed)
    jv.layer_names(module, x.shape)  # an input too small for the model fails here, at once
    model, variables = jv.load(args.model, weights=args.weights, seed=seed)

    table = jv.layer_names(model, x.shape)
    acts = jv.activations(model, variables, x, [info.path for info in table])
    print(f"weights: {_describe_weights(args.model, args.weights, seed)}", file=out)
    print(f"input:   {described}", file=out)
    rows = [("layer", "alias", "kind", "output")]
    rows += [(info.path, f"[{info.alias}]" if info.alias else "", info.kind,
              jv.render.summary(acts[info.path])) for info in table]
    for line in _table(rows):
        print(line, file=out)

    # The last layer to finish is the classifier: its output is the logits.
    logits = np.asarray(acts[table[-1].path])
    classes = logits.shape[-1]
    names = None if classes == len(jv.data.imagenet_classes()) else [f"class {i}" for i in range(classes)]
    top = jv.data.decode_predictions(logits, top=min(TOP, classes), names=names)[0]
    random_weights = args.weights is None and args.model not in BUNDLED
    caveat = " (meaningless: random weights)" if random_weights else ""
    print(f"top-{len(top)} predictions{caveat}:", file=out)
    print("\n".join(_table([(f"{p:7.2%}", str(i), name) for i, name, p in top])), file=out)
    return 0


def mlp2d_lines(args: argparse.Namespace, out: TextIO) -> int:
    from jaxviz.analysis import training

    record = sorted(set(args.frames))
    paths = training.write_frames(args.out, hidden=args.hidden, steps=max(record),
                                  record=record, seed=args.seed or 0)
    for path in paths.values():
        print(f"wrote {path}", file=out)
    return 0


def examples(args: argparse.Namespace, out: TextIO) -> int:
    """``jaxviz examples``: dataset top-k patches and projections, a PNG per channel."""
    import tempfile

    from jaxviz.analysis import examples as examples_lib
    from jaxviz.analysis import receptive

    check_name(args.model, (*jv.models.ARCHITECTURES, *BUNDLED))
    if args.seed is not None and (args.weights is not None or args.model in BUNDLED):
        raise ValueError("--seed chooses random weights; it cannot be used with --weights "
                         "or a bundled trained model")
    if args.k < 1 or args.batch_size < 1:
        raise ValueError(f"--k and --batch-size must be at least 1, got {args.k} and "
                         f"{args.batch_size}")
    module = _module(args.model)
    spec = input_spec(module)
    if spec.kind == "vector":
        raise ValueError(f"{args.model} takes {spec.describe()}: it has no image patches")
    hw = args.size or (spec.size, spec.size)
    grey = spec.channels == 1
    if args.images is not None:
        resize = round(max(hw) * RESIZE_RATIO) if spec.scale == "imagenet" else "exact"
        images = jv.stream.images(args.images, batch_size=args.batch_size, size=hw,
                                  resize=resize, scale=spec.scale, grey=grey)
        what = f"{images.total} images of {args.images}"
    elif grey and spec.size == jv.data.DIGITS_SIZE and tuple(hw) == (spec.size, spec.size):
        images = jv.stream.images(jv.data.digits("all")[0], batch_size=args.batch_size)
        what = f"the {images.total:,} bundled digits (jaxviz.data.digits('all'))"
    else:
        raise ValueError(f"{args.model} needs an image set: pass --images FOLDER")
    model, variables = jv.load(args.model, weights=args.weights, seed=args.seed or 0)
    found = jv.analysis.top_k(model, variables, images, args.layer, k=args.k)
    c = found.values.shape[0]
    channels = list(range(c)) if args.channels is None else args.channels
    if max(channels) >= c:
        raise ValueError(f"--channels {max(channels)} is out of range: {args.layer!r} has "
                         f"{c} channels")
    picked = examples_lib.TopK(found.values[channels], found.ids[channels],
                               found.positions[channels], found.layer, found.count)
    crops = examples_lib.patches(images, model, picked)
    projected = examples_lib.projections(model, variables, images, picked,
                                         batch_size=args.batch_size)
    field = receptive.receptive_field(model, args.layer, images.image(0).shape)
    n, k = picked.ids.shape
    cropped = receptive.crop_patches(projected.reshape(-1, *projected.shape[2:]),
                                     np.arange(n * k), picked.positions.reshape(-1, 2),
                                     field).reshape(crops.shape)
    folder = Path(args.out)
    folder.mkdir(parents=True, exist_ok=True)
    zoom = max(1, 96 // max(field.size))
    print(f"weights: {_describe_weights(args.model, args.weights, args.seed or 0)}", file=out)
    print(f"images:  {what}", file=out)
    print(f"layer:   {args.layer}, {c} channels, receptive field {field.size[0]}x"
          f"{field.size[1]} px, stride {field.stride[0]}", file=out)
    safe = args.layer.replace("/", "_").replace(".", "_")
    for i, ch in enumerate(channels):
        picture = examples_lib.draw_examples(crops, cropped, channel=i, zoom=zoom,
                                             scale=spec.scale)
        jv.render.save_png(picture, folder / f"{safe}_channel{ch:04d}.png")
    with tempfile.NamedTemporaryFile(dir=folder, suffix=".npz", delete=False) as f:
        np.savez(f, values=picked.values, ids=picked.ids, positions=picked.positions,
                 channels=np.asarray(channels))
    os.replace(f.name, folder / "top_k.npz")
    print(f"wrote {len(channels)} picture{'' if len(channels) == 1 else 's'} and top_k.npz "
          f"to {folder}", file=out)
    return 0


def _int_list(what: str):
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="jaxviz", description="Look inside convolutional networks with JAX.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = commands.add_parser(
        "layers", help="every layer's output for one image, in forward order",
        description="Print every layer of MODEL in forward order (path, alias, kind, a summary "
                    "of its output for one image), then the top-5 predictions.")
    p.add_argument("model", metavar="MODEL",
                   help=f"architecture ({', '.join(jv.models.ARCHITECTURES)}) or bundled trained "
                        f"model ({', '.join(BUNDLED)})")
    p.add_argument("--weights", metavar="W", default=None,
                   help="DEFAULT (torchvision's ImageNet weights, downloaded), or a .safetensors/"
                        ".pth file; default: seeded random weights (the bundled ones for a "
                        "bundled model)")
    p.add_argument("--image", metavar="PATH", default=None,
                   help=f"image file; default: the bundled photograph {SAMPLE!r} (a held-out "
                        f"digit for the digits model)")
    p.add_argument("--size", metavar="N", type=int, nargs="+", default=None,
                   help="input size after preprocessing: N (square) or H W (default: the "
                        "model's own, 224 for ImageNet models, 28 for the digits model)")
    p.add_argument("--seed", type=int, default=None, help="seed of the random weights (default 0)")
    p.set_defaults(run=layers, parser=p)

    p = commands.add_parser(
        "mlp2d-lines", help="a 2-D MLP's hidden units as lines during training (PNG + GIF)",
        description="Train a one-hidden-layer MLP on two moons and draw each hidden unit's "
                    "line w.x + b = 0 over the data at chosen iterations: OUT/frames.png "
                    "(a grid) and OUT/training.gif.")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder (created)")
    p.add_argument("--hidden", type=int, default=8, help="hidden units (default 8)")
    p.add_argument("--frames", type=_int_list("iterations"), default=[0, 25, 50, 100, 200, 400, 800, 2000],
                   metavar="I,J,...", help="iterations to draw; the last is the training length")
    p.add_argument("--seed", type=int, default=None, help="seed of data and weights (default 0)")
    p.set_defaults(run=mlp2d_lines, parser=p)

    p = commands.add_parser(
        "examples", help="every channel's strongest image patches and their projections",
        description="For every channel of LAYER (or --channels), the receptive-field patches "
                    "of its K strongest activations over an image set, above their DeconvNet "
                    "projections: OUT/LAYER_channelNNNN.png, and OUT/top_k.npz (values, image "
                    "indices, positions).")
    p.add_argument("model", metavar="MODEL",
                   help=f"architecture ({', '.join(jv.models.ARCHITECTURES)}) or bundled trained "
                        f"model ({', '.join(BUNDLED)})")
    p.add_argument("--layer", required=True, help="a layer with spatial maps (path or alias)")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder (created)")
    p.add_argument("--images", metavar="FOLDER", default=None,
                   help="image folder (ImageFolder layout or flat); default: the bundled digits "
                        "for the digits model")
    p.add_argument("--k", type=int, default=9, help="examples per channel (default 9)")
    p.add_argument("--channels", type=_int_list("channels"), default=None, metavar="I,J,...",
                   help="channels to draw (default: all)")
    p.add_argument("--weights", metavar="W", default=None,
                   help="DEFAULT, or a .safetensors/.pth file; default: seeded random weights "
                        "(the bundled ones for a bundled model)")
    p.add_argument("--size", metavar="N", type=int, nargs="+", default=None,
                   help="input size: N or H W (default: the model's own)")
    p.add_argument("--batch-size", type=int, default=64, help="images per batch (default 64)")
    p.add_argument("--seed", type=int, default=None, help="seed of the random weights (default 0)")
    p.set_defaults(run=examples, parser=p)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the ``jaxviz`` command with ``argv`` (default ``sys.argv[1:]``); returns its exit status."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        if getattr(args, "size", None) is not None:
            try:
                args.size = _size(args.size)
            except ValueError as e:
                args.parser.error(str(e))
    except SystemExit as e:  # --help, or a usage error argparse already printed
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 2)
    if getattr(sys.stdout, "encoding", None) and hasattr(sys.stdout, "reconfigure"):
        try:  # summaries use "∈μσ"; a console that cannot show them gets "?" instead
            "∈μσ".encode(sys.stdout.encoding)
        except (UnicodeEncodeError, LookupError):
            sys.stdout.reconfigure(errors="replace")
    if argv is None:  # run as a command (float32 throughout): XLA:CPU's faster convolutions.
        # Called with argv from Python, the process and its XLA flags are the caller's.
        with contextlib.suppress(RuntimeError):
            jv.cpu.use_fast_convolutions()
    try:
        return args.run(args, sys.stdout)
    except BrokenPipeError:  # `jaxviz layers ... | head`: stop quietly, as the reader did
        with contextlib.suppress(OSError, ValueError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except USER_ERRORS as e:
        print(f"jaxviz: error: {_message(e)}", file=sys.stderr)
        if getattr(args, "weights", None) == "DEFAULT" and isinstance(e, RuntimeError):
            print("jaxviz: hint: pass a local file instead: --weights PATH (.safetensors or .pth)",
                  file=sys.stderr)
        return 2

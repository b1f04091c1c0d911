"""Synthesize one image that excites one channel of LAYER (or, with --class, one class
logit) and write it to --out as a PNG: RGB (grey for a one-channel model, as the model
sees it), values in [0, 1].

The method is the octave recipe of ``jaxviz.synthesis.recipes.octave_channel``
(Mordvintsev, Olah & Tyka, "Inceptionism", 2015; the per-channel GoogLeNet
visualizations made with it): the image's pixels start as uniform noise in [0.4, 0.6)
(or as --init-image) and each step moves them by ``lr * g / max|g|``, ``g`` the gradient
of ``-objective + 0.05 * colour magnitude + 0.001 / sharpness * Scharr edge energy``, with
no random transforms. The objective is the channel's mean over space (a class logit with
--class). After --steps steps the image is enlarged (bilinear) and optimization goes on,
--octaves times in all: each octave is --octave-scale times the previous one, or, with
--outscale, the last octave is --outscale times the first (the recipe's own
parameterization). With --outscale X the image is the one ``octave_channel`` makes with
``outscale=X``; with --octave-scale S, the one it makes with ``outscale = S ** (octaves
- 1)`` (up to the rounding of that power and its root).

Prints the objective before the first and before the last step, and its value on the
written image (before 8-bit rounding).

Example::

    $ jaxviz visualize googlenet --weights DEFAULT --layer inception4c --channel 7 \\
          --octaves 3 --outscale 2 --steps 100 --out channel7.png
"""

from __future__ import annotations

import argparse
from typing import Any, TextIO

import jax
import jax.numpy as jnp
import numpy as np
import optax

import jaxviz as jv
from jaxviz.commands import _common as c
from jaxviz.models.modules import InputSpec

HELP = "one channel's (or class's) feature visualization, with octaves"

# octave_channel's penalty weights (jaxviz.synthesis.recipes)
COLOR_WEIGHT = 0.05
EDGE_WEIGHT = 1e-3
LR = 0.02


# --------------------------------------------------------------------------- the method


def model_input(images: Any, spec: InputSpec) -> jax.Array:
    """Synthesized [0, 1] RGB images as the model's input (what ``preprocess="auto"``
    gives it): ImageNet-normalized, or grey for a one-channel model."""
    images = jnp.asarray(images)
    if spec.scale == "imagenet":
        return jv.data.normalize(images)
    return images.mean(axis=-1, keepdims=True) if spec.channels == 1 else images


def synthesize(model, variables, objective: Any, *, key: jax.Array,
               size: int | tuple[int, int] = 128, steps: int = 512, lr: float = LR,
               octaves: int = 1, octave_scale: float = 1.4, sharpness: float = 1.0,
               init: Any = None) -> jv.synthesis.Synthesis:
    """``jaxviz.synthesis.recipes.octave_channel``'s method for any objective, with the
    scale between octaves given directly: ``jv.synthesis.visualize`` with pixels
    starting uniform in [0.4, 0.6), no transforms, colour and Scharr penalties (the
    latter divided by ``sharpness``) and a normalized gradient step of ``lr``. Returns
    one image per objective index (batch 1 for an int index), clipped to [0, 1]."""
    S = jv.synthesis
    result = S.visualize(
        model, variables, objective, key=key, batch=1, size=size, steps=steps,
        param=S.param.Pixels(0.4, 0.6), transforms=None,
        regularizers=[(COLOR_WEIGHT, S.regularizers.color_magnitude),
                      (EDGE_WEIGHT / sharpness, S.regularizers.scharr)],
        optimizer=optax.chain(S.normalize_by_max_abs(), optax.sgd(lr)),
        init=init, octaves=octaves, octave_scale=octave_scale)
    return S.Synthesis(jnp.clip(result.images, 0.0, 1.0), result.objective)


# --------------------------------------------------------------------------- command


def add_arguments(p: argparse.ArgumentParser) -> None:
    c.add_model(p)
    what = p.add_argument_group("what to maximize (--layer and --channel, or --class)")
    what.add_argument("--layer", default=None, help="a layer with spatial maps (path or alias)")
    what.add_argument("--channel", type=c.positive(int, zero=True), default=None, metavar="C",
                      help="channel of --layer whose mean over space is maximized")
    what.add_argument("--class", dest="klass", type=c.positive(int, zero=True), default=None,
                      metavar="N", help="maximize the logit of class N instead")
    p.add_argument("--out", required=True, metavar="FILE.png", help="output PNG")
    c.add_size(p, "the first octave's image size (with --init-image: N is the picture's shorter "
                  "side)", default=c.SYNTHESIS_SIZE)
    p.add_argument("--steps", type=c.positive(), default=512, help="steps per octave (default 512)")
    p.add_argument("--lr", type=c.positive(float), default=LR,
                   help=f"step size in [0, 1] pixel units (default {LR})")
    p.add_argument("--octaves", type=c.positive(), default=1,
                   help="number of scales; the image is enlarged between them (default 1)")
    scale = p.add_mutually_exclusive_group()
    scale.add_argument("--octave-scale", type=c.positive(float), default=None, metavar="S",
                       help="size ratio between consecutive octaves (default 1.4)")
    scale.add_argument("--outscale", type=c.positive(float), default=None, metavar="X",
                       help="size of the last octave relative to the first (needs --octaves "
                            "2 or more)")
    p.add_argument("--sharpness", type=c.positive(float), default=1.0,
                   help="divides the Scharr edge penalty: larger is sharper (default 1)")
    p.add_argument("--init-image", metavar="PATH", default=None,
                   help="start from this picture instead of noise")
    p.add_argument("--key", type=int, default=0, metavar="N",
                   help="seed of the starting noise (default 0)")


def octave_scale(args: argparse.Namespace) -> float:
    if args.outscale is None:
        return 1.4 if args.octave_scale is None else args.octave_scale
    if args.octaves < 2:
        raise ValueError("--outscale sets the last octave's size: it needs --octaves 2 or more")
    return args.outscale ** (1.0 / (args.octaves - 1))


def _init_image(path: str, size: tuple[int, int] | None, default: tuple[int, int]) -> np.ndarray:
    """The starting picture in [0, 1]: shorter side ``size[0]`` for a square --size (or
    the default), exactly ``size`` for --size H W."""
    image = jv.data.load_image(path)
    target: Any = size if size is not None and size[0] != size[1] else (size or default)[0]
    return np.asarray(jv.data.resize(image, target), np.float32)


def run(args: argparse.Namespace, out: TextIO) -> int:
    c.check_model(args)
    if args.klass is not None and (args.layer is not None or args.channel is not None):
        raise ValueError("--class maximizes a class logit: drop --layer and --channel")
    if args.klass is None and (args.layer is None or args.channel is None):
        raise ValueError("say what to maximize: --layer L --channel C, or --class N")
    scale = octave_scale(args)
    module = c.module(args.model)
    spec = c.spec_of(args.model)
    if spec.kind != "image":
        raise ValueError(f"{args.model} takes {spec.describe()}: there is no image to synthesize")
    init = None
    hw = args.size or c.default_size(spec)
    if args.init_image is not None:
        init = _init_image(args.init_image, args.size, c.default_size(spec))
        hw = init.shape[:2]
    shape = (1, *hw, spec.channels)
    if args.klass is not None:
        classes = jv.layer_names(module, shape)[-1].shape[-1]
        c.check_indices([args.klass], classes, "--class", f"{args.model} has {classes} classes")
        objective = jv.objectives.class_logit(args.klass)
        what = f"logit of class {args.klass}{_class_name(args.klass, classes)}"
    else:
        info = c.spatial_layer(module, args.layer, shape)
        c.check_indices([args.channel], info.shape[-1], "--channel",
                        f"{args.layer!r} has {info.shape[-1]} channels")
        objective = jv.objectives.channel(info.path, args.channel)
        name = args.layer if args.layer == info.path else f"{args.layer} ({info.path})"
        what = f"mean of channel {args.channel} of {name}"
    path = c.output_file(args.out, ".png")
    model, variables = c.load(args)
    result = synthesize(model, variables, objective, key=jax.random.key(args.key), size=hw,
                        steps=args.steps, lr=args.lr, octaves=args.octaves,
                        octave_scale=scale, sharpness=args.sharpness, init=init)
    picture = c.to_uint8(result.images, spec.channels == 1)[0]
    jv.render.save_png(picture, path)
    values = np.asarray(result.objective)[:, 0]
    final = float(np.asarray(objective(model, variables, model_input(result.images, spec)))[0])
    print(f"weights:   {c.describe_weights(args.model, args.weights, args.seed)}", file=out)
    start = "noise in [0.4, 0.6)" if init is None else args.init_image
    sizes = [tuple(max(1, int(round(s * scale ** k))) for s in hw) for k in range(args.octaves)]
    print(f"start:     {start}; octaves: {', '.join(f'{h}x{w}' for h, w in sizes)}, "
          f"{args.steps} steps each", file=out)
    print(f"objective: {what}: {values[0]:.6g} before the first step, {values[-1]:.6g} "
          f"before the last, {final:.6g} on the written image", file=out)
    if not np.any(values):
        print("note:      the objective is 0 at every step: the channel never fires on this "
              "image, so its gradient is 0 and nothing moves (a ReLU's dead channel); try the "
              "layer before the ReLU, --init-image, or another --key", file=out)
    print(f"wrote {path} ({picture.shape[1]}x{picture.shape[0]})", file=out)
    return 0


def _class_name(index: int, classes: int) -> str:
    if classes == len(jv.data.imagenet_classes()):
        return f" ({jv.data.imagenet_classes()[index]})"
    return ""


__all__ = ["model_input", "synthesize"]

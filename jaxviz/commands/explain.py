"""Attribution maps of every method side by side, written to --out as one PNG sheet:
one row per image, the input first (captioned with its target class), then one tile
per method, each captioned with its name and settings.

Methods (--method, a comma list; default all, in this order): gradient (Simonyan et al.
2013), gradient_x_input (Shrikumar et al. 2016), smoothgrad (Smilkov et al. 2017;
--samples noisy copies, noise 0.15 of the image's range), integrated_gradients
(Sundararajan et al. 2017; --steps path points from a 0 baseline), deconvnet and
occlusion (Zeiler & Fergus 2014; occlusion's window is 1/7 of the shorter side, its
stride half the window, unless --window/--stride say otherwise), guided_backprop
(Springenberg et al. 2014), grad_cam and guided_grad_cam (Selvaraju et al. 2017; at
--layer, by default the last convolution's ReLU, or the last Inception block's output
for GoogLeNet). Named in --method (not in "all"), the rest of the CAM family at the same
layer: grad_cam_plus_plus, xgrad_cam, hires_cam, layer_cam, score_cam, ablation_cam and
eigen_cam (jaxviz.attribution.cam cites their papers); and lrp (Bach et al. 2015; the
epsilon_plus_flat composite). --eigen-smooth and --aug-smooth are pytorch-grad-cam's
options for the CAM tiles: each map as the first principal component of the weighted
channels (not Eigen-CAM, which is one already), and each map averaged over left-right
flipped copies of the input scaled by 0.9, 1 and 1.1.

Pixel maps (the gradient methods, DeconvNet, guided backprop, guided Grad-CAM) are
shown as the sum of |value| over colour channels, scaled so that the 99.5th percentile
is 1 (inferno colours); Grad-CAM is overlaid on the input; occlusion's signed output
drop is shown with a diverging map (red: the target's logit falls when that region is
hidden). The target is each image's top class unless --target names one. Tiles smaller
than 128 px are enlarged (pixel repeat) so that captions fit.

Example::

    $ jaxviz explain alexnet --weights DEFAULT --out explain.png
    $ jaxviz explain lenet_digits --method gradient,grad_cam,occlusion --out digit.png
"""

from __future__ import annotations

import argparse
import contextlib
import difflib
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TextIO

import jax
import numpy as np

import jaxviz as jv
from jaxviz.commands import _common as c
from jaxviz.models.modules import input_spec

HELP = "every attribution method side by side for one or more images (PNG sheet)"

METHODS: tuple[str, ...] = (
    "gradient", "gradient_x_input", "smoothgrad", "integrated_gradients", "deconvnet",
    "guided_backprop", "grad_cam", "guided_grad_cam", "occlusion")
MORE_CAMS: tuple[str, ...] = (
    "grad_cam_plus_plus", "xgrad_cam", "hires_cam", "layer_cam", "score_cam", "ablation_cam",
    "eigen_cam")
MORE_METHODS: tuple[str, ...] = (*MORE_CAMS, "lrp")  # on request: not in "all"
AVAILABLE: tuple[str, ...] = METHODS + MORE_METHODS
CAM_METHODS = ("grad_cam", "guided_grad_cam", *MORE_CAMS)
SMOOTHABLE = ("grad_cam", *MORE_CAMS)  # the CAM tiles that --eigen-smooth/--aug-smooth change
CAM_CAPTIONS = {"grad_cam_plus_plus": "Grad-CAM++", "xgrad_cam": "XGrad-CAM",
                "hires_cam": "HiResCAM", "layer_cam": "LayerCAM", "score_cam": "Score-CAM",
                "ablation_cam": "Ablation-CAM", "eigen_cam": "Eigen-CAM"}
SMOOTHGRAD_NOISE = 0.15
TILE_WIDTH = 128  # tiles narrower than this are enlarged by pixel repeat


# --------------------------------------------------------------------------- library level


def cam_layer(model, variables: Any, shape: Sequence[int]) -> str:
    """Grad-CAM's default layer: :func:`jaxviz.analysis.metrics.cam_layer`, the rectified
    output of the last convolution (AlexNet ``features.11``, VGG16 ``features.29``, the
    digits model ``features.7``, GoogLeNet ``inception5b``)."""
    from jaxviz.analysis import metrics

    return metrics.cam_layer(model, variables, tuple(shape))


def occlusion_settings(hw: Sequence[int], window: int | None = None,
                       stride: int | None = None) -> tuple[int, int]:
    """(window, stride) of occlusion for images of ``hw``: the window 1/7 of the shorter
    side (32 px at 224, 4 at 28), the stride half of it, as
    :func:`jaxviz.analysis.metrics.default_settings`; given values are kept."""
    if window is None:
        window = max(1, round(min(hw) / 7))
    if stride is None:
        stride = max(1, window // 2)
    return window, stride


def input_picture(model, x: Any) -> np.ndarray:
    """The model's input ``x`` (N, H, W, C) as 8-bit RGB pictures: ImageNet-normalized
    input de-normalized, [0, 1] input (the digits model's grey) scaled to 0..255."""
    a = np.asarray(x)
    spec = input_spec(model)
    if a.shape[-1] == 3 and (spec is None or spec.scale == "imagenet"):
        return jv.render.to_uint8_image(a)
    a = np.rint(np.clip(a.astype(np.float64), 0.0, 1.0) * 255.0).astype(np.uint8)
    return np.repeat(a, 3, axis=-1) if a.shape[-1] == 1 else a


def pixel_tile(maps: Any) -> np.ndarray:
    """A pixel attribution (N, H, W, C) as inferno pictures: ``sum_c |m_c|``, scaled per
    image so that its 99.5th percentile is 1."""
    return jv.render.heatmap(jv.render.clip_percentile(jv.render.reduce_channels(maps, "abs_sum")))


def cam_tile(picture: np.ndarray, cam: Any) -> np.ndarray:
    """A Grad-CAM map (N, H, W) in inferno colours over the input pictures (opacity 0.6)."""
    return jv.render.overlay(picture, jv.render.heatmap(jv.render.clip_percentile(cam)), 0.6)


def occlusion_tile(drops: Any) -> np.ndarray:
    """An occlusion map (N, H, W) in diverging colours, 0 white, scaled per image by the
    99.5th percentile of its magnitude."""
    return jv.render.heatmap(jv.render.clip_percentile(drops, symmetric=True), "diverging")


def top_classes(model, variables: Any, x: Any) -> np.ndarray:
    """Each image's highest-scoring class, (N,) ints."""
    return np.asarray(np.argmax(np.asarray(jax.jit(model.apply)(variables, x)), axis=-1))


def class_label(index: int, classes: int) -> str:
    """``target 281 tabby`` for ImageNet's 1000 classes, ``target 3`` otherwise."""
    names = jv.data.imagenet_classes()
    return f"target {index} {names[index]}" if classes == len(names) else f"target {index}"


def tiles(model, variables: Any, x: Any, target: Any, methods: Iterable[str] = METHODS, *,
          layer: str | None = None, samples: int = 50, steps: int = 32,
          window: int | None = None, stride: int | None = None,
          key: jax.Array | None = None, eigen_smooth: bool = False, aug_smooth: bool = False,
          progress: Callable[[Iterable[str]], Iterable[str]] | None = None,
          ) -> list[tuple[str, np.ndarray]]:
    """(caption, (N, H, W, 3) uint8 pictures) for each of ``methods`` on the batch ``x``.

    Args:
      model, variables, x, target: as :mod:`jaxviz.attribution` (an int, or (N,) ints).
      methods: names from :data:`AVAILABLE` (:data:`METHODS`, then :data:`MORE_METHODS`).
      layer: Grad-CAM's layer (default :func:`cam_layer`).
      samples, steps: SmoothGrad's noisy copies, integrated gradients' path points.
      window, stride: occlusion's (default :func:`occlusion_settings`).
      key: SmoothGrad's noise (default ``jax.random.key(0)``).
      eigen_smooth, aug_smooth: the CAM tiles' smoothing (Grad-CAM and the CAM family,
        not guided Grad-CAM; Eigen-CAM takes only aug_smooth):
        :func:`jaxviz.attribution.grad_cam`'s ``eigen_smooth`` and
        :func:`jaxviz.attribution.aug_smooth` with its defaults.
      progress: wraps the sequence of method names (e.g. a progress bar).
    """
    A = jv.attribution
    methods = list(methods)
    unknown = [m for m in methods if m not in AVAILABLE]
    if unknown:
        raise ValueError(f"unknown attribution method {unknown[0]!r}; expected one of "
                         f"{', '.join(AVAILABLE)}")
    key = jax.random.key(0) if key is None else key
    window, stride = occlusion_settings(np.shape(x)[1:3], window, stride)
    picture = input_picture(model, x)
    if layer is None and set(CAM_METHODS) & set(methods):
        path = cam_layer(model, variables, np.shape(x))
        table = jv.layer_names(model, np.shape(x), partial=True)
        aliases = {info.path: info.alias for info in table}
        layer = aliases.get(path) or path

    def cam(name: str) -> tuple[str, Any]:
        """The CAM ``name``'s map and its caption's settings."""
        kwargs, settings = {"layer": layer}, [layer]
        if eigen_smooth and name != "eigen_cam":
            kwargs["eigen_smooth"] = True
            settings.append("eigen")
        if aug_smooth:
            settings.append("aug")
            return ", ".join(settings), A.aug_smooth(getattr(A, name), model, variables, x,
                                                     target, **kwargs)
        return ", ".join(settings), getattr(A, name)(model, variables, x, target, **kwargs)

    out = []
    for name in (progress(methods) if progress is not None else methods):
        if name == "gradient":
            out.append(("gradient", pixel_tile(A.gradient(model, variables, x, target))))
        elif name == "gradient_x_input":
            out.append(("gradient x input",
                        pixel_tile(A.gradient_x_input(model, variables, x, target))))
        elif name == "smoothgrad":
            m = A.smoothgrad(model, variables, x, target, key=key, samples=samples,
                             noise=SMOOTHGRAD_NOISE, batch_size=min(samples, 10))
            out.append((f"SmoothGrad ({samples}, {SMOOTHGRAD_NOISE})", pixel_tile(m)))
        elif name == "integrated_gradients":
            m = A.integrated_gradients(model, variables, x, target, steps=steps,
                                       batch_size=min(steps, 16))
            out.append((f"integrated gradients ({steps})", pixel_tile(m)))
        elif name == "deconvnet":
            out.append(("DeconvNet", pixel_tile(A.deconvnet(model, variables, x, target))))
        elif name == "guided_backprop":
            out.append(("guided backprop",
                        pixel_tile(A.guided_backprop(model, variables, x, target))))
        elif name == "grad_cam":
            settings, m = cam(name)
            out.append((f"Grad-CAM ({settings})", cam_tile(picture, m)))
        elif name == "guided_grad_cam":
            m = A.guided_grad_cam(model, variables, x, target, layer=layer)
            out.append((f"guided Grad-CAM ({layer})", pixel_tile(m)))
        elif name == "lrp":
            out.append(("LRP (epsilon_plus_flat)",
                        pixel_tile(A.lrp(model, variables, x, target,
                                         composite="epsilon_plus_flat"))))
        elif name in MORE_CAMS:
            settings, m = cam(name)
            out.append((f"{CAM_CAPTIONS[name]} ({settings})", cam_tile(picture, m)))
        else:  # occlusion
            m = A.occlusion(model, variables, x, target, window=window, stride=stride)
            out.append((f"occlusion ({window}, stride {stride})", occlusion_tile(m)))
    return out


def zoom_for(width: int) -> int:
    """The pixel repeat that makes a tile of ``width`` at least :data:`TILE_WIDTH` wide."""
    return max(1, -(-TILE_WIDTH // width))


def sheet(model, variables: Any, x: Any, target: Any = None,
          methods: Iterable[str] = METHODS, *, layer: str | None = None, samples: int = 50,
          steps: int = 32, window: int | None = None, stride: int | None = None,
          key: jax.Array | None = None, zoom: int | None = None, eigen_smooth: bool = False,
          aug_smooth: bool = False,
          progress: Callable[[Iterable[str]], Iterable[str]] | None = None) -> np.ndarray:
    """Attribution maps side by side: a (height, width, 3) uint8 picture.

    One row per image of ``x`` (N, H, W, C): the input (captioned with its target
    class), then one tile per method (:func:`tiles`, captioned with the method and its
    settings), laid out by :func:`jaxviz.render.grid`. Tiles are enlarged ``zoom``
    times by pixel repeat (default :func:`zoom_for`: at least 128 px wide).

    Args:
      target: None (each image's top class), an int, or (N,) ints.
      Others: as :func:`tiles`.
    """
    x = np.asarray(x)
    n = x.shape[0]
    logits_shape = jv.layer_names(model, x.shape)[-1].shape
    targets = (top_classes(model, variables, x) if target is None
               else np.broadcast_to(np.asarray(target, np.int64), (n,)))
    columns = [(None, input_picture(model, x)), *tiles(
        model, variables, x, np.asarray(targets, np.int32), methods, layer=layer,
        samples=samples, steps=steps, window=window, stride=stride, key=key,
        eigen_smooth=eigen_smooth, aug_smooth=aug_smooth, progress=progress)]
    zoom = zoom_for(x.shape[2]) if zoom is None else zoom
    pictures, labels = [], []
    for i in range(n):
        for caption, picture in columns:
            pictures.append(picture[i])
            labels.append(class_label(int(targets[i]), logits_shape[-1]) if caption is None
                          else caption)
    stack = np.stack(pictures)
    if zoom > 1:
        stack = np.repeat(np.repeat(stack, zoom, axis=1), zoom, axis=2)
    return jv.render.grid(stack, ncols=len(columns), labels=labels)


# --------------------------------------------------------------------------- command


def _target(text: str) -> int | None:
    if text == "top":
        return None
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a class index or 'top', got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a non-negative class index, got {text!r}")
    return value


def parse_methods(text: str) -> list[str]:
    """``all`` (:data:`METHODS`) or a comma list of :data:`AVAILABLE` (in the order
    given, without repeats)."""
    names = [m.strip() for m in text.split(",") if m.strip()]
    if names == ["all"]:
        return list(METHODS)
    if not names:
        raise ValueError(f"--method: expected 'all' or a comma list of {', '.join(AVAILABLE)}")
    for name in names:
        if name not in AVAILABLE:
            close = difflib.get_close_matches(name, [*AVAILABLE, "all"], n=3, cutoff=0.5)
            hint = f" Did you mean {' or '.join(close)}?" if close else ""
            raise ValueError(f"unknown --method {name!r}.{hint} Expected 'all' or a comma list "
                             f"of {', '.join(AVAILABLE)}")
    return list(dict.fromkeys(names))


def add_arguments(p: argparse.ArgumentParser) -> None:
    c.add_model(p)
    p.add_argument("--out", required=True, metavar="FILE.png", help="output PNG")
    p.add_argument("--image", metavar="PATH", nargs="+", action="extend", default=None,
                   help=f"image files, one row each; default: the bundled photograph "
                        f"{c.SAMPLE!r} (a held-out digit for the digits model)")
    p.add_argument("--method", default="all", metavar="M,M,...",
                   help=f"'all' (default: {', '.join(METHODS)}) or a comma list of those and "
                        f"{', '.join(MORE_METHODS)}")
    p.add_argument("--target", type=_target, default=None, metavar="CLASS|top",
                   help="class whose logit is explained (default: top, each image's top class)")
    p.add_argument("--layer", default=None,
                   help="the CAM methods' layer (default: the last convolution's ReLU; "
                        "GoogLeNet: inception5b)")
    c.add_size(p)
    p.add_argument("--samples", type=c.positive(), default=50,
                   help="SmoothGrad's noisy copies (default 50)")
    p.add_argument("--steps", type=c.positive(), default=32,
                   help="integrated gradients' path points (default 32)")
    p.add_argument("--window", type=c.positive(), default=None,
                   help="occlusion window in pixels (default: 1/7 of the shorter side)")
    p.add_argument("--stride", type=c.positive(), default=None,
                   help="occlusion stride in pixels (default: half the window)")
    p.add_argument("--eigen-smooth", action="store_true",
                   help="CAM tiles: the weighted channels' first principal component instead "
                        "of their sum (pytorch-grad-cam's eigen_smooth)")
    p.add_argument("--aug-smooth", action="store_true",
                   help="CAM tiles: the mean over flipped and scaled copies of the input "
                        "(pytorch-grad-cam's aug_smooth)")


def run(args: argparse.Namespace, out: TextIO) -> int:
    c.check_model(args)
    methods = parse_methods(args.method)
    cam = bool(set(CAM_METHODS) & set(methods))
    if args.layer is not None and not cam:
        raise ValueError("--layer is the CAM methods' layer: add grad_cam (or another CAM) to "
                         "--method")
    if (args.eigen_smooth or args.aug_smooth) and not set(SMOOTHABLE) & set(methods):
        raise ValueError("--eigen-smooth and --aug-smooth are the CAM tiles': add grad_cam (or "
                         "another CAM but guided_grad_cam) to --method")
    if (args.window is not None or args.stride is not None) and "occlusion" not in methods:
        raise ValueError("--window and --stride are occlusion's: add occlusion to --method")
    module = c.module(args.model)
    spec = c.spec_of(args.model)
    inputs = [c.image_input(args.model, image, args.size, spec)
              for image in (args.image or [None])]
    x = np.concatenate([xi for xi, _ in inputs])
    classes = jv.layer_names(module, x.shape)[-1].shape[-1]  # fails at once if x is too small
    if args.target is not None and args.target >= classes:
        raise ValueError(f"--target {args.target} is out of range: {args.model} has "
                         f"{classes} classes")
    if args.layer is not None:
        c.spatial_layer(module, args.layer, x.shape)
    window, stride = occlusion_settings(x.shape[1:3], args.window, args.stride)
    if "occlusion" in methods and window > min(x.shape[1:3]):
        raise ValueError(f"--window {window} is larger than the input ({x.shape[1]}x{x.shape[2]})")
    path = c.output_file(args.out, ".png")

    model, variables = c.load(args)
    targets = (top_classes(model, variables, x) if args.target is None
               else np.full(x.shape[0], args.target))
    with contextlib.ExitStack() as bars:  # an error closes the bar before it is printed
        figure = sheet(model, variables, x, targets, methods, layer=args.layer,
                       samples=args.samples, steps=args.steps, window=window, stride=stride,
                       eigen_smooth=args.eigen_smooth, aug_smooth=args.aug_smooth,
                       progress=lambda names: bars.enter_context(c.progress(
                           names, total=len(methods), desc="explain", quiet=args.quiet)))
    jv.render.save_png(figure, path)
    print(f"weights: {c.describe_weights(args.model, args.weights, args.seed)}", file=out)
    chosen = "given" if args.target is not None else "top class"
    meaningless = c.random_weights(args) and args.target is None
    caveat = "; meaningless: random weights" if meaningless else ""
    for i, (_, described) in enumerate(inputs):
        print(f"row {i + 1}:   {described}; {class_label(int(targets[i]), classes)} "
              f"({chosen}{caveat})", file=out)
    print(f"methods: {', '.join(methods)}", file=out)
    print(f"wrote {path} ({figure.shape[1]}x{figure.shape[0]})", file=out)
    return 0


__all__ = ["METHODS", "cam_layer", "occlusion_settings", "sheet", "tiles"]

"""Turning arrays into things a person can look at.

This module starts with the text form: :func:`summary`, one line of statistics per
array in the style of the lovely-tensors package, and the contrast scalings
:func:`sigmas` and :func:`pos_sigmas` used before showing weights and activations
as images.

Maps (attributions, activations) become pictures in four steps, each a function of
arrays (numpy or jax in, numpy out)::

    m = reduce_channels(grads, "abs_sum")          # (N, H, W, 3) -> (N, H, W)
    m = clip_percentile(m, high=99.5)              # per example, to [0, 1]
    heat = heatmap(m, "inferno")                   # (N, H, W, 3) uint8
    pic = overlay(to_uint8_image(x), heat, alpha=0.5)
    save_png(grid(pic, ncols=4, labels=names), "maps.png")

Example::

    >>> summary(np.arange(12, dtype=np.float32).reshape(3, 4))
    '(3, 4) n=12 x∈[0., 11.000] μ=5.500 σ=3.606'
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image, ImageDraw, ImageFont

from jaxviz._host import to_device
from jaxviz.errors import InputError, InputTypeError

__all__ = [
    "CMAPS",
    "REDUCTIONS",
    "clip_percentile",
    "grid",
    "heatmap",
    "overlay",
    "pos_sigmas",
    "reduce_channels",
    "save_png",
    "sigmas",
    "summary",
    "to_uint8_image",
]

# lovely-tensors' defaults: 3 decimals; scientific notation outside [1e-4, 1e3].
_PRECISION = 3
_SCI_BELOW = 1e-4
_SCI_ABOVE = 1e3
_SHOW_VALUES_UP_TO = 10

_DTYPE_SUFFIX = {
    "float32": "",
    "float16": "f16",
    "float64": "f64",
    "bfloat16": "bf16",
    "uint8": "u8",
    "uint16": "u16",
    "uint32": "u32",
    "uint64": "u64",
    "int8": "i8",
    "int16": "i16",
    "int32": "i32",
    "int64": "i64",
    "bool": "bool",
    "complex64": "c64",
    "complex128": "c128",
}


def _number(v: float) -> str:
    """One number as lovely-tensors prints it: ``0.``, ``-34.649`` or ``3.024e+03``."""
    if v == 0:
        return "0."
    sci = abs(v) < _SCI_BELOW or abs(v) > _SCI_ABOVE  # False for NaN: printed as 'nan'
    return f"{v:.{_PRECISION}{'e' if sci else 'f'}}"


def _values(a: np.ndarray) -> str:
    """The values of a small array, nested like lovely-tensors: ``[1.000, 2.000]``."""
    if a.ndim == 0:
        item = a.item()
        if isinstance(item, (bool, int)):
            return str(item)
        return _number(float(item))
    return "[" + ", ".join(_values(a[i]) for i in range(a.shape[0])) + "]"


def _join(parts: list[str | None]) -> str:
    return " ".join(p for p in parts if p)


def _as_numpy(x: Any) -> np.ndarray:
    try:
        a = np.asarray(x)
    except jax.errors.TracerArrayConversionError as err:
        raise InputTypeError(
            "summary needs concrete values, got a traced array (inside jax.jit, grad or "
            "vmap); call it outside the transformation or through jax.debug.callback"
        ) from err
    if a.dtype.kind not in "biufc" and not jnp.issubdtype(a.dtype, jnp.floating):
        raise InputTypeError(f"summary expects a numeric or boolean array, got dtype {a.dtype}")
    return a


def summary(x: Any, *, name: str | None = None) -> str:
    """A one-line description of an array, in the style of lovely-tensors.

    Example outputs::

        (1, 55, 55, 64) n=193600 x∈[-34.649, 32.174] μ=-0.398 σ=3.305
        (1, 27, 27, 64) n=46656 x∈[0., 3.024e+03] μ=1.499e+03 σ=859.119 i64
        (3,) μ=1.500 σ=0.707 +Inf!×1 f64 [1.000, 2.000, inf]
        (2, 3) n=6 all_zeros [[0., 0., 0.], [0., 0., 0.]]
        (0, 3) n=0 empty

    The pieces, left to right (empty ones are left out):

    * ``name``, when given;
    * the shape, as a Python tuple;
    * ``n=``, the element count, unless it equals the largest axis (1-D arrays);
    * ``x∈[min, max]`` when more than two finite values, ``μ=mean σ=std`` when at
      least two. The standard deviation is the unbiased one (``ddof=1``), as
      ``torch.std`` gives and lovely-tensors prints. Statistics are over the finite
      entries only and accumulated in float64; integer and boolean arrays are
      summarised as floats (``2.000``, not ``2``), as in notebook 000.
    * ``all_zeros`` instead of the statistics when every finite entry is zero (and
      there is more than one); ``empty`` for an array without elements;
    * ``+Inf!×k``, ``-Inf!×k``, ``NaN!×k``: lovely-tensors' warnings, with the count
      ``k`` of such entries;
    * a dtype suffix for anything that is not float32: ``f64``, ``f16``, ``bf16``,
      ``i64``, ``i32``, ``u8``, ``bool``, ... (float32 is the default, unmarked);
    * the values themselves when there are at most 10.

    Numbers follow lovely-tensors: three decimals (``-34.649``), scientific notation
    when the magnitude is above 1000 or below 1e-4 (``3.024e+03``), and zero as ``0.``.

    Args:
      x: a numpy or jax array, or anything ``np.asarray`` takes (numbers, lists).
      name: printed first, e.g. a layer name.

    Returns:
      The description, one line, no trailing newline.

    Raises:
      TypeError: ``x`` is not numeric or boolean, or is a traced array inside a jax
        transformation.
    """
    a = _as_numpy(x)
    shape = str(tuple(a.shape))
    count = f"n={a.size}" if a.shape and max(a.shape) != a.size else None
    suffix = _DTYPE_SUFFIX.get(a.dtype.name, a.dtype.name)
    head = [name, shape, count]

    if a.size == 0:
        return _join(head + ["empty", suffix])
    if a.dtype.kind == "c":  # no order, no min/max: shape and type only
        return _join(head + [suffix])

    if a.dtype.kind == "b":
        f = a.astype(np.float64)
    elif a.dtype.kind in "iuf":
        f = a
    else:  # bfloat16, float8 and other ml_dtypes floats
        f = a.astype(np.float32)

    stats = None
    zeros = None
    flags: list[str] = []
    if f.dtype.kind == "f":
        finite = np.isfinite(f)
        all_finite = bool(finite.all())
        if not all_finite:
            bad = f[~finite]
            for label, n_bad in (
                ("+Inf!", int(np.isposinf(bad).sum())),
                ("-Inf!", int(np.isneginf(bad).sum())),
                ("NaN!", int(np.isnan(bad).sum())),
            ):
                if n_bad:
                    flags.append(f"{label}×{n_bad}")
            good = f[finite]
        else:
            good = f.reshape(-1)
    else:
        good = f.reshape(-1)

    n_good = good.size
    if n_good and not np.any(good != 0) and a.size > 1:
        zeros = "all_zeros"
    elif n_good >= 2:
        lo, hi = float(good.min()), float(good.max())
        mean = float(np.mean(good, dtype=np.float64))
        std = float(np.std(good, dtype=np.float64, ddof=1))
        minmax = f"x∈[{_number(lo)}, {_number(hi)}]" if n_good > 2 else None
        stats = _join([minmax, f"μ={_number(mean)} σ={_number(std)}"])

    values = _values(a if a.dtype.kind in "biuf" else f) if a.size <= _SHOW_VALUES_UP_TO else None
    return _join(head + [stats, zeros, *flags, suffix, values])


def _std_or_one(std: jax.Array) -> jax.Array:
    return jnp.where(jnp.isfinite(std) & (std > 0), std, jnp.ones_like(std))


def sigmas(x: jax.typing.ArrayLike, n: float = 3) -> jax.Array:
    """Centres an array at 0.5 and scales it so that ±n standard deviations span [0, 1].

    Computes ``(x - mean(x)) / (2 * n * std(x)) + 0.5``, so the mean maps to 0.5,
    ``mean ± n·std`` to 0 and 1; clip the result to [0, 1] to show it as an image
    (values beyond n sigmas fall outside). This is ``sigmas`` of notebook 000,
    used there to show AlexNet's first-layer filters, which were zero-centred by
    contrast normalisation in the tradition of Zeiler & Fergus (2014). ``std`` is
    the unbiased one (``ddof=1``), as ``torch.Tensor.std`` in the seed; statistics
    are over the whole array.

    Unlike the seed's version (``x /= ...``), the input is never modified. When the
    standard deviation is zero or undefined (fewer than two entries), 1 is used
    instead, so a constant array maps to 0.5 everywhere rather than to NaN.

    Args:
      x: array of any shape (numpy or jax); works under ``jax.jit``.
      n: how many standard deviations map to each half of [0, 1].

    Returns:
      Float array of the same shape.
    """
    x = to_device(x)
    x = x.astype(jnp.result_type(x.dtype, jnp.float32))
    std = _std_or_one(jnp.std(x, ddof=1))
    return (x - jnp.mean(x)) / (2 * n * std) + 0.5


def pos_sigmas(x: jax.typing.ArrayLike, n: float = 2) -> jax.Array:
    """Scales a non-negative array so that n standard deviations of its positive part map to 1.

    Computes ``x / (n * std(x[x > 0]))``: zero stays 0 and a value n standard
    deviations of the positive entries maps to 1. Meant for ReLU and max-pool
    outputs, whose many zeros would shrink a plain standard deviation. This is
    ``pos_sigmas`` of notebook 000, which adds 0.5 at the call site,
    ``pos_sigmas(a, n=2) + 0.5``, to show zero as mid-grey.

    ``std`` is the unbiased one (``ddof=1``) over the positive entries, as
    ``torch.Tensor.std`` in the seed; it is computed with a mask, not by boolean
    indexing, so the function works under ``jax.jit``. When there are fewer than
    two positive entries, or their standard deviation is zero, 1 is used instead.
    The input is never modified.

    Args:
      x: array of any shape (numpy or jax), normally non-negative.
      n: how many standard deviations of the positive entries map to 1.

    Returns:
      Float array of the same shape.
    """
    x = to_device(x)
    x = x.astype(jnp.result_type(x.dtype, jnp.float32))
    positive = x > 0
    k = jnp.sum(positive)
    mean = jnp.sum(jnp.where(positive, x, 0)) / jnp.maximum(k, 1)
    var = jnp.sum(jnp.where(positive, (x - mean) ** 2, 0)) / jnp.maximum(k - 1, 1)
    std = jnp.where(k >= 2, jnp.sqrt(var), jnp.nan)
    return x / (n * _std_or_one(std))


# --- maps for display -------------------------------------------------------------------
#
# Everything below takes numpy or jax arrays with concrete values and returns numpy.

# ImageNet statistics, the same numbers as jaxviz.data.IMAGENET_MEAN / IMAGENET_STD
# (render sits on the lowest floor and imports nothing of ours; a test checks they agree).
IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)

REDUCTIONS: tuple[str, ...] = ("abs_sum", "sum", "abs_max", "l2")

# Colour maps as anchor colours (8-bit RGB) spaced evenly over the map's domain and
# interpolated linearly between. "inferno": ten samples of matplotlib's perceptually
# uniform inferno (van der Walt & Smith), black-purple-orange-pale yellow, domain
# [0, 1]. "diverging": blue-white-red (ColorBrewer RdBu endpoints), domain [-1, 1],
# white exactly at 0. "weights": the diverging scale of Olah et al.'s "Visualizing Weights"
# (Distill 2020), #0571b0 #92c5de #f7f7f7 #f4a582 #ca0020 (ColorBrewer RdBu, 5 classes),
# domain [-1, 1], light grey at 0.
CMAPS: dict[str, tuple[tuple[int, int, int], ...]] = {
    "inferno": (
        (0, 0, 4), (27, 12, 65), (74, 12, 107), (120, 28, 109), (165, 44, 96),
        (207, 68, 70), (237, 105, 37), (251, 155, 6), (247, 209, 61), (252, 255, 164),
    ),
    "diverging": (
        (5, 48, 97), (67, 147, 195), (255, 255, 255), (214, 96, 77), (103, 0, 31),
    ),
    "weights": (
        (5, 113, 176), (146, 197, 222), (247, 247, 247), (244, 165, 130), (202, 0, 32),
    ),
}
_CMAP_DOMAIN = {"inferno": (0.0, 1.0), "diverging": (-1.0, 1.0), "weights": (-1.0, 1.0)}


def _concrete(x: Any, fname: str) -> np.ndarray:
    try:
        return np.asarray(x)
    except jax.errors.TracerArrayConversionError as err:
        raise InputTypeError(
            f"{fname} needs concrete values, got a traced array (inside jax.jit, grad or "
            "vmap); call it outside the transformation") from err


def _float_array(x: Any, fname: str) -> np.ndarray:
    a = _concrete(x, fname)
    if a.dtype.kind not in "biuf" and not jnp.issubdtype(a.dtype, jnp.floating):
        raise InputTypeError(f"{fname} expects a numeric array, got dtype {a.dtype}")
    return a.astype(np.float64 if a.dtype == np.float64 else np.float32)


def _check_ndim(a: np.ndarray, ndim: int, what: str, fname: str) -> None:
    if a.ndim != ndim:
        raise InputError(f"{fname} expects {what}, got shape {a.shape}")


def _no_nan(a: np.ndarray, fname: str) -> None:
    if np.isnan(a).any():
        raise InputError(f"{fname} got NaN in its input ({int(np.isnan(a).sum())} entries)")


def reduce_channels(maps: Any, how: str = "abs_sum") -> np.ndarray:
    """Collapses the channel axis of per-pixel maps (e.g. input gradients) to one value.

    ``abs_sum``: ``sum_c |m_c|``; ``sum``: ``sum_c m_c`` (signed); ``abs_max``:
    ``max_c |m_c|`` (Simonyan et al. 2014 take this for saliency maps); ``l2``:
    ``sqrt(sum_c m_c^2)``.

    Args:
      maps: (N, H, W, C) array, usually C = 3 (RGB attributions).
      how: one of :data:`REDUCTIONS`.

    Returns:
      (N, H, W) float array (float64 for float64 input, else float32).

    Raises:
      ValueError: ``maps`` is not 4-D, or ``how`` is unknown.
    """
    a = _float_array(maps, "reduce_channels")
    _check_ndim(a, 4, "an (N, H, W, C) array", "reduce_channels")
    if how == "abs_sum":
        return np.abs(a).sum(axis=-1)
    if how == "sum":
        return a.sum(axis=-1)
    if how == "abs_max":
        return np.abs(a).max(axis=-1)
    if how == "l2":
        return np.sqrt(np.square(a).sum(axis=-1))
    raise InputError(f"unknown reduction {how!r}; expected one of {', '.join(REDUCTIONS)}")


def clip_percentile(m: Any, low: float = 0.0, high: float = 99.5, *,
                    symmetric: bool = False) -> np.ndarray:
    """Scales each example's map so that its ``high`` percentile maps to 1, clipping.

    Per example ``i``, with ``lo = percentile(m_i, low)`` and
    ``hi = percentile(m_i, high)`` (numpy's default linear interpolation between
    order statistics): ``clip((m_i - lo) / (hi - lo), 0, 1)``. The value at the low
    percentile maps to 0, the value at the high percentile to 1, and the few values
    above it (0.5 % by default) saturate at 1, so that a handful of extreme pixels
    do not darken the rest. A map with ``hi == lo`` (e.g. constant) becomes all 0.

    With ``symmetric=True``, for signed maps shown with the diverging colour map:
    ``clip(m_i / s, -1, 1)`` with ``s = percentile(|m_i|, high)``, so 0 stays 0 and
    the sign is kept; ``low`` is not used. A map with ``s == 0`` becomes all 0.

    Args:
      m: (N, H, W) maps, one per example.
      low: percentile in [0, 100) that maps to 0.
      high: percentile in (low, 100] that maps to 1.
      symmetric: keep the sign and scale by the percentile of ``|m|``.

    Returns:
      (N, H, W) float array in [0, 1] (or [-1, 1] when ``symmetric``).

    Raises:
      ValueError: ``m`` is not 3-D, contains NaN, or the percentiles are not
        ``0 <= low < high <= 100``.
    """
    a = _float_array(m, "clip_percentile")
    _check_ndim(a, 3, "(N, H, W) maps", "clip_percentile")
    if not 0.0 <= low < high <= 100.0:
        raise InputError(f"clip_percentile needs 0 <= low < high <= 100, got low={low}, high={high}")
    _no_nan(a, "clip_percentile")
    flat = a.reshape(a.shape[0], -1)
    if symmetric:
        s = np.percentile(np.abs(flat), high, axis=1).astype(a.dtype)[:, None, None]
        safe = np.where(s > 0, s, 1)
        return np.where(s > 0, np.clip(a / safe, -1, 1), 0).astype(a.dtype)
    lo = np.percentile(flat, low, axis=1).astype(a.dtype)[:, None, None]
    hi = np.percentile(flat, high, axis=1).astype(a.dtype)[:, None, None]
    span = hi - lo
    safe = np.where(span > 0, span, 1)
    return np.where(span > 0, np.clip((a - lo) / safe, 0, 1), 0).astype(a.dtype)


def heatmap(m: Any, cmap: str = "inferno") -> np.ndarray:
    """Colours a map with one of the built-in colour maps (:data:`CMAPS`).

    ``inferno`` takes values in [0, 1] (as :func:`clip_percentile` gives): 0 is
    near-black ``(0, 0, 4)``, 1 pale yellow ``(252, 255, 164)``. ``diverging`` takes
    signed values in [-1, 1] (``clip_percentile(..., symmetric=True)``): -1 dark blue
    ``(5, 48, 97)``, 0 white, 1 dark red ``(103, 0, 31)``. Values outside the domain
    are clipped to it; colours between anchors are interpolated linearly and rounded.

    Args:
      m: map of any shape, typically (N, H, W).
      cmap: ``"inferno"``, ``"diverging"`` or ``"weights"`` (domain [-1, 1], the
        diverging weight colours of Olah et al. 2020, light grey ``(247, 247, 247)`` at 0).

    Returns:
      ``m.shape + (3,)`` uint8 RGB, e.g. (N, H, W, 3).

    Raises:
      ValueError: unknown ``cmap``, or ``m`` contains NaN.
    """
    if cmap not in CMAPS:
        raise InputError(f"unknown colour map {cmap!r}; expected one of {', '.join(CMAPS)}")
    a = _float_array(m, "heatmap").astype(np.float64)
    _no_nan(a, "heatmap")
    lo, hi = _CMAP_DOMAIN[cmap]
    t = (np.clip(a, lo, hi) - lo) / (hi - lo)
    anchors = np.asarray(CMAPS[cmap], np.float64)
    pos = t * (len(anchors) - 1)
    i = np.minimum(np.floor(pos).astype(np.int64), len(anchors) - 2)
    f = (pos - i)[..., None]
    rgb = anchors[i] * (1 - f) + anchors[i + 1] * f
    return np.rint(rgb).astype(np.uint8)


def _uint8(x: Any, fname: str, what: str) -> np.ndarray:
    a = _concrete(x, fname)
    if a.dtype != np.uint8:
        raise InputTypeError(f"{fname} expects {what} as uint8, got dtype {a.dtype}")
    return a


def overlay(image_uint8: Any, heat_rgb: Any, alpha: float = 0.5) -> np.ndarray:
    """Blends a heat map over an image: ``round((1 - alpha) * image + alpha * heat)``.

    ``alpha=0`` returns the image, ``alpha=1`` the heat map, unchanged.

    Args:
      image_uint8: (..., H, W, 3) uint8, e.g. :func:`to_uint8_image` of the input.
      heat_rgb: uint8 array of the same shape, e.g. :func:`heatmap` of a map.
      alpha: opacity of the heat map, in [0, 1].

    Returns:
      uint8 array of the same shape.

    Raises:
      TypeError: either array is not uint8.
      ValueError: shapes differ, the last axis is not 3, or ``alpha`` is outside [0, 1].
    """
    image = _uint8(image_uint8, "overlay", "the image")
    heat = _uint8(heat_rgb, "overlay", "the heat map")
    if image.shape != heat.shape or image.ndim < 3 or image.shape[-1] != 3:
        raise InputError(
            f"overlay expects an image and a heat map of the same shape (..., H, W, 3), got "
            f"{image.shape} and {heat.shape}")
    if not 0.0 <= alpha <= 1.0:
        raise InputError(f"overlay needs alpha in [0, 1], got {alpha}")
    out = (1.0 - alpha) * image.astype(np.float64) + alpha * heat.astype(np.float64)
    return np.rint(out).astype(np.uint8)


def to_uint8_image(
    x_normalized: Any,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
) -> np.ndarray:
    """Undoes the input normalization and quantizes: ``round(255 * clip(x * std + mean, 0, 1))``.

    ``x * std + mean`` is :func:`jaxviz.data.denormalize` (in ``x``'s dtype) when
    ``mean`` and ``std`` are the ImageNet defaults, so
    ``to_uint8_image(data.preprocess(image))`` gives back the 8-bit image that was fed
    in (before any resizing). Values outside [0, 1] (synthesized images,
    perturbations) are clipped.

    Args:
      x_normalized: (..., 3) float array, e.g. (N, H, W, 3), normalized per channel.
      mean: per-channel mean used for the normalization.
      std: per-channel standard deviation used for the normalization.

    Returns:
      uint8 array of the same shape.

    Raises:
      ValueError: the last axis is not 3 or does not match ``mean``/``std``.
      TypeError: ``x_normalized`` is not a float array.
    """
    a = _concrete(x_normalized, "to_uint8_image")
    if not jnp.issubdtype(a.dtype, jnp.floating):
        raise InputTypeError(f"to_uint8_image expects a float array, got dtype {a.dtype}")
    mean_a = np.asarray(mean, dtype=a.dtype)
    std_a = np.asarray(std, dtype=a.dtype)
    if a.ndim < 1 or mean_a.shape != (a.shape[-1],) or std_a.shape != (a.shape[-1],) or a.shape[-1] != 3:
        raise InputError(
            f"to_uint8_image expects (..., 3) values and 3 means and stds, got shape {a.shape}, "
            f"mean {tuple(mean)}, std {tuple(std)}")
    rgb = (a * std_a + mean_a).astype(np.float64)
    return np.rint(np.clip(rgb, 0.0, 1.0) * 255.0).astype(np.uint8)


def _tiles_uint8(images: Any) -> np.ndarray:
    a = _concrete(images, "grid")
    if a.ndim == 3:
        a = a[..., None]
    if a.ndim != 4 or a.shape[-1] not in (1, 3) or a.shape[0] == 0:
        raise InputError(
            f"grid expects (N, H, W, 3) or (N, H, W) images with N >= 1, got shape {a.shape}")
    if a.dtype != np.uint8:
        if not (a.dtype.kind == "f" or jnp.issubdtype(a.dtype, jnp.floating)):
            raise InputTypeError(f"grid expects uint8 or float images in [0, 1], got dtype {a.dtype}")
        f = a.astype(np.float64)
        _no_nan(f, "grid")
        a = np.rint(np.clip(f, 0.0, 1.0) * 255.0).astype(np.uint8)
    if a.shape[-1] == 1:
        a = np.repeat(a, 3, axis=-1)
    return a


def grid(
    images: Any,
    ncols: int,
    pad: int = 2,
    labels: Sequence[str] | None = None,
    *,
    background: int = 255,
) -> np.ndarray:
    """Tiles a batch of images into one image, row by row, with optional captions.

    With ``c = min(ncols, N)`` columns and ``r = ceil(N / c)`` rows, the result is
    ``(r * (H + L) + (r + 1) * pad, c * W + (c + 1) * pad, 3)``: ``pad`` pixels of
    ``background`` around and between the tiles, and ``L`` the height of a caption
    band under each tile (0 without labels, else the line height of PIL's default
    font plus 2). Image ``k`` sits in row ``k // c``, column ``k % c``; cells past
    ``N`` stay background. A caption wider than its tile is cut at the tile's edge;
    it is black on a light background and white on a dark one.

    Args:
      images: (N, H, W, 3) or (N, H, W) grey; uint8, or floats in [0, 1] (clipped,
        then rounded to 8 bits).
      ncols: number of columns, >= 1.
      pad: pixels between tiles and around the border, >= 0.
      labels: ``N`` captions, or None.
      background: grey level 0..255 of the padding and caption bands.

    Returns:
      (height, width, 3) uint8.

    Raises:
      ValueError: wrong image shape, ``ncols < 1``, ``pad < 0``, ``background``
        outside 0..255, or a number of labels other than N.
      TypeError: images neither uint8 nor float.
    """
    tiles = _tiles_uint8(images)
    n, h, w, _ = tiles.shape
    if int(ncols) != ncols or ncols < 1:
        raise InputError(f"grid needs ncols >= 1, got {ncols}")
    if int(pad) != pad or pad < 0:
        raise InputError(f"grid needs pad >= 0, got {pad}")
    if not 0 <= background <= 255:
        raise InputError(f"grid needs background in 0..255, got {background}")
    ncols, pad = int(ncols), int(pad)
    font = None
    band = 0
    if labels is not None:
        labels = [str(s) for s in labels]
        if len(labels) != n:
            raise InputError(f"grid got {len(labels)} labels for {n} images")
        font = ImageFont.load_default()
        band = int(ImageDraw.Draw(Image.new("RGB", (1, 1))).textbbox((0, 0), "Ag|", font=font)[3]) + 2
    cols = min(ncols, n)
    rows = -(-n // cols)
    cell_h = h + band
    out = np.full((rows * cell_h + (rows + 1) * pad, cols * w + (cols + 1) * pad, 3),
                  background, np.uint8)
    ink = (0, 0, 0) if background > 127 else (255, 255, 255)
    for k in range(n):
        top = pad + (k // cols) * (cell_h + pad)
        left = pad + (k % cols) * (w + pad)
        out[top: top + h, left: left + w] = tiles[k]
        if font is not None:
            strip = Image.new("RGB", (w, band), (background,) * 3)
            ImageDraw.Draw(strip).text((1, 1), labels[k], fill=ink, font=font)
            out[top + h: top + cell_h, left: left + w] = np.asarray(strip)
    return out


def save_png(image: Any, path: str | os.PathLike) -> Path:
    """Writes an 8-bit image as PNG atomically: to a temporary file beside ``path``, then renamed.

    A reader never sees a half-written file, and a failure leaves ``path`` as it was
    and no temporary file behind. The folder must exist. The file gets mode 0o644
    (or the mode of the file it replaces).

    Args:
      image: (H, W), (H, W, 3) or (H, W, 4) uint8 (grey, RGB, RGBA).
      path: destination file.

    Returns:
      ``path`` as a :class:`pathlib.Path`.

    Raises:
      TypeError: ``image`` is not uint8.
      ValueError: ``image`` has another shape.
      OSError: the file cannot be written (missing folder, ``path`` is a folder, ...).
    """
    a = _uint8(image, "save_png", "the image")
    if not (a.ndim == 2 or (a.ndim == 3 and a.shape[-1] in (3, 4))) or 0 in a.shape:
        raise InputError(f"save_png expects (H, W), (H, W, 3) or (H, W, 4), got shape {a.shape}")
    path = Path(path)
    pil = Image.fromarray(np.ascontiguousarray(a))
    mode = path.stat().st_mode & 0o7777 if path.is_file() else 0o644
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            pil.save(f, format="PNG")
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return path

"""Faithfulness metrics for saliency maps: how much a map says about the model.

- :func:`deletion` and :func:`insertion` (Petsiuk, Das & Saenko 2018, "RISE"): pixels
  are removed from the image (or added to a blurred copy) in the order of the map,
  most salient first, and the target's probability is read after every ``step``
  pixels. A map that finds what the model uses makes the probability fall fast
  (deletion: low area under the curve) and rise fast (insertion: high area).
- :func:`pointing_game` (Zhang et al. 2016): does the map's maximum fall on the object
  (a box or a mask), within a tolerance?
- :func:`randomization_check` (Adebayo et al. 2018): cascading randomization of the
  model's weights from the logits down; a map that explains the model must change
  when the model does (low rank correlation with the original map).
- :func:`report` runs every attribution method through all of them, with a uniform
  random map as the reference row, and :func:`format_table` writes the rows as a
  markdown table.

Conventions, stated once:

- **Maps** are (N, H, W), or (N, H, W, C) reduced to (N, H, W) by
  :func:`pixel_map`: ``sum_c |m_c|`` (``jaxviz.render.reduce_channels(m,
  "abs_sum")``), the magnitude of each pixel's attribution, for the deletion and
  insertion orders and the pointing game.
- **Order of pixels**: a stable sort of ``-map`` over the row-major flattened image,
  so equal values keep row-major order (the first pixel of a tie goes first).
- **Targets** of the curves and the report are class indices: an int, or an int array
  (N,) with one class per image (the randomization check passes its target on to the
  attribution method, which may take any target it knows).
- **Results** are numpy arrays: the curves in ``x``'s dtype, areas, correlations and
  fractions in float64. Every function here works per image on the images it is given;
  only :func:`report` reduces over images, and it gathers the per-image values of every
  process first (:func:`jaxviz.parallel.gather`), so several processes each holding a
  share of the images print the table one process would.

References:
  Petsiuk, Das & Saenko, "RISE: Randomized Input Sampling for Explanation of Black-box
  Models", BMVC 2018, arXiv:1806.07421 (deletion, insertion). Zhang et al., "Top-down
  Neural Attention by Excitation Backprop", ECCV 2016, arXiv:1608.00507 (pointing
  game). Adebayo et al., "Sanity Checks for Saliency Maps", NeurIPS 2018,
  arXiv:1810.03292 (cascading model-parameter randomization).
"""

from __future__ import annotations

import functools
import math
import numbers
import zlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxviz import _random, attribution, capture, checks, objectives, parallel, render
from jaxviz import static as static_lib
from jaxviz.analysis import maps
from jaxviz._host import to_device
from jaxviz.errors import InputError, InputTypeError, LayerError, ModelError

__all__ = [
    "DEFAULT_METHODS",
    "RANDOM_BASELINE",
    "SCORES",
    "Curves",
    "Randomization",
    "Row",
    "auc",
    "blur",
    "cam_layer",
    "default_settings",
    "deletion",
    "format_table",
    "insertion",
    "parameter_layers",
    "pixel_map",
    "pointing_game",
    "randomization_check",
    "ranks",
    "report",
    "spearman",
]

SCORES: tuple[str, ...] = ("prob", "logit")

# The attribution methods :func:`report` runs by default, in the order of its rows.
DEFAULT_METHODS: tuple[str, ...] = (
    "gradient", "gradient_x_input", "smoothgrad", "integrated_gradients", "deconvnet",
    "guided_backprop", "occlusion", "grad_cam", "guided_grad_cam")

# The name of :func:`report`'s reference row: a uniform random map per image.
RANDOM_BASELINE = "random (uniform)"

Method = Callable[[nn.Module, Any, jax.Array, Any], Any]

_DEFAULT_CHUNK = 16  # curve points per compiled chunk (each runs chunk * N images)


# --- maps, orders, areas, ranks ------------------------------------------------------------


def _real_array(a: Any, what: str) -> np.ndarray:
    a = checks.as_array(a, what)
    if not (jnp.issubdtype(a.dtype, jnp.floating) or jnp.issubdtype(a.dtype, jnp.integer)
            or a.dtype == bool):
        raise InputTypeError(f"expected {what} as a real array, got dtype {a.dtype}")
    a = np.asarray(a)
    return a.astype(np.float64) if a.dtype == bool else a


def pixel_map(maps: Any, what: str = "maps") -> np.ndarray:
    """Saliency maps as one value per pixel: (N, H, W) as they are, (N, H, W, C)
    reduced by ``sum_c |m_c|``.

    Args:
      maps: (N, H, W) or (N, H, W, C) real array (numpy or jax).
      what: the argument's name, for messages.

    Returns:
      (N, H, W) numpy array (float for a bool map).

    Raises:
      InputTypeError: not a real array.
      InputError: another rank, or values that are not finite.
    """
    m = _real_array(maps, what)
    if m.ndim == 4:
        m = render.reduce_channels(m, "abs_sum")
    if m.ndim != 3:
        raise InputError(f"expected {what} as (N, H, W) or (N, H, W, C); got shape "
                         f"{tuple(m.shape)}")
    checks.finite(m, what)
    return m


def ranks(maps: Any) -> np.ndarray:
    """Each pixel's place in the deletion and insertion order: (N, H, W) int32, 0 for
    the most salient pixel.

    The order is a stable sort of ``-map`` over the row-major flattened image: ties
    keep row-major order.

    Args:
      maps: (N, H, W) or (N, H, W, C) (see :func:`pixel_map`).
    """
    m = pixel_map(maps)
    n, h, w = m.shape
    order = np.argsort(-m.reshape(n, -1), axis=1, kind="stable")
    place = np.empty((n, h * w), np.int32)
    np.put_along_axis(place, order, np.arange(h * w, dtype=np.int32)[None], axis=1)
    return place.reshape(n, h, w)


def auc(curve: Any, fractions: Any = None) -> np.ndarray:
    """Area under curves sampled at ``fractions`` in [0, 1], by the trapezoid rule.

    ``sum_k (f_{k+1} - f_k) (c_k + c_{k+1}) / 2``. Without ``fractions`` the points are
    evenly spaced from 0 to 1, which is RISE's normalized area
    ``(sum c - (c_0 + c_last) / 2) / (points - 1)``.

    Args:
      curve: (..., P) values, P >= 2 points.
      fractions: (P,) increasing x positions from 0 to 1; None for ``linspace(0, 1, P)``.

    Returns:
      (...) float64 areas.

    Raises:
      InputError: fewer than 2 points, or fractions of another length.
    """
    c = np.asarray(_real_array(curve, "curve"), np.float64)
    if c.ndim < 1 or c.shape[-1] < 2:
        raise InputError(f"expected curves with at least 2 points on the last axis, got shape "
                         f"{tuple(c.shape)}")
    f = (np.linspace(0.0, 1.0, c.shape[-1]) if fractions is None
         else np.asarray(fractions, np.float64))
    if f.shape != (c.shape[-1],):
        raise InputError(f"expected fractions of shape ({c.shape[-1]},), one per point; got "
                         f"shape {tuple(f.shape)}")
    return np.trapezoid(c, f, axis=-1)


def _average_ranks(a: np.ndarray) -> np.ndarray:
    """Ranks 1..n of each row of ``a`` (R, n), ties given the mean of the ranks they
    span (as ``scipy.stats.rankdata``'s "average")."""
    r, n = a.shape
    order = np.argsort(a, axis=1, kind="stable")
    s = np.take_along_axis(a, order, axis=1)
    out = np.empty((r, n), np.float64)
    for i in range(r):
        new = np.concatenate([[True], s[i, 1:] != s[i, :-1]])
        group = np.cumsum(new) - 1
        starts = np.flatnonzero(new)
        ends = np.append(starts[1:], n)              # exclusive
        mean_rank = (starts + ends + 1) / 2.0        # mean of (start+1) .. end
        out[i, order[i]] = mean_rank[group]
    return out


def spearman(a: Any, b: Any) -> np.ndarray:
    """Spearman's rank correlation of each example of ``a`` with the same example of ``b``.

    The Pearson correlation of the average ranks (ties share the mean of their ranks),
    the definition of ``scipy.stats.spearmanr``; NaN where either example is constant
    (no ranks to correlate), as scipy gives.

    Args:
      a, b: (N, ...) real arrays of the same shape; each example is flattened.

    Returns:
      (N,) float64. An example compared with itself gives exactly 1.0.

    Raises:
      InputError: shapes differ, or fewer than 2 values per example.
    """
    x, y = _real_array(a, "a"), _real_array(b, "b")
    if x.shape != y.shape or x.ndim < 1:
        raise InputError(f"expected two arrays (N, ...) of the same shape, got "
                         f"{tuple(x.shape)} and {tuple(y.shape)}")
    n = x.shape[0]
    x, y = x.reshape(n, -1), y.reshape(n, -1)
    if x.shape[1] < 2:
        raise InputError(f"a rank correlation needs at least 2 values per example, got "
                         f"{x.shape[1]}")
    rx, ry = _average_ranks(x), _average_ranks(y)
    dx = rx - rx.mean(axis=1, keepdims=True)
    dy = ry - ry.mean(axis=1, keepdims=True)
    sxx, syy, sxy = (dx * dx).sum(1), (dy * dy).sum(1), (dx * dy).sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        # sqrt(fl(s * s)) == s exactly, so an example against itself gives 1.0
        rho = sxy / np.sqrt(sxx * syy)
    rho = np.where((sxx == 0) | (syy == 0), np.nan, rho)
    return np.clip(rho, -1.0, 1.0)


# --- deletion and insertion -------------------------------------------------------------------


def blur(x: Any, sigma: float = 5.0) -> np.ndarray:
    """A Gaussian blur of each image of ``x (N, H, W, C)``: insertion's default start.

    The kernel is ``exp(-d^2 / (2 sigma^2))`` for offsets ``|d| <= ceil(sigma)``,
    normalized to sum 1, applied along rows then columns, with zeros beyond the border
    (so a constant image darkens near its edges). With the default ``sigma = 5`` this is
    an 11 x 11 window of std 5 px, the size and std of RISE's reference evaluation.
    ``sigma = 0`` returns ``x`` unchanged.

    Returns:
      (N, H, W, C) numpy array in ``x``'s dtype.

    Raises:
      InputError: a negative ``sigma``, or ``x`` not 4-D.
    """
    if isinstance(sigma, bool) or not isinstance(sigma, numbers.Real) or sigma < 0:
        raise InputError(f"expected blur_sigma as a non-negative number of pixels, got {sigma!r}")
    a = np.asarray(x)
    if a.ndim != 4:
        raise InputError(f"expected (N, H, W, C) images to blur, got shape {tuple(a.shape)}")
    if sigma == 0:
        return a.copy()

    def matrix(size: int) -> np.ndarray:
        r = int(math.ceil(sigma))
        d = np.arange(-r, r + 1)
        k = np.exp(-(d * d) / (2.0 * sigma * sigma))
        k /= k.sum()
        m = np.zeros((size, size))
        for i in range(size):
            j = i + d
            ok = (j >= 0) & (j < size)
            m[i, j[ok]] = k[ok]
        return m

    out = np.einsum("ih,nhwc,jw->nijc", matrix(a.shape[1]), a.astype(np.float64),
                    matrix(a.shape[2]))
    return out.astype(a.dtype)


def _classes(model: nn.Module, x: jax.Array, target: Any) -> jax.Array:
    """``target`` as (N,) int32 class indices, checked against the model's logits."""
    if callable(target) or isinstance(target, objectives.Objective):
        raise InputTypeError(f"expected target as an int class or an int array (N,) of "
                             f"classes (a metric reads class scores), got "
                             f"{type(target).__name__}")
    out = objectives.output_shape(model, x.shape)
    if len(out) != 2:
        raise ModelError(f"these metrics read class scores: expected {type(model).__name__} "
                         f"to return (N, classes) logits; it returns shape {out}")
    objectives.class_logit(target).check(model, x.shape)
    return jnp.broadcast_to(jnp.asarray(target, jnp.int32), (x.shape[0],))


def _fill(value: Any, x: jax.Array, blur_sigma: float, what: str) -> jax.Array:
    """A baseline image batch: ``"blur"`` (:func:`blur` of x), or a scalar or an array
    that broadcasts to x."""
    if isinstance(value, str):
        if value != "blur":
            raise InputError(f"expected {what} as 'blur', a number or an array that broadcasts "
                             f"to x; got {value!r}")
        return to_device(blur(x, blur_sigma))
    b = _real_array(value, what)
    checks.finite(b, what)
    try:
        return jnp.broadcast_to(jnp.asarray(b, x.dtype), x.shape)
    except ValueError:
        raise InputError(f"expected {what} that broadcasts to x's shape {tuple(x.shape)} (a "
                         f"scalar, (C,), (H, W, C) or (N, H, W, C)); got shape "
                         f"{tuple(b.shape)}") from None


def _scores_chunk(model, score, variables, moved, rest, place, counts, classes):
    """Scores (K, N) of the images that take ``moved`` at the pixels ranked below
    ``counts[k]`` and ``rest`` elsewhere, all K * N images in one forward pass."""
    k, (n, h, w, c) = counts.shape[0], moved.shape
    inside = place[None] < counts[:, None, None, None]                      # (K, N, H, W)
    images = jnp.where(inside[..., None], moved[None], rest[None])          # (K, N, H, W, C)
    logits = model.apply(variables, images.reshape(k * n, h, w, c))
    logits = logits.reshape(k, n, -1)
    if score == "prob":
        logits = jax.nn.softmax(logits, axis=-1)
    picked = jnp.take_along_axis(logits, classes[None, :, None], axis=-1)[..., 0]
    return picked.astype(moved.dtype)


_scores_jit = static_lib.jit(_scores_chunk, 2)


class Curves(NamedTuple):
    """Deletion or insertion curves.

    Attributes:
      curves: (N, P) the target's score after ``counts[k]`` pixels were moved, P =
        ``ceil(H W / step) + 1`` points from none to all, in ``x``'s dtype.
      auc: (N,) float64 area under each curve over ``fractions`` (:func:`auc`).
      fractions: (P,) float64 ``counts / (H W)``, from 0 to 1 (even steps but
        possibly the last, when ``step`` does not divide ``H W``).
    """

    curves: np.ndarray
    auc: np.ndarray
    fractions: np.ndarray


def _curves(model, variables, x, maps, target, *, step, moved_value, rest_value, moving_x,
            blur_sigma, score, batch_size) -> Curves:
    x = checks.batch(x, model, images=True)
    n, h, w = x.shape[:3]
    m = pixel_map(maps)
    if m.shape != (n, h, w):
        raise InputError(f"expected maps of shape (N, H, W) = ({n}, {h}, {w}) for x of shape "
                         f"{tuple(x.shape)} (or (N, H, W, C)); got shape {tuple(np.shape(maps))}")
    if score not in SCORES:
        raise InputError(f"unknown score {score!r}; expected one of {', '.join(SCORES)}")
    total = h * w
    step = w if step is None else checks.positive_int(step, "step")
    classes = _classes(model, x, target)
    points = -(-total // step) + 1
    counts = np.minimum(np.arange(points) * step, total).astype(np.int32)
    chunk = (_DEFAULT_CHUNK if batch_size is None else
             checks.positive_int(batch_size, "batch_size"))
    chunk = min(chunk, points)
    if moving_x:  # insertion: x's pixels move in, onto the start image
        moved, rest = x, _fill(rest_value, x, blur_sigma, "baseline")
    else:         # deletion: the baseline's pixels move in, over x
        moved, rest = _fill(moved_value, x, blur_sigma, "baseline"), x
    place = to_device(ranks(m))
    parts = []
    for start in range(0, points, chunk):
        part = counts[start:start + chunk]
        k = len(part)
        if k < chunk:  # pad with the last point; its scores are dropped
            part = np.concatenate([part, np.repeat(part[-1:], chunk - k)])
        s = _scores_jit(model, score, variables, moved, rest, place, to_device(part), classes)
        parts.append(np.asarray(s[:k]))
    curves = np.concatenate(parts).T
    fractions = counts / float(total)
    return Curves(curves, auc(curves, fractions), fractions)


@checks.boundary
def deletion(model: nn.Module, variables: Any, x: jax.Array, maps: Any, target: Any, *,
             step: int | None = None, baseline: float | str | jax.Array = 0.0,
             score: str = "prob", blur_sigma: float = 5.0,
             batch_size: int | None = None) -> Curves:
    """The deletion curve (Petsiuk et al. 2018): the target's score as the most salient
    pixels are removed, ``step`` at a time.

    Point ``k`` (k = 0 .. P - 1) is the image with its ``min(k step, H W)`` highest
    pixels of the map (:func:`ranks`: ties in row-major order) replaced by the
    baseline's values there, every channel of a pixel together; point 0 is ``x``,
    the last point is all baseline. All ``P`` images of every example are scored by a
    compiled program, ``batch_size`` points (``batch_size * N`` images) per chunk.
    Lower area is better: the map found what the score depends on.

    Args:
      model: a Linen classifier returning (N, classes) logits.
      variables: its variables.
      x: (N, H, W, C) images.
      maps: (N, H, W) saliency, or (N, H, W, C) reduced by ``sum_c |m_c|``.
      target: an int class or an int array (N,).
      step: pixels removed per point; None for one image row (``W``), RISE's 224 at
        224 x 224.
      baseline: what a removed pixel becomes: a number, an array that broadcasts to x,
        or ``"blur"`` (:func:`blur` of x). 0 is black for [0, 1] images and the mean
        colour for ImageNet-normalized ones.
      score: ``"prob"``, the softmax probability of the target (RISE), or
        ``"logit"``, its logit.
      blur_sigma: the blur's std in pixels, for ``baseline="blur"``.
      batch_size: curve points per compiled chunk; None for 16.

    Returns:
      :class:`Curves` ``(curves (N, P), auc (N,), fractions (P,))``.

    Raises:
      InputError: maps that do not match x; an unknown score; a bad step, batch size
        or baseline; a class out of range; as :func:`jaxviz.checks.batch`.
      InputTypeError: a target that is not class indices; a non-float x.
      ModelError: a model that does not return (N, classes).
    """
    return _curves(model, variables, x, maps, target, step=step, moved_value=baseline,
                   rest_value=None, moving_x=False, blur_sigma=blur_sigma, score=score,
                   batch_size=batch_size)


@checks.boundary
def insertion(model: nn.Module, variables: Any, x: jax.Array, maps: Any, target: Any, *,
              step: int | None = None, baseline: float | str | jax.Array = "blur",
              score: str = "prob", blur_sigma: float = 5.0,
              batch_size: int | None = None) -> Curves:
    """The insertion curve (Petsiuk et al. 2018): the target's score as the most salient
    pixels of ``x`` are put into a start image, ``step`` at a time.

    Point ``k`` is the start image (``baseline``) with its ``min(k step, H W)`` highest
    pixels of the map replaced by ``x``'s; point 0 is the start image, the last is
    ``x``. The default start is ``x`` blurred (:func:`blur`, std ``blur_sigma``), as in
    RISE: inserting sharp pixels into a flat image would score their edges as much as
    their content. Higher area is better.

    Args:
      model, variables, x, maps, target, step, score, batch_size: as :func:`deletion`.
      baseline: the start image: ``"blur"`` (default), a number (e.g. 0.0 for a blank
        start), or an array that broadcasts to x.
      blur_sigma: the blur's std in pixels (default 5, RISE's).

    Returns:
      :class:`Curves`.

    Raises:
      As :func:`deletion`.
    """
    return _curves(model, variables, x, maps, target, step=step, moved_value=None,
                   rest_value=baseline, moving_x=True, blur_sigma=blur_sigma, score=score,
                   batch_size=batch_size)


# --- the pointing game --------------------------------------------------------------------------


def pointing_game(maps: Any, boxes: Any = None, masks: Any = None, *,
                  tolerance: float = 15) -> np.ndarray:
    """The pointing game (Zhang et al. 2016): a hit when the map's maximum lies on the
    object, or within ``tolerance`` pixels of it.

    The point is the map's maximum, the first in row-major order when several pixels
    share it (``argmax`` of the flattened map). It is a hit when the Euclidean distance
    between its pixel coordinates and the nearest pixel of the object region is at most
    ``tolerance`` (``<=``: a point exactly ``tolerance`` away hits; 0 asks for the point
    to lie on the region itself). Zhang et al. use 15 px on images of about 224 px;
    scale it with the image. The accuracy is ``hits.mean()``.

    Args:
      maps: (N, H, W) saliency, or (N, H, W, C) reduced by ``sum_c |m_c|``.
      boxes: (N, 4) ints ``(y0, x0, y1, x1)``, rows ``y0 <= y < y1`` and columns
        ``x0 <= x < x1`` (first inclusive, last exclusive: ``mask[y0:y1, x0:x1]``); a
        box may reach past the image.
      masks: (N, H, W) bool object regions, instead of boxes.
      tolerance: the distance in pixels, a number >= 0.

    Returns:
      (N,) bool numpy array of hits.

    Raises:
      InputError: neither or both of boxes and masks; shapes that do not match the
        maps; an empty box or mask (an image without the object has no place in the
        game); a negative tolerance; maps that are not finite.
      InputTypeError: masks that are not bool, boxes that are not ints.
    """
    m = pixel_map(maps)
    n, h, w = m.shape
    if isinstance(tolerance, bool) or not isinstance(tolerance, numbers.Real) or tolerance < 0:
        raise InputError(f"expected tolerance as a number of pixels >= 0, got {tolerance!r}")
    if (boxes is None) == (masks is None):
        raise InputError("expected the object region as boxes=(N, 4) or masks=(N, H, W), one "
                         "of the two; got " + ("neither" if boxes is None else "both"))
    flat = m.reshape(n, -1).argmax(axis=1)
    r, c = flat // w, flat % w
    t2 = float(tolerance) ** 2
    if boxes is not None:
        b = checks.as_array(boxes, "boxes")
        if not jnp.issubdtype(b.dtype, jnp.integer):
            raise InputTypeError(f"expected boxes as int pixel coordinates, got dtype {b.dtype}")
        b = np.asarray(b, np.int64)
        if b.shape != (n, 4):
            raise InputError(f"expected boxes of shape ({n}, 4) as (y0, x0, y1, x1), one per "
                             f"map; got shape {tuple(b.shape)}")
        empty = np.flatnonzero((b[:, 2] <= b[:, 0]) | (b[:, 3] <= b[:, 1]))
        if empty.size:
            raise InputError(f"box {empty[0]} {b[empty[0]].tolist()} is empty: expected "
                             f"(y0, x0, y1, x1) with y0 < y1 and x0 < x1 (y1, x1 exclusive)")
        dy = np.maximum.reduce([b[:, 0] - r, np.zeros_like(r), r - (b[:, 2] - 1)])
        dx = np.maximum.reduce([b[:, 1] - c, np.zeros_like(c), c - (b[:, 3] - 1)])
        return (dy * dy + dx * dx) <= t2
    k = checks.as_array(masks, "masks")
    if k.dtype != bool:
        raise InputTypeError(f"expected masks as a bool array, got dtype {k.dtype} (for 0/1 "
                             f"values pass masks > 0)")
    k = np.asarray(k)
    if k.shape != (n, h, w):
        raise InputError(f"expected masks of shape ({n}, {h}, {w}), one per map; got shape "
                         f"{tuple(k.shape)}")
    empty = np.flatnonzero(~k.reshape(n, -1).any(axis=1))
    if empty.size:
        raise InputError(f"mask {empty[0]} is empty: every image in the pointing game needs "
                         f"its object region")
    rows, cols = np.arange(h), np.arange(w)
    d2 = ((rows[None, :, None] - r[:, None, None]) ** 2
          + (cols[None, None, :] - c[:, None, None]) ** 2)          # (N, H, W)
    nearest = np.where(k, d2, np.iinfo(np.int64).max).reshape(n, -1).min(axis=1)
    return nearest <= t2


# --- cascading randomization ------------------------------------------------------------------


def _direct_leaves(node: Any) -> list[str]:
    if not isinstance(node, Mapping):
        return []
    return [k for k, v in node.items() if not isinstance(v, Mapping)]


def parameter_layers(model: nn.Module, variables: Any, shape: Sequence[int]) -> list[str]:
    """The layers that hold parameters, in forward order: the module paths of the layer
    table (:func:`jaxviz.layer_names` at ``shape``) under which ``variables['params']``
    has arrays of the module's own (a container's children count as their own layers).

    Args:
      model: a Linen module.
      variables: its variables.
      shape: the input shape, (N, H, W, C) (or as :func:`jaxviz.layer_names` takes).

    Returns:
      Module paths; layers that the inference pass does not run are not listed.
    """
    checks.variables(variables)
    params = variables.get("params", {})
    table = capture.layer_names(model, tuple(shape))
    paths = [info.path for info in table if _direct_leaves(maps._param_subtree(params, info.path))]
    return list(dict.fromkeys(paths))


def _init(model, key, x):
    return model.init(key, x)["params"]


_init_jit = static_lib.jit(_init, 1)


def _replace(params: Any, fresh: Any, path: Sequence[str]) -> dict:
    """``params`` with the arrays directly under ``path`` taken from ``fresh``."""
    out = dict(params)
    if len(path) == 0:
        for k in _direct_leaves(params):
            new, old = fresh[k], params[k]
            if tuple(new.shape) != tuple(old.shape):
                raise ModelError(f"the model's own initializers give {k!r} the shape "
                                 f"{tuple(new.shape)}, the variables hold {tuple(old.shape)}: "
                                 f"pass the variables made for this model")
            out[k] = jnp.asarray(new, old.dtype)
        return out
    out[path[0]] = _replace(params[path[0]], fresh[path[0]], path[1:])
    return out


def _cascade(model: nn.Module, variables: Any, x: jax.Array, key: Any,
             layers: Sequence[str] | None) -> tuple[list[str], list[Any]]:
    """The layers randomized top-down and the variables after each stage (cumulative)."""
    if key is None:
        raise InputTypeError("randomization draws new weights: pass key=jax.random.key(seed)")
    available = parameter_layers(model, variables, x.shape)
    if not available:
        raise ModelError(f"{type(model).__name__} has no layers with parameters to randomize")
    if layers is None:
        chosen = available
    else:
        names = capture.layer_list(layers)
        table = capture.layer_names(model, tuple(x.shape))
        paths = capture.resolve(model, names, table)
        for name, path in zip(names, paths):
            if path not in available:
                raise LayerError(f"layer {name!r} holds no parameters to randomize; the layers "
                                 f"with parameters are {', '.join(available)}")
        chosen = [p for p in available if p in set(paths)]
    fresh = _init_jit(model, key, x[:1])
    params = variables["params"]
    stages = []
    for path in reversed(chosen):
        params = _replace(params, fresh, path.split("."))
        stages.append({**variables, "params": params})
    return list(reversed(chosen)), stages


def _signed_and_abs(maps: Any, n: int) -> tuple[np.ndarray, np.ndarray]:
    m = _real_array(maps, "the method's maps")
    if m.ndim < 2 or m.shape[0] != n:
        raise InputError(f"expected the attribution method to return (N, ...) maps with N = "
                         f"{n}; got shape {tuple(m.shape)}")
    if m.ndim == 4:
        return render.reduce_channels(m, "sum"), render.reduce_channels(m, "abs_sum")
    return m, np.abs(m)


class Randomization(NamedTuple):
    """The outcome of :func:`randomization_check`.

    Attributes:
      layers: stage k's layer: None for stage 0 (the trained model), then the layer
        randomized last at each stage, from the top (logits) down; stage k has the
        first k of them (after None) randomized.
      spearman: (stages, N) float64 rank correlation of each image's map at that stage
        with its original map, signed maps (channels summed).
      spearman_abs: (stages, N) the same for absolute values (``sum_c |m_c|``).
    """

    layers: tuple[str | None, ...]
    spearman: np.ndarray
    spearman_abs: np.ndarray


@checks.boundary
def randomization_check(model: nn.Module, variables: Any, x: jax.Array, target: Any,
                        method: Method, *, key: jax.Array,
                        layers: Sequence[str] | None = None) -> Randomization:
    """Cascading model-parameter randomization (Adebayo et al. 2018).

    Stage 0 is the trained model; at stage k the top k layers with parameters
    (:func:`parameter_layers`, in reverse forward order: logits first) hold new random
    weights, the layers below keep the trained ones. ``method`` runs at every stage and
    each image's map is compared with its original map by Spearman's rank correlation
    (:func:`spearman`), as Adebayo et al. report it both on the signed map and on its
    absolute value: an (N, H, W, C) map is reduced per pixel by ``sum_c m_c`` (signed)
    and ``sum_c |m_c|`` (absolute); other maps are used as the method returns them (and
    their ``|m|``). A map that explains the model falls towards 0 as the layers are
    randomized; one that stays near 1 does not depend on the weights.

    New weights come from the model's own initializers: one ``model.init(key, x[:1])``
    draws a whole new parameter tree (Flax gives each module a key of its own, folded
    from its path) and stage k takes the randomized layers' arrays from it, so the
    stages are nested and the same key gives the same randomized model. Only
    ``variables['params']`` changes; other collections (BatchNorm statistics) stay.

    Args:
      model: a Linen classifier.
      variables: its trained variables.
      x: (N, H, W, C) images.
      target: what ``method`` explains: an int class, (N,) classes, or anything the
        method takes.
      method: ``method(model, variables, x, target) -> maps``, e.g.
        :func:`jaxviz.attribution.gradient` (bind other arguments with a lambda).
      key: PRNG key of the new weights.
      layers: the layers to randomize (paths or aliases, each holding parameters),
        still top-down whatever the order given; None for every layer with parameters.

    Returns:
      :class:`Randomization`: ``layers`` (stages,), ``spearman`` and ``spearman_abs``
      (stages, N) with ``stages = 1 + len(layers)``; stage 0 is exactly 1.0 (NaN for a
      constant map).

    Raises:
      LayerError: a layer that is unknown or holds no parameters.
      ModelError: a model without parameters, or variables of another model.
      InputTypeError: no key.
      InputError: maps that are not (N, ...); as :func:`jaxviz.checks.batch`.
    """
    x = checks.batch(x, model, images=True)
    n = x.shape[0]
    names, stages = _cascade(model, variables, x, key, layers)
    signed0, abs0 = _signed_and_abs(method(model, variables, x, target), n)
    rho, rho_abs = [spearman(signed0, signed0)], [spearman(abs0, abs0)]
    for stage in stages:
        signed, absolute = _signed_and_abs(method(model, stage, x, target), n)
        rho.append(spearman(signed0, signed))
        rho_abs.append(spearman(abs0, absolute))
    return Randomization((None, *names), np.stack(rho), np.stack(rho_abs))


# --- the report ---------------------------------------------------------------------------------


@jax.jit
def _fold_keys(key, sums):
    return jax.vmap(lambda s: jax.random.fold_in(key, s))(sums)


def _image_keys(key: jax.Array, x: Any) -> jax.Array:
    """One key per image, folded from ``key`` with a checksum of the image's bytes: the
    same image draws the same numbers wherever it sits in whichever process's batch."""
    a = np.ascontiguousarray(np.asarray(x))
    sums = np.array([zlib.crc32(a[i].tobytes()) & 0x7FFFFFFF for i in range(len(a))],
                    np.uint32)
    return _fold_keys(key, to_device(sums, copy=False))


@functools.partial(jax.jit, static_argnums=(1, 2))
def _normal_per_key(keys, shape, dtype):
    return jax.vmap(lambda k: _random.normal(k, shape, dtype))(keys)


@functools.partial(jax.jit, static_argnums=(1,))
def _uniform_per_key(keys, shape):
    return jax.vmap(lambda k: _random.uniform(k, shape))(keys)


def _is_conv(params: Any, path: str) -> bool:
    node = maps._param_subtree(params, path)
    return isinstance(node, Mapping) and getattr(node.get("kernel"), "ndim", 0) == 4


def cam_layer(model: nn.Module, variables: Any, shape: Sequence[int]) -> str:
    """Grad-CAM's default layer: the rectified output of the model's last convolution.

    That output is what the Grad-CAM paper reads as "the last convolutional layer" (its
    Caffe networks apply the ReLU in place, on the convolution's own output). From the
    last layer in forward order with a 4-D ``kernel`` and a spatial output: the ReLU that
    follows it (after a BatchNorm, if one comes first); failing that, the outermost
    module around the convolution whose output is spatial and of the same size (a
    GoogLeNet inception block: its branches' rectified outputs, concatenated).

    Raises:
      LayerError: the model has no convolution.
    """
    params = variables.get("params", {})
    table = capture.layer_names(model, tuple(shape))
    convs = [i for i, info in enumerate(table)
             if len(info.shape) == 4 and _is_conv(params, info.path)]
    if not convs:
        raise LayerError(f"{type(model).__name__} has no convolution layer for Grad-CAM: pass "
                         f"layer= (a spatial layer, see jaxviz.layer_names)")
    last = convs[-1]
    conv = table[last]
    following = table[last + 1:last + 3]
    if following and following[0].kind.startswith("BatchNorm"):
        following = following[1:]
    if following and following[0].kind == "ReLU" and following[0].shape == conv.shape:
        return following[0].path
    by_path = {info.path: info for info in table}
    best = conv.path
    parts = conv.path.split(".")
    for n in range(len(parts) - 1, 0, -1):
        outer = by_path.get(".".join(parts[:n]))
        if outer is None:
            continue
        if len(outer.shape) != 4 or outer.shape[1:3] != conv.shape[1:3]:
            break
        best = outer.path
    return best


def default_settings(shape: Sequence[int]) -> dict[str, dict[str, Any]]:
    """The settings :func:`report` gives the default methods for images of ``shape``
    (N, H, W, C): keyword arguments of the :mod:`jaxviz.attribution` functions.

    SmoothGrad: 50 samples, noise 0.15 of each image's range. Integrated gradients: 50
    steps from a 0 baseline. Occlusion: a window of ``round(min(H, W) / 7)`` px (32 at
    224, as :func:`jaxviz.attribution.occlusion`'s default; 4 at 28), stride half of
    it, baseline 0. Grad-CAM and guided Grad-CAM take ``layer`` from :func:`report`.
    """
    h, w = (int(s) for s in tuple(shape)[1:3])
    window = max(1, round(min(h, w) / 7))
    return {
        "smoothgrad": {"samples": 50, "noise": 0.15, "batch_size": 10},
        "integrated_gradients": {"steps": 50, "batch_size": 25},
        "occlusion": {"window": window, "stride": max(1, window // 2), "baseline": 0.0},
    }


def _default_methods(model: nn.Module, variables: Any, x: jax.Array, key: jax.Array,
                     layer: str | None, names: Sequence[str],
                     options: Mapping[str, Mapping[str, Any]] | None) -> dict[str, Method]:
    """name -> method(model, variables, x, target) with :func:`default_settings`
    overridden by ``options``."""
    A = attribution
    settings = default_settings(x.shape)
    for name, extra in (options or {}).items():
        if name not in names:
            raise InputError(f"options for {name!r}, which is not among the methods run "
                             f"({', '.join(names)})")
        if not isinstance(extra, Mapping):
            raise InputTypeError(f"expected options[{name!r}] as a dict of keyword arguments, "
                                 f"got {type(extra).__name__}")
        settings[name] = {**settings.get(name, {}), **extra}
    if {"grad_cam", "guided_grad_cam"} & set(names):
        cam = layer if layer is not None else cam_layer(model, variables, x.shape)
        for name in ("grad_cam", "guided_grad_cam"):
            settings[name] = {"layer": cam, **settings.get(name, {})}

    def smooth(m, v, t, c, samples=50, **kwargs):
        keys = _image_keys(jax.random.fold_in(key, 1), t)
        eps = _normal_per_key(keys, (checks.positive_int(samples, "samples"), *t.shape[1:]),
                              jnp.dtype(t.dtype))
        return A.smoothgrad(m, v, t, c, noise_samples=jnp.swapaxes(eps, 0, 1), **kwargs)

    functions = {name: getattr(A, name) for name in DEFAULT_METHODS}
    functions["smoothgrad"] = smooth
    out: dict[str, Method] = {}
    for name in names:
        fn, kwargs = functions[name], settings.get(name, {})
        out[name] = (functools.partial(fn, **kwargs) if kwargs else fn)
    return out


def _random_method(key: jax.Array) -> Method:
    def random_map(m, v, t, c):
        keys = _image_keys(key, t)
        return np.asarray(_uniform_per_key(keys, tuple(t.shape[1:3])))
    return random_map


class Row(NamedTuple):
    """One method's line of :func:`report`: means over the images (NaN where a metric was
    not computed, or was undefined for every image).

    Attributes:
      method: the method's name.
      deletion_auc: mean area under the deletion curve (lower is better).
      insertion_auc: mean area under the insertion curve (higher is better).
      pointing: pointing-game accuracy, the fraction of hits (higher is better).
      spearman: mean Spearman correlation of the signed map with the map of the fully
        randomized model (closer to 0 is better: the map depends on the weights).
      spearman_abs: the same for absolute values.
      images: how many images the means are over.
    """

    method: str
    deletion_auc: float
    insertion_auc: float
    pointing: float
    spearman: float
    spearman_abs: float
    images: int


def _mean(per_image: Any) -> float:
    everything = parallel.gather(np.asarray(per_image, np.float64))
    if everything.size == 0 or np.isnan(everything).all():
        return float("nan")
    return float(np.nanmean(everything))


@checks.boundary
def report(model: nn.Module, variables: Any, x: jax.Array, y: Any, *, key: jax.Array,
           methods: Sequence[str] | Mapping[str, Method] | None = None,
           options: Mapping[str, Mapping[str, Any]] | None = None,
           layer: str | None = None, boxes: Any = None, masks: Any = None,
           tolerance: float = 15, step: int | None = None,
           deletion_baseline: float | str | jax.Array = 0.0,
           insertion_baseline: float | str | jax.Array = "blur", blur_sigma: float = 5.0,
           score: str = "prob", batch_size: int | None = None, randomization: bool = True,
           random_baseline: bool = True) -> list[Row]:
    """Every attribution method through every metric: one :class:`Row` per method.

    For each method the maps of ``x`` for the classes ``y`` are computed once and go to
    :func:`deletion`, :func:`insertion` and, given boxes or masks,
    :func:`pointing_game`; with ``randomization`` the method runs once more on the
    model with every parameter layer randomized (the last stage of
    :func:`randomization_check`) and the row holds the mean Spearman correlation with
    the trained model's maps. A last row, ``"random (uniform)"``, scores a uniform
    random map per image (drawn from ``key`` and the image, so it does not depend on
    the model: its randomization correlation is 1), the level a method must beat.

    The default methods are :data:`DEFAULT_METHODS` with :func:`default_settings`
    (SmoothGrad 50 samples, integrated gradients 50 steps, occlusion windows of a
    seventh of the image) unless ``options`` says otherwise; SmoothGrad draws each
    image's noise from ``key`` and the image itself, and Grad-CAM and guided Grad-CAM
    run at ``layer`` (default: :func:`cam_layer`, the last convolution's rectified
    output). Maps (N, H, W, C) count ``sum_c |m_c|`` per pixel.

    Means over images gather every process's images first
    (:func:`jaxviz.parallel.gather`): with ``x`` split between processes, every process
    returns the rows one process would return for all the images.

    Args:
      model: a Linen classifier returning (N, classes) logits.
      variables: its variables.
      x: (N, H, W, C) images.
      y: (N,) int classes (or one int): the target of every method and metric.
      key: PRNG key (noise, random maps, randomized weights).
      methods: names from :data:`DEFAULT_METHODS` (None: all), or a mapping of names to
        ``method(model, variables, x, target) -> maps``.
      options: ``{name: {keyword: value}}`` overriding :func:`default_settings` for
        named default methods, e.g. ``{"smoothgrad": {"samples": 20}}``.
      layer: Grad-CAM's layer (path or alias); None for :func:`cam_layer`.
      boxes, masks, tolerance: the pointing game's objects (:func:`pointing_game`); no
        pointing column without them.
      step, score, batch_size, blur_sigma: as :func:`deletion`.
      deletion_baseline: what deleted pixels become (default 0).
      insertion_baseline: the insertion's start image (default ``"blur"``).
      randomization: whether to run the randomization check.
      random_baseline: whether to add the random-map row.

    Returns:
      A list of :class:`Row`; :func:`format_table` writes it as markdown.

    Raises:
      InputError: an unknown method name; as :func:`deletion` and :func:`pointing_game`.
      InputTypeError: no key; methods of another kind.
      ModelError, LayerError: as :func:`randomization_check` and the methods.
    """
    x = checks.batch(x, model, images=True)
    if key is None:
        raise InputTypeError("report draws noise, random maps and weights: pass "
                             "key=jax.random.key(seed)")
    y = _classes(model, x, y)
    if methods is None:
        methods = DEFAULT_METHODS
    if isinstance(methods, Mapping):
        if options:
            raise InputError("options set the default methods' arguments; with methods as a "
                             "mapping of callables, bind the arguments in the callables")
        chosen = dict(methods)
    elif isinstance(methods, Sequence) and not isinstance(methods, str):
        unknown = [m for m in methods if m not in DEFAULT_METHODS]
        if unknown:
            raise InputError(f"unknown method {unknown[0]!r}; expected names from "
                             f"{', '.join(DEFAULT_METHODS)}, or a mapping of names to "
                             f"method(model, variables, x, target) callables")
        chosen = _default_methods(model, variables, x, key, layer, list(methods), options)
    else:
        raise InputTypeError(f"expected methods as a sequence of names or a mapping of names "
                             f"to callables, got {type(methods).__name__}")
    if random_baseline:
        chosen[RANDOM_BASELINE] = _random_method(jax.random.fold_in(key, 2))
    pointing = boxes is not None or masks is not None
    if pointing:  # the objects and the tolerance, checked before any method runs
        pointing_game(np.zeros(x.shape[:3], np.float32), boxes, masks, tolerance=tolerance)
    if score not in SCORES:
        raise InputError(f"unknown score {score!r}; expected one of {', '.join(SCORES)}")
    randomized = (_cascade(model, variables, x, jax.random.fold_in(key, 0), None)[1][-1]
                  if randomization else None)
    curve_args = dict(step=step, score=score, blur_sigma=blur_sigma, batch_size=batch_size)
    rows = []
    for name, method in chosen.items():
        maps = method(model, variables, x, y)
        per_pixel = pixel_map(maps, f"the maps of {name!r}")
        d = deletion(model, variables, x, per_pixel, y, baseline=deletion_baseline, **curve_args)
        i = insertion(model, variables, x, per_pixel, y, baseline=insertion_baseline,
                      **curve_args)
        hits = (pointing_game(per_pixel, boxes, masks, tolerance=tolerance) if pointing
                else np.full(x.shape[0], np.nan))
        rho = rho_abs = np.full(x.shape[0], np.nan)
        if randomized is not None:
            signed0, abs0 = _signed_and_abs(maps, x.shape[0])
            signed, absolute = _signed_and_abs(method(model, randomized, x, y), x.shape[0])
            rho, rho_abs = spearman(signed0, signed), spearman(abs0, absolute)
        images = int(parallel.gather(np.ones(x.shape[0], np.int64)).sum())
        rows.append(Row(name, _mean(d.auc), _mean(i.auc), _mean(hits), _mean(rho),
                        _mean(rho_abs), images))
    return rows


_COLUMNS = (
    ("method", "method", None),
    ("deletion_auc", "deletion AUC ↓", 3),
    ("insertion_auc", "insertion AUC ↑", 3),
    ("pointing", "pointing ↑", 3),
    ("spearman", "randomized ρ (signed) →0", 3),
    ("spearman_abs", "randomized ρ (abs) →0", 3),
)


def format_table(rows: Sequence[Row]) -> str:
    """``rows`` as a markdown table, one line per method, three decimals; a metric that
    was not computed is shown as "–". Arrows: ↓ lower is better, ↑ higher is better,
    →0 closer to 0 is better.

    Raises:
      InputTypeError: rows that are not :class:`Row`.
    """
    rows = list(rows)
    for r in rows:
        if not isinstance(r, Row):
            raise InputTypeError(f"expected the rows report() returns, got {type(r).__name__}")
    head = "| " + " | ".join(title for _, title, _ in _COLUMNS) + " |"
    rule = "|" + "|".join("---" if digits is None else "---:" for _, _, digits in _COLUMNS) + "|"
    lines = [head, rule]
    for r in rows:
        cells = []
        for field, _, digits in _COLUMNS:
            v = getattr(r, field)
            if digits is None:
                cells.append(str(v))
            else:
                cells.append("–" if v is None or math.isnan(v) else f"{v:.{digits}f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"

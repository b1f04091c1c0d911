"""Perturbation methods: the output's drop when parts of the input are hidden.

References:
  Zeiler & Fergus, "Visualizing and Understanding Convolutional Networks", ECCV 2014
  (occlusion). Captum's ``FeatureAblation`` (Kokhlikyan et al., "Captum: A unified and
  generic model interpretability library for PyTorch", arXiv:2009.07896, 2020) for
  ablation by a label map.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxviz import checks
from jaxviz._host import to_device
from jaxviz.errors import InputError
from jaxviz.attribution import _reuse
from jaxviz.attribution._common import (
    Target, _auto_batch_size, _baseline, _check_choice, _check_x, _compiled, _copies_values,
    _objective, _values_jit)

EDGES: tuple[str, ...] = ("flush", "truncate")


def _occlusion_chunk(model, window, variables, x, baseline, reference, starts, objective):
    """reference - f(x occluded by a window at each of ``starts: (k, 3)``): (k, N).

    A window covers rows ``[r, r + h)``, columns ``[c, c + w)`` and channels
    ``[d, d + cw)``, cut off where it passes the input's edge."""
    wh, ww, wc = window
    rows, cols, chans = (jnp.arange(n) for n in x.shape[1:])

    def occlude(start):
        inside = (((rows >= start[0]) & (rows < start[0] + wh))[:, None, None]
                  & ((cols >= start[1]) & (cols < start[1] + ww))[None, :, None]
                  & ((chans >= start[2]) & (chans < start[2] + wc))[None, None, :])
        return jnp.where(inside[None], baseline, x)

    return reference - _copies_values(model, variables, jax.vmap(occlude)(starts), objective)


_occlusion_jit = _compiled(_occlusion_chunk, 2)
_occlusion_reuse_jit = _compiled(_reuse._occlusion_reuse_chunk, 3)
_cleans_jit = _compiled(_reuse._cleans, 2)


def _ablation_chunk(model, variables, x, baseline, reference, masks, objective):
    """reference - f(x with each of ``masks: (k, N, H, W, C)`` set to the baseline): (k, N)."""
    hidden = jnp.where(masks, baseline[None], x[None])
    return reference - _copies_values(model, variables, hidden, objective)


_ablation_jit = _compiled(_ablation_chunk, 1)


# --- occlusion --------------------------------------------------------------------------------


def _padded(part: np.ndarray, chunk: int) -> np.ndarray:
    """``part`` padded to ``chunk`` rows with copies of its last (their results are
    dropped)."""
    if len(part) == chunk:
        return part
    return np.concatenate([part, np.repeat(part[-1:], chunk - len(part), axis=0)])


def _occlusion_split(model, plan, window, variables, x, b, reference, geo, obj, chunk):
    """The drops of every window on the split path, chunk by chunk; None when the traced
    program turns out not to split exactly (the plain path then runs)."""
    total = len(geo["chan"])
    cleans = _cleans_jit(model, plan.cuts, variables, x)
    drops = []
    for start in range(0, total, chunk):
        part = {name: to_device(_padded(a[start:start + chunk], chunk))
                for name, a in geo.items()}
        try:
            d = _occlusion_reuse_jit(model, plan, window, variables, x, b, reference, cleans,
                                     part, obj)
        except _reuse._NotSplittable:
            return None
        drops.append(d)  # padded rows are dropped by _occlusion_heat
    return drops


def window_positions(length: int, window: int, stride: int, edges: str = "flush") -> list[int]:
    """Start positions of occlusion windows along an axis of ``length``.

    ``0, stride, 2 stride, ...``. ``edges="flush"`` (default) stops at
    ``length - window`` and adds one window flush with the far edge when the stride does
    not land there, so every position is covered and no window hangs off the input.
    ``edges="truncate"`` (Captum's ``Occlusion``) goes on while the previous window
    stopped short of the edge, and the last window is cut off by it:
    ``ceil((length - window) / stride) + 1`` windows.

    Raises:
      ValueError: ``window`` is larger than ``length``, either is not positive, or an
        unknown ``edges``.
    """
    window = checks.positive_int(window, "window")
    stride = checks.positive_int(stride, "stride")
    _check_choice(edges, EDGES, "edges")
    if window > length:
        raise InputError(f"occlusion window {window} is larger than the input ({length})")
    if edges == "truncate":
        return list(range(0, -(-(length - window) // stride) * stride + 1, stride))
    starts = list(range(0, length - window + 1, stride))
    if starts[-1] != length - window:
        starts.append(length - window)
    return starts


def _sizes(value: Any, what: str, channels: int) -> tuple[int, int, int | None]:
    """An int, an (h, w) pair or an (h, w, c) triple as (h, w, c or None)."""
    if isinstance(value, (tuple, list)):
        if len(value) not in (2, 3):
            raise InputError(f"expected {what} as an int, an (h, w) pair or an (h, w, c) "
                             f"triple, got {value!r}")
        out = tuple(checks.positive_int(v, what) for v in value)
        return (out[0], out[1], out[2] if len(out) == 3 else None)
    v = checks.positive_int(value, what)
    return v, v, None


def _cover(starts: list[int], window: int, length: int) -> np.ndarray:
    """(windows, length): which positions each window covers (cut off at the edge)."""
    pos = np.arange(length)[None, :]
    s = np.array(starts)[:, None]
    return (pos >= s) & (pos < s + window)


@functools.partial(jax.jit, static_argnames=("grid_shape", "dtype", "by_channel"))
def _occlusion_heat(drops, cover_r, cover_c, cover_d, count, *, grid_shape, dtype, by_channel):
    """(map, grid) from the chunks' drops, ``(chunk, N)`` each, in (row, col, channel)
    window order (padding rows past the windows are dropped). The map is the mean drop of
    the windows covering each value: the per-axis covers contracted with the grid (one
    einsum), divided by the count. One program: run op by op, these steps compiled some
    15 small programs per input shape."""
    a, b, d, n = grid_shape
    grid = jnp.concatenate(drops)[:a * b * d].reshape(a, b, d, n)
    grid = grid.transpose(3, 0, 1, 2).astype(dtype)                      # (N, a, b, d)
    summed = jnp.einsum("ah,nabd,bw,dc->nhwc", cover_r, grid, cover_c, cover_d)
    heat = (summed / count).astype(dtype)
    if not by_channel:
        heat, grid = heat[..., 0], grid[..., 0]
    return heat, grid


@checks.boundary
def occlusion(model: nn.Module, variables: Any, x: jax.Array, target: Target, *,
              window: int | tuple[int, ...] = 32, stride: int | tuple[int, ...] = 2,
              baseline: float | jax.Array = 0.0, edges: str = "flush",
              batch_size: int | str | None = "auto",
              return_windows: bool = False, reuse: str | Sequence[str] = "auto",
              ) -> jax.Array | tuple[jax.Array, jax.Array]:
    """Occlusion sensitivity (Zeiler & Fergus 2014).

    A ``window`` patch of the input is replaced by ``baseline`` at every position of a
    grid (:func:`window_positions` along each axis), and the output drop
    ``D_w = f(x) - f(x with window w occluded)`` is recorded. The map at a pixel is the
    mean of ``D_w`` over the windows that cover it:
    ``M[n, i, j] = sum_w D_w[n] 1[(i, j) in w] / sum_w 1[(i, j) in w]``.

    Captum's ``Occlusion`` is ``edges="truncate"`` with a window that spans every channel
    (``window=(h, w, C)``); it returns the map repeated over the channels.

    Args:
      model, variables, x, target: as :func:`jaxviz.attribution.gradient`.
      window: window size: an int, (h, w) (every channel), or (h, w, c) (windows of c
        channels, slid along the channel axis too).
      stride: distance between window positions: an int, (h, w) or (h, w, c) (the
        channel stride defaults to the channel window).
      baseline: the occluding value: a scalar or an array that broadcasts to x (the
        window takes the baseline's values at its pixels).
      edges: ``"flush"`` (default: a last window flush with the far edge) or
        ``"truncate"`` (Captum's: the last window cut off by the edge).
      batch_size: windows per compiled chunk (each runs ``batch_size * N`` images);
        ``"auto"`` (default): 64, or on the CPU fewer when x holds more than 4 images, so
        that a chunk runs about 256 images (XLA:CPU runs much larger batches of small
        images up to 3x slower per image); None: every window in one chunk.
      return_windows: also return the raw drops on the window grid.
      reuse: recompute only what each window changes. ``"auto"`` (default): on the CPU,
        on AlexNet, VGG, GoogLeNet and a jaxviz ``Sequential``, the first layers run per
        window only on the crop of the map a window can change, pasted into activations
        of the unoccluded input computed once, when that is estimated to save at least 15 %;
        cut layers chosen by a cost model; on a GPU or TPU the plain path (a batch of
        whole forwards is what those run well). ``"off"``: every copy runs the whole network.
        A layer name or a sequence of names (in forward order): cut there. The result
        is the plain path's up to float rounding (each convolution sums the same
        products in another order). Any other model, or an objective that reads a layer
        before the cuts or is a plain callable, takes the plain path.

    Returns:
      (N, H, W) map in ``x``'s dtype, or (N, H, W, C) when the window has a channel
      size; with ``return_windows``, ``(map, grid)`` where ``grid[n, a, b]`` (``[n, a,
      b, d]`` with channel windows) is ``D`` of the window at row
      ``window_positions(H, ...)[a]``, column ``window_positions(W, ...)[b]``.

    Raises:
      ValueError: window larger than x, a non-positive window, stride or batch_size;
        an unknown ``edges``; a baseline that does not broadcast; as
        :func:`jaxviz.attribution.gradient`.
      TypeError, KeyError: as :func:`jaxviz.attribution.gradient`.
    """
    x = _check_x(model, x, images=True)
    n, h, w, c = x.shape
    wh, ww, wc = _sizes(window, "window", c)
    sh, sw, sc = _sizes(stride, "stride", c)
    by_channel = wc is not None
    if by_channel and wc > c:
        raise InputError(f"occlusion window {wc} channels deep is larger than the input ({c})")
    wc = c if wc is None else wc
    sc = wc if sc is None else sc
    rows = window_positions(h, wh, sh, edges)
    cols = window_positions(w, ww, sw, edges)
    chans = window_positions(c, wc, sc, edges) if by_channel else [0]
    b = _baseline(baseline, x)
    obj = _objective(model, x, target)
    starts = np.array([(r, q, d) for r in rows for q in cols for d in chans], np.int32)
    total = len(starts)
    chunk = _auto_batch_size(batch_size, total, n, 64)
    reference = _values_jit(model, variables, x, obj)
    drops = None
    split = _reuse.plan(model, variables, x.shape, obj, rows, cols, (wh, ww), reuse, chunk)
    if split is not None:
        index = np.indices((len(rows), len(cols), len(chans))).reshape(3, -1)
        geo = _reuse.window_arrays(split[1], index[0], index[1])
        geo["chan"] = starts[:, 2]
        drops = _occlusion_split(model, split[0], (wh, ww, wc), variables, x, b, reference,
                                 geo, obj, chunk)
    if drops is None:
        drops = []
        for start in range(0, total, chunk):
            part = _padded(starts[start:start + chunk], chunk)
            drops.append(_occlusion_jit(model, (wh, ww, wc), variables, x, b, reference,
                                        part, obj))
    dtype = np.dtype(x.dtype)
    cover = [_cover(rows, wh, h), _cover(cols, ww, w), _cover(chans, wc, c)]
    # windows covering each pixel: a product of per-axis counts (numpy's unoptimized
    # three-way einsum took 78 ms here at 224 px, more than the rest of a GPU occlusion)
    rc, cc, dc = (m.sum(axis=0, dtype=np.float64) for m in cover)
    count = rc[:, None, None] * cc[None, :, None] * dc[None, None, :]
    heat, grid = _occlusion_heat(tuple(drops), *(m.astype(dtype) for m in cover),
                                 count.astype(dtype), grid_shape=(len(rows), len(cols),
                                                                  len(chans), n),
                                 dtype=dtype, by_channel=by_channel)
    return (heat, grid) if return_windows else heat


# --- ablation by a label map --------------------------------------------------------------------


@checks.boundary
def feature_ablation(model: nn.Module, variables: Any, x: jax.Array, target: Target, *,
                     mask: Any, baseline: float | jax.Array = 0.0,
                     batch_size: int | str | None = "auto",
                     return_features: bool = False) -> jax.Array | tuple[jax.Array, jax.Array]:
    """The output's drop when each group of input values is set to the baseline.

    ``mask`` labels every input value with a feature number (superpixels, a grid, any
    label map); feature ``j``'s drop is ``D_j = f(x) - f(x with every value labelled j
    replaced by the baseline)``, and every value of the result is its feature's drop
    (Captum's ``FeatureAblation`` with ``feature_mask``).

    Args:
      model, variables, x, target: as :func:`jaxviz.attribution.gradient`.
      mask: int labels >= 0 that broadcast to x's shape: (H, W) or (N, H, W) for
        features across every channel, (H, W, C) or (N, H, W, C) per channel. Labels need
        not be contiguous; each distinct label is one feature.
      baseline: the replacing value: a scalar or an array that broadcasts to x.
      batch_size: features per compiled chunk (each chunk runs ``batch_size * N``
        images); ``"auto"`` (default): 16, or on the CPU fewer when x holds more than 16
        images (about 256 images a chunk, as :func:`occlusion`); None: one chunk.
      return_features: also return the labels and the drops, ``(labels (F,), drops
        (N, F))`` (a feature absent from an example's mask has drop 0).

    Returns:
      An array of x's shape (N, H, W, C), in its dtype; with ``return_features``,
      ``(map, labels, drops)``.

    Raises:
      ValueError: a mask that is not integer, is negative, or does not broadcast to x;
        as :func:`jaxviz.attribution.gradient`.
    """
    x = _check_x(model, x, images=True)
    labels = np.asarray(mask)
    if labels.dtype.kind not in "iu" or labels.size == 0:
        raise InputError(f"expected mask as an array of int labels, got "
                         f"{getattr(labels, 'dtype', type(mask).__name__)}")
    if labels.ndim == 2 or (labels.ndim == 3 and labels.shape[0] == x.shape[0]
                            and labels.shape[1:] == x.shape[1:3]):
        labels = labels[..., None]  # one label for every channel of a pixel
    try:
        labels = np.broadcast_to(labels, x.shape)
    except ValueError:
        raise InputError(f"expected a mask of shape (H, W), (N, H, W), (H, W, C) or "
                         f"(N, H, W, C) for x of shape {tuple(x.shape)}; got "
                         f"{np.asarray(mask).shape}") from None
    if labels.min() < 0:
        raise InputError(f"expected mask labels >= 0, got {labels.min()}")
    features = np.unique(labels)
    b = _baseline(baseline, x)
    obj = _objective(model, x, target)
    total = len(features)
    chunk = _auto_batch_size(batch_size, total, x.shape[0], 16)
    reference = _values_jit(model, variables, x, obj)
    drops = []
    for start in range(0, total, chunk):
        part = features[start:start + chunk]
        k = len(part)
        part = np.concatenate([part, np.full(chunk - k, -1, part.dtype)])  # -1 hides nothing
        masks = to_device(labels[None] == part[:, None, None, None, None], copy=False)
        drops.append(_ablation_jit(model, variables, x, b, reference, masks, obj)[:k])
    drops = jnp.concatenate(drops).T.astype(x.dtype)                     # (N, F)
    present = jnp.asarray((labels[None] == features[:, None, None, None, None])
                          .reshape(total, x.shape[0], -1).any(-1).T)
    drops = jnp.where(present, drops, 0)
    index = to_device(np.searchsorted(features, labels), copy=False)
    heat = jnp.take_along_axis(drops, index.reshape(x.shape[0], -1), axis=1).reshape(x.shape)
    return (heat, jnp.asarray(features), drops) if return_features else heat


__all__ = ["EDGES", "feature_ablation", "occlusion", "window_positions"]

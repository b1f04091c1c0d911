"""Perturbation methods: the output's drop when parts of the input are hidden.

References:
  Zeiler & Fergus, "Visualizing and Understanding Convolutional Networks", ECCV 2014
  (occlusion).
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxviz import checks
from jaxviz.errors import InputError
from jaxviz.attribution._common import (
    Target, _baseline, _check_batch_size, _check_x, _compiled, _copies_values, _objective, _pair,
    _values_jit)


def _occlusion_chunk(model, window, variables, x, baseline, reference, starts, objective):
    """reference - f(x occluded by a window at each of ``starts: (k, 2)``): (k, N)."""
    wh, ww = window
    rows, cols = jnp.arange(x.shape[1]), jnp.arange(x.shape[2])

    def occlude(start):
        inside = (((rows >= start[0]) & (rows < start[0] + wh))[:, None]
                  & ((cols >= start[1]) & (cols < start[1] + ww))[None, :])
        return jnp.where(inside[None, :, :, None], baseline, x)

    return reference - _copies_values(model, variables, jax.vmap(occlude)(starts), objective)


_occlusion_jit = _compiled(_occlusion_chunk, 2)


# --- occlusion --------------------------------------------------------------------------------


def window_positions(length: int, window: int, stride: int) -> list[int]:
    """Start positions of occlusion windows along an axis of ``length``.

    ``0, stride, 2 stride, ...`` up to ``length - window``, plus one window flush
    with the far edge (``length - window``) when the stride does not land there, so
    every position is covered and no window hangs off the image.

    Raises:
      ValueError: ``window`` is larger than ``length``, or either is not positive.
    """
    window = checks.positive_int(window, "window")
    stride = checks.positive_int(stride, "stride")
    if window > length:
        raise InputError(f"occlusion window {window} is larger than the input ({length})")
    starts = list(range(0, length - window + 1, stride))
    if starts[-1] != length - window:
        starts.append(length - window)
    return starts




@checks.boundary
def occlusion(model: nn.Module, variables: Any, x: jax.Array, target: Target, *,
              window: int | tuple[int, int] = 32, stride: int | tuple[int, int] = 2,
              baseline: float | jax.Array = 0.0, batch_size: int = 64,
              return_windows: bool = False) -> jax.Array | tuple[jax.Array, jax.Array]:
    """Occlusion sensitivity (Zeiler & Fergus 2014).

    A ``window`` patch of the input is replaced by ``baseline`` at every position of a
    grid (:func:`window_positions` along each axis: steps of ``stride``, plus a last
    window flush with the edge), and the output drop ``D_w = f(x) - f(x with window w
    occluded)`` is recorded. The map at a pixel is the mean of ``D_w`` over the windows
    that cover it: ``M[n, i, j] = sum_w D_w[n] 1[(i, j) in w] / sum_w 1[(i, j) in w]``.

    Args:
      model, variables, x, target: as :func:`gradient`.
      window: window size, an int or (h, w).
      stride: distance between window positions, an int or (h, w).
      baseline: the occluding value: a scalar or an array that broadcasts to x (the
        window takes the baseline's values at its pixels).
      batch_size: windows per compiled chunk (each runs ``batch_size * N`` images).
      return_windows: also return the raw drops on the window grid.

    Returns:
      (N, H, W) map in ``x``'s dtype; with ``return_windows``, ``(map, grid)`` where
      ``grid[n, a, b]`` is ``D`` of the window at row ``window_positions(H, ...)[a]``,
      column ``window_positions(W, ...)[b]``.

    Raises:
      ValueError: window larger than x, a non-positive window, stride or batch_size;
        a baseline that does not broadcast; as :func:`gradient`.
      TypeError, KeyError: as :func:`gradient`.
    """
    x = _check_x(model, x, images=True)
    wh, ww = _pair(window, "window")
    sh, sw = _pair(stride, "stride")
    n, h, w = x.shape[:3]
    rows, cols = window_positions(h, wh, sh), window_positions(w, ww, sw)
    b = _baseline(baseline, x)
    obj = _objective(model, x, target)
    starts = np.array([(r, c) for r in rows for c in cols], np.int32)
    total = len(starts)
    chunk = _check_batch_size(batch_size, total)
    reference = _values_jit(model, variables, x, obj)
    drops = []
    for start in range(0, total, chunk):
        part = starts[start:start + chunk]
        k = len(part)
        if k < chunk:  # pad with copies of the last window; their drops are dropped
            part = np.concatenate([part, np.repeat(part[-1:], chunk - k, axis=0)])
        d = _occlusion_jit(model, (wh, ww), variables, x, b, reference, jnp.asarray(part), obj)
        drops.append(d[:k])
    grid = jnp.concatenate(drops).reshape(len(rows), len(cols), n).transpose(2, 0, 1)
    grid = grid.astype(x.dtype)
    cover_r = (np.arange(h)[None, :] >= np.array(rows)[:, None]) & \
        (np.arange(h)[None, :] < np.array(rows)[:, None] + wh)          # (nY, H)
    cover_c = (np.arange(w)[None, :] >= np.array(cols)[:, None]) & \
        (np.arange(w)[None, :] < np.array(cols)[:, None] + ww)          # (nX, W)
    count = np.outer(cover_r.sum(0), cover_c.sum(0))
    summed = jnp.einsum("ah,nab,bw->nhw", jnp.asarray(cover_r, x.dtype), grid,
                        jnp.asarray(cover_c, x.dtype))
    heat = (summed / jnp.asarray(count, x.dtype)).astype(x.dtype)
    return (heat, grid) if return_windows else heat


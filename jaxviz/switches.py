"""Max-pooling switches: where each window's maximum came from, and the way back.

Zeiler & Fergus (2014) invert a max-pooling layer approximately by recording, for
every pooling window, the position of its maximum (the *switch*) and, on the way
back, placing each pooled value at its switch and zeros everywhere else
("unpooling"). This module makes both steps explicit, in NHWC and with torch's
conventions, so that a switch computed here equals the index that
``torch.nn.functional.max_pool2d(..., return_indices=True)`` returns:

* a switch is a flat index ``h * W + w`` into the *unpadded* input plane of its
  example and channel (``W`` the input width);
* windows are those of ``torch.nn.MaxPool2d`` with the same ``kernel_size``,
  ``stride``, ``padding`` and ``ceil_mode``; positions in the padding never win;
* within a window the first maximum in row-major order wins a tie; a NaN wins over
  any number, and of several NaNs the last one wins (torch's CPU kernel updates on
  ``value > best or isnan(value)``);
* a window whose entries are all ``-inf`` points at its first position inside the
  input.

Unpooling follows ``torch.nn.functional.max_unpool2d``: when two pooled values share
a switch (overlapping windows that picked the same input position) the one that
comes later in row-major order over the pooled plane is written. When the pooled
values came from :func:`max_pool_with_switches` both are the same input value, so
the choice does not change the result.

Property: for a non-negative input ``x`` (a ReLU output, as before every max pool of
AlexNet and GoogLeNet)::

    y, s = max_pool_with_switches(x, k, stride, padding, ceil_mode)
    max_pool(unpool_with_switches(y, s, x.shape)) == y        # exactly

because every window still holds its own maximum at its switch and everything else
it sees is either 0 or another window's maximum that lay inside it (hence not
larger). With negative values the zeros written around the switches can exceed a
window's maximum and the property fails.

References:
  Zeiler & Fergus, "Visualizing and Understanding Convolutional Networks", ECCV 2014,
  section 2.1 (unpooling with switch variables).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxviz.models import layers
from jaxviz._host import to_device
from jaxviz.errors import InputError

__all__ = ["max_pool_with_switches", "unpool_with_switches"]


def _check_nhwc(x: jax.Array, name: str) -> None:
    if x.ndim != 4:
        raise InputError(f"{name} expects an (N, H, W, C) array, got shape {tuple(x.shape)}")


def max_pool_with_switches(
    x: jax.typing.ArrayLike,
    kernel_size: layers.IntPair,
    stride: layers.IntPair | None = None,
    padding: layers.IntPair = 0,
    ceil_mode: bool = False,
) -> tuple[jax.Array, jax.Array]:
    """``torch.nn.functional.max_pool2d(..., return_indices=True)`` in NHWC.

    Each output is ``y[n, i, j, c] = x[n, h, w, c]`` with ``h * W + w`` the switch of
    window ``(i, j)``: the first maximum in row-major order over the window's
    positions inside the input (see the module docstring for NaN and ``-inf``).

    The windows are visited offset by offset (``kh * kw`` strided slices of the
    padded input), keeping the best value and its index so far; the value is
    selected, not recomputed, so ``jax.grad`` sends each window's cotangent to its
    switch, as torch's backward does (cotangents of windows sharing a switch add
    up). Works under ``jax.jit`` (the pooling parameters are static Python ints) and
    ``jax.vmap``.

    Args:
      x: (N, H, W, C) input, numpy or jax; a float dtype.
      kernel_size: ``k`` or ``(kh, kw)``.
      stride: ``s`` or ``(sh, sw)``; ``None`` means ``kernel_size``, as in torch.
      padding: ``p`` or ``(ph, pw)``, implicit ``-inf`` on both sides; torch requires
        ``p <= k // 2``.
      ceil_mode: round the output size up, letting the last window run past the
        input's end (torch's rule: a window that would start in the right padding is
        dropped).

    Returns:
      ``(y, switches)``: ``y`` (N, H', W', C) in ``x``'s dtype and ``switches``
      (N, H', W', C) int32 flat indices into the (H, W) plane (torch returns int64).
      ``H'`` is :func:`jaxviz.models.layers.pool_output_size`.

    Raises:
      ValueError: ``x`` is not 4-D, is not a float array, or the padding is larger
        than half the kernel.
    """
    x = to_device(x)
    _check_nhwc(x, "max_pool_with_switches")
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise InputError(f"max_pool_with_switches expects a float array, got dtype {x.dtype}")
    kernel = layers.pair(kernel_size)
    strides = layers.pair(stride if stride is not None else kernel_size)
    pads = layers.pair(padding)
    for k, p in zip(kernel, pads):
        if p > k // 2:
            raise InputError(
                f"padding should be at most half the kernel size (torch's rule), got padding "
                f"{pads} for kernel {kernel}")
    return _max_pool_with_switches(x, kernel, strides, pads, bool(ceil_mode))


@functools.partial(jax.jit, static_argnums=(1, 2, 3, 4))
def _max_pool_with_switches(x, kernel, strides, pads, ceil_mode):
    height, width = x.shape[1], x.shape[2]
    (top, bottom), (left, right) = (
        layers.pool_padding(n, k, s, p, ceil_mode)
        for n, k, s, p in zip((height, width), kernel, strides, pads))
    out_h = layers.pool_output_size(height, kernel[0], strides[0], pads[0], ceil_mode)
    out_w = layers.pool_output_size(width, kernel[1], strides[1], pads[1], ceil_mode)

    neg_inf = jnp.asarray(-jnp.inf, x.dtype)
    xp = jnp.pad(x, ((0, 0), (top, bottom), (left, right), (0, 0)), constant_values=neg_inf)
    # Window (i, j) covers padded rows i*sh .. i*sh + kh - 1, input rows minus `top`.
    row0 = np.arange(out_h) * strides[0] - top
    col0 = np.arange(out_w) * strides[1] - left
    # torch starts from the window's first position inside the input.
    first = np.maximum(row0, 0)[:, None] * width + np.maximum(col0, 0)[None, :]
    best_val = jnp.full((x.shape[0], out_h, out_w, x.shape[3]), neg_inf)
    best_idx = jnp.broadcast_to(jnp.asarray(first, jnp.int32)[None, :, :, None], best_val.shape)
    for di in range(kernel[0]):
        for dj in range(kernel[1]):
            v = xp[:, di: di + (out_h - 1) * strides[0] + 1: strides[0],
                   dj: dj + (out_w - 1) * strides[1] + 1: strides[1], :]
            idx = (row0 + di)[:, None] * width + (col0 + dj)[None, :]
            better = (v > best_val) | jnp.isnan(v)
            best_val = jnp.where(better, v, best_val)
            best_idx = jnp.where(better, jnp.asarray(idx, jnp.int32)[None, :, :, None], best_idx)
    return best_val, best_idx


def unpool_with_switches(
    y: jax.typing.ArrayLike,
    switches: jax.typing.ArrayLike,
    input_shape: Sequence[int],
) -> jax.Array:
    """Places every pooled value at its switch and zeros elsewhere (``max_unpool2d``).

    ``x_hat[n, h, w, c] = y[n, i, j, c]`` for the last ``(i, j)`` in row-major order
    with ``switches[n, i, j, c] == h * W + w``, and 0 where no switch points. This is
    torch's ``max_unpool2d`` (whose CPU loop writes in that order), computed without
    relying on the order of a scatter: a scatter-max of the pooled positions finds
    each input position's last writer, then ``y`` is gathered from it.

    Differentiable in ``y``: the gradient of a pooled value is the cotangent at its
    switch, or 0 when a later window wrote over it (torch's backward gives every
    pooled value the cotangent at its switch, winner or not; the two agree when no
    two windows share a switch). Works under ``jax.jit`` with ``input_shape`` static.

    Args:
      y: (N, H', W', C) pooled values.
      switches: (N, H', W', C) integer flat indices ``h * W + w`` into the (H, W) plane,
        as :func:`max_pool_with_switches` returns.
      input_shape: ``(H, W)`` or the full ``(N, H, W, C)`` of the pooled input.

    Returns:
      (N, H, W, C) array in ``y``'s dtype.

    Raises:
      ValueError: shapes disagree, ``switches`` is not an integer array, or (outside
        ``jax.jit``) a switch lies outside ``[0, H * W)``; under ``jax.jit`` such a
        switch is dropped instead.
    """
    y, switches = to_device(y), to_device(switches)
    _check_nhwc(y, "unpool_with_switches")
    if switches.shape != y.shape:
        raise InputError(
            f"unpool_with_switches expects switches of the pooled shape {tuple(y.shape)}, "
            f"got {tuple(switches.shape)}")
    if not jnp.issubdtype(switches.dtype, jnp.integer):
        raise InputError(f"switches must be integers, got dtype {switches.dtype}")
    shape = tuple(int(s) for s in input_shape)
    if len(shape) == 4:
        if shape[0] != y.shape[0] or shape[3] != y.shape[3]:
            raise InputError(
                f"input_shape {shape} does not match the pooled batch and channels "
                f"{(y.shape[0], y.shape[3])}")
        shape = shape[1:3]
    if len(shape) != 2 or min(shape) < 1:
        raise InputError(f"input_shape must be (H, W) or (N, H, W, C), got {tuple(input_shape)}")
    height, width = shape
    plane = height * width
    if switches.size:
        try:  # two scalars to the host, not the whole array
            lo, hi = int(jnp.min(switches)), int(jnp.max(switches))
        except jax.errors.ConcretizationTypeError:  # traced: out-of-range ones are dropped
            lo, hi = 0, 0
        if lo < 0 or hi >= plane:
            raise InputError(
                f"switches must lie in [0, {plane}) for an input plane of {height}x{width}, "
                f"got values in [{lo}, {hi}]")

    return _unpool(y, switches, height, width)


@functools.partial(jax.jit, static_argnums=(2, 3))
def _unpool(y, switches, height, width):
    plane = height * width
    n, out_h, out_w, c = y.shape
    flat_sw = switches.reshape(n, out_h * out_w, c).astype(jnp.int32)
    # Invalid switches (only reachable under jit) go to index `plane` and are dropped.
    flat_sw = jnp.where((flat_sw >= 0) & (flat_sw < plane), flat_sw, plane)
    pos = jnp.broadcast_to(jnp.arange(out_h * out_w, dtype=jnp.int32)[None, :, None], flat_sw.shape)
    batch = jnp.arange(n)[:, None, None]
    chan = jnp.arange(c)[None, None, :]
    writer = jnp.full((n, plane, c), -1, jnp.int32)
    writer = writer.at[batch, flat_sw, chan].max(pos, mode="drop")
    flat_y = y.reshape(n, out_h * out_w, c)
    gathered = jnp.take_along_axis(flat_y, jnp.maximum(writer, 0), axis=1)
    x_hat = jnp.where(writer >= 0, gathered, jnp.zeros((), y.dtype))
    return x_hat.reshape(n, height, width, c)

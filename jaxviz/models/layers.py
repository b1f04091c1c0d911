"""Torch-exact tensor operations in NHWC, as pure functions.

Each function computes what the torch layer of the same name computes, including
its edge cases: torch's output-size arithmetic for ``ceil_mode`` pooling, the bin
edges of adaptive average pooling, and batch normalization in inference and training
modes. Layouts are NHWC for activations, HWIO for convolution kernels and (in, out)
for linear kernels.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.custom_derivatives import SymbolicZero

from jaxviz.errors import InputError

IntPair = int | Sequence[int]


def pair(v: IntPair) -> tuple[int, int]:
    """``3 -> (3, 3)``; ``(3, 5) -> (3, 5)``."""
    if isinstance(v, int):
        return (v, v)
    v = tuple(int(t) for t in v)
    if len(v) != 2:
        raise InputError(f"expected an int or a pair of ints, got {v!r}")
    return v


def conv2d(
    x: jax.Array,
    kernel: jax.Array,
    bias: jax.Array | None = None,
    *,
    stride: IntPair = 1,
    padding: IntPair = 0,
    dilation: IntPair = 1,
    groups: int = 1,
    precision: lax.PrecisionLike = None,
) -> jax.Array:
    """``torch.nn.functional.conv2d`` with zero padding, in NHWC.

    Args:
      x: (N, H, W, C_in).
      kernel: (kh, kw, C_in // groups, C_out), torch's (C_out, C_in, kh, kw) transposed
        by ``(2, 3, 1, 0)``.
      bias: (C_out,) or None.
      stride, padding, dilation: ints or (h, w) pairs, as in torch (symmetric padding).
      groups: feature groups.
      precision: passed to ``lax.conv_general_dilated``.

    Returns:
      (N, H', W', C_out) with ``H' = (H + 2p - d (k - 1) - 1) // s + 1``.

    The value is ``lax.conv_general_dilated``'s, to the order of summation. On the CPU
    backend, for ungrouped, undilated convolutions:

    - a convolution whose output map is tiny (:func:`_tiny_map`: a row or column of
      one, or no more positions than the kernel has taps) is computed by
      :func:`conv2d_as_patches`, one matrix product. XLA:CPU runs such convolutions
      10-200x below its usual speed (VGG16's 3x3 convolutions on a 2x3 map, at a
      32x48 input: 0.3 GFLOP/s, against 35-130 at 4x6; docs/architecture.md);
    - otherwise the derivative with respect to ``x`` of a strided convolution is taken
      through :func:`conv2d_as_valid`, the same sum written as a stride-1 convolution,
      whose transpose XLA:CPU runs 2.3-4x faster than the transpose of the strided one
      (AlexNet's and GoogLeNet's first layers). The gradient agrees with the plain one
      to rounding; forward and reverse mode both work.
    """
    stride, padding, dilation = pair(stride), pair(padding), pair(dilation)
    dtype = jnp.result_type(x, kernel)
    x, kernel = x.astype(dtype), kernel.astype(dtype)
    plain = groups == 1 and dilation == (1, 1) and jax.default_backend() == "cpu"
    if plain and _tiny_map(x.shape, kernel.shape, stride, padding):
        y = conv2d_as_patches(x, kernel, stride, padding, precision)
    elif plain and stride != (1, 1):
        y = _conv_fast_transpose(x, kernel, stride, padding, precision)
    else:
        y = _conv_direct(x, kernel, stride, padding, precision, dilation, groups)
    if bias is not None:
        y = y + bias
    return y


def _conv_direct(x, kernel, stride, padding, precision, dilation=(1, 1), groups=1):
    (ph, pw) = padding
    return lax.conv_general_dilated(
        x, kernel, window_strides=stride, padding=((ph, ph), (pw, pw)),
        rhs_dilation=dilation, dimension_numbers=("NHWC", "HWIO", "NHWC"),
        feature_group_count=groups, precision=precision)


def _tiny_map(x_shape, kernel_shape, stride, padding) -> bool:
    """Whether a convolution's output map is one XLA:CPU runs far below its usual speed:
    a single row or column, or no more positions than the kernel has taps (measured:
    10-200x slower than :func:`conv2d_as_patches` there, 0.5-2x elsewhere)."""
    (kh, kw), (sh, sw), (ph, pw) = kernel_shape[:2], stride, padding
    ho = (x_shape[1] + 2 * ph - kh) // sh + 1
    wo = (x_shape[2] + 2 * pw - kw) // sw + 1
    return kh * kw > 1 and ho > 0 and wo > 0 and (min(ho, wo) == 1 or ho * wo <= kh * kw)


def conv2d_as_patches(x: jax.Array, kernel: jax.Array, stride: IntPair = 1,
                      padding: IntPair = 0, precision: lax.PrecisionLike = None) -> jax.Array:
    """The strided, padded ``conv2d`` (no bias) as one matrix product: the ``kh * kw``
    shifted, strided views of the zero-padded input side by side on the channel axis
    (``(N, H', W', kh * kw * C)``, tap-major), times the kernel as a
    ``(kh * kw * C, C_out)`` matrix. Equal to :func:`conv2d` up to the order of
    summation; meant for small output maps, where the patches are small.

    Compiled as one program (per shape and settings), also when called eagerly: run op
    by op, its ``kh * kw`` slices would each compile on their own (121 for an 11 x 11
    kernel)."""
    return _conv2d_as_patches(x, kernel, pair(stride), pair(padding), precision)


@functools.partial(jax.jit, static_argnums=(2, 3, 4))
def _conv2d_as_patches(x, kernel, stride, padding, precision):
    (ph, pw) = padding
    kh, kw, c, o = kernel.shape
    xp = jnp.pad(x, ((0, 0), (ph, ph), (pw, pw), (0, 0)))
    patches = _patches(xp, (kh, kw), stride)
    return jnp.matmul(patches, kernel.reshape(kh * kw * c, o), precision=precision)


@functools.partial(jax.custom_jvp, nondiff_argnums=(1, 2))
def _patches(xp, window, stride):
    """The ``kh * kw`` strided views of ``xp`` side by side on the channel axis
    (``(N, H', W', kh * kw * C)``, tap-major), as strided slices joined in one
    concatenation. Its derivative is the same map written as one gather
    (:func:`_gathered_patches`), whose transpose XLA emits as one scatter-add: the
    transposes of the slices would be ``kh * kw`` padded copies, each a kernel of its own
    (on XLA:CPU, a compiled program's cost grows with its kernels: LeNet-digits' input
    gradient compiled in 1.26 s that way and takes 0.75-0.9 s, and runs about 30%
    faster)."""
    (kh, kw), (sh, sw) = window, stride
    n, hp, wp, c = xp.shape
    ho, wo = (hp - kh) // sh + 1, (wp - kw) // sw + 1
    taps = [lax.slice(xp, (0, i, j, 0), (n, i + sh * (ho - 1) + 1, j + sw * (wo - 1) + 1, c),
                      (1, sh, sw, 1))
            for i in range(kh) for j in range(kw)]
    return taps[0] if len(taps) == 1 else jnp.concatenate(taps, axis=-1)


def _gathered_patches(xp, window, stride):
    """:func:`_patches` as one gather of the flattened map (equal values)."""
    (kh, kw), (sh, sw) = window, stride
    n, hp, wp, c = xp.shape
    ho, wo = (hp - kh) // sh + 1, (wp - kw) // sw + 1
    rows = (np.arange(ho) * sh)[:, None, None, None] + np.arange(kh)[None, None, :, None]
    cols = (np.arange(wo) * sw)[None, :, None, None] + np.arange(kw)[None, None, None, :]
    index = (rows * wp + cols).reshape(ho, wo, kh * kw)  # tap-major, as the slices
    flat = xp.reshape(n, hp * wp, c)
    return flat.at[:, index].get(mode="promise_in_bounds").reshape(n, ho, wo, kh * kw * c)


@_patches.defjvp
def _patches_jvp(window, stride, primals, tangents):
    (xp,), (t,) = primals, tangents
    return _patches(xp, window, stride), _gathered_patches(t, window, stride)


def conv2d_as_valid(x: jax.Array, kernel: jax.Array, stride: IntPair = 1,
                    padding: IntPair = 0, precision: lax.PrecisionLike = None) -> jax.Array:
    """The strided, padded ``conv2d`` (no bias) as a stride-1 VALID convolution.

    The input is zero-padded (or cropped) to exactly the rows and columns the output
    reads, then, for a stride ``s > 1``, rearranged space-to-depth: each ``s x s`` block
    of pixels becomes one pixel with ``s * s * C`` channels. The kernel, zero-padded to a
    multiple of ``s``, is rearranged the same way, so that every product of the strided
    convolution appears once and the added ones are products with zero. Equal to
    :func:`conv2d` up to the order of summation.
    """
    (sh, sw), (ph, pw) = pair(stride), pair(padding)
    n, h, w, c = x.shape
    kh, kw, _, o = kernel.shape
    ho, wo = (h + 2 * ph - kh) // sh + 1, (w + 2 * pw - kw) // sw + 1
    qh, qw = -(-kh // sh), -(-kw // sw)
    hz, wz = ho + qh - 1, wo + qw - 1
    zero = jnp.zeros((), x.dtype)
    # lax.pad crops where the high padding is negative.
    x = lax.pad(x, zero, ((0, 0, 0), (ph, sh * hz - h - ph, 0), (pw, sw * wz - w - pw, 0),
                          (0, 0, 0)))
    if (sh, sw) != (1, 1):
        x = x.reshape(n, hz, sh, wz, sw, c).transpose(0, 1, 3, 2, 4, 5)
        x = x.reshape(n, hz, wz, sh * sw * c)
        kernel = jnp.pad(kernel, ((0, qh * sh - kh), (0, qw * sw - kw), (0, 0), (0, 0)))
        kernel = kernel.reshape(qh, sh, qw, sw, c, o).transpose(0, 2, 1, 3, 4, 5)
        kernel = kernel.reshape(qh, qw, sh * sw * c, o)
    return lax.conv_general_dilated(x, kernel, (1, 1), "VALID",
                                    dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                    precision=precision)


@functools.partial(jax.custom_jvp, nondiff_argnums=(2, 3, 4))
def _conv_fast_transpose(x, kernel, stride, padding, precision):
    return _conv_direct(x, kernel, stride, padding, precision)


@functools.partial(_conv_fast_transpose.defjvp, symbolic_zeros=True)
def _conv_fast_transpose_jvp(stride, padding, precision, primals, tangents):
    x, kernel = primals
    tx, tk = tangents
    y = _conv_direct(x, kernel, stride, padding, precision)
    ty = jnp.zeros_like(y)
    if not isinstance(tx, SymbolicZero):
        ty = conv2d_as_valid(tx, kernel, stride, padding, precision)
    if not isinstance(tk, SymbolicZero):
        ty = ty + _conv_direct(x, tk, stride, padding, precision)
    return y, ty


def linear(x: jax.Array, kernel: jax.Array, bias: jax.Array | None = None, *,
           precision: lax.PrecisionLike = None) -> jax.Array:
    """``torch.nn.functional.linear`` with the kernel stored (in, out)."""
    y = jnp.matmul(x, kernel, precision=precision)
    if bias is not None:
        y = y + bias
    return y


def pool_output_size(size: int, kernel: int, stride: int, padding: int, ceil_mode: bool,
                     dilation: int = 1) -> int:
    """Output length of torch's max/avg pooling along one axis.

    ``(size + 2p - d (k - 1) - 1) / s + 1`` rounded down, or up with ``ceil_mode``, where
    a last window that would start inside the right padding is dropped (torch's rule).
    """
    span = size + 2 * padding - dilation * (kernel - 1) - 1
    if span < 0:
        raise InputError(
            f"pooling window {kernel} (dilation {dilation}, padding {padding}) is larger "
            f"than the padded input of length {size}")
    out = (-(-span // stride) if ceil_mode else span // stride) + 1
    if ceil_mode and (out - 1) * stride >= size + padding:
        out -= 1
    return out


def pool_padding(size: int, kernel: int, stride: int, padding: int, ceil_mode: bool,
                 dilation: int = 1) -> tuple[int, int]:
    """(before, after) padding that makes a VALID window reduction give torch's size.

    torch pads ``padding`` on both sides and, in ``ceil_mode``, lets the last window
    run past the end; the extra positions are filled like the padding (``-inf`` for
    max pooling), so they never win.
    """
    out = pool_output_size(size, kernel, stride, padding, ceil_mode, dilation)
    after = (out - 1) * stride + dilation * (kernel - 1) + 1 - size - padding
    return padding, max(after, 0)


def adaptive_pool_bins(size: int, out: int) -> list[tuple[int, int]]:
    """torch's bins for adaptive pooling: ``[floor(i*size/out), ceil((i+1)*size/out))``."""
    if size < 1 or out < 1:
        raise InputError(f"adaptive pooling needs positive sizes, got input {size}, output {out}")
    return [((i * size) // out, -(-((i + 1) * size) // out)) for i in range(out)]


def _adaptive_matrix(size: int, out: int, dtype) -> np.ndarray:
    m = np.zeros((out, size), dtype=np.float64)
    for i, (a, b) in enumerate(adaptive_pool_bins(size, out)):
        m[i, a:b] = 1.0 / (b - a)
    return m.astype(dtype)


def adaptive_avg_pool2d(x: jax.Array, output_size: IntPair) -> jax.Array:
    """``torch.nn.functional.adaptive_avg_pool2d`` in NHWC.

    Output cell ``(i, j)`` is the mean of the input over rows
    ``[floor(i H / h), ceil((i + 1) H / h))`` and the same rule for columns; bins
    overlap when ``H`` is not a multiple of ``h`` and repeat rows when ``H < h``.
    Computed as two small averaging matrices applied to the rows and the columns.
    """
    oh, ow = pair(output_size)
    _, h, w, _ = x.shape
    if (h, w) == (oh, ow):
        return x
    if (oh, ow) == (1, 1):
        return jnp.mean(x, axis=(1, 2), keepdims=True)
    rows = jnp.asarray(_adaptive_matrix(h, oh, x.dtype))
    cols = jnp.asarray(_adaptive_matrix(w, ow, x.dtype))
    return jnp.einsum("ph,nhwc,qw->npqc", rows, x, cols, precision=lax.Precision.HIGHEST)


def batch_norm(
    x: jax.Array,
    mean: jax.Array,
    var: jax.Array,
    scale: jax.Array,
    bias: jax.Array,
    eps: float,
) -> jax.Array:
    """Inference batch normalization, ``(x - mean) / sqrt(var + eps) * scale + bias``.

    Evaluated as torch's CPU kernel does: ``x * a + (bias - mean * a)`` with
    ``a = scale / sqrt(var + eps)``.
    """
    a = scale * lax.rsqrt(var + jnp.asarray(eps, var.dtype))
    return x * a + (bias - mean * a)


def batch_statistics(x: jax.Array) -> tuple[jax.Array, jax.Array, int]:
    """Mean and biased variance over (N, H, W) of ``x: (N, H, W, C)``, and the count."""
    n = math.prod(x.shape[:-1])
    mean = jnp.mean(x, axis=tuple(range(x.ndim - 1)))
    var = jnp.mean(jnp.square(x - mean), axis=tuple(range(x.ndim - 1)))
    return mean, var, n

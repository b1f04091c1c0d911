"""Image regularizers (priors) for feature synthesis: ``penalty(x) -> (N,)``.

Each function maps a batch ``x: (N, H, W, C)`` to one non-negative penalty per image;
a synthesis loop minimizes ``-objective + sum_k weight_k * penalty_k``, with weights
given as plain floats: ``regularizers=[(1e-3, total_variation), (0.5, edge_energy)]``.

- :func:`l1`, :func:`l2`: distance to a constant (lucid's ``L1``/``L2``).
- :func:`color_magnitude`: mean squared distance of each pixel's colour from mid-grey
  (a penalty on strong colours, for images in [0, 1] units).
- :func:`total_variation`: sum of absolute differences of neighbouring pixels.
- :func:`edge_energy`: the multi-scale edge energy
  ``h(x) = sum_s ||d^s(x) - g * d^s(x)||^2`` with ``g`` a 5x5 Gaussian (sigma 1, zero
  padding 2) and ``d`` a 2x2 average pool with zero padding 1, over scales while the
  smaller side exceeds 5 pixels, channels treated as separate images and summed.
- :func:`scharr`: mean squared Scharr gradient magnitude per channel (valid positions).
- :func:`blur`: ``0.5 ||x - stop_gradient(blur3x3(x))||^2`` (lucid's
  ``blur_input_each_step``): a pull towards a blurred copy.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from jaxviz.errors import InputError, InputTypeError

Regularizer = Callable[[jax.Array], jax.Array]


def _check(x: jax.Array, what: str) -> jax.Array:
    if x.ndim != 4:
        raise InputError(f"{what} expects a batch of images (N, H, W, C), got shape "
                         f"{tuple(x.shape)}")
    return x


def _depthwise(x: jax.Array, kernel: np.ndarray, padding) -> jax.Array:
    """Each channel of ``x (N, H, W, C)`` convolved (cross-correlated) with ``kernel (kh, kw)``."""
    c = x.shape[-1]
    k = jnp.asarray(np.broadcast_to(kernel[:, :, None, None], (*kernel.shape, 1, c)), x.dtype)
    return lax.conv_general_dilated(x, k, (1, 1), padding, dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                    feature_group_count=c, precision=lax.Precision.HIGHEST)


def _per_image(v: jax.Array) -> jax.Array:
    return v.reshape(v.shape[0], -1).sum(axis=1)


def l1(x: jax.Array, constant: float = 0.0) -> jax.Array:
    """``sum |x - constant|`` per image."""
    return _per_image(jnp.abs(_check(x, "l1") - constant))


def l2(x: jax.Array, constant: float = 0.0, epsilon: float = 1e-6) -> jax.Array:
    """``sqrt(epsilon + sum (x - constant)^2)`` per image."""
    return jnp.sqrt(epsilon + _per_image((_check(x, "l2") - constant) ** 2))


def color_magnitude(x: jax.Array) -> jax.Array:
    """``mean_{h, w} sum_c (x[h, w, c] - 0.5)^2`` per image: the squared distance of each
    pixel's colour from mid-grey, for images in [0, 1] units."""
    return ((_check(x, "color_magnitude") - 0.5) ** 2).sum(-1).mean(axis=(1, 2))


def total_variation(x: jax.Array) -> jax.Array:
    """``sum |x[h+1, w] - x[h, w]| + sum |x[h, w+1] - x[h, w]|`` per image."""
    x = _check(x, "total_variation")
    return _per_image(jnp.abs(jnp.diff(x, axis=1))) + _per_image(jnp.abs(jnp.diff(x, axis=2)))


def _gaussian_5x5() -> np.ndarray:
    k = np.exp(-np.array([-2.0, -1.0, 0.0, 1.0, 2.0]) ** 2 / 2)
    k = np.outer(k, k)
    return k / k.sum()


def edge_energy(x: jax.Array) -> jax.Array:
    """Multi-scale edge energy per image (see the module docstring)."""
    u = _check(x, "edge_energy")
    g = _gaussian_5x5()
    total = jnp.zeros((u.shape[0],), u.dtype)
    while min(u.shape[1], u.shape[2]) > 5:
        blurry = _depthwise(u, g, ((2, 2), (2, 2)))
        total = total + _per_image((u - blurry) ** 2)
        u = lax.reduce_window(u, 0.0, lax.add, (1, 2, 2, 1), (1, 2, 2, 1),
                              ((0, 0), (1, 1), (1, 1), (0, 0))) / 4.0
    return total


SCHARR_X = np.array([[3.0, 0.0, -3.0], [10.0, 0.0, -10.0], [3.0, 0.0, -3.0]])


def scharr(x: jax.Array) -> jax.Array:
    """``mean_{h, w, c} (gx^2 + gy^2)`` with the Scharr kernels, valid positions, per image."""
    x = _check(x, "scharr")
    gx = _depthwise(x, SCHARR_X, "VALID")
    gy = _depthwise(x, SCHARR_X.T, "VALID")
    return (gx * gx + gy * gy).mean(axis=(1, 2, 3))


_BLUR_3X3 = np.array([[1.0, 2.0, 1.0], [2.0, 4.0, 2.0], [1.0, 2.0, 1.0]])


def blur(x: jax.Array) -> jax.Array:
    """``0.5 sum (x - stop_gradient(b(x)))^2`` per image, ``b`` a 3x3 binomial blur
    normalized at the borders."""
    x = _check(x, "blur")
    ones = jnp.ones((1, *x.shape[1:3], 1), x.dtype)
    b = _depthwise(x, _BLUR_3X3, "SAME") / _depthwise(ones, _BLUR_3X3, "SAME")
    return 0.5 * _per_image((x - lax.stop_gradient(b)) ** 2)


def as_regularizers(spec: Any) -> tuple[tuple[float, Regularizer], ...]:
    """``None``, or a sequence of ``(weight, penalty)`` pairs, checked."""
    if spec is None:
        return ()
    if not isinstance(spec, (list, tuple)):
        raise InputTypeError(f"expected regularizers as a sequence of (weight, penalty) pairs, got "
                        f"{type(spec).__name__}")
    out = []
    for item in spec:
        if (not isinstance(item, (list, tuple)) or len(item) != 2 or not callable(item[1])
                or isinstance(item[0], bool) or not isinstance(item[0], (int, float))):
            raise InputTypeError(f"expected each regularizer as a (float weight, penalty(x) -> (N,)) "
                            f"pair, got {item!r}")
        out.append((float(item[0]), item[1]))
    return tuple(out)


def total(x: jax.Array, regularizers: Sequence[tuple[float, Regularizer]]) -> jax.Array:
    """``sum_k weight_k * penalty_k(x)``: (N,)."""
    out = jnp.zeros((x.shape[0],), x.dtype)
    for w, f in regularizers:
        out = out + w * f(x)
    return out


__all__ = ["Regularizer", "SCHARR_X", "as_regularizers", "blur", "color_magnitude",
           "edge_energy", "l1", "l2", "scharr", "total", "total_variation"]

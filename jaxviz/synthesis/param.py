"""Image parameterizations: what a synthesis loop optimizes, and how it becomes an image.

A parameterization is a small frozen object with three methods:

- ``init(key, shape) -> params``: parameters for one image of ``shape = (H, W)``;
  a batch is made by ``jax.vmap`` over per-image keys, so image ``n`` of a batch
  depends only on its own key (a sweep gives the same images whatever its chunking);
- ``image(params) -> (..., H, W, 3)``: the image, batched or not;
- ``from_image(image) -> params``: parameters whose image is ``image`` (to start from a
  user's picture, and to carry an image from one octave to the next).

:class:`Pixels` optimizes pixel values directly (optionally through a sigmoid, or as
raw model-space values with a per-channel scale and offset). :class:`Fourier`
optimizes a 1/f-scaled spectrum with decorrelated colour (Olah, Mordvintsev &
Schubert, "Feature Visualization", Distill 2017; the defaults follow lucid's
``image(size, fft=True, decorrelate=True, sd=0.01)``).
"""

from __future__ import annotations

import dataclasses
import numbers
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxviz import _random
from jaxviz.errors import InputError, InputTypeError

# Square root of the colour correlation of ImageNet pixels (in its SVD form), as used by
# Olah et al. 2017: multiplying decorrelated values by it gives correlated RGB.
COLOR_CORRELATION_SQRT = np.array(
    [[0.26, 0.09, 0.02],
     [0.27, 0.00, -0.05],
     [0.27, -0.09, 0.03]], np.float64)
_COLOR_NORMALIZED = COLOR_CORRELATION_SQRT / np.max(np.linalg.norm(COLOR_CORRELATION_SQRT, axis=0))

ACTIVATIONS = ("sigmoid", "clip", "none")


def image_size(shape: Any) -> tuple[int, int]:
    """``(H, W)`` from an int or a pair of ints, checked (InputError, a ValueError, otherwise)."""
    if isinstance(shape, numbers.Integral) and not isinstance(shape, bool):
        shape = (int(shape), int(shape))
    try:
        h, w = (int(s) for s in shape)
    except (TypeError, ValueError):
        raise InputError(f"expected an image size as an int or (H, W), got {shape!r}") from None
    if h < 1 or w < 1:
        raise InputError(f"expected a positive image size, got {(h, w)}")
    return h, w


def _check_activation(activation: str) -> str:
    if activation not in ACTIVATIONS:
        raise InputError(f"unknown activation {activation!r}; expected one of "
                         f"{', '.join(ACTIVATIONS)}")
    return activation


def _squash(t: jax.Array, activation: str) -> jax.Array:
    if activation == "sigmoid":
        return jax.nn.sigmoid(t)
    if activation == "clip":
        return jnp.clip(t, 0.0, 1.0)
    return t


def _unsquash(image: jax.Array, activation: str) -> jax.Array:
    if activation == "sigmoid":
        eps = 1e-4 if image.dtype == jnp.float32 else 1e-12
        p = jnp.clip(image, eps, 1 - eps)
        return jnp.log(p) - jnp.log1p(-p)
    return image


def _check_image(image: Any) -> jax.Array:
    image = jnp.asarray(image)
    if image.ndim < 3 or image.shape[-1] != 3:
        raise InputError(f"expected an RGB image (..., H, W, 3), got shape {tuple(image.shape)}")
    if not jnp.issubdtype(image.dtype, jnp.floating):
        raise InputTypeError(f"expected a float image in [0, 1] units, got dtype {image.dtype}")
    return image


@dataclasses.dataclass(frozen=True)
class Pixels:
    """Pixel values as parameters: ``image = act(params * scale + offset)``.

    Attributes:
      low, high: initial values are drawn uniformly from ``[low, high)`` in parameter
        units (``high == low`` starts from a constant image).
      std: when given, initial values are drawn from N(0, std^2) instead.
      activation: "sigmoid" (image in (0, 1)), "clip" (clipped to [0, 1] on the way to
        the image; the parameters themselves are not clipped) or "none".
      scale, offset: per-channel (3,) or scalar affine map applied before the
        activation. With ``scale=IMAGENET_STD, offset=IMAGENET_MEAN`` and no activation,
        the parameters are the model's normalized input and the image is in [0, 1] units.
      dtype: parameter dtype.
    """

    low: float = -1.0
    high: float = 1.0
    std: float | None = None
    activation: str = "none"
    scale: Any = 1.0
    offset: Any = 0.0
    dtype: Any = jnp.float32

    def __post_init__(self):
        _check_activation(self.activation)
        if not self.high >= self.low:
            raise InputError(f"expected low <= high, got low={self.low}, high={self.high}")

    def init(self, key: jax.Array, shape: Any) -> jax.Array:
        h, w = image_size(shape)
        if self.std is not None:
            return self.std * _random.normal(key, (h, w, 3), self.dtype)
        return _random.uniform(key, (h, w, 3), self.dtype, self.low, self.high)

    def image(self, params: jax.Array) -> jax.Array:
        scale = jnp.asarray(self.scale, params.dtype)
        offset = jnp.asarray(self.offset, params.dtype)
        return _squash(params * scale + offset, self.activation)

    def from_image(self, image: Any) -> jax.Array:
        image = _check_image(image).astype(self.dtype)
        t = _unsquash(image, self.activation)
        return (t - jnp.asarray(self.offset, t.dtype)) / jnp.asarray(self.scale, t.dtype)


def _frequencies(h: int, w: int) -> np.ndarray:
    """|f| of the (h, w // 2 + 1) real-FFT grid, in cycles per pixel."""
    fy = np.fft.fftfreq(h)[:, None]
    fx = np.fft.rfftfreq(w)[None, :]
    return np.sqrt(fx * fx + fy * fy)


def spectrum_scale(h: int, w: int, decay_power: float = 1.0) -> np.ndarray:
    """Per-frequency scale ``sqrt(h w) / max(|f|, 1 / max(h, w)) ** decay_power``.

    Multiplying white spectral noise by it gives images with a 1/f (natural-image)
    power spectrum; the constant keeps unit-variance pixels for ``irfft2``'s 1/(hw).
    """
    f = np.maximum(_frequencies(h, w), 1.0 / max(h, w))
    return np.sqrt(h * w) / f ** decay_power


def _even(width: int) -> int:
    return width + width % 2


def crop(images: jax.Array, shape: Any) -> jax.Array:
    """``images (..., H', W', 3)`` cut to ``shape = (H, W)`` at the top left (a no-op when
    they are that size): :class:`Fourier` makes an odd width ``W`` at ``W + 1``."""
    h, w = image_size(shape)
    if tuple(images.shape[-3:-1]) == (h, w):
        return images
    return images[..., :h, :w, :]


@dataclasses.dataclass(frozen=True)
class Fourier:
    """A 1/f-scaled spectrum with decorrelated colour, through a sigmoid.

    ``image = sigmoid(C (irfft2(S * spectrum) / 4))`` where ``S`` is
    :func:`spectrum_scale` and ``C`` the normalized square root of ImageNet's colour
    correlation (identity when ``decorrelate`` is False). Parameters are the real and
    imaginary parts, shape (2, 3, H, W' // 2 + 1) with W' = W rounded up to even, drawn
    from N(0, std^2). An odd width is made one column wider and cut (as lucid does):
    :meth:`image` returns width W', and :func:`crop` (which the synthesis loop applies)
    cuts it to W.

    Attributes:
      std: standard deviation of the initial spectrum (lucid: 0.01).
      decay_power: exponent of the 1/f scaling (1 = natural images).
      decorrelate: map decorrelated colour to RGB.
      activation: "sigmoid" (default), "clip" or "none".
      dtype: parameter dtype.
    """

    std: float = 0.01
    decay_power: float = 1.0
    decorrelate: bool = True
    activation: str = "sigmoid"
    dtype: Any = jnp.float32

    def __post_init__(self):
        _check_activation(self.activation)

    def _color(self, dtype) -> jax.Array:
        return jnp.asarray(_COLOR_NORMALIZED if self.decorrelate else np.eye(3), dtype)

    def init(self, key: jax.Array, shape: Any) -> jax.Array:
        h, w = image_size(shape)
        w = _even(w)
        return self.std * _random.normal(key, (2, 3, h, w // 2 + 1), self.dtype)

    def image(self, params: jax.Array) -> jax.Array:
        h, w = params.shape[-2], 2 * (params.shape[-1] - 1)
        scale = jnp.asarray(spectrum_scale(h, w, self.decay_power), params.dtype)
        spectrum = (params[..., 0, :, :, :] + 1j * params[..., 1, :, :, :]) * scale
        t = jnp.fft.irfft2(spectrum, s=(h, w), axes=(-2, -1)) / 4.0  # (..., 3, H, W)
        t = jnp.moveaxis(t, -3, -1).astype(params.dtype)
        return _squash(t @ self._color(params.dtype).T, self.activation)

    def from_image(self, image: Any) -> jax.Array:
        image = _check_image(image).astype(self.dtype)
        h, w = image.shape[-3:-1]
        if w % 2:  # one more column, repeating the last: crop() gives the image back
            image = jnp.concatenate([image, image[..., -1:, :]], axis=-2)
            w += 1
        t = _unsquash(image, self.activation) @ jnp.linalg.inv(self._color(image.dtype)).T
        t = jnp.moveaxis(t, -1, -3) * 4.0
        scale = jnp.asarray(spectrum_scale(h, w, self.decay_power), image.dtype)
        spectrum = jnp.fft.rfft2(t, axes=(-2, -1)) / scale
        return jnp.stack([spectrum.real, spectrum.imag], axis=-4).astype(self.dtype)


Parameterization = Pixels | Fourier


def pixels(low: float = -1.0, high: float = 1.0, **kwargs) -> Pixels:
    """:class:`Pixels` starting from uniform noise in ``[low, high)``."""
    return Pixels(low, high, **kwargs)


def fourier(std: float = 0.01, decay_power: float = 1.0, decorrelate: bool = True,
            **kwargs) -> Fourier:
    """:class:`Fourier` (lucid's defaults)."""
    return Fourier(std, decay_power, decorrelate, **kwargs)


__all__ = ["ACTIVATIONS", "COLOR_CORRELATION_SQRT", "Fourier", "Parameterization", "Pixels",
           "crop", "fourier", "image_size", "pixels", "spectrum_scale"]

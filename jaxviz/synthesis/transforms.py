"""Random differentiable image transforms, applied at every optimization step.

Transformation robustness (Olah, Mordvintsev & Schubert, "Feature Visualization",
Distill 2017; Mordvintsev et al.'s "jitter"): the objective is evaluated on a randomly
padded, shifted, scaled and rotated copy of the image, so high-frequency patterns that
fool one exact alignment stop paying off.

A transform is a callable ``t(key, image) -> image`` on one image ``(H, W, C)``; the
synthesis loop vmaps it over the batch with one key per image and step, so every image
of a batch gets its own draw and chunking a batch does not change any image. Output
sizes depend only on the input size (``jitter`` crops by a fixed amount; ``scale`` and
``rotate`` keep the size), so a batch stays rectangular.

:func:`standard` is lucid's default set: pad 12 (constant 0.5), jitter 8, scale in
{0.9, 0.92, ..., 1.1}, rotate by an integer angle in [-10, 10] degrees (0 weighted six
times), jitter 4.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

Transform = Callable[[jax.Array, jax.Array], jax.Array]


def _check_image(image: jax.Array, what: str) -> None:
    if image.ndim != 3:
        raise ValueError(f"{what} transforms one image (H, W, C) at a time (the loop vmaps "
                         f"it over the batch); got shape {tuple(image.shape)}")


@dataclasses.dataclass(frozen=True)
class Pad:
    """Pads ``width`` pixels on every side: ``mode`` "constant" (with ``value``),
    "reflect" or "edge"."""

    width: int
    mode: str = "constant"
    value: float = 0.5

    def __post_init__(self):
        if self.mode not in ("constant", "reflect", "edge"):
            raise ValueError(f"unknown pad mode {self.mode!r}; expected constant, reflect or edge")
        if int(self.width) < 0:
            raise ValueError(f"expected a non-negative pad width, got {self.width}")

    def __call__(self, key: jax.Array, image: jax.Array) -> jax.Array:
        _check_image(image, "pad")
        w = int(self.width)
        pads = ((w, w), (w, w), (0, 0))
        if self.mode == "constant":
            return jnp.pad(image, pads, constant_values=jnp.asarray(self.value, image.dtype))
        return jnp.pad(image, pads, mode=self.mode)


@dataclasses.dataclass(frozen=True)
class Jitter:
    """A random crop ``d`` pixels smaller in each dimension (offsets uniform in 0..d)."""

    d: int

    def __post_init__(self):
        if int(self.d) < 0:
            raise ValueError(f"expected a non-negative jitter, got {self.d}")

    def __call__(self, key: jax.Array, image: jax.Array) -> jax.Array:
        _check_image(image, "jitter")
        d = int(self.d)
        h, w, c = image.shape
        if d >= min(h, w):
            raise ValueError(f"jitter {d} leaves nothing of a {h}x{w} image")
        dy, dx = jax.random.randint(key, (2,), 0, d + 1)
        return jax.lax.dynamic_slice(image, (dy, dx, 0), (h - d, w - d, c))


def _bilinear_warp(image: jax.Array, inverse: jax.Array) -> jax.Array:
    """Resamples ``image (H, W, C)`` at ``inverse @ (y, x)`` about the centre (bilinear,
    edge values beyond the border): output pixel p reads input at c + A (p - c)."""
    h, w, _ = image.shape
    cy, cx = (h - 1) / 2.0, (w - 1) / 2.0
    yy, xx = jnp.meshgrid(jnp.arange(h, dtype=image.dtype) - cy,
                          jnp.arange(w, dtype=image.dtype) - cx, indexing="ij")
    sy = inverse[0, 0] * yy + inverse[0, 1] * xx + cy
    sx = inverse[1, 0] * yy + inverse[1, 1] * xx + cx
    sy = jnp.clip(sy, 0.0, h - 1.0)
    sx = jnp.clip(sx, 0.0, w - 1.0)
    y0 = jnp.floor(sy)
    x0 = jnp.floor(sx)
    fy = (sy - y0)[..., None]
    fx = (sx - x0)[..., None]
    y0i = y0.astype(jnp.int32)
    x0i = x0.astype(jnp.int32)
    y1i = jnp.minimum(y0i + 1, h - 1)
    x1i = jnp.minimum(x0i + 1, w - 1)
    top = image[y0i, x0i] * (1 - fx) + image[y0i, x1i] * fx
    bottom = image[y1i, x0i] * (1 - fx) + image[y1i, x1i] * fx
    return top * (1 - fy) + bottom * fy


def _choice(key: jax.Array, values: Sequence[float], dtype) -> jax.Array:
    table = jnp.asarray(np.asarray(values, np.float64), dtype)
    return table[jax.random.randint(key, (), 0, len(values))]


@dataclasses.dataclass(frozen=True)
class RandomScale:
    """Zooms about the centre by a factor drawn uniformly from ``scales`` (same size out)."""

    scales: tuple[float, ...]

    def __post_init__(self):
        if not self.scales or any(s <= 0 for s in self.scales):
            raise ValueError(f"expected a non-empty sequence of positive scales, got {self.scales}")

    def __call__(self, key: jax.Array, image: jax.Array) -> jax.Array:
        _check_image(image, "scale")
        s = _choice(key, self.scales, image.dtype)
        return _bilinear_warp(image, jnp.eye(2, dtype=image.dtype) / s)


@dataclasses.dataclass(frozen=True)
class RandomRotate:
    """Rotates about the centre by an angle in degrees drawn uniformly from ``angles``
    (positive angles turn the image clockwise as displayed, rows running down)."""

    angles: tuple[float, ...]

    def __post_init__(self):
        if not self.angles:
            raise ValueError("expected a non-empty sequence of angles")

    def __call__(self, key: jax.Array, image: jax.Array) -> jax.Array:
        _check_image(image, "rotate")
        a = _choice(key, self.angles, image.dtype) * (math.pi / 180.0)
        c, s = jnp.cos(a), jnp.sin(a)
        return _bilinear_warp(image, jnp.stack([jnp.stack([c, -s]), jnp.stack([s, c])]))


@dataclasses.dataclass(frozen=True)
class Compose:
    """Applies ``transforms`` in order, each with its own key split from the step's."""

    transforms: tuple[Transform, ...]

    def __call__(self, key: jax.Array, image: jax.Array) -> jax.Array:
        if not self.transforms:
            return image
        for k, t in zip(jax.random.split(key, len(self.transforms)), self.transforms):
            image = t(k, image)
        return image


def pad(width: int, mode: str = "constant", value: float = 0.5) -> Pad:
    """:class:`Pad`."""
    return Pad(int(width), mode, value)


def jitter(d: int) -> Jitter:
    """:class:`Jitter`."""
    return Jitter(int(d))


def random_scale(scales: Sequence[float]) -> RandomScale:
    """:class:`RandomScale`."""
    return RandomScale(tuple(float(s) for s in scales))


def random_rotate(angles: Sequence[float]) -> RandomRotate:
    """:class:`RandomRotate`."""
    return RandomRotate(tuple(float(a) for a in angles))


def compose(*transforms: Transform) -> Compose:
    """:class:`Compose` of the given transforms."""
    return Compose(tuple(transforms))


def standard() -> Compose:
    """lucid's standard transforms (see the module docstring)."""
    return compose(
        pad(12, "constant", 0.5),
        jitter(8),
        random_scale([1 + (i - 5) / 50.0 for i in range(11)]),
        random_rotate(list(range(-10, 11)) + 5 * [0]),
        jitter(4),
    )


def none() -> Compose:
    """No transform."""
    return compose()


def as_transform(spec: Any) -> Transform:
    """``"standard"``, ``None``/``"none"``, a transform, or a sequence of transforms."""
    if spec is None or (isinstance(spec, str) and spec == "none"):
        return none()
    if isinstance(spec, str):
        if spec == "standard":
            return standard()
        raise ValueError(f"unknown transforms {spec!r}; expected 'standard', 'none', a "
                         f"transform t(key, image) or a sequence of them")
    if isinstance(spec, (list, tuple)):
        return compose(*spec)
    if callable(spec):
        return spec
    raise TypeError(f"expected transforms as 'standard', 'none', None, a callable "
                    f"t(key, image) or a sequence of them; got {type(spec).__name__}")


__all__ = ["Compose", "Jitter", "Pad", "RandomRotate", "RandomScale", "Transform",
           "as_transform", "compose", "jitter", "none", "pad", "random_rotate",
           "random_scale", "standard"]

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

Every random choice is an integer index (a crop offset, an entry of the scales or the
angles). The transforms here draw all the indices they need from one block of threefry
bits (``_draws``), and :class:`Compose` draws one block for all its transforms. Each
threefry hash in a program is a few hundred HLO operations that XLA:CPU compiles anew;
``standard()`` used to hash 13 times per image (a key split per transform, a split and two
draws per ``randint``), and one synthesis step of LeNet compiled in 1.9 s, of AlexNet at
64 px in 3.1 s; with one hash, 1.2 and 2.1 s (2 CPU cores, jaxlib 0.10.2; ``lucid()``
1.8 to 1.3 and 2.4 to 1.5 s). Index ``i`` of ``n`` choices is ``bits[i] % n``, uniform to
within ``n / 2**32`` (below 1e-8 for these sets). A transform of one's own in a
:class:`Compose` gets its own key instead.

:func:`standard` is lucid's default set in kind: pad 12 (constant 0.5), jitter 8, scale
in {0.9, 0.92, ..., 1.1}, rotate by an integer angle in [-10, 10] degrees (0 weighted
six times), jitter 4. It departs from lucid's ``standard_transforms``
(``lucid/optvis/transform.py``) in two ops, to keep every size static and the gradient
smooth: its scale zooms about the centre and keeps the size (bilinear, edge values
beyond the border), where lucid resizes the image to ``int(s * size)`` pixels; its
rotation is bilinear (three shears), uses the exact pi, fills with 0.5 and has the true
adjoint as gradient, where lucid's is nearest-neighbour, converts degrees with 3.14 /
180, fills with 0 and back-propagates through the inverse rotation (TensorFlow's
registered gradient). Its output is 12 px larger than its input.

:func:`lucid` reproduces lucid's ops themselves (pad and jitter as above,
:func:`resize_bilinear_tf1`, :func:`rotate_nearest_tf` with lucid's 3.14 / 180), with
one departure that static shapes force: lucid's network sees an image of
``int(s * size) - 4`` px, one of 11 sizes drawn per step, where :func:`lucid` centres that
same image on a canvas of the largest size (0.5 around it;
:class:`LucidScaleRotateJitter`), so the network sees the margin too. Lucid also draws
once per batch (one crop, scale and angle for all its images), not once per image.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxviz import _random
from jaxviz.errors import InputError, InputTypeError

Transform = Callable[[jax.Array, jax.Array], jax.Array]


def _draws(key: jax.Array, choices: Sequence[int]) -> jax.Array:
    """One int32 index in ``[0, n)`` for each ``n`` in ``choices`` (static), all from one
    block of threefry bits (see the module docstring)."""
    bits = _random.bits(key, (len(choices),))
    return jax.lax.rem(bits, jnp.asarray(np.asarray(choices, np.uint32))).astype(jnp.int32)


def _check_image(image: jax.Array, what: str) -> None:
    if image.ndim != 3:
        raise InputError(f"{what} transforms one image (H, W, C) at a time (the loop vmaps "
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
            raise InputError(f"unknown pad mode {self.mode!r}; expected constant, reflect or edge")
        if int(self.width) < 0:
            raise InputError(f"expected a non-negative pad width, got {self.width}")

    _choices = ()

    def __call__(self, key: jax.Array, image: jax.Array) -> jax.Array:
        return self._given(None, image)

    def _given(self, draws: jax.Array | None, image: jax.Array) -> jax.Array:
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
            raise InputError(f"expected a non-negative jitter, got {self.d}")

    @property
    def _choices(self) -> tuple[int, ...]:
        return (int(self.d) + 1,) * 2

    def __call__(self, key: jax.Array, image: jax.Array) -> jax.Array:
        return self._given(_draws(key, self._choices), image)

    def _given(self, draws: jax.Array, image: jax.Array) -> jax.Array:
        _check_image(image, "jitter")
        d = int(self.d)
        h, w, c = image.shape
        if d >= min(h, w):
            raise InputError(f"jitter {d} leaves nothing of a {h}x{w} image")
        dy, dx = draws[0], draws[1]
        return jax.lax.dynamic_slice(image, (dy, dx, jnp.zeros_like(dy)), (h - d, w - d, c))


def _interpolation(positions: jax.Array, n: int) -> jax.Array:
    """Linear-interpolation weights (..., m, n) that read a length-``n`` signal at
    ``positions (..., m)``, clamped to the edge samples."""
    p = jnp.clip(positions, 0.0, n - 1.0)[..., None]
    return jnp.maximum(0.0, 1.0 - jnp.abs(p - jnp.arange(n, dtype=positions.dtype)))


def _centred(n: int, dtype) -> jax.Array:
    return jnp.arange(n, dtype=dtype) - (n - 1) / 2.0


def _separable(ry: jax.Array, rx: jax.Array, image: jax.Array) -> jax.Array:
    """``ry @ image @ rx.T`` per channel: rows (oh, h), columns (ow, w), image (h, w, c);
    two matmuls at full precision."""
    hp = jax.lax.Precision.HIGHEST
    out = jnp.einsum("yi,ixc->yxc", ry, image, precision=hp)
    return jnp.einsum("xj,yjc->yxc", rx, out, precision=hp)


def _zoom(image: jax.Array, s: jax.Array) -> jax.Array:
    """Output pixel p reads the input at c + (p - c) / s, bilinear, as two matmuls."""
    h, w, _ = image.shape
    ry = _interpolation(_centred(h, image.dtype) / s + (h - 1) / 2.0, h)   # (h, h)
    rx = _interpolation(_centred(w, image.dtype) / s + (w - 1) / 2.0, w)   # (w, w)
    return _separable(ry, rx, image)


def _blend_shifts(padded: jax.Array, k: jax.Array, f: jax.Array, width: int,
                  first: jax.Array, second: jax.Array) -> jax.Array:
    """Per row y: ``(1 - f[y]) padded[y, first[y]:][:width] + f[y] padded[y, second[y]:][:width]``
    (dynamic slices of whole rows; contiguous copies)."""
    del k

    def row(r, a, b, fy):
        lo = jax.lax.dynamic_slice_in_dim(r, a, width, axis=0)
        hi = jax.lax.dynamic_slice_in_dim(r, b, width, axis=0)
        return (1 - fy) * lo + fy * hi

    return jax.vmap(row)(padded, first, second, f[:, 0, 0])


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _shift_rows(image: jax.Array, shift: jax.Array, reach: int) -> jax.Array:
    """Row y of ``image (h, w, c)`` read at x + shift[y] with linear interpolation and
    zeros beyond the border, for |shift| <= reach - 1.

    Each row's shift splits into an integer part (one of 2 * reach + 1 static slices of
    the zero-padded image) and a fraction blended between two neighbours: slices and
    selects that XLA fuses. The backward pass is the adjoint written the same way (the
    shift is not differentiated); autodiff of the slices would pad and add 2 * (2 *
    reach + 1) full-size arrays instead, about 40x slower on CPU."""
    return _shift_rows_fwd(image, shift, reach)[0]


def _split(shift: jax.Array):
    k = jnp.floor(shift)
    return k.astype(jnp.int32)[:, None, None], (shift - k)[:, None, None]


def _shift_rows_fwd(image, shift, reach):
    w = image.shape[1]
    k, f = _split(shift.astype(image.dtype))
    padded = jnp.pad(image, ((0, 0), (reach + 1, reach + 1), (0, 0)))
    # k is clipped so that a shift outside the reach reads the zero border, never wraps
    k = jnp.clip(k, -reach, reach)
    kk = k[:, 0, 0]
    out = _blend_shifts(padded, k, f, w, reach + 1 + kk, reach + 2 + kk)
    return out, (k, f)


def _shift_rows_bwd(reach, residual, g):
    k, f = residual
    w = g.shape[1]
    padded = jnp.pad(g, ((0, 0), (reach + 1, reach + 1), (0, 0)))
    kk = k[:, 0, 0]
    grad = _blend_shifts(padded, k, f, w, reach + 1 - kk, reach - kk)
    return grad, jnp.zeros(k.shape[:1], f.dtype)


_shift_rows.defvjp(_shift_rows_fwd, _shift_rows_bwd)


def _rotate(image: jax.Array, angle: jax.Array, largest: float, fill: float) -> jax.Array:
    """Rotation about the centre by ``angle`` radians (``|angle| <= largest``) as three
    shears (Paeth 1986), each a 1-D linear interpolation along rows or columns, ``fill``
    beyond the border: exact on images that are linear in (y, x) away from the border.
    Output pixel p reads the input at c + R (p - c), R = [[cos, sin], [-sin, cos]] on
    (y, x) offsets."""
    h, w, _ = image.shape
    a, b = -jnp.tan(angle / 2), jnp.sin(angle)
    reach_x = int(math.ceil(abs(math.tan(largest / 2)) * (h - 1) / 2)) + 1
    reach_y = int(math.ceil(abs(math.sin(largest)) * (w - 1) / 2)) + 1
    cy, cx = _centred(h, image.dtype), _centred(w, image.dtype)
    t = image - fill
    t = _shift_rows(t, a * cy, reach_x)
    t = jnp.swapaxes(_shift_rows(jnp.swapaxes(t, 0, 1), b * cx, reach_y), 0, 1)
    return _shift_rows(t, a * cy, reach_x) + fill


def _pick(index: jax.Array, values: Sequence[float], dtype) -> jax.Array:
    return jnp.asarray(np.asarray(values, np.float64), dtype)[index]


@dataclasses.dataclass(frozen=True)
class RandomScale:
    """Zooms about the centre by a factor drawn uniformly from ``scales`` (same size out;
    bilinear, edge values beyond the border)."""

    scales: tuple[float, ...]

    def __post_init__(self):
        if not self.scales or any(s <= 0 for s in self.scales):
            raise InputError(f"expected a non-empty sequence of positive scales, got {self.scales}")

    @property
    def _choices(self) -> tuple[int, ...]:
        return (len(self.scales),)

    def __call__(self, key: jax.Array, image: jax.Array) -> jax.Array:
        return self._given(_draws(key, self._choices), image)

    def _given(self, draws: jax.Array, image: jax.Array) -> jax.Array:
        _check_image(image, "scale")
        return _zoom(image, _pick(draws[0], self.scales, image.dtype))


@dataclasses.dataclass(frozen=True)
class RandomRotate:
    """Rotates about the centre by an angle in degrees drawn uniformly from ``angles``
    (three shears with linear interpolation; ``fill`` beyond the border)."""

    angles: tuple[float, ...]
    fill: float = 0.5

    def __post_init__(self):
        if not self.angles:
            raise InputError("expected a non-empty sequence of angles")
        if max(abs(a) for a in self.angles) > 90:
            raise InputError(f"expected angles within [-90, 90] degrees (three-shear rotation), "
                             f"got {self.angles}")

    @property
    def _choices(self) -> tuple[int, ...]:
        return (len(self.angles),)

    def __call__(self, key: jax.Array, image: jax.Array) -> jax.Array:
        return self._given(_draws(key, self._choices), image)

    def _given(self, draws: jax.Array, image: jax.Array) -> jax.Array:
        _check_image(image, "rotate")
        largest = max(abs(a) for a in self.angles) * math.pi / 180.0
        angle = _pick(draws[0], self.angles, image.dtype) * (math.pi / 180.0)
        return _rotate(image, angle, largest, self.fill)


@dataclasses.dataclass(frozen=True)
class Compose:
    """Applies ``transforms`` in order. The transforms of this module draw their indices
    from one block of bits for the whole chain (see the module docstring); when a
    transform of one's own is among them, each transform gets its own key split from the
    step's instead."""

    transforms: tuple[Transform, ...]

    def __call__(self, key: jax.Array, image: jax.Array) -> jax.Array:
        if not self.transforms:
            return image
        if not all(hasattr(t, "_given") for t in self.transforms):
            for k, t in zip(jax.random.split(key, len(self.transforms)), self.transforms):
                image = t(k, image)
            return image
        choices = [n for t in self.transforms for n in t._choices]
        counts = [len(t._choices) for t in self.transforms]
        draws = _draws(key, choices) if choices else None
        start = 0
        for t, count in zip(self.transforms, counts):
            image = t._given(draws[start:start + count] if count else None, image)
            start += count
        return image


# --- lucid's own ops (TensorFlow 1) -----------------------------------------------------------


def lucid_size(n: int, scale: float) -> int:
    """lucid's resized length: ``int32(float32(scale) * float32(n))``, truncated (1.06 *
    150 is 158, since float32(1.06) < 1.06)."""
    return int(np.float32(scale) * np.float32(n))


def lucid_radians(degrees: Sequence[float]) -> np.ndarray:
    """lucid's ``_angle2rads``: ``3.14 * float32(angle) / 180.`` in float32 (3.14, not pi:
    lucid's 10 degrees are 9.9949)."""
    return (np.float32(3.14) * np.asarray(degrees, np.float32)) / np.float32(180.0)


def _tf1_weights(n_in: int, n: jax.Array, step: jax.Array, rows: int, dtype) -> jax.Array:
    """(rows, n_in): TF1 ``resize_bilinear`` to length ``n`` along one axis, row i < n
    reading at ``float32(i) * step`` (``step = float32(n_in) / float32(n)``, float32 as
    TF's kernel computes it) between floor and the next sample, clamped to the last (the
    weights of :func:`_interpolation`); rows from n on are 0."""
    pos = (jnp.arange(rows, dtype=jnp.float32) * step).astype(dtype)
    return jnp.where((jnp.arange(rows) < n)[:, None], _interpolation(pos, n_in), 0)


def _resize_tf1(image: jax.Array, hw: jax.Array, step: jax.Array, rows: tuple[int, int]):
    """The ``hw`` resize of ``image`` in the top-left corner of a ``rows`` array (0 beyond);
    ``step`` (2,) float32 the per-axis read step. Two matmuls: each output is
    ``(1 - l) a + l b`` where TF writes ``a + (b - a) l``, equal up to float32 rounding."""
    h, w, _ = image.shape
    ry = _tf1_weights(h, hw[0], step[0], rows[0], image.dtype)
    rx = _tf1_weights(w, hw[1], step[1], rows[1], image.dtype)
    return _separable(ry, rx, image)


def _steps(n_in: tuple[int, int], n_out: tuple[int, int]) -> np.ndarray:
    return np.float32(n_in) / np.float32(n_out)


def resize_bilinear_tf1(image: jax.Array, hw: tuple[int, int]) -> jax.Array:
    """``tf.image.resize_bilinear(image, hw)`` of TensorFlow 1, as lucid's ``random_scale``
    calls it (``align_corners=False, half_pixel_centers=False``): output (i, j) is the
    bilinear interpolation of the input at (i * h / oh, j * w / ow), corner-aligned
    ("asymmetric") sampling, positions in float32 as TF computes them. Its gradient
    (autodiff) is the adjoint, as TF's ``ResizeBilinearGrad`` is."""
    _check_image(image, "resize")
    (h, w, _), hw = image.shape, (int(hw[0]), int(hw[1]))
    if min(hw) < 1:
        raise InputError(f"expected a positive size to resize to, got {hw}")
    return _resize_tf1(image, jnp.asarray(hw), jnp.asarray(_steps((h, w), hw)), hw)


def _round_half_away(v: jax.Array) -> jax.Array:
    """C's ``std::round``: to the nearest integer, halves away from zero (jnp.round
    rounds halves to even; ``floor(v + 0.5)`` rounds 0.49999997 up in float32)."""
    a = jnp.abs(v)
    f = jnp.floor(a)
    r = f + (a - f >= 0.5)  # a - f is exact for a >= 0 (not for a negative v - floor(v))
    return jnp.where(v < 0, -r, r).astype(jnp.int32)


def _tf_rotation(radians: jax.Array, hw: jax.Array) -> tuple:
    """``tf.contrib.image.angles_to_projective_transforms`` for an hw image: the affine
    map from output (x, y) to input (a0 x + a1 y + a2, b0 x + b1 y + b2), a rotation about
    ((w - 1) / 2, (h - 1) / 2), in float32."""
    c, s = jnp.cos(radians), jnp.sin(radians)
    h1, w1 = (hw[0] - 1).astype(jnp.float32), (hw[1] - 1).astype(jnp.float32)
    return (c, -s, (w1 - (c * w1 - s * h1)) / 2, s, c, (h1 - (s * w1 + c * h1)) / 2)


def _inverse(t: tuple) -> tuple:
    """The inverse affine map (closed form; TF inverts the 3x3 matrix by LU: equal up to
    float32 rounding)."""
    a0, a1, a2, b0, b1, b2 = t
    det = a0 * b1 - a1 * b0
    i0, i1, j0, j1 = b1 / det, -a1 / det, -b0 / det, a0 / det
    return (i0, i1, -(i0 * a2 + i1 * b2), j0, j1, -(j0 * a2 + j1 * b2))


def _projective_nearest(image: jax.Array, t: tuple, hw: jax.Array) -> jax.Array:
    """``ImageProjectiveTransform``, NEAREST, of the hw image in ``image``'s top-left
    corner: output (y, x) is input (round(y'), round(x')), positions in float32 as TF
    computes them, 0 where that falls outside the hw image."""
    h, w, _ = image.shape
    a0, a1, a2, b0, b1, b2 = t
    y = jnp.arange(h, dtype=jnp.float32)[:, None]
    x = jnp.arange(w, dtype=jnp.float32)[None, :]
    iy = _round_half_away(b0 * x + b1 * y + b2)
    ix = _round_half_away(a0 * x + a1 * y + a2)
    inside = (iy >= 0) & (iy < hw[0]) & (ix >= 0) & (ix < hw[1])
    values = image[jnp.clip(iy, 0, h - 1), jnp.clip(ix, 0, w - 1)]
    return jnp.where(inside[..., None], values, jnp.zeros((), image.dtype))


@jax.custom_vjp
def _rotate_tf(image: jax.Array, radians: jax.Array, hw: jax.Array) -> jax.Array:
    return _projective_nearest(image, _tf_rotation(radians, hw), hw)


def _rotate_tf_fwd(image, radians, hw):
    return _rotate_tf(image, radians, hw), (radians, hw)


def _rotate_tf_bwd(residual, g):
    radians, hw = residual
    grad = _projective_nearest(g, _inverse(_tf_rotation(radians, hw)), hw)
    return grad, jnp.zeros_like(radians), np.zeros(hw.shape, jax.dtypes.float0)


_rotate_tf.defvjp(_rotate_tf_fwd, _rotate_tf_bwd)


def rotate_nearest_tf(image: jax.Array, radians: float | jax.Array) -> jax.Array:
    """``tf.contrib.image.rotate(image, radians)``, as lucid's ``random_rotate`` calls it:
    rotation about ((w - 1) / 2, (h - 1) / 2), nearest neighbour (halves away from zero),
    0 beyond the border. The gradient is TF's registered one: the output gradient mapped
    back by the inverse transform, nearest neighbour (not the adjoint of the forward map,
    which would add up the pixels that two outputs read); none for the angle. XLA's
    float32 cos and sin may differ from TF's in the last bit, so a position within about
    1e-5 px of a half-way point may round the other way (as TF's CPU and GPU kernels
    may)."""
    _check_image(image, "rotate")
    return _rotate_tf(image, jnp.asarray(radians, jnp.float32), jnp.asarray(image.shape[:2]))


@dataclasses.dataclass(frozen=True)
class LucidScaleRotateJitter:
    """lucid's ``random_scale(scales)``, ``random_rotate(angles)`` and ``jitter(d)`` at
    lucid's sizes: with s drawn from ``scales``, the image is resized to ``n = (lucid_size(h,
    s), lucid_size(w, s))`` (:func:`resize_bilinear_tf1`), rotated at that size by an
    angle drawn from ``angles`` in degrees (:func:`lucid_radians`,
    :func:`rotate_nearest_tf`) and cropped to ``n - d`` at an offset uniform in 0..d;
    that image is centred (offset ``(N - n) // 2``, N the largest n) on a canvas of the
    largest such size filled with ``fill``, so every draw has the same static shape.

    One op rather than three because the rotation and the crop act on the resized image
    at its own size, which a fixed-size canvas cannot carry from op to op; computed once
    on an N-sized buffer (two interpolation matmuls, one gather), whatever s is drawn."""

    scales: tuple[float, ...]
    angles: tuple[float, ...]
    d: int = 4
    fill: float = 0.5

    def __post_init__(self):
        if not self.scales or any(s <= 0 for s in self.scales):
            raise InputError(f"expected a non-empty sequence of positive scales, got {self.scales}")
        if not self.angles:
            raise InputError("expected a non-empty sequence of angles")
        if int(self.d) < 0:
            raise InputError(f"expected a non-negative jitter, got {self.d}")

    def sizes(self, h: int, w: int) -> list[tuple[int, int]]:
        """The resized size of each scale, in order."""
        out = [(lucid_size(h, s), lucid_size(w, s)) for s in self.scales]
        if min(min(hw) for hw in out) <= int(self.d):
            raise InputError(f"scales {self.scales} and jitter {self.d} leave nothing of a "
                             f"{h}x{w} image")
        return out

    @property
    def _choices(self) -> tuple[int, ...]:
        return (len(self.scales), len(self.angles), int(self.d) + 1, int(self.d) + 1)

    def draw(self, key: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
        """(scale index, angle in lucid's float32 radians, crop offset (dy, dx))."""
        return self._split(_draws(key, self._choices))

    def _split(self, draws: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
        return draws[0], _pick(draws[1], lucid_radians(self.angles), jnp.float32), draws[2:4]

    def apply(self, image: jax.Array, index: jax.Array, radians: jax.Array,
              offset: jax.Array) -> jax.Array:
        """The op for given draws (see :meth:`draw`)."""
        _check_image(image, "scale")
        h, w, _ = image.shape
        d = int(self.d)
        sizes = np.asarray(self.sizes(h, w))                      # (k, 2)
        big = sizes.max(axis=0)
        shifts = (big - sizes) // 2
        pad = shifts.max(axis=0)
        hw = jnp.asarray(sizes)[index]
        shift = jnp.asarray(shifts)[index]
        step = jnp.asarray(_steps((h, w), sizes))[index]
        rotated = _rotate_tf(_resize_tf1(image, hw, step, tuple(big)), radians, hw)
        # canvas (Y, X) shows rotated (Y - shift + dy, X - shift + dx) inside the crop
        padded = jnp.pad(rotated, ((pad[0], pad[0]), (pad[1], pad[1]), (0, 0)))
        start = jnp.asarray(pad) - shift + offset
        out = jax.lax.dynamic_slice(padded, (start[0], start[1], 0),
                                    (big[0] - d, big[1] - d, image.shape[2]))
        ys, xs = jnp.arange(big[0] - d)[:, None], jnp.arange(big[1] - d)[None, :]
        inside = ((ys >= shift[0]) & (ys < shift[0] + hw[0] - d)
                  & (xs >= shift[1]) & (xs < shift[1] + hw[1] - d))
        return jnp.where(inside[..., None], out, jnp.asarray(self.fill, image.dtype))

    def __call__(self, key: jax.Array, image: jax.Array) -> jax.Array:
        return self.apply(image, *self.draw(key))

    def _given(self, draws: jax.Array, image: jax.Array) -> jax.Array:
        return self.apply(image, *self._split(draws))


def lucid_scale_rotate_jitter(scales: Sequence[float], angles: Sequence[float], d: int = 4,
                              fill: float = 0.5) -> LucidScaleRotateJitter:
    """:class:`LucidScaleRotateJitter`."""
    return LucidScaleRotateJitter(tuple(float(s) for s in scales),
                                  tuple(float(a) for a in angles), int(d), float(fill))


def pad(width: int, mode: str = "constant", value: float = 0.5) -> Pad:
    """:class:`Pad`."""
    return Pad(int(width), mode, value)


def jitter(d: int) -> Jitter:
    """:class:`Jitter`."""
    return Jitter(int(d))


def random_scale(scales: Sequence[float]) -> RandomScale:
    """:class:`RandomScale`."""
    return RandomScale(tuple(float(s) for s in scales))


def random_rotate(angles: Sequence[float], fill: float = 0.5) -> RandomRotate:
    """:class:`RandomRotate`."""
    return RandomRotate(tuple(float(a) for a in angles), float(fill))


def compose(*transforms: Transform) -> Compose:
    """:class:`Compose` of the given transforms."""
    return Compose(tuple(transforms))


def standard() -> Compose:
    """lucid's standard transforms in kind, with static sizes (see the module docstring
    for where it departs from lucid)."""
    return compose(
        pad(12, "constant", 0.5),
        jitter(8),
        random_scale([1 + (i - 5) / 50.0 for i in range(11)]),
        random_rotate(list(range(-10, 11)) + 5 * [0]),
        jitter(4),
    )


def lucid() -> Compose:
    """lucid's ``standard_transforms``, op by op: pad 12 (constant 0.5), jitter 8 (a random
    crop), then :class:`LucidScaleRotateJitter`: resize by ``1 + (i - 5) / 50`` for i in
    0..10, rotate by ``range(-10, 11)`` or five more 0 degrees, jitter 4, at lucid's
    sizes, centred on a 0.5 canvas of the largest (see the module docstring). For an
    ``n x n`` image the network sees ``int(float32(1.1) * (n + 16)) - 4`` px (154 for 128)."""
    return compose(
        pad(12, "constant", 0.5),
        jitter(8),
        lucid_scale_rotate_jitter([1 + (i - 5) / 50.0 for i in range(11)],
                                  list(range(-10, 11)) + 5 * [0], 4, 0.5),
    )


def none() -> Compose:
    """No transform."""
    return compose()


def as_transform(spec: Any) -> Transform:
    """``"standard"``, ``"lucid"``, ``None``/``"none"``, a transform, or a sequence of
    transforms."""
    if spec is None or (isinstance(spec, str) and spec == "none"):
        return none()
    if isinstance(spec, str):
        if spec == "standard":
            return standard()
        if spec == "lucid":
            return lucid()
        raise InputError(f"unknown transforms {spec!r}; expected 'standard', 'lucid', 'none', "
                         f"a transform t(key, image) or a sequence of them")
    if isinstance(spec, (list, tuple)):
        return compose(*spec)
    if callable(spec):
        return spec
    raise InputTypeError(f"expected transforms as 'standard', 'lucid', 'none', None, a callable "
                    f"t(key, image) or a sequence of them; got {type(spec).__name__}")


__all__ = ["Compose", "Jitter", "LucidScaleRotateJitter", "Pad", "RandomRotate",
           "RandomScale", "Transform", "as_transform", "compose", "jitter", "lucid",
           "lucid_radians", "lucid_scale_rotate_jitter", "lucid_size", "none", "pad",
           "random_rotate", "random_scale", "resize_bilinear_tf1", "rotate_nearest_tf",
           "standard"]

"""``transforms="lucid"``: lucid's ``standard_transforms`` op by op, each op against a numpy
reference written from lucid's and TensorFlow 1's definitions
(``lucid/optvis/transform.py``; TF's ``resize_bilinear`` kernel with
``align_corners=False, half_pixel_centers=False``; ``tf.contrib.image.rotate``: the
projective transform about ((w - 1) / 2, (h - 1) / 2), NEAREST with ``std::round``, 0
outside, and its registered gradient, the inverse transform of the output gradient).

Tolerances: crops, pads and nearest-neighbour rotations copy values, so they are compared
for equality. Bilinear values (and their gradients) are compared to 1e-6: the references
interpolate in float64 as TF writes it (``a + (b - a) * l`` per axis), ours in float32 as
``(1 - l) a + l b`` per axis (two matmuls whose other weights are exact zeros), with the
same float32 positions; for values in [0, 1] each of the few float32 operations is off
by at most 2^-24 = 6e-8, so the two differ by a few 1e-7 at most, while a wrong sampling
convention (half-pixel centres, a position off by one) differs by 1e-2 or more on the
random images used here.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxviz as jv
from jaxviz import _random
from jaxviz import objectives as obj
from jaxviz.synthesis import optimize, param, transforms as T

LUCID_SCALES = [1 + (i - 5) / 50. for i in range(11)]        # lucid's standard_transforms
LUCID_ANGLES = list(range(-10, 11)) + 5 * [0]


def _image(h: int, w: int, seed: int = 0) -> jax.Array:
    return _random.uniform(jax.random.key(seed), (h, w, 3), minval=0.01, maxval=0.99)


# --- numpy references ------------------------------------------------------------------------


def _taps(n_in: int, n_out: int):
    """TF1 resize_bilinear, legacy sampling, along one axis: output i reads the input at
    float32(i) * float32(n_in / n_out) (float32, as TF's kernel computes it), between
    lower = int(pos) and upper = min(lower + 1, n_in - 1)."""
    scale = np.float32(n_in) / np.float32(n_out)
    pos = [float(np.float32(i) * scale) for i in range(n_out)]
    lo = np.array([int(p) for p in pos])
    return lo, np.minimum(lo + 1, n_in - 1), np.array(pos) - lo


def resize_reference(img, oh: int, ow: int) -> np.ndarray:
    """TF's top = tl + (tr - tl) lx, bottom = ..., top + (bottom - top) ly, in float64."""
    img = np.asarray(img, np.float64)
    y0, y1, ly = _taps(img.shape[0], oh)
    x0, x1, lx = _taps(img.shape[1], ow)
    ly, lx = ly[:, None, None], lx[None, :, None]
    top = img[y0][:, x0] + (img[y0][:, x1] - img[y0][:, x0]) * lx
    bottom = img[y1][:, x0] + (img[y1][:, x1] - img[y1][:, x0]) * lx
    return top + (bottom - top) * ly


def resize_matrix(n_in: int, n_out: int) -> np.ndarray:
    """(n_out, n_in): the same resize along one axis as a matrix (for its adjoint)."""
    lo, hi, lerp = _taps(n_in, n_out)
    m = np.zeros((n_out, n_in))
    np.add.at(m, (np.arange(n_out), lo), 1 - lerp)
    np.add.at(m, (np.arange(n_out), hi), lerp)
    return m


def _positions(h: int, w: int, degrees: float, inverse: bool = False):
    """Where output (y, x) reads after lucid's rotation (radians = 3.14 * degrees / 180),
    in float64, written about the centre: x' = cx + cos (x - cx) - sin (y - cy),
    y' = cy + sin (x - cx) + cos (y - cy); the inverse rotation when ``inverse``."""
    a = 3.14 * degrees / 180.0 * (-1 if inverse else 1)
    cy, cx = (h - 1) / 2, (w - 1) / 2
    y, x = np.mgrid[:h, :w].astype(np.float64)
    return cy + np.sin(a) * (x - cx) + np.cos(a) * (y - cy), \
        cx + np.cos(a) * (x - cx) - np.sin(a) * (y - cy)


def _nearest(img: np.ndarray, py: np.ndarray, px: np.ndarray) -> np.ndarray:
    # no position may sit near a half-way point, where float32 and float64 could round
    # apart; then rounding up from +0.5 is std::round's away-from-zero
    frac = np.concatenate([np.abs(py - np.floor(py) - 0.5).ravel(),
                           np.abs(px - np.floor(px) - 0.5).ravel()])
    assert frac.min() > 1e-4, frac.min()
    h, w, _ = img.shape
    iy, ix = np.floor(py + 0.5).astype(int), np.floor(px + 0.5).astype(int)
    inside = (iy >= 0) & (iy < h) & (ix >= 0) & (ix < w)
    out = np.asarray(img)[np.clip(iy, 0, h - 1), np.clip(ix, 0, w - 1)]
    return np.where(inside[..., None], out, 0.0).astype(np.asarray(img).dtype)


def rotate_reference(img, degrees: float) -> np.ndarray:
    return _nearest(np.asarray(img), *_positions(*img.shape[:2], degrees))


def scale_rotate_jitter_reference(img, n: tuple[int, int], degrees: float,
                                  offset: tuple[int, int], big: tuple[int, int],
                                  d: int = 4, fill: float = 0.5) -> np.ndarray:
    """lucid: resize to n, rotate, crop n - d at offset; then centred on the canvas."""
    r = rotate_reference(resize_reference(img, *n), degrees)
    dy, dx = offset
    crop = r[dy:dy + n[0] - d, dx:dx + n[1] - d]
    (th, tw), (bh, bw) = ((b - m) // 2 for b, m in zip(big, n)), (b - d for b in big)
    return np.pad(crop, ((th, bh - crop.shape[0] - th), (tw, bw - crop.shape[1] - tw), (0, 0)),
                  constant_values=fill)


# --- the ops, deterministic ------------------------------------------------------------------


@pytest.mark.parametrize("hw,out", [((30, 30), (27, 27)), ((30, 30), (33, 33)),
                                    ((17, 23), (19, 11)), ((8, 8), (8, 8))])
def test_resize_is_tf1_resize_bilinear(hw, out):
    img = _image(*hw)
    got = np.asarray(T.resize_bilinear_tf1(img, out))
    want = resize_reference(img, *out)
    assert got.shape == (*out, 3)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)
    if out != hw:  # the reference tells TF1's sampling from half-pixel centres
        half = np.asarray(jax.image.resize(img, (*out, 3), "linear"))
        assert np.abs(half - want).max() > 1e-2


def test_lucid_sizes_truncate_float32_products():
    """int32(float32(s) * float32(n)): 0.9 * 144 = 129.6 gives 129, and 1.06 * 150 gives
    158, not 159, because float32(1.06) = 1.0599999."""
    assert [T.lucid_size(144, s) for s in LUCID_SCALES] == \
        [129, 132, 135, 138, 141, 144, 146, 149, 152, 155, 158]
    assert T.lucid_size(150, 1.06) == 158 and T.lucid_size(150, 1.04) == 156


def test_lucid_radians_use_3_14():
    r = T.lucid_radians([10, -7, 0])
    assert r.dtype == np.float32
    np.testing.assert_allclose(r, [3.14 * 10 / 180, -3.14 * 7 / 180, 0.0], rtol=1e-7)
    assert abs(float(r[0]) - np.pi / 18) > 5e-5  # 3.14 / pi = 0.99949


def test_round_half_away_from_zero():
    v = jnp.array([-2.5, -1.5, -0.5, -0.49999997, 0.49999997, 0.5, 1.5, 2.5, 3.0],
                  jnp.float32)
    np.testing.assert_array_equal(T._round_half_away(v), [-3, -2, -1, 0, 0, 1, 2, 3, 3])


@pytest.mark.parametrize("degrees", [10, -7, 3, 0])
def test_rotate_is_tf_rotate_nearest(degrees):
    img = _image(23, 31)
    got = np.asarray(T.rotate_nearest_tf(img, T.lucid_radians([degrees])[0]))
    want = rotate_reference(img, degrees)
    np.testing.assert_array_equal(got, want)
    if degrees:
        assert (got == 0).all(axis=-1).any()  # corners filled with 0
    else:
        np.testing.assert_array_equal(got, img)


def test_rotate_gradient_is_tf_registered_gradient():
    """TF's gradient of ImageProjectiveTransform: the output gradient transformed by the
    inverse map, nearest neighbour; not the adjoint (which scatters, and adds up the
    pixels that two outputs read)."""
    img, g = _image(23, 31), _image(23, 31, seed=1)
    radians = T.lucid_radians([10])[0]
    _, vjp = jax.vjp(lambda x: T.rotate_nearest_tf(x, radians), img)
    got = np.asarray(vjp(g)[0])
    want = _nearest(np.asarray(g), *_positions(23, 31, 10, inverse=True))
    np.testing.assert_array_equal(got, want)
    py, px = _positions(23, 31, 10)
    iy, ix = np.floor(py + 0.5).astype(int), np.floor(px + 0.5).astype(int)
    adjoint = np.zeros_like(want)
    inside = (iy >= 0) & (iy < 23) & (ix >= 0) & (ix < 31)
    np.add.at(adjoint, (iy[inside], ix[inside]), np.asarray(g)[inside])
    assert not np.allclose(adjoint, want)


# --- lucid's last three ops, and their draws ------------------------------------------------


@pytest.mark.parametrize("index,degrees,offset", [(0, 10, (4, 0)), (10, -7, (0, 3)),
                                                  (4, 0, (2, 2)), (7, 3, (1, 4))])
def test_scale_rotate_jitter_for_given_draws(index, degrees, offset):
    """Forward and backward against lucid's ops one after the other (a 24 x 30 image:
    scale 0.9 gives 21 x 27, 1.1 gives 26 x 33, the canvas is 22 x 29)."""
    img, g = _image(24, 30), _image(22, 29, seed=1)
    op = T.lucid_scale_rotate_jitter(LUCID_SCALES, LUCID_ANGLES, 4, 0.5)
    sizes = op.sizes(24, 30)
    n, big = sizes[index], (26, 33)
    assert max(sizes) == big and n == (T.lucid_size(24, LUCID_SCALES[index]),
                                       T.lucid_size(30, LUCID_SCALES[index]))
    radians = T.lucid_radians([degrees])[0]
    f = jax.jit(lambda x: op.apply(x, jnp.int32(index), radians, jnp.asarray(offset)))
    out, vjp = jax.vjp(f, img)
    want = scale_rotate_jitter_reference(img, n, degrees, offset, big)
    assert out.shape == want.shape == (22, 29, 3)
    np.testing.assert_allclose(out, want, rtol=0, atol=1e-6)
    # backward, as TF: crop adjoint, the inverse rotation (nearest), resize adjoint
    th, tw = (big[0] - n[0]) // 2, (big[1] - n[1]) // 2
    dy, dx = offset
    g_crop = np.zeros((*n, 3))
    g_crop[dy:dy + n[0] - 4, dx:dx + n[1] - 4] = np.asarray(g)[th:th + n[0] - 4, tw:tw + n[1] - 4]
    g_resized = _nearest(g_crop, *_positions(*n, degrees, inverse=True))
    want_grad = np.einsum("yi,yxc,xj->ijc", resize_matrix(24, n[0]), g_resized,
                          resize_matrix(30, n[1]))
    np.testing.assert_allclose(vjp(g)[0], want_grad, rtol=0, atol=1e-6)


def test_scale_rotate_jitter_draws_from_lucids_sets():
    op = T.lucid_scale_rotate_jitter(LUCID_SCALES, LUCID_ANGLES, 4, 0.5)
    keys = jax.random.split(jax.random.key(0), 32)
    imgs = jnp.stack([_image(24, 24)] * 32)
    index, radians, offset = jax.jit(jax.vmap(op.draw))(keys)
    assert set(np.asarray(index).tolist()) <= set(range(11))
    assert set(np.asarray(radians).tolist()) <= set(T.lucid_radians(LUCID_ANGLES).tolist())
    assert offset.shape == (32, 2) and set(np.asarray(offset).ravel().tolist()) <= set(range(5))
    for drawn in (index, radians, offset[:, 0], offset[:, 1]):
        assert len(set(np.asarray(drawn).tolist())) > 3  # the draws vary with the key
    np.testing.assert_array_equal(jax.jit(jax.vmap(op))(keys, imgs),
                                  jax.jit(jax.vmap(op.apply))(imgs, index, radians, offset))


# --- the preset ------------------------------------------------------------------------------


def test_lucid_preset_is_lucids_standard_transforms():
    assert T.lucid() == T.Compose((
        T.Pad(12, "constant", 0.5),
        T.Jitter(8),
        T.LucidScaleRotateJitter(tuple(LUCID_SCALES), tuple(float(a) for a in LUCID_ANGLES),
                                 4, 0.5)))
    assert T.as_transform("lucid") == T.lucid()
    # 128 px: pad and jitter 8 give 144, resized to 129..158, jitter 4: 125..154
    assert optimize._seen_size(T.lucid(), (128, 128)) == (154, 154)
    assert optimize._seen_size(T.standard(), (128, 128)) == (140, 140)


def test_lucid_gradients_flow():
    img = _image(32, 32)
    g = jax.jit(jax.vmap(jax.grad(lambda k, x: T.lucid()(k, x).sum(), argnums=1)))(
        jax.random.split(jax.random.key(3), 3), jnp.stack([img] * 3))
    assert g.shape == (3, 32, 32, 3) and bool(jnp.isfinite(g).all())
    assert float(jnp.abs(g).min(axis=(1, 2, 3)).min()) > 0  # every pixel is seen


def test_bad_spec_names_lucid():
    with pytest.raises(ValueError, match="'lucid'"):
        T.as_transform("lucent")
    with pytest.raises(TypeError, match="'lucid'"):
        T.as_transform(3)


class _Tiny(nn.Module):
    @nn.compact
    def __call__(self, x):
        return nn.relu(nn.Conv(4, (5, 5), padding="SAME", name="conv")(x - 0.5)).mean(axis=(1, 2))


def test_lucid_in_visualize():
    model = _Tiny()
    variables = model.init(jax.random.key(0), jnp.zeros((1, 16, 16, 3)))
    r = jv.synthesis.visualize(model, variables, obj.channel("conv", 1), key=jax.random.key(0),
                               size=16, steps=3, transforms="lucid", preprocess=None,
                               param=param.Pixels(0.4, 0.6), loop="python")
    assert r.images.shape == (1, 16, 16, 3) and r.objective.shape == (3, 1)
    assert bool(jnp.isfinite(r.images).all()) and bool(jnp.isfinite(r.objective).all())

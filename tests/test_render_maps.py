"""Tests for jaxviz.render's map post-processing: reductions, clipping, colour maps,
overlays, grids and PNG files.

Tolerances: reductions and scalings are compared in float32 with rtol 1e-6 (one or
two roundings of values of order 1); everything that ends in uint8 is compared
exactly.
"""

from __future__ import annotations

import os

import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from jaxviz import data, render
from jaxviz.render import (
    CMAPS,
    clip_percentile,
    grid,
    heatmap,
    overlay,
    reduce_channels,
    save_png,
    to_uint8_image,
)

RTOL = 1e-6


# ----------------------------------------------------------------- reduce_channels


@pytest.mark.parametrize("how, expected", [("abs_sum", 5.0), ("sum", 1.0), ("abs_max", 2.0),
                                           ("l2", 3.0)])
def test_reduce_channels_closed_form(how, expected):
    # Channels (1, -2, 2): |.| sums to 5, sum 1, max |.| 2, sqrt(1 + 4 + 4) = 3.
    maps = np.zeros((2, 3, 4, 3), np.float32)
    maps[1, 2, 3] = (1.0, -2.0, 2.0)
    out = reduce_channels(jnp.asarray(maps), how)
    assert isinstance(out, np.ndarray) and out.shape == (2, 3, 4) and out.dtype == np.float32
    assert out[1, 2, 3] == expected
    out[1, 2, 3] = 0
    assert not out.any()


def test_reduce_channels_errors():
    with pytest.raises(ValueError, match=r"\(N, H, W, C\).*\(3, 4, 3\)"):
        reduce_channels(np.zeros((3, 4, 3)))
    with pytest.raises(ValueError, match="abs_sum, sum, abs_max, l2"):
        reduce_channels(np.zeros((1, 3, 4, 3)), "mean")


# ----------------------------------------------------------------- clip_percentile


def test_clip_percentile_on_a_ramp():
    # A ramp 0..200: the 99.5th percentile is 0.995 * 200 = 199 (linear interpolation),
    # which maps to 1; 200 is clipped to 1; v maps to v / 199. A second example, the
    # ramp times 10, scales on its own and gives the same map.
    ramp = np.arange(201, dtype=np.float32).reshape(1, 3, 67)
    out = clip_percentile(np.concatenate([ramp, 10 * ramp]))
    assert out.shape == (2, 3, 67)
    np.testing.assert_allclose(out[0], np.minimum(ramp[0] / 199, 1), rtol=RTOL)
    np.testing.assert_allclose(out[1], out[0], rtol=RTOL)
    assert out[0].reshape(-1)[199] == 1.0 and out[0].reshape(-1)[200] == 1.0
    # low=10 -> the value 20 maps to 0, everything below it clipped; high=50 -> 100 maps to 1.
    out = clip_percentile(ramp, low=10, high=50)
    np.testing.assert_allclose(out[0], np.clip((ramp[0] - 20) / 80, 0, 1), rtol=RTOL, atol=1e-7)


def test_clip_percentile_constant_map_and_symmetric_mode():
    assert not clip_percentile(np.full((1, 4, 4), 3.0, np.float32)).any()
    # Signed ramp -100..100 with high=100: m / 100, sign kept, 0 stays 0.
    ramp = np.arange(-100, 101, dtype=np.float32).reshape(1, 1, 201)
    out = clip_percentile(ramp, high=100, symmetric=True)
    np.testing.assert_allclose(out, ramp / 100, rtol=RTOL)
    out = clip_percentile(ramp, high=50, symmetric=True)  # percentile 50 of |m| is 50
    np.testing.assert_allclose(out, np.clip(ramp / 50, -1, 1), rtol=RTOL)
    assert not clip_percentile(np.zeros((1, 2, 2)), symmetric=True).any()


@pytest.mark.parametrize(
    "m, kwargs, message",
    [
        (np.zeros((4, 4)), {}, r"\(N, H, W\)"),
        (np.zeros((1, 4, 4)), {"low": 50, "high": 50}, "low < high"),
        (np.zeros((1, 4, 4)), {"high": 101}, "<= 100"),
        (np.full((1, 2, 2), np.nan), {}, "NaN"),
    ],
)
def test_clip_percentile_errors(m, kwargs, message):
    with pytest.raises(ValueError, match=message):
        clip_percentile(m, **kwargs)


# ----------------------------------------------------------------- heatmap


def test_heatmap_inferno_hits_its_anchors_and_clips():
    anchors = np.asarray(CMAPS["inferno"], np.uint8)
    out = heatmap(np.arange(10, dtype=np.float64).reshape(1, 1, 10) / 9)
    assert out.shape == (1, 1, 10, 3) and out.dtype == np.uint8
    np.testing.assert_array_equal(out[0, 0], anchors)
    np.testing.assert_array_equal(heatmap(np.array([-5.0, 0.0, 1.0, 7.0])),
                                  [anchors[0], anchors[0], anchors[-1], anchors[-1]])
    # Halfway between the first two anchors: (0 + 27) / 2 = 13.5 and (4 + 65) / 2 = 34.5
    # round half to even -> 14 and 34; (0 + 12) / 2 = 6.
    np.testing.assert_array_equal(heatmap(np.array([1 / 18]))[0], [14, 6, 34])


def test_heatmap_inferno_is_a_brightness_ramp():
    rgb = heatmap(np.linspace(0, 1, 256)).astype(np.float64)
    luma = rgb @ np.array([0.299, 0.587, 0.114])
    assert np.all(np.diff(luma) >= -0.5)  # one 8-bit rounding step of slack
    assert luma[-1] - luma[0] > 200


def test_heatmap_diverging_is_white_at_zero_blue_below_red_above():
    out = heatmap(np.array([[-1.0, -0.5, 0.0, 0.5, 1.0, -3.0, 3.0]]), "diverging")[0]
    np.testing.assert_array_equal(out[2], [255, 255, 255])
    np.testing.assert_array_equal(out[[0, 4]], [CMAPS["diverging"][0], CMAPS["diverging"][-1]])
    np.testing.assert_array_equal(out[[5, 6]], out[[0, 4]])  # clipped to [-1, 1]
    assert out[0, 2] > out[0, 0] and out[1, 2] > out[1, 0]  # negative: blue
    assert out[3, 0] > out[3, 2] and out[4, 0] > out[4, 2]  # positive: red
    # Just either side of 0: near white.
    near = heatmap(np.array([-1e-3, 1e-3]), "diverging")
    assert near.min() >= 253


def test_heatmap_errors():
    with pytest.raises(ValueError, match="inferno, diverging"):
        heatmap(np.zeros((1, 2, 2)), "jet")
    with pytest.raises(ValueError, match="NaN"):
        heatmap(np.array([0.0, np.nan]))


# ----------------------------------------------------------------- overlay


def test_overlay_alpha_endpoints_and_midpoint():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (2, 5, 6, 3), dtype=np.uint8)
    heat = rng.integers(0, 256, (2, 5, 6, 3), dtype=np.uint8)
    np.testing.assert_array_equal(overlay(image, heat, alpha=0.0), image)
    np.testing.assert_array_equal(overlay(image, heat, alpha=1.0), heat)
    a = np.array([[[0, 10, 255]]], np.uint8)
    b = np.array([[[255, 20, 255]]], np.uint8)
    # 127.5 rounds half to even -> 128; 15; 255.
    np.testing.assert_array_equal(overlay(a, b), [[[128, 15, 255]]])
    np.testing.assert_array_equal(overlay(a, b, alpha=0.25), [[[64, 12, 255]]])


@pytest.mark.parametrize(
    "image, heat, alpha, error",
    [
        (np.zeros((2, 2, 3), np.uint8), np.zeros((2, 3, 3), np.uint8), 0.5, ValueError),
        (np.zeros((2, 2, 4), np.uint8), np.zeros((2, 2, 4), np.uint8), 0.5, ValueError),
        (np.zeros((2, 2, 3), np.uint8), np.zeros((2, 2, 3), np.uint8), 1.5, ValueError),
        (np.zeros((2, 2, 3), np.float32), np.zeros((2, 2, 3), np.uint8), 0.5, TypeError),
    ],
)
def test_overlay_errors(image, heat, alpha, error):
    with pytest.raises(error):
        overlay(image, heat, alpha)


# ----------------------------------------------------------------- to_uint8_image


def test_to_uint8_image_inverts_preprocessing_exactly():
    assert render.IMAGENET_MEAN == data.IMAGENET_MEAN
    assert render.IMAGENET_STD == data.IMAGENET_STD
    image = np.random.default_rng(1).integers(0, 256, (2, 7, 5, 3), dtype=np.uint8)
    x = data.normalize(image.astype(np.float32) / np.float32(255))
    np.testing.assert_array_equal(to_uint8_image(x), image)
    np.testing.assert_array_equal(to_uint8_image(jnp.asarray(x)), image)
    # Out of range values are clipped; custom statistics are used.
    np.testing.assert_array_equal(to_uint8_image(np.array([[-50.0, 50.0, 0.0]])), [[0, 255, 104]])
    np.testing.assert_array_equal(
        to_uint8_image(np.array([[0.0, 1.0, -1.0]]), mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5)),
        [[128, 255, 0]])


def test_to_uint8_image_errors():
    with pytest.raises(ValueError, match=r"\(\.\.\., 3\)"):
        to_uint8_image(np.zeros((2, 2, 4), np.float32))
    with pytest.raises(TypeError, match="float"):
        to_uint8_image(np.zeros((2, 2, 3), np.uint8))


# ----------------------------------------------------------------- grid


def test_grid_size_arithmetic_and_placement():
    # 5 tiles of 4x6 in 3 columns, pad 2: 2 rows -> (2*4 + 3*2, 3*6 + 4*2) = (14, 26).
    tiles = np.stack([np.full((4, 6, 3), k + 1, np.uint8) for k in range(5)])
    out = grid(tiles, ncols=3, pad=2, background=0)
    assert out.shape == (14, 26, 3) and out.dtype == np.uint8
    for k in range(5):
        top, left = 2 + (k // 3) * 6, 2 + (k % 3) * 8
        assert (out[top: top + 4, left: left + 6] == k + 1).all()
    assert (out[8:12, 18:24] == 0).all()  # sixth cell: background
    assert (out > 0).sum() == 5 * 4 * 6 * 3  # nothing else drawn
    # More columns than images: as many columns as images.
    assert grid(tiles[:2], ncols=8, pad=1).shape == (6, 15, 3)
    assert grid(tiles, ncols=5, pad=0).shape == (4, 30, 3)


def test_grid_grey_and_float_tiles():
    grey = np.arange(2 * 2 * 2, dtype=np.uint8).reshape(2, 2, 2)
    out = grid(grey, ncols=2, pad=0)
    np.testing.assert_array_equal(out, np.repeat(np.concatenate(list(grey), axis=1)[..., None], 3, -1))
    out = grid(np.array([[[[0.0, 0.5, 2.0]]]]), ncols=1, pad=0)  # clipped, 127.5 -> 128
    np.testing.assert_array_equal(out, [[[0, 128, 255]]])


def test_grid_labels_add_a_caption_band_under_each_tile():
    tiles = np.zeros((3, 10, 40, 3), np.uint8)
    plain = grid(tiles, ncols=3, pad=2)
    labelled = grid(tiles, ncols=3, pad=2, labels=["cat", "dog", ""])
    band = (labelled.shape[0] - plain.shape[0])
    assert band > 4 and labelled.shape[1] == plain.shape[1]
    for k, text in enumerate(["cat", "dog", ""]):
        left = 2 + k * 42
        strip = labelled[12: 12 + band, left: left + 40]
        assert (strip < 255).any() == bool(text)  # ink only where there is text
    # The padding columns stay background: captions are cut at the tile's edge.
    long = grid(tiles[:2], ncols=2, pad=2, labels=["W" * 50, ""])
    assert (long[12:, 42:44] == 255).all() and (long[12:, 44:] == 255).all()


@pytest.mark.parametrize(
    "images, kwargs, error, message",
    [
        (np.zeros((2, 3, 3, 3), np.uint8), {"ncols": 0}, ValueError, "ncols"),
        (np.zeros((2, 3, 3, 3), np.uint8), {"ncols": 1, "pad": -1}, ValueError, "pad"),
        (np.zeros((2, 3, 3, 3), np.uint8), {"ncols": 1, "labels": ["a"]}, ValueError, "1 labels for 2"),
        (np.zeros((3, 3, 3), np.uint8)[None, None], {"ncols": 1}, ValueError, r"\(N, H, W, 3\)"),
        (np.zeros((0, 3, 3, 3), np.uint8), {"ncols": 1}, ValueError, "N >= 1"),
        (np.zeros((2, 3, 3, 3), np.int32), {"ncols": 1}, TypeError, "uint8 or float"),
    ],
)
def test_grid_errors(images, kwargs, error, message):
    with pytest.raises(error, match=message):
        grid(images, **kwargs)


# ----------------------------------------------------------------- save_png


@pytest.mark.parametrize("shape", [(5, 7, 3), (5, 7), (5, 7, 4)])
def test_save_png_round_trips_and_leaves_no_temp_file(tmp_path, shape):
    image = np.random.default_rng(2).integers(0, 256, shape, dtype=np.uint8)
    path = save_png(image, tmp_path / "out.png")
    assert path == tmp_path / "out.png"
    with Image.open(path) as f:
        assert f.format == "PNG"
        np.testing.assert_array_equal(np.asarray(f), image)
    assert os.listdir(tmp_path) == ["out.png"]
    # Overwrite in place.
    save_png(255 - image, str(path))
    with Image.open(path) as f:
        np.testing.assert_array_equal(np.asarray(f), 255 - image)
    assert os.listdir(tmp_path) == ["out.png"]
    assert (path.stat().st_mode & 0o777) == 0o644


def test_save_png_failure_leaves_nothing_behind(tmp_path):
    (tmp_path / "taken").mkdir()  # os.replace onto a folder fails
    with pytest.raises(OSError):
        save_png(np.zeros((2, 2, 3), np.uint8), tmp_path / "taken")
    assert os.listdir(tmp_path) == ["taken"]
    with pytest.raises(OSError):
        save_png(np.zeros((2, 2, 3), np.uint8), tmp_path / "missing" / "a.png")


def test_save_png_errors():
    with pytest.raises(TypeError, match="uint8"):
        save_png(np.zeros((2, 2, 3), np.float32), "unused.png")
    with pytest.raises(ValueError, match=r"\(H, W, 3\)"):
        save_png(np.zeros((1, 2, 2, 3), np.uint8), "unused.png")

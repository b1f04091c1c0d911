"""Tests for jaxviz.data: torchvision's PIL evaluation pipeline, reproduced in NHWC.

The torchvision comparisons use an absolute tolerance of 1e-6. Resizing and cropping
go through the same Pillow calls as torchvision on the same 8-bit pixels, so they
are compared bit for bit; after ToTensor/Normalize both sides do the same float32
subtract-then-divide, which in practice is also bit-exact, but the values reach
|x| ~ 2.7 where one float32 ulp is 2.4e-7, and 1e-6 leaves room for a few ulps of
difference in how numpy and torch vectorise the division, without admitting any
real error (one 8-bit level is 1 / 255 / 0.229 ~ 0.017 after normalisation).
"""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

import jax
import jax.numpy as jnp

from jaxviz import data

ATOL = 1e-6
SAMPLES = ("chelsea", "coffee")


@pytest.fixture(scope="module")
def tv_transforms():
    pytest.importorskip("torch")
    tv = pytest.importorskip("torchvision")
    return tv.transforms


def _sample_path(name: str) -> str:
    import importlib.resources

    return str(importlib.resources.files("jaxviz") / "assets" / f"{name}.png")


def _torch_pipeline(transforms, pil: Image.Image, steps: list) -> np.ndarray:
    tf = transforms.Compose(
        steps + [transforms.ToTensor(), transforms.Normalize(data.IMAGENET_MEAN, data.IMAGENET_STD)]
    )
    return tf(pil).permute(1, 2, 0).numpy()


# ----------------------------------------------------------------- torchvision equivalence


@pytest.mark.parametrize("name", SAMPLES)
@pytest.mark.parametrize(
    "resize_to, crop",
    [(256, 224), (177, 131), (255, 223), ((97, 211), (50, 77)), (300, 224), (100, (131, 97))],
)
def test_preprocess_matches_torchvision_resize_crop(tv_transforms, name, resize_to, crop):
    T = tv_transforms
    path = _sample_path(name)
    pil = Image.open(path).convert("RGB")
    expected = _torch_pipeline(T, pil, [T.Resize(resize_to), T.CenterCrop(crop)])
    h, w = (crop, crop) if isinstance(crop, int) else crop
    for source in (path, pil, np.asarray(pil), data.sample_image(name)):
        x = data.preprocess(source, crop, resize=resize_to)
        assert x.shape == (1, h, w, 3) and x.dtype == np.float32
        np.testing.assert_allclose(x[0], expected, rtol=0, atol=ATOL)


@pytest.mark.parametrize("name", SAMPLES)
@pytest.mark.parametrize("size", [224, (224, 224), (97, 211), 131])
def test_preprocess_exact_matches_torchvision_resize_hw(tv_transforms, name, size):
    T = tv_transforms
    pil = Image.open(_sample_path(name)).convert("RGB")
    hw = (size, size) if isinstance(size, int) else size
    expected = _torch_pipeline(T, pil, [T.Resize(hw)])
    x = data.preprocess(data.sample_image(name), size, resize="exact")
    assert x.shape == (1, *hw, 3)
    np.testing.assert_allclose(x[0], expected, rtol=0, atol=ATOL)


@pytest.mark.parametrize("name", SAMPLES)
@pytest.mark.parametrize("size", [256, 123, 301, (61, 67)])
def test_resize_uint8_is_bit_exact(tv_transforms, name, size):
    pil = Image.open(_sample_path(name)).convert("RGB")
    expected = np.asarray(tv_transforms.Resize(size)(pil))
    got = data.resize(np.asarray(pil), size)
    assert got.dtype == np.uint8
    np.testing.assert_array_equal(got, expected)
    # A float image of k / 255 values takes the same 8-bit path.
    np.testing.assert_array_equal(data.resize(data.sample_image(name), size), expected / np.float32(255))
    as_f64 = data.sample_image(name).astype(np.float64)
    np.testing.assert_array_equal(data.resize(as_f64, size), expected / np.float32(255))


@pytest.mark.parametrize("image_hw", [(300, 451), (301, 452), (10, 7), (7, 10)])
@pytest.mark.parametrize("crop", [(224, 224), (123, 98), (5, 6), (12, 9), (400, 500)])
def test_center_crop_matches_torchvision(tv_transforms, image_hw, crop):
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (*image_hw, 3), dtype=np.uint8)
    expected = np.asarray(tv_transforms.CenterCrop(crop)(Image.fromarray(image)))
    got = data.center_crop(image, crop)
    assert got.shape == (*crop, 3)
    np.testing.assert_array_equal(got, expected)
    np.testing.assert_array_equal(np.asarray(data.center_crop(jnp.asarray(image), crop)), expected)


def test_normalize_matches_torchvision(tv_transforms):
    import torch

    rng = np.random.default_rng(1)
    x = rng.random((5, 7, 3), dtype=np.float32)
    expected = tv_transforms.Normalize(data.IMAGENET_MEAN, data.IMAGENET_STD)(
        torch.from_numpy(x).permute(2, 0, 1)
    ).permute(1, 2, 0).numpy()
    np.testing.assert_allclose(data.normalize(x), expected, rtol=0, atol=ATOL)


# ----------------------------------------------------------------- without torch


def test_resize_output_size_rounding():
    image = np.zeros((300, 451, 3), np.uint8)
    assert data.resize(image, 256).shape == (256, 384, 3)  # int(256 * 451 / 300) = int(384.85)
    assert data.resize(image.transpose(1, 0, 2), 256).shape == (384, 256, 3)
    assert data.resize(image, (17, 33)).shape == (17, 33, 3)
    same = data.resize(image, 300)
    assert same.shape == image.shape and same is not image


def test_resize_float_path_keeps_precision():
    rng = np.random.default_rng(2)
    image = rng.random((40, 60, 3), dtype=np.float32)  # not k / 255 values: float path
    out = data.resize(image, (20, 30))
    assert out.dtype == np.float32 and out.shape == (20, 30, 3)
    # The 8-bit path differs only by the rounding to 8 bits (half a level, plus slack
    # for the quantised input and Pillow's fixed-point weights).
    via_u8 = data.resize(image, (20, 30), via="uint8")
    assert np.abs(out - via_u8).max() <= 1.5 / 255
    assert np.abs(out - via_u8).max() > 0
    np.testing.assert_array_equal(data.resize(image, (20, 30), via="float"), out)
    # A constant image stays constant through the float path.
    np.testing.assert_allclose(data.resize(np.full((9, 9, 3), 0.3, np.float32), 4), 0.3, atol=1e-6)


def test_resize_and_crop_do_not_mutate():
    image = data.sample_image("chelsea")
    before = image.copy()
    data.preprocess(image)
    data.resize(image, 100, via="float")
    data.center_crop(image, 50)
    np.testing.assert_array_equal(image, before)


def test_preprocess_batches_and_modes():
    chelsea, coffee = data.sample_image("chelsea"), data.sample_image("coffee")
    x = data.preprocess([chelsea, coffee])
    assert x.shape == (2, 224, 224, 3) and x.dtype == np.float32
    np.testing.assert_array_equal(x[1], data.preprocess(coffee)[0])
    stacked = data.preprocess(np.stack([chelsea[:, :400], coffee[:300, :400]]))
    assert stacked.shape == (2, 224, 224, 3)
    only_crop = data.preprocess(chelsea, (100, 120), resize=None)
    np.testing.assert_array_equal(
        only_crop[0], data.normalize(data.center_crop(chelsea, (100, 120)))
    )
    assert data.preprocess(chelsea, (64, 32), resize="exact").shape == (1, 64, 32, 3)


def test_preprocess_unit_scale_and_grey():
    # scale="unit" stops before the normalization; grey averages its three channels.
    # Exact: the same float32 pixels, one mean.
    chelsea = data.sample_image("chelsea")
    unit = data.preprocess(chelsea, 40, resize="exact", scale="unit")
    np.testing.assert_array_equal(
        data.normalize(unit), data.preprocess(chelsea, 40, resize="exact"))
    assert 0 <= unit.min() and unit.max() <= 1
    grey = data.preprocess(chelsea, 40, resize="exact", grey=True)
    assert grey.shape == (1, 40, 40, 1)
    np.testing.assert_array_equal(grey, unit.mean(axis=-1, keepdims=True))
    with pytest.raises(ValueError, match="unknown scale"):
        data.preprocess(chelsea, scale="01")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_normalize_of_large_arrays_is_the_broadcast_formula_to_the_bit(dtype):
    """Large numpy arrays are normalized as (3, H*W) rows (faster); the result must be
    (x - mean) / std, elementwise, exactly as the small-array path computes it."""
    x = np.random.default_rng(5).random((2, 40, 50, 3)).astype(dtype)
    mean, std = np.asarray(data.IMAGENET_MEAN, dtype), np.asarray(data.IMAGENET_STD, dtype)
    got = data.normalize(x)
    assert got.dtype == dtype and got.shape == x.shape and got.flags.c_contiguous
    np.testing.assert_array_equal(got, (x - mean) / std)


def test_normalize_roundtrip_numpy_and_jax():
    x = np.random.default_rng(3).random((2, 4, 5, 3)).astype(np.float32)
    y = data.normalize(x)
    assert isinstance(y, np.ndarray) and y.dtype == np.float32
    np.testing.assert_allclose(data.denormalize(y), x, atol=1e-6)
    np.testing.assert_allclose(y[..., 0], (x[..., 0] - 0.485) / 0.229, rtol=1e-6)
    yj = jax.jit(data.normalize)(jnp.asarray(x))
    assert isinstance(yj, jax.Array)
    np.testing.assert_allclose(np.asarray(yj), y, atol=1e-6)
    np.testing.assert_allclose(np.asarray(data.denormalize(yj)), x, atol=1e-6)


def test_load_image_modes(tmp_path):
    rgb = np.random.default_rng(4).integers(0, 256, (6, 5, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "rgb.png")
    np.testing.assert_array_equal(data.load_image(tmp_path / "rgb.png"), rgb / np.float32(255))

    grey = rgb[..., 0]
    Image.fromarray(grey).save(tmp_path / "grey.png")
    loaded = data.load_image(tmp_path / "grey.png")
    assert loaded.shape == (6, 5, 3) and loaded.dtype == np.float32
    np.testing.assert_array_equal(loaded, np.repeat(grey[..., None], 3, -1) / np.float32(255))

    rgba = np.concatenate([rgb, np.full((6, 5, 1), 7, np.uint8)], axis=-1)
    Image.fromarray(rgba).save(tmp_path / "rgba.png")
    np.testing.assert_array_equal(data.load_image(tmp_path / "rgba.png"), rgb / np.float32(255))

    Image.fromarray(rgb).convert("P", palette=Image.Palette.ADAPTIVE, colors=8).save(tmp_path / "p.png")
    pal = data.load_image(tmp_path / "p.png")
    assert pal.shape == (6, 5, 3) and 0 <= pal.min() and pal.max() <= 1


def test_load_image_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no file exists"):
        data.load_image(tmp_path / "missing.png")
    (tmp_path / "notes.png").write_text("not an image")
    with pytest.raises(ValueError, match="expected an image file"):
        data.load_image(tmp_path / "notes.png")
    with pytest.raises(IsADirectoryError):
        data.load_image(tmp_path)


def test_input_errors():
    with pytest.raises(ValueError, match=r"\(H, W, 3\).*\(4, 4\)"):
        data.resize(np.zeros((4, 4), np.float32), 2)
    with pytest.raises(ValueError, match=r"\[0, 1\].*255"):
        data.preprocess(np.full((8, 8, 3), 255.0, np.float32))
    with pytest.raises(TypeError, match="dtype int64"):
        data.preprocess(np.zeros((8, 8, 3), np.int64))
    with pytest.raises(TypeError, match="got dict"):
        data.preprocess({"a": 1})
    with pytest.raises(ValueError, match="resize must be"):
        data.preprocess(data.sample_image(), resize="shorter")
    with pytest.raises(TypeError, match="size must be"):
        data.center_crop(np.zeros((4, 4, 3)), (1, 2, 3))
    with pytest.raises(ValueError, match=r"last axis.*\(2, 4\)"):
        data.normalize(np.zeros((2, 4), np.float32))
    with pytest.raises(ValueError, match="via must be"):
        data.resize(np.zeros((4, 4, 3), np.uint8), 2, via="nearest")
    with pytest.raises(ValueError, match="empty"):
        data.preprocess([])


def test_load_folder(tmp_path):
    rng = np.random.default_rng(5)
    for name in ("b.PNG", "a.jpg", "c.bmp"):
        Image.fromarray(rng.integers(0, 256, (30, 40, 3), dtype=np.uint8)).save(tmp_path / name)
    (tmp_path / "readme.txt").write_text("skip me")
    (tmp_path / "sub").mkdir()
    x, paths = data.load_folder(tmp_path, 16, resize=20)
    assert [p.name for p in paths] == ["a.jpg", "b.PNG", "c.bmp"]
    assert x.shape == (3, 16, 16, 3) and x.dtype == np.float32
    np.testing.assert_array_equal(x[1], data.preprocess(paths[1], 16, resize=20)[0])


def test_load_folder_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing exists"):
        data.load_folder(tmp_path / "nope")
    (tmp_path / "readme.txt").write_text("no images here")
    with pytest.raises(ValueError, match="found none"):
        data.load_folder(tmp_path)
    with pytest.raises(NotADirectoryError):
        data.load_folder(tmp_path / "readme.txt")


# ----------------------------------------------------------------- assets


def test_samples():
    assert data.sample_names() == ("chelsea", "coffee")
    chelsea = data.sample_image()
    assert chelsea.shape == (300, 451, 3) and chelsea.dtype == np.float32
    assert 0 <= chelsea.min() and chelsea.max() <= 1
    assert data.sample_image("coffee").shape == (400, 600, 3)
    with pytest.raises(ValueError, match="chelsea, coffee"):
        data.sample_image("astronaut")


def test_imagenet_classes():
    names = data.imagenet_classes()
    assert isinstance(names, tuple) and len(names) == 1000
    assert names[0] == "tench" and names[1] == "goldfish" and names[-1] == "toilet tissue"
    assert len(set(names)) == 1000


def test_imagenet_classes_match_torchvision():
    pytest.importorskip("torchvision")
    from torchvision.models._meta import _IMAGENET_CATEGORIES

    assert data.imagenet_classes() == tuple(_IMAGENET_CATEGORIES)


def test_decode_predictions():
    p = np.full(1000, 0.2 / 997)
    p[[281, 285, 7]] = [0.5, 0.2, 0.1]
    logits = np.log(p) + 3.0  # softmax is shift-invariant
    (row,) = data.decode_predictions(logits, top=3)
    assert [(i, name) for i, name, _ in row] == [(281, "tabby"), (285, "Egyptian cat"), (7, "cock")]
    np.testing.assert_allclose([prob for *_, prob in row], [0.5, 0.2, 0.1], rtol=1e-12)
    assert all(isinstance(i, int) and isinstance(prob, float) for i, _, prob in row)

    batch = data.decode_predictions(jnp.stack([jnp.zeros(1000), jnp.asarray(logits, jnp.float32)]), top=2)
    assert len(batch) == 2
    assert [i for i, *_ in batch[0]] == [0, 1]  # ties: increasing class index
    np.testing.assert_allclose(batch[0][0][2], 1e-3, rtol=1e-6)
    assert batch[1][0][:2] == (281, "tabby")

    ((small,),) = data.decode_predictions([1.0, 3.0], top=1, names=["no", "yes"])
    assert small[:2] == (1, "yes")
    np.testing.assert_allclose(small[2], 1 / (1 + np.exp(-2.0)), rtol=1e-12)

    with pytest.raises(ValueError, match="1000 logits"):
        data.decode_predictions(np.zeros((2, 10)))
    with pytest.raises(ValueError, match="top must be"):
        data.decode_predictions(np.zeros(1000), top=0)

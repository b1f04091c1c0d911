"""Filters, activation maps and histograms (jaxviz/analysis/maps.py).

The acceptance check: AlexNet's first-layer filter tiles, computed from a seeded
torchvision AlexNet ported to ours, equal the tiles computed straight from torch's
``features[0].weight`` under the same scaling, value for value and pixel for pixel,
in RGB order and (H, W) orientation. Histograms are checked against numpy.histogram
over all the activations at once, exactly.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxviz as jv
from conftest import torchvision_model
from jaxviz import render
from jaxviz.analysis import maps
from jaxviz.errors import InputError, InputTypeError, LayerError, ModelError
from jaxviz.models.modules import MaxPool2d, ReLU

torch = pytest.importorskip("torch")
from weights_port import from_torchvision  # noqa: E402

BACKEND_COMPILE = "/jax/core/compile/backend_compile_duration"
_COUNTERS: list[list[int]] = []


def _on_event(event: str, duration: float, **kwargs) -> None:
    if event == BACKEND_COMPILE:
        for counter in _COUNTERS:
            counter[0] += 1


jax.monitoring.register_event_duration_secs_listener(_on_event)


@pytest.fixture(scope="module")
def alexnet():
    """(torch model, our model, our variables): a seeded torchvision AlexNet, ported."""
    tmodel = torchvision_model("alexnet")
    model, variables = from_torchvision(tmodel)
    return tmodel, model, variables


def torch_sigmas(w: np.ndarray, n: float = 3) -> np.ndarray:
    """The seed's ``sigmas`` in numpy float64: mean and unbiased std of the whole array."""
    w = w.astype(np.float64)
    return (w - w.mean()) / (2 * n * w.std(ddof=1)) + 0.5


def rounding_ties(expected: np.ndarray) -> np.ndarray:
    """Where ``rint(255 * expected)`` is within float32 rounding of a tie (x.5)."""
    scaled = np.clip(expected, 0, 1) * 255
    return np.abs(scaled - np.floor(scaled) - 0.5) < 1e-3


# --- filters ---------------------------------------------------------------------------


def test_conv1_tiles_equal_the_torch_kernel_under_the_same_scaling(alexnet):
    tmodel, model, variables = alexnet
    weight = tmodel.features[0].weight.detach().numpy()  # (F, 3, kh, kw), RGB
    expected = np.clip(torch_sigmas(weight.transpose(0, 2, 3, 1)), 0, 1)  # (F, kh, kw, 3)
    k = maps.kernel(model, variables, "conv1")
    assert k.shape == (64, 11, 11, 3)
    tiles = maps.filter_tiles(k)
    assert tiles.shape == expected.shape and tiles.dtype == np.float32
    assert isinstance(tiles, np.ndarray) and tiles.channels is None
    np.testing.assert_array_equal(tiles.filters, np.arange(64))
    np.testing.assert_allclose(tiles, expected, rtol=0, atol=1e-6)
    assert tiles.min() >= 0 and tiles.max() <= 1

    # pixel for pixel: every tile of the drawing, 5x nearest-neighbour, 2 px gutters
    img = maps.draw_filters(tiles, labels=False, zoom=5, gutter=2, ncols=8)
    assert img.dtype == np.uint8 and img.shape == (8 * 55 + 9 * 2, 8 * 55 + 9 * 2, 3)
    want8 = np.rint(expected * 255).astype(np.int64)
    for f in range(64):
        top, left = 2 + (f // 8) * 57, 2 + (f % 8) * 57
        got = img[top:top + 55:5, left:left + 55:5].astype(np.int64)  # one pixel per weight
        np.testing.assert_array_equal(img[top:top + 55, left:left + 55],
                                      np.repeat(np.repeat(got, 5, 0), 5, 1))
        diff = np.abs(got - want8[f])
        assert diff.max() <= 1 and not (diff[~rounding_ties(expected[f])]).any(), f

    # the other scalings, against the same torch kernel
    w = weight.transpose(0, 2, 3, 1).astype(np.float64)
    top = np.abs(w).max(axis=(1, 2, 3), keepdims=True)
    np.testing.assert_allclose(maps.filter_tiles(k, scale="per_filter"), 0.5 + 0.5 * w / top,
                               rtol=0, atol=1e-6)
    np.testing.assert_allclose(maps.filter_tiles(k, scale="max_abs"),
                               0.5 + 0.5 * w / np.abs(w).max(), rtol=0, atol=1e-6)
    np.testing.assert_allclose(maps.filter_tiles(k, n=1), np.clip(torch_sigmas(w, 1), 0, 1),
                               rtol=0, atol=1e-6)


def test_orientation_rows_columns_and_rgb():
    k = np.zeros((2, 5, 5, 3), np.float32)
    k[1, 0, 2, 0] = 1.0  # filter 1: row 0, column 2, red
    tiles = maps.filter_tiles(k, scale="max_abs")
    expected = np.full(k.shape, 0.5, np.float32)
    expected[1, 0, 2] = (1.0, 0.5, 0.5)
    np.testing.assert_array_equal(tiles, expected)
    img = maps.draw_filters(tiles, labels=False, zoom=3, gutter=1, ncols=2)
    assert img.shape == (1 * 15 + 2, 2 * 15 + 3, 3)
    tile1 = img[1:16, 17:32]
    np.testing.assert_array_equal(tile1[0:3, 6:9], np.full((3, 3, 3), (255, 128, 128)))
    red = np.argwhere((tile1 == (255, 128, 128)).all(-1))
    assert red.min(0).tolist() == [0, 6] and red.max(0).tolist() == [2, 8]


def test_orientation_through_the_models_hwio_kernel(alexnet):
    """A single weight set in our HWIO kernel (row 0, column 2, input R, filter 7) and in
    torch's OIHW weight (7, R, 0, 2) is the same pixel of the same tile."""
    tmodel, model, variables = alexnet
    hwio = np.zeros((11, 11, 3, 64), np.float32)
    hwio[0, 2, 0, 7] = 1.0
    params = dict(variables["params"])
    params["features"] = {**params["features"], "0": {**params["features"]["0"],
                                                      "kernel": jnp.asarray(hwio)}}
    k = maps.kernel(model, {**variables, "params": params}, "features.0")
    tiles = maps.filter_tiles(k, scale="max_abs")
    oihw = np.zeros((64, 3, 11, 11), np.float32)
    oihw[7, 0, 0, 2] = 1.0
    np.testing.assert_array_equal(tiles, 0.5 + 0.5 * oihw.transpose(0, 2, 3, 1))
    assert tiles[7, 0, 2].tolist() == [1.0, 0.5, 0.5]


def test_deeper_layer_grid_selection_order_and_scalings(alexnet):
    _, model, variables = alexnet
    k = maps.kernel(model, variables, "conv2")
    assert k.shape == (192, 5, 5, 64)
    w = np.asarray(k, np.float64)

    default = maps.filter_tiles(k)  # the first 20 filters, their first 15 channels
    assert default.shape == (20, 15, 5, 5)
    np.testing.assert_array_equal(default.filters, np.arange(20))
    np.testing.assert_array_equal(default.channels, np.arange(15))
    whole = np.clip(torch_sigmas(w), 0, 1)  # statistics of the whole kernel
    np.testing.assert_allclose(default, whole[:20, :, :, :15].transpose(0, 3, 1, 2),
                               rtol=0, atol=1e-6)

    order = np.argsort(-np.abs(w).sum(axis=(1, 2, 3)))[:4]  # e.g. an ordering by norm
    chosen = maps.filter_tiles(k, filters=order, channels=[9, 2, 40])
    assert chosen.shape == (4, 3, 5, 5)
    np.testing.assert_array_equal(chosen.filters, order)
    np.testing.assert_array_equal(chosen.channels, [9, 2, 40])
    for i, f in enumerate(order):
        for j, c in enumerate([9, 2, 40]):
            np.testing.assert_allclose(chosen[i, j], whole[f, :, :, c], rtol=0, atol=1e-6)

    per = maps.filter_tiles(k, scale="per_filter", filters=3, channels=5)
    assert per.shape == (3, 5, 5, 5)
    for f in range(3):
        top = np.abs(w[f]).max()  # the filter's own largest |w|, over all 64 channels
        np.testing.assert_allclose(per[f], 0.5 + 0.5 * w[f, :, :, :5].transpose(2, 0, 1) / top,
                                   rtol=0, atol=1e-6)

    img = maps.draw_filters(chosen, labels=False, channel_labels=False, zoom=4, gutter=2)
    assert img.dtype == np.uint8 and img.shape == (4 * 22 + 2, 3 * 22 + 2, 3)
    np.testing.assert_array_equal(img[2:22, 24:44], np.repeat(np.repeat(
        np.rint(np.asarray(chosen[0, 1], np.float64) * 255), 4, 0), 4, 1)[..., None].repeat(3, -1))
    labelled = maps.draw_filters(chosen, zoom=4)  # filter indices left, channels on top
    assert labelled.dtype == np.uint8 and labelled.ndim == 3
    assert labelled.shape[0] > img.shape[0] and labelled.shape[1] > img.shape[1]
    np.testing.assert_array_equal(labelled[-img.shape[0]:, -img.shape[1]:], img)


def test_filter_tiles_rejects_bad_input():
    k = np.zeros((4, 3, 3, 8), np.float32)
    with pytest.raises(InputError, match="scale"):
        maps.filter_tiles(k, scale="loud")
    with pytest.raises(InputError, match="channel indices|indices in 0..7"):
        maps.filter_tiles(k, channels=[8])
    with pytest.raises(InputError, match="3 input channels"):
        maps.filter_tiles(k, rgb=True)
    with pytest.raises(InputError, match="4-D"):
        maps.filter_tiles(k[0])
    with pytest.raises(InputTypeError, match="float"):
        maps.filter_tiles(k.astype(np.int32))
    assert maps.filter_tiles(k).shape == (4, 8, 3, 3)  # zero kernel: mid-grey
    assert (maps.filter_tiles(k, scale="per_filter") == 0.5).all()


# --- kernel() --------------------------------------------------------------------------


def test_kernel_of_a_layer_that_is_not_a_convolution_or_not_there(alexnet):
    _, model, variables = alexnet
    for name in ("relu1", "features.2", "classifier.1"):
        with pytest.raises(LayerError, match=r"features\.0 \(conv1\).*features\.10 \(conv5\)"):
            maps.kernel(model, variables, name)
    with pytest.raises(LayerError, match="Closest: conv5"):
        maps.kernel(model, variables, "conv9")
    with pytest.raises(KeyError):  # LayerError is also a KeyError and a ValueError
        maps.kernel(model, variables, "nope")
    with pytest.raises(InputTypeError):
        maps.kernel(model, variables, 0)
    with pytest.raises(ModelError, match="no parameters for 'features.0'"):
        maps.kernel(model, {"params": {}}, "conv1")


def test_kernel_of_every_vgg11_convolution_is_hwio_transposed():
    model = jv.models.create("vgg11")
    shapes = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 224, 224, 3)))
    rng = np.random.default_rng(0)

    # values only where the test looks (a full seeded init of VGG11 takes seconds)
    def fill(path, leaf):
        if leaf.ndim == 4:
            return rng.standard_normal(leaf.shape).astype(np.float32)
        return np.zeros(leaf.shape, leaf.dtype)

    variables = jax.tree_util.tree_map_with_path(fill, shapes)
    convs = [info.path for info in jv.layer_names(model, 224) if info.kind == "Conv2d"]
    assert len(convs) == 8
    for path in convs:
        hwio = variables["params"]["features"][path.split(".")[1]]["kernel"]
        k = maps.kernel(model, variables, path)
        assert k.shape == (hwio.shape[3], hwio.shape[0], hwio.shape[1], hwio.shape[2])
        np.testing.assert_array_equal(k, hwio.transpose(3, 0, 1, 2))


# --- activation maps ---------------------------------------------------------------------


def test_activation_maps_stages_statistics_and_drawings(alexnet):
    _, model, variables = alexnet
    x = jnp.asarray(np.random.default_rng(0).standard_normal((1, 224, 224, 3)), jnp.float32)
    got = maps.activation_maps(model, variables, x, "conv1")
    assert list(got) == ["features.0", "features.1", "features.2"]
    assert [tuple(a.shape) for a in got.values()] == [(1, 55, 55, 64), (1, 55, 55, 64),
                                                      (1, 27, 27, 64)]
    conv, relu, pool = (np.asarray(a) for a in got.values())
    np.testing.assert_array_equal(relu, np.maximum(conv, 0))
    np.testing.assert_array_equal(pool, np.asarray(jv.activations(model, variables, x, "pool1")
                                                   ["pool1"]))
    assert list(maps.activation_maps(model, variables, x, "conv1", stages=False)) == ["features.0"]

    lines = maps.statistics(got)
    assert list(lines) == list(got)
    for name, a in got.items():
        assert lines[name] == render.summary(a, name=name)
        assert lines[name].startswith(f"{name} (1, ")

    img = maps.draw_maps(got["features.1"], labels=False, zoom=1, ncols=16)
    assert img.dtype == np.uint8 and img.shape == (4 * 55 + 5 * 2, 16 * 55 + 17 * 2, 3)
    expected = np.clip(np.asarray(render.pos_sigmas(relu[0], 2)) + 0.5, 0, 1)
    np.testing.assert_array_equal(img[2:57, 2 + 57 * 3: 57 * 4],
                                  np.rint(expected[..., 3:4] * 255).repeat(3, -1))
    signed = maps.draw_maps(conv[0], scale="sigmas", channels=[5, 1], labels=False, zoom=1)
    want = np.clip(np.asarray(render.sigmas(conv[0], 1)), 0, 1)[..., 1]  # whole-map statistics
    np.testing.assert_array_equal(signed[2:57, 59:114, 0], np.rint(want * 255))
    per = maps.draw_maps(pool, scale="per_channel", channels=3, ncols=3, zoom=2, labels=False)
    assert per.shape == (54 + 4, 3 * 54 + 8, 3)
    labelled = maps.draw_maps(pool[0], channels=[0, 63])  # default zoom 4, labels under tiles
    assert labelled.dtype == np.uint8 and labelled.shape[1] == 2 * 108 + 6
    assert labelled.shape[0] > 108 + 4

    with pytest.raises(InputError, match="one image"):
        maps.activation_maps(model, variables, jnp.concatenate([x, x]), "conv1")
    with pytest.raises(InputError, match=r"\(H, W, C\)"):
        maps.draw_maps(np.zeros((2, 5, 5, 3), np.float32))


class Block(nn.Module):
    """A user's model whose layer names sort otherwise than they run."""

    @nn.compact
    def __call__(self, x):
        x = nn.Conv(4, (3, 3), name="b_conv")(x)
        x = ReLU(name="c_relu")(x)
        x = MaxPool2d(2, 2, name="a_pool")(x)
        return nn.Conv(2, (1, 1), name="d_conv")(x)


def test_activation_maps_keep_forward_order_for_a_users_model():
    model = Block()
    x = jnp.asarray(np.random.default_rng(0).standard_normal((1, 8, 8, 3)), jnp.float32)
    variables = model.init(jax.random.key(0), x)
    got = maps.activation_maps(model, variables, x, "b_conv")
    assert list(got) == ["b_conv", "c_relu", "a_pool"]
    assert list(maps.statistics(got)) == ["b_conv", "c_relu", "a_pool"]
    assert maps.kernel(model, variables, "d_conv").shape == (2, 1, 1, 4)


def test_stages_follow_bn_relu_units_and_stop_at_the_next_layer():
    table = jv.layer_names(jv.models.create("googlenet"), 224)
    assert maps._stages(table, "conv1.conv") == ["conv1.conv", "conv1.bn", "conv1", "maxpool1"]
    assert maps._stages(table, "inception3a.branch2.1.conv") == [
        "inception3a.branch2.1.conv", "inception3a.branch2.1.bn", "inception3a.branch2.1"]
    vgg = jv.layer_names(jv.models.create("vgg11"), 224)
    assert maps._stages(vgg, "features.18") == ["features.18", "features.19", "features.20"]


# --- histograms --------------------------------------------------------------------------

LAYERS = ["conv1", "features.2", "conv2"]


@pytest.fixture(scope="module")
def population(alexnet):
    """Three 67 px images and every activation of LAYERS for them, as float64."""
    _, model, variables = alexnet
    images = np.random.default_rng(1).standard_normal((3, 67, 67, 3)).astype(np.float32)
    acts = jax.jit(lambda v, x: jv.activations(model, v, x, LAYERS))(variables, images)
    return images, {name: np.asarray(a, np.float64).ravel() for name, a in acts.items()}


@pytest.mark.parametrize("batch_size", [1, 2, 3])
def test_histograms_equal_numpy_over_all_activations(alexnet, population, batch_size):
    _, model, variables = alexnet
    images, acts = population
    fixed = maps.histograms(model, variables, images, LAYERS, bins=32, range=(-2.0, 2.0),
                            batch_size=batch_size)
    auto = maps.histograms(model, variables, images, LAYERS, bins=32, batch_size=batch_size)
    for name in LAYERS:
        counts, edges = fixed[name]
        want, want_edges = np.histogram(acts[name], bins=32, range=(-2.0, 2.0))
        assert counts.dtype == np.int64 and counts.shape == (32,) and edges.shape == (33,)
        np.testing.assert_array_equal(counts, want)
        np.testing.assert_array_equal(edges, want_edges)

        counts, edges = auto[name]
        lo, hi = acts[name].min(), acts[name].max()
        assert edges[0] == lo and edges[-1] == hi
        want, want_edges = np.histogram(acts[name], bins=32, range=(lo, hi))
        np.testing.assert_array_equal(counts, want)
        np.testing.assert_array_equal(edges, want_edges)
        assert counts.sum() == acts[name].size


class Identity(nn.Module):
    def __call__(self, x):
        return x


class Probe(nn.Module):
    """A user's model whose one layer returns the input: activations chosen by hand."""

    @nn.compact
    def __call__(self, x):
        return Identity(name="out")(x)


def edge_values(edges: np.ndarray, dtype) -> np.ndarray:
    """Every edge rounded to ``dtype``, its neighbours either side, and values outside."""
    near = edges.astype(dtype)
    values = np.concatenate([near, np.nextafter(near, dtype(np.inf)),
                             np.nextafter(near, dtype(-np.inf)),
                             np.array([edges[0] - 1, edges[-1] + 1], dtype)])
    return values.astype(dtype)


@pytest.mark.parametrize("x64", [False, True])
def test_histogram_bins_at_the_edges_are_numpys(x64):
    """Values a float32 rounding away from a float64 edge fall where numpy puts them
    (binning against edges rounded to nearest float32 would move some). No range has
    an edge at 0: XLA flushes the subnormal neighbours of 0 to zero (documented)."""
    with jax.enable_x64(x64):
        dtype = np.float64 if x64 else np.float32
        model = Probe()
        variables = {"params": {}}
        moved = 0
        for lo, hi, bins in [(0.1, 0.8, 7), (-1.3, 2.9, 13), (1e-3, 0.37, 64)]:
            edges = np.linspace(lo, hi, bins + 1)
            values = np.resize(edge_values(edges, dtype), 200)  # one shape for every range
            moved += int((edges.astype(np.float32).astype(np.float64) < edges).sum())
            x = values.reshape(2, 1, 100, 1)
            want, want_edges = np.histogram(values.astype(np.float64), bins, range=(lo, hi))
            for batch_size in (1, 2):
                counts, got_edges = maps.histograms(model, variables, x, "out", bins=bins,
                                                    range=(lo, hi), batch_size=batch_size)["out"]
                np.testing.assert_array_equal(counts, want)
                np.testing.assert_array_equal(got_edges, want_edges)
        assert moved > 0  # some edge rounds down to float32: the case that matters


def test_histograms_of_batches_iterators_and_bad_input(alexnet, population):
    _, model, variables = alexnet
    images, acts = population
    whole = maps.histograms(model, variables, images, "conv1", bins=16)
    batches = [images[:1], images[1:]]
    assert set(maps.histograms(model, variables, batches, "conv1", bins=16)) == {"conv1"}
    for got in (maps.histograms(model, variables, batches, "conv1", bins=16),
                maps.histograms(model, variables, iter(batches), "conv1", bins=16,
                                range=tuple(whole["conv1"][1][[0, -1]]))):
        np.testing.assert_array_equal(got["conv1"][0], whole["conv1"][0])
        np.testing.assert_array_equal(got["conv1"][1], whole["conv1"][1])

    with pytest.raises(InputError, match="one-shot iterator"):
        maps.histograms(model, variables, iter(batches), "conv1")
    with pytest.raises(InputError, match="range"):
        maps.histograms(model, variables, images, "conv1", range=(1.0, -1.0))
    with pytest.raises(LayerError):
        maps.histograms(model, variables, images, "conv9")
    with pytest.raises(InputError, match="NCHW"):
        maps.histograms(model, variables, images.transpose(0, 3, 1, 2), "conv1")


def test_second_calls_compile_nothing(alexnet, population):
    _, model, variables = alexnet
    images, _ = population
    calls = [lambda: maps.histograms(model, variables, images, LAYERS, batch_size=2),
             lambda: maps.activation_maps(model, variables, images[:1], "conv2"),
             lambda: maps.kernel(model, variables, "conv3")]
    for call in calls:
        jax.block_until_ready(call())
        counter = [0]
        _COUNTERS.append(counter)
        try:
            jax.block_until_ready(call())
        finally:
            _COUNTERS.remove(counter)
        assert counter[0] == 0


def test_draw_histogram_shape_and_bars():
    counts = np.array([0, 1, 4, 9, 4, 1, 0], np.int64)
    edges = np.linspace(-1, 1, 8)
    img = maps.draw_histogram(counts, edges)
    assert img.dtype == np.uint8 and img.shape == (160, 320, 3)
    tall = maps.draw_histogram(counts, edges, size=(100, 200), log=True, title="conv1")
    assert tall.shape == (100, 200, 3)
    bar = (img == (60, 60, 60)).all(-1)
    heights = bar.sum(0)
    assert heights.max() > 0 and heights[: 320 // 2].sum() > 0
    middle, side = heights[4 + (312 * 3) // 7 + 5], heights[4 + 312 // 7 + 5]
    assert middle > side > 0  # the tallest bin in the middle, a short one beside
    with pytest.raises(InputError):
        maps.draw_histogram(counts, edges[:-1])

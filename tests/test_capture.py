"""Layer names, aliases and activations: for the ported models and for any Linen model.

Shapes and values here are closed-form (torchvision's documented layer shapes, a
hand-built Linen model); agreement of the values with torch is in test_models.py.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxviz as jv
from jaxviz import _random
from conftest import count_primitive


def shapes_only(model, size=(64, 64)):
    """Abstract variables: enough to trace, nothing computed."""
    return jax.eval_shape(model.init, jax.random.key(0), jax.ShapeDtypeStruct((1, *size, 3), jnp.float32))


# --- layer tables ---------------------------------------------------------------------------


def test_alexnet_table_has_torchvision_shapes():
    model = jv.models.create("alexnet")
    table = {info.path: info for info in jv.layer_names(model, 224)}
    # torchvision AlexNet at 224: conv1 (64, 55, 55), pool1 27, conv2 27, pool2 13, pool3 6
    assert table["features.0"] == jv.LayerInfo("features.0", "conv1", (1, 55, 55, 64), "Conv2d")
    assert table["features.2"].shape == (1, 27, 27, 64) and table["features.2"].alias == "pool1"
    assert table["features.5"].shape == (1, 13, 13, 192)
    assert table["features.12"].shape == (1, 6, 6, 256)
    assert table["classifier.6"] == jv.LayerInfo("classifier.6", "fc8", (1, 1000), "Linear")
    assert list(table)[-1] == "classifier" and list(table)[0] == "features.0"
    # at 131x173 the adaptive pool maps conv5's 3x4 map onto 6x6
    small = {info.path: info.shape for info in jv.layer_names(model, (131, 173))}
    assert small["features.12"] == (1, 3, 4, 256) and small["avgpool"] == (1, 6, 6, 256)


ALIASES = {
    "alexnet": {**{f"conv{i}": "Conv2d" for i in range(1, 6)}, **{f"relu{i}": "ReLU" for i in range(1, 8)},
                **{f"pool{i}": "MaxPool2d" for i in range(1, 4)}, "fc6": "Linear", "fc7": "Linear",
                "fc8": "Linear"},
    "vgg16": {**{f"conv{b}_{i}": "Conv2d" for b, n in zip(range(1, 6), (2, 2, 3, 3, 3))
                 for i in range(1, n + 1)},
              **{f"relu{b}_{i}": "ReLU" for b, n in zip(range(1, 6), (2, 2, 3, 3, 3))
                 for i in range(1, n + 1)},
              **{f"pool{b}": "MaxPool2d" for b in range(1, 6)}, "fc8": "Linear"},
    "vgg19_bn": {"conv5_4": "Conv2d", "relu5_4": "ReLU", "pool5": "MaxPool2d"},
    "googlenet": {"conv1": "BasicConv2d", "maxpool1": "MaxPool2d", "conv2": "BasicConv2d",
                  "conv3": "BasicConv2d", "maxpool2": "MaxPool2d", "maxpool3": "MaxPool2d",
                  "maxpool4": "MaxPool2d", "avgpool": "AdaptiveAvgPool2d", "fc": "Linear",
                  **{f"inception{s}": "Inception" for s in ("3a", "3b", "4a", "4b", "4c", "4d", "4e",
                                                             "5a", "5b")}},
}


@pytest.mark.parametrize("arch", sorted(ALIASES))
def test_friendly_names_resolve_to_the_right_layers(arch):
    model = jv.models.create(arch)
    table = jv.layer_names(model, 64)
    by_name = {info.path: info for info in table}
    by_name.update({info.alias: info for info in table if info.alias})
    for name, kind in ALIASES[arch].items():
        assert name in by_name, f"{arch} has no layer {name!r}"
        assert by_name[name].kind == kind, (name, by_name[name])


def test_vgg_aliases_follow_blocks():
    table = jv.layer_names(jv.models.create("vgg16_bn"), 64)
    alias = {info.alias: info.path for info in table if info.alias}
    # vgg16_bn features: conv1_1 = 0, bn 1, relu 2, conv1_2 = 3, ..., pool1 = 6, conv2_1 = 7
    assert (alias["conv1_1"], alias["relu1_1"], alias["conv1_2"], alias["pool1"], alias["conv2_1"]) == (
        "features.0", "features.2", "features.3", "features.6", "features.7")
    assert alias["pool5"] == "features.43" and alias["fc6"] == "classifier.0"


def test_size_arguments():
    model = jv.models.create("alexnet")
    assert jv.layer_names(model, 100) == jv.layer_names(model, (100, 100))
    assert jv.layer_names(model, (1, 100, 100, 3)) == jv.layer_names(model, (100, 100))
    assert jv.layer_names(model, (100, 100, 3)) == jv.layer_names(model, (100, 100))
    with pytest.raises(ValueError, match="size must be"):
        jv.layer_names(model, (1, 2, 3, 4, 5))
    # the channels of an int or (H, W) size are the model's own
    lenet = jv.models.create("lenet")
    assert jv.layer_names(lenet, 28)[0].shape == (1, 28, 28, 16)
    assert jv.layer_names(lenet, (28, 28, 1)) == jv.layer_names(lenet, 28)


# --- activations -------------------------------------------------------------------------


# (convolutions, dot products) of the whole forward at 128x128: AlexNet 5 convs, 3 linears
# and 2 for the adaptive pool (rows, then columns: 3x3 -> 6x6); VGG11 8 convs, 3 + 2;
# GoogLeNet 3 + 9 x 6 convs, 1 linear (its adaptive pool to 1x1 is a mean). At this size
# no map is tiny enough for conv2d's one-matrix-product form (models/layers.py).
FULL = {"alexnet": (5, 5), "vgg11": (8, 5), "googlenet": (57, 1)}


@pytest.mark.parametrize(("arch", "layer", "convs", "linears"), [
    ("alexnet", "conv2", 2, 0), ("alexnet", "relu2", 2, 0), ("alexnet", "fc7", 5, 4),
    ("vgg11", "features.3", 2, 0), ("vgg11", "pool5", 8, 0),
    # googlenet: conv1..conv3, then inception3a's 1x1 branch and both convs of branch2
    ("googlenet", "inception3a.branch2.1", 6, 0), ("googlenet", "conv1", 1, 0),
])
def test_forward_stops_at_the_last_requested_layer(arch, layer, convs, linears):
    model = jv.models.create(arch)
    variables = shapes_only(model)
    x = jax.ShapeDtypeStruct((1, 128, 128, 3), jnp.float32)
    for run, counts in [(lambda v, x: jv.activations(model, v, x, [layer]), (convs, linears)),
                        (model.apply, FULL[arch])]:
        jaxpr = jax.make_jaxpr(run)(variables, x)
        assert (count_primitive(jaxpr, "conv_general_dilated"), count_primitive(jaxpr, "dot_general")) == counts


def test_unknown_layer_suggests_close_names():
    model = jv.models.create("alexnet")
    variables = shapes_only(model)
    x = jax.ShapeDtypeStruct((1, 64, 64, 3), jnp.float32)
    with pytest.raises(KeyError) as info:
        jax.eval_shape(lambda v, x: jv.activations(model, v, x, ["conv6"]), variables, x)
    message = info.value.args[0]
    assert "no layer 'conv6' in AlexNet" in message and "conv5" in message
    with pytest.raises(KeyError, match="features.12"):
        jax.eval_shape(lambda v, x: jv.activations(model, v, x, ["features.13"]), variables, x)
    with pytest.raises(TypeError, match="layer names are strings"):
        jax.eval_shape(lambda v, x: jv.activations(model, v, x, [3]), variables, x)


def test_inputs_too_small_for_later_layers():
    # AlexNet at 44 px: conv2's map is 4x4 and maxpool3 (features.12) has a 1x1 input.
    # Everything before the failing layer is listed (partial=True), captured and
    # optimized; past it, or with the strict listing, the size error is raised.
    model = jv.models.create("alexnet")
    variables = shapes_only(model)  # the parameters do not depend on the size
    with pytest.raises(ValueError, match="pooling window 3"):
        jv.layer_names(model, 44)
    table = jv.layer_names(model, 44, partial=True)
    assert [t.path for t in table] == [f"features.{i}" for i in range(12)]
    assert table[-1] == jv.LayerInfo("features.11", "relu5", (1, 1, 1, 256), "ReLU")
    assert {t.path: t.shape for t in table}["features.3"] == (1, 4, 4, 192)
    x = jax.ShapeDtypeStruct((2, 44, 44, 3), jnp.float32)
    out = jax.eval_shape(lambda v, x: jv.activations(model, v, x, ["conv2", "relu5"]), variables, x)
    assert out["conv2"].shape == (2, 4, 4, 192) and out["relu5"].shape == (2, 1, 1, 256)
    for name in ["fc6", "pool5", "conv9"]:
        with pytest.raises(ValueError, match=f"no layer '{name}' among the 12 layers AlexNet "
                                             r"reaches at this input size.*features\.11.*pooling"):
            jax.eval_shape(lambda v, x: jv.activations(model, v, x, [name]), variables, x)
    _, real = jv.load("alexnet")  # seeded random values (numpy draws: no init program)
    images = jv.synthesis.sweep(model, real, "conv2", [0, 5], key=jax.random.key(0), steps=2,
                                size=44, progress=False)
    assert images.shape == (2, 44, 44, 3) and bool(jnp.all((images >= 0) & (images <= 1)))


class TinyNet(nn.Module):
    """A user's own Linen model: not one of ours, no stop_at, no aliases."""

    @nn.compact
    def __call__(self, x):
        x = nn.relu(nn.Conv(4, (3, 3), padding="VALID")(x))
        x = nn.Conv(2, (1, 1), use_bias=False, name="head")(x)
        return nn.Dense(3)(x.reshape(x.shape[0], -1))


def test_any_linen_model():
    model = TinyNet()
    x = _random.normal(jax.random.key(1), (2, 6, 5, 3))
    variables = model.init(jax.random.key(0), x)
    table = jv.layer_names(model, (6, 5))
    assert [(i.path, i.alias, i.shape, i.kind) for i in table] == [
        ("Conv_0", None, (1, 4, 3, 4), "Conv"), ("head", None, (1, 4, 3, 2), "Conv"),
        ("Dense_0", None, (1, 3), "Dense")]
    acts = jv.activations(model, variables, x, ["head", "Conv_0"])
    p = variables["params"]
    conv0 = jax.lax.conv_general_dilated(x, p["Conv_0"]["kernel"], (1, 1), "VALID",
                                         dimension_numbers=("NHWC", "HWIO", "NHWC")) + p["Conv_0"]["bias"]
    np.testing.assert_allclose(acts["Conv_0"], conv0, rtol=1e-6, atol=1e-6)
    head = jnp.einsum("nhwc,cd->nhwd", jax.nn.relu(conv0), p["head"]["kernel"][0, 0])
    np.testing.assert_allclose(acts["head"], head, rtol=1e-5, atol=1e-6)
    assert list(acts) == ["head", "Conv_0"]


def test_activations_follow_an_active_interceptor_and_do_not_keep_it():
    """``jv.activations`` is compiled and cached, but a Linen interceptor changes the
    forward pass without changing the cache's key: under one it must run what the
    interceptor makes of the model, and neither call may leak into the other's cache
    (either order: compiled first, or a layer list first seen under the interceptor)."""
    model = TinyNet()
    x = _random.normal(jax.random.key(1), (2, 6, 5, 3))
    variables = model.init(jax.random.key(0), x)

    def doubled_head(next_fun, args, kwargs, context):
        out = next_fun(*args, **kwargs)
        head = context.method_name == "__call__" and context.module.path == ("head",)
        return out * 2 if head else out

    plain = np.asarray(jv.activations(model, variables, x, ["head"])["head"])  # compiled
    with nn.intercept_methods(doubled_head):
        seen = jv.activations(model, variables, x, ["head"])["head"]
        first_seen_here = jv.activations(model, variables, x, ["head", "Dense_0"])
    np.testing.assert_array_equal(seen, 2 * plain)
    np.testing.assert_array_equal(first_seen_here["head"], 2 * plain)
    after = jv.activations(model, variables, x, ["head", "Dense_0"])
    np.testing.assert_array_equal(after["head"], plain)
    assert not np.allclose(after["Dense_0"], first_seen_here["Dense_0"])


def test_alias_and_path_give_the_same_array():
    model = TinyNet()
    x = jnp.ones((1, 6, 5, 3))
    variables = model.init(jax.random.key(0), x)
    assert jv.activations(model, variables, x, "Dense_0")["Dense_0"].shape == (1, 3)
    alexnet, v = jv.load("alexnet")  # seeded random values (numpy draws: no init program)
    xa = _random.normal(jax.random.key(2), (1, 64, 64, 3))
    acts = jv.activations(alexnet, v, xa, ["conv2", "features.3", "relu2"])
    assert np.array_equal(acts["conv2"], acts["features.3"])
    np.testing.assert_array_equal(acts["relu2"], np.maximum(acts["conv2"], 0))

"""Every name ``jv.load`` accepts, through every public path (docs/architecture.md,
"Public contract").

Generated from the registry (``jaxviz.models.ARCHITECTURES`` and ``BUNDLED``): a model
added there is walked through ``load`` -> ``layer_names`` -> ``activations`` of every
listed layer in one call -> a gradient attribution -> Grad-CAM at its last spatial
layer -> a short ``visualize`` -> the ``jaxviz layers`` command, with no test written
for it. What a model takes comes from its ``input_spec()``; ImageNet models run at
64 px (every architecture accepts it; 224 would only make the suite slower).

These are contract checks (shapes, dtypes, finiteness, that each path runs and agrees
with the others); the numbers are checked against PyTorch in test_models.py,
test_attribution.py and test_synthesis_torch.py.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxviz as jv
from jaxviz.models.modules import input_spec
from test_cli import run, table_rows

NAMES = [*jv.models.ARCHITECTURES, *jv.models.BUNDLED]
IMAGENET_SIZE = 64
BATCH = 2


def contract_input(model) -> np.ndarray:
    """A (2, ...) batch the model takes: noise at 64 px (ImageNet models), at the
    model's own size ([0, 1] image models), or vectors."""
    spec = input_spec(model)
    rng = np.random.default_rng(0)
    if spec.kind == "vector":
        return rng.standard_normal((BATCH, spec.channels)).astype(np.float32)
    if spec.scale == "imagenet":
        return rng.standard_normal((BATCH, IMAGENET_SIZE, IMAGENET_SIZE, spec.channels),
                                   dtype=np.float32)
    return rng.random((BATCH, spec.size, spec.size, spec.channels), dtype=np.float32)


@pytest.fixture(scope="module", params=NAMES)
def loaded(request):
    name = request.param
    model, variables = jv.load(name)
    x = contract_input(model)
    table = jv.layer_names(model, x.shape[1:] if x.ndim == 4 else x.shape)
    return name, model, variables, x, table


def test_registry_names_all_declare_their_input():
    for name in NAMES:
        architecture = jv.models.BUNDLED[name]()[0] if name in jv.models.BUNDLED else name
        spec = input_spec(jv.models.create(architecture))
        assert spec is not None and spec.kind in ("image", "vector"), name


def test_random_variables_have_init_structure_and_finite_values(loaded):
    """``load``'s seeded random variables (numpy draws, jaxviz/models/loading.py) have
    exactly the tree, shapes and dtypes ``model.init`` makes (traced, not run)."""
    name, model, variables, x, table = loaded
    from jaxviz.models.modules import example_shape

    shapes = jax.eval_shape(model.init, jax.random.key(0),
                            jax.ShapeDtypeStruct(example_shape(model, 64), jnp.float32))
    assert jax.tree_util.tree_structure(variables) == jax.tree_util.tree_structure(shapes), name
    for got, want in zip(jax.tree_util.tree_leaves(variables), jax.tree_util.tree_leaves(shapes)):
        assert (got.shape, got.dtype) == (want.shape, want.dtype), name
        assert np.isfinite(np.asarray(got)).all(), name


# A 3x3 convolution kernel (fan_in 144, fan_out 288) and a linear kernel (fan_in 256),
# each with the bias of its layer.
INIT_SHAPES = [(3, 3, 16, 32), (256, 48)]


@pytest.mark.parametrize("shape", INIT_SHAPES, ids=str)
def test_random_draws_follow_the_initializers(shape):
    """Each initializer ``load`` draws for with numpy (``loading.INITIALIZERS``, and
    torch's default bias) against the jax initializer the model's ``init`` calls, on the
    same shape: the same constant exactly; or the same kind of distribution (uniform:
    inside the same +-bound and reaching 0.9 of it; normal: tails past 2.5 sigma) with
    the same standard deviation within 10% (4608 or more draws: sampling error ~1% per
    sigma) or, for a bias of 32 or 48 draws, within 40% (~12% per sigma)."""
    from jaxviz.models import loading, modules

    key = jax.random.key(0)
    cases = [(init, shape, loading.INITIALIZERS[init](shape)) for init in loading.INITIALIZERS]
    bias = modules.torch_default_bias_init(int(np.prod(shape[:-1])))  # what a layer gets
    cases.append((bias, shape[-1:], loading._uniform_fan_in(shape)))
    for init, drawn, (kind, parameter) in cases:
        want = np.asarray(jax.jit(init, static_argnums=1)(key, drawn), np.float64)
        got = loading._draw(np.random.default_rng(0), kind, parameter, drawn).astype(np.float64)
        if kind == "constant":
            np.testing.assert_array_equal(got, parameter)
            np.testing.assert_array_equal(want, parameter)
            continue
        many = want.size > 1000
        if kind == "uniform":
            for a in (got, want):
                assert (0.9 if many else 0.7) * parameter <= np.abs(a).max() <= parameter
            std = parameter / np.sqrt(3)
        else:
            std = parameter
            for a in (got, want):
                assert np.abs(a).max() > 2.5 * std
        for a in (got, want):
            assert abs(a.std() / std - 1) <= (0.1 if many else 0.4), (init, drawn, kind, std)
    assert len(cases) == 7


def test_random_weights_are_seeded_per_leaf():
    """The same seed gives the same variables, another seed other ones; each leaf has its
    own stream, so another ``num_classes`` changes the classifier only."""
    _, a = jv.load("lenet")
    _, b = jv.load("lenet", seed=0)
    _, c = jv.load("lenet", seed=1)
    _, d = jv.load("lenet", num_classes=3)
    flat = dict(jax.tree_util.tree_flatten_with_path(a)[0])
    for path, leaf in jax.tree_util.tree_flatten_with_path(b)[0]:
        np.testing.assert_array_equal(leaf, flat[path])
    other = dict(jax.tree_util.tree_flatten_with_path(c)[0])
    assert all(not np.array_equal(leaf, other[path]) for path, leaf in flat.items()
               if np.asarray(leaf).std() > 0)
    changed = {jax.tree_util.keystr(path)
               for path, leaf in jax.tree_util.tree_flatten_with_path(d)[0]
               if leaf.shape != flat[path].shape or not np.array_equal(leaf, flat[path])}
    assert changed and all("classifier" in p for p in changed), changed


def test_layer_table_lists_the_inference_layers_in_order(loaded):
    name, model, variables, x, table = loaded
    paths = [info.path for info in table]
    assert len(paths) == len(set(paths)) > 0, name
    # nothing that runs only in training (GoogLeNet's auxiliary heads)
    assert not [p for p in paths if p.startswith("aux")], name
    # the table is the order in which the layers return: a container after its children
    for i, path in enumerate(paths):
        for child in paths[i + 1:]:
            assert not child.startswith(path + "."), (name, path, child)
    # every alias names a listed layer
    for alias, path in jv.capture.aliases(model).items():
        assert path in paths, (name, alias, path)


def test_activations_of_every_layer_in_one_call(loaded):
    name, model, variables, x, table = loaded
    acts = jv.activations(model, variables, x, [info.path for info in table])
    assert list(acts) == [info.path for info in table]
    for info in table:
        a = acts[info.path]
        assert a.shape == (BATCH, *info.shape[1:]), (name, info.path, a.shape, info.shape)
        assert a.dtype == jnp.float32 and np.isfinite(np.asarray(a)).all(), (name, info.path)
    # the last layer is the classifier: its activation is the model's output
    logits = jax.jit(model.apply)(variables, x)  # compiled: eagerly, GoogLeNet takes ~10 s
    np.testing.assert_allclose(acts[table[-1].path], logits, rtol=1e-5, atol=1e-6)
    # an alias gives the same array as its path
    for alias, path in list(jv.capture.aliases(model).items())[:2]:
        np.testing.assert_array_equal(jv.activations(model, variables, x, alias)[alias],
                                      acts[path])


def test_gradient_attribution(loaded):
    name, model, variables, x, table = loaded
    target = np.array([0, 1])
    g = jv.attribution.gradient(model, variables, x, target)
    assert g.shape == x.shape and g.dtype == x.dtype, name
    g = np.asarray(g)
    assert np.isfinite(g).all(), name
    assert (np.abs(g).reshape(BATCH, -1).max(1) > 0).all(), name  # every example has one


def test_grad_cam_at_the_last_spatial_layer(loaded):
    name, model, variables, x, table = loaded
    spatial = [info for info in table if len(info.shape) == 4]
    if x.ndim != 4:
        assert not spatial
        with pytest.raises(jv.ModelError, match="works on images"):
            jv.attribution.grad_cam(model, variables, x, 0, layer=table[0].path)
        return
    layer = spatial[-1].path
    cam, raw = jv.attribution.grad_cam(model, variables, x, np.array([0, 1]), layer=layer,
                                       return_raw=True)
    assert cam.shape == (BATCH, *x.shape[1:3]) and raw.shape == (BATCH, *spatial[-1].shape[1:3])
    assert np.isfinite(np.asarray(cam)).all() and float(cam.min()) >= 0, name


def test_short_visualize(loaded):
    name, model, variables, x, table = loaded
    if x.ndim != 4:
        with pytest.raises(jv.ModelError, match="synthesis makes images"):
            jv.synthesis.visualize(model, variables, 0, key=jax.random.key(0), steps=1)
        return
    first = next(info for info in table if len(info.shape) == 4)  # cheap: stops there
    size = x.shape[1]
    r = jv.synthesis.visualize(model, variables, jv.objectives.channel(first.path, 1),
                               key=jax.random.key(0), steps=2, size=size, transforms=None)
    assert r.images.shape == (1, size, size, 3) and r.objective.shape == (2, 1), name
    images = np.asarray(r.images)
    assert np.isfinite(images).all() and images.min() >= 0 and images.max() <= 1
    # an out-of-range channel of the same layer is refused before anything runs
    with pytest.raises(jv.InputError, match="out of range"):
        jv.synthesis.visualize(model, variables, jv.objectives.channel(first.path, 10_000),
                               key=jax.random.key(0), steps=1, size=size, transforms=None)


def test_layers_command(loaded):
    name, model, variables, x, table = loaded
    argv = ["layers", name]
    spec = input_spec(model)
    if spec.kind == "image" and spec.scale == "imagenet":
        argv += ["--size", str(IMAGENET_SIZE)]
    code, out, err = run(argv)
    assert code == 0, err
    listed = [row[0] for row in table_rows(out)]
    assert listed == [info.path for info in jv.layer_names(
        model, x.shape[1:] if x.ndim == 4 else x.shape)], name


def test_expanded_weights_and_top_connections(loaded):
    """Expanded weights between the first two layers that have weights (convolutions, or
    the dense layers of a vector model) at width 3, and a unit's top connections to the
    previous one; their rankings agree (closed forms: tests/test_weights.py)."""
    name, model, variables, x, table = loaded
    from jaxviz.analysis import weights

    kinds = ("Conv2d", "Linear") if x.ndim == 2 else ("Conv2d",)
    first, second = [info for info in table if info.kind in kinds][:2]
    e = np.asarray(weights.expanded_weights(model, variables, first.path, second.path, width=3))
    width = 1 if x.ndim == 2 else 3
    assert e.shape == (width, width, first.shape[-1], second.shape[-1]), name
    assert np.isfinite(e).all() and np.abs(e).max() > 0, name
    found = weights.top_connections(model, variables, second.path, 0, previous=first.path,
                                    next=None, width=3, k=3)
    norms = np.sqrt((e[..., 0].astype(np.float64) ** 2).sum(axis=(0, 1)))
    np.testing.assert_array_equal(found["previous"].channels,
                                  np.argsort(-norms, kind="stable")[:3])


def test_filters_activation_maps_and_features(loaded):
    """Every model's first convolution as filter tiles and as activation maps (with the
    stages after it), and pooled features of its last layer, drawn (numbers:
    tests/test_maps.py, tests/test_embeddings.py)."""
    name, model, variables, x, table = loaded
    from jaxviz.analysis import embeddings, maps

    convs = maps.conv_layers(model, variables)
    if x.ndim == 2:
        assert not convs, name
        f = embeddings.features(model, variables, x, [table[-1].path], progress=False)
        assert f[table[-1].path].shape == (BATCH, table[-1].shape[-1]), name
        return
    k = np.asarray(maps.kernel(model, variables, convs[0]))
    assert k.shape[0] == table[[i.path for i in table].index(convs[0])].shape[-1], name
    sheet = maps.draw_filters(maps.filter_tiles(k))
    assert sheet.dtype == np.uint8 and sheet.ndim == 3, name
    found = maps.activation_maps(model, variables, x[:1], convs[0])
    assert list(found)[0] == convs[0] and len(found) >= 2, (name, list(found))
    for path, a in found.items():
        info = table[[i.path for i in table].index(path)]
        assert a.shape == (1, *info.shape[1:]), (name, path)
        assert maps.draw_maps(a).dtype == np.uint8
    f = embeddings.features(model, variables, x, [convs[-1]], progress=False, batch_size=1)
    assert f[convs[-1]].shape == (BATCH, k.shape[0] if len(convs) == 1 else
                                  table[[i.path for i in table].index(convs[-1])].shape[-1])

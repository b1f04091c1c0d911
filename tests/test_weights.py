"""Expanded weights against their closed forms, top connections, PCA order and NMF.

Expanded weights are a composition of the weights (docs/architecture.md, "Looking at
weights"): between two convolutions with a ReLU between them, the two kernels composed;
across a max pool, the composition with the average pool; through a conv block, the
kernel times its BatchNorm scale. Each closed form is built here in numpy (float64)
from the torch model's own tensors, independently of the port. Tolerances: conftest.py
(float32 1e-5, float64 1e-12, relative to the largest magnitude).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxviz as jv
from conftest import F32_TOL, F64_TOL, max_rel_err, torchvision_model
from test_compile import Compilations
from jaxviz.analysis import weights as W
from jaxviz.models.modules import input_spec
from jaxviz.static import static

torch = pytest.importorskip("torch")
from weights_port import from_torchvision  # noqa: E402

TOL = {"float32": F32_TOL, "float64": F64_TOL}


def hwio(conv) -> np.ndarray:
    """A torch Conv2d's weight (O, I, kh, kw) as (kh, kw, I, O) float64."""
    return conv.weight.detach().double().numpy().transpose(2, 3, 1, 0)


def bn_scale(bn) -> np.ndarray:
    return (bn.weight.detach().double() / torch.sqrt(bn.running_var.double() + bn.eps)).numpy()


def place(k: np.ndarray, width: int, centre: int, stride: int = 1, pad: int = 0) -> np.ndarray:
    """The gradient of a convolution's output at (centre, centre) with respect to its
    (width, width) input: kernel tap (a, b) lands at ``centre * stride - pad + (a, b)``."""
    out = np.zeros((width, width, *k.shape[2:]))
    for a in range(k.shape[0]):
        for b in range(k.shape[1]):
            y, x = centre * stride - pad + a, centre * stride - pad + b
            if 0 <= y < width and 0 <= x < width:
                out[y, x] += k[a, b]
    return out


def compose(k1: np.ndarray, k2: np.ndarray, width: int, centre: int) -> np.ndarray:
    """conv(k2, pad 1) after conv(k1, pad 1), both 3x3 stride 1, with its output at the
    centre: tap b of k2 reads position centre - 1 + b of the middle map, whose tap a reads
    centre - 2 + a + b of the input; sum of k1[a] @ k2[b] (k1 (3, 3, I, M), k2 (3, 3, M, O))."""
    out = np.zeros((width, width, k1.shape[2], k2.shape[3]))
    for a in np.ndindex(3, 3):
        for b in np.ndindex(3, 3):
            mid = (centre - 1 + b[0], centre - 1 + b[1])
            y, x = mid[0] - 1 + a[0], mid[1] - 1 + a[1]
            if 0 <= min(mid) and max(mid) < width and 0 <= min(y, x) and max(y, x) < width:
                out[y, x] += k1[a] @ k2[b]
    return out


def ported(name: str, dtype: str, tmodel=None, **kwargs):
    """(the torch model in float64, our model, its variables in ``dtype``)."""
    tmodel = torchvision_model(name, **kwargs) if tmodel is None else tmodel
    with jax.enable_x64(dtype == "float64"):
        model, variables = from_torchvision(tmodel.to(getattr(torch, dtype)))
    return tmodel.double(), model, variables


@pytest.fixture(scope="module")
def torch_vgg16():
    return torchvision_model("vgg16")  # built once (138M parameters), ported per dtype


def expanded(model, variables, a, b, width, dtype):
    with jax.enable_x64(dtype == "float64"):
        e = W.expanded_weights(model, variables, a, b, width=width)
        assert e.dtype == jnp.dtype(dtype)
        return np.asarray(e, np.float64)


@pytest.fixture(scope="module", params=["float32", "float64"])
def alexnet(request):
    return (request.param, *ported("alexnet", request.param))


@pytest.mark.parametrize("width", [5, 7])
def test_alexnet_two_convolutions_with_a_relu_between_compose(alexnet, width):
    # features.5 (max pool) -> conv3 (features.6) -> ReLU -> conv4 (features.8)
    dtype, tmodel, model, variables = alexnet
    k3, k4 = hwio(tmodel.features[6]), hwio(tmodel.features[8])
    centre = (width - 1) // 2
    got = expanded(model, variables, "features.5", "features.8", width, dtype)
    want = compose(k3, k4, width, centre)
    assert got.shape == (width, width, 192, 256)
    assert max_rel_err(got, want) <= TOL[dtype]
    if width == 7:  # the border beyond both kernels' reach is exactly zero
        assert not got[0].any() and not got[:, -1].any()
    # from conv3's output: conv4's kernel alone, placed at the centre
    got = expanded(model, variables, "conv3", "features.8", width, dtype)
    assert max_rel_err(got, place(k4, width, centre, pad=1)) <= TOL[dtype]


def test_alexnet_across_a_max_pool_is_the_average_pool_composition(alexnet):
    # conv1 (features.0) -> ReLU -> max pool 3x3 stride 2 -> conv2 (5x5, padding 2)
    dtype, tmodel, model, variables = alexnet
    width = 11  # pooled to 5 x 5; conv2's centre 2 reads pooled 0..4
    k2 = hwio(tmodel.features[3])
    pooled = place(k2, 5, 2, pad=2)  # gradient at the pool's output
    want = np.zeros((width, width, *k2.shape[2:]))
    for q in np.ndindex(5, 5):  # each pooled unit shares its gradient over its 3x3 window
        want[2 * q[0]: 2 * q[0] + 3, 2 * q[1]: 2 * q[1] + 3] += pooled[q] / 9
    got = expanded(model, variables, "features.0", "features.3", width, dtype)
    assert max_rel_err(got, want) <= TOL[dtype]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_vgg16_across_a_max_pool_and_two_convolutions(torch_vgg16, dtype):
    tmodel, model, variables = ported("vgg16", dtype, torch_vgg16)
    k12, k21 = hwio(tmodel.features[2]), hwio(tmodel.features[5])
    # conv1_2's output -> ReLU -> max pool 2x2 -> conv2_1: each pooled tap spread over its
    # 2x2 block, a quarter each; at width 7 the last row and column belong to no window.
    for width in (8, 7):
        pooled = place(k21, width // 2, (width // 2 - 1) // 2, pad=1)
        want = np.zeros((width, width, *k21.shape[2:]))
        want[: width // 2 * 2, : width // 2 * 2] = np.repeat(np.repeat(pooled, 2, 0), 2, 1) / 4
        got = expanded(model, variables, "features.2", "features.5", width, dtype)
        assert max_rel_err(got, want) <= TOL[dtype]
    # relu1_1's output -> conv1_2 -> ReLU -> pool -> conv2_1 at width 6 (pooled 3 x 3):
    # both kernels composed with the pool in between
    width = 6
    want = np.zeros((width, width, 64, 128))
    grad_pool = place(k21, 3, 1, pad=1)
    grad_conv = np.repeat(np.repeat(grad_pool, 2, 0), 2, 1) / 4  # (6, 6, 64, 128) at conv1_2
    for p in np.ndindex(width, width):
        want += np.einsum("abim,mo->abio", _tap(k12, width, p), grad_conv[p])
    got = expanded(model, variables, "features.1", "features.5", width, dtype)
    assert max_rel_err(got, want) <= TOL[dtype]
    if dtype == "float32":  # the public contract's call (docs/architecture.md), by aliases:
        # relu4_1 -> conv4_2 -> ReLU -> conv4_3, two 3x3 kernels composed, at a small width
        got = np.asarray(jv.analysis.expanded_weights(model, variables, "relu4_1", "conv4_3",
                                                      width=3), np.float64)
        want = compose(hwio(tmodel.features[19]), hwio(tmodel.features[21]), 3, 1)
        assert got.shape == (3, 3, 512, 512)
        assert max_rel_err(got, want) <= F32_TOL


def _tap(k: np.ndarray, width: int, p: tuple[int, int]) -> np.ndarray:
    """d conv(x)[p] / d x for a 3x3 padding-1 convolution: (width, width, I, M)."""
    out = np.zeros((width, width, *k.shape[2:]))
    for a in np.ndindex(3, 3):
        y, x = p[0] - 1 + a[0], p[1] - 1 + a[1]
        if 0 <= y < width and 0 <= x < width:
            out[y, x] = k[a]
    return out


@pytest.fixture(scope="module", params=["float32", "float64"])
def googlenet(request):
    return (request.param, *ported("googlenet", request.param, aux_logits=False))


def test_googlenet_inception_branch(googlenet):
    dtype, tmodel, model, variables = googlenet
    block = tmodel.inception3a.branch2[1]  # 1x1 reduce -> 3x3 conv block (conv, BN, ReLU)
    k = hwio(block.conv) * bn_scale(block.bn)
    for width in (4,):  # the 3x3 kernel at centre 1, and a zero last row and column
        got = expanded(model, variables, "inception3a.branch2.0", "inception3a.branch2.1",
                       width, dtype)
        assert max_rel_err(got, place(k, width, (width - 1) // 2, pad=1)) <= TOL[dtype]


def test_googlenet_pool_branch_excludes_padding(googlenet):
    # inception3a's output -> inception3b.branch4: max pool 3x3 stride 1 padding 1, then
    # a 1x1 conv block. Under the linear rule the pool shares its gradient over the
    # window's positions inside the map (9 in the middle, 4 at a 2x2 window's corner).
    dtype, tmodel, model, variables = googlenet
    block = tmodel.inception3b.branch4[1]
    k = (hwio(block.conv) * bn_scale(block.bn))[0, 0]  # (256, 64)
    for width, count in ((3, 9), (2, 4)):
        got = expanded(model, variables, "inception3a", "inception3b.branch4", width, dtype)
        c = (width - 1) // 2
        want = np.zeros((width, width, *k.shape))
        lo, hi = max(c - 1, 0), min(c + 2, width)
        want[lo:hi, lo:hi] = k / count
        assert max_rel_err(got, want) <= TOL[dtype]
    # through a whole inception block's concatenation: branch1's 1x1 block of 3b reads
    # channels 0..255 of 3a's output, so from 3a to 3b the first 128 outputs are that block
    got = expanded(model, variables, "inception3a", "inception3b", 3, dtype)
    b1 = tmodel.inception3b.branch1
    want = place(hwio(b1.conv) * bn_scale(b1.bn), 3, 1)
    assert max_rel_err(got[..., :128], want) <= TOL[dtype]


# (model, layers or None for every spatial layer, widths): the window searches checked.
# AlexNet's avgpool is adaptive: 6 x 6 from any input that reaches it, never 1 x 1.
WINDOW_CASES = [("lenet_digits", None, (1, 2, 3)),
                ("alexnet", ("features.0", "features.2", "features.5", "features.12"), (1, 4)),
                ("alexnet", ("avgpool",), (6,)),
                ("googlenet", ("maxpool2", "inception3a"), (5,))]


@pytest.mark.parametrize("name, layers, widths", WINDOW_CASES,
                         ids=[f"{c[0]}-{c[1][0] if c[1] else 'all'}" for c in WINDOW_CASES])
def test_window_search_finds_the_smallest_input(name, layers, widths):
    """The input side expanded weights run at (``_input_side``: truncated abstract passes,
    the bracket closed by interpolation) is the smallest at which the layer is W x W, by
    the definition: the layer table (``jv.layer_names``) gives W there and less one pixel
    below (0 below a 1-pixel input). A width no input gives is an error naming the
    width to choose."""
    model, _ = jv.load(name)
    spec = input_spec(model)
    channels, usual = spec.channels, spec.size or 224
    search = lambda path, width: W._input_side.__wrapped__(  # noqa: E731 (uncached)
        static(model), path, width, channels, usual)
    if layers is None:
        layers = [i.path for i in jv.layer_names(model, usual) if len(i.shape) == 4]
    for path in layers:
        for width in widths:
            side = search(path, width)
            assert W._spatial_side(model, path, side, channels) == width, (name, path, width, side)
            below = W._spatial_side(model, path, side - 1, channels) if side > 1 else 0
            assert below < width, (name, path, width, side, below)
    if name == "alexnet" and layers == ("avgpool",):
        with pytest.raises(jv.InputError, match=r"never exactly 1 x 1: one pixel more of "
                           r"input takes it from 0 to 6; choose width=6"):
            search("avgpool", 1)


def test_a_window_too_small_for_the_layers_between_names_the_width_that_fits():
    """A window the layers between cannot take (AlexNet's 3 x 3 max pool after conv2)
    is an error naming the smallest width that reaches ``to_layer``; that width works."""
    model, variables = jv.load("alexnet")
    with pytest.raises(jv.InputError, match=r"a 2 x 2 window of 'conv2' is too small for "
                       r"the layers up to 'conv3' \(pooling window 3 .*\); width=3 is the "
                       r"smallest that reaches it"):
        W.expanded_weights(model, variables, "conv2", "conv3", width=2)
    assert W.expanded_weights(model, variables, "conv2", "conv3", width=3).shape == (3, 3, 192, 384)


def test_one_compiled_program_for_all_channels():
    model, variables = jv.load("lenet", weights=None)
    W.expanded_weights(model, variables, "conv1", "conv2", width=4)  # eager set-up compiled
    with Compilations() as first:
        e = W.expanded_weights(model, variables, "conv1", "conv2", width=6)
        jax.block_until_ready(e)
    with Compilations() as second:
        jax.block_until_ready(W.expanded_weights(model, variables, "conv1", "conv2", width=6))
    assert first.count == 1, f"{first.count} programs compiled for one expanded-weights call"
    assert second.count == 0


# --- the small models: dense layers, the global max pool, errors ---------------------------


@pytest.fixture(scope="module")
def lenet():
    return jv.load("lenet", weights=None)


def test_to_a_linear_layer_through_the_global_max_pool(lenet):
    # conv3's output -> ReLU -> global max pool -> logits: under the linear rule the pool
    # is a global average, so every position of the 7 x 7 map carries kernel / 49
    model, variables = lenet
    got = np.asarray(W.expanded_weights(model, variables, "conv3", "logits", width=None))
    k = np.asarray(variables["params"]["classifier"]["kernel"], np.float64)  # (64, 10)
    assert got.shape == (7, 7, 64, 10)
    assert max_rel_err(got, np.broadcast_to(k / 49, got.shape)) <= F32_TOL
    with pytest.raises(jv.InputError, match="width=None"):
        W.expanded_weights(model, variables, "conv3", "logits", width=5)


def test_vector_layers():
    model, variables = jv.load("mlp2d", weights=None)
    got = np.asarray(W.expanded_weights(model, variables, "hidden", "out"))
    assert got.shape == (1, 1, 8, 2)
    np.testing.assert_array_equal(got[0, 0], np.asarray(variables["params"]["out"]["kernel"]))


def test_mistakes_get_clear_errors(lenet):
    model, variables = lenet
    with pytest.raises(jv.LayerError, match="must come after"):
        W.expanded_weights(model, variables, "conv2", "conv1")
    with pytest.raises(jv.LayerError, match="no layer 'conv9'"):
        W.expanded_weights(model, variables, "conv9", "conv2")
    with pytest.raises(jv.InputError, match="width"):
        W.expanded_weights(model, variables, "conv1", "conv2", width=0)
    with pytest.raises(jv.InputError, match="unit 99 is out of range"):
        W.top_connections(model, variables, "conv2", 99)
    user = jv.models.modules.Sequential([jv.models.modules.Conv2d(4, 3)])
    with pytest.raises(jv.ModelError, match="no .rules. field"):
        W.expanded_weights(user, {}, "layers_0", "layers_0")


def test_top_connections_rank_by_the_norm_of_the_expanded_weights(lenet):
    model, variables = lenet
    unit = 5
    found = W.top_connections(model, variables, "conv2", unit, k=4, width=5)
    assert set(found) == {"previous", "next"}
    prev, nxt = found["previous"], found["next"]
    assert (prev.layer, nxt.layer) == ("features.0", "features.6")
    # previous side: conv1's output -> ReLU -> 2x2 pool -> conv2 (5x5, padding 2). The
    # 5-wide window pools to 2 x 2, whose centre 0 reads pooled 0..1 through taps 2..3;
    # each tap spreads over a 2x2 block as tap / 4, so a channel's norm is |taps| / 2.
    k2 = np.asarray(variables["params"]["features"]["3"]["kernel"], np.float64)[..., unit]
    k2_seen = k2[2:4, 2:4]
    norms = np.sqrt((k2_seen ** 2).sum(axis=(0, 1))) / 2
    np.testing.assert_array_equal(prev.channels, np.argsort(-norms, kind="stable")[:4])
    assert max_rel_err(prev.norm, norms[prev.channels]) <= F32_TOL
    e = np.asarray(W.expanded_weights(model, variables, "conv2", "conv3", width=5))[..., unit, :]
    assert max_rel_err(nxt.maps, np.moveaxis(e, -1, 0)[nxt.channels]) <= F32_TOL
    totals = e.sum(axis=(0, 1))
    np.testing.assert_array_equal(nxt.positive, np.argsort(-totals, kind="stable")[:4])
    np.testing.assert_array_equal(nxt.negative, np.argsort(totals, kind="stable")[:4])
    sheet = W.draw_connections(found, zoom=4)
    assert sheet.dtype == np.uint8 and sheet.ndim == 3


def test_weight_colours_are_the_articles_scale():
    # the article's scale: piecewise linear through five colours at -1, -0.5, 0, 0.5, 1
    hexes = ["0571b0", "92c5de", "f7f7f7", "f4a582", "ca0020"]
    anchors = np.array([[int(h[i:i + 2], 16) for i in (0, 2, 4)] for h in hexes], float)
    xs = np.linspace(-1, 1, 41)
    want = np.stack([np.interp(xs, [-1, -0.5, 0, 0.5, 1], anchors[:, c]) for c in range(3)], -1)
    got = W.weight_heatmap(xs * 3.0, scale=3.0)
    np.testing.assert_array_equal(got, np.rint(want).astype(np.uint8))
    np.testing.assert_array_equal(W.weight_heatmap(np.array([-2.0, 0.0, 2.0]))[[0, 2]],
                                  anchors[[0, 4]].astype(np.uint8))


def test_first_layer_order_is_sklearns_pca():
    from sklearn.decomposition import PCA

    model, variables = jv.load("lenet_digits")
    order = W.first_layer_order(model, variables)
    k2 = np.abs(np.asarray(variables["params"]["features"]["3"]["kernel"]))  # (5, 5, 16, 32)
    rows = k2.transpose(2, 0, 1, 3).reshape(16, -1)
    want = np.argsort(PCA(n_components=1, random_state=0).fit_transform(rows)[:, 0], kind="stable")
    np.testing.assert_array_equal(order, want)
    assert sorted(order) == list(range(16))
    with pytest.raises(jv.LayerError, match="not a convolution"):
        W.first_layer_order(model, variables, layer="features.1")


def test_nmf_is_sklearns_on_the_posneg_matrix():
    from sklearn.decomposition import NMF

    rng = np.random.default_rng(0)
    e = rng.normal(size=(5, 5, 12))
    pn = W.posneg(e, axis=-1)
    assert pn.shape == (5, 5, 24) and (pn >= 0).all()
    np.testing.assert_array_equal(pn[..., :12] - pn[..., 12:], e)
    got = W.nmf(pn, 3)
    ref = NMF(n_components=3, random_state=0)
    want = ref.fit_transform(pn.reshape(25, 24))
    np.testing.assert_array_equal(got.maps, want.reshape(5, 5, 3))
    np.testing.assert_array_equal(got.components, ref.components_)
    with pytest.raises(jv.InputError, match="posneg"):
        W.nmf(e, 3)
    img = W.factor_image(got.maps)
    assert img.shape == (5, 5, 3) and img.max() <= 1 and img.min() >= 0


def test_direction_at_a_position(lenet):
    model, variables = lenet
    x = jnp.asarray(np.random.default_rng(1).uniform(size=(2, 28, 28, 1)), jnp.float32)
    a = np.asarray(jv.activations(model, variables, x, ["conv2"])["conv2"])
    v = np.random.default_rng(2).normal(size=(2, 32)).astype(np.float32)
    centre = jv.objectives.direction("conv2", v, position="centre")(model, variables, x)
    at = jv.objectives.direction("conv2", v, position=(3, 9))(model, variables, x)
    mean = jv.objectives.direction("conv2", v)(model, variables, x)
    np.testing.assert_allclose(centre, np.einsum("nc,nc->n", a[:, 7, 7], v), rtol=1e-5)
    np.testing.assert_allclose(at, np.einsum("nc,nc->n", a[:, 3, 9], v), rtol=1e-5)
    np.testing.assert_allclose(mean, np.einsum("nc,nc->n", a.mean((1, 2)), v), rtol=1e-5)
    with pytest.raises(jv.InputError, match="outside"):
        jv.objectives.direction("conv2", v, position=(30, 0))(model, variables, x)
    with pytest.raises(jv.InputTypeError, match="position"):
        jv.objectives.direction("conv2", v, position="middle")


def test_spatial_directions_one_image_per_position(lenet):
    model, variables = lenet
    e = np.asarray(W.expanded_weights(model, variables, "conv1", "conv2", width=3))[..., 0]
    out = W.spatial_directions(model, variables, "conv1", e, key=jax.random.key(0), size=16,
                               steps=2)
    assert out.images.shape == (9, 16, 16, 3)

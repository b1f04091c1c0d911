"""The attribution options that reach the peers' conventions, and the CAM family, on
closed forms and small models (the peers themselves: test_attribution_peers.py).

Tolerances (``max_rel_err`` unless said otherwise):
  EXACT (0): the same program or a rearrangement with nothing to round.
  F32_ROUND = 1e-6: a few float32 roundings (a resize's two weights; a quadrature whose
    weights sum to 1 up to rounding; the same gradient computed by two programs).
  F64_QUAD = 1e-13: Gauss-Legendre quadrature of a polynomial it integrates exactly, in
    float64 (the nodes and weights carry about 1e-16 each).
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxviz as jv
from conftest import F64_TOL, max_rel_err
from jaxviz import attribution as A

F32_ROUND = 1e-6
F64_QUAD = 1e-13


# --- resizing --------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode,torch_mode", [("bilinear", "bilinear"), ("nearest", "nearest"),
                                             ("corners", "corners")])
@pytest.mark.parametrize("size", [(13, 21), (3, 5)])
def test_resize_is_torchs_interpolate(mode, torch_mode, size):
    """Up (5 x 7 -> 13 x 21) and down (-> 3 x 5), with two trailing channels: torch's
    interpolate(bilinear, align_corners=False), (nearest) and UpsamplingBilinear2d
    (align_corners=True). F32_ROUND."""
    torch = pytest.importorskip("torch")
    maps = np.random.default_rng(0).standard_normal((2, 5, 7, 2)).astype(np.float32)
    t = torch.from_numpy(maps.transpose(0, 3, 1, 2).copy())
    if torch_mode == "corners":
        want = torch.nn.functional.interpolate(t, size=size, mode="bilinear", align_corners=True)
    elif torch_mode == "bilinear":
        want = torch.nn.functional.interpolate(t, size=size, mode="bilinear", align_corners=False)
    else:
        want = torch.nn.functional.interpolate(t, size=size, mode="nearest")
    got = A.resize(jnp.asarray(maps), size, mode)
    assert got.shape == (2, *size, 2)
    assert max_rel_err(np.asarray(got), want.numpy().transpose(0, 2, 3, 1)) <= F32_ROUND


def test_resize_rejects_an_unknown_mode():
    with pytest.raises(ValueError, match="unknown resize mode 'cubic'"):
        A.resize(jnp.zeros((1, 2, 2)), (4, 4), "cubic")


# --- a layer's input, and modules that return tuples ------------------------------------------------


class Pair(nn.Module):
    @nn.compact
    def __call__(self, x):
        return x * 2.0, x * 3.0


class TwoHeads(nn.Module):
    """f = sum(a) + 5 sum(b), with (a, b) = Pair(x) = (2x, 3x): df/da = 1, df/db = 5."""

    @nn.compact
    def __call__(self, x):
        a, b = Pair(name="pair")(x)
        total = a.sum(axis=(1, 2, 3)) + 5.0 * b.sum(axis=(1, 2, 3))
        return jnp.stack([total, -total], axis=1)


def test_layer_gradient_picks_an_element_of_a_tuple():
    """index=0 and index=1 give (2x, 1) and (3x, 5); at="input" gives (x, 2 + 15). EXACT."""
    x = jnp.asarray(np.random.default_rng(0).standard_normal((2, 3, 4, 1)), jnp.float32)
    model, variables = TwoHeads(), {}
    a, ga = A.layer_gradient(model, variables, x, 0, layer="pair", index=0)
    b, gb = A.layer_gradient(model, variables, x, 0, layer="pair", index=1)
    i, gi = A.layer_gradient(model, variables, x, 0, layer="pair", at="input")
    np.testing.assert_array_equal(a, 2 * x)
    np.testing.assert_array_equal(ga, np.ones(x.shape))
    np.testing.assert_array_equal(b, 3 * x)
    np.testing.assert_array_equal(gb, np.full(x.shape, 5.0))
    np.testing.assert_array_equal(i, x)
    np.testing.assert_array_equal(gi, np.full(x.shape, 17.0))
    with pytest.raises(ValueError, match="returns a tuple of 2; pass index=0..1"):
        A.layer_gradient(model, variables, x, 0, layer="pair")
    with pytest.raises(ValueError, match="index 2 is out of range for layer 'pair'"):
        A.layer_gradient(model, variables, x, 0, layer="pair", index=2)
    with pytest.raises(ValueError, match="unknown layer side"):
        A.layer_gradient(model, variables, x, 0, layer="pair", at="inside")
    with pytest.raises(ValueError, match="index as an int or None"):
        A.layer_gradient(model, variables, x, 0, layer="pair", index="0")


@pytest.fixture(scope="module")
def lenet():
    model, variables = jv.load("lenet_digits")
    x = jnp.asarray(np.random.default_rng(0).random((2, 20, 24, 1)), jnp.float32)
    return model, variables, x, np.array([3, 8])


def test_a_layers_input_is_the_previous_layers_output(lenet):
    """The input of pool2 is relu2's output: same activation and gradient. F32_ROUND
    (two programs)."""
    model, variables, x, t = lenet
    a, g = A.layer_gradient(model, variables, x, t, layer="relu2")
    b, h = A.layer_gradient(model, variables, x, t, layer="pool2", at="input")
    assert max_rel_err(b, a) <= F32_ROUND and max_rel_err(h, g) <= F32_ROUND
    cam = A.grad_cam(model, variables, x, t, layer="pool2", at="input")
    assert max_rel_err(cam, A.grad_cam(model, variables, x, t, layer="relu2")) <= F32_ROUND


# --- the CAM family on a small model -----------------------------------------------------------------


@pytest.mark.parametrize("method", ["grad_cam", "grad_cam_plus_plus", "xgrad_cam", "hires_cam",
                                    "layer_cam"])
def test_gradient_cams_from_their_definitions(lenet, method):
    """Each map from A and G (layer_gradient) by its formula, written here in NumPy
    float64; relu, then the resize of jaxviz.attribution.resize. F32_ROUND of the map."""
    model, variables, x, t = lenet
    act, grad = (np.asarray(a, np.float64) for a in A.layer_gradient(model, variables, x, t,
                                                                        layer="relu3"))
    s_act = act.sum(axis=(1, 2), keepdims=True)
    if method == "grad_cam":
        w = grad.mean(axis=(1, 2), keepdims=True) * act
    elif method == "grad_cam_plus_plus":
        g2 = grad ** 2
        alpha = np.where(grad != 0, g2 / (2 * g2 + s_act * g2 * grad + 1e-6), 0)
        w = (np.maximum(grad, 0) * alpha).sum(axis=(1, 2), keepdims=True) * act
    elif method == "xgrad_cam":
        w = (grad * act / (s_act + 1e-7)).sum(axis=(1, 2), keepdims=True) * act
    elif method == "hires_cam":
        w = grad * act
    else:
        w = np.maximum(grad, 0) * act
    raw = np.maximum(w.sum(-1), 0)
    heat, got_raw = getattr(A, method)(model, variables, x, t, layer="relu3", return_raw=True)
    assert heat.shape == (2, 20, 24) and got_raw.shape == raw.shape
    assert raw.max() > 0
    assert max_rel_err(np.asarray(got_raw), raw) <= F32_ROUND
    assert max_rel_err(np.asarray(heat), np.asarray(A.resize(jnp.asarray(raw), (20, 24)))) <= F32_ROUND


def test_minmax_spans_zero_to_one_and_no_resize_keeps_the_layers_size(lenet):
    model, variables, x, t = lenet
    heat = np.asarray(A.layer_cam(model, variables, x, t, layer="relu3", normalize="minmax"))
    np.testing.assert_allclose(heat.min(axis=(1, 2)), 0, atol=1e-7)
    np.testing.assert_allclose(heat.max(axis=(1, 2)), 1, atol=1e-6)
    low = A.hires_cam(model, variables, x, t, layer="relu3", resize=None, relu=False)
    assert low.shape == (2, 5, 6) and float(low.min()) < 0
    per = A.grad_cam(model, variables, x, t, layer="relu3", per_channel=True, relu=False)
    assert per.shape == (2, 20, 24, 64)
    summed = A.grad_cam(model, variables, x, t, layer="relu3", relu=False)
    assert max_rel_err(per.sum(-1), summed) <= 1e-5  # 64 float32 terms summed in two orders


@pytest.mark.parametrize("method", ["score_cam", "ablation_cam"])
def test_gradient_free_cams_do_not_depend_on_the_chunk(lenet, method):
    """batch_size 5 (uneven chunks, padded) and 64 (one chunk) agree. F32_ROUND."""
    model, variables, x, t = lenet
    small = getattr(A, method)(model, variables, x, t, layer="relu2", batch_size=5)
    whole = getattr(A, method)(model, variables, x, t, layer="relu2", batch_size=64)
    assert float(np.abs(whole).max()) > 0
    assert max_rel_err(small, whole) <= F32_ROUND


def test_ablation_cam_weights_are_relative_drops(lenet):
    """Ablation weights by hand: zero channel k of relu2 through an interceptor, and
    w_k = (y - y_k) / y; the map is relu(sum_k w_k A_k). F32_ROUND of the map."""
    model, variables, x, t = lenet
    act = np.asarray(jv.activations(model, variables, x, ["relu2"])["relu2"])
    rows = np.arange(2)
    y = np.asarray(model.apply(variables, x))[rows, t]
    weights = []
    for k in range(act.shape[-1]):
        def zero(call, args, kwargs, context, k=k):
            out = call(*args, **kwargs)
            if ".".join(context.module.path) == "features.4" and context.method_name == "__call__":
                return out.at[..., k].set(0.0)
            return out
        with nn.intercept_methods(zero):
            yk = np.asarray(model.apply(variables, x))[rows, t]
        weights.append((y - yk) / y)
    raw = np.maximum(np.einsum("nhwk,kn->nhw", act, np.array(weights)), 0)
    _, got = A.ablation_cam(model, variables, x, t, layer="relu2", return_raw=True)
    assert raw.max() > 0 and max_rel_err(np.asarray(got), raw) <= F32_ROUND


class RankOne(nn.Module):
    """Layer "lift": activations u_ij * v_k for a one-channel input u and kernel v; the
    output is each channel summed over space."""

    @nn.compact
    def __call__(self, x):
        a = nn.Dense(3, use_bias=False, name="lift")(x)
        return a.sum(axis=(1, 2))


def rank_one(seed: int):
    """(u, v, x, variables) for :class:`RankOne`."""
    u = np.random.default_rng(seed).standard_normal((4, 5))
    v = np.array([1.0, -2.0, 0.5])
    x = jnp.asarray(u[None, :, :, None], jnp.float32)
    return u, v, x, {"params": {"lift": {"kernel": jnp.asarray(v[None], jnp.float32)}}}


def test_eigen_cam_of_a_rank_one_layer():
    """Activations u_ij * v_k (rank one after centring, up to the mean): the projection is
    +-(u - mean u) |v|, and flip=True makes its largest magnitude positive. F32_ROUND."""
    u, v, x, variables = rank_one(1)
    got = np.asarray(A.eigen_cam(RankOne(), variables, x, layer="lift", relu=False, resize=None))[0]
    want = (u - u.mean()) * np.linalg.norm(v)
    if abs(want.min()) > abs(want.max()):
        want = -want
    assert max_rel_err(got, want) <= F32_ROUND


def test_eigen_smooth_of_a_one_channel_weighting():
    """Grad-CAM with eigen_smooth on activations u_ij * v_k and the logit of class t summed
    over space: the weights are 1[k == t], so the weighted channels are u_ij v_t on channel
    t alone, and their first principal component is +-(u - mean u) |v_t|, positive at its
    largest magnitude with flip=True (the default). F32_ROUND."""
    u, v, x, variables = rank_one(2)
    want = (u - u.mean()) * abs(v[1])
    if abs(want.min()) > abs(want.max()):
        want = -want
    for method in (A.grad_cam, A.hires_cam, A.layer_cam):
        got = np.asarray(method(RankOne(), variables, x, np.array([1]), layer="lift", relu=False,
                                resize=None, eigen_smooth=True))[0]
        assert max_rel_err(got, want) <= F32_ROUND, method.__name__
        unflipped = np.asarray(method(RankOne(), variables, x, np.array([1]), layer="lift",
                                      relu=False, resize=None, eigen_smooth=True, flip=False))[0]
        assert min(max_rel_err(unflipped, want), max_rel_err(-unflipped, want)) <= F32_ROUND
    summed = np.asarray(A.grad_cam(RankOne(), variables, x, np.array([1]), layer="lift",
                                   relu=False, resize=None))[0]
    assert max_rel_err(summed, u * v[1]) <= F32_ROUND  # without it, the plain sum


@pytest.mark.parametrize("call,match", [
    (lambda m, v, x, t: A.grad_cam(m, v, x, t, layer="relu3", normalize="max"), "unknown normalize"),
    (lambda m, v, x, t: A.grad_cam(m, v, x, t, layer="relu3", eigen_smooth="yes"),
     "eigen_smooth as True or False"),
    (lambda m, v, x, t: A.score_cam(m, v, x, t, layer="relu3", flip=False),
     "pass eigen_smooth=True with it"),
    (lambda m, v, x, t: A.grad_cam(m, v, x, t, layer="relu3", per_channel=True,
                                   eigen_smooth=True), "pass one of them"),
    (lambda m, v, x, t: A.layer_cam(m, v, x, t, layer="relu3", resize="cubic"), "unknown resize"),
    (lambda m, v, x, t: A.xgrad_cam(m, v, x, t, layer="relu3", relu=1), "relu as True or False"),
    (lambda m, v, x, t: A.grad_cam(m, v, x, t, layer="relu3", per_channel=True,
                                   normalize="minmax"), "per_channel maps are not normalized"),
    (lambda m, v, x, t: A.hires_cam(m, v, x, t, layer="logits"), "HiResCAM needs a spatial layer"),
    (lambda m, v, x, t: A.ablation_cam(m, v, x, t, layer="relu3", ablation_value="0"),
     "ablation_value as a number"),
    (lambda m, v, x, t: A.eigen_cam(m, v, x, layer="relu3", flip=None), "flip as True or False"),
    (lambda m, v, x, t: A.score_cam(m, v, x, t, layer="relu3", batch_size=0), "batch_size"),
    (lambda m, v, x, t: A.guided_grad_cam(m, v, x, t, layer="relu3", interpolation="area"),
     "unknown interpolation"),
])
def test_cam_options_are_checked(lenet, call, match):
    model, variables, x, t = lenet
    with pytest.raises(ValueError, match=match):
        call(model, variables, x, t)


# --- integrated gradients, SmoothGrad, the noise tunnel ------------------------------------------------


@pytest.mark.parametrize("steps", [1, 3, 8])
def test_gauss_legendre_integrates_polynomials_exactly(steps):
    """The m-point rule on [0, 1] integrates t^k exactly for k <= 2m - 1: 1 / (k + 1).
    F64_QUAD."""
    alphas, weights = A.path_points(steps, "gausslegendre")
    assert ((alphas > 0) & (alphas < 1)).all()
    for k in range(2 * steps):
        assert abs((weights * alphas ** k).sum() - 1 / (k + 1)) <= F64_QUAD


class Quadratic(nn.Module):
    """f(x) = sum(x^2) (+ 0 for the second class): IG from 0 is exactly x^2 for any
    quadrature exact on degree 1, and the completeness gap is 0."""

    @nn.compact
    def __call__(self, x):
        s = (x ** 2).sum(axis=(1, 2, 3))
        return jnp.stack([s, 0 * s], axis=1)


def test_integrated_gradients_options_on_a_quadratic():
    """IG = x^2 (gausslegendre, 2 points), delta = 0, multiply_by_inputs=False = x (the
    mean gradient 2 x / 2), user points = the same. F32_ROUND."""
    x = jnp.asarray(np.random.default_rng(0).standard_normal((2, 3, 4, 1)), jnp.float32)
    ig, delta = A.integrated_gradients(Quadratic(), {}, x, 0, steps=2, method="gausslegendre",
                                       return_delta=True)
    assert max_rel_err(ig, x ** 2) <= F32_ROUND
    assert np.abs(np.asarray(delta)).max() <= F32_ROUND * float((x ** 2).sum())
    mean_grad = A.integrated_gradients(Quadratic(), {}, x, 0, points=([0.25, 0.75], [0.5, 0.5]),
                                       multiply_by_inputs=False)
    assert max_rel_err(mean_grad, x) <= F32_ROUND
    with pytest.raises(ValueError, match="needs multiply_by_inputs=True"):
        A.integrated_gradients(Quadratic(), {}, x, 0, multiply_by_inputs=False, return_delta=True)
    for bad in ([0.5], ([0.5, 0.2], [1.0]), ([[0.5]], [[1.0]]), ([np.nan], [1.0])):
        with pytest.raises(ValueError, match="points"):
            A.integrated_gradients(Quadratic(), {}, x, 0, points=bad)


def test_smoothgrad_abs_and_stdev(lenet):
    """variant="abs" is the mean of |gradient| over the same draws (checked against
    noise_tunnel of gradient(abs=True)); stdev=s equals noise=s / range per example."""
    model, variables, x, t = lenet
    key = jax.random.key(3)
    got = A.smoothgrad(model, variables, x, t, key=key, samples=4, variant="abs")
    want = A.noise_tunnel(A.gradient, model, variables, x, t, key=key, samples=4, abs=True)
    assert max_rel_err(got, want) <= F32_ROUND
    assert float(got.min()) >= 0
    spread = np.asarray(x.max(axis=(1, 2, 3)) - x.min(axis=(1, 2, 3)))
    one = A.smoothgrad(model, variables, x[:1], t[:1], key=key, samples=3, stdev=0.1)
    other = A.smoothgrad(model, variables, x[:1], t[:1], key=key, samples=3,
                         noise=float(0.1 / spread[0]))
    assert max_rel_err(one, other) <= F32_ROUND
    with pytest.raises(ValueError, match="stdev as a non-negative number"):
        A.smoothgrad(model, variables, x, t, key=key, stdev=-1.0)


def test_aug_smooth_is_the_mean_over_flipped_and_scaled_copies(lenet):
    """aug_smooth(method) = mean over copies of flip(method(flip(c x))): one copy is the
    method itself; with the flip, the mean of the map and its flipped twin's map flipped
    back; factors scale the input. Gradients (N, H, W, C) and CAMs (N, H, W). F32_ROUND
    (the same programs on a batch of copies)."""
    model, variables, x, t = lenet
    g = lambda x: np.asarray(A.gradient(model, variables, x, t))  # noqa: E731
    flip = lambda a: a[:, :, ::-1]  # noqa: E731
    one = A.aug_smooth(A.gradient, model, variables, x, t, hflip=False, factors=[1.0])
    assert max_rel_err(one, g(x)) <= F32_ROUND
    both = A.aug_smooth(A.gradient, model, variables, x, t, factors=(1.0, 2.0))
    want = (g(x) + g(2 * x) + flip(g(flip(x))) + flip(g(2 * flip(x)))) / 4
    assert max_rel_err(both, want) <= F32_ROUND
    cam = lambda x: np.asarray(A.grad_cam(model, variables, x, t, layer="relu3"))  # noqa: E731
    got = A.aug_smooth(A.grad_cam, model, variables, x, t, factors=(0.5,), layer="relu3")
    assert got.shape == x.shape[:3]
    assert max_rel_err(got, (cam(0.5 * x) + flip(cam(0.5 * flip(x)))) / 2) <= F32_ROUND


def test_multi_layer_cam_of_one_layer_is_the_scaled_cam(lenet):
    """One layer: minmax(resize(minmax(relu M))) with a ReLU of a map already in [0, 1]
    between, which is the method's own relu=True, normalize="minmax". F32_ROUND."""
    model, variables, x, t = lenet
    for method in (A.grad_cam, A.layer_cam):
        got = A.multi_layer_cam(method, model, variables, x, t, layers=["relu3"])
        want = method(model, variables, x, t, layer="relu3", normalize="minmax")
        assert got.shape == x.shape[:3] and max_rel_err(got, want) <= F32_ROUND
    two = np.asarray(A.multi_layer_cam(A.grad_cam, model, variables, x, t,
                                       layers=["relu2", "relu3"]))
    assert two.min() == 0 and abs(two.max() - 1) <= 1e-6
    # the gradient CAMs take every layer's gradient in one pass; any other function (here
    # the same CAM wrapped) is called per layer: the same maps
    for method in (A.grad_cam, A.layer_cam):
        wrapped = lambda *args, method=method, **kwargs: method(*args, **kwargs)  # noqa: E731
        for kwargs in ({}, {"eigen_smooth": True}):
            one_pass = A.multi_layer_cam(method, model, variables, x, t,
                                         layers=["relu2", "relu3"], **kwargs)
            per_layer = A.multi_layer_cam(wrapped, model, variables, x, t,
                                          layers=["relu2", "relu3"], **kwargs)
            assert max_rel_err(one_pass, per_layer) <= F32_ROUND, (method.__name__, kwargs)


@pytest.mark.parametrize("kwargs,error,match", [
    (dict(method=None), TypeError, "expected method as a CAM"),
    (dict(layers="relu3"), ValueError, "non-empty list of layer names"),
    (dict(layers=[]), ValueError, "non-empty list of layer names"),
    (dict(layers=["relu3", 2]), ValueError, "layer names"),
    (dict(resize=None), ValueError, "unknown resize"),
    (dict(normalize=None), ValueError, "sets normalize itself"),
    (dict(layers=["relu3", "nope"]), KeyError, "nope"),
])
def test_multi_layer_cam_options_are_checked(lenet, kwargs, error, match):
    model, variables, x, t = lenet
    kwargs = {"method": A.grad_cam, "layers": ["relu2", "relu3"], **kwargs}
    with pytest.raises(error, match=match):
        A.multi_layer_cam(kwargs.pop("method"), model, variables, x, t, **kwargs)


@pytest.mark.parametrize("kwargs,error,match", [
    (dict(method=None), TypeError, "expected method as an attribution function"),
    (dict(hflip="yes"), ValueError, "hflip as True or False"),
    (dict(factors=()), ValueError, "non-empty sequence of finite numbers"),
    (dict(factors=(1.0, float("nan"))), ValueError, "non-empty sequence of finite numbers"),
    (dict(return_raw=True), ValueError, "returns one array with a row per example"),
    (dict(resize=None), ValueError, "flips the maps back along their width"),
])
def test_aug_smooth_options_are_checked(lenet, kwargs, error, match):
    model, variables, x, t = lenet
    kwargs = {"method": A.grad_cam, "layer": "relu3", **kwargs}
    with pytest.raises(error, match=match):
        A.aug_smooth(kwargs.pop("method"), model, variables, x, t, **kwargs)


def test_noise_tunnel_of_gradient_is_smoothgrad(lenet):
    """Same key, same draws: noise_tunnel(gradient) = smoothgrad for every variant, with
    a target array, with a plain callable target (one draw per call), and whatever the
    batch_size. F32_ROUND."""
    model, variables, x, t = lenet
    key = jax.random.key(1)
    for variant in A.SMOOTHGRAD_VARIANTS:
        want = A.smoothgrad(model, variables, x, t, key=key, samples=5, variant=variant)
        got = A.noise_tunnel(A.gradient, model, variables, x, t, key=key, samples=5,
                             variant=variant, batch_size=2)
        assert max_rel_err(got, want) <= F32_ROUND, variant

    def logit(m, v, inputs):
        return m.apply(v, inputs)[jnp.arange(inputs.shape[0]), jnp.asarray(t)]

    want = A.smoothgrad(model, variables, x, t, key=key, samples=3)
    got = A.noise_tunnel(A.gradient, model, variables, x, logit, key=key, samples=3)
    assert max_rel_err(got, want) <= F32_ROUND


def test_noise_tunnel_repeats_per_example_keywords(lenet):
    """A per-example IG baseline (N, H, W, C) follows the copies: the tunnel of IG with
    zero noise equals IG itself. F32_ROUND."""
    model, variables, x, t = lenet
    base = jnp.asarray(np.random.default_rng(2).random(x.shape), jnp.float32)
    want = A.integrated_gradients(model, variables, x, t, baseline=base, steps=3)
    got = A.noise_tunnel(A.integrated_gradients, model, variables, x, t, key=jax.random.key(0),
                         samples=3, noise=0.0, baseline=base, steps=3)
    assert max_rel_err(got, want) <= F32_ROUND


def test_noise_tunnel_errors(lenet):
    model, variables, x, t = lenet
    key = jax.random.key(0)
    with pytest.raises(TypeError, match="expected method as an attribution function"):
        A.noise_tunnel("gradient", model, variables, x, t, key=key)
    with pytest.raises(ValueError, match="returns one array with a row per example"):
        A.noise_tunnel(A.integrated_gradients, model, variables, x, t, key=key, samples=2,
                       steps=2, return_delta=True)
    with pytest.raises(TypeError, match="noise_tunnel draws random noise"):
        A.noise_tunnel(A.gradient, model, variables, x, t)
    with pytest.raises(ValueError, match="unknown noise tunnel variant"):
        A.noise_tunnel(A.gradient, model, variables, x, t, key=key, variant="mean")


# --- occlusion's edges and channel windows, feature ablation --------------------------------------


class Linear(nn.Module):
    @nn.compact
    def __call__(self, x):
        return nn.Dense(3, name="fc")(x.reshape(x.shape[0], -1))


@pytest.fixture(scope="module")
def linear():
    """A linear model on (2, 12, 10, 3) and the closed-form drop of hiding a set S of
    input values: sum over S of W_t (x - b)."""
    rng = np.random.default_rng(4)
    x = rng.standard_normal((2, 12, 10, 3)).astype(np.float32)
    kernel = rng.standard_normal((360, 3)).astype(np.float32)
    variables = {"params": {"fc": {"kernel": jnp.asarray(kernel), "bias": jnp.zeros(3)}}}
    t = np.array([2, 0], np.int32)
    w = kernel[:, t].T.reshape(x.shape).astype(np.float64)
    return Linear(), variables, x, t, w


def test_truncated_window_positions():
    """Captum's count, ceil((L - w) / s) + 1, the last window past the edge."""
    assert A.window_positions(12, 5, 3, "truncate") == [0, 3, 6, 9]
    assert A.window_positions(10, 4, 3, "truncate") == [0, 3, 6]
    assert A.window_positions(8, 8, 2, "truncate") == [0]
    with pytest.raises(ValueError, match="unknown edges"):
        A.window_positions(8, 2, 2, "wrap")


@pytest.mark.parametrize("edges", A.EDGES)
def test_channel_windows_on_a_linear_model(linear, edges):
    """Windows (5, 4, 2) with strides (3, 3, 1): each drop is the sum of W_t (x - b) over
    the rows, columns and channels it covers (cut off at the edges for "truncate"), and
    each value of the map the mean drop of its windows, by loops in float64. Tolerance
    1e-5 of sum |W (x - b)| (float32 logit differences)."""
    model, variables, x, t, w = linear
    b = 0.25
    heat, grid = A.occlusion(model, variables, x, t, window=(5, 4, 2), stride=(3, 3, 1),
                             baseline=b, edges=edges, batch_size=7, return_windows=True)
    rows = A.window_positions(12, 5, 3, edges)
    cols = A.window_positions(10, 4, 3, edges)
    chans = A.window_positions(3, 2, 1, edges)
    assert heat.shape == x.shape and grid.shape == (2, len(rows), len(cols), len(chans))
    terms = w * (x - b)
    total, count = np.zeros(x.shape), np.zeros(x.shape[1:])
    for i, r in enumerate(rows):
        for j, q in enumerate(cols):
            for k, d in enumerate(chans):
                drop = terms[:, r:r + 5, q:q + 4, d:d + 2].sum(axis=(1, 2, 3))
                assert np.abs(np.asarray(grid)[:, i, j, k] - drop).max() <= 1e-5 * np.abs(terms).sum()
                total[:, r:r + 5, q:q + 4, d:d + 2] += drop[:, None, None, None]
                count[r:r + 5, q:q + 4, d:d + 2] += 1
    assert count.min() >= 1
    assert np.abs(np.asarray(heat) - total / count).max() <= 1e-5 * np.abs(terms).sum()


def test_auto_batch_size_bounds_the_images_a_chunk_runs_on_the_cpu(linear):
    """batch_size="auto" (occlusion, feature_ablation, RISE): the method's own number of
    copies a chunk, lowered on the CPU so that a chunk runs about CPU_IMAGES_PER_CHUNK
    images; never more than there are copies; a GPU or TPU keeps the default. Any chunk
    size gives the same map (to 1e-6 of its largest value: float32 rounding), and equal
    images in one batch get equal maps."""
    from jaxviz.attribution._common import CPU_IMAGES_PER_CHUNK, _auto_batch_size

    cpu = jax.default_backend() == "cpu"
    assert _auto_batch_size("auto", 81, 1, 64) == 64
    assert _auto_batch_size("auto", 10, 1, 64) == 10
    assert _auto_batch_size("auto", 81, 100, 64) == (CPU_IMAGES_PER_CHUNK // 100 if cpu else 64)
    assert _auto_batch_size("auto", 81, 10_000, 64) == (1 if cpu else 64)
    assert _auto_batch_size(None, 81, 100, 64) == 81 and _auto_batch_size(5, 81, 100, 64) == 5
    model, variables, x, t, _ = linear
    many = np.concatenate([x] * 70)  # 140 images: "auto" is 1 window a chunk on the CPU
    tt = np.concatenate([t] * 70)
    auto = np.asarray(A.occlusion(model, variables, many, tt, window=4, stride=4))
    one = np.asarray(A.occlusion(model, variables, many, tt, window=4, stride=4, batch_size=None))
    assert max_rel_err(auto, one) <= 1e-6
    np.testing.assert_array_equal(auto[:2], auto[-2:])
    for bad in ("fast", 0):
        with pytest.raises(ValueError, match="positive int, None or 'auto'"):
            A.occlusion(model, variables, x, t, window=4, stride=4, batch_size=bad)


def test_feature_ablation_on_a_linear_model(linear):
    """Labels 0, 5 and 9 (not contiguous) by rows, one map for every channel in example 0
    and per channel in example 1: each value's drop is the sum of W_t (x - b) over its
    label. Tolerance 1e-5 of sum |W (x - b)|."""
    model, variables, x, t, w = linear
    per_pixel = np.where(np.arange(12)[:, None] < 4, 0, np.where(np.arange(12)[:, None] < 9, 5, 9))
    mask = np.broadcast_to(per_pixel[:, :, None], (12, 10, 3)).copy()
    mask = np.stack([mask, np.broadcast_to(np.array([0, 5, 5]), (12, 10, 3))])
    b = -0.5
    heat, labels, drops = A.feature_ablation(model, variables, x, t, mask=mask, baseline=b,
                                             batch_size=2, return_features=True)
    np.testing.assert_array_equal(labels, [0, 5, 9])
    terms = w * (x - b)
    want = np.zeros(x.shape)
    for n in range(2):
        for label in (0, 5, 9):
            hidden = mask[n] == label
            want[n][hidden] = terms[n][hidden].sum()
    assert np.abs(np.asarray(heat) - want).max() <= 1e-5 * np.abs(terms).sum()
    assert float(drops[1, 2]) == 0.0  # label 9 is absent from example 1's mask
    # an (H, W) label map is one feature per label across every channel, in every example
    flat = per_pixel.repeat(10, axis=1)
    got = np.asarray(A.feature_ablation(model, variables, x, t, mask=flat, baseline=b))
    want = np.zeros(x.shape)
    for n in range(2):
        for label in (0, 5, 9):
            want[n][flat == label] = terms[n][flat == label].sum()
    assert np.abs(got - want).max() <= 1e-5 * np.abs(terms).sum()
    for bad, match in [(mask.astype(float), "int labels"), (-mask - 1, "labels >= 0"),
                       (np.zeros((5, 5), int), "mask of shape")]:
        with pytest.raises(ValueError, match=match):
            A.feature_ablation(model, variables, x, t, mask=bad)


# --- LRP on closed forms -----------------------------------------------------------------------------


def test_lrp_on_a_linear_model(linear):
    """One dense layer, relevance starting as f = W_t x + b_t: LRP-epsilon gives
    R = x W_t f / (f + e sign f) (the bias keeps its share); the flat first layer spreads
    f evenly over the 360 inputs. F32_ROUND of the largest value."""
    model, variables, x, t, w = linear
    kernel = np.asarray(variables["params"]["fc"]["kernel"], np.float64)
    f = (x.reshape(2, -1).astype(np.float64) @ kernel)[np.arange(2), t]
    eps = A.lrp(model, variables, x, t, composite="epsilon", epsilon=1e-3)
    want = x * w * (f / (f + 1e-3 * np.sign(f)))[:, None, None, None]
    assert max_rel_err(np.asarray(eps), want) <= F32_ROUND
    flat = A.lrp(model, variables, x, t, composite="epsilon_plus_flat")
    assert max_rel_err(np.asarray(flat), np.broadcast_to((f / 360)[:, None, None, None], x.shape)) <= F32_ROUND
    one = A.lrp(model, variables, x, t, composite="epsilon_plus_flat", start="one")
    assert max_rel_err(np.asarray(one), np.full(x.shape, 1 / 360)) <= F32_ROUND


def test_lrp_zplus_on_a_convolution():
    """A 2x2 convolution of one channel, summed: ZPlus gives each input its positive
    share x+ W+ (and x- W-) of every output it feeds, R_out / z+ at a time, by loops in
    float64. F32_ROUND."""

    class ConvSum(nn.Module):
        @nn.compact
        def __call__(self, x):
            h = jv.models.modules.Conv2d(1, 2, name="conv")(x)
            return h.sum(axis=(1, 2))

    rng = np.random.default_rng(5)
    x = rng.standard_normal((1, 3, 4, 1)).astype(np.float32)
    kernel = rng.standard_normal((2, 2, 1, 1)).astype(np.float32)
    bias = np.float32(0.3)
    variables = {"params": {"conv": {"kernel": jnp.asarray(kernel), "bias": jnp.asarray([bias])}}}
    got = np.asarray(A.lrp(ConvSum(), variables, jnp.asarray(x), 0, composite="epsilon_plus",
                           start="one", stabilizer=1e-9))
    k = kernel[:, :, 0, 0].astype(np.float64)
    want = np.zeros((3, 4))
    for i in range(2):
        for j in range(3):
            patch = x[0, i:i + 2, j:j + 2, 0].astype(np.float64)
            share = np.where(patch > 0, patch * np.maximum(k, 0), patch * np.minimum(k, 0))
            want[i:i + 2, j:j + 2] += share / (share.sum() + max(bias, 0))
    assert max_rel_err(got[0, :, :, 0], want) <= F32_ROUND


def test_deeplift_leaves_the_layer_tables_alone(lenet):
    """DeepLIFT runs 2N rows under its rescale hook; the layer table at 2N rows must be
    traced outside it (a table traced under the hook listed 2 of LeNet's layers, and
    every later method at that batch size failed to find its layer)."""
    model, variables, _, _ = lenet
    x = jnp.full((3, 21, 23, 1), 0.5, jnp.float32)  # a shape no other test uses
    A.deeplift(model, variables, x, 0)
    at = lambda rows: [i.path for i in jv.layer_names(model, (rows, 21, 23, 1))]
    assert at(6) == at(3) and len(at(3)) > 2


def test_lrp_merge_batch_norm_is_lrp_of_the_folded_convolution():
    """conv -> BatchNorm -> spatial sum with merge_batch_norm=True is LRP of the same
    convolution with the BatchNorm folded into its kernel and bias by hand (the BatchNorm
    gone), for the composites that treat a convolution by rule; without BatchNorms
    (LeNet) the option changes nothing. In float64: F64_TOL (the two fold the BatchNorm
    in different orders, and the epsilon rule's division by small outputs amplifies
    float32's rounding of that to 3e-6)."""
    from jaxviz.models.modules import BatchNorm2d, Conv2d

    class ConvBN(nn.Module):
        use_bn: bool = True

        @nn.compact
        def __call__(self, x):
            y = Conv2d(4, 3, use_bias=self.use_bn, name="conv")(x)
            if self.use_bn:
                y = BatchNorm2d(eps=1e-3, name="bn")(y)
            return y.sum(axis=(1, 2))

    rng = np.random.default_rng(7)
    x = rng.standard_normal((2, 6, 7, 3))
    kernel, bias = rng.standard_normal((3, 3, 3, 4)), rng.standard_normal(4)
    scale, shift = rng.uniform(0.5, 2, 4), rng.standard_normal(4)
    mean, var = rng.standard_normal(4), rng.uniform(0.5, 2, 4)
    with_bn = {"params": {"conv": {"kernel": kernel, "bias": bias},
                          "bn": {"scale": scale, "bias": shift}},
               "batch_stats": {"bn": {"mean": mean, "var": var}}}
    a = scale / np.sqrt(var + 1e-3)
    folded = {"params": {"conv": {"kernel": kernel * a, "bias": (bias - mean) * a + shift}}}

    class Folded(nn.Module):  # the convolution with the folded bias
        @nn.compact
        def __call__(self, x):
            return Conv2d(4, 3, name="conv")(x).sum(axis=(1, 2))

    with jax.enable_x64(True):
        to64 = lambda tree: jax.tree_util.tree_map(jnp.asarray, tree)  # noqa: E731
        for composite in ("epsilon_plus", "epsilon_alpha2_beta1", "epsilon"):
            got = A.lrp(ConvBN(), to64(with_bn), jnp.asarray(x), 1, composite=composite,
                        merge_batch_norm=True)
            want = A.lrp(Folded(), to64(folded), jnp.asarray(x), 1, composite=composite)
            assert got.dtype == jnp.float64 and max_rel_err(got, want) <= F64_TOL, composite
            unmerged = A.lrp(ConvBN(), to64(with_bn), jnp.asarray(x), 1, composite=composite)
            assert max_rel_err(unmerged, want) > 1e-3, composite
    model, variables, x, t = jv.load("lenet_digits") + (jnp.asarray(x[..., :1], jnp.float32), 1)
    np.testing.assert_array_equal(A.lrp(model, variables, x, t, merge_batch_norm=True),
                                  A.lrp(model, variables, x, t))


def test_lrp_options_are_checked(lenet):
    model, variables, x, t = lenet
    for kwargs, match in [({"composite": "z_plus"}, "unknown composite"),
                          ({"merge_batch_norm": "yes"}, "merge_batch_norm as True or False"),
                          ({"start": "logit"}, "unknown start"),
                          ({"alpha": 3.0, "beta": 1.0}, "alpha - beta = 1"),
                          ({"epsilon": -1.0}, "epsilon as a number"),
                          ({"composite": "epsilon_gamma_box", "low": 0.0}, "both low= and high="),
                          ({"composite": "epsilon_gamma_box"}, "needs the input's bounds")]:
        with pytest.raises(ValueError, match=match):
            A.lrp(model, variables, x, t, **kwargs)


# --- GradientSHAP and RISE on closed forms ---------------------------------------------------------


def test_gradient_shap_of_a_linear_model(linear):
    """The gradient is W_t everywhere, so GradientSHAP is W_t (x - mean of the drawn
    baselines), whatever the positions; with a key the draws are reproducible and the
    map completes to f(x) - mean f(b) over the draws. F32_ROUND."""
    model, variables, x, t, w = linear
    base = np.random.default_rng(6).standard_normal((3, *x.shape[1:])).astype(np.float32)
    indices = np.array([[0, 2], [1, 2], [1, 0], [2, 2]])
    positions = np.random.default_rng(7).random((4, 2))
    got = A.gradient_shap(model, variables, x, t, baselines=base, draws=(indices, positions),
                          batch_size=3)
    want = w * (x - base[indices].mean(axis=0))
    assert max_rel_err(np.asarray(got), want) <= F32_ROUND
    key = jax.random.key(2)
    a = A.gradient_shap(model, variables, x, t, baselines=base, key=key, samples=6)
    np.testing.assert_array_equal(a, A.gradient_shap(model, variables, x, t, baselines=base,
                                                     key=key, samples=6))
    chunked = A.gradient_shap(model, variables, x, t, baselines=base, key=key, samples=6,
                              batch_size=4)
    assert max_rel_err(chunked, a) <= F32_ROUND  # the same draws, summed in two chunks
    with pytest.raises(TypeError, match="gradient_shap draws baselines"):
        A.gradient_shap(model, variables, x, t, baselines=base)
    with pytest.raises(ValueError, match="baseline indices must be in"):
        A.gradient_shap(model, variables, x, t, baselines=base, draws=(indices + 1, positions))
    with pytest.raises(ValueError, match="expected baselines of shape"):
        A.gradient_shap(model, variables, x, t, baselines=base[:, :3], key=key)


def test_rise_is_its_formula(lenet):
    """With given masks, RISE is sum_k f(x * M_k) M_k / (K p), computed here mask by mask
    with model.apply in float64 sums; chunking does not change it. F32_ROUND."""
    model, variables, x, t = lenet
    masks = A.rise_masks(jax.random.key(4), 10, x.shape[1:3], cells=3, p=0.4)
    got = A.rise(model, variables, x, t, masks=masks, p=0.4, batch_size=4)
    want = np.zeros((2, *x.shape[1:3]))
    for m in np.asarray(masks):
        f = np.asarray(model.apply(variables, x * m[None, :, :, None]))[np.arange(2), t]
        want += f[:, None, None].astype(np.float64) * m[None]
    want /= 10 * 0.4
    assert max_rel_err(np.asarray(got), want) <= F32_ROUND
    whole = A.rise(model, variables, x, t, masks=masks, p=0.4, batch_size=64)
    assert max_rel_err(got, whole) <= F32_ROUND


def test_rise_masks():
    """Shape, range, reproducibility; cells kept with probability p (the mean of 400
    masks within 0.03 of p); each mask an upsampled 0/1 grid, so it has values 0 and 1."""
    key = jax.random.key(0)
    m = np.asarray(A.rise_masks(key, 400, (20, 30), cells=4, p=0.3))
    assert m.shape == (400, 20, 30) and m.min() >= 0 and m.max() <= 1
    assert abs(m.mean() - 0.3) < 0.03
    np.testing.assert_array_equal(m, A.rise_masks(key, 400, (20, 30), cells=4, p=0.3))
    assert not np.array_equal(m, A.rise_masks(jax.random.key(1), 400, (20, 30), cells=4, p=0.3))
    for bad, match in [({"p": 0.0}, "probability"), ({"cells": 0}, "cells")]:
        with pytest.raises(ValueError, match=match):
            A.rise_masks(key, 3, (8, 8), **bad)

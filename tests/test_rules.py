"""Backward rules (jaxviz.rules): closed forms on hand-made arrays, torch's max-pool and
average-pool backward passes, and a whole model whose forward pass ignores the rule.

Tolerances (see conftest.py):
  exact (0): ReLU rules select or pass single values; no arithmetic to round.
  F64_TOL = 1e-12: pooling backward passes in float64 that add overlapping windows'
    contributions in a different order than torch.
  F32_TOL = 1e-5: the float32 AlexNet checks ("equal" below it, "different" above
    100 times it).
"""

from __future__ import annotations

import functools
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxviz as jv
from jaxviz import _random
from conftest import F32_TOL, F64_TOL, max_rel_err, nhwc, numpy_random_alexnet
from jaxviz import rules
from jaxviz.models import layers, modules

torch = pytest.importorskip("torch")
F = torch.nn.functional

# Every sign combination of input s and incoming gradient g, zeros included.
_S, _G = np.meshgrid([-2.0, -0.5, 0.0, 0.5, 3.0], [-1.5, 0.0, 0.25, 4.0], indexing="ij")
S, G = _S.ravel().astype(np.float32), _G.ravel().astype(np.float32)

RELU_BACKWARD = {
    "gradient": lambda s, g: np.where(s > 0, g, 0.0),
    "deconvnet": lambda s, g: np.maximum(g, 0.0),
    "guided": lambda s, g: np.where(s > 0, np.maximum(g, 0.0), 0.0),
    "linear": lambda s, g: g,
}


def test_rule_table_is_complete():
    assert set(RELU_BACKWARD) == set(rules.RULES)


@pytest.mark.parametrize("rule", rules.RULES)
def test_relu_forward_and_backward_closed_form(rule):
    # Tolerance: exact.
    y, vjp = jax.vjp(lambda t: rules.relu(t, rule), jnp.asarray(S))
    np.testing.assert_array_equal(y, np.maximum(S, 0.0))
    (dx,) = vjp(jnp.asarray(G))
    want = RELU_BACKWARD[rule](S, G).astype(np.float32)
    np.testing.assert_array_equal(dx, want)
    # The expected arrays differ between rules on this input, so a mixed-up rule fails.
    others = [r for r in rules.RULES if r != rule]
    assert all(not np.array_equal(want, RELU_BACKWARD[r](S, G)) for r in others)


@pytest.mark.parametrize("rule", rules.RULES)
def test_relu_module_under_jit_and_grad(rule):
    # The Linen ReLU with the rule field, jitted, through jax.grad of a weighted sum
    # (g = the weights). Tolerance: exact.
    module = modules.ReLU(rule)
    x = jnp.asarray(S.reshape(4, 5))
    dx = jax.jit(jax.grad(lambda t: jnp.sum(module.apply({}, t) * G.reshape(4, 5))))(x)
    np.testing.assert_array_equal(dx, RELU_BACKWARD[rule](S, G).reshape(4, 5))


def test_relu_gradient_rule_matches_torch_at_zero():
    # torch's ReLU derivative at 0 is 0; so is the gradient rule's. Tolerance: exact.
    t = torch.tensor(S, requires_grad=True)
    torch.relu(t).backward(torch.tensor(G))
    (dx,) = jax.vjp(lambda v: rules.relu(v, "gradient"), jnp.asarray(S))[1](jnp.asarray(G))
    np.testing.assert_array_equal(dx, t.grad.numpy())


# --- max pooling -------------------------------------------------------------------------

# (kernel, stride, padding, ceil_mode, (H, W)): overlapping 3x3 stride 2 windows, padded,
# ceil-mode windows hanging off the bottom/right edge, a non-square case.
POOL_CASES = [
    (3, 2, 0, False, (9, 9)),
    (3, 2, 0, True, (8, 10)),  # ceil: last window has 2 of its 3 rows/cols inside
    (3, 2, 1, True, (10, 7)),
    (3, 1, 1, True, (6, 6)),  # GoogLeNet's branch pool
    (2, 2, 0, True, (7, 9)),  # ceil: last window has 1 of its 2 rows/cols inside
    ((3, 2), (2, 1), (1, 0), True, (9, 8)),
]


def _pool_args(shape, kernel, stride, padding, ceil_mode):
    k, s, p = layers.pair(kernel), layers.pair(stride), layers.pair(padding)
    pads = [layers.pool_padding(n, kk, ss, pp, ceil_mode)
            for n, kk, ss, pp in zip(shape, k, s, p)]
    return k, s, p, pads


def _torch_vjp(fn, x: np.ndarray, g: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(output, input gradient) of torch ``fn`` on NHWC float64 arrays."""
    t = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2))).requires_grad_(True)
    y = fn(t)
    y.backward(torch.from_numpy(np.ascontiguousarray(g.transpose(0, 3, 1, 2))))
    return nhwc(y), nhwc(t.grad)


def _jax_vjp(fn, x: np.ndarray, g: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``fn(x)`` and its VJP with ``g``, in float64, as one compiled program (run eagerly,
    a max pool's derivative compiles each of its few dozen operations on its own)."""
    def run(x, g):
        y, vjp = jax.vjp(fn, x)
        return y, vjp(g)[0]

    with jax.enable_x64(True):
        y, dx = jax.jit(run)(jnp.asarray(x), jnp.asarray(g))
        return np.asarray(y), np.asarray(dx)


@pytest.mark.parametrize("rule", ["gradient", "deconvnet", "guided"])
@pytest.mark.parametrize("kernel,stride,padding,ceil_mode,size", POOL_CASES)
def test_max_pool_argmax_rules_match_torch_backward(rule, kernel, stride, padding, ceil_mode, size):
    # g (signed, random) goes to each window's arg-max, as torch's max_pool2d backward
    # sends it; the ReLU rules do not touch max pooling. Tolerance: F64_TOL (overlapping
    # windows add in another order); forward exact.
    k, s, p, pads = _pool_args(size, kernel, stride, padding, ceil_mode)
    rng = np.random.default_rng([rules.RULES.index(rule), *size])
    x = rng.standard_normal((2, *size, 3))
    t = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))
    want_y = nhwc(F.max_pool2d(t, k, s, p, ceil_mode=ceil_mode))
    g = rng.standard_normal(want_y.shape)
    want_y, want_dx = _torch_vjp(lambda t: F.max_pool2d(t, k, s, p, ceil_mode=ceil_mode), x, g)
    got_y, got_dx = _jax_vjp(lambda t: rules.max_pool(t, k, s, pads, rule), x, g)
    np.testing.assert_array_equal(got_y, want_y)
    assert max_rel_err(got_dx, want_dx) <= F64_TOL
    # Overlap: some input is the arg-max of more than one window.
    if k[0] > s[0]:
        assert (np.abs(want_dx) > 0).sum() < g.size


@pytest.mark.parametrize("stride", [1, 2])
def test_max_pool_window_with_a_nan_passes_no_gradient(stride):
    """A window whose maximum is NaN routes nothing; every other window routes its
    cotangent to exactly one element. Stride 1 (one gather) and stride 2 (masked slices)
    take different code paths to the same rule. Closed form: with a cotangent of ones,
    the input gradient sums to the number of windows with a finite maximum."""
    x = np.random.default_rng(4).standard_normal((1, 7, 6, 2))
    x[0, 3, 2, 1] = np.nan
    _, _, _, pads = _pool_args((7, 6), 3, stride, 1, True)
    pool = lambda t: rules.max_pool(t, (3, 3), (stride, stride), pads)  # noqa: E731
    y, dx = _jax_vjp(pool, x, np.ones(jax.eval_shape(pool, x).shape))
    assert np.isnan(y).any() and np.isfinite(dx).all()
    assert dx.sum() == np.isfinite(y).sum()
    assert set(np.unique(dx)) <= set(range(10))


@pytest.mark.parametrize("rule", ["gradient", "deconvnet", "guided"])
@pytest.mark.parametrize("values", ["constant", "few_levels"])
def test_max_pool_ties_go_where_torch_sends_them(rule, values):
    # Tied maxima: an all-equal input (every window a tie), and inputs with values in
    # {0, 1, 2} (many partial ties). torch picks the first maximum in row-major window
    # order; jaxviz must pick the same element. Overlapping 3x3 stride 2, ceil mode,
    # padding 1. Tolerance: F64_TOL (g is random; an element can win several windows).
    size, (k, s, p) = (9, 8), ((3, 3), (2, 2), (1, 1))
    _, _, _, pads = _pool_args(size, k, s, p, True)
    rng = np.random.default_rng(3)
    if values == "constant":
        x = np.full((1, *size, 2), 0.5)
    else:
        x = rng.integers(0, 3, (2, *size, 2)).astype(np.float64)
    t = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))
    out_shape = nhwc(F.max_pool2d(t, k, s, p, ceil_mode=True)).shape
    g = rng.standard_normal(out_shape)
    _, want = _torch_vjp(lambda t: F.max_pool2d(t, k, s, p, ceil_mode=True), x, g)
    _, got = _jax_vjp(lambda t: rules.max_pool(t, k, s, pads, rule), x, g)
    assert max_rel_err(got, want) <= F64_TOL
    if values == "constant":
        # Closed form: with padding 1 and stride 2, window (i, j) starts at input row
        # 2i - 1 (clipped to 0), and all of g[i, j] lands on that top-left element.
        expect = np.zeros_like(x)
        for i, j in itertools.product(range(out_shape[1]), range(out_shape[2])):
            expect[:, max(2 * i - 1, 0), max(2 * j - 1, 0)] += g[:, i, j]
        assert max_rel_err(got, expect) <= F64_TOL


@pytest.mark.parametrize("kernel,stride,padding,ceil_mode,size", POOL_CASES)
def test_max_pool_linear_rule_is_avg_pool_backward_over_valid_entries(
        kernel, stride, padding, ceil_mode, size):
    # 'linear': forward is still the max pool (exact); backward equals torch's
    # avg_pool2d backward with count_include_pad=False (each window's g shared equally
    # by its elements inside the input, ceil-mode overhang excluded). Tolerance: F64_TOL.
    k, s, p, pads = _pool_args(size, kernel, stride, padding, ceil_mode)
    rng = np.random.default_rng(7)
    x = rng.standard_normal((2, *size, 3))
    t = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))
    want_y = nhwc(F.max_pool2d(t, k, s, p, ceil_mode=ceil_mode))
    g = rng.standard_normal(want_y.shape)
    avg = lambda t: F.avg_pool2d(t, k, s, p, ceil_mode=ceil_mode,  # noqa: E731
                                 count_include_pad=False)
    _, want_dx = _torch_vjp(avg, x, g)
    got_y, got_dx = _jax_vjp(lambda t: rules.max_pool(t, k, s, pads, "linear"), x, g)
    np.testing.assert_array_equal(got_y, want_y)
    assert max_rel_err(got_dx, want_dx) <= F64_TOL
    # Counting the padding (torch's default) gives a different answer when padded.
    # (torch clips its count_include_pad divisor at the padded edge, so ceil-mode
    # overhang alone does not tell the two apart: see the closed-form test below.)
    if any(p):
        _, with_pad = _torch_vjp(lambda t: F.avg_pool2d(t, k, s, p, ceil_mode=ceil_mode), x, g)
        assert max_rel_err(with_pad, want_dx) > 1e-3


def test_max_pool_linear_rule_closed_form_edge_window():
    # 1 x 3 input, kernel 2, stride 2, ceil mode: windows {0, 1} and {2} (the second
    # hangs off the edge and holds one valid element). g = (1, 1) -> (0.5, 0.5, 1).
    # Tolerance: exact (halving is exact).
    x = jnp.asarray([[[[1.0], [5.0], [2.0]]]])  # (1, 1, 3, 1)
    pads = [layers.pool_padding(1, 1, 1, 0, True), layers.pool_padding(3, 2, 2, 0, True)]
    assert pads == [(0, 0), (0, 1)]
    y, vjp = jax.vjp(lambda t: rules.max_pool(t, (1, 2), (1, 2), pads, "linear"), x)
    np.testing.assert_array_equal(np.asarray(y).ravel(), [5.0, 2.0])
    np.testing.assert_array_equal(np.asarray(vjp(jnp.ones_like(y))[0]).ravel(), [0.5, 0.5, 1.0])
    _, vjp_max = jax.vjp(lambda t: rules.max_pool(t, (1, 2), (1, 2), pads, "gradient"), x)
    np.testing.assert_array_equal(np.asarray(vjp_max(jnp.ones_like(y))[0]).ravel(), [0, 1, 1])


@pytest.mark.parametrize("rule", rules.RULES)
def test_max_pool2d_module_forward_independent_of_rule(rule):
    # The Linen MaxPool2d passes its rule through; the forward output is torch's
    # (exact) whatever the rule.
    x = np.random.default_rng(11).standard_normal((1, 11, 10, 2)).astype(np.float32)
    want = nhwc(F.max_pool2d(torch.from_numpy(x.transpose(0, 3, 1, 2).copy()), 3, 2,
                             ceil_mode=True))
    got = modules.MaxPool2d(3, 2, ceil_mode=True, rule=rule).apply({}, jnp.asarray(x))
    np.testing.assert_array_equal(got, want)


# --- unknown rule names ---------------------------------------------------------------------


@pytest.mark.parametrize("call", [
    lambda: rules.check_rule("guidedd"),
    lambda: rules.relu(jnp.ones(3), "guidedd"),
    lambda: rules.max_pool(jnp.ones((1, 4, 4, 1)), (2, 2), (2, 2), ((0, 0), (0, 0)), "guidedd"),
    lambda: modules.ReLU("guidedd").apply({}, jnp.ones(3)),
    lambda: modules.MaxPool2d(2, rule="guidedd").apply({}, jnp.ones((1, 4, 4, 1))),
], ids=["check_rule", "relu", "max_pool", "ReLU", "MaxPool2d"])
def test_unknown_rule_raises_listing_valid_rules(call):
    with pytest.raises(ValueError, match="guidedd") as info:
        call()
    for name in rules.RULES:
        assert name in str(info.value)


def test_check_rule_accepts_every_rule():
    assert [rules.check_rule(r) for r in rules.RULES] == list(rules.RULES)


# --- a whole model ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def alexnet():
    return numpy_random_alexnet()


ARCHITECTURES = list(jv.models.ARCHITECTURES)


def two_inputs(model) -> jax.Array:
    """Two inputs ``model`` takes: noise images (ImageNet models at 64 px), or a point and
    its mirror image (different hidden units fire)."""
    spec = modules.input_spec(model)
    rng = np.random.default_rng(0)
    if spec.kind == "vector":
        point = 3.0 * rng.standard_normal(spec.channels)
        x = np.stack([point, -point])
    else:
        side = 64 if spec.scale == "imagenet" else spec.size
        x = rng.standard_normal((2, side, side, spec.channels))
    return jnp.asarray(x, jnp.float32)


@pytest.fixture(scope="module", params=ARCHITECTURES)
def registry_model(request):
    """Every registered architecture with its seeded random weights and two inputs."""
    model, variables = jv.load(request.param)
    return request.param, model, variables, two_inputs(model)


@functools.partial(jax.jit, static_argnames="model")
def _input_grad(model, variables, x):
    """d(sum of logit 1 over the batch)/dx; compiled once per (model, rules)."""
    return jax.grad(lambda t: model.apply(variables, t)[:, 1].sum())(x)


@pytest.mark.parametrize("name", ["alexnet", "lenet", "mlp2d"])
def test_forward_ignores_rules_and_backward_uses_them(name):
    # Forward: exact, the same operations run whatever the rule. Backward: each rule
    # gives a different input gradient of a class logit, through the whole network.
    # Tolerance for "different": more than 100 * F32_TOL relative. (Four full backward
    # programs per model: run on the small models and AlexNet; on every architecture,
    # the two tests below check each rule where its definition decides, and that the
    # linear rule reaches every ReLU and max pool.)
    model, variables = jv.load(name)
    x = two_inputs(model)
    assert model.rules == "gradient"
    base = np.asarray(model.apply(variables, x))
    assert np.abs(base).max() > 0
    grads = {}
    for rule in rules.RULES:
        swapped = model.clone(rules=rule)
        np.testing.assert_array_equal(swapped.apply(variables, x), base, err_msg=rule)
        grads[rule] = np.asarray(_input_grad(swapped, variables, x))
        assert np.abs(grads[rule]).max() > 0, rule
    for a, b in itertools.combinations(rules.RULES, 2):
        assert max_rel_err(grads[a], grads[b]) > 100 * F32_TOL, (name, a, b)


def test_linear_rule_gradient_does_not_depend_on_input(registry_model):
    # Closed form: with ReLU as identity and max pooling (global max pooling included)
    # as average pooling in the backward pass, every layer's backward is a fixed linear
    # map, so the input gradient is the same for any input (and for both examples of the
    # batch). The 'gradient' rule is not. Tolerance: F32_TOL.
    name, model, variables, x = registry_model
    linear = model.clone(rules="linear")
    g1 = np.asarray(_input_grad(linear, variables, x))
    g2 = np.asarray(_input_grad(linear, variables, 3.0 * x[::-1] + 1.0))
    assert max_rel_err(g2, g1) <= F32_TOL, name
    assert max_rel_err(g1[1], g1[0]) <= F32_TOL, name
    plain = np.asarray(_input_grad(model, variables, x))
    assert max_rel_err(plain[1], plain[0]) > 100 * F32_TOL, name


def _first_rectified(model, shape) -> str:
    """The first layer whose output is a ReLU's (a ReLU module, or GoogLeNet's conv block
    that ends in a functional ReLU): only linear layers lie before it."""
    table = jv.layer_names(model, shape)
    return next(info.path for info in table if info.kind in ("ReLU", "BasicConv2d"))


def test_rules_agree_and_differ_where_their_definitions_say(registry_model):
    # Objective: channel 0 of the first ReLU's output, averaged over space, so the signal
    # reaching that ReLU from above is g = 1/(h w) >= 0 on channel 0 and 0 elsewhere.
    # Then guided (1[s>0] relu(g)) equals gradient (1[s>0] g), deconvnet (relu(g))
    # equals linear (g), and gradient differs from deconvnet wherever s <= 0, which
    # random input makes happen. Only linear layers lie below, so these equalities
    # carry exactly to the input: exact (0) on the CPU, and "different" above 100 * F32_TOL.
    name, model, variables, x = registry_model
    layer = _first_rectified(model, x.shape)
    objective = jv.objectives.channel(layer, 0)
    got = {rule: np.asarray(jv.attribution.gradient(model.clone(rules=rule), variables, x,
                                                    objective))
           for rule in rules.RULES}
    for a, b in (("guided", "gradient"), ("deconvnet", "linear")):
        if jax.default_backend() == "cpu":
            np.testing.assert_array_equal(got[a], got[b], err_msg=name)
        else:  # two programs; a GPU may pick other kernels for them (H100: 2e-7 of the max)
            assert max_rel_err(got[a], got[b]) <= F32_TOL, (name, a, b)
    assert max_rel_err(got["gradient"], got["deconvnet"]) > 100 * F32_TOL, name


def test_model_with_unknown_rule_raises(alexnet):
    model, variables, x = alexnet
    with pytest.raises(ValueError, match="expected one of"):
        model.clone(rules="bogus").apply(variables, x)


@pytest.mark.parametrize("rule", rules.RULES)
def test_global_max_pool_is_max_pool_with_one_window(rule):
    # Reference: rules.max_pool with a single window over the whole map (tested above
    # against torch). Integer-valued inputs make ties (the first maximum takes the
    # gradient); a random cotangent per channel tells the channels apart. Exact (0):
    # both route or share single values.
    x = jnp.asarray(np.random.default_rng(0).integers(0, 3, (2, 5, 4, 3)), jnp.float32)
    g = jnp.asarray(np.random.default_rng(1).standard_normal((2, 3)), jnp.float32)
    t = jnp.asarray(np.random.default_rng(2).standard_normal(x.shape), jnp.float32)
    ours = lambda u: rules.global_max_pool(u, rule)  # noqa: E731
    window = lambda u: rules.max_pool(u, (5, 4), (5, 4), ((0, 0), (0, 0)), rule).reshape(2, 3)  # noqa: E731

    @jax.jit  # one program (eagerly, each operation of the derivatives compiles on its own)
    def both(x, g, t):
        (got_y, pull), (want_y, want_pull) = jax.vjp(ours, x), jax.vjp(window, x)
        tangents = ((jax.jvp(ours, (x,), (t,))[1], jax.jvp(window, (x,), (t,))[1])
                    if rule != "linear" else ())  # forward mode routes the same way
        return got_y, want_y, pull(g)[0], want_pull(g)[0], tangents

    got_y, want_y, got_dx, want_dx, tangents = both(x, g, t)
    np.testing.assert_array_equal(got_y, want_y)
    np.testing.assert_array_equal(got_dx, want_dx)
    for got, want in [tangents] if tangents else []:
        np.testing.assert_array_equal(got, want)


def test_max_pool_derivative_equals_autodiff_of_the_reduction_ties_included():
    """The mask-based derivative (rules._routed_max_pool) equals the reverse-mode
    derivative of lax.reduce_window(max) on inputs full of ties, with padding, and its
    forward mode on tie-free inputs (jax's own forward rule for the reduction breaks
    ties differently from its reverse rule; ours is one linear map, the first maximum in
    row-major order, torch's rule, in both modes)."""
    import jax
    import jax.numpy as jnp
    from jax import lax

    from jaxviz import rules

    x = jnp.round(_random.normal(jax.random.key(0), (2, 9, 8, 3)) * 2) / 2  # many ties
    t = _random.normal(jax.random.key(2), x.shape)
    smooth = _random.normal(jax.random.key(3), x.shape)
    for window, strides, padding in (((3, 3), (2, 2), ((0, 1), (0, 1))),
                                     ((2, 2), (2, 2), ((0, 0), (0, 0))),
                                     ((3, 3), (1, 1), ((1, 1), (1, 1)))):
        def ours(t):
            return rules.max_pool(t, window, strides, padding)

        def reference(t):
            pads = ((0, 0), *padding, (0, 0))
            return lax.reduce_window(t, -jnp.inf, lax.max, (1, *window, 1), (1, *strides, 1),
                                     pads)

        # every comparison below from one compiled program per configuration (eagerly,
        # each of the derivatives' operations would be compiled on its own)
        @jax.jit
        def compared(x, g, t, smooth):
            y, vjp = jax.vjp(ours, x)
            y_ref, vjp_ref = jax.vjp(reference, x)
            return dict(y=y, y_ref=y_ref, vjp=vjp(g)[0], vjp_ref=vjp_ref(g)[0],
                        jvp=jax.jvp(ours, (smooth,), (t,))[1],
                        jvp_ref=jax.jvp(reference, (smooth,), (t,))[1],
                        forward=jnp.vdot(jax.jvp(ours, (x,), (t,))[1], g),
                        reverse=jnp.vdot(t, vjp(g)[0]))

        g = _random.normal(jax.random.key(1), jax.eval_shape(ours, x).shape)
        r = compared(x, g, t, smooth)
        np.testing.assert_array_equal(r["y"], r["y_ref"])
        if jax.default_backend() == "cpu":
            np.testing.assert_array_equal(r["vjp"], r["vjp_ref"])
        else:  # a GPU adds the cotangents of overlapping windows in another order
            assert max_rel_err(r["vjp"], r["vjp_ref"]) <= F32_TOL  # (H200: 1.4e-6)
        np.testing.assert_array_equal(r["jvp"], r["jvp_ref"])
        # forward and reverse mode are transposes: <jvp(t), g> == <t, vjp(g)>
        np.testing.assert_allclose(r["forward"], r["reverse"], rtol=1e-5)

"""Attribution methods and objectives: closed forms, PyTorch references, bad input.

1. Closed forms on models whose answer is known: a linear model (every gradient method
   returns the weights; IG is (x - b) * w; occlusion is the windowed sum), a hand-built
   ReLU network where the gradient, DeconvNet and guided rules differ where their
   definitions say, a user's Linen CNN (not ours) for Grad-CAM and occlusion.
2. Seeded random torchvision AlexNet, GoogLeNet and VGG16, ported: each method equals a
   PyTorch reference written from the definitions (autograd with the ReLU backward
   replaced by a custom ``torch.autograd.Function``, in ``nn.ReLU`` modules and in
   GoogLeNet's functional ReLU inside ``BasicConv2d``), on the bundled photographs with a
   class per example, in float32 and float64.
3. Bad input fails with a message that says what was expected.

Tolerances (max error relative to the largest magnitude of the expected array,
``conftest.max_rel_err``, unless said otherwise):
  EXACT (0): gradients of a linear model and of the hand-built ReLU network are single
    products by 0, 1 or a weight: nothing to round.
  F32_ROUND = 1e-6: a float32 mean of a few identical values, or a float32 quadrature
    whose weights sum to 1 up to rounding (a few float32 ulps).
  F32_TOL = 1e-5 (conftest): float32 against torch, summing the same products in
    another order through ~20 layers (measured below 3e-6 here). In float32 a ReLU
    input within rounding of 0 or a near-tie in a max-pool window may be decided
    differently by the two frameworks (tests/torch_reference.py); such examples are
    compared on our forward pinned to torch's decisions instead.
    Grad-CAM maps, sums over channels with heavy cancellation, are held to F32_TOL of
    the scale of their terms (see test_grad_cam_matches_torch_float32).
  F64_TOL = 1e-12 (conftest): the same comparisons in float64, every example, unpinned
    (measured below 4e-14).
  OCC_F32 = 1e-4: occlusion drops ``f(x) - f(x_occluded)`` are differences of two
    float32 logits, so their rounding is relative to the logits' magnitude (here ~8x the
    largest drop), not the drops'; measured 5e-6 of the largest drop.
"""

from __future__ import annotations

import contextlib
import copy

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxviz as jv
from conftest import F32_TOL, F64_TOL, max_rel_err, nhwc, torchvision_model, numpy_random_alexnet
from jaxviz import attribution as A
from jaxviz import objectives as O
from jaxviz.models import modules

torch = pytest.importorskip("torch")
from torch_reference import (count_flips, decision_inputs_jax, decision_inputs_torch, decisions,  # noqa: E402
                             pinned_apply)
from weights_port import from_torchvision  # noqa: E402

F = torch.nn.functional
F32_ROUND = 1e-6
OCC_F32 = 1e-4


# =============================================================================================
# Models written here: closed forms
# =============================================================================================


class LinearNet(nn.Module):
    """f = W^T flatten(x) + b: every gradient method's answer is a column of W. Has a
    ``rules`` field (no ReLU to apply it to), so DeconvNet and guided backprop run."""

    classes: int = 4
    rules: str = "gradient"

    @nn.compact
    def __call__(self, x):
        return nn.Dense(self.classes, name="fc")(x.reshape(x.shape[0], -1))


class ReLUNet(nn.Module):
    """y = w2 . relu(W1 x) with our ReLU module; W1 = I, so hidden unit j is pixel j."""

    rules: str = "gradient"

    @nn.compact
    def __call__(self, x):
        h = nn.Dense(4, use_bias=False, name="fc1")(x.reshape(x.shape[0], -1))
        h = modules.ReLU(self.rules, name="relu")(h)
        return nn.Dense(1, use_bias=False, name="fc2")(h)


class UserCNN(nn.Module):
    """A user's Linen CNN, not built from jaxviz modules: Conv_0, Conv_1, Dense_0."""

    @nn.compact
    def __call__(self, x):
        x = nn.relu(nn.Conv(6, (3, 3), strides=(2, 2))(x))
        x = nn.relu(nn.Conv(8, (3, 3))(x))
        return nn.Dense(5)(x.mean(axis=(1, 2)))


@pytest.fixture(scope="module")
def linear():
    """LinearNet with random weights, x (2, 12, 10, 3), a class per example, and the
    closed-form gradient w[n] = W[:, t_n] as an image."""
    model = LinearNet()
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 12, 10, 3)).astype(np.float32)
    kernel = rng.standard_normal((360, 4)).astype(np.float32)
    bias = rng.standard_normal(4).astype(np.float32)
    variables = {"params": {"fc": {"kernel": jnp.asarray(kernel), "bias": jnp.asarray(bias)}}}
    targets = np.array([1, 3], np.int32)
    w = kernel[:, targets].T.reshape(x.shape)
    return model, variables, x, targets, w


def test_linear_model_gradient_methods_return_the_weights(linear):
    """gradient = DeconvNet = guided = w, gradient x input = x * w. Tolerance: EXACT."""
    model, variables, x, targets, w = linear
    for method in (A.gradient, A.deconvnet, A.guided_backprop):
        got = np.asarray(method(model, variables, x, targets))
        np.testing.assert_array_equal(got, w, err_msg=method.__name__)
    np.testing.assert_array_equal(A.gradient_x_input(model, variables, x, targets), x * w)
    assert not np.array_equal(w[0], w[1])  # per-example targets picked different columns


def test_linear_model_smoothgrad(linear):
    """Noise does not change a linear model's gradient: plain = w, squared = w**2,
    VarGrad = 0. Tolerance: F32_ROUND (a mean of 5 equal float32 values), and for VarGrad
    (F32_ROUND max|w|)**2 absolute."""
    model, variables, x, targets, w = linear
    key = jax.random.key(0)
    kw = dict(key=key, samples=5, noise=0.5, batch_size=2)
    assert max_rel_err(A.smoothgrad(model, variables, x, targets, **kw), w) <= F32_ROUND
    squared = A.smoothgrad(model, variables, x, targets, variant="squared", **kw)
    assert max_rel_err(squared, w * w) <= F32_ROUND
    var = np.asarray(A.smoothgrad(model, variables, x, targets, variant="vargrad", **kw))
    assert np.abs(var).max() <= (F32_ROUND * np.abs(w).max()) ** 2


@pytest.mark.parametrize("method", A.IG_METHODS)
@pytest.mark.parametrize("baseline", ["scalar", "image"])
def test_linear_model_integrated_gradients(linear, method, baseline):
    """IG of a linear model is (x - b) * w for any rule and step count (weights sum to 1),
    and complete: sum IG[n] = f_n(x) - f_n(b). Tolerances: F32_ROUND for the map; for
    completeness F32_TOL of sum |w (x - b)| (a float32 sum of 360 terms)."""
    model, variables, x, targets, w = linear
    b = np.float32(0.5)
    if baseline == "image":
        b = np.random.default_rng(1).standard_normal(x.shape[1:]).astype(np.float32)
    ig = np.asarray(A.integrated_gradients(model, variables, x, targets, baseline=b, steps=5,
                                           method=method, batch_size=2))
    want = (x - b) * w
    assert max_rel_err(ig, want) <= F32_ROUND
    rows = np.arange(2)
    fx = np.asarray(model.apply(variables, x))[rows, targets].astype(np.float64)
    fb = np.asarray(model.apply(variables, np.broadcast_to(b, x.shape)))[rows, targets]
    gap = np.abs(ig.reshape(2, -1).astype(np.float64).sum(1) - (fx - fb))
    assert (gap <= F32_TOL * np.abs(want).reshape(2, -1).sum(1)).all(), gap


def test_window_positions():
    """Starts at 0, stride, ... and a last window flush with the edge."""
    assert A.window_positions(12, 5, 3) == [0, 3, 6, 7]
    assert A.window_positions(10, 4, 3) == [0, 3, 6]
    assert A.window_positions(8, 8, 2) == [0]
    assert A.window_positions(9, 1, 4) == [0, 4, 8]


def test_linear_model_occlusion_closed_form(linear):
    """Drop of window w: sum over w of W_t (x - b); the map at a pixel: the mean drop of
    the windows covering it, computed here in float64 by loops. Window (5, 4) stride 3 on
    12 x 10: rows 0, 3, 6, 7 (the last added flush), columns 0, 3, 6. Tolerance: the drops
    are differences of float32 logits, F32_TOL of sum |w x| + |w b|."""
    model, variables, x, targets, w = linear
    b = 0.25
    heat, grid = A.occlusion(model, variables, x, targets, window=(5, 4), stride=3, baseline=b,
                             batch_size=5, return_windows=True)
    assert heat.shape == (2, 12, 10) and grid.shape == (2, 4, 3) and heat.dtype == np.float32
    terms = w.astype(np.float64) * (x - b)
    want_grid = np.zeros((2, 4, 3))
    total, count = np.zeros((2, 12, 10)), np.zeros((12, 10))
    for i, r in enumerate([0, 3, 6, 7]):
        for j, c in enumerate([0, 3, 6]):
            want_grid[:, i, j] = terms[:, r:r + 5, c:c + 4].sum(axis=(1, 2, 3))
            total[:, r:r + 5, c:c + 4] += want_grid[:, i, j, None, None]
            count[r:r + 5, c:c + 4] += 1
    assert count.min() >= 1
    scale = (np.abs(w * x) + np.abs(w * b)).sum()
    assert np.abs(np.asarray(grid) - want_grid).max() <= F32_TOL * scale
    assert np.abs(np.asarray(heat) - total / count).max() <= F32_TOL * scale


def test_relu_rules_differ_where_the_definitions_say():
    """y = w2 . relu(x) with w2 = (2, -1, 3, -4). Example 0, x = (1, 2, -1, -3): ReLU
    inputs +, +, -, -; example 1, x = (-1, 2, 1, -3): -, +, +, -. Then
      gradient  passes where the input > 0:               w2 * 1[x > 0]
      deconvnet passes where the upstream w2 > 0:          relu(w2)
      guided    passes where both:                         relu(w2) * 1[x > 0]
    Tolerance: EXACT."""
    model = ReLUNet()
    w2 = np.array([2.0, -1.0, 3.0, -4.0], np.float32)
    variables = {"params": {"fc1": {"kernel": jnp.eye(4)}, "fc2": {"kernel": jnp.asarray(w2[:, None])}}}
    x = np.array([[1, 2, -1, -3], [-1, 2, 1, -3]], np.float32).reshape(2, 1, 2, 2)
    flat = x.reshape(2, 4)
    want = {
        "gradient": np.where(flat > 0, w2, 0),
        "deconvnet": np.broadcast_to(np.maximum(w2, 0), (2, 4)),
        "guided": np.where(flat > 0, np.maximum(w2, 0), 0),
    }
    np.testing.assert_array_equal(want["gradient"], [[2, -1, 0, 0], [0, -1, 3, 0]])
    np.testing.assert_array_equal(want["deconvnet"], [[2, 0, 3, 0], [2, 0, 3, 0]])
    np.testing.assert_array_equal(want["guided"], [[2, 0, 0, 0], [0, 0, 3, 0]])
    got = {"gradient": A.gradient, "deconvnet": A.deconvnet, "guided": A.guided_backprop}
    for rule, method in got.items():
        np.testing.assert_array_equal(np.asarray(method(model, variables, x, 0)).reshape(2, 4),
                                      want[rule], err_msg=rule)


# --- a user's CNN ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def user_cnn():
    """UserCNN with Linen's initialization, biases redrawn N(0, 0.3^2) (Linen's zero
    biases make a ReLU network positively homogeneous, so IG along a ray from 0 would be
    trivially exact), x (2, 20, 24, 3), a class per example."""
    model = UserCNN()
    x = np.random.default_rng(2).standard_normal((2, 20, 24, 3)).astype(np.float32)
    rng = np.random.default_rng(3)

    def redraw(path, leaf):
        if path[-1].key != "bias":
            return leaf
        return jnp.asarray(0.3 * rng.standard_normal(leaf.shape), jnp.float32)

    variables = jax.tree_util.tree_map_with_path(redraw, jax.jit(model.init)(jax.random.key(0), x))
    return model, variables, x, np.array([1, 4], np.int32)


def test_user_cnn_grad_cam_equals_its_definition(user_cnn):
    """Grad-CAM at a user model's 'Conv_1' (reached by Linen path, no stop_at, no rules):
    A from capture, dA from the model's head written out by hand (mean over space of
    relu(A), then Dense_0). Tolerance: F32_TOL (the same float32 ops, another program)."""
    model, variables, x, targets = user_cnn
    act = jv.activations(model, variables, x, "Conv_1")["Conv_1"]
    dense = variables["params"]["Dense_0"]

    def head(a):
        logits = jax.nn.relu(a).mean(axis=(1, 2)) @ dense["kernel"] + dense["bias"]
        return logits[np.arange(2), targets].sum()

    grad = jax.grad(head)(act)
    got_act, got_grad = A.layer_gradient(model, variables, x, targets, layer="Conv_1")
    assert max_rel_err(got_act, act) <= F32_TOL and max_rel_err(got_grad, grad) <= F32_TOL
    raw = jax.nn.relu(jnp.einsum("nhwk,nk->nhw", act, grad.mean(axis=(1, 2))))
    heat, got_raw = A.grad_cam(model, variables, x, targets, layer="Conv_1", return_raw=True)
    assert got_raw.shape == (2, 10, 12) and heat.shape == (2, 20, 24)  # SAME padding
    assert np.abs(raw).max() > 0 and max_rel_err(got_raw, raw) <= F32_TOL
    want = F.interpolate(torch.from_numpy(np.array(raw))[:, None], size=(20, 24), mode="bilinear",
                         align_corners=False)[:, 0].numpy()
    assert max_rel_err(heat, want) <= F32_TOL


def test_user_cnn_occlusion_equals_a_loop_over_windows(user_cnn):
    """Batched, chunked occlusion (padded last chunk) against one jitted forward per window.
    Tolerance: OCC_F32 (differences of float32 logits, see the module docstring)."""
    model, variables, x, targets = user_cnn
    apply = jax.jit(model.apply)
    rows = np.arange(2)
    ref = np.asarray(apply(variables, x))[rows, targets]
    window, stride = 7, 5
    ys, xs = A.window_positions(20, window, stride), A.window_positions(24, window, stride)
    grid = np.zeros((2, len(ys), len(xs)), np.float32)
    total, count = np.zeros((2, 20, 24)), np.zeros((20, 24))
    for i, r in enumerate(ys):
        for j, c in enumerate(xs):
            occluded = x.copy()
            occluded[:, r:r + window, c:c + window] = -1.0
            grid[:, i, j] = ref - np.asarray(apply(variables, occluded))[rows, targets]
            total[:, r:r + window, c:c + window] += grid[:, i, j, None, None]
            count[r:r + window, c:c + window] += 1
    heat, got = A.occlusion(model, variables, x, targets, window=window, stride=stride,
                            baseline=-1.0, batch_size=7, return_windows=True)
    assert max_rel_err(got, grid) <= OCC_F32
    assert max_rel_err(heat, total / count) <= OCC_F32
    again = A.occlusion(model, variables, x, targets, window=window, stride=stride, baseline=-1.0,
                        batch_size=None)
    assert max_rel_err(again, heat) <= OCC_F32


def test_user_cnn_integrated_gradients_completeness(user_cnn):
    """Nonlinear model: sum IG[n] -> f_n(x) - f_n(b) as steps grow (b = -0.5). With 128
    trapezoid steps the gap is under 1% of |f(x) - f(b)| (measured 0.2-0.5% at 64 steps,
    3-4% at 4) and smaller than with 4 steps."""
    model, variables, x, targets = user_cnn
    rows, b = np.arange(2), -0.5
    delta = np.asarray(model.apply(variables, x) - model.apply(variables, jnp.full_like(x, b)))
    delta = delta[rows, targets]

    def gap(steps):
        ig = A.integrated_gradients(model, variables, x, targets, baseline=b, steps=steps,
                                    method="riemann_trapezoid", batch_size=64)
        return np.abs(np.asarray(ig).reshape(2, -1).sum(1) - delta)

    coarse, fine = gap(4), gap(128)
    assert (fine <= 1e-2 * np.abs(delta)).all(), (fine, delta)
    assert (fine < coarse).all(), (fine, coarse)


def test_smoothgrad_noise_recipe_and_chunking(user_cnn):
    """The documented draws (sample s uses normal(split(key, S)[s], x.shape)) given as
    noise_samples reproduce the key's result, whatever the chunk size. Tolerance:
    F32_ROUND (sums of the same samples in other groupings)."""
    model, variables, x, targets = user_cnn
    key, samples = jax.random.key(3), 5
    eps = jnp.stack([jax.random.normal(k, x.shape, jnp.float32) for k in jax.random.split(key, samples)])
    for variant in A.SMOOTHGRAD_VARIANTS:
        base = A.smoothgrad(model, variables, x, targets, key=key, samples=samples, variant=variant)
        assert np.abs(base).max() > 0
        for batch in (1, 2, None):
            got = A.smoothgrad(model, variables, x, targets, noise_samples=eps, variant=variant,
                               batch_size=batch)
            assert max_rel_err(got, base) <= F32_ROUND, (variant, batch)
    other = A.smoothgrad(model, variables, x, targets, key=jax.random.key(4), samples=samples)
    assert max_rel_err(other, base) > 100 * F32_ROUND


def test_methods_under_jit(user_cnn):
    """Called inside jax.jit with the model and target closed over, or the target traced:
    the same answers as eager calls. Tolerance: F32_TOL."""
    model, variables, x, targets = user_cnn
    eager = A.gradient(model, variables, x, targets)
    traced = jax.jit(lambda v, x, t: A.gradient(model, v, x, t))(variables, x, jnp.asarray(targets))
    assert max_rel_err(traced, eager) <= F32_TOL
    cam = jax.jit(lambda v, x: A.grad_cam(model, v, x, targets, layer="Conv_1"))(variables, x)
    assert max_rel_err(cam, A.grad_cam(model, variables, x, targets, layer="Conv_1")) <= F32_TOL
    sg = jax.jit(lambda v, x, k: A.smoothgrad(model, v, x, targets, key=k, samples=3))
    key = jax.random.key(0)
    assert max_rel_err(sg(variables, x, key), A.smoothgrad(model, variables, x, targets, key=key,
                                                            samples=3)) <= F32_TOL


def test_new_targets_reuse_the_compiled_program(linear):
    """Targets and objective indices are pytree leaves: new classes of the same shape
    trace nothing new (counted by a Python side effect in the model's __call__)."""
    traces = []

    class Counting(LinearNet):
        @nn.compact
        def __call__(self, x):
            traces.append(1)
            return super().__call__(x)

    _, variables, x, _, w = linear
    model = Counting()
    A.gradient(model, variables, x, np.array([0, 1]))
    before = len(traces)
    got = A.gradient(model, variables, x, np.array([1, 3]))
    A.gradient(model, variables, x, np.array([2, 2]))
    assert len(traces) == before and before > 0
    np.testing.assert_array_equal(got, w)


# =============================================================================================
# Objectives
# =============================================================================================


@pytest.fixture(scope="module")
def alexnet():
    return numpy_random_alexnet()


def test_objectives_equal_their_definitions(alexnet):
    """Each objective against its formula on jv.activations / model.apply; per-example
    indices; aliases and paths; sums and weights. Tolerance: F32_ROUND (the same float32
    operations, possibly stopped at another layer)."""
    model, variables, x = alexnet
    acts = jv.activations(model, variables, x, ["conv5", "relu2", "pool1", "conv3", "fc6"])
    logits = model.apply(variables, x)
    rows, idx = np.arange(2), np.array([1, 2])
    v = np.random.default_rng(0).standard_normal((2, 384)).astype(np.float32)
    cases = {
        "class_logit": (O.class_logit(3), logits[:, 3]),
        "class_logit per example": (O.class_logit(np.array([3, 9])), logits[rows, [3, 9]]),
        "channel": (O.channel("conv5", idx), acts["conv5"].mean(axis=(1, 2))[rows, idx]),
        "channel of a flat layer": (O.channel("classifier.1", 7), acts["fc6"][:, 7]),
        "neuron at the centre": (O.neuron("relu2", 3), acts["relu2"][:, 3, 3, 3]),
        "neuron at (y, x)": (O.neuron("features.4", idx, y=0, x=2), acts["relu2"][rows, 0, 2, idx]),
        "layer_max": (O.layer_max("pool1"), acts["pool1"].reshape(2, -1).max(1)),
        "direction (C,)": (O.direction("conv3", v[0]), acts["conv3"].mean(axis=(1, 2)) @ v[0]),
        "direction (N, C)": (O.direction("conv3", v), (acts["conv3"].mean(axis=(1, 2)) * v).sum(1)),
    }
    for name, (objective, want) in cases.items():
        got = objective(model, variables, x)
        assert got.shape == (2,), name
        assert max_rel_err(got, want) <= F32_ROUND, name
    assert acts["relu2"].shape[1:3] == (7, 7)  # so the centre is (3, 3)
    combo = O.class_logit(3) - 0.5 * O.channel("conv5", idx) + O.layer_max("pool1") / 4
    combo = combo + (lambda m, v, x: 2.0 * m.apply(v, x)[:, 0])
    want = logits[:, 3] - 0.5 * cases["channel"][1] + cases["layer_max"][1] / 4 + 2 * logits[:, 0]
    assert max_rel_err(combo(model, variables, x), want) <= F32_ROUND
    assert max_rel_err(sum([O.layer_max("pool1"), -O.class_logit(3)])(model, variables, x),
                       cases["layer_max"][1] - logits[:, 3]) <= F32_ROUND


def _called_layers(objective, model, variables, x) -> list[str]:
    """Module paths called, in order, by one evaluation of ``objective``."""
    called = []

    def spy(call, args, kwargs, context):
        if context.method_name == "__call__":
            called.append(".".join(context.module.path))
        return call(*args, **kwargs)

    with nn.intercept_methods(spy):
        objective(model, variables, x)
    return called


def test_objectives_run_one_forward_and_stop_early(alexnet):
    """A sum of layer objectives and a class logit runs the model once; layer objectives
    alone stop after their last layer (nothing of the classifier runs)."""
    model, variables, x = alexnet
    both = O.channel("conv2", 0) + O.class_logit(1) + O.layer_max("conv5")
    called = _called_layers(both, model, variables, x)
    assert called.count("") == 1 and called.count("features.3") == 1 and "classifier.6" in called
    layers_only = O.channel("conv2", 0) + O.neuron("conv4", 1)
    called = _called_layers(layers_only, model, variables, x)
    assert called.count("features.3") == 1 and "features.8" in called
    assert not any(p.startswith("classifier") or p == "features.10" for p in called), called


def test_objective_gradient_on_alexnet(alexnet):
    """gradient() of a channel objective equals jax.grad of its formula. F32_TOL."""
    model, variables, x = alexnet
    idx = np.array([5, 6])
    got = A.gradient(model, variables, x, O.channel("conv4", idx))
    want = jax.grad(lambda t: jv.activations(model, variables, t, "features.8")["features.8"]
                    .mean(axis=(1, 2))[np.arange(2), idx].sum())(x)
    assert np.abs(want).max() > 0 and max_rel_err(got, want) <= F32_TOL


def test_objectives_are_pytrees_that_jit_once(alexnet):
    """Indices are leaves, layer names static: one trace serves every index."""
    model, variables, x = alexnet
    traces = []

    @jax.jit
    def run(variables, x, objective):
        traces.append(1)
        return objective(model, variables, x)

    a = run(variables, x, O.channel("conv5", 3))
    b = run(variables, x, O.channel("conv5", 4))
    assert len(traces) == 1 and not np.allclose(a, b)
    run(variables, x, O.channel("conv4", 3))
    assert len(traces) == 2


def test_as_objective():
    c = O.as_objective(3)
    assert isinstance(c, O.ClassLogit) and int(c.target) == 3
    assert isinstance(O.as_objective(np.array([1, 2])), O.ClassLogit)
    assert isinstance(O.as_objective(jnp.array([1, 2])), O.ClassLogit)
    ch = O.channel("conv1", 1)
    assert O.as_objective(ch) is ch

    def fn(model, variables, x):
        return x.sum(axis=(1, 2, 3))

    assert O.as_objective(fn) is fn
    for bad, what in [(1.5, "float"), ("cat", "str"), (np.array([0.5]), "float64"), (True, "bool"),
                      (None, "NoneType")]:
        with pytest.raises(TypeError, match="expected a target") as info:
            O.as_objective(bad)
        assert what in str(info.value)


# =============================================================================================
# Bad input
# =============================================================================================


def _sg(**kw):
    return lambda m, v, x: A.smoothgrad(m, v, x, 1, **kw)


def _ig(**kw):
    return lambda m, v, x: A.integrated_gradients(m, v, x, 1, **kw)


BAD_CALLS = {
    # name: (call(model, variables, x), exception, words the message must contain)
    "x of rank 3": (lambda m, v, x: A.gradient(m, v, x[0], 1), ValueError, ["(N, H, W, C)", "(20, 24, 3)"]),
    "int x": (lambda m, v, x: A.gradient(m, v, x.astype(np.int32), 1), TypeError, ["float", "int32"]),
    "class out of range": (lambda m, v, x: A.gradient(m, v, x, 5), ValueError, ["class index 5", "5 classes"]),
    "negative class": (lambda m, v, x: A.gradient(m, v, x, -1), ValueError, ["non-negative", "-1"]),
    "a class per example, wrong count": (lambda m, v, x: A.gradient(m, v, x, np.array([0, 1, 2])),
                                         ValueError, ["(2,)", "(3,)"]),
    "float target": (lambda m, v, x: A.gradient(m, v, x, 1.5), TypeError, ["expected a target", "float"]),
    "channel out of range": (lambda m, v, x: A.gradient(m, v, x, O.channel("Conv_1", 8)), ValueError,
                             ["channel 8", "8 channels", "Conv_1"]),
    "neuron outside the layer": (lambda m, v, x: A.gradient(m, v, x, O.neuron("Conv_1", 0, y=10)),
                                 ValueError, ["y=10", "10x12"]),
    "direction of the wrong length": (lambda m, v, x: A.gradient(m, v, x, O.direction("Conv_1", np.ones(3))),
                                      ValueError, ["(8,)", "(3,)"]),
    "unknown layer in an objective": (lambda m, v, x: A.gradient(m, v, x, O.channel("Conv_9", 0)), KeyError,
                                      ["Conv_9", "Closest"]),
    "objective not (N,)": (lambda m, v, x: A.gradient(m, v, x, lambda m, v, x: m.apply(v, x).sum()),
                           ValueError, ["one value per example", "(2,)"]),
    "smoothgrad without key": (_sg(), TypeError, ["key=", "noise_samples"]),
    "smoothgrad unknown variant": (_sg(key=jax.random.key(0), variant="cubic"), ValueError,
                                   ["cubic", "plain", "squared", "vargrad"]),
    "smoothgrad noise of the wrong shape": (_sg(noise_samples=np.zeros((3, 2, 20, 24))), ValueError,
                                            ["noise_samples", "(3, 2, 20, 24)"]),
    "smoothgrad negative noise": (_sg(key=jax.random.key(0), noise=-0.1), ValueError, ["noise", "-0.1"]),
    "smoothgrad batch_size 0": (_sg(key=jax.random.key(0), batch_size=0), ValueError, ["batch_size", "0"]),
    "IG unknown method": (_ig(method="simpson"), ValueError, ["simpson", "riemann_trapezoid"]),
    "IG zero steps": (_ig(steps=0), ValueError, ["steps", "0"]),
    "IG trapezoid with one step": (_ig(steps=1, method="riemann_trapezoid"), ValueError, ["steps", ">= 2"]),
    "IG baseline of the wrong shape": (_ig(baseline=np.zeros((5, 5))), ValueError, ["baseline", "(5, 5)"]),
    "occlusion window too large": (lambda m, v, x: A.occlusion(m, v, x, 1, window=21), ValueError,
                                   ["window 21", "20"]),
    "occlusion zero stride": (lambda m, v, x: A.occlusion(m, v, x, 1, window=4, stride=0), ValueError,
                              ["stride"]),
    "Grad-CAM unknown layer": (lambda m, v, x: A.grad_cam(m, v, x, 1, layer="Conv_2"), KeyError,
                               ["Conv_2", "Closest"]),
    "Grad-CAM on a flat layer": (lambda m, v, x: A.grad_cam(m, v, x, 1, layer="Dense_0"), ValueError,
                                 ["spatial", "Dense_0", "(2, 5)"]),
    "guided backprop without rules": (lambda m, v, x: A.guided_backprop(m, v, x, 1), TypeError,
                                      ["rules", "jaxviz.models.modules.ReLU", "MaxPool2d"]),
    "DeconvNet without rules": (lambda m, v, x: A.deconvnet(m, v, x, 1), TypeError,
                                ["rules", "jaxviz.models.modules.ReLU"]),
}


@pytest.mark.parametrize("case", list(BAD_CALLS))
def test_bad_input_fails_clearly(user_cnn, case):
    call, error, words = BAD_CALLS[case]
    model, variables, x, _ = user_cnn
    with pytest.raises(error) as info:
        call(model, variables, x)
    for word in words:
        assert word in str(info.value), (case, str(info.value))


def test_objective_constructors_reject_bad_arguments():
    with pytest.raises(TypeError, match="channel"):
        O.channel("conv1", 1.0)
    with pytest.raises(TypeError, match="layer names are strings"):
        O.layer_max(3)
    with pytest.raises(TypeError, match="y as an int"):
        O.neuron("conv1", 0, y=1.5)
    with pytest.raises(ValueError, match=r"shape \(C,\) or \(N, C\)"):
        O.direction("conv1", np.ones((2, 3, 4)))
    with pytest.raises(ValueError, match="non-negative"):
        O.class_logit(np.array([1, -2]))


# =============================================================================================
# PyTorch references written from the definitions
# =============================================================================================


def _relu_backward(rule: str):
    """A torch ReLU whose backward is the rule's definition (not autograd's)."""

    class RuleReLU(torch.autograd.Function):
        @staticmethod
        def forward(ctx, s):
            ctx.save_for_backward(s)
            return s.clamp(min=0)

        @staticmethod
        def backward(ctx, g):
            (s,) = ctx.saved_tensors
            if rule == "gradient":
                return g * (s > 0)
            if rule == "deconvnet":
                return g.clamp(min=0)
            if rule == "guided":
                return g.clamp(min=0) * (s > 0)
            raise ValueError(rule)

    return RuleReLU.apply


@contextlib.contextmanager
def torch_relu_rule(tmodel, rule: str):
    """Every ReLU of ``tmodel`` follows ``rule`` backward: ``nn.ReLU`` modules and the
    functional ``F.relu`` in torchvision's GoogLeNet ``BasicConv2d`` (patched per
    instance; forward unchanged)."""
    from torchvision.models.googlenet import BasicConv2d

    relu = _relu_backward(rule)
    patched = []
    for m in tmodel.modules():
        if isinstance(m, torch.nn.ReLU):
            m.forward = relu
        elif isinstance(m, BasicConv2d):
            m.forward = lambda x, m=m: relu(m.bn(m.conv(x)))
        else:
            continue
        patched.append(m)
    assert patched, "no ReLU found to patch"
    try:
        yield len(patched)
    finally:
        for m in patched:
            del m.forward


def _nchw(x: np.ndarray, dtype) -> "torch.Tensor":
    return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2))).to(dtype)


def torch_input_grad(tmodel, x: np.ndarray, targets: np.ndarray, rule: str = "gradient") -> np.ndarray:
    """d logit[n, targets[n]] / d x[n], NHWC, with the ReLU backward of ``rule``."""
    dtype = next(tmodel.parameters()).dtype
    xt = _nchw(x, dtype).requires_grad_(True)
    with torch_relu_rule(tmodel, rule):
        out = tmodel(xt)
    out[torch.arange(len(x)), torch.from_numpy(targets).long()].sum().backward()
    return nhwc(xt.grad)


def torch_layer_gradient(tmodel, x, targets, layer):
    """(A, d sum_n logit[n, targets[n]] / dA) at ``layer``, NHWC, by autograd."""
    dtype = next(tmodel.parameters()).dtype
    found = {}
    handle = dict(tmodel.named_modules())[layer].register_forward_hook(
        lambda m, i, o: found.__setitem__("a", o))
    try:
        out = tmodel(_nchw(x, dtype))
    finally:
        handle.remove()
    (grad,) = torch.autograd.grad(out[torch.arange(len(x)), torch.from_numpy(targets).long()].sum(),
                                  found["a"])
    return nhwc(found["a"]), nhwc(grad)


def torch_grad_cam(act: np.ndarray, grad: np.ndarray, size) -> tuple[np.ndarray, np.ndarray]:
    """Grad-CAM from its definition, given A and dA (NHWC): (upsampled map, raw map)."""
    a, g = torch.from_numpy(act), torch.from_numpy(grad)
    weights = g.mean(dim=(1, 2))
    raw = torch.relu((a * weights[:, None, None, :]).sum(dim=-1))
    up = F.interpolate(raw[:, None], size=size, mode="bilinear", align_corners=False)[:, 0]
    return up.numpy(), raw.numpy()


def torch_smoothgrad(tmodel, x: np.ndarray, targets: np.ndarray, eps: np.ndarray, noise: float,
                     variant: str) -> np.ndarray:
    """SmoothGrad from its definition on the given standard-normal draws (S, N, H, W, C)."""
    s, n = eps.shape[:2]
    sigma = noise * (x.max(axis=(1, 2, 3)) - x.min(axis=(1, 2, 3)))
    noisy = (x[None] + sigma[None, :, None, None, None] * eps).reshape(s * n, *x.shape[1:])
    g = torch_input_grad(tmodel, noisy, np.tile(targets, s)).reshape(s, n, *x.shape[1:])
    gt = torch.from_numpy(g)
    if variant == "plain":
        return gt.mean(0).numpy()
    if variant == "squared":
        return (gt * gt).mean(0).numpy()
    return gt.var(0, unbiased=False).numpy()


def torch_integrated_gradients(tmodel, x, targets, baseline, alphas, weights) -> np.ndarray:
    """(x - b) * sum_k w_k grad f(b + alpha_k (x - b)), one torch batch for all points."""
    path = np.concatenate([baseline + a * (x - baseline) for a in alphas])
    g = torch_input_grad(tmodel, path, np.tile(targets, len(alphas))).reshape(len(alphas), *x.shape)
    return (x - baseline) * np.tensordot(weights, g, axes=1)


def torch_occlusion_loop(tmodel, x, targets, window, stride, baseline):
    """Occlusion one window at a time (a plain loop), from the definition: the drops and
    the mean over covering windows."""
    dtype = next(tmodel.parameters()).dtype
    n, h, w = x.shape[:3]
    rows_cols = A.window_positions(h, window, stride), A.window_positions(w, window, stride)
    rows = torch.arange(n)
    tt = torch.from_numpy(targets).long()
    with torch.no_grad():
        ref = tmodel(_nchw(x, dtype))[rows, tt].numpy()
        grid = np.zeros((n, len(rows_cols[0]), len(rows_cols[1])))
        total, count = np.zeros((n, h, w)), np.zeros((h, w))
        for a, r in enumerate(rows_cols[0]):
            for b, c in enumerate(rows_cols[1]):
                occluded = x.copy()
                occluded[:, r:r + window, c:c + window] = baseline
                drop = ref - tmodel(_nchw(occluded, dtype))[rows, tt].numpy()
                grid[:, a, b] = drop
                total[:, r:r + window, c:c + window] += drop[:, None, None]
                count[r:r + window, c:c + window] += 1
    return total / count, grid


# =============================================================================================
# Against torch: AlexNet and GoogLeNet, seeded random weights, two photographs
# =============================================================================================

# Per architecture: input size, Grad-CAM layer (torchvision path, and the name we pass).
ARCHS = {
    "alexnet": ((112, 112), "features.11", "relu5"),
    "googlenet": ((112, 112), "inception4e", "inception4e"),
    "vgg16": ((64, 64), "features.29", "relu5_3"),
}
TARGETS = np.array([281, 7], dtype=np.int32)  # a class per example
RULE_OF = {"gradient": "gradient", "gradient_x_input": "gradient", "deconvnet": "deconvnet",
           "guided_backprop": "guided"}
SG_SAMPLES, SG_NOISE, IG_STEPS, IG_BASELINE = 3, 0.25, 3, 0.3
SG_VARIANT = {"smoothgrad": "plain", "smoothgrad_squared": "squared", "vargrad": "vargrad"}


def photographs(size) -> np.ndarray:
    """(2, H, W, 3) float32: the bundled cat and coffee photographs, ImageNet-normalized."""
    return jv.data.preprocess([jv.data.sample_image("chelsea"), jv.data.sample_image("coffee")],
                              size, resize="exact")


class Arch:
    """A seeded torchvision model, its float64 twin, their ports, torch's decisions on the
    photographs and our flips against them; torch references computed once, on demand."""

    def __init__(self, name: str):
        self.name = name
        self.size, self.cam_path, self.cam_layer = ARCHS[name]
        kwargs = {"aux_logits": False} if name == "googlenet" else {}
        self.torch = {"float32": torchvision_model(name, **kwargs)}
        self.torch["float64"] = copy.deepcopy(self.torch["float32"]).double()
        self.model, self.v32 = from_torchvision(self.torch["float32"])
        with jax.enable_x64(True):
            _, self.v64 = from_torchvision(self.torch["float64"])
        self.x = photographs(self.size)
        t32 = self.torch["float32"]
        self.torch_decisions = decisions(t32, decision_inputs_torch(t32, self.x))
        ours = decisions(t32, decision_inputs_jax(self.model, self.v32, self.x))
        self.flips = count_flips(self.torch_decisions, ours, len(self.x))
        # occlusion: 2 x 2 windows of half the image, overlapping, the last flush
        self.occ_window = self.size[0] // 2 + 8
        self.occ_stride = self.size[0] // 2 - 8
        self._cache = {}

    def cached(self, key, compute):
        if key not in self._cache:
            self._cache[key] = compute()
        return self._cache[key]

    def pinned_grad(self, rule: str) -> np.ndarray:
        """Our float32 input gradient with every decision pinned to torch's, under ``rule``
        (gradient and gradient x input share it). Weights and decisions are arguments of
        the program, not constants in it (see ``pinned_apply``)."""
        def compute():
            rows = np.arange(len(TARGETS))
            grad = jax.jit(jax.grad(lambda x, v, fixed: pinned_apply(
                self.model, v, x, fixed, rule)[rows, TARGETS].sum()))
            return np.asarray(grad(jnp.asarray(self.x), self.v32, self.torch_decisions))
        return self.cached(("pinned", rule), compute)

    def x_as(self, dtype: str) -> np.ndarray:
        return self.x.astype(dtype)

    def grad(self, rule: str, dtype: str) -> np.ndarray:
        return self.cached(("grad", rule, dtype), lambda: torch_input_grad(
            self.torch[dtype], self.x_as(dtype), TARGETS, rule))

    def layer(self, dtype: str):
        """(A, dA, upsampled map, raw map) at the Grad-CAM layer."""
        def compute():
            act, grad = torch_layer_gradient(self.torch[dtype], self.x_as(dtype), TARGETS, self.cam_path)
            return (act, grad, *torch_grad_cam(act, grad, self.size))
        return self.cached(("layer", dtype), compute)

    def noisy_grads(self, eps: np.ndarray) -> np.ndarray:
        """torch gradients at x + sigma eps for every draw, float64: (S, N, H, W, 3)."""
        def compute():
            x = self.x_as("float64")
            sigma = SG_NOISE * (x.max(axis=(1, 2, 3)) - x.min(axis=(1, 2, 3)))
            noisy = (x[None] + sigma[None, :, None, None, None] * eps).reshape(-1, *x.shape[1:])
            g = torch_input_grad(self.torch["float64"], noisy, np.tile(TARGETS, len(eps)))
            return g.reshape(eps.shape)
        return self.cached("noisy", compute)


@pytest.fixture(scope="module", params=list(ARCHS))
def arch(request) -> Arch:
    return Arch(request.param)


def per_example(got, want) -> np.ndarray:
    return np.array([max_rel_err(g, w) for g, w in zip(got, want)])


@pytest.mark.parametrize("method", list(RULE_OF))
def test_gradient_methods_match_torch_float32(arch, method):
    """gradient, gradient x input, DeconvNet, guided backprop against torch autograd with
    the ReLU backward replaced. Examples whose ReLU/pool decisions agree with torch's:
    F32_TOL unpinned; examples with flips: F32_TOL on our forward pinned to torch's
    decisions under the same rule (plain autodiff of a pinned forward, not our method,
    so there only the rule and the rest of the backward pass are checked)."""
    rule = RULE_OF[method]
    want = arch.grad(rule, "float32")
    if method == "gradient_x_input":
        want = arch.x * want
    got = np.asarray(getattr(A, method)(arch.model, arch.v32, jnp.asarray(arch.x), TARGETS))
    assert got.dtype == np.float32 and got.shape == arch.x.shape
    errors = per_example(got, want)
    agree = arch.flips == 0
    report = f"{arch.name} {method}: flips {arch.flips}, errors {errors}"
    if agree.any():
        assert errors[agree].max() <= F32_TOL, report
    # The pinned fallback runs where an example flipped; it is also run once where none
    # did (AlexNet, guided: pinned signs and the gradient's sign both used), where it must
    # give our method's answer, so the fallback itself is checked on inputs without flips.
    if not agree.all() or (arch.name, method) == ("alexnet", "guided_backprop"):
        p = arch.pinned_grad(rule)
        if method == "gradient_x_input":
            p = arch.x * p
        pinned_errors = per_example(p, want)
        report += f", pinned to torch's decisions {pinned_errors}"
        assert pinned_errors.max() <= F32_TOL, report
    print(report)


def test_rules_differ_in_the_torch_reference(arch):
    """The reference's patch reached the ReLUs (GoogLeNet's functional ones too): the
    three rules give torch answers more than 100 F32_TOL apart."""
    grads = {r: arch.grad(r, "float32") for r in ("gradient", "deconvnet", "guided")}
    assert max_rel_err(grads["guided"], grads["gradient"]) > 100 * F32_TOL
    assert max_rel_err(grads["deconvnet"], grads["guided"]) > 100 * F32_TOL
    with torch_relu_rule(arch.torch["float32"], "guided") as sites:
        # AlexNet: 7 nn.ReLU; VGG16: 15; GoogLeNet: 57 BasicConv2d with a functional ReLU.
        assert sites == {"alexnet": 7, "vgg16": 15, "googlenet": 57}[arch.name]


def test_grad_cam_matches_torch_float32(arch):
    """Grad-CAM against its definition in torch, layer given by its alias, flip-free
    examples. The layer's activation A and gradient dA (``layer_gradient``) at F32_TOL.
    The map sums w_c A_c over channels with heavy cancellation (random weights: AlexNet's
    relu5 map is ~1e-3 of the sum of its terms' magnitudes, and zero after the ReLU on the
    coffee image), so the maps are held to F32_TOL of the terms' scale,
    ``max_ij sum_c |w_c A_c|``: float32 errors in A and dA of F32_TOL relative carry
    through the sum at that scale, not at the scale of the cancelled result."""
    x = jnp.asarray(arch.x)
    act_t, grad_t, up, raw = arch.layer("float32")
    act, grad = A.layer_gradient(arch.model, arch.v32, x, TARGETS, layer=arch.cam_layer)
    got_up, got_raw = A.grad_cam(arch.model, arch.v32, x, TARGETS, layer=arch.cam_layer,
                                 return_raw=True)
    assert got_up.dtype == np.float32 and got_up.shape == arch.x.shape[:3]
    assert got_raw.shape == raw.shape == act_t.shape[:3]
    scale = np.abs(act_t.astype(np.float64) * grad_t.mean(axis=(1, 2))[:, None, None, :]).sum(-1)
    scale = scale.max(axis=(1, 2))
    layer_errors = np.maximum(per_example(act, act_t), per_example(grad, grad_t))
    cam_errors = np.array([max(np.abs(np.asarray(got_up[n]) - up[n]).max(),
                               np.abs(np.asarray(got_raw[n]) - raw[n]).max())
                           for n in range(len(x))]) / scale
    report = (f"{arch.name} grad_cam: flips {arch.flips}, A/dA errors {layer_errors}, map errors "
              f"(relative to the terms' scale) {cam_errors}, map max {np.abs(raw).max(axis=(1, 2))}")
    agree = arch.flips == 0
    assert agree.any(), report
    assert layer_errors[agree].max() <= F32_TOL, report
    assert cam_errors[agree].max() <= F32_TOL, report
    print(report)


F64_METHODS = ["gradient", "gradient_x_input", "deconvnet", "guided_backprop", "grad_cam",
               "guided_grad_cam", "smoothgrad", "smoothgrad_squared", "vargrad",
               "integrated_gradients", "occlusion"]


def torch_f64(arch: Arch, method: str, eps: np.ndarray):
    x = arch.x_as("float64")
    if method in RULE_OF:
        g = arch.grad(RULE_OF[method], "float64")
        return x * g if method == "gradient_x_input" else g
    if method == "grad_cam":
        return arch.layer("float64")[2:]
    if method == "guided_grad_cam":
        return arch.grad("guided", "float64") * arch.layer("float64")[2][..., None]
    if method in SG_VARIANT:
        g = torch.from_numpy(arch.noisy_grads(eps))
        return {"plain": g.mean(0), "squared": (g * g).mean(0),
                "vargrad": g.var(0, unbiased=False)}[SG_VARIANT[method]].numpy()
    if method == "integrated_gradients":
        alphas, weights = A.path_points(IG_STEPS, "riemann_middle")
        return torch_integrated_gradients(arch.torch["float64"], x, TARGETS, IG_BASELINE, alphas, weights)
    return torch_occlusion_loop(arch.torch["float64"], x, TARGETS, arch.occ_window, arch.occ_stride, 0.0)


def ours_f64(arch: Arch, method: str, x, eps):
    m, v, layer = arch.model, arch.v64, arch.cam_layer
    if method in RULE_OF:
        return getattr(A, method)(m, v, x, TARGETS)
    if method == "grad_cam":
        return A.grad_cam(m, v, x, TARGETS, layer=layer, return_raw=True)
    if method == "guided_grad_cam":
        return A.guided_grad_cam(m, v, x, TARGETS, layer=layer)
    if method in SG_VARIANT:
        # chunks of 2 samples: the last chunk is padded, and VarGrad combines chunks
        return A.smoothgrad(m, v, x, TARGETS, noise_samples=eps, noise=SG_NOISE,
                            variant=SG_VARIANT[method], batch_size=2)
    if method == "integrated_gradients":  # chunks of 2 points, the last one padded
        return A.integrated_gradients(m, v, x, TARGETS, baseline=IG_BASELINE, steps=IG_STEPS,
                                      method="riemann_middle", batch_size=2)
    return A.occlusion(m, v, x, TARGETS, window=arch.occ_window, stride=arch.occ_stride,
                       batch_size=3, return_windows=True)


@pytest.mark.parametrize("method", F64_METHODS)
def test_methods_match_torch_float64(arch, method):
    """Every method against its torch definition in float64, every example, unpinned:
    F64_TOL. SmoothGrad uses the same standard-normal draws; IG the same path points;
    occlusion is compared with a torch loop over windows (drops and map)."""
    eps = np.random.default_rng(5).standard_normal((SG_SAMPLES, *arch.x.shape))
    want = torch_f64(arch, method, eps)
    with jax.enable_x64(True):
        got = ours_f64(arch, method, jnp.asarray(arch.x_as("float64")), jnp.asarray(eps))
        got = jax.tree_util.tree_map(np.asarray, got)
    want, got = (want, got) if isinstance(want, tuple) else ((want,), (got,))
    errors = []
    for g, w in zip(got, want):
        assert g.dtype == np.float64 and g.shape == w.shape and np.abs(w).max() > 0
        errors.append(max_rel_err(g, w))
    assert max(errors) <= F64_TOL, f"{arch.name} {method}: {errors}"
    print(f"{arch.name} {method} float64 errors {errors}")

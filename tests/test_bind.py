"""Models that take more than ``x`` (docs/architecture.md, "Models that take more than x").

Two ways a model depends on per-example data besides ``x``: call arguments bound with
``jaxviz.bind`` (traced, tiled to any copy-major batch), and a model that closes over
per-example arrays (the methods that run copies as one flat batch fall back to vmapping
over the copies). For each, every public attribution method, from the package's
``__all__``, is checked on a batch of two against the same method run on each example
alone with that example's data: the rows must agree. Rows of one batch and one-example
runs go through the same float32 operations except for reduction order in batched
convolutions, hence ``ROWS`` (1e-5 of the largest value).
"""

from __future__ import annotations

import inspect

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxviz as jv
from jaxviz import _random
from jaxviz.models.bound import Bound
from jaxviz.models.modules import ReLU

A = jv.attribution
ROWS = 1e-5  # float32, same operations, another batch size (see the module docstring)

N, H, W, C = 2, 8, 9, 3
KEY = jax.random.key(3)
NOISE = _random.normal(KEY, (3, N, H, W, C))
REFS = _random.normal(jax.random.key(4), (3, H, W, C))
DRAWS = (np.array([[0, 2], [1, 1], [2, 0]]), np.array([[0.2, 0.5], [0.9, 0.1], [0.6, 0.3]]))
FEATURES = np.arange(H * W).reshape(H, W) // 9

# each public method: its options here, and how to take example i's share of them
OPTIONS = {
    "gradient": {}, "gradient_x_input": {}, "deconvnet": {}, "guided_backprop": {},
    "smoothgrad": {"noise_samples": NOISE},
    "integrated_gradients": {"steps": 4, "baseline": 0.1},
    "layer_gradient": {"layer": "relu"},
    "grad_cam": {"layer": "relu"}, "grad_cam_plus_plus": {"layer": "relu"},
    "xgrad_cam": {"layer": "relu"}, "hires_cam": {"layer": "relu"},
    "layer_cam": {"layer": "relu"}, "score_cam": {"layer": "relu", "batch_size": 3},
    "ablation_cam": {"layer": "relu", "batch_size": 3}, "eigen_cam": {"layer": "relu"},
    "guided_grad_cam": {"layer": "relu"},
    "occlusion": {"window": 4, "stride": 3, "batch_size": 5},
    "feature_ablation": {"mask": FEATURES, "batch_size": 4},
    "gradient_shap": {"baselines": REFS, "draws": DRAWS, "stdev": 0.1, "noise_samples": NOISE},
    "rise": {"masks": _random.uniform(KEY, (6, H, W)), "batch_size": 4},
    "lrp": {}, "deeplift": {"baseline": 0.1}, "deeplift_shap": {"baselines": REFS},
    "deconvnet_reconstruction": {"layer": "relu", "channel": 1},
}
# DeepLIFT pairs inputs and references in one batch of 2N: no fallback for a closure
NEEDS_BIND = {"deeplift", "deeplift_shap"}


def example_options(name: str, i: int) -> dict:
    """Example ``i``'s share of ``OPTIONS[name]`` (per-example draws sliced)."""
    opts = dict(OPTIONS[name])
    if "noise_samples" in opts:
        opts["noise_samples"] = opts["noise_samples"][:, i:i + 1]
    if "draws" in opts:
        opts["draws"] = tuple(d[:, i:i + 1] for d in opts["draws"])
    return opts


def methods() -> list[str]:
    out = []
    for name in A.__all__:
        fn = getattr(A, name)
        if inspect.isfunction(fn) and list(inspect.signature(fn).parameters)[:1] == ["model"]:
            out.append(name)
    return sorted(out)


TARGETS = jnp.array([1, 2])


def call(name, model, variables, x, opts, rows=slice(None)):
    """``name``'s call on ``x``, with the targets of ``rows`` (one class per example)."""
    fn = getattr(A, name)
    if name == "deconvnet_reconstruction":
        return fn(model, variables, x, **opts)
    return fn(model, variables, x, TARGETS[rows], **opts)


def rows_agree(full, parts):
    full = jax.tree.leaves(full)
    parts = [jax.tree.leaves(p) for p in parts]
    for k, leaf in enumerate(full):
        joined = np.concatenate([np.asarray(p[k]) for p in parts])
        scale = max(np.abs(joined).max(), 1e-30)
        assert np.abs(np.asarray(leaf) - joined).max() <= ROWS * scale


class Scaled(nn.Module):
    """x scaled per example by ``s`` (N,), shifted by ``shift``: conv, ReLU, max pool, dense."""

    rules: str = "gradient"

    @nn.compact
    def __call__(self, x, s, *, shift=0.0, pool=True):
        h = nn.Conv(4, (3, 3), name="conv")(x * s[:, None, None, None] + shift)
        h = ReLU(self.rules, name="relu")(h)
        if pool:
            h = jv.models.modules.MaxPool2d(2, 2, rule=self.rules, name="pool")(h)
        return nn.Dense(3, name="fc")(h.mean((1, 2)))


class Closed(nn.Module):
    """The same network with ``s`` a field: a model that closes over per-example data."""

    s: jax.Array
    rules: str = "gradient"

    @nn.compact
    def __call__(self, x):
        return Scaled(self.rules, name="net")(x, self.s, shift=0.25)

    def aliases(self) -> dict[str, str]:
        return {"relu": "net.relu"}  # the name OPTIONS use


S = jnp.array([1.0, 0.5])


@pytest.fixture(scope="module")
def data():
    x = _random.normal(jax.random.key(1), (N, H, W, C))
    model = Scaled()
    variables = model.init(jax.random.key(0), x, S)
    return x, model, variables


def test_every_method_has_options():
    assert set(methods()) == set(OPTIONS), "add the new method to OPTIONS"


def test_bound_model_is_the_model_with_its_arguments(data):
    x, model, variables = data
    bound, bv = jv.bind(model, variables, S, shift=0.25, pool=False)
    assert isinstance(bound, Bound) and set(bv) == {"params", "bound"}
    want = model.apply(variables, x, S, shift=0.25, pool=False)
    assert np.array_equal(np.asarray(bound.apply(bv, x)), np.asarray(want))
    # the layers keep their paths; a new s is a new value, not a new model
    assert [i.path for i in jv.layer_names(bound, x.shape)] == ["conv", "relu", "fc"]
    s2 = jnp.array([2.0, -1.0])
    _, bv2 = jv.bind(model, variables, s2, shift=0.25, pool=False)
    assert np.allclose(bound.apply(bv2, x), model.apply(variables, x, s2, shift=0.25, pool=False))
    assert jv.bind(model, variables, s2, shift=0.25, pool=False)[0] == bound


def test_bound_arrays_tile_copy_major_and_a_single_row_is_shared(data):
    x, model, variables = data
    bound, bv = jv.bind(model, variables, S)
    xs = jnp.concatenate([x, x + 1.0, x - 1.0])  # three copies of the batch, copy-major
    want = jnp.concatenate([model.apply(variables, t, S) for t in (x, x + 1.0, x - 1.0)])
    assert np.allclose(bound.apply(bv, xs), want, rtol=ROWS, atol=0)
    shared, sv = jv.bind(model, variables, S[:1])
    assert np.allclose(shared.apply(sv, x), model.apply(variables, x, jnp.full((N,), S[0])),
                       rtol=ROWS, atol=0)


@pytest.mark.parametrize("name", sorted(OPTIONS))
def test_a_bound_model_gives_each_example_its_own_rows(data, name):
    x, model, variables = data
    full = call(name, *jv.bind(model, variables, S, shift=0.25), x, OPTIONS[name])
    parts = [call(name, *jv.bind(model, variables, S[i:i + 1], shift=0.25), x[i:i + 1],
                  example_options(name, i), slice(i, i + 1)) for i in range(N)]
    rows_agree(full, parts)


@pytest.mark.parametrize("name", sorted(set(OPTIONS) - NEEDS_BIND))
def test_a_model_closing_over_per_example_data_gives_each_example_its_own_rows(data, name):
    x, _, variables = data
    variables = {"params": {"net": variables["params"]}}
    full = call(name, Closed(S), variables, x, OPTIONS[name])
    parts = [call(name, Closed(S[i:i + 1]), variables, x[i:i + 1], example_options(name, i),
                  slice(i, i + 1)) for i in range(N)]
    rows_agree(full, parts)


@pytest.mark.parametrize("method", ["gradient", "integrated_gradients", "grad_cam"])
def test_noise_tunnel_over_either_kind(data, method):
    x, model, variables = data
    opts = {"layer": "relu"} if method == "grad_cam" else {"steps": 3} if method != "gradient" else {}
    fn = getattr(A, method)
    closed_vars = {"params": {"net": variables["params"]}}
    for make, v in ((lambda s: jv.bind(model, variables, s, shift=0.25)[0],
                     jv.bind(model, variables, S, shift=0.25)[1]), (Closed, closed_vars)):
        def per(i):
            vi = v if make is Closed else jv.bind(model, variables, S[i:i + 1], shift=0.25)[1]
            return A.noise_tunnel(fn, make(S[i:i + 1]), vi, x[i:i + 1], 1,
                                  noise_samples=NOISE[:, i:i + 1], batch_size=2, **opts)
        full = A.noise_tunnel(fn, make(S), v, x, 1, noise_samples=NOISE, batch_size=2, **opts)
        rows_agree(full, [per(i) for i in range(N)])


@pytest.mark.parametrize("name", sorted(NEEDS_BIND))
def test_deeplift_on_a_closure_says_to_bind(data, name):
    x, _, variables = data
    with pytest.raises(jv.InputError, match=r"jaxviz\.bind"):
        call(name, Closed(S), {"params": {"net": variables["params"]}}, x, OPTIONS[name])


def test_rules_reach_the_bound_models_relus(data):
    x, model, variables = data
    bound, bv = jv.bind(model, variables, S, shift=0.25)
    closed_vars = {"params": {"net": variables["params"]}}
    guided = A.guided_backprop(bound, bv, x, TARGETS)
    assert np.allclose(guided, A.guided_backprop(Closed(S), closed_vars, x, TARGETS),
                       rtol=ROWS, atol=0)
    assert not np.allclose(guided, A.gradient(bound, bv, x, TARGETS))  # the rule acts
    plain = nn.Sequential([nn.Conv(2, (3, 3)), lambda h: h.mean((1, 2))])  # no rules field
    p_bound, p_vars = jv.bind(plain, plain.init(jax.random.key(0), x))
    with pytest.raises(jv.ModelError, match="rules"):
        A.guided_backprop(p_bound, p_vars, x, 0)


def test_bind_errors(data):
    x, model, variables = data
    bound, bv = jv.bind(model, variables, S)
    with pytest.raises(jv.InputError, match="already hold"):
        jv.bind(bound, bv, S)
    with pytest.raises(jv.InputError, match="dict of collections"):
        jv.bind(model, [variables], S)
    with pytest.raises(jv.InputError, match="not a multiple of 2"):
        A.gradient(bound, bv, jnp.concatenate([x, x[:1]]), 0)
    with pytest.raises(jv.JaxvizError):  # the bound arrays left out of the variables
        A.gradient(bound, variables, x, 0)
    # a keyword named like a positional array's key would silently overwrite it
    with pytest.raises(jv.InputError, match=r"keyword argument 'arg0' and positional "
                       r"argument 0 \(after x\) would both be stored"):
        jv.bind(model, variables, S, arg0=S)
    jv.bind(model, variables, 1.0, arg0=S)  # a fixed positional 0 stores nothing: no clash

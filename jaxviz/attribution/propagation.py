"""Propagation rules: layer-wise relevance propagation (LRP) and DeepLIFT as modified
backward passes.

Relevance ``R`` starts at the output as the target's value (``start="value"``: the
paper's ``R = f(x)``, so that it is conserved down to the input) or as a one-hot of the
target (``start="one"``: zennit's default), and each layer hands its output relevance to
its input by a rule. With ``z = layer(x)`` the layer's output, ``s = R / stab(z)``
(``stab(z) = z + e * sign(z)``, sign(0) = +1) and ``J^T`` the layer's transposed
Jacobian (its VJP):

- ``epsilon`` (Bach et al. 2015): ``R_in = x * J^T s``, with ``e = epsilon``.
- ``zplus`` (alpha 1, beta 0): ``z = W+ x+ + b+ + W- x-``,
  ``R_in = x+ * J+^T s + x- * J-^T s`` (J+ through W+ and b+, J- through W-).
- ``alpha_beta`` (alpha 2, beta 1): ``alpha`` times the ``zplus`` share of the positive
  contributions minus ``beta`` times the share of the negative ones (W- x+ + b- + W+ x-).
- ``gamma`` (Montavon et al. 2019, generalized): where ``z > 0`` the positive
  contributions with ``W + gamma W+`` (and ``b + gamma b+``), where ``z < 0`` the
  negative ones with ``W + gamma W-``.
- ``zbox`` (Montavon et al. 2017): ``z = W x - W+ l - W- h`` with the input bounds
  ``l``, ``h``; ``R_in = x * J^T s - l * J+^T s - h * J-^T s``.
- ``flat``: the layer with every weight 1 and no bias on an all-ones input;
  ``R_in = J1^T s`` (not multiplied by the input).
- average pools (adaptive ones too) redistribute in proportion to their inputs
  (``R_in = x * J^T s``, zennit's ``Norm``); ReLUs and BatchNorm pass relevance on
  unchanged; max pools route it to each window's maximum (the plain gradient).

``merge_batch_norm=True`` folds each BatchNorm (jaxviz's ``BatchNorm2d``, which the
ported models use) into the convolution that feeds it (``W' = W a``,
``b' = (b - mean) a + beta`` with ``a = gamma / sqrt(var + eps)``), so the convolution's
rule sees the normalized layer as one linear map and the BatchNorm becomes the identity:
zennit's ``SequentialMergeBatchNorm`` canonizer (Montavon et al. 2019 recommend it for
BatchNorm networks). A BatchNorm counts as fed by a convolution when its input is that
convolution's output, unchanged.

The composites choose a rule per layer as zennit's do: ``epsilon_plus`` (convolutions
``zplus``, dense layers ``epsilon``), ``epsilon_plus_flat`` (the first convolution or
dense layer ``flat``), ``epsilon_gamma_box`` (the first convolution ``zbox``, the other
convolutions ``gamma``), ``epsilon_alpha2_beta1`` (convolutions ``alpha_beta``), and
``epsilon`` (every layer ``epsilon``: LRP-epsilon throughout). "First" is the first layer
called in the forward pass.

Layers are recognized by their modules: jaxviz's ``Conv2d``, ``Linear``, ``ReLU``,
``BatchNorm2d``, ``AdaptiveAvgPool2d`` and Flax's ``nn.Conv`` and ``nn.Dense``. ReLUs
applied as plain functions (``nn.relu``), not modules, keep their gradient, as a
function is not a module zennit can hook either.

References:
  Bach et al., "On Pixel-Wise Explanations for Non-Linear Classifier Decisions by
  Layer-Wise Relevance Propagation", PLoS ONE 2015. Montavon et al., "Explaining
  nonlinear classification decisions with deep Taylor decomposition", Pattern
  Recognition 2017 (z+, z-box). Montavon et al., "Layer-Wise Relevance Propagation: An
  Overview", in Explainable AI, Springer 2019 (gamma, the composite of rules by layer).
  Kohlbrenner et al., "Towards Best Practice in Explaining Neural Network Decisions with
  LRP", IJCNN 2020 (the flat first layer). Anders et al., "Software for Dataset-wide XAI:
  From Local Explanations to Global Insights with Zennit, CoRelAy, and ViRelAy",
  arXiv:2106.13200, 2021 (zennit, the reference implementation compared with).
  Shrikumar, Greenside & Kundaje, "Learning Important Features Through Propagating
  Activation Differences", ICML 2017 (DeepLIFT's rescale rule). Lundberg & Lee, "A
  Unified Approach to Interpreting Model Predictions", NeurIPS 2017 (DeepLIFT-SHAP).
"""

from __future__ import annotations

import numbers
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxviz import capture, checks, data
from jaxviz import rules as rules_lib
from jaxviz import static as static_lib
from jaxviz import objectives as objectives_lib
from jaxviz.attribution._common import (Target, _baseline, _check_choice, _check_x, _compiled,
                                        _objective, _values)
from jaxviz.errors import InputError, JaxvizError
from jaxviz.models import modules
from jaxviz.models.modules import input_spec

COMPOSITES: tuple[str, ...] = ("epsilon_plus", "epsilon_plus_flat", "epsilon_gamma_box",
                               "epsilon_alpha2_beta1", "epsilon")
STARTS: tuple[str, ...] = ("value", "one")

_CONV = (modules.Conv2d, nn.Conv)
_DENSE = (modules.Linear, nn.Dense)
_POOL = (modules.AdaptiveAvgPool2d,)
_PASS = (modules.ReLU, modules.BatchNorm2d)


def _stab(z: jax.Array, e: float) -> jax.Array:
    """``z + e * sign(z)`` with sign(0) = +1 (zennit's stabilizer)."""
    return z + jnp.where(z >= 0, e, -e).astype(z.dtype)


def _split(params: dict, keep: str, bias: bool) -> dict:
    """The positive (``keep="+"``) or negative part of every parameter; the bias kept
    (its part) or zeroed."""
    part = (lambda a: jnp.maximum(a, 0)) if keep == "+" else (lambda a: jnp.minimum(a, 0))
    out = {k: part(v) for k, v in params.items()}
    if "bias" in out and not bias:
        out["bias"] = jnp.zeros_like(out["bias"])
    return out


def _gamma_params(params: dict, gamma: float, keep: str, bias: bool) -> dict:
    """``p + gamma * part(p)`` for every parameter; the bias zeroed unless ``bias``."""
    part = (lambda a: jnp.maximum(a, 0)) if keep == "+" else (lambda a: jnp.minimum(a, 0))
    out = {k: v + gamma * part(v) for k, v in params.items()}
    if "bias" in out and not bias:
        out["bias"] = jnp.zeros_like(out["bias"])
    return out


def _relevance(rule: str, fn: Callable, params: dict, x: jax.Array, r: jax.Array,
               settings: dict) -> jax.Array:
    """The input relevance of one layer ``fn(x, params)`` under ``rule``, given its
    output relevance ``r`` (the module docstring's formulas)."""
    e = settings["stabilizer"]

    def pull(inputs, p, s):
        """(inputs, J^T s) for the layer with parameters p at inputs."""
        _, back = jax.vjp(lambda t: fn(t, p), inputs)
        return back(s)[0]

    pos, neg = jnp.maximum(x, 0), jnp.minimum(x, 0)
    if rule == "epsilon":
        s = r / _stab(fn(x, params), settings["epsilon"])
        return x * pull(x, params, s)
    if rule == "zplus":
        p_pos, p_neg = _split(params, "+", True), _split(params, "-", False)
        s = r / _stab(fn(pos, p_pos) + fn(neg, p_neg), e)
        return pos * pull(pos, p_pos, s) + neg * pull(neg, p_neg, s)
    if rule == "alpha_beta":
        alpha, beta = settings["alpha"], settings["beta"]
        p_pos, p_neg = _split(params, "+", True), _split(params, "-", False)
        q_neg, q_pos = _split(params, "-", True), _split(params, "+", False)
        s_pos = r / _stab(fn(pos, p_pos) + fn(neg, p_neg), e)
        s_neg = r / _stab(fn(pos, q_neg) + fn(neg, q_pos), e)
        return (alpha * (pos * pull(pos, p_pos, s_pos) + neg * pull(neg, p_neg, s_pos))
                - beta * (pos * pull(pos, q_neg, s_neg) + neg * pull(neg, q_pos, s_neg)))
    if rule == "gamma":
        g = settings["gamma"]
        z = fn(x, params)
        a, b = _gamma_params(params, g, "+", True), _gamma_params(params, g, "-", False)
        c, d = _gamma_params(params, g, "-", True), _gamma_params(params, g, "+", False)
        s_up = (z > 0).astype(r.dtype) * r / _stab(fn(pos, a) + fn(neg, b), e)
        s_down = (z < 0).astype(r.dtype) * r / _stab(fn(pos, c) + fn(neg, d), e)
        return (pos * pull(pos, a, s_up) + neg * pull(neg, b, s_up)
                + pos * pull(pos, c, s_down) + neg * pull(neg, d, s_down))
    if rule == "zbox":
        low = jnp.broadcast_to(jnp.asarray(settings["low"], x.dtype), x.shape)
        high = jnp.broadcast_to(jnp.asarray(settings["high"], x.dtype), x.shape)
        p_pos, p_neg = _split(params, "+", True), _split(params, "-", True)
        s = r / _stab(fn(x, params) - fn(low, p_pos) - fn(high, p_neg), e)
        return x * pull(x, params, s) - low * pull(low, p_pos, s) - high * pull(high, p_neg, s)
    if rule == "flat":
        ones = {k: jnp.ones_like(v) for k, v in params.items()}
        if "bias" in ones:
            ones["bias"] = jnp.zeros_like(ones["bias"])
        unit = jnp.ones_like(x)
        s = r / _stab(fn(unit, ones), e)
        return pull(unit, ones, s)
    if rule == "norm":
        s = r / _stab(fn(x, params), e)
        return x * pull(x, params, s)
    raise AssertionError(rule)  # pragma: no cover - the composites name known rules


def _relevance_layer(rule: str, fn: Callable, params: dict, x: jax.Array, settings: dict) -> jax.Array:
    """``fn(x, params)`` whose backward pass maps output relevance to input relevance by
    ``rule`` (the parameters get no cotangent: relevance is taken for the input only)."""

    @jax.custom_vjp
    def layer(x, params):
        return fn(x, params)

    def forward(x, params):
        return fn(x, params), (x, params)

    def backward(saved, r):
        x, params = saved
        return (_relevance(rule, fn, params, x, r, settings).astype(x.dtype),
                jax.tree_util.tree_map(jnp.zeros_like, params))

    layer.defvjp(forward, backward)
    return layer(x, params)


@jax.custom_vjp
def _passing(x: jax.Array, y: jax.Array) -> jax.Array:
    """``y`` (a layer's output from ``x``) whose backward hands the relevance to ``x``
    unchanged (zennit's ``Pass``)."""
    return y


_passing.defvjp(lambda x, y: (y, None), lambda _, r: (r, jnp.zeros_like(r)))


def _path_key(path: tuple[str, ...]) -> str:
    return "/".join(path)


_PAIRS: dict[Any, tuple[tuple[str, str, float], ...]] = {}


def _merge_pairs(model: nn.Module, variables: Any, x: jax.Array) -> tuple[tuple[str, str, float], ...]:
    """``(convolution path, BatchNorm path, its eps)`` where the BatchNorm's input is the
    convolution's output, unchanged: found by an abstract forward pass, once per model
    and input shape."""
    key = (static_lib.static(model), tuple(x.shape), jnp.dtype(x.dtype))
    if key not in _PAIRS:
        if len(_PAIRS) >= 64:
            _PAIRS.pop(next(iter(_PAIRS)))
        _PAIRS[key] = _find_merge_pairs(model, variables, x)
    return _PAIRS[key]


def _find_merge_pairs(model, variables, x) -> tuple[tuple[str, str, float], ...]:
    outputs: dict[int, tuple[str, Any]] = {}  # the output itself is kept: ids are reused
    pairs: list[tuple[str, str, float]] = []

    def record(call, args, kwargs, context):
        out = call(*args, **kwargs)
        module = context.module
        if context.method_name != "__call__" or not module.path or not args:
            return out
        if isinstance(module, _CONV):
            outputs[id(out)] = (_path_key(module.path), out)
        elif isinstance(module, modules.BatchNorm2d) and id(args[0]) in outputs:
            conv, _ = outputs.pop(id(args[0]))
            pairs.append((conv, _path_key(module.path), float(module.eps)))
        return out

    def run(variables, x):
        with nn.intercept_methods(record):
            return model.apply(variables, x)

    jax.eval_shape(run, variables, jax.ShapeDtypeStruct(x.shape, x.dtype))
    return tuple(pairs)


def _lookup(tree: Any, path: str) -> Any:
    for key in path.split("/"):
        tree = tree[key]
    return tree


def _merged_params(conv_params: dict, variables: Any, bn_path: str, eps: float) -> dict:
    """The convolution's kernel and bias with the BatchNorm at ``bn_path`` folded in."""
    bn = _lookup(variables["params"], bn_path)
    stats = _lookup(variables["batch_stats"], bn_path)
    kernel = conv_params["kernel"]
    a = bn["scale"] * jax.lax.rsqrt(stats["var"] + jnp.asarray(eps, stats["var"].dtype))
    bias = conv_params.get("bias", jnp.zeros_like(stats["mean"]))
    return {"kernel": kernel * a.astype(kernel.dtype),
            "bias": ((bias - stats["mean"]) * a + bn["bias"]).astype(kernel.dtype)}


class _Composite:
    """The interceptor that applies a composite's rules, layer by layer, in one forward
    pass (it remembers whether the first convolution or dense layer has been seen).
    ``merged``: (convolution, BatchNorm) paths to fold together (``merge_batch_norm``)."""

    def __init__(self, composite: str, settings: dict, merged: tuple = (), variables: Any = None):
        self.composite, self.settings, self.first_seen = composite, settings, False
        self.merged_into = {conv: (bn, eps) for conv, bn, eps in merged}
        self.folded = {bn for _, bn, _ in merged}  # BatchNorms that became the identity
        self.variables = variables

    def rule_of(self, module: nn.Module) -> str | None:
        c = self.composite
        is_conv, is_dense = isinstance(module, _CONV), isinstance(module, _DENSE)
        if not (is_conv or is_dense):
            return "norm" if isinstance(module, _POOL) else None
        first = False
        if c == "epsilon_plus_flat" or (c == "epsilon_gamma_box" and is_conv):
            first, self.first_seen = not self.first_seen, True
        if first:
            return "flat" if c == "epsilon_plus_flat" else "zbox"
        if is_dense or c == "epsilon":
            return "epsilon"
        return {"epsilon_plus": "zplus", "epsilon_plus_flat": "zplus", "epsilon_gamma_box": "gamma",
                "epsilon_alpha2_beta1": "alpha_beta"}[c]

    def __call__(self, call, args, kwargs, context):
        module = context.module
        if context.method_name != "__call__" or not module.path or not args:
            return call(*args, **kwargs)
        path = _path_key(module.path)
        if path in self.folded:  # its convolution already applied it
            return args[0]
        if isinstance(module, _PASS):
            x = args[0]
            if isinstance(module, modules.ReLU):
                return rules_lib.linear_relu(x)
            return _passing(x, call(*args, **kwargs))
        rule = self.rule_of(module)
        if rule is None:
            return call(*args, **kwargs)
        params = dict(module.variables.get("params", {}))
        rest = {k: v for k, v in module.variables.items() if k != "params"}
        if path in self.merged_into:
            bn_path, eps = self.merged_into[path]
            params = _merged_params(params, self.variables, bn_path, eps)
            unbound = module.clone(parent=None, use_bias=False)

            def fn(t, p):
                out = unbound.apply({"params": {"kernel": p["kernel"]}, **rest}, t, *args[1:],
                                    **kwargs)
                return out + p["bias"]
        else:
            unbound = module.clone(parent=None)

            def fn(t, p):
                return unbound.apply({"params": p, **rest}, t, *args[1:], **kwargs)

        return _relevance_layer(rule, fn, params, args[0], self.settings)


def _lrp_core(model, composite, start, merged, variables, x, settings, objective):
    """Input relevance of ``objective`` under ``composite``; ``settings`` hold the
    stabilizers and rule parameters as arrays (traced, so new values do not recompile);
    ``merged``: the (convolution, BatchNorm, eps) to fold together."""
    hook = _Composite(composite, settings, merged, variables)

    def total(t):
        with nn.intercept_methods(hook):
            v = _values(model, variables, t, objective)
        return v.sum(), v

    relevance, values = jax.grad(total, has_aux=True)(x)
    if start == "value":
        relevance = relevance * values.reshape(-1, *([1] * (x.ndim - 1))).astype(relevance.dtype)
    return relevance


_lrp_jit = _compiled(_lrp_core, 4)


def _imagenet_bounds(model: nn.Module, x: jax.Array) -> tuple[jax.Array, jax.Array]:
    spec = input_spec(model)
    if spec is None or spec.scale != "imagenet" or x.shape[-1] != 3:
        raise InputError("epsilon_gamma_box needs the input's bounds: pass low= and high= (a "
                         "number, or one per channel)")

    mean, std = np.asarray(data.IMAGENET_MEAN), np.asarray(data.IMAGENET_STD)
    return jnp.asarray((0.0 - mean) / std, x.dtype), jnp.asarray((1.0 - mean) / std, x.dtype)


def _number(value: Any, what: str, minimum: float = 0.0) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or value < minimum:
        raise InputError(f"expected {what} as a number >= {minimum:g}, got {value!r}")
    return float(value)


@checks.boundary
def lrp(model: nn.Module, variables: Any, x: jax.Array, target: Target, *,
        composite: str = "epsilon_plus_flat", epsilon: float = 1e-6, stabilizer: float = 1e-6,
        gamma: float = 0.25, alpha: float = 2.0, beta: float = 1.0, low: Any = None,
        high: Any = None, start: str = "value", merge_batch_norm: bool = False) -> jax.Array:
    """Layer-wise relevance propagation (Bach et al. 2015) with a composite of rules.

    See the module docstring for the rules and composites. ``sum(R[n])`` equals
    ``f_n(x)`` (``start="value"``) up to what the biases absorb and the stabilizers leak;
    zennit's ``Gradient`` attributor with the same composite and a one-hot output is
    ``start="one"``.

    Args:
      model, variables, x, target: as :func:`jaxviz.attribution.gradient`.
      composite: "epsilon_plus_flat" (default), "epsilon_plus", "epsilon_gamma_box",
        "epsilon_alpha2_beta1" or "epsilon".
      epsilon: the epsilon rule's ``e`` (zennit's 1e-6).
      stabilizer: every other rule's ``e`` (zennit's 1e-6).
      gamma: the gamma rule's (zennit's 0.25).
      alpha, beta: the alpha-beta rule's (alpha - beta = 1).
      low, high: the z-box rule's input bounds: numbers or arrays that broadcast to one
        input (per channel: (C,)). Default for an ImageNet-normalized model: the
        normalized 0 and 1 of each channel.
      start: "value" (R = f at the target) or "one" (R = 1, zennit's one-hot).
      merge_batch_norm: fold each BatchNorm into the convolution that feeds it (zennit's
        ``SequentialMergeBatchNorm`` canonizer; the module docstring). Default False:
        a BatchNorm passes relevance on unchanged.

    Returns:
      (N, H, W, C) input relevance, in ``x``'s dtype.

    Raises:
      ValueError: unknown composite or start; a negative epsilon or stabilizer; alpha -
        beta not 1; no bounds for the z-box rule; ``merge_batch_norm`` not a bool; as
        :func:`jaxviz.attribution.gradient`.
    """
    _check_choice(composite, COMPOSITES, "composite")
    _check_choice(start, STARTS, "start")
    if not isinstance(merge_batch_norm, bool):
        raise InputError(f"expected merge_batch_norm as True or False, got {merge_batch_norm!r}")
    x = _check_x(model, x)
    settings = {"epsilon": _number(epsilon, "epsilon"), "stabilizer": _number(stabilizer, "stabilizer"),
                "gamma": _number(gamma, "gamma"), "alpha": _number(alpha, "alpha"),
                "beta": _number(beta, "beta")}
    if abs(settings["alpha"] - settings["beta"] - 1.0) > 1e-12:
        raise InputError(f"expected alpha - beta = 1 (relevance is conserved only then), got "
                         f"alpha={alpha!r}, beta={beta!r}")
    if composite == "epsilon_gamma_box":
        if (low is None) != (high is None):
            raise InputError("pass both low= and high= (the input's bounds), or neither")
        if low is None:
            low, high = _imagenet_bounds(model, x)
        settings["low"] = jnp.asarray(low, x.dtype)
        settings["high"] = jnp.asarray(high, x.dtype)
    settings = {k: jnp.asarray(v, x.dtype) for k, v in settings.items()}
    obj = _objective(model, x, target)
    merged = _merge_pairs(model, variables, x) if merge_batch_norm else ()
    return _lrp_jit(model, composite, start, merged, variables, x, settings, obj).astype(x.dtype)


# --- DeepLIFT ----------------------------------------------------------------------------------


def _halves(a: jax.Array, n: int) -> jax.Array:
    """``a[:n] - a[n:]`` (input rows minus reference rows), repeated for both halves."""
    d = a[:n] - a[n:]
    return jnp.concatenate([d, d])


class _Rescale:
    """The interceptor of DeepLIFT's rescale rule (Captum's ``DeepLift``), on a batch of
    2N rows: the inputs, then their references. A ReLU's multiplier is
    ``delta out / delta in`` (its gradient where ``|delta in| < eps``); a max pool sends
    ``max(y, y_ref) - y_ref`` through the inputs' maxima and ``y - max(y, y_ref)`` through
    the references', adds the two, and divides by ``delta in`` (the same for both
    halves)."""

    def __init__(self, n: int, eps: jax.Array):
        self.n, self.eps = n, eps

    def __call__(self, call, args, kwargs, context):
        module = context.module
        if context.method_name != "__call__" or not module.path or not args:
            return call(*args, **kwargs)
        if isinstance(module, modules.ReLU):
            return self._relu(args[0])
        if isinstance(module, modules.MaxPool2d):
            unbound = module.clone(parent=None)
            return self._pool(lambda t: unbound.apply({}, t, *args[1:], **kwargs), args[0])
        return call(*args, **kwargs)

    def _relu(self, z):
        n, eps = self.n, self.eps

        @jax.custom_vjp
        def relu(z):
            return jax.nn.relu(z)

        def forward(z):
            return jax.nn.relu(z), z

        def backward(z, g):
            d_in, d_out = _halves(z, n), _halves(jax.nn.relu(z), n)
            plain = g * (z > 0).astype(g.dtype)
            safe = jnp.where(jnp.abs(d_in) < eps, jnp.ones_like(d_in), d_in)
            return (jnp.where(jnp.abs(d_in) < eps, plain, g * d_out / safe),)

        relu.defvjp(forward, backward)
        return relu(z)

    def _pool(self, pool, z):
        n, eps = self.n, self.eps

        @jax.custom_vjp
        def pooled(z):
            return pool(z)

        def forward(z):
            return pool(z), z

        def backward(z, g):
            y, back = jax.vjp(pool, z)
            top = jnp.maximum(y[:n], y[n:])
            d_out = jnp.concatenate([top - y[n:], y[:n] - top])
            (spread,) = back(g * d_out)
            spread = spread[:n] + spread[n:]
            spread = jnp.concatenate([spread, spread])
            (plain,) = back(g)
            d_in = _halves(z, n)
            safe = jnp.where(jnp.abs(d_in) < eps, jnp.ones_like(d_in), d_in)
            return (jnp.where(jnp.abs(d_in) < eps, plain, spread / safe),)

        pooled.defvjp(forward, backward)
        return pooled(z)


def _deeplift_core(model, variables, x, baseline, eps, objective):
    """(multipliers (N, ...), f(x) (N,), f(baseline) (N,)): the gradient of
    ``sum_n f_n(x) + f_n(b)`` under the rescale rule, taken at the inputs."""
    n = x.shape[0]
    hook = _Rescale(n, eps)
    # the objective may trace the model's layer table at 2N rows: not under the hook
    capture.layer_names(model, (2 * n, *x.shape[1:]), partial=True)

    def total(t):
        with nn.intercept_methods(hook):
            try:
                v = _values(model, variables, jnp.concatenate([t, baseline]), objective)
            except (TypeError, ValueError) as e:
                if isinstance(e, JaxvizError):
                    raise
                raise InputError(
                    f"DeepLIFT runs the inputs and their references as one batch of "
                    f"{2 * n} rows, and the model failed on that batch ({e}). A model that "
                    f"closes over per-example arrays cannot take it: pass them as call "
                    f"arguments with jaxviz.bind(model, variables, ...), which tiles them "
                    f"to the batch") from e
        return v.sum(), v

    m, v = jax.grad(total, has_aux=True)(x)
    return m, v[:n], v[n:]


_deeplift_jit = _compiled(_deeplift_core, 1)


def _doubled(obj, what: str):
    tiled = obj.tile(2)
    if tiled is None:
        raise InputError(f"{what} runs the inputs and their references as one batch of 2N: pass "
                         f"the target as an int, (N,) ints or a jaxviz objective, not a plain "
                         f"function")
    return tiled


@checks.boundary
def deeplift(model: nn.Module, variables: Any, x: jax.Array, target: Target, *,
             baseline: float | jax.Array = 0.0, multiply_by_inputs: bool = True,
             return_delta: bool = False, eps: float = 1e-10) -> jax.Array | tuple[jax.Array, jax.Array]:
    """DeepLIFT with the rescale rule (Shrikumar et al. 2017), as Captum's ``DeepLift``.

    The input and its reference ``b`` run as one batch; every ReLU module's backward
    multiplies by ``(relu(z) - relu(z_ref)) / (z - z_ref)`` and every max pool's by the
    same ratio of the pool (see :class:`_Rescale`), and the result is
    ``(x - b) * m`` with ``m`` that backward pass of the target. Its sum is
    ``f(x) - f(b)`` (summation to delta) up to the rule's ``eps`` cases. Layers applied as
    plain functions (``nn.relu``) keep their gradient.

    Args:
      model, variables, x, target: as :func:`jaxviz.attribution.gradient`; the target is
        an int, (N,) ints or an objective (it must follow a batch of 2N).
      baseline: ``b``: a scalar or an array that broadcasts to x (Captum's default: 0).
      multiply_by_inputs: False returns the multipliers ``m`` alone.
      return_delta: also return ``sum R[n] - (f_n(x) - f_n(b))``, (N,).
      eps: below this ``|z - z_ref|`` a unit uses its gradient (Captum's 1e-10).

    Returns:
      (N, H, W, C), in ``x``'s dtype; with ``return_delta``, ``(attributions, delta)``.

    Raises:
      ValueError: a baseline that does not broadcast; a plain-function target;
        ``return_delta`` without ``multiply_by_inputs``; as
        :func:`jaxviz.attribution.gradient`.
    """
    x = _check_x(model, x)
    if return_delta and not multiply_by_inputs:
        raise InputError("return_delta compares sum(R) with f(x) - f(baseline), which needs "
                         "multiply_by_inputs=True")
    b = _baseline(baseline, x)
    obj = _doubled(_objective(model, x, target), "deeplift")
    m, fx, fb = _deeplift_jit(model, variables, x, b, jnp.asarray(_number(eps, "eps"), x.dtype), obj)
    if not multiply_by_inputs:
        return m.astype(x.dtype)
    out = ((x - b) * m).astype(x.dtype)
    if not return_delta:
        return out
    delta = out.reshape(out.shape[0], -1).sum(axis=1) - (fx - fb)
    return out, delta.astype(x.dtype)


@checks.boundary
def deeplift_shap(model: nn.Module, variables: Any, x: jax.Array, target: Target, *,
                  baselines: Any, eps: float = 1e-10) -> jax.Array:
    """DeepLIFT-SHAP (Lundberg & Lee 2017), as Captum's ``DeepLiftShap``: the mean of
    :func:`deeplift` over a set of references.

    Args:
      model, variables, x, target: as :func:`deeplift`.
      baselines: (B, H, W, C) references (every example is explained against each).
      eps: as :func:`deeplift`.

    Returns:
      (N, H, W, C), in ``x``'s dtype.

    Raises:
      ValueError: baselines of another image shape; as :func:`deeplift`.
    """
    x = _check_x(model, x)
    refs = jnp.asarray(baselines, x.dtype)
    if refs.ndim != x.ndim or tuple(refs.shape[1:]) != tuple(x.shape[1:]) or refs.shape[0] < 1:
        raise InputError(f"expected baselines of shape (B, {', '.join(map(str, x.shape[1:]))}); "
                         f"got {tuple(jnp.shape(baselines))}")
    k, n = refs.shape[0], x.shape[0]
    obj = _objective(model, x, target)
    tiled = obj.tile(k) if isinstance(obj, objectives_lib.Objective) else None
    if tiled is None:
        raise InputError("deeplift_shap runs every reference as one batch: pass the target as "
                         "an int, (N,) ints or a jaxviz objective, not a plain function")
    xs = jnp.tile(x, (k,) + (1,) * (x.ndim - 1))                         # copy-major (K * N)
    bs = jnp.repeat(refs, n, axis=0)
    m, _, _ = _deeplift_jit(model, variables, xs, bs, jnp.asarray(_number(eps, "eps"), x.dtype),
                            _doubled(tiled, "deeplift_shap"))
    return ((xs - bs) * m).reshape(k, *x.shape).mean(axis=0).astype(x.dtype)


__all__ = ["COMPOSITES", "STARTS", "deeplift", "deeplift_shap", "lrp"]

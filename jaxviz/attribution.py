"""Attribution: which input pixels (or which layer positions) an output depends on.

Every method takes a batch ``x: (N, H, W, C)`` (ImageNet-normalized images for our
models) and a ``target``: an int class, an int array (N,) with one class per example,
an objective from :mod:`jaxviz.objectives`, or a plain callable
``f(model, variables, x) -> (N,)``. Call it ``f``; ``f_n`` is example ``n``'s value.
Examples are independent (inference mode), so the input gradient of ``sum_n f_n`` is
each example's own gradient.

All methods are plain functions of ``(model, variables, x, target)``: they work on any
Flax Linen model (ours or a user's), return arrays in ``x``'s dtype, and may be called
under ``jax.jit`` with the model and the target static or closed over. Inside, the
heavy part is compiled once per model and input shape with ``variables``, ``x`` and the
target's indices as arguments (so a new target or new weights do not recompile), and
the vmapped samples of SmoothGrad, integrated gradients and occlusion run in chunks of
``batch_size`` through one compiled chunk function in a Python loop (on XLA:CPU about
twice as fast as ``lax.scan`` around convolutions).

DeconvNet and guided backpropagation need a model whose ReLUs follow a backward rule:
ours do (``model.clone(rules=...)``, :mod:`jaxviz.rules`). A user's Linen model adopts
them by using :class:`jaxviz.models.modules.ReLU` and
:class:`jaxviz.models.modules.MaxPool2d` (or :func:`jaxviz.rules.relu`) with their
``rule`` set from a ``rules: str = "gradient"`` field of the model.

References:
  Simonyan, Vedaldi & Zisserman, "Deep Inside Convolutional Networks", arXiv:1312.6034,
  2013 (gradient). Shrikumar et al., "Not Just a Black Box", arXiv:1605.01713, 2016
  (gradient x input). Zeiler & Fergus, "Visualizing and Understanding Convolutional
  Networks", ECCV 2014 (DeconvNet, occlusion). Springenberg et al., "Striving for
  Simplicity: The All Convolutional Net", arXiv:1412.6806, 2014 (guided
  backpropagation). Smilkov et al., "SmoothGrad: removing noise by adding noise",
  arXiv:1706.03825, 2017. Sundararajan, Taly & Yan, "Axiomatic Attribution for Deep
  Networks", ICML 2017 (integrated gradients). Selvaraju et al., "Grad-CAM: Visual
  Explanations from Deep Networks via Gradient-based Localization", ICCV 2017,
  arXiv:1610.02391 (Grad-CAM, guided Grad-CAM). Adebayo et al., "Local Explanation
  Methods for Deep Neural Networks Lack Sensitivity to Parameter Values",
  arXiv:1810.03307, 2018 (VarGrad). Hooker et al., "A Benchmark for Interpretability
  Methods in Deep Neural Networks", NeurIPS 2019 (SmoothGrad-squared).
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxviz import capture, checks
from jaxviz import rules as rules_lib
from jaxviz import static as static_lib
from jaxviz.errors import InputError, InputTypeError
from jaxviz.models.modules import input_spec
from jaxviz import objectives as objectives_lib

Target = Any  # int | int array (N,) | Objective | Callable[[model, variables, x], (N,)]

SMOOTHGRAD_VARIANTS: tuple[str, ...] = ("plain", "squared", "vargrad")
IG_METHODS: tuple[str, ...] = ("riemann_right", "riemann_left", "riemann_middle",
                               "riemann_trapezoid")


# --- argument checks ------------------------------------------------------------------------


def _check_x(model: nn.Module, x: Any, *, images: bool = False) -> jax.Array:
    """``x`` checked for ``model`` (:func:`jaxviz.checks.batch`). ``images``: the method
    needs (N, H, W, C) images whatever the model; a model that does not declare its
    input (no ``input_spec()``) is taken to take images too."""
    return checks.batch(x, model, images=images or input_spec(model) is None)


def _objective(model: nn.Module, x: jax.Array, target: Target) -> objectives_lib.Objective:
    """``target`` as an objective (a pytree), checked against the model's static shapes."""
    obj = objectives_lib.as_objective(target)
    if not isinstance(obj, objectives_lib.Objective):
        obj = objectives_lib.Function(obj)
    obj.check(model, x.shape, x.dtype)
    # Warm the layer-table caches for this input, so that no layer table is traced
    # inside a compiled, differentiated forward pass (see _layer_gradient_core).
    capture.layer_names(model, tuple(x.shape), partial=True)
    return obj


def _check_batch_size(batch_size: Any, total: int) -> int:
    if batch_size is None:
        return total
    if (isinstance(batch_size, bool) or not isinstance(batch_size, numbers.Integral)
            or batch_size < 1):
        raise InputError(f"expected batch_size as a positive int or None, got {batch_size!r}")
    return min(int(batch_size), total)


def _check_choice(value: Any, choices: Sequence[str], what: str) -> str:
    if value not in choices:
        raise InputError(f"unknown {what} {value!r}; expected one of {', '.join(choices)}")
    return value


def _baseline(baseline: Any, x: jax.Array) -> jax.Array:
    b = jnp.asarray(baseline, x.dtype)
    try:
        return jnp.broadcast_to(b, x.shape)
    except ValueError:
        raise InputError(f"expected a baseline that broadcasts to x's shape {tuple(x.shape)} "
                         f"(a scalar, (C,), (H, W, C) or (N, H, W, C)); got shape "
                         f"{tuple(b.shape)}") from None


def _with_rule(model: nn.Module, rule: str, method: str) -> nn.Module:
    return rules_lib.with_rule(model, rule, method)


# --- compiled cores -------------------------------------------------------------------------


def _values(model, variables, x, objective) -> jax.Array:
    v = objective(model, variables, x)
    if not hasattr(v, "shape") or tuple(v.shape) != (x.shape[0],):
        raise InputError(f"an objective must return one value per example, shape "
                         f"({x.shape[0]},); got {getattr(v, 'shape', type(v).__name__)}")
    return v


def _input_grad(model, variables, x, objective) -> jax.Array:
    return jax.grad(lambda t: _values(model, variables, t, objective).sum())(x)


def _copies_grad(model, variables, xs, objective) -> jax.Array:
    """Input gradients for ``xs: (S, N, H, W, C)``, S variants of a batch of N.

    When the objective knows how to follow a copy-major batch (:meth:`Objective.tile`),
    the S * N images run as one flat batch (one large convolution per layer, the fastest
    form on every backend); otherwise the gradient is vmapped over the S variants.
    """
    s, n = xs.shape[:2]
    tiled = objective.tile(s) if isinstance(objective, objectives_lib.Objective) else None
    if tiled is None:
        return jax.vmap(lambda t: _input_grad(model, variables, t, objective))(xs)
    flat = xs.reshape(s * n, *xs.shape[2:])
    return _input_grad(model, variables, flat, tiled).reshape(xs.shape)


def _copies_values(model, variables, xs, objective) -> jax.Array:
    """Objective values (S, N) for ``xs: (S, N, H, W, C)``, flattened like :func:`_copies_grad`."""
    s, n = xs.shape[:2]
    tiled = objective.tile(s) if isinstance(objective, objectives_lib.Objective) else None
    if tiled is None:
        return jax.vmap(lambda t: _values(model, variables, t, objective))(xs)
    return _values(model, variables, xs.reshape(s * n, *xs.shape[2:]), tiled).reshape(s, n)


_compiled = static_lib.jit


_values_jit = _compiled(_values, 1)
_grad_jit = _compiled(_input_grad, 1)


def _smoothgrad_chunk(model, variant, variables, x, sigma, eps, mask, objective):
    """Over the chunk's valid samples (``mask``), what ``variant`` accumulates: the sum of
    the gradients ("plain"), of their squares ("squared"), or the sum of the gradients
    and the sum of squared deviations from the chunk's mean ("vargrad")."""
    g = _copies_grad(model, variables, x[None] + sigma[None] * eps, objective)
    m = mask.astype(g.dtype).reshape(-1, *([1] * x.ndim))
    if variant == "squared":
        return (m * g * g).sum(0), None
    total = (m * g).sum(0)
    if variant == "plain":
        return total, None
    mean = total / mask.sum().astype(g.dtype)
    return total, (m * (g - mean) ** 2).sum(0)


_smoothgrad_jit = _compiled(_smoothgrad_chunk, 2)


def _draw_noise(keys, shape, dtype):
    return jax.vmap(lambda k: jax.random.normal(k, shape, dtype))(keys)


_draw_noise_jit = jax.jit(_draw_noise, static_argnums=(1, 2))


def _ig_chunk(model, variables, x, baseline, alphas, weights, objective):
    """sum_k weights[k] * grad f(baseline + alphas[k] (x - baseline))."""
    a = alphas.reshape(-1, *([1] * x.ndim))
    g = _copies_grad(model, variables, baseline[None] + a * (x - baseline)[None], objective)
    return jnp.tensordot(weights, g, axes=1)


_ig_jit = _compiled(_ig_chunk, 1)


def _occlusion_chunk(model, window, variables, x, baseline, reference, starts, objective):
    """reference - f(x occluded by a window at each of ``starts: (k, 2)``): (k, N)."""
    wh, ww = window
    rows, cols = jnp.arange(x.shape[1]), jnp.arange(x.shape[2])

    def occlude(start):
        inside = (((rows >= start[0]) & (rows < start[0] + wh))[:, None]
                  & ((cols >= start[1]) & (cols < start[1] + ww))[None, :])
        return jnp.where(inside[None, :, :, None], baseline, x)

    return reference - _copies_values(model, variables, jax.vmap(occlude)(starts), objective)


_occlusion_jit = _compiled(_occlusion_chunk, 2)


def _layer_gradient_core(model, path, variables, x, objective):
    """(A, dF/dA) at the module whose dotted path is ``path``, F = sum_n f_n.

    A zero array ``delta`` is added to that module's output through
    ``flax.linen.intercept_methods``; the gradient with respect to ``delta`` is the
    gradient with respect to the activation, for any Linen model.
    """
    table = {info.path: info for info in capture.layer_names(model, tuple(x.shape), partial=True)}
    shape = table[path].shape

    def f(delta):
        hits = []

        def add_delta(call, args, kwargs, context):
            out = call(*args, **kwargs)
            if context.method_name == "__call__" and ".".join(context.module.path) == path:
                if getattr(out, "shape", None) != delta.shape:
                    raise InputError(f"layer {path!r} returned "
                                     f"{getattr(out, 'shape', type(out).__name__)}; expected "
                                     f"an array of shape {delta.shape}")
                hits.append(out)
                return out + delta.astype(out.dtype)
            return out

        with nn.intercept_methods(add_delta):
            total = _values(model, variables, x, objective).sum()
        if not hits:
            raise InputError(f"layer {path!r} is not computed on the way to the objective, "
                             f"so the objective does not depend on it")
        return total, hits[-1]

    grad, act = jax.grad(f, has_aux=True)(jnp.zeros(shape, x.dtype))
    return act, grad.astype(act.dtype)


_layer_gradient_jit = _compiled(_layer_gradient_core, 2)


def _resolve_layer(model: nn.Module, x: jax.Array, layer: str) -> str:
    return capture.resolve(model, [layer], capture.layer_names(model, tuple(x.shape), partial=True))[0]


# --- gradients --------------------------------------------------------------------------------


@checks.boundary
def gradient(model: nn.Module, variables: Any, x: jax.Array, target: Target) -> jax.Array:
    """Input gradient (saliency) of the target (Simonyan et al. 2013).

    ``G[n] = d f_n / d x[n]``.

    Args:
      model: a Linen module (ours, or any whose ``apply(variables, x)`` gives logits).
      variables: its variables.
      x: (N, H, W, C) float inputs.
      target: int class, (N,) int classes, an objective, or ``f(model, variables, x) -> (N,)``.

    Returns:
      (N, H, W, C) gradient, in ``x``'s dtype.

    Raises:
      ValueError: ``x`` is not 4-D; a class or channel index is out of range.
      TypeError: ``x`` is not a float array; ``target`` is of an unknown kind.
      KeyError: the objective names an unknown layer.
    """
    x = _check_x(model, x)
    obj = _objective(model, x, target)
    return _grad_jit(model, variables, x, obj).astype(x.dtype)


@checks.boundary
def gradient_x_input(model: nn.Module, variables: Any, x: jax.Array, target: Target) -> jax.Array:
    """Gradient times input (Shrikumar et al. 2016): ``x[n] * d f_n / d x[n]``.

    Args and Raises: as :func:`gradient`.

    Returns:
      (N, H, W, C), in ``x``'s dtype.
    """
    x = _check_x(model, x)
    return x * gradient(model, variables, x, target)


@checks.boundary
def deconvnet(model: nn.Module, variables: Any, x: jax.Array, target: Target) -> jax.Array:
    """DeconvNet reconstruction (Zeiler & Fergus 2014) as a modified backward pass.

    The gradient of the target with every ReLU's backward replaced by
    ``relu(g)`` (the upstream signal rectified, whatever the forward input) and max
    pooling routing to each window's forward arg-max (the "switches"):
    ``model.clone(rules="deconvnet")``.

    Args: as :func:`gradient`; ``model`` must have a ``rules`` field (ours do).

    Returns:
      (N, H, W, C), in ``x``'s dtype.

    Raises:
      TypeError: the model has no ``rules`` field (the message says how to add one).
      Otherwise as :func:`gradient`.
    """
    return gradient(_with_rule(model, "deconvnet", "deconvnet"), variables, x, target)


@checks.boundary
def guided_backprop(model: nn.Module, variables: Any, x: jax.Array, target: Target) -> jax.Array:
    """Guided backpropagation (Springenberg et al. 2014).

    The gradient of the target with every ReLU's backward replaced by
    ``1[s > 0] * relu(g)`` (``s`` the ReLU's forward input, ``g`` the upstream
    signal): ``model.clone(rules="guided")``.

    Args: as :func:`gradient`; ``model`` must have a ``rules`` field (ours do).

    Returns:
      (N, H, W, C), in ``x``'s dtype.

    Raises:
      TypeError: the model has no ``rules`` field (the message says how to add one).
      Otherwise as :func:`gradient`.
    """
    return gradient(_with_rule(model, "guided", "guided_backprop"), variables, x, target)


# --- SmoothGrad ---------------------------------------------------------------------------------


@checks.boundary
def smoothgrad(model: nn.Module, variables: Any, x: jax.Array, target: Target, *,
               key: jax.Array | None = None, samples: int = 50, noise: float = 0.15,
               noise_samples: jax.Array | None = None, variant: str = "plain",
               batch_size: int | None = None) -> jax.Array:
    """SmoothGrad (Smilkov et al. 2017): gradients averaged over noisy copies of x.

    With ``x_s = x + sigma_n * eps_s``, ``eps_s ~ N(0, I)`` and
    ``sigma_n = noise * (max(x[n]) - min(x[n]))`` (the noise level as a fraction of
    each example's value range; a quarter of the range, Delta / 4, is ``noise=0.25``):

    - ``"plain"``:   ``mean_s grad f(x_s)``
    - ``"squared"``: ``mean_s (grad f(x_s))**2`` (SmoothGrad-squared, Hooker et al. 2019)
    - ``"vargrad"``: ``var_s grad f(x_s)`` (VarGrad, Adebayo et al. 2018; population
      variance, accumulated across chunks with Chan et al.'s pairwise update)

    Args:
      model, variables, x, target: as :func:`gradient`.
      key: PRNG key. Sample ``s`` uses ``eps_s = jax.random.normal(
        jax.random.split(key, samples)[s], x.shape, x.dtype)``, the same whatever
        ``batch_size``. Required unless ``noise_samples`` is given.
      samples: number of noisy copies (ignored when ``noise_samples`` is given).
      noise: noise level as a fraction of each example's range (max - min).
      noise_samples: (S, N, H, W, C) standard-normal draws ``eps`` to use instead of
        drawing them (for reproducibility, or to share noise with another library);
        they are scaled by ``sigma_n`` here.
      variant: "plain", "squared" or "vargrad".
      batch_size: noisy copies per compiled chunk (each chunk runs
        ``batch_size * N`` images); None runs all samples in one chunk.

    Returns:
      (N, H, W, C), in ``x``'s dtype.

    Raises:
      TypeError: neither ``key`` nor ``noise_samples`` is given; as :func:`gradient`.
      ValueError: unknown ``variant``; ``noise_samples`` of the wrong shape; a negative
        ``noise``; ``samples`` or ``batch_size`` not a positive int; as :func:`gradient`.
    """
    x = _check_x(model, x)
    _check_choice(variant, SMOOTHGRAD_VARIANTS, "SmoothGrad variant")
    if isinstance(noise, bool) or not isinstance(noise, numbers.Real) or noise < 0:
        raise InputError(f"expected noise as a non-negative fraction of the input range, got "
                         f"{noise!r}")
    keys = None
    if noise_samples is not None:
        noise_samples = jnp.asarray(noise_samples, x.dtype)
        if noise_samples.ndim != x.ndim + 1 or tuple(noise_samples.shape[1:]) != tuple(x.shape):
            raise InputError(f"expected noise_samples of shape (samples, *x.shape) = "
                             f"(S, {', '.join(map(str, x.shape))}); got shape "
                             f"{tuple(noise_samples.shape)}")
        samples = noise_samples.shape[0]
        if samples < 1:
            raise InputError("expected at least one noise sample, got an empty noise_samples")
    else:
        if key is None:
            raise InputTypeError("smoothgrad draws random noise: pass key=jax.random.key(seed), "
                            "or the draws themselves as noise_samples=(S, N, H, W, C)")
        samples = checks.positive_int(samples, "samples")
        keys = jax.random.split(key, samples)
    obj = _objective(model, x, target)
    chunk = _check_batch_size(batch_size, samples)
    axes = tuple(range(1, x.ndim))
    spread = x.max(axis=axes) - x.min(axis=axes)
    sigma = (jnp.asarray(noise, x.dtype) * spread).reshape(-1, *([1] * (x.ndim - 1)))

    count = 0
    total = m2 = None
    for start in range(0, samples, chunk):
        k = min(chunk, samples - start)
        if noise_samples is not None:
            eps = noise_samples[start:start + k]
            if k < chunk:  # pad the last chunk; the padded samples are masked out
                eps = jnp.concatenate([eps, jnp.zeros((chunk - k, *x.shape), x.dtype)])
        else:
            ks = keys[start:start + k]
            if k < chunk:
                ks = jnp.concatenate([ks, jnp.repeat(ks[:1], chunk - k, axis=0)])
            eps = _draw_noise_jit(ks, tuple(x.shape), jnp.dtype(x.dtype))
        mask = jnp.arange(chunk) < k
        s, dev = _smoothgrad_jit(model, variant, variables, x, sigma, eps, mask, obj)
        if total is None:
            total, m2, count = s, dev, k
            continue
        if variant == "vargrad":
            # Chan, Golub & LeVeque's pairwise update of the sum of squared deviations
            delta = s / k - total / count
            m2 = m2 + dev + delta * delta * (count * k / (count + k))
        total, count = total + s, count + k
    out = (m2 if variant == "vargrad" else total) / count
    return out.astype(x.dtype)


# --- integrated gradients -----------------------------------------------------------------------


def path_points(steps: int, method: str = "riemann_right") -> tuple[np.ndarray, np.ndarray]:
    """Path positions ``alpha_k`` in [0, 1] and quadrature weights ``w_k`` (summing to 1).

    ``riemann_right``: ``alpha_k = k / m``, k = 1..m; ``riemann_left``: k = 0..m-1;
    ``riemann_middle``: ``(k + 1/2) / m``, k = 0..m-1; all with ``w_k = 1 / m``.
    ``riemann_trapezoid``: ``alpha_k = k / (m - 1)``, k = 0..m-1, with weights
    ``1 / (m - 1)`` halved at both ends (m >= 2). ``m = steps`` is the number of
    gradient evaluations in every case.

    Raises:
      ValueError: unknown method; ``steps`` not a positive int (>= 2 for the trapezoid).
    """
    _check_choice(method, IG_METHODS, "integration method")
    m = checks.positive_int(steps, "steps", 2 if method == "riemann_trapezoid" else 1)
    k = np.arange(m, dtype=np.float64)
    if method == "riemann_trapezoid":
        alphas = k / (m - 1)
        weights = np.full(m, 1.0 / (m - 1))
        weights[[0, -1]] *= 0.5
        return alphas, weights
    offset = {"riemann_right": 1.0, "riemann_left": 0.0, "riemann_middle": 0.5}[method]
    return (k + offset) / m, np.full(m, 1.0 / m)


@checks.boundary
def integrated_gradients(model: nn.Module, variables: Any, x: jax.Array, target: Target, *,
                         baseline: float | jax.Array = 0.0, steps: int = 50,
                         method: str = "riemann_right",
                         batch_size: int | None = None) -> jax.Array:
    """Integrated gradients (Sundararajan et al. 2017).

    ``IG(x) = (x - b) * integral_0^1 grad f(b + a (x - b)) da``, the integral taken by
    the quadrature rule ``method`` (see :func:`path_points`):
    ``(x - b) * sum_k w_k grad f(b + alpha_k (x - b))``. Completeness: ``sum IG[n]``
    approaches ``f_n(x) - f_n(b)`` as ``steps`` grows (exactly, for a linear ``f``).

    Args:
      model, variables, x, target: as :func:`gradient`.
      baseline: ``b``, a scalar or an array that broadcasts to x ((C,), (H, W, C) or
        (N, H, W, C)). For ImageNet-normalized input, 0 is the mean colour.
      steps: number of gradient evaluations along the path.
      method: "riemann_right", "riemann_left", "riemann_middle" or "riemann_trapezoid".
      batch_size: path points per compiled chunk (each runs ``batch_size * N``
        images); None evaluates all steps in one chunk.

    Returns:
      (N, H, W, C), in ``x``'s dtype.

    Raises:
      ValueError: unknown ``method``; bad ``steps``, ``batch_size`` or baseline shape;
        as :func:`gradient`.
      TypeError, KeyError: as :func:`gradient`.
    """
    x = _check_x(model, x)
    alphas, weights = path_points(steps, method)
    b = _baseline(baseline, x)
    obj = _objective(model, x, target)
    m = len(alphas)
    chunk = _check_batch_size(batch_size, m)
    total = None
    for start in range(0, m, chunk):
        k = min(chunk, m - start)
        a = np.zeros(chunk)
        w = np.zeros(chunk)  # padded points get weight 0
        a[:k], w[:k] = alphas[start:start + k], weights[start:start + k]
        part = _ig_jit(model, variables, x, b, jnp.asarray(a, x.dtype), jnp.asarray(w, x.dtype),
                       obj)
        total = part if total is None else total + part
    return ((x - b) * total).astype(x.dtype)


# --- occlusion --------------------------------------------------------------------------------


def window_positions(length: int, window: int, stride: int) -> list[int]:
    """Start positions of occlusion windows along an axis of ``length``.

    ``0, stride, 2 stride, ...`` up to ``length - window``, plus one window flush
    with the far edge (``length - window``) when the stride does not land there, so
    every position is covered and no window hangs off the image.

    Raises:
      ValueError: ``window`` is larger than ``length``, or either is not positive.
    """
    window = checks.positive_int(window, "window")
    stride = checks.positive_int(stride, "stride")
    if window > length:
        raise InputError(f"occlusion window {window} is larger than the input ({length})")
    starts = list(range(0, length - window + 1, stride))
    if starts[-1] != length - window:
        starts.append(length - window)
    return starts


def _pair(value: Any, what: str) -> tuple[int, int]:
    if isinstance(value, (tuple, list)):
        if len(value) != 2:
            raise InputError(f"expected {what} as an int or an (h, w) pair, got {value!r}")
        return (checks.positive_int(value[0], what), checks.positive_int(value[1], what))
    v = checks.positive_int(value, what)
    return v, v


@checks.boundary
def occlusion(model: nn.Module, variables: Any, x: jax.Array, target: Target, *,
              window: int | tuple[int, int] = 32, stride: int | tuple[int, int] = 2,
              baseline: float | jax.Array = 0.0, batch_size: int = 64,
              return_windows: bool = False) -> jax.Array | tuple[jax.Array, jax.Array]:
    """Occlusion sensitivity (Zeiler & Fergus 2014).

    A ``window`` patch of the input is replaced by ``baseline`` at every position of a
    grid (:func:`window_positions` along each axis: steps of ``stride``, plus a last
    window flush with the edge), and the output drop ``D_w = f(x) - f(x with window w
    occluded)`` is recorded. The map at a pixel is the mean of ``D_w`` over the windows
    that cover it: ``M[n, i, j] = sum_w D_w[n] 1[(i, j) in w] / sum_w 1[(i, j) in w]``.

    Args:
      model, variables, x, target: as :func:`gradient`.
      window: window size, an int or (h, w).
      stride: distance between window positions, an int or (h, w).
      baseline: the occluding value: a scalar or an array that broadcasts to x (the
        window takes the baseline's values at its pixels).
      batch_size: windows per compiled chunk (each runs ``batch_size * N`` images).
      return_windows: also return the raw drops on the window grid.

    Returns:
      (N, H, W) map in ``x``'s dtype; with ``return_windows``, ``(map, grid)`` where
      ``grid[n, a, b]`` is ``D`` of the window at row ``window_positions(H, ...)[a]``,
      column ``window_positions(W, ...)[b]``.

    Raises:
      ValueError: window larger than x, a non-positive window, stride or batch_size;
        a baseline that does not broadcast; as :func:`gradient`.
      TypeError, KeyError: as :func:`gradient`.
    """
    x = _check_x(model, x, images=True)
    wh, ww = _pair(window, "window")
    sh, sw = _pair(stride, "stride")
    n, h, w = x.shape[:3]
    rows, cols = window_positions(h, wh, sh), window_positions(w, ww, sw)
    b = _baseline(baseline, x)
    obj = _objective(model, x, target)
    starts = np.array([(r, c) for r in rows for c in cols], np.int32)
    total = len(starts)
    chunk = _check_batch_size(batch_size, total)
    reference = _values_jit(model, variables, x, obj)
    drops = []
    for start in range(0, total, chunk):
        part = starts[start:start + chunk]
        k = len(part)
        if k < chunk:  # pad with copies of the last window; their drops are dropped
            part = np.concatenate([part, np.repeat(part[-1:], chunk - k, axis=0)])
        d = _occlusion_jit(model, (wh, ww), variables, x, b, reference, jnp.asarray(part), obj)
        drops.append(d[:k])
    grid = jnp.concatenate(drops).reshape(len(rows), len(cols), n).transpose(2, 0, 1)
    grid = grid.astype(x.dtype)
    cover_r = (np.arange(h)[None, :] >= np.array(rows)[:, None]) & \
        (np.arange(h)[None, :] < np.array(rows)[:, None] + wh)          # (nY, H)
    cover_c = (np.arange(w)[None, :] >= np.array(cols)[:, None]) & \
        (np.arange(w)[None, :] < np.array(cols)[:, None] + ww)          # (nX, W)
    count = np.outer(cover_r.sum(0), cover_c.sum(0))
    summed = jnp.einsum("ah,nab,bw->nhw", jnp.asarray(cover_r, x.dtype), grid,
                        jnp.asarray(cover_c, x.dtype))
    heat = (summed / jnp.asarray(count, x.dtype)).astype(x.dtype)
    return (heat, grid) if return_windows else heat


# --- DeconvNet reconstruction -----------------------------------------------------------------


def _reconstruction_core(model, path, strongest, variables, x, channel, position):
    def layer_output(x):
        return capture.activations(model, variables, x, [path])[path]

    a, pull_back = jax.vjp(layer_output, x)
    keep = jnp.ones_like(a, dtype=bool)
    if channel is not None:
        keep = jnp.arange(a.shape[-1]) == channel.reshape((-1,) + (1,) * (a.ndim - 1))
    if position is not None:  # (N, 2) rows and columns of a (N, H, W, C) map
        rows = jnp.arange(a.shape[1])[None, :, None, None] == position[:, 0, None, None, None]
        cols = jnp.arange(a.shape[2])[None, None, :, None] == position[:, 1, None, None, None]
        keep = keep & rows & cols
    if strongest:
        chosen = jnp.where(keep, a, -jnp.inf).reshape(a.shape[0], -1)
        top = jnp.argmax(chosen, axis=1)
        keep = (jnp.arange(chosen.shape[1]) == top[:, None]).reshape(a.shape)
    (pixels,) = pull_back(jnp.where(keep, a, jnp.zeros((), a.dtype)))
    return pixels


_reconstruction_jit = _compiled(_reconstruction_core, 3)


@checks.boundary
def deconvnet_reconstruction(model: nn.Module, variables: Any, x: jax.Array, layer: str, *,
                             channel: int | jax.Array | None = None,
                             position: Any = None, strongest: bool = False) -> jax.Array:
    """Projects a layer's activation back to pixels through a DeconvNet (Zeiler & Fergus 2014).

    The activation ``A`` of ``layer`` is kept where selected and zeroed elsewhere, then
    sent back down the network: each max pool unpools through its switches (the arg-max
    of every window, :mod:`jaxviz.switches`; where overlapping windows share a switch
    their values add), each ReLU rectifies the signal coming down, and each convolution
    applies its transposed filters. That backward pass is the vector-Jacobian product
    of ``x -> A`` under the ``deconvnet`` rule (:mod:`jaxviz.rules`), evaluated at
    ``A * mask``.

    Args:
      model: a model whose ReLUs follow a backward rule (ours; see the module docstring).
      variables, x: as :func:`gradient`.
      layer: the layer to project from (module path or alias).
      channel: None keeps every channel; an int, or an int array (N,) with one channel per
        example, keeps only that channel.
      strongest: keep only the single strongest activation among those selected (per
        example), as in the paper's figures.
      position: None keeps every position; a (row, column) pair, or an int array (N, 2)
        with one per example, keeps only that position of the layer's map (with
        ``channel``: one activation per example, the projection of a dataset example).

    Returns:
      (N, H, W, C) reconstruction in input space, in ``x``'s dtype.

    Raises:
      KeyError: unknown layer; TypeError: the model has no ``rules`` field;
      ValueError: bad ``x`` or ``channel``.
    """
    x = _check_x(model, x)
    path = _resolve_layer(model, x, layer)
    deconv = _with_rule(model, "deconvnet", "deconvnet_reconstruction")
    if channel is not None:
        channel = np.asarray(channel)
        if channel.dtype.kind not in "iu" or channel.ndim > 1 or (
                channel.ndim == 1 and channel.shape[0] != x.shape[0]):
            raise InputError(f"channel must be an int or an int array of shape ({x.shape[0]},); "
                             f"got {channel!r}")
        width = capture.layer_names(model, tuple(x.shape), partial=True)
        width = next(info.shape for info in width if info.path == path)[-1]
        if channel.min() < 0 or channel.max() >= width:
            raise InputError(f"channel {channel.tolist()} out of range for {layer!r}, which has "
                             f"{width} channels")
        channel = jnp.broadcast_to(jnp.asarray(channel, jnp.int32), (x.shape[0],))
    if position is not None:
        position = np.asarray(position)
        shape = next(info.shape for info in capture.layer_names(model, tuple(x.shape), partial=True)
                     if info.path == path)
        if position.dtype.kind not in "iu" or position.shape not in ((2,), (x.shape[0], 2)):
            raise InputError(f"position must be a (row, column) pair of ints or an int array of "
                             f"shape ({x.shape[0]}, 2); got {position!r}")
        if len(shape) != 4:
            raise InputError(f"position needs a layer with (N, H, W, C) maps; {layer!r} gives "
                             f"shape {shape}")
        if (position < 0).any() or (position >= np.asarray(shape[1:3])).any():
            raise InputError(f"position {position.tolist()} out of range for {layer!r}, whose "
                             f"maps are {shape[1]} x {shape[2]}")
        position = jnp.broadcast_to(jnp.asarray(position, jnp.int32), (x.shape[0], 2))
    return _reconstruction_jit(deconv, path, bool(strongest), variables, x, channel, position)


# --- Grad-CAM -----------------------------------------------------------------------------------


@checks.boundary
def layer_gradient(model: nn.Module, variables: Any, x: jax.Array, target: Target, *,
                   layer: str) -> tuple[jax.Array, jax.Array]:
    """A layer's activation and the gradient of the target with respect to it.

    Works for any Linen model: a zero array is added to the output of the module whose
    dotted path is ``layer`` (via ``flax.linen.intercept_methods``) and the target is
    differentiated with respect to it. If the module runs more than once in a forward
    pass, the activation is its last output and the gradient is summed over its uses.

    Args:
      model, variables, x, target: as :func:`gradient`.
      layer: a layer name (module path or alias), see :func:`jaxviz.layer_names`.

    Returns:
      ``(A, dA)``: the activation and ``d f_n / d A[n]``, both of the layer's shape.

    Raises:
      KeyError: unknown layer (the message lists close names).
      ValueError: the layer is not on the way to the objective; as :func:`gradient`.
    """
    x = _check_x(model, x)
    path = _resolve_layer(model, x, layer)
    obj = _objective(model, x, target)
    return _layer_gradient_jit(model, path, variables, x, obj)


def _upsample(maps: jax.Array, size: tuple[int, int]) -> jax.Array:
    """(N, h, w) -> (N, H, W), bilinear with half-pixel centres, no antialiasing."""
    return jax.image.resize(maps, (maps.shape[0], *size), "bilinear", antialias=False)


@checks.boundary
def grad_cam(model: nn.Module, variables: Any, x: jax.Array, target: Target, *, layer: str,
             return_raw: bool = False) -> jax.Array | tuple[jax.Array, jax.Array]:
    """Grad-CAM (Selvaraju et al. 2017) at any spatial layer.

    With ``A = `` the layer's activation (N, h, w, K) and ``dA = d f_n / d A``:
    ``alpha[n, k] = mean_{i, j} dA[n, i, j, k]`` and
    ``L[n] = ReLU(sum_k alpha[n, k] A[n, :, :, k])`` (h, w), bilinearly upsampled to
    the input's (H, W) with ``jax.image.resize(..., "bilinear", antialias=False)``:
    half-pixel centres, edge values held (the convention of torch's
    ``F.interpolate(mode="bilinear", align_corners=False)``).

    Args:
      model, variables, x, target: as :func:`gradient`.
      layer: a layer whose output is (N, h, w, K): module path or alias (e.g. AlexNet
        ``"features.11"``/``"relu5"``, GoogLeNet ``"inception4e"``, a user model's
        ``"Conv_1"``).
      return_raw: also return the low-resolution map ``L`` (N, h, w).

    Returns:
      (N, H, W) map in ``x``'s dtype; with ``return_raw``, ``(map, raw)``.

    Raises:
      KeyError: unknown layer.
      ValueError: the layer's output is not (N, h, w, K); as :func:`layer_gradient`.
    """
    x = _check_x(model, x, images=True)
    path = _resolve_layer(model, x, layer)
    shape = {i.path: i.shape for i in capture.layer_names(model, tuple(x.shape), partial=True)}[path]
    if len(shape) != 4:
        raise InputError(f"Grad-CAM needs a spatial layer with output (N, h, w, K); "
                         f"{layer!r} has shape {shape}")
    act, grad = layer_gradient(model, variables, x, target, layer=path)
    weights = grad.mean(axis=(1, 2))
    raw = jax.nn.relu(jnp.einsum("nhwk,nk->nhw", act, weights)).astype(x.dtype)
    heat = _upsample(raw, x.shape[1:3]).astype(x.dtype)
    return (heat, raw) if return_raw else heat


@checks.boundary
def guided_grad_cam(model: nn.Module, variables: Any, x: jax.Array, target: Target, *,
                    layer: str) -> jax.Array:
    """Guided Grad-CAM (Selvaraju et al. 2017): guided backpropagation times Grad-CAM.

    ``GB[n] * L_up[n][..., None]``, with ``GB`` from :func:`guided_backprop` and
    ``L_up`` the upsampled map of :func:`grad_cam`.

    Args: as :func:`grad_cam`; ``model`` needs a ``rules`` field.

    Returns:
      (N, H, W, C), in ``x``'s dtype.

    Raises:
      As :func:`guided_backprop` and :func:`grad_cam`.
    """
    guided = guided_backprop(model, variables, x, target)
    cam = grad_cam(model, variables, x, target, layer=layer)
    return (guided * cam[..., None]).astype(guided.dtype)


__all__ = [
    "IG_METHODS", "SMOOTHGRAD_VARIANTS", "deconvnet", "grad_cam", "gradient",
    "gradient_x_input", "guided_backprop", "guided_grad_cam", "integrated_gradients",
    "layer_gradient", "occlusion", "path_points", "smoothgrad", "window_positions",
]

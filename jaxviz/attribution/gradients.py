"""Gradient methods: saliency, gradient x input, DeconvNet, guided backpropagation,
SmoothGrad, integrated gradients, a layer's gradient, and DeconvNet projections.

References:
  Simonyan, Vedaldi & Zisserman, "Deep Inside Convolutional Networks", arXiv:1312.6034,
  2013 (gradient). Shrikumar et al., "Not Just a Black Box", arXiv:1605.01713, 2016
  (gradient x input). Zeiler & Fergus, "Visualizing and Understanding Convolutional
  Networks", ECCV 2014 (DeconvNet). Springenberg et al., "Striving for Simplicity: The
  All Convolutional Net", arXiv:1412.6806, 2014 (guided backpropagation). Smilkov et
  al., "SmoothGrad: removing noise by adding noise", arXiv:1706.03825, 2017. Sundararajan,
  Taly & Yan, "Axiomatic Attribution for Deep Networks", ICML 2017 (integrated
  gradients). Adebayo et al., "Local Explanation Methods for Deep Neural Networks Lack
  Sensitivity to Parameter Values", arXiv:1810.03307, 2018 (VarGrad). Hooker et al., "A
  Benchmark for Interpretability Methods in Deep Neural Networks", NeurIPS 2019
  (SmoothGrad-squared).
"""

from __future__ import annotations

import numbers
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxviz import _random, capture, checks
from jaxviz.errors import InputError, InputTypeError
from jaxviz.attribution._common import (
    Target, _baseline, _check_batch_size, _check_choice, _check_x, _compiled, _copies_grad_jit,
    LAYER_SIDES, _grad_jit, _layer_gradient_jit, _objective, _resolve_layer, _values_jit,
    _with_rule)

SMOOTHGRAD_VARIANTS: tuple[str, ...] = ("plain", "squared", "vargrad", "abs")
IG_METHODS: tuple[str, ...] = ("riemann_right", "riemann_left", "riemann_middle",
                               "riemann_trapezoid", "gausslegendre")



# --- gradients --------------------------------------------------------------------------------


@checks.boundary
def gradient(model: nn.Module, variables: Any, x: jax.Array, target: Target, *,
             abs: bool = False) -> jax.Array:
    """Input gradient (saliency) of the target (Simonyan et al. 2013).

    ``G[n] = d f_n / d x[n]``; with ``abs=True``, ``|G[n]|`` (the paper's saliency map
    before its maximum over colour channels; Captum's ``Saliency`` default).

    Args:
      model: a Linen module (ours, or any whose ``apply(variables, x)`` gives logits).
      variables: its variables.
      x: (N, H, W, C) float inputs.
      target: int class, (N,) int classes, an objective, or ``f(model, variables, x) -> (N,)``.
      abs: return the gradient's magnitude.

    Returns:
      (N, H, W, C) gradient, in ``x``'s dtype.

    Raises:
      ValueError: ``x`` is not 4-D; a class or channel index is out of range.
      TypeError: ``x`` is not a float array; ``target`` is of an unknown kind.
      KeyError: the objective names an unknown layer.
    """
    if not isinstance(abs, bool):
        raise InputError(f"expected abs as True or False, got {abs!r}")
    x = _check_x(model, x)
    obj = _objective(model, x, target)
    g = _grad_jit(model, variables, x, obj).astype(x.dtype)
    return jnp.abs(g) if abs else g


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



@jax.jit
def _noisy_copies(x, sigma, eps):
    """``x + sigma * eps`` for a chunk of draws ``eps: (S, N, ...)``."""
    return x[None] + sigma[None] * eps


def _draw_noise(keys, shape, dtype):
    return jax.vmap(lambda k: _random.normal(k, shape, dtype))(keys)


_draw_noise_jit = jax.jit(_draw_noise, static_argnums=(1, 2))


@jax.jit
def _path_copies(x, baseline, alphas):
    """``baseline + alphas[k] (x - baseline)`` for a chunk of path positions."""
    a = alphas.reshape(-1, *([1] * x.ndim))
    return baseline[None] + a * (x - baseline)[None]


@jax.jit
def _weighted_sum(weights, g):
    """``sum_k weights[k] * g[k]``."""
    return jnp.tensordot(weights, g, axes=1)


# --- SmoothGrad ---------------------------------------------------------------------------------


@checks.boundary
def smoothgrad(model: nn.Module, variables: Any, x: jax.Array, target: Target, *,
               key: jax.Array | None = None, samples: int = 50, noise: float = 0.15,
               stdev: float | None = None, noise_samples: jax.Array | None = None,
               variant: str = "plain", batch_size: int | None = None) -> jax.Array:
    """SmoothGrad (Smilkov et al. 2017): gradients averaged over noisy copies of x.

    With ``x_s = x + sigma_n * eps_s``, ``eps_s ~ N(0, I)`` and
    ``sigma_n = noise * (max(x[n]) - min(x[n]))`` (the noise level as a fraction of
    each example's value range; a quarter of the range, Delta / 4, is ``noise=0.25``):

    - ``"plain"``:   ``mean_s grad f(x_s)``
    - ``"squared"``: ``mean_s (grad f(x_s))**2`` (SmoothGrad-squared, Hooker et al. 2019)
    - ``"vargrad"``: ``var_s grad f(x_s)`` (VarGrad, Adebayo et al. 2018; population
      variance, accumulated across chunks with Chan et al.'s pairwise update)
    - ``"abs"``: ``mean_s |grad f(x_s)|`` (what Captum's ``NoiseTunnel`` over
      ``Saliency`` returns by default, since ``Saliency`` takes ``abs=True``)

    Captum's ``NoiseTunnel`` takes an absolute standard deviation (``stdevs=1.0`` by
    default) where the paper takes a fraction of the range: pass ``stdev=`` for that.

    Args:
      model, variables, x, target: as :func:`gradient`.
      key: PRNG key. Sample ``s`` uses ``eps_s = jax.random.normal(
        jax.random.split(key, samples)[s], x.shape, x.dtype)``, the same whatever
        ``batch_size``. Required unless ``noise_samples`` is given.
      samples: number of noisy copies (ignored when ``noise_samples`` is given).
      noise: noise level as a fraction of each example's range (max - min).
      stdev: an absolute noise standard deviation, the same for every example
        (``sigma_n = stdev``); replaces ``noise``.
      noise_samples: (S, N, H, W, C) standard-normal draws ``eps`` to use instead of
        drawing them (for reproducibility, or to share noise with another library);
        they are scaled by ``sigma_n`` here.
      variant: "plain", "squared", "vargrad" or "abs".
      batch_size: noisy copies per compiled chunk (each chunk runs
        ``batch_size * N`` images); None runs all samples in one chunk.

    Returns:
      (N, H, W, C), in ``x``'s dtype.

    Raises:
      TypeError: neither ``key`` nor ``noise_samples`` is given; as :func:`gradient`.
      ValueError: unknown ``variant``; ``noise_samples`` of the wrong shape; a negative
        ``noise`` or ``stdev``; ``samples`` or ``batch_size`` not a positive int; as
        :func:`gradient`.
    """
    x = _check_x(model, x)
    _check_choice(variant, SMOOTHGRAD_VARIANTS, "SmoothGrad variant")
    plan = _Noise(x, key, samples, noise, stdev, noise_samples, "smoothgrad")
    obj = _objective(model, x, target)
    chunk = _check_batch_size(batch_size, plan.samples)
    moments = _Moments(variant)
    for start in range(0, plan.samples, chunk):
        k = min(chunk, plan.samples - start)
        mask = jnp.arange(chunk) < k
        g = _copies_grad_jit(model, variables,
                             _noisy_copies(x, plan.sigma, plan.draws(start, k, chunk)), obj)
        moments.add(*_chunk_moments_jit(variant, g, mask), k)
    return moments.result().astype(x.dtype)


class _Noise:
    """The noise of SmoothGrad and :func:`jaxviz.attribution.noise_tunnel`, checked:
    ``samples`` draws, per-example scale ``sigma`` (N, 1, ..., 1), draws by chunk."""

    def __init__(self, x, key, samples, noise, stdev, noise_samples, method: str):
        if stdev is not None:
            if isinstance(stdev, bool) or not isinstance(stdev, numbers.Real) or stdev < 0:
                raise InputError(f"expected stdev as a non-negative number, got {stdev!r}")
            sigma = jnp.full((x.shape[0],), stdev, x.dtype)
        else:
            if isinstance(noise, bool) or not isinstance(noise, numbers.Real) or noise < 0:
                raise InputError(f"expected noise as a non-negative fraction of the input range, "
                                 f"got {noise!r}")
            axes = tuple(range(1, x.ndim))
            sigma = jnp.asarray(noise, x.dtype) * (x.max(axis=axes) - x.min(axis=axes))
        self.sigma = sigma.reshape(-1, *([1] * (x.ndim - 1)))
        self.x, self.keys, self.given = x, None, None
        if noise_samples is not None:
            given = jnp.asarray(noise_samples, x.dtype)
            if given.ndim != x.ndim + 1 or tuple(given.shape[1:]) != tuple(x.shape):
                raise InputError(f"expected noise_samples of shape (samples, *x.shape) = "
                                 f"(S, {', '.join(map(str, x.shape))}); got shape "
                                 f"{tuple(given.shape)}")
            if given.shape[0] < 1:
                raise InputError("expected at least one noise sample, got an empty noise_samples")
            self.given, self.samples = given, int(given.shape[0])
        else:
            if key is None:
                raise InputTypeError(f"{method} draws random noise: pass key=jax.random.key(seed), "
                                     f"or the draws themselves as noise_samples=(S, N, H, W, C)")
            self.samples = checks.positive_int(samples, "samples")
            self.keys = jax.random.split(key, self.samples)

    def draws(self, start: int, k: int, chunk: int) -> jax.Array:
        """Standard-normal draws ``start .. start + k``, padded to ``chunk`` (the padding
        is masked out by the caller): (chunk, *x.shape)."""
        x = self.x
        if self.given is not None:
            eps = self.given[start:start + k]
            if k < chunk:
                eps = jnp.concatenate([eps, jnp.zeros((chunk - k, *x.shape), x.dtype)])
            return eps
        ks = self.keys[start:start + k]
        if k < chunk:
            ks = jnp.concatenate([ks, jnp.repeat(ks[:1], chunk - k, axis=0)])
        return _draw_noise_jit(ks, tuple(x.shape), jnp.dtype(x.dtype))


def _chunk_moments(variant: str, g: jax.Array, mask: jax.Array):
    """What ``variant`` accumulates over a chunk's valid samples ``g[mask]``: the sum
    ("plain"), of squares ("squared"), of magnitudes ("abs"), or the sum and the sum of
    squared deviations from the chunk's mean ("vargrad")."""
    m = mask.astype(g.dtype).reshape(-1, *([1] * (g.ndim - 1)))
    if variant == "squared":
        return (m * g * g).sum(0), None
    if variant == "abs":
        return (m * jnp.abs(g)).sum(0), None
    total = (m * g).sum(0)
    if variant == "plain":
        return total, None
    mean = total / mask.sum().astype(g.dtype)
    return total, (m * (g - mean) ** 2).sum(0)


_chunk_moments_jit = jax.jit(_chunk_moments, static_argnums=0)


class _Moments:
    """Chunk sums combined into the mean (or, for "vargrad", the population variance, by
    Chan, Golub & LeVeque's pairwise update of the sum of squared deviations)."""

    def __init__(self, variant: str):
        self.variant, self.count, self.total, self.m2 = variant, 0, None, None

    def add(self, s, dev, k: int) -> None:
        if self.total is None:
            self.total, self.m2, self.count = s, dev, k
            return
        if self.variant == "vargrad":
            delta = s / k - self.total / self.count
            self.m2 = self.m2 + dev + delta * delta * (self.count * k / (self.count + k))
        self.total, self.count = self.total + s, self.count + k

    def result(self) -> jax.Array:
        return (self.m2 if self.variant == "vargrad" else self.total) / self.count


# --- integrated gradients -----------------------------------------------------------------------


def path_points(steps: int, method: str = "riemann_right") -> tuple[np.ndarray, np.ndarray]:
    """Path positions ``alpha_k`` in [0, 1] and quadrature weights ``w_k`` (summing to 1).

    ``riemann_right``: ``alpha_k = k / m``, k = 1..m; ``riemann_left``: k = 0..m-1;
    ``riemann_middle``: ``(k + 1/2) / m``, k = 0..m-1; all with ``w_k = 1 / m``.
    ``riemann_trapezoid``: ``alpha_k = k / (m - 1)``, k = 0..m-1, with weights
    ``1 / (m - 1)`` halved at both ends (m >= 2). ``gausslegendre``: the m-point
    Gauss-Legendre rule moved from [-1, 1] to [0, 1] (Captum's default; exact for
    polynomials of degree 2m - 1). ``m = steps`` is the number of gradient evaluations
    in every case.

    Captum's ``riemann_trapezoid`` is not the trapezoid rule: its weights are ``1 / m``
    halved at the ends (they sum to (m - 1) / m). Pass it to
    :func:`integrated_gradients` as ``points=(np.linspace(0, 1, m), w)`` with
    ``w = np.full(m, 1 / m); w[[0, -1]] /= 2``.

    Raises:
      ValueError: unknown method; ``steps`` not a positive int (>= 2 for the trapezoid).
    """
    _check_choice(method, IG_METHODS, "integration method")
    m = checks.positive_int(steps, "steps", 2 if method == "riemann_trapezoid" else 1)
    k = np.arange(m, dtype=np.float64)
    if method == "gausslegendre":
        nodes, weights = np.polynomial.legendre.leggauss(m)
        return 0.5 * (nodes + 1.0), 0.5 * weights
    if method == "riemann_trapezoid":
        alphas = k / (m - 1)
        weights = np.full(m, 1.0 / (m - 1))
        weights[[0, -1]] *= 0.5
        return alphas, weights
    offset = {"riemann_right": 1.0, "riemann_left": 0.0, "riemann_middle": 0.5}[method]
    return (k + offset) / m, np.full(m, 1.0 / m)


def _check_points(points: Any) -> tuple[np.ndarray, np.ndarray]:
    try:
        alphas, weights = (np.asarray(p, np.float64) for p in points)
    except (TypeError, ValueError):
        raise InputError(f"expected points as a pair (alphas, weights) of 1-D arrays, got "
                         f"{points!r}") from None
    if alphas.ndim != 1 or alphas.shape != weights.shape or len(alphas) == 0:
        raise InputError(f"expected points as (alphas, weights), two 1-D arrays of one "
                         f"length; got shapes {alphas.shape} and {weights.shape}")
    if not (np.isfinite(alphas).all() and np.isfinite(weights).all()):
        raise InputError("expected finite path points and weights")
    return alphas, weights


@checks.boundary
def integrated_gradients(model: nn.Module, variables: Any, x: jax.Array, target: Target, *,
                         baseline: float | jax.Array = 0.0, steps: int = 50,
                         method: str = "riemann_right", points: Any = None,
                         multiply_by_inputs: bool = True, return_delta: bool = False,
                         batch_size: int | None = None) -> jax.Array | tuple[jax.Array, jax.Array]:
    """Integrated gradients (Sundararajan et al. 2017).

    ``IG(x) = (x - b) * integral_0^1 grad f(b + a (x - b)) da``, the integral taken by
    the quadrature rule ``method`` (see :func:`path_points`):
    ``(x - b) * sum_k w_k grad f(b + alpha_k (x - b))``. Completeness: ``sum IG[n]``
    approaches ``f_n(x) - f_n(b)`` as ``steps`` grows (exactly, for a linear ``f``).

    Captum's ``IntegratedGradients`` defaults to ``method="gausslegendre"``; ours is the
    paper's right Riemann sum.

    Args:
      model, variables, x, target: as :func:`gradient`.
      baseline: ``b``, a scalar or an array that broadcasts to x ((C,), (H, W, C) or
        (N, H, W, C)). For ImageNet-normalized input, 0 is the mean colour.
      steps: number of gradient evaluations along the path.
      method: "riemann_right", "riemann_left", "riemann_middle", "riemann_trapezoid" or
        "gausslegendre".
      points: ``(alphas, weights)``, your own path positions and quadrature weights
        (1-D, one length); replaces ``steps`` and ``method``.
      multiply_by_inputs: False returns the path integral of the gradient alone, without
        the factor ``(x - b)`` (Captum's ``multiply_by_inputs=False``).
      return_delta: also return the completeness gap
        ``sum IG[n] - (f_n(x) - f_n(b))``, (N,) (Captum's convergence delta; needs
        ``multiply_by_inputs``).
      batch_size: path points per compiled chunk (each runs ``batch_size * N``
        images); None evaluates all steps in one chunk.

    Returns:
      (N, H, W, C), in ``x``'s dtype; with ``return_delta``, ``(attributions, delta)``.

    Raises:
      ValueError: unknown ``method``; bad ``steps``, ``points``, ``batch_size`` or
        baseline shape; ``return_delta`` without ``multiply_by_inputs``; as
        :func:`gradient`.
      TypeError, KeyError: as :func:`gradient`.
    """
    x = _check_x(model, x)
    if points is None:
        alphas, weights = path_points(steps, method)
    else:
        alphas, weights = _check_points(points)
    if return_delta and not multiply_by_inputs:
        raise InputError("return_delta compares sum(IG) with f(x) - f(baseline), which needs "
                         "multiply_by_inputs=True")
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
        g = _copies_grad_jit(model, variables, _path_copies(x, b, jnp.asarray(a, x.dtype)), obj)
        part = _weighted_sum(jnp.asarray(w, x.dtype), g)
        total = part if total is None else total + part
    if not multiply_by_inputs:
        return total.astype(x.dtype)
    out = ((x - b) * total).astype(x.dtype)
    if not return_delta:
        return out
    gap = (_values_jit(model, variables, x, obj) - _values_jit(model, variables, b, obj))
    delta = out.reshape(out.shape[0], -1).sum(axis=1) - gap
    return out, delta.astype(x.dtype)


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
        # broadcast on the host and copied: eagerly, the conversion and broadcast
        # compiled a program each per shape
        channel = jax.device_put(np.ascontiguousarray(
            np.broadcast_to(channel.astype(np.int32), (x.shape[0],))))
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
        position = jax.device_put(np.ascontiguousarray(
            np.broadcast_to(position.astype(np.int32), (x.shape[0], 2))))
    return _reconstruction_jit(deconv, path, bool(strongest), variables, x, channel, position)



# --- a layer's gradient -----------------------------------------------------------------------------------


@checks.boundary
def layer_gradient(model: nn.Module, variables: Any, x: jax.Array, target: Target, *,
                   layer: str, at: str = "output",
                   index: int | None = None) -> tuple[jax.Array, jax.Array]:
    """A layer's activation and the gradient of the target with respect to it.

    Works for any Linen model: a zero array is added to the output (or an input) of the
    module whose dotted path is ``layer`` (via ``flax.linen.intercept_methods``) and the
    target is differentiated with respect to it. If the module runs more than once in a
    forward pass, the activation is its last value and the gradient is summed over its
    uses.

    Args:
      model, variables, x, target: as :func:`gradient`.
      layer: a layer name (module path or alias), see :func:`jaxviz.layer_names`.
      at: ``"output"`` (default) or ``"input"``: the module's output, or its positional
        input (Captum's ``attribute_to_layer_input=True``).
      index: for a module that returns a tuple (or list), which element; for
        ``at="input"``, which positional argument (default the first, and the only one
        allowed to be left unnamed).

    Returns:
      ``(A, dA)``: the activation and ``d f_n / d A[n]``, both of the chosen array's
      shape.

    Raises:
      KeyError: unknown layer (the message lists close names).
      ValueError: the layer is not on the way to the objective; a tuple output with no
        ``index`` or an ``index`` out of range; as :func:`gradient`.
    """
    x = _check_x(model, x)
    where = _where(model, x, layer, at, index)
    obj = _objective(model, x, target)
    return _layer_gradient_jit(model, where, variables, x, obj)


def _where(model: nn.Module, x: jax.Array, layer: str, at: str,
           index: int | None) -> tuple[str, str, int | None]:
    """``(path, side, index)``, checked: the array a layer method works on."""
    _check_choice(at, LAYER_SIDES, "layer side (at=)")
    if index is not None and (isinstance(index, bool) or not isinstance(index, numbers.Integral)):
        raise InputError(f"expected index as an int or None, got {index!r}")
    return _resolve_layer(model, x, layer), at, None if index is None else int(index)

"""Sampling methods: attributions averaged over random copies, baselines or masks.

References:
  Lundberg & Lee, "A Unified Approach to Interpreting Model Predictions", NeurIPS 2017
  (SHAP; GradientSHAP as Captum's ``GradientShap`` computes it). Petsiuk, Das & Saenko,
  "RISE: Randomized Input Sampling for Explanation of Black-box Models", BMVC 2018.
  Smilkov et al., "SmoothGrad: removing noise by adding noise", arXiv:1706.03825, 2017
  (noise over any method). Adebayo et al., "Sanity Checks for Saliency Maps", NeurIPS
  2018 (VarGrad). Hooker et al., "A Benchmark for Interpretability Methods in Deep
  Neural Networks", NeurIPS 2019 (SmoothGrad-squared over integrated gradients and
  guided backpropagation). pytorch-grad-cam's ``aug_smooth`` (test-time augmentation with
  ttach: horizontal flips and input scaling).
"""

from __future__ import annotations

import functools
import math
import numbers
from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxviz import _random, capture, checks
from jaxviz import objectives as objectives_lib
from jaxviz.attribution._common import (Target, _auto_batch_size, _check_batch_size,
                                        _check_choice, _check_x, _compiled, _copies_grad_jit,
                                        _copies_values, _objective)
from jaxviz.attribution.cam import resize
from jaxviz.attribution.gradients import (SMOOTHGRAD_VARIANTS, _chunk_moments, _Moments,
                                          _Noise)
from jaxviz._host import to_device
from jaxviz.errors import InputError, InputTypeError, JaxvizError


def _tiled_target(target: Target, reps: int, n: int) -> tuple[bool, Target]:
    """``(ok, target)`` for a batch of ``reps`` copy-major copies of ``n`` examples;
    ``ok`` is False when the target cannot follow such a batch (a plain callable)."""
    if target is None or isinstance(target, numbers.Integral):
        return True, target
    if isinstance(target, objectives_lib.Objective):
        tiled = target.tile(reps)
        return tiled is not None, tiled
    if callable(target):
        return False, target
    t = np.asarray(target)
    if t.ndim == 0:
        return True, target
    if t.ndim == 1 and t.shape[0] == n:
        return True, to_device(np.tile(t, reps), copy=False)
    return True, target  # the method reports what is wrong with it


def _runs_on(model: nn.Module, shape: tuple[int, ...]) -> bool:
    """Whether ``model`` runs on inputs of ``shape`` (an abstract pass, cached)."""
    try:
        capture.output_struct(model, shape)
    except JaxvizError:
        return False
    return True


@checks.boundary
def noise_tunnel(method: Callable, /, model: nn.Module, variables: Any, x: jax.Array,
                 target: Target = None, *, key: jax.Array | None = None, samples: int = 50,
                 noise: float = 0.15, stdev: float | None = None,
                 noise_samples: jax.Array | None = None, variant: str = "plain",
                 batch_size: int | None = 8, **kwargs: Any) -> jax.Array:
    """Any attribution method averaged over noisy copies of the input (SmoothGrad's idea
    as a combinator: SmoothGrad of integrated gradients, of guided backpropagation, of
    Grad-CAM, ...).

    With ``x_s = x + sigma_n eps_s`` and ``sigma_n`` and ``eps_s`` exactly as in
    :func:`jaxviz.attribution.smoothgrad` (same ``key`` gives the same draws), and
    ``R_s = method(model, variables, x_s, target, **kwargs)``: ``"plain"`` returns
    ``mean_s R_s``, ``"squared"`` ``mean_s R_s**2``, ``"vargrad"`` ``var_s R_s`` and
    ``"abs"`` ``mean_s |R_s|``. ``noise_tunnel(gradient, ...)`` equals ``smoothgrad``.

    The copies run as one batch: ``batch_size`` draws at a time, each call of ``method``
    on ``batch_size * N`` images, with the target repeated to match (an int, an (N,)
    array, or an objective that can follow copies; a plain callable target runs one
    draw per call instead). Keyword arrays of ``x``'s rank whose first axis is N (a
    per-example baseline) are repeated the same way; every other keyword is passed
    unchanged.

    Args:
      method: a function ``(model, variables, x, target, **kwargs) -> array`` with one
        row per example: any of ``jaxviz.attribution``'s, or your own. Positional only,
        so ``**kwargs`` may hold the method's own ``method=`` (integrated gradients').
      model, variables, x, target: passed to ``method`` (``target`` may be None for a
        method that takes none, such as :func:`jaxviz.attribution.eigen_cam`).
      key, samples, noise, stdev, noise_samples, variant: as
        :func:`jaxviz.attribution.smoothgrad`.
      batch_size: draws per call of ``method``; None runs all draws in one call.
      **kwargs: passed to ``method`` (``layer=``, ``steps=``, ...).

    Returns:
      The method's output shape, in its dtype.

    Raises:
      TypeError: ``method`` is not callable; neither ``key`` nor ``noise_samples``.
      ValueError: ``method`` returns a tuple or not one row per example; as
        :func:`jaxviz.attribution.smoothgrad`.
    """
    if not callable(method):
        raise InputTypeError(f"expected method as an attribution function such as "
                             f"jaxviz.attribution.integrated_gradients, got {method!r}")
    x = _check_x(model, x)
    _check_choice(variant, SMOOTHGRAD_VARIANTS, "noise tunnel variant")
    plan = _Noise(x, key, samples, noise, stdev, noise_samples, "noise_tunnel")
    chunk = _check_batch_size(batch_size, plan.samples)
    n = x.shape[0]
    batched, tiled = _tiled_target(target, chunk, n)
    if batched and not _runs_on(model, (chunk * n, *x.shape[1:])):
        batched = False  # a model that closes over per-example arrays: one draw per call
    tiled_kwargs = _tiled_kwargs(kwargs, x, chunk)
    run = functools.partial(_run_method, method, "noise_tunnel", model, variables)

    moments = _Moments(variant)
    for start in range(0, plan.samples, chunk):
        k = min(chunk, plan.samples - start)
        noisy = x[None] + plan.sigma[None] * plan.draws(start, k, chunk)     # (chunk, N, ...)
        if batched:
            flat = noisy.reshape(chunk * n, *x.shape[1:])
            out = run(flat, tiled, tiled_kwargs, chunk * n)
            out = out.reshape(chunk, n, *out.shape[1:])
        else:
            out = jnp.stack([run(noisy[s], target, kwargs, n) for s in range(k)])
            out = jnp.concatenate([out, jnp.zeros((chunk - k, *out.shape[1:]), out.dtype)])
        moments.add(*_chunk_moments(variant, out, jnp.arange(chunk) < k), k)
    return moments.result()


def _tiled_kwargs(kwargs: dict[str, Any], x: jax.Array, reps: int) -> dict[str, Any]:
    """``kwargs`` with each array of ``x``'s rank whose first axis is N (a per-example
    baseline) repeated for ``reps`` copy-major copies of the batch."""
    n = x.shape[0]
    per_example = {name: value for name, value in kwargs.items()
                   if getattr(value, "ndim", None) == x.ndim and value.shape[0] == n and n > 1}
    return {**kwargs, **{name: jnp.concatenate([jnp.asarray(v)] * reps)
                         for name, v in per_example.items()}}


def _run_method(method, caller, model, variables, inputs, target, kwargs, rows):
    """``method``'s one array with a row per example, or a ValueError naming ``caller``."""
    out = method(model, variables, inputs, target, **kwargs)
    if isinstance(out, (tuple, list)) or getattr(out, "shape", (None,))[0] != rows:
        what = (f"a {type(out).__name__}" if isinstance(out, (tuple, list))
                else f"shape {getattr(out, 'shape', type(out).__name__)}")
        raise InputError(f"{caller} needs a method that returns one array with a row per "
                         f"example ({rows}); {getattr(method, '__name__', 'method')} returned "
                         f"{what}")
    return out


# --- test-time augmentation -----------------------------------------------------------------------

AUG_FACTORS = (0.9, 1.0, 1.1)


@functools.partial(jax.jit, static_argnums=1)
def _augmented(x: jax.Array, copies: tuple[tuple[bool, float], ...]) -> jax.Array:
    """The copies of ``x`` copy-major: each flipped left-right or not, times its factor."""
    return jnp.concatenate([(x[:, :, ::-1] if flipped else x) * jnp.asarray(c, x.dtype)
                            for flipped, c in copies])


@functools.partial(jax.jit, static_argnums=1)
def _restored_mean(out: jax.Array, copies: tuple[tuple[bool, float], ...]) -> jax.Array:
    """The mean over copies of ``out`` (copies, N, H, W, ...), flipped copies flipped back."""
    return jnp.mean(jnp.stack([o[:, :, ::-1] if flipped else o
                               for o, (flipped, _) in zip(out, copies)]), axis=0)


@checks.boundary
def aug_smooth(method: Callable, /, model: nn.Module, variables: Any, x: jax.Array,
               target: Target = None, *, hflip: bool = True,
               factors: Sequence[float] = AUG_FACTORS, **kwargs: Any) -> jax.Array:
    """Any map-making method averaged over flipped and scaled copies of the input
    (test-time augmentation; pytorch-grad-cam's ``aug_smooth=True``).

    For each horizontal flip ``f`` (none, then left-right; only none with
    ``hflip=False``) and each factor ``c`` of ``factors``, ``R = method(model,
    variables, f(c * x), target, **kwargs)`` is flipped back by ``f``; the result is the
    mean of the ``2 * len(factors)`` maps. The defaults are pytorch-grad-cam's (ttach's
    ``HorizontalFlip()`` and ``Multiply([0.9, 1, 1.1])``, applied to the input as given,
    ImageNet-normalized or not), so ``aug_smooth(grad_cam, ..., layer=l,
    normalize="minmax")`` is its ``GradCAM(...)(x, targets, aug_smooth=True)``.

    The copies run as one batch of ``copies * N`` images with the target repeated to
    match (an int, an (N,) array, or an objective that can follow copies; a plain
    callable target runs one copy per call instead). Keyword arrays of ``x``'s rank
    whose first axis is N are repeated the same way.

    Args:
      method: ``(model, variables, x, target, **kwargs) -> array`` with one row per
        example and the image's height and width on axes 1 and 2: ``(N, H, W)`` maps
        (the CAMs) or ``(N, H, W, C)`` (the gradient methods). Positional only.
      model, variables, x, target: passed to ``method``; ``x`` is (N, H, W, C) images.
      hflip: include the left-right flipped copies (default True).
      factors: what the input is multiplied by, one copy each (default 0.9, 1, 1.1).
      **kwargs: passed to ``method`` (``layer=``, ``normalize=``, ...).

    Returns:
      The method's output shape, in its dtype.

    Raises:
      TypeError: ``method`` is not callable.
      ValueError: ``x`` is not a batch of images; ``factors`` empty or not finite
        numbers; ``hflip`` not a bool; ``method`` returns a tuple, not one row per
        example, or no image axes to flip back.
    """
    if not callable(method):
        raise InputTypeError(f"expected method as an attribution function such as "
                             f"jaxviz.attribution.grad_cam, got {method!r}")
    if not isinstance(hflip, bool):
        raise InputError(f"expected hflip as True or False, got {hflip!r}")
    given = factors
    try:
        factors = tuple(float(c) for c in given)
    except (TypeError, ValueError):
        factors = ()
    if not factors or not all(math.isfinite(c) for c in factors):
        raise InputError(f"expected factors as a non-empty sequence of finite numbers, got "
                         f"{given!r}")
    x = _check_x(model, x, images=True)
    copies = tuple((flipped, c) for flipped in ((False, True) if hflip else (False,))
                   for c in factors)
    n, reps = x.shape[0], len(copies)
    batched, tiled = _tiled_target(target, reps, n)
    if batched and not _runs_on(model, (reps * n, *x.shape[1:])):
        batched = False  # a model that closes over per-example arrays: one copy per call
    run = functools.partial(_run_method, method, "aug_smooth", model, variables)
    inputs = _augmented(x, copies)
    if batched:
        out = run(inputs, tiled, _tiled_kwargs(kwargs, x, reps), reps * n)
        out = out.reshape(reps, n, *out.shape[1:])
    else:
        out = jnp.stack([run(inputs[i * n:(i + 1) * n], target, kwargs, n)
                         for i in range(reps)])
    if out.ndim < 4 or out.shape[3] != x.shape[2]:
        raise InputError(f"aug_smooth flips the maps back along their width: expected "
                         f"(N, H, W) or (N, H, W, C) maps with W = {x.shape[2]}, got "
                         f"{out.shape[1:]} per copy ({getattr(method, '__name__', 'method')} "
                         f"with resize=None keeps the layer's size)")
    return _restored_mean(out, copies)


# --- GradientSHAP ---------------------------------------------------------------------------------


@jax.jit
def _shap_sum(g, diffs, mask):
    """sum over a chunk's valid samples of ``g * diffs``: (N, H, W, C)."""
    m = mask.astype(g.dtype).reshape(-1, *([1] * (g.ndim - 1)))
    return (m * g * diffs).sum(0)


@checks.boundary
def gradient_shap(model: nn.Module, variables: Any, x: jax.Array, target: Target, *,
                  baselines: Any, key: jax.Array | None = None, samples: int = 5,
                  stdev: float = 0.0, draws: tuple[Any, Any] | None = None,
                  noise_samples: jax.Array | None = None,
                  batch_size: int | None = None) -> jax.Array:
    """GradientSHAP (Lundberg & Lee 2017, as Captum computes it): expected gradients
    times input minus baseline, over baselines drawn from a set and random points
    between.

    For sample ``s`` of example ``n``: a baseline ``b = baselines[i_sn]``, a position
    ``a_sn ~ U(0, 1)``, the noisy input ``x~ = x[n] + stdev * eps_sn`` and
    ``G_sn = grad f_n(b + a_sn (x~ - b)) * (x~ - b)``; the result is ``mean_s G_sn``.
    Its sum approaches ``f_n(x) - mean_b f_n(b)`` (completeness in expectation).

    Args:
      model, variables, x, target: as :func:`jaxviz.attribution.gradient`.
      baselines: (B, H, W, C) reference inputs to draw from (one (H, W, C) baseline
        counts as B = 1).
      key: PRNG key for the draws (baseline indices, positions, noise); required unless
        ``draws`` is given.
      samples: samples per example (Captum's ``n_samples=5``).
      stdev: standard deviation of the noise added to x (Captum's ``stdevs=0.0``).
      draws: ``(indices (S, N) ints, positions (S, N) in [0, 1])``: your own draws
        instead of ``key``'s (to share them with another library).
      noise_samples: (S, N, H, W, C) standard-normal draws for the noise (with
        ``draws``, when ``stdev`` > 0).
      batch_size: samples per compiled chunk (each chunk runs ``batch_size * N``
        images); None runs all samples in one chunk.

    Returns:
      (N, H, W, C), in ``x``'s dtype.

    Raises:
      TypeError: neither ``key`` nor ``draws``.
      ValueError: baselines of another image shape; draws of the wrong shape or out of
        range; a negative ``stdev``; as :func:`jaxviz.attribution.gradient`.
    """
    x = _check_x(model, x, images=True)
    n = x.shape[0]
    b = jnp.asarray(baselines, x.dtype)
    if b.ndim == x.ndim - 1:
        b = b[None]
    if b.ndim != x.ndim or tuple(b.shape[1:]) != tuple(x.shape[1:]) or b.shape[0] < 1:
        raise InputError(f"expected baselines of shape (B, {', '.join(map(str, x.shape[1:]))}); "
                         f"got {tuple(jnp.shape(baselines))}")
    if isinstance(stdev, bool) or not isinstance(stdev, numbers.Real) or stdev < 0:
        raise InputError(f"expected stdev as a non-negative number, got {stdev!r}")
    if draws is not None:
        try:
            indices, positions = (np.asarray(d) for d in draws)
        except (TypeError, ValueError):
            raise InputError("expected draws as (indices (S, N), positions (S, N))") from None
        if (indices.ndim != 2 or indices.shape[1] != n or positions.shape != indices.shape
                or indices.dtype.kind not in "iu"):
            raise InputError(f"expected draws as (indices, positions): int and float arrays of "
                             f"shape (S, {n}); got {indices.shape} {indices.dtype} and "
                             f"{positions.shape}")
        if indices.min() < 0 or indices.max() >= b.shape[0]:
            raise InputError(f"baseline indices must be in [0, {b.shape[0]}); got "
                             f"{indices.min()}..{indices.max()}")
        samples = indices.shape[0]
        eps = None if noise_samples is None else jnp.asarray(noise_samples, x.dtype)
        if eps is None and stdev > 0:
            raise InputTypeError("with draws and stdev > 0, pass the noise as noise_samples")
        indices, positions = jnp.asarray(indices), jnp.asarray(positions, x.dtype)
    else:
        if key is None:
            raise InputTypeError("gradient_shap draws baselines and positions: pass "
                                 "key=jax.random.key(seed), or draws=(indices, positions)")
        samples = checks.positive_int(samples, "samples")
        k_index, k_position, k_noise = jax.random.split(key, 3)
        indices = _random.randint(k_index, (samples, n), 0, b.shape[0])
        positions = _random.uniform(k_position, (samples, n), x.dtype)
        eps = _random.normal(k_noise, (samples, *x.shape), x.dtype) if stdev > 0 else None
    if eps is not None and tuple(eps.shape) != (samples, *x.shape):
        raise InputError(f"expected noise_samples of shape {(samples, *x.shape)}; got "
                         f"{tuple(eps.shape)}")
    obj = _objective(model, x, target)
    chunk = _check_batch_size(batch_size, samples)
    noisy = x[None] if eps is None else x[None] + jnp.asarray(stdev, x.dtype) * eps
    noisy = jnp.broadcast_to(noisy, (samples, *x.shape))
    chosen = b[indices]                                                  # (S, N, H, W, C)
    diffs = noisy - chosen
    points = chosen + positions.reshape(samples, n, *([1] * (x.ndim - 1))) * diffs
    total = None
    for start in range(0, samples, chunk):
        k = min(chunk, samples - start)
        pad = [(0, chunk - k)] + [(0, 0)] * x.ndim
        g = _copies_grad_jit(model, variables, jnp.pad(points[start:start + k], pad), obj)
        part = _shap_sum(g, jnp.pad(diffs[start:start + k], pad), jnp.arange(chunk) < k)
        total = part if total is None else total + part
    return (total / samples).astype(x.dtype)


# --- RISE ------------------------------------------------------------------------------------------


def rise_masks(key: jax.Array, count: int, size: tuple[int, int], *, cells: int = 7,
               p: float = 0.5, dtype: Any = jnp.float32) -> jax.Array:
    """RISE's random masks (Petsiuk et al. 2018): (count, H, W) in [0, 1].

    Each mask is a ``cells x cells`` grid of independent Bernoulli(``p``) values,
    upsampled bilinearly (half-pixel centres, edges held) to ``(cells + 1) * c`` with
    ``c = ceil(size / cells)`` per axis, then cropped to ``size`` at a random offset in
    ``[0, c)`` per axis, so that the mask's cells do not align with the image's grid.
    (The paper's code resizes with scikit-image's reflecting edges; here the edges are
    held, which changes the outermost half cell of the upsampled grid.)

    Raises:
      ValueError: a non-positive count or cells; ``p`` outside (0, 1].
    """
    count = checks.positive_int(count, "count")
    cells = checks.positive_int(cells, "cells")
    if isinstance(p, bool) or not isinstance(p, numbers.Real) or not 0 < p <= 1:
        raise InputError(f"expected p as a probability in (0, 1], got {p!r}")
    h, w = (int(s) for s in size)
    ch, cw = -(-h // cells), -(-w // cells)
    k_grid, k_shift = jax.random.split(key)
    grid = (_random.uniform(k_grid, (count, cells, cells)) < p).astype(dtype)
    up = resize(grid, ((cells + 1) * ch, (cells + 1) * cw), "bilinear")
    shifts = _random.randint(k_shift, (count, 2), 0, jnp.array([ch, cw]))

    def crop(mask, shift):
        return jax.lax.dynamic_slice(mask, (shift[0], shift[1]), (h, w))

    return jax.vmap(crop)(up, shifts)


def _rise_chunk(model, variables, x, masks, valid, objective):
    """sum_k f(x * M_k) M_k over the chunk's valid masks: (N, H, W)."""
    scores = _copies_values(model, variables, x[None] * masks[:, None, :, :, None], objective)
    scores = scores * valid.astype(scores.dtype)[:, None]
    return jnp.einsum("kn,khw->nhw", scores, masks)


_rise_jit = _compiled(_rise_chunk, 1)


@checks.boundary
def rise(model: nn.Module, variables: Any, x: jax.Array, target: Target, *,
         key: jax.Array | None = None, samples: int = 4000, cells: int = 7, p: float = 0.5,
         masks: jax.Array | None = None, batch_size: int | str | None = "auto") -> jax.Array:
    """RISE (Petsiuk et al. 2018): the target's value under random masks, averaged per pixel.

    ``S[n] = sum_k f_n(x[n] * M_k) M_k / (K p)`` over K masks (:func:`rise_masks`, the
    same for every example), the paper's Monte Carlo estimate of
    ``E[f(x * M) | M(pixel) = 1]``. No gradient: any model works.

    Args:
      model, variables, x, target: as :func:`jaxviz.attribution.gradient`.
      key: PRNG key for the masks; required unless ``masks`` is given.
      samples: number of masks K (the paper uses 4000 to 8000).
      cells, p: the masks' grid size and the probability that a cell is kept.
      masks: (K, H, W) masks to use instead of drawing them (``p`` still divides).
      batch_size: masks per compiled chunk (each chunk runs ``batch_size * N`` images);
        ``"auto"`` (default): 64, or on the CPU fewer when x holds more than 4 images
        (about 256 images a chunk, as :func:`jaxviz.attribution.occlusion`); None: one
        chunk.

    Returns:
      (N, H, W), in ``x``'s dtype.

    Raises:
      TypeError: neither ``key`` nor ``masks``.
      ValueError: masks of another size; as :func:`rise_masks` and
        :func:`jaxviz.attribution.gradient`.
    """
    x = _check_x(model, x, images=True)
    h, w = x.shape[1:3]
    if masks is None:
        if key is None:
            raise InputTypeError("rise draws random masks: pass key=jax.random.key(seed), or "
                                 "the masks themselves as masks=(K, H, W)")
        masks = rise_masks(key, samples, (h, w), cells=cells, p=p, dtype=x.dtype)
    else:
        masks = jnp.asarray(masks, x.dtype)
        if masks.ndim != 3 or tuple(masks.shape[1:]) != (h, w) or masks.shape[0] < 1:
            raise InputError(f"expected masks of shape (K, {h}, {w}); got {tuple(masks.shape)}")
        if isinstance(p, bool) or not isinstance(p, numbers.Real) or not 0 < p <= 1:
            raise InputError(f"expected p as a probability in (0, 1], got {p!r}")
    obj = _objective(model, x, target)
    count = masks.shape[0]
    chunk = _auto_batch_size(batch_size, count, x.shape[0], 64)
    total = None
    for start in range(0, count, chunk):
        k = min(chunk, count - start)
        part = masks[start:start + k]
        if k < chunk:
            part = jnp.concatenate([part, jnp.zeros((chunk - k, h, w), part.dtype)])
        s = _rise_jit(model, variables, x, part, jnp.arange(chunk) < k, obj)
        total = s if total is None else total + s
    return (total / (count * jnp.asarray(p, x.dtype))).astype(x.dtype)


__all__ = ["gradient_shap", "noise_tunnel", "rise", "rise_masks"]

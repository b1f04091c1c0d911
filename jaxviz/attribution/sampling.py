"""Sampling methods: attributions averaged over random copies of the input.

References:
  Smilkov et al., "SmoothGrad: removing noise by adding noise", arXiv:1706.03825, 2017
  (noise over any method). Adebayo et al., "Sanity Checks for Saliency Maps", NeurIPS
  2018 (VarGrad). Hooker et al., "A Benchmark for Interpretability Methods in Deep
  Neural Networks", NeurIPS 2019 (SmoothGrad-squared over integrated gradients and
  guided backpropagation).
"""

from __future__ import annotations

import numbers
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxviz import checks
from jaxviz import objectives as objectives_lib
from jaxviz.attribution._common import Target, _check_batch_size, _check_choice, _check_x
from jaxviz.attribution.gradients import (SMOOTHGRAD_VARIANTS, _chunk_moments, _Moments,
                                          _Noise)
from jaxviz.errors import InputError, InputTypeError


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
        return True, jnp.asarray(np.tile(t, reps))
    return True, target  # the method reports what is wrong with it


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
    per_example = {name: value for name, value in kwargs.items()
                   if getattr(value, "ndim", None) == x.ndim and value.shape[0] == n and n > 1}
    tiled_kwargs = {**kwargs, **{name: jnp.concatenate([jnp.asarray(v)] * chunk)
                                 for name, v in per_example.items()}}
    name = getattr(method, "__name__", "method")

    def run(inputs, tgt, kw, rows):
        out = method(model, variables, inputs, tgt, **kw)
        if isinstance(out, (tuple, list)) or getattr(out, "shape", (None,))[0] != rows:
            what = (f"a {type(out).__name__}" if isinstance(out, (tuple, list))
                    else f"shape {getattr(out, 'shape', type(out).__name__)}")
            raise InputError(f"noise_tunnel needs a method that returns one array with a row "
                             f"per example ({rows}); {name} returned {what}")
        return out

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


__all__ = ["noise_tunnel"]

"""Adversarial examples: small input changes that change a network's decision.

- :func:`gradient_ascent`: ``x_{k+1} = x_k + lr * grad_x CE(f(x_k), y)``, plain SGD on the
  negated cross-entropy, with the predicted class recorded at every iteration (Szegedy et
  al. 2014's observation, in its simplest form).
- :func:`fgsm`: one step of ``eps * sign(grad)`` (Goodfellow, Shlens & Szegedy 2015).
- :func:`pgd`: iterated steps projected back onto an L-infinity or L2 ball of radius
  ``eps`` around x (Madry et al. 2018).
- :func:`relative_norm`: ``||x - x_adv|| / ||x||`` per example.
- :func:`sphere_check`: the labels of ``n`` random points on the sphere of radius
  ``scale * ||x - x_adv||`` around x, drawn and classified in one vmapped call.

Every function takes a batch ``x (N, ...)`` and labels ``(N,)``; the loss is summed over
the batch, so each example moves as if it were attacked alone. ``preprocess`` maps the
attacked input to the model's input (default: the identity; pass
``jaxviz.data.normalize`` to attack [0, 1] images of an ImageNet model), and
``clip=(low, high)`` keeps the attacked input in a valid range.

References:
  Szegedy et al., "Intriguing properties of neural networks", ICLR 2014.
  Goodfellow, Shlens & Szegedy, "Explaining and Harnessing Adversarial Examples", ICLR 2015.
  Madry et al., "Towards Deep Learning Models Resistant to Adversarial Attacks", ICLR 2018.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxviz import _random, checks, objectives
from jaxviz import static as static_lib
from jaxviz.errors import InputError, ModelError

NORMS = ("linf", "l2")


def _identity(x):
    return x


def _check(model: nn.Module, x: Any, labels: Any,
           preprocess: Callable | None) -> tuple[jax.Array, jax.Array]:
    """``x`` checked as the model's input (as it comes, or after ``preprocess``) and
    ``labels`` as (N,) classes in range."""
    x = checks.batch(x, model if preprocess is None else None)
    if x.ndim < 2:
        raise InputError(f"expected a batch x of shape (N, ...), got shape {tuple(x.shape)}")
    seen = x if preprocess is None else jax.eval_shape(preprocess, x)
    if preprocess is not None:
        checks.shape(seen, model, what="preprocess(x)")
    labels = checks.as_array(labels, "labels")
    if labels.shape != (x.shape[0],) or not jnp.issubdtype(labels.dtype, jnp.integer):
        raise InputError(f"expected int labels of shape ({x.shape[0]},), got {labels.dtype} "
                         f"{tuple(labels.shape)}")
    out = objectives.output_shape(model, seen.shape)
    if len(out) != 2:
        raise ModelError(f"an attack needs a classifier returning (N, classes) logits; "
                         f"{type(model).__name__} returns shape {out}")
    bad = np.asarray(labels)[(np.asarray(labels) < 0) | (np.asarray(labels) >= out[1])]
    if bad.size:
        raise InputError(f"label {int(bad[0])} is out of range for {out[1]} classes: expected "
                         f"0 <= label < {out[1]}")
    return x, jnp.asarray(labels, jnp.int32)


def _loss(model, variables, preprocess, x, labels):
    logits = model.apply(variables, preprocess(x))
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels).sum(), logits


def _clip(x, clip):
    return x if clip is None else jnp.clip(x, clip[0], clip[1])


def _per_example_norm(v: jax.Array) -> jax.Array:
    return jnp.sqrt((v.reshape(v.shape[0], -1) ** 2).sum(1))


def distance(x: jax.Array, x_adv: jax.Array) -> jax.Array:
    """``||x - x_adv||_2`` per example: (N,)."""
    return _per_example_norm(jnp.asarray(x_adv) - jnp.asarray(x))


def relative_norm(x: jax.Array, x_adv: jax.Array) -> jax.Array:
    """``||x - x_adv||_2 / ||x||_2`` per example: (N,)."""
    return _per_example_norm(x_adv - x) / _per_example_norm(x)


class Attack(NamedTuple):
    """An attack's outcome.

    Attributes:
      x: (N, ...) the adversarial inputs.
      predictions: (steps + 1, N) predicted class before each step and after the last
        (row 0 is the original prediction).
      relative_norm: (N,) ``||x - x_adv|| / ||x||``.
      flipped: (N,) bool, whether the final prediction differs from the label.
    """

    x: jax.Array
    predictions: jax.Array
    relative_norm: jax.Array
    flipped: jax.Array


@functools.partial(jax.jit, static_argnums=(0, 5, 6, 7, 8, 9))
def _ascent(model, variables, x, labels, lr, steps, preprocess, clip, normalize, stop):
    model = static_lib.unwrap(model)

    def step(xk, _):
        (_, logits), g = jax.value_and_grad(
            lambda t: _loss(model, variables, preprocess, t, labels), has_aux=True)(xk)
        if normalize == "sign":
            g = jnp.sign(g)
        pred = jnp.argmax(logits, -1)
        moved = _clip(xk + lr * g, clip)
        if stop:  # examples already misclassified stay where they are
            keep = (pred != labels).reshape(-1, *([1] * (x.ndim - 1)))
            moved = jnp.where(keep, xk, moved)
        return moved, pred

    x_adv, preds = jax.lax.scan(step, x, None, length=steps)
    last = jnp.argmax(model.apply(variables, preprocess(x_adv)), -1)
    return x_adv, jnp.concatenate([preds, last[None]])


@checks.boundary
def gradient_ascent(model: nn.Module, variables: Any, x: jax.Array, labels: jax.Array, *,
                    lr: float = 0.1, steps: int = 15,
                    preprocess: Callable[[jax.Array], jax.Array] | None = None,
                    clip: tuple[float, float] | None = None,
                    stop_at_flip: bool = False) -> Attack:
    """``steps`` SGD steps of size ``lr`` up the cross-entropy of ``labels``.

    Args:
      model, variables: a classifier returning (N, classes) logits.
      x: (N, ...) inputs; labels: (N,) the classes to move away from (usually the
        model's own predictions).
      lr, steps: step size and number of steps (defaults: 0.1 and 15).
      preprocess: input -> model input (default identity).
      clip: optional (low, high) range for the attacked input.
      stop_at_flip: leave an example unchanged once it is misclassified (the smallest
        perturbation this path finds), instead of taking all ``steps`` steps.

    Returns:
      An :class:`Attack` with the per-iteration predictions.
    """
    x, labels = _check(model, x, labels, preprocess)
    steps = checks.positive_int(steps, "steps")
    pre = preprocess or _identity
    x_adv, preds = _ascent(static_lib.static(model), variables, x, labels,
                           jnp.asarray(lr, x.dtype), steps,
                           pre, None if clip is None else tuple(clip), "none", bool(stop_at_flip))
    return Attack(x_adv, preds, relative_norm(x, x_adv), preds[-1] != labels)


@checks.boundary
def fgsm(model: nn.Module, variables: Any, x: jax.Array, labels: jax.Array, *, eps: float,
         preprocess: Callable | None = None, clip: tuple[float, float] | None = None) -> Attack:
    """The fast gradient sign method: ``x + eps * sign(grad_x CE)``."""
    x, labels = _check(model, x, labels, preprocess)
    pre = preprocess or _identity
    x_adv, preds = _ascent(static_lib.static(model), variables, x, labels,
                           jnp.asarray(eps, x.dtype), 1, pre,
                           None if clip is None else tuple(clip), "sign", False)
    return Attack(x_adv, preds, relative_norm(x, x_adv), preds[-1] != labels)


@functools.partial(jax.jit, static_argnums=(0, 6, 7, 8, 9))
def _pgd(model, variables, x, labels, eps, step_size, steps, norm, preprocess, clip):
    model = static_lib.unwrap(model)

    def project(xk):
        d = xk - x
        if norm == "linf":
            d = jnp.clip(d, -eps, eps)
        else:
            n = _per_example_norm(d).reshape(-1, *([1] * (x.ndim - 1)))
            d = d * jnp.minimum(1.0, eps / jnp.maximum(n, 1e-12))
        return _clip(x + d, clip)

    def step(xk, _):
        (_, logits), g = jax.value_and_grad(
            lambda t: _loss(model, variables, preprocess, t, labels), has_aux=True)(xk)
        if norm == "linf":
            g = jnp.sign(g)
        else:
            g = g / jnp.maximum(_per_example_norm(g), 1e-12).reshape(-1, *([1] * (x.ndim - 1)))
        return project(xk + step_size * g), jnp.argmax(logits, -1)

    x_adv, preds = jax.lax.scan(step, x, None, length=steps)
    last = jnp.argmax(model.apply(variables, preprocess(x_adv)), -1)
    return x_adv, jnp.concatenate([preds, last[None]])


@checks.boundary
def pgd(model: nn.Module, variables: Any, x: jax.Array, labels: jax.Array, *, eps: float,
        step_size: float | None = None, steps: int = 10, norm: str = "linf",
        preprocess: Callable | None = None, clip: tuple[float, float] | None = None) -> Attack:
    """Projected gradient ascent within ``||x_adv - x|| <= eps`` (``norm`` "linf" or "l2").

    Each step moves by ``step_size`` (default ``2.5 * eps / steps``) along the sign of the
    gradient (L-infinity) or its unit-L2 direction (L2), then projects onto the ball (and
    into ``clip``).

    Raises:
      InputError: unknown ``norm`` or a non-positive ``eps``; as :func:`gradient_ascent`.
    """
    if norm not in NORMS:
        raise InputError(f"unknown norm {norm!r}; expected one of {', '.join(NORMS)}")
    if not eps > 0:
        raise InputError(f"expected a positive eps, got {eps!r}")
    x, labels = _check(model, x, labels, preprocess)
    steps = checks.positive_int(steps, "steps")
    step_size = 2.5 * eps / steps if step_size is None else step_size
    x_adv, preds = _pgd(static_lib.static(model), variables, x, labels,
                        jnp.asarray(eps, x.dtype), jnp.asarray(step_size, x.dtype), steps, norm,
                        preprocess or _identity, None if clip is None else tuple(clip))
    return Attack(x_adv, preds, relative_norm(x, x_adv), preds[-1] != labels)


@functools.partial(jax.jit, static_argnums=(0, 5, 6, 7))
def _sphere(model, variables, x, radius, key, n, preprocess, chunk):
    model = static_lib.unwrap(model)

    def one(k):
        d = _random.normal(k, x.shape, x.dtype)
        d = d / _per_example_norm(d).reshape(-1, *([1] * (x.ndim - 1)))
        return jnp.argmax(model.apply(variables, preprocess(x + radius * d)), -1)

    return jax.lax.map(one, jax.random.split(key, n), batch_size=chunk)


@checks.boundary
def sphere_check(model: nn.Module, variables: Any, x: jax.Array, radius: jax.Array, *,
                 key: jax.Array, n: int = 1000, preprocess: Callable | None = None,
                 batch_size: int = 100) -> jax.Array:
    """Predicted classes of ``n`` random points on the sphere of ``radius[i]`` around each
    ``x[i]``: (n, N), drawn and classified in one jitted call, vmapped over
    ``batch_size`` points at a time (``lax.map``) to bound memory.

    With ``radius = 2 * ||x - x_adv||`` this is Szegedy et al.'s check that random
    perturbations twice as large as an adversarial one rarely change the label.
    """
    x = checks.batch(x, model if preprocess is None else None)
    n = checks.positive_int(n, "n")
    batch_size = checks.positive_int(batch_size, "batch_size")
    radius = checks.as_array(radius, "radius")
    try:
        radius = jnp.broadcast_to(jnp.asarray(radius, x.dtype), (x.shape[0],))
    except ValueError:
        raise InputError(f"expected radius as a scalar or one per example ({x.shape[0]},), got "
                         f"shape {tuple(radius.shape)}") from None
    checks.finite(radius, "radius")
    return _sphere(static_lib.static(model), variables, x,
                   radius.reshape(-1, *([1] * (x.ndim - 1))), key, n,
                   preprocess or _identity, min(batch_size, n))


def prediction_table(predictions: Any, class_names: Any = None) -> str:
    """The per-iteration predictions as a text table: one row per iteration, one column
    per example (class names when given)."""
    preds = np.asarray(predictions)
    name = (lambda c: str(c)) if class_names is None else (lambda c: str(class_names[int(c)]))
    rows = [["iteration"] + [f"example {i}" for i in range(preds.shape[1])]]
    rows += [[str(k)] + [name(c) for c in row] for k, row in enumerate(preds)]
    widths = [max(len(r[j]) for r in rows) for j in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows)


__all__ = ["Attack", "NORMS", "distance", "fgsm", "gradient_ascent", "pgd", "prediction_table",
           "relative_norm", "sphere_check"]

"""Models that take more than ``x``: extra call arguments bound into ``(model, variables)``.

Every jaxviz function calls ``model.apply(variables, x)``. A model whose ``__call__``
takes more (a mask, a second image, ``train=False``) is bound once::

    bound, bound_variables = jaxviz.bind(model, variables, mask, train=False)
    jaxviz.attribution.integrated_gradients(bound, bound_variables, x, target)

and ``bound.apply(bound_variables, x)`` is ``model.apply(variables, x, mask,
train=False)``. Arrays (anything with a shape and at least one axis) are per-example
rows and travel in ``bound_variables`` under the ``"bound"`` collection, so they are
traced like the weights: a new mask does not recompile. Everything else (Python numbers,
strings, ``None``, 0-d arrays) is fixed, part of the model's static identity.

Methods that run copies of a batch as one flat batch (integrated gradients, SmoothGrad,
occlusion, the perturbation CAMs, DeepLIFT's inputs with their references) lay copies
out copy-major: ``K * N`` rows, example ``n`` of copy ``k`` at row ``k * N + n``.
A bound model seeing a batch of ``K * N`` rows with per-example arrays of ``N`` rows
tiles them ``K`` times the same way, so every method keeps its single large batch.
An array of one row is shared by every example. See docs/architecture.md, "Models that
take more than x".
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from jaxviz import rules as rules_lib
from jaxviz.errors import InputError
from jaxviz.models.modules import input_spec

COLLECTION = "bound"


def _key(position: int | str) -> str:
    return f"arg{position}" if isinstance(position, int) else position


class Bound(nn.Module):
    """``model`` with extra arguments of its ``__call__`` bound (build it with :func:`bind`).

    Attributes:
      model: the wrapped model; its variables and layer paths are unchanged (the
        wrapper shares its scope).
      arrays: ``(position, trailing shape, dtype)`` of each per-example array, a
        position being an int (positional argument after ``x``) or a keyword; its value
        is ``variables["bound"][name]`` (``arg<i>`` for positional ones).
      fixed: ``(position, value)`` of each static argument.
      rules: the backward rule last selected with ``clone(rules=...)``, which clones
        the wrapped model with it (None: the model's own).
    """

    model: nn.Module
    arrays: tuple = ()
    fixed: tuple = ()
    rules: str | None = None

    def clone(self, **updates):
        """Flax's ``clone``; ``rules=`` is passed on to the wrapped model (and fails
        here, with how to add one, when it has no ``rules`` field)."""
        if updates.get("rules") is not None:
            updates["model"] = rules_lib.with_rule(updates.get("model", self.model),
                                                   updates["rules"], "a backward rule")
        return super().clone(**updates)

    def setup(self):
        nn.share_scope(self, self.model)
        # init (a layer table's abstract pass) makes one shared row of zeros
        self.bound = {position: self.variable(COLLECTION, _key(position),
                                              lambda t=tail, d=dtype: jnp.zeros((1, *t), d))
                      for position, tail, dtype in self.arrays}

    def __call__(self, x):
        rows = x.shape[0]
        values: dict[int | str, Any] = dict(self.fixed)
        for position, variable in self.bound.items():
            values[position] = _tile(variable.value, rows, position)
        count = 1 + max((p for p in values if isinstance(p, int)), default=-1)
        args = [values[i] for i in range(count)]
        kwargs = {k: v for k, v in values.items() if isinstance(k, str)}
        return self.model(x, *args, **kwargs)

    def input_spec(self):
        return input_spec(self.model)

    def aliases(self) -> dict[str, str]:
        method = getattr(self.model, "aliases", None)
        return dict(method()) if callable(method) else {}


def _tile(a, rows: int, position: int | str):
    n = a.shape[0]
    if n in (rows, 1):
        return a
    if rows % n:
        raise InputError(f"bound argument {_key(position)!r} has {n} rows (one per example) "
                         f"but the model was called on a batch of {rows}, which is not a "
                         f"multiple of {n}")
    return jnp.tile(a, (rows // n,) + (1,) * (a.ndim - 1))


def _is_array(value: Any) -> bool:
    return hasattr(value, "shape") and hasattr(value, "dtype") and len(value.shape) > 0


def bind(model: nn.Module, variables: Any, *args: Any, **kwargs: Any) -> tuple[Bound, dict]:
    """``(bound, bound_variables)``: ``bound.apply(bound_variables, x)`` is
    ``model.apply(variables, x, *args, **kwargs)``.

    Arrays among ``args`` and ``kwargs`` are per-example (their first axis is the batch,
    of N rows, or 1 row shared by every example, as Captum's
    ``additional_forward_args``); they are traced inputs, so new values do not recompile.
    Other values are fixed: they take part in the model's identity, like a field.

    Every jaxviz function then takes ``(bound, bound_variables)``; methods that run
    ``K`` copies of the batch as one batch of ``K * N`` get the arrays tiled to match.
    Layer paths and aliases are the model's own. A model with a ``rules`` field keeps
    it: ``bound.clone(rules="guided")`` selects the rule of its ReLUs, so DeconvNet,
    guided backpropagation, LRP and DeepLIFT work too.

    Example::

        class Masked(nn.Module):          # a model that takes x and a mask
            @nn.compact
            def __call__(self, x, mask, *, scale=1.0):
                ...

        bound, bv = jaxviz.bind(model, variables, mask, scale=2.0)
        heat = jaxviz.attribution.occlusion(bound, bv, x, target, window=8)

    Raises:
      ValueError: ``variables`` is not a dict or already holds a ``"bound"`` collection.
    """
    if not isinstance(variables, dict) and not hasattr(variables, "items"):
        raise InputError(f"expected variables as a dict of collections (what model.init "
                         f"returns), got {type(variables).__name__}")
    if COLLECTION in variables:
        raise InputError(f"variables already hold a {COLLECTION!r} collection (a model bound "
                         f"twice?); bind every extra argument in one call")
    arrays, fixed, values = [], [], {}
    for position, value in [*enumerate(args), *kwargs.items()]:
        if _is_array(value):
            if _key(position) in values:  # a keyword named like a positional one's key
                raise InputError(
                    f"keyword argument {position!r} and positional argument "
                    f"{position[3:]} (after x) would both be stored as "
                    f"bound_variables[{COLLECTION!r}][{position!r}]: pass one of them "
                    f"by position or rename the keyword")
            a = jnp.asarray(value)
            arrays.append((position, tuple(a.shape[1:]), a.dtype))
            values[_key(position)] = a
        else:
            fixed.append((position, value))
    bound = Bound(model, tuple(arrays), tuple(fixed))
    return bound, {**variables, COLLECTION: values}


__all__ = ["Bound", "COLLECTION", "bind"]

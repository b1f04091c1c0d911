"""What every attribution family shares: argument checks and the compiled cores.

The cores are compiled once per model and input shape (``jaxviz.static.jit``), with
``variables``, ``x`` and the target's indices as arguments, so a new target or new
weights do not recompile. See docs/architecture.md, "Attribution".
"""

from __future__ import annotations

import contextlib
import numbers
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxviz import capture, checks
from jaxviz import rules as rules_lib
from jaxviz import static as static_lib
from jaxviz.errors import InputError, JaxvizError
from jaxviz.models.modules import input_spec
from jaxviz import objectives as objectives_lib

Target = Any  # int | int array (N,) | Objective | Callable[[model, variables, x], (N,)]


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


def _check_batch_size(batch_size: Any, total: int, accepted: str = "a positive int or None"
                      ) -> int:
    if batch_size is None:
        return total
    if (isinstance(batch_size, bool) or not isinstance(batch_size, numbers.Integral)
            or batch_size < 1):
        raise InputError(f"expected batch_size as {accepted}, got {batch_size!r}")
    return min(int(batch_size), total)


# On the CPU, "auto" chunks run about this many images a call: XLA:CPU runs a batch of many
# small images far slower per image than a few hundred (LeNet-digits' occlusion of 100
# images at 56 px, 81 windows: 17.3 s in chunks of 64 windows, 6,400 images a call; 6.0 s
# in chunks of 2, 200 images a call; the same map).
CPU_IMAGES_PER_CHUNK = 256


def _auto_batch_size(batch_size: Any, total: int, n: int, default: int) -> int:
    """Copies per compiled chunk for methods whose chunk runs ``chunk * n`` images:
    ``batch_size`` as given (an int, or None for one chunk), or for ``"auto"`` ``default``,
    lowered on the CPU so that a chunk runs about :data:`CPU_IMAGES_PER_CHUNK` images
    (a GPU or TPU keeps ``default``: large batches are what those run well)."""
    if isinstance(batch_size, str) and batch_size == "auto":
        chunk = default
        if jax.default_backend() == "cpu":
            chunk = max(1, min(default, CPU_IMAGES_PER_CHUNK // max(n, 1)))
        return min(chunk, total)
    return _check_batch_size(batch_size, total, "a positive int, None or 'auto'")


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


def _copies(run, xs, objective):
    """``run(xs_flat, objective)`` on ``xs: (S, N, ...)``, S variants of a batch of N, as
    one flat copy-major batch of S * N (one large convolution per layer, the fastest form
    on every backend) when the objective can follow such a batch
    (:meth:`Objective.tile`) and the model runs on it; else ``run`` vmapped over the S
    variants. A model that closes over per-example arrays of N rows cannot run on S * N
    rows: its shape error, raised while tracing, selects the vmapped form (see
    docs/architecture.md, "Models that take more than x")."""
    s, n = xs.shape[:2]
    tiled = objective.tile(s) if isinstance(objective, objectives_lib.Objective) else None
    if tiled is not None:
        try:
            out = run(xs.reshape(s * n, *xs.shape[2:]), tiled)
        except (TypeError, ValueError) as flat_error:  # shapes (of a closure) do not tile
            if isinstance(flat_error, JaxvizError):
                raise
        else:
            return out.reshape(s, n, *out.shape[1:])
    return jax.vmap(lambda t: run(t, objective))(xs)


def _copies_grad(model, variables, xs, objective) -> jax.Array:
    """Input gradients for ``xs: (S, N, H, W, C)``, S variants of a batch of N
    (:func:`_copies`)."""
    return _copies(lambda t, obj: _input_grad(model, variables, t, obj), xs, objective)


def _copies_values(model, variables, xs, objective) -> jax.Array:
    """Objective values (S, N) for ``xs: (S, N, H, W, C)`` (:func:`_copies`)."""
    return _copies(lambda t, obj: _values(model, variables, t, obj), xs, objective)


_compiled = static_lib.jit


_values_jit = _compiled(_values, 1)
_grad_jit = _compiled(_input_grad, 1)
# The network's gradient for a chunk of copies, compiled apart from what a method does with
# it (SmoothGrad's variants, integrated gradients' weights, GradientSHAP's differences), so
# those methods share one program per model, objective and chunk shape (docs/architecture.md,
# "Compile once").
_copies_grad_jit = _compiled(_copies_grad, 1)


LAYER_SIDES: tuple[str, ...] = ("output", "input")


def _pick(value: Any, index: int | None, path: str, side: str) -> Any:
    """The array a layer method works on: ``value`` (a module's output, or its positional
    arguments for ``side="input"``), or its ``index``-th element."""
    if side == "input":
        if not value:
            raise InputError(f"layer {path!r} is called with no positional input")
        if index is None and len(value) > 1:
            raise InputError(f"layer {path!r} takes {len(value)} positional inputs; pass "
                             f"index=0..{len(value) - 1} to choose one")
        index = 0 if index is None else index
    elif index is None:
        if isinstance(value, (tuple, list)):
            raise InputError(f"layer {path!r} returns a {type(value).__name__} of "
                             f"{len(value)}; pass index=0..{len(value) - 1} to choose one")
        return value
    if not isinstance(value, (tuple, list)) or not -len(value) <= index < len(value):
        count = len(value) if isinstance(value, (tuple, list)) else "a single array"
        raise InputError(f"index {index} is out of range for layer {path!r}'s {side} "
                         f"({count})")
    return value[index]


def _put(value: Any, index: int | None, new: Any, side: str) -> Any:
    """``value`` with the element :func:`_pick` chose replaced by ``new``."""
    if side == "output" and index is None:
        return new
    items = list(value)
    items[0 if index is None else index] = new
    return tuple(items) if side == "input" or isinstance(value, tuple) else items


def _at_layer(path: str, side: str, index: int | None, change):
    """An interceptor that passes the array chosen at ``path`` (its output, or one of its
    positional inputs) through ``change(array) -> array`` on every call of that module."""

    def hook(call, args, kwargs, context):
        if context.method_name != "__call__" or ".".join(context.module.path) != path:
            return call(*args, **kwargs)
        if side == "input":
            args = _put(args, index, change(_pick(args, index, path, side)), side)
            return call(*args, **kwargs)
        out = call(*args, **kwargs)
        return _put(out, index, change(_pick(out, index, path, side)), side)

    return hook


def _layer_struct(model, variables, x, path, side="output", index=None) -> jax.ShapeDtypeStruct:
    """Shape and dtype of the array ``side``/``index`` chooses at ``path`` (abstractly)."""
    if side == "output" and index is None:
        table = capture.layer_names(model, tuple(x.shape), partial=True)
        shape = next(info.shape for info in table if info.path == path)
        return jax.ShapeDtypeStruct(shape, x.dtype)
    seen = []

    def run(variables, x):
        def keep(a):
            if not hasattr(a, "shape"):
                raise InputError(f"layer {path!r}'s {side} is a {type(a).__name__}, not an array")
            seen.append(jax.ShapeDtypeStruct(a.shape, a.dtype))
            return a

        with nn.intercept_methods(_at_layer(path, side, index, keep)):
            return model.apply(variables, x)

    jax.eval_shape(run, variables, x)
    if not seen:
        raise InputError(f"layer {path!r} is not called in the forward pass")
    return seen[-1]


def _layers_gradient_core(model, wheres, variables, x, objective):
    """((A_1, dF/dA_1), ...) at the arrays each ``where = (path, side, index)`` of
    ``wheres`` chooses, F = sum_n f_n, from one forward and one backward pass.

    A zero array ``delta`` is added to each chosen array (a module's output, or one of
    its positional inputs) through ``flax.linen.intercept_methods``; the gradient with
    respect to ``delta`` is the gradient with respect to the array, for any Linen model.
    """
    structs = [_layer_struct(model, variables, x, *where) for where in wheres]

    def f(deltas):
        hits = [[] for _ in wheres]

        def adder(i, path):
            def add_delta(a):
                if getattr(a, "shape", None) != deltas[i].shape:
                    raise InputError(f"layer {path!r} gave {getattr(a, 'shape', type(a).__name__)}"
                                     f"; expected an array of shape {deltas[i].shape}")
                hits[i].append(a)
                return a + deltas[i].astype(a.dtype)
            return add_delta

        with contextlib.ExitStack() as stack:
            for i, (path, side, index) in enumerate(wheres):
                stack.enter_context(nn.intercept_methods(_at_layer(path, side, index,
                                                                   adder(i, path))))
            total = _values(model, variables, x, objective).sum()
        for (path, _, _), found in zip(wheres, hits):
            if not found:
                raise InputError(f"layer {path!r} is not computed on the way to the objective, "
                                 f"so the objective does not depend on it")
        return total, tuple(found[-1] for found in hits)

    grads, acts = jax.grad(f, has_aux=True)(tuple(jnp.zeros(s.shape, x.dtype) for s in structs))
    return tuple((a, g.astype(a.dtype)) for a, g in zip(acts, grads))


def _layer_gradient_core(model, where, variables, x, objective):
    """(A, dF/dA) at the array ``where = (path, side, index)`` chooses, F = sum_n f_n:
    :func:`_layers_gradient_core` for one layer."""
    return _layers_gradient_core(model, (where,), variables, x, objective)[0]


_layer_gradient_jit = _compiled(_layer_gradient_core, 2)
_layers_gradient_jit = _compiled(_layers_gradient_core, 2)


def _layer_gradients(model, wheres, variables, x, objective):
    """((A, dF/dA), ...) at each of ``wheres`` from one backward pass; one layer goes
    through :data:`_layer_gradient_jit`, the program :func:`layer_gradient` shares."""
    if len(wheres) == 1:
        return (_layer_gradient_jit(model, wheres[0], variables, x, objective),)
    return _layers_gradient_jit(model, wheres, variables, x, objective)


def _resolve_layer(model: nn.Module, x: jax.Array, layer: str) -> str:
    return capture.resolve(model, [layer], capture.layer_names(model, tuple(x.shape), partial=True))[0]


def _pair(value: Any, what: str) -> tuple[int, int]:
    if isinstance(value, (tuple, list)):
        if len(value) != 2:
            raise InputError(f"expected {what} as an int or an (h, w) pair, got {value!r}")
        return (checks.positive_int(value[0], what), checks.positive_int(value[1], what))
    v = checks.positive_int(value, what)
    return v, v


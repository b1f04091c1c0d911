"""Layer activations by name, for our models and for any Flax Linen model.

A layer is named by its module path joined with dots: for the ported models that is
the torchvision path (``features.10``, ``inception4c.branch2.1``), and each model
also accepts friendly aliases (``conv5``, ``relu4_3``, ``fc8``). For a user's Linen
model it is the Linen path (``Conv_0``, ``block1.Dense_0``).

Activations are the outputs of the modules' ``__call__``, collected with Linen's
``capture_intermediates`` (the equivalent of a torch forward hook, with no state left
behind). Models with a ``stop_at`` field (ours) return right after the last requested
layer, so nothing past it is computed, even eagerly.
"""

from __future__ import annotations

import difflib
import functools
import numbers
from collections.abc import Sequence
from typing import Any, NamedTuple

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxviz import checks
from jaxviz.errors import InputError, InputTypeError, LayerError, ModelError
from jaxviz.models.modules import input_spec
from jaxviz.static import jit as static_jit
from jaxviz.static import static, unwrap


class LayerInfo(NamedTuple):
    """One layer of a model, as listed by :func:`layer_names`.

    Attributes:
      path: dotted module path (torchvision's for the ported models).
      alias: the friendly name, or None.
      shape: output shape for one input image of the size asked for (NHWC for maps).
      kind: the module's class name ("Conv2d", "ReLU", "Inception", ...).
    """

    path: str
    alias: str | None
    shape: tuple[int, ...]
    kind: str


def aliases(model: nn.Module) -> dict[str, str]:
    """Friendly name -> module path, for models that define ``aliases()``; else empty."""
    method = getattr(model, "aliases", None)
    return dict(method()) if callable(method) else {}


def _intermediate_paths(tree: dict, prefix: tuple[str, ...] = ()):
    """(module path, outputs) for every captured ``__call__`` in a Linen 'intermediates' tree."""
    for key, value in tree.items():
        if key == "__call__":
            if prefix:
                yield prefix, value
        elif isinstance(value, dict):
            yield from _intermediate_paths(value, (*prefix, key))


class _Table(tuple):
    """Layers in forward order. ``error`` is set when the forward pass fails at this
    input size; the table then holds the layers it completed before failing.
    ``output`` is the model's output as ``jax.ShapeDtypeStruct`` leaves (None when the
    forward pass fails)."""

    error: Exception | None = None
    output: Any = None


class _LayerList(list):
    """:func:`layer_names`' list, carrying the table's ``error`` for :func:`resolve`."""

    error: Exception | None = None


def _recorder(model: nn.Module, reached: dict[str, LayerInfo]):
    """An interceptor that records each module's ``__call__`` as it returns: the forward
    (hook) order, children before their container; a module called twice keeps its last
    call."""
    alias_of: dict[str, str] = {}
    for alias, path in aliases(model).items():
        alias_of.setdefault(path, alias)

    def record(next_fun, args, kwargs, context):
        out = next_fun(*args, **kwargs)
        module = context.module
        if context.method_name == "__call__" and module.path:
            path = ".".join(module.path)
            reached.pop(path, None)
            reached[path] = LayerInfo(path, alias_of.get(path), tuple(getattr(out, "shape", ())),
                                      type(module).__name__)
        return out

    return record


def _trace_layer_table(model: nn.Module, shape: tuple[int, ...], dtype: Any) -> _Table:
    # Abstract passes only (jax.eval_shape): nothing is computed. model.init makes the
    # variables' shapes; model.apply with them is the inference forward pass, whose
    # layers make the table. (init also runs what only training uses, such as
    # GoogLeNet's auxiliary heads, to create their parameters: those are not listed.)
    # If a later layer fails at this input size, the layers init completed before it
    # make the table and the error is kept.
    x = jax.ShapeDtypeStruct(shape, dtype)
    at_init: dict[str, LayerInfo] = {}
    try:
        with nn.intercept_methods(_recorder(model, at_init)):
            variables = jax.eval_shape(model.init, jax.random.key(0), x)
    except (ValueError, TypeError) as e:  # too small for a layer (a pool, a conv)
        table = _Table(at_init.values())
        table.error = e
        return table
    at_apply: dict[str, LayerInfo] = {}
    try:
        with nn.intercept_methods(_recorder(model, at_apply)):
            output = jax.eval_shape(model.apply, variables, x)
    except (ValueError, TypeError, flax.errors.FlaxError):
        # apply needs more than (variables, x) (an rng, mutable state): init's layers
        at_apply, output = at_init, None
    table = _Table(at_apply.values())
    table.output = output
    return table


_cached_layer_table = functools.lru_cache(maxsize=64)(
    lambda key, shape, dtype: _trace_layer_table(unwrap(key), shape, dtype))


def _layer_table(model: nn.Module, shape: tuple[int, ...], dtype: Any) -> _Table:
    """The layer table of ``model`` at input ``shape``, cached per model (by value, or by
    structure for a model that cannot be hashed) and shape."""
    return _cached_layer_table(static(model), tuple(int(s) for s in shape), jnp.dtype(dtype))


def output_struct(model: nn.Module, shape: Sequence[int]) -> Any:
    """``model.apply(variables, x)``'s output for ``x`` of ``shape``, as
    ``jax.ShapeDtypeStruct`` leaves (traced once per model and shape, nothing computed).

    Raises:
      InputError: the forward pass fails at this input shape.
    """
    table = _layer_table(model, tuple(shape), jnp.float32)
    if table.error is not None:
        raise _too_small(model, tuple(shape), table)
    if table.output is None:
        raise ModelError(f"{type(model).__name__}.apply(variables, x) cannot be traced with "
                         f"only variables and x (does it need an rng or mutable state?)")
    return table.output


def _too_small(model: nn.Module, shape: tuple[int, ...], table: _Table) -> InputError:
    name = type(model).__name__
    smallest = ""
    spec = input_spec(model)
    if spec is not None and spec.kind == "image":
        smallest = f"; {name} is usually run at {spec.size} px" if spec.size else ""
    after = f" after {table[-1].path!r}" if len(table) else " at its first layer"
    error = InputError(f"{name} cannot run on inputs of shape {shape}: its forward pass fails"
                       f"{after} ({table.error}). Use a larger input{smallest}, or "
                       f"jaxviz.layer_names(model, size, partial=True) for the layers it reaches")
    error.__cause__ = table.error
    return error


def _as_shape(model: nn.Module, size: int | Sequence[int]) -> tuple[int, ...]:
    spec = input_spec(model)
    if spec is not None and spec.kind == "vector":
        if isinstance(size, numbers.Integral) and not isinstance(size, bool):
            return (1, spec.channels)
        size = tuple(int(s) for s in size)
        if len(size) == 2:
            return size
        raise InputError(f"{type(model).__name__} takes {spec.describe()}: size is ignored "
                         f"(an int) or a full shape (N, {spec.channels}); got {size!r}")
    channels = spec.channels if spec is not None else 3
    if isinstance(size, numbers.Integral) and not isinstance(size, bool):
        shape: tuple[int, ...] = (1, int(size), int(size), channels)
    else:
        try:
            size = tuple(int(s) for s in size)
        except TypeError:
            raise InputTypeError(f"size must be an int, (H, W), (H, W, C) or (N, H, W, C); "
                                 f"got {size!r}") from None
        if len(size) == 2:
            shape = (1, *size, channels)
        elif len(size) == 3:
            shape = (1, *size)
        elif len(size) == 4:
            shape = size
        else:
            raise InputError(f"size must be an int, (H, W), (H, W, C) or (N, H, W, C); got "
                             f"{size!r}")
    if min(shape) < 1:
        raise InputError(f"size must be positive; got input shape {shape}")
    return shape


@checks.boundary
def layer_names(model: nn.Module, size: int | Sequence[int] = 224, *,
                partial: bool = False) -> list[LayerInfo]:
    """Every layer of ``model`` in forward order, with its output shape at ``size``.

    Forward order is the order in which the layers finish, as torch forward hooks
    fire: a container (``features``, ``inception3a``) comes after its children.

    Args:
      model: one of our models, or any Linen module that maps (N, H, W, C) images.
      size: input height and width (an int for square; the channels are the model's
        ``in_channels``, 3 by default), (H, W, C), or a full input shape.

      partial: at a size too small for a later layer (a 3x3 pool on a 1x1 map), list
        the layers the forward pass completes before it fails instead of raising.
        Everything up to them can still be captured and optimized at that size.

    Returns:
      A list of :class:`LayerInfo` ``(path, alias, shape, kind)``.

    Layers that run only in training (GoogLeNet's auxiliary heads) are not listed:
    the table is the inference forward pass.

    Raises:
      InputError: the forward pass fails at this size (unless ``partial``), or a
        size that is not positive.
    """
    shape = _as_shape(model, size)
    table = _layer_table(model, shape, jnp.float32)
    if table.error is not None and not partial:
        raise _too_small(model, shape, table)
    out = _LayerList(table)
    out.error = table.error
    return out


def resolve(model: nn.Module, names: Sequence[str], table: Sequence[LayerInfo]) -> list[str]:
    """Maps each name (path or alias) to its module path; unknown names fail with suggestions."""
    known = {info.path for info in table}
    alias_map = aliases(model)
    paths = []
    for name in names:
        if not isinstance(name, str):
            raise InputTypeError(f"layer names are strings; got {type(name).__name__} {name!r}")
        path = alias_map.get(name, name)
        if path not in known and getattr(table, "error", None) is not None:
            where = f"after {table[-1].path!r}" if len(table) else "at its first layer"
            raise LayerError(
                f"no layer {name!r} among the {len(known)} layers {type(model).__name__} "
                f"reaches at this input size: its forward pass fails {where} "
                f"({table.error}); use a larger input") from table.error
        if path not in known:
            choices = sorted(known | alias_map.keys())
            close = difflib.get_close_matches(name, choices, n=5, cutoff=0.5)
            hint = f" Closest: {', '.join(close)}." if close else ""
            raise LayerError(
                f"no layer {name!r} in {type(model).__name__}.{hint} "
                f"jaxviz.layer_names(model) lists all {len(known)} layers.")
        paths.append(path)
    return paths


@checks.boundary
def activations(model: nn.Module, variables: Any, x: jax.Array,
                layers: str | Sequence[str]) -> dict[str, jax.Array]:
    """Outputs of the named layers for input ``x``, in inference mode.

    Args:
      model: one of our models (stops after the last requested layer) or any Linen
        module (runs to the end; under ``jax.jit`` XLA drops the unused rest).
      variables: the model's variables.
      x: (N, H, W, 3) input.
      layers: a layer name or a sequence of them: module paths or aliases.

    Returns:
      ``{name: array}`` keyed by the names as given; maps are NHWC. A module called
      more than once in a forward pass gives its last output.

    The forward pass is compiled once per model, layer list and input shape; inside a
    ``flax.linen.intercept_methods`` context it runs uncompiled, because ``jax.jit``'s
    cache cannot see what an interceptor changes.

    Raises:
      LayerError: a name is not a layer of ``model`` (the message suggests close ones);
        a ``KeyError`` and a ``ValueError``.
      InputError, InputTypeError: ``x`` does not fit the model (:func:`jaxviz.checks.batch`).
    """
    x = checks.batch(x, model)
    names = layer_list(layers, unique=False, empty_ok=True)
    if _intercepted():
        # A Linen interceptor changes what the forward pass computes, and jax.jit's
        # cache cannot see it: run the pass as it stands, uncompiled.
        return run(model, variables, x, names, logits=False)[1]
    wanted = tuple(dict.fromkeys(names))  # each once, in the order first asked
    return dict(zip(wanted, _compiled_activations(model, wanted, variables, x)))


def _intercepted() -> bool:
    """Whether a ``flax.linen.intercept_methods`` context is active (or cannot be told)."""
    stack = getattr(flax.linen.module, "_global_interceptor_stack", None)
    return stack is None or bool(stack)


def _activations_core(model: nn.Module, names: tuple[str, ...], variables: Any,
                      x: jax.Array) -> tuple[jax.Array, ...]:
    captured = run(model, variables, x, list(names), logits=False)[1]
    return tuple(captured[name] for name in names)


# Compiled once per model, layer list and input shape (docs/architecture.md, "Compile
# once"): a forward pass run eagerly compiles every operation on its own, which for
# GoogLeNet is some 300 small programs on the first call.
_compiled_activations = static_jit(_activations_core, 2)


def layer_list(layers: str | Sequence[str], *, unique: bool = True,
               empty_ok: bool = False) -> list[str]:
    """``layers`` (a name or a sequence of names) as a list of names, each once in the
    order given (or as given, repeats included, without ``unique``).

    Raises:
      InputTypeError: not a string or a sequence of strings.
      InputError: an empty sequence (unless ``empty_ok``).
    """
    if isinstance(layers, str):
        names = [layers]
    elif isinstance(layers, Sequence) and all(isinstance(name, str) for name in layers):
        names = list(layers)
    else:
        raise InputTypeError(f"layer names are strings: expected layers as a name or a "
                             f"sequence of names, got {layers!r}")
    if not names and not empty_ok:
        raise InputError("expected at least one layer name, got an empty sequence")
    return list(dict.fromkeys(names)) if unique else names


def run(model: nn.Module, variables: Any, x: jax.Array, layers: Sequence[str], *,
        logits: bool = True) -> tuple[jax.Array | None, dict[str, jax.Array]]:
    """One forward pass: the model's output (if ``logits``) and the named layers' outputs.

    Without ``logits``, models with a ``stop_at`` field stop after the last named layer.
    Returns ``(output or None, {name: array})``; raises as :func:`activations`.
    """
    names = list(layers)
    # shapes do not depend on the dtype: one table per input shape
    table = _layer_table(model, tuple(x.shape), jnp.dtype(jnp.float32))
    paths = resolve(model, names, table)
    if not paths and not logits:
        return None, {}
    wanted = set(paths)
    runner = model
    if not logits and "stop_at" in getattr(model, "__dataclass_fields__", {}):
        order = {info.path: i for i, info in enumerate(table)}
        runner = model.clone(stop_at=max(paths, key=order.__getitem__))

    def record(module: nn.Module, method: str) -> bool:
        return method == "__call__" and ".".join(module.path) in wanted

    out, state = runner.apply(variables, x, capture_intermediates=record, mutable=["intermediates"])
    captured = {".".join(p): o[-1] for p, o in _intermediate_paths(state.get("intermediates", {}))}
    return (out if logits else None), {name: captured[path] for name, path in zip(names, paths)}

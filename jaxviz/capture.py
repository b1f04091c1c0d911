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
from collections.abc import Sequence
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp


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
    input size; the table then holds the layers it completed before failing."""

    error: Exception | None = None


class _LayerList(list):
    """:func:`layer_names`' list, carrying the table's ``error`` for :func:`resolve`."""

    error: Exception | None = None


def _layer_table(model: nn.Module, shape: tuple[int, ...], dtype: Any) -> _Table:
    try:
        return _cached_layer_table(model, shape, dtype)
    except TypeError as e:  # a user model with unhashable fields: trace again each time
        if "unhashable" not in str(e):
            raise
        return _trace_layer_table(model, shape, dtype)


def _trace_layer_table(model: nn.Module, shape: tuple[int, ...], dtype: Any) -> _Table:
    # One abstract forward pass (model.init under eval_shape). Each module's __call__ is
    # recorded as it returns: that is the forward (hook) order, children before their
    # container; a module called twice keeps its last call. If a later layer fails at this
    # input size, the layers that returned before it make the table and the error is kept.
    alias_of: dict[str, str] = {}
    for alias, path in aliases(model).items():
        alias_of.setdefault(path, alias)
    reached: dict[str, LayerInfo] = {}

    def record(next_fun, args, kwargs, context):
        out = next_fun(*args, **kwargs)
        module = context.module
        if context.method_name == "__call__" and module.path:
            path = ".".join(module.path)
            reached.pop(path, None)
            reached[path] = LayerInfo(path, alias_of.get(path), tuple(getattr(out, "shape", ())),
                                      type(module).__name__)
        return out

    error = None
    try:
        with nn.intercept_methods(record):
            jax.eval_shape(model.init, jax.random.key(0), jax.ShapeDtypeStruct(shape, dtype))
    except (ValueError, TypeError) as e:  # too small for a later layer (a pool, a conv)
        if not reached:
            raise
        error = e
    table = _Table(reached.values())
    table.error = error
    return table


_cached_layer_table = functools.lru_cache(maxsize=64)(_trace_layer_table)


def _as_shape(model: nn.Module, size: int | Sequence[int]) -> tuple[int, ...]:
    channels = int(getattr(model, "in_channels", 3))
    if isinstance(size, int):
        return (1, size, size, channels)
    size = tuple(int(s) for s in size)
    if len(size) == 2:
        return (1, *size, channels)
    if len(size) == 3:
        return (1, *size)
    if len(size) == 4:
        return size
    raise ValueError(f"size must be an int, (H, W), (H, W, C) or (N, H, W, C); got {size!r}")


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

    Raises:
      ValueError, TypeError: the forward pass fails at this size (unless ``partial``).
    """
    table = _layer_table(model, _as_shape(model, size), jnp.dtype(jnp.float32))
    if table.error is not None and not partial:
        raise table.error
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
            raise TypeError(f"layer names are strings; got {type(name).__name__} {name!r}")
        path = alias_map.get(name, name)
        if path not in known and getattr(table, "error", None) is not None:
            raise ValueError(
                f"no layer {name!r} among the {len(known)} layers {type(model).__name__} "
                f"reaches at this input size: its forward pass fails after {table[-1].path!r} "
                f"({table.error}); use a larger input") from table.error
        if path not in known:
            choices = sorted(known | alias_map.keys())
            close = difflib.get_close_matches(name, choices, n=5, cutoff=0.5)
            hint = f" Closest: {', '.join(close)}." if close else ""
            raise KeyError(
                f"no layer {name!r} in {type(model).__name__}.{hint} "
                f"jaxviz.layer_names(model) lists all {len(known)} layers.")
        paths.append(path)
    return paths


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

    Raises:
      KeyError: a name is not a layer of ``model`` (the message suggests close ones).
    """
    names = [layers] if isinstance(layers, str) else list(layers)
    return run(model, variables, x, names, logits=False)[1]


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

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


def _layer_table(model: nn.Module, shape: tuple[int, ...], dtype: Any) -> tuple[LayerInfo, ...]:
    try:
        return _cached_layer_table(model, shape, dtype)
    except TypeError:  # a user model with unhashable fields: trace again each time
        return _trace_layer_table(model, shape, dtype)


def _trace_layer_table(model: nn.Module, shape: tuple[int, ...], dtype: Any) -> tuple[LayerInfo, ...]:
    x = jax.ShapeDtypeStruct(shape, dtype)
    variables = jax.eval_shape(model.init, jax.random.key(0), x)
    # Linen asks the filter right after each module returns: its call order is the
    # forward (hook) order, children before their container. Keep the last call.
    kinds: dict[str, str] = {}

    def record(module: nn.Module, method: str) -> bool:
        if method == "__call__" and module.path:
            path = ".".join(module.path)
            kinds.pop(path, None)
            kinds[path] = type(module).__name__
        return method == "__call__"

    _, state = jax.eval_shape(functools.partial(model.apply, capture_intermediates=record,
                                                mutable=["intermediates"]), variables, x)
    alias_of: dict[str, str] = {}
    for alias, path in aliases(model).items():
        alias_of.setdefault(path, alias)
    outputs = {".".join(p): out[-1] for p, out in _intermediate_paths(state.get("intermediates", {}))}
    return tuple(LayerInfo(path, alias_of.get(path), tuple(getattr(outputs[path], "shape", ())), kind)
                 for path, kind in kinds.items())


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


def layer_names(model: nn.Module, size: int | Sequence[int] = 224) -> list[LayerInfo]:
    """Every layer of ``model`` in forward order, with its output shape at ``size``.

    Forward order is the order in which the layers finish, as torch forward hooks
    fire: a container (``features``, ``inception3a``) comes after its children.

    Args:
      model: one of our models, or any Linen module that maps (N, H, W, C) images.
      size: input height and width (an int for square; the channels are the model's
        ``in_channels``, 3 by default), (H, W, C), or a full input shape.

    Returns:
      A list of :class:`LayerInfo` ``(path, alias, shape, kind)``.
    """
    return list(_layer_table(model, _as_shape(model, size), jnp.dtype(jnp.float32)))


def resolve(model: nn.Module, names: Sequence[str], table: Sequence[LayerInfo]) -> list[str]:
    """Maps each name (path or alias) to its module path; unknown names fail with suggestions."""
    known = {info.path for info in table}
    alias_map = aliases(model)
    paths = []
    for name in names:
        if not isinstance(name, str):
            raise TypeError(f"layer names are strings; got {type(name).__name__} {name!r}")
        path = alias_map.get(name, name)
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
    table = _layer_table(model, tuple(x.shape), jnp.dtype(x.dtype))
    paths = resolve(model, names, table)
    if not paths:
        return {}
    wanted = set(paths)
    order = {info.path: i for i, info in enumerate(table)}
    runner = model
    if "stop_at" in getattr(model, "__dataclass_fields__", {}):
        runner = model.clone(stop_at=max(paths, key=order.__getitem__))

    def record(module: nn.Module, method: str) -> bool:
        return method == "__call__" and ".".join(module.path) in wanted

    _, state = runner.apply(variables, x, capture_intermediates=record, mutable=["intermediates"])
    captured = {".".join(p): out[-1] for p, out in _intermediate_paths(state["intermediates"])}
    return {name: captured[path] for name, path in zip(names, paths)}

"""Hashable stand-ins for static arguments, so unhashable models still hit caches.

``jax.jit`` caches a compiled program by the hash of its static arguments, and the layer
tables are cached the same way. Our models are frozen dataclasses and hash by value; a
user's Linen model with a list field (``Sequential([...])`` built from a list) cannot be
hashed at all, so without help every call would trace and compile again.
:func:`static` wraps such a value in :class:`Static`, which hashes and compares by
structure: lists count as tuples, dataclasses (Linen modules included) by their fields,
small arrays by their bytes, and anything else by identity (the wrapper keeps it alive,
so its identity cannot be reused while a cache holds the key). Two models built the
same way then share one compiled program, exactly as two equal hashable models do.

Mutating a list inside a model after a call is not seen by a cache keyed by structure
taken at that call; Linen modules are meant to be immutable, and so are their fields.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import numpy as np

_SMALL_ARRAY = 4096  # arrays up to this many elements are keyed by value, larger by identity


def _hashable(value: Any) -> bool:
    try:
        hash(value)
    except TypeError:
        return False
    return True


def _freeze(value: Any, keep: list) -> Any:
    """A hashable structural key for ``value``; ``keep`` collects what is keyed by identity."""
    if _hashable(value):
        return (type(value), value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        fields = tuple((f.name, _freeze(getattr(value, f.name), keep))
                       for f in dataclasses.fields(value) if f.name != "parent")
        return (type(value), fields)
    if isinstance(value, (list, tuple)):
        return (type(value), tuple(_freeze(v, keep) for v in value))
    if isinstance(value, dict):
        return (type(value), tuple((_freeze(k, keep), _freeze(v, keep)) for k, v in value.items()))
    if isinstance(value, set):  # its elements are hashable
        return (set, frozenset(value))
    if hasattr(value, "shape") and hasattr(value, "dtype") and np.size(value) <= _SMALL_ARRAY:
        try:
            a = np.asarray(value)
        except Exception:  # an abstract array (a tracer): by identity
            pass
        else:
            return ("array", a.shape, str(a.dtype), a.tobytes())
    keep.append(value)
    return ("id", id(value))


class Static:
    """A hashable wrapper of a value that has no hash of its own (see the module docstring).

    Attributes:
      value: the wrapped value.
    """

    __slots__ = ("value", "_key", "_hash", "_keep")

    def __init__(self, value: Any):
        self.value = value
        self._keep: list = []
        self._key = _freeze(value, self._keep)
        self._hash = hash(self._key)

    def __hash__(self) -> int:
        return self._hash

    def __eq__(self, other: Any) -> bool:
        return isinstance(other, Static) and self._key == other._key

    def __repr__(self) -> str:
        return f"Static({type(self.value).__name__})"


def static(value: Any) -> Any:
    """``value`` itself when it can be hashed, else a :class:`Static` wrapping it."""
    return value if _hashable(value) else Static(value)


def unwrap(value: Any) -> Any:
    """The value a :func:`static` key stands for."""
    return value.value if isinstance(value, Static) else value


def jit(core: Callable, n_static: int) -> Callable:
    """``core(*statics, *arrays)`` jitted with its first ``n_static`` arguments static.

    A static argument that cannot be hashed (a user's model with list fields) is keyed
    by its structure (:func:`static`), so a second call with the same model and shapes
    compiles nothing, whatever the model.
    """

    def unwrapped(*args):
        return core(*(unwrap(a) for a in args[:n_static]), *args[n_static:])

    jitted = jax.jit(unwrapped, static_argnums=tuple(range(n_static)))

    def call(*args):
        return jitted(*(static(a) for a in args[:n_static]), *args[n_static:])

    return call

__all__ = ["Static", "jit", "static", "unwrap"]

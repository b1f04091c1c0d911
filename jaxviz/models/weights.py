"""Weight files in safetensors, checked against the model they are loaded into.

A jaxviz weight file is a safetensors file whose tensor names are the Flax variable
paths joined by '/' (``params/features/0/kernel``, ``batch_stats/conv1/bn/mean``) and
whose metadata records the architecture and its configuration. Reading one needs
neither torch nor pickle, so it cannot run code.
"""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxviz._host import to_device
from jaxviz.errors import WeightsError as WeightsError  # re-exported here, as before
from jaxviz.models.registry import architecture_of

FORMAT = "jaxviz-1"
# Fields that choose how a model runs, not what its weights are: never stored.
RUN_FIELDS = ("parent", "name", "rules", "stop_at")


def model_config(model: nn.Module) -> dict[str, Any]:
    """The configuration fields of ``model`` that decide its weights' shapes and use."""
    return {f.name: getattr(model, f.name) for f in dataclasses.fields(model)
            if f.name not in RUN_FIELDS}


def flatten_variables(variables: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """``{'params': {'fc': {'kernel': a}}}`` -> ``{'params/fc/kernel': a}`` (numpy)."""
    flat = {}
    for path, leaf in jax.tree_util.tree_flatten_with_path(dict(variables))[0]:
        key = "/".join(str(getattr(p, "key", p)) for p in path)
        flat[key] = np.asarray(leaf)
    return flat


def unflatten_variables(flat: Mapping[str, Any]) -> dict[str, Any]:
    """Inverse of :func:`flatten_variables`, with jax arrays at the leaves."""
    tree: dict[str, Any] = {}
    for key, value in flat.items():
        node = tree
        *parents, leaf = key.split("/")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = to_device(value)
    return tree


def save_weights(variables: Mapping[str, Any], path: str | os.PathLike, *,
                 model: nn.Module | None = None) -> Path:
    """Writes ``variables`` to a safetensors file, atomically (temporary file, then rename).

    Args:
      variables: ``{'params': ..., 'batch_stats': ...}`` as returned by :func:`jaxviz.load`.
      path: destination, conventionally ending in ``.safetensors``.
      model: when given, its architecture and configuration are stored in the file's
        metadata, so :func:`jaxviz.load` can rebuild the model and refuse a file made
        for another architecture.

    Returns:
      The path written.
    """
    from safetensors.numpy import save_file

    path = Path(path)
    metadata = {"format": FORMAT}
    if model is not None:
        metadata["architecture"] = architecture_of(model) or type(model).__name__
        metadata["config"] = json.dumps(model_config(model))
    flat = {k: np.ascontiguousarray(v) for k, v in flatten_variables(variables).items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        save_file(flat, tmp, metadata=metadata)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def load_weights(path: str | os.PathLike) -> tuple[dict[str, Any], dict[str, str]]:
    """Reads a safetensors weight file: ``(variables, metadata)``.

    Raises:
      FileNotFoundError: no such file.
      WeightsError: the file is not a complete safetensors file (truncated, corrupt or
        another format).
    """
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no weight file at {str(path)!r}")
    try:
        with safe_open(str(path), framework="numpy") as f:
            metadata = dict(f.metadata() or {})
            flat = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as e:  # safetensors raises its own error types for bad headers
        raise WeightsError(
            f"{str(path)!r} is not a readable safetensors file (truncated, corrupt, or another "
            f"format; {path.stat().st_size} bytes): {e}") from e
    return unflatten_variables(flat), metadata


def expected_shapes(model: nn.Module, size: int = 64) -> dict[str, tuple[tuple[int, ...], Any]]:
    """``{'params/features/0/kernel': (shape, dtype), ...}`` for a freshly initialized model."""
    from jaxviz.models.modules import example_shape

    x = jax.ShapeDtypeStruct(example_shape(model, size), jnp.float32)
    shapes = jax.eval_shape(model.init, jax.random.key(0), x)
    return {k: (tuple(v.shape), v.dtype) for k, v in _flat_leaves(shapes).items()}


def _flat_leaves(tree) -> dict[str, Any]:
    out = {}
    for path, leaf in jax.tree_util.tree_flatten_with_path(dict(tree))[0]:
        out["/".join(str(getattr(p, "key", p)) for p in path)] = leaf
    return out


def _listing(keys, limit: int = 12) -> str:
    keys = sorted(keys)
    shown = ", ".join(keys[:limit])
    return shown + (f", ... ({len(keys) - limit} more)" if len(keys) > limit else "")


def raise_if_mismatched(title: str, missing, extra, wrong) -> None:
    """Raises :class:`WeightsError` headed ``title`` listing the missing and unexpected
    keys and the ``wrong`` shapes (preformatted strings), when any of them is non-empty."""
    if not (missing or extra or wrong):
        return
    lines = [title]
    for what, keys in (("missing", missing), ("unexpected", extra), ("wrong shape", wrong)):
        if keys:
            lines.append(f"  {what} ({len(keys)}): {_listing(keys)}")
    raise WeightsError("\n".join(lines))


def check_variables(model: nn.Module, variables: Mapping[str, Any], *, source: str = "weights") -> None:
    """Raises :class:`WeightsError` naming every missing, unexpected or mis-shaped variable."""
    expected = {k: s for k, (s, _) in expected_shapes(model).items()}
    given = {k: tuple(np.shape(v)) for k, v in _flat_leaves(variables).items()}
    missing = expected.keys() - given.keys()
    extra = given.keys() - expected.keys()
    wrong = [f"{k} {given[k]} (expected {expected[k]})"
             for k in expected.keys() & given.keys() if expected[k] != given[k]]
    raise_if_mismatched(f"{source} do not fit {architecture_of(model) or type(model).__name__}:",
                        missing, extra, wrong)

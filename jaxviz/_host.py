"""Host arrays onto the device without compiling a program.

In jax 0.10, ``jnp.asarray`` and ``jnp.array`` of a numpy array are ``lax.stage``: outside
a trace, each new shape and dtype compiles an identity program (``jit(stage)``, about
20 ms on 2 CPU cores). A user's first call on a new input shape paid one for its batch,
and loading a model one per parameter shape. ``jax.device_put`` copies without
compiling; it converts dtypes as ``jnp.asarray`` does (float64 becomes float32 unless x64
is on).

On CPU, ``jax.device_put`` may alias a numpy buffer instead of copying it, and its
``may_alias=False`` does not always stop it: a numpy view of a torch tensor's memory was
still aliased (jax 0.10). A caller's array could then change after the call returns,
while the computation that reads it is still queued, and a port of torch's weights would
change with torch's. So :func:`to_device` copies on the host first, unless told the
array is fresh and private (``copy=False``), where aliasing saves the copy.

Under a trace (``jax.jit``, ``jax.grad``) a host array becomes a constant of the program
either way; tracers and jax arrays pass through unchanged.
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np


def to_device(a: Any, *, copy: bool = True) -> Any:
    """``a`` as a jax array on the default device, uncommitted, as ``jnp.asarray(a)``
    gives it, without compiling anything. ``copy=False`` only for a fresh host array
    that nothing else holds (it may then be aliased on CPU). For arrays, not Python
    scalars (``jnp.asarray`` gives those a weak type; this does not)."""
    if isinstance(a, (jax.Array, jax.core.Tracer)):
        return a
    return jax.device_put(np.array(a, copy=True) if copy else np.asarray(a))

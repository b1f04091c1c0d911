"""Random draws made flat, then reshaped: the same bits, compiled several times faster.

Each function takes jax.random's arguments and defaults (a default dtype follows x64).

``jax.random.normal(key, (2, 3, 5, 7))`` and ``jax.random.normal(key, (210,))`` reshaped
give the same array, bit for bit: threefry numbers each element by its position in
row-major order, whatever the shape (``jax_threefry_partitionable`` on or off; checked
by tests/test_random.py). XLA:CPU compiles the flat form much faster, because the shaped
form numbers the elements with one 64-bit iota per dimension. Measured on 2 CPU cores
(jaxlib 0.10, ``benchmarks/bench_draws.py``): a (64, 3, 3, 3) kernel's normal compiles in
0.69 s shaped and 0.14 s flat; a (25, 224, 224, 3) draw, a SmoothGrad chunk, compiles in
0.31 and 0.15 s and runs in 63 and 52 ms. Every draw in jaxviz goes through these
functions (``tests/test_random.py`` checks that no module calls ``jax.random`` for an
array otherwise).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp


def _size(shape: Sequence[int]) -> int:
    return math.prod(int(s) for s in shape)


def normal(key, shape: Sequence[int], dtype=float) -> jax.Array:
    """``jax.random.normal(key, shape, dtype)``, drawn flat."""
    shape = tuple(shape)
    return jax.random.normal(key, (_size(shape),), dtype).reshape(shape)


def uniform(key, shape: Sequence[int], dtype=float, minval=0.0, maxval=1.0) -> jax.Array:
    """``jax.random.uniform(key, shape, dtype, minval, maxval)`` with scalar bounds, drawn flat."""
    shape = tuple(shape)
    return jax.random.uniform(key, (_size(shape),), dtype, minval, maxval).reshape(shape)


def bernoulli(key, p, shape: Sequence[int]) -> jax.Array:
    """``jax.random.bernoulli(key, p, shape)`` with a scalar ``p``, drawn flat."""
    shape = tuple(shape)
    return jax.random.bernoulli(key, p, (_size(shape),)).reshape(shape)


def bits(key, shape: Sequence[int]) -> jax.Array:
    """``jax.random.bits(key, shape)`` (uint32), drawn flat."""
    shape = tuple(shape)
    return jax.random.bits(key, (_size(shape),), jnp.uint32).reshape(shape)


def randint(key, shape: Sequence[int], minval, maxval, dtype=int) -> jax.Array:
    """``jax.random.randint(key, shape, minval, maxval, dtype)``, drawn flat. Bounds that
    are arrays broadcast against ``shape`` (as in jax.random) and are flattened with it."""
    shape = tuple(shape)
    if jnp.ndim(minval) or jnp.ndim(maxval):
        minval = jnp.broadcast_to(jnp.asarray(minval), shape).reshape(-1)
        maxval = jnp.broadcast_to(jnp.asarray(maxval), shape).reshape(-1)
    return jax.random.randint(key, (_size(shape),), minval, maxval, dtype).reshape(shape)

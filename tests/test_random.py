"""jaxviz's random draws (jaxviz/_random.py) are jax.random's, bit for bit.

Each draw is made flat and reshaped, which XLA:CPU compiles several times faster than
the shaped draw (the module's docstring has the figures). That is only allowed because the
two are the same numbers: checked here for every helper, for typed and raw keys, under
``vmap``, in float32 and float64, with ``jax_threefry_partitionable`` on and off. Each
helper asks threefry for one 1-D block of bits (what makes it fast), and no module of
jaxviz draws an array through ``jax.random`` directly.
"""

from __future__ import annotations

import re
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxviz import _random
from conftest import equations

ROOT = Path(__file__).resolve().parents[1]
SHAPES = [(), (0, 3), (3, 4), (2, 5, 7)]


def pairs(key, shape):
    """(ours, jax.random's) for every helper."""
    yield _random.normal(key, shape), jax.random.normal(key, shape)
    yield (_random.uniform(key, shape, jnp.float32, -1.0, 2.0),
           jax.random.uniform(key, shape, jnp.float32, -1.0, 2.0))
    yield _random.bernoulli(key, 0.3, shape), jax.random.bernoulli(key, 0.3, shape)
    yield _random.bits(key, shape), jax.random.bits(key, shape, jnp.uint32)
    yield _random.randint(key, shape, 0, 9), jax.random.randint(key, shape, 0, 9)
    if len(shape) == 2 and shape[0]:  # bounds that are arrays, broadcast against the shape
        top = jnp.arange(1, shape[1] + 1)
        yield _random.randint(key, shape, 0, top), jax.random.randint(key, shape, 0, top)


@pytest.fixture(params=[True, False], ids=["partitionable", "not-partitionable"])
def threefry(request):
    before = jax.config.jax_threefry_partitionable
    jax.config.update("jax_threefry_partitionable", request.param)
    yield
    jax.config.update("jax_threefry_partitionable", before)


@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_flat_draws_are_jax_randoms_bits(shape):
    for ours, theirs in pairs(jax.random.key(5), shape):
        assert ours.shape == theirs.shape == shape and ours.dtype == theirs.dtype
        assert np.array_equal(ours, theirs)


def test_helpers_draw_flat():
    """What makes them fast: every draw asks threefry for a 1-D block of bits."""
    shape = (2, 5, 7)
    top = jnp.arange(1, 8)
    for name, draw in [("normal", lambda k: _random.normal(k, shape)),
                       ("uniform", lambda k: _random.uniform(k, shape)),
                       ("bernoulli", lambda k: _random.bernoulli(k, 0.5, shape)),
                       ("randint", lambda k: _random.randint(k, shape, 0, top)),
                       ("bits", lambda k: _random.bits(k, shape))]:
        shapes = [tuple(eqn.params["shape"])
                  for eqn in equations(jax.make_jaxpr(draw)(jax.random.key(0)), "random_bits")]
        assert shapes and all(len(s) == 1 for s in shapes), (name, shapes)


def test_raw_keys_both_threefry_modes_vmap_jit_and_float64(threefry):
    raw = jax.random.PRNGKey(7)
    for ours, theirs in pairs(raw, (3, 4)):
        assert np.array_equal(ours, theirs)
    keys = jax.random.split(jax.random.key(11), 3)
    shape = (4, 3)
    ours = jax.jit(jax.vmap(lambda k: _random.normal(k, shape)))(keys)
    theirs = jax.vmap(lambda k: jax.random.normal(k, shape))(keys)
    assert np.array_equal(ours, theirs)
    with jax.enable_x64(True):  # float64, and the default dtypes (64-bit under x64)
        for ours, theirs in [(_random.uniform(keys[0], shape, jnp.float64),
                              jax.random.uniform(keys[0], shape, jnp.float64)),
                             (_random.normal(keys[0], shape), jax.random.normal(keys[0], shape)),
                             (_random.uniform(keys[0], shape), jax.random.uniform(keys[0], shape)),
                             (_random.randint(keys[0], shape, 0, 9),
                              jax.random.randint(keys[0], shape, 0, 9))]:
            assert ours.dtype == theirs.dtype and ours.dtype.itemsize == 8
            assert np.array_equal(ours, theirs)


DRAWS = re.compile(r"\bjax\.random\.(normal|uniform|bernoulli|randint|bits|truncated_normal|"
                   r"choice|permutation|gumbel|exponential|gamma|beta|dirichlet|categorical)\(")


def test_jaxviz_draws_through_the_flat_helpers():
    found = []
    for path in sorted((ROOT / "jaxviz").rglob("*.py")):
        if path.name == "_random.py":
            continue
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            code = line.split("#", 1)[0]
            if DRAWS.search(code) and "``" not in code:
                found.append(f"{path.relative_to(ROOT)}:{n}: {line.strip()}")
    assert not found, ("draw through jaxviz._random (same bits, faster compile):\n"
                       + "\n".join(found))

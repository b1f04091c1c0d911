"""The same calls in two processes (``jax.distributed`` on 127.0.0.1, gloo collectives
between CPU processes) and in one: every process must get what one process gets.

tests/distributed_worker.py is each process; tests/distributed_cases.py holds the shared
settings. Each process is fed half of the images (top_k, the metrics) or runs the same
sweep with its chunks sharded over both processes' devices. One launch of the pair
(about 30 s on 2 cores, start-up included) serves every test here.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import distributed_cases as cases
import jaxviz as jv
from conftest import F64_TOL, max_rel_err, xla_flags_like_this_process
from jaxviz.synthesis import param
from test_examples import brute_top_k

HERE = Path(__file__).parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def two_processes(tmp_path_factory):
    """Both processes' results: [process 0's, process 1's] dicts of arrays."""
    out = tmp_path_factory.mktemp("distributed")
    port = _free_port()
    env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS=xla_flags_like_this_process())
    procs = [subprocess.Popen([sys.executable, str(HERE / "distributed_worker.py"), str(i),
                               str(port), str(out)], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True) for i in range(2)]
    logs = []
    try:
        for p in procs:
            logs.append(p.communicate(timeout=400)[0])
    finally:
        for p in procs:
            p.kill()
    for i, (p, log) in enumerate(zip(procs, logs)):
        assert p.returncode == 0, f"process {i} failed:\n{log[-4000:]}"
    return [dict(np.load(out / f"process{i}.npz")) for i in range(2)]


@pytest.fixture(scope="module")
def digits():
    model, variables = jv.load("lenet_digits")
    x, y = cases.images()
    return model, variables, x, y


def test_every_process_gets_the_same_answer(two_processes):
    first, second = two_processes
    assert first.keys() == second.keys()
    for name in first:
        np.testing.assert_array_equal(first[name], second[name], err_msg=name)


def test_top_k_of_two_halves_is_numpy_top_k_of_all(two_processes, digits):
    model, variables, x, _ = digits
    a = np.asarray(jv.activations(model, variables, x, [cases.TOPK_LAYER])[cases.TOPK_LAYER])
    values, ids, positions = brute_top_k(a, cases.K)
    assert (values == 0).any(), "the case should hold ties (ReLU zeros)"
    got = two_processes[0]
    for kind in ("topk", "stream"):
        np.testing.assert_array_equal(got[f"{kind}_values"], values)
        np.testing.assert_array_equal(got[f"{kind}_ids"], ids)
        np.testing.assert_array_equal(got[f"{kind}_positions"], positions)
    assert int(got["topk_count"]) == len(x)


def test_sweep_in_two_processes_equals_one_process(two_processes, digits):
    """float64, so the only differences are summation orders: 1e-12 of the image range."""
    model, variables, _, _ = digits
    with jax.enable_x64(True):
        variables64 = jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), variables)
        one = np.asarray(jv.synthesis.sweep(
            model, variables64, cases.SWEEP_LAYER, cases.SWEEP_CHANNELS, key=jax.random.key(5),
            param=param.Fourier(dtype=jnp.float64), progress=False, **cases.SWEEP))
    got = two_processes[0]["sweep"]
    assert got.dtype == np.float64 and got.shape == one.shape
    assert max_rel_err(got, one) <= F64_TOL


@pytest.mark.parametrize("name", sorted(cases.METRICS))
def test_metrics_in_two_processes_equal_one_process(two_processes, digits, name):
    model, variables, x, y = digits
    one = np.asarray(cases.METRICS[name](model, variables, x, y))
    np.testing.assert_allclose(two_processes[0][name], one, rtol=1e-6, atol=1e-7)

"""Shared fixtures: seeded torchvision references and inputs.

Tolerances used across the suite (relative to the largest magnitude of the compared
array, so a near-zero entry cannot blow up the ratio):
  float32: 1e-5. Ported and torch layers sum the same products in different orders;
    float32 rounding (eps 6e-8 per operation) accumulated over a few thousand-term dot
    products and ~20 layers stays well under it (measured: up to 4e-6).
  float64: 1e-12. The same orders in float64 (eps 1e-16) leave about 1e-14.
"""

from __future__ import annotations

import contextlib
import os
import sys


def _share_the_cores() -> None:
    """Under pytest-xdist, give each worker's torch (and the subprocesses it starts) its
    share of the cores instead of one OpenMP thread per core: N workers each spinning up
    a thread per core oversubscribe the machine, and OpenMP's waiting threads spin. On 2
    cores with 2 workers, torch at one thread per worker ran test_models, the peers and
    test_synthesis in 249 s instead of 296 (docs/architecture.md, "Where the suite's time
    goes"). Limiting XLA's threads instead saved little (290 s with Eigen single-threaded),
    so they are left alone. A user's OMP_NUM_THREADS wins."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if workers <= 1 or "OMP_NUM_THREADS" in os.environ:
        return
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    share = max(1, (cores or 1) // workers)
    os.environ["OMP_NUM_THREADS"] = str(share)
    if "torch" in sys.modules:  # imported already (a plugin): the variable came too late
        sys.modules["torch"].set_num_threads(share)


_share_the_cores()

import jax  # noqa: E402
import jax.extend.core  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

F32_TOL = 1e-5
F64_TOL = 1e-12


@pytest.fixture(autouse=True)
def x64_stays_off():
    """Float32 tests must run in float32: x64 is off before every test (not set by the
    environment, JAX_ENABLE_X64, nor left on by an earlier test) and after it (a test
    enters ``jax.enable_x64(True)`` itself and leaves it; a fixture never holds it open)."""
    assert not jax.config.read("jax_enable_x64"), (
        "x64 is on before this test: unset JAX_ENABLE_X64, or find the test or fixture that "
        "left jax.enable_x64(True) open")
    yield
    assert not jax.config.read("jax_enable_x64"), "this test (or its fixture) left x64 on"


def xla_flags_like_this_process(*extra: str) -> str:
    """``XLA_FLAGS`` for a subprocess that computes what this process compares it with:
    this process's YNN fusion setting, if any (``jv.cpu.use_xla_reductions()`` and the
    like: another setting sums in another order) and ``extra`` (a device count), nothing
    else."""
    ynn = [f for f in os.environ.get("XLA_FLAGS", "").split()
           if f.startswith("--xla_cpu_experimental_ynn_fusion_type")]
    return " ".join([*ynn, *extra])


def env_without_test_compile_cache() -> dict[str, str]:
    """This process's environment less JAX's persistent-cache variables (scripts/test.sh
    sets them for the whole run): for a subprocess whose own cache a test counts."""
    return {k: v for k, v in os.environ.items()
            if not k.startswith(("JAX_COMPILATION_CACHE", "JAX_PERSISTENT_CACHE"))}


def max_rel_err(actual, expected) -> float:
    """max |actual - expected| / max |expected| (the scale of the whole array)."""
    actual, expected = np.asarray(actual), np.asarray(expected)
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    scale = np.abs(expected).max()
    return float(np.abs(actual - expected).max() / (scale if scale > 0 else 1.0))


def equations(jaxpr, name: str) -> list:
    """The equations of primitive ``name`` a (closed) jaxpr runs, nested ones included."""
    jaxpr = getattr(jaxpr, "jaxpr", jaxpr)
    found = []
    for eqn in jaxpr.eqns:
        if eqn.primitive.name == name:
            found.append(eqn)
        for param in eqn.params.values():
            for sub in param if isinstance(param, (tuple, list)) else (param,):
                if isinstance(sub, (jax.extend.core.Jaxpr, jax.extend.core.ClosedJaxpr)):
                    found += equations(sub, name)
    return found


def count_primitive(jaxpr, name: str) -> int:
    """How many equations of primitive ``name`` a (closed) jaxpr runs, nested ones included."""
    return len(equations(jaxpr, name))


@contextlib.contextmanager
def eager_host_copies(*packages):
    """Records where code in ``packages`` (imported packages) converts a host array with
    ``jnp.asarray`` outside a trace: in jax 0.10 each is ``lax.stage``, which compiles an
    identity program per shape and dtype (``jaxviz/_host.py``). Yields the list of
    ``file:line`` found. Skips when this jax has no ``lax.stage`` (its ``jnp.asarray``
    then compiles nothing)."""
    from jax._src import core
    from jax._src.lax import lax as lax_internal

    if not hasattr(lax_internal, "stage"):
        pytest.skip("this jax has no lax.stage: jnp.asarray of a host array compiles nothing")
    original, found = lax_internal.stage, []
    folders = tuple(os.path.dirname(os.path.abspath(p.__file__)) + os.sep for p in packages)

    def stage(x, /):
        if isinstance(x, np.ndarray) and x.ndim and isinstance(core.trace_ctx.trace,
                                                               core.EvalTrace):
            frame = sys._getframe(1)
            while frame is not None and not frame.f_code.co_filename.startswith(folders):
                frame = frame.f_back
            if frame is not None:
                where = "/".join(frame.f_code.co_filename.split(os.sep)[-2:])
                found.append(f"{where}:{frame.f_lineno}")
        return original(x)

    lax_internal.stage = stage
    try:
        yield found
    finally:
        lax_internal.stage = original


def nhwc(t) -> np.ndarray:
    """A torch tensor (N, C, H, W) or (N, F) as a numpy NHWC copy (or unchanged 2-D).

    A copy, because torch may later overwrite the tensor in place (GoogLeNet's
    ``F.relu(bn(x), inplace=True)`` would rewrite a recorded BatchNorm output)."""
    a = t.detach().cpu().numpy()
    return np.array(a.transpose(0, 2, 3, 1) if a.ndim == 4 else a)


def torchvision_model(name: str, seed: int = 0, **kwargs):
    """A seeded random torchvision model in eval mode, ReLUs not in place, with random
    BatchNorm affine parameters and running statistics (so BN is not the identity).

    GoogLeNet's convolutions are redrawn with He (Kaiming) normal weights: torchvision
    initializes them with std 0.01, under which the signal fades layer by layer until
    deep activations hardly depend on the input (every max-pool window a near-tie),
    which would leave the deep layers of the comparison untested."""
    torch = pytest.importorskip("torch")
    torchvision = pytest.importorskip("torchvision")
    torch.manual_seed(seed)
    if name == "googlenet":
        kwargs.setdefault("init_weights", True)
    model = torchvision.models.get_model(name, weights=None, **kwargs).eval()
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for m in model.modules():
            if hasattr(m, "inplace"):
                m.inplace = False
            if name == "googlenet" and isinstance(m, torch.nn.Conv2d):
                fan_in = m.weight[0].numel()
                m.weight.copy_(torch.randn(m.weight.shape, generator=g) * (2.0 / fan_in) ** 0.5)
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.copy_(torch.rand(m.num_features, generator=g) - 0.5)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) * 1.5 + 0.5)
                m.weight.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.bias.copy_(torch.rand(m.num_features, generator=g) - 0.5)
    return model


def photo_and_noise(size: tuple[int, int], seed: int = 0) -> np.ndarray:
    """(2, H, W, 3) float32: the bundled cat photograph (resized exactly to ``size``,
    ImageNet-normalized) and standard normal noise."""
    from jaxviz import data

    photo = data.preprocess(data.sample_image("chelsea"), size, resize="exact")
    noise = np.random.default_rng(seed).standard_normal((1, *size, 3)).astype(np.float32)
    return np.concatenate([photo, noise]).astype(np.float32)


def numpy_random_alexnet():
    """AlexNet (10 classes) with random weights, and two 64x64 inputs.

    The variable tree comes from ``model.init`` (shapes only, via ``jax.eval_shape``);
    the values are drawn with numpy in torch's default range U(-1/sqrt(fan_in), ..),
    because jax's threefry draws of AlexNet's 57M parameters take ~10 s on 2 CPU cores.
    """
    import jax
    import jax.numpy as jnp

    from jaxviz import models

    model = models.create("alexnet", num_classes=10)
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal((2, 64, 64, 3)), jnp.float32)
    shapes = jax.eval_shape(model.init, jax.random.key(0), x)

    def draw(path, leaf):
        fan_in = np.prod(leaf.shape[:-1]) if leaf.ndim > 1 else leaf.shape[0]
        u = rng.random(leaf.shape, dtype=np.float32) * 2 - 1
        return jnp.asarray(u / np.float32(np.sqrt(fan_in)))

    return model, jax.tree_util.tree_map_with_path(draw, shapes), x


@pytest.fixture(scope="module")  # test_cli (weights_port) and test_commands_look (jaxviz port)
def alexnet_pth(tmp_path_factory):
    """A seeded random torchvision AlexNet (eval mode) and its state_dict saved as a .pth."""
    torch = pytest.importorskip("torch")
    tmodel = torchvision_model("alexnet")
    path = tmp_path_factory.mktemp("weights") / "a.pth"
    torch.save(tmodel.state_dict(), path)
    return tmodel, path

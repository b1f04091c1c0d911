"""jaxviz.cpu and jaxviz.gpu: the XLA flags for faster float32 convolutions (off YNNPACK on
the CPU, NCHW layouts on a GPU), tested in fresh processes."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

import jaxviz.cpu
import jaxviz.gpu

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

known = pytest.mark.skipif(jaxviz.cpu._jaxlib_version() not in jaxviz.cpu.KNOWN_JAXLIB,
                           reason="this jaxlib is not known to accept the flag")


def run(code: str, xla_flags: str | None = None) -> str:
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    if xla_flags is not None:
        env["XLA_FLAGS"] = xla_flags
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    out = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=env,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout


CONV_HLO = """
    import jax, jax.numpy as jnp
    from jax import lax
    f = jax.jit(lambda x, w: lax.conv_general_dilated(x, w, (1, 1), "SAME",
                dimension_numbers=("NHWC", "HWIO", "NHWC")))
    # compiled, never run: a layer big enough for jaxlib to pick YNNPACK by default
    hlo = f.lower(jnp.zeros((8, 56, 56, 64)), jnp.zeros((3, 3, 64, 64))).compile().as_text()
    print("ynn" if "ynn_fusion" in hlo else "xla")
"""


@known
def test_flag_moves_convolutions_off_ynnpack():
    before = run(CONV_HLO).split()[-1]
    after = run("import jaxviz as jv\nprint(jv.cpu.use_fast_convolutions())\n" + textwrap.dedent(CONV_HLO))
    assert after.split() == ["True", "xla"]
    # the default the flag exists for (jaxlib 0.10); if a release stops using YNNPACK for
    # convolutions, this fails and the flag (and KNOWN_JAXLIB) should be revisited
    assert before == "ynn"


POOL_IN_YNN = """
    import re, jax, jax.numpy as jnp
    from jax import lax

    def block(x, w, v):  # a VGG block and a linear layer: conv, ReLU, 2x2 max pool, dot
        y = lax.conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))
        y = lax.reduce_window(jnp.maximum(y, 0), -jnp.inf, lax.max, (1, 2, 2, 1), (1, 2, 2, 1), "VALID")
        return y.reshape(len(x), -1) @ v

    hlo = jax.jit(block).lower(jnp.zeros((2, 56, 56, 64)), jnp.zeros((3, 3, 64, 64)),
                               jnp.zeros((28 * 28 * 64, 10))).compile().as_text()
    called = set(re.findall(r"%ynn_fusion[\\w.]* = .*?calls=%([\\w.]+)", hlo))
    bodies = {m.group(1): m.group(2) for m in re.finditer(r"^%([\\w.]+) \\(.*?\\{\\n(.*?)^\\}", hlo, re.S | re.M)}
    print("pool-in-ynn" if any("reduce-window" in bodies.get(c, "") for c in called) else "pool-in-xla")
"""


@known
def test_flag_keeps_max_pools_out_of_ynn_fusions():
    """YNN's reduce fusion takes max pools and everything before them into one fusion
    (VGG16's whole forward pass, 4x the CPU work; jaxviz/cpu.py): with the flag, no YNN
    fusion holds a reduce-window."""
    before = run(POOL_IN_YNN).split()[-1]
    after = run("import jaxviz as jv\nprint(jv.cpu.use_fast_convolutions())\n" + textwrap.dedent(POOL_IN_YNN))
    assert after.split() == ["True", "pool-in-xla"]
    # the default the flag exists for (jaxlib 0.10); revisit the flag when this fails
    assert before == "pool-in-ynn"


@known
def test_too_late_is_an_error_and_user_flags_win():
    out = run("""
        import jax.numpy as jnp, jaxviz as jv
        jnp.zeros(1).block_until_ready()
        try:
            jv.cpu.use_fast_convolutions()
        except RuntimeError as e:
            print("error:", "before the first JAX computation" in str(e))
    """)
    assert out.strip() == "error: True"
    mine = "--xla_cpu_experimental_ynn_fusion_type=dot"
    out = run("import os, jaxviz as jv\nprint(jv.cpu.use_fast_convolutions(), os.environ['XLA_FLAGS'])",
              xla_flags=mine)
    assert out.split() == ["False", mine]
    out = run("import os, jaxviz as jv\nprint(jv.cpu.use_fast_convolutions(), jv.cpu.use_fast_convolutions(),"
              " os.environ['XLA_FLAGS'])", xla_flags="--xla_cpu_enable_fast_math=false")
    assert out.split() == ["True", "True", "--xla_cpu_enable_fast_math=false", jaxviz.cpu.FLAG]


# jax-ml/jax#39103: the sum of squares of (i, 0, 0) times the identity, for i up to
# 32,768; the last row's answer, 2**30, is exact in float32. jaxlib 0.10.2's YNN reduce
# fusion returned 1.0654e9 for it on our machine.
WRONG_REDUCTION = """
    import jax, jax.numpy as jnp
    i = jnp.arange(32_769, dtype=jnp.float32)
    x = jnp.stack((i, jnp.zeros_like(i), jnp.zeros_like(i)), axis=1)
    m = jnp.eye(3)
    f = jax.jit(jax.vmap(lambda row: jnp.sum((m @ row) ** 2)))
    print(float(f(x)[-1]) == 2.0 ** 30)
"""


@known
def test_xla_reductions_flag_gives_the_right_sum_and_keeps_convolutions_on_ynnpack():
    """use_xla_reductions turns off the reduce fusion alone: a reduction jaxlib 0.10.2
    gets wrong comes out exact, and convolutions stay on YNNPACK (float64's fast path).
    It is added once, is implied by use_fast_convolutions' flag, and a user's own YNN
    setting wins."""
    out = run("import jaxviz as jv\nprint(jv.cpu.use_xla_reductions(), jv.cpu.use_xla_reductions())\n"
              + textwrap.dedent(WRONG_REDUCTION) + textwrap.dedent(CONV_HLO))
    assert out.split() == ["True", "True", "True", "ynn"]
    out = run("import os, jaxviz as jv\nprint(jv.cpu.use_fast_convolutions(), jv.cpu.use_xla_reductions(), "
              "os.environ['XLA_FLAGS'])")
    assert out.split() == ["True", "True", jaxviz.cpu.FLAG]
    mine = "--xla_cpu_experimental_ynn_fusion_type=dot"
    out = run("import os, jaxviz as jv\nprint(jv.cpu.use_xla_reductions(), os.environ['XLA_FLAGS'])",
              xla_flags=mine)
    assert out.split() == ["False", mine]


@pytest.mark.skipif(jaxviz.gpu._xla_flags.jaxlib_version() not in jaxviz.gpu.KNOWN_JAXLIB,
                    reason="this jaxlib is not known to accept the GPU flag")
def test_gpu_layout_flag_is_accepted_and_changes_no_value_here():
    """This jaxlib's XLA parses the flag (it aborts the process on one it does not know),
    it is added once, beside the user's other flags, a user's own layout choice wins, and
    calling it late is an error. On a CPU it changes nothing: the same convolution gives
    the same bits with and without it."""
    conv = """
        import numpy as np, jax, jax.numpy as jnp
        from jaxviz.models import layers
        x = jax.random.normal(jax.random.key(0), (2, 12, 12, 5))
        w = jax.random.normal(jax.random.key(1), (3, 3, 5, 7))
        print(np.asarray(jax.jit(layers.conv2d)(x, w)).tobytes().hex()[:4000])
    """
    before = run(conv).split()[-1]
    out = run("import os, jaxviz as jv\nprint(jv.gpu.use_nchw_convolutions(), "
              "jv.gpu.use_nchw_convolutions(), jv.gpu.nchw_convolutions_enabled(), "
              "os.environ['XLA_FLAGS'])\n" + textwrap.dedent(conv),
              xla_flags="--xla_cpu_enable_fast_math=false")
    assert out.split() == ["True", "True", "True", "--xla_cpu_enable_fast_math=false",
                           jaxviz.gpu.FLAG, before]
    mine = "--xla_gpu_force_conv_nhwc=true"
    out = run("""
        import os, jax.numpy as jnp, jaxviz as jv
        print(jv.gpu.use_nchw_convolutions(), os.environ['XLA_FLAGS'])
        del os.environ['XLA_FLAGS']
        jnp.zeros(1).block_until_ready()
        try:
            jv.gpu.use_nchw_convolutions()
        except RuntimeError as e:
            print("error:", "jaxviz.gpu.use_nchw_convolutions() must run before" in str(e))
    """, xla_flags=mine)
    assert out.split() == ["False", mine, "error:", "True"]

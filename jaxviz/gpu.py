"""Faster float32 convolutions on XLA:GPU, on request: NCHW layouts end to end.

jaxviz's modules are NHWC, and XLA:GPU keeps NHWC between layers. For strict float32 the
cuDNN kernels it picks on an H100 work in NCHW (``..._nchwkcrs_nchw`` kernels), so each
convolution call converts its input and output (cuDNN's ``nchwToNhwc`` and ``nhwcToNchw``
kernels). A kernel profile (``benchmarks/bench_models.py --profile``, batch 32, 224 px,
strict float32) puts those conversions at 11.8 % of VGG16's forward device time, 10.7 % of
its input gradient and 15-17 % of GoogLeNet's, while torch, which stays NCHW, spends
none. XLA's flag ``--xla_gpu_force_conv_nchw=true`` makes its layout assignment choose
NCHW for every convolution, so the layout is converted once at the program's edges: on
the same H100, VGG16's forward went from 24.5 to 21.5 ms (torch 24.0: from 0.98x to 1.12x
torch's speed, 88 % of the measured fp32 peak) and its input gradient from 44.1 to 38.9 ms
(0.97x to 1.10x); GoogLeNet's forward from 6.6 to 5.3 ms (``benchmarks/RESULTS.md``).
The logical layout does not change: arrays stay NHWC to the caller, and results agree
with the default to float32 rounding.

:func:`use_nchw_convolutions` sets the flag; call it before the first JAX computation::

    import jaxviz as jv
    jv.gpu.use_nchw_convolutions()   # float32 work on a GPU
    ...

or start Python with ``XLA_FLAGS=--xla_gpu_force_conv_nchw=true``. The ``jaxviz`` command
and the float32 benchmarks do it for themselves; importing jaxviz changes no flag. It is
measured for float32 only: bfloat16 and float16 convolutions run on tensor-core kernels
that prefer NHWC, so keep XLA's choice for half-precision work. The flag concerns
XLA:GPU only; on other backends it has no effect.
"""

from __future__ import annotations

from jaxviz import _xla_flags

FLAG = "--xla_gpu_force_conv_nchw=true"
KNOWN_JAXLIB = ((0, 10), (0, 11))  # (major, minor) versions that accept FLAG
_SETTINGS = ("xla_gpu_force_conv_nchw", "xla_gpu_force_conv_nhwc")


def nchw_convolutions_enabled() -> bool:
    """Whether ``XLA_FLAGS`` carries :data:`FLAG` (in effect if set before JAX started)."""
    return _xla_flags.flag_set(FLAG)


def use_nchw_convolutions() -> bool:
    """Add :data:`FLAG` to ``XLA_FLAGS`` so XLA:GPU keeps convolutions in NCHW layouts.

    Call it before the first JAX computation of the process (importing jaxviz or jax is
    fine; creating an array is not). It leaves other flags alone; on a CPU or a TPU it
    changes nothing.

    Returns:
      True when the flag is in effect for this process's backends; False when it was
      left out: the user's ``XLA_FLAGS`` already chooses a GPU convolution layout (theirs
      wins), or this jaxlib is not known to accept the flag.

    Raises:
      RuntimeError: JAX's backends have already started without the flag, so setting
        it now would silently do nothing.
    """
    return _xla_flags.add_flag(FLAG, _SETTINGS, KNOWN_JAXLIB,
                               "jaxviz.gpu.use_nchw_convolutions()")

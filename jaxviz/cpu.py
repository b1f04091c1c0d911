"""Faster float32 convolutions on XLA:CPU, on request.

jaxlib 0.10 hands work on the CPU backend to YNNPACK through "library fusions". Two of
them are slow on the x86 machines we measure on (2 AVX2 cores):

- the individual-convolution fusion: XLA's own float32 convolution path, which it uses
  when that fusion is off, runs the convolutions of AlexNet and GoogLeNet up to 2x
  faster (5x on other shapes);
- the reduce fusion: in VGG16's forward pass it takes the whole network, every
  convolution and pool up to the classifier, into one YNN fusion, which runs 4x the
  CPU work of XLA's own code (2.4 against 0.6 CPU-seconds for 2 images at 224 px) and
  made the forward 3x slower than PyTorch's; without it, VGG16's forward is 1.6x
  PyTorch's speed on the same machine.

:func:`use_fast_convolutions` turns both off. That makes jaxviz's float32 CPU timings
match or beat PyTorch's (``benchmarks/RESULTS.md``). The price: float64 convolutions,
which YNNPACK also runs, fall back to XLA's generic loop and become about 8x slower, so
keep the default for float64 work (the test suite does). The switch is an XLA flag, so
it must be set before JAX starts its backends::

    import jaxviz as jv
    jv.cpu.use_fast_convolutions()   # before the first JAX computation
    ...

or, equivalently, in the shell:
``XLA_FLAGS=--xla_cpu_experimental_ynn_fusion_type=-individual_convolution,-reduce``.
The ``jaxviz`` command and the benchmarks (float32) do it for themselves.
Importing jaxviz changes nothing: XLA flags are process-wide, and yours stay yours.

Results agree with the default path to float32 rounding (the sums are taken in
another order).

Correctness, not only speed: jaxlib 0.10.2's YNN reduce fusion is wrong on some
programs. ``jax.vmap(lambda r: jnp.sum((M @ r) ** 2))`` over 32,769 rows returns
1.0654e9 for the last row where the answer is 2**30 (jax-ml/jax#39103), and a float32
product-and-sum over a rank-7 array crashes the process on an XLA worker thread
(jax-ml/jax#40412); both reproduce on our machine, and neither does with the fusion off.
:func:`use_xla_reductions` turns off that fusion alone: convolutions stay on YNNPACK,
so float64 work keeps its speed (measured on AlexNet and VGG16 input gradients at
64 px: float64 within 15 % either way); :func:`use_fast_convolutions` includes it. The
test suite runs XLA's defaults, as a user's process does.

XLA aborts the process on a flag it does not know, so the flags are only added for
jaxlib versions known to accept them (:data:`KNOWN_JAXLIB`).
"""

from __future__ import annotations

from jaxviz import _xla_flags

FLAG = "--xla_cpu_experimental_ynn_fusion_type=-individual_convolution,-reduce"
REDUCE_FLAG = "--xla_cpu_experimental_ynn_fusion_type=-reduce"
KNOWN_JAXLIB = ((0, 10),)  # (major, minor) versions that accept FLAG
_SETTING = "xla_cpu_experimental_ynn_fusion_type"
_jaxlib_version = _xla_flags.jaxlib_version


def fast_convolutions_enabled() -> bool:
    """Whether ``XLA_FLAGS`` carries :data:`FLAG` (in effect if set before JAX started)."""
    return _xla_flags.flag_set(FLAG)


def use_fast_convolutions() -> bool:
    """Add :data:`FLAG` to ``XLA_FLAGS`` so XLA:CPU runs convolutions on its own path.

    Call it before the first JAX computation of the process (importing jaxviz or jax is
    fine; creating an array is not). It leaves other flags alone and does nothing on
    other backends' work: the flag only concerns XLA:CPU.

    Returns:
      True when the flag is in effect for this process's backends; False when it was
      left out: the user's ``XLA_FLAGS`` already sets the YNN fusion list (theirs wins),
      or this jaxlib is not known to accept the flag.

    Raises:
      RuntimeError: JAX's backends have already started without the flag, so setting
        it now would silently do nothing.
    """
    return _xla_flags.add_flag(FLAG, (_SETTING,), KNOWN_JAXLIB,
                               "jaxviz.cpu.use_fast_convolutions()")


def use_xla_reductions() -> bool:
    """Add :data:`REDUCE_FLAG` to ``XLA_FLAGS``: XLA:CPU runs reductions with its own
    code rather than YNNPACK's reduce fusion (wrong on some programs in jaxlib 0.10.2:
    the module docstring), and keeps YNNPACK's convolutions.

    Same contract as :func:`use_fast_convolutions`: call it before the first JAX
    computation. It is a no-op returning True when :data:`FLAG` (which includes it) is
    already in effect.

    Returns:
      True when the fusion is off for this process's backends; False when the user's
      ``XLA_FLAGS`` already sets the YNN fusion list (theirs wins), or this jaxlib is
      not known to accept the flag.

    Raises:
      RuntimeError: JAX's backends have already started without it.
    """
    if fast_convolutions_enabled():
        return True
    return _xla_flags.add_flag(REDUCE_FLAG, (_SETTING,), KNOWN_JAXLIB,
                               "jaxviz.cpu.use_xla_reductions()")

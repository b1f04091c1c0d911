"""Turning arrays into things a person can look at.

This module starts with the text form: :func:`summary`, one line of statistics per
array in the style of the lovely-tensors package, and the contrast scalings
:func:`sigmas` and :func:`pos_sigmas` used before showing weights and activations
as images.

Example::

    >>> summary(np.arange(12, dtype=np.float32).reshape(3, 4))
    '(3, 4) n=12 x∈[0., 11.000] μ=5.500 σ=3.606'
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["pos_sigmas", "sigmas", "summary"]

# lovely-tensors' defaults: 3 decimals; scientific notation outside [1e-4, 1e3].
_PRECISION = 3
_SCI_BELOW = 1e-4
_SCI_ABOVE = 1e3
_SHOW_VALUES_UP_TO = 10

_DTYPE_SUFFIX = {
    "float32": "",
    "float16": "f16",
    "float64": "f64",
    "bfloat16": "bf16",
    "uint8": "u8",
    "uint16": "u16",
    "uint32": "u32",
    "uint64": "u64",
    "int8": "i8",
    "int16": "i16",
    "int32": "i32",
    "int64": "i64",
    "bool": "bool",
    "complex64": "c64",
    "complex128": "c128",
}


def _number(v: float) -> str:
    """One number as lovely-tensors prints it: ``0.``, ``-34.649`` or ``3.024e+03``."""
    if v == 0:
        return "0."
    sci = abs(v) < _SCI_BELOW or abs(v) > _SCI_ABOVE  # False for NaN: printed as 'nan'
    return f"{v:.{_PRECISION}{'e' if sci else 'f'}}"


def _values(a: np.ndarray) -> str:
    """The values of a small array, nested like lovely-tensors: ``[1.000, 2.000]``."""
    if a.ndim == 0:
        item = a.item()
        if isinstance(item, (bool, int)):
            return str(item)
        return _number(float(item))
    return "[" + ", ".join(_values(a[i]) for i in range(a.shape[0])) + "]"


def _join(parts: list[str | None]) -> str:
    return " ".join(p for p in parts if p)


def _as_numpy(x: Any) -> np.ndarray:
    try:
        a = np.asarray(x)
    except jax.errors.TracerArrayConversionError as err:
        raise TypeError(
            "summary needs concrete values, got a traced array (inside jax.jit, grad or "
            "vmap); call it outside the transformation or through jax.debug.callback"
        ) from err
    if a.dtype.kind not in "biufc" and not jnp.issubdtype(a.dtype, jnp.floating):
        raise TypeError(f"summary expects a numeric or boolean array, got dtype {a.dtype}")
    return a


def summary(x: Any, *, name: str | None = None) -> str:
    """A one-line description of an array, in the style of lovely-tensors.

    Example outputs::

        (1, 55, 55, 64) n=193600 x∈[-34.649, 32.174] μ=-0.398 σ=3.305
        (1, 27, 27, 64) n=46656 x∈[0., 3.024e+03] μ=1.499e+03 σ=859.119 i64
        (3,) μ=1.500 σ=0.707 +Inf!×1 f64 [1.000, 2.000, inf]
        (2, 3) n=6 all_zeros [[0., 0., 0.], [0., 0., 0.]]
        (0, 3) n=0 empty

    The pieces, left to right (empty ones are left out):

    * ``name``, when given;
    * the shape, as a Python tuple;
    * ``n=``, the element count, unless it equals the largest axis (1-D arrays);
    * ``x∈[min, max]`` when more than two finite values, ``μ=mean σ=std`` when at
      least two. The standard deviation is the unbiased one (``ddof=1``), as
      ``torch.std`` gives and lovely-tensors prints. Statistics are over the finite
      entries only and accumulated in float64; integer and boolean arrays are
      summarised as floats (``2.000``, not ``2``), as in seed document 000.
    * ``all_zeros`` instead of the statistics when every finite entry is zero (and
      there is more than one); ``empty`` for an array without elements;
    * ``+Inf!×k``, ``-Inf!×k``, ``NaN!×k``: lovely-tensors' warnings, with the count
      ``k`` of such entries;
    * a dtype suffix for anything that is not float32: ``f64``, ``f16``, ``bf16``,
      ``i64``, ``i32``, ``u8``, ``bool``, ... (float32 is the default, unmarked);
    * the values themselves when there are at most 10.

    Numbers follow lovely-tensors: three decimals (``-34.649``), scientific notation
    when the magnitude is above 1000 or below 1e-4 (``3.024e+03``), and zero as ``0.``.

    Args:
      x: a numpy or jax array, or anything ``np.asarray`` takes (numbers, lists).
      name: printed first, e.g. a layer name.

    Returns:
      The description, one line, no trailing newline.

    Raises:
      TypeError: ``x`` is not numeric or boolean, or is a traced array inside a jax
        transformation.
    """
    a = _as_numpy(x)
    shape = str(tuple(a.shape))
    count = f"n={a.size}" if a.shape and max(a.shape) != a.size else None
    suffix = _DTYPE_SUFFIX.get(a.dtype.name, a.dtype.name)
    head = [name, shape, count]

    if a.size == 0:
        return _join(head + ["empty", suffix])
    if a.dtype.kind == "c":  # no order, no min/max: shape and type only
        return _join(head + [suffix])

    if a.dtype.kind == "b":
        f = a.astype(np.float64)
    elif a.dtype.kind in "iuf":
        f = a
    else:  # bfloat16, float8 and other ml_dtypes floats
        f = a.astype(np.float32)

    stats = None
    zeros = None
    flags: list[str] = []
    if f.dtype.kind == "f":
        finite = np.isfinite(f)
        all_finite = bool(finite.all())
        if not all_finite:
            bad = f[~finite]
            for label, n_bad in (
                ("+Inf!", int(np.isposinf(bad).sum())),
                ("-Inf!", int(np.isneginf(bad).sum())),
                ("NaN!", int(np.isnan(bad).sum())),
            ):
                if n_bad:
                    flags.append(f"{label}×{n_bad}")
            good = f[finite]
        else:
            good = f.reshape(-1)
    else:
        good = f.reshape(-1)

    n_good = good.size
    if n_good and not np.any(good != 0) and a.size > 1:
        zeros = "all_zeros"
    elif n_good >= 2:
        lo, hi = float(good.min()), float(good.max())
        mean = float(np.mean(good, dtype=np.float64))
        std = float(np.std(good, dtype=np.float64, ddof=1))
        minmax = f"x∈[{_number(lo)}, {_number(hi)}]" if n_good > 2 else None
        stats = _join([minmax, f"μ={_number(mean)} σ={_number(std)}"])

    values = _values(a if a.dtype.kind in "biuf" else f) if a.size <= _SHOW_VALUES_UP_TO else None
    return _join(head + [stats, zeros, *flags, suffix, values])


def _std_or_one(std: jax.Array) -> jax.Array:
    return jnp.where(jnp.isfinite(std) & (std > 0), std, jnp.ones_like(std))


def sigmas(x: jax.typing.ArrayLike, n: float = 3) -> jax.Array:
    """Centres an array at 0.5 and scales it so that ±n standard deviations span [0, 1].

    Computes ``(x - mean(x)) / (2 * n * std(x)) + 0.5``, so the mean maps to 0.5,
    ``mean ± n·std`` to 0 and 1; clip the result to [0, 1] to show it as an image
    (values beyond n sigmas fall outside). This is ``sigmas`` of seed document 000,
    used there to show AlexNet's first-layer filters, which were zero-centred by
    contrast normalisation in the tradition of Zeiler & Fergus (2014). ``std`` is
    the unbiased one (``ddof=1``), as ``torch.Tensor.std`` in the seed; statistics
    are over the whole array.

    Unlike the seed's version (``x /= ...``), the input is never modified. When the
    standard deviation is zero or undefined (fewer than two entries), 1 is used
    instead, so a constant array maps to 0.5 everywhere rather than to NaN.

    Args:
      x: array of any shape (numpy or jax); works under ``jax.jit``.
      n: how many standard deviations map to each half of [0, 1].

    Returns:
      Float array of the same shape.
    """
    x = jnp.asarray(x)
    x = x.astype(jnp.result_type(x.dtype, jnp.float32))
    std = _std_or_one(jnp.std(x, ddof=1))
    return (x - jnp.mean(x)) / (2 * n * std) + 0.5


def pos_sigmas(x: jax.typing.ArrayLike, n: float = 2) -> jax.Array:
    """Scales a non-negative array so that n standard deviations of its positive part map to 1.

    Computes ``x / (n * std(x[x > 0]))``: zero stays 0 and a value n standard
    deviations of the positive entries maps to 1. Meant for ReLU and max-pool
    outputs, whose many zeros would shrink a plain standard deviation. This is
    ``pos_sigmas`` of seed document 000, which adds 0.5 at the call site,
    ``pos_sigmas(a, n=2) + 0.5``, to show zero as mid-grey.

    ``std`` is the unbiased one (``ddof=1``) over the positive entries, as
    ``torch.Tensor.std`` in the seed; it is computed with a mask, not by boolean
    indexing, so the function works under ``jax.jit``. When there are fewer than
    two positive entries, or their standard deviation is zero, 1 is used instead.
    The input is never modified.

    Args:
      x: array of any shape (numpy or jax), normally non-negative.
      n: how many standard deviations of the positive entries map to 1.

    Returns:
      Float array of the same shape.
    """
    x = jnp.asarray(x)
    x = x.astype(jnp.result_type(x.dtype, jnp.float32))
    positive = x > 0
    k = jnp.sum(positive)
    mean = jnp.sum(jnp.where(positive, x, 0)) / jnp.maximum(k, 1)
    var = jnp.sum(jnp.where(positive, (x - mean) ** 2, 0)) / jnp.maximum(k - 1, 1)
    std = jnp.where(k >= 2, jnp.sqrt(var), jnp.nan)
    return x / (n * _std_or_one(std))

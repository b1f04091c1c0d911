"""Adding one XLA flag to ``XLA_FLAGS`` before JAX starts its backends (jaxviz.cpu, jaxviz.gpu).

XLA reads ``XLA_FLAGS`` once, when the first backend starts, and aborts the process on a
flag it does not know; so a flag is added only for jaxlib versions known to accept it, only
while the backends have not started, and never over a user's own setting of the same option.
"""

from __future__ import annotations

import os


def jaxlib_version() -> tuple[int, int]:
    """``(major, minor)`` of the installed jaxlib."""
    import jaxlib

    major, minor = jaxlib.__version__.split(".")[:2]
    return int(major), int(minor)


def backends_started() -> bool:
    """Whether JAX has started its backends (after which ``XLA_FLAGS`` is not read again)."""
    try:
        from jax._src import xla_bridge
    except ImportError:  # pragma: no cover - layout of a future jax
        return False
    started = getattr(xla_bridge, "backends_are_initialized", None)
    return bool(started()) if started is not None else False


def flag_set(flag: str) -> bool:
    """Whether ``XLA_FLAGS`` carries ``flag`` (in effect if set before JAX started)."""
    return flag in os.environ.get("XLA_FLAGS", "").split()


def add_flag(flag: str, settings: tuple[str, ...], known: tuple[tuple[int, int], ...],
             caller: str) -> bool:
    """Add ``flag`` to ``XLA_FLAGS``; see jaxviz.cpu.use_fast_convolutions for the contract.
    Returns True when the flag is in effect; False when the user's ``XLA_FLAGS`` already
    names one of ``settings`` (theirs wins) or this jaxlib is not in ``known``. Raises
    RuntimeError when the backends have started without it."""
    flags = os.environ.get("XLA_FLAGS", "")
    if flag_set(flag):
        return True
    if any(setting in flags for setting in settings) or jaxlib_version() not in known:
        return False
    if backends_started():
        raise RuntimeError(
            f"{caller} must run before the first JAX computation (JAX's backends have "
            f"started, so XLA flags can no longer change); call it earlier, or start "
            f"Python with XLA_FLAGS={flag}")
    os.environ["XLA_FLAGS"] = f"{flags} {flag}".strip()
    return True

"""What enters a public function, checked in one place.

Every public function of capture, attribution, synthesis and analysis, and the
command, passes its input batch through :func:`batch` and is wrapped in
:func:`boundary`, so each rule below is written once and every caller gets the same
message for the same mistake:

- an array at all, of a float dtype (an integer array of pixels is named as such);
- the rank the model takes ((N, H, W, C) images, (N, F) vectors), one image without its
  batch axis named as such (``x[None]``);
- not empty: at least one example, and no zero-sized height or width;
- the model's channel count (from ``model.input_spec()``, see
  :func:`jaxviz.models.modules.input_spec`); an NCHW batch is named as such and told
  ``x.transpose(0, 2, 3, 1)``; grey into an RGB model and RGB into a grey one are told
  how to convert;
- finite values (NaN and inf are counted and the first one located), checked when the
  values are known (not under ``jax.jit``, where ``x`` is abstract);
- what only the model's variables know (a user's model with no ``input_spec``, or the
  variables of another model): Flax's scope errors are translated by :func:`boundary`.

Index ranges (class, channel, position) are checked against the layer's real size by
the objectives (:mod:`jaxviz.objectives`), before anything is compiled.

The error types are in :mod:`jaxviz.errors`; ``docs/errors.md`` lists the bad inputs
the tests try and the error each gets.
"""

from __future__ import annotations

import functools
import inspect
import numbers
import re
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import flax
import jax
import jax.numpy as jnp
import numpy as np

from jaxviz._host import to_device
from jaxviz.errors import InputError, InputTypeError, ModelError
from jaxviz.models.modules import InputSpec, input_spec

F = TypeVar("F", bound=Callable[..., Any])


def _name(model: Any) -> str:
    return type(model).__name__


def as_array(x: Any, what: str = "x") -> Any:
    """``x`` as a numpy or jax array (lists become numpy arrays); anything else fails."""
    if isinstance(x, (np.ndarray, jax.Array)):
        return x
    if isinstance(x, (list, tuple)) or np.isscalar(x):
        try:
            return np.asarray(x)
        except ValueError:
            pass
    raise InputTypeError(f"expected {what} as an array, got {type(x).__name__}")


def _layout_hint(spec: InputSpec | None, x: Any, model: Any, what: str) -> str | None:
    """Why a 4-D batch does not fit an image model's channels, and what to do; or None."""
    c = x.shape[-1]
    nchw = (f"{what} of shape {tuple(x.shape)} looks like an NCHW batch (N, C, H, W); jaxviz "
            f"takes NHWC (channels last): pass {what}.transpose(0, 2, 3, 1)")
    if spec is None:  # nothing is known of the channels: only an unmistakable NCHW batch
        return nchw if x.shape[1] in (1, 3) and c > 4 else None
    expected = spec.channels
    if c == expected:
        return None
    if x.shape[1] == expected:
        return nchw
    found = (f"{_name(model)} takes {spec.describe()}; {what} has {c} channel{'s' * (c != 1)} "
             f"(shape {tuple(x.shape)})")
    if expected == 3 and c == 1:
        normalize = " before normalizing" if spec.scale == "imagenet" else ""
        return (f"{found}: repeat a grey image on 3 channels, np.repeat({what}, 3, axis=-1)"
                f"{normalize}")
    if expected == 3 and c == 4:
        return f"{found}: drop the alpha channel, {what}[..., :3]"
    if expected == 1 and c in (3, 4):
        return f"{found}: convert to grey, {what}[..., :3].mean(axis=-1, keepdims=True)"
    return found


def positive_int(value: Any, what: str, minimum: int = 1) -> int:
    """``value`` as an int if it is an integer (not a bool) of at least ``minimum``; else
    :class:`InputError` naming ``what``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise InputError(f"expected {what} as an int >= {minimum}, got {value!r}")
    return int(value)


def finite(a: Any, what: str) -> None:
    """Raises :class:`InputError` if the concrete array ``a`` holds NaN or inf (tracers pass)."""
    if isinstance(a, jax.core.Tracer):
        return
    a = np.asarray(a)
    bad = ~np.isfinite(a)
    if bad.any():
        nan, inf = int(np.isnan(a).sum()), int(np.isinf(a).sum())
        first = tuple(int(i) for i in np.argwhere(bad)[0])
        raise InputError(f"{what} holds values that are not finite ({nan} NaN, {inf} inf; the "
                         f"first at index {first}); gradients and maps of such input are "
                         f"meaningless")


def batch(x: Any, model: Any = None, *, what: str = "x", images: bool = False) -> jax.Array:
    """``x`` checked as a batch for ``model`` and returned as a jax array.

    Args:
      x: the input batch.
      model: the model it is for (None: only the generic rules).
      what: the argument's name, for messages.
      images: the function needs images (N, H, W, C) even when the model's input is
        unknown (occlusion, Grad-CAM, synthesis).

    Returns:
      ``x`` as a jax array, dtype unchanged.

    Raises:
      InputTypeError: not an array, or not a float dtype.
      InputError: wrong rank, layout or channel count; empty; NaN or inf values.
      ModelError: ``images`` but the model takes vectors.
    """
    x = as_array(x, what)
    shape(x, model, what=what, images=images)
    finite(x, what)
    return to_device(x)


def shape(x: Any, model: Any = None, *, what: str = "x", images: bool = False) -> None:
    """The rules of :func:`batch` that need only ``x.shape`` and ``x.dtype`` (so ``x`` may
    be a ``jax.ShapeDtypeStruct``, e.g. the traced output of a preprocessing function)."""
    spec = input_spec(model) if model is not None else None
    if not jnp.issubdtype(x.dtype, jnp.floating):
        hint = (" (uint8 pixels? jaxviz.data.preprocess turns images into model input)"
                if jnp.issubdtype(x.dtype, jnp.integer) else "")
        raise InputTypeError(f"expected {what} as a float array, got dtype {x.dtype}{hint}")
    if spec is not None and spec.kind == "vector":
        if images:
            raise ModelError(f"this method works on images; {_name(model)} takes "
                             f"{spec.describe()}")
        if x.ndim == 1 and x.shape[0] == spec.channels:
            raise InputError(f"expected {what} as a batch {spec.describe()}; got one vector of "
                             f"shape {tuple(x.shape)}: add the batch axis, {what}[None]")
        if x.ndim != 2 or x.shape[1] != spec.channels:
            raise InputError(f"{_name(model)} takes {spec.describe()}; got {what} of shape "
                             f"{tuple(x.shape)}")
    elif spec is not None or images:
        if x.ndim == 3 and x.shape[-1] in (1, 3, 4):
            raise InputError(f"expected {what} as a batch (N, H, W, C); got one image of shape "
                             f"{tuple(x.shape)}: add the batch axis, {what}[None]")
        if x.ndim != 4:
            expected = spec.describe() if spec is not None else "(N, H, W, C) images"
            other = ("" if spec is not None else " (a model that takes other inputs says so "
                     "with an input_spec() method: jaxviz.models.modules.InputSpec)")
            raise InputError(f"expected {what} as {expected}; got shape {tuple(x.shape)}{other}")
    if x.ndim == 0 or x.shape[0] == 0:
        raise InputError(f"{what} is an empty batch (shape {tuple(x.shape)}): pass at least "
                         f"one example")
    if x.ndim == 4:
        if 0 in x.shape[1:3]:
            raise InputError(f"{what} has no pixels (shape {tuple(x.shape)}): height and width "
                             f"must be at least 1")
        hint = _layout_hint(spec, x, model, what)
        if hint:
            raise InputError(hint)


# --- errors from inside Flax, said in the caller's terms ----------------------------------

_URL = re.compile(r"\s*\(https?://[^)]*\)")


def _flax_message(error: Exception) -> str:
    return _URL.sub("", str(error)).strip()


def translate(error: Exception, model: Any = None) -> Exception | None:
    """Our error for a Flax scope error raised while ``model`` ran, or None.

    A parameter of the wrong shape means the input or the variables do not fit the
    model; a missing parameter or collection means the variables belong to another
    model (or are not a Linen variables dict).
    """
    errors = flax.errors
    who = _name(model) if model is not None else "the model"
    if isinstance(error, errors.ScopeParamShapeError):
        return InputError(f"the input or the variables do not fit {who}: {_flax_message(error)} "
                          f"Pass x with the channels the model was built for, and the "
                          f"variables made for this model (jaxviz.load returns the pair)")
    if isinstance(error, (errors.ScopeParamNotFoundError, errors.ScopeCollectionNotFound,
                          errors.ApplyScopeInvalidVariablesTypeError)):
        return ModelError(f"the variables do not belong to {who}: {_flax_message(error)} "
                          f"Pass the variables made for this model (jaxviz.load returns the "
                          f"pair)")
    return None


def variables(value: Any) -> None:
    """Raises :class:`ModelError` unless ``value`` is a Linen variables dict (a mapping with
    a ``'params'`` entry, as :func:`jaxviz.load` returns), naming the usual slip of
    passing ``variables['params']`` alone."""
    if not isinstance(value, Mapping):
        raise ModelError(f"expected variables as the dict jaxviz.load returns "
                         f"({{'params': ..., 'batch_stats': ...}}), got {type(value).__name__}")
    if value and "params" not in value:
        keys = sorted(map(str, value))[:4]
        raise ModelError(f"expected variables as the dict jaxviz.load returns, with a 'params' "
                         f"entry; got a dict with keys {keys}: if that is variables['params'], "
                         f"pass the whole dict")


def boundary(fn: F) -> F:
    """Decorates a public function of ``(model, variables, ...)``: the variables are
    checked (:func:`variables`), and Flax's scope errors raised inside reach the caller as
    :mod:`jaxviz.errors` types, with the fix."""
    signature = inspect.signature(fn)

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        given = signature.bind_partial(*args, **kwargs).arguments
        if "variables" in given:
            variables(given["variables"])
        try:
            return fn(*args, **kwargs)
        except flax.errors.FlaxError as e:
            ours = translate(e, given.get("model"))
            if ours is None:
                raise
            raise ours.with_traceback(None) from e

    return wrapper  # type: ignore[return-value]


__all__ = ["as_array", "batch", "boundary", "finite", "positive_int", "shape", "translate",
           "variables"]

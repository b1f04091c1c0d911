"""Receptive fields: which input pixels each unit of a layer sees.

A layer's receptive field is described by three numbers per axis (:class:`Field`): the
field's ``size``, the ``stride`` (input pixels between neighbouring units, the "jump")
and the ``offset`` (the input row or column where unit 0's field starts; negative
when padding puts part of it outside the image). Unit ``(i, j)`` sees input rows
``offset[0] + i * stride[0]`` to ``offset[0] + i * stride[0] + size[0] - 1`` and the
columns likewise. The fields are computed from the layers, not from gradients: one
abstract forward pass (``jax.eval_shape``, nothing is computed) records each module
call's kernel, stride, padding and dilation, and the standard recurrences carry the
field along the data flow, for a layer of kernel ``k``, stride ``s``, low padding ``p``
and dilation ``d`` on a map whose field is ``(size, stride, offset)``::

    size'   = size + (k - 1) * d * stride
    stride' = stride * s
    offset' = offset - p * stride

Reference: Araujo, Norris & Sim, "Computing Receptive Fields of Convolutional Neural
Networks", Distill 2019.

How the data flow is followed. Arrays are tracked by identity as they pass from one
module call to the next (the array a module returns is the array the next receives).
Modules of these kinds move the window:

* :class:`~jaxviz.models.modules.Conv2d`, :class:`~jaxviz.models.modules.MaxPool2d`
  (``ceil_mode`` adds units at the end of the map but does not change the arithmetic),
  ``flax.linen.Conv`` and ``ConvLocal`` (explicit, ``SAME``, ``VALID`` or ``REFLECT``
  padding, kernel dilation; not ``CIRCULAR`` padding, nor input dilation);
* :class:`~jaxviz.models.modules.AdaptiveAvgPool2d`: the identity when the output size
  equals the input's (VGG's ``avgpool`` at 224 px), a ``k x k`` pool of stride ``k``
  when the input side is ``k`` times the output's (a global pool to ``1 x 1`` included:
  its one unit sees the whole input), otherwise its bins are uneven and the layer and
  those after it have no regular field.

Per-pixel modules (ReLU, BatchNorm, Dropout, Linear/Dense on a map, LayerNorm over the
channels) keep the field. A module of another kind that keeps the map's size and has
no kernel of rank 3 or more is taken as per-pixel; one that changes the map's size or
holds a spatial kernel gets no field, and asking for it (or for a layer after it)
raises :class:`~jaxviz.errors.LayerError` naming the module. Code between module calls
(GoogLeNet's ``transform_input``, the functional ReLU inside its conv blocks,
the concatenation of an inception block's branches) is not seen: a module that receives an
array no module returned gets the union of the module outputs of its container not yet
used by another module, provided they have the array's spatial size (a per-pixel
function, or a concatenation on channels); a container that returns such an array gets
the same union. The union of fields with equal strides is the smallest field covering
all of them (smallest offset, largest extent). A function between modules that changes
the map's size (``flax.linen.max_pool``) cannot be followed: the module after it raises
:class:`~jaxviz.errors.LayerError`; use a pooling module instead.

Layers without a spatial map (after a flatten: the classifier's Linear layers, LeNet's
global max pool) see the whole input, as do maps after a normalization over the whole
map (``GroupNorm``, ``InstanceNorm``); they are left out of :func:`receptive_fields`, and
:func:`receptive_field` raises :class:`~jaxviz.errors.LayerError` for them.

The field is the window of the network's arithmetic. :func:`patch_bounds` clips it to
the image. Under the ``linear`` backward rule (:mod:`jaxviz.rules`), with weights whose
products do not cancel, the input gradient of a unit is nonzero on exactly that box for
units whose window does not run past the image's bottom or right edge
(``tests/test_receptive.py`` measures it on AlexNet, VGG16 and GoogLeNet). A unit at
the bottom or right edge of a map whose layers dropped trailing input rows (a floor in
the output size) can see fewer pixels than its clipped window.
"""

from __future__ import annotations

import functools
import numbers
from collections.abc import Sequence
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from jaxviz import capture, checks
from jaxviz.errors import InputError, InputTypeError, LayerError
from jaxviz.models import layers
from jaxviz.models.modules import (AdaptiveAvgPool2d, BatchNorm2d, Conv2d, Dropout, Linear,
                                   MaxPool2d, ReLU, input_spec)
from jaxviz.static import static, unwrap

__all__ = ["Field", "crop_patches", "patch_bounds", "receptive_field", "receptive_fields"]

_FALLBACK_SIZE = 224  # input side for a model that does not declare its usual size


class Field(NamedTuple):
    """The receptive field of a layer's units, as (height, width) pairs of ints.

    Attributes:
      size: the field's height and width in input pixels.
      stride: input pixels between neighbouring units (the "jump").
      offset: input row and column of the top-left pixel of unit (0, 0)'s field;
        negative when padding puts part of it outside the image.

    Unit ``(i, j)`` sees input rows ``offset[0] + i * stride[0]`` to
    ``offset[0] + i * stride[0] + size[0] - 1``, and the columns likewise.
    """

    size: tuple[int, int]
    stride: tuple[int, int]
    offset: tuple[int, int]


_IDENTITY = Field((1, 1), (1, 1), (0, 0))


class _NoField(NamedTuple):
    """A layer without a regular field. ``kind``: "whole" (no spatial map: every unit
    sees the whole input), "irregular" (a map whose units' fields are not a regular
    grid), "unknown" (a module or function the fields cannot be followed through)."""

    kind: str
    reason: str


def _window(field: Field, kernel: Sequence[int], stride: Sequence[int], low_pad: Sequence[int],
            dilation: Sequence[int] = (1, 1)) -> Field:
    """The field after a window of ``kernel`` (``stride``, ``low_pad``, ``dilation``)."""
    jump = field.stride
    size = tuple(n + (k - 1) * d * j for n, k, d, j in zip(field.size, kernel, dilation, jump))
    return Field(size, tuple(j * s for j, s in zip(jump, stride)),
                 tuple(o - p * j for o, p, j in zip(field.offset, low_pad, jump)))


def _union(states: Sequence[Field | _NoField], what: str) -> Field | _NoField:
    """The smallest field that covers every one of ``states`` (their strides must agree)."""
    for kind in ("unknown", "irregular", "whole"):
        for s in states:
            if isinstance(s, _NoField) and s.kind == kind:
                return s
    fields: list[Field] = list(states)  # type: ignore[arg-type]
    if len({f.stride for f in fields}) > 1:
        strides = ", ".join(str(f.stride) for f in fields)
        return _NoField("irregular", f"{what} combines maps of different strides ({strides}): "
                                     f"its units' fields are not a regular grid")
    offset = tuple(min(f.offset[a] for f in fields) for a in (0, 1))
    end = tuple(max(f.offset[a] + f.size[a] for f in fields) for a in (0, 1))
    return Field(tuple(e - o for e, o in zip(end, offset)), fields[0].stride, offset)


def _is_map(a: Any) -> bool:
    return hasattr(a, "shape") and hasattr(a, "dtype") and len(a.shape) == 4


def _hw(a: Any) -> tuple[int, int]:
    return tuple(int(n) for n in a.shape[1:3])


def _describe(module: nn.Module) -> str:
    path = ".".join(module.path)
    return f"{path!r} ({type(module).__name__})" if path else type(module).__name__


# Per-pixel modules: each output pixel depends on the same input pixel only.
_PER_PIXEL = (ReLU, BatchNorm2d, Dropout, Linear, nn.Dense, nn.BatchNorm, nn.Dropout)
# Normalizations over the whole map: every unit depends on every input pixel.
_WHOLE_MAP = (nn.GroupNorm, nn.InstanceNorm)


def _flax_conv_geometry(module: nn.Module, x: Any):
    """(kernel, stride, low padding, dilation) of a ``flax.linen.Conv`` on map ``x``, or a
    reason it has no regular field."""
    if isinstance(module.kernel_size, int):
        return "it is a 1-D convolution (an int kernel_size)"
    kernel = tuple(int(k) for k in module.kernel_size)
    if len(kernel) != 2:
        return f"its kernel_size {kernel} is not 2-D"

    def pair(v):
        if v is None:
            return (1, 1)
        return (int(v),) * 2 if isinstance(v, int) else tuple(int(t) for t in v)

    stride, dilation, input_dilation = pair(module.strides), pair(module.kernel_dilation), \
        pair(module.input_dilation)
    if input_dilation != (1, 1):
        return f"it dilates its input (input_dilation={input_dilation}): a fractional stride"
    padding = module.padding
    dilated = tuple((k - 1) * d + 1 for k, d in zip(kernel, dilation))
    if isinstance(padding, str):
        name = padding.upper()
        if name == "CIRCULAR":
            return "its CIRCULAR padding wraps the window around the map"
        if name == "REFLECT":
            pads = [((k - 1) // 2, k // 2) for k in dilated]
        elif name in ("SAME", "SAME_LOWER", "VALID"):
            pads = lax.padtype_to_pads(_hw(x), dilated, stride, name)
        else:
            return f"its padding {padding!r} is not one the fields follow"
    else:
        try:
            pads = nn.linear.canonicalize_padding(padding, 2)
        except ValueError:
            return f"its padding {padding!r} is not one the fields follow"
    return kernel, stride, tuple(int(lo) for lo, _ in pads), dilation


def _has_spatial_kernel(module: nn.Module) -> bool:
    try:
        params = module.variables.get("params", {})
    except Exception:  # noqa: BLE001 - an unbound module has no variables to look at
        return False
    return any(getattr(leaf, "ndim", 0) >= 3 for leaf in jax.tree_util.tree_leaves(params))


def _leaf(module: nn.Module, x: Any, state: Field | _NoField, out: Any) -> Field | _NoField:
    """The field of a module that called no other module, from its input's."""
    name = _describe(module)
    if not _is_map(out):
        return _NoField("whole", f"{name} has no spatial map (output shape "
                                 f"{tuple(getattr(out, 'shape', ()))}): each of its units sees "
                                 f"the whole input")
    if not _is_map(x):
        return _NoField("unknown", f"{name} makes a map of shape {tuple(out.shape)} from an "
                                   f"input that is not one; its field cannot be followed")
    if isinstance(module, _WHOLE_MAP):
        return _NoField("whole", f"{name} normalizes over the whole map: each of its units "
                                 f"depends on the whole input")
    if isinstance(state, _NoField):
        return state
    if isinstance(module, Conv2d):
        return _window(state, layers.pair(module.kernel_size), layers.pair(module.stride),
                       layers.pair(module.padding))
    if isinstance(module, MaxPool2d):
        kernel = layers.pair(module.kernel_size)
        stride = layers.pair(module.stride if module.stride is not None else module.kernel_size)
        return _window(state, kernel, stride, layers.pair(module.padding))
    if isinstance(module, (nn.Conv, nn.ConvLocal)):
        geometry = _flax_conv_geometry(module, x)
        if isinstance(geometry, str):
            return _NoField("unknown", f"{name}: {geometry}; receptive fields do not follow it")
        return _window(state, *geometry)
    if isinstance(module, AdaptiveAvgPool2d):
        kernel = []
        for n_in, n_out in zip(_hw(x), _hw(out)):
            if n_in % n_out:
                return _NoField("irregular", f"{name} pools {_hw(x)} to {_hw(out)}: its bins "
                                             f"are uneven, so its units' fields are not a "
                                             f"regular grid (the field is regular when the "
                                             f"input side is a multiple of the output side)")
            kernel.append(n_in // n_out)
        return _window(state, kernel, kernel, (0, 0))
    if isinstance(module, nn.LayerNorm):
        axes = module.reduction_axes
        axes = (axes,) if isinstance(axes, int) else tuple(axes)
        if any(a % 4 in (1, 2) for a in axes):
            return _NoField("whole", f"{name} normalizes over the spatial axes: each of its "
                                     f"units depends on the whole input")
        return state
    same = _hw(out) == _hw(x)
    if isinstance(module, _PER_PIXEL) and same:
        return state
    if same and not _has_spatial_kernel(module):
        return state  # another kind of module, taken as per-pixel
    change = f"changes the map from {_hw(x)} to {_hw(out)}" if not same else \
        "holds a spatial kernel"
    return _NoField("unknown", f"{name} {change}, and receptive fields do not know its "
                               f"kind; build it from jaxviz.models.modules (Conv2d, "
                               f"MaxPool2d, AdaptiveAvgPool2d) or flax.linen.Conv")


class _Frame:
    """One module call in progress: the arrays made in its scope (its input and what its
    direct children returned) and which of them a child has taken as input."""

    def __init__(self, module: nn.Module):
        self.module = module
        self.made: list[int] = []
        self.used: set[int] = set()
        self.calls = 0

    def fresh(self) -> list[int]:
        return [i for i in self.made if i not in self.used]


class _Recorder:
    """Follows fields through the module calls of one forward pass (an interceptor)."""

    def __init__(self):
        self.known: dict[int, tuple[Any, Field | _NoField]] = {}  # id -> (array, state)
        self.frames: list[_Frame] = []
        self.layers: dict[str, Field | _NoField] = {}

    def _set(self, a: Any, state: Field | _NoField, frame: _Frame | None) -> None:
        self.known[id(a)] = (a, state)  # keeps ``a`` alive: its id stays its own
        if frame is not None:
            frame.made.append(id(a))
            frame.used.discard(id(a))

    def _unseen(self, a: Any, frame: _Frame | None, where: str) -> Field | _NoField:
        """The state of an array no module returned: the union of the unused module
        outputs of ``frame`` with its spatial size (a per-pixel function or a
        concatenation of them)."""
        if not _is_map(a):
            return _NoField("whole", f"{where} has no spatial map: each unit sees the whole "
                                     f"input")
        fresh = [] if frame is None else [i for i in frame.fresh() if _is_map(self.known[i][0])]
        if not fresh:
            return _NoField("unknown", f"{where} is a map made by code outside any module "
                                       f"from nothing the fields can follow")
        sizes = {_hw(self.known[i][0]) for i in fresh}
        if sizes != {_hw(a)}:
            before = ", ".join(str(s) for s in sorted(sizes))
            return _NoField("unknown", f"{where} is made by code outside any module that "
                                       f"changes the map from {before} to {_hw(a)} (a "
                                       f"function such as flax.linen.max_pool); receptive "
                                       f"fields follow modules only: use a module for it "
                                       f"(jaxviz.models.modules.MaxPool2d)")
        frame.used.update(fresh)
        return _union([self.known[i][1] for i in fresh], where)

    def __call__(self, next_fun, args, kwargs, context):
        if context.method_name != "__call__":
            return next_fun(*args, **kwargs)
        module = context.module
        name = _describe(module)
        x = args[0] if args else next(iter(kwargs.values()), None)
        parent = self.frames[-1] if self.frames else None
        if parent is None:  # the model's input
            self._set(x, _IDENTITY if _is_map(x) else _NoField(
                "whole", "the model's input is not a map of images"), None)
        if id(x) in self.known and self.known[id(x)][0] is x:
            state = self.known[id(x)][1]
        else:
            state = self._unseen(x, parent, f"the input of {name}")
            self._set(x, state, parent)
        if parent is not None:
            parent.calls += 1
            parent.used.add(id(x))
        frame = _Frame(module)
        frame.made.append(id(x))
        self.frames.append(frame)
        try:
            out = next_fun(*args, **kwargs)
        finally:
            self.frames.pop()
        if frame.calls == 0:
            out_state = _leaf(module, x, state, out)
        elif id(out) in self.known and self.known[id(out)][0] is out:
            out_state = self.known[id(out)][1]
        else:
            out_state = self._unseen(out, frame, f"the output of {name}")
        self._set(out, out_state, parent)
        if module.path:
            path = ".".join(module.path)
            self.layers.pop(path, None)  # a module called twice keeps its last call
            self.layers[path] = out_state
        return out


@functools.lru_cache(maxsize=64)
def _traced(key: Any, shape: tuple[int, ...]) -> dict[str, Field | _NoField]:
    """path -> field (or why none) of every layer of the model at input ``shape``."""
    model = unwrap(key)
    x = jax.ShapeDtypeStruct(shape, jnp.float32)
    variables = jax.eval_shape(model.init, jax.random.key(0), x)
    recorder = _Recorder()
    with nn.intercept_methods(recorder):
        jax.eval_shape(model.apply, variables, x)
    return recorder.layers


def _input_shape(model: nn.Module, size: Any) -> tuple[int, ...]:
    spec = input_spec(model)
    if spec is not None and spec.kind == "vector":
        raise InputError(f"{type(model).__name__} takes {spec.describe()}: its units have no "
                         f"receptive field in an image")
    if size is None:
        size = spec.size if spec is not None and spec.size else _FALLBACK_SIZE
    shape = capture._as_shape(model, size)
    if len(shape) != 4:
        raise InputError(f"receptive fields need an image input (N, H, W, C); got the input "
                         f"shape {shape}")
    return (1, *shape[1:])


def _fields(model: nn.Module, size: Any):
    shape = _input_shape(model, size)
    table = capture.layer_names(model, shape)  # raises InputError when the model cannot run
    return table, _traced(static(model), shape), shape


@checks.boundary
def receptive_field(model: nn.Module, layer: str, size: Any = None) -> Field:
    """The receptive field of ``layer``'s units in the input.

    Args:
      model: one of our models or a Linen model of images (see the module's docstring
        for the modules whose fields are followed).
      layer: a layer's path or alias, as :func:`jaxviz.layer_names` lists them.
      size: the input size the model is traced at (an int, (H, W), (H, W, C) or a full
        shape); default the model's usual size (``model.input_spec().size``, else 224).
        Fields depend on it only through ``SAME`` padding and adaptive pools.

    Returns:
      :class:`Field` ``(size, stride, offset)``, each an (height, width) pair of ints.

    Raises:
      LayerError: an unknown layer; a layer without a spatial map (its units see the
        whole input), with fields that are not a regular grid, or after a module the
        fields cannot be followed through (the message names it).
      InputError: a model of vectors, or a size it cannot run at.
    """
    table, states, shape = _fields(model, size)
    (path,) = capture.resolve(model, [layer], table)
    state = states.get(path)
    if state is None:
        raise LayerError(f"layer {layer!r} was not reached by the forward pass at input shape "
                         f"{shape}")
    if isinstance(state, _NoField):
        raise LayerError(f"layer {layer!r} has no receptive field in the input grid: "
                         f"{state.reason}")
    return state


@checks.boundary
def receptive_fields(model: nn.Module, size: Any = None) -> dict[str, Field]:
    """The receptive field of every layer with a spatial map, keyed by path, in forward
    order (:func:`jaxviz.layer_names`' order; containers such as ``features`` or
    ``inception3a`` after their children).

    Layers without a spatial map (after a flatten: every unit sees the whole input) and
    layers whose units' fields are not a regular grid (an adaptive pool with uneven
    bins, and what follows it) are left out.

    Args:
      model, size: as for :func:`receptive_field`.

    Returns:
      ``{path: Field}``.

    Raises:
      LayerError: a layer with a map comes after a module the fields cannot be followed
        through (the message names it).
      InputError: a model of vectors, or a size it cannot run at.
    """
    table, states, _ = _fields(model, size)
    out: dict[str, Field] = {}
    for info in table:
        state = states.get(info.path)
        if isinstance(state, Field):
            out[info.path] = state
        elif isinstance(state, _NoField) and state.kind == "unknown" and len(info.shape) == 4:
            raise LayerError(f"layer {info.path!r} has no receptive field: {state.reason}")
    return out


# --- patches --------------------------------------------------------------------------------


def _position(position: Any) -> tuple[int, int]:
    try:
        i, j = position
    except (TypeError, ValueError):
        raise InputTypeError(f"expected a unit position (i, j) of two ints; got "
                             f"{position!r}") from None
    for v in (i, j):
        if isinstance(v, bool) or not isinstance(v, numbers.Integral):
            raise InputTypeError(f"expected a unit position (i, j) of two ints; got "
                                 f"{position!r}")
    if i < 0 or j < 0:
        raise InputError(f"a unit position is non-negative; got {position!r}")
    return int(i), int(j)


def _field(field: Any) -> Field:
    if not isinstance(field, Field):
        raise InputTypeError(f"expected a Field (from receptive_field); got "
                             f"{type(field).__name__}")
    return field


def patch_bounds(field: Field, position: Sequence[int],
                 input_hw: Sequence[int]) -> tuple[int, int, int, int]:
    """The input box unit ``position`` sees, clipped to the image.

    Args:
      field: a layer's :class:`Field`.
      position: the unit's (i, j) in the layer's map.
      input_hw: the image's (H, W).

    Returns:
      ``(y0, x0, y1, x1)`` with exclusive ends: the unit sees ``image[y0:y1, x0:x1]``.

    Raises:
      InputError: a negative position, or one whose field lies wholly outside the image.
    """
    field = _field(field)
    i, j = _position(position)
    h, w = (int(n) for n in input_hw)
    y0, x0 = (field.offset[a] + p * field.stride[a] for a, p in ((0, i), (1, j)))
    y1, x1 = y0 + field.size[0], x0 + field.size[1]
    box = (max(y0, 0), max(x0, 0), min(y1, h), min(x1, w))
    if box[0] >= box[2] or box[1] >= box[3]:
        raise InputError(f"unit {(i, j)}'s field, rows {y0}..{y1 - 1} and columns "
                         f"{x0}..{x1 - 1}, lies outside the {h} x {w} image")
    return box


def crop_patches(images: Any, ids: Any, positions: Any, field: Field, *,
                 fill: float = 0.0) -> np.ndarray:
    """The input patch each unit sees, at the field's full size.

    Patch ``m`` is unit ``positions[m]``'s field in image ``ids[m]``, aligned so that the
    field is the whole patch: the part outside the image (the padding) holds ``fill``.

    Args:
      images: (N, H, W, C) images.
      ids: (M,) the image of each patch.
      positions: (M, 2) each patch's unit position (i, j) in the layer's map.
      field: the layer's :class:`Field`.
      fill: the value of the pixels outside the image.

    Returns:
      (M, size_h, size_w, C) numpy array in the images' dtype.

    Raises:
      InputError: images not (N, H, W, C), ids or positions of the wrong shape or out of
        range, or a field wholly outside the image.
    """
    field = _field(field)
    a = np.asarray(images)
    if a.ndim != 4:
        raise InputError(f"expected images of shape (N, H, W, C); got shape {a.shape}")
    ids, positions = np.asarray(ids), np.asarray(positions)
    integral = lambda v: v.size == 0 or np.issubdtype(v.dtype, np.integer)  # noqa: E731
    if ids.ndim != 1 or not integral(ids):
        raise InputError(f"expected ids as an (M,) int array; got {ids.dtype} of shape "
                         f"{ids.shape}")
    if positions.shape != (len(ids), 2) or not integral(positions):
        raise InputError(f"expected positions as an (M, 2) int array with M = {len(ids)} "
                         f"(one per id); got {positions.dtype} of shape {positions.shape}")
    if ids.size and (ids.min() < 0 or ids.max() >= len(a)):
        raise InputError(f"ids must lie in [0, {len(a)}); got {ids.min()}..{ids.max()}")
    n, h, w, c = a.shape
    sh, sw = field.size
    out = np.full((len(ids), sh, sw, c), fill, dtype=a.dtype)
    for m, (k, (i, j)) in enumerate(zip(ids.tolist(), positions.tolist())):
        y0, x0, y1, x1 = patch_bounds(field, (i, j), (h, w))
        ty, tx = y0 - (field.offset[0] + i * field.stride[0]), \
            x0 - (field.offset[1] + j * field.stride[1])
        out[m, ty:ty + y1 - y0, tx:tx + x1 - x0] = a[k, y0:y1, x0:x1]
    return out

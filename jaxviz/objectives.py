"""Objectives: one scalar per example, shared by attribution and synthesis.

An objective maps ``(model, variables, x)`` with ``x: (N, H, W, C)`` to an ``(N,)``
array: the quantity whose gradient an attribution method explains or a synthesis loop
ascends. They are small frozen dataclasses, registered as JAX pytrees (indices,
directions and weights are leaves; layer names and positions are static), so one
compiled program serves every target, and they compose::

    import jaxviz as jv
    from jaxviz import objectives as obj

    f = obj.class_logit(281) - 0.5 * obj.channel("conv5", 13)
    values = f(model, variables, x)                # (N,)

Objectives that read layers fetch them with :func:`jaxviz.activations` in one forward
pass that stops after the last layer they need; a combined objective (``a + b``)
captures all its layers in that one pass, together with the logits when a term needs
them. Layers are named as in :func:`jaxviz.layer_names` (module paths or aliases).

Indices (class, channel) are an int, or an int array of shape (N,) that picks one
index per example (example ``n`` of a sweep looks at channel ``index[n]``).

References:
  Simonyan, Vedaldi & Zisserman, "Deep Inside Convolutional Networks: Visualising
  Image Classification Models and Saliency Maps", arXiv:1312.6034, 2013 (class logit).
  Erhan et al., "Visualizing Higher-Layer Features of a Deep Network", 2009 (neuron,
  channel). Olah, Mordvintsev & Schubert, "Feature Visualization", Distill 2017
  (neuron, channel, direction objectives and their sums).
"""

from __future__ import annotations

import dataclasses
import numbers
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxviz import capture, checks
from jaxviz import static as static_lib
from jaxviz._host import to_device
from jaxviz.errors import InputError, InputTypeError, ModelError

ObjectiveFn = Callable[[nn.Module, Any, jax.Array], jax.Array]


# --- the forward pass objectives read ---------------------------------------------------------


class Forward(NamedTuple):
    """What one forward pass captured for an objective.

    Attributes:
      model, variables, x: the call's arguments (a :class:`Function` term reruns them).
      logits: ``model.apply(variables, x)`` when a term needs it, else None.
      acts: ``{layer name as given: activation}`` for every layer a term names.
    """

    model: nn.Module
    variables: Any
    x: jax.Array
    logits: jax.Array | None
    acts: Mapping[str, jax.Array]


def forward(model: nn.Module, variables: Any, x: jax.Array, layers: Sequence[str] = (),
            logits: bool = True) -> Forward:
    """One forward pass that returns the named layers' activations and, if asked, the logits.

    Without ``logits`` this is :func:`jaxviz.activations` (our models stop after the last
    layer asked for). With ``logits`` the whole forward runs once, capturing the layers
    on the way.

    Args:
      model: a Linen module.
      variables: its variables.
      x: (N, H, W, C) input.
      layers: layer names (module paths or aliases).
      logits: whether to run to the output.

    Returns:
      A :class:`Forward`.

    Raises:
      KeyError: a name is not a layer of ``model`` (with the closest valid names).
    """
    names = list(dict.fromkeys(layers))
    out, acts = capture.run(model, variables, x, names, logits=logits)
    return Forward(model, variables, x, out, acts)


# --- static shapes, for checks before a jitted call -----------------------------------------


def output_shape(model: nn.Module, shape: Sequence[int],
                 dtype: Any = jnp.float32) -> tuple[int, ...]:
    """Shape of ``model.apply(variables, x)`` for ``x`` of ``shape`` (traced once per model
    and shape with the layer table, nothing computed).

    Raises:
      ModelError: the model's output is not a single array.
      InputError: the model cannot run on inputs of ``shape``.
    """
    del dtype  # shapes do not depend on it
    out = capture.output_struct(model, tuple(int(s) for s in shape))
    if not hasattr(out, "shape"):
        raise ModelError(f"expected {type(model).__name__} to return one (N, classes) array of "
                         f"logits; it returns {type(out).__name__}")
    return tuple(out.shape)


def _layer_shapes(model: nn.Module, shape: Sequence[int], names: Sequence[str]) -> dict[str, tuple]:
    table = capture.layer_names(model, tuple(int(s) for s in shape), partial=True)
    paths = capture.resolve(model, list(names), table)
    by_path = {info.path: info.shape for info in table}
    return {name: by_path[path] for name, path in zip(names, paths)}


# --- index checks ---------------------------------------------------------------------------


def _is_concrete(value: Any) -> bool:
    return not isinstance(value, jax.core.Tracer)


def _as_index(index: Any, what: str) -> Any:
    """An int or an int array of shape (N,), as an int32 array (a tracer passes through)."""
    if isinstance(index, (bool, np.bool_)):
        raise InputTypeError(f"expected {what} as an int or an int array of shape (N,), got a bool")
    if isinstance(index, numbers.Integral):
        if index < 0:
            raise InputError(f"expected a non-negative {what}, got {index}")
        return np.asarray(index, np.int32)
    if isinstance(index, (list, tuple)):
        index = np.asarray(index)
    if isinstance(index, (np.ndarray, jax.Array)):
        if not jnp.issubdtype(index.dtype, jnp.integer):
            raise InputTypeError(f"expected {what} as an int or an int array of shape (N,), got an "
                            f"array of dtype {index.dtype}")
        if index.ndim > 1:
            raise InputError(f"expected {what} as an int or an int array of shape (N,), got "
                             f"shape {tuple(index.shape)}")
        if _is_concrete(index):
            arr = np.asarray(index)
            if arr.size and arr.min() < 0:
                raise InputError(f"expected non-negative {what}s, got {arr.min()}")
            return arr.astype(np.int32)
        return index.astype(jnp.int32)
    raise InputTypeError(f"expected {what} as an int or an int array of shape (N,), got "
                    f"{type(index).__name__}")


def _check_index(index: Any, n: int, size: int, what: str, where: str) -> None:
    """Checks an index array against the batch size and the axis it indexes (when concrete)."""
    shape = tuple(np.shape(index))
    if shape not in ((), (n,)):
        raise InputError(f"expected one {what} or one per example, shape () or ({n},); got "
                         f"shape {shape}")
    if _is_concrete(index):
        arr = np.asarray(index)
        if arr.size and (arr.min() < 0 or arr.max() >= size):
            bad = arr[(arr < 0) | (arr >= size)].ravel()[0]
            raise InputError(f"{what} {int(bad)} is out of range for {where}: expected "
                             f"0 <= {what} < {size}")


def _per_example(index: Any, n: int) -> jax.Array:
    return jnp.broadcast_to(jnp.asarray(index, jnp.int32), (n,))


def _indexed(found: Forward, layer: str, index: Any) -> tuple[jax.Array, jax.Array]:
    """``layer``'s activation and the (N,) per-example channel indices, checked."""
    a = found.acts[layer]
    _check_index(index, a.shape[0], a.shape[-1], "channel",
                 f"layer {layer!r} with {a.shape[-1]} channels")
    return a, _per_example(index, a.shape[0])


def _check_indexed(model: nn.Module, shape: Sequence[int], layer: str, index: Any) -> tuple:
    """Static check of a channel index against ``layer``; returns the layer's shape."""
    s = _layer_shapes(model, shape, [layer])[layer]
    _check_index(index, s[0], s[-1], "channel", f"layer {layer!r} with {s[-1]} channels")
    return s


def _spatial_mean(a: jax.Array) -> jax.Array:
    """Mean over the spatial axes of (N, ..., C): (N, C); (N, C) passes through."""
    return a.mean(axis=tuple(range(1, a.ndim - 1))) if a.ndim > 2 else a


# --- objectives -----------------------------------------------------------------------------


def _static(**kwargs):
    return dataclasses.field(metadata={"static": True}, **kwargs)


class Objective:
    """Base of all objectives: ``objective(model, variables, x) -> (N,)``, composable.

    ``a + b``, ``a - b``, ``-a``, ``w * a``, ``a / w`` build a :class:`Sum` whose layers
    are captured in one forward pass. A plain callable ``f(model, variables, x) -> (N,)``
    may be added to an objective (it runs its own forward pass).
    """

    def layers(self) -> tuple[str, ...]:
        """Names of the layers this objective reads."""
        return ()

    def needs_logits(self) -> bool:
        """Whether this objective reads the model's output."""
        return False

    def evaluate(self, found: Forward) -> jax.Array:
        """The (N,) values, from a forward pass that captured :meth:`layers`."""
        raise NotImplementedError

    def check(self, model: nn.Module, shape: Sequence[int], dtype: Any = jnp.float32) -> None:
        """Raises if this objective cannot apply to ``model`` on inputs of ``shape``.

        Uses static shapes only (layer tables are cached per model and input shape), so
        it is cheap to call before a jitted computation whose index leaves are traced.

        Raises:
          KeyError: an unknown layer name.
          ValueError: an index out of range, or of the wrong shape.
        """

    def tile(self, reps: int) -> Objective | None:
        """This objective for a batch of ``reps`` copies of the batch, stacked copy-major
        (example ``r * N + n`` is a variant of example ``n``); None when that is unknown
        (a plain callable), so callers vmap over the copies instead."""
        return self

    @checks.boundary
    def __call__(self, model: nn.Module, variables: Any, x: jax.Array) -> jax.Array:
        """(N,) values of the objective for input ``x: (N, H, W, C)``.

        Called on concrete arrays, the forward pass and the objective run as one program,
        compiled once per model, objective structure and input shape (run op by op, a
        first call on GoogLeNet compiled 249 small programs). Under a trace, inside a
        ``flax.linen.intercept_methods`` context, or with a plain callable among the terms
        (:class:`Function`, which may not be traceable), it runs as written.
        """
        x = checks.batch(x, model)
        if (isinstance(x, jax.core.Tracer) or capture._intercepted()
                or not _compilable(self)):
            return _objective_values(model, self, variables, x)
        return _compiled_values(model, self, variables, x)

    # composition
    def __add__(self, other: Any) -> Objective:
        if isinstance(other, Objective) or (callable(other) and not isinstance(other, type)):
            return Sum.of((1.0, self), (1.0, _as_term(other)))
        return NotImplemented

    def __radd__(self, other: Any) -> Objective:
        if isinstance(other, numbers.Number) and other == 0:  # sum([a, b, ...]) starts at 0
            return self
        if callable(other):
            return Sum.of((1.0, _as_term(other)), (1.0, self))
        return NotImplemented

    def __sub__(self, other: Any) -> Objective:
        if isinstance(other, Objective) or callable(other):
            return Sum.of((1.0, self), (-1.0, _as_term(other)))
        return NotImplemented

    def __rsub__(self, other: Any) -> Objective:
        if callable(other):
            return Sum.of((1.0, _as_term(other)), (-1.0, self))
        return NotImplemented

    def __neg__(self) -> Objective:
        return Sum.of((-1.0, self))

    def __mul__(self, weight: Any) -> Objective:
        if _is_scalar(weight):
            return Sum.of((weight, self))
        return NotImplemented

    __rmul__ = __mul__

    def __truediv__(self, weight: Any) -> Objective:
        if _is_scalar(weight):
            return Sum.of((1.0 / weight, self))
        return NotImplemented


def _is_scalar(w: Any) -> bool:
    if isinstance(w, (bool, np.bool_)):
        return False
    if isinstance(w, numbers.Real):
        return True
    return isinstance(w, (np.ndarray, jax.Array)) and np.ndim(w) == 0


def _as_term(f: Any) -> Objective:
    return f if isinstance(f, Objective) else Function(f)


def _tile_leading(a: Any, reps: int, per_example_ndim: int) -> Any:
    """``a`` repeated ``reps`` times along axis 0 when it has a per-example axis."""
    if np.ndim(a) != per_example_ndim:
        return a
    tiles = (reps,) + (1,) * (per_example_ndim - 1)
    if isinstance(a, (jax.Array, jax.core.Tracer)):
        return jnp.tile(a, tiles)
    return to_device(np.tile(np.asarray(a), tiles), copy=False)


def _tile_index(self, reps: int):
    """``tile`` for objectives whose only per-example leaf is ``index``."""
    return dataclasses.replace(self, index=_tile_leading(self.index, reps, 1))


def _objective_values(model: nn.Module, objective: Objective, variables: Any,
                      x: jax.Array) -> jax.Array:
    found = forward(model, variables, x, objective.layers(), objective.needs_logits())
    return objective.evaluate(found)


_compiled_values = static_lib.jit(_objective_values, 1)


def _compilable(objective: Objective) -> bool:
    """Whether ``objective`` can be a compiled program's argument: no plain callable
    (:class:`Function`) among its terms, and arrays or numbers as its only leaves (a
    user's subclass not registered as a pytree is one opaque leaf)."""
    # A Function is taken as one leaf, and it is not an array: one pass checks both.
    leaves = jax.tree_util.tree_leaves(objective, is_leaf=lambda o: isinstance(o, Function))
    return all(isinstance(leaf, (jax.Array, np.ndarray, numbers.Number)) for leaf in leaves)


def _register(cls):
    """A frozen dataclass registered as a pytree: fields marked :func:`_static` are its
    static part, the others its leaves.

    Registered as a custom node whose static part includes the class, not with
    ``jax.tree_util.register_dataclass``: jaxlib 0.10.2 compares two such structures as
    equal when their fields match, whatever their classes, while hashing them apart
    (``Channel("conv", i)`` and ``UnreachableTarget("conv", i)``). A compiled-program
    cache keyed by the structure then, when the two hashes met in one slot, ran one
    objective's program for the other: the channel mean came back for the unreachable
    target, or the reverse, in two runs of the tests (docs/architecture.md, "Objectives
    carry their class"; ``tests/test_compile.py`` checks every pair of kinds).
    """
    cls = dataclasses.dataclass(frozen=True, eq=False)(cls)
    fields = dataclasses.fields(cls)
    data = tuple(f.name for f in fields if not f.metadata.get("static"))
    meta = tuple(f.name for f in fields if f.metadata.get("static"))
    keys = tuple(jax.tree_util.GetAttrKey(name) for name in data)

    def flatten_with_keys(o):
        return (tuple(zip(keys, (getattr(o, name) for name in data))),
                (cls, *(getattr(o, name) for name in meta)))

    def flatten(o):
        return (tuple(getattr(o, name) for name in data),
                (cls, *(getattr(o, name) for name in meta)))

    def unflatten(static, leaves):
        o = object.__new__(cls)  # leaves may be placeholders: no __init__ checks
        for name, value in zip(data, leaves):
            object.__setattr__(o, name, value)
        for name, value in zip(meta, static[1:]):
            object.__setattr__(o, name, value)
        return o

    jax.tree_util.register_pytree_with_keys(cls, flatten_with_keys, unflatten, flatten)
    return cls


@_register
class ClassLogit(Objective):
    """The logit of class ``target``: ``model.apply(variables, x)[n, target[n]]``.

    Attributes:
      target: () or (N,) int32 class index.
    """

    target: Any

    def needs_logits(self) -> bool:
        return True

    def tile(self, reps):
        return ClassLogit(_tile_leading(self.target, reps, 1))

    def evaluate(self, found: Forward) -> jax.Array:
        logits = found.logits
        if not hasattr(logits, "ndim") or logits.ndim != 2:
            what = (f"shape {tuple(logits.shape)}" if hasattr(logits, "shape")
                    else type(logits).__name__)
            raise InputError(f"a class-logit objective needs the model to return (N, classes) "
                             f"logits; {type(found.model).__name__} returns {what}")
        n, classes = logits.shape
        _check_index(self.target, n, classes, "class index", f"{classes} classes")
        rows = _per_example(self.target, n)
        return jnp.take_along_axis(logits, rows[:, None], axis=1)[:, 0]

    def check(self, model, shape, dtype=jnp.float32):
        out = output_shape(model, shape, dtype)
        if len(out) != 2:
            raise InputError(f"a class-logit objective needs the model to return (N, classes) "
                             f"logits; {type(model).__name__} returns shape {out}")
        _check_index(self.target, out[0], out[1], "class index", f"{out[1]} classes")


@_register
class ClassLogProb(ClassLogit):
    """The log-probability of class ``target`` under the softmax of the logits: unlike the
    logit, it rises only when the class gains on the others."""

    def tile(self, reps):
        return ClassLogProb(_tile_leading(self.target, reps, 1))

    def evaluate(self, found: Forward) -> jax.Array:
        logits = found.logits
        super().evaluate(found)  # shape and index checks
        rows = _per_example(self.target, logits.shape[0])
        return jnp.take_along_axis(jax.nn.log_softmax(logits, axis=-1), rows[:, None],
                                   axis=1)[:, 0]


@_register
class Channel(Objective):
    """Mean of channel ``index`` of ``layer`` over its spatial positions.

    ``mean_{h, w} A[n, h, w, index[n]]``; for a flat (N, F) layer, ``A[n, index[n]]``.

    Attributes:
      layer: layer name (module path or alias).
      index: () or (N,) int32 channel index.
    """

    layer: str = _static()
    index: Any = None

    def layers(self):
        return (self.layer,)

    tile = _tile_index

    def evaluate(self, found):
        a, idx = _indexed(found, self.layer, self.index)
        return jnp.take_along_axis(_spatial_mean(a), idx[:, None], axis=1)[:, 0]

    def check(self, model, shape, dtype=jnp.float32):
        _check_indexed(model, shape, self.layer, self.index)


@_register
class Neuron(Objective):
    """Channel ``index`` of ``layer`` at one spatial position: ``A[n, y, x, index[n]]``.

    Attributes:
      layer: layer name; its output is (N, h, w, C).
      index: () or (N,) int32 channel index.
      y, x: the position; None means the centre, ``h // 2`` and ``w // 2``.
    """

    layer: str = _static()
    index: Any = None
    y: int | None = _static(default=None)
    x: int | None = _static(default=None)

    def layers(self):
        return (self.layer,)

    tile = _tile_index

    def _position(self, shape):
        if len(shape) != 4:
            raise InputError(f"a neuron objective needs a spatial (N, h, w, C) layer; "
                             f"{self.layer!r} has shape {tuple(shape)}")
        h, w = shape[1:3]
        y = h // 2 if self.y is None else self.y
        x = w // 2 if self.x is None else self.x
        if not (0 <= y < h and 0 <= x < w):
            raise InputError(f"position (y={y}, x={x}) is outside layer {self.layer!r} of "
                             f"size {h}x{w}")
        return y, x

    def evaluate(self, found):
        y, x = self._position(found.acts[self.layer].shape)
        a, idx = _indexed(found, self.layer, self.index)
        return jnp.take_along_axis(a[:, y, x, :], idx[:, None], axis=1)[:, 0]

    def check(self, model, shape, dtype=jnp.float32):
        self._position(_layer_shapes(model, shape, [self.layer])[self.layer])
        _check_indexed(model, shape, self.layer, self.index)


@_register
class LayerMax(Objective):
    """The largest value of ``layer``'s output, per example (``output.max()``)."""

    layer: str = _static()

    def layers(self):
        return (self.layer,)

    def evaluate(self, found):
        a = found.acts[self.layer]
        return a.reshape(a.shape[0], -1).max(axis=1)

    def check(self, model, shape, dtype=jnp.float32):
        _layer_shapes(model, shape, [self.layer])


@_register
class Direction(Objective):
    """Dot product of ``layer``'s channel vector with ``vector``, averaged over space or
    taken at one position.

    ``mean_{h, w} sum_c A[n, h, w, c] v[n, c]`` (Olah et al. 2017's "direction"; the
    vector is used as given, not normalized). With a ``position``, only that position's
    channel vector: ``sum_c A[n, y, x, c] v[n, c]`` (lucid's ``direction_neuron``).

    Attributes:
      layer: layer name.
      vector: (C,) or (N, C) direction.
      position: None (the spatial mean), "centre" (``(h // 2, w // 2)``) or ``(y, x)``.
    """

    layer: str = _static()
    vector: Any = None
    position: Any = _static(default=None)

    def layers(self):
        return (self.layer,)

    def tile(self, reps):
        return Direction(self.layer, _tile_leading(self.vector, reps, 2), self.position)

    def _check(self, shape):
        v = tuple(np.shape(self.vector))
        if v not in ((shape[-1],), (shape[0], shape[-1])):
            raise InputError(f"expected a direction of shape ({shape[-1]},) or "
                             f"({shape[0]}, {shape[-1]}) for layer {self.layer!r} of shape "
                             f"{tuple(shape)}; got shape {v}")
        if self.position is not None:
            if len(shape) != 4:
                raise InputError(f"a direction at a position needs a spatial (N, h, w, C) "
                                 f"layer; {self.layer!r} has shape {tuple(shape)}")
            y, x = self._yx(shape)
            if not (0 <= y < shape[1] and 0 <= x < shape[2]):
                raise InputError(f"position (y={y}, x={x}) is outside layer {self.layer!r} "
                                 f"of size {shape[1]}x{shape[2]}")

    def _yx(self, shape):
        if self.position == "centre":
            return shape[1] // 2, shape[2] // 2
        return self.position

    def evaluate(self, found):
        a = found.acts[self.layer]
        self._check(a.shape)
        v = jnp.broadcast_to(jnp.asarray(self.vector, a.dtype), (a.shape[0], a.shape[-1]))
        if self.position is None:
            return jnp.einsum("nc,nc->n", _spatial_mean(a), v)
        y, x = self._yx(a.shape)
        return jnp.einsum("nc,nc->n", a[:, y, x, :], v)

    def check(self, model, shape, dtype=jnp.float32):
        self._check(_layer_shapes(model, shape, [self.layer])[self.layer])


@_register
class UnreachableTarget(Objective):
    """Minus the mean squared distance of a channel map to an unreachably high target.

    ``-mean_{h, w} (A[n, h, w, c] - t_n)^2`` with ``t_n = (max_{h, w} A[n, h, w, c])^2``
    held constant (no gradient flows through it), ``c = index[n]``: the loss of the
    VGG16 activation-maximization recipe, as an objective to ascend.

    Attributes:
      layer: layer name; its output is (N, h, w, C).
      index: () or (N,) int32 channel index.
    """

    layer: str = _static()
    index: Any = None

    def layers(self):
        return (self.layer,)

    tile = _tile_index

    def evaluate(self, found):
        a, idx = _indexed(found, self.layer, self.index)
        m = jnp.take_along_axis(a.reshape(a.shape[0], -1, a.shape[-1]), idx[:, None, None],
                                axis=2)[..., 0]
        target = jax.lax.stop_gradient(m.max(axis=1, keepdims=True)) ** 2
        return -((m - target) ** 2).mean(axis=1)

    def check(self, model, shape, dtype=jnp.float32):
        _check_indexed(model, shape, self.layer, self.index)


@_register
class Diversity(Objective):
    """Minus the similarity of each image's Gram matrix at ``layer`` to the others'.

    ``-sum_{m != n} <G_n, G_m> / N`` with ``G_n = A_n^T A_n`` (A_n the (h w, C) matrix of
    example n) scaled to unit Frobenius norm (Olah et al. 2017's diversity term). It
    couples the examples of a batch: add it with a weight to another objective to make a
    batch of images for one target differ from each other.
    """

    layer: str = _static()

    def layers(self):
        return (self.layer,)

    def tile(self, reps):
        return None

    def evaluate(self, found):
        a = found.acts[self.layer]
        n = a.shape[0]
        flat = a.reshape(n, -1, a.shape[-1])
        grams = jnp.einsum("nsc,nsd->ncd", flat, flat).reshape(n, -1)
        grams = grams / jnp.sqrt(jnp.maximum((grams * grams).sum(1, keepdims=True), 1e-20))
        sim = grams @ grams.T
        return -(sim.sum(1) - jnp.diagonal(sim)) / n

    def check(self, model, shape, dtype=jnp.float32):
        _layer_shapes(model, shape, [self.layer])


@_register
class Function(Objective):
    """A plain callable ``fn(model, variables, x) -> (N,)`` as a composable objective.

    It runs its own forward pass (not shared with the other terms of a sum).
    """

    fn: ObjectiveFn = _static()

    def evaluate(self, found):
        return self.fn(found.model, found.variables, found.x)

    def tile(self, reps):
        return None

    def __call__(self, model, variables, x):
        return self.fn(model, variables, x)


@_register
class Sum(Objective):
    """``sum_i weights[i] * terms[i]``; all terms' layers come from one forward pass."""

    terms: tuple[Objective, ...]
    weights: tuple[Any, ...]

    @staticmethod
    def of(*pairs: tuple[Any, Objective]) -> Sum:
        """A flat sum of ``(weight, objective)`` pairs (nested sums are expanded)."""
        terms, weights = [], []
        for w, term in pairs:
            if isinstance(term, Sum):
                terms.extend(term.terms)
                weights.extend(w * tw for tw in term.weights)
            else:
                terms.append(term)
                weights.append(w)
        return Sum(tuple(terms), tuple(weights))

    def layers(self):
        return tuple(dict.fromkeys(name for t in self.terms for name in t.layers()))

    def needs_logits(self):
        return any(t.needs_logits() for t in self.terms)

    def tile(self, reps):
        terms = [t.tile(reps) for t in self.terms]
        return None if any(t is None for t in terms) else Sum(tuple(terms), self.weights)

    def evaluate(self, found):
        return sum(w * t.evaluate(found) for w, t in zip(self.weights, self.terms))

    def check(self, model, shape, dtype=jnp.float32):
        for t in self.terms:
            t.check(model, shape, dtype)


# --- constructors ----------------------------------------------------------------------------


def class_logit(target: int | jax.Array) -> ClassLogit:
    """The logit of class ``target`` (an int, or an int array (N,) of one class per example).

    Raises:
      TypeError: ``target`` is not an int or an int array.
      ValueError: it is negative or not of shape () or (N,). Indices at or above the
        number of classes fail when the objective meets the model.
    """
    return ClassLogit(_as_index(target, "class index"))


def class_log_prob(target: int | jax.Array) -> ClassLogProb:
    """The softmax log-probability of class ``target`` (int or (N,) int array)."""
    return ClassLogProb(_as_index(target, "class index"))


def channel(layer: str, index: int | jax.Array) -> Channel:
    """Mean over space of channel ``index`` of ``layer`` (int or (N,) int array)."""
    return Channel(_layer_name(layer), _as_index(index, "channel"))


def neuron(layer: str, index: int | jax.Array, y: int | None = None,
           x: int | None = None) -> Neuron:
    """Channel ``index`` of ``layer`` at position ``(y, x)``; default the centre."""
    for name, v in (("y", y), ("x", x)):
        if v is not None and (isinstance(v, bool) or not isinstance(v, numbers.Integral)):
            raise InputTypeError(f"expected {name} as an int or None, got {type(v).__name__}")
    return Neuron(_layer_name(layer), _as_index(index, "channel"),
                  None if y is None else int(y), None if x is None else int(x))


def layer_max(layer: str) -> LayerMax:
    """The largest value of ``layer``'s output per example (``output.max()``)."""
    return LayerMax(_layer_name(layer))


def unreachable_target(layer: str, index: int | jax.Array) -> UnreachableTarget:
    """Minus the MSE of channel ``index`` of ``layer`` to ``(its max)^2`` (see the class)."""
    return UnreachableTarget(_layer_name(layer), _as_index(index, "channel"))


def diversity(layer: str) -> Diversity:
    """Minus the Gram-matrix similarity between the images of a batch at ``layer``."""
    return Diversity(_layer_name(layer))


def direction(layer: str, vector: jax.Array, *, position: Any = None) -> Direction:
    """``A[n, h, w, :] . vector`` (vector (C,) or (N, C)): its mean over space, or at
    ``position`` ("centre" or ``(y, x)``)."""
    vector = vector if isinstance(vector, jax.Array) else np.asarray(vector)
    if vector.ndim not in (1, 2) or not jnp.issubdtype(vector.dtype, jnp.floating):
        raise InputError(f"expected a float direction of shape (C,) or (N, C), got "
                         f"{vector.dtype} of shape {tuple(vector.shape)}")
    if position is not None and position != "centre":
        try:
            y, x = position
            ok = all(isinstance(v, numbers.Integral) and not isinstance(v, bool) for v in (y, x))
        except (TypeError, ValueError):
            ok = False
        if not ok:
            raise InputTypeError(f"expected position as None, 'centre' or (y, x) ints; got "
                                 f"{position!r}")
        position = (int(y), int(x))
    return Direction(_layer_name(layer), vector, position)


def _layer_name(layer: Any) -> str:
    if not isinstance(layer, str):
        raise InputTypeError(f"layer names are strings; got {type(layer).__name__} {layer!r}")
    return layer


def as_objective(target: Any) -> Objective | ObjectiveFn:
    """What attribution's ``target`` argument means.

    Args:
      target: an int or an int array (N,) (class logits, :func:`class_logit`); an
        :class:`Objective`; or a plain callable ``f(model, variables, x) -> (N,)``.

    Returns:
      An objective, or the callable unchanged.

    Raises:
      TypeError: anything else, saying what was expected and what came.
    """
    if isinstance(target, Objective):
        return target
    if isinstance(target, (bool, np.bool_)):
        raise InputTypeError("expected a target as an int class index, an int array (N,), an "
                        "objective or a callable f(model, variables, x) -> (N,); got a bool")
    if isinstance(target, numbers.Integral):
        return class_logit(target)
    if isinstance(target, (np.ndarray, jax.Array, list, tuple)):
        arr = target if isinstance(target, (np.ndarray, jax.Array)) else np.asarray(target)
        if jnp.issubdtype(arr.dtype, jnp.integer):
            return class_logit(arr)
        raise InputTypeError(f"expected a target as an int class index, an int array (N,), an "
                        f"objective or a callable f(model, variables, x) -> (N,); got an array "
                        f"of dtype {arr.dtype}")
    if callable(target) and not isinstance(target, type):
        return target
    raise InputTypeError(f"expected a target as an int class index, an int array (N,), an objective "
                    f"or a callable f(model, variables, x) -> (N,); got {type(target).__name__}")


__all__ = [
    "ClassLogProb", "ClassLogit", "Channel", "Direction", "Diversity", "Forward", "Function", "LayerMax",
    "Neuron", "Objective", "Sum", "UnreachableTarget", "as_objective", "channel",
    "class_log_prob", "class_logit", "direction", "diversity", "forward", "layer_max", "neuron",
    "output_shape", "unreachable_target",
]

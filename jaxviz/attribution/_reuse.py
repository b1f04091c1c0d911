"""Occlusion that recomputes only what a window changes (``occlusion(..., reuse=...)``).

An occluded copy of the input differs from the input only inside the window, so at a
layer whose units' receptive fields are small only the units whose field meets the
window change: the layer's *changed region*, a box of fixed size (the largest over the
windows) whose start follows the window. The network's spatial chain (its layers up to
the first one that is not a convolution, a max pool, a per-pixel layer or an inception
block) is cut at a few of its layers ``c_1 < ... < c_m``; the activation of the
unoccluded input at every cut is computed once per call, and for each window:

* stage ``s`` takes, from the map before it (the occluded input for the first stage;
  else the clean map of ``c_{s-1}`` with ``c_{s-1}``'s changed region pasted in), the
  crop that holds the receptive fields of ``c_s``'s changed region, and computes that
  region from it;
* the last stage pastes ``c_m``'s changed region into ``c_m``'s clean map and evaluates
  the objective from ``c_m`` on, with ``c_m``'s output replaced through
  ``flax.linen.intercept_methods`` (as ``_common._at_layer`` does): the layers before it
  run on a stand-in input, dead code that XLA drops.

A stage runs in one of two ways, both exact:

* *layer by layer* (``"valid"``), when every layer of the stage is one of ours
  (``Conv2d``, ``MaxPool2d``, ``ReLU``, ``BatchNorm2d``, ``Dropout``, a functional
  ReLU, a ``Sequential`` of them): each layer's own module, cloned without padding, runs
  on exactly the input its output units read. Crops are indexed on the map's grid
  extended past its edges; before a layer that pads, the positions outside the map are
  set to what it pads with (zero for a convolution, -inf for a max pool, ``ceil_mode``'s
  extra windows included), so every kept unit sums exactly the full map's products.
* *through the model* (``"model"``), for inception blocks (and GoogLeNet's first stage
  when it has ``transform_input``): the model's own modules from the stage's first layer
  to its last, through the same interceptor and ``stop_at``, on a crop clamped into the
  map whose start is a multiple of the stage's total stride ``S`` and whose length is
  congruent to the map's modulo ``S``. Every layer then sees the crop's units on the full
  map's grid, and a crop that touches an edge has there exactly the full map's padding
  (every layer's output-size arithmetic, ``ceil_mode`` included, shifts by whole
  strides). At an edge inside the map the layers pad where the full map has data; a
  unit so affected has a receptive field that runs past that edge (by induction over the
  layers, the unit just outside a layer's crop map sees past the crop), and the crop
  holds the whole field of every unit that is kept.

The cuts are chosen by dynamic programming over a cost model (multiply-accumulates of
the layers on their crops, plus memory passes) unless named. "auto" splits on the CPU
only (the cost model is XLA:CPU's; on a GPU the plain batch wins), and leaves out a stage
whose convolution would take ``conv2d``'s tiny-map route on its crop but not on the full
map (see :func:`_patches_on_crop`), so its drops are usually bit for bit the plain
path's. Crops and pastes are
``lax.dynamic_slice`` / ``dynamic_update_slice`` at starts computed on the host, so every
shape is static and one program serves every window.

Where it applies: our AlexNet, VGG (with or without BatchNorm) and GoogLeNet, and a model
that is itself a :class:`~jaxviz.models.modules.Sequential` of our layers, whose spatial
chains are known to be chains of translation-equivariant layers. Any other model (a
user's Linen module, a ``Bound`` model) takes the plain path, as does an objective that
reads a layer before the last cut or cannot follow a batch of copies; a check on the
traced program (the result must not read the stand-in input) falls back to the plain
path too. See docs/architecture.md.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.extend import core as jcore

from jaxviz import capture
from jaxviz import objectives as objectives_lib
from jaxviz import rules as rules_lib
from jaxviz.errors import InputError
from jaxviz.models import alexnet as alexnet_lib
from jaxviz.models import googlenet as googlenet_lib
from jaxviz.models import layers as layers_lib
from jaxviz.models import vgg as vgg_lib
from jaxviz.models.modules import (BatchNorm2d, Concat, Conv2d, Dropout, MaxPool2d, ReLU,
                                   Sequential, _names)
from jaxviz.static import static, unwrap

REUSE_CHOICES: tuple[str, ...] = ("auto", "off")

# Models whose spatial chain is known: the modules the root calls directly, in call
# order, feed each other, with per-pixel code at most before the first (GoogLeNet's
# transform_input). A root Sequential of ours is such a chain by construction.
_KNOWN = (alexnet_lib.AlexNet, vgg_lib.VGG, googlenet_lib.GoogLeNet)

# The cost model, in multiply-accumulates (MACs) of a convolution. Measured on 2 shared
# x86 cores (XLA's own convolutions): a convolution ~25 GMAC/s, the first one (3 input
# channels) half that, a pass over memory (a copy, a mask, a per-pixel layer) ~1-2 ns
# per element, a max pool ~2 ns per window element.
_ELEMENT = 30.0      # one element written by a memory pass
_POOL = 40.0         # one element of a max-pool window
_THIN_CONV = 2.0     # MAC factor of a convolution with at most 4 input channels
_GAIN = 0.85         # "auto" splits when the plan is estimated at most this costly


class _NotSplittable(Exception):
    """The traced program reads the stand-in input: the split would not be exact."""


# --- receptive-field geometry of the spatial chain --------------------------------------------


class _Axis(NamedTuple):
    """A field along one axis: ``size``, ``stride`` (jump) and ``offset``."""

    size: int
    stride: int
    offset: int


_ID = (_Axis(1, 1, 0), _Axis(1, 1, 0))


def _window(field, kernel, stride, pad):
    return tuple(_Axis(f.size + (k - 1) * f.stride, f.stride * s, f.offset - p * f.stride)
                 for f, k, s, p in zip(field, kernel, stride, pad))


def _union(fields):
    if len({tuple(f.stride for f in fl) for fl in fields}) != 1:
        return None
    out = []
    for a in (0, 1):
        lo = min(fl[a].offset for fl in fields)
        hi = max(fl[a].offset + fl[a].size for fl in fields)
        out.append(_Axis(hi - lo, fields[0][a].stride, lo))
    return tuple(out)


def _is_relu(layer: Any) -> bool:
    return isinstance(layer, functools.partial) and layer.func is rules_lib.relu


def _spatial(layer: Any):
    """(kernel, stride, padding) pairs of a Conv2d or MaxPool2d; None for a per-pixel layer."""
    if isinstance(layer, Conv2d):
        return (layers_lib.pair(layer.kernel_size), layers_lib.pair(layer.stride),
                layers_lib.pair(layer.padding))
    if isinstance(layer, MaxPool2d):
        kernel = layers_lib.pair(layer.kernel_size)
        stride = layers_lib.pair(layer.stride if layer.stride is not None else layer.kernel_size)
        return kernel, stride, layers_lib.pair(layer.padding)
    return None


def _geometry(layer: Any, field=_ID):
    """``field`` carried through ``layer`` (a module definition of ours or a functional
    ReLU), or None when ``layer`` is not translation-equivariant in a known way."""
    spatial = _spatial(layer)
    if spatial is not None:
        return _window(field, *spatial)
    if isinstance(layer, (ReLU, BatchNorm2d, Dropout)) or _is_relu(layer):
        return field
    if isinstance(layer, Concat):
        branches = [_geometry(b, field) for b in layer.layers]
        return None if any(b is None for b in branches) else _union(branches)
    if isinstance(layer, Sequential):
        for sub in layer.layers:
            field = _geometry(sub, field)
            if field is None:
                return None
        return field
    return None


def _leaf_list(path: str | None, layer: Any):
    """``[(path, layer)]`` of the leaves ``layer`` runs, in order (a path of None: a
    function); None when one of them cannot run layer by layer (an inception block)."""
    if _spatial(layer) is not None or isinstance(layer, (ReLU, BatchNorm2d, Dropout)):
        return [(path, layer)]
    if _is_relu(layer):
        return [(None, layer)]
    if isinstance(layer, Sequential) and not isinstance(layer, Concat):
        out = []
        for name, sub in zip(_names(layer), layer.layers):
            sub_path = None if name is None or path is None else f"{path}.{name}"
            leaves = _leaf_list(sub_path, sub)
            if leaves is None:
                return None
            out += leaves
        return out
    return None


class _Leaf(NamedTuple):
    """A layer run on its own in a "valid" stage.

    Attributes:
      path: module path (None: a function between modules).
      layer: its definition.
      spatial: (kernel, stride, padding) pairs, or None (per pixel).
      fill: what it pads with (0, -inf), or None when it reads no position off the map.
      n_in: (h, w) of its input map.
      c_in: its input's channels.
      cost: per output pixel (MACs, all channels).
    """

    path: str | None
    layer: Any
    spatial: Any
    fill: float | None
    n_in: tuple[int, int]
    c_in: int
    cost: float


class _Unit(NamedTuple):
    """A layer of the spatial chain (a cut candidate): its path, its field in the input
    (per axis), its map's (h, w, c), its cost at the full size and its leaves (None: it
    runs only through the model)."""

    path: str
    field: tuple[_Axis, _Axis]
    hwc: tuple[int, int, int]
    cost: float
    leaves: tuple[_Leaf, ...] | None


def _top_calls(model: nn.Module, shape: tuple[int, ...]) -> list[tuple[str, Any]]:
    """(path, module) of every module the root calls directly, in call order (the
    inference forward pass, traced abstractly)."""
    calls: list[tuple[str, Any]] = []

    def record(next_fun, args, kwargs, context):
        module = context.module
        if context.method_name == "__call__" and len(module.path) == 1:
            calls.append((module.path[0], module))
        return next_fun(*args, **kwargs)

    x = jax.ShapeDtypeStruct(shape, jnp.float32)
    variables = jax.eval_shape(model.init, jax.random.key(0), x)
    with nn.intercept_methods(record):
        jax.eval_shape(model.apply, variables, x)
    return calls


def _layer_costs(table, kernels: dict[str, tuple[int, ...]]) -> dict[str, float]:
    """path -> estimated cost of every layer in ``table`` that has no children listed."""
    paths = [info.path for info in table]
    parents = {p.rsplit(".", 1)[0] for p in paths if "." in p}
    out = {}
    for info in table:
        if info.path in parents:
            continue
        pixels = float(np.prod(info.shape[1:-1])) if len(info.shape) > 2 else 1.0
        kernel = kernels.get(info.path)
        if kernel is not None and len(kernel) == 4:
            out[info.path] = pixels * _conv_cost(kernel)
        elif kernel is not None and len(kernel) == 2:
            out[info.path] = float(np.prod(kernel))
        elif info.kind == "MaxPool2d":
            out[info.path] = pixels * info.shape[-1] * 9 * _POOL
        else:
            out[info.path] = pixels * (info.shape[-1] if info.shape else 1) * _ELEMENT
    return out


def _conv_cost(kernel: tuple[int, ...]) -> float:
    """MACs per output pixel of a convolution with an HWIO ``kernel``."""
    return float(np.prod(kernel)) * (_THIN_CONV if kernel[2] <= 4 else 1.0)


def _kernel_shapes(variables: Any) -> tuple[tuple[str, tuple[int, ...]], ...]:
    """(path, shape) of every ``kernel`` in ``variables['params']``: hashable."""
    out = []

    def walk(node, prefix):
        for key, value in node.items():
            if isinstance(value, dict):
                walk(value, (*prefix, key))
            elif key == "kernel":
                out.append((".".join(prefix), tuple(int(d) for d in np.shape(value))))

    params = variables.get("params") if isinstance(variables, dict) else None
    if isinstance(params, dict):
        walk(params, ())
    return tuple(sorted(out))


class _Chain(NamedTuple):
    units: tuple[_Unit, ...]
    rest: float               # cost of everything after the chain
    valid_from_input: bool    # the first stage may run layer by layer (no code before it)


@functools.lru_cache(maxsize=32)
def _chain(key: Any, shape: tuple[int, ...], kernels: Any) -> _Chain | None:
    """The spatial chain of the model at input ``shape``; None for a model whose chain is
    not known."""
    model = unwrap(key)
    if getattr(model, "stop_at", None) is not None:
        return None
    if type(model) is Sequential:
        entries = list(zip(_names(model), model.layers))
        before = False
    elif isinstance(model, _KNOWN):
        entries = []
        for path, module in _top_calls(model, shape):
            if type(module) is Sequential:
                entries += [(None if name is None else f"{path}.{name}", layer)
                            for name, layer in zip(_names(module), module.layers)]
            else:
                entries.append((path, module))
        before = bool(getattr(model, "transform_input", False))
    else:
        return None
    table = capture.layer_names(model, shape)
    shapes = {info.path: info.shape for info in table}
    kernels = dict(kernels)
    costs = _layer_costs(table, kernels)
    units, field, pending = [], _ID, []
    hw_in = tuple(shape[1:3])
    for path, layer in entries:
        field = _geometry(layer, field)
        if field is None or (path is not None and len(shapes.get(path, ())) != 4):
            break
        if path is None:
            pending.append((None, layer))
            continue
        listed = _leaf_list(path, layer)
        leaves = None
        if listed is not None:
            leaves, n_in = [], hw_in
            channels = shape[-1] if not units else units[-1].hwc[2]
            for leaf_path, leaf_layer in pending + listed:
                out = shapes[leaf_path] if leaf_path is not None else (None, *n_in, channels)
                spatial = _spatial(leaf_layer)
                fill = None
                if spatial is not None and (any(spatial[2])
                                            or getattr(leaf_layer, "ceil_mode", False)):
                    fill = 0.0 if isinstance(leaf_layer, Conv2d) else -np.inf
                if isinstance(leaf_layer, Conv2d):
                    cost = _conv_cost(kernels[leaf_path])
                elif isinstance(leaf_layer, MaxPool2d):
                    cost = out[-1] * float(np.prod(spatial[0])) * _POOL
                else:
                    cost = out[-1] * _ELEMENT
                leaves.append(_Leaf(leaf_path, leaf_layer, spatial, fill, n_in, channels, cost))
                n_in, channels = tuple(out[1:3]), out[-1]
            leaves = tuple(leaves)
        pending = []
        cost = sum(c for p, c in costs.items() if p == path or p.startswith(path + "."))
        units.append(_Unit(path, field, tuple(shapes[path][1:]), cost, leaves))
        hw_in = tuple(shapes[path][1:3])
    if not units:
        return None
    inside = {p for p in costs if any(p == u.path or p.startswith(u.path + ".") for u in units)}
    rest = sum(c for p, c in costs.items() if p not in inside)
    return _Chain(tuple(units), rest, not before)


# --- the plan: cuts, stages and every window's starts ------------------------------------------


class _Stage(NamedTuple):
    """Static description of one stage.

    Attributes:
      mode: "valid" (layer by layer), "model" (through the model) or "last".
      units: (i, j): it computes unit j's changed region from unit i's map (-1: input).
      crop: (rows, columns) of the crop of its input map.
      out: (rows, columns) of the changed region it hands on (None for "last").
      margins: ((top, bottom), (left, right)) added to its input map ("valid": crops
        may start before the map or end past it).
    """

    mode: str
    units: tuple[int, int]
    crop: tuple[int, int]
    out: tuple[int, int] | None
    margins: tuple[tuple[int, int], tuple[int, int]] = ((0, 0), (0, 0))


class Plan(NamedTuple):
    """The split path: ``cuts`` (layer paths in forward order), its stages, and the
    estimated cost per window against the plain path's (in MACs)."""

    cuts: tuple[str, ...]
    stages: tuple[_Stage, ...]
    cost: float
    plain_cost: float


class _Axes(NamedTuple):
    """Per axis: the input's length, and each window's first and last row."""

    n: int
    lo: np.ndarray
    hi: np.ndarray


def _region(field: _Axis, n: int, axis: _Axes) -> tuple[int, np.ndarray]:
    """(length, starts): a region of fixed length of a map of ``n`` units that holds, for
    every window, each unit whose field meets the window."""
    first = -((-(axis.lo - field.offset - field.size + 1)) // field.stride)
    last = (axis.hi - field.offset) // field.stride
    first, last = np.clip(first, 0, n - 1), np.clip(last, 0, n - 1)
    length = int((last - first + 1).max())
    return length, np.clip(first, 0, n - length)


def _relative(outer: _Axis, inner: _Axis) -> _Axis:
    """The field ``outer`` (in the input) as a field in the map whose field is ``inner``."""
    return _Axis((outer.size - inner.size) // inner.stride + 1, outer.stride // inner.stride,
                 (outer.offset - inner.offset) // inner.stride)


def _model_crop(rel: _Axis, n_in: int, region, pasted):
    """(C, starts) of a "model" stage's crop of its input map (``n_in`` units): it holds
    the fields (``rel``) of the output region and the pasted region, starts on a
    multiple of the stage's stride, its length is congruent to ``n_in`` modulo it, and it
    lies inside the map (see the module's docstring)."""
    length, a = region
    lo = np.clip(rel.offset + a * rel.stride, 0, n_in - 1)
    hi = np.clip(rel.offset + (a + length - 1) * rel.stride + rel.size - 1, 0, n_in - 1)
    if pasted is not None:
        lo, hi = np.minimum(lo, pasted[1]), np.maximum(hi, pasted[1] + pasted[0] - 1)
    s = rel.stride
    aligned = (lo // s) * s
    c = int((hi - aligned + 1).max())
    c += (n_in - c) % s
    if c >= n_in:
        return n_in, np.zeros_like(lo)
    return c, np.clip(aligned, 0, n_in - c)


def _valid_crop(rel: _Axis, n_in: int, region, pasted):
    """(C, starts, first output units, margins) of a "valid" stage's crop: the input of
    output units ``[u0, u0 + U)`` on the grid extended past the map's edges, ``U``
    fixed, holding the output region and the pasted region."""
    length, a = region
    u0, end = a, a + length
    if pasted is not None:
        u0 = np.minimum(u0, (pasted[1] - rel.offset) // rel.stride)
        end = np.maximum(end, -((-(pasted[1] + pasted[0] - rel.offset - rel.size))
                                // rel.stride) + 1)
    units = int((end - u0).max())
    c = (units - 1) * rel.stride + rel.size
    start = rel.offset + u0 * rel.stride
    margins = (int(max(0, -start.min())), int(max(0, (start + c).max() - n_in)))
    return c, start, u0, margins


def _patches_on_crop(leaf: _Leaf, size: Sequence[int]) -> bool:
    """Whether ``conv2d`` would compute this convolution on a crop of ``size`` as one
    matrix product of patches (a tiny output map on CPU, ``layers._tiny_map``) but on the
    full map as a convolution. Such a stage is left out of "auto" plans: the product
    sums in another order (the drops then differ from the plain path's by float32
    rounding instead of not at all), and XLA fuses the crop's masks into each of the
    ``kh * kw`` patches, which took 4-8 s more to compile (AlexNet's conv1 on 11 x 11)."""
    if jax.default_backend() != "cpu":
        return False
    kernel, stride, pad = leaf.spatial
    on_crop = layers_lib._tiny_map((None, *size), kernel, stride, (0, 0))
    return on_crop and not layers_lib._tiny_map((None, *leaf.n_in), kernel, stride, pad)


class _Geometry:
    """Regions, crops and costs of every cut and stage for one set of windows."""

    def __init__(self, chain: _Chain, axes, input_hwc):
        self.units, self.axes, self.input_hwc = chain.units, axes, input_hwc
        self.valid_from_input = chain.valid_from_input
        self._regions: dict[int, list] = {}
        self._stages: dict[tuple[int, int], tuple] = {}

    def region(self, j: int):
        if j not in self._regions:
            u = self.units[j]
            self._regions[j] = [_region(u.field[a], u.hwc[a], self.axes[a]) for a in (0, 1)]
        return self._regions[j]

    def source(self, i: int):
        """(field, (h, w), channels) of the map that stage ``i -> ...`` crops (-1: input)."""
        if i < 0:
            return _ID, self.input_hwc[:2], self.input_hwc[2]
        u = self.units[i]
        return u.field, u.hwc[:2], u.hwc[2]

    def mode(self, i: int, j: int) -> str:
        if i < 0 and not self.valid_from_input:
            return "model"
        leafy = all(u.leaves is not None for u in self.units[i + 1:j + 1])
        return "valid" if leafy else "model"

    def stage(self, i: int, j: int):
        """(mode, per axis (C, starts, paste offsets, extract offsets, margins), cost)."""
        if (i, j) in self._stages:
            return self._stages[(i, j)]
        field, n_in, c_in = self.source(i)
        mode = self.mode(i, j)
        region = self.region(j)
        axes = []
        for a in (0, 1):
            rel = _relative(self.units[j].field[a], field[a])
            pasted = None if i < 0 else self.region(i)[a]
            lo_paste = self.axes[a].lo if i < 0 else pasted[1]
            if mode == "valid":
                c, start, u0, margins = _valid_crop(rel, n_in[a], region[a], pasted)
            else:
                c, start = _model_crop(rel, n_in[a], region[a], pasted)
                u0, margins = start // rel.stride, (0, 0)
            axes.append((c, start, lo_paste - start, region[a][1] - u0, margins))
        moved = axes[0][0] * axes[1][0] * c_in + region[0][0] * region[1][0] * self.units[j].hwc[2]
        cost = _ELEMENT * moved
        if mode == "valid":
            size = [axes[0][0], axes[1][0]]
            for unit in self.units[i + 1:j + 1]:
                for leaf in unit.leaves:
                    if leaf.fill is not None:
                        cost += _ELEMENT * size[0] * size[1] * leaf.c_in
                    if isinstance(leaf.layer, Conv2d) and _patches_on_crop(leaf, size):
                        cost = np.inf
                    if leaf.spatial is not None:
                        kernel, stride, _ = leaf.spatial
                        size = [(size[a] - kernel[a]) // stride[a] + 1 for a in (0, 1)]
                    cost += leaf.cost * size[0] * size[1]
        else:
            area = axes[0][0] * axes[1][0] / (n_in[0] * n_in[1])
            cost += sum(u.cost for u in self.units[i + 1:j + 1]) * area
        self._stages[(i, j)] = (mode, axes, cost)
        return self._stages[(i, j)]

    def final_cost(self, j: int, rest: float) -> float:
        """Cost per window after the last cut ``j``: the rest of the chain and the network
        on the full map, with the paste into it."""
        h, w, c = self.units[j].hwc
        return sum(u.cost for u in self.units[j + 1:]) + rest + _ELEMENT * h * w * c

    def cost(self, cuts: Sequence[int], rest: float) -> float:
        prev, total = -1, 0.0
        for j in cuts:
            total, prev = total + self.stage(prev, j)[2], j
        return total + self.final_cost(prev, rest)


def _best_cuts(geometry: _Geometry, allowed: Sequence[int], rest: float):
    """(cost, cuts): the cheapest increasing sequence of cuts among ``allowed`` (dynamic
    programming over the last cut: a stage's crop depends only on its two ends)."""
    best: dict[int, tuple[float, tuple[int, ...]]] = {}
    for j in allowed:
        options = [(geometry.stage(-1, j)[2], (j,))]
        options += [(best[i][0] + geometry.stage(i, j)[2], best[i][1] + (j,))
                    for i in allowed if i < j]
        best[j] = min(options)
    finals = [(cost + geometry.final_cost(j, rest), cuts) for j, (cost, cuts) in best.items()]
    return min(finals) if finals else None


def _read_index(model, objective, table) -> int:
    """The table index of the first layer the objective reads (len(table): none)."""
    names = list(objective.layers())
    if not names:
        return len(table)
    paths = capture.resolve(model, names, table)
    order = {info.path: k for k, info in enumerate(table)}
    return min(order[p] for p in paths)


def plan(model: nn.Module, variables: Any, x_shape: tuple[int, ...], objective: Any,
         rows: Sequence[int], cols: Sequence[int], window: tuple[int, int], reuse: Any,
         copies: int):
    """``(Plan, per-axis starts)`` of the split path for these windows, or None for the
    plain path: ``reuse="off"``, a model whose spatial chain is not known, an objective
    that cannot follow a batch of copies, or (under ``"auto"``) no estimated gain.

    ``reuse`` is ``"auto"``, ``"off"``, or a layer name or sequence of names (the cuts,
    in forward order).

    Raises:
      InputError: named cuts on a model or objective the split path does not serve, not
        layers of the spatial chain, not in forward order, or not before every layer the
        objective reads.
    """
    explicit = None
    if isinstance(reuse, str) and reuse in REUSE_CHOICES:
        if reuse == "off":
            return None
        if jax.default_backend() != "cpu":
            # The cost model counts multiply-adds, which bound XLA:CPU. On a GPU a batch of
            # whole forwards is cheap and the split's slices and pastes are not: on an H100
            # the split took 117 ms for AlexNet 224 w32 s8 where torch's plain batched
            # forward took 43 ms (docs/architecture.md). Named cuts still split.
            return None
    else:
        explicit = [reuse] if isinstance(reuse, str) else reuse
        if (not isinstance(explicit, (list, tuple)) or not explicit
                or not all(isinstance(r, str) for r in explicit)):
            raise InputError(f"expected reuse as 'auto', 'off', a layer name or a sequence of "
                             f"layer names; got {reuse!r}")
    if not isinstance(objective, objectives_lib.Objective) or objective.tile(copies) is None:
        if explicit:
            raise InputError("reuse at named layers needs an objective that follows a batch "
                             "of copies (an int target or one of jaxviz.objectives)")
        return None
    _, h, w, c = x_shape
    shape = (1, h, w, c)
    chain = _chain(static(model), shape, _kernel_shapes(variables))
    if chain is None:
        if explicit:  # an unknown name says so first (LayerError); a known one cannot split
            capture.resolve(model, list(explicit), capture.layer_names(model, shape))
            raise InputError(f"reuse at named layers works on AlexNet, VGG, GoogLeNet and a "
                             f"jaxviz Sequential; {type(model).__name__} takes reuse='auto' "
                             f"or 'off' (both the plain path)")
        return None
    units = chain.units
    table = capture.layer_names(model, shape)
    first_read = _read_index(model, objective, table)
    order = {info.path: k for k, info in enumerate(table)}
    allowed = [k for k, u in enumerate(units) if order[u.path] < first_read]
    axes = []
    for starts, size, length in ((rows, window[0], h), (cols, window[1], w)):
        lo = np.asarray(starts, np.int64)
        axes.append(_Axes(length, lo, np.minimum(lo + size, length) - 1))
    geometry = _Geometry(chain, axes, (h, w, c))
    plain_cost = sum(u.cost for u in units) + chain.rest
    if explicit:
        paths = capture.resolve(model, list(explicit), table)
        index = {u.path: k for k, u in enumerate(units)}
        bad = [name for name, p in zip(explicit, paths) if p not in index]
        if bad:
            raise InputError(f"cannot reuse at {', '.join(map(repr, bad))}: the cuts must be "
                             f"layers of {type(model).__name__}'s spatial chain "
                             f"({', '.join(u.path for u in units)})")
        cuts = tuple(index[p] for p in paths)
        if list(cuts) != sorted(set(cuts)):
            raise InputError(f"expected the reuse layers in forward order, each once; got "
                             f"{list(explicit)!r}")
        if any(j not in allowed for j in cuts):
            raise InputError("the reuse layers must come before every layer the objective "
                             "reads")
        cost = geometry.cost(cuts, chain.rest)
    else:
        found = _best_cuts(geometry, allowed, chain.rest)
        if found is None or found[0] > _GAIN * plain_cost:
            return None
        cost, cuts = found
    return _build(geometry, cuts, cost, plain_cost)


def _build(geometry: _Geometry, cuts: Sequence[int], cost: float, plain_cost: float):
    """The plan and, per axis, every window's (stage, 2) arrays: ``starts`` (crop starts,
    on the grid extended past the map for "valid" stages), ``pastes`` (where the previous
    region, or the window, lies in the crop) and ``extracts`` (where the stage's region
    lies in its output)."""
    units = geometry.units
    stages, starts, pastes, extracts = [], [], [], []
    prev = -1
    for j in cuts:
        mode, axes, _ = geometry.stage(prev, j)
        region = geometry.region(j)
        stages.append(_Stage(mode, (prev, j), (axes[0][0], axes[1][0]),
                             (region[0][0], region[1][0]), (axes[0][4], axes[1][4])))
        starts.append([axes[a][1] for a in (0, 1)])
        pastes.append([axes[a][2] for a in (0, 1)])
        extracts.append([axes[a][3] for a in (0, 1)])
        prev = j
    last = units[prev]
    stages.append(_Stage("last", (prev, len(units)), last.hwc[:2], None))
    zeros = [np.zeros_like(geometry.axes[a].lo) for a in (0, 1)]
    starts.append(zeros)
    pastes.append([geometry.region(prev)[a][1] for a in (0, 1)])
    extracts.append(zeros)
    for s, stage in enumerate(stages[:-1]):  # every region lies inside what holds it
        for a in (0, 1):
            assert extracts[s][a].min() >= 0 and pastes[s + 1][a].min() >= 0, (s, stage)
            assert (pastes[s + 1][a] + stage.out[a]).max() <= stages[s + 1].crop[a], (s, stage)
    per_axis = {name: [np.stack([st[a] for st in arrays], -1).astype(np.int32) for a in (0, 1)]
                for name, arrays in (("starts", starts), ("pastes", pastes),
                                     ("extracts", extracts))}
    return Plan(tuple(units[j].path for j in cuts), tuple(stages), float(cost),
                float(plain_cost)), per_axis


def window_arrays(per_axis: dict, row_index: np.ndarray, col_index: np.ndarray) -> dict:
    """Per window (row ``row_index[w]``, column ``col_index[w]``): ``(W, stages, 2)``
    int32 arrays from :func:`plan`'s per-axis arrays."""
    return {name: np.stack([rows[row_index], cols[col_index]], -1)
            for name, (rows, cols) in per_axis.items()}


# --- the compiled chunk ------------------------------------------------------------------------


def _replaced(model, variables, stand_in, path, new, fn):
    """``fn(model, variables, stand_in)`` with ``path``'s output replaced by ``new``."""
    def hook(call, args, kwargs, context):
        if context.method_name != "__call__" or ".".join(context.module.path) != path:
            return call(*args, **kwargs)
        call(*args, **kwargs)  # traced for its shapes; its value is dead code
        return new

    with nn.intercept_methods(hook):
        return fn(model, variables, stand_in)


def _reads_input(fn, *structs) -> bool:
    """Whether ``fn(*structs)``'s outputs depend on its first argument (equation by
    equation, coarsely: an equation that is needed needs all its inputs)."""
    jaxpr = jax.make_jaxpr(fn)(*structs).jaxpr
    needed = {v for v in jaxpr.outvars if isinstance(v, jcore.Var)}
    for eqn in reversed(jaxpr.eqns):
        if any(v in needed for v in eqn.outvars):
            needed.update(v for v in eqn.invars if isinstance(v, jcore.Var))
    return jaxpr.invars[0] in needed


def _struct(tree):
    return jax.tree_util.tree_map(
        lambda a: jax.ShapeDtypeStruct(jnp.shape(a), jnp.result_type(a)), tree)


def _nhwc(at):
    """(0, at[0], at[1], 0): the start of a spatial slice of an NHWC array."""
    zero = jnp.zeros((), at.dtype)
    return (zero, at[0], at[1], zero)


def _to(model, variables, x, path):
    return model.clone(stop_at=path).apply(variables, x)


def _subtree(variables: Any, path: str) -> dict:
    """Every collection's variables of the module at ``path``."""
    out = {}
    for collection, tree in variables.items():
        node = tree
        for key in path.split("."):
            node = node.get(key) if isinstance(node, dict) else None
            if node is None:
                break
        if node is not None:
            out[collection] = node
    return out


def _run_leaf(leaf: _Leaf, variables: Any, t: jax.Array) -> jax.Array:
    """``leaf`` on ``t`` with no padding of its own (``t`` holds it)."""
    if leaf.path is None:
        return leaf.layer(t)
    changes = {}
    if isinstance(leaf.layer, Conv2d):
        changes = {"padding": 0}
    elif isinstance(leaf.layer, MaxPool2d):
        changes = {"padding": 0, "ceil_mode": False}
    return leaf.layer.clone(parent=None, **changes).apply(_subtree(variables, leaf.path), t)


def _occlusion_reuse_chunk(model, plan_, window, variables, x, baseline, reference, cleans,
                           geo, objective):
    """reference - f(x occluded by each window of the chunk): (k, N), on the split path."""
    cuts, stages = plan_.cuts, plan_.stages
    units = _chain(static(model), (1, *x.shape[1:]), _kernel_shapes(variables)).units
    wh, ww, wc = window
    n, h, w, c = x.shape
    k = geo["chan"].shape[0]
    stand_in = jnp.broadcast_to(x[None], (k, *x.shape)).reshape(k * n, h, w, c)

    def flat(a):
        return a.reshape(k * n, *a.shape[2:])

    def unflat(a):
        return a.reshape(k, n, *a.shape[1:])

    def take(out, at, size):
        return lax.dynamic_slice(out, _nhwc(at), (n, *size, out.shape[-1]))

    def occlude(xc, bc, at, chan):
        r, q, d = (jnp.arange(m) for m in xc.shape[1:])
        inside = (((r >= at[0]) & (r < at[0] + wh))[:, None, None]
                  & ((q >= at[1]) & (q < at[1] + ww))[None, :, None]
                  & ((d >= chan) & (d < chan + wc))[None, None, :])
        return jnp.where(inside[None], bc, xc)

    patch = None
    for s, stage in enumerate(stages[:-1]):
        i, j = stage.units
        starts, pastes = geo["starts"][:, s], geo["pastes"][:, s]
        pads = ((0, 0), *stage.margins, (0, 0))
        source = x if i < 0 else cleans[s - 1]
        source = jnp.pad(source, pads) if stage.mode == "valid" else source
        size = (n, *stage.crop, source.shape[-1])
        shift = jnp.asarray([stage.margins[0][0], stage.margins[1][0]], starts.dtype)
        if i < 0:
            b = jnp.pad(baseline, pads) if stage.mode == "valid" else baseline
            crops = jax.vmap(lambda st, at, ch: occlude(
                lax.dynamic_slice(source, _nhwc(st + shift), size),
                lax.dynamic_slice(b, _nhwc(st + shift), size), at, ch))(starts, pastes, geo["chan"])
        else:
            crops = jax.vmap(lambda p, st, at: lax.dynamic_update_slice(
                lax.dynamic_slice(source, _nhwc(st + shift), size), p, _nhwc(at)))(
                    patch, starts, pastes)
        if stage.mode == "valid":
            out, at = crops, starts
            for unit in units[i + 1:j + 1]:
                for leaf in unit.leaves:
                    if leaf.fill is not None:
                        out = _fill_outside(out, at, leaf.n_in, leaf.fill)
                    out = unflat(_run_leaf(leaf, variables, flat(out)))
                    if leaf.spatial is not None:
                        _, stride, pad = leaf.spatial
                        at = (at + jnp.asarray(pad, at.dtype)) // jnp.asarray(stride, at.dtype)
        else:
            if i < 0:
                out = _to(model, variables, flat(crops), cuts[s])
            else:
                run = functools.partial(_replaced, fn=lambda m, v, t, nxt=cuts[s]: _to(m, v, t, nxt))
                if _reads_input(lambda t, new, v: run(model, v, t, cuts[s - 1], new),
                                *_struct((stand_in, flat(crops), variables))):
                    raise _NotSplittable(cuts[s - 1])
                out = run(model, variables, stand_in, cuts[s - 1], flat(crops))
            out = unflat(out)
        patch = jax.vmap(lambda o, at, size=stage.out: take(o, at, size))(
            out, geo["extracts"][:, s])
    clean = cleans[-1]
    full = jax.vmap(lambda p, at: lax.dynamic_update_slice(clean, p, _nhwc(at)))(
        patch, geo["pastes"][:, -1])
    tiled = objective.tile(k)

    def values(t, new, v, obj):
        return _replaced(model, v, t, cuts[-1], new, lambda m, vv, tt: obj(m, vv, tt))

    if _reads_input(values, *_struct((stand_in, flat(full), variables, tiled))):
        raise _NotSplittable(cuts[-1])
    got = values(stand_in, flat(full), variables, tiled)
    return reference - got.reshape(k, n)


def _fill_outside(t: jax.Array, at: jax.Array, hw: tuple[int, int], fill: float) -> jax.Array:
    """``t: (k, N, h, w, C)``, crops starting at ``at: (k, 2)`` on the grid of a map of
    ``hw`` extended past its edges, with the positions off the map set to ``fill``."""
    rows = at[:, :1] + jnp.arange(t.shape[2])[None]
    cols = at[:, 1:] + jnp.arange(t.shape[3])[None]
    inside = (((rows >= 0) & (rows < hw[0]))[:, :, None]
              & ((cols >= 0) & (cols < hw[1]))[:, None, :])
    return jnp.where(inside[:, None, :, :, None], t, jnp.asarray(fill, t.dtype))


def _cleans(model, cuts, variables, x):
    """The clean activations at ``cuts`` (one forward pass, stopped at the last cut)."""
    return tuple(capture.run(model, variables, x, list(cuts), logits=False)[1][p] for p in cuts)


__all__ = ["Plan", "REUSE_CHOICES", "plan", "window_arrays"]

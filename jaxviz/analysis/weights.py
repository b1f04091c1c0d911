"""Looking at weights without optimizing: expanded weights, top connections, PCA and NMF.

Expanded weights (Olah et al., "Visualizing Weights", Distill 2020) are the linear map
between two layers that may be several layers apart: the gradient of a unit of the
later layer with respect to the earlier layer's activations, taken with every
non-linearity replaced by its closest linear operation (the ``linear`` backward rule of
:mod:`jaxviz.rules`: ReLU backward is the identity, max-pool backward is the average
pool's). Between two layers that interact linearly this is the true linear map, however
the model stores it (BatchNorm scales, concatenated inception branches and stacked
kernels included); between layers with ReLUs between them it is, up to a constant, the
expected gradient when every unit fires independently with equal probability.

Everything here works on the parameters alone: no image enters the result (the
expanded weights under the ``linear`` rule do not depend on the activations).

Drawing: :func:`weight_heatmap` colours a signed map with the diverging weight colours
of the article (blue negative, white zero, red positive), :func:`factor_image` shows
NMF factors as colours, and :func:`draw_connections` lays out a unit's top
connections with their heat maps.
"""

from __future__ import annotations

import functools
import numbers
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import flax.errors
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxviz import capture, checks, render, rules
from jaxviz import objectives as objectives_lib
from jaxviz.analysis import maps
from jaxviz.errors import InputError, InputTypeError, LayerError, ModelError
from jaxviz.models.modules import input_spec
from jaxviz.static import static, unwrap

__all__ = [
    "Connections",
    "Factors",
    "draw_connections",
    "expanded_weights",
    "factor_image",
    "first_layer_order",
    "nmf",
    "posneg",
    "spatial_directions",
    "top_connections",
    "weight_heatmap",
]

# The largest input side the search for a window size will try.
_MAX_SIDE = 4096


# --- expanded weights -------------------------------------------------------------------


def _table_index(model: nn.Module, names: Sequence[str], shape: tuple[int, ...]):
    table = capture.layer_names(model, shape, partial=True)
    paths = capture.resolve(model, names, table)
    order = {info.path: i for i, info in enumerate(table)}
    return table, paths, order


def _spatial_side(model: nn.Module, path: str, side: int, channels: int) -> int:
    """``path``'s output height for a square input of ``side`` pixels; 0 when the model
    cannot reach it at that size."""
    table = capture.layer_names(model, (1, side, side, channels), partial=True)
    for info in table:
        if info.path == path:
            return int(info.shape[1])
    return 0


class _Reached(Exception):
    """Raised inside the forward pass when the layer looked for returns (``to_layer``,
    or a probed layer), carrying its output: nothing after it is traced, whether or not
    the model can stop by itself."""

    def __init__(self, out: Any):
        super().__init__()
        self.out = out


def _side_probe(model: nn.Module, path: str, channels: int, usual: int):
    """A function of a square input side giving ``path``'s output height there (0 when
    the model cannot reach it at that size).

    Each probe is one abstract forward pass (``jax.eval_shape`` of ``model.apply``, with
    the variables' shapes from one abstract ``init`` at the usual size) that stops where
    ``path`` returns: on GoogLeNet 0.05-0.4 s, against 0.6-0.8 s for a layer table (an
    abstract ``init`` and a whole ``apply`` at every size). A model whose variables'
    shapes depend on the input size, or whose ``apply`` does not reach ``path``, is
    probed through its layer table instead."""
    x = jax.ShapeDtypeStruct((1, usual, usual, channels), jnp.float32)
    try:
        params = jax.eval_shape(model.init, jax.random.key(0), x)
    except (ValueError, TypeError, flax.errors.FlaxError):
        params = None

    def by_table(side: int) -> int:
        return _spatial_side(model, path, side, channels)

    def stop_at(next_fun, args, kwargs, context):
        out = next_fun(*args, **kwargs)
        if context.method_name == "__call__" and ".".join(context.module.path) == path:
            raise _Reached(out)
        return out

    def probe(side: int) -> int:
        if params is None:
            return by_table(side)
        try:
            with nn.intercept_methods(stop_at):
                jax.eval_shape(model.apply, params,
                               jax.ShapeDtypeStruct((1, side, side, channels), jnp.float32))
        except _Reached as reached:
            shape = getattr(reached.out, "shape", ())
            return int(shape[1]) if len(shape) == 4 else by_table(side)
        except flax.errors.FlaxError:  # variables sized by the input (a Dense after a flatten)
            return by_table(side)
        except (ValueError, TypeError):  # too small for a layer before ``path``
            return 0
        return by_table(side)  # ``path`` runs only at init (an auxiliary head)

    return probe


@functools.lru_cache(maxsize=256)
def _input_side(key: Any, path: str, width: int, channels: int, hint: int) -> int:
    """The smallest square input side at which layer ``path`` is ``width`` x ``width``
    (:func:`_reaching_side`; an error when the layer skips that width)."""
    model = unwrap(key)
    side, got, probe = _reaching_side(model, path, width, channels, hint)
    if got != width:
        raise InputError(f"layer {path!r} of {type(model).__name__} is never exactly "
                         f"{width} x {width}: one pixel more of input takes it from "
                         f"{probe(side - 1)} to {got}; choose width={got}")
    return side


def _reaching_side(model: nn.Module, path: str, width: int, channels: int,
                   hint: int) -> tuple[int, int, Callable[[int], int]]:
    """The smallest square input side at which layer ``path`` is at least ``width`` wide:
    ``(side, path's width there, the probe)``.

    A layer's side is a non-decreasing function of the input's (convolutions and pools
    floor or ceil an affine function of it): a doubling search brackets the first side
    reaching ``width``, and the bracket closes by interpolation (the function is close
    to linear), with a bisection step after two interpolations in a row that did not
    halve it. Over 450 (layer, width) pairs of GoogLeNet, AlexNet and VGG16 (widths 1
    to 7) that took 5.9 probes on average against 8.9 for a bisection from 224 px, and
    at most 10, as many as the bisection's worst.
    """
    side = _side_probe(model, path, channels, max(1, hint))
    lo, f_lo = 0, 0  # no input, no map
    hi = max(1, hint)
    f_hi = side(hi)
    while f_hi < width:
        lo, f_lo, hi = hi, f_hi, hi * 2
        if hi > _MAX_SIDE:
            raise InputError(f"layer {path!r} of {type(model).__name__} does not reach "
                             f"{width} x {width} for any input up to {_MAX_SIDE} px")
        f_hi = side(hi)
    poor = 0  # interpolation steps in a row that did not halve the bracket
    while hi - lo > 1:  # side(lo) = f_lo < width <= f_hi = side(hi)
        if poor >= 2:
            mid, poor = (lo + hi) // 2, 0
        else:  # where the line through the bracket's ends crosses width - 1/2
            mid = lo + round((width - 0.5 - f_lo) * (hi - lo) / (f_hi - f_lo))
            mid = min(max(mid, lo + 1), hi - 1)
        before = hi - lo
        got = side(mid)
        if got >= width:
            hi, f_hi = mid, got
        else:
            lo, f_lo = mid, got
        poor = poor + 1 if 2 * (hi - lo) > before else 0
    return hi, f_hi, side


def _between(from_path: str, to_path: str, delta: jax.Array):
    """An interceptor that adds ``delta`` to ``from_path``'s output and stops the forward
    pass at ``to_path``'s (its first call)."""

    def intercept(next_fun, args, kwargs, context):
        out = next_fun(*args, **kwargs)
        if context.method_name != "__call__":
            return out
        path = ".".join(context.module.path)
        if path == from_path:
            if out.shape != delta.shape:
                raise InputError(f"layer {path!r} gave shape {out.shape} where the window "
                                 f"needs {delta.shape}")
            out = out + delta
        if path == to_path:
            raise _Reached(out)
        return out

    return intercept


def _centre(shape: tuple[int, ...]) -> tuple[int, ...]:
    """Index of the centre unit's channel vector: ``[0, (h - 1) // 2, (w - 1) // 2]``
    for a map, ``[0]`` for a vector."""
    if len(shape) == 4:
        return (0, (shape[1] - 1) // 2, (shape[2] - 1) // 2)
    return (0,)


@functools.partial(jax.jit, static_argnums=(0, 1, 2, 3, 4))
def _expanded(key: Any, from_path: str, to_path: str, in_shape: tuple[int, ...],
              from_shape: tuple[int, ...], variables: Any) -> jax.Array:
    model = rules.with_rule(unwrap(key), "linear", "expanded_weights")
    dtype = jnp.result_type(*jax.tree_util.tree_leaves(variables))
    x = jnp.zeros(in_shape, dtype)

    def centre_unit(delta):
        try:
            with nn.intercept_methods(_between(from_path, to_path, delta)):
                model.apply(variables, x)
        except _Reached as reached:
            out = reached.out
        else:
            raise LayerError(f"the forward pass never reached {to_path!r}")
        return out[_centre(out.shape)]

    jac = jax.jacrev(centre_unit)(jnp.zeros(from_shape, dtype))  # (C_to, *from_shape)
    jac = jac[:, 0]
    if jac.ndim == 2:  # a vector layer: one "position"
        jac = jac[:, None, None, :]
    return jnp.moveaxis(jac, 0, -1)  # (W, W, C_from, C_to)


@checks.boundary
def expanded_weights(model: nn.Module, variables: Any, from_layer: str, to_layer: str, *,
                     width: int | None = 5) -> jax.Array:
    """The expanded weights from ``from_layer`` to ``to_layer``: (W, W, C_from, C_to).

    Entry ``[y, x, i, j]`` is the gradient of channel ``j`` of ``to_layer`` at the
    centre of its map, ``((h - 1) // 2, (w - 1) // 2)``, with respect to channel ``i``
    of ``from_layer`` at ``(y, x)``, when ``from_layer`` is a ``W x W`` window and
    every layer between them runs on it with its own padding, as in the article's
    reference code. Taken under the ``linear`` backward rule (ReLU as the identity,
    max pooling with the average pool's gradient), so it depends on the weights only.
    Between two convolutions with only a ReLU between them it is their two kernels
    composed; across a max pool, the composition with the average pool.

    All output channels come from one compiled program: a reverse-mode Jacobian (one
    backward pass vectorized over the ``C_to`` channels). The window is made by running
    the model on the smallest square input at which ``from_layer`` is ``W x W`` (found
    with abstract passes, no computation), so that parallel branches (GoogLeNet's
    inception blocks) see the same window. Use float64 variables for float64 weights.

    Args:
      model: one of our models (it needs a ``rules`` field); paths or aliases of any two
        of its layers, ``from_layer`` before ``to_layer``.
      variables: the model's variables.
      from_layer: the earlier layer.
      to_layer: the later layer.
      width: ``W``, the window's side in ``from_layer``'s grid. ``None`` takes
        ``from_layer``'s whole map at the model's usual input size; that is also what a
        ``to_layer`` without a map (a linear layer) needs. Ignored for a vector
        ``from_layer`` (then W = 1).

    Returns:
      (W, W, C_from, C_to) array in the variables' dtype.

    Raises:
      ModelError: the model has no ``rules`` field.
      LayerError: an unknown layer, or ``to_layer`` not after ``from_layer``.
      InputError: a width the layer cannot take, or one too small for the layers between
        (the message names the smallest that fits).
    """
    rules.with_rule(model, "linear", "expanded_weights")  # the model can take the rule
    spec = input_spec(model)
    usual = (spec.size if spec is not None and spec.size else 224)
    channels = spec.channels if spec is not None else 3
    vector = spec is not None and spec.kind == "vector"
    shape = (1, channels) if vector else (1, usual, usual, channels)
    table, (from_path, to_path), order = _table_index(model, [from_layer, to_layer], shape)
    if order[to_path] <= order[from_path]:
        raise LayerError(f"to_layer {to_layer!r} must come after from_layer {from_layer!r} "
                         f"in the forward pass (positions {order[to_path]} and "
                         f"{order[from_path]} of jaxviz.layer_names(model))")
    from_info, to_info = table[order[from_path]], table[order[to_path]]
    if len(from_info.shape) == 2:
        in_shape, from_shape = shape, from_info.shape
    else:
        if width is None or len(to_info.shape) != 4:
            if width is not None and width != from_info.shape[1]:
                raise InputError(
                    f"to_layer {to_layer!r} has no map (shape {to_info.shape}): its units see "
                    f"all of {from_layer!r}, which is {from_info.shape[1]} x "
                    f"{from_info.shape[2]} at {usual} px; pass width=None (or "
                    f"width={from_info.shape[1]})")
            in_shape, from_shape = shape, from_info.shape
        else:
            width = checks.positive_int(width, "width")
            side = _input_side(static(model), from_path, width, channels, usual)
            in_shape = (1, side, side, channels)
            from_shape = (1, width, width, from_info.shape[-1])
            try:
                return _expanded(static(model), from_path, to_path, in_shape, from_shape,
                                 variables)
            except InputError as e:  # a layer between them cannot take so small a window
                need = _narrowest_window(model, from_path, to_path, channels, usual)
                if need is None or need <= width:
                    raise
                raise InputError(f"a {width} x {width} window of {from_layer!r} is too "
                                 f"small for the layers up to {to_layer!r} ({e}); width="
                                 f"{need} is the smallest that reaches it") from e
    return _expanded(static(model), from_path, to_path, in_shape, from_shape, variables)


def _narrowest_window(model: nn.Module, from_path: str, to_path: str, channels: int,
                      usual: int) -> int | None:
    """The smallest width of ``from_path``'s window at which the forward pass reaches
    ``to_path``: ``from_path``'s width at the smallest input ``to_path`` has a map at
    (None when no input up to the largest searched reaches it)."""
    try:
        side, _, _ = _reaching_side(model, to_path, 1, channels, usual)
    except InputError:
        return None
    return _side_probe(model, from_path, channels, usual)(side)


# --- top connections --------------------------------------------------------------------


class Connections(NamedTuple):
    """A unit's strongest connections to the channels of another layer.

    Attributes:
      layer: the other layer (its path).
      channels: (k,) its channels, strongest first by the L2 norm of their expanded
        weights over the window.
      norm: (k,) those norms.
      total: (k,) the sum of each channel's expanded weights (its sign says whether the
        connection excites or inhibits on the whole).
      maps: (k, W, W) the expanded weights themselves.
      positive: (k,) the channels with the largest ``total``, largest first.
      negative: (k,) the channels with the most negative ``total``, most negative first.
    """

    layer: str
    channels: np.ndarray
    norm: np.ndarray
    total: np.ndarray
    maps: np.ndarray
    positive: np.ndarray
    negative: np.ndarray


def _ranked(layer: str, maps: np.ndarray, k: int) -> Connections:
    """``maps`` (C, W, W): the expanded weights of each channel of ``layer``."""
    norm = np.sqrt((maps.astype(np.float64) ** 2).sum(axis=(1, 2)))
    total = maps.astype(np.float64).sum(axis=(1, 2))
    k = min(k, len(norm))
    order = np.argsort(-norm, kind="stable")[:k]
    return Connections(layer, order, norm[order], total[order], maps[order],
                       np.argsort(-total, kind="stable")[:k], np.argsort(total, kind="stable")[:k])


def _neighbour(model: nn.Module, table, path: str, step: int) -> str | None:
    """The nearest layer before (step -1) or after (+1) ``path`` of the same kind."""
    order = [info.path for info in table]
    kind = {info.path: info.kind for info in table}
    i = order.index(path) + step
    while 0 <= i < len(order):
        if kind[order[i]] == kind[path]:
            return order[i]
        i += step
    return None


@checks.boundary
def top_connections(model: nn.Module, variables: Any, layer: str, unit: int, *,
                    previous: str | None = "auto", next: str | None = "auto",
                    width: int = 5, k: int = 10) -> dict[str, Connections]:
    """The channels of the previous and next layers most strongly connected to one unit.

    For channel ``unit`` of ``layer``: its expanded weights from every channel of
    ``previous`` (``expanded_weights(model, variables, previous, layer)[..., :, unit]``)
    and to every channel of ``next`` (``expanded_weights(model, variables, layer,
    next)[..., unit, :]``), ranked by their L2 norm over the ``width x width`` window
    (the article's ranking), with the most exciting and most inhibiting channels by
    their summed weight.

    Args:
      model, variables: one of our models and its variables.
      layer: the unit's layer (path or alias).
      unit: its channel.
      previous, next: the layers to rank; "auto" takes the nearest layer of the same
        kind before (after) ``layer`` in the forward pass (the previous convolution, the
        previous inception block); None skips that side.
      width: the window, as in :func:`expanded_weights`.
      k: how many channels to keep on each side.

    Returns:
      ``{"previous": Connections, "next": Connections}`` (sides that exist).
    """
    spec = input_spec(model)
    usual = spec.size if spec is not None and spec.size else 224
    shape = (1, spec.channels) if spec is not None and spec.kind == "vector" else (
        1, usual, usual, spec.channels if spec is not None else 3)
    table, (path,), _ = _table_index(model, [layer], shape)
    channels = table[[info.path for info in table].index(path)].shape[-1]
    if isinstance(unit, bool) or not isinstance(unit, numbers.Integral):
        raise InputTypeError(f"unit is a channel index (an int); got {type(unit).__name__}")
    if not 0 <= unit < channels:
        raise InputError(f"unit {unit} is out of range: {layer!r} has {channels} channels")
    k = checks.positive_int(k, "k")
    out: dict[str, Connections] = {}
    for side, other, step in (("previous", previous, -1), ("next", next, 1)):
        if other == "auto":
            other = _neighbour(model, table, path, step)
        if other is None:
            continue
        if side == "previous":
            e = np.asarray(expanded_weights(model, variables, other, path, width=width))
            maps = e[..., unit]
        else:
            e = np.asarray(expanded_weights(model, variables, path, other, width=width))
            maps = e[..., unit, :]
        other_path = capture.resolve(model, [other], table)[0]
        out[side] = _ranked(other_path, np.moveaxis(maps, -1, 0), k)
    return out


# --- colours ----------------------------------------------------------------------------


def weight_heatmap(w: Any, scale: float | None = None) -> np.ndarray:
    """Colours signed weights with the article's diverging scale: (..., 3) uint8.

    ``w / scale`` in [-1, 1] maps piecewise linearly through #0571b0 (-1), #92c5de
    (-0.5), #f7f7f7 (0), #f4a582 (0.5) and #ca0020 (1) (:data:`jaxviz.render.CMAPS`
    ``"weights"``). ``scale`` defaults to ``max |w|`` (1 for an all-zero array).
    """
    a = np.asarray(w, np.float64)
    if scale is None:
        scale = float(np.abs(a).max()) if a.size else 1.0
        scale = scale if scale > 0 else 1.0
    elif not scale > 0:
        raise InputError(f"scale must be positive; got {scale}")
    return render.heatmap(a / scale, "weights")


def draw_connections(connections: dict[str, Connections], *, zoom: int = 12,
                     pad: int = 4) -> np.ndarray:
    """One sheet of a unit's top connections: a row per side, each channel's expanded
    weights as a :func:`weight_heatmap` (scaled by the side's largest magnitude) captioned
    with its channel and signed total. Returns (H, W, 3) uint8."""
    zoom = checks.positive_int(zoom, "zoom")
    rows = []
    for side in ("previous", "next"):
        c = connections.get(side)
        if c is None:
            continue
        heat = weight_heatmap(c.maps)  # one scale per side
        tiles = np.repeat(np.repeat(heat, zoom, axis=1), zoom, axis=2)
        labels = [f"{ch} {t:+.2g}" for ch, t in zip(c.channels, c.total)]
        sheet = render.grid(tiles, ncols=len(tiles), pad=pad, labels=labels)
        rows.append(render.grid(sheet[None], 1, pad=0, labels=[f"{side}: {c.layer}"]))
    if not rows:
        raise InputError("no connections to draw: expected a dict with 'previous' and/or 'next'")
    width = max(r.shape[1] for r in rows)
    rows = [np.pad(r, ((0, pad), (0, width - r.shape[1]), (0, 0)), constant_values=255)
            for r in rows]
    return np.concatenate(rows, axis=0)


# --- factorizations ---------------------------------------------------------------------


@checks.boundary
def first_layer_order(model: nn.Module, variables: Any, *, layer: str | None = None,
                      next_layer: str | None = None, seed: int = 0) -> np.ndarray:
    """The first layer's filters ordered by the first principal component of the next
    layer's absolute weights (the article's ordering, which groups filters that the
    next layer uses together).

    The next layer's kernel (kh, kw, C_in, C_out) is taken in absolute value and
    arranged with one row per input channel (C_in, kh * kw * C_out); the rows' scores
    on the first principal component (``sklearn.decomposition.PCA(1)``) sorted
    ascending give the order.

    Args:
      model, variables: a convolutional model and its variables.
      layer: the convolution whose filters are ordered (default: the first).
      next_layer: the convolution that reads them (default: the next one whose input
        channels equal ``layer``'s filters).
      seed: PCA's ``random_state``.

    Returns:
      (C,) int array: filter indices of ``layer`` in display order.
    """
    names = maps.conv_layers(model, variables)
    if not names:
        raise ModelError(f"{type(model).__name__} has no convolution kernels in its variables")
    aliases = capture.aliases(model)
    i = 0 if layer is None else _conv_index(names, aliases.get(layer, layer), "layer")
    first = np.asarray(maps.kernel(model, variables, names[i]))  # (F, kh, kw, C)
    filters = first.shape[0]
    if next_layer is None:
        # the kernels' shapes only (kh, kw, C_in, F): nothing is transposed to find it
        params = variables.get("params", {})
        j = next((j for j in range(i + 1, len(names))
                  if maps._conv_kernel(params, names[j]).shape[2] == filters), None)
        if j is None:
            raise LayerError(f"no convolution after {names[i]!r} reads its {filters} channels; "
                             f"name next_layer")
    else:
        j = _conv_index(names, aliases.get(next_layer, next_layer), "next_layer")
    k = np.abs(np.asarray(maps.kernel(model, variables, names[j])))  # (F', kh, kw, C_in)
    if k.shape[-1] != filters:
        raise LayerError(f"{names[j]!r} reads {k.shape[-1]} channels, not {names[i]!r}'s "
                         f"{filters} filters")
    rows = k.transpose(3, 1, 2, 0).reshape(filters, -1)  # (C_in, kh * kw * F')
    from sklearn.decomposition import PCA

    scores = PCA(n_components=1, random_state=seed).fit_transform(rows)[:, 0]
    return np.argsort(scores, kind="stable")


def _conv_index(names: list[str], name: str, what: str) -> int:
    if name not in names:
        raise LayerError(f"{what} {name!r} is not a convolution with a kernel; the "
                         f"convolutions are: {', '.join(names)}")
    return names.index(name)


def posneg(w: Any, axis: int = -1) -> np.ndarray:
    """``[max(w, 0), max(-w, 0)]`` concatenated along ``axis``: a non-negative array
    whose NMF factors a signed one (the article's trick for one-sided NMF)."""
    a = np.asarray(w)
    return np.concatenate([np.maximum(a, 0), np.maximum(-a, 0)], axis=axis)


class Factors(NamedTuple):
    """An NMF of an array's last axis.

    Attributes:
      maps: (..., n) each entry's weight on each factor (``fit_transform``).
      components: (n, C) the factors, as directions over the last axis.
    """

    maps: np.ndarray
    components: np.ndarray


def nmf(w: Any, n_components: int, *, seed: int = 0, **kwargs: Any) -> Factors:
    """Non-negative matrix factorization of ``w``'s last axis (scikit-learn's ``NMF``).

    ``w`` (..., C) is reshaped to (prod(...), C) and factored as ``maps @ components``
    with ``sklearn.decomposition.NMF(n_components, random_state=seed, **kwargs)``; the
    maps come back in ``w``'s leading shape. A signed array must first go through
    :func:`posneg`.

    Returns:
      :class:`Factors` ``(maps (..., n), components (n, C))``.
    """
    a = np.asarray(w, np.float64)
    n_components = checks.positive_int(n_components, "n_components")
    if a.ndim < 2:
        raise InputError(f"nmf needs an array of at least 2 dimensions (..., C); got shape "
                         f"{a.shape}")
    if (a < 0).any():
        raise InputError("nmf needs non-negative values; pass a signed array through "
                         "jaxviz.analysis.weights.posneg first")
    from sklearn.decomposition import NMF

    model = NMF(n_components=n_components, random_state=seed, **kwargs)
    maps = model.fit_transform(a.reshape(-1, a.shape[-1]))
    return Factors(maps.reshape(*a.shape[:-1], n_components), model.components_)


def factor_image(maps: Any) -> np.ndarray:
    """Factor weights (H, W, n) as one RGB image in [0, 1]: factor ``k`` gets the hue
    ``k / n`` (red, then round the colour wheel) and the colours add, weighted, with
    the largest weight of the whole array at full intensity."""
    a = np.asarray(maps, np.float64)
    if a.ndim != 3 or (a < 0).any():
        raise InputError(f"factor_image expects non-negative (H, W, n) weights; got shape "
                         f"{a.shape}")
    n = a.shape[-1]
    hues = np.arange(n) / n
    # HSV with s = v = 1 to RGB
    k = (np.array([5.0, 3.0, 1.0])[None, :] + hues[:, None] * 6) % 6
    colours = 1 - np.clip(np.minimum(k, 4 - k), 0, 1)
    rgb = a @ colours
    peak = a.max()
    return np.clip(rgb / (peak if peak > 0 else 1.0), 0, 1)


# --- feature visualization of weight directions -------------------------------------------


def spatial_directions(model: nn.Module, variables: Any, layer: str, vectors: Any, *,
                       key: jax.Array, size: int = 64, steps: int = 256,
                       **visualize_kwargs: Any):
    """Feature visualization of one direction per spatial position.

    ``vectors`` (H, W, C) holds, for each position of a unit's weights, a direction in
    ``layer``'s channel space (e.g. ``expanded_weights(...)[..., unit]``, or NMF
    components). Each is visualized as the image maximizing
    ``A[centre] . vector`` at ``layer`` (:func:`jaxviz.objectives.direction` at the
    centre position), all H x W images as one batch of
    :func:`jaxviz.synthesis.visualize`.

    Returns:
      The :class:`~jaxviz.synthesis.optimize.Synthesis`; its images reshape to
      (H, W, size, size, 3).
    """
    from jaxviz.synthesis import visualize

    v = np.asarray(vectors, np.float32)
    if v.ndim == 1:
        v = v[None, None]
    if v.ndim != 3:
        raise InputError(f"expected vectors of shape (H, W, C) or (C,); got {v.shape}")
    flat = v.reshape(-1, v.shape[-1])
    objective = objectives_lib.direction(layer, flat, position="centre")
    return visualize(model, variables, objective, key=key, batch=len(flat), size=size,
                     steps=steps, **visualize_kwargs)

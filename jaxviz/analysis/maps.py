"""Filters and activation maps: one call that returns arrays, one call that draws them.

The oldest way of looking inside a convolutional network is to look at what it holds
and what it computes for one image: the first layer's filters shown as small RGB
images (Krizhevsky et al. 2012, fig. 3), the maps of a layer before and after its
ReLU and pooling (Zeiler & Fergus 2014 show both), and, over many images, how a
layer's values are distributed. Each view is a pair of functions::

    k = kernel(model, variables, "conv1")           # (F, kh, kw, C), filters first
    tiles = filter_tiles(k)                         # RGB tiles in [0, 1], ±3σ
    save_png(draw_filters(tiles), "conv1.png")

    maps = activation_maps(model, variables, x, "conv1")  # conv, ReLU, pool
    print("\\n".join(statistics(maps).values()))
    save_png(draw_maps(maps["features.1"][0]), "relu1.png")

    hist = histograms(model, variables, images, ["conv1", "conv5"])
    save_png(draw_histogram(*hist["conv5"], log=True), "conv5.png")

The array functions return numpy or jax arrays and compute nothing for display; the
``draw_*`` functions take those arrays and return ``(H, W, 3)`` uint8 images for
:func:`jaxviz.render.save_png`.

Scaling decisions (stated once here, repeated in the docstrings):

- **Filters** are scaled with statistics of the **whole kernel** (every filter and
  every input channel), as notebook 000 applies ``sigmas`` to the whole first
  conv weight, whichever filters and channels are then shown: a filter's tile does
  not change with the selection, and tiles of one drawing are comparable.
  ``per_filter`` uses each filter's own largest ``|w|`` over all its input channels.
- **Activation maps** are scaled with statistics of the whole map (all channels of
  the image), before channels are selected, for the same reason.
- **Histograms** count exactly what :func:`numpy.histogram` counts over all the
  activations at once (float64 edges, the last bin closed), batch by batch.
"""

from __future__ import annotations

import functools
import math
import numbers
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image, ImageDraw, ImageFont

from jaxviz import capture, checks, render
from jaxviz import static as static_lib
from jaxviz.errors import InputError, InputTypeError, LayerError, ModelError
from jaxviz.models.modules import input_spec

__all__ = [
    "conv_layers",
    "FILTER_SCALES",
    "MAP_SCALES",
    "STAGE_KINDS",
    "FilterTiles",
    "activation_maps",
    "draw_filters",
    "draw_histogram",
    "draw_maps",
    "filter_tiles",
    "histograms",
    "kernel",
    "statistics",
]

FILTER_SCALES: tuple[str, ...] = ("sigmas", "per_filter", "max_abs")
MAP_SCALES: tuple[str, ...] = ("pos_sigmas", "sigmas", "per_channel")

# Layers that count as stages of the layer before them (activation_maps): elementwise
# non-linearities, normalizations and pools. An enclosing module that finishes right
# after them (GoogLeNet's BasicConv2d = relu(bn(conv))) counts too, unless it is a
# plain Sequential (whose output repeats its last child's).
STAGE_KINDS: tuple[str, ...] = ("ReLU", "BatchNorm2d", "LocalResponseNorm", "MaxPool2d",
                                "AvgPool2d", "GlobalMaxPool2d")

# Seed document 003 shows a deeper layer as the first 15 input channels of its first
# 20 filters.
_DEFAULT_FILTERS = 20
_DEFAULT_CHANNELS = 15
_FALLBACK_SIZE = 224  # layer table size for a model that does not declare its size
_FILTER_TILE_PX = 48  # draw_filters' default zoom brings a kernel to about this size
_MAP_TILE_PX = 96  # draw_maps' default zoom brings a map to about this size


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _layer_table(model: nn.Module) -> list[capture.LayerInfo]:
    """The layer table at the model's usual size (partial: the layers it reaches)."""
    spec = input_spec(model)
    size = spec.size if spec is not None and spec.size else _FALLBACK_SIZE
    return capture.layer_names(model, size, partial=True)


def _param_subtree(params: Any, path: str) -> Any:
    node = params
    for part in path.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    return node


def _conv_kernel(params: Any, path: str) -> Any:
    """The 4-D ``kernel`` parameter directly under ``path``, or None."""
    node = _param_subtree(params, path)
    if not isinstance(node, Mapping):
        return None
    k = node.get("kernel")
    return k if getattr(k, "ndim", None) == 4 else None


def _conv_list(model: nn.Module, params: Any, table: Sequence[capture.LayerInfo]) -> str:
    alias_of: dict[str, str] = {}
    for alias, path in capture.aliases(model).items():
        alias_of.setdefault(path, alias)
    convs = [info.path for info in table if _conv_kernel(params, info.path) is not None]
    if not convs:
        return f"{type(model).__name__} has no convolution layers"
    shown = [f"{p} ({alias_of[p]})" if p in alias_of else p for p in convs[:12]]
    more = f", ... ({len(convs)} in all)" if len(convs) > 12 else ""
    return f"Its convolution layers: {', '.join(shown)}{more}"


@checks.boundary
def kernel(model: nn.Module, variables: Any, layer: str) -> jax.Array:
    """The kernel of a convolution layer, filters first: ``(F, kh, kw, C_in)``.

    Our convolutions keep their kernels as ``(kh, kw, C_in, F)`` (HWIO, see
    docs/architecture.md); this returns them as ``F`` small ``(kh, kw, C_in)`` images,
    the order :func:`filter_tiles` takes, with the same rows, columns and RGB channel
    order as torch's ``weight[f].permute(1, 2, 0)``. For a grouped convolution
    ``C_in`` is the channels of one group.

    Args:
      model: one of our models, or any Linen model whose convolutions hold a 4-D
        ``kernel`` parameter (``nn.Conv``).
      variables: the model's variables (``{'params': ...}``).
      layer: a module path (``features.0``) or an alias (``conv1``), resolved with the
        layer table at the model's usual input size.

    Returns:
      The kernel as a jax array ``(F, kh, kw, C_in)``.

    Raises:
      LayerError: ``layer`` is not a layer of the model (with close names), or is a
        layer without a convolution kernel (with the convolution layers there are).
      ModelError: the variables hold no parameters for the layer.
    """
    if not isinstance(layer, str):
        raise InputTypeError(f"expected layer as a name (a path or alias), got "
                             f"{type(layer).__name__} {layer!r}")
    params = variables.get("params", {})
    path = capture.aliases(model).get(layer, layer)
    table = _layer_table(model)
    try:
        (path,) = capture.resolve(model, [layer], table)
    except LayerError:
        # a convolution the inference pass does not run (GoogLeNet's auxiliary heads)
        if _conv_kernel(params, path) is None:
            raise
    k = _conv_kernel(params, path)
    if k is None:
        kinds = {info.path: info.kind for info in table}
        what = f"{path!r} ({kinds[path]})" if path in kinds else repr(path)
        if kinds.get(path) in ("Conv2d", "Conv") and _param_subtree(params, path) is None:
            raise ModelError(f"the variables hold no parameters for {what} of "
                             f"{type(model).__name__}: pass the variables made for this "
                             f"model (jaxviz.load returns the pair)")
        named = f"{layer!r} = {what}" if layer != path else what
        raise LayerError(f"expected a convolution layer (a 4-D kernel); layer {named} of "
                         f"{type(model).__name__} has none. {_conv_list(model, params, table)}")
    if isinstance(k, jax.core.Tracer):  # under jit or eval_shape
        return jnp.transpose(k, (3, 0, 1, 2))
    # A host copy: an eager jnp.transpose would compile a program per kernel shape
    # (GoogLeNet's 57 kernels: 2.3 s of compiling on 2 CPU cores), and so would
    # jnp.asarray of the numpy result (jax 0.10's lax.stage); device_put copies.
    return jax.device_put(np.transpose(np.asarray(k), (3, 0, 1, 2)))


def conv_layers(model: nn.Module, variables: Any) -> list[str]:
    """The paths of the layers with a convolution kernel, in forward order (those
    :func:`kernel` takes)."""
    params = variables.get("params", {})
    return [info.path for info in _layer_table(model) if _conv_kernel(params, info.path) is not None]


# --- filters --------------------------------------------------------------------------


class FilterTiles(np.ndarray):
    """The tiles :func:`filter_tiles` returns: a float32 numpy array in [0, 1] that
    also remembers which filters (and input channels) it shows, for the labels of
    :func:`draw_filters`.

    Attributes:
      filters: the filter index of each tile row (``(F',)`` ints).
      channels: the input channel of each tile column (``(C',)`` ints), None for RGB.

    The indices survive operations that keep the shape (``tiles * 1``) and are
    dropped (None) by those that change it (``tiles[:4]``); after reordering, pass
    ``labels=`` to :func:`draw_filters` instead.
    """

    filters: np.ndarray | None
    channels: np.ndarray | None

    def __new__(cls, values: np.ndarray, filters: np.ndarray, channels: np.ndarray | None):
        obj = np.asarray(values).view(cls)
        obj.filters = filters
        obj.channels = channels
        return obj

    def __array_finalize__(self, obj: Any) -> None:
        same = isinstance(obj, FilterTiles) and obj.shape == self.shape
        self.filters = getattr(obj, "filters", None) if same else None
        self.channels = getattr(obj, "channels", None) if same else None


def _selection(spec: Any, size: int, default: int | None, what: str) -> np.ndarray:
    """Indices chosen by ``spec``: None (the first ``default``, or all), a count (the
    first ``spec``), or a sequence of indices (that order: e.g. an ordering by PCA)."""
    if spec is None:
        return np.arange(size if default is None else min(default, size))
    if _is_int(spec):
        if not 1 <= spec <= size:
            raise InputError(f"expected {what} as a count in 1..{size} or a sequence of "
                             f"indices, got {spec}")
        return np.arange(int(spec))
    if isinstance(spec, (str, bytes, Mapping)) or not isinstance(
            spec, (Sequence, np.ndarray, jax.Array, range)):
        raise InputTypeError(f"expected {what} as a count or a sequence of indices, got "
                             f"{type(spec).__name__} {spec!r}")
    idx = np.asarray(spec)
    if idx.ndim != 1 or idx.size == 0 or not np.issubdtype(idx.dtype, np.integer):
        raise InputError(f"expected {what} as a non-empty 1-D sequence of int indices, got "
                         f"{spec!r}")
    if idx.min() < 0 or idx.max() >= size:
        raise InputError(f"expected {what} indices in 0..{size - 1}, got {idx.min()}.."
                         f"{idx.max()}")
    return idx.astype(np.int64)


def _float_array(x: Any, what: str, ndim: int | tuple[int, ...]) -> np.ndarray:
    a = checks.as_array(x, what)
    if isinstance(a, jax.core.Tracer):
        raise InputTypeError(f"expected {what} with concrete values, got a traced array: call "
                             f"this outside jax.jit")
    if not jnp.issubdtype(a.dtype, jnp.floating):
        raise InputTypeError(f"expected {what} as a float array, got dtype {a.dtype}")
    dims = (ndim,) if isinstance(ndim, int) else ndim
    if a.ndim not in dims or 0 in a.shape:
        raise InputError(f"expected {what} as a non-empty {' or '.join(map(str, dims))}-D "
                         f"array, got shape {tuple(a.shape)}")
    return a


@functools.partial(jax.jit, static_argnames="scale")
def _scale_kernel(w: jax.Array, n: float, *, scale: str) -> jax.Array:
    """:func:`filter_tiles`' scaling of the whole kernel, one compiled program per kernel
    shape (run op by op, it compiled a dozen small programs per shape)."""
    if scale == "sigmas":
        return render.sigmas(w, n)
    axes = (1, 2, 3) if scale == "per_filter" else None
    top = jnp.max(jnp.abs(w), axis=axes, keepdims=True)
    return 0.5 + 0.5 * w / jnp.where(top > 0, top, 1)


def filter_tiles(k: Any, *, scale: str = "sigmas", n: float = 3, filters: Any = None,
                 channels: Any = None, rgb: bool | None = None) -> FilterTiles:
    """Convolution filters as images with values in [0, 1], for :func:`draw_filters`.

    A first-layer kernel (3 input channels) gives one RGB tile per filter, the view of
    Krizhevsky et al. (2012, fig. 3) and Zeiler & Fergus (2014, fig. 5). A deeper
    kernel's filters have no colours: they give a grid of grey tiles, one per filter
    and input channel (by default the first 20 filters and their first 15 input
    channels).

    Scalings, all with statistics of the **whole kernel** (every filter and input
    channel, not only those shown), clipped to [0, 1]:

    - ``"sigmas"``: :func:`jaxviz.render.sigmas` of the kernel, ``n`` standard
      deviations (unbiased) either side of its mean span [0, 1] (notebook 000,
      with ``n=3``);
    - ``"per_filter"``: ``0.5 + 0.5 * w / max|w_f|``, each filter ``f`` by the
      largest magnitude among its own weights (all its input channels), so zero is
      mid-grey and every filter reaches 0 or 1;
    - ``"max_abs"``: ``0.5 + 0.5 * w / max|w|`` with the whole kernel's largest
      magnitude.

    A zero scale (an all-zero filter or kernel) maps to 0.5.

    Args:
      k: ``(F, kh, kw, C)`` kernel, filters first (:func:`kernel`).
      scale: one of :data:`FILTER_SCALES`.
      n: standard deviations for ``"sigmas"``.
      filters: which filters: None (all for RGB, else the first 20), a count (the
        first ones), or a sequence of indices in the order to show them (such as an
        ordering by a PCA of the next layer's weights).
      channels: which input channels of grey tiles, as ``filters`` (default the
        first 15).
      rgb: RGB tiles (True; needs C = 3) or grey filter-by-channel tiles (False);
        None: RGB exactly when C = 3.

    Returns:
      :class:`FilterTiles`, float32 in [0, 1]: ``(F', kh, kw, 3)`` RGB tiles, or
      ``(F', C', kh, kw)`` grey tiles (row ``i``: filter ``filters[i]``; column
      ``j``: input channel ``channels[j]``). ``.filters`` and ``.channels`` hold the
      indices shown.

    Raises:
      InputError: ``k`` not 4-D, an unknown ``scale``, ``n <= 0``, indices out of
        range, ``rgb=True`` with C != 3, or ``channels`` with RGB tiles.
      InputTypeError: ``k`` not a float array.
    """
    a = _float_array(k, "k", 4)
    f_count, _, _, c_count = a.shape
    if rgb is None:
        rgb = c_count == 3 and channels is None
    if rgb and c_count != 3:
        raise InputError(f"RGB tiles need a kernel with 3 input channels (F, kh, kw, 3); got "
                         f"k of shape {tuple(a.shape)}: pass rgb=False for grey tiles")
    if rgb and channels is not None:
        raise InputError("channels selects the input channels of grey tiles; RGB tiles show "
                         "all three: pass rgb=False to see them one by one")
    if scale not in FILTER_SCALES:
        raise InputError(f"expected scale as one of {', '.join(FILTER_SCALES)}, got {scale!r}")
    if not (isinstance(n, numbers.Real) and not isinstance(n, bool) and n > 0):
        raise InputError(f"expected n as a number > 0, got {n!r}")
    checks.finite(a, "k")
    f_idx = _selection(filters, f_count, None if rgb else _DEFAULT_FILTERS, "filters")
    c_idx = None if rgb else _selection(channels, c_count, _DEFAULT_CHANNELS, "channels")

    scaled = _scale_kernel(jnp.asarray(a, jnp.result_type(a.dtype, jnp.float32)), n, scale=scale)
    out = np.clip(np.asarray(scaled, np.float32), 0.0, 1.0)[f_idx]
    if not rgb:
        out = out[..., c_idx].transpose(0, 3, 1, 2)  # (F', kh, kw, C') -> (F', C', kh, kw)
    return FilterTiles(np.ascontiguousarray(out), f_idx, c_idx)


def _zoom(tiles: np.ndarray, zoom: int, rows: int, cols: int) -> np.ndarray:
    """Nearest-neighbour upscale of axes ``rows`` and ``cols`` by ``zoom``."""
    return np.repeat(np.repeat(tiles, zoom, axis=rows), zoom, axis=cols)


def _auto_zoom(zoom: Any, side: int, target: int) -> int:
    if zoom is None:
        return max(1, math.ceil(target / side))
    return checks.positive_int(zoom, "zoom")


def _labels(labels: Any, default: Sequence[Any] | None, count: int, what: str
            ) -> list[str] | None:
    if labels is False:
        return None
    if labels is None or labels is True:
        values = list(default) if default is not None and len(default) == count else range(count)
        return [str(int(v)) for v in values]
    if isinstance(labels, str) or not isinstance(labels, (Sequence, np.ndarray)):
        raise InputTypeError(f"expected {what} as a sequence of {count} captions, None or "
                             f"False, got {type(labels).__name__}")
    if len(labels) != count:
        raise InputError(f"expected {count} {what} (one per tile), got {len(labels)}")
    return [str(s) for s in labels]


def _font() -> Any:
    return ImageFont.load_default()


def _text_size(text: str, font: Any) -> tuple[int, int]:
    box = ImageDraw.Draw(Image.new("RGB", (1, 1))).textbbox((0, 0), text, font=font)
    return int(box[2] - box[0]), int(box[3])


def draw_filters(tiles: Any, *, labels: Any = None, channel_labels: Any = None,
                 zoom: int | None = None, gutter: int = 2, ncols: int | None = None,
                 background: int = 255, rgb: bool | None = None) -> np.ndarray:
    """Draws :func:`filter_tiles`' tiles as one image.

    RGB tiles ``(F, kh, kw, 3)`` are laid out row by row (:func:`jaxviz.render.grid`),
    each with its filter index underneath. Grey tiles ``(F, C, kh, kw)`` are a table:
    one row per filter, labelled on the left with its index, one column per input
    channel, labelled on top. Every tile is enlarged ``zoom`` times with
    nearest-neighbour sampling (an 11x11 kernel is 55 px by default, as notebook 000
    shows AlexNet's first layer), with ``gutter`` pixels of ``background`` between
    tiles. Floats are rounded to 8 bits as ``rint(255 * clip(t, 0, 1))``.

    Args:
      tiles: :func:`filter_tiles`' result (or any such array in [0, 1]).
      labels: filter captions: None for the filter indices (``tiles.filters`` when
        known, else 0, 1, ...), a sequence of F captions, or False for none.
      channel_labels: column captions of grey tiles, as ``labels`` (default the input
        channel indices).
      zoom: integer enlargement; None: the smallest that makes a tile at least 48 px.
      gutter: pixels between tiles and around the border.
      ncols: RGB tiles per row (None: ``ceil(sqrt(F))``); grey tiles have one column
        per channel, except those of one input channel (a grey first layer), which are
        laid out as RGB tiles are.
      background: grey level 0..255 of gutters and caption bands.
      rgb: whether ``tiles`` are RGB ``(F, kh, kw, 3)`` or grey ``(F, C, kh, kw)``.
        None: as :func:`filter_tiles` made them (:class:`FilterTiles` knows); for a
        plain array, RGB when the last axis is 3, except ``(F, C, 3, 3)`` with
        ``C != 3`` (grey tiles of 3x3 kernels). Pass it for a plain ``(F, 3, 3, 3)``
        array of grey tiles.

    Returns:
      ``(H, W, 3)`` uint8. For RGB, :func:`jaxviz.render.grid`'s shape with tiles of
      ``(kh * zoom, kw * zoom)``; for grey, a label column and a header row around
      ``F`` rows and ``C`` columns of such tiles.

    Raises:
      InputError: ``tiles`` neither ``(F, kh, kw, 3)`` nor ``(F, C, kh, kw)``, bad
        ``zoom``, ``gutter``, ``ncols`` or label counts.
    """
    a = _float_array(tiles, "tiles", 4)
    gutter = checks.positive_int(gutter, "gutter", minimum=0)
    if not (_is_int(background) and 0 <= background <= 255):
        raise InputError(f"expected background as a grey level 0..255, got {background!r}")
    a = np.asarray(a)
    if rgb is None:
        if isinstance(tiles, FilterTiles) and tiles.filters is not None:
            rgb = tiles.channels is None
        else:
            rgb = a.shape[-1] == 3 and not (a.shape[-2] == 3 and a.shape[1] != 3)
    if rgb and a.shape[-1] != 3:
        raise InputError(f"expected RGB tiles as (F, kh, kw, 3), got shape {a.shape}")
    if rgb:
        f, kh, kw, _ = a.shape
        z = _auto_zoom(zoom, max(kh, kw), _FILTER_TILE_PX)
        cols = math.ceil(math.sqrt(f)) if ncols is None else checks.positive_int(ncols, "ncols")
        names = _labels(labels, getattr(tiles, "filters", None), f, "labels")
        return render.grid(_zoom(a, z, 1, 2), cols, pad=gutter, labels=names,
                           background=background)
    f, c, kh, kw = a.shape
    z = _auto_zoom(zoom, max(kh, kw), _FILTER_TILE_PX)
    if c == 1:  # one input channel (a grey first layer): a grid of filters, like RGB
        cols = math.ceil(math.sqrt(f)) if ncols is None else checks.positive_int(ncols, "ncols")
        names = _labels(labels, getattr(tiles, "filters", None), f, "labels")
        return render.grid(_zoom(a[:, 0], z, 1, 2), cols, pad=gutter, labels=names,
                           background=background)
    rows = _labels(labels, getattr(tiles, "filters", None), f, "labels")
    heads = _labels(channel_labels, getattr(tiles, "channels", None), c, "channel_labels")
    th, tw = kh * z, kw * z
    block = render.grid(_zoom(a, z, 2, 3).reshape(f * c, th, tw), c, pad=gutter,
                        background=background)
    font = _font()
    ink = (0, 0, 0) if background > 127 else (255, 255, 255)
    left = max((_text_size(s, font)[0] for s in rows), default=0) + 4 if rows else 0
    top = max(_text_size(s, font)[1] for s in heads) + 2 if heads else 0
    canvas = Image.new("RGB", (left + block.shape[1], top + block.shape[0]), (background,) * 3)
    canvas.paste(Image.fromarray(block), (left, top))
    draw = ImageDraw.Draw(canvas)
    for i, s in enumerate(rows or []):
        y = top + gutter + i * (th + gutter) + (th - _text_size(s, font)[1]) // 2
        draw.text((left - 2 - _text_size(s, font)[0], y), s, fill=ink, font=font)
    for j, s in enumerate(heads or []):
        x = left + gutter + j * (tw + gutter) + (tw - _text_size(s, font)[0]) // 2
        draw.text((x, 1), s, fill=ink, font=font)
    return np.asarray(canvas, dtype=np.uint8).copy()


# --- activation maps -------------------------------------------------------------------


_compiled = static_lib.jit


def _maps_core(model, paths, variables, x):
    return capture.run(model, variables, x, list(paths), logits=False)[1]


_maps_jit = _compiled(_maps_core, 2)


def _stages(table: Sequence[capture.LayerInfo], path: str) -> list[str]:
    """``path`` and the stage layers (:data:`STAGE_KINDS`, enclosing non-Sequential
    modules) that directly follow it in forward order."""
    order = [info.path for info in table]
    i = order.index(path)
    out = [path]
    for info in table[i + 1:]:
        encloses = path.startswith(info.path + ".") and info.kind != "Sequential"
        if info.kind in STAGE_KINDS or encloses:
            out.append(info.path)
        else:
            break
    return out


@checks.boundary
def activation_maps(model: nn.Module, variables: Any, x: Any, layer: str, *,
                    stages: bool = True) -> dict[str, jax.Array]:
    """A layer's maps for one image, and those of the ReLU and pooling after it.

    With ``stages``, the layers that directly follow ``layer`` in forward order and
    only transform its output (ReLU, BatchNorm, max or average pooling:
    :data:`STAGE_KINDS`, and an enclosing conv-BN-ReLU unit such as GoogLeNet's
    ``BasicConv2d``) are returned too, so a convolution is seen before and after its
    non-linearity and pooling, as Zeiler & Fergus (2014) show them: for AlexNet's
    ``conv1``, ``features.0`` (conv), ``features.1`` (ReLU), ``features.2``
    (max pool). All come from one forward pass, compiled once per model and shape.

    Args:
      model: one of our models, or any Linen model.
      variables: its variables.
      x: one image as a batch of one, ``(1, H, W, C)``.
      layer: a module path or alias.
      stages: also return the stages after ``layer``.

    Returns:
      ``{path: array}`` in forward order, keyed by module paths; maps keep the batch
      axis, ``(1, h, w, c)``.

    Raises:
      LayerError: ``layer`` is not a layer of the model.
      InputError: ``x`` is not one image of the model's kind.
    """
    x = checks.batch(x, model)
    if x.shape[0] != 1:
        raise InputError(f"expected x as one image, a batch of one (1, H, W, C); got a batch "
                         f"of {x.shape[0]} (shape {tuple(x.shape)}): pass x[i:i + 1]")
    if not isinstance(layer, str):
        raise InputTypeError(f"expected layer as a name (a path or alias), got "
                             f"{type(layer).__name__} {layer!r}")
    table = capture.layer_names(model, tuple(x.shape), partial=True)
    (path,) = capture.resolve(model, [layer], table)
    paths = tuple(_stages(table, path) if stages else [path])
    out = _maps_jit(model, paths, variables, x)
    return {p: out[p] for p in paths}  # forward order (jit returns dicts sorted by key)


def statistics(maps: Mapping[str, Any]) -> dict[str, str]:
    """One line of statistics per map (:func:`jaxviz.render.summary`, named by its
    layer), e.g. ``features.0 (1, 55, 55, 64) n=193600 x∈[-34.649, 32.174] μ=-0.398
    σ=3.305``, as notebook 000 prints for every layer of AlexNet.

    Args:
      maps: ``{name: array}``, e.g. :func:`activation_maps`' result.

    Returns:
      ``{name: line}`` in the same order.
    """
    if not isinstance(maps, Mapping):
        raise InputTypeError(f"expected maps as a dict {{name: array}}, got "
                             f"{type(maps).__name__}")
    return {name: render.summary(a, name=str(name)) for name, a in maps.items()}


def draw_maps(a: Any, *, scale: str = "pos_sigmas", n: float | None = None, ncols: int = 16,
              channels: Any = None, labels: Any = True, zoom: int | None = None,
              gutter: int = 2, background: int = 255) -> np.ndarray:
    """Every channel of one image's maps (or the chosen ones) as a grid of grey tiles.

    Scalings, with statistics of the whole map (all channels, not only those shown),
    clipped to [0, 1]:

    - ``"pos_sigmas"`` (for maps after a ReLU or a pool):
      ``pos_sigmas(a, n) + 0.5`` (:func:`jaxviz.render.pos_sigmas`, ``n=2``): zero is
      mid-grey and ``n`` standard deviations of the positive values are white, as
      notebook 000 shows post-ReLU and post-pool maps;
    - ``"sigmas"`` (for signed maps, before the ReLU): :func:`jaxviz.render.sigmas`
      (``n=1``, as notebook 000 shows a convolution's output);
    - ``"per_channel"``: each channel stretched from its own minimum (black) to its
      maximum (white); a constant channel is black.

    Args:
      a: ``(H, W, C)`` maps, or ``(1, H, W, C)`` (one image of a batch).
      scale: one of :data:`MAP_SCALES`.
      n: standard deviations for the sigma scalings (None: 2 for ``pos_sigmas``, 1 for
        ``sigmas``).
      ncols: tiles per row.
      channels: None (all), a count (the first ones) or a sequence of indices.
      labels: True: each tile captioned with its channel index; False: none; or a
        sequence of captions.
      zoom: integer nearest-neighbour enlargement; None: the smallest that makes a
        tile at least 96 px (2 for AlexNet's 55 px conv1 maps).
      gutter: pixels between tiles; background: their grey level 0..255.

    Returns:
      ``(H', W', 3)`` uint8, :func:`jaxviz.render.grid` of the tiles.

    Raises:
      InputError: ``a`` not ``(H, W, C)``, unknown ``scale``, bad counts or indices.
    """
    m = _float_array(a, "a", (3, 4))
    if m.ndim == 4:
        if m.shape[0] != 1:
            raise InputError(f"expected a as one image's maps (H, W, C) or (1, H, W, C), got "
                             f"shape {tuple(m.shape)}: pass a[i]")
        m = m[0]
    if scale not in MAP_SCALES:
        raise InputError(f"expected scale as one of {', '.join(MAP_SCALES)}, got {scale!r}")
    if n is not None and not (isinstance(n, numbers.Real) and not isinstance(n, bool) and n > 0):
        raise InputError(f"expected n as a number > 0, got {n!r}")
    checks.finite(m, "a")
    h, w, c = m.shape
    idx = _selection(channels, c, None, "channels")
    if scale == "pos_sigmas":
        t = np.asarray(render.pos_sigmas(m, 2 if n is None else n)) + 0.5
    elif scale == "sigmas":
        t = np.asarray(render.sigmas(m, 1 if n is None else n))
    else:
        f = np.asarray(m, np.float64)
        lo, hi = f.min(axis=(0, 1)), f.max(axis=(0, 1))
        span = hi - lo
        t = np.where(span > 0, (f - lo) / np.where(span > 0, span, 1), 0.0)
    t = np.clip(t, 0.0, 1.0)[..., idx].transpose(2, 0, 1)  # (C', H, W)
    z = _auto_zoom(zoom, max(h, w), _MAP_TILE_PX)
    names = _labels(labels, idx, len(idx), "labels")
    return render.grid(_zoom(t, z, 1, 2), checks.positive_int(ncols, "ncols"),
                       pad=checks.positive_int(gutter, "gutter", minimum=0), labels=names,
                       background=background)


# --- histograms ------------------------------------------------------------------------


def _minmax_core(model, paths, variables, x):
    acts = capture.run(model, variables, x, list(paths), logits=False)[1]
    return tuple((jnp.min(acts[p]), jnp.max(acts[p])) for p in paths)


def _count_core(model, paths, bins, variables, x, weight, lows, highs, inner):
    """Per layer, the counts of the bins whose (directed-rounded) edges are given:
    ``lows[i] <= a <= highs[i]``, bin = number of ``inner[i]`` edges ``<= a``; examples
    weighted 1 (real) or 0 (padding)."""
    acts = capture.run(model, variables, x, list(paths), logits=False)[1]
    out = []
    for i, p in enumerate(paths):
        a = acts[p].reshape(x.shape[0], -1).astype(inner.dtype)
        keep = (a >= lows[i]) & (a <= highs[i]) & (weight[:, None] > 0)
        idx = jnp.searchsorted(inner[i], a.reshape(-1), side="right")
        out.append(jnp.zeros(bins, jnp.int32).at[idx].add(keep.reshape(-1).astype(jnp.int32)))
    return tuple(out)


_minmax_jit = _compiled(_minmax_core, 2)
_count_jit = _compiled(_count_core, 3)


def _round_to(e: np.ndarray, dtype: Any, up: bool) -> np.ndarray:
    """float64 values rounded to ``dtype`` towards +inf (``up``) or -inf, so that for
    any ``v`` of ``dtype``: ``v >= e  <=>  v >= up(e)`` and ``v <= e  <=>  v <= down(e)``."""
    r = e.astype(dtype)
    if up:
        return np.where(r.astype(np.float64) < e, np.nextafter(r, dtype.type(np.inf)), r)
    return np.where(r.astype(np.float64) > e, np.nextafter(r, dtype.type(-np.inf)), r)


def _chunks(images: Any, model: nn.Module, batch_size: int, size: list[int]):
    """``(x, weight)`` chunks of ``size[0]`` examples (fixed by the first chunk): each
    batch is cut to at most that many and the last piece padded with copies of its
    first example, weight 0, so that every chunk has one shape. Only one chunk at a
    time is moved to the device."""
    if hasattr(images, "shape") and hasattr(images, "dtype"):
        batches: Iterable[Any] = (images,)
    else:
        batches = images
    for b in batches:
        b = checks.as_array(b, "images")
        checks.shape(b, model, what="images")
        if not size:
            size.append(min(batch_size, b.shape[0]))
        s = size[0]
        for start in range(0, b.shape[0], s):
            part = checks.batch(b[start:start + s], model, what="images")
            k = part.shape[0]
            if k < s:
                part = jnp.concatenate([part, jnp.repeat(part[:1], s - k, axis=0)])
            # made on the host and copied (jnp.asarray would compile a program per shape)
            yield part, jax.device_put((np.arange(s) < k).astype(np.float32))


def _ranges(range_: Any, names: Sequence[str]) -> dict[str, tuple[float, float]] | None:
    if range_ is None:
        return None

    def pair(r: Any, what: str) -> tuple[float, float]:
        try:
            lo, hi = (float(v) for v in r)
        except (TypeError, ValueError):
            raise InputError(f"expected {what} as a pair (low, high), got {r!r}") from None
        if not (math.isfinite(lo) and math.isfinite(hi) and lo <= hi):
            raise InputError(f"expected {what} as finite low <= high, got {r!r}")
        return lo, hi

    if isinstance(range_, Mapping):
        missing = [name for name in names if name not in range_]
        if missing:
            raise InputError(f"range has no entry for {missing}: give a (low, high) pair per "
                             f"layer, or one pair for all")
        return {name: pair(range_[name], f"range[{name!r}]") for name in names}
    one = pair(range_, "range")
    return {name: one for name in names}


@checks.boundary
def histograms(model: nn.Module, variables: Any, images: Any, layers: str | Sequence[str], *,
               bins: int = 64, range: Any = None, batch_size: int = 64
               ) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Histograms of layers' activations over a population of images, streamed.

    ``images`` go through the model ``batch_size`` at a time, so memory holds one
    batch's activations, never the population's. Counting is exactly
    :func:`numpy.histogram` over all the activations of each layer at once: bins
    ``[e_i, e_{i+1})`` of float64 edges ``linspace(low, high, bins + 1)``, the last one
    closed, values outside ``[low, high]`` not counted, ``low == high`` widened to
    ``low - 0.5, high + 0.5``. Each batch is binned on the device, against the edges
    rounded outwards to the activations' precision (so a float32 value falls in the
    bin the float64 comparison gives; ``jnp.histogram`` would compare with rounded
    edges and can differ from numpy at a bin edge), and the integer counts are summed
    on the host. One difference remains: XLA flushes subnormal numbers (below 1.2e-38
    in float32) to zero, so such a value next to an edge at exactly 0 may land on the
    other side of it.

    Two passes when ``range`` is None: the first finds each layer's minimum and
    maximum over all images (the edges then run exactly from one to the other), the
    second counts. ``images`` must then be iterable twice (an array, a list); a
    one-shot iterator (a generator) needs an explicit ``range``.

    Each pass compiles one program per model, layers and chunk shape: the last, short
    chunk of an array is padded (with weight 0) to the chunk size.

    Args:
      model: one of our models, or any Linen model.
      variables: its variables.
      images: an ``(N, H, W, C)`` array (cut into chunks of ``batch_size``), or an
        iterable of such batches (each cut likewise; the first fixes the chunk size).
      layers: a layer name (path or alias) or a sequence of them.
      bins: number of bins.
      range: None (each layer's min and max), one ``(low, high)`` for every layer, or
        ``{name: (low, high)}``.
      batch_size: images per forward pass.

    Returns:
      ``{name: (counts, edges)}`` keyed by the names as given: ``counts`` ``(bins,)``
      int64, ``edges`` ``(bins + 1,)`` float64.

    Raises:
      LayerError: an unknown layer.
      InputError: a bad batch, ``bins`` or ``batch_size``, an invalid range, no
        images, non-finite activations, or a one-shot iterator without ``range``.
    """
    bins = checks.positive_int(bins, "bins")
    batch_size = checks.positive_int(batch_size, "batch_size")
    names = capture.layer_list(layers)
    is_array = hasattr(images, "shape") and hasattr(images, "dtype")
    if not is_array:
        if isinstance(images, (str, bytes)) or not isinstance(images, Iterable):
            raise InputTypeError(f"expected images as an (N, H, W, C) array or an iterable of "
                                 f"batches, got {type(images).__name__}")
        if range is None and iter(images) is images:
            raise InputError("images is a one-shot iterator, but range=None needs two passes "
                             "(min/max, then counts): pass a list or an array, or an explicit "
                             "range=(low, high)")
    ranges = _ranges(range, names)
    table_cache: dict[tuple[int, ...], tuple[str, ...]] = {}

    def paths_for(x: jax.Array) -> tuple[str, ...]:
        key = tuple(x.shape)
        if key not in table_cache:
            table = capture.layer_names(model, key, partial=True)
            table_cache[key] = tuple(capture.resolve(model, names, table))
        return table_cache[key]

    size: list[int] = []
    if ranges is None:
        lo = {name: math.inf for name in names}
        hi = {name: -math.inf for name in names}
        seen = False
        for x, _ in _chunks(images, model, batch_size, size):
            seen = True
            for name, (mn, mx) in zip(names, _minmax_jit(model, paths_for(x), variables, x)):
                lo[name] = min(lo[name], float(mn))
                hi[name] = max(hi[name], float(mx))
        if not seen:
            raise InputError("images holds no batch: pass at least one image")
        bad = [name for name in names if not (math.isfinite(lo[name]) and math.isfinite(hi[name]))]
        if bad:
            raise InputError(f"the activations of {bad} are not finite (min/max "
                             f"{[(lo[b], hi[b]) for b in bad]}): no range can be found")
        ranges = {name: (lo[name], hi[name]) for name in names}

    exact = np.dtype(np.float64 if jax.config.read("jax_enable_x64") else np.float32)
    edges, lows, highs, inner = {}, [], [], []
    for name in names:
        a, b = ranges[name]
        if a == b:
            a, b = a - 0.5, b + 0.5
        e = np.linspace(a, b, bins + 1)
        edges[name] = e
        lows.append(_round_to(e[:1], exact, up=True))
        highs.append(_round_to(e[-1:], exact, up=False))
        inner.append(_round_to(e[1:-1], exact, up=True))
    lows_a = jax.device_put(np.concatenate(lows))
    highs_a = jax.device_put(np.concatenate(highs))
    inner_a = jax.device_put(np.stack(inner).reshape(len(names), bins - 1))

    counts = {name: np.zeros(bins, np.int64) for name in names}
    seen = False
    size.clear()
    for x, weight in _chunks(images, model, batch_size, size):
        seen = True
        got = _count_jit(model, paths_for(x), bins, variables, x, weight, lows_a, highs_a,
                         inner_a)
        for name, c in zip(names, got):
            counts[name] += np.asarray(c, np.int64)
    if not seen:
        raise InputError("images holds no batch: pass at least one image")
    return {name: (counts[name], edges[name]) for name in names}


def draw_histogram(counts: Any, edges: Any, *, size: tuple[int, int] = (160, 320),
                   log: bool = False, title: str | None = None, color: tuple[int, int, int] = (
                       60, 60, 60)) -> np.ndarray:
    """A histogram as bars, drawn with numpy and PIL.

    The bars fill a plot area between an optional title band on top and a band at
    the bottom that gives the first and last edge; heights are ``counts / max`` (or
    ``log1p(counts) / log1p(max)`` with ``log``, which shows the sparse tails of
    post-ReLU distributions beside their peak at zero). When there are more bins than
    pixel columns, a column shows the tallest bin it covers.

    Args:
      counts: ``(bins,)`` non-negative counts.
      edges: ``(bins + 1,)`` increasing edges (:func:`histograms` gives both).
      size: ``(height, width)`` of the image, at least ``(48, 64)``.
      log: logarithmic heights.
      title: a line of text above the bars.
      color: RGB of the bars.

    Returns:
      ``(height, width, 3)`` uint8.

    Raises:
      InputError: shapes that do not fit, negative counts, a too-small size.
    """
    c = np.asarray(checks.as_array(counts, "counts"), np.float64)
    e = np.asarray(checks.as_array(edges, "edges"), np.float64)
    if c.ndim != 1 or c.size == 0 or e.shape != (c.size + 1,):
        raise InputError(f"expected counts (bins,) and edges (bins + 1,), got shapes "
                         f"{tuple(c.shape)} and {tuple(e.shape)}")
    if not np.isfinite(c).all() or (c < 0).any():
        raise InputError("expected counts as finite non-negative numbers")
    try:
        height, width = (int(s) for s in size)
    except (TypeError, ValueError):
        raise InputError(f"expected size as (height, width), got {size!r}") from None
    if height < 48 or width < 64:
        raise InputError(f"expected size of at least (48, 64), got {size!r}")
    font = _font()
    line = _text_size("Ag|", font)[1] + 2
    top = line if title else 4
    bottom = line + 2
    margin = 4
    pw, ph = width - 2 * margin, height - top - bottom
    heights = np.log1p(c) if log else c
    peak = heights.max()
    frac = heights / peak if peak > 0 else np.zeros_like(heights)
    nb = c.size
    out = np.full((height, width, 3), 255, np.uint8)
    base = top + ph  # first row below the plot area
    for col in np.arange(pw):
        first = col * nb // pw
        last = max(first + 1, -(-(col + 1) * nb // pw))
        h = int(round(float(frac[first:last].max()) * ph))
        if h:
            out[base - h: base, margin + col] = color
    out[base, margin: margin + pw] = (0, 0, 0)  # the axis
    canvas = Image.fromarray(out)
    draw = ImageDraw.Draw(canvas)
    ink = (0, 0, 0)
    if title:
        draw.text((margin, 1), str(title), fill=ink, font=font)
    lo_s, hi_s = f"{float(e[0]):.4g}", f"{float(e[-1]):.4g}"
    draw.text((margin, base + 2), lo_s, fill=ink, font=font)
    draw.text((width - margin - _text_size(hi_s, font)[0], base + 2), hi_s, fill=ink, font=font)
    return np.asarray(canvas, dtype=np.uint8).copy()

"""Class activation maps: a layer's channels weighted by what the target gives them.

Every method here returns ``(N, H, W)`` maps for a batch ``x: (N, H, W, C)``. With ``A``
the chosen layer's activation ``(N, h, w, K)`` and ``G = d f_n / d A`` the gradient of
the target with respect to it, each method computes a map ``M`` at the layer's
resolution (the weighted channels' sum; with ``eigen_smooth=True`` their projection on
their first principal component, as pytorch-grad-cam's option), then the steps its
options name, in this order:

1. ``relu=True``: ``M = max(M, 0)`` (every paper's final ReLU; Captum's
   ``LayerGradCam`` leaves it off by default: ``relu=False``);
2. ``normalize="minmax"``: per image ``M = (M - min M) / (max(M - min M) + 1e-7)``
   (what pytorch-grad-cam applies to every map; off by default, so maps keep their
   units and stay comparable across images);
3. ``resize``: ``"bilinear"`` (default) upsamples to the input's (H, W) with half-pixel
   centres and edge values held (torch's ``interpolate(mode="bilinear",
   align_corners=False)``, OpenCV's ``cv2.resize`` with ``INTER_LINEAR``);
   ``"nearest"`` takes input pixel ``floor(i * h / H)`` (torch's ``mode="nearest"``,
   Captum's ``GuidedGradCam`` default); None keeps the layer's resolution. With
   ``normalize="minmax"`` the resized map is scaled once more, as pytorch-grad-cam does
   (an upsampled map's extremes fall between its samples), so it spans [0, 1].

So ``relu=True, normalize="minmax"`` reproduces pytorch-grad-cam's output for one target
layer, and ``relu=False, resize=None`` Captum's ``LayerGradCam``. The layer is any module
path or alias whose output is ``(N, h, w, K)``; ``at="input"`` takes the module's input
instead and ``index`` picks one array of a module that returns (or takes) several
(:func:`jaxviz.attribution.layer_gradient`).

:func:`multi_layer_cam` combines several layers' maps as pytorch-grad-cam does with
several target layers.

The gradient-free methods run the network once per channel: :func:`score_cam` on the
input masked by each channel, :func:`ablation_cam` with each channel zeroed at the layer
(the part of the network before the layer is computed once). Both run ``batch_size``
channels x N images per compiled chunk.

References:
  Selvaraju et al., "Grad-CAM: Visual Explanations from Deep Networks via
  Gradient-based Localization", ICCV 2017, arXiv:1610.02391 (Grad-CAM, guided Grad-CAM).
  Chattopadhay et al., "Grad-CAM++: Improved Visual Explanations for Deep Convolutional
  Networks", WACV 2018, arXiv:1710.11063. Fu et al., "Axiom-based Grad-CAM", BMVC 2020,
  arXiv:2008.02312 (XGrad-CAM). Draelos & Carin, "Use HiResCAM instead of Grad-CAM for
  faithful explanations of convolutional neural networks", arXiv:2011.08891, 2020.
  Jiang et al., "LayerCAM: Exploring Hierarchical Class Activation Maps for
  Localization", IEEE TIP 2021. Wang et al., "Score-CAM: Score-Weighted Visual
  Explanations for Convolutional Neural Networks", CVPR Workshops 2020,
  arXiv:1910.01279. Desai & Ramaswamy, "Ablation-CAM: Visual Explanations for Deep
  Convolutional Network via Gradient-free Localization", WACV 2020. Muhammad & Yeasin,
  "Eigen-CAM: Class Activation Map using Principal Components", IJCNN 2020,
  arXiv:2008.00299.
"""

from __future__ import annotations

import functools
import numbers
from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxviz import checks
from jaxviz._host import to_device
from jaxviz.errors import InputError, InputTypeError
from jaxviz.attribution._common import (
    Target, _at_layer, _check_batch_size, _check_x, _compiled, _copies_values,
    _layer_gradients, _layer_struct, _objective, _values)
from jaxviz.attribution.gradients import _where, guided_backprop

RESIZE_MODES: tuple[str | None, ...] = ("bilinear", "nearest", None)
NORMALIZATIONS: tuple[str | None, ...] = (None, "minmax")
CAM_METHODS: tuple[str, ...] = ("grad_cam", "grad_cam_plus_plus", "xgrad_cam", "hires_cam",
                                "layer_cam", "score_cam", "ablation_cam", "eigen_cam")


_NAMES = {"grad_cam": "Grad-CAM", "grad_cam_plus_plus": "Grad-CAM++", "xgrad_cam": "XGrad-CAM",
          "hires_cam": "HiResCAM", "layer_cam": "LayerCAM", "score_cam": "Score-CAM",
          "ablation_cam": "Ablation-CAM", "eigen_cam": "Eigen-CAM"}


# --- resizing -----------------------------------------------------------------------------------


@functools.lru_cache(maxsize=256)
def _resize_matrix(n_in: int, n_out: int, mode: str) -> np.ndarray:
    """(n_out, n_in) interpolation weights along one axis.

    ``"bilinear"``: source ``(i + 0.5) n_in / n_out - 0.5`` clamped to the edges;
    ``"corners"``: source ``i (n_in - 1) / (n_out - 1)`` (``align_corners=True``);
    ``"nearest"``: source ``floor(i * n_in / n_out)`` in float32, as torch computes it.
    """
    out = np.arange(n_out)
    m = np.zeros((n_out, n_in))
    if mode == "nearest":
        scale = np.float32(n_in) / np.float32(n_out)
        src = np.minimum(np.floor(out.astype(np.float32) * scale).astype(int), n_in - 1)
        m[out, src] = 1.0
        return m
    if mode == "corners":
        src = out * ((n_in - 1) / (n_out - 1)) if n_out > 1 else np.zeros(n_out)
    else:
        src = np.clip((out + 0.5) * (n_in / n_out) - 0.5, 0.0, n_in - 1)
    low = np.floor(src).astype(int)
    high = np.minimum(low + 1, n_in - 1)
    frac = src - low
    np.add.at(m, (out, low), 1.0 - frac)
    np.add.at(m, (out, high), frac)
    return m


def resize(maps: jax.Array, size: tuple[int, int], mode: str = "bilinear") -> jax.Array:
    """Resizes ``maps: (N, h, w, ...)`` to ``(N, *size, ...)``.

    ``mode``: ``"bilinear"`` (half-pixel centres, edges held: torch's ``align_corners=
    False``, OpenCV's ``INTER_LINEAR``), ``"corners"`` (``align_corners=True``: torch's
    ``UpsamplingBilinear2d``) or ``"nearest"`` (torch's ``mode="nearest"``). No
    antialiasing, as in those. Exact: a matrix per axis, applied with full precision.
    """
    if mode not in ("bilinear", "corners", "nearest"):
        raise InputError(f"unknown resize mode {mode!r}; expected bilinear, corners or nearest")
    h, w = maps.shape[1:3]
    rows = jnp.asarray(_resize_matrix(int(h), int(size[0]), mode), maps.dtype)
    cols = jnp.asarray(_resize_matrix(int(w), int(size[1]), mode), maps.dtype)
    return jnp.einsum("Hh,nhw...,Ww->nHW...", rows, maps, cols,
                      precision=jax.lax.Precision.HIGHEST)


# --- shared steps ---------------------------------------------------------------------------------


def _check_options(relu: Any, normalize: Any, resize_mode: Any) -> None:
    if not isinstance(relu, bool):
        raise InputError(f"expected relu as True or False, got {relu!r}")
    if normalize not in NORMALIZATIONS:
        raise InputError(f"unknown normalize {normalize!r}; expected None or 'minmax'")
    if resize_mode not in RESIZE_MODES:
        raise InputError(f"unknown resize {resize_mode!r}; expected 'bilinear', 'nearest' "
                         f"or None (the layer's resolution)")


def _check_smoothing(eigen_smooth: Any, flip: Any) -> None:
    if not isinstance(eigen_smooth, bool):
        raise InputError(f"expected eigen_smooth as True or False, got {eigen_smooth!r}")
    if not isinstance(flip, bool):
        raise InputError(f"expected flip as True or False, got {flip!r}")
    if not flip and not eigen_smooth:
        raise InputError("flip=False sets the sign of eigen_smooth's projection: pass "
                         "eigen_smooth=True with it")


def _combine(weighted: jax.Array, eigen_smooth: bool, flip: bool) -> jax.Array:
    """Weighted channels (N, h, w, K) to maps (N, h, w): their sum, or with
    ``eigen_smooth`` their projection on the first principal component."""
    return _projection(weighted, flip) if eigen_smooth else weighted.sum(-1)


def _finish(maps: jax.Array, x: jax.Array, relu: bool, normalize: str | None,
            resize_mode: str | None, return_raw: bool):
    """The module docstring's steps 1-3 on maps (N, h, w) or (N, h, w, K), as one compiled
    program per shape and options (run op by op, the steps compiled about six small
    programs on a first call)."""
    return _finish_jit(maps, relu, normalize, resize_mode, return_raw, tuple(x.shape[1:3]),
                       jnp.dtype(x.dtype))


def _finish_core(maps, relu, normalize, resize_mode, return_raw, size, dtype):
    if relu:
        maps = jax.nn.relu(maps)
    if normalize == "minmax":
        maps = _minmax(maps)
    raw = maps.astype(dtype)
    if resize_mode is None:
        return (raw, raw) if return_raw else raw
    heat = resize(raw, size, resize_mode)
    if normalize == "minmax":
        heat = _minmax(heat)
    heat = heat.astype(dtype)
    return (heat, raw) if return_raw else heat


_FINISH_OPTIONS = ("relu", "normalize", "resize_mode", "return_raw", "size", "dtype")
_finish_jit = jax.jit(_finish_core, static_argnames=_FINISH_OPTIONS)


def _minmax(maps: jax.Array) -> jax.Array:
    """Per image ``(M - min M) / (max(M - min M) + 1e-7)`` over the spatial axes 1, 2."""
    maps = maps - maps.min(axis=(1, 2), keepdims=True)
    return maps / (maps.max(axis=(1, 2), keepdims=True) + 1e-7)


def _spatial(model, variables, x, layer, at, index, method):
    """The checked ``where`` of a spatial layer and its (N, h, w, K) shape."""
    where = _where(model, x, layer, at, index)
    struct = _layer_struct(model, variables, x, *where)
    if len(struct.shape) != 4:
        side = "" if at == "output" else " (its input)"
        raise InputError(f"{_NAMES[method]} needs a spatial layer with output (N, h, w, K); "
                         f"{layer!r}{side} has shape {tuple(struct.shape)}")
    return where, tuple(struct.shape)


def _layer_value_core(model, where, variables, x):
    """The array ``where`` chooses, on the forward pass of ``x``."""
    path, side, index = where
    hits = []

    def keep(a):
        hits.append(a)
        return a

    with nn.intercept_methods(_at_layer(path, side, index, keep)):
        model.apply(variables, x)
    return hits[-1]


_layer_value_jit = _compiled(_layer_value_core, 2)


# --- gradient-weighted maps ------------------------------------------------------------------------


def _sum_space(a: jax.Array) -> jax.Array:
    return a.sum(axis=(1, 2), keepdims=True)


def _grad_cam_weights(act, grad):
    return grad.mean(axis=(1, 2), keepdims=True) * act


def _grad_cam_plus_plus_weights(act, grad):
    g2 = grad * grad
    a = g2 / (2 * g2 + _sum_space(act) * g2 * grad + 1e-6)
    a = jnp.where(grad != 0, a, 0)
    return _sum_space(jax.nn.relu(grad) * a) * act


def _xgrad_cam_weights(act, grad):
    return _sum_space(grad * act / (_sum_space(act) + 1e-7)) * act


def _hires_cam_weights(act, grad):
    return grad * act


def _layer_cam_weights(act, grad):
    return jax.nn.relu(grad) * act


_WEIGHTED = {"grad_cam": _grad_cam_weights, "grad_cam_plus_plus": _grad_cam_plus_plus_weights,
             "xgrad_cam": _xgrad_cam_weights, "hires_cam": _hires_cam_weights,
             "layer_cam": _layer_cam_weights}


def _gradient_cams(kind, model, variables, x, target, layers, *, at="output", index=None,
                   relu=True, normalize=None, resize_mode="bilinear", return_raw=False,
                   eigen_smooth=False, flip=True, per_channel=False):
    """The gradient CAM ``kind``'s map at each layer of ``layers``, every layer's gradient
    from one backward pass."""
    _check_options(relu, normalize, resize_mode)
    _check_smoothing(eigen_smooth, flip)
    if per_channel and eigen_smooth:
        raise InputError("per_channel keeps every channel's map; eigen_smooth projects them "
                         "into one: pass one of them")
    x = _check_x(model, x, images=True)
    wheres = tuple(_spatial(model, variables, x, layer, at, index, kind)[0] for layer in layers)
    obj = _objective(model, x, target)
    return tuple(_weighted_jit(act, grad, kind=kind, per_channel=per_channel,
                               eigen_smooth=eigen_smooth, flip=flip, relu=relu,
                               normalize=normalize, resize_mode=resize_mode,
                               return_raw=return_raw, size=tuple(x.shape[1:3]),
                               dtype=jnp.dtype(x.dtype))
                 for act, grad in _layer_gradients(model, wheres, variables, x, obj))


def _gradient_cam(kind, model, variables, x, target, layer, **options):
    """:func:`_gradient_cams` at one layer."""
    return _gradient_cams(kind, model, variables, x, target, (layer,), **options)[0]


@functools.partial(jax.jit, static_argnames=("kind", "per_channel", "eigen_smooth", "flip",
                                             *_FINISH_OPTIONS))
def _weighted_jit(act, grad, *, kind, per_channel, eigen_smooth, flip, relu, normalize,
                  resize_mode, return_raw, size, dtype):
    """A method's weighting of ``act`` by ``grad`` and the finishing steps: one program."""
    weighted = _WEIGHTED[kind](act, grad)
    maps = weighted if per_channel else _combine(weighted, eigen_smooth, flip)
    return _finish_core(maps, relu, normalize, resize_mode, return_raw, size, dtype)


_OPTIONS_DOC = """
    Options (the module docstring gives their order and the peers' settings):
      relu: end with ``max(M, 0)`` (default True).
      normalize: None (default) or ``"minmax"`` per image.
      resize: ``"bilinear"`` (default), ``"nearest"`` or None (layer resolution).
      at: ``"output"`` (default) or ``"input"`` of the layer's module.
      index: which array of a module with several outputs (or inputs).
      return_raw: also return the map at the layer's resolution (after relu and
        normalize): ``(map, raw)``.
      eigen_smooth: instead of summing the weighted channels ``w_k A_k``, project them
        on their first principal component, per image (as :func:`eigen_cam` does with
        ``A``; pytorch-grad-cam's ``eigen_smooth=True``): less noise, and the map no
        longer sums the channels' contributions.
      flip: with ``eigen_smooth``, the projection's sign, as :func:`eigen_cam`'s ``flip``
        (True, default: largest magnitude positive; False: the SVD's own sign, which is
        pytorch-grad-cam's on the CPU).
"""


def _cam_doc(fn):
    fn.__doc__ = fn.__doc__.replace("    {options}\n", _OPTIONS_DOC)
    return fn


@_cam_doc
@checks.boundary
def grad_cam(model: nn.Module, variables: Any, x: jax.Array, target: Target, *, layer: str,
             relu: bool = True, normalize: str | None = None, resize: str | None = "bilinear",
             at: str = "output", index: int | None = None, per_channel: bool = False,
             return_raw: bool = False, eigen_smooth: bool = False,
             flip: bool = True) -> jax.Array | tuple[jax.Array, jax.Array]:
    """Grad-CAM (Selvaraju et al. 2017) at any spatial layer.

    ``alpha[n, k] = mean_{i, j} G[n, i, j, k]`` and
    ``M[n] = sum_k alpha[n, k] A[n, :, :, k]``; then ReLU and a bilinear upsampling to the
    input's (H, W) (the defaults; see the module docstring).

    Args:
      model, variables, x, target: as :func:`jaxviz.attribution.gradient`.
      layer: a layer whose output is (N, h, w, K): module path or alias (e.g. AlexNet
        ``"features.11"``/``"relu5"``, GoogLeNet ``"inception4e"``, a user model's
        ``"Conv_1"``).
      per_channel: return the weighted maps ``alpha[n, k] A[n, :, :, k]`` of every
        channel, (N, H, W, K), instead of their sum (Captum's ``attr_dim_summation=
        False``); ``relu`` then applies to each.
    {options}
    Returns:
      (N, H, W) map in ``x``'s dtype ((N, h, w) with ``resize=None``).

    Raises:
      KeyError: unknown layer.
      ValueError: the layer's output is not (N, h, w, K); an unknown option;
        ``per_channel`` with ``normalize``; as :func:`jaxviz.attribution.layer_gradient`.
    """
    if per_channel and normalize is not None:
        raise InputError("per_channel maps are not normalized: pass normalize=None")
    return _gradient_cam("grad_cam", model, variables, x, target, layer, at=at, index=index,
                         relu=relu, normalize=normalize, resize_mode=resize,
                         return_raw=return_raw, eigen_smooth=eigen_smooth, flip=flip,
                         per_channel=bool(per_channel))


@_cam_doc
@checks.boundary
def grad_cam_plus_plus(model: nn.Module, variables: Any, x: jax.Array, target: Target, *,
                       layer: str, relu: bool = True, normalize: str | None = None,
                       resize: str | None = "bilinear", at: str = "output",
                       index: int | None = None, return_raw: bool = False,
                       eigen_smooth: bool = False,
                       flip: bool = True) -> jax.Array | tuple[jax.Array, jax.Array]:
    """Grad-CAM++ (Chattopadhay et al. 2018), in its closed form for an exponential output.

    ``a = G^2 / (2 G^2 + (sum_{i,j} A) G^3 + 1e-6)`` (0 where ``G = 0``),
    ``w_k = sum_{i,j} relu(G) a`` and ``M = sum_k w_k A_k`` (the paper's equation 19 with
    pytorch-grad-cam's stabilizer 1e-6).

    Args: as :func:`grad_cam`.
    {options}
    Returns and Raises: as :func:`grad_cam`.
    """
    return _gradient_cam("grad_cam_plus_plus", model, variables, x, target, layer, at=at,
                         index=index, relu=relu, normalize=normalize, resize_mode=resize,
                         return_raw=return_raw, eigen_smooth=eigen_smooth, flip=flip)


@_cam_doc
@checks.boundary
def xgrad_cam(model: nn.Module, variables: Any, x: jax.Array, target: Target, *, layer: str,
              relu: bool = True, normalize: str | None = None, resize: str | None = "bilinear",
              at: str = "output", index: int | None = None, return_raw: bool = False,
              eigen_smooth: bool = False,
              flip: bool = True) -> jax.Array | tuple[jax.Array, jax.Array]:
    """XGrad-CAM (Fu et al. 2020).

    ``w_k = sum_{i,j} G_k A_k / (sum_{i,j} A_k + 1e-7)`` and ``M = sum_k w_k A_k``
    (pytorch-grad-cam's stabilizer 1e-7).

    Args: as :func:`grad_cam`.
    {options}
    Returns and Raises: as :func:`grad_cam`.
    """
    return _gradient_cam("xgrad_cam", model, variables, x, target, layer, at=at, index=index,
                         relu=relu, normalize=normalize, resize_mode=resize,
                         return_raw=return_raw, eigen_smooth=eigen_smooth, flip=flip)


@_cam_doc
@checks.boundary
def hires_cam(model: nn.Module, variables: Any, x: jax.Array, target: Target, *, layer: str,
              relu: bool = True, normalize: str | None = None, resize: str | None = "bilinear",
              at: str = "output", index: int | None = None, return_raw: bool = False,
              eigen_smooth: bool = False,
              flip: bool = True) -> jax.Array | tuple[jax.Array, jax.Array]:
    """HiResCAM (Draelos & Carin 2020): ``M = sum_k G_k * A_k``, element by element.

    With ``eigen_smooth=True`` this is pytorch-grad-cam's EigenGradCAM (the first
    principal component of ``G * A``); HiResCAM's faithfulness no longer holds then.

    Args: as :func:`grad_cam`.
    {options}
    Returns and Raises: as :func:`grad_cam`.
    """
    return _gradient_cam("hires_cam", model, variables, x, target, layer, at=at, index=index,
                         relu=relu, normalize=normalize, resize_mode=resize,
                         return_raw=return_raw, eigen_smooth=eigen_smooth, flip=flip)


@_cam_doc
@checks.boundary
def layer_cam(model: nn.Module, variables: Any, x: jax.Array, target: Target, *, layer: str,
              relu: bool = True, normalize: str | None = None, resize: str | None = "bilinear",
              at: str = "output", index: int | None = None, return_raw: bool = False,
              eigen_smooth: bool = False,
              flip: bool = True) -> jax.Array | tuple[jax.Array, jax.Array]:
    """LayerCAM (Jiang et al. 2021): ``M = sum_k relu(G_k) * A_k``, element by element.

    Args: as :func:`grad_cam`.
    {options}
    Returns and Raises: as :func:`grad_cam`.
    """
    return _gradient_cam("layer_cam", model, variables, x, target, layer, at=at, index=index,
                         relu=relu, normalize=normalize, resize_mode=resize,
                         return_raw=return_raw, eigen_smooth=eigen_smooth, flip=flip)


# --- gradient-free maps ------------------------------------------------------------------------


def _score_chunk(model, chunk, variables, x, act, start, objective):
    """Target values (chunk, N) of x masked by channels ``start .. start + chunk`` of
    ``act``, each upsampled (align_corners) and min-max scaled to [0, 1]."""
    maps = jax.lax.dynamic_slice_in_dim(act, start, chunk, axis=3)       # (N, h, w, S)
    up = resize(maps, x.shape[1:3], "corners")                           # (N, H, W, S)
    low = up.min(axis=(1, 2), keepdims=True)
    high = up.max(axis=(1, 2), keepdims=True)
    up = (up - low) / (high - low + 1e-8)
    masked = x[None] * jnp.moveaxis(up, 3, 0)[..., None]                  # (S, N, H, W, C)
    return _copies_values(model, variables, masked, objective)


_score_jit = _compiled(_score_chunk, 2)


def _ablation_chunk(model, where, variables, x, act, channels, value, objective):
    """Target values (S, N) with channel ``channels[s]`` of the layer set to ``value``."""
    path, side, index = where
    k = act.shape[-1]

    def one(channel):
        ablated = jnp.where(jnp.arange(k) == channel, value.astype(act.dtype), act)
        with nn.intercept_methods(_at_layer(path, side, index, lambda a: ablated.astype(a.dtype))):
            return _values(model, variables, x, objective)

    return jax.vmap(one)(channels)


_ablation_jit = _compiled(_ablation_chunk, 2)
_reference_jit = _compiled(_values, 1)


def _chunks(total: int, chunk: int):
    for start in range(0, total, chunk):
        yield start, min(chunk, total - start)


@_cam_doc
@checks.boundary
def score_cam(model: nn.Module, variables: Any, x: jax.Array, target: Target, *, layer: str,
              batch_size: int = 16, relu: bool = True, normalize: str | None = None,
              resize: str | None = "bilinear", at: str = "output", index: int | None = None,
              return_raw: bool = False, eigen_smooth: bool = False,
              flip: bool = True) -> jax.Array | tuple[jax.Array, jax.Array]:
    """Score-CAM (Wang et al. 2020): channels weighted by the score of the input they mask.

    Each channel ``A_k`` is upsampled to the input (bilinear with ``align_corners=True``,
    as pytorch-grad-cam's ``UpsamplingBilinear2d``), scaled to [0, 1] by
    ``(U - min U) / (max U - min U + 1e-8)``, and multiplied into ``x``; ``s_k`` is the
    target's value on that masked input, ``w = softmax_k(s)`` and
    ``M = sum_k w_k A_k``. Needs ``K`` forward passes per image; no gradient.

    Args: as :func:`grad_cam`, and
      batch_size: channels per compiled chunk (each chunk runs ``batch_size * N``
        masked images; pytorch-grad-cam runs 16).
    {options}
    Returns and Raises: as :func:`grad_cam`; ValueError for a bad ``batch_size``.
    """
    _check_options(relu, normalize, resize)
    _check_smoothing(eigen_smooth, flip)
    x = _check_x(model, x, images=True)
    where, shape = _spatial(model, variables, x, layer, at, index, "score_cam")
    obj = _objective(model, x, target)
    k = shape[-1]
    chunk = _check_batch_size(batch_size, k)
    act = _layer_value_jit(model, where, variables, x)
    padded = jnp.pad(act, ((0, 0), (0, 0), (0, 0), (0, -k % chunk)))
    scores = jnp.concatenate([
        _score_jit(model, chunk, variables, x, padded, jnp.int32(start), obj)[:size]
        for start, size in _chunks(k, chunk)])                            # (K, N)
    weights = jax.nn.softmax(scores.T, axis=-1)                           # (N, K)
    maps = _channels_weighted_jit(act, weights, eigen_smooth, flip)
    return _finish(maps, x, relu, normalize, resize, return_raw)


@_cam_doc
@checks.boundary
def ablation_cam(model: nn.Module, variables: Any, x: jax.Array, target: Target, *,
                 layer: str, batch_size: int = 32, ablation_value: float = 0.0,
                 relu: bool = True, normalize: str | None = None,
                 resize: str | None = "bilinear", at: str = "output",
                 index: int | None = None, return_raw: bool = False,
                 eigen_smooth: bool = False,
                 flip: bool = True) -> jax.Array | tuple[jax.Array, jax.Array]:
    """Ablation-CAM (Desai & Ramaswamy 2020): channels weighted by the drop their removal causes.

    ``y`` is the target's value and ``y_k`` its value with channel ``k`` of the layer set
    to ``ablation_value``; ``w_k = (y - y_k) / y`` and ``M = sum_k w_k A_k``. The layers
    before the chosen one run once; only the rest runs per channel.

    Args: as :func:`grad_cam`, and
      batch_size: channels per compiled chunk (pytorch-grad-cam runs 32).
      ablation_value: what an ablated channel is set to (0, as in the paper;
        pytorch-grad-cam does the same for a layer whose smallest value is 0, and uses
        that smallest value - 1e7 otherwise).
    {options}
    Returns and Raises: as :func:`grad_cam`; ValueError for a bad ``batch_size``.
    """
    _check_options(relu, normalize, resize)
    _check_smoothing(eigen_smooth, flip)
    if isinstance(ablation_value, bool) or not isinstance(ablation_value, numbers.Real):
        raise InputError(f"expected ablation_value as a number, got {ablation_value!r}")
    x = _check_x(model, x, images=True)
    where, shape = _spatial(model, variables, x, layer, at, index, "ablation_cam")
    obj = _objective(model, x, target)
    k = shape[-1]
    chunk = _check_batch_size(batch_size, k)
    act = _layer_value_jit(model, where, variables, x)
    reference = _reference_jit(model, variables, x, obj)                 # (N,)
    value = jnp.asarray(ablation_value, act.dtype)
    drops = []
    for start, size in _chunks(k, chunk):
        channels = np.minimum(np.arange(start, start + chunk), k - 1).astype(np.int32)
        drops.append(_ablation_jit(model, where, variables, x, act, to_device(channels, copy=False),
                                   value, obj)[:size])
    ablated = jnp.concatenate(drops)                                      # (K, N)
    weights = (reference[None] - ablated) / reference[None]               # (K, N)
    maps = _channels_weighted_jit(act, weights.T, eigen_smooth, flip)
    return _finish(maps, x, relu, normalize, resize, return_raw)


@_cam_doc
@checks.boundary
def eigen_cam(model: nn.Module, variables: Any, x: jax.Array, target: Target = None, *,
              layer: str, flip: bool = True, relu: bool = True, normalize: str | None = None,
              resize: str | None = "bilinear", at: str = "output", index: int | None = None,
              return_raw: bool = False) -> jax.Array | tuple[jax.Array, jax.Array]:
    """Eigen-CAM (Muhammad & Yeasin 2020): the layer's first principal component.

    Per image, the activation as ``h*w`` rows of ``K`` values is centred (each channel's
    spatial mean removed) and projected on its first right singular vector: a map that
    does not depend on the target (``target`` is accepted and ignored, so the method
    fits the family's calls).

    Args: as :func:`grad_cam`, and
      flip: a singular vector's sign is arbitrary. True (default) chooses it so that the
        projection's largest magnitude is positive (the sign correction of Seg-Eigen-CAM,
        Chung & Ying 2025); False keeps the sign the device's SVD returns: LAPACK's on the
        CPU, as pytorch-grad-cam's NumPy call does, while a GPU's solver may return the
        other sign (on an H200, 57 of 64 AlexNet maps), so only True is device-independent.
    {options}
    Returns and Raises: as :func:`grad_cam`.
    """
    _check_options(relu, normalize, resize)
    if not isinstance(flip, bool):
        raise InputError(f"expected flip as True or False, got {flip!r}")
    x = _check_x(model, x, images=True)
    where, shape = _spatial(model, variables, x, layer, at, index, "eigen_cam")
    act = _layer_value_jit(model, where, variables, x)
    maps = _projection_jit(act, flip)
    return _finish(maps, x, relu, normalize, resize, return_raw)


def _projection(act: jax.Array, flip: bool) -> jax.Array:
    """Per image, ``act`` (N, h, w, K) as ``h*w`` rows of ``K`` values, centred, projected
    on its first right singular vector: (N, h, w). ``flip``: :func:`eigen_cam`'s."""
    n, h, w, k = act.shape
    rows = act.reshape(n, h * w, k)
    rows = rows - rows.mean(axis=1, keepdims=True)
    _, _, vt = jnp.linalg.svd(rows, full_matrices=False)
    proj = jnp.einsum("nrk,nk->nr", rows, vt[:, 0], precision=jax.lax.Precision.HIGHEST)
    if flip:
        sign = jnp.where(jnp.abs(proj.min(axis=1)) > jnp.abs(proj.max(axis=1)), -1, 1)
        proj = proj * sign[:, None].astype(proj.dtype)
    return proj.reshape(n, h, w)


_projection_jit = jax.jit(_projection, static_argnums=1)


@functools.partial(jax.jit, static_argnums=(2, 3))
def _channels_weighted_jit(act: jax.Array, weights: jax.Array, eigen_smooth: bool,
                           flip: bool) -> jax.Array:
    """The gradient-free CAMs' map: ``sum_k weights[n, k] A[n, :, :, k]``, or with
    ``eigen_smooth`` the weighted channels' projection (:func:`_projection`)."""
    weights = weights.astype(act.dtype)
    if eigen_smooth:
        return _projection(act * weights[:, None, None, :], flip)
    return jnp.einsum("nhwk,nk->nhw", act, weights)


# --- several layers -------------------------------------------------------------------------------

_SET_BY_MULTI_LAYER = ("layer", "relu", "normalize", "resize", "return_raw", "per_channel")


@functools.partial(jax.jit, static_argnames=("size", "resize_mode"))
def _layers_mean(maps: tuple[jax.Array, ...], *, size: tuple[int, int],
                 resize_mode: str) -> jax.Array:
    """Each layer's (min-max scaled) map resized to ``size``; their mean, min-max scaled."""
    up = jnp.stack([resize(m, size, resize_mode) for m in maps])
    return _minmax(jax.nn.relu(up).mean(axis=0)).astype(maps[0].dtype)


@checks.boundary
def multi_layer_cam(method: Callable, /, model: nn.Module, variables: Any, x: jax.Array,
                    target: Target = None, *, layers: Sequence[str],
                    resize: str = "bilinear", **kwargs: Any) -> jax.Array:
    """A CAM over several layers, as pytorch-grad-cam combines its ``target_layers``.

    Per layer ``l``: ``M_l = method(..., layer=l, relu=True, normalize="minmax")`` at
    the layer's resolution, resized to the input's (H, W) (no second scaling, unlike
    one layer's ``normalize="minmax"``); the result is ``minmax(mean_l M_l)``. So
    ``multi_layer_cam(grad_cam, ..., layers=[a, b])`` is pytorch-grad-cam's
    ``GradCAM(model, target_layers=[A, B])(x, targets)``. Layers of different
    resolutions mix coarse and fine evidence (LayerCAM's use of early layers). For the
    gradient CAMs (Grad-CAM, Grad-CAM++, XGrad-CAM, HiResCAM, LayerCAM) every layer's
    gradient comes from one backward pass.

    Args:
      method: one of the CAMs (:data:`CAM_METHODS`) or a function with their signature.
        Positional only.
      model, variables, x, target: as :func:`grad_cam` (``target`` None for
        :func:`eigen_cam`).
      layers: the layers, each as ``grad_cam``'s ``layer``; at least one.
      resize: ``"bilinear"`` (default) or ``"nearest"``: how each layer's map reaches
        the input's size.
      **kwargs: passed to ``method`` (``eigen_smooth=``, ``batch_size=``, ``at=``, ...);
        not the options this function sets (layer, relu, normalize, resize, return_raw,
        per_channel).

    Returns:
      (N, H, W) maps in [0, 1], in ``x``'s dtype.

    Raises:
      TypeError: ``method`` is not callable.
      ValueError: no layers, a layer given as something other than a name, an option
        this function sets, an unknown ``resize``; as ``method``.
    """
    if not callable(method):
        raise InputTypeError(f"expected method as a CAM such as jaxviz.attribution.grad_cam, "
                             f"got {method!r}")
    if isinstance(layers, str) or not isinstance(layers, Sequence) or not layers:
        raise InputError(f"expected layers as a non-empty list of layer names, got {layers!r}")
    if not all(isinstance(layer, str) for layer in layers):
        raise InputError(f"expected layers as layer names (str), got {list(layers)!r}")
    if resize not in ("bilinear", "nearest"):
        raise InputError(f"unknown resize {resize!r}; expected 'bilinear' or 'nearest'")
    fixed = sorted(set(kwargs) & set(_SET_BY_MULTI_LAYER))
    if fixed:
        raise InputError(f"multi_layer_cam sets {', '.join(fixed)} itself (each layer's map "
                         f"with relu and min-max scaling at the layer's size); drop them")
    x = _check_x(model, x, images=True)
    kind = _GRADIENT_CAM_KINDS.get(method)
    if kind is not None and set(kwargs) <= {"at", "index", "eigen_smooth", "flip"}:
        maps = _gradient_cams(kind, model, variables, x, target, tuple(layers), relu=True,
                              normalize="minmax", resize_mode=None, **kwargs)
    else:
        maps = tuple(method(model, variables, x, target, layer=layer, relu=True,
                            normalize="minmax", resize=None, **kwargs) for layer in layers)
    return _layers_mean(maps, size=tuple(x.shape[1:3]), resize_mode=resize)


# multi_layer_cam takes these CAMs' layer gradients in one backward pass
_GRADIENT_CAM_KINDS = {grad_cam: "grad_cam", grad_cam_plus_plus: "grad_cam_plus_plus",
                       xgrad_cam: "xgrad_cam", hires_cam: "hires_cam", layer_cam: "layer_cam"}


# --- guided Grad-CAM -----------------------------------------------------------------------------


@checks.boundary
def guided_grad_cam(model: nn.Module, variables: Any, x: jax.Array, target: Target, *,
                    layer: str, interpolation: str = "bilinear", at: str = "output",
                    index: int | None = None) -> jax.Array:
    """Guided Grad-CAM (Selvaraju et al. 2017): guided backpropagation times Grad-CAM.

    ``GB[n] * L_up[n][..., None]``, with ``GB`` from
    :func:`jaxviz.attribution.guided_backprop` and ``L_up`` the rectified Grad-CAM map
    resized to the input by ``interpolation``: ``"bilinear"`` (default, the paper's) or
    ``"nearest"`` (Captum's ``GuidedGradCam`` default).

    Args: as :func:`grad_cam`; ``model`` needs a ``rules`` field.

    Returns:
      (N, H, W, C), in ``x``'s dtype.

    Raises:
      As :func:`jaxviz.attribution.guided_backprop` and :func:`grad_cam`.
    """
    if interpolation not in ("bilinear", "nearest"):
        raise InputError(f"unknown interpolation {interpolation!r}; expected 'bilinear' or "
                         f"'nearest'")
    guided = guided_backprop(model, variables, x, target)
    cam = grad_cam(model, variables, x, target, layer=layer, resize=interpolation, at=at,
                   index=index)
    return (guided * cam[..., None]).astype(guided.dtype)


__all__ = ["CAM_METHODS", "NORMALIZATIONS", "RESIZE_MODES", "ablation_cam", "eigen_cam",
           "grad_cam", "grad_cam_plus_plus", "guided_grad_cam", "hires_cam", "layer_cam",
           "resize", "score_cam", "xgrad_cam"]

"""Feature synthesis: optimize a batch of parameterized images for an objective.

One jitted step does everything for a whole batch: the images from their parameters,
a random transform per image (its own key per step), the model's forward pass (which
stops at the deepest layer the objective reads), the objective and the regularizers,
their gradient, and the optax update. The step runs in a Python loop of compiled calls
on CPU (measured faster there than ``lax.scan``, see ``benchmarks/RESULTS.md``) and as
one ``lax.scan`` elsewhere; ``loop=`` overrides.

Every image's randomness (initial parameters, transforms) comes from its own key, and
nothing couples the images of a batch unless the objective does (``diversity``), so
:func:`sweep` gives the same images whatever its chunk size and device count. With more
than one device the batch axis is sharded over a 1-D mesh of all of them.

References:
  Erhan et al., "Visualizing Higher-Layer Features of a Deep Network", 2009.
  Simonyan, Vedaldi & Zisserman, arXiv:1312.6034, 2013 (class model visualization).
  Olah, Mordvintsev & Schubert, "Feature Visualization", Distill 2017 (parameterizations,
  transformation robustness, diversity; lucid's defaults).
  Mordvintsev, Olah & Tyka, "Inceptionism", 2015 (octaves).
"""

from __future__ import annotations

import functools
import hashlib
import math
import numbers
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from jaxviz import capture, checks, data, parallel
from jaxviz import objectives as objectives_lib
from jaxviz import static as static_lib
from jaxviz._host import to_device
from jaxviz.errors import InputError, InputTypeError, ModelError
from jaxviz.models.modules import input_spec
from jaxviz.synthesis import param as param_lib
from jaxviz.synthesis import regularizers as reg_lib
from jaxviz.synthesis import transforms as tf_lib

LOOPS = ("auto", "python", "scan")

# lucid's default; one instance, so that calls with the default share a compiled program
_DEFAULT_OPTIMIZER = optax.adam(0.05)


# --- the normalized-gradient step ------------------------------------------------------------


def normalize_by_max_abs(eps: float = 1e-8) -> optax.GradientTransformation:
    """Divides each image's gradient by its largest absolute value (plus ``eps``).

    Every leaf of the updates has the batch on its leading axis; image ``n``'s gradient
    (over all leaves) is scaled by ``1 / (max |g_n| + eps)``, so each step moves every
    image by the same amount whatever the scale of its objective. Chain it with
    ``optax.sgd(lr)`` for a plain normalized gradient step.
    """

    def init(params):
        del params
        return optax.EmptyState()

    def update(updates, state, params=None):
        del params
        leaves = jax.tree.leaves(updates)
        peak = functools.reduce(jnp.maximum, [jnp.abs(g).reshape(g.shape[0], -1).max(1)
                                              for g in leaves])

        def scale(g):
            return g / (peak + eps).astype(g.dtype).reshape(-1, *([1] * (g.ndim - 1)))

        return jax.tree.map(scale, updates), state

    return optax.GradientTransformation(init, update)


# --- checks ------------------------------------------------------------------------------


def _positive_float(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not value > 0:
        raise InputError(f"expected {what} as a positive number, got {value!r}")
    return float(value)


def grey(images: jax.Array) -> jax.Array:
    """(..., H, W, 3) -> (..., H, W, 1): the mean of the three channels (``preprocess="grey"``)."""
    return images.mean(axis=-1, keepdims=True)


def _identity(images: jax.Array) -> jax.Array:
    return images


def _preprocess(spec: Any, model: nn.Module) -> Callable[[jax.Array], jax.Array]:
    """The function from [0, 1] RGB images to model input that ``spec`` names."""
    if isinstance(spec, str) and spec == "auto":
        taken = input_spec(model)
        if taken is None or taken.scale == "imagenet":
            spec = "imagenet"
        else:  # [0, 1] input: grey for a one-channel model, as is otherwise
            spec = "grey" if taken.channels == 1 else None
    if spec is None:
        return _identity
    if isinstance(spec, str):
        if spec == "imagenet":
            return data.normalize
        if spec in ("grey", "gray"):
            return grey
        raise InputError(f"unknown preprocess {spec!r}; expected 'auto', 'imagenet', 'grey', "
                         f"None or a callable")
    if callable(spec):
        return spec
    raise InputTypeError(f"expected preprocess as 'auto', 'imagenet', 'grey', None or a "
                         f"callable, got {type(spec).__name__}")


def _loop(loop: str) -> str:
    if loop not in LOOPS:
        raise InputError(f"unknown loop {loop!r}; expected one of {', '.join(LOOPS)}")
    if loop == "auto":
        return "python" if jax.default_backend() == "cpu" else "scan"
    return loop


def _key(key: Any) -> jax.Array:
    if key is None:
        raise InputTypeError("synthesis starts from random images: pass key=jax.random.key(seed)")
    if not (isinstance(key, jax.Array) and (jnp.issubdtype(key.dtype, jax.dtypes.prng_key)
                                            or (key.dtype == jnp.uint32 and key.shape == (2,)))):
        raise InputTypeError(f"expected key as a PRNG key (jax.random.key(seed)), got {key!r}")
    return key


# --- the engine ----------------------------------------------------------------------------


class Config(NamedTuple):
    """Everything that fixes the compiled step (hashable)."""

    model: nn.Module
    param: Any
    transform: Any
    regularizers: tuple
    optimizer: Any
    preprocess: Any


def _images(param: Any, params: Any, hw: tuple[int, int]) -> jax.Array:
    """The batch's images at ``hw`` (a Fourier image of odd width is made wider and cut)."""
    return param_lib.crop(jax.vmap(param.image)(params), hw)


def _loss(config: Config, hw, variables, objective, params, step_keys):
    images = _images(config.param, params, hw)
    seen = jax.vmap(config.transform)(step_keys, images)
    values = objective(config.model, variables, config.preprocess(seen))
    penalty = reg_lib.total(images, config.regularizers)
    return (penalty - values).sum(), values


def _step(config: Config, hw, variables, objective, params, opt_state, keys, t):
    step_keys = jax.vmap(lambda k: jax.random.fold_in(k, t))(keys)
    grads, values = jax.grad(functools.partial(_loss, config, hw, variables, objective),
                             has_aux=True)(params, step_keys)
    updates, opt_state = config.optimizer.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, values


class _Compiled:
    """The jitted step and scan loop of one configuration (built once per call)."""

    def __init__(self, config: Config):
        self.config = config
        self.step = jax.jit(functools.partial(_step, config), static_argnums=(0,),
                            donate_argnums=(3, 4))
        self.scan = jax.jit(self._scan, static_argnums=(0, 6), donate_argnums=(3, 4))

    def _scan(self, hw, variables, objective, params, opt_state, keys, steps, start):
        def body(carry, t):
            p, s = carry
            p, s, v = _step(self.config, hw, variables, objective, p, s, keys, t)
            return (p, s), v

        (params, opt_state), values = jax.lax.scan(body, (params, opt_state),
                                                   start + jnp.arange(steps))
        return params, opt_state, values

    def run(self, hw, variables, objective, params, keys, steps: int, start: int, loop: str):
        opt_state = self.config.optimizer.init(params)
        if loop == "scan":
            params, _, values = self.scan(hw, variables, objective, params, opt_state, keys, steps,
                                          np.int32(start))
            return params, values
        history = []
        for t in range(start, start + steps):
            params, opt_state, v = self.step(hw, variables, objective, params, opt_state, keys,
                                             np.int32(t))
            history.append(v)
        return params, jnp.stack(history)


_COMPILED: dict[Config, _Compiled] = {}
_COMPILED_MAX = 16


def _compiled(config: Config) -> _Compiled:
    """The compiled program of ``config``, reused across calls with equal settings (a
    configuration with an unhashable part, e.g. a user's model with list fields, is keyed
    by its structure: :mod:`jaxviz.static`)."""
    key = static_lib.static(config)
    hit = _COMPILED.get(key)
    if hit is None:
        if len(_COMPILED) >= _COMPILED_MAX:
            _COMPILED.pop(next(iter(_COMPILED)))
        hit = _COMPILED[key] = _Compiled(config)
    return hit


def _octave_sizes(size: tuple[int, int], octaves: int, scale: float) -> list[tuple[int, int]]:
    """Octave k's (H, W): ``round(size * scale ** k)``; octave 0 is ``size`` itself."""
    out = []
    for k in range(octaves):
        hw = [max(1, int(round(s * scale ** k))) for s in size]
        out.append((hw[0], hw[1]))
    return out


def _resize(images: jax.Array, hw: tuple[int, int]) -> jax.Array:
    if tuple(images.shape[1:3]) == tuple(hw):
        return images
    return jax.image.resize(images, (images.shape[0], *hw, images.shape[-1]), "linear")


def _mesh_sharding(n: int) -> NamedSharding | None:
    devices = jax.devices()
    if len(devices) < 2 or n % len(devices):
        return None
    return NamedSharding(Mesh(np.asarray(devices), ("batch",)), PartitionSpec("batch"))


def _place_global(a: jax.Array, sharding: NamedSharding) -> jax.Array:
    """A process-local array placed on a sharding that spans other processes' devices
    (every process holds the same value; each places its own shards)."""
    if jnp.issubdtype(a.dtype, jax.dtypes.prng_key):
        data = np.asarray(jax.random.key_data(a))
        spec = PartitionSpec(*sharding.spec, *([None] * (data.ndim - len(sharding.spec))))
        placed = jax.device_put(data, NamedSharding(sharding.mesh, spec))
        return jax.random.wrap_key_data(placed, impl=jax.random.key_impl(a))
    return jax.device_put(np.asarray(a), sharding)


def _shard(tree: Any, sharding: NamedSharding | None) -> Any:
    if sharding is None:
        return tree
    if not sharding.is_fully_addressable:
        # several processes: each holds the whole (identical) value and places its shards
        return jax.tree.map(lambda a: _place_global(a, sharding), tree)
    return jax.tree.map(lambda a: jax.device_put(a, sharding), tree)


# The set-up around each octave's loop, compiled (per parameterization and size): run op
# by op, a Fourier start and the octaves' resizes compiled some 60 small programs on a
# first call (AlexNet, two octaves: 8.4 s).
def _start_keys(keys):
    fold = jax.vmap(jax.random.fold_in, in_axes=(0, None))
    return fold(keys, 0), fold(keys, 1)


def _initial_params(param, hw, keys):
    return jax.vmap(lambda k: param.init(k, hw))(keys)


def _params_from_images(param, hw, images):
    return jax.vmap(param.from_image)(_resize(images, hw))


_start_keys_jit = jax.jit(_start_keys)
# image n's key, fold_in(key, ids[n]): one program per batch size (run eagerly, the
# vmap of fold_in and the ids' conversion were three small programs per batch size)
_folded_keys_jit = jax.jit(jax.vmap(jax.random.fold_in, in_axes=(None, 0)))
_initial_params_jit = static_lib.jit(_initial_params, 2)
_params_from_images_jit = static_lib.jit(_params_from_images, 2)
_images_jit = static_lib.jit(lambda param, hw, params: _images(param, params, hw), 2)


def _optimize(compiled: _Compiled, variables, objective, keys: jax.Array, size, steps: int,
              init_images, octaves: int, octave_scale: float, loop: str):
    """Runs the octaves for a batch whose image n uses ``keys[n]``; (images, values)."""
    param = compiled.config.param
    sizes = _octave_sizes(size, octaves, octave_scale)
    init_keys, loop_keys = _start_keys_jit(keys)
    sharding = _mesh_sharding(keys.shape[0])
    history = []
    images = None
    for k, hw in enumerate(sizes):
        hw = tuple(hw)
        if k == 0 and init_images is None:
            params = _initial_params_jit(param, hw, init_keys)
        else:
            start = init_images if k == 0 else images
            params = _params_from_images_jit(param, hw, start)
        params = _shard(params, sharding)
        params, values = compiled.run(hw, variables, objective, params,
                                      _shard(loop_keys, sharding), steps, k * steps, loop)
        images = _images_jit(param, hw, params)
        history.append(values)
    return images, jnp.concatenate(history)


def _config(model, param, transforms, regularizers, optimizer, preprocess) -> Config:
    if param is None:
        param = param_lib.Fourier()
    if not all(hasattr(param, m) for m in ("init", "image", "from_image")):
        raise InputTypeError(f"expected a parameterization with init/image/from_image methods "
                        f"(jaxviz.synthesis.param.Pixels or Fourier); got {type(param).__name__}")
    if optimizer is None:
        optimizer = _DEFAULT_OPTIMIZER
    if not isinstance(optimizer, optax.GradientTransformation):
        raise InputTypeError(f"expected an optax GradientTransformation as optimizer, got "
                        f"{type(optimizer).__name__}")
    spec = input_spec(model)
    if spec is not None and spec.kind != "image":
        raise ModelError(f"synthesis makes images; {type(model).__name__} takes "
                         f"{spec.describe()}")
    return Config(model, param, tf_lib.as_transform(transforms),
                  reg_lib.as_regularizers(regularizers), optimizer,
                  _preprocess(preprocess, model))


def _init_images(init: Any, n: int) -> jax.Array | None:
    if init is None:
        return None
    images = checks.as_array(init, "init")
    if not jnp.issubdtype(images.dtype, jnp.floating):
        raise InputTypeError(f"expected a float init image in [0, 1] units, got dtype "
                             f"{images.dtype} (jaxviz.data.load_image(path) / 255 gives one)")
    images = to_device(images)
    if images.ndim == 3:
        images = jnp.broadcast_to(images[None], (n, *images.shape))
    if images.ndim != 4 or images.shape[-1] not in (1, 3) or images.shape[0] != n:
        raise InputError(f"expected init as an image (H, W, 3) or (H, W, 1), or a batch "
                         f"({n}, H, W, 3), in [0, 1] units; got shape {tuple(images.shape)}")
    checks.finite(images, "init")
    if images.shape[-1] == 1:  # grey: the parameterizations make RGB
        images = jnp.repeat(images, 3, axis=-1)
    return images


class Synthesis(NamedTuple):
    """What :func:`visualize` returns.

    Attributes:
      images: (N, H, W, 3), the parameterization's images (in [0, 1] for a sigmoid or
        clipped parameterization).
      objective: (steps * octaves, N), the objective of each image at each step (before
        that step's update; without the regularizers).
    """

    images: jax.Array
    objective: jax.Array


@checks.boundary
def visualize(model: nn.Module, variables: Any, objective: Any, *, key: jax.Array,
              batch: int = 1, size: int | Sequence[int] = 128, steps: int = 512,
              param: Any = None, transforms: Any = "standard", regularizers: Any = None,
              optimizer: optax.GradientTransformation | None = None,
              preprocess: Any = "auto", init: Any = None, octaves: int = 1,
              octave_scale: float = 1.4, output_scale: float = 1.0,
              loop: str = "auto") -> Synthesis:
    """Images that maximize ``objective``, optimized as one batch.

    Each step maximizes ``objective(model, variables, preprocess(t(image))) -
    sum_k w_k penalty_k(image)`` per image, ``t`` a random transform drawn per image and
    step. Defaults follow lucid's ``render_vis``: Fourier parameterization with
    decorrelated colour, the standard transforms, Adam 0.05, 512 steps, 128 px.

    Args:
      model, variables: a Linen model (ours, or any whose layers the objective names).
      objective: an :class:`jaxviz.objectives.Objective` over a batch of ``batch``
        images (an index array of shape (batch,) gives each image its own target), or
        an int (a class logit).
      key: PRNG key; image ``n`` draws from ``jax.random.fold_in(key, n)``.
      batch: number of images.
      size: side (or (H, W)) of the first octave's images.
      steps: optimization steps per octave.
      param: a parameterization (:class:`~jaxviz.synthesis.param.Fourier` by default,
        or :class:`~jaxviz.synthesis.param.Pixels`).
      transforms: "standard", "none"/None, a transform ``t(key, image)`` or a sequence.
      regularizers: sequence of ``(weight, penalty)`` pairs (see ``regularizers``).
      optimizer: any optax transform (default ``optax.adam(0.05)``);
        :func:`normalize_by_max_abs` chained with ``optax.sgd`` gives a normalized
        gradient step.
      preprocess: from the optimized [0, 1] RGB images to the model's input: "auto"
        (default: the model's own, from its ``input_spec()``: ImageNet normalization for
        the ported models, grey for the digits model; "imagenet" for a model that does
        not say), "imagenet", "grey" (the mean of the channels), None (the image is the
        model input) or a callable.
      init: start from this image (H, W, 3) or batch (N, H, W, 3) in [0, 1] units
        instead of noise; ``size`` is then the image's.
      octaves: number of scales; after each octave the images are resized by
        ``octave_scale`` and optimization continues from them.
      octave_scale: resize factor between octaves.
      output_scale: final bilinear resize of the returned images (display only).
      loop: "auto" (Python loop on CPU, ``lax.scan`` elsewhere), "python" or "scan".

    Returns:
      A :class:`Synthesis` ``(images, objective)``.

    Raises:
      InputError: a non-positive ``batch``, ``steps``, ``size`` or scale; an objective
        index out of range for its layer, or a layer the input size never reaches; an
        ``init`` of the wrong shape or with NaN/inf.
      InputTypeError: a missing ``key``, an unknown kind of parameterization, optimizer
        or preprocess.
      ModelError: the model takes vectors, not images.
      LayerError: the objective names a layer the model does not have.
    """
    key = _key(key)
    batch = checks.positive_int(batch, "batch")
    steps = checks.positive_int(steps, "steps")
    octaves = checks.positive_int(octaves, "octaves")
    octave_scale = _positive_float(octave_scale, "octave_scale")
    output_scale = _positive_float(output_scale, "output_scale")
    loop = _loop(loop)
    config = _config(model, param, transforms, regularizers, optimizer, preprocess)
    init_images = _init_images(init, batch)
    hw = tuple(init_images.shape[1:3]) if init_images is not None else param_lib.image_size(size)
    obj = _as_objective(objective)
    # every octave's input must reach the objective's layers, with indices in range
    for octave_hw in _octave_sizes(hw, octaves, octave_scale):
        obj.check(model, _model_input_shape(config, batch, octave_hw))
    keys = _folded_keys_jit(key, np.arange(batch, dtype=np.int32))
    images, values = _optimize(_compiled(config), variables, obj, keys, hw, steps, init_images,
                               octaves, octave_scale, loop)
    if output_scale != 1.0:
        out_hw = tuple(max(1, int(round(s * output_scale))) for s in images.shape[1:3])
        images = _resize(images, out_hw)
    return Synthesis(images, values)


def _model_input_shape(config: Config, n: int, hw: tuple[int, int]) -> tuple[int, ...]:
    """The shape of the model's input for ``n`` images of ``hw``: after the transforms
    and the preprocessing (traced, nothing computed); checked against the model."""
    seen = _seen_size(config.transform, hw)
    out = jax.eval_shape(config.preprocess, jax.ShapeDtypeStruct((n, *seen, 3), jnp.float32))
    try:
        checks.shape(out, config.model, what="preprocess(images)", images=True)
    except InputError as e:
        raise InputError(f"{e} (preprocess='auto' picks the model's own input)") from None
    return tuple(out.shape)


def _as_objective(objective: Any) -> Any:
    obj = objectives_lib.as_objective(objective)
    if not isinstance(obj, objectives_lib.Objective):
        obj = objectives_lib.Function(obj)
    return obj


# --- sweeps ------------------------------------------------------------------------------


def _seen_size(transform: Any, hw: tuple[int, int]) -> tuple[int, int]:
    """The size of the images the model sees after ``transform`` (traced, not computed)."""
    out = jax.eval_shape(transform, jax.random.key(0), jax.ShapeDtypeStruct((*hw, 3), jnp.float32))
    return tuple(out.shape[:2])


def _channels(model: nn.Module, layer: str, channels: Any, shape: tuple[int, ...]) -> np.ndarray:
    table = capture.layer_names(model, shape, partial=True)
    path = capture.resolve(model, [layer], table)[0]
    count = next(info.shape[-1] for info in table if info.path == path)
    if isinstance(channels, str):
        if channels != "all":
            raise InputError(f"expected channels='all' or an iterable of ints, got {channels!r}")
        return np.arange(count)
    try:
        out = np.asarray(list(channels) if isinstance(channels, Iterable) else channels)
    except TypeError:
        raise InputTypeError(f"expected channels as 'all' or an iterable of ints, got "
                        f"{type(channels).__name__}") from None
    if out.ndim != 1 or out.size == 0 or not np.issubdtype(out.dtype, np.integer):
        raise InputError(f"expected channels as a non-empty 1-D sequence of ints, got {out!r}")
    bad = out[(out < 0) | (out >= count)]
    if bad.size:
        raise InputError(f"channel {int(bad[0])} is out of range for layer {layer!r} with "
                         f"{count} channels")
    return out.astype(np.int64)


def images_per_chunk(model: nn.Module, layer: str, size: int | Sequence[int],
                     memory_bytes: int) -> int:
    """How many images a sweep step holds in ``memory_bytes``: a rough bound of four
    float32 copies (forward, backward, transform and optimizer state) of every layer
    output up to ``layer``, per image."""
    hw = param_lib.image_size(size)
    table = capture.layer_names(model, hw, partial=True)
    path = capture.resolve(model, [layer], table)[0]
    per_image = 3 * hw[0] * hw[1]
    for info in table:
        per_image += int(np.prod(info.shape[1:]))
        if info.path == path:
            break
    return max(1, int(memory_bytes // (16 * per_image)))


def _describe(v: Any) -> str:
    """A description stable across processes (functions by name, not by address)."""
    if isinstance(v, (tuple, list)):
        return "(" + ", ".join(_describe(i) for i in v) + ")"
    if callable(v) and hasattr(v, "__qualname__"):
        return f"{getattr(v, '__module__', '')}.{v.__qualname__}"
    return repr(v)


def _fingerprint(**kw) -> str:
    return "; ".join(f"{k}={_describe(v)}" for k, v in sorted(kw.items()))


def _digest(variables: Any) -> str:
    """A short fingerprint of ``variables``: each leaf's path, shape, dtype and float64 sum
    and sum of squares (a checkpoint made with other weights is not resumed)."""
    leaves = jax.tree_util.tree_flatten_with_path(variables)[0]
    sums = jax.device_get([(jnp.sum(jnp.asarray(v, jnp.float32)),
                            jnp.sum(jnp.square(jnp.asarray(v, jnp.float32))))
                           for _, v in leaves])
    h = hashlib.sha256()
    for (path, v), (s, q) in zip(leaves, sums):
        h.update(f"{jax.tree_util.keystr(path)}|{np.shape(v)}|{getattr(v, 'dtype', type(v))}|"
                 f"{float(s)!r}|{float(q)!r};".encode())
    return h.hexdigest()[:16]


def _load_checkpoint(path: Path, fingerprint: str) -> dict[int, np.ndarray]:
    if not path.exists():
        return {}
    with np.load(path, allow_pickle=False) as f:
        if str(f["fingerprint"]) != fingerprint:
            raise InputError(f"checkpoint {path} was written by a sweep with other settings; "
                             f"remove it or pass another checkpoint path")
        return {int(c): img for c, img in zip(f["channels"], f["images"])}


def _temporary_prefix(path: Path) -> str:
    return f".{path.name}."


def _remove_stale_temporaries(path: Path) -> None:
    """Removes what an interrupted write left (one sweep per checkpoint path at a time)."""
    for stale in path.parent.glob(_temporary_prefix(path) + "*.tmp"):
        stale.unlink(missing_ok=True)


def _save_checkpoint(path: Path, fingerprint: str, done: dict[int, np.ndarray]) -> None:
    """Writes ``done`` to a temporary file beside ``path``, flushes it to disk and renames
    it over ``path``: a reader (or a resumed sweep) sees the old file or the new one,
    never a part of one, whenever the process is killed."""
    chans = np.asarray(sorted(done), np.int64)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=_temporary_prefix(path), suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, fingerprint=np.asarray(fingerprint), channels=chans,
                     images=np.stack([done[c] for c in chans]))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@checks.boundary
def sweep(model: nn.Module, variables: Any, layer: str, channels: Any = "all", *,
          key: jax.Array, steps: int = 512, size: int | Sequence[int] = 128,
          objective: Callable[[str, Any], objectives_lib.Objective] | None = None,
          batch_size: int | None = None, memory_bytes: int = 2 << 30,
          param: Any = None, transforms: Any = "standard", regularizers: Any = None,
          optimizer: optax.GradientTransformation | None = None,
          preprocess: Any = "auto", loop: str = "auto", progress: bool | Callable = True,
          checkpoint: str | os.PathLike | None = None) -> jax.Array:
    """One image per channel of ``layer``, made as batches of one compiled program.

    Image ``i`` maximizes channel ``channels[i]`` (its spatial mean, by default) with
    its own randomness, ``jax.random.fold_in(key, channels[i])``: the images do not
    depend on the chunk size, on which other channels are swept, or on the number of
    devices (with several, each chunk is sharded over all of them). The forward pass
    stops at ``layer``.

    Args:
      model, variables: the model.
      layer: layer name (module path or alias).
      channels: "all" or an iterable of channel indices.
      key: PRNG key.
      steps, size, param, transforms, regularizers, optimizer, preprocess, loop: as
        :func:`visualize` (lucid's defaults).
      objective: ``objective(layer, indices) -> Objective`` for an (n,) index array;
        default :func:`jaxviz.objectives.channel`.
      batch_size: images per chunk; None sizes chunks by ``memory_bytes``
        (:func:`images_per_chunk`). The last chunk is padded, so one program serves all.
      memory_bytes: memory budget per chunk when ``batch_size`` is None.
      progress: print a line per chunk to stderr (True), stay quiet (False), or call
        ``progress(done, total, seconds)`` after each chunk.
      checkpoint: an ``.npz`` path; finished channels are saved there after each chunk
        (atomically) and skipped when the sweep is run again with the same settings
        (layer, key, steps, size, parameterization, transforms, regularizers and loop
        are checked; the optimizer and the weights are not). With several processes
        (``jax.distributed``), every process runs the same sweep and returns every image;
        process 0 writes the checkpoint, which must be on a filesystem all of them read.

    Returns:
      (len(channels), H, W, 3) images.
    """
    key = _key(key)
    steps = checks.positive_int(steps, "steps")
    hw = param_lib.image_size(size)
    loop = _loop(loop)
    config = _config(model, param, transforms, regularizers, optimizer, preprocess)
    shape = _model_input_shape(config, 1, hw)
    seen = shape[1:3]
    chans = _channels(model, layer, channels, shape)
    make = objective if objective is not None else objectives_lib.channel
    if batch_size is None:
        chunk = images_per_chunk(model, layer, seen, memory_bytes)
    else:
        chunk = checks.positive_int(batch_size, "batch_size")
    chunk = min(chunk, len(chans))
    ndev = jax.device_count()
    if ndev > 1:
        chunk = ndev * math.ceil(chunk / ndev)
    make(layer, np.asarray(chans[:1], np.int32)).check(model, shape)

    done: dict[int, np.ndarray] = {}
    path = fingerprint = None
    if checkpoint is not None:
        path = Path(checkpoint)
        fingerprint = _fingerprint(layer=layer, key=jax.random.key_data(key).tolist(),
                                   steps=steps, size=hw, config=config[1:4],
                                   preprocess=config.preprocess, loop=loop,
                                   model=config.model, weights=_digest(variables))
        _remove_stale_temporaries(path)
        done = _load_checkpoint(path, fingerprint)
        found = parallel.gather(np.asarray([len(done)], np.int64))
        if (found != found[0]).any():
            raise InputError(f"checkpoint {path} holds {found.tolist()} finished channels on "
                             f"processes 0..{len(found) - 1}: every process must read the same "
                             f"file (put it on a filesystem they share)")
    todo = np.asarray([c for c in dict.fromkeys(chans.tolist()) if c not in done], np.int64)

    compiled = _compiled(config)
    total = math.ceil(len(todo) / chunk) if len(todo) else 0
    t0 = time.perf_counter()
    for i in range(total):
        part = todo[i * chunk:(i + 1) * chunk]
        padded = np.concatenate([part, np.repeat(part[-1:], chunk - len(part))])
        keys = _folded_keys_jit(key, padded.astype(np.int32))
        obj = make(layer, np.asarray(padded, np.int32))  # a constant: replicated everywhere
        images, _ = _optimize(compiled, variables, obj, keys, hw, steps, None, 1, 1.0, loop)
        images = parallel.to_host(images)[:len(part)]
        done.update(zip(part.tolist(), images))
        if path is not None and parallel.is_main():
            _save_checkpoint(path, fingerprint, done)
        seconds = time.perf_counter() - t0
        if callable(progress):
            progress(i + 1, total, seconds)
        elif progress and parallel.is_main():
            print(f"sweep {layer}: chunk {i + 1}/{total} ({len(part)} channels, "
                  f"{chunk * steps} image-steps) {seconds:.1f} s", file=sys.stderr, flush=True)
    return jax.device_put(np.stack([done[int(c)] for c in chans]))  # no jnp.asarray program


__all__ = ["LOOPS", "Synthesis", "images_per_chunk", "normalize_by_max_abs", "sweep",
           "visualize"]

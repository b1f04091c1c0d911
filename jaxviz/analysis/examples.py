"""Dataset examples: for every channel of a layer, the image patches that excite it most.

Zeiler & Fergus (2014) show each unit by its nine strongest activations over a
validation set, as the image patch under each activation's receptive field and as the
DeconvNet projection of that one activation. :func:`top_k` finds them in one pass over an
image set, and :func:`patches`, :func:`projections` and :func:`draw_examples` make the
pictures::

    import jaxviz as jv
    from jaxviz.analysis import examples

    model, variables = jv.load("alexnet", weights="DEFAULT")
    stream = jv.stream.images("imagenet/val", batch_size=64)
    found = jv.analysis.top_k(model, variables, stream, "conv5", k=9)  # values, ids, positions
    crops = examples.patches(stream, model, found, "conv5")             # (C, 9, h, w, 3)
    proj = examples.projections(model, variables, stream, found, "conv5")
    jv.render.save_png(examples.draw_examples(crops, proj, channel=12), "conv5_12.png")

:func:`top_k` keeps a running top-k of every channel on the device: each batch's
activations (every image, every position) are merged with the running values by one
compiled program, so memory holds one batch and k values per channel, whatever the
number of images. With several local devices a batch is sharded over them; under
``jax.distributed`` each process runs over its own share and the per-process lists are
merged at the end (:mod:`jaxviz.parallel`), so every process returns what one process
would. The order is total: larger value first, then lower image index, then the earlier
position in row-major order; ties are therefore resolved the same way whatever the batch
size, device count or process count.

Reference: Zeiler & Fergus, "Visualizing and Understanding Convolutional Networks",
ECCV 2014, section 4 and figure 2.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from jaxviz import attribution, capture, checks, parallel, render
from jaxviz import static as static_lib
from jaxviz import stream as stream_lib
from jaxviz.analysis import receptive
from jaxviz.errors import InputError, InputTypeError, LayerError
from jaxviz.models.modules import input_spec

__all__ = ["TopK", "draw_examples", "example_pictures", "patches", "projections", "top_k"]


class _Triple(NamedTuple):
    values: np.ndarray
    ids: np.ndarray
    positions: np.ndarray


class TopK(_Triple):
    """The strongest activations of every channel of a layer over an image set.

    A tuple ``(values, ids, positions)`` (``values, ids, positions = top_k(...)``), with
    three more attributes.

    Attributes:
      values: (C, k) activations, largest first.
      ids: (C, k) int64, the image of each (its index in the set, in the set's order).
      positions: (C, k, 2) int64, the (row, column) of each in the layer's map.
      layer: the layer's name as given.
      count: images seen (every process).
      channels: (C,) the layer's channel of each row, or None for all of them in order
        (what :func:`top_k` returns; :func:`select` keeps some rows and records which).
    """

    def __new__(cls, values: np.ndarray, ids: np.ndarray, positions: np.ndarray,
                layer: str = "", count: int = 0, channels: np.ndarray | None = None) -> TopK:
        self = super().__new__(cls, values, ids, positions)
        self.layer, self.count, self.channels = layer, count, channels
        return self

    def __repr__(self) -> str:
        return (f"TopK(layer={self.layer!r}, count={self.count}, values shape "
                f"{np.shape(self.values)}, channels={'all' if self.channels is None else list(self.channels)})")

    def channel_ids(self) -> np.ndarray:
        """(C,) the layer's channel of each row."""
        if self.channels is None:
            return np.arange(np.shape(self.values)[0])
        return np.asarray(self.channels, np.int64)


# --------------------------------------------------------------------------- the running top-k


def _merge_core(model, path, k, variables, x, row_ids, valid, values, ids, flat):
    """One batch merged into the running (C, k) lists; returns the new lists."""
    _, acts = capture.run(model, variables, x, [path], logits=False)
    a = acts[path]
    n, h, w, c = a.shape  # a map: top_k checked the layer's shape
    a = jnp.where(valid[:, None, None, None], a, -jnp.inf).astype(values.dtype)
    cand = jnp.moveaxis(a, -1, 0).reshape(c, n * h * w)      # image-major, then row-major
    cand_ids = jnp.broadcast_to(jnp.repeat(row_ids, h * w), (c, n * h * w))
    cand_pos = jnp.broadcast_to(jnp.tile(jnp.arange(h * w, dtype=jnp.int32), n), (c, n * h * w))
    # the running lists come first: lax.top_k is stable (equal values keep their order),
    # and they hold lower image indices than the batch (see _batches)
    all_v = jnp.concatenate([values, cand], axis=1)
    all_i = jnp.concatenate([ids, cand_ids], axis=1)
    all_p = jnp.concatenate([flat, cand_pos], axis=1)
    top_v, where = jax.lax.top_k(all_v, k)
    return (top_v, jnp.take_along_axis(all_i, where, axis=1),
            jnp.take_along_axis(all_p, where, axis=1))


_merge = static_lib.jit(_merge_core, 3)


def _batches(images: Any, model: nn.Module, batch_size: int):
    """(batch on the host, its image indices or None for "count them") for every batch."""
    if isinstance(images, (np.ndarray, jax.Array)):
        checks.shape(images, model, what="images")
        for start in range(0, int(images.shape[0]), batch_size):
            yield images[start:start + batch_size], None
        return
    if isinstance(images, (str, bytes)) or not isinstance(images, Iterable):
        raise InputTypeError(f"expected images as an array (N, H, W, C), a jaxviz.stream."
                             f"ImageStream or an iterable of batches, got {type(images).__name__}")
    for batch in images:
        if isinstance(batch, stream_lib.Batch):
            yield batch.images, batch.indices
        else:
            yield batch, None


def _local_sharding(n: int) -> NamedSharding | None:
    devices = jax.local_devices()
    if len(devices) < 2 or n % len(devices):
        return None
    return NamedSharding(Mesh(np.asarray(devices), ("batch",)), PartitionSpec("batch"))


def _merge_lists(values: np.ndarray, ids: np.ndarray, flat: np.ndarray, k: int):
    """(P, C, k) lists -> (C, k), in the total order (value desc, id asc, position asc)."""
    p, c, _ = values.shape
    v = np.moveaxis(values, 0, 1).reshape(c, -1)
    i = np.moveaxis(ids, 0, 1).reshape(c, -1)
    f = np.moveaxis(flat, 0, 1).reshape(c, -1)
    out_v, out_i, out_f = (np.empty((c, k), a.dtype) for a in (v, i, f))
    for ch in range(c):
        order = np.lexsort((f[ch], i[ch], -v[ch]))[:k]
        out_v[ch], out_i[ch], out_f[ch] = v[ch, order], i[ch, order], f[ch, order]
    return out_v, out_i, out_f


@checks.boundary
def top_k(model: nn.Module, variables: Any, images: Any, layer: str, k: int = 9, *,
          batch_size: int = 64) -> TopK:
    """The ``k`` strongest activations of every channel of ``layer`` over an image set.

    Every position of every image competes: for channel c, ``values[c]`` are the k
    largest entries of ``A[:, :, :, c]`` over all images, largest first, ties going to the
    lower image index, then to the earlier position in row-major order.

    Args:
      model, variables: any Linen model (ours, or a user's; :func:`jaxviz.activations`).
      images: an (N, H, W, C) array (cut into batches of ``batch_size``), a
        :class:`jaxviz.stream.ImageStream`, or any iterable of (b, H, W, C) arrays or of
        :class:`jaxviz.stream.Batch` es. Image indices are those of a stream's batches, or
        else count the images in the order they come. Under ``jax.distributed``, each
        process passes its own share (a stream shards itself; an array or a plain
        iterable is this process's share, the shares in process order), and every process
        returns the result for the whole set. Every process needs at least one image.
      layer: a layer with spatial maps (module path or alias).
      k: examples per channel (at most the number of positions over all images).
      batch_size: images per batch when ``images`` is an array. Every batch runs the same
        compiled program: a shorter last batch is padded (the padding never wins).

    Returns:
      :class:`TopK` ``(values (C, k), ids (C, k), positions (C, k, 2))``; it unpacks as
      ``values, ids, positions`` (with ``.layer`` and ``.count``).

    Raises:
      InputError: ``k`` or ``batch_size`` below 1, more than the positions seen, no images,
        batches of different image shapes; LayerError: an unknown layer or one without
        spatial maps; InputTypeError: ``images`` of the wrong type.
    """
    k = checks.positive_int(k, "k")
    batch_size = checks.positive_int(batch_size, "batch_size")
    state = None
    path = None
    first_shape = None
    size = None
    seen = 0
    kinds = set()  # "given" (stream batches carry indices) or "counted"
    for number, (xb, given_ids) in enumerate(_batches(images, model, batch_size)):
        xb = checks.batch(xb, model, what=f"images batch {number}")
        kinds.add("counted" if given_ids is None else "given")
        if len(kinds) > 1:
            raise InputError("expected batches that all carry their image indices (jaxviz.stream."
                             "Batch) or none that do, got a mix")
        real = int(xb.shape[0])
        if first_shape is None:
            first_shape = tuple(xb.shape[1:])
            first_real = real
            ndev = jax.local_device_count()  # batches padded to shard over every device
            size = ndev * -(-real // ndev)
            path = capture.resolve(model, [layer], capture.layer_names(
                model, tuple(xb.shape), partial=True))[0]
            info = next(i for i in capture.layer_names(model, (1, *first_shape), partial=True)
                        if i.path == path)
            if len(info.shape) != 4:
                raise LayerError(f"top_k needs a layer with spatial maps (N, H, W, C); {layer!r} "
                                 f"gives shape {info.shape[1:]} per image")
            c = info.shape[-1]
            # made on the host and copied: an eager jnp.full, or jnp.asarray of a numpy
            # array, compiles a program per shape (jax 0.10)
            state = tuple(jax.device_put(np.full((c, k), fill, dtype)) for fill, dtype in
                          ((-np.inf, np.dtype(xb.dtype)), (-1, np.int32), (-1, np.int32)))
            grid = info.shape[1:3]
        elif tuple(xb.shape[1:]) != first_shape:
            raise InputError(f"every batch must hold images of one shape: batch 0 has "
                             f"{first_shape}, batch {number} has {tuple(xb.shape[1:])}")
        if real > size:
            raise InputError(f"batch {number} holds {real} images, more than the first batch's "
                             f"{first_real}; make the first batch the largest")
        row_ids = (np.arange(seen, seen + real) if given_ids is None
                   else np.asarray(given_ids, np.int64))
        if real < size:
            xb = jnp.concatenate([xb, jnp.broadcast_to(xb[-1:], (size - real, *xb.shape[1:]))])
            row_ids = np.concatenate([row_ids, np.full(size - real, -1)])
        valid = np.arange(size) < real
        sharding = _local_sharding(size)
        if sharding is not None:
            xb, row_ids, valid = (jax.device_put(np.asarray(a), sharding)
                                  for a in (xb, row_ids.astype(np.int32), valid))
        else:
            row_ids = jax.device_put(row_ids.astype(np.int32))
        previous = state
        state = _merge(model, path, k, variables, xb, row_ids, valid, *state)
        # at most two batches in flight: dispatch is asynchronous, and a producer faster
        # than the device would otherwise queue every batch it reads
        jax.block_until_ready(previous)
        seen += real
    if state is None:
        raise InputError("expected at least one image, got no batches")
    values, ids, flat = (np.asarray(a) for a in state)
    ids = ids.astype(np.int64)
    counted = kinds == {"counted"}
    counts = parallel.gather(np.asarray([seen], np.int64))
    if counted:  # local counts -> indices in the whole set, shares in process order
        offset = int(counts[:jax.process_index()].sum())
        ids = np.where(ids >= 0, ids + offset, ids)
    total = int(counts.sum())
    if k > total * grid[0] * grid[1]:
        raise InputError(f"k={k} is more than the {total * grid[0] * grid[1]} positions of "
                         f"{layer!r} over {total} images")
    if jax.process_count() > 1:
        values, ids, flat = _merge_lists(parallel.gather(values[None]), parallel.gather(ids[None]),
                                         parallel.gather(flat[None]), k)
    positions = np.stack(np.divmod(flat.astype(np.int64), grid[1]), axis=-1)
    return TopK(values, ids, positions, layer, total)


# --------------------------------------------------------------------------- the pictures


def _image_getter(images: Any):
    """A function: image index -> (H, W, C) model-ready image."""
    if isinstance(images, (np.ndarray, jax.Array)):
        x = np.asarray(images)
        return lambda i: x[i]
    if isinstance(images, stream_lib.ImageStream):
        return images.image
    raise InputTypeError(f"expected the image set as an (N, H, W, C) array or a jaxviz.stream."
                         f"ImageStream (random access by index), got {type(images).__name__}")


def _check_found(found: Any) -> TopK:
    if not isinstance(found, TopK):
        raise InputTypeError(f"expected the TopK that top_k returns, got {type(found).__name__}")
    return found


@checks.boundary
def patches(images: Any, model: nn.Module, found: TopK, layer: str | None = None, *,
            fill: float = 0.0) -> np.ndarray:
    """The receptive-field patch under each example of :func:`top_k`.

    Args:
      images: the image set ``top_k`` ran over, with random access: an (N, H, W, C) array
        or a :class:`jaxviz.stream.ImageStream` (every process's images, not a share).
      model: the model (its layer list gives the receptive field,
        :func:`jaxviz.analysis.receptive.receptive_field`).
      found: :func:`top_k`'s result.
      layer: the layer (default: ``found.layer``).
      fill: the value of patch pixels outside the image (zero padding; 0 is the mean image
        after ImageNet normalisation).

    Returns:
      (C, k, h, w, C_in) patches in model-input units, (h, w) the field's size, aligned so
      that the unit's whole field is the patch.
    """
    found = _check_found(found)
    get = _image_getter(images)
    first = get(int(found.ids[0, 0]))
    field = receptive.receptive_field(model, layer or found.layer, first.shape)
    c, k = found.ids.shape
    ids = found.ids.reshape(-1)
    pos = found.positions.reshape(-1, 2)
    unique = np.unique(ids)
    stack = np.stack([get(int(i)) for i in unique])
    crops = receptive.crop_patches(stack, np.searchsorted(unique, ids), pos, field, fill=fill)
    return np.asarray(crops).reshape(c, k, *np.shape(crops)[1:])


@checks.boundary
def projections(model: nn.Module, variables: Any, images: Any, found: TopK,
                layer: str | None = None, *, batch_size: int = 32) -> np.ndarray:
    """The DeconvNet projection of each example of :func:`top_k`, down to pixels.

    Example (c, j) is the projection of the single activation ``A[y, x, c]`` at
    ``found.positions[c, j]`` of image ``found.ids[c, j]``, through that image's own
    switches (:func:`jaxviz.attribution.deconvnet_reconstruction` with ``channel`` and
    ``position``), as in Zeiler & Fergus's figure 2.

    Args:
      model, variables: a model whose ReLUs follow a backward rule (ours).
      images: as :func:`patches`.
      found: :func:`top_k`'s result.
      layer: the layer (default: ``found.layer``).
      batch_size: projections per compiled call (the last call is padded).

    Returns:
      (C, k, H, W, C_in) projections in input space, the whole image each (crop them with
      :func:`jaxviz.analysis.receptive.crop_patches` to the field, as :func:`patches`).
    """
    found = _check_found(found)
    batch_size = checks.positive_int(batch_size, "batch_size")
    get = _image_getter(images)
    layer = layer or found.layer
    c, k = found.ids.shape
    ids = found.ids.reshape(-1)
    channels = np.repeat(found.channel_ids(), k)
    pos = found.positions.reshape(-1, 2)
    out = []
    for start in range(0, len(ids), batch_size):
        stop = min(start + batch_size, len(ids))
        take = np.arange(start, start + batch_size).clip(max=stop - 1)  # pad with the last
        x = np.stack([get(int(ids[i])) for i in take])
        proj = attribution.deconvnet_reconstruction(model, variables, jax.device_put(x), layer,
                                                    channel=channels[take], position=pos[take])
        out.append(np.asarray(proj)[:stop - start])
    out = np.concatenate(out)
    return out.reshape(c, k, *out.shape[1:])


def _unit_tiles(a: np.ndarray) -> np.ndarray:
    """(k, h, w, c) floats in [0, 1] -> (k, h, w, 3) floats (grey repeated)."""
    return np.repeat(a, 3, axis=-1) if a.shape[-1] == 1 else a


def draw_examples(crops: Any, projected: Any = None, *, channel: int = 0,
                  scale: str = "imagenet", zoom: int = 1, gutter: int = 2) -> np.ndarray:
    """One channel's examples as a uint8 picture: a row of patches and, under it, their
    projections, each projection scaled on its own so that 0 is mid-grey and its largest
    magnitude reaches black or white.

    Args:
      crops: :func:`patches`' (C, k, h, w, C_in), in model-input units.
      projected: projections cropped to the same patches, (C, k, h, w, C_in), or None.
      channel: which channel.
      scale: how the crops were normalised: ``"imagenet"`` (ImageNet mean and std,
        undone by :func:`jaxviz.render.to_uint8_image`) or ``"unit"`` (values in [0, 1]).
      zoom, gutter: pixel zoom of every tile; white pixels between tiles.

    Returns:
      (H, W, 3) uint8.
    """
    crops = np.asarray(crops)
    if crops.ndim != 5:
        raise InputError(f"expected crops as (C, k, h, w, C_in), got shape {crops.shape}")
    if isinstance(channel, bool) or not isinstance(channel, (int, np.integer)) or not (
            0 <= channel < crops.shape[0]):
        raise InputError(f"expected channel as an int in [0, {crops.shape[0]}), got {channel!r}")
    if scale not in ("imagenet", "unit"):
        raise InputError(f"unknown scale {scale!r}; expected 'imagenet' or 'unit'")
    row = crops[channel]
    if scale == "imagenet":
        tiles = [render.to_uint8_image(row)]
    else:
        tiles = [np.round(255 * np.clip(_unit_tiles(row), 0, 1)).astype(np.uint8)]
    if projected is not None:
        p = np.asarray(projected, np.float64)[channel]
        if p.shape != row.shape:
            raise InputError(f"expected projections cropped like the patches, {row.shape}, got "
                             f"{p.shape} (crop them with receptive.crop_patches)")
        top = np.abs(p).reshape(len(p), -1).max(axis=1).reshape(-1, 1, 1, 1)
        p = 0.5 + 0.5 * p / np.where(top > 0, top, 1)
        tiles.append(np.round(255 * _unit_tiles(p)).astype(np.uint8))
    tiles = np.concatenate(tiles)
    if zoom > 1:
        tiles = tiles.repeat(zoom, axis=1).repeat(zoom, axis=2)
    return render.grid(tiles, ncols=len(row), pad=gutter)


def select(found: TopK, channels: Any) -> TopK:
    """``found`` restricted to the layer's ``channels`` (a list of channel indices, which
    must be among ``found``'s), in that order; the result records which they are."""
    found = _check_found(found)
    channels = np.asarray(channels, np.int64).reshape(-1)
    have = found.channel_ids()
    row = {int(c): i for i, c in enumerate(have)}
    missing = [int(c) for c in channels if int(c) not in row]
    if missing:
        raise InputError(f"channel {missing[0]} is not in this top-k of {found.layer!r} "
                         f"(it has {len(have)} channels)")
    rows = np.asarray([row[int(c)] for c in channels], np.int64)
    return TopK(found.values[rows], found.ids[rows], found.positions[rows], found.layer,
                found.count, channels)


def example_pictures(model: nn.Module, variables: Any, images: Any, found: TopK,
                     channels: Any = None, *, batch_size: int = 32, scale: str | None = None,
                     size: int = 96) -> dict[int, np.ndarray]:
    """Each channel's examples as a picture: the receptive-field patches of its strongest
    activations above their DeconvNet projections, both cut to the field (Zeiler &
    Fergus 2014, figure 2).

    Args:
      model, variables, images: as :func:`projections`.
      found: :func:`top_k`'s result.
      channels: which channels (default: all of ``found``'s).
      batch_size: projections per compiled call.
      scale: how the model's input is normalised, ``"imagenet"`` or ``"unit"``
        (default: what the model's ``input_spec()`` says).
      size: tiles are zoomed by a whole factor up to about this many pixels.

    Returns:
      ``{channel: (H, W, 3) uint8}`` in the order of ``channels``.
    """
    found = _check_found(found)
    channels = list(range(found.values.shape[0])) if channels is None else [int(c) for c in channels]
    picked = select(found, channels)
    if scale is None:
        spec = input_spec(model)
        scale = spec.scale if spec is not None else "imagenet"
    crops = patches(images, model, picked)
    projected = projections(model, variables, images, picked, batch_size=batch_size)
    field = receptive.receptive_field(model, found.layer, _image_getter(images)(0).shape)
    n, k = picked.ids.shape
    cropped = receptive.crop_patches(projected.reshape(-1, *projected.shape[2:]),
                                     np.arange(n * k), picked.positions.reshape(-1, 2),
                                     field).reshape(crops.shape)
    zoom = max(1, size // max(field.size))
    return {ch: draw_examples(crops, cropped, channel=i, zoom=zoom, scale=scale)
            for i, ch in enumerate(channels)}

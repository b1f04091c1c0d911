"""Image loading and ImageNet preprocessing, folders of images, bundled samples.

Everything here reproduces torchvision's PIL pipeline, the one every torchvision
classifier was evaluated with::

    PIL image -> Resize -> CenterCrop -> ToTensor -> Normalize(IMAGENET_MEAN, IMAGENET_STD)

but returns NHWC ``float32`` numpy arrays, ready for the Flax models. A photograph
read from disk goes through Pillow exactly as torchvision sends it (8-bit RGB,
Pillow's bilinear filter with antialiasing), so it matches torchvision bit for bit
up to normalisation (see :func:`preprocess` for the tolerance after it).

Example::

    from jaxviz import data

    x = data.preprocess(data.sample_image("chelsea"))      # (1, 224, 224, 3)
    x, paths = data.load_folder("photos/")                 # every image in a folder
    data.decode_predictions(logits, top=3)                 # [[(281, 'tabby', 0.61), ...]]
"""

from __future__ import annotations

import functools
import importlib.resources
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Literal, Union

import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image, UnidentifiedImageError

from jaxviz._host import to_device
from jaxviz.errors import InputError, InputTypeError

if TYPE_CHECKING:
    from importlib.resources.abc import Traversable

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "IMAGE_EXTENSIONS",
    "center_crop",
    "decode_predictions",
    "digits",
    "digits_split",
    "denormalize",
    "image_folder",
    "imagenet_classes",
    "load_folder",
    "load_image",
    "normalize",
    "place_on_canvas",
    "preprocess",
    "resize",
    "sample_image",
    "sample_names",
]

IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
"""Per-channel RGB mean of ImageNet, in [0, 1] units (torchvision's value)."""

IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)
"""Per-channel RGB standard deviation of ImageNet, in [0, 1] units (torchvision's value)."""

IMAGE_EXTENSIONS: tuple[str, ...] = (
    ".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp",
)
"""File suffixes :func:`load_folder` reads (torchvision's ``IMG_EXTENSIONS``), any case."""

_SAMPLES: dict[str, str] = {"chelsea": "chelsea.png", "coffee": "coffee.png"}

PathLike = Union[str, os.PathLike]
ImageLike = Union[PathLike, Image.Image, np.ndarray, jax.Array]
Size = Union[int, tuple[int, int]]
Via = Literal["auto", "uint8", "float"]


# --------------------------------------------------------------------------- loading


def _open_rgb(path: PathLike) -> Image.Image:
    """Opens an image file as an 8-bit RGB PIL image, like torchvision's ``pil_loader``."""
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"expected an image file, but no file exists at '{p}'")
    if p.is_dir():
        raise IsADirectoryError(
            f"expected an image file, got the directory '{p}' (use load_folder for folders)"
        )
    try:
        with Image.open(p) as img:
            img.load()
            # torchvision's pil_loader: `Image.open(f).convert("RGB")`. Grey is replicated,
            # palettes are expanded, alpha is dropped (not composited).
            return img.convert("RGB")
    except PermissionError:
        raise
    except (UnidentifiedImageError, OSError, SyntaxError) as err:
        raise InputError(f"expected an image file Pillow can read, got '{p}': {err}") from err


def load_image(path: PathLike) -> np.ndarray:
    """Reads an image file as RGB floats in [0, 1].

    The file is converted to 8-bit RGB exactly as torchvision's ``ImageFolder``
    loader does (``Image.open(path).convert("RGB")``): grey is replicated to three
    channels, palette images are expanded and an alpha channel is dropped. EXIF
    orientation is not applied (torchvision does not apply it either).

    Args:
      path: path of an image file in any format Pillow reads.

    Returns:
      (H, W, 3) float32 array with values ``k / 255`` for the 8-bit values ``k``.

    Raises:
      FileNotFoundError: nothing exists at ``path``.
      IsADirectoryError: ``path`` is a folder.
      ValueError: the file is not an image Pillow can read.
    """
    return _to_float(np.asarray(_open_rgb(path)))


def _to_float(image_u8: np.ndarray) -> np.ndarray:
    # Same float32 division as torchvision's ToTensor: `img.to(float32).div(255)`.
    return image_u8.astype(np.float32) / np.float32(255)


# --------------------------------------------------------------------------- geometry


def _check_size(size: Size, what: str) -> tuple[int, int] | int:
    if isinstance(size, (bool, np.bool_)):
        raise InputTypeError(f"{what} must be an int or an (h, w) pair, got {size!r}")
    if isinstance(size, (int, np.integer)):
        if size <= 0:
            raise InputError(f"{what} must be positive, got {size}")
        return int(size)
    if isinstance(size, Sequence) and len(size) == 2 and all(
        isinstance(s, (int, np.integer)) and not isinstance(s, (bool, np.bool_)) for s in size
    ):
        h, w = int(size[0]), int(size[1])
        if h <= 0 or w <= 0:
            raise InputError(f"{what} must be positive, got {(h, w)}")
        return (h, w)
    raise InputTypeError(f"{what} must be an int or an (h, w) pair of ints, got {size!r}")


def _resized_shape(height: int, width: int, size: Size) -> tuple[int, int]:
    """Output (h, w) of torchvision's ``Resize(size)`` (``_compute_resized_output_size``)."""
    size = _check_size(size, "size")
    if isinstance(size, tuple):
        return size
    short, long = (width, height) if width <= height else (height, width)
    new_short, new_long = size, int(size * long / short)
    return (new_long, new_short) if width <= height else (new_short, new_long)


def _check_image(image: np.ndarray, what: str = "image") -> np.ndarray:
    if image.ndim != 3 or image.shape[-1] != 3:
        raise InputError(f"expected an {what} of shape (H, W, 3), got shape {image.shape}")
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise InputError(f"expected a non-empty {what}, got shape {image.shape}")
    if image.dtype != np.uint8 and not np.issubdtype(image.dtype, np.floating):
        raise InputTypeError(f"expected a uint8 or float {what}, got dtype {image.dtype}")
    return image


def _as_exact_uint8(image: np.ndarray) -> np.ndarray | None:
    """The uint8 image ``k`` with ``k / 255 == image`` exactly, or None if there is none."""
    scaled = np.rint(image.astype(np.float64) * 255)
    if not np.all((scaled >= 0) & (scaled <= 255)):
        return None
    k = scaled.astype(np.uint8)
    # k / 255 in the image's own dtype, or in float32 (load_image's values) then cast.
    own = k.astype(image.dtype) / image.dtype.type(255)
    f32 = (k.astype(np.float32) / np.float32(255)).astype(image.dtype)
    return k if np.array_equal(own, image) or np.array_equal(f32, image) else None


def _quantize(image: np.ndarray) -> np.ndarray:
    if not np.all(np.isfinite(image)) or image.min() < 0 or image.max() > 1:
        raise InputError(
            "via='uint8' expects a float image in [0, 1], got values in "
            f"[{np.nanmin(image):.4g}, {np.nanmax(image):.4g}]"
        )
    return np.rint(image.astype(np.float64) * 255).astype(np.uint8)


def _resize_u8(image: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    if image.shape[:2] == hw:  # torchvision returns the image untouched
        return image.copy()
    pil = Image.fromarray(np.ascontiguousarray(image))
    return np.asarray(pil.resize((hw[1], hw[0]), Image.Resampling.BILINEAR))


def _resize_f(image: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    image = image.astype(np.float32)
    if image.shape[:2] == hw:
        return image.copy()
    channels = [
        np.asarray(
            Image.fromarray(np.ascontiguousarray(image[..., c])).resize(
                (hw[1], hw[0]), Image.Resampling.BILINEAR
            )
        )
        for c in range(image.shape[-1])
    ]
    return np.stack(channels, axis=-1).astype(np.float32)


def resize(
    image: np.ndarray | jax.Array,
    size: Size,
    *,
    via: Via = "auto",
) -> np.ndarray:
    """Resizes an image as torchvision's ``transforms.Resize(size)`` does on a PIL image.

    The work is done by Pillow's bilinear filter, which always antialiases (its
    triangle kernel is widened by the scale factor when shrinking), as torchvision's
    PIL path does.

    Output size (torchvision's rounding):

    * ``size=(h, w)``: exactly ``(h, w)``.
    * ``size=s`` (int): the shorter side becomes ``s`` and the longer side
      ``int(s * long / short)``, truncated, not rounded. A 451 x 300 (W x H) photo
      with ``s=256`` becomes 384 x 256, since ``int(256 * 451 / 300) = int(384.85)``.

    If the output size equals the input size the image is returned unchanged (a
    copy), as torchvision does.

    How the pixels reach Pillow (``via``):

    * ``"uint8"``: as an 8-bit RGB image, torchvision's path for photographs. Pillow
      then resamples in fixed point and rounds the result to 8 bits. A float image is
      first rounded to ``round(255 * x)``.
    * ``"float"``: each channel as a 32-bit float ("F" mode) image; no rounding to 8
      bits, values outside [0, 1] are kept. There is no torchvision counterpart: its
      PIL path only sees 8-bit photos.
    * ``"auto"`` (default): uint8 arrays, and float arrays whose values are all exactly
      ``k / 255`` (e.g. from :func:`load_image` or :func:`sample_image`), go
      through the 8-bit path, so a photo loaded from disk matches torchvision bit for
      bit; any other float array goes through the float path.

    Args:
      image: (H, W, 3) uint8 image, or float image (normally in [0, 1]).
      size: an int (the shorter side) or an ``(h, w)`` pair.
      via: ``"auto"``, ``"uint8"`` or ``"float"``; see above.

    Returns:
      The resized image: uint8 if ``image`` is uint8, float32 otherwise.

    Raises:
      ValueError: ``image`` is not (H, W, 3), or ``via="uint8"`` got floats outside [0, 1].
      TypeError: ``size`` is not an int or an (h, w) pair, or the dtype is not uint8/float.
    """
    if via not in ("auto", "uint8", "float"):
        raise InputError(f"via must be one of 'auto', 'uint8', 'float', got {via!r}")
    image = _check_image(np.asarray(image))
    hw = _resized_shape(image.shape[0], image.shape[1], size)
    if image.dtype == np.uint8:
        if via == "float":
            return _resize_f(_to_float(image), hw)
        return _resize_u8(image, hw)
    if via == "float":
        return _resize_f(image, hw)
    if via == "uint8":
        return _to_float(_resize_u8(_quantize(image), hw))
    exact = _as_exact_uint8(image)
    if exact is not None:
        return _to_float(_resize_u8(exact, hw))
    return _resize_f(image, hw)


def center_crop(image: np.ndarray | jax.Array, size: Size) -> np.ndarray | jax.Array:
    """Crops the centre of an image as torchvision's ``transforms.CenterCrop(size)``.

    The crop starts at ``top = int(round((H - h) / 2))`` and
    ``left = int(round((W - w) / 2))``, with Python's ``round`` (halves go to the
    even integer: an offset of 0.5 gives 0, 1.5 gives 2). When the crop is larger
    than the image, the image is first padded with zeros, ``(h - H) // 2`` rows on
    top and ``(h - H + 1) // 2`` below (likewise for columns), as torchvision does.

    Args:
      image: (H, W, ...) numpy or jax array (any trailing channel axes, any dtype).
      size: an int (square crop) or an ``(h, w)`` pair.

    Returns:
      (h, w, ...) array of the same kind and dtype as ``image``.

    Raises:
      ValueError: ``image`` has fewer than two axes.
      TypeError: ``size`` is not an int or an (h, w) pair.
    """
    is_jax = isinstance(image, jax.Array)
    xp = jnp if is_jax else np
    if not is_jax:
        image = np.asarray(image)
    if image.ndim < 2:
        raise InputError(f"expected an image of shape (H, W, ...), got shape {image.shape}")
    size = _check_size(size, "size")
    crop_h, crop_w = (size, size) if isinstance(size, int) else size
    height, width = image.shape[0], image.shape[1]
    if crop_h > height or crop_w > width:
        pad_top = (crop_h - height) // 2 if crop_h > height else 0
        pad_bottom = (crop_h - height + 1) // 2 if crop_h > height else 0
        pad_left = (crop_w - width) // 2 if crop_w > width else 0
        pad_right = (crop_w - width + 1) // 2 if crop_w > width else 0
        widths = [(pad_top, pad_bottom), (pad_left, pad_right)] + [(0, 0)] * (image.ndim - 2)
        image = xp.pad(image, widths)
        height, width = image.shape[0], image.shape[1]
    top = int(round((height - crop_h) / 2.0))
    left = int(round((width - crop_w) / 2.0))
    return image[top : top + crop_h, left : left + crop_w]


# --------------------------------------------------------------------------- normalisation


def _stats(x: np.ndarray | jax.Array, name: str):
    if x.ndim < 1 or x.shape[-1] != 3:
        raise InputError(
            f"{name} expects RGB on the last axis, (..., 3) such as (N, H, W, 3), "
            f"got shape {x.shape}"
        )
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise InputTypeError(
            f"{name} expects a float array with values in [0, 1] units, got dtype {x.dtype}"
        )
    xp = jnp if isinstance(x, jax.Array) else np
    # torchvision: `torch.as_tensor(mean, dtype=tensor.dtype)`, the statistics in x's dtype.
    mean = xp.asarray(IMAGENET_MEAN, dtype=x.dtype)
    std = xp.asarray(IMAGENET_STD, dtype=x.dtype)
    return mean, std


def normalize(x: np.ndarray | jax.Array) -> np.ndarray | jax.Array:
    """Standardises RGB values with the ImageNet statistics: ``(x - mean) / std``.

    The same arithmetic as torchvision's ``Normalize(IMAGENET_MEAN, IMAGENET_STD)``
    (subtract, then divide, with the statistics in ``x``'s dtype), on the last
    axis instead of torch's channel axis. Works under ``jax.jit``.

    Args:
      x: (..., 3) float array in [0, 1] units, e.g. (H, W, 3) or (N, H, W, 3); numpy
        or jax.

    Returns:
      Array of the same kind (numpy or jax), shape and dtype.

    Raises:
      ValueError: the last axis is not 3.
      TypeError: ``x`` is not a float array.
    """
    if not isinstance(x, jax.Array):
        x = np.asarray(x)
    mean, std = _stats(x, "normalize")
    if isinstance(x, np.ndarray) and x.size >= 3072:
        # the same operations on (3, H*W) rows: numpy broadcasting over a last axis of 3
        # runs 4x slower (the bits are the same; image streams decode faster)
        rows = np.subtract(x.reshape(-1, 3).T, mean[:, None])
        rows /= std[:, None]
        return np.ascontiguousarray(rows.T).reshape(x.shape)
    return (x - mean) / std


def denormalize(x: np.ndarray | jax.Array) -> np.ndarray | jax.Array:
    """Inverts :func:`normalize`: ``x * std + mean``, back to [0, 1] units.

    Args:
      x: (..., 3) float array of ImageNet-normalised values; numpy or jax.

    Returns:
      Array of the same kind, shape and dtype (not clipped to [0, 1]).

    Raises:
      ValueError: the last axis is not 3.
      TypeError: ``x`` is not a float array.
    """
    if not isinstance(x, jax.Array):
        x = np.asarray(x)
    mean, std = _stats(x, "denormalize")
    return x * std + mean


# --------------------------------------------------------------------------- preprocess


def _as_array(image: ImageLike, index: int) -> np.ndarray:
    """One input as a (H, W, 3) uint8 or float array."""
    where = f"image {index}"
    if isinstance(image, (str, os.PathLike)):
        return np.asarray(_open_rgb(image))
    if isinstance(image, Image.Image):
        return np.asarray(image.convert("RGB"))
    if isinstance(image, (np.ndarray, jax.Array)):
        arr = np.asarray(image)
        if arr.ndim != 3 or arr.shape[-1] != 3:
            raise InputError(f"expected {where} of shape (H, W, 3), got shape {arr.shape}")
        if arr.dtype == np.uint8:
            return arr
        if not np.issubdtype(arr.dtype, np.floating):
            raise InputTypeError(
                f"expected {where} as uint8 (0..255) or float (0..1), got dtype {arr.dtype}"
            )
        if arr.size and (not np.all(np.isfinite(arr)) or arr.min() < 0 or arr.max() > 1):
            raise InputError(
                f"expected {where} as floats in [0, 1], got values in "
                f"[{np.nanmin(arr):.4g}, {np.nanmax(arr):.4g}] (pass uint8 for 0..255 data)"
            )
        return arr
    raise InputTypeError(
        f"expected a path, a PIL image or an (H, W, 3) array for {where}, "
        f"got {type(image).__name__}"
    )


def _preprocess_one(
    image: np.ndarray,
    size: Size,
    resize_to: Size | Literal["exact"] | None,
    via: Via,
    scale: str,
    grey: bool,
) -> np.ndarray:
    _check_image(image)
    if resize_to == "exact":
        out = _check_size(size, "size")
        image = resize(image, (out, out) if isinstance(out, int) else out, via=via)
    else:
        if resize_to is not None:
            image = resize(image, resize_to, via=via)
        image = center_crop(image, size)
    if image.dtype == np.uint8:
        image = _to_float(image)
    image = image.astype(np.float32)
    if grey:
        return image.mean(axis=-1, keepdims=True)
    return normalize(image) if scale == "imagenet" else image


def preprocess(
    images: ImageLike | Sequence[ImageLike],
    size: Size = 224,
    *,
    resize: Size | Literal["exact"] | None = 256,
    via: Via = "auto",
    scale: Literal["imagenet", "unit"] = "imagenet",
    grey: bool = False,
) -> np.ndarray:
    """Turns images into a model-ready, ImageNet-normalised NHWC batch.

    Two modes:

    * ``resize=256`` (default), torchvision's standard evaluation transform
      ``Resize(256) -> CenterCrop(224) -> ToTensor() -> Normalize(mean, std)``: the
      shorter side is resized to ``resize`` (or the image to ``(h, w)`` if
      ``resize`` is a pair), then the centre ``size`` is cropped. ``resize=None``
      skips the resize and only crops.
    * ``resize="exact"``: the whole image is resized to ``size`` (``(size, size)`` for
      an int, else ``(h, w)``), aspect ratio not kept, no crop. This is
      ``T.Resize((224, 224))`` as used in notebook 000.

    Resizing uses :func:`resize` (Pillow bilinear with antialias, 8-bit path for
    photos). Files and 8-bit images match torchvision's PIL pipeline exactly until
    the normalisation; after it, agreement is within a few float32 ulps (tests use
    an absolute tolerance of 1e-6 on values of magnitude <= 2.7).

    Args:
      images: one image or a list of them. An image is a file path, a PIL image
        (converted to RGB), an (H, W, 3) uint8 array (0..255) or an (H, W, 3) float
        array (0..1). A 4-D (N, H, W, 3) array is read as N images.
      size: output size, an int (square) or ``(h, w)``.
      resize: an int (shorter side) or ``(h, w)`` to resize before the centre crop,
        ``None`` to only crop, or ``"exact"``; see above.
      via: how float arrays reach Pillow, see :func:`resize`.
      scale: "imagenet" (default) normalizes with ImageNet's mean and std; "unit" keeps
        values in [0, 1] (the bundled digits model's input).
      grey: average the three channels into one, in [0, 1] (implies ``scale="unit"``).

    Returns:
      (N, h, w, 3) float32 numpy array; (N, h, w, 1) with ``grey``.

    Raises:
      FileNotFoundError, ValueError, TypeError: an input is missing, unreadable, of
        the wrong shape or dtype, a float image is outside [0, 1], or an option is
        invalid.
    """
    resize_to = resize
    if scale not in ("imagenet", "unit"):
        raise InputError(f"unknown scale {scale!r}; expected 'imagenet' or 'unit'")
    if not (resize_to is None or resize_to == "exact"):
        if isinstance(resize_to, str):
            raise InputError(f"resize must be an int, an (h, w) pair, None or 'exact', got {resize_to!r}")
        _check_size(resize_to, "resize")
    _check_size(size, "size")
    if isinstance(images, (np.ndarray, jax.Array)) and np.ndim(images) == 4:
        items: list[ImageLike] = list(np.asarray(images))
    elif isinstance(images, (list, tuple)):
        items = list(images)
    else:
        items = [images]
    if not items:
        raise InputError("expected at least one image, got an empty sequence")
    batch = [
        _preprocess_one(_as_array(item, i), size, resize_to, via, scale, bool(grey))
        for i, item in enumerate(items)
    ]
    return np.stack(batch).astype(np.float32)


def image_folder(path: PathLike) -> Path:
    """``path`` as a Path, if it is a folder; FileNotFoundError / NotADirectoryError that
    say what was expected otherwise."""
    folder = Path(path)
    if not folder.exists():
        raise FileNotFoundError(f"expected a folder of images, but nothing exists at '{folder}'")
    if not folder.is_dir():
        raise NotADirectoryError(f"expected a folder of images, got the file '{folder}'")
    return folder


def load_folder(
    path: PathLike,
    size: Size = 224,
    *,
    resize: Size | Literal["exact"] | None = 256,
    extensions: Sequence[str] = IMAGE_EXTENSIONS,
) -> tuple[np.ndarray, list[Path]]:
    """Reads every image file of a folder into one preprocessed batch.

    Files are those directly in ``path`` (not in sub-folders) whose suffix, in any
    case, is in ``extensions``; they are sorted by file name.

    Args:
      path: the folder.
      size: output size, see :func:`preprocess`.
      resize: resize before cropping, see :func:`preprocess`.
      extensions: file suffixes to read, with the dot.

    Returns:
      ``(x, paths)``: x is the (N, h, w, 3) float32 batch from :func:`preprocess`,
      paths the N files in the same order.

    Raises:
      FileNotFoundError: ``path`` does not exist.
      NotADirectoryError: ``path`` is a file.
      ValueError: the folder holds no image file, or one of them cannot be read.
    """
    folder = image_folder(path)
    suffixes = {e.lower() for e in extensions}
    paths = sorted(
        (p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in suffixes),
        key=lambda p: p.name,
    )
    if not paths:
        raise InputError(
            f"expected image files ({', '.join(sorted(suffixes))}) in '{folder}', found none"
        )
    return preprocess(paths, size, resize=resize), paths


# --------------------------------------------------------------------------- bundled assets


def _asset(name: str) -> Traversable:
    return importlib.resources.files("jaxviz") / "assets" / name


def sample_names() -> tuple[str, ...]:
    """Names of the bundled sample photographs, for :func:`sample_image`."""
    return tuple(_SAMPLES)


def sample_image(name: str = "chelsea") -> np.ndarray:
    """A bundled CC0 photograph (from scikit-image's sample data).

    ``"chelsea"``: a tabby cat, 300 x 451 (H x W). ``"coffee"``: a cup of coffee,
    400 x 600.

    Args:
      name: one of :func:`sample_names`.

    Returns:
      (H, W, 3) float32 array in [0, 1] (values ``k / 255``, like :func:`load_image`).

    Raises:
      ValueError: ``name`` is not a bundled sample.
    """
    if name not in _SAMPLES:
        raise InputError(
            f"unknown sample image {name!r}; expected one of {', '.join(sample_names())}"
        )
    with importlib.resources.as_file(_asset(_SAMPLES[name])) as file:
        return load_image(file)


@functools.cache
def imagenet_classes() -> tuple[str, ...]:
    """The 1000 ImageNet-1k class names, in index order (torchvision's names).

    Returns:
      Tuple of 1000 strings: index 0 is ``"tench"``, index 999 ``"toilet tissue"``.
    """
    text = _asset("imagenet_classes.txt").read_text(encoding="utf-8")
    names = tuple(text.splitlines())
    if len(names) != 1000:
        raise RuntimeError(
            f"the bundled imagenet_classes.txt should hold 1000 names, it holds {len(names)}"
        )
    return names


def decode_predictions(
    logits: np.ndarray | jax.Array,
    top: int = 5,
    *,
    names: Sequence[str] | None = None,
) -> list[list[tuple[int, str, float]]]:
    """The most probable classes of each example, with softmax probabilities.

    Args:
      logits: (N, C) or (C,) class scores (pre-softmax). A (C,) vector is read as a
        batch of one.
      top: how many classes to return per example (at most C).
      names: the C class names; default :func:`imagenet_classes` (C = 1000).

    Returns:
      One list per example of ``(class_index, name, probability)``, most probable
      first; ties are listed by increasing class index. Probabilities are computed in
      float64.

    Raises:
      ValueError: ``logits`` is not 1-D or 2-D, its class axis does not match
        ``names``, or ``top`` is not in [1, C].
    """
    z = np.asarray(logits, dtype=np.float64)
    if z.ndim == 1:
        z = z[None]
    if z.ndim != 2:
        raise InputError(f"expected logits of shape (N, C) or (C,), got shape {np.shape(logits)}")
    labels = imagenet_classes() if names is None else tuple(names)
    if z.shape[1] != len(labels):
        raise InputError(
            f"expected {len(labels)} logits per example (one per class name), got {z.shape[1]}"
        )
    if isinstance(top, bool) or not isinstance(top, (int, np.integer)) or not 1 <= top <= z.shape[1]:
        raise InputError(f"top must be an int in [1, {z.shape[1]}], got {top!r}")
    z = z - z.max(axis=1, keepdims=True)
    p = np.exp(z)
    p /= p.sum(axis=1, keepdims=True)
    order = np.argsort(-p, axis=1, kind="stable")[:, :top]
    return [[(int(i), labels[i], float(row[i])) for i in idx] for row, idx in zip(p, order)]


# --------------------------------------------------------------------------- digits

DIGITS_SIZE = 28
DIGITS_TEST_FRACTION = 0.2
DIGITS_SPLIT_SEED = 0


@functools.lru_cache(maxsize=4)
def _digits_arrays(size: int) -> tuple[np.ndarray, np.ndarray]:
    try:
        from sklearn.datasets import load_digits
    except ImportError as e:
        raise ImportError("jaxviz.data.digits reads scikit-learn's bundled handwritten digits: "
                          "pip install scikit-learn (or 'jaxviz[digits]')") from e
    bunch = load_digits()
    images = bunch.images.astype(np.float32) / 16.0          # (1797, 8, 8) in [0, 1]
    x = jax.image.resize(to_device(images[..., None], copy=False), (len(images), size, size, 1), "linear")
    x = np.clip(np.asarray(x, np.float32), 0.0, 1.0)
    x.setflags(write=False)
    labels = bunch.target.astype(np.int32)
    labels.setflags(write=False)
    return x, labels


def digits_split() -> tuple[np.ndarray, np.ndarray]:
    """Indices (train, test) of the held-out split used for the bundled digits model: a
    seeded permutation (seed 0) of scikit-learn's 1,797 digits, the last 20 % held out."""
    order = np.random.default_rng(DIGITS_SPLIT_SEED).permutation(1797)
    n_test = int(round(1797 * DIGITS_TEST_FRACTION))
    return np.sort(order[:-n_test]), np.sort(order[-n_test:])


def digits(split: str = "test", size: int = DIGITS_SIZE) -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's bundled handwritten digits as model-ready arrays.

    The 8x8 images (values 0..16) are scaled to [0, 1] and upsampled bilinearly to
    ``size`` x ``size``: what ``jv.load("lenet_digits")`` takes, with no normalization.

    Args:
      split: "train" (1,437 digits), "test" (the 360 held out when the bundled model was
        trained; see :func:`digits_split`) or "all".
      size: output side in pixels.

    Returns:
      ``(x, labels)``: (N, size, size, 1) float32 in [0, 1] and (N,) int32 classes 0..9
      (read-only arrays).

    Raises:
      ValueError: unknown split or a size below 8.
      ImportError: scikit-learn is not installed.
    """
    if split not in ("train", "test", "all"):
        raise InputError(f"unknown split {split!r}; expected 'train', 'test' or 'all'")
    if isinstance(size, bool) or not isinstance(size, int) or size < 8:
        raise InputError(f"expected size as an int >= 8, got {size!r}")
    x, labels = _digits_arrays(size)
    if split == "all":
        return x, labels
    idx = digits_split()[0 if split == "train" else 1]
    return x[idx], labels[idx]


def place_on_canvas(x: np.ndarray, canvas: int | tuple[int, int],
                    positions: np.ndarray) -> np.ndarray:
    """Each image of ``x (N, h, w, C)`` pasted at ``positions[n] = (top, left)`` on a blank
    (zero) canvas of side ``canvas`` (or ``(H, W)``): (N, H, W, C).

    Raises:
      InputError: a position puts an image outside the canvas.
    """
    x = np.asarray(x)
    ch, cw = (canvas, canvas) if isinstance(canvas, int) else (int(canvas[0]), int(canvas[1]))
    positions = np.asarray(positions, np.int64).reshape(-1, 2)
    n, h, w = x.shape[:3]
    if len(positions) != n:
        raise InputError(f"expected one (top, left) position per image, {n}; got {len(positions)}")
    if (positions < 0).any() or (positions[:, 0] + h > ch).any() or (positions[:, 1] + w > cw).any():
        raise InputError(f"positions must keep each {h}x{w} image inside the {ch}x{cw} "
                         f"canvas (0 <= top <= {ch - h}, 0 <= left <= {cw - w})")
    out = np.zeros((n, ch, cw, *x.shape[3:]), x.dtype)
    for i, (top, left) in enumerate(positions):
        out[i, top:top + h, left:left + w] = x[i]
    return out

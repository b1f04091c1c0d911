"""Layer embeddings: a population of inputs through each layer, as points in the plane.

Each example's activation at a layer is reduced to one vector (:func:`features`: the
spatial mean or max of each channel, or the whole map flattened), the vectors of a
population are projected to two dimensions (:func:`project`: PCA or t-SNE), and how
well the layer separates the classes is scored by k-nearest-neighbour accuracy, in the
layer's own space and in the projection (:func:`knn_accuracy`). :func:`layer_embeddings`
does all three for a list of layers, and :func:`draw_layers` shows the same points
through successive layers in one figure, one panel per layer::

    import jaxviz as jv
    from jaxviz.analysis import embeddings

    model, variables = jv.load("lenet_digits")
    x, y = jv.data.digits("all")
    layers = ["conv1", "relu2", "conv3", "gmp", "logits"]
    embs = embeddings.layer_embeddings(model, variables, x, y, layers, method="tsne")
    jv.render.save_png(embeddings.draw_layers(embs, y), "layers.png")

Features are computed in batches by one jitted program per batch shape (the pooling runs
on the device), and only the pooled vectors come back to the host: memory grows with
the number of examples times the feature size, never with the size of a layer's maps.

scikit-learn and openTSNE are imported only when a projection or a score is asked for
(``pip install 'jaxviz[analysis]'``); tqdm, for the progress bar, only if it is there.

References:
  van der Maaten & Hinton, "Visualizing Data using t-SNE", JMLR 9, 2008 (t-SNE).
  Poličar, Stražar & Zupan, "openTSNE: a modular Python library for t-SNE dimensionality
  reduction and embedding", Journal of Statistical Software 109(3), 2024 (openTSNE, the
  default t-SNE backend here: the faster of the two on the 1,797 digits, see
  ``benchmarks/bench_embeddings.py``).
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable, Sequence
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image, ImageDraw, ImageFont

from jaxviz import capture, checks, render
from jaxviz import static as static_lib
from jaxviz.errors import InputError, InputTypeError

__all__ = ["DEFAULT_TSNE_BACKEND", "Embedding", "METHODS", "PALETTE", "POOLS", "TSNE_BACKENDS",
           "draw", "draw_layers", "features", "knn_accuracy", "layer_embeddings", "project"]

POOLS: tuple[str, ...] = ("mean", "max", "flatten")
"""How :func:`features` reduces one example's map (H, W, C) to a vector."""

METHODS: tuple[str, ...] = ("pca", "tsne")
"""The projections :func:`project` offers."""

TSNE_BACKENDS: tuple[str, ...] = ("opentsne", "sklearn")
"""The t-SNE implementations :func:`project` can call."""

DEFAULT_TSNE_BACKEND = "opentsne"
"""openTSNE on every core: on the 1,797 digits' pooled features of lenet_digits (10-d logits,
32-d relu2), 2.9 s and 2.9 s against scikit-learn's 3.4 s and 4.3 s on 2 CPU cores (1.2x
and 1.5x faster); on 6,272-d flattened maps scikit-learn's exact neighbour search wins,
4.4 s against 5.3 s. Single-threaded, openTSNE is the slower of the two (4.4 s, 4.5 s).
``benchmarks/bench_embeddings.py`` measures it."""

PALETTE: tuple[tuple[int, int, int], ...] = (
    (31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
    (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207),
)
"""The ten Tableau colours (matplotlib's ``tab10``), 8-bit RGB: label ``l`` (an int >= 0)
is drawn in ``PALETTE[l % 10]``."""

_HINT = "pip install 'jaxviz[analysis]'"


class Embedding(NamedTuple):
    """One layer's population, as :func:`layer_embeddings` returns it.

    Attributes:
      layer: the layer name as given.
      dim: length of each example's feature vector.
      points: (N, 2) float64, the projection of the features.
      knn: k-NN accuracy (cross-validated) in the layer's feature space.
      knn_2d: the same in the 2-D projection.
    """

    layer: str
    dim: int
    points: np.ndarray
    knn: float
    knn_2d: float


def _require(module: str, package: str) -> Any:
    """``import module``, or an ImportError that says how to install it."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise ImportError(f"{package} is needed for this ({e}); install it with {_HINT}") from e


# --------------------------------------------------------------------------- features


def _pool(a: jax.Array, pool: str) -> jax.Array:
    """(N, ...) -> (N, D): rank-2 outputs as they are, maps reduced over their middle axes."""
    if a.ndim == 1:
        return a[:, None]
    if a.ndim == 2:
        return a
    if pool == "flatten":
        return a.reshape(a.shape[0], -1)
    axes = tuple(range(1, a.ndim - 1))
    return a.mean(axis=axes) if pool == "mean" else a.max(axis=axes)


def _pooled(model: nn.Module, names: tuple[str, ...], pool: str, variables: Any,
            x: jax.Array) -> dict[str, jax.Array]:
    _, acts = capture.run(model, variables, x, names, logits=False)
    return {name: _pool(acts[name], pool) for name in names}


# compiled once per model (by value, or by structure for an unhashable model,
# jaxviz/static.py), layers, pooling and batch shape
_pooled_jit = static_lib.jit(_pooled, 3)


def _layer_list(layers: Any) -> tuple[str, ...]:
    return tuple(capture.layer_list(layers))


def _batches(images: Any, model: nn.Module, batch_size: int):
    """(total or None, iterator of (checked batch on the device, its number of real examples)).

    An array is sliced in ``batch_size`` rows, its last partial slice padded (with copies of
    its last example) to ``batch_size`` so that one program serves every slice; an iterable
    is taken batch by batch as it comes."""
    if isinstance(images, (np.ndarray, jax.Array)):
        checks.shape(images, model, what="images")
        n = int(images.shape[0])
        size = min(batch_size, n)

        def sliced():
            for start in range(0, n, size):
                xb = checks.batch(images[start:start + size], model,
                                  what=f"images[{start}:{min(start + size, n)}]")
                real = int(xb.shape[0])
                if real < size:
                    xb = jnp.concatenate(
                        [xb, jnp.broadcast_to(xb[-1:], (size - real, *xb.shape[1:]))])
                yield xb, real

        return n, sliced()
    if isinstance(images, (str, bytes)) or not isinstance(images, Iterable):
        raise InputTypeError(f"expected images as an array (N, H, W, C) or an iterable of such "
                             f"batches, got {type(images).__name__}")

    def each():
        for i, batch in enumerate(images):
            xb = checks.batch(batch, model, what=f"images batch {i}")
            yield xb, int(xb.shape[0])

    return None, each()


def _progress_bar(enabled: bool, total: int | None):
    """A tqdm bar counting examples, or None (not asked for, or tqdm is not installed)."""
    if not enabled:
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return None
    return tqdm(total=total, unit="img", desc="features", leave=False)


@checks.boundary
def features(model: nn.Module, variables: Any, images: Any, layers: str | Sequence[str], *,
             pool: str = "mean", batch_size: int = 256,
             progress: bool = True) -> dict[str, np.ndarray]:
    """Each example's activation at each layer, reduced to one vector, over a population.

    The images go through the model in batches: one jitted program per batch shape runs
    the forward pass to the last requested layer and pools on the device, and only the
    pooled vectors are copied to the host, so memory does not grow with the layers' maps.
    A second call with the same batch shape compiles nothing.

    Args:
      model: one of our models, or any Linen module (:func:`jaxviz.activations`).
      variables: the model's variables.
      images: an array (N, H, W, C), cut into slices of ``batch_size`` (the last one padded
        to ``batch_size`` so every slice runs the same program; the padding's features are
        dropped; one batch of N if N <= ``batch_size``), or an iterable of such arrays (batches of any sizes, taken as they come;
        every batch's images of the same shape).
      layers: a layer name or a sequence of names (paths or aliases).
      pool: ``"mean"`` (each channel's spatial mean: (N, C)), ``"max"`` (its spatial
        maximum) or ``"flatten"`` (the whole map: (N, H * W * C)). A layer whose output is
        already (N, D) (a linear layer, a global pool) is kept as it is.
      batch_size: rows per slice of an array ``images``.
      progress: show a progress bar (``tqdm.auto``, if tqdm is installed).

    Returns:
      ``{layer: (N, D) array}`` keyed by the names as given, in the layers' dtype.

    Raises:
      InputError: an unknown ``pool``, a ``batch_size`` below 1, no layers, no batches, a
        batch that does not fit the model (:func:`jaxviz.checks.batch`), or a batch whose
        images differ in shape from the first batch's.
      InputTypeError: ``images`` neither an array nor an iterable of arrays; a batch that is
        not a float array.
      LayerError: a name that is not a layer of ``model``.
    """
    if pool not in POOLS:
        raise InputError(f"unknown pool {pool!r}; expected one of {', '.join(map(repr, POOLS))}")
    batch_size = checks.positive_int(batch_size, "batch_size")
    names = _layer_list(layers)
    total, batches = _batches(images, model, batch_size)
    out: dict[str, Any] = {}
    first_shape = None
    done = 0

    def store(pending) -> None:
        nonlocal done
        outs, real = pending
        for name in names:
            host = np.asarray(outs[name])[:real]
            if total is not None:
                if name not in out:
                    out[name] = np.empty((total, *host.shape[1:]), host.dtype)
                out[name][done:done + real] = host
            else:
                out.setdefault(name, []).append(np.array(host, copy=True))
        done += real
        if bar is not None:
            bar.update(real)

    bar = _progress_bar(progress, total)
    try:
        pending = None
        for xb, real in batches:
            if first_shape is None:
                first_shape = tuple(xb.shape[1:])
                table = capture.layer_names(model, (1, *first_shape), partial=True)
                capture.resolve(model, names, table)  # unknown names fail before any work
            elif tuple(xb.shape[1:]) != first_shape:
                raise InputError(f"every batch's images must have the first batch's shape "
                                 f"{first_shape}; got a batch of shape {tuple(xb.shape)}")
            outs = _pooled_jit(model, names, pool, variables, xb)
            if pending is not None:  # copy the previous batch while this one runs
                store(pending)
            pending = (outs, real)
        if pending is None:
            raise InputError("images held no batches: expected an array (N, H, W, C) or a "
                             "non-empty iterable of batches")
        store(pending)
    finally:
        if bar is not None:
            bar.close()
    if total is None:
        return {name: np.concatenate(out[name]) for name in names}
    return {name: out[name] for name in names}


# --------------------------------------------------------------------------- projection and scores


def _matrix(x: Any, what: str = "features") -> np.ndarray:
    a = np.asarray(checks.as_array(x, what))
    if a.ndim != 2:
        raise InputError(f"expected {what} as a matrix (N, D), one row per example; got shape "
                         f"{a.shape}")
    if a.dtype.kind not in "iuf":
        raise InputTypeError(f"expected {what} as a numeric array, got dtype {a.dtype}")
    if a.shape[0] < 2 or a.shape[1] < 1:
        raise InputError(f"expected {what} with at least 2 examples and 1 feature; got shape "
                         f"{a.shape}")
    checks.finite(a, what)
    return a


def _labels(labels: Any, n: int) -> np.ndarray:
    y = np.asarray(checks.as_array(labels, "labels"))
    if y.ndim != 1:
        raise InputError(f"expected labels as a vector (N,), one per example; got shape "
                         f"{y.shape}")
    if len(y) != n:
        raise InputError(f"expected one label per example, {n}; got {len(y)} labels")
    return y


def project(features: Any, method: str = "pca", *, seed: int = 0, perplexity: float = 30.0,
            backend: str = DEFAULT_TSNE_BACKEND, n_jobs: int = -1, **kwargs: Any) -> np.ndarray:
    """Feature vectors (N, D) as points in the plane (N, 2).

    ``"pca"``: the first two principal components, scikit-learn's
    ``PCA(n_components=2, random_state=seed).fit_transform(features)``.

    ``"tsne"``: t-SNE (van der Maaten & Hinton 2008), which keeps neighbours together and
    says little about distances between clusters. With ``backend="opentsne"`` (the
    default; Poličar et al.'s openTSNE, the faster here):
    ``openTSNE.TSNE(n_components=2, perplexity=perplexity, random_state=seed,
    n_jobs=n_jobs).fit(features)``; with ``backend="sklearn"``:
    ``sklearn.manifold.TSNE(...).fit_transform(features)`` with the same arguments. The
    result is the backend's, bit for bit.

    Both are deterministic for a given seed, with one catch: for N >= 1,000 openTSNE finds
    neighbours approximately (Annoy), and its trees depend on ``n_jobs``, so with the
    default ``n_jobs=-1`` the points differ between machines with different core counts.
    Pass a fixed ``n_jobs`` (or ``backend="sklearn"``, whose result does not depend on its
    threads) for a figure that must repeat everywhere.

    Args:
      features: (N, D) numeric matrix, one row per example (:func:`features`).
      method: ``"pca"`` or ``"tsne"``.
      seed: the backend's ``random_state``.
      perplexity: t-SNE's effective number of neighbours (ignored by PCA).
      backend: ``"opentsne"`` or ``"sklearn"``, for ``"tsne"``.
      n_jobs: threads for t-SNE (-1: every core; see above).
      **kwargs: more arguments for the backend's constructor (``PCA``, ``openTSNE.TSNE``,
        ``sklearn.manifold.TSNE``).

    Returns:
      (N, 2) float64.

    Raises:
      InputError: an unknown method or backend; features that are not an (N, D) matrix of
        finite values with N >= 2 (and D >= 2 for PCA); a perplexity not below N.
      ImportError: scikit-learn or openTSNE is not installed (the message says how).
    """
    if method not in METHODS:
        raise InputError(f"unknown method {method!r}; expected one of "
                         f"{', '.join(map(repr, METHODS))}")
    if method == "tsne" and backend not in TSNE_BACKENDS:
        raise InputError(f"unknown t-SNE backend {backend!r}; expected one of "
                         f"{', '.join(map(repr, TSNE_BACKENDS))}")
    f = _matrix(features)
    n, d = f.shape
    if method == "pca":
        if d < 2:
            raise InputError(f"PCA to 2 dimensions needs features with at least 2 columns; got "
                             f"shape {f.shape}")
        decomposition = _require("sklearn.decomposition", "scikit-learn")
        out = decomposition.PCA(n_components=2, random_state=seed, **kwargs).fit_transform(f)
        return np.asarray(out, np.float64)
    if not 0 < perplexity < n:
        raise InputError(f"t-SNE needs 0 < perplexity < N (the number of examples, {n}); got "
                         f"perplexity {perplexity}")
    if backend == "opentsne":
        openTSNE = _require("openTSNE", "openTSNE")
        tsne = openTSNE.TSNE(n_components=2, perplexity=perplexity, random_state=seed,
                             n_jobs=n_jobs, **kwargs)
        return np.asarray(tsne.fit(f), np.float64)
    manifold = _require("sklearn.manifold", "scikit-learn")
    tsne = manifold.TSNE(n_components=2, perplexity=perplexity, random_state=seed,
                         n_jobs=n_jobs, **kwargs)
    return np.asarray(tsne.fit_transform(f), np.float64)


def knn_accuracy(features: Any, labels: Any, *, k: int = 5, folds: int = 5,
                 seed: int = 0) -> float:
    """How well a space separates the classes: k-nearest-neighbour accuracy (Euclidean),
    by stratified ``folds``-fold cross-validation.

    Equal to ``cross_val_score(KNeighborsClassifier(n_neighbors=k), features, labels,
    cv=StratifiedKFold(folds, shuffle=True, random_state=seed)).mean()``.

    Args:
      features: (N, D) numeric matrix.
      labels: (N,) class of each row.
      k: neighbours that vote.
      folds: cross-validation folds (>= 2).
      seed: the folds' shuffle.

    Returns:
      Mean accuracy over the folds, in [0, 1].

    Raises:
      InputError: features not an (N, D) finite matrix, labels not one per row, ``folds``
        more than the largest class, or ``k`` more than a training fold holds.
      ImportError: scikit-learn is not installed.
    """
    f = _matrix(features)
    y = _labels(labels, len(f))
    k = checks.positive_int(k, "k")
    folds = checks.positive_int(folds, "folds", 2)
    largest = int(np.unique(y, return_counts=True)[1].max())
    if folds > largest:
        raise InputError(f"{folds}-fold stratified cross-validation needs a class with at least "
                         f"{folds} examples; the largest has {largest}")
    train = len(f) - -(-len(f) // folds)
    if k > train:
        raise InputError(f"k={k} neighbours, but a training fold holds only {train} examples "
                         f"({len(f)} in all, {folds} folds)")
    neighbors = _require("sklearn.neighbors", "scikit-learn")
    selection = _require("sklearn.model_selection", "scikit-learn")
    cv = selection.StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    scores = selection.cross_val_score(neighbors.KNeighborsClassifier(n_neighbors=k), f, y,
                                       cv=cv)
    return float(np.mean(scores))


@checks.boundary
def layer_embeddings(model: nn.Module, variables: Any, images: Any, labels: Any,
                     layers: str | Sequence[str], *, pool: str = "mean", method: str = "pca",
                     batch_size: int = 256, seed: int = 0, k: int = 5, folds: int = 5,
                     progress: bool = True, **kwargs: Any) -> list[Embedding]:
    """A labelled population through several layers: per layer, its 2-D projection and how
    well it separates the classes.

    The features of every layer come from one streamed pass (:func:`features`); each
    layer's are projected (:func:`project`) and scored by k-NN accuracy in their own space
    and in the projection (:func:`knn_accuracy`). Draw the result with :func:`draw_layers`.

    Args:
      model, variables, images, layers, pool, batch_size, progress: as :func:`features`.
      labels: (N,) class of each example.
      method: ``"pca"`` or ``"tsne"`` (:func:`project`).
      seed: the projection's and the folds' seed.
      k, folds: the k-NN score's neighbours and cross-validation folds.
      **kwargs: more for :func:`project` (``perplexity``, ``backend``, ``n_jobs``, ...).

    Returns:
      One :class:`Embedding` ``(layer, dim, points, knn, knn_2d)`` per layer, in the order
      given.

    Raises:
      InputError: labels not one per example, and as :func:`features`, :func:`project` and
        :func:`knn_accuracy`.
    """
    if method not in METHODS:  # before the forward passes
        raise InputError(f"unknown method {method!r}; expected one of "
                         f"{', '.join(map(repr, METHODS))}")
    if isinstance(images, (np.ndarray, jax.Array)):  # labels checked before the work
        checks.shape(images, model, what="images")
        _labels(labels, int(images.shape[0]))
    feats = features(model, variables, images, layers, pool=pool, batch_size=batch_size,
                     progress=progress)
    n = len(next(iter(feats.values())))
    y = _labels(labels, n)
    out = []
    for name, f in feats.items():
        points = project(f, method, seed=seed, **kwargs)
        out.append(Embedding(name, int(f.shape[1]), points,
                             knn_accuracy(f, y, k=k, folds=folds, seed=seed),
                             knn_accuracy(points, y, k=k, folds=folds, seed=seed)))
    return out


# --------------------------------------------------------------------------- drawing


def _colour_indices(labels: np.ndarray) -> np.ndarray:
    """Index into :data:`PALETTE` per label: ``l % 10`` for ints >= 0, else the label's rank
    among the distinct labels, mod 10."""
    if labels.dtype.kind in "iub" and (labels.size == 0 or labels.min() >= 0):
        return labels.astype(np.int64) % len(PALETTE)
    return np.unique(labels, return_inverse=True)[1].reshape(-1) % len(PALETTE)


def _text_width(font: Any, text: str) -> int:
    return int(np.ceil(ImageDraw.Draw(Image.new("RGB", (1, 1))).textlength(text, font=font)))


def draw(points: Any, labels: Any, *, size: int = 320, title: str | None = None,
         radius: int | None = None, legend: bool = True, margin: int = 6,
         background: int = 255) -> np.ndarray:
    """A scatter plot of 2-D points, coloured by label, with a legend; PIL only.

    The points' bounding box is scaled by one factor on both axes (distances keep their
    proportions) and centred in the plot area: the canvas less ``margin`` on every side,
    the title's lines above and the legend's column on the right. The y axis points up.
    Each point is a filled disc of its label's colour (:data:`PALETTE`; label ``l`` >= 0
    gets ``PALETTE[l % 10]``, other labels by rank), drawn in a fixed shuffled order so
    that no class always lies on top.

    Args:
      points: (N, 2) finite coordinates.
      labels: (N,) class of each point.
      size: side of the square image in pixels (>= 64).
      title: text above the plot (``"\\n"`` for more lines), or None.
      radius: disc radius in pixels (None: ``max(1, size // 160)``; 0: one pixel).
      legend: list each label with its colour down the right side (as many as fit).
      margin: pixels of background around the plot.
      background: grey level 0..255 of the canvas.

    Returns:
      (size, size, 3) uint8.

    Raises:
      InputError: points not (N, 2) finite with N >= 1, labels not one per point, a size
        too small for the title and legend, or a bad radius, margin or background.
    """
    p = np.asarray(checks.as_array(points, "points"))
    if p.ndim != 2 or p.shape[1] != 2 or p.shape[0] == 0 or p.dtype.kind not in "iuf":
        raise InputError(f"expected points as a numeric (N, 2) array with N >= 1, got shape "
                         f"{p.shape} and dtype {p.dtype}")
    checks.finite(p, "points")
    y = _labels(labels, len(p))
    size = checks.positive_int(size, "size", 64)
    radius = max(1, size // 160) if radius is None else checks.positive_int(radius, "radius", 0)
    margin = checks.positive_int(margin, "margin", 0)
    if not 0 <= background <= 255:
        raise InputError(f"expected background as a grey level 0..255, got {background}")
    font = ImageFont.load_default()
    line = int(ImageDraw.Draw(Image.new("RGB", (1, 1))).textbbox((0, 0), "Ag|", font=font)[3]) + 2
    ink = (0, 0, 0) if background > 127 else (255, 255, 255)
    image = Image.new("RGB", (size, size), (background,) * 3)
    canvas = ImageDraw.Draw(image)

    top = margin
    if title:
        for text in str(title).split("\n"):
            canvas.text((margin, top), text, fill=ink, font=font)
            top += line
        top += 2
    right = size - margin
    colours = _colour_indices(y)
    classes, first = np.unique(y, return_index=True)
    fits = max(0, (size - top - margin) // line)
    if legend and fits:
        shown = list(zip(classes, first))[:fits]
        if len(classes) > fits:
            shown = shown[:-1]  # a row for "..."
        swatch = max(4, line - 6)
        texts = [str(c) for c, _ in shown] + (["..."] if len(shown) < len(classes) else [])
        width = swatch + 4 + max(_text_width(font, t) for t in texts) if texts else 0
        right -= width + margin
        x0 = right + margin
        for row, (c, i) in enumerate(shown):
            y0 = top + row * line
            canvas.rectangle([x0, y0 + 2, x0 + swatch - 1, y0 + 1 + swatch],
                             fill=PALETTE[colours[i]])
            canvas.text((x0 + swatch + 4, y0), str(c), fill=ink, font=font)
        if len(shown) < len(classes):
            canvas.text((x0 + swatch + 4, top + len(shown) * line), "...", fill=ink, font=font)
    bottom = size - margin
    w, h = right - margin - 2 * radius - 1, bottom - top - 2 * radius - 1
    if w < 8 or h < 8:
        raise InputError(f"size {size} leaves no room to plot beside the title and legend: "
                         f"use a larger size, a shorter title or legend=False")

    lo, hi = p.min(axis=0).astype(np.float64), p.max(axis=0).astype(np.float64)
    span = hi - lo
    scale = min(w / span[0] if span[0] > 0 else np.inf, h / span[1] if span[1] > 0 else np.inf)
    scale = 1.0 if not np.isfinite(scale) else scale
    centre = (lo + hi) / 2
    cols = np.rint(margin + radius + w / 2 + (p[:, 0] - centre[0]) * scale).astype(np.int64)
    rows = np.rint(top + radius + h / 2 - (p[:, 1] - centre[1]) * scale).astype(np.int64)
    for i in np.random.default_rng(0).permutation(len(p)):
        c, r, colour = int(cols[i]), int(rows[i]), PALETTE[colours[i]]
        if radius == 0:
            canvas.point((c, r), fill=colour)
        else:
            canvas.ellipse([c - radius, r - radius, c + radius, r + radius], fill=colour)
    return np.asarray(image, np.uint8).copy()


def draw_layers(embeddings: Sequence[Embedding], labels: Any, *, ncols: int = 4,
                size: int = 240, pad: int = 4) -> np.ndarray:
    """The same points through successive layers in one figure: one :func:`draw` panel per
    embedding, titled with the layer's name and dimension and its k-NN accuracies (in the
    full feature space / in the 2-D projection), tiled by :func:`jaxviz.render.grid`.

    Args:
      embeddings: :func:`layer_embeddings`' list.
      labels: (N,) class of each point (the same for every layer).
      ncols: panels per row.
      size: side of each panel in pixels.
      pad: pixels between and around the panels.

    Returns:
      (rows * size + (rows + 1) * pad, cols * size + (cols + 1) * pad, 3) uint8, with
      ``cols = min(ncols, len(embeddings))`` and ``rows = ceil(len(embeddings) / cols)``.

    Raises:
      InputError: no embeddings, or as :func:`draw`.
      InputTypeError: an entry that is not an :class:`Embedding`.
    """
    embeddings = list(embeddings)
    if not embeddings:
        raise InputError("expected at least one Embedding (layer_embeddings' list), got none")
    for e in embeddings:
        if not isinstance(e, Embedding):
            raise InputTypeError(f"expected Embedding entries (layer_embeddings' list), got "
                                 f"{type(e).__name__}")
    ncols = checks.positive_int(ncols, "ncols")
    panels = [draw(e.points, labels, size=size,
                   title=f"{e.layer} ({e.dim}-d)\nkNN {e.knn:.3f} full / {e.knn_2d:.3f} 2-D")
              for e in embeddings]
    return render.grid(np.stack(panels), ncols, pad)

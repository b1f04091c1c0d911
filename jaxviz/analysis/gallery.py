"""A static web gallery of a model's channels: files and HTML, no server.

``build(model, variables, ["conv1", "conv2"], "gallery/", images=stream)`` writes::

    gallery/index.html                 the model, the settings, every layer with a strip
    gallery/<layer>/index.html         every channel of the layer as a thumbnail
    gallery/<layer>/NNNN.html          one channel: its feature visualization, its
                                       strongest image patches with their DeconvNet
                                       projections (with ``images``), its expanded weights
                                       from the most connected channels of the previous
                                       layer (linked), and links to its neighbours
    gallery/<layer>/img/NNNN*.png      the pictures, next to the pages
    gallery/<layer>/sweep.npz          the feature visualizations (the sweep's checkpoint)
    gallery/<layer>/top_k.npz          the dataset examples' values, images and positions
    gallery/<layer>/settings.json      what the layer's files were made with

What each picture is: the image that maximizes the channel's spatial mean
(:func:`jaxviz.synthesis.sweep`, Olah et al. 2017); the patches of the ``k`` strongest
activations over the image set and their projections to pixels (Zeiler & Fergus 2014,
:func:`jaxviz.analysis.examples.example_pictures`); expanded weights (Olah et al. 2020,
:func:`jaxviz.analysis.weights.expanded_weights`), ranked by their L2 norm. A layer
without an earlier layer of its kind shows the channel's filter instead.

Every page and picture is written to a temporary file and renamed. A rerun with the same
settings reuses what is finished: the sweep resumes from its checkpoint, the dataset
top-k and the expanded weights are read back, and a channel whose page exists is not
drawn again. A layer whose settings changed is made again from scratch.
"""

from __future__ import annotations

import html
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import numpy as np

from jaxviz import capture, render
from jaxviz import synthesis as synthesis_lib
from jaxviz.analysis import examples as examples_lib
from jaxviz.analysis import maps as maps_lib
from jaxviz.analysis import weights as weights_lib
from jaxviz.errors import InputError
from jaxviz.models.modules import input_spec

__all__ = ["Figure", "build", "connection_width", "layer_folder"]

THUMB = 96          # CSS pixels of a thumbnail
PICTURE = 256       # CSS pixels of a channel's feature visualization
STRIP = 8           # thumbnails per layer on the index page
CHUNK = 16          # channels whose example pictures are drawn per call

CSS = """
body { font: 15px/1.45 system-ui, sans-serif; margin: 1.5em auto; max-width: 72em;
       padding: 0 1em; color: #222; }
h1, h2, h3 { font-weight: 600; } h1 { font-size: 1.5em; }
a { color: #0b5cad; text-decoration: none; } a:hover { text-decoration: underline; }
nav { margin: .5em 0 1em; color: #666; } nav a { margin-right: .8em; }
.grid { display: flex; flex-wrap: wrap; gap: 8px; }
.cell { width: 96px; text-align: center; font-size: 12px; color: #555; }
.cell img { width: 96px; height: 96px; display: block; }
img { image-rendering: pixelated; background: #eee; }
.picture { width: 256px; height: 256px; }
.sheet { max-width: 100%; height: auto; }
.meta { color: #666; font-size: 13px; }
table { border-collapse: collapse; } td, th { padding: 2px 10px 2px 0; text-align: left; }
figure { margin: 1em 0; } figcaption { color: #555; font-size: 13px; }
"""


class Figure(NamedTuple):
    """A picture the index page shows above the layers: its title, its file (relative to
    the gallery's folder) and a caption."""

    title: str
    path: str
    caption: str = ""


def layer_folder(layer: str) -> str:
    """The folder name of ``layer`` inside a gallery: ``features.3`` -> ``features_3``."""
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in layer)


# --------------------------------------------------------------------------- writing


def _write_bytes(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _write_page(path: Path, title: str, body: str) -> None:
    page = (f"<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\n"
            f"<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
            f"<title>{html.escape(title)}</title>\n<style>{CSS}</style></head>\n"
            f"<body>\n{body}\n</body></html>\n")
    _write_bytes(path, page.encode("utf-8"))


def _save_npz(path: Path, **arrays: Any) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _e(text: Any) -> str:
    return html.escape(str(text))


def _progress(items: Iterable[Any], total: int, desc: str, quiet: bool):
    if quiet:
        return items
    from tqdm.auto import tqdm

    # on a terminal only (disable=None): elsewhere bar text would sit before later lines
    return tqdm(items, total=total, desc=desc, file=sys.stderr, leave=False, dynamic_ncols=True,
                disable=None)


def _unit_uint8(images: np.ndarray) -> np.ndarray:
    return np.round(255 * np.clip(images, 0, 1)).astype(np.uint8)


# --------------------------------------------------------------------------- one layer


class _Layer(NamedTuple):
    name: str          # as the user gave it
    path: str          # the module path
    alias: str | None
    channels: int
    folder: str


def _layers(model: nn.Module, layers: Sequence[str], shape: tuple[int, ...]) -> list[_Layer]:
    table = capture.layer_names(model, shape, partial=True)
    paths = capture.resolve(model, list(layers), table)
    info = {t.path: t for t in table}
    out = []
    for name, path in zip(layers, paths):
        t = info[path]
        if len(t.shape) != 4:
            raise InputError(f"layer {name!r} has output shape {t.shape}; a gallery needs "
                             f"layers with spatial maps (N, H, W, C)")
        out.append(_Layer(name, path, t.alias, t.shape[-1], layer_folder(t.alias or path)))
    if len({layer.path for layer in out}) != len(out):
        raise InputError(f"layers {list(layers)} name one layer twice")
    return out


def _previous(model: nn.Module, layer: _Layer, shape: tuple[int, ...]) -> str | None:
    table = capture.layer_names(model, shape, partial=True)
    return weights_lib._neighbour(model, table, layer.path, -1)


def _settings_match(folder: Path, settings: dict) -> bool:
    try:
        return json.loads((folder / "settings.json").read_text()) == settings
    except (OSError, ValueError):
        return False


def _channel_name(layer: _Layer) -> str:
    return layer.alias or layer.path


def _nav(links: Sequence[tuple[str, str]]) -> str:
    return "<nav>" + "".join(f'<a href="{_e(h)}">{_e(t)}</a>' for t, h in links) + "</nav>"


def _layer_index(layer: _Layer, channels: Sequence[int], title: str, others: list[_Layer]) -> str:
    links = [("\u2190 all layers", "../index.html")] + [
        (_channel_name(o), f"../{o.folder}/index.html") for o in others if o != layer]
    cells = "".join(
        f'<a class="cell" href="{c:04d}.html"><img src="img/{c:04d}.png" alt="channel {c}">'
        f'{c}</a>' for c in channels)
    return (f"<h1>{_e(title)}: {_e(_channel_name(layer))}</h1>{_nav(links)}"
            f'<p class="meta">{_e(layer.path)}, {layer.channels} channels; each image maximizes '
            f"one channel's mean activation. Click one for its page.</p>"
            f'<div class="grid">{cells}</div>')


def _channel_page(layer: _Layer, c: int, channels: Sequence[int], title: str, *,
                  examples: bool, connections: weights_lib.Connections | None,
                  previous: _Layer | None, filter_image: bool, previous_channels: set[int]) -> str:
    i = list(channels).index(c)
    links = [("\u2190 all layers", "../index.html"), (f"{_channel_name(layer)}", "index.html")]
    if i > 0:
        links.append((f"\u2039 channel {channels[i - 1]}", f"{channels[i - 1]:04d}.html"))
    if i + 1 < len(channels):
        links.append((f"channel {channels[i + 1]} \u203a", f"{channels[i + 1]:04d}.html"))
    parts = [f"<h1>{_e(title)}: {_e(_channel_name(layer))}, channel {c}</h1>", _nav(links),
             "<h2>Feature visualization</h2>",
             f'<img class="picture" src="img/{c:04d}.png" alt="feature visualization of '
             f'channel {c}">',
             '<p class="meta">The image that maximizes this channel\'s mean activation '
             "(optimized from noise with random jitter, scaling and rotation).</p>"]
    if examples:
        parts += ["<h2>Strongest image patches</h2>",
                  f'<img class="sheet" src="img/{c:04d}_examples.png" alt="dataset examples">',
                  '<p class="meta">Top row: the receptive fields of the strongest activations '
                  "over the image set, strongest first; bottom row: each activation projected "
                  "back to pixels (DeconvNet).</p>"]
    if connections is not None:
        rows = []
        for ch, norm, total in zip(connections.channels, connections.norm, connections.total):
            name = f"channel {int(ch)}"
            if previous is not None and int(ch) in previous_channels:
                name = f'<a href="../{previous.folder}/{int(ch):04d}.html">{name}</a>'
            kind = "excites" if total > 0 else "inhibits"
            rows.append(f"<tr><td>{name}</td><td>{norm:.3g}</td><td>{total:+.3g} ({kind})</td></tr>")
        shown_name = _channel_name(previous) if previous is not None else connections.layer
        parts += [f"<h2>Most connected channels of {_e(shown_name)}</h2>",
                  f'<img class="sheet" src="img/{c:04d}_weights.png" alt="expanded weights">',
                  '<p class="meta">Expanded weights: how each channel of the previous layer, at '
                  "each position of a window, moves this channel's centre unit (ReLUs as the "
                  "identity, max pools as average pools); red excites, blue inhibits.</p>",
                  "<table><tr><th>channel</th><th>L2 norm</th><th>sum</th></tr>"
                  + "".join(rows) + "</table>"]
    elif filter_image:
        parts += ["<h2>Filter</h2>",
                  f'<img class="sheet" src="img/{c:04d}_filter.png" alt="filter">',
                  '<p class="meta">The first layer reads pixels: its filter, scaled to '
                  "\u00b13 standard deviations of the layer's kernel.</p>"]
    return "\n".join(parts)


def _index(title: str, about: Sequence[str], layers: list[_Layer],
           shown: dict[str, list[int]], figures: Sequence[Figure]) -> str:
    parts = [f"<h1>{_e(title)}</h1>"]
    parts += [f'<p class="meta">{_e(line)}</p>' for line in about]
    for f in figures:
        parts.append(f'<figure><h2>{_e(f.title)}</h2><img class="sheet" src="{_e(f.path)}" '
                     f'alt="{_e(f.title)}"><figcaption>{_e(f.caption)}</figcaption></figure>')
    parts.append("<h2>Layers</h2>")
    for layer in layers:
        cells = "".join(
            f'<a class="cell" href="{layer.folder}/{c:04d}.html"><img src="{layer.folder}/img/'
            f'{c:04d}.png" alt="channel {c}">{c}</a>' for c in shown[layer.path][:STRIP])
        parts.append(f'<h3><a href="{layer.folder}/index.html">{_e(_channel_name(layer))}</a> '
                     f'<span class="meta">{_e(layer.path)}, {layer.channels} channels</span></h3>'
                     f'<div class="grid">{cells}</div>')
    return "\n".join(parts)


def connection_width(model: nn.Module, previous: str, layer: str,
                     shape: Sequence[int]) -> int:
    """How many positions of ``previous`` one unit of ``layer`` reads along a side: the
    two layers' receptive fields in input pixels, ``(size(layer) - size(previous)) /
    stride(previous) + 1`` (LeNet conv1 -> conv2 across a 2x2 pool: 10; AlexNet conv1 ->
    conv2: 11)."""
    from jaxviz.analysis import receptive

    outer = receptive.receptive_field(model, layer, tuple(shape))
    inner = receptive.receptive_field(model, previous, tuple(shape))
    return max(1, (max(outer.size) - max(inner.size)) // max(inner.stride) + 1)


# --------------------------------------------------------------------------- build


def build(model: nn.Module, variables: Any, layers: str | Sequence[str],
          out: str | os.PathLike, *, images: Any = None, channels: Any = None,
          key: jax.Array | None = None, steps: int = 256, size: int | None = None,
          k: int = 9, width: int | None = None, connections: int = 8, batch_size: int = 64,
          title: str | None = None, about: Sequence[str] = (), figures: Sequence[Figure] = (),
          settings: dict | None = None, quiet: bool = False) -> Path:
    """Writes a gallery of ``layers`` to the folder ``out`` and returns its ``index.html``.

    Args:
      model, variables: one of our models (or a Linen model with an ``input_spec``).
      layers: a layer name or a list of them (paths or aliases), each with spatial maps.
      out: the folder (created).
      images: an image set for the dataset examples (anything :func:`jaxviz.analysis.
        top_k` takes and :func:`jaxviz.analysis.examples.patches` can index: an array or a
        :func:`jaxviz.stream.images` stream); None leaves them out.
      channels: the channels of every layer to show (default: all; an int n means the
        first n).
      key: the sweep's key (default ``jax.random.key(0)``).
      steps, size: the sweep's steps and image size (default size: the model's own up to
        64 px, else 128).
      k: dataset examples per channel.
      width: the expanded weights' window, in the previous layer's positions (default:
        :func:`connection_width`, all the positions one unit reads there).
      connections: channels of the previous layer shown per channel.
      batch_size: images per batch for the dataset examples.
      title, about: the index page's title and lines under it.
      figures: :class:`Figure` s the index shows above the layers (their files are the
        caller's, inside ``out``).
      settings: anything else that decides the pictures (the weights' name, the image
        set's); a layer made with other settings is made again.
      quiet: no progress bars.
    """
    layers = [layers] if isinstance(layers, str) else list(layers)
    if not layers:
        raise InputError("expected at least one layer for the gallery")
    spec = input_spec(model)
    if spec is None or spec.kind != "image":
        raise InputError("a gallery needs a model of images with an input_spec() (ours)")
    size = size or (spec.size if spec.size <= 64 else 128)
    shape = (1, spec.size, spec.size, spec.channels)
    found_layers = _layers(model, layers, shape)
    key = jax.random.key(0) if key is None else key
    folder = Path(out)
    title = title or f"{type(model).__name__} gallery"
    shown: dict[str, list[int]] = {}
    for layer in found_layers:
        if channels is None:
            shown[layer.path] = list(range(layer.channels))
        elif isinstance(channels, (int, np.integer)):
            shown[layer.path] = list(range(min(int(channels), layer.channels)))
        else:
            picked = [int(c) for c in channels]
            bad = [c for c in picked if not 0 <= c < layer.channels]
            if bad:
                raise InputError(f"channel {bad[0]} is out of range: {layer.name!r} has "
                                 f"{layer.channels} channels")
            shown[layer.path] = picked
    by_path = {layer.path: layer for layer in found_layers}
    if folder.exists() and not folder.is_dir():
        raise InputError(f"{str(folder)!r} is a file; expected a folder for the gallery")
    folder.mkdir(parents=True, exist_ok=True)
    # a stream is read once per layer, each time from where it stood when given
    start = getattr(images, "position", None)
    common = {"steps": steps, "size": size, "k": k, "width": width, "connections": connections,
              "key": np.asarray(jax.random.key_data(key)).tolist(), "images": images is not None,
              **(settings or {})}

    for layer in found_layers:
        chans = shown[layer.path]
        where = folder / layer.folder
        layer_settings = {**common, "layer": layer.path, "channels": chans}
        if where.exists() and not _settings_match(where, layer_settings):
            shutil.rmtree(where)
        (where / "img").mkdir(parents=True, exist_ok=True)
        _write_bytes(where / "settings.json", json.dumps(layer_settings, indent=1).encode())
        todo = [c for c in chans if not (where / f"{c:04d}.html").exists()]
        name = _channel_name(layer)

        # feature visualizations: the sweep resumes from its checkpoint
        if todo:
            if quiet:
                progress: Any = False
            else:
                from tqdm.auto import tqdm

                bar = tqdm(total=1, desc=f"{name}: feature visualizations", file=sys.stderr,
                           leave=False, dynamic_ncols=True, disable=None)

                def progress(done, total, seconds, bar=bar):
                    bar.total, bar.n = total, done
                    bar.refresh()

            pictures = np.asarray(synthesis_lib.sweep(
                model, variables, layer.path, chans, key=key, steps=steps, size=size,
                progress=progress, checkpoint=where / "sweep.npz"))
            if not quiet:
                bar.close()
            if spec.channels == 1:  # shown as the model sees them
                pictures = np.repeat(np.asarray(synthesis_lib.optimize.grey(pictures)), 3, -1)
            for c, picture in zip(chans, _unit_uint8(pictures)):
                render.save_png(picture, where / "img" / f"{c:04d}.png")

        # dataset examples: the top-k once per layer, pictures per chunk of channels
        found = None
        if images is not None and todo:
            saved = where / "top_k.npz"
            if saved.exists():
                with np.load(saved) as f:
                    found = examples_lib.TopK(f["values"], f["ids"], f["positions"],
                                              layer.path, int(f["count"]))
            else:
                if start is not None:
                    images.position = start
                batches = images
                if start is not None:  # a stream: a bar over its batches
                    batches = _progress(images, len(images), f"{name}: top-{k}", quiet)
                found = examples_lib.top_k(model, variables, batches, layer.path, k=k,
                                           batch_size=batch_size)
                _save_npz(saved, values=found.values, ids=found.ids, positions=found.positions,
                          count=np.asarray(found.count))

        # expanded weights from the previous layer of the same kind, once per layer
        previous = _previous(model, layer, shape) if todo else None
        expanded = None
        if previous is not None:
            w = width or connection_width(model, previous, layer.path, shape[1:])
            expanded = np.asarray(weights_lib.expanded_weights(model, variables, previous,
                                                               layer.path, width=w))
        kernel = None
        if previous is None and todo:
            try:
                kernel = maps_lib.kernel(model, variables, layer.path)
            except (KeyError, ValueError):
                kernel = None

        chunks = [todo[i:i + CHUNK] for i in range(0, len(todo), CHUNK)]
        for chunk in _progress(chunks, len(chunks), f"{name}: channel pages", quiet):
            drawn = {}
            if found is not None:
                drawn = examples_lib.example_pictures(model, variables, images, found, chunk,
                                                      batch_size=batch_size, scale=spec.scale)
            for c in chunk:
                if c in drawn:
                    render.save_png(drawn[c], where / "img" / f"{c:04d}_examples.png")
                ranked = None
                if expanded is not None:
                    ranked = weights_lib._ranked(previous, np.moveaxis(expanded[..., c], -1, 0),
                                                 connections)
                    render.save_png(weights_lib.draw_connections({"previous": ranked}),
                                    where / "img" / f"{c:04d}_weights.png")
                elif kernel is not None:
                    tiles = maps_lib.filter_tiles(kernel, filters=[c])
                    render.save_png(maps_lib.draw_filters(tiles, zoom=8),
                                    where / "img" / f"{c:04d}_filter.png")
                prev_layer = by_path.get(previous) if previous is not None else None
                body = _channel_page(
                    layer, c, chans, title, examples=c in drawn, connections=ranked,
                    previous=prev_layer, filter_image=kernel is not None,
                    previous_channels=set(shown.get(previous, [])) if previous else set())
                _write_page(where / f"{c:04d}.html", f"{name} channel {c}", body)
        _write_page(where / "index.html", f"{title}: {name}",
                    _layer_index(layer, chans, title, found_layers))
    index = folder / "index.html"
    _write_page(index, title, _index(title, about, found_layers, shown, figures))
    return index

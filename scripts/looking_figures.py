"""The views that need no optimization, one PNG each: filters, activation maps, expanded
weights with a unit's top connections, NMF factors of weights, layer embeddings, and
dataset examples (the patches that excite a channel most, with their projections).

    python scripts/looking_figures.py --out DIR [--model lenet_digits] [--weights W]
                                      [--unit 3] [--method pca|tsne]

By default on the bundled trained digits model (offline, about 30 s on 2 cores):
the README's pictures are ``--out docs/looking``. An ImageNet model (``--model alexnet
--weights DEFAULT``) shows the same views on the bundled photograph; the embeddings
and the dataset examples need an image set and are made for the digits model only.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import jax
import numpy as np

import jaxviz as jv
from jaxviz.analysis import embeddings, maps, weights
from jaxviz.models.modules import input_spec

ZOOM = 12


ASCII = str.maketrans({"∈": " in ", "μ": "mean", "σ": "std", "±": "+-"})


def titled(image: np.ndarray, title: str) -> np.ndarray:
    """``image`` with a caption under it (in ASCII: PIL's built-in font has no Greek),
    widened to fit the caption."""
    title = title.translate(ASCII)
    width = max(image.shape[1], 6 * len(title) + 8)
    image = np.pad(image, ((0, 0), (0, width - image.shape[1]), (0, 0)), constant_values=255)
    return jv.render.grid(image[None], 1, pad=4, labels=[title])


def stack(images: list[np.ndarray], pad: int = 6) -> np.ndarray:
    """Images one above the other, left-aligned on white."""
    width = max(a.shape[1] for a in images)
    rows = [np.pad(a, ((0, pad), (0, width - a.shape[1]), (0, 0)), constant_values=255)
            for a in images]
    return np.concatenate(rows, axis=0)


def upscale(a: np.ndarray, zoom: int) -> np.ndarray:
    return np.repeat(np.repeat(a, zoom, axis=-3), zoom, axis=-2)


def example_input(model, name: str):
    spec = input_spec(model)
    if spec.scale == "imagenet":
        return jv.data.preprocess(jv.data.sample_image("chelsea"))
    x, _ = jv.data.digits("test")
    return x[:1]


def filters_figure(model, variables) -> np.ndarray:
    convs = maps.conv_layers(model, variables)
    order = weights.first_layer_order(model, variables)
    first = maps.kernel(model, variables, convs[0])
    parts = [titled(maps.draw_filters(maps.filter_tiles(first, filters=order), ncols=16),
                    f"{convs[0]}: filters ordered by the first principal component of the "
                    f"next layer's |weights|")]
    second = maps.kernel(model, variables, convs[1])
    parts.append(titled(maps.draw_filters(maps.filter_tiles(second, filters=12, channels=12)),
                        f"{convs[1]}: filter (row) by input channel (column), ±3σ of the kernel"))
    return stack(parts)


def activations_figure(model, variables, x) -> np.ndarray:
    convs = maps.conv_layers(model, variables)
    found = maps.activation_maps(model, variables, x, convs[0])
    lines = maps.statistics(found)
    parts = []
    for i, (path, a) in enumerate(found.items()):
        scale = "sigmas" if i == 0 else "pos_sigmas"
        parts.append(titled(maps.draw_maps(a, scale=scale, ncols=16), lines[path]))
    return stack(parts)


def connections_figure(model, variables, unit: int) -> np.ndarray:
    convs = maps.conv_layers(model, variables)
    layer = convs[1]
    found = weights.top_connections(model, variables, layer, unit, previous=convs[0],
                                    next=convs[2] if len(convs) > 2 else None, width=7, k=8)
    sheet = weights.draw_connections(found, zoom=ZOOM)
    return titled(sheet, f"{layer} channel {unit}: its most strongly connected channels "
                         f"(expanded weights, 7 x 7, red excites, blue inhibits)")


def nmf_figure(model, variables, key) -> np.ndarray:
    """NMF of the expanded weights from the second conv to the third over the third's
    units: two factors, each a direction in the second conv's channels (shown by
    feature visualization) and a signed spatial map per unit."""
    convs = maps.conv_layers(model, variables)
    source, target = convs[1], convs[min(2, len(convs) - 1)]
    e = np.asarray(weights.expanded_weights(model, variables, source, target, width=9))
    units = np.arange(min(16, e.shape[-1]))
    w = e[..., units].transpose(3, 0, 1, 2)  # (units, W, W, C_from)
    factors = weights.nmf(weights.posneg(w, axis=0), 2, max_iter=2000)
    n = len(units)
    signed = factors.maps[:n] - factors.maps[n:]  # (units, W, W, 2)
    size = min(input_spec(model).size or 64, 96)
    # each factor as the image that most excites its direction at the centre position
    # (lucid's direction_neuron); a grey model sees the mean of the channels, so show that
    shown = jv.synthesis.visualize(
        model, variables, jv.objectives.direction(source, factors.components.astype(np.float32),
                                                  position="centre"),
        key=key, batch=2, size=size, steps=256)
    images = np.asarray(shown.images)
    if input_spec(model).channels == 1:
        images = np.repeat(images.mean(-1, keepdims=True), 3, -1)
    parts = []
    for f in range(2):
        image = upscale(images[f], max(1, 84 // size))
        heat = upscale(weights.weight_heatmap(signed[..., f]), 6)
        labels = [str(u) for u in units]
        row = jv.render.grid(heat, ncols=n, pad=3, labels=labels)
        head = jv.render.grid(np.asarray(image * 255, np.uint8)[None], 1, pad=3,
                              labels=[f"factor {f}"])
        h = max(head.shape[0], row.shape[0])
        head = np.pad(head, ((0, h - head.shape[0]), (0, 0), (0, 0)), constant_values=255)
        row = np.pad(row, ((0, h - row.shape[0]), (0, 0), (0, 0)), constant_values=255)
        parts.append(np.concatenate([head, row], axis=1))
    return titled(stack(parts), f"NMF of {source} -> {target} expanded weights (9 x 9) over "
                                f"{target}'s first {n} units: each factor's direction in "
                                f"{source}, and its signed weight in each unit")


def embeddings_figure(model, variables, method: str) -> np.ndarray:
    x, y = jv.data.digits("all")
    layers = ["conv1", "relu2", "relu3", "gmp", "logits"]
    found = embeddings.layer_embeddings(model, variables, x, y, layers, method=method,
                                        progress=False)
    return titled(embeddings.draw_layers(found, y, ncols=5, size=220),
                  f"the 1,797 digits through the layers ({method.upper()}; title: 5-NN "
                  f"accuracy in the layer / in 2-D)")


def examples_figure(model, variables, layer: str = "relu2", n: int = 6,
                    k: int = 9) -> np.ndarray:
    """Zeiler & Fergus's view over the 1,797 digits: for the ``n`` channels of ``layer``
    with the strongest activations (a ReLU layer has dead channels, all zero), the
    receptive-field patches of the 9 strongest activations (top row) and the DeconvNet
    projections of those single activations (bottom row)."""
    from jaxviz.analysis import examples, receptive

    x, _ = jv.data.digits("all")
    found = jv.analysis.top_k(model, variables, x, layer, k=k, batch_size=256)
    crops = examples.patches(x, model, found)
    proj = examples.projections(model, variables, x, found, batch_size=64)
    field = receptive.receptive_field(model, layer, x.shape[1:])
    c = found.ids.shape[0]
    channels = np.argsort(-found.values[:, 0], kind="stable")[:n]
    cropped = receptive.crop_patches(proj.reshape(-1, *x.shape[1:]), np.arange(c * k),
                                     found.positions.reshape(-1, 2), field).reshape(crops.shape)
    panels = [titled(examples.draw_examples(crops, cropped, channel=ch, scale="unit", zoom=6),
                     f"{layer} channel {ch}: top {k} of {found.count:,} digits "
                     f"({field.size[0]} px fields), projections below")
              for ch in channels]
    return stack(panels)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, type=Path, help="folder for the PNGs")
    p.add_argument("--model", default="lenet_digits")
    p.add_argument("--weights", default=None, help="as in jaxviz.load (ImageNet models)")
    p.add_argument("--unit", type=int, default=3, help="the unit whose connections are shown")
    p.add_argument("--method", choices=embeddings.METHODS, default="tsne")
    args = p.parse_args(argv)
    if not args.out.is_dir():
        p.error(f"--out {args.out} is not a folder")

    model, variables = jv.load(args.model, weights=args.weights)
    x = example_input(model, args.model)
    key = jax.random.key(0)
    figures = {
        "filters": lambda: filters_figure(model, variables),
        "activations": lambda: activations_figure(model, variables, x),
        "connections": lambda: connections_figure(model, variables, args.unit),
        "nmf": lambda: nmf_figure(model, variables, key),
    }
    if args.model == "lenet_digits":
        figures["embeddings"] = lambda: embeddings_figure(model, variables, args.method)
        figures["examples"] = lambda: examples_figure(model, variables)
    for name, make in figures.items():
        path = jv.render.save_png(make(), args.out / f"{name}.png")
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())

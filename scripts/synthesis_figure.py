"""Feature synthesis on the bundled digits model, as one PNG.

    python scripts/synthesis_figure.py [--steps 128] [--out docs/synthesis.png]

One image per class maximizing its logit (sigmoid pixels, Adam 0.1), captioned with the
probability the model gives that class: first row without a regularizer (the model is
certain, the images are noise to us), second row minus the course slides' multi-scale edge energy
(the digits appear, at lower certainty). Last rows: a sweep over the first channels of
conv3 (the spatial mean of the channel, no regularizer), one compiled program
for all of them. Each image is shown as the model sees it (the mean of its colour
channels), contrast-stretched. About 30 seconds on 2 CPU cores, no download.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax

import jaxviz as jv


def gray(t):
    """RGB images (N, H, W, 3) -> the model's one-channel input."""
    return t.mean(axis=-1, keepdims=True)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=128)
    p.add_argument("--channels", type=int, default=20, help="conv3 channels to show")
    p.add_argument("--scale", type=int, default=3, help="pixel repeat for display")
    p.add_argument("--out", default="docs/synthesis.png")
    args = p.parse_args(argv)
    jv.cpu.use_fast_convolutions()

    model, variables = jv.load("lenet_digits")
    pixels = jv.synthesis.param.Pixels(-0.5, 0.5, activation="sigmoid")
    edges = [(1.0, jv.synthesis.regularizers.edge_energy)]
    common = dict(key=jax.random.key(0), steps=args.steps, size=28, param=pixels,
                  transforms=None, optimizer=optax.adam(0.1), preprocess=gray)
    rows, labels = [], []
    for regularizers, what in [(None, "logit"), (edges, "- edges")]:
        images = gray(jv.synthesis.visualize(
            model, variables, jv.objectives.class_logit(jnp.arange(10)), batch=10,
            regularizers=regularizers, **common).images)
        probs = jax.nn.softmax(model.apply(variables, images), axis=-1)
        own = np.asarray(probs[jnp.arange(10), jnp.arange(10)])
        rows.append(images)
        labels += [f"{c} {what}: {q:.2f}" for c, q in enumerate(own)]
        print(f"class images ({what}): probabilities {np.round(own, 2).tolist()}")
    rows.append(gray(jv.synthesis.sweep(model, variables, "conv3", range(args.channels),
                                        progress=False, **common)))
    labels += [f"conv3 channel {c}" for c in range(args.channels)]

    tiles = np.concatenate([np.asarray(r) for r in rows])
    low = tiles.min(axis=(1, 2, 3), keepdims=True)
    high = tiles.max(axis=(1, 2, 3), keepdims=True)
    tiles = (tiles - low) / np.maximum(high - low, 1e-6)
    tiles = np.repeat(np.repeat(np.repeat(tiles, 3, axis=-1), args.scale, axis=1), args.scale, axis=2)
    figure = jv.render.grid((tiles * 255).round().astype(np.uint8), ncols=10, labels=labels)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    path = jv.render.save_png(figure, args.out)
    print(f"wrote {path} ({figure.shape[1]}x{figure.shape[0]})")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The attribution methods side by side on one photograph, as one PNG.

    python scripts/attribution_figure.py [--model alexnet] [--weights W] [--out FILE]

``--weights`` as in ``jaxviz.load`` (default: seeded random weights, which show how each
method routes the signal through the architecture, not what a trained network sees;
pass ``DEFAULT`` or a weight file for that). The target is the model's top class.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import jax
import numpy as np

import jaxviz as jv

CAM_LAYER = {"alexnet": "features.11", "googlenet": "inception4e"}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="alexnet")
    p.add_argument("--weights", default=None)
    p.add_argument("--image", default="chelsea", help="a bundled sample name or an image path")
    p.add_argument("--out", default="docs/attribution.png")
    args = p.parse_args(argv)

    model, variables = jv.load(args.model, weights=args.weights)
    image = (jv.data.sample_image(args.image) if args.image in jv.data.sample_names()
             else jv.data.load_image(args.image))
    x = jv.data.preprocess(image)
    target = int(np.argmax(np.asarray(jax.jit(model.apply)(variables, x))[0]))
    layer = CAM_LAYER.get(args.model, "pool5")
    A = jv.attribution
    signed = {
        "gradient": A.gradient(model, variables, x, target),
        "gradient x input": A.gradient_x_input(model, variables, x, target),
        "SmoothGrad (50, 0.15)": A.smoothgrad(model, variables, x, target, key=jax.random.key(0),
                                              samples=50, batch_size=10),
        "integrated gradients (32)": A.integrated_gradients(model, variables, x, target, steps=32,
                                                            batch_size=16),
        "DeconvNet": A.deconvnet(model, variables, x, target),
        "guided backprop": A.guided_backprop(model, variables, x, target),
    }
    photo = jv.render.to_uint8_image(x)
    tiles, labels = [photo[0]], [f"input (class {target})"]
    for name, m in signed.items():
        heat = jv.render.heatmap(jv.render.clip_percentile(jv.render.reduce_channels(m, "abs_sum")))
        tiles.append(heat[0])
        labels.append(name)
    cam = A.grad_cam(model, variables, x, target, layer=layer)
    tiles.append(jv.render.overlay(photo, jv.render.heatmap(jv.render.clip_percentile(cam)), 0.6)[0])
    labels.append(f"Grad-CAM ({layer})")
    occ = A.occlusion(model, variables, x, target, window=32, stride=16, batch_size=64)
    tiles.append(jv.render.heatmap(jv.render.clip_percentile(occ, symmetric=True), "diverging")[0])
    labels.append("occlusion (32, stride 16)")
    figure = jv.render.grid(np.stack(tiles), ncols=3, labels=labels)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    path = jv.render.save_png(figure, args.out)
    print(f"wrote {path} ({figure.shape[1]}x{figure.shape[0]})")
    return 0


if __name__ == "__main__":
    sys.exit(main())

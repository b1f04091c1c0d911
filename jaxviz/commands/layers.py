"""Print every layer of MODEL in forward order (path, alias, kind, a summary of its
output for one image), then the top-5 predictions.

Example::

    $ jaxviz layers alexnet --size 128
    weights: seeded random weights (seed 0): activations show the architecture, not learned features
    input:   bundled photograph 'chelsea' (jaxviz.data.sample_image), shorter side resized to 146, ...
    layer         alias    kind               output
    features.0    [conv1]  Conv2d             (1, 31, 31, 64) n=61504 x∈[-2.353, 2.074] μ=-0.010 σ=0.403
    ...
"""

from __future__ import annotations

import argparse
from typing import TextIO

import numpy as np

import jaxviz as jv
from jaxviz.commands import _common as c
from jaxviz.models.modules import input_spec

HELP = "every layer's output for one image, in forward order"
TOP = 5


def add_arguments(p: argparse.ArgumentParser) -> None:
    c.add_model(p)
    p.add_argument("--image", metavar="PATH", default=None,
                   help=f"image file; default: the bundled photograph {c.SAMPLE!r} (a held-out "
                        f"digit for the digits model)")
    c.add_size(p)


def _input(args: argparse.Namespace, spec, seed: int) -> tuple[np.ndarray, str]:
    if spec.kind == "vector":
        if args.image is not None or args.size is not None:
            raise ValueError(f"{args.model} takes {spec.describe()}, not images: drop "
                             f"--image and --size")
        x = np.random.default_rng(seed).standard_normal((1, spec.channels)).astype(np.float32)
        return x, f"seeded random point {np.array2string(x[0], precision=3)} (seed {seed})"
    return c.image_input(args.model, args.image, args.size, spec)


def run(args: argparse.Namespace, out: TextIO) -> int:
    # Everything cheap first: a typo should not wait for the weights.
    c.check_model(args)
    seed = args.seed or 0
    module = c.module(args.model)
    spec = input_spec(module)
    x, described = _input(args, spec, seed)
    jv.layer_names(module, x.shape)  # an input too small for the model fails here, at once
    model, variables = c.load(args)

    table = jv.layer_names(model, x.shape)
    acts = jv.activations(model, variables, x, [info.path for info in table])
    print(f"weights: {c.describe_weights(args.model, args.weights, seed)}", file=out)
    print(f"input:   {described}", file=out)
    rows = [("layer", "alias", "kind", "output")]
    rows += [(info.path, f"[{info.alias}]" if info.alias else "", info.kind,
              jv.render.summary(acts[info.path])) for info in table]
    for line in c.table(rows):
        print(line, file=out)

    # The last layer to finish is the classifier: its output is the logits.
    logits = np.asarray(acts[table[-1].path])
    classes = logits.shape[-1]
    names = None if classes == len(jv.data.imagenet_classes()) else [f"class {i}" for i in range(classes)]
    top = jv.data.decode_predictions(logits, top=min(TOP, classes), names=names)[0]
    caveat = " (meaningless: random weights)" if c.random_weights(args) else ""
    print(f"top-{len(top)} predictions{caveat}:", file=out)
    print("\n".join(c.table([(f"{p:7.2%}", str(i), name) for i, name, p in top])), file=out)
    return 0

"""The whole tour, offline, in a few minutes: a web gallery of the bundled trained digits
model (every channel of its three convolutions: feature visualizations, the strongest of
the 1,797 bundled digits with their DeconvNet projections, expanded weights to the
previous layer) with attribution sheets on its index page: every method on held-out
digits, and on the bundled photographs through AlexNet with seeded random weights (which
shows how each method routes the signal through the architecture, not what a trained
network sees). Needs no network and no download. Ends with the path of the page to open.

A rerun reuses the gallery's finished channels.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TextIO

import jax
import numpy as np

import jaxviz as jv
from jaxviz.commands import _common as c

HELP = "the digits model's gallery and attribution sheets, offline (the place to start)"
LAYERS = ("conv1", "conv2", "conv3")
DIGITS = 4          # held-out digits on the attribution sheet
PHOTO_SIZE = 160    # AlexNet's input side for the photographs' sheet
SAMPLES = 32        # SmoothGrad's noisy copies and integrated gradients' path points


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", metavar="DIR", default="jaxviz-demo",
                   help="output folder (created; default: jaxviz-demo)")
    p.add_argument("--steps", type=c.positive(), default=128,
                   help="optimization steps per feature visualization (default 128)")
    p.add_argument("--quick", action="store_true",
                   help="tiny settings to check the set-up in seconds: 4 channels per layer, "
                        "8 steps, 8 SmoothGrad samples and integrated-gradients points")


def _sheets(folder: Path, quiet: bool, samples: int) -> list:
    """The attribution sheets as PNGs under ``folder/sheets``; their gallery figures."""
    from jaxviz.analysis.gallery import Figure
    from jaxviz.commands import explain

    sheets = folder / "sheets"
    sheets.mkdir(parents=True, exist_ok=True)
    figures = []

    def sheet(model, variables, x, name: str) -> None:
        """Every method on ``x``, each image for its top class, as sheets/NAME.png."""
        picture = explain.sheet(model, variables, x, None, samples=samples, steps=samples,
                                progress=lambda m: c.progress(m, total=len(explain.METHODS),
                                                              desc=f"{name}: attribution",
                                                              quiet=quiet))
        jv.render.save_png(picture, sheets / f"{name}.png")

    model, variables = jv.load("lenet_digits")
    x, labels = jv.data.digits("test")
    pick = np.asarray([int(np.flatnonzero(labels == d)[0]) for d in (0, 3, 5, 8)][:DIGITS])
    sheet(model, variables, x[pick], "digits")
    figures.append(Figure(
        "Attribution: held-out digits", "sheets/digits.png",
        "The trained digits model on four held-out digits, each explained for the class it "
        "predicts: every attribution method of jaxviz.attribution side by side (jaxviz "
        "explain lenet_digits)."))

    model, variables = jv.load("alexnet")
    names = jv.data.sample_names()
    resize = round(PHOTO_SIZE * c.RESIZE_RATIO)
    photos = np.concatenate([jv.data.preprocess(jv.data.sample_image(n), PHOTO_SIZE,
                                                resize=resize) for n in names])
    sheet(model, variables, photos, "photographs")
    figures.append(Figure(
        "Attribution: the bundled photographs", "sheets/photographs.png",
        f"AlexNet with seeded random weights (no download) on the bundled photographs "
        f"({', '.join(names)}) at {PHOTO_SIZE} px, each explained for its top class: the maps "
        f"show how each method routes the signal through the architecture, not what a "
        f"trained network sees (jaxviz explain alexnet --weights DEFAULT shows that)."))
    return figures


def run(args: argparse.Namespace, out: TextIO) -> int:
    from jaxviz.analysis import gallery

    folder = c.out_folder(args.out)
    samples, steps = (8, 8) if args.quick else (SAMPLES, args.steps)
    figures = _sheets(folder, args.quiet, samples)
    model, variables = jv.load("lenet_digits")
    images = jv.data.digits("all")[0]
    index = gallery.build(
        model, variables, LAYERS, folder, images=images, batch_size=256, key=jax.random.key(0),
        steps=steps, channels=4 if args.quick else None, title="jaxviz demo: the bundled digits model",
        about=["A LeNet-style network trained on scikit-learn's handwritten digits, bundled "
               "with jaxviz. Each layer below links to a page per channel.",
               f"Image set: the {len(images):,} bundled digits. Feature visualizations: "
               f"{steps} Adam steps from noise, shown in grey as the model sees them."],
        figures=figures, settings={"demo": True}, quiet=args.quiet)
    print(f"wrote the gallery of {', '.join(LAYERS)} and {len(figures)} attribution sheets "
          f"to {folder}", file=out)
    print(f"open {index.resolve()}", file=out)
    return 0

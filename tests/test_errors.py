"""Every documented mistake gets its documented error (docs/errors.md).

``CASES`` is the table of docs/errors.md, row by row: each bad input, the error type it
must raise and words its message must hold (what was expected, what came, the fix).
``test_docs_table_is_this_table`` keeps the two in step. A generated check then sends
the same family of bad batches through every public function (the list from
test_compile.py, itself checked against the modules' ``__all__``), so that no public
function lets a framework error (a Flax scope error, ``ZeroDivisionError``, a bare
``KeyError``) reach the user.
"""

from __future__ import annotations

import importlib
import inspect

import pickle
import re
from pathlib import Path
from unittest import mock

import flax.linen as nn
import jax
import numpy as np
import pytest

import jaxviz as jv
from conftest import numpy_random_alexnet
from jaxviz.analysis import adversarial, embeddings, maps, metrics, receptive, weights
from jaxviz.commands import COMMANDS
from jaxviz.errors import InputError, InputTypeError, LayerError, ModelError, WeightsError
from jaxviz.models.modules import Conv2d, MaxPool2d, ReLU, Sequential
from test_cli import run as run_command
from test_compile import CALLS, NEEDS_RULES

ROOT = Path(__file__).resolve().parents[1]
A = jv.attribution
KEY = jax.random.key(0)


class Subjects:
    """The models the cases run on, made once: AlexNet (10 classes, numpy-random, 64 px
    inputs), the bundled digits model, the 2-D MLP and a user's Sequential without a
    ``rules`` field."""

    def __init__(self, tmp: Path):
        self.tmp = tmp
        self.alexnet, self.av, self.x = numpy_random_alexnet()
        self.lenet, self.lv = jv.load("lenet_digits")
        self.digits = np.random.default_rng(0).random((2, 28, 28, 1), dtype=np.float32)
        self.mlp, self.mv = jv.load("mlp2d")
        self.user = Sequential([Conv2d(4, 3), ReLU(), MaxPool2d(2, 2), Conv2d(4, 3)])
        self.uv = self.user.init(KEY, self.x)
        self.masked = Masked()
        self.maskedv = self.masked.init(KEY, np.ones((2, 8, 8, 4), np.float32), np.ones((2, 1, 1, 1)))
        lenet_file = tmp / "lenet.safetensors"
        jv.models.weights.save_weights(self.lv, lenet_file, model=self.lenet)
        self.lenet_file = lenet_file
        truncated = tmp / "truncated.safetensors"
        truncated.write_bytes(lenet_file.read_bytes()[:300])
        self.truncated = truncated
        evil = tmp / "evil.pth"
        evil.write_bytes(pickle.dumps({"features.0.weight": _Payload(tmp / "ran")}))
        self.evil = evil
        (tmp / "notes.txt").write_text("a file where a command wants a folder\n")

    def nan(self):
        x = np.array(self.x)
        x[1, 5, 6, 2] = np.nan
        return x


class Masked(nn.Module):
    """A user's model that takes a mask beside x."""

    @nn.compact
    def __call__(self, x, mask):
        return nn.Dense(2)((x * mask).mean(axis=(1, 2)))


class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


class CommandError(Exception):
    """What a failed ``jaxviz`` command amounts to: exit status 2, one error line."""


def _never_loaded(*args, **kwargs):
    raise AssertionError(f"weights loaded before the mistake was found: {args}")


def cli(argv):
    """The case that runs ``jaxviz argv`` (``DIR`` in an argument: the temporary folder,
    which holds the file ``notes.txt``); its ``argv`` is kept for the checks below. The
    mistake must be found before any weights load, and nothing may be written."""
    def run(s):
        before = sorted(s.tmp.rglob("*"))
        with mock.patch.object(jv, "load", _never_loaded):
            code, _, err = run_command([a.replace("DIR", str(s.tmp)) for a in argv])
        assert sorted(s.tmp.rglob("*")) == before, f"jaxviz {' '.join(argv)} wrote files"
        # one "jaxviz: error: ..." line, or argparse's usage and "jaxviz layers: error: ..."
        last = err.strip().splitlines()[-1] if err.strip() else ""
        if code == 2 and re.match(r"jaxviz( [\w-]+)?: error: ", last) and "Traceback" not in err:
            raise CommandError(last)
        raise AssertionError(f"jaxviz {' '.join(argv)}: exit {code}, stderr {err!r}")
    run.argv = argv
    return run


O = jv.objectives
S = jv.synthesis

# id -> (where, bad input, call(subjects), error type, words the message must hold)
CASES = {
    # --- loading
    "load-unknown-name": ("loading", "a model name with a typo", lambda s: jv.load("alexnt"),
                          InputError, ["unknown model 'alexnt'", "Did you mean alexnet"]),
    "load-weights-type": ("loading", "weights= of the wrong type",
                          lambda s: jv.load("alexnet", weights=3),
                          InputTypeError, ["expected weights as None", "got int 3"]),
    "load-config-field": ("loading", "a configuration field the architecture lacks",
                          lambda s: jv.load("lenet", depth=3),
                          InputTypeError, ["no configuration field depth", "num_classes"]),
    "load-missing-file": ("loading", "a weight file that does not exist",
                          lambda s: jv.load("alexnet", weights=s.tmp / "none.safetensors"),
                          FileNotFoundError, ["no weight file"]),
    "load-other-architecture": ("loading", "a weight file of another architecture",
                                lambda s: jv.load("alexnet", weights=s.lenet_file),
                                WeightsError, ["holds lenet weights, not alexnet"]),
    "load-truncated": ("loading", "a truncated .safetensors file",
                       lambda s: jv.load("lenet", weights=s.truncated), WeightsError, ["truncated"]),
    "load-pickle-code": ("loading", "a .pth pickle that would run code",
                         lambda s: jv.load("alexnet", weights=s.evil),
                         WeightsError, ["refused", "weights_only=True"]),
    # --- capture and every function's input batch
    "layer-unknown": ("capture", "a layer name the model lacks",
                      lambda s: jv.activations(s.alexnet, s.av, s.x, "conv9"),
                      LayerError, ["no layer 'conv9'", "Closest: conv5"]),
    "layer-not-str": ("capture", "a layer given as an int",
                      lambda s: jv.activations(s.alexnet, s.av, s.x, 3),
                      InputTypeError, ["layer names are strings", "got 3"]),
    "layer-too-small": ("capture", "an input too small for the model",
                        lambda s: jv.layer_names(s.alexnet, 8),
                        InputError, ["cannot run on inputs of shape (1, 8, 8, 3)", "partial=True"]),
    "layer-past-failure": ("capture", "a layer a small input never reaches",
                           lambda s: jv.activations(s.alexnet, s.av, s.x[:, :8, :8], "fc8"),
                           LayerError, ["no layer 'fc8' among the 2 layers", "larger input"]),
    "x-nchw": ("capture", "an NCHW batch",
               lambda s: jv.activations(s.alexnet, s.av, s.x.transpose(0, 3, 1, 2), "conv1"),
               InputError, ["NCHW", "x.transpose(0, 2, 3, 1)"]),
    "x-grey-into-rgb": ("attribution", "a grey batch into an RGB model",
                        lambda s: A.gradient(s.alexnet, s.av, s.x[..., :1], 1),
                        InputError, ["takes (N, H, W, 3)", "np.repeat(x, 3, axis=-1)"]),
    "x-rgb-into-grey": ("attribution", "an RGB batch into the digits model",
                        lambda s: A.gradient(s.lenet, s.lv, np.repeat(s.digits, 3, -1), 1),
                        InputError, ["takes (N, H, W, 1) grey images", "mean(axis=-1"]),
    "x-one-image": ("attribution", "one image without its batch axis",
                    lambda s: A.gradient(s.alexnet, s.av, s.x[0], 1),
                    InputError, ["one image of shape (64, 64, 3)", "x[None]"]),
    "x-empty": ("attribution", "an empty batch",
                lambda s: A.smoothgrad(s.alexnet, s.av, s.x[:0], 1, key=KEY),
                InputError, ["empty batch"]),
    "x-uint8": ("attribution", "uint8 pixels", lambda s: A.gradient(
        s.alexnet, s.av, (s.x * 50).astype(np.uint8), 1), InputTypeError, ["float array", "uint8"]),
    "x-not-array": ("attribution", "a dict for x", lambda s: A.gradient(s.alexnet, s.av, {}, 1),
                    InputTypeError, ["expected x as an array, got dict"]),
    "x-nan": ("attribution", "NaN in the batch", lambda s: A.gradient(s.alexnet, s.av, s.nan(), 1),
              InputError, ["not finite", "1 NaN", "(1, 5, 6, 2)"]),
    "x-images-into-vector-model": ("attribution", "images into the 2-D MLP",
                                   lambda s: A.gradient(s.mlp, s.mv, s.x, 1),
                                   InputError, ["takes (N, 2) vectors"]),
    "variables-other-model": ("attribution", "another model's variables",
                              lambda s: A.gradient(s.alexnet, s.lv, s.x, 1),
                              InputError, ["do not fit AlexNet", "(5, 5, 1, 16)"]),
    "variables-params-only": ("attribution", "variables['params'] instead of variables",
                              lambda s: A.gradient(s.alexnet, s.av["params"], s.x, 1),
                              ModelError, ["pass the whole dict"]),
    "variables-none": ("attribution", "None for variables",
                       lambda s: A.gradient(s.alexnet, None, s.x, 1),
                       ModelError, ["got NoneType"]),
    # --- attribution
    "class-out-of-range": ("attribution", "a class index past the last class",
                           lambda s: A.gradient(s.alexnet, s.av, s.x, 10),
                           InputError, ["class index 10 is out of range for 10 classes"]),
    "target-float": ("attribution", "a float target", lambda s: A.gradient(s.alexnet, s.av, s.x, 1.5),
                     InputTypeError, ["expected a target", "got float"]),
    "smoothgrad-no-key": ("attribution", "SmoothGrad without a key",
                          lambda s: A.smoothgrad(s.alexnet, s.av, s.x, 1),
                          InputTypeError, ["key=jax.random.key(seed)"]),
    "rules-missing": ("attribution", "guided backprop on a model without a rules field",
                      lambda s: A.guided_backprop(s.user, s.uv, s.x, O.channel("3", 0)),
                      ModelError, ["no 'rules' field", "model.clone(rules='guided')"]),
    "gradcam-flat-layer": ("attribution", "Grad-CAM at a flat layer",
                           lambda s: A.grad_cam(s.alexnet, s.av, s.x, 1, layer="fc8"),
                           InputError, ["spatial layer", "'fc8' has shape (2, 10)"]),
    "gradcam-vector-model": ("attribution", "Grad-CAM on the 2-D MLP",
                             lambda s: A.grad_cam(s.mlp, s.mv, np.zeros((2, 2), np.float32), 1,
                                                  layer="relu"),
                             ModelError, ["works on images", "(N, 2) vectors"]),
    "occlusion-window": ("attribution", "an occlusion window larger than the image",
                         lambda s: A.occlusion(s.alexnet, s.av, s.x, 1, window=100),
                         InputError, ["window 100 is larger than the input (64)"]),
    "ig-method": ("attribution", "an unknown integration rule",
                  lambda s: A.integrated_gradients(s.alexnet, s.av, s.x, 1, method="simpson"),
                  InputError, ["unknown integration method 'simpson'", "riemann_trapezoid"]),
    "baseline-shape": ("attribution", "a baseline that does not broadcast",
                       lambda s: A.integrated_gradients(s.alexnet, s.av, s.x, 1,
                                                        baseline=np.zeros((5, 5))),
                       InputError, ["broadcasts to x's shape", "(5, 5)"]),
    "bind-twice": ("attribution", "a bound model bound again",
                   lambda s: jv.bind(*jv.bind(s.lenet, s.lv, np.ones(2)), np.ones(2)),
                   InputError, ["already hold a 'bound' collection", "one call"]),
    "bind-rows": ("attribution", "a bound model on a batch that is not a multiple of its rows",
                  lambda s: A.gradient(*jv.bind(s.masked, s.maskedv, np.ones((2, 1, 1, 1))),
                                       np.ones((3, 8, 8, 4), np.float32), 0),
                  InputError, ["has 2 rows", "batch of 3"]),
    "channel-out-of-range": ("attribution", "a channel past the layer's last",
                             lambda s: A.deconvnet_reconstruction(s.alexnet, s.av, s.x, "pool2",
                                                                  channel=999),
                             InputError, ["out of range", "192 channels"]),
    # --- synthesis
    "visualize-channel-range": ("synthesis", "a channel past the layer's last",
                                lambda s: S.visualize(s.alexnet, s.av, O.channel("conv5", 999),
                                                      key=KEY, steps=1, size=64),
                                InputError, ["channel 999 is out of range", "256 channels"]),
    "visualize-class-range": ("synthesis", "a class past the last",
                              lambda s: S.visualize(s.alexnet, s.av, O.class_logit(5000), key=KEY,
                                                    steps=1, size=64),
                              InputError, ["class index 5000 is out of range for 10 classes"]),
    "visualize-vector-model": ("synthesis", "synthesis for the 2-D MLP",
                               lambda s: S.visualize(s.mlp, s.mv, 1, key=KEY, steps=1),
                               ModelError, ["synthesis makes images"]),
    "visualize-size": ("synthesis", "a zero image size",
                       lambda s: S.visualize(s.lenet, s.lv, 1, key=KEY, steps=1, size=0),
                       InputError, ["positive image size"]),
    "visualize-no-key": ("synthesis", "no key", lambda s: S.visualize(s.lenet, s.lv, 1, key=None),
                         InputTypeError, ["key=jax.random.key(seed)"]),
    "visualize-preprocess-channels": ("synthesis", "ImageNet preprocessing for the grey digits model",
                                      lambda s: S.visualize(s.lenet, s.lv, 1, key=KEY, steps=1,
                                                            size=28, preprocess="imagenet"),
                                      InputError, ["takes (N, H, W, 1)", "preprocess='auto'"]),
    "visualize-init-shape": ("synthesis", "an init image of the wrong shape",
                             lambda s: S.visualize(s.lenet, s.lv, 1, key=KEY, steps=1,
                                                   init=np.zeros((4, 4), np.float32)),
                             InputError, ["expected init as an image"]),
    "sweep-checkpoint-settings": ("synthesis", "a sweep checkpoint written with other settings",
                                  lambda s: _two_sweeps(s), InputError, ["other settings"]),
    # --- analysis
    "attack-label-range": ("analysis", "an attack label past the last class",
                           lambda s: adversarial.fgsm(s.lenet, s.lv, s.digits, np.array([1, 12]),
                                                      eps=0.1),
                           InputError, ["label 12 is out of range for 10 classes"]),
    "attack-label-shape": ("analysis", "attack labels of the wrong shape",
                           lambda s: adversarial.gradient_ascent(s.lenet, s.lv, s.digits,
                                                                 np.array([1, 2, 3])),
                           InputError, ["int labels of shape (2,)"]),
    "pgd-norm": ("analysis", "an unknown PGD norm",
                 lambda s: adversarial.pgd(s.lenet, s.lv, s.digits, np.array([1, 2]), eps=0.1,
                                           norm="l1"),
                 InputError, ["unknown norm 'l1'"]),
    "expanded-order": ("analysis", "expanded weights from a later layer to an earlier one",
                       lambda s: weights.expanded_weights(s.lenet, s.lv, "conv2", "conv1"),
                       LayerError, ["must come after"]),
    "expanded-dense-width": ("analysis", "a window narrower than a linear layer sees",
                             lambda s: weights.expanded_weights(s.lenet, s.lv, "conv3",
                                                                "logits", width=3),
                             InputError, ["has no map", "width=None"]),
    "expanded-no-rules": ("analysis", "expanded weights of a model without a 'rules' field",
                          lambda s: weights.expanded_weights(s.user, s.uv, "0", "3"),
                          ModelError, ["no 'rules' field"]),
    "connections-unit": ("analysis", "a unit past a layer's last channel",
                         lambda s: weights.top_connections(s.lenet, s.lv, "conv2", 40),
                         InputError, ["unit 40 is out of range"]),
    "nmf-signed": ("analysis", "NMF of a signed array",
                   lambda s: weights.nmf(np.array([[1.0, -1.0]]), 1),
                   InputError, ["non-negative", "posneg"]),
    "kernel-not-conv": ("analysis", "the kernel of a layer that is not a convolution",
                        lambda s: maps.kernel(s.lenet, s.lv, "relu1"),
                        LayerError, ["expected a convolution layer"]),
    "maps-batch": ("analysis", "activation maps of a batch of two",
                   lambda s: maps.activation_maps(s.lenet, s.lv, s.digits, "conv1"),
                   InputError, ["expected x as one image"]),
    "features-pool": ("analysis", "an unknown pooling for layer features",
                      lambda s: embeddings.features(s.lenet, s.lv, s.digits, "conv1",
                                                    pool="median", progress=False),
                      InputError, ["median"]),
    "embedding-labels": ("analysis", "labels that do not match the images",
                         lambda s: embeddings.layer_embeddings(s.lenet, s.lv, s.digits,
                                                               np.arange(3), ["conv1"],
                                                               progress=False),
                         InputError, ["labels"]),
    "topk-too-many": ("analysis", "more dataset examples than the layer has positions",
                      lambda s: jv.analysis.top_k(s.lenet, s.lv, s.digits, "conv3", k=1000),
                      InputError, ["k=1000 is more than the", "positions"]),
    "topk-no-map": ("analysis", "dataset examples of a layer without spatial maps",
                    lambda s: jv.analysis.top_k(s.lenet, s.lv, s.digits, "logits"),
                    LayerError, ["spatial maps"]),
    "stream-empty": ("analysis", "an image stream over a folder with no images",
                     lambda s: jv.stream.images(s.tmp),
                     InputError, ["expected image files", "found none"]),
    "receptive-dense": ("analysis", "the receptive field of a layer without a map",
                        lambda s: receptive.receptive_field(s.lenet, "logits"),
                        LayerError, ["no receptive field"]),
    "pointing-empty-box": ("analysis", "a pointing-game box with no pixels",
                           lambda s: metrics.pointing_game(np.zeros((1, 8, 8)),
                                                           boxes=[[2, 2, 2, 5]]),
                           InputError, ["box"]),
    # --- the command
    "cmd-unknown-model": ("command", "`jaxviz layers alexnt`", cli(["layers", "alexnt"]),
                          CommandError, ["unknown model 'alexnt'", "Did you mean alexnet"]),
    "cmd-size": ("command", "`jaxviz layers alexnet --size 0`", cli(["layers", "alexnet", "--size", "0"]),
                 CommandError, ["--size must be positive"]),
    "cmd-too-small": ("command", "`jaxviz layers alexnet --size 8`",
                      cli(["layers", "alexnet", "--size", "8"]),
                      CommandError, ["cannot run on inputs of shape (1, 8, 8, 3)"]),
    "cmd-vector-image": ("command", "`jaxviz layers mlp2d --image cat.png`",
                         cli(["layers", "mlp2d", "--image", "cat.png"]),
                         CommandError, ["takes (N, 2) vectors, not images"]),
    "cmd-missing-image": ("command", "`jaxviz layers alexnet --image missing.png`",
                          cli(["layers", "alexnet", "--image", "missing.png"]),
                          CommandError, ["missing.png"]),
    "cmd-seed-bundled": ("command", "`jaxviz layers lenet_digits --seed 1`",
                         cli(["layers", "lenet_digits", "--seed", "1"]),
                         CommandError, ["--seed chooses random weights"]),
    # --- every other subcommand: its typical mistakes, found before any weights load
    "cmd-demo-out-file": ("command", "`jaxviz demo --out DIR/notes.txt`",
                          cli(["demo", "--out", "DIR/notes.txt"]),
                          CommandError, ["is a file; expected a folder"]),
    "cmd-demo-steps": ("command", "`jaxviz demo --steps 0`", cli(["demo", "--steps", "0"]),
                       CommandError, ["argument --steps: expected a positive number"]),
    "cmd-filters-index": ("command", "`jaxviz filters lenet_digits --filters 16 --out f.png`",
                          cli(["filters", "lenet_digits", "--filters", "16", "--out", "f.png"]),
                          CommandError, ["--filters 16 is out of range", "has 16 filters"]),
    "cmd-filters-suffix": ("command", "`jaxviz filters lenet_digits --out f.jpg`",
                           cli(["filters", "lenet_digits", "--out", "f.jpg"]),
                           CommandError, ["must end in .png"]),
    "cmd-activations-flat": ("command",
                             "`jaxviz activations lenet_digits --layer logits --out DIR/maps`",
                             cli(["activations", "lenet_digits", "--layer", "logits", "--out",
                                  "DIR/maps"]),
                             CommandError, ["has no spatial maps"]),
    "cmd-activations-channels": ("command", "`jaxviz activations lenet_digits --layer conv1 "
                                            "--channels 0,16 --out DIR/maps`",
                                 cli(["activations", "lenet_digits", "--layer", "conv1",
                                      "--channels", "0,16", "--out", "DIR/maps"]),
                                 CommandError, ["--channels 16 is out of range"]),
    "cmd-explain-method": ("command", "`jaxviz explain lenet_digits --method gradcam --out s.png`",
                           cli(["explain", "lenet_digits", "--method", "gradcam", "--out",
                                "s.png"]),
                           CommandError, ["unknown --method 'gradcam'", "Did you mean grad_cam"]),
    "cmd-explain-layer": ("command", "`jaxviz explain lenet_digits --method gradient --layer "
                                     "conv2 --out s.png`",
                          cli(["explain", "lenet_digits", "--method", "gradient", "--layer",
                               "conv2", "--out", "s.png"]),
                          CommandError, ["--layer is the CAM methods' layer"]),
    "cmd-visualize-what": ("command", "`jaxviz visualize lenet_digits --layer conv2 --out v.png`",
                           cli(["visualize", "lenet_digits", "--layer", "conv2", "--out",
                                "v.png"]),
                           CommandError, ["say what to maximize"]),
    "cmd-visualize-channel": ("command", "`jaxviz visualize lenet_digits --layer conv2 --channel "
                                         "32 --out v.png`",
                              cli(["visualize", "lenet_digits", "--layer", "conv2", "--channel",
                                   "32", "--out", "v.png"]),
                              CommandError, ["--channel 32 is out of range", "32 channels"]),
    "cmd-sweep-flat": ("command", "`jaxviz sweep lenet_digits --layer logits --out DIR/sweep`",
                       cli(["sweep", "lenet_digits", "--layer", "logits", "--out", "DIR/sweep"]),
                       CommandError, ["expected a layer with spatial maps"]),
    "cmd-sweep-out-file": ("command", "`jaxviz sweep lenet_digits --layer conv2 --out "
                                      "DIR/notes.txt`",
                           cli(["sweep", "lenet_digits", "--layer", "conv2", "--out",
                                "DIR/notes.txt"]),
                           CommandError, ["is a file; expected a folder"]),
    "cmd-weights-unit": ("command", "`jaxviz weights lenet_digits --layer conv2 --unit 32 "
                                    "--out w.png`",
                         cli(["weights", "lenet_digits", "--layer", "conv2", "--unit", "32",
                              "--out", "w.png"]),
                         CommandError, ["--unit 32 is out of range"]),
    "cmd-weights-order": ("command", "`jaxviz weights lenet_digits --layer conv2 --unit 0 "
                                     "--next conv1 --out w.png`",
                          cli(["weights", "lenet_digits", "--layer", "conv2", "--unit", "0",
                               "--next", "conv1", "--out", "w.png"]),
                          CommandError, ["must come after --layer 'conv2'"]),
    "cmd-examples-no-images": ("command", "`jaxviz examples alexnet --layer conv1 --out DIR/ex`",
                               cli(["examples", "alexnet", "--layer", "conv1", "--out",
                                    "DIR/ex"]),
                               CommandError, ["needs an image set: pass --images FOLDER"]),
    "cmd-gallery-layer": ("command", "`jaxviz gallery lenet_digits --layer conv9`",
                          cli(["gallery", "lenet_digits", "--layer", "conv9"]),
                          CommandError, ["no layer 'conv9'", "Closest: conv"]),
    "cmd-gallery-vector": ("command", "`jaxviz gallery mlp2d --layer relu`",
                           cli(["gallery", "mlp2d", "--layer", "relu"]),
                           CommandError, ["it has no channels to show"]),
    "cmd-port-out-folder": ("command", "`jaxviz port alexnet --weights DEFAULT -o DIR`",
                            cli(["port", "alexnet", "--weights", "DEFAULT", "-o", "DIR"]),
                            CommandError, ["is a folder; expected a .safetensors file name"]),
    "cmd-port-arch": ("command", "`jaxviz port resnet50 --weights DEFAULT -o r.safetensors`",
                      cli(["port", "resnet50", "--weights", "DEFAULT", "-o", "r.safetensors"]),
                      CommandError, ["unknown model 'resnet50'"]),
    "cmd-mlp2d-lines-frames": ("command", "`jaxviz mlp2d-lines --frames 0,ten --out DIR/lines`",
                               cli(["mlp2d-lines", "--frames", "0,ten", "--out", "DIR/lines"]),
                               CommandError, ["expected comma-separated iterations"]),
}


def _two_sweeps(s):
    path = s.tmp / "sweep.npz"
    path.unlink(missing_ok=True)
    S.sweep(s.lenet, s.lv, "conv1", [0], key=KEY, steps=1, size=28, progress=False,
            checkpoint=path)
    S.sweep(s.lenet, s.lv, "conv1", [0], key=KEY, steps=2, size=28, progress=False,
            checkpoint=path)


@pytest.fixture(scope="module")
def subjects(tmp_path_factory):
    return Subjects(tmp_path_factory.mktemp("errors"))


@pytest.mark.parametrize("case", list(CASES))
def test_documented_mistake_gets_its_error(subjects, case):
    _, _, call, error, words = CASES[case]
    with pytest.raises(error) as info:
        call(subjects)
    message = str(info.value)
    for word in words:
        assert word in message, (case, message)
    if error is not CommandError:
        assert isinstance(info.value, jv.JaxvizError) or error is FileNotFoundError
    # the page shows this message (its start, where it is cut with "…")
    shown = {cells[0].strip("`"): cells[4] for cells in _doc_rows()}.get(case)
    assert shown is not None, f"{case} is not in docs/errors.md"
    said = message.replace(str(subjects.tmp), "DIR").replace("|", "\\|").replace("\n", " ")
    assert said.startswith(shown.removesuffix(" …")), (case, said, shown)


def test_the_pickle_payload_never_ran(subjects):
    with pytest.raises(WeightsError):
        jv.load("alexnet", weights=subjects.evil)
    assert not (subjects.tmp / "ran").exists()


def _doc_rows() -> list[list[str]]:
    text = (ROOT / "docs" / "errors.md").read_text()
    rows = []
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("|") and len(cells) >= 4 and re.fullmatch(r"`[a-z0-9-]+`", cells[0]):
            rows.append(cells)
    return rows


def test_docs_table_is_this_table():
    rows = _doc_rows()
    assert len(rows) >= 25
    documented = {cells[0].strip("`"): cells for cells in rows}
    assert len(documented) == len(rows), "an id appears twice in docs/errors.md"
    assert set(documented) == set(CASES), (sorted(set(documented) ^ set(CASES)))
    for case, cells in documented.items():
        where, _, _, error, _ = CASES[case]
        assert cells[1] == where, (case, cells)
        name = "exit status 2" if error is CommandError else error.__name__
        assert name in cells[3], (case, cells[3], name)
    areas = {c[0] for c in CASES.values()}
    assert areas == {"loading", "capture", "attribution", "synthesis", "analysis", "command"}


def test_every_subcommand_has_documented_mistakes():
    """Each ``jaxviz`` subcommand has a row, and a command row's bad input is the command
    line the case runs."""
    runs = {case: CASES[case][2].argv for case in CASES if CASES[case][0] == "command"}
    assert {argv[0] for argv in runs.values()} == set(COMMANDS)
    for case, argv in runs.items():
        assert CASES[case][1] == f"`jaxviz {' '.join(argv)}`", case


def test_readme_links_the_errors_page():
    assert "docs/errors.md" in (ROOT / "README.md").read_text()


# --- generated: bad batches through every public function --------------------------------

BAD_BATCHES = {
    "NCHW": lambda x: x.transpose(0, 3, 1, 2),
    "empty": lambda x: x[:0],
    "NaN": lambda x: np.where(np.arange(x.size).reshape(x.shape) == 7, np.nan, x),
    "three channels": lambda x: np.repeat(x, 3, axis=-1),
    "no batch axis": lambda x: x[0],
}


def _function(name: str):
    """The function a CALLS name stands for (``jaxviz.objectives.Objective.__call__`` too)."""
    module, _, attr = name.rpartition(".")
    try:
        return getattr(importlib.import_module(module), attr)
    except ModuleNotFoundError:  # a method: module.Class.method
        module, _, cls = module.rpartition(".")
        return getattr(getattr(importlib.import_module(module), cls), attr)


# every public function that takes a batch: a parameter x, or images (layer_names takes a
# shape; synthesis makes its own batch, and its arguments are in CASES)
TAKES_X = [n for n in CALLS
           if {"x", "images"} & set(inspect.signature(_function(n)).parameters)]


@pytest.mark.parametrize("bad", list(BAD_BATCHES))
@pytest.mark.parametrize("name", TAKES_X)
def test_every_public_function_refuses_bad_batches_clearly(subjects, name, bad):
    """On the digits model (it declares (N, H, W, 1) input), each bad batch gets one of
    our errors, whatever the function."""
    x = BAD_BATCHES[bad](np.asarray(subjects.digits))
    with pytest.raises(jv.JaxvizError):
        CALLS[name](subjects.lenet, subjects.lv, x, "conv2")


@pytest.mark.parametrize("name", sorted(NEEDS_RULES))
def test_rule_methods_on_a_user_model_without_rules(subjects, name):
    with pytest.raises(ModelError, match="no 'rules' field"):
        CALLS[name](subjects.user, subjects.uv, subjects.x, "3")

"""No silent recompilation (docs/architecture.md, "Compile once").

Every public function that takes ``(model, variables, ...)`` is called twice with the
same shapes; the second call must compile nothing. XLA compilations are counted with
``jax.monitoring`` (the backend-compile event fires once per compiled program, eager
operations included; a program loaded from JAX's persistent cache counts as one, which
``test_a_program_from_the_persistent_cache_is_counted`` checks). Run for one of our
models and for two user models whose list fields make them unhashable (a ``Sequential``
built from a list, and a Linen module with a list of widths): those are keyed by
structure (jaxviz/static.py).

The list of functions is generated from the modules' ``__all__``: a new public function
that takes a model fails ``test_every_public_function_is_covered`` until it is added.
"""

from __future__ import annotations

import atexit
import importlib
import inspect
import json
import pkgutil
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxviz as jv
from conftest import eager_host_copies, env_without_test_compile_cache
from jaxviz._host import to_device
from jaxviz.analysis import (adversarial, embeddings, examples, gallery, maps, metrics,
                             receptive, weights)
from jaxviz.models.modules import AdaptiveAvgPool2d, Conv2d, Linear, MaxPool2d, ReLU, Sequential
from jaxviz.models.modules import flatten as torch_flatten

BACKEND_COMPILE = "/jax/core/compile/backend_compile_duration"


_ACTIVE: list = []  # the counters now counting


def _on_event(event: str, duration: float, **kwargs) -> None:
    if event == BACKEND_COMPILE:
        for counter in _ACTIVE:
            counter.count += 1


# one listener for the whole session (jax < 0.10 cannot unregister one)
jax.monitoring.register_event_duration_secs_listener(_on_event)


class Compilations:
    """Counts XLA compilations while active."""

    def __init__(self):
        self.count = 0

    def __enter__(self):
        _ACTIVE.append(self)
        return self

    def __exit__(self, *exc):
        _ACTIVE.remove(self)


class WidthsNet(nn.Module):
    """A user's model: a list field (unhashable), jaxviz's rule-following ReLU and pool."""

    widths: list
    rules: str = "gradient"

    @nn.compact
    def __call__(self, x, *, train: bool = False):
        for width in self.widths:
            x = nn.Conv(width, (3, 3))(x)
            x = ReLU(self.rules)(x)
            x = MaxPool2d(2, 2, rule=self.rules)(x)
        return nn.Dense(5)(x.mean(axis=(1, 2)))


def sequential_net(rules: str = "gradient") -> Sequential:
    """A ``Sequential`` built from a list: unhashable (it has no ``rules`` field)."""
    return Sequential([Conv2d(8, 3, padding=1), ReLU(rules), MaxPool2d(2, 2, rule=rules),
                       Conv2d(8, 3, padding=1), ReLU(rules), AdaptiveAvgPool2d(1),
                       torch_flatten, Linear(5)],
                      names=["0", "1", "2", "3", "4", "5", None, "7"])


def user_widths():
    model = WidthsNet([6, 8])
    x = jnp.asarray(np.random.default_rng(0).standard_normal((2, 16, 16, 3)), jnp.float32)
    return model, model.init(jax.random.key(0), x), x, "Conv_1"


def user_sequential():
    model = sequential_net()
    x = jnp.asarray(np.random.default_rng(0).standard_normal((2, 16, 16, 3)), jnp.float32)
    return model, model.init(jax.random.key(0), x), x, "3"


def ours():
    model, variables = jv.load("lenet_digits")
    x = jnp.asarray(np.random.default_rng(0).random((2, 28, 28, 1)), jnp.float32)
    return model, variables, x, "conv2"


MODELS = {"lenet_digits": ours, "list-field model": user_widths,
          "Sequential of a list": user_sequential}

A = jv.attribution
KEY = jax.random.key(0)
TARGET = np.array([1, 2])

# name -> call(model, variables, x, layer); every public function that takes a model.
CALLS: dict[str, Callable] = {
    "jaxviz.layer_names": lambda m, v, x, layer: jv.layer_names(m, x.shape),
    "jaxviz.activations": lambda m, v, x, layer: jv.activations(m, v, x, [layer]),
    "jaxviz.objectives.Objective.__call__":
        lambda m, v, x, layer: jv.objectives.channel(layer, 1)(m, v, x),
    "jaxviz.attribution.gradient": lambda m, v, x, layer: A.gradient(m, v, x, TARGET),
    "jaxviz.attribution.gradient_x_input":
        lambda m, v, x, layer: A.gradient_x_input(m, v, x, TARGET),
    "jaxviz.attribution.deconvnet": lambda m, v, x, layer: A.deconvnet(m, v, x, TARGET),
    "jaxviz.attribution.guided_backprop": lambda m, v, x, layer: A.guided_backprop(m, v, x, TARGET),
    "jaxviz.attribution.smoothgrad":
        lambda m, v, x, layer: A.smoothgrad(m, v, x, TARGET, key=KEY, samples=3),
    "jaxviz.attribution.integrated_gradients":
        lambda m, v, x, layer: A.integrated_gradients(m, v, x, TARGET, steps=3),
    "jaxviz.attribution.occlusion":
        lambda m, v, x, layer: A.occlusion(m, v, x, TARGET, window=8, stride=8),
    "jaxviz.attribution.deconvnet_reconstruction":
        lambda m, v, x, layer: A.deconvnet_reconstruction(m, v, x, layer, channel=1),
    "jaxviz.attribution.layer_gradient":
        lambda m, v, x, layer: A.layer_gradient(m, v, x, TARGET, layer=layer),
    "jaxviz.attribution.grad_cam": lambda m, v, x, layer: A.grad_cam(m, v, x, TARGET, layer=layer),
    "jaxviz.attribution.guided_grad_cam":
        lambda m, v, x, layer: A.guided_grad_cam(m, v, x, TARGET, layer=layer),
    **{f"jaxviz.attribution.{cam}": (lambda cam: lambda m, v, x, layer: getattr(A, cam)(
        m, v, x, TARGET, layer=layer, batch_size=3) if cam in ("score_cam", "ablation_cam")
        else getattr(A, cam)(m, v, x, TARGET, layer=layer))(cam)
       for cam in ("grad_cam_plus_plus", "xgrad_cam", "hires_cam", "layer_cam", "score_cam",
                   "ablation_cam", "eigen_cam")},
    "jaxviz.attribution.feature_ablation":
        lambda m, v, x, layer: A.feature_ablation(
            m, v, x, TARGET, batch_size=3,
            mask=(np.arange(x.shape[1])[:, None] // 8) * 4 + np.arange(x.shape[2])[None] // 8),
    "jaxviz.attribution.lrp": lambda m, v, x, layer: A.lrp(m, v, x, TARGET, composite="epsilon_plus"),
    "jaxviz.attribution.gradient_shap":
        lambda m, v, x, layer: A.gradient_shap(m, v, x, TARGET, baselines=x[:1] * 0.5, key=KEY,
                                               samples=3, batch_size=2),
    "jaxviz.attribution.rise":
        lambda m, v, x, layer: A.rise(m, v, x, TARGET, key=KEY, samples=6, batch_size=4),
    "jaxviz.attribution.deeplift": lambda m, v, x, layer: A.deeplift(m, v, x, TARGET, baseline=0.1),
    "jaxviz.attribution.deeplift_shap":
        lambda m, v, x, layer: A.deeplift_shap(m, v, x, TARGET, baselines=x[:1] * 0.5),
    "jaxviz.attribution.noise_tunnel":
        lambda m, v, x, layer: A.noise_tunnel(A.grad_cam, m, v, x, TARGET, key=KEY, samples=3,
                                              batch_size=2, layer=layer),
    "jaxviz.attribution.multi_layer_cam":
        lambda m, v, x, layer: A.multi_layer_cam(A.layer_cam, m, v, x, TARGET, layers=[layer]),
    "jaxviz.attribution.aug_smooth":
        lambda m, v, x, layer: A.aug_smooth(A.grad_cam, m, v, x, TARGET, factors=(1.0, 1.1),
                                            layer=layer),
    "jaxviz.synthesis.visualize":
        lambda m, v, x, layer: jv.synthesis.visualize(
            m, v, jv.objectives.channel(layer, 1), key=KEY, steps=2, size=x.shape[1]),
    "jaxviz.synthesis.images_per_chunk":
        lambda m, v, x, layer: jv.synthesis.images_per_chunk(m, layer, x.shape[1], 1 << 24),
    "jaxviz.synthesis.sweep":
        lambda m, v, x, layer: jv.synthesis.sweep(m, v, layer, [0, 1], key=KEY, steps=2,
                                                  size=x.shape[1], progress=False),
    "jaxviz.analysis.adversarial.gradient_ascent":
        lambda m, v, x, layer: adversarial.gradient_ascent(m, v, x, TARGET, steps=2),
    "jaxviz.analysis.adversarial.fgsm":
        lambda m, v, x, layer: adversarial.fgsm(m, v, x, TARGET, eps=0.1),
    "jaxviz.analysis.adversarial.pgd":
        lambda m, v, x, layer: adversarial.pgd(m, v, x, TARGET, eps=0.1, steps=2),
    "jaxviz.analysis.adversarial.sphere_check":
        lambda m, v, x, layer: adversarial.sphere_check(m, v, x, 0.5, key=KEY, n=4,
                                                        batch_size=2),
    "jaxviz.analysis.maps.kernel": lambda m, v, x, layer: maps.kernel(m, v, layer),
    "jaxviz.analysis.maps.conv_layers": lambda m, v, x, layer: maps.conv_layers(m, v),
    "jaxviz.analysis.maps.activation_maps":
        lambda m, v, x, layer: maps.activation_maps(m, v, x[:1], layer),
    "jaxviz.analysis.maps.histograms":
        lambda m, v, x, layer: maps.histograms(m, v, x, layer, bins=8, batch_size=1),
    "jaxviz.analysis.embeddings.features":
        lambda m, v, x, layer: embeddings.features(m, v, x, [layer], batch_size=1,
                                                   progress=False),
    "jaxviz.analysis.embeddings.layer_embeddings":
        lambda m, v, x, layer: embeddings.layer_embeddings(
            m, v, np.concatenate([x] * 4), np.arange(4 * len(x)) % 2, [layer], k=1, folds=2,
            progress=False),
    "jaxviz.analysis.examples.top_k":
        lambda m, v, x, layer: examples.top_k(m, v, x, layer, k=2, batch_size=1).values,
    "jaxviz.analysis.examples.projections":
        lambda m, v, x, layer: examples.projections(
            m, v, x, examples.top_k(m, v, x, layer, k=1, batch_size=2), batch_size=2),
    "jaxviz.analysis.examples.example_pictures":
        lambda m, v, x, layer: np.stack(list(examples.example_pictures(
            m, v, x, examples.top_k(m, v, x, layer, k=1, batch_size=2), [0, 1],
            batch_size=2, scale="unit").values())),
    "jaxviz.analysis.gallery.build":
        lambda m, v, x, layer: _gallery(m, v, x, layer),
    "jaxviz.analysis.gallery.connection_width":
        lambda m, v, x, layer: np.asarray(gallery.connection_width(m, _first(m, x), layer,
                                                                   x.shape[1:])),
    "jaxviz.analysis.metrics.deletion":
        lambda m, v, x, layer: metrics.deletion(m, v, x, x[..., 0], TARGET),
    "jaxviz.analysis.metrics.insertion":
        lambda m, v, x, layer: metrics.insertion(m, v, x, x[..., 0], TARGET),
    "jaxviz.analysis.metrics.parameter_layers":
        lambda m, v, x, layer: metrics.parameter_layers(m, v, x.shape),
    "jaxviz.analysis.metrics.cam_layer": lambda m, v, x, layer: metrics.cam_layer(m, v, x.shape),
    "jaxviz.analysis.metrics.randomization_check":
        lambda m, v, x, layer: metrics.randomization_check(m, v, x, TARGET, A.gradient,
                                                           key=KEY).spearman,
    "jaxviz.analysis.metrics.report":
        lambda m, v, x, layer: metrics.report(
            m, v, x, TARGET, key=KEY, methods=["gradient", "occlusion", "grad_cam"],
            layer=layer, options={"occlusion": {"window": 8, "stride": 8}}),
    "jaxviz.analysis.receptive.receptive_field":
        lambda m, v, x, layer: receptive.receptive_field(m, layer, x.shape),
    "jaxviz.analysis.receptive.receptive_fields":
        lambda m, v, x, layer: receptive.receptive_fields(m, x.shape),
    "jaxviz.analysis.weights.expanded_weights":
        lambda m, v, x, layer: weights.expanded_weights(m, v, _first(m, x), layer, width=3),
    "jaxviz.analysis.weights.top_connections":
        lambda m, v, x, layer: weights.top_connections(m, v, layer, 1, previous=_first(m, x),
                                                       next=None, width=3, k=2)["previous"].maps,
    "jaxviz.analysis.weights.first_layer_order":
        lambda m, v, x, layer: weights.first_layer_order(m, v),
    "jaxviz.analysis.weights.spatial_directions":
        lambda m, v, x, layer: weights.spatial_directions(
            m, v, layer, np.ones((1, 2, _channels(m, x, layer)), np.float32), key=KEY,
            size=x.shape[1], steps=2).images,
}


_GALLERIES: dict = {}


def _remove_gallery_folders() -> None:
    for folder in _GALLERIES.values():
        shutil.rmtree(folder, ignore_errors=True)
    _GALLERIES.clear()


# test_errors.py calls CALLS too, outside this module's fixture: what it made goes at exit
atexit.register(_remove_gallery_folders)


@pytest.fixture(scope="module", autouse=True)
def _remove_galleries():
    """The galleries' temporary folders go when the module's tests are done."""
    yield
    _remove_gallery_folders()


def _gallery(model, variables, x, layer) -> np.ndarray:
    """A two-channel gallery in one folder per model: the second call resumes it (reads
    the sweep and top-k back and redraws the index), compiling nothing."""
    if id(model) not in _GALLERIES:
        _GALLERIES[id(model)] = Path(tempfile.mkdtemp(prefix="jaxviz-gallery-"))
    folder = _GALLERIES[id(model)]
    index = gallery.build(model, variables, layer, folder, images=np.asarray(x), channels=2,
                          steps=2, k=1, connections=2, quiet=True)
    return np.frombuffer(index.read_bytes(), np.uint8)


def _first(model, x) -> str:
    """The model's first layer (expanded weights start there)."""
    return jv.layer_names(model, x.shape)[0].path


def _channels(model, x, layer) -> int:
    return next(info.shape[-1] for info in jv.layer_names(model, x.shape)
                if layer in (info.path, info.alias))


# public functions made for one model class, not for any model (tested with it)
ONE_MODEL_ONLY = {"jaxviz.analysis.training.draw_frame"}  # MLP2d's hidden lines
# public functions that need a model that declares its input (``input_spec()``: ours)
NEEDS_INPUT_SPEC = {"jaxviz.analysis.gallery.build"}


def _takes_a_model(fn) -> bool:
    params = list(inspect.signature(fn).parameters)
    return bool(params) and params[0] == "model"


def test_every_public_function_is_covered():
    public = {f"jaxviz.{name}" for name in ("layer_names", "activations")}
    analyses = [importlib.import_module(f"jaxviz.analysis.{m.name}")
                for m in pkgutil.iter_modules(jv.analysis.__path__)]
    for module in (jv.attribution, jv.synthesis, *analyses):
        for name in module.__all__:
            fn = getattr(module, name)
            if inspect.isfunction(fn) and _takes_a_model(fn):
                public.add(f"{module.__name__}.{name}")
    covered = {name for name in CALLS if not name.endswith(".__call__")}
    missing = public - covered - ONE_MODEL_ONLY
    assert not missing, f"add these public functions to CALLS: {sorted(missing)}"


# methods that switch the backward rule: they need a model with a ``rules`` field
NEEDS_RULES = {"jaxviz.attribution.deconvnet", "jaxviz.attribution.guided_backprop",
               "jaxviz.attribution.deconvnet_reconstruction", "jaxviz.analysis.examples.projections",
               "jaxviz.attribution.guided_grad_cam", "jaxviz.analysis.weights.expanded_weights",
               "jaxviz.analysis.weights.top_connections", "jaxviz.analysis.examples.example_pictures"}
CASES = [(which, name) for which in MODELS for name in CALLS
         if not (which == "Sequential of a list" and name in NEEDS_RULES)
         and not (which != "lenet_digits" and name in NEEDS_INPUT_SPEC)]


@pytest.fixture(scope="module")
def subjects():
    return {which: make() for which, make in MODELS.items()}


@pytest.mark.parametrize("which,name", CASES)
def test_second_call_compiles_nothing(subjects, which, name):
    model, variables, x, layer = subjects[which]
    call = CALLS[name]
    jax.block_until_ready(call(model, variables, x, layer))
    with Compilations() as second:
        jax.block_until_ready(call(model, variables, x, layer))
    assert second.count == 0, f"{name} on {which}: {second.count} compilations on the second call"


def test_the_counter_sees_compilations(subjects):
    model, variables, x, _ = subjects["list-field model"]
    with Compilations() as fresh:  # a shape not seen before compiles
        jax.block_until_ready(A.gradient(model, variables, x[:1] * 1.0, 1))
    assert fresh.count > 0


# A jitted function in a fresh process with JAX's persistent cache in argv[1]: how many
# backend-compile events (and for which programs) and cache hits it saw.
_ONE_PROGRAM = """
import json, sys
import jax, jax.numpy as jnp, numpy as np
jax.config.update("jax_compilation_cache_dir", sys.argv[1])
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
seen = {"compiles": 0, "hits": 0, "programs": []}
def on_duration(event, duration, **kwargs):
    if event == "/jax/core/compile/backend_compile_duration":
        seen["compiles"] += 1
        seen["programs"].append(kwargs.get("fun_name"))
def on_event(event, **kwargs):
    seen["hits"] += event == "/jax/compilation_cache/cache_hits"
jax.monitoring.register_event_duration_secs_listener(on_duration)
jax.monitoring.register_event_listener(on_event)
jax.block_until_ready(jax.jit(lambda x: jnp.sin(x) * 2)(np.zeros(3, np.float32)))
print(json.dumps(seen))
"""


def test_a_program_from_the_persistent_cache_is_counted(tmp_path):
    """scripts/test.sh keeps JAX's persistent cache between runs, so a second run loads
    programs instead of compiling them. The counter must still see each one: a second call
    that built its program again would otherwise pass unnoticed, loaded from the cache the
    first call filled. JAX times the cache lookup inside the backend-compile event, so a
    hit is one event, as a compilation is."""
    env = env_without_test_compile_cache()
    seen = []
    for _ in range(2):
        proc = subprocess.run([sys.executable, "-c", _ONE_PROGRAM, str(tmp_path)],
                              capture_output=True, text=True, env=env, timeout=120)
        assert proc.returncode == 0, proc.stderr[-3000:]
        seen.append(json.loads(proc.stdout.splitlines()[-1]))
    first, second = seen  # the same programs, however many this environment makes
    assert first["compiles"] >= 1 and first["hits"] == 0, seen
    assert second["programs"] == first["programs"], seen
    assert second["hits"] == second["compiles"] == first["compiles"], seen


def test_rule_methods_on_a_model_without_rules_say_how_to_add_them(subjects):
    model, variables, x, layer = subjects["Sequential of a list"]
    with pytest.raises(jv.ModelError, match="no 'rules' field"):
        A.guided_backprop(model, variables, x, TARGET)


def test_an_equal_user_model_built_again_shares_the_program():
    """Two ``WidthsNet([6, 8])`` are equal by structure: the second compiles nothing."""
    model, variables, x, _ = user_widths()
    A.gradient(model, variables, x, TARGET)
    with Compilations() as again:
        jax.block_until_ready(A.gradient(WidthsNet([6, 8]), variables, x, TARGET))
    assert again.count == 0
    with Compilations() as other:  # a different structure is a different program
        jax.block_until_ready(A.gradient(WidthsNet([6, 9]), WidthsNet([6, 9]).init(KEY, x),
                                         x, TARGET))
    assert other.count > 0


def test_load_twice_compiles_nothing():
    jv.load("lenet")
    with Compilations() as again:
        jv.load("lenet", seed=1)
    assert again.count == 0


# First calls: each is its own compiled program(s), with no eager operations around it
# compiling small programs of their own (docs/architecture.md, "Where the suite's time
# goes"). The shared layer gradient is compiled first; a new input shape (3 images)
# makes every program new. Counts: Grad-CAM's weighting and finishing is one program
# (it was 6 eager ones; Grad-CAM++ with minmax 18); top_k's merge is one (its running
# lists were made by eager jnp.full); histograms' min/max and count passes are two; an
# objective called on arrays is one.
FIRST_CALLS = {
    "grad_cam": (lambda m, v, x, layer: A.grad_cam(m, v, x, TARGET[:1].repeat(3), layer=layer), 1),
    "grad_cam_plus_plus minmax": (lambda m, v, x, layer: A.grad_cam_plus_plus(
        m, v, x, TARGET[:1].repeat(3), layer=layer, normalize="minmax"), 1),
    "top_k": (lambda m, v, x, layer: examples.top_k(m, v, x, layer, k=4).values, 1),
    "histograms": (lambda m, v, x, layer: maps.histograms(m, v, x, [layer])[layer][0], 2),
    # an objective called on arrays: its forward pass as one program (run op by op: 23)
    "objective": (lambda m, v, x, layer: (jv.objectives.channel(layer, 1)
                                          + 0.5 * jv.objectives.class_logit(2))(m, v, x), 1),
}


@pytest.mark.parametrize("name", list(FIRST_CALLS))
def test_first_call_compiles_only_its_programs(subjects, name):
    model, variables, x, layer = subjects["lenet_digits"]
    x = jnp.concatenate([x, x[:1]])  # a shape no other test here uses
    call, programs = FIRST_CALLS[name]
    jax.block_until_ready(A.layer_gradient(model, variables, x, TARGET[:1].repeat(3), layer=layer))
    with Compilations() as first:
        jax.block_until_ready(call(model, variables, x, layer))
    assert first.count == programs, f"{name}: {first.count} compilations, expected {programs}"


def test_host_arrays_reach_the_device_without_a_program(subjects):
    """Loading weights (drawn or from a file) and a public call on a numpy batch copy host
    arrays with ``jax.device_put`` (``jaxviz/_host.py``): no ``jnp.asarray`` of a host
    array outside a trace, which compiles an identity program per shape in jax 0.10."""
    model, variables, x, layer = subjects["lenet_digits"]
    host = np.asarray(x)[:1]
    with eager_host_copies(jv) as found:
        jv.load("lenet", seed=2)
        jv.load("lenet_digits")
        jax.block_until_ready(A.gradient(model, variables, host, TARGET[:1]))
        jax.block_until_ready(A.occlusion(model, variables, host, TARGET[:1], window=14,
                                          stride=14))
        jax.block_until_ready(jv.switches.max_pool_with_switches(host, 2, 2))
    assert found == [], f"jnp.asarray of host arrays at {found}"


def test_to_device_copies_unless_told_the_array_is_fresh():
    """On CPU ``jax.device_put`` may alias an aligned numpy buffer: a caller's array
    changed after the call would change the copy (``jaxviz/_host.py``)."""
    a = np.arange(1024, dtype=np.float32)
    b = to_device(a)
    a[0] = 99.0
    assert float(b[0]) == 0.0
    assert to_device(b) is b
    assert to_device(np.arange(4.0)).dtype == jnp.float32  # canonical dtype, as jnp.asarray


def test_objectives_that_cannot_be_compiled_run_as_written(subjects):
    """A plain callable among the terms, or a user's Objective subclass that is not a
    registered pytree, cannot be a compiled program's argument: they run op by op, with
    the values of the terms computed apart."""
    from jaxviz import objectives as O

    model, variables, x, layer = subjects["lenet_digits"]

    class Mine(O.Objective):  # not registered: one opaque pytree leaf
        def layers(self):
            return (layer,)

        def needs_logits(self):
            return False

        def evaluate(self, found):
            return O.channel(layer, 1).evaluate(found)

    channel = np.asarray(O.channel(layer, 1)(model, variables, x))
    total = lambda m, v, x: x.sum(axis=(1, 2, 3))  # noqa: E731
    np.testing.assert_allclose(np.asarray(Mine()(model, variables, x)), channel, rtol=1e-6)
    np.testing.assert_allclose(np.asarray((O.channel(layer, 1) + total)(model, variables, x)),
                               channel + np.asarray(x).sum(axis=(1, 2, 3)), rtol=1e-5)


def _objective_classes():
    from jaxviz import objectives as O

    return sorted((c for _, c in inspect.getmembers(O, inspect.isclass)
                   if issubclass(c, O.Objective) and c is not O.Objective),
                  key=lambda c: c.__name__)


def _with_fields(cls, **values):
    """An instance of an objective dataclass with its fields set as given (no checks)."""
    import dataclasses

    o = object.__new__(cls)
    for f in dataclasses.fields(cls):
        object.__setattr__(o, f.name, values.get(f.name))
    return o


def test_objective_kinds_never_share_a_program():
    """Objectives are the compiled programs' arguments, so their pytree structures key
    the programs: two kinds with the same fields (Channel and UnreachableTarget,
    ClassLogit and ClassLogProb, LayerMax and Diversity) must not compare equal, or a
    structure-keyed cache can run one's program for the other when their hashes meet
    (jaxlib 0.10.2's register_dataclass nodes compare equal across classes). Every
    objective class against every other, and the three pairs on one compiled function."""
    from jaxviz import objectives as O

    classes = _objective_classes()
    assert {O.Channel, O.UnreachableTarget, O.ClassLogit, O.ClassLogProb} <= set(classes)
    fields = dict(layer="conv", index=np.int32(0), target=np.int32(0), vector=np.zeros(2),
                  position=None, y=1, x=1, terms=(), weights=(), fn=len)
    trees = {c: jax.tree_util.tree_structure(_with_fields(c, **fields)) for c in classes}
    for a in classes:
        for b in classes:
            assert (trees[a] == trees[b]) == (a is b), (a.__name__, b.__name__)
    same_fields = [(O.Channel("conv", np.int32(1)), O.UnreachableTarget("conv", np.int32(1))),
                   (O.ClassLogit(np.int32(2)), O.ClassLogProb(np.int32(2))),
                   (O.LayerMax("conv"), O.Diversity("conv"))]
    traced = []
    f = jax.jit(lambda o: (traced.append(type(o)), jnp.zeros(()))[1])
    for pair in same_fields:
        for o in pair:
            f(o)
    assert traced == [type(o) for pair in same_fields for o in pair]

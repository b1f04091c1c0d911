"""Occlusion's split path (``reuse=``) against its plain path (``reuse="off"``).

The split path recomputes, per window, only the crop of the first layers' maps that the
window can change, pastes it into activations of the unoccluded input and runs the rest
of the network from the last cut (``jaxviz/attribution/_reuse.py``). It must give the
plain path's drops and map: F32_TOL in float32, F64_TOL in float64 (both paths sum the
same products; the convolutions on crops may sum them in another order). Windows reach
every border, strides do not divide the input, the last chunk is padded, N = 2, and the
models cover strided convolutions (AlexNet), a deep stack of padded 3x3 convolutions
(VGG16), ceil-mode max pools with padding, inception blocks and per-pixel code before
the first layer (GoogLeNet with ``transform_input``), BatchNorm and a functional ReLU
(a jaxviz ``Sequential``). Inputs are small (AlexNet 64 x 80, GoogLeNet 66 x 78, VGG16
32 x 48) and the VGG16 and GoogLeNet objectives read a middle layer, so that both paths'
programs compile fast; the planner is also checked at the benchmark's size (224 px,
window 32, stride 8), where ``reuse="auto"`` must split. Every check here was seen to
fail with the code broken on purpose (crops not aligned or not congruent, no padding
put back, -inf padding as zero, a region one unit short, a misplaced baseline crop,
channel windows ignored, float32 arithmetic, the stand-in input check or the
objective's layers ignored, a user's model taken as a chain).
"""

from __future__ import annotations

import dataclasses
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxviz as jv
from jaxviz import objectives, rules
from jaxviz.attribution import _reuse
from jaxviz.attribution import perturbation
from jaxviz.errors import InputError, LayerError
from jaxviz.models import modules as M

from conftest import F32_TOL, F64_TOL, max_rel_err, photo_and_noise

A = jv.attribution
TARGETS = np.array([3, 7], np.int32)


@pytest.fixture
def split_calls(monkeypatch):
    """The cuts of every chunk the split path runs (a spy on its compiled chunk)."""
    calls = []
    original = perturbation._occlusion_reuse_jit

    def spy(*args):
        calls.append(args[1].cuts)
        return original(*args)

    monkeypatch.setattr(perturbation, "_occlusion_reuse_jit", spy)
    return calls


def both(model, variables, x, reuse, targets=TARGETS, **kwargs):
    """(plain, split) results of occlusion with ``return_windows``: ((map, grid), (map, grid))."""
    plain = A.occlusion(model, variables, x, targets, reuse="off", return_windows=True, **kwargs)
    split = A.occlusion(model, variables, x, targets, reuse=reuse, return_windows=True, **kwargs)
    return plain, split


ON_CPU = jax.default_backend() == "cpu"
# On a GPU, cuDNN picks its convolution algorithm per shape, and the split path convolves
# crops of other shapes than the plain path: the products are summed in other orders (some
# algorithms, Winograd and FFT, round more), and the drops, differences of nearly equal
# logits, magnify it. Measured on an H100 at full float32 precision: 1.1e-5 (AlexNet) and
# 2.2e-5 (VGG16) where the CPU gives at most 1e-5.
GPU_F32_TOL = 1e-4
needs_cpu_auto = pytest.mark.skipif(not ON_CPU, reason='reuse="auto" splits on the CPU only')


def assert_same(plain, split, tol):
    if tol == F32_TOL and not ON_CPU:
        tol = GPU_F32_TOL
    for p, s in zip(plain, split):
        p, s = np.asarray(p), np.asarray(s)
        assert p.dtype == s.dtype and np.abs(p).max() > 0
        assert max_rel_err(s, p) <= tol, max_rel_err(s, p)


@pytest.fixture(scope="module")
def alexnet():
    """AlexNet with seeded random weights (torch's default initialization, drawn with
    numpy: ``jv.load``) and 10 classes."""
    return jv.load("alexnet", weights=None, seed=0, num_classes=10)


def he_normal(variables, seed=0):
    """``variables`` with every convolution kernel redrawn He normal (fan in): GoogLeNet's
    N(0, 0.01^2) initialization fades the signal until the drops are all zero (see
    ``conftest.torchvision_model``)."""
    rng = np.random.default_rng(seed)

    def redraw(path, leaf):
        if path[-1].key != "kernel" or leaf.ndim != 4:
            return leaf
        fan_in = np.prod(leaf.shape[:3])
        return jnp.asarray(rng.standard_normal(leaf.shape) * np.sqrt(2.0 / fan_in), leaf.dtype)

    return jax.tree_util.tree_map_with_path(redraw, variables)


def test_alexnet_split_equals_plain_at_borders_and_odd_strides(alexnet, split_calls):
    """Three cuts (after conv1's ReLU, pool2 and conv3's ReLU: four stages, strides 4, 2, 2
    between them); windows (13, 11) at strides (7, 6), which divide neither side, so the
    last window of each axis is flush with the far edge; a baseline image (cropped with
    the input); chunks of 7 windows, the last padded."""
    model, variables = alexnet
    x = photo_and_noise((64, 80))
    baseline = np.random.default_rng(4).uniform(-2, 2, (64, 80, 3)).astype(np.float32)
    cuts = ["relu1", "features.5", "features.7"]
    plain, split = both(model, variables, x, cuts, window=(13, 11), stride=(7, 6), batch_size=7,
                        baseline=baseline)
    assert split_calls and set(split_calls) == {("features.1", "features.5", "features.7")}
    assert plain[1].shape == (2, 9, 13)
    assert_same(plain, split, F32_TOL)


def test_alexnet_channel_windows_truncated_edges(alexnet, split_calls):
    """Windows two channels deep slid along the channels too, Captum's truncated edges
    (the last windows cut off by the border), one cut after pool1."""
    model, variables = alexnet
    x = photo_and_noise((64, 80))[:1]
    plain, split = both(model, variables, x, "pool1", targets=TARGETS[:1], window=(9, 10, 2),
                        stride=(8, 9, 1), edges="truncate", batch_size=16)
    assert split_calls and plain[1].shape == (1, 8, 9, 2)
    assert_same(plain, split, F32_TOL)


def test_alexnet_split_float64(alexnet, split_calls):
    """Float64, cuts after conv1 and pool2, windows 16 at strides (13, 15): 5 x 6
    windows, every border reached."""
    model, variables = alexnet
    with jax.enable_x64(True):
        v64 = jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float64), variables)
        x = jnp.asarray(photo_and_noise((64, 80)), jnp.float64)
        plain, split = both(model, v64, x, ["conv1", "pool2"], window=16, stride=(13, 15),
                            batch_size=32)
        plain, split = jax.tree_util.tree_map(np.asarray, (plain, split))
    assert split_calls
    assert plain[0].dtype == np.float64
    assert_same(plain, split, F64_TOL)


def test_vgg16_split_equals_plain(split_calls):
    """VGG16 on 32 x 48 (seeded random weights, He normal as torchvision's): cuts after
    conv1_1, pool1 and pool3, the rest from pool3's map; the objective is a channel of
    conv4_3 (so both programs stop there and compile fast)."""
    model, variables = jv.load("vgg16", weights=None, seed=0, num_classes=10)
    x = photo_and_noise((32, 48))
    target = objectives.Channel("conv4_3", np.array([3, 300]))
    plain, split = both(model, variables, x, ["relu1_1", "pool1", "pool3"], targets=target,
                        window=(6, 7), stride=(5, 6), batch_size=40)
    assert split_calls
    assert_same(plain, split, F32_TOL)


def test_googlenet_split_equals_plain(split_calls):
    """GoogLeNet (ceil-mode max pools, inception blocks, transform_input before conv1) on
    66 x 78, sides that are not multiples of the first stage's stride 4: cuts at maxpool1
    (the first stage runs through the model, for transform_input, on crops whose length
    must be congruent to the side modulo 4), maxpool2 (layer by layer) and inception3a
    (through the model: an inception block); the objective is a channel of inception3b,
    where both programs stop."""
    model, variables = jv.load("googlenet", weights=None, seed=0, num_classes=10,
                               aux_logits=False, transform_input=True)
    variables = he_normal(variables)
    x = photo_and_noise((66, 78))
    target = objectives.Channel("inception3b", np.array([5, 400]))
    plain, split = both(model, variables, x, ["maxpool1", "maxpool2", "inception3a"],
                        targets=target, window=(16, 14), stride=(9, 11), batch_size=64)
    assert split_calls
    modes = [stage.mode for stage in _reuse.plan(
        model, variables, x.shape, objectives.as_objective(target),
        A.window_positions(66, 16, 9), A.window_positions(78, 14, 11), (16, 14),
        ["maxpool1", "maxpool2", "inception3a"], 64)[0].stages]
    assert modes == ["model", "valid", "model", "last"]
    assert_same(plain, split, F32_TOL)


# --- a Sequential of jaxviz layers: ceil-mode pools with padding, "auto" ---------------------


def small_sequential():
    """A jaxviz Sequential: a strided padded conv, BatchNorm, a ceil-mode max pool with
    padding, a padded conv, a functional ReLU between modules (as in GoogLeNet's conv
    blocks), a 2x2 ceil-mode pool on an odd map, a padded conv, a head."""
    layers = [M.Conv2d(6, 5, stride=2, padding=2), M.BatchNorm2d(),
              M.MaxPool2d(3, 2, padding=1, ceil_mode=True), M.Conv2d(8, 3, padding=1),
              functools.partial(rules.relu, rule="gradient"), M.MaxPool2d(2, 2, ceil_mode=True),
              M.Conv2d(8, 3, padding=1), M.ReLU(), M.flatten, M.Linear(10)]
    names = ["0", "1", "2", "3", None, "5", "6", "7", None, "9"]
    return M.Sequential(layers, names=names)


def init_small(model, shape, dtype=jnp.float32):
    """Variables of ``small_sequential()`` drawn with numpy (shapes from an abstract
    ``model.init``): kernels N(0, 1/fan_in), vectors U(-1, 1), BatchNorm variances
    U(0.5, 1.5); then channels 0-2 of conv 0 are shifted far below zero and BatchNorm
    keeps them negative (scale 0.5, mean 0, bias -1), so that (1) the max pool after it
    pools negative values, where its -inf padding differs from a zero, and (2) values
    off the map that BatchNorm would make of zeros (-1) beat every real one: both must
    be put back as the full map's padding."""
    shapes = jax.eval_shape(model.init, jax.random.key(0), jax.ShapeDtypeStruct(shape, dtype))
    rng = np.random.default_rng(0)

    def draw(path, a):
        if len(a.shape) > 1:
            return rng.standard_normal(a.shape) / np.sqrt(np.prod(a.shape[:-1]))
        low = 0.5 if path[-1].key == "var" else -1.0
        return rng.uniform(low, 1.5 if low > 0 else 1.0, a.shape)

    v = jax.tree_util.tree_map_with_path(draw, shapes)
    v["params"]["0"]["bias"][:3] = -3.0
    v["params"]["1"]["scale"][:3], v["params"]["1"]["bias"][:3] = 0.5, -1.0
    v["batch_stats"]["1"]["mean"][:3] = 0.0
    return jax.tree_util.tree_map(lambda a: jnp.asarray(a, dtype), v)


@needs_cpu_auto
def test_sequential_with_ceil_mode_pools_auto_and_named(split_calls):
    """``reuse="auto"`` splits this model (the planner picks the cuts), and so do cuts
    after pool 2 and pool 5 (the first stage runs the conv, BatchNorm and the padded
    pool layer by layer, the second a padded conv, the functional ReLU and the ceil-mode
    pool); both agree with the plain path in float64."""
    model = small_sequential()
    with jax.enable_x64(True):
        x = jnp.asarray(np.random.default_rng(1).standard_normal((2, 29, 35, 3)))
        variables = init_small(model, x.shape, jnp.float64)
        plain = A.occlusion(model, variables, x, TARGETS, window=7, stride=(3, 4),
                            reuse="off", return_windows=True)
        plain = jax.tree_util.tree_map(np.asarray, plain)
        auto = A.occlusion(model, variables, x, TARGETS, window=7, stride=(3, 4),
                           return_windows=True)
        assert split_calls and len(set(split_calls)) == 1
        assert_same(plain, jax.tree_util.tree_map(np.asarray, auto), F64_TOL)
        got = A.occlusion(model, variables, x, TARGETS, window=7, stride=(3, 4),
                          reuse=["2", "5"], return_windows=True)
        assert split_calls[-1] == ("2", "5")
        assert_same(plain, jax.tree_util.tree_map(np.asarray, got), F64_TOL)


# --- the planner at the benchmark's size --------------------------------------------------------


@needs_cpu_auto
@pytest.mark.parametrize("name", ["alexnet", "vgg16", "googlenet"])
def test_auto_splits_at_224_with_window_32_stride_8(name):
    """Abstract only: the plan for one 224 px image, window 32, stride 8 (625 windows)
    cuts the spatial chain and is estimated cheaper than the plain path."""
    model = jv.models.create(name)
    x = jax.ShapeDtypeStruct((1, 224, 224, 3), jnp.float32)
    variables = jax.eval_shape(model.init, jax.random.key(0), x)
    positions = A.window_positions(224, 32, 8)
    obj = objectives.as_objective(5)
    found = _reuse.plan(model, variables, x.shape, obj, positions, positions, (32, 32), "auto", 64)
    assert found is not None
    plan, per_axis = found
    assert plan.cuts and plan.cost < 0.85 * plan.plain_cost
    assert per_axis["starts"][0].shape == (25, len(plan.stages))
    # no convolution of a layer-by-layer stage takes conv2d's tiny-map route (one matrix
    # product of patches) on its crop unless it does on the full map: the drops then
    # sum exactly the plain path's products in the plain path's way
    chain = _reuse._chain(jv.static.static(model), (1, 224, 224, 3),
                          _reuse._kernel_shapes(variables))
    for stage in plan.stages:
        if stage.mode != "valid":
            continue
        size = stage.crop
        for unit in chain.units[stage.units[0] + 1:stage.units[1] + 1]:
            for leaf in unit.leaves:
                if leaf.spatial is None:
                    continue
                kernel, stride, pad = leaf.spatial
                if isinstance(leaf.layer, jv.models.modules.Conv2d):
                    tiny = jv.models.layers._tiny_map
                    assert (not tiny((1, *size), kernel, stride, (0, 0))
                            or tiny((1, *leaf.n_in), kernel, stride, pad)), (stage, leaf.path)
                size = tuple((s - k) // t + 1 for s, k, t in zip(size, kernel, stride))
    assert _reuse.plan(model, variables, x.shape, obj, positions, positions, (32, 32), "off",
                       64) is None


def test_auto_keeps_the_plain_path_off_the_cpu(monkeypatch):
    """On a GPU (or TPU) backend "auto" plans nothing, the same windows that split on the
    CPU (previous test); cuts named by the caller still split there."""
    model = jv.models.create("alexnet")
    x = jax.ShapeDtypeStruct((1, 224, 224, 3), jnp.float32)
    variables = jax.eval_shape(model.init, jax.random.key(0), x)
    positions = A.window_positions(224, 32, 8)
    obj = objectives.as_objective(5)
    args = (model, variables, x.shape, obj, positions, positions, (32, 32))
    monkeypatch.setattr(_reuse.jax, "default_backend", lambda: "gpu")
    assert _reuse.plan(*args, "auto", 64) is None
    named = _reuse.plan(*args, ["conv2"], 64)
    assert named is not None and len(named[0].cuts) == 1


# --- when the split path does not apply -----------------------------------------------------------


class UserCNN(nn.Module):
    """A user's Linen CNN made of jaxviz layers, with a skip connection: a chain of
    convolutions by its calls, not by its data flow, so it cannot be split."""

    @nn.compact
    def __call__(self, x):
        x = M.ReLU()(M.Conv2d(6, 3, stride=2, padding=1)(x))
        y = M.ReLU()(M.Conv2d(6, 3, padding=1)(x))
        return M.Linear(5)((x + y).mean(axis=(1, 2)))


def test_user_model_takes_the_plain_path(split_calls):
    model = UserCNN()
    x = np.random.default_rng(2).standard_normal((2, 40, 48, 3)).astype(np.float32)
    variables = jax.jit(model.init)(jax.random.key(0), x)
    targets = np.array([1, 4], np.int32)
    auto = A.occlusion(model, variables, x, targets, window=5, stride=3)
    off = A.occlusion(model, variables, x, targets, window=5, stride=3, reuse="off")
    assert not split_calls
    np.testing.assert_array_equal(auto, off)
    with pytest.raises(InputError, match="reuse at named layers works on"):
        A.occlusion(model, variables, x, targets, window=5, stride=3, reuse="Conv2d_0")
    with pytest.raises(LayerError, match="no layer 'bogus'"):
        A.occlusion(model, variables, x, targets, window=5, stride=3, reuse="bogus")


def test_cuts_stay_before_the_layers_the_objective_reads(split_calls):
    """A channel objective at conv 3: named cuts at or after it are refused; one before it
    gives the plain path's drops."""
    model = small_sequential()
    x = np.random.default_rng(1).standard_normal((2, 29, 35, 3)).astype(np.float32)
    variables = init_small(model, x.shape)
    target = objectives.Channel("3", np.array([1, 5]))
    with pytest.raises(InputError, match="before every layer the objective reads"):
        A.occlusion(model, variables, x, target, window=7, stride=4, reuse="3")
    with pytest.raises(InputError, match="forward order"):
        A.occlusion(model, variables, x, target, window=7, stride=4, reuse=["2", "0"])
    with pytest.raises(InputError, match="spatial chain"):
        A.occlusion(model, variables, x, target, window=7, stride=4, reuse="9")
    plain, split = both(model, variables, x, "2", targets=target, window=7, stride=4)
    assert set(split_calls) == {("2",)}
    assert_same(plain, split, F32_TOL)


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True, eq=False)
class ReadsInput(objectives.ClassLogit):
    """A class logit plus the mean of the input itself: it reads x, not only the model."""

    def tile(self, reps):
        return ReadsInput(objectives.ClassLogit.tile(self, reps).target)

    def evaluate(self, found):
        return super().evaluate(found) + found.x.mean(axis=(1, 2, 3))


def test_an_objective_that_reads_the_input_falls_back(split_calls):
    """The split path runs the end of the network on a stand-in input; an objective that
    reads the input is caught on the traced program and the plain path runs instead."""
    model = small_sequential()
    x = np.random.default_rng(1).standard_normal((2, 29, 35, 3)).astype(np.float32)
    variables = init_small(model, x.shape)
    target = ReadsInput(TARGETS)
    plain, split = both(model, variables, x, "2", targets=target, window=7, stride=4)
    assert split_calls  # tried, then refused by the traced program's check
    assert_same(plain, split, F32_TOL)


def test_reuse_argument_is_checked(alexnet):
    model, variables = alexnet
    x = photo_and_noise((64, 80))
    for bad in ([], 3, [1]):
        with pytest.raises(InputError, match="expected reuse"):
            A.occlusion(model, variables, x, TARGETS, window=32, stride=32, reuse=bad)
    with pytest.raises(KeyError):
        A.occlusion(model, variables, x, TARGETS, window=32, stride=32, reuse="conv9")

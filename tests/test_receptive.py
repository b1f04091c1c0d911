"""Receptive fields against the measured gradient footprint, and hand-computed values.

A unit's receptive field is measured as the bounding box of the nonzero entries of its
input gradient (summed over the unit's channels, |.| summed over the input's), under the
``linear`` backward rule: ReLU's backward is the identity and max pooling's the average
pool's, so the gradient reaches every input pixel the unit's window covers, not only an
arg-max path. The weights are drawn positive (uniform in [0.5, 1.5] / fan-in, BatchNorm
statistics and scales positive too), so no sum of products can cancel to zero: the
nonzero set is exactly the set of pixels connected to the unit. Float64, so that no
entry far out in the field underflows. Each group of layers runs at the smallest input
at which the centre unit of its deepest layer sees only pixels inside the image (so the
field's size is measured, not a clipped one); the corner unit (0, 0) checks the offset
and the clipping at the padding.

Weights are drawn with numpy for the layers the measurement runs through only (the
classifiers are never reached), which keeps random initialization out of the timing.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxviz as jv
from jaxviz.analysis import receptive as R
from jaxviz.analysis.receptive import Field
from jaxviz.models.googlenet import GoogLeNet
from jaxviz.models.modules import AdaptiveAvgPool2d, Conv2d, Linear, MaxPool2d, ReLU, Sequential
from jaxviz.models.modules import flatten as torch_flatten

# model -> [(input side, layers measured at it)]; each side is the smallest at which the
# centre unit of the deepest of its layers sees only pixels inside the image (checked by
# test_the_centre_units_fields_are_measured_whole)
MEASURED = {
    "alexnet": [(63, ["conv1", "relu1", "pool1", "conv2"]), (191, ["pool2", "conv3", "conv5"])],
    "vgg16": [(56, ["conv1_1", "pool1", "conv2_2", "conv3_3", "pool3"]), (104, ["conv4_3"]),
              (208, ["conv5_3"])],
    # one side for all: GoogLeNet's time is in compiling, not in running
    "googlenet": [(116, ["conv1", "maxpool1", "conv3", "maxpool2", "inception3a.branch1",
                         "inception3a.branch4.0", "inception3a", "inception3b", "maxpool3",
                         "inception4a.branch1", "inception4a"])],
}


# transform_input: a per-pixel function before the first module; no training-only heads
GOOGLENET = GoogLeNet(transform_input=True, aux_logits=False)


def build(name: str) -> nn.Module:
    return GOOGLENET if name == "googlenet" else jv.models.create(name)


def positive_variables(model: nn.Module, side: int, skip=("classifier", "fc")) -> dict:
    """float64 numpy variables, every entry positive, for all but the ``skip`` subtrees."""
    x = jax.ShapeDtypeStruct((1, side, side, 3), jnp.float32)
    shapes = jax.eval_shape(model.init, jax.random.key(0), x)
    rng = np.random.default_rng(0)

    def draw(leaf):
        fan_in = int(np.prod(leaf.shape[:-1])) if len(leaf.shape) > 1 else 1
        return rng.uniform(0.5, 1.5, leaf.shape) / fan_in

    kept = {col: {k: v for k, v in tree.items() if k not in skip} for col, tree in shapes.items()}
    return jax.tree.map(draw, kept)


class _Done(Exception):
    pass


def outputs(model: nn.Module, variables, x, paths: set[str]) -> dict:
    """The outputs of the layers at ``paths``; the forward pass stops when it has them."""
    got = {}

    def grab(next_fun, args, kwargs, context):
        out = next_fun(*args, **kwargs)
        path = ".".join(context.module.path)
        if context.method_name == "__call__" and path in paths:
            got[path] = out
            if len(got) == len(paths):
                raise _Done
        return out

    try:
        with nn.intercept_methods(grab):
            model.apply(variables, x)
    except _Done:
        pass
    return got


def footprints(model: nn.Module, variables, side: int, queries) -> list[tuple[int, ...]]:
    """``queries``: [(path, (i, j))]. The bounding box (y0, x0, y1, x1), exclusive ends,
    of each unit's input gradient under the ``linear`` rule: one compiled program, one
    image of the batch per query."""
    if "rules" in model.__dataclass_fields__:
        model = model.clone(rules="linear")
    paths = {path for path, _ in queries}

    def total(x, variables):
        acts = outputs(model, variables, x, paths)
        return sum(acts[path][q, i, j, :].sum() for q, (path, (i, j)) in enumerate(queries))

    with jax.enable_x64(True):
        x = jnp.zeros((len(queries), side, side, 3), jnp.float64)
        g = np.asarray(jax.jit(jax.grad(total))(x, variables))  # weights as an argument
    assert g.dtype == np.float64
    boxes = []
    for q in range(len(queries)):
        hit = np.abs(g[q]).sum(-1) > 0
        rows, cols = np.flatnonzero(hit.any(1)), np.flatnonzero(hit.any(0))
        assert len(rows), queries[q]
        # the footprint is the whole box, not only its outline
        assert hit[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1].all(), queries[q]
        boxes.append((int(rows[0]), int(cols[0]), int(rows[-1]) + 1, int(cols[-1]) + 1))
    return boxes


def measure(name: str):
    """[(layer, side, position, measured box, predicted box, field)] for ``MEASURED``."""
    model = build(name)
    variables = positive_variables(model, 224)
    aliases = jv.capture.aliases(model)
    rows = []
    for side, layers in MEASURED[name]:
        table = {info.path: info for info in jv.layer_names(model, side)}
        queries, fields = [], []
        for layer in layers:
            path = aliases.get(layer, layer)
            n = table[path].shape[1]
            field = R.receptive_field(model, layer, side)
            for position in (((n - 1) // 2, (n - 1) // 2), (0, 0)):
                queries.append((path, position))
                fields.append((layer, field))
        measured = footprints(model, variables, side, queries)
        for (path, position), (layer, field), box in zip(queries, fields, measured):
            rows.append((layer, side, position, box,
                         R.patch_bounds(field, position, (side, side)), field))
    return model, rows


@pytest.fixture(scope="module", params=list(MEASURED))
def measured(request):
    return request.param, *measure(request.param)


def test_fields_equal_the_measured_gradient_footprint(measured):
    name, _, rows = measured
    wrong = [(layer, side, position, box, want)
             for layer, side, position, box, want, _ in rows if box != want]
    assert not wrong, f"{name}: (layer, side, unit, measured, predicted): {wrong}"


def test_the_centre_units_fields_are_measured_whole(measured):
    """The sizes are chosen so the centre unit's field is inside the image: the measured
    box is the field's full size, so the size itself is checked, not a clipped one. The
    corner unit's field is clipped by the padding at the top left only."""
    name, _, rows = measured
    for layer, side, position, box, _, field in rows:
        if position != (0, 0):
            assert (box[2] - box[0], box[3] - box[1]) == field.size, (name, layer, box, field)
        else:
            assert box[:2] == (0, 0) and box[2] < side and box[3] < side, (name, layer, box)
            assert box[2:] == tuple(o + s for o, s in zip(field.offset, field.size))


def test_known_values():
    """By hand: (kernel k, stride s, padding p) layer by layer, size += (k - 1) * jump,
    jump *= s, offset -= p * jump."""
    vgg = jv.models.create("vgg16")
    # 13 3x3 convolutions (pad 1) and 4 2x2 pools before conv5_3: 1 + 2*(2*1 + 2*2 + 3*4 +
    # 3*8 + 3*16) + (1 + 2 + 4 + 8) = 196; jump 16; offset -(2*1 + 2*2 + 3*4 + 3*8 + 3*16)
    assert R.receptive_field(vgg, "conv5_3") == Field((196, 196), (16, 16), (-90, -90))
    assert R.receptive_field(vgg, "pool5") == Field((212, 212), (32, 32), (-90, -90))
    alexnet = jv.models.create("alexnet")
    # conv1 11/4 p2: 11, jump 4, -2; pool 3/2: 19, 8; conv2 5 p2: 51, -18; pool 3/2: 67, 16;
    # conv3, conv4, conv5 3 p1: 99, 131, 163, offsets -34, -50, -66
    assert R.receptive_field(alexnet, "conv1") == Field((11, 11), (4, 4), (-2, -2))
    assert R.receptive_field(alexnet, "conv5") == Field((163, 163), (16, 16), (-66, -66))
    assert R.receptive_field(alexnet, "features.12") == Field((195, 195), (32, 32), (-66, -66))
    g = GOOGLENET
    # conv1 7/2 p3: 7, 2, -3; maxpool1 3/2: 11, 4; conv3 3 p1: 19, -7; maxpool2 3/2: 27, 8;
    # inception3a's 3x3 branches (pad 1) make the block's field: 43, -15
    fields = R.receptive_fields(g)
    assert fields["maxpool2"] == Field((27, 27), (8, 8), (-7, -7))
    assert fields["inception3a.branch1"] == Field((27, 27), (8, 8), (-7, -7))
    assert fields["inception3a"] == Field((43, 43), (8, 8), (-15, -15))
    assert fields["maxpool4"] == Field((251, 251), (32, 32), (-103, -103))
    assert fields["inception5b"] == Field((379, 379), (32, 32), (-167, -167))
    # the global average pool: one unit that sees the whole image
    assert R.patch_bounds(fields["avgpool"], (0, 0), (224, 224)) == (0, 0, 224, 224)


def test_inception_is_the_union_of_its_branches():
    fields = R.receptive_fields(GOOGLENET, 116)
    for block in ("inception3a", "inception4a"):
        branches = [fields[f"{block}.branch{b}"] for b in (1, 2, 3, 4)]
        assert len({f.stride for f in branches}) == 1
        lo = min(f.offset[0] for f in branches)
        hi = max(f.offset[0] + f.size[0] for f in branches)
        assert fields[block].offset == (lo, lo) and fields[block].size == (hi - lo, hi - lo)
        assert fields[block].size > fields[f"{block}.branch1"].size


def test_order_aliases_and_layers_without_a_map():
    alexnet = jv.models.create("alexnet")
    fields = R.receptive_fields(alexnet)
    table = [info.path for info in jv.layer_names(alexnet)]
    assert list(fields) == [p for p in table if p in fields]  # forward order
    assert not any(p.startswith("classifier") for p in fields)
    assert R.receptive_field(alexnet, "relu5") == R.receptive_field(alexnet, "features.11")
    with pytest.raises(jv.LayerError, match="no spatial map"):
        R.receptive_field(alexnet, "fc6")
    with pytest.raises(jv.LayerError, match="Closest"):
        R.receptive_field(alexnet, "conv55")
    # the adaptive pool is the identity at 224 (6 x 6 -> 6 x 6) ...
    assert fields["avgpool"] == fields["features.12"]
    # ... and has uneven bins at 191 (5 x 5 -> 6 x 6): no regular field
    assert "avgpool" not in R.receptive_fields(alexnet, 191)
    with pytest.raises(jv.LayerError, match="uneven"):
        R.receptive_field(alexnet, "avgpool", 191)
    vgg = jv.models.create("vgg16")
    assert R.receptive_field(vgg, "avgpool") == R.receptive_field(vgg, "pool5")  # 7 -> 7
    lenet, _ = jv.load("lenet_digits")
    fields = R.receptive_fields(lenet)  # at its usual 28 px
    assert fields["features.6"] == Field((24, 24), (4, 4), (-10, -10))
    assert "pool" not in fields  # global max pool: no map
    with pytest.raises(jv.LayerError, match="no spatial map"):
        R.receptive_field(lenet, "gmp")
    with pytest.raises(jv.InputError, match="vectors"):
        R.receptive_fields(jv.models.create("mlp2d"))


# --- users' models ----------------------------------------------------------------------------


class FlaxConvs(nn.Module):
    """flax.linen.Conv with SAME padding (an even kernel: more padding after than before;
    a stride of 2: padding that depends on the input's parity), kernel dilation, explicit
    asymmetric padding, and jaxviz's rule-following ReLU and max pool."""

    rules: str = "gradient"

    @nn.compact
    def __call__(self, x, *, train: bool = False):
        x = nn.Conv(4, (4, 4))(x)                                 # SAME: 1 before, 2 after
        x = ReLU(self.rules)(x)
        x = nn.Conv(4, (3, 3), strides=2)(x)                      # SAME, stride 2
        x = MaxPool2d(3, 2, padding=1, ceil_mode=True, rule=self.rules)(x)
        x = nn.Conv(4, (3, 3), kernel_dilation=2, padding="VALID")(x)
        x = nn.BatchNorm(use_running_average=True)(x)
        x = nn.Conv(4, (3, 2), padding=((2, 0), (1, 1)))(x)
        return nn.Dense(3)(x.mean(axis=(1, 2)))


def user_sequential(rules: str = "gradient") -> Sequential:
    """A Sequential built from a list (unhashable), as a user would write it."""
    return Sequential([Conv2d(4, 3, padding=1), ReLU(rules), MaxPool2d(2, 2, rule=rules),
                       Conv2d(4, 5, stride=2, padding=2), ReLU(rules), AdaptiveAvgPool2d(1),
                       torch_flatten, Linear(3)], names=["0", "1", "2", "3", "4", "5", None, "7"])


def _user_rows(model, side):
    variables = positive_variables(model, side, skip=())
    table = jv.layer_names(model, side)
    fields = R.receptive_fields(model, side)
    queries = []
    for info in table:
        if info.path in fields:
            n = info.shape[1]
            queries += [(info.path, ((n - 1) // 2, (n - 1) // 2)), (info.path, (0, 0))]
    measured = footprints(model, variables, side, queries)
    return [(path, position, box, R.patch_bounds(fields[path], position, (side, side)))
            for (path, position), box in zip(queries, measured)]


@pytest.mark.parametrize("make,side", [(FlaxConvs, 40), (FlaxConvs, 41), (user_sequential, 24)])
def test_users_models_equal_the_measured_footprint(make, side):
    model = make(rules="linear")  # a Sequential has no rules field to switch
    rows = _user_rows(model, side)
    assert rows
    wrong = [row for row in rows if row[2] != row[3]]
    assert not wrong, wrong


def test_an_edge_unit_can_see_less_than_its_window():
    """The documented limit of the clipped window: a stride-2 convolution without padding
    on 24 px leaves row 23 unread, and the padded convolution after it gives its last
    unit a window (rows 18..24) that reaches it; the gradient stops at row 22."""
    model = Sequential([Conv2d(4, 3, stride=2), Conv2d(4, 3, padding=1)])
    field = R.receptive_field(model, "1", 24)
    assert field == Field((7, 7), (2, 2), (-2, -2))
    assert R.patch_bounds(field, (10, 10), (24, 24)) == (18, 18, 24, 24)
    variables = positive_variables(model, 24, skip=())
    assert footprints(model, variables, 24, [("1", (10, 10))]) == [(18, 18, 23, 23)]


@pytest.mark.parametrize("side,before", [(40, 0), (41, 1)])
def test_flax_conv_fields(side, before):
    """By hand; ``before``: the rows SAME pads before a 3x3 stride-2 convolution, (out - 1)
    * 2 + 3 - side halved down: 0 at 40 px, 1 at 41."""
    fields = R.receptive_fields(FlaxConvs(), side)
    assert fields["Conv_0"] == Field((4, 4), (1, 1), (-1, -1))
    o = -1 - before
    assert fields["Conv_1"] == Field((6, 6), (2, 2), (o, o))
    assert fields["MaxPool2d_0"] == Field((10, 10), (4, 4), (o - 2, o - 2))
    assert fields["Conv_2"] == Field((26, 26), (4, 4), (o - 2, o - 2))  # dilation 2: +2*2*4
    assert fields["Conv_3"] == Field((34, 30), (4, 4), (o - 10, o - 6))  # pads 2, 1 before
    assert "Dense_0" not in fields


class FunctionalPool(nn.Module):
    @nn.compact
    def __call__(self, x, *, train: bool = False):
        x = nn.relu(nn.Conv(4, (3, 3))(x))  # a per-pixel function: followed
        x = nn.max_pool(x, (2, 2), strides=(2, 2))  # changes the map outside any module
        return nn.Conv(4, (3, 3))(x)


class Strided(nn.Module):
    """A module of a kind the fields do not know that changes the map's size."""

    @nn.compact
    def __call__(self, x, *, train: bool = False):
        return x[:, ::2, ::2]


class UnknownKind(nn.Module):
    @nn.compact
    def __call__(self, x, *, train: bool = False):
        x = nn.Conv(4, (3, 3))(x)
        x = Strided()(x)
        return nn.Conv(4, (3, 3))(x)


def test_what_cannot_be_followed_raises_naming_it():
    with pytest.raises(jv.LayerError, match=r"'Conv_1'.*max_pool"):
        R.receptive_field(FunctionalPool(), "Conv_1", 16)
    assert R.receptive_field(FunctionalPool(), "Conv_0", 16) == Field((3, 3), (1, 1), (-1, -1))
    with pytest.raises(jv.LayerError, match="Conv_1"):
        R.receptive_fields(FunctionalPool(), 16)
    with pytest.raises(jv.LayerError, match=r"'Strided_0' \(Strided\)"):
        R.receptive_field(UnknownKind(), "Conv_1", 16)
    with pytest.raises(jv.LayerError, match="Strided"):
        R.receptive_field(UnknownKind(), "Strided_0", 16)


# --- patches ----------------------------------------------------------------------------------


def test_patch_bounds():
    f = Field((5, 7), (2, 3), (-2, -3))
    assert R.patch_bounds(f, (0, 0), (10, 10)) == (0, 0, 3, 4)
    assert R.patch_bounds(f, (2, 3), (10, 10)) == (2, 6, 7, 10)
    assert R.patch_bounds(f, (5, 1), (10, 20)) == (8, 0, 10, 7)
    with pytest.raises(jv.InputError, match="outside"):
        R.patch_bounds(f, (9, 0), (10, 10))
    with pytest.raises(jv.InputError, match="non-negative"):
        R.patch_bounds(f, (-1, 0), (10, 10))
    with pytest.raises(jv.InputTypeError):
        R.patch_bounds(f, (1.5, 0), (10, 10))


def test_crop_patches():
    f = Field((5, 7), (2, 3), (-2, -3))
    images = np.arange(2 * 10 * 12 * 2, dtype=np.float32).reshape(2, 10, 12, 2)
    ids, positions = np.array([1, 0, 1]), np.array([[0, 0], [2, 3], [4, 4]])
    patches = R.crop_patches(images, ids, positions, f, fill=-1.0)
    assert patches.shape == (3, 5, 7, 2) and patches.dtype == np.float32
    padded = np.pad(images, ((0, 0), (5, 5), (7, 7), (0, 0)), constant_values=-1.0)
    for patch, k, (i, j) in zip(patches, ids, positions):
        y, x = -2 + 2 * i + 5, -3 + 3 * j + 7
        np.testing.assert_array_equal(patch, padded[k, y:y + 5, x:x + 7])
    assert R.crop_patches(images, np.zeros(0, int), np.zeros((0, 2), int), f).shape == (0, 5, 7, 2)
    with pytest.raises(jv.InputError, match=r"\(M, 2\)"):
        R.crop_patches(images, ids, positions[:2], f)
    with pytest.raises(jv.InputError, match="ids"):
        R.crop_patches(images, ids + 1, positions, f)
    with pytest.raises(jv.InputError, match=r"\(N, H, W, C\)"):
        R.crop_patches(images[0], ids, positions, f)

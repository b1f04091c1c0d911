"""Dataset examples (jaxviz/analysis/examples.py) and image streams (jaxviz/stream.py).

top_k is compared with numpy's top-k over every activation of the same images (exact:
the same float32 activations, so equality, ties included), at several batch sizes, under
4 forced host devices, and fed by streams. The two-process case is tests/test_distributed.py.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import jax
import numpy as np
import pytest
from PIL import Image

import jaxviz as jv
from jaxviz import data, parallel, stream
from jaxviz.analysis import examples, receptive
from conftest import xla_flags_like_this_process

N = 23


@pytest.fixture(scope="module")
def digits():
    model, variables = jv.load("lenet_digits")
    x, _ = jv.data.digits("test")
    return model, variables, x[:N]


def brute_top_k(a: np.ndarray, k: int):
    """numpy's top-k of every channel of (N, H, W, C) maps: value descending, then image,
    then row-major position."""
    n, h, w, c = a.shape
    values = np.moveaxis(a, -1, 0).reshape(c, -1)
    order = np.stack([np.lexsort((np.arange(n * h * w), -values[ch]))[:k] for ch in range(c)])
    return (np.take_along_axis(values, order, 1), order // (h * w),
            np.stack(np.divmod(order % (h * w), w), axis=-1))


@pytest.fixture(scope="module")
def expected(digits):
    model, variables, x = digits
    acts = jv.activations(model, variables, x, ["conv1", "relu2"])
    return {name: brute_top_k(np.asarray(a), 9) for name, a in acts.items()}


EXACT = jax.default_backend() == "cpu"
"""On CPU two programs computing the same activations agree to the bit, so results are
compared exactly (ties included). On a GPU, XLA may pick other convolution algorithms for
another program (or batch size), and the backward convolutions may be nondeterministic:
values are then compared to float32 rounding (1e-5 relative), and ranks among values
that close may legitimately swap."""


def assert_same(found, want):
    values, ids, positions = want
    if not EXACT:
        np.testing.assert_allclose(found.values, values, rtol=1e-5, atol=1e-6)
        return
    np.testing.assert_array_equal(found.values, values)
    np.testing.assert_array_equal(found.ids, ids)
    np.testing.assert_array_equal(found.positions, positions)


@pytest.mark.parametrize("layer", ["conv1", "relu2"])
@pytest.mark.parametrize("batch_size", [1, 6, N])
def test_top_k_is_numpy_top_k_of_every_activation(digits, expected, layer, batch_size):
    model, variables, x = digits
    found = jv.analysis.top_k(model, variables, x, layer, k=9, batch_size=batch_size)
    assert found.values.shape == (found.values.shape[0], 9) and found.positions.shape[-1] == 2
    assert found.count == N and found.layer == layer
    assert_same(found, expected[layer])


def test_ties_are_broken_by_image_then_position(digits, expected):
    """relu2 has channels whose ninth value is a ReLU zero: among equal values, top_k lists
    the lower image first, then the earlier position (row-major), at any batch size."""
    model, variables, x = digits
    assert (expected["relu2"][0][:, -1] == 0).any(), "the case should hold ties"
    found = jv.analysis.top_k(model, variables, x, "relu2", k=9, batch_size=5)
    width = np.asarray(jv.activations(model, variables, x[:1], ["relu2"])["relu2"]).shape[2]
    order = found.ids * 10 ** 6 + found.positions[..., 0] * width + found.positions[..., 1]
    for c in range(found.values.shape[0]):
        for a, b in zip(range(8), range(1, 9)):
            if found.values[c, a] == found.values[c, b]:
                assert order[c, a] < order[c, b], (c, a, found.ids[c], found.positions[c])


def test_streams_and_iterables_give_the_same_answer(digits, expected):
    model, variables, x = digits
    want = expected["relu2"]
    assert_same(jv.analysis.top_k(model, variables, stream.images(x, batch_size=5), "relu2"), want)
    assert_same(jv.analysis.top_k(model, variables, (x[i:i + 4] for i in range(0, N, 4)),
                                  "relu2"), want)
    batches = list(stream.images(x, batch_size=10))
    assert_same(jv.analysis.top_k(model, variables, batches, "relu2"), want)


def test_top_k_on_four_devices(tmp_path):
    """A process with 4 (virtual) CPU devices shards every batch over them. (numpy's top-k
    is taken of that process's own activations: on a machine whose default backend is a
    GPU, this process's CPU activations differ from the GPU's in the last bits.)"""
    out = tmp_path / "four.npz"
    code = textwrap.dedent(f"""
        import jax, numpy as np
        assert jax.local_device_count() == 4, jax.devices()
        import jaxviz as jv
        model, variables = jv.load("lenet_digits")
        x = jv.data.digits("test")[0][:{N}]
        got = {{"acts": np.asarray(jv.activations(model, variables, x, ["relu2"])["relu2"])}}
        for bs in (1, 8, {N}):
            r = jv.analysis.top_k(model, variables, x, "relu2", k=9, batch_size=bs)
            got.update({{f"v{{bs}}": r.values, f"i{{bs}}": r.ids, f"p{{bs}}": r.positions}})
        np.savez({str(out)!r}, **got)
    """)
    env = dict(os.environ, XLA_FLAGS=xla_flags_like_this_process(
        "--xla_force_host_platform_device_count=4"),
               JAX_PLATFORMS="cpu")
    subprocess.run([sys.executable, "-c", code], check=True, env=env, timeout=300)
    got = np.load(out)
    want = brute_top_k(got["acts"], 9)
    for bs in (1, 8, N):
        assert_same(examples.TopK(got[f"v{bs}"], got[f"i{bs}"], got[f"p{bs}"]), want)


def test_patches_are_the_receptive_fields(digits):
    model, variables, x = digits
    found = jv.analysis.top_k(model, variables, x, "conv2", k=3)
    crops = examples.patches(x, model, found)
    field = receptive.receptive_field(model, "conv2", x.shape[1:])
    assert crops.shape == (found.ids.shape[0], 3, *field.size, 1)
    for c in (0, 5):
        for j in range(3):
            i, (row, col) = found.ids[c, j], found.positions[c, j]
            y0, x0, y1, x1 = receptive.patch_bounds(field, (row, col), x.shape[1:3])
            ty, tx = y0 - (field.offset[0] + row * field.stride[0]), x0 - (
                field.offset[1] + col * field.stride[1])
            np.testing.assert_array_equal(crops[c, j, ty:ty + y1 - y0, tx:tx + x1 - x0],
                                          x[i, y0:y1, x0:x1])
            outside = np.ones(field.size, bool)
            outside[ty:ty + y1 - y0, tx:tx + x1 - x0] = False
            assert (crops[c, j][outside] == 0).all()


def test_projection_of_a_first_layer_unit_is_its_filter(digits):
    """Closed form: conv1 is the first layer, so the DeconvNet projection of one activation
    a at (row, col) of channel c is a times filter c, placed on the unit's field (the part
    inside the image), and zero elsewhere. Float32: 1e-6 of the largest entry."""
    model, variables, x = digits
    found = jv.analysis.top_k(model, variables, x, "conv1", k=2)
    proj = examples.projections(model, variables, x, found, batch_size=5)
    kernel = np.asarray(jv.analysis.maps.kernel(model, variables, "conv1"))  # (F, kh, kw, in)
    field = receptive.receptive_field(model, "conv1", x.shape[1:])
    assert proj.shape == (kernel.shape[0], 2, *x.shape[1:])
    for c in range(kernel.shape[0]):
        for j in range(2):
            row, col = found.positions[c, j]
            padded = np.zeros((x.shape[1] + 2 * field.size[0], x.shape[2] + 2 * field.size[1], 1),
                              np.float32)
            y = field.offset[0] + row * field.stride[0] + field.size[0]
            xx = field.offset[1] + col * field.stride[1] + field.size[1]
            padded[y:y + field.size[0], xx:xx + field.size[1]] = found.values[c, j] * kernel[c]
            want = padded[field.size[0]:field.size[0] + x.shape[1],
                          field.size[1]:field.size[1] + x.shape[2]]
            scale = np.abs(want).max()
            assert np.abs(proj[c, j] - want).max() <= 1e-6 * scale


def test_selected_channels_keep_their_own_projections(digits):
    """select() records the layer's channels, so a subset projects each row through its
    own channel (not the row number), and example_pictures of one channel equals that
    channel's picture among all (identical: same images, same settings)."""
    model, variables, x = digits
    found = jv.analysis.top_k(model, variables, x, "conv2", k=3)
    every = examples.projections(model, variables, x, found, batch_size=8)
    picked = examples.select(found, [5, 2])
    assert picked.channel_ids().tolist() == [5, 2]
    np.testing.assert_array_equal(picked.ids, found.ids[[5, 2]])
    some = examples.projections(model, variables, x, picked, batch_size=8)
    np.testing.assert_allclose(some, every[[5, 2]], rtol=0, atol=1e-6 * np.abs(every).max())
    assert examples.select(picked, [2]).channel_ids().tolist() == [2]
    with pytest.raises(jv.InputError, match="channel 7 is not in"):
        examples.select(picked, [7])
    one = examples.example_pictures(model, variables, x, found, [5], batch_size=8)
    both = examples.example_pictures(model, variables, x, found, [2, 5], batch_size=8)
    np.testing.assert_array_equal(one[5], both[5])


def test_draw_examples(digits):
    model, variables, x = digits
    found = jv.analysis.top_k(model, variables, x, "conv2", k=4)
    crops = examples.patches(x, model, found)
    proj = examples.projections(model, variables, x, found)
    field = receptive.receptive_field(model, "conv2", x.shape[1:])
    cropped = receptive.crop_patches(proj.reshape(-1, *x.shape[1:]), np.arange(proj.shape[0] * 4),
                                     found.positions.reshape(-1, 2), field)
    picture = examples.draw_examples(crops, cropped.reshape(crops.shape), channel=3, scale="unit",
                                     zoom=2)
    h, w = field.size
    assert picture.dtype == np.uint8 and picture.shape == (2 * 2 * h + 3 * 2, 4 * 2 * w + 5 * 2, 3)
    with pytest.raises(jv.InputError, match="channel"):
        examples.draw_examples(crops, channel=crops.shape[0])


def test_top_k_refuses_bad_requests_clearly(digits):
    model, variables, x = digits
    with pytest.raises(jv.InputError, match="positions"):
        jv.analysis.top_k(model, variables, x[:1], "relu2", k=10 ** 6)
    with pytest.raises(jv.LayerError, match="spatial"):
        jv.analysis.top_k(model, variables, x, "logits")
    with pytest.raises(jv.LayerError):
        jv.analysis.top_k(model, variables, x, "conv9")
    with pytest.raises(jv.InputError, match="no batches"):
        jv.analysis.top_k(model, variables, iter([]), "relu2")
    with pytest.raises(jv.InputError, match="one shape"):
        jv.analysis.top_k(model, variables, [x[:2], x[:2, :20, :20]], "relu2")
    with pytest.raises(jv.InputTypeError):
        jv.analysis.top_k(model, variables, "digits", "relu2")


# --------------------------------------------------------------------------- streams


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """An ImageFolder layout: two classes, files of different sizes, a hidden file."""
    root = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    for cls in ("zebra", "ant"):
        (root / cls).mkdir()
        for i in range(4):
            side = 30 + 3 * i
            Image.fromarray(rng.integers(0, 256, (side, side + 5, 3), np.uint8)).save(
                root / cls / f"{i}.png")
    (root / "ant" / ".hidden.png").write_bytes(b"not an image")
    return root


def test_folder_stream_is_preprocess_of_the_sorted_files(folder):
    s = stream.images(folder, batch_size=3, size=24, resize=28)
    assert s.classes == ["ant", "zebra"] and len(s) == 3
    assert [p.parent.name for p in s.paths] == ["ant"] * 4 + ["zebra"] * 4
    batches = list(s)
    np.testing.assert_array_equal(np.concatenate([b.indices for b in batches]), np.arange(8))
    np.testing.assert_array_equal(np.concatenate([b.labels for b in batches]), [0] * 4 + [1] * 4)
    np.testing.assert_array_equal(np.concatenate([b.images for b in batches]),
                                  data.preprocess(s.paths, 24, resize=28))
    assert s.position == 8 and len(s) == 0


def test_a_stream_resumes_from_its_position(folder):
    s = stream.images(folder, batch_size=3, size=24, resize=28)
    it = iter(s)
    next(it)
    resumed = stream.images(folder, batch_size=3, size=24, resize=28, start=s.position)
    assert [b.indices.tolist() for b in resumed] == [[3, 4, 5], [6, 7]]


def test_flat_folder_has_no_labels(folder):
    s = stream.images(folder / "zebra", batch_size=8, size=24)
    (batch,) = list(s)
    assert s.classes == [] and (batch.labels == -1).all() and len(batch.indices) == 4


def test_shares_cover_the_set_in_process_order():
    for n in (0, 1, 7, 8, 41):
        for count in (1, 2, 3, 4):
            bounds = [parallel.share_bounds(n, p, count) for p in range(count)]
            assert bounds[0][0] == 0 and bounds[-1][1] == n
            assert all(a[1] == b[0] for a, b in zip(bounds, bounds[1:]))
            sizes = [b - a for a, b in bounds]
            assert max(sizes) - min(sizes) <= 1
    assert parallel.share(5) == slice(0, 5)  # one process: everything


def test_streams_refuse_bad_sets_clearly(folder, tmp_path):
    with pytest.raises(FileNotFoundError):
        stream.images(tmp_path / "missing")
    with pytest.raises(jv.InputError, match="found none"):
        stream.images(tmp_path)
    with pytest.raises(jv.InputError, match="batch_size"):
        stream.images(folder, batch_size=0)
    with pytest.raises(jv.InputTypeError, match="float"):
        stream.images(np.zeros((2, 8, 8, 3), np.uint8))
    with pytest.raises(jv.InputError, match="labels"):
        stream.images(np.zeros((2, 8, 8, 3), np.float32), labels=[1, 2, 3])
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "broken.png").write_bytes(b"not a png")
    with pytest.raises(jv.InputError, match="broken.png"):
        list(stream.images(bad))


def test_patches_from_a_stream_read_the_images_by_index(folder, digits):
    """A folder stream gives random access by image index: the same patches and
    projections as the array of the same images."""
    model, variables, _ = digits
    s = stream.images(folder, batch_size=3, size=28, resize=28, grey=True)
    x = np.concatenate([b.images for b in stream.images(folder, batch_size=8, size=28,
                                                        resize=28, grey=True)])
    found = jv.analysis.top_k(model, variables, s, "conv2", k=2)
    # the same batch size both ways: on a GPU, convolution algorithms (and their last bits)
    # can depend on the batch size
    assert_same(found, jv.analysis.top_k(model, variables, x, "conv2", k=2, batch_size=3)[:3])
    np.testing.assert_array_equal(examples.patches(s, model, found),
                                  examples.patches(x, model, found))
    np.testing.assert_allclose(examples.projections(model, variables, s, found),
                               examples.projections(model, variables, x, found),
                               rtol=0 if EXACT else 1e-5, atol=0 if EXACT else 1e-6)
    with pytest.raises(jv.InputError, match="image index"):
        s.image(8)


def test_top_k_unpacks_as_the_contract_triple(digits):
    """docs/architecture.md's contract: ``values, ids, positions = top_k(...)``."""
    model, variables, x = digits
    found = jv.analysis.top_k(model, variables, x[:5], "conv1", k=2)
    values, ids, positions = found
    assert values.shape == (16, 2) and ids.shape == (16, 2) and positions.shape == (16, 2, 2)
    assert (found.layer, found.count) == ("conv1", 5) and found.channels is None
    assert "conv1" in repr(found)

"""Feature synthesis: parameterizations, transforms, regularizers (closed forms), the
normalized-gradient transform, sweeps (chunk- and device-invariance, reproducibility,
resume), and a model whose answer is known (hand-set filters).

Sweep invariance is checked in float64: with float32, XLA:CPU picks convolution
blockings by batch size, so a conv5 activation differs by ~1e-7 between batch 1 and
batch 5 and Adam (which divides by the root of a tiny second moment) turns that into
visible pixel differences after a few steps. In float64 the same blockings differ by
~1e-16 and the images agree to 1e-12, which shows that nothing couples the images of
a chunk. Bitwise reproducibility (same key, same chunking) is checked in float32.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxviz as jv
from jaxviz import _random
from conftest import F32_TOL, F64_TOL, count_primitive, max_rel_err, xla_flags_like_this_process
from jaxviz import objectives as obj
from jaxviz.synthesis import optimize, param, regularizers, transforms

# --- parameterizations ------------------------------------------------------------------


def test_pixels_init_and_round_trip():
    key = jax.random.key(0)
    p = param.Pixels(0.2, 0.3)
    v = p.init(key, (5, 7))
    assert v.shape == (5, 7, 3) and float(v.min()) >= 0.2 and float(v.max()) < 0.3
    s = param.Pixels(std=0.01).init(key, 16)
    assert s.shape == (16, 16, 3) and 0.005 < float(s.std()) < 0.02
    img = _random.uniform(jax.random.key(1), (2, 6, 6, 3), minval=0.05, maxval=0.95)
    for p in (param.Pixels(activation="sigmoid"), param.Pixels(activation="none"),
              param.Pixels(scale=jnp.array(data_std()), offset=jnp.array(data_mean()))):
        np.testing.assert_allclose(p.image(p.from_image(img)), img, atol=2e-6)
    sig = param.Pixels(-8, 8, activation="sigmoid").init(key, 8)
    out = param.Pixels(activation="sigmoid").image(sig)
    assert float(out.min()) >= 0 and float(out.max()) <= 1


def data_mean():
    return jv.data.IMAGENET_MEAN


def data_std():
    return jv.data.IMAGENET_STD


def test_fourier_round_trip_and_spectrum():
    f = param.Fourier()
    img = _random.uniform(jax.random.key(2), (3, 16, 12, 3), minval=0.1, maxval=0.9)
    np.testing.assert_allclose(f.image(jax.vmap(f.from_image)(img)), img, atol=1e-5)
    p = f.init(jax.random.key(0), (16, 12))
    assert p.shape == (2, 3, 16, 7)
    image = f.image(p)
    assert image.shape == (16, 12, 3) and float(image.min()) > 0 and float(image.max()) < 1
    # the 1/f scale: lowest non-zero frequency gets the largest weight, DC is capped
    s = param.spectrum_scale(16, 16)
    assert s[0, 0] == pytest.approx(16 * 16) and s[0, 1] == pytest.approx(16 * 16)
    assert s[8, 8] == pytest.approx(16 / np.sqrt(0.5))
    # an odd width is made one column wider and cut (as lucid does); the cut image
    # round-trips through from_image
    p = f.init(jax.random.key(0), (16, 13))
    assert p.shape == (2, 3, 16, 8) and f.image(p).shape == (16, 14, 3)
    odd = img[..., :11, :]
    back = param.crop(f.image(jax.vmap(f.from_image)(odd)), (16, 11))
    np.testing.assert_allclose(back, odd, atol=1e-5)


def test_fourier_without_decorrelation_is_the_inverse_fft():
    """decay 0, no colour map, no activation: image = irfft2(spectrum * sqrt(HW)) / 4."""
    f = param.Fourier(decay_power=0.0, decorrelate=False, activation="none")
    p = f.init(jax.random.key(3), (8, 8))
    spectrum = (p[0] + 1j * p[1]) * 8.0
    want = np.fft.irfft2(np.asarray(spectrum), s=(8, 8)).transpose(1, 2, 0) / 4.0
    np.testing.assert_allclose(f.image(p), want, atol=1e-6)


# --- transforms -------------------------------------------------------------------------------


def _image(h=20, w=20, seed=0):
    return _random.uniform(jax.random.key(seed), (h, w, 3))


def test_jitter_is_a_crop_and_pad_pads():
    img = _image()
    out = transforms.jitter(4)(jax.random.key(5), img)
    assert out.shape == (16, 16, 3)
    found = [(dy, dx) for dy in range(5) for dx in range(5)
             if np.array_equal(out, img[dy:dy + 16, dx:dx + 16])]
    assert len(found) == 1
    padded = transforms.pad(3, value=0.5)(None, img)
    assert padded.shape == (26, 26, 3) and float(padded[0, 0, 0]) == 0.5
    np.testing.assert_array_equal(padded[3:-3, 3:-3], img)
    offsets = {tuple(np.asarray(_random.randint(k, (2,), 0, 5)))
               for k in jax.random.split(jax.random.key(0), 64)}
    assert len(offsets) > 10  # draws vary with the key


def _ramp(n: int = 41) -> tuple[np.ndarray, np.ndarray, jax.Array]:
    y, x = np.mgrid[:n, :n].astype(np.float32)
    return y, x, jnp.asarray(np.stack([y + 2 * x, y - x, 0.5 * y], -1))


def test_scale_and_rotate():
    img = _image(11, 11)
    np.testing.assert_allclose(transforms.random_scale([1.0])(jax.random.key(0), img), img,
                               atol=1e-6)
    np.testing.assert_allclose(transforms.random_rotate([0])(jax.random.key(0), img), img,
                               atol=1e-6)
    # zooming in by 2 about the centre: the output centre pixel is the input centre
    z = transforms.random_scale([2.0])(jax.random.key(0), img)
    np.testing.assert_allclose(z[5, 5], img[5, 5], atol=1e-6)
    np.testing.assert_allclose(z[7, 5], img[6, 5], atol=1e-6)
    np.testing.assert_allclose(z[6, 5], (img[5, 5] + img[6, 5]) / 2, atol=1e-6)
    # linear interpolation is exact on an image linear in (y, x): away from the border,
    # a rotation by a reads the input at c + R(a) (p - c), a zoom by s at c + (p - c) / s
    y, x, ramp = _ramp()
    yy, xx = y - 20, x - 20
    inner = (slice(12, 29), slice(12, 29))
    for angle in (10.0, -7.0, 3.0, 45.0):
        a = np.deg2rad(angle)
        sy, sx = 20 + np.cos(a) * yy + np.sin(a) * xx, 20 - np.sin(a) * yy + np.cos(a) * xx
        want = np.stack([sy + 2 * sx, sy - sx, 0.5 * sy], -1)
        got = transforms.random_rotate([angle])(jax.random.key(0), ramp)
        np.testing.assert_allclose(np.asarray(got)[inner], want[inner], atol=1e-4)
    for s in (0.9, 1.1):
        sy, sx = 20 + yy / s, 20 + xx / s
        want = np.stack([sy + 2 * sx, sy - sx, 0.5 * sy], -1)
        got = transforms.random_scale([s])(jax.random.key(0), ramp)
        np.testing.assert_allclose(np.asarray(got)[inner], want[inner], atol=1e-4)


def test_rotation_gradient_is_the_adjoint():
    """The rotation's custom backward pass is the transpose of its forward map:
    <R x, g> == <x, R^T g> for random x and g, and equals autodiff of a dense version."""
    rot = transforms.random_rotate([8.0], fill=0.0)
    x = _random.normal(jax.random.key(0), (14, 12, 3))
    g = _random.normal(jax.random.key(1), (14, 12, 3))

    @jax.jit  # one program (run eagerly, the checks were about 160 small ones)
    def products(x, g):
        def rotate(t):
            return rot(jax.random.key(0), t)

        y, vjp = jax.vjp(rotate, x)
        # the linear map column by column (a basis image at a time) against its transpose
        basis = jnp.eye(14 * 12 * 3).reshape(-1, 14, 12, 3)[::5]
        cols = jax.vmap(rotate)(basis)
        rows = jax.vmap(lambda e: vjp(e)[0])(cols)
        return (jnp.vdot(y, g), jnp.vdot(x, vjp(g)[0]), jnp.einsum("ahwc,bhwc->ab", cols, cols),
                jnp.einsum("ahwc,bhwc->ab", basis, rows))

    forward, reverse, gram, transposed = products(x, g)
    np.testing.assert_allclose(forward, reverse, rtol=1e-5)
    np.testing.assert_allclose(gram, transposed, atol=1e-5)


def test_standard_transforms_shape_and_determinism():
    t = transforms.standard()
    img = _image(32, 32)
    a = t(jax.random.key(1), img)
    assert a.shape == (32 + 24 - 12, 32 + 24 - 12, 3)
    np.testing.assert_array_equal(a, t(jax.random.key(1), img))
    assert not np.array_equal(a, t(jax.random.key(2), img))


def test_a_chain_draws_its_indices_from_one_block_of_bits():
    """What keeps synthesis programs quick to compile (transforms.py's docstring): each
    preset hashes threefry once per image and step, however many indices it draws. Each
    index covers its whole set, about evenly; a chain holding a transform of one's own
    gives every transform its own key instead."""
    img = _image(32, 32)
    for preset in (transforms.standard(), transforms.lucid()):
        jaxpr = jax.make_jaxpr(preset)(jax.random.key(0), img)
        assert count_primitive(jaxpr, "random_bits") == 1, preset
    sets = (5, 11, 26)
    draws = jax.jit(jax.vmap(lambda k: transforms._draws(k, sets)))(
        jax.random.split(jax.random.key(0), 5200))
    assert draws.dtype == jnp.int32 and draws.shape == (5200, 3)
    for column, n in zip(np.asarray(draws).T, sets):
        counts = np.bincount(column, minlength=n)
        assert counts.size == n, (n, counts)                # nothing beyond the set
        expected = len(column) / n                          # 200 to 1040 per index
        assert np.abs(counts - expected).max() < 5 * np.sqrt(expected), (n, counts)
    seen = []

    def mine(key, image):
        seen.append(key)
        return image[::-1]

    chain = transforms.compose(transforms.jitter(2), mine)
    out = chain(jax.random.key(3), img)
    first, second = jax.random.split(jax.random.key(3), 2)
    np.testing.assert_array_equal(jax.random.key_data(seen[0]), jax.random.key_data(second))
    np.testing.assert_array_equal(out, transforms.jitter(2)(first, img)[::-1])


def test_transform_specs():
    assert transforms.as_transform(None)(None, _image()).shape == (20, 20, 3)
    assert isinstance(transforms.as_transform("standard"), transforms.Compose)
    with pytest.raises(ValueError, match="unknown transforms"):
        transforms.as_transform("lucent")
    with pytest.raises(TypeError, match="expected transforms"):
        transforms.as_transform(3)
    with pytest.raises(ValueError, match="one image"):
        transforms.jitter(2)(jax.random.key(0), jnp.zeros((2, 8, 8, 3)))


# --- regularizers (closed forms) ----------------------------------------------------------------


def test_regularizer_closed_forms():
    ramp = jnp.broadcast_to(jnp.arange(8.0)[None, None, :, None], (1, 6, 8, 3))
    # total variation of a horizontal ramp: 6 rows x 7 steps x 3 channels of 1
    assert float(regularizers.total_variation(ramp)[0]) == pytest.approx(126.0)
    assert float(regularizers.l1(ramp, 1.0)[0]) == pytest.approx(
        float(np.abs(np.arange(8.0) - 1).sum() * 18))
    assert float(regularizers.l2(jnp.full((1, 2, 2, 3), 2.0), 1.0, 0.0)[0]) == pytest.approx(
        np.sqrt(12.0))
    assert float(regularizers.color_magnitude(jnp.full((1, 4, 4, 3), 0.5))[0]) == 0.0
    assert float(regularizers.color_magnitude(jnp.ones((1, 4, 4, 3)))[0]) == pytest.approx(0.75)
    # Scharr on a unit ramp: (3 + 10 + 3) * (x - 1 - (x + 1)) = -32 everywhere, so 32^2
    assert float(regularizers.scharr(ramp)[0]) == pytest.approx(1024.0)
    assert float(regularizers.scharr(jnp.ones((1, 5, 5, 3)))[0]) == 0.0
    assert float(regularizers.blur(jnp.full((2, 7, 7, 3), 0.3))[0]) == pytest.approx(0.0,
                                                                                     abs=1e-10)
    # edge energy: a constant image still has edges at the zero-padded border; a
    # per-image value that sums the channels
    one = regularizers.edge_energy(jnp.ones((1, 16, 16, 1)))
    three = regularizers.edge_energy(jnp.ones((1, 16, 16, 3)))
    assert float(one[0]) > 0 and float(three[0]) == pytest.approx(3 * float(one[0]), rel=1e-6)
    with pytest.raises(ValueError, match=r"\(N, H, W, C\)"):
        regularizers.scharr(jnp.ones((5, 5, 3)))
    with pytest.raises(TypeError, match="weight"):
        regularizers.as_regularizers([regularizers.scharr])


def test_normalize_by_max_abs_is_per_image():
    g = {"a": jnp.array([[1.0, -4.0], [0.5, 0.25]]), "b": jnp.array([[2.0], [-1.0]])}
    tx = optimize.normalize_by_max_abs(eps=0.0)
    out, _ = tx.update(g, tx.init(g))
    np.testing.assert_allclose(out["a"], [[0.25, -1.0], [0.5, 0.25]])
    np.testing.assert_allclose(out["b"], [[0.5], [-1.0]])


# --- a model whose answer is known ---------------------------------------------------------


def _filters(k: int = 9) -> np.ndarray:
    """(k, k, 3, 5) HWIO: horizontal, vertical and diagonal gratings (grey), a red blob
    and a blue blob on an opposite surround."""
    y, x = np.mgrid[:k, :k] - (k - 1) / 2
    grey = np.ones(3) / np.sqrt(3)
    g = np.exp(-(x * x + y * y) / (2 * 2.0 ** 2))
    pats = [np.cos(2 * np.pi * y / 4)[..., None] * grey,
            np.cos(2 * np.pi * x / 4)[..., None] * grey,
            np.cos(2 * np.pi * (x + y) / 4 / np.sqrt(2))[..., None] * grey,
            (g - g.mean())[..., None] * np.array([1.0, -0.5, -0.5]),
            (g - g.mean())[..., None] * np.array([-0.5, -0.5, 1.0])]
    w = np.stack([p / np.linalg.norm(p) for p in pats], axis=-1)
    return w.astype(np.float32)


class Oriented(nn.Module):
    """A conv layer of hand-set filters, then ReLU; not one of ours."""

    @nn.compact
    def __call__(self, x):
        x = nn.Conv(5, (9, 9), padding="VALID", name="conv")(x - 0.5)
        x = nn.relu(x)
        return x.mean(axis=(1, 2))


def _best_match(images: np.ndarray, filters: np.ndarray) -> np.ndarray:
    """(N, C): for image n and filter c, the largest Pearson correlation between the
    filter and any k x k patch of the image."""
    k = filters.shape[0]
    n, h, w, _ = images.shape
    patches = np.stack([images[:, i:i + k, j:j + k].reshape(n, -1)
                        for i in range(h - k + 1) for j in range(w - k + 1)], axis=1)
    patches = patches - patches.mean(-1, keepdims=True)
    patches /= np.linalg.norm(patches, axis=-1, keepdims=True) + 1e-12
    f = filters.reshape(-1, filters.shape[-1])
    f = (f - f.mean(0)) / np.linalg.norm(f - f.mean(0), axis=0)
    return np.einsum("npd,dc->npc", patches, f).max(axis=1)


@pytest.fixture(scope="module")
def oriented():
    model = Oriented()
    variables = {"params": {"conv": {"kernel": jnp.asarray(_filters()),
                                     "bias": jnp.zeros(5)}}}
    return model, variables


def test_known_filters_are_recovered(oriented):
    """A channel sweep with lucid's parameterization (no transforms) draws each filter's
    pattern: every image matches its own filter best, far above chance."""
    model, variables = oriented
    images = jv.synthesis.sweep(model, variables, "conv", key=jax.random.key(0), steps=256,
                                size=32, transforms=None, preprocess=None, progress=False)
    assert images.shape == (5, 32, 32, 3)
    match = _best_match(np.asarray(images), _filters())
    own = np.diag(match)
    noise = np.random.default_rng(0).uniform(size=(50, 32, 32, 3)).astype(np.float32)
    chance = _best_match(noise, _filters()).max(axis=0)
    # measured: own 0.51-0.61 (a lattice of the pattern through a sigmoid, not the
    # pattern itself); the best of 50 uniform-noise images 0.24-0.29
    assert np.all(own >= chance + 0.2), (own, chance)
    assert np.all(match.argmax(axis=1) == np.arange(5)), match

    # the objective rises far above its value on noise and on a photograph
    photo = jv.data.resize(jv.data.sample_image("chelsea"), (32, 32))
    photo = np.asarray(photo, np.float32)[None] / (255.0 if photo.dtype == np.uint8 else 1.0)
    value = jax.jit(lambda x: jv.activations(model, variables, x, "conv")["conv"]
                    .mean(axis=(1, 2)))
    synth = np.diag(np.asarray(value(images)))
    base = np.maximum(np.asarray(value(jnp.asarray(noise))).max(0),
                      np.asarray(value(jnp.asarray(photo)))[0])
    assert np.all(synth > 3 * base), (synth, base)


def test_neuron_under_l2_penalty_is_its_filter(oriented):
    """Closed form: for the unit relu(w . (x - 0.5)) at the centre, the maximizer of
    ``unit - 0.5 ||x||^2`` is x = w on its receptive field and 0 elsewhere."""
    model, variables = oriented
    images = jv.synthesis.sweep(
        model, variables, "conv", key=jax.random.key(0), steps=100, size=17,
        objective=lambda layer, index: obj.neuron(layer, index),
        param=param.Pixels(-0.01, 0.01), transforms=None, preprocess=None,
        regularizers=[(0.5, lambda x: (x * x).sum(axis=(1, 2, 3)))],
        optimizer=optax.sgd(0.1), progress=False)
    w = _filters().transpose(3, 0, 1, 2)
    # gradient descent contracts the error by 0.9 per step: 0.9^100 * 0.01 ~ 3e-7
    np.testing.assert_allclose(images[:, 4:13, 4:13], w, atol=1e-5)
    outside = np.asarray(images).copy()
    outside[:, 4:13, 4:13] = 0
    assert np.abs(outside).max() <= 1e-5


# --- sweeps --------------------------------------------------------------------------------


SWEEP64 = dict(steps=3, size=(64, 56), progress=False)


@pytest.fixture(scope="module")
def alexnet64():
    with jax.enable_x64(True):
        model, variables = jv.load("alexnet")
        v64 = jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), variables)
    return model, v64


def _sweep64(model, variables, **kw):
    with jax.enable_x64(True):
        return np.asarray(jv.synthesis.sweep(
            model, variables, "conv5", channels=list(range(3, 12)), key=jax.random.key(7),
            param=param.Fourier(dtype=jnp.float64), **SWEEP64, **kw))


@pytest.fixture(scope="module")
def sweep_all(alexnet64):
    return _sweep64(*alexnet64, batch_size=9)


@pytest.mark.parametrize("chunk", [1, 7])
def test_sweep_is_chunk_invariant(alexnet64, sweep_all, chunk):
    got = _sweep64(*alexnet64, batch_size=chunk)
    assert got.shape == (9, 64, 56, 3) and got.dtype == np.float64
    assert max_rel_err(got, sweep_all) <= F64_TOL


def test_sweep_on_four_devices_equals_one(sweep_all, tmp_path):
    """A sweep in a process with 4 (virtual) CPU devices shards each chunk over all of
    them and gives the same images."""
    out = tmp_path / "four.npy"
    code = textwrap.dedent(f"""
        import jax, jax.numpy as jnp, numpy as np
        assert jax.device_count() == 4, jax.devices()
        import jaxviz as jv
        from jaxviz.synthesis import param
        with jax.enable_x64(True):
            model, variables = jv.load("alexnet")
            variables = jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), variables)
            images = jv.synthesis.sweep(model, variables, "conv5", channels=list(range(3, 12)),
                                        key=jax.random.key(7), batch_size=8,
                                        param=param.Fourier(dtype=jnp.float64),
                                        steps={SWEEP64['steps']}, size={SWEEP64['size']},
                                        progress=False)
        np.save({str(out)!r}, np.asarray(images))
    """)
    env = dict(os.environ, XLA_FLAGS=xla_flags_like_this_process(
        "--xla_force_host_platform_device_count=4"),
               JAX_PLATFORMS="cpu")
    subprocess.run([sys.executable, "-c", code], check=True, env=env, timeout=600)
    assert max_rel_err(np.load(out), sweep_all) <= F64_TOL


def test_same_key_is_bit_identical_and_keys_matter():
    model, variables = jv.load("alexnet")
    kw = dict(channels=[0, 5], steps=2, size=56, progress=False, batch_size=2)
    a = jv.synthesis.sweep(model, variables, "conv2", key=jax.random.key(1), **kw)
    b = jv.synthesis.sweep(model, variables, "conv2", key=jax.random.key(1), **kw)
    c = jv.synthesis.sweep(model, variables, "conv2", key=jax.random.key(2), **kw)
    assert a.dtype == jnp.float32
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)
    assert float(a.min()) >= 0 and float(a.max()) <= 1


def test_sweep_resumes_from_a_checkpoint(oriented, tmp_path):
    model, variables = oriented
    kw = dict(key=jax.random.key(3), steps=4, size=20, batch_size=2, transforms=None,
              preprocess=None, progress=False)
    full = jv.synthesis.sweep(model, variables, "conv", **kw)
    ckpt = tmp_path / "sweep.npz"

    class Stop(Exception):
        pass

    def interrupt(done, total, seconds):
        if done == 2:
            raise Stop

    with pytest.raises(Stop):
        jv.synthesis.sweep(model, variables, "conv", checkpoint=ckpt,
                           **{**kw, "progress": interrupt})
    with np.load(ckpt) as f:
        assert sorted(f["channels"].tolist()) == [0, 1, 2, 3]
    calls = []
    resumed = jv.synthesis.sweep(model, variables, "conv", checkpoint=ckpt,
                                 **{**kw, "progress": lambda *a: calls.append(a)})
    assert len(calls) == 1  # only the last channel was left
    np.testing.assert_array_equal(resumed, full)
    with pytest.raises(ValueError, match="other settings"):
        jv.synthesis.sweep(model, variables, "conv", checkpoint=ckpt, **{**kw, "steps": 5})
    other = jax.tree_util.tree_map(lambda a: a * 1.5, variables)  # other weights
    with pytest.raises(ValueError, match="other settings"):
        jv.synthesis.sweep(model, other, "conv", checkpoint=ckpt, **kw)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


# Pixel parameters rather than the default Fourier ones: each of the three processes
# compiles the step anew, and the Fourier step takes 2-3x as long to compile (the
# checkpointing and resuming under test do not depend on the parameterization; the
# Fourier sweep's own determinism is tested in-process and across processes above).
SWEEP_WORKER = textwrap.dedent("""
    import sys
    import jax
    import jaxviz as jv
    from jaxviz.synthesis import param

    model, variables = jv.load("lenet_digits")
    jv.synthesis.sweep(model, variables, "conv3", range(24), key=jax.random.key(5), steps=4,
                       size=28, batch_size=4, checkpoint=sys.argv[1],
                       param=param.Pixels(activation="sigmoid"),
                       progress=lambda done, total, s: print(f"chunk {done}/{total}", flush=True))
""")


def _sweep_process(checkpoint, **kwargs):
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    return subprocess.Popen([sys.executable, "-c", SWEEP_WORKER, str(checkpoint)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kwargs)


def _checkpoint_images(path):
    with np.load(path) as f:
        return dict(zip(f["channels"].tolist(), f["images"]))


def test_sweep_killed_part_way_resumes_bit_identical(tmp_path):
    """A sweep (digits model, pixel parameters, 24 channels in 6 chunks) is killed with
    SIGKILL after its second chunk, while a reader polls the checkpoint: every version the
    reader sees loads whole (the file is replaced by a rename, never written in place).
    Resumed in a new process, the sweep ends with images bit-identical to an uninterrupted
    run's (each image depends only on its own key), and no temporary file is left."""
    import signal
    import threading

    whole = tmp_path / "whole" / "sweep.npz"
    whole.parent.mkdir()
    done = _sweep_process(whole)

    killed = tmp_path / "killed" / "sweep.npz"
    killed.parent.mkdir()
    seen, broken, stop = [], [], threading.Event()

    def poll():  # every millisecond or so (a busy loop would take a core from the sweeps)
        while not stop.wait(0.001):
            if killed.exists():
                try:
                    seen.append(len(_checkpoint_images(killed)))
                except Exception as e:  # a partial file would land here
                    broken.append(repr(e))
    reader = threading.Thread(target=poll)
    reader.start()
    victim = _sweep_process(killed)
    try:
        for line in victim.stdout:
            if line.startswith("chunk 2/"):
                victim.send_signal(signal.SIGKILL)
                break
        victim.wait(timeout=300)
    finally:
        stop.set()
        reader.join()
        victim.kill()
        victim.communicate()  # closes its pipes
    assert victim.returncode == -signal.SIGKILL
    assert not broken, broken
    assert seen and set(seen) <= {4, 8, 12, 16, 20}, sorted(set(seen))
    part = _checkpoint_images(killed)
    assert 8 <= len(part) < 24

    resumed = _sweep_process(killed)
    out, err = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, err
    assert out.splitlines()[-1] == f"chunk {(24 - len(part)) // 4}/{(24 - len(part)) // 4}"
    out, err = done.communicate(timeout=300)
    assert done.returncode == 0, err
    want, got = _checkpoint_images(whole), _checkpoint_images(killed)
    assert sorted(got) == sorted(want) == list(range(24))
    for c in want:
        np.testing.assert_array_equal(got[c], want[c], err_msg=f"channel {c}")
    assert sorted(p.name for p in killed.parent.iterdir()) == ["sweep.npz"]


def test_loops_agree(oriented):
    model, variables = oriented
    kw = dict(key=jax.random.key(0), batch=2, size=20, steps=5, transforms="standard",
              preprocess=None, param=param.Fourier(dtype=jnp.float64))
    with jax.enable_x64(True):
        v64 = jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), variables)
        o = obj.channel("conv", jnp.array([0, 3]))
        a = jv.synthesis.visualize(model, v64, o, loop="python", **kw)
        b = jv.synthesis.visualize(model, v64, o, loop="scan", **kw)
    assert a.objective.shape == (5, 2)
    assert max_rel_err(a.images, b.images) <= F64_TOL
    assert max_rel_err(a.objective, b.objective) <= F64_TOL


def test_visualize_octaves_and_output_scale(oriented):
    model, variables = oriented
    r = jv.synthesis.visualize(model, variables, obj.channel("conv", 1), key=jax.random.key(0),
                               size=16, steps=3, octaves=2, octave_scale=1.5,
                               output_scale=2.0, preprocess=None, transforms=None)
    # octaves 16 -> 24 px, returned at twice the last: 48
    assert r.images.shape == (1, 48, 48, 3) and r.objective.shape == (6, 1)
    start = jnp.full((16, 16, 3), 0.5)
    s = jv.synthesis.visualize(model, variables, obj.channel("conv", 1), key=jax.random.key(0),
                               init=start, steps=1, preprocess=None, transforms=None,
                               param=param.Pixels(activation="sigmoid"),
                               optimizer=optax.sgd(0.0))
    np.testing.assert_allclose(s.images[0], start, atol=1e-6)


def test_errors(oriented):
    model, variables = oriented
    with pytest.raises(TypeError, match="key"):
        jv.synthesis.sweep(model, variables, "conv", key=None)
    with pytest.raises(KeyError, match="no layer"):
        jv.synthesis.sweep(model, variables, "conv9", key=jax.random.key(0))
    with pytest.raises(ValueError, match="out of range"):
        jv.synthesis.sweep(model, variables, "conv", channels=[7], key=jax.random.key(0))
    with pytest.raises(ValueError, match="channels"):
        jv.synthesis.sweep(model, variables, "conv", channels="some", key=jax.random.key(0))
    with pytest.raises(ValueError, match="positive image size"):
        jv.synthesis.sweep(model, variables, "conv", key=jax.random.key(0), size=(16, 0))
    with pytest.raises(TypeError, match="optax"):
        jv.synthesis.visualize(model, variables, obj.channel("conv", 0), key=jax.random.key(0),
                               optimizer="adam")
    with pytest.raises(ValueError, match="steps"):
        jv.synthesis.visualize(model, variables, obj.channel("conv", 0), key=jax.random.key(0),
                               steps=0)
    with pytest.raises(ValueError, match="init"):
        jv.synthesis.visualize(model, variables, obj.channel("conv", 0), key=jax.random.key(0),
                               init=jnp.zeros((4, 4)))
    with pytest.raises(ValueError, match="loop"):
        jv.synthesis.visualize(model, variables, obj.channel("conv", 0), key=jax.random.key(0),
                               loop="while")


# --- objectives used by synthesis ------------------------------------------------------------


def test_unreachable_target_closed_form(oriented):
    model, variables = oriented
    x = _random.uniform(jax.random.key(0), (2, 12, 12, 3))
    a = np.asarray(jv.activations(model, variables, x, "conv")["conv"])
    idx = np.array([1, 3])
    m = a[np.arange(2), :, :, idx].reshape(2, -1)
    want = -((m - m.max(1, keepdims=True) ** 2) ** 2).mean(1)
    o = obj.unreachable_target("conv", jnp.asarray(idx))
    np.testing.assert_allclose(o(model, variables, x), want, rtol=1e-5)
    # the target is held constant: the gradient is that of -mean((m - t)^2) with t fixed
    g = jax.grad(lambda t: o(model, variables, t).sum())(x)
    t_fixed = m.max(1, keepdims=True) ** 2

    def fixed(t):
        acts = jv.activations(model, variables, t, "conv")["conv"]
        mm = acts[jnp.arange(2), :, :, idx].reshape(2, -1)
        return (-((mm - t_fixed) ** 2).mean(1)).sum()

    np.testing.assert_allclose(g, jax.grad(fixed)(x), rtol=1e-4, atol=1e-7)


def test_diversity_closed_form(oriented):
    model, variables = oriented
    x = _random.uniform(jax.random.key(1), (1, 12, 12, 3))
    same = jnp.concatenate([x, x, x])
    # three identical images: each Gram has cosine 1 with the two others, divided by N
    np.testing.assert_allclose(obj.diversity("conv")(model, variables, same),
                               -2.0 / 3.0 * np.ones(3), rtol=1e-6)
    assert obj.diversity("conv").tile(2) is None


def test_objectives_follow_a_tiled_batch(oriented):
    """objective.tile(S) on S stacked copies equals the objective on each copy."""
    model, variables = oriented
    x = _random.uniform(jax.random.key(2), (2, 12, 12, 3))
    copies = jnp.concatenate([x, 1 - x, 0.5 * x])
    idx = jnp.array([0, 4])
    for o in (obj.channel("conv", idx), obj.neuron("conv", idx, 1, 2),
              obj.unreachable_target("conv", idx), obj.layer_max("conv"),
              obj.direction("conv", jnp.ones((2, 5))),
              obj.channel("conv", idx) - 0.5 * obj.neuron("conv", 3)):
        want = np.concatenate([np.asarray(o(model, variables, c)) for c in (x, 1 - x, 0.5 * x)])
        assert max_rel_err(o.tile(3)(model, variables, copies), want) <= F32_TOL
    assert (obj.channel("conv", 0) + (lambda m, v, t: t.sum((1, 2, 3)))).tile(2) is None

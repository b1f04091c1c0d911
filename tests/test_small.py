"""The bundled digits model (LeNet on scikit-learn's digits), the 2-D MLP, and the
qualitative checks that must hold on a trained model: accuracy, the pointing game for
Grad-CAM and occlusion on a larger canvas, class maximization, adversarial examples."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxviz as jv
from jaxviz.analysis import adversarial as adv

pytest.importorskip("sklearn")

# The held-out accuracy the README states for the committed weights (358 of 359); a
# re-trained or damaged file that falls below it fails here.
STATED_ACCURACY = 0.99


@pytest.fixture(scope="module")
def digits_model():
    return jv.load("lenet_digits")


@pytest.fixture(scope="module")
def correct100(digits_model):
    """The first 100 held-out digits the model classifies correctly."""
    model, variables = digits_model
    x, y = jv.data.digits("test")
    pred = np.asarray(jnp.argmax(model.apply(variables, x), -1))
    ok = np.where(pred == y)[0][:100]
    return x[ok], y[ok]


def test_digits_data_and_split():
    x, y = jv.data.digits("all")
    assert x.shape == (1797, 28, 28, 1) and x.dtype == np.float32 and y.dtype == np.int32
    assert float(x.min()) == 0.0 and float(x.max()) <= 1.0 and set(np.unique(y)) == set(range(10))
    train, test = jv.data.digits_split()
    assert len(train) == 1438 and len(test) == 359 and not set(train) & set(test)
    xt, yt = jv.data.digits("test")
    np.testing.assert_array_equal(xt, x[test])
    np.testing.assert_array_equal(yt, y[test])
    assert jv.data.digits("train", size=8)[0].shape == (1438, 8, 8, 1)
    with pytest.raises(ValueError, match="split"):
        jv.data.digits("validation")
    canvas = jv.data.place_on_canvas(xt[:2], 40, [(0, 12), (5, 0)])
    np.testing.assert_array_equal(canvas[0, :28, 12:], xt[0])
    assert canvas[0, 28:].sum() == 0 and canvas[1, :, 28:].sum() == 0
    with pytest.raises(ValueError, match="inside"):
        jv.data.place_on_canvas(xt[:1], 40, [(13, 0)])


def test_bundled_model_reaches_the_stated_accuracy(digits_model):
    model, variables = digits_model
    assert type(model).__name__ == "LeNet"
    x, y = jv.data.digits("test")
    acc = float((np.asarray(jnp.argmax(model.apply(variables, x), -1)) == y).mean())
    assert acc >= STATED_ACCURACY, acc
    # a digit on a larger blank canvas: global max pooling keeps the decision
    canvas = jv.data.place_on_canvas(x, 56, np.full((len(x), 2), 14))
    acc56 = float((np.asarray(jnp.argmax(model.apply(variables, canvas), -1)) == y).mean())
    assert acc56 >= 0.97, acc56


def test_small_models_follow_the_conventions(digits_model):
    model, variables = digits_model
    names = [i.alias for i in jv.layer_names(model, (28, 28, 1)) if i.alias]
    assert names[:3] == ["conv1", "relu1", "pool1"] and "logits" in names
    x = jv.data.digits("test")[0][:2]
    acts = jv.activations(model, variables, x, ["relu3", "gmp"])
    assert acts["relu3"].shape == (2, 7, 7, 64) and acts["gmp"].shape == (2, 64)
    np.testing.assert_allclose(acts["gmp"], acts["relu3"].max(axis=(1, 2)))
    g = jv.attribution.gradient(model, variables, x, 3)
    gb = jv.attribution.guided_backprop(model, variables, x, 3)
    assert g.shape == x.shape and not np.allclose(g, gb)
    mlp, mv = jv.load("mlp2d", hidden=5)
    assert mlp.apply(mv, jnp.zeros((4, 2))).shape == (4, 2)
    assert mv["params"]["hidden"]["kernel"].shape == (2, 5)


def _pointing(maps: np.ndarray, pos: np.ndarray, side: int = 28) -> np.ndarray:
    n, h, w = maps.shape
    arg = maps.reshape(n, -1).argmax(1)
    r, c = arg // w, arg % w
    return (r >= pos[:, 0]) & (r < pos[:, 0] + side) & (c >= pos[:, 1]) & (c < pos[:, 1] + side)


def test_pointing_game_on_a_larger_canvas(digits_model, correct100):
    """Grad-CAM and occlusion maps of a digit pasted at a random place on a blank 56 px
    canvas peak on the digit (its 28 px box) for >= 90 of 100 digits (measured: Grad-CAM
    100; occlusion with 8 px windows every 6 px, 97)."""
    model, variables = digits_model
    x, y = correct100
    pos = np.random.default_rng(0).integers(0, 56 - 28 + 1, size=(len(x), 2))
    canvas = jnp.asarray(jv.data.place_on_canvas(x, 56, pos))
    cam = np.asarray(jv.attribution.grad_cam(model, variables, canvas, jnp.asarray(y),
                                             layer="relu3"))
    occ = np.asarray(jv.attribution.occlusion(model, variables, canvas, jnp.asarray(y),
                                              window=8, stride=6, baseline=0.0))
    assert _pointing(cam, pos).mean() >= 0.9
    assert _pointing(occ, pos).mean() >= 0.9


def test_class_maximization_images_are_classified_as_their_class(digits_model):
    """One image per class from its logit (sigmoid pixels, Adam 0.1, 64 steps): the model
    gives each its class with probability >= 0.9 (measured: 0.969-1.0). The class
    log-probability objective does as well (0.964-0.997)."""
    model, variables = digits_model
    gray = lambda t: t.mean(axis=-1, keepdims=True)  # noqa: E731  RGB image -> model input
    r = jv.synthesis.visualize(
        model, variables, jv.objectives.class_logit(jnp.arange(10)), key=jax.random.key(0),
        batch=10, size=28, steps=64, param=jv.synthesis.param.Pixels(-0.5, 0.5,
                                                                     activation="sigmoid"),
        transforms=None, optimizer=optax.adam(0.1), preprocess=gray)
    images = gray(r.images)
    probs = jax.nn.softmax(model.apply(variables, images), axis=-1)
    own = np.asarray(probs[jnp.arange(10), jnp.arange(10)])
    assert np.all(own >= 0.9), own
    lp = jv.objectives.class_log_prob(jnp.arange(10))(model, variables, images)
    np.testing.assert_allclose(np.exp(np.asarray(lp)), own, rtol=1e-5)


def test_gradient_ascent_flips_digits_and_the_sphere_keeps_them(digits_model, correct100):
    """SGD up the cross-entropy (lr 1, up to 15 steps, each digit stopped once it flips)
    flips >= 95 of 100 correctly classified digits (measured: 100, median relative norm
    0.18); 1000 random points at twice that distance, in one call, keep the label."""
    model, variables = digits_model
    x, y = correct100
    a = adv.gradient_ascent(model, variables, x, y, lr=1.0, steps=15, stop_at_flip=True)
    assert a.predictions.shape == (16, 100)
    np.testing.assert_array_equal(a.predictions[0], y)
    assert float(a.flipped.mean()) >= 0.95
    median = float(jnp.median(a.relative_norm))
    assert 0.0 < median <= 0.3, median
    table = adv.prediction_table(a.predictions[:, :2])
    assert table.splitlines()[0].split() == ["iteration", "example", "0", "example", "1"]
    radius = 2 * adv.distance(x[:10], a.x[:10])
    np.testing.assert_allclose(radius, 2 * np.sqrt(((np.asarray(a.x[:10]) - x[:10]) ** 2)
                                                   .sum(axis=(1, 2, 3))), rtol=1e-5)
    labels = adv.sphere_check(model, variables, x[:10], radius, key=jax.random.key(0), n=1000)
    assert labels.shape == (1000, 10)
    assert float((np.asarray(labels) == y[:10]).mean()) >= 0.95


def test_fgsm_and_pgd_closed_forms(digits_model, correct100):
    model, variables = digits_model
    x, y = correct100[0][:8], correct100[1][:8]

    def loss(t):
        return optax.softmax_cross_entropy_with_integer_labels(model.apply(variables, t), y).sum()

    g = jax.jit(jax.grad(loss))(jnp.asarray(x))
    f = adv.fgsm(model, variables, x, y, eps=0.05)
    np.testing.assert_allclose(f.x - x, 0.05 * np.sign(np.asarray(g)), atol=1e-7)
    p = adv.pgd(model, variables, x, y, eps=0.1, steps=10, norm="linf", clip=(0.0, 1.0))
    assert float(jnp.abs(p.x - x).max()) <= 0.1 + 1e-6
    assert float(p.x.min()) >= 0.0 and float(p.x.max()) <= 1.0
    q = adv.pgd(model, variables, x, y, eps=1.5, steps=10, norm="l2")
    norms = np.sqrt(((np.asarray(q.x) - x) ** 2).sum(axis=(1, 2, 3)))
    assert norms.max() <= 1.5 + 1e-4
    strong = adv.pgd(model, variables, x, y, eps=0.3, steps=10, norm="linf")
    assert float(strong.flipped.mean()) >= float(p.flipped.mean())
    with pytest.raises(ValueError, match="norm"):
        adv.pgd(model, variables, x, y, eps=0.1, norm="l1")
    with pytest.raises(ValueError, match="labels"):
        adv.fgsm(model, variables, x, y[:3], eps=0.1)


def test_mlp2d_lines_command_writes_frames_and_gif(tmp_path):
    from PIL import Image

    from jaxviz import cli
    from jaxviz.analysis import training

    out = tmp_path / "frames"
    assert cli.main(["mlp2d-lines", "--out", str(out), "--frames", "0,5,40", "--hidden",
                     "3"]) == 0
    with Image.open(out / "training.gif") as gif:
        assert gif.n_frames == 3 and gif.size == (240, 240)
    with Image.open(out / "frames.png") as grid:
        assert grid.size[0] > 3 * 240
    assert not [p for p in out.iterdir() if p.name.startswith(".")]
    # a unit with w = (1, 0), b = 0 is the vertical line x = 0: the centre columns are dark
    model = jv.models.small.MLP2d(hidden=1)
    v = {"params": {"hidden": {"kernel": jnp.array([[1.0], [0.0]]), "bias": jnp.zeros(1)},
                    "out": {"kernel": jnp.array([[1.0, -1.0]]), "bias": jnp.array([0.0, 0.5])}}}
    frame = training.draw_frame(model, v, np.zeros((0, 2)), np.zeros(0, np.int32), size=100)
    dark = frame.sum(-1) < 200
    assert dark[:, 49:51].any(axis=1).all() and not dark[:, :45].any()
    # the regions: logits (relu(x), 0.5 - relu(x)): class 0 where x > 0.25, else class 1
    assert (frame[50, 80] == training.REGION_COLOURS[0]).all()    # x = 1.22
    assert (frame[50, 20] == training.REGION_COLOURS[1]).all()    # x = -1.18
    # the moons are two classes of equal size
    x, y = training.two_moons(n=50)
    assert x.shape == (50, 2) and np.bincount(y).tolist() == [25, 25]
    with pytest.raises(SystemExit):
        cli.build_parser().parse_args(["mlp2d-lines", "--out", "x", "--frames", "a,b"])


def test_attacks_run_on_a_ported_imagenet_model():
    """[0, 1] images attacked through the ImageNet normalization of a (random) AlexNet:
    the attacked images stay in [0, 1] and the L-infinity budget holds."""
    model, variables = jv.load("alexnet")
    x = jnp.asarray(jv.data.resize(jv.data.sample_image("chelsea"), (64, 64)), jnp.float32)
    x = (x / 255.0 if float(x.max()) > 1 else x)[None]
    label = jnp.argmax(model.apply(variables, jv.data.normalize(x)), -1)
    p = adv.pgd(model, variables, x, label, eps=2 / 255, steps=3, norm="linf",
                preprocess=jv.data.normalize, clip=(0.0, 1.0))
    assert p.x.shape == x.shape and p.predictions.shape == (4, 1)
    assert float(p.x.min()) >= 0.0 and float(p.x.max()) <= 1.0
    assert float(jnp.abs(p.x - x).max()) <= 2 / 255 + 1e-6
    a = adv.gradient_ascent(model, variables, x, label, lr=0.1, steps=2,
                            preprocess=jv.data.normalize, clip=(0.0, 1.0))
    assert float(a.relative_norm[0]) > 0

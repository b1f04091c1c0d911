"""Layer embeddings (jaxviz/analysis/embeddings.py): streamed features equal the one-shot
activations pooled in numpy, the projections and scores equal the library calls they
wrap, the trained digits model separates the digits better at its logits than at its
first convolution, bad input gets our errors, and the drawings put each point in its
label's colour where it belongs."""

from __future__ import annotations

import sys

import numpy as np
import pytest

import jaxviz as jv
from conftest import F32_TOL, max_rel_err
from jaxviz.analysis import embeddings as emb
from jaxviz.errors import InputError, InputTypeError, LayerError
from test_compile import Compilations

# every kind of layer of LeNet: conv maps, a pooled map, the global max pool (N, 64) and
# the logits (N, 10), by alias and by path
LAYERS = ["conv1", "features.2", "relu3", "gmp", "logits"]


@pytest.fixture(scope="module")
def lenet():
    return jv.load("lenet_digits")


@pytest.fixture(scope="module")
def digits():
    return jv.data.digits("all")


@pytest.fixture(scope="module")
def subset(digits):
    x, y = digits
    return np.asarray(x[:37]), np.asarray(y[:37])  # 37: slices of 16 leave a partial one


def pooled_reference(model, variables, x, pool):
    """One-shot jv.activations of every layer, pooled in numpy."""
    acts = jv.activations(model, variables, x, LAYERS)
    out = {}
    for name, a in acts.items():
        a = np.asarray(a)
        if a.ndim == 4:
            a = {"mean": lambda m: m.mean(axis=(1, 2)), "max": lambda m: m.max(axis=(1, 2)),
                 "flatten": lambda m: m.reshape(len(m), -1)}[pool](a)
        out[name] = a
    return out


@pytest.mark.parametrize("pool", ["mean", "max", "flatten"])
def test_streamed_features_equal_one_shot_activations(lenet, subset, pool):
    model, variables = lenet
    x, _ = subset
    expected = pooled_reference(model, variables, x, pool)
    runs = {
        "batch_size=1": emb.features(model, variables, x, LAYERS, pool=pool, batch_size=1,
                                     progress=False),
        "all at once": emb.features(model, variables, x, LAYERS, pool=pool,
                                    batch_size=len(x), progress=False),
        "slices of 16, the last padded": emb.features(model, variables, x, LAYERS, pool=pool,
                                                      batch_size=16, progress=False),
        "uneven list": emb.features(model, variables, [x[:5], x[5:6], x[6:]], LAYERS,
                                    pool=pool, progress=False),
        "generator": emb.features(model, variables, (x[i:i + 10] for i in range(0, 37, 10)),
                                  LAYERS, pool=pool, progress=False),
    }
    for how, got in runs.items():
        assert list(got) == LAYERS, how
        for name in LAYERS:
            assert isinstance(got[name], np.ndarray), (how, name)
            assert got[name].shape == expected[name].shape, (how, name)
            assert max_rel_err(got[name], expected[name]) < F32_TOL, (how, name)
    dims = {name: got[name].shape[1] for name in LAYERS}
    side = {"mean": 1, "max": 1, "flatten": None}[pool]
    if side:
        assert dims == {"conv1": 16, "features.2": 16, "relu3": 64, "gmp": 64, "logits": 10}
    else:
        assert dims == {"conv1": 28 * 28 * 16, "features.2": 14 * 14 * 16, "relu3": 7 * 7 * 64,
                        "gmp": 64, "logits": 10}


def test_second_call_with_the_same_batch_shape_compiles_nothing(lenet, subset):
    model, variables = lenet
    x, _ = subset
    emb.features(model, variables, x, ["conv2", "logits"], batch_size=16, progress=False)
    with Compilations() as again:
        emb.features(model, variables, x, ["conv2", "logits"], batch_size=16, progress=False)
        emb.features(model, variables, [x[:16], x[16:32]], ["conv2", "logits"],
                     progress=False)
    assert again.count == 0


def test_duplicate_names_and_a_single_name(lenet, subset):
    model, variables = lenet
    x, _ = subset
    got = emb.features(model, variables, x[:4], ["gmp", "pool", "gmp"], progress=False)
    assert list(got) == ["gmp", "pool"]
    np.testing.assert_array_equal(got["gmp"], got["pool"])
    single = emb.features(model, variables, x[:4], "logits", progress=False)
    assert list(single) == ["logits"] and single["logits"].shape == (4, 10)


def test_progress_bar_with_and_without_tqdm(lenet, subset, monkeypatch, capsys):
    model, variables = lenet
    x, _ = subset
    pytest.importorskip("tqdm")
    with_bar = emb.features(model, variables, x, "logits", batch_size=16, progress=True)
    assert "features" in capsys.readouterr().err  # tqdm's description, on stderr
    monkeypatch.setitem(sys.modules, "tqdm.auto", None)  # as if tqdm were not installed
    without = emb.features(model, variables, x, "logits", batch_size=16, progress=True)
    assert capsys.readouterr().err == ""
    np.testing.assert_array_equal(with_bar["logits"], without["logits"])


def test_pca_is_sklearns():
    from sklearn.decomposition import PCA

    f = np.random.default_rng(0).standard_normal((300, 12)).astype(np.float32)
    f[:, 0] *= 5
    got = emb.project(f, "pca", seed=3)
    assert got.shape == (300, 2) and got.dtype == np.float64
    np.testing.assert_array_equal(got, PCA(n_components=2, random_state=3).fit_transform(f))
    f64 = f.astype(np.float64)
    np.testing.assert_array_equal(emb.project(f64),
                                  PCA(n_components=2, random_state=0).fit_transform(f64))


def _two_clusters(n=200, d=8):
    rng = np.random.default_rng(1)
    f = rng.standard_normal((n, d)).astype(np.float32)
    f[: n // 2] += 4
    return f


def test_tsne_is_the_default_backends():
    openTSNE = pytest.importorskip("openTSNE")

    assert emb.DEFAULT_TSNE_BACKEND == "opentsne"
    f = _two_clusters()
    # one thread: under pytest-xdist both cores are busy, and openTSNE's threads then wait
    # on each other (15 s instead of 0.3 s)
    got = emb.project(f, "tsne", seed=2, perplexity=20.0, n_jobs=1)
    direct = openTSNE.TSNE(n_components=2, perplexity=20.0, random_state=2, n_jobs=1).fit(f)
    assert got.shape == (200, 2)
    np.testing.assert_array_equal(got, np.asarray(direct))


def test_tsne_sklearn_backend_is_sklearns():
    from sklearn.manifold import TSNE

    f = _two_clusters()[::3]  # scikit-learn's gradient runs on every core, whatever n_jobs:
    # small, so that it stays quick while pytest-xdist keeps both cores busy
    got = emb.project(f, "tsne", backend="sklearn", seed=2, perplexity=10.0, n_jobs=1,
                      max_iter=250)
    direct = TSNE(n_components=2, perplexity=10.0, random_state=2, n_jobs=1,
                  max_iter=250).fit_transform(f)
    np.testing.assert_array_equal(got, direct)


def test_knn_accuracy_is_cross_val_score():
    from sklearn.model_selection import StratifiedKFold, cross_val_score
    from sklearn.neighbors import KNeighborsClassifier

    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 150)
    f = rng.standard_normal((150, 5)) + y[:, None]
    for k, folds, seed in [(5, 5, 0), (3, 4, 7)]:
        direct = cross_val_score(KNeighborsClassifier(n_neighbors=k), f, y,
                                 cv=StratifiedKFold(folds, shuffle=True, random_state=seed))
        assert emb.knn_accuracy(f, y, k=k, folds=folds, seed=seed) == float(np.mean(direct))


@pytest.fixture(scope="module")
def every_layer(lenet, digits):
    """The 1,797 digits through every layer of lenet_digits (spatial means, PCA)."""
    model, variables = lenet
    x, y = digits
    layers = [info.path for info in jv.layer_names(model, 28)]
    return emb.layer_embeddings(model, variables, x, y, layers, progress=False)


def test_the_trained_model_separates_the_digits_at_its_logits(lenet, every_layer):
    """Measured (5-NN, 5 folds, seed 0): 0.380 at conv1's channel means, 0.986 at relu3,
    0.999 at the logits (1,437 of the 1,797 digits trained the model; its held-out accuracy
    is above 0.97). The bounds leave room for float32 differences between machines."""
    model, _ = lenet
    by_name = {e.layer: e for e in every_layer}
    assert list(by_name) == [info.path for info in jv.layer_names(model, 28)]
    for e in every_layer:
        assert e.points.shape == (1797, 2) and np.isfinite(e.points).all()
        assert 0.0 <= e.knn_2d <= 1.0 and 0.0 <= e.knn <= 1.0
    conv1, logits = by_name["features.0"], by_name["classifier"]
    assert (conv1.dim, by_name["features.7"].dim, logits.dim) == (16, 64, 10)
    assert logits.knn > 0.97
    assert logits.knn > conv1.knn + 0.3
    assert by_name["features.7"].knn > by_name["features.4"].knn > conv1.knn
    assert logits.knn_2d > conv1.knn_2d  # the 2-D view shows it too (0.70 against 0.30)


def test_layer_embeddings_from_an_iterable_and_with_tsne(lenet, subset):
    pytest.importorskip("openTSNE")
    model, variables = lenet
    x, y = subset
    got = emb.layer_embeddings(model, variables, [x[:20], x[20:]], y, ["gmp"], method="tsne",
                               perplexity=5.0, k=3, folds=3, progress=False, n_jobs=1)
    (e,) = got
    f = emb.features(model, variables, x, "gmp", progress=False)["gmp"]
    np.testing.assert_array_equal(e.points, emb.project(f, "tsne", perplexity=5.0, n_jobs=1))
    assert e.knn == emb.knn_accuracy(f, y, k=3, folds=3)


# --- bad input ----------------------------------------------------------------------------


def test_bad_input_gets_our_errors(lenet, subset, monkeypatch):
    model, variables = lenet
    x, y = subset
    with pytest.raises(InputError, match="unknown pool 'median'; expected one of 'mean'"):
        emb.features(model, variables, x, "conv1", pool="median", progress=False)
    with pytest.raises(InputError, match="no batches"):
        emb.features(model, variables, [], "conv1", progress=False)
    with pytest.raises(InputError, match="no batches"):
        emb.features(model, variables, iter(()), "conv1", progress=False)
    with pytest.raises(InputError, match="batch_size as an int >= 1, got 0"):
        emb.features(model, variables, x, "conv1", batch_size=0, progress=False)
    with pytest.raises(InputError, match="at least one layer"):
        emb.features(model, variables, x, [], progress=False)
    with pytest.raises(InputTypeError, match="expected layers as a name or a sequence of names"):
        emb.features(model, variables, x, [1, 2], progress=False)
    with pytest.raises(InputTypeError, match="an array .* or an iterable of such batches, got int"):
        emb.features(model, variables, 3, "conv1", progress=False)
    with pytest.raises(LayerError, match="no layer 'conv9'"):
        emb.features(model, variables, x, "conv9", progress=False)
    with pytest.raises(InputError, match="images batch 1.*NCHW"):
        emb.features(model, variables, [x[:2], x[2:4].transpose(0, 3, 1, 2)], "conv1",
                     progress=False)
    with pytest.raises(InputError, match=r"first batch's shape \(28, 28, 1\); got a batch of "
                                         r"shape \(2, 32, 32, 1\)"):
        emb.features(model, variables, [x[:2], np.zeros((2, 32, 32, 1), np.float32)], "conv1",
                     progress=False)
    with pytest.raises(InputError, match="images is an empty batch"):
        emb.features(model, variables, x[:0], "conv1", progress=False)

    with pytest.raises(InputError, match="one label per example, 37; got 36 labels"):
        emb.layer_embeddings(model, variables, x, y[:-1], ["gmp"], progress=False)
    with pytest.raises(InputError, match="one label per example, 37; got 36 labels"):
        emb.layer_embeddings(model, variables, [x[:20], x[20:]], y[:-1], ["gmp"],
                             progress=False)
    with pytest.raises(InputError, match="unknown method 'umap'; expected one of 'pca', 'tsne'"):
        emb.layer_embeddings(model, variables, x, y, ["gmp"], method="umap", progress=False)

    f = np.random.default_rng(0).standard_normal((40, 3))
    with pytest.raises(InputError, match="unknown method 'umap'"):
        emb.project(f, "umap")
    with pytest.raises(InputError, match="unknown t-SNE backend 'cuml'"):
        emb.project(f, "tsne", backend="cuml")
    with pytest.raises(InputError, match=r"matrix \(N, D\).*got shape \(40,\)"):
        emb.project(f[:, 0])
    with pytest.raises(InputError, match="perplexity < N"):
        emb.project(f, "tsne", perplexity=40.0)
    with pytest.raises(InputError, match="not finite"):
        emb.project(np.where(f > 2, np.nan, f))
    with pytest.raises(InputError, match="one label per example, 40; got 39"):
        emb.knn_accuracy(f, np.zeros(39, int))
    with pytest.raises(InputError, match="a class with at least 5 examples; the largest has 2"):
        emb.knn_accuracy(f, np.arange(40) % 20)
    with pytest.raises(InputError, match="k=40 neighbours, but a training fold holds only 32"):
        emb.knn_accuracy(f, np.arange(40) % 2, k=40)

    monkeypatch.setitem(sys.modules, "openTSNE", None)  # as if openTSNE were not installed
    with pytest.raises(ImportError, match=r"openTSNE .*pip install 'jaxviz\[analysis\]'"):
        emb.project(f, "tsne", perplexity=5.0)


# --- drawing ------------------------------------------------------------------------------


def _blobs(image, colour):
    mask = (image == np.asarray(colour, np.uint8)).all(axis=-1)
    rows, cols = np.nonzero(mask)
    return mask, rows, cols


def test_draw_puts_each_point_in_its_label_colour_where_it_belongs():
    points = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [0.5, 0.5]])
    labels = np.array([0, 1, 2, 3, 4])
    image = emb.draw(points, labels, size=120, legend=False, radius=3)
    assert image.dtype == np.uint8 and image.shape == (120, 120, 3)
    centres = {}
    for label in labels:
        mask, rows, cols = _blobs(image, emb.PALETTE[label])
        assert mask.sum() > 0, label
        centre = (int(round(rows.mean())), int(round(cols.mean())))
        assert tuple(image[centre]) == emb.PALETTE[label]  # a pixel at the point's position
        assert rows.max() - rows.min() <= 6 and cols.max() - cols.min() <= 6  # one disc
        centres[label] = centre
    # y points up: label 0 at (0, 0) is bottom-left, 3 at (1, 1) top-right, 4 in the middle
    assert centres[0][0] > centres[2][0] and centres[0][1] < centres[1][1]
    assert centres[3][0] < centres[1][0] and centres[3][1] > centres[2][1]
    assert abs(centres[4][0] - 60) <= 2 and abs(centres[4][1] - 60) <= 2
    # the square's corners span the plot area (equal scale on both axes)
    assert centres[1][1] - centres[0][1] == centres[0][0] - centres[2][0] > 90


def test_draw_with_title_and_legend_and_labels_that_are_not_ints(digits):
    x, y = digits
    points = np.random.default_rng(0).standard_normal((300, 2))
    image = emb.draw(points, y[:300], size=200, title="two\nlines")
    assert image.dtype == np.uint8 and image.shape == (200, 200, 3)
    for label in range(10):  # every digit's colour: its points and its legend swatch
        assert _blobs(image, emb.PALETTE[label])[0].sum() > 0, label
    words = np.array(["cat", "dog", "cat", "eel"])
    image = emb.draw(np.arange(8.0).reshape(4, 2), words, size=100)
    for rank in range(3):  # by rank among the distinct labels: cat, dog, eel
        assert _blobs(image, emb.PALETTE[rank])[0].sum() > 0
    single = emb.draw(np.zeros((1, 2)), [7], size=64, legend=False)
    assert tuple(single[32, 32]) == emb.PALETTE[7]


def test_draw_refuses_bad_input():
    with pytest.raises(InputError, match=r"\(N, 2\)"):
        emb.draw(np.zeros((4, 3)), np.zeros(4, int))
    with pytest.raises(InputError, match="one label per example, 4; got 3"):
        emb.draw(np.zeros((4, 2)), np.zeros(3, int))
    with pytest.raises(InputError, match="size as an int >= 64"):
        emb.draw(np.zeros((4, 2)), np.zeros(4, int), size=10)
    with pytest.raises(InputError, match="not finite"):
        emb.draw(np.full((4, 2), np.inf), np.zeros(4, int))


def test_draw_layers_one_panel_per_layer():
    rng = np.random.default_rng(0)
    labels = np.arange(60) % 3
    embs = [emb.Embedding(f"layer{i}", 8, rng.standard_normal((60, 2)), 0.5, 0.25)
            for i in range(3)]
    image = emb.draw_layers(embs, labels, ncols=2, size=100, pad=4)
    assert image.dtype == np.uint8 and image.shape == (2 * 100 + 3 * 4, 2 * 100 + 3 * 4, 3)
    panel = image[4:104, 4:104]
    np.testing.assert_array_equal(panel, emb.draw(
        embs[0].points, labels, size=100, title="layer0 (8-d)\nkNN 0.500 full / 0.250 2-D"))
    assert (image[108:, 108:] == 255).all()  # the fourth cell stays background
    with pytest.raises(InputError, match="at least one Embedding"):
        emb.draw_layers([], labels)
    with pytest.raises(InputTypeError, match="Embedding entries"):
        emb.draw_layers([np.zeros((60, 2))], labels)


def test_draw_layers_of_the_digits(every_layer, digits):
    _, y = digits
    image = emb.draw_layers(every_layer, y, ncols=4, size=160)
    rows = -(-len(every_layer) // 4)
    assert image.dtype == np.uint8
    assert image.shape == (rows * 160 + (rows + 1) * 4, 4 * 160 + 5 * 4, 3)

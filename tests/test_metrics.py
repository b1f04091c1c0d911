"""Faithfulness metrics (jaxviz/analysis/metrics.py) against answers known in advance.

A model whose logits are a linear function of the pixels gives deletion and insertion
curves in closed form (each moved pixel adds its own term); the pointing game is played
at the exact tolerance boundary; Spearman's correlation is compared with scipy's on
ties; the randomization check and the report run on the bundled digits model.

Tolerances (relative to the largest magnitude of the expected array, conftest's
``max_rel_err``):
  float32: ``F32_TOL`` = 1e-5. A curve point is a 32-term dot product (plus a softmax)
    summed by XLA in another order than the closed form's cumulative sum: float32
    rounding (eps 6e-8) over that leaves ~1e-6.
  float64: ``F64_TOL`` = 1e-12, the same sums in float64 (eps 1e-16) leave ~1e-15.
  Areas, ranks and correlations are computed in float64 numpy from the same numbers as
  the reference and compared at 1e-12 (or exactly, where the definition is exact).
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import F32_TOL, F64_TOL, max_rel_err

import jaxviz as jv
from jaxviz import parallel
from jaxviz.analysis import metrics

scipy_stats = pytest.importorskip("scipy.stats")
pytest.importorskip("sklearn")

H, W, C, CLASSES = 4, 4, 2, 3
TOL = {"float32": F32_TOL, "float64": F64_TOL}


class LinearNet(nn.Module):
    """logits = flatten(x) @ kernel + bias: each pixel's channels add a fixed term."""

    classes: int = CLASSES

    @nn.compact
    def __call__(self, x):
        return nn.Dense(self.classes)(x.reshape(x.shape[0], -1))


def linear_case(dtype):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, H, W, C)).astype(dtype)
    kernel = rng.standard_normal((H * W * C, CLASSES)).astype(dtype)
    bias = rng.standard_normal(CLASSES).astype(dtype)
    maps = rng.standard_normal((2, H, W)).astype(dtype)
    maps[1, 0, :2] = maps[1, 3, 3] = maps[1, 2, 1]   # a three-way tie in image 1
    variables = {"params": {"Dense_0": {"kernel": jnp.asarray(kernel), "bias": jnp.asarray(bias)}}}
    return LinearNet(), variables, x, maps, kernel.astype(np.float64), bias.astype(np.float64)


def reference_order(m: np.ndarray) -> list[int]:
    """Pixel indices (row-major) from the most salient down, ties in row-major order."""
    flat = m.reshape(-1)
    return sorted(range(flat.size), key=lambda i: (-flat[i], i))


def closed_form(x, moved, rest, kernel, bias, maps, target, step, score):
    """(N, P) curves: start at rest's logits, add each moved pixel's term in map order."""
    n = x.shape[0]
    hw = H * W
    counts = np.minimum(np.arange(-(-hw // step) + 1) * step, hw)
    out = []
    for i in range(n):
        k3 = kernel.reshape(H * W, C, CLASSES)
        terms = np.einsum("pc,pck->pk", (moved[i] - rest[i]).reshape(hw, C), k3)
        order = reference_order(maps[i])
        start = rest[i].reshape(-1) @ kernel + bias
        cumulative = np.concatenate([start[None], start + np.cumsum(terms[order], axis=0)])
        logits = cumulative[counts]                                      # (P, classes)
        if score == "prob":
            e = np.exp(logits - logits.max(axis=1, keepdims=True))
            logits = e / e.sum(axis=1, keepdims=True)
        out.append(logits[:, target[i]])
    return np.stack(out), counts / hw


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("score", ["prob", "logit"])
def test_deletion_and_insertion_of_a_linear_model_in_closed_form(dtype, score):
    # full float32 matmuls: on a GPU, jax's default float32 matmul precision is TF32,
    # about 1e-3 relative, which the float32 tolerance would (rightly) reject
    with jax.enable_x64(dtype == "float64"), jax.default_matmul_precision("highest"):
        model, variables, x, maps, kernel, bias = linear_case(dtype)
        target = np.array([2, 0])
        x64 = x.astype(np.float64)
        baseline = np.linspace(-1, 1, C)                 # per channel, broadcast to x
        for step in (3, 16):                             # 3 does not divide 16: last step of 1
            d = metrics.deletion(model, variables, x, maps, target, step=step,
                                 baseline=baseline.astype(dtype), score=score, batch_size=2)
            want, fractions = closed_form(x64, np.broadcast_to(baseline, x.shape), x64,
                                          kernel, bias, maps, target, step, score)
            assert d.curves.dtype == np.dtype(dtype) and d.curves.shape == want.shape
            assert max_rel_err(d.curves, want) <= TOL[dtype]
            np.testing.assert_array_equal(d.fractions, fractions)
            np.testing.assert_allclose(d.auc, np.trapezoid(d.curves.astype(np.float64),
                                                           fractions, axis=1), rtol=1e-12)
            i = metrics.insertion(model, variables, x, maps, target, step=step, baseline=0.0,
                                  score=score)
            want, _ = closed_form(x64, x64, np.zeros_like(x64), kernel, bias, maps, target,
                                  step, score)
            assert max_rel_err(i.curves, want) <= TOL[dtype]
        # (N, H, W, C) maps count sum_c |m_c| per pixel
        m4 = np.stack([maps, -maps], axis=-1) / 2
        d4 = metrics.deletion(model, variables, x, m4, target, step=3, score=score)
        d3 = metrics.deletion(model, variables, x, np.abs(maps), target, step=3, score=score)
        np.testing.assert_array_equal(d4.curves, d3.curves)


def test_curve_ends_are_the_image_and_the_baseline():
    """Point 0 of deletion scores x, its last point the baseline; insertion the reverse;
    the default insertion start is the blurred image (RISE)."""
    model, variables, x, maps, kernel, bias = linear_case("float32")
    target = np.array([0, 1])
    probs = np.asarray(jax.nn.softmax(model.apply(variables, x)))[[0, 1], target]
    d = metrics.deletion(model, variables, x, maps, target)
    i = metrics.insertion(model, variables, x, maps, target)
    assert d.curves.shape == (2, H * W // W + 1)     # default step: one row
    np.testing.assert_allclose(d.curves[:, 0], probs, rtol=F32_TOL)
    np.testing.assert_allclose(i.curves[:, -1], probs, rtol=F32_TOL)
    blurred = metrics.blur(x, 5.0)
    start = np.asarray(jax.nn.softmax(model.apply(variables, blurred)))[[0, 1], target]
    np.testing.assert_allclose(i.curves[:, 0], start, rtol=F32_TOL)
    zero = np.asarray(jax.nn.softmax(model.apply(variables, np.zeros_like(x))))[[0, 1], target]
    np.testing.assert_allclose(d.curves[:, -1], zero, rtol=F32_TOL)


def test_ranks_keep_ties_in_row_major_order():
    flat = metrics.ranks(np.zeros((1, 3, 4)))
    np.testing.assert_array_equal(flat[0], np.arange(12).reshape(3, 4))
    m = np.array([[[1.0, 2.0, 2.0], [0.5, 2.0, 1.0]]])
    # 2.0 at (0,1), (0,2), (1,1) first in row-major order, then 1.0 at (0,0), (1,2), then 0.5
    np.testing.assert_array_equal(metrics.ranks(m)[0], [[3, 0, 1], [5, 2, 4]])
    model, variables, x, maps, *_ = linear_case("float32")
    r = metrics.ranks(maps)
    for i in range(2):
        np.testing.assert_array_equal(np.argsort(r[i].reshape(-1)), reference_order(maps[i]))


def test_auc_is_the_trapezoid_over_0_to_1():
    np.testing.assert_allclose(metrics.auc([1.0, 0.5, 0.0]), 0.5, rtol=1e-15)
    curve = np.array([[0.9, 0.3, 0.2, 0.1, 0.0]])
    rise = (curve.sum() - curve[0, 0] / 2 - curve[0, -1] / 2) / (curve.shape[1] - 1)
    np.testing.assert_allclose(metrics.auc(curve), [rise], rtol=1e-15)
    t = np.linspace(0, 1, 101)                       # x^2: trapezoid error h^2 / 6 exactly
    np.testing.assert_allclose(metrics.auc(t ** 2), 1 / 3 + 0.01 ** 2 / 6, rtol=1e-12)
    # uneven points (a last step shorter than the others)
    np.testing.assert_allclose(metrics.auc([1.0, 1.0, 0.0], [0.0, 0.8, 1.0]), 0.9, rtol=1e-15)
    with pytest.raises(ValueError, match="at least 2 points"):
        metrics.auc([1.0])
    with pytest.raises(ValueError, match="fractions of shape"):
        metrics.auc([1.0, 0.0], [0.0, 0.5, 1.0])


def test_blur_is_a_normalized_gaussian_with_zeros_beyond_the_border():
    ndimage = pytest.importorskip("scipy.ndimage")
    x = np.random.default_rng(1).random((2, 13, 17, 3))
    sigma = 2.5
    r = math.ceil(sigma)
    k = np.exp(-np.arange(-r, r + 1) ** 2 / (2 * sigma ** 2))
    k /= k.sum()
    want = np.stack([np.stack([ndimage.correlate(x[n, ..., c], np.outer(k, k), mode="constant")
                               for c in range(3)], -1) for n in range(2)])
    np.testing.assert_allclose(metrics.blur(x, sigma), want, rtol=0, atol=1e-12)
    flat = metrics.blur(np.ones((1, 30, 30, 1)), 5.0)[0, ..., 0]
    np.testing.assert_allclose(flat[5:-5, 5:-5], 1.0, rtol=1e-12)   # 11 x 11 window inside
    assert flat[0, 0] < 0.5
    np.testing.assert_array_equal(metrics.blur(x, 0), x)


def test_pointing_game_at_the_tolerance_boundary():
    maps = np.zeros((6, 40, 40))
    box = (10, 10, 20, 20)            # rows 10..19, columns 10..19
    points = [(15, 15),               # inside
              (15, 34),               # 15 columns right of the last column (19): distance 15
              (15, 35),               # 16: a miss
              (29, 28),               # (10, 9) from the corner (19, 19): sqrt(181) ~ 13.5
              (28, 31),               # (9, 12) from (19, 19): exactly 15
              (0, 0)]                 # (10, 10) from the corner (10, 10): sqrt(200) ~ 14.1
    for n, (r, c) in enumerate(points):
        maps[n, r, c] = 1.0
    boxes = np.tile(box, (6, 1))
    hits = metrics.pointing_game(maps, boxes, tolerance=15)
    np.testing.assert_array_equal(hits, [True, True, False, True, True, True])
    np.testing.assert_array_equal(metrics.pointing_game(maps, boxes, tolerance=14),
                                  [True, False, False, True, False, False])
    np.testing.assert_array_equal(metrics.pointing_game(maps, boxes, tolerance=0),
                                  [True, False, False, False, False, False])
    masks = np.zeros((6, 40, 40), bool)
    masks[:, 10:20, 10:20] = True
    np.testing.assert_array_equal(metrics.pointing_game(maps, masks=masks, tolerance=15), hits)
    # a mask of one pixel, and a box hanging off the image
    one = np.zeros((1, 40, 40), bool)
    one[0, 5, 5] = True
    m = np.zeros((1, 40, 40))
    m[0, 5, 17] = 1.0
    assert metrics.pointing_game(m, masks=one, tolerance=12)[0]
    assert not metrics.pointing_game(m, masks=one, tolerance=11.99)[0]
    off = np.array([[-5, 30, 3, 60]])   # rows -5..2, columns 30..59: (3, 13) away, sqrt(178)
    assert not metrics.pointing_game(m, off, tolerance=13.3)[0]
    assert metrics.pointing_game(m, off, tolerance=13.4)[0]


def test_pointing_game_takes_the_first_maximum_in_row_major_order():
    m = np.zeros((1, 10, 10))
    m[0, 2, 7] = m[0, 8, 1] = 5.0     # (2, 7) comes first
    assert metrics.pointing_game(m, np.array([[2, 7, 3, 8]]), tolerance=0)[0]
    assert not metrics.pointing_game(m, np.array([[8, 1, 9, 2]]), tolerance=0)[0]
    # (N, H, W, C) maps point with sum_c |m_c|
    m4 = np.zeros((1, 10, 10, 2))
    m4[0, 4, 4] = (-3.0, -3.0)
    m4[0, 1, 1] = (5.0, 0.0)
    assert metrics.pointing_game(m4, np.array([[4, 4, 5, 5]]), tolerance=0)[0]


def test_spearman_equals_scipy_on_ties():
    rng = np.random.default_rng(2)
    a = rng.integers(0, 4, size=(5, 6, 7)).astype(np.float32)    # many ties
    b = rng.integers(0, 3, size=(5, 6, 7)).astype(np.float64)
    b[0] = a[0] * 2 + 1                                          # monotone: 1
    b[1] = -a[1]                                                 # reversed: -1
    got = metrics.spearman(a, b)
    want = [scipy_stats.spearmanr(a[i].ravel(), b[i].ravel()).statistic for i in range(5)]
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(got[:2], [1.0, -1.0], rtol=1e-15)
    assert (metrics.spearman(a, a) == 1.0).all()                # exactly
    const = metrics.spearman(np.ones((1, 9)), rng.random((1, 9)))
    assert np.isnan(const).all()                                # no ranks: NaN, as scipy
    with pytest.raises(ValueError, match="same shape"):
        metrics.spearman(a, b[:2])


@pytest.fixture(scope="module")
def digits():
    model, variables = jv.load("lenet_digits")
    x, y = jv.data.digits("test")
    return model, variables, jnp.asarray(x[:8]), y[:8]


def test_randomization_makes_the_gradient_forget_the_image(digits):
    """Adebayo et al.'s cascading randomization: the gradient of the fully randomized
    LeNet ranks pixels unlike the trained one's (mean |rho| measured ~0.01 signed, ~0.16
    absolute), while stage 0 is the trained model itself (exactly 1)."""
    model, variables, x, y = digits
    seen = []

    def method(m, v, t, c):
        seen.append(v)
        return jv.attribution.gradient(m, v, t, c)

    r = metrics.randomization_check(model, variables, x, y, method, key=jax.random.key(0))
    assert r.layers == (None, "classifier", "features.6", "features.3", "features.0")
    assert r.spearman.shape == r.spearman_abs.shape == (5, 8)
    assert (r.spearman[0] == 1.0).all() and (r.spearman_abs[0] == 1.0).all()
    assert abs(r.spearman[-1].mean()) < 0.2 and r.spearman_abs[-1].mean() < 0.5
    assert (r.spearman_abs[-1] < r.spearman_abs[1]).mean() >= 0.75
    # cascading: stage 1 changed the classifier only, stage 2 also conv3, ...
    p0, p1, p2 = (s["params"] for s in seen[:3])
    assert not np.allclose(p1["classifier"]["kernel"], p0["classifier"]["kernel"])
    np.testing.assert_array_equal(p1["features"]["6"]["kernel"], p0["features"]["6"]["kernel"])
    np.testing.assert_array_equal(p2["classifier"]["kernel"], p1["classifier"]["kernel"])
    assert not np.allclose(p2["features"]["6"]["kernel"], p0["features"]["6"]["kernel"])
    np.testing.assert_array_equal(p2["features"]["3"]["kernel"], p0["features"]["3"]["kernel"])
    # a chosen subset, top-down whatever the order given; aliases are names too
    some = metrics.randomization_check(model, variables, x[:2], y[:2], jv.attribution.gradient,
                                       key=jax.random.key(0), layers=["conv1", "logits"])
    assert some.layers == (None, "classifier", "features.0")
    with pytest.raises(jv.LayerError, match="holds no parameters"):
        metrics.randomization_check(model, variables, x[:2], y[:2], jv.attribution.gradient,
                                    key=jax.random.key(0), layers=["relu1"])
    with pytest.raises(TypeError, match="key"):
        metrics.randomization_check(model, variables, x[:2], y[:2], jv.attribution.gradient,
                                    key=None)


REPORT_OPTIONS = {"smoothgrad": {"samples": 2}, "integrated_gradients": {"steps": 2},
                  "occlusion": {"window": 7, "stride": 7}}
STEP = 112  # 4 rows of a 28 px digit: 8 curve points


def test_report_has_one_row_per_method_and_gathers_before_every_mean(digits, monkeypatch):
    model, variables, x, y = digits
    x, y = x[:4], y[:4]                       # the shapes of the next test: shared programs
    boxes = np.array([[4, 4, 24, 24], [0, 0, 28, 14], [10, 10, 11, 11], [0, 14, 28, 28]])
    gathered = []
    real_gather = parallel.gather

    def counting_gather(local):
        gathered.append(np.asarray(local).shape)
        return real_gather(local)

    monkeypatch.setattr(parallel, "gather", counting_gather)
    rows = metrics.report(model, variables, x, y, key=jax.random.key(1), options=REPORT_OPTIONS,
                          boxes=boxes, tolerance=2, step=STEP)
    names = [r.method for r in rows]
    assert names == [*metrics.DEFAULT_METHODS, metrics.RANDOM_BASELINE]
    assert all(r.images == 4 for r in rows)
    assert len(gathered) >= 6 * len(rows) and all(s[0] == 4 for s in gathered)
    table = metrics.format_table(rows).splitlines()
    assert len(table) == 2 + len(rows)
    assert table[0].startswith("| method | deletion AUC ↓ | insertion AUC ↑ | pointing ↑")
    # the gradient row is the mean of the per-image metrics
    g = jv.attribution.gradient(model, variables, x, y)
    d = metrics.deletion(model, variables, x, g, y, step=STEP)
    hits = metrics.pointing_game(g, boxes, tolerance=2)
    assert math.isclose(rows[0].deletion_auc, d.auc.mean(), rel_tol=1e-12)
    assert rows[0].pointing == hits.mean()
    random = rows[-1]
    assert random.spearman == 1.0 and random.spearman_abs == 1.0    # it ignores the model
    for r in rows:
        assert all(0.0 <= v <= 1.0 for v in (r.deletion_auc, r.insertion_auc, r.pointing))
    # without objects: no pointing column, shown as a dash
    rows = metrics.report(model, variables, x, y, key=jax.random.key(1),
                          methods=["gradient", "grad_cam"], randomization=False, step=STEP)
    assert math.isnan(rows[0].pointing) and math.isnan(rows[0].spearman)
    assert "| – |" in metrics.format_table(rows)


def test_report_split_between_two_processes_gives_the_same_rows(digits, monkeypatch):
    """Two processes each holding half the images (gather simulated: process 1's
    per-image arrays are recorded, then appended to process 0's): the rows equal the
    rows of one process holding all of them. Random maps and SmoothGrad noise follow the
    image, not its place in the batch."""
    model, variables, x, y = digits
    x, y = x[:4], y[:4]
    kw = dict(key=jax.random.key(1), methods=["gradient", "smoothgrad"], step=STEP,
              options={"smoothgrad": {"samples": 2}})
    whole = metrics.report(model, variables, x, y, **kw)
    recorded = []
    monkeypatch.setattr(parallel, "gather", lambda local: recorded.append(np.asarray(local))
                        or np.asarray(local))
    metrics.report(model, variables, x[2:], y[2:], **kw)
    others = iter(recorded)
    monkeypatch.setattr(parallel, "gather",
                        lambda local: np.concatenate([np.asarray(local), next(others)]))
    split = metrics.report(model, variables, x[:2], y[:2], **kw)
    assert [r.method for r in split] == [r.method for r in whole]
    for a, b in zip(split, whole):
        assert a.images == b.images == 4
        for field in ("deletion_auc", "insertion_auc", "spearman", "spearman_abs"):
            assert math.isclose(getattr(a, field), getattr(b, field), rel_tol=F32_TOL), field


def test_bad_inputs_say_what_was_expected(digits):
    model, variables, x, y = digits
    x, y = x[:2], y[:2]
    maps = np.zeros((2, 28, 28))
    with pytest.raises(ValueError, match=r"maps of shape \(N, H, W\) = \(2, 28, 28\)"):
        metrics.deletion(model, variables, x, maps[:, :20], y)
    with pytest.raises(ValueError, match="unknown score 'loss'"):
        metrics.deletion(model, variables, x, maps, y, score="loss")
    with pytest.raises(ValueError, match="step as an int >= 1"):
        metrics.insertion(model, variables, x, maps, y, step=0)
    with pytest.raises(ValueError, match="'blur', a number"):
        metrics.insertion(model, variables, x, maps, y, baseline="grey")
    with pytest.raises(ValueError, match="out of range for 10 classes"):
        metrics.deletion(model, variables, x, maps, np.array([1, 10]))
    with pytest.raises(TypeError, match="class"):
        metrics.deletion(model, variables, x, maps, jv.objectives.class_logit(1))
    with pytest.raises(ValueError, match="not finite"):
        metrics.deletion(model, variables, x, np.full((2, 28, 28), np.nan), y)
    with pytest.raises(ValueError, match="neither"):
        metrics.pointing_game(maps)
    with pytest.raises(ValueError, match="both"):
        metrics.pointing_game(maps, np.zeros((2, 4), int), np.ones((2, 28, 28), bool))
    with pytest.raises(TypeError, match="bool"):
        metrics.pointing_game(maps, masks=np.ones((2, 28, 28)))
    with pytest.raises(ValueError, match=r"box 1 \[5, 5, 5, 9\] is empty"):
        metrics.pointing_game(maps, np.array([[0, 0, 4, 4], [5, 5, 5, 9]]))
    with pytest.raises(ValueError, match="tolerance"):
        metrics.pointing_game(maps, np.array([[0, 0, 4, 4]] * 2), tolerance=-1)
    with pytest.raises(ValueError, match="unknown method 'lime'"):
        metrics.report(model, variables, x, y, key=jax.random.key(0), methods=["lime"])
    with pytest.raises(TypeError, match="key"):
        metrics.report(model, variables, x, y, key=None)
    with pytest.raises(ValueError, match=r"boxes of shape \(2, 4\)"):
        metrics.report(model, variables, x, y, key=jax.random.key(0), boxes=np.zeros((3, 4), int))

"""Tests for jaxviz.switches: max-pool switches and unpooling, against torch.

Tolerances: pooling and unpooling only select and copy values, so values and
switches must equal torch's exactly (``assert_array_equal``). Gradients through
overlapping windows add cotangents in another order than torch: compared in float64
with ``F64_TOL``.
"""

from __future__ import annotations


import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import F64_TOL, max_rel_err, nhwc
from jaxviz.switches import max_pool_with_switches, unpool_with_switches

torch = pytest.importorskip("torch")
F = torch.nn.functional

# (H, W), kernel, stride, padding, ceil_mode
ALEXNET_POOLS = [((55, 55), 3, 2, 0, False), ((27, 27), 3, 2, 0, False), ((13, 13), 3, 2, 0, False)]
GOOGLENET_POOLS = [
    ((112, 112), 3, 2, 0, True),  # maxpool1
    ((56, 56), 3, 2, 0, True),  # maxpool2
    ((28, 28), 3, 2, 0, True),  # maxpool3
    ((14, 14), 2, 2, 0, True),  # maxpool4
    ((28, 28), 3, 1, 1, True),  # inception branch4 pools
    ((7, 7), 3, 1, 1, True),
]
OTHER_POOLS = [
    ((9, 8), 3, 2, 1, True),  # padding and ceil mode, rectangular
    ((10, 7), (3, 2), (3, 2), (1, 1), True),  # last window starting in the ceil region
    ((8, 8), 2, None, 0, False),  # non-overlapping, stride defaults to the kernel
    ((11, 9), 4, 3, 2, False),
]
POOLS = ALEXNET_POOLS + GOOGLENET_POOLS + OTHER_POOLS
POOL_IDS = [f"{h}x{w}-k{k}-s{s}-p{p}-{'ceil' if c else 'floor'}" for (h, w), k, s, p, c in POOLS]


def _torch(x: np.ndarray):
    return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))


def _torch_pool(x, k, s, p, c):
    y, i = F.max_pool2d(_torch(x), k, s, p, ceil_mode=c, return_indices=True)
    return nhwc(y), nhwc(i)


def _input(kind: str, shape, seed) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if kind == "normal":
        return rng.standard_normal(shape).astype(np.float32)
    if kind == "relu":  # non-negative with many exact zeros, like a ReLU output
        return np.maximum(rng.standard_normal(shape), 0).astype(np.float32)
    if kind == "ties":  # values in {0, 1, 2}: most windows hold a tied maximum
        return rng.integers(0, 3, shape).astype(np.float32)
    raise AssertionError(kind)


@pytest.mark.parametrize("kind", ["normal", "ties"])
@pytest.mark.parametrize("size,k,s,p,c", POOLS, ids=POOL_IDS)
def test_values_and_switches_equal_torch(size, k, s, p, c, kind):
    x = _input(kind, (2, *size, 3), seed=sum(size))
    want_y, want_i = _torch_pool(x, k, s, p, c)
    y, sw = max_pool_with_switches(x, k, s, p, c)
    assert sw.dtype == jnp.int32
    np.testing.assert_array_equal(np.asarray(y), want_y)
    np.testing.assert_array_equal(np.asarray(sw), want_i)


def test_switch_convention_closed_form():
    # 4x4 plane 0..15, 2x2 windows stride 2: each window's maximum is its bottom-right.
    x = np.arange(16, dtype=np.float32).reshape(1, 4, 4, 1)
    y, sw = max_pool_with_switches(x, 2)
    np.testing.assert_array_equal(np.asarray(sw)[0, :, :, 0], [[5, 7], [13, 15]])
    np.testing.assert_array_equal(np.asarray(y)[0, :, :, 0], [[5, 7], [13, 15]])
    # A constant plane: every window ties, the first position inside the input wins.
    # 3x3 stride 2 padding 1 ceil mode on 5x5: windows start at rows/cols -1, 1, 3.
    y, sw = max_pool_with_switches(np.ones((1, 5, 5, 1), np.float32), 3, 2, 1, True)
    starts = [0, 1, 3]
    np.testing.assert_array_equal(np.asarray(sw)[0, :, :, 0],
                                  [[r * 5 + c for c in starts] for r in starts])


def test_nan_and_all_minus_inf_windows_follow_torch():
    # torch updates on `v > best or isnan(v)`: a NaN beats numbers and the last NaN of a
    # window wins; an all -inf window points at its first position inside the input.
    x = np.zeros((1, 5, 5, 1), np.float32)
    x[0, 0, 1, 0] = x[0, 1, 0, 0] = np.nan
    x[0, 3:, 3:, 0] = -np.inf
    for k, s, p, c in [(3, 2, 1, True), (2, 2, 0, True), (3, 1, 1, False)]:
        want_y, want_i = _torch_pool(x, k, s, p, c)
        y, sw = max_pool_with_switches(x, k, s, p, c)
        np.testing.assert_array_equal(np.asarray(y), want_y)  # NaN == NaN here
        np.testing.assert_array_equal(np.asarray(sw), want_i)
    x = np.full((1, 4, 4, 1), -np.inf, np.float32)
    want_y, want_i = _torch_pool(x, 3, 2, 1, True)
    y, sw = max_pool_with_switches(x, 3, 2, 1, True)
    np.testing.assert_array_equal(np.asarray(sw), want_i)
    np.testing.assert_array_equal(np.asarray(sw)[0, :, :, 0], [[0, 1, 3], [4, 5, 7], [12, 13, 15]])


@pytest.mark.parametrize("kind", ["relu", "ties"])
@pytest.mark.parametrize("size,k,s,p,c", ALEXNET_POOLS + GOOGLENET_POOLS + OTHER_POOLS[:2],
                         ids=POOL_IDS[: len(ALEXNET_POOLS + GOOGLENET_POOLS) + 2])
def test_pool_of_unpool_gives_back_the_pooled_values(size, k, s, p, c, kind):
    # The property of Zeiler & Fergus' switches on non-negative (post-ReLU) inputs:
    # max_pool(unpool(y, switches)) == y exactly. Where y > 0 the switches come back too.
    x = _input(kind, (2, *size, 3), seed=7 + sum(size))
    y, sw = max_pool_with_switches(x, k, s, p, c)
    x_hat = unpool_with_switches(y, sw, x.shape)
    assert x_hat.shape == x.shape
    y2, sw2 = max_pool_with_switches(x_hat, k, s, p, c)
    np.testing.assert_array_equal(np.asarray(y2), np.asarray(y))
    positive = np.asarray(y) > 0
    assert positive.mean() > 0.3  # the switch check below is not vacuous
    np.testing.assert_array_equal(np.asarray(sw2)[positive], np.asarray(sw)[positive])
    # x_hat keeps exactly the switch positions of x and zeros elsewhere.
    kept = np.asarray(x_hat) != 0
    np.testing.assert_array_equal(np.asarray(x_hat)[kept], x[kept])


def test_property_needs_non_negative_inputs():
    # Closed form: a constant -1 plane pools to -1, but unpooling writes zeros around the
    # switches, and a window that sees one of those zeros pools to 0 > -1.
    x = -np.ones((1, 5, 5, 1), np.float32)
    y, sw = max_pool_with_switches(x, 3, 2)
    y2, _ = max_pool_with_switches(unpool_with_switches(y, sw, (5, 5)), 3, 2)
    np.testing.assert_array_equal(np.asarray(y), -1.0)
    np.testing.assert_array_equal(np.asarray(y2), 0.0)


@pytest.mark.parametrize("kind", ["normal", "ties"])
@pytest.mark.parametrize("size,k,s,p,c", [POOLS[2], POOLS[4], POOLS[7], POOLS[-2]],
                         ids=[POOL_IDS[2], POOL_IDS[4], POOL_IDS[7], POOL_IDS[-2]])
def test_unpool_equals_torch_max_unpool2d(size, k, s, p, c, kind):
    # Non-overlapping (2x2 stride 2) and overlapping windows (3x3 stride 1 or 2), where
    # an input position can be the switch of several windows.
    x = _input(kind, (2, *size, 3), seed=11)
    want_y, want_i = _torch_pool(x, k, s, p, c)
    want = nhwc(F.max_unpool2d(_torch(want_y), _torch(want_i), k, s, p, output_size=size))
    y, sw = max_pool_with_switches(x, k, s, p, c)
    np.testing.assert_array_equal(np.asarray(unpool_with_switches(y, sw, size)), want)
    if k != s and kind == "ties":
        flat = np.asarray(sw).reshape(-1)
        assert len(np.unique(flat)) < flat.size  # shared switches did occur


def test_unpool_shared_switch_last_writer_wins_like_torch():
    # Hand-made: pooled (1, 1, 3, 1) whose first two entries point at the same input
    # position with different values. torch's loop writes in order: the later one stays.
    y = np.array([10.0, 20.0, 30.0], np.float32).reshape(1, 1, 3, 1)
    sw = np.array([1, 1, 3], np.int32).reshape(1, 1, 3, 1)
    got = np.asarray(unpool_with_switches(y, sw, (1, 4)))[0, 0, :, 0]
    np.testing.assert_array_equal(got, [0.0, 20.0, 0.0, 30.0])
    want = F.max_unpool2d(_torch(y), _torch(sw.astype(np.int64)), (1, 2), (1, 1),
                         output_size=(1, 4))
    np.testing.assert_array_equal(got, nhwc(want)[0, 0, :, 0])


def test_jit_and_vmap_match_eager():
    x = _input("ties", (2, 13, 13, 4), seed=3)
    pool = jax.jit(max_pool_with_switches, static_argnums=(1, 2, 3, 4))
    unpool = jax.jit(unpool_with_switches, static_argnums=2)
    y, sw = max_pool_with_switches(x, 3, 1, 1, True)
    jy, jsw = pool(x, 3, 1, 1, True)
    np.testing.assert_array_equal(np.asarray(jy), np.asarray(y))
    np.testing.assert_array_equal(np.asarray(jsw), np.asarray(sw))
    np.testing.assert_array_equal(np.asarray(unpool(y, sw, (13, 13))),
                                  np.asarray(unpool_with_switches(y, sw, (13, 13))))
    # vmap over a leading axis: each slice pooled on its own.
    vy, vsw = jax.vmap(lambda t: max_pool_with_switches(t, 3, 1, 1, True))(x[:, None])
    np.testing.assert_array_equal(np.asarray(vy[:, 0]), np.asarray(y))
    np.testing.assert_array_equal(np.asarray(vsw[:, 0]), np.asarray(sw))


@pytest.mark.parametrize("kind", ["normal", "ties"])
@pytest.mark.parametrize("size,k,s,p,c", [POOLS[2], POOLS[8], POOLS[10]],
                         ids=[POOL_IDS[2], POOL_IDS[8], POOL_IDS[10]])
def test_gradient_goes_to_switches_like_torch(size, k, s, p, c, kind):
    # d/dx of sum(g * y) equals torch's max_pool2d backward (cotangents of windows that
    # share a switch add up). float64, F64_TOL: the additions run in another order.
    rng = np.random.default_rng(5)
    x = _input(kind, (1, *size, 2), seed=5).astype(np.float64)
    t = _torch(x).requires_grad_(True)
    ty = F.max_pool2d(t, k, s, p, ceil_mode=c)
    g = rng.standard_normal(nhwc(ty).shape)
    ty.backward(_torch(g))
    with jax.enable_x64(True):
        dx = jax.grad(lambda v: jnp.sum(jnp.asarray(g) * max_pool_with_switches(v, k, s, p, c)[0]))(
            jnp.asarray(x))
        dx = np.asarray(dx)
    assert dx.dtype == np.float64
    assert max_rel_err(dx, nhwc(t.grad)) <= F64_TOL
    assert np.count_nonzero(dx) > 0


def test_unpool_gradient_is_the_cotangent_at_each_switch():
    # Closed form: d/dy of sum(G * unpool(y)) = G[switch], and 0 for a pooled value that a
    # later window overwrote. Equal to torch's backward when no switch is shared.
    x = _input("normal", (1, 8, 8, 2), seed=9)
    y, sw = max_pool_with_switches(x, 2)
    big_g = np.random.default_rng(1).standard_normal(x.shape).astype(np.float32)
    dy = jax.grad(lambda v: jnp.sum(big_g * unpool_with_switches(v, sw, (8, 8))))(y)
    flat_g = big_g.reshape(1, 64, 2)
    want = np.take_along_axis(flat_g, np.asarray(sw).reshape(1, 16, 2), axis=1).reshape(y.shape)
    np.testing.assert_array_equal(np.asarray(dy), want)
    ty = _torch(np.asarray(y)).requires_grad_(True)
    F.max_unpool2d(ty, _torch(np.asarray(sw).astype(np.int64)), 2, output_size=(8, 8)).backward(
        _torch(big_g))
    np.testing.assert_array_equal(np.asarray(dy), nhwc(ty.grad))
    # Shared switch: the overwritten value gets no gradient.
    y1 = jnp.array([10.0, 20.0], jnp.float32).reshape(1, 1, 2, 1)
    s1 = jnp.array([0, 0], jnp.int32).reshape(1, 1, 2, 1)
    d1 = jax.grad(lambda v: jnp.sum(unpool_with_switches(v, s1, (1, 2)) * 3.0))(y1)
    np.testing.assert_array_equal(np.asarray(d1).reshape(-1), [0.0, 3.0])


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: max_pool_with_switches(np.zeros((5, 5, 1), np.float32), 2), r"\(N, H, W, C\)"),
        (lambda: max_pool_with_switches(np.zeros((1, 5, 5, 1), np.int32), 2), "float"),
        (lambda: max_pool_with_switches(np.zeros((1, 5, 5, 1), np.float32), 3, 1, 2), "half"),
        (lambda: max_pool_with_switches(np.zeros((1, 2, 2, 1), np.float32), 3), "larger"),
        (lambda: unpool_with_switches(np.zeros((1, 2, 2, 1)), np.zeros((1, 2, 2, 2), np.int32),
                                      (4, 4)), "pooled shape"),
        (lambda: unpool_with_switches(np.zeros((1, 2, 2, 1)), np.zeros((1, 2, 2, 1)), (4, 4)),
         "integers"),
        (lambda: unpool_with_switches(np.zeros((1, 2, 2, 1)), np.full((1, 2, 2, 1), 16),
                                      (4, 4)), r"\[0, 16\)"),
        (lambda: unpool_with_switches(np.zeros((1, 2, 2, 1)), np.full((1, 2, 2, 1), -1),
                                      (4, 4)), r"\[0, 16\)"),
        (lambda: unpool_with_switches(np.zeros((1, 2, 2, 1)), np.zeros((1, 2, 2, 1), np.int32),
                                      (2, 4, 4, 1)), "batch and channels"),
        (lambda: unpool_with_switches(np.zeros((1, 2, 2, 1)), np.zeros((1, 2, 2, 1), np.int32),
                                      (4,)), r"\(H, W\)"),
    ],
)
def test_errors_say_what_was_expected(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_out_of_range_switches_are_dropped_under_jit():
    y = jnp.ones((1, 1, 2, 1), jnp.float32)
    sw = jnp.array([3, 99], jnp.int32).reshape(1, 1, 2, 1)
    got = jax.jit(unpool_with_switches, static_argnums=2)(y, sw, (2, 2))
    np.testing.assert_array_equal(np.asarray(got)[0, :, :, 0], [[0.0, 0.0], [0.0, 1.0]])

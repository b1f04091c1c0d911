"""Torch-exact ops (jaxviz.models.layers) and Linen modules (jaxviz.models.modules)
against torch.nn.functional / torch.nn on small inputs.

Tolerances (see conftest.py), relative to the largest magnitude of the expected array:
  exact (0): max pooling selects single values, flatten reorders them, and dropped
    entries are zero, so these must agree bit for bit.
  F64_TOL = 1e-12: float64 computations that sum in a different order than torch.
  F32_TOL = 1e-5: the same in float32.
"""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import F32_TOL, F64_TOL, count_primitive, max_rel_err, nhwc
from jaxviz.models import layers, modules

torch = pytest.importorskip("torch")
F = torch.nn.functional


def nchw(a: np.ndarray):
    """numpy NHWC -> torch NCHW tensor of the same dtype."""
    return torch.from_numpy(np.ascontiguousarray(np.asarray(a).transpose(0, 3, 1, 2)))


def rand(shape, seed=0, dtype=np.float64):
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


# --- max pooling ------------------------------------------------------------------------

# (kernel, stride, padding): square and non-square, overlapping (k > s), tiling (k == s),
# gapped (k < s), padded up to torch's limit of half the kernel.
POOL_CONFIGS = [
    (2, 2, 0), (2, 2, 1), (3, 2, 0), (3, 2, 1), (5, 3, 2), (1, 2, 0), (2, 3, 1),
    ((3, 2), (2, 1), (1, 0)),
]
# (H, W) pairs: every size 5..17 appears on one axis, both parities and all residues
# mod the strides; 7 shapes keep the per-shape compilations few.
SHAPES = [(h, 22 - h) for h in range(5, 12)]


@pytest.mark.parametrize("ceil_mode", [False, True])
@pytest.mark.parametrize("kernel,stride,padding", POOL_CONFIGS)
def test_max_pool2d_matches_torch_over_size_grid(kernel, stride, padding, ceil_mode):
    # Tolerance: exact. Max pooling picks one input value per window.
    k, s, p = layers.pair(kernel), layers.pair(stride), layers.pair(padding)
    module = modules.MaxPool2d(kernel, stride, padding, ceil_mode=ceil_mode)
    for h, w in SHAPES:
        # All negative: a pool that padded with 0 instead of -inf would return 0 at borders.
        x = -1.0 - np.abs(rand((2, h, w, 3), seed=h)).astype(np.float32)
        want = nhwc(F.max_pool2d(nchw(x), k, s, p, ceil_mode=ceil_mode))
        got = np.asarray(module.apply({}, jnp.asarray(x)))
        expect_shape = (2, *(layers.pool_output_size(n, kk, ss, pp, ceil_mode)
                             for n, kk, ss, pp in zip((h, w), k, s, p)), 3)
        assert want.shape == expect_shape, (h, w)
        assert got.shape == want.shape, (h, w)
        np.testing.assert_array_equal(got, want, err_msg=f"size {(h, w)}")


def test_max_pool2d_ceil_mode_drops_window_starting_in_padding():
    # size 5, kernel 2, stride 2, padding 1: the ceil formula gives 4 windows, but the
    # 4th would start at padded position 6 = size + padding, entirely in the right
    # padding; torch drops it. Tolerance: exact.
    size, k, s, p = 5, 2, 2, 1
    naive = -(-(size + 2 * p - k) // s) + 1
    assert naive == 4
    assert layers.pool_output_size(size, k, s, p, True) == 3
    x = rand((1, size, size, 2), seed=1)
    want = nhwc(F.max_pool2d(nchw(x), k, s, p, ceil_mode=True))
    assert want.shape == (1, 3, 3, 2)
    with jax.enable_x64(True):
        got = np.asarray(modules.MaxPool2d(k, s, p, ceil_mode=True).apply({}, jnp.asarray(x)))
    np.testing.assert_array_equal(got, want)
    # Without padding the same rule applies when the stride exceeds the kernel.
    assert layers.pool_output_size(4, 1, 2, 0, True) == 2
    assert F.max_pool2d(torch.zeros(1, 1, 4, 4), 1, 2, 0, ceil_mode=True).shape[-1] == 2


def test_pool_output_size_matches_torch():
    # Tolerance: exact (integer sizes), dilation included, and at least one case where
    # torch's dropped-last-window rule changes the result.
    dropped = 0
    for size, k, s, p, d, ceil in itertools.product(range(1, 14), [1, 2, 3, 5], [1, 2, 3],
                                                    [0, 1, 2], [1, 2], [False, True]):
        if 2 * p > k or d * (k - 1) + 1 > size + 2 * p:
            continue  # torch rejects these (padding > half the kernel, window too big)
        want = F.max_pool1d(torch.zeros(1, 1, size), k, s, p, d, ceil_mode=ceil).shape[-1]
        assert layers.pool_output_size(size, k, s, p, ceil, d) == want, (size, k, s, p, d, ceil)
        span = size + 2 * p - d * (k - 1) - 1
        dropped += ceil and want != -(-span // s) + 1
    assert dropped > 0


def test_pool_output_size_rejects_window_larger_than_input():
    with pytest.raises(ValueError, match="larger"):
        layers.pool_output_size(2, 5, 1, 0, False)


# --- adaptive average pooling --------------------------------------------------------------

ADAPTIVE_CASES = [
    ((13, 13), (6, 6)), ((5, 5), (7, 7)), ((1, 1), (7, 7)), ((7, 7), (7, 7)),
    ((14, 14), (7, 7)), ((9, 9), (4, 4)), ((8, 8), (1, 1)), ((3, 3), (6, 6)),
    ((10, 7), (3, 5)), ((6, 11), (7, 4)), ((2, 9), (6, 6)), ((17, 4), (5, 9)),
    ((4, 6), (4, 3)), ((1, 5), (7, 1)),
]


@pytest.mark.parametrize("in_size,out_size", ADAPTIVE_CASES)
def test_adaptive_avg_pool2d_matches_torch_float64(in_size, out_size):
    # Tolerance: F64_TOL (an average of at most a few terms, different order).
    x = rand((2, *in_size, 3), seed=sum(in_size) + 7 * sum(out_size))
    want = nhwc(F.adaptive_avg_pool2d(nchw(x), out_size))
    with jax.enable_x64(True):
        got = np.asarray(layers.adaptive_avg_pool2d(jnp.asarray(x), out_size))
        via_module = np.asarray(modules.AdaptiveAvgPool2d(out_size).apply({}, jnp.asarray(x)))
    assert got.dtype == np.float64
    assert max_rel_err(got, want) <= F64_TOL
    assert max_rel_err(via_module, want) <= F64_TOL


@pytest.mark.parametrize("in_size,out_size", [((13, 13), (6, 6)), ((5, 8), (7, 3))])
def test_adaptive_avg_pool2d_matches_torch_float32(in_size, out_size):
    # Tolerance: F32_TOL.
    x = rand((2, *in_size, 4), seed=3, dtype=np.float32)
    want = nhwc(F.adaptive_avg_pool2d(nchw(x), out_size))
    got = np.asarray(layers.adaptive_avg_pool2d(jnp.asarray(x), out_size))
    assert got.dtype == np.float32
    assert max_rel_err(got, want) <= F32_TOL


def test_adaptive_pool_bins_closed_form():
    # torch: bin i of n -> m spans [floor(i n / m), ceil((i + 1) n / m)).
    assert layers.adaptive_pool_bins(13, 6) == [(0, 3), (2, 5), (4, 7), (6, 9), (8, 11), (10, 13)]
    assert layers.adaptive_pool_bins(5, 7) == [(0, 1), (0, 2), (1, 3), (2, 3), (2, 4), (3, 5), (4, 5)]
    assert layers.adaptive_pool_bins(1, 3) == [(0, 1)] * 3
    with pytest.raises(ValueError):
        layers.adaptive_pool_bins(0, 3)


# --- convolution and linear ---------------------------------------------------------------------

CONV_CASES = [
    # (C_in, C_out, kernel, stride, padding, dilation, groups, bias, size)
    (3, 5, 3, 1, 0, 1, 1, True, (9, 9)),
    (3, 4, (3, 5), (2, 1), (1, 2), 1, 1, False, (11, 8)),
    (4, 6, 5, 3, 2, 1, 2, True, (13, 10)),
    (6, 6, 3, 1, 1, 1, 6, True, (7, 7)),  # depthwise
    (2, 3, 3, 2, 2, 2, 1, True, (12, 9)),  # dilated
    (3, 8, 11, 4, 2, 1, 1, True, (31, 27)),  # AlexNet conv1 geometry
    # tiny output maps, computed as one matrix product on CPU (layers._tiny_map)
    (4, 6, 3, 1, 1, 1, 1, True, (2, 3)),  # VGG's conv5 at a 32x48 input
    (3, 5, 5, 1, 2, 1, 1, False, (4, 4)),  # 16 positions, 25 taps
    (3, 4, (3, 5), (2, 1), (1, 2), 1, 1, True, (1, 9)),  # strided, one output row
    (3, 8, 11, 4, 2, 1, 1, True, (15, 15)),  # AlexNet conv1 at a 15 px input: 3x3
]


@pytest.mark.parametrize("cin,cout,k,s,p,d,groups,bias,size", CONV_CASES)
def test_conv2d_function_matches_torch(cin, cout, k, s, p, d, groups, bias, size):
    # Tolerance: F64_TOL (dot products summed in a different order).
    kh, kw = layers.pair(k)
    x = rand((2, *size, cin), seed=1)
    w_t = rand((cout, cin // groups, kh, kw), seed=2)
    b = rand((cout,), seed=3) if bias else None
    want = nhwc(F.conv2d(nchw(x), torch.from_numpy(w_t), None if b is None else torch.from_numpy(b),
                         stride=s, padding=p, dilation=d, groups=groups))
    with jax.enable_x64(True):
        got = np.asarray(layers.conv2d(jnp.asarray(x), jnp.asarray(w_t.transpose(2, 3, 1, 0)),
                                       None if b is None else jnp.asarray(b),
                                       stride=s, padding=p, dilation=d, groups=groups))
    assert got.shape == want.shape
    assert max_rel_err(got, want) <= F64_TOL


@pytest.mark.parametrize("cin,cout,k,s,p,d,groups,bias,size", CONV_CASES)
def test_conv2d_derivatives_match_torch(cin, cout, k, s, p, d, groups, bias, size):
    # The strided cases take their input derivative through conv2d_as_valid (a custom
    # JVP); reverse mode (x and kernel) must equal torch autograd, forward mode the
    # transposed pairing <J t, g> = <t, J^T g>. Tolerance: F64_TOL.
    kh, kw = layers.pair(k)
    x = rand((2, *size, cin), seed=1)
    w_t = rand((cout, cin // groups, kh, kw), seed=2)
    xt = nchw(x).requires_grad_(True)
    wt = torch.from_numpy(w_t).requires_grad_(True)
    yt = F.conv2d(xt, wt, stride=s, padding=p, dilation=d, groups=groups)
    g = rand(tuple(yt.permute(0, 2, 3, 1).shape), seed=5)
    yt.backward(nchw(g))
    with jax.enable_x64(True):
        def f(x, w):
            return layers.conv2d(x, w, stride=s, padding=p, dilation=d, groups=groups)

        xj, wj = jnp.asarray(x), jnp.asarray(w_t.transpose(2, 3, 1, 0))
        dx, dw = jax.vjp(f, xj, wj)[1](jnp.asarray(g))
        tx = jnp.asarray(rand(x.shape, seed=6))
        jt = jax.jvp(lambda x: f(x, wj), (xj,), (tx,))[1]
        pairing = (float(jnp.vdot(jt, jnp.asarray(g))), float(jnp.vdot(tx, dx)))
    assert max_rel_err(dx, nhwc(xt.grad)) <= F64_TOL
    assert max_rel_err(dw, wt.grad.numpy().transpose(2, 3, 1, 0)) <= F64_TOL
    assert abs(pairing[0] - pairing[1]) <= F64_TOL * abs(pairing[1])
    if groups == 1 and d == 1:
        as_valid = layers.conv2d_as_valid(xj.astype(np.float32), wj.astype(np.float32), s, p)
        direct = F.conv2d(nchw(x.astype(np.float32)), torch.from_numpy(w_t.astype(np.float32)),
                          stride=s, padding=p)
        assert max_rel_err(as_valid, nhwc(direct)) <= F32_TOL


def test_tiny_maps_are_one_matrix_product_on_cpu_only():
    """XLA:CPU runs convolutions with tiny output maps 10-200x below its usual speed
    (layers.conv2d's docstring), so conv2d computes them as one matrix product there; a
    map of usual size stays a convolution. The values are checked in the two tests above
    (CONV_CASES' tiny cases)."""
    def primitives(size, k, p, s=1):  # counted inside nested (jitted) programs too
        x, w = jnp.ones((2, *size, 4)), jnp.ones((k, k, 4, 6))
        jaxpr = jax.make_jaxpr(lambda x: layers.conv2d(x, w, stride=s, padding=p))(x)
        return {name for name in ("dot_general", "conv_general_dilated")
                if count_primitive(jaxpr, name)}

    tiny = [((2, 3), 3, 1, 1), ((4, 4), 5, 2, 1), ((1, 9), 3, 1, 1), ((15, 15), 11, 2, 4),
            ((5, 1), 3, 1, 1)]
    for size, k, p, s in tiny:
        used = primitives(size, k, p, s)
        if jax.default_backend() == "cpu":
            assert "dot_general" in used and "conv_general_dilated" not in used, (size, k, used)
        else:  # the route is XLA:CPU's alone: elsewhere every map stays a convolution
            assert used == {"conv_general_dilated"}, (size, k, used)
    for size, k, p in [((4, 6), 3, 1), ((14, 14), 3, 1), ((2, 3), 1, 0)]:
        assert "conv_general_dilated" in primitives(size, k, p), (size, k)


@pytest.mark.parametrize("use_bias", [True, False])
def test_conv2d_module_matches_torch(use_bias):
    # Tolerances: F32_TOL for float32 weights from torch's nn.Conv2d, F64_TOL in float64.
    torch.manual_seed(0)
    tconv = torch.nn.Conv2d(3, 7, (3, 5), stride=(2, 1), padding=(1, 2), bias=use_bias)
    module = modules.Conv2d(7, (3, 5), stride=(2, 1), padding=(1, 2), use_bias=use_bias)
    x = rand((2, 10, 9, 3), seed=4, dtype=np.float32)
    variables = module.init(jax.random.key(0), jnp.asarray(x))
    params = variables["params"]
    assert params["kernel"].shape == (3, 5, 3, 7)  # (kh, kw, C_in, C_out)
    assert ("bias" in params) == use_bias
    # torch's default distribution: U(-1/sqrt(fan_in), 1/sqrt(fan_in)), fan_in = 3*5*3.
    bound = 1 / np.sqrt(45)
    assert np.abs(params["kernel"]).max() <= bound and np.abs(params["kernel"]).max() > bound / 2
    ported = {"kernel": jnp.asarray(tconv.weight.detach().numpy().transpose(2, 3, 1, 0))}
    if use_bias:
        ported["bias"] = jnp.asarray(tconv.bias.detach().numpy())
    with torch.no_grad():
        want = nhwc(tconv(nchw(x)))
    got = np.asarray(module.apply({"params": ported}, jnp.asarray(x)))
    assert max_rel_err(got, want) <= F32_TOL
    with jax.enable_x64(True):
        got64 = np.asarray(module.apply(
            {"params": jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), ported)},
            jnp.asarray(x, jnp.float64)))
    with torch.no_grad():
        want64 = nhwc(tconv.double()(nchw(x.astype(np.float64))))
    assert max_rel_err(got64, want64) <= F64_TOL


@pytest.mark.parametrize("use_bias", [True, False])
def test_linear_module_matches_torch(use_bias):
    # Tolerances: F32_TOL in float32, F64_TOL in float64.
    torch.manual_seed(1)
    tlin = torch.nn.Linear(37, 11, bias=use_bias).double()
    module = modules.Linear(11, use_bias=use_bias)
    x = rand((4, 37), seed=5)
    params = module.init(jax.random.key(0), jnp.zeros((1, 37), jnp.float32))["params"]
    assert params["kernel"].shape == (37, 11)  # (in, out)
    assert ("bias" in params) == use_bias
    assert np.abs(params["kernel"]).max() <= 1 / np.sqrt(37)
    ported = {"kernel": tlin.weight.detach().numpy().T}
    if use_bias:
        ported["bias"] = tlin.bias.detach().numpy()
    with torch.no_grad():
        want = tlin(torch.from_numpy(x)).numpy()
    with jax.enable_x64(True):
        got = np.asarray(module.apply({"params": jax.tree.map(jnp.asarray, ported)},
                                      jnp.asarray(x)))
    assert max_rel_err(got, want) <= F64_TOL
    got32 = np.asarray(module.apply(
        {"params": jax.tree.map(lambda a: jnp.asarray(a, jnp.float32), ported)},
        jnp.asarray(x, jnp.float32)))
    assert max_rel_err(got32, want) <= F32_TOL


# --- batch normalization ------------------------------------------------------------------------


def _torch_bn(c, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    bn = torch.nn.BatchNorm2d(c, eps=1e-3, momentum=0.3).to(dtype)
    with torch.no_grad():
        bn.running_mean.copy_(torch.rand(c, generator=g, dtype=dtype) - 0.5)
        bn.running_var.copy_(torch.rand(c, generator=g, dtype=dtype) * 1.5 + 0.5)
        bn.weight.copy_(torch.rand(c, generator=g, dtype=dtype) + 0.5)
        bn.bias.copy_(torch.rand(c, generator=g, dtype=dtype) - 0.5)
    return bn


def _bn_variables(bn, dtype):
    # A copy: jnp.asarray may alias the numpy view of the torch buffer, which torch's
    # train step then overwrites in place.
    t = lambda v: jnp.asarray(np.array(v.detach().numpy()), dtype)  # noqa: E731
    return {"params": {"scale": t(bn.weight), "bias": t(bn.bias)},
            "batch_stats": {"mean": t(bn.running_mean), "var": t(bn.running_var)}}


def test_batch_norm_inference_matches_torch():
    # Tolerances: F64_TOL in float64, F32_TOL in float32. Running statistics are not
    # the batch's (x has mean ~2, std ~3), so using either instead of the other fails.
    bn = _torch_bn(5).eval()
    module = modules.BatchNorm2d(eps=1e-3, momentum=0.3)
    x = 2.0 + 3.0 * rand((3, 6, 4, 5), seed=6)
    with torch.no_grad():
        want = nhwc(bn(nchw(x)))
    with jax.enable_x64(True):
        got = np.asarray(module.apply(_bn_variables(bn, jnp.float64), jnp.asarray(x)))
    assert max_rel_err(got, want) <= F64_TOL
    got32 = np.asarray(module.apply(_bn_variables(bn, jnp.float32), jnp.asarray(x, jnp.float32)))
    assert max_rel_err(got32, want) <= F32_TOL


def test_batch_norm_init_creates_torch_defaults():
    # Closed form: scale 1, bias 0, running mean 0, running var 1 (torch's reset values).
    v = modules.BatchNorm2d().init(jax.random.key(0), jnp.ones((2, 3, 3, 4)), train=True)
    np.testing.assert_array_equal(v["params"]["scale"], np.ones(4))
    np.testing.assert_array_equal(v["params"]["bias"], np.zeros(4))
    np.testing.assert_array_equal(v["batch_stats"]["mean"], np.zeros(4))
    np.testing.assert_array_equal(v["batch_stats"]["var"], np.ones(4))


def test_batch_norm_train_step_matches_torch():
    # Tolerance: F64_TOL for the output and the updated running mean and (unbiased)
    # running variance after one train-mode step with momentum 0.3.
    bn = _torch_bn(4, seed=1).train()
    module = modules.BatchNorm2d(eps=1e-3, momentum=0.3)
    x = 2.0 + 3.0 * rand((3, 5, 2, 4), seed=7)  # n = 30 per channel
    with jax.enable_x64(True):
        variables = _bn_variables(bn, jnp.float64)  # before torch's step updates bn
    with torch.no_grad():
        want = nhwc(bn(nchw(x)))
    with jax.enable_x64(True):
        got, updates = module.apply(variables, jnp.asarray(x), train=True,
                                    mutable=["batch_stats"])
        # train=True with immutable batch_stats: batch statistics, no update requested.
        got_frozen = module.apply(variables, jnp.asarray(x), train=True)
    assert max_rel_err(got, want) <= F64_TOL
    assert max_rel_err(got_frozen, want) <= F64_TOL
    stats = updates["batch_stats"]
    assert max_rel_err(stats["mean"], bn.running_mean.numpy()) <= F64_TOL
    assert max_rel_err(stats["var"], bn.running_var.numpy()) <= F64_TOL
    # The update used the unbiased variance: biased would be off by a factor 29/30 in the
    # momentum term, far beyond the tolerance.
    biased = x.reshape(-1, 4).var(axis=0)
    old = np.asarray(variables["batch_stats"]["var"])
    assert max_rel_err(0.7 * old + 0.3 * biased, bn.running_var.numpy()) > 1e-4


# --- dropout --------------------------------------------------------------------------------


def test_dropout_inference_and_rate_zero_are_identity():
    # Tolerance: exact (the identity).
    x = jnp.asarray(rand((2, 50), seed=8, dtype=np.float32))
    np.testing.assert_array_equal(modules.Dropout(0.5).apply({}, x), x)
    np.testing.assert_array_equal(modules.Dropout(0.5).apply({}, x, train=False), x)
    np.testing.assert_array_equal(
        modules.Dropout(0.0).apply({}, x, train=True, rngs={"dropout": jax.random.key(0)}), x)


@pytest.mark.parametrize("rate", [0.3, 0.5])
def test_dropout_train_masks_and_rescales(rate):
    # Tolerances: dropped entries exactly 0; kept entries x / (1 - rate) to F32_TOL
    # (XLA may multiply by the reciprocal: 1 ulp); a dropped fraction within 5 standard
    # deviations of the rate.
    x = 1.0 + np.abs(rand((4, 2500), seed=9, dtype=np.float32))  # no zeros in x
    y = np.asarray(modules.Dropout(rate).apply({}, jnp.asarray(x), train=True,
                                               rngs={"dropout": jax.random.key(1)}))
    kept = y != 0
    assert max_rel_err(y[kept], x[kept] / (1.0 - rate)) <= F32_TOL
    assert max_rel_err(y[kept], x[kept]) > 0.1  # really rescaled
    n = x.size
    assert abs((~kept).mean() - rate) <= 5 * np.sqrt(rate * (1 - rate) / n)
    # Same rng, same mask; another rng, another mask.
    again = modules.Dropout(rate).apply({}, jnp.asarray(x), train=True,
                                        rngs={"dropout": jax.random.key(1)})
    np.testing.assert_array_equal(again, y)
    other = modules.Dropout(rate).apply({}, jnp.asarray(x), train=True,
                                        rngs={"dropout": jax.random.key(2)})
    assert (np.asarray(other) != y).any()


def test_dropout_train_needs_rng():
    with pytest.raises(Exception, match="dropout"):
        modules.Dropout(0.5).apply({}, jnp.ones((2, 3)), train=True)


# --- flatten ----------------------------------------------------------------------------------


def test_flatten_is_hwc_order_of_torch_chw_flatten():
    # Closed form against torch.flatten(x, 1) on the same NCHW tensor: feature
    # (h, w, c) of jaxviz's flatten is feature (c, h, w) of torch's. Tolerance: exact.
    n, h, w, c = 2, 3, 4, 5
    x = rand((n, h, w, c), seed=10, dtype=np.float32)
    got = np.asarray(modules.flatten(jnp.asarray(x)))
    want = torch.flatten(nchw(x), 1).numpy()
    assert got.shape == want.shape == (n, h * w * c)
    for i, j, k in itertools.product(range(h), range(w), range(c)):
        np.testing.assert_array_equal(got[:, (i * w + j) * c + k], want[:, (k * h + i) * w + j])
    assert not np.array_equal(got, want)  # the orders really differ


# --- containers (a small sanity check of the module tree) -----------------------------------


def test_sequential_names_layers_like_torch():
    # Parameter paths are torch's module indices: '0' (conv), '2' (linear); ReLU and
    # flatten hold no parameters. Compared against an nn.Sequential with the same weights.
    # Tolerance: F32_TOL.
    seq = modules.Sequential([modules.Conv2d(4, 3, padding=1), modules.ReLU(),
                              modules.MaxPool2d(2, ceil_mode=True)])
    x = rand((2, 5, 5, 3), seed=11, dtype=np.float32)
    variables = seq.init(jax.random.key(0), jnp.asarray(x))
    assert set(variables["params"]) == {"0"}
    tseq = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.ReLU(),
                               torch.nn.MaxPool2d(2, ceil_mode=True))
    with torch.no_grad():
        tseq[0].weight.copy_(torch.from_numpy(
            np.array(variables["params"]["0"]["kernel"]).transpose(3, 2, 0, 1)))
        tseq[0].bias.copy_(torch.from_numpy(np.array(variables["params"]["0"]["bias"])))
        want = nhwc(tseq(nchw(x)))
    got = np.asarray(seq.apply(variables, jnp.asarray(x)))
    assert got.shape == want.shape == (2, 3, 3, 4)
    assert max_rel_err(got, want) <= F32_TOL

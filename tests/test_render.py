"""Tests for jaxviz.render: one-line summaries and sigma scalings."""

from __future__ import annotations

import numpy as np
import pytest

import jax
import jax.numpy as jnp

from jaxviz.render import pos_sigmas, sigmas, summary

# ----------------------------------------------------------------- summary


def test_summary_arange():
    # 0..11: mean 5.5, unbiased variance sum((i - 5.5)^2) / 11 = 143 / 11 = 13.
    x = np.arange(12, dtype=np.float32).reshape(3, 4)
    assert summary(x) == f"(3, 4) n=12 x∈[0., 11.000] μ=5.500 σ={np.sqrt(13):.3f}"
    assert summary(x) == "(3, 4) n=12 x∈[0., 11.000] μ=5.500 σ=3.606"
    assert summary(jnp.asarray(x)) == summary(x)
    assert summary(x, name="conv1") == "conv1 " + summary(x)


def test_summary_seed_line():
    # An array built to have the statistics of the AlexNet notebook's conv1 output (notebooks/000).
    n, lo, hi, mean, std = 193600, -34.649, 32.174, -0.398, 3.305
    rest = n - 2
    m = (mean * n - lo - hi) / rest
    # Fill the rest with m ± d so that the total sum of squares gives the target std.
    target_ss = std**2 * (n - 1) + n * mean**2
    d = np.sqrt((target_ss - lo**2 - hi**2) / rest - m**2)
    a = np.empty(n)
    a[0], a[1] = lo, hi
    a[2:] = m + d * np.where(np.arange(rest) % 2 == 0, 1.0, -1.0)
    x = a.astype(np.float32).reshape(1, 55, 55, 64)
    assert summary(x) == "(1, 55, 55, 64) n=193600 x∈[-34.649, 32.174] μ=-0.398 σ=3.305"


def test_summary_seed_number_formats():
    # Seed: "x∈[0., 3.024e+03] μ=1.499e+03 σ=859.119 i64" for max-pool switches.
    # Here 0..3024: mean 1512, unbiased std sqrt(3025 * 3026 / 12) = 873.387.
    x = np.arange(3025, dtype=np.int64).reshape(55, 55)
    assert summary(x) == "(55, 55) n=3025 x∈[0., 3.024e+03] μ=1.512e+03 σ=873.387 i64"
    assert summary(np.array([2, 4, 6, 1792], np.int64)).startswith("(4,) x∈[2.000, 1.792e+03]")


@pytest.mark.parametrize(
    "values, expected",
    [
        ([5e-5, 6e-5, 7e-5], "x∈[5.000e-05, 7.000e-05] μ=6.000e-05 σ=1.000e-05"),
        # lovely-tensors' rule: only magnitudes below 1e-4 switch to scientific notation.
        ([2e-4, 3e-4, 4e-4], "x∈[0.000, 0.000] μ=0.000"),
        ([9e-5, 0.0, -9e-5], "x∈[-9.000e-05, 9.000e-05] μ=0."),
        ([1000.0, 999.0, 998.0], "x∈[998.000, 1000.000] μ=999.000 σ=1.000"),
        ([2048.0, 0.5, 1.5], "x∈[0.500, 2.048e+03]"),
        ([-0.0, 1.0, 2.0], "x∈[0., 2.000] μ=1.000 σ=1.000"),
    ],
)
def test_summary_number_thresholds(values, expected):
    assert expected in summary(np.array(values, np.float32))


def test_summary_dtypes():
    assert summary(np.ones(20, np.float64)) == "(20,) x∈[1.000, 1.000] μ=1.000 σ=0. f64"
    assert summary(np.ones(20, np.float32)) == "(20,) x∈[1.000, 1.000] μ=1.000 σ=0."
    assert summary(jnp.ones(20, jnp.bfloat16)).endswith(" bf16")
    assert summary(np.ones(20, np.float16)).endswith(" f16")
    assert summary(np.ones(20, np.int32)).endswith(" i32")
    assert summary(np.ones(20, np.uint8)).endswith(" u8")
    # 15 of 20 True: mean 0.75, unbiased std sqrt(20 * 0.75 * 0.25 / 19) = 0.444.
    mask = np.array([True, True, True, False] * 5)
    assert summary(mask) == "(20,) x∈[0., 1.000] μ=0.750 σ=0.444 bool"


def test_summary_nonfinite():
    x = np.array([1.0, np.nan, 3.0, np.inf, -np.inf, np.nan, 5.0] + [2.0] * 5, np.float32)
    # Statistics over the finite entries 1, 3, 5, 2, 2, 2, 2, 2: mean 2.375.
    finite = np.array([1, 3, 5, 2, 2, 2, 2, 2], np.float64)
    assert summary(x) == (
        f"(12,) x∈[1.000, 5.000] μ=2.375 σ={finite.std(ddof=1):.3f} +Inf!×1 -Inf!×1 NaN!×2"
    )
    assert summary(np.full((2, 3), np.nan, np.float32)) == (
        "(2, 3) n=6 NaN!×6 [[nan, nan, nan], [nan, nan, nan]]"
    )


def test_summary_zeros_empty_small():
    assert summary(np.zeros((4, 8), np.float32)) == "(4, 8) n=32 all_zeros"
    assert summary(np.zeros((0, 3), np.float32)) == "(0, 3) n=0 empty"
    assert summary(np.zeros(0, np.int64)) == "(0,) empty i64"
    # At most 10 values are printed; two values give μ and σ but no range.
    assert summary(np.array([1.0, 3.0], np.float32)) == "(2,) μ=2.000 σ=1.414 [1.000, 3.000]"
    assert summary(np.array([[1, 2], [3, 4]], np.int64)) == (
        "(2, 2) n=4 x∈[1.000, 4.000] μ=2.500 σ=1.291 i64 [[1, 2], [3, 4]]"
    )
    assert summary(np.float32(3.5)) == "() 3.500"


def test_summary_errors():
    with pytest.raises(TypeError, match="numeric or boolean.*<U"):
        summary(np.array(["a", "b"]))
    with pytest.raises(TypeError, match="traced array"):
        jax.jit(summary)(jnp.ones(3))


# ----------------------------------------------------------------- sigmas


def test_sigmas_closed_form():
    x = np.arange(10, dtype=np.float32)
    std = np.sqrt(np.sum((np.arange(10) - 4.5) ** 2) / 9)  # unbiased, as torch.std
    for n in (1, 3):
        y = np.asarray(sigmas(x, n=n))
        np.testing.assert_allclose(y, (np.arange(10) - 4.5) / (2 * n * std) + 0.5, rtol=1e-6)
        np.testing.assert_allclose(y.mean(), 0.5, atol=1e-6)
        np.testing.assert_allclose(y.std(ddof=1), 1 / (2 * n), rtol=1e-5)
    # mean ± n·std lands on 0 and 1.
    z = np.array([-1.0, 1.0], np.float32)  # mean 0, unbiased std sqrt(2)
    np.testing.assert_allclose(sigmas(z, n=1 / np.sqrt(2)), [0.0, 1.0], atol=1e-6)


def test_pos_sigmas_closed_form():
    x = np.array([0.0, 0.0, 1.0, 3.0], np.float32)  # positives 1, 3: unbiased std sqrt(2)
    np.testing.assert_allclose(pos_sigmas(x), x / (2 * np.sqrt(2)), rtol=1e-6)
    np.testing.assert_allclose(pos_sigmas(x, n=4), x / (4 * np.sqrt(2)), rtol=1e-6)
    np.testing.assert_allclose(jax.jit(pos_sigmas)(x), pos_sigmas(x), rtol=1e-6)


def test_sigmas_degenerate_inputs_stay_finite():
    np.testing.assert_array_equal(sigmas(np.full((3, 3), 7.0)), 0.5)
    np.testing.assert_array_equal(pos_sigmas(np.zeros(5)), 0.0)
    np.testing.assert_array_equal(pos_sigmas(np.array([0.0, 2.0]), n=2), [0.0, 1.0])


def test_sigmas_do_not_mutate():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(4, 5, 3)).astype(np.float32)
    relu = np.maximum(x, 0)
    x_before, relu_before = x.copy(), relu.copy()
    sigmas(x)
    pos_sigmas(relu)
    np.testing.assert_array_equal(x, x_before)
    np.testing.assert_array_equal(relu, relu_before)
    y = jax.jit(sigmas)(jnp.asarray(x))
    np.testing.assert_allclose(y, sigmas(x), rtol=1e-6)
    assert y.shape == x.shape

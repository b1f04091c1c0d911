"""DeconvNet reconstruction against an explicit implementation through max-pool switches.

The explicit DeconvNet of Zeiler & Fergus (2014) for AlexNet up to pool2: record the
switches of both pools on the way up (jaxviz.switches), then on the way down unpool
through them (adding where overlapping windows share a switch), rectify, and apply
the transposed convolutions. In float64 the library's reconstruction (a VJP under the
``deconvnet`` backward rule) must equal it to 1e-12 relative (only the order of the
additions differs).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxviz as jv
from conftest import F64_TOL, max_rel_err, torchvision_model
from jaxviz.models import layers
from jaxviz.switches import max_pool_with_switches

pytest.importorskip("torch")
from weights_port import from_torchvision  # noqa: E402

SIZE = (80, 96)


@pytest.fixture(scope="module")
def alexnet64():
    """Float64 AlexNet and input, made under x64; each test enters x64 itself, so x64 is
    off between tests (the autouse guard in conftest.py checks)."""
    with jax.enable_x64(True):
        model, variables = from_torchvision(torchvision_model("alexnet", seed=7).double())
        x = jnp.asarray(np.random.default_rng(0).standard_normal((2, *SIZE, 3)))
    return model, variables, x


def unpool_add(y, switches, shape):
    """Each pooled value added at its switch (flat index into H*W), zeros elsewhere."""
    n, h, w, c = shape
    yt = y.transpose(0, 3, 1, 2).reshape(n, c, -1)
    st = switches.transpose(0, 3, 1, 2).reshape(n, c, -1)
    flat = jnp.zeros((n, c, h * w), y.dtype)
    flat = flat.at[jnp.arange(n)[:, None, None], jnp.arange(c)[None, :, None], st].add(yt)
    return flat.reshape(n, c, h, w).transpose(0, 2, 3, 1)


def explicit_deconvnet(params, x, keep):
    """AlexNet features.0-5 up, then down through the switches; ``keep(A)`` selects."""
    k0, b0 = params["features"]["0"]["kernel"], params["features"]["0"]["bias"]
    k3, b3 = params["features"]["3"]["kernel"], params["features"]["3"]["bias"]

    def conv1(z):
        return layers.conv2d(z, k0, stride=4, padding=2)

    def conv2(z):
        return layers.conv2d(z, k3, padding=2)

    r1 = jax.nn.relu(conv1(x) + b0)
    p1, s1 = max_pool_with_switches(r1, 3, 2)
    r2 = jax.nn.relu(conv2(p1) + b3)
    p2, s2 = max_pool_with_switches(r2, 3, 2)
    signal = jnp.where(keep(p2), p2, 0.0)
    down = jax.nn.relu(unpool_add(signal, s2, r2.shape))
    (down,) = jax.linear_transpose(conv2, p1)(down)
    down = jax.nn.relu(unpool_add(down, s1, r1.shape))
    (pixels,) = jax.linear_transpose(conv1, x)(down)
    return p2, pixels


@pytest.mark.parametrize("selection", ["all", "channel", "strongest"])
def test_reconstruction_equals_explicit_switches(alexnet64, selection):
    model, variables, x = alexnet64
    channels = np.array([5, 17])
    with jax.enable_x64(True):
        a = jv.activations(model, variables, x, ["pool2"])["pool2"]
        if selection == "all":
            keep = lambda p: jnp.ones(p.shape, bool)  # noqa: E731
            kwargs = {}
        elif selection == "channel":
            keep = lambda p: jnp.arange(p.shape[-1]) == channels[:, None, None, None]  # noqa: E731
            kwargs = {"channel": channels}
        else:
            chosen = np.asarray(a)[np.arange(2), :, :, channels]  # (2, h, w)
            flat = chosen.reshape(2, -1).argmax(1)
            ys, xs = np.unravel_index(flat, chosen.shape[1:])
            mask = np.zeros(a.shape, bool)
            mask[np.arange(2), ys, xs, channels] = True
            keep = lambda p: jnp.asarray(mask)  # noqa: E731
            kwargs = {"channel": channels, "strongest": True}
        p2, want = explicit_deconvnet(variables["params"], x, keep)
        assert max_rel_err(a, p2) <= F64_TOL  # the explicit forward is AlexNet's
        got = jv.attribution.deconvnet_reconstruction(model, variables, x, "pool2", **kwargs)
        assert got.dtype == jnp.float64 and got.shape == x.shape
        assert np.abs(want).max() > 0
        assert max_rel_err(got, want) <= F64_TOL


def test_shared_switches_add(alexnet64):
    """Overlapping 3x3/2 windows do share switches here, so adding (the gradient's
    semantics) and writing once (torch's max_unpool2d) differ: the test above would
    catch the wrong choice."""
    model, variables, x = alexnet64
    with jax.enable_x64(True):
        r1 = jv.activations(model, variables, x, ["relu1"])["relu1"]
        _, s1 = max_pool_with_switches(r1, 3, 2)
    s = np.asarray(s1).transpose(0, 3, 1, 2).reshape(-1, s1.shape[1] * s1.shape[2])
    shared = sum(len(row) - len(np.unique(row)) for row in s)
    assert shared > 0


def test_strongest_keeps_one_activation_and_bad_channel(alexnet64):
    model, variables, x = alexnet64
    with jax.enable_x64(True):
        one = jv.attribution.deconvnet_reconstruction(model, variables, x[:1], "pool2", channel=3,
                                                      strongest=True)
        everything = jv.attribution.deconvnet_reconstruction(model, variables, x[:1], "pool2")
        assert not np.allclose(one, everything)
        # a single pool2 unit sees a bounded patch of the input: most pixels stay zero
        assert 0 < np.count_nonzero(np.abs(np.asarray(one)).sum(-1)) < 0.5 * SIZE[0] * SIZE[1]
        with pytest.raises(ValueError, match="out of range"):
            jv.attribution.deconvnet_reconstruction(model, variables, x, "pool2", channel=192)
        with pytest.raises(ValueError, match="channel must be"):
            jv.attribution.deconvnet_reconstruction(model, variables, x, "pool2", channel=[1, 2, 3])
        with pytest.raises(KeyError, match="no layer"):
            jv.attribution.deconvnet_reconstruction(model, variables, x, "pool9")

"""The three synthesis recipes, step by step against PyTorch code written from their
descriptions, in float64, from the same initial image.

Each recipe runs 20 steps on both sides with deterministic settings; the images and the
objective at every step must agree to float64 relative error <= 1e-9. Both sides do
the same arithmetic in a different order (XLA and oneDNN convolutions), so each step
adds about 1e-15 of relative difference; Adam divides by the root of its second
moment, which can amplify it where a gradient is tiny, and 1e-9 leaves room for that
while still failing on any difference in the recipe itself (a wrong learning rate,
penalty, target or interpolation changes the images by far more than 1e-6).

The models are small-input VGG16 (32 px) and GoogLeNet (48 px, then 72 px) with seeded
random weights (tests/conftest.py).
"""

from __future__ import annotations

import copy

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import max_rel_err, torchvision_model

torch = pytest.importorskip("torch")
F = torch.nn.functional

from jaxviz import data  # noqa: E402
from jaxviz.synthesis import recipes  # noqa: E402
from weights_port import from_torchvision  # noqa: E402

TOL = 1e-9
STEPS = 20
MEAN = torch.tensor(data.IMAGENET_MEAN, dtype=torch.float64).view(1, 3, 1, 1)
STD = torch.tensor(data.IMAGENET_STD, dtype=torch.float64).view(1, 3, 1, 1)


def _nhwc(t) -> np.ndarray:
    return np.array(t.detach().numpy().transpose(0, 2, 3, 1))


@pytest.fixture(scope="module")
def vgg16():
    t = copy.deepcopy(torchvision_model("vgg16")).double()
    for p in t.parameters():
        p.requires_grad_(False)
    with jax.enable_x64(True):
        model, variables = from_torchvision(t)
    return t, model, variables


def test_feature_map_mse_matches_torch(vgg16):
    """MSE of a conv3_1 channel to (its max)^2, Adam lr 0.01, from uniform noise."""
    tmodel, model, variables = vgg16
    size, channel, lr = 32, 7, 0.01
    x0 = np.random.RandomState(100).uniform(-0.1, 0.2, size=(1, 3, size, size))
    x = torch.tensor(x0, requires_grad=True)
    opt = torch.optim.Adam([x], lr=lr)
    objective = []
    for _ in range(STEPS):
        out = tmodel.features[:11](x)[0, channel]       # features.10 = conv3_1
        expected = torch.full_like(out, float(out.detach().max())) ** 2
        loss = ((out - expected) ** 2).mean()
        objective.append(-loss.item())
        opt.zero_grad()
        loss.backward()
        opt.step()
    want = np.clip(_nhwc(x * STD + MEAN), 0, 1)

    with jax.enable_x64(True):
        got = recipes.feature_map_mse(model, variables, "features.10", channel,
                                      key=jax.random.key(0), steps=STEPS, lr=lr,
                                      init=x0.transpose(0, 2, 3, 1), dtype=jnp.float64)
        assert got.images.dtype == jnp.float64
        assert max_rel_err(got.images, want) <= TOL
        assert max_rel_err(got.objective[:, 0], np.array(objective)) <= TOL
    assert objective[-1] > objective[0]


def _edge_energy_torch(x):
    k = torch.exp(-torch.tensor([-2.0, -1.0, 0.0, 1.0, 2.0], dtype=x.dtype) ** 2 / 2)
    k = torch.outer(k, k)
    k = (k / k.sum()).view(1, 1, 5, 5)
    u = x.reshape(-1, 1, x.size(2), x.size(3))
    result = 0.0
    while min(u.size(2), u.size(3)) > 5:
        blurry = F.conv2d(u, k, padding=2)
        result = result + (u - blurry).reshape(u.size(0), -1).pow(2).sum(1)
        u = F.avg_pool2d(u, kernel_size=2, padding=1)
    return result.reshape(x.size(0), -1).sum(1)


def test_class_model_matches_torch(vgg16):
    """Class logit minus the multi-scale edge energy, Adam lr 0.1, from N(0, 0.01^2)."""
    tmodel, model, variables = vgg16
    size, target = 32, 700
    x0 = np.random.RandomState(3).normal(0, 0.01, size=(1, 3, size, size))
    x = torch.tensor(x0, requires_grad=True)
    opt = torch.optim.Adam([x], lr=0.1)
    objective, scores = [], []
    for _ in range(STEPS):
        logit = tmodel(x)[0, target]
        score = _edge_energy_torch(x).sum() - logit
        objective.append(logit.item())
        scores.append(score.item())
        opt.zero_grad()
        score.backward()
        opt.step()
    shown = (0.5 + 0.1 * (x - x.mean()) / x.std()).clamp(0, 1)

    with jax.enable_x64(True):
        got = recipes.class_model(model, variables, target, key=jax.random.key(0),
                                  steps=STEPS, init=x0.transpose(0, 2, 3, 1),
                                  dtype=jnp.float64)
        assert max_rel_err(got.images, _nhwc(shown)) <= TOL
        assert max_rel_err(got.objective[:, 0], np.array(objective)) <= TOL
    # (with random weights and lr 0.1 against a 0.01-sized start, Adam's first steps
    # overshoot and the score rises before it falls; the recipe is what is compared)
    assert len(set(scores)) == STEPS


def _scharr_torch(x):
    kx = torch.tensor([[3.0, 0.0, -3.0], [10.0, 0.0, -10.0], [3.0, 0.0, -3.0]], dtype=x.dtype)
    u = x.reshape(-1, 1, x.size(2), x.size(3))
    gx = F.conv2d(u, kx.view(1, 1, 3, 3))
    gy = F.conv2d(u, kx.t().contiguous().view(1, 1, 3, 3))
    return (gx * gx + gy * gy).mean()


def test_octave_channel_matches_torch():
    """Normalized gradient step, colour and Scharr penalties, two octaves (48 -> 72 px)."""
    t = copy.deepcopy(torchvision_model("googlenet", aux_logits=False)).double()
    for p in t.parameters():
        p.requires_grad_(False)
    with jax.enable_x64(True):
        model, variables = from_torchvision(t)
    seen = {}
    t.maxpool3.register_forward_hook(lambda m, i, o: seen.__setitem__("a", o))
    size, channel, lr, per_octave = 48, 11, 0.02, STEPS // 2
    wc, we, sharp = 0.05, 1e-3, 2.0
    x0 = np.random.RandomState(4).uniform(0.4, 0.6, size=(1, 3, size, size))
    x = torch.tensor(x0, requires_grad=True)
    objective = []
    for octave, side in enumerate((48, 72)):
        if octave:
            x = F.interpolate(x.detach(), size=(side, side), mode="bilinear",
                              align_corners=False).requires_grad_(True)
        for _ in range(per_octave):
            t((x - MEAN) / STD)
            value = seen["a"][0, channel].mean()
            colour = ((x - 0.5) ** 2).sum(1).mean()
            loss = -value + wc * colour + (we / sharp) * _scharr_torch(x)
            objective.append(value.item())
            g, = torch.autograd.grad(loss, x)
            with torch.no_grad():
                x = x - lr * g / (g.abs().max() + 1e-8)
            x.requires_grad_(True)

    with jax.enable_x64(True):
        got = recipes.octave_channel(model, variables, "maxpool3", channel,
                                     key=jax.random.key(0), size=size, octaves=2,
                                     outscale=1.5, steps=per_octave, lr=lr,
                                     color_weight=wc, edge_weight=we, sharpness=sharp,
                                     init=x0.transpose(0, 2, 3, 1), dtype=jnp.float64)
        assert got.images.shape == (1, 72, 72, 3)
        assert max_rel_err(got.images, np.clip(_nhwc(x), 0, 1)) <= TOL
        assert max_rel_err(got.objective[:, 0], np.array(objective)) <= TOL
    assert objective[-1] > objective[0]

"""Attribution against the peers themselves: pytorch-grad-cam, Captum (and, in
test_propagation.py, zennit), on the same weights and inputs.

1. Seeded random torchvision AlexNet (70 x 90) and VGG16 (32 x 48), ported, on the two
   bundled photographs with a class per example: every CAM of pytorch-grad-cam, and
   Captum's LayerGradCam, GuidedGradCam, IntegratedGradients and NoiseTunnel, each with
   our options set to the peer's conventions.
2. A small model written twice (Linen and torch) with hand-set weights: Captum's
   defaults for every method both libraries have, and the closed forms behind them.

Tolerances (``max_rel_err``: max error over the largest magnitude expected):
  PEER_F32 = 1e-4: float32 on both sides. Measured: CAMs 3e-7 to 5e-6 (min-max scaled
    maps; XGrad-CAM's ratio of sums is the least stable), Captum's gradient maps on
    AlexNet below 1e-5. The CAMs compare maps that pytorch-grad-cam turns into float32
    whatever the model's dtype, so float64 would not tighten them.
  ABLATION: Ablation-CAM's weights (y - y_k) / y are relative differences of two logits,
    and zeroing one of 64 channels moves a logit little, so each framework's float32
    rounding of the logits is amplified: measured 9e-5 on AlexNet's relu1 (too close to
    PEER_F32) and 2.5e-5 on VGG16's relu1_2. AlexNet's is compared in float64: 3.7e-6
    (pytorch-grad-cam keeps the scores and the map in float32 whatever the model's
    dtype), still against PEER_F32.
  PEER_F64 = 1e-10: float64 on both sides, for Captum's input gradients on VGG16. There,
    in float32, the many noisy or scaled copies put some max-pool window within rounding
    of a tie, which moves a whole receptive field of the gradient (measured 6e-3 for
    integrated gradients, 9e-4 for NoiseTunnel); in float64 the frameworks agree.
  EXACT_ISH = 1e-6: the hand-set model in float32 against closed forms (a few float32
    roundings of small integers and halves).
"""

from __future__ import annotations

import copy

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxviz as jv
from conftest import max_rel_err, torchvision_model
from jaxviz import attribution as A

torch = pytest.importorskip("torch")
captum_attr = pytest.importorskip("captum.attr")
pytorch_grad_cam = pytest.importorskip("pytorch_grad_cam")
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget  # noqa: E402
from weights_port import from_torchvision  # noqa: E402

# Captum warns that it sets requires_grad on its inputs and hooks on ReLUs: expected here.
pytestmark = [
    pytest.mark.filterwarnings("ignore:Input Tensor .* did not already require:UserWarning"),
    pytest.mark.filterwarnings("ignore:Setting backward hooks on ReLU:UserWarning"),
    pytest.mark.filterwarnings("ignore:Setting forward, backward hooks:UserWarning"),
]

PEER_F32 = 1e-4
PEER_F64 = 1e-10
EXACT_ISH = 1e-6
TARGETS = np.array([281, 7], np.int32)

# several target layers at two or three resolutions (torchvision path, our alias)
MULTI_LAYERS = {
    "alexnet": [("features.4", "relu2"), ("features.9", "relu4"), ("features.11", "relu5")],
    "vgg16": [("features.22", "relu4_3"), ("features.29", "relu5_3")],
}

# architecture: input size, the layer for the gradient CAMs, and a 64-channel layer for
# the CAMs that run the network once per channel (torchvision path, our alias)
ARCHS = {
    "alexnet": ((70, 90), ("features.11", "relu5"), ("features.1", "relu1")),
    "vgg16": ((32, 48), ("features.29", "relu5_3"), ("features.3", "relu1_2")),
}
GRAD_CAMS = {"grad_cam": "GradCAM", "grad_cam_plus_plus": "GradCAMPlusPlus",
             "xgrad_cam": "XGradCAM", "hires_cam": "HiResCAM", "layer_cam": "LayerCAM",
             "eigen_cam": "EigenCAM"}
SCORE_CAMS = {"score_cam": "ScoreCAM", "ablation_cam": "AblationCAM"}


class Peer:
    def __init__(self, name: str):
        self.name = name
        self.size, self.grad_layer, self.score_layer = ARCHS[name]
        self.torch = torchvision_model(name)
        self.model, self.variables = from_torchvision(self.torch)
        self.x = jv.data.preprocess([jv.data.sample_image("chelsea"),
                                     jv.data.sample_image("coffee")], self.size, resize="exact")
        self.xt = torch.from_numpy(self.x.transpose(0, 3, 1, 2).copy())
        self._f64 = None

    def precise(self):
        """``(tolerance, torch model, variables, x, x as torch)`` for Captum's gradient
        comparisons: float32 on AlexNet, float64 on VGG16 (see PEER_F64). Use under
        ``jax.enable_x64(dtype == float64)``."""
        if self.name == "alexnet":
            return PEER_F32, self.torch, self.variables, self.x, self.xt
        t64, v64 = self.f64()
        return PEER_F64, t64, v64, self.x.astype(np.float64), self.xt.double()

    def f64(self):
        """The float64 twin: (torch model, our variables)."""
        if self._f64 is None:
            t64 = copy.deepcopy(self.torch).double()
            with jax.enable_x64(True):
                _, v64 = from_torchvision(t64)
            self._f64 = (t64, v64)
        return self._f64

    def module(self, path: str):
        return dict(self.torch.named_modules())[path]

    def nhwc(self, t) -> np.ndarray:
        a = t.detach().numpy()
        return a.transpose(0, 2, 3, 1) if a.ndim == 4 else a


@pytest.fixture(scope="module", params=list(ARCHS))
def peer(request) -> Peer:
    return Peer(request.param)


def grad_cam_lib(peer: Peer, cls: str, path: str | list[str], net=None, xt=None,
                 **options) -> np.ndarray:
    net = peer.torch if net is None else net
    xt = peer.xt if xt is None else xt
    modules = dict(net.named_modules())
    layers = [modules[p] for p in ([path] if isinstance(path, str) else path)]
    cam = getattr(pytorch_grad_cam, cls)(model=net, target_layers=layers)
    try:
        return cam(input_tensor=xt, targets=[ClassifierOutputTarget(int(t)) for t in TARGETS],
                   **options)
    finally:
        cam.activations_and_grads.release()


# --- pytorch-grad-cam --------------------------------------------------------------------------


def _cam_against_peer(peer: Peer, method: str, eigen_smooth: bool) -> None:
    cls = {**GRAD_CAMS, **SCORE_CAMS}[method]
    path, alias = peer.score_layer if method in SCORE_CAMS else peer.grad_layer
    kwargs = {"flip": False} if method == "eigen_cam" else {}
    options = {}
    if eigen_smooth:
        kwargs["eigen_smooth"] = options["eigen_smooth"] = True
    if method == "ablation_cam" and peer.name == "alexnet":
        net, variables = peer.f64()
        want = grad_cam_lib(peer, cls, path, net, peer.xt.double(), **options)
        with jax.enable_x64(True):
            got = np.asarray(A.ablation_cam(peer.model, variables, jnp.asarray(peer.x, jnp.float64),
                                            TARGETS, layer=alias, normalize="minmax", **kwargs))
        assert got.dtype == np.float64
    else:
        want = grad_cam_lib(peer, cls, path, **options)
        got = getattr(A, method)(peer.model, peer.variables, jnp.asarray(peer.x), TARGETS,
                                 layer=alias, normalize="minmax", **kwargs)
        assert got.dtype == jnp.float32
    assert want.max() > 0.99, f"{method}: the reference map is empty, the test would be vacuous"
    assert got.shape == (2, *peer.size)
    assert max_rel_err(np.asarray(got), want) <= PEER_F32, method


@pytest.mark.parametrize("method", [*GRAD_CAMS, *SCORE_CAMS])
def test_cam_family_matches_pytorch_grad_cam(peer, method):
    """Every CAM with relu=True, normalize="minmax" (and the default bilinear resize) is
    pytorch-grad-cam's map. Eigen-CAM's sign is LAPACK's on both sides (flip=False); the
    gradient-free CAMs run at a 64-channel layer. PEER_F32; Ablation-CAM on AlexNet in
    float64 (see ABLATION)."""
    _cam_against_peer(peer, method, eigen_smooth=False)


@pytest.mark.parametrize("method", [m for m in [*GRAD_CAMS, *SCORE_CAMS] if m != "eigen_cam"])
def test_eigen_smooth_matches_pytorch_grad_cam(peer, method, monkeypatch):
    """``eigen_smooth=True``: the weighted channels' first principal component instead of
    their sum, as pytorch-grad-cam's ``eigen_smooth=True``. A singular vector's sign is
    the solver's choice, and NumPy's LAPACK and jax's differ on some maps (VGG16's
    HiResCAM, one of two images), so both sides use the same sign rule: our default
    (flip=True) and pytorch-grad-cam's own sign-corrected projection (Seg-Eigen-CAM's
    rule) put in place of its plain one. Settings and tolerances as above."""
    from pytorch_grad_cam import base_cam, hirescam, layer_cam
    from pytorch_grad_cam.utils import svd_on_activations

    corrected = getattr(svd_on_activations, "get_2d_projection_with_sign_correction", None)
    if corrected is None:
        pytest.skip("this pytorch-grad-cam has no sign-corrected projection")
    for module in (base_cam, hirescam, layer_cam):
        monkeypatch.setattr(module, "get_2d_projection", corrected)
    _cam_against_peer(peer, method, eigen_smooth=True)


def test_eigen_cam_is_the_principal_component(peer):
    """Raw Eigen-CAM (no relu, no resize) is the centred activation's projection on its
    first right singular vector, computed here by NumPy in float64, up to sign; flip=True
    makes the largest magnitude positive. PEER_F32 (an SVD of float32 activations)."""
    act = np.asarray(jv.activations(peer.model, peer.variables, jnp.asarray(peer.x),
                                    [peer.grad_layer[1]])[peer.grad_layer[1]], np.float64)
    got = np.asarray(A.eigen_cam(peer.model, peer.variables, jnp.asarray(peer.x), layer=peer.grad_layer[1],
                                 relu=False, resize=None))
    for n in range(2):
        rows = act[n].reshape(-1, act.shape[-1])
        rows = rows - rows.mean(0)
        proj = (rows @ np.linalg.svd(rows)[2][0]).reshape(act.shape[1:3])
        if abs(proj.min()) > abs(proj.max()):
            proj = -proj
        assert max_rel_err(got[n], proj) <= PEER_F32
        assert got[n].max() >= -got[n].min()


@pytest.mark.parametrize("method", ["grad_cam", "layer_cam"])
def test_aug_smooth_matches_pytorch_grad_cam(peer, method):
    """``aug_smooth(method, ...)`` with its defaults (flips and factors 0.9, 1, 1.1) is
    pytorch-grad-cam's ``aug_smooth=True`` (ttach's six copies, each map min-max scaled,
    flipped back and averaged). PEER_F32."""
    path, alias = peer.grad_layer
    want = grad_cam_lib(peer, GRAD_CAMS[method], path, aug_smooth=True)
    got = np.asarray(A.aug_smooth(getattr(A, method), peer.model, peer.variables,
                                  jnp.asarray(peer.x), TARGETS, layer=alias, normalize="minmax"))
    assert want.max() > 0.3, "the reference map is empty, the test would be vacuous"
    assert got.shape == (2, *peer.size)
    assert max_rel_err(got, want) <= PEER_F32, method


@pytest.mark.parametrize("method", ["grad_cam", "layer_cam"])
def test_multi_layer_cam_matches_pytorch_grad_cam(peer, method):
    """``multi_layer_cam`` over layers of two or three resolutions is pytorch-grad-cam with
    those ``target_layers`` (each map scaled and resized, averaged, scaled). PEER_F32."""
    paths, aliases = zip(*MULTI_LAYERS[peer.name])
    want = grad_cam_lib(peer, GRAD_CAMS[method], list(paths))
    got = np.asarray(A.multi_layer_cam(getattr(A, method), peer.model, peer.variables,
                                       jnp.asarray(peer.x), TARGETS, layers=list(aliases)))
    assert want.max() > 0.99, "the reference map is empty, the test would be vacuous"
    assert got.shape == (2, *peer.size)
    assert max_rel_err(got, want) <= PEER_F32, method


# --- Captum --------------------------------------------------------------------------------------


def test_layer_grad_cam_options_match_captum(peer):
    """Captum's LayerGradCam defaults (no ReLU, layer resolution) are relu=False,
    resize=None; attribute_to_layer_input is at="input" (on the max pool after the
    Grad-CAM layer, whose input is that layer's output); attr_dim_summation=False is
    per_channel=True. PEER_F32."""
    path, alias = peer.grad_layer
    pool = str(int(path.split(".")[1]) + 1)
    x, m, v = jnp.asarray(peer.x), peer.model, peer.variables
    cases = [
        (path, {}, dict(layer=alias, relu=False, resize=None)),
        (f"features.{pool}", {"attribute_to_layer_input": True},
         dict(layer=f"features.{pool}", at="input", relu=False, resize=None)),
        (path, {"attr_dim_summation": False, "relu_attributions": True},
         dict(layer=alias, per_channel=True, resize=None)),
    ]
    for torch_path, options, ours in cases:
        want = captum_attr.LayerGradCam(peer.torch, peer.module(torch_path)).attribute(
            peer.xt, target=torch.from_numpy(TARGETS).long(), **options)
        want = peer.nhwc(want)
        got = np.asarray(A.grad_cam(m, v, x, TARGETS, **ours))
        if not ours.get("per_channel"):
            want = want[..., 0]
        assert got.shape == want.shape, (options, got.shape, want.shape)
        assert np.abs(want).max() > 0
        assert max_rel_err(got, want) <= PEER_F32, options


def test_guided_grad_cam_matches_captum(peer):
    """Captum's GuidedGradCam (nearest upsampling, ReLU'd Grad-CAM, guided backprop
    through every nn.ReLU) is interpolation="nearest". PEER_F32."""
    path, alias = peer.grad_layer
    want = captum_attr.GuidedGradCam(peer.torch, peer.module(path)).attribute(
        peer.xt, target=torch.from_numpy(TARGETS).long())
    got = A.guided_grad_cam(peer.model, peer.variables, jnp.asarray(peer.x), TARGETS,
                            layer=alias, interpolation="nearest")
    assert max_rel_err(np.asarray(got), peer.nhwc(want)) <= PEER_F32


def captum_points(method: str, steps: int) -> tuple[np.ndarray, np.ndarray]:
    """Captum's path positions and weights: it multiplies the gradients by its step sizes
    as float32 (``torch.tensor(step_sizes).float()``), which a float64 comparison must
    reproduce (about 1e-8 relative otherwise)."""
    from captum.attr._utils.approximation_methods import approximation_parameters

    sizes, alphas = approximation_parameters(method)
    return (np.asarray(alphas(steps), np.float64),
            np.asarray(sizes(steps), np.float32).astype(np.float64))


def test_integrated_gradients_match_captum(peer):
    """Captum's default IntegratedGradients (Gauss-Legendre, zero baseline) with its
    convergence delta, multiply_by_inputs=False, and its riemann_trapezoid through
    ``points`` (positions from ``torch.linspace``, float32; see ``captum_points`` for the
    float64 comparison). Captum's 50 steps on AlexNet (float32, PEER_F32), 2 on VGG16
    (float64, PEER_F64: the same arithmetic on fewer points); the deltas to the same
    tolerance of the logits' scale."""
    tol, net, v, x, xt = peer.precise()
    steps = 50 if peer.name == "alexnet" else 2
    t = torch.from_numpy(TARGETS).long()
    ig = captum_attr.IntegratedGradients(net)
    want, want_delta = ig.attribute(xt, target=t, n_steps=steps, return_convergence_delta=True)
    plain = captum_attr.IntegratedGradients(net, multiply_by_inputs=False).attribute(
        xt, target=t, n_steps=steps, method="riemann_trapezoid")
    m = peer.model
    with jax.enable_x64(x.dtype == np.float64):
        xj = jnp.asarray(x)
        ours = ({"steps": steps, "method": "gausslegendre"} if tol == PEER_F32
                else {"points": captum_points("gausslegendre", steps)})
        got, delta = A.integrated_gradients(m, v, xj, TARGETS, return_delta=True, **ours)
        logits = np.abs(np.asarray(m.apply(v, xj))).max()
        got_plain = A.integrated_gradients(m, v, xj, TARGETS, multiply_by_inputs=False,
                                           points=captum_points("riemann_trapezoid", steps))
        got, delta, got_plain = (np.asarray(a) for a in (got, delta, got_plain))
    assert got.dtype == x.dtype
    assert max_rel_err(got, peer.nhwc(want)) <= tol
    assert np.abs(delta - want_delta.detach().numpy()).max() <= tol * logits
    assert max_rel_err(got_plain, peer.nhwc(plain)) <= tol


def captum_draws(seed: int, shape: tuple[int, ...], samples: int, stdev: float) -> np.ndarray:
    """The standard-normal draws Captum's NoiseTunnel makes after ``torch.manual_seed
    (seed)``, as our (S, N, H, W, C): it draws (N * S, C, H, W) noise for the input
    repeated example by example."""
    n = shape[0]
    torch.manual_seed(seed)
    noise = torch.normal(0, torch.tensor(stdev).repeat((n * samples, shape[3], *shape[1:3])))
    noise = noise.numpy().astype(np.float64).reshape(n, samples, shape[3], *shape[1:3]) / stdev
    return noise.transpose(1, 0, 3, 4, 2)


def test_noise_tunnel_matches_captum(peer):
    """NoiseTunnel(Saliency) with Captum's defaults (5 samples, stdevs=1.0, Saliency's
    abs=True) is smoothgrad(variant="abs", stdev=1.0), and NoiseTunnel over
    IntegratedGradients with smoothgrad_sq is noise_tunnel(integrated_gradients,
    variant="squared"), on the same draws. AlexNet float32 (PEER_F32), VGG16 float64
    (PEER_F64)."""
    tol, net, v, x, xt = peer.precise()
    t = torch.from_numpy(TARGETS).long()
    eps = captum_draws(0, x.shape, 5, 1.0)
    torch.manual_seed(0)
    want = captum_attr.NoiseTunnel(captum_attr.Saliency(net)).attribute(xt, target=t)
    eps2 = captum_draws(1, x.shape, 2, 0.2)
    torch.manual_seed(1)
    want2 = captum_attr.NoiseTunnel(captum_attr.IntegratedGradients(net)).attribute(
        xt, target=t, nt_type="smoothgrad_sq", nt_samples=2, stdevs=0.2, n_steps=3)
    m = peer.model
    with jax.enable_x64(x.dtype == np.float64):
        xj = jnp.asarray(x)
        got = np.asarray(A.smoothgrad(m, v, xj, TARGETS, stdev=1.0, noise_samples=eps,
                                      variant="abs"))
        got2 = np.asarray(A.noise_tunnel(A.integrated_gradients, m, v, xj, TARGETS, stdev=0.2,
                                         noise_samples=eps2, variant="squared",
                                         points=captum_points("gausslegendre", 3)))
    assert max_rel_err(got, peer.nhwc(want)) <= tol
    assert max_rel_err(got2, peer.nhwc(want2)) <= tol


def test_gradient_shap_matches_captum(peer):
    """Captum's GradientShap (5 samples, no noise) after np.random.seed(7): its baseline
    indices (np.random.choice, for the inputs repeated example by example) and positions
    (np.random.uniform) passed as our draws. AlexNet float32 (PEER_F32), VGG16 float64
    (PEER_F64)."""
    tol, net, v, x, xt = peer.precise()
    base = np.random.default_rng(0).standard_normal((4, *x.shape[1:])).astype(x.dtype) * 0.5
    np.random.seed(7)
    indices, positions = np.random.choice(4, 2 * 5), np.random.uniform(0, 1, 2 * 5)
    np.random.seed(7)
    want = captum_attr.GradientShap(net).attribute(
        xt, baselines=torch.from_numpy(base.transpose(0, 3, 1, 2).copy()),
        target=torch.from_numpy(TARGETS).long())
    draws = (indices.reshape(2, 5).T, positions.reshape(2, 5).T)
    with jax.enable_x64(x.dtype == np.float64):
        got = np.asarray(A.gradient_shap(peer.model, v, jnp.asarray(x), TARGETS, baselines=base,
                                         draws=draws, batch_size=2))
    assert max_rel_err(got, peer.nhwc(want)) <= tol


OCCLUSION = {"alexnet": ((15, 13), (8, 6)), "vgg16": ((16, 16), (8, 12))}


def test_occlusion_and_feature_ablation_match_captum(peer):
    """Captum's Occlusion with a window over every channel (its windows start at 0,
    stride, ... and the last is cut off by the edge) is edges="truncate" with window
    (h, w, 3); one channel at a time (AlexNet only, 3 x 3 windows of 35 x 45 px, the last
    row and column cut off), (h, w, 1). FeatureAblation with a label map (blocks
    of a coarse grid, numbered differently per example) is feature_ablation(mask=...).
    PEER_F32 of the largest drop (drops are differences of two float32 logits)."""
    (wh, ww), (sh, sw) = OCCLUSION[peer.name]
    x, m, v = jnp.asarray(peer.x), peer.model, peer.variables
    t = torch.from_numpy(TARGETS).long()
    occ = captum_attr.Occlusion(peer.torch)
    cases = [(dict(window=(wh, ww, 3), stride=(sh, sw, 3)), ((3, wh, ww), (3, sh, sw))),
             (dict(window=(35, 45, 1), stride=(20, 30, 1)), ((1, 35, 45), (1, 20, 30)))]
    for ours, theirs in cases[:2 if peer.name == "alexnet" else 1]:
        want = peer.nhwc(occ.attribute(peer.xt, sliding_window_shapes=theirs[0], strides=theirs[1],
                                       target=t, perturbations_per_eval=16))
        got = np.asarray(A.occlusion(m, v, x, TARGETS, edges="truncate", baseline=0.0, **ours))
        assert got.shape == want.shape
        assert max_rel_err(got, want) <= PEER_F32, ours
    h, w = peer.size
    blocks = (np.arange(h)[:, None] // 9) * 10 + np.arange(w)[None, :] // 11
    # the second example: the blocks upside down and numbered backwards (Captum runs one
    # pass per number up to the largest, so the numbers stay below the first's largest)
    mask = np.stack([blocks, (blocks.max() - blocks)[::-1]])
    want = captum_attr.FeatureAblation(peer.torch).attribute(
        peer.xt, target=t, feature_mask=torch.from_numpy(mask[:, None]), baselines=0.5)
    got = np.asarray(A.feature_ablation(m, v, x, TARGETS, mask=mask, baseline=0.5))
    assert max_rel_err(got, peer.nhwc(want)) <= PEER_F32


# --- zennit ---------------------------------------------------------------------------------------


def zennit_composite(name: str, low=None, high=None, canonizers=None):
    from zennit import composites, rules, types

    if name == "epsilon":  # LRP-epsilon everywhere, on zennit's base map
        return composites.LayerMapComposite(
            composites.layer_map_base() + [(types.Convolution, rules.Epsilon()),
                                           (torch.nn.Linear, rules.Epsilon())],
            canonizers=canonizers)
    if name == "epsilon_gamma_box":
        return composites.EpsilonGammaBox(low=low, high=high, canonizers=canonizers)
    return {"epsilon_plus": composites.EpsilonPlus, "epsilon_plus_flat": composites.EpsilonPlusFlat,
            "epsilon_alpha2_beta1": composites.EpsilonAlpha2Beta1}[name](canonizers=canonizers)


def zennit_bounds(dtype, n: int, size: tuple[int, int]):
    """The normalized 0 and 1 of each channel, as zennit's z-box takes them."""
    return [torch.from_numpy(((b - np.array(jv.data.IMAGENET_MEAN)) / np.array(jv.data.IMAGENET_STD))
                             .astype(dtype)).reshape(1, 3, 1, 1).expand(n, 3, *size)
            for b in (0.0, 1.0)]


@pytest.mark.parametrize("composite", A.COMPOSITES)
def test_lrp_matches_zennit(peer, composite):
    """zennit's Gradient attributor with the composite and a one-hot output is
    lrp(start="one"); the z-box bounds are the normalized 0 and 1 of each channel (our
    default for an ImageNet model). PEER_F32 (measured 5e-7 to 6e-7 on VGG16). LRP-epsilon
    everywhere divides by convolution outputs within 1e-6 of zero, which amplifies each
    framework's float32 rounding (measured 1.4e-4), so it is compared in float64
    (PEER_F64)."""
    from zennit.attribution import Gradient

    precise = composite == "epsilon"
    net, variables = peer.f64() if precise else (peer.torch, peer.variables)
    dtype = np.float64 if precise else np.float32
    xt = peer.xt.to(next(net.parameters()).dtype)
    bounds = zennit_bounds(dtype, 2, peer.size)
    onehot = torch.zeros(2, 1000, dtype=xt.dtype)
    onehot[torch.arange(2), torch.from_numpy(TARGETS).long()] = 1
    with Gradient(model=net, composite=zennit_composite(composite, *bounds)) as attributor:
        _, want = attributor(xt, onehot)
    with jax.enable_x64(precise):
        got = np.asarray(A.lrp(peer.model, variables, jnp.asarray(peer.x, dtype), TARGETS,
                               composite=composite, start="one"))
    assert got.shape == peer.x.shape and got.dtype == dtype
    assert np.abs(want.numpy()).max() > 0
    assert max_rel_err(got, peer.nhwc(want)) <= (PEER_F64 if precise else PEER_F32), composite


@pytest.fixture(scope="module")
def vgg11_bn():
    """Seeded random torchvision VGG11-BN (random BatchNorm statistics) and its port, with
    the two photographs at 32 x 48."""
    tmodel = torchvision_model("vgg11_bn")
    model, variables = from_torchvision(tmodel)
    x = jv.data.preprocess([jv.data.sample_image("chelsea"), jv.data.sample_image("coffee")],
                           (32, 48), resize="exact")
    return tmodel, model, variables, x


@pytest.mark.parametrize("composite", [c for c in A.COMPOSITES if c != "epsilon"])
def test_lrp_merges_batch_norm_as_zennit_does(vgg11_bn, composite):
    """lrp(merge_batch_norm=True) on VGG11-BN is zennit's composite with its
    SequentialMergeBatchNorm canonizer (each BatchNorm folded into the convolution before
    it). Without the merge the maps differ (by 0.5-2 of their scale, measured; checked
    for epsilon_plus), so the comparison tells the two apart. PEER_F32 (measured 8e-6 to
    1e-5)."""
    from zennit.attribution import Gradient
    from zennit.canonizers import SequentialMergeBatchNorm

    tmodel, model, variables, x = vgg11_bn
    xt = torch.from_numpy(x.transpose(0, 3, 1, 2).copy())
    onehot = torch.zeros(2, 1000)
    onehot[torch.arange(2), torch.from_numpy(TARGETS).long()] = 1
    canonized = zennit_composite(composite, *zennit_bounds(np.float32, 2, (32, 48)),
                                 canonizers=[SequentialMergeBatchNorm()])
    with Gradient(model=tmodel, composite=canonized) as attributor:
        _, want = attributor(xt, onehot)
    want = want.detach().numpy().transpose(0, 2, 3, 1)
    got = np.asarray(A.lrp(model, variables, jnp.asarray(x), TARGETS, composite=composite,
                           start="one", merge_batch_norm=True))
    assert np.abs(want).max() > 0
    assert max_rel_err(got, want) <= PEER_F32, composite
    if composite == "epsilon_plus":  # one composite shows the comparison is not vacuous
        plain = np.asarray(A.lrp(model, variables, jnp.asarray(x), TARGETS, composite=composite,
                                 start="one"))
        assert max_rel_err(plain, want) > 100 * PEER_F32, "the merge changed nothing here"


@pytest.mark.parametrize("peer", ["alexnet"], indirect=True)  # VGG16: compared with zennit
def test_lrp_conserves_relevance_without_biases(peer):
    """With every bias set to 0, relevance starting as the target's logit
    (start="value") sums to that logit at the input, for every composite but the z-box
    (whose bounds take a share). The rules conserve relevance exactly but for the
    stabilizers: a unit with output z keeps e / (z + e) of its relevance. The random
    networks' activations here are about 1e-3, so zennit's e = 1e-6 leaks 1e-4 to 1e-3
    of the logit (measured 9e-4 on AlexNet); with e = 1e-9 the sums agree to float32
    rounding (measured 2e-6). Tolerance: 1e-5 of the logit."""
    variables = jax.tree_util.tree_map_with_path(
        lambda path, a: jnp.zeros_like(a) if path[-1].key == "bias" else a, peer.variables)
    x = jnp.asarray(peer.x)
    logits = np.asarray(peer.model.apply(variables, x))[np.arange(2), TARGETS]
    for composite in ("epsilon_plus", "epsilon_plus_flat", "epsilon_alpha2_beta1", "epsilon"):
        r = np.asarray(A.lrp(peer.model, variables, x, TARGETS, composite=composite,
                             epsilon=1e-9, stabilizer=1e-9), np.float64)
        sums = r.reshape(2, -1).sum(1)
        assert np.abs(sums - logits).max() <= 1e-5 * np.abs(logits).max(), (composite, sums, logits)


# --- a model written twice, with hand-set weights -----------------------------------------------


KERNEL = np.array([[[1.0, 0.5], [0.0, -1.0]], [[0.5, 1.0], [1.0, 0.5]]])  # (out, kh, kw), 1 in


class Tiny(nn.Module):
    """x (N, 4, 5, 1) -> conv 2x2 (2 channels, valid) -> ReLU -> mean over space -> dense 2."""

    rules: str = "gradient"

    @nn.compact
    def __call__(self, x):
        h = nn.Conv(2, (2, 2), padding="VALID", name="conv")(x)
        h = jv.models.modules.ReLU(self.rules, name="relu")(h)
        return nn.Dense(2, name="fc")(h.mean(axis=(1, 2)))


def tiny_pair():
    """The Linen model, its variables, and the same network in torch."""
    fc = np.array([[1.0, -0.5], [0.25, 2.0]])  # (in, out)
    variables = {"params": {
        "conv": {"kernel": jnp.asarray(KERNEL.transpose(1, 2, 0)[:, :, None, :], jnp.float32),
                 "bias": jnp.asarray([1.0, -0.25], jnp.float32)},
        "fc": {"kernel": jnp.asarray(fc, jnp.float32), "bias": jnp.asarray([0.0, 1.0], jnp.float32)}}}
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 2), torch.nn.ReLU(),
                              torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
                              torch.nn.Linear(2, 2)).eval()
    with torch.no_grad():
        net[0].weight.copy_(torch.tensor(KERNEL[:, None], dtype=torch.float32))
        net[0].bias.copy_(torch.tensor([1.0, -0.25]))
        net[4].weight.copy_(torch.tensor(fc.T, dtype=torch.float32))
        net[4].bias.copy_(torch.tensor([0.0, 1.0]))
    return Tiny(), variables, net


def tiny_input() -> np.ndarray:
    """Positive pixels 1..20 and 21..40: every ReLU input is positive, so the model is
    linear there and each gradient has a closed form."""
    return (np.arange(1, 41, dtype=np.float32).reshape(2, 4, 5, 1) / 10.0)


def closed_form_gradient(target: int) -> np.ndarray:
    """d logit_target / dx with every ReLU on: the transposed convolution of
    fc[:, target] / (3 * 4) (the mean over the 3 x 4 map) spread over each window."""
    fc = np.array([[1.0, -0.5], [0.25, 2.0]])
    g = np.zeros((4, 5))
    for c in range(2):
        for i in range(3):
            for j in range(4):
                g[i:i + 2, j:j + 2] += KERNEL[c] * fc[c, target] / 12.0
    return g[..., None]


def test_tiny_model_closed_forms_and_captum_defaults():
    """On the hand-set model, with a class per example: our gradient is the closed form;
    Captum's defaults equal our call with its conventions: Saliency (abs=True) is
    gradient(abs=True), InputXGradient gradient_x_input, IntegratedGradients
    integrated_gradients(method="gausslegendre") (the path from the zero baseline crosses
    channel 1's ReLU, so no closed form there), GuidedBackprop and Deconvolution ours,
    NoiseTunnel(Saliency) smoothgrad(variant="abs", stdev=1.0), Occlusion (stride 1)
    occlusion(edges="truncate") with a one-channel window, FeatureAblation (every value
    its own feature) feature_ablation with a mask numbering every value, LayerGradCam
    grad_cam(relu=False, resize=None), whose closed form is checked too.
    EXACT_ISH against closed forms, PEER_F32 against Captum."""
    model, variables, net = tiny_pair()
    x = tiny_input()
    xt = torch.from_numpy(x.transpose(0, 3, 1, 2).copy())
    targets = np.array([0, 1], np.int32)
    t = torch.from_numpy(targets).long()
    closed = np.stack([closed_form_gradient(int(c)) for c in targets])
    got = np.asarray(A.gradient(model, variables, jnp.asarray(x), targets))
    assert max_rel_err(got, closed) <= EXACT_ISH

    def check(captum_method, ours, **options):
        want = captum_method.attribute(xt, target=t, **options)
        want = want.detach().numpy()
        want = want.transpose(0, 2, 3, 1) if want.ndim == 4 else want
        assert max_rel_err(np.asarray(ours), want) <= PEER_F32, type(captum_method).__name__

    xj = jnp.asarray(x)
    check(captum_attr.Saliency(net), A.gradient(model, variables, xj, targets, abs=True))
    check(captum_attr.InputXGradient(net), A.gradient_x_input(model, variables, xj, targets))
    check(captum_attr.GuidedBackprop(net), A.guided_backprop(model, variables, xj, targets))
    check(captum_attr.Deconvolution(net), A.deconvnet(model, variables, xj, targets))
    check(captum_attr.IntegratedGradients(net),
          A.integrated_gradients(model, variables, xj, targets, method="gausslegendre"))
    eps = captum_draws(2, x.shape, 5, 1.0)
    torch.manual_seed(2)
    check(captum_attr.NoiseTunnel(captum_attr.Saliency(net)),
          A.smoothgrad(model, variables, xj, targets, stdev=1.0, noise_samples=eps, variant="abs"))
    check(captum_attr.Occlusion(net),
          A.occlusion(model, variables, xj, targets, window=(2, 3, 1), stride=1, edges="truncate"),
          sliding_window_shapes=(1, 2, 3))
    check(captum_attr.FeatureAblation(net),  # no mask: every input value is a feature
          A.feature_ablation(model, variables, xj, targets, mask=np.arange(20).reshape(4, 5, 1)))
    want = captum_attr.LayerGradCam(net, net[1]).attribute(xt, target=t).detach().numpy()[:, 0]
    got = A.grad_cam(model, variables, xj, targets, layer="relu", relu=False, resize=None)
    assert max_rel_err(np.asarray(got), want) <= PEER_F32
    # Grad-CAM's closed form here: alpha_k = fc[k, t] / 12 and the map sum_k alpha_k A_k
    act = np.asarray(jv.activations(model, variables, xj, ["relu"])["relu"])
    fc = np.asarray(variables["params"]["fc"]["kernel"])
    by_hand = np.einsum("nhwk,kn->nhw", act, fc[:, targets] / 12.0)
    assert max_rel_err(np.asarray(got), by_hand) <= EXACT_ISH


def test_deeplift_matches_captum_without_max_pools():
    """On the hand-set model (a convolution, a ReLU module, a mean, a dense layer), with a
    baseline per example: Captum's DeepLift (return_convergence_delta) and DeepLiftShap
    over three references are deeplift and deeplift_shap; both sum to f(x) - f(b).
    PEER_F32. (Captum's max-pool rule does not sum to delta: on a random float64 network
    with one max pool its gap was 0.08 and -0.05, where ours is below 1e-16 on AlexNet and
    VGG16; networks with max pools are checked by summation to delta instead, in
    test_deeplift_sums_to_delta.)"""
    model, variables, net = tiny_pair()
    x = tiny_input() - 2.0  # some ReLU inputs negative, so the rescale rule matters
    xt = torch.from_numpy(x.transpose(0, 3, 1, 2).copy())
    base = np.random.default_rng(3).standard_normal(x.shape).astype(np.float32)
    bt = torch.from_numpy(base.transpose(0, 3, 1, 2).copy())
    targets = np.array([1, 0], np.int32)
    t = torch.from_numpy(targets).long()
    want, want_delta = captum_attr.DeepLift(net).attribute(xt, baselines=bt, target=t,
                                                          return_convergence_delta=True)
    got, delta = A.deeplift(model, variables, jnp.asarray(x), targets, baseline=base,
                            return_delta=True)
    plain = A.gradient(model, variables, jnp.asarray(x), targets) * (x - base)
    assert max_rel_err(np.asarray(got), want.detach().numpy().transpose(0, 2, 3, 1)) <= PEER_F32
    assert max_rel_err(np.asarray(got), np.asarray(plain)) > 1e-2  # not the plain gradient
    scale = np.abs(np.asarray(got)).sum()
    assert np.abs(np.asarray(delta)).max() <= 1e-5 * scale
    assert np.abs(want_delta.detach().numpy()).max() <= 1e-5 * scale
    refs = np.random.default_rng(4).standard_normal((3, *x.shape[1:])).astype(np.float32)
    want = captum_attr.DeepLiftShap(net).attribute(
        xt, baselines=torch.from_numpy(refs.transpose(0, 3, 1, 2).copy()), target=t)
    got = A.deeplift_shap(model, variables, jnp.asarray(x), targets, baselines=refs)
    assert max_rel_err(np.asarray(got), want.detach().numpy().transpose(0, 2, 3, 1)) <= PEER_F32


def test_deeplift_sums_to_delta(peer):
    """On AlexNet and VGG16 (max pools included): sum R[n] = f_n(x) - f_n(b) (the rescale
    rule conserves at every ReLU and max pool), and DeepLIFT-SHAP over two references is
    the mean of the two DeepLIFT maps. Float32: 1e-5 of sum |R| (sums of ~1e4 float32
    terms); the mean to F32 rounding of two programs, 1e-5."""
    x = jnp.asarray(peer.x)
    base = jnp.asarray(np.random.default_rng(1).standard_normal(peer.x.shape[1:]) * 0.3, jnp.float32)
    r, delta = A.deeplift(peer.model, peer.variables, x, TARGETS, baseline=base, return_delta=True)
    assert np.abs(np.asarray(delta)).max() <= 1e-5 * float(jnp.abs(r).sum())
    refs = jnp.stack([base, -base])
    shap = A.deeplift_shap(peer.model, peer.variables, x, TARGETS, baselines=refs)
    other = A.deeplift(peer.model, peer.variables, x, TARGETS, baseline=-base)
    assert max_rel_err(np.asarray(shap), np.asarray((r + other) / 2)) <= 1e-5

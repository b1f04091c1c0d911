"""Attribution: which input pixels (or which layer positions) an output depends on.

Every method takes a batch ``x: (N, H, W, C)`` (ImageNet-normalized images for our
models) and a ``target``: an int class, an int array (N,) with one class per example,
an objective from :mod:`jaxviz.objectives`, or a plain callable
``f(model, variables, x) -> (N,)``. Call it ``f``; ``f_n`` is example ``n``'s value.
Examples are independent (inference mode), so the input gradient of ``sum_n f_n`` is
each example's own gradient.

All methods are plain functions of ``(model, variables, x, target)``: they work on any
Flax Linen model (ours or a user's), return arrays in ``x``'s dtype, and may be called
under ``jax.jit`` with the model and the target static or closed over. Inside, the
heavy part is compiled once per model and input shape with ``variables``, ``x`` and the
target's indices as arguments (so a new target or new weights do not recompile), and
the vmapped samples of SmoothGrad, integrated gradients, occlusion and the
perturbation CAMs run in chunks of ``batch_size`` through one compiled chunk function in
a Python loop (on XLA:CPU about twice as fast as ``lax.scan`` around convolutions).

DeconvNet and guided backpropagation need a model whose ReLUs follow a backward rule:
ours do (``model.clone(rules=...)``, :mod:`jaxviz.rules`). A user's Linen model adopts
them by using :class:`jaxviz.models.modules.ReLU` and
:class:`jaxviz.models.modules.MaxPool2d` (or :func:`jaxviz.rules.relu`) with their
``rule`` set from a ``rules: str = "gradient"`` field of the model.

The package is split by family, every name re-exported here:
:mod:`~jaxviz.attribution.gradients` (gradient, SmoothGrad, integrated gradients,
DeconvNet, guided backpropagation), :mod:`~jaxviz.attribution.cam` (Grad-CAM and the
CAM family), :mod:`~jaxviz.attribution.perturbation` (occlusion, feature ablation),
:mod:`~jaxviz.attribution.sampling` (noise and test-time augmentation over any method,
GradientSHAP, RISE),
:mod:`~jaxviz.attribution.propagation` (LRP, DeepLIFT). Each module cites its papers.
"""

from jaxviz.attribution.cam import (
    CAM_METHODS, NORMALIZATIONS, RESIZE_MODES, ablation_cam, eigen_cam, grad_cam,
    grad_cam_plus_plus, guided_grad_cam, hires_cam, layer_cam, multi_layer_cam, resize, score_cam,
    xgrad_cam)
from jaxviz.attribution.gradients import (
    IG_METHODS, SMOOTHGRAD_VARIANTS, deconvnet, deconvnet_reconstruction, gradient,
    gradient_x_input, guided_backprop, integrated_gradients, layer_gradient, path_points,
    smoothgrad)
from jaxviz.attribution.perturbation import EDGES, feature_ablation, occlusion, window_positions
from jaxviz.attribution.propagation import COMPOSITES, deeplift, deeplift_shap, lrp
from jaxviz.attribution.sampling import (AUG_FACTORS, aug_smooth, gradient_shap, noise_tunnel, rise,
                                         rise_masks)

__all__ = [
    "AUG_FACTORS", "CAM_METHODS", "COMPOSITES", "EDGES", "IG_METHODS", "NORMALIZATIONS", "RESIZE_MODES", "SMOOTHGRAD_VARIANTS",
    "ablation_cam", "aug_smooth", "deconvnet", "deeplift", "deeplift_shap", "deconvnet_reconstruction", "eigen_cam", "feature_ablation", "grad_cam",
    "grad_cam_plus_plus", "gradient", "gradient_shap", "gradient_x_input", "guided_backprop", "guided_grad_cam",
    "hires_cam", "integrated_gradients", "layer_cam", "layer_gradient", "lrp", "multi_layer_cam", "noise_tunnel", "occlusion",
    "path_points", "resize", "rise", "rise_masks", "score_cam", "smoothgrad", "window_positions", "xgrad_cam",
]

"""The attribution methods that have a reference library, timed against it in the same run.

On seeded random AlexNet (a torchvision AlexNet, ``torch.manual_seed(0)``, ported with
``weights_port``), ``--batch`` images at ``--size`` px with a class each (the two bundled
photographs, classes 281 and 7; beyond two, copies of them in turn with seeded noise of
standard deviation 0.1 added), every method with the options that make it equal the
peer's output (the same options the tests check, ``tests/test_attribution_peers.py``):

  pytorch-grad-cam  GradCAM, GradCAMPlusPlus, XGradCAM, HiResCAM, LayerCAM, EigenCAM at
                    relu5; ScoreCAM and AblationCAM at relu5 (256 channels, 16 and 32
                    per batch on both sides);
  Captum            LayerGradCam, GuidedGradCam, IntegratedGradients (50 steps),
                    NoiseTunnel(Saliency) (50 samples), Occlusion (window 32, stride 8,
                    truncated), FeatureAblation (a 7 x 7 grid of blocks), GradientShap
                    (50 samples), DeepLift, DeepLiftShap (8 references);
  zennit            LRP with EpsilonPlusFlat and EpsilonGammaBox;
  batched torch     RISE (512 masks, 32 per batch), written from its formula (no
                    reference library is packaged).

Each row: median (minimum) of ``--pairs`` timed rounds after one warm-up call, seconds,
each round calling jax then the peer; jax compile time apart (the first call's extra
time over the median); jaxviz's speedup, the median over the rounds of peer time / jax
time (above 1: jaxviz is faster); the max relative difference of the two maps. The
IntegratedGradients, NoiseTunnel(Saliency) and Occlusion rows are also printed as
acceptance rows for ``python -m benchmarks`` (targets ``integrated_gradients``,
``smoothgrad``, ``occlusion``).

Where jax's default backend is a GPU and torch sees CUDA, both sides run on it in strict
float32 (``common.torch_device``: TF32 off in both); every call, jax's and the peer's,
ends with its map on the host as a NumPy array, so both pay the same copy and wait.

Run (from the repository root; about 10 minutes on 2 CPU cores)::

    PYTHONPATH=. python benchmarks/bench_peers.py [--pairs 5] [--size 224] [--batch 2] \\
        [--only NAMES] [--out FILE]

``python -m benchmarks`` also runs the CAM rows alone on a batch of 64 (workload
``cams``): ``--batch 64 --only GradCAM,GradCAMPlusPlus,XGradCAM,HiResCAM,LayerCAM,EigenCAM,
GradCAM aug_smooth,GradCAM relu4+relu5``.
"""

from __future__ import annotations

import argparse
import datetime
import functools
import os
import platform
import statistics
import sys
import tempfile
import time
import warnings

import numpy as np

from common import (add_pairs_option, add_xla_option, apply_xla_option, emit_row, seeded_alexnet,
                    speedup, time_alternating, torch_device)

# rows also printed as acceptance rows for `python -m benchmarks`: name -> target
ACCEPTANCE = {"IntegratedGradients 50 (Captum)": "integrated_gradients",
              "NoiseTunnel(Saliency) 50 (Captum)": "smoothgrad",
              "Occlusion w32 s8 (Captum)": "occlusion"}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_pairs_option(p, 5)
    p.add_argument("--batch", type=int, default=2, help="images per call (default 2)")
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--only", default=None, help="comma list of row names")
    p.add_argument("--out", default=None, help="append the Markdown report to this file")
    add_xla_option(p)
    args = p.parse_args(argv)
    xla = apply_xla_option(args)
    warnings.filterwarnings("ignore")

    import jax
    import jax.numpy as jnp
    import torch
    import captum.attr as ca
    import pytorch_grad_cam as pgc
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
    from zennit.attribution import Gradient
    from zennit import composites

    import jaxviz as jv

    A = jv.attribution
    tdev, device_note = torch_device()
    tmodel, model, variables = seeded_alexnet(tdev)
    for m in tmodel.modules():  # hooks on a conv layer must see its output, not the ReLU's
        if hasattr(m, "inplace"):
            m.inplace = False
    for prm in tmodel.parameters():  # pytorch-grad-cam backpropagates from the parameters
        prm.requires_grad_(True)
    size = (args.size, args.size)
    n = args.batch
    photos = jv.data.preprocess([jv.data.sample_image("chelsea"), jv.data.sample_image("coffee")],
                                size, resize="exact")
    x = photos[np.arange(n) % 2]
    if n > 2:
        x[2:] += 0.1 * np.random.default_rng(0).standard_normal(x[2:].shape).astype(np.float32)
    xj = jnp.asarray(x)
    xt = torch.from_numpy(x.transpose(0, 3, 1, 2).copy()).to(tdev)
    targets = np.array([281, 7], np.int32)[np.arange(n) % 2]
    tt = torch.from_numpy(targets).long().to(tdev)
    relu5 = tmodel.features[11]
    nhwc = lambda t: t.detach().cpu().numpy().transpose(0, 2, 3, 1)  # noqa: E731

    def cam_lib(cls, layers=(relu5,), **options):
        cam = getattr(pgc, cls)(model=tmodel, target_layers=list(layers))

        def run():
            return cam(input_tensor=xt, targets=[ClassifierOutputTarget(int(t)) for t in targets],
                       **options)
        return run

    @functools.cache
    def eps():
        # Captum's NoiseTunnel draws (N * 50, C, H, W) noise after torch.manual_seed(0), for
        # the inputs repeated example by example: the same draws as our (50, N, H, W, C).
        # Made only when its row runs (at --batch 64 and 224 px it is 1.9 GB). Drawn on the
        # torch side's device, as Captum draws it (CUDA's generator differs from the CPU's).
        torch.manual_seed(0)
        noise = torch.normal(0, torch.tensor(1.0, device=tdev).repeat((n * 50, 3, *size))).cpu().numpy()
        return noise.reshape(n, 50, 3, *size).transpose(1, 0, 3, 4, 2)

    base = np.zeros((1, *x.shape[1:]), np.float32)
    np.random.seed(0)
    indices, positions = np.random.choice(1, n * 50), np.random.uniform(0, 1, n * 50)
    blocks = (np.arange(size[0])[:, None] * 7 // size[0]) * 7 + np.arange(size[1])[None] * 7 // size[1]
    onehot = torch.zeros(n, 1000, device=tdev)
    onehot[torch.arange(n, device=tdev), tt] = 1
    low, high = [torch.from_numpy(((b - np.array(jv.data.IMAGENET_MEAN)) / np.array(jv.data.IMAGENET_STD))
                                  .astype(np.float32)).reshape(1, 3, 1, 1).expand(n, 3, *size).to(tdev)
                 for b in (0.0, 1.0)]

    def zennit(comp):
        def run():
            with Gradient(model=tmodel, composite=comp) as attributor:
                return nhwc(attributor(xt, onehot)[1])
        return run

    def block(a):  # the map on the host, as every peer's (numpy, or a tensor moved there)
        return np.asarray(a)

    refs = np.random.default_rng(1).normal(0, 0.5, (8, *x.shape[1:])).astype(np.float32)
    rise_masks = np.asarray(A.rise_masks(jax.random.key(0), 512, size))
    masks_t = torch.from_numpy(rise_masks).to(tdev)

    def torch_rise(chunk):
        """RISE from its formula, ``chunk`` masks x every image per forward pass."""
        with torch.no_grad():
            total = torch.zeros(n, *size, device=tdev)
            each = torch.arange(n, device=tdev)
            for start in range(0, len(masks_t), chunk):
                m = masks_t[start:start + chunk]
                out = tmodel((xt[None] * m[:, None, None]).reshape(-1, 3, *size))
                scores = out.reshape(len(m), n, -1)[:, each, tt]      # (k, N)
                total += torch.einsum("kn,khw->nhw", scores, m)
            return (total / (len(masks_t) * 0.5)).cpu().numpy()

    rows = {
        "GradCAM": (lambda: block(A.grad_cam(model, variables, xj, targets, layer="relu5", normalize="minmax")),
                    cam_lib("GradCAM")),
        "GradCAMPlusPlus": (lambda: block(A.grad_cam_plus_plus(model, variables, xj, targets, layer="relu5",
                                                               normalize="minmax")), cam_lib("GradCAMPlusPlus")),
        "XGradCAM": (lambda: block(A.xgrad_cam(model, variables, xj, targets, layer="relu5", normalize="minmax")),
                     cam_lib("XGradCAM")),
        "HiResCAM": (lambda: block(A.hires_cam(model, variables, xj, targets, layer="relu5", normalize="minmax")),
                     cam_lib("HiResCAM")),
        "LayerCAM": (lambda: block(A.layer_cam(model, variables, xj, targets, layer="relu5", normalize="minmax")),
                     cam_lib("LayerCAM")),
        "EigenCAM": (lambda: block(A.eigen_cam(model, variables, xj, targets, layer="relu5", normalize="minmax",
                                               flip=False)), cam_lib("EigenCAM")),
        "GradCAM aug_smooth": (
            lambda: block(A.aug_smooth(A.grad_cam, model, variables, xj, targets, layer="relu5",
                                       normalize="minmax")), cam_lib("GradCAM", aug_smooth=True)),
        "GradCAM relu4+relu5": (
            lambda: block(A.multi_layer_cam(A.grad_cam, model, variables, xj, targets,
                                            layers=["relu4", "relu5"])),
            cam_lib("GradCAM", layers=(tmodel.features[9], relu5))),
        "ScoreCAM": (lambda: block(A.score_cam(model, variables, xj, targets, layer="relu5", normalize="minmax")),
                     cam_lib("ScoreCAM")),
        "AblationCAM": (lambda: block(A.ablation_cam(model, variables, xj, targets, layer="relu5",
                                                     normalize="minmax")), cam_lib("AblationCAM")),
        "LayerGradCam (Captum)": (
            lambda: block(A.grad_cam(model, variables, xj, targets, layer="relu5", relu=False, resize=None)),
            lambda: ca.LayerGradCam(tmodel, relu5).attribute(xt, target=tt).detach().cpu().numpy()[:, 0]),
        "GuidedGradCam (Captum)": (
            lambda: block(A.guided_grad_cam(model, variables, xj, targets, layer="relu5",
                                            interpolation="nearest")),
            lambda: nhwc(ca.GuidedGradCam(tmodel, relu5).attribute(xt, target=tt))),
        "IntegratedGradients 50 (Captum)": (
            lambda: block(A.integrated_gradients(model, variables, xj, targets, steps=50,
                                                 method="gausslegendre", batch_size=25)),
            lambda: nhwc(ca.IntegratedGradients(tmodel).attribute(xt, target=tt, n_steps=50,
                                                                  internal_batch_size=50))),
        "NoiseTunnel(Saliency) 50 (Captum)": (
            lambda: block(A.smoothgrad(model, variables, xj, targets, noise_samples=eps(), stdev=1.0,
                                       variant="abs", batch_size=25)),
            lambda: (torch.manual_seed(0), nhwc(ca.NoiseTunnel(ca.Saliency(tmodel)).attribute(
                xt, target=tt, nt_samples=50)))[1]),
        "Occlusion w32 s8 (Captum)": (
            lambda: block(A.occlusion(model, variables, xj, targets, window=(32, 32, 3), stride=(8, 8, 3),
                                      edges="truncate", batch_size=32)),
            lambda: nhwc(ca.Occlusion(tmodel).attribute(xt, sliding_window_shapes=(3, 32, 32),
                                                        strides=(3, 8, 8), target=tt,
                                                        perturbations_per_eval=32))),
        "FeatureAblation 7x7 (Captum)": (
            lambda: block(A.feature_ablation(model, variables, xj, targets, mask=blocks, batch_size=16)),
            lambda: nhwc(ca.FeatureAblation(tmodel).attribute(
                xt, target=tt, feature_mask=torch.from_numpy(blocks)[None, None].to(tdev),
                perturbations_per_eval=16))),
        "GradientShap 50 (Captum)": (
            lambda: block(A.gradient_shap(model, variables, xj, targets, baselines=base,
                                          draws=(indices.reshape(n, 50).T, positions.reshape(n, 50).T),
                                          batch_size=25)),
            lambda: (np.random.seed(0), nhwc(ca.GradientShap(tmodel).attribute(
                xt, baselines=torch.from_numpy(base.transpose(0, 3, 1, 2).copy()).to(tdev), n_samples=50,
                target=tt)))[1]),
        "DeepLift (Captum)": (
            lambda: block(A.deeplift(model, variables, xj, targets)),
            lambda: nhwc(ca.DeepLift(tmodel).attribute(xt, target=tt))),
        "DeepLiftShap 8 refs (Captum)": (
            lambda: block(A.deeplift_shap(model, variables, xj, targets, baselines=refs)),
            lambda: nhwc(ca.DeepLiftShap(tmodel).attribute(
                xt, baselines=torch.from_numpy(refs.transpose(0, 3, 1, 2).copy()).to(tdev), target=tt))),
        "RISE 512 masks (batched torch)": (
            lambda: block(A.rise(model, variables, xj, targets, masks=rise_masks, batch_size=32)),
            lambda: torch_rise(32)),
        "LRP EpsilonPlusFlat (zennit)": (
            lambda: block(A.lrp(model, variables, xj, targets, composite="epsilon_plus_flat", start="one")),
            zennit(composites.EpsilonPlusFlat())),
        "LRP EpsilonGammaBox (zennit)": (
            lambda: block(A.lrp(model, variables, xj, targets, composite="epsilon_gamma_box", start="one")),
            zennit(composites.EpsilonGammaBox(low=low, high=high))),
    }
    only = None if args.only is None else {name.strip() for name in args.only.split(",")}
    if only is not None and not only <= rows.keys():
        p.error(f"unknown rows {sorted(only - rows.keys())}; rows: {', '.join(rows)}")
    lines = [
        f"{n} images, {size[0]} x {size[1]} px, AlexNet (seeded random weights), float32, {device_note}; "
        f"median of {args.pairs} timed rounds (jax, peer) after 1 warm-up (minimum in "
        f"parentheses), seconds; speedup = median over the rounds of peer / jax time. {xla}.", "",
        "| method | peer s | jax s | speedup vs peer (>1: jaxviz faster) | jax compile s "
        "| max rel diff |",
        "|---|---|---|---|---|---|"]
    for name, (ours, theirs) in rows.items():
        if only is not None and name not in only:
            continue
        t = time.perf_counter()
        ours()
        first = time.perf_counter() - t
        (jt, tt_), (got, want) = time_alternating([ours, theirs], args.pairs)
        got, want = np.asarray(got), np.asarray(want)
        diff = float(np.abs(got - want).max() / np.abs(want).max())
        jm, tm = statistics.median(jt), statistics.median(tt_)
        gain = speedup(tt_, jt)
        lines.append(f"| {name} | {tm:.3f} ({min(tt_):.3f}) | {jm:.3f} ({min(jt):.3f}) | "
                     f"{gain:.2f} | {max(first - jm, 0):.1f} | {diff:.1e} |")
        if name in ACCEPTANCE:
            emit_row(ACCEPTANCE[name], f"{name.rsplit(' (', 1)[0]}, AlexNet {size[0]} px, {n} images",
                     name.rsplit("(", 1)[1].rstrip(")"), gain, args.pairs)
        print(lines[-1], flush=True)
    cpu = platform.processor() or platform.machine()
    lines += ["", f"Machine: {cpu}, {os.cpu_count()} cores; Python {platform.python_version()}, "
                  f"jax {jax.__version__}, torch {torch.__version__} ({torch.get_num_threads()} threads)",
              f"Load average (1 min): {os.getloadavg()[0]:.2f}",
              f"Date: {datetime.date.today().isoformat()}", ""]
    report = "\n".join(lines)
    print(report)
    if args.out:
        old = open(args.out).read() if os.path.exists(args.out) else ""
        fd, tmp = tempfile.mkstemp(dir=os.path.dirname(os.path.abspath(args.out)) or ".")
        with os.fdopen(fd, "w") as f:
            f.write(old + ("\n" if old and not old.endswith("\n") else "") + report)
        os.replace(tmp, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())

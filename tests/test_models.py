"""Ported models against torchvision, layer by layer (forward hooks) and input gradients.

Every architecture, seeded random weights with random BatchNorm statistics, a photograph
and a noise image, at a non-square size that is not a multiple of any stride (it
exercises floor- and ceil-mode pools and adaptive pooling whose bins overlap or repeat)
in float32 and in float64, and at 224x224 (ImageNet's size, where VGG's adaptive pool is
the identity) in float32. The non-square size is 131x173 (AlexNet's conv5 is 3x4 there,
spread over 6x6; GoogLeNet's ceil-mode pools cut partial windows), and 67x83 for the VGGs:
their five pools leave 2x2, spread over 7x7 by overlapping bins, at a quarter of the
convolutions' work of 131x173 (the float64 VGGs were most of this module's time).
Tolerances: see conftest.py.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxviz as jv
from conftest import F32_TOL, F64_TOL, max_rel_err, nhwc, photo_and_noise, torchvision_model

torch = pytest.importorskip("torch")
from torch_reference import count_flips, decision_inputs_jax, decision_inputs_torch, decisions, pinned_apply  # noqa: E402
from weights_port import from_torchvision  # noqa: E402

ARCHS = list(jv.models.TORCHVISION_ARCHITECTURES)


def non_square(name: str) -> tuple[int, int]:
    """The module docstring's non-square size for architecture ``name``."""
    return (67, 83) if name.startswith("vgg") else (131, 173)


# Layers whose torch output is a flattened (C, H, W) map that jaxviz keeps as (H, W, C).
FLAT_HWC = {"alexnet": {"classifier.0": (6, 6, 256)}}


def torch_outputs(model, x_nhwc: np.ndarray, dtype) -> tuple[list[str], dict[str, np.ndarray]]:
    """Every module's forward-hook output, in the order the hooks fired."""
    order, outs, handles = [], {}, []

    def hook(name):
        def record(module, inputs, output):
            order.append(name)
            outs[name] = nhwc(output)
        return record

    for name, module in model.named_modules():
        if name:
            handles.append(module.register_forward_hook(hook(name)))
    x = torch.from_numpy(x_nhwc.transpose(0, 3, 1, 2).copy()).to(dtype)
    with torch.no_grad():
        model(x)
    for h in handles:
        h.remove()
    return order, outs


@pytest.fixture(scope="module", params=ARCHS)
def arch(request):
    """(name, seeded torch model, its ports by dtype: filled by ``ported``)."""
    name = request.param
    kwargs = {"aux_logits": False} if name == "googlenet" else {}
    return name, torchvision_model(name, **kwargs), {}


def ported(arch, dtype: str):
    """``from_torchvision`` of the fixture's torch model converted to ``dtype``, made once
    per dtype and shared by this module's tests (porting VGG's 138M parameters takes
    seconds: the 25088 x 4096 classifier weight is transposed)."""
    name, tmodel, ports = arch
    if dtype not in ports:
        tmodel.to(getattr(torch, dtype))
        with jax.enable_x64(dtype == "float64"):
            ports[dtype] = from_torchvision(tmodel)
    return ports[dtype]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_every_layer_matches_torch(arch, dtype):
    name, tmodel, _ = arch
    tol = F32_TOL if dtype == "float32" else F64_TOL
    tmodel = tmodel.to(getattr(torch, dtype))
    with jax.enable_x64(dtype == "float64"):
        model, variables = ported(arch, dtype)
        assert jax.tree_util.tree_leaves(variables)[0].dtype == jnp.dtype(dtype)
        sizes = [non_square(name)]
        # BatchNorm variants share every other layer with their plain VGG, which runs at both
        # sizes; they run at the non-square size only. Float64, which is there to take rounding
        # (and the max-pool near-ties it can tip) out of the comparison, runs at the non-square
        # size only too: 224x224's own path (VGG's adaptive pool as the identity) is checked in
        # float32. Both keep the suite inside its time budget.
        if not (name.endswith("_bn") or dtype == "float64"):
            sizes.insert(0, (224, 224))
        for size in sizes:
            x = photo_and_noise(size).astype(dtype)
            order, expected = torch_outputs(tmodel, x, getattr(torch, dtype))
            table = jv.layer_names(model, size)
            assert [info.path for info in table] == order, "layer list or forward order differs"
            acts = jax.jit(lambda v, x: jv.activations(model, v, x, order))(variables, jnp.asarray(x))
            errors = {}
            for path in order:
                want = expected[path]
                if path in FLAT_HWC.get(name, {}):
                    h, w, c = FLAT_HWC[name][path]
                    want = want.reshape(-1, c, h, w).transpose(0, 2, 3, 1).reshape(len(want), -1)
                got = np.asarray(acts[path])
                assert got.dtype == np.dtype(dtype), path
                errors[path] = max_rel_err(got, want)
            worst = sorted(errors.items(), key=lambda kv: -kv[1])[:3]
            assert worst[0][1] <= tol, f"{name} {dtype} {size}: worst layers {worst}"
            print(f"{name} {dtype} {size}: {len(order)} layers, worst {worst[0][0]} {worst[0][1]:.2e}")


# Input gradients are piecewise: each ReLU's sign and each max-pool window's arg-max pick
# the linear piece the gradient comes from. A float32 forward that differs from torch's
# by rounding (<= 1e-5, tested above) can still flip a decision where a ReLU's input is
# within rounding of 0, or two entries of a pool window are within rounding of each
# other (deep VGGs have a few such windows per image); the gradient then follows a
# different piece and legitimately differs there by O(1). So in float32:
#   - examples whose decisions all agree with torch's (counted, not assumed) must match;
#   - every example must match once our forward is pinned to torch's decisions: that
#     checks our backward pass through every convolution, BatchNorm, linear layer,
#     adaptive pool and concatenation; the ReLU and max-pool backward passes themselves
#     are checked in test_rules.py.
# In float64 (rounding 1e-16) every example must match, decisions unpinned.
GRAD_SIZE = (80, 96)
GRAD_TARGETS = np.array([281, 7], dtype=np.int32)


def per_example_errors(got: np.ndarray, want: np.ndarray) -> np.ndarray:
    return np.array([max_rel_err(g, w) for g, w in zip(got, want)])


def logit_gradient(apply):
    """jit(grad) of the summed target logits with respect to x, for ``apply(v, x, *rest)``
    (``rest``: more arrays as arguments, not closed over: see ``pinned_apply``); examples
    are independent in inference mode, so each example gets its own input gradient."""
    rows = np.arange(len(GRAD_TARGETS), dtype=np.int32)
    return jax.jit(jax.grad(lambda v, x, *rest: apply(v, x, *rest)[rows, GRAD_TARGETS].sum(),
                            argnums=1))


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_input_gradient_of_class_logit_matches_torch(arch, dtype):
    name, tmodel, _ = arch
    tmodel = tmodel.to(getattr(torch, dtype))
    x = photo_and_noise(GRAD_SIZE, seed=1).astype(dtype)
    n = len(x)
    xt = torch.from_numpy(x.transpose(0, 3, 1, 2).copy()).requires_grad_(True)
    tmodel(xt)[torch.arange(n), torch.from_numpy(GRAD_TARGETS)].sum().backward()
    want = nhwc(xt.grad)
    with jax.enable_x64(dtype == "float64"):
        model, variables = ported(arch, dtype)
        if dtype == "float64":
            got = np.asarray(logit_gradient(model.apply)(variables, jnp.asarray(x)))
            errors = per_example_errors(got, want)
            assert errors.max() <= F64_TOL, f"{name}: per-example errors {errors}"
            print(f"{name} float64: gradient errors {errors}")
            return
        # float32: the gradient and the decisions it went through, from one program
        rows = np.arange(n)
        ours, got = decision_inputs_jax(model, variables, x,
                                        loss=lambda out: out[rows, GRAD_TARGETS].sum())
        errors = per_example_errors(got, want)
        theirs = decisions(tmodel, decision_inputs_torch(tmodel, x))
        flips = count_flips(theirs, decisions(tmodel, ours), n)
        pinned = logit_gradient(lambda v, x, fixed: pinned_apply(model, v, x, fixed))
        pinned_errors = per_example_errors(np.asarray(pinned(variables, jnp.asarray(x), theirs)), want)
    report = (f"{name}: decision flips per example {flips}, gradient errors {errors}, "
              f"with torch's decisions {pinned_errors}")
    assert pinned_errors.max() <= F32_TOL, report
    agree = flips == 0
    if agree.any():
        assert errors[agree].max() <= F32_TOL, report
    print(report)


def test_kinds_and_shapes_match_torch_modules(arch):
    name, tmodel, ports = arch
    modules = dict(tmodel.named_modules())
    model, _ = ported(arch, next(iter(ports), "float32"))  # the architecture: any dtype
    for info in jv.layer_names(model, (131, 173)):
        assert info.kind == type(modules[info.path]).__name__, info


def test_googlenet_aux_heads_and_transform_input_match_torch():
    """Aux heads in train mode (dropout rate 0 so the outputs are deterministic),
    transform_input, and the running statistics every BatchNorm updates, against torch."""
    tmodel = torchvision_model("googlenet", aux_logits=True, transform_input=True,
                               dropout=0.0, dropout_aux=0.0)
    model, variables = from_torchvision(tmodel)
    assert model.aux_logits and model.transform_input
    x = photo_and_noise((224, 224))
    xt = torch.from_numpy(x.transpose(0, 3, 1, 2).copy())
    # inference: only the logits come back, computed with the running statistics
    with torch.no_grad():
        eval_logits = tmodel(xt)
    assert max_rel_err(jax.jit(model.apply)(variables, jnp.asarray(x)), nhwc(eval_logits)) <= F32_TOL

    tmodel.train()
    with torch.no_grad():
        expected = tmodel(xt)
    tmodel.eval()
    train = jax.jit(lambda v, x: model.apply(v, x, train=True, mutable=["batch_stats"]))
    got, updated = train(variables, jnp.asarray(x))
    assert len(got) == len(expected) == 3
    for g, e in zip(got, expected):
        assert max_rel_err(g, nhwc(e)) <= F32_TOL
    # conversion copied the statistics: torch's in-place update did not reach ours
    _, before = from_torchvision(tmodel)
    changed = jax.tree_util.tree_map(lambda a, b: not np.array_equal(a, b),
                                     variables["batch_stats"], before["batch_stats"])
    assert all(jax.tree_util.tree_leaves(changed))
    # and our train step updates them as torch's did (momentum 0.1, unbiased variance)
    errors = jax.tree_util.tree_map(max_rel_err, updated["batch_stats"], before["batch_stats"])
    assert max(jax.tree_util.tree_leaves(errors)) <= F32_TOL

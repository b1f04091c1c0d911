"""Branch decisions of a ported model and of its torch twin, and a forward pinned to given
decisions: for comparing gradients of piecewise-linear networks in float32.

A ReLU's sign and a max-pool window's arg-max select the linear piece a gradient comes
from. Where float32 rounding puts a ReLU input within rounding of 0, or two entries of a
pool window within rounding of each other, the two frameworks may pick different pieces;
:func:`count_flips` counts those places and :func:`pinned_apply` runs our model on
torch's choices, so that the rest of the backward pass can be compared exactly.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import torch

import jaxviz as jv


def decision_inputs_torch(tmodel, x: np.ndarray) -> dict[tuple[str, str], np.ndarray]:
    """Inputs of every ReLU (including GoogLeNet's functional ones, fed by ``*.bn``) and
    every max pool, from torch forward hooks, as NCHW numpy arrays."""
    found, handles = {}, []

    def hook(key, use_output):
        def record(module, inputs, output):
            found[key] = (output if use_output else inputs[0]).detach().numpy().copy()
        return record

    for name, m in tmodel.named_modules():
        if isinstance(m, torch.nn.ReLU):
            handles.append(m.register_forward_hook(hook(("relu", name), False)))
        elif isinstance(m, torch.nn.MaxPool2d):
            handles.append(m.register_forward_hook(hook(("pool", name), False)))
        elif isinstance(m, torch.nn.BatchNorm2d) and name.endswith(".bn"):
            handles.append(m.register_forward_hook(hook(("relu", name), True)))
    with torch.no_grad():
        tmodel(torch.from_numpy(x.transpose(0, 3, 1, 2).copy()))
    for h in handles:
        h.remove()
    return found


def decision_inputs_jax(model, variables, x, loss=None):
    """The same inputs from the ported model, recorded by intercepting module calls.

    With ``loss`` (a function of the model's output to a scalar), returns
    ``(inputs, d loss / d x)`` from one compiled program: the decisions recorded are then
    exactly those the gradient was taken through (a separate program may round a ReLU
    input or a pool window differently and so decide differently)."""
    modules = jv.models.modules

    def forward(variables, x):
        found = {}

        def interceptor(call, args, kwargs, context):
            out = call(*args, **kwargs)
            m = context.module
            if context.method_name == "__call__" and m.path:
                name = ".".join(m.path)
                if isinstance(m, modules.ReLU):
                    found[("relu", name)] = args[0]
                elif isinstance(m, modules.MaxPool2d):
                    found[("pool", name)] = args[0]
                elif isinstance(m, modules.BatchNorm2d) and name.endswith(".bn"):
                    found[("relu", name)] = out
            return out

        with nn.intercept_methods(interceptor):
            out = model.apply(variables, x)
        return out, found

    def run(variables, x):
        if loss is None:
            return forward(variables, x)[1], None

        def f(x):
            out, found = forward(variables, x)
            return loss(out), found

        (_, found), grad = jax.value_and_grad(f, has_aux=True)(x)
        return found, grad

    found, grad = jax.jit(run)(variables, jnp.asarray(x))
    found = {k: np.array(v.transpose(0, 3, 1, 2) if v.ndim == 4 else v) for k, v in found.items()}
    return found if loss is None else (found, np.asarray(grad))


def decisions(tmodel, inputs: dict[tuple[str, str], np.ndarray]) -> dict[tuple[str, str], np.ndarray]:
    """ReLU signs (input > 0) and max-pool arg-maxes (torch's flat indices into each
    H*W plane, with torch's tie-breaking), NCHW."""
    modules = dict(tmodel.named_modules())
    out = {}
    for (kind, name), v in inputs.items():
        if kind == "relu":
            out[(kind, name)] = v > 0
        else:
            m = modules[name]
            out[(kind, name)] = torch.nn.functional.max_pool2d(
                torch.from_numpy(v), m.kernel_size, m.stride, m.padding, m.dilation,
                ceil_mode=m.ceil_mode, return_indices=True)[1].numpy()
    return out


def count_flips(a: dict, b: dict, n: int) -> np.ndarray:
    """Per example: how many decisions differ."""
    assert a.keys() == b.keys()
    return sum((a[k] != b[k]).reshape(n, -1).sum(axis=1) for k in a)


def _pinned_relu(s, mask, rule: str):
    """``where(mask, s, 0)`` forward (the given signs), the backward of ``rule`` on them:
    gradient ``1[mask] g``, deconvnet ``relu(g)``, guided ``1[mask] relu(g)``. The mask is
    an argument, not a closure: under ``jit`` it may be a traced input (below)."""

    @jax.custom_vjp
    def f(s, mask):
        return jnp.where(mask, s, 0)

    def bwd(mask, g):
        if rule == "gradient":
            return jnp.where(mask, g, 0), None
        if rule == "deconvnet":
            return jnp.maximum(g, 0), None
        if rule == "guided":
            return jnp.where(mask & (g > 0), g, 0), None
        raise ValueError(f"no pinned ReLU for rule {rule!r}")

    f.defvjp(lambda s, mask: (f(s, mask), mask), bwd)
    return f(s, mask)


def pinned_apply(model, variables, x, fixed: dict[tuple[str, str], np.ndarray], rule: str = "gradient"):
    """``model.apply`` with every ReLU sign and max-pool arg-max taken from ``fixed``:
    each ReLU (GoogLeNet's functional ones included) becomes ``where(mask, x, 0)`` with
    the backward of ``rule``, and max pooling a gather at the given indices, so the
    gradient is that of the linear piece those decisions select.

    Pass ``variables`` and ``fixed`` as arguments of a jitted caller, not through its
    closure: closed-over arrays become constants of the program, and XLA:CPU compiled
    AlexNet's pinned gradient with its weights and decisions as constants in 14 s."""
    modules, googlenet = jv.models.modules, jv.models.googlenet
    bn_outputs = {}

    def nhwc_mask(key):
        m = fixed[key]
        return m.transpose(0, 2, 3, 1) if m.ndim == 4 else m

    def interceptor(call, args, kwargs, context):
        m = context.module
        name = ".".join(m.path)
        if context.method_name != "__call__" or not name:
            return call(*args, **kwargs)
        if isinstance(m, modules.ReLU):
            return _pinned_relu(args[0], nhwc_mask(("relu", name)), rule)
        if isinstance(m, modules.MaxPool2d):
            x = args[0]
            n, h, w, c = x.shape
            idx = fixed[("pool", name)]
            flat = x.transpose(0, 3, 1, 2).reshape(n, c, h * w)
            picked = jnp.take_along_axis(flat, idx.reshape(n, c, -1), axis=2)
            return picked.reshape(idx.shape).transpose(0, 2, 3, 1)
        out = call(*args, **kwargs)
        if isinstance(m, modules.BatchNorm2d) and name.endswith(".bn"):
            bn_outputs[name] = out
        elif isinstance(m, googlenet.BasicConv2d):  # relu(bn(conv(x))), the relu functional
            return _pinned_relu(bn_outputs[name + ".bn"], nhwc_mask(("relu", name + ".bn")), rule)
        return out

    with nn.intercept_methods(interceptor):
        return model.apply(variables, x)

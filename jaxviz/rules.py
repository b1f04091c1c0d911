"""Backward rules for ReLU and max pooling, as ``jax.custom_vjp`` operations.

Every rule leaves the forward pass unchanged and replaces only what the backward
pass sends to the layer's input, given the gradient ``g`` arriving at its output
and the layer's input ``s``:

=============  =====================================  ==========================================
rule           ReLU backward                          max-pool backward
=============  =====================================  ==========================================
``gradient``   ``1[s > 0] * g`` (autodiff)            to the arg-max of each window (autodiff)
``deconvnet``  ``relu(g)``                            to the arg-max of each window
``guided``     ``1[s > 0] * relu(g)``                 to the arg-max of each window
``linear``     ``g`` (ReLU as identity)               the gradient of the average pool over the
                                                      same windows
=============  =====================================  ==========================================

Global max pooling (:func:`global_max_pool`, the whole map as one window) follows the
same rules: to each channel's first maximum in row-major order, or, under ``linear``,
shared equally over the map as a global average pool's gradient.

References:
  Zeiler & Fergus, "Visualizing and Understanding Convolutional Networks", ECCV 2014
  (DeconvNet). Springenberg et al., "Striving for Simplicity: The All Convolutional
  Net", ICLR 2015 workshop, arXiv:1412.6806 (guided backpropagation). Olah et al.,
  "Visualizing Weights", Distill 2020 (expanded weights: ReLU as identity and max
  pooling as average pooling in the backward pass).

A model selects a rule with ``model.clone(rules=...)``; its ReLU and max-pool
layers call :func:`relu` and :func:`max_pool` with that name.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from jaxviz.errors import InputError, ModelError

RULES: tuple[str, ...] = ("gradient", "deconvnet", "guided", "linear")


def check_rule(rule: str) -> str:
    """Returns ``rule`` if it names a backward rule; raises ``ValueError`` otherwise."""
    if rule not in RULES:
        raise InputError(f"unknown backward rule {rule!r}; expected one of {', '.join(RULES)}")
    return rule


def with_rule(model, rule: str, method: str):
    """``model.clone(rules=rule)``, or a :class:`~jaxviz.errors.ModelError` that says how
    to give a user's model a ``rules`` field; ``method`` names what needs it."""
    check_rule(rule)
    if "rules" not in getattr(model, "__dataclass_fields__", {}):
        raise ModelError(
            f"{method} needs a model whose ReLUs follow a backward rule; "
            f"{type(model).__name__} has no 'rules' field. Give the model a field "
            f"`rules: str = \"gradient\"` and build its ReLUs and max pools with "
            f"jaxviz.models.modules.ReLU(rule=self.rules) and "
            f"jaxviz.models.modules.MaxPool2d(..., rule=self.rules) (or call "
            f"jaxviz.rules.relu(x, self.rules)); then model.clone(rules={rule!r}) selects "
            f"the rule.")
    return model.clone(rules=rule)


# --- ReLU ---------------------------------------------------------------------------


def _relu_forward(x: jax.Array) -> jax.Array:
    return jnp.maximum(x, jnp.zeros((), x.dtype))


@jax.custom_vjp
def deconvnet_relu(x: jax.Array) -> jax.Array:
    """ReLU whose backward pass sends ``relu(g)`` (Zeiler & Fergus 2014)."""
    return _relu_forward(x)


deconvnet_relu.defvjp(
    lambda x: (_relu_forward(x), None),
    lambda _, g: (_relu_forward(g),),
)


@jax.custom_vjp
def guided_relu(x: jax.Array) -> jax.Array:
    """ReLU whose backward pass sends ``1[x > 0] * relu(g)`` (Springenberg et al. 2014)."""
    return _relu_forward(x)


guided_relu.defvjp(
    lambda x: (_relu_forward(x), x > 0),
    lambda positive, g: (jnp.where(positive & (g > 0), g, jnp.zeros((), g.dtype)),),
)


@jax.custom_vjp
def linear_relu(x: jax.Array) -> jax.Array:
    """ReLU whose backward pass is the identity (expanded weights, Olah et al. 2020)."""
    return _relu_forward(x)


linear_relu.defvjp(lambda x: (_relu_forward(x), None), lambda _, g: (g,))


def relu(x: jax.Array, rule: str = "gradient") -> jax.Array:
    """``max(x, 0)`` with the backward pass of ``rule`` (see the module docstring).

    The ``gradient`` rule is ``jax.nn.relu``, whose derivative at 0 is 0, as in torch.
    """
    if rule == "gradient":
        return jax.nn.relu(x)
    if rule == "deconvnet":
        return deconvnet_relu(x)
    if rule == "guided":
        return guided_relu(x)
    if rule == "linear":
        return linear_relu(x)
    raise InputError(f"unknown backward rule {rule!r}; expected one of {', '.join(RULES)}")


# --- max pooling ----------------------------------------------------------------------

Padding = Sequence[tuple[int, int]]


def _window(window: Sequence[int], strides: Sequence[int], padding: Padding):
    dims = (1, *window, 1)
    steps = (1, *strides, 1)
    pads = ((0, 0), *((int(lo), int(hi)) for lo, hi in padding), (0, 0))
    return dims, steps, pads


def _max_pool(x, window, strides, padding):
    dims, steps, pads = _window(window, strides, padding)
    return lax.reduce_window(x, -jnp.inf, lax.max, dims, steps, pads)


def _window_slices(x, window, strides, padding, shape, fill):
    """For each offset ``(i, j)`` of the window, in row-major order: the (N, H', W', C)
    strided slice of the padded ``x`` holding the element at that offset of every window."""
    _, _, pads = _window(window, strides, padding)
    xp = jnp.pad(x, pads, constant_values=fill)
    n, ho, wo, c = shape
    for i in range(window[0]):
        for j in range(window[1]):
            limit = (n, i + strides[0] * (ho - 1) + 1, j + strides[1] * (wo - 1) + 1, c)
            yield lax.slice(xp, (0, i, j, 0), limit, (1, strides[0], strides[1], 1))


@functools.partial(jax.custom_jvp, nondiff_argnums=(1, 2, 3))
def _routed_max_pool(x, window, strides, padding):
    """Max pooling whose derivative routes each window's tangent from its first maximum
    in row-major order (torch's tie rule).

    Same values as the derivative of ``lax.reduce_window(max)``, written with masks over
    the window's strided slices, which XLA transposes into pads and selects that fuse,
    instead of the ``select_and_scatter`` that autodiff of the reduction produces: the
    backward pass of a max pool runs about 3x faster on CPU. With stride 1 (GoogLeNet's
    branch pools), where every input lies in ``kh * kw`` windows and each of the
    ``kh * kw`` padded copies is as large as the input, the derivative is instead one
    gather of the tangent at each window's winning position, which XLA transposes into
    one scatter-add: GoogLeNet's input gradient (8 images, 224 px, 2 CPU cores) compiled
    in 4.5 s instead of 5.5 and ran in 486 ms instead of 518, with the same values; with
    stride 2 (AlexNet, VGG) the padded copies stay faster. Forward- and reverse-mode both
    work (it is a ``custom_jvp``).
    """
    return _max_pool(x, window, strides, padding)


def _first_maxima(x, y, window, strides, padding):
    """For each offset of the window, in row-major order: the mask of the windows whose
    first maximum (``y``) sits at that offset. No mask is set where a window has no
    maximum (a NaN in it)."""
    taken = jnp.zeros(y.shape, bool)
    for xs in _window_slices(x, window, strides, padding, y.shape, -jnp.inf):
        first = (xs == y) & ~taken
        taken = taken | first
        yield first


@_routed_max_pool.defjvp
def _routed_max_pool_jvp(window, strides, padding, primals, tangents):
    (x,), (t,) = primals, tangents
    y = _max_pool(x, window, strides, padding)
    zero = jnp.zeros((), t.dtype)
    masks = _first_maxima(x, y, window, strides, padding)
    if strides != (1, 1):  # the masked slices; their transposes are the padded copies
        out = jnp.zeros(y.shape, t.dtype)
        for first, ts in zip(masks, _window_slices(t, window, strides, padding, y.shape, 0)):
            out = out + jnp.where(first, ts, zero)
        return y, out
    # stride 1: one gather at each window's winning position
    n, ho, wo, c = y.shape
    _, _, pads = _window(window, strides, padding)
    wp = x.shape[2] + pads[2][0] + pads[2][1]
    # the winner's row-major offset in the padded map; -1 where a window has no maximum
    offset = jnp.full(y.shape, -1, jnp.int32)
    for k, first in enumerate(masks):
        i, j = divmod(k, window[1])
        offset = jnp.where(first, i * wp + j, offset)
    corner = (np.arange(ho)[:, None] * wp + np.arange(wo)[None]).astype(np.int32)  # stride 1
    where = jnp.maximum(offset, 0) + corner[None, :, :, None]              # (N, H', W', C)
    flat = jnp.pad(t, pads).reshape(n, -1, c)
    picked = flat[np.arange(n)[:, None, None, None], where, np.arange(c)]
    return y, jnp.where(offset >= 0, picked, zero)  # a window with no maximum passes nothing


def _avg_pool_valid(x, window, strides, padding):
    """Average over the window's elements that lie inside the input (not the padding)."""
    dims, steps, pads = _window(window, strides, padding)
    total = lax.reduce_window(x, 0.0, lax.add, dims, steps, pads)
    ones = jnp.ones((1, *x.shape[1:3], 1), x.dtype)
    count = lax.reduce_window(ones, 0.0, lax.add, dims, steps, pads)
    return total / count


def max_pool(
    x: jax.Array,
    window: Sequence[int],
    strides: Sequence[int],
    padding: Padding,
    rule: str = "gradient",
) -> jax.Array:
    """Max pooling of ``x: (N, H, W, C)`` with explicit ``((lo, hi), (lo, hi))`` padding.

    Padded positions hold ``-inf`` and never win a window, as in torch. With
    ``rule="linear"`` the backward pass is that of the average pool over the same
    windows (each window's gradient shared equally among its elements that lie inside
    the input); every other rule routes the gradient to each window's maximum.

    Args:
      x: (N, H, W, C) input.
      window: (kh, kw).
      strides: (sh, sw).
      padding: ((top, bottom), (left, right)), already including any extra
        bottom/right padding that torch's ``ceil_mode`` implies.
      rule: a name in :data:`RULES`.

    Returns:
      (N, H', W', C) pooled array.
    """
    check_rule(rule)
    window, strides = tuple(window), tuple(strides)
    padding = tuple((int(lo), int(hi)) for lo, hi in padding)
    if rule != "linear":
        return _routed_max_pool(x, window, strides, padding)
    return _linear_max_pool(x, window, strides, padding)


def _linear_max_pool(x, window, strides, padding):
    @jax.custom_vjp
    def pool(x):
        return _max_pool(x, window, strides, padding)

    def fwd(x):
        return pool(x), x

    def bwd(x, g):
        _, vjp = jax.vjp(lambda t: _avg_pool_valid(t, window, strides, padding), x)
        return vjp(g)

    pool.defvjp(fwd, bwd)
    return pool(x)


# --- global max pooling -----------------------------------------------------------------


@jax.custom_jvp
def _routed_global_max(x):
    return x.max(axis=(1, 2))


@_routed_global_max.defjvp
def _routed_global_max_jvp(primals, tangents):
    (x,), (t,) = primals, tangents
    n, c = x.shape[0], x.shape[-1]
    first = jnp.argmax(x.reshape(n, -1, c), axis=1)  # the first maximum, row-major
    picked = jnp.take_along_axis(t.reshape(n, -1, c), first[:, None, :], axis=1)[:, 0]
    return x.max(axis=(1, 2)), picked


def global_max_pool(x: jax.Array, rule: str = "gradient") -> jax.Array:
    """The largest value of each channel of ``x: (N, H, W, C)`` over space: (N, C).

    Its derivative follows ``rule`` as :func:`max_pool`'s does with one window covering
    the map: to each channel's first maximum in row-major order (torch's max-pool tie
    rule), or under ``linear`` the global average pool's, ``g / (H W)`` everywhere.
    """
    check_rule(rule)
    if rule == "linear":  # max pooling with one window over the whole map
        h, w = x.shape[1:3]
        return _linear_max_pool(x, (h, w), (h, w), ((0, 0), (0, 0))).reshape(x.shape[0], -1)
    return _routed_global_max(x)

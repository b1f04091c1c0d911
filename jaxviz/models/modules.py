"""Flax Linen modules that mirror ``torch.nn`` layers, and the containers models use.

A model built from these modules has the module tree of its torchvision twin: the
Flax path of every layer is its torchvision module path split at the dots
(``features.10`` is ``('features', '10')``, ``inception4c.branch2.1.conv`` is
``('inception4c', 'branch2', '1', 'conv')``). So torch state_dict keys map to Flax
variables by name, and Linen's ``capture_intermediates`` sees every layer a torch
forward hook sees, under the same name.

Every module's ``__call__`` takes ``(x, *, train=False)``. ReLU and max pooling carry
a backward ``rule`` (see :mod:`jaxviz.rules`). Containers carry ``stop_at``, the
dotted path of a layer after which the forward pass returns (that layer's output):
used by :func:`jaxviz.activations` so that nothing past the last requested layer is
computed.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxviz import _random, rules as rules_lib
from jaxviz.models import layers
from jaxviz.errors import InputError

Initializer = Callable[..., jax.Array]


# --- initializers (torch's distributions, not its random streams) ---------------------


def torch_default_kernel_init(key, shape, dtype=jnp.float32):
    """torch's default for Conv2d and Linear: U(-1/sqrt(fan_in), 1/sqrt(fan_in))."""
    fan_in = int(np.prod(shape[:-1]))
    bound = 1.0 / np.sqrt(fan_in)
    return _random.uniform(key, shape, dtype, -bound, bound)


def torch_default_bias_init(fan_in: int) -> Initializer:
    """torch's default bias for Conv2d and Linear: U(-1/sqrt(fan_in), 1/sqrt(fan_in))."""
    bound = 1.0 / np.sqrt(fan_in)

    def init(key, shape, dtype=jnp.float32):
        return _random.uniform(key, shape, dtype, -bound, bound)

    return init


# --- leaves --------------------------------------------------------------------------------


class Conv2d(nn.Module):
    """``torch.nn.Conv2d`` in NHWC; ``kernel`` is (kh, kw, C_in, C_out)."""

    features: int
    kernel_size: layers.IntPair
    stride: layers.IntPair = 1
    padding: layers.IntPair = 0
    use_bias: bool = True
    kernel_init: Initializer = torch_default_kernel_init
    bias_init: Initializer | None = None

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool = False) -> jax.Array:
        kh, kw = layers.pair(self.kernel_size)
        fan_in = kh * kw * x.shape[-1]
        kernel = self.param("kernel", self.kernel_init, (kh, kw, x.shape[-1], self.features),
                            jnp.float32)
        bias = None
        if self.use_bias:
            init = self.bias_init or torch_default_bias_init(fan_in)
            bias = self.param("bias", init, (self.features,), jnp.float32)
        return layers.conv2d(x, kernel, bias, stride=self.stride, padding=self.padding)


class Linear(nn.Module):
    """``torch.nn.Linear``; ``kernel`` is (in, out)."""

    features: int
    use_bias: bool = True
    kernel_init: Initializer = torch_default_kernel_init
    bias_init: Initializer | None = None

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool = False) -> jax.Array:
        kernel = self.param("kernel", self.kernel_init, (x.shape[-1], self.features), jnp.float32)
        bias = None
        if self.use_bias:
            bias = self.param("bias", self.bias_init or torch_default_bias_init(x.shape[-1]),
                              (self.features,), jnp.float32)
        return layers.linear(x, kernel, bias)


class BatchNorm2d(nn.Module):
    """``torch.nn.BatchNorm2d``: ``scale``/``bias`` in params, ``mean``/``var`` in batch_stats.

    Inference uses the running statistics. With ``train=True`` it normalizes by the
    batch's mean and biased variance and, when ``batch_stats`` is mutable, updates the
    running statistics as torch does: ``(1 - momentum) * running + momentum * batch``,
    with the unbiased batch variance.
    """

    eps: float = 1e-5
    momentum: float = 0.1

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool = False) -> jax.Array:
        c = x.shape[-1]
        scale = self.param("scale", nn.initializers.ones, (c,), jnp.float32)
        bias = self.param("bias", nn.initializers.zeros, (c,), jnp.float32)
        ra_mean = self.variable("batch_stats", "mean", lambda: jnp.zeros((c,), jnp.float32))
        ra_var = self.variable("batch_stats", "var", lambda: jnp.ones((c,), jnp.float32))
        if not train:
            return layers.batch_norm(x, ra_mean.value, ra_var.value, scale, bias, self.eps)
        mean, var, n = layers.batch_statistics(x)
        if self.is_mutable_collection("batch_stats") and not self.is_initializing():
            m = self.momentum
            ra_mean.value = (1 - m) * ra_mean.value + m * mean
            ra_var.value = (1 - m) * ra_var.value + m * var * (n / max(n - 1, 1))
        return layers.batch_norm(x, mean, var, scale, bias, self.eps)


class ReLU(nn.Module):
    """``torch.nn.ReLU`` whose backward pass follows ``rule`` (:mod:`jaxviz.rules`)."""

    rule: str = "gradient"

    def __call__(self, x: jax.Array, *, train: bool = False) -> jax.Array:
        return rules_lib.relu(x, self.rule)


class MaxPool2d(nn.Module):
    """``torch.nn.MaxPool2d`` (``ceil_mode`` included) with a backward ``rule``."""

    kernel_size: layers.IntPair
    stride: layers.IntPair | None = None
    padding: layers.IntPair = 0
    ceil_mode: bool = False
    rule: str = "gradient"

    def __call__(self, x: jax.Array, *, train: bool = False) -> jax.Array:
        kernel = layers.pair(self.kernel_size)
        stride = layers.pair(self.stride if self.stride is not None else self.kernel_size)
        padding = layers.pair(self.padding)
        pads = [layers.pool_padding(n, k, s, p, self.ceil_mode)
                for n, k, s, p in zip(x.shape[1:3], kernel, stride, padding)]
        return rules_lib.max_pool(x, kernel, stride, pads, self.rule)


class AdaptiveAvgPool2d(nn.Module):
    """``torch.nn.AdaptiveAvgPool2d`` with torch's bin edges."""

    output_size: layers.IntPair

    def __call__(self, x: jax.Array, *, train: bool = False) -> jax.Array:
        return layers.adaptive_avg_pool2d(x, self.output_size)


class Dropout(nn.Module):
    """``torch.nn.Dropout``: the identity unless ``train=True`` (then needs a 'dropout' rng)."""

    rate: float = 0.5

    def __call__(self, x: jax.Array, *, train: bool = False) -> jax.Array:
        if not train or self.rate == 0.0:
            return x
        keep = _random.bernoulli(self.make_rng("dropout"), 1.0 - self.rate, x.shape)
        return jnp.where(keep, x / (1.0 - self.rate), jnp.zeros((), x.dtype))


class InputSpec(NamedTuple):
    """What a model takes as input (``model.input_spec()``).

    Attributes:
      kind: "image" for (N, H, W, C) batches, "vector" for (N, F) batches.
      channels: C for images, F for vectors.
      scale: "imagenet" (RGB normalized with ImageNet's mean and std,
        :func:`jaxviz.data.normalize`) or "unit" (values in [0, 1], as they come).
      size: the side the model is usually run at (None for vectors).
    """

    kind: str
    channels: int
    scale: str
    size: int | None = None

    def describe(self) -> str:
        """``(N, H, W, 3) ImageNet-normalized RGB images`` and the like, for messages."""
        if self.kind == "vector":
            return f"(N, {self.channels}) vectors"
        colour = {1: "grey", 3: "RGB"}.get(self.channels, f"{self.channels}-channel")
        scale = "ImageNet-normalized " if self.scale == "imagenet" else ""
        unit = " in [0, 1]" if self.scale == "unit" else ""
        return f"(N, H, W, {self.channels}) {scale}{colour} images{unit}"


IMAGENET_INPUT = InputSpec("image", 3, "imagenet", 224)


def input_spec(model: nn.Module) -> InputSpec | None:
    """What ``model`` takes: its ``input_spec()`` when it defines one (ours do); for a
    model with only an ``in_channels`` field, images with that many channels; else None
    (a user's model: nothing is assumed)."""
    method = getattr(model, "input_spec", None)
    if callable(method):
        return method()
    channels = getattr(model, "in_channels", None)
    if isinstance(channels, int):
        return InputSpec("image", channels, "unit")
    return None


def example_shape(model: nn.Module, size: int = 64) -> tuple[int, ...]:
    """The shape of a one-example input that initializes ``model``: (1, F) for a vector
    model, else (1, size, size, C) with the model's channels (3 when it does not say)."""
    spec = input_spec(model)
    if spec is not None and spec.kind == "vector":
        return (1, spec.channels)
    return (1, size, size, spec.channels if spec is not None else 3)


def flatten(x: jax.Array) -> jax.Array:
    """``torch.flatten(x, 1)`` in NHWC order: the features come out as (H, W, C).

    torch flattens (C, H, W); the port permutes the rows of the Linear layer that
    follows (see ``FLATTENED_INPUTS`` on each model), so no transpose runs here.
    """
    return x.reshape(x.shape[0], -1)


# --- containers ---------------------------------------------------------------------------

# A layer of a container: a module, called with ``train``, or a plain function of one
# array (torch's functional calls, such as the ReLU inside GoogLeNet's conv blocks),
# which has no name and cannot be captured, as in torch.
Layer = nn.Module | Callable[[jax.Array], jax.Array]


def reached(path: Sequence[str], stop_at: str | None) -> bool:
    """True when the layer at ``path`` is ``stop_at`` or contains it."""
    if stop_at is None:
        return False
    here = ".".join(path)
    return stop_at == here or stop_at.startswith(here + ".")


def run_layers(parent: nn.Module, named: Sequence[tuple[str | None, Layer]], x: Any, *,
               train: bool, stop_at: str | None) -> tuple[Any, bool]:
    """Runs ``named`` layers in order as children of ``parent``; stops at ``stop_at``.

    Must be called from a compact method of ``parent``. Child containers inherit
    ``stop_at``. Returns the last output and whether the stop layer was reached.
    """
    for name, layer in named:
        if name is None:
            x = layer(x)
            continue
        extra = {"stop_at": stop_at} if "stop_at" in getattr(layer, "__dataclass_fields__", {}) else {}
        x = layer.clone(parent=parent, name=name, **extra)(x, train=train)
        if reached((*parent.path, name), stop_at):
            return x, True
    return x, False


def _names(container) -> tuple[str | None, ...]:
    names = container.names or tuple(str(i) for i in range(len(container.layers)))
    if len(names) != len(container.layers):
        raise InputError(f"{type(container).__name__}: {len(container.layers)} layers but "
                         f"{len(names)} names")
    return tuple(names)


class Sequential(nn.Module):
    """``torch.nn.Sequential``: layers named '0', '1', ... unless ``names`` are given.

    A name of None marks a plain function (see :data:`Layer`).
    """

    layers: Sequence[Layer]
    names: Sequence[str | None] | None = None
    stop_at: str | None = None

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool = False) -> jax.Array:
        x, _ = run_layers(self, list(zip(_names(self), self.layers)), x, train=train,
                          stop_at=self.stop_at)
        return x


class Concat(nn.Module):
    """Runs each named branch on the same input; concatenates the outputs on channels."""

    layers: Sequence[nn.Module]
    names: Sequence[str] | None = None
    stop_at: str | None = None

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool = False) -> jax.Array:
        outputs = []
        for name, branch in zip(_names(self), self.layers):
            y, stopped = run_layers(self, [(name, branch)], x, train=train, stop_at=self.stop_at)
            if stopped:
                return y
            outputs.append(y)
        return jnp.concatenate(outputs, axis=-1)

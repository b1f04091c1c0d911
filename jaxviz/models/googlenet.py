"""GoogLeNet (Inception v1) as torchvision builds it.

Reference: Szegedy et al., "Going Deeper with Convolutions", CVPR 2015. torchvision's
version (kept here exactly) uses batch normalization (eps 1e-3) in every conv block,
a 3x3 convolution in the branch the paper calls "5x5", ceil-mode max pools, and, for
the ImageNet weights, ``transform_input`` (re-normalizing ImageNet-normalized input to
[-1, 1]).
"""

from __future__ import annotations

from functools import partial
from typing import ClassVar, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxviz import rules as rules_lib
from jaxviz.models import layers
from jaxviz.models.modules import (IMAGENET_INPUT, AdaptiveAvgPool2d, BatchNorm2d, Concat, Conv2d,
                                   Dropout, InputSpec, Linear, MaxPool2d, Sequential, flatten,
                                   run_layers)

_MEAN = (0.485, 0.456, 0.406)
_STD = (0.229, 0.224, 0.225)

# torchvision's GoogLeNet initialization: N(0, 0.01) truncated at +-2 (200 sigma, so
# in effect untruncated) for convolution and linear weights.
_weight_init = nn.initializers.normal(0.01)

# (1x1, 3x3 reduce, 3x3, "5x5" reduce, "5x5" (really 3x3), pool projection)
INCEPTIONS: dict[str, tuple[int, int, int, int, int, int]] = {
    "inception3a": (64, 96, 128, 16, 32, 32),
    "inception3b": (128, 128, 192, 32, 96, 64),
    "inception4a": (192, 96, 208, 16, 48, 64),
    "inception4b": (160, 112, 224, 24, 64, 64),
    "inception4c": (128, 128, 256, 24, 64, 64),
    "inception4d": (112, 144, 288, 32, 64, 64),
    "inception4e": (256, 160, 320, 32, 128, 128),
    "inception5a": (256, 160, 320, 32, 128, 128),
    "inception5b": (384, 192, 384, 48, 128, 128),
}


class GoogLeNetOutputs(NamedTuple):
    """What GoogLeNet returns with ``train=True`` and aux heads (torchvision's order)."""

    logits: jax.Array
    aux_logits2: jax.Array
    aux_logits1: jax.Array


class BasicConv2d(Sequential):
    """Convolution without bias, BatchNorm (eps 1e-3), then a functional ReLU."""


class Inception(Concat):
    """Four branches concatenated on channels: 1x1 | 1x1-3x3 | 1x1-3x3 | pool-1x1."""


def basic_conv2d(features: int, kernel_size: int, rule: str, *, stride: int = 1,
                 padding: int = 0) -> BasicConv2d:
    """torchvision's ``BasicConv2d``: ``relu(bn(conv(x)))``, children 'conv' and 'bn'."""
    conv = Conv2d(features, kernel_size, stride=stride, padding=padding, use_bias=False,
                  kernel_init=_weight_init)
    return BasicConv2d([conv, BatchNorm2d(eps=1e-3), partial(rules_lib.relu, rule=rule)],
                       names=("conv", "bn", None))


def inception(ch1x1: int, ch3x3red: int, ch3x3: int, ch5x5red: int, ch5x5: int, pool_proj: int,
              rule: str) -> Inception:
    """torchvision's ``Inception`` block; branch3 is 3x3, as in torchvision."""
    return Inception(
        [
            basic_conv2d(ch1x1, 1, rule),
            Sequential([basic_conv2d(ch3x3red, 1, rule), basic_conv2d(ch3x3, 3, rule, padding=1)]),
            Sequential([basic_conv2d(ch5x5red, 1, rule), basic_conv2d(ch5x5, 3, rule, padding=1)]),
            Sequential([MaxPool2d(3, 1, padding=1, ceil_mode=True, rule=rule),
                        basic_conv2d(pool_proj, 1, rule)]),
        ],
        names=("branch1", "branch2", "branch3", "branch4"),
    )


class InceptionAux(nn.Module):
    """Auxiliary classifier: pool to 4x4, 1x1 conv to 128, fc1 1024, ReLU, dropout, fc2."""

    num_classes: int = 1000
    dropout: float = 0.7
    rules: str = "gradient"
    stop_at: str | None = None

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool = False) -> jax.Array:
        x = layers.adaptive_avg_pool2d(x, 4)
        y, _ = run_layers(self, [
            ("conv", basic_conv2d(128, 1, self.rules)), (None, flatten),
            ("fc1", Linear(1024, kernel_init=_weight_init)), (None, partial(rules_lib.relu, rule=self.rules)),
            ("dropout", Dropout(self.dropout)),
            ("fc2", Linear(self.num_classes, kernel_init=_weight_init)),
        ], x, train=train, stop_at=self.stop_at)
        return y


def transform_input(x: jax.Array) -> jax.Array:
    """Maps ImageNet-normalized input to the [-1, 1] scaling GoogLeNet's weights expect.

    Per channel ``c``: ``x * std_c / 0.5 + (mean_c - 0.5) / 0.5``.
    """
    std = jnp.asarray(_STD, x.dtype)
    mean = jnp.asarray(_MEAN, x.dtype)
    return x * (std / 0.5) + (mean - 0.5) / 0.5


class GoogLeNet(nn.Module):
    """torchvision's ``GoogLeNet`` in NHWC, module for module.

    Attributes:
      num_classes: size of the last Linear layer (and of the aux heads).
      aux_logits: whether the two auxiliary heads exist. They run only with
        ``train=True`` (then the output is :class:`GoogLeNetOutputs`), as in torch.
      transform_input: re-normalize the input first (True for the ImageNet weights).
      dropout, dropout_aux: dropout rates (active only with ``train=True``).
      rules: backward rule of every ReLU and max pool, the ReLUs inside the conv
        blocks included (:mod:`jaxviz.rules`).
      stop_at: dotted layer path after which the forward pass returns.
    """

    num_classes: int = 1000
    aux_logits: bool = True
    transform_input: bool = False
    dropout: float = 0.2
    dropout_aux: float = 0.7
    rules: str = "gradient"
    stop_at: str | None = None

    FLATTENED_INPUTS: ClassVar[dict[str, tuple[int, int, int]]] = {
        "aux1.fc1": (4, 4, 128), "aux2.fc1": (4, 4, 128)}

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool = False):
        r = self.rules
        if self.transform_input:
            x = transform_input(x)
        pool = partial(MaxPool2d, ceil_mode=True, rule=r)
        blocks = {name: inception(*channels, r) for name, channels in INCEPTIONS.items()}
        segments = [
            [("conv1", basic_conv2d(64, 7, r, stride=2, padding=3)), ("maxpool1", pool(3, 2)),
             ("conv2", basic_conv2d(64, 1, r)), ("conv3", basic_conv2d(192, 3, r, padding=1)),
             ("maxpool2", pool(3, 2)), ("inception3a", blocks["inception3a"]),
             ("inception3b", blocks["inception3b"]), ("maxpool3", pool(3, 2)),
             ("inception4a", blocks["inception4a"])],
            [("inception4b", blocks["inception4b"]), ("inception4c", blocks["inception4c"]),
             ("inception4d", blocks["inception4d"])],
            [("inception4e", blocks["inception4e"]), ("maxpool4", pool(2, 2)),
             ("inception5a", blocks["inception5a"]), ("inception5b", blocks["inception5b"]),
             ("avgpool", AdaptiveAvgPool2d(1)), (None, flatten), ("dropout", Dropout(self.dropout)),
             ("fc", Linear(self.num_classes, kernel_init=_weight_init))],
        ]
        # The aux heads run in training; their parameters are also made at init.
        run_aux = self.aux_logits and (train or self.is_initializing())
        aux = []
        for segment, head in zip(segments, ("aux1", "aux2", None)):
            x, stopped = run_layers(self, segment, x, train=train, stop_at=self.stop_at)
            if stopped:
                return x
            if head and run_aux:
                module = InceptionAux(self.num_classes, self.dropout_aux, r)
                aux.append(run_layers(self, [(head, module)], x, train=train, stop_at=None)[0])
        if train and self.aux_logits:
            return GoogLeNetOutputs(x, aux[1], aux[0])
        return x

    def input_spec(self) -> InputSpec:
        """(N, H, W, 3) ImageNet-normalized RGB images, usually 224 px."""
        return IMAGENET_INPUT

    def aliases(self) -> dict[str, str]:
        """GoogLeNet's torchvision names are already friendly; ``logits`` is ``fc``."""
        return {"logits": "fc"}

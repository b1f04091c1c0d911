"""VGG 11/13/16/19, with and without batch normalization, as torchvision builds them.

Reference: Simonyan & Zisserman, "Very Deep Convolutional Networks for Large-Scale
Image Recognition", ICLR 2015 (configurations A, B, D, E).
"""

from __future__ import annotations

from typing import ClassVar

import flax.linen as nn
import jax

from jaxviz.models.modules import (IMAGENET_INPUT, AdaptiveAvgPool2d, BatchNorm2d, Conv2d, Dropout,
                                   InputSpec, Linear, MaxPool2d, ReLU, Sequential, flatten,
                                   run_layers)

from jaxviz.errors import InputError

# Output channels of each 3x3 convolution; "M" is a 2x2 max pool with stride 2.
CONFIGS: dict[str, tuple[int | str, ...]] = {
    "A": (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"),
    "B": (64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"),
    "D": (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M",
          512, 512, 512, "M"),
    "E": (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M",
          512, 512, 512, 512, "M"),
}
DEPTHS = {"A": 11, "B": 13, "D": 16, "E": 19}

# torchvision's VGG initialization: He normal (fan out) convolutions, N(0, 0.01) linears.
_conv_init = nn.initializers.variance_scaling(2.0, "fan_out", "normal")
_linear_init = nn.initializers.normal(0.01)
_zeros = nn.initializers.zeros


class VGG(nn.Module):
    """torchvision's ``VGG`` in NHWC, module for module.

    Attributes:
      config: "A" (VGG11), "B" (VGG13), "D" (VGG16) or "E" (VGG19).
      batch_norm: BatchNorm2d after every convolution (the ``_bn`` variants).
      num_classes: size of the last Linear layer.
      dropout: dropout rate of the classifier (active only with ``train=True``).
      rules: backward rule of every ReLU and max pool (:mod:`jaxviz.rules`).
      stop_at: dotted layer path after which the forward pass returns.
    """

    config: str = "D"
    batch_norm: bool = False
    num_classes: int = 1000
    dropout: float = 0.5
    rules: str = "gradient"
    stop_at: str | None = None

    FLATTENED_INPUTS: ClassVar[dict[str, tuple[int, int, int]]] = {"classifier.0": (7, 7, 512)}

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool = False) -> jax.Array:
        r = self.rules
        if self.config not in CONFIGS:
            raise InputError(f"unknown VGG config {self.config!r}; expected one of {sorted(CONFIGS)}")
        features = []
        for v in CONFIGS[self.config]:
            if v == "M":
                features.append(MaxPool2d(2, 2, rule=r))
                continue
            features.append(Conv2d(v, 3, padding=1, kernel_init=_conv_init, bias_init=_zeros))
            if self.batch_norm:
                features.append(BatchNorm2d())
            features.append(ReLU(r))
        classifier = [
            Linear(4096, kernel_init=_linear_init, bias_init=_zeros), ReLU(r), Dropout(self.dropout),
            Linear(4096, kernel_init=_linear_init, bias_init=_zeros), ReLU(r), Dropout(self.dropout),
            Linear(self.num_classes, kernel_init=_linear_init, bias_init=_zeros),
        ]
        y, _ = run_layers(self, [("features", Sequential(features)), ("avgpool", AdaptiveAvgPool2d(7)),
                                 (None, flatten), ("classifier", Sequential(classifier))],
                          x, train=train, stop_at=self.stop_at)
        return y

    def input_spec(self) -> InputSpec:
        """(N, H, W, 3) ImageNet-normalized RGB images, usually 224 px."""
        return IMAGENET_INPUT

    def aliases(self) -> dict[str, str]:
        """``conv{block}_{i}``, ``bn{block}_{i}``, ``relu{block}_{i}``, ``pool{block}``, ``fc6..8``."""
        names, index, block, i = {}, 0, 1, 1
        for v in CONFIGS[self.config]:
            if v == "M":
                names[f"pool{block}"] = f"features.{index}"
                index, block, i = index + 1, block + 1, 1
                continue
            kinds = ("conv", "bn", "relu") if self.batch_norm else ("conv", "relu")
            for kind in kinds:
                names[f"{kind}{block}_{i}"] = f"features.{index}"
                index += 1
            i += 1
        names.update({
            "fc6": "classifier.0", "relu6": "classifier.1", "drop6": "classifier.2",
            "fc7": "classifier.3", "relu7": "classifier.4", "drop7": "classifier.5",
            "fc8": "classifier.6", "logits": "classifier.6",
        })
        return names

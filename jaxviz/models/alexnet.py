"""AlexNet as torchvision builds it (the "one weird trick" variant, 64-192-384-256-256).

Reference: Krizhevsky, "One weird trick for parallelizing convolutional neural
networks", arXiv:1404.5997, 2014 (torchvision's ``alexnet``).
"""

from __future__ import annotations

from typing import ClassVar

import flax.linen as nn
import jax

from jaxviz.models.modules import (IMAGENET_INPUT, AdaptiveAvgPool2d, Conv2d, Dropout, InputSpec,
                                   Linear, MaxPool2d, ReLU, Sequential, flatten, run_layers)


class AlexNet(nn.Module):
    """torchvision's ``AlexNet`` in NHWC, module for module.

    Attributes:
      num_classes: size of the last Linear layer.
      dropout: dropout rate of the classifier (active only with ``train=True``).
      rules: backward rule of every ReLU and max pool (:mod:`jaxviz.rules`).
      stop_at: dotted layer path after which the forward pass returns.
    """

    num_classes: int = 1000
    dropout: float = 0.5
    rules: str = "gradient"
    stop_at: str | None = None

    # Linear layers whose input is a flattened (H, W, C) map: the port permutes their
    # rows from torch's (C, H, W) order.
    FLATTENED_INPUTS: ClassVar[dict[str, tuple[int, int, int]]] = {"classifier.1": (6, 6, 256)}

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool = False) -> jax.Array:
        r = self.rules
        features = Sequential([
            Conv2d(64, 11, stride=4, padding=2), ReLU(r), MaxPool2d(3, 2, rule=r),
            Conv2d(192, 5, padding=2), ReLU(r), MaxPool2d(3, 2, rule=r),
            Conv2d(384, 3, padding=1), ReLU(r),
            Conv2d(256, 3, padding=1), ReLU(r),
            Conv2d(256, 3, padding=1), ReLU(r), MaxPool2d(3, 2, rule=r),
        ])
        classifier = Sequential([
            Dropout(self.dropout), Linear(4096), ReLU(r),
            Dropout(self.dropout), Linear(4096), ReLU(r),
            Linear(self.num_classes),
        ])
        y, _ = run_layers(self, [("features", features), ("avgpool", AdaptiveAvgPool2d(6)),
                                 (None, flatten), ("classifier", classifier)],
                          x, train=train, stop_at=self.stop_at)
        return y

    def input_spec(self) -> InputSpec:
        """(N, H, W, 3) ImageNet-normalized RGB images, usually 224 px."""
        return IMAGENET_INPUT

    def aliases(self) -> dict[str, str]:
        """Friendly layer names (Caffe's) mapped to torchvision paths."""
        names = {}
        for i, (conv, relu) in enumerate([(0, 1), (3, 4), (6, 7), (8, 9), (10, 11)], 1):
            names[f"conv{i}"] = f"features.{conv}"
            names[f"relu{i}"] = f"features.{relu}"
        for i, pool in enumerate([2, 5, 12], 1):
            names[f"pool{i}"] = f"features.{pool}"
        names.update({
            "drop6": "classifier.0", "fc6": "classifier.1", "relu6": "classifier.2",
            "drop7": "classifier.3", "fc7": "classifier.4", "relu7": "classifier.5",
            "fc8": "classifier.6", "logits": "classifier.6",
        })
        return names

"""Small models the project trains itself: a LeNet-style digit classifier and a 2-D MLP.

Same conventions as the ported models: NHWC, layers named by path with friendly
aliases, ReLUs and max pools that follow a backward rule (``model.clone(rules=...)``),
``stop_at`` to end the forward pass at a layer.

References:
  LeCun et al., "Gradient-based learning applied to document recognition", Proc. IEEE
  1998 (LeNet). Lin, Chen & Yan, "Network in Network", 2014 (global pooling before the
  classifier, so the network accepts larger canvases than it was trained on).
"""

from __future__ import annotations

import flax.linen as nn
import jax

from jaxviz import rules as rules_lib
from jaxviz.models.modules import (Conv2d, InputSpec, Linear, MaxPool2d, ReLU, Sequential,
                                   run_layers)


class GlobalMaxPool(nn.Module):
    """The largest value of each channel over space: (N, H, W, C) -> (N, C), with a
    backward ``rule`` like every max pool (:func:`jaxviz.rules.global_max_pool`)."""

    rule: str = "gradient"

    def __call__(self, x: jax.Array, *, train: bool = False) -> jax.Array:
        return rules_lib.global_max_pool(x, self.rule)


class LeNet(nn.Module):
    """Three 5x5/5x5/3x3 convolutions with ReLU, two 2x2 max pools, global max pooling and
    one linear layer; grayscale input (N, H, W, 1) in [0, 1], any H, W >= 4. Global max
    pooling makes the logits of a digit the same wherever it sits on a larger blank
    canvas (up to the border effects of the first layers).

    Attributes:
      num_classes: outputs of the last layer.
      in_channels: input channels (1: grayscale).
      width: channels of the first convolution (then 2x and 4x).
      rules: backward rule of every ReLU and max pool.
      stop_at: dotted layer path after which the forward pass returns.
    """

    num_classes: int = 10
    in_channels: int = 1
    width: int = 16
    rules: str = "gradient"
    stop_at: str | None = None

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool = False) -> jax.Array:
        r, c = self.rules, self.width
        features = Sequential([
            Conv2d(c, 5, padding=2), ReLU(r), MaxPool2d(2, 2, rule=r),
            Conv2d(2 * c, 5, padding=2), ReLU(r), MaxPool2d(2, 2, rule=r),
            Conv2d(4 * c, 3, padding=1), ReLU(r),
        ])
        y, _ = run_layers(self, [("features", features), ("pool", GlobalMaxPool(r)),
                                 ("classifier", Linear(self.num_classes))],
                          x, train=train, stop_at=self.stop_at)
        return y

    def input_spec(self) -> InputSpec:
        """(N, H, W, 1) grey images in [0, 1] (28 px digits; any canvas of 4 px or more)."""
        return InputSpec("image", self.in_channels, "unit", 28)

    def aliases(self) -> dict[str, str]:
        """conv1..3, relu1..3, pool1..2, gmp (global max pool), logits."""
        names = {}
        for i, (conv, relu) in enumerate([(0, 1), (3, 4), (6, 7)], 1):
            names[f"conv{i}"] = f"features.{conv}"
            names[f"relu{i}"] = f"features.{relu}"
        names.update({"pool1": "features.2", "pool2": "features.5", "gmp": "pool",
                      "logits": "classifier"})
        return names


class MLP2d(nn.Module):
    """``x (N, 2) -> Linear(hidden) -> ReLU -> Linear(classes)``: each hidden unit is a
    line ``w . x + b = 0`` in the plane.

    Attributes:
      hidden: number of hidden units.
      num_classes: outputs.
      rules: backward rule of the ReLU.
      stop_at: dotted layer path after which the forward pass returns.
    """

    hidden: int = 8
    num_classes: int = 2
    in_channels: int = 2
    rules: str = "gradient"
    stop_at: str | None = None

    def input_spec(self) -> InputSpec:
        """Points in the plane: (N, 2) vectors (``in_channels`` of them)."""
        return InputSpec("vector", self.in_channels, "unit")

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool = False) -> jax.Array:
        y, _ = run_layers(self, [("hidden", Linear(self.hidden)), ("relu", ReLU(self.rules)),
                                 ("out", Linear(self.num_classes))],
                          x, train=train, stop_at=self.stop_at)
        return y


__all__ = ["LeNet", "MLP2d"]

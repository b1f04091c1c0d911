"""Architecture names and the models they build.

``create("vgg16_bn")`` returns the Flax module; configuration overrides go through as
keyword arguments (``create("googlenet", transform_input=True)``).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

import flax.linen as nn

from jaxviz.models.alexnet import AlexNet
from jaxviz.models.googlenet import GoogLeNet
from jaxviz.models.vgg import VGG

ARCHITECTURES: dict[str, Callable[..., nn.Module]] = {
    "alexnet": AlexNet,
    "vgg11": partial(VGG, config="A"),
    "vgg11_bn": partial(VGG, config="A", batch_norm=True),
    "vgg13": partial(VGG, config="B"),
    "vgg13_bn": partial(VGG, config="B", batch_norm=True),
    "vgg16": partial(VGG, config="D"),
    "vgg16_bn": partial(VGG, config="D", batch_norm=True),
    "vgg19": partial(VGG, config="E"),
    "vgg19_bn": partial(VGG, config="E", batch_norm=True),
    "googlenet": GoogLeNet,
}


def check_name(name: str) -> str:
    """Returns ``name`` if it is an architecture; raises ``ValueError`` listing them otherwise."""
    if name not in ARCHITECTURES:
        import difflib

        close = difflib.get_close_matches(str(name), ARCHITECTURES, n=3)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise ValueError(f"unknown architecture {name!r}; expected one of "
                         f"{', '.join(ARCHITECTURES)}.{hint}")
    return name


def create(name: str, **config: Any) -> nn.Module:
    """The Flax module for architecture ``name`` with ``config`` overrides."""
    return ARCHITECTURES[check_name(name)](**config)


def architecture_of(model: nn.Module) -> str | None:
    """The registry name of ``model`` ("vgg16_bn"), or None for a model not built here."""
    if isinstance(model, AlexNet):
        return "alexnet"
    if isinstance(model, GoogLeNet):
        return "googlenet"
    if isinstance(model, VGG):
        from jaxviz.models.vgg import DEPTHS

        return f"vgg{DEPTHS[model.config]}" + ("_bn" if model.batch_norm else "")
    return None

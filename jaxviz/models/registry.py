"""Architecture names and the models they build.

``create("vgg16_bn")`` returns the Flax module; configuration overrides go through as
keyword arguments (``create("googlenet", transform_input=True)``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from functools import partial
from typing import Any

import flax.linen as nn

from jaxviz.errors import InputError, InputTypeError
from jaxviz.models.alexnet import AlexNet
from jaxviz.models.googlenet import GoogLeNet
from jaxviz.models.small import MLP2d, LeNet
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
    "lenet": LeNet,
    "mlp2d": MLP2d,
}


def _bundled(filename: str, architecture: str):
    def locate() -> tuple[str, Any]:
        from importlib.resources import files

        return architecture, str(files("jaxviz") / "assets" / filename)

    return locate


# Trained models shipped inside the package: name -> () -> (architecture, weight file).
BUNDLED: dict[str, Callable[[], tuple[str, Any]]] = {
    "lenet_digits": _bundled("lenet_digits.safetensors", "lenet"),
}


# The architectures ported from torchvision (weights_port converts their state_dicts).
TORCHVISION_ARCHITECTURES: tuple[str, ...] = (
    "alexnet", "vgg11", "vgg11_bn", "vgg13", "vgg13_bn", "vgg16", "vgg16_bn", "vgg19",
    "vgg19_bn", "googlenet")


def check_name(name: str, among: Any = None) -> str:
    """Returns ``name`` if it is an architecture (of ``among``, default all); raises
    :class:`~jaxviz.errors.InputError` (a ``ValueError``) listing them otherwise."""
    among = tuple(ARCHITECTURES if among is None else among)
    if name not in among:
        import difflib

        close = difflib.get_close_matches(str(name), among, n=3, cutoff=0.75)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise InputError(f"unknown model {name!r}; expected one of "
                         f"{', '.join(among)}.{hint}")
    return name


# Fields of every model that choose how it runs, not what it is.
_RUN_FIELDS = ("parent", "name")


def check_config(name: str, config: dict[str, Any]) -> None:
    """Raises :class:`~jaxviz.errors.InputTypeError` for a configuration field that
    architecture ``name`` does not have, listing the fields it does."""
    fields = ARCHITECTURES[name]
    while isinstance(fields, partial):
        fields = fields.func
    known = [f.name for f in dataclasses.fields(fields) if f.name not in _RUN_FIELDS]
    unknown = sorted(set(config) - set(known))
    if unknown:
        raise InputTypeError(f"{name} has no configuration field{'s' * (len(unknown) > 1)} "
                             f"{', '.join(unknown)}; its fields are {', '.join(known)}")


def create(name: str, **config: Any) -> nn.Module:
    """The Flax module for architecture ``name`` with ``config`` overrides."""
    return ARCHITECTURES[check_name(name)](**config)


def architecture_of(model: nn.Module) -> str | None:
    """The registry name of ``model`` ("vgg16_bn"), or None for a model not built here."""
    if isinstance(model, AlexNet):
        return "alexnet"
    if isinstance(model, GoogLeNet):
        return "googlenet"
    if isinstance(model, LeNet):
        return "lenet"
    if isinstance(model, MLP2d):
        return "mlp2d"
    if isinstance(model, VGG):
        from jaxviz.models.vgg import DEPTHS

        return f"vgg{DEPTHS[model.config]}" + ("_bn" if model.batch_norm else "")
    return None

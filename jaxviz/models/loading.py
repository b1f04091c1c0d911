"""``jaxviz.load``: a model and its variables from random, torchvision's or a file's weights."""

from __future__ import annotations

import functools
import json
import numbers
import os
from pathlib import Path
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxviz.models.modules import example_shape
from jaxviz.errors import InputTypeError
from jaxviz.models.registry import ARCHITECTURES, BUNDLED, check_config, check_name, create
from jaxviz.models.weights import WeightsError, check_variables, load_weights

TORCH_SUFFIXES = (".pth", ".pt", ".bin", ".ckpt")
INIT_SIZE = 64  # every architecture accepts 64x64; parameter shapes do not depend on it


def _weights_port(why: str):
    try:
        import weights_port
    except ImportError as e:
        raise ImportError(f"{why} needs torch and torchvision (pip install 'jaxviz[torch]'): {e}") from e
    return weights_port


def _is_safetensors(path: Path) -> bool:
    if path.suffix == ".safetensors":
        return True
    if path.suffix in TORCH_SUFFIXES:
        return False
    with open(path, "rb") as f:  # safetensors: 8-byte little-endian header length, then '{'
        head = f.read(9)
    return len(head) == 9 and head[8:9] == b"{"


@functools.partial(jax.jit, static_argnums=(0, 2))
def _random_variables(model: nn.Module, key: jax.Array, shape: tuple[int, ...]) -> Any:
    # One compiled program per architecture and configuration, kept for later calls: XLA
    # drops the forward pass, which only fixes the shapes. (Eagerly, every operation of
    # the forward would be compiled on its own: 4x slower.)
    return model.init(key, jnp.zeros(shape))


def load(name: str, weights: str | os.PathLike | None = None, *, seed: int = 0,
         **config: Any) -> tuple[nn.Module, dict[str, Any]]:
    """Builds architecture ``name`` and its variables.

    Args:
      name: one of :data:`jaxviz.models.ARCHITECTURES` ("alexnet", "vgg16_bn", "googlenet",
        "lenet", "mlp2d", ...), or a bundled trained model ("lenet_digits": LeNet trained on
        scikit-learn's handwritten digits, loaded from the package, no network or torch).
      weights: None for seeded random weights (torchvision's initialization
        distributions); "DEFAULT" for torchvision's ImageNet weights (downloaded and
        cached by torchvision; needs torch); or a path: a ``.safetensors`` file written
        by :func:`weights_port.save_weights` (no torch needed) or a torch state_dict
        (``.pth``/``.pt``, read with ``torch.load(weights_only=True)``).
      seed: seed of the random weights.
      **config: model configuration overrides, e.g. ``num_classes=10`` or, for a
        GoogLeNet state_dict saved from torchvision's ImageNet model,
        ``transform_input=True`` (a ``.pth`` cannot record it; our safetensors files do).

    Returns:
      ``(model, variables)``; ``model.apply(variables, x)`` maps (N, H, W, 3)
      ImageNet-normalized images to logits.

    Raises:
      InputError: unknown name (a ``ValueError``; the message lists the names).
      InputTypeError: ``weights`` or ``seed`` of the wrong type, or a configuration
        field the architecture does not have.
      FileNotFoundError: no file at ``weights``.
      jaxviz.models.weights.WeightsError: the file does not fit the architecture, is
        truncated or corrupt, or holds objects other than tensors.
      RuntimeError: "DEFAULT" could not be downloaded.
    """
    if not isinstance(name, str):
        raise InputTypeError(f"expected a model name (a str such as 'alexnet'), got "
                             f"{type(name).__name__}")
    check_name(name, (*ARCHITECTURES, *BUNDLED))
    if name in BUNDLED:
        architecture, bundled = BUNDLED[name]()
        name, weights = architecture, (bundled if weights is None else weights)
    if weights is not None and not isinstance(weights, (str, os.PathLike)):
        raise InputTypeError(f"expected weights as None (random), 'DEFAULT' or a file path, got "
                             f"{type(weights).__name__} {weights!r}")
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
        raise InputTypeError(f"expected seed as an int, got {type(seed).__name__} {seed!r}")
    check_config(name, config)
    if weights is None:
        model = create(name, **config)
        variables = _random_variables(model, jax.random.key(seed), example_shape(model, INIT_SIZE))
        return model, dict(variables)
    if isinstance(weights, str) and weights == "DEFAULT":
        return _weights_port("weights='DEFAULT'").load_pretrained(name, **config)
    path = Path(weights)
    if not path.is_file():
        raise FileNotFoundError(f"no weight file at {str(path)!r} (weights= takes None, 'DEFAULT' "
                                f"or the path of a .safetensors or .pth file)")
    if not _is_safetensors(path):
        return _weights_port(f"reading {path.name}").load_pth(name, path, **config)
    variables, metadata = load_weights(path)
    stored = metadata.get("architecture")
    if stored and stored != name:
        raise WeightsError(f"{str(path)!r} holds {stored} weights, not {name}")
    model = create(name, **{**json.loads(metadata.get("config", "{}")), **config})
    check_variables(model, variables, source=f"weights in {str(path)!r}")
    return model, variables

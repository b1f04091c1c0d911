"""``jaxviz.load``: a model and its variables from random, torchvision's or a file's weights."""

from __future__ import annotations

import functools
import json
import numbers
import os
import zlib
from pathlib import Path
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxviz.models import googlenet, modules, vgg
from jaxviz.models.modules import example_shape
from jaxviz._host import to_device
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


# Seeded random weights are drawn with numpy, leaf by leaf, from the distributions of
# the modules' initializers (torchvision's), not by ``model.init``: XLA takes 5-20 s on
# CPU to compile an init program (every parameter's threefry draw is code of its own),
# numpy a fraction of a second for the largest model. Each initializer a model uses is
# listed here: (kind, parameter) of a draw for a leaf of shape ``shape``.
def _uniform_fan_in(shape):  # torch's default: U(-1/sqrt(fan_in), 1/sqrt(fan_in))
    return "uniform", 1.0 / np.sqrt(np.prod(shape[:-1]))


def _he_normal_fan_out(shape):  # variance_scaling(2, "fan_out", "normal"), (kh, kw, in, out)
    return "normal", np.sqrt(2.0 / (np.prod(shape[:-2]) * shape[-1]))


INITIALIZERS = {
    modules.torch_default_kernel_init: _uniform_fan_in,
    googlenet._weight_init: lambda shape: ("normal", 0.01),
    vgg._linear_init: lambda shape: ("normal", 0.01),
    vgg._conv_init: _he_normal_fan_out,
    nn.initializers.zeros: lambda shape: ("constant", 0.0),
    nn.initializers.ones: lambda shape: ("constant", 1.0),
}


def _leaf_draw(module: nn.Module, collection: str, name: str, shape: tuple[int, ...],
               kernel_shape: tuple[int, ...] | None) -> tuple[str, float]:
    """How leaf ``collection/<module path>/name`` of ``module`` is drawn."""
    if isinstance(module, modules.BatchNorm2d):  # scale 1, bias 0, running mean 0, var 1
        return "constant", float(name in ("scale", "var"))
    if isinstance(module, (modules.Conv2d, modules.Linear)) and collection == "params":
        if name == "kernel" and module.kernel_init in INITIALIZERS:
            return INITIALIZERS[module.kernel_init](shape)
        if name == "bias" and module.bias_init is None:  # torch's default, fan_in of the kernel
            return _uniform_fan_in(kernel_shape)
        if name == "bias" and module.bias_init in INITIALIZERS:
            return INITIALIZERS[module.bias_init](shape)
    raise NotImplementedError(
        f"no random draw for {collection}/{'/'.join(module.path)}/{name} of "
        f"{type(module).__name__}: add its initializer to jaxviz.models.loading.INITIALIZERS")


@functools.lru_cache(maxsize=64)
def _plan(model: nn.Module, shape: tuple[int, ...]):
    """The variables' tree structure and, per leaf: path, shape, dtype and draw. From
    ``model.init`` traced on shapes only (``jax.eval_shape``), its modules recorded."""
    found: dict[tuple[str, ...], nn.Module] = {}

    def record(call, args, kwargs, context):
        found.setdefault(tuple(context.module.path), context.module)
        return call(*args, **kwargs)

    with nn.intercept_methods(record):
        shapes = jax.eval_shape(model.init, jax.random.key(0),
                                jax.ShapeDtypeStruct(shape, jnp.float32))
    flat, treedef = jax.tree_util.tree_flatten_with_path(shapes)
    leaves = {tuple(k.key for k in path): leaf for path, leaf in flat}
    plan = []
    for path, leaf in leaves.items():
        collection, module_path, name = path[0], path[1:-1], path[-1]
        kernel = leaves.get((collection, *module_path, "kernel"))
        draw = _leaf_draw(found[module_path], collection, name, leaf.shape,
                          None if kernel is None else kernel.shape)
        plan.append(("/".join(path), leaf.shape, leaf.dtype, draw))
    return treedef, tuple(plan)


def _draw(rng: np.random.Generator, kind: str, parameter: float,
          shape: tuple[int, ...]) -> np.ndarray:
    """A float32 draw: ``parameter`` everywhere, U(-parameter, parameter) or N(0, parameter^2)."""
    if kind == "constant":
        return np.full(shape, parameter, np.float32)
    if kind == "uniform":
        a = rng.random(shape, dtype=np.float32) * np.float32(2 * parameter)
        a -= np.float32(parameter)
        return a
    a = rng.standard_normal(shape, dtype=np.float32)
    a *= np.float32(parameter)
    return a


def random_variables(model: nn.Module, seed: int, shape: tuple[int, ...]) -> Any:
    """Seeded random variables of ``model`` (input shape ``shape``) with its initializers'
    distributions. Each leaf has its own numpy stream, seeded by ``seed`` and the leaf's
    path, so a leaf's values do not depend on the other leaves (another ``num_classes``
    changes only the classifier)."""
    treedef, plan = _plan(model, tuple(shape))
    values = []
    for path, leaf_shape, dtype, (kind, parameter) in plan:
        rng = np.random.default_rng([int(seed < 0), abs(seed), zlib.crc32(path.encode())])
        values.append(to_device(_draw(rng, kind, parameter, leaf_shape).astype(dtype, copy=False),
                                copy=False))
    return jax.tree_util.tree_unflatten(treedef, values)


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
      seed: seed of the random weights (numpy draws, a stream per variable:
        :func:`random_variables`).
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
        return model, dict(random_variables(model, int(seed), example_shape(model, INIT_SIZE)))
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

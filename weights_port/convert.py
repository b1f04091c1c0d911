"""torchvision state_dicts and modules to jaxviz Flax variables.

Layout changes, made once here so nothing is transposed at run time:
conv weights (O, I, kh, kw) -> kernels (kh, kw, I, O); linear weights (out, in) ->
kernels (in, out), and for a Linear that reads a flattened feature map its rows go
from torch's (C, H, W) order to NHWC's (H, W, C) order; BatchNorm weight/bias/
running_mean/running_var -> params scale/bias and batch_stats mean/var
(``num_batches_tracked`` is dropped).
"""

from __future__ import annotations

import os
import pickle
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import flax.linen as nn
import numpy as np

from jaxviz.models.registry import TORCHVISION_ARCHITECTURES, check_name, create
from jaxviz.models.vgg import CONFIGS, DEPTHS
from jaxviz.models.weights import WeightsError, expected_shapes, raise_if_mismatched
from jaxviz._host import to_device
from jaxviz.errors import InputTypeError

# Flax variable leaf -> torch state_dict leaf.
_LEAVES = {("params", "kernel"): "weight", ("params", "bias"): "bias", ("params", "scale"): "weight",
           ("batch_stats", "mean"): "running_mean", ("batch_stats", "var"): "running_var"}
_IGNORED = ("num_batches_tracked",)
# Configuration of torchvision's ImageNet ("DEFAULT") models that the weights need.
PRETRAINED_CONFIG: dict[str, dict[str, Any]] = {"googlenet": {"transform_input": True, "aux_logits": False}}


def _torch():
    try:
        import torch
    except ImportError as e:
        raise ImportError("weights_port needs torch and torchvision: pip install 'jaxviz[torch]'") from e
    return torch


def _host(value):
    """A torch tensor on the host (its layout changes are made with torch's copy kernels,
    3-4x numpy's speed on VGG's large transposed weights), anything else as numpy."""
    if hasattr(value, "detach"):  # a torch tensor
        return value.detach().cpu()
    return np.asarray(value)


def _numpy(value) -> np.ndarray:
    """``_to_flax``'s result as a C-contiguous numpy array (a view where it already is one)."""
    if hasattr(value, "contiguous"):
        return value.contiguous().numpy()
    return np.ascontiguousarray(value)


def torch_key(flax_key: str) -> str:
    """'params/features/0/kernel' -> 'features.0.weight'."""
    collection, *path, leaf = flax_key.split("/")
    return ".".join([*path, _LEAVES[(collection, leaf)]])


def torch_shape(flax_key: str, shape: tuple[int, ...]) -> tuple[int, ...]:
    """The torch shape of the tensor that becomes the Flax variable of ``shape``."""
    if flax_key.endswith("/kernel"):
        if len(shape) == 4:
            return (shape[3], shape[2], shape[0], shape[1])
        return (shape[1], shape[0])
    return tuple(shape)


def _permute(value, *axes):
    """``value`` with its axes reordered: a torch tensor's ``permute``, numpy's ``transpose``."""
    return value.permute(*axes) if hasattr(value, "permute") else value.transpose(*axes)


def _to_flax(flax_key: str, value, flattened: Mapping[str, tuple[int, int, int]]):
    """The Flax layout of one torch tensor (a numpy array or a torch tensor; a permuted
    view where no copy is needed)."""
    if not flax_key.endswith("/kernel"):
        return value
    if value.ndim == 4:
        return _permute(value, 2, 3, 1, 0)
    module = flax_key.split("/")[1:-1]
    hwc = flattened.get(".".join(module))
    if hwc is not None:  # rows (C, H, W) -> (H, W, C) and the transpose, in one copy
        h, w, c = hwc
        out = value.shape[0]
        return _permute(value.reshape(out, c, h, w), 2, 3, 1, 0).reshape(h * w * c, out)
    return _permute(value, 1, 0)


def infer_config(name: str, state_dict: Mapping[str, Any]) -> dict[str, Any]:
    """Configuration a state_dict implies: ``num_classes``, and GoogLeNet's ``aux_logits``."""
    last = "fc.weight" if name == "googlenet" else "classifier.6.weight"
    config: dict[str, Any] = {}
    if last in state_dict:
        config["num_classes"] = int(np.shape(state_dict[last])[0])
    if name == "googlenet":
        config["aux_logits"] = any(k.startswith(("aux1.", "aux2.")) for k in state_dict)
    return config


def convert_state_dict(name: str, state_dict: Mapping[str, Any], **config: Any
                       ) -> tuple[nn.Module, dict[str, Any]]:
    """A torchvision state_dict for architecture ``name`` -> ``(model, variables)``.

    ``num_classes`` (and GoogLeNet's ``aux_logits``) are read from the state_dict unless
    given in ``config``. Tensors keep their dtype (float64 stays float64 when jax runs
    with x64 enabled).

    Raises:
      WeightsError: listing every missing, unexpected and mis-shaped key, in torch's names.
    """
    check_name(name, TORCHVISION_ARCHITECTURES)
    state_dict = {k.removeprefix("module."): v for k, v in state_dict.items()}
    model = create(name, **{**infer_config(name, state_dict), **config})
    expected = {k: s for k, (s, _) in expected_shapes(model).items()}
    wanted = {torch_key(k): k for k in expected}
    given = {k for k in state_dict if not k.endswith(_IGNORED)}
    missing, extra = wanted.keys() - given, given - wanted.keys()
    wrong = [f"{t} {tuple(np.shape(state_dict[t]))} (expected {torch_shape(f, expected[f])})"
             for t, f in wanted.items()
             if t in given and tuple(np.shape(state_dict[t])) != torch_shape(f, expected[f])]
    raise_if_mismatched(f"state_dict does not fit {name}:", missing, extra, wrong)
    flattened = getattr(model, "FLATTENED_INPUTS", {})
    variables: dict[str, Any] = {}
    for t, f in wanted.items():
        value = _numpy(_to_flax(f, _host(state_dict[t]), flattened))
        node = variables
        *parents, leaf = f.split("/")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = to_device(value)  # a copy: never alias torch memory
    return model, variables


def _vgg_name(module) -> tuple[str, dict[str, Any]]:
    import torch.nn as tnn

    cfg: list[int | str] = []
    batch_norm = False
    for layer in module.features:
        if isinstance(layer, tnn.Conv2d):
            cfg.append(layer.out_channels)
        elif isinstance(layer, tnn.MaxPool2d):
            cfg.append("M")
        elif isinstance(layer, tnn.BatchNorm2d):
            batch_norm = True
    for letter, known in CONFIGS.items():
        if tuple(cfg) == known:
            name = f"vgg{DEPTHS[letter]}" + ("_bn" if batch_norm else "")
            return name, {"dropout": float(module.classifier[2].p)}
    raise InputTypeError(f"VGG features {cfg} are not one of torchvision's configurations "
                    f"{sorted(CONFIGS)}")


def from_torchvision(module) -> tuple[nn.Module, dict[str, Any]]:
    """Any torchvision AlexNet, VGG or GoogLeNet instance -> ``(model, variables)``.

    The configuration (VGG depth and batch norm, ``num_classes``, dropout rates,
    GoogLeNet's ``transform_input`` and aux heads) is read from the module.
    """
    _torch()
    import torchvision.models as tvm

    if isinstance(module, tvm.AlexNet):
        name, config = "alexnet", {"dropout": float(module.classifier[0].p)}
    elif isinstance(module, tvm.VGG):
        name, config = _vgg_name(module)
    elif isinstance(module, tvm.GoogLeNet):
        name = "googlenet"
        config = {"transform_input": bool(module.transform_input),
                  "aux_logits": module.aux1 is not None, "dropout": float(module.dropout.p)}
        if module.aux1 is not None:
            config["dropout_aux"] = float(module.aux1.dropout.p)
    else:
        raise InputTypeError(f"expected a torchvision AlexNet, VGG or GoogLeNet, got {type(module).__name__}")
    return convert_state_dict(name, module.state_dict(), **config)


_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def _refusal(path: Path, error: Exception) -> str:
    """Why ``torch.load(path, weights_only=True)`` failed, in our words: what the file
    asks for (the global a pickle would import) and what to do, without torch's advice
    to load it unsafely."""
    text = _ANSI.sub("", str(error))
    unsafe = isinstance(error, pickle.UnpicklingError) or "weights_only" in text.lower()
    if unsafe:
        found = re.search(r"GLOBAL\s+([\w.]+)", text)
        what = (f"it refers to {found.group(1)}, which loading would import and call" if found
                else "it holds objects other than tensors")
        return (f"{str(path)!r} is refused: {what}. jaxviz reads .pth files with "
                f"torch.load(weights_only=True) and never runs code from a weight file. Save "
                f"the state_dict alone where the file was made: torch.save(model.state_dict(), "
                f"path)")
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    detail = f" ({lines[0].rstrip('.')})" if lines else ""
    return f"{str(path)!r} is not a readable torch file: truncated or corrupt?{detail}"


def read_pth(path: str | os.PathLike) -> dict[str, Any]:
    """A state_dict from a ``.pth`` file, read with ``torch.load(weights_only=True)``.

    ``weights_only=True`` refuses any pickle that would build objects other than
    tensors and plain containers, so a malicious file runs nothing. A checkpoint
    dict with a ``state_dict`` or ``model`` entry is unwrapped.

    Raises:
      FileNotFoundError, WeightsError.
    """
    torch = _torch()
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no weight file at {str(path)!r}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise WeightsError(_refusal(path, e)) from e
    for key in ("state_dict", "model"):
        if isinstance(obj, Mapping) and isinstance(obj.get(key), Mapping):
            obj = obj[key]
    if not isinstance(obj, Mapping) or not all(hasattr(v, "shape") for v in obj.values()):
        raise WeightsError(f"{str(path)!r} does not hold a state_dict (a mapping of names to tensors)")
    return dict(obj)


def load_pth(name: str, path: str | os.PathLike, **config: Any) -> tuple[nn.Module, dict[str, Any]]:
    """``(model, variables)`` from a torch state_dict file for architecture ``name``.

    A file with the name of torchvision's DEFAULT weights for ``name`` (as downloaded,
    e.g. ``googlenet-1378be20.pth``) gets the configuration those weights need
    (:data:`PRETRAINED_CONFIG`) unless ``config`` says otherwise.
    """
    state_dict = read_pth(path)
    if Path(path).name == _pretrained_filename(name):
        return _convert_pretrained(name, state_dict, **config)
    return convert_state_dict(name, state_dict, **config)


def _pretrained_weights(name: str):
    _torch()
    import torchvision.models as tvm

    check_name(name, TORCHVISION_ARCHITECTURES)
    return tvm.get_model_weights(name).DEFAULT


def _pretrained_filename(name: str) -> str | None:
    try:
        return Path(_pretrained_weights(name).url).name
    except (ImportError, ValueError, AttributeError):
        return None


def pretrained_state_dict(name: str) -> dict[str, Any]:
    """torchvision's DEFAULT ImageNet state_dict for ``name``, downloaded and cached by torch.hub.

    The download goes to torch.hub's cache (``$TORCH_HOME/hub/checkpoints``); a file
    already there is used as it is.

    Raises:
      RuntimeError: the file could not be downloaded; the message says where to get it
        and how to pass it instead.
    """
    weights = _pretrained_weights(name)
    try:
        return weights.get_state_dict(progress=True, check_hash=True, weights_only=True)
    except Exception as e:
        filename = Path(weights.url).name
        raise RuntimeError(
            f"could not download torchvision's {weights} weights from {weights.url} "
            f"({type(e).__name__}: {e}). Download that file on a machine with network access, "
            f"copy it here and pass its path: jaxviz.load({name!r}, weights='path/to/{filename}'); "
            f"or convert it once with `python -m weights_port {name} --weights path/to/{filename} "
            f"-o {name}.safetensors` and pass weights='{name}.safetensors' (no torch needed then). "
            f"Placing it in torch.hub's cache, {_hub_checkpoints()}, also makes weights='DEFAULT' work."
        ) from e


def _hub_checkpoints() -> str:
    import torch.hub

    return os.path.join(torch.hub.get_dir(), "checkpoints")


def _convert_pretrained(name: str, state_dict: Mapping[str, Any], **config: Any
                        ) -> tuple[nn.Module, dict[str, Any]]:
    config = {**PRETRAINED_CONFIG.get(name, {}), **config}
    if name == "googlenet" and not config.get("aux_logits", False):
        # torchvision's file keeps the aux heads it was trained with; its model drops them
        state_dict = {k: v for k, v in state_dict.items() if not k.startswith(("aux1.", "aux2."))}
    return convert_state_dict(name, state_dict, **config)


def load_pretrained(name: str, **config: Any) -> tuple[nn.Module, dict[str, Any]]:
    """``(model, variables)`` with torchvision's DEFAULT ImageNet weights.

    GoogLeNet comes as torchvision builds it for those weights: ``transform_input=True``
    and no aux heads (pass ``aux_logits=True`` to keep them).
    """
    return _convert_pretrained(name, pretrained_state_dict(name), **config)


__all__ = ["convert_state_dict", "from_torchvision", "load_pretrained", "load_pth",
           "pretrained_state_dict", "read_pth"]

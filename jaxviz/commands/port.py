"""Convert torchvision weights for architecture ARCH to one jaxviz .safetensors file,
-o, written atomically: the conversion of ``python -m weights_port``, with the same
arguments.

--weights DEFAULT downloads torchvision's ImageNet weights (cached by torch.hub); a
.pth state_dict is read with torch.load(weights_only=True), so nothing in it runs. The
file written records the architecture and its configuration, so that ``jaxviz.load(ARCH,
weights=OUT)`` and every other jaxviz command (--weights OUT) read it without torch.
Converting needs torch and torchvision: pip install 'jaxviz[torch]'.

Example::

    $ jaxviz port vgg16 --weights DEFAULT -o vgg16.safetensors
    $ jaxviz port googlenet --weights googlenet.pth --transform-input -o googlenet.safetensors
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
from pathlib import Path
from typing import TextIO

from jaxviz.models.loading import TORCH_SUFFIXES

HELP = "torchvision weights (DEFAULT or a .pth) to a .safetensors file"
COMPILES = False  # a file conversion: no --compile-cache (its options are weights_port's)


def add_arguments(p: argparse.ArgumentParser) -> None:
    # The arguments of `python -m weights_port`, added by the function its own parser uses,
    # so that the two stay the same. weights_port imports torch only when it converts.
    from weights_port.__main__ import add_arguments as add_weights_port_arguments

    add_weights_port_arguments(p)


def _needs_torch(weights: str) -> bool:
    """Whether reading ``weights`` needs torch: DEFAULT, or a torch file (a .safetensors
    file is only copied)."""
    return weights == "DEFAULT" or weights.lower().endswith(TORCH_SUFFIXES)


def run(args: argparse.Namespace, out: TextIO) -> int:
    from jaxviz.models.registry import check_name

    check_name(args.arch)
    output = Path(args.output)
    if output.is_dir():
        raise ValueError(f"-o {args.output!r} is a folder; expected a .safetensors file name")
    if not output.parent.is_dir():
        raise ValueError(f"-o {args.output!r}: there is no folder {str(output.parent)!r}")
    if _needs_torch(args.weights):
        missing = [m for m in ("torch", "torchvision") if importlib.util.find_spec(m) is None]
        if missing:
            raise ImportError(f"jaxviz port reads torch weights: it needs {' and '.join(missing)} "
                              f"(pip install 'jaxviz[torch]')")
    from weights_port.__main__ import convert

    with contextlib.redirect_stdout(out):
        return convert(args)

"""``python -m weights_port``: torchvision weights to a jaxviz ``.safetensors`` file.

Usage::

    python -m weights_port ARCH --weights DEFAULT -o ARCH.safetensors
    python -m weights_port ARCH --weights PATH.pth -o OUT.safetensors [--transform-input]

``DEFAULT`` downloads torchvision's ImageNet weights (cached by torch.hub); a ``.pth``
state_dict is read with ``torch.load(weights_only=True)``. The file written records the
architecture and its configuration, so ``jaxviz.load(ARCH, weights=OUT)`` needs neither
torch nor the flags given here. Errors print one ``weights_port: error: ...`` message
on stderr and exit with status 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

import jax

import jaxviz as jv
from jaxviz.models.loading import TORCH_SUFFIXES
from jaxviz.models.registry import architecture_of, check_name
from jaxviz.models.weights import model_config
from weights_port import save_weights

# What a failed conversion raises; reported as one message, exit status 2.
USER_ERRORS = (ValueError, KeyError, OSError, jv.WeightsError, ImportError, RuntimeError)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Adds the command's arguments to ``parser``: ARCH, --weights, -o/--output and
    --transform-input. ``jaxviz port`` takes the same ones through this function."""
    parser.add_argument("arch", metavar="ARCH", help=f"architecture: {', '.join(jv.models.TORCHVISION_ARCHITECTURES)}")
    parser.add_argument("--weights", required=True, metavar="DEFAULT|PATH",
                        help="DEFAULT (torchvision's ImageNet weights, downloaded) or a torch "
                             "state_dict file (.pth)")
    parser.add_argument("-o", "--output", required=True, metavar="OUT.safetensors",
                        help="file to write (atomically)")
    parser.add_argument("--transform-input", action=argparse.BooleanOptionalAction, default=None,
                        help="googlenet only: re-normalize the input as torchvision's ImageNet "
                             "GoogLeNet does (default: on for DEFAULT, off for a .pth, which "
                             "cannot record it)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m weights_port",
        description="Convert torchvision AlexNet/VGG/GoogLeNet weights to a jaxviz .safetensors file.")
    add_arguments(parser)
    return parser


def convert(args: argparse.Namespace) -> int:
    check_name(args.arch)
    config = {}
    if args.transform_input is not None:
        if args.arch != "googlenet":
            raise ValueError(f"--transform-input applies to googlenet only, not {args.arch}")
        config["transform_input"] = args.transform_input
    if args.output.lower().endswith(TORCH_SUFFIXES):
        raise ValueError(f"the output is a safetensors file; {args.output!r} has a torch file suffix "
                         f"({', '.join(TORCH_SUFFIXES)}) and would be read back as one")
    model, variables = jv.load(args.arch, weights=args.weights, **config)
    path = save_weights(variables, args.output, model=model)
    tensors = len(jax.tree_util.tree_leaves(variables))
    print(f"wrote {path} ({tensors} tensors, {path.stat().st_size / 1e6:.1f} MB): "
          f"{architecture_of(model)} {json.dumps(model_config(model))}")
    from_pth = args.weights != "DEFAULT" and args.weights.lower().endswith(TORCH_SUFFIXES)
    if args.arch == "googlenet" and from_pth and args.transform_input is None:
        print("note: transform_input=False; for torchvision's ImageNet GoogLeNet pass --transform-input",
              file=sys.stderr)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the command with ``argv`` (default ``sys.argv[1:]``); returns its exit status."""
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as e:  # --help, or a usage error argparse already printed
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 2)
    try:
        return convert(args)
    except USER_ERRORS as e:
        message = e.args[0] if isinstance(e, KeyError) and len(e.args) == 1 else e
        print(f"weights_port: error: {message}", file=sys.stderr)
        if args.weights == "DEFAULT" and isinstance(e, RuntimeError):
            print("weights_port: hint: download that .pth file on a machine with network access, "
                  "then run this command with --weights PATH/TO/FILE.pth", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())

"""The ``jaxviz`` command: one subcommand per view of a network.

``jaxviz --help`` lists them; ``jaxviz COMMAND --help`` explains one. Each lives in its
own module of :mod:`jaxviz.commands` (the table there says which); this module builds the
parser from that table and runs the chosen one.

Every subcommand takes any registered model (an architecture with ``--weights
DEFAULT|PATH`` or seeded random weights, or a bundled trained model such as
``lenet_digits``), shows progress bars on stderr for its long steps (``-q`` hides them),
and writes its files atomically. A mistake (an unknown model or layer, a missing image,
an unusable weight file, a failed download, a bad option) prints one ``jaxviz: error:
...`` line on stderr and exits with status 2, never a traceback.
``--compile-cache DIR`` (default ``$JAXVIZ_COMPILE_CACHE``; every command but ``port``,
which compiles nothing) keeps the compiled programs for the next run
(:func:`jaxviz.commands._common.use_compile_cache`).

Example::

    $ jaxviz demo                       # the digits model's gallery and attribution sheets
    $ jaxviz layers alexnet --size 128
    $ jaxviz visualize googlenet --layer maxpool3 --channel 7 --octaves 3 --out channel7.png
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Sequence

import jaxviz as jv
from jaxviz.commands import COMMANDS, _common, module

# What a failed command raises from the library; reported as one message, exit status 2.
USER_ERRORS = (jv.errors.JaxvizError, ValueError, KeyError, OSError, ImportError, RuntimeError)


def _message(error: BaseException) -> str:
    # str(KeyError("x")) is "'x'": use the argument itself.
    if isinstance(error, KeyError) and len(error.args) == 1:
        return str(error.args[0])
    return str(error) or type(error).__name__


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    import jax

    try:
        ours = version("jaxviz")
    except PackageNotFoundError:  # run from a checkout that was never installed
        ours = "(not installed)"
    return f"jaxviz {ours} (jax {jax.__version__})"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="jaxviz", description="Look inside convolutional networks with JAX.",
        epilog="jaxviz COMMAND --help explains one command.")
    parser.add_argument("--version", action="version", version=_version())
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        m = module(name)
        p = commands.add_parser(name, help=m.HELP, description=m.__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
        m.add_arguments(p)
        if not any("--quiet" in a.option_strings for a in p._actions):
            _common.add_quiet(p)
        if getattr(m, "COMPILES", True):
            _common.add_compile_cache(p)
        p.set_defaults(run=m.run, parser=p)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the ``jaxviz`` command with ``argv`` (default ``sys.argv[1:]``); returns its exit status."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        if getattr(args, "size", None) is not None:
            try:
                args.size = _common.size(args.size)
            except ValueError as e:
                args.parser.error(str(e))
    except SystemExit as e:  # --help, or a usage error argparse already printed
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 2)
    if getattr(sys.stdout, "encoding", None) and hasattr(sys.stdout, "reconfigure"):
        try:  # summaries use "∈μσ"; a console that cannot show them gets "?" instead
            "∈μσ".encode(sys.stdout.encoding)
        except (UnicodeEncodeError, LookupError):
            sys.stdout.reconfigure(errors="replace")
    if argv is None:  # run as a command (float32 throughout): XLA:CPU's faster convolutions,
        # and NCHW convolutions on a GPU. Called with argv from Python, the process and its
        # XLA flags are the caller's.
        with contextlib.suppress(RuntimeError):
            jv.cpu.use_fast_convolutions()
            jv.gpu.use_nchw_convolutions()
    try:
        if getattr(args, "compile_cache", None):
            _common.use_compile_cache(args.compile_cache)
        return args.run(args, sys.stdout)
    except BrokenPipeError:  # `jaxviz layers ... | head`: stop quietly, as the reader did
        with contextlib.suppress(OSError, ValueError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except USER_ERRORS as e:
        print(f"jaxviz: error: {_message(e)}", file=sys.stderr)
        if getattr(args, "weights", None) == "DEFAULT" and isinstance(e, RuntimeError):
            print("jaxviz: hint: pass a local file instead: --weights PATH (.safetensors or .pth)",
                  file=sys.stderr)
        return 2

"""The subcommands of the ``jaxviz`` command, one module each.

``COMMANDS`` maps each subcommand to its module, in the order ``jaxviz --help`` lists
them. A module defines ``HELP`` (its line in ``jaxviz --help``), a docstring (the
description ``jaxviz COMMAND --help`` prints), ``add_arguments(parser)`` and
``run(args, out) -> int``; ``_common`` holds what they share. ``jaxviz.cli`` builds the
parser from this table and turns library errors into one ``jaxviz: error:`` line.
"""

from __future__ import annotations

import importlib
from types import ModuleType

COMMANDS = {
    "demo": "demo",
    "layers": "layers",
    "filters": "filters",
    "activations": "activations",
    "explain": "explain",
    "visualize": "visualize",
    "sweep": "sweep",
    "weights": "weights",
    "examples": "examples",
    "gallery": "gallery",
    "port": "port",
    "mlp2d-lines": "mlp2d_lines",
}


def module(command: str) -> ModuleType:
    """The module of subcommand ``command``."""
    return importlib.import_module(f"{__name__}.{COMMANDS[command]}")

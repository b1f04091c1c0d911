"""Every subcommand against every registered model, generated from the two tables
(``jaxviz.commands.COMMANDS`` and the model registry): ``--help`` works, and a layer the
model does not have gets one ``jaxviz: error:`` line (exit 2) before any weights are
read, whatever the model's layer table looks like (GoogLeNet's blocks, the digits
model's global pooling, the 2-D MLP's vectors). The commands' real work is tested in
test_commands_look.py, test_commands_synth.py, test_gallery.py and test_cli.py."""

from __future__ import annotations

import contextlib
import io

import pytest

import jaxviz as jv
from jaxviz.cli import main
from jaxviz.commands import COMMANDS

NAMES = [*jv.models.ARCHITECTURES, *jv.models.BUNDLED]
NO_SUCH = "no_such_layer"

# Each subcommand that takes MODEL, with arguments that reach its layer check.
WITH_MODEL = {
    "layers": lambda m, d: ["layers", m, "--image", str(d / "missing.png")],
    "filters": lambda m, d: ["filters", m, NO_SUCH, "--out", str(d / "f.png")],
    "activations": lambda m, d: ["activations", m, "--layer", NO_SUCH, "--out", str(d / "a")],
    "explain": lambda m, d: ["explain", m, "--layer", NO_SUCH, "--out", str(d / "e.png")],
    "visualize": lambda m, d: ["visualize", m, "--layer", NO_SUCH, "--channel", "0",
                               "--out", str(d / "v.png")],
    "sweep": lambda m, d: ["sweep", m, "--layer", NO_SUCH, "--out", str(d / "s")],
    "weights": lambda m, d: ["weights", m, "--layer", NO_SUCH, "--unit", "0",
                             "--out", str(d / "w.png")],
    "examples": lambda m, d: ["examples", m, "--layer", NO_SUCH, "--out", str(d / "x"),
                              "--images", str(d)],
    "gallery": lambda m, d: ["gallery", m, "--layer", NO_SUCH, "--out", str(d / "g")],
}


def run(argv):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(argv)
    return code, out.getvalue(), err.getvalue()


def test_every_model_command_is_covered():
    takes_model = {name for name in COMMANDS if name not in ("demo", "port", "mlp2d-lines")}
    assert takes_model == set(WITH_MODEL)


@pytest.mark.parametrize("command", list(COMMANDS))
def test_help(command):
    code, out, err = run([command, "--help"])
    assert (code, err) == (0, "")
    assert out.startswith(f"usage: jaxviz {command}") and "-q, --quiet" in out


@pytest.mark.parametrize("model", NAMES)
@pytest.mark.parametrize("command", list(WITH_MODEL))
def test_a_wrong_layer_is_one_line_before_loading(command, model, tmp_path, monkeypatch):
    def no_load(*args, **kwargs):
        raise AssertionError("weights were loaded before the arguments were checked")

    monkeypatch.setattr(jv, "load", no_load)
    (tmp_path / "image.png").write_bytes(b"")  # a folder with a (broken) image for --images
    code, out, err = run(WITH_MODEL[command](model, tmp_path))
    assert code == 2 and out == "", (out, err)
    assert err.startswith("jaxviz: error: ") and "Traceback" not in err, err
    assert len(err.strip().splitlines()) == 1, err

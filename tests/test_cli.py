"""The command lines: ``jaxviz layers`` (jaxviz.cli) and ``python -m weights_port``.

Most tests call ``main([...])`` in-process (the jitted kernels stay compiled between
them); one runs ``python -m jaxviz`` in a subprocess to check the entry point. AlexNet
at 64x64 keeps every forward pass small. Converted weights must give the same logits
as the .pth they came from bit for bit (the same arrays, so tolerance 0), and torch's
logits within the suite's float32 tolerance (conftest.py).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import jaxviz as jv
from conftest import F32_TOL, env_without_test_compile_cache, max_rel_err, photo_and_noise
from jaxviz.cli import main
from jaxviz.models.weights import save_weights

ROOT = Path(__file__).resolve().parents[1]
SIZE = 64


def run(argv: list[str], entry=main) -> tuple[int, str, str]:
    """(exit status, stdout, stderr) of ``entry(argv)``."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = entry(argv)
    return code, out.getvalue(), err.getvalue()


def table_rows(stdout: str) -> list[tuple[str, str, str, str]]:
    """The layer rows of ``jaxviz layers`` as (path, alias, kind, output), cut at the
    header's column positions, so a misaligned row fails to parse."""
    lines = stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("layer "))
    end = next(i for i, line in enumerate(lines) if line.startswith("top-"))
    header = lines[start]
    cols = [0, header.index("alias"), header.index("kind"), header.index("output"), None]
    assert header[:cols[1]].rstrip() == "layer"
    rows = []
    for line in lines[start + 1:end]:
        cells = [line[a:b] for a, b in zip(cols, cols[1:])]
        assert all(c.endswith("  ") or not c.strip() for c in cells[:-1]), line  # separated
        assert not cells[-1].startswith(" "), line
        rows.append(tuple(c.strip() for c in cells))
    return rows


def expected_summaries(model, variables, x: np.ndarray) -> dict[str, str]:
    """What the table's output column must hold: every layer's summary for ``x``."""
    table = jv.layer_names(model, x.shape[1:3])
    acts = jv.activations(model, variables, x, [info.path for info in table])
    return {info.path: jv.render.summary(acts[info.path]) for info in table}


def assert_one_error_line(code: int, out: str, err: str, prog: str = "jaxviz") -> str:
    assert code == 2
    assert out == ""
    assert err.startswith(f"{prog}: error: ")
    assert "Traceback" not in err
    return err


# --------------------------------------------------------------------------- jaxviz layers


@pytest.fixture(scope="module")
def entry_point():
    """``python -m jaxviz layers alexnet`` in a subprocess, started by the first test that
    needs it so that its start-up (imports, compiling the random init) overlaps the
    in-process tests; test_python_dash_m_jaxviz_entry_point reads its result."""
    env = {**os.environ, "PYTHONIOENCODING": "utf-8",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    proc = subprocess.Popen([sys.executable, "-m", "jaxviz", "layers", "alexnet", "--size", str(SIZE)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            encoding="utf-8", env=env)
    yield proc
    # its reader was deselected, or ran in another pytest-xdist worker: stop it, close pipes
    if proc.poll() is None:
        proc.kill()
    for stream in (proc.stdout, proc.stderr):
        stream.close()
    proc.wait()


@pytest.fixture(scope="module")
def alexnet():
    """The model and variables ``jaxviz layers alexnet`` uses by default (seed 0)."""
    return jv.load("alexnet")


@pytest.fixture(scope="module")
def layers_output(entry_point) -> str:
    code, out, err = run(["layers", "alexnet", "--size", str(SIZE)])
    assert (code, err) == (0, "")
    return out


def test_layers_table_lists_every_layer_in_forward_order(layers_output):
    model = jv.models.create("alexnet")
    table = jv.layer_names(model, SIZE)
    rows = table_rows(layers_output)
    assert [row[0] for row in rows] == [info.path for info in table]
    assert [row[2] for row in rows] == [info.kind for info in table]
    assert [row[1] for row in rows] == [f"[{info.alias}]" if info.alias else "" for info in table]
    by_path = {row[0]: row for row in rows}
    assert by_path["features.0"][1:3] == ("[conv1]", "Conv2d")
    assert by_path["features.10"][1:3] == ("[conv5]", "Conv2d")
    assert by_path["classifier.6"][1:3] == ("[fc8]", "Linear")
    assert by_path["features"][1:3] == ("", "Sequential")


def test_layers_first_lines_say_weights_and_input(layers_output):
    first, second = layers_output.splitlines()[:2]
    assert first == ("weights: seeded random weights (seed 0): activations show the architecture, "
                     "not learned features")
    assert second == ("input:   bundled photograph 'chelsea' (jaxviz.data.sample_image), "
                      "shorter side resized to 73, centre 64x64 cropped")


def test_layers_summaries_are_the_outputs_for_the_bundled_photo(layers_output, alexnet):
    # 73 = round(64 * 256 / 224): torchvision's 256/224 ratio at 64 px.
    x = jv.data.preprocess(jv.data.sample_image("chelsea"), SIZE, resize=73)
    expected = expected_summaries(*alexnet, x)
    rows = table_rows(layers_output)
    assert {path: output for path, _, _, output in rows} == expected
    conv1 = rows[0][3]
    assert conv1.startswith("(1, 15, 15, 64) n=14400 x∈[") and " μ=" in conv1 and " σ=" in conv1


def test_layers_top5_is_labelled_meaningless_for_random_weights(layers_output, alexnet):
    lines = layers_output.splitlines()
    i = next(i for i, line in enumerate(lines) if line.startswith("top-"))
    assert lines[i] == "top-5 predictions (meaningless: random weights):"
    assert len(lines[i + 1:]) == 5
    model, variables = alexnet
    logits = model.apply(variables, jv.data.preprocess(jv.data.sample_image("chelsea"), SIZE, resize=73))
    for line, (index, name, _) in zip(lines[i + 1:], jv.data.decode_predictions(logits)[0]):
        assert line.split(None, 2)[1:] == [str(index), name]


def test_layers_image_size_and_seed_options(tmp_path, monkeypatch, alexnet):
    # --seed must reach jv.load; the weights themselves come from the fixture (seed 0),
    # which saves a second random initialization.
    calls = []

    def load(*args, **kwargs):
        calls.append((args, kwargs))
        return alexnet

    monkeypatch.setattr(jv, "load", load)
    rng = np.random.default_rng(0)
    image = tmp_path / "noise.png"
    Image.fromarray(rng.integers(0, 256, (90, 120, 3), dtype=np.uint8)).save(image)
    code, out, err = run(["layers", "alexnet", "--image", str(image), "--size", "64", "80",
                          "--seed", "1"])
    assert (code, err) == (0, "")
    assert calls == [(("alexnet",), {"weights": None, "seed": 1})]
    assert out.splitlines()[0].startswith("weights: seeded random weights (seed 1)")
    assert out.splitlines()[1] == f"input:   {image}, shorter side resized to 91, centre 64x80 cropped"
    expected = expected_summaries(*alexnet, jv.data.preprocess(image, (64, 80), resize=91))
    rows = table_rows(out)
    assert [row[0] for row in rows] == list(expected)
    assert {path: output for path, _, _, output in rows} == expected


def test_layers_digits_model_takes_a_held_out_digit_at_any_size():
    # At 12 x 40 the digit is made 12 px and centred on a blank canvas: the table is that
    # input's, layer by layer.
    pytest.importorskip("sklearn")
    code, out, err = run(["layers", "lenet_digits", "--size", "12", "40"])
    assert (code, err) == (0, "")
    assert out.splitlines()[1] == ("input:   held-out digit 0 of jaxviz.data.digits('test') "
                                   "(a 1), centred on a blank 12x40 canvas")
    model, variables = jv.load("lenet_digits")
    x = jv.data.place_on_canvas(jv.data.digits("test", size=12)[0][:1], (12, 40), [(0, 14)])
    assert {path: output for path, _, _, output in table_rows(out)} == expected_summaries(
        model, variables, x)


def test_layers_unknown_model_suggests_close_names():
    err = assert_one_error_line(*run(["layers", "alexnt"]))
    assert "unknown model 'alexnt'" in err and "Did you mean alexnet?" in err
    assert err.count("\n") == 1


def test_main_called_from_python_leaves_xla_flags_alone():
    # Only the command (argv None) switches XLA:CPU's convolutions; a caller's process,
    # here the test session with its float64 checks, keeps its own flags.
    before = os.environ.get("XLA_FLAGS")
    run(["layers", "alexnt"])
    assert os.environ.get("XLA_FLAGS") == before


def test_layers_missing_image(tmp_path):
    missing = tmp_path / "nope.jpg"
    err = assert_one_error_line(*run(["layers", "alexnet", "--image", str(missing)]))
    assert str(missing) in err and err.count("\n") == 1


@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_layers_truncated_weight_file(tmp_path, suffix):
    if suffix == ".pth":
        torch = pytest.importorskip("torch")
        torch.save({"features.0.weight": torch.zeros(64, 3, 11, 11)}, tmp_path / "w.pth")
    else:
        save_weights({"params": {"features": {"0": {"kernel": np.zeros((11, 11, 3, 64), np.float32)}}}},
                     tmp_path / "w.safetensors")
    full = (tmp_path / f"w{suffix}").read_bytes()
    truncated = tmp_path / f"truncated{suffix}"
    truncated.write_bytes(full[: len(full) // 2])
    err = assert_one_error_line(*run(["layers", "alexnet", "--size", "64", "--weights", str(truncated)]))
    assert str(truncated) in err and ("truncated" in err or "corrupt" in err)


@pytest.mark.parametrize("argv, message", [
    (["layers", "alexnet", "--weights", "DEFAULT", "--seed", "3"], "--seed"),
    (["layers", "alexnet", "--size", "0"], "--size must be positive"),
    (["layers", "alexnet", "--size", "1", "2", "3"], "--size takes N or H W"),
])
def test_layers_bad_options(argv, message):
    code, out, err = run(argv)
    assert code == 2 and out == "" and message in err and "Traceback" not in err


def test_layers_failed_download_reaches_the_user(monkeypatch):
    pytest.importorskip("torch")
    import weights_port.convert

    def offline(name):
        raise RuntimeError(f"could not download torchvision's {name} weights (URLError: offline)")

    monkeypatch.setattr(weights_port.convert, "pretrained_state_dict", offline)
    err = assert_one_error_line(*run(["layers", "alexnet", "--weights", "DEFAULT"]))
    assert "could not download torchvision's alexnet weights" in err and "--weights PATH" in err


def test_python_dash_m_jaxviz_entry_point(entry_point):
    stdout, stderr = entry_point.communicate(timeout=300)
    assert entry_point.returncode == 0, stderr
    assert stdout.startswith("weights: seeded random weights (seed 0)")
    assert "features.10   [conv5]  Conv2d" in stdout
    assert "top-5 predictions (meaningless: random weights):" in stdout


# --------------------------------------------------------------------------- python -m weights_port


def port(argv):
    from weights_port.__main__ import main as weights_port_main

    return run(argv, entry=weights_port_main)


def test_weights_port_converts_a_pth(alexnet_pth, tmp_path):
    torch = pytest.importorskip("torch")
    tmodel, pth = alexnet_pth
    out_file = tmp_path / "alexnet.safetensors"
    code, out, err = port(["alexnet", "--weights", str(pth), "-o", str(out_file)])
    assert (code, err) == (0, "")
    assert out.startswith(f"wrote {out_file} (16 tensors, ")
    assert " MB): alexnet " in out and '"num_classes": 1000' in out

    x = photo_and_noise((SIZE, SIZE))
    model, variables = jv.load("alexnet", weights=out_file)
    from_pth, pth_variables = jv.load("alexnet", weights=pth)
    logits = np.asarray(model.apply(variables, x))
    np.testing.assert_array_equal(logits, np.asarray(from_pth.apply(pth_variables, x)))
    with torch.no_grad():
        expected = tmodel(torch.from_numpy(x).permute(0, 3, 1, 2)).numpy()
    assert max_rel_err(logits, expected) < F32_TOL


def test_weights_port_wrong_architecture(alexnet_pth, tmp_path):
    _, pth = alexnet_pth
    out_file = tmp_path / "vgg11.safetensors"
    err = assert_one_error_line(*port(["vgg11", "--weights", str(pth), "-o", str(out_file)]),
                                prog="weights_port")
    assert "does not fit vgg11" in err
    assert "missing (" in err and "classifier.0.weight" in err
    assert "unexpected (" in err and "classifier.1.weight" in err
    assert not out_file.exists() and list(tmp_path.iterdir()) == []


def test_weights_port_failed_download_is_readable(monkeypatch, tmp_path):
    pytest.importorskip("torch")
    import weights_port.convert

    def offline(name):
        raise RuntimeError(f"could not download torchvision's {name} weights (URLError: offline). "
                           f"On a machine with network access run ...")

    monkeypatch.setattr(weights_port.convert, "pretrained_state_dict", offline)
    out_file = tmp_path / "a.safetensors"
    err = assert_one_error_line(*port(["alexnet", "--weights", "DEFAULT", "-o", str(out_file)]),
                                prog="weights_port")
    assert "could not download torchvision's alexnet weights" in err
    assert "--weights PATH/TO/FILE.pth" in err
    assert not out_file.exists()


@pytest.mark.parametrize("argv, message", [
    (["alexnet", "--weights", "DEFAULT", "-o", "x.safetensors", "--transform-input"], "googlenet only"),
    (["alexnet", "--weights", "DEFAULT", "-o", "x.pth"], "torch file suffix"),
    (["alexnt", "--weights", "DEFAULT", "-o", "x.safetensors"], "Did you mean alexnet?"),
    (["alexnet", "--weights", "missing.pth", "-o", "x.safetensors"], "no weight file at 'missing.pth'"),
])
def test_weights_port_bad_arguments(argv, message):
    err = assert_one_error_line(*port(argv), prog="weights_port")
    assert message in err


# --------------------------------------------------------------------------- examples


def test_examples_writes_a_picture_per_channel_and_the_top_k(tmp_path):
    code, out, err = run(["examples", "lenet_digits", "--layer", "relu2", "--out",
                          str(tmp_path), "--k", "4", "--channels", "5,9"])
    assert code == 0, err
    assert "1,797 bundled digits" in out and "receptive field 14x14 px" in out
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["relu2_channel0005.png", "relu2_channel0009.png", "top_k.npz"]
    model, variables = jv.load("lenet_digits")
    want = jv.analysis.top_k(model, variables, jv.data.digits("all")[0], "relu2", k=4)
    saved = np.load(tmp_path / "top_k.npz")
    np.testing.assert_array_equal(saved["channels"], [5, 9])
    np.testing.assert_array_equal(saved["values"], want.values[[5, 9]])
    np.testing.assert_array_equal(saved["ids"], want.ids[[5, 9]])
    np.testing.assert_array_equal(saved["positions"], want.positions[[5, 9]])
    picture = np.asarray(Image.open(tmp_path / "relu2_channel0009.png"))
    assert picture.ndim == 3 and picture.shape[1] > picture.shape[0]  # a row of 4, two rows


def test_examples_over_an_image_folder(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray(rng.integers(0, 256, (40, 50, 3), np.uint8)).save(images / f"{i}.png")
    code, out, err = run(["examples", "alexnet", "--layer", "conv2", "--size", "64", "--out",
                          str(tmp_path / "out"), "--images", str(images), "--k", "2",
                          "--channels", "0"])
    assert code == 0, err
    assert "3 images of" in out
    assert (tmp_path / "out" / "conv2_channel0000.png").exists()


@pytest.mark.parametrize("argv, message", [
    (["examples", "lenet_digits", "--layer", "relu2", "--out", "OUT", "--channels", "99"],
     "--channels 99 is out of range"),
    (["examples", "lenet_digits", "--layer", "logits", "--out", "OUT"], "spatial maps"),
    (["examples", "alexnet", "--layer", "conv5", "--out", "OUT"], "pass --images FOLDER"),
    (["examples", "lenet_digits", "--layer", "relu2", "--out", "OUT", "--k", "0"],
     "--k and --batch-size must be at least 1"),
    (["examples", "lenet_digits", "--out", "OUT"], "--layer"),
    (["examples", "lenet_digits", "--layer", "relu2", "--out", "OUT", "--seed", "1"],
     "--seed chooses random weights"),
    (["examples", "lenet_digits", "--layer", "relu2", "--out", "OUT", "--channels", "a"],
     "comma-separated channels"),
])
def test_examples_bad_arguments(tmp_path, argv, message):
    argv = [str(tmp_path / a) if a == "OUT" else a for a in argv]
    code, out, err = run(argv)
    assert code == 2 and message in err, err
    assert err.count("error:") == 1 and "Traceback" not in err


# One ``jaxviz explain`` in a fresh process, counting JAX's persistent-cache events.
_CACHED_RUN = """
import json, sys
import jax
from jaxviz.cli import main
events = {"hits": 0, "misses": 0}
def count(event, **kwargs):
    for name in events:
        if event == "/jax/compilation_cache/cache_" + name:
            events[name] += 1
jax.monitoring.register_event_listener(count)
code = main(["explain", "lenet_digits", "--out", sys.argv[1], "-q"])
print(json.dumps({"code": code, **events}))
"""


def test_compile_cache_serves_the_second_run(tmp_path):
    """``--compile-cache DIR`` (here through $JAXVIZ_COMPILE_CACHE): the first run fills
    DIR, a second process compiles nothing (every program a cache hit) and draws the same
    picture bit for bit."""
    cache = tmp_path / "cache" / "xla"  # created, parents too
    env = dict(env_without_test_compile_cache(), JAXVIZ_COMPILE_CACHE=str(cache))
    counts = []
    for i in range(2):
        proc = subprocess.run([sys.executable, "-c", _CACHED_RUN, str(tmp_path / f"{i}.png")],
                              capture_output=True, text=True, env=env, timeout=300)
        assert proc.returncode == 0, proc.stderr[-3000:]
        counts.append(json.loads(proc.stdout.splitlines()[-1]))
    first, second = counts
    assert first["code"] == second["code"] == 0
    assert first["misses"] > 0 and first["hits"] == 0, first
    assert len(list(cache.iterdir())) == first["misses"], "one file per program compiled"
    assert second["hits"] == first["misses"] and second["misses"] == 0, (first, second)
    assert (tmp_path / "0.png").read_bytes() == (tmp_path / "1.png").read_bytes()


def test_compile_cache_option_and_its_errors(tmp_path, monkeypatch):
    from jaxviz.cli import build_parser
    from jaxviz.commands import COMMANDS, module

    monkeypatch.delenv("JAXVIZ_COMPILE_CACHE", raising=False)
    subparsers = next(a for a in build_parser()._actions if a.dest == "command").choices
    with_option = {name for name, p in subparsers.items()
                   if any(a.dest == "compile_cache" for a in p._actions)}
    assert with_option == {n for n in COMMANDS if getattr(module(n), "COMPILES", True)}
    assert "port" not in with_option and "explain" in with_option
    assert build_parser().parse_args(["layers", "alexnet"]).compile_cache is None
    monkeypatch.setenv("JAXVIZ_COMPILE_CACHE", str(tmp_path / "env"))
    args = build_parser().parse_args(["layers", "alexnet"])
    assert args.compile_cache == str(tmp_path / "env")
    args = build_parser().parse_args(["layers", "alexnet", "--compile-cache", "elsewhere"])
    assert args.compile_cache == "elsewhere"
    a_file = tmp_path / "a_file"
    a_file.write_text("not a folder")
    code, out, err = run(["layers", "alexnet", "--compile-cache", str(a_file)])
    assert code == 2 and out == ""
    assert err.strip() == (f"jaxviz: error: --compile-cache {str(a_file)!r} is a file; "
                           f"expected a folder (it is created)")

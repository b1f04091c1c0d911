"""The subcommands that look without optimizing: ``jaxviz filters``, ``activations``,
``weights``, and ``jaxviz port``.

Each picture a command writes must equal, pixel for pixel, what the library functions
draw for the same model, weights and input (the command adds nothing but the choice of
arguments). The commands run in-process on the bundled digits model and on seeded random
AlexNet at 64 px. Every mistake gets one error line and exit status 2, before any weights
are loaded where it can be seen without them (``jv.load`` fails the test if called).
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import jaxviz as jv
from conftest import F32_TOL, max_rel_err, photo_and_noise
from jaxviz.analysis import maps, weights
from jaxviz.cli import main

SIZE = 64


class Terminal(io.StringIO):
    """A stderr that says it is a terminal: progress bars draw only on one."""

    def isatty(self) -> bool:
        return True


def run(argv: list[str], tty: bool = False) -> tuple[int, str, str]:
    """(exit status, stdout, stderr) of ``jaxviz argv``, run in-process; ``tty``: stderr
    is a terminal."""
    out, err = io.StringIO(), (Terminal() if tty else io.StringIO())
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(argv)
    return code, out.getvalue(), err.getvalue()


def ok(argv: list[str]) -> str:
    """stdout of a command that must succeed quietly (``-q``: nothing on stderr)."""
    code, out, err = run([*argv, "-q"])
    assert (code, err) == (0, ""), err
    return out


def png(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        assert image.format == "PNG" and image.mode == "RGB"
        return np.asarray(image)


def assert_same_picture(path: Path, expected: np.ndarray) -> None:
    got = png(path)
    assert got.shape == expected.shape
    np.testing.assert_array_equal(got, expected)


def assert_one_error(code: int, out: str, err: str, command: str) -> str:
    """Exit status 2, nothing on stdout, no traceback, and one error line: ``jaxviz:
    error: ...`` alone, or argparse's usage lines and ``jaxviz COMMAND: error: ...``.
    Returns the error line."""
    assert code == 2 and out == "" and "Traceback" not in err, (code, out, err)
    lines = err.splitlines()
    assert err.count("error:") == 1, err
    if lines[0].startswith("jaxviz: error: "):
        assert len(lines) == 1, err
        return lines[0]
    else:
        assert lines[0].startswith(f"usage: jaxviz {command} "), err
        assert lines[-1].startswith(f"jaxviz {command}: error: "), err
    return lines[-1]


@pytest.fixture(scope="module")
def lenet():
    return jv.load("lenet_digits")


@pytest.fixture(scope="module")
def alexnet():
    """The weights the commands take for alexnet without --weights (seed 0)."""
    return jv.load("alexnet")


@pytest.fixture
def no_loading(monkeypatch):
    """Fails the test if the command loads weights."""

    def load(*args, **kwargs):
        raise AssertionError(f"weights loaded before the mistake was found: {args}")

    monkeypatch.setattr(jv, "load", load)


def bad_arguments(tmp_path: Path, argv: list[str]) -> list[str]:
    """``argv`` with ``TMP`` replaced by a fresh folder that holds ``file`` (a file) and
    ``dir`` (an empty folder)."""
    (tmp_path / "file").write_text("not a folder")
    (tmp_path / "dir").mkdir()
    return [a.replace("TMP", str(tmp_path)) for a in argv]


def assert_nothing_written(tmp_path: Path) -> None:
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dir", "file"]
    assert list((tmp_path / "dir").iterdir()) == []


# --------------------------------------------------------------------------- filters


def test_filters_default_is_the_first_layer(tmp_path, lenet):
    out = ok(["filters", "lenet_digits", "--out", str(tmp_path / "f.png")])
    assert out.splitlines() == [
        "weights: bundled trained weights (lenet_digits)",
        "layer:   features.0 (conv1), kernel 16 x 5 x 5 x 1 (filters, height, width, input "
        "channels)",
        "tiles:   16 grey tiles, ±3σ of the whole kernel",
        f"wrote {tmp_path / 'f.png'}"]
    k = maps.kernel(*lenet, "features.0")
    assert_same_picture(tmp_path / "f.png", maps.draw_filters(maps.filter_tiles(k)))


def test_filters_rgb_first_layer(tmp_path, alexnet):
    out = ok(["filters", "alexnet", "conv1", "--out", str(tmp_path / "sub" / "conv1.png"),
              "--scale", "max_abs"])
    assert "tiles:   64 RGB tiles, the kernel's largest |w|, zero mid-grey" in out
    k = maps.kernel(*alexnet, "conv1")
    assert_same_picture(tmp_path / "sub" / "conv1.png",
                        maps.draw_filters(maps.filter_tiles(k, scale="max_abs")))


def test_filters_grid_of_a_deeper_layer(tmp_path, alexnet):
    out = ok(["filters", "alexnet", "features.3", "--out", str(tmp_path / "c2.png"),
              "--n", "2", "--filters", "7,0,191", "--channels", "63,1"])
    assert "tiles:   3 filters x 2 input channels, ±2σ of the whole kernel" in out
    k = maps.kernel(*alexnet, "features.3")
    expected = maps.draw_filters(maps.filter_tiles(k, n=2, filters=[7, 0, 191],
                                                   channels=[63, 1]))
    assert_same_picture(tmp_path / "c2.png", expected)


def test_filters_default_grid_is_20_filters_by_15_channels(tmp_path, lenet):
    ok(["filters", "lenet_digits", "conv2", "--out", str(tmp_path / "c2.png")])
    tiles = maps.filter_tiles(maps.kernel(*lenet, "conv2"))
    assert tiles.shape == (20, 15, 5, 5)
    assert_same_picture(tmp_path / "c2.png", maps.draw_filters(tiles))


def test_filters_pca_order(tmp_path, lenet, alexnet):
    pytest.importorskip("sklearn")
    out = ok(["filters", "alexnet", "--order", "pca", "--out", str(tmp_path / "a.png")])
    assert "ordered by the first principal component of the next layer's |weights|" in out
    order = weights.first_layer_order(*alexnet)
    k = maps.kernel(*alexnet, "conv1")
    assert_same_picture(tmp_path / "a.png", maps.draw_filters(maps.filter_tiles(k, filters=order)))

    # a deeper layer, ordered by the next convolution; --filters picks from that order
    ok(["filters", "lenet_digits", "conv2", "--order", "pca", "--filters", "3,1,2,30",
        "--channels", "0,5", "--scale", "per_filter", "--out", str(tmp_path / "l.png")])
    ranked = weights.first_layer_order(*lenet, layer="conv2")
    chosen = [int(f) for f in ranked if f in (3, 1, 2, 30)]
    tiles = maps.filter_tiles(maps.kernel(*lenet, "conv2"), scale="per_filter",
                              filters=chosen, channels=[0, 5])
    assert list(tiles.filters) == chosen
    assert_same_picture(tmp_path / "l.png", maps.draw_filters(tiles))


@pytest.mark.parametrize("argv, message", [
    (["alexnt", "--out", "TMP/a.png"], "unknown model 'alexnt'"),
    (["alexnet", "conv9", "--out", "TMP/a.png"], "no layer 'conv9'"),
    (["alexnet", "relu1", "--out", "TMP/a.png"], "expected a convolution layer"),
    (["lenet_digits", "--filters", "16", "--out", "TMP/a.png"],
     "--filters 16 is out of range: 'features.0' has 16 filters"),
    (["lenet_digits", "conv2", "--channels", "3,16", "--out", "TMP/a.png"],
     "--channels 16 is out of range: 'conv2' reads 16 input channels"),
    (["lenet_digits", "--channels", "0", "--out", "TMP/a.png"], "has one input channel"),
    (["lenet_digits", "--scale", "minmax", "--out", "TMP/a.png"], "invalid choice: 'minmax'"),
    (["lenet_digits", "--scale", "max_abs", "--n", "2", "--out", "TMP/a.png"],
     "--n applies to --scale sigmas"),
    (["lenet_digits", "--n", "0", "--out", "TMP/a.png"], "expected a positive number"),
    (["lenet_digits", "--filters", "a", "--out", "TMP/a.png"], "comma-separated filter indices"),
    (["lenet_digits", "conv3", "--order", "pca", "--out", "TMP/a.png"],
     "none does: use --order index"),
    (["lenet_digits", "--seed", "1", "--out", "TMP/a.png"], "--seed chooses random weights"),
    (["lenet_digits", "--out", "TMP/dir"], "is a folder; expected a .png file name"),
    (["lenet_digits", "--out", "TMP/a.jpg"], "must end in .png"),
    (["lenet_digits", "--out", "TMP/file/a.png"], "is a file, not a folder"),
    (["lenet_digits"], "the following arguments are required: --out"),
])
def test_filters_mistakes(tmp_path, no_loading, argv, message):
    line = assert_one_error(*run(["filters", *bad_arguments(tmp_path, argv)]), "filters")
    assert message in line, line
    assert_nothing_written(tmp_path)


def test_filters_output_that_is_a_folder(tmp_path, no_loading):
    (tmp_path / "x.png").mkdir()
    line = assert_one_error(*run(["filters", "lenet_digits", "--out", str(tmp_path / "x.png")]),
                            "filters")
    assert "is a folder; expected a .png file name" in line


# --------------------------------------------------------------------------- activations


def test_activations_of_a_digit_before_and_after_relu_and_pooling(tmp_path, lenet):
    pytest.importorskip("sklearn")
    out = ok(["activations", "lenet_digits", "--layer", "conv1", "--out", str(tmp_path / "a")])
    x = jv.data.digits("test")[0][:1]
    found = maps.activation_maps(*lenet, x, "conv1")
    assert list(found) == ["features.0", "features.1", "features.2"]
    lines = out.splitlines()
    assert lines[:3] == [
        "weights: bundled trained weights (lenet_digits)",
        "input:   held-out digit 0 of jaxviz.data.digits('test') (a 1)",
        "layer:   features.0 (conv1, Conv2d), then features.1 (relu1, ReLU), features.2 "
        "(pool1, MaxPool2d)"]
    assert lines[3:6] == list(maps.statistics(found).values())
    assert lines[6:] == [
        f"wrote {tmp_path / 'a' / 'features_0.png'} (±1σ of the stage, zero mid-grey)",
        f"wrote {tmp_path / 'a' / 'features_1.png'} (zero mid-grey, 2σ of the stage's "
        f"positive values white)",
        f"wrote {tmp_path / 'a' / 'features_2.png'} (zero mid-grey, 2σ of the stage's "
        f"positive values white)"]
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == [
        "features_0.png", "features_1.png", "features_2.png"]
    # the convolution's signed maps at ±1σ, the rectified and pooled ones with pos_sigmas
    for path, scale in zip(found, ["sigmas", "pos_sigmas", "pos_sigmas"]):
        assert_same_picture(tmp_path / "a" / f"{path.replace('.', '_')}.png",
                            maps.draw_maps(found[path], scale=scale))
    # 16 tiles in a row, 28 px maps enlarged 4 times
    assert png(tmp_path / "a" / "features_0.png").shape[1] == 16 * 112 + 17 * 2


def test_activations_of_an_image_file(tmp_path, alexnet):
    image = tmp_path / "noise.png"
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (90, 120, 3), dtype=np.uint8)).save(image)
    out = ok(["activations", "alexnet", "--layer", "relu2", "--image", str(image), "--size",
              str(SIZE), "--channels", "5,0", "--scale", "per_channel", "--out",
              str(tmp_path / "out")])
    assert out.splitlines()[1] == f"input:   {image}, shorter side resized to 73, centre 64x64 cropped"
    x = jv.data.preprocess(image, SIZE, resize=73)
    found = maps.activation_maps(*alexnet, x, "relu2")
    assert list(found) == ["features.4", "features.5"]  # the ReLU, then its pool
    for path in found:
        assert_same_picture(tmp_path / "out" / f"{path.replace('.', '_')}.png",
                            maps.draw_maps(found[path], scale="per_channel", channels=[5, 0]))


@pytest.mark.parametrize("argv, message", [
    (["alexnt", "--layer", "conv1", "--out", "TMP/o"], "unknown model 'alexnt'"),
    (["lenet_digits", "--layer", "conv9", "--out", "TMP/o"], "no layer 'conv9'"),
    (["lenet_digits", "--layer", "logits", "--out", "TMP/o"], "has no spatial maps"),
    (["lenet_digits", "--layer", "conv2", "--channels", "32", "--out", "TMP/o"],
     "--channels 32 is out of range: 'conv2' has 32 channels"),
    (["alexnet", "--layer", "conv1", "--image", "TMP/missing.png", "--out", "TMP/o"],
     "missing.png"),
    (["alexnet", "--layer", "conv1", "--size", "8", "--out", "TMP/o"], "cannot run on inputs"),
    (["lenet_digits", "--layer", "conv1", "--out", "TMP/file"], "is a file; expected a folder"),
    (["mlp2d", "--layer", "fc1", "--out", "TMP/o"], "not images"),
    (["lenet_digits", "--layer", "conv1", "--scale", "minmax", "--out", "TMP/o"],
     "invalid choice: 'minmax'"),
    (["lenet_digits", "--layer", "conv1", "--size", "0", "--out", "TMP/o"],
     "--size must be positive"),
    (["lenet_digits", "--out", "TMP/o"], "the following arguments are required: --layer"),
])
def test_activations_mistakes(tmp_path, no_loading, argv, message):
    line = assert_one_error(*run(["activations", *bad_arguments(tmp_path, argv)]),
                            "activations")
    assert message in line, line
    assert_nothing_written(tmp_path)


# --------------------------------------------------------------------------- weights


def test_weights_top_connections_picture_and_arrays(tmp_path, lenet):
    argv = ["weights", "lenet_digits", "--layer", "conv2", "--unit", "3", "--width", "7",
            "--k", "8", "--out", str(tmp_path / "w.png"), "--npz", str(tmp_path / "w.npz")]
    code, out, err = run(argv, tty=True)
    assert code == 0 and "expanded weights" in err  # the progress bar, on a terminal
    found = weights.top_connections(*lenet, "conv2", 3, width=7, k=8)
    assert_same_picture(tmp_path / "w.png", weights.draw_connections(found))
    lines = out.splitlines()
    assert lines[1] == ("unit:    channel 3 of features.3 (conv2); expanded weights over a "
                        "7 x 7 window")
    assert lines[2] == "previous: features.0 (conv1), its 8 strongest channels (L2 norm, sum):"
    assert lines[3].split() == [str(found["previous"].channels[0]),
                                f"{found['previous'].norm[0]:.4g}",
                                f"{found['previous'].total[0]:+.4g}"]
    assert lines[-2:] == [f"wrote {tmp_path / 'w.png'}", f"wrote {tmp_path / 'w.npz'}"]
    saved = np.load(tmp_path / "w.npz")
    assert sorted(saved) == sorted(f"{side}_{field}" for side in ("previous", "next")
                                   for field in weights.Connections._fields)
    for side, connections in found.items():
        assert saved[f"{side}_maps"].shape == (8, 7, 7)
        for field, value in connections._asdict().items():
            np.testing.assert_array_equal(saved[f"{side}_{field}"], value)

    # -q, or a stderr that is not a terminal: the same files, nothing on stderr
    code, quiet, err = run([*argv, "-q"], tty=True)
    assert (code, err, quiet) == (0, "", out)
    code, piped, err = run(argv)
    assert (code, err, piped) == (0, "", out)


def test_weights_one_side_of_alexnet(tmp_path, alexnet):
    out = ok(["weights", "alexnet", "--layer", "conv3", "--unit", "7", "--k", "4", "--next",
              "none", "--out", str(tmp_path / "w.png")])
    found = weights.top_connections(*alexnet, "conv3", 7, next=None, k=4)
    assert list(found) == ["previous"] and found["previous"].layer == "features.3"
    assert "next:" not in out and "previous: features.3 (conv2), its 4 strongest" in out
    assert_same_picture(tmp_path / "w.png", weights.draw_connections(found))


def test_weights_named_layers(tmp_path, lenet):
    ok(["weights", "lenet_digits", "--layer", "conv3", "--unit", "0", "--previous", "conv1",
        "--k", "3", "--out", str(tmp_path / "w.png")])
    found = weights.top_connections(*lenet, "conv3", 0, previous="conv1", k=3)
    assert list(found) == ["previous"]  # conv3 is the last convolution: no next side
    assert_same_picture(tmp_path / "w.png", weights.draw_connections(found))


@pytest.mark.parametrize("argv, message", [
    (["alexnt", "--layer", "conv1", "--unit", "0"], "unknown model 'alexnt'"),
    (["lenet_digits", "--layer", "conv9", "--unit", "0"], "no layer 'conv9'"),
    (["lenet_digits", "--layer", "conv2", "--unit", "32"],
     "--unit 32 is out of range: 'conv2' has 32 channels"),
    (["lenet_digits", "--layer", "conv2", "--unit", "-1"], "expected a non-negative number"),
    (["lenet_digits", "--layer", "conv2", "--unit", "0", "--previous", "conv3"],
     "--previous 'conv3' must come before --layer 'conv2'"),
    (["lenet_digits", "--layer", "conv2", "--unit", "0", "--next", "conv1"],
     "--next 'conv1' must come after --layer 'conv2'"),
    (["lenet_digits", "--layer", "conv2", "--unit", "0", "--next", "conv7"], "no layer 'conv7'"),
    (["lenet_digits", "--layer", "conv2", "--unit", "0", "--previous", "none", "--next",
      "none"], "leave nothing to draw"),
    (["lenet_digits", "--layer", "conv2", "--unit", "0", "--k", "0"],
     "expected a positive number"),
    (["lenet_digits", "--layer", "conv2", "--unit", "0", "--width", "0"],
     "expected a positive number"),
    (["lenet_digits", "--layer", "conv2", "--unit", "0", "--npz", "TMP/w.txt"],
     "--npz 'TMP/w.txt' must end in .npz"),
    (["lenet_digits", "--layer", "conv2", "--unit", "0", "--npz", "TMP/file/w.npz"],
     "is a file, not a folder"),
    (["lenet_digits", "--layer", "conv2", "--out", "TMP/w.png"],
     "the following arguments are required: --unit"),
])
def test_weights_mistakes(tmp_path, no_loading, argv, message):
    if "--out" not in argv:
        argv = [*argv, "--out", "TMP/w.png"]
    argv = bad_arguments(tmp_path, argv)
    line = assert_one_error(*run(["weights", *argv]), "weights")
    assert message.replace("TMP", str(tmp_path)) in line, line
    assert_nothing_written(tmp_path)


def test_weights_window_the_layer_cannot_take(tmp_path):
    # found by the library, after loading: a window of the logits, which have no map
    line = assert_one_error(*run(["weights", "lenet_digits", "--layer", "conv2", "--unit", "0",
                                  "--next", "logits", "--out", str(tmp_path / "w.png"), "-q"]),
                            "weights")
    assert "to_layer 'logits' has no map" in line
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------- port


def test_port_converts_a_pth(alexnet_pth, tmp_path):
    torch = pytest.importorskip("torch")
    tmodel, pth = alexnet_pth
    out_file = tmp_path / "alexnet.safetensors"
    out = ok(["port", "alexnet", "--weights", str(pth), "-o", str(out_file)])
    assert out.startswith(f"wrote {out_file} (16 tensors, ") and " MB): alexnet " in out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["alexnet.safetensors"]

    model, variables = jv.load("alexnet", weights=out_file)
    params = variables["params"]
    for key, value in tmodel.state_dict().items():
        *path, leaf = key.split(".")
        node = params
        for part in path:
            node = node[part]
        got = np.asarray(node["kernel" if leaf == "weight" else "bias"])
        want = value.numpy()
        if want.ndim == 4:  # (F, C, kh, kw) -> (kh, kw, C, F)
            want = want.transpose(2, 3, 1, 0)
        elif key == "classifier.1.weight":  # fc6 reads the (C, H, W) flattening: (H, W, C)
            want = want.reshape(4096, 256, 6, 6).transpose(0, 2, 3, 1).reshape(4096, -1).T
        elif want.ndim == 2:
            want = want.T
        np.testing.assert_array_equal(got, want, err_msg=key)
    x = photo_and_noise((SIZE, SIZE))
    with torch.no_grad():
        expected = tmodel(torch.from_numpy(x).permute(0, 3, 1, 2)).numpy()
    assert max_rel_err(np.asarray(model.apply(variables, x)), expected) < F32_TOL


@pytest.mark.parametrize("argv, message", [
    (["alexnt", "--weights", "TMP/file", "-o", "TMP/a.safetensors"], "Did you mean alexnet?"),
    (["alexnet", "--weights", "TMP/missing.pth", "-o", "TMP/a.safetensors"],
     "no weight file at"),
    (["alexnet", "--weights", "DEFAULT", "-o", "TMP/a.safetensors", "--transform-input"],
     "--transform-input applies to googlenet only"),
    (["alexnet", "--weights", "DEFAULT", "-o", "TMP/a.pth"], "torch file suffix"),
    (["alexnet", "--weights", "DEFAULT", "-o", "TMP/dir"], "is a folder"),
    (["alexnet", "--weights", "DEFAULT", "-o", "TMP/nowhere/a.safetensors"], "no folder"),
    (["alexnet", "--weights", "DEFAULT"], "the following arguments are required: -o/--output"),
])
def test_port_mistakes(tmp_path, request, argv, message):
    pytest.importorskip("torch")
    if "no weight file" not in message:  # jv.load finds that one
        request.getfixturevalue("no_loading")
    line = assert_one_error(*run(["port", *bad_arguments(tmp_path, argv)]), "port")
    assert message in line, line
    assert_nothing_written(tmp_path)


def test_port_weights_of_another_architecture(tmp_path):
    torch = pytest.importorskip("torch")
    pth = tmp_path / "alexnet_like.pth"  # AlexNet's conv1 and fc6 names: not VGG's
    torch.save({"features.0.weight": torch.zeros(64, 3, 11, 11),
                "classifier.1.weight": torch.zeros(4, 8)}, pth)
    code, out, err = run(["port", "vgg11", "--weights", str(pth), "-o",
                          str(tmp_path / "v.safetensors")])
    # one error, whose message lists the missing, unexpected and mis-shaped tensors
    assert (code, out) == (2, "") and "Traceback" not in err and err.count("error:") == 1
    lines = err.splitlines()
    assert lines[0] == "jaxviz: error: state_dict does not fit vgg11:"
    assert [line.split(" (")[0] for line in lines[1:]] == [
        "  missing", "  unexpected", "  wrong shape"]
    assert list(tmp_path.iterdir()) == [pth]


def test_without_torch_the_commands_are_listed_and_port_says_what_to_install(tmp_path):
    script = ("import sys\n"
              "sys.modules['torch'] = sys.modules['torchvision'] = None\n"
              "from jaxviz.cli import main\n"
              "print('exit', main(['--help']))\n"
              "print('exit', main(['port', 'alexnet', '--weights', 'a.pth', '-o', 'a.safetensors']))\n")
    env = {**os.environ, "PYTHONIOENCODING": "utf-8"}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          encoding="utf-8", cwd=tmp_path, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    listed = re.findall(r"^    (\S+)", done.stdout, re.MULTILINE)  # jaxviz --help's table
    assert {"filters", "activations", "weights", "port"} <= set(listed), done.stdout
    assert done.stdout.splitlines()[-2:] == ["exit 0", "exit 2"]
    assert done.stderr == ("jaxviz: error: jaxviz port reads torch weights: it needs torch and "
                           "torchvision (pip install 'jaxviz[torch]')\n")
    assert list(tmp_path.iterdir()) == []


def test_the_port_arguments_are_those_of_weights_port():
    from jaxviz.cli import build_parser
    from weights_port.__main__ import build_parser as weights_port_parser

    def options(parser):
        return {(tuple(a.option_strings), a.dest, a.required, a.default) for a in parser._actions
                if a.dest not in ("help", "quiet")}

    ours = next(a for a in build_parser()._actions if a.dest == "command").choices["port"]
    assert options(ours) == options(weights_port_parser())

"""``jaxviz explain``, ``jaxviz visualize`` and ``jaxviz sweep``, run in-process.

Each command's files are compared with the library's own computation at the same
settings, rendered the same way (written out here, not through the command's helpers):
the attribution sheet with ``jv.attribution`` and ``jv.render``, the visualization with
``jv.synthesis.recipes.octave_channel`` (or ``jv.synthesis.visualize`` with the recipe's
settings spelled out), the sweep's PNGs with ``jv.synthesis.sweep``. The digits model at
28 px and AlexNet (seeded random weights) at 64 px, with few steps and samples, keep
every computation small.
"""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import jax
import numpy as np
import optax
import pytest
from PIL import Image

import jaxviz as jv
from jaxviz.cli import main
from jaxviz.commands import COMMANDS

pytest.importorskip("sklearn")  # the digits model's default input is a held-out digit


class Terminal(io.StringIO):
    """A stderr that says it is a terminal: progress bars draw only on one."""

    def isatty(self) -> bool:
        return True


def run(argv: list[str], tty: bool = False) -> tuple[int, str, str]:
    """(exit status, stdout, stderr) of ``main(argv)``; ``tty``: stderr is a terminal."""
    out, err = io.StringIO(), (Terminal() if tty else io.StringIO())
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(argv)
    return code, out.getvalue(), err.getvalue()


def png(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image)


def assert_one_error_line(code: int, out: str, err: str) -> str:
    assert code == 2, err
    assert out == ""
    assert err.startswith("jaxviz: error: ") and err.count("\n") == 1, err
    assert "Traceback" not in err
    return err


def grey_uint8(images) -> np.ndarray:
    """(N, H, W, 3) synthesized images as the digits model sees them, 8-bit (N, H, W)."""
    return np.rint(np.clip(np.asarray(images).mean(axis=-1), 0, 1) * 255).astype(np.uint8)


def rgb_uint8(images) -> np.ndarray:
    return np.rint(np.clip(np.asarray(images), 0, 1) * 255).astype(np.uint8)


def enlarge(tiles: np.ndarray, zoom: int) -> np.ndarray:
    return np.repeat(np.repeat(tiles, zoom, axis=1), zoom, axis=2)


@pytest.fixture(scope="module")
def lenet():
    return jv.load("lenet_digits")


@pytest.fixture(scope="module")
def alexnet():
    return jv.load("alexnet")  # what the commands load by default (seed 0)


@pytest.fixture(scope="module")
def digit() -> np.ndarray:
    return jv.data.digits("test")[0][:1]  # the commands' default input for the digits model


def test_commands_are_registered_in_order():
    names = list(COMMANDS)
    assert names.index("explain") < names.index("visualize") < names.index("sweep")
    for name in ("explain", "visualize", "sweep"):
        code, out, err = run([name, "--help"])
        assert (code, err) == (0, "") and "--out" in out


# --------------------------------------------------------------------------- explain


def test_explain_one_method_sheet_is_the_library_gradient(tmp_path, lenet, digit):
    code, out, err = run(["explain", "lenet_digits", "--method", "gradient", "-q",
                          "--out", str(tmp_path / "sheet.png")])
    assert (code, err) == (0, "")  # -q: no progress bar
    model, variables = lenet
    target = int(np.argmax(model.apply(variables, digit)[0]))
    g = jv.attribution.gradient(model, variables, digit, target)
    heat = jv.render.heatmap(jv.render.clip_percentile(jv.render.reduce_channels(g, "abs_sum")))
    picture = np.repeat(np.rint(digit * 255).astype(np.uint8), 3, axis=-1)
    want = jv.render.grid(enlarge(np.concatenate([picture, heat]), 5), ncols=2,  # 28 -> 140 px
                          labels=[f"target {target}", "gradient"])
    np.testing.assert_array_equal(png(tmp_path / "sheet.png"), want)
    lines = out.splitlines()
    assert lines[0] == "weights: bundled trained weights (lenet_digits)"
    assert lines[1].startswith("row 1:   held-out digit 0 of jaxviz.data.digits('test')")
    assert lines[1].endswith(f"; target {target} (top class)")
    assert lines[2:] == ["methods: gradient",
                         f"wrote {tmp_path / 'sheet.png'} ({want.shape[1]}x{want.shape[0]})"]


def test_explain_every_method_on_the_digits_model_shows_progress(tmp_path, lenet, digit):
    code, out, err = run(["explain", "lenet_digits", "--target", "7", "--samples", "3",
                          "--steps", "3", "--out", str(tmp_path / "all.png")], tty=True)
    assert code == 0, err
    assert "explain" in err and "Traceback" not in err  # the bar over the methods
    sheet = png(tmp_path / "all.png")
    blank = jv.render.grid(np.zeros((10, 140, 140, 3), np.uint8), ncols=10, labels=["x"] * 10)
    assert sheet.shape == blank.shape  # input + 9 methods, one row
    # Grad-CAM defaults to the last convolution's ReLU (relu3); its tile is the overlay
    model, variables = lenet
    cam = jv.attribution.grad_cam(model, variables, digit, 7, layer="features.7")
    picture = np.repeat(np.rint(digit * 255).astype(np.uint8), 3, axis=-1)
    tile = jv.render.overlay(picture, jv.render.heatmap(jv.render.clip_percentile(cam)), 0.6)
    left = 2 + 7 * (140 + 2)  # column 7: input, then six pixel methods
    np.testing.assert_array_equal(sheet[2:142, left:left + 140], enlarge(tile, 5)[0])
    assert "; target 7 (given)" in out


def test_explain_the_cam_family_on_request(tmp_path, lenet, digit):
    """The CAMs outside "all" are named in --method; each tile is the library's map at
    the default layer, overlaid on the input."""
    methods = "layer_cam,score_cam,eigen_cam"
    code, out, err = run(["explain", "lenet_digits", "--target", "4", "-q", "--method", methods,
                          "--out", str(tmp_path / "cams.png")])
    assert (code, err) == (0, "")
    sheet = png(tmp_path / "cams.png")
    model, variables = lenet
    picture = np.repeat(np.rint(digit * 255).astype(np.uint8), 3, axis=-1)
    for column, name in enumerate(methods.split(","), start=1):
        cam = getattr(jv.attribution, name)(model, variables, digit, 4, layer="features.7")
        tile = jv.render.overlay(picture, jv.render.heatmap(jv.render.clip_percentile(cam)), 0.6)
        left = 2 + column * (140 + 2)
        np.testing.assert_array_equal(sheet[2:142, left:left + 140], enlarge(tile, 5)[0], name)
    assert f"methods: {methods.replace(',', ', ')}" in out
    code, out, err = run(["explain", "lenet_digits", "--target", "4", "-q", "--method", "lrp",
                          "--out", str(tmp_path / "lrp.png")])
    assert (code, err) == (0, "")
    r = jv.attribution.lrp(model, variables, digit, 4, composite="epsilon_plus_flat")
    heat = jv.render.heatmap(jv.render.clip_percentile(jv.render.reduce_channels(r, "abs_sum")))
    np.testing.assert_array_equal(png(tmp_path / "lrp.png")[2:142, 144:284], enlarge(heat, 5)[0])


def test_progress_bars_only_on_a_terminal(tmp_path, monkeypatch):
    """Without -q a bar is drawn on a terminal; on anything else (a pipe, a log file)
    stderr stays empty, so an error line is never preceded by bar text."""
    argv = ["explain", "lenet_digits", "--method", "gradient,deconvnet", "--out"]
    code, out, err = run([*argv, str(tmp_path / "a.png")])
    assert (code, err) == (0, "")
    code, out_tty, err = run([*argv, str(tmp_path / "b.png")], tty=True)
    assert code == 0 and "explain" in err and out_tty == out.replace("a.png", "b.png")

    # a method that fails mid-sheet: the bar is closed (cleared with a carriage return)
    # before the error line, which starts a line of its own
    def fails(*args, **kwargs):
        raise jv.InputError("deconvnet failed")

    monkeypatch.setattr(jv.attribution, "deconvnet", fails)
    code, out, err = run([*argv, str(tmp_path / "c.png")], tty=True)
    assert (code, out) == (2, "") and "explain" in err
    assert err.splitlines()[-1] == "jaxviz: error: deconvnet failed"
    code, out, err = run([*argv, str(tmp_path / "c.png")])
    assert (code, out, err) == (2, "", "jaxviz: error: deconvnet failed\n")


def test_explain_alexnet_two_images(tmp_path, alexnet):
    rng = np.random.default_rng(0)
    noise = tmp_path / "noise.png"
    Image.fromarray(rng.integers(0, 256, (70, 90, 3), dtype=np.uint8)).save(noise)
    photo = str(Path(jv.data.__file__).parent / "assets" / "chelsea.png")
    code, out, err = run(["explain", "alexnet", "--size", "64", "--image", photo, str(noise),
                          "--method", "grad_cam,occlusion", "-q", "--out",
                          str(tmp_path / "sub" / "a.png")])
    assert (code, err) == (0, "")
    sheet = png(tmp_path / "sub" / "a.png")
    # two rows of input, Grad-CAM and occlusion; 64 px tiles shown at 128
    assert sheet.shape == jv.render.grid(np.zeros((6, 128, 128, 3), np.uint8), ncols=3,
                                         labels=["x"] * 6).shape
    model, variables = alexnet
    x = np.concatenate([jv.data.preprocess(Path(p), 64, resize=73) for p in (photo, noise)])
    targets = np.argmax(np.asarray(model.apply(variables, x)), axis=-1)
    names = jv.data.imagenet_classes()
    lines = out.splitlines()
    assert [line.rsplit("; ", 2)[-2] for line in lines[1:3]] == [
        f"target {t} {names[t]} (top class" for t in targets]
    assert lines[3] == "methods: grad_cam, occlusion"
    # occlusion (last column): window round(64 / 7) = 9, stride 4, for both rows
    occ = jv.attribution.occlusion(model, variables, x, targets.astype(np.int32), window=9,
                                   stride=4, batch_size=64)
    tiles = enlarge(jv.render.heatmap(jv.render.clip_percentile(occ, symmetric=True),
                                      "diverging"), 2)
    band = (sheet.shape[0] - 3 * 2) // 2 - 128
    left = 2 + 2 * (128 + 2)
    for row in range(2):
        top = 2 + row * (128 + band + 2)
        np.testing.assert_array_equal(sheet[top:top + 128, left:left + 128], tiles[row])
    # the captions: Grad-CAM at AlexNet's last convolution's ReLU
    want = jv.render.grid(np.zeros((3, 128, 128, 3), np.uint8), ncols=3, labels=[
        f"target {targets[0]} {names[targets[0]]}", "Grad-CAM (relu5)", "occlusion (9, stride 4)"])
    np.testing.assert_array_equal(sheet[130:130 + band], want[130:130 + band])


def test_explain_smooths_the_cam_tiles_on_request(tmp_path, lenet, digit):
    """--eigen-smooth and --aug-smooth: each CAM tile is the library's map with
    eigen_smooth=True, averaged by aug_smooth with its defaults (Eigen-CAM: aug_smooth
    only); the captions say so."""
    methods = "grad_cam,eigen_cam"
    code, out, err = run(["explain", "lenet_digits", "--target", "4", "-q", "--method", methods,
                          "--eigen-smooth", "--aug-smooth", "--out", str(tmp_path / "s.png")])
    assert (code, err) == (0, "")
    sheet = png(tmp_path / "s.png")
    model, variables = lenet
    A = jv.attribution
    picture = np.repeat(np.rint(digit * 255).astype(np.uint8), 3, axis=-1)
    maps = [A.aug_smooth(A.grad_cam, model, variables, digit, 4, layer="relu3",
                         eigen_smooth=True),
            A.aug_smooth(A.eigen_cam, model, variables, digit, 4, layer="relu3")]
    for column, cam in enumerate(maps, start=1):
        tile = jv.render.overlay(picture, jv.render.heatmap(jv.render.clip_percentile(cam)), 0.6)
        left = 2 + column * (140 + 2)
        np.testing.assert_array_equal(sheet[2:142, left:left + 140], enlarge(tile, 5)[0])
    want = jv.render.grid(np.zeros((3, 140, 140, 3), np.uint8), ncols=3, labels=[
        "target 4", "Grad-CAM (relu3, eigen, aug)", "Eigen-CAM (relu3, aug)"])
    np.testing.assert_array_equal(sheet[142:], want[142:])


@pytest.mark.parametrize("argv, message", [
    (["--method", "gradients"], "unknown --method 'gradients'. Did you mean gradient"),
    (["--method", "gradient,guided_grad_cam", "--eigen-smooth"],
     "--eigen-smooth and --aug-smooth are the CAM tiles'"),
    (["--method", "gradient", "--layer", "relu3"], "--layer is the CAM methods' layer"),
    (["--method", "grad_cam", "--layer", "relu9"], "no layer 'relu9'"),
    (["--method", "grad_cam", "--layer", "logits"], "expected a layer with spatial maps"),
    (["--target", "10"], "--target 10 is out of range: lenet_digits has 10 classes"),
    (["--window", "40"], "--window 40 is larger than the input (28x28)"),
    (["--method", "gradient", "--window", "4"], "--window and --stride are occlusion's"),
    (["--image", "MISSING"], "missing.png"),
    (["--seed", "1"], "--seed chooses random weights"),
])
def test_explain_bad_arguments(tmp_path, argv, message):
    argv = [str(tmp_path / "missing.png") if a == "MISSING" else a for a in argv]
    err = assert_one_error_line(*run(["explain", "lenet_digits", *argv, "--out",
                                      str(tmp_path / "new" / "x.png")]))
    assert message in err
    assert list(tmp_path.iterdir()) == []  # nothing written, no folder made


@pytest.mark.parametrize("out, message", [
    ("", "is a folder; expected a .png file name"),
    ("x.jpg", "must end in .png"),
    ("file/x.png", "is a file, not a folder"),
])
def test_explain_and_visualize_bad_out_paths(tmp_path, out, message):
    (tmp_path / "file").write_text("")
    for argv in (["explain", "lenet_digits"], ["visualize", "lenet_digits", "--class", "1"]):
        err = assert_one_error_line(*run([*argv, "--out", str(tmp_path / out)]))
        assert message in err


def test_explain_unknown_model_and_usage_errors():
    err = assert_one_error_line(*run(["explain", "alexnt", "--out", "x.png"]))
    assert "Did you mean alexnet?" in err
    code, out, err = run(["explain", "lenet_digits", "--target", "cat", "--out", "x.png"])
    assert code == 2 and out == "" and "Traceback" not in err
    assert "jaxviz explain: error: argument --target: expected a class index or 'top'" in err


# --------------------------------------------------------------------------- visualize


def test_visualize_octaves_outscale_equal_octave_channel(tmp_path, lenet):
    code, out, err = run(["visualize", "lenet_digits", "--layer", "conv2", "--channel", "3",
                          "--steps", "6", "--octaves", "2", "--outscale", "1.5", "--sharpness",
                          "2", "--key", "5", "-q", "--out", str(tmp_path / "v.png")])
    assert (code, err) == (0, "")
    model, variables = lenet
    want = jv.synthesis.recipes.octave_channel(model, variables, "conv2", 3, key=jax.random.key(5),
                                               size=28, octaves=2, outscale=1.5, steps=6,
                                               sharpness=2.0)
    got = png(tmp_path / "v.png")
    assert got.shape == (42, 42)  # grey: what the model sees; the last octave 1.5 x 28
    np.testing.assert_array_equal(got, grey_uint8(want.images)[0])
    values = np.asarray(want.objective)[:, 0]
    lines = out.splitlines()
    assert lines[1] == "start:     noise in [0.4, 0.6); octaves: 28x28, 42x42, 6 steps each"
    final = jv.objectives.channel("conv2", 3)(model, variables, want.images.mean(-1, keepdims=True))
    assert lines[2] == (f"objective: mean of channel 3 of conv2 (features.3): {values[0]:.6g} "
                        f"before the first step, {values[-1]:.6g} before the last, "
                        f"{float(final[0]):.6g} on the written image")
    assert lines[-1] == f"wrote {tmp_path / 'v.png'} (42x42)"


def test_visualize_class_is_the_recipe_for_a_logit(tmp_path, lenet):
    code, out, err = run(["visualize", "lenet_digits", "--class", "4", "--steps", "5",
                          "--lr", "0.03", "--out", str(tmp_path / "c.png")])
    assert code == 0, err
    S = jv.synthesis
    model, variables = lenet
    want = S.visualize(model, variables, jv.objectives.class_logit(4), key=jax.random.key(0),
                       size=28, steps=5, param=S.param.Pixels(0.4, 0.6), transforms=None,
                       regularizers=[(0.05, S.regularizers.color_magnitude),
                                     (1e-3, S.regularizers.scharr)],
                       optimizer=optax.chain(S.normalize_by_max_abs(), optax.sgd(0.03)))
    np.testing.assert_array_equal(png(tmp_path / "c.png"), grey_uint8(want.images)[0])
    assert "objective: logit of class 4: " in out


def test_visualize_from_an_init_image(tmp_path, lenet):
    start = tmp_path / "start.png"
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (30, 40, 3), np.uint8)).save(start)
    code, out, err = run(["visualize", "lenet_digits", "--layer", "conv3", "--channel", "0",
                          "--steps", "4", "--size", "20", "--init-image", str(start), "-q",
                          "--out", str(tmp_path / "i.png")])
    assert (code, err) == (0, "")
    model, variables = lenet
    init = jv.data.resize(jv.data.load_image(start), 20)  # shorter side 20: 20 x 26
    want = jv.synthesis.recipes.octave_channel(model, variables, "conv3", 0, key=jax.random.key(0),
                                               octaves=1, steps=4, init=init)
    got = png(tmp_path / "i.png")
    assert got.shape == (20, 26)
    np.testing.assert_array_equal(got, grey_uint8(want.images)[0])
    assert f"start:     {start}; octaves: 20x26, 4 steps each" in out


def test_visualize_alexnet_is_rgb(tmp_path, alexnet):
    code, out, err = run(["visualize", "alexnet", "--layer", "conv1", "--channel", "2",
                          "--size", "32", "40", "--steps", "2", "-q", "--out",
                          str(tmp_path / "a.png")])
    assert (code, err) == (0, "")
    got = png(tmp_path / "a.png")
    assert got.shape == (32, 40, 3)
    model, variables = alexnet
    want = jv.synthesis.recipes.octave_channel(model, variables, "conv1", 2, key=jax.random.key(0),
                                               size=(32, 40), octaves=1, steps=2)
    np.testing.assert_array_equal(got, rgb_uint8(want.images)[0])


@pytest.mark.parametrize("argv, message", [
    (["--layer", "conv2", "--channel", "32"],
     "--channel 32 is out of range: 'conv2' has 32 channels"),
    (["--layer", "conv9", "--channel", "0"], "no layer 'conv9'"),
    (["--layer", "logits", "--channel", "0"], "expected a layer with spatial maps"),
    (["--class", "10"], "--class 10 is out of range: lenet_digits has 10 classes"),
    (["--layer", "conv2"], "say what to maximize"),
    (["--class", "1", "--layer", "conv2"], "drop --layer and --channel"),
    (["--class", "1", "--outscale", "2"], "it needs --octaves 2 or more"),
    (["--class", "1", "--init-image", "MISSING"], "missing.png"),
])
def test_visualize_bad_arguments(tmp_path, argv, message):
    argv = [str(tmp_path / "missing.png") if a == "MISSING" else a for a in argv]
    err = assert_one_error_line(*run(["visualize", "lenet_digits", *argv, "--out",
                                      str(tmp_path / "new" / "x.png")]))
    assert message in err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("argv, message", [
    (["--class", "1", "--octaves", "0"], "argument --octaves: expected a positive number"),
    (["--class", "1", "--steps", "-3"], "argument --steps: expected a positive number"),
    (["--class", "1", "--outscale", "2", "--octave-scale", "1.2"], "not allowed with argument"),
    (["--class", "x"], "argument --class: expected an integer"),
])
def test_visualize_usage_errors(argv, message):
    code, out, err = run(["visualize", "lenet_digits", *argv, "--out", "x.png"])
    assert code == 2 and out == "" and "Traceback" not in err
    assert err.startswith("usage: jaxviz visualize") and "jaxviz visualize: error: " in err
    assert message in err and err.count("error:") == 1


# --------------------------------------------------------------------------- sweep


SWEEP = ["sweep", "lenet_digits", "--layer", "conv2", "--steps", "3", "--batch-size", "1",
         "--key", "2"]


@pytest.fixture
def count_batches(monkeypatch):
    """The channels of every batch the sweep optimizes, in order."""
    from jaxviz.synthesis import optimize

    batches = []
    real = optimize._optimize

    def counted(compiled, variables, objective, keys, *args, **kwargs):
        batches.append(np.asarray(objective.index).tolist())
        return real(compiled, variables, objective, keys, *args, **kwargs)

    monkeypatch.setattr(optimize, "_optimize", counted)
    return batches


def test_sweep_writes_pngs_and_grid_and_resumes(tmp_path, lenet, count_batches):
    folder = tmp_path / "out"
    code, out, err = run([*SWEEP, "--channels", "0,5", "--out", str(folder)], tty=True)
    assert code == 0, err
    assert "sweep conv2" in err  # the progress bar
    assert count_batches == [[0], [5]]
    assert sorted(p.name for p in folder.iterdir()) == [
        "channel_0000.png", "channel_0005.png", "grid.png", "sweep.json", "sweep.npz"]
    model, variables = lenet
    want = grey_uint8(jv.synthesis.sweep(model, variables, "conv2", [0, 5, 7],
                                         key=jax.random.key(2), steps=3, size=28,
                                         batch_size=1, progress=False))
    np.testing.assert_array_equal(png(folder / "channel_0000.png"), want[0])
    np.testing.assert_array_equal(png(folder / "channel_0005.png"), want[1])
    np.testing.assert_array_equal(png(folder / "grid.png"), jv.render.grid(
        np.repeat(enlarge(want[:2], 3)[..., None], 3, axis=-1), ncols=2, labels=["0", "5"]))
    assert out.splitlines()[1] == "layer:   conv2 (features.3), 2 of 32 channels, 28x28 px, 3 steps"
    assert json.loads((folder / "sweep.json").read_text()) == {
        "model": "lenet_digits", "weights": None, "seed": None}

    # a rerun with one more channel optimizes only that one, and quietly with -q
    count_batches.clear()
    code, out, err = run([*SWEEP, "--channels", "0,5,7", "-q", "--out", str(folder)])
    assert (code, err) == (0, "")
    assert count_batches == [[7]]
    assert f"reused:  2 finished channels from {folder / 'sweep.npz'}" in out
    for i, ch in enumerate([0, 5, 7]):
        np.testing.assert_array_equal(png(folder / f"channel_{ch:04d}.png"), want[i])
    np.testing.assert_array_equal(png(folder / "grid.png"), jv.render.grid(
        np.repeat(enlarge(want, 3)[..., None], 3, axis=-1), ncols=2, labels=["0", "5", "7"]))
    count_batches.clear()
    assert run([*SWEEP, "--channels", "5", "-q", "--out", str(folder)])[0] == 0
    assert count_batches == []

    # every channel (the default): the 29 left, one batch each
    code, out, err = run([*SWEEP, "--channels", "all", "-q", "--out", str(folder)])
    assert (code, err) == (0, "")
    assert count_batches == [[c] for c in range(32) if c not in (0, 5, 7)]
    assert len(list(folder.glob("channel_*.png"))) == 32
    assert "reused:  3 finished channels" in out
    count_batches.clear()

    # other settings, or another model, in the same folder: an error, nothing redone; the
    # sweep fails before its first chunk, so even on a terminal no bar is drawn before it
    err = assert_one_error_line(*run([*SWEEP[:-2], "--key", "3", "--channels", "0",
                                      "--out", str(folder)], tty=True))
    assert "holds a sweep with other settings" in err and "--key" in err
    err = assert_one_error_line(*run(["sweep", "alexnet", "--layer", "conv1", "--channels",
                                      "0", "--out", str(folder)]))
    assert "holds a sweep of lenet_digits with bundled trained weights" in err
    assert count_batches == []


def test_sweep_alexnet_is_rgb(tmp_path, alexnet):
    code, out, err = run(["sweep", "alexnet", "--layer", "conv1", "--channels", "3,63",
                          "--size", "40", "--steps", "1", "--batch-size", "2", "-q", "--out",
                          str(tmp_path)])
    assert (code, err) == (0, "")
    model, variables = alexnet
    want = rgb_uint8(jv.synthesis.sweep(model, variables, "conv1", [3, 63], key=jax.random.key(0),
                                        steps=1, size=40, batch_size=2, progress=False))
    for picture, ch in zip(want, [3, 63]):
        assert png(tmp_path / f"channel_{ch:04d}.png").shape == (40, 40, 3)
        np.testing.assert_array_equal(png(tmp_path / f"channel_{ch:04d}.png"), picture)
    # tiles of 40 px are shown at 80 in a 2 x 2 grid
    np.testing.assert_array_equal(png(tmp_path / "grid.png"), jv.render.grid(
        enlarge(want, 2), ncols=2, labels=["3", "63"]))


@pytest.mark.parametrize("argv, message", [
    (["--layer", "conv2", "--channels", "3,32"], "--channels 32 is out of range: 'conv2' has 32"),
    (["--layer", "logits"], "expected a layer with spatial maps"),
    (["--layer", "conv7"], "no layer 'conv7'"),
    (["--layer", "conv2", "--out", "FILE"], "is a file; expected a folder"),
])
def test_sweep_bad_arguments(tmp_path, argv, message):
    (tmp_path / "file").write_text("")
    if "--out" not in argv:
        argv = [*argv, "--out", str(tmp_path / "new")]
    argv = [str(tmp_path / "file") if a == "FILE" else a for a in argv]
    err = assert_one_error_line(*run(["sweep", "lenet_digits", *argv]))
    assert message in err
    assert [p.name for p in tmp_path.iterdir()] == ["file"]


def test_sweep_usage_errors_and_vector_models(tmp_path):
    code, out, err = run(["sweep", "lenet_digits", "--layer", "conv2", "--channels", "a",
                          "--out", str(tmp_path)])
    assert code == 2 and out == "" and "jaxviz sweep: error: argument --channels" in err
    code, out, err = run(["sweep", "lenet_digits", "--out", str(tmp_path)])
    assert code == 2 and out == "" and "--layer" in err and err.count("error:") == 1
    err = assert_one_error_line(*run(["sweep", "mlp2d", "--layer", "x", "--out", str(tmp_path)]))
    assert "there is no image to synthesize" in err


def test_sweep_unreadable_checkpoint(tmp_path):
    (tmp_path / "sweep.npz").write_text("not a checkpoint")
    (tmp_path / "sweep.json").write_text(json.dumps(
        {"model": "lenet_digits", "weights": None, "seed": None}))
    err = assert_one_error_line(*run(["sweep", "lenet_digits", "--layer", "conv1", "--out",
                                      str(tmp_path)]))
    assert f"cannot read the checkpoint {tmp_path / 'sweep.npz'}" in err

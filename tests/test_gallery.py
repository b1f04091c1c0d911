"""``jaxviz demo`` and ``jaxviz gallery`` (jaxviz.analysis.gallery): the files they write
equal the library's own pictures, a rerun reuses finished channels, and the pages work
in a real browser (headless Chromium over the DevTools protocol, ``tests/browser.py``)."""

from __future__ import annotations

import contextlib
import io
import re
import shutil
from pathlib import Path

import jax
import numpy as np
import pytest
from PIL import Image

import browser
import jaxviz as jv
from jaxviz.analysis import examples, gallery, weights
from jaxviz.cli import main

LAYERS = ("conv1", "conv2", "conv3")
QUICK_CHANNELS = 4
QUICK_STEPS = 8


def run(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(argv)
    return code, out.getvalue(), err.getvalue()


def png(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """``jaxviz demo --quick`` into a fresh folder: (folder, stdout)."""
    folder = tmp_path_factory.mktemp("demo") / "jaxviz-demo"
    code, out, err = run(["demo", "--quick", "--out", str(folder), "-q"])
    assert (code, err) == (0, ""), err
    return folder, out


@pytest.fixture(scope="module")
def digits():
    return jv.load("lenet_digits")


def test_demo_writes_the_gallery_and_the_sheets(demo):
    folder, out = demo
    index = folder / "index.html"
    assert out.splitlines()[-1] == f"open {index.resolve()}"
    for name in ("digits.png", "photographs.png"):
        sheet = png(folder / "sheets" / name)
        assert sheet.shape[0] > 100 and sheet.shape[1] > 1000 and sheet.std() > 10
    text = index.read_text()
    for layer in LAYERS:
        assert f'href="{layer}/index.html"' in text
        pages = sorted(p.name for p in (folder / layer).glob("*.html"))
        assert pages == [f"{c:04d}.html" for c in range(QUICK_CHANNELS)] + ["index.html"]
    # every picture a page names is a file next to it
    for page in folder.rglob("*.html"):
        for src in re.findall(r'src="([^"]+)"', page.read_text()):
            assert (page.parent / src).is_file(), (page, src)
    assert not list(folder.rglob(".*.tmp")), "a temporary file was left behind"


def test_channel_pictures_equal_the_library(demo, digits):
    folder, _ = demo
    model, variables = digits
    c = 2
    # the feature visualization: the sweep of the same channels, in grey
    images = jv.synthesis.sweep(model, variables, "conv2", list(range(QUICK_CHANNELS)),
                                key=jax.random.key(0), steps=QUICK_STEPS, size=28, progress=False)
    grey = np.repeat(np.asarray(images).mean(-1, keepdims=True), 3, -1)
    expected = np.round(255 * np.clip(grey[c], 0, 1)).astype(np.uint8)
    np.testing.assert_array_equal(png(folder / "conv2" / "img" / f"{c:04d}.png"), expected)
    # the dataset examples: example_pictures over the bundled digits
    x = jv.data.digits("all")[0]
    found = examples.top_k(model, variables, x, "conv2", k=9, batch_size=256)
    drawn = examples.example_pictures(model, variables, x, found, [c])
    np.testing.assert_array_equal(png(folder / "conv2" / "img" / f"{c:04d}_examples.png"),
                                  drawn[c])
    # the expanded weights: top_connections to the previous convolution, 8 channels
    width = gallery.connection_width(model, "features.0", "features.3", (28, 28, 1))
    assert width == 10  # conv2's 5x5 kernel over a 2x2 pool of conv1: 10 positions
    top = weights.top_connections(model, variables, "conv2", c, next=None, k=8, width=width)
    np.testing.assert_array_equal(png(folder / "conv2" / "img" / f"{c:04d}_weights.png"),
                                  weights.draw_connections(top))
    page = (folder / "conv2" / f"{c:04d}.html").read_text()
    for ch in top["previous"].channels:
        if ch < QUICK_CHANNELS:  # shown in the gallery: linked
            assert f'href="../conv1/{ch:04d}.html"' in page
    # conv1 has no earlier convolution: its page shows the filter
    assert (folder / "conv1" / "img" / f"{c:04d}_filter.png").is_file()
    assert not (folder / "conv1" / "img" / f"{c:04d}_weights.png").exists()


def test_rerun_reuses_finished_channels(tmp_path, digits, monkeypatch):
    model, variables = digits
    x = jv.data.digits("all")[0][:64]
    kw = dict(images=x, channels=3, steps=4, k=4, quiet=True)
    index = gallery.build(model, variables, ["conv1", "conv2"], tmp_path, **kw)
    pages = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("0*.html")}
    assert len(pages) == 6

    def fail(*args, **kwargs):
        raise AssertionError("recomputed a finished channel")

    monkeypatch.setattr(gallery.synthesis_lib, "sweep", fail)
    monkeypatch.setattr(gallery.examples_lib, "top_k", fail)
    monkeypatch.setattr(gallery.examples_lib, "example_pictures", fail)
    assert gallery.build(model, variables, ["conv1", "conv2"], tmp_path, **kw) == index
    assert {p: p.stat().st_mtime_ns for p in tmp_path.rglob("0*.html")} == pages
    # a page that is gone is drawn again, from the saved sweep and top-k
    monkeypatch.undo()
    (tmp_path / "conv2" / "0001.html").unlink()
    monkeypatch.setattr(gallery.examples_lib, "top_k", fail)
    gallery.build(model, variables, ["conv1", "conv2"], tmp_path, **kw)
    assert (tmp_path / "conv2" / "0001.html").is_file()
    # other settings make the layer again
    monkeypatch.undo()
    gallery.build(model, variables, ["conv1"], tmp_path, **{**kw, "steps": 5})
    assert '"steps": 5' in (tmp_path / "conv1" / "settings.json").read_text()


def test_gallery_command_on_an_image_folder(tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    for name in jv.data.sample_names():
        shutil.copy(Path(jv.__file__).parent / "assets" / f"{name}.png", photos)
    out = tmp_path / "g"
    code, stdout, err = run(["gallery", "alexnet", "--layer", "conv1", "--images", str(photos),
                             "--channels", "0,5", "--steps", "2", "--size", "64", "--k", "2",
                             "--out", str(out), "-q"])
    assert (code, err) == (0, ""), err
    assert "2 images of" in stdout and stdout.splitlines()[-1].endswith("index.html")
    assert sorted(p.name for p in (out / "conv1").glob("*.html")) == [
        "0000.html", "0005.html", "index.html"]
    assert png(out / "conv1" / "img" / "0005_examples.png").shape[1] > 2 * 64


@pytest.mark.parametrize("argv, message", [
    (["gallery", "lenet_digits", "--layer", "conv9"], "no layer 'conv9'"),
    (["gallery", "lenet_digits", "--layer", "gmp"], "spatial maps"),
    (["gallery", "lenet_digits", "--layer", "conv1", "--channels", "0,99"], "out of range"),
    (["gallery", "alexnt", "--layer", "conv1"], "alexnet"),
    (["gallery", "mlp2d", "--layer", "hidden"], "no channels"),
    (["gallery", "alexnet", "--layer", "conv1", "--images", "/no/such/folder"], "/no/such/folder"),
])
def test_gallery_mistakes_are_one_line(argv, message, tmp_path):
    code, out, err = run([*argv, "--out", str(tmp_path / "g")])
    assert code == 2 and out == "" and err.startswith("jaxviz: error: ") and message in err, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


@pytest.mark.parametrize("argv", [
    ["gallery", "lenet_digits", "--layer", "conv1", "--steps", "0"],
    ["gallery", "lenet_digits", "--layer", ","],
    ["gallery", "lenet_digits", "--layer", "conv1", "--channels", "0"],
    ["gallery", "lenet_digits"],
    ["demo", "--steps", "-1"],
])
def test_gallery_and_demo_usage_errors(argv):
    code, out, err = run(argv)
    assert code == 2 and out == "" and "Traceback" not in err
    assert err.splitlines()[-1].startswith(f"jaxviz {argv[0]}: error: ")


def test_out_that_is_a_file(tmp_path):
    f = tmp_path / "file"
    f.write_text("x")
    for argv in (["gallery", "lenet_digits", "--layer", "conv1", "--out", str(f)],
                 ["demo", "--quick", "--out", str(f)]):
        code, out, err = run(argv)
        assert code == 2 and out == "" and "is a file" in err and "Traceback" not in err


CHROMIUM = browser.find()


@pytest.mark.skipif(CHROMIUM is None, reason="no Chromium here: apt-get install chromium "
                    "(scripts/test.sh installs it where it can)")
def test_gallery_in_a_browser(demo, tmp_path):
    folder, _ = demo
    every_image_loaded = ("Array.from(document.images).every("
                          "i => i.complete && i.naturalWidth > 0)")
    with browser.Browser(CHROMIUM) as b:
        b.goto((folder / "index.html").resolve().as_uri())
        assert b.evaluate("document.images.length") >= 2 + 3 * QUICK_CHANNELS
        assert b.evaluate(every_image_loaded)
        # follow the first layer's link, then a channel's
        b.goto(b.evaluate("document.querySelector('h3 a').href"))
        assert b.evaluate("document.title").endswith("conv1")
        assert b.evaluate(every_image_loaded)
        b.goto(b.evaluate("document.querySelector('a.cell').href"))
        assert b.evaluate("document.title") == "conv1 channel 0"
        assert b.evaluate("document.images.length") >= 3 and b.evaluate(every_image_loaded)
        # and from a conv2 page to a linked conv1 channel
        b.goto((folder / "conv2" / "0000.html").resolve().as_uri())
        links = b.evaluate("Array.from(document.querySelectorAll('td a')).map(a => a.href)")
        if links:
            b.goto(links[0])
            assert b.evaluate("document.title").startswith("conv1 channel ")
        shot = b.screenshot(tmp_path / "channel.png")
    picture = png(shot)
    assert picture.shape[:2] == (900, 1280) and picture.std() > 10

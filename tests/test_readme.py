"""The README's self-contained examples run as written: "Save a picture" saves the picture
it says; "Models that take more than x" gives what binding promises."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
from PIL import Image

README = Path(__file__).resolve().parents[1] / "README.md"


def section_code(title: str, level: str = "##") -> str:
    text = README.read_text()
    section = text.split(f"{level} {title}\n", 1)[1].split("\n## ", 1)[0].split("\n### ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    assert len(blocks) == 1, f"expected one python block under '## {title}'"
    return blocks[0]


def test_save_a_picture_example_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    exec(compile(section_code("Save a picture"), "README.md", "exec"), {"__name__": "__readme__"})  # noqa: S102
    with Image.open(tmp_path / "cat.png") as im:
        sheet = np.asarray(im.convert("RGB"))
    assert sheet.shape[1] == 3 * 224 + 4 * 2  # three 224 px tiles, 2 px gutters
    assert sheet.shape[0] > 224 and sheet.std() > 20


def test_models_that_take_more_than_x_example_runs():
    import jax.numpy as jnp

    names: dict = {"__name__": "__readme__"}
    exec(compile(section_code("Models that take more than x", "###"), "README.md", "exec"), names)  # noqa: S102
    model, variables, x, mask = names["model"], names["variables"], names["x"], names["mask"]
    ig, occ, cam = names["ig"], names["occ"], names["cam"]
    assert ig.shape == x.shape and occ.shape == cam.shape == x.shape[:3]
    # the bound call is the model's, and integrated gradients is its own with the mask:
    # the gradient of the masked model, averaged on the path, summed, nears f(x) - f(0)
    f = lambda t: model.apply(variables, t, mask, scale=2.0)[:, 3]
    assert jnp.allclose(names["bound"].apply(names["bound_variables"], x)[:, 3], f(x))
    gap = f(x) - f(jnp.zeros_like(x))
    assert jnp.abs(ig.reshape(4, -1).sum(1) - gap).max() <= 0.05 * jnp.abs(gap).max() + 1e-6

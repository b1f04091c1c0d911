"""The README's "Save a picture" example runs as written and saves the picture it says."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
from PIL import Image

README = Path(__file__).resolve().parents[1] / "README.md"


def section_code(title: str) -> str:
    text = README.read_text()
    section = text.split(f"## {title}\n", 1)[1].split("\n## ", 1)[0]
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

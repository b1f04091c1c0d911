"""Each notebook's main picture for the README: runs every notebook in notebooks/ with
nbclient and saves the image of its cell tagged ``figure`` (else its last image) as
docs/notebooks/<notebook>.png.

    python scripts/notebook_figures.py [--out docs/notebooks] [NOTEBOOK ...]
"""

from __future__ import annotations

import argparse
import base64
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def figure(nb) -> bytes | None:
    """The PNG of the cell tagged ``figure`` (its last image), else the notebook's last."""
    found = None
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        pngs = [o["data"]["image/png"] for o in cell.get("outputs", [])
                if "data" in o and "image/png" in o["data"]]
        if not pngs:
            continue
        if "figure" in cell.get("metadata", {}).get("tags", []):
            return base64.b64decode(pngs[-1])
        found = base64.b64decode(pngs[-1])
    return found


def main(argv=None) -> int:
    import nbclient
    import nbformat

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("notebooks", nargs="*", help="default: every notebooks/*.ipynb")
    p.add_argument("--out", default=str(ROOT / "docs" / "notebooks"))
    args = p.parse_args(argv)
    paths = [Path(n) for n in args.notebooks] or sorted((ROOT / "notebooks").glob("*.ipynb"))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for path in paths:
        nb = nbformat.read(path, as_version=4)
        with tempfile.TemporaryDirectory() as work:
            nbclient.NotebookClient(nb, timeout=600, kernel_name="python3",
                                    resources={"metadata": {"path": work}}).execute()
        png = figure(nb)
        if png is None:
            print(f"{path.name}: no picture", file=sys.stderr)
            continue
        target = out / f"{path.stem}.png"
        tmp = target.with_name(f".{target.name}.tmp")
        tmp.write_bytes(png)
        os.replace(tmp, target)
        print(f"wrote {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

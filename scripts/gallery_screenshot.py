"""The README's gallery picture: runs ``jaxviz demo`` and photographs one channel page in
headless Chromium, as ``tests/test_gallery.py`` does.

    python scripts/gallery_screenshot.py [--demo DIR] [--page conv2/0005.html] [--out docs/gallery.png]

An existing, finished demo folder is reused (the demo resumes). Needs Chromium
(``apt-get install chromium``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

import browser  # noqa: E402  (tests/browser.py: Chromium over the DevTools protocol)

from jaxviz.cli import main as jaxviz  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--demo", default="jaxviz-demo", help="the demo's folder (default jaxviz-demo)")
    p.add_argument("--page", default="conv2/0005.html", help="the page to photograph")
    p.add_argument("--out", default=str(ROOT / "docs" / "gallery.png"))
    p.add_argument("--height", type=int, default=1000, help="viewport height in pixels")
    args = p.parse_args(argv)
    chromium = browser.find()
    if chromium is None:
        p.error("no Chromium found: apt-get install chromium")
    if jaxviz(["demo", "--out", args.demo]) != 0:
        return 1
    page = (Path(args.demo) / args.page).resolve()
    with browser.Browser(chromium, width=1280, height=args.height) as b:
        b.goto(page.as_uri())
        if not b.evaluate("Array.from(document.images).every(i => i.complete && i.naturalWidth > 0)"):
            p.error(f"an image of {page} did not load")
        b.screenshot(args.out)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

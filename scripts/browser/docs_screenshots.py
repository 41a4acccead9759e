#!/usr/bin/env python3
"""Copies the browser test's screenshots (target/console-screenshots/) into
docs/console/ as small PNGs for the README: 960 px wide at most, 256
colours, each under 150 KB. Needs Pillow (`.venv/bin/pip install pillow`).

    scripts/browser/run && .venv/bin/python scripts/browser/docs_screenshots.py
"""

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SRC = ROOT / "target" / "console-screenshots"
DST = ROOT / "docs" / "console"
PAGES = {"1-signin": "signin", "2-recognize": "recognize", "3-gallery": "gallery", "4-video": "video", "5-fleet": "fleet"}
LIMIT = 150 * 1024

try:
    from PIL import Image
except ImportError:
    sys.exit("docs_screenshots: Pillow is needed: .venv/bin/pip install pillow")

DST.mkdir(parents=True, exist_ok=True)
for shot, name in PAGES.items():
    src = SRC / f"{shot}.png"
    if not src.is_file():
        sys.exit(f"docs_screenshots: {src} is missing: run scripts/browser/run first")
    img = Image.open(src).convert("RGB")
    width = 960
    while True:
        w = min(width, img.width)
        small = img.resize((w, round(img.height * w / img.width)), Image.LANCZOS) if w < img.width else img
        out = DST / f"{name}.png"
        small.quantize(colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE).save(out, optimize=True)
        size = out.stat().st_size
        if size < LIMIT or width <= 480:
            break
        width -= 120
    print(f"{out.relative_to(ROOT)}: {small.width}x{small.height}, {size // 1024} KB")

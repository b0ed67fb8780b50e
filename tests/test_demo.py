"""`modelapi demo` end to end: the in-process server with the tiny random-weight pipeline runs
the three documented example requests (real photos as inputs) and writes index.html."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from PIL import Image

from modelapi.core.images import embedded_text

pytestmark = pytest.mark.slow

EXPECTED = {  # folder: (images, size) — the documented examples' planned count and size
    "bytedance__seedream-4-0__sequential": (3, (2560, 1440)),      # "Generate 3 images", 2560:1440 default
    "bytedance__seedream-4-0__edit-sequential": (3, (2560, 1440)),
    "bytedance__dreamina-4-0__edit": (1, (2048, 2048)),            # no count in the prompt
}


def test_demo_end_to_end(tmp_path):
    out = tmp_path / "modelapi-demo"
    env = {**os.environ, "MODELAPI_DATA_DIR": str(tmp_path / "data")}
    proc = subprocess.run([sys.executable, "-m", "modelapi", "demo", "-o", str(out)], env=env,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "RANDOM WEIGHTS" in proc.stderr
    printed = [line for line in proc.stdout.splitlines() if line.endswith(".jpg")]  # --output-format default
    assert len(printed) == 7
    page = (out / "index.html").read_text()
    assert "Random weights" in page
    for folder, (count, size) in EXPECTED.items():
        files = sorted((out / folder).glob("*.jpg"))
        assert len(files) == count, folder
        for f in files:
            image = Image.open(f)
            assert image.size == size
            assert embedded_text(f.read_bytes())["random_weights"] == "true"
            assert f"{folder}/{f.name}" in page
        assert folder.replace("__", "/") in page
    for name in ("astronaut.png", "chelsea.png", "motorcycle_left.png", "coffee.png"):
        assert (out / "inputs" / name).is_file() and f"inputs/{name}" in page
    assert "Generate 3 images of a beautiful sunset over a calm ocean." in page
    assert "A beautiful girl is sitting on the boat" in page
    assert "s from submit to finished" in page

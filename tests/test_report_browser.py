"""The static report opens in a headless Chromium and renders figures (not a blank or error page)."""
from __future__ import annotations

import shutil
import subprocess

import numpy as np
import pytest
from PIL import Image

from storage import open_store
from storage.report import write_report


def chromium() -> str:
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        pytest.skip("no chromium binary (Debian: apt-get install chromium)")
    return exe


def headless(exe: str, tmp_path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={tmp_path / 'profile'}",
         *args], capture_output=True, text=True, timeout=180)


def test_report_renders_in_headless_chromium(synthetic_store, tmp_path):
    exe = chromium()
    index = write_report(open_store(synthetic_store), tmp_path / "report", max_examples=1)
    url = index.resolve().as_uri()

    dom = headless(exe, tmp_path, "--dump-dom", url)
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert "reid-priors report" in dom.stdout and "dataset_stats.png" in dom.stdout

    shot = tmp_path / "shot.png"
    proc = headless(exe, tmp_path, f"--screenshot={shot}", "--window-size=1200,2000", url)
    assert proc.returncode == 0 and shot.exists(), proc.stderr[-2000:]
    rgb = np.asarray(Image.open(shot).convert("RGB"), dtype=np.float32)
    assert rgb.shape == (2000, 1200, 3)
    assert rgb.std() > 20  # not a blank page
    nonwhite = (rgb.min(axis=-1) < 200).mean()
    saturated = (rgb.max(axis=-1) - rgb.min(axis=-1) > 80).mean()
    # text alone covers a few percent of a page; the summary tables and the (colourful) figures far more
    assert nonwhite > 0.08, nonwhite
    assert saturated > 0.02, saturated  # the coverage heatmap and bar charts were drawn: images loaded

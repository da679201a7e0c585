"""The ingest command's input limits as flags: --max-bytes and --allow-outside-root (issue 15)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]


def _jpeg(path: Path, seed: int, size=(64, 32)) -> None:
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(path, quality=95)


def _market(tmp: Path) -> tuple[Path, Path]:
    root = tmp / "market"
    for k, split in enumerate(("bounding_box_train", "query", "bounding_box_test")):
        (root / split).mkdir(parents=True)
        for i in range(2):
            _jpeg(root / split / f"000{i + 1}_c{k + 1}s1_00000{k}_00.jpg", seed=10 * k + i)
    outside = tmp / "elsewhere" / "0003_c1s1_000009_00.jpg"
    outside.parent.mkdir()
    _jpeg(outside, seed=99)
    os.symlink(outside, root / "bounding_box_train" / "0003_c1s1_000009_00.jpg")
    return root, outside


def _ingest(root: Path, store: Path, *extra: str) -> pd.DataFrame:
    proc = subprocess.run([sys.executable, "-m", "pipelines", "ingest", "--dataset", "market1501", "--root", str(root),
                           "--store", str(store), "--image-size", "64x32", "--workers", "1", "-q", *extra],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return pd.read_parquet(store / "index.parquet")


def test_outside_root_refused_unless_allowed_and_size_cap(tmp_path):
    root, outside = _market(tmp_path)
    index = _ingest(root, tmp_path / "s1")
    link = index[index.relpath.str.contains("0003_c1s1_000009_00")]
    assert list(link.status) == ["skipped"] and list(link.reason) == ["outside_root"]
    assert "--allow-outside-root" in link.detail.iloc[0]
    assert (index.status == "ok").sum() == 6

    index = _ingest(root, tmp_path / "s2", "--allow-outside-root")
    assert (index.status == "ok").sum() == 7

    small = min(p.stat().st_size for p in root.rglob("*.jpg") if not p.is_symlink())
    index = _ingest(root, tmp_path / "s3", "--max-bytes", str(small))
    sizes = {r: (root / r).stat().st_size for r in index.relpath if not (root / r).is_symlink()}
    too_large = set(index.relpath[index.reason == "too_large"])
    assert too_large == {r for r, n in sizes.items() if n > small} and too_large
    assert not (index.status == "ok").empty


def test_bad_max_bytes_is_one_line(tmp_path):
    root, _ = _market(tmp_path)
    proc = subprocess.run([sys.executable, "-m", "pipelines", "ingest", "--dataset", "market1501", "--root", str(root),
                           "--store", str(tmp_path / "s"), "--max-bytes", "0"], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and "--max-bytes" in proc.stderr

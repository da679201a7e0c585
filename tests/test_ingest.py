"""Ingest: dataset folder -> store, every file accounted for."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipelines.ingest import ingest_flow, parse_size, plan_ingest
from storage import open_store
from storage.__main__ import main as storage_cli
from storage.verify import verify_store

from conftest import MINI_MARKET, need_shared_data


def test_parse_size():
    assert parse_size("384x128") == (384, 128)
    assert parse_size([256, 128]) == (256, 128)
    with pytest.raises(ValueError, match="HxW"):
        parse_size("256-128")


def _jpeg(path: Path, rgb: np.ndarray) -> None:
    Image.fromarray(rgb).save(path, quality=95)


def bad_market_tree(root: Path) -> dict[str, tuple[str, str]]:
    """A Market-style folder with good and bad files; returns relpath -> (status, reason)."""
    rng = np.random.default_rng(0)
    expect = {}
    for split, folder in (("train", "bounding_box_train"), ("query", "query"), ("gallery", "bounding_box_test")):
        (root / folder).mkdir(parents=True)
        for pid in (2, 7):
            for cam in (1, 3):
                name = f"{folder}/{pid:04d}_c{cam}s1_{pid * 100 + cam:06d}_01.jpg"
                _jpeg(root / name, rng.integers(0, 256, (128, 64, 3), dtype=np.uint8))
                expect[name] = ("ok", "")
    tr = root / "bounding_box_train"
    Image.fromarray(np.full((128, 64), 100, np.uint8)).save(tr / "0002_c2s1_000001_01.jpg")
    expect["bounding_box_train/0002_c2s1_000001_01.jpg"] = ("ok", "")
    Image.fromarray(np.zeros((128, 64, 4), np.uint8)).save(tr / "0007_c2s1_000002_01.png")
    expect["bounding_box_train/0007_c2s1_000002_01.png"] = ("ok", "")
    (tr / "0002_c4s1_000003_01.jpg").write_bytes(b"")
    expect["bounding_box_train/0002_c4s1_000003_01.jpg"] = ("failed", "empty_file")
    good = (tr / "0002_c1s1_000201_01.jpg").read_bytes()
    (tr / "0002_c5s1_000004_01.jpg").write_bytes(good[: len(good) // 2])
    expect["bounding_box_train/0002_c5s1_000004_01.jpg"] = ("failed", "truncated")
    (tr / "0007_c5s1_000005_01.jpg").write_bytes(rng.integers(0, 256, 500, dtype=np.uint8).tobytes())
    expect["bounding_box_train/0007_c5s1_000005_01.jpg"] = ("failed", "not_an_image")
    (tr / "0007_c6s1_000006_01.jpg").write_bytes(good)  # same bytes as an earlier image
    expect["bounding_box_train/0007_c6s1_000006_01.jpg"] = ("skipped", "duplicate")
    _jpeg(tr / "-1_c1s1_000007_01.jpg", np.zeros((128, 64, 3), np.uint8))
    expect["bounding_box_train/-1_c1s1_000007_01.jpg"] = ("skipped", "junk")
    _jpeg(tr / "holiday_photo.jpg", np.zeros((128, 64, 3), np.uint8))
    expect["bounding_box_train/holiday_photo.jpg"] = ("skipped", "unparsable_name")
    _jpeg(tr / "0002_c6s1_000008_01.jpg", np.zeros((5000, 20, 3), np.uint8)[:4000])
    expect["bounding_box_train/0002_c6s1_000008_01.jpg"] = ("failed", "absurd_size")
    return expect


def test_plan_accounts_for_every_file(tmp_path):
    expect = bad_market_tree(tmp_path / "m")
    index = plan_ingest("market1501", tmp_path / "m", progress=False)
    got = {r.relpath: (r.status, r.reason) for r in index.itertuples()}
    assert got == expect
    ok = index[index["status"] == "ok"]
    assert ok["image_id"].tolist() == list(range(len(ok)))
    # one identity's images are consecutive rows, train first
    assert ok["split"].tolist() == sorted(ok["split"], key=["train", "query", "gallery"].index)
    train = ok[ok["split"] == "train"]
    assert train["pid"].is_monotonic_increasing and sorted(set(train["label"])) == [0, 1]
    assert (index.loc[index["status"] != "ok", "image_id"] >= len(ok)).all()


def test_ingest_flow_bad_corpus(tmp_path):
    expect = bad_market_tree(tmp_path / "m")
    summary = ingest_flow(dataset="market1501", root=str(tmp_path / "m"), store=str(tmp_path / "s"),
                          image_size="32x16", unit_size=4, progress=False)
    n_ok = sum(1 for s, _ in expect.values() if s == "ok")
    assert summary["images"] == n_ok and summary["index_rows"] == len(expect)
    assert summary["by_reason"]["failed:truncated"] == 1 and summary["by_reason"]["skipped:duplicate"] == 1
    s = open_store(tmp_path / "s")
    assert s.images.shape == (n_ok, 32, 16, 3) and verify_store(s).ok
    gray = s.ok_index.index[s.ok_index["relpath"] == "bounding_box_train/0002_c2s1_000001_01.jpg"][0]
    assert np.array_equal(np.unique(s.image(gray)), [100])  # gray 100 -> (100, 100, 100), resized
    # a re-run resumes: nothing rewritten
    again = ingest_flow(dataset="market1501", root=str(tmp_path / "m"), store=str(tmp_path / "s"),
                        image_size="32x16", unit_size=4, progress=False)
    assert again["units_written"] == 0 and again["images"] == 0


def test_ingest_mini_market_counts(tmp_path, capsys):
    root = need_shared_data(MINI_MARKET)
    ingest_flow(dataset="market1501", root=str(root), store=str(tmp_path / "s"), progress=False)
    capsys.readouterr()
    assert storage_cli(["info", str(tmp_path / "s"), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["n_images"] == 96 and info["image_size"] == [256, 128]
    for split in ("train", "query", "gallery"):
        assert info["splits"][split] == {"images": 32, "pids": 16, "cameras": 6}
    s = open_store(tmp_path / "s")
    assert sorted(s.ok_index.loc[s.ok_index["split"] == "train", "label"].unique()) == list(range(16))
    first = s.ok_index.iloc[0]
    original = np.asarray(Image.open(root / first["relpath"]).convert("RGB"))
    assert (first["orig_height"], first["orig_width"]) == original.shape[:2] == (128, 64)
    # the stored image is the 2x upscale of the original: compare at the original size
    down = np.asarray(Image.fromarray(s.image(0)).resize((64, 128), Image.BILINEAR), dtype=np.float32)
    assert np.abs(down - original).mean() < 6

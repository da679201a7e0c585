"""The store: layout, reads, provenance, resumable writes, verify, CLI."""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import zarr

from storage import (
    StoreError,
    contiguous_runs,
    create_store,
    failures_frame,
    group_writer,
    image_writer,
    make_provenance,
    open_store,
)
from storage.__main__ import main as storage_cli
from storage.verify import verify_store

N, H, W = 10, 8, 4


def make_index(n_ok: int = N, n_bad: int = 2) -> pd.DataFrame:
    ok = pd.DataFrame({
        "image_id": np.arange(n_ok), "dataset": "toy", "split": ["train"] * 6 + ["query"] * 2 + ["gallery"] * (n_ok - 8),
        "pid": [1, 1, 1, 2, 2, 3, 1, 2] + [1] * (n_ok - 8), "camid": [1, 2, 1, 1, 2, 2, 3, 3] + [1] * (n_ok - 8),
        "label": [0, 0, 0, 1, 1, 2, -1, -1] + [-1] * (n_ok - 8), "relpath": [f"x{i}.jpg" for i in range(n_ok)],
        "orig_height": 16, "orig_width": 8, "sha256": [f"{i:064d}" for i in range(n_ok)], "status": "ok", "reason": "",
    })
    bad = pd.DataFrame({
        "image_id": np.arange(n_ok, n_ok + n_bad), "dataset": "toy", "split": "train", "pid": -1, "camid": -1,
        "label": -1, "relpath": [f"bad{i}.jpg" for i in range(n_bad)], "orig_height": -1, "orig_width": -1,
        "sha256": "", "status": "failed", "reason": "truncated",
    })
    return pd.concat([ok, bad], ignore_index=True)


def toy_images(n: int = N) -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, size=(n, H, W, 3), dtype=np.uint8)


def write_toy(path: Path, unit_size: int = 4) -> np.ndarray:
    s = create_store(path, dataset="toy", index=make_index(), image_size=(H, W), source_root="/nowhere", unit_size=unit_size)
    imgs = toy_images()
    w = image_writer(s)
    for k, a, b in w.pending():
        w.write_unit(k, {"images": imgs[a:b]})
    return imgs


def test_contiguous_runs_cover_ids_in_order():
    ids = np.array([7, 3, 4, 5, 9, 8, 0])
    runs = contiguous_runs(ids)
    assert [(a, b) for a, b, _ in runs] == [(0, 1), (3, 6), (7, 10)]
    rebuilt = np.empty_like(ids)
    for a, _, pos in runs:
        rebuilt[pos] = ids[pos]
        assert np.array_equal(np.sort(ids[pos]), np.arange(a, a + len(pos)))
    assert np.array_equal(rebuilt, ids)


def test_round_trip_reads_and_summary(tmp_path):
    imgs = write_toy(tmp_path / "s")
    s = open_store(tmp_path / "s")
    assert s.images.shape == (N, H, W, 3) and s.images.chunks == (4, H, W, 3)
    order = [9, 0, 1, 2, 5, 4]
    assert np.array_equal(s.read_images(order), imgs[order])
    assert np.array_equal(s.image(3), imgs[3])
    assert len(s.index) == N + 2 and len(s.ok_index) == N
    summ = s.summary()
    assert summ["splits"]["train"] == {"images": 6, "pids": 3, "cameras": 2}
    assert summ["not_ok"] == {"failed:truncated": 2}
    assert "toy" in repr(s) and "failed:truncated=2" in repr(s)


def test_groups_provenance_tables_and_resume(tmp_path):
    write_toy(tmp_path / "s")
    s = open_store(tmp_path / "s", mode="r+")
    prov = make_provenance({"name": "toy-est", "version": "1", "weights_sha256": None, "params": {}}, {"S": 4})
    g = group_writer(s, "priors/toy", {"m": ((3,), "uint8")}, prov)
    assert [u[0] for u in g.pending()] == [0, 1, 2]
    g.write_unit(1, {"m": np.full((4, 3), 7, np.uint8)}, tables={"stats": pd.DataFrame({"image_id": [4, 5, 6, 7]})},
                 failures=failures_frame([(5, "estimate", "no_person", "toy")]))
    # same provenance (another creation time) resumes with unit 1 kept
    again = group_writer(s, "priors/toy", {"m": ((3,), "uint8")},
                         make_provenance({"name": "toy-est", "version": "1", "weights_sha256": None, "params": {}}, {"S": 4}))
    assert [u[0] for u in again.pending()] == [0, 2]
    # other settings are refused unless overwrite
    other = make_provenance({"name": "toy-est", "version": "1", "weights_sha256": None, "params": {}}, {"S": 8})
    with pytest.raises(StoreError, match="other settings"):
        group_writer(s, "priors/toy", {"m": ((3,), "uint8")}, other)
    r = open_store(tmp_path / "s")
    grp = r.group("priors/toy")
    assert grp.provenance["params"] == {"S": 4}
    assert np.array_equal(grp.read("m", [5, 4]), np.full((2, 3), 7))
    assert grp.table("stats")["image_id"].tolist() == [4, 5, 6, 7]
    assert grp.failures.to_dict("records") == [{"image_id": 5, "stage": "estimate", "reason": "no_person", "detail": "toy"}]
    rebuilt = group_writer(s, "priors/toy", {"m": ((3,), "uint8")}, other, overwrite=True)
    assert len(rebuilt.pending()) == 3 and open_store(tmp_path / "s").group("priors/toy").table("stats").empty
    with pytest.raises(KeyError, match="no group 'priors/nothing'"):
        r.group("priors/nothing")


def test_wrong_unit_shapes_are_refused(tmp_path):
    write_toy(tmp_path / "s")
    s = open_store(tmp_path / "s", mode="r+")
    w = image_writer(s)
    with pytest.raises(ValueError, match="shape"):
        w.write_unit(0, {"images": np.zeros((3, H, W, 3), np.uint8)})


def test_schema_version_mismatch_is_a_clear_error(tmp_path):
    write_toy(tmp_path / "s")
    root = zarr.open_group(str(tmp_path / "s"), mode="r+")
    attrs = dict(root.attrs["reid_priors"])
    attrs["schema_version"] = 999
    root.attrs["reid_priors"] = attrs
    with pytest.raises(StoreError, match="schema version 999"):
        open_store(tmp_path / "s")
    with pytest.raises(StoreError, match="not a store"):
        open_store(tmp_path / "nothing")


def test_verify_catches_deleted_chunk_corrupt_chunk_and_truncated_table(tmp_path, capsys):
    write_toy(tmp_path / "s")
    assert verify_store(open_store(tmp_path / "s")).ok
    assert storage_cli(["verify", str(tmp_path / "s")]) == 0
    (tmp_path / "s/images/c/1/0/0/0").unlink()
    rep = verify_store(open_store(tmp_path / "s"))
    assert not rep.ok and any("unit 1 chunk of 'images' is missing" in p for p in rep.problems)
    assert storage_cli(["verify", str(tmp_path / "s")]) == 1
    write_toy(tmp_path / "t")
    chunk = tmp_path / "t/images/c/2/0/0/0"
    data = bytearray(chunk.read_bytes())
    data[len(data) // 3] ^= 0xFF
    chunk.write_bytes(bytes(data))
    rep = verify_store(open_store(tmp_path / "t"))
    assert not rep.ok and any("unit 2" in p for p in rep.problems)
    write_toy(tmp_path / "u")
    part = tmp_path / "u/tables/images/failures/part-000000.parquet"
    part.write_bytes(part.read_bytes()[:20])
    rep = verify_store(open_store(tmp_path / "u"))
    assert any("unreadable" in p for p in rep.problems)
    write_toy(tmp_path / "v")
    (tmp_path / "v/units/images/000001.json").unlink()
    rep = verify_store(open_store(tmp_path / "v"))
    assert any("unit 1 (images 4..7) not written" in p for p in rep.problems)


def test_verify_catches_count_mismatch(tmp_path):
    write_toy(tmp_path / "s")
    idx = pd.read_parquet(tmp_path / "s/index.parquet")
    idx.loc[0, "status"] = "failed"
    idx.to_parquet(tmp_path / "s/index.parquet")
    rep = verify_store(open_store(tmp_path / "s"))
    assert any("index has 9 ok rows but the store records 10 images" in p for p in rep.problems)


def test_info_json(tmp_path, capsys):
    write_toy(tmp_path / "s")
    assert storage_cli(["info", str(tmp_path / "s"), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["n_images"] == N and info["splits"]["query"]["images"] == 2 and info["image_size"] == [H, W]


KILL_SCRIPT = r"""
import sys, time, numpy as np
sys.path.insert(0, {root!r})
from storage import image_writer, open_store
from storage.writer import UnitWriter
delay = float(sys.argv[2])
orig = UnitWriter.write_unit
def slow(self, *a, **k):
    time.sleep(delay)
    return orig(self, *a, **k)
UnitWriter.write_unit = slow
s = open_store(sys.argv[1], mode="r+")
w = image_writer(s)
rng = np.random.default_rng(1)
imgs = rng.integers(0, 256, size=(s.n_images, *s.image_size, 3), dtype=np.uint8)
for k, a, b in w.pending():
    w.write_unit(k, {{"images": imgs[a:b]}})
print("done")
"""


def _tree_digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_kill_and_resume_is_byte_identical(tmp_path, monkeypatch):
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    script = tmp_path / "writer.py"
    script.write_text(KILL_SCRIPT.format(root=str(Path(__file__).resolve().parents[1])))
    env = {**os.environ, "SOURCE_DATE_EPOCH": "1700000000"}
    index = make_index(n_ok=40, n_bad=0)
    index["split"] = "train"
    for name in ("clean", "killed"):
        create_store(tmp_path / name, dataset="toy", index=index, image_size=(H, W), source_root="/x", unit_size=4)
    subprocess.run([sys.executable, str(script), str(tmp_path / "clean"), "0"], check=True, env=env)
    proc = subprocess.Popen([sys.executable, str(script), str(tmp_path / "killed"), "0.15"], env=env)
    markers = tmp_path / "killed/units/images"
    deadline = time.time() + 60
    while time.time() < deadline and len(list(markers.glob("*.json")) if markers.exists() else []) < 3:
        time.sleep(0.02)
    proc.kill()
    proc.wait()
    done = len(list(markers.glob("*.json")))
    assert 3 <= done < 10, "the writer must be killed mid-run"
    assert not verify_store(open_store(tmp_path / "killed")).ok
    out = subprocess.run([sys.executable, str(script), str(tmp_path / "killed"), "0"], env=env,
                         capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "done"
    assert verify_store(open_store(tmp_path / "killed")).ok
    assert _tree_digest(tmp_path / "killed") == _tree_digest(tmp_path / "clean")

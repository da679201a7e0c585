"""The corruption corpus of issue 15: one case per line of the issue, each must be caught.

Crash windows, readers (never zeros), verify on metadata corruption, one writer per group
(two real processes), wall-time checkpoints and library-level value checks. The counted
total is asserted at the end (``test_corpus_is_complete``); input-file cases live in
tests/test_fuzz_inputs.py.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import zarr

sys.path.insert(0, str(Path(__file__).parent))
import fault_harness as h  # noqa: E402

from storage import StoreError, create_store, open_store  # noqa: E402
from storage.fs import LockError  # noqa: E402
from storage.store import UnitError  # noqa: E402
from storage.verify import verify_store  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CAUGHT: set[str] = set()
CORPUS = {
    # crash windows
    "root zarr.json written, attributes not", "group created before its provenance",
    "verify on a half-built group", "stale index.parquet.tmp-* at the root",
    # readers
    "unit marker and chunk deleted (reader)", "unit marker and chunk deleted (fit)", "flipped bits that decompress",
    "swapped chunks", "deleted priors/dsap chunk",
    # verify on metadata
    "deleted group zarr.json", "deleted array zarr.json", "root image_size edited", "dsap provenance S edited",
    "training labels permuted in index.parquet", "fill_value edited",
    # training runs
    "fit killed before its first epoch ends", "fit --resume without checkpoint",
    # concurrency
    "two writers on one group", "stale lock of a killed writer",
    # library values
    "unit size 0 / -1", "absurd image size", "store path is a file",
}


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    from priors.synthetic import write_dataset

    os.environ["SOURCE_DATE_EPOCH"] = "1700000000"
    work = tmp_path_factory.mktemp("integrity")
    world = work / "world"
    write_dataset(world, ids=3, images_per_id=4, cameras=2, seed=5, size=(64, 32), progress=False)
    store = work / "store"
    h.ingest(world, store)
    h.build_dsap(world, store)
    assert verify_store(open_store(store)).ok
    return world, store


def _copy(built, tmp_path) -> Path:
    dst = tmp_path / "s"
    shutil.copytree(built[1], dst)
    return dst


def _problems(store: Path) -> str:
    rep = verify_store(open_store(store))
    assert not rep.ok
    return "\n".join(rep.problems)


def _edit_json(path: Path, edit) -> None:
    meta = json.loads(path.read_text())
    edit(meta)
    path.write_text(json.dumps(meta))


# ---- crash windows ----------------------------------------------------------------------------
def test_interrupted_creation_resumes_without_overwrite(built, tmp_path):
    world, _ = built
    dst = tmp_path / "s"
    h.ingest(world, dst)
    clean = h.tree_digest(dst)
    shutil.rmtree(dst)
    # stop right after the root zarr.json exists but before its attributes (what used to brick the store)
    from storage.fs import InjectedFault, faults

    faults.arm(None)
    h.ingest(world, tmp_path / "count")
    where = next(i for i, w in enumerate(faults.log, 1) if w == "zarr zarr.json")
    faults.arm(where)
    with pytest.raises(InjectedFault):
        h.ingest(world, dst)
    faults.arm(None)
    with pytest.raises(StoreError, match="creating this store was interrupted; re-run the same"):
        open_store(dst)
    h.ingest(world, dst)  # no --overwrite needed
    assert h.tree_digest(dst) == clean and verify_store(open_store(dst)).ok
    CAUGHT.add("root zarr.json written, attributes not")


def test_group_without_provenance_is_rebuilt_and_flagged_by_verify(built, tmp_path):
    world, _ = built
    dst = _copy(built, tmp_path)
    clean = h.tree_digest(dst)
    _edit_json(dst / "priors/dsap/zarr.json", lambda m: m["attributes"].clear())
    assert "priors/dsap: building this group was interrupted" in _problems(dst)
    CAUGHT.add("verify on a half-built group")
    h.build_dsap(world, dst)  # the same command, no --overwrite
    assert verify_store(open_store(dst)).ok and h.tree_digest(dst) == clean
    CAUGHT.add("group created before its provenance")


def test_stale_temporary_index_is_flagged_and_cleaned(built, tmp_path):
    world, _ = built
    dst = _copy(built, tmp_path)
    clean = h.tree_digest(dst)
    (dst / "index.parquet.tmp-0123abcd").write_bytes(b"half an index")
    assert "temporary files of interrupted writes" in _problems(dst)
    h.ingest(world, dst)
    assert h.tree_digest(dst) == clean
    CAUGHT.add("stale index.parquet.tmp-* at the root")


# ---- readers never see unverified data --------------------------------------------------------
def _reads_fail(store: Path, match: str, group: str | None = None) -> None:
    from reid_train.data.loader import StoreDataset

    requires = (group,) if group else ()
    for split in ("train", "query", "gallery"):
        try:
            ds = StoreDataset(store, split, requires)
            ds.read(np.arange(len(ds)))
        except UnitError as exc:
            assert "python -m storage verify" in str(exc) and re.search(match, str(exc))
            break
    else:
        pytest.fail("no reader error")
    with pytest.raises(UnitError, match=match):
        s = open_store(store)
        (s.group(group).arrays["dsap"] if group else s.images)[:]


def test_reader_refuses_unit_without_marker_and_chunk(built, tmp_path):
    dst = _copy(built, tmp_path)
    (dst / "units/images/000001.json").unlink()
    (dst / "images/c/1/0/0/0").unlink()
    _reads_fail(dst, "unit 1 of images .* is not written")
    CAUGHT.add("unit marker and chunk deleted (reader)")
    from reid_train.engine import train

    with pytest.raises(UnitError, match="unit 1 of images"):
        train(h.fit_cfg(dst, max_steps=2), tmp_path / "run")
    CAUGHT.add("unit marker and chunk deleted (fit)")


def test_reader_refuses_changed_and_swapped_chunks(built, tmp_path):
    dst = _copy(built, tmp_path)
    arr = zarr.open_array(str(dst / "images"), mode="r+")
    block = arr[0:8]
    block[0, 0, 0, 0] ^= 1  # one flipped bit, the chunk still decodes
    arr[0:8] = block
    _reads_fail(dst, "does not match the checksum")
    CAUGHT.add("flipped bits that decompress")
    dst2 = tmp_path / "swapped"
    shutil.copytree(built[1], dst2)
    a, b = dst2 / "images/c/0/0/0/0", dst2 / "images/c/1/0/0/0"
    tmp = a.read_bytes()
    a.write_bytes(b.read_bytes())
    b.write_bytes(tmp)
    _reads_fail(dst2, "does not match the checksum")
    CAUGHT.add("swapped chunks")


def test_reader_refuses_deleted_dsap_chunk(built, tmp_path):
    dst = _copy(built, tmp_path)
    (dst / "priors/dsap/dsap/c/0/0/0/0/0").unlink()
    _reads_fail(dst, "unit 0 of priors/dsap", group="priors/dsap")
    assert "chunk of 'dsap' is missing" in _problems(dst)
    CAUGHT.add("deleted priors/dsap chunk")


def test_checked_reads_equal_raw_reads(built):
    s = open_store(built[1])
    raw = np.asarray(s.raw_images[:])
    assert np.array_equal(s.images[3:11], raw[3:11]) and np.array_equal(s.images[5], raw[5])
    assert np.array_equal(s.images[-1], raw[-1]) and np.array_equal(s.read_images([9, 0, 4]), raw[[9, 0, 4]])
    assert np.array_equal(s.images[2:4, :5], raw[2:4, :5])


# ---- verify on metadata -----------------------------------------------------------------------
def test_verify_catches_metadata_corruption(built, tmp_path):
    cases = {
        "deleted group zarr.json": (lambda d: (d / "priors/dsap/zarr.json").unlink(),
                                    "priors/dsap: units or tables exist but the group's metadata"),
        "deleted array zarr.json": (lambda d: (d / "priors/dsap/valid/zarr.json").unlink(),
                                    "priors/dsap/valid: array metadata"),
        "root image_size edited": (lambda d: _edit_json(d / "zarr.json", lambda m: m["attributes"]["reid_priors"]
                                                        .__setitem__("image_size", [32, 16])),
                                   "root attributes"),
        "dsap provenance S edited": (lambda d: _edit_json(d / "priors/dsap/zarr.json", lambda m: m["attributes"]
                                                          ["provenance"]["params"].__setitem__("S", 16)),
                                     "provenance says S=16"),
        "training labels permuted in index.parquet": (_permute_labels, "index.parquet differs"),
        "fill_value edited": (lambda d: _edit_json(d / "images/zarr.json", lambda m: m.__setitem__("fill_value", 7)),
                              "images/zarr.json was edited"),
    }
    for name, (corrupt, expected) in cases.items():
        dst = tmp_path / name.replace(" ", "_").replace("/", "_")
        shutil.copytree(built[1], dst)
        corrupt(dst)
        assert expected in _problems(dst), name
        CAUGHT.add(name)


def _permute_labels(store: Path) -> None:
    idx = pq.read_table(store / "index.parquet").to_pandas()
    train = idx.index[idx["split"] == "train"]
    idx.loc[train, "label"] = np.roll(idx.loc[train, "label"].to_numpy(), 4)
    idx.to_parquet(store / "index.parquet", index=False)


# ---- training runs ----------------------------------------------------------------------------
def test_wall_time_checkpoint_before_the_first_epoch_ends(built, tmp_path):
    from reid_train.checkpoint import NoCheckpointError, load_checkpoint
    from reid_train.engine import train

    with pytest.raises(NoCheckpointError, match="start it again without --resume"):
        train(h.fit_cfg(built[1]), tmp_path / "empty", resume=True)
    assert not (tmp_path / "empty" / "config.yaml").exists()  # nothing written on a refused resume
    CAUGHT.add("fit --resume without checkpoint")
    # an epoch of 3 steps, checkpoint_every=0: only the wall-time rule checkpoints mid-epoch
    cfg = h.fit_cfg(built[1], checkpoint_every=0, max_steps=0, epochs=1, checkpoint_minutes=1e-9)
    seen = []
    import reid_train.engine as engine

    real = engine.save_checkpoint

    def spy(path, state):
        seen.append(state["step"])
        real(path, state)

    engine.save_checkpoint = spy
    try:
        res = train(cfg, tmp_path / "run")
    finally:
        engine.save_checkpoint = real
    assert seen == list(range(1, res.step + 1)) and res.step >= 2
    assert load_checkpoint(tmp_path / "run" / "checkpoint.pt")["step"] == res.step
    CAUGHT.add("fit killed before its first epoch ends")


# ---- one writer per group ---------------------------------------------------------------------
HOLD = """
import sys, time
from storage import open_store, group_writer, make_provenance
s = open_store(sys.argv[1], mode="r+")
group_writer(s, "priors/toy", {{"m": ((2,), "uint8")}}, make_provenance({{"name": "toy", "version": "1"}}))
print("holding", flush=True)
time.sleep({sleep})
"""


def test_second_writer_is_refused_and_stale_lock_taken_over(built, tmp_path):
    dst = _copy(built, tmp_path)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    first = subprocess.Popen([sys.executable, "-c", HOLD.format(sleep=120), str(dst)], env=env,
                             stdout=subprocess.PIPE, text=True)
    try:
        assert first.stdout.readline().strip() == "holding"
        second = subprocess.run([sys.executable, "-c", HOLD.format(sleep=0), str(dst)], env=env,
                                capture_output=True, text=True, timeout=120)
        assert second.returncode != 0 and "LockError" in second.stderr
        assert f"priors/toy is being written by pid {first.pid}" in second.stderr
        with pytest.raises(LockError, match="wait for it to finish"):
            from storage import group_writer, make_provenance

            group_writer(open_store(dst, mode="r+"), "priors/toy", {"m": ((2,), "uint8")},
                         make_provenance({"name": "toy", "version": "1"}))
        CAUGHT.add("two writers on one group")
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    assert (dst / "locks/priors_toy.lock").exists()
    assert "stale lock file locks/priors_toy.lock" in _problems(dst)
    third = subprocess.run([sys.executable, "-c", HOLD.format(sleep=0), str(dst)], env=env,
                           capture_output=True, text=True, timeout=120)
    assert third.returncode == 0, third.stderr
    assert not (dst / "locks/priors_toy.lock").exists()
    CAUGHT.add("stale lock of a killed writer")


# ---- values the library refuses before writing ------------------------------------------------
def test_bad_values_are_one_line_errors_before_anything_is_written(built, tmp_path):
    index = open_store(built[1]).index
    for unit in (0, -1):
        with pytest.raises(ValueError, match="unit size must be a positive integer"):
            create_store(tmp_path / "u", dataset="x", index=index, image_size=(64, 32), source_root="/", unit_size=unit)
    CAUGHT.add("unit size 0 / -1")
    with pytest.raises(ValueError, match="image size must be 1..4096 per side"):
        create_store(tmp_path / "u", dataset="x", index=index, image_size=(100000, 100000), source_root="/")
    from pipelines.ingest import parse_size

    with pytest.raises(ValueError, match="1..4096 per side"):
        parse_size("100000x100000")
    CAUGHT.add("absurd image size")
    assert not (tmp_path / "u").exists()
    (tmp_path / "file").write_text("x")
    with pytest.raises(StoreError, match="is a file, not a store directory"):
        create_store(tmp_path / "file", dataset="x", index=index, image_size=(64, 32), source_root="/")
    with pytest.raises(StoreError, match="is a file"):
        open_store(tmp_path / "file")
    CAUGHT.add("store path is a file")


def test_corpus_is_complete():
    """Runs last in this file: every case above was caught (22 of 22)."""
    assert CAUGHT == CORPUS, sorted(CORPUS - CAUGHT)
    print(f"corruption corpus: {len(CAUGHT)} of {len(CORPUS)} cases caught")


def test_group_and_checkpoint_values_are_checked(built, tmp_path):
    from reid_train.checkpoint import CheckpointError, load_checkpoint
    from storage import group_writer, make_provenance

    dst = _copy(built, tmp_path)
    s = open_store(dst, mode="r+")
    for bad in ((0, 3), (-4, 3)):
        with pytest.raises(ValueError, match="every dimension must be a positive integer"):
            group_writer(s, "priors/dsap", {"dsap": (bad, "uint8")}, make_provenance({"name": "x"}), overwrite=True)
    s.close()
    assert verify_store(open_store(dst)).ok  # nothing was touched
    (tmp_path / "c.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="is unreadable"):
        load_checkpoint(tmp_path / "c.pt")


def test_verify_reports_damaged_metadata_files_instead_of_crashing(built, tmp_path):
    for rel in ("priors/dsap/zarr.json", "priors/dsap/dsap/zarr.json", "images/zarr.json"):
        dst = tmp_path / rel.replace("/", "_")
        shutil.copytree(built[1], dst)
        (dst / rel).write_text('{"zarr_format": 3, "node_typ')
        assert "unreadable" in _problems(dst) or "missing" in _problems(dst), rel
    dst = tmp_path / "root"
    shutil.copytree(built[1], dst)
    (dst / "zarr.json").write_text("{")
    with pytest.raises(StoreError, match="root zarr.json is unreadable"):
        open_store(dst)

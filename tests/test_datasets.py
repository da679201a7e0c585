"""Dataset adapters (storage/datasets.py), labels (storage/relabel.py), duplicates (storage/duplicates.py)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from storage.datasets import COLUMNS, DATASETS, register_dataset, scan_dataset, summarize
from storage.duplicates import mark_duplicates
from storage.relabel import assign_labels

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def _touch(root: Path, *relpaths: str) -> None:
    for relpath in relpaths:
        path = root / relpath
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x")  # adapters never read the bytes


def _rows(df: pd.DataFrame) -> list[tuple]:
    return [tuple(r) for r in df[["split", "pid", "camid", "relpath", "status", "reason"]].itertuples(index=False)]


# ---------------------------------------------------------------------------------------------- Market-1501


def _fake_market(root: Path) -> None:
    _touch(
        root,
        "bounding_box_train/0002_c1s1_000451_03.jpg",
        "bounding_box_train/0002_c2s1_000301_01.jpg",
        "bounding_box_train/0007_c3s3_071002_01.jpg",
        "query/0004_c2s3_059152_00.jpg",
        "query/-1_c1s1_000401_03.jpg",  # junk in the query (never in the real one, still junk)
        "bounding_box_test/-1_c1s1_000401_03.jpg",  # junk
        "bounding_box_test/0000_c1s1_000151_01.jpg",  # distractor
        "bounding_box_test/0004_c6s1_000476_03.jpg",
        "bounding_box_test/0004_c9s1_000476_03.jpg",  # camera 9 does not exist
        "bounding_box_test/Thumbs.db",  # the real release ships one
        "bounding_box_test/holiday photo.jpg",
    )


def test_market1501_rows_sorted_with_junk_distractors_and_bad_names(tmp_path):
    _fake_market(tmp_path)
    df = scan_dataset("market1501", tmp_path)
    assert list(df.columns) == COLUMNS
    assert df["pid"].dtype == np.int64 and df["camid"].dtype == np.int64
    assert set(df["dataset"]) == {"market1501"} and df.attrs["root"] == str(tmp_path)
    assert _rows(df) == [
        ("train", 2, 1, "bounding_box_train/0002_c1s1_000451_03.jpg", "ok", ""),
        ("train", 2, 2, "bounding_box_train/0002_c2s1_000301_01.jpg", "ok", ""),
        ("train", 7, 3, "bounding_box_train/0007_c3s3_071002_01.jpg", "ok", ""),
        ("query", -1, 1, "query/-1_c1s1_000401_03.jpg", "skipped", "junk"),
        ("query", 4, 2, "query/0004_c2s3_059152_00.jpg", "ok", ""),
        ("gallery", -1, 1, "bounding_box_test/-1_c1s1_000401_03.jpg", "skipped", "junk"),
        ("gallery", 0, 1, "bounding_box_test/0000_c1s1_000151_01.jpg", "ok", ""),
        ("gallery", 4, 6, "bounding_box_test/0004_c6s1_000476_03.jpg", "ok", ""),
        ("gallery", 4, 9, "bounding_box_test/0004_c9s1_000476_03.jpg", "skipped", "camera_out_of_range"),
        ("gallery", -1, -1, "bounding_box_test/Thumbs.db", "skipped", "not_an_image"),
        ("gallery", -1, -1, "bounding_box_test/holiday photo.jpg", "skipped", "unparsable_name"),
    ]
    assert df.equals(scan_dataset("market1501", tmp_path))  # deterministic
    assert summarize(df).values.tolist() == [
        ["ok", "", 6],
        ["skipped", "junk", 2],
        ["skipped", "camera_out_of_range", 1],
        ["skipped", "not_an_image", 1],
        ["skipped", "unparsable_name", 1],
    ]


def test_missing_split_folder_is_a_clear_error(tmp_path):
    _touch(tmp_path, "bounding_box_train/0002_c1s1_000451_03.jpg", "query/0004_c2s3_059152_00.jpg")
    with pytest.raises(FileNotFoundError, match="bounding_box_test"):
        scan_dataset("market1501", tmp_path)
    with pytest.raises(KeyError, match="market1501"):
        scan_dataset("market-1501", tmp_path)


def test_registry_is_a_decorator_and_refuses_duplicates():
    assert {"market1501", "dukemtmc", "cuhk03-np", "msmt17", "csv"} <= set(DATASETS)
    with pytest.raises(ValueError, match="already registered"):
        register_dataset("market1501")(lambda root: ("x", root, []))


# ------------------------------------------------------------------------------------ Duke and CUHK03-NP


def test_dukemtmc(tmp_path):
    _touch(
        tmp_path,
        "bounding_box_train/0001_c2_f0046182.jpg",
        "bounding_box_train/0005_c8_f0010000.jpg",
        "query/0005_c5_f0051781.jpg",
        "bounding_box_test/0002_c9_f0000001.jpg",
        "bounding_box_test/0005_c1_0051781.jpg",  # no 'f' before the frame
    )
    df = scan_dataset("dukemtmc", tmp_path)
    assert _rows(df) == [
        ("train", 1, 2, "bounding_box_train/0001_c2_f0046182.jpg", "ok", ""),
        ("train", 5, 8, "bounding_box_train/0005_c8_f0010000.jpg", "ok", ""),
        ("query", 5, 5, "query/0005_c5_f0051781.jpg", "ok", ""),
        ("gallery", 2, 9, "bounding_box_test/0002_c9_f0000001.jpg", "skipped", "camera_out_of_range"),
        ("gallery", -1, -1, "bounding_box_test/0005_c1_0051781.jpg", "skipped", "unparsable_name"),
    ]


@pytest.mark.parametrize("variant", ["detected", "labeled"])
def test_cuhk03_np_both_roots(tmp_path, variant):
    base = tmp_path / "cuhk03-np"
    for v in ("detected", "labeled"):
        _touch(
            base / v,
            f"bounding_box_train/0001_c1_{v}.png",  # name does not parse: "detected" is not a number
            "bounding_box_train/0001_c1_1.png",
            "bounding_box_train/0001_c2_6.png",
            "query/0003_c1_2.png",
            "bounding_box_test/0003_c2_7.png",
            "bounding_box_test/0003_c3_7.png",
        )
    df = scan_dataset("cuhk03-np", base, variant=variant)
    assert set(df["dataset"]) == {f"cuhk03-np-{variant}"}
    assert _rows(df) == [
        ("train", 1, 1, f"{variant}/bounding_box_train/0001_c1_1.png", "ok", ""),
        ("train", -1, -1, f"{variant}/bounding_box_train/0001_c1_{variant}.png", "skipped", "unparsable_name"),
        ("train", 1, 2, f"{variant}/bounding_box_train/0001_c2_6.png", "ok", ""),
        ("query", 3, 1, f"{variant}/query/0003_c1_2.png", "ok", ""),
        ("gallery", 3, 2, f"{variant}/bounding_box_test/0003_c2_7.png", "ok", ""),
        ("gallery", 3, 3, f"{variant}/bounding_box_test/0003_c3_7.png", "skipped", "camera_out_of_range"),
    ]
    direct = scan_dataset("cuhk03-np", base / variant, variant=variant)  # root = the variant folder
    assert direct["relpath"].tolist() == [r.removeprefix(f"{variant}/") for r in df["relpath"]]
    with pytest.raises(ValueError):
        scan_dataset("cuhk03-np", base, variant="manual")


# ------------------------------------------------------------------------------------------------- MSMT17


def _fake_msmt(root: Path, train_dir: str, test_dir: str) -> None:
    train = ["0000/0000_000_01_0303morning_0008_0.jpg 0", "0001/0001_004_15_0113noon_0100_1.jpg 1"]
    val = ["0002/0002_000_07_0302afternoon_0001_0.jpg 2"]
    query = ["0000/0000_001_03_0114morning_0002_0.jpg 0", "not a valid line"]
    gallery = [
        "0000/0000_002_16_0114noon_0003_1.jpg 0",
        "0000/0000_003_05_0114noon_0004_1.jpg 0",
        "",
        "0009/oops.jpg 9",
    ]
    for name, lines, folder in (("train", train, train_dir), ("val", val, train_dir), ("query", query, test_dir)):
        (root / f"list_{name}.txt").parent.mkdir(parents=True, exist_ok=True)
        (root / f"list_{name}.txt").write_text("\n".join(lines) + "\n")
        _touch(root / folder, *(line.split()[0] for line in lines if len(line.split()) == 2))
    (root / "list_gallery.txt").write_text("\n".join(gallery) + "\n")
    _touch(root / test_dir, "0000/0000_002_16_0114noon_0003_1.jpg", "0009/oops.jpg")  # 0000_003_05 missing


@pytest.mark.parametrize("train_dir,test_dir", [("train", "test"), ("mask_train_v2", "mask_test_v2")])
def test_msmt17_v1_v2(tmp_path, train_dir, test_dir):
    _fake_msmt(tmp_path, train_dir, test_dir)
    df = scan_dataset("msmt17", tmp_path)
    t, q = train_dir, test_dir
    assert _rows(df) == [
        ("train", 0, 1, f"{t}/0000/0000_000_01_0303morning_0008_0.jpg", "ok", ""),
        ("train", 1, 15, f"{t}/0001/0001_004_15_0113noon_0100_1.jpg", "ok", ""),
        ("train", 2, 7, f"{t}/0002/0002_000_07_0302afternoon_0001_0.jpg", "ok", ""),  # from list_val
        ("query", 0, 3, f"{q}/0000/0000_001_03_0114morning_0002_0.jpg", "ok", ""),
        ("query", -1, -1, f"{q}/not", "skipped", "unparsable_line"),
        ("gallery", 0, 16, f"{q}/0000/0000_002_16_0114noon_0003_1.jpg", "skipped", "camera_out_of_range"),
        ("gallery", 0, 5, f"{q}/0000/0000_003_05_0114noon_0004_1.jpg", "skipped", "missing_file"),
        ("gallery", 9, -1, f"{q}/0009/oops.jpg", "skipped", "unparsable_name"),
    ]
    without_val = scan_dataset("msmt17", tmp_path, include_val=False)
    assert without_val.query("split == 'train'")["pid"].tolist() == [0, 1]
    with pytest.raises(TypeError):
        scan_dataset("msmt17", tmp_path, include_val="false")  # a CLI string must not read as True


def test_msmt17_missing_list(tmp_path):
    (tmp_path / "train").mkdir()
    with pytest.raises(FileNotFoundError, match="list_train.txt"):
        scan_dataset("msmt17", tmp_path)


# ---------------------------------------------------------------------------------------------------- CSV


def test_csv_manifest(tmp_path):
    folder = tmp_path / "mine"
    _touch(folder, "imgs/a.jpg", "imgs/b.png", "imgs/c.jpg", "imgs/notes.txt", "imgs/junk.jpg")
    _touch(tmp_path, "elsewhere/d.jpg")
    outside = (tmp_path / "elsewhere" / "d.jpg").as_posix()
    inside = (folder / "imgs" / "c.jpg").as_posix()
    (folder / "manifest.csv").write_text(
        "path,pid,camid,split\n"
        "imgs/a.jpg,12,0,train\n"
        "imgs/b.png,3,2,query\n"
        f"{inside},3,1,gallery\n"
        f"{outside},5,1,gallery\n"
        "imgs/missing.jpg,4,1,gallery\n"
        "imgs/notes.txt,4,1,gallery\n"
        "imgs/junk.jpg,-1,1,gallery\n"
        "imgs/a.jpg,x,1,train\n"
        "imgs/a.jpg,1,1,validation\n"
    )
    df = scan_dataset("csv", folder / "manifest.csv")
    assert df.attrs["root"] == str(folder)
    assert df.equals(scan_dataset("csv", folder))
    assert _rows(df) == [
        ("train", 12, 0, "imgs/a.jpg", "ok", ""),
        ("train", -1, -1, "imgs/a.jpg", "skipped", "bad_manifest_row"),
        ("train", 1, 1, "imgs/a.jpg", "skipped", "bad_manifest_row"),
        ("query", 3, 2, "imgs/b.png", "ok", ""),
        ("gallery", 5, 1, outside, "skipped", "outside_root"),
        ("gallery", 3, 1, "imgs/c.jpg", "ok", ""),
        ("gallery", -1, 1, "imgs/junk.jpg", "skipped", "junk"),
        ("gallery", 4, 1, "imgs/missing.jpg", "skipped", "missing_file"),
        ("gallery", 4, 1, "imgs/notes.txt", "skipped", "not_an_image"),
    ]
    opted_in = scan_dataset("csv", folder, allow_outside_root=True)
    assert opted_in.loc[opted_in["relpath"] == outside, "status"].tolist() == ["ok"]
    (folder / "bad.csv").write_text("file,pid,camid,split\n")
    with pytest.raises(ValueError, match="path"):
        scan_dataset("csv", folder / "bad.csv")


# ------------------------------------------------------------------------------------ labels and duplicates


def _table(rows):
    return pd.DataFrame(rows, columns=["split", "pid", "status", "relpath", "sha256"]).assign(reason="", detail="")


def test_assign_labels_by_hand():
    df = _table(
        [
            ("train", 40, "ok", "a", "1"),
            ("train", 7, "ok", "b", "2"),
            ("train", 40, "ok", "c", "3"),
            ("train", 99, "skipped", "d", "4"),  # only a skipped image: no label
            ("train", 12, "ok", "e", "5"),
            ("query", 7, "ok", "f", "6"),
            ("gallery", 0, "ok", "g", "7"),
        ]
    )
    out = assign_labels(df)
    assert out["label"].tolist() == [2, 0, 2, -1, 1, -1, -1]
    assert out["label"].dtype == np.int64 and out["pid"].tolist() == df["pid"].tolist()
    assert "label" not in df.columns


@settings(max_examples=50, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from(["train", "query", "gallery"]), st.integers(-1, 30), st.booleans()), max_size=40
    )
)
def test_assign_labels_properties(rows):
    df = _table([(s, p, "ok" if ok else "skipped", str(i), str(i)) for i, (s, p, ok) in enumerate(rows)])
    labels = assign_labels(df)["label"].to_numpy()
    train = ((df["split"] == "train") & (df["status"] == "ok")).to_numpy()
    assert np.all(labels[~train] == -1)
    naive = {pid: i for i, pid in enumerate(sorted(set(df.loc[train, "pid"])))}
    assert labels[train].tolist() == [naive[p] for p in df.loc[train, "pid"]]


def test_mark_duplicates_keeps_the_first_ok_copy():
    df = _table(
        [
            ("train", 1, "skipped", "a", "h1"),  # not ok: does not count as the original
            ("train", 1, "ok", "b", "h1"),
            ("train", 2, "ok", "c", "h2"),
            ("query", 1, "ok", "d", "h1"),
            ("gallery", 1, "ok", "e", "h1"),
            ("gallery", 3, "ok", "f", ""),  # no hash (failed read): never a duplicate
            ("gallery", 3, "ok", "g", ""),
            ("gallery", 2, "ok", "h", "h2"),
        ]
    )
    out = mark_duplicates(df, "sha256")
    assert out["status"].tolist() == ["skipped", "ok", "ok", "skipped", "skipped", "ok", "ok", "skipped"]
    assert out["reason"].tolist() == ["", "", "", "duplicate", "duplicate", "", "", "duplicate"]
    assert out.loc[[3, 4, 7], "detail"].tolist() == ["same sha256 as b", "same sha256 as b", "same sha256 as c"]
    assert df["status"].tolist()[1:3] == ["ok", "ok"] and (df["reason"] == "").all()  # input untouched
    per_split = mark_duplicates(df, "sha256", within=["split"])
    assert per_split["status"].tolist() == ["skipped", "ok", "ok", "ok", "ok", "ok", "ok", "ok"]
    assert summarize(out).values.tolist() == [["ok", "", 4], ["skipped", "duplicate", 3], ["skipped", "", 1]]


# ------------------------------------------------------------------------------------------- real layout


@pytest.mark.real_data
def test_mini_market1501_real_layout():
    root = SHARED_DATA / "mini_market1501"
    if not root.is_dir():
        pytest.skip(f"{root} absent (real crops live in ../shared/data)")
    df = assign_labels(scan_dataset("market1501", root))
    assert (df["status"] == "ok").all()
    assert df.groupby("split").size().to_dict() == {"train": 32, "query": 32, "gallery": 32}
    train = df[df["split"] == "train"]
    assert train["pid"].nunique() == 16 and sorted(train["label"].unique()) == list(range(16))
    assert (train.groupby("pid")["label"].nunique() == 1).all()
    assert np.all(np.diff(train.drop_duplicates("pid")["label"].to_numpy()) == 1)  # sorted pids -> 0..15
    assert (df.loc[df["split"] != "train", "label"] == -1).all()
    assert set(df["camid"]) == set(range(1, 7))
    assert set(df.query("split == 'query'")["pid"]) == set(df.query("split == 'gallery'")["pid"])


def test_csv_manifest_encodings_and_bad_headers(tmp_path):
    """Issue 15: BOM, latin-1, a duplicated column, a header without rows, a 300-character name, ../ paths."""
    folder = tmp_path / "m"
    _touch(folder, "a.jpg")
    name = "caf\xe9.jpg".encode("latin-1")  # a latin-1 file name, listed by a latin-1 manifest
    (folder / os.fsdecode(name)).write_bytes(b"x")
    (tmp_path / "outside.jpg").write_bytes(b"x")
    (folder / "bom.csv").write_bytes("\ufeffpath,pid,camid,split\na.jpg,1,1,train\n".encode("utf-8"))
    assert _rows(scan_dataset("csv", folder / "bom.csv")) == [("train", 1, 1, "a.jpg", "ok", "")]
    (folder / "latin1.csv").write_bytes(b"path,pid,camid,split\n" + name + b",2,1,train\n../outside.jpg,3,1,train\n"
                                        + b"x" * 300 + b".jpg,4,1,train\n")
    df = scan_dataset("csv", folder / "latin1.csv")
    got = {r.relpath: (r.status, r.reason) for r in df.itertuples()}
    assert got["caf\\xe9.jpg"] == ("ok", "")  # escaped in the index, found on disk
    assert got["../outside.jpg"] == ("skipped", "outside_root")
    assert got["x" * 300 + ".jpg"] == ("skipped", "unreadable")
    assert "not UTF-8" in df.loc[df["relpath"] == "caf\\xe9.jpg", "detail"].item()
    for text, match in (("path,pid,camid,split,pid\na.jpg,1,1,train,2\n", r"names \['pid'\] more than once"),
                        ("path,pid,camid,split\n", "lists no images"), ("", "is empty")):
        (folder / "bad.csv").write_text(text)
        with pytest.raises(ValueError, match=match):
            scan_dataset("csv", folder / "bad.csv")

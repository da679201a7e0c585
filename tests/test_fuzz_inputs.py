"""Fuzz ingest with >= 80 bad inputs mixed with good ones, as a folder and as a CSV manifest (issue 15).

Every input must be exactly one index row; every bad one a non-ok row with a reason; every good
one an ok row (and, for the folder, a stored image); nothing crashes, and no detail holds file
contents. The counts are printed (``-s``) and recorded in docs/store.md.
"""
from __future__ import annotations

import io
import os
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image


SPLIT_DIRS = ("bounding_box_train", "query", "bounding_box_test")


def _good_image(rng: np.random.Generator, fmt: str) -> bytes:
    small = rng.integers(0, 256, (8, 4, 3), dtype=np.uint8)
    img = cv2.resize(small, (32, 64), interpolation=cv2.INTER_CUBIC)
    ok, buf = cv2.imencode(f".{fmt}", img)
    assert ok
    return buf.tobytes()


def _png_chunks(data: bytes) -> list[tuple[int, bytes]]:
    pos, out = 8, []
    while pos < len(data):
        n = int.from_bytes(data[pos:pos + 4], "big")
        out.append((pos, data[pos + 4:pos + 8]))
        pos += 12 + n
    return out


def _make_corpus(root: Path, outside: Path) -> tuple[dict[str, bool], dict[str, str]]:
    """Write the inputs; return {relpath-as-listed: is_good} and {relpath: expected reason} (where fixed)."""
    rng = np.random.default_rng(15)
    for d in SPLIT_DIRS:
        (root / d).mkdir(parents=True)
    outside.mkdir()
    good, expect = {}, {}
    counter = iter(range(1, 10_000))

    def name(split: int = 0, pid: int | None = None, ext: str = "jpg", cam: int = 1) -> str:
        i = next(counter)
        return f"{SPLIT_DIRS[split]}/{pid if pid is not None else 1 + i % 7:04d}_c{cam}s1_{i:06d}_00.{ext}"

    def put(data: bytes, ok: bool, reason: str = "", **kw) -> str:
        rel = name(**kw)
        (root / rel).write_bytes(data)
        good[rel] = ok
        if reason:
            expect[rel] = reason
        return rel

    jpg = [_good_image(rng, "jpg") for _ in range(12)]
    png = [_good_image(rng, "png") for _ in range(6)]
    for i, data in enumerate(jpg):  # good ones, in every split
        put(data, True, split=i % 3)
    for i, data in enumerate(png):
        put(data, True, split=i % 3, ext="png")
    # good but unusual: gray, palette, 16-bit, RGBA, upper-case extension, non-UTF-8 name
    for mode in ("L", "P", "I;16", "RGBA"):
        buf = io.BytesIO()
        arr = rng.integers(0, 255, (64, 32), dtype=np.uint8)
        im = Image.fromarray(arr).convert(mode) if mode != "I;16" else Image.fromarray(arr.astype(np.uint16) * 257)
        im.save(buf, format="PNG")
        put(buf.getvalue(), True, ext="png", split=2)
    put(_good_image(rng, "jpg"), True, ext="JPG")
    raw_name = os.fsencode(root / SPLIT_DIRS[2]) + b"/0003_c1s1_009999_00\xff\xfe.jpg"
    with open(raw_name, "wb") as f:
        f.write(_good_image(rng, "jpg"))
    good[os.fsdecode(raw_name)[len(str(root)) + 1:]] = False  # the name does not parse: recorded, not lost
    expect[os.fsdecode(raw_name)[len(str(root)) + 1:]] = "unparsable_name"
    weird_ok = os.fsencode(root / SPLIT_DIRS[0]) + b"/0002_c2s1_009998_00.jpg\xff"  # odd tail: not an image name
    with open(weird_ok, "wb") as f:
        f.write(b"x")

    # ---- bad content ----
    put(b"", False, "empty_file")
    for k in range(20):
        put(rng.integers(0, 256, int(rng.integers(1, 4000)), dtype=np.uint8).tobytes(), False)
    for k, frac in enumerate(np.linspace(0.05, 0.95, 12)):
        data = jpg[k % len(jpg)]
        put(data[: int(len(data) * frac)], False)
    for k, frac in enumerate(np.linspace(0.1, 0.9, 6)):
        data = png[k % len(png)]
        put(data[: int(len(data) * frac)], False, ext="png")
    for k in range(8):  # garbled entropy data (a block of random bytes in the scan)
        data = bytearray(jpg[k])
        sos = data.find(b"\xff\xda")
        a = sos + 20 + k * 7
        data[a:a + 200] = rng.integers(0, 256, 200, dtype=np.uint8).tobytes()
        put(bytes(data), False, "corrupt")
    for k in range(4):  # PNG: a bad CRC on IDAT (the data intact), then a broken zlib stream
        data = bytearray(png[k])
        pos, _ = next(c for c in _png_chunks(bytes(data)) if c[1] == b"IDAT")
        n = int.from_bytes(data[pos:pos + 4], "big")
        crc_at = pos + 8 + n
        data[crc_at] ^= 0x01
        put(bytes(data), False, "corrupt", ext="png")
        data = bytearray(png[k])
        data[pos + 8 + n // 2] ^= 0xFF
        fixed = zlib.crc32(bytes(data[pos + 4:pos + 8 + n])).to_bytes(4, "big")
        data[crc_at:crc_at + 4] = fixed  # CRC matches: only zlib can tell
        put(bytes(data), False, ext="png")
    put(jpg[0][:200], False)  # header only
    put(b"\xff\xd8\xff" + bytes(5000), False)  # JPEG magic + zeros
    put(b"\x89PNG\r\n\x1a\n" + bytes(100), False, ext="png")
    put(b"hello, this is text\n" * 10, False, "not_an_image")
    put(b"GIF89a" + bytes(20), False, ext="gif")
    put(b"BM" + bytes(30), False, ext="bmp")
    put(b"RIFF\x10\x00\x00\x00WEBPVP8 " + bytes(10), False, ext="webp")
    buf = io.BytesIO()
    Image.fromarray(np.zeros((64, 32), np.float32), mode="F").save(buf, format="TIFF")
    put(buf.getvalue(), False, "unsupported_mode", ext="tif")
    for hw in ((1, 1), (4, 4000), (64, 2), (9000, 16)):  # absurd sizes
        b2 = io.BytesIO()
        Image.new("RGB", (hw[1], hw[0])).save(b2, format="PNG")
        put(b2.getvalue(), False, "absurd_size", ext="png")
    big = root / name()
    with open(big, "wb") as f:  # sparse: 40 MB of JPEG magic + zeros, never read whole
        f.write(b"\xff\xd8\xff\xe0")
        f.truncate(40 << 20)
    rel = str(big.relative_to(root))
    good[rel], expect[rel] = False, "too_large"
    put(jpg[1], False, "duplicate", split=2)  # exact copy of a good query image, listed after it

    # ---- bad names ----
    for bad_name in ("abc.jpg", "0001_c1.jpg", "x_c1s1_000001_00.jpg", "0001_cXs1_000001_00.jpg", "-2_c1s1_1_00.jpg"):
        rel = f"{SPLIT_DIRS[0]}/{bad_name}"
        (root / rel).write_bytes(_good_image(rng, "jpg"))
        good[rel], expect[rel] = False, "unparsable_name"
    put(_good_image(rng, "jpg"), False, "camera_out_of_range", cam=9)
    rel = f"{SPLIT_DIRS[2]}/-1_c1s1_000777_00.jpg"
    (root / rel).write_bytes(_good_image(rng, "jpg"))
    good[rel], expect[rel] = False, "junk"

    # ---- entries that are not files ----
    def special(make, reason: str) -> None:
        rel = name()
        make(root / rel)
        good[rel], expect[rel] = False, reason

    special(lambda p: p.mkdir(), "not_a_file")
    special(lambda p: os.mkfifo(p), "not_a_file")
    special(lambda p: os.symlink("/dev/zero", p), "not_a_file")
    special(lambda p: os.symlink(p.parent / "nowhere.jpg", p), "broken_link")
    special(lambda p: os.symlink(p, p), "broken_link")  # a loop
    special(lambda p: (os.symlink(p.with_suffix(".b.jpg"), p), os.symlink(p, p.with_suffix(".b.jpg"))), "broken_link")
    # its partner .b.jpg is an entry too:
    partner = [r for r in good if r.endswith(".jpg") and not (root / r).exists() and os.path.islink(root / r)]
    special(lambda p: os.symlink("/etc/passwd", p), "outside_root")
    (outside / "x.jpg").write_bytes(jpg[5])
    special(lambda p: os.symlink(outside / "x.jpg", p), "outside_root")
    for p in (root / SPLIT_DIRS[0]).iterdir():
        rel = str(p.relative_to(root))
        if rel not in good and p.suffix.lower() in (".jpg",) and os.path.islink(p):
            good[rel] = False  # the loop's partner: its name does not parse (folder) / broken_link (manifest)
    del partner
    return good, expect


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    base = tmp_path_factory.mktemp("fuzz")
    root, outside = base / "market", base / "outside"
    good, expect = _make_corpus(root, outside)
    return root, outside, good, expect


def _check(df, good: dict[str, bool], expect: dict[str, str], label: str) -> dict:
    from storage.datasets import escape_name

    rows = {r.relpath: r for r in df.itertuples()}
    listed = {escape_name(k): v for k, v in good.items()}
    missing = sorted(set(listed) - set(rows))
    assert not missing, f"{label}: inputs without a row: {missing[:5]}"
    lost = [k for k, v in listed.items() if v and rows[k].status != "ok"]
    assert not lost, f"{label}: good images lost: {[(k, rows[k].reason, rows[k].detail) for k in lost[:5]]}"
    passed = [k for k, v in listed.items() if not v and rows[k].status == "ok"]
    assert not passed, f"{label}: bad inputs stored as ok: {passed[:5]}"
    no_reason = [k for k, v in listed.items() if not v and not rows[k].reason]
    assert not no_reason
    wrong = {k: (rows[escape_name(k)].reason, r) for k, r in expect.items() if rows[escape_name(k)].reason != r}
    assert not wrong, f"{label}: unexpected reasons: {list(wrong.items())[:5]}"
    assert not any("root:" in (r.detail or "") for r in rows.values()), "file contents in a detail"
    n_bad = sum(not v for v in listed.values())
    print(f"{label}: {len(listed)} inputs, {n_bad} bad all recorded with a reason, "
          f"{len(listed) - n_bad} good all kept")
    return {"inputs": len(listed), "bad": n_bad}


def test_folder_fuzz_every_input_is_a_row(corpus, tmp_path):
    from pipelines.ingest import plan_ingest

    root, _, good, expect = corpus
    df = plan_ingest("market1501", root, progress=False)
    counts = _check(df, good, expect, "folder")
    assert counts["bad"] >= 80
    # the index is storable (escaped names) and the good images are written and verified
    import sys

    sys.path.insert(0, str(Path(__file__).parent))
    import fault_harness as h
    from storage import open_store
    from storage.verify import verify_store

    h.ingest(root, tmp_path / "store")
    s = open_store(tmp_path / "store")
    assert s.n_images == sum(good.values()) and verify_store(s).ok
    assert len(s.index) == len(df)


def test_manifest_fuzz_every_row_is_a_row(corpus):
    from pipelines.ingest import plan_ingest

    root, outside, good, expect = corpus
    splits = {"bounding_box_train": "train", "query": "query", "bounding_box_test": "gallery"}
    lines = ["path,pid,camid,split"]
    for rel in good:
        lines.append(f"{rel},{1 + len(lines) % 5},1,{splits[rel.split('/')[0]]}")
    extra = {
        "../outside/x.jpg": "outside_root", f"{outside}/x.jpg": "outside_root", "bounding_box_train/nope.jpg": "missing_file",
        "a" * 300 + ".jpg": "unreadable", "notes.txt": "not_an_image", "": "bad_manifest_row",
    }
    for rel in extra:
        lines.append(f"{rel},3,1,train")
    lines += ["bounding_box_train/x.jpg,abc,1,train", "bounding_box_train/y.jpg,1,1,validation",
              "bounding_box_train/z.jpg,1,1,train,extra-field"]
    bad_rows = {"bounding_box_train/x.jpg": "bad_manifest_row", "bounding_box_train/y.jpg": "bad_manifest_row",
                "bounding_box_train/z.jpg": "bad_manifest_row"}
    data = ("\n".join(lines) + "\n").encode("utf-8", "surrogateescape")
    (root / "manifest.csv").write_bytes(b"\xef\xbb\xbf" + data)  # with a byte-order mark
    df = plan_ingest("csv", root / "manifest.csv", progress=False)
    listed = dict(good)
    manifest_expect = {k: v for k, v in expect.items() if v not in ("unparsable_name", "camera_out_of_range", "junk")}
    for rel, reason in {**extra, **bad_rows}.items():
        listed[rel] = False
        manifest_expect[rel] = reason
    for rel, reason in expect.items():  # names the folder adapter parses are plain rows in a manifest
        if reason in ("unparsable_name", "camera_out_of_range", "junk"):
            listed[rel] = True
    listed = {k: v for k, v in listed.items() if k != ""}
    manifest_expect.pop("", None)
    counts = _check(df, listed, manifest_expect, "manifest")
    assert counts["bad"] >= 80
    assert (df["reason"] == "bad_manifest_row").sum() >= 4  # the empty path too

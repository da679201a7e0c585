"""Dataset adapters: one short function per on-disk layout, all returning the same table of files.

``scan_dataset(name, root, **options)`` lists every file of a dataset without decoding it and returns a
``pandas.DataFrame`` with one row per file (``COLUMNS``):

* ``dataset`` (str): the adapter's name (``cuhk03-np-detected`` / ``cuhk03-np-labeled`` for CUHK03-NP);
* ``split``: 'train' | 'query' | 'gallery';
* ``pid`` (int64): the identity as written by the dataset (-1 where unknown);
* ``camid`` (int64): **the dataset's own camera number as written in the file name** (``c1`` -> 1,
  MSMT17 ``_01_`` -> 1), not shifted to 0-based; -1 where unknown;
* ``relpath`` (str): POSIX path relative to the ``root`` that was passed in (absolute only for CSV rows
  pointing outside the manifest's folder);
* ``status``: 'ok' | 'skipped'; ``reason``: '' or a code; ``detail``: free text.

Nothing is dropped silently: a file whose name does not parse is a ``skipped`` row with reason
``unparsable_name``; other skip reasons are ``junk`` (Market pid -1), ``not_an_image`` (extension not an
image, e.g. Market's ``Thumbs.db``), ``camera_out_of_range``, ``missing_file`` (listed but absent),
``unparsable_line`` (MSMT17 list line) and ``bad_manifest_row`` (CSV).

Every entry of a split folder whose name has an image extension is a row, whatever it is. Before a row
stays ``ok``, :func:`scan_dataset` looks at the path without opening it: ``broken_link`` (dangling link,
link loop), ``not_a_file`` (a directory named ``x.jpg``, a FIFO, a device such as a link to
``/dev/zero``), ``outside_root`` (the path, or a link, resolves outside the dataset root or the CSV's
folder: refused unless ``allow_outside_root=True``), ``unreadable`` (e.g. a name too long for the OS).
File names that are not valid UTF-8 are kept: ``relpath`` holds them with each undecodable byte written
``\\xNN`` (:func:`escape_name`; :func:`source_path` maps them back) and ``detail`` says so. Rows are sorted by
(train, query, gallery) then ``relpath``, so two scans of the same tree give the same table.

Adding a dataset = one ``@register_dataset("name")`` function yielding ``Entry`` tuples.
"""

from __future__ import annotations

import csv
import io
import os
import re
import stat
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import NamedTuple

import pandas as pd

__all__ = [
    "COLUMNS",
    "DATASETS",
    "IMAGE_SUFFIXES",
    "SPLITS",
    "Entry",
    "register_dataset",
    "scan_dataset",
    "escape_name",
    "source_path",
    "summarize",
]

COLUMNS = ["dataset", "split", "pid", "camid", "relpath", "status", "reason", "detail"]
SPLITS = ("train", "query", "gallery")
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp"})
MARKET_FOLDERS = {"train": "bounding_box_train", "query": "query", "gallery": "bounding_box_test"}


class Entry(NamedTuple):
    """One file as an adapter sees it (``dataset`` is filled in by ``scan_dataset``)."""

    split: str
    pid: int
    camid: int
    relpath: str
    status: str = "ok"
    reason: str = ""
    detail: str = ""


def skipped(split: str, relpath: str, reason: str, detail: str = "", pid: int = -1, camid: int = -1) -> Entry:
    return Entry(split, pid, camid, relpath, "skipped", reason, detail)


DATASETS: dict[str, Callable[..., tuple[str, Path, Iterable[Entry]]]] = {}


def register_dataset(name: str):
    """Decorator: ``@register_dataset("market1501")`` on ``fn(root: Path, **options) -> (dataset, base, entries)``.

    ``dataset`` names the table's rows, ``base`` is the folder the ``relpath`` s are relative to.
    """

    def decorate(fn):
        if name in DATASETS:
            raise ValueError(f"dataset adapter {name!r} is already registered")
        DATASETS[name] = fn
        return fn

    return decorate


def escape_name(name: str) -> str:
    """A file name as the OS gave it (undecodable bytes as surrogates) -> valid UTF-8 text, ``\\xNN`` per byte."""
    try:
        name.encode("utf-8")
        return name
    except UnicodeEncodeError:
        return os.fsencode(name).decode("utf-8", "backslashreplace")


_ESCAPED_BYTE = re.compile(rb"\\x([0-9a-f]{2})")


def source_path(root: str | Path, relpath: str) -> str:
    """The file behind an index ``relpath`` (undoes :func:`escape_name` when the literal name is absent)."""
    path = os.path.join(os.fspath(root), relpath)
    if "\\x" not in relpath or os.path.lexists(path):
        return path
    raw = _ESCAPED_BYTE.sub(lambda m: bytes([int(m.group(1), 16)]), relpath.encode("utf-8"))
    return os.path.join(os.fspath(root), os.fsdecode(raw))


def check_entry(base: Path, relpath: str, allow_outside_root: bool = False) -> tuple[str, str] | None:
    """``(reason, detail)`` when the path of an ok row must not be read, else None (never opens it)."""
    path = os.path.join(base, relpath)
    try:
        st = os.lstat(path)
        if stat.S_ISLNK(st.st_mode):
            try:
                target = os.path.realpath(path, strict=True)
            except OSError as e:
                return "broken_link", f"symbolic link that does not resolve ({type(e).__name__}: {e.strerror or e})"
        else:
            target = os.path.realpath(path)
        st = os.stat(path)
    except FileNotFoundError:
        return "missing_file", "listed but absent"
    except OSError as e:
        return "unreadable", f"{type(e).__name__}: {e.strerror}"
    if stat.S_ISDIR(st.st_mode):
        return "not_a_file", "a directory"
    if not stat.S_ISREG(st.st_mode):
        return "not_a_file", "not a regular file (FIFO, device or socket)"
    root = os.path.realpath(base)
    if not allow_outside_root and os.path.commonpath([root, target]) != root:
        return "outside_root", (f"resolves to {escape_name(target)}, outside {escape_name(root)}; "
                                f"pass allow_outside_root=True (ingest --allow-outside-root) to ingest it")
    return None


def scan_dataset(name: str, root: str | Path, allow_outside_root: bool = False, **options) -> pd.DataFrame:
    """List the files of dataset ``name`` under ``root`` as a table (see the module docstring).

    ``frame.attrs['root']`` is the folder the relpaths are relative to (``root`` itself, or the CSV's folder
    when ``root`` is a manifest file): read images as ``source_path(frame.attrs['root'], relpath)``.
    ``allow_outside_root``: keep rows whose path or link target lies outside that folder.
    """
    if name not in DATASETS:
        raise KeyError(f"unknown dataset {name!r}; registered: {sorted(DATASETS)}")
    dataset, base, entries = DATASETS[name](Path(root), **options)
    checked = []
    for e in entries:
        if e.status == "ok":
            bad = check_entry(base, e.relpath, allow_outside_root)
            if bad is not None:
                e = e._replace(status="skipped", reason=bad[0], detail=bad[1])
        escaped = escape_name(e.relpath)
        if escaped != e.relpath:
            note = "file name is not UTF-8: undecodable bytes written \\xNN in relpath"
            e = e._replace(relpath=escaped, detail=f"{e.detail}; {note}" if e.detail else note)
        checked.append(e._replace(detail=escape_name(e.detail)))
    frame = pd.DataFrame(checked, columns=list(Entry._fields))
    frame.insert(0, "dataset", dataset)
    frame = frame.astype({"pid": "int64", "camid": "int64"})
    for column in ("dataset", "split", "relpath", "status", "reason", "detail"):
        frame[column] = frame[column].astype(str)
    order = frame["split"].map({s: i for i, s in enumerate(SPLITS)}).astype("int64")
    frame = frame.assign(_order=order).sort_values(["_order", "relpath"], kind="stable")
    frame = frame.drop(columns="_order").reset_index(drop=True)[COLUMNS]
    frame.attrs.update(dataset=dataset, root=str(base))
    return frame


def summarize(df: pd.DataFrame) -> pd.DataFrame:
    """Counts by (status, reason), ok first, then by decreasing count: the end-of-ingest report."""
    counts = df.groupby(["status", "reason"], sort=False).size().rename("count").reset_index()
    counts = counts.assign(_ok=counts["status"] != "ok")
    counts = counts.sort_values(["_ok", "count", "reason"], ascending=[True, False, True])
    return counts.drop(columns="_ok").reset_index(drop=True)


# -------------------------------------------------------------------------------------- Market-style folders


def scan_market_style(
    root: Path,
    base: Path,
    pattern: re.Pattern,
    cameras: range,
    junk_pids: frozenset[int] = frozenset(),
) -> list[Entry]:
    """Scan ``base/{bounding_box_train,query,bounding_box_test}`` (flat folders) with ``pattern`` on the stem.

    ``pattern`` has groups (pid, camera). ``relpath`` is relative to ``root`` (``base`` may lie below it).
    """
    entries = []
    for split, folder in MARKET_FOLDERS.items():
        directory = base / folder
        if not directory.is_dir():
            raise FileNotFoundError(
                f"{directory} is missing: expected {base}/{{{','.join(MARKET_FOLDERS.values())}}}/"
            )
        for path in sorted(directory.iterdir()):
            relpath = path.relative_to(root).as_posix()
            if path.suffix.lower() not in IMAGE_SUFFIXES:
                if path.is_file():  # sub-folders and special files without an image name are not listed
                    entries.append(skipped(split, relpath, "not_an_image", f"extension {path.suffix!r}"))
                continue
            match = pattern.fullmatch(path.stem)
            if match is None:
                entries.append(skipped(split, relpath, "unparsable_name", f"{path.name!r} !~ {pattern.pattern}"))
                continue
            pid, camid = int(match.group(1)), int(match.group(2))
            if camid not in cameras:
                detail = f"camera {camid} not in {cameras.start}..{cameras.stop - 1}"
                entries.append(skipped(split, relpath, "camera_out_of_range", detail, pid, camid))
            elif pid in junk_pids:
                entries.append(skipped(split, relpath, "junk", f"pid {pid} marks junk boxes", pid, camid))
            else:
                entries.append(Entry(split, pid, camid, relpath))
    return entries


@register_dataset("market1501")
def market1501(root: Path) -> tuple[str, Path, list[Entry]]:
    """Market-1501: ``0002_c1s1_000451_03.jpg`` = pid 2, camera 1, sequence 1, frame 451, box 3.

    pid -1 = junk boxes (skipped, reason 'junk'); pid 0 = distractors, kept in the gallery as pid 0.
    6 cameras.
    """
    pattern = re.compile(r"(-1|\d+)_c(\d+)s\d+_\d+_\d+")
    return "market1501", root, scan_market_style(root, root, pattern, range(1, 7), junk_pids=frozenset({-1}))


@register_dataset("dukemtmc")
def dukemtmc(root: Path) -> tuple[str, Path, list[Entry]]:
    """DukeMTMC-reID: ``0001_c2_f0046182.jpg`` = pid 1, camera 2, frame 46182. 8 cameras, no junk ids.

    Gallery pids that never occur in the query are distractors; they are kept as they are.
    """
    pattern = re.compile(r"(\d+)_c(\d+)_f\d+")
    return "dukemtmc", root, scan_market_style(root, root, pattern, range(1, 9))


@register_dataset("cuhk03-np")
def cuhk03_np(root: Path, variant: str = "detected") -> tuple[str, Path, list[Entry]]:
    """CUHK03-NP (Zhong et al. 2017, Market-style release): ``0001_c1_1.png`` = pid 1, camera 1, image 1.

    ``root`` is ``cuhk03-np/`` (then ``{variant}/`` is read below it) or the variant folder itself.
    ``variant``: 'detected' (DPM boxes) or 'labeled' (hand-drawn boxes). 2 cameras, no junk ids.
    """
    if variant not in ("detected", "labeled"):
        raise ValueError(f"cuhk03-np variant must be 'detected' or 'labeled', got {variant!r}")
    base = root / variant if (root / variant).is_dir() else root
    pattern = re.compile(r"(\d+)_c(\d+)_\d+")
    return f"cuhk03-np-{variant}", root, scan_market_style(root, base, pattern, range(1, 3))


# -------------------------------------------------------------------------------------------------- MSMT17


@register_dataset("msmt17")
def msmt17(root: Path, include_val: bool = True) -> tuple[str, Path, list[Entry]]:
    """MSMT17 V1/V2: list files ``list_{train,val,query,gallery}.txt`` with lines ``relpath label``.

    Images live under ``train/`` and ``test/`` (V1) or ``mask_train_v2/`` and ``mask_test_v2/`` (V2).
    File names ``0000_000_01_0303morning_0008_0.jpg`` = pid, index, **camera (01..15)**, date+time of day,
    frame, box. The list's label is the pid (authoritative); only the camera is read from the name.
    ``include_val`` (default True): ``list_val.txt`` also goes to 'train' -- train+val is the 32,621-image
    training set of the paper's statistics; pass False for the 30,248-image ``list_train.txt`` alone.
    """
    if not isinstance(include_val, bool):
        raise TypeError(f"include_val must be a bool, got {include_val!r}")
    if (root / "mask_train_v2").is_dir():
        train_dir, test_dir = "mask_train_v2", "mask_test_v2"
    else:
        train_dir, test_dir = "train", "test"
    lists = [("train", "list_train.txt", train_dir)]
    if include_val:
        lists.append(("train", "list_val.txt", train_dir))
    lists += [("query", "list_query.txt", test_dir), ("gallery", "list_gallery.txt", test_dir)]
    pattern = re.compile(r"(\d+)_\d+_(\d+)_.*")
    entries = []
    for split, list_name, image_dir in lists:
        list_path = root / list_name
        if not list_path.is_file():
            raise FileNotFoundError(f"{list_path} is missing: expected MSMT17 list files in {root}")
        for number, line in enumerate(list_path.read_text().splitlines(), start=1):
            fields = line.split()
            if not fields:
                continue
            relpath = f"{image_dir}/{fields[0]}"
            if len(fields) != 2 or not re.fullmatch(r"-?\d+", fields[1]):
                entries.append(skipped(split, relpath, "unparsable_line", f"{list_name}:{number}: {line!r}"))
                continue
            pid = int(fields[1])
            name = Path(fields[0])
            match = pattern.fullmatch(name.stem)
            if match is None:
                entries.append(skipped(split, relpath, "unparsable_name", f"{name.name!r} !~ {pattern.pattern}", pid))
                continue
            camid = int(match.group(2))
            if camid not in range(1, 16):
                detail = f"camera {camid} not in 1..15"
                entries.append(skipped(split, relpath, "camera_out_of_range", detail, pid, camid))
            elif not (root / relpath).is_file():
                entries.append(skipped(split, relpath, "missing_file", f"listed in {list_name}:{number}", pid, camid))
            else:
                entries.append(Entry(split, pid, camid, relpath))
    return "msmt17", root, entries


# ------------------------------------------------------------------------------------------- CSV manifest


@register_dataset("csv")
def csv_manifest(root: Path, manifest: str = "manifest.csv", dataset: str = "csv") -> tuple[str, Path, list[Entry]]:
    """A CSV manifest with header ``path,pid,camid,split`` for any other dataset.

    ``root`` is the CSV file itself or the folder holding ``manifest``; ``path`` is relative to the CSV's
    folder or absolute. ``split`` is train|query|gallery. pid < 0 is junk (skipped), as in Market-1501.
    ``camid`` is stored as written. ``relpath`` is then relative to the CSV's folder, whichever form ``root``
    took (absolute for absolute paths outside it; those, and ``../`` paths, become ``outside_root`` rows
    unless ``allow_outside_root``). Rows with a bad split, pid or camid are ``bad_manifest_row`` (reported
    under split 'train' when the split itself is the problem).

    The file is read as UTF-8 (a byte-order mark is skipped); bytes that are not UTF-8 (a latin-1 manifest)
    are kept like non-UTF-8 file names, so such paths still find their files. A header that lacks a column
    or names one twice, or a manifest without rows, is a one-line ``ValueError``.
    """
    csv_path = root if root.is_file() else root / manifest
    if not csv_path.is_file():
        raise FileNotFoundError(f"{csv_path} is missing: expected a CSV manifest (path,pid,camid,split)")
    folder = csv_path.parent
    text = csv_path.read_bytes().decode("utf-8", "surrogateescape")
    if text.startswith("\ufeff"):
        text = text[1:]
    reader = csv.reader(io.StringIO(text, newline=""))
    header = [h.strip() for h in next(reader, [])]
    if not header:
        raise ValueError(f"{csv_path} is empty; expected a header path,pid,camid,split")
    twice = sorted({h for h in header if header.count(h) > 1})
    if twice:
        raise ValueError(f"{csv_path}: header names {twice} more than once; expected path,pid,camid,split")
    missing = {"path", "pid", "camid", "split"} - set(header)
    if missing:
        raise ValueError(f"{csv_path}: header lacks {sorted(missing)}; expected path,pid,camid,split")
    col = {h: i for i, h in enumerate(header)}
    rows = [(number, line) for number, line in enumerate(reader, start=2) if any(f.strip() for f in line)]
    if not rows:
        raise ValueError(f"{csv_path} lists no images (only a header)")
    entries = []
    for number, line in rows:
        row = {h: (line[i] if i < len(line) else None) for h, i in col.items()}
        raw = (row["path"] or "").strip()
        path = Path(raw)
        if path.is_absolute():
            relpath = path.relative_to(folder).as_posix() if path.is_relative_to(folder) else path.as_posix()
        else:
            relpath = path.as_posix()
        written_split = (row["split"] or "").strip()
        split = written_split if written_split in SPLITS else "train"  # a bad split is reported on a train row
        if len(line) != len(header):
            detail = f"line {number}: {len(line)} fields, the header has {len(header)}"
            entries.append(skipped(split, relpath, "bad_manifest_row", detail))
            continue
        try:
            pid, camid = int(row["pid"]), int(row["camid"])
        except (TypeError, ValueError):
            detail = f"line {number}: pid={escape_name(str(row['pid']))!r} camid={escape_name(str(row['camid']))!r} are not integers"
            entries.append(skipped(split, relpath, "bad_manifest_row", detail))
            continue
        if not raw or written_split not in SPLITS:
            detail = "empty path" if not raw else f"split {escape_name(written_split)!r} not in {SPLITS}"
            entries.append(skipped(split, relpath, "bad_manifest_row", f"line {number}: {detail}", pid, camid))
        elif path.suffix.lower() not in IMAGE_SUFFIXES:
            entries.append(skipped(split, relpath, "not_an_image", f"extension {escape_name(path.suffix)!r}", pid, camid))
        elif pid < 0:
            entries.append(skipped(split, relpath, "junk", f"pid {pid} < 0", pid, camid))
        else:
            entries.append(Entry(split, pid, camid, relpath))  # scan_dataset checks the file itself
    return dataset, folder, entries

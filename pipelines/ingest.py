"""Dataset folder -> store: the ``ingest-dataset`` flow.

1. **plan** (driver): the dataset adapter lists the files (names that do not
   parse and junk become ``skipped`` rows); every listed file is read once to
   check it decodes and to hash it (bad files become ``failed`` rows with the
   reason); duplicates by sha256 are ``skipped``; train identities get labels
   0..P-1. Good images are ordered by (split, pid, camid, relpath), so one
   identity's images are consecutive rows; they get ``image_id`` 0..N-1.
2. **write** (tasks): each write unit decodes its images again, resizes them
   to the canonical size and writes one chunk + marker. Re-running resumes.
"""
from __future__ import annotations

import logging
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from storage import create_store, image_writer, open_store, reopen_writer
from storage.datasets import scan_dataset, source_path, summarize
from storage.decode import DEFAULT_MAX_BYTES, BadImage, read_and_check, resize_rgb
from storage.duplicates import mark_duplicates
from storage.relabel import assign_labels

from pipelines.jobs import batches, unit_job
from pipelines.runner import run_tasks, summarize_results

log = logging.getLogger("pipelines.ingest")
SPLIT_ORDER = {"train": 0, "query": 1, "gallery": 2}
DEFAULT_SIZE = (256, 128)


def parse_size(text: str | tuple[int, int] | list[int]) -> tuple[int, int]:
    """``"256x128"`` -> ``(256, 128)`` (height x width), each side 1..4096."""
    from storage.writer import MAX_SIDE

    if isinstance(text, (tuple, list)):
        if len(text) != 2:
            raise ValueError(f"size must be (height, width), got {text!r}")
        h, w = text
    else:
        try:
            h, w = (int(x) for x in str(text).lower().split("x"))
        except ValueError:
            raise ValueError(f"size must look like HxW (e.g. 256x128), got {text!r}") from None
    if not (0 < int(h) <= MAX_SIDE and 0 < int(w) <= MAX_SIDE):
        raise ValueError(f"size must be 1..{MAX_SIDE} per side (HxW), got {h}x{w}")
    return int(h), int(w)


def _check_one(path: str, max_bytes: int = DEFAULT_MAX_BYTES) -> dict[str, Any]:
    try:
        d = read_and_check(path, max_bytes=max_bytes)
    except BadImage as exc:
        return {"status": "failed", "reason": exc.reason, "detail": exc.detail}
    except Exception as exc:  # noqa: BLE001 - a decoder bug must not end the whole ingest
        return {"status": "failed", "reason": "corrupt", "detail": f"decoder error {type(exc).__name__}: {exc}"[:300]}
    return {"orig_height": d.orig_height, "orig_width": d.orig_width, "sha256": d.sha256, "converted": d.converted}


def plan_ingest(dataset: str, root: str | os.PathLike, progress: bool = True, threads: int = 4,
                max_bytes: int = DEFAULT_MAX_BYTES, **options: Any) -> pd.DataFrame:
    """The store index for a dataset folder (every file accounted for).

    ``options`` go to the dataset adapter (and ``allow_outside_root`` to :func:`storage.datasets.scan_dataset`);
    ``max_bytes``: files larger than this are ``too_large`` rows, never read.
    """
    if not isinstance(max_bytes, int) or max_bytes <= 0:
        raise ValueError(f"max_bytes must be a positive number of bytes, got {max_bytes!r}")
    df = scan_dataset(dataset, root, **options)
    root = Path(df.attrs.get("root", root))  # relpaths are relative to this (a CSV manifest's folder)
    df = df.reset_index(drop=True)
    for col, fill in (("orig_height", -1), ("orig_width", -1), ("sha256", ""), ("converted", "")):
        df[col] = fill
    todo = np.flatnonzero((df["status"] == "ok").to_numpy())
    paths = [source_path(root, df.at[i, "relpath"]) for i in todo]
    with ThreadPoolExecutor(threads) as pool:
        checked = list(tqdm(pool.map(lambda p: _check_one(p, max_bytes), paths), total=len(paths),
                            desc=f"check {dataset}", unit="img", disable=not progress))
    for i, res in zip(todo, checked):
        for k, v in res.items():
            df.at[i, k] = v
    df = mark_duplicates(df)
    df = assign_labels(df)
    ok = df["status"] == "ok"
    good = df[ok].assign(_s=df.loc[ok, "split"].map(SPLIT_ORDER)).sort_values(["_s", "pid", "camid", "relpath"]).drop(columns="_s")
    bad = df[~ok].sort_values("relpath")
    out = pd.concat([good, bad], ignore_index=True)
    out.insert(0, "image_id", np.arange(len(out), dtype=np.int64))
    out.attrs["root"] = str(root.resolve())
    return out.astype({"pid": "int64", "camid": "int64", "label": "int64", "orig_height": "int64", "orig_width": "int64"})


@unit_job(retries=2, retry_delay_seconds=2)
def write_image_units(store_url: str, root: str, units: list[int]) -> dict[str, Any]:
    writer = reopen_writer(store_url, "images")
    store = writer.store
    h, w = store.image_size
    ok = store.ok_index
    written = skipped = images = 0
    for k in units:
        if writer.is_done(k):
            skipped += 1
            continue
        _, start, stop = store.units()[k]
        batch = np.empty((stop - start, h, w, 3), np.uint8)
        for j, rel in enumerate(ok["relpath"].iloc[start:stop]):
            batch[j] = resize_rgb(read_and_check(source_path(root, rel), max_bytes=1 << 62).rgb, (h, w))
        writer.write_unit(k, {"images": batch})
        written += 1
        images += stop - start
    return {"written": written, "skipped": skipped, "images": images}


def ingest_flow(
    dataset: str,
    root: str,
    store: str,
    image_size: str = "256x128",
    unit_size: int = 32,
    settings: dict[str, Any] | None = None,
    workers: int = 0,
    units_per_task: int = 8,
    overwrite: bool = False,
    progress: bool = True,
    dask_address: str | None = None,
    dask_workers: int = 0,
) -> dict[str, Any]:
    """Ingest a dataset folder into a store (resumable; bad files become index rows).

    The ``ingest-dataset`` flow (:mod:`pipelines.flows`); ``settings`` are the
    dataset adapter's options (``--set KEY=VALUE``), ``workers`` the local
    processes (0: the usable cores)."""
    hw = parse_size(image_size)
    options = settings
    from storage.writer import check_layout, check_store_path

    check_layout(hw, unit_size)  # before any file is read
    check_store_path(store)
    index = plan_ingest(dataset, root, progress=progress, **(options or {}))
    root = index.attrs["root"]
    s = create_store(store, dataset=dataset, index=index, image_size=hw, source_root=root,
                     unit_size=unit_size, params={"size": list(hw), "options": options or {}}, overwrite=overwrite)
    writer = image_writer(s)
    writer.discard_partials()
    pending = [u[0] for u in writer.pending()]
    calls = [(s.url, str(root), b) for b in batches(pending, units_per_task)]
    results = summarize_results(run_tasks(write_image_units, calls, "ingest", progress, dask_address, dask_workers,
                                          workers))
    s.close()  # the writer lock: another ingest of this store may start now
    counts = summarize(index)
    summary = {
        "store": s.url,
        "images": int((index["status"] == "ok").sum()),
        "index_rows": int(len(index)),
        "by_reason": {f"{r.status}:{r.reason or '-'}": int(r.count) for r in counts.itertuples()},
        **results,
    }
    summary["images_ok"] = int((index["status"] == "ok").sum())
    summary["units_skipped"] += len(s.units()) - len(pending)  # complete before this run
    print_summary(summary)
    if results["batch_errors"]:
        raise RuntimeError(f"{len(results['batch_errors'])} batches failed: {results['batch_errors'][:3]}")
    return summary


def print_summary(summary: dict[str, Any]) -> None:
    print(f"ingest: {summary['images']} images written ({summary['units_skipped']} units already done); "
          f"{summary['images_ok']} ok of {summary['index_rows']} files in {summary['store']}")
    for reason, n in sorted(summary["by_reason"].items()):
        print(f"  {reason:32s} {n:7d}")


def store_exists(url: str) -> bool:
    try:
        open_store(url)
        return True
    except Exception:  # noqa: BLE001
        return False

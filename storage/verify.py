"""Check a store: every unit present and intact, tables readable, counts consistent."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pyarrow.parquet as pq

from .store import INDEX, Store
from .writer import data_checksum


@dataclass
class Report:
    problems: list[str] = field(default_factory=list)
    checked_units: int = 0

    @property
    def ok(self) -> bool:
        return not self.problems


def _chunk_key(array_path: str, k: int, ndim: int) -> str:
    return f"{array_path}/c/" + "/".join([str(k)] + ["0"] * (ndim - 1))


def _check_table(store: Store, rel: str, report: Report) -> None:
    try:
        with store._fs.fs.open(store._fs.path(rel), "rb") as f:
            pq.read_table(f)
    except Exception as exc:  # noqa: BLE001 - any read failure is a corrupt table
        report.problems.append(f"table {rel} unreadable: {type(exc).__name__}: {exc}")


def _check_units(store: Store, name: str, arrays: dict, checksums: bool, report: Report) -> None:
    fs = store._fs
    for k, start, stop in store.units():
        marker = f"units/{name}/{k:06d}.json"
        if not fs.exists(marker):
            report.problems.append(f"{name}: unit {k} (images {start}..{stop - 1}) not written")
            continue
        try:
            meta = fs.read_json(marker)
        except Exception as exc:  # noqa: BLE001
            report.problems.append(f"{name}: unit {k} marker unreadable: {exc}")
            continue
        report.checked_units += 1
        for aname, arr in arrays.items():
            path = arr.path
            if not fs.exists(_chunk_key(path, k, arr.ndim)):
                report.problems.append(f"{name}: unit {k} chunk of '{aname}' is missing ({_chunk_key(path, k, arr.ndim)})")
                continue
            if checksums:
                try:
                    got = data_checksum(np.asarray(arr[start:stop]))
                except Exception as exc:  # noqa: BLE001 - undecodable chunk
                    report.problems.append(f"{name}: unit {k} chunk of '{aname}' cannot be decoded: {exc}")
                    continue
                if got != meta.get("checksums", {}).get(aname):
                    report.problems.append(f"{name}: unit {k} chunk of '{aname}' does not match its checksum")
        for tname in [*meta.get("tables", []), "failures"]:
            rel = f"tables/{name}/{tname}/part-{k:06d}.parquet"
            if not fs.exists(rel):
                report.problems.append(f"{name}: unit {k} table part {rel} is missing")
            else:
                _check_table(store, rel, report)


def verify_store(store: Store, checksums: bool = True) -> Report:
    """Return a :class:`Report`; ``report.ok`` is False on any problem."""
    report = Report()
    if not store._fs.exists(INDEX):
        report.problems.append(f"{INDEX} is missing")
    else:
        _check_table(store, INDEX, report)
    if report.ok:
        n_ok = int((store.index["status"] == "ok").sum())
        if n_ok != store.n_images:
            report.problems.append(f"index has {n_ok} ok rows but the store records {store.n_images} images")
    if store.images.shape[0] != store.n_images:
        report.problems.append(f"images has {store.images.shape[0]} rows, expected {store.n_images}")
    _check_units(store, "images", {"images": store.images}, checksums, report)
    for name in store.groups:
        g = store.group(name)
        for aname, arr in g.arrays.items():
            if arr.shape[0] != store.n_images:
                report.problems.append(f"{name}/{aname} has {arr.shape[0]} rows, expected {store.n_images}")
        _check_units(store, name, g.arrays, checksums, report)
    return report

"""Check a store: every unit present and intact, tables readable, metadata and counts consistent.

What is checked (``docs/store.md`` lists the corruptions each check catches):

* the root attributes match their digest, the index file matches the sha256 the
  attributes record, its ok rows = ``n_images`` = every array's rows, the images
  array has the recorded ``image_size``;
* every group folder under ``units/`` (a group that was written) still has its
  group metadata and provenance; a group without provenance is an interrupted build;
* every group's attributes match their digest, every array named in its layout
  exists with the metadata (shape, chunks, dtype, fill value, codecs) recorded at
  creation, and the provenance parameters agree with the shapes (``S`` of DSAP);
* every unit marked, every chunk file present, its data matching the marker's
  sha256 (``checksums=False`` skips this), every table part readable;
* no temporary files of killed writes and no lock files of dead writers are left.
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field

import numpy as np
import pyarrow.parquet as pq

from .fs import StoreLock
from .store import ATTRS_KEY, INDEX, Store
from .writer import array_digest, attrs_digest, data_checksum


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
        if (meta.get("start"), meta.get("stop")) != (start, stop):
            report.problems.append(f"{name}: unit {k} marker is for rows {meta.get('start')}..{meta.get('stop')}")
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


def _check_root(store: Store, report: Report) -> bool:
    """Root attributes, index and images metadata; False when the images array is unusable."""
    attrs = store.attrs
    if "digest" in attrs and attrs["digest"] != attrs_digest(attrs):
        report.problems.append(f"root attributes ({ATTRS_KEY} in zarr.json) were edited after creation "
                               f"(digest mismatch): image_size {attrs.get('image_size')}, unit_size {attrs.get('unit_size')}")
    before = len(report.problems)
    readable = False
    if not store._fs.exists(INDEX):
        report.problems.append(f"{INDEX} is missing")
    else:
        _check_table(store, INDEX, report)
        readable = len(report.problems) == before
        want = attrs.get("index_sha256")
        if want and hashlib.sha256(store._fs.read_bytes(INDEX)).hexdigest() != want:
            report.problems.append(f"{INDEX} differs from the index written at ingest (sha256 mismatch): "
                                   f"labels, splits or ids may have been edited")
    if readable:
        n_ok = int((store.index["status"] == "ok").sum())
        if n_ok != store.n_images:
            report.problems.append(f"index has {n_ok} ok rows but the store records {store.n_images} images")
    try:
        images = store.root["images"]
    except KeyError:
        report.problems.append("images array metadata (images/zarr.json) is missing")
        return False
    h, w = store.image_size
    if tuple(images.shape) != (store.n_images, h, w, 3):
        report.problems.append(f"images has shape {tuple(images.shape)}, expected {(store.n_images, h, w, 3)} "
                               f"(n_images, image_size)")
    if tuple(images.chunks)[0] != store.unit_size:
        report.problems.append(f"images chunks {tuple(images.chunks)} disagree with unit_size {store.unit_size}")
    recorded = attrs.get("arrays", {}).get("images")
    if recorded and array_digest({"images": images})["images"] != recorded:
        report.problems.append("images/zarr.json was edited after creation (fill value, codecs, chunks or dtype)")
    if images.fill_value != 0:
        report.problems.append(f"images fill value is {images.fill_value}, expected 0")
    return True


def _written_groups(store: Store) -> set[str]:
    """Groups that have units or tables on disk (a group's folder may outlive its metadata)."""
    out = set()
    for top in ("estimates", "priors"):
        for base in ("units", "tables"):
            out |= {f"{top}/{g}" for g in store._fs.listdir(f"{base}/{top}")}
    return out


def _check_group(store: Store, name: str, report: Report, checksums: bool) -> None:
    zg = store.root[name]
    attrs = dict(zg.attrs)
    if "digest" in attrs and attrs["digest"] != attrs_digest(attrs):
        report.problems.append(f"{name}: attributes (provenance or layout) were edited after creation (digest mismatch)")
    arrays = {k: v for k, v in zg.arrays()}
    layout = attrs.get("layout", {})
    for aname, (tail, dtype) in sorted(layout.items()):
        if aname not in arrays:
            report.problems.append(f"{name}/{aname}: array metadata ({name}/{aname}/zarr.json) is missing")
            continue
        a = arrays[aname]
        if tuple(a.shape) != (store.n_images, *tail) or str(a.dtype) != dtype:
            report.problems.append(f"{name}/{aname} is {tuple(a.shape)} {a.dtype}, layout says "
                                   f"{(store.n_images, *tail)} {dtype}")
        if a.chunks[0] != store.unit_size:
            report.problems.append(f"{name}/{aname} chunks {a.chunks} disagree with unit_size {store.unit_size}")
        recorded = attrs.get("arrays", {}).get(aname)
        if recorded and array_digest({aname: a})[aname] != recorded:
            report.problems.append(f"{name}/{aname}/zarr.json was edited after creation (fill value, codecs, chunks or dtype)")
    S = (attrs.get("provenance", {}).get("params") or {}).get("S")
    if S is not None and "dsap" in arrays and tuple(arrays["dsap"].shape[-2:]) != (S, S):
        report.problems.append(f"{name}: provenance says S={S} but dsap holds {tuple(arrays['dsap'].shape[-2:])} images")
    for aname, a in arrays.items():
        if a.shape[0] != store.n_images:
            report.problems.append(f"{name}/{aname} has {a.shape[0]} rows, expected {store.n_images}")
    _check_units(store, name, {k: arrays[k] for k in layout if k in arrays} or arrays, checksums, report)


def verify_store(store: Store, checksums: bool = True) -> Report:
    """Return a :class:`Report`; ``report.ok`` is False on any problem."""
    report = Report()
    try:
        root_ok = _check_root(store, report)
    except Exception as exc:  # noqa: BLE001 - a damaged images/zarr.json
        report.problems.append(f"images metadata unreadable: {type(exc).__name__}: {exc}")
        root_ok = False
    if root_ok:
        _check_units(store, "images", {"images": store.root["images"]}, checksums, report)
    try:
        listed = set(store.groups)
        for top in ("estimates", "priors"):
            if top in store.root:
                for g, zg in store.root[top].groups():
                    if "provenance" not in zg.attrs:
                        report.problems.append(f"{top}/{g}: building this group was interrupted (no provenance); "
                                               f"re-run the command that builds it")
    except Exception as exc:  # noqa: BLE001 - a damaged group zarr.json
        report.problems.append(f"group metadata unreadable: {type(exc).__name__}: {exc}")
        return report
    for name in sorted(_written_groups(store) - listed):
        if name in store.root:
            continue  # reported above
        report.problems.append(f"{name}: units or tables exist but the group's metadata ({name}/zarr.json) is missing")
    for name in sorted(listed):
        try:
            _check_group(store, name, report, checksums)
        except Exception as exc:  # noqa: BLE001 - a damaged array zarr.json
            report.problems.append(f"{name}: metadata unreadable: {type(exc).__name__}: {exc}")
    fs = store._fs
    if fs.local:
        leftovers = [os.path.relpath(os.path.join(d, f), fs.root) for d, _, files in os.walk(fs.root)
                     for f in files if ".tmp-" in f or f.endswith(".partial")]
        if leftovers:
            report.problems.append(f"{len(leftovers)} temporary files of interrupted writes left "
                                   f"(e.g. {leftovers[0]}); re-run the command that was interrupted")
    for lock in fs.listdir("locks"):
        try:
            holder = fs.read_json(f"locks/{lock}")
        except (ValueError, OSError):
            holder = {}
        if StoreLock._stale(holder) and holder.get("pid") != os.getpid():
            report.problems.append(f"stale lock file locks/{lock} (pid {holder.get('pid')} is gone): its writer was "
                                   f"killed; re-run that command to finish")
    return report

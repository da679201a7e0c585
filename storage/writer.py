"""Resumable, atomic-per-unit writes into a store.

A *unit* is ``unit_size`` consecutive image rows: exactly one chunk of every
array of a group. :meth:`UnitWriter.write_unit` writes the unit's chunks (each
chunk file is replaced atomically by zarr's local store), then its table
parts, then — last — a marker ``units/<group>/<k>.json`` with sha256 checksums
of the data. Units without a marker are pending and are rewritten by the next
run; all writes are deterministic, so an interrupted-then-resumed run ends
byte-identical to an uninterrupted one. Different units touch different
files, so several processes (Dask workers) may write one group at once.

Creation is resumable too. :func:`create_store` first writes ``creating.json``
(the attributes it is about to stamp), then the root group, the images array,
the index and the attributes, and removes ``creating.json`` last: a store
interrupted anywhere in between is finished by the same command (and refuses
to open for reading until then). :func:`group_writer` writes a group's
``layout`` and ``provenance`` in one metadata write after its arrays; a group
without provenance is an interrupted creation and is simply rebuilt.

One writer per group: :func:`create_store` and :func:`group_writer` take the
lock ``locks/<group>.lock`` (:class:`storage.fs.StoreLock`) for the life of the
returned Store (its workers, e.g. Dask tasks writing other units of the same
group, do not lock). A second writer gets :class:`storage.fs.LockError`.
"""
from __future__ import annotations

import hashlib
import json
import os
from typing import Any, Iterable

import numpy as np
import pandas as pd
import zarr

from .provenance import SCHEMA_VERSION, make_provenance, same_provenance
from .store import ATTRS_KEY, CREATING, DEFAULT_UNIT_SIZE, INDEX, Store, StoreError, compressor, data_checksum, data_crc32
from .fs import StoreFS, json_bytes, table_bytes

MAX_UNIT_BYTES = 1 << 30  # one unit of images is one chunk held in memory by each writer and reader
MAX_SIDE = 4096

FAILURE_COLUMNS = {"image_id": "int64", "stage": "string", "reason": "string", "detail": "string"}


def failures_frame(rows: Iterable[tuple[int, str, str, str]] = ()) -> pd.DataFrame:
    """A failures table: ``(image_id, stage, reason, detail)`` rows with a fixed schema."""
    df = pd.DataFrame(list(rows), columns=list(FAILURE_COLUMNS))
    return df.astype(FAILURE_COLUMNS)


def array_digest(arrays: dict[str, zarr.Array]) -> dict[str, str]:
    """sha256 of each array's zarr metadata (shape, chunks, dtype, fill value, codecs)."""
    return {k: hashlib.sha256(json.dumps(a.metadata.to_dict(), sort_keys=True, default=str).encode()).hexdigest()
            for k, a in sorted(arrays.items())}


def attrs_digest(attrs: dict[str, Any]) -> str:
    """sha256 of a group's or the root's attributes (without the digest itself)."""
    return hashlib.sha256(json_bytes({k: v for k, v in attrs.items() if k != "digest"})).hexdigest()


def check_layout(image_size, unit_size) -> tuple[int, int, int]:
    """Validate ``image_size`` = (H, W) and ``unit_size``; one-line ValueError otherwise."""
    if isinstance(unit_size, bool) or not isinstance(unit_size, (int, np.integer)) or unit_size <= 0:
        raise ValueError(f"unit size must be a positive integer, got {unit_size!r}")
    try:
        h, w = (int(x) for x in image_size)
    except (TypeError, ValueError):
        raise ValueError(f"image size must be (height, width), got {image_size!r}") from None
    if not (0 < h <= MAX_SIDE and 0 < w <= MAX_SIDE):
        raise ValueError(f"image size must be 1..{MAX_SIDE} per side, got {h}x{w}")
    if int(unit_size) * h * w * 3 > MAX_UNIT_BYTES:
        raise ValueError(f"a write unit of {unit_size} images at {h}x{w} is "
                         f"{unit_size * h * w * 3 / 2**30:.1f} GiB (limit {MAX_UNIT_BYTES >> 30} GiB): "
                         f"use a smaller unit size or image size")
    return h, w, int(unit_size)


def _create_array(parent: zarr.Group, name: str, n: int, tail: tuple[int, ...], dtype: str, unit: int) -> zarr.Array:
    return parent.create_array(
        name,
        shape=(n, *tail),
        chunks=(unit, *tail),
        dtype=dtype,
        compressors=compressor(),
        fill_value=0,
        overwrite=True,
    )


def create_store(
    url: str | os.PathLike,
    *,
    dataset: str,
    index: pd.DataFrame,
    image_size: tuple[int, int],
    source_root: str,
    unit_size: int = DEFAULT_UNIT_SIZE,
    params: dict[str, Any] | None = None,
    overwrite: bool = False,
) -> Store:
    """Create a store with its index and an (unwritten) ``images`` array.

    ``index`` must hold an ``image_id`` column where the ok rows are numbered
    0..N-1 (their image rows). Re-creating a store with the same arguments
    resumes it (completed units are kept), also when an earlier creation was
    interrupted; different arguments raise unless ``overwrite``.
    """
    h, w, unit_size = check_layout(image_size, unit_size)
    fs = check_store_path(url)
    n = int((index["status"] == "ok").sum())
    if n == 0:
        raise StoreError(f"no good image to store in {url}: every one of the {len(index)} index rows is skipped or failed")
    ok_ids = np.sort(index.loc[index["status"] == "ok", "image_id"].to_numpy())
    if not np.array_equal(ok_ids, np.arange(n)):
        raise ValueError("ok rows of the index must have image_id 0..N-1")
    index = index.reset_index(drop=True)
    index_bytes = table_bytes(index)
    attrs = {
        "schema_version": SCHEMA_VERSION,
        "dataset": dataset,
        "image_size": [h, w],
        "unit_size": unit_size,
        "n_images": n,
        "source_root": str(source_root),
        "index_sha256": hashlib.sha256(index_bytes).hexdigest(),
        "provenance": make_provenance({"name": "ingest", "version": SCHEMA_VERSION}, params=params or {}),
    }
    lock = fs.lock("images", f"ingest of {dataset}")
    try:
        store = _create_or_resume(fs, url, attrs, index, index_bytes, overwrite)
    except BaseException:
        lock.release()
        raise
    store._locks.append(lock)
    return store


def check_store_path(url: str | os.PathLike) -> StoreFS:
    """The store's fs; a one-line StoreError when the path is an existing file."""
    fs = StoreFS(url)
    if fs.local and os.path.isfile(fs.root):
        raise StoreError(f"{url} is a file, not a store directory")
    return fs


def _same_attrs(old: dict[str, Any], new: dict[str, Any]) -> bool:
    keys = ("dataset", "image_size", "unit_size", "n_images", "source_root", "index_sha256")
    return all(old.get(k) == new[k] for k in keys) and same_provenance(old.get("provenance", {}), new["provenance"])


def _create_or_resume(fs: StoreFS, url, attrs, index: pd.DataFrame, index_bytes: bytes, overwrite: bool) -> Store:
    fs.remove_partials("", recursive=False)  # e.g. index.parquet.tmp-* of a killed write
    if fs.exists(CREATING):
        try:
            pending = fs.read_json(CREATING)
        except (ValueError, OSError):
            pending = attrs  # its own write was torn: nothing else can have followed it
        if not _same_attrs(pending, attrs) and not overwrite:
            raise StoreError(f"{url}: an interrupted ingest with other settings is pending here; re-run that "
                             f"command to finish it, or pass overwrite=True (--overwrite) to replace it")
    elif fs.exists("zarr.json"):
        try:
            existing = Store(url, mode="r+")
        except StoreError as exc:
            if not overwrite:
                raise StoreError(f"{url} holds something that is not a usable reid-priors store ({exc}); "
                                 f"pass overwrite=True (--overwrite) to replace it") from None
        else:
            if _same_attrs(existing.attrs, attrs) and fs.exists(INDEX):
                return existing
            if not overwrite:
                raise StoreError(f"{url} already holds a different store; pass overwrite=True (--overwrite) to replace it")
    fs.write_json(CREATING, attrs)
    for rel in ("images", "estimates", "priors", "tables", "units", INDEX, "zarr.json"):
        fs.rm(rel)
    root = zarr.create_group(store=fs.zarr_store(read_only=False), zarr_format=3)
    images = _create_array(root, "images", attrs["n_images"], (*attrs["image_size"], 3), "uint8", attrs["unit_size"])
    fs.write_bytes_atomic(INDEX, index_bytes)
    stamped = {**attrs, "arrays": array_digest({"images": images})}
    root.attrs[ATTRS_KEY] = {**stamped, "digest": attrs_digest(stamped)}
    fs.rm(CREATING)  # last: from here on the store opens
    return Store(url, mode="r+")


class UnitWriter:
    """Writes the units of one named set of arrays (``images`` or a group)."""

    def __init__(self, store: Store, name: str, arrays: dict[str, zarr.Array]):
        self.store, self.name = store, name
        # zarr does not persist this setting: a chunk equal to the fill value must
        # still be written, so that a missing chunk file always means a missing unit
        self.arrays = {k: a.with_config({"write_empty_chunks": True}) for k, a in arrays.items()}
        self._fs = store._fs

    def discard_partials(self) -> int:
        """Remove temporary files of writes a killed run left half done.

        Call it from the driver before tasks start (never while other
        processes write this group): they would look like stray files to a
        byte-for-byte comparison and to ``verify``.
        """
        n = sum(self._fs.remove_partials(a.path) for a in self.arrays.values())
        n += self._fs.remove_partials("", recursive=False)
        return n + self._fs.remove_partials(f"units/{self.name}") + self._fs.remove_partials(f"tables/{self.name}")

    # -- state --
    def marker(self, k: int) -> str:
        return f"units/{self.name}/{k:06d}.json"

    def is_done(self, k: int) -> bool:
        return self._fs.exists(self.marker(k))

    def pending(self) -> list[tuple[int, int, int]]:
        done = set(int(n.split(".")[0]) for n in self._fs.listdir(f"units/{self.name}") if n.endswith(".json"))
        return [u for u in self.store.units() if u[0] not in done]

    # -- writing --
    def write_unit(
        self,
        k: int,
        arrays: dict[str, np.ndarray],
        tables: dict[str, pd.DataFrame] | None = None,
        failures: pd.DataFrame | None = None,
    ) -> None:
        _, start, stop = self.store.units()[k]
        if set(arrays) != set(self.arrays):
            raise ValueError(f"unit {k} of {self.name}: got arrays {sorted(arrays)}, expected {sorted(self.arrays)}")
        checksums, crcs = {}, {}
        for name, data in arrays.items():
            target = self.arrays[name]
            if data.shape != (stop - start, *target.shape[1:]):
                raise ValueError(f"{self.name}/{name} unit {k}: shape {data.shape}, expected {(stop - start, *target.shape[1:])}")
            data = np.ascontiguousarray(data, dtype=target.dtype)
            target[start:stop] = data
            checksums[name] = data_checksum(data)
            crcs[name] = data_crc32(data)
        for tname, df in sorted((tables or {}).items()):
            self._fs.write_table(f"tables/{self.name}/{tname}/part-{k:06d}.parquet", df.reset_index(drop=True))
        fails = failures if failures is not None else failures_frame()
        self._fs.write_table(f"tables/{self.name}/failures/part-{k:06d}.parquet", fails.reset_index(drop=True))
        self._fs.write_json(self.marker(k), {
            "unit": k, "start": start, "stop": stop, "checksums": checksums, "crc32": crcs,
            "tables": sorted(tables or {}), "failures": int(len(fails)),
        })


def image_writer(store: Store) -> UnitWriter:
    return UnitWriter(store, "images", {"images": store.images})


def group_writer(
    store: Store,
    name: str,
    arrays: dict[str, tuple[tuple[int, ...], str]],
    provenance: dict[str, Any],
    overwrite: bool = False,
) -> UnitWriter:
    """Create (or resume) group ``name`` with arrays ``{array: (tail_shape, dtype)}``.

    An existing group with the same provenance (up to creation time and code
    version) and layout is resumed: its completed units are kept. One made with
    other settings is replaced when ``overwrite``, else refused. A group whose
    creation was interrupted (no provenance yet) is rebuilt. Takes the group's
    writer lock for the life of ``store``.
    """
    if store.mode == "r":
        raise StoreError("open the store with mode='r+' to write groups")
    if not (name.startswith("estimates/") or name.startswith("priors/")) or name.count("/") != 1:
        raise ValueError(f"group names are 'estimates/<name>' or 'priors/<name>', got {name!r}")
    for aname, (tail, dtype) in arrays.items():
        if any(isinstance(d, bool) or not isinstance(d, (int, np.integer)) or d <= 0 for d in tail):
            raise ValueError(f"{name}/{aname}: every dimension must be a positive integer, got {tuple(tail)}")
    fs = store._fs
    store.hold_lock(name, f"building {name}")
    layout = {k: [list(t), d] for k, (t, d) in sorted(arrays.items())}
    if name in store.root:
        g = store.root[name]
        old = dict(g.attrs.get("provenance", {}))
        if old and same_provenance(old, provenance) and g.attrs.get("layout") == layout:
            writer = UnitWriter(store, name, {k: g[k] for k in arrays})
            writer.discard_partials()
            return writer
        if old and not overwrite:
            raise StoreError(
                f"{store.url} already has {name} made with other settings "
                f"(was: {old.get('producer')}, params {old.get('params')}); pass overwrite=True (--overwrite) to rebuild it"
            )
    fs.rm(f"units/{name}")
    fs.rm(f"tables/{name}")
    if name in store.root:
        del store.root[name]
    fs.rm(name)  # array folders of a group whose zarr.json is gone
    g = store.root.require_group(name)
    zs = {k: _create_array(g, k, store.n_images, tuple(t), d, store.unit_size) for k, (t, d) in sorted(arrays.items())}
    attrs = {"layout": layout, "arrays": array_digest(zs), "provenance": provenance}
    # one metadata write (attrs.update would write once per key), last: a group without provenance is not listed
    g.update_attributes({"layout": layout, "arrays": attrs["arrays"], "digest": attrs_digest(attrs),
                         "provenance": provenance})
    return UnitWriter(store, name, zs)


def reopen_writer(url: str, name: str) -> UnitWriter:
    """The writer of an existing group (or ``images``) in another process."""
    store = Store(url, mode="r+")
    if name == "images":
        return image_writer(store)
    g = store.root[name]
    return UnitWriter(store, name, {k: v for k, v in g.arrays()})

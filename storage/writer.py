"""Resumable, atomic-per-unit writes into a store.

A *unit* is ``unit_size`` consecutive image rows: exactly one chunk of every
array of a group. :meth:`UnitWriter.write_unit` writes the unit's chunks (each
chunk file is replaced atomically by zarr's local store), then its table
parts, then — last — a marker ``units/<group>/<k>.json`` with sha256 checksums
of the data. Units without a marker are pending and are rewritten by the next
run; all writes are deterministic, so an interrupted-then-resumed run ends
byte-identical to an uninterrupted one. Different units touch different
files, so several processes (Dask workers) may write one group at once.
"""
from __future__ import annotations

import hashlib
import os
from typing import Any, Iterable

import numpy as np
import pandas as pd
import zarr

from .provenance import SCHEMA_VERSION, make_provenance, same_provenance
from .store import ATTRS_KEY, DEFAULT_UNIT_SIZE, INDEX, Store, StoreError, compressor
from .fs import StoreFS

FAILURE_COLUMNS = {"image_id": "int64", "stage": "string", "reason": "string", "detail": "string"}


def failures_frame(rows: Iterable[tuple[int, str, str, str]] = ()) -> pd.DataFrame:
    """A failures table: ``(image_id, stage, reason, detail)`` rows with a fixed schema."""
    df = pd.DataFrame(list(rows), columns=list(FAILURE_COLUMNS))
    return df.astype(FAILURE_COLUMNS)


def data_checksum(arr: np.ndarray) -> str:
    a = np.ascontiguousarray(arr)
    h = hashlib.sha256()
    h.update(f"{a.dtype.str}{a.shape}".encode())
    h.update(a.tobytes())
    return h.hexdigest()


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
    resumes it (completed units are kept); different arguments raise unless
    ``overwrite``.
    """
    fs = StoreFS(url)
    n = int((index["status"] == "ok").sum())
    ok_ids = np.sort(index.loc[index["status"] == "ok", "image_id"].to_numpy())
    if not np.array_equal(ok_ids, np.arange(n)):
        raise ValueError("ok rows of the index must have image_id 0..N-1")
    h, w = (int(x) for x in image_size)
    attrs = {
        "schema_version": SCHEMA_VERSION,
        "dataset": dataset,
        "image_size": [h, w],
        "unit_size": int(unit_size),
        "n_images": n,
        "source_root": str(source_root),
        "provenance": make_provenance({"name": "ingest", "version": SCHEMA_VERSION}, params=params or {}),
    }
    if fs.exists("zarr.json") and not overwrite:
        existing = Store(url, mode="r+")
        old = existing.attrs
        same = all(old.get(k) == attrs[k] for k in ("dataset", "image_size", "unit_size", "n_images", "source_root"))
        same = same and same_provenance(old.get("provenance", {}), attrs["provenance"])
        if same and fs.exists(INDEX) and existing.index.equals(index.reset_index(drop=True)):
            return existing
        raise StoreError(f"{url} already holds a different store; pass overwrite=True (--overwrite) to replace it")
    if overwrite:
        for rel in ("images", "estimates", "priors", "tables", "units", INDEX, "zarr.json"):
            fs.rm(rel)
    root = zarr.open_group(store=fs.zarr_store(read_only=False), mode="w", zarr_format=3)
    _create_array(root, "images", n, (h, w, 3), "uint8", unit_size)
    fs.write_table(INDEX, index.reset_index(drop=True))
    root.attrs[ATTRS_KEY] = attrs  # written last: a store without attrs is not a store
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
        checksums = {}
        for name, data in arrays.items():
            target = self.arrays[name]
            if data.shape != (stop - start, *target.shape[1:]):
                raise ValueError(f"{self.name}/{name} unit {k}: shape {data.shape}, expected {(stop - start, *target.shape[1:])}")
            data = np.ascontiguousarray(data, dtype=target.dtype)
            target[start:stop] = data
            checksums[name] = data_checksum(data)
        for tname, df in sorted((tables or {}).items()):
            self._fs.write_table(f"tables/{self.name}/{tname}/part-{k:06d}.parquet", df.reset_index(drop=True))
        fails = failures if failures is not None else failures_frame()
        self._fs.write_table(f"tables/{self.name}/failures/part-{k:06d}.parquet", fails.reset_index(drop=True))
        self._fs.write_json(self.marker(k), {
            "unit": k, "start": start, "stop": stop, "checksums": checksums,
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
    other settings is replaced when ``overwrite``, else refused.
    """
    if store.mode == "r":
        raise StoreError("open the store with mode='r+' to write groups")
    if not (name.startswith("estimates/") or name.startswith("priors/")) or name.count("/") != 1:
        raise ValueError(f"group names are 'estimates/<name>' or 'priors/<name>', got {name!r}")
    fs = store._fs
    layout = {k: [list(t), d] for k, (t, d) in sorted(arrays.items())}
    if name in store.root:
        g = store.root[name]
        old = dict(g.attrs.get("provenance", {}))
        if same_provenance(old, provenance) and g.attrs.get("layout") == layout:
            writer = UnitWriter(store, name, {k: g[k] for k in arrays})
            writer.discard_partials()
            return writer
    if name in store.root and not overwrite:
        raise StoreError(
            f"{store.url} already has {name} made with other settings "
            f"(was: {old.get('producer')}, params {old.get('params')}); pass overwrite=True (--overwrite) to rebuild it"
        )
    if name in store.root:
        del store.root[name]
    fs.rm(f"units/{name}")
    fs.rm(f"tables/{name}")
    g = store.root.require_group(name)
    zs = {k: _create_array(g, k, store.n_images, tuple(t), d, store.unit_size) for k, (t, d) in sorted(arrays.items())}
    g.attrs["layout"] = layout
    g.attrs["provenance"] = provenance  # last: a group without provenance is not listed
    return UnitWriter(store, name, zs)


def reopen_writer(url: str, name: str) -> UnitWriter:
    """The writer of an existing group (or ``images``) in another process."""
    store = Store(url, mode="r+")
    if name == "images":
        return image_writer(store)
    g = store.root[name]
    return UnitWriter(store, name, {k: v for k, v in g.arrays()})

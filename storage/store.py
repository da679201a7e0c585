"""One store per dataset: a Zarr v3 group for arrays, Parquet for tables.

Layout of ``STORE/`` (a local directory or an fsspec URL)::

    zarr.json                 root group; attrs["reid_priors"] = store attributes
    index.parquet             one row per source image (also failures)
    images/                   uint8 (N, H, W, 3), chunk = one write unit
    estimates/<backend>/      e.g. i (N,H,W) uint8, uv (N,2,H,W) uint16
    priors/dsap/, priors/mpn/ prior arrays, axis 0 = image_id
    tables/<group>/<table>/part-<unit>.parquet    per-unit tables (stats, failures)
    units/<group>/<unit>.json                      completion markers
    locks/<group>.lock        while a process writes that group (one writer per group)
    creating.json             only while ingest creates the store (an interrupted creation)

Every array is chunked along N by ``unit_size`` images, so one *write unit*
(images ``[k*unit_size, (k+1)*unit_size)``) is exactly one chunk per array. A
unit counts as written only once its marker exists; the marker is written
last, atomically, and holds sha256 checksums of the unit's data. A killed run
therefore leaves no unit that looks complete but is not, and a re-run
rewrites the unfinished units deterministically (see :mod:`storage.writer`).

Readers never see unverified data: :attr:`Store.images` and
:attr:`GroupView.arrays` are :class:`CheckedArray` s, which check a unit's
marker and the checksum of its decoded rows the first time this ``Store``
object reads that unit (the check hashes the chunk the read decodes anyway: no
extra decode). Markers hold two checksums of each array's unit: sha256
(``checksums``, what ``verify`` compares) and CRC-32 (``crc32``, what readers
compare: 3x faster, and any accidental change of the data — a flipped bit, a
swapped or zero-filled chunk — changes it except with probability 2^-32). A unit without marker, or whose data do not match, raises
:class:`UnitError` naming the unit and ``python -m storage verify``; zarr's
fill value never reaches a batch.
"""
from __future__ import annotations

import hashlib
import html
import os
import threading
import weakref
import zlib
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np
import pandas as pd
import zarr
from zarr.codecs import BloscCodec

from .fs import StoreFS
from .provenance import SCHEMA_VERSION

ATTRS_KEY = "reid_priors"
INDEX = "index.parquet"
CREATING = "creating.json"
SPLITS = ("train", "query", "gallery")
DEFAULT_UNIT_SIZE = 32


class StoreError(RuntimeError):
    """A store that cannot be opened or is inconsistent."""


class UnitError(StoreError):
    """A unit a reader asked for is not written or does not match its checksum."""


def data_checksum(arr: np.ndarray) -> str:
    """sha256 over dtype, shape and the bytes of ``arr`` (the checksum kept in unit markers)."""
    a = np.ascontiguousarray(arr)
    h = hashlib.sha256()
    h.update(f"{a.dtype.str}{a.shape}".encode())
    h.update(memoryview(a).cast("B") if a.size else b"")
    return h.hexdigest()


def data_crc32(arr: np.ndarray) -> int:
    """CRC-32 over dtype, shape and bytes of ``arr``: the readers' check (3x faster than sha256)."""
    a = np.ascontiguousarray(arr)
    crc = zlib.crc32(f"{a.dtype.str}{a.shape}".encode())
    return zlib.crc32(memoryview(a).cast("B"), crc) if a.size else crc


def _row_range(key, n: int) -> tuple[int, int] | None:
    """Rows ``[a, b)`` along axis 0 that ``array[key]`` touches, or None when not a plain int/slice."""
    first = key[0] if isinstance(key, tuple) and key else key
    if isinstance(key, tuple) and not key or first is Ellipsis:
        return 0, n
    if isinstance(first, (int, np.integer)):
        i = int(first) + (n if int(first) < 0 else 0)
        return (i, i + 1) if 0 <= i < n else None
    if isinstance(first, slice):
        a, b, step = first.indices(n)
        return (a, max(a, b)) if step == 1 else (0, n)
    return None


class CheckedArray:
    """A zarr array (axis 0 = image rows, chunked by units) whose units are checked on first read.

    ``array[key]`` for int/slice keys along axis 0 reads the unit-aligned block once, checks every
    not yet checked unit in it against ``units/<group>/<k>.json`` and returns the requested rows.
    Every other attribute is the zarr array's.
    """

    def __init__(self, array: zarr.Array, store: "Store", group: str, name: str):
        self._array, self._store, self._group, self._name = array, store, group, name
        self._unit = int(array.chunks[0])

    def __getattr__(self, attr: str):
        return getattr(self._array, attr)

    def __len__(self) -> int:
        return int(self._array.shape[0])

    def __array__(self, dtype=None, copy=None):
        out = self[:]
        return out.astype(dtype) if dtype is not None else out

    def __getitem__(self, key):
        n = int(self._array.shape[0])
        rows = _row_range(key, n)
        if rows is None:  # fancy indexing: check everything first
            self._check(0, n, None)
            return self._array[key]
        a, b = rows
        if b <= a:
            return self._array[key]
        u = self._unit
        ua, ub = a // u * u, min(n, -(-b // u) * u)
        if self._store._units_checked(self._group, self._name, ua // u, (ub - 1) // u):
            return self._array[key]
        block = np.asarray(self._array[ua:ub])
        self._check(ua, ub, block)
        rest = key[1:] if isinstance(key, tuple) else ()
        first = key[0] if isinstance(key, tuple) else key
        if isinstance(first, slice):
            first = slice(a - ua, b - ua)
        else:
            first = a - ua
        return block[(first, *rest)]

    def _check(self, ua: int, ub: int, block: np.ndarray | None) -> None:
        u, store = self._unit, self._store
        for k in range(ua // u, -(-ub // u)):
            if store._units_checked(self._group, self._name, k, k):
                continue
            s, e = k * u, min(ub if block is not None else self._array.shape[0], (k + 1) * u)
            data = block[s - ua:e - ua] if block is not None else np.asarray(self._array[s:e])
            store._check_unit(self._group, self._name, k, s, e, data)

    def __repr__(self) -> str:
        return f"<checked {self._group}/{self._name} {tuple(self._array.shape)} {self._array.dtype}>"


def compressor() -> BloscCodec:
    """Blosc lz4: decodes ~45k images/s per chunk; lossless codecs gain little on photos
    (zstd-3: 1.36x smaller, 5x slower to decode) — bench/bench_store.py prints the comparison."""
    return BloscCodec(cname="lz4", clevel=5, shuffle="noshuffle")


def contiguous_runs(ids: np.ndarray) -> list[tuple[int, int, np.ndarray]]:
    """Group sorted-unique ``ids`` into maximal runs ``(start, stop, positions)``.

    ``positions`` are the indices into the *original* ``ids`` order, so callers
    can scatter each run's rows back to where they were asked for.
    """
    ids = np.asarray(ids, dtype=np.int64)
    if ids.size == 0:
        return []
    order = np.argsort(ids, kind="stable")
    s = ids[order]
    breaks = np.flatnonzero(np.diff(s) > 1) + 1
    runs = []
    for chunk in np.split(np.arange(s.size), breaks):
        runs.append((int(s[chunk[0]]), int(s[chunk[-1]]) + 1, order[chunk]))
    return runs


def read_rows(array: zarr.Array, ids) -> np.ndarray:
    """Rows ``ids`` of ``array`` in the given order: one zarr call per contiguous run."""
    ids = np.asarray(ids, dtype=np.int64)
    out = np.empty((ids.size, *array.shape[1:]), dtype=array.dtype)
    for start, stop, pos in contiguous_runs(ids):
        block = array[start:stop]
        out[pos] = block[ids[pos] - start]
    return out


@dataclass
class GroupView:
    """A named group of a store (``estimates/oracle``, ``priors/dsap``, ...)."""

    store: "Store"
    name: str
    zgroup: zarr.Group

    @property
    def provenance(self) -> dict[str, Any]:
        return dict(self.zgroup.attrs.get("provenance", {}))

    @cached_property
    def raw_arrays(self) -> dict[str, zarr.Array]:
        """The zarr arrays, unchecked (for writers and ``verify``)."""
        return {k: v for k, v in sorted(self.zgroup.arrays())}

    @cached_property
    def arrays(self) -> dict[str, "CheckedArray"]:
        """The arrays; every unit is checked against its marker on its first read."""
        if not self.store.check_reads:
            return dict(self.raw_arrays)
        return {k: CheckedArray(v, self.store, self.name, k) for k, v in self.raw_arrays.items()}

    def read(self, array: str, ids) -> np.ndarray:
        return read_rows(self.arrays[array], ids)

    def table_names(self) -> list[str]:
        return self.store._fs.listdir(f"tables/{self.name}")

    def table(self, name: str) -> pd.DataFrame:
        return self.store._read_parts(f"tables/{self.name}/{name}")

    @property
    def failures(self) -> pd.DataFrame:
        return self.table("failures")

    def units_done(self) -> list[int]:
        return [int(n.split(".")[0]) for n in self.store._fs.listdir(f"units/{self.name}") if n.endswith(".json")]

    def __repr__(self) -> str:
        prod = self.provenance.get("producer", {})
        names = ", ".join(p.get("name", "?") for p in (prod if isinstance(prod, list) else [prod]))
        arrs = ", ".join(f"{k}{tuple(a.shape)} {a.dtype}" for k, a in self.arrays.items())
        return f"<group {self.name} by {names}: {arrs}>"


class Store:
    """Read access to a store; writers come from :mod:`storage.writer`."""

    def __init__(self, url: str | os.PathLike, mode: str = "r", check_reads: bool = True):
        self._fs = StoreFS(url)
        self.check_reads = bool(check_reads)  # False only to measure what the checks cost (bench_loader)
        self.url = self._fs.url
        self.mode = mode
        self._locks: list = []
        self._checked: set[tuple[str, str, int]] = set()
        self._checked_lock = threading.Lock()
        weakref.finalize(self, _release_all, self._locks)
        if self._fs.local and os.path.isfile(self._fs.root):
            raise StoreError(f"{url} is a file, not a store directory")
        if self._fs.exists(CREATING):
            raise StoreError(f"{url}: creating this store was interrupted; re-run the same "
                             f"`python -m pipelines ingest` command to finish it")
        if not self._fs.exists("zarr.json"):
            raise StoreError(f"{url} is not a store (no zarr.json); create one with `python -m pipelines ingest`")
        try:
            self.root = self._fs.open_zarr("r" if mode == "r" else "r+")
            attrs = dict(self.root.attrs.get(ATTRS_KEY, {}))
        except Exception as exc:  # noqa: BLE001 - a damaged zarr.json: any parser error
            raise StoreError(f"{url}: the root zarr.json is unreadable ({type(exc).__name__}: {exc}); "
                             f"the store is damaged") from None
        if not attrs:
            raise StoreError(f"{url} is a Zarr group but not a reid-priors store (no '{ATTRS_KEY}' attributes)")
        version = attrs.get("schema_version")
        if version != SCHEMA_VERSION:
            raise StoreError(
                f"{url} was written with store schema version {version}; this code reads version "
                f"{SCHEMA_VERSION}. Re-ingest the dataset with this version, or install the reid-priors "
                f"release that wrote it."
            )
        self.attrs = attrs

    # ---- index -------------------------------------------------------
    @cached_property
    def index(self) -> pd.DataFrame:
        if not self._fs.exists(INDEX):
            raise StoreError(f"{self.url} has no {INDEX}: ingest did not finish; re-run it to resume")
        return self._fs.read_table(INDEX)

    @cached_property
    def ok_index(self) -> pd.DataFrame:
        ok = self.index[self.index["status"] == "ok"].sort_values("image_id").reset_index(drop=True)
        return ok

    @property
    def image_size(self) -> tuple[int, int]:
        h, w = self.attrs["image_size"]
        return int(h), int(w)

    @property
    def unit_size(self) -> int:
        return int(self.attrs["unit_size"])

    @property
    def n_images(self) -> int:
        return int(self.attrs["n_images"])

    def units(self) -> list[tuple[int, int, int]]:
        """All write units ``(k, start, stop)`` over the ``n_images`` rows."""
        u = self.unit_size
        return [(k, s, min(s + u, self.n_images)) for k, s in enumerate(range(0, self.n_images, u))]

    # ---- arrays ------------------------------------------------------
    @property
    def raw_images(self) -> zarr.Array:
        """The images array, unchecked (for writers and ``verify``)."""
        try:
            return self.root["images"]
        except KeyError:
            raise StoreError(f"{self.url} has no images array metadata (images/zarr.json): the store is damaged; "
                             f"run `python -m storage verify {self.url}`") from None

    @property
    def images(self) -> CheckedArray:
        """(N, H, W, 3) uint8; every unit is checked against its marker on its first read."""
        if not self.check_reads:
            return self.raw_images
        return CheckedArray(self.raw_images, self, "images", "images")

    # ---- reader checks (see the module docstring) -------------------------
    def _units_checked(self, group: str, name: str, k0: int, k1: int) -> bool:
        c = self._checked
        return all((group, name, k) in c for k in range(k0, k1 + 1))

    def _check_unit(self, group: str, name: str, k: int, start: int, stop: int, data: np.ndarray) -> None:
        marker = f"units/{group}/{k:06d}.json"
        hint = f"run `python -m storage verify {self.url}` and re-run the command that builds {group}"
        try:
            meta = self._fs.read_json(marker)
        except FileNotFoundError:
            raise UnitError(f"{self.url}: unit {k} of {group} (rows {start}..{stop - 1}) is not written "
                            f"(no completion marker {marker}); {hint}") from None
        except (ValueError, OSError) as exc:
            raise UnitError(f"{self.url}: unit {k} of {group}: marker {marker} is unreadable ({exc}); {hint}") from None
        crc = (meta.get("crc32") or {}).get(name)
        if crc is not None:  # markers since issue 15: CRC-32 for readers, sha256 for verify
            good = crc == data_crc32(data)
        else:
            good = (meta.get("checksums") or {}).get(name) == data_checksum(data)
        if meta.get("start") != start or meta.get("stop") != stop or not good:
            raise UnitError(f"{self.url}: unit {k} of {group} (rows {start}..{stop - 1}): '{name}' does not match "
                            f"the checksum in {marker}; {hint}")
        with self._checked_lock:
            self._checked.add((group, name, k))

    def hold_lock(self, name: str, what: str = "") -> None:
        """Take the writer lock ``name`` for as long as this Store object lives (or :meth:`close`)."""
        self._locks.append(self._fs.lock(name, what))

    def close(self) -> None:
        """Release the writer locks this object holds."""
        _release_all(self._locks)

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def read_images(self, ids) -> np.ndarray:
        return read_rows(self.images, ids)

    def image(self, image_id: int) -> np.ndarray:
        return np.asarray(self.images[int(image_id)])

    # ---- groups ------------------------------------------------------
    @property
    def groups(self) -> dict[str, dict[str, Any]]:
        """Every group that carries provenance, by name."""
        found: dict[str, dict[str, Any]] = {}
        for top in ("estimates", "priors"):
            if top not in self.root:
                continue
            for name, g in sorted(self.root[top].groups()):
                if "provenance" in g.attrs:
                    found[f"{top}/{name}"] = dict(g.attrs["provenance"])
        return found

    def has_group(self, name: str) -> bool:
        return name in self.groups

    def group(self, name: str) -> GroupView:
        if not self.has_group(name):
            have = ", ".join(self.groups) or "none"
            raise KeyError(f"{self.url} has no group {name!r} (groups: {have})")
        return GroupView(self, name, self.root[name])

    def table(self, name: str) -> pd.DataFrame:
        return self._read_parts(f"tables/{name}")

    def _read_parts(self, rel: str) -> pd.DataFrame:
        parts = [p for p in self._fs.listdir(rel) if p.endswith(".parquet")]
        if not parts:
            return pd.DataFrame()
        frames = [self._fs.read_table(f"{rel}/{p}") for p in parts]
        frames = [f for f in frames if len(f)]
        if not frames:
            return self._fs.read_table(f"{rel}/{parts[0]}")
        return pd.concat(frames, ignore_index=True)

    # ---- summaries ---------------------------------------------------
    def summary(self) -> dict[str, Any]:
        idx = self.index
        ok = idx[idx["status"] == "ok"]
        counts = {}
        for split in SPLITS:
            s = ok[ok["split"] == split]
            counts[split] = {"images": int(len(s)), "pids": int(s["pid"].nunique()), "cameras": int(s["camid"].nunique())}
        per_camera = {str(k): int(v) for k, v in ok.groupby("camid").size().items()}
        not_ok = idx[idx["status"] != "ok"]
        reasons = {f"{s}:{r}": int(n) for (s, r), n in not_ok.groupby(["status", "reason"]).size().items()}
        groups = {}
        for name, prov in self.groups.items():
            g = self.group(name)
            fails = g.failures
            groups[name] = {
                "provenance": prov,
                "units_done": len(g.units_done()),
                "units_total": len(self.units()),
                "failures": {str(k): int(v) for k, v in (fails.groupby("reason").size().items() if len(fails) else [])},
            }
        return {
            "store": self.url,
            "dataset": self.attrs.get("dataset"),
            "image_size": list(self.image_size),
            "schema_version": self.attrs.get("schema_version"),
            "n_images": self.n_images,
            "index_rows": int(len(idx)),
            "splits": counts,
            "per_camera": per_camera,
            "not_ok": reasons,
            "groups": groups,
            "source_root": self.attrs.get("source_root"),
        }

    def __repr__(self) -> str:
        s = self.summary()
        lines = [f"<reid-priors store {s['store']}: {s['dataset']}, {s['n_images']} images at {s['image_size'][0]}x{s['image_size'][1]}>"]
        for split, c in s["splits"].items():
            lines.append(f"  {split:8s} {c['images']:7d} images {c['pids']:6d} ids {c['cameras']:3d} cameras")
        if s["not_ok"]:
            lines.append("  not ingested: " + ", ".join(f"{k}={v}" for k, v in s["not_ok"].items()))
        for name, g in s["groups"].items():
            p = g["provenance"]
            prod = p.get("producer", {})
            names = "+".join(x.get("name", "?") for x in (prod if isinstance(prod, list) else [prod]))
            fails = sum(g["failures"].values())
            lines.append(f"  {name:20s} by {names} ({g['units_done']}/{g['units_total']} units, {fails} failures, {p.get('created')})")
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        from .report import store_html_summary

        return store_html_summary(self)


def _release_all(locks: list) -> None:
    while locks:
        locks.pop().release()


def open_store(url: str | os.PathLike, mode: str = "r", check_reads: bool = True) -> Store:
    """Open a store for reading (``mode='r'``) or for adding groups (``'r+'``).

    ``check_reads=False`` turns off the per-unit marker + checksum check of readers: only for
    measuring its cost; a reader then may see zeros for a missing unit."""
    return Store(url, mode=mode, check_reads=check_reads)


def escape(x: Any) -> str:
    return html.escape(str(x))

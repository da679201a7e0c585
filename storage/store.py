"""One store per dataset: a Zarr v3 group for arrays, Parquet for tables.

Layout of ``STORE/`` (a local directory or an fsspec URL)::

    zarr.json                 root group; attrs["reid_priors"] = store attributes
    index.parquet             one row per source image (also failures)
    images/                   uint8 (N, H, W, 3), chunk = one write unit
    estimates/<backend>/      e.g. i (N,H,W) uint8, uv (N,2,H,W) uint16
    priors/dsap/, priors/mpn/ prior arrays, axis 0 = image_id
    tables/<group>/<table>/part-<unit>.parquet    per-unit tables (stats, failures)
    units/<group>/<unit>.json                      completion markers

Every array is chunked along N by ``unit_size`` images, so one *write unit*
(images ``[k*unit_size, (k+1)*unit_size)``) is exactly one chunk per array. A
unit counts as written only once its marker exists; the marker is written
last, atomically, and holds sha256 checksums of the unit's data. A killed run
therefore leaves no unit that looks complete but is not, and a re-run
rewrites the unfinished units deterministically (see :mod:`storage.writer`).
"""
from __future__ import annotations

import html
import os
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
SPLITS = ("train", "query", "gallery")
DEFAULT_UNIT_SIZE = 32


class StoreError(RuntimeError):
    """A store that cannot be opened or is inconsistent."""


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
    def arrays(self) -> dict[str, zarr.Array]:
        return {k: v for k, v in sorted(self.zgroup.arrays())}

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

    def __init__(self, url: str | os.PathLike, mode: str = "r"):
        self._fs = StoreFS(url)
        self.url = self._fs.url
        self.mode = mode
        if not self._fs.exists("zarr.json"):
            raise StoreError(f"{url} is not a store (no zarr.json); create one with `python -m pipelines ingest`")
        self.root = self._fs.open_zarr("r" if mode == "r" else "r+")
        attrs = dict(self.root.attrs.get(ATTRS_KEY, {}))
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
    def images(self) -> zarr.Array:
        return self.root["images"]

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


def open_store(url: str | os.PathLike, mode: str = "r") -> Store:
    """Open a store for reading (``mode='r'``) or for adding groups (``'r+'``)."""
    return Store(url, mode=mode)


def escape(x: Any) -> str:
    return html.escape(str(x))

"""Filesystem helpers: one store is a directory given as a local path or an fsspec URL.

Object storage (``s3://bucket/store``, with ``pip install '.[s3]'``): credentials and
the endpoint come from the environment (``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``,
``AWS_ENDPOINT_URL``, ``~/.aws``), never from the URL, so they are never written into a
store's attributes or provenance. Directory listings are not cached: other processes
(Dask workers) add unit markers while this one reads them.
"""
from __future__ import annotations

import io
import json
import os
import posixpath
import uuid
from typing import Any

import fsspec
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import zarr
from zarr.storage import FsspecStore, LocalStore


# fsspec options for remote stores: listings change under us (other writers)
REMOTE_OPTIONS = {"use_listings_cache": False}


def check_store_url(url: str) -> str:
    """Refuse a store URL that carries credentials (``s3://KEY:SECRET@bucket/...``)."""
    scheme, sep, rest = url.partition("://")
    if sep and "@" in rest.split("/", 1)[0]:
        raise ValueError(f"store URL {scheme}://...@{rest.split('@', 1)[1]} holds credentials; give them in the "
                         "environment (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, AWS_ENDPOINT_URL) instead, "
                         "so that they are never recorded in the store")
    return url


def _filesystem(url: str):
    protocol = fsspec.core.split_protocol(url)[0]
    if protocol in (None, "file", "local"):
        return fsspec.core.url_to_fs(url)
    try:
        return fsspec.core.url_to_fs(url, **REMOTE_OPTIONS)
    except ImportError as exc:
        raise ImportError(f"store {url}: {exc}. For s3:// stores: pip install 'reid-priors[s3]' (s3fs)") from None


class StoreFS:
    """Paths inside one store, relative to its root, through fsspec."""

    def __init__(self, url: str | os.PathLike):
        url = check_store_url(os.fspath(url))
        self.fs, root = _filesystem(url)
        self.local = "file" in (self.fs.protocol if isinstance(self.fs.protocol, tuple) else (self.fs.protocol,))
        self.root = os.path.abspath(root) if self.local else root.rstrip("/")
        self.url = self.root if self.local else url

    def path(self, rel: str) -> str:
        return posixpath.join(self.root, rel) if rel else self.root

    def exists(self, rel: str) -> bool:
        return self.fs.exists(self.path(rel))

    def read_bytes(self, rel: str) -> bytes:
        return self.fs.cat_file(self.path(rel))

    def write_bytes_atomic(self, rel: str, data: bytes) -> None:
        """Write so that a reader sees the old file, no file, or the whole new one."""
        target = self.path(rel)
        if self.local:
            os.makedirs(os.path.dirname(target), exist_ok=True)
            tmp = f"{target}.tmp-{uuid.uuid4().hex}"
            with open(tmp, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, target)
        else:  # object stores: a single PUT is atomic
            self.fs.pipe_file(target, data)

    def write_json(self, rel: str, obj: Any) -> None:
        self.write_bytes_atomic(rel, json.dumps(obj, indent=1, sort_keys=True).encode())

    def read_json(self, rel: str) -> Any:
        return json.loads(self.read_bytes(rel))

    def write_table(self, rel: str, df: pd.DataFrame) -> None:
        buf = io.BytesIO()
        pq.write_table(pa.Table.from_pandas(df, preserve_index=False), buf, compression="zstd")
        self.write_bytes_atomic(rel, buf.getvalue())

    def read_table(self, rel: str) -> pd.DataFrame:
        with self.fs.open(self.path(rel), "rb") as f:
            return pq.read_table(f).to_pandas()

    def listdir(self, rel: str) -> list[str]:
        p = self.path(rel)
        if not self.fs.exists(p):
            return []
        return sorted(posixpath.basename(x.rstrip("/")) for x in self.fs.ls(p, detail=False))

    def remove_partials(self, rel: str) -> int:
        """Delete temporary files a killed writer left below ``rel`` (ours and zarr's)."""
        if not self.local:
            return 0  # object stores have no partial writes
        n = 0
        for folder, _, files in os.walk(self.path(rel)):
            for name in files:
                if ".tmp-" in name or name.endswith(".partial"):
                    os.remove(os.path.join(folder, name))
                    n += 1
        return n

    def rm(self, rel: str) -> None:
        p = self.path(rel)
        if self.fs.exists(p):
            self.fs.rm(p, recursive=True)

    def zarr_store(self, read_only: bool):
        if self.local:
            return LocalStore(self.root, read_only=read_only)
        return FsspecStore.from_url(self.url, read_only=read_only, storage_options=dict(REMOTE_OPTIONS))

    def open_zarr(self, mode: str) -> zarr.Group:
        return zarr.open_group(store=self.zarr_store(read_only=(mode == "r")), mode=mode, zarr_format=3)

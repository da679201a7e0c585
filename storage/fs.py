"""Filesystem helpers: one store is a directory given as a local path or an fsspec URL.

Every file a store write makes goes through :class:`StoreFS` (our tables, JSON
files, locks) or through the zarr store it hands out (array chunks and
metadata), so both can be counted and interrupted:

* **Fault injection.** ``REID_PRIORS_FAULT_AT=N`` makes the process exit (code
  ``FAULT_EXIT_CODE``) at the N-th *write point*: every file write has two, one
  with the temporary file written but not yet renamed (a torn write), one right
  after the rename; every deletion has one after it. :data:`faults` does the same
  in-process (``faults.arm(N)`` raises :class:`InjectedFault`, a ``BaseException``
  no ``except Exception`` swallows) and counts the points of an uninterrupted run.
* **Locks.** :meth:`StoreFS.lock` takes ``locks/<name>.lock`` (exclusive create)
  so that one process writes a group at a time; a lock left by a killed process
  on this host is taken over (its pid is gone).

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
import socket
import threading
import time
import uuid
from typing import Any

import fsspec
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import zarr
from zarr.storage import FsspecStore, LocalStore, WrapperStore

FAULT_ENV = "REID_PRIORS_FAULT_AT"
FAULT_EXIT_CODE = 75


class InjectedFault(BaseException):
    """Raised at an armed write point (in-process fault injection): simulates a kill."""


class Faults:
    """Counts write points; kills (or raises) at the armed one. Thread-safe, one per process."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.count = 0
        self.log: list[str] = []
        env = os.environ.get(FAULT_ENV, "").strip()
        self.at: int | None = int(env) if env else None
        self.mode = "exit"

    def arm(self, at: int | None, mode: str = "raise") -> None:
        """Fire at point ``at`` counted from now (``None`` = only count)."""
        with self._lock:
            self.count, self.log, self.at, self.mode = 0, [], at, mode

    def point(self, what: str, on_kill=None) -> None:
        with self._lock:
            self.count += 1
            n = self.count
            self.log.append(what)
            fire = self.at is not None and n == self.at
        if fire:
            if on_kill is not None:
                on_kill()
            if self.mode == "exit":
                os._exit(FAULT_EXIT_CODE)
            raise InjectedFault(f"injected fault at write point {n}: {what}")


faults = Faults()


class FaultStore(WrapperStore):
    """A zarr store whose writes and deletes are write points (see the module docstring)."""

    def __init__(self, store, local_root: str | None):
        super().__init__(store)
        self._local_root = local_root

    def _with_store(self, store):
        return type(self)(store, self._local_root)

    def _torn(self, key: str, value) -> None:
        if self._local_root is None:
            return  # object stores: a PUT is all or nothing
        data = value.to_bytes()
        path = os.path.join(self._local_root, key)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(f"{path}.{uuid.uuid4().hex}.partial", "wb") as f:  # zarr's own temporary name
            f.write(data[: len(data) // 2])

    async def set(self, key, value) -> None:
        faults.point(f"zarr {key} (torn)", on_kill=lambda: self._torn(key, value))
        await self._store.set(key, value)
        faults.point(f"zarr {key}")

    async def delete(self, key) -> None:
        await self._store.delete(key)
        faults.point(f"zarr delete {key}")

    async def delete_dir(self, prefix) -> None:
        await self._store.delete_dir(prefix)
        faults.point(f"zarr delete_dir {prefix}")


class LockError(RuntimeError):
    """Another process is writing the same part of the store."""


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

    _held: dict[str, int] = {}  # lock paths this process holds -> re-entry count
    _held_lock = threading.Lock()

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

    def isfile(self, rel: str) -> bool:
        return self.fs.isfile(self.path(rel))

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
            faults.point(f"{rel} (torn)")
            os.replace(tmp, target)
        else:  # object stores: a single PUT is atomic
            self.fs.pipe_file(target, data)
        faults.point(rel)

    def write_json(self, rel: str, obj: Any) -> None:
        self.write_bytes_atomic(rel, json_bytes(obj))

    def read_json(self, rel: str) -> Any:
        return json.loads(self.read_bytes(rel))

    def write_table(self, rel: str, df: pd.DataFrame) -> None:
        self.write_bytes_atomic(rel, table_bytes(df))

    def read_table(self, rel: str) -> pd.DataFrame:
        with self.fs.open(self.path(rel), "rb") as f:
            return pq.read_table(f).to_pandas()

    def listdir(self, rel: str) -> list[str]:
        p = self.path(rel)
        if not self.fs.exists(p):
            return []
        return sorted(posixpath.basename(x.rstrip("/")) for x in self.fs.ls(p, detail=False))

    def remove_partials(self, rel: str, recursive: bool = True) -> int:
        """Delete temporary files a killed writer left below ``rel`` (ours and zarr's).

        ``recursive=False``: only the files directly in ``rel`` (``""``: the store root).
        Only call it while no other process writes there.
        """
        if not self.local:
            return 0  # object stores have no partial writes
        n = 0
        for folder, _, files in os.walk(self.path(rel)):
            for name in files:
                if ".tmp-" in name or name.endswith(".partial"):
                    os.remove(os.path.join(folder, name))
                    n += 1
            if not recursive:
                break
        return n

    def rm(self, rel: str) -> None:
        p = self.path(rel)
        if self.fs.exists(p):
            self.fs.rm(p, recursive=True)
            faults.point(f"rm {rel}")

    def zarr_store(self, read_only: bool):
        store = LocalStore(self.root, read_only=read_only) if self.local else FsspecStore.from_url(
            self.url, read_only=read_only, storage_options=dict(REMOTE_OPTIONS))
        return store if read_only else FaultStore(store, self.root if self.local else None)

    def open_zarr(self, mode: str) -> zarr.Group:
        return zarr.open_group(store=self.zarr_store(read_only=(mode == "r")), mode=mode, zarr_format=3)

    # ---- one writer per group ------------------------------------------
    def lock(self, name: str, what: str = "") -> "StoreLock":
        """Take ``locks/<name>.lock`` or raise :class:`LockError` naming its holder (see :class:`StoreLock`)."""
        return StoreLock(self, name, what)


class StoreLock:
    """An exclusive lock file; release() (or garbage collection of its holder) removes it.

    Re-entrant within a process. A lock file whose pid no longer runs on this host
    is stale (a killed writer) and is taken over. On object stores the exclusive
    create is best effort (check, then PUT).
    """

    def __init__(self, fs: StoreFS, name: str, what: str = ""):
        self.fs, self.name = fs, name
        self.rel = f"locks/{name.replace('/', '_')}.lock"
        key = fs.path(self.rel)
        with StoreFS._held_lock:
            if StoreFS._held.get(key):
                StoreFS._held[key] += 1
                self.key = key
                return
        info = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "what": what}
        for _ in range(2):
            if self._create(json_bytes(info)):
                break
            holder = self._holder()
            if holder is not None and not self._stale(holder):
                raise LockError(
                    f"{fs.url}: {name} is being written by pid {holder.get('pid')} on {holder.get('host')} "
                    f"since {holder.get('since')} ({holder.get('what') or 'another writer'}); wait for it to finish, "
                    f"or delete {fs.path(self.rel)} if that process is gone")
            fs.fs.rm(fs.path(self.rel))  # stale: its writer was killed
        else:
            raise LockError(f"{fs.url}: could not take the lock {fs.path(self.rel)}")
        with StoreFS._held_lock:
            StoreFS._held[key] = 1
        self.key = key

    def _create(self, data: bytes) -> bool:
        path = self.fs.path(self.rel)
        if self.fs.local:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            try:
                fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                return False
            with os.fdopen(fd, "wb") as f:
                f.write(data)
        else:
            if self.fs.fs.exists(path):
                return False
            self.fs.fs.pipe_file(path, data)
        faults.point(f"lock {self.rel}")
        return True

    def _holder(self) -> dict | None:
        try:
            return json.loads(self.fs.read_bytes(self.rel))
        except FileNotFoundError:
            return None
        except (ValueError, OSError):
            return {}  # half-written lock file: its writer died while creating it

    @staticmethod
    def _stale(holder: dict) -> bool:
        if not holder:
            return True
        if holder.get("host") != socket.gethostname():
            return False  # cannot tell: the user decides
        pid = int(holder.get("pid", -1))
        if pid == os.getpid():
            return True  # ours, left by an interrupted call in this process that no longer holds it
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            return False
        return False

    def release(self) -> None:
        key = getattr(self, "key", None)
        if key is None:
            return
        self.key = None
        with StoreFS._held_lock:
            StoreFS._held[key] -= 1
            last = StoreFS._held[key] == 0
            if last:
                del StoreFS._held[key]
        if last:
            self.fs.rm(self.rel)

    def __enter__(self) -> "StoreLock":
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def json_bytes(obj: Any) -> bytes:
    return json.dumps(obj, indent=1, sort_keys=True).encode()


def table_bytes(df: pd.DataFrame) -> bytes:
    buf = io.BytesIO()
    pq.write_table(pa.Table.from_pandas(df, preserve_index=False), buf, compression="zstd")
    return buf.getvalue()

"""Streaming batches from a store: images + the prior groups a method declares.

* :class:`StoreDataset` — one split of a store as rows (``image_id`` order)
  with labels/pids/camids and the arrays of the required groups; reads any set
  of rows with as few zarr calls as the chunk layout allows.
* :class:`StoreUnion` — the train splits of several stores as one dataset
  (identity labels offset per store, camera ids kept per store).
* :class:`TrainLoader` — P×K batches (:class:`reid_train.data.sampler.PKSampler`),
  read by background threads into (pinned) memory, augmented on the target
  device (:mod:`reid_train.data.augment`).
* :class:`EvalLoader` — a split in ``image_id`` order, unaugmented.

Read path. The store keeps one identity's images in consecutive rows and
chunks every array along N (``store.unit_size`` rows a chunk). zarr's cost is
per call and per decoded chunk, not per row, so a batch's rows are grouped
into spans that never skip a whole chunk (two rows in the same or in adjacent
chunks share a span) and each span is ONE zarr call; rows are then picked in
memory. For a P×K batch that is at most one call per identity, fewer when
identities are neighbours. Each call still decodes whole chunks, most of whose
rows a P×K batch does not use, so cold reads are bound by chunk decoding.
Hence the cache: with ``cache`` on, every chunk decoded once stays in RAM (a
lazily filled copy of the split's rows, filled chunk by chunk as batches need
them), so from the second epoch on reads are memory copies. ``'auto'`` (the
TrainLoader default) turns it on when the split's arrays fit in
``min(cache_max_bytes, available RAM / (2 * world_size))``; every DDP process
keeps its own copy. Arrays under 64 MiB (MPN masks, ROIs) are read whole once.
``bench/bench_loader.py`` measures both against a JPEG + PIL DataLoader.

Threads, not processes: zarr and blosc release the GIL while decoding, the
CPU augmentation is numpy (which does too), and threads share the cache.
The worker threads read (and on the CPU augment) whole batches, at most
``prefetch`` ahead, in order; on CUDA they read into pinned memory and the
main thread copies (non-blocking) and augments on the GPU. A loader keeps its
threads from epoch to epoch; ``close()`` (or dropping the loader) lets them go.

Batch dict (keys fixed by the Method contract, :mod:`reid_train.methods`):
``images`` float (B,3,H,W) normalised, ``labels`` long (train labels 0..C-1,
-1 outside train), ``pids``, ``camids``, ``image_ids`` long; with
``priors/dsap``: ``dsap`` float (B,24,3,S,S) normalised, ``dsap_valid`` bool
(B,24,S,S); with ``priors/mpn``: ``mpn_mask`` float (B,h,w), ``mpn_roi`` long
(B,2), ``mpn_fallback`` bool (B,). Training on several stores adds
``store_index`` long (B,): the position of the row's store in the store list,
so ``(store_index, camid)`` names a camera and ``(store_index, pid)`` a person.
"""
from __future__ import annotations

import math
import os
import threading
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Iterator

import numpy as np
import torch

from .augment import AugmentConfig, AugmentParams, augment_batch, sample_params
from .sampler import PKSampler

__all__ = ["GROUP_ARRAYS", "MissingGroupError", "StoreDataset", "StoreUnion", "TrainLoader", "EvalLoader",
           "missing_group_error", "read_spans", "check_mpn_size"]

# store group -> {array in the group: batch key}
GROUP_ARRAYS = {
    "priors/dsap": {"dsap": "dsap", "valid": "dsap_valid"},
    "priors/mpn": {"mask": "mpn_mask", "roi": "mpn_roi", "fallback": "mpn_fallback"},
}
# store group -> (method that needs it, pipelines command that builds it)
GROUP_BUILDERS = {
    "priors/dsap": ("DSA-reID", "build-dsap"),
    "priors/mpn": ("MPN", "build-mpn-priors"),
}
SMALL_ARRAY_BYTES = 64 << 20
DEFAULT_CACHE_BYTES = 8 << 30

Alloc = Callable[[tuple, np.dtype], np.ndarray]


class MissingGroupError(LookupError):
    """A method needs a store group that has not been built."""

    def __str__(self) -> str:  # LookupError would repr() the message
        return str(self.args[0]) if self.args else ""


def missing_group_error(store, group: str) -> MissingGroupError:
    """The error for a missing group, saying which command builds it."""
    who, command = GROUP_BUILDERS.get(group, ("this method", None))
    have = ", ".join(store.groups) or "none"
    if command:
        msg = (f"{who} needs {group}: run {command} first "
               f"(python -m pipelines {command} --store {store.url}); groups in the store: {have}")
    else:
        msg = f"{who} needs {group}, which {store.url} does not have (groups in the store: {have})"
    return MissingGroupError(msg)


def _open(store):
    from storage import open_store

    return store if hasattr(store, "ok_index") else open_store(store)


def read_spans(ids: np.ndarray, unit: int) -> list[tuple[int, int, np.ndarray]]:
    """Plan the reads of rows ``ids``: ``(start, stop, positions)`` per zarr call.

    Sorted rows are cut only where a whole chunk of ``unit`` rows lies between
    two neighbours, so every span decodes only chunks that hold requested rows.
    ``positions`` index into ``ids`` (the rows each span serves).
    """
    ids = np.asarray(ids, dtype=np.int64)
    if ids.size == 0:
        return []
    order = np.argsort(ids, kind="stable")
    s = ids[order]
    cuts = np.flatnonzero(np.diff(s // unit) > 1) + 1
    return [(int(s[c[0]]), int(s[c[-1]]) + 1, order[c]) for c in np.split(np.arange(s.size), cuts)]


class _Rows:
    """Rows ``[lo, hi)`` of one zarr array: span reads, optionally cached in RAM."""

    def __init__(self, array, lo: int, hi: int, cache: bool):
        self.array, self.lo, self.hi = array, lo, hi
        self.unit = int(array.chunks[0])
        self.row_shape, self.dtype = tuple(array.shape[1:]), np.dtype(array.dtype)
        self.row_bytes = int(np.prod(self.row_shape, dtype=np.int64)) * self.dtype.itemsize
        self.data = None
        self.loaded = None
        if (hi - lo) * self.row_bytes <= SMALL_ARRAY_BYTES:
            self.data = np.asarray(array[lo:hi])
        elif cache:
            self.data = np.empty((hi - lo, *self.row_shape), self.dtype)  # pages committed on first write
            self.loaded = np.zeros(math.ceil(hi / self.unit), bool)

    def _fill(self, ids: np.ndarray) -> None:
        chunks = np.unique(ids // self.unit)
        missing = chunks[~self.loaded[chunks]]
        if missing.size == 0:
            return
        for run in np.split(missing, np.flatnonzero(np.diff(missing) > 1) + 1):
            a = max(int(run[0]) * self.unit, self.lo)
            b = min((int(run[-1]) + 1) * self.unit, self.hi)
            self.data[a - self.lo:b - self.lo] = self.array[a:b]
            self.loaded[run] = True  # after the data: a reader never sees a flag before its rows

    def read(self, ids: np.ndarray, alloc: Alloc = np.empty) -> np.ndarray:
        out = alloc((len(ids), *self.row_shape), self.dtype)
        if self.data is not None:
            if self.loaded is not None:
                self._fill(ids)
            np.take(self.data, ids - self.lo, axis=0, out=out)
            return out
        for a, b, pos in read_spans(ids, self.unit):
            block = self.array[a:b]
            out[pos] = block[ids[pos] - a]
        return out


class StoreDataset:
    """One split of a store with the arrays of the groups in ``requires``.

    Position ``i`` (0..len-1) is the split's ``i``-th ok image in ``image_id``
    order. ``read(positions)`` returns a raw batch of numpy arrays: ``images``
    uint8 (B,H,W,3), ``labels``/``pids``/``camids``/``image_ids`` int64 and
    the group arrays under their batch keys (:data:`GROUP_ARRAYS`), uint8 /
    bool / int16 as stored. ``dataset[i]`` is one such sample without the
    batch axis. ``cache``: True, False or ``'auto'`` (see the module docstring).
    """

    def __init__(self, store, split: str, requires=(), cache: bool | str = False,
                 cache_max_bytes: int = DEFAULT_CACHE_BYTES):
        self.store = _open(store)
        self.split = split
        ok = self.store.ok_index
        rows = ok[ok["split"] == split]
        if len(rows) == 0:
            raise ValueError(f"{self.store.url} has no ok images in split {split!r}")
        self.image_ids = rows["image_id"].to_numpy(np.int64)
        self.labels = rows["label"].to_numpy(np.int64)
        self.pids = rows["pid"].to_numpy(np.int64)
        self.camids = rows["camid"].to_numpy(np.int64)
        self.requires = tuple(requires)
        arrays = {"images": self.store.images}
        for group in self.requires:
            if group not in GROUP_ARRAYS:
                raise ValueError(f"no batch keys defined for group {group!r}; known: {sorted(GROUP_ARRAYS)}")
            if not self.store.has_group(group):
                raise missing_group_error(self.store, group)
            g = self.store.group(group)
            for name, key in GROUP_ARRAYS[group].items():
                if name not in g.arrays:
                    raise ValueError(f"{group} in {self.store.url} has no array {name!r} (has {sorted(g.arrays)})")
                arrays[key] = g.arrays[name]
        lo, hi = int(self.image_ids.min()), int(self.image_ids.max()) + 1
        if cache == "auto":
            per_row = sum(int(np.prod(a.shape[1:], dtype=np.int64)) * np.dtype(a.dtype).itemsize
                          for a in arrays.values())
            cache = (hi - lo) * per_row <= cache_max_bytes
        self.cache = bool(cache)
        self.arrays = {k: _Rows(a, lo, hi, self.cache) for k, a in arrays.items()}

    def __len__(self) -> int:
        return len(self.image_ids)

    @property
    def image_size(self) -> tuple[int, int]:
        return tuple(self.arrays["images"].row_shape[:2])

    def shapes(self) -> dict[str, tuple]:
        """Per-row shape of every array read (``images`` -> (H, W, 3), ...)."""
        return {k: r.row_shape for k, r in self.arrays.items()}

    def read(self, positions, alloc: Alloc = np.empty) -> dict[str, np.ndarray]:
        positions = np.asarray(positions, dtype=np.int64)
        ids = self.image_ids[positions]
        out = {k: r.read(ids, alloc) for k, r in self.arrays.items()}
        out.update(labels=self.labels[positions], pids=self.pids[positions],
                   camids=self.camids[positions], image_ids=ids)
        return out

    def __getitem__(self, i: int) -> dict[str, np.ndarray]:
        return {k: v[0] for k, v in self.read([i]).items()}

    def __repr__(self) -> str:
        arrs = ", ".join(f"{k}{r.row_shape}" for k, r in self.arrays.items())
        return f"StoreDataset({self.store.url}, split={self.split!r}, {len(self)} images, {arrs}, cache={self.cache})"


class StoreUnion:
    """The same split of several stores as one dataset (``fit --store A --store B``).

    Positions ``0..len(A)-1`` are A's rows, then B's, and so on. Labels are
    offset per store (B's label ``l`` becomes ``l + A's number of train
    identities``), so identities never merge across datasets; ``pids`` and
    ``camids`` stay as each store has them, and ``store_index`` says which
    store a row comes from. Every store must hold images of one size and the
    groups in ``requires``. ``read`` has the interface of
    :meth:`StoreDataset.read` (plus the ``store_index`` key).
    """

    def __init__(self, stores, split: str, requires=(), cache: bool | str = False,
                 cache_max_bytes: int = DEFAULT_CACHE_BYTES):
        stores = [_open(s) for s in stores]
        if not stores:
            raise ValueError("no store given")
        per_store = cache_max_bytes // len(stores)
        self.parts = [StoreDataset(s, split, requires, cache=cache, cache_max_bytes=per_store) for s in stores]
        self.stores, self.split, self.requires = stores, split, tuple(requires)
        first = self.parts[0].shapes()
        for part in self.parts[1:]:
            if part.shapes() != first:
                raise ValueError(f"stores {stores[0].url} and {part.store.url} hold rows of different shapes "
                                 f"({first} vs {part.shapes()}): ingest them at one --size and build their "
                                 "priors with the same settings")
        sizes = [len(p) for p in self.parts]
        self.starts = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        offsets, label_parts = [], []
        offset = 0
        for part in self.parts:
            offsets.append(offset)
            label_parts.append(part.labels + offset)
            offset += int(part.labels.max()) + 1 if (part.labels >= 0).any() else 0
        self.label_offsets = offsets
        self.labels = np.concatenate(label_parts)
        self.pids = np.concatenate([p.pids for p in self.parts])
        self.camids = np.concatenate([p.camids for p in self.parts])
        self.image_ids = np.concatenate([p.image_ids for p in self.parts])
        self.store_index = np.concatenate([np.full(n, i, np.int64) for i, n in enumerate(sizes)])
        self.cache = all(p.cache for p in self.parts)

    def __len__(self) -> int:
        return int(self.starts[-1])

    @property
    def image_size(self) -> tuple[int, int]:
        return self.parts[0].image_size

    def shapes(self) -> dict[str, tuple]:
        return self.parts[0].shapes()

    def read(self, positions, alloc: Alloc = np.empty) -> dict[str, np.ndarray]:
        positions = np.asarray(positions, dtype=np.int64)
        which = np.searchsorted(self.starts, positions, side="right") - 1
        out: dict[str, np.ndarray] = {}
        for i in np.unique(which):
            mask = which == i
            sub = self.parts[i].read(positions[mask] - self.starts[i])
            for key, rows in sub.items():
                if key not in out:
                    out[key] = alloc((len(positions), *rows.shape[1:]), rows.dtype)
                out[key][mask] = rows
        out["labels"] = self.labels[positions]
        out["store_index"] = self.store_index[positions]
        return out

    def __getitem__(self, i: int) -> dict[str, np.ndarray]:
        return {k: v[0] for k, v in self.read([i]).items()}

    def __repr__(self) -> str:
        parts = ", ".join(f"{p.store.url} ({len(p)} images, labels +{o})" for p, o in zip(self.parts, self.label_offsets))
        return f"StoreUnion(split={self.split!r}, {len(self)} images: {parts})"


def check_mpn_size(store, size: tuple[int, int]) -> None:
    """Fail clearly when ``priors/mpn`` was built for another input size."""
    from priors.mpn_prior import BACKBONE_STRIDE, feature_map_size

    g = store.group("priors/mpn")
    h, w = g.arrays["mask"].shape[1:]
    params = g.provenance.get("params", {})
    built_for = tuple(params.get("input_size", ()))
    stride = int(params.get("stride", BACKBONE_STRIDE))
    expected = feature_map_size(size, stride)
    if (built_for and built_for != tuple(size)) or (h, w) != tuple(expected):
        was = f"{built_for[0]}x{built_for[1]}" if built_for else "another size"
        raise ValueError(
            f"priors/mpn in {store.url} holds {h}x{w} feature-map masks made for input {was} (stride {stride}); "
            f"training at {size[0]}x{size[1]} needs {expected[0]}x{expected[1]}. Rebuild them with "
            f"`python -m pipelines build-mpn-priors --store {store.url} --input-size {size[0]}x{size[1]} "
            f"--overwrite` or train at {was}.")


def available_memory() -> int:
    """Bytes of RAM available now (``MemAvailable``), or 0 when unknown."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return 0


def _to_tensors(raw: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    return {k: torch.from_numpy(v) for k, v in raw.items()}


def _pinned(shape: tuple, dtype: np.dtype) -> np.ndarray:
    return torch.empty(shape, dtype=torch.from_numpy(np.empty(0, dtype)).dtype, pin_memory=True).numpy()


def _step_seed(*keys: int) -> int:
    return int(np.random.SeedSequence([int(k) for k in keys]).generate_state(1, np.uint64)[0] >> 1)


class _Prefetcher:
    """Runs ``make(job)`` for a stream of jobs on ``workers`` threads, in order,
    at most ``depth`` ahead of the consumer (a bounded queue).

    One thread pool for the prefetcher's lifetime, so every epoch reuses the same threads: made on
    the first :meth:`run`, again in a forked child (a fork copies the pool but not its threads) and
    after :meth:`close`. Its idle threads exit when the pool is closed or garbage-collected (with
    its loader) and at interpreter exit (``concurrent.futures`` joins them). An abandoned ``run``
    cancels its queued jobs; one already running finishes in the background, its result dropped.
    """

    def __init__(self, workers: int, depth: int):
        self.workers, self.depth = max(1, workers), max(1, depth)
        self._lock = threading.Lock()
        self._pool: ThreadPoolExecutor | None = None
        self._pool_pid = 0

    def pool(self) -> ThreadPoolExecutor:
        """This process's pool, made on first use."""
        with self._lock:
            if self._pool is None or self._pool_pid != os.getpid():
                self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="reid-loader")
                self._pool_pid = os.getpid()
            return self._pool

    def close(self) -> None:
        """Let the threads go (queued jobs are cancelled); a later :meth:`run` makes a new pool.
        An iteration still running when the pool closes ends with an error."""
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None and self._pool_pid == os.getpid():
            pool.shutdown(wait=False, cancel_futures=True)

    def __getstate__(self) -> dict:  # a pool neither pickles nor copies
        return {"workers": self.workers, "depth": self.depth}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["workers"], state["depth"])

    def run(self, make, jobs: Iterator) -> Iterator:
        pool = self.pool()
        pending: deque = deque()
        try:
            for job in jobs:
                pending.append(pool.submit(make, job))
                if len(pending) >= self.depth:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        finally:
            for f in pending:
                f.cancel()


class TrainLoader:
    """P×K training batches of a store's train split, on ``device``.

    ``len(loader)`` = batches per epoch (``PKSampler.batches_per_epoch``).
    Each ``iter(loader)`` yields the batches from the current global step to
    the end of its epoch and advances the step, so a new ``iter`` starts the
    next epoch; ``start_step`` resumes mid-stream. The batch at global step
    ``s`` depends only on ``(seed, s, rank, world_size)``; augmentation
    parameters are drawn for the whole global batch and sliced, so the union
    of the ranks' batches equals the single-process batch.

    ``store_path``: a store (path, URL or :class:`storage.Store`) or a list of
    them, whose train splits are then trained on as one (:class:`StoreUnion`;
    P×K batches draw identities from all of them).

    Background threads (``workers``) read each batch (into pinned memory when
    ``device`` is CUDA) ``prefetch`` batches ahead; on the CPU they also
    augment, on a GPU the main thread copies (non-blocking) and augments there.
    """

    def __init__(self, store_path, P: int, K: int, size: tuple[int, int] | None = None, requires=(),
                 seed: int = 0, workers: int = 2, device="cpu", augment: AugmentConfig = AugmentConfig(),
                 rank: int = 0, world_size: int = 1, start_step: int = 0, cache: bool | str = "auto",
                 prefetch: int | None = None, cache_max_bytes: int = DEFAULT_CACHE_BYTES):
        several = isinstance(store_path, (list, tuple))
        self.stores = [_open(s) for s in store_path] if several else [_open(store_path)]
        self.store = self.stores[0]
        if cache == "auto":  # every rank of a node keeps its own copy: leave half the RAM to the rest
            free = available_memory()
            cache_max_bytes = min(cache_max_bytes, free // (2 * world_size)) if free else cache_max_bytes
        if len(self.stores) > 1:
            self.dataset = StoreUnion(self.stores, "train", requires, cache=cache, cache_max_bytes=cache_max_bytes)
        else:
            self.dataset = StoreDataset(self.store, "train", requires, cache=cache, cache_max_bytes=cache_max_bytes)
        self.size = tuple(int(v) for v in (size or self.dataset.image_size))
        if "priors/mpn" in self.dataset.requires:
            for store in self.stores:
                check_mpn_size(store, self.size)
        if (self.dataset.labels < 0).any():
            raise ValueError("train rows with label -1 in the store index")
        self.num_classes = int(self.dataset.labels.max()) + 1
        self.sampler = PKSampler(self.dataset.labels, P, K, seed=seed, rank=rank, world_size=world_size)
        self.P, self.K, self.seed = P, K, seed
        self.rank, self.world_size = rank, world_size
        self.augment = augment
        self.device = torch.device(device)
        self.pin = self.device.type == "cuda"
        self.augment_in_workers = self.device.type == "cpu"   # else: in the main thread, on the device
        self.workers = workers
        self.prefetch = prefetch or 2 * max(1, workers)
        self.prefetcher = _Prefetcher(workers, self.prefetch)
        self.step = int(start_step)

    def __len__(self) -> int:
        return self.sampler.batches_per_epoch

    @property
    def epoch(self) -> int:
        return self.step // len(self)

    def params(self, step: int) -> AugmentParams:
        """This rank's augmentation parameters of global step ``step``."""
        g = torch.Generator().manual_seed(_step_seed(self.seed, step, 0xA6))
        full = sample_params(self.P * self.K, self.size, self.augment, g)
        b = self.sampler.batch_size
        return full[self.rank * b:(self.rank + 1) * b]

    def _read(self, job: tuple[int, np.ndarray]):
        step, positions = job
        raw = _to_tensors(self.dataset.read(positions, _pinned if self.pin else np.empty))
        if self.augment_in_workers:
            return augment_batch(raw, self.augment, size=self.size, params=self.params(step))
        return raw, step

    def _finish(self, item) -> dict:
        if self.augment_in_workers:
            return item
        raw, step = item
        batch = {k: v.to(self.device, non_blocking=True) for k, v in raw.items()}
        return augment_batch(batch, self.augment, size=self.size, params=self.params(step))

    def batches(self, start: int, stop: int) -> Iterator[dict]:
        """Batches of global steps ``[start, stop)`` (does not move ``self.step``)."""
        stream = self.sampler.batches(start)
        jobs = ((s, next(stream)) for s in range(start, stop))
        for item in self.prefetcher.run(self._read, jobs):
            yield self._finish(item)

    def __iter__(self) -> Iterator[dict]:
        stop = (self.step // len(self) + 1) * len(self)
        for batch in self.batches(self.step, stop):
            self.step += 1
            yield batch

    def close(self) -> None:
        """Let the reading threads go now (they also go with the loader); iterating again makes new ones."""
        self.prefetcher.close()

    def __repr__(self) -> str:
        urls = "+".join(s.url for s in self.stores)
        return (f"TrainLoader({urls}, P={self.P}, K={self.K}, size={self.size}, "
                f"requires={self.dataset.requires}, {len(self)} batches/epoch, step={self.step}, "
                f"device={self.device}, cache={self.dataset.cache})")


class EvalLoader:
    """A split in ``image_id`` order, resized and normalised, never augmented.

    Each batch is ``batch_size`` consecutive rows: one zarr call per array.
    ``image_ids``, ``pids``, ``camids`` give the whole split up front.
    """

    def __init__(self, store_path, split: str, batch_size: int = 256, size: tuple[int, int] | None = None,
                 device="cpu", requires=(), workers: int = 2, augment: AugmentConfig = AugmentConfig()):
        self.store = _open(store_path)
        self.dataset = StoreDataset(self.store, split, requires, cache=False)
        self.size = tuple(int(v) for v in (size or self.dataset.image_size))
        if "priors/mpn" in self.dataset.requires:
            check_mpn_size(self.store, self.size)
        self.batch_size = int(batch_size)
        self.device = torch.device(device)
        self.pin = self.device.type == "cuda"
        self.workers = workers
        self.prefetcher = _Prefetcher(workers, 2 * max(1, workers))
        self.normalise = augment.off()
        self.image_ids, self.pids, self.camids = self.dataset.image_ids, self.dataset.pids, self.dataset.camids

    def __len__(self) -> int:
        return math.ceil(len(self.dataset) / self.batch_size)

    def _read(self, positions: np.ndarray):
        raw = _to_tensors(self.dataset.read(positions, _pinned if self.pin else np.empty))
        if self.device.type == "cpu":
            return augment_batch(raw, self.normalise, size=self.size)
        return raw

    def __iter__(self) -> Iterator[dict]:
        n = len(self.dataset)
        jobs = (np.arange(a, min(a + self.batch_size, n)) for a in range(0, n, self.batch_size))
        for item in self.prefetcher.run(self._read, jobs):
            if self.device.type != "cpu":
                item = augment_batch({k: v.to(self.device, non_blocking=True) for k, v in item.items()},
                                     self.normalise, size=self.size)
            yield item

    def close(self) -> None:
        """Let the reading threads go now (they also go with the loader)."""
        self.prefetcher.close()

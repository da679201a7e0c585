"""The compiled CPU kernel of the AlignedReID local distance (Eq. 1 + Eq. 2 of
Zhang et al., Sec. 3.1) for evaluation: query (Q, H, C) x gallery (G, H, C)
float32 local features -> (Q, G) float32 distances.

What bounds it: the squared element distances ``sum_c (a_c - b_c)^2`` of all
``Q G H^2`` part pairs (direct differences: exact for duplicates, issue 14;
``|a|^2 + |b|^2 - 2 a.b`` cancels in float32). That is one subtract and one
fused multiply-add per channel, which on CPUs with separate add and FMA pipes
(AMD Zen 4 here) run at the rate of a float32 matrix product of the same size,
so the BLAS product ``(Q H, C) x (C, G H)`` is the floor this kernel is
measured against (bench/bench_local_distance.py prints both).

How it gets there: lanes are gallery images, not channels.

* The gallery is re-laid once as ``(G / 16, C, H, 16)`` (:func:`gallery_lanes`):
  for a channel ``k`` and a part ``b`` the 16 images of a gallery tile are one
  contiguous 64-byte row, i.e. one 512-bit vector.
* A tile is one query x 16 gallery images. Its squared part distances for query
  parts ``a, a + 1`` x up to 8 gallery parts are 16 vectors of 16 lanes,
  accumulated over the channels in registers (each channel: two broadcasts,
  8 vector loads, 16 subtracts and 16 FMAs), with no horizontal sum left at
  the end (a channel-vectorised kernel spends ~1.5x as long on those sums).
  Measured (bench/bench_local_distance.py --breakdown): the squared distances
  take 1.3-1.5x the BLAS product's CPU time and are nearly all of the kernel's.
* Eq. 1 (``tanh(sqrt(s) / 2)`` as a rational function, error 2e-10) and the
  row recurrence of Eq. 2 (``S_b = min(S_b, S_{b-1}) + d_ab``) run in float64
  over the 16 lanes of the tile.

numba has no vector type and its arrays carry no ``restrict``: the one form
LLVM turns into such code is straight-line code over the 16 lanes, packed by
its SLP vectorizer. So the tile's source is generated for each H
(:func:`kernel_source`) and compiled with SLP vectorization on (numba's
``SLP_VECTORIZE``, off by default, switched on for this compilation only under
numba's compiler lock). The generated code is compiled with this file as its
source file, so numba's on-disk cache keys it to this file like any other
kernel here: compiled once per machine and per version of this file.

Error bound (against exact arithmetic on the float32 inputs), as for the
earlier kernel: each float32 sum of C squares is within ~C u relative (a
sequential sum per lane), at C = 128 8e-6 relative in the worst case and
~1e-7 typically; ``tanh(x / 2)``'s ``x d/dx`` is at most 0.45; a path sums
2H - 1 cells and ``min`` is 1-Lipschitz. Measured against float64 on the
bench's features (near-duplicates included): 4.8e-7, as before.
"""
from __future__ import annotations

import functools
import logging
import time

import numba
import numpy as np
from numba.core.compiler_lock import global_compiler_lock

from .metrics import as_numpy
from .threads import kernel_threads

LANES = 16  # gallery images per tile: one 512-bit vector of float32
_ROWS, _COLS = 2, 8  # register block: 2 query parts x up to 8 gallery parts = 16 accumulators + 8 loads (of 32 registers)

__all__ = ["LANES", "build_kernel", "gallery_lanes", "kernel_source", "local_distance_lanes", "local_distance_cpu"]

# Eq. 1 as a rational function: tanh(x) = x P(t) / Q(t), t = (x / 9.5)^2, on [0, 9.5]
# (least-squares fit, max error 1.5e-10 in float64; tanh(9.5) = 1 - 1.1e-8, so x is
# clamped there). Unlike libm's tanh it vectorises.
_TANH_CLAMP = 9.5
_TANH_P = (0.9999999999949591, 12.722098305991976, 36.01964893040269, 31.00016622346273,
           7.331317803030607, 0.2170330833674295)
_TANH_Q = (1.0, 42.80543162740152, 237.7413864314599, 367.6236921379491, 172.07850244616517,
           17.508507922111257)


@numba.njit(cache=True, nogil=True, inline="always")
def tanh_half_sqrt(sq):
    """Eq. 1 from a squared distance: tanh(sqrt(sq) / 2), to 2e-10."""
    x = min(np.sqrt(max(sq, 0.0)) * 0.5, _TANH_CLAMP)
    t = (x * (1.0 / _TANH_CLAMP)) ** 2
    p = _TANH_P[0] + t * (_TANH_P[1] + t * (_TANH_P[2] + t * (_TANH_P[3] + t * (_TANH_P[4] + t * _TANH_P[5]))))
    q = _TANH_Q[0] + t * (_TANH_Q[1] + t * (_TANH_Q[2] + t * (_TANH_Q[3] + t * (_TANH_Q[4] + t * _TANH_Q[5]))))
    return x * p / q


@numba.njit(cache=True, nogil=True, inline="always")
def _shortest_path_lanes(cells, path, out, i, j0, m):
    """Eq. 1 + Eq. 2 for the 16 pairs of a tile: ``cells`` (H^2, 16) squared
    distances -> ``out[i, j0 + l]`` (row recurrence in float64, over the lanes)."""
    h = path.shape[0]
    for l in range(LANES):
        path[0, l] = tanh_half_sqrt(np.float64(cells[0, l]))
    for b in range(1, h):
        for l in range(LANES):
            path[b, l] = path[b - 1, l] + tanh_half_sqrt(np.float64(cells[b, l]))
    for a in range(1, h):
        for l in range(LANES):
            path[0, l] += tanh_half_sqrt(np.float64(cells[a * h, l]))
        for b in range(1, h):
            for l in range(LANES):
                path[b, l] = min(path[b, l], path[b - 1, l]) + tanh_half_sqrt(np.float64(cells[a * h + b, l]))
    for l in range(min(LANES, m - j0)):
        out[i, j0 + l] = path[h - 1, l]


def _block_source(h: int, rows: int, cols: range, indent: str) -> list[str]:
    """Straight-line source of one register block: query parts ``a .. a + rows - 1``
    (``a`` a runtime variable) x gallery parts ``cols`` x 16 lanes, accumulated
    over the channels, stored into ``cells``."""
    acc = {(r, b): [f"s{r}_{b}_{lane}" for lane in range(LANES)] for r in range(rows) for b in cols}
    out = [indent + " = ".join(name for names in acc.values() for name in names) + " = np.float32(0.0)",
           indent + "for k in range(c):"]
    body = indent + "    "
    out += [f"{body}x{r} = x[i, a + {r}, k]" for r in range(rows)]
    out += [f"{body}y{b}_{lane} = yt[blk, k, {b}, {lane}]" for b in cols for lane in range(LANES)]
    out += [f"{body}d = x{r} - y{b}_{lane}; {name} += d * d"
            for (r, b), names in acc.items() for lane, name in enumerate(names)]
    out += [f"{indent}cells[(a + {r}) * {h} + {b}, {lane}] = {name}"
            for (r, b), names in acc.items() for lane, name in enumerate(names)]
    return out


def kernel_source(h: int) -> str:
    """Python source of ``cells_h{h}(x, yt, i, blk, cells)`` (one tile's squared
    distances: the register blocks of :func:`_block_source` for the query part
    pairs, one single-row block if H is odd) and of the parallel driver
    ``local_distance_h{h}(x, yt, m, out)`` (threads over (query, run of gallery
    tiles) jobs; per tile ``cells_h{h}``, then :func:`_shortest_path_lanes`)."""
    chunks = [range(b, min(b + _COLS, h)) for b in range(0, h, _COLS)]
    lines = [f"def cells_h{h}(x, yt, i, blk, cells):",
             "    c = x.shape[2]"]
    if h >= _ROWS:
        lines.append(f"    for a in range(0, {h - h % _ROWS}, {_ROWS}):")
        for cols in chunks:
            lines += _block_source(h, _ROWS, cols, " " * 8)
    if h % _ROWS:
        lines.append(f"    a = {h - 1}")
        for cols in chunks:
            lines += _block_source(h, 1, cols, " " * 4)
    lines += ["",
              f"def local_distance_h{h}(x, yt, m, out):",
              "    n, tiles = x.shape[0], yt.shape[0]",
              "    runs = (tiles + TILES_PER_RUN - 1) // TILES_PER_RUN",
              "    for job in numba.prange(n * runs):",
              "        i = job // runs",
              "        first = (job - i * runs) * TILES_PER_RUN",
              f"        cells = np.empty(({h * h}, LANES), np.float32)",
              f"        path = np.empty(({h}, LANES), np.float64)",
              "        for blk in range(first, min(first + TILES_PER_RUN, tiles)):",
              f"            cells_h{h}(x, yt, i, blk, cells)",
              "            _shortest_path_lanes(cells, path, out, i, blk * LANES, m)"]
    return "\n".join(lines) + "\n"


TILES_PER_RUN = 8  # gallery tiles (128 images) per parallel job: enough jobs for the threads even at Q = 1


def build_kernel(h: int, shortest_path=_shortest_path_lanes):
    """Generate and compile the kernel for H = ``h`` with SLP vectorization.
    ``shortest_path(cells, path, out, i, j0, m)`` is the tile's Eq. 1 + 2 step
    (bench/bench_local_distance.py swaps it to time the squared distances
    alone). Only the default step is cached on disk (next to this file's other
    kernels): a swapped one would share its cache entry."""
    cache = shortest_path is _shortest_path_lanes
    namespace = {"np": np, "numba": numba, "LANES": LANES, "TILES_PER_RUN": TILES_PER_RUN,
                 "_shortest_path_lanes": shortest_path, "__name__": __name__}
    exec(compile(kernel_source(h), __file__, "exec"), namespace)
    cells = numba.njit(cache=cache, nogil=True, fastmath={"contract"})(namespace[f"cells_h{h}"])
    namespace[f"cells_h{h}"] = cells
    kernel = numba.njit(cache=cache, nogil=True, parallel=True)(namespace[f"local_distance_h{h}"])
    signature = (numba.float32[:, :, ::1], numba.float32[:, :, :, ::1], numba.int64, numba.float32[:, ::1])
    start = time.perf_counter()
    with global_compiler_lock:
        previous, numba.config.SLP_VECTORIZE = numba.config.SLP_VECTORIZE, 1
        try:
            kernel.compile(signature)
        finally:
            numba.config.SLP_VECTORIZE = previous
    if cache and time.perf_counter() - start > 1.0:  # not from numba's cache
        logging.getLogger(__name__).info("compiled the local-distance kernel for H = %d in %.0f s (once: numba "
                                         "caches it on disk)", h, time.perf_counter() - start)
    return kernel


_kernel = functools.cache(build_kernel)  # one compiled kernel per H in a process


@numba.njit(cache=True, nogil=True)
def _relayout(y, yt):
    m, h, c = y.shape
    for blk in range(yt.shape[0]):
        for lane in range(LANES):
            j = blk * LANES + lane
            if j < m:
                for k in range(c):
                    for b in range(h):
                        yt[blk, k, b, lane] = y[j, b, k]
            else:
                yt[blk, :, :, lane] = 0.0


def gallery_lanes(gf_local: np.ndarray) -> np.ndarray:
    """Gallery (G, H, C) float32 -> ``(ceil(G / 16), C, H, 16)``: the layout of
    :func:`local_distance_lanes` (lanes past G are zeros; their results are
    never written)."""
    y = np.ascontiguousarray(gf_local, dtype=np.float32)
    yt = np.empty(((y.shape[0] + LANES - 1) // LANES, y.shape[2], y.shape[1], LANES), np.float32)
    _relayout(y, yt)  # one thread: a copy at memory speed (~1 ms for 2,000 images at H = 8, C = 128)
    return yt


def local_distance_lanes(qf_local: np.ndarray, yt: np.ndarray, num_gallery: int) -> np.ndarray:
    """(Q, G) float32 local distances of query (Q, H, C) x a gallery prepared by
    :func:`gallery_lanes` (G = ``num_gallery`` images); threads follow the free
    cores (:func:`reid_train.evaluation.threads.free_cores`)."""
    x = np.ascontiguousarray(qf_local, dtype=np.float32)
    if x.ndim != 3 or yt.ndim != 4 or yt.shape[1:3] != (x.shape[2], x.shape[1]) or yt.shape[3] != LANES:
        raise ValueError(f"need (N, H, C) query features and a gallery_lanes layout of the same H, C, "
                         f"got {x.shape} and {yt.shape}")
    out = np.empty((x.shape[0], num_gallery), np.float32)
    if x.shape[0] and num_gallery:
        kernel = _kernel(x.shape[1])  # the default Eq. 1 + 2 step, cached
        with kernel_threads():
            kernel(x, yt, num_gallery, out)
    return out


def local_distance_cpu(qf_local, gf_local) -> np.ndarray:
    """(Q, G) float32 local distances (Eq. 1 + Eq. 2) of query (Q, H, C) x gallery
    (G, H, C) float32 local features on the CPU (numpy arrays or CPU tensors).
    Agrees with a float64 double loop to ~1e-6 (exact for duplicates)."""
    x, y = (np.ascontiguousarray(as_numpy(a), dtype=np.float32) for a in (qf_local, gf_local))
    if x.ndim != 3 or y.ndim != 3 or x.shape[1:] != y.shape[1:]:
        raise ValueError(f"need (N, H, C) and (M, H, C) local features, got {x.shape} and {y.shape}")
    return local_distance_lanes(x, gallery_lanes(y), y.shape[0])

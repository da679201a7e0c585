"""Re-ID retrieval evaluation: distances, CMC, mAP and mINP (Market-1501 protocol).

Protocol (Zheng et al., "Scalable Person Re-identification: A Benchmark",
ICCV 2015, the Market-1501 evaluation code; same rules for DukeMTMC and MSMT17):

* for each query, gallery images of the **same identity seen by the same
  camera** are removed from its ranking (they are too easy);
* **junk** gallery images are removed from every ranking: by default those whose
  pid is in ``junk_pids`` (Market-1501: pid ``-1``), plus an optional explicit
  ``g_junk`` mask. Market's pid ``0`` *distractors* are ordinary negatives;
* a query left with no positive in the gallery is **skipped** and counted
  (``num_skipped_queries``); the metrics average over the other queries.

Metrics, for a query with ``P`` positives at 0-based positions
``r_0 < ... < r_{P-1}`` of its (filtered) ranking:

* CMC: ``cmc[k] = 1`` when ``r_0 <= k`` (rank-(k+1) accuracy), averaged;
* AP  = ``(1/P) * sum_j (j+1) / (r_j+1)``  (precision at each positive);
* INP = ``P / (r_{P-1}+1)``: mINP of Ye et al., "Deep Learning for Person
  Re-identification: A Survey and Outlook" (AGW, TPAMI 2021) — how far
  down the list the *hardest* positive lies.

The ranking is ascending distance with ties broken by gallery index (what a
stable argsort gives). :func:`evaluate_rank` never sorts a full row: it sorts
only the positives of a query and counts the negatives that precede each of
them, which gives the same positions as a stable sort.
Distances are consumed in blocks of ``block_size`` query rows, so with
:func:`evaluate_features` the full (Q, G) matrix never exists: MSMT17
(11,659 x 82,161, dim 2048) needs the gallery features (673 MB) plus one
block (block_size x G float32, e.g. 84 MB at 256) — well inside 8 GB.

``evaluate_rank`` is agnostic to the distance: any matrix whose smaller values
mean "more similar" works (euclidean, squared euclidean, cosine distance).
"""
from __future__ import annotations

from typing import Callable, Sequence, Union

import numba
import numpy as np
import torch

from .threads import kernel_threads

METRICS = ("euclidean", "sqeuclidean", "cosine")
ArrayLike = Union[np.ndarray, torch.Tensor]
DistanceRows = Callable[[int, int], ArrayLike]


# ----------------------------------------------------------------------------
# features and distances
# ----------------------------------------------------------------------------
def average_flip(features: ArrayLike, flipped_features: ArrayLike) -> ArrayLike:
    """Test-time flip augmentation: mean of the features of an image and of its
    horizontal mirror (no normalisation; cosine distance normalises anyway)."""
    if features.shape != flipped_features.shape:
        raise ValueError(f"shape mismatch {tuple(features.shape)} vs {tuple(flipped_features.shape)}")
    return (features + flipped_features) / 2


class QueryBlockDistances:
    """Callable ``(start, stop) -> (stop-start, G)`` distances of query rows
    ``start:stop`` to every gallery feature, computed on demand.

    * ``euclidean``: ``sqrt(max(|q|^2 + |g|^2 - 2 q.g, 0))``
    * ``sqeuclidean``: the same without the square root
    * ``cosine``: ``1 - q.g / (|q| |g|)``

    numpy inputs give numpy blocks, torch inputs torch blocks (on the
    features' device). Integer features are cast to float32; float64 stays.
    """

    def __init__(self, qf: ArrayLike, gf: ArrayLike, metric: str = "euclidean"):
        if metric not in METRICS:
            raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")
        self.torch = isinstance(qf, torch.Tensor)
        if self.torch != isinstance(gf, torch.Tensor):
            raise TypeError("qf and gf must both be numpy arrays or both torch tensors")
        if qf.ndim != 2 or gf.ndim != 2 or qf.shape[1] != gf.shape[1]:
            raise ValueError(f"need (Q, D) and (G, D) features, got {tuple(qf.shape)} and {tuple(gf.shape)}")
        self.metric = metric
        qf, gf = self._float(qf), self._float(gf)
        if metric == "cosine":
            qf, gf = self._unit(qf), self._unit(gf)
        elif self.torch:
            self.g_sq = torch.einsum("ij,ij->i", gf, gf)
        else:
            self.g_sq = np.einsum("ij,ij->i", gf, gf)  # no (G, D) temporary
        self.qf, self.gf = qf, gf
        self.shape = (qf.shape[0], gf.shape[0])

    def _float(self, x):
        if self.torch:
            return x if x.is_floating_point() else x.float()
        x = np.asarray(x)
        return x if x.dtype in (np.float32, np.float64) else x.astype(np.float32)

    def _unit(self, x):
        if self.torch:
            return x / x.norm(dim=1, keepdim=True).clamp_min(1e-12)
        return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12).astype(x.dtype)

    def _dot(self, q, g):
        if self.torch:
            return q @ g.T
        # Row chunks: numpy sends ``x @ x.T`` (same buffer) to BLAS ?syrk, and
        # the bundled OpenBLAS 0.3.31 dsyrk segfaults at ~16k x 2048 float64.
        out = np.empty((q.shape[0], g.shape[0]), np.result_type(q, g))
        for s in range(0, q.shape[0], 4096):
            np.matmul(q[s:s + 4096], g.T, out=out[s:s + 4096])
        return out

    @torch.no_grad()
    def __call__(self, start: int, stop: int, g_start: int = 0, g_stop: int | None = None) -> ArrayLike:
        """Rows ``start:stop``; only gallery columns ``g_start:g_stop`` if given."""
        g_stop = self.shape[1] if g_stop is None else g_stop
        q, g = self.qf[start:stop], self.gf[g_start:g_stop]
        d = self._dot(q, g)
        if self.metric == "cosine":
            return d.neg_().add_(1) if self.torch else np.subtract(1, d, out=d)
        # in place: -2 q.g + |g|^2 + |q|^2
        g_sq = self.g_sq[g_start:g_stop]
        if self.torch:
            d.mul_(-2).add_(g_sq[None, :]).add_((q * q).sum(1)[:, None]).clamp_min_(0)
            return d.sqrt_() if self.metric == "euclidean" else d
        with kernel_threads():
            _finish_squared(d, np.einsum("ij,ij->i", q, q), g_sq, d.dtype.type(-2), self.metric == "euclidean")
        return d


@numba.njit(cache=True, nogil=True, parallel=True)
def _finish_squared(d, q_sq, g_sq, minus_two, root):
    """In place, one pass: ``d <- max(-2 d + |g|^2 + |q|^2, 0)`` (then its square
    root when ``root``), in ``d``'s precision and in numpy's order of operations
    (no FMA contraction), so the result is bit for bit that of the five numpy
    passes ``d *= -2; d += g_sq; d += q_sq; maximum; sqrt``."""
    zero = minus_two - minus_two  # constants of d's dtype: no promotion to float64
    for r in numba.prange(d.shape[0]):
        qs = q_sq[r]
        for j in range(d.shape[1]):
            v = max(d[r, j] * minus_two + g_sq[j] + qs, zero)
            d[r, j] = np.sqrt(v) if root else v


def pairwise_distance(q: ArrayLike, g: ArrayLike, metric: str = "euclidean",
                      block: int | None = None) -> ArrayLike:
    """(Q, G) distance matrix (numpy or torch, as the inputs); ``block`` query
    rows at a time to bound the temporaries. Metrics: see :class:`QueryBlockDistances`."""
    rows = QueryBlockDistances(q, g, metric)
    n = rows.shape[0]
    if block is None or block >= n:
        return rows(0, n)
    parts = [rows(s, min(s + block, n)) for s in range(0, n, block)]
    return torch.cat(parts) if rows.torch else np.concatenate(parts)


def as_numpy(x: ArrayLike) -> np.ndarray:
    """A numpy array, or a torch tensor (detached, on the CPU), as a numpy array."""
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    return np.asarray(x)


# ----------------------------------------------------------------------------
# ranking
# ----------------------------------------------------------------------------
_CHUNK = 512  # gallery entries per chunk of the counting pass (fits L1 with its counters)


@numba.njit(cache=True, nogil=True)
def _first_after(pos_d, pos_idx, d, j):
    """Number of positives ``k`` with ``(pos_d[k], pos_idx[k]) < (d, j)`` (binary search)."""
    lo, hi = 0, pos_d.size
    while lo < hi:
        mid = (lo + hi) >> 1
        if pos_d[mid] < d or (pos_d[mid] == d and pos_idx[mid] < j):
            lo = mid + 1
        else:
            hi = mid
    return lo


@numba.njit(cache=True, nogil=True, fastmath={"reassoc"})  # the finiteness sum vectorises; NaN still propagates
def _positive_positions(row, pos_idx, pos_pos, g_pids, g_excluded, q_pid):
    """Fill ``pos_pos`` with the 0-based ranking positions of the positives
    ``pos_idx`` (ascending gallery index) of one query, in ranking order; sort
    ``pos_idx`` into that order. One pass over the row.

    A negative ``j`` precedes positive ``k`` iff ``(row[j], j) < (d_k, idx_k)``
    (ascending distance, ties by gallery index: a stable sort's order), so with
    the positives sorted by ``(d, idx)`` it precedes a suffix of them, whose
    start is the number of positives before ``(row[j], j)``; a histogram of
    those starts and its prefix sum give the counts. Per chunk of the row:
    where few entries lie within the hardest positive's distance, a binary
    search for each of them; otherwise a branch-free count of the positives
    closer than each entry (SIMD compares), ties resolved afterwards.
    Returns the row's sum times 0 (NaN iff a value is not finite)."""
    num_pos = pos_idx.size
    pos_d = row[pos_idx]
    order = np.argsort(pos_d, kind="mergesort")  # stable: ties keep gallery order
    pos_d = pos_d[order]
    pos_idx[:] = pos_idx[order]
    hardest = pos_d[num_pos - 1]
    hist = np.zeros(num_pos + 1, np.int64)
    count = np.empty(_CHUNK, np.int32)
    finite_check = 0.0
    for j0 in range(0, row.size, _CHUNK):
        n = min(_CHUNK, row.size - j0)
        r = row[j0:j0 + n]
        near = 0
        for jj in range(n):
            near += r[jj] <= hardest
            finite_check += r[jj] * 0.0
        if near == 0:
            continue  # nothing in this chunk can precede a positive
        if near * 8 < n or num_pos > 64:
            for jj in range(n):
                d, j = r[jj], j0 + jj
                if d > hardest or g_excluded[j] or g_pids[j] == q_pid:
                    continue  # beyond every positive / junk / positive or same-camera match
                hist[_first_after(pos_d, pos_idx, d, j)] += 1
            continue
        for jj in range(n):
            count[jj] = 0
        for k in range(num_pos):
            pk = pos_d[k]
            for jj in range(n):
                count[jj] += np.int32(pk < r[jj])
        for jj in range(n):
            d, j = r[jj], j0 + jj
            if d > hardest or g_excluded[j] or g_pids[j] == q_pid:
                continue
            c = count[jj]
            while c < num_pos and pos_d[c] == d and pos_idx[c] < j:  # equal distance, lower index first
                c += 1
            hist[c] += 1
    preceding = 0
    for k in range(num_pos):
        preceding += hist[k]
        pos_pos[k] = k + preceding
    return finite_check


@numba.njit(cache=True, nogil=True, parallel=True)
def _rank_rows(dist, q_pids, q_camids, g_pids, g_camids, g_excluded, pid_ptr, pid_members, q_group,
               first_hit, ap, inp, bad):
    """Per query row: position of the first positive (-1 when it has none), AP, INP."""
    for r in numba.prange(dist.shape[0]):
        first_hit[r] = -1
        grp = q_group[r]
        if grp < 0:
            bad[r] = dist[r].sum() * 0.0  # no positive: still check finiteness
            continue
        members = pid_members[pid_ptr[grp]:pid_ptr[grp + 1]]
        count = 0
        for m in members:
            count += g_camids[m] != q_camids[r] and not g_excluded[m]
        if count == 0:
            bad[r] = dist[r].sum() * 0.0
            continue
        pos_idx = np.empty(count, np.int64)
        count = 0
        for m in members:
            if g_camids[m] != q_camids[r] and not g_excluded[m]:
                pos_idx[count] = m
                count += 1
        pos_pos = np.empty(count, np.int64)
        bad[r] = _positive_positions(dist[r], pos_idx, pos_pos, g_pids, g_excluded, q_pids[r])
        first_hit[r] = pos_pos[0]
        s = 0.0
        for k in range(count):
            s += (k + 1.0) / (pos_pos[k] + 1.0)
        ap[r] = s / count
        inp[r] = count / (pos_pos[count - 1] + 1.0)


def positive_positions(dist: np.ndarray, valid: np.ndarray, positive: np.ndarray) -> np.ndarray | None:
    """0-based positions of the positives in the ranking of one query, ascending:
    the stable ascending sort of ``dist`` restricted to ``valid`` entries
    (``positive`` a subset of ``valid``). ``None`` when there is no positive.
    The single-row form of what :func:`evaluate_rank` computes per query."""
    pos_idx = np.flatnonzero(positive).astype(np.int64)
    if pos_idx.size == 0:
        return None
    excluded = ~np.asarray(valid, bool) | np.asarray(positive, bool)
    pos_pos = np.empty(pos_idx.size, np.int64)
    _positive_positions(np.ascontiguousarray(dist), pos_idx, pos_pos,
                        np.zeros(dist.size, np.int64), excluded, np.int64(-1))
    return pos_pos


def evaluate_rank(distmat: ArrayLike | DistanceRows, q_pids: Sequence[int], g_pids: Sequence[int],
                  q_camids: Sequence[int], g_camids: Sequence[int], max_rank: int = 20,
                  block_size: int = 256, junk_pids: Sequence[int] = (-1,),
                  g_junk: Sequence[bool] | None = None) -> dict:
    """CMC, mAP and mINP of a query x gallery distance matrix (Market-1501 protocol).

    ``distmat`` is a (Q, G) array/tensor or a callable ``(start, stop) ->
    (stop-start, G)`` giving query rows on demand (see :func:`evaluate_features`).
    Rows are consumed ``block_size`` at a time; each row is read once by a
    compiled kernel (numba, threads over rows: :func:`reid_train.evaluation.threads.free_cores`).

    Returns ``dict(cmc=(max_rank,) float64, mAP, mINP, rank1/rank5/rank10/rank20
    (those <= max_rank), num_valid_queries, num_skipped_queries)``; metrics are
    fractions in [0, 1].
    """
    q_pids, g_pids = np.asarray(q_pids).ravel().astype(np.int64), np.asarray(g_pids).ravel().astype(np.int64)
    q_camids = np.asarray(q_camids).ravel().astype(np.int64)
    g_camids = np.asarray(g_camids).ravel().astype(np.int64)
    num_q, num_g = q_pids.size, g_pids.size
    if q_camids.size != num_q or g_camids.size != num_g:
        raise ValueError("pids and camids must have the same length")
    if callable(distmat):
        rows = distmat
    else:
        if tuple(distmat.shape) != (num_q, num_g):
            raise ValueError(f"distmat shape {tuple(distmat.shape)} != ({num_q}, {num_g})")
        rows = lambda a, b: distmat[a:b]  # noqa: E731
    excluded = np.isin(g_pids, np.asarray(junk_pids, dtype=np.int64))
    if g_junk is not None:
        g_junk = np.asarray(g_junk, dtype=bool).ravel()
        if g_junk.size != num_g:
            raise ValueError(f"g_junk has {g_junk.size} entries, gallery has {num_g}")
        excluded |= g_junk
    # gallery indices grouped by pid (ascending index within a pid), and each query's group
    by_pid = np.argsort(g_pids, kind="stable")
    uniq, starts = np.unique(g_pids[by_pid], return_index=True)
    pid_ptr = np.append(starts, num_g).astype(np.int64)
    where = np.searchsorted(uniq, q_pids)
    found = (where < uniq.size) & (uniq[np.minimum(where, max(uniq.size - 1, 0))] == q_pids) if uniq.size \
        else np.zeros(num_q, bool)
    q_group = np.where(found, where, -1).astype(np.int64)

    first_hit = np.empty(num_q, np.int64)
    ap, inp, bad = np.zeros(num_q), np.zeros(num_q), np.zeros(num_q)
    with kernel_threads():
        for start in range(0, num_q, block_size):
            stop = min(start + block_size, num_q)
            dist = as_numpy(rows(start, stop))
            if dist.shape != (stop - start, num_g):
                raise ValueError(f"distance block {start}:{stop} has shape {dist.shape}, "
                                 f"expected {(stop - start, num_g)}")
            if dist.dtype not in (np.float32, np.float64):
                dist = dist.astype(np.float64)
            s = slice(start, stop)
            _rank_rows(np.ascontiguousarray(dist), q_pids[s], q_camids[s], g_pids, g_camids, excluded,
                       pid_ptr, by_pid.astype(np.int64), q_group[s], first_hit[s], ap[s], inp[s], bad[s])
            if np.isnan(bad[s]).any():
                raise ValueError(f"non-finite distances in query rows {start}:{stop}")
    valid = first_hit >= 0
    num_valid = int(valid.sum())
    if num_valid == 0:
        raise ValueError("no query has a positive in the gallery")
    hits = first_hit[valid]
    cmc = np.cumsum(np.bincount(hits[hits < max_rank], minlength=max_rank)[:max_rank]) / num_valid
    out = dict(cmc=cmc, mAP=float(ap[valid].sum() / num_valid), mINP=float(inp[valid].sum() / num_valid),
               num_valid_queries=num_valid, num_skipped_queries=num_q - num_valid)
    for k in (1, 5, 10, 20):
        if k <= max_rank:
            out[f"rank{k}"] = float(cmc[k - 1])
    return out


def evaluate_features(qf: ArrayLike, gf: ArrayLike, q_pids, g_pids, q_camids, g_camids,
                      metric: str = "euclidean", max_rank: int = 20, block_size: int = 256,
                      junk_pids: Sequence[int] = (-1,), g_junk=None) -> dict:
    """:func:`evaluate_rank` on distances computed per query block from the
    features, so the (Q, G) matrix is never held. Torch features are compared
    on their device (GPU blocks are moved to the CPU one at a time)."""
    rows = QueryBlockDistances(qf, gf, metric)
    return evaluate_rank(rows, q_pids, g_pids, q_camids, g_camids, max_rank=max_rank,
                         block_size=block_size, junk_pids=junk_pids, g_junk=g_junk)

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

import numpy as np
import torch

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

    def _dot(self, q):
        if self.torch:
            return q @ self.gf.T
        # Row chunks: numpy sends ``x @ x.T`` (same buffer) to BLAS ?syrk, and
        # the bundled OpenBLAS 0.3.31 dsyrk segfaults at ~16k x 2048 float64.
        out = np.empty((q.shape[0], self.gf.shape[0]), np.result_type(q, self.gf))
        for s in range(0, q.shape[0], 4096):
            np.matmul(q[s:s + 4096], self.gf.T, out=out[s:s + 4096])
        return out

    @torch.no_grad()
    def __call__(self, start: int, stop: int) -> ArrayLike:
        q = self.qf[start:stop]
        d = self._dot(q)
        if self.metric == "cosine":
            return d.neg_().add_(1) if self.torch else np.subtract(1, d, out=d)
        # in place: -2 q.g + |g|^2 + |q|^2
        if self.torch:
            d.mul_(-2).add_(self.g_sq[None, :]).add_((q * q).sum(1)[:, None]).clamp_min_(0)
            return d.sqrt_() if self.metric == "euclidean" else d
        d *= -2
        d += self.g_sq[None, :]
        d += np.einsum("ij,ij->i", q, q)[:, None]
        np.maximum(d, 0, out=d)
        return np.sqrt(d, out=d) if self.metric == "euclidean" else d


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


def _as_numpy(x: ArrayLike) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    return np.asarray(x)


# ----------------------------------------------------------------------------
# ranking
# ----------------------------------------------------------------------------
def positive_positions(dist: np.ndarray, valid: np.ndarray, positive: np.ndarray) -> np.ndarray | None:
    """0-based positions of the positives in the ranking of one query, ascending.

    The ranking is the stable ascending sort of ``dist`` restricted to
    ``valid`` entries (``positive`` must be a subset of ``valid``). Only the
    positives are sorted; the negatives preceding the j-th positive are
    counted (closer ones, plus equally close ones with a lower gallery index).
    Returns ``None`` when the query has no positive.
    """
    pos_idx = np.flatnonzero(positive)
    if pos_idx.size == 0:
        return None
    pos_d = dist[pos_idx]
    order = np.argsort(pos_d, kind="stable")
    pos_d, pos_idx = pos_d[order], pos_idx[order]
    # negatives beyond the hardest positive cannot precede any positive
    neg = valid & ~positive & (dist <= pos_d[-1])
    neg_d = dist[neg]
    num_pos = pos_d.size
    if num_pos <= 64:  # a few branch-free comparison passes beat binary search
        closer = np.count_nonzero(neg_d[None, :] < pos_d[:, None], axis=1)
        not_farther = np.count_nonzero(neg_d[None, :] <= pos_d[:, None], axis=1)
    else:  # searchsorted 'right'/'left' counts the positives at or below each negative
        closer = np.cumsum(np.bincount(np.searchsorted(pos_d, neg_d, "right"), minlength=num_pos + 1))[:num_pos]
        not_farther = np.cumsum(np.bincount(np.searchsorted(pos_d, neg_d, "left"), minlength=num_pos + 1))[:num_pos]
    tied = np.flatnonzero(not_farther > closer)
    if tied.size:  # same distance as the positive: the lower gallery index comes first
        neg_idx = np.flatnonzero(neg)
        for k in tied:
            closer[k] += np.count_nonzero((neg_d == pos_d[k]) & (neg_idx < pos_idx[k]))
    return np.arange(num_pos) + closer


def evaluate_rank(distmat: ArrayLike | DistanceRows, q_pids: Sequence[int], g_pids: Sequence[int],
                  q_camids: Sequence[int], g_camids: Sequence[int], max_rank: int = 20,
                  block_size: int = 256, junk_pids: Sequence[int] = (-1,),
                  g_junk: Sequence[bool] | None = None) -> dict:
    """CMC, mAP and mINP of a query x gallery distance matrix (Market-1501 protocol).

    ``distmat`` is a (Q, G) array/tensor or a callable ``(start, stop) ->
    (stop-start, G)`` giving query rows on demand (see :func:`evaluate_features`).
    Rows are consumed ``block_size`` at a time.

    Returns ``dict(cmc=(max_rank,) float64, mAP, mINP, rank1/rank5/rank10/rank20
    (those <= max_rank), num_valid_queries, num_skipped_queries)``; metrics are
    fractions in [0, 1].
    """
    q_pids, g_pids = np.asarray(q_pids).ravel(), np.asarray(g_pids).ravel()
    q_camids, g_camids = np.asarray(q_camids).ravel(), np.asarray(g_camids).ravel()
    num_q, num_g = q_pids.size, g_pids.size
    if q_camids.size != num_q or g_camids.size != num_g:
        raise ValueError("pids and camids must have the same length")
    if callable(distmat):
        rows = distmat
    else:
        if tuple(distmat.shape) != (num_q, num_g):
            raise ValueError(f"distmat shape {tuple(distmat.shape)} != ({num_q}, {num_g})")
        rows = lambda a, b: distmat[a:b]  # noqa: E731
    is_junk = np.isin(g_pids, np.asarray(junk_pids, dtype=g_pids.dtype))
    if g_junk is not None:
        g_junk = np.asarray(g_junk, dtype=bool).ravel()
        if g_junk.size != num_g:
            raise ValueError(f"g_junk has {g_junk.size} entries, gallery has {num_g}")
        is_junk |= g_junk

    first_hits = np.zeros(max_rank, dtype=np.int64)  # queries whose first positive is at position k
    ap_sum = inp_sum = 0.0
    num_valid = num_skipped = 0
    for start in range(0, num_q, block_size):
        stop = min(start + block_size, num_q)
        dist = _as_numpy(rows(start, stop))
        if dist.shape != (stop - start, num_g):
            raise ValueError(f"distance block {start}:{stop} has shape {dist.shape}, expected {(stop - start, num_g)}")
        if not np.isfinite(dist).all():
            raise ValueError(f"non-finite distances in query rows {start}:{stop}")
        same_pid = q_pids[start:stop, None] == g_pids[None, :]
        valid = ~(same_pid & (q_camids[start:stop, None] == g_camids[None, :])) & ~is_junk[None, :]
        positive = same_pid & valid
        for r in range(stop - start):
            pos = positive_positions(dist[r], valid[r], positive[r])
            if pos is None:
                num_skipped += 1
                continue
            num_valid += 1
            if pos[0] < max_rank:
                first_hits[pos[0]] += 1
            ap_sum += float(np.mean(np.arange(1, pos.size + 1) / (pos + 1.0)))
            inp_sum += pos.size / (pos[-1] + 1.0)
    if num_valid == 0:
        raise ValueError("no query has a positive in the gallery")
    cmc = np.cumsum(first_hits) / num_valid
    out = dict(cmc=cmc, mAP=ap_sum / num_valid, mINP=inp_sum / num_valid,
               num_valid_queries=num_valid, num_skipped_queries=num_skipped)
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

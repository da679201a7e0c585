"""k-reciprocal re-ranking (Zhong, Zheng, Cao, Li, "Re-ranking Person
Re-identification with k-reciprocal Encoding", CVPR 2017), blockwise and sparse.

Used by AlignedReID (Sec. 4, "re-ranking ... k1 = 20, k2 = 6, lambda = 0.3").
Numerically the same algorithm as the authors' dense ``re_ranking(q_g_dist,
q_q_dist, g_g_dist)`` (tests/test_rerank.py holds a line-by-line transcription
and checks equality on random data):

1. ``original_dist``: the (N+M)^2 matrix ``[[q_q, q_g], [q_g^T, g_g]]``,
   **squared** (``np.power(d, 2)``: pass plain euclidean distances, the
   algorithm then works on squared (Mahalanobis/euclidean) distances, Sec. 3.1 Eq. 1)
   and divided by its per-row maximum; ``initial_rank`` its stable argsort.
2. k-reciprocal neighbours ``R(p, k1)`` (Sec. 3.2, Eq. 4): the top ``k1+1`` of ``p``
   that have ``p`` in their own top ``k1+1``.
3. expansion ``R*(p, k1)`` (Sec. 3.2, Eq. 5): add ``R(q, k1/2)`` of every ``q`` in
   ``R(p, k1)`` that shares more than 2/3 of its members with ``R(p, k1)``.
4. ``V[p, g] = exp(-d(p, g))`` on ``R*(p, k1)``, normalised to sum 1
   (Sec. 3.3, Eq. 8; the sum-to-1 is the authors' code).
5. local query expansion (Sec. 3.3, Eq. 11): ``V[p] <- mean of V over the top k2 of p``.
6. Jaccard distance (Sec. 3.3, Eq. 10): ``1 - sum min(V_p, V_g) / sum max(V_p, V_g)``,
   written as ``1 - m / (2 - m)`` with ``m = sum_k min(V_p[k], V_g[k])``
   (rows of V sum to 1), accumulated through an inverted index over columns.
7. ``final = (1 - lambda) * jaccard + lambda * original`` (Sec. 3.4, Eq. 12).

What differs is only how it is computed. The dense version holds several
(N+M)^2 float32 matrices (1.5 GB each at Market-1501 size, 35 GB at MSMT17
size) and loops in Python over rows and columns. Here:

* from CPU features, the (n, n) matrix is symmetric: it is computed as
  ``block_size`` x ``block_size`` blocks ``(I, J)``, ``J >= I`` (one BLAS
  product each, half the flops of a row-by-row pass), each fed by a compiled
  pass to the rows of ``I`` and, read by columns, of ``J``: running row maxima,
  a heap of the nearest candidates per row (``K + 16``, so that ties created
  by the float32 normalisation are still ordered by index; a row where they
  could reach past the heap is recomputed whole) and, for query rows, the
  query-gallery part of the output, normalised at the end;
* from the given matrices (or features on a GPU), ``block_size`` whole rows at
  a time (gathered from the matrices by a compiled tiled transpose); a compiled
  pass per row gives the row maximum, the normalised row and its top
  ``max(k1+1, k2)`` neighbours in stable-sort order, and for query rows the
  normalised query-gallery part of the output;
* the Gaussian weights of Eq. 8 need distances of pairs outside the top-k
  lists: one compiled pass over the pairs (dot products from the features);
* k-reciprocal tests are vectorised over blocks of rows on the top-k table;
* ``V`` and its query expansion are CSR matrices; the gallery rows of V are
  re-indexed by column (CSC), and one compiled pass per query row accumulates
  Jaccard against every gallery column through that index and writes the
  final blend into the output (threads over query rows).

Memory, with n = N+M, K = max(k1+1, k2), Kh = round(k1/2)+1:
O(n*K) for the neighbour table; V has at most n*(k1+1)*(Kh+1) non-zeros and its
expansion k2 times that (in practice ~n*50 and ~n*150); plus the (N, M) float32
output and one float32 distance block: (block_size, block_size) from CPU
features (16 MB at the default 2048), (block_size, n) otherwise (~128 MB).
Measured peak allocations (bench/bench_eval.py, tracemalloc): 0.6 GiB at
Market-1501 size, dim 2048 (output 0.2 GiB; the dense code: 7.1 GiB); 4.1 GiB
at MSMT17 size, dim 128 (output 3.65 GiB; +0.7 GiB of features at dim 2048). Features are held once as an (n, D) array.
"""
from __future__ import annotations

import numba
import numpy as np
import torch

from .metrics import METRICS, QueryBlockDistances
from .threads import kernel_threads


# ----------------------------------------------------------------------------
# sources of the squared original distance, row i = item i (queries first)
# ----------------------------------------------------------------------------
class _FeatureDistances:
    """``metric_distance(f_i, f_j) ** 2`` as float32, from features."""

    def __init__(self, qf, gf, metric: str):
        if metric not in METRICS:
            raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")
        self.device_rows = None
        if isinstance(qf, torch.Tensor):
            if qf.device.type != "cpu":  # distance rows on the features' device, the rest on the CPU
                both = torch.cat([qf.detach(), gf.detach().to(qf.device)])
                both = both if both.is_floating_point() else both.float()
                self.device_rows = QueryBlockDistances(both, both, "sqeuclidean" if metric == "euclidean" else metric)
            qf, gf = qf.detach().cpu().numpy(), gf.detach().cpu().numpy()
        feats = np.concatenate([np.asarray(qf), np.asarray(gf)])
        if feats.dtype not in (np.float32, np.float64):
            feats = feats.astype(np.float32)
        self.metric = metric
        # euclidean squared is computed directly, without sqrt then square
        self.rows_of = QueryBlockDistances(feats, feats, "sqeuclidean" if metric == "euclidean" else metric)
        self.feats = self.rows_of.gf  # unit rows for cosine
        self.sq = self.rows_of.g_sq if metric != "cosine" else None
        self.num_query, self.n = len(qf), len(feats)

    def _square(self, d):
        return d if self.metric == "euclidean" else d * d

    @property
    def symmetric(self) -> bool:
        """Blocks of the (n, n) matrix can be produced pairwise on the CPU (:meth:`block`)."""
        return self.device_rows is None

    def block(self, i0: int, i1: int, j0: int, j1: int) -> np.ndarray:
        """Items ``i0:i1`` x ``j0:j1`` as float32, by the arithmetic of :meth:`rows`
        (one BLAS product, one compiled finishing pass)."""
        return np.ascontiguousarray(self._square(self.rows_of(i0, i1, j0, j1)).astype(np.float32, copy=False))

    def rows(self, start: int, stop: int) -> np.ndarray:
        if self.device_rows is not None:
            d = self.device_rows(start, stop)
            return np.ascontiguousarray(self._square(d).float().cpu().numpy())
        return np.ascontiguousarray(self._square(self.rows_of(start, stop)).astype(np.float32, copy=False))

    def pairs(self, i: np.ndarray, j: np.ndarray) -> np.ndarray:
        """Entries ``(i[t], j[t])``: one compiled pass over the pairs (no gathered copies)."""
        out = np.empty(i.size, np.float32)
        sq = self.sq if self.sq is not None else np.zeros(1, self.feats.dtype)
        with kernel_threads():
            _pair_distances(self.feats, sq, i.astype(np.int64, copy=False), j.astype(np.int64, copy=False),
                            self.metric == "cosine", out)
        return out


@numba.njit(cache=True, nogil=True, parallel=True, fastmath={"reassoc", "contract"})
def _pair_distances(feats, sq, i, j, cosine, out):
    """Squared metric distance of the pairs ``(i[t], j[t])``, in the features' precision:
    ``(1 - a.b)^2`` (cosine, unit rows) or ``max(|a|^2 + |b|^2 - 2 a.b, 0)``, as :meth:`rows`."""
    for t in numba.prange(i.size):
        a, b = feats[i[t]], feats[j[t]]
        dot = a[0] - a[0]  # a zero of the features' dtype (float32 stays float32)
        for k in range(a.size):
            dot += a[k] * b[k]
        if cosine:
            d = 1 - dot
            out[t] = d * d
        else:
            out[t] = max(sq[i[t]] + sq[j[t]] - 2 * dot, 0)


class _MatrixDistances:
    """Rows of the transposed ``[[q_q, q_g], [q_g^T, g_g]]`` squared and cast to
    float32, exactly as ``np.power(original_dist, 2).astype(np.float32)`` followed by
    the transpose of the original code."""

    def __init__(self, q_g, q_q, g_g):
        self.q_g, self.q_q, self.g_g = (np.asarray(x) for x in (q_g, q_q, g_g))
        nq, ng = self.q_g.shape
        if self.q_q.shape != (nq, nq) or self.g_g.shape != (ng, ng):
            raise ValueError(f"shapes q_g {self.q_g.shape}, q_q {self.q_q.shape}, g_g {self.g_g.shape} do not match")
        self.num_query, self.n = nq, nq + ng

    @staticmethod
    def _square(x):
        return np.power(x, 2).astype(np.float32)

    def rows(self, start: int, stop: int) -> np.ndarray:
        out = np.empty((stop - start, self.n), np.float32)
        with kernel_threads():
            _gather_transposed_squared(self.q_q, self.q_g, self.g_g, start, out)
        return out

    def pairs(self, i: np.ndarray, j: np.ndarray) -> np.ndarray:
        # entry (i, j) of the transposed concatenation = concatenation[j, i]
        nq, out = self.num_query, np.empty(i.size, self.q_g.dtype)
        jq, iq = j < nq, i < nq
        m = jq & iq
        out[m] = self.q_q[j[m], i[m]]
        m = jq & ~iq
        out[m] = self.q_g[j[m], i[m] - nq]
        m = ~jq & iq
        out[m] = self.q_g[i[m], j[m] - nq]
        m = ~jq & ~iq
        out[m] = self.g_g[j[m] - nq, i[m] - nq]
        return self._square(out)


# ----------------------------------------------------------------------------
# steps of the algorithm
# ----------------------------------------------------------------------------
@numba.njit(cache=True, nogil=True, parallel=True)
def _gather_transposed_squared(q_q, q_g, g_g, start, out):
    """Rows ``start:start+len(out)`` of the transposed ``[[q_q, q_g], [q_g^T, g_g]]``,
    squared in the inputs' precision and rounded to float32 (the original's
    ``np.power(d, 2).astype(np.float32)``): item ``i < nq`` is ``[q_q[:, i], q_g[i]]``,
    gallery item ``g`` is ``[q_g[:, g], g_g[:, g]]``. Column reads go through
    64 x 64 tiles (a transpose that stays in cache), threads over column tiles."""
    nq, ng = q_g.shape
    rows = out.shape[0]
    n = nq + ng
    tile = 64
    for t in numba.prange((n + tile - 1) // tile):
        j0 = t * tile
        j1 = min(j0 + tile, n)
        for r0 in range(0, rows, tile):
            r1 = min(r0 + tile, rows)
            for j in range(j0, j1):            # source row j, read along r (contiguous)
                for r in range(r0, r1):
                    i = start + r
                    if i < nq:
                        x = q_q[j, i] if j < nq else q_g[i, j - nq]
                    else:
                        x = q_g[j, i - nq] if j < nq else g_g[j - nq, i - nq]
                    out[r, j] = np.float32(x * x)


@numba.njit(cache=True, nogil=True, inline="always")
def _precedes(v, j, w, k):
    return v < w or (v == w and j < k)


@numba.njit(cache=True, nogil=True, inline="always")
def _offer(v, j, vals, idx):
    """Keep ``(v, j)`` among a row's candidates if it precedes (value, then index)
    the last of them: ``vals`` / ``idx`` are a max-heap on (value, index), the
    last candidate at its root (they start filled with ``(inf, n)``)."""
    if not _precedes(v, j, vals[0], idx[0]):
        return
    k, p = vals.size, 0
    while 2 * p + 1 < k:
        c = 2 * p + 1
        if c + 1 < k and _precedes(vals[c], idx[c], vals[c + 1], idx[c + 1]):
            c += 1
        if not _precedes(v, j, vals[c], idx[c]):
            break
        vals[p], idx[p] = vals[c], idx[c]
        p = c
    vals[p], idx[p] = v, j


_CHUNK = 16  # values tested together against the rows' last candidates (one cache line)


@numba.njit(cache=True, nogil=True, parallel=True, fastmath={"nnan", "nsz"})
def _stream_block(d, i0, j0, num_query, transposed, cand_vals, cand_idx, row_max, out):
    """Feed the block ``d`` = items ``i0..`` x ``j0..`` to the rows it belongs to:
    rows ``i0..`` (``transposed=False``) or, read by columns, rows ``j0..`` (the
    mirror block). Per row: running maximum, the candidate list (:func:`_offer`)
    and, for query rows, the raw query-gallery distances into ``out``. Values
    go in chunks of ``_CHUNK``: maxima and the test against the last candidate
    are vectorised compares; only a chunk that beats it goes to :func:`_offer`
    (after the first few chunks of a row, a rare event)."""
    bi, bj = d.shape
    if not transposed:
        for r in numba.prange(bi):
            row = i0 + r
            vals, idx = cand_vals[row], cand_idx[row]
            mx = row_max[row]
            for c in range(bj):
                mx = max(mx, d[r, c])
            row_max[row] = mx
            if row < num_query:
                for c in range(max(num_query - j0, 0), bj):
                    out[row, j0 + c - num_query] = d[r, c]
            for c0 in range(0, bj, _CHUNK):
                c1 = min(c0 + _CHUNK, bj)
                low = d[r, c0]
                for c in range(c0, c1):
                    low = min(low, d[r, c])
                if low <= vals[0]:
                    for c in range(c0, c1):
                        _offer(d[r, c], j0 + c, vals, idx)
        return
    group = 16 * _CHUNK  # columns per thread: 1 KB of each row of d read at a time (prefetched)
    for t in numba.prange((bj + group - 1) // group):
        g0, g1 = t * group, min(t * group + group, bj)
        last = np.empty(group, np.float32)
        mx = np.empty(group, np.float32)
        for c in range(g0, g1):
            last[c - g0], mx[c - g0] = cand_vals[j0 + c, 0], row_max[j0 + c]
        for r in range(bi):
            col = i0 + r
            for c0 in range(g0, g1, _CHUNK):
                c1 = min(c0 + _CHUNK, g1)
                hit = False
                for c in range(c0, c1):
                    v = d[r, c]
                    mx[c - g0] = max(mx[c - g0], v)
                    hit |= v <= last[c - g0]
                if hit:
                    for c in range(c0, c1):
                        row = j0 + c
                        _offer(d[r, c], col, cand_vals[row], cand_idx[row])
                        last[c - g0] = cand_vals[row, 0]
            if col >= num_query:
                for c in range(g0, min(g1, num_query - j0)):
                    out[j0 + c, col - num_query] = d[r, c]
        for c in range(g0, g1):
            row_max[j0 + c] = mx[c - g0]


@numba.njit(cache=True, nogil=True, parallel=True)
def _finish_candidates(cand_vals, cand_idx, row_max, k, num_items, top, exact):
    """Per row: normalise the candidates by the row maximum in float32 (what
    :func:`_normalise_select` does to the whole row), order them by (normalised
    value, index) and keep the first ``k``. That is the stable top-k of the
    normalised row unless a non-candidate could tie with the k-th after the
    division: the last candidate (every non-candidate's raw value is at least
    its) must normalise to more than the k-th
    (``exact[r]`` is False otherwise; the caller redoes those rows). Lists that
    hold all ``num_items`` items are exact."""
    n, kc = cand_vals.shape
    for r in numba.prange(n):
        mx = np.float64(row_max[r])
        nv = np.empty(kc, np.float32)
        ix = np.empty(kc, np.int64)
        for p in range(kc):
            v = np.float32(np.float64(cand_vals[r, p]) / mx)
            j = cand_idx[r, p]
            q = p
            while q > 0 and (nv[q - 1] > v or (nv[q - 1] == v and ix[q - 1] > j)):
                nv[q], ix[q] = nv[q - 1], ix[q - 1]
                q -= 1
            nv[q], ix[q] = v, j
        top[r, :] = ix[:k]
        exact[r] = kc >= num_items or nv[kc - 1] > nv[k - 1]


def _symmetric_rows(source, k_top: int, block: int, out: np.ndarray):
    """Top ``k_top`` neighbours and maxima of every row of the (n, n) matrix from
    its blocks ``(I, J)``, ``J >= I``, each computed once and fed to the rows of
    ``I`` and, mirrored, of ``J`` (half the products of a row-by-row pass);
    query rows' normalised query-gallery distances into ``out``. The same
    result as :func:`_rows_one_by_one` on a symmetric matrix."""
    n, nq = source.n, source.num_query
    kc = min(k_top + 16, n)  # slack against ties created by the normalisation
    cand_vals = np.full((n, kc), np.inf, np.float32)
    cand_idx = np.full((n, kc), n, np.int64)
    row_max = np.full(n, -np.inf, np.float32)
    starts = range(0, n, block)
    with kernel_threads():
        for i0 in starts:
            for j0 in starts[i0 // block:]:
                d = source.block(i0, min(i0 + block, n), j0, min(j0 + block, n))
                _stream_block(d, i0, j0, nq, False, cand_vals, cand_idx, row_max, out)
                if j0 != i0:
                    _stream_block(d, i0, j0, nq, True, cand_vals, cand_idx, row_max, out)
        top = np.empty((n, k_top), np.int64)
        exact = np.empty(n, np.bool_)
        _finish_candidates(cand_vals, cand_idx, row_max, k_top, n, top, exact)
        for r in np.flatnonzero(~exact):  # ties beyond the slack: redo the row whole
            _normalise_select(source.rows(r, r + 1), k_top, top[r:r + 1], row_max[r:r + 1])
    np.divide(out, row_max[:nq, None], out=out)
    return top, row_max


@numba.njit(cache=True, nogil=True)
def _select_row(row, k, idx):
    """Indices of the ``k`` smallest of ``row`` in stable-sort order (value, then index):
    one pass keeping a sorted list of ``k``; an entry replaces the k-th only if strictly smaller."""
    vals = np.empty(k, row.dtype)
    filled = 0
    for j in range(row.size):
        v = row[j]
        if filled == k and not v < vals[k - 1]:
            continue
        p = filled if filled < k else k - 1
        while p > 0 and vals[p - 1] > v:  # equal values keep the earlier index first
            if p < k:
                vals[p], idx[p] = vals[p - 1], idx[p - 1]
            p -= 1
        vals[p], idx[p] = v, j
        if filled < k:
            filled += 1


@numba.njit(cache=True, nogil=True, parallel=True)
def _normalise_select(dist, k, top, row_max):
    """Per row: divide by the row maximum in place (float32, as the original), then
    the ``k`` nearest in stable order into ``top``."""
    for r in numba.prange(dist.shape[0]):
        row = dist[r]
        mx = row[0]
        for j in range(row.size):
            mx = max(mx, row[j])
        row_max[r] = mx
        for j in range(row.size):
            row[j] = row[j] / mx
        _select_row(row, k, top[r])


def smallest_k_stable(dist: np.ndarray, k: int) -> np.ndarray:
    """Per row, the indices of the ``k`` smallest values in the order of
    ``np.argsort(dist, kind="stable")[:, :k]`` (value, then index), in one pass
    per row (compiled; threads over rows)."""
    dist = np.ascontiguousarray(dist)
    top = np.empty((dist.shape[0], k), np.int64)
    with kernel_threads():
        for r in range(dist.shape[0]):
            _select_row(dist[r], k, top[r])
    return top


def reciprocal_mask(top: np.ndarray, block: int = 8192) -> np.ndarray:
    """``mask[i, m]``: ``i`` is among the neighbours ``top[top[i, m]]`` (Eq. 4)."""
    mask = np.empty(top.shape, bool)
    for s in range(0, top.shape[0], block):
        ids = np.arange(s, min(s + block, top.shape[0]))
        mask[ids] = (top[top[ids]] == ids[:, None, None]).any(-1)
    return mask


def _csr_from_pairs(counts: list[np.ndarray], cols: list[np.ndarray], vals: list[np.ndarray]):
    indptr = np.concatenate([[0], np.cumsum(np.concatenate(counts))]).astype(np.int64)
    return indptr, np.concatenate(cols), np.concatenate(vals)


def _gather_segments(indptr: np.ndarray, segs: np.ndarray):
    """Positions of the entries of CSR segments ``segs`` (concatenated) and
    the number of entries of each segment."""
    lens = indptr[segs + 1] - indptr[segs]
    starts = np.repeat(indptr[segs] - np.cumsum(lens) + lens, lens)
    return starts + np.arange(lens.sum()), lens


def encode_k_reciprocal(source, top1: np.ndarray, toph: np.ndarray, row_max: np.ndarray,
                        block: int = 4096):
    """Sparse rows of V (Eq. 5 and 8): k-reciprocal sets expanded with the 2/3 rule,
    Gaussian-kernel weights of the normalised distances, rows summing to 1."""
    n = top1.shape[0]
    mask1, maskh = reciprocal_mask(top1), reciprocal_mask(toph)
    counts, cols, vals = [], [], []
    for s in range(0, n, block):
        e = min(s + block, n)
        t1, m1 = top1[s:e], mask1[s:e]
        recip = np.where(m1, t1, -1)                       # R(i, k1)
        cand_r, cand_m = toph[t1], maskh[t1]              # R(c, k1/2) of each top-k1 c
        shared = ((cand_r[..., None] == recip[:, None, None, :]).any(-1) & cand_m).sum(-1)
        accept = m1 & (shared > 2.0 / 3 * cand_m.sum(-1))
        members = np.concatenate([np.where(m1, t1, n),
                                  np.where(accept[..., None] & cand_m, cand_r, n).reshape(e - s, -1)], 1)
        members.sort(axis=1)
        keep = members < n
        keep[:, 1:] &= members[:, 1:] != members[:, :-1]
        r, c = np.nonzero(keep)
        col = members[r, c]
        row = r + s
        w = np.exp(-(source.pairs(row, col) / row_max[row]))
        cnt = np.bincount(r, minlength=e - s)
        total = np.bincount(r, weights=w, minlength=e - s).astype(np.float32)
        counts.append(cnt)
        cols.append(col.astype(np.int32))
        vals.append((w / total[r]).astype(np.float32))
    return _csr_from_pairs(counts, cols, vals)


def local_query_expansion(indptr, indices, data, top_k2: np.ndarray, block: int = 4096):
    """Eq. 11: row i of the result is the mean of the V rows of its top k2."""
    n, k2 = top_k2.shape
    counts, cols, vals = [], [], []
    for s in range(0, n, block):
        e = min(s + block, n)
        pos, lens = _gather_segments(indptr, top_k2[s:e].ravel())
        local = np.repeat(np.repeat(np.arange(e - s), k2), lens)
        key = local * np.int64(n) + indices[pos]
        uniq, inv = np.unique(key, return_inverse=True)
        summed = np.bincount(inv, weights=data[pos], minlength=uniq.size)
        counts.append(np.bincount(uniq // n, minlength=e - s))
        cols.append((uniq % n).astype(np.int32))
        vals.append((summed / k2).astype(np.float32))
    return _csr_from_pairs(counts, cols, vals)


def _gallery_columns(indptr, indices, data, num_query: int):
    """Inverted (CSC) index of the gallery rows of V: for column k, the gallery
    rows holding it (``col_rows[col_ptr[k]:col_ptr[k+1]]``) and their values."""
    n = indptr.size - 1
    g_start = indptr[num_query]
    g_rows = np.repeat(np.arange(n - num_query), np.diff(indptr[num_query:]))
    by_col = np.argsort(indices[g_start:], kind="stable")
    col_ptr = np.concatenate([[0], np.cumsum(np.bincount(indices[g_start:], minlength=n))]).astype(np.int64)
    return col_ptr, g_rows[by_col].astype(np.int64), data[g_start:][by_col]


@numba.njit(cache=True, nogil=True, parallel=True)
def _jaccard_combine(indptr, indices, data, col_ptr, col_rows, col_vals, lambda_value, out):
    """Eq. 10 + Eq. 12 in place: ``out[q] <- (1 - lambda) jaccard(q, .) + lambda out[q]``.

    Per query row: ``m_g = sum_k min(V_q[k], V_g[k])`` over the query's columns k
    and the gallery rows g holding k (the inverted index), accumulated in float64;
    ``jaccard = 1 - m / (2 - m)`` (rows of V sum to 1)."""
    num_query, num_gallery = out.shape
    for q in numba.prange(num_query):
        m = np.zeros(num_gallery, np.float64)
        for e in range(indptr[q], indptr[q + 1]):
            k, vq = indices[e], data[e]
            for t in range(col_ptr[k], col_ptr[k + 1]):
                m[col_rows[t]] += min(vq, col_vals[t])
        for g in range(num_gallery):
            jac = 1.0 - m[g] / (2.0 - m[g])
            out[q, g] = jac * (1.0 - lambda_value) + np.float64(out[q, g]) * lambda_value


def _rows_one_by_one(source, k_top: int, block: int, out: np.ndarray):
    """Top ``k_top`` neighbours and maxima of every row, ``block`` whole rows at a
    time (the given matrices, or features on a GPU); normalised query-gallery
    distances into ``out``."""
    n, nq = source.n, source.num_query
    top = np.empty((n, k_top), np.int64)
    row_max = np.empty(n, np.float32)
    for s in range(0, n, block):
        e = min(s + block, n)
        dist = source.rows(s, e)
        with kernel_threads():
            _normalise_select(dist, k_top, top[s:e], row_max[s:e])
        if s < nq:
            out[s:min(e, nq)] = dist[: min(e, nq) - s, nq:]
        del dist
    return top, row_max


def _rerank(source, k1: int, k2: int, lambda_value: float, block_size: int | None) -> np.ndarray:
    n, nq = source.n, source.num_query
    if nq == 0 or n == nq:
        raise ValueError("need at least one query and one gallery item")
    kh = int(np.around(k1 / 2.0))
    k_top = min(max(k1 + 1, k2), n)
    out = np.empty((nq, n - nq), np.float32)
    if getattr(source, "symmetric", False):
        top, row_max = _symmetric_rows(source, k_top, block_size or min(2048, n), out)
    else:
        top, row_max = _rows_one_by_one(source, k_top, block_size or int(np.clip((1 << 25) // n, 16, 1024)), out)
    indptr, indices, data = encode_k_reciprocal(source, top[:, :k1 + 1], top[:, :kh + 1], row_max)
    if k2 != 1:
        indptr, indices, data = local_query_expansion(indptr, indices, data, top[:, :k2])
    del top
    col_ptr, col_rows, col_vals = _gallery_columns(indptr, indices, data, nq)
    with kernel_threads():
        _jaccard_combine(indptr, indices, data, col_ptr, col_rows, col_vals, float(lambda_value), out)
    return out


def k_reciprocal_rerank(qf, gf, k1: int = 20, k2: int = 6, lambda_value: float = 0.3,
                        metric: str = "euclidean", block_size: int | None = None) -> np.ndarray:
    """Re-ranked (Q, G) float32 distances from query and gallery features
    (numpy or torch). ``original_dist`` is the square of ``metric`` distance,
    as the original code squares the matrices it is given: squared euclidean
    for ``euclidean``, ``(1 - cos)^2`` for ``cosine``. ``block_size``: side of
    the square blocks of the (n, n) matrix for CPU features (default 2048), rows
    produced at a time for GPU features (default: ~128 MB blocks).

    Distances are computed in the features' precision. The algorithm is
    discontinuous (a neighbour swap at a k-boundary changes whole rows), so
    float32 features agree with the dense code on float64 matrices except for
    the few entries near such swaps (0.03% at 500 x 2000, dim 2048); float64
    features agree to ~1e-7 everywhere."""
    return _rerank(_FeatureDistances(qf, gf, metric), k1, k2, lambda_value, block_size)


def k_reciprocal_rerank_dist(q_g, q_q, g_g, k1: int = 20, k2: int = 6, lambda_value: float = 0.3,
                             block_size: int | None = None) -> np.ndarray:
    """Re-ranked (Q, G) float32 distances from the three distance matrices, same
    inputs and result as the original ``re_ranking(q_g_dist, q_q_dist, g_g_dist)``
    (the matrices are squared inside, so pass euclidean distances)."""
    return _rerank(_MatrixDistances(q_g, q_q, g_g), k1, k2, lambda_value, block_size)

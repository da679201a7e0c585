"""AlignedReID local distance: the shortest path through the part-to-part
distance matrix (Zhang et al., "AlignedReID: Surpassing Human-Level
Performance in Person Re-Identification", Sec. 3.1 of both paper versions).

Each image is described by H local features ``f_1 .. f_H`` (one per row of
the feature map, top to bottom). For two images:

* Eq. 1 -- element distances ``d_ij = (e^x - 1) / (e^x + 1)`` with
  ``x = ||f_i - g_j||_2``, in [0, 1). This equals ``tanh(x / 2)``, which is
  what is computed: the same number without the overflow of ``e^x``
  (``inf / inf`` = NaN in float32 once ``x > 88``).
* Eq. 2 -- the local distance is the total distance of the shortest path
  from (1, 1) to (H, H) moving one cell down or right:
  ``S_ij = min(S_{i-1,j}, S_{i,j-1}) + d_ij`` (on the first row / column the
  single predecessor). The loop runs over the ``2H - 1`` anti-diagonals
  ``k = i + j``: every cell of one anti-diagonal depends only on the previous
  one, so each step is one ``minimum`` + one add over all cells of the
  diagonal and all pairs at once. The matrices are laid out ``(H, H, pairs)``
  so an anti-diagonal is a strided *view* (flat cells ``k + i (H - 1)``) and
  every operand is a contiguous plane of pairs. Only out-of-place operations
  are used on the path, so autograd differentiates through it (the gradient
  follows the chosen path).

Entry points:

* :func:`shortest_path_distance` ``(..., H, H) -> (...)``: Eq. 2 on given matrices;
* :func:`local_distance` ``(N,H,C) x (M,H,C) -> (N,M)``: all pairs (the batch
  matrix when hard samples are mined by the local distance, or a block of
  query x gallery);
* :func:`paired_local_distance` ``(B,H,C), (B,H,C) -> (B,)``: row ``b`` with
  row ``b`` (TriHard's mined anchor/positive and anchor/negative pairs);
* :func:`local_distance_cpu`: query x gallery on the CPU at evaluation time,
  one compiled pass per tile of 4 x 16 pairs (direct differences in 4 x 4
  register blocks, exact for duplicates; Eq. 1-2 vectorised over the tile's
  pairs; threads follow the free cores);
* :func:`local_distance_blocks` / :class:`LocalDistanceRows`: query x gallery
  at evaluation time -- :func:`local_distance_cpu` for CPU features, else
  ``block`` queries x ``gallery_block`` gallery images per GPU tile (the full
  (Q, G, H, H) tensor never exists).

Precision (issue 14): squared element distances written as
``|a|^2 + |b|^2 - 2 a.b`` cancel in float32 for (near-)identical parts (errors
of 1e-3 to 1e-2 in Eq. 1 where it should be ~0), so the product of
:func:`local_distance` is taken in float64 and the CPU kernel uses direct
differences; both stay within 1e-5 of a float64 double loop on duplicates
(tests/test_local_distance.py).

Why direct differences and not a BLAS product plus a re-check of the cells
that may have cancelled: that variant was built and measured (2026-12-01,
500 x 2,000, H = 8, c = 128, load 4): products in 64 x 512-image tiles (8 MB,
so the product is consumed from cache), then one compiled pass keeping a cell
only where the bound ``gamma_C (|a|^2 + |b|^2)`` on float32 cancellation
provably cannot move Eq. 1 by 5e-7, recomputing the others. It took 0.79 s CPU
against 0.52 s for this kernel: BLAS runs such tiles at a quarter of its
whole-matrix rate (0.74 s vs 0.20 s CPU for the same flops), and the pass over
the product costs as much as the direct kernel. The whole-matrix product alone
(0.10 s wall at load 2.6, bench/bench_local_distance.py) is faster than this
kernel (0.18 s), so only a design holding the (N H, M H) product (256 MB here)
could win, at that memory.
"""
from __future__ import annotations

import numba
import numpy as np
import torch

from .threads import kernel_threads

SQRT_EPS = 1e-12

__all__ = ["shortest_path_distance", "local_distance", "paired_local_distance", "local_distance_blocks",
           "local_distance_cpu", "LocalDistanceRows"]


def _shortest_path_hh(d: torch.Tensor) -> torch.Tensor:
    """Eq. 2 on matrices laid out ``(H, H, *pairs)`` -> ``(*pairs)``.

    ``prev`` holds the valid cells of anti-diagonal ``k - 1`` ordered by row.
    While the diagonals grow (``k < H``) the new one has one cell more: its
    first cell (row 0) has only a left neighbour, its last (column 0) only an
    upper one, the interior ``min(prev[:-1], prev[1:])``. Once they shrink
    (``k >= H``) every cell has both neighbours."""
    h = d.shape[0]
    flat = d.reshape(h * h, *d.shape[2:])
    prev = flat[0:1]
    for k in range(1, 2 * h - 1):
        lo, hi = max(0, k - h + 1), min(k, h - 1)
        diag = flat[k + lo * (h - 1): k + hi * (h - 1) + 1: h - 1]  # cells (i, k - i), i = lo..hi
        best = torch.minimum(prev[:-1], prev[1:])
        if k < h:
            best = torch.cat([prev[:1], best, prev[-1:]], dim=0)
        prev = best + diag
    return prev[0]


def shortest_path_distance(dist: torch.Tensor) -> torch.Tensor:
    """Eq. 2: total distance of the shortest down/right path from (1, 1) to
    (H, H) through each (H, H) matrix of ``dist`` (..., H, H) -> (...).
    Vectorised over the leading dimensions; loops over the ``2H - 1``
    anti-diagonals; differentiable."""
    if dist.dim() < 2 or dist.shape[-1] != dist.shape[-2]:
        raise ValueError(f"dist must be (..., H, H), got {tuple(dist.shape)}")
    return _shortest_path_hh(dist.movedim((-2, -1), (0, 1)).contiguous())


def _normalise(sq: torch.Tensor) -> torch.Tensor:
    """Eq. 1 from squared euclidean distances: ``tanh(sqrt(sq) / 2)``. The root
    is taken of ``max(sq, 1e-12)`` when a gradient is needed (finite gradient for
    coincident features), of ``max(sq, 0)`` in place otherwise (evaluation)."""
    if torch.is_grad_enabled() and sq.requires_grad:
        return torch.tanh(sq.clamp(min=SQRT_EPS).sqrt() * 0.5)
    return sq.clamp_(min=0).sqrt_().mul_(0.5).tanh_()


def _check_local(x: torch.Tensor, y: torch.Tensor) -> None:
    if x.dim() != 3 or y.dim() != 3 or x.shape[1:] != y.shape[1:]:
        raise ValueError(f"need (N, H, C) and (M, H, C) local features, got {tuple(x.shape)} and {tuple(y.shape)}")


def local_distance(x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
    """(N, M) AlignedReID local distances (Eq. 1 + Eq. 2) between every image of
    ``x`` (N, H, C) and every image of ``y`` (M, H, C) (``y = x`` if omitted).

    Squared element distances ``|a|^2 + |b|^2 - 2 a.b`` come from one matrix
    product of the augmented row vectors ``[a, |a|^2, 1] . [-2b, 1, |b|^2]``
    ((N H, C+2) x (C+2, M H)) **in float64**: in float32 the three terms cancel
    for (near-)identical parts (errors of ~1e-7 |a|^2 in the square, i.e. up to
    1e-2 in Eq. 1 at distance ~0); in float64 the error is ~1e-16 |a|^2, below
    float32 resolution of the result. Then one copy into the ``(H, H, N, M)``
    layout of the path loop. Memory ~2-3 (N M H^2) floats; use
    :func:`local_distance_blocks` for a query x gallery evaluation. Differentiable."""
    y = x if y is None else y
    _check_local(x, y)
    (n, h, _), m = x.shape, y.shape[0]
    x64, y64 = x.double(), y.double()
    xa = torch.cat([x64, (x64 * x64).sum(-1, keepdim=True), torch.ones_like(x64[..., :1])], dim=-1)
    ya = torch.cat([-2 * y64, torch.ones_like(y64[..., :1]), (y64 * y64).sum(-1, keepdim=True)], dim=-1)
    sq = (xa.reshape(n * h, -1) @ ya.reshape(m * h, -1).t()).to(x.dtype).reshape(n, h, m, h)
    sq = sq.permute(1, 3, 0, 2).contiguous()                  # (H, H, N, M)
    return _shortest_path_hh(_normalise(sq))


def paired_local_distance(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """(B,) local distance of ``x[b]`` and ``y[b]`` (both (B, H, C)): only the
    B pairs TriHard needs, from direct differences (no cancellation)."""
    if x.shape != y.shape:
        raise ValueError(f"need two (B, H, C) tensors of one shape, got {tuple(x.shape)} and {tuple(y.shape)}")
    _check_local(x, y)
    xt, yt = x.transpose(0, 1), y.transpose(0, 1)            # (H, B, C)
    sq = (xt[:, None] - yt[None, :]).pow(2).sum(-1)           # (H, H, B)
    return _shortest_path_hh(_normalise(sq))


# Eq. 1 as a rational function: tanh(x) = x P(t) / Q(t), t = (x / 9.5)^2, on [0, 9.5]
# (least-squares fit, max error 1.5e-10 in float64; tanh(9.5) = 1 - 1.1e-8, so x is
# clamped there). Unlike libm's tanh it vectorises, which is what makes the kernel fast.
_TANH_CLAMP = 9.5
_TANH_P = (0.9999999999949591, 12.722098305991976, 36.01964893040269, 31.00016622346273,
           7.331317803030607, 0.2170330833674295)
_TANH_Q = (1.0, 42.80543162740152, 237.7413864314599, 367.6236921379491, 172.07850244616517,
           17.508507922111257)
_QUERY_TILE, _GALLERY_TILE = 4, 16  # pairs per tile: 4 queries (16 KB at H = 8, c = 128) x 16 gallery images


@numba.njit(cache=True, nogil=True, inline="always")
def _tanh_half_sqrt(sq):
    """Eq. 1 from a squared distance: tanh(sqrt(sq) / 2), to 2e-10."""
    x = min(np.sqrt(max(sq, 0.0)) * 0.5, _TANH_CLAMP)
    t = (x * (1.0 / _TANH_CLAMP)) ** 2
    p = _TANH_P[0] + t * (_TANH_P[1] + t * (_TANH_P[2] + t * (_TANH_P[3] + t * (_TANH_P[4] + t * _TANH_P[5]))))
    q = _TANH_Q[0] + t * (_TANH_Q[1] + t * (_TANH_Q[2] + t * (_TANH_Q[3] + t * (_TANH_Q[4] + t * _TANH_Q[5]))))
    return x * p / q


@numba.njit(cache=True, nogil=True, inline="always", fastmath={"reassoc", "contract"})
def _cell(x, i, a, y, j, b):
    """Squared distance of part ``a`` of query ``i`` and part ``b`` of gallery image ``j``."""
    acc = np.float32(0.0)
    for k in range(x.shape[2]):
        t = x[i, a, k] - y[j, b, k]
        acc += t * t
    return acc


@numba.njit(cache=True, nogil=True, inline="always", fastmath={"reassoc", "contract"})
def _cells_4x4(x, i, a, y, j, b, cells, p):
    """Squared distances of parts ``a..a+3`` x ``b..b+3`` in one pass over the
    channels: 8 vector loads feed 16 accumulators (the register block that
    keeps the loop on the FP pipes, not on the loads); into ``cells[:, p]``."""
    h = x.shape[1]
    s00 = s01 = s02 = s03 = s10 = s11 = s12 = s13 = np.float32(0.0)
    s20 = s21 = s22 = s23 = s30 = s31 = s32 = s33 = np.float32(0.0)
    for k in range(x.shape[2]):
        x0, x1, x2, x3 = x[i, a, k], x[i, a + 1, k], x[i, a + 2, k], x[i, a + 3, k]
        y0, y1, y2, y3 = y[j, b, k], y[j, b + 1, k], y[j, b + 2, k], y[j, b + 3, k]
        s00 += (x0 - y0) * (x0 - y0)
        s01 += (x0 - y1) * (x0 - y1)
        s02 += (x0 - y2) * (x0 - y2)
        s03 += (x0 - y3) * (x0 - y3)
        s10 += (x1 - y0) * (x1 - y0)
        s11 += (x1 - y1) * (x1 - y1)
        s12 += (x1 - y2) * (x1 - y2)
        s13 += (x1 - y3) * (x1 - y3)
        s20 += (x2 - y0) * (x2 - y0)
        s21 += (x2 - y1) * (x2 - y1)
        s22 += (x2 - y2) * (x2 - y2)
        s23 += (x2 - y3) * (x2 - y3)
        s30 += (x3 - y0) * (x3 - y0)
        s31 += (x3 - y1) * (x3 - y1)
        s32 += (x3 - y2) * (x3 - y2)
        s33 += (x3 - y3) * (x3 - y3)
    r = a * h + b
    cells[r, p], cells[r + 1, p], cells[r + 2, p], cells[r + 3, p] = s00, s01, s02, s03
    r += h
    cells[r, p], cells[r + 1, p], cells[r + 2, p], cells[r + 3, p] = s10, s11, s12, s13
    r += h
    cells[r, p], cells[r + 1, p], cells[r + 2, p], cells[r + 3, p] = s20, s21, s22, s23
    r += h
    cells[r, p], cells[r + 1, p], cells[r + 2, p], cells[r + 3, p] = s30, s31, s32, s33


@numba.njit(cache=True, nogil=True, parallel=True, fastmath={"reassoc", "contract"})
def _local_distance_kernel(x, y, out):
    """(N, M) Eq. 1 + Eq. 2 for float32 (N, H, C) x (M, H, C), no temporaries
    beyond one tile.

    Threads over tiles of ``_QUERY_TILE`` queries; each walks the gallery
    ``_GALLERY_TILE`` images at a time, so a tile is P = 64 pairs:

    1. squared element distances from direct differences ``sum_c (a_c - b_c)^2``
       (exact for duplicates, unlike ``|a|^2 + |b|^2 - 2 a.b``), 4 x 4 part
       blocks (:func:`_cells_4x4`; single cells for the remainder when H is
       not a multiple of 4), into ``cells`` laid out (H^2, P);
    2. Eq. 1 (:func:`_tanh_half_sqrt`, float64) fused into Eq. 2, the row
       recurrence ``S_b = min(S_b, S_{b-1}) + d_ab`` in float64, both
       vectorised over the P pairs of the tile (no per-pair latency chain).

    Error bound (against exact arithmetic on the float32 inputs): each
    float32 sum of 128 squares is within ~12 u = 7e-7 of its value relative
    (16 lanes of 8 terms, then a 4-level tree), so ``x = sqrt`` is within
    3.6e-7 relative and ``tanh(x / 2)``, whose ``x d/dx`` is at most 0.45,
    within 1.6e-7 absolute; a path sums 2H - 1 cells and ``min`` is
    1-Lipschitz: 2.4e-6 at H = 8, plus 6e-8 for the float32 result."""
    n, h, _ = x.shape
    m = y.shape[0]
    pairs = _QUERY_TILE * _GALLERY_TILE
    h4 = h - h % 4
    for tile in numba.prange((n + _QUERY_TILE - 1) // _QUERY_TILE):
        cells = np.zeros((h * h, pairs), np.float32)
        path = np.empty((h, pairs), np.float64)
        i0 = tile * _QUERY_TILE
        i1 = min(i0 + _QUERY_TILE, n)
        for j0 in range(0, m, _GALLERY_TILE):
            j1 = min(j0 + _GALLERY_TILE, m)
            for j in range(j0, j1):
                for i in range(i0, i1):
                    p = (i - i0) * _GALLERY_TILE + j - j0
                    for a in range(0, h4, 4):
                        for b in range(0, h4, 4):
                            _cells_4x4(x, i, a, y, j, b, cells, p)
                    for a in range(h):
                        for b in range(h4 if a < h4 else 0, h):
                            cells[a * h + b, p] = _cell(x, i, a, y, j, b)
            for p in range(pairs):
                path[0, p] = _tanh_half_sqrt(np.float64(cells[0, p]))
            for b in range(1, h):
                for p in range(pairs):
                    path[b, p] = path[b - 1, p] + _tanh_half_sqrt(np.float64(cells[b, p]))
            for a in range(1, h):
                for p in range(pairs):
                    path[0, p] += _tanh_half_sqrt(np.float64(cells[a * h, p]))
                for b in range(1, h):
                    for p in range(pairs):
                        path[b, p] = min(path[b, p], path[b - 1, p]) + _tanh_half_sqrt(np.float64(cells[a * h + b, p]))
            for i in range(i0, i1):
                for j in range(j0, j1):
                    out[i, j] = path[h - 1, (i - i0) * _GALLERY_TILE + j - j0]


def local_distance_cpu(qf_local, gf_local) -> np.ndarray:
    """(Q, G) float32 local distances (Eq. 1 + Eq. 2) of query (Q, H, C) x gallery
    (G, H, C) local features on the CPU: the compiled one-pass kernel, threads
    following the free cores (:func:`reid_train.evaluation.threads.free_cores`).
    Agrees with a float64 double loop to ~1e-6 (exact for duplicates)."""
    x = np.ascontiguousarray(_as_numpy(qf_local), dtype=np.float32)
    y = np.ascontiguousarray(_as_numpy(gf_local), dtype=np.float32)
    if x.ndim != 3 or y.ndim != 3 or x.shape[1:] != y.shape[1:]:
        raise ValueError(f"need (N, H, C) and (M, H, C) local features, got {x.shape} and {y.shape}")
    out = np.empty((x.shape[0], y.shape[0]), np.float32)
    with kernel_threads():
        _local_distance_kernel(x, y, out)
    return out


def _as_numpy(a) -> np.ndarray:
    return a.detach().cpu().numpy() if isinstance(a, torch.Tensor) else np.asarray(a)


class LocalDistanceRows:
    """Callable ``(start, stop) -> (stop - start, G)`` float32 numpy local
    distances of query rows ``start:stop`` to the whole gallery, computed in
    ``block x gallery_block`` tiles under ``no_grad`` (a ``DistanceRows``
    for :func:`reid_train.evaluation.evaluate_rank`). The features stay
    torch tensors on their device: on the CPU the rows come from the compiled
    kernel (:func:`local_distance_cpu`, no tiles needed), on a GPU from
    :func:`local_distance` tiles there."""

    def __init__(self, qf_local, gf_local, block: int = 64, gallery_block: int = 512):
        self.qf = torch.as_tensor(qf_local).float()
        self.gf = torch.as_tensor(gf_local).float().to(self.qf.device)
        _check_local(self.qf, self.gf)
        if block < 1 or gallery_block < 1:
            raise ValueError("block sizes must be >= 1")
        self.block, self.gallery_block = int(block), int(gallery_block)
        self.shape = (self.qf.shape[0], self.gf.shape[0])
        if self.qf.device.type == "cpu":
            self.qf_np, self.gf_np = self.qf.contiguous().numpy(), self.gf.contiguous().numpy()

    @torch.no_grad()
    def __call__(self, start: int, stop: int) -> np.ndarray:
        if self.qf.device.type == "cpu":
            return local_distance_cpu(self.qf_np[start:stop], self.gf_np)
        out = np.empty((stop - start, self.shape[1]), np.float32)
        for s in range(start, stop, self.block):
            e = min(s + self.block, stop)
            for gs in range(0, self.shape[1], self.gallery_block):
                ge = min(gs + self.gallery_block, self.shape[1])
                out[s - start:e - start, gs:ge] = local_distance(self.qf[s:e], self.gf[gs:ge]).cpu().numpy()
        return out


def local_distance_blocks(qf_local, gf_local, block: int = 64, gallery_block: int = 512) -> np.ndarray:
    """(Q, G) float32 local distances of query (Q, H, C) x gallery (G, H, C)
    local features. CPU features: :func:`local_distance_cpu` (one pass, no
    temporaries). GPU tensors: one ``block x gallery_block`` tile at a time
    through :func:`local_distance` (about three ``block * gallery_block * H^2``
    tensors per tile, ~25 MB at the defaults with H = 8, whatever Q and G)."""
    rows = LocalDistanceRows(qf_local, gf_local, block, gallery_block)
    return rows(0, rows.shape[0])

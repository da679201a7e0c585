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
  the compiled kernel of :mod:`.local_distance_kernel` (direct differences,
  exact for duplicates, vectorised over 16 gallery images at a time, in
  1.3-1.5x the CPU time of a float32 BLAS product of the same size; threads
  follow the free cores);
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
500 x 2,000, H = 8, c = 128, load 4): products in 64 x 512-image tiles, then
one compiled pass keeping a cell only where the bound ``gamma_C (|a|^2 +
|b|^2)`` on float32 cancellation provably cannot move Eq. 1 by 5e-7,
recomputing the others. It took 0.79 s CPU against 0.52 s for the direct
kernel of that day: BLAS runs such tiles at a quarter of its whole-matrix
rate, and the pass over the product costs as much as the direct kernel. The
direct kernel now takes 1.3-1.5x the whole-matrix product's own time, and
that product alone is the floor of any product-based design.
"""
from __future__ import annotations

import numpy as np
import torch

from .local_distance_kernel import gallery_lanes, local_distance_cpu, local_distance_lanes

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


class LocalDistanceRows:
    """Callable ``(start, stop) -> (stop - start, G)`` float32 numpy local
    distances of query rows ``start:stop`` to the whole gallery, computed in
    ``block x gallery_block`` tiles under ``no_grad`` (a ``DistanceRows``
    for :func:`reid_train.evaluation.evaluate_rank`). The features stay
    torch tensors on their device: on the CPU the rows come from the compiled
    kernel (:func:`local_distance_lanes` on the gallery re-laid once), on a GPU from
    :func:`local_distance` tiles there."""

    def __init__(self, qf_local, gf_local, block: int = 64, gallery_block: int = 512):
        self.qf = torch.as_tensor(qf_local).float()
        self.gf = torch.as_tensor(gf_local).float().to(self.qf.device)
        _check_local(self.qf, self.gf)
        if block < 1 or gallery_block < 1:
            raise ValueError("block sizes must be >= 1")
        self.block, self.gallery_block = int(block), int(gallery_block)
        self.shape = (self.qf.shape[0], self.gf.shape[0])
        if self.qf.device.type == "cpu":  # the gallery re-laid once for the compiled kernel
            self.qf_np, self.gallery_lanes = self.qf.contiguous().numpy(), gallery_lanes(self.gf.numpy())

    @torch.no_grad()
    def __call__(self, start: int, stop: int) -> np.ndarray:
        if self.qf.device.type == "cpu":
            return local_distance_lanes(self.qf_np[start:stop], self.gallery_lanes, self.shape[1])
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

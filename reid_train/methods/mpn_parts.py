"""Part-specific feature maps ``P_k`` for MPN's auxiliary tasks (MPN, TPAMI, Sec. 3.3, Fig. 5(b)).

"First, each channel of F is multiplied by M in an element-wise manner,
reducing the impact of background clutter. Second, the portion of feature
maps within the upper and lower boundaries is resized to the original size of
F via bilinear interpolation; this step corrects errors in pedestrian
detection. Finally, the uniform division of the resized feature maps in the
vertical direction produces K part-specific feature maps."

:func:`part_features_from_prior` does exactly that on a batch, as one
differentiable torch operation (gradients reach the backbone through the AT
path, as in the paper's end-to-end training). The prior (``mask`` ``M`` and the
ROI ``[upper, lower]``) is the one :func:`priors.mpn_prior.coarse_strip_prior_batch`
stores in ``priors/mpn``; a fallback image has the ROI ``[0, h-1]``, for which
the resize is the identity ("we divide the entire image evenly"). The mask is
applied to fallback images too (the stored mask of an empty parsing is all
ones, so it cannot erase F).

The variants of Sec. 5.3.1 / Table 2 are the ``mode`` argument:

* ``"full"`` — multiply by ``M``, crop the ROI, resize, split (the paper's prior);
* ``"roi_resize"`` — "the element-wise multiplication step in Fig. 5(b) is skipped";
* ``"uniform"`` — "F of each training image is uniformly divided into K
  horizontal stripes" (no prior at all; ``mask``/``roi`` may be ``None``).

Resize convention: bilinear with ``align_corners=False`` — what
``torch.nn.functional.interpolate(crop, size=(h, w), mode="bilinear")`` does
to the cropped rows (tested against it). The width is unchanged, so only rows
are interpolated: output row ``i`` reads the crop at
``y = max(0, (i + 0.5) * n / h - 0.5)`` (``n`` = ROI rows), i.e. rows
``floor(y)`` and ``min(floor(y) + 1, n - 1)`` with weights ``1 - frac(y)``,
``frac(y)``. The per-image resize is written as a ``(B, h, h)`` row
interpolation matrix applied with one ``einsum``, so a batch with different
ROIs needs no Python loop.

Strips: the uniform division uses :func:`priors.mpn_prior.strip_boundaries`
on ``[0, h-1]`` (strip ``k`` starts at row ``floor(k h / K)``): 24 rows and
K = 6 give six strips of 4 rows.
"""
from __future__ import annotations

import torch

from priors.mpn_prior import strip_boundaries

PRIOR_MODES = ("full", "roi_resize", "uniform")


def strip_slices(h: int, K: int) -> list[slice]:
    """Row slices of the ``K`` uniform strips of an ``h``-row map (Fig. 5(b), last step).

    Every strip must be non-empty, so ``K <= h``."""
    if not 1 <= K <= h:
        raise ValueError(f"cannot split {h} feature-map rows into K={K} non-empty strips")
    return [slice(int(a), int(b)) for a, b in strip_boundaries(0, h - 1, K)]


def roi_resize_matrix(roi: torch.Tensor, h: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Bilinear row-resize weights ``R`` (B, h, h): ``out[i] = sum_j R[b, i, j] F[j]``.

    Rows ``[upper, lower]`` (inclusive, ``roi`` (B, 2) integer) of an ``h``-row
    map are stretched to ``h`` rows with ``align_corners=False`` bilinear
    interpolation (see the module docstring). Each row of ``R`` has at most
    two non-zero weights summing to 1; ``roi = [0, h-1]`` gives the identity.
    """
    roi = roi.to(torch.long)
    if roi.dim() != 2 or roi.shape[1] != 2:
        raise ValueError(f"roi must be (B, 2) [upper, lower], got {tuple(roi.shape)}")
    upper, lower = roi[:, 0], roi[:, 1]
    if bool(((upper < 0) | (lower >= h) | (lower < upper)).any()):
        raise ValueError(f"roi rows must satisfy 0 <= upper <= lower < h={h}")
    dev = roi.device
    n = (lower - upper + 1).to(torch.float64)                                  # (B,) crop rows
    i = torch.arange(h, device=dev, dtype=torch.float64)
    y = ((i[None] + 0.5) * (n[:, None] / h) - 0.5).clamp(min=0.0)              # (B, h) crop coordinate
    y0 = y.floor()
    frac = y - y0
    y0 = y0.long()
    y1 = torch.minimum(y0 + 1, (n.long() - 1)[:, None])
    rows0 = upper[:, None] + y0                                                 # source rows in F
    rows1 = upper[:, None] + y1
    R = torch.zeros(roi.shape[0], h, h, dtype=torch.float64, device=dev)
    R.scatter_add_(2, rows0[..., None], (1.0 - frac)[..., None])
    R.scatter_add_(2, rows1[..., None], frac[..., None])
    return R.to(dtype)


def part_features_from_prior(
    F: torch.Tensor,
    mask: torch.Tensor | None,
    roi: torch.Tensor | None,
    K: int,
    mode: str = "full",
) -> list[torch.Tensor]:
    """The ``K`` part-specific maps ``P_k`` of MPN's ATs (Sec. 3.3, Fig. 5(b)).

    Args:
        F: backbone feature maps (B, C, h, w).
        mask: ``M`` (B, h, w), 0/1 (float or bool), at the feature-map size.
        roi: (B, 2) integer inclusive ``[upper, lower]`` feature-map rows.
        K: number of body parts (6 in the paper).
        mode: ``"full"``, ``"roi_resize"`` or ``"uniform"`` (Sec. 5.3.1, Table 2).

    Returns:
        ``K`` tensors (B, C, h_k, w), strip ``k`` of the processed map (rows
        :func:`strip_slices`); they share one underlying tensor (views).
    """
    if mode not in PRIOR_MODES:
        raise ValueError(f"mode must be one of {PRIOR_MODES}, got {mode!r}")
    if F.dim() != 4:
        raise ValueError(f"F must be (B, C, h, w), got {tuple(F.shape)}")
    B, _, h, w = F.shape
    slices = strip_slices(h, K)
    x = F
    if mode != "uniform":
        if roi is None or (mode == "full" and mask is None):
            raise ValueError(f"mode {mode!r} needs the prior (mask and roi)")
        if mode == "full":
            if tuple(mask.shape) != (B, h, w):
                raise ValueError(f"mask {tuple(mask.shape)} does not match the feature map {(B, h, w)}; "
                                 "the priors were built for another input size or stride")
            x = x * mask.to(x.dtype)[:, None]
        R = roi_resize_matrix(roi.to(F.device), h, dtype=x.dtype)
        x = torch.einsum("bij,bcjw->bciw", R, x)
    return [x[:, :, s] for s in slices]


__all__ = ["PRIOR_MODES", "strip_slices", "roi_resize_matrix", "part_features_from_prior"]

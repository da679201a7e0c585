"""MPN coarse prior of body-part locations (MPN, TPAMI, Sec. 3.2 and Fig. 5(a)).

Given a coarse human-parsing map (:class:`~priors.estimators.CoarseParsing`
labels) and a person-segmentation mask for one image, the prior is:

1. **Presence check** (Sec. 3.2, "first"): count head pixels and the pixels of
   each leg in the parsing map. The body is "complete" when the head *and at
   least one leg* reach their minimum pixel counts.
2. **Mask** (Sec. 3.2, "second"/"third"): union of the parsing foreground and
   the segmentation mask, resized to the backbone's feature-map size (24 x 8
   for 384 x 128 with ResNet-50 at last stride 1), binarised and dilated with a
   1 x 2 kernel. This is ``M`` of Fig. 5(b).
3. **ROI and strips** (Sec. 3.2, Fig. 5(a)): the first and last rows of ``M``
   holding any foreground are the upper/lower boundaries; the uniform division
   of ``[upper, lower]`` into ``K`` (= 6) gives the coarse part locations.
4. **Fallback** (Sec. 3.2, last sentences): if the head or both legs are
   absent, the whole feature map ``[0, h-1]`` is divided evenly instead, and
   the image is flagged.

The paper leaves the numerical details implicit; the choices below are
documented in ``docs/mpn_prior.md`` and pinned by ``tests/test_mpn_prior.py``:

* feature size: ``ceil(H / stride)``, ``ceil(W / stride)`` (see
  :func:`feature_map_size`);
* resize = exact area (box) average of the full-resolution union, i.e. the
  fraction of each feature cell covered by the person, then binarise with
  ``fraction >= 0.5`` (same as shrinking with ``cv2.resize(..., INTER_AREA)``
  + ``>= 0.5``, but in exact integer arithmetic: OpenCV's float32 weights can
  put a half-covered cell at 0.4999999; when *enlarging*, which a feature map
  never does, the box average differs from OpenCV's interpolation);
* dilation: kernel of 1 row x 2 columns with OpenCV's default anchor
  ``(kw // 2, kh // 2) = (1, 0)``, i.e. ``M'[y, x] = M[y, x] | M[y, x-1]``;
  samples outside the map are ignored (column 0 keeps its own value; nothing
  spills past the last column). A horizontal kernel grows the mask one column
  to the right and never changes the rows, hence never the ROI;
* presence thresholds are fractions of the parsing map's area so they scale
  with image size (defaults :data:`HEAD_MIN_FRAC`, :data:`LEG_MIN_FRAC`);
* an empty ``M`` although head and a leg are present falls back too (reason
  ``"empty_mask"``) and ``M`` is then stored as all ones, so that multiplying
  ``F`` by ``M`` (Fig. 5(b)) cannot erase the feature map;
* strips split ``[upper, lower + 1)`` at ``upper + floor(k * n / K)``
  (:func:`strip_boundaries`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from priors.estimators import CoarseParsing

K_PARTS = 6
"""MPN uses K = 6 body parts (Sec. 5.1, chosen from Fig. 7)."""
BACKBONE_STRIDE = 16
"""ResNet-50 with the last down-sampling removed (Sec. 3.3, following PCB)."""
HEAD_MIN_FRAC = 0.005
"""Head present when it covers >= 0.5 % of the image (246 px at 384 x 128, a
16 x 16 px blob; an unoccluded head there is ~1,500 px)."""
LEG_MIN_FRAC = 0.002
"""One leg present when it covers >= 0.2 % of the image (99 px at 384 x 128, a
10 x 10 px blob: about one shoe seen from afar)."""
BINARIZE_THRESHOLD = 0.5
"""A feature cell is foreground when at least half its area is person."""
DILATE_HW = (1, 2)
"""Dilation kernel, rows x columns (Sec. 3.2: "a 1 x 2 kernel")."""

FALLBACK_REASONS = ("", "head_missing", "legs_missing", "head_and_legs_missing", "empty_mask")
"""Reason codes: index 0 means no fallback. These say the *parts* were absent (or ``M`` empty)."""
ESTIMATOR_FAILED = "estimator_failed"
"""The reason ``build-mpn-priors`` stores instead when the parsing source failed on the image
(``pose_not_found``, ``no_person``, ...): nothing was measured, so nothing is known to be absent."""


def feature_map_size(input_hw: tuple[int, int], stride: int = BACKBONE_STRIDE) -> tuple[int, int]:
    """Spatial size of the backbone feature map for an input of ``input_hw``.

    Every stride-2 stage of ResNet-50 (7x7 conv pad 3, 3x3 max-pool pad 1,
    3x3/1x1 stride-2 convs) maps a side ``n`` to ``ceil(n / 2)``; nested
    ceilings of halvings equal one ceiling, so the size is
    ``ceil(H / stride), ceil(W / stride)``. 384 x 128 at stride 16 (last stride
    1, Sec. 3.3) gives MPN's 24 x 8 (Sec. 3.2).
    """
    H, W = (int(v) for v in input_hw)
    if H < 1 or W < 1 or stride < 1:
        raise ValueError(f"need positive input size and stride, got {input_hw}, {stride}")
    return -(-H // stride), -(-W // stride)


def strip_boundaries(upper: int, lower: int, K: int = K_PARTS) -> np.ndarray:
    """Uniform division of the inclusive rows ``[upper, lower]`` into ``K`` strips.

    Returns ``(K, 2)`` int ``[start, stop)`` (half-open) rows; strip ``k``
    starts at ``upper + floor(k * n / K)`` with ``n = lower - upper + 1``, so
    strips tile ``[upper, lower + 1)`` exactly, each has ``floor(n/K)`` or
    ``ceil(n/K)`` rows, and when ``n < K`` some strips are empty
    (``start == stop``). Fig. 5(a): "the uniform division between the upper and
    lower boundaries".
    """
    upper, lower, K = int(upper), int(lower), int(K)
    if K < 1 or lower < upper:
        raise ValueError(f"need K >= 1 and upper <= lower, got {upper}, {lower}, {K}")
    return _strips(np.array([upper]), np.array([lower]), K)[0]


def _strips(upper: np.ndarray, lower: np.ndarray, K: int) -> np.ndarray:
    n = (lower - upper + 1).astype(np.int64)
    edges = upper[:, None] + (np.arange(K + 1, dtype=np.int64)[None, :] * n[:, None]) // K
    return np.stack([edges[:, :-1], edges[:, 1:]], axis=-1)


def _overlap_matrix(n_out: int, n_in: int) -> np.ndarray:
    """Integer overlap of output cell ``i`` with input pixel ``j`` in units of 1/n_out pixel.

    Output cell ``i`` spans ``[i * n_in, (i + 1) * n_in)`` and input pixel ``j``
    spans ``[j * n_out, (j + 1) * n_out)`` on a common grid; rows sum to ``n_in``.
    """
    i = np.arange(n_out)[:, None]
    j = np.arange(n_in)[None, :]
    lo = np.maximum(i * n_in, j * n_out)
    hi = np.minimum((i + 1) * n_in, (j + 1) * n_out)
    return np.clip(hi - lo, 0, None)


def area_coverage(mask: np.ndarray, feat_hw: tuple[int, int]) -> tuple[np.ndarray, int]:
    """Person area of every feature cell: ``(coverage (B,h,w), cell_area)``.

    ``mask`` is (B,H,W) bool, or uint8 holding only 0 and 1.
    ``coverage / cell_area`` is the exact fraction of each cell covered by the
    mask (the area/box average that ``cv2.INTER_AREA`` computes when shrinking). Integer scale factors (the usual 16 x 16 cells) sum blocks with
    one ``cv2.reduce`` over the whole stacked batch; other sizes use integer
    overlap matrices (exact in float64 up to 2**53).
    """
    B, H, W = mask.shape
    h, w = feat_hw
    if H % h == 0 and W % w == 0:
        fy, fx = H // h, W // w
        ones = mask.view(np.uint8) if mask.dtype in (np.bool_, np.uint8) else mask.astype(np.uint8)
        ones = np.ascontiguousarray(ones).reshape(B * H * w, fx)
        cols = cv2.reduce(ones, 1, cv2.REDUCE_SUM, dtype=cv2.CV_32S)  # (B*H*w, 1) sums over fx columns
        return cols.reshape(B, h, fy, w).sum(axis=2), fy * fx
    Ry = _overlap_matrix(h, H).astype(np.float64)  # (h, H); a cell row spans H units
    Rx = _overlap_matrix(w, W).astype(np.float64)  # (w, W); a cell column spans W units
    cov = Ry @ (mask.astype(np.float64) @ Rx.T)  # (B, h, w); a whole cell is H * W units
    return np.rint(cov).astype(np.int64), H * W


def label_counts(labels: np.ndarray, classes: tuple[int, ...]) -> list[np.ndarray]:
    """Pixels of each class per image of a (B,H,W) uint8 label batch (one ``cv2.compare`` + ``cv2.reduce`` per class)."""
    B, H, W = labels.shape
    flat = np.ascontiguousarray(labels, dtype=np.uint8).reshape(B * H, W)
    out, hits = [], np.empty_like(flat)
    for c in classes:
        cv2.compare(flat, int(c), cv2.CMP_EQ, dst=hits)  # 255 where equal
        rows = cv2.reduce(hits, 1, cv2.REDUCE_SUM, dtype=cv2.CV_32S)
        out.append(rows.reshape(B, H).sum(axis=1, dtype=np.int64) // 255)
    return out


def dilate(mask: np.ndarray, kernel_hw: tuple[int, int] = DILATE_HW) -> np.ndarray:
    """Binary dilation of ``(B,h,w)`` masks with an all-ones ``kh x kw`` kernel.

    Same as ``cv2.dilate(m, np.ones(kernel_hw))`` with the default anchor
    ``(kw // 2, kh // 2)``: ``out[y, x] = OR m[y + dy, x + dx]`` for
    ``dy in [-(kh//2), kh-1-kh//2]``, ``dx in [-(kw//2), kw-1-kw//2]``;
    out-of-map samples are ignored. For 1 x 2: ``out[y,x] = m[y,x] | m[y,x-1]``.
    """
    kh, kw = kernel_hw
    out = mask.copy()
    h, w = mask.shape[-2:]
    for dy in range(-(kh // 2), kh - kh // 2):
        for dx in range(-(kw // 2), kw - kw // 2):
            if (dy, dx) == (0, 0) or abs(dy) >= h or abs(dx) >= w:
                continue
            dst = out[..., max(0, -dy): h - max(0, dy), max(0, -dx): w - max(0, dx)]
            dst |= mask[..., max(0, dy): h - max(0, -dy), max(0, dx): w - max(0, -dx)]
    return out


@dataclass
class StripPrior:
    """MPN coarse prior for one image (Sec. 3.2, Fig. 5(a)).

    ``mask`` (h,w) uint8 {0,1} is ``M``; ``upper``/``lower`` are inclusive
    feature-map rows of the ROI; ``upper_frac = upper / h`` and
    ``lower_frac = (lower + 1) / h`` give the ROI as the half-open span
    ``[upper_frac, lower_frac)`` of the image height (``[0, 1]`` on fallback);
    ``strips`` (K,2) are half-open row spans (:func:`strip_boundaries`);
    pixel counts are taken on the full-resolution parsing map.
    """

    mask: np.ndarray
    upper: int
    lower: int
    upper_frac: float
    lower_frac: float
    fallback: bool
    reason: str
    head_px: int
    left_leg_px: int
    right_leg_px: int
    strips: np.ndarray


def min_pixels(frac: float, image_hw: tuple[int, int]) -> int:
    """Pixel threshold ``max(1, ceil(frac * H * W))`` for a presence fraction."""
    return max(1, math.ceil(frac * image_hw[0] * image_hw[1] - 1e-9))


def coarse_strip_prior_batch(
    parsing: np.ndarray,
    seg_mask: np.ndarray,
    feat_hw: tuple[int, int],
    K: int = K_PARTS,
    head_min_frac: float = HEAD_MIN_FRAC,
    leg_min_frac: float = LEG_MIN_FRAC,
    threshold: float = BINARIZE_THRESHOLD,
    kernel_hw: tuple[int, int] = DILATE_HW,
) -> dict[str, np.ndarray]:
    """Vectorised MPN prior for a batch (Sec. 3.2, Fig. 5(a)).

    ``parsing`` (B,H,W) uint8 :class:`CoarseParsing` labels, ``seg_mask``
    (B,H,W) bool (or 0/1). Returns arrays keyed like the ``priors/mpn`` group:
    ``mask`` (B,h,w) uint8, ``roi`` (B,2) int16 inclusive ``[upper, lower]``,
    ``fallback`` (B,) bool, ``reason`` (B,) str (:data:`FALLBACK_REASONS`),
    ``upper_frac``/``lower_frac`` (B,) float32, ``head_px``/``left_leg_px``/
    ``right_leg_px`` (B,) int64 and ``strips`` (B,K,2) int16.
    """
    parsing = np.asarray(parsing)
    seg_mask = np.asarray(seg_mask)
    if parsing.ndim != 3 or parsing.shape != seg_mask.shape:
        raise ValueError(f"parsing and seg_mask must share a (B,H,W) shape, got {parsing.shape}, {seg_mask.shape}")
    B, H, W = parsing.shape
    h, w = (int(v) for v in feat_hw)
    if K < 1 or h < 1 or w < 1:
        raise ValueError(f"need K >= 1 and a positive feature size, got K={K}, feat_hw={feat_hw}")
    if B == 0 or H == 0 or W == 0:
        if B:
            raise ValueError(f"empty images {parsing.shape}")
        return _empty_batch(h, w, K)
    parsing = np.ascontiguousarray(parsing, dtype=np.uint8)
    seg_mask = np.ascontiguousarray(seg_mask.view(np.uint8) if seg_mask.dtype == np.bool_ else seg_mask != 0)
    head_px, left_px, right_px = label_counts(parsing, (CoarseParsing.HEAD, CoarseParsing.LEFT_LEG, CoarseParsing.RIGHT_LEG))
    head_ok = head_px >= min_pixels(head_min_frac, (H, W))
    leg_min = min_pixels(leg_min_frac, (H, W))
    legs_ok = (left_px >= leg_min) | (right_px >= leg_min)

    union = cv2.bitwise_or(parsing.reshape(B * H, W), seg_mask.view(np.uint8).reshape(B * H, W))  # nonzero = person
    union = cv2.threshold(union, 0, 1, cv2.THRESH_BINARY)[1].reshape(B, H, W)  # 0/1 uint8
    coverage, cell_area = area_coverage(union, (h, w))
    binary = coverage >= threshold * cell_area
    mask = dilate(binary, kernel_hw)

    rows = mask.any(axis=2)  # (B, h)
    nonempty = rows.any(axis=1)
    upper = np.argmax(rows, axis=1)
    lower = h - 1 - np.argmax(rows[:, ::-1], axis=1)

    code = np.zeros(B, dtype=np.int8)
    code[~nonempty] = 4
    code[~legs_ok] = 2
    code[~head_ok] = 1
    code[~head_ok & ~legs_ok] = 3
    fallback = code != 0
    upper = np.where(fallback, 0, upper)
    lower = np.where(fallback, h - 1, lower)
    mask[~nonempty] = True
    return {
        "mask": mask.view(np.uint8),
        "roi": np.stack([upper, lower], axis=1).astype(np.int16),
        "fallback": fallback,
        "reason": np.asarray(FALLBACK_REASONS, dtype=object)[code],
        "upper_frac": (upper / h).astype(np.float32),
        "lower_frac": ((lower + 1) / h).astype(np.float32),
        "head_px": head_px,
        "left_leg_px": left_px,
        "right_leg_px": right_px,
        "strips": _strips(upper, lower, K).astype(np.int16),
    }


def _empty_batch(h: int, w: int, K: int) -> dict[str, np.ndarray]:
    return {
        "mask": np.zeros((0, h, w), np.uint8),
        "roi": np.zeros((0, 2), np.int16),
        "fallback": np.zeros(0, bool),
        "reason": np.zeros(0, object),
        "upper_frac": np.zeros(0, np.float32),
        "lower_frac": np.zeros(0, np.float32),
        "head_px": np.zeros(0, np.int64),
        "left_leg_px": np.zeros(0, np.int64),
        "right_leg_px": np.zeros(0, np.int64),
        "strips": np.zeros((0, K, 2), np.int16),
    }


def coarse_strip_prior(
    parsing: np.ndarray,
    seg_mask: np.ndarray,
    feat_hw: tuple[int, int],
    K: int = K_PARTS,
    head_min_frac: float = HEAD_MIN_FRAC,
    leg_min_frac: float = LEG_MIN_FRAC,
    threshold: float = BINARIZE_THRESHOLD,
    kernel_hw: tuple[int, int] = DILATE_HW,
) -> StripPrior:
    """MPN prior for one image: ``parsing`` (H,W) CoarseParsing labels, ``seg_mask`` (H,W) bool.

    Runs :func:`coarse_strip_prior_batch` on a batch of one (one code path);
    see the module docstring for the algorithm (Sec. 3.2, Fig. 5(a)).
    """
    parsing = np.asarray(parsing)
    seg_mask = np.asarray(seg_mask)
    if parsing.ndim != 2:
        raise ValueError(f"parsing must be (H,W), got {parsing.shape}")
    out = coarse_strip_prior_batch(
        parsing[None], seg_mask[None], feat_hw, K, head_min_frac, leg_min_frac, threshold, kernel_hw
    )
    return StripPrior(
        mask=out["mask"][0],
        upper=int(out["roi"][0, 0]),
        lower=int(out["roi"][0, 1]),
        upper_frac=float(out["upper_frac"][0]),
        lower_frac=float(out["lower_frac"][0]),
        fallback=bool(out["fallback"][0]),
        reason=str(out["reason"][0]),
        head_px=int(out["head_px"][0]),
        left_leg_px=int(out["left_leg_px"][0]),
        right_leg_px=int(out["right_leg_px"][0]),
        strips=out["strips"][0],
    )


__all__ = [
    "K_PARTS",
    "BACKBONE_STRIDE",
    "HEAD_MIN_FRAC",
    "LEG_MIN_FRAC",
    "BINARIZE_THRESHOLD",
    "DILATE_HW",
    "FALLBACK_REASONS",
    "StripPrior",
    "feature_map_size",
    "strip_boundaries",
    "area_coverage",
    "label_counts",
    "dilate",
    "min_pixels",
    "coarse_strip_prior",
    "coarse_strip_prior_batch",
]

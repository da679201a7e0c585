"""DSAP-images: warping a person image into DensePose's UV space (DSA-reID Sec. 3.1).

**Warping (Sec. 3.1).** Each of the 24 DensePose body parts gets an ``S x S``
image (``S = 32`` in the paper) whose rows are indexed by ``U`` and columns by
``V``. A pixel ``(r, g, b)`` whose estimate is ``(i, u, v)`` with ``i`` in 1..24
goes to DSAP-image ``i`` at ``(floor(u * S), floor(v * S))``; ``u`` or ``v`` equal
to 1 clamps to ``S - 1`` (:func:`priors.iuv.uv_cell`). Background (``i = 0``) and
undetected pixels are not warped. The paper "simply copies" pixels and leaves
collisions unspecified; here several pixels landing in one cell are averaged —
deterministic and order-free — with the mean rounded half up in integers:
``(2 * sum + n) // (2 * n)``.

Cells that receive no pixel are "initialized by the mean values of images"
(Sec. 3.1): by default the per-channel mean of *this* image (same integer
rounding); ``fill=(r, g, b)`` uses a given constant instead, e.g. the dataset
mean. A validity mask ``(24, S, S)`` records which cells hold warped pixels and
:func:`dsap_coverage` the fraction of filled cells per part.

Layouts: ``dsap`` is ``(..., 24, 3, S, S)`` uint8 (channels first, as the store's
``priors/dsap``), ``valid`` is ``(..., 24, S, S)`` bool. Part axis index ``p`` is
DensePose label ``p + 1``.

**Merging (Sec. 3.2.1, Fig. 4, Table 1).** The DSAG-Stream's MB-Ns add branch
features twice: 24 -> 13 (left/right pairs) and 13 -> 8 (front/back halves).
:data:`MERGE_LEVEL1` and :data:`MERGE_LEVEL2` hold those groupings as data.

**Horizontal flip (Sec. 4.2 augmentation).** See :func:`flip_dsap`.
"""
from __future__ import annotations

from collections.abc import Sequence

import numba
import numpy as np

from priors.iuv import N_PARTS, UV_LEVELS, UV_MAX_CODE

# DensePose's 24 chart labels (1..24), person's left/right. Arm halves are the
# inner / outer side of the arm; torso and legs have back / front halves.
PART_NAMES: tuple[str, ...] = (
    "torso_back", "torso_front",                                   # 1, 2
    "right_hand", "left_hand", "left_foot", "right_foot",          # 3..6
    "upper_leg_right_back", "upper_leg_left_back",                 # 7, 8
    "upper_leg_right_front", "upper_leg_left_front",               # 9, 10
    "lower_leg_right_back", "lower_leg_left_back",                 # 11, 12
    "lower_leg_right_front", "lower_leg_left_front",               # 13, 14
    "upper_arm_left_inside", "upper_arm_right_inside",             # 15, 16
    "upper_arm_left_outside", "upper_arm_right_outside",           # 17, 18
    "lower_arm_left_inside", "lower_arm_right_inside",             # 19, 20
    "lower_arm_left_outside", "lower_arm_right_outside",           # 21, 22
    "head_right", "head_left",                                     # 23, 24
)  # fmt: skip

# Level 1 (24 -> 13): left/right pairs added, torso halves kept. 0-based part indices.
MERGE_LEVEL1: tuple[tuple[int, ...], ...] = (
    (0,), (1,), (2, 3), (4, 5), (6, 7), (8, 9), (10, 11),
    (12, 13), (14, 15), (16, 17), (18, 19), (20, 21), (22, 23),
)  # fmt: skip
MERGE_LEVEL1_NAMES: tuple[str, ...] = (
    "torso_back", "torso_front", "hands", "feet",
    "upper_legs_back", "upper_legs_front", "lower_legs_back", "lower_legs_front",
    "upper_arms_inside", "upper_arms_outside", "lower_arms_inside", "lower_arms_outside", "head",
)  # fmt: skip

# Level 2 (13 -> 8): front/back halves added. Indices into the 13 level-1 groups.
MERGE_LEVEL2: tuple[tuple[int, ...], ...] = ((0, 1), (2,), (3,), (4, 5), (6, 7), (8, 9), (10, 11), (12,))
MERGE_LEVEL2_NAMES: tuple[str, ...] = (
    "torso", "hands", "feet", "upper_legs", "lower_legs", "upper_arms", "lower_arms", "head",
)  # fmt: skip
# The same 8 groups as 0-based indices into the 24 parts.
MERGE_LEVEL2_PARTS: tuple[tuple[int, ...], ...] = tuple(
    tuple(p for g1 in group for p in MERGE_LEVEL1[g1]) for group in MERGE_LEVEL2
)


def merge_matrix(groups: Sequence[Sequence[int]], n_inputs: int) -> np.ndarray:
    """0/1 matrix ``(len(groups), n_inputs)``: row ``g`` sums the inputs of group ``g``.

    ``merge_matrix(MERGE_LEVEL1, 24)`` maps 24 part branches to 13;
    ``merge_matrix(MERGE_LEVEL2, 13)`` maps those 13 to 8.
    """
    m = np.zeros((len(groups), n_inputs), dtype=np.float32)
    for g, members in enumerate(groups):
        m[g, list(members)] = 1.0
    return m


# Horizontal flip: DensePose's POINT_LABEL_SYMMETRIES on 0-based parts (an involution).
FLIP_PERMUTATION: tuple[int, ...] = (0, 1) + tuple(p ^ 1 for p in range(2, N_PARTS))
# Which charts are mirrored within (v -> 1 - v) by a flip: the self-symmetric torso halves.
FLIP_MIRROR_V: tuple[bool, ...] = (True, True) + (False,) * (N_PARTS - 2)
# Label lookup 0..24 -> flipped label (background stays 0).
FLIP_LABELS = np.array([0] + [p + 1 for p in FLIP_PERMUTATION], dtype=np.uint8)


def _fill_values(images: np.ndarray, fill) -> np.ndarray:
    """(B, 3) int64 fill colour per image: its own rounded mean, or a given constant."""
    B = images.shape[0]
    if isinstance(fill, str) and fill != "image_mean":
        raise ValueError(f"fill must be None, 'image_mean', an (r, g, b) triple or (B, 3), got {fill!r}")
    if fill is None or isinstance(fill, str):  # "image_mean"
        _, H, W, _ = images.shape
        n = H * W
        # sum over rows first: contiguous (W * 3)-long adds, far faster than a strided per-channel reduce
        sums = images.reshape(B, H, W * 3).sum(axis=1, dtype=np.uint64).reshape(B, W, 3).sum(axis=1, dtype=np.int64)
        return (2 * sums + n) // (2 * n) if n else np.zeros((B, 3), np.int64)
    f = np.asarray(fill, dtype=np.float64)
    if f.shape not in ((3,), (B, 3)):
        raise ValueError(f"fill must be None, 'image_mean', an (r, g, b) triple or (B, 3), got shape {f.shape}")
    return np.broadcast_to(np.clip(np.floor(f + 0.5), 0, 255).astype(np.int64), (B, 3))


def warp_dsap_batch(
    images: np.ndarray, i: np.ndarray, u: np.ndarray, v: np.ndarray, S: int = 32, fill=None
) -> tuple[np.ndarray, np.ndarray]:
    """Warp a batch of images to DSAP-images (Sec. 3.1).

    Args:
        images: ``(B, H, W, 3)`` uint8 RGB.
        i: ``(B, H, W)`` integer part index 0..24 (0 = background, not warped).
        u, v: ``(B, H, W)`` float in [0, 1] or uint16 codes (:mod:`priors.iuv`).
        S: DSAP-image side (32 in the paper).
        fill: ``None`` / ``"image_mean"`` for each image's per-channel mean, or an
            ``(r, g, b)`` constant (e.g. the dataset mean) or ``(B, 3)`` array.

    Returns:
        ``dsap`` ``(B, 24, 3, S, S)`` uint8 (cell = rounded mean of its pixels, else
        the fill colour) and ``valid`` ``(B, 24, S, S)`` bool.

    A compiled kernel (:func:`_warp_kernel`): per image one pass over the pixels
    accumulating integer counts and channel sums per cell, then one pass over the
    cells writing means or the fill. Releases the GIL (loader threads run it in
    parallel); single-threaded itself.
    """
    images = np.asarray(images)
    i = np.asarray(i)
    if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
        raise ValueError(f"images must be (B, H, W, 3) uint8, got {images.shape} {images.dtype}")
    if not (i.shape == np.shape(u) == np.shape(v) == images.shape[:3]):
        raise ValueError(f"i/u/v must be (B, H, W) = {images.shape[:3]}, got {i.shape}, {np.shape(u)}, {np.shape(v)}")
    if not np.issubdtype(i.dtype, np.integer):
        raise TypeError(f"part indices must be integers, got {i.dtype}")
    if not 1 <= S <= UV_LEVELS:
        raise ValueError(f"S must lie in 1..{UV_LEVELS}, got {S}")
    u, v = np.asarray(u), np.asarray(v)
    if u.dtype != v.dtype or not (u.dtype == np.uint16 or np.issubdtype(u.dtype, np.floating)):
        raise TypeError(f"u/v must both be float in [0, 1] or uint16 codes, got {u.dtype}, {v.dtype}")
    if u.dtype == np.float16:
        u, v = u.astype(np.float32), v.astype(np.float32)
    B = images.shape[0]
    mean_fill = fill is None or (isinstance(fill, str) and fill == "image_mean")
    fills = np.zeros((B, 3), np.int64) if mean_fill else _fill_values(images, fill)
    if i.dtype == np.uint64 or i.dtype.itemsize > 8:
        i = i.astype(np.int64)
    dsap = np.empty((B, N_PARTS, 3, S, S), dtype=np.uint8)
    valid = np.empty((B, N_PARTS, S, S), dtype=bool)
    bad = _warp_kernel(np.ascontiguousarray(images), np.ascontiguousarray(i), np.ascontiguousarray(u),
                       np.ascontiguousarray(v), S, u.dtype == np.uint16, mean_fill, np.ascontiguousarray(fills), dsap, valid)
    if bad:
        raise ValueError(f"part indices must lie in 0..{N_PARTS}")
    return dsap, valid


@numba.njit(cache=True, nogil=True, inline="always")
def _cell(q, S: int, codes: bool) -> int:
    """:func:`priors.iuv.uv_cell` of one value: ``(q * S) >> 16`` for uint16 codes,
    else ``floor(clip(x, 0, 1) * S)`` in float64 (NaN -> 0), clamped to ``S - 1``."""
    if codes:
        return np.int64((np.uint32(q) * np.uint32(S)) >> np.uint32(16))
    x = np.float64(q)
    if not x > 0.0:  # negative or NaN
        x = 0.0
    elif x > 1.0:
        x = 1.0
    return np.int64(min(int(x * S), S - 1))


@numba.njit(cache=True, nogil=True)
def _warp_kernel(images, parts, u, v, S, codes, mean_fill, fills, dsap, valid) -> bool:
    """Fill ``dsap``/``valid``; True when a part index lies outside 0..24."""
    B, H, W, _ = images.shape
    SS = S * S
    n_cells = N_PARTS * SS
    count = np.empty(n_cells, np.int32)
    sums = np.empty((n_cells, 3), np.int32)  # < 2**31 while H * W < 8.4 M pixels per cell
    n_pix = H * W
    for b in range(B):
        count[:] = 0
        sums[:] = 0
        total_r = total_g = total_b = np.int64(0)
        for y in range(H):
            for x in range(W):
                r, g, bl = images[b, y, x, 0], images[b, y, x, 1], images[b, y, x, 2]
                total_r += r
                total_g += g
                total_b += bl
                p = np.int64(parts[b, y, x])
                if p == 0:
                    continue
                if p < 0 or p > N_PARTS:
                    return True
                k = (p - 1) * SS + _cell(u[b, y, x], S, codes) * S + _cell(v[b, y, x], S, codes)
                count[k] += 1
                sums[k, 0] += r
                sums[k, 1] += g
                sums[k, 2] += bl
        if mean_fill:  # the image's own mean, rounded half up: (2 sum + n) // (2 n)
            f0 = (2 * total_r + n_pix) // (2 * n_pix) if n_pix else 0
            f1 = (2 * total_g + n_pix) // (2 * n_pix) if n_pix else 0
            f2 = (2 * total_b + n_pix) // (2 * n_pix) if n_pix else 0
        else:
            f0, f1, f2 = fills[b, 0], fills[b, 1], fills[b, 2]
        for p in range(N_PARTS):
            for cu in range(S):
                for cv in range(S):
                    k = p * SS + cu * S + cv
                    n = count[k]
                    if n:
                        dsap[b, p, 0, cu, cv] = (2 * sums[k, 0] + n) // (2 * n)
                        dsap[b, p, 1, cu, cv] = (2 * sums[k, 1] + n) // (2 * n)
                        dsap[b, p, 2, cu, cv] = (2 * sums[k, 2] + n) // (2 * n)
                    else:
                        dsap[b, p, 0, cu, cv] = f0
                        dsap[b, p, 1, cu, cv] = f1
                        dsap[b, p, 2, cu, cv] = f2
                    valid[b, p, cu, cv] = n > 0
    return False


def warp_dsap(
    image: np.ndarray, i: np.ndarray, u: np.ndarray, v: np.ndarray, S: int = 32, fill=None
) -> tuple[np.ndarray, np.ndarray]:
    """One image: ``(H, W, 3)`` uint8 + ``(H, W)`` i/u/v -> ``(24, 3, S, S)`` uint8, ``(24, S, S)`` bool.

    Same semantics as :func:`warp_dsap_batch` (which it calls with ``B = 1``).
    """
    f = fill if fill is None or isinstance(fill, str) else np.asarray(fill)
    dsap, valid = warp_dsap_batch(
        np.asarray(image)[None], np.asarray(i)[None], np.asarray(u)[None], np.asarray(v)[None], S, f
    )
    return dsap[0], valid[0]


def dsap_coverage(valid: np.ndarray) -> np.ndarray:
    """Fraction of filled cells per part: ``(..., 24, S, S)`` bool -> ``(..., 24)`` float32."""
    valid = np.asarray(valid)
    return valid.mean(axis=(-2, -1), dtype=np.float64).astype(np.float32)


def _check_mirror(mirror_v: Sequence[bool]) -> np.ndarray:
    m = np.asarray(mirror_v, dtype=bool)
    if m.shape != (N_PARTS,):
        raise ValueError(f"mirror_v needs one flag per part ({N_PARTS}), got shape {m.shape}")
    if not np.array_equal(m, m[list(FLIP_PERMUTATION)]):
        raise ValueError("mirror_v must give a left/right pair the same flag (the flip would not be an involution)")
    return m


def flip_dsap(
    dsap: np.ndarray, valid: np.ndarray, mirror_v: Sequence[bool] = FLIP_MIRROR_V
) -> tuple[np.ndarray, np.ndarray]:
    """DSAP-images of the horizontally flipped training image.

    Flipping the image turns the person into their mirror image: what was the
    person's left arm now looks like a right arm, and an ideal DensePose labels
    it so. The DSAP-images of the flipped image are therefore

    1. **parts swapped** by :data:`FLIP_PERMUTATION` — DensePose's own
       ``POINT_LABEL_SYMMETRIES``: hands 3<->4, feet 5<->6, each left/right pair
       of leg and arm halves, head 23<->24; torso halves 1 and 2 stay;
    2. **mirrored within the chart** where the mirror maps a chart onto itself.

    For step 2 DensePose stores the exact point map as per-part 256x256 lookup
    tables (``UV_symmetry_transforms.mat``, used by its flip augmentation); they
    are not available offline, so the choice rests on the conventions the model
    already relies on:

    * **left/right pair charts: no mirroring.** DSA-reID's level-1 merge
      (Sec. 3.2.1) adds a left/right pair element-wise *because* "the semantics
      for a pair of left-right symmetric parts are semantically aligned in the
      UV space": a surface point and its mirror image have the same ``(u, v)``
      in the two charts. Under that premise (which this module cannot check
      without DensePose's tables) the swap is the whole transform; mirroring
      ``V`` too would misalign exactly the features the network adds.
    * **self-symmetric charts (torso back 1, torso front 2): ``v -> 1 - v``.**
      The mirror takes the torso's left side onto its right side within one
      chart. As on the limbs, where ``V`` runs around the limb and ``U`` along
      it, we take ``V`` to run around the body (across the torso, side to side)
      and ``U`` along the body axis, so the reflection reverses ``V``: DSAP column ``c``
      becomes ``S - 1 - c`` (``floor((1 - v) S) = S - 1 - floor(v S)`` except on
      cell boundaries, a set of measure zero).

    The within-chart choice is data (:data:`FLIP_MIRROR_V`); pass another
    ``mirror_v`` (one flag per part, pairs alike) if DensePose's tables show
    otherwise. The flip is an involution. :func:`flip_iuv` applies the same
    convention to an IUV map, so ``warp(flip(image), flip_iuv(iuv)) ==
    flip_dsap(warp(image, iuv))`` (cell-centre ``v``) — tested.

    Args:
        dsap: ``(..., 24, 3, S, S)``; valid: ``(..., 24, S, S)``.
    Returns:
        flipped ``(dsap, valid)``, new contiguous arrays.
    """
    m = _check_mirror(mirror_v)
    dsap = np.asarray(dsap)
    valid = np.asarray(valid)
    if dsap.ndim < 4 or dsap.shape[-4:-2] != (N_PARTS, 3) or valid.shape != dsap.shape[:-3] + dsap.shape[-2:]:
        raise ValueError(f"expected dsap (..., 24, 3, S, S) and valid (..., 24, S, S), got {dsap.shape}, {valid.shape}")
    perm = list(FLIP_PERMUTATION)
    out_d = dsap[..., perm, :, :, :]  # fancy indexing copies
    out_v = valid[..., perm, :, :]
    out_d[..., m, :, :, :] = out_d[..., m, :, :, ::-1]
    out_v[..., m, :, :] = out_v[..., m, :, ::-1]
    return out_d, out_v


def flip_iuv(
    i: np.ndarray, u: np.ndarray, v: np.ndarray, mirror_v: Sequence[bool] = FLIP_MIRROR_V
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """IUV of the horizontally flipped image under :func:`flip_dsap`'s convention.

    Arrays ``(..., H, W)``; the image columns are reversed, labels mapped by
    :data:`FLIP_LABELS`, and ``v`` mirrored (``1 - v`` for floats, ``65535 - q``
    for uint16 codes — cell-exact for power-of-two ``S``) on the charts flagged in
    ``mirror_v``.
    """
    m = _check_mirror(mirror_v)
    i_f = FLIP_LABELS[np.asarray(i)[..., ::-1]]
    u_f = np.ascontiguousarray(np.asarray(u)[..., ::-1])
    v_f = np.ascontiguousarray(np.asarray(v)[..., ::-1])
    mirrored = np.concatenate([[False], m])[i_f]
    if v_f.dtype == np.uint16:
        v_f = np.where(mirrored, UV_MAX_CODE - v_f, v_f).astype(np.uint16)
    else:
        v_f = np.where(mirrored, 1 - v_f, v_f).astype(v_f.dtype)
    return i_f, u_f, v_f


__all__ = [
    "PART_NAMES",
    "MERGE_LEVEL1",
    "MERGE_LEVEL1_NAMES",
    "MERGE_LEVEL2",
    "MERGE_LEVEL2_NAMES",
    "MERGE_LEVEL2_PARTS",
    "FLIP_PERMUTATION",
    "FLIP_MIRROR_V",
    "FLIP_LABELS",
    "merge_matrix",
    "warp_dsap",
    "warp_dsap_batch",
    "dsap_coverage",
    "flip_dsap",
    "flip_iuv",
]

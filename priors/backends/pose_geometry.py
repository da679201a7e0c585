"""Geometry of BlazePose landmarks on a crop, shared by the ``pose-chart`` and ``pose`` backends.

Which landmarks are *seen* (visible and inside the crop), which way the person faces (front, back or
profile, from the landmarks' own geometry), the person's own left/right (mediapipe's labels swapped
where they contradict the view), the body frame (torso length ``T``, the direction to the person's
left) and tapered capsules around landmark segments (distance, axis position, signed offset), all
vectorised over pixels. Measured choices are cited where they are made; see
:mod:`priors.backends.pose_chart` for how the charts use them.
"""
from __future__ import annotations

import numpy as np

# mediapipe BlazePose landmark indices (person's left/right)
NOSE, L_EYE, R_EYE, L_EAR, R_EAR = 0, 2, 5, 7, 8
L_SHOULDER, R_SHOULDER, L_ELBOW, R_ELBOW, L_WRIST, R_WRIST = 11, 12, 13, 14, 15, 16
L_PINKY, R_PINKY, L_INDEX, R_INDEX = 17, 18, 19, 20
L_HIP, R_HIP, L_KNEE, R_KNEE, L_ANKLE, R_ANKLE = 23, 24, 25, 26, 27, 28
L_FOOT, R_FOOT = 31, 32
HEAD_LANDMARKS = (NOSE, L_EYE, R_EYE, L_EAR, R_EAR)


# BlazePose's left <-> right landmark permutation (eyes, ears, mouth, arms, hands, legs, feet)
FLIP_LANDMARKS = np.array([0, 4, 5, 6, 1, 2, 3, 8, 7, 10, 9, 12, 11, 14, 13, 16, 15, 18, 17, 20, 19, 22, 21,
                           24, 23, 26, 25, 28, 27, 30, 29, 32, 31])


def _unit(vec: np.ndarray, fallback: np.ndarray) -> np.ndarray:
    n = float(np.hypot(*vec))
    return vec / n if n > 1e-6 else fallback


def seen_landmarks(landmarks: np.ndarray, image_hw: tuple[int, int], min_visibility: float = 0.5,
                   margin: float = 0.02) -> np.ndarray:
    """(33,) bool: visibility >= ``min_visibility`` and inside the crop (up to ``margin`` times its size)."""
    lm = np.asarray(landmarks, dtype=np.float64)
    h, w = image_hw
    mx, my = margin * w, margin * h
    with np.errstate(invalid="ignore"):
        inside = (lm[:, 0] >= -mx) & (lm[:, 0] <= w - 1 + mx) & (lm[:, 1] >= -my) & (lm[:, 1] <= h - 1 + my)
        return np.isfinite(lm).all(axis=1) & inside & (lm[:, 3] >= min_visibility)


def in_crop(landmarks: np.ndarray, image_hw: tuple[int, int], margin: float) -> np.ndarray:
    """(33,) bool: the landmark lies inside the crop, up to ``margin`` times its size."""
    lm = np.asarray(landmarks, dtype=np.float64)
    h, w = image_hw
    with np.errstate(invalid="ignore"):
        return (np.isfinite(lm[:, :2]).all(axis=1) & (lm[:, 0] >= -margin * w) & (lm[:, 0] <= w - 1 + margin * w)
                & (lm[:, 1] >= -margin * h) & (lm[:, 1] <= h - 1 + margin * h))


def mask_support(mask: np.ndarray, a: np.ndarray, b: np.ndarray, radius: float) -> float:
    """Fraction of the pixels of the capsule ``a`` -> ``b`` (radius in px) inside the crop that ``mask`` covers."""
    h, w = mask.shape
    x0, x1 = int(max(min(a[0], b[0]) - radius, 0)), int(min(max(a[0], b[0]) + radius, w - 1))
    y0, y1 = int(max(min(a[1], b[1]) - radius, 0)), int(min(max(a[1], b[1]) + radius, h - 1))
    if x1 < x0 or y1 < y0:
        return 0.0
    rows, cols = np.mgrid[y0:y1 + 1, x0:x1 + 1]
    P = np.stack([cols.ravel(), rows.ravel()], axis=1).astype(np.float32)
    r = np.array([radius])
    score, _, _ = capsule_coordinates(P, a[None], b[None], r, r, np.array([1.0, 0.0]))
    inside = score[0] <= 1.0
    return float(mask[rows.ravel()[inside], cols.ravel()[inside]].mean()) if inside.any() else 0.0


def torso_length(lm: np.ndarray, image_h: int, min_torso_frac: float = 0.1) -> float:
    """Shoulder midpoint -> hip midpoint distance in pixels, at least ``min_torso_frac`` of the image height."""
    sh_mid = (lm[L_SHOULDER, :2] + lm[R_SHOULDER, :2]) / 2.0
    hip_mid = (lm[L_HIP, :2] + lm[R_HIP, :2]) / 2.0
    return max(float(np.hypot(*(hip_mid - sh_mid))), min_torso_frac * image_h, 1e-6)


def body_view(landmarks: np.ndarray, torso_length: float, profile_depth: float = 0.6,
              nose_depth_weight: float = 0.3, profile_max_spread: float = 0.5) -> tuple[str, int]:
    """Which way the person faces, from the landmarks' geometry: ``("front" | "back" | "profile", facing)``.

    * profile when the shoulders differ in depth by ``profile_depth`` T or more (measured on 127
      synthetic views: |dz| / T is 1.5-1.7 in profile, under 0.4 front and back; 93 % right) *and*
      shoulders and hips lie close together across the image (mean left-right spread under
      ``profile_max_spread`` T): on real crops BlazePose's shoulder depths differ by more than 0.6 T on
      27 of 68 hand-checked front views (turned a little, shoulders 0.53 T apart); with the spread
      rule 81 % of the 200 hand-checked views are right instead of 70 %, and the synthetic worlds'
      views (90.6 % and 92.4 % right) and part IoU do not change (``bench/bench_pose_quality.py``);
      ``facing`` is -1 when the person looks towards the image's left (the nose left of the ears'
      midpoint; the shoulders' depth order when the nose sits on it), else +1;
    * otherwise front when the person's left shoulder/hip lie on the image's right (mediapipe's own
      left/right order), corrected by the nose's depth relative to the shoulders (nearer = front):
      ``spread / T - nose_depth_weight * dz_nose / T > 0``; ``facing`` is 0.
    """
    lm = np.asarray(landmarks, dtype=np.float64)
    T = float(torso_length)
    dz = (lm[L_SHOULDER, 2] - lm[R_SHOULDER, 2]) / T
    spread = ((lm[L_SHOULDER, 0] - lm[R_SHOULDER, 0]) + (lm[L_HIP, 0] - lm[R_HIP, 0])) / 2.0
    if abs(dz) >= profile_depth and abs(spread) < profile_max_spread * T:
        nose_off = (lm[NOSE, 0] - (lm[L_EAR, 0] + lm[R_EAR, 0]) / 2.0) / T
        facing = int(np.sign(nose_off)) if abs(nose_off) > 0.02 else (1 if dz > 0 else -1)
        return "profile", facing
    nose_dz = lm[NOSE, 2] - (lm[L_SHOULDER, 2] + lm[R_SHOULDER, 2]) / 2.0
    score = spread / T - nose_depth_weight * nose_dz / T
    return ("front" if score > 0 else "back"), 0


def canonical_sides(landmarks: np.ndarray, view: str, facing: int) -> np.ndarray:
    """The landmarks with mediapipe's left/right swapped where they contradict the view.

    Seen from the front the person's left is on the image's right, from behind on its left; in a
    profile the near side is the person's left when they face the image's left (the nearer
    shoulder, by mediapipe's depth, must carry that side's label). BlazePose often keeps its
    front-facing left/right order on people seen from behind (the issue's "back views swap
    front/back and left/right"); this puts every backend on DensePose's convention: sides are the
    person's own.
    """
    lm = np.asarray(landmarks, dtype=np.float64)
    if view == "profile":
        left_nearer = lm[L_SHOULDER, 2] < lm[R_SHOULDER, 2]
        swap = left_nearer != (facing < 0)
    else:
        spread = (lm[L_SHOULDER, 0] - lm[R_SHOULDER, 0]) + (lm[L_HIP, 0] - lm[R_HIP, 0])
        swap = (spread < 0) if view == "front" else (spread > 0)
    return lm[FLIP_LANDMARKS] if swap else lm


def body_frame(landmarks: np.ndarray, image_h: int, min_torso_frac: float = 0.1):
    """Shoulder/hip midpoints, torso length ``T`` and the unit vector to the person's left."""
    lm = landmarks
    sh_mid = (lm[L_SHOULDER, :2] + lm[R_SHOULDER, :2]) / 2.0
    hip_mid = (lm[L_HIP, :2] + lm[R_HIP, :2]) / 2.0
    T = torso_length(lm, image_h, min_torso_frac)
    down = _unit(hip_mid - sh_mid, np.array([0.0, 1.0]))
    to_left = (lm[L_SHOULDER, :2] - lm[R_SHOULDER, :2]) + (lm[L_HIP, :2] - lm[R_HIP, :2])
    perp = np.array([-down[1], down[0]])
    to_left = perp if float(perp @ to_left) >= 0 else -perp
    return sh_mid, hip_mid, T, down, to_left


def capsule_coordinates(
    P: np.ndarray, A: np.ndarray, B: np.ndarray, r0: np.ndarray, r1: np.ndarray, to_left: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Normalised distance, axis position and signed offset of points ``P`` (N,2) to K tapered capsules.

    ``A``, ``B`` (K,2) ends, ``r0``, ``r1`` (K,) radii at the ends. Returns
    ``score`` (K,N) = distance to the axis / radius there, ``t`` (K,N) clipped
    axis position in [0,1], ``across`` (K,N) = signed offset / radius, positive
    on the ``to_left`` side of each axis. Computed in ``P``'s float dtype, one
    (K,N) array per coordinate (no (K,N,2) temporaries).
    """
    dtype = P.dtype if P.dtype in (np.float32, np.float64) else np.float64
    A, B = np.asarray(A, np.float64), np.asarray(B, np.float64)
    d = B - A
    inv_len2 = (1.0 / np.maximum((d * d).sum(axis=1), 1e-9)).astype(dtype)[:, None]
    normal = np.stack([-d[:, 1], d[:, 0]], axis=1)
    normal /= np.maximum(np.hypot(normal[:, 0], normal[:, 1]), 1e-9)[:, None]
    normal *= np.where((normal @ np.asarray(to_left, np.float64)) >= 0, 1.0, -1.0)[:, None]
    col = lambda a: np.asarray(a, dtype)[:, None]  # noqa: E731
    dx, dy, nx, ny = col(d[:, 0]), col(d[:, 1]), col(normal[:, 0]), col(normal[:, 1])
    relx = P[None, :, 0].astype(dtype) - col(A[:, 0])
    rely = P[None, :, 1].astype(dtype) - col(A[:, 1])
    t = np.clip((relx * dx + rely * dy) * inv_len2, 0.0, 1.0)
    relx -= t * dx  # now the offset from the nearest axis point
    rely -= t * dy
    inv_radius = 1.0 / (col(r0) + col(np.asarray(r1) - np.asarray(r0)) * t)
    score = np.hypot(relx, rely) * inv_radius
    across = (relx * nx + rely * ny) * inv_radius
    return score, t, across


__all__ = [
    "FLIP_LANDMARKS", "HEAD_LANDMARKS", "body_frame", "body_view", "canonical_sides", "capsule_coordinates", "in_crop",
    "mask_support", "seen_landmarks", "torso_length",
]

"""A 2.5D articulated body with a DensePose-style surface chart on every part.

Each part is a tapered cylinder with an elliptic cross-section (half-width ``a`` across the body,
half-depth ``b = k * a`` front-to-back) around a 3D axis from a proximal to a distal joint. The
skeleton is posed in 3D (walking gait: hip/knee/shoulder/elbow angles in the sagittal plane), turned
by the viewing yaw and projected orthographically. A pixel inside a part's silhouette is mapped back to
the surface point it sees (the visible root of the cross-section ellipse), which gives

* ``U`` = position along the axis, 0 proximal -> 1 distal (head: crown -> neck base);
* the angle ``psi`` around the axis in the body frame (0 = the person's left side, pi/2 = front,
  pi = right side, 3pi/2 = back), hence the chart: front half (``sin psi >= 0``) -> the higher
  DensePose index of the pair, back half -> the lower one, ``V`` = ``psi / pi`` on the front chart and
  ``psi / pi - 1`` on the back chart; the head splits left/right instead (``V`` 0 = face centre -> 1 =
  back of the head); hands and feet are one chart each with ``V = psi / 2pi``.

Because (I, U, V) is computed from the body-frame surface point, the same (I, U, V) is the same point
of the surface in every pose and from every viewpoint; textures are functions of (I, U, V).

Body frame: x = the person's left, y = down (crown at 0, soles near 1), z = forward. The yaw turns
the camera around the person: 0 = front view, 90 = the person's left side faces the camera.

Rasterisation (:mod:`priors.synthetic.raster`) keeps two z-buffers: *appearance* (everything,
including cloth and bags) and *body* (DensePose truth): cloth (skirt, coat tail, long hair) covers the
body in appearance only -- as DensePose labels the body surface beneath loose clothing -- while bags
occlude the body in both (I = 0 there).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .identity import Identity

# layer ids above the 24 DensePose parts: accessories
ACC_HAIR, ACC_BACKPACK, ACC_BAG, ACC_STRAP, ACC_SKIRT, ACC_COAT_TAIL = 25, 26, 27, 28, 29, 30
CLOTH_LAYERS = (ACC_HAIR, ACC_SKIRT, ACC_COAT_TAIL)
N_LAYERS = 31

VIEW_YAW = {"front": 0.0, "left": 90.0, "back": 180.0, "right": 270.0}
"""Yaw (degrees) of the camera around the person: 'left' = the camera sees the person's left side."""


@dataclass(frozen=True)
class Pose:
    """Per-image articulation: walking ``phase`` (radians), ``stride`` and ``arm_swing`` (0 = standing)."""

    phase: float = 0.0
    stride: float = 1.0
    arm_swing: float = 1.0
    arm_spread: float = 0.08  # arm abduction (radians)

    def to_dict(self) -> dict:
        return {"phase": self.phase, "stride": self.stride, "arm_swing": self.arm_swing, "arm_spread": self.arm_spread}


@dataclass(frozen=True)
class Primitive:
    """One tapered elliptic cylinder. ``kind``: 'limb' (front/back charts), 'single', 'head', 'acc'."""

    kind: str
    parts: tuple[int, int]  # (back, front) for limbs, (right, left) for the head, (layer, layer) otherwise
    p0: tuple[float, float, float]  # proximal end, body frame (x = person's left, y = down, z = forward)
    p1: tuple[float, float, float]
    ts: tuple[float, ...]  # radius profile sample positions along the axis
    radii: tuple[float, ...]  # half-widths a(t)
    depth_ratio: float  # b / a
    caps: tuple[float, float] = (1.0, 1.0)  # end cap length / radius at p0, p1
    u_range: tuple[float, float] = (0.0, 1.0)
    cloth: bool = False  # appearance only (covers the body but keeps the body's IUV)


def _rot_sagittal(vec: np.ndarray, angle: float) -> np.ndarray:
    """Turn (x, y, z) about the x axis: positive angle swings a hanging limb forward (+z)."""
    x, y, z = vec
    c, s = np.cos(angle), np.sin(angle)
    return np.array([x, y * c - z * s, y * s + z * c])


def body_primitives(ident: Identity, pose: Pose) -> list[Primitive]:
    """The posed body of ``ident`` as primitives in body-frame units (crown at y = 0, soles near y = 1)."""
    g, sh, hp, lg, hd = ident.girth, ident.shoulder * ident.girth, ident.hip * ident.girth, ident.legs, ident.head
    prims: list[Primitive] = []
    # ---- head and neck (DensePose 23 right / 24 left half): U 0 crown -> 0.86 chin -> 1 neck base
    head_h = 0.13 * hd
    t = np.linspace(0.0, 1.0, 17)
    profile = 0.054 * hd * np.sqrt(np.clip(1 - (2 * t - 1) ** 2, 0, 1)) * (1.04 - 0.16 * t)
    prims.append(Primitive("head", (23, 24), (0, 0, 0.012), (0, head_h, 0.02), tuple(t), tuple(profile), 1.12, (0, 0), (0.0, 0.86)))
    prims.append(Primitive("head", (23, 24), (0, head_h - 0.025, 0.0), (0, 0.185, -0.005), (0, 1), (0.027 * g, 0.03 * g),
                           1.0, (0, 0), (0.86, 1.0)))
    # ---- torso (1 back / 2 front): neck base -> hips
    ts = (0.0, 0.06, 0.2, 0.55, 0.8, 1.0)
    ra = (0.064 * g, 0.113 * sh, 0.118 * sh, 0.094 * g * (0.5 + 0.5 * hp), 0.1 * hp, 0.102 * hp)
    y_hip = 0.52
    prims.append(Primitive("limb", (1, 2), (0, 0.168, 0), (0, y_hip, 0), ts, ra, 0.6, (0.25, 0.5)))
    # ---- arms: side +1 = left (DensePose 15/17, 19/21, hand 4), -1 = right (16/18, 20/22, hand 3).
    # Unlike torso and legs, the arms' *lower* index is the front (inner) half: 15/16 and 19/20 are the
    # "inside" charts of DensePose's atlas, 17/18 and 21/22 the "outside" ones (see labels.py)
    phase = pose.phase
    for side, (ua, la, hand) in ((1, ((17, 15), (21, 19), 4)), (-1, ((18, 16), (22, 20), 3))):
        swing = 0.38 * pose.arm_swing * ident.arm_swing * (np.sin(phase) if side > 0 else -np.sin(phase))
        elbow = 0.18 + 0.35 * max(swing, 0.0)
        spread = pose.arm_spread
        shoulder = np.array([side * (0.113 * sh + 0.012), 0.212, 0.0])
        upper = _rot_sagittal(np.array([side * np.sin(spread) * 0.18, np.cos(spread) * 0.18, 0]), swing)
        elbow_p = shoulder + upper
        lower = _rot_sagittal(np.array([side * np.sin(spread * 0.6) * 0.155, np.cos(spread * 0.6) * 0.155, 0]), swing + elbow)
        wrist = elbow_p + lower
        hand_v = lower / np.linalg.norm(lower) * 0.085
        prims.append(Primitive("limb", ua, tuple(shoulder), tuple(elbow_p), (0, 1), (0.037 * g, 0.028 * g), 0.95, (0.55, 1.0)))
        prims.append(Primitive("limb", la, tuple(elbow_p), tuple(wrist), (0, 1), (0.028 * g, 0.021 * g), 0.9))
        prims.append(Primitive("single", (hand, hand), tuple(wrist), tuple(wrist + hand_v), (0, 0.5, 1), (0.021, 0.024, 0.016), 0.55))
    # ---- legs: side +1 = left (8/10, 12/14, foot 5), -1 = right (7/9, 11/13, foot 6)
    for side, (ul, ll, foot) in ((1, ((8, 10), (12, 14), 5)), (-1, ((7, 9), (11, 13), 6))):
        s = np.sin(phase) if side < 0 else -np.sin(phase)
        c = np.cos(phase) if side < 0 else -np.cos(phase)
        hip_angle = 0.42 * pose.stride * ident.stride * s
        knee = 0.06 + 0.95 * pose.stride * ident.stride * max(c, 0.0) ** 2
        hip = np.array([side * 0.056 * hp, y_hip - 0.02, 0.0])
        knee_p = hip + _rot_sagittal(np.array([0, 0.235 * lg, 0]), hip_angle)
        shank = hip_angle - knee
        ankle = knee_p + _rot_sagittal(np.array([0, 0.225 * lg, 0]), shank)
        heel = ankle + _rot_sagittal(np.array([0, 0.012, -0.02]), 0.5 * shank)
        toe = ankle + _rot_sagittal(np.array([0, 0.03, 0.115]), 0.5 * shank)
        prims.append(Primitive("limb", ul, tuple(hip), tuple(knee_p), (0, 0.6, 1), (0.058 * g, 0.047 * g, 0.04 * g), 1.0))
        prims.append(Primitive("limb", ll, tuple(knee_p), tuple(ankle), (0, 0.3, 1), (0.04 * g, 0.038 * g, 0.026 * g), 1.0))
        prims.append(Primitive("single", (foot, foot), tuple(heel), tuple(toe), (0, 0.6, 1), (0.03, 0.034, 0.03), 0.75))
    prims.extend(_accessories(ident, pose, prims))
    return prims


def _accessories(ident: Identity, pose: Pose, body: list[Primitive]) -> list[Primitive]:
    out: list[Primitive] = []
    g, hp, hd = ident.girth, ident.hip * ident.girth, ident.head
    if ident.hair_style == "long":
        out.append(Primitive("acc", (ACC_HAIR, ACC_HAIR), (0, 0.045 * hd, -0.03), (0, 0.27, -0.08), (0, 0.4, 1),
                             (0.06 * hd, 0.068 * hd, 0.055), 0.42, (0.8, 0.4), cloth=True))
    if ident.lower_type == "skirt":
        length = ident.skirt_length
        out.append(Primitive("acc", (ACC_SKIRT, ACC_SKIRT), (0, 0.44, 0.0), (0, 0.44 + length, 0.0), (0, 1),
                             (0.108 * hp, (0.125 + 0.12 * length) * hp), 0.72, (0.2, 0.05), cloth=True))
    if ident.upper_type == "coat":
        out.append(Primitive("acc", (ACC_COAT_TAIL, ACC_COAT_TAIL), (0, 0.45, 0.0), (0, 0.66, 0.0), (0, 1),
                             (0.108 * hp, 0.128 * hp), 0.66, (0.2, 0.05), cloth=True))
    chest = 0.118 * ident.shoulder * g * 0.6  # torso half-depth at the chest
    if ident.bag == "backpack":
        z = -(chest + 0.045)
        out.append(Primitive("acc", (ACC_BACKPACK, ACC_BACKPACK), (0, 0.2, z), (0, 0.43, z - 0.01), (0, 0.5, 1),
                             (0.082, 0.09, 0.088), 0.55, (0.35, 0.3)))
        for side in (1, -1):
            out.append(Primitive("acc", (ACC_STRAP, ACC_STRAP), (side * 0.065, 0.175, chest + 0.004),
                                 (side * 0.07, 0.4, chest * 0.8 + 0.004),
                                 (0, 1), (0.011, 0.011), 1.0, (0.5, 0.5)))
    elif ident.bag == "shoulder":
        s = ident.bag_side
        x = s * (0.1 * hp + 0.04)
        out.append(Primitive("acc", (ACC_BAG, ACC_BAG), (x, 0.47, 0.03), (x, 0.6, 0.03), (0, 1), (0.06, 0.066), 0.42, (0.3, 0.25)))
        for z in (chest + 0.006, -chest - 0.006):
            out.append(Primitive("acc", (ACC_STRAP, ACC_STRAP), (-s * 0.07, 0.17, z * 0.9), (s * 0.1, 0.46, z * 0.8), (0, 1),
                                 (0.009, 0.009), 1.0, (0.5, 0.5)))
    elif ident.bag == "handbag":
        hand = next(p for p in body if p.kind == "single" and p.parts[0] == (4 if ident.bag_side > 0 else 3))
        top = np.add(hand.p1, (ident.bag_side * 0.02, -0.01, 0.0))
        out.append(Primitive("acc", (ACC_BAG, ACC_BAG), tuple(top), tuple(top + (0, 0.12, 0)), (0, 1), (0.065, 0.07), 0.38, (0.3, 0.3)))
    return out


def person_extent(prims: list[Primitive], yaw: float) -> tuple[float, float, float, float]:
    """(left, right, top, bottom) of the posed body in the view frame (body units), from the geometry."""
    c, s = np.cos(np.radians(yaw)), np.sin(np.radians(yaw))
    xs, ys = [], []
    for p in prims:
        if p.kind == "acc" and p.parts[0] in (ACC_STRAP,):
            continue
        r = max(p.radii) * np.sqrt(c * c + (p.depth_ratio * s) ** 2)
        rv = max(p.radii) * np.sqrt(c * c + (p.depth_ratio * s) ** 2) if p.caps[0] or p.caps[1] else 0.0
        for q in (p.p0, p.p1):
            x, y = q[0] * c - q[2] * s, q[1]
            xs += [x - r, x + r]
            ys += [y - rv, y + rv]
    return min(xs), max(xs), min(ys), max(ys)

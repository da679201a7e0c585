"""Label conventions of the synthetic world: DensePose parts, LIP parsing classes, colour maps.

DensePose (Güler et al. 2018; the charts DSA-reID Sec. 3.1 warps into DSAP-images) splits the body
into 24 charts. The renderer uses the index semantics of the DensePose release: for the torso and
the legs the lower number of each front/back pair is the *back* half (torso 1 = back, 2 = front);
for the arms it is the other way round, the lower number is the *front* (inner) half: DensePose's
atlas calls 15/16, 19/20 the arms' "inside" and 17/18, 21/22 their "outside" (the charts facing the
camera with the palms, in the atlas' rest pose, are 15/16 and 19/20). ``priors.dsap.PART_NAMES`` and
``priors.backends.pose_chart`` use the same table; ``tests/test_pose_backends.py`` pins it:

====  =========================  ====  =========================
I     part                       I     part
====  =========================  ====  =========================
1     torso, back                2     torso, front
3     right hand                 4     left hand
5     left foot                  6     right foot
7     upper leg right, back      9     upper leg right, front
8     upper leg left, back       10    upper leg left, front
11    lower leg right, back      13    lower leg right, front
12    lower leg left, back       14    lower leg left, front
15    upper arm left, inside     17    upper arm left, outside
16    upper arm right, inside    18    upper arm right, outside
19    lower arm left, inside     21    lower arm left, outside
20    lower arm right, inside    22    lower arm right, outside
23    head, right half           24    head, left half
====  =========================  ====  =========================

"left" and "right" are the person's own sides. Parsing uses the 20 LIP classes
(Gong et al. 2017, "Look into Person") plus ``bag`` (= 20), which LIP lacks but MPN's
segmentation counts as person (MPN Fig. 4a). LIP's left/right arm, leg and shoe are the person's
own sides too. The neck is part of the head charts and is parsed as ``face``.
"""
from __future__ import annotations

import numpy as np

N_PARTS = 24

PART_NAMES = {
    0: "background",
    1: "torso_back", 2: "torso_front",
    3: "right_hand", 4: "left_hand",
    5: "left_foot", 6: "right_foot",
    7: "upper_leg_right_back", 8: "upper_leg_left_back",
    9: "upper_leg_right_front", 10: "upper_leg_left_front",
    11: "lower_leg_right_back", 12: "lower_leg_left_back",
    13: "lower_leg_right_front", 14: "lower_leg_left_front",
    15: "upper_arm_left_inside", 16: "upper_arm_right_inside",
    17: "upper_arm_left_outside", 18: "upper_arm_right_outside",
    19: "lower_arm_left_inside", 20: "lower_arm_right_inside",
    21: "lower_arm_left_outside", 22: "lower_arm_right_outside",
    23: "head_right", 24: "head_left",
}

TORSO_PARTS = (1, 2)
HEAD_PARTS = (23, 24)
LEFT_LEG_PARTS = (8, 10, 12, 14)
RIGHT_LEG_PARTS = (7, 9, 11, 13)
FRONT_PARTS = (2, 9, 10, 13, 14, 15, 16, 19, 20)
BACK_PARTS = (1, 7, 8, 11, 12, 17, 18, 21, 22)
LEFT_PARTS = (4, 5, 8, 10, 12, 14, 15, 17, 19, 21, 24)
RIGHT_PARTS = (3, 6, 7, 9, 11, 13, 16, 18, 20, 22, 23)

# person's left <-> right: the permutation a horizontal flip of the image applies to I
FLIP_PARTS = np.arange(N_PARTS + 1, dtype=np.uint8)
for _a, _b in ((3, 4), (5, 6), (7, 8), (9, 10), (11, 12), (13, 14), (15, 16), (17, 18), (19, 20), (21, 22), (23, 24)):
    FLIP_PARTS[_a], FLIP_PARTS[_b] = _b, _a

LIP_LABELS = (
    "background", "hat", "hair", "glove", "sunglasses", "upper_clothes", "dress", "coat", "socks",
    "pants", "jumpsuits", "scarf", "skirt", "face", "left_arm", "right_arm", "left_leg", "right_leg",
    "left_shoe", "right_shoe", "bag",
)
LIP = {name: k for k, name in enumerate(LIP_LABELS)}

LIP_HEAD = (LIP["hat"], LIP["hair"], LIP["sunglasses"], LIP["face"])
LIP_LEFT_LEG = (LIP["left_leg"], LIP["left_shoe"])
LIP_RIGHT_LEG = (LIP["right_leg"], LIP["right_shoe"])
LIP_LOWER_GARMENT = (LIP["pants"], LIP["skirt"], LIP["socks"])

# LIP's usual visualisation palette (RGB), bag appended
LIP_COLOURS = np.array([
    (0, 0, 0), (128, 0, 0), (255, 0, 0), (0, 85, 0), (170, 0, 51), (255, 85, 0), (0, 0, 85),
    (0, 119, 221), (85, 85, 0), (0, 85, 85), (85, 51, 0), (52, 86, 128), (0, 128, 0),
    (0, 0, 255), (51, 170, 221), (0, 255, 255), (85, 255, 170), (170, 255, 85), (255, 255, 0),
    (255, 170, 0), (190, 120, 200),
], dtype=np.uint8)


def _part_colours() -> np.ndarray:
    """One distinct colour per DensePose part: hue walks the body from torso to head."""
    import colorsys

    out = np.zeros((N_PARTS + 1, 3), dtype=np.uint8)
    for k in range(1, N_PARTS + 1):
        r, g, b = colorsys.hsv_to_rgb(((k * 7) % N_PARTS) / N_PARTS, 0.75, 1.0)
        out[k] = (int(255 * r), int(255 * g), int(255 * b))
    return out


PART_COLOURS = _part_colours()


def colour_iuv(i: np.ndarray, u: np.ndarray, v: np.ndarray, checks: int = 6) -> np.ndarray:
    """RGB view of an IUV map: part colour, darkened on a ``checks`` x ``checks`` checkerboard in (U, V).

    The checkerboard lives on the body surface, so it follows the limbs from pose to pose — an
    eye check of the (U, V) consistency.
    """
    base = PART_COLOURS[np.asarray(i, dtype=np.intp)].astype(np.float32)
    parity = (np.floor(u * checks).astype(np.int32) + np.floor(v * checks).astype(np.int32)) % 2
    shade = np.where(parity == 1, 0.55, 1.0)[..., None]
    return (base * shade).astype(np.uint8)


def colour_parsing(labels: np.ndarray) -> np.ndarray:
    """RGB view of a LIP label map."""
    return LIP_COLOURS[np.asarray(labels, dtype=np.intp)]

"""Clothing, skin and hair as functions of the body surface: ``(layer, U, V) -> (albedo, LIP label)``.

The colour of a pixel depends only on *which point of the surface* it shows (its layer = DensePose
part or accessory, and the chart coordinates U, V of :mod:`priors.synthetic.body`) and on the
identity: the same (I, U, V) has the same albedo in every pose and view. Lighting is applied on top
(:mod:`priors.synthetic.render`).

Every surface point gets a *material* (skin of the left arm, sleeve, trousers, hair, ...); a
material has one colour and one LIP label, so parsing and appearance agree pixel for pixel.

Around-the-limb coordinate used by the patterns: ``w = psi / 2pi`` in [0, 1) (0 = the person's left
side, 0.25 = front centre, 0.5 = right side, 0.75 = back centre), i.e. ``V / 2`` on front charts and
``(1 + V) / 2`` on back charts.
"""
from __future__ import annotations

import enum

import numpy as np

from .body import ACC_BACKPACK, ACC_BAG, ACC_COAT_TAIL, ACC_HAIR, ACC_SKIRT, ACC_STRAP, N_LAYERS
from .identity import Identity
from .labels import BACK_PARTS, LEFT_PARTS, LIP


class M(enum.IntEnum):
    """Materials: one colour and one LIP label each."""

    NONE = 0
    ARM_L, ARM_R, LEG_L, LEG_R, FACE, EYES, MOUTH, EARS, NECK = range(1, 10)
    HAIR, HAT, UPPER, UPPER2, INNER, LOWER, LOWER2, BELT, SOCKS = range(10, 19)
    SHOE_L, SHOE_R, SOLE_L, SOLE_R, COAT, COAT2, BAG, BAG_DARK, STRAP = range(19, 28)


_BACK = np.zeros(N_LAYERS, bool)
_BACK[list(BACK_PARTS)] = True
_LEFT = np.zeros(N_LAYERS, bool)
_LEFT[list(LEFT_PARTS)] = True
# body-part groups: 1 torso 2 upper arm 3 lower arm 4 hand 5 upper leg 6 lower leg 7 foot 8 head, 9+ accessories
_GROUP = np.zeros(N_LAYERS, np.int8)
for _g, _parts in ((1, (1, 2)), (2, (15, 16, 17, 18)), (3, (19, 20, 21, 22)), (4, (3, 4)), (5, (7, 8, 9, 10)),
                   (6, (11, 12, 13, 14)), (7, (5, 6)), (8, (23, 24)), (9, (ACC_HAIR,)), (10, (ACC_SKIRT,)),
                   (11, (ACC_COAT_TAIL,)), (12, (ACC_BACKPACK,)), (13, (ACC_BAG,)), (14, (ACC_STRAP,))):
    _GROUP[list(_parts)] = _g


def _c(colour) -> np.ndarray:
    return np.asarray(colour, np.float32) / 255.0


def material_table(ident: Identity) -> tuple[np.ndarray, np.ndarray]:
    """(colours (n_materials, 3) float32 in [0,1], LIP labels (n_materials,) uint8) of ``ident``."""
    skin, c1, c2 = _c(ident.skin), _c(ident.upper_colour), _c(ident.upper_colour2)
    lower, bag = _c(ident.lower_colour), _c(ident.bag_colour)
    hair = _c(ident.hair_colour)
    if ident.hair_style == "shaved":
        hair = 0.55 * hair + 0.27 * skin
    up_lab = {"coat": LIP["coat"], "dress": LIP["dress"]}.get(ident.upper_type, LIP["upper_clothes"])
    low_lab = LIP["dress"] if ident.upper_type == "dress" else LIP["skirt"] if ident.lower_type == "skirt" else LIP["pants"]
    shoe = _c(ident.shoe_colour)
    inner = c2 if ident.upper_pattern != "twotone" else _c((236, 236, 230))
    entries = {
        M.NONE: ((0, 0, 0), "background"),
        M.ARM_L: (skin, "left_arm"), M.ARM_R: (skin, "right_arm"), M.LEG_L: (skin, "left_leg"), M.LEG_R: (skin, "right_leg"),
        M.FACE: (skin, "face"), M.EYES: (skin * 0.35, "face"), M.MOUTH: (skin * np.array([0.72, 0.5, 0.5]), "face"),
        M.EARS: (skin * 0.85, "face"), M.NECK: (skin * 0.9, "face"),
        M.HAIR: (hair, "hair"), M.HAT: (_c(ident.hat) if ident.hat is not None else hair, "hat"),
        M.UPPER: (c1, up_lab), M.UPPER2: (c2, up_lab), M.INNER: (inner, "upper_clothes"),
        M.LOWER: (lower, low_lab), M.LOWER2: (_c(ident.lower_colour2), low_lab), M.BELT: (lower * 0.55, low_lab),
        M.SOCKS: (_c(ident.socks) if ident.socks is not None else skin, "socks"),
        M.SHOE_L: (shoe, "left_shoe"), M.SHOE_R: (shoe, "right_shoe"),
        M.SOLE_L: (shoe * 0.7 + 0.22, "left_shoe"), M.SOLE_R: (shoe * 0.7 + 0.22, "right_shoe"),
        M.COAT: (c1, "coat"), M.COAT2: (c2, "coat"),
        M.BAG: (bag, "bag"), M.BAG_DARK: (bag * 0.7, "bag"), M.STRAP: (bag * 0.8, "bag"),
    }
    colours = np.array([np.asarray(entries[m][0], np.float32) for m in M], np.float32)
    labels = np.array([LIP[e] if isinstance(e := entries[m][1], str) else e for m in M], np.uint8)
    return np.clip(colours, 0, 1), labels


def _second_colour(ident: Identity, u: np.ndarray, w: np.ndarray, length: float) -> np.ndarray:
    """Bool: where the upper garment's pattern shows its second colour. ``length`` scales U to body units."""
    f, p = ident.stripe_freq, ident.upper_pattern
    if p == "hstripes":
        return np.floor(u * (length * f * 3.2)) % 2 == 1
    if p == "vstripes":
        return np.floor(w * (f * 4)) % 2 == 1
    if p == "checks":
        return (np.floor(u * (length * f * 2.2)) + np.floor(w * (f * 3))) % 2 == 1
    return np.zeros(u.shape, bool)


def surface_materials(ident: Identity, layer: np.ndarray, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Material id (N,) uint8 of surface points (layer, U, V) (1-D arrays)."""
    mat = np.zeros(layer.shape[0], np.uint8)
    grp = _GROUP[layer]
    order = np.argsort(grp, kind="stable")
    bounds = np.searchsorted(grp[order], np.arange(16))

    def group(g):
        idx = order[bounds[g]:bounds[g + 1]]
        lay = layer[idx]
        return idx, u[idx], v[idx], np.where(_BACK[lay], 0.5 + 0.5 * v[idx], 0.5 * v[idx]), _LEFT[lay]

    def paint(idx, where, m):
        mat[idx[where] if where is not None else idx] = m

    # ---- torso: upper garment with its pattern; the waistband of the lower garment below U ~ 0.83
    idx, gu, gv, gw, _ = group(1)
    second = _second_colour(ident, gu, gw, 0.35)
    if ident.upper_pattern == "print":
        second = (np.abs(gw - 0.25) < 0.06) & (gu > 0.22) & (gu < 0.42)
    mat[idx] = np.where(second, M.UPPER2, M.UPPER)
    if ident.upper_type == "coat":  # open coat: the inner shirt shows down the front
        paint(idx, (np.abs(gw - 0.25) < 0.028) & (gu > 0.06), M.INNER)
    else:
        paint(idx, gu > 0.83, M.LOWER if ident.upper_type != "dress" else M.UPPER)
        if ident.lower_type == "pants" and ident.upper_type != "dress":
            paint(idx, (gu > 0.83) & (gu < 0.86), M.BELT)
    # ---- arms: sleeves over the upper arm (short) or the whole arm (long); hands are arm skin
    sleeve_len = {"tshirt": 0.5, "shirt": 1.01, "coat": 1.01, "dress": 0.18}[ident.upper_type]
    for g, limit in ((2, sleeve_len), (3, (sleeve_len > 1) * 0.93), (4, 0.0)):
        idx, gu, gv, gw, left = group(g)
        mat[idx] = np.where(left, M.ARM_L, M.ARM_R)
        covered = gu < limit
        if ident.upper_pattern == "twotone":
            sleeve = np.full(idx.shape, M.UPPER2)
        elif ident.upper_pattern in ("hstripes", "checks"):
            sleeve = np.where(_second_colour(ident, gu, gw, 0.18), M.UPPER2, M.UPPER)
        else:
            sleeve = np.full(idx.shape, M.UPPER)
        mat[idx[covered]] = sleeve[covered]
    # ---- legs: trousers, shorts or skirt (the skirt's colour also on the thighs beneath it), socks
    skirt_u = (ident.skirt_length - 0.06) / 0.235  # where the skirt's hem crosses the thigh
    thigh_limit = {"pants": 2.0, "shorts": 0.55, "skirt": skirt_u}[ident.lower_type]
    for g, limit in ((5, thigh_limit), (6, 2.0 if ident.lower_type == "pants" else 0.0)):
        idx, gu, gv, gw, left = group(g)
        mat[idx] = np.where(left, M.LEG_L, M.LEG_R)
        covered = gu < limit
        if ident.lower_pattern == "side_stripe":
            seam = np.where(left, np.minimum(gw, 1 - gw), np.abs(gw - 0.5)) < 0.035
            mat[idx[covered]] = np.where(seam, M.LOWER2, M.LOWER)[covered]
        else:
            paint(idx, covered, M.LOWER)
        if g == 6 and ident.socks is not None:
            paint(idx, gu > 0.86, M.SOCKS)
    idx, gu, gv, gw, left = group(7)
    sole = (gv > 0.4) & (gv < 0.6)
    mat[idx] = np.where(left, np.where(sole, M.SOLE_L, M.SHOE_L), np.where(sole, M.SOLE_R, M.SHOE_R))
    # ---- head: hair / hat / face (V: 0 face centre -> 1 back of the head); U > 0.86 is the neck
    idx, gu, gv, _, _ = group(8)
    mat[idx] = M.FACE
    paint(idx, (gu > 0.45) & (gu < 0.51) & (gv > 0.07) & (gv < 0.16), M.EYES)
    paint(idx, (gu > 0.69) & (gu < 0.73) & (gv < 0.07), M.MOUTH)
    paint(idx, (gu > 0.44) & (gu < 0.62) & (gv > 0.45) & (gv < 0.52), M.EARS)
    knots = {"short": ([0, 0.3, 0.42, 0.55, 0.75, 1], [0.3, 0.33, 0.42, 0.62, 0.7, 0.72]),
             "long": ([0, 0.2, 0.3, 0.45, 1], [0.3, 0.32, 0.6, 0.86, 0.86]),
             "shaved": ([0, 0.4, 1], [0.18, 0.3, 0.5])}[ident.hair_style]
    paint(idx, gu < np.minimum(np.interp(gv, *knots), 0.86), M.HAIR)
    paint(idx, gu >= 0.86, M.NECK)
    if ident.hat is not None:
        paint(idx, gu < 0.24 + 0.06 * (gv < 0.3), M.HAT)
    # ---- accessories
    paint(group(9)[0], None, M.HAIR)
    paint(group(10)[0], None, M.LOWER)
    idx, gu, gv, gw, _ = group(11)
    coat = _second_colour(ident, gu * 0.6 + 0.4, gw, 0.35) if ident.upper_pattern == "checks" else np.zeros(idx.shape, bool)
    mat[idx] = np.where(coat, M.COAT2, M.COAT)
    idx, gu, gv, _, _ = group(12)
    mat[idx] = np.where((gu > 0.5) & (gu < 0.85) & (np.abs(gv - 0.75) < 0.15), M.BAG_DARK, M.BAG)
    paint(group(13)[0], None, M.BAG)
    paint(group(14)[0], None, M.STRAP)
    return mat


def surface_appearance(ident: Identity, layer: np.ndarray, u: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Albedo (N,3) float32 in [0,1] and LIP label (N,) uint8 of surface points (layer, U, V), 1-D inputs."""
    colours, labels = material_table(ident)
    mat = surface_materials(ident, layer, u, v)
    return colours[mat], labels[mat]

"""DSAP-image warp (DSA-reID Sec. 3.1), merge tables (Sec. 3.2.1) and the flip mapping (priors/dsap.py)."""
from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from priors.dsap import (
    FLIP_LABELS,
    FLIP_MIRROR_V,
    FLIP_PERMUTATION,
    MERGE_LEVEL1,
    MERGE_LEVEL1_NAMES,
    MERGE_LEVEL2,
    MERGE_LEVEL2_NAMES,
    MERGE_LEVEL2_PARTS,
    PART_NAMES,
    dsap_coverage,
    flip_dsap,
    flip_iuv,
    merge_matrix,
    warp_dsap,
    warp_dsap_batch,
)
from priors.iuv import encode_uv


def reference_warp(image, i, u, v, S, fill=None):
    """Per-pixel loop written from the paper's text: cell = floor(u S), floor(v S), mean per cell."""
    H, W, _ = image.shape
    sums = np.zeros((24, S, S, 3), np.int64)
    count = np.zeros((24, S, S), np.int64)
    for y in range(H):
        for x in range(W):
            p = int(i[y, x])
            if p == 0:
                continue
            if u.dtype == np.uint16:
                cu, cv = (int(u[y, x]) * S) >> 16, (int(v[y, x]) * S) >> 16
            else:
                cu = min(max(math.floor(float(u[y, x]) * S), 0), S - 1)
                cv = min(max(math.floor(float(v[y, x]) * S), 0), S - 1)
            sums[p - 1, cu, cv] += image[y, x]
            count[p - 1, cu, cv] += 1
    if fill is None:
        n = H * W
        fill_rgb = [(2 * int(image[..., c].sum()) + n) // (2 * n) for c in range(3)]
    else:
        fill_rgb = [min(max(math.floor(f + 0.5), 0), 255) for f in fill]
    out = np.empty((24, 3, S, S), np.uint8)
    for p in range(24):
        for a in range(S):
            for b in range(S):
                for c in range(3):
                    n = count[p, a, b]
                    out[p, c, a, b] = (2 * sums[p, a, b, c] + n) // (2 * n) if n else fill_rgb[c]
    return out, count > 0


# --- hand-computed warp -----------------------------------------------------------------------

IMAGE_2x3 = np.array(
    [[[10, 20, 30], [40, 50, 60], [70, 80, 90]], [[100, 110, 120], [200, 210, 220], [1, 2, 3]]], np.uint8
)
I_2x3 = np.array([[1, 1, 0], [3, 24, 1]], np.uint8)
U_2x3 = np.array([[0.0, 0.1, 0.9], [0.5, 1.0, 0.24]], np.float32)
V_2x3 = np.array([[0.3, 0.49, 0.9], [0.75, 1.0, 0.76]], np.float32)


def test_hand_computed_cells_S4():
    # S = 4: (u, v) -> (floor 4u, floor 4v)
    #   (0,0) part 0: (0.0, 0.3)  -> (0, 1)     (0,1) part 0: (0.1, 0.49) -> (0, 1)  same cell: mean
    #   (0,2) background: not warped            (1,0) part 2: (0.5, 0.75) -> (2, 3)
    #   (1,1) part 23: (1.0, 1.0) -> (3, 3) (u = v = 1 clamp)   (1,2) part 0: (0.24, 0.76) -> (0, 3)
    # image mean (all 6 pixels, half up): R 421/6 -> 70, G 472/6 -> 79, B 523/6 -> 87
    dsap, valid = warp_dsap(IMAGE_2x3, I_2x3, U_2x3, V_2x3, S=4)
    assert dsap.shape == (24, 3, 4, 4) and dsap.dtype == np.uint8
    assert valid.shape == (24, 4, 4) and valid.dtype == bool
    expected = np.empty((24, 3, 4, 4), np.uint8)
    expected[:] = np.array([70, 79, 87], np.uint8)[None, :, None, None]
    expected[0, :, 0, 1] = [25, 35, 45]  # mean of (10,20,30) and (40,50,60)
    expected[0, :, 0, 3] = [1, 2, 3]
    expected[2, :, 2, 3] = [100, 110, 120]
    expected[23, :, 3, 3] = [200, 210, 220]
    expected_valid = np.zeros((24, 4, 4), bool)
    expected_valid[0, 0, 1] = expected_valid[0, 0, 3] = expected_valid[2, 2, 3] = expected_valid[23, 3, 3] = True
    assert np.array_equal(dsap, expected)
    assert np.array_equal(valid, expected_valid)
    cov = dsap_coverage(valid)
    assert cov.shape == (24,) and cov.dtype == np.float32
    assert cov[0] == 2 / 16 and cov[2] == 1 / 16 and cov[23] == 1 / 16 and cov.sum() == 4 / 16


def test_hand_computed_cells_from_uint16_codes():
    dsap, valid = warp_dsap(IMAGE_2x3, I_2x3, encode_uv(U_2x3), encode_uv(V_2x3), S=4)
    ref_d, ref_v = warp_dsap(IMAGE_2x3, I_2x3, U_2x3, V_2x3, S=4)
    assert np.array_equal(dsap, ref_d) and np.array_equal(valid, ref_v)


def test_mean_of_several_pixels_rounds_half_up():
    image = np.array([[[1, 2, 3], [2, 3, 4], [9, 9, 9]]], np.uint8)
    i = np.array([[5, 5, 0]], np.uint8)
    u = np.full((1, 3), 0.6, np.float32)
    v = np.full((1, 3), 0.1, np.float32)
    dsap, valid = warp_dsap(image, i, u, v, S=2, fill=(0, 0, 0))
    # means 1.5, 2.5, 3.5 -> 2, 3, 4 (half up; banker's rounding would give 2, 2, 4)
    assert dsap[4, :, 1, 0].tolist() == [2, 3, 4]
    assert valid.sum() == 1 and valid[4, 1, 0]
    assert dsap.sum() == 2 + 3 + 4  # everything else is the (0, 0, 0) fill


def test_u_equal_one_clamps_to_last_row_and_column():
    image = np.full((1, 4, 3), 50, np.uint8)
    i = np.full((1, 4), 7, np.uint8)
    u = np.array([[1.0, 1.0, 0.0, 0.999]], np.float32)
    v = np.array([[1.0, 0.0, 1.0, 0.999]], np.float32)
    _, valid = warp_dsap(image, i, u, v, S=32)
    assert sorted(zip(*np.nonzero(valid[6]))) == [(0, 31), (31, 0), (31, 31)]


def test_background_pixels_are_not_warped():
    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, (6, 5, 3), dtype=np.uint8)
    i = rng.integers(0, 25, (6, 5)).astype(np.uint8)
    i[:, :2] = 0
    u, v = rng.random((6, 5)).astype(np.float32), rng.random((6, 5)).astype(np.float32)
    other = image.copy()
    other[:, :2] = 255 - other[:, :2]  # change only background pixels
    a = warp_dsap(image, i, u, v, S=8, fill=(1, 2, 3))
    b = warp_dsap(other, i, u, v, S=8, fill=(1, 2, 3))
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    nothing = warp_dsap(image, np.zeros((6, 5), np.uint8), u, v, S=8, fill=(1, 2, 3))
    assert not nothing[1].any() and np.all(nothing[0] == np.array([1, 2, 3])[None, :, None, None])


def test_mean_fill_options():
    image = np.array([[[0, 100, 255], [3, 101, 255]]], np.uint8)  # means 1.5, 100.5, 255 -> 2, 101, 255
    i = np.zeros((1, 2), np.uint8)
    z = np.zeros((1, 2), np.float32)
    for fill in (None, "image_mean"):
        d, _ = warp_dsap(image, i, z, z, S=2, fill=fill)
        assert np.all(d == np.array([2, 101, 255])[None, :, None, None])
    d, _ = warp_dsap(image, i, z, z, S=2, fill=(0.4, 127.5, 300.0))  # dataset mean: rounded half up, clipped
    assert np.all(d == np.array([0, 128, 255])[None, :, None, None])
    with pytest.raises(ValueError):
        warp_dsap(image, i, z, z, S=2, fill=(1, 2))
    with pytest.raises(ValueError):
        warp_dsap(image, i, z, z, S=2, fill="dataset_mean")
    with pytest.raises(ValueError):
        warp_dsap(image, i, z, z, S=0)


def test_batch_fill_per_image_and_dataset_mean():
    rng = np.random.default_rng(2)
    images = rng.integers(0, 256, (3, 4, 5, 3), dtype=np.uint8)
    i = rng.integers(0, 25, (3, 4, 5)).astype(np.uint8)
    u, v = rng.random((3, 4, 5)), rng.random((3, 4, 5))
    per_image_fill = np.array([[1, 2, 3], [4, 5, 6], [7, 8, 9]])
    d, valid = warp_dsap_batch(images, i, u, v, S=4, fill=per_image_fill)
    for b in range(3):
        assert np.all(d[b][:, :, ~valid[b].any(axis=0)] == per_image_fill[b][None, :, None])


def test_batch_equals_per_image_and_reference():
    rng = np.random.default_rng(3)
    B, H, W = 7, 9, 6
    images = rng.integers(0, 256, (B, H, W, 3), dtype=np.uint8)
    i = rng.integers(0, 25, (B, H, W)).astype(np.uint8)
    u, v = rng.random((B, H, W)).astype(np.float32), rng.random((B, H, W)).astype(np.float32)
    d, valid = warp_dsap_batch(images, i, u, v, S=4)
    for b in range(B):
        db, vb = warp_dsap(images[b], i[b], u[b], v[b], S=4)
        rd, rv = reference_warp(images[b], i[b], u[b], v[b], 4)
        assert np.array_equal(d[b], db) and np.array_equal(valid[b], vb)
        assert np.array_equal(db, rd) and np.array_equal(vb, rv)


def test_batch_larger_than_one_chunk_equals_per_image():
    rng = np.random.default_rng(4)
    B, H, W = 13, 16, 8  # S = 32: 5 images per internal chunk
    images = rng.integers(0, 256, (B, H, W, 3), dtype=np.uint8)
    i = rng.integers(0, 25, (B, H, W)).astype(np.int64)
    u, v = encode_uv(rng.random((B, H, W))), encode_uv(rng.random((B, H, W)))
    d, valid = warp_dsap_batch(images, i, u, v)
    for b in (0, 4, 5, 9, 12):
        db, vb = warp_dsap(images[b], i[b], u[b], v[b])
        assert np.array_equal(d[b], db) and np.array_equal(valid[b], vb)


def test_crowded_cell_uses_exact_unpacked_sums():
    """> 514 pixels in one cell: the packed-sum fast path is not exact there; the fallback is."""
    image = np.full((30, 30, 3), 255, np.uint8)
    image[::2, :, 1] = 0  # G alternates 255 / 0 by row -> mean 127.5 -> 128
    i = np.full((30, 30), 2, np.uint8)
    z = np.zeros((30, 30), np.float32)
    dsap, valid = warp_dsap(image, i, z, z, S=32)
    assert dsap[1, :, 0, 0].tolist() == [255, 128, 255] and valid.sum() == 1
    rd, rv = reference_warp(image, i, z, z, 32)
    assert np.array_equal(dsap, rd) and np.array_equal(valid, rv)


def test_input_validation():
    img = np.zeros((2, 2, 3), np.uint8)
    z = np.zeros((2, 2), np.float32)
    with pytest.raises(ValueError):
        warp_dsap(img, np.full((2, 2), 25), z, z)
    with pytest.raises(ValueError):
        warp_dsap(img.astype(np.float32), np.zeros((2, 2), int), z, z)
    with pytest.raises(ValueError):
        warp_dsap(img, np.zeros((2, 3), int), z, z)
    with pytest.raises(TypeError):
        warp_dsap(img, z, z, z)


@st.composite
def iuv_case(draw):
    H, W = draw(st.integers(1, 6)), draw(st.integers(1, 6))
    S = draw(st.sampled_from([1, 2, 3, 4, 5, 8, 32]))
    image = draw(hnp.arrays(np.uint8, (H, W, 3)))
    i = draw(hnp.arrays(np.uint8, (H, W), elements=st.integers(0, 24)))
    edge = st.sampled_from([0.0, 1.0, 0.5, 0.25, 1 / 3])
    uv_el = st.one_of(edge, st.floats(0.0, 1.0, width=32))
    u = draw(hnp.arrays(np.float32, (H, W), elements=uv_el))
    v = draw(hnp.arrays(np.float32, (H, W), elements=uv_el))
    if draw(st.booleans()):
        u, v = encode_uv(u), encode_uv(v)
    fill = draw(st.one_of(st.none(), st.tuples(*[st.floats(-10, 300)] * 3)))
    return image, i, u, v, S, fill


@settings(max_examples=60, deadline=None)
@given(iuv_case())
def test_vectorised_equals_naive_reference(case):
    image, i, u, v, S, fill = case
    d, valid = warp_dsap(image, i, u, v, S=S, fill=fill)
    rd, rv = reference_warp(image, i, u, v, S, fill)
    assert np.array_equal(d, rd) and np.array_equal(valid, rv)


# --- merge tables (Sec. 3.2.1, Table 1, Fig. 4) -------------------------------------------------


def test_merge_tables_cover_each_part_exactly_once():
    assert sorted(p for g in MERGE_LEVEL1 for p in g) == list(range(24))
    assert len(MERGE_LEVEL1) == len(MERGE_LEVEL1_NAMES) == 13
    assert sorted(g for grp in MERGE_LEVEL2 for g in grp) == list(range(13))
    assert len(MERGE_LEVEL2) == len(MERGE_LEVEL2_NAMES) == 8
    assert sorted(p for g in MERGE_LEVEL2_PARTS for p in g) == list(range(24))
    assert MERGE_LEVEL2_NAMES == ("torso", "hands", "feet", "upper_legs", "lower_legs", "upper_arms", "lower_arms", "head")
    named = dict(zip(MERGE_LEVEL2_NAMES, MERGE_LEVEL2_PARTS))
    assert named["torso"] == (0, 1) and named["head"] == (22, 23)
    assert named["upper_legs"] == (6, 7, 8, 9)  # DensePose 7, 8 + 9, 10
    assert named["lower_arms"] == (18, 19, 20, 21)  # DensePose 19, 20 + 21, 22
    singular = {"torso": "torso", "hands": "hand", "feet": "foot", "upper_legs": "upper_leg",
                "lower_legs": "lower_leg", "upper_arms": "upper_arm", "lower_arms": "lower_arm", "head": "head"}  # fmt: skip
    for name, parts in named.items():
        assert all(PART_NAMES[p].startswith(singular[name]) or PART_NAMES[p].endswith(singular[name])
                   for p in parts), name  # fmt: skip


def test_level1_pairs_are_left_right_pairs():
    for group in MERGE_LEVEL1:
        assert sorted(FLIP_PERMUTATION[p] for p in group) == sorted(group)
        if len(group) == 2:
            a, b = (PART_NAMES[p] for p in group)
            assert a.replace("left", "#").replace("right", "left").replace("#", "right") == b


def test_merge_matrix():
    m1, m2 = merge_matrix(MERGE_LEVEL1, 24), merge_matrix(MERGE_LEVEL2, 13)
    assert m1.shape == (13, 24) and m2.shape == (8, 13)
    assert np.array_equal(m1.sum(axis=0), np.ones(24)) and np.array_equal(m2.sum(axis=0), np.ones(13))
    x = np.arange(24, dtype=np.float32) + 1  # DensePose label values as features
    assert (m2 @ (m1 @ x)).tolist() == [sum(p + 1 for p in g) for g in MERGE_LEVEL2_PARTS]


# --- horizontal flip --------------------------------------------------------------------------


def test_flip_permutation_is_densepose_symmetry():
    # DensePose's POINT_LABEL_SYMMETRIES (labels 0..24)
    densepose = [0, 1, 2, 4, 3, 6, 5, 8, 7, 10, 9, 12, 11, 14, 13, 16, 15, 18, 17, 20, 19, 22, 21, 24, 23]
    assert FLIP_LABELS.tolist() == densepose
    assert [FLIP_PERMUTATION[p] for p in FLIP_PERMUTATION] == list(range(24))
    for p, q in enumerate(FLIP_PERMUTATION):
        swapped = PART_NAMES[p].replace("left", "#").replace("right", "left").replace("#", "right")
        assert swapped == PART_NAMES[q]
    assert [p for p in range(24) if FLIP_MIRROR_V[p]] == [0, 1]


def test_flip_moves_pairs_and_mirrors_torso_columns():
    rng = np.random.default_rng(5)
    S = 4
    dsap = rng.integers(0, 256, (24, 3, S, S), dtype=np.uint8)
    valid = rng.random((24, S, S)) < 0.5
    fd, fv = flip_dsap(dsap, valid)
    assert np.array_equal(fd[3], dsap[2]) and np.array_equal(fd[2], dsap[3])  # hands swap, no mirror
    assert np.array_equal(fd[22], dsap[23]) and np.array_equal(fv[23], valid[22])  # head halves
    assert np.array_equal(fd[0], dsap[0][:, :, ::-1]) and np.array_equal(fv[1], valid[1][:, ::-1])
    assert np.array_equal(fd[0, :, 1, 0], dsap[0, :, 1, S - 1])  # column c -> S - 1 - c, rows (U) kept


@settings(max_examples=25, deadline=None)
@given(hnp.arrays(np.uint8, (2, 24, 3, 4, 4)), hnp.arrays(bool, (2, 24, 4, 4)))
def test_flip_is_an_involution(dsap, valid):
    fd, fv = flip_dsap(dsap, valid)
    bd, bv = flip_dsap(fd, fv)
    assert np.array_equal(bd, dsap) and np.array_equal(bv, valid)
    assert fd.shape == dsap.shape and fv.shape == valid.shape


def symmetric_person_iuv(rng, H, W, S):
    """IUV of a mirror-symmetric person: column W-1-x is the flip image of column x.

    Left half: random parts, random u, v at cell centres. Right half: the mirrored
    part (left <-> right) with the same u, and v -> 1 - v on the torso charts.
    """
    half = W // 2
    i = np.zeros((H, W), np.uint8)
    u = np.zeros((H, W), np.float32)
    v = np.zeros((H, W), np.float32)
    i[:, :half] = rng.integers(0, 25, (H, half))
    u[:, :half] = rng.random((H, half))
    v[:, :half] = (rng.integers(0, S, (H, half)) + 0.5) / S
    mirrored = np.array([0] + [p + 1 for p in FLIP_PERMUTATION])[i[:, :half]]
    i[:, half:] = mirrored[:, ::-1]
    u[:, half:] = u[:, :half][:, ::-1]
    v_m = np.where(np.isin(mirrored, [1, 2]), 1 - v[:, :half], v[:, :half])
    v[:, half:] = v_m[:, ::-1]
    return i, u, v


@pytest.mark.parametrize("seed", range(5))
def test_flip_matches_warping_the_flipped_image(seed):
    rng = np.random.default_rng(seed)
    H, W, S = 12, 10, 8
    image = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
    i, u, v = symmetric_person_iuv(rng, H, W, S)
    # the person is symmetric, so the flipped image has the same IUV map
    fi, fu, fv = flip_iuv(i, u, v)
    assert np.array_equal(fi, i) and np.array_equal(fu, u) and np.allclose(fv, v)
    d, valid = warp_dsap(image, i, u, v, S=S)
    d_flipped_image, valid_flipped_image = warp_dsap(image[:, ::-1], i, u, v, S=S)
    fd, fvalid = flip_dsap(d, valid)
    assert np.array_equal(fvalid, valid_flipped_image)
    assert np.array_equal(fd, d_flipped_image)


def test_flip_iuv_uint16_codes_commute_with_warp():
    rng = np.random.default_rng(9)
    H, W, S = 7, 9, 32
    image = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
    i = rng.integers(0, 25, (H, W)).astype(np.uint8)
    u, v = encode_uv(rng.random((H, W))), encode_uv(rng.random((H, W)))
    fi, fu, fv = flip_iuv(i, u, v)
    assert fv.dtype == np.uint16 and fi.tolist()[0][::-1] == FLIP_LABELS[i[0]].tolist()
    d_flip = warp_dsap(image[:, ::-1], fi, fu, fv, S=S)
    expected = flip_dsap(*warp_dsap(image, i, u, v, S=S))
    assert np.array_equal(d_flip[0], expected[0]) and np.array_equal(d_flip[1], expected[1])


def test_flip_rejects_inconsistent_mirror_flags():
    d = np.zeros((24, 3, 2, 2), np.uint8)
    val = np.zeros((24, 2, 2), bool)
    flags = [False] * 24
    flags[2] = True  # right hand mirrored but not left hand
    with pytest.raises(ValueError):
        flip_dsap(d, val, mirror_v=flags)
    with pytest.raises(ValueError):
        flip_dsap(d, val[:, :1])
    # an override that mirrors every chart is still an involution
    all_mirror = [True] * 24
    rng = np.random.default_rng(0)
    d = rng.integers(0, 256, (24, 3, 2, 2), dtype=np.uint8)
    fd, fv = flip_dsap(*flip_dsap(d, val, mirror_v=all_mirror), mirror_v=all_mirror)
    assert np.array_equal(fd, d)


def test_out_of_range_and_nan_uv_clip_like_uv_cell_and_signed_parts_checked():
    """The compiled kernel clips u/v as priors.iuv.uv_cell does (NaN -> 0, <0 -> 0, >1 -> S-1),
    in float64 as well as float32, and rejects negative part indices of signed dtypes."""
    rng = np.random.default_rng(3)
    image = rng.integers(0, 256, (4, 5, 3), dtype=np.uint8)
    i = np.array([[1, 2, 3, 4, 5]] * 4, np.int16)
    u = np.array([[np.nan, -0.5, 1.5, 0.3, 1.0]] * 4, np.float64)
    v = np.array([[0.2, np.nan, -3.0, 7.0, 0.99]] * 4, np.float64)
    d, valid = warp_dsap(image, i, u, v, S=6)
    clip = lambda a: np.where(np.isnan(a), 0.0, np.clip(a, 0, 1))  # noqa: E731
    rd, rv = reference_warp(image, i, clip(u), clip(v), 6)
    assert np.array_equal(d, rd) and np.array_equal(valid, rv)
    assert valid[0, 0, 1] and valid[1, 0, 0] and valid[2, 5, 0] and valid[3, 1, 5]
    with pytest.raises(ValueError, match="0..24"):
        warp_dsap(image, np.where(i == 3, -1, i).astype(np.int16), u, v, S=6)

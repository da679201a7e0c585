"""MPN coarse strip prior (Sec. 3.2, Fig. 5(a)) on hand-made parsing / segmentation maps.

Maps are 32 x 16 pixels with stride 4, so the feature map is 8 x 4 and every
feature cell is a 4 x 4 block: a cell is foreground when >= 8 of its 16 pixels
are person. Dilation with the 1 x 2 kernel copies column x-1 into column x.
"""
import cv2
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from priors.estimators import CoarseParsing as P
from priors.mpn_prior import (
    FALLBACK_REASONS,
    area_coverage,
    coarse_strip_prior,
    coarse_strip_prior_batch,
    dilate,
    feature_map_size,
    min_pixels,
    strip_boundaries,
)

H, W, STRIDE = 32, 16, 4
FEAT = feature_map_size((H, W), STRIDE)  # (8, 4)


def cells(label_map, rows, cols, label):
    """Paint whole 4 x 4 feature cells rows x cols (inclusive python ranges)."""
    label_map[rows.start * 4 : rows.stop * 4, cols.start * 4 : cols.stop * 4] = label


def person(head=True, left_leg=True, right_leg=True):
    """Head at cell row 1, torso rows 2-4, legs rows 5-6, in cell columns 1-2."""
    p = np.zeros((H, W), np.uint8)
    cells(p, range(1, 2), range(1, 3), P.HEAD if head else P.OTHER)
    cells(p, range(2, 5), range(1, 3), P.OTHER)
    cells(p, range(5, 7), range(1, 2), P.RIGHT_LEG if right_leg else P.BACKGROUND)
    cells(p, range(5, 7), range(2, 3), P.LEFT_LEG if left_leg else P.BACKGROUND)
    return p


def expected_mask(rows_cols):
    m = np.zeros(FEAT, np.uint8)
    for r, c in rows_cols:
        m[r, c] = 1
    return m


BODY = [(r, c) for r in range(1, 7) for c in (1, 2, 3)]  # cols 1-2 + dilation into col 3


def test_feature_map_size_paper_and_ceil_rule():
    assert feature_map_size((384, 128)) == (24, 8)
    assert feature_map_size((384, 128), 32) == (12, 4)
    assert feature_map_size((385, 129)) == (25, 9)
    assert feature_map_size((1, 1)) == (1, 1)


def _resnet_strides():
    # stem conv 7x7/2 pad 3, max-pool 3x3/2 pad 1, layer2 and layer3 3x3/2 pad 1, layer4 stride 1 (Sec. 3.3)
    return torch.nn.Sequential(
        torch.nn.Conv2d(1, 1, 7, 2, 3), torch.nn.MaxPool2d(3, 2, 1), torch.nn.Conv2d(1, 1, 3, 2, 1), torch.nn.Conv2d(1, 1, 3, 2, 1)
    )


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 300), st.integers(1, 200))
def test_feature_map_size_matches_resnet_arithmetic(h, w):
    with torch.no_grad():
        out = _resnet_strides()(torch.zeros(1, 1, h, w))
    assert feature_map_size((h, w), 16) == tuple(out.shape[-2:])


def test_both_tools_agree():
    p = person()
    pr = coarse_strip_prior(p, p != 0, FEAT)
    np.testing.assert_array_equal(pr.mask, expected_mask(BODY))
    assert (pr.upper, pr.lower, pr.fallback, pr.reason) == (1, 6, False, "")
    assert pr.upper_frac == pytest.approx(1 / 8) and pr.lower_frac == pytest.approx(7 / 8)
    assert (pr.head_px, pr.left_leg_px, pr.right_leg_px) == (32, 32, 32)
    np.testing.assert_array_equal(pr.strips, [[k, k + 1] for k in range(1, 7)])


def test_union_recovers_accessory_missed_by_parsing():
    p = person()
    seg = p != 0
    seg[0:4, 4:12] = True  # an umbrella above the head: only segmentation sees it (cell row 0)
    seg[8:16, 0:4] = True  # a backpack left of the torso: cell rows 2-3, column 0
    pr = coarse_strip_prior(p, seg, FEAT)
    assert (pr.upper, pr.lower, pr.fallback) == (0, 6, False)
    np.testing.assert_array_equal(pr.mask, expected_mask(BODY + [(0, 1), (0, 2), (0, 3), (2, 0), (3, 0)]))
    parsing_only = coarse_strip_prior(p, np.zeros_like(seg), FEAT)
    assert (parsing_only.upper, parsing_only.lower) == (1, 6)


def test_union_recovers_legs_missed_by_segmentation():
    p = person()
    seg = np.zeros((H, W), bool)
    seg[4:20, 4:12] = True  # segmentation lost the legs (cell rows 1-4)
    pr = coarse_strip_prior(p, seg, FEAT)
    assert (pr.upper, pr.lower) == (1, 6)
    np.testing.assert_array_equal(pr.mask, expected_mask(BODY))


@pytest.mark.parametrize(
    "kwargs, reason",
    [
        (dict(head=False), "head_missing"),
        (dict(left_leg=False, right_leg=False), "legs_missing"),
        (dict(head=False, left_leg=False, right_leg=False), "head_and_legs_missing"),
    ],
)
def test_missing_parts_fall_back_to_whole_image(kwargs, reason):
    p = person(**kwargs)
    pr = coarse_strip_prior(p, p != 0, FEAT)
    assert (pr.fallback, pr.reason, pr.upper, pr.lower) == (True, reason, 0, 7)
    assert (pr.upper_frac, pr.lower_frac) == (0.0, 1.0)
    # [0, 8) into 6 at floor(8k/6): 0, 1, 2, 4, 5, 6, 8
    np.testing.assert_array_equal(pr.strips, [[0, 1], [1, 2], [2, 4], [4, 5], [5, 6], [6, 8]])
    assert pr.mask.sum() > 0  # the union mask is kept for the background suppression of Fig. 5(b)


@pytest.mark.parametrize("kwargs", [dict(left_leg=False), dict(right_leg=False)])
def test_one_leg_is_enough(kwargs):
    p = person(**kwargs)
    pr = coarse_strip_prior(p, p != 0, FEAT)
    assert not pr.fallback and (pr.upper, pr.lower) == (1, 6)
    assert (pr.left_leg_px == 0) == ("left_leg" in kwargs)


def test_presence_threshold_is_a_fraction_of_image_area():
    assert min_pixels(0.005, (32, 16)) == 3  # ceil(2.56)
    assert min_pixels(0.002, (384, 128)) == 99  # ceil(98.304)
    assert min_pixels(0.0, (10, 10)) == 1
    p = person(head=False)
    p[5, 6:9] = P.HEAD  # exactly 3 head pixels
    assert not coarse_strip_prior(p, p != 0, FEAT, head_min_frac=0.005).fallback
    p[5, 8] = P.OTHER  # 2 head pixels
    assert coarse_strip_prior(p, p != 0, FEAT, head_min_frac=0.005).reason == "head_missing"


def test_binarise_at_half_a_cell():
    p = person()
    seg = p != 0
    seg[28:30, 8:12] = True  # 8 of 16 px of cell (7, 2): foreground
    seg[28:30, 4:7] = True  # 6 of 16 px of cell (7, 1): background
    seg[30, 4] = True  # 7 of 16 px: still background
    pr = coarse_strip_prior(p, seg, FEAT)
    np.testing.assert_array_equal(pr.mask, expected_mask(BODY + [(7, 2), (7, 3)]))
    assert pr.lower == 7


def test_dilation_by_hand_and_borders():
    m = np.array([[1, 0, 0, 1], [0, 1, 0, 0], [0, 0, 0, 0]], bool)[None]
    want = np.array([[1, 1, 0, 1], [0, 1, 1, 0], [0, 0, 0, 0]], bool)  # grows right; nothing wraps or spills
    np.testing.assert_array_equal(dilate(m)[0], want)
    assert dilate(m).dtype == bool and dilate(m, (1, 1)).tolist() == m.tolist()


@pytest.mark.parametrize("kernel", [(1, 2), (2, 1), (1, 3), (2, 2), (3, 3), (2, 5)])
def test_dilation_matches_opencv_default_anchor(kernel):
    rng = np.random.default_rng(sum(kernel))
    m = rng.random((5, 7, 6)) < 0.2
    ref = np.stack([cv2.dilate(x.view(np.uint8), np.ones(kernel, np.uint8)) for x in m]).astype(bool)
    np.testing.assert_array_equal(dilate(m, kernel), ref)


def test_empty_mask_with_head_and_leg_falls_back_with_all_ones_mask():
    p = np.zeros((H, W), np.uint8)
    p[0:8:2, 0:16:2] = P.HEAD  # 32 scattered head pixels: 4 per cell at most
    p[16:32:2, 0:16:2] = P.LEFT_LEG
    pr = coarse_strip_prior(p, np.zeros((H, W), bool), FEAT)
    assert (pr.fallback, pr.reason, pr.upper, pr.lower) == (True, "empty_mask", 0, 7)
    np.testing.assert_array_equal(pr.mask, np.ones(FEAT, np.uint8))


def test_strip_boundaries_rounding():
    np.testing.assert_array_equal(strip_boundaries(0, 23, 6), [[0, 4], [4, 8], [8, 12], [12, 16], [16, 20], [20, 24]])
    np.testing.assert_array_equal(strip_boundaries(3, 9, 6), [[3, 4], [4, 5], [5, 6], [6, 7], [7, 8], [8, 10]])
    np.testing.assert_array_equal(strip_boundaries(5, 6, 3), [[5, 5], [5, 6], [6, 7]])
    with pytest.raises(ValueError):
        strip_boundaries(4, 3, 6)


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 40), st.integers(0, 40), st.integers(1, 12))
def test_strips_partition_the_roi(upper, extra, K):
    s = strip_boundaries(upper, upper + extra, K)
    n = extra + 1
    assert s[0, 0] == upper and s[-1, 1] == upper + n
    np.testing.assert_array_equal(s[1:, 0], s[:-1, 1])
    sizes = s[:, 1] - s[:, 0]
    assert set(sizes.tolist()) <= {n // K, -(-n // K)} and sizes.sum() == n


def test_area_coverage_exact_for_non_integer_scale():
    from fractions import Fraction

    rng = np.random.default_rng(1)
    m = rng.random((2, 10, 7)) < 0.5
    cov, area = area_coverage(m, (4, 3))
    for b in range(2):
        for i in range(4):
            for j in range(3):
                y0, y1 = Fraction(i * 10, 4), Fraction((i + 1) * 10, 4)
                x0, x1 = Fraction(j * 7, 3), Fraction((j + 1) * 7, 3)
                tot = sum(
                    max(0, min(y1, r + 1) - max(y0, r)) * max(0, min(x1, c + 1) - max(x0, c))
                    for r in range(10) for c in range(7) if m[b, r, c]
                )
                assert Fraction(int(cov[b, i, j]), area) == tot / ((y1 - y0) * (x1 - x0))


def naive_prior(parsing, seg, feat_hw, K=6, head_frac=0.005, leg_frac=0.002):  # defaults = HEAD/LEG_MIN_FRAC
    """Straightforward reference: cv2 INTER_AREA, >= 0.5, cv2.dilate(1x2), first/last nonzero rows."""
    Hh, Ww = parsing.shape
    h, w = feat_hw
    need_head = max(1, int(np.ceil(head_frac * Hh * Ww - 1e-9)))
    need_leg = max(1, int(np.ceil(leg_frac * Hh * Ww - 1e-9)))
    head = int((parsing == P.HEAD).sum())
    legs = int((parsing == P.LEFT_LEG).sum()), int((parsing == P.RIGHT_LEG).sum())
    union = ((parsing != 0) | seg).astype(np.float64)
    # OpenCV uses float32 area weights: exact half-covered cells can land at 0.4999999
    small = (cv2.resize(union, (w, h), interpolation=cv2.INTER_AREA) >= 0.5 - 1e-6).astype(np.uint8)
    mask = cv2.dilate(small, np.ones((1, 2), np.uint8))
    rows = np.flatnonzero(mask.any(axis=1))
    fallback = head < need_head or max(legs) < need_leg or len(rows) == 0
    if len(rows) == 0:
        mask[:] = 1
    up, lo = (0, h - 1) if fallback else (rows[0], rows[-1])
    strips = [(up + k * (lo - up + 1) // K, up + (k + 1) * (lo - up + 1) // K) for k in range(K)]
    return mask, (up, lo), fallback, strips


def plausible_maps(rng, B, Hh, Ww):
    """Random pedestrians: an ellipse body with a head blob and legs, sometimes parts removed, noisy segmentation."""
    yy, xx = np.mgrid[0:Hh, 0:Ww]
    parsing = np.zeros((B, Hh, Ww), np.uint8)
    seg = np.zeros((B, Hh, Ww), bool)
    for b in range(B):
        top, bottom = rng.uniform(0, 0.25) * Hh, rng.uniform(0.7, 1.05) * Hh
        cx, half = rng.uniform(0.35, 0.65) * Ww, rng.uniform(0.15, 0.35) * Ww
        body = (np.abs(xx - cx) < half) & (yy >= top) & (yy < bottom)
        parsing[b][body] = P.OTHER
        head_end = top + 0.15 * (bottom - top) * rng.uniform(0, 1.3)
        parsing[b][body & (yy < head_end)] = P.HEAD
        leg_start = top + 0.6 * (bottom - top)
        if rng.random() < 0.8:
            parsing[b][body & (yy >= leg_start) & (xx < cx)] = P.RIGHT_LEG
        if rng.random() < 0.8:
            parsing[b][body & (yy >= leg_start) & (xx >= cx)] = P.LEFT_LEG
        seg[b] = (np.abs(xx - cx) < half * rng.uniform(0.8, 1.4)) & (yy >= top * rng.uniform(0.5, 1.2)) & (yy < bottom)
        seg[b] &= rng.random((Hh, Ww)) < 0.95
    return parsing, seg


@pytest.mark.parametrize("hw, stride", [((384, 128), 16), ((96, 32), 4), ((100, 45), 8)])
def test_batch_matches_naive_opencv_loop_and_single(hw, stride):
    rng = np.random.default_rng(hw[0])
    parsing, seg = plausible_maps(rng, 24, *hw)
    feat = feature_map_size(hw, stride)
    out = coarse_strip_prior_batch(parsing, seg, feat)
    assert out["mask"].shape == (24, *feat) and out["mask"].dtype == np.uint8
    assert out["roi"].dtype == np.int16 and out["strips"].shape == (24, 6, 2)
    assert 0 < out["fallback"].sum() < 24  # the sample exercises both branches
    for b in range(24):
        mask, roi, fallback, strips = naive_prior(parsing[b], seg[b], feat)
        np.testing.assert_array_equal(out["mask"][b], mask)
        assert tuple(out["roi"][b]) == roi and out["fallback"][b] == fallback
        np.testing.assert_array_equal(out["strips"][b], strips)
        one = coarse_strip_prior(parsing[b], seg[b], feat)
        np.testing.assert_array_equal(one.mask, out["mask"][b])
        assert (one.upper, one.lower, one.reason, one.head_px) == (*roi, out["reason"][b], out["head_px"][b])
        assert one.reason in FALLBACK_REASONS and (one.reason != "") == fallback


@settings(max_examples=80, deadline=None)
@given(st.integers(1, 40), st.integers(1, 20), st.integers(1, 10), st.integers(1, 6), st.integers(0, 2**32 - 1))
def test_prior_properties(Hh, Ww, h, w, seed):
    rng = np.random.default_rng(seed)
    parsing = rng.choice(5, size=(3, Hh, Ww), p=[0.5, 0.1, 0.1, 0.1, 0.2]).astype(np.uint8)
    seg = rng.random((3, Hh, Ww)) < 0.3
    out = coarse_strip_prior_batch(parsing, seg, (h, w), K=4, head_min_frac=0.05, leg_min_frac=0.05)
    up, lo = out["roi"][:, 0], out["roi"][:, 1]
    assert ((0 <= up) & (up <= lo) & (lo < h)).all()
    np.testing.assert_array_equal(out["strips"][:, 0, 0], up)
    np.testing.assert_array_equal(out["strips"][:, -1, 1], lo + 1)
    np.testing.assert_array_equal(out["strips"][:, 1:, 0], out["strips"][:, :-1, 1])
    for b in range(3):
        m = out["mask"][b]
        if out["fallback"][b]:
            assert (up[b], lo[b]) == (0, h - 1)
        else:
            rows = np.flatnonzero(m.any(axis=1))
            assert (rows[0], rows[-1]) == (up[b], lo[b])
        assert out["head_px"][b] == (parsing[b] == P.HEAD).sum()
        if h <= Hh and w <= Ww:  # shrinking: INTER_AREA is a box average (it interpolates when enlarging)
            mask, roi, fallback, _ = naive_prior(parsing[b], seg[b], (h, w), 4, 0.05, 0.05)
            np.testing.assert_array_equal(m, mask)
            assert (tuple(out["roi"][b]), out["fallback"][b]) == (roi, fallback)


def test_empty_batch_keeps_keys_and_shapes():
    full = coarse_strip_prior_batch(np.zeros((1, 8, 4), np.uint8), np.zeros((1, 8, 4), bool), (2, 1))
    empty = coarse_strip_prior_batch(np.zeros((0, 8, 4), np.uint8), np.zeros((0, 8, 4), bool), (2, 1))
    assert empty.keys() == full.keys()
    for key in full:
        assert empty[key].shape == (0, *full[key].shape[1:]) and empty[key].dtype == full[key].dtype


def test_shape_errors():
    with pytest.raises(ValueError):
        coarse_strip_prior_batch(np.zeros((2, 8, 4), np.uint8), np.zeros((2, 8, 5), bool), (2, 1))
    with pytest.raises(ValueError):
        coarse_strip_prior(np.zeros((1, 8, 4), np.uint8), np.zeros((1, 8, 4), bool), (2, 1))

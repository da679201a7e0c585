"""bench/bench_pose_quality.py (issue 13): the yardstick's scores, its true joints and the GrabCut alternative.

The benchmark itself runs in bench/ (BENCHMARKS.md); here its pieces, with hand-computed expectations."""
from __future__ import annotations

import numpy as np
import pytest
from conftest import bench_module


@pytest.fixture(scope="module")
def bench():
    with bench_module("bench_pose_quality") as mod:
        yield mod


def front_skeleton() -> np.ndarray:
    """33 landmarks of a person facing the camera (left side on the image's right, nose 200 px nearer than
    the shoulders), torso 80 px."""
    lm = np.zeros((33, 4))
    lm[:, 3] = 1.0
    lm[:, :2] = (64.0, 40.0)
    for left, right, y in ((11, 12, 60), (13, 14, 100), (15, 16, 130), (23, 24, 140), (25, 26, 190), (27, 28, 240)):
        lm[left, :2], lm[right, :2] = (84.0, y), (44.0, y)
    lm[0, 2] = -200.0
    return lm


def test_part_iou_pools_pixels_over_images(bench):
    est = np.array([[[1, 1, 2, 0]], [[1, 0, 0, 0]]], np.uint8)
    gt = np.array([[[1, 2, 2, 0]], [[1, 1, 0, 0]]], np.uint8)
    ious = bench.part_iou(est, gt)
    assert ious[0] == pytest.approx(2 / 4)  # part 1: 2 shared pixels, 4 in the union over both images
    assert ious[1] == pytest.approx(1 / 2)
    assert np.isnan(ious[2:]).all()  # parts in neither map do not count


def test_landmark_error_is_in_torso_lengths_after_the_sides_are_canonical(bench):
    truth = front_skeleton()
    shifted = truth.copy()
    shifted[:, 0] += 8.0  # 0.1 of the 80 px torso
    from priors.backends.pose_geometry import FLIP_LANDMARKS

    err = bench.landmark_error(np.stack([shifted, truth[FLIP_LANDMARKS], truth]), np.stack([truth] * 3),
                               np.array([True, True, False]), 256)
    assert err[0] == pytest.approx(0.1)
    # mediapipe's left/right labels swapped on a face seen from the front (the nose is nearer): put back first
    assert err[1] == pytest.approx(0.0)
    assert np.isnan(err[2])  # no pose found


def test_grabcut_drops_background_the_person_mask_swallowed(bench):
    image = np.full((256, 128, 3), 40, np.uint8)  # dark background
    image[30:250, 40:90] = (200, 170, 140)  # the person, one bright colour
    prob = np.zeros((256, 128), np.float32)
    prob[30:250, 40:90] = 0.95
    prob[150:250, 90:110] = 0.7  # the mask spills onto the background beside the legs
    out = bench.grabcut_mask(image, prob, front_skeleton())
    person = np.zeros((256, 128), bool)
    person[30:250, 40:90] = True
    assert bench.mask_iou(out[None], person[None])[0] > 0.97
    assert not out[150:250, 95:110].any()
    assert bench.mask_iou((prob >= 0.5)[None], person[None])[0] == pytest.approx(11000 / 13000)

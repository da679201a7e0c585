"""Box-frame DensePose chart results -> image-frame IUV (priors/densepose_charts.py)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from priors.densepose_charts import (
    LOW_CROP_IOU,
    NO_PARTS,
    NO_PERSON,
    best_instance_iuv,
    crop_iou,
    paste_chart,
    select_instance,
)


@dataclass
class Chart:  # attribute names of DensePose's DensePoseChartResult
    labels: np.ndarray
    uv: np.ndarray


def chart(labels, u=None, v=None):
    labels = np.asarray(labels)
    u = np.full(labels.shape, 0.5) if u is None else np.asarray(u, float)
    v = np.full(labels.shape, 0.25) if v is None else np.asarray(v, float)
    return Chart(labels, np.stack([u, v]))


def test_crop_iou_hand_values():
    boxes = [[0, 0, 50, 100], [0, 0, 25, 100], [-25, 0, 25, 100], [10, 10, 10, 50], [60, 0, 80, 100]]
    iou = crop_iou(boxes, height=100, width=50)
    assert iou.tolist() == pytest.approx([1.0, 0.5, 2500 / 7500, 0.0, 0.0])
    assert crop_iou(np.zeros((0, 4)), 10, 10).shape == (0,)


def test_select_instance_prefers_coverage_then_score_then_index():
    boxes = np.array([[0, 0, 20, 50], [2, 1, 48, 99], [0, 0, 50, 50]], float)
    assert select_instance(boxes, 100, 50)[0] == 1
    same = np.array([[0, 0, 25, 100], [25, 0, 50, 100], [0, 0, 25, 100]], float)
    assert select_instance(same, 100, 50, scores=[0.5, 0.9, 0.9])[0] == 1
    assert select_instance(same, 100, 50)[0] == 0  # all tied: lowest index
    assert select_instance(same, 100, 50, scores=torch.tensor([0.9, 0.5, 0.9]))[0] == 0
    k, iou = select_instance(boxes[:1], 100, 50, min_iou=0.5)
    assert k is None and iou == pytest.approx(0.2)
    assert select_instance(np.zeros((0, 4)), 100, 50) == (None, 0.0)
    with pytest.raises(ValueError):
        select_instance(boxes, 100, 50, scores=[0.1])


def test_paste_exact_with_fractional_box():
    labels = np.array([[1, 2], [0, 3], [4, 5]])  # h=3, w=2
    u = np.array([[0.1, 0.2], [0.3, 0.4], [0.5, 1.2]])
    v = np.array([[0.6, 0.7], [0.8, 0.9], [-0.1, 1.0]])
    # box anchored at floor(2.7) = 2, floor(1.2) = 1 (DensePose's int() of a positive coordinate)
    i_img, u_img, v_img = paste_chart(labels, np.stack([u, v]), (2.7, 1.2, 4.9, 4.5), (6, 5))
    expected = np.zeros((6, 5), np.uint8)
    expected[1:4, 2:4] = labels
    assert i_img.dtype == np.uint8 and u_img.dtype == np.float32
    assert np.array_equal(i_img, expected)
    assert u_img[1, 2] == np.float32(0.1) and v_img[1, 3] == np.float32(0.7)
    assert u_img[2, 2] == 0 and v_img[2, 2] == 0  # background label: uv zeroed (was 0.3, 0.8)
    assert u_img[3, 3] == 1.0 and v_img[3, 2] == 0.0  # clipped to [0, 1]
    assert u_img[0].sum() == 0 and i_img[:, :2].sum() == 0


def test_paste_box_partly_outside_image():
    labels = np.arange(1, 13).reshape(3, 4)  # labels 1..12
    # anchor (floor(-1.5), floor(-0.5)) = (-2, -1): chart (r, c) -> image (r - 1, c - 2)
    i_img, _, _ = paste_chart(labels, np.zeros((2, 3, 4)), (-1.5, -0.5, 2.5, 2.5), (2, 3))
    assert i_img.tolist() == [[7, 8, 0], [11, 12, 0]]
    # anchored beyond the bottom-right corner: only the overlap is pasted
    i_img, _, _ = paste_chart(labels, np.zeros((2, 3, 4)), (2.0, 1.0, 6.0, 4.0), (2, 3))
    assert i_img.tolist() == [[0, 0, 0], [0, 0, 1]]
    # fully outside: nothing
    i_img, _, _ = paste_chart(labels, np.zeros((2, 3, 4)), (10, 10, 14, 13), (2, 3))
    assert not i_img.any()


def test_paste_upscales_box_found_on_smaller_image():
    labels = np.array([[1, 2], [3, 4]])
    u = np.array([[0.1, 0.2], [0.3, 0.4]])
    # boxes in a 2x2 frame, output 4x4: box_scale = 2/4
    i_img, u_img, _ = paste_chart(labels, np.stack([u, u]), (0, 0, 2, 2), (4, 4), box_scale=(0.5, 0.5))
    assert i_img.tolist() == [[1, 1, 2, 2], [1, 1, 2, 2], [3, 3, 4, 4], [3, 3, 4, 4]]
    assert u_img[3, 0] == np.float32(0.3)


def test_paste_downscales_box_found_on_larger_image():
    labels = np.arange(1, 17).reshape(4, 4)
    # boxes in an 8x8 frame (chart at (2, 2)..(6, 6)), output 4x4: scale 2, pixel centre y+0.5 -> 2y+1
    i_img, _, _ = paste_chart(labels, np.zeros((2, 4, 4)), (2, 2, 6, 6), (4, 4), box_scale=(2.0, 2.0))
    # output rows/cols 1, 2 map to frame 3, 5 -> chart 1, 3; rows/cols 0, 3 map to 1, 7 -> outside
    assert i_img.tolist() == [[0, 0, 0, 0], [0, 6, 8, 0], [0, 14, 16, 0], [0, 0, 0, 0]]


def test_paste_accepts_torch_tensors_and_validates():
    labels = torch.tensor([[0, 24], [5, 1]], dtype=torch.long)
    uv = torch.rand(2, 2, 2)
    i_img, u_img, v_img = paste_chart(labels, uv, torch.tensor([0.0, 0.0, 2.0, 2.0]), (2, 2))
    assert i_img.tolist() == [[0, 24], [5, 1]]
    assert u_img[0, 1] == uv[0, 0, 1].item() and v_img[1, 0] == uv[1, 1, 0].item()
    with pytest.raises(ValueError):
        paste_chart(np.array([[25]]), np.zeros((2, 1, 1)), (0, 0, 1, 1), (2, 2))
    with pytest.raises(ValueError):
        paste_chart(np.zeros((2, 2)), np.zeros((2, 3, 2)), (0, 0, 1, 1), (2, 2))


@settings(max_examples=60, deadline=None)
@given(
    st.integers(1, 6), st.integers(1, 6), st.integers(1, 7), st.integers(1, 7),
    st.floats(-8, 8, allow_nan=False), st.floats(-8, 8, allow_nan=False), st.integers(0, 2**31 - 1),
)  # fmt: skip
def test_paste_matches_per_pixel_reference(h, w, H, W, x0, y0, seed):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 25, (h, w))
    uv = rng.random((2, h, w))
    i_img, u_img, _ = paste_chart(labels, uv, (x0, y0, x0 + w, y0 + h), (H, W))
    ax, ay = int(np.floor(x0)), int(np.floor(y0))
    for y in range(H):
        for x in range(W):
            r, c = y - ay, x - ax
            inside = 0 <= r < h and 0 <= c < w
            assert i_img[y, x] == (labels[r, c] if inside else 0)
            assert u_img[y, x] == (np.float32(uv[0, r, c]) if inside and labels[r, c] else 0)


def test_best_instance_iuv_picks_crop_person_and_pastes():
    H, W = 8, 4
    person = chart(np.full((8, 4), 2))
    bystander = chart(np.full((3, 2), 7))
    boxes = np.array([[2, 0, 4, 3], [0, 0, 4, 8]], float)
    i, u, v, status = best_instance_iuv(boxes, [bystander, person], (H, W), (H, W), scores=[0.99, 0.8])
    assert status == "ok" and np.all(i == 2) and np.all(u == 0.5) and np.all(v == 0.25)
    # only the chosen chart is requested from a callable source
    asked = []
    best_instance_iuv(boxes, lambda k: asked.append(k) or [bystander, person][k], (H, W), (H, W))
    assert asked == [1]
    # frame of the original 8x4 crop, output a 16x8 store image
    i2, _, _, status = best_instance_iuv(boxes, [bystander, person], (H, W), (16, 8))
    assert status == "ok" and i2.shape == (16, 8) and np.all(i2 == 2)


def test_best_instance_iuv_statuses():
    shape = (6, 4)
    empty = best_instance_iuv(np.zeros((0, 4)), [], shape, shape)
    assert empty[3] == NO_PERSON and not empty[0].any() and empty[1].shape == shape
    low = best_instance_iuv(np.array([[0, 0, 1, 1.0]]), [chart([[3]])], shape, shape, min_iou=0.5)
    assert low[3] == LOW_CROP_IOU and not low[0].any()
    no_parts = best_instance_iuv(np.array([[0, 0, 4, 6.0]]), [chart(np.zeros((6, 4), int))], shape, shape)
    assert no_parts[3] == NO_PARTS

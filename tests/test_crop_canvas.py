"""Canvas tiling of re-ID crops: placement, and detections split back per crop (no detectron2)."""
from __future__ import annotations

import numpy as np
import pytest

from priors.crop_canvas import canvas_layout, split_detections, tile_crops


def test_layout_pitch_is_tile_plus_gap_rounded_to_the_grid():
    lay = canvas_layout((400, 200), rows=2, cols=4, gap=32)
    assert (lay.height, lay.width, lay.slots) == (448 + 400, 3 * 256 + 200, 8)
    assert lay.origins.tolist() == [[0, 0], [0, 256], [0, 512], [0, 768], [448, 0], [448, 256], [448, 512], [448, 768]]
    assert np.all(lay.origins % 32 == 0)
    lone = canvas_layout((37, 20), rows=1, cols=1, gap=0)
    assert (lone.height, lone.width) == (37, 20) and lone.origins.tolist() == [[0, 0]]
    with pytest.raises(ValueError):
        canvas_layout((0, 20), 1, 1)


def test_tile_crops_places_each_crop_and_fills_the_rest():
    lay = canvas_layout((3, 2), rows=2, cols=2, gap=1, align=4)  # pitch (4, 4), canvas 7x6
    tiles = np.arange(3 * 3 * 2 * 1).reshape(3, 3, 2, 1) + 1
    canvas = tile_crops(tiles, lay, fill=-1)
    assert canvas.shape == (7, 6, 1)
    assert np.array_equal(canvas[0:3, 0:2], tiles[0]) and np.array_equal(canvas[0:3, 4:6], tiles[1])
    assert np.array_equal(canvas[4:7, 0:2], tiles[2])
    assert np.all(canvas[4:7, 4:6] == -1) and np.all(canvas[3] == -1) and np.all(canvas[:, 2:4] == -1)
    assert (canvas > 0).sum() == tiles.size  # every crop pixel once, nothing else
    with pytest.raises(ValueError):
        tile_crops(np.zeros((5, 3, 2, 1)), lay)
    with pytest.raises(ValueError):
        tile_crops(np.zeros((1, 2, 2, 1)), lay)


def test_split_detections_round_trips_boxes_placed_in_tiles():
    crop_hw, tile_hw = (128, 64), (400, 200)  # tile = crop scaled by 400/128 = 3.125
    lay = canvas_layout(tile_hw, rows=2, cols=3, gap=32)
    rng = np.random.default_rng(0)
    n = 5
    crop_boxes = np.sort(rng.uniform(0, 1, (n, 2, 2)), axis=1) * [64, 128]  # (x, y) corners inside the crop
    crop_boxes = crop_boxes.reshape(n, 4)
    scale = np.array([200 / 64, 400 / 128] * 2)
    canvas_boxes = crop_boxes * scale + np.tile(lay.origins[:n, ::-1], 2)
    slot, back = split_detections(canvas_boxes, lay, n, crop_hw)
    assert slot.tolist() == list(range(n))
    np.testing.assert_allclose(back, crop_boxes, atol=1e-9)


def test_split_detections_gap_empty_slot_and_clipping():
    lay = canvas_layout((40, 20), rows=1, cols=2, gap=12)  # pitch x = 32: tiles x in [0, 20) and [32, 52)
    boxes = np.array([
        [2.0, 4.0, 18.0, 36.0],    # inside tile 0
        [20.0, 0.0, 30.0, 10.0],   # centre x 25: in the gap
        [34.0, 0.0, 50.0, 40.0],   # tile 1, but only one crop on this canvas
        [-6.0, -4.0, 14.0, 44.0],  # centre in tile 0, spills outside: clipped to the crop
        [10.0, 30.0, 40.0, 46.0],  # centre (25, 38): gap
    ])
    slot, back = split_detections(boxes, lay, n_crops=1, crop_hw=(20, 10))  # tile -> crop scale 0.5
    assert slot.tolist() == [0, -1, -1, 0, -1]
    np.testing.assert_allclose(back[0], [1.0, 2.0, 9.0, 18.0])
    np.testing.assert_allclose(back[3], [0.0, 0.0, 7.0, 20.0])
    slot2, back2 = split_detections(boxes, lay, n_crops=2, crop_hw=(20, 10))
    assert slot2.tolist() == [0, -1, 1, 0, -1]
    np.testing.assert_allclose(back2[2], [1.0, 0.0, 9.0, 20.0])
    assert split_detections(np.zeros((0, 4)), lay, 2, (20, 10))[0].shape == (0,)

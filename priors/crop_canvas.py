"""Many re-ID crops side by side on one detector canvas, and the detections split back per crop.

A detector trained on COCO-size images (e.g. DensePose R-CNN: 800-pixel short
side) sees a 128x64 re-ID crop upscaled to 1333x667, so every crop costs a full
forward pass although the person needs a few hundred pixels. Here ``rows x
cols`` crops, each resized to a tile of ``tile_hw`` model pixels, share one
canvas and one forward pass; each detection is then handed back to the crop
whose tile holds its box centre, in that crop's own (store) frame, so the rest
of the bookkeeping (crop IoU, best instance, chart pasting) is the same as for
one crop per pass.

Pure functions on arrays (no torch, no detectron2):

* :func:`canvas_layout` — where each tile goes. Tile origins lie on a grid of
  ``align`` pixels (default 32, the largest FPN stride of detectron2's R-CNNs
  that the input is padded to), so every tile meets the same anchor grid and
  feature-cell phase as a lone crop placed at the origin; ``gap`` pixels of
  fill separate the tiles (boxes straddling tiles then stay rare).
* :func:`tile_crops` — paste resized crops into a canvas.
* :func:`split_detections` — canvas-frame boxes -> (crop index, box in that
  crop's frame, clipped to it as detectron2 clips to an image); boxes whose
  centre lies in a gap or an empty tile get crop index -1.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class CanvasLayout:
    """Tile placement on one canvas: tile ``k`` covers ``origins[k] + [0, tile_h) x [0, tile_w)``."""

    tile_h: int
    tile_w: int
    rows: int
    cols: int
    height: int  # canvas size
    width: int
    origins: np.ndarray  # (rows * cols, 2) int: (y0, x0), row-major

    @property
    def slots(self) -> int:
        return self.rows * self.cols


def _round_up(x: int, align: int) -> int:
    return -(-int(x) // align) * align


def canvas_layout(tile_hw: tuple[int, int], rows: int, cols: int, gap: int = 32, align: int = 32) -> CanvasLayout:
    """Layout of ``rows x cols`` tiles of ``tile_hw``: pitch = tile + gap rounded up to ``align``.

    E.g. tiles 400x200, gap 32, align 32 -> pitch (448, 256); 2x4 tiles -> canvas 848x968.
    """
    th, tw = (int(s) for s in tile_hw)
    if th < 1 or tw < 1 or rows < 1 or cols < 1 or gap < 0 or align < 1:
        raise ValueError(f"bad canvas layout: tile {tile_hw}, {rows}x{cols}, gap {gap}, align {align}")
    py, px = _round_up(th + gap, align), _round_up(tw + gap, align)
    r, c = np.divmod(np.arange(rows * cols), cols)
    origins = np.stack([r * py, c * px], axis=1).astype(np.int64)
    return CanvasLayout(th, tw, int(rows), int(cols), (rows - 1) * py + th, (cols - 1) * px + tw, origins)


def tile_crops(tiles: np.ndarray, layout: CanvasLayout, fill: float | np.ndarray = 0) -> np.ndarray:
    """Paste ``(n, tile_h, tile_w, C)`` resized crops (``n <= slots``) into a ``(height, width, C)`` canvas."""
    tiles = np.asarray(tiles)
    n = tiles.shape[0]
    if tiles.ndim != 4 or tiles.shape[1:3] != (layout.tile_h, layout.tile_w):
        raise ValueError(f"tiles must be (n, {layout.tile_h}, {layout.tile_w}, C), got {tiles.shape}")
    if n > layout.slots:
        raise ValueError(f"{n} tiles for a {layout.rows}x{layout.cols} canvas")
    canvas = np.empty((layout.height, layout.width, tiles.shape[3]), tiles.dtype)
    canvas[...] = fill
    for k in range(n):
        y0, x0 = layout.origins[k]
        canvas[y0 : y0 + layout.tile_h, x0 : x0 + layout.tile_w] = tiles[k]
    return canvas


def split_detections(
    boxes_xyxy: np.ndarray, layout: CanvasLayout, n_crops: int, crop_hw: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray]:
    """Canvas-frame detections -> ``(crop index (K,), boxes in the crop frame (K, 4))``.

    A detection belongs to the crop whose tile contains its box centre (-1 when
    the centre is in a gap, outside the canvas, or in a slot ``>= n_crops``).
    Its box is moved to the tile origin, scaled from tile to crop pixels
    (``crop_hw / tile_hw``) and clipped to ``[0, W] x [0, H]`` of the crop.
    """
    b = np.asarray(boxes_xyxy, dtype=np.float64).reshape(-1, 4)
    H, W = (int(s) for s in crop_hw)
    cx, cy = (b[:, 0] + b[:, 2]) / 2, (b[:, 1] + b[:, 3]) / 2
    pitch_y = layout.origins[layout.cols, 0] if layout.rows > 1 else layout.height
    pitch_x = layout.origins[1, 1] if layout.cols > 1 else layout.width
    r, c = np.floor(cy / pitch_y).astype(np.int64), np.floor(cx / pitch_x).astype(np.int64)
    inside = (r >= 0) & (r < layout.rows) & (c >= 0) & (c < layout.cols)
    inside &= (cy - r * pitch_y < layout.tile_h) & (cx - c * pitch_x < layout.tile_w)  # not in a gap
    slot = np.where(inside, r * layout.cols + c, -1)
    slot = np.where(slot < n_crops, slot, -1)
    origin = layout.origins[np.clip(slot, 0, None)][:, ::-1].astype(np.float64)  # (x0, y0)
    scale = np.array([W / layout.tile_w, H / layout.tile_h])
    out = (b.reshape(-1, 2, 2) - origin[:, None, :]) * scale
    out = np.clip(out, 0, [W, H]).reshape(-1, 4)
    return slot, out


__all__ = ["CanvasLayout", "canvas_layout", "tile_crops", "split_detections"]

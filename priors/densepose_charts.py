"""DensePose chart results -> IUV in the image frame (DSA-reID Sec. 3.1, "Dense semantics estimation").

DensePose (detectron2 ``projects/DensePose``) reports, per detected person, a
*chart result* in the frame of its bounding box: ``labels`` ``(h, w)`` integers
0..24 and ``uv`` ``(2, h, w)`` floats in [0, 1]. Its converter
(``densepose_chart_predictor_output_to_result``) sizes that frame from the XYXY
box as ``w = int(x1 - x0)``, ``h = int(y1 - y0)`` (at least 1) and anchors it at
integer pixel ``(int(x0), int(y0))``: chart pixel ``(r, c)`` *is* image pixel
``(int(y0) + r, int(x0) + c)``. ``apply_net.py dump`` saves exactly those
results, with ``pred_boxes_XYXY`` beside them.

Pure functions here (no detectron2):

* :func:`crop_iou` / :func:`select_instance` — which detection is the re-ID
  crop's person;
* :func:`paste_chart` — box frame -> image frame, optionally into an image of
  another size;
* :func:`best_instance_iuv` — both steps for one image, with a status code.

Rounding conventions
--------------------
* Box anchor: ``floor(x0)``, ``floor(y0)``. DensePose truncates (``.long()``);
  the two agree for the non-negative coordinates detectron2 produces (it clips
  boxes to the image); ``floor`` keeps boxes partly left of / above the image
  consistent (their chart pixels at negative coordinates are dropped).
* Chart size: taken from the ``labels`` array itself, never recomputed.
* Output pixel -> chart pixel: nearest neighbour through pixel centres. Output
  pixel ``(y, x)`` has its centre at ``((y + 0.5) * sy, (x + 0.5) * sx)`` in the
  box's frame, where ``(sy, sx) = box_scale`` is (box frame size) / (output
  size); it takes chart pixel ``(floor((y + 0.5) * sy) - floor(y0), ...)`` when
  that lies inside the chart, else background. With ``box_scale = (1, 1)`` this
  is an exact paste. Use ``box_scale`` when the boxes were found on a resized
  copy — e.g. a dump made on the original 128x64 Market crops pasted into a
  256x128 store image: ``box_scale = (128 / 256, 64 / 128)``.
* ``uv`` is clipped to [0, 1] (DensePose's regression can overshoot) and set to
  0 on background.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

N_PARTS = 24

NO_PERSON = "no_person"  # no detection at all
LOW_CROP_IOU = "low_crop_iou"  # best detection overlaps the crop less than min_iou
NO_PARTS = "no_parts"  # the chosen detection's chart has no body-part pixel inside the image


def to_numpy(x: Any) -> np.ndarray:
    """torch tensor (any device) or array-like -> numpy array."""
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def crop_iou(boxes_xyxy: np.ndarray, height: int, width: int) -> np.ndarray:
    """IoU of each XYXY box with the whole crop ``[0, width] x [0, height]``, shape ``(K,)``.

    For boxes inside the crop (detectron2 clips them) this equals the fraction
    of the crop the box covers.
    """
    b = np.asarray(boxes_xyxy, dtype=np.float64).reshape(-1, 4)
    x0, y0, x1, y1 = b.T
    inter = np.clip(np.minimum(x1, width) - np.maximum(x0, 0), 0, None) * np.clip(
        np.minimum(y1, height) - np.maximum(y0, 0), 0, None
    )
    area = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    union = float(width) * float(height) + area - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def select_instance(
    boxes_xyxy: np.ndarray, height: int, width: int, scores: np.ndarray | None = None, min_iou: float = 0.0
) -> tuple[int | None, float]:
    """The detection that best covers the crop: ``(index or None, its crop IoU)``.

    A re-ID image is a detector crop around its person, so that person's box
    nearly coincides with the crop frame, while bystanders appear cut by the
    crop border; the largest IoU with the full crop picks the former (and, by
    the IoU's union term, never prefers a box spilling far outside the crop).
    Ties go to the higher score, then the lower index. ``None`` when there is
    no detection or the best IoU is below ``min_iou``.
    """
    iou = crop_iou(boxes_xyxy, height, width)
    if iou.size == 0:
        return None, 0.0
    sc = np.zeros_like(iou) if scores is None else np.asarray(to_numpy(scores), dtype=np.float64).reshape(-1)
    if sc.shape != iou.shape:
        raise ValueError(f"{iou.size} boxes but {sc.size} scores")
    k = int(np.lexsort((-np.arange(iou.size), sc, iou))[-1])  # last key is primary
    if iou[k] < min_iou:
        return None, float(iou[k])
    return k, float(iou[k])


def paste_chart(
    labels: np.ndarray,
    uv: np.ndarray,
    box_xyxy: Sequence[float],
    out_shape: tuple[int, int],
    box_scale: tuple[float, float] = (1.0, 1.0),
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Paste a box-frame chart result into an ``out_shape = (H, W)`` image frame.

    Args:
        labels: ``(h, w)`` integers 0..24 in the box frame.
        uv: ``(2, h, w)`` floats (U, V) in the box frame.
        box_xyxy: the box ``(x0, y0, x1, y1)`` in the frame the detector saw.
        out_shape: ``(H, W)`` of the output frame.
        box_scale: ``(sy, sx)`` = size of the detector's frame / size of the output frame.

    Returns:
        ``i`` ``(H, W)`` uint8, ``u``, ``v`` ``(H, W)`` float32; background outside the chart.
        See the module docstring for the rounding.
    """
    labels = to_numpy(labels)
    uv = to_numpy(uv)
    if labels.ndim != 2 or uv.shape != (2,) + labels.shape:
        raise ValueError(f"expected labels (h, w) and uv (2, h, w), got {labels.shape} and {uv.shape}")
    if labels.size and (labels.min() < 0 or labels.max() > N_PARTS):
        raise ValueError(f"chart labels must lie in 0..{N_PARTS}")
    H, W = out_shape
    h, w = labels.shape
    sy, sx = box_scale
    x0, y0 = np.floor(float(box_xyxy[0])), np.floor(float(box_xyxy[1]))
    rows = (np.floor((np.arange(H) + 0.5) * sy) - y0).astype(np.intp)
    cols = (np.floor((np.arange(W) + 0.5) * sx) - x0).astype(np.intp)
    ry = np.flatnonzero((rows >= 0) & (rows < h))
    cx = np.flatnonzero((cols >= 0) & (cols < w))
    i_out = np.zeros((H, W), np.uint8)
    u_out = np.zeros((H, W), np.float32)
    v_out = np.zeros((H, W), np.float32)
    if ry.size and cx.size:
        sel = np.ix_(rows[ry], cols[cx])
        lab = labels[sel].astype(np.uint8)
        fg = lab > 0
        dst = np.ix_(ry, cx)
        i_out[dst] = lab
        u_out[dst] = np.where(fg, np.clip(uv[0][sel], 0.0, 1.0), 0.0)
        v_out[dst] = np.where(fg, np.clip(uv[1][sel], 0.0, 1.0), 0.0)
    return i_out, u_out, v_out


ChartSource = Sequence[Any] | Callable[[int], Any]


def best_instance_iuv(
    boxes_xyxy: np.ndarray,
    charts: ChartSource,
    frame_shape: tuple[int, int],
    out_shape: tuple[int, int],
    scores: np.ndarray | None = None,
    min_iou: float = 0.0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, str]:
    """IUV of the crop's person for one image: ``(i, u, v, status)`` in ``out_shape``.

    Args:
        boxes_xyxy: ``(K, 4)`` detections in the frame the detector saw, of size ``frame_shape``.
        charts: per detection an object with ``labels`` and ``uv`` (e.g.
            ``DensePoseChartResult``), as a sequence or a callable ``k -> chart``
            (so that only the chosen detection is converted).
        frame_shape: ``(h, w)`` of the detector's frame (crop IoU is measured there).
        out_shape: ``(H, W)`` of the output (store) frame.
        scores: optional detection scores (tie-break).
        min_iou: minimum crop IoU of the chosen detection.

    Status: ``"ok"``, :data:`NO_PERSON`, :data:`LOW_CROP_IOU` or :data:`NO_PARTS`.
    """
    H, W = out_shape
    fh, fw = frame_shape
    boxes = np.asarray(to_numpy(boxes_xyxy), dtype=np.float64).reshape(-1, 4)
    k, _ = select_instance(boxes, fh, fw, scores, min_iou)
    empty = (np.zeros((H, W), np.uint8), np.zeros((H, W), np.float32), np.zeros((H, W), np.float32))
    if k is None:
        return (*empty, NO_PERSON if len(boxes) == 0 else LOW_CROP_IOU)
    chart = charts(k) if callable(charts) else charts[k]
    i, u, v = paste_chart(chart.labels, chart.uv, boxes[k], (H, W), (fh / H, fw / W))
    if not i.any():
        return (*empty, NO_PARTS)
    return i, u, v, "ok"


__all__ = [
    "NO_PERSON",
    "LOW_CROP_IOU",
    "NO_PARTS",
    "to_numpy",
    "crop_iou",
    "select_instance",
    "paste_chart",
    "best_instance_iuv",
]

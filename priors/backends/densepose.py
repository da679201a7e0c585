"""DensePose (detectron2) as the dense-semantics estimator of DSA-reID (Sec. 3.1).

The paper runs "the off-the-shelf DensePose model (trained on DensePose-COCO)"
on every re-ID image. This backend runs a chart-based (IUV) DensePose model of
detectron2's ``projects/DensePose`` on store images:

1. each crop (RGB in the store) goes to BGR and is upscaled exactly as
   detectron2's ``DefaultPredictor`` (hence ``apply_net.py``) does it:
   ``ResizeShortestEdge(MIN_SIZE_TEST, MAX_SIZE_TEST)``, PIL bilinear (see
   :func:`model_input_size`). Re-ID crops (e.g. 128x64) are far below the
   800-pixel short side the model was trained at, so each crop costs a full
   1333x667 forward pass; ``min_size``/``max_size`` choose a test size for crops;
2. **batched** (default): ``batch_size`` crops per model call, each input
   carrying ``height``/``width`` of the *store* image, so detectron2's
   ``detector_postprocess`` returns boxes in the store frame;
   **canvas** (``canvas="RxC"``): ``R*C`` resized crops side by side on one
   canvas (:mod:`priors.crop_canvas`), one forward pass per canvas, proposal and
   detection budgets scaled by ``R*C``; each detection goes back to the crop
   whose tile holds its box centre, its box in that crop's store frame;
3. either way DensePose's ``ToChartResultConverter`` resamples the chosen
   detection's chart output to its store-frame box (``labels`` (h, w), ``uv``
   (2, h, w)) and :func:`priors.densepose_charts.best_instance_iuv` keeps the
   detection that best covers the crop and pastes its chart into the image.

Config and weights are files the user provides (no downloads); a ``.pkl``
needs ``trust_weights=True`` (:mod:`priors.backends.detectron2_model`).
detectron2 and DensePose are imported only when the estimator is built.
"""
from __future__ import annotations

import os
from typing import Any

import numpy as np
import pandas as pd

from priors.backends.detectron2_model import (
    build_detectron2_model,
    check_model_files,
    detectron2_provenance,
    model_input_size,
    resize_bgr,
)
from priors.crop_canvas import canvas_layout, split_detections, tile_crops
from priors.densepose_charts import best_instance_iuv, to_numpy
from priors.estimators import DenseResult, file_sha256, optional_import

INSTALL_HINT = (
    "build detectron2 and its DensePose project (not on PyPI) from a local source folder: "
    "scripts/densepose_env.sh DETECTRON2_SRC VENV (see README, 'GPU machines', and environment.yml)"
)


def parse_canvas(canvas: str | None) -> tuple[int, int] | None:
    """``"2x4"`` -> ``(2, 4)`` (rows x cols of crops per canvas); ``None``/``""``/``"1x1"`` -> ``None``."""
    if not canvas:
        return None
    try:
        rows, cols = (int(s) for s in str(canvas).lower().split("x"))
    except ValueError:
        raise ValueError(f"canvas must look like ROWSxCOLS (e.g. 2x4), got {canvas!r}") from None
    if rows < 1 or cols < 1:
        raise ValueError(f"canvas must look like ROWSxCOLS with positive sides, got {canvas!r}")
    return None if rows * cols == 1 else (rows, cols)


class DensePoseEstimator:
    """Chart-based DensePose on store images -> IUV in the store frame (one status per image).

    Args:
        config: DensePose config YAML (e.g. ``densepose_rcnn_R_50_FPN_s1x.yaml`` inside
            detectron2's ``projects/DensePose/configs``, so its ``_BASE_`` resolves).
        weights: the matching weights: a ``.pth`` state dict / checkpoint, or a
            ``model_final_*.pkl`` (needs ``trust_weights``).
        device: ``"cpu"`` or ``"cuda"``/``"cuda:N"``.
        min_size, max_size: model input size of a crop; default the config's
            ``INPUT.MIN_SIZE_TEST`` / ``INPUT.MAX_SIZE_TEST`` (as ``apply_net.py``).
        batch_size: crops per model call (batched mode).
        min_crop_iou: minimum IoU of the chosen detection with the crop (else ``low_crop_iou``).
        score_threshold: overrides ``MODEL.ROI_HEADS.SCORE_THRESH_TEST`` when given.
        trust_weights: allow unpickling ``.pkl`` weights (they can run code).
        canvas: ``"RxC"`` tiles R*C crops per forward pass (module docstring); ``None``: batched.
        canvas_gap: fill pixels between tiles (origins stay on the 32-pixel grid).
        detections_per_crop: overrides ``TEST.DETECTIONS_PER_IMAGE`` (per crop; default the
            config's 100). A re-ID crop holds one or two people and DensePose's head runs on
            every kept detection, so a small cap saves head time without changing the pick
            unless the crop's person ranks below it.
    """

    name = "densepose"

    def __init__(
        self,
        config: str,
        weights: str,
        device: str = "cpu",
        min_size: int | None = None,
        max_size: int | None = None,
        batch_size: int = 8,
        min_crop_iou: float = 0.0,
        score_threshold: float | None = None,
        trust_weights: bool = False,
        canvas: str | None = None,
        canvas_gap: int = 32,
        detections_per_crop: int | None = None,
    ) -> None:
        check_model_files(config, weights, trust_weights)  # before any import: the gate needs no detectron2
        detectron2 = optional_import("detectron2", INSTALL_HINT)
        optional_import("densepose", INSTALL_HINT)
        from densepose import add_densepose_config
        from densepose.converters import ToChartResultConverter
        from densepose.structures import DensePoseChartPredictorOutput
        from detectron2.structures import Boxes

        grid = parse_canvas(canvas)
        slots = 1 if grid is None else grid[0] * grid[1]

        def overrides(cfg) -> None:
            if score_threshold is not None:
                cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST = float(score_threshold)
            if detections_per_crop is not None:
                cfg.TEST.DETECTIONS_PER_IMAGE = int(detections_per_crop)
            if slots > 1:  # the same proposal / detection budget per crop as one crop per pass
                cfg.MODEL.RPN.PRE_NMS_TOPK_TEST *= slots
                cfg.MODEL.RPN.POST_NMS_TOPK_TEST *= slots
                cfg.TEST.DETECTIONS_PER_IMAGE *= slots

        self.model, cfg = build_detectron2_model(config, weights, device, trust_weights, add_densepose_config, overrides)
        self._converter = ToChartResultConverter
        self._chart_output_type = DensePoseChartPredictorOutput
        self._boxes = Boxes
        self.grid = grid
        self.canvas_gap = int(canvas_gap)
        self.min_size = int(min_size or cfg.INPUT.MIN_SIZE_TEST)
        self.max_size = int(max_size or cfg.INPUT.MAX_SIZE_TEST)
        self.input_format = cfg.INPUT.FORMAT
        self.pixel_mean = np.asarray(cfg.MODEL.PIXEL_MEAN, np.float32)  # canvas fill: 0 after normalisation
        self.device = device
        self.batch_size = int(batch_size)
        self.min_crop_iou = float(min_crop_iou)
        self.weights_sha256 = file_sha256(weights)
        self.version = f"detectron2-{detectron2.__version__}"
        self.params: dict[str, Any] = {
            "config": os.path.basename(config),
            "weights": os.path.basename(weights),
            "device": device,
            "min_size": self.min_size,
            "max_size": self.max_size,
            "batch_size": self.batch_size,
            "canvas": None if grid is None else f"{grid[0]}x{grid[1]}",
            "canvas_gap": self.canvas_gap if grid else None,
            "min_crop_iou": self.min_crop_iou,
            "score_threshold": float(cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST),
            "detections_per_crop": int(cfg.TEST.DETECTIONS_PER_IMAGE) // slots,
            "input_format": self.input_format,
            **detectron2_provenance(config, weights, cfg),
        }

    def _to_model_image(self, bgr: np.ndarray):
        import torch

        x = bgr[:, :, ::-1] if self.input_format == "RGB" else bgr
        return torch.as_tensor(np.ascontiguousarray(x.transpose(2, 0, 1)), dtype=torch.float32)

    def _check_chart_output(self, inst) -> None:
        dp_out = inst.get("pred_densepose") if inst.has("pred_densepose") else None  # Instances.get raises
        if len(inst) and not isinstance(dp_out, self._chart_output_type):
            found = type(dp_out).__name__ if dp_out is not None else "no DensePose output"
            raise TypeError(
                f"{found} is not a chart (IUV) output: use a chart-based DensePose config "
                "(configs/densepose_rcnn_*.yaml), not a CSE one (configs/cse/)"
            )

    def _crop_iuv(self, inst, index: np.ndarray, boxes: np.ndarray, H: int, W: int):
        """IUV of one crop from its detections ``inst[index]`` with store-frame ``boxes``."""
        import torch

        def chart(k: int):
            box = self._boxes(torch.as_tensor(boxes[k : k + 1], dtype=torch.float32))
            return self._converter.convert(inst.pred_densepose[int(index[k])], box)

        scores = to_numpy(inst.scores)[index] if len(index) else None
        return best_instance_iuv(boxes, chart, (H, W), (H, W), scores, self.min_crop_iou)

    def estimate(self, images: np.ndarray, rows: pd.DataFrame) -> DenseResult:
        import torch

        images = np.asarray(images)
        B, H, W, _ = images.shape
        i_out = np.zeros((B, H, W), np.uint8)
        u_out = np.zeros((B, H, W), np.float32)
        v_out = np.zeros((B, H, W), np.float32)
        status: list[str] = []
        in_hw = model_input_size(H, W, self.min_size, self.max_size)
        if self.grid is None:
            for s in range(0, B, self.batch_size):
                bgr = resize_bgr(images[s : s + self.batch_size], in_hw)
                inputs = [{"image": self._to_model_image(x), "height": H, "width": W} for x in bgr]
                with torch.no_grad():
                    outputs = self.model(inputs)
                for b, out in enumerate(outputs, start=s):
                    inst = out["instances"].to("cpu")
                    self._check_chart_output(inst)
                    boxes = to_numpy(inst.pred_boxes.tensor).astype(np.float64).reshape(-1, 4)
                    *iuv, st = self._crop_iuv(inst, np.arange(len(inst)), boxes, H, W)
                    i_out[b], u_out[b], v_out[b] = iuv
                    status.append(st)
        else:
            layout = canvas_layout(in_hw, *self.grid, gap=self.canvas_gap)
            fill = self.pixel_mean if self.input_format == "BGR" else self.pixel_mean[::-1]  # canvas is BGR
            for s in range(0, B, layout.slots):
                tiles = resize_bgr(images[s : s + layout.slots], in_hw)
                canvas = tile_crops(tiles.astype(np.float32), layout, fill=fill)
                with torch.no_grad():
                    inst = self.model([{"image": self._to_model_image(canvas), "height": layout.height,
                                        "width": layout.width}])[0]["instances"].to("cpu")  # fmt: skip
                self._check_chart_output(inst)
                slot, crop_boxes = split_detections(to_numpy(inst.pred_boxes.tensor), layout, len(tiles), (H, W))
                for t in range(len(tiles)):
                    index = np.flatnonzero(slot == t)
                    *iuv, st = self._crop_iuv(inst, index, crop_boxes[index], H, W)
                    i_out[s + t], u_out[s + t], v_out[s + t] = iuv
                    status.append(st)
        return DenseResult(i=i_out, u=u_out, v=v_out, status=status)


__all__ = ["DensePoseEstimator", "model_input_size", "parse_canvas", "resize_bgr", "file_sha256", "INSTALL_HINT"]

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

**DensePose head on the kept detection only** (``densepose_head="kept"``, the
default). detectron2 runs DensePose's head (8 convolutions of 512 channels on a
28x28 ROI, ~28 GFLOP) on *every* detection, although the bookkeeping keeps one
per crop. Here the model runs in two steps: backbone, RPN and box head give the
detections (the box branch of ``StandardROIHeads``, from its public parts),
detectron2's ``detector_postprocess`` takes them to the store frame exactly as
``model(inputs)`` would, :func:`priors.densepose_charts.select_instance` (the
rule ``best_instance_iuv`` applies) picks one per crop, and the ROI heads'
``forward_with_given_boxes`` runs DensePose's head on the picked boxes only (in
the model frame, as the full path pools them). The head treats ROIs one by one,
so the kept chart equals the full path's chart of that detection (up to the
summation order of a convolution over a smaller batch); ``densepose_head="all"``
is ``model(inputs)``, as ``apply_net.py``.

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
from priors.densepose_charts import best_instance_iuv, select_instance, to_numpy
from priors.estimators import DenseResult, file_sha256, optional_import

INSTALL_HINT = (
    "build detectron2 and its DensePose project (not on PyPI) from a local source folder: "
    "scripts/densepose_env.sh DETECTRON2_SRC VENV (see README, 'GPU machines', and environment.yml)"
)


DENSEPOSE_HEAD_MODES = ("kept", "all")


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
        densepose_head: ``"kept"`` runs DensePose's head only on the detection the
            bookkeeping keeps per crop (module docstring); ``"all"`` on every detection.
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
        densepose_head: str = "kept",
    ) -> None:
        check_model_files(config, weights, trust_weights)  # before any import: the gate needs no detectron2
        detectron2 = optional_import("detectron2", INSTALL_HINT)
        optional_import("densepose", INSTALL_HINT)
        from densepose import add_densepose_config
        from densepose.converters import ToChartResultConverter
        from densepose.structures import DensePoseChartPredictorOutput
        from detectron2.structures import Boxes

        if densepose_head not in DENSEPOSE_HEAD_MODES:
            raise ValueError(f"densepose_head must be one of {DENSEPOSE_HEAD_MODES}, got {densepose_head!r}")
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
        self.densepose_head = densepose_head
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
            "densepose_head": densepose_head,
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

    def _detect(self, inputs: list[dict]):
        """Backbone, RPN and box head: ``(features, model-frame Instances per input)``, no DensePose yet.

        The inference branch of detectron2's ``GeneralizedRCNN.inference`` and
        ``StandardROIHeads._forward_box``, written with their public parts.
        """
        model = self.model
        heads = model.roi_heads
        images = model.preprocess_image(inputs)
        features = model.backbone(images.tensor)
        proposals, _ = model.proposal_generator(images, features, None)
        box_features = heads.box_pooler([features[f] for f in heads.box_in_features], [p.proposal_boxes for p in proposals])
        instances, _ = heads.box_predictor.inference(heads.box_predictor(heads.box_head(box_features)), proposals)
        return features, instances

    def _postprocess(self, inst, height: int, width: int):
        """``detector_postprocess`` of a copy (it scales boxes in place), with ``source``: the index in ``inst``."""
        import torch
        from detectron2.modeling.postprocessing import detector_postprocess
        from detectron2.structures import Instances

        copy = Instances(inst.image_size, pred_boxes=inst.pred_boxes.clone(), scores=inst.scores,
                         pred_classes=inst.pred_classes, source=torch.arange(len(inst), device=inst.scores.device))
        return detector_postprocess(copy, height, width).to("cpu")

    def _run(self, inputs: list[dict]) -> tuple[list, Any]:
        """``(store-frame detections per input, state)`` of one model call.

        Mode ``all``: ``model(inputs)``, ``pred_densepose`` on every detection, state ``None``.
        Mode ``kept``: no DensePose output yet; state ``(features, model-frame instances)``
        for :meth:`_kept_charts`.
        """
        import torch

        with torch.no_grad():
            if self.densepose_head == "all":
                outputs = [out["instances"].to("cpu") for out in self.model(inputs)]
                for inst in outputs:
                    self._check_chart_output(inst)
                return outputs, None
            features, raw = self._detect(inputs)
        return [self._postprocess(r, x["height"], x["width"]) for r, x in zip(raw, inputs)], (features, raw)

    def _kept_charts(self, state, picks: list[list[int]]) -> list:
        """DensePose's head on the picked model-frame detections (``picks[j]``: indices into input j's)."""
        import torch

        features, raw = state
        given = [r[torch.as_tensor(p, dtype=torch.long, device=r.scores.device)] for r, p in zip(raw, picks)]
        with torch.no_grad():
            given = self.model.roi_heads.forward_with_given_boxes(features, given)
        given = [g.to("cpu") for g in given]
        for g in given:
            self._check_chart_output(g)
        return given

    def _crops_iuv(self, dets: list, state, crops: list[tuple[int, np.ndarray, np.ndarray]], H: int, W: int):
        """IUV + status per crop; ``crops[c] = (input j, indices into dets[j], their store-frame boxes)``."""
        import torch

        scores = [to_numpy(d.scores) for d in dets]
        picks = []  # per crop: index into dets[j] of the detection the bookkeeping keeps, or None
        for j, index, boxes in crops:
            k, _ = select_instance(boxes, H, W, scores[j][index] if len(index) else None, self.min_crop_iou)
            picks.append(None if k is None else int(index[k]))
        if state is not None:  # kept: DensePose's head on the picked detections only
            per_input: list[list[int]] = [[] for _ in dets]
            slot = []
            for (j, _, _), p in zip(crops, picks):
                slot.append(None if p is None else len(per_input[j]))
                if p is not None:
                    per_input[j].append(int(to_numpy(dets[j].source)[p]))
            given = self._kept_charts(state, per_input) if any(per_input) else []
            outputs = [None if p is None else given[j].pred_densepose[s] for (j, _, _), p, s in zip(crops, picks, slot)]
        else:
            outputs = [None if p is None else dets[j].pred_densepose[p] for (j, _, _), p in zip(crops, picks)]
        results = []
        for (j, index, boxes), p, dp_out in zip(crops, picks, outputs):

            def chart(k: int, boxes=boxes, dp_out=dp_out, p=p, index=index):
                assert int(index[k]) == p, "best_instance_iuv picked another detection than select_instance"
                box = self._boxes(torch.as_tensor(boxes[k : k + 1], dtype=torch.float32))
                return self._converter.convert(dp_out, box)

            sc = scores[j][index] if len(index) else None
            results.append(best_instance_iuv(boxes, chart, (H, W), (H, W), sc, self.min_crop_iou))
        return results

    def estimate(self, images: np.ndarray, rows: pd.DataFrame) -> DenseResult:
        images = np.asarray(images)
        B, H, W, _ = images.shape
        i_out = np.zeros((B, H, W), np.uint8)
        u_out = np.zeros((B, H, W), np.float32)
        v_out = np.zeros((B, H, W), np.float32)
        status: list[str] = []

        def store(start: int, results) -> None:
            for b, (i, u, v, st) in enumerate(results, start=start):
                i_out[b], u_out[b], v_out[b] = i, u, v
                status.append(st)

        in_hw = model_input_size(H, W, self.min_size, self.max_size)
        if self.grid is None:
            for s in range(0, B, self.batch_size):
                bgr = resize_bgr(images[s : s + self.batch_size], in_hw)
                dets, state = self._run([{"image": self._to_model_image(x), "height": H, "width": W} for x in bgr])
                crops = []
                for j, d in enumerate(dets):
                    boxes = to_numpy(d.pred_boxes.tensor).astype(np.float64).reshape(-1, 4)
                    crops.append((j, np.arange(len(d)), boxes))
                store(s, self._crops_iuv(dets, state, crops, H, W))
        else:
            layout = canvas_layout(in_hw, *self.grid, gap=self.canvas_gap)
            fill = self.pixel_mean if self.input_format == "BGR" else self.pixel_mean[::-1]  # canvas is BGR
            for s in range(0, B, layout.slots):
                tiles = resize_bgr(images[s : s + layout.slots], in_hw)
                canvas = tile_crops(tiles.astype(np.float32), layout, fill=fill)
                dets, state = self._run([{"image": self._to_model_image(canvas), "height": layout.height,
                                          "width": layout.width}])  # fmt: skip
                slot, crop_boxes = split_detections(to_numpy(dets[0].pred_boxes.tensor), layout, len(tiles), (H, W))
                crops = [(0, np.flatnonzero(slot == t), crop_boxes[slot == t]) for t in range(len(tiles))]
                store(s, self._crops_iuv(dets, state, crops, H, W))
        return DenseResult(i=i_out, u=u_out, v=v_out, status=status)


__all__ = ["DENSEPOSE_HEAD_MODES", "DensePoseEstimator", "model_input_size", "parse_canvas", "resize_bgr", "file_sha256", "INSTALL_HINT"]

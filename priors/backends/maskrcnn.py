"""Person segmentation with a detectron2 Mask R-CNN (the segmentation tool of MPN Sec. 3.2).

MPN (Sec. 3.2, Fig. 4) pairs its parsing tool with a human-segmentation tool
that "segments the human body with accessories as a whole". This backend runs
a COCO Mask R-CNN from detectron2 (config + weights supplied by the user, no
downloads) on each re-ID crop and keeps the mask of the person instance that
best covers the crop: the same criterion as the DensePose backend,
:func:`priors.densepose_charts.select_instance` (largest IoU with the whole
crop, ties to the higher score).

The default predictor is detectron2's ``DefaultPredictor`` step by step (BGR,
``ResizeShortestEdge(MIN_SIZE_TEST, MAX_SIZE_TEST)`` with PIL bilinear, boxes and
masks back at the crop size), with the weights read through the trust gate of
:mod:`priors.backends.detectron2_model` (a ``.pkl`` needs ``trust_weights``).
detectron2 is imported only when the backend is built without an injected
``predictor`` (tests inject a fake one returning detectron2-like instances).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd

from priors.backends.detectron2_model import (
    build_detectron2_model,
    check_model_files,
    detectron2_provenance,
    model_input_size,
    resize_bgr,
)
from priors.backends.onnx_parsing import file_sha256
from priors.densepose_charts import LOW_CROP_IOU, NO_PERSON, select_instance, to_numpy
from priors.estimators import OK, MaskResult

COCO_PERSON = 0


def _np(x: Any) -> np.ndarray:
    """detectron2 ``Boxes`` / torch tensor / array -> numpy."""
    return to_numpy(x.tensor if hasattr(x, "tensor") else x)


class MaskRCNNSegmentation:
    """Segmentation source: the best-covering COCO person instance mask of a detectron2 Mask R-CNN.

    ``predictor(bgr_image) -> {"instances": ...}`` defaults to detectron2's
    ``DefaultPredictor`` built from ``config`` (a yaml path) and ``weights``
    (a local ``.pkl``/``.pth``). Status ``"no_person"`` when no person scores
    ``>= score_threshold``, ``"low_crop_iou"`` when the best person box has a
    crop IoU below ``min_crop_iou`` (default 0: any person is taken).
    ``trust_weights`` allows unpickling ``.pkl`` weights (they can run code).
    ``min_size`` (the model input's short side, detectron2's ``INPUT.MIN_SIZE_TEST``)
    and ``detections_per_crop`` (``TEST.DETECTIONS_PER_IMAGE``) override the config's.
    """

    name = "maskrcnn"
    version = "1"

    def __init__(
        self,
        config: str | None = None,
        weights: str | None = None,
        device: str = "cpu",
        score_threshold: float = 0.5,
        person_class: int = COCO_PERSON,
        min_crop_iou: float = 0.0,
        predictor: Callable[[np.ndarray], dict] | None = None,
        trust_weights: bool = False,
        min_size: int | None = None,
        detections_per_crop: int | None = None,
    ) -> None:
        self.score_threshold = float(score_threshold)
        self.person_class = int(person_class)
        self.min_crop_iou = float(min_crop_iou)
        if weights is not None and not Path(weights).is_file():
            raise ValueError(f"Mask R-CNN weights must be a local file (no downloads): {weights}")
        self.weights_sha256 = file_sha256(weights) if weights is not None else None
        self._cfg = None
        self._min_size = None if min_size is None else int(min_size)
        self._detections = None if detections_per_crop is None else int(detections_per_crop)
        if predictor is None:
            if config is None or weights is None:
                raise ValueError("MaskRCNNSegmentation needs config (yaml) and weights (local file)")
            check_model_files(config, weights, trust_weights)
            predictor = self._detectron2_predictor(config, weights, device, trust_weights)
        self.predictor = predictor
        provenance = detectron2_provenance(config, weights, self._cfg) if self._cfg is not None else {}
        self.params = {
            "config": Path(config).name if config else None,
            "weights": Path(weights).name if weights else None,
            "device": device,
            "score_threshold": self.score_threshold,
            "person_class": self.person_class,
            "min_crop_iou": self.min_crop_iou,
            "min_size": int(self._cfg.INPUT.MIN_SIZE_TEST) if self._cfg is not None else self._min_size,
            "detections_per_crop": int(self._cfg.TEST.DETECTIONS_PER_IMAGE) if self._cfg is not None else self._detections,
            **provenance,
        }

    def _detectron2_predictor(self, config: str, weights: str, device: str, trust_weights: bool):
        import torch

        def overrides(cfg) -> None:
            cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST = min(cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST, self.score_threshold)
            if self._min_size is not None:
                cfg.INPUT.MIN_SIZE_TEST = self._min_size
            if self._detections is not None:
                cfg.TEST.DETECTIONS_PER_IMAGE = self._detections

        model, cfg = build_detectron2_model(config, weights, device, trust_weights, overrides=overrides)
        self._cfg = cfg

        def predict(bgr: np.ndarray) -> dict:  # DefaultPredictor.__call__
            H, W = bgr.shape[:2]
            x = resize_bgr(bgr[None, :, :, ::-1], model_input_size(H, W, cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST))[0]
            x = x[:, :, ::-1] if cfg.INPUT.FORMAT == "RGB" else x
            image = torch.as_tensor(np.ascontiguousarray(x.transpose(2, 0, 1)), dtype=torch.float32)
            with torch.no_grad():
                return model([{"image": image, "height": H, "width": W}])[0]

        return predict

    def segment(self, images: np.ndarray, rows: pd.DataFrame) -> MaskResult:
        images = np.asarray(images)
        B, H, W = images.shape[:3]
        masks = np.zeros((B, H, W), bool)
        status = []
        for b in range(B):
            inst = self.predictor(np.ascontiguousarray(images[b][..., ::-1]))["instances"]
            if hasattr(inst, "to"):
                inst = inst.to("cpu")
            classes, scores = _np(inst.pred_classes), _np(inst.scores)
            keep = np.flatnonzero((classes == self.person_class) & (scores >= self.score_threshold))
            if len(keep) == 0:
                status.append(NO_PERSON)
                continue
            pick, _ = select_instance(_np(inst.pred_boxes)[keep], H, W, scores[keep], self.min_crop_iou)
            if pick is None:
                status.append(LOW_CROP_IOU)
                continue
            mask = _np(inst.pred_masks)[keep[pick]]
            if mask.shape != (H, W):
                raise ValueError(f"instance mask {mask.shape} is not at the image size {(H, W)}")
            masks[b] = mask.astype(bool)
            status.append(OK)
        return MaskResult(mask=masks, status=status)


__all__ = ["COCO_PERSON", "MaskRCNNSegmentation"]

"""DensePose (detectron2) as the dense-semantics estimator of DSA-reID (Sec. 3.1).

The paper runs "the off-the-shelf DensePose model (trained on DensePose-COCO)"
on every re-ID image. This backend runs a chart-based (IUV) DensePose model of
detectron2's ``projects/DensePose`` on store images, batched:

1. each crop is upscaled the way detectron2's ``DefaultPredictor`` would
   (``ResizeShortestEdge(MIN_SIZE_TEST, MAX_SIZE_TEST)``, see
   :func:`model_input_size`; bilinear) — re-ID crops (e.g. 128x64) are far below
   the 800-pixel short side the model was trained at — and ``batch_size`` crops
   go through the model in one call;
2. every input carries ``height``/``width`` of the *store* image, so detectron2's
   ``detector_postprocess`` returns boxes in the store frame; DensePose's
   ``ToChartResultConverter`` then resamples the chosen detection's chart
   output to that box (``labels`` (h, w), ``uv`` (2, h, w)) at store resolution;
3. :func:`priors.densepose_charts.best_instance_iuv` keeps the detection that
   best covers the crop and pastes its chart into the image frame.

Config and weights are files the user provides (no downloads). detectron2 and
DensePose are imported only when the estimator is built.
"""
from __future__ import annotations

import os
from typing import Any

import numpy as np
import pandas as pd

from priors.densepose_charts import best_instance_iuv, to_numpy
from priors.estimators import DenseResult, file_sha256, optional_import

INSTALL_HINT = (
    "install detectron2 and its DensePose project (not on PyPI): "
    "pip install 'git+https://github.com/facebookresearch/detectron2.git' and "
    "pip install 'git+https://github.com/facebookresearch/detectron2.git#subdirectory=projects/DensePose' "
    "(see environment.yml)"
)


def model_input_size(height: int, width: int, min_size: int, max_size: int) -> tuple[int, int]:
    """``(h, w)`` detectron2's ``ResizeShortestEdge(min_size, max_size)`` gives an image.

    The short side goes to ``min_size`` unless the long side would exceed
    ``max_size``, in which case the long side goes to ``max_size``; sides are
    rounded half up. E.g. 128x64 with (800, 1333) -> 1333x667.
    """
    scale = min_size / min(height, width)
    if max(height, width) * scale > max_size:
        scale = max_size / max(height, width)
    return int(height * scale + 0.5), int(width * scale + 0.5)


class DensePoseEstimator:
    """Chart-based DensePose on store images -> IUV in the store frame (one status per image).

    Args:
        config: DensePose config YAML (e.g. ``densepose_rcnn_R_50_FPN_s1x.yaml`` inside
            detectron2's ``projects/DensePose/configs``, so its ``_BASE_`` resolves).
        weights: the matching ``model_final_*.pkl``.
        device: ``"cpu"`` or ``"cuda"``/``"cuda:N"``.
        min_size, max_size: model input size; default the config's ``INPUT.MIN_SIZE_TEST``
            / ``INPUT.MAX_SIZE_TEST``.
        batch_size: crops per model call.
        min_crop_iou: minimum IoU of the chosen detection with the crop (else ``low_crop_iou``).
        score_threshold: overrides ``MODEL.ROI_HEADS.SCORE_THRESH_TEST`` when given.
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
    ) -> None:
        detectron2 = optional_import("detectron2", INSTALL_HINT)
        optional_import("densepose", INSTALL_HINT)
        from densepose import add_densepose_config
        from densepose.converters import ToChartResultConverter
        from densepose.structures import DensePoseChartPredictorOutput
        from detectron2.checkpoint import DetectionCheckpointer
        from detectron2.config import get_cfg
        from detectron2.modeling import build_model

        for what, path in (("config", config), ("weights", weights)):
            if not os.path.isfile(path):
                raise FileNotFoundError(f"DensePose {what} file not found: {path}")
        cfg = get_cfg()
        add_densepose_config(cfg)
        cfg.merge_from_file(config)
        cfg.MODEL.WEIGHTS = str(weights)
        cfg.MODEL.DEVICE = device
        if score_threshold is not None:
            cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST = float(score_threshold)
        cfg.freeze()
        self.model = build_model(cfg)
        self.model.eval()
        DetectionCheckpointer(self.model).load(cfg.MODEL.WEIGHTS)
        self._converter = ToChartResultConverter
        self._chart_output_type = DensePoseChartPredictorOutput
        self.min_size = int(min_size or cfg.INPUT.MIN_SIZE_TEST)
        self.max_size = int(max_size or cfg.INPUT.MAX_SIZE_TEST)
        self.input_format = cfg.INPUT.FORMAT
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
            "min_crop_iou": self.min_crop_iou,
            "score_threshold": float(cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST),
            "input_format": self.input_format,
        }

    def _model_inputs(self, images: np.ndarray) -> list[dict[str, Any]]:
        import cv2
        import torch

        _, H, W, _ = images.shape
        in_h, in_w = model_input_size(H, W, self.min_size, self.max_size)
        inputs = []
        for img in images:
            x = img[:, :, ::-1] if self.input_format == "BGR" else img  # store images are RGB
            x = cv2.resize(np.ascontiguousarray(x), (in_w, in_h), interpolation=cv2.INTER_LINEAR)
            inputs.append({"image": torch.as_tensor(np.ascontiguousarray(x.transpose(2, 0, 1)), dtype=torch.float32),
                           "height": H, "width": W})  # fmt: skip
        return inputs

    def estimate(self, images: np.ndarray, rows: pd.DataFrame) -> DenseResult:
        import torch

        images = np.asarray(images)
        B, H, W, _ = images.shape
        i_out = np.zeros((B, H, W), np.uint8)
        u_out = np.zeros((B, H, W), np.float32)
        v_out = np.zeros((B, H, W), np.float32)
        status: list[str] = []
        for s in range(0, B, self.batch_size):
            with torch.no_grad():
                outputs = self.model(self._model_inputs(images[s : s + self.batch_size]))
            for b, out in enumerate(outputs, start=s):
                inst = out["instances"]
                dp_out = inst.get("pred_densepose") if inst.has("pred_densepose") else None  # Instances.get raises
                if len(inst) and not isinstance(dp_out, self._chart_output_type):
                    found = type(dp_out).__name__ if dp_out is not None else "no DensePose output"
                    raise TypeError(
                        f"{found} is not a chart (IUV) output: use a chart-based DensePose config "
                        "(configs/densepose_rcnn_*.yaml), not a CSE one (configs/cse/)"
                    )

                def chart(k: int, inst=inst):
                    return self._converter.convert(inst.pred_densepose[k], inst.pred_boxes[[k]])

                boxes = to_numpy(inst.pred_boxes.tensor) if len(inst) else np.zeros((0, 4))
                scores = to_numpy(inst.scores) if len(inst) else None
                i_out[b], u_out[b], v_out[b], st = best_instance_iuv(
                    boxes, chart, (H, W), (H, W), scores, self.min_crop_iou
                )
                status.append(st)
        return DenseResult(i=i_out, u=u_out, v=v_out, status=status)


__all__ = ["DensePoseEstimator", "model_input_size", "file_sha256", "INSTALL_HINT"]

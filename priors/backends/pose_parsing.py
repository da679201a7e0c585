"""``pose`` parsing and segmentation sources for MPN's coarse prior (MPN Sec. 3.2).

MPN's prior needs (a) whether the head and the legs are in the crop and (b) a
person mask. With only mediapipe's bundled CPU models (see
:mod:`priors.backends.mediapipe_runner`):

* :class:`SelfieSegmentation` — person mask = selfie-segmentation probability
  ``>= threshold``;
* :class:`PoseParsing` — a :class:`~priors.estimators.CoarseParsing` map drawn
  from BlazePose landmarks (:func:`landmarks_to_parsing`):

  - ``HEAD``: a disc around the mean of the *visible* nose / eyes / ears
    (visibility ``>= head_min_visibility``); none if no head landmark is visible;
  - ``LEFT_LEG`` / ``RIGHT_LEG`` (the person's sides): capsules along the chain
    hip -> knee -> ankle -> foot tip, joining consecutive *visible*
    (``>= leg_min_visibility``) landmarks of that chain; none if fewer than two
    are visible. A visible shoe counts: it shows the lower body is in the crop,
    which is what MPN's leg check protects;
  - ``OTHER``: the rest of the person mask.

  Every class is intersected with the person mask, so a hallucinated landmark
  over background adds nothing. Sizes are fractions of the torso length ``T``
  (shoulder midpoint -> hip midpoint). Where both legs' capsules overlap, a
  pixel goes to the leg whose axis is nearer in units of its radius.

Defaults: ``head_min_visibility = 0.5`` (BlazePose's visibility is the
probability that the point is in view and not occluded; face points of a found
pose are almost always ~1), ``leg_min_visibility = 0.3``: on low-resolution
crops knee/ankle visibility is low even for plainly visible legs (median ~0.75,
lower quartile ~0.45 on 187 found poses of mini-Market-1501 + 100 CUHK03
crops, nearly all full-body); with 0.3 a leg counts as present on 95 % of them,
with 0.5 on 88 %, with 0.7 on 75 %. ``head_radius = 0.24`` T (a head is ~23 cm
of a ~50 cm torso), ``leg_radius = 0.2`` T (a clothed thigh ~20 cm wide).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd

from priors.backends.pose_chart import (
    HEAD_LANDMARKS, L_ANKLE, L_FOOT, L_HIP, L_KNEE, R_ANKLE, R_FOOT, R_HIP, R_KNEE, capsule_coordinates, body_frame,
)
from priors.estimators import OK, CoarseParsing, MaskResult, ParsingResult

LEG_CHAINS = {
    CoarseParsing.LEFT_LEG: (L_HIP, L_KNEE, L_ANKLE, L_FOOT),
    CoarseParsing.RIGHT_LEG: (R_HIP, R_KNEE, R_ANKLE, R_FOOT),
}


@dataclass(frozen=True)
class ParsingParams:
    head_min_visibility: float = 0.5
    leg_min_visibility: float = 0.3
    head_radius: float = 0.24
    leg_radius: float = 0.2
    min_torso_frac: float = 0.1
    """the torso length is at least this fraction of the image height"""


def landmarks_to_parsing(
    landmarks: np.ndarray, person_mask: np.ndarray, params: ParsingParams = ParsingParams()
) -> np.ndarray:
    """CoarseParsing labels (H, W) uint8 from landmarks (33, 4: x, y pixel-index, z, visibility) and a mask (H, W)."""
    h, w = person_mask.shape
    mask = np.asarray(person_mask, dtype=bool)
    labels = np.where(mask, np.uint8(CoarseParsing.OTHER), np.uint8(CoarseParsing.BACKGROUND)).astype(np.uint8)
    lm = np.asarray(landmarks, dtype=np.float64)
    if not np.isfinite(lm).all():
        return labels
    _, _, T, _, to_left = body_frame(lm, h, params.min_torso_frac)
    rows, cols = np.nonzero(mask)  # every class lives inside the mask
    P = np.stack([cols, rows], axis=1).astype(np.float32)
    out = labels[rows, cols]

    A, B, owner = [], [], []
    for cls, chain in LEG_CHAINS.items():
        visible = [j for j in chain if lm[j, 3] >= params.leg_min_visibility]
        for a, b in zip(visible[:-1], visible[1:]):
            A.append(lm[a, :2]), B.append(lm[b, :2]), owner.append(int(cls))
    if A and P.size:
        r = np.full(len(A), params.leg_radius * T)
        score, _, _ = capsule_coordinates(P, np.array(A), np.array(B), r, r, to_left)
        best = np.argmin(score, axis=0)
        inside = score[best, np.arange(P.shape[0])] <= 1.0
        out[inside] = np.asarray(owner, dtype=np.uint8)[best[inside]]

    head = [j for j in HEAD_LANDMARKS if lm[j, 3] >= params.head_min_visibility]
    if head and P.size:
        c = lm[head, :2].mean(axis=0)
        out[((P - c) ** 2).sum(axis=1) <= (params.head_radius * T) ** 2] = CoarseParsing.HEAD
    labels[rows, cols] = out
    return labels


def _runner(min_detection_confidence: float, canvas: int, pad: float):
    from priors.backends import mediapipe_runner as mpr

    attempts = ((float(pad), "gray"),) + mpr.DEFAULT_POSE_ATTEMPTS[1:]
    return mpr.get_runner(attempts, canvas, 1.0, min_detection_confidence), mpr.mediapipe_version()


class SelfieSegmentation:
    """Segmentation source ``pose``: mediapipe selfie segmentation (general model).

    ``threshold`` on the person probability (default 0.5, the model's decision
    point); status ``"no_person"`` when the mask covers less than
    ``min_area_frac`` (default 0.02) of the crop.
    """

    name = "mediapipe-selfie"
    weights_sha256 = None

    def __init__(self, threshold: float = 0.5, min_area_frac: float = 0.02, canvas: int = 256,
                 min_detection_confidence: float = 0.5, pad: float = 3.0) -> None:
        self.threshold = float(threshold)
        self.min_area_frac = float(min_area_frac)
        self._runner, mp_version = _runner(min_detection_confidence, canvas, pad)
        self.version = f"0.1+mediapipe{mp_version}"
        self.params: dict[str, Any] = {
            "threshold": self.threshold, "min_area_frac": self.min_area_frac,
            "seg_pad": self._runner.seg_pad, "canvas": self._runner.canvas, "selfie_model_selection": 0,
        }

    def segment(self, images: np.ndarray, rows: pd.DataFrame) -> MaskResult:
        mask = self._runner.selfie(np.asarray(images)) >= self.threshold
        status = [OK if m.mean() >= self.min_area_frac else "no_person" for m in mask]
        return MaskResult(mask=mask, status=status)


class PoseParsing:
    """Parsing source ``pose``: head disc + leg capsules from BlazePose, rest of the selfie mask (module doc).

    Status: ``"ok"``, ``"pose_not_found"`` (labels = the mask as ``OTHER``) or
    ``"no_person"`` (pose found but the mask covers under ``min_area_frac`` of the crop).
    """

    name = "mediapipe-pose-parsing"
    weights_sha256 = None

    def __init__(self, seg_threshold: float = 0.5, min_area_frac: float = 0.02, pad: float = 3.0, canvas: int = 256,
                 min_detection_confidence: float = 0.5, **geometry: Any) -> None:
        self.geometry = ParsingParams(**geometry)
        self.seg_threshold = float(seg_threshold)
        self.min_area_frac = float(min_area_frac)
        self._runner, mp_version = _runner(min_detection_confidence, canvas, pad)
        self.version = f"0.1+mediapipe{mp_version}"
        self.params: dict[str, Any] = {
            **self._runner.params, "seg_threshold": self.seg_threshold, "min_area_frac": self.min_area_frac,
            **asdict(self.geometry),
        }

    def parse(self, images: np.ndarray, rows: pd.DataFrame) -> ParsingResult:
        images = np.asarray(images)
        pose = self._runner.pose(images)
        mask = self._runner.selfie(images) >= self.seg_threshold
        labels = np.where(mask, np.uint8(CoarseParsing.OTHER), np.uint8(CoarseParsing.BACKGROUND)).astype(np.uint8)
        status = []
        for k in range(len(images)):
            if not pose.found[k]:
                status.append("pose_not_found")
            elif mask[k].mean() < self.min_area_frac:
                status.append("no_person")
            else:
                labels[k] = landmarks_to_parsing(pose.landmarks[k], mask[k], self.geometry)
                status.append(OK)
        return ParsingResult(labels=labels, status=status)


__all__ = ["LEG_CHAINS", "ParsingParams", "PoseParsing", "SelfieSegmentation", "landmarks_to_parsing"]

"""``pose`` parsing and segmentation sources for MPN's coarse prior (MPN Sec. 3.2).

MPN's prior needs (a) whether the head and the legs are in the crop and (b) a
person mask. With only mediapipe's bundled CPU models (see
:mod:`priors.backends.mediapipe_runner`), both from one BlazePose call:

* :class:`PoseSegmentation` — person mask = BlazePose's own segmentation
  probability ``>= threshold`` (``source="selfie"``: the older selfie model,
  made for front-facing upper bodies; it missed heads and legs of people seen
  from behind or in profile);
* :class:`PoseParsing` — a :class:`~priors.estimators.CoarseParsing` map drawn
  from BlazePose landmarks (:func:`landmarks_to_parsing`):

  - ``HEAD``: a disc around the mean of the *seen* nose / eyes / ears
    (visibility ``>= head_min_visibility`` and inside the crop); none if no head
    landmark is seen;
  - ``LEFT_LEG`` / ``RIGHT_LEG`` (the person's own sides, after
    :func:`~priors.backends.pose_chart.canonical_sides`): capsules along the chain
    hip -> knee -> ankle -> foot tip, joining consecutive *seen*
    (``>= leg_min_visibility``, inside the crop) landmarks of that chain; none
    if fewer than two are seen. A visible shoe counts: it shows the lower body
    is in the crop, which is what MPN's leg check protects;
  - ``OTHER``: the rest of the person mask.

  The head and the legs are *not* cut by the person mask: the presence check
  must not depend on the mask reaching the head (the selfie mask often did
  not, and a visible head was reported absent). A landmark outside the crop
  (a person cut at the hips by the box: BlazePose still places the ankles,
  below the image) is never seen. Sizes are fractions of the torso length
  ``T`` (shoulder midpoint -> hip midpoint). Where both legs' capsules
  overlap, a pixel goes to the leg whose axis is nearer in units of its radius.

Defaults: ``head_min_visibility = 0.5`` (BlazePose's visibility is the
probability that the point is in view and not occluded; face points of a found
pose are almost always ~1), ``leg_min_visibility = 0.3``: on low-resolution
crops knee/ankle visibility is low even for plainly visible legs (median ~0.75,
lower quartile ~0.45 on 187 found poses of mini-Market-1501 + 100 CUHK03
crops, nearly all full-body); with 0.3 a leg counts as present on 95 % of them,
with 0.5 on 88 %, with 0.7 on 75 %. ``head_radius = 0.24`` T (a head is ~23 cm
of a ~50 cm torso), ``leg_radius = 0.2`` T (a clothed thigh ~20 cm wide).

Status: ``"pose_not_found"`` means the *estimator* failed (MPN records its
fallback as ``estimator_failed``, not as absent parts).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd

from priors.backends.pose_geometry import (
    HEAD_LANDMARKS, L_ANKLE, L_FOOT, L_HIP, L_KNEE, R_ANKLE, R_FOOT, R_HIP, R_KNEE, body_frame, body_view,
    canonical_sides, capsule_coordinates, in_crop, mask_support, seen_landmarks,
)
from priors.estimators import OK, CoarseParsing, MaskResult, ParsingResult

LEG_CHAINS = {
    CoarseParsing.LEFT_LEG: (L_HIP, L_KNEE, L_ANKLE, L_FOOT),
    CoarseParsing.RIGHT_LEG: (R_HIP, R_KNEE, R_ANKLE, R_FOOT),
}


@dataclass(frozen=True)
class ParsingParams:
    head_min_visibility: float = 0.5
    leg_min_visibility: float = 0.5
    head_radius: float = 0.24
    leg_radius: float = 0.2
    min_torso_frac: float = 0.1
    """the torso length is at least this fraction of the image height"""
    outside_margin: float = 0.02
    """a landmark farther than this fraction of the crop's size outside it is not seen"""
    min_mask_support: float = 0.6
    """the hip -> knee segment still counts, although its ends are not both seen, when the hip is in the
    crop and the person mask covers this fraction of its capsule (see ``ChartParams.min_mask_support``)"""


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
    _, _, T, _, _ = body_frame(lm, h, params.min_torso_frac)
    lm = canonical_sides(lm, *body_view(lm, T))
    _, _, T, _, to_left = body_frame(lm, h, params.min_torso_frac)

    def seen(min_visibility: float) -> np.ndarray:
        return seen_landmarks(lm, (h, w), min_visibility, params.outside_margin)

    rows, cols = np.mgrid[0:h, 0:w]
    P = np.stack([cols.ravel(), rows.ravel()], axis=1).astype(np.float32)
    out = labels.ravel()
    legs_seen = seen(params.leg_min_visibility)
    inside = in_crop(lm, (h, w), params.outside_margin)
    evidence = not mask.all()
    radius = params.leg_radius * T
    A, B, owner = [], [], []
    for cls, chain in LEG_CHAINS.items():
        visible = [j for j in chain if legs_seen[j]]
        segments = list(zip(visible[:-1], visible[1:]))
        if evidence:  # segments the mask shows although BlazePose gives them a low visibility
            a, b = chain[0], chain[1]  # hip -> knee only (lower legs: see ChartParams.min_mask_support)
            if inside[a] and not (legs_seen[a] and legs_seen[b]) and \
                    mask_support(mask, lm[a, :2], lm[b, :2], radius) >= params.min_mask_support:
                segments.append((a, b))
        for a, b in segments:
            A.append(lm[a, :2]), B.append(lm[b, :2]), owner.append(int(cls))
    if A:
        r = np.full(len(A), params.leg_radius * T)
        score, _, _ = capsule_coordinates(P, np.array(A), np.array(B), r, r, to_left)
        best = np.argmin(score, axis=0)
        inside = score[best, np.arange(P.shape[0])] <= 1.0
        out[inside] = np.asarray(owner, dtype=np.uint8)[best[inside]]

    head_seen = seen(params.head_min_visibility)
    head = [j for j in HEAD_LANDMARKS if head_seen[j]]
    if head:
        c = lm[head, :2].mean(axis=0)
        out[((P - c) ** 2).sum(axis=1) <= (params.head_radius * T) ** 2] = CoarseParsing.HEAD
    return out.reshape(h, w)


def _runner_args(min_detection_confidence: float | None, canvas: int | None, pad: float) -> tuple:
    from priors.backends import mediapipe_runner as mpr

    attempts = ((float(pad), "gray"),) + mpr.DEFAULT_POSE_ATTEMPTS[1:]
    conf = mpr.DEFAULT_MIN_DETECTION_CONFIDENCE if min_detection_confidence is None else min_detection_confidence
    return attempts, canvas or mpr.DEFAULT_CANVAS, 1.0, conf


class _ProcessRunner:
    """``_runner``: this process's mediapipe runner, looked up on every call (see ``PoseChartEstimator._runner``)."""

    _runner_args: tuple

    @property
    def _runner(self):
        from priors.backends import mediapipe_runner as mpr

        return mpr.get_runner(*self._runner_args)

    @staticmethod
    def _mediapipe_version() -> str:
        from priors.backends import mediapipe_runner as mpr

        return mpr.mediapipe_version()


class PoseSegmentation(_ProcessRunner):
    """Segmentation source ``pose``: BlazePose's own person segmentation (``source="selfie"``: the selfie model).

    ``threshold`` on the person probability (default 0.5, the model's decision
    point). Status ``"pose_not_found"`` (estimator failed; BlazePose gives its mask
    only with a pose) or ``"no_person"`` when the mask covers less than
    ``min_area_frac`` (default 0.02) of the crop.
    """

    weights_sha256 = None

    def __init__(self, threshold: float = 0.5, min_area_frac: float = 0.02, canvas: int | None = None,
                 min_detection_confidence: float | None = None, pad: float = 3.0, source: str = "pose") -> None:
        if source not in ("pose", "selfie"):
            raise ValueError(f"source must be 'pose' or 'selfie', got {source!r}")
        self.source = source
        self.name = "mediapipe-pose-segmentation" if source == "pose" else "mediapipe-selfie"
        self.threshold = float(threshold)
        self.min_area_frac = float(min_area_frac)
        self._runner_args = _runner_args(min_detection_confidence, canvas, pad)
        self.version = f"0.2+mediapipe{self._mediapipe_version()}"
        self.params: dict[str, Any] = {"threshold": self.threshold, "min_area_frac": self.min_area_frac,
                                       "source": source, **self._runner.params}

    def segment(self, images: np.ndarray, rows: pd.DataFrame) -> MaskResult:
        images = np.asarray(images)
        if self.source == "selfie":
            mask = self._runner.selfie(images) >= self.threshold
            return MaskResult(mask=mask, status=[OK if m.mean() >= self.min_area_frac else "no_person" for m in mask])
        pose = self._runner.pose(images)
        mask = pose.mask >= self.threshold
        status = ["pose_not_found" if not f else OK if m.mean() >= self.min_area_frac else "no_person"
                  for f, m in zip(pose.found, mask)]
        return MaskResult(mask=mask, status=status)


SelfieSegmentation = PoseSegmentation  # the name this source had before BlazePose's own mask replaced selfie's


class PoseParsing(_ProcessRunner):
    """Parsing source ``pose``: head disc + leg capsules from BlazePose, rest of its person mask (module doc).

    Status: ``"ok"`` or ``"pose_not_found"`` (labels all background: the estimator failed).
    ``quality`` per image: ``visible_landmarks`` (seen, of 33) and ``view``.
    """

    name = "mediapipe-pose-parsing"
    weights_sha256 = None

    def __init__(self, seg_threshold: float = 0.5, min_area_frac: float = 0.02, pad: float = 3.0,
                 canvas: int | None = None, min_detection_confidence: float | None = None, **geometry: Any) -> None:
        self.geometry = ParsingParams(**geometry)
        self.seg_threshold = float(seg_threshold)
        self.min_area_frac = float(min_area_frac)
        self._runner_args = _runner_args(min_detection_confidence, canvas, pad)
        self.version = f"0.2+mediapipe{self._mediapipe_version()}"
        self.params: dict[str, Any] = {
            **self._runner.params, "seg_threshold": self.seg_threshold, "min_area_frac": self.min_area_frac,
            **asdict(self.geometry),
        }

    def parse(self, images: np.ndarray, rows: pd.DataFrame) -> ParsingResult:
        images = np.asarray(images)
        b, h, w = images.shape[:3]
        pose = self._runner.pose(images)
        mask = pose.mask >= self.seg_threshold
        labels = np.zeros((b, h, w), np.uint8)
        status, seen, view = [], np.zeros(b, np.int64), [""] * b
        for k in range(b):
            if not pose.found[k]:
                status.append("pose_not_found")
                continue
            labels[k] = landmarks_to_parsing(pose.landmarks[k], mask[k], self.geometry)
            T = body_frame(pose.landmarks[k].astype(np.float64), h, self.geometry.min_torso_frac)[2]
            seen[k], view[k] = int(seen_landmarks(pose.landmarks[k], (h, w), 0.5, self.geometry.outside_margin).sum()), \
                body_view(pose.landmarks[k], T)[0]
            status.append(OK)
        quality = {"visible_landmarks": seen, "view": np.array(view, dtype=object)}
        return ParsingResult(labels=labels, status=status, quality=quality)


__all__ = ["LEG_CHAINS", "ParsingParams", "PoseParsing", "PoseSegmentation", "SelfieSegmentation",
           "landmarks_to_parsing"]

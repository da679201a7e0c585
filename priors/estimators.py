"""The one interface every estimator backend implements, and the backend registry.

Two kinds of estimator feed the priors:

* **dense semantics** (DSA-reID): per image an IUV map in the image frame —
  ``i`` the DensePose part index 0..24 (0 = background), ``u``/``v`` in [0, 1].
* **parsing / segmentation** (MPN Sec. 3.2): per image a coarse parsing map in
  :class:`CoarseParsing` classes and/or a binary person mask.

Backends receive a batch of store images (``(B, H, W, 3)`` uint8 RGB at the
store's canonical size) plus the matching index rows (a pandas DataFrame with
at least ``image_id``, ``relpath``, ``split``), and return arrays in that same
frame, with one status string per image: ``"ok"`` or a short reason
(``"no_person"``, ``"pose_not_found"``, ...). A backend never raises for one bad
image; it reports the reason and the flow records a failure row.

Backends are looked up by name through :func:`dense_estimator`,
:func:`parsing_source` and :func:`segmentation_source`; heavy optional
dependencies are imported only inside the backend module, when it is built.
"""
from __future__ import annotations

import enum
import hashlib
import importlib
import os
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import pandas as pd

OK = "ok"


class CoarseParsing(enum.IntEnum):
    """Coarse parsing classes every parsing source maps its labels onto.

    MPN's presence checks only need the head and the two legs; everything else
    of the person is ``OTHER``.
    """

    BACKGROUND = 0
    HEAD = 1
    LEFT_LEG = 2
    RIGHT_LEG = 3
    OTHER = 4


@dataclass
class DenseResult:
    """IUV for a batch: ``i`` (B,H,W) uint8 in 0..24, ``u``/``v`` (B,H,W) float32 in [0,1]."""

    i: np.ndarray
    u: np.ndarray
    v: np.ndarray
    status: list[str]
    quality: dict[str, np.ndarray] | None = None
    """optional per-image quality columns (B,) each, e.g. ``visible_landmarks``; stored in the stats table"""

    def __post_init__(self) -> None:
        if not (self.i.shape == self.u.shape == self.v.shape) or self.i.ndim != 3:
            raise ValueError(f"i/u/v must share a (B,H,W) shape, got {self.i.shape}, {self.u.shape}, {self.v.shape}")
        if len(self.status) != self.i.shape[0]:
            raise ValueError("one status per image")


@dataclass
class ParsingResult:
    """Coarse parsing for a batch: ``labels`` (B,H,W) uint8 in :class:`CoarseParsing`."""

    labels: np.ndarray
    status: list[str]
    quality: dict[str, np.ndarray] | None = None
    """optional per-image quality columns (B,) each, e.g. ``visible_landmarks``; stored in the stats table"""


@dataclass
class MaskResult:
    """Person segmentation for a batch: ``mask`` (B,H,W) bool."""

    mask: np.ndarray
    status: list[str]


class Estimator(Protocol):
    """What every backend exposes for provenance."""

    name: str
    version: str
    weights_sha256: str | None
    params: dict[str, Any]


class DenseEstimator(Estimator, Protocol):
    def estimate(self, images: np.ndarray, rows: pd.DataFrame) -> DenseResult: ...


class ParsingSource(Estimator, Protocol):
    def parse(self, images: np.ndarray, rows: pd.DataFrame) -> ParsingResult: ...


class SegmentationSource(Estimator, Protocol):
    def segment(self, images: np.ndarray, rows: pd.DataFrame) -> MaskResult: ...


def provenance_of(est: Estimator) -> dict[str, Any]:
    """The producer part of a group's provenance for one backend."""
    return {
        "name": est.name,
        "version": est.version,
        "weights_sha256": est.weights_sha256,
        "params": dict(est.params),
    }


# name -> "module:factory". Factories take keyword options (weights, device, root, ...).
DENSE_BACKENDS = {
    "densepose": "priors.backends.densepose:DensePoseEstimator",
    "densepose-dump": "priors.backends.densepose_dump:DensePoseDumpEstimator",
    "pose-chart": "priors.backends.pose_chart:PoseChartEstimator",
    "oracle": "priors.backends.oracle:OracleDense",
}
PARSING_BACKENDS = {
    "densepose": "priors.backends.iuv_parsing:IUVParsing",
    "pose": "priors.backends.pose_parsing:PoseParsing",
    "onnx": "priors.backends.onnx_parsing:OnnxParsing",
    "oracle": "priors.backends.oracle:OracleParsing",
}
SEGMENTATION_BACKENDS = {
    "densepose": "priors.backends.iuv_parsing:IUVSegmentation",
    "pose": "priors.backends.pose_parsing:PoseSegmentation",
    "maskrcnn": "priors.backends.maskrcnn:MaskRCNNSegmentation",
    "oracle": "priors.backends.oracle:OracleSegmentation",
}


def _build(table: dict[str, str], kind: str, name: str, **options: Any):
    if name not in table:
        raise ValueError(f"unknown {kind} backend {name!r}; choose one of {sorted(table)}")
    module, attr = table[name].split(":")
    return getattr(importlib.import_module(module), attr)(**options)


def dense_estimator(name: str, **options: Any) -> DenseEstimator:
    return _build(DENSE_BACKENDS, "dense-semantics", name, **options)


def parsing_source(name: str, **options: Any) -> ParsingSource:
    return _build(PARSING_BACKENDS, "parsing", name, **options)


def segmentation_source(name: str, **options: Any) -> SegmentationSource:
    return _build(SEGMENTATION_BACKENDS, "segmentation", name, **options)


def file_sha256(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file (model weights, dumps), streamed: recorded in provenance."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def optional_import(module: str, install_hint: str):
    """Import an optional heavy dependency or fail with what to install."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:  # pragma: no cover - message path tested via a fake module name
        raise ImportError(f"{module} is required for this backend: {install_hint}") from exc


__all__ = [
    "OK",
    "CoarseParsing",
    "DenseResult",
    "ParsingResult",
    "MaskResult",
    "DenseEstimator",
    "ParsingSource",
    "SegmentationSource",
    "provenance_of",
    "dense_estimator",
    "parsing_source",
    "segmentation_source",
    "optional_import",
    "file_sha256",
]

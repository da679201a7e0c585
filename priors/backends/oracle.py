"""Oracle estimators: the ground truth of a synthetic world (:mod:`priors.synthetic`) as backends.

The synthetic generator writes, next to every image ``<folder>/<stem>.jpg``, the truth an ideal
estimator would give in ``groundtruth/<folder>/<stem>.npz`` (DensePose ``i``, ``u``, ``v``; LIP
``parsing``; person ``mask``). These backends read it back for the images of a store batch, so the
priors (DSA-reID DSAP-images, MPN strip priors) can be built and tested with exact inputs:

* :class:`OracleDense` -> :class:`DenseResult` (``estimate``);
* :class:`OracleParsing` -> :class:`ParsingResult` in :class:`CoarseParsing` classes (``parse``);
* :class:`OracleSegmentation` -> :class:`MaskResult`, the person with accessories (``segment``).

``root`` is the synthetic dataset folder (the flows pass the store's ``attrs['source_root']``). The
truth is brought to the store's image size (``images.shape[1:3]``) by nearest-neighbour resampling
with centred pixels (``src = floor((dst + 0.5) * in / out)``), the same full-frame resize ingest
applies to the images. An image without a sidecar gets status ``"no_groundtruth"`` (zeros), one whose
truth shows no person ``"no_person"``; nothing raises for a single image.

LIP -> CoarseParsing (MPN Sec. 3.2 counts head and leg pixels of the parsing map):

* HEAD = hat, hair, sunglasses, face (the neck is parsed as face);
* LEFT_LEG / RIGHT_LEG = the whole limb, not only bare skin: LIP left/right leg and shoe, plus every
  other person pixel (trousers, skirt, socks) whose DensePose part is that leg (upper/lower leg, front
  or back) or that foot. LIP has no sided trouser class; the oracle knows the side from the IUV truth,
  so a person in long trousers still has two legs, as MPN's presence check expects;
* OTHER = any other person pixel (torso, arms, hands, bag, waistband, hair over the back ...);
* BACKGROUND = LIP background.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from priors.estimators import OK, CoarseParsing, DenseResult, MaskResult, ParsingResult

NO_GROUNDTRUTH = "no_groundtruth"
NO_PERSON = "no_person"

_LEFT_LEG_PARTS = (5, 8, 10, 12, 14)  # left foot, upper and lower left leg (back, front)
_RIGHT_LEG_PARTS = (6, 7, 9, 11, 13)


def nearest_resize(arr: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize of the first two axes of ``arr`` to ``size`` = (H, W), centred pixels."""
    h, w = arr.shape[:2]
    H, W = size
    if (h, w) == (H, W):
        return arr.copy()
    rows = np.minimum(((np.arange(H) + 0.5) * (h / H)).astype(np.intp), h - 1)
    cols = np.minimum(((np.arange(W) + 0.5) * (w / W)).astype(np.intp), w - 1)
    return arr[rows[:, None], cols[None, :]]


def _parsing_groups(root: Path | None) -> dict[str, list[int]]:
    from priors.synthetic.labels import LIP_HEAD, LIP_LEFT_LEG, LIP_RIGHT_LEG

    groups = {"head": list(LIP_HEAD), "left_leg": list(LIP_LEFT_LEG), "right_leg": list(LIP_RIGHT_LEG)}
    meta = root / "groundtruth" / "meta.json" if root is not None else None
    if meta is not None and meta.is_file():
        groups.update({k: v for k, v in json.loads(meta.read_text()).get("parsing_groups", {}).items() if k in groups})
    return groups


def coarse_from_truth(parsing: np.ndarray, i: np.ndarray, groups: dict[str, list[int]] | None = None) -> np.ndarray:
    """CoarseParsing labels (uint8, same shape) from LIP ``parsing`` and DensePose ``i`` (module docstring rules)."""
    groups = groups or _parsing_groups(None)
    out = np.where(parsing > 0, CoarseParsing.OTHER, CoarseParsing.BACKGROUND).astype(np.uint8)
    person = parsing > 0
    head = np.isin(parsing, groups["head"])
    left = (np.isin(parsing, groups["left_leg"]) | (person & np.isin(i, _LEFT_LEG_PARTS))) & ~head
    right = (np.isin(parsing, groups["right_leg"]) | (person & np.isin(i, _RIGHT_LEG_PARTS))) & ~head & ~left
    out[left] = CoarseParsing.LEFT_LEG
    out[right] = CoarseParsing.RIGHT_LEG
    out[head] = CoarseParsing.HEAD
    return out


class _Oracle:
    """Shared sidecar reading for the three oracle backends."""

    name = "oracle"
    weights_sha256 = None

    def __init__(self, root: str | Path | None = None) -> None:
        self.root = Path(root) if root is not None else None
        self.version = self._version()
        self.params: dict[str, Any] = {"root": str(self.root) if self.root is not None else None}

    def _version(self) -> str:
        from priors.synthetic.dataset import GENERATOR_VERSION

        meta = self.root / "groundtruth" / "meta.json" if self.root is not None else None
        if meta is not None and meta.is_file():
            return str(json.loads(meta.read_text()).get("version", GENERATOR_VERSION))
        return GENERATOR_VERSION

    def _truth(self, images: np.ndarray, rows: pd.DataFrame) -> tuple[list[dict | None], tuple[int, int], list[str]]:
        """Per row the sidecar resized to the images' (H, W) (None if missing) and the status."""
        if self.root is None:
            raise ValueError(f"{type(self).__name__} needs root= the synthetic dataset folder (the store's attrs['source_root'])")
        if images.ndim != 4 or len(images) != len(rows):
            raise ValueError(f"images must be (B,H,W,3) with one row each, got {images.shape} for {len(rows)} rows")
        from priors.synthetic.dataset import load_sidecar

        size = tuple(images.shape[1:3])
        truths, status = [], []
        for relpath in rows["relpath"].astype(str):
            try:
                gt = load_sidecar(self.root, relpath)
            except (OSError, ValueError, KeyError):  # unreadable sidecar: report it, never raise for one image
                gt = None
            if gt is None:
                truths.append(None)
                status.append(NO_GROUNDTRUTH)
                continue
            gt = {k: nearest_resize(v, size) for k, v in gt.items()}
            truths.append(gt)
            status.append(OK if gt["mask"].any() else NO_PERSON)
        return truths, size, status


class OracleDense(_Oracle):
    """Dense-semantics backend: the true DensePose IUV of each synthetic image."""

    def estimate(self, images: np.ndarray, rows: pd.DataFrame) -> DenseResult:
        truths, (H, W), status = self._truth(images, rows)
        B = len(truths)
        i, u, v = np.zeros((B, H, W), np.uint8), np.zeros((B, H, W), np.float32), np.zeros((B, H, W), np.float32)
        for b, gt in enumerate(truths):
            if gt is not None:
                i[b], u[b], v[b] = gt["i"], gt["u"], gt["v"]
        return DenseResult(i=i, u=u, v=v, status=status)


class OracleParsing(_Oracle):
    """Parsing source: the true LIP parsing mapped to CoarseParsing (module docstring rules)."""

    def __init__(self, root: str | Path | None = None) -> None:
        super().__init__(root)
        self.groups = _parsing_groups(self.root)

    def parse(self, images: np.ndarray, rows: pd.DataFrame) -> ParsingResult:
        truths, (H, W), status = self._truth(images, rows)
        labels = np.zeros((len(truths), H, W), np.uint8)
        for b, gt in enumerate(truths):
            if gt is not None:
                labels[b] = coarse_from_truth(gt["parsing"], gt["i"], self.groups)
        return ParsingResult(labels=labels, status=status)


class OracleSegmentation(_Oracle):
    """Segmentation source: the true person mask, accessories included."""

    def segment(self, images: np.ndarray, rows: pd.DataFrame) -> MaskResult:
        truths, (H, W), status = self._truth(images, rows)
        mask = np.zeros((len(truths), H, W), bool)
        for b, gt in enumerate(truths):
            if gt is not None:
                mask[b] = gt["mask"]
        return MaskResult(mask=mask, status=status)


__all__ = ["OracleDense", "OracleParsing", "OracleSegmentation", "coarse_from_truth", "nearest_resize", "NO_GROUNDTRUTH"]

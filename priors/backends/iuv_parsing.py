"""Coarse parsing and person mask from a DensePose IUV map (MPN Sec. 3.2 tools, from DSA-reID's estimates).

MPN (Sec. 3.2) needs a human-parsing map (for the head / leg presence check and
the parsing foreground) and a segmentation mask. When DensePose estimates are
already in the store (``estimates/<backend>``, array ``i``), both come for free:

* head = DensePose parts 23, 24;
* legs = parts 7..14 (upper and lower legs, front and back); DensePose's
  left leg is 8, 10, 12, 14 and its right leg 7, 9, 11, 13;
* every other part 1..22 (torso, hands, feet, arms) is ``OTHER``;
* foreground (the segmentation) = any part, ``i > 0``.

The backends do not read the store themselves: the flow injects a callable
``iuv_lookup(rows) -> i`` (see :func:`iuv_lookup_from_group`).
"""
from __future__ import annotations

from typing import Any, Callable

import numpy as np
import pandas as pd

from priors.estimators import OK, CoarseParsing, MaskResult, ParsingResult

HEAD_PARTS = (23, 24)
LEFT_LEG_PARTS = (8, 10, 12, 14)
RIGHT_LEG_PARTS = (7, 9, 11, 13)
N_PARTS = 24


def _part_lut() -> np.ndarray:
    lut = np.full(256, CoarseParsing.OTHER, dtype=np.uint8)  # values > 24 are invalid; treat as person
    lut[0] = CoarseParsing.BACKGROUND
    lut[list(HEAD_PARTS)] = CoarseParsing.HEAD
    lut[list(LEFT_LEG_PARTS)] = CoarseParsing.LEFT_LEG
    lut[list(RIGHT_LEG_PARTS)] = CoarseParsing.RIGHT_LEG
    return lut


PART_TO_COARSE = _part_lut()
"""Lookup table DensePose part index (0..24) -> :class:`CoarseParsing` label."""


def iuv_to_coarse_parsing(i: np.ndarray) -> np.ndarray:
    """Map DensePose part indices (any shape, integers 0..24) to CoarseParsing labels (uint8)."""
    i = np.asarray(i)
    if i.dtype != np.uint8:
        if i.size and (i.min() < 0 or i.max() > N_PARTS):
            raise ValueError(f"DensePose part indices must lie in 0..{N_PARTS}")
        i = i.astype(np.uint8)
    return PART_TO_COARSE[i]


IUVLookup = Callable[[pd.DataFrame], np.ndarray]


def iuv_lookup_from_group(group: Any) -> IUVLookup:
    """``iuv_lookup`` reading array ``i`` of a store group (``estimates/<backend>``) by ``rows.image_id``."""

    def lookup(rows: pd.DataFrame) -> np.ndarray:
        return np.asarray(group.read("i", rows["image_id"].to_numpy()))

    return lookup


class _IUVSource:
    version = "1"
    weights_sha256 = None

    def __init__(self, store_group: str | None = None, iuv_lookup: IUVLookup | None = None) -> None:
        self.store_group = store_group
        self.iuv_lookup = iuv_lookup
        self.params = {"store_group": store_group}

    def _parts(self, images: np.ndarray, rows: pd.DataFrame) -> tuple[np.ndarray, list[str]]:
        if self.iuv_lookup is None:
            raise RuntimeError(
                f"{type(self).__name__} needs iuv_lookup(rows) -> i (B,H,W); the build-mpn-priors flow "
                f"passes one reading {self.store_group or 'estimates/<backend>'}/i from the store"
            )
        i = np.asarray(self.iuv_lookup(rows))
        if i.shape != images.shape[:3]:
            raise ValueError(f"IUV part map {i.shape} does not match the images {images.shape[:3]}")
        present = (i.reshape(len(i), -1) != 0).any(axis=1)
        return i, [OK if p else "no_person" for p in present]


class IUVParsing(_IUVSource):
    """Parsing source: CoarseParsing labels from the store's DensePose ``i`` (head 23-24, legs 7-14)."""

    name = "iuv-parsing"

    def parse(self, images: np.ndarray, rows: pd.DataFrame) -> ParsingResult:
        i, status = self._parts(images, rows)
        return ParsingResult(labels=iuv_to_coarse_parsing(i), status=status)


class IUVSegmentation(_IUVSource):
    """Segmentation source: person mask = any DensePose part (``i > 0``)."""

    name = "iuv-segmentation"

    def segment(self, images: np.ndarray, rows: pd.DataFrame) -> MaskResult:
        i, status = self._parts(images, rows)
        return MaskResult(mask=i != 0, status=status)


__all__ = [
    "HEAD_PARTS",
    "LEFT_LEG_PARTS",
    "RIGHT_LEG_PARTS",
    "PART_TO_COARSE",
    "iuv_to_coarse_parsing",
    "iuv_lookup_from_group",
    "IUVParsing",
    "IUVSegmentation",
]

"""DensePose results made elsewhere: reading ``apply_net.py dump`` files (DSA-reID Sec. 3.1).

Where detectron2 runs on another machine, ``python apply_net.py dump <config>
<weights> <images> --output results.pkl`` writes, with ``torch.save``, a list
with one dict per image (``<images>`` is a file, a folder — not searched
recursively — or a quoted glob such as ``"Market-1501/*/*.jpg"`` for a dataset
with split subfolders; ``--opts KEY VALUE ...`` overrides config keys):

* ``file_name`` — the image path as given to ``apply_net``;
* ``scores`` — ``(K,)`` detection scores;
* ``pred_boxes_XYXY`` — ``(K, 4)`` boxes in that image's pixel frame;
* ``pred_densepose`` — ``K`` ``DensePoseChartResultWithConfidences``, each with
  ``labels`` ``(h, w)`` and ``uv`` ``(2, h, w)`` in its box frame.

**Trust.** Reading such a file means ``torch.load(weights_only=False)``, i.e.
unpickling, and a pickle can execute arbitrary code while it loads. The
estimator therefore refuses unless ``trust_dump=True`` says the file is yours.
Classes from ``densepose``/``detectron2`` that are not importable here are
replaced by plain attribute holders (:class:`DumpRecord`), so detectron2 need
not be installed to read a dump.

**Matching.** Dump entries are matched to store rows by file basename; where
several entries share a basename, the one whose path ends with the row's
``relpath`` wins. The dump was made on the *original* dataset images, so the
chart is pasted into the store image with ``box_scale = (orig_height / H,
orig_width / W)`` (nearest neighbour, :func:`priors.densepose_charts.paste_chart`);
the crop IoU that picks the person is measured in the original frame.

Statuses: ``ok``, ``not_in_dump``, ``ambiguous_in_dump``, ``no_person``,
``low_crop_iou``, ``no_parts``.
"""
from __future__ import annotations

import os
import pickle
import types
from collections import defaultdict
from typing import Any

import numpy as np
import pandas as pd

from priors.backends.densepose import file_sha256
from priors.densepose_charts import NO_PERSON, best_instance_iuv, to_numpy
from priors.estimators import DenseResult

NOT_IN_DUMP = "not_in_dump"
AMBIGUOUS_IN_DUMP = "ambiguous_in_dump"

UNTRUSTED_MESSAGE = (
    "refusing to read the DensePose dump {path!r} without trust_dump=True: an apply_net.py dump is a "
    "torch.save pickle and reading it runs torch.load(weights_only=False), which unpickles and can execute "
    "arbitrary code embedded in the file. Pass trust_dump=True (CLI: --trust-dump) only for a dump you "
    "made yourself or otherwise trust."
)


class DumpRecord:
    """Stand-in for a pickled densepose/detectron2 object whose class is not importable here."""

    def __setstate__(self, state: Any) -> None:
        if isinstance(state, tuple) and len(state) == 2:  # (dict state, slot state)
            for part in state:
                if part:
                    self.__dict__.update(part)
        elif state:
            self.__dict__.update(state)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(sorted(self.__dict__))})"


_STAND_INS: dict[tuple[str, str], type] = {}


class _TolerantUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        try:
            return super().find_class(module, name)
        except (ImportError, AttributeError):
            if module.split(".")[0] not in ("densepose", "detectron2"):
                raise
            key = (module, name)
            if key not in _STAND_INS:
                _STAND_INS[key] = type(name, (DumpRecord,), {"__module__": f"stand_in.{module}"})
            return _STAND_INS[key]


_tolerant_pickle = types.ModuleType("reid_priors_tolerant_pickle")
_tolerant_pickle.Unpickler = _TolerantUnpickler  # type: ignore[attr-defined]
_tolerant_pickle.load = lambda f, **kw: _TolerantUnpickler(f, **kw).load()  # type: ignore[attr-defined]


def load_densepose_dump(path: str | os.PathLike, trust_dump: bool = False) -> list[dict[str, Any]]:
    """Read an ``apply_net.py dump`` file (see the module docstring); needs ``trust_dump=True``."""
    if not trust_dump:
        raise PermissionError(UNTRUSTED_MESSAGE.format(path=str(path)))
    import torch

    with open(path, "rb") as f:
        data = torch.load(f, map_location="cpu", weights_only=False, pickle_module=_tolerant_pickle)
    if not isinstance(data, (list, tuple)) or not all(isinstance(e, dict) and "file_name" in e for e in data):
        raise ValueError(f"{path}: not an apply_net.py dump (expected a list of dicts with 'file_name')")
    for e in data:
        dp = e.get("pred_densepose")
        if dp is not None and not (
            isinstance(dp, (list, tuple)) and all(hasattr(r, "labels") and hasattr(r, "uv") for r in dp)
        ):
            raise ValueError(
                f"{path}: entry {e['file_name']!r} holds {type(dp).__name__}, not chart (IUV) results; "
                "re-run apply_net.py dump with a chart-based (IUV) DensePose config, not a CSE one"
            )
    return list(data)


def _norm(path: str) -> str:
    return str(path).replace("\\", "/")


class DensePoseDumpEstimator:
    """Dense-semantics estimator that looks results up in an ``apply_net.py dump``.

    Args:
        dump: path of the dump (``results.pkl``).
        trust_dump: must be ``True``; reading unpickles the file (module docstring).
        min_crop_iou: minimum IoU of the chosen detection with the crop.
    """

    name = "densepose-dump"
    version = "1"
    weights_sha256 = None  # the model ran elsewhere; the dump's own hash is in params

    def __init__(self, dump: str, trust_dump: bool = False, min_crop_iou: float = 0.0) -> None:
        self.entries = load_densepose_dump(dump, trust_dump=trust_dump)
        self.min_crop_iou = float(min_crop_iou)
        self._by_basename: dict[str, list[int]] = defaultdict(list)
        for k, e in enumerate(self.entries):
            self._by_basename[os.path.basename(_norm(e["file_name"]))].append(k)
        self.params: dict[str, Any] = {
            "dump": os.path.basename(dump),
            "dump_sha256": file_sha256(dump),
            "entries": len(self.entries),
            "min_crop_iou": self.min_crop_iou,
        }

    def lookup(self, relpath: str) -> tuple[dict[str, Any] | None, str]:
        """The dump entry for a store row's ``relpath``: ``(entry, "ok")`` or ``(None, reason)``."""
        rel = _norm(relpath).lstrip("/")
        candidates = self._by_basename.get(os.path.basename(rel), [])
        if len(candidates) > 1:
            candidates = [k for k in candidates if ("/" + _norm(self.entries[k]["file_name"])).endswith("/" + rel)]
            if len(candidates) != 1:
                return None, AMBIGUOUS_IN_DUMP
        if not candidates:
            return None, NOT_IN_DUMP
        return self.entries[candidates[0]], "ok"

    def estimate(self, images: np.ndarray, rows: pd.DataFrame) -> DenseResult:
        images = np.asarray(images)
        B, H, W = images.shape[:3]
        if len(rows) != B:
            raise ValueError(f"{B} images but {len(rows)} rows")
        i_out = np.zeros((B, H, W), np.uint8)
        u_out = np.zeros((B, H, W), np.float32)
        v_out = np.zeros((B, H, W), np.float32)
        has_orig = {"orig_height", "orig_width"} <= set(rows.columns)
        status: list[str] = []
        for b, row in enumerate(rows.itertuples(index=False)):
            entry, st = self.lookup(str(row.relpath))
            if entry is None:
                status.append(st)
                continue
            charts = entry.get("pred_densepose") or []
            boxes = to_numpy(entry.get("pred_boxes_XYXY", np.zeros((0, 4)))).reshape(-1, 4)
            if len(boxes) == 0 or len(charts) == 0:
                status.append(NO_PERSON)
                continue
            if len(charts) != len(boxes):
                raise ValueError(f"dump entry {entry['file_name']!r}: {len(boxes)} boxes but {len(charts)} charts")
            frame = (int(row.orig_height), int(row.orig_width)) if has_orig else (H, W)
            scores = entry.get("scores")
            i_out[b], u_out[b], v_out[b], st = best_instance_iuv(
                boxes, charts, frame, (H, W), None if scores is None else to_numpy(scores), self.min_crop_iou
            )
            status.append(st)
        return DenseResult(i=i_out, u=u_out, v=v_out, status=status)


__all__ = ["DensePoseDumpEstimator", "DumpRecord", "load_densepose_dump", "NOT_IN_DUMP", "AMBIGUOUS_IN_DUMP"]

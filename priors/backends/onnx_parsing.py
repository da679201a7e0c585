"""Human parsing with any user-exported ONNX network (the parsing tool of MPN Sec. 3.2).

MPN builds its prior from a human-parsing model (Sec. 3.2, Fig. 4). This backend
runs any LIP / ATR / CIHP style parser exported to ONNX with onnxruntime and
maps its classes onto :class:`~priors.estimators.CoarseParsing` through a
*label map*::

    {"background": [0], "head": [1, 2, 4, 13], "left_leg": [16, 18],
     "right_leg": [17, 19], "foreground": "all_but_background"}

``foreground`` is ``"all_but_background"`` (default) or an explicit list; class
ids may be given as names when the map has a ``"classes"`` list. Built-in
presets ``"lip"``, ``"atr"``, ``"cihp"`` use the datasets' class orders; their
head = hat + hair + sunglasses + face, and a leg = that side's naked leg + shoe
(pedestrians mostly wear trousers, an unsided class, so naked-leg pixels alone
would flag most images as legless; a visible shoe shows the lower body is in
the crop, which is what the leg check protects).

Pre-processing: RGB (or BGR) / 255, ``(x - mean) / std``, bilinear resize
(stretch, no letterbox) to the network input size, NCHW float32. Output: the
first output (or ``output_name``) as logits ``(B, C, h, w)`` — resized back
bilinearly, then argmax — or as labels ``(B, h, w)`` — resized back nearest.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pandas as pd

from priors.estimators import OK, CoarseParsing, ParsingResult, file_sha256, optional_import

LIP_CLASSES = (
    "Background", "Hat", "Hair", "Glove", "Sunglasses", "UpperClothes", "Dress", "Coat", "Socks", "Pants",
    "Jumpsuits", "Scarf", "Skirt", "Face", "Left-arm", "Right-arm", "Left-leg", "Right-leg", "Left-shoe", "Right-shoe",
)
CIHP_CLASSES = LIP_CLASSES[:10] + ("Torso-skin",) + LIP_CLASSES[11:]
ATR_CLASSES = (
    "Background", "Hat", "Hair", "Sunglasses", "Upper-clothes", "Skirt", "Pants", "Dress", "Belt",
    "Left-shoe", "Right-shoe", "Face", "Left-leg", "Right-leg", "Left-arm", "Right-arm", "Bag", "Scarf",
)


def _preset(classes: tuple[str, ...]) -> dict[str, Any]:
    return {
        "classes": list(classes),
        "background": ["Background"],
        "head": ["Hat", "Hair", "Sunglasses", "Face"],
        "left_leg": ["Left-leg", "Left-shoe"],
        "right_leg": ["Right-leg", "Right-shoe"],
        "foreground": "all_but_background",
    }


LABEL_MAP_PRESETS = {
    "lip": _preset(LIP_CLASSES),
    "cihp": _preset(CIHP_CLASSES),
    "atr": _preset(ATR_CLASSES),
}
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
INSTALL_HINT = "pip install 'reid-priors[onnx]'"


def load_label_map(label_map: str | Path | dict) -> dict[str, Any]:
    """A label map from a preset name (lip/atr/cihp), a JSON/YAML file or a dict."""
    if isinstance(label_map, dict):
        return dict(label_map)
    key = str(label_map)
    if key.lower() in LABEL_MAP_PRESETS:
        return dict(LABEL_MAP_PRESETS[key.lower()])
    path = Path(key)
    if not path.is_file():
        raise ValueError(f"label map {key!r} is neither a preset {sorted(LABEL_MAP_PRESETS)} nor a file")
    text = path.read_text()
    if path.suffix.lower() in (".yaml", ".yml"):
        import yaml

        return dict(yaml.safe_load(text))
    return dict(json.loads(text))


def label_lut(label_map: dict[str, Any], num_classes: int | None = None) -> np.ndarray:
    """Lookup table model class id -> CoarseParsing label.

    Its length is ``num_classes``, else the length of the map's ``classes``
    list, else 256 (ids the map does not name then follow the foreground rule).

    Classes listed under head / left_leg / right_leg get those labels; other
    foreground classes get ``OTHER``; background (and classes outside an
    explicit foreground list) get ``BACKGROUND``. A class in two of the
    head / leg groups is an error.
    """
    names = list(label_map.get("classes", []))

    def ids(key: str) -> list[int]:
        out = []
        for c in label_map.get(key, []) or []:
            if isinstance(c, str):
                if c not in names:
                    raise ValueError(f"label map {key}: unknown class name {c!r}")
                c = names.index(c)
            out.append(int(c))
        return out

    groups = {CoarseParsing.HEAD: ids("head"), CoarseParsing.LEFT_LEG: ids("left_leg"), CoarseParsing.RIGHT_LEG: ids("right_leg")}
    background = ids("background") if "background" in label_map else [0]
    fg = label_map.get("foreground", "all_but_background")
    fg_ids = None if fg == "all_but_background" else ids("foreground")
    seen: dict[int, str] = {}
    for label, members in groups.items():
        for c in members:
            if c in seen:
                raise ValueError(f"class {c} is both {seen[c]} and {label.name.lower()}")
            if c in background:
                raise ValueError(f"class {c} is both background and {label.name.lower()}")
            seen[c] = label.name.lower()
    every = background + sum(groups.values(), []) + (fg_ids or [])
    n = int(num_classes) if num_classes is not None else (len(names) if names else 256)
    if every and (max(every) >= n or min(every) < 0):
        raise ValueError(f"label map names classes outside 0..{n - 1}")
    lut = np.full(n, CoarseParsing.OTHER if fg_ids is None else CoarseParsing.BACKGROUND, dtype=np.uint8)
    if fg_ids is not None:
        lut[fg_ids] = CoarseParsing.OTHER
    lut[background] = CoarseParsing.BACKGROUND
    for label, members in groups.items():
        lut[members] = label
    return lut


class OnnxParsing:
    """Parsing source running a user-exported human-parsing ONNX model with onnxruntime.

    ``input_size`` (H, W) defaults to the model's static input size, else
    (512, 256). ``channel_order`` is the order the network expects ("rgb" or
    "bgr"; SCHP-style exports expect BGR with mean/std reversed).
    """

    name = "onnx-parsing"
    version = "1"

    def __init__(
        self,
        model: str,
        label_map: str | dict = "lip",
        input_size: tuple[int, int] | None = None,
        mean: tuple[float, float, float] = IMAGENET_MEAN,
        std: tuple[float, float, float] = IMAGENET_STD,
        channel_order: str = "rgb",
        device: str = "cpu",
        batch_size: int = 8,
        output_name: str | None = None,
    ) -> None:
        ort = optional_import("onnxruntime", INSTALL_HINT)
        if channel_order not in ("rgb", "bgr"):
            raise ValueError("channel_order must be 'rgb' or 'bgr'")
        providers = ["CPUExecutionProvider"]
        if device.startswith("cuda"):
            if "CUDAExecutionProvider" not in ort.get_available_providers():
                raise ValueError("device='cuda' but onnxruntime has no CUDAExecutionProvider (pip install onnxruntime-gpu)")
            providers = ["CUDAExecutionProvider", "CPUExecutionProvider"]
        self.session = ort.InferenceSession(str(model), providers=providers)
        inp = self.session.get_inputs()[0]
        self.input_name = inp.name
        self.output_name = output_name or self.session.get_outputs()[0].name
        dims = list(inp.shape)
        static_hw = tuple(dims[2:4]) if len(dims) == 4 and all(isinstance(d, int) for d in dims[2:4]) else None
        if input_size is not None and static_hw is not None and tuple(input_size) != static_hw:
            raise ValueError(f"input_size {tuple(input_size)} differs from the model's fixed input {static_hw}")
        self.input_size = tuple(int(v) for v in (input_size or static_hw or (512, 256)))
        self.batch_size = 1 if dims and dims[0] == 1 else int(batch_size)
        self.label_map = load_label_map(label_map)
        self.lut = label_lut(self.label_map, self.label_map.get("num_classes"))
        self.mean = np.asarray(mean, np.float32)
        self.std = np.asarray(std, np.float32)
        self.channel_order = channel_order
        self.weights_sha256 = file_sha256(model)
        self.params = {
            "model": Path(model).name,
            "label_map": label_map if isinstance(label_map, str) else "custom",
            "lut": self.lut.tolist(),
            "input_size": list(self.input_size),
            "mean": [float(v) for v in mean],
            "std": [float(v) for v in std],
            "channel_order": channel_order,
            "device": device,
            "onnxruntime": ort.__version__,
        }

    def _prepare(self, images: np.ndarray) -> np.ndarray:
        H, W = self.input_size
        x = np.stack([cv2.resize(im, (W, H), interpolation=cv2.INTER_LINEAR) for im in images]).astype(np.float32)
        if self.channel_order == "bgr":
            x = x[..., ::-1]
        x = (x / 255.0 - self.mean) / self.std
        return np.ascontiguousarray(x.transpose(0, 3, 1, 2), dtype=np.float32)

    def _labels_at(self, out: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
        """Class ids (B,H,W) at the image size from logits (B,C,h,w) or labels (B,h,w)/(B,1,h,w)."""
        H, W = hw
        if out.ndim == 4 and out.shape[1] > 1:
            if out.shape[1] > len(self.lut):
                raise ValueError(f"model outputs {out.shape[1]} classes, label map covers {len(self.lut)}")
            lab = []
            for logit in out.astype(np.float32):
                chw = np.ascontiguousarray(logit.transpose(1, 2, 0))
                up = cv2.resize(chw, (W, H), interpolation=cv2.INTER_LINEAR).reshape(H, W, -1)
                lab.append(up.argmax(axis=2))
            return np.stack(lab)
        lab = out.reshape(out.shape[0], out.shape[-2], out.shape[-1]).astype(np.int32)
        return np.stack([cv2.resize(m, (W, H), interpolation=cv2.INTER_NEAREST) for m in lab])

    def parse(self, images: np.ndarray, rows: pd.DataFrame) -> ParsingResult:
        images = np.asarray(images)
        B, H, W = images.shape[:3]
        labels = np.zeros((B, H, W), np.uint8)
        for s in range(0, B, self.batch_size):
            x = self._prepare(images[s : s + self.batch_size])
            out = np.asarray(self.session.run([self.output_name], {self.input_name: x})[0])
            ids = self._labels_at(out, (H, W))
            if ids.size and (ids.min() < 0 or ids.max() >= len(self.lut)):
                raise ValueError(f"model produced class ids outside the label map (0..{len(self.lut) - 1})")
            labels[s : s + len(x)] = self.lut[ids]
        return ParsingResult(labels=labels, status=[OK] * B)


__all__ = [
    "LIP_CLASSES",
    "ATR_CLASSES",
    "CIHP_CLASSES",
    "LABEL_MAP_PRESETS",
    "load_label_map",
    "label_lut",
    "file_sha256",
    "OnnxParsing",
]

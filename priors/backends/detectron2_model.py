"""Building a detectron2 model from a user's config and weights, with the weights' trust gate.

Shared by the ``densepose`` and ``maskrcnn`` backends.

**Weights are code too.** detectron2 reads ``.pkl`` checkpoints (its model zoo
format) with ``pickle.load``, and a pickle can execute arbitrary code while it
loads. Such a file is therefore refused unless ``trust_weights=True`` (CLI:
``--trust-weights``) says it is yours — the same wording and behaviour as
``--trust-dump`` for ``apply_net.py`` dumps. Every other file (``.pth``,
``.pt``: a ``state_dict`` or a ``DetectionCheckpointer`` checkpoint) is read
with ``torch.load(weights_only=True)``, which only rebuilds tensors and plain
containers; a ``.pth`` that needs more than that is refused the same way.
:func:`check_weights_trust` and :func:`load_weights_safely` need no detectron2.

**Provenance.** :func:`detectron2_provenance` records the detectron2 commit
(``$DETECTRON2_COMMIT``, else ``git rev-parse HEAD`` of the source folder the
package was installed from, else ``<venv>/detectron2-commit.txt`` written by
``scripts/densepose_env.sh``), the config file's sha256, the sha256 of the
merged config (the file with its ``_BASE_`` chain and overrides, as detectron2
uses it) and the weights' sha256.
"""
from __future__ import annotations

import hashlib
import os
import pickle
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable

import numpy as np
from PIL import Image

from priors.estimators import file_sha256, optional_import

PICKLE_SUFFIXES = (".pkl", ".pickle")

UNTRUSTED_WEIGHTS_MESSAGE = (
    "refusing to read the weights {path!r} without trust_weights=True: {why}, which unpickles and can execute "
    "arbitrary code embedded in the file. Pass trust_weights=True (CLI: --trust-weights) only for weights you "
    "made yourself or otherwise trust, or save them as a state_dict (.pth), which loads without it."
)
PKL_WHY = "detectron2 reads a .pkl checkpoint with pickle.load"
PTH_WHY = "it holds objects beyond tensors and containers, so it needs torch.load(weights_only=False)"

DETECTRON2_INSTALL_HINT = (
    "build detectron2 (and its DensePose project) from a local source folder with "
    "scripts/densepose_env.sh DETECTRON2_SRC VENV (see README, 'GPU machines')"
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


def resize_bgr(images_rgb: np.ndarray, size_hw: tuple[int, int]) -> np.ndarray:
    """RGB uint8 crops -> BGR at ``size_hw``, PIL bilinear (detectron2's ``ResizeTransform``)."""
    h, w = size_hw
    out = np.empty((len(images_rgb), h, w, 3), np.uint8)
    for k, img in enumerate(images_rgb):
        bgr = np.ascontiguousarray(img[:, :, ::-1])
        out[k] = bgr if bgr.shape[:2] == (h, w) else np.asarray(Image.fromarray(bgr).resize((w, h), Image.BILINEAR))
    return out


def needs_pickle(path: str | os.PathLike) -> bool:
    """Whether detectron2 would unpickle this weights file (``.pkl``)."""
    return str(path).lower().endswith(PICKLE_SUFFIXES)


def check_weights_trust(path: str | os.PathLike, trust_weights: bool) -> None:
    """Refuse a ``.pkl`` weights file unless ``trust_weights`` (``PermissionError``, see module docstring)."""
    if needs_pickle(path) and not trust_weights:
        raise PermissionError(UNTRUSTED_WEIGHTS_MESSAGE.format(path=str(path), why=PKL_WHY))


def check_model_files(config: str, weights: str, trust_weights: bool) -> None:
    """Both files exist (``FileNotFoundError``) and the weights pass :func:`check_weights_trust`."""
    for what, path in (("config", config), ("weights", weights)):
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{what} file not found: {path}")
    check_weights_trust(weights, trust_weights)


def load_weights_safely(path: str | os.PathLike, trust_weights: bool = False) -> dict[str, Any]:
    """A non-pickle weights file as ``{"model": state_dict, ...}`` (detectron2's checkpoint layout).

    Read with ``torch.load(weights_only=True)``; with ``trust_weights`` a file
    that needs full unpickling is read with ``weights_only=False``.
    """
    import torch

    if needs_pickle(path):
        raise ValueError(f"{path}: a .pkl is read by detectron2's own loader (check_weights_trust first)")
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if not trust_weights:
            raise PermissionError(UNTRUSTED_WEIGHTS_MESSAGE.format(path=str(path), why=PTH_WHY)) from exc
        loaded = torch.load(path, map_location="cpu", weights_only=False)
    if not isinstance(loaded, dict):
        raise ValueError(f"{path}: expected a state_dict or a checkpoint dict, got {type(loaded).__name__}")
    return loaded if "model" in loaded else {"model": loaded}


def _checkpointer(model, trust_weights: bool):
    """detectron2's ``DetectionCheckpointer`` reading non-pickle files through :func:`load_weights_safely`."""
    from detectron2.checkpoint import DetectionCheckpointer

    class GatedCheckpointer(DetectionCheckpointer):
        def _torch_load(self, f):  # detectron2's hook for non-.pkl files
            return load_weights_safely(f, trust_weights)

    return GatedCheckpointer(model)


def build_detectron2_model(
    config: str,
    weights: str,
    device: str = "cpu",
    trust_weights: bool = False,
    setup: Callable[[Any], None] | None = None,
    overrides: Callable[[Any], None] | None = None,
):
    """``(model in eval mode, frozen cfg)`` from a config YAML and a local weights file.

    ``setup(cfg)`` runs before the file is merged (e.g. ``add_densepose_config``),
    ``overrides(cfg)`` after it (score threshold, proposal counts).
    """
    check_model_files(config, weights, trust_weights)
    optional_import("detectron2", DETECTRON2_INSTALL_HINT)
    from detectron2.config import get_cfg
    from detectron2.modeling import build_model

    cfg = get_cfg()
    if setup is not None:
        setup(cfg)
    cfg.merge_from_file(str(config))
    cfg.MODEL.WEIGHTS = str(weights)
    cfg.MODEL.DEVICE = device
    if overrides is not None:
        overrides(cfg)
    cfg.freeze()
    model = build_model(cfg)
    model.eval()
    _checkpointer(model, trust_weights).load(str(weights))
    return model, cfg


def save_random_init_weights(config: str, path: str | os.PathLike, densepose: bool = False, seed: int = 0) -> str:
    """Save the ``state_dict`` of a randomly initialised model of ``config`` as a ``.pth``.

    Where no trained weights exist, this runs the real architecture and code path
    (outputs are meaningless). detectron2's own initialisation with a frozen-BN
    ResNet lets activations grow through the 16 residual blocks until scores
    saturate at 0/1 and boxes go non-finite (a random R-CNN then detects almost
    nothing); as in "zero-init residual" training recipes (Goyal et al. 2017),
    the last norm of each residual branch starts at scale 0, so the untrained
    network gives finite boxes and graded scores. ``densepose=True`` adds
    DensePose's config keys first. Returns the path.
    """
    import torch

    optional_import("detectron2", DETECTRON2_INSTALL_HINT)
    from detectron2.config import get_cfg
    from detectron2.modeling import build_model

    cfg = get_cfg()
    if densepose:
        from densepose import add_densepose_config

        add_densepose_config(cfg)
    cfg.merge_from_file(str(config))
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.WEIGHTS = ""
    from detectron2.modeling.backbone.resnet import BottleneckBlock

    torch.manual_seed(seed)
    model = build_model(cfg)
    with torch.no_grad():
        for block in model.modules():
            if isinstance(block, BottleneckBlock):
                block.conv3.norm.weight.zero_()
    torch.save(model.state_dict(), str(path))
    return str(path)


def detectron2_commit() -> str:
    """The detectron2 source commit (see module docstring), or ``"unknown"``."""
    if os.environ.get("DETECTRON2_COMMIT"):
        return os.environ["DETECTRON2_COMMIT"]
    try:
        import detectron2

        src = Path(detectron2.__file__).resolve().parents[1] if getattr(detectron2, "__file__", None) else None
        if src is not None and (src / ".git").exists():
            out = subprocess.run(["git", "-C", str(src), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10)
            if out.returncode == 0 and out.stdout.strip():
                return out.stdout.strip()
    except (ImportError, OSError, subprocess.SubprocessError):
        pass
    recorded = Path(sys.prefix) / "detectron2-commit.txt"
    if recorded.is_file():
        return recorded.read_text().strip() or "unknown"
    return "unknown"


def detectron2_provenance(config: str, weights: str, cfg: Any | None = None) -> dict[str, Any]:
    """detectron2 commit, config / merged-config / weights sha256 (module docstring)."""
    out: dict[str, Any] = {
        "detectron2_commit": detectron2_commit(),
        "config_sha256": file_sha256(config),
        "weights_sha256": file_sha256(weights),
    }
    if cfg is not None:
        out["merged_config_sha256"] = hashlib.sha256(cfg.dump().encode()).hexdigest()
    return out


__all__ = [
    "model_input_size",
    "resize_bgr",
    "UNTRUSTED_WEIGHTS_MESSAGE",
    "needs_pickle",
    "check_weights_trust",
    "check_model_files",
    "load_weights_safely",
    "build_detectron2_model",
    "save_random_init_weights",
    "detectron2_commit",
    "detectron2_provenance",
]

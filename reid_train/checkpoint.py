"""Checkpoints that load with ``torch.load(weights_only=True)``.

Everything saved is a tensor or a plain container/scalar (dict, list, tuple,
int, float, str, bool, None): no pickled classes, so loading a checkpoint
never runs code. The random-number-generator states of Python, NumPy and
torch (CPU and CUDA) are converted to tensors and lists for the same reason.
Writes are atomic (temporary file + fsync + rename) so a run killed mid-save
keeps its previous checkpoint; both sides of the rename are write points of
:data:`storage.fs.faults` (fault injection, ``REID_PRIORS_FAULT_AT``).
"""
from __future__ import annotations

import os
import pickle
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from storage.fs import faults


class CheckpointError(RuntimeError):
    """A checkpoint file that cannot be loaded."""


class NoCheckpointError(FileNotFoundError):
    """``--resume`` on a run directory without a checkpoint."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and CUDA)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state() -> dict[str, Any]:
    """Python, NumPy and torch RNG states as weights-only-safe values."""
    py_version, py_internal, py_gauss = random.getstate()
    np_kind, np_keys, np_pos, np_has_gauss, np_cached = np.random.get_state(legacy=True)
    state = {
        "python": [py_version, list(py_internal), py_gauss],
        "numpy": {
            "kind": str(np_kind),
            "keys": torch.from_numpy(np.asarray(np_keys, dtype=np.int64)),
            "pos": int(np_pos),
            "has_gauss": int(np_has_gauss),
            "cached_gaussian": float(np_cached),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Inverse of :func:`rng_state`."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    n = state["numpy"]
    np.random.set_state(
        (n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"])
    )
    torch.set_rng_state(state["torch"].cpu())
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> None:
    """Atomically write ``state`` (tensors and plain values only)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        torch.save(state, f)
        f.flush()
        os.fsync(f.fileno())
    faults.point(f"{path.name} (torn)")
    os.replace(tmp, path)
    faults.point(path.name)


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """``torch.load(path, weights_only=True)``; a missing file is a one-line :class:`NoCheckpointError`."""
    path = Path(path)
    if not path.is_file():
        raise NoCheckpointError(f"no checkpoint at {path}: the run stopped before its first checkpoint "
                                f"(or --out is wrong); start it again without --resume")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except (RuntimeError, EOFError, OSError, ValueError, pickle.UnpicklingError) as exc:
        raise CheckpointError(f"checkpoint {path} is unreadable ({type(exc).__name__}: {str(exc).splitlines()[0]}); "
                              f"restore a copy or start the run again without --resume") from None


def model_state(path: str | Path) -> dict[str, torch.Tensor]:
    """The model weights of a checkpoint file (or of a run directory's
    ``checkpoint.pt``), for ``--init`` and evaluation."""
    path = Path(path)
    if path.is_dir():
        path = path / "checkpoint.pt"
    state = load_checkpoint(path)
    return state["model"] if "model" in state else state

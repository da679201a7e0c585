"""Run-directory outputs: metrics.csv + TensorBoard while training, then
metrics.json and the PNG plots (used by :mod:`reid_train.engine`)."""
from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from . import plots


def plain(x: Any) -> Any:
    """numpy/torch values -> JSON-safe Python values."""
    if isinstance(x, dict):
        return {k: plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [plain(v) for v in x]
    if isinstance(x, (np.ndarray, torch.Tensor)):
        return plain(x.tolist())
    if isinstance(x, (np.integer, np.floating)):
        return x.item()
    return x


class MetricsLog:
    """metrics.csv (one row per log window) + TensorBoard, rank 0 only.

    On resume, rows after the checkpoint's step are dropped so the CSV matches
    an uninterrupted run."""

    def __init__(self, out_dir: Path, start_step: int, enabled: bool):
        self.path = out_dir / "metrics.csv"
        self.enabled = enabled
        self.columns: list[str] | None = None
        self.tb = None
        if not enabled:
            return
        if self.path.exists():
            with self.path.open(newline="") as f:
                rows = list(csv.DictReader(f))
            rows = [r for r in rows if int(float(r["step"])) <= start_step]
            if rows:
                self.columns = list(rows[0])
                self._write(rows, "w")
            else:
                self.path.unlink()
        from torch.utils.tensorboard import SummaryWriter

        self.tb = SummaryWriter(str(out_dir / "tb"), purge_step=start_step if start_step else None)

    def _write(self, rows: list[dict], mode: str) -> None:
        with self.path.open(mode, newline="") as f:
            w = csv.DictWriter(f, fieldnames=self.columns)
            if mode == "w":
                w.writeheader()
            w.writerows(rows)

    def row(self, values: dict[str, float]) -> None:
        if not self.enabled:
            return
        first = self.columns is None
        if first:
            self.columns = list(values)
        self._write([values], "w" if first else "a")
        for k, v in values.items():
            if k not in ("step", "epoch"):
                self.tb.add_scalar(k if k in ("lr", "images_per_s") else f"loss/{k}", v, int(values["step"]))

    def scalars(self, prefix: str, values: dict[str, Any], step: int) -> None:
        if self.enabled:
            for k, v in values.items():
                if isinstance(v, (int, float)):
                    self.tb.add_scalar(f"{prefix}/{k}", v, step)

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()


def write_summary(out_dir: Path, summary: dict) -> None:
    """metrics.json + the PNG plots."""
    (out_dir / "metrics.json").write_text(json.dumps(plain(summary), indent=2))
    if (out_dir / "metrics.csv").exists():
        plots.plot_losses(out_dir / "metrics.csv", out_dir / "losses.png")
    final = summary.get("final_eval")
    if final and final.get("cmc"):
        plots.plot_cmc({summary["method"]: final["cmc"]}, out_dir / "cmc.png", title=f"CMC ({summary['method']})")
    if len(summary.get("eval_history", [])) > 1:
        plots.plot_eval_history(summary["eval_history"], out_dir / "eval.png")

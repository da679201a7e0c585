"""PNG figures of a run (matplotlib, Agg backend): loss curves and CMC."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

NOT_LOSSES = {"step", "epoch", "lr", "time", "steps_per_s", "images_per_s"}


def plot_losses(csv_path: str | Path, png_path: str | Path) -> Path | None:
    """One panel per named loss (and their total) against the iteration, plus
    the learning rate; returns the PNG path, or None when there are no rows."""
    df = pd.read_csv(csv_path)
    if df.empty:
        return None
    names = [c for c in df.columns if c not in NOT_LOSSES]
    panels = names + (["lr"] if "lr" in df.columns else [])
    cols = min(3, len(panels))
    rows = int(np.ceil(len(panels) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.0 * rows), squeeze=False)
    few = len(df) < 30  # a line needs two points: mark each logged point so one row still shows
    for ax, name in zip(axes.flat, panels):
        ax.plot(df["step"], df[name], lw=1.2, color="tab:red" if name == "lr" else "tab:blue",
                marker="o" if few else None, ms=4)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # iterations
        ax.set_title(name)
        ax.set_xlabel("iteration")
        ax.grid(alpha=0.3)
        if name == "lr":
            ax.ticklabel_format(axis="y", style="sci", scilimits=(0, 0))
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    fig.suptitle(f"training losses ({Path(csv_path).parent.name})")
    fig.tight_layout()
    fig.savefig(png_path, dpi=110)
    plt.close(fig)
    return Path(png_path)


def plot_cmc(
    curves: dict[str, Sequence[float]], png_path: str | Path, max_rank: int = 20, title: str = "CMC"
) -> Path:
    """CMC curves (label -> matching rate at ranks 1..N, in [0, 1]) up to ``max_rank``."""
    fig, ax = plt.subplots(figsize=(5.0, 3.8))
    for label, cmc in curves.items():
        cmc = np.asarray(cmc, dtype=float)[:max_rank]
        ranks = np.arange(1, len(cmc) + 1)
        ax.plot(ranks, 100.0 * cmc, marker="o", ms=3, label=f"{label} (R1 {100 * cmc[0]:.1f}%)")
    ax.set_xlabel("rank")
    ax.set_ylabel("matching rate (%)")
    ax.set_ylim(0, 100)
    ax.set_xlim(1, max_rank)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(png_path, dpi=110)
    plt.close(fig)
    return Path(png_path)


def plot_eval_history(history: list[dict], png_path: str | Path) -> Path | None:
    """Rank-1 and mAP at each evaluation (``history`` rows: epoch, rank1, mAP)."""
    if not history:
        return None
    epochs = [h["epoch"] for h in history]
    fig, ax = plt.subplots(figsize=(5.0, 3.5))
    for key, label in (("rank1", "rank-1"), ("mAP", "mAP")):
        ax.plot(epochs, [100.0 * h[key] for h in history], marker="o", label=label)
    ax.set_xlabel("epoch")
    ax.set_ylabel("%")
    ax.set_ylim(0, 100)
    ax.grid(alpha=0.3)
    ax.legend()
    ax.set_title("evaluation during training")
    fig.tight_layout()
    fig.savefig(png_path, dpi=110)
    plt.close(fig)
    return Path(png_path)

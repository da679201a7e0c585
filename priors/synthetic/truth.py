"""Checks of priors against the synthetic world's ground truth (pure pandas/numpy)."""
from __future__ import annotations

import numpy as np
import pandas as pd


def roi_extent_error(stats: pd.DataFrame, truth: pd.DataFrame, feat_h: int, src_h: int) -> dict[str, float]:
    """How well MPN ROIs follow the true visible person extent.

    ``stats``: the ``priors/mpn`` stats table joined with ``relpath`` (columns upper, lower: inclusive
    feature rows). ``truth``: :func:`priors.synthetic.read_image_table` (visible_top/visible_bottom
    rows of the ``src_h``-row synthetic images, box_head_cut/box_feet_cut). Errors are mean absolute
    differences in feature-map rows (``feat_h`` rows per image).
    """
    t = truth.set_index("relpath").loc[stats["relpath"]]
    scale = feat_h / src_h
    upper = np.abs(stats["upper"].to_numpy() - t["visible_top"].to_numpy() * scale)
    lower = np.abs(stats["lower"].to_numpy() + 1 - (t["visible_bottom"].to_numpy() + 1) * scale)
    rows = np.r_[stats["upper"], stats["lower"]]
    true_rows = np.r_[t["visible_top"], t["visible_bottom"]]
    return {
        "upper_mae_rows": float(upper.mean()),
        "lower_mae_rows": float(lower.mean()),
        "cut_fraction": float(((t["box_head_cut"] > 0) | (t["box_feet_cut"] > 0)).mean()),
        "correlation": float(np.corrcoef(rows, true_rows)[0, 1]),
        "fallback_rate": float(stats["fallback"].mean()),
    }

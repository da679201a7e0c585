"""Training labels: train pids relabelled 0..P-1 in a column of their own; the original pid is kept."""

from __future__ import annotations

import numpy as np
import pandas as pd

__all__ = ["assign_labels"]


def assign_labels(df: pd.DataFrame) -> pd.DataFrame:
    """Return a copy of ``df`` with an int64 ``label`` column.

    The ``ok`` train rows get ``label`` = rank of their pid among the sorted distinct pids of the ok train
    rows (0..P-1, order-preserving: a smaller pid gets a smaller label); every other row (query, gallery,
    skipped or failed train rows) gets -1. Call it after the last change of ``status`` (decode failures,
    duplicates), so an identity whose every image failed takes no label.
    """
    is_train = (df["split"] == "train").to_numpy(dtype=bool) & (df["status"] == "ok").to_numpy(dtype=bool)
    pids = df["pid"].to_numpy(dtype=np.int64)
    train_pids = np.unique(pids[is_train])  # sorted
    label = np.full(len(df), -1, dtype=np.int64)
    label[is_train] = np.searchsorted(train_pids, pids[is_train])
    return df.assign(label=label)

"""Exact duplicates: a file whose bytes (sha256) equal those of an earlier ok file is skipped."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

__all__ = ["mark_duplicates"]


def mark_duplicates(df: pd.DataFrame, sha_column: str = "sha256", within: Sequence[str] = ()) -> pd.DataFrame:
    """Return a copy of ``df`` where each ok row whose ``sha_column`` equals that of an *earlier* ok row
    (in the frame's row order, which ``scan_dataset`` makes deterministic) becomes ``status='skipped'``,
    ``reason='duplicate'``, ``detail='same sha256 as <relpath of the first such row>'``.

    Rows that are not ok, and rows with an empty/missing hash, neither get marked nor serve as originals.
    ``within``: columns that must also agree, e.g. ``("split",)`` to keep a query image whose copy sits in
    the gallery (by default one copy is kept over the whole dataset).
    """
    out = df.copy()
    if "detail" not in out.columns:
        out["detail"] = ""
    sha = out[sha_column].astype(object)
    candidate = (out["status"] == "ok").to_numpy(dtype=bool) & sha.notna().to_numpy(dtype=bool)
    candidate &= (sha.fillna("") != "").to_numpy(dtype=bool)
    if not candidate.any():
        return out
    keys = [sha_column, *within]
    positions = np.flatnonzero(candidate)
    cand = out.iloc[positions]
    duplicated = cand.duplicated(subset=keys, keep="first").to_numpy()
    if not duplicated.any():
        return out
    first = cand.loc[~duplicated, [*keys, "relpath"]].rename(columns={"relpath": "_original"})
    originals = cand.loc[duplicated, keys].merge(first, on=keys, how="left")["_original"].to_numpy()
    rows = positions[duplicated]
    status_col, reason_col, detail_col = (out.columns.get_loc(c) for c in ("status", "reason", "detail"))
    out.iloc[rows, status_col] = "skipped"
    out.iloc[rows, reason_col] = "duplicate"
    out.iloc[rows, detail_col] = [f"same sha256 as {o}" for o in originals]
    return out

"""Shared pieces of the store views: the 24-part palette, figures that show in Jupyter, lookups.

Every view returns a :class:`ViewFigure`, a plain :class:`matplotlib.figure.Figure`
built with the object API (no pyplot state, works under Agg) that also knows
how to show itself in Jupyter (``_repr_png_``), whatever backend is active.
Save one with ``fig.savefig("x.png")``.

The palette (:data:`PART_COLORS`) gives each of DensePose's 24 parts one fixed
colour, used by every view: a hue family per body region of the 8 merged
groups (DSA-reID Table 1 / :data:`priors.dsap.MERGE_LEVEL2`) -- torso blue,
hands pink, feet brown, upper legs green, lower legs teal, upper arms orange,
lower arms purple, head gold -- with the person's *right* side dark and the
*left* side light, so that regions read at a glance and sides stay apart.
"""
from __future__ import annotations

import io
import weakref
from collections.abc import Iterable
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.colors import ListedColormap, to_rgb
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from priors.dsap import PART_NAMES

# index p = DensePose label p + 1 (see priors.dsap.PART_NAMES); right = dark, left = light
PART_COLORS: tuple[str, ...] = (
    "#08519c", "#6baed6",                      # 1 torso_back, 2 torso_front
    "#c51b7d", "#f1b6da",                      # 3 right_hand, 4 left_hand
    "#dfc27d", "#8c510a",                      # 5 left_foot, 6 right_foot
    "#00441b", "#74c476",                      # 7 upper_leg_right_back, 8 upper_leg_left_back
    "#238b45", "#c7e9c0",                      # 9 upper_leg_right_front, 10 upper_leg_left_front
    "#01665e", "#80cdc1",                      # 11 lower_leg_right_back, 12 lower_leg_left_back
    "#35978f", "#c7eae5",                      # 13 lower_leg_right_front, 14 lower_leg_left_front
    "#fdae6b", "#d94801",                      # 15 upper_arm_left_inside, 16 upper_arm_right_inside
    "#fdd0a2", "#8c2d04",                      # 17 upper_arm_left_outside, 18 upper_arm_right_outside
    "#bcbddc", "#6a51a3",                      # 19 lower_arm_left_inside, 20 lower_arm_right_inside
    "#dadaeb", "#3f007d",                      # 21 lower_arm_left_outside, 22 lower_arm_right_outside
    "#b8860b", "#ffd92f",                      # 23 head_right, 24 head_left
)  # fmt: skip
PART_RGB = np.array([to_rgb(c) for c in PART_COLORS], dtype=np.float32)  # (24, 3)
# label 0 (background) black, then the 24 parts: imshow(i, cmap=PART_CMAP, vmin=0, vmax=24)
PART_CMAP = ListedColormap(["#000000", *PART_COLORS], name="densepose24")
CAMERA_CMAP = "tab10"
FALLBACK_COLOR = "#d62728"
DSAP_GROUP, MPN_GROUP = "priors/dsap", "priors/mpn"


class ViewFigure(Figure):
    """A Figure that renders itself as PNG in Jupyter (no pyplot or inline backend needed)."""

    def _repr_png_(self) -> bytes:
        buf = io.BytesIO()
        self.savefig(buf, format="png", dpi=self.dpi, bbox_inches="tight")
        return buf.getvalue()


def new_figure(width: float, height: float, **kwargs: Any) -> ViewFigure:
    return ViewFigure(figsize=(width, height), layout=kwargs.pop("layout", "constrained"), **kwargs)


def part_legend_handles(parts: Iterable[int] = range(24)) -> list[Patch]:
    """Legend patches ``"<label> <name>"`` for 0-based ``parts``."""
    return [Patch(facecolor=PART_COLORS[p], edgecolor="0.3", linewidth=0.4, label=f"{p + 1:2d} {PART_NAMES[p]}")
            for p in parts]


def part_overlay(image: np.ndarray, i: np.ndarray, alpha: float = 0.65, dim: float = 0.45) -> np.ndarray:
    """``(H, W, 3)`` float image: part colours blended over body pixels, background dimmed."""
    img = np.asarray(image, dtype=np.float32) / 255.0
    out = img * dim + (1 - dim) * img.mean(axis=-1, keepdims=True) * 0.6  # dimmed, desaturated background
    body = i > 0
    colours = PART_RGB[np.clip(i.astype(np.int64) - 1, 0, 23)]
    out[body] = (1 - alpha) * img[body] + alpha * colours[body]
    return np.clip(out, 0, 1)


# ---- store lookups ------------------------------------------------------
_TABLE_CACHE: "weakref.WeakKeyDictionary[Any, dict]" = weakref.WeakKeyDictionary()


def group_table(store, group: str, name: str) -> pd.DataFrame:
    """``store.group(group).table(name)``, read once per store object (views ask for it repeatedly)."""
    cache = _TABLE_CACHE.setdefault(store, {})
    key = (group, name)
    if key not in cache:
        df = store.group(group).table(name) if name in store.group(group).table_names() else pd.DataFrame()
        cache[key] = df.sort_values("image_id").reset_index(drop=True) if "image_id" in df else df
    return cache[key]


def table_row(store, group: str, name: str, image_id: int) -> pd.Series | None:
    df = group_table(store, group, name)
    if not len(df):
        return None
    hit = df[df["image_id"] == int(image_id)]
    return hit.iloc[0] if len(hit) else None


def all_failures(store) -> pd.DataFrame:
    """Failure rows of every group: ``group, image_id, stage, reason, detail``."""
    frames = []
    for name in store.groups:
        df = group_table(store, name, "failures")
        if len(df):
            frames.append(df.assign(group=name))
    if not frames:
        return pd.DataFrame({"group": pd.Series(dtype="string"), "image_id": pd.Series(dtype="int64"),
                             "stage": pd.Series(dtype="string"), "reason": pd.Series(dtype="string"),
                             "detail": pd.Series(dtype="string")})
    df = pd.concat(frames, ignore_index=True)
    return df[["group", "image_id", "stage", "reason", "detail"]].sort_values(["image_id", "group"], kind="stable")


def estimates_group(store, group: str | None = None) -> str:
    """The IUV group to show: ``group``, else the one ``priors/dsap`` was built from, else the first."""
    if group is not None:
        store.group(group)  # raises KeyError naming the groups present
        return group
    names = [g for g in store.groups if g.startswith("estimates/")]
    if not names:
        raise KeyError(f"{store.url} has no estimates/* group; run `python -m pipelines build-dsap` first")
    if store.has_group(DSAP_GROUP):
        inputs = store.groups[DSAP_GROUP].get("inputs", {}) or {}
        for g in inputs:
            if g in names:
                return g
    return names[0]


def check_image_id(store, image_id: int) -> pd.Series:
    """The ok-index row of ``image_id``; KeyError for an id with no stored image."""
    image_id = int(image_id)
    ok = store.ok_index
    if not 0 <= image_id < len(ok):
        raise KeyError(f"image_id {image_id} has no stored image (ok image ids are 0..{len(ok) - 1}; "
                       f"see store.ok_index)")
    return ok.iloc[image_id]


def image_caption(row: pd.Series) -> str:
    return f"#{int(row['image_id'])} {row['split']} pid {int(row['pid'])} cam {int(row['camid'])}"


def feature_row_scale(store, h: int) -> float:
    """Image pixels per feature-map row: the MPN mask is an area resize of the full image to ``h`` rows."""
    return store.image_size[0] / float(h)


def _as_list(x) -> list | None:
    if x is None:
        return None
    if isinstance(x, (str, bytes)) or np.isscalar(x):
        return [x]
    return list(x)


def select(store, split=None, pid=None, camid=None, status=None) -> pd.DataFrame:
    """Rows of ``store.index`` matching every given filter (a value or a list of values each).

    >>> select(store, split="query", camid=[1, 2], status="ok")   # doctest: +SKIP

    ``status`` is the ingest status (``ok``, ``skipped``, ``failed``). The rows keep
    the index's columns and order; ``image_id`` of ``ok`` rows is what the views take.
    """
    df = store.index
    keep = np.ones(len(df), dtype=bool)
    for col, want in (("split", split), ("pid", pid), ("camid", camid), ("status", status)):
        values = _as_list(want)
        if values is not None:
            keep &= df[col].isin(values).to_numpy()
    return df[keep].reset_index(drop=True)


def no_data_axes(ax, message: str) -> None:
    ax.axis("off")
    ax.text(0.5, 0.5, message, ha="center", va="center", fontsize=9, color="0.35", wrap=True,
            transform=ax.transAxes)


def frame_axes(ax, color: str, width: float = 3.0) -> None:
    """Coloured frame around an image axes (fallbacks, failures)."""
    for spine in ax.spines.values():
        spine.set_visible(True)
        spine.set_edgecolor(color)
        spine.set_linewidth(width)


def image_axes(ax) -> None:
    ax.set_xticks([])
    ax.set_yticks([])

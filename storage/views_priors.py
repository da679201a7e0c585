"""Per-image views of the stored priors: IUV overlay, the 24 DSAP-images, the MPN strip prior.

* :func:`show_iuv` -- DensePose's ``I`` as part colours, ``U`` and ``V`` as
  isolines drawn inside each part's chart (DSA-reID Sec. 3.1 warps by exactly
  these coordinates).
* :func:`show_dsap` -- the 24 DSAP-images ``(S x S``, rows ``U``, columns ``V``;
  Sec. 3.1) with cells no pixel reached washed out, and the 8 groups the
  DSAG-Stream ends with after merging (Sec. 3.2.1, Table 1).
* :func:`show_mpn_prior` -- MPN's coarse prior (TPAMI Sec. 3.2, Fig. 5a): the
  binarised, dilated feature-map mask ``M``, the ROI's upper/lower rows and the
  ``K`` strips dividing it, mapped onto the image; fallbacks framed in red.
"""
from __future__ import annotations

import numpy as np
from matplotlib.colors import ListedColormap

from priors.dsap import MERGE_LEVEL2_NAMES, MERGE_LEVEL2_PARTS, PART_NAMES
from priors.iuv import unpack_iuv

from .views_base import (
    DSAP_GROUP,
    FALLBACK_COLOR,
    MPN_GROUP,
    PART_COLORS,
    check_image_id,
    estimates_group,
    feature_row_scale,
    frame_axes,
    image_axes,
    image_caption,
    new_figure,
    part_legend_handles,
    part_overlay,
    table_row,
)

ISO_LEVELS = np.linspace(0.1, 0.9, 9)
MASK_CMAP = ListedColormap(["#ff6d00"])  # mask cells in orange: ROI lines are yellow, strips cyan (red: fallback)
INVALID_WASH = 0.8  # how far cells without a warped pixel are washed towards white


def _isolines(ax, i: np.ndarray, coord: np.ndarray, cmap: str) -> None:
    """Isolines of one chart coordinate, drawn part by part (values jump across part borders)."""
    for label in np.unique(i[i > 0]):
        inside = i == label
        if inside.sum() < 4:
            continue
        ax.contour(np.ma.masked_where(~inside, coord), levels=ISO_LEVELS, cmap=cmap, vmin=0, vmax=1,
                   linewidths=0.9)
    # part borders in light grey, so that each chart's lines read as belonging to one part
    ax.imshow(np.ma.masked_where(~part_borders(i), np.ones(i.shape)), cmap="gray", vmin=0, vmax=1, alpha=0.7,
              interpolation="nearest")


def part_borders(i: np.ndarray) -> np.ndarray:
    """Pixels whose right or lower neighbour has another label (part or background)."""
    b = np.zeros(i.shape, dtype=bool)
    b[:, :-1] |= i[:, :-1] != i[:, 1:]
    b[:-1, :] |= i[:-1, :] != i[1:, :]
    return b


def show_iuv(store, image_id: int, group: str | None = None):
    """The image, its parts ``I`` in the 24-part palette, and ``U``/``V`` isolines (step 0.1).

    ``group`` picks an ``estimates/<backend>`` group (default: the one
    ``priors/dsap`` was built from, else the first).
    """
    row = check_image_id(store, image_id)
    group = estimates_group(store, group)
    g = store.group(group)
    i, u, v = unpack_iuv(g.read("i", [image_id])[0], g.read("uv", [image_id])[0])
    image = store.image(image_id)
    H, W = i.shape
    panel_w = 2.3
    fig = new_figure(4 * panel_w + 2.6, panel_w * H / W * 1.02 + 0.7)
    axes = fig.subplots(1, 5, gridspec_kw={"width_ratios": [1, 1, 1, 1, 1.15]})
    gray = image.astype(np.float32).mean(axis=-1) / 255.0
    axes[0].imshow(image)
    axes[0].set_title("image", fontsize=9)
    axes[1].imshow(part_overlay(image, i))
    axes[1].set_title("parts I", fontsize=9)
    for ax, coord, name, cmap in ((axes[2], u, "U", "autumn"), (axes[3], v, "V", "winter")):
        ax.imshow(0.25 + 0.5 * gray, cmap="gray", vmin=0, vmax=1)
        _isolines(ax, i, coord, cmap)
        ax.set_title(f"{name} isolines (0.1 steps)", fontsize=9)
    for ax in axes[:4]:
        image_axes(ax)
    present = [p for p in range(24) if np.any(i == p + 1)]
    axes[4].axis("off")
    axes[4].legend(handles=part_legend_handles(present), loc="center left", fontsize=6.5, frameon=False,
                   title=f"{len(present)}/24 parts", title_fontsize=7, handlelength=1.2, borderaxespad=0)
    body = float((i > 0).mean())
    fig.suptitle(f"{image_caption(row)} - {group} - body {body:.0%} of pixels", fontsize=10)
    return fig


def merge_dsap(dsap: np.ndarray, valid: np.ndarray, parts) -> tuple[np.ndarray, np.ndarray]:
    """One merged group for display: the mean of the parts' valid cells, ``(3, S, S)`` float and union validity.

    The DSAG-Stream merges *features* (Sec. 3.2.1); averaging the images is the
    picture of which chart cells feed the merged branch.
    """
    d = dsap[list(parts)].astype(np.float32)  # (n, 3, S, S)
    m = valid[list(parts)].astype(np.float32)[:, None]  # (n, 1, S, S)
    n = m.sum(axis=0)
    merged = np.where(n > 0, (d * m).sum(axis=0) / np.maximum(n, 1), d[0])
    return merged, n[0] > 0


def _dsap_rgb(chw: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """``(S, S, 3)`` in [0, 1], cells without a warped pixel washed out towards white."""
    rgb = np.moveaxis(np.asarray(chw, dtype=np.float32), 0, -1) / 255.0
    return np.where(valid[..., None], rgb, (1 - INVALID_WASH) * rgb + INVALID_WASH)


def show_dsap(store, image_id: int):
    """The 24 DSAP-images of one image (rows ``U``, columns ``V``) and the 8 merged groups.

    Cells that no pixel reached (the ``valid`` mask is False) are washed out
    towards white; each panel is framed in its part's palette colour and titled
    with its coverage (fraction of valid cells).
    """
    row = check_image_id(store, image_id)
    g = store.group(DSAP_GROUP)
    dsap, valid = g.read("dsap", [image_id])[0], g.read("valid", [image_id])[0]
    S = dsap.shape[-1]
    cov = valid.reshape(24, -1).mean(axis=1)
    # fixed layout: the constrained-layout solver takes seconds on 33 axes
    fig = new_figure(13.0, 9.2, layout=None)
    H, W = store.image_size
    ax_img = fig.add_axes((0.01, 0.5 - 0.135 * 13.0 / 9.2 * H / W / 2, 0.135, 0.135 * 13.0 / 9.2 * H / W))
    image = store.image(image_id)
    try:
        est = store.group(estimates_group(store))
        ax_img.imshow(part_overlay(image, est.read("i", [image_id])[0]))
        ax_img.set_title("parts I", fontsize=9)
    except KeyError:
        ax_img.imshow(image)
        ax_img.set_title("image", fontsize=9)
    image_axes(ax_img)
    grid = fig.add_gridspec(5, 24, left=0.17, right=0.995, top=0.9, bottom=0.01, hspace=0.45, wspace=0.9)
    for p in range(24):
        ax = fig.add_subplot(grid[p // 6, 4 * (p % 6): 4 * (p % 6) + 4])
        ax.imshow(_dsap_rgb(dsap[p], valid[p]), interpolation="nearest")
        ax.set_title(f"{p + 1} {PART_NAMES[p]}\n{cov[p]:.0%}", fontsize=7, color="black" if cov[p] else "0.6")
        image_axes(ax)
        frame_axes(ax, PART_COLORS[p], 2.5)
    for k, (name, parts) in enumerate(zip(MERGE_LEVEL2_NAMES, MERGE_LEVEL2_PARTS)):
        ax = fig.add_subplot(grid[4, 3 * k: 3 * k + 3])
        merged, mvalid = merge_dsap(dsap, valid, parts)
        ax.imshow(_dsap_rgb(merged, mvalid), interpolation="nearest")
        ax.set_title(f"{name}\n{mvalid.mean():.0%}", fontsize=7, fontweight="bold")
        image_axes(ax)
        frame_axes(ax, PART_COLORS[parts[0]], 2.5)
    fig.text(0.58, 0.945, f"24 DSAP-images ({S}x{S}, rows U, columns V; washed out = no pixel) and the 8 merged groups",
             ha="center", fontsize=9)
    fig.suptitle(f"{image_caption(row)} - priors/dsap - coverage {cov.mean():.0%}, "
                 f"{int((cov > 0).sum())}/24 parts present", fontsize=10)
    return fig


def draw_strips(ax, store, roi, strips, fallback: bool, h: int, labels: bool = True) -> None:
    """ROI boundaries and the K strip boundaries of an MPN prior, in image pixel rows.

    Feature row ``r`` covers image rows ``[r * H / h, (r + 1) * H / h)`` (the mask
    is an area resize of the full image), so boundary rows map by that scale.
    Lines carry gids ``roi_upper``/``roi_lower``/``strip_boundary`` (tests read them).
    """
    scale = feature_row_scale(store, h)
    color = FALLBACK_COLOR if fallback else "#00e5ff"
    edges = np.unique(np.concatenate([strips[:, 0], strips[-1:, 1]]))
    for k, (start, stop) in enumerate(strips):
        if stop > start:
            ax.axhspan(start * scale - 0.5, stop * scale - 0.5, color=("white", "black")[k % 2], alpha=0.12, lw=0)
            if labels:
                ax.text(1.5, (start + stop) / 2 * scale - 0.5, str(k + 1), color="black", fontsize=7,
                        ha="left", va="center", fontweight="bold",
                        bbox={"boxstyle": "round,pad=0.15", "fc": color, "ec": "none", "alpha": 0.85})
    for e in edges:
        ax.axhline(e * scale - 0.5, color=color, lw=1.0, ls="--", gid="strip_boundary")
    upper, lower = int(roi[0]), int(roi[1])
    ax.axhline(upper * scale - 0.5, color="#ffea00", lw=2.0, gid="roi_upper")
    ax.axhline((lower + 1) * scale - 0.5, color="#ffea00", lw=2.0, gid="roi_lower")


def show_mpn_prior(store, image_id: int):
    """MPN's coarse prior of one image: mask ``M`` over the image, ROI and K strips; fallback marked.

    Panels: the mask at feature-map size (``h x w`` cells) over the image; the
    ROI (yellow, upper row and the row after ``lower``) and the ``K`` strip
    boundaries (dashed) over the image; the mask itself in feature-map rows.
    A fallback (head or both legs missing, Sec. 3.2) draws in red with its reason.
    """
    row = check_image_id(store, image_id)
    g = store.group(MPN_GROUP)
    mask = g.read("mask", [image_id])[0]
    roi = g.read("roi", [image_id])[0]
    fallback = bool(g.read("fallback", [image_id])[0])
    strips = g.read("strips", [image_id])[0] if "strips" in g.arrays else None
    if strips is None:  # older stores: recompute the uniform division
        from priors.mpn_prior import strip_boundaries

        strips = strip_boundaries(int(roi[0]), int(roi[1]), int(g.provenance.get("params", {}).get("K", 6)))
    h, w = mask.shape
    H, W = store.image_size
    stats = table_row(store, MPN_GROUP, "stats", image_id)
    reason = (str(stats["fallback_reason"]) if stats is not None else "") or "no reason recorded"
    image = store.image(image_id)
    panel_w = 2.4
    fig = new_figure(3 * panel_w + 0.6, panel_w * H / W + 1.0)
    axes = fig.subplots(1, 3)
    axes[0].imshow(image)
    axes[0].imshow(np.ma.masked_equal(mask, 0), cmap=MASK_CMAP, alpha=0.5, vmin=0, vmax=1,
                   extent=(-0.5, W - 0.5, H - 0.5, -0.5), interpolation="nearest")
    sy, sx = H / h, W / w
    axes[0].hlines(np.arange(1, h) * sy - 0.5, -0.5, W - 0.5, colors="white", lw=0.4, alpha=0.6)
    axes[0].vlines(np.arange(1, w) * sx - 0.5, -0.5, H - 0.5, colors="white", lw=0.4, alpha=0.6)
    axes[0].set_title(f"mask M ({h}x{w} cells)", fontsize=9)
    axes[1].imshow(image)
    draw_strips(axes[1], store, roi, strips, fallback, h)
    axes[1].set_title(f"ROI rows {int(roi[0])}-{int(roi[1])}, K={len(strips)} strips", fontsize=9)
    axes[2].imshow(mask, cmap="gray", vmin=0, vmax=1, interpolation="nearest", aspect=(H / h) / (W / w))
    for e in np.unique(np.concatenate([strips[:, 0], strips[-1:, 1]])):
        axes[2].axhline(e - 0.5, color=FALLBACK_COLOR if fallback else "#00e5ff", lw=1, ls="--")
    axes[2].axhline(roi[0] - 0.5, color="#ffea00", lw=2)
    axes[2].axhline(roi[1] + 0.5, color="#ffea00", lw=2)
    axes[2].set_title("M in feature rows", fontsize=9)
    axes[2].set_yticks(np.arange(h))
    axes[2].tick_params(labelsize=6)
    axes[2].set_xticks([])
    for ax in axes[:2]:
        image_axes(ax)
    if fallback:
        for ax in axes:
            frame_axes(ax, FALLBACK_COLOR, 4)
    status = f"FALLBACK: {reason} (whole map divided)" if fallback else "body complete"
    if stats is not None:
        legs = f"{int(stats['left_leg_px'])}/{int(stats['right_leg_px'])}"
        status += (f"\nhead {int(stats['head_px'])} px, legs {legs} px"
                   f" (parsing {stats['parsing_status']}, segmentation {stats['segmentation_status']})")
    fig.suptitle(f"{image_caption(row)} - priors/mpn - {status}", fontsize=9,
                 color=FALLBACK_COLOR if fallback else "black")
    return fig


__all__ = ["show_iuv", "show_dsap", "show_mpn_prior", "merge_dsap", "draw_strips", "part_borders"]

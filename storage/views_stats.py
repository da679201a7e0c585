"""Store-level views: galleries of the worst cases and per-camera statistics of the priors.

* :func:`show_worst_cases` -- the images to look at first: lowest DSAP
  coverage (DSA-reID Sec. 3.1: the fraction of the 24 x S x S chart cells some
  pixel reached), MPN fallbacks (TPAMI Sec. 3.2: head or both legs missing),
  or the estimator failures of any group, each captioned with its reason.
* :func:`show_dataset_stats` -- images per camera, mean coverage of each of the
  24 DensePose parts per camera, MPN fallback rate per camera (by reason) and
  the distribution of the ROI height per camera.
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
from matplotlib.ticker import MaxNLocator

from priors.dsap import PART_NAMES
from storage.store import SPLITS

from .views_base import (
    CAMERA_CMAP,
    DSAP_GROUP,
    FALLBACK_COLOR,
    MPN_GROUP,
    all_failures,
    estimates_group,
    frame_axes,
    group_table,
    image_axes,
    new_figure,
    no_data_axes,
    part_overlay,
)
from .views_priors import draw_strips

WORST_KINDS = ("coverage", "fallback", "failures")
REASON_COLORS = {"head_missing": "#ff7f0e", "legs_missing": "#9467bd", "head_and_legs_missing": FALLBACK_COLOR,
                 "empty_mask": "#7f7f7f", "estimator_failed": "#17becf"}


def _worst_coverage(store, n: int) -> tuple[pd.DataFrame, str]:
    cov = group_table(store, DSAP_GROUP, "coverage")
    worst = cov.sort_values(["coverage", "image_id"], kind="stable").head(n)
    fails = all_failures(store)
    lines = []
    for _, r in worst.iterrows():
        why = fails.loc[fails["image_id"] == r["image_id"], "reason"].unique().tolist()
        low = str(r["low_quality"]) if "low_quality" in r and r["low_quality"] else ""
        lines.append(f"coverage {r['coverage']:.0%}, {int(r['parts_present'])}/24 parts"
                     + (f"\n{', '.join(why)}" if why else f"\nlow quality: {low}" if low else ""))
    out = pd.DataFrame({"image_id": worst["image_id"].to_numpy(), "caption": lines,
                        "flag": (worst["coverage"].to_numpy() == 0)})
    return out, f"lowest DSAP coverage of {len(cov)} images (mean {cov['coverage'].mean():.0%})"


def _worst_fallback(store, n: int) -> tuple[pd.DataFrame, str]:
    st = group_table(store, MPN_GROUP, "stats").merge(store.ok_index[["image_id", "pid"]], on="image_id")
    fb = st[st["fallback"].astype(bool)].copy()
    # identities with most fallbacks first, then by image id
    fb["pid_fallbacks"] = fb.groupby("pid")["image_id"].transform("size")
    fb = fb.sort_values(["pid_fallbacks", "pid", "image_id"], ascending=[False, True, True], kind="stable").head(n)
    lines = [_fallback_caption(r) for _, r in fb.iterrows()]
    out = pd.DataFrame({"image_id": fb["image_id"].to_numpy(), "caption": lines, "flag": True})
    return out, f"MPN fallbacks: {int(st['fallback'].sum())} of {len(st)} images ({st['fallback'].mean():.0%})"


def _fallback_caption(r: pd.Series) -> str:
    """Why an image fell back: the estimator failed (and how), or the parts it measured were absent."""
    if r["fallback_reason"] == "estimator_failed":
        status = r["parsing_status"] if "parsing_status" in r else "?"
        return f"estimator failed\n({status}: nothing measured)"
    return (f"{r['fallback_reason']} (parts absent)\n"
            f"head {int(r['head_px'])} px, legs {int(r['left_leg_px'])}/{int(r['right_leg_px'])}")


def _worst_failures(store, n: int) -> tuple[pd.DataFrame, str]:
    fails = all_failures(store)
    ids = fails["image_id"].drop_duplicates().head(n).to_numpy()
    lines = []
    for i in ids:
        f = fails[fails["image_id"] == i]
        # one line per reason, then the (short) names of the groups that recorded it
        by_reason = f.groupby("reason", sort=True)["group"].agg(
            lambda g: ", ".join(sorted({x.split("/")[-1] for x in g})))
        lines.append("\n".join(f"{r}\n({g})" for r, g in list(by_reason.items())[:2]))
    idx = store.index
    not_ok = idx[idx["status"] != "ok"].groupby(["status", "reason"]).size()
    ingest = ", ".join(f"{k[0]} {k[1]}={v}" for k, v in not_ok.items())
    title = (f"failures: {fails['image_id'].nunique()} images in {fails['group'].nunique()} groups"
             + (f"; not ingested: {ingest}" if ingest else ""))
    return pd.DataFrame({"image_id": ids.astype(np.int64), "caption": lines, "flag": True}), title


def show_worst_cases(store, kind: str = "coverage", n: int = 8):
    """A gallery of the ``n`` worst images of one ``kind``, each captioned with its reason.

    ``kind``: ``"coverage"`` (lowest mean DSAP coverage; needs ``priors/dsap``),
    ``"fallback"`` (MPN fallbacks, identities with most fallbacks first; needs
    ``priors/mpn``) or ``"failures"`` (images with failure rows in any group).
    Panels are framed red for empty coverage, fallbacks and failures; a gallery
    with nothing to show is one panel saying so.
    """
    if kind not in WORST_KINDS:
        raise ValueError(f"kind must be one of {WORST_KINDS}, got {kind!r}")
    need = {"coverage": DSAP_GROUP, "fallback": MPN_GROUP}.get(kind)
    if need and not store.has_group(need):
        raise KeyError(f"{store.url} has no {need} group: nothing to rank by {kind}")
    cases, title = {"coverage": _worst_coverage, "fallback": _worst_fallback, "failures": _worst_failures}[kind](
        store, int(n))
    H, W = store.image_size
    if not len(cases):
        fig = new_figure(6, 1.6)
        no_data_axes(fig.subplots(1, 1), f"no {'failures' if kind == 'failures' else kind + ' cases'} in this store")
        fig.suptitle(f"worst cases: {kind} - {title}", fontsize=10)
        return fig
    ncols = min(len(cases), 8)
    nrows = math.ceil(len(cases) / ncols)
    thumb_w = 1.55
    fig = new_figure(ncols * thumb_w + 0.3, nrows * (thumb_w * H / W + 0.75) + 0.5)
    axes = np.atleast_1d(fig.subplots(nrows, ncols, squeeze=False)).ravel()
    est = None
    if kind == "coverage" or kind == "failures":
        try:
            est = store.group(estimates_group(store))
        except KeyError:
            est = None
    mpn = store.group(MPN_GROUP) if kind == "fallback" else None
    ok = store.ok_index
    images = store.read_images(cases["image_id"].to_numpy())
    for ax, (k, case) in zip(axes, cases.iterrows()):
        iid = int(case["image_id"])
        image = images[k]
        if est is not None:
            ax.imshow(part_overlay(image, est.read("i", [iid])[0]))
        else:
            ax.imshow(image)
        if mpn is not None:
            draw_strips(ax, store, mpn.read("roi", [iid])[0], mpn.read("strips", [iid])[0], True,
                        mpn.arrays["mask"].shape[1], labels=False)
        r = ok.iloc[iid]
        ax.set_title(f"#{iid} pid {int(r['pid'])} cam {int(r['camid'])}", fontsize=7.5)
        ax.set_xlabel(case["caption"], fontsize=6.5, color=FALLBACK_COLOR if case["flag"] else "black")
        image_axes(ax)
        if case["flag"]:
            frame_axes(ax, FALLBACK_COLOR, 2.5)
    for ax in axes[len(cases):]:
        ax.axis("off")
    fig.suptitle(f"worst cases: {kind} - {title}", fontsize=10)
    return fig


def _camera_colors(cams) -> dict[int, tuple]:
    from matplotlib import colormaps

    cmap = colormaps[CAMERA_CMAP]
    return {int(c): cmap(k % cmap.N) for k, c in enumerate(sorted(cams))}


def _coverage_heatmap(fig, ax, store, ok: pd.DataFrame) -> None:
    cov = group_table(store, DSAP_GROUP, "coverage").merge(ok[["image_id", "camid"]], on="image_id")
    cols = [f"cov_{p}" for p in PART_NAMES]
    per_cam = cov.groupby("camid")[cols].mean()
    # in % of cells, like the numbers printed in the cells and the colour bar
    table = 100.0 * np.concatenate([per_cam.to_numpy().T, cov[cols].mean().to_numpy()[:, None]], axis=1)  # (24, C+1)
    labels = [f"cam {int(c)}" for c in per_cam.index] + ["all"]
    im = ax.imshow(table, cmap="viridis", vmin=0, vmax=max(float(table.max()), 1e-4), aspect="auto")
    ax.set_yticks(range(24), [f"{p + 1} {n}" for p, n in enumerate(PART_NAMES)], fontsize=7)
    ax.set_xticks(range(len(labels)), labels, fontsize=7, rotation=45, ha="right")
    ax.axvline(len(labels) - 1.5, color="white", lw=2)
    if table.size <= 24 * 12:
        for (y, x), val in np.ndenumerate(table):
            ax.text(x, y, f"{val:.0f}", ha="center", va="center", fontsize=5.5,
                    color="white" if val < 0.6 * table.max() else "black")
    ax.set_title("DSAP coverage per part (% of cells), per camera", fontsize=9)
    fig.colorbar(im, ax=ax, fraction=0.05, pad=0.02, label="mean coverage (% of cells)")


def _fallback_bars(ax, store, ok: pd.DataFrame, colors) -> None:
    st = group_table(store, MPN_GROUP, "stats").merge(ok[["image_id", "camid"]], on="image_id")
    cams = sorted(st["camid"].unique())
    total = st.groupby("camid").size().reindex(cams)
    bottom = np.zeros(len(cams))
    reasons = [r for r in REASON_COLORS if (st["fallback_reason"] == r).any()]
    reasons += sorted(set(st.loc[st["fallback"].astype(bool), "fallback_reason"]) - set(reasons))
    x = np.arange(len(cams))
    for reason in reasons:
        k = st[st["fallback_reason"] == reason].groupby("camid").size().reindex(cams, fill_value=0).to_numpy()
        rate = k / total.to_numpy()
        ax.bar(x, rate, bottom=bottom, color=REASON_COLORS.get(reason, "0.5"), label=reason, width=0.7)
        bottom += rate
    nfb = st[st["fallback"].astype(bool)].groupby("camid").size().reindex(cams, fill_value=0).to_numpy()
    for xi, b, k, t in zip(x, bottom, nfb, total.to_numpy()):
        ax.text(xi, b + 0.01, f"{k}/{t}", ha="center", va="bottom", fontsize=7)
    ax.set_xticks(x, [f"cam {int(c)}" for c in cams], fontsize=7)
    ax.set_ylim(0, max(0.1, float(bottom.max()) * 1.3))
    ax.set_ylabel("fallback rate", fontsize=8)
    ax.tick_params(labelsize=7)
    if reasons:
        ax.legend(fontsize=6.5, frameon=False, loc="upper right")
    ax.set_title(f"MPN fallback rate per camera (all: {st['fallback'].mean():.1%})", fontsize=9)


def _roi_heights(ax, store, ok: pd.DataFrame, colors) -> None:
    g = store.group(MPN_GROUP)
    h = int(g.arrays["mask"].shape[1])
    st = group_table(store, MPN_GROUP, "stats").merge(ok[["image_id", "camid"]], on="image_id")
    st = st[~st["fallback"].astype(bool)]
    cams = sorted(ok["camid"].unique())
    data = [((st.loc[st["camid"] == c, "lower"] - st.loc[st["camid"] == c, "upper"] + 1) / h).to_numpy() for c in cams]
    if not sum(len(d) for d in data):
        no_data_axes(ax, "no non-fallback MPN prior: no ROI heights")
        return
    keep = [k for k, d in enumerate(data) if len(d)]
    parts = ax.boxplot([data[k] for k in keep], positions=keep, widths=0.6, patch_artist=True, showfliers=False)
    for k, box in zip(keep, parts["boxes"]):
        box.set_facecolor(colors[int(cams[k])])
        box.set_alpha(0.6)
    rng = np.random.default_rng(0)
    for k in keep:
        ax.scatter(k + rng.uniform(-0.2, 0.2, len(data[k])), data[k], s=6, color="black", alpha=0.6, zorder=3)
    ax.set_xticks(range(len(cams)), [f"cam {int(c)}\nn={len(d)}" for c, d in zip(cams, data)], fontsize=7)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel(f"(lower - upper + 1) / {h} rows", fontsize=8)
    ax.tick_params(labelsize=7)
    ax.set_title("MPN ROI height per camera (fallbacks excluded)", fontsize=9)


def _images_per_camera(ax, ok: pd.DataFrame) -> None:
    cams = sorted(ok["camid"].unique())
    bottom = np.zeros(len(cams))
    for split, color in zip(SPLITS, ("#4c72b0", "#dd8452", "#55a868")):
        k = ok[ok["split"] == split].groupby("camid").size().reindex(cams, fill_value=0).to_numpy()
        ax.bar(range(len(cams)), k, bottom=bottom, color=color, label=split, width=0.7)
        bottom += k
    ax.set_xticks(range(len(cams)), [f"cam {int(c)}" for c in cams], fontsize=7)
    ax.tick_params(labelsize=7)
    ax.legend(fontsize=7, frameon=False, ncols=3, loc="upper center", bbox_to_anchor=(0.5, 1.0))
    ax.set_ylim(0, max(1, bottom.max()) * 1.25)
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))  # image counts: whole numbers
    ax.set_title(f"images per camera ({len(ok)} ok, {ok['pid'].nunique()} identities)", fontsize=9)


def show_dataset_stats(store):
    """Dataset-level plots, each per camera: images, part coverage, fallback rate, ROI height.

    Axes (in order): coverage heatmap (24 parts x cameras, plus "all"), its
    colour bar, images per camera by split, MPN fallback rate by reason, MPN ROI
    height (as a fraction of the feature-map rows). A panel whose group is
    missing says which command builds it.
    """
    ok = store.ok_index
    colors = _camera_colors(ok["camid"].unique())
    fig = new_figure(12.5, 9.0)
    grid = fig.add_gridspec(3, 2, width_ratios=[1.15, 1])
    ax_cov = fig.add_subplot(grid[:, 0])
    if store.has_group(DSAP_GROUP) and len(group_table(store, DSAP_GROUP, "coverage")):
        _coverage_heatmap(fig, ax_cov, store, ok)
    else:
        no_data_axes(ax_cov, "no priors/dsap: run `python -m pipelines build-dsap`")
    _images_per_camera(fig.add_subplot(grid[0, 1]), ok)
    ax_fb, ax_roi = fig.add_subplot(grid[1, 1]), fig.add_subplot(grid[2, 1])
    if store.has_group(MPN_GROUP) and len(group_table(store, MPN_GROUP, "stats")):
        _fallback_bars(ax_fb, store, ok, colors)
        _roi_heights(ax_roi, store, ok, colors)
    else:
        for ax in (ax_fb, ax_roi):
            no_data_axes(ax, "no priors/mpn: run `python -m pipelines build-mpn-priors`")
    fig.suptitle(f"{store.attrs.get('dataset')} - {store.url}", fontsize=10)
    return fig


__all__ = ["WORST_KINDS", "show_worst_cases", "show_dataset_stats"]

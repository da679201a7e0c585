"""Store views and the HTML summary/report: figure contents checked against the stored arrays."""
from __future__ import annotations

import os
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import zarr
from matplotlib.colors import to_rgb
from matplotlib.figure import Figure

from priors.dsap import MERGE_LEVEL2_NAMES, MERGE_LEVEL2_PARTS, PART_NAMES
from storage import failures_frame, open_store, views
from storage.report import example_ids, store_html_summary, write_report

ROOT = Path(__file__).resolve().parents[1]
FALLBACK_ID = 5
INJECTED_FAILURES = [(3, "estimate", "pose_not_found", "oracle: pose_not_found"),
                     (9, "estimate", "pose_not_found", "oracle: pose_not_found"),
                     (9, "warp", "<b>odd & reason</b>", "no body pixel")]


@pytest.fixture(scope="module")
def store(synthetic_store):
    return open_store(synthetic_store)


@pytest.fixture(scope="module")
def doctored_store(synthetic_store, tmp_path_factory):
    """A copy of the synthetic store with failure rows and one MPN fallback written in, and no priors/mpn copy."""
    path = tmp_path_factory.mktemp("doctored") / "store"
    shutil.copytree(synthetic_store, path)
    fails = failures_frame(INJECTED_FAILURES)
    fails.to_parquet(path / "tables/priors/dsap/failures/part-999999.parquet", index=False)
    s = open_store(path)
    k = FALLBACK_ID // s.unit_size
    part = path / f"tables/priors/mpn/stats/part-{k:06d}.parquet"
    stats = pd.read_parquet(part)
    hit = stats["image_id"] == FALLBACK_ID
    stats.loc[hit, "fallback"] = True
    stats.loc[hit, "fallback_reason"] = "head_missing"
    stats.to_parquet(part, index=False)
    fallback = zarr.open_array(str(path / "priors/mpn/fallback"), mode="r+")
    fallback[FALLBACK_ID] = True
    # re-stamp the unit's marker as a writer would: readers refuse data that differ from their marker
    from storage.store import data_checksum, data_crc32

    unit = fallback[k * s.unit_size:(k + 1) * s.unit_size]
    marker = path / f"units/priors/mpn/{k:06d}.json"
    meta = json.loads(marker.read_text())
    meta["checksums"]["fallback"], meta["crc32"]["fallback"] = data_checksum(unit), data_crc32(unit)
    marker.write_text(json.dumps(meta))
    return open_store(path)


# ---- HTML summary ---------------------------------------------------------
def test_html_summary_counts_groups_and_provenance(store):
    page = store_html_summary(store)
    assert store._repr_html_() == page
    ok = store.index[store.index["status"] == "ok"]
    for split in ("train", "query", "gallery"):
        s = ok[ok["split"] == split]
        row = (f"<td>{split}</td><td class=\"num\">{len(s)}</td><td class=\"num\">{s['pid'].nunique()}</td>"
               f"<td class=\"num\">{s['camid'].nunique()}</td>")
        assert row in page
    assert f"<td class=\"num\">{len(ok)}</td>" in page
    for cam, n in ok.groupby("camid").size().items():
        assert re.search(rf"<td>cam {cam}</td>(<td class=\"num\">\d+</td>){{3}}<td class=\"num\">{n}</td>", page)
    for name in ("estimates/oracle", "priors/dsap", "priors/mpn"):
        assert f"<b>{name}</b>" in page
    assert "<b>warp_dsap</b>" in page and "S=32" in page and "K=6" in page
    assert page.count("<b>oracle</b>") >= 3  # dense, parsing and segmentation oracles
    assert "full provenance (JSON)" in page and store.attrs["source_root"] in page


def test_html_summary_failure_counts_are_escaped(doctored_store):
    page = store_html_summary(doctored_store)
    assert "pose_not_found: 2" in page
    assert "&lt;b&gt;odd &amp; reason&lt;/b&gt;: 1" in page
    assert "<b>odd" not in page


# ---- select -----------------------------------------------------------------
@pytest.mark.parametrize("kwargs", [{}, {"split": "query"}, {"camid": [1, 3]},
                                    {"split": ["train", "gallery"], "camid": 2},
                                    {"status": "ok", "pid": "FIRST"}, {"status": "failed"}])
def test_select_matches_a_naive_filter(store, kwargs):
    idx = store.index
    if kwargs.get("pid") == "FIRST":
        kwargs = {**kwargs, "pid": int(idx["pid"].iloc[0])}
    got = views.select(store, **kwargs)

    def keep(row) -> bool:
        for col, want in kwargs.items():
            allowed = want if isinstance(want, list) else [want]
            if row[col] not in allowed:
                return False
        return True

    expected = [int(r["image_id"]) for _, r in idx.iterrows() if keep(r)]
    assert got["image_id"].tolist() == expected
    assert list(got.columns) == list(idx.columns)


# ---- per-image views ----------------------------------------------------------
def _one_body_image(store) -> int:
    cov = store.group("priors/dsap").table("coverage").sort_values("image_id")
    return int(cov.loc[cov["parts_present"].idxmax(), "image_id"])


def test_show_iuv_draws_parts_in_the_palette(store):
    iid = _one_body_image(store)
    fig = views.show_iuv(store, iid)
    assert isinstance(fig, Figure) and fig._repr_png_()[:8] == b"\x89PNG\r\n\x1a\n"
    axes = fig.axes
    assert len(axes) == 5
    assert [a.get_title() for a in axes[:2]] == ["image", "parts I"]
    assert axes[2].get_title().startswith("U isolines") and axes[3].get_title().startswith("V isolines")
    i = store.group("estimates/oracle").read("i", [iid])[0]
    img = store.image(iid).astype(np.float32) / 255
    shown = np.asarray(axes[1].images[0].get_array())
    np.testing.assert_array_equal(axes[0].images[0].get_array(), store.image(iid))
    for label in np.unique(i[i > 0]):
        y, x = np.argwhere(i == label)[0]
        expected = 0.35 * img[y, x] + 0.65 * np.array(to_rgb(views.PART_COLORS[label - 1]))
        np.testing.assert_allclose(shown[y, x], expected, atol=1e-5)
    present = [f"{p:2d} {PART_NAMES[p - 1]}" for p in np.unique(i[i > 0])]
    assert [t.get_text() for t in axes[4].get_legend().get_texts()] == present
    # one contour set per part with pixels, for U and for V
    assert len(axes[2].collections) >= len(present) - 2 and len(axes[3].collections) >= len(present) - 2


def test_part_palette_is_24_distinct_colours():
    assert len(views.PART_COLORS) == 24 and len(set(views.PART_COLORS)) == 24
    assert views.PART_CMAP.N == 25


def test_show_dsap_panels_and_merged_groups(store):
    iid = _one_body_image(store)
    fig = views.show_dsap(store, iid)
    axes = fig.axes
    assert len(axes) == 1 + 24 + 8
    g = store.group("priors/dsap")
    dsap, valid = g.read("dsap", [iid])[0], g.read("valid", [iid])[0]
    cov = store.group("priors/dsap").table("coverage").set_index("image_id").loc[iid]
    for p in range(24):
        ax = axes[1 + p]
        assert ax.get_title() == f"{p + 1} {PART_NAMES[p]}\n{cov[f'cov_{PART_NAMES[p]}']:.0%}"
        shown = np.asarray(ax.images[0].get_array())
        rgb = np.moveaxis(dsap[p], 0, -1) / 255
        np.testing.assert_allclose(shown[valid[p]], rgb[valid[p]], atol=1e-6)
        np.testing.assert_allclose(shown[~valid[p]], 0.2 * rgb[~valid[p]] + 0.8, atol=1e-6)
    for k, (name, parts) in enumerate(zip(MERGE_LEVEL2_NAMES, MERGE_LEVEL2_PARTS)):
        assert axes[25 + k].get_title().startswith(name + "\n")
        # naive reference: per cell, the mean over the parts that hold a pixel there
        merged, mvalid = views.merge_dsap(dsap, valid, parts)
        S = dsap.shape[-1]
        for y in range(0, S, 7):
            for x in range(0, S, 5):
                have = [q for q in parts if valid[q, y, x]]
                assert mvalid[y, x] == bool(have)
                if have:
                    np.testing.assert_allclose(merged[:, y, x], np.mean([dsap[q, :, y, x] for q in have], axis=0),
                                               rtol=1e-6)


def _line_ys(ax, gid: str) -> list[float]:
    return sorted(float(line.get_ydata()[0]) for line in ax.lines if line.get_gid() == gid)


def test_show_mpn_prior_draws_the_stored_strips(store):
    g = store.group("priors/mpn")
    H = store.image_size[0]
    h = g.arrays["mask"].shape[1]
    for iid in (0, _one_body_image(store)):
        fig = views.show_mpn_prior(store, iid)
        axes = fig.axes
        assert len(axes) == 3
        roi, strips = g.read("roi", [iid])[0], g.read("strips", [iid])[0]
        scale = H / h
        edges = sorted(set(strips[:, 0].tolist()) | {int(strips[-1, 1])})
        assert _line_ys(axes[1], "strip_boundary") == pytest.approx([e * scale - 0.5 for e in edges])
        assert _line_ys(axes[1], "roi_upper") == pytest.approx([roi[0] * scale - 0.5])
        assert _line_ys(axes[1], "roi_lower") == pytest.approx([(roi[1] + 1) * scale - 0.5])
        assert edges[0] == roi[0] and edges[-1] == roi[1] + 1
        assert f"K={len(strips)} strips" in axes[1].get_title()
        np.testing.assert_array_equal(axes[2].images[0].get_array(), g.read("mask", [iid])[0])
        assert "FALLBACK" not in fig._suptitle.get_text() or bool(g.read("fallback", [iid])[0])


def test_show_mpn_prior_marks_a_fallback(doctored_store):
    fig = views.show_mpn_prior(doctored_store, FALLBACK_ID)
    assert "FALLBACK: head_missing" in fig._suptitle.get_text()
    for ax in fig.axes:
        assert to_rgb(ax.spines["top"].get_edgecolor()) == pytest.approx(to_rgb("#d62728"))


def test_views_reject_an_unknown_image(store):
    with pytest.raises(KeyError, match="image_id"):
        views.show_iuv(store, store.n_images)


# ---- galleries and dataset plots -------------------------------------------------
def _title_ids(fig) -> list[int]:
    return [int(re.match(r"#(\d+) ", a.get_title()).group(1)) for a in fig.axes if a.get_title()]


def test_worst_coverage_is_the_lowest_coverage(store):
    cov = store.group("priors/dsap").table("coverage")
    expected = cov.sort_values(["coverage", "image_id"], kind="stable")["image_id"].head(5).tolist()
    fig = views.show_worst_cases(store, "coverage", n=5)
    assert _title_ids(fig) == expected
    first = cov.set_index("image_id").loc[expected[0]]
    assert fig.axes[0].get_xlabel().startswith(f"coverage {first['coverage']:.0%}, {int(first['parts_present'])}/24")


def test_worst_fallback_and_failures_galleries(store, doctored_store):
    fig = views.show_worst_cases(doctored_store, "fallback", n=8)
    stats = doctored_store.group("priors/mpn").table("stats")
    fb_ids = sorted(stats.loc[stats["fallback"], "image_id"].tolist())
    assert FALLBACK_ID in fb_ids and sorted(_title_ids(fig)) == fb_ids[:8]
    assert any("head_missing" in a.get_xlabel() for a in fig.axes)
    fig = views.show_worst_cases(doctored_store, "failures")
    assert _title_ids(fig) == [3, 9]
    assert fig.axes[1].get_xlabel() == "<b>odd & reason</b>\n(dsap)\npose_not_found\n(dsap)"
    empty = views.show_worst_cases(store, "failures")
    assert len(empty.axes) == 1 and "no failures" in empty.axes[0].texts[0].get_text()
    with pytest.raises(ValueError, match="kind"):
        views.show_worst_cases(store, "nonsense")


def test_dataset_stats_per_camera(store):
    fig = views.show_dataset_stats(store)
    ax_cov, _cbar, ax_img, ax_fb, ax_roi = fig.axes
    ok = store.ok_index
    cov = store.group("priors/dsap").table("coverage").merge(ok[["image_id", "camid"]], on="image_id")
    cams = sorted(ok["camid"].unique())
    shown = np.asarray(ax_cov.images[0].get_array())
    assert shown.shape == (24, len(cams) + 1)
    for c, cam in enumerate(cams):  # naive reference: a loop over rows per part
        rows = cov[cov["camid"] == cam]
        for p, name in enumerate(PART_NAMES):
            assert shown[p, c] == pytest.approx(100 * sum(rows[f"cov_{name}"]) / len(rows), rel=1e-5)  # in %
    assert "%" in _cbar.get_ylabel()  # the colour bar is in % like the numbers in the cells
    assert [t.get_text() for t in ax_img.get_xticklabels()] == [f"cam {c}" for c in cams]
    heights = [sum(p.get_height() for p in ax_img.patches if p.get_x() < k < p.get_x() + p.get_width())
               for k in range(len(cams))]
    assert heights == [int((ok["camid"] == c).sum()) for c in cams]
    stats = store.group("priors/mpn").table("stats").merge(ok[["image_id", "camid"]], on="image_id")
    labels = [t.get_text() for t in ax_fb.texts]
    assert labels == [f"{int(stats[stats['camid'] == c]['fallback'].sum())}/{int((stats['camid'] == c).sum())}"
                      for c in cams]
    ns = [int(re.search(r"n=(\d+)", t.get_text()).group(1)) for t in ax_roi.get_xticklabels()]
    assert ns == [int(((stats["camid"] == c) & ~stats["fallback"]).sum()) for c in cams]


# ---- the static report ---------------------------------------------------------------
def _check_report(index: Path) -> list[str]:
    page = index.read_text()
    srcs = re.findall(r"<img src=\"([^\"]+)\"", page)
    assert srcs and len(srcs) == len(set(srcs))
    for src in srcs:
        png = index.parent / src
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 2000
    return srcs


def test_write_report_references_existing_pngs(store, tmp_path):
    index = write_report(store, tmp_path / "rep", max_examples=2)
    assert index == tmp_path / "rep" / "index.html"
    srcs = _check_report(index)
    ids = example_ids(store, 2)
    assert ids == [0, store.n_images - 1]
    expected = {"dataset_stats.png", "worst_coverage.png", "worst_fallback.png", "worst_failures.png"}
    expected |= {f"{v}_{i:06d}.png" for i in ids for v in ("iuv", "dsap", "mpn")}
    assert set(srcs) == expected
    assert "reid-priors store" in index.read_text() and "skipped:" not in index.read_text()


def test_write_report_skips_missing_groups_with_a_note(synthetic_store, tmp_path):
    path = tmp_path / "store"
    shutil.copytree(synthetic_store, path)
    shutil.rmtree(path / "priors" / "mpn")
    index = write_report(open_store(path), tmp_path / "rep", max_examples=1)
    srcs = _check_report(index)
    page = index.read_text()
    assert "skipped: this store has no <code>priors/mpn</code>" in page
    assert not [s for s in srcs if s.startswith("mpn_") or s == "worst_fallback.png"]
    assert {"iuv_000000.png", "dsap_000000.png", "worst_coverage.png"} <= set(srcs)


def test_report_cli(synthetic_store, tmp_path):
    out = tmp_path / "cli"
    proc = subprocess.run([sys.executable, "-m", "storage", "report", str(synthetic_store), "--out", str(out),
                           "--max-examples", "1"], capture_output=True, text=True, cwd=ROOT, timeout=300,
                          env={**os.environ, "MPLBACKEND": "Agg"})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"wrote {out / 'index.html'}"
    assert "iuv_000000.png" in _check_report(out / "index.html")

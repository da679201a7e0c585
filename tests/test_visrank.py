"""Ranked results: per-query rankings follow the evaluation protocol, PNGs are drawn, evaluate --visrank, report."""
from __future__ import annotations

import io
import json

import numpy as np
import pytest
from PIL import Image

from reid_train import evaluate
from reid_train.evaluation.metrics import evaluate_rank
from reid_train.evaluation.visrank import plot_rankings, rank_queries, worst_first

from test_extract import tiny_run, tiny_store  # noqa: F401  (module fixtures: a 3-iteration baseline run)


def test_rank_queries_by_hand():
    # one query, pid 1 cam 0; gallery: 0 same pid+cam (removed), 1 junk (removed), 2 match, 3 other, 4 match, 5 other
    g_pids, g_cams = np.array([1, -1, 1, 2, 1, 3]), np.array([0, 1, 1, 1, 2, 2])
    dist = np.array([[0.0, 0.1, 0.5, 0.2, 0.9, 0.3]])
    (r,) = rank_queries(dist, [1], g_pids, [0], g_cams, topk=2)
    # ranking without 0 and 1: 3 (0.2), 5 (0.3), 2 (0.5), 4 (0.9) -> matches at positions 2 and 3
    assert r.top.tolist() == [3, 5] and r.correct.tolist() == [False, False]
    assert r.missed.tolist() == [2, 4] and r.missed_ranks.tolist() == [2, 3]
    assert r.ap == pytest.approx((1 / 3 + 2 / 4) / 2) and r.first_match_rank == 2 and r.num_matches == 2
    # a query with no true match is skipped, as evaluation skips it
    assert rank_queries(dist, [7], g_pids, [0], g_cams) == []


def test_mean_ap_is_the_evaluated_map_and_worst_first():
    rng = np.random.default_rng(0)
    q_pids, g_pids = rng.integers(0, 8, 30), rng.integers(-1, 8, 120)
    q_cams, g_cams = rng.integers(0, 3, 30), rng.integers(0, 3, 120)
    dist = rng.random((30, 120)).astype(np.float32)
    dist[:, 5] = dist[:, 6]  # ties broken by gallery index, as evaluation does
    rankings = rank_queries(dist, q_pids, g_pids, q_cams, g_cams, topk=5, block_size=7)
    res = evaluate_rank(dist, q_pids, g_pids, q_cams, g_cams, max_rank=10)
    assert len(rankings) == res["num_valid_queries"]
    assert np.mean([r.ap for r in rankings]) == pytest.approx(res["mAP"], abs=1e-12)
    assert np.mean([r.first_match_rank == 0 for r in rankings]) == pytest.approx(res["rank1"])
    # a (start, stop) -> rows callable (AlignedReID's global + local distance) ranks the same
    by_rows = rank_queries(lambda a, b: dist[a:b], q_pids, g_pids, q_cams, g_cams, topk=5, block_size=4)
    assert [(r.query, r.ap, r.top.tolist()) for r in by_rows] == [(r.query, r.ap, r.top.tolist()) for r in rankings]
    worst = worst_first(rankings, 4)
    assert [r.ap for r in worst] == sorted(r.ap for r in rankings)[:4]


def test_plot_draws_frames():
    img = np.full((64, 32, 3), 128, np.uint8)
    g_pids, g_cams = np.array([1, 2, 1]), np.array([1, 1, 1])
    (r,) = rank_queries(np.array([[0.1, 0.2, 0.3]]), [1], g_pids, [0], g_cams, topk=2)
    fig = plot_rankings([r], lambda i: img, lambda i: img)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    rgb = np.asarray(Image.open(buf).convert("RGB")).astype(int)
    green = ((rgb[..., 1] > 140) & (rgb[..., 0] < 80) & (rgb[..., 2] < 100)).sum()
    red = ((rgb[..., 0] > 190) & (rgb[..., 1] < 70) & (rgb[..., 2] < 70)).sum()
    assert green > 100 and red > 100  # the correct (rank 1), the wrong (rank 2) and the missed match (rank 3)


def test_evaluate_visrank_and_report(tiny_run, tiny_store, tmp_path):  # noqa: F811
    assert evaluate.main(["--run", str(tiny_run), "--device", "cpu", "--visrank", "3", "--visrank-topk", "5"]) == 0
    vis_dir = tiny_run / "visrank"
    summary = json.loads((vis_dir / "visrank.json").read_text())
    res = json.loads((tiny_run / "evaluation.json").read_text())
    assert summary["mAP"] == pytest.approx(res["plain"]["mAP"], abs=1e-9)
    rows = summary["queries"]
    assert len(rows) == 3 and [r["ap"] for r in rows] == sorted(r["ap"] for r in rows)
    assert all(len(r["top"]) == 5 for r in rows)
    grid = Image.open(vis_dir / "grid.png")
    one = Image.open(vis_dir / rows[0]["png"])
    assert grid.height > 2 * one.height * 0.9 and grid.width >= one.width * 0.9

    from storage import open_store
    from storage.report import write_report

    index = write_report(open_store(tiny_store), tmp_path / "report", max_examples=1, runs=[tiny_run])
    page = index.read_text()
    assert "Ranked results" in page and "visrank_run.png" in page and (tmp_path / "report" / "visrank_run.png").is_file()
    assert f"{rows[0]['ap']:.3f}" in page
    # a run without visrank gets the command that makes it
    bare = tmp_path / "bare"
    bare.mkdir()
    page = write_report(open_store(tiny_store), tmp_path / "report2", max_examples=1, runs=[bare]).read_text()
    assert "--visrank" in page


def test_ranked_results_render_in_headless_chromium(tiny_run, tiny_store, tmp_path):  # noqa: F811
    from test_report_browser import chromium, headless

    from storage import open_store
    from storage.report import visrank_section

    exe = chromium()
    if not (tiny_run / "visrank" / "grid.png").is_file():
        assert evaluate.main(["--run", str(tiny_run), "--device", "cpu", "--visrank", "3"]) == 0
    out = tmp_path / "page"
    out.mkdir()
    # the report's ranked-results section alone, so the grid fills the screenshot
    body = "".join(visrank_section([tiny_run], out))
    (out / "index.html").write_text(f"<!DOCTYPE html><html><body style='margin:0'>{body}</body></html>")
    url = (out / "index.html").resolve().as_uri()
    dom = headless(exe, tmp_path, "--dump-dom", url)
    assert dom.returncode == 0 and "Ranked results" in dom.stdout and "visrank_run.png" in dom.stdout
    shot = tmp_path / "shot.png"
    proc = headless(exe, tmp_path, f"--screenshot={shot}", "--window-size=1000,1400", url)
    assert proc.returncode == 0 and shot.exists(), proc.stderr[-2000:]
    rgb = np.asarray(Image.open(shot).convert("RGB")).astype(int)
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    green = ((g > 140) & (r < 80) & (b < 100)).mean()
    red = ((r > 190) & (g < 70) & (b < 70)).mean()
    assert rgb.std() > 20 and green > 1e-4 and red > 1e-3, (green, red)  # the frames were drawn: the PNG loaded
    assert open_store(tiny_store).n_images > 0

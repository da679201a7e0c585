"""Evaluation: hand-computed CMC/mAP/mINP, Market-1501 filtering rules, and the
blockwise implementation against a plain per-query one (full stable argsort)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from reid_train.evaluation.metrics import (average_flip, evaluate_features, evaluate_rank,
                                   pairwise_distance)


def plain_evaluate(distmat, q_pids, g_pids, q_camids, g_camids, max_rank=20, junk_pids=(-1,), g_junk=None):
    """Straightforward per-query Market-1501 evaluation (full stable argsort per query)."""
    distmat = np.asarray(distmat)
    junk = np.isin(g_pids, junk_pids) if g_junk is None else (np.isin(g_pids, junk_pids) | g_junk)
    cmcs, aps, inps, skipped = [], [], [], 0
    for i in range(len(q_pids)):
        order = np.argsort(distmat[i], kind="stable")
        remove = ((g_pids[order] == q_pids[i]) & (g_camids[order] == q_camids[i])) | junk[order]
        raw = (g_pids[order] == q_pids[i])[~remove].astype(np.float64)
        if not raw.any():
            skipped += 1
            continue
        cum = raw.cumsum()
        hardest = np.flatnonzero(raw).max()
        inps.append(cum[hardest] / (hardest + 1.0))
        cmc = np.minimum(cum, 1)
        cmc = np.concatenate([cmc, np.ones(max(0, max_rank - cmc.size))])  # short galleries
        cmcs.append(cmc[:max_rank])
        aps.append((cum / np.arange(1, raw.size + 1) * raw).sum() / raw.sum())
    if not aps:
        return dict(num_valid_queries=0, num_skipped_queries=skipped)
    return dict(cmc=np.mean(cmcs, 0), mAP=np.mean(aps), mINP=np.mean(inps),
                num_valid_queries=len(aps), num_skipped_queries=skipped)


def assert_same(got, expected):
    np.testing.assert_allclose(got["cmc"], expected["cmc"], rtol=0, atol=1e-12)
    assert got["mAP"] == pytest.approx(expected["mAP"], abs=1e-12)
    assert got["mINP"] == pytest.approx(expected["mINP"], abs=1e-12)
    assert got["num_valid_queries"] == expected["num_valid_queries"]
    assert got["num_skipped_queries"] == expected["num_skipped_queries"]


# --- a hand-made case -------------------------------------------------------------
#            g0    g1    g2    g3    g4    g5    g6
G_PIDS = np.array([1, 2, 1, -1, 0, 1, 3])
G_CAMS = np.array([0, 1, 1, 1, 1, 2, 2])
Q_PIDS, Q_CAMS = np.array([1, 2, 3]), np.array([0, 1, 0])
DIST = np.array([
    # q0 (pid 1, cam 0): g0 same pid+cam -> removed, g3 junk -> removed;
    # ranking g1 g4 g2+ g6 g5+ -> positives at positions 2 and 4
    [0.1, 0.2, 0.3, 0.05, 0.25, 0.5, 0.4],
    # q1 (pid 2, cam 1): its only match g1 has the same camera -> skipped
    [0.3, 0.1, 0.2, 0.4, 0.5, 0.6, 0.7],
    # q2 (pid 3, cam 0): g6 first
    [0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.1],
])


def test_hand_computed_metrics():
    res = evaluate_rank(DIST, Q_PIDS, G_PIDS, Q_CAMS, G_CAMS, max_rank=5)
    ap_q0 = (1 / 3 + 2 / 5) / 2
    np.testing.assert_allclose(res["cmc"], [0.5, 0.5, 1, 1, 1])
    assert res["mAP"] == pytest.approx((ap_q0 + 1) / 2)
    assert res["mINP"] == pytest.approx((2 / 5 + 1) / 2)
    assert res["rank1"] == 0.5 and res["rank5"] == 1.0 and "rank10" not in res
    assert (res["num_valid_queries"], res["num_skipped_queries"]) == (2, 1)


def test_explicit_junk_mask_and_junk_pids():
    only_q0 = (DIST[:1], Q_PIDS[:1], G_PIDS, Q_CAMS[:1], G_CAMS)
    # g1 marked junk too: ranking g4 g2+ g6 g5+
    res = evaluate_rank(*only_q0, max_rank=5, g_junk=np.array([0, 1, 0, 0, 0, 0, 0], bool))
    assert res["mAP"] == pytest.approx((1 / 2 + 2 / 4) / 2)
    assert res["mINP"] == pytest.approx(2 / 4)
    # no junk pids: the pid -1 image (closest) becomes an ordinary negative
    res = evaluate_rank(*only_q0, max_rank=5, junk_pids=())
    assert res["mAP"] == pytest.approx((1 / 4 + 2 / 6) / 2)
    np.testing.assert_allclose(res["cmc"], [0, 0, 0, 1, 1])


def test_ties_follow_gallery_order():
    g_pids, g_cams = np.array([2, 1, 3, 1]), np.array([1, 1, 1, 2])
    res = evaluate_rank(np.ones((1, 4)), [1], g_pids, [0], g_cams, max_rank=4)
    assert res["mAP"] == pytest.approx((1 / 2 + 2 / 4) / 2)   # positives at positions 1 and 3
    assert res["mINP"] == pytest.approx(2 / 4)
    np.testing.assert_allclose(res["cmc"], [0, 1, 1, 1])


def test_no_valid_query_raises_and_shapes_checked():
    with pytest.raises(ValueError, match="no query"):
        evaluate_rank(DIST[1:2], Q_PIDS[1:2], G_PIDS, Q_CAMS[1:2], G_CAMS)
    with pytest.raises(ValueError, match="shape"):
        evaluate_rank(DIST[:, :5], Q_PIDS, G_PIDS, Q_CAMS, G_CAMS)
    with pytest.raises(ValueError, match="non-finite"):
        evaluate_rank(np.where(DIST > 0.85, np.nan, DIST), Q_PIDS, G_PIDS, Q_CAMS, G_CAMS)


# --- against the plain implementation ---------------------------------------------
@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 10_000), num_q=st.integers(1, 25), num_g=st.integers(1, 60),
       levels=st.sampled_from([3, 20, 0]), block=st.integers(1, 30), max_rank=st.integers(1, 25))
def test_blockwise_equals_plain_per_query(seed, num_q, num_g, levels, block, max_rank):
    rng = np.random.default_rng(seed)
    dist = rng.random((num_q, num_g))
    if levels:  # quantised distances: many ties between positives and negatives
        dist = np.floor(dist * levels)
    q_pids, g_pids = rng.integers(-1, 5, num_q), rng.integers(-1, 5, num_g)
    q_cams, g_cams = rng.integers(0, 3, num_q), rng.integers(0, 3, num_g)
    g_junk = rng.random(num_g) < 0.1
    expected = plain_evaluate(dist, q_pids, g_pids, q_cams, g_cams, max_rank, g_junk=g_junk)
    if expected["num_valid_queries"] == 0:
        return
    got = evaluate_rank(dist, q_pids, g_pids, q_cams, g_cams, max_rank, block_size=block, g_junk=g_junk)
    assert_same(got, expected)
    got = evaluate_rank(lambda a, b: torch.from_numpy(dist[a:b]), q_pids, g_pids, q_cams, g_cams,
                        max_rank, block_size=block, g_junk=g_junk)
    assert_same(got, expected)


@pytest.mark.parametrize("levels", [0, 10])
def test_many_positives_equal_plain(levels):
    """More than 64 positives per query takes the searchsorted branch."""
    rng = np.random.default_rng(levels)
    dist = rng.random((12, 500))
    if levels:
        dist = np.floor(dist * levels)
    q_pids, g_pids = rng.integers(0, 2, 12), rng.integers(0, 2, 500)
    q_cams, g_cams = rng.integers(0, 2, 12), rng.integers(0, 2, 500)
    expected = plain_evaluate(dist, q_pids, g_pids, q_cams, g_cams)
    assert_same(evaluate_rank(dist, q_pids, g_pids, q_cams, g_cams, block_size=5), expected)


def test_features_path_equals_matrix_path():
    rng = np.random.default_rng(7)
    centres = rng.normal(size=(15, 24))
    q_ids, g_ids = rng.integers(15, size=60), np.concatenate([np.arange(15), rng.integers(15, size=185)])
    qf = (centres[q_ids] + 0.8 * rng.normal(size=(60, 24))).astype(np.float32)
    gf = (centres[g_ids] + 0.8 * rng.normal(size=(200, 24))).astype(np.float32)
    q_cams, g_cams = rng.integers(0, 6, 60), rng.integers(0, 6, 200)
    for metric in ("euclidean", "cosine"):
        expected = plain_evaluate(pairwise_distance(qf, gf, metric), q_ids, g_ids, q_cams, g_cams)
        assert 0.2 < expected["mAP"] < 1  # a meaningful, non-trivial case
        assert_same(evaluate_features(qf, gf, q_ids, g_ids, q_cams, g_cams, metric, block_size=16), expected)
        got = evaluate_features(torch.from_numpy(qf), torch.from_numpy(gf), q_ids, g_ids, q_cams, g_cams,
                                metric, block_size=16)
        assert got["mAP"] == pytest.approx(expected["mAP"], abs=1e-6)


# --- distances --------------------------------------------------------------------
def test_pairwise_distance_against_naive():
    rng = np.random.default_rng(2)
    q, g = rng.normal(size=(7, 5)), rng.normal(size=(11, 5))
    naive_euc = np.sqrt(((q[:, None] - g[None]) ** 2).sum(-1))
    cos = (q @ g.T) / np.linalg.norm(q, axis=1)[:, None] / np.linalg.norm(g, axis=1)[None]
    np.testing.assert_allclose(pairwise_distance(q, g), naive_euc, atol=1e-10)
    np.testing.assert_allclose(pairwise_distance(q, g, "sqeuclidean", block=3), naive_euc ** 2, atol=1e-10)
    np.testing.assert_allclose(pairwise_distance(q, g, "cosine", block=2), 1 - cos, atol=1e-12)
    t = pairwise_distance(torch.from_numpy(q), torch.from_numpy(g), block=4)
    assert isinstance(t, torch.Tensor)
    np.testing.assert_allclose(t.numpy(), naive_euc, atol=1e-10)
    assert pairwise_distance(q.astype(np.float32), q.astype(np.float32)).min() >= 0  # clamped
    with pytest.raises(ValueError):
        pairwise_distance(q, g, "manhattan")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_distance_blocks_bitwise_equal_the_numpy_passes(dtype):
    """The one-pass finish of a distance block (-2 q.g + |g|^2 + |q|^2, clamp,
    root) gives the very bits of the five numpy passes it replaced (clamped
    negative squares of duplicates included), so rankings and their ties
    cannot move."""
    rng = np.random.default_rng(9)
    q, g = rng.normal(size=(37, 24)).astype(dtype), rng.normal(size=(301, 24)).astype(dtype)
    g[:5] = q[:5]
    for metric in ("euclidean", "sqeuclidean"):
        want = q @ g.T
        want *= -2
        want += np.einsum("ij,ij->i", g, g)[None, :]
        want += np.einsum("ij,ij->i", q, q)[:, None]
        np.maximum(want, 0, out=want)
        if metric == "euclidean":
            np.sqrt(want, out=want)
        got = pairwise_distance(q, g, metric)
        assert got.dtype == dtype and np.array_equal(got, want)
        assert got.min() == 0


def test_average_flip():
    f = torch.tensor([[1.0, 3.0]])
    torch.testing.assert_close(average_flip(f, torch.tensor([[3.0, 5.0]])), torch.tensor([[2.0, 4.0]]))
    np.testing.assert_array_equal(average_flip(np.array([0.0, 2.0]), np.array([2.0, 2.0])), [1.0, 2.0])
    with pytest.raises(ValueError):
        average_flip(np.zeros(2), np.zeros(3))


def test_evaluate_rank_equals_plain_on_random_data_with_junk_and_tied_rows():
    """The compiled kernel's two counting paths (binary search where few entries are near,
    SIMD count otherwise) against the plain per-query sort, with ties and junk."""
    rng = np.random.default_rng(5)
    q_pids, g_pids = rng.integers(0, 6, 40), rng.integers(-1, 6, 1500)
    q_cams, g_cams = rng.integers(0, 3, 40), rng.integers(0, 3, 1500)
    dist = np.round(rng.random((40, 1500)), 2)          # many exact ties
    dist[::3] = np.sort(dist[::3], axis=1)              # rows whose positives are spread out
    junk = rng.random(1500) < 0.05
    assert_same(evaluate_rank(dist, q_pids, g_pids, q_cams, g_cams, g_junk=junk, block_size=7),
                plain_evaluate(dist, q_pids, g_pids, q_cams, g_cams, g_junk=junk))
    bad = dist.copy()
    bad[3, 17] = np.nan
    with pytest.raises(ValueError, match="non-finite"):
        evaluate_rank(bad, q_pids, g_pids, q_cams, g_cams)


@pytest.mark.timeout(900)
def test_gpu_suite_smoke_on_cpu():
    """bench/gpu_suite.sh --smoke runs every step of the GPU suite, tiny, on the CPU."""
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    run = subprocess.run(["bash", str(root / "bench" / "gpu_suite.sh"), "--smoke"], capture_output=True, text=True,
                         env={**__import__("os").environ, "PYTHON": sys.executable}, timeout=850)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    for expected in ("train fp32", "inference fp32", "paper: DSA-reID (Table 9, Titan V) 34.7 ms/image",
                     "stall share", "evaluate_rank (ours, compiled)", "k_reciprocal_rerank (ours, from features on cpu)",
                     "MSMT17-size re-ranking"):
        assert expected in run.stdout, expected

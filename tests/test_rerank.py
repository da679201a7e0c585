"""k-reciprocal re-ranking: blockwise/sparse implementation vs a line-by-line
transcription of the authors' dense ``re_ranking`` (Zhong et al., CVPR 2017)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from reid_train.evaluation import rerank
from reid_train.evaluation.metrics import pairwise_distance
from reid_train.evaluation.rerank import (k_reciprocal_rerank, k_reciprocal_rerank_dist, reciprocal_mask,
                               smallest_k_stable)


def dense_re_ranking(q_g_dist, q_q_dist, g_g_dist, k1=20, k2=6, lambda_value=0.3):
    """The original dense algorithm, transcribed; the only change is a stable
    argsort (the original's default quicksort orders ties arbitrarily)."""
    original_dist = np.concatenate(
        [np.concatenate([q_q_dist, q_g_dist], axis=1),
         np.concatenate([q_g_dist.T, g_g_dist], axis=1)], axis=0)
    original_dist = np.power(original_dist, 2).astype(np.float32)
    original_dist = np.transpose(1. * original_dist / np.max(original_dist, axis=0))
    V = np.zeros_like(original_dist).astype(np.float32)
    initial_rank = np.argsort(original_dist, kind="stable").astype(np.int32)

    query_num = q_g_dist.shape[0]
    gallery_num = q_g_dist.shape[0] + q_g_dist.shape[1]
    all_num = gallery_num

    for i in range(all_num):
        # k-reciprocal neighbors
        forward_k_neigh_index = initial_rank[i, :k1 + 1]
        backward_k_neigh_index = initial_rank[forward_k_neigh_index, :k1 + 1]
        fi = np.where(backward_k_neigh_index == i)[0]
        k_reciprocal_index = forward_k_neigh_index[fi]
        k_reciprocal_expansion_index = k_reciprocal_index
        for j in range(len(k_reciprocal_index)):
            candidate = k_reciprocal_index[j]
            candidate_forward_k_neigh_index = initial_rank[candidate, :int(np.around(k1 / 2.)) + 1]
            candidate_backward_k_neigh_index = initial_rank[candidate_forward_k_neigh_index,
                                                            :int(np.around(k1 / 2.)) + 1]
            fi_candidate = np.where(candidate_backward_k_neigh_index == candidate)[0]
            candidate_k_reciprocal_index = candidate_forward_k_neigh_index[fi_candidate]
            if len(np.intersect1d(candidate_k_reciprocal_index, k_reciprocal_index)) > \
                    2. / 3 * len(candidate_k_reciprocal_index):
                k_reciprocal_expansion_index = np.append(k_reciprocal_expansion_index,
                                                         candidate_k_reciprocal_index)
        k_reciprocal_expansion_index = np.unique(k_reciprocal_expansion_index)
        weight = np.exp(-original_dist[i, k_reciprocal_expansion_index])
        V[i, k_reciprocal_expansion_index] = 1. * weight / np.sum(weight)
    original_dist = original_dist[:query_num, ]
    if k2 != 1:
        V_qe = np.zeros_like(V, dtype=np.float32)
        for i in range(all_num):
            V_qe[i, :] = np.mean(V[initial_rank[i, :k2], :], axis=0)
        V = V_qe
        del V_qe
    del initial_rank
    invIndex = []
    for i in range(gallery_num):
        invIndex.append(np.where(V[:, i] != 0)[0])

    jaccard_dist = np.zeros_like(original_dist, dtype=np.float32)
    for i in range(query_num):
        temp_min = np.zeros(shape=[1, gallery_num], dtype=np.float32)
        indNonZero = np.where(V[i, :] != 0)[0]
        indImages = [invIndex[ind] for ind in indNonZero]
        for j in range(len(indNonZero)):
            temp_min[0, indImages[j]] = temp_min[0, indImages[j]] + \
                np.minimum(V[i, indNonZero[j]], V[indImages[j], indNonZero[j]])
        jaccard_dist[i] = 1 - temp_min / (2. - temp_min)

    final_dist = jaccard_dist * (1 - lambda_value) + original_dist * lambda_value
    return final_dist[:query_num, query_num:]


def clustered_features(num_query, num_gallery, dim=32, num_ids=12, spread=0.6, seed=0):
    """Identity centres + noise, so that k-reciprocal sets are non-trivial."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(num_ids, dim)) * 2.0
    qf = centres[rng.integers(num_ids, size=num_query)] + spread * rng.normal(size=(num_query, dim))
    gf = centres[rng.integers(num_ids, size=num_gallery)] + spread * rng.normal(size=(num_gallery, dim))
    return qf.astype(np.float32), gf.astype(np.float32)


def dist_matrices(qf, gf, metric="euclidean"):
    return (pairwise_distance(qf, gf, metric), pairwise_distance(qf, qf, metric),
            pairwise_distance(gf, gf, metric))


@pytest.mark.parametrize("k1,k2,lam,block", [(20, 6, 0.3, None), (20, 6, 0.3, 7), (5, 3, 0.5, 13),
                                             (7, 1, 0.3, 50), (4, 9, 0.1, 16)])
def test_matches_dense_reference_on_given_matrices(k1, k2, lam, block):
    q_g, q_q, g_g = dist_matrices(*clustered_features(40, 120, seed=k1 + k2))
    expected = dense_re_ranking(q_g, q_q, g_g, k1, k2, lam)
    got = k_reciprocal_rerank_dist(q_g, q_q, g_g, k1, k2, lam, block_size=block)
    assert got.dtype == np.float32 and got.shape == (40, 120)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5)
    # re-ranking changes the ranking: the test would catch returning the original distances
    assert not np.allclose(got, q_g ** 2 / (q_g ** 2).max(1, keepdims=True), atol=1e-3)


def test_matches_dense_reference_on_asymmetric_float64_matrices():
    rng = np.random.default_rng(3)
    q_g, q_q, g_g = (x.astype(np.float64) for x in dist_matrices(*clustered_features(25, 70, seed=3)))
    q_q = q_q + 0.01 * rng.random(q_q.shape)  # not symmetric: row/column conventions matter
    g_g = g_g + 0.01 * rng.random(g_g.shape)
    np.testing.assert_allclose(k_reciprocal_rerank_dist(q_g, q_q, g_g, 8, 4, 0.3, block_size=9),
                               dense_re_ranking(q_g, q_q, g_g, 8, 4, 0.3), rtol=0, atol=1e-5)


def test_matches_dense_reference_when_fewer_items_than_k1():
    q_g, q_q, g_g = dist_matrices(*clustered_features(3, 6, seed=4))
    np.testing.assert_allclose(k_reciprocal_rerank_dist(q_g, q_q, g_g, 20, 12, 0.3),
                               dense_re_ranking(q_g, q_q, g_g, 20, 12, 0.3), rtol=0, atol=1e-5)


def test_matches_dense_reference_with_exact_ties():
    """Duplicate images give tied distances: the stable order (by index) decides."""
    qf, gf = clustered_features(30, 90, seed=5)
    gf[10:20] = gf[0]            # ten identical gallery images
    qf[3] = gf[0]                # and a query identical to them
    q_g, q_q, g_g = dist_matrices(np.round(qf, 1), np.round(gf, 1))
    np.testing.assert_allclose(k_reciprocal_rerank_dist(q_g, q_q, g_g, 6, 3, 0.3, block_size=11),
                               dense_re_ranking(q_g, q_q, g_g, 6, 3, 0.3), rtol=0, atol=1e-5)


@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
def test_features_entry_point_equals_reference_on_feature_distances(metric):
    qf, gf = clustered_features(40, 120, seed=11)
    expected = dense_re_ranking(*dist_matrices(qf.astype(np.float64), gf.astype(np.float64), metric))
    got = k_reciprocal_rerank(qf, gf, metric=metric, block_size=32)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5)
    got_torch = k_reciprocal_rerank(torch.from_numpy(qf), torch.from_numpy(gf), metric=metric)
    np.testing.assert_allclose(got_torch, expected, rtol=0, atol=1e-5)


def test_re_ranking_improves_retrieval_on_clustered_data():
    """Sanity of meaning, not only of equality: same-identity gallery items come closer."""
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(10, 16)) * 1.5
    q_ids, g_ids = rng.integers(10, size=30), rng.integers(10, size=150)
    qf = centres[q_ids] + rng.normal(size=(30, 16))
    gf = centres[g_ids] + rng.normal(size=(150, 16))
    before = pairwise_distance(qf, gf)
    after = k_reciprocal_rerank(qf, gf)
    same = q_ids[:, None] == g_ids[None, :]

    def top5_precision(d):
        return same[np.arange(30)[:, None], np.argsort(d, axis=1, kind="stable")[:, :5]].mean()

    assert top5_precision(after) >= top5_precision(before)


def test_smallest_k_stable_equals_stable_argsort_prefix():
    rng = np.random.default_rng(1)
    d = rng.integers(0, 6, size=(50, 40)).astype(np.float32)  # many ties
    for k in (1, 5, 17, 40):
        np.testing.assert_array_equal(smallest_k_stable(d, k), np.argsort(d, axis=1, kind="stable")[:, :k])


def test_reciprocal_mask_hand_made():
    # item 0 lists 1 and 2; 1 lists 0 back, 2 does not
    top = np.array([[0, 1, 2], [1, 0, 2], [2, 1, 3], [3, 2, 1]])
    np.testing.assert_array_equal(reciprocal_mask(top, block=2),
                                  [[True, True, False], [True, True, True], [True, True, True],
                                   [True, True, False]])


@pytest.mark.parametrize("metric, block", [("euclidean", 7), ("euclidean", 64), ("cosine", 13), ("euclidean", 500)])
def test_symmetric_blocks_equal_the_row_by_row_pass(metric, block):
    """From features the (n, n) matrix is computed as block pairs (I, J >= I), each
    fed to the rows of I and, mirrored, of J. On small-integer features every
    product is exact, so both passes must agree bit for bit: neighbour lists
    (with many exact ties, broken by index), row maxima and the normalised
    query-gallery block. Blocks of 7 / 13 straddle the query-gallery border."""
    rng = np.random.default_rng(block)
    qf = rng.integers(-3, 4, (23, 6)).astype(np.float32)
    gf = rng.integers(-3, 4, (81, 6)).astype(np.float32)
    gf[10:20] = gf[0]                 # exact duplicates: tied distances
    qf[5] = gf[0]
    source = rerank._FeatureDistances(qf, gf, metric)
    assert source.symmetric
    k_top = 21
    out_rows, out_sym = (np.empty((23, 81), np.float32) for _ in range(2))
    top_rows, max_rows = rerank._rows_one_by_one(source, k_top, 16, out_rows)
    top_sym, max_sym = rerank._symmetric_rows(source, k_top, block, out_sym)
    np.testing.assert_array_equal(top_sym, top_rows)
    np.testing.assert_array_equal(max_sym, max_rows)
    np.testing.assert_array_equal(out_sym, out_rows)
    full = np.concatenate([qf, gf])
    d = pairwise_distance(full, full, "sqeuclidean" if metric == "euclidean" else metric)
    d = (d if metric == "euclidean" else d * d).astype(np.float32)
    np.testing.assert_array_equal(top_sym, np.argsort(d / d.max(1, keepdims=True), 1, kind="stable")[:, :k_top])


def test_candidates_tied_by_the_normalisation_are_ordered_by_index():
    """Two raw distances v < v' that round to one float32 after the division by
    the row maximum tie: the smaller index goes first, as in a stable argsort of
    the normalised row; and a list whose last candidate ties with the k-th is
    reported as not exact (a non-candidate could tie too)."""
    v = np.float32(1.99)                       # top of its binade: neighbours 2^-24 apart, relative
    w = np.nextafter(v, np.float32(3))
    for mx in np.linspace(1.9, 1.98, 2000, dtype=np.float32):  # quotient just above 1: ulp 2^-23
        if np.float32(v / mx) == np.float32(w / mx):
            break
    assert np.float32(v / mx) == np.float32(w / mx) and w > v
    vals = np.array([[v, w, 30.0]], np.float32)
    idx = np.array([[5, 3, 0]], np.int64)
    top, exact = np.empty((1, 1), np.int64), np.empty(1, bool)
    rerank._finish_candidates(vals, idx, np.array([mx], np.float32), 1, 10, top, exact)
    assert top[0, 0] == 3 and exact[0]
    rerank._finish_candidates(vals[:, :2], idx[:, :2], np.array([mx], np.float32), 1, 10, top, exact)
    assert top[0, 0] == 3 and not exact[0]
    rerank._finish_candidates(vals[:, :2], idx[:, :2], np.array([mx], np.float32), 1, 2, top, exact)
    assert top[0, 0] == 3 and exact[0]                     # every item is a candidate


def test_rows_reported_inexact_are_redone_whole(monkeypatch):
    real = rerank._finish_candidates

    def spoil_every_third(cand_vals, cand_idx, row_max, k, num_items, top, exact):
        real(cand_vals, cand_idx, row_max, k, num_items, top, exact)
        top[::3], exact[::3] = 0, False

    qf, gf = clustered_features(20, 60, seed=2)
    source = rerank._FeatureDistances(qf, gf, "euclidean")
    want = rerank._rows_one_by_one(source, 21, 16, np.empty((20, 60), np.float32))[0]
    monkeypatch.setattr(rerank, "_finish_candidates", spoil_every_third)
    np.testing.assert_array_equal(rerank._symmetric_rows(source, 21, 32, np.empty((20, 60), np.float32))[0], want)

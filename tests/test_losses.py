"""Shared losses: hand-computed values and a naive reference for hard mining."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st

from reid_train.losses import (
    batch_hard_triplet,
    cross_entropy_label_smooth,
    hard_example_mining,
    pairwise_cosine_distance,
    pairwise_euclidean,
)


def test_ce_label_smooth_hand_computed():
    # logits (0, log 2, log 3) -> p = (1/6, 2/6, 3/6); label 2, eps 0.3, C = 3
    logits = torch.tensor([[0.0, math.log(2), math.log(3)]])
    q = [0.1, 0.1, 0.8]  # (1 - eps) * onehot + eps / C
    expected = -sum(qi * math.log(pi) for qi, pi in zip(q, (1 / 6, 2 / 6, 3 / 6)))
    got = cross_entropy_label_smooth(logits, torch.tensor([2]), epsilon=0.3)
    assert got.item() == pytest.approx(expected, rel=1e-6)


def test_ce_label_smooth_eps0_is_cross_entropy_and_batch_mean():
    g = torch.Generator().manual_seed(0)
    logits, labels = torch.randn(5, 7, generator=g), torch.tensor([0, 3, 6, 2, 2])
    assert cross_entropy_label_smooth(logits, labels, 0.0).item() == pytest.approx(
        torch.nn.functional.cross_entropy(logits, labels).item(), rel=1e-6)
    one = [cross_entropy_label_smooth(logits[i:i + 1], labels[i:i + 1], 0.1).item() for i in range(5)]
    assert cross_entropy_label_smooth(logits, labels, 0.1).item() == pytest.approx(np.mean(one), rel=1e-6)


def test_pairwise_distances_hand_computed():
    x = torch.tensor([[0.0, 0.0], [3.0, 4.0], [1.0, 0.0]])
    d = pairwise_euclidean(x)
    expected = torch.tensor([[0.0, 5.0, 1.0], [5.0, 0.0, math.sqrt(20)], [1.0, math.sqrt(20), 0.0]])
    assert torch.allclose(d, expected, atol=1e-6)
    assert torch.allclose(pairwise_euclidean(x, squared=True), expected ** 2, atol=1e-5)
    assert torch.allclose(pairwise_euclidean(x[:1], x[1:]), torch.tensor([[5.0, 1.0]]))
    c = pairwise_cosine_distance(torch.tensor([[1.0, 0.0], [0.0, 2.0], [-3.0, 0.0]]))
    assert torch.allclose(c, torch.tensor([[0.0, 1.0, 2.0], [1.0, 0.0, 1.0], [2.0, 1.0, 0.0]]), atol=1e-6)


def test_euclidean_gradient_finite_for_identical_points():
    x = torch.tensor([[1.0, 2.0], [1.0, 2.0], [0.0, 0.0]], requires_grad=True)
    pairwise_euclidean(x).sum().backward()
    assert torch.isfinite(x.grad).all()
    # only the two distances to the third point (norm sqrt 5) carry gradient
    d = torch.tensor([1.0, 2.0]) / math.sqrt(5)
    assert torch.allclose(x.grad, torch.stack([2 * d, 2 * d, -4 * d]), atol=1e-6)


def naive_mining(dist: np.ndarray, labels: np.ndarray):
    ap, an, ai, ni = [], [], [], []
    for a in range(len(labels)):
        best_p, best_n = (-np.inf, -1), (np.inf, -1)
        for j in range(len(labels)):
            if labels[j] == labels[a] and dist[a, j] > best_p[0]:
                best_p = (dist[a, j], j)
            if labels[j] != labels[a] and dist[a, j] < best_n[0]:
                best_n = (dist[a, j], j)
        ap.append(best_p[0]); ai.append(best_p[1]); an.append(best_n[0]); ni.append(best_n[1])
    return np.array(ap), np.array(an), np.array(ai), np.array(ni)


@settings(max_examples=40, deadline=None)
@given(st.integers(2, 5), st.integers(1, 4), st.integers(0, 10_000))
def test_hard_mining_matches_naive_loop(P, K, seed):
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.repeat(np.arange(P), K))
    x = torch.from_numpy(rng.normal(size=(P * K, 4)).astype(np.float32))
    dist = pairwise_euclidean(x)
    ap, an, ai, ni = hard_example_mining(dist, torch.from_numpy(labels))
    e_ap, e_an, e_ai, e_ni = naive_mining(dist.numpy(), labels)
    assert np.allclose(ap.numpy(), e_ap) and np.allclose(an.numpy(), e_an)
    assert (ai.numpy() == e_ai).all() and (ni.numpy() == e_ni).all()
    # the returned indices point at those distances
    assert np.allclose(dist.numpy()[np.arange(P * K), ai.numpy()], ap.numpy())


def test_triplet_hand_computed():
    # 1-D points: identity 0 at {0, 1}, identity 1 at {3, 5}
    x = torch.tensor([[0.0], [1.0], [3.0], [5.0]])
    labels = torch.tensor([0, 0, 1, 1])
    # per anchor: (d_ap, d_an) = (1, 3), (1, 2), (2, 2), (2, 4)
    terms = [max(0.0, ap - an + 0.5) for ap, an in [(1, 3), (1, 2), (2, 2), (2, 4)]]
    assert batch_hard_triplet(x, labels, margin=0.5).item() == pytest.approx(np.mean(terms))
    soft = np.mean([math.log1p(math.exp(ap - an)) for ap, an in [(1, 3), (1, 2), (2, 2), (2, 4)]])
    assert batch_hard_triplet(x, labels, soft_margin=True).item() == pytest.approx(soft, rel=1e-6)


def test_triplet_cosine_hand_computed():
    x = torch.tensor([[1.0, 0.0], [1.0, 1.0], [0.0, 1.0], [-1.0, 0.0]])
    labels = torch.tensor([0, 0, 1, 1])
    c = 1 - 1 / math.sqrt(2)  # cosine distance at 45 degrees
    d = pairwise_cosine_distance(x).numpy()
    assert d[0, 1] == pytest.approx(c, abs=1e-6) and d[2, 3] == pytest.approx(1.0, abs=1e-6)
    # per anchor (d_ap, d_an), by hand from the angles 0, 45, 90, 180 degrees
    pairs = [(c, 1.0), (c, c), (1.0, c), (1.0, 1 + 1 / math.sqrt(2))]
    expected = np.mean([max(0.0, ap - an + 0.3) for ap, an in pairs])
    assert batch_hard_triplet(x, labels, margin=0.3, metric="cosine").item() == pytest.approx(expected, abs=1e-6)


def test_triplet_gradient_pulls_positives_and_pushes_negatives():
    x = torch.tensor([[0.0], [1.0], [1.5], [5.0]], requires_grad=True)
    batch_hard_triplet(x, torch.tensor([0, 0, 1, 1]), margin=0.3).backward()
    # active terms: anchor 1 (p=0, n=1.5) and anchor 2 (p=5, n=1); a descent step
    # moves 1 down (to its positive, away from 1.5) and 1.5 up: dL/dx = (3/4, -3/4)
    assert x.grad[1, 0].item() == pytest.approx(0.75) and x.grad[2, 0].item() == pytest.approx(-0.75)
    assert x.grad[0, 0].item() == pytest.approx(-0.25) and x.grad[3, 0].item() == pytest.approx(0.25)

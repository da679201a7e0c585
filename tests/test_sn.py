"""Support Neighbor loss (Eq. 3-6) vs a per-anchor implementation; anchors without positives; gradients; smoke fit."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from reid_train.methods import get_method
from reid_train.methods.sn import support_neighbor_loss, support_neighbor_terms




def per_anchor_sn(emb: np.ndarray, labels, k, sigma, lam, squared=False, no_positive="nearest"):
    """Eq. 4 + lambda Eq. 5 written anchor by anchor (float64, python loops), mean over anchors."""
    n = len(labels)
    dist = [[float(np.sqrt(((emb[i] - emb[j]) ** 2).sum())) for j in range(n)] for i in range(n)]
    if squared:
        dist = [[d * d for d in row] for row in dist]
    spr, sqz, used = 0.0, 0.0, 0
    for i in range(n):
        others = sorted((j for j in range(n) if j != i), key=lambda j: dist[i][j])
        support = others[:k]
        pos = [j for j in support if labels[j] == labels[i]]
        same = [j for j in others if labels[j] == labels[i]]
        if not pos:
            if no_positive == "skip" or not same:
                continue
            pos = [same[0]]                      # nearest positive of the batch joins the support set
            support = support + pos
        used += 1
        num = sum(math.exp(-sigma * dist[i][p]) for p in pos)
        den = sum(math.exp(-sigma * dist[i][s]) for s in support)
        spr += -math.log(num / den)
        sqz += max(dist[i][p] for p in pos) - min(dist[i][p] for p in pos)
    return (spr / used + lam * sqz / used) if used else 0.0


@pytest.mark.parametrize("seed,k,sigma,squared", [(0, 5, 32.0, False), (1, 3, 40.0, False), (2, 8, 10.0, True),
                                                  (3, 1, 32.0, False), (4, 11, 5.0, False)])
@pytest.mark.parametrize("no_positive", ["nearest", "skip"])
def test_matches_per_anchor_implementation(seed, k, sigma, squared, no_positive):
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(4).repeat_interleave(3)            # P x Q = 4 x 3
    emb = F.normalize(torch.randn(12, 6, generator=g, dtype=torch.float64), dim=1)
    got = support_neighbor_loss(emb, labels, k=k, sigma=sigma, lam=0.1, squared=squared, no_positive=no_positive)
    want = per_anchor_sn(emb.numpy(), labels.tolist(), k, sigma, 0.1, squared, no_positive)
    assert got.item() == pytest.approx(want, rel=1e-4, abs=1e-5)


def line_batch():
    """1-D embeddings, no tied distances. Anchors 0 and 3 (label 0) each sit
    next to two negatives; the other anchors have a positive among k = 2."""
    emb = torch.tensor([[0.0], [0.1], [0.25], [5.0], [5.3], [5.45]], dtype=torch.float64)
    labels = torch.tensor([0, 1, 1, 0, 2, 2])
    return emb, labels


def test_anchor_without_positive_nearest_policy():
    emb, labels = line_batch()
    dist = torch.cdist(emb, emb)
    spr_near, sqz_near = support_neighbor_terms(dist, labels, k=2, sigma=1.0, no_positive="nearest", reduction="sum")
    spr_skip, sqz_skip = support_neighbor_terms(dist, labels, k=2, sigma=1.0, no_positive="skip", reduction="sum")
    # anchor 0: support {1 (0.1), 2 (0.25)}, no positive -> its nearest positive 3 (5.0) joins
    want0 = -math.log(math.exp(-5.0) / (math.exp(-0.1) + math.exp(-0.25) + math.exp(-5.0)))
    # anchor 3: support {4 (0.3), 5 (0.45)} -> anchor 0 (5.0) joins
    want3 = -math.log(math.exp(-5.0) / (math.exp(-0.3) + math.exp(-0.45) + math.exp(-5.0)))
    assert (spr_near - spr_skip).item() == pytest.approx(want0 + want3, rel=1e-9)
    # their squeeze terms are 0 (a single positive); the others: anchors 1, 2, 4, 5 have one positive too
    assert sqz_near.item() == sqz_skip.item() == 0.0
    # skip: the mean runs over the 4 anchors with a positive (1, 2, 4, 5)
    spr_mean, _ = support_neighbor_terms(dist, labels, k=2, sigma=1.0, no_positive="skip")
    assert spr_mean.item() == pytest.approx(spr_skip.item() / 4)
    spr_mean, _ = support_neighbor_terms(dist, labels, k=2, sigma=1.0, no_positive="nearest")
    assert spr_mean.item() == pytest.approx(spr_near.item() / 6)


def test_skip_policy_and_empty_loss():
    emb, labels = line_batch()
    dist = torch.cdist(emb, emb)
    spr, sqz = support_neighbor_terms(dist, labels, k=2, sigma=1.0, no_positive="skip")
    assert torch.isfinite(spr) and torch.isfinite(sqz)
    # every anchor's identity is alone in the batch: nothing to learn, 0 and still differentiable
    e = torch.randn(4, 3, requires_grad=True)
    loss = support_neighbor_loss(e, torch.arange(4), k=2, sigma=32.0, lam=0.1)
    assert loss.item() == 0.0
    loss.backward()
    assert torch.count_nonzero(e.grad) == 0


def test_all_neighbours_positive_gives_zero_separation():
    emb = torch.tensor([[0.0], [0.1], [0.2], [9.0], [9.1], [9.2]], dtype=torch.float64)
    labels = torch.tensor([0, 0, 0, 1, 1, 1])
    spr, sqz = support_neighbor_terms(torch.cdist(emb, emb), labels, k=2, sigma=32.0)
    assert spr.item() == pytest.approx(0.0, abs=1e-12)
    # squeeze: anchor 0: 0.2 - 0.1; anchor 1: 0.1 - 0.1; anchor 2: 0.2 - 0.1 (same for the other identity)
    assert sqz.item() == pytest.approx((0.1 + 0.0 + 0.1) * 2 / 6)


def test_gradcheck_double_precision():
    g = torch.Generator().manual_seed(7)
    labels = torch.arange(3).repeat_interleave(3)
    emb = torch.randn(9, 4, generator=g, dtype=torch.float64, requires_grad=True)

    def euclidean(e):  # float64 throughout; sqrt(x + 1) - 1 on the diagonal keeps it differentiable
        eye = torch.eye(len(e), dtype=e.dtype)
        return ((e[:, None] - e[None]).pow(2).sum(-1) + eye).sqrt() - eye

    for no_positive in ("nearest", "skip"):
        def f(e, no_positive=no_positive):
            spr, sqz = support_neighbor_terms(euclidean(e), labels, k=4, sigma=2.0, no_positive=no_positive)
            return spr + 0.1 * sqz
        assert torch.autograd.gradcheck(f, (emb,))
    dist = torch.rand(9, 9, generator=g, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda d: support_neighbor_terms(d, labels, 5, 3.0), (dist,))


def test_large_sigma_is_stable():
    g = torch.Generator().manual_seed(8)
    emb = torch.randn(16, 8, generator=g) * 30  # raw, un-normalised features: sigma * D ~ 1e4
    loss = support_neighbor_loss(emb, torch.arange(4).repeat_interleave(4), k=6, sigma=100.0, lam=0.1)
    assert torch.isfinite(loss)


def test_paper_config_and_schedule():
    cfg = get_method("sn").Config()
    assert (cfg.P, cfg.K, cfg.size, cfg.lr, cfg.optimizer) == (32, 4, (256, 128), 2e-4, "adam")
    assert (cfg.sn_lambda, cfg.schedule, cfg.exp_decay_start, cfg.epochs, cfg.gamma) == (0.1, "exp", 75, 800, 0.001)
    assert cfg.sn_sigma > 30 and cfg.metric == "euclidean"
    m = get_method("sn")(get_method("sn").Config(backbone="resnet18", epochs=4, exp_decay_start=2), 3)
    opt = m.build_optimizer(m.cfg)
    sched = m.build_scheduler(opt, m.cfg, steps_per_epoch=1)
    lrs = []
    for _ in range(5):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[:3] == pytest.approx([2e-4] * 3)               # constant until T_s
    assert lrs[3] == pytest.approx(2e-4 * 0.001 ** 0.5) and lrs[4] == pytest.approx(2e-7)


def test_extract_is_unit_norm():
    m = get_method("sn")(get_method("sn").Config(backbone="resnet18", sn_k=3, P=2, K=2), 3).eval()
    with torch.no_grad():
        f = m.extract({"images": torch.randn(4, 3, 32, 16)})
    assert f.shape == (4, 512)
    torch.testing.assert_close(f.norm(dim=1), torch.ones(4))


def test_smoke_fit(synthetic_store, tmp_path):
    from reid_train.fit import main

    out = tmp_path / "sn"
    rc = main(["--method", "sn", "--store", str(synthetic_store), "--out", str(out), "--backbone", "resnet18",
               "--size", "64x32", "--pk", "4", "2", "--max-steps", "2", "--device", "cpu", "--workers", "0",
               "--set", "sn_k=3", "--set", "threads=1", "--set", "log_every=1", "-q"])
    assert rc == 0
    summary = json.loads((out / "metrics.json").read_text())
    assert summary["step"] == 2 and math.isfinite(summary["final_eval"]["mAP"])
    assert "separation" in (out / "metrics.csv").read_text().splitlines()[0]

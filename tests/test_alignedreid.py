"""AlignedReID: model, TriHard on global + local distances, mutual losses, schedules, evaluation hook, smoke fits."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from reid_train.evaluation.metrics import evaluate_rank
from reid_train.evaluation.local_distance import paired_local_distance
from reid_train.losses import pairwise_distance
from reid_train.methods import get_method
from reid_train.methods.alignedreid import (AlignedNet, aligned_trihard, classification_mutual_loss,
                                            metric_mutual_loss)
from reid_train.evaluation.rerank import k_reciprocal_rerank




def small_cfg(name="alignedreid", **kw):
    base = dict(backbone="resnet18", size=(32, 16), last_stride=1, P=3, K=2, device="cpu", workers=0, threads=1)
    base.update(kw)
    return get_method(name).Config(**base).validate()


def batch(n_ids=3, k=2, size=(32, 16), seed=0):
    g = torch.Generator().manual_seed(seed)
    return {"images": torch.randn(n_ids * k, 3, *size, generator=g),
            "labels": torch.arange(n_ids).repeat_interleave(k)}


@pytest.fixture(scope="module")
def mutual():
    """One two-network model shared by the tests below (built once: two ResNet-18s)."""
    torch.manual_seed(0)
    return get_method("alignedreid_mutual")(small_cfg("alignedreid_mutual"), num_classes=3)


def test_paper_configs():
    arxiv, cvpr, mutual = (get_method(n).Config() for n in ("alignedreid", "alignedreid_cvpr", "alignedreid_mutual"))
    assert (arxiv.P, arxiv.K, arxiv.global_margin, arxiv.local_margin) == (40, 4, 0.5, 0.5)
    assert (cvpr.P, cvpr.K, cvpr.global_margin, cvpr.local_margin) == (32, 4, 0.3, 0.3)
    for c in (arxiv, cvpr, mutual):
        assert c.size == (224, 224) and c.backbone == "resnet50" and c.local_dim == 128 and c.metric == "euclidean"
        assert (c.rerank_k1, c.rerank_k2, c.rerank_lambda) == (20, 6, 0.3)
    assert (arxiv.lr, arxiv.milestones, arxiv.gamma, arxiv.mutual) == (1e-3, (80, 160), 0.1, False)
    assert mutual.mutual and mutual.lr == 3e-4 and mutual.milestones == (60, 120)
    assert (mutual.kl_weight, mutual.metric_mutual_weight) == (0.01, 0.001)


def test_global_and_local_features():
    """The paper's local branch: horizontal pooling then ONE 1x1 conv (Fig. 2 of 000), no BN/ReLU."""
    torch.manual_seed(0)
    net = AlignedNet(18, 1, "", local_dim=16, num_classes=5).eval()
    x = batch()["images"]
    assert len(net.local_reduce) == 1 and net.local_reduce[0].bias is not None
    with torch.no_grad():
        g, loc = net.features(x)
        fmap = net.backbone(x)                                  # (6, 512, 2, 1) at 32 x 16, last stride 1
        rows = fmap.mean(3)                                     # horizontal pooling: (6, 512, 2)
        conv = net.local_reduce[0]
        want = (torch.einsum("oc,bch->bho", conv.weight[:, :, 0, 0], rows) + conv.bias)
    assert g.shape == (6, 512) and loc.shape == (6, 2, 16) and fmap.shape[2] == 2
    torch.testing.assert_close(g, fmap.mean(dim=(2, 3)))
    torch.testing.assert_close(loc, want)
    assert (loc < 0).any()  # a linear map: no ReLU clips the local features


def test_local_bn_relu_option():
    net = AlignedNet(18, 1, "", local_dim=16, num_classes=5, local_bn_relu=True).eval()
    conv, bn, relu = net.local_reduce
    assert conv.bias is None and isinstance(bn, torch.nn.BatchNorm2d) and isinstance(relu, torch.nn.ReLU)
    x = batch()["images"]
    with torch.no_grad():
        _, loc = net.features(x)
        rows = net.backbone(x).mean(3)
        want = F.relu(bn(conv(rows[..., None]))[..., 0]).transpose(1, 2)
    torch.testing.assert_close(loc, want)
    assert get_method("alignedreid").Config().local_bn_relu is False
    m = get_method("alignedreid")(small_cfg(local_bn_relu=True), 3)
    assert len(m.nets[0].local_reduce) == 3


def naive_trihard(g, loc, labels, mg, ml, mining):
    """Per-anchor loops: mine by one distance, evaluate both on the same pairs."""
    n = len(labels)
    dg = [[float((g[i] - g[j]).norm()) for j in range(n)] for i in range(n)]
    dl = [[float(paired_local_distance(loc[i:i + 1], loc[j:j + 1])) for j in range(n)] for i in range(n)]
    mine = dg if mining == "global" else dl
    lg = ll = 0.0
    for a in range(n):
        pos = [j for j in range(n) if labels[j] == labels[a]]
        neg = [j for j in range(n) if labels[j] != labels[a]]
        p = max(pos, key=lambda j: mine[a][j])
        q = min(neg, key=lambda j: mine[a][j])
        lg += max(0.0, dg[a][p] - dg[a][q] + mg)
        ll += max(0.0, dl[a][p] - dl[a][q] + ml)
    return lg / n, ll / n


@pytest.mark.parametrize("mining", ["global", "local"])
def test_trihard_on_global_and_local_distances(mining):
    g = torch.Generator().manual_seed(1)
    feats = torch.randn(8, 6, generator=g)
    loc = torch.randn(8, 4, 3, generator=g)
    labels = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])
    lg, ll, dist = aligned_trihard(feats, loc, labels, 3.0, 0.7, mining)
    wg, wl = naive_trihard(feats, loc, labels.tolist(), 3.0, 0.7, mining)
    assert lg.item() == pytest.approx(wg, rel=1e-5) and ll.item() == pytest.approx(wl, rel=1e-5)
    assert lg.item() > 0 and ll.item() > 0
    torch.testing.assert_close(dist, torch.cdist(feats, feats), atol=1e-5, rtol=1e-5)


def test_metric_mutual_loss_zero_gradient():
    g = torch.Generator().manual_seed(2)
    m1 = torch.rand(5, 5, generator=g, dtype=torch.float64, requires_grad=True)
    m2 = torch.rand(5, 5, generator=g, dtype=torch.float64, requires_grad=True)
    loss = metric_mutual_loss(m1, m2)
    assert loss.item() == pytest.approx(2 * ((m1 - m2) ** 2).mean().item())
    g1, g2 = torch.autograd.grad(loss, (m1, m2), create_graph=True)
    torch.testing.assert_close(g1, 2 / 25 * (m1 - m2))           # Eq. 4
    torch.testing.assert_close(g2, 2 / 25 * (m2 - m1))
    # second order: d(dL/dM1)/dM2 = 0 (Eq. 4 of 001 / Eq. 5 of 000)
    cross = torch.autograd.grad(g1.sum(), m2, allow_unused=True)[0]
    assert cross is None or torch.count_nonzero(cross) == 0


def test_mutual_learning_each_net_learns_only_through_its_own_matrix(mutual):
    m = mutual.train()
    m.zero_grad()
    b = batch()
    out = m(b)
    m.losses(out, b)["mutual_metric"].backward(retain_graph=True)
    got = [[p.grad.clone() if p.grad is not None else torch.zeros_like(p) for p in net.parameters()] for net in m.nets]
    m.zero_grad()
    d1, d2 = pairwise_distance(out["global_1"]), pairwise_distance(out["global_2"])
    w = m.cfg.metric_mutual_weight
    own = [w * ((d1 - d2.detach()) ** 2).mean(), w * ((d2 - d1.detach()) ** 2).mean()]
    for net, loss, grads in zip(m.nets, own, got):
        want = torch.autograd.grad(loss, list(net.parameters()), retain_graph=True, allow_unused=True)
        assert any(torch.count_nonzero(gr) for gr in grads)
        for gr, wa in zip(grads, want):
            torch.testing.assert_close(gr, torch.zeros_like(gr) if wa is None else wa, atol=0, rtol=0)
    m.zero_grad()


def test_classification_mutual_loss_value_and_gradient():
    g = torch.Generator().manual_seed(3)
    l1 = torch.randn(4, 6, generator=g, dtype=torch.float64, requires_grad=True)
    l2 = torch.randn(4, 6, generator=g, dtype=torch.float64, requires_grad=True)
    p1, p2 = F.softmax(l1, 1).detach().numpy(), F.softmax(l2, 1).detach().numpy()
    kl = lambda p, q: float((p * np.log(p / q)).sum(1).mean())  # noqa: E731  KL(p || q)
    loss = classification_mutual_loss(l1, l2)
    assert loss.item() == pytest.approx(kl(p2, p1) + kl(p1, p2), rel=1e-5)
    loss.backward()  # d KL(ZG(p2) || p1) / d l1 = (p1 - p2) / B
    np.testing.assert_allclose(l1.grad.numpy(), (p1 - p2) / 4, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(l2.grad.numpy(), (p2 - p1) / 4, rtol=1e-4, atol=1e-6)


def test_losses_and_parameters_of_one_and_two_networks(mutual):
    single = get_method("alignedreid")(small_cfg(), 3)
    mutual.train()
    b = batch()
    assert set(single.losses(single(b), b)) == {"id", "tri_global", "tri_local"}
    assert set(mutual.losses(mutual(b), b)) == {"id_1", "tri_global_1", "tri_local_1", "id_2", "tri_global_2",
                                                "tri_local_2", "mutual_kl", "mutual_metric"}
    n_single = sum(p.numel() for p in single.parameters())
    assert sum(p.numel() for p in mutual.parameters()) == 2 * n_single
    # one optimiser holds both networks
    opt = mutual.build_optimizer(mutual.cfg)
    assert sum(p.numel() for g in opt.param_groups for p in g["params"]) == 2 * n_single


def test_mutual_schedule_3e4_1e4_1e5(mutual):
    m = mutual
    m.zero_grad()  # no gradients: the optimiser steps leave the weights alone
    opt = m.build_optimizer(m.cfg)
    sched = m.build_scheduler(opt, m.cfg, steps_per_epoch=10)
    lrs = {}
    for step in range(1300):
        lrs[step] = opt.param_groups[0]["lr"]
        opt.step()
        sched.step()
    assert lrs[0] == pytest.approx(3e-4) and lrs[599] == pytest.approx(3e-4)
    assert lrs[600] == pytest.approx(1e-4) and lrs[1199] == pytest.approx(1e-4)
    assert lrs[1200] == pytest.approx(1e-5)


def test_extract_is_net1_global_feature(mutual):
    m = mutual.eval()
    b = batch()
    with torch.no_grad():
        torch.testing.assert_close(m.extract(b), m.nets[0].features(b["images"])[0])
    assert m.eval_distance(torch.zeros(2, 512), torch.zeros(3, 512)) is None  # default: engine's L2


def test_eval_distance_global_plus_local_and_rerank():
    m = get_method("alignedreid")(small_cfg(eval_local=True, local_dim=4), 3).eval()
    g = torch.Generator().manual_seed(4)
    qg, gg = torch.randn(5, 512, generator=g), torch.randn(9, 512, generator=g)
    ql, gl = torch.randn(5, 2, 4, generator=g), torch.randn(9, 2, 4, generator=g)
    qf, gf = torch.cat([qg, ql.flatten(1)], 1), torch.cat([gg, gl.flatten(1)], 1)
    rows = m.eval_distance(qf, gf)
    want = torch.cdist(qg, gg) + torch.stack([torch.stack([paired_local_distance(ql[i:i + 1], gl[j:j + 1])[0]
                                                           for j in range(9)]) for i in range(5)])
    np.testing.assert_allclose(rows(0, 5), want.numpy(), rtol=1e-4, atol=1e-4)
    pids, cams = np.array([0, 1, 2, 3, 4]), np.zeros(5, int)
    gpids, gcams = np.array([0, 1, 2, 3, 4, 0, 1, 2, 3]), np.ones(9, int)
    res = evaluate_rank(rows, pids, gpids, cams, gcams, max_rank=5)
    ref = evaluate_rank(want.numpy(), pids, gpids, cams, gcams, max_rank=5)
    assert res["mAP"] == pytest.approx(ref["mAP"]) and res["rank1"] == ref["rank1"]
    # eval_rerank alone: the plain distance stays plain (None = the engine's L2); the engine re-ranks
    # the global L2 distance with the configured k1, k2, lambda
    m2 = get_method("alignedreid")(small_cfg(eval_rerank=True, rerank_k1=4, rerank_k2=2), 3)
    assert m2.eval_distance(qg, gg) is None
    assert m2.eval_rerank_settings() == {"k1": 4, "k2": 2, "lambda_value": 0.3}
    np.testing.assert_allclose(m2.rerank_distance(qg, gg, 4, 2, 0.3), k_reciprocal_rerank(qg, gg, 4, 2, 0.3))


def _global_plus_local(a_g, a_l, b_g, b_l):
    """Reference global L2 + local distance matrix by a double loop (Sec. 3.1 "their summation")."""
    return (torch.cdist(a_g, b_g) + torch.stack([torch.stack([paired_local_distance(a_l[i:i + 1], b_l[j:j + 1])[0]
                                                             for j in range(len(b_g))]) for i in range(len(a_g))])
            ).numpy()


def test_rerank_starts_from_the_plain_global_plus_local_distance():
    """Defect 1 of issue 14: re-ranking (evaluate --rerank, or eval_rerank) must start from the distance
    the plain evaluation uses, global + local, not from L2 on [global, flattened local]; the plain result
    of an eval_rerank run is not re-ranked."""
    from reid_train.engine import score_features
    from reid_train.evaluation.rerank import k_reciprocal_rerank_dist

    g = torch.Generator().manual_seed(5)
    qg, gg = torch.randn(6, 512, generator=g), torch.randn(10, 512, generator=g)
    ql, gl = 3 * torch.randn(6, 2, 4, generator=g), 3 * torch.randn(10, 2, 4, generator=g)
    qf, gf = torch.cat([qg, ql.flatten(1)], 1), torch.cat([gg, gl.flatten(1)], 1)
    want = k_reciprocal_rerank_dist(_global_plus_local(qg, ql, gg, gl), _global_plus_local(qg, ql, qg, ql),
                                    _global_plus_local(gg, gl, gg, gl), 4, 2, 0.3)
    m = get_method("alignedreid")(small_cfg(eval_local=True, eval_rerank=True, rerank_k1=4, rerank_k2=2,
                                            local_dim=4), 3)
    got = m.rerank_distance(qf, gf, 4, 2, 0.3)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    flattened = k_reciprocal_rerank(qf, gf, 4, 2, 0.3)   # what --rerank computed before the fix
    assert np.abs(flattened - want).max() > 1e-2
    q = {"features": qf, "pids": np.array([0, 1, 2, 3, 4, 5]), "camids": np.zeros(6, int)}
    gal = {"features": gf, "pids": np.array([0, 1, 2, 3, 4, 5, 0, 1, 2, 3]), "camids": np.ones(10, int)}
    plain_res = score_features(m, q, gal)
    ref_plain = evaluate_rank(_global_plus_local(qg, ql, gg, gl), q["pids"], gal["pids"], q["camids"],
                              gal["camids"], max_rank=10)
    assert plain_res["mAP"] == pytest.approx(ref_plain["mAP"])          # plain: not re-ranked
    rr = score_features(m, q, gal, rerank=m.eval_rerank_settings())
    ref_rr = evaluate_rank(want, q["pids"], gal["pids"], q["camids"], gal["camids"], max_rank=10)
    assert rr["mAP"] == pytest.approx(ref_rr["mAP"]) and rr["rank1"] == ref_rr["rank1"]
    # a metric override re-ranks that metric on the features, as the plain evaluation uses it
    np.testing.assert_allclose(m.rerank_distance(qf, gf, 4, 2, 0.3, metric="cosine"),
                               k_reciprocal_rerank(qf, gf, 4, 2, 0.3, metric="cosine"))


@pytest.mark.parametrize("name,extra", [("alignedreid", []), ("alignedreid_mutual", []),
                                        ("alignedreid", ["--set", "mining=local"])])
def test_smoke_fit(synthetic_store, tmp_path, name, extra):
    from reid_train.fit import main

    out = tmp_path / name
    rc = main(["--method", name, "--store", str(synthetic_store), "--out", str(out), "--backbone", "resnet18",
               "--size", "64x32", "--pk", "4", "2", "--max-steps", "2", "--device", "cpu", "--workers", "0",
               "--set", "threads=1", "--set", "log_every=1", "-q", *extra])
    assert rc == 0
    summary = json.loads((out / "metrics.json").read_text())
    assert summary["step"] == 2 and math.isfinite(summary["final_eval"]["mAP"])
    header = (out / "metrics.csv").read_text().splitlines()[0]
    assert "tri_local" in header and ("mutual_metric" in header) == (name == "alignedreid_mutual")

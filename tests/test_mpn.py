"""MPN (TPAMI 2020): the AT input of Fig. 5(b), the losses of Eq. 1-9, PSA wiring, parameter counts."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from priors.estimators import CoarseParsing
from priors.mpn_prior import coarse_strip_prior_batch, strip_boundaries
from reid_train.methods import get_method
from reid_train.methods.mpn import class_means, feature_alignment_loss, triplet_loss_mpn
from reid_train.methods.mpn_parts import part_features_from_prior, roi_resize_matrix, strip_slices

MPN = get_method("mpn")




# --- Fig. 5(b): the AT input ------------------------------------------------
def naive_parts(Fm, mask, roi, K, mode):
    """Per image: multiply, crop, F.interpolate (bilinear), split at strip_boundaries."""
    B, C, h, w = Fm.shape
    out = [[] for _ in range(K)]
    for b in range(B):
        x = Fm[b]
        if mode == "full":
            x = x * mask[b]
        if mode != "uniform":
            u, lo = int(roi[b, 0]), int(roi[b, 1])
            x = F.interpolate(x[None, :, u:lo + 1], size=(h, w), mode="bilinear", align_corners=False)[0]
        for k, (a, e) in enumerate(strip_boundaries(0, h - 1, K)):
            out[k].append(x[:, a:e])
    return [torch.stack(p) for p in out]


def test_resize_by_hand():
    # h = 4 rows, ROI rows [1, 2] (n = 2) stretched to 4: source y = max(0, (i + .5) / 2 - .5)
    # = 0, .25, .75, 1.25 -> clamped to the last row: rows 1, .75*1+.25*2, .25*1+.75*2, 2
    R = roi_resize_matrix(torch.tensor([[1, 2]]), 4)[0]
    expected = torch.tensor([[0, 1, 0, 0], [0, .75, .25, 0], [0, .25, .75, 0], [0, 0, 1, 0]], dtype=torch.float32)
    assert torch.allclose(R, expected)
    Fm = torch.tensor([10.0, 20.0, 30.0, 40.0]).view(1, 1, 4, 1).repeat(1, 1, 1, 2)
    mask = torch.tensor([[[1, 1], [1, 0], [1, 1], [1, 1]]], dtype=torch.float32)
    parts = part_features_from_prior(Fm, mask, torch.tensor([[1, 2]]), K=2, mode="full")
    # column 0: rows 20, 22.5, 27.5, 30; column 1 has row 1 masked out: 0, 7.5, 22.5, 30
    assert torch.allclose(parts[0][0, 0], torch.tensor([[20.0, 0.0], [22.5, 7.5]]))
    assert torch.allclose(parts[1][0, 0], torch.tensor([[27.5, 22.5], [30.0, 30.0]]))
    roi_only = part_features_from_prior(Fm, mask, torch.tensor([[1, 2]]), K=2, mode="roi_resize")
    assert torch.allclose(roi_only[0][0, 0, :, 1], torch.tensor([20.0, 22.5]))   # mask ignored
    uni = part_features_from_prior(Fm, None, None, K=2, mode="uniform")
    assert torch.equal(uni[0][0, 0, :, 0], torch.tensor([10.0, 20.0])) and torch.equal(uni[1], Fm[:, :, 2:])


def test_identity_roi_and_rows_sum_to_one():
    h = 24
    roi = torch.tensor([[0, 23], [3, 20], [5, 5], [0, 1], [22, 23]])
    R = roi_resize_matrix(roi, h)
    assert torch.equal(R[0], torch.eye(h))                      # fallback ROI: no resize
    assert torch.allclose(R.sum(-1), torch.ones(5, h))
    assert torch.all(R[2][:, 5] == 1)                           # one-row ROI: every output row copies it
    assert (R > 0).sum(-1).max() <= 2                           # bilinear: two taps at most


def synthetic_parsing(B: int, H: int, W: int, seed: int = 0):
    """People of random height/offset: head on top, legs at the bottom; some missing a head."""
    rng = np.random.default_rng(seed)
    parsing = np.zeros((B, H, W), np.uint8)
    seg = np.zeros((B, H, W), bool)
    for b in range(B):
        top = int(rng.integers(0, H // 3))
        bot = int(rng.integers(2 * H // 3, H))
        x0, x1 = int(rng.integers(0, W // 4)), int(rng.integers(3 * W // 4, W))
        seg[b, top:bot, x0:x1] = True
        parsing[b, top:bot, x0:x1] = CoarseParsing.OTHER
        if b % 4 != 3:  # every 4th image has no head: the prior falls back to the whole map
            parsing[b, top:top + (bot - top) // 6, x0:x1] = CoarseParsing.HEAD
        parsing[b, bot - (bot - top) // 3:bot, x0:(x0 + x1) // 2] = CoarseParsing.LEFT_LEG
        parsing[b, bot - (bot - top) // 3:bot, (x0 + x1) // 2:x1] = CoarseParsing.RIGHT_LEG
    return parsing, seg


@pytest.mark.parametrize("mode", ["full", "roi_resize", "uniform"])
@pytest.mark.parametrize("size,K", [((384, 128), 6), ((128, 64), 4), ((96, 32), 5)])
def test_parts_match_naive_on_real_priors(size, K, mode):
    H, W = size
    h, w = H // 16, W // 16
    parsing, seg = synthetic_parsing(8, H, W, seed=H + K)
    prior = coarse_strip_prior_batch(parsing, seg, (h, w), K=K)
    assert prior["fallback"].any() and not prior["fallback"].all()
    mask = torch.from_numpy(prior["mask"]).float()
    roi = torch.from_numpy(prior["roi"]).long()
    assert (roi[:, 0] > 0).any() or (roi[:, 1] < h - 1).any()   # some ROIs really crop
    Fm = torch.randn(8, 5, h, w, dtype=torch.float64)
    got = part_features_from_prior(Fm, mask.double(), roi, K, mode)
    want = naive_parts(Fm, mask.double(), roi, K, mode)
    assert len(got) == K
    for a, b in zip(got, want):
        assert a.shape == b.shape
        assert torch.allclose(a, b, atol=1e-12)
    # strips tile the rows as the prior's strips do on the full map
    assert [(s.start, s.stop) for s in strip_slices(h, K)] == [tuple(r) for r in strip_boundaries(0, h - 1, K)]


def test_parts_gradient_reaches_F_and_errors():
    Fm = torch.randn(2, 3, 8, 4, requires_grad=True)
    parts = part_features_from_prior(Fm, torch.ones(2, 8, 4), torch.tensor([[1, 6], [0, 7]]), 4)
    sum(p.sum() for p in parts).backward()
    assert Fm.grad is not None and Fm.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="mask"):
        part_features_from_prior(Fm, torch.ones(2, 6, 4), torch.tensor([[0, 7], [0, 7]]), 4)
    with pytest.raises(ValueError, match="roi"):
        roi_resize_matrix(torch.tensor([[3, 2]]), 8)
    with pytest.raises(ValueError, match="strips"):
        strip_slices(3, 4)


# --- losses -------------------------------------------------------------------
def test_feature_alignment_by_hand():
    labels = torch.tensor([0, 0, 1, 1])
    h = torch.tensor([[1.0, 0], [1, 0], [0, 1], [0, 1]])
    g = torch.tensor([[1.0, 0], [0, 1], [0, 1], [0, 1]])
    assert torch.allclose(class_means(g, labels), torch.tensor([[0.5, 0.5], [0, 1]]))
    # class 0: D((1,0), (.5,.5)) = 1 - 1/sqrt(2); class 1: 0  -> mean over the 2 identities (Eq. 8)
    assert feature_alignment_loss(h, g, labels, "class").item() == pytest.approx((1 - 1 / math.sqrt(2)) / 2)
    # Eq. 9: per sample D = 0, 1, 0, 0
    assert feature_alignment_loss(h, g, labels, "sample").item() == pytest.approx(0.25)
    # batch means (.5,.5) and (.25,.75): cos = .5 / (sqrt(.5) sqrt(.625))
    assert feature_alignment_loss(h, g, labels, "batch").item() == pytest.approx(1 - 0.5 / math.sqrt(0.5 * 0.625))
    # a label order that is not sorted or contiguous gives the same class-wise value
    perm = torch.tensor([2, 0, 3, 1])
    assert feature_alignment_loss(h[perm], g[perm], labels[perm] + 5).item() == pytest.approx(
        (1 - 1 / math.sqrt(2)) / 2)


def test_triplet_divides_by_violating_triplets():
    # 1-D cosine geometry in 2-D: angles 0, 10 (id 0), 90, 100 degrees (id 1)
    ang = torch.tensor([0.0, 10.0, 90.0, 100.0]) * math.pi / 180
    x = torch.stack([torch.cos(ang), torch.sin(ang)], dim=1)
    labels = torch.tensor([0, 0, 1, 1])
    d_ap = 1 - math.cos(math.radians(10))       # every anchor: hardest positive 10 degrees away
    d_an = 1 - math.cos(math.radians(80))       # anchors 1 and 2: nearest negative 80 degrees away
    hinge = [max(0.0, d_ap - (1 - math.cos(math.radians(a))) + 1.0) for a in (90, 80, 80, 90)]
    assert sum(h > 0 for h in hinge) == 4
    assert triplet_loss_mpn(x, labels, 1.0).item() == pytest.approx(sum(hinge) / 4, rel=1e-5)
    # margin 0.85: only the two anchors with the 80-degree negative violate -> N_T = 2
    hinge = [max(0.0, d_ap - (1 - math.cos(math.radians(a))) + 0.85) for a in (90, 80, 80, 90)]
    assert sum(h > 0 for h in hinge) == 2
    assert triplet_loss_mpn(x, labels, 0.85).item() == pytest.approx(sum(hinge) / 2, rel=1e-5)
    assert triplet_loss_mpn(x, labels, 0.85, normalise="all").item() == pytest.approx(sum(hinge) / 4, rel=1e-5)
    assert d_an < 1 - math.cos(math.radians(90))
    assert triplet_loss_mpn(x, labels, 0.0).item() == 0.0     # nothing violates: 0, not NaN


# --- the model ------------------------------------------------------------------
def small_cfg(**kw):
    """ResNet-18 at 128 x 64 (last stride 1: F is 8 x 4), 4 parts of 16 channels."""
    base = dict(backbone="resnet18", size=(128, 64), part_dim=16, ca_reduction=4, parts=4)
    base.update(kw)
    return MPN.Config(**base)


def make_batch(B=8, h=8, w=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    roi = torch.tensor([[1, 6], [0, 7]] * (B // 2))
    mask = (torch.rand(B, h, w, generator=g) > 0.3).float()
    return {"images": torch.randn(B, 3, 128, 64, generator=g), "labels": torch.arange(B // 2).repeat_interleave(2),
            "mpn_mask": mask, "mpn_roi": roi, "mpn_fallback": roi[:, 0] == 0}


def test_psa_sharing_switches_and_parameter_counts():
    torch.manual_seed(0)
    m = MPN(small_cfg(), 10)
    c, d, K = 512, 16, 4
    for k in range(K):
        assert m.mt[k].conv1 is m.at[k].conv1 and m.mt[k].conv2 is m.at[k].conv2 and m.mt[k].ca is m.at[k].ca
        assert m.mt[k].conv1 is not m.mt[(k + 1) % K].conv1
    backbone = sum(p.numel() for p in m.backbone.parameters())
    ca = d * (d // 4) + 2 * (d // 4) + (d // 4) * d + 2 * d
    per_part = c * d + 2 * d + ca + d * d + 2 * d              # conv1 + BN, CA, conv2 + BN
    assert m.inference_parameters() == backbone + K * per_part
    assert m.training_parameters() == m.inference_parameters()  # PSA: ATs add only classifiers
    assert m.training_parameters(classifiers=True) == backbone + K * per_part + 2 * K * (d * 10 + 10)
    naive = MPN(small_cfg(share_conv1=False, share_conv2=False, share_ca=False, channel_attention=False), 10)
    assert naive.mt[0].conv1 is not naive.at[0].conv1 and naive.mt[0].ca is None
    assert naive.training_parameters() == backbone + 2 * K * (c * d + 2 * d + d * d + 2 * d)
    c1 = MPN(small_cfg(share_conv2=False, channel_attention=False), 10)
    assert c1.mt[0].conv1 is c1.at[0].conv1 and c1.mt[0].conv2 is not c1.at[0].conv2
    mt_only = MPN(small_cfg(tasks="mt_only"), 10)
    assert mt_only.at is None and mt_only.at_classifiers is None
    with pytest.raises(ValueError, match="uniform"):
        small_cfg(tasks="at_only").validate()
    with pytest.raises(ValueError, match="prior"):
        small_cfg(prior="boxes").validate()


def test_at_input_is_the_prior_strip_and_losses():
    torch.manual_seed(0)
    m = MPN(small_cfg(share_conv1=False, share_conv2=False, share_ca=False), 10)
    batch = make_batch()
    seen = {}
    hooks = [m.at[k].conv1.register_forward_hook(lambda mod, inp, out, k=k: seen.__setitem__(k, inp[0].detach()))
             for k in range(4)]
    out = m(batch)
    for hk in hooks:
        hk.remove()
    F_map = m.backbone(batch["images"]).detach()
    expected = part_features_from_prior(F_map, batch["mpn_mask"], batch["mpn_roi"], 4, "full")
    for k in range(4):
        assert seen[k].shape == (8, 512, 2, 4)
        assert torch.allclose(seen[k], expected[k], atol=1e-5)
    assert out["h"].shape == (8, 64) and out["g"].shape == (8, 64)
    assert out["mt_logits"].shape == (4, 8, 10)
    losses = m.losses(out, batch)
    assert set(losses) == {"id_mt", "id_at", "triplet", "align"}
    # Eq. 1: sum over the K parts of the batch-mean CE
    ce = sum(F.cross_entropy(lg, batch["labels"]) for lg in out["at_logits"])
    assert losses["id_at"].item() == pytest.approx(ce.item(), rel=1e-5)
    assert losses["align"].item() == pytest.approx(
        feature_alignment_loss(out["h"], out["g"], batch["labels"]).item(), rel=1e-5)
    sum(losses.values()).backward()
    assert all(p.grad is not None for p in m.parameters() if p.requires_grad)


@pytest.mark.parametrize("kw,names", [
    ({"tasks": "mt_only"}, {"id_mt", "triplet"}),
    ({"tasks": "at_only", "prior": "uniform"}, {"id_at", "triplet"}),
    ({"feature_alignment": "sum_triplet"}, {"id_mt", "id_at", "triplet"}),
    ({"feature_alignment": "sample", "prior": "roi_resize"}, {"id_mt", "id_at", "triplet", "align"}),
])
def test_variants_run(kw, names):
    torch.manual_seed(0)
    m = MPN(small_cfg(**kw), 10)
    batch = make_batch()
    losses = m.losses(m(batch), batch)
    assert set(losses) == names and all(torch.isfinite(v) for v in losses.values())
    m.eval()
    plain = {k: batch[k] for k in ("images", "labels")}       # inference needs no prior
    with torch.no_grad():
        assert m.extract(plain).shape == (8, 64)


def test_extract_is_h_without_prior_and_flip():
    torch.manual_seed(0)
    m = MPN(small_cfg(), 10).eval()
    batch = make_batch()
    with torch.no_grad():
        h = m.extract({"images": batch["images"]})
        assert torch.allclose(h, m(batch)["h"], atol=1e-6)
    assert m.distance == "cosine"
    flipped = m.flip_batch(batch)
    assert torch.equal(flipped["mpn_mask"], batch["mpn_mask"].flip(-1))


def test_init_from_baseline_copies_the_backbone():
    torch.manual_seed(0)
    base = get_method("baseline")(get_method("baseline").Config(backbone="resnet18", last_stride=1), 10)
    m = MPN(small_cfg(), 10)
    missing, _ = m.load_init(base.state_dict())
    for k, v in base.backbone.state_dict().items():
        assert torch.equal(m.backbone.state_dict()[k], v), k
    assert any(k.startswith("mt.") for k in missing) and not any(k.startswith("backbone.") for k in missing)


def test_paper_defaults():
    cfg = MPN.Config()
    assert (cfg.size, cfg.P, cfg.K, cfg.parts) == ((384, 128), 6, 8, 6)
    assert (cfg.optimizer, cfg.lr, cfg.epochs) == ("sgd", 0.01, 70)
    assert (cfg.momentum, cfg.weight_decay, cfg.milestones, cfg.gamma) == (0.9, 5e-4, (20, 40, 60), 0.1)
    assert (cfg.triplet_margin, cfg.cf_weight, cfg.triplet_metric, cfg.metric) == (0.2, 1.0, "cosine", "cosine")
    assert (cfg.last_stride, cfg.part_dim, cfg.channel_attention, cfg.prior) == (1, 512, True, "full")
    # Sec. 5.1: "offline translation [53] is adopted to enlarge each training set by a factor of five"
    assert cfg.epoch_multiplier == 5 and get_method("baseline").Config().epoch_multiplier == 1


class _PassLoader:
    """A train loader of ``n`` batches per pass (MPN "MT only": no prior keys needed)."""

    def __init__(self, n, P, K):
        self.n, self.P, self.K, self.passes = n, P, K, 0

    def __len__(self):
        return self.n

    def __iter__(self):
        self.passes += 1
        g = torch.Generator().manual_seed(self.passes)
        for _ in range(self.n):
            labels = torch.arange(self.P).repeat_interleave(self.K)
            yield {"images": torch.randn(len(labels), 3, 32, 16, generator=g), "labels": labels,
                   "pids": labels, "camids": torch.zeros_like(labels), "image_ids": torch.arange(len(labels))}


def test_epoch_is_five_passes_so_the_schedule_counts_paper_iterations(tmp_path):
    """Defect 3 of issue 14: an MPN epoch is ``epoch_multiplier`` passes over the store's training split,
    so epochs, milestones and the run length are the paper's iterations over its 5x-enlarged set."""
    import csv
    import json

    from reid_train.engine import Data, train

    loader = _PassLoader(2, 2, 2)
    cfg = MPN.Config(method="mpn", backbone="resnet18", size=(32, 16), P=2, K=2, parts=2, part_dim=8, ca_reduction=2,
                     tasks="mt_only", epochs=2, milestones=(1,), gamma=0.1, lr=0.01, log_every=1, threads=1,
                     device="cpu", workers=0, epoch_multiplier=3)
    res = train(cfg, tmp_path, data_factory=lambda *a: Data(loader, 2, None))
    assert res.step == 2 * 3 * 2 and loader.passes == 6             # 2 epochs = 6 passes of 2 batches
    summary = json.loads((tmp_path / "metrics.json").read_text())
    assert summary["steps_per_epoch"] == 6
    lrs = [float(r["lr"]) for r in csv.DictReader((tmp_path / "metrics.csv").open())]
    assert lrs[:5] == pytest.approx([0.01] * 5) and lrs[5:] == pytest.approx([0.001] * 7)  # x0.1 at epoch 1


def test_smoke_fit_with_init_from_ide(synthetic_store, tmp_path):
    """An IDE run (the paper's initialisation, Sec. 5.1) initialises MPN (--init); two iterations
    through the real loader (MPN priors for 128x64, F of 8 x 4, K = 6 uneven strips). lr = 0 keeps
    the copied backbone weights, which proves the copy."""
    import json

    from reid_train import fit
    from reid_train.checkpoint import load_checkpoint

    common = ["--store", str(synthetic_store), "--backbone", "resnet18", "--size", "128x64", "--pk", "4", "2",
              "--workers", "1", "--device", "cpu", "-q", "--set", "last_stride=1", "--set", "threads=1"]
    base = tmp_path / "base"
    assert fit.main(["--method", "ide", "--out", str(base), "--max-steps", "1", *common]) == 0
    run = tmp_path / "mpn"
    assert fit.main(["--method", "mpn", "--out", str(run), "--max-steps", "2", "--init", str(base), "--lr", "0",
                     "--set", "part_dim=32", *common]) == 0
    summary = json.loads((run / "metrics.json").read_text())
    assert summary["step"] == 2 and summary["final_eval"]["num_valid_queries"] > 0
    a = load_checkpoint(base / "checkpoint.pt")["model"]
    b = load_checkpoint(run / "checkpoint.pt")["model"]
    assert torch.equal(a["backbone.layer3.0.conv1.weight"], b["backbone.layer3.0.conv1.weight"])
    assert b["mt.0.conv1.0.weight"].shape == (32, 512, 1, 1)

"""DSA-reID (CVPR 2019): DSAG-Stream merges (Table 1), fusion, losses, inference, flip, parameter counts."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from priors.dsap import MERGE_LEVEL1, MERGE_LEVEL1_NAMES, MERGE_LEVEL2, MERGE_LEVEL2_NAMES, flip_dsap
from reid_train.methods import get_method
from reid_train.methods.dsag_stream import DSAGStream, MergeBranches

DSA = get_method("dsa")


WIDTHS = (4, 8, 8, 16)   # shrunk Table 1 widths (paper: 32, 64, 64, 128)


def test_merge_order_by_hand():
    """Branch p (0-based DSAP part, label p + 1) holds the constant p + 1."""
    C = 2
    x = torch.arange(1, 25, dtype=torch.float32).repeat_interleave(C).view(1, 24 * C, 1, 1).expand(1, 24 * C, 3, 3)
    level1 = MergeBranches(MERGE_LEVEL1, 24)(x)
    # torso back 1, torso front 2, hands 3+4, feet 5+6, upper legs back 7+8, front 9+10, lower legs back 11+12,
    # front 13+14, upper arms inside 15+16, outside 17+18, lower arms inside 19+20, outside 21+22, head 23+24
    want1 = [1, 2, 7, 11, 15, 19, 23, 27, 31, 35, 39, 43, 47]
    assert level1.shape == (1, 13 * C, 3, 3)
    assert level1[0, ::C, 0, 0].tolist() == want1 and level1[0, 1::C, 1, 2].tolist() == want1
    level2 = MergeBranches(MERGE_LEVEL2, 13)(level1)
    # torso 1+2, hands, feet, upper legs 15+19, lower legs 23+27, upper arms 31+35, lower arms 39+43, head
    assert level2[0, ::C, 0, 0].tolist() == [3, 7, 11, 34, 50, 66, 82, 47]
    assert MERGE_LEVEL2_NAMES[3] == "upper_legs" and MERGE_LEVEL1_NAMES[2] == "hands"


def test_grouped_branches_are_separate_convs_and_independent():
    torch.manual_seed(0)
    s = DSAGStream(WIDTHS, global_dim=32, local_dim=8).eval()
    dsap = torch.randn(2, 24, 3, 16, 16)     # S = 16: 16 -> 8 (conv3.1) -> 4 (conv4.1)
    # conv1 of branch p = a 5x5 conv of DSAP-image p with its own slice of the weights
    conv = s.conv1[0]
    w1 = WIDTHS[0]
    for p in (0, 7, 23):
        ref = F.conv2d(dsap[:, p], conv.weight[p * w1:(p + 1) * w1], padding=2)
        assert torch.allclose(conv(dsap.flatten(1, 2))[:, p * w1:(p + 1) * w1], ref, atol=1e-5)
    with torch.no_grad():
        D = s.merged_maps(dsap)
        assert D.shape == (2, 8 * WIDTHS[3], 4, 4)
        # change only the left hand (label 4, index 3): only merged part "hands" (index 1) moves
        dsap2 = dsap.clone()
        dsap2[:, 3] += 1.0
        delta = (s.merged_maps(dsap2) - D).abs().view(2, 8, WIDTHS[3], 4, 4).sum(dim=(0, 2, 3, 4))
        assert delta[1] > 0 and torch.all(delta[[0, 2, 3, 4, 5, 6, 7]] == 0)
        # torso front (index 1) -> merged torso (0); right lower arm outside (21) -> lower arms (6)
        for part, group in ((1, 0), (21, 6)):
            dsap3 = dsap.clone()
            dsap3[:, part] -= 2.0
            delta = (s.merged_maps(dsap3) - D).abs().view(2, 8, WIDTHS[3], 4, 4).sum(dim=(0, 2, 3, 4))
            assert torch.nonzero(delta).flatten().tolist() == [group]
        d_G, d_L = s(dsap)
    assert d_G.shape == (2, 32) and d_L.shape == (2, 64)


def dsag_param_count(widths, gd, ld, blocks=2):
    """Table 1 by hand: convs without bias, BN = 2 parameters per channel, grouped convs
    hold 1/groups of the weights, a 1x1 projection shortcut where a stage strides or widens."""
    w1, w2, w3, w4 = widths

    def stage(ci, co, groups, strided):
        first = 9 * ci * co // groups + 9 * co * co // groups + 4 * co
        projection = ci * co // groups + 2 * co if strided or ci != co else 0
        return first + projection + (blocks - 1) * (2 * 9 * co * co // groups + 4 * co)

    mbn = 24 * (25 * 3 * w1 + 2 * w1 + 9 * w1 * w2 + 2 * w2)                  # conv1, conv2
    mbn += stage(24 * w2, 24 * w3, 24, True) + stage(13 * w3, 13 * w4, 13, True)  # conv3_x, conv4_x
    head = stage(8 * w4, gd, 1, False) + stage(8 * w4, 8 * ld, 8, False)          # conv5_g, conv5_l
    return mbn + head


def test_dsag_parameter_count_matches_table1_formula():
    for widths, gd, ld in ((WIDTHS, 32, 8), ((2, 4, 6, 8), 16, 4)):
        s = DSAGStream(widths, gd, ld)
        assert sum(p.numel() for p in s.parameters()) == dsag_param_count(widths, gd, ld)


def small_cfg(**kw):
    """ResNet-18 MF-Stream at 64 x 32, shrunk DSAG-Stream (heads 512 / 8 x 64 to match ResNet-18)."""
    base = dict(backbone="resnet18", size=(64, 32), dsag_widths=WIDTHS, classifier_hidden=32)
    base.update(kw)
    return DSA.Config(**base)


def make_batch(B=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {"images": torch.randn(B, 3, 64, 32, generator=g), "dsap": torch.randn(B, 24, 3, 16, 16, generator=g),
            "dsap_valid": torch.rand(B, 24, 16, 16, generator=g) > 0.5,
            "labels": torch.arange(B // 2).repeat_interleave(2)}


def test_fusion_losses_and_inference():
    torch.manual_seed(0)
    m = DSA(small_cfg(), 10)
    batch = make_batch()
    m.eval()   # BN in eval mode: the streams can be re-run separately for the comparison
    with torch.no_grad():
        out = m(batch)
        f_G, f_L = m.mf(batch["images"])
        d_G, d_L = m.guiding_features(batch["dsap"])
    assert out["f_G"].shape == (8, 512) and out["f_L"].shape == (8, 8 * 64) and out["f_L_parts"].shape == (8, 8, 64)
    assert torch.allclose(out["z_G"], f_G + d_G) and torch.allclose(out["z_L"], torch.cat(f_L, 1) + d_L)
    assert torch.allclose(out["f_L"][:, 64:128], f_L[1])       # part i sits at [256 i, 256 (i+1)) (here 64)
    # inference: the MF-Stream only, no DSAP needed; [f_G, f_L]
    with torch.no_grad():
        feats = m.extract({"images": batch["images"]})
    assert torch.allclose(feats, torch.cat([f_G] + f_L, 1))
    m.train()
    out = m(batch)
    losses = m.losses(out, batch)
    assert set(losses) == {"id_f_global", "id_f_local", "id_z_global", "id_z_local", "triplet_z_global",
                           "triplet_z_local"}
    y = batch["labels"]

    def ce(lg):
        return F.cross_entropy(lg, y, label_smoothing=0.1).item()

    assert losses["id_f_local"].item() == pytest.approx(
        0.5 * sum(ce(c(f)) for c, f in zip(m.cls_f_local, out["f_L_parts"])), rel=1e-5)
    assert losses["id_f_global"].item() == pytest.approx(0.5 * ce(m.cls_f_global(out["f_G"])), rel=1e-5)
    assert losses["id_z_local"].item() == pytest.approx(1.0 * ce(m.cls_z_local(out["z_L"])), rel=1e-5)
    d = torch.cdist(out["z_G"].double(), out["z_G"].double())
    same = y[:, None] == y[None]
    want = torch.relu(d.masked_fill(~same, -1).amax(1) - d.masked_fill(same, 1e9).amin(1) + 0.3).mean()
    assert losses["triplet_z_global"].item() == pytest.approx(1.5 * want.item(), rel=1e-4)
    sum(losses.values()).backward()
    assert m.dsag.conv1[0].weight.grad.abs().sum() > 0          # the DSAG-Stream learns through the fusion
    assert all(p.grad is not None for p in m.parameters())


def test_ablation_switches():
    torch.manual_seed(0)
    batch = make_batch()
    base = DSA(small_cfg(streams="mf_only"), 10)
    assert base.dsag is None
    out = base(batch)
    assert torch.equal(out["z_G"], out["f_G"]) and torch.equal(out["z_L"], out["f_L"])
    glob = DSA(small_cfg(branches="global"), 10)
    assert glob.mf.local_branches is None and glob.dsag.conv5_l is None
    losses = glob.losses(glob(batch), batch)
    assert set(losses) == {"id_f_global", "id_z_global", "triplet_z_global"}
    loc = DSA(small_cfg(branches="local"), 10).eval()
    assert loc.mf.backbone.layer4 is None
    with torch.no_grad():
        assert loc.extract(batch).shape == (8, 512)
    fused = DSA(small_cfg(eval_feature="fused", eval_branches="global"), 10).eval()
    with torch.no_grad():
        assert torch.allclose(fused.extract(batch), fused(batch)["z_G"])
    with pytest.raises(ValueError, match="eval_branches"):
        small_cfg(branches="global", eval_branches="local").validate()
    half = DSA(small_cfg(guide_weight=0.5), 10).eval()        # z = f + 0.5 d
    with torch.no_grad():
        out = half(batch)
        f_G, f_L = half.mf(batch["images"])
        d_G, d_L = half.guiding_features(batch["dsap"])
    assert torch.allclose(out["z_G"], f_G + 0.5 * d_G) and torch.allclose(out["z_L"], torch.cat(f_L, 1) + 0.5 * d_L)
    assert not torch.allclose(out["z_G"], f_G + d_G)


def test_drop_training_modules_and_parameter_counts():
    torch.manual_seed(0)
    m = DSA(small_cfg(), 10).eval()
    batch = make_batch()
    with torch.no_grad():
        before = m.extract(batch)
    dsag = sum(p.numel() for p in m.dsag.parameters())
    assert dsag == dsag_param_count(WIDTHS, 512, 64)
    assert m.training_parameters() == m.inference_parameters() + dsag
    full_state = m.state_dict()
    m.drop_training_modules()
    assert sum(p.numel() for p in m.parameters()) == m.inference_parameters()
    with torch.no_grad():
        assert torch.equal(m.extract(batch), before)
    # a fresh inference model loads the training checkpoint without the DSAG-Stream
    fresh = DSA(small_cfg(), 10).drop_training_modules().eval()
    fresh.load_state_dict(full_state)           # strict: every MF-Stream tensor present
    with torch.no_grad():
        assert torch.equal(fresh.extract(batch), before)
    with pytest.raises(ValueError, match="fused"):
        DSA(small_cfg(eval_feature="fused"), 10).drop_training_modules()


def test_flip_batch_moves_dsap_like_flip_dsap():
    m = DSA(small_cfg(), 10)
    batch = make_batch(B=2)
    flipped = m.flip_batch(batch)
    assert torch.equal(flipped["images"], batch["images"].flip(-1))
    want_d, want_v = flip_dsap(batch["dsap"].numpy(), batch["dsap_valid"].numpy())
    assert np.array_equal(flipped["dsap"].numpy(), want_d) and np.array_equal(flipped["dsap_valid"].numpy(), want_v)


def test_paper_defaults():
    cfg = DSA.Config()
    assert (cfg.P, cfg.K, cfg.optimizer, cfg.lr, cfg.weight_decay, cfg.epochs) == (16, 4, "adam", 8e-4, 5e-4, 320)
    assert cfg.lr * cfg.warmup_factor == pytest.approx(8e-6) and cfg.warmup_epochs == 20 and cfg.gamma == 0.5
    assert all(b - a == 40 for a, b in zip(cfg.milestones, cfg.milestones[1:]))
    assert (cfg.mf_id_weight, cfg.triplet_weight, cfg.fused_id_weight, cfg.triplet_margin) == (0.5, 1.5, 1.0, 0.3)
    assert (cfg.backbone, cfg.last_stride, cfg.dsag_widths, cfg.augment["erase_p"]) == ("resnet50", 1,
                                                                                        (32, 64, 64, 128), 0.5)


def test_smoke_fit_on_synthetic_store(synthetic_store, tmp_path):
    """Two iterations through the real loader (DSAP batches), fused + flipped evaluation."""
    import csv
    import json
    import math

    from reid_train import fit

    run = tmp_path / "dsa"
    assert fit.main(["--method", "dsa", "--store", str(synthetic_store), "--out", str(run), "--backbone", "resnet18",
                     "--size", "128x64", "--pk", "4", "2", "--max-steps", "2", "--workers", "1", "--device", "cpu",
                     "-q", "--set", "threads=1", "--set", "dsag_widths=[4,8,8,16]", "--set", "classifier_hidden=32",
                     "--set", "log_every=1", "--set", "eval_feature=fused", "--set", "flip_eval=true"]) == 0
    summary = json.loads((run / "metrics.json").read_text())
    assert summary["step"] == 2 and summary["final_eval"]["num_valid_queries"] > 0
    rows = list(csv.DictReader((run / "metrics.csv").open()))
    assert len(rows) == 2
    for name in ("id_f_global", "id_f_local", "id_z_global", "id_z_local", "triplet_z_global", "triplet_z_local"):
        assert math.isfinite(float(rows[0][name])), name


def test_channels_last_gives_the_same_losses():
    """The engine's ``channels_last`` option converts the model: the merges must accept NHWC maps."""
    batch = make_batch()
    torch.manual_seed(0)
    a = DSA(small_cfg(), 10)
    torch.manual_seed(0)
    b = DSA(small_cfg(), 10).to(memory_format=torch.channels_last)
    nhwc = {**batch, "images": batch["images"].contiguous(memory_format=torch.channels_last)}
    la, lb = a.losses(a(batch), batch), b.losses(b(nhwc), nhwc)
    for k in la:
        assert lb[k].item() == pytest.approx(la[k].item(), rel=1e-4, abs=1e-5), k

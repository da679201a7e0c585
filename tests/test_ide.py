"""IDE baseline (issue 14, defect 5): CE only, GAP feature, the model MPN initialises from."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from reid_train.methods import get_method

IDE = get_method("ide")


def test_defaults_follow_mpn_data_and_the_ide_recipe():
    cfg, mpn = IDE.Config(), get_method("mpn").Config()
    assert (cfg.size, cfg.P, cfg.K, cfg.last_stride, cfg.backbone) == (mpn.size, mpn.P, mpn.K, 1, "resnet50")
    assert (cfg.optimizer, cfg.lr, cfg.backbone_lr_mult, cfg.momentum, cfg.weight_decay) == ("sgd", 0.01, 0.1, 0.9, 5e-4)
    assert cfg.augment["erase_p"] == 0.0 and cfg.metric == "euclidean"


def test_loss_is_plain_cross_entropy_and_feature_is_gap():
    torch.manual_seed(0)
    m = IDE(IDE.Config(backbone="resnet18", size=(64, 32)), num_classes=5)
    g = torch.Generator().manual_seed(1)
    batch = {"images": torch.randn(6, 3, 64, 32, generator=g), "labels": torch.tensor([0, 0, 1, 1, 4, 4])}
    out = m(batch)
    losses = m.losses(out, batch)
    assert set(losses) == {"id"}                                 # no triplet, no label smoothing
    torch.testing.assert_close(losses["id"], F.cross_entropy(out["logits"], batch["labels"]))
    # classifier starts near zero: the loss starts at log(C)
    assert float(losses["id"].detach()) == pytest.approx(math.log(5), abs=0.05)
    m.eval()
    with torch.no_grad():
        torch.testing.assert_close(m.extract(batch), m.backbone(batch["images"]).mean(dim=(2, 3)))
    # the backbone trains at lr x 0.1, the classifier at lr
    groups = {g["name"]: g["lr"] for g in m.param_groups(m.cfg)}
    assert groups == {"backbone": pytest.approx(0.001), "head": pytest.approx(0.01)}


def test_mpn_init_copies_the_ide_backbone():
    torch.manual_seed(0)
    ide = IDE(IDE.Config(backbone="resnet18"), 10)
    mpn_cls = get_method("mpn")
    mpn = mpn_cls(mpn_cls.Config(backbone="resnet18", part_dim=16, parts=4), 10)
    missing, skipped = mpn.load_init(ide.state_dict())
    assert all(torch.equal(mpn.backbone.state_dict()[k], v) for k, v in ide.backbone.state_dict().items())
    assert skipped == ["classifier.bias", "classifier.weight"]
    assert not any(k.startswith("backbone.") for k in missing)

"""ResNet backbones: torchvision parameter counts and names, last stride, pretrained loading."""
from __future__ import annotations

import logging

import pytest
import torch

from reid_train.backbones import backbone_depth, load_pretrained, parse_backbone, resnet

# torchvision's published parameter counts (with the 1000-way ImageNet fc)
TORCHVISION_PARAMS = {18: 11_689_512, 34: 21_797_672, 50: 25_557_032}


@pytest.mark.parametrize("depth", sorted(TORCHVISION_PARAMS))
def test_parameter_count_matches_torchvision(depth):
    m = resnet(depth)
    fc = m.out_channels * 1000 + 1000
    assert sum(p.numel() for p in m.parameters()) + fc == TORCHVISION_PARAMS[depth]
    assert m.out_channels == (512 if depth < 50 else 2048)


def test_torchvision_names():
    keys = set(resnet(50).state_dict())
    for k in ("conv1.weight", "bn1.running_mean", "layer1.0.conv3.weight", "layer1.0.downsample.0.weight",
              "layer1.0.downsample.1.num_batches_tracked", "layer4.2.bn3.bias"):
        assert k in keys, k
    assert "layer1.0.downsample.0.weight" not in set(resnet(18).state_dict())  # 64 -> 64: identity shortcut
    assert "layer2.0.downsample.0.weight" in set(resnet(18).state_dict())


@pytest.mark.parametrize("depth,last_stride,size,expected", [
    (18, 1, (256, 128), (16, 8)), (18, 2, (256, 128), (8, 4)), (50, 1, (64, 32), (4, 2)), (50, 2, (64, 32), (2, 1)),
])
def test_feature_map_size(depth, last_stride, size, expected):
    m = resnet(depth, last_stride=last_stride).eval()
    with torch.no_grad():
        y = m(torch.randn(1, 3, *size))
    assert tuple(y.shape) == (1, m.out_channels, *expected)


def test_state_dict_round_trip_and_fc_ignored(tmp_path, caplog):
    src = resnet(18)
    state = dict(src.state_dict())
    state["fc.weight"] = torch.zeros(1000, 512)   # ImageNet classifier: dropped
    state["fc.bias"] = torch.zeros(1000)
    path = tmp_path / "resnet18.pth"
    torch.save(state, path)
    dst = resnet(18, pretrained=None)
    missing, unexpected = load_pretrained(dst, path)
    assert missing == [] and unexpected == []
    for k, v in src.state_dict().items():
        assert torch.equal(dst.state_dict()[k], v), k
    # resnet() with a path does the same
    assert torch.equal(resnet(18, pretrained=str(path)).conv1.weight, src.conv1.weight)


def test_missing_and_unexpected_keys_reported(tmp_path, caplog):
    state = dict(resnet(18).state_dict())
    del state["layer4.1.bn2.weight"]
    state["extra.weight"] = torch.zeros(3)
    torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}}, tmp_path / "w.pt")
    with caplog.at_level(logging.WARNING):
        missing, unexpected = load_pretrained(resnet(18), tmp_path / "w.pt")
    assert missing == ["layer4.1.bn2.weight"] and unexpected == ["extra.weight"]
    assert "layer4.1.bn2.weight" in caplog.text and "extra.weight" in caplog.text


def test_backbone_names():
    assert backbone_depth("resnet34") == 34
    assert parse_backbone("resnet50") == (50, 64) and parse_backbone("resnet18_w16") == (18, 16)
    for bad in ("resnet18_w", "resnet18_wide", "resnet18w16", "resnet_w16"):
        with pytest.raises(ValueError, match="unknown backbone"):
            parse_backbone(bad)
    with pytest.raises(ValueError):
        backbone_depth("vgg16")
    with pytest.raises(ValueError):
        resnet(20)


def test_narrow_resnet_scales_every_stage(tmp_path):
    """resnet18_w16: stages 16/32/64/128 channels, the same strides, 1/16 of the stage weights
    (width squared) and 1/4 of the stem's (3 input channels)."""
    narrow, full = resnet("resnet18_w16", last_stride=1), resnet(18, last_stride=1)
    assert [narrow.layer1[0].conv1.out_channels, narrow.layer2[0].conv1.out_channels,
            narrow.layer3[0].conv1.out_channels, narrow.layer4[0].conv1.out_channels] == [16, 32, 64, 128]
    assert narrow.out_channels == 128 and resnet("resnet50_w16").out_channels == 512
    x = torch.randn(2, 3, 96, 32)
    assert narrow(x).shape == (2, 128, 6, 2) and full(x).shape[2:] == (6, 2)
    def stage_weights(net):
        return sum(m.weight.numel() for n, m in net.named_modules() if isinstance(m, torch.nn.Conv2d) and n != "conv1")

    assert stage_weights(narrow) * 16 == stage_weights(full)
    assert narrow.conv1.weight.numel() * 4 == full.conv1.weight.numel()
    torch.save(resnet(18).state_dict(), tmp_path / "w.pt")
    with pytest.raises(ValueError, match="width 64 only"):
        resnet("resnet18_w16", pretrained=tmp_path / "w.pt")
    with pytest.raises(ValueError, match="multiple of 8"):
        resnet("resnet18_w12")

"""ResNet backbones (He et al., "Deep Residual Learning", CVPR 2016) without torchvision.

The module and parameter names follow torchvision exactly (``conv1``, ``bn1``,
``relu``, ``maxpool``, ``layer1`` .. ``layer4``; blocks with ``conv1/bn1/conv2/
bn2[/conv3/bn3]`` and ``downsample.0/.1``), so an ImageNet ``state_dict`` saved
by torchvision loads with :func:`load_pretrained`. Bottleneck blocks put the
stride on the 3x3 convolution ("ResNet v1.5"), as torchvision does.

``resnet18_w32`` (any depth, ``_wN`` suffix) is the same network with base width N instead of
64 (stages N, 2N, 4N, 8N channels): a narrower trunk for CPU protocols where every variant
shares it (``bench/bench_priors_value.py``); ImageNet weights exist for width 64 only.

``last_stride=1`` removes the down-sampling of ``layer4`` (Luo et al., "Bag of
Tricks and a Strong Baseline for Deep Person Re-identification", CVPRW 2019,
Sec. 3.5 "Last stride"): a 256x128 input then gives a 16x8 feature map
instead of 8x4, at no cost in parameters.

There is no ``fc`` layer: :meth:`ResNet.forward` returns the ``layer4`` feature
map (B, out_channels, H/16 or H/32, W/16 or W/32).
"""
from __future__ import annotations

import logging
from pathlib import Path

import torch
from torch import nn

log = logging.getLogger(__name__)

# depth -> (block kind, blocks per stage)
RESNET_SPECS = {
    18: ("basic", (2, 2, 2, 2)),
    34: ("basic", (3, 4, 6, 3)),
    50: ("bottleneck", (3, 4, 6, 3)),
    101: ("bottleneck", (3, 4, 23, 3)),
}


def conv3x3(c_in: int, c_out: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)


def conv1x1(c_in: int, c_out: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False)


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with an identity (or 1x1 projection) shortcut."""

    expansion = 1

    def __init__(self, c_in: int, width: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = conv3x3(c_in, width, stride)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = conv3x3(width, width)
        self.bn2 = nn.BatchNorm2d(width)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 (strided), 1x1 expand (x4) with a shortcut."""

    expansion = 4

    def __init__(self, c_in: int, width: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = conv1x1(c_in, width)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = conv3x3(width, width, stride)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = conv1x1(width, width * self.expansion)
        self.bn3 = nn.BatchNorm2d(width * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


class ResNet(nn.Module):
    """ResNet trunk: stem + four stages; ``forward`` returns the layer4 map."""

    def __init__(self, depth: int = 50, last_stride: int = 2, width: int = 64):
        super().__init__()
        if depth not in RESNET_SPECS:
            raise ValueError(f"unsupported ResNet depth {depth}; choose from {sorted(RESNET_SPECS)}")
        if last_stride not in (1, 2):
            raise ValueError(f"last_stride must be 1 or 2, got {last_stride}")
        kind, blocks = RESNET_SPECS[depth]
        block = BasicBlock if kind == "basic" else Bottleneck
        if width < 8 or width % 8:
            raise ValueError(f"ResNet base width must be a multiple of 8, got {width}")
        self.depth = depth
        self.last_stride = last_stride
        self.width = width
        self._c = width
        self.conv1 = nn.Conv2d(3, width, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        self.layer1 = self._stage(block, width, blocks[0], stride=1)
        self.layer2 = self._stage(block, 2 * width, blocks[1], stride=2)
        self.layer3 = self._stage(block, 4 * width, blocks[2], stride=2)
        self.layer4 = self._stage(block, 8 * width, blocks[3], stride=last_stride)
        self.out_channels = 8 * width * block.expansion
        del self._c
        self.reset_parameters()

    def _stage(self, block: type, width: int, n: int, stride: int) -> nn.Sequential:
        downsample = None
        if stride != 1 or self._c != width * block.expansion:
            downsample = nn.Sequential(
                conv1x1(self._c, width * block.expansion, stride),
                nn.BatchNorm2d(width * block.expansion),
            )
        layers = [block(self._c, width, stride, downsample)]
        self._c = width * block.expansion
        layers += [block(self._c, width) for _ in range(1, n)]
        return nn.Sequential(*layers)

    def reset_parameters(self) -> None:
        """He (fan-out) init for convolutions, BN to identity, as torchvision."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer1(x)
        x = self.layer2(x)
        x = self.layer3(x)
        return self.layer4(x)

    def extra_repr(self) -> str:
        return (f"depth={self.depth}, width={self.width}, last_stride={self.last_stride}, "
                f"out_channels={self.out_channels}")


def load_pretrained(model: nn.Module, path: str | Path) -> tuple[list[str], list[str]]:
    """Load a torchvision-format ImageNet ``state_dict`` from a local file.

    ``fc.*`` (the ImageNet classifier) is dropped; the remaining keys are loaded
    non-strictly and both lists are logged. A checkpoint that wraps the weights
    (``{"state_dict": ...}`` or ``{"model": ...}``) or prefixes them with
    ``module.`` (DataParallel) is unwrapped. Loading uses
    ``torch.load(weights_only=True)``: no code in the file is executed.

    Returns ``(missing, unexpected)`` key lists.
    """
    state = torch.load(Path(path), map_location="cpu", weights_only=True)
    for wrapper in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(wrapper), dict):
            state = state[wrapper]
    if not isinstance(state, dict):
        raise ValueError(f"{path}: expected a state_dict (dict of tensors), got {type(state).__name__}")
    state = {k.removeprefix("module."): v for k, v in state.items()}
    state = {k: v for k, v in state.items() if not k.startswith("fc.")}
    result = model.load_state_dict(state, strict=False)
    missing, unexpected = list(result.missing_keys), list(result.unexpected_keys)
    log.info("loaded pretrained weights from %s: %d tensors", path, len(state) - len(unexpected))
    if missing:
        log.warning("pretrained %s: %d missing keys: %s", path, len(missing), missing)
    if unexpected:
        log.warning("pretrained %s: %d unexpected keys: %s", path, len(unexpected), unexpected)
    return missing, unexpected


def resnet(depth: int | str = 50, last_stride: int = 2, pretrained: str | Path | None = None) -> ResNet:
    """Build ResNet-``depth`` (18, 34, 50 or 101, or a config name such as ``"resnet50"`` or
    ``"resnet18_w32"``); random init unless ``pretrained`` names a local torchvision ImageNet
    state_dict file."""
    depth, width = parse_backbone(depth) if isinstance(depth, str) else (depth, 64)
    if pretrained and width != 64:
        raise ValueError(f"ImageNet weights exist for base width 64 only, not {width} (drop pretrained or _w{width})")
    model = ResNet(depth, last_stride, width)
    if pretrained:
        load_pretrained(model, pretrained)
    return model


def parse_backbone(name: str) -> tuple[int, int]:
    """``"resnet50"`` -> (50, 64), ``"resnet18_w32"`` -> (18, 32): depth and base width of the
    config's ``backbone`` field."""
    body, _, w = name.partition("_w")
    if not body.startswith("resnet") or not body[6:].isdigit() or (w and not w.isdigit()) or name.endswith("_w"):
        raise ValueError(f"unknown backbone {name!r}; expected resnet18/34/50/101, optionally with _wN "
                         "(base width N, e.g. resnet18_w32)")
    return int(body[6:]), int(w) if w else 64


def backbone_depth(name: str) -> int:
    """``"resnet50"`` -> 50 (the config's ``backbone`` field; a ``_wN`` width suffix is allowed)."""
    return parse_backbone(name)[0]

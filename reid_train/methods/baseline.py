"""Strong baseline of Luo et al., "Bag of Tricks and a Strong Baseline for Deep
Person Re-identification" (CVPRW 2019): the reference every method is
compared with.

ResNet-50 with last stride 1 (Sec. 3.5), global average pooling to the
feature ``f_t``, then the BNNeck (Sec. 3.6, Fig. 5): a bias-free
BatchNorm1d gives ``f_i``; the classifier (no bias) sees ``f_i``, the
batch-hard triplet loss (margin 0.3) sees ``f_t``. ID loss: cross-entropy
with label smoothing eps = 0.1 (Sec. 3.4, Eq. 2-3). Total loss
``L = L_ID + L_Triplet`` (center loss, the sixth trick, is left out).
Optimiser (Sec. 3.1 / 4): Adam, lr 3.5e-4, weight decay 5e-4, linear warm-up
from 3.5e-5 over 10 epochs (Sec. 3.2), x0.1 at epochs 40 and 70, 120 epochs,
P = 16 identities x K = 4 images, 256x128 inputs, random erasing (Sec. 3.3).
Inference uses ``f_i`` with the cosine distance (Sec. 3.6).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from ..backbones import resnet
from ..config import TrainConfig
from ..losses import batch_hard_triplet, cross_entropy_label_smooth
from . import register
from .base import Method


def bot_augment() -> dict:
    """BoT augmentation: flip 0.5, pad 10 + random crop, random erasing 0.5."""
    return {"flip_p": 0.5, "pad": 10, "erase_p": 0.5}


class BNNeck(nn.Module):
    """GAP feature ``f_t`` -> BatchNorm1d (frozen zero bias) ``f_i`` -> linear
    classifier without bias (Bag of Tricks, Sec. 3.6).

    The BN bias is fixed at 0 so that ``f_i`` stays centred for the softmax's
    hyperplanes; the classifier starts from N(0, 0.001^2) as in the authors' code.
    """

    def __init__(self, in_dim: int, num_classes: int):
        super().__init__()
        self.bn = nn.BatchNorm1d(in_dim)
        self.bn.bias.requires_grad_(False)
        nn.init.ones_(self.bn.weight)
        nn.init.zeros_(self.bn.bias)
        self.classifier = nn.Linear(in_dim, num_classes, bias=False)
        nn.init.normal_(self.classifier.weight, std=0.001)

    def forward(self, f_t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        f_i = self.bn(f_t)
        return f_i, self.classifier(f_i)


@register("baseline")
class Baseline(Method):
    """BoT strong baseline: ResNet + GAP + BNNeck, CE-LS + batch-hard triplet."""

    @dataclass
    class Config(TrainConfig):
        backbone: str = "resnet50"
        last_stride: int = 1
        size: tuple[int, int] = (256, 128)
        P: int = 16
        K: int = 4
        augment: dict = field(default_factory=bot_augment)
        epochs: int = 120
        optimizer: str = "adam"
        lr: float = 3.5e-4
        weight_decay: float = 5e-4
        warmup_epochs: float = 10.0
        warmup_factor: float = 0.1
        schedule: str = "step"
        milestones: tuple[int, ...] = (40, 70)
        gamma: float = 0.1
        metric: str = "cosine"
        label_smoothing: float = 0.1     # epsilon of Eq. 2
        triplet_margin: float = 0.3
        triplet_metric: str = "euclidean"  # distance inside the triplet loss
        id_weight: float = 1.0
        triplet_weight: float = 1.0
        neck_feature: str = "after"      # evaluation feature: "after" (f_i) or "before" (f_t) the BN

    def __init__(self, cfg: "Baseline.Config", num_classes: int):
        super().__init__(cfg, num_classes)
        if cfg.neck_feature not in ("after", "before"):
            raise ValueError(f"neck_feature must be 'after' or 'before', got {cfg.neck_feature!r}")
        self.backbone = resnet(cfg.backbone, cfg.last_stride, cfg.pretrained or None)
        self.neck = BNNeck(self.backbone.out_channels, num_classes)

    def global_feature(self, images: torch.Tensor) -> torch.Tensor:
        """``f_t``: global average pooling of the layer4 map, (B, C)."""
        return self.backbone(images).mean(dim=(2, 3))

    def forward(self, batch: dict) -> dict[str, torch.Tensor]:
        f_t = self.global_feature(batch["images"])
        f_i, logits = self.neck(f_t)
        return {"f_t": f_t, "f_i": f_i, "logits": logits}

    def losses(self, out: dict[str, torch.Tensor], batch: dict) -> dict[str, torch.Tensor]:
        cfg = self.cfg
        labels = batch["labels"]
        return {
            "id": cfg.id_weight * cross_entropy_label_smooth(out["logits"], labels, cfg.label_smoothing),
            "triplet": cfg.triplet_weight
            * batch_hard_triplet(out["f_t"].float(), labels, cfg.triplet_margin, cfg.triplet_metric),
        }

    def extract(self, batch: dict) -> torch.Tensor:
        f_t = self.global_feature(batch["images"])
        return f_t if self.cfg.neck_feature == "before" else self.neck.bn(f_t)


def ide_augment() -> dict:
    """IDE: horizontal flip and pad + random crop (no random erasing)."""
    return {"flip_p": 0.5, "pad": 10, "erase_p": 0.0}


@register("ide")
class IDE(Method):
    """IDE (ID-discriminative embedding; Zheng, Yang, Hauptmann, "Person
    Re-identification: Past, Present and Future", 2016, Sec. 5.1): an
    ImageNet ResNet fine-tuned as an identity classifier, cross-entropy only
    (no label smoothing, no triplet, no BNNeck); the test feature is the GAP
    ("pool5") vector with the euclidean distance.

    This is the model MPN initialises from (MPN Sec. 5.1: "The parameters of
    MPN are initialized from those of the IDE model [56] trained on each
    respective database"), so its defaults follow MPN's data settings: 384 x
    128, last stride 1 (MPN's backbone; the conv weights do not depend on the
    stride), batches of 6 identities x 8 images. The optimiser is the usual IDE
    recipe (our choice where [56] gives Caffe settings): SGD momentum 0.9,
    weight decay 5e-4, lr 0.01 on the new classifier and 0.001 on the backbone
    (``backbone_lr_mult = 0.1``), x0.1 after epoch 40 of 60.
    ``python -m reid_train.fit --method ide --out runs/ide`` then
    ``--method mpn --init runs/ide``.
    """

    @dataclass
    class Config(TrainConfig):
        backbone: str = "resnet50"
        last_stride: int = 1
        size: tuple[int, int] = (384, 128)
        P: int = 6
        K: int = 8
        augment: dict = field(default_factory=ide_augment)
        epochs: int = 60
        optimizer: str = "sgd"
        lr: float = 0.01
        backbone_lr_mult: float = 0.1
        momentum: float = 0.9
        weight_decay: float = 5e-4
        schedule: str = "step"
        milestones: tuple[int, ...] = (40,)
        gamma: float = 0.1
        metric: str = "euclidean"

    def __init__(self, cfg: "IDE.Config", num_classes: int):
        super().__init__(cfg, num_classes)
        self.backbone = resnet(cfg.backbone, cfg.last_stride, cfg.pretrained or None)
        self.classifier = nn.Linear(self.backbone.out_channels, num_classes)
        nn.init.normal_(self.classifier.weight, std=0.001)
        nn.init.zeros_(self.classifier.bias)

    def extract(self, batch: dict) -> torch.Tensor:
        """The GAP ("pool5") feature (B, C)."""
        return self.backbone(batch["images"]).mean(dim=(2, 3))

    def forward(self, batch: dict) -> dict[str, torch.Tensor]:
        f = self.extract(batch)
        return {"feature": f, "logits": self.classifier(f)}

    def losses(self, out: dict[str, torch.Tensor], batch: dict) -> dict[str, torch.Tensor]:
        return {"id": nn.functional.cross_entropy(out["logits"].float(), batch["labels"])}

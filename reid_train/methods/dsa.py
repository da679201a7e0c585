"""DSA-reID: Zhang, Lan, Zeng, Chen, "Densely Semantically Aligned Person
Re-Identification", CVPR 2019.

Two streams trained jointly (Sec. 3.2, Fig. 3):

* **MF-Stream** (Sec. 3.2.2, 4.2) on the image: ResNet conv1-conv4_x give ``F``;
  a head with a global branch (ResNet conv5_x with the last down-sampling
  removed, GAP -> ``f_G`` in R^2048) and a part-aware branch of 8
  sub-branches with the same structure at 1/8 of the channels on every layer
  (GAP -> ``f_L,i`` in R^256, ``f_L = [f_L,1 .. f_L,8]`` in R^2048).
* **DSAG-Stream** (Sec. 3.2.1, Table 1) on the 24 DSAP-images, from scratch:
  :class:`reid_train.methods.dsag_stream.DSAGStream` -> ``d_G``, ``d_L``.
* **Fusion** (Sec. 3.2.3): ``z_G = f_G + d_G``, ``z_L = f_L + d_L``.
* **Losses** (Sec. 3.2.4, 4.2): ID loss on ``f_G`` and on each ``f_L,i``
  (weight 0.5 each); batch-hard triplet loss (margin 0.3, weight 1.5) and ID
  loss (weight 1.0) on ``z_G`` and on ``z_L``. Each classifier is two FC
  layers; label smoothing (Table 3 "RE+LS", eps = 0.1).
* **Training** (Sec. 4.2): P = 16 x K = 4, Adam (weight decay 5e-4), lr
  linear warm-up 8e-6 -> 8e-4 over 20 epochs, then x0.5 every 40 epochs, 320
  epochs; flip, random crop, random erasing 0.5.
* **Inference**: ``[f_G, f_L]`` of the MF-Stream only (Table 3 "DSA-reID (Only
  MF-Stream)"); the DSAG-Stream is never run by :meth:`DSA.extract` and
  :meth:`DSA.drop_training_modules` removes it.

Ablation switches (Table 3): ``eval_feature="fused"`` ("DSA (Two streams
fused)", ``[z_G, z_L]``; with ``eval_branches="global"``/``"local"``:
"DSA-Global/Local (Joint)"); ``branches="global"``/``"local"`` (the
"Single" designs: one branch in both streams, for training and inference);
``streams="mf_only"`` ("Baseline (Two branches)": the MF-Stream alone with the
same losses, i.e. ``d_G = d_L = 0`` so ``z = f``).

Diagnostic knob, not in the paper: ``guide_weight`` scales the guidance in the
fusion, ``z = f + guide_weight * d`` (the paper's Sec. 3.2.3 sum is 1.0, the
default); ``bench/bench_priors_value.py`` uses 0.5 to test whether the fused
losses starve the MF-Stream of metric gradient.

Choices where the paper is silent (and where the issue is followed):

* the loss weights are per term: the issue says "ID loss on f_G and on each
  f_L,i (weight 0.5)", so the 8 part losses are summed, each at 0.5;
* the two-FC classifier is ``Linear(d, 512) -> BN -> ReLU -> Linear(512, C)``
  (``classifier_hidden``);
* the input size is not given; 256 x 128 (the baseline's) is the default;
* "warm up for 20 epochs ..., then decayed by 0.5 every 40 epochs" is read as
  milestones 60, 100, ..., 300 (every 40 epochs after the warm-up);
* the MF head is "randomly initialized" (Sec. 4.2) although the global branch
  has ResNet conv5_x's architecture: with ``pretrained`` ImageNet weights the
  global branch is re-initialised unless ``pretrained_head`` is set;
* the part-aware sub-branches use the backbone's block type (bottlenecks for
  ResNet-50: width 64, output 256; basic blocks for ResNet-18/34: width and
  output 64), the same number of blocks as conv5_x and the same last stride;
* evaluation uses the euclidean distance (the paper does not say; its triplet
  loss [Hermans et al.] is euclidean);
* ``dsap_valid`` is not used: the paper feeds the DSAP-images as they are,
  empty cells holding the image mean (Sec. 3.1).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from ..data.augment import flip_dsap_torch
from ..backbones import conv1x1, resnet
from ..config import TrainConfig
from ..losses import batch_hard_triplet, cross_entropy_label_smooth
from . import register
from .base import Method
from .dsag_stream import TABLE1_WIDTHS, DSAGStream

N_MERGED_PARTS = 8
BRANCHES = ("both", "global", "local")


def dsa_augment() -> dict:
    """Sec. 4.2: random crop, horizontal flip, random erasing (p = 0.5)."""
    return {"flip_p": 0.5, "pad": 10, "erase_p": 0.5}


class TwoFCClassifier(nn.Module):
    """ID classifier "constructed by two fully connected (FC) layers" (Sec. 3.2.4):
    FC -> BN -> ReLU -> FC (the hidden width and the BN + ReLU are our choice)."""

    def __init__(self, in_dim: int, hidden: int, num_classes: int):
        super().__init__()
        self.fc1 = nn.Linear(in_dim, hidden)
        self.bn = nn.BatchNorm1d(hidden)
        self.relu = nn.ReLU(inplace=True)
        self.fc2 = nn.Linear(hidden, num_classes)
        nn.init.kaiming_normal_(self.fc1.weight, mode="fan_out")
        nn.init.zeros_(self.fc1.bias)
        nn.init.normal_(self.fc2.weight, std=0.001)
        nn.init.zeros_(self.fc2.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.relu(self.bn(self.fc1(x))))


def part_branch(block: type, c_in: int, width: int, blocks: int, stride: int) -> nn.Sequential:
    """One part-aware sub-branch: conv5_x's structure at ``width`` (1/8 of conv5_x's)."""
    c_out = width * block.expansion
    down = None
    if stride != 1 or c_in != c_out:
        down = nn.Sequential(conv1x1(c_in, c_out, stride), nn.BatchNorm2d(c_out))
    layers = [block(c_in, width, stride, down)] + [block(c_out, width) for _ in range(1, blocks)]
    return nn.Sequential(*layers)


def he_init(module: nn.Module) -> None:
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


class MFStream(nn.Module):
    """Image -> ``F`` (conv1-conv4_x) -> ``f_G`` (conv5_x, GAP) and ``f_L,1..8``.

    ``backbone`` keeps torchvision's names so ImageNet weights load; its
    ``layer4`` *is* the global branch (None when the global branch is off)."""

    def __init__(self, depth: int | str, last_stride: int, pretrained: str = "", use_global: bool = True,
                 use_local: bool = True, pretrained_head: bool = False, n_parts: int = N_MERGED_PARTS):
        super().__init__()
        self.backbone = resnet(depth, last_stride, pretrained or None)
        conv5 = self.backbone.layer4
        block = type(conv5[0])
        c_in = conv5[0].conv1.in_channels
        width = conv5[0].bn1.num_features
        if width % n_parts:
            raise ValueError(f"conv5_x width {width} not divisible by {n_parts} parts")
        self.global_dim = self.backbone.out_channels if use_global else 0
        self.local_dim = (width // n_parts) * block.expansion if use_local else 0
        self.local_branches = nn.ModuleList(
            part_branch(block, c_in, width // n_parts, len(conv5), last_stride) for _ in range(n_parts)
        ) if use_local else None
        if use_local:
            he_init(self.local_branches)
        if not use_global:
            self.backbone.layer4 = None
        elif pretrained and not pretrained_head:
            he_init(conv5)

    def feature_map(self, images: torch.Tensor) -> torch.Tensor:
        """``F``: the conv4_x output (stride 16)."""
        b = self.backbone
        x = b.maxpool(b.relu(b.bn1(b.conv1(images))))
        return b.layer3(b.layer2(b.layer1(x)))

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor | None, list[torch.Tensor] | None]:
        """``(f_G (B, 2048) or None, [f_L,i (B, 256)] * 8 or None)``."""
        F_map = self.feature_map(images)
        f_G = self.backbone.layer4(F_map).mean(dim=(2, 3)) if self.backbone.layer4 is not None else None
        f_L = [br(F_map).mean(dim=(2, 3)) for br in self.local_branches] if self.local_branches is not None else None
        return f_G, f_L


@register("dsa")
class DSA(Method):
    """DSA-reID and its Table 3 ablations (see the module docstring)."""

    requires = ("priors/dsap",)

    @dataclass
    class Config(TrainConfig):
        backbone: str = "resnet50"
        last_stride: int = 1
        size: tuple[int, int] = (256, 128)
        P: int = 16
        K: int = 4
        augment: dict = field(default_factory=dsa_augment)
        epochs: int = 320
        optimizer: str = "adam"
        lr: float = 8e-4
        weight_decay: float = 5e-4
        warmup_epochs: float = 20.0
        warmup_factor: float = 0.01      # 8e-6 / 8e-4
        schedule: str = "step"
        milestones: tuple[int, ...] = (60, 100, 140, 180, 220, 260, 300)
        gamma: float = 0.5
        metric: str = "euclidean"
        dsag_widths: tuple[int, ...] = TABLE1_WIDTHS  # conv1, conv2, conv3_x, conv4_x (Table 1)
        dsag_blocks: int = 2
        classifier_hidden: int = 512
        label_smoothing: float = 0.1
        triplet_margin: float = 0.3
        triplet_metric: str = "euclidean"
        mf_id_weight: float = 0.5        # ID loss on f_G and on each f_L,i
        triplet_weight: float = 1.5      # on z_G and z_L
        fused_id_weight: float = 1.0     # on z_G and z_L
        guide_weight: float = 1.0        # z = f + guide_weight * d (Sec. 3.2.3: 1); a diagnostic knob
        streams: str = "two"             # two | mf_only ("Baseline (Two branches)")
        branches: str = "both"           # both | global | local ("Single")
        eval_feature: str = "mf"         # mf ([f_G, f_L]) | fused ([z_G, z_L])
        eval_branches: str = ""          # "" = the trained branches | global | local ("Joint")
        pretrained_head: bool = False    # keep ImageNet conv5_x weights in the global branch

        def validate(self) -> "DSA.Config":
            super().validate()
            for name, allowed in (("streams", ("two", "mf_only")), ("branches", BRANCHES),
                                  ("eval_feature", ("mf", "fused")), ("eval_branches", ("",) + BRANCHES),
                                  ("triplet_metric", ("euclidean", "cosine"))):
                if getattr(self, name) not in allowed:
                    raise ValueError(f"{name}={getattr(self, name)!r}; expected one of {allowed}")
            if self.eval_branches not in ("", "both", self.branches) and self.branches != "both":
                raise ValueError(f"eval_branches={self.eval_branches!r} needs that branch trained "
                                 f"(branches={self.branches!r})")
            if len(self.dsag_widths) != 4:
                raise ValueError(f"dsag_widths needs 4 entries, got {self.dsag_widths}")
            return self

    def __init__(self, cfg: "DSA.Config", num_classes: int):
        super().__init__(cfg, num_classes)
        use_g, use_l = cfg.branches in ("both", "global"), cfg.branches in ("both", "local")
        self.mf = MFStream(cfg.backbone, cfg.last_stride, cfg.pretrained, use_g, use_l,
                           cfg.pretrained_head)
        gd, ld = self.mf.global_dim, self.mf.local_dim
        self.dsag = None
        if cfg.streams == "two":
            self.dsag = DSAGStream(cfg.dsag_widths, global_dim=gd or 8, local_dim=ld or 8, blocks=cfg.dsag_blocks)
            if not use_g:
                self.dsag.conv5_g = None
            if not use_l:
                self.dsag.conv5_l = None
        hid, C = cfg.classifier_hidden, num_classes
        self.cls_f_global = TwoFCClassifier(gd, hid, C) if use_g else None
        self.cls_f_local = nn.ModuleList(TwoFCClassifier(ld, hid, C) for _ in range(N_MERGED_PARTS)) if use_l else None
        self.cls_z_global = TwoFCClassifier(gd, hid, C) if use_g else None
        self.cls_z_local = TwoFCClassifier(ld * N_MERGED_PARTS, hid, C) if use_l else None

    @property
    def backbone(self) -> nn.Module:
        """The ResNet trunk (+ conv5_x global branch), for ``backbone_lr_mult``."""
        return self.mf.backbone

    # --- streams -------------------------------------------------------------
    def guiding_features(self, dsap: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """``(d_G, d_L)`` of the DSAG-Stream (None for a branch that is off)."""
        D = self.dsag.merged_maps(dsap)
        d_G = self.dsag.conv5_g(D).mean(dim=(2, 3)) if self.dsag.conv5_g is not None else None
        d_L = self.dsag.conv5_l(D).mean(dim=(2, 3)) if self.dsag.conv5_l is not None else None
        return d_G, d_L

    def forward(self, batch: dict) -> dict[str, torch.Tensor]:
        f_G, f_L_parts = self.mf(batch["images"])
        out: dict[str, torch.Tensor] = {}
        d_G = d_L = None
        if self.dsag is not None:
            if "dsap" not in batch:
                raise KeyError("DSA-reID needs the batch key 'dsap' (store group priors/dsap)")
            d_G, d_L = self.guiding_features(batch["dsap"].to(batch["images"].dtype))
        if f_G is not None:
            out["f_G"] = f_G
            out["z_G"] = f_G + self.cfg.guide_weight * d_G if d_G is not None else f_G   # Sec. 3.2.3
        if f_L_parts is not None:
            out["f_L_parts"] = torch.stack(f_L_parts)                            # (8, B, 256)
            f_L = torch.cat(f_L_parts, dim=1)
            out["f_L"] = f_L
            out["z_L"] = f_L + self.cfg.guide_weight * d_L if d_L is not None else f_L
        return out

    # --- losses (Sec. 3.2.4) -------------------------------------------------
    def losses(self, out: dict[str, torch.Tensor], batch: dict) -> dict[str, torch.Tensor]:
        cfg = self.cfg
        y, eps = batch["labels"], cfg.label_smoothing

        def ce(logits: torch.Tensor) -> torch.Tensor:
            return cross_entropy_label_smooth(logits, y, eps)

        def tri(x: torch.Tensor) -> torch.Tensor:
            return batch_hard_triplet(x.float(), y, cfg.triplet_margin, cfg.triplet_metric)

        terms: dict[str, torch.Tensor] = {}
        if "f_G" in out:
            terms["id_f_global"] = cfg.mf_id_weight * ce(self.cls_f_global(out["f_G"]))
            terms["id_z_global"] = cfg.fused_id_weight * ce(self.cls_z_global(out["z_G"]))
            terms["triplet_z_global"] = cfg.triplet_weight * tri(out["z_G"])
        if "f_L" in out:
            terms["id_f_local"] = cfg.mf_id_weight * sum(
                ce(cls(f)) for cls, f in zip(self.cls_f_local, out["f_L_parts"]))
            terms["id_z_local"] = cfg.fused_id_weight * ce(self.cls_z_local(out["z_L"]))
            terms["triplet_z_local"] = cfg.triplet_weight * tri(out["z_L"])
        return terms

    # --- inference -----------------------------------------------------------
    @property
    def eval_requires(self) -> tuple[str, ...]:
        """The MF-Stream features need the image only; ``eval_feature="fused"`` also the DSAP-images."""
        return self.requires if self.cfg.eval_feature == "fused" and self.dsag is not None else ()

    def extract(self, batch: dict) -> torch.Tensor:
        """``[f_G, f_L]`` (MF-Stream only), or ``[z_G, z_L]`` with ``eval_feature="fused"``;
        ``eval_branches`` keeps one of the two."""
        cfg = self.cfg
        keep = cfg.eval_branches or cfg.branches
        if cfg.eval_feature == "fused" and self.dsag is not None:
            out = self.forward(batch)
            g, l_ = out.get("z_G"), out.get("z_L")
        else:
            f_G, f_L_parts = self.mf(batch["images"])
            g, l_ = f_G, (torch.cat(f_L_parts, dim=1) if f_L_parts is not None else None)
        feats = [x for x, name in ((g, "global"), (l_, "local")) if x is not None and keep in ("both", name)]
        return torch.cat(feats, dim=1)

    def flip_batch(self, batch: dict) -> dict:
        """Mirror the image and move the DSAP-images as :func:`priors.dsap.flip_dsap` does."""
        out = super().flip_batch(batch)
        if "dsap" in out:
            out["dsap"], out["dsap_valid"] = flip_dsap_torch(out["dsap"], out["dsap_valid"])
        return out

    def drop_training_modules(self) -> "DSA":
        """Remove what inference does not use (DSAG-Stream, classifiers): the
        deployed model of Sec. 3.2 / MPN Table 9's "testing" column."""
        if self.cfg.eval_feature == "fused":
            raise ValueError("eval_feature='fused' needs the DSAG-Stream at inference")
        self.dsag = self.cls_f_global = self.cls_f_local = self.cls_z_global = self.cls_z_local = None
        self._dropped = True
        return self

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        """After :meth:`drop_training_modules`, a full training checkpoint loads
        without its DSAG-Stream and classifier tensors (they are skipped, never
        materialised): the inference model of Sec. 3.2."""
        if getattr(self, "_dropped", False):
            skip = ("dsag.", "cls_f_global.", "cls_f_local.", "cls_z_global.", "cls_z_local.")
            state_dict = {k: v for k, v in state_dict.items() if not k.startswith(skip)}
        return super().load_state_dict(state_dict, strict=strict, assign=assign)

    def inference_parameters(self) -> int:
        """Parameters of the MF-Stream (the test-time model; classifiers excluded)."""
        return sum(p.numel() for p in self.mf.parameters())

    def training_parameters(self, classifiers: bool = False) -> int:
        """MF-Stream + DSAG-Stream (+ the classifiers when asked)."""
        n = self.inference_parameters() + (sum(p.numel() for p in self.dsag.parameters()) if self.dsag else 0)
        if classifiers:
            n += sum(p.numel() for m in (self.cls_f_global, self.cls_f_local, self.cls_z_global, self.cls_z_local)
                     if m is not None for p in m.parameters())
        return n

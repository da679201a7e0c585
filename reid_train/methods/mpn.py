"""MPN: Multi-task Part-aware Network (Ding, Wang, Wang, Tao, "Multi-task Learning
with Coarse Priors for Robust Part-aware Person Re-identification", TPAMI 2020).

Model (Sec. 3.3, Fig. 3). ResNet-50 with the last down-sampling removed gives
``F`` (24 x 8 at 384 x 128). For each of ``K = 6`` body parts there is a main
task (MT) and an auxiliary task (AT) with the same structure: a 1x1 conv
(2048 -> 512, BN, ReLU), global max pooling (GMP), an optional channel
attention module (CA, Fig. 6), a second 1x1 conv (512 -> 512, BN, ReLU) and an
FC classifier. The MT reads the whole ``F``; the AT reads ``P_k``, strip ``k``
of ``F`` processed with the stored coarse prior (Fig. 5(b),
:func:`reid_train.methods.mpn_parts.part_features_from_prior`). Parameter
space alignment (PSA): each MT-AT pair shares both convs and the CA module
(hard parameter sharing); the classifiers stay separate.

Losses (Sec. 3.4-4). ``L = L_ID + L_TRI + lambda L_CF`` (Eq. 10, lambda = 1):

* ``L_ID`` (Eq. 1): cross-entropy of every MT output ``f_k`` and every AT
  output ``z_k``, summed over the K parts, averaged over the batch (logged as
  ``id_mt`` and ``id_at``);
* ``L_TRI`` (Eq. 3-4): batch-hard triplet loss on ``h = [f_1 .. f_K]`` (Eq. 2)
  with the cosine distance and margin ``alpha = 0.2``, divided by ``N_T``, the
  number of triplets that violate the margin (``triplet_normalise =
  "violating"``; ``"all"`` divides by the batch size);
* ``L_CF`` (Eq. 5-8): class-wise feature space alignment — per identity of the
  batch, the cosine distance between the mean of ``h`` and the mean of
  ``g = [z_1 .. z_K]``, averaged over the identities.

Inference (Sec. 4, Eq. 11): ``h`` with the cosine similarity; ATs removed.

Training (Sec. 5.1): 384 x 128, S = 6 identities x A = 8 images, SGD
(momentum 0.9, weight decay 5e-4), lr 0.01 x 0.1 every 20 epochs, 70 epochs,
random erasing and flip at 0.5. "offline translation [53] is adopted to
enlarge each training set by a factor of five": an MPN epoch is therefore
five passes over the store's training split (``epoch_multiplier = 5``), so
70 epochs and the milestones 20/40/60 are as many iterations as in the paper
(each pass draws new online translations, see below). "The parameters of MPN
are initialized from those of the IDE model [56] trained on each respective
database": train ``python -m reid_train.fit --method ide --out runs/ide``
(:class:`reid_train.methods.baseline.IDE`: CE only) and pass ``--init
runs/ide``, which copies its backbone (same ``backbone.*`` names); a BoT
``baseline`` run also loads, but is not the paper's initialisation.

Ablation switches (Table 1-4): ``tasks`` = ``"mt_at"`` (MPN) / ``"mt_only"``
("MT Only") / ``"at_only"`` (the PCB-like "Baseline": ATs on a uniform
division, triplet on ``g``, ``g`` at test); ``share_conv1`` / ``share_conv2``
(C1-S, C2-S; both off = "Naive MTL"); ``channel_attention`` (off = MPN°);
``feature_alignment`` = ``"class"`` (Eq. 8) / ``"sample"`` (Eq. 9) /
``"batch"`` (means over the whole batch, MMD-like) / ``"sum_triplet"`` (the
sample-wise variant of DSA-reID: triplet on ``h + g`` instead of ``h``) /
``"none"``; ``prior`` = ``"full"`` / ``"roi_resize"`` / ``"uniform"`` (Table 2).

Where this differs from the paper: the offline five-fold translation of the
training set (Sec. 5.1, [53]) is replaced by the loader's online random
translation (pad 10 + crop, which moves the prior with the image) over
``epoch_multiplier = 5`` passes per epoch: the same number of iterations and
translated samples per epoch, drawn afresh instead of five fixed copies. The
cross-entropy has no label smoothing (the paper mentions none). The authors'
public code uses a triplet margin of 0.4; the paper (and the issue) says 0.2,
which is the default here. The CA module follows Fig. 6 and the authors'
code: GMP'd vector -> 1x1 conv (C -> C/4) + BN + ReLU -> 1x1 conv (C/4 -> C)
+ BN -> sigmoid, multiplying the vector.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from ..backbones import resnet
from ..config import TrainConfig
from ..losses import cross_entropy_label_smooth, hard_example_mining, pairwise_distance
from . import register
from .base import Method
from .mpn_parts import PRIOR_MODES, part_features_from_prior

TASKS = ("mt_at", "mt_only", "at_only")
ALIGNMENTS = ("class", "sample", "batch", "sum_triplet", "none")


def mpn_augment() -> dict:
    """Sec. 5.1: flip and random erasing at 0.5; pad-crop translation stands in
    for the offline translation of the training set."""
    return {"flip_p": 0.5, "pad": 10, "erase_p": 0.5}


def conv_bn_relu(c_in: int, c_out: int) -> nn.Sequential:
    """1x1 conv + BN + ReLU ("each Conv layer is followed by one BN layer and one ReLU layer")."""
    return nn.Sequential(nn.Conv2d(c_in, c_out, 1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True))


class ChannelAttention(nn.Module):
    """SE-style channel attention on a pooled (B, C, 1, 1) vector (Fig. 6):
    ``x * sigmoid(BN(conv(ReLU(BN(conv(x))))))`` with a C/``reduction`` bottleneck."""

    def __init__(self, channels: int, reduction: int = 4):
        super().__init__()
        if channels % reduction:
            raise ValueError(f"channels {channels} not divisible by reduction {reduction}")
        mid = channels // reduction
        self.squeeze = nn.Sequential(nn.Conv2d(channels, mid, 1, bias=False), nn.BatchNorm2d(mid),
                                     nn.ReLU(inplace=True))
        self.excite = nn.Sequential(nn.Conv2d(mid, channels, 1, bias=False), nn.BatchNorm2d(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(self.excite(self.squeeze(x)))


class PartTask(nn.Module):
    """The layers of one task (MT or AT) up to its feature: conv1 -> GMP -> [CA] -> conv2.

    ``conv1``, ``ca`` and ``conv2`` are passed in so an MT-AT pair can share
    any of them (PSA, Sec. 3.3)."""

    def __init__(self, conv1: nn.Module, ca: nn.Module | None, conv2: nn.Module):
        super().__init__()
        self.conv1, self.ca, self.conv2 = conv1, ca, conv2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        v = torch.amax(self.conv1(x), dim=(2, 3), keepdim=True)   # GMP
        if self.ca is not None:
            v = self.ca(v)
        return self.conv2(v).flatten(1)


def class_means(x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """(U, D) mean of the rows of ``x`` (B, D) per distinct label (Eq. 6-7), labels in sorted order."""
    _, inverse = torch.unique(labels, return_inverse=True)
    onehot = F.one_hot(inverse).to(x.dtype).t()                      # (U, B)
    return (onehot @ x) / onehot.sum(dim=1, keepdim=True)


def cosine_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Row-wise ``1 - cos(a_i, b_i)`` (Eq. 4)."""
    return 1.0 - F.cosine_similarity(a.float(), b.float(), dim=-1, eps=1e-12)


def feature_alignment_loss(h: torch.Tensor, g: torch.Tensor, labels: torch.Tensor, kind: str = "class") -> torch.Tensor:
    """Feature space alignment between MT features ``h`` and AT features ``g`` (Sec. 3.5, 5.3.3).

    ``"class"``: L_CF (Eq. 8), the mean over identities of ``D(mean h, mean g)``;
    ``"sample"``: L_SF (Eq. 9), the mean over images of ``D(h, g)``;
    ``"batch"``: ``D(mean over the batch of h, mean of g)``, ignoring labels."""
    if kind == "class":
        return cosine_distance(class_means(h, labels), class_means(g, labels)).mean()
    if kind == "sample":
        return cosine_distance(h, g).mean()
    if kind == "batch":
        return cosine_distance(h.mean(dim=0), g.mean(dim=0))
    raise ValueError(f"unknown feature alignment {kind!r}")


def triplet_loss_mpn(features: torch.Tensor, labels: torch.Tensor, margin: float = 0.2, metric: str = "cosine",
                     normalise: str = "violating") -> torch.Tensor:
    """Batch-hard triplet loss of Eq. 3: ``sum_a [max_p D - min_n D + alpha]_+ / N_T``.

    ``normalise="violating"``: ``N_T`` = number of anchors whose hardest
    triplet violates the margin (the loss is 0 when none does), as Eq. 3;
    ``"all"``: divide by the number of anchors."""
    dist = pairwise_distance(features.float(), metric=metric)
    d_ap, d_an, _, _ = hard_example_mining(dist, labels)
    hinge = F.relu(d_ap - d_an + margin)
    if normalise == "all":
        return hinge.mean()
    if normalise != "violating":
        raise ValueError(f"normalise must be 'violating' or 'all', got {normalise!r}")
    return hinge.sum() / (hinge > 0).sum().clamp(min=1).to(hinge.dtype)


@register("mpn")
class MPN(Method):
    """MPN / MPN° and the ablations of Tables 1-4 (see the module docstring)."""

    requires = ("priors/mpn",)

    @dataclass
    class Config(TrainConfig):
        backbone: str = "resnet50"
        last_stride: int = 1
        size: tuple[int, int] = (384, 128)
        P: int = 6                       # S identities
        K: int = 8                       # A images per identity
        augment: dict = field(default_factory=mpn_augment)
        epochs: int = 70
        epoch_multiplier: int = 5        # Sec. 5.1: the training set enlarged five times (translation)
        optimizer: str = "sgd"
        lr: float = 0.01
        momentum: float = 0.9
        weight_decay: float = 5e-4
        warmup_epochs: float = 0.0
        schedule: str = "step"
        milestones: tuple[int, ...] = (20, 40, 60)
        gamma: float = 0.1
        metric: str = "cosine"           # Eq. 11
        parts: int = 6                   # K body parts (Sec. 5.1, Fig. 7)
        part_dim: int = 512              # width of both 1x1 convs
        channel_attention: bool = True   # CA module (False = MPN°)
        ca_reduction: int = 4
        tasks: str = "mt_at"             # mt_at | mt_only | at_only
        share_conv1: bool = True         # C1-S
        share_conv2: bool = True         # C2-S
        share_ca: bool = True
        prior: str = "full"              # full | roi_resize | uniform (Table 2)
        feature_alignment: str = "class"  # class | sample | batch | sum_triplet | none
        id_weight: float = 1.0
        triplet_weight: float = 1.0
        triplet_margin: float = 0.2      # alpha
        triplet_metric: str = "cosine"   # Eq. 4
        triplet_normalise: str = "violating"  # N_T of Eq. 3 | all
        cf_weight: float = 1.0           # lambda of Eq. 10
        label_smoothing: float = 0.0

        def validate(self) -> "MPN.Config":
            super().validate()
            for name, allowed in (("tasks", TASKS), ("prior", PRIOR_MODES), ("feature_alignment", ALIGNMENTS),
                                  ("triplet_normalise", ("violating", "all")),
                                  ("triplet_metric", ("euclidean", "cosine"))):
                if getattr(self, name) not in allowed:
                    raise ValueError(f"{name}={getattr(self, name)!r}; expected one of {allowed}")
            if self.tasks == "at_only" and self.prior != "uniform":
                raise ValueError("tasks='at_only' (the paper's PCB-like baseline) needs prior='uniform': "
                                 "its ATs also extract the test features, where no prior exists")
            if self.parts < 1 or self.part_dim < 1:
                raise ValueError("parts and part_dim must be >= 1")
            return self

    def __init__(self, cfg: "MPN.Config", num_classes: int):
        super().__init__(cfg, num_classes)
        self.backbone = resnet(cfg.backbone, cfg.last_stride, cfg.pretrained or None)
        c, d, n = self.backbone.out_channels, cfg.part_dim, cfg.parts
        use_mt, use_at = cfg.tasks != "at_only", cfg.tasks != "mt_only"

        def make(share: bool, build):
            mt = [build() for _ in range(n)]
            at = mt if share else [build() for _ in range(n)]
            return mt, at

        def ca() -> nn.Module | None:
            return ChannelAttention(d, cfg.ca_reduction) if cfg.channel_attention else None

        conv1_mt, conv1_at = make(cfg.share_conv1, lambda: conv_bn_relu(c, d))
        ca_mt, ca_at = make(cfg.share_ca, ca)
        conv2_mt, conv2_at = make(cfg.share_conv2, lambda: conv_bn_relu(d, d))
        # a shared layer is the same module object in self.mt[k] and self.at[k]: one set of
        # parameters (self.parameters() yields it once), listed under both names in state_dict
        self.mt = nn.ModuleList(PartTask(*m) for m in zip(conv1_mt, ca_mt, conv2_mt)) if use_mt else None
        self.at = nn.ModuleList(PartTask(*m) for m in zip(conv1_at, ca_at, conv2_at)) if use_at else None
        self.mt_classifiers = nn.ModuleList(self._classifier(d, num_classes) for _ in range(n)) if use_mt else None
        self.at_classifiers = nn.ModuleList(self._classifier(d, num_classes) for _ in range(n)) if use_at else None
        for tasks in (self.mt, self.at):
            for m in tasks.modules() if tasks is not None else ():
                if isinstance(m, nn.Conv2d):
                    nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    @staticmethod
    def _classifier(d: int, num_classes: int) -> nn.Linear:
        fc = nn.Linear(d, num_classes)
        nn.init.normal_(fc.weight, std=0.001)
        nn.init.zeros_(fc.bias)
        return fc

    # --- features ------------------------------------------------------------
    def main_features(self, F_map: torch.Tensor) -> list[torch.Tensor]:
        """``f_1 .. f_K`` (each (B, part_dim)) of the MTs on the whole ``F``."""
        return [task(F_map) for task in self.mt]

    def aux_features(self, F_map: torch.Tensor, batch: dict) -> list[torch.Tensor]:
        """``z_1 .. z_K`` of the ATs on the prior-processed strips ``P_k`` (Fig. 5(b))."""
        mode = self.cfg.prior
        mask = batch.get("mpn_mask") if mode == "full" else None
        roi = batch.get("mpn_roi") if mode != "uniform" else None
        if mode != "uniform" and (roi is None or (mode == "full" and mask is None)):
            raise KeyError(f"prior={mode!r} needs the batch keys mpn_mask / mpn_roi (store group priors/mpn)")
        strips = part_features_from_prior(F_map, mask, roi, self.cfg.parts, mode)
        return [task(p) for task, p in zip(self.at, strips)]

    def forward(self, batch: dict) -> dict[str, torch.Tensor]:
        F_map = self.backbone(batch["images"])
        out: dict[str, torch.Tensor] = {}
        if self.mt is not None:
            f = self.main_features(F_map)
            out["h"] = torch.cat(f, dim=1)
            out["mt_logits"] = torch.stack([cls(x) for cls, x in zip(self.mt_classifiers, f)])  # (K, B, C)
        if self.at is not None:
            z = self.aux_features(F_map, batch)
            out["g"] = torch.cat(z, dim=1)
            out["at_logits"] = torch.stack([cls(x) for cls, x in zip(self.at_classifiers, z)])
        return out

    # --- losses --------------------------------------------------------------
    def _id(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Eq. 1 for one task type: CE summed over the K parts (each a batch mean)."""
        eps = self.cfg.label_smoothing
        return sum(cross_entropy_label_smooth(lg, labels, eps) for lg in logits)

    def losses(self, out: dict[str, torch.Tensor], batch: dict) -> dict[str, torch.Tensor]:
        cfg = self.cfg
        labels = batch["labels"]
        terms: dict[str, torch.Tensor] = {}
        if "mt_logits" in out:
            terms["id_mt"] = cfg.id_weight * self._id(out["mt_logits"], labels)
        if "at_logits" in out:
            terms["id_at"] = cfg.id_weight * self._id(out["at_logits"], labels)
        anchor = out["h"] if "h" in out else out["g"]   # at_only: the triplet sees g
        if cfg.tasks == "mt_at" and cfg.feature_alignment == "sum_triplet":
            anchor = out["h"] + out["g"]
        terms["triplet"] = cfg.triplet_weight * triplet_loss_mpn(
            anchor, labels, cfg.triplet_margin, cfg.triplet_metric, cfg.triplet_normalise)
        if cfg.tasks == "mt_at" and cfg.feature_alignment in ("class", "sample", "batch"):
            terms["align"] = cfg.cf_weight * feature_alignment_loss(
                out["h"].float(), out["g"].float(), labels, cfg.feature_alignment)
        return terms

    # --- inference -----------------------------------------------------------
    @property
    def eval_requires(self) -> tuple[str, ...]:
        """The MTs' features ``h`` need the image only; the AT-only baseline reads the priors."""
        return () if self.mt is not None else self.requires

    def extract(self, batch: dict) -> torch.Tensor:
        """``h = [f_1 .. f_K]`` (Eq. 2); ``g`` for the AT-only baseline."""
        F_map = self.backbone(batch["images"])
        if self.mt is not None:
            return torch.cat(self.main_features(F_map), dim=1)
        return torch.cat(self.aux_features(F_map, batch), dim=1)

    def inference_parameters(self) -> int:
        """Parameters used at test time (backbone + MTs, or ATs for ``at_only``),
        classifiers excluded — the count of MPN Table 9."""
        tasks = self.mt if self.mt is not None else self.at
        return sum(p.numel() for p in list(self.backbone.parameters()) + list(tasks.parameters()))

    def training_parameters(self, classifiers: bool = False) -> int:
        """All trained parameters; without the classifiers unless asked (Table 9)."""
        skip = set()
        if not classifiers:
            for m in (self.mt_classifiers, self.at_classifiers):
                if m is not None:
                    skip |= {id(p) for p in m.parameters()}
        return sum(p.numel() for p in self.parameters() if id(p) not in skip)

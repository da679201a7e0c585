"""AlignedReID (Zhang et al., "AlignedReID: Surpassing Human-Level Performance
in Person Re-Identification"; ../shared/papers/001 = arXiv 2017,
000 = the later CVPR submission), with mutual learning (Sec. 3.2).

Model (Sec. 3.1, Fig. 2): ResNet-50 feature map (C x H x W). Global feature:
global average pooling (C-d). Local features: horizontal pooling (the mean
of each row) then a 1x1 convolution C -> c (c = 128, Fig. 2 of 000: "one 1x1
convolution layer is used to reduce the channels from 2048 to 128 after HAP";
001 Sec. 3.1 says the same), i.e. H local features of c dims. Both versions
of the paper describe a bare 1x1 conv, which is the default; ``local_bn_relu``
adds the BN + ReLU after it that common re-implementations use (not the paper). Classifier: a linear layer on the
global feature (ID loss, plain cross-entropy: "we combined metric learning
loss with classification loss", Sec. 4.2).

Losses: TriHard (Hermans et al.) on the global distance (L2) and on the local
distance (:mod:`reid_train.evaluation.local_distance`, Eq. 1-2) with their own margins;
the hard positive / negative of each anchor is mined by the **global**
distance (Sec. 3.1; ``mining="local"`` mines by the local distance instead).
``L = L_id + L_tri_global + L_tri_local`` (weights 1).

Mutual learning (Sec. 3.2, Fig. 4; ``mutual=True``): two networks in this one
module, trained together by one optimiser on the summed losses: each has its
own ID and TriHard losses, plus

* the classification mutual loss (DML): ``KL(ZG(p2) || p1) + KL(ZG(p1) || p2)``,
  weight 0.01;
* the metric mutual loss, Eq. 3, on the two global batch distance matrices:
  ``1/N^2 sum_ij [ZG(M1_ij) - M2_ij]^2 + [M1_ij - ZG(M2_ij)]^2``, weight 0.001,
  ZG = zero gradient (``detach``), so net k receives gradient only through its
  own matrix (Eq. 4).

Because every cross term is detached, the gradient of the sum w.r.t. net k's
parameters is exactly the gradient of net k's own objective. The paper pairs
ResNet-50 with ResNet-50-Xception; here net 2 is ``backbone2`` (default: the
same backbone, another random initialisation of everything not pretrained).

Inference (Sec. 3.1, 4.3): the **global feature of net 1**, L2 distance.
Options: ``eval_local`` (global + local distance, "their summation",
Sec. 3.1) and ``eval_rerank`` (k-reciprocal re-ranking, k1 = 20, k2 = 6,
lambda = 0.3, Sec. 4.2 of 000) through :meth:`AlignedReID.eval_distance`.

Registered configurations (Sec. 4.2 of each version):

* ``alignedreid`` (**default**, arXiv version 001): 224x224, batch 160 =
  40 x 4, both margins 0.5, Adam 1e-3, x0.1 at epochs 80 and 160.
* ``alignedreid_cvpr`` (000): the same with batch 128 = 32 x 4 and margins 0.3.
* ``alignedreid_mutual``: 001 with mutual learning and its schedule, Adam
  3e-4 -> 1e-4 (epoch 60) -> 1e-5 (epoch 120).

Not given by the papers (our choices, config fields): the total number of
epochs ("until convergence": 200, 150 with mutual learning), weight decay
(5e-4), the crop (pad 10 + random crop, the strong-baseline crop), last
stride 2 (a 7 x 7 map at 224 x 224, as in Sec. 3.1). The papers' "epoch" is
2000 mini-batches of a three-dataset training set; here an epoch is one pass
over the store's training images, so the milestones count engine epochs.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..backbones import resnet
from ..config import TrainConfig
from ..evaluation.local_distance import LocalDistanceRows, local_distance, paired_local_distance
from ..losses import cross_entropy_label_smooth, hard_example_mining, pairwise_distance
from . import register
from .base import Method

log = logging.getLogger(__name__)


def aligned_augment() -> dict:
    """Random horizontal flip and random crop (Sec. 4.2); no erasing."""
    return {"flip_p": 0.5, "pad": 10, "erase_p": 0.0}


class AlignedNet(nn.Module):
    """One AlignedReID network: backbone, global + local branches, classifier."""

    def __init__(self, depth: int | str, last_stride: int, pretrained: str, local_dim: int, num_classes: int,
                 local_bn_relu: bool = False):
        super().__init__()
        self.backbone = resnet(depth, last_stride, pretrained or None)
        c = self.backbone.out_channels
        # the paper's local branch is one 1x1 conv (with a bias: nothing follows it); BN + ReLU optional
        layers = [nn.Conv2d(c, local_dim, 1, bias=not local_bn_relu)]
        if local_bn_relu:
            layers += [nn.BatchNorm2d(local_dim), nn.ReLU(inplace=True)]
        self.local_reduce = nn.Sequential(*layers)
        self.classifier = nn.Linear(c, num_classes)
        nn.init.normal_(self.classifier.weight, std=0.001)
        nn.init.zeros_(self.classifier.bias)

    def features(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Global (B, C) and local (B, H, c) features."""
        fmap = self.backbone(images)
        global_feat = fmap.mean(dim=(2, 3))
        rows = fmap.mean(dim=3, keepdim=True)                      # horizontal pooling: (B, C, H, 1)
        local_feat = self.local_reduce(rows).squeeze(3).transpose(1, 2)
        return global_feat, local_feat

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        g, l = self.features(images)
        return {"global": g, "local": l, "logits": self.classifier(g)}


def aligned_trihard(global_feat: torch.Tensor, local_feat: torch.Tensor, labels: torch.Tensor,
                    global_margin: float, local_margin: float, mining: str = "global"
                    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """TriHard on the global and on the local distance (Sec. 3.1).

    Hard pairs are mined once, by the global L2 distance (``mining="global"``)
    or by the local distance over all batch pairs (``"local"``), and both
    losses use the same pairs. Returns ``(global_loss, local_loss, M)`` with
    ``M`` the (B, B) global distance matrix (for the metric mutual loss)."""
    g, l = global_feat.float(), local_feat.float()
    dist_g = pairwise_distance(g, metric="euclidean")
    if mining == "global":
        ap_g, an_g, ip, ineg = hard_example_mining(dist_g, labels)
        ap_l, an_l = paired_local_distance(l, l[ip]), paired_local_distance(l, l[ineg])
    elif mining == "local":
        ap_l, an_l, ip, ineg = hard_example_mining(local_distance(l), labels)
        ap_g, an_g = dist_g.gather(1, ip[:, None])[:, 0], dist_g.gather(1, ineg[:, None])[:, 0]
    else:
        raise ValueError(f"mining must be 'global' or 'local', got {mining!r}")
    return F.relu(ap_g - an_g + global_margin).mean(), F.relu(ap_l - an_l + local_margin).mean(), dist_g


def classification_mutual_loss(logits1: torch.Tensor, logits2: torch.Tensor) -> torch.Tensor:
    """Deep mutual learning (Zhang et al. 2018, Sec. 3.1 of AlignedReID):
    ``KL(ZG(p2) || p1) + KL(ZG(p1) || p2)``, batch mean; each network is
    pulled towards the other's (constant) class probabilities."""
    lp1, lp2 = F.log_softmax(logits1.float(), 1), F.log_softmax(logits2.float(), 1)
    kl = lambda target, inp: F.kl_div(inp, target.detach(), reduction="batchmean", log_target=True)  # noqa: E731
    return kl(lp2, lp1) + kl(lp1, lp2)


def metric_mutual_loss(m1: torch.Tensor, m2: torch.Tensor) -> torch.Tensor:
    """Eq. 3: ``1/N^2 sum_ij [ZG(M1) - M2]^2 + [M1 - ZG(M2)]^2`` with ZG the
    zero-gradient function (``detach``): d/dM1 = 2/N^2 (M1 - M2) and the
    mixed second derivative is 0 (Eq. 4)."""
    return ((m1.detach() - m2).pow(2) + (m1 - m2.detach()).pow(2)).mean()


def step_factors(milestones: tuple[int, ...], factors: tuple[float, ...]) -> Callable[[float], float]:
    """Learning-rate factor of a fractional epoch: 1 before the first milestone,
    ``factors[i]`` from milestone ``i`` on (absolute factors, e.g. 3e-4 ->
    1e-4 -> 1e-5 is ``(1/3, 1/30)``)."""
    if len(milestones) != len(factors):
        raise ValueError(f"{len(milestones)} milestones but {len(factors)} milestone_factors")

    def factor(epoch: float) -> float:
        n = sum(1 for m in milestones if epoch >= m)
        return 1.0 if n == 0 else float(factors[n - 1])

    return factor


@register("alignedreid")
class AlignedReID(Method):
    """AlignedReID, arXiv version (001) settings; see the module docstring."""

    @dataclass
    class Config(TrainConfig):
        backbone: str = "resnet50"
        last_stride: int = 2
        size: tuple[int, int] = (224, 224)
        P: int = 40
        K: int = 4
        augment: dict = field(default_factory=aligned_augment)
        epochs: int = 200
        optimizer: str = "adam"
        lr: float = 1e-3
        weight_decay: float = 5e-4
        schedule: str = "step"
        milestones: tuple[int, ...] = (80, 160)
        gamma: float = 0.1
        milestone_factors: tuple[float, ...] = ()  # absolute lr factors per milestone (replaces gamma if given)
        metric: str = "euclidean"
        local_dim: int = 128             # c, the local feature size (Fig. 2 of 000)
        local_bn_relu: bool = False      # BN + ReLU after the local 1x1 conv (not in the paper)
        global_margin: float = 0.5       # TriHard margin on the global distance (0.3 in 000)
        local_margin: float = 0.5        # TriHard margin on the local distance (0.3 in 000)
        mining: str = "global"           # hard samples mined by the "global" or the "local" distance
        label_smoothing: float = 0.0     # ID loss: plain cross-entropy in the paper
        id_weight: float = 1.0
        global_weight: float = 1.0
        local_weight: float = 1.0
        mutual: bool = False             # train two networks with the mutual losses (Sec. 3.2)
        backbone2: str = ""              # net 2's backbone ("" = same as backbone)
        kl_weight: float = 0.01          # classification mutual loss weight
        metric_mutual_weight: float = 0.001  # metric mutual loss (Eq. 3) weight
        eval_local: bool = False         # evaluate with global + local distance
        eval_rerank: bool = False        # k-reciprocal re-ranking at evaluation
        rerank_k1: int = 20
        rerank_k2: int = 6
        rerank_lambda: float = 0.3

        def validate(self) -> "AlignedReID.Config":
            super().validate()
            if self.mining not in ("global", "local"):
                raise ValueError(f"mining must be 'global' or 'local', got {self.mining!r}")
            if self.milestone_factors and len(self.milestone_factors) != len(self.milestones):
                raise ValueError("milestone_factors needs one factor per milestone")
            return self

    def __init__(self, cfg: "AlignedReID.Config", num_classes: int):
        super().__init__(cfg, num_classes)
        names = [cfg.backbone] + ([cfg.backbone2 or cfg.backbone] if cfg.mutual else [])
        self.nets = nn.ModuleList(
            AlignedNet(n, cfg.last_stride, cfg.pretrained, cfg.local_dim, num_classes,
                       cfg.local_bn_relu) for n in names
        )
        self.global_dim = self.nets[0].backbone.out_channels

    # --- training ------------------------------------------------------------
    def forward(self, batch: dict) -> dict[str, torch.Tensor]:
        out = {}
        for k, net in enumerate(self.nets, 1):
            out.update({f"{name}_{k}": v for name, v in net(batch["images"]).items()})
        return out

    def losses(self, out: dict[str, torch.Tensor], batch: dict) -> dict[str, torch.Tensor]:
        cfg, labels = self.cfg, batch["labels"]
        terms, matrices = {}, []
        for k in range(1, len(self.nets) + 1):
            tri_g, tri_l, dist = aligned_trihard(out[f"global_{k}"], out[f"local_{k}"], labels, cfg.global_margin,
                                                 cfg.local_margin, cfg.mining)
            sfx = f"_{k}" if cfg.mutual else ""
            terms[f"id{sfx}"] = cfg.id_weight * cross_entropy_label_smooth(out[f"logits_{k}"], labels,
                                                                           cfg.label_smoothing)
            terms[f"tri_global{sfx}"] = cfg.global_weight * tri_g
            terms[f"tri_local{sfx}"] = cfg.local_weight * tri_l
            matrices.append(dist)
        if cfg.mutual:
            terms["mutual_kl"] = cfg.kl_weight * classification_mutual_loss(out["logits_1"], out["logits_2"])
            terms["mutual_metric"] = cfg.metric_mutual_weight * metric_mutual_loss(*matrices)
        return terms

    def backbone_parameters(self) -> list[nn.Parameter]:
        return [p for net in self.nets for p in net.backbone.parameters() if p.requires_grad]

    def build_scheduler(self, optimizer, cfg, steps_per_epoch):
        """The base schedule, or absolute factors per milestone (mutual
        learning: 3e-4 -> 1e-4 -> 1e-5) when ``milestone_factors`` is set."""
        if not cfg.milestone_factors:
            return super().build_scheduler(optimizer, cfg, steps_per_epoch)
        factor = step_factors(tuple(cfg.milestones), tuple(cfg.milestone_factors))
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: factor(step / max(1, steps_per_epoch)))

    # --- evaluation ----------------------------------------------------------
    def extract(self, batch: dict) -> torch.Tensor:
        """Net 1's global feature (B, C); with ``eval_local`` the local features
        are appended flattened: (B, C + H c), split again by :meth:`eval_distance`."""
        g, l = self.nets[0].features(batch["images"])
        return torch.cat([g, l.flatten(1)], 1) if self.cfg.eval_local else g

    def split_features(self, f: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(N, C + H c) -> global (N, C), local (N, H, c)."""
        return f[:, :self.global_dim], f[:, self.global_dim:].reshape(len(f), -1, self.cfg.local_dim)

    def eval_distance(self, qf: torch.Tensor, gf: torch.Tensor):
        """The plain (never re-ranked) test distance: ``None`` for the default
        (global feature, L2: the engine's own evaluation); with ``eval_local`` a
        callable ``(start, stop) -> rows`` of ``global L2 + local distance``
        ("their summation", Sec. 3.1), computed per query block
        (:func:`reid_train.evaluation.evaluate_rank` takes it).

        ``eval_rerank`` is not applied here: :meth:`eval_rerank_settings` asks
        the engine to re-rank, and :meth:`Method.rerank_distance` starts from
        this same distance (global + local on q x g, q x q and g x g with
        ``eval_local``; slow for large galleries)."""
        cfg = self.cfg
        if not cfg.eval_local:
            return None
        from ..evaluation.metrics import QueryBlockDistances

        (qg, ql), (gg, gl) = self.split_features(qf), self.split_features(gf)

        def combined(a_g, a_l, b_g, b_l):
            glob, loc = QueryBlockDistances(a_g, b_g, "euclidean"), LocalDistanceRows(a_l, b_l)

            def rows(start: int, stop: int) -> np.ndarray:
                return torch.as_tensor(glob(start, stop)).float().cpu().numpy() + loc(start, stop)

            rows.shape = (len(a_g), len(b_g))
            return rows

        return combined(qg, ql, gg, gl)

    def eval_rerank_settings(self) -> dict | None:
        """``eval_rerank``: the engine's evaluation re-ranks (k1 = 20, k2 = 6, lambda = 0.3,
        Sec. 4.2 of 000), starting from :meth:`eval_distance`'s distance."""
        cfg = self.cfg
        if not cfg.eval_rerank:
            return None
        return {"k1": cfg.rerank_k1, "k2": cfg.rerank_k2, "lambda_value": cfg.rerank_lambda}


@register("alignedreid_cvpr")
class AlignedReIDCVPR(AlignedReID):
    """AlignedReID, CVPR-submission version (000): batch 128 = 32 x 4, margins 0.3."""

    @dataclass
    class Config(AlignedReID.Config):
        P: int = 32
        global_margin: float = 0.3
        local_margin: float = 0.3


@register("alignedreid_mutual")
class AlignedReIDMutual(AlignedReID):
    """AlignedReID (001) with mutual learning and its schedule (Sec. 4.2):
    Adam 3e-4, 1e-4 from epoch 60, 1e-5 from epoch 120."""

    @dataclass
    class Config(AlignedReID.Config):
        mutual: bool = True
        epochs: int = 150
        lr: float = 3e-4
        milestones: tuple[int, ...] = (60, 120)
        milestone_factors: tuple[float, ...] = (1 / 3, 1 / 30)

"""Support Neighbor loss (Li, Ding, Li, Zhang, Fu, "Support Neighbor Loss for
Person Re-Identification", ACM MM 2018; ../shared/papers/004, Sec. 3.2-3.3).

In a P x Q batch (here ``P`` identities x ``K`` images: the engine's names),
every sample ``x_i`` is an anchor. Its K nearest neighbours in the batch
(itself excluded; ``k`` below, to avoid the clash with the sampler's K) form
the *support set* ``K_i = P_i u N_i``: the positives and the negatives among
them. With ``D`` the euclidean distance:

* separation loss, Eq. 3/4:
  ``L_spr = -sum_i log( sum_{p in P_i} e^{-sigma D(i,p)} / sum_{s in K_i} e^{-sigma D(i,s)} )``,
  computed with ``logsumexp`` (stable for any sigma, e.g. ``sigma = 32``);
* squeeze loss, Eq. 5: ``L_sqz = sum_i ( max_{p in P_i} D(i,p) - min_{p in P_i} D(i,p) )``;
* ``L_sn = L_spr + lambda L_sqz`` (Eq. 6), ``lambda = 0.1`` (Fig. 3a).

The sums over anchors are taken as means (a constant 1/N: the paper's
Adam is insensitive to it; ``reduction="sum"`` gives the paper's sums).

**An anchor with no positive among its k neighbours** (the paper does not
say; Eq. 4 would be ``-log 0 = +inf``): with ``no_positive="nearest"`` (the
default) the anchor's nearest positive in the batch joins its support set,
so ``P_i`` = that one sample; its separation term then pulls that positive in
past the k negatives, and its squeeze term is 0. With ``"skip"`` such
anchors are left out of both terms (and out of the mean). An anchor whose
identity has no other image in the batch is always skipped; if no anchor is
left the loss is 0 (still attached to the graph). Ties in the k-NN are broken
by ``torch.topk``.

Method (Sec. 3.3): ResNet-50, the 2048-d global average pooled feature as
embedding, 256 x 128 inputs with horizontal flips, batch 128 = 32 x 4, Adam
(default hyper-parameters: no weight decay) at 2e-4, constant until epoch
T_s = 75 and then exponential decay to 0.001 x at T_f = 800 (TriNet style:
``lr = r0 * 0.001 ** ((t - T_s) / (T_f - T_s))``; the text's garbled formula
"r_t = 75" is read as T_s = 75). Test: L2-normalised embeddings, euclidean
distance.

Our choices where the paper is silent: ``k = 8`` (Fig. 3b reports only that
smaller k is better and k = 127 worst; 8 holds the 3 other images of the
anchor's identity plus as many negatives at Q = 4), ``sigma = 32`` ("bigger
than 30", Fig. 3b), and the loss is computed on **L2-normalised**
embeddings (``sn_normalize``): on raw features the network can rescale its
embedding freely, which makes sigma meaningless, while "sigma > 30 is
favoured" is the behaviour of a scaled softmax over unit vectors (distances
in [0, 2]); the paper normalises at test time. ``sn_normalize=false`` trains
on the raw features.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from ..backbones import resnet
from ..config import TrainConfig
from ..losses import pairwise_euclidean
from . import register
from .base import Method

NO_POSITIVE = ("nearest", "skip")


def support_sets(dist: torch.Tensor, labels: torch.Tensor, k: int, no_positive: str = "nearest"
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Support sets of every anchor from a (B, B) distance matrix.

    Returns boolean ``support`` (B, B) (K_i, row i), ``positive`` (B, B)
    (P_i) and ``valid`` (B,) (anchors that enter the loss). Selection is
    discrete: no gradient flows through it."""
    if no_positive not in NO_POSITIVE:
        raise ValueError(f"no_positive must be one of {NO_POSITIVE}, got {no_positive!r}")
    b = dist.shape[0]
    if not 1 <= k <= b - 1:
        raise ValueError(f"k must be in [1, {b - 1}] for a batch of {b}, got {k}")
    eye = torch.eye(b, dtype=torch.bool, device=dist.device)
    d = dist.detach().masked_fill(eye, float("inf"))
    knn = d.topk(k, dim=1, largest=False).indices
    support = torch.zeros_like(eye).scatter_(1, knn, True)
    same = (labels[:, None] == labels[None, :]) & ~eye
    positive = support & same
    has_pos = positive.any(1)
    if no_positive == "nearest":
        missing = ~has_pos & same.any(1)
        nearest = d.masked_fill(~same, float("inf")).argmin(1)
        add = torch.zeros_like(eye).scatter_(1, nearest[:, None], True) & missing[:, None]
        support, positive = support | add, positive | add
        has_pos = positive.any(1)
    return support, positive, has_pos


def support_neighbor_terms(dist: torch.Tensor, labels: torch.Tensor, k: int, sigma: float,
                           no_positive: str = "nearest", reduction: str = "mean"
                           ) -> tuple[torch.Tensor, torch.Tensor]:
    """``(L_spr, L_sqz)`` (Eq. 4 and Eq. 5) from a (B, B) distance matrix."""
    if reduction not in ("mean", "sum"):
        raise ValueError(f"reduction must be 'mean' or 'sum', got {reduction!r}")
    support, positive, valid = support_sets(dist, labels, k, no_positive)
    if not bool(valid.any()):
        zero = dist.sum() * 0.0
        return zero, zero
    d, support, positive = dist[valid], support[valid], positive[valid]
    logits = -sigma * d
    neg_inf = torch.full_like(logits, float("-inf"))
    spr = torch.logsumexp(torch.where(support, logits, neg_inf), 1) - torch.logsumexp(
        torch.where(positive, logits, neg_inf), 1)
    far = torch.where(positive, d, torch.full_like(d, float("-inf"))).amax(1)
    near = torch.where(positive, d, torch.full_like(d, float("inf"))).amin(1)
    sqz = far - near
    if reduction == "sum":
        return spr.sum(), sqz.sum()
    return spr.mean(), sqz.mean()


def support_neighbor_loss(emb: torch.Tensor, labels: torch.Tensor, k: int = 8, sigma: float = 32.0,
                          lam: float = 0.1, squared: bool = False, no_positive: str = "nearest",
                          reduction: str = "mean") -> torch.Tensor:
    """``L_sn = L_spr + lam * L_sqz`` (Eq. 6) of embeddings (B, D) with
    euclidean distances (``squared=True``: squared euclidean, as in the
    paper's appendix). See the module docstring for anchors without positives."""
    dist = pairwise_euclidean(emb, squared=squared)
    spr, sqz = support_neighbor_terms(dist, labels, k, sigma, no_positive, reduction)
    return spr + lam * sqz


def sn_augment() -> dict:
    """Horizontal flips only (Sec. 3.3)."""
    return {"flip_p": 0.5, "pad": 0, "erase_p": 0.0}


@register("sn")
class SupportNeighbor(Method):
    """ResNet-50 + global average pooling trained with the Support Neighbor loss."""

    @dataclass
    class Config(TrainConfig):
        backbone: str = "resnet50"
        last_stride: int = 2
        size: tuple[int, int] = (256, 128)
        P: int = 32
        K: int = 4
        augment: dict = field(default_factory=sn_augment)
        epochs: int = 800                # T_f
        optimizer: str = "adam"
        lr: float = 2e-4
        weight_decay: float = 0.0        # Adam "with the default hyper-parameter values"
        schedule: str = "exp"
        exp_decay_start: float = 75.0    # T_s
        gamma: float = 0.001             # lr factor reached at T_f
        metric: str = "euclidean"        # on L2-normalised embeddings (extract)
        sn_k: int = 8                    # support-set size K of the paper
        sn_sigma: float = 32.0           # scale sigma (> 30, Fig. 3b)
        sn_lambda: float = 0.1           # lambda (Fig. 3a)
        sn_squared: bool = False         # squared euclidean distance in the loss
        sn_normalize: bool = True        # loss on L2-normalised embeddings
        sn_no_positive: str = "nearest"  # anchors without positive support neighbour: nearest | skip

        def validate(self) -> "SupportNeighbor.Config":
            super().validate()
            if self.sn_no_positive not in NO_POSITIVE:
                raise ValueError(f"sn_no_positive must be one of {NO_POSITIVE}")
            if not 1 <= self.sn_k < self.P * self.K:
                raise ValueError(f"sn_k={self.sn_k} must be in [1, P*K - 1]")
            return self

    def __init__(self, cfg: "SupportNeighbor.Config", num_classes: int):
        super().__init__(cfg, num_classes)
        self.backbone = resnet(cfg.backbone, cfg.last_stride, cfg.pretrained or None)

    def embedding(self, images: torch.Tensor) -> torch.Tensor:
        """The 2048-d (ResNet-50) global average pooled feature."""
        return self.backbone(images).mean(dim=(2, 3))

    def forward(self, batch: dict) -> dict[str, torch.Tensor]:
        return {"embedding": self.embedding(batch["images"])}

    def losses(self, out: dict[str, torch.Tensor], batch: dict) -> dict[str, torch.Tensor]:
        cfg = self.cfg
        emb = out["embedding"].float()
        if cfg.sn_normalize:
            emb = F.normalize(emb, dim=1)
        dist = pairwise_euclidean(emb, squared=cfg.sn_squared)
        spr, sqz = support_neighbor_terms(dist, batch["labels"], cfg.sn_k, cfg.sn_sigma, cfg.sn_no_positive)
        return {"separation": spr, "squeeze": cfg.sn_lambda * sqz}

    def extract(self, batch: dict) -> torch.Tensor:
        """L2-normalised embeddings (Sec. 3.3, testing)."""
        return F.normalize(self.embedding(batch["images"]).float(), dim=1)

"""Losses shared by every method: written once here, imported by the methods.

* :func:`cross_entropy_label_smooth` -- identity (ID) loss with label smoothing
  (Szegedy et al., "Rethinking the Inception Architecture", CVPR 2016, Sec. 7;
  used as "LS" in Luo et al., "Bag of Tricks", Eq. 2-3): the target is
  ``q_i = 1 - eps + eps/N`` for the true class and ``eps/N`` otherwise.
* :func:`batch_hard_triplet` -- the batch-hard triplet loss (Hermans et al.,
  "In Defense of the Triplet Loss", 2017, Eq. 5; "TriHard" in AlignedReID,
  Sec. 3.2): for every anchor the farthest positive and the nearest negative of
  the P x K batch, ``[m + d(a, p*) - d(a, n*)]_+`` (or the soft margin
  ``log(1 + exp(d(a, p*) - d(a, n*)))``).
* :func:`hard_example_mining` -- the mining step on its own, with the chosen
  indices, so that a method can evaluate another distance on the same pairs
  (AlignedReID's local distance on the global branch's hard pairs).
* :func:`pairwise_euclidean` / :func:`pairwise_cosine_distance` -- distance
  matrices; the euclidean square root is safe at zero (finite gradients).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

SQRT_EPS = 1e-12


def cross_entropy_label_smooth(logits: torch.Tensor, labels: torch.Tensor, epsilon: float = 0.1) -> torch.Tensor:
    """Mean over the batch of ``-sum_i q_i log p_i`` with smoothed targets
    ``q = (1 - epsilon) * onehot(label) + epsilon / num_classes``.

    ``epsilon = 0`` is the plain cross-entropy. Computed in float32 whatever the
    logits' dtype (AMP)."""
    log_probs = F.log_softmax(logits.float(), dim=1)
    nll = -log_probs.gather(1, labels.long().unsqueeze(1)).squeeze(1)
    uniform = -log_probs.mean(dim=1)
    return ((1.0 - epsilon) * nll + epsilon * uniform).mean()


def pairwise_euclidean(x: torch.Tensor, y: torch.Tensor | None = None, squared: bool = False) -> torch.Tensor:
    """(M, N) euclidean distances between the rows of ``x`` (M, D) and ``y`` (N, D).

    Uses ``|x|^2 + |y|^2 - 2 x.y`` clamped at 0. The square root is taken of
    ``max(d^2, 1e-12)`` so its gradient stays finite (zero) for coincident
    points, whose distance is returned as exactly 0; when ``y`` is omitted
    the diagonal is exactly zero."""
    x = x.float()
    same = y is None
    y = x if same else y.float()
    d2 = x.pow(2).sum(1, keepdim=True) + y.pow(2).sum(1).unsqueeze(0) - 2.0 * (x @ y.t())
    d2 = d2.clamp(min=0.0)
    if same:
        d2 = d2 * (1.0 - torch.eye(d2.shape[0], dtype=d2.dtype, device=d2.device))
    if squared:
        return d2
    dist = d2.clamp(min=SQRT_EPS).sqrt()
    return torch.where(d2 > SQRT_EPS, dist, torch.zeros_like(dist))


def pairwise_cosine_distance(x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
    """(M, N) cosine distances ``1 - cos(x_i, y_j)`` in [0, 2]."""
    xn = F.normalize(x.float(), dim=1)
    yn = xn if y is None else F.normalize(y.float(), dim=1)
    return 1.0 - xn @ yn.t()


def pairwise_distance(x: torch.Tensor, y: torch.Tensor | None = None, metric: str = "euclidean") -> torch.Tensor:
    """Dispatch on ``metric`` (``"euclidean"`` or ``"cosine"``)."""
    if metric == "euclidean":
        return pairwise_euclidean(x, y)
    if metric == "cosine":
        return pairwise_cosine_distance(x, y)
    raise ValueError(f"unknown metric {metric!r}; expected 'euclidean' or 'cosine'")


def hard_example_mining(
    dist: torch.Tensor, labels: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Batch-hard mining on a square (B, B) distance matrix.

    For each anchor ``a``: the hardest positive ``p* = argmax_{l(p)=l(a)} d(a,p)``
    (the anchor itself counts, at distance 0, so an identity seen once gives
    ``d(a,p*) = 0``) and the hardest negative ``n* = argmin_{l(n)!=l(a)} d(a,n)``.
    Any number of images per identity is allowed. An anchor without negatives
    gets ``dist_an = +inf`` (its triplet term is then 0).

    Returns ``(dist_ap, dist_an, ap_index, an_index)``, each of shape (B,);
    the distances keep their gradient.
    """
    if dist.dim() != 2 or dist.shape[0] != dist.shape[1]:
        raise ValueError(f"dist must be square (B, B), got {tuple(dist.shape)}")
    same = labels.view(-1, 1) == labels.view(1, -1)
    neg_inf = torch.full_like(dist, float("-inf"))
    pos_inf = torch.full_like(dist, float("inf"))
    dist_ap, ap_index = torch.where(same, dist, neg_inf).max(dim=1)
    dist_an, an_index = torch.where(same, pos_inf, dist).min(dim=1)
    return dist_ap, dist_an, ap_index, an_index


def batch_hard_triplet(
    features: torch.Tensor,
    labels: torch.Tensor,
    margin: float = 0.3,
    metric: str = "euclidean",
    soft_margin: bool = False,
) -> torch.Tensor:
    """Batch-hard triplet loss, averaged over the B anchors.

    ``margin`` is used unless ``soft_margin`` is set (then the softplus form of
    Hermans et al., Sec. 2, which has no margin). ``metric`` is
    ``"euclidean"`` (Hermans; Bag of Tricks) or ``"cosine"``."""
    dist = pairwise_distance(features, metric=metric)
    dist_ap, dist_an, _, _ = hard_example_mining(dist, labels)
    if soft_margin:
        return F.softplus(dist_ap - dist_an).mean()
    return F.relu(dist_ap - dist_an + margin).mean()

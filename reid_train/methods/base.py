"""The :class:`Method` base class: what the engine calls, with sensible defaults.

A method subclasses :class:`Method`, is decorated with ``@register("name")``
(:mod:`reid_train.methods`) and implements ``forward``, ``losses`` and
``extract``. Optimiser, parameter groups, learning-rate schedule, test-time
flip and ``--init`` loading have defaults here that a method overrides only
when its paper differs.
"""
from __future__ import annotations

import logging
from typing import Any

import torch
from torch import nn

from ..config import TrainConfig

log = logging.getLogger(__name__)

Batch = dict[str, Any]


def lr_factor(step: int, cfg: TrainConfig, steps_per_epoch: int) -> float:
    """Learning-rate multiplier at iteration ``step`` (see :class:`TrainConfig`).

    The epoch is fractional (``step / steps_per_epoch``), so warm-up and the
    exponential decay are smooth per iteration; step decays happen exactly at
    the first iteration of a milestone epoch."""
    epoch = step / max(1, steps_per_epoch)
    factor = 1.0
    if cfg.warmup_epochs > 0 and epoch < cfg.warmup_epochs:
        factor = cfg.warmup_factor + (1.0 - cfg.warmup_factor) * epoch / cfg.warmup_epochs
    if cfg.schedule == "step":
        factor *= cfg.gamma ** sum(1 for m in cfg.milestones if epoch >= m)
    elif cfg.schedule == "exp" and epoch > cfg.exp_decay_start:
        span = max(1e-12, cfg.epochs - cfg.exp_decay_start)
        factor *= cfg.gamma ** (min(epoch - cfg.exp_decay_start, span) / span)
    return factor


class Method(nn.Module):
    """Base class of every re-ID method.

    Constructed as ``MethodClass(cfg, num_classes)`` where ``cfg`` is an
    instance of ``MethodClass.Config`` and ``num_classes`` the number of
    training identities. See :mod:`reid_train.methods` for the batch keys.
    """

    Config: type = TrainConfig
    requires: tuple[str, ...] = ()
    method_name: str = "?"

    def __init__(self, cfg: TrainConfig, num_classes: int):
        super().__init__()
        self.cfg = cfg
        self.num_classes = int(num_classes)

    # --- the three things every method implements -------------------------
    def forward(self, batch: Batch) -> dict[str, torch.Tensor]:
        """Training outputs (logits, features, ...) for ``losses``."""
        raise NotImplementedError

    def losses(self, out: dict[str, torch.Tensor], batch: Batch) -> dict[str, torch.Tensor]:
        """Named, already weighted loss terms; the engine minimises their sum."""
        raise NotImplementedError

    def extract(self, batch: Batch) -> torch.Tensor:
        """(B, D) evaluation features (called in eval mode under no_grad)."""
        raise NotImplementedError

    # --- defaults ------------------------------------------------------------
    @property
    def eval_requires(self) -> tuple[str, ...]:
        """Store groups :meth:`extract` reads (evaluation asks only for these):
        by default the training groups ``requires``; a method whose test
        features come from the image alone returns ``()``."""
        return self.requires

    @property
    def distance(self) -> str:
        """Evaluation distance, ``"euclidean"`` or ``"cosine"`` (the config's ``metric``)."""
        return self.cfg.metric

    def eval_distance(self, qf: torch.Tensor, gf: torch.Tensor) -> Any:
        """Optional hook: query x gallery distances of ``extract`` features as a
        (Q, G) matrix or a ``(start, stop) -> rows`` callable, for a method whose
        test distance is not a plain metric on the features (AlignedReID's
        global + local distance). ``None`` (the default): ``distance`` is used."""
        return None

    def eval_rerank_settings(self) -> dict | None:
        """Re-ranking the engine's own evaluation applies after the plain
        distance, as ``dict(k1=, k2=, lambda_value=)``; ``None`` (the default):
        none (AlignedReID's ``eval_rerank`` sets it)."""
        return None

    def rerank_distance(self, qf: torch.Tensor, gf: torch.Tensor, k1: int = 20, k2: int = 6,
                        lambda_value: float = 0.3, metric: str | None = None) -> Any:
        """k-reciprocal re-ranked (Q, G) distances that start from **the distance the
        plain evaluation uses**: the :meth:`eval_distance` hook (on query x gallery,
        query x query and gallery x gallery) when the method has one, else
        ``metric`` (default :attr:`distance`) on the features. A given ``metric``
        replaces the method's distance, as it does for the plain evaluation."""
        from ..evaluation.rerank import k_reciprocal_rerank, k_reciprocal_rerank_dist

        if metric is None:
            q_g = self.eval_distance(qf, gf)
            if q_g is not None:
                def full(d: Any, n: int) -> Any:
                    d = d(0, n) if callable(d) else d
                    return d.detach().float().cpu().numpy() if isinstance(d, torch.Tensor) else d

                return k_reciprocal_rerank_dist(full(q_g, len(qf)), full(self.eval_distance(qf, qf), len(qf)),
                                                full(self.eval_distance(gf, gf), len(gf)), k1, k2, lambda_value)
        return k_reciprocal_rerank(qf, gf, k1, k2, lambda_value, metric=metric or self.distance)

    def flip_batch(self, batch: Batch) -> Batch:
        """The batch mirrored left-right, for test-time flip averaging.

        Flips ``images`` and ``mpn_mask`` along their width; methods whose
        inputs are not simply mirrored (DSAP-images: left and right body parts
        swap) override this."""
        out = dict(batch)
        for key in ("images", "mpn_mask"):
            if key in out:
                out[key] = out[key].flip(-1)
        return out

    def backbone_parameters(self) -> list[nn.Parameter]:
        """Parameters scaled by ``cfg.backbone_lr_mult`` (``self.backbone`` if any)."""
        backbone = getattr(self, "backbone", None)
        return [p for p in backbone.parameters() if p.requires_grad] if isinstance(backbone, nn.Module) else []

    def param_groups(self, cfg: TrainConfig) -> list[dict[str, Any]]:
        """Optimiser parameter groups: the backbone at ``lr * backbone_lr_mult``,
        everything else at ``lr``; ``weight_decay`` everywhere."""
        backbone = self.backbone_parameters()
        ids = {id(p) for p in backbone}
        rest = [p for p in self.parameters() if p.requires_grad and id(p) not in ids]
        groups = []
        if backbone:
            groups.append({"params": backbone, "lr": cfg.lr * cfg.backbone_lr_mult, "name": "backbone"})
        if rest:
            groups.append({"params": rest, "lr": cfg.lr, "name": "head"})
        for g in groups:
            g["weight_decay"] = cfg.weight_decay
        return groups

    def build_optimizer(self, cfg: TrainConfig) -> torch.optim.Optimizer:
        """Adam (betas 0.9, 0.999) or SGD (momentum, optional Nesterov) over
        :meth:`param_groups`."""
        groups = self.param_groups(cfg)
        if cfg.optimizer == "adam":
            return torch.optim.Adam(groups, lr=cfg.lr, weight_decay=cfg.weight_decay, foreach=True)
        if cfg.optimizer == "sgd":
            return torch.optim.SGD(
                groups, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay, nesterov=cfg.nesterov,
                foreach=True,
            )
        raise ValueError(f"unknown optimizer {cfg.optimizer!r}")

    def build_scheduler(
        self, optimizer: torch.optim.Optimizer, cfg: TrainConfig, steps_per_epoch: int
    ) -> torch.optim.lr_scheduler.LRScheduler:
        """Per-iteration ``LambdaLR`` following :func:`lr_factor`.

        The factor is a plain function (a closure), so the scheduler's
        ``state_dict`` holds only numbers (checkpoints load weights-only)."""

        def factor(step: int) -> float:
            return lr_factor(step, cfg, steps_per_epoch)

        return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)

    def load_init(self, state: dict[str, torch.Tensor]) -> tuple[list[str], list[str]]:
        """``--init``: copy every tensor of another run's model whose name and
        shape match (a classifier for another identity count or a new head is
        skipped). Returns ``(not_initialised, skipped)`` key lists."""
        own = self.state_dict()
        usable = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
        skipped = sorted(set(state) - set(usable))
        self.load_state_dict(usable, strict=False)
        missing = sorted(set(own) - set(usable))
        log.info("init: %d tensors copied, %d not initialised, %d skipped", len(usable), len(missing), len(skipped))
        return missing, skipped

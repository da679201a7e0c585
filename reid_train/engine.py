"""The training loop, top to bottom (nanoGPT style).

``train(cfg, out_dir)`` builds the method from the registry, the streaming
loader, optimiser and schedule, then runs ``cfg.epochs`` epochs (or
``cfg.max_steps`` iterations): forward, named losses, backward, step. Around
it: AMP (bf16/fp16 autocast), channels_last, optional ``torch.compile``, DDP
when launched by ``torchrun`` (gloo on CPU, nccl on CUDA), a tqdm bar, a
metrics CSV + TensorBoard, checkpoints at every epoch end (and every
``checkpoint_every`` iterations, and whenever ``checkpoint_minutes`` of wall
time passed since the last one, so a kill loses at most that), evaluation every ``eval_every`` epochs and
at the end, ``metrics.json`` and PNG plots.

Exact resume: the loader's batch at global iteration ``s`` depends only on
``(seed, s, rank)`` (``TrainLoader(..., start_step=s)``), and the checkpoint
holds the model, optimiser, scheduler, grad scaler, the Python/NumPy/torch RNG
states and ``s``. A run stopped after a checkpoint and resumed therefore ends
with bit-identical parameters to an uninterrupted run (on CPU; tested).

Run directory: ``config.yaml``, ``checkpoint.pt``, ``metrics.csv`` (one row
per ``log_every`` iterations: window means of every loss), ``tb/``
(TensorBoard), ``metrics.json``, ``losses.png``, ``cmc.png``, ``eval.png``.
"""
from __future__ import annotations

import dataclasses
import logging
import math
import os
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

import torch
import torch.distributed as torch_dist

from .checkpoint import load_checkpoint, model_state, rng_state, save_checkpoint, seed_everything, set_rng_state
from .config import TrainConfig, save_config
from .methods import get_method
from .methods.base import Method
from .runlog import MetricsLog, plain, write_summary

log = logging.getLogger(__name__)


@dataclass
class Dist:
    """Where this process runs: rank, world size, local rank, device."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def main(self) -> bool:
        return self.rank == 0


@dataclass
class Data:
    """What the loop needs from the data side."""

    train: Iterable[dict]             # infinite or per-epoch stream; len() = iterations per epoch
    num_classes: int
    eval_loader: Callable[[str], Iterable[dict]] | None = None  # split -> batches; None = no evaluation


def pick_device(name: str, local_rank: int = 0) -> torch.device:
    if name == "auto":
        return torch.device(f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", local_rank)
    return device


def setup_distributed(cfg: TrainConfig) -> Dist:
    """Join the process group when started by torchrun (``WORLD_SIZE`` > 1)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local_rank = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    device = pick_device(cfg.device, local_rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if world_size > 1 and not torch_dist.is_initialized():
        torch_dist.init_process_group("nccl" if device.type == "cuda" else "gloo", rank=rank, world_size=world_size)
    return Dist(rank, world_size, local_rank, device)


def set_threads(cfg: TrainConfig, dist: Dist) -> int:
    """CPU intra-op threads: ``cfg.threads``, or the available cores shared
    among the processes of this machine."""
    if dist.device.type != "cpu":
        return torch.get_num_threads()
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", str(dist.world_size)))
    n = cfg.threads or max(1, cores // max(1, local_world))
    torch.set_num_threads(n)
    return n


def store_data(cfg: TrainConfig, requires: tuple[str, ...], dist: Dist, start_step: int) -> Data:
    """The real data: :class:`reid_train.data.TrainLoader` on the training stores
    (``cfg.stores``, several: their union, see :class:`reid_train.data.loader.StoreUnion`)
    and ``EvalLoader`` on ``cfg.store``."""
    from .config import train_stores
    from .data.augment import AugmentConfig
    from .data.loader import TrainLoader

    if not cfg.store:
        raise ValueError("no store given (--store)")
    stores = train_stores(cfg)
    train = TrainLoader(
        stores if len(stores) > 1 else stores[0], cfg.P, cfg.K, size=tuple(cfg.size), requires=requires,
        seed=cfg.seed, workers=cfg.workers, device=dist.device, augment=AugmentConfig(**cfg.augment),
        rank=dist.rank, world_size=dist.world_size, start_step=start_step,
    )
    return Data(train, int(train.num_classes), store_eval_loader(cfg, requires, dist.device))


def store_eval_loader(cfg: TrainConfig, requires: tuple[str, ...], device: torch.device
                      ) -> Callable[[str], Iterable[dict]]:
    """split -> :class:`reid_train.data.EvalLoader` on ``cfg.store`` (unaugmented)."""
    from .data.loader import EvalLoader

    def eval_loader(split: str) -> Iterable[dict]:
        return EvalLoader(cfg.store, split, cfg.eval_batch_size, size=tuple(cfg.size), device=device,
                          requires=requires)

    return eval_loader


def autocast_context(cfg: TrainConfig, device: torch.device):
    if cfg.amp == "none":
        return nullcontext()
    if cfg.amp == "fp16" and device.type != "cuda":
        raise ValueError("amp=fp16 needs CUDA; use amp=bf16 on the CPU")
    return torch.autocast(device.type, dtype=torch.bfloat16 if cfg.amp == "bf16" else torch.float16)


def to_device(batch: dict, device: torch.device, channels_last: bool) -> dict:
    out = {k: v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
    if channels_last and out["images"].dim() == 4:
        out["images"] = out["images"].contiguous(memory_format=torch.channels_last)
    return out


@torch.no_grad()
def extract_features(method: Method, batches: Iterable[dict], cfg: TrainConfig, device: torch.device) -> dict:
    """Features (float32, CPU) + pids/camids of a split; flip-averaged when ``cfg.flip_eval``."""
    from .evaluation.metrics import average_flip

    feats, pids, camids = [], [], []
    with autocast_context(cfg, device):
        for batch in batches:
            batch = to_device(batch, device, cfg.channels_last)
            f = method.extract(batch).float()
            if cfg.flip_eval:
                f = average_flip(f, method.extract(method.flip_batch(batch)).float())
            feats.append(f.cpu())
            pids.append(batch["pids"].cpu())
            camids.append(batch["camids"].cpu())
    return {"features": torch.cat(feats), "pids": torch.cat(pids).numpy(), "camids": torch.cat(camids).numpy()}


def evaluate_method(method: Method, data: Data, cfg: TrainConfig, device: torch.device) -> dict:
    """Query/gallery retrieval metrics of the method's ``extract`` features
    with its ``distance``; the model is left in train mode afterwards."""
    was_training = method.training
    method.eval()
    try:
        q = extract_features(method, data.eval_loader("query"), cfg, device)
        g = extract_features(method, data.eval_loader("gallery"), cfg, device)
    finally:
        method.train(was_training)
    return plain(score_features(method, q, g, rerank=method.eval_rerank_settings()))


def score_features(method: Method, q: dict, g: dict, metric: str | None = None, rerank: dict | None = None) -> dict:
    """CMC/mAP/mINP of extracted query and gallery features: the method's
    ``eval_distance`` hook when it gives one, else ``metric`` (default: the
    method's ``distance``) computed block-wise. ``rerank`` (``dict(k1=, k2=,
    lambda_value=)``): k-reciprocal re-ranking of that same distance
    (:meth:`Method.rerank_distance`)."""
    from .evaluation.metrics import evaluate_features, evaluate_rank

    max_rank = min(50, len(g["pids"]))
    if rerank:
        dist = method.rerank_distance(q["features"], g["features"], metric=metric, **rerank)
        return evaluate_rank(dist, q["pids"], g["pids"], q["camids"], g["camids"], max_rank=max_rank)
    dist = method.eval_distance(q["features"], g["features"]) if metric is None else None
    if dist is not None:
        return evaluate_rank(dist, q["pids"], g["pids"], q["camids"], g["camids"], max_rank=max_rank)
    return evaluate_features(q["features"], g["features"], q["pids"], g["pids"], q["camids"], g["camids"],
                             metric=metric or method.distance, max_rank=max_rank)


@dataclass
class RunResult:
    method: Method                    # the trained model (unwrapped, on its device)
    step: int
    summary: dict


def train(
    cfg: TrainConfig,
    out_dir: str | Path,
    *,
    resume: bool = False,
    init: str | Path | None = None,
    data_factory: Callable[[TrainConfig, tuple[str, ...], Dist, int], Data] = store_data,
) -> RunResult:
    """Train ``cfg.method`` into ``out_dir`` (see the module docstring).

    ``resume`` continues from ``out_dir/checkpoint.pt``; ``init`` copies the
    matching weights of another run (directory or checkpoint file) first.
    ``data_factory(cfg, requires, dist, start_step)`` supplies the loaders
    (tests pass fakes). The torch thread count and a process group this call
    created are restored / destroyed on return."""
    threads, had_group = torch.get_num_threads(), torch_dist.is_initialized()
    try:
        return _train(cfg, Path(out_dir), resume, init, data_factory)
    finally:
        torch.set_num_threads(threads)
        if torch_dist.is_initialized() and not had_group:
            torch_dist.destroy_process_group()


def _train(cfg: TrainConfig, out_dir: Path, resume: bool, init: str | Path | None,
           data_factory: Callable[[TrainConfig, tuple[str, ...], Dist, int], Data]) -> RunResult:
    cfg.validate()
    # --- state to resume from (checked first: --resume without a checkpoint is one clear line)
    ckpt = load_checkpoint(out_dir / "checkpoint.pt") if resume else None
    dist = setup_distributed(cfg)
    autocast_context(cfg, dist.device)  # fails early on fp16 without CUDA
    threads = set_threads(cfg, dist)
    device = dist.device
    if dist.main:
        out_dir.mkdir(parents=True, exist_ok=True)
        save_config(cfg, out_dir / "config.yaml")
    method_cls = get_method(cfg.method)

    # --- data positioned at the checkpoint's step ----------------------------
    step = int(ckpt["step"]) if ckpt else 0
    seed_everything(cfg.seed)
    data = data_factory(cfg, method_cls.requires, dist, step)
    steps_per_epoch = len(data.train) * cfg.epoch_multiplier  # an epoch: epoch_multiplier passes
    total_steps = cfg.epochs * steps_per_epoch
    if cfg.max_steps:
        total_steps = min(total_steps, cfg.max_steps)

    # --- model, optimiser, schedule -----------------------------------------
    # resuming or initialising from a run: its weights replace any ImageNet file
    build_cfg = dataclasses.replace(cfg, pretrained="") if (ckpt or init) else cfg
    method: Method = method_cls(build_cfg, data.num_classes).to(device)
    if init and not resume:
        method.load_init(model_state(init))
    if cfg.channels_last:
        method = method.to(memory_format=torch.channels_last)
    optimizer = method.build_optimizer(cfg)
    scheduler = method.build_scheduler(optimizer, cfg, steps_per_epoch)
    scaler = torch.amp.GradScaler(device.type, enabled=cfg.amp == "fp16")
    eval_history: list[dict] = []
    if ckpt:
        method.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        if ckpt.get("scaler"):
            scaler.load_state_dict(ckpt["scaler"])
        eval_history = list(ckpt.get("eval_history", []))
        set_rng_state(ckpt["rng"][dist.rank] if isinstance(ckpt["rng"], list) else ckpt["rng"])
    if cfg.compile:
        method.compile()
    model = method
    if dist.world_size > 1:
        model = torch.nn.parallel.DistributedDataParallel(
            method, device_ids=[device.index] if device.type == "cuda" else None,
            find_unused_parameters=getattr(method, "find_unused_parameters", False),
        )
    if dist.main:
        n_params = sum(p.numel() for p in method.parameters())
        log.info("%s: %d identities, %.2fM parameters, %d iterations/epoch, %d iterations, %d threads, %s x%d",
                 cfg.method, data.num_classes, n_params / 1e6, steps_per_epoch, total_steps, threads, device,
                 dist.world_size)

    last_checkpoint = [time.monotonic()]

    def checkpoint_due() -> bool:
        """Wall-time checkpoints; under DDP rank 0 decides for every rank (all must join the gather)."""
        due = bool(cfg.checkpoint_minutes) and time.monotonic() - last_checkpoint[0] >= 60 * cfg.checkpoint_minutes
        if dist.world_size > 1:
            flag = torch.tensor([int(due)], device=device if device.type == "cuda" else "cpu")
            torch_dist.broadcast(flag, 0)
            due = bool(flag.item())
        return due

    def checkpoint() -> None:
        """Rank 0 writes; every rank contributes its RNG state (DDP)."""
        last_checkpoint[0] = time.monotonic()
        rngs = [rng_state()]
        if dist.world_size > 1:
            rngs = [None] * dist.world_size
            torch_dist.all_gather_object(rngs, rng_state())
        if dist.main:
            save_checkpoint(out_dir / "checkpoint.pt", {
                "step": step, "epoch": step / steps_per_epoch, "method": cfg.method,
                "num_classes": data.num_classes, "model": method.state_dict(),
                "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                "scaler": scaler.state_dict() if scaler.is_enabled() else {},
                "rng": rngs if dist.world_size > 1 else rngs[0], "eval_history": eval_history,
            })

    def run_eval(epoch: float) -> dict | None:
        res = None
        if dist.main and data.eval_loader is not None:
            res = evaluate_method(method, data, cfg, device)
            res["epoch"], res["step"] = epoch, step
            metrics.scalars("eval", res, step)
            log.info("eval @ epoch %.2f: rank-1 %.2f%%  mAP %.2f%%  mINP %.2f%%", epoch, 100 * res["rank1"],
                     100 * res["mAP"], 100 * res["mINP"])
        if dist.world_size > 1:
            torch_dist.barrier()
        return res

    # --- the loop ------------------------------------------------------------
    metrics = MetricsLog(out_dir, step, enabled=dist.main)
    from tqdm.auto import tqdm

    # a bar on a terminal; elsewhere (logs, pipelines) one log line per epoch
    bar = tqdm(total=total_steps, initial=step, disable=None if dist.main else True, dynamic_ncols=True,
               mininterval=1.0, desc=cfg.method, unit="it")
    last_row: dict = {}
    model.train()
    batches = iter(data.train)
    window: dict[str, torch.Tensor] = {}
    window_n, window_t, t_start, start_step = 0, time.perf_counter(), time.perf_counter(), step
    batch_size = cfg.P * cfg.K
    final_eval = None
    if step >= total_steps and dist.main:
        log.info("run already complete at iteration %d; evaluating only", step)
    if step >= total_steps:
        final_eval = run_eval(step / steps_per_epoch)
    while step < total_steps:
        try:
            batch = next(batches)
        except StopIteration:  # a per-epoch loader: start its next pass
            batches = iter(data.train)
            batch = next(batches)
        batch = to_device(batch, device, cfg.channels_last)
        with autocast_context(cfg, device):
            out = model(batch)
            losses = method.losses(out, batch)
        loss = sum(losses.values())
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        scheduler.step()
        step += 1

        for k, v in losses.items():
            window[k] = window.get(k, 0.0) + v.detach().float()
        window["total"] = window.get("total", 0.0) + loss.detach().float()
        window_n += 1
        if step % cfg.log_every == 0 or step == total_steps:
            means = {k: float(v) / window_n for k, v in window.items()}
            bad = [k for k, v in means.items() if not math.isfinite(v)]
            if bad:
                raise FloatingPointError(f"non-finite losses {bad} at iteration {step}")
            now = time.perf_counter()
            row = {"step": step, "epoch": round(step / steps_per_epoch, 4),
                   "lr": optimizer.param_groups[-1]["lr"], **means,
                   "images_per_s": window_n * batch_size / max(1e-9, now - window_t)}
            metrics.row(row)
            last_row = row
            bar.set_postfix({k: f"{v:.3f}" for k, v in means.items()}, refresh=False)
            window, window_n, window_t = {}, 0, now
        bar.update(1)

        epoch_end = step % steps_per_epoch == 0
        if epoch_end and bar.disable and dist.main and last_row:
            log.info("epoch %d/%d (iteration %d): %s", step // steps_per_epoch, cfg.epochs, step,
                     "  ".join(f"{k} {v:.4g}" for k, v in last_row.items() if k not in ("step", "epoch")))
        if (epoch_end or step == total_steps or (cfg.checkpoint_every and step % cfg.checkpoint_every == 0)
                or checkpoint_due()):
            epoch = step // steps_per_epoch
            if step == total_steps:
                final_eval = run_eval(step / steps_per_epoch)
            elif epoch_end and cfg.eval_every and epoch % cfg.eval_every == 0:
                res = run_eval(float(epoch))
                if res:
                    eval_history.append({k: res[k] for k in ("epoch", "step", "rank1", "mAP", "mINP")})
            if final_eval:
                eval_history.append({k: final_eval[k] for k in ("epoch", "step", "rank1", "mAP", "mINP")})
            checkpoint()
    bar.close()
    metrics.close()

    elapsed = time.perf_counter() - t_start
    summary = {
        "method": cfg.method, "step": step, "epoch": step / steps_per_epoch, "steps_per_epoch": steps_per_epoch,
        "num_classes": data.num_classes, "world_size": dist.world_size, "device": str(device),
        "threads": threads, "train_seconds_this_session": elapsed,
        "images_per_s_this_session": (step - start_step) * batch_size / max(1e-9, elapsed),
        "final_eval": final_eval, "eval_history": eval_history,
    }
    if dist.main:
        write_summary(out_dir, summary)
    if dist.world_size > 1:
        torch_dist.barrier()
    return RunResult(method, step, summary)

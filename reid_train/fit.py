"""Command line: train a re-ID method on a store.

    python -m reid_train.fit --method baseline --store STORE --run runs/bot
    python -m reid_train.fit --method baseline --store STORE --run runs/small \\
        --backbone resnet18 --input-size 128x64 --pk 8 4 --epochs 10 --set last_stride=2
    python -m reid_train.fit --run runs/bot --resume       # continue an interrupted run
    torchrun --nproc_per_node 2 -m reid_train.fit --method baseline --store STORE --run runs/ddp

Configuration precedence: the method's paper settings (its ``Config``) <
``--config FILE`` < the flags below (``--set name=value`` reaches any field).
With ``--resume`` the run folder's ``config.yaml`` is the starting point.

An existing run folder is refused unless ``--resume`` (continue it) or
``--overwrite`` (delete it and start again). Every value is checked before
anything is written; a user error is one ``error:`` line. The run records the
store's absolute path. Next to the resume checkpoint (``checkpoint.pt``: model,
optimiser, RNG states) the run keeps ``model.pt``: the weights only, what
evaluation and extraction load.
"""
from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys
from pathlib import Path

import yaml

from storage.cli import (
    ArgumentParser,
    HelpFormatter,
    absolute_store,
    add_quiet,
    configure_logging,
    existing_file,
    hidden_alias,
    nonnegative_float,
    nonnegative_int,
    positive_int,
    run_cli,
    size_hw,
    store_path,
)

from .config import (TrainConfig, apply_overrides, config_from_dict, load_config, packaged_configs, read_config,
                     to_dict, train_stores)
from .methods import get_method, load_all

log = logging.getLogger("reid_train.fit")
RUN_FILES = ("config.yaml", "checkpoint.pt", "model.pt", "metrics.csv", "metrics.json")
MODEL_FILE = "model.pt"


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(
        prog="python -m reid_train.fit",
        description=__doc__,
        epilog="Method settings: python -m reid_train.fit --method NAME --show-config",
        formatter_class=HelpFormatter,
    )
    p.add_argument("--method", help=f"method to train, one of {sorted(load_all())} "
                   "(default: baseline, or the resumed run's)")
    p.add_argument("--store", type=store_path, action="append",
                   help="store folder or URL written by the pipelines (default: the resumed run's); repeat it to "
                        "train on the union of several stores (identity labels offset per store; evaluation "
                        "during training on the first)")
    p.add_argument("--run", help="run folder: config, checkpoints, metrics, plots (docs/cli.md)")
    hidden_alias(p, "--out", "run")
    p.add_argument("--config", help="YAML file with any subset of the method's config fields, or the name of a "
                   "packaged one with the paper's settings (reid_train/configs: " + ", ".join(packaged_configs()) + ")")
    p.add_argument("--resume", action="store_true",
                   help="continue the run in --run from its checkpoint.pt (bit-exact on CPU)")
    p.add_argument("--overwrite", action="store_true",
                   help="delete an existing run in --run and start again")
    p.add_argument("--resume-or-start", action="store_true", help=argparse.SUPPRESS)  # the demo's re-runs
    p.add_argument("--init", metavar="RUN_DIR",
                   help="initialise the weights from another run (matching names and shapes), "
                        "e.g. MPN from a baseline/IDE model")
    g = p.add_argument_group("common overrides (any config field: --set name=value; "
                             "defaults: the method's, see --show-config)")
    g.add_argument("--backbone", help="resnet18 | resnet34 | resnet50 | resnet101; a _wN suffix "
                   "(e.g. resnet18_w16) narrows the base width from 64 to N")
    g.add_argument("--input-size", dest="size", type=size_hw, metavar="HxW", help="network input size, e.g. 256x128")
    hidden_alias(g, "--size", "size", size_hw)
    g.add_argument("--pk", nargs=2, type=positive_int, metavar=("P", "K"), help="P identities x K images per batch")
    g.add_argument("--epochs", type=positive_int, help="number of epochs")
    g.add_argument("--max-steps", dest="max_steps", type=positive_int,
                   help="stop after this many iterations (the schedule still follows --epochs: a warning says "
                        "when the run ends inside warm-up)")
    g.add_argument("--lr", type=nonnegative_float, help="base learning rate (0 freezes the weights)")
    g.add_argument("--device", help="auto | cpu | cuda | cuda:N")
    g.add_argument("--seed", type=int, help="random seed (sampler, augmentation, initialisation)")
    g.add_argument("--workers", type=nonnegative_int, help="data-loading workers")
    g.add_argument("--pretrained", type=existing_file,
                   help="local torchvision ImageNet state_dict (.pth) for the backbone (none: random weights)")
    g.add_argument("--amp", choices=("none", "bf16", "fp16"), help="mixed precision (fp16: CUDA only)")
    g.add_argument("--compile", action="store_true", default=None, help="torch.compile the model")
    g.add_argument("--set", action="append", metavar="NAME=VALUE", default=[],
                   help="set any config field, value parsed as YAML (repeatable), e.g. --set milestones=[20,40]")
    p.add_argument("--show-config", action="store_true", help="print the resolved config as YAML and exit")
    add_quiet(p, help="no progress bar; only warnings, errors and the final result line")
    return p


def resolve_config(args: argparse.Namespace) -> TrainConfig:
    """Method defaults (or the resumed run's config.yaml) < --config < flags.
    The method is ``--method``, else the one the resumed run / config file names."""
    saved = Path(args.run) / "config.yaml" if args.run else None
    if args.resume and (not saved or not saved.is_file()):
        raise ValueError(f"--resume: {args.run} holds no run (no config.yaml); start one without --resume")
    base = yaml.safe_load(saved.read_text()) if args.resume else {}
    extra = read_config(args.config) if args.config else {}
    method = args.method or extra.get("method") or base.get("method") or "baseline"
    cls = get_method(method).Config
    cfg = config_from_dict(cls, base) if base else cls()
    if args.config:
        cfg = load_config(args.config, cls, cfg)
    values = {"method": method}
    if args.store:
        values["store"] = str(args.store[0])
        values["stores"] = [absolute_store(s) for s in args.store] if len(args.store) > 1 else []
    values.update({k: getattr(args, k) for k in ("pretrained", "amp", "compile") if getattr(args, k) is not None})
    cfg = apply_overrides(config_from_dict(cls, values, cfg), args)
    if cfg.store:
        cfg = config_from_dict(cls, {"store": absolute_store(cfg.store)}, cfg)
    return cfg


def steps_per_epoch(train_labels, P: int, K: int) -> int:
    """Iterations per epoch of :class:`reid_train.data.sampler.PKSampler` for these labels."""
    import numpy as np

    _, counts = np.unique(np.asarray(train_labels), return_counts=True)
    chunks = int(sum(max(1, int(c) // K) for c in counts))
    return max(1, chunks // P)


def check_data(cfg: TrainConfig) -> int:
    """Refuse, before anything is written, what training would fail on later: a
    store without the method's groups, fewer identities than P. Returns the
    iterations per epoch."""
    from storage import open_store

    needs = get_method(cfg.method).requires
    labels, offset = [], 0
    for url in train_stores(cfg):
        store = open_store(url)
        missing = [g for g in needs if not store.has_group(g)]
        if missing:
            build = {"priors/dsap": "build-dsap", "priors/mpn": "build-mpn-priors"}
            how = "; ".join(f"python -m pipelines {build.get(g, 'build-...')} --store {url}" for g in missing)
            raise ValueError(f"{cfg.method} needs {', '.join(missing)} but {url} has none (make it with: {how})")
        index = store.ok_index
        own = index.loc[index["split"] == "train", "label"].to_numpy()
        labels.extend((own + offset).tolist())  # the union's labels (reid_train.data.loader.StoreUnion)
        offset += int(own.max()) + 1 if len(own) else 0
    n_ids = len(set(labels))
    if n_ids < cfg.P:
        where = " + ".join(train_stores(cfg))
        raise ValueError(f"P={cfg.P} identities per batch but {where} has only {n_ids} training identities "
                         f"(lower P with --pk)")
    return steps_per_epoch(labels, cfg.P, cfg.K)


def warn_about(cfg: TrainConfig, per_epoch: int, resume: bool, init: str | None) -> None:
    if not cfg.pretrained and not init and not resume:
        log.warning("no --pretrained file: the backbone starts from random weights (the papers start from "
                    "ImageNet; pass a torchvision state_dict .pth)")
    warmup_steps = cfg.warmup_epochs * per_epoch
    if cfg.max_steps and cfg.max_steps < min(warmup_steps, cfg.epochs * per_epoch):
        log.warning("--max-steps %d ends inside the warm-up (%.1f epochs = %d iterations at %d per epoch): the "
                    "learning rate never reaches --lr; shorten it with --set warmup_epochs=... or --epochs",
                    cfg.max_steps, cfg.warmup_epochs, int(warmup_steps), per_epoch)


def prepare_run_dir(run: Path, resume: bool, overwrite: bool) -> None:
    """Refuse an existing run unless ``resume`` or ``overwrite`` (which deletes it)."""
    if run.exists() and not run.is_dir():
        raise ValueError(f"--run {run} is a file, not a run folder")
    is_run = run.is_dir() and any((run / f).exists() for f in RUN_FILES)
    if resume:
        if not (run / "checkpoint.pt").is_file():
            raise ValueError(f"--resume: {run} has no checkpoint.pt yet (the run stopped before its first "
                             f"checkpoint); start it again with --overwrite")
        return
    if is_run and not overwrite:
        raise ValueError(f"{run} already holds a run; pass --resume to continue it or --overwrite to replace it")
    if run.is_dir() and not is_run and any(run.iterdir()):
        raise ValueError(f"{run} is a non-empty folder that is not a run; choose another --run")
    if is_run:
        shutil.rmtree(run)


def save_model(run: Path, method, cfg: TrainConfig, num_classes: int) -> Path:
    """``model.pt``: the trained weights only (weights_only-loadable), for evaluation and extraction."""
    from .checkpoint import save_checkpoint

    path = run / MODEL_FILE
    save_checkpoint(path, {"method": cfg.method, "num_classes": int(num_classes),
                           "model": {k: v.detach().cpu() for k, v in method.state_dict().items()}})
    return path


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_logging(args.quiet)
    if args.resume and args.overwrite:
        raise ValueError("--resume continues a run, --overwrite deletes it: pass one of them")
    if args.resume_or_start and args.run and (Path(args.run) / "checkpoint.pt").is_file():
        args.resume = True
    elif args.resume_or_start:
        args.overwrite = True
    cfg = resolve_config(args)
    if args.show_config:
        print(yaml.safe_dump(to_dict(cfg), sort_keys=False), end="")
        return 0
    if not args.run:
        raise ValueError("--run RUN_DIR is required (the folder the run is written to)")
    if not cfg.store:
        raise ValueError("no store: pass --store")
    run = Path(args.run)
    per_epoch = check_data(cfg)
    main_rank = int(os.environ.get("RANK", "0")) == 0
    if main_rank:
        prepare_run_dir(run, args.resume, args.overwrite)
        warn_about(cfg, per_epoch, args.resume, args.init)
    from .engine import train

    try:
        res = train(cfg, run, resume=args.resume, init=args.init)
    except BaseException:
        # a run that failed before its first checkpoint leaves nothing behind (no stray config.yaml)
        if main_rank and not args.resume and run.is_dir() and not (run / "checkpoint.pt").exists():
            shutil.rmtree(run, ignore_errors=True)
        raise
    if main_rank:
        save_model(run, res.method, cfg, res.summary["num_classes"])
    final = res.summary.get("final_eval")
    if final:
        print(f"{cfg.method}: rank-1 {100 * final['rank1']:.2f}%  mAP {100 * final['mAP']:.2f}%  "
              f"mINP {100 * final['mINP']:.2f}%  ({res.step} iterations) -> {run}")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))

"""Command line: train a re-ID method on a store.

    python -m reid_train.fit --method baseline --store STORE --out runs/bot
    python -m reid_train.fit --method baseline --store STORE --out runs/small \\
        --backbone resnet18 --size 128x64 --pk 8 4 --epochs 10 --set last_stride=2
    python -m reid_train.fit --out runs/bot --resume        # continue an interrupted run
    torchrun --nproc_per_node 2 -m reid_train.fit --method baseline --store STORE --out runs/ddp

Configuration precedence: the method's paper settings (its ``Config``) <
``--config FILE`` < the flags below (``--set name=value`` reaches any field).
With ``--resume`` the run directory's ``config.yaml`` is the starting point.
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import yaml

from .config import TrainConfig, apply_overrides, config_from_dict, load_config, to_dict
from .methods import get_method, load_all


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m reid_train.fit",
        description=__doc__,
        epilog="Method settings: python -m reid_train.fit --method NAME --show-config",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--method", help=f"method to train, one of {sorted(load_all())} "
                   "(default: baseline, or the resumed run's)")
    p.add_argument("--store", action="append", metavar="STORE",
                   help="store path or URL written by the pipelines (train/query/gallery splits); repeat it to "
                        "train on the union of several stores (identity labels offset per store), evaluation "
                        "then runs on the first (default: the resumed run's)")
    p.add_argument("--out", required=False, help="run directory (config, checkpoint, metrics, plots)")
    p.add_argument("--config", help="YAML file with any subset of the method's config fields")
    p.add_argument("--resume", action="store_true",
                   help="continue the run in --out from its checkpoint.pt (bit-exact on CPU)")
    p.add_argument("--init", metavar="RUN_DIR",
                   help="initialise the weights from another run (matching names and shapes), "
                        "e.g. MPN from a baseline/IDE model")
    g = p.add_argument_group("common overrides (any config field: --set name=value)")
    g.add_argument("--backbone", help="resnet18 | resnet34 | resnet50 | resnet101")
    g.add_argument("--size", metavar="HxW", help="input size, e.g. 256x128")
    g.add_argument("--pk", nargs=2, type=int, metavar=("P", "K"), help="P identities x K images per batch")
    g.add_argument("--epochs", type=int, help="number of epochs")
    g.add_argument("--max-steps", dest="max_steps", type=int,
                   help="stop after this many iterations (schedule still follows --epochs)")
    g.add_argument("--lr", type=float, help="base learning rate")
    g.add_argument("--device", help="auto | cpu | cuda | cuda:N")
    g.add_argument("--seed", type=int, help="random seed (sampler, augmentation, initialisation)")
    g.add_argument("--workers", type=int, help="data-loading workers")
    g.add_argument("--pretrained", help="local torchvision ImageNet state_dict (.pth) for the backbone")
    g.add_argument("--amp", choices=("none", "bf16", "fp16"), help="mixed precision (fp16: CUDA only)")
    g.add_argument("--compile", action="store_true", default=None, help="torch.compile the model")
    g.add_argument("--set", action="append", metavar="NAME=VALUE", default=[],
                   help="set any config field, value parsed as YAML (repeatable), e.g. --set milestones=[20,40]")
    p.add_argument("--show-config", action="store_true", help="print the resolved config as YAML and exit")
    p.add_argument("-q", "--quiet", action="store_true", help="only warnings on the console")
    return p


def resolve_config(args: argparse.Namespace) -> TrainConfig:
    """Method defaults (or the resumed run's config.yaml) < --config < flags.
    The method is ``--method``, else the one the resumed run / config file names."""
    saved = Path(args.out) / "config.yaml" if args.out else None
    if args.resume and (not saved or not saved.is_file()):
        raise SystemExit(f"--resume: no config.yaml in {args.out}")
    base = yaml.safe_load(saved.read_text()) if args.resume else {}
    extra = yaml.safe_load(Path(args.config).read_text()) or {} if args.config else {}
    method = args.method or extra.get("method") or base.get("method") or "baseline"
    cls = get_method(method).Config
    cfg = config_from_dict(cls, base) if base else cls()
    if args.config:
        cfg = load_config(args.config, cls, cfg)
    values = {"method": method}
    if args.store:
        values["store"] = str(args.store[0])
        values["stores"] = [str(s) for s in args.store] if len(args.store) > 1 else []
    values.update({k: getattr(args, k) for k in ("pretrained", "amp", "compile") if getattr(args, k) is not None})
    return apply_overrides(config_from_dict(cls, values, cfg), args)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        cfg = resolve_config(args)
    except ValueError as e:
        raise SystemExit(f"config error: {e}") from None
    if args.show_config:
        print(yaml.safe_dump(to_dict(cfg), sort_keys=False), end="")
        return 0
    if not args.out:
        raise SystemExit("--out RUN_DIR is required")
    from .engine import train

    res = train(cfg, args.out, resume=args.resume, init=args.init)
    final = res.summary.get("final_eval")
    if final:
        print(f"{cfg.method}: rank-1 {100 * final['rank1']:.2f}%  mAP {100 * final['mAP']:.2f}%  "
              f"mINP {100 * final['mINP']:.2f}%  ({res.step} iterations) -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

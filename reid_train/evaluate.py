"""Command line: evaluate a trained run on its store's query/gallery splits.

    python -m reid_train.evaluate --run runs/bot
    python -m reid_train.evaluate --run runs/bot --rerank --flip --metric euclidean

Loads ``RUN_DIR/config.yaml`` and ``RUN_DIR/checkpoint.pt`` (weights-only),
extracts the method's features, and prints rank-1/5/10, mAP and mINP
(Market-1501 protocol, :mod:`reid_train.evaluation.metrics`); with ``--rerank`` also
after k-reciprocal re-ranking (Zhong et al., CVPR 2017; k1=20, k2=6,
lambda=0.3 as in AlignedReID Sec. 4). Results go to ``RUN_DIR/evaluation.json``
and ``RUN_DIR/cmc_evaluation.png``.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import yaml

from .checkpoint import load_checkpoint
from .config import config_from_dict
from .engine import extract_features, pick_device, plain, score_features, store_eval_loader
from .methods import get_method
from .methods.base import Method


def load_run(run_dir: str | Path, device: str = "cpu", **overrides) -> Method:
    """The trained method of a run directory, in eval mode on ``device``.
    ``overrides``: config fields to change (e.g. ``store``, ``metric``)."""
    run_dir = Path(run_dir)
    values = yaml.safe_load((run_dir / "config.yaml").read_text())
    cls = get_method(values.get("method", "baseline"))
    # the weights come from the checkpoint: never re-read an ImageNet file
    cfg = config_from_dict(cls.Config, {**values, **overrides, "pretrained": ""})
    ckpt = load_checkpoint(run_dir / "checkpoint.pt")
    method = cls(cfg, int(ckpt["num_classes"]))
    method.load_state_dict(ckpt["model"])
    return method.to(pick_device(device)).eval()


def summary_line(name: str, res: dict) -> str:
    ranks = "  ".join(f"R{k} {100 * res[f'rank{k}']:5.2f}" for k in (1, 5, 10) if f"rank{k}" in res)
    return f"{name:<10} {ranks}  mAP {100 * res['mAP']:5.2f}  mINP {100 * res['mINP']:5.2f}"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m reid_train.evaluate", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", required=True, help="run directory written by reid_train.fit")
    p.add_argument("--store", help="store to evaluate on (default: the run's training store)")
    p.add_argument("--rerank", action="store_true", help="also report k-reciprocal re-ranking")
    p.add_argument("--k1", type=int, default=20, help="re-ranking k1 (default 20)")
    p.add_argument("--k2", type=int, default=6, help="re-ranking k2 (default 6)")
    p.add_argument("--lambda", dest="lambda_value", type=float, default=0.3,
                   help="re-ranking weight of the original distance (default 0.3)")
    p.add_argument("--metric", choices=("euclidean", "cosine"), help="distance (default: the method's)")
    p.add_argument("--flip", action="store_true", default=None,
                   help="average the features of each image and its mirror (default: the run's flip_eval)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N (default auto)")
    p.add_argument("--batch-size", type=int, default=128, help="evaluation batch size (default 128)")
    p.add_argument("--out", help="JSON file for the results (default RUN_DIR/evaluation.json)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    run = Path(args.run)
    overrides = {"eval_batch_size": args.batch_size}
    if args.store:
        overrides["store"] = str(args.store)
    if args.metric:
        overrides["metric"] = args.metric
    if args.flip is not None:
        overrides["flip_eval"] = args.flip
    device = pick_device(args.device)
    method = load_run(run, str(device), **overrides)
    cfg = method.cfg
    distance = args.metric or method.distance  # --metric wins over a method's fixed distance

    if not cfg.store:
        raise SystemExit("the run records no store: pass --store")
    loader = store_eval_loader(cfg, method.requires, device)
    t0 = time.perf_counter()
    q = extract_features(method, loader("query"), cfg, device)
    g = extract_features(method, loader("gallery"), cfg, device)
    t_extract = time.perf_counter() - t0

    max_rank = min(50, len(g["pids"]))
    results = {"run": str(run), "store": cfg.store, "method": cfg.method, "metric": distance,
               "flip": cfg.flip_eval, "num_query": len(q["pids"]), "num_gallery": len(g["pids"]),
               "feature_dim": int(q["features"].shape[1]), "extract_seconds": t_extract}
    results["plain"] = score_features(method, q, g, metric=args.metric)
    print(summary_line("plain", results["plain"]))
    curves = {"plain": results["plain"]["cmc"]}
    # re-ranking starts from the plain evaluation's distance (e.g. AlignedReID's global + local);
    # a run trained with its method's eval_rerank is re-ranked with those settings unless --rerank
    settings = (dict(k1=args.k1, k2=args.k2, lambda_value=args.lambda_value) if args.rerank
                else method.eval_rerank_settings())
    if settings:
        t0 = time.perf_counter()
        res = score_features(method, q, g, metric=args.metric, rerank=settings)
        res.update(**settings, seconds=time.perf_counter() - t0)
        results["rerank"] = res
        curves["re-ranked"] = res["cmc"]
        print(summary_line("re-ranked", res))
    out = Path(args.out) if args.out else run / "evaluation.json"
    out.write_text(json.dumps(plain(results), indent=2))
    from .plots import plot_cmc

    plot_cmc(curves, run / "cmc_evaluation.png", max_rank=min(20, max_rank), title=f"CMC ({cfg.method})")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

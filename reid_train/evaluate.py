"""Command line: evaluate a trained run on its store's query/gallery splits.

    python -m reid_train.evaluate --run runs/bot
    python -m reid_train.evaluate --run runs/bot --rerank --flip --metric euclidean
    python -m reid_train.evaluate --run runs/dsa --store stores/cuhk03 --out eval/dsa_on_cuhk03
    python -m reid_train.evaluate --run runs/bot --visrank 10       # + RUN_DIR/visrank/grid.png

Loads ``RUN_DIR/config.yaml`` and the weights-only ``RUN_DIR/model.pt`` (or,
for a run still in progress, its ``checkpoint.pt``), extracts the method's
test features (reading only the store groups they need: DSA-reID and MPN test
on the image alone, so another store without priors works), and prints
rank-1/5/10, mAP and mINP
(Market-1501 protocol, :mod:`reid_train.evaluation.metrics`); with ``--rerank`` also
after k-reciprocal re-ranking (Zhong et al., CVPR 2017; k1=20, k2=6,
lambda=0.3 as in AlignedReID Sec. 4). Results go to ``evaluation.json`` and
``cmc_evaluation.png`` in ``--out`` (default: the run folder).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import yaml

from storage.cli import ArgumentParser, HelpFormatter, absolute_store, add_quiet, configure_logging, existing_dir, nonnegative_int, positive_int, run_cli, store_path

from .checkpoint import load_checkpoint
from .config import config_from_dict
from .engine import extract_features, pick_device, plain, score_features, store_eval_loader
from .methods import get_method
from .methods.base import Method


def load_run(run_dir: str | Path, device: str = "cpu", **overrides) -> Method:
    """The trained method of a run directory, in eval mode on ``device``.
    ``overrides``: config fields to change (e.g. ``store``, ``metric``)."""
    run_dir = Path(run_dir)
    if not (run_dir / "config.yaml").is_file():
        raise FileNotFoundError(f"{run_dir} is not a run folder (no config.yaml); train one with reid_train.fit")
    values = yaml.safe_load((run_dir / "config.yaml").read_text())
    cls = get_method(values.get("method", "baseline"))
    # the weights come from the run: never re-read an ImageNet file
    cfg = config_from_dict(cls.Config, {**values, **overrides, "pretrained": ""})
    weights = run_dir / "model.pt" if (run_dir / "model.pt").is_file() else run_dir / "checkpoint.pt"
    if not weights.is_file():
        raise FileNotFoundError(f"{run_dir} has no model.pt or checkpoint.pt yet (training has not checkpointed)")
    ckpt = load_checkpoint(weights)
    method = cls(cfg, int(ckpt["num_classes"]))
    method.load_state_dict(ckpt["model"])
    return method.to(pick_device(device)).eval()


def summary_line(name: str, res: dict) -> str:
    ranks = "  ".join(f"R{k} {100 * res[f'rank{k}']:5.2f}" for k in (1, 5, 10) if f"rank{k}" in res)
    return f"{name:<10} {ranks}  mAP {100 * res['mAP']:5.2f}  mINP {100 * res['mINP']:5.2f}"


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(prog="python -m reid_train.evaluate", description=__doc__, formatter_class=HelpFormatter)
    p.add_argument("--run", required=True, type=existing_dir, help="run folder written by reid_train.fit")
    p.add_argument("--store", type=store_path, help="store to evaluate on (default: the run's training store)")
    p.add_argument("--rerank", action="store_true", help="also report k-reciprocal re-ranking")
    p.add_argument("--k1", type=int, default=20, help="re-ranking k1 (default 20)")
    p.add_argument("--k2", type=int, default=6, help="re-ranking k2 (default 6)")
    p.add_argument("--lambda", dest="lambda_value", type=float, default=0.3,
                   help="re-ranking weight of the original distance (default 0.3)")
    p.add_argument("--metric", choices=("euclidean", "cosine"), help="distance (default: the method's)")
    p.add_argument("--flip", action="store_true", default=None,
                   help="average the features of each image and its mirror (default: the run's flip_eval)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N (default auto)")
    p.add_argument("--batch-size", type=positive_int, default=128, help="evaluation batch size (default 128)")
    add_quiet(p, help="only warnings, errors and the result lines")
    p.add_argument("--out", help="folder for evaluation.json and cmc_evaluation.png (default: the run folder; "
                                 "a path ending in .json names the results file itself)")
    p.add_argument("--visrank", type=nonnegative_int, default=0, metavar="N",
                   help="draw the N worst queries by AP with their ranked gallery into visrank/ under --out (default the run folder) "
                        "(grid.png, one PNG per query, visrank.json; on the plain, not re-ranked, distance; "
                        "default 0 = none)")
    p.add_argument("--visrank-topk", type=positive_int, default=10, metavar="K",
                   help="gallery images shown per query with --visrank (default 10)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_logging(args.quiet)
    run = Path(args.run)
    overrides = {"eval_batch_size": args.batch_size}
    if args.store:
        overrides["store"] = absolute_store(args.store)
    if args.metric:
        overrides["metric"] = args.metric
    if args.flip is not None:
        overrides["flip_eval"] = args.flip
    device = pick_device(args.device)
    method = load_run(run, str(device), **overrides)
    cfg = method.cfg
    distance = args.metric or method.distance  # --metric wins over a method's fixed distance

    if not cfg.store:
        raise ValueError("the run records no store: pass --store")
    from storage import open_store

    store = open_store(cfg.store)
    missing = [g for g in method.eval_requires if not store.has_group(g)]
    if missing:
        raise ValueError(f"{cfg.method}'s test features read {', '.join(missing)}, which {cfg.store} lacks "
                         f"(build it there, or evaluate on another --store)")
    loader = store_eval_loader(cfg, method.eval_requires, device)
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
    if args.out and args.out.endswith(".json"):
        out, folder = Path(args.out), run
    else:
        folder = Path(args.out) if args.out else run
        out = folder / "evaluation.json"
    folder.mkdir(parents=True, exist_ok=True)
    if args.visrank > 0:
        from .evaluation.visrank import visrank_for_run

        vis = visrank_for_run(method, q, g, folder / "visrank", n=args.visrank, topk=args.visrank_topk,
                              metric=args.metric, run=str(run))
        print(f"visrank: {len(vis['queries'])} worst queries -> {folder / 'visrank' / 'grid.png'}")
    out.write_text(json.dumps(plain(results), indent=2))
    from .plots import plot_cmc

    plot_cmc(curves, folder / "cmc_evaluation.png", max_rank=min(20, max_rank), title=f"CMC ({cfg.method})")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))

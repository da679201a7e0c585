"""Learning comparison of the prior-free methods on the synthetic world:
strong baseline (named baseline) vs AlignedReID vs Support-Neighbor loss,
same budget.

1. builds the world and the store with the project's commands
   (``python -m pipelines synth`` then ``python -m pipelines ingest
   --dataset market1501 --size 128x64``), or reuses ``--store``;
2. trains every method from scratch for every seed with the *same budget*:
   same backbone (``--backbone``, last stride 1 for all so a 64 x 32 input
   still has 4 feature rows for AlignedReID's local branch), same input size,
   same P x K batch, same number of iterations (``--epochs`` passes over the
   training images). Each method keeps its own paper settings otherwise
   (head, losses, optimiser, learning rate, augmentation), with its schedule
   compressed to the budget: milestones, warm-up and the start of the
   exponential decay are scaled by ``budget_epochs / paper_epochs``;
3. evaluates rank-1 / mAP / mINP on the store's query x gallery (AlignedReID
   also with the global + local distance through its ``eval_distance`` hook),
   prints a table (mean +- std over seeds), writes ``results.json`` and
   ``prior_free.png`` to ``--out``.

    .venv/bin/python bench/bench_prior_free.py --quick     # 1 seed x 96 it: ~5 min on 2 cores
    .venv/bin/python bench/bench_prior_free.py             # 3 seeds x 360 it: ~30 min on 2 busy cores

The store takes ~1 min to build; ``--store`` reuses one (``--out DIR`` keeps it).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
METHODS = ("baseline", "alignedreid", "sn")


def run(cmd: list[str]) -> None:
    print("$", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True, cwd=ROOT, stdout=subprocess.DEVNULL)


def build_store(out: Path, ids: int, per_id: int, seed: int) -> Path:
    world, store = out / "world", out / "store"
    if not (store / "index.parquet").exists():
        run([sys.executable, "-m", "pipelines", "synth", "--out", str(world), "--ids", str(ids),
             "--images-per-id", str(per_id), "--seed", str(seed), "--quiet"])
        run([sys.executable, "-m", "pipelines", "ingest", "--dataset", "market1501", "--root", str(world),
             "--store", str(store), "--size", "128x64", "--no-progress"])
    return store


def budget_config(method: str, args, store: Path, seed: int):
    """The method's paper config on the common budget (schedule compressed)."""
    from reid_train.config import config_from_dict
    from reid_train.methods import get_method

    cls = get_method(method).Config
    paper = cls()
    f = args.epochs / paper.epochs
    values = dict(method=method, store=str(store), backbone=args.backbone, last_stride=1, size=tuple(args.size),
                  P=args.P, K=args.K, epochs=args.epochs, seed=seed, device="cpu", workers=0,
                  threads=args.threads, log_every=10, eval_batch_size=64)
    values["milestones"] = tuple(max(1, round(m * f)) for m in paper.milestones)
    values["warmup_epochs"] = paper.warmup_epochs * f
    values["exp_decay_start"] = paper.exp_decay_start * f
    return config_from_dict(cls, values)


def global_local_eval(method, store: Path, cfg) -> dict:
    """AlignedReID's option: global + local distance, via its eval_distance hook."""
    import torch

    from reid_train.data.loader import EvalLoader
    from reid_train.engine import extract_features, plain
    from reid_train.evaluation.metrics import evaluate_rank

    method.cfg = dataclasses.replace(method.cfg, eval_local=True)
    method.eval()
    dev = torch.device("cpu")
    q, g = (extract_features(method, EvalLoader(str(store), s, 64, size=tuple(cfg.size), device=dev), cfg, dev)
            for s in ("query", "gallery"))
    res = evaluate_rank(method.eval_distance(q["features"], g["features"]), q["pids"], g["pids"], q["camids"],
                        g["camids"], max_rank=20)
    return {k: plain(res[k]) for k in ("rank1", "mAP", "mINP")}


def plot(results: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [m for m in METHODS if any(r["method"] == m for r in results)]
    fig, axes = plt.subplots(1, 2, figsize=(8, 3.2))
    for ax, key in zip(axes, ("rank1", "mAP")):
        for i, m in enumerate(names):
            vals = [100 * r[key] for r in results if r["method"] == m]
            ax.bar(i, np.mean(vals), color="C%d" % i, alpha=0.6)
            ax.plot([i] * len(vals), vals, "k.", ms=8)
        ax.set_xticks(range(len(names)), names)
        ax.set_ylabel(f"{key} (%)")
        ax.set_title(key)
    fig.suptitle("synthetic world, same budget (dots: seeds)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="1 seed, 8 epochs: a few minutes on 2 cores")
    p.add_argument("--out", help="work directory (world, store, runs, results); default: a temporary one")
    p.add_argument("--store", help="reuse this store instead of building the world")
    p.add_argument("--ids", type=int, default=100, help="identities of the synthetic world (half train)")
    p.add_argument("--images-per-id", type=int, default=8)
    p.add_argument("--world-seed", type=int, default=0)
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--epochs", type=int, default=30, help="budget: passes over the training images")
    p.add_argument("--backbone", default="resnet18")
    p.add_argument("--size", type=int, nargs=2, default=[64, 32], metavar=("H", "W"))
    p.add_argument("--P", type=int, default=8)
    p.add_argument("--K", type=int, default=4)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)
    if args.quick:
        args.seeds, args.epochs = args.seeds[:1], 8
    logging.basicConfig(level=logging.WARNING)
    out = Path(args.out or tempfile.mkdtemp(prefix="bench_prior_free_"))
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    store = Path(args.store) if args.store else build_store(out, args.ids, args.images_per_id, args.world_seed)
    t_store = time.perf_counter() - t0

    from reid_train.engine import train

    results = []
    for method in args.methods:
        for seed in args.seeds:
            cfg = budget_config(method, args, store, seed)
            t = time.perf_counter()
            res = train(cfg, out / "runs" / f"{method}_s{seed}")
            final = res.summary["final_eval"]
            row = {"method": method, "seed": seed, "steps": res.step, "seconds": time.perf_counter() - t,
                   **{k: final[k] for k in ("rank1", "mAP", "mINP")}}
            if method == "alignedreid":
                row["global_local"] = global_local_eval(res.method, store, cfg)
            results.append(row)
            print(f"{method:12s} seed {seed}: rank-1 {100 * row['rank1']:5.1f}%  mAP {100 * row['mAP']:5.1f}%  "
                  f"({row['steps']} it, {row['seconds']:.0f} s)", flush=True)

    print(f"\nsynthetic world {args.ids} ids x {args.images_per_id} images (store {t_store:.0f} s); "
          f"{args.backbone}, {args.size[0]}x{args.size[1]}, P x K = {args.P} x {args.K}, {args.epochs} epochs "
          f"= {results[0]['steps']} iterations each, seeds {args.seeds}")
    print(f"{'method':24s} {'rank-1 %':>14s} {'mAP %':>14s} {'mINP %':>14s} {'s/run':>7s}")
    rows = [(m, [r for r in results if r["method"] == m]) for m in args.methods]
    if any(r["method"] == "alignedreid" for r in results):
        rows.append(("alignedreid global+local", [{**r, **r["global_local"]} for r in results
                                                  if r["method"] == "alignedreid"]))
    for name, rs in rows:
        cells = [f"{100 * np.mean([r[k] for r in rs]):6.1f} +- {100 * np.std([r[k] for r in rs]):4.1f}"
                 for k in ("rank1", "mAP", "mINP")]
        print(f"{name:24s} {cells[0]:>14s} {cells[1]:>14s} {cells[2]:>14s} {np.mean([r['seconds'] for r in rs]):7.0f}")
    (out / "results.json").write_text(json.dumps({"args": vars(args), "results": results}, indent=2))
    plot(results, out / "prior_free.png")
    print(f"\n{out / 'results.json'}, {out / 'prior_free.png'}  (total {time.perf_counter() - t0:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Learning comparison on the synthetic world: do the priors help?

DSA-reID (CVPR 2019, Table 3) and MPN (TPAMI 2020, Tables 1-2) claim that
their prior-guided training beats the same network trained without the prior.
This script measures that claim on the project's synthetic world, end to end
through the project's own commands:

1. ``python -m pipelines synth`` (a world of ``--ids`` identities),
   ``ingest`` (128x64), ``build-dsap --estimator oracle`` (S = 32; 16 in ``--quick``),
   ``build-mpn-priors --parsing oracle --segmentation oracle`` (for the
   training size at stride 16);
2. ``python -m reid_train.fit`` for every variant and seed, all with ResNet-18
   (last stride 1), the same input size, P x K, number of iterations and seeds:

   ===============  =====================================================
   ``baseline``     BoT strong baseline (the reference)
   ``mpn``          MPN (MT + AT with the coarse prior, PSA, L_CF, CA)
   ``mpn_mt_only``  MPN "MT Only" (Table 1: no ATs, no prior)
   ``dsa``          DSA-reID, evaluated on the MF-Stream (its deployed model)
   ``dsa_mf_only``  DSA "Baseline (Two branches)" (Table 3: no DSAG-Stream)
   ===============  =====================================================

3. a table of rank-1 / mAP (mean and per seed), and the paired differences
   of each prior-guided variant against its prior-free twin. The ``dsa``
   runs are also evaluated on the fused features ``[z_G, z_L]``
   (``dsa_fused_eval``, Table 3 "DSA (Two streams fused)"; same weights).

Every variant keeps its paper's losses, loss weights, margins and
architecture. The optimisation is the same for all (``--schedule common``,
the default): Adam at the baseline's lr 3.5e-4, linear warm-up over the first
10 % of the iterations, x0.1 at 70 %. The papers' optimisers are tuned for
70-320 epochs from ImageNet (MPN: from an IDE model) weights; from scratch
and in a few hundred iterations they mostly measure how fast each schedule
ramps up (DSA-reID warms up for 20 of 320 epochs, MPN uses SGD at 0.01), so
they are only an option: ``--schedule paper`` keeps each paper's optimiser and
compresses its epoch schedule by ``budget_epochs / paper_epochs``. No
ImageNet weights exist offline, so everything trains from scratch, far from
the papers' regime: read the numbers as what this budget measures, not as a
reproduction.

``--quick`` (the default: ~10 min on 2 idle cores) uses a small world, few
iterations, 2 seeds, S = 16 DSAP-images and the DSAG-Stream at 1/4 of Table
1's MB-N widths (its conv5_g, 3x3 convs as wide as ResNet-18's f_G, costs
as much as the whole MF-Stream: Table 1's design, and MPN Table 9's 3x
training time of DSA-reID); ``--full`` uses more identities, iterations and
seeds, S = 32 and Table 1's widths.

    python bench/bench_methods.py [--quick | --full] [--out DIR] [--variants mpn,mpn_mt_only]
"""
from __future__ import annotations

import argparse
import json
import math
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

VARIANTS = {
    "baseline": ("baseline", []),
    "mpn": ("mpn", []),
    "mpn_mt_only": ("mpn", ["tasks=mt_only"]),
    "dsa": ("dsa", []),
    "dsa_mf_only": ("dsa", ["streams=mf_only"]),
}
PAIRS = (("mpn", "mpn_mt_only"), ("dsa", "dsa_mf_only"), ("dsa_fused_eval", "dsa_mf_only"), ("mpn", "baseline"),
         ("dsa", "baseline"))
PRESETS = {
    "quick": dict(ids=60, images_per_id=10, steps=40, seeds="0,1", dsag_widths="8,16,16,32", dsap_size=16),
    "full": dict(ids=100, images_per_id=10, steps=300, seeds="0,1,2", dsag_widths="32,64,64,128", dsap_size=32),
}


def run(cmd: list[str], log: Path) -> float:
    """Run a command, its output into ``log``; raise with the log's tail on failure."""
    t = time.perf_counter()
    with log.open("w") as f:
        proc = subprocess.run(cmd, cwd=ROOT, stdout=f, stderr=subprocess.STDOUT)
    if proc.returncode:
        tail = log.read_text()[-3000:]
        raise SystemExit(f"failed ({proc.returncode}): {' '.join(cmd)}\n--- {log} ---\n{tail}")
    return time.perf_counter() - t


def build_store(args, out: Path) -> Path:
    """Synthetic world -> store with oracle DSAP and MPN priors (skipped when already built)."""
    from storage import open_store

    h, w = args.size
    world = out / f"world_{args.ids}x{args.images_per_id}_seed{args.world_seed}_{h}x{w}"
    store = out / f"store_{args.ids}x{args.images_per_id}_seed{args.world_seed}_{h}x{w}_S{args.dsap_size}"
    py = [sys.executable, "-m", "pipelines"]
    if store.exists():
        s = open_store(store)
        if s.has_group("priors/dsap") and s.has_group("priors/mpn"):
            print(f"re-using {store}")
            return store
    steps = [
        ("synth", py + ["synth", "--out", str(world), "--ids", str(args.ids), "--images-per-id",
                        str(args.images_per_id), "--seed", str(args.world_seed), "--size", f"{h}x{w}", "--quiet"]),
        ("ingest", py + ["ingest", "--dataset", "market1501", "--root", str(world), "--store", str(store),
                         "--size", f"{h}x{w}", "--no-progress"]),
        ("build-dsap", py + ["build-dsap", "--store", str(store), "--estimator", "oracle",
                             "--size", str(args.dsap_size),
                             "--no-progress"]),
        ("build-mpn-priors", py + ["build-mpn-priors", "--store", str(store), "--parsing", "oracle",
                                   "--segmentation", "oracle", "--input-size", f"{h}x{w}", "--stride", "16",
                                   "--no-progress"]),
    ]
    if (world / "groundtruth" / "meta.json").exists():
        steps = steps[1:]
    for name, cmd in steps:
        dt = run(cmd, out / f"{name}.log")
        print(f"  {name:17s} {dt:6.1f} s")
    return store


def steps_per_epoch(store: Path, P: int, K: int) -> int:
    from reid_train.data.sampler import PKSampler
    from storage import open_store

    ix = open_store(store).ok_index
    labels = ix.loc[ix["split"] == "train", "label"].to_numpy()
    return PKSampler(labels, P, K, seed=0).batches_per_epoch


def schedule_flags(method: str, budget_epochs: int, kind: str) -> list[str]:
    """``common``: one Adam schedule for every method; ``paper``: the method's own
    optimiser with its epoch schedule compressed from its epochs to ``budget_epochs``."""
    from reid_train.methods import get_method

    if kind == "common":
        return ["--epochs", str(budget_epochs), "--lr", "3.5e-4", "--set", "optimizer=adam",
                "--set", f"warmup_epochs={0.1 * budget_epochs:.4g}", "--set", "warmup_factor=0.1",
                "--set", f"milestones=[{max(1, round(0.7 * budget_epochs))}]", "--set", "gamma=0.1"]
    cfg = get_method(method).Config()
    scale = budget_epochs / cfg.epochs
    milestones = sorted({max(1, round(m * scale)) for m in cfg.milestones})
    return ["--epochs", str(budget_epochs), "--set", f"warmup_epochs={cfg.warmup_epochs * scale:.4g}",
            "--set", f"milestones=[{','.join(map(str, milestones))}]"]


def fit_command(args, name: str, seed: int, store: Path, run_dir: Path, epochs: int) -> list[str]:
    """``python -m reid_train.fit ...`` for one variant and seed."""
    method, extra = VARIANTS[name]
    P, K = args.pk
    cmd = [sys.executable, "-m", "reid_train.fit", "--method", method, "--store", str(store),
           "--out", str(run_dir), "--backbone", "resnet18", "--size", f"{args.size[0]}x{args.size[1]}",
           "--pk", str(P), str(K), "--max-steps", str(args.steps), "--seed", str(seed), "--device", "cpu",
           "--workers", str(args.workers), "-q", "--set", "last_stride=1",
           "--set", f"threads={args.threads}", "--set", "log_every=10",
           "--set", "epoch_multiplier=1", *schedule_flags(method, epochs, args.schedule)]
    if method == "dsa":
        cmd += ["--set", f"dsag_widths=[{args.dsag_widths}]"]
    for item in extra:
        cmd += ["--set", item]
    return cmd


def evaluate_with(run_dir: Path, device: str = "cpu", **overrides) -> dict:
    """Re-evaluate a finished run with other config fields (e.g. DSA's ``eval_feature="fused"``)."""
    import torch

    from reid_train.engine import extract_features, score_features, store_eval_loader
    from reid_train.evaluate import load_run

    method = load_run(run_dir, device, **overrides)
    dev = torch.device(device)
    loader = store_eval_loader(method.cfg, method.requires, dev)
    q = extract_features(method, loader("query"), method.cfg, dev)
    g = extract_features(method, loader("gallery"), method.cfg, dev)
    return score_features(method, q, g)


def finished(run_dir: Path, cmd: list[str]) -> dict | None:
    """The summary of a completed earlier run of exactly ``cmd`` (re-used unless ``--rerun``)."""
    try:
        same = json.loads((run_dir / "bench_cmd.json").read_text()) == cmd[1:]
        summary = json.loads((run_dir / "metrics.json").read_text())
        seconds = float((run_dir / "bench_seconds.txt").read_text())
    except (OSError, ValueError):
        return None
    return {**summary, "seconds": seconds} if same and summary.get("final_eval") else None


def run_or_reuse(run_dir: Path, cmd: list[str], rerun: bool = False) -> tuple[dict, str]:
    """The summary (``metrics.json`` plus ``seconds``) of ``cmd`` trained into ``run_dir``, and a note:
    an earlier finished run of exactly ``cmd`` is re-used unless ``rerun``; anything else there is
    replaced (fit refuses a folder that is not a finished run of the same settings)."""
    done = finished(run_dir, cmd)
    if done and not rerun:
        return done, ", re-used"
    if run_dir.exists():
        shutil.rmtree(run_dir)
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    dt = run(cmd, run_dir.parent / f"{run_dir.name}.log")
    (run_dir / "bench_cmd.json").write_text(json.dumps(cmd[1:]))
    (run_dir / "bench_seconds.txt").write_text(f"{dt:.1f}")
    return {**json.loads((run_dir / "metrics.json").read_text()), "seconds": dt}, ""


def fmt(values: list[float]) -> str:
    if len(values) > 1:
        return f"{100 * statistics.mean(values):5.1f} ± {100 * statistics.stdev(values):4.1f}"
    return f"{100 * values[0]:5.1f}       "


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    mode = ap.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_const", dest="preset", const="quick", help="~10 min on 2 cores (default)")
    mode.add_argument("--full", action="store_const", dest="preset", const="full", help="hours on 2 cores")
    ap.add_argument("--out", default=str(ROOT / "runs" / "bench_methods"), help="folder for world, store, runs")
    ap.add_argument("--variants", default=",".join(VARIANTS), help=f"comma-separated subset of {list(VARIANTS)}")
    ap.add_argument("--ids", type=int, help="identities in the synthetic world (half train, half test)")
    ap.add_argument("--images-per-id", type=int)
    ap.add_argument("--steps", type=int, help="training iterations per run")
    ap.add_argument("--seeds", help="comma-separated training seeds")
    ap.add_argument("--dsag-widths", help="DSAG-Stream MB-N widths conv1,conv2,conv3_x,conv4_x (Table 1: 32,64,64,128)")
    ap.add_argument("--dsap-size", type=int, help="side S of the DSAP-images (paper: 32)")
    ap.add_argument("--pk", nargs=2, type=int, default=(8, 4), metavar=("P", "K"))
    ap.add_argument("--size", default="128x64", help="training (and store) size HxW")
    ap.add_argument("--schedule", choices=("common", "paper"), default="common",
                    help="common: one Adam schedule for all; paper: each paper's optimiser, schedule compressed")
    ap.add_argument("--world-seed", type=int, default=0)
    ap.add_argument("--rerun", action="store_true", help="train again even where a run with the same command finished")
    ap.add_argument("--threads", type=int, default=0, help="torch threads per run (0: all cores)")
    ap.add_argument("--workers", type=int, default=1, help="loader threads per run")
    args = ap.parse_args(argv)
    preset = PRESETS[args.preset or "quick"]
    for k, v in preset.items():
        if getattr(args, k) is None:
            setattr(args, k, v)
    args.size = tuple(int(v) for v in args.size.lower().split("x"))
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = set(variants) - set(VARIANTS)
    if unknown:
        ap.error(f"unknown variants {sorted(unknown)}")
    seeds = [int(s) for s in args.seeds.split(",")]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    t0 = time.perf_counter()
    print(f"[1/2] synthetic store: {args.ids} identities x {args.images_per_id} images, DSAP S = {args.dsap_size}")
    store = build_store(args, out)
    P, K = args.pk
    spe = steps_per_epoch(store, P, K)
    epochs = max(1, math.ceil(args.steps / spe))
    print(f"[2/2] {len(variants)} variants x {len(seeds)} seeds, {args.steps} iterations each "
          f"({spe} per epoch -> {epochs} epochs, {args.schedule} schedule), resnet18, "
          f"{args.size[0]}x{args.size[1]}, P x K = {P} x {K}, DSAG widths {args.dsag_widths}")
    results: dict[str, dict[int, dict]] = {v: {} for v in variants}
    for seed in seeds:
        for name in variants:
            run_dir = out / "runs" / f"{name}_s{seed}"
            cmd = fit_command(args, name, seed, store, run_dir, epochs)
            summary, note = run_or_reuse(run_dir, cmd, args.rerun)
            final, dt = summary["final_eval"], summary["seconds"]
            results[name][seed] = {"rank1": final["rank1"], "mAP": final["mAP"], "seconds": dt}
            print(f"  {name:12s} seed {seed}: rank-1 {100 * final['rank1']:5.1f}  mAP {100 * final['mAP']:5.1f}"
                  f"  ({dt:5.1f} s{note})", flush=True)
            if name == "dsa":  # Table 3 "DSA (Two streams fused)": the same weights, [z_G, z_L] at test time
                fused = evaluate_with(run_dir, eval_feature="fused")
                results.setdefault("dsa_fused_eval", {})[seed] = {"rank1": fused["rank1"], "mAP": fused["mAP"],
                                                                   "seconds": 0.0}
                print(f"  {'  fused eval':12s} seed {seed}: rank-1 {100 * fused['rank1']:5.1f}  "
                      f"mAP {100 * fused['mAP']:5.1f}", flush=True)

    from storage import open_store

    ix = open_store(store).ok_index
    chance = 1 / ix.loc[ix["split"] == "gallery", "pid"].nunique()
    print(f"\nrank-1 / mAP in %, mean ± std over seeds {seeds} (chance rank-1 ≈ {100 * chance:.1f}%)")
    print(f"{'variant':13s} {'rank-1':>13s} {'mAP':>13s}  {'s/run':>6s}  per seed (rank-1/mAP)")
    for name in results:
        r = results[name]
        per = "  ".join(f"{100 * r[s]['rank1']:.1f}/{100 * r[s]['mAP']:.1f}" for s in seeds)
        print(f"{name:13s} {fmt([r[s]['rank1'] for s in seeds]):>13s} {fmt([r[s]['mAP'] for s in seeds]):>13s}"
              f"  {statistics.mean(r[s]['seconds'] for s in seeds):6.1f}  {per}")
    print("\npaired differences (prior-guided minus reference, same seed), percentage points:")
    for a, b in PAIRS:
        if a in results and b in results:
            d1 = [results[a][s]["rank1"] - results[b][s]["rank1"] for s in seeds]
            dm = [results[a][s]["mAP"] - results[b][s]["mAP"] for s in seeds]
            wins = sum(x > 0 for x in dm)
            print(f"  {a} - {b:12s} rank-1 {fmt(d1)}   mAP {fmt(dm)}   (mAP higher in {wins}/{len(seeds)} seeds)")
    (out / "results.json").write_text(json.dumps({"args": {k: v for k, v in vars(args).items()},
                                                   "results": results}, indent=1, default=str))
    print(f"\ntotal {time.perf_counter() - t0:.0f} s; runs in {out / 'runs'}, numbers in {out / 'results.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

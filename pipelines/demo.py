"""``python -m pipelines demo``: the whole project on the synthetic world, on a CPU.

synthetic world (Market-1501 layout + ground truth) -> ingest -> build-dsap
(oracle IUV) -> build-mpn-priors (oracle parsing + mask) -> verify -> short
training runs of the chosen methods -> a rank-1/mAP table. Every step is the
same code path as on real data; re-running skips what is already done.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

# small, CPU-friendly training settings shared by every demo run
DEMO_SIZE = "128x64"
DEMO_STRIDE = 16
# the papers' schedules span 70-320 epochs; a demo run squeezes warm-up and one decay into its steps
# (one pass per epoch for every method: MPN's paper epoch is five passes, epoch_multiplier)
DEMO_SCHEDULE = ["--epochs", "12", "--set", "warmup_epochs=2", "--set", "milestones=[9]",
                 "--set", "channels_last=true", "--set", "epoch_multiplier=1"]
# the DSAG-Stream at Table 1's widths trains at ~3 images/s on 2 CPU cores: the demo narrows it 4x
DEMO_METHOD_FLAGS = {"dsa": ["--set", "dsag_widths=[8,16,16,32]"]}


def _step(title: str) -> float:
    print(f"\n=== {title}", flush=True)
    return time.time()


def _done(t0: float) -> None:
    print(f"    ({time.time() - t0:.0f} s)", flush=True)


def run_demo(args: argparse.Namespace) -> int:
    out = Path(args.out)
    world, store = out / "world", out / "store"
    out.mkdir(parents=True, exist_ok=True)
    quiet = bool(getattr(args, "quiet", False))

    t = _step(f"1/5 synthetic world: {args.ids} identities x {args.images_per_id} images -> {world}")
    if not (world / "groundtruth" / "meta.json").exists():
        from priors.synthetic import write_dataset

        write_dataset(world, ids=args.ids, images_per_id=args.images_per_id, cameras=6, seed=args.seed,
                      preview=out / "synthetic_preview.png")
    _done(t)

    from pipelines.build_dsap import build_dsap_flow
    from pipelines.build_mpn import build_mpn_flow
    from pipelines.ingest import ingest_flow

    t = _step(f"2/5 ingest -> {store}")
    ingest_flow(dataset="market1501", root=str(world), store=str(store), image_size="256x128", progress=not quiet)
    _done(t)
    t = _step("3/5 build-dsap: oracle IUV -> 24 DSAP-images (S=32)")
    build_dsap_flow(store=str(store), estimator="oracle", progress=not quiet)
    _done(t)
    t = _step(f"4/5 build-mpn-priors: oracle parsing + mask, feature map of a {DEMO_SIZE} input at stride {DEMO_STRIDE}")
    build_mpn_flow(store=str(store), parsing="oracle", segmentation="oracle", input_size=DEMO_SIZE, stride=DEMO_STRIDE,
                   progress=not quiet)
    _done(t)
    from storage import open_store
    from storage.verify import verify_store

    s = open_store(store)
    print(repr(s))
    report = verify_store(s)
    print(f"verify: {'OK' if report.ok else report.problems}")

    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    t = _step(f"5/5 training {', '.join(methods)}: resnet18, {DEMO_SIZE}, 12 short epochs each on the CPU")
    results = {}
    train_ids = s.ok_index.loc[s.ok_index["split"] == "train", "pid"].nunique()
    P = min(8, train_ids)  # 8 identities per batch, fewer in a tiny world
    if P < 2:
        raise ValueError(f"the world has {train_ids} training identities; batch-hard mining needs 2 (raise --ids)")
    for method in methods:
        run = out / "runs" / method
        cmd = [sys.executable, "-m", "reid_train.fit", "--method", method, "--store", str(store), "--run", str(run),
               "--resume-or-start", "--backbone", "resnet18", "--input-size", DEMO_SIZE, "--pk", str(P), "4",
               *(["--max-steps", str(args.steps)] if args.steps else []),
               "--seed", str(args.seed), "--device", "cpu", "--workers", "2", *DEMO_SCHEDULE,
               *DEMO_METHOD_FLAGS.get(method, []), *(["--quiet"] if quiet else [])]
        print("   ", " ".join(cmd[2:]), flush=True)
        if subprocess.run(cmd).returncode:
            raise RuntimeError(f"training {method} failed (its error is above); re-run the demo to resume")
        metrics = json.loads((run / "metrics.json").read_text())
        results[method] = metrics
    _done(t)
    print("\nmethod      rank-1    mAP    mINP")
    for method, m in results.items():
        final = m.get("final_eval", m)
        print(f"{method:10s} {100 * final.get('rank1', float('nan')):6.1f} {100 * final.get('mAP', float('nan')):6.1f} "
              f"{100 * final.get('mINP', float('nan')):6.1f}")
    print(f"\nchance rank-1 is about {100 / max(1, s.ok_index.loc[s.ok_index['split'] == 'gallery', 'pid'].nunique()):.1f}%."
          f" Runs, plots and metrics are in {out / 'runs'}; inspect the priors with "
          f"`python -m storage report --store {store} --out {out / 'report'}`.")
    return 0

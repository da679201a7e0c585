"""MPN priors from the pose backends on real crops: fallback rate and ROI statistics.

Ingests ../shared/data/mini_market1501 (96 crops) and, with --cuhk03, a CSV manifest of
CUHK03 labeled crops, builds priors/mpn with --parsing pose --segmentation pose (mediapipe,
CPU) for a 384x128 input, and prints the fallback rate by reason, the ROI height and the time
per image. Baseline for the ROI: the whole image (24 rows).

Usage: python bench/bench_pose_priors.py [--cuhk03 N] [--workdir DIR]
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
DATA = ROOT.parent / "shared" / "data"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cuhk03", type=int, default=100, help="CUHK03 crops to add (0: none)")
    ap.add_argument("--workdir", help="keep the stores here (default: temp dir, removed)")
    args = ap.parse_args()
    if not DATA.exists():
        sys.exit(f"needs real crops in {DATA}")
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "ERROR")
    from pipelines.build_mpn import build_mpn_flow
    from pipelines.ingest import ingest_flow
    from storage import open_store

    work = Path(args.workdir or tempfile.mkdtemp(prefix="bench_pose_priors_"))
    sets = {"mini_market1501": ("market1501", DATA / "mini_market1501")}
    if args.cuhk03:
        files = sorted((DATA / "cuhk03_labeled_val").glob("*.jpg"))[:: max(1, 938 // args.cuhk03)][: args.cuhk03]
        manifest = work / "cuhk03.csv"
        work.mkdir(parents=True, exist_ok=True)
        manifest.write_text("path,pid,camid,split\n" + "".join(
            f"{f},{int(f.stem[:4])},{1 if int(f.stem[5:]) < 5 else 2},gallery\n" for f in files))
        sets["cuhk03_labeled"] = ("csv", manifest)
    try:
        for name, (dataset, root) in sets.items():
            store = work / name
            # the CUHK03 manifest lists crops of ../shared/data, outside the manifest's own folder
            ingest_flow(dataset=dataset, root=str(root), store=str(store), progress=False,
                        settings={"allow_outside_root": True} if dataset == "csv" else None)
            t = time.perf_counter()
            build_mpn_flow(store=str(store), parsing="pose", segmentation="pose", progress=False)
            dt = time.perf_counter() - t
            stats = open_store(store).group("priors/mpn").table("stats")
            ok = stats[~stats["fallback"]]
            reasons = stats.loc[stats["fallback"], "fallback_reason"].value_counts().to_dict()
            print(f"{name}: {len(stats)} crops, fallback {100 * stats['fallback'].mean():.1f}% {reasons}; "
                  f"ROI height {(ok['lower'] - ok['upper'] + 1).mean():.1f} of 24 rows (whole image: 24); "
                  f"{1000 * dt / len(stats):.0f} ms/image including the flow's start")
    finally:
        if not args.workdir:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

"""How closely oracle MPN ROIs follow the true person extent in the synthetic world.

Renders a world with detection errors (cut heads/feet, shifted and scaled boxes), ingests it,
builds MPN priors from the oracle parsing + mask for a 384x128 input (24x8 feature map) and prints
the mean absolute ROI boundary error in feature rows. Baseline: the fallback ROI (whole image).

Usage: python bench/bench_mpn_roi.py [--ids 40] [--images-per-id 8] [--workdir DIR]
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ids", type=int, default=40, help="identities of the synthetic world")
    ap.add_argument("--images-per-id", type=int, default=8, help="images per identity")
    ap.add_argument("--workdir", help="keep world and store here (default: temp dir, removed)")
    args = ap.parse_args()
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "ERROR")
    from pipelines.build_mpn import build_mpn_flow
    from pipelines.ingest import ingest_flow
    from priors.synthetic import read_image_table, write_dataset
    from priors.synthetic.truth import roi_extent_error
    from storage import open_store

    work = Path(args.workdir or tempfile.mkdtemp(prefix="bench_roi_"))
    try:
        write_dataset(work / "world", ids=args.ids, images_per_id=args.images_per_id, cameras=6, seed=3,
                      progress=False)
        ingest_flow(dataset="market1501", root=str(work / "world"), store=str(work / "store"), progress=False)
        build_mpn_flow(store=str(work / "store"), parsing="oracle", segmentation="oracle", progress=False)
        s = open_store(work / "store")
        stats = s.group("priors/mpn").table("stats").merge(s.ok_index[["image_id", "relpath"]], on="image_id")
        truth = read_image_table(work / "world")
        src_h = json.loads((work / "world/groundtruth/meta.json").read_text())["args"]["size"][0]
        e = roi_extent_error(stats, truth, 24, src_h)
        whole = stats.assign(upper=0, lower=23)
        b = roi_extent_error(whole, truth, 24, src_h)
        print(f"{len(stats)} images, {100 * e['cut_fraction']:.0f}% with head or feet cut by the box, "
              f"fallback rate {100 * e['fallback_rate']:.1f}%")
        print(f"ROI boundary MAE (24 feature rows): upper {e['upper_mae_rows']:.2f}, lower {e['lower_mae_rows']:.2f} "
              f"rows; whole-image baseline: upper {b['upper_mae_rows']:.2f}, lower {b['lower_mae_rows']:.2f} "
              f"(ratio {b['upper_mae_rows'] / max(e['upper_mae_rows'], 1e-9):.1f}x / "
              f"{b['lower_mae_rows'] / max(e['lower_mae_rows'], 1e-9):.1f}x)")
    finally:
        if not args.workdir:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

"""Kill ingest, build-dsap, build-mpn-priors and fit at every write point of a bigger store (issue 15).

The suite's tests/test_faults.py does this on a 12-image world with two real-process kills per
command; this runs a bigger world (``--ids`` x ``--per-id`` images, ``--unit-size``) and kills
every ``--subprocess-every``-th point in a real process (``os._exit`` at the point), the rest
in-process. Prints, per command: write points, points that resumed byte-identical (bit-identical
weights for fit) with ``verify`` OK, and the failures.

    python bench/bench_faults.py [--ids 6] [--per-id 6] [--unit-size 8] [--subprocess-every 5]
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
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--ids", type=int, default=6, help="identities of the synthetic world")
    ap.add_argument("--per-id", type=int, default=6, help="images per identity")
    ap.add_argument("--unit-size", type=int, default=8, help="images per write unit")
    ap.add_argument("--subprocess-every", type=int, default=5, help="every k-th point killed in a real process (0: none)")
    ap.add_argument("--commands", default="ingest,build-dsap,build-mpn,fit", help="comma-separated")
    args = ap.parse_args(argv)
    os.environ["SOURCE_DATE_EPOCH"] = "1700000000"
    os.environ["REID_PRIORS_FAULT_UNIT"] = str(args.unit_size)
    import fault_harness as h
    from priors.synthetic import write_dataset

    with tempfile.TemporaryDirectory(prefix="bench_faults_") as tmp:
        work = Path(tmp)
        world = work / "world"
        write_dataset(world, ids=args.ids, images_per_id=args.per_id, cameras=3, seed=1, size=(64, 32), progress=False)
        store = work / "store"
        with h.serial_flows():
            h.ingest(world, store)
        total = covered = 0
        for name in args.commands.split(","):
            t0 = time.perf_counter()
            if name == "fit":
                res = h.fit_kill_loop(store, work / "fit")
            else:
                res = h.kill_loop(name, world, None if name == "ingest" else store, work / name,
                                  subprocess_every=args.subprocess_every)
            total, covered = total + res["points"], covered + res["covered"]
            print(f"{name:10s} {res['points']:4d} write points, {res['covered']:4d} resumed identical + verify OK, "
                  f"{res.get('subprocess_kills', 0):3d} of them real-process kills, {len(res['bad'])} failures "
                  f"({time.perf_counter() - t0:.0f} s)", flush=True)
            for bad in res["bad"][:10]:
                print("   ", bad)
            shutil.rmtree(work / name, ignore_errors=True)
        print(f"total: {covered} of {total} kill points resumed identical")
        return 0 if covered == total else 1


if __name__ == "__main__":
    raise SystemExit(main())

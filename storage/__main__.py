"""``python -m storage {info,verify,report} STORE``: look into a store from a shell."""
from __future__ import annotations

import argparse
import json
import sys

from .store import StoreError, open_store
from .verify import verify_store


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m storage", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("info", help="counts per split/identity/camera, groups and their provenance")
    p.add_argument("store", help="store directory or fsspec URL")
    p.add_argument("--json", action="store_true", help="print machine-readable JSON instead of text")
    p = sub.add_parser("verify", help="exit non-zero on missing/corrupt units, unreadable tables or count mismatches")
    p.add_argument("store", help="store directory or fsspec URL")
    p.add_argument("--quick", action="store_true", help="check that units and chunks exist, skip data checksums")
    p = sub.add_parser("report", help="static HTML page with figures of the stored priors")
    p.add_argument("store", help="store directory or fsspec URL")
    p.add_argument("--out", required=True, help="output directory for index.html and PNGs")
    p.add_argument("--max-examples", type=int, default=6, help="example images per view")
    p.add_argument("--run", action="append", default=[], metavar="RUN",
                   help="also show this training run's ranked results (python -m reid_train.evaluate "
                        "--run RUN --visrank N); repeatable")
    args = parser.parse_args(argv)

    try:
        store = open_store(args.store)
    except StoreError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.command == "info":
        if args.json:
            print(json.dumps(store.summary(), indent=1, sort_keys=True))
        else:
            print(repr(store))
        return 0
    if args.command == "verify":
        rep = verify_store(store, checksums=not args.quick)
        for problem in rep.problems:
            print(f"PROBLEM {problem}")
        print(f"{'OK' if rep.ok else 'FAILED'}: {rep.checked_units} units checked, {len(rep.problems)} problems")
        return 0 if rep.ok else 1
    if args.command == "report":
        from .report import write_report

        path = write_report(store, args.out, max_examples=args.max_examples, runs=args.run)
        print(f"wrote {path}")
        return 0
    return 2  # pragma: no cover


if __name__ == "__main__":
    sys.exit(main())

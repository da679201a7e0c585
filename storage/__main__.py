"""python -m storage {info,verify,report} --store STORE: look into a store from a shell.

info prints what the store holds, verify checks every unit (exit 1 on a
problem), report writes a static HTML page with figures. The store is
--store STORE (docs/cli.md); `python -m storage info STORE` works too.
"""
from __future__ import annotations

import argparse
import json
import sys

from .cli import ArgumentParser, HelpFormatter, add_quiet, positive_int, run_cli, store_path

COMMANDS = {
    "info": ("counts per split/identity/camera, groups and their provenance",
             "Print the store's summary: images per split, identities and cameras, every group with its producer, "
             "units done and failures (the same text as repr() in Python; --json for a machine-readable form)."),
    "verify": ("exit non-zero on missing/corrupt units, unreadable tables or count mismatches",
               "Check every write unit of every group: completion marker, chunk present, data checksum (skip with "
               "--quick), tables readable, counts consistent. Prints one PROBLEM line each; exit 1 when any."),
    "report": ("static HTML page with figures of the stored priors",
               "Write index.html and PNG figures (dataset statistics, DSAP-images, MPN priors, worst coverage and "
               "fallbacks) into --out."),
}


def _store_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--store", dest="store_opt", metavar="STORE", type=store_path, help="store folder or fsspec URL")
    p.add_argument("store", nargs="?", type=store_path, help=argparse.SUPPRESS)


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(prog="python -m storage", description=__doc__, formatter_class=HelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    subs = {}
    for name, (help_text, description) in COMMANDS.items():
        subs[name] = p = sub.add_parser(name, help=help_text, description=description, formatter_class=HelpFormatter)
        _store_args(p)
    subs["info"].add_argument("--json", action="store_true", help="print machine-readable JSON instead of text")
    subs["verify"].add_argument("--quick", action="store_true",
                                help="check that units and chunks exist, skip data checksums")
    add_quiet(subs["verify"], help="print only the problems and the final line")
    subs["report"].add_argument("--out", required=True, help="folder to write index.html and the PNGs into")
    subs["report"].add_argument("--max-examples", type=positive_int, default=6, help="example images per view")
    subs["report"].add_argument("--run", action="append", default=[], metavar="RUN",
                                help="also show this training run's ranked results (python -m reid_train.evaluate "
                                     "--run RUN --visrank N); repeatable (default: none)")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.store and args.store_opt and args.store != args.store_opt:
        parser.error(f"two stores given ({args.store}, {args.store_opt}); pass one --store")
    url = args.store_opt or args.store
    if not url:
        parser.error("--store STORE is required")
    from .store import open_store

    store = open_store(url)
    if args.command == "info":
        if args.json:
            print(json.dumps(store.summary(), indent=1, sort_keys=True))
        else:
            print(repr(store))
        return 0
    if args.command == "verify":
        from .verify import verify_store

        rep = verify_store(store, checksums=not args.quick)
        for problem in rep.problems:
            print(f"PROBLEM {problem}")
        print(f"{'OK' if rep.ok else 'FAILED'}: {rep.checked_units} units checked, {len(rep.problems)} problems")
        return 0 if rep.ok else 1
    from .report import write_report

    path = write_report(store, args.out, max_examples=args.max_examples, runs=args.run)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))

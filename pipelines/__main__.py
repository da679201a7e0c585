"""python -m pipelines COMMAND: run the project's flows here, without a Prefect server.

Commands: synth (write the synthetic world), ingest (dataset folder -> store),
build-dsap (dense semantics -> IUV -> 24 DSAP-images), build-mpn-priors
(parsing + segmentation -> MPN coarse strip priors) and demo (all of it on the
synthetic world, then short training runs). Each flow is the same Prefect flow
the deployments in prefect.yaml run; here Prefect starts a temporary local API
(or reports to PREFECT_API_URL when set). `python -m pipelines COMMAND --help`
explains every option.
"""
from __future__ import annotations

import argparse
import json
import os
import sys


def _add_scaleout(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("scale-out")
    g.add_argument("--dask-address", default=None, help="address of a running Dask scheduler (tcp://host:8786)")
    g.add_argument("--dask-workers", type=int, default=0,
                   help="start a local Dask cluster with this many worker processes (0: run tasks in threads here)")
    g.add_argument("--units-per-task", type=int, default=4,
                   help="write units (chunks of images) per Prefect task; one task estimates and writes them in order")
    g.add_argument("--overwrite", action="store_true",
                   help="rebuild the groups even when they exist with other settings (default: resume or refuse)")
    g.add_argument("--no-progress", action="store_true", help="no progress bars")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m pipelines", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)

    from priors.synthetic import cli as synth_cli

    p = sub.add_parser("synth", help=synth_cli.HELP, description=synth_cli.DESCRIPTION)
    synth_cli.configure_parser(p)

    p = sub.add_parser("ingest", help="dataset folder -> store (index.parquet + images)")
    from storage.datasets import DATASETS

    p.add_argument("--dataset", required=True, choices=sorted(DATASETS), help="layout of the dataset folder")
    p.add_argument("--root", required=True, help="dataset folder (for csv: the manifest file or its folder)")
    p.add_argument("--store", required=True, help="store directory or fsspec URL to create")
    p.add_argument("--size", default="256x128", help="canonical image size HxW stored (256x128; 384x128 for MPN)")
    p.add_argument("--unit-size", type=int, default=32, help="images per chunk (= per write unit)")
    p.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                   help="adapter option, e.g. variant=labeled for cuhk03-np, include_val=false for msmt17")
    _add_scaleout(p)

    from .build_dsap import configure_parser as dsap_parser
    from .build_mpn import configure_parser as mpn_parser

    p = sub.add_parser("build-dsap", help="dense semantics (IUV) -> 24 DSAP-images per image")
    dsap_parser(p)
    _add_scaleout(p)
    p = sub.add_parser("build-mpn-priors", help="parsing + segmentation -> MPN coarse strip priors")
    mpn_parser(p)
    _add_scaleout(p)

    p = sub.add_parser("demo", help="synthetic world -> store -> priors -> short training runs, all on CPU")
    p.add_argument("--out", default="demo", help="folder for the dataset, the store and the runs")
    p.add_argument("--ids", type=int, default=60, help="identities in the synthetic world")
    p.add_argument("--images-per-id", type=int, default=12, help="images per identity")
    p.add_argument("--steps", type=int, default=0,
                   help="stop each demo run after this many iterations (default 0: the demo's 12 short epochs)")
    p.add_argument("--methods", default="baseline,dsa,mpn", help="comma-separated methods to train")
    p.add_argument("--seed", type=int, default=0, help="seed of the world and of training")
    return parser


def _options(pairs: list[str]) -> dict:
    out = {}
    for pair in pairs:
        key, _, value = pair.partition("=")
        low = value.lower()
        out[key] = True if low == "true" else False if low == "false" else int(value) if value.isdigit() else value
    return out


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "synth":
        from priors.synthetic.cli import run

        return run(args)
    if args.command == "demo":
        from .demo import run_demo

        return run_demo(args)
    if args.command == "ingest":
        from .ingest import ingest_flow

        result = ingest_flow(dask_address=args.dask_address, dask_workers=args.dask_workers, dataset=args.dataset, root=args.root, store=args.store,
                          size=args.size, unit_size=args.unit_size, units_per_task=args.units_per_task,
                          overwrite=args.overwrite, progress=not args.no_progress, options=_options(args.option))
    elif args.command == "build-dsap":
        from .build_dsap import build_dsap_flow, flow_params

        result = build_dsap_flow(**flow_params(args))
    else:
        from .build_mpn import build_mpn_flow, flow_params

        result = build_mpn_flow(**flow_params(args))
    print(json.dumps(result, indent=1, default=str))
    return 1 if result.get("batch_errors") else 0


if __name__ == "__main__":
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    sys.exit(main())

"""python -m pipelines COMMAND: run the project's flows on this machine.

Commands: synth (write the synthetic world), ingest (dataset folder -> store),
build-dsap (dense semantics -> IUV -> 24 DSAP-images), build-mpn-priors
(parsing + segmentation -> MPN coarse strip priors) and demo (all of it on the
synthetic world, then short training runs).

A local run calls the flow functions directly, in a pool of --workers
processes: no Prefect server starts. With PREFECT_API_URL set, the run is a
Prefect flow run of the same function reporting to that server (the flows the
deployments of prefect.yaml run). Flags follow docs/cli.md; every option's
default is in `python -m pipelines COMMAND --help`.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

from storage.cli import (
    ArgumentParser,
    MAX_UNIT_SIZE,
    HelpFormatter,
    add_quiet,
    bounded_int,
    existing_path,
    hidden_alias,
    key_value,
    new_store_path,
    nonnegative_int,
    positive_int,
    run_cli,
    size_hw,
)

COMMANDS = {
    "synth": "render a synthetic re-ID world (Market-1501 layout) with DensePose/parsing/mask ground truth",
    "ingest": "dataset folder -> store (index.parquet + images; bad files become rows with a reason)",
    "build-dsap": "dense semantics (IUV) -> 24 DSAP-images per image (DSA-reID)",
    "build-mpn-priors": "parsing + segmentation -> MPN coarse strip priors (mask, ROI, K strips)",
    "demo": "synthetic world -> store -> priors -> short training runs, all on the CPU",
}
DESCRIPTIONS = {
    "ingest": "List every file of a dataset folder with its adapter, check and hash each image, then write the "
              "images resized to --image-size into a new store, one chunk of --unit-size images per write unit. "
              "Files that do not parse, do not decode or repeat another become index rows with their reason. "
              "Re-running resumes; other settings are refused unless --overwrite.",
    "build-dsap": "Estimate dense semantics (IUV) for every stored image with --estimator (kept in "
                  "estimates/<estimator>), then warp each image into 24 DSAP-images of --dsap-size x --dsap-size "
                  "(priors/dsap, DSA-reID Sec. 3.1). Re-running resumes; a changed size re-warps from the stored IUV "
                  "with --overwrite.",
    "build-mpn-priors": "Combine a parsing source and a segmentation source into MPN's coarse strip priors at the "
                        "feature-map size of --input-size / --stride (priors/mpn, MPN Sec. 3.2). Re-running resumes; "
                        "other settings are refused (naming the one that changed) unless --overwrite.",
    "demo": "Write the synthetic world, ingest it, build the DSAP-images and the MPN priors with the oracle "
            "estimator, verify the store, train each of --methods for 12 short epochs on the CPU and print "
            "rank-1/mAP/mINP. Re-running skips what is done.",
}


def _add_execution(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("execution (docs/cli.md)")
    g.add_argument("--workers", type=nonnegative_int, default=0,
                   help="processes on this machine (0: the usable cores, 1 with a CUDA --device; 1: in this process)")
    g.add_argument("--dask-address", default=None, help="address of a running Dask scheduler (tcp://host:8786)")
    g.add_argument("--dask-workers", type=nonnegative_int, default=0,
                   help="start a local Dask cluster with this many worker processes instead of --workers")
    g.add_argument("--units-per-task", type=positive_int, default=4,
                   help="write units per Prefect task in a Prefect run (a local run reports every unit)")
    g.add_argument("--overwrite", action="store_true",
                   help="rebuild what exists with other settings (default: resume, or refuse naming the setting)")
    add_quiet(g)


def _ingest_parser(p: argparse.ArgumentParser) -> None:
    from storage.datasets import DATASETS

    p.add_argument("--dataset", required=True, choices=sorted(DATASETS), help="layout of the dataset folder")
    p.add_argument("--root", required=True, type=existing_path,
                   help="dataset folder (for csv: the manifest file or its folder)")
    p.add_argument("--store", required=True, type=new_store_path, help="store folder or fsspec URL to create or resume")
    p.add_argument("--image-size", type=size_hw, default="256x128", metavar="HxW",
                   help="canonical size HxW the images are stored at (384x128 for MPN)")
    hidden_alias(p, "--size", "image_size", size_hw)
    p.add_argument("--unit-size", type=bounded_int(1, MAX_UNIT_SIZE), default=32,
                   help="images per chunk (= per write unit)")
    p.add_argument("--set", dest="settings", action="append", type=key_value, default=[],
                   metavar="KEY=VALUE", help="adapter option, value parsed as YAML, e.g. variant=labeled for "
                                             "cuhk03-np, include_val=false for msmt17 (repeatable)")
    hidden_alias(p, "--option", "settings", key_value, action="append")
    p.add_argument("--max-bytes", type=positive_int, default=None, metavar="N",
                   help="files larger than N bytes become too_large rows and are never read "
                        "(default 16777216 = 16 MiB, plenty for re-ID crops)")
    p.add_argument("--allow-outside-root", action="store_true",
                   help="ingest files whose path or link target lies outside --root (default: refused as "
                        "outside_root rows)")


def _ingest_settings(args: argparse.Namespace) -> dict:
    """--set options plus the input limits given as their own flags (absent when left at the defaults,
    so a store made without them resumes unchanged)."""
    settings = dict(args.settings)
    if args.max_bytes is not None:
        settings["max_bytes"] = args.max_bytes
    if args.allow_outside_root:
        settings["allow_outside_root"] = True
    return settings


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser; only ``command``'s options are configured (the others import
    nothing), so a mistyped value fails before any heavy import."""
    parser = ArgumentParser(prog="python -m pipelines", description=__doc__, formatter_class=HelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, help_text in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=DESCRIPTIONS.get(name, help_text),
                           formatter_class=HelpFormatter)
        if name != command:
            continue
        if name == "synth":
            from priors.synthetic import cli as synth_cli

            p.description = synth_cli.DESCRIPTION
            synth_cli.configure_parser(p)
        elif name == "ingest":
            _ingest_parser(p)
            _add_execution(p)
        elif name == "build-dsap":
            from .build_dsap import configure_parser

            configure_parser(p)
            _add_execution(p)
        elif name == "build-mpn-priors":
            from .build_mpn import configure_parser

            configure_parser(p)
            _add_execution(p)
        else:
            p.add_argument("--out", default="demo", help="folder for the dataset, the store and the runs")
            p.add_argument("--ids", type=positive_int, default=60, help="identities in the synthetic world")
            p.add_argument("--images-per-id", type=positive_int, default=12, help="images per identity")
            p.add_argument("--steps", type=nonnegative_int, default=0,
                           help="stop each demo run after this many iterations (0: the demo's 12 short epochs)")
            p.add_argument("--methods", default="baseline,dsa,mpn", help="comma-separated methods to train")
            p.add_argument("--seed", type=int, default=0, help="seed of the world and of training")
            add_quiet(p)
    return parser


def _command_of(argv: list[str]) -> str | None:
    return next((a for a in argv if a in COMMANDS), None)


def _flows() -> dict:
    """The flow functions: plain locally, Prefect flows when a server is configured."""
    if os.environ.get("PREFECT_API_URL"):
        from .flows import FLOWS

        return FLOWS
    from .build_dsap import build_dsap_flow
    from .build_mpn import build_mpn_flow
    from .ingest import ingest_flow

    return {"ingest": ingest_flow, "build-dsap": build_dsap_flow, "build-mpn-priors": build_mpn_flow}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser(_command_of(argv)).parse_args(argv)
    if args.command == "synth":
        from priors.synthetic.cli import run

        return run(args)
    if args.command == "demo":
        from .demo import run_demo

        return run_demo(args)
    if args.command == "ingest":
        params = dict(dataset=args.dataset, root=args.root, store=args.store, image_size=args.image_size,
                      unit_size=args.unit_size, settings=_ingest_settings(args), workers=args.workers,
                      units_per_task=args.units_per_task, overwrite=args.overwrite, progress=not args.quiet,
                      dask_address=args.dask_address, dask_workers=args.dask_workers)
    elif args.command == "build-dsap":
        from .build_dsap import flow_params

        params = flow_params(args)
    else:
        from .build_mpn import flow_params

        params = flow_params(args)
    result = _flows()[args.command](**params)
    if not args.quiet:
        print(json.dumps(result, indent=1, default=str))
    if result.get("batch_errors"):
        print(f"error: {len(result['batch_errors'])} batches failed, first: {result['batch_errors'][0]} "
              f"(re-run the same command to retry them)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    sys.exit(run_cli(main))

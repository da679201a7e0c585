"""``python -m pipelines synth``: write a synthetic Market-1501 world with ground truth.

The lead's ``pipelines/__main__.py`` wires it as::

    from priors.synthetic import cli as synth_cli
    p = subparsers.add_parser("synth", help=synth_cli.HELP, description=synth_cli.DESCRIPTION)
    synth_cli.configure_parser(p)
    ...  # dispatch: return synth_cli.run(args)
"""
from __future__ import annotations

import argparse
import json
import re

HELP = "render a synthetic re-ID world (Market-1501 layout) with DensePose/parsing/mask ground truth"
DESCRIPTION = (
    "Render procedural pedestrians into DIR in the Market-1501 layout and naming "
    "(bounding_box_train/, query/, bounding_box_test/, PPPP_cXsY_FFFFFF_NN.jpg) plus the ground truth "
    "an ideal estimator would give (DIR/groundtruth/: per-image IUV, LIP parsing, mask; meta.json; "
    "attributes.json), read by the 'oracle' estimator backends. Deterministic for a seed."
)


def parse_size(text: str) -> tuple[int, int]:
    """'128x64' -> (128, 64) (height x width)."""
    match = re.fullmatch(r"\s*(\d+)\s*[xX,]\s*(\d+)\s*", text)
    if not match:
        raise argparse.ArgumentTypeError(f"size must look like HxW (e.g. 128x64), got {text!r}")
    h, w = int(match.group(1)), int(match.group(2))
    if h < 16 or w < 8:
        raise argparse.ArgumentTypeError(f"size {h}x{w} is too small (at least 16x8)")
    return h, w


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def configure_parser(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the ``synth`` options to ``p``."""
    p.add_argument("--out", required=True, help="dataset folder to write (created; existing files are overwritten)")
    p.add_argument("--ids", type=_positive, default=100, help="number of identities, split half/half into train and test ids (default 100)")
    p.add_argument("--images-per-id", type=_positive, default=8, help="images per identity (default 8)")
    p.add_argument("--cameras", type=_positive, default=6, help="number of cameras, 1..6 like Market-1501 (default 6)")
    p.add_argument("--seed", type=int, default=0, help="world seed: the same seed and options give the same bytes (default 0)")
    p.add_argument("--size", type=parse_size, default=(128, 64), metavar="HxW", help="image size, height x width (default 128x64)")
    p.add_argument("--distractors", type=int, default=None, help="gallery distractors with pid 0000 (default: 5%% of the test images)")
    p.add_argument("--supersample", type=_positive, default=2, help="internal render scale before area downsampling (default 2)")
    p.add_argument("--workers", type=_positive, default=1, help="render in this many processes (default 1; the files are the same)")
    p.add_argument("--preview", default=None, metavar="PNG",
                   help="also write a contact sheet of a few identities across cameras with their IUV and parsing")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def run(args: argparse.Namespace) -> int:
    """Write the dataset described by ``args``; prints the summary as JSON. Returns the exit code."""
    from .dataset import write_dataset

    summary = write_dataset(
        args.out, args.ids, args.images_per_id, args.cameras, args.seed, size=tuple(args.size),
        preview=args.preview, progress=not args.quiet, distractors=args.distractors, supersample=args.supersample,
        workers=args.workers,
    )
    print(json.dumps(summary, indent=1))
    return 0


def main(argv: list[str] | None = None) -> int:
    """Stand-alone entry point: ``python -m priors.synthetic.cli --out DIR ...``."""
    parser = configure_parser(argparse.ArgumentParser(prog="synth", description=DESCRIPTION))
    return run(parser.parse_args(argv))


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())

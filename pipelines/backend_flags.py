"""The flags build-dsap and build-mpn-priors share, worded once (docs/cli.md).

Each helper adds one flag (or the detectron2 trio) to a command's parser; ``backend`` is the
backend(s) the flag is for, the help's first word. :data:`DEFAULT_DEVICE` is also the default
:func:`storage.cli.refuse_unused_flags` compares with, so ``--device cpu`` with a backend that
runs no model is accepted and ``--device cuda`` is refused.
"""
from __future__ import annotations

import argparse

from storage.cli import MAX_IMAGE_SIDE, bounded_int, device_name, positive_int, store_path

DEFAULT_DEVICE = "cpu"


def add_store(p: argparse.ArgumentParser) -> None:
    p.add_argument("--store", required=True, type=store_path, help="store folder or fsspec URL (made by ingest)")


def add_oracle_root(p: argparse.ArgumentParser) -> None:
    p.add_argument("--root", help="oracle: synthetic dataset folder (default: the folder the store was ingested from)")


def add_device(p: argparse.ArgumentParser, backend: str, runtime: str = "torch") -> None:
    """``--device`` for the backends that run a model (``runtime``: the library that places it)."""
    p.add_argument("--device", type=device_name, default=DEFAULT_DEVICE, help=f"{backend}: {runtime} device (cuda, cuda:1, cpu)")


def add_detectron2_flags(p: argparse.ArgumentParser, backend: str, configs: str, note: str = "") -> None:
    """``--trust-weights``, ``--test-size`` and ``--detections-per-crop`` of a detectron2 backend;
    ``configs``: whose configs the 800 default comes from; ``note``: appended to --test-size's help."""
    p.add_argument("--trust-weights", action="store_true",
                   help=f"{backend}: allow unpickling .pkl weights (it runs code from the file: only for weights you "
                        "made or trust); .pth state dicts load without it")
    p.add_argument("--test-size", type=bounded_int(16, MAX_IMAGE_SIDE), metavar="SHORT_SIDE",
                   help=f"{backend}: the model input's short side a crop is resized to (detectron2's "
                        "INPUT.MIN_SIZE_TEST; the long side stays capped at INPUT.MAX_SIZE_TEST). Default: the "
                        f"config's, 800 in {configs} (a 128x64 crop becomes 1333x667){note}")
    p.add_argument("--detections-per-crop", type=positive_int, metavar="N",
                   help=f"{backend}: detections kept per crop (detectron2's TEST.DETECTIONS_PER_IMAGE). Default: the "
                        "config's, 100")

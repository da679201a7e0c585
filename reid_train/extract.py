"""Feature extraction: a trained run's evaluation features, to a file or a notebook.

    python -m reid_train.extract --run runs/bot                 # -> runs/bot/features/{query,gallery}.parquet
    python -m reid_train.extract --run runs/bot --split train --out feats/
    python -m reid_train.extract --run runs/bot --images crops/ --out feats/   # -> feats/images.parquet

The features are exactly those :mod:`reid_train.evaluate` scores: the same
loader (:class:`reid_train.data.loader.EvalLoader`, image_id order), the same
``Method.extract`` and, when the run evaluates with ``flip_eval`` (or
``--flip``), the same flip averaging (:func:`reid_train.engine.extract_features`).

A folder of images (``--images``, searched recursively) is decoded and resized
the way ingest does (:func:`storage.decode.read_and_check`, then
:func:`storage.decode.resize_rgb` to the run's store image size), then
normalised and resized to the model input like a store image. A file that does
not decode is a row with ``status`` = its reason and NaN features, never
dropped. Market-style names (``0002_c1s1_000451_03.jpg``) give pid and camid;
other names get -1.

Output (one file per split in ``--out``; ``--format auto`` picks by size): a Parquet table with
``image_id, pid, camid, path, status`` and ``feature`` (fixed-size list of
float32), the provenance JSON in the schema metadata; or, above
``ZARR_MIN_BYTES`` of features, a Zarr group ``OUT.zarr`` with ``features``
(N, D) float32 chunked by rows, ``rows.parquet`` beside it and the provenance
in its attributes. :func:`load_features` reads both.

Python::

    from reid_train.extract import extract_split, load_features
    fs = extract_split("runs/bot", "query")       # FeatureSet: features, image_ids, pids, camids, provenance
    fs.frame()                                    # pandas, one row per image
"""
from __future__ import annotations

import argparse
import functools
import json
import logging
import re
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from storage.cli import ArgumentParser, HelpFormatter, configure_logging, positive_int, run_cli

log = logging.getLogger(__name__)

PROVENANCE_KEY = b"reid_train.provenance"
ZARR_MIN_BYTES = 512 << 20           # features above this go to Zarr with --format auto
MARKET_NAME = re.compile(r"^(-?\d+)_c(\d+)")
SPLITS = ("query", "gallery", "train")


@dataclass
class FeatureSet:
    """Features of a set of images with their ids and where they came from."""

    features: np.ndarray              # (N, D) float32; NaN rows for images that failed to decode
    image_ids: np.ndarray             # (N,) int64: store image_id, or the position in the folder
    pids: np.ndarray                  # (N,) int64 (-1 unknown)
    camids: np.ndarray                # (N,) int64 (-1 unknown)
    paths: list[str] = field(default_factory=list)   # store relpath or folder path
    status: list[str] = field(default_factory=list)  # "ok" or a storage.decode reason
    provenance: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.image_ids)

    @property
    def ok(self) -> np.ndarray:
        return np.asarray([s == "ok" for s in self.status], bool) if self.status else np.ones(len(self), bool)

    def frame(self):
        """pandas DataFrame, one row per image, ``feature`` as a float32 array per row."""
        import pandas as pd

        return pd.DataFrame({"image_id": self.image_ids, "pid": self.pids, "camid": self.camids,
                             "path": self.paths or [""] * len(self), "status": self.status or ["ok"] * len(self),
                             "feature": list(self.features)})

    def __repr__(self) -> str:
        src = self.provenance.get("params", {}).get("source", {})
        bad = int((~self.ok).sum())
        return (f"FeatureSet({len(self)} images x {self.features.shape[1]} dims, "
                f"{self.provenance.get('params', {}).get('method', '?')}, source={src}"
                + (f", {bad} failed" if bad else "") + ")")


# ----------------------------------------------------------------------------
# the run
# ----------------------------------------------------------------------------
def _method_and_config(run, device, run_dir, **overrides):
    """``(method, cfg, run_dir)``: ``run`` is a run directory or a method already
    loaded by :func:`reid_train.evaluate.load_run` (then ``run_dir`` names its
    run for the provenance); ``cfg`` is its config with ``overrides``."""
    import dataclasses

    from .evaluate import load_run

    if isinstance(run, torch.nn.Module):
        method = run
    else:
        method, run_dir = load_run(run, str(device)), Path(run)
    return method, dataclasses.replace(method.cfg, **overrides), run_dir


@functools.lru_cache(maxsize=8)
def _weights_sha256(path: str, mtime_ns: int, size: int) -> str:
    """sha256 of a weights file, hashed once per version of the file."""
    from storage.decode import sha256_file

    return sha256_file(path)


def _run_provenance(run_dir, method, cfg, source: dict) -> dict:
    from storage import make_provenance

    from .config import to_dict

    producer: dict = {"name": "reid_train.extract", "method": cfg.method}
    if run_dir is not None:
        run = Path(run_dir)
        producer["run"] = str(run.resolve())
        ckpt = next((p for p in (run / "model.pt", run / "checkpoint.pt") if p.is_file()), None)
        if ckpt is not None:
            st = ckpt.stat()
            producer["weights"] = ckpt.name
            producer["weights_sha256"] = _weights_sha256(str(ckpt), st.st_mtime_ns, st.st_size)
        summary = run / "metrics.json"
        if summary.is_file():
            producer["step"] = json.loads(summary.read_text()).get("step")
    params = {"method": cfg.method, "source": source, "flip": bool(cfg.flip_eval),
              "distance": method.distance, "size": list(cfg.size), "config": to_dict(cfg)}
    return make_provenance(producer, params)


# ----------------------------------------------------------------------------
# a store split
# ----------------------------------------------------------------------------
def extract_split(run, split: str = "query", store: str | None = None, flip: bool | None = None,
                  device: str = "cpu", batch_size: int | None = None, run_dir: str | Path | None = None
                  ) -> FeatureSet:
    """Features of one split (``query``, ``gallery`` or ``train``) of ``store``
    (default: the run's store), as :mod:`reid_train.evaluate` computes them.
    ``run``: a run directory or a method from :func:`reid_train.evaluate.load_run`."""
    from storage import open_store

    from .engine import extract_features, pick_device, store_eval_loader

    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    overrides = {k: v for k, v in (("store", store), ("flip_eval", flip), ("eval_batch_size", batch_size))
                 if v is not None}
    dev = pick_device(device)
    method, cfg, run_dir = _method_and_config(run, dev, run_dir, **overrides)
    if not cfg.store:
        raise ValueError("the run records no store: pass store=")
    # the groups evaluation reads: a method's eval_requires where it has one (test features from the image alone)
    loader = store_eval_loader(cfg, getattr(method, "eval_requires", method.requires), dev)(split)
    out = extract_features(method, _progress(loader, f"extract {split}"), cfg, dev)
    s = open_store(cfg.store)
    relpaths = s.ok_index.set_index("image_id").loc[loader.image_ids, "relpath"].tolist()
    source = {"store": str(s.url), "split": split, "store_created": s.attrs.get("provenance", {}).get("created")}
    return FeatureSet(out["features"].numpy().astype(np.float32, copy=False), loader.image_ids.copy(),
                      np.asarray(out["pids"], np.int64), np.asarray(out["camids"], np.int64), relpaths,
                      ["ok"] * len(relpaths), _run_provenance(run_dir, method, cfg, source))


PROGRESS = {"disable": None}  # tqdm's: None = a bar on a terminal only; main() sets True for --quiet


def _progress(batches, desc: str, total: int | None = None):
    from tqdm.auto import tqdm

    return tqdm(batches, desc=desc, unit="batch", total=total if total is not None else len(batches),
                mininterval=1.0, **PROGRESS)


# ----------------------------------------------------------------------------
# a folder of images
# ----------------------------------------------------------------------------
def list_images(folder: str | Path) -> list[Path]:
    """Image files under ``folder`` (recursive, by extension), sorted."""
    from storage.datasets import IMAGE_SUFFIXES

    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"no folder {folder}")
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


def parse_market_name(name: str) -> tuple[int, int]:
    """``0002_c1s1_000451_03.jpg`` -> (2, 1); (-1, -1) for other names."""
    m = MARKET_NAME.match(name)
    return (int(m.group(1)), int(m.group(2))) if m else (-1, -1)


def _decode(path: Path, size: tuple[int, int]) -> tuple[np.ndarray | None, str]:
    from storage.decode import BadImage, read_and_check, resize_rgb

    try:
        return resize_rgb(read_and_check(path).rgb, size), "ok"
    except BadImage as e:
        return None, e.reason


def folder_batches(paths: list[Path], stored_size: tuple[int, int], model_size: tuple[int, int],
                   batch_size: int, threads: int = 4) -> Iterator[tuple[np.ndarray, list, list, dict | None]]:
    """``(positions, status, keep, batch)`` per ``batch_size`` files: ``positions``
    index ``paths``, ``status`` is "ok" or the decode reason per file, ``keep``
    the indices (into the chunk) of the decoded ones, whose images make
    ``batch``: decoded and resized to ``stored_size`` as ingest stores them,
    then normalised and resized to ``model_size`` as :class:`EvalLoader` does
    (None when no file of the chunk decodes)."""
    from .data.augment import AugmentConfig, augment_batch

    normalise = AugmentConfig().off()
    with ThreadPoolExecutor(threads) as pool:
        for a in range(0, len(paths), batch_size):
            chunk = list(pool.map(lambda p: _decode(p, stored_size), paths[a:a + batch_size]))
            keep = [i for i, (rgb, _) in enumerate(chunk) if rgb is not None]
            positions = np.arange(a, a + len(chunk))
            yield positions, [s for _, s in chunk], keep, (
                augment_batch({"images": torch.from_numpy(np.stack([chunk[i][0] for i in keep]))}, normalise,
                              size=model_size) if keep else None)


def extract_folder(run, folder: str | Path, flip: bool | None = None, device: str = "cpu",
                   batch_size: int | None = None, image_size: tuple[int, int] | None = None,
                   run_dir: str | Path | None = None) -> FeatureSet:
    """Features of every image under ``folder`` (see the module docstring).
    ``image_size``: the stored (H, W) to resize to first (default: the run's
    store's, else the model input size)."""
    from .engine import autocast_context, pick_device, to_device
    from .evaluation.metrics import average_flip

    dev = pick_device(device)
    method, cfg, run_dir = _method_and_config(run, dev, run_dir, **({"flip_eval": flip} if flip is not None else {}))
    paths = list_images(folder)
    if not paths:
        raise ValueError(f"no image files under {folder}")
    stored = tuple(image_size) if image_size else _store_image_size(cfg) or tuple(cfg.size)
    bs = int(batch_size or cfg.eval_batch_size)
    feats, status = None, []
    with torch.no_grad(), autocast_context(cfg, dev):
        for positions, st, keep, batch in _progress(folder_batches(paths, stored, tuple(cfg.size), bs),
                                                    "extract images", total=-(-len(paths) // bs)):
            status += st
            if batch is None:
                continue
            batch = to_device(batch, dev, cfg.channels_last)
            try:
                f = method.extract(batch).float()
                if cfg.flip_eval:
                    f = average_flip(f, method.extract(method.flip_batch(batch)).float())
            except KeyError as e:
                raise ValueError(f"{cfg.method} with this config needs store priors at test time ({e}); "
                                 "extract a store split instead") from None
            if feats is None:
                feats = np.full((len(paths), f.shape[1]), np.nan, np.float32)
            feats[positions[keep]] = f.cpu().numpy()
    if feats is None:
        raise ValueError(f"none of the {len(paths)} files under {folder} decodes")
    bad = [s for s in status if s != "ok"]
    if bad:
        log.warning("%d of %d files did not decode (rows kept with their reason, NaN features)", len(bad), len(paths))
    names = [parse_market_name(p.name) for p in paths]
    source = {"folder": str(Path(folder).resolve()), "images": len(paths), "failed": len(bad),
              "stored_size": list(stored)}
    return FeatureSet(feats, np.arange(len(paths), dtype=np.int64), np.asarray([n[0] for n in names], np.int64),
                      np.asarray([n[1] for n in names], np.int64), [str(p) for p in paths], status,
                      _run_provenance(run_dir, method, cfg, source))


def _store_image_size(cfg) -> tuple[int, int] | None:
    from storage import StoreError, open_store

    if not cfg.store:
        return None
    try:
        return tuple(open_store(cfg.store).image_size)
    except (StoreError, FileNotFoundError, OSError):
        log.warning("run's store %s is not readable: resizing to the model input %s", cfg.store, cfg.size)
        return None


# ----------------------------------------------------------------------------
# files
# ----------------------------------------------------------------------------
def _rows_table(fs: FeatureSet):
    import pyarrow as pa

    return pa.table({"image_id": pa.array(fs.image_ids, pa.int64()), "pid": pa.array(fs.pids, pa.int64()),
                     "camid": pa.array(fs.camids, pa.int64()), "path": pa.array(fs.paths or [""] * len(fs)),
                     "status": pa.array(fs.status or ["ok"] * len(fs))})


def save_features(fs: FeatureSet, out: str | Path, fmt: str = "auto") -> Path:
    """Write ``fs`` as Parquet or Zarr (``fmt``: parquet | zarr | auto); returns the path written."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    out = Path(out)
    if fmt == "auto":
        fmt = "zarr" if fs.features.nbytes > ZARR_MIN_BYTES or out.suffix == ".zarr" else "parquet"
    meta = json.dumps(fs.provenance, sort_keys=True, default=str)
    out.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "parquet":
        out = out if out.suffix == ".parquet" else out.with_name(out.name + ".parquet")
        n, d = fs.features.shape
        feature = pa.FixedSizeListArray.from_arrays(pa.array(fs.features.reshape(-1), pa.float32()), d)
        table = _rows_table(fs).append_column("feature", feature)
        table = table.replace_schema_metadata({PROVENANCE_KEY: meta.encode()})
        pq.write_table(table, out)
        return out
    if fmt != "zarr":
        raise ValueError(f"format must be parquet, zarr or auto, got {fmt!r}")
    import zarr

    out = out if out.suffix == ".zarr" else out.with_name(out.name + ".zarr")
    g = zarr.open_group(str(out), mode="w")
    rows = max(1, (64 << 20) // max(1, fs.features.shape[1] * 4))
    g.create_array("features", data=fs.features, chunks=(min(rows, len(fs)), fs.features.shape[1]))
    g.attrs["provenance"] = json.loads(meta)
    pq.write_table(_rows_table(fs), out / "rows.parquet")
    return out


def load_features(path: str | Path) -> FeatureSet:
    """Read a file written by :func:`save_features` (Parquet or Zarr)."""
    import pyarrow.parquet as pq

    path = Path(path)
    if path.suffix == ".zarr" or (path / "rows.parquet").is_file():
        import zarr

        g = zarr.open_group(str(path), mode="r")
        rows, feats, prov = pq.read_table(path / "rows.parquet"), np.asarray(g["features"][:]), g.attrs["provenance"]
    else:
        table = pq.read_table(path)
        col = table.column("feature").combine_chunks()
        d = col.type.list_size
        feats = col.flatten().to_numpy(zero_copy_only=False).astype(np.float32).reshape(-1, d)
        rows, prov = table.drop_columns(["feature"]), json.loads((table.schema.metadata or {})[PROVENANCE_KEY])
    cols = rows.to_pydict()
    return FeatureSet(feats, np.asarray(cols["image_id"], np.int64), np.asarray(cols["pid"], np.int64),
                      np.asarray(cols["camid"], np.int64), list(cols["path"]), list(cols["status"]), dict(prov))


# ----------------------------------------------------------------------------
# command line
# ----------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(prog="python -m reid_train.extract", description=__doc__, formatter_class=HelpFormatter)
    p.add_argument("--run", required=True, help="run directory written by reid_train.fit")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--split", action="append", choices=SPLITS,
                     help="store split(s) to extract, repeatable (default: query and gallery)")
    src.add_argument("--images", metavar="DIR", help="a folder of images instead of a store split")
    p.add_argument("--store", help="store to read the split(s) from (default: the run's training store)")
    p.add_argument("--out", metavar="DIR", help="folder for SPLIT.parquet / images.parquet (or .zarr) "
                                                "(default RUN/features)")
    p.add_argument("--format", choices=("auto", "parquet", "zarr"), default="auto",
                   help=f"auto: Zarr above {ZARR_MIN_BYTES >> 20} MiB of features, else Parquet (default auto)")
    flip = p.add_mutually_exclusive_group()
    flip.add_argument("--flip", dest="flip", action="store_true", default=None,
                      help="average each image's features with its mirror's (default: the run's flip_eval)")
    flip.add_argument("--no-flip", dest="flip", action="store_false", help="no flip averaging")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N (default auto)")
    p.add_argument("--batch-size", type=positive_int,
                   help="images per forward pass (default: the run's eval_batch_size)")
    p.add_argument("-q", "--quiet", action="store_true",
                   help="no progress bars, only warnings, errors and the summary lines")
    return p


def main(argv: list[str] | None = None) -> int:
    """The command; a user error is one ``error:`` line and exit status 2 (docs/cli.md)."""
    return run_cli(_main, argv)


def _main(argv: list[str] | None) -> int:
    args = build_parser().parse_args(argv)
    configure_logging(args.quiet)
    PROGRESS["disable"] = True if args.quiet else None
    from .engine import pick_device
    from .evaluate import load_run

    run = Path(args.run)
    device = str(pick_device(args.device))
    method = load_run(run, device)  # refuses a folder that is not a run
    jobs: list[tuple[str, FeatureSet]] = []
    if args.images:
        jobs.append(("images", extract_folder(method, args.images, flip=args.flip, device=device,
                                              batch_size=args.batch_size, run_dir=run)))
    else:
        for split in args.split or ["query", "gallery"]:
            jobs.append((split, extract_split(method, split, store=args.store, flip=args.flip, device=device,
                                              batch_size=args.batch_size, run_dir=run)))
    for name, fs in jobs:
        path = save_features(fs, (Path(args.out) if args.out else run / "features") / name, args.format)
        print(f"{name}: {len(fs)} images x {fs.features.shape[1]} -> {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Ingest throughput and store read speed for random PK batches, against a folder of JPEGs + PIL.

Builds a Market-layout folder of ``--ids`` x ``--per-id`` JPEGs (real crops from
../shared/data recycled under new identities, or random images without it),
ingests it into a store at 256x128 (measured: images/s of plan + write), then
reads ``--batches`` random P x K = 16 x 4 batches four ways, in the same run:

* ``jpeg+PIL``      — the baseline: open, decode and convert each JPEG with PIL;
* ``zarr per image`` — one zarr call per image (what a map-style Dataset does);
* ``zarr runs``      — :func:`storage.read_rows`: one call per contiguous run of ids;
* ``zarr spans``     — one call per identity covering its chosen images (ids of an
  identity are consecutive rows by construction of ingest), then pick in memory.

Usage: python bench/bench_store.py [--ids 200] [--per-id 16] [--batches 30] [--workdir DIR]
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipelines.ingest import plan_ingest, write_image_units  # noqa: E402
from storage import create_store, image_writer, open_store, read_rows  # noqa: E402

SHARED = ROOT.parent / "shared" / "data" / "mini_market1501"


def make_folder(root: Path, ids: int, per_id: int, seed: int = 0) -> int:
    rng = np.random.default_rng(seed)
    crops = sorted(SHARED.rglob("*.jpg")) if SHARED.exists() else []
    folder = root / "bounding_box_train"
    folder.mkdir(parents=True)
    n = 0
    for pid in range(1, ids + 1):
        for j in range(per_id):
            if crops:
                im = Image.open(crops[(pid * per_id + j) % len(crops)]).convert("RGB")
                arr = np.asarray(im.resize((64, 128)), dtype=np.int16) + rng.integers(-3, 4, (128, 64, 3))
                im = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))
            else:
                im = Image.fromarray(rng.integers(0, 256, (128, 64, 3), dtype=np.uint8))
            im.save(folder / f"{pid:04d}_c{j % 6 + 1}s1_{j:06d}_01.jpg", quality=90)
            n += 1
    for split in ("query", "bounding_box_test"):
        (root / split).mkdir()
    return n


def pk_batches(labels: np.ndarray, n: int, P: int = 16, K: int = 4, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    by_id = {p: np.flatnonzero(labels == p) for p in np.unique(labels)}
    ids = np.array(sorted(by_id))
    out = []
    for _ in range(n):
        chosen = rng.choice(ids, P, replace=False)
        out.append(np.concatenate([rng.choice(by_id[p], K, replace=len(by_id[p]) < K) for p in chosen]))
    return out


def read_spans(images, batch: np.ndarray, K: int = 4) -> np.ndarray:
    parts = []
    for group in batch.reshape(-1, K):
        lo, hi = int(group.min()), int(group.max()) + 1
        parts.append(np.asarray(images[lo:hi])[group - lo])
    return np.concatenate(parts)


def timed(fn, batches) -> float:
    t = time.perf_counter()
    for b in batches:
        fn(b)
    return sum(len(b) for b in batches) / (time.perf_counter() - t)


def compare_codecs(chunk: np.ndarray) -> None:
    """Compression ratio and decode speed of one image chunk under a few Blosc codecs (the store's first)."""
    from numcodecs import Blosc

    print(f"codecs on one chunk of {len(chunk)} images (ratio, decode images/s):")
    for cname, clevel, shuffle in (("lz4", 5, Blosc.NOSHUFFLE), ("lz4", 5, Blosc.SHUFFLE), ("lz4hc", 5, Blosc.NOSHUFFLE),
                                   ("zstd", 3, Blosc.NOSHUFFLE), ("zstd", 3, Blosc.BITSHUFFLE)):
        codec = Blosc(cname=cname, clevel=clevel, shuffle=shuffle)
        enc = codec.encode(chunk)
        t = time.perf_counter()
        for _ in range(5):
            codec.decode(enc)
        rate = 5 * len(chunk) / (time.perf_counter() - t)
        label = f"{cname}-{clevel} {['noshuffle', 'shuffle', 'bitshuffle'][shuffle]}"
        print(f"  {label:24s} {chunk.nbytes / len(enc):5.2f}x {rate:10,.0f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ids", type=int, default=200, help="identities in the generated folder")
    ap.add_argument("--per-id", type=int, default=16, help="images per identity")
    ap.add_argument("--batches", type=int, default=30, help="random 16x4 batches read by each loader")
    ap.add_argument("--unit-size", type=int, default=32, help="images per chunk of the store")
    ap.add_argument("--workdir", help="keep the folder and store here (default: a temp dir, removed)")
    args = ap.parse_args()
    work = Path(args.workdir or tempfile.mkdtemp(prefix="bench_store_"))
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "ERROR")
    try:
        n = make_folder(work / "folder", args.ids, args.per_id)
        t = time.perf_counter()
        index = plan_ingest("market1501", work / "folder", progress=False)
        t_plan = time.perf_counter() - t
        s = create_store(work / "store", dataset="market1501", index=index, image_size=(256, 128),
                         source_root=str(work / "folder"), unit_size=args.unit_size)
        units = [u[0] for u in image_writer(s).pending()]
        t = time.perf_counter()
        write_image_units(s.url, str(work / "folder"), units)
        t_write = time.perf_counter() - t
        print(f"ingest of {n} JPEGs (128x64 -> 256x128), one process: plan (decode check + sha256) "
              f"{n / t_plan:,.0f} img/s, write (decode + resize + compress) {n / t_write:,.0f} img/s, "
              f"overall {n / (t_plan + t_write):,.0f} img/s")
        s = open_store(work / "store")
        ok = s.ok_index
        batches = pk_batches(ok["label"].to_numpy(), args.batches)
        paths = [str(work / "folder" / r) for r in ok["relpath"]]

        def jpeg_pil(b):
            return np.stack([np.asarray(Image.open(paths[i]).convert("RGB").resize((128, 256), Image.BILINEAR))
                             for i in b])

        imgs = s.images
        rates = {
            "jpeg+PIL (baseline)": timed(jpeg_pil, batches),
            "zarr per image": timed(lambda b: np.stack([np.asarray(imgs[int(i)]) for i in b]), batches),
            "zarr runs (read_rows)": timed(lambda b: read_rows(imgs, b), batches),
            "zarr spans per identity": timed(lambda b: read_spans(imgs, b), batches),
        }
        assert np.array_equal(read_rows(imgs, batches[0]), read_spans(imgs, batches[0]))
        base = rates["jpeg+PIL (baseline)"]
        print(f"random PK batches of 64 at 256x128 ({args.batches} batches, one thread):")
        for name, r in rates.items():
            print(f"  {name:26s} {r:8,.0f} img/s   {r / base:5.2f}x baseline")
        raw = s.images.nbytes / 2**20
        disk = sum(f.stat().st_size for f in (work / "store" / "images").rglob("*") if f.is_file()) / 2**20
        jpg = sum(Path(p).stat().st_size for p in paths) / 2**20
        print(f"size: images raw {raw:,.1f} MiB, in the store {disk:,.1f} MiB (lz4), source JPEGs {jpg:,.1f} MiB")
        compare_codecs(np.asarray(imgs[: args.unit_size]))
    finally:
        if not args.workdir:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

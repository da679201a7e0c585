"""Decode + resize throughput: storage.decode (simplejpeg fast path, checks, sha256) vs plain Pillow.

Both paths read each file from disk, decode it to RGB and resize it to the store size, in the same run
on the same list of files (the mini_market1501 crops repeated to ``--reads`` reads; synthetic JPEGs
of the same size when ../shared/data is absent):

* baseline: ``np.asarray(Image.open(p).convert("RGB").resize((W, H), Image.BILINEAR))`` -- no checks;
* ours: ``resize_rgb(read_and_check(p).rgb, (H, W))`` -- header size check, strict truncation check,
  sha256 of the bytes, INTER_AREA/INTER_LINEAR resize.

It also times decoding alone (no resize) for both, to show where the difference comes from.

    python bench/bench_ingest.py [--reads 2000] [--size 256 128] [--repeats 3]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from storage.decode import read_and_check, resize_rgb  # noqa: E402

DEFAULT_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "mini_market1501"


def pillow_baseline(path: Path, size: tuple[int, int]) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB").resize((size[1], size[0]), Image.BILINEAR))


def ours(path: Path, size: tuple[int, int]) -> np.ndarray:
    return resize_rgb(read_and_check(path).rgb, size)


def pillow_decode_only(path: Path, size: tuple[int, int]) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def ours_decode_only(path: Path, size: tuple[int, int]) -> np.ndarray:
    return read_and_check(path).rgb


def images_per_second(fn, paths: list[Path], size: tuple[int, int], repeats: int) -> float:
    for path in paths[:50]:  # warm-up: page cache, lazy imports
        fn(path, size)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for path in paths:
            fn(path, size)
        best = min(best, time.perf_counter() - start)
    return len(paths) / best


def synthetic_crops(folder: Path, n: int = 96) -> list[Path]:
    rng = np.random.default_rng(0)
    paths = []
    for i in range(n):
        base = rng.integers(0, 256, (16, 8, 3), dtype=np.uint8).repeat(8, axis=0).repeat(8, axis=1)
        path = folder / f"{i:04d}.jpg"
        Image.fromarray(base).save(path, quality=90)
        paths.append(path)
    return paths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="folder searched for *.jpg (recursively)")
    parser.add_argument("--reads", type=int, default=2000, help="number of file reads per timed pass")
    parser.add_argument("--size", type=int, nargs=2, default=(256, 128), metavar=("H", "W"), help="store size")
    parser.add_argument("--repeats", type=int, default=3, help="timed passes per path; the best is reported")
    args = parser.parse_args()
    size = (args.size[0], args.size[1])

    with tempfile.TemporaryDirectory() as tmp:
        files = sorted(args.data.rglob("*.jpg")) if args.data.is_dir() else []
        source = str(args.data)
        if not files:
            files, source = synthetic_crops(Path(tmp)), "synthetic 64x128 JPEGs (data folder absent)"
        paths = [files[i % len(files)] for i in range(args.reads)]
        baseline = images_per_second(pillow_baseline, paths, size, args.repeats)
        fast = images_per_second(ours, paths, size, args.repeats)
        baseline_decode = images_per_second(pillow_decode_only, paths, size, args.repeats)
        fast_decode = images_per_second(ours_decode_only, paths, size, args.repeats)
        agree = all(
            np.abs(ours(p, size).astype(int) - pillow_baseline(p, size).astype(int)).mean() < 8 for p in files[:5]
        )

    print(f"data: {source} ({len(files)} files, {args.reads} reads per pass, best of {args.repeats})")
    print(f"resize to {size[0]}x{size[1]} (HxW)")
    print(f"baseline Pillow open/convert/resize : {baseline:8.0f} images/s")
    print(f"storage.decode read_and_check+resize: {fast:8.0f} images/s  (with sha256 and integrity checks)")
    print(f"ratio ours / baseline                : {fast / baseline:8.2f}x")
    print(f"decode only, Pillow                 : {baseline_decode:8.0f} images/s")
    print(f"decode only, read_and_check          : {fast_decode:8.0f} images/s  ({fast_decode / baseline_decode:.2f}x)")
    print(f"outputs agree (mean |diff| < 8)      : {agree}")


if __name__ == "__main__":
    main()

"""Benchmark: DSAP warp (DSA-reID Sec. 3.1), ``warp_dsap_batch`` vs the simple ``np.bincount`` version, same run.

Baseline: ``bincount_warp`` below -- what a competent engineer writes in ~15 lines of
numpy: flat cell index per foreground pixel, one ``np.bincount`` for the counts and
one per channel for the sums, rounded means, fill with the image mean. It has the
same semantics as :func:`priors.dsap.warp_dsap_batch` (cells by
:func:`priors.iuv.uv_cell`, half-up rounding) and its output is checked equal
before any number is printed.

Also printed: the memory-bandwidth bound -- the bytes the warp must read (image,
part map, u, v) and write (DSAP-images, mask) per image, divided by this machine's
copy bandwidth (``np.copyto`` of a 256 MiB array, measured in the same run) -- and
how far each version is from it.

Timings: ``--repeats`` interleaved repeats of both versions, best of each
(the box is shared; ratios are same-run).

Inputs: synthetic person-like IUV maps (a silhouette of blocks, each one body
part with smooth ``u``/``v`` ramps, ~45% foreground) on random RGB images.

    python bench/bench_warp.py                # 256x128, S=32, batch 64
    python bench/bench_warp.py --uint16       # u/v as the store's uint16 codes
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from priors.dsap import warp_dsap_batch  # noqa: E402
from priors.iuv import encode_uv, uv_cell  # noqa: E402


def synthetic_iuv(rng: np.random.Generator, B: int, H: int, W: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(B, H, W) part map of 12x4 blocks inside a central silhouette, with per-block u/v ramps."""
    i = np.zeros((B, H, W), np.uint8)
    u = np.zeros((B, H, W), np.float32)
    v = np.zeros((B, H, W), np.float32)
    rows, cols = 12, 4
    bh, bw = H // rows, (W // 2) // cols
    x0 = W // 4
    for b in range(B):
        parts = rng.integers(1, 25, size=(rows, cols))
        keep = rng.random((rows, cols)) < 0.9
        for r in range(rows):
            for c in range(cols):
                if not keep[r, c]:
                    continue
                ys, xs = slice(r * bh, (r + 1) * bh), slice(x0 + c * bw, x0 + (c + 1) * bw)
                i[b, ys, xs] = parts[r, c]
                uu = np.linspace(rng.random() * 0.3, 0.7 + rng.random() * 0.3, bh, dtype=np.float32)
                vv = np.linspace(rng.random() * 0.3, 0.7 + rng.random() * 0.3, bw, dtype=np.float32)
                u[b, ys, xs] = uu[:, None]
                v[b, ys, xs] = vv[None, :]
    return i, u, v


def bincount_warp(images: np.ndarray, i: np.ndarray, u: np.ndarray, v: np.ndarray, S: int):
    """The simple numpy scatter-mean: np.bincount over flat cell indices (image-mean fill)."""
    B, H, W, _ = images.shape
    fg = np.flatnonzero(i.reshape(-1))
    cell = (((fg // (H * W)) * 24 + i.reshape(-1)[fg] - 1) * S + uv_cell(u.reshape(-1)[fg], S)) * S \
        + uv_cell(v.reshape(-1)[fg], S)
    n_cells = B * 24 * S * S
    count = np.bincount(cell, minlength=n_cells)
    rgb = images.reshape(-1, 3)[fg]
    sums = np.stack([np.bincount(cell, weights=rgb[:, c], minlength=n_cells) for c in range(3)], 1)
    mean = (2 * sums.astype(np.int64) + count[:, None]) // np.maximum(2 * count[:, None], 1)
    fill = (2 * images.reshape(B, -1, 3).sum(1, dtype=np.int64) + H * W) // (2 * H * W)      # (B, 3)
    out = np.where((count > 0).reshape(B, -1, 1), mean.reshape(B, -1, 3), fill[:, None, :])
    dsap = out.reshape(B, 24, S, S, 3).transpose(0, 1, 4, 2, 3).astype(np.uint8)
    return dsap, (count > 0).reshape(B, 24, S, S)


def copy_bandwidth(nbytes: int = 256 << 20, repeats: int = 3) -> float:
    """Bytes moved per second (read + write) by np.copyto of a large array."""
    src = np.ones(nbytes // 8)
    dst = np.empty_like(src)
    return 2 * nbytes / best_of(repeats, lambda: np.copyto(dst, src))


def best_of(repeats: int, fn) -> float:
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=64, help="images per batch (default 64)")
    ap.add_argument("--height", type=int, default=256, help="image height (default 256)")
    ap.add_argument("--width", type=int, default=128, help="image width (default 128)")
    ap.add_argument("--S", type=int, default=32, help="DSAP-image side (paper: 32)")
    ap.add_argument("--repeats", type=int, default=5, help="interleaved repeats, best of each (default 5)")
    ap.add_argument("--uint16", action="store_true", help="feed u/v as uint16 store codes instead of float32")
    ap.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    args = ap.parse_args(argv)

    rng = np.random.default_rng(args.seed)
    B, H, W, S = args.batch, args.height, args.width, args.S
    images = rng.integers(0, 256, size=(B, H, W, 3), dtype=np.uint8)
    i, u, v = synthetic_iuv(rng, B, H, W)
    if args.uint16:
        u, v = encode_uv(u), encode_uv(v)
    print(f"DSAP warp bench: {B} images {H}x{W}, S={S}, u/v {u.dtype}, foreground {np.mean(i > 0):.0%}, "
          f"load average {os.getloadavg()[0]:.1f}")

    ref = bincount_warp(images, i, u, v, S)
    got = warp_dsap_batch(images, i, u, v, S)
    if not (np.array_equal(got[0], ref[0]) and np.array_equal(got[1], ref[1])):
        raise SystemExit("warp_dsap_batch differs from the bincount version")
    print("  outputs identical: yes")
    best = {"bincount": float("inf"), "batch": float("inf")}
    for _ in range(args.repeats):
        for name, fn in (("bincount", lambda: bincount_warp(images, i, u, v, S)),
                         ("batch", lambda: warp_dsap_batch(images, i, u, v, S))):
            best[name] = min(best[name], best_of(1, fn) / B)
    bw = copy_bandwidth()
    moved = (images[0].nbytes + i[0].nbytes + u[0].nbytes + v[0].nbytes + got[0][0].nbytes + got[1][0].nbytes)
    bound = moved / bw
    print(f"  memory traffic {moved / 1e3:.0f} kB/image; copy bandwidth {bw / 1e9:.1f} GB/s "
          f"-> bandwidth bound {bound * 1e3:.3f} ms/image")
    for name, label in (("bincount", "np.bincount scatter-mean [baseline]"), ("batch", "warp_dsap_batch (compiled)")):
        t = best[name]
        print(f"  {label:<38s}: {1 / t:9.0f} images/s  ({t * 1e3:.3f} ms/image, {t / bound:5.1f}x the bound)")
    print(f"  speed-up vs bincount: {best['bincount'] / best['batch']:.1f}x (goal >= 5x)")


if __name__ == "__main__":
    main()

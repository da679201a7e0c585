"""Benchmark: vectorised DSAP warp (DSA-reID Sec. 3.1) vs a per-pixel Python loop, same run.

Baseline: ``naive_warp`` below — the straightforward per-pixel loop over plain
Python lists (arrays converted with ``tolist()`` first, which is the fastest way
to loop in pure Python), accumulating sums and counts per cell, with the same
rounding and fill as :func:`priors.dsap.warp_dsap`. Its output is checked equal
to the vectorised one before any number is printed.

Inputs: synthetic person-like IUV maps (a silhouette of blocks, each one body
part with smooth ``u``/``v`` ramps, ~45% foreground) on random RGB images.

    python bench/bench_warp.py                # 256x128, S=32, batch 64
    python bench/bench_warp.py --uint16       # u/v as the store's uint16 codes
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from priors.dsap import warp_dsap, warp_dsap_batch  # noqa: E402
from priors.iuv import encode_uv  # noqa: E402


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


def naive_warp(image: np.ndarray, i: np.ndarray, u: np.ndarray, v: np.ndarray, S: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-pixel Python loop with the same semantics as warp_dsap (image-mean fill, half-up mean)."""
    H, W, _ = image.shape
    img, il, ul, vl = image.tolist(), i.tolist(), u.tolist(), v.tolist()
    quant = u.dtype == np.uint16
    sums = [[0, 0, 0] for _ in range(24 * S * S)]
    count = [0] * (24 * S * S)
    for y in range(H):
        irow, urow, vrow, prow = il[y], ul[y], vl[y], img[y]
        for x in range(W):
            p = irow[x]
            if p == 0:
                continue
            if quant:
                cu, cv = (urow[x] * S) >> 16, (vrow[x] * S) >> 16
            else:
                cu, cv = min(int(urow[x] * S), S - 1), min(int(vrow[x] * S), S - 1)
            k = ((p - 1) * S + cu) * S + cv
            s = sums[k]
            r, g, bl = prow[x]
            s[0] += r
            s[1] += g
            s[2] += bl
            count[k] += 1
    n = H * W
    fill = [(2 * int(t) + n) // (2 * n) for t in image.reshape(-1, 3).sum(axis=0, dtype=np.int64)]
    out = np.empty((24, 3, S, S), np.uint8)
    valid = np.zeros((24, S, S), bool)
    for k in range(24 * S * S):
        p, rem = divmod(k, S * S)
        cu, cv = divmod(rem, S)
        c = count[k]
        valid[p, cu, cv] = c > 0
        for ch in range(3):
            out[p, ch, cu, cv] = (2 * sums[k][ch] + c) // (2 * c) if c else fill[ch]
    return out, valid


def best_of(repeats: int, fn) -> float:
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=64, help="images per vectorised batch (default 64)")
    ap.add_argument("--height", type=int, default=256)
    ap.add_argument("--width", type=int, default=128)
    ap.add_argument("--S", type=int, default=32, help="DSAP-image side (paper: 32)")
    ap.add_argument("--naive-images", type=int, default=4, help="images timed with the Python loop (default 4)")
    ap.add_argument("--repeats", type=int, default=3, help="best of N timings for the vectorised paths")
    ap.add_argument("--uint16", action="store_true", help="feed u/v as uint16 store codes instead of float32")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    rng = np.random.default_rng(args.seed)
    B, H, W, S = args.batch, args.height, args.width, args.S
    images = rng.integers(0, 256, size=(B, H, W, 3), dtype=np.uint8)
    i, u, v = synthetic_iuv(rng, B, H, W)
    if args.uint16:
        u, v = encode_uv(u), encode_uv(v)
    n_naive = max(1, min(args.naive_images, B))
    print(f"DSAP warp bench: {B} images {H}x{W}, S={S}, u/v {u.dtype}, foreground {np.mean(i > 0):.0%}")

    t0 = time.perf_counter()
    naive = [naive_warp(images[b], i[b], u[b], v[b], S) for b in range(n_naive)]
    t_naive = (time.perf_counter() - t0) / n_naive

    dsap, valid = warp_dsap_batch(images, i, u, v, S)
    for b, (d_ref, v_ref) in enumerate(naive):
        if not (np.array_equal(dsap[b], d_ref) and np.array_equal(valid[b], v_ref)):
            raise SystemExit(f"vectorised warp differs from the naive loop on image {b}")
    t_batch = best_of(args.repeats, lambda: warp_dsap_batch(images, i, u, v, S)) / B
    t_single = best_of(args.repeats, lambda: [warp_dsap(images[b], i[b], u[b], v[b], S) for b in range(B)]) / B

    print(f"  naive per-pixel loop   : {1 / t_naive:9.1f} images/s  ({t_naive * 1e3:.2f} ms/image, {n_naive} images)")
    print(f"  warp_dsap (per image)  : {1 / t_single:9.1f} images/s  ({t_single * 1e3:.3f} ms/image)")
    print(f"  warp_dsap_batch (B={B:<3d}): {1 / t_batch:9.1f} images/s  ({t_batch * 1e3:.3f} ms/image)")
    print(f"  speed-up vs naive loop : batch {t_naive / t_batch:.0f}x, per-image {t_naive / t_single:.0f}x (goal >= 20x)")


if __name__ == "__main__":
    main()

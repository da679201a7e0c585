"""Benchmark: vectorised MPN coarse prior (Sec. 3.2) vs a straightforward per-image OpenCV loop.

Baseline: for each image in Python, count head / leg pixels, take the union,
``cv2.resize(INTER_AREA)``, threshold at 0.5, ``cv2.dilate`` with a 1 x 2
kernel, first / last non-empty rows, strips. Candidate:
:func:`priors.mpn_prior.coarse_strip_prior_batch` on the whole batch. Both run
on the same random-but-plausible parsing / segmentation maps and must agree.

    python bench/bench_mpn_prior.py            # 512 maps of 384 x 128
    python bench/bench_mpn_prior.py --n 2048 --repeat 5
    python bench/bench_mpn_prior.py --figure docs/mpn_prior.png   # also draw examples
"""
from __future__ import annotations

import argparse
import time

import cv2
import numpy as np

from priors.estimators import CoarseParsing as P
from priors.mpn_prior import (
    HEAD_MIN_FRAC,
    LEG_MIN_FRAC,
    coarse_strip_prior_batch,
    feature_map_size,
    min_pixels,
)


def plausible_maps(n: int, hw: tuple[int, int], seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Pedestrian-like maps: a box body with head on top and two legs below, ~15 % missing a part, noisy segmentation."""
    rng = np.random.default_rng(seed)
    H, W = hw
    yy = np.arange(H)[None, :, None]
    xx = np.arange(W)[None, None, :]
    top = rng.uniform(0, 0.2, (n, 1, 1)) * H
    bottom = rng.uniform(0.75, 1.05, (n, 1, 1)) * H
    cx = rng.uniform(0.35, 0.65, (n, 1, 1)) * W
    half = rng.uniform(0.15, 0.35, (n, 1, 1)) * W
    body = (np.abs(xx - cx) < half) & (yy >= top) & (yy < bottom)
    head = body & (yy < top + (bottom - top) * rng.uniform(0.0, 0.2, (n, 1, 1)))
    legs = body & (yy >= top + 0.6 * (bottom - top))
    has_left, has_right = rng.random((2, n, 1, 1)) < 0.9
    parsing = np.where(body, P.OTHER, P.BACKGROUND).astype(np.uint8)
    parsing[legs & (xx < cx) & has_right] = P.RIGHT_LEG
    parsing[legs & (xx >= cx) & has_left] = P.LEFT_LEG
    parsing[head] = P.HEAD
    seg = (np.abs(xx - cx) < half * rng.uniform(0.8, 1.4, (n, 1, 1))) & (yy >= top) & (yy < bottom)
    seg &= rng.random((n, H, W)) < 0.97
    return parsing, seg


def per_image_loop(parsing: np.ndarray, seg: np.ndarray, feat_hw: tuple[int, int], K: int = 6) -> dict[str, np.ndarray]:
    """The straightforward implementation, one image at a time with OpenCV."""
    n, H, W = parsing.shape
    h, w = feat_hw
    need_head, need_leg = min_pixels(HEAD_MIN_FRAC, (H, W)), min_pixels(LEG_MIN_FRAC, (H, W))
    kernel = np.ones((1, 2), np.uint8)
    masks = np.zeros((n, h, w), np.uint8)
    roi = np.zeros((n, 2), np.int16)
    fallback = np.zeros(n, bool)
    strips = np.zeros((n, K, 2), np.int16)
    for b in range(n):
        p = parsing[b]
        head = np.count_nonzero(p == P.HEAD)
        legs = max(np.count_nonzero(p == P.LEFT_LEG), np.count_nonzero(p == P.RIGHT_LEG))
        union = ((p != P.BACKGROUND) | seg[b]).astype(np.float32)
        small = (cv2.resize(union, (w, h), interpolation=cv2.INTER_AREA) >= 0.5).astype(np.uint8)
        mask = cv2.dilate(small, kernel)
        rows = np.flatnonzero(mask.any(axis=1))
        fallback[b] = head < need_head or legs < need_leg or len(rows) == 0
        if len(rows) == 0:
            mask[:] = 1
        up, lo = (0, h - 1) if fallback[b] else (rows[0], rows[-1])
        m = lo - up + 1
        strips[b] = [(up + k * m // K, up + (k + 1) * m // K) for k in range(K)]
        masks[b], roi[b] = mask, (up, lo)
    return {"mask": masks, "roi": roi, "fallback": fallback, "strips": strips}


def best_time(fn, repeat: int) -> tuple[float, dict]:
    best, out = float("inf"), None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def draw_examples(parsing: np.ndarray, seg: np.ndarray, out: dict, path: str, n_ok: int = 4, n_fallback: int = 2) -> None:
    """Parsing / segmentation / M with ROI and strips for a few images, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok, fb = np.flatnonzero(~out["fallback"])[:n_ok], np.flatnonzero(out["fallback"])[:n_fallback]
    picks = np.concatenate([ok, fb])
    colours = np.array([[1, 1, 1], [0.85, 0.1, 0.1], [0.1, 0.65, 0.1], [0.1, 0.3, 0.9], [0.6, 0.6, 0.6]])
    H, W = parsing.shape[1:]
    h, w = out["mask"].shape[1:]
    fig, axes = plt.subplots(3, len(picks), figsize=(1.6 * len(picks), 9), squeeze=False)
    for col, b in enumerate(picks):
        axes[0, col].imshow(colours[np.minimum(parsing[b], 4)])
        axes[1, col].imshow(seg[b], cmap="gray")
        ax = axes[2, col]
        ax.imshow(out["mask"][b], cmap="gray", vmin=0, vmax=1, extent=(0, W, H, 0), interpolation="nearest")
        up, lo = out["roi"][b]
        ax.add_patch(plt.Rectangle((0.5, up * H / h), W - 1, (lo + 1 - up) * H / h, fill=False, ec="yellow", lw=2))
        for start, _ in out["strips"][b][1:]:
            ax.axhline(start * H / h, color="white", lw=1, ls="--")
        title = out["reason"][b] or f"ROI rows {up}-{lo}"
        axes[0, col].set_title(title.replace("_", " "), fontsize=8)
    for ax, label in zip(axes[:, 0], ("parsing", "segmentation", "M, ROI, strips")):
        ax.set_ylabel(label)
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    print(f"figure written to {path}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=512, help="number of maps (default 512)")
    ap.add_argument("--height", type=int, default=384)
    ap.add_argument("--width", type=int, default=128)
    ap.add_argument("--stride", type=int, default=16, help="backbone stride (16 = ResNet-50, last stride 1)")
    ap.add_argument("--repeat", type=int, default=5, help="timed repeats, best kept (default 5)")
    ap.add_argument("--figure", metavar="PNG", help="also draw a few examples (parsing, segmentation, M + ROI + strips)")
    args = ap.parse_args()

    hw = (args.height, args.width)
    feat = feature_map_size(hw, args.stride)
    parsing, seg = plausible_maps(args.n, hw)
    t_loop, ref = best_time(lambda: per_image_loop(parsing, seg, feat), args.repeat)
    t_vec, out = best_time(lambda: coarse_strip_prior_batch(parsing, seg, feat), args.repeat)
    for key in ("mask", "roi", "fallback", "strips"):
        if not np.array_equal(ref[key], out[key]):
            raise SystemExit(f"per-image loop and batch disagree on {key!r}")
    print(f"MPN coarse prior, {args.n} maps of {hw[0]}x{hw[1]} -> {feat[0]}x{feat[1]}, "
          f"{out['fallback'].mean():.1%} fallback; outputs identical")
    print(f"per-image cv2 loop : {args.n / t_loop:10.0f} images/s ({t_loop * 1e3:.1f} ms)")
    print(f"vectorised batch   : {args.n / t_vec:10.0f} images/s ({t_vec * 1e3:.1f} ms)")
    print(f"speed-up           : {t_loop / t_vec:10.2f}x")
    if args.figure:
        draw_examples(parsing, seg, out, args.figure)


if __name__ == "__main__":
    main()

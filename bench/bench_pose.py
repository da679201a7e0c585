"""Pose detection rate and speed of the mediapipe backends on real crops.

Compares, on the same images in one run:

* ``tight``   — baseline: the crop on a square canvas of its own height (pad 1.0, border replicated);
* ``pad3``    — the crop on a grey canvas 3x its height, one try (= the default's first try);
* ``default`` — what ``pose-chart`` / ``pose`` use: pad 3 grey, then retries (pad 2 edge, 2.5 grey, 4 grey, 1.5 edge)
  on a 768 px canvas at detector confidence 0.2 (``DEFAULT_POSE_ATTEMPTS``);

and times the whole ``pose-chart`` estimator (pose with its own segmentation +
landmark->IUV) and the landmark->IUV geometry alone. Images: all 96
mini-Market-1501 crops and 100 CUHK03 crops (every 9th file), resized to the
store size (default 256 x 128). Prints detection rates, ms/image, images/s and
the ratio to the tight baseline. Single process, single thread of mediapipe
graphs (they are not thread-safe).

Usage: ``python bench/bench_pose.py [--data ../shared/data] [--size 256 128] [--cuhk 100]``
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def load_sets(data: Path, size: tuple[int, int], n_cuhk: int) -> dict[str, np.ndarray]:
    import cv2

    def read(files):
        return np.stack([cv2.resize(cv2.imread(str(f))[:, :, ::-1], size[::-1]) for f in files])

    market = sorted((data / "mini_market1501").glob("*/*.jpg"))
    cuhk = sorted((data / "cuhk03_labeled_val").glob("*.jpg"))
    cuhk = cuhk[:: max(1, len(cuhk) // n_cuhk)][:n_cuhk]
    return {"mini_market1501": read(market), "cuhk03": read(cuhk)}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--size", type=int, nargs=2, default=(256, 128), metavar=("H", "W"))
    parser.add_argument("--cuhk", type=int, default=100, help="number of CUHK03 crops")
    parser.add_argument("--estimator-images", type=int, default=48, help="images for the end-to-end estimator timing")
    args = parser.parse_args(argv)
    if not args.data.exists():
        raise SystemExit(f"no real crops at {args.data}")

    from priors.backends.mediapipe_runner import DEFAULT_POSE_ATTEMPTS, MediapipeRunner, mediapipe_version
    from priors.backends.pose_chart import PoseChartEstimator, landmarks_to_iuv

    sets = load_sets(args.data, tuple(args.size), args.cuhk)
    print(f"mediapipe {mediapipe_version()}, images {args.size[0]}x{args.size[1]}, "
          + ", ".join(f"{k}: {len(v)}" for k, v in sets.items()))
    print("ms/img: wall clock; cpu: process CPU time (all threads) - the fairer number on a shared machine")
    header = ("set", "config", "found", "rate", "ms/img", "cpu", "img/s", "rate vs tight")
    print("{:<16} {:<8} {:>9} {:>6} {:>7} {:>6} {:>6} {:>14}".format(*header))
    tight, default = MediapipeRunner(((1.0, "edge"),)), MediapipeRunner(DEFAULT_POSE_ATTEMPTS)
    poses = {}
    for set_name, images in sets.items():
        rows = []
        for cfg_name, runner in (("tight", tight), ("default", default)):
            runner.pose(images[:2])  # build the graph outside the timing
            t0, c0 = time.perf_counter(), time.process_time()
            pose = runner.pose(images)
            n = len(images)
            rows.append((cfg_name, pose.found, (time.perf_counter() - t0) / n, (time.process_time() - c0) / n))
        poses[set_name] = pose
        # the first try of the default run *is* the single pad-3 grey try
        rows.insert(1, ("pad3", pose.attempt == 0, float("nan"), float("nan")))
        base = rows[0][1].mean()
        for cfg_name, found, dt, cpu in rows:
            print(f"{set_name:<16} {cfg_name:<8} {found.sum():>4}/{len(images):<4} {found.mean():>6.1%} "
                  f"{dt * 1e3:>7.1f} {cpu * 1e3:>6.1f} {1 / dt:>6.1f} {found.mean() / max(base, 1e-9):>13.2f}x")

    images = np.concatenate(list(sets.values()))
    landmarks = np.concatenate([p.landmarks for p in poses.values()])
    found = np.concatenate([p.found for p in poses.values()])
    est = PoseChartEstimator()
    sub = images[: args.estimator_images]
    est.estimate(sub[:2], None)
    t0, c0 = time.perf_counter(), time.process_time()
    res = est.estimate(sub, None)
    dt_all, cpu_all = (time.perf_counter() - t0) / len(sub), (time.process_time() - c0) / len(sub)
    t0 = time.perf_counter()
    mask = est._runner.selfie(images) >= est.seg_threshold
    dt_seg = (time.perf_counter() - t0) / len(images)
    ok = np.nonzero(found)[0]
    t0 = time.perf_counter()
    for k in ok:
        landmarks_to_iuv(landmarks[k], mask[k], est.chart)
    dt_geo = (time.perf_counter() - t0) / max(len(ok), 1)
    counts = {s: res.status.count(s) for s in sorted(set(res.status))}
    print(f"pose-chart estimator on {len(sub)} images: {dt_all * 1e3:.1f} ms/img wall, {cpu_all * 1e3:.1f} ms/img cpu "
          f"({1 / dt_all:.1f} img/s), status {counts}")
    print(f"  selfie segmentation alone: {dt_seg * 1e3:.1f} ms/img; landmarks_to_iuv alone: {dt_geo * 1e3:.2f} ms/img "
          f"({dt_geo / dt_all:.1%} of the estimator's time)")
    empty = (mask.mean(axis=(1, 2)) < 0.02).sum()
    print(f"selfie masks under 2% of the crop: {empty}/{len(images)}")

if __name__ == "__main__":
    main()

"""Do N worker processes run N mediapipe graphs in parallel? (``pose-chart`` on real crops.)

Each worker process builds its own graph (:func:`priors.backends.mediapipe_runner.get_runner`
keys runners by process id; nothing is shared or locked across processes) and is warmed up
before the clock starts (one image: builds the graph). With ``--start fork`` (the default, as a
Linux process pool does) the estimator is constructed in the parent first, as the flows do for its
provenance, so the children inherit the parent's estimator object and must build their own graph.
A parent that has *run* a mediapipe graph must not fork (glibc reports heap corruption in the
children: mediapipe's threads do not survive a fork); use ``spawn`` there. Then the same images are estimated by
1 process and by ``--workers`` processes, each taking contiguous batches of ``--batch`` images.
Prints images/s and the speed-up of N processes over one, measured in the same run. This is the
pattern of the flows' process pool (``--workers`` of the build flows, in ``pipelines/runner.py``).

Usage: ``python bench/bench_pose_workers.py [--data ../shared/data] [--images 192] [--workers 2]``
"""
from __future__ import annotations

import argparse
import multiprocessing as mp
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
_EST = None


def _warm(first: np.ndarray) -> None:
    global _EST
    from priors.estimators import dense_estimator

    _EST = _EST or dense_estimator("pose-chart")  # forked: the parent's estimator object
    _EST.estimate(first, None)


def _estimate(batch: np.ndarray) -> tuple[int, float]:
    c0 = time.process_time()
    res = _EST.estimate(batch, None)
    return sum(s == "ok" for s in res.status), time.process_time() - c0


def run(images: np.ndarray, workers: int, batch: int, start: str = "fork") -> tuple[float, int, float]:
    """Wall seconds, poses found and CPU seconds (all workers) for ``images`` on ``workers`` processes."""
    batches = [images[s:s + batch] for s in range(0, len(images), batch)]
    ctx = mp.get_context(start)
    with ctx.Pool(workers, initializer=_warm, initargs=(images[:1],)) as pool:
        pool.map(time.sleep, [0.5] * workers)  # every worker has started and built its graph
        t0 = time.perf_counter()
        done = pool.map(_estimate, batches, chunksize=1)
        return time.perf_counter() - t0, sum(d[0] for d in done), sum(d[1] for d in done)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--images", type=int, default=192, help="CUHK03 crops to estimate (256 x 128)")
    parser.add_argument("--workers", type=int, default=2, help="processes to compare with one")
    parser.add_argument("--batch", type=int, default=16, help="images per task")
    parser.add_argument("--start", choices=["fork", "spawn"], default="fork",
                        help="process start method (fork: children inherit the parent's used estimator)")
    args = parser.parse_args(argv)
    from storage.decode import read_and_check, resize_rgb

    files = sorted((args.data / "cuhk03_labeled_val").glob("*.jpg"))[: args.images]
    if not files:
        raise SystemExit(f"no real crops at {args.data}")
    images = np.stack([resize_rgb(read_and_check(str(f)).rgb, (256, 128)) for f in files])
    if args.start == "fork":
        global _EST
        from priors.estimators import dense_estimator

        _EST = dense_estimator("pose-chart")  # constructed in the parent (no graph runs), inherited by the children
    one, ok1, cpu1 = run(images, 1, args.batch, args.start)
    many, okn, cpun = run(images, args.workers, args.batch, args.start)
    n = len(images)
    print(f"{n} images, batches of {args.batch}; poses found {ok1} (1 process) / {okn} ({args.workers})")
    print(f"1 process: {n / one:.1f} img/s, {cpu1 / n * 1e3:.0f} CPU ms/img, {cpu1 / one:.2f} cores busy; "
          f"{args.workers} processes: {n / many:.1f} img/s, {cpun / n * 1e3:.0f} CPU ms/img, {cpun / many:.2f} cores busy")
    print(f"speed-up {one / many:.2f}x (wall); CPU per image {cpun / cpu1:.2f}x of one process's "
          "(1.00 = no lock or shared graph makes the processes wait on each other)")
    print("load average:", " ".join(f"{x:.1f}" for x in __import__("os").getloadavg()))


if __name__ == "__main__":
    main()

"""AlignedReID local-distance evaluation time at Market-1501 size (3,368 queries
x 15,913 gallery images, H = 8 parts, c = 128 channels).

* vectorised: :func:`reid_train.evaluation.local_distance.local_distance_blocks`
  (query x gallery tiles, one matrix product per tile for Eq. 1, the
  shortest path of Eq. 2 over the 2H - 1 anti-diagonals for all pairs of the
  tile at once). Timed on ``--queries`` query rows against the full gallery
  and scaled linearly to all 3,368 queries (the rows are independent);
  ``--queries 3368`` times the whole matrix.
* naive baseline, measured in the same run: a per-pair loop, each pair's
  (H, H) element distances with numpy and Eq. 2 as the plain double loop
  (``naive_local_distance`` style), timed on ``--sample`` random pairs and
  extrapolated to the 53.6 M pairs.

Wall and CPU (process) times are both printed, for each ``--threads``
count: on a busy machine the multi-threaded run can be slower than the
single-threaded one (OpenMP threads wait for each other when the cores are
shared), which the CPU time shows.

Both give the same numbers on the sampled pairs (checked). Features are
random (local features after ReLU are non-negative: |N(0, 1)|).

    .venv/bin/python bench/bench_local_distance.py           # < 2 min on 2 cores
"""
from __future__ import annotations

import argparse
import math
import time

import numpy as np
import torch

from reid_train.evaluation.local_distance import local_distance_blocks


def naive_pair(f: np.ndarray, g: np.ndarray) -> float:
    """One pair: numpy element distances (Eq. 1), Python double loop (Eq. 2)."""
    h = len(f)
    x = np.sqrt(((f[:, None, :] - g[None, :, :]) ** 2).sum(-1))
    d = (np.exp(x) - 1) / (np.exp(x) + 1)
    s = np.zeros((h, h))
    for i in range(h):
        for j in range(h):
            if i == 0 and j == 0:
                s[i, j] = d[0, 0]
            elif j == 0:
                s[i, j] = s[i - 1, j] + d[i, j]
            elif i == 0:
                s[i, j] = s[i, j - 1] + d[i, j]
            else:
                s[i, j] = min(s[i - 1, j], s[i, j - 1]) + d[i, j]
    return float(s[-1, -1])


def fmt(seconds: float) -> str:
    return f"{seconds / 3600:.2f} h" if seconds > 3600 else f"{seconds:.1f} s"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--num-query", type=int, default=3368)
    p.add_argument("--num-gallery", type=int, default=15913)
    p.add_argument("--parts", type=int, default=8, help="H, local features per image")
    p.add_argument("--channels", type=int, default=128, help="c, channels of a local feature")
    p.add_argument("--queries", type=int, default=128, help="query rows actually timed (vectorised)")
    p.add_argument("--sample", type=int, default=2000, help="pairs timed with the naive loop")
    p.add_argument("--block", type=int, default=64)
    p.add_argument("--gallery-block", type=int, default=512)
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2],
                   help="torch intra-op thread counts to time the vectorised code with")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    rng = np.random.default_rng(args.seed)
    h, c = args.parts, args.channels
    nq = min(args.queries, args.num_query)
    qf = np.abs(rng.standard_normal((nq, h, c))).astype(np.float32) * 0.1
    gf = np.abs(rng.standard_normal((args.num_gallery, h, c))).astype(np.float32) * 0.1
    pairs = args.num_query * args.num_gallery

    vec = {}  # threads -> (wall, cpu) seconds extrapolated to all queries
    for threads in args.threads:
        torch.set_num_threads(threads)
        local_distance_blocks(qf[:2], gf[:64])  # warm-up
        t, c0 = time.perf_counter(), time.process_time()
        dist = local_distance_blocks(qf, gf, block=args.block, gallery_block=args.gallery_block)
        t_vec, c_vec = time.perf_counter() - t, time.process_time() - c0
        vec[threads] = (t_vec * args.num_query / nq, c_vec * args.num_query / nq, t_vec)

    qi = rng.integers(0, nq, args.sample)
    gi = rng.integers(0, args.num_gallery, args.sample)
    t, c0 = time.perf_counter(), time.process_time()
    naive = np.array([naive_pair(qf[a].astype(np.float64), gf[b].astype(np.float64)) for a, b in zip(qi, gi)])
    t_naive, c_naive = time.perf_counter() - t, time.process_time() - c0
    naive_full, naive_cpu = t_naive / args.sample * pairs, c_naive / args.sample * pairs
    err = float(np.abs(dist[qi, gi] - naive).max())

    print(f"local distance, Q x G = {args.num_query} x {args.num_gallery} ({pairs / 1e6:.1f} M pairs), "
          f"H = {h}, c = {c}; vectorised timed on {nq} queries x all gallery, naive on {args.sample} pairs")
    for threads, (wall, cpu, measured) in vec.items():
        print(f"  vectorised blocks, {threads} thread(s): {fmt(wall)} wall ({pairs / wall / 1e6:.2f} M pairs/s; "
              f"measured {measured:.1f} s), {fmt(cpu)} CPU")
    print(f"  naive per-pair loop          : {fmt(naive_full)} wall ({args.sample / t_naive / 1e3:.1f} k pairs/s), "
          f"{fmt(naive_cpu)} CPU")
    best = min(vec, key=lambda t: vec[t][0])
    print(f"  speed-up (best: {best} thread(s)): {naive_full / vec[best][0]:.0f}x wall, "
          f"{naive_cpu / vec[best][1]:.0f}x CPU time   (max |difference| on sampled pairs {err:.1e})")
    assert math.isfinite(err) and err < 1e-4
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""AlignedReID local distance (Eq. 1 + Eq. 2) against huanghoujing's numpy ``local_dist``, same run.

Peer (``--alignedreid-src``, a checkout of github.com/huanghoujing/AlignedReID-Re-Production-Pytorch;
row skipped without it): ``aligned_reid/utils/distance.py:local_dist`` -- one float32 matrix
product for all part pairs, ``(e^x - 1) / (e^x + 1)``, then the shortest path as a Python
double loop over the H x H cells, vectorised over all pairs (what its evaluation runs).

Ours: :func:`reid_train.evaluation.local_distance.local_distance_cpu` (the kernel of
``reid_train/evaluation/local_distance_kernel.py``: direct differences vectorised over 16 gallery
images per tile, 2 x 8 part register blocks, threads following the free cores; its one-time
compilation is done before timing) and, for reference, the torch tile path :func:`local_distance`
that training uses.
Also timed: the peer's first step alone, the float32 product ``(N H, c) x (c, M H)`` of numpy's
BLAS -- the floor of any "BLAS product, then fix the cancelled cells" design.

``--breakdown`` also times our kernel with its Eq. 1 + 2 step replaced by the sum of the cells
(:func:`reid_train.evaluation.local_distance_kernel.build_kernel`, compiled once, uncached): the
squared part distances alone, to set beside the BLAS product.

Both on ``--num-query x --num-gallery`` pairs (default 500 x 2,000, H = 8, c = 128), best of
``--repeats`` interleaved repeats. Then the same with ``--busy`` other processes spinning
on the CPU (``--busy 0`` to skip), to show the thread policy: the peer's BLAS and torch use
every core whatever the load; ours uses the cores that are free.

Accuracy: both against a float64 computation of Eq. 1-2 on ``--check`` query rows (the
peer's float32 ``|a|^2 + |b|^2 - 2 a.b`` cancels for near-identical parts; the features
include near-duplicates to show it).

    python bench/bench_local_distance.py --alignedreid-src ../scratch/AlignedReID-Re-Production-Pytorch
"""
from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import sys
import time
from pathlib import Path

import numba
import numpy as np
import torch

from reid_train.evaluation.local_distance import local_distance, local_distance_cpu
from reid_train.evaluation.local_distance_kernel import build_kernel, gallery_lanes
from reid_train.evaluation.threads import free_cores, kernel_threads


@numba.njit(nogil=True, inline="always")
def sum_of_cells(cells, path, out, i, j0, m):
    """A stand-in for the kernel's Eq. 1 + 2 step: the sum of the tile's squared distances (every cell
    is read, so the compiler cannot drop any of them; H^2 vector adds against the C H^2 subtract/FMA pairs)."""
    lanes = cells.shape[1]
    for lane in range(lanes):
        path[0, lane] = 0.0
    for cell in range(cells.shape[0]):
        for lane in range(lanes):
            path[0, lane] += cells[cell, lane]
    for lane in range(min(lanes, m - j0)):
        out[i, j0 + lane] = path[0, lane]


def spin(stop):
    x = 0
    while not stop.is_set():
        for _ in range(100000):
            x += 1


def float64_local_distance(q: np.ndarray, g: np.ndarray) -> np.ndarray:
    """Eq. 1 + Eq. 2 in float64 from direct differences (the accuracy reference)."""
    with torch.no_grad():
        x, y = torch.from_numpy(q).double(), torch.from_numpy(g).double()
        sq = ((x[:, None, :, None, :] - y[None, :, None, :, :]) ** 2).sum(-1)   # (N, M, H, H)
        d = torch.tanh(sq.sqrt() / 2)
        h = d.shape[-1]
        s = torch.zeros_like(d)
        for i in range(h):
            for j in range(h):
                prev = [t for t in ((s[..., i - 1, j] if i else None), (s[..., i, j - 1] if j else None))
                        if t is not None]
                s[..., i, j] = d[..., i, j] + (torch.minimum(*prev) if len(prev) == 2 else
                                               prev[0] if prev else 0)
        return s[..., -1, -1].numpy()


def timed(fn):
    t0, c0 = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - t0, time.process_time() - c0


def run_round(candidates: dict, repeats: int) -> dict:
    best = {}
    for _ in range(repeats):
        for name, fn in candidates.items():
            out, wall, cpu = timed(fn)
            if name not in best or wall < best[name][1]:
                best[name] = (out, wall, cpu)
    return best


def report(best: dict, label: str, base: str | None) -> None:
    print(f"\n== {label}")
    for name, (_, wall, cpu) in best.items():
        ratio = f"{best[base][1] / wall:6.1f}x wall vs the peer" if base in best else ""
        print(f"  {name:<46s} {wall:8.3f} s wall {cpu:8.3f} s CPU  {ratio}")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--alignedreid-src", help="checkout of huanghoujing/AlignedReID-Re-Production-Pytorch "
                                             "(default: skip the peer)")
    p.add_argument("--num-query", type=int, default=500, help="query images (default 500)")
    p.add_argument("--num-gallery", type=int, default=2000, help="gallery images (default 2000)")
    p.add_argument("--parts", type=int, default=8, help="H, local features per image (default 8)")
    p.add_argument("--channels", type=int, default=128, help="c, channels of a local feature (default 128)")
    p.add_argument("--repeats", type=int, default=3, help="interleaved repeats, best of each (default 3)")
    p.add_argument("--busy", type=int, default=4, help="busy processes for the loaded round (default 4, 0 = skip)")
    p.add_argument("--check", type=int, default=20, help="query rows checked against float64 (default 20)")
    p.add_argument("--torch-path", action="store_true", help="also time the torch tile path (training's)")
    p.add_argument("--breakdown", action="store_true",
                   help="also time our squared part distances alone (Eq. 1 + 2 replaced by their sum; default: off)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    args = p.parse_args(argv)
    rng = np.random.default_rng(args.seed)
    h, c = args.parts, args.channels
    # ReLU-like local features; a tenth of the gallery are near-duplicates of queries
    q = np.abs(rng.standard_normal((args.num_query, h, c))).astype(np.float32)
    g = np.abs(rng.standard_normal((args.num_gallery, h, c))).astype(np.float32)
    dup = rng.choice(args.num_gallery, args.num_gallery // 10, replace=False)
    g[dup] = q[rng.integers(0, args.num_query, dup.size)] + rng.standard_normal((dup.size, h, c)).astype(np.float32) * 1e-3

    candidates = {"ours: local_distance_cpu (compiled)": lambda: local_distance_cpu(q, g)}
    peer = None
    if args.alignedreid_src:
        sys.path.insert(0, str(Path(args.alignedreid_src)))
        from aligned_reid.utils.distance import local_dist as peer  # noqa: PLC0415
        candidates = {"huanghoujing local_dist (numpy) [peer]": lambda: peer(q, g), **candidates}
    qf, gf = q.reshape(-1, c), g.reshape(-1, c)
    candidates["float32 BLAS product alone (numpy)"] = lambda: qf @ gf.T
    if args.torch_path:
        tq, tg = torch.from_numpy(q), torch.from_numpy(g)

        def torch_tiles():
            with torch.no_grad():
                return np.concatenate([local_distance(tq[s:s + 64], tg).numpy() for s in range(0, len(tq), 64)])
        candidates["ours: torch local_distance tiles (training path)"] = torch_tiles
    if args.breakdown:
        squares_only = build_kernel(h, shortest_path=sum_of_cells)
        yt = gallery_lanes(g)

        def squared_distances_alone():
            out = np.empty((len(q), len(g)), np.float32)
            with kernel_threads():
                squares_only(q, yt, len(g), out)
            return out
        candidates["ours: squared part distances alone"] = squared_distances_alone
    local_distance_cpu(q[:2], g[:2])  # kernel cache
    base = "huanghoujing local_dist (numpy) [peer]"
    print(f"local distance {args.num_query} x {args.num_gallery} pairs, H = {h}, c = {c}; "
          f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}, torch threads {torch.get_num_threads()}")
    idle = run_round(candidates, args.repeats)
    report(idle, f"this machine as it is (ours uses {free_cores()} thread(s) by the free-core policy)", base)

    want = float64_local_distance(q[:args.check], g)
    for name, (out, _, _) in idle.items():
        if " alone" in name:
            continue  # the product / the squared distances alone are no local distance
        err = np.abs(out[:args.check] - want)
        print(f"  {name:<46s} max |error| vs float64 {err.max():.1e} (near-duplicate pairs "
              f"{err[:, dup].max():.1e})")

    if args.busy:
        ctx = mp.get_context("fork")
        stop = ctx.Event()
        procs = [ctx.Process(target=spin, args=(stop,), daemon=True) for _ in range(args.busy)]
        for pr in procs:
            pr.start()
        time.sleep(1.0)
        try:
            loaded = run_round(candidates, args.repeats)
        finally:
            stop.set()
            for pr in procs:
                pr.join()
        report(loaded, f"with {args.busy} more busy processes (ours picks {free_cores()} thread(s) after they stop)",
               base)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

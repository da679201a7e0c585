"""Evaluation and k-reciprocal re-ranking at Market-1501 size vs the straightforward versions.

Baselines, measured in the same run (both live in the tests, the single
source of truth for the "straightforward implementation"):

* evaluation: ``plain_evaluate`` in tests/test_evaluation.py, one full stable
  argsort per query on a precomputed (Q, G) matrix;
* re-ranking: ``dense_re_ranking`` in tests/test_rerank.py, the authors' dense
  algorithm transcribed; its (N+M)^2 matrices (1.5 GB float32 each at Market
  size, ~8 GB peak, several minutes) only run at ``--ref-query x --ref-gallery``
  by default, at full size with ``--full-reference``.

Features are random and clustered (``--ids`` identities, centre scale
``--separation``, unit noise), dim ``--dim``. Peak memory: tracemalloc's peak
of the numpy allocations made during the call (inputs not counted); the dense
baseline is timed in an untraced run (tracing doubles its time). ``--msmt`` / ``--only-msmt`` add the MSMT17-size
run (11,659 x 82,161) of the blockwise code only (minutes; a small --dim with a
larger --separation keeps it shorter, e.g. --dim 128 --separation 1.2).

    .venv/bin/python bench/bench_eval.py            # < 2 min on 2 cores
"""
from __future__ import annotations

import argparse
import importlib.util
import resource
import time
import tracemalloc
from pathlib import Path

import numpy as np

from reid_train.evaluation.metrics import evaluate_features, evaluate_rank, pairwise_distance
from reid_train.evaluation.rerank import k_reciprocal_rerank, k_reciprocal_rerank_dist

ROOT = Path(__file__).resolve().parents[1]


def load_test_module(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "tests" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def measure(fn, *args, memory_run=False, **kwargs):
    """(result, seconds, peak bytes allocated during the call) of one call.

    Memory is tracemalloc's peak of the allocations made by the call (numpy
    arrays are traced; torch's own buffers are not, only the small top-k
    outputs here). Tracing slows Python loops (2x on the dense re-ranking
    baseline), so with ``memory_run=True`` the call is timed untraced and run
    a second time, traced, for the memory figure."""
    if not memory_run:
        tracemalloc.start()
    t0 = time.perf_counter()
    result = fn(*args, **kwargs)
    seconds = time.perf_counter() - t0
    if memory_run:
        del result
        tracemalloc.start()
        result = fn(*args, **kwargs)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return result, seconds, peak


def clustered(num_query, num_gallery, dim, ids, separation, num_cams, seed):
    rng = np.random.default_rng(seed)
    centres = separation * rng.standard_normal((ids, dim), dtype=np.float32)
    q_pids, g_pids = rng.integers(ids, size=num_query), rng.integers(ids, size=num_gallery)
    qf = centres[q_pids] + rng.standard_normal((num_query, dim), dtype=np.float32)
    gf = centres[g_pids] + rng.standard_normal((num_gallery, dim), dtype=np.float32)
    return qf, gf, q_pids, g_pids, rng.integers(num_cams, size=num_query), rng.integers(num_cams, size=num_gallery)


def row(name, seconds, mem, extra=""):
    print(f"  {name:<46s} {seconds:8.2f} s  {mem / 2**20:9.1f} MiB  {extra}")


def bench_evaluation(args, data):
    plain_evaluate = load_test_module("test_evaluation").plain_evaluate
    qf, gf, qp, gp, qc, gc = data
    print(f"\n== evaluation {len(qf)} x {len(gf)}, dim {qf.shape[1]}, metric euclidean")
    dist, t_dist, m_dist = measure(pairwise_distance, qf, gf, "euclidean", 512)
    row("pairwise_distance (full Q x G matrix)", t_dist, m_dist)
    ref, t_ref, m_ref = measure(plain_evaluate, dist, qp, gp, qc, gc)
    row("plain per-query argsort  [baseline]", t_ref, m_ref)
    fast, t_fast, m_fast = measure(evaluate_rank, dist, qp, gp, qc, gc, block_size=args.block_size)
    row("evaluate_rank on the matrix", t_fast, m_fast, f"x{t_ref / t_fast:.1f} faster")
    del dist
    feat, t_feat, m_feat = measure(evaluate_features, qf, gf, qp, gp, qc, gc, "euclidean",
                                   block_size=args.block_size)
    row("evaluate_features (distances per block)", t_feat, m_feat,
        f"x{(t_dist + t_ref) / t_feat:.1f} vs matrix + baseline")
    same = (np.allclose(fast["cmc"], ref["cmc"], atol=1e-12) and abs(fast["mAP"] - ref["mAP"]) < 1e-12
            and abs(fast["mINP"] - ref["mINP"]) < 1e-12)
    print(f"  identical to baseline: {same}; features path |dmAP| = {abs(feat['mAP'] - ref['mAP']):.1e}")
    print(f"  mAP {fast['mAP']:.4f}  mINP {fast['mINP']:.4f}  rank1/5/10/20 "
          f"{fast['rank1']:.4f}/{fast['rank5']:.4f}/{fast['rank10']:.4f}/{fast['rank20']:.4f}  "
          f"valid {fast['num_valid_queries']}  skipped {fast['num_skipped_queries']}")


def bench_rerank_vs_dense(nq, ng, args, data):
    dense_re_ranking = load_test_module("test_rerank").dense_re_ranking
    qf, gf = data[0][:nq], data[1][:ng]
    print(f"\n== re-ranking vs dense reference, {nq} x {ng} (n = {nq + ng}), dim {qf.shape[1]}")
    q64, g64 = qf.astype(np.float64), gf.astype(np.float64)  # reference matrices without float32 sqrt rounding
    mats = (pairwise_distance(q64, g64), pairwise_distance(q64, q64), pairwise_distance(g64, g64))
    ref, t_ref, m_ref = measure(dense_re_ranking, *mats, memory_run=True)
    row("dense re_ranking(q_g, q_q, g_g)  [baseline]", t_ref, m_ref)
    same, t_same, m_same = measure(k_reciprocal_rerank_dist, *mats)
    row("k_reciprocal_rerank_dist (same matrices)", t_same, m_same, f"x{t_ref / t_same:.1f} faster, "
        f"max|diff| {np.abs(same - ref).max():.1e}")
    del mats
    feat, t_feat, m_feat = measure(k_reciprocal_rerank, qf, gf, block_size=args.rerank_block)
    row("k_reciprocal_rerank (float32 features)", t_feat, m_feat, f"x{t_ref / t_feat:.1f} faster, "
        f"max|diff| {np.abs(feat - ref).max():.1e} ({(np.abs(feat - ref) > 1e-5).mean():.3%} > 1e-5)")
    print("  (the features path computes float32 distances: where float32 rounding swaps two neighbours "
          "at a k-boundary the result moves, as the dense code itself does on float32 matrices)")


def bench_rerank_full(args, data, label):
    qf, gf, qp, gp, qc, gc = data
    print(f"\n== re-ranking alone, {label} {len(qf)} x {len(gf)} (n = {len(qf) + len(gf)}), dim {qf.shape[1]}")
    out, t, m = measure(k_reciprocal_rerank, qf, gf, block_size=args.rerank_block)
    row("k_reciprocal_rerank (features)", t, m, f"output {out.nbytes / 2**20:.0f} MiB")
    before = evaluate_features(qf, gf, qp, gp, qc, gc, block_size=args.block_size)
    after = evaluate_rank(out, qp, gp, qc, gc, block_size=args.block_size)
    print(f"  mAP {before['mAP']:.4f} -> {after['mAP']:.4f}, rank1 {before['rank1']:.4f} -> {after['rank1']:.4f}")
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--num-query", type=int, default=3368, help="Market-1501: 3368")
    p.add_argument("--num-gallery", type=int, default=15913, help="Market-1501: 15913")
    p.add_argument("--dim", type=int, default=2048)
    p.add_argument("--ids", type=int, default=750)
    p.add_argument("--separation", type=float, default=0.3, help="identity centre scale (noise is 1)")
    p.add_argument("--ref-query", type=int, default=600, help="size of the dense re-ranking comparison")
    p.add_argument("--ref-gallery", type=int, default=2400)
    p.add_argument("--full-reference", action="store_true",
                   help="also run the dense re-ranking at full size (~8 GB, minutes)")
    p.add_argument("--skip-eval", action="store_true")
    p.add_argument("--skip-rerank", action="store_true")
    p.add_argument("--msmt", action="store_true", help="add the MSMT17-size run (11,659 x 82,161)")
    p.add_argument("--only-msmt", action="store_true", help="only the MSMT17-size run")
    p.add_argument("--block-size", type=int, default=256, help="query rows per evaluation block")
    p.add_argument("--rerank-block", type=int, default=None, help="rows per re-ranking distance block")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)

    if not args.only_msmt:
        data = clustered(args.num_query, args.num_gallery, args.dim, args.ids, args.separation, 6, args.seed)
        if not args.skip_eval:
            bench_evaluation(args, data)
        if not args.skip_rerank:
            bench_rerank_vs_dense(min(args.ref_query, args.num_query), min(args.ref_gallery, args.num_gallery),
                                  args, data)
            bench_rerank_full(args, data, "full size")
            if args.full_reference:
                bench_rerank_vs_dense(args.num_query, args.num_gallery, args, data)
        del data
    if args.msmt or args.only_msmt:
        msmt = clustered(11659, 82161, args.dim, 3060, args.separation, 15, args.seed)
        print(f"\n== MSMT17 size 11659 x 82161, dim {args.dim}")
        if not args.skip_eval:
            res, t, m = measure(evaluate_features, *msmt[:6], block_size=args.block_size)
            row("evaluate_features", t, m, f"mAP {res['mAP']:.4f}")
        if not args.skip_rerank:
            bench_rerank_full(args, msmt, "MSMT17")
    print(f"\nprocess peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GiB")


if __name__ == "__main__":
    main()

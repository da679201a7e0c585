"""Evaluation and k-reciprocal re-ranking against what users run instead, same inputs, same run.

Peers, from local checkouts (the rows are skipped without them):

* ``--torchreid-src``: a checkout of github.com/KaiyangZhou/deep-person-reid with its
  Cython built (``cd torchreid/metrics/rank_cylib && python setup.py build_ext --inplace``):
  ``evaluate_cy`` (its fast path) and ``torchreid/utils/rerank.py:re_ranking``;
* ``--fastreid-src``: a checkout of github.com/JDAI-CV/fast-reid with
  ``fastreid/evaluation/rank_cylib`` built the same way: ``evaluate_cy`` (also mINP).

Ours: :func:`reid_train.evaluation.metrics.evaluate_rank` / ``evaluate_features`` and
:func:`reid_train.evaluation.rerank.k_reciprocal_rerank_dist` / ``k_reciprocal_rerank``.

1. Market-1501 size (3,368 x 15,913): evaluation of one float32 distance matrix,
   ``--repeats`` interleaved repeats, best wall time of each; CMC / mAP / mINP compared.
2. MSMT17 size (11,659 x 82,161): ``evaluate_features`` from features (dim ``--msmt-dim``),
   the (Q, G) matrix never held; wall time, peak RSS growth, and the share of the time in
   the float32 distance product (timed alone in the same run).
3. Market size re-ranking from the three distance matrices (the peer's API) and from
   features (the peer's user computes the matrices with torchreid's
   ``compute_distance_matrix`` first; that time is added to its row). One run each (the
   dense peer takes minutes and ~8 GB); outputs compared. Also timed: our float32 block
   products alone (the floor of the from-features row), and the ratio that floor allows.
4. ``--msmt-rerank``: ours at MSMT17 size (the dense peer would need ~35 GB).

Features are random and clustered (``--ids`` identities, centre scale ``--separation``,
unit noise). Peak memory is the growth of the process's resident set during the call,
sampled every 5 ms. The machine is shared: wall times are noisy, the ratios are same-run.

    python bench/bench_eval.py --torchreid-src ../scratch/deep-person-reid --fastreid-src ../scratch/fast-reid
    python bench/bench_eval.py --quick     # smaller sizes, a minute
    python bench/bench_eval.py --device cuda --msmt-rerank     # on a GPU (bench/gpu_suite.sh)
"""
from __future__ import annotations

import argparse
import glob
import importlib.machinery
import importlib.util
import os
import threading
import time
from pathlib import Path

import numpy as np
import torch

from reid_train.evaluation.metrics import evaluate_features, evaluate_rank, pairwise_distance
from reid_train.evaluation.rerank import k_reciprocal_rerank, k_reciprocal_rerank_dist


# ----------------------------------------------------------------------------
# peers
# ----------------------------------------------------------------------------
def load_extension(pattern: str):
    """A built Cython module ``rank_cy`` from its .so (each checkout its own copy)."""
    found = sorted(glob.glob(pattern))
    if not found:
        return None
    loader = importlib.machinery.ExtensionFileLoader("rank_cy", found[0])
    module = importlib.util.module_from_spec(importlib.util.spec_from_loader("rank_cy", loader))
    loader.exec_module(module)
    return module


def load_source(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def peers(args) -> dict:
    out = {}
    if args.torchreid_src:
        root = Path(args.torchreid_src)
        cy = load_extension(str(root / "torchreid/metrics/rank_cylib/rank_cy*.so"))
        if cy is None:
            print(f"torchreid: no built Cython under {root}/torchreid/metrics/rank_cylib "
                  "(python setup.py build_ext --inplace there); its evaluation row is skipped")
        else:
            out["torchreid_eval"] = cy.evaluate_cy
        out["torchreid_rerank"] = load_source("torchreid_rerank", root / "torchreid/utils/rerank.py").re_ranking
        out["torchreid_distance"] = load_source("torchreid_distance",
                                                root / "torchreid/metrics/distance.py").compute_distance_matrix
    if args.fastreid_src:
        cy = load_extension(str(Path(args.fastreid_src) / "fastreid/evaluation/rank_cylib/rank_cy*.so"))
        if cy is None:
            print(f"fast-reid: no built Cython under {args.fastreid_src}; its row is skipped")
        else:
            out["fastreid_eval"] = cy.evaluate_cy
    return out


# ----------------------------------------------------------------------------
# measuring
# ----------------------------------------------------------------------------
def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def measure(fn, *args, **kwargs):
    """(result, wall seconds, CPU seconds, peak RSS growth in bytes) of one call."""
    base, peak, done = _rss(), [0], threading.Event()

    def sample():
        while not done.wait(0.005):
            peak[0] = max(peak[0], _rss())

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    t0, c0 = time.perf_counter(), time.process_time()
    result = fn(*args, **kwargs)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    done.set()
    sampler.join()
    return result, wall, cpu, max(peak[0], _rss()) - base


def row(name, wall, cpu=None, mem=None, extra=""):
    cpu_s = f"{cpu:7.2f} s CPU" if cpu is not None else " " * 13
    mem_s = f"{mem / 2**20:8.0f} MiB" if mem is not None else " " * 12
    print(f"  {name:<52s} {wall:8.3f} s  {cpu_s}  {mem_s}  {extra}")


def clustered(num_query, num_gallery, dim, ids, separation, num_cams, seed):
    rng = np.random.default_rng(seed)
    centres = separation * rng.standard_normal((ids, dim), dtype=np.float32)
    q_pids, g_pids = rng.integers(ids, size=num_query), rng.integers(ids, size=num_gallery)
    qf = centres[q_pids] + rng.standard_normal((num_query, dim), dtype=np.float32)
    gf = centres[g_pids] + rng.standard_normal((num_gallery, dim), dtype=np.float32)
    return qf, gf, q_pids, g_pids, rng.integers(num_cams, size=num_query), rng.integers(num_cams, size=num_gallery)


# ----------------------------------------------------------------------------
# sections
# ----------------------------------------------------------------------------
def bench_evaluation(args, data, peer):
    qf, gf, qp, gp, qc, gc = data
    print(f"\n== evaluation {len(qf)} x {len(gf)} float32 distance matrix (dim {qf.shape[1]}), "
          f"best of {args.repeats} interleaved repeats")
    dist = pairwise_distance(qf, gf, "euclidean", 512)
    evaluate_rank(dist[:8], qp[:8], gp, qc[:8], gc)  # compile / load the kernel cache
    candidates = {"ours": lambda: evaluate_rank(dist, qp, gp, qc, gc)}
    if "torchreid_eval" in peer:
        candidates["torchreid"] = lambda: peer["torchreid_eval"](dist, qp, gp, qc, gc, 50)
    if "fastreid_eval" in peer:
        candidates["fastreid"] = lambda: peer["fastreid_eval"](dist, qp, gp, qc, gc, 50)
    best, results = {}, {}
    for _ in range(args.repeats):
        for name, fn in candidates.items():
            res, wall, cpu, mem = measure(fn)
            results[name] = res
            if name not in best or wall < best[name][0]:
                best[name] = (wall, cpu, mem)
    ours = results["ours"]
    labels = {"torchreid": "torchreid evaluate_cy (Cython)", "fastreid": "fast-reid evaluate_cy (Cython)"}
    for name in ("torchreid", "fastreid"):
        if name in best:
            row(labels[name], *best[name])
    w, c, m = best["ours"]
    row("evaluate_rank (ours, compiled)", w, c, m)
    for name in ("torchreid", "fastreid"):
        if name not in best:
            continue
        res = results[name]
        cmc, m_ap = np.asarray(res[0])[:20], float(np.mean(res[1]))
        diffs = f"|dCMC| {np.abs(cmc - ours['cmc']).max():.1e}, |dmAP| {abs(m_ap - ours['mAP']):.1e}"
        if name == "fastreid":
            diffs += f", |dmINP| {abs(float(np.mean(res[2])) - ours['mINP']):.1e}"
        print(f"  vs {name}: {best[name][0] / w:5.1f}x wall, {best[name][1] / c:5.1f}x CPU; {diffs}")
    feat, t_feat, c_feat, m_feat = measure(evaluate_features, *on_device(args, qf, gf), qp, gp, qc, gc)
    row(f"evaluate_features (ours, from features on {args.device})", t_feat, c_feat, m_feat,
        f"|dmAP| vs the matrix {abs(feat['mAP'] - ours['mAP']):.1e}")
    print(f"  mAP {ours['mAP']:.4f}  mINP {ours['mINP']:.4f}  rank-1 {ours['rank1']:.4f}  "
          f"valid queries {ours['num_valid_queries']}, skipped {ours['num_skipped_queries']}")
    return ours


def on_device(args, *arrays):
    if args.device == "cpu":
        return arrays
    return tuple(torch.from_numpy(a).to(args.device) for a in arrays)


def sync(args):
    if args.device.startswith("cuda"):
        torch.cuda.synchronize()


def bench_msmt_eval(args, dim):
    data = clustered(args.msmt_query, args.msmt_gallery, dim, 3060, args.separation, 15, args.seed)
    qf, gf = data[0], data[1]
    print(f"\n== MSMT17-size evaluation from features: {len(qf)} x {len(gf)}, dim {dim} "
          f"(features {(qf.nbytes + gf.nbytes) / 2**20:.0f} MiB), features on {args.device}")
    dq, dg = on_device(args, qf, gf)
    res, wall, cpu, mem = measure(evaluate_features, dq, dg, *data[2:], block_size=args.block_size)
    row("evaluate_features (ours)", wall, cpu, mem, f"mAP {res['mAP']:.4f}")
    t0 = time.perf_counter()
    if args.device == "cpu":
        block = np.empty((args.block_size, len(gf)), np.float32)
        for s in range(0, len(qf), args.block_size):
            q = qf[s:s + args.block_size]
            np.matmul(q, gf.T, out=block[:len(q)])
    else:
        for s in range(0, len(qf), args.block_size):
            (dq[s:s + args.block_size] @ dg.T).cpu()
        sync(args)
    gemm = time.perf_counter() - t0
    flops = 2.0 * len(qf) * len(gf) * qf.shape[1]
    print(f"  of which the float32 product q.g (and its copy to the host) alone: {gemm:.2f} s "
          f"({flops / gemm / 1e9:.0f} GFLOP/s, {gemm / wall:.0%} of the wall time); "
          f"ranking + the rest {max(wall - gemm, 0):.2f} s; goal <= 15 s and < 2 GB "
          f"{'met' if wall <= 15 and mem < 2 * 2**30 else 'not met'}")


def bench_rerank(args, data, peer):
    qf, gf = data[0], data[1]
    nq, ng = len(qf), len(gf)
    print(f"\n== re-ranking {nq} x {ng} (n = {nq + ng}), dim {qf.shape[1]}, k1 = 20, k2 = 6, lambda = 0.3")
    tq, tg = torch.from_numpy(qf), torch.from_numpy(gf)
    if "torchreid_distance" in peer:  # what a torchreid user runs: squared euclidean from torch, then the root
        dist_fn = peer["torchreid_distance"]
        mats, t_mats, c_mats, _ = measure(lambda: tuple(dist_fn(a, b).clamp_min_(0).sqrt_().numpy()
                                                        for a, b in ((tq, tg), (tq, tq), (tg, tg))))
        row("torchreid compute_distance_matrix x 3 (+ sqrt)", t_mats, c_mats)
    else:
        mats = (pairwise_distance(qf, gf), pairwise_distance(qf, qf), pairwise_distance(gf, gf))
        t_mats = c_mats = None
    # load the kernels for these dtypes and layouts (compiled once per machine, cached on disk)
    k_reciprocal_rerank_dist(*(np.ascontiguousarray(m[:50, :50]) for m in (mats[0], mats[1], mats[1])))
    k_reciprocal_rerank(*on_device(args, qf[:50], gf[:50]))
    ours, t_ours, c_ours, m_ours = measure(k_reciprocal_rerank_dist, *mats)
    ref = None
    if "torchreid_rerank" in peer:
        ref, t_ref, c_ref, m_ref = measure(peer["torchreid_rerank"], *mats)
        row("torchreid re_ranking(q_g, q_q, g_g)  (dense numpy)", t_ref, c_ref, m_ref)
    row("k_reciprocal_rerank_dist (ours, same matrices)", t_ours, c_ours, m_ours)
    if ref is not None:
        print(f"  from matrices: {t_ref / t_ours:5.1f}x wall, {c_ref / c_ours:5.1f}x CPU; "
              f"max |difference| {np.abs(ours - ref).max():.1e}")
    del mats
    feat, t_feat, c_feat, m_feat = measure(k_reciprocal_rerank, *on_device(args, qf, gf))
    row(f"k_reciprocal_rerank (ours, from features on {args.device})", t_feat, c_feat, m_feat)
    if args.device == "cpu":  # our floor: the products of the symmetric block pairs alone, same BLAS call
        both, block = np.concatenate([qf, gf]), 2048
        _, t_prod, c_prod, _ = measure(lambda: [both[i:i + block] @ both[j:j + block].T
                                                for i in range(0, len(both), block)
                                                for j in range(i, len(both), block)])
        flops = len(both) * (len(both) + block) * qf.shape[1]
        row("  of which the float32 block products alone", t_prod, c_prod, None,
            f"{flops / 1e12:.3f} TFLOP, {flops / t_prod / 1e9:.0f} GFLOP/s, {t_prod / t_feat:.0%} of the wall time")
    if ref is not None and t_mats is not None:
        peer_wall, peer_cpu = t_mats + t_ref, c_mats + c_ref
        print(f"  from features (peer: distances + re_ranking = {peer_wall:.1f} s): {peer_wall / t_feat:5.1f}x wall, "
              f"{peer_cpu / c_feat:5.1f}x CPU; max |difference| {np.abs(feat - ref).max():.1e} "
              f"({(np.abs(feat - ref) > 1e-6).mean():.3%} of entries > 1e-6)")
        if args.device == "cpu":
            print(f"  bound set by our product alone: {peer_wall / t_prod:5.1f}x wall, {peer_cpu / c_prod:5.1f}x CPU")
    return ours


def bench_msmt_rerank(args, dim):
    data = clustered(args.msmt_query, args.msmt_gallery, dim, 3060, args.separation, 15, args.seed)
    print(f"\n== MSMT17-size re-ranking from features: {len(data[0])} x {len(data[1])}, dim {dim}")
    out, wall, cpu, mem = measure(k_reciprocal_rerank, *on_device(args, data[0], data[1]))
    row("k_reciprocal_rerank (ours)", wall, cpu, mem, f"output {out.nbytes / 2**30:.2f} GiB")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--torchreid-src", help="checkout of KaiyangZhou/deep-person-reid, Cython built (default: skip)")
    p.add_argument("--fastreid-src", help="checkout of JDAI-CV/fast-reid, Cython built (default: skip)")
    p.add_argument("--num-query", type=int, default=3368, help="Market-1501: 3368 (default)")
    p.add_argument("--num-gallery", type=int, default=15913, help="Market-1501: 15913 (default)")
    p.add_argument("--dim", type=int, default=2048, help="feature dimension (default 2048)")
    p.add_argument("--ids", type=int, default=750, help="identities (default 750)")
    p.add_argument("--separation", type=float, default=0.3, help="identity centre scale, noise is 1 (default 0.3)")
    p.add_argument("--repeats", type=int, default=3, help="interleaved evaluation repeats (default 3)")
    p.add_argument("--msmt-query", type=int, default=11659, help="MSMT17: 11659 (default)")
    p.add_argument("--msmt-gallery", type=int, default=82161, help="MSMT17: 82161 (default)")
    p.add_argument("--msmt-dim", type=int, nargs="+", default=[2048],
                   help="feature dimension(s) of the MSMT17 runs, one run each (default 2048; e.g. 256 512 2048)")
    p.add_argument("--skip-eval", action="store_true", help="no Market-size evaluation")
    p.add_argument("--skip-msmt", action="store_true", help="no MSMT17-size evaluation")
    p.add_argument("--skip-rerank", action="store_true", help="no Market-size re-ranking")
    p.add_argument("--msmt-rerank", action="store_true", help="add the MSMT17-size re-ranking (minutes, ~5 GB)")
    p.add_argument("--block-size", type=int, default=256, help="query rows per evaluation block (default 256)")
    p.add_argument("--quick", action="store_true", help="small sizes (600 x 2400, MSMT 1000 x 6000, dim 128)")
    p.add_argument("--device", default="cpu", help="where features live for the from-features rows: cpu or cuda "
                                                   "(distances computed there; default cpu)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    args = p.parse_args(argv)
    if args.quick:
        args.num_query, args.num_gallery, args.dim = 600, 2400, 128
        args.msmt_query, args.msmt_gallery, args.msmt_dim, args.repeats = 1000, 6000, [128], 1
    peer = peers(args)
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores; peers: {sorted(peer) or 'none'}")
    data = clustered(args.num_query, args.num_gallery, args.dim, args.ids, args.separation, 6, args.seed)
    if not args.skip_eval:
        bench_evaluation(args, data, peer)
    if not args.skip_rerank:
        bench_rerank(args, data, peer)
    del data
    for dim in args.msmt_dim if not args.skip_msmt else ():
        bench_msmt_eval(args, dim)
    for dim in args.msmt_dim if args.msmt_rerank else ():
        bench_msmt_rerank(args, dim)


if __name__ == "__main__":
    main()

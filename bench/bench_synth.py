"""Throughput of the synthetic world generator (priors.synthetic), with baselines measured in the same run.

Prints:

1. ``write_dataset`` end to end (render + JPEG + ground-truth sidecar + attributes) in images/s;
2. rendering alone (``render_person``) in images/s, and the file writing alone (JPEG encode + sidecar
   npz) for the same images: the ratio says how many times the bare cost of writing an image the
   rendering adds;
3. the batched rasteriser (``rasterise_all``) against the per-primitive vectorised reference
   (``rasterise`` in a loop) and against a per-pixel Python loop over the same primitives (the naive
   baseline, on a few images), with the fraction of pixels whose part label agrees.

Usage: ``python bench/bench_synth.py [--ids 40 --images-per-id 8 --size 128x64]``. One process, one core
for numpy (set OMP_NUM_THREADS=1 for a single-core figure).
"""
from __future__ import annotations

import argparse
import math
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

from priors.synthetic import plan_dataset, render_person, sample_camera, sample_identities, write_dataset
from priors.synthetic.body import body_primitives
from priors.synthetic.cli import parse_size
from priors.synthetic.dataset import _identity_for, save_npz
from priors.synthetic.raster import KINDS, Buffers, View, rasterise, rasterise_all, resampled_profile


def naive_rasterise(prims, view: View, buf: Buffers) -> None:
    """Per-pixel Python loop with the same formulas as priors.synthetic.raster (the baseline)."""
    H, W = buf.layer.shape
    c, s = math.cos(math.radians(view.yaw)), math.sin(math.radians(view.yaw))
    for prim in prims:
        (x0, y0, z0), (x1, y1, z1) = view.project(prim.p0), view.project(prim.p1)
        k = prim.depth_ratio
        ws = math.sqrt(c * c + (k * s) ** 2)
        reach = max(prim.radii) * ws * max(1.0, *prim.caps)
        profile = resampled_profile(prim).tolist()
        length = max(math.hypot(x1 - x0, y1 - y0), 1e-6)
        ex, ey = (x1 - x0) / length, (y1 - y0) / length
        r_lo = max(0, int((min(y0, y1) - reach - view.top) * view.scale_y))
        r_hi = min(H, int((max(y0, y1) + reach - view.top) * view.scale_y) + 2)
        c_lo = max(0, int((min(x0, x1) - reach - view.left) * view.scale_x))
        c_hi = min(W, int((max(x0, x1) + reach - view.left) * view.scale_x) + 2)
        for r in range(r_lo, r_hi):
            for col in range(c_lo, c_hi):
                X, Y = (col + 0.5) / view.scale_x + view.left - x0, (r + 0.5) / view.scale_y + view.top - y0
                along, lateral = X * ex + Y * ey, X * ey - Y * ex
                clamped = min(max(along, 0.0), length)
                excess, t = along - clamped, clamped / length
                g = t * (len(profile) - 1)
                i0 = min(int(g), len(profile) - 2)
                a = profile[i0] * (1 - (g - i0)) + profile[i0 + 1] * (g - i0)
                w = max(a * ws, 1e-6)
                cap = prim.caps[0] if excess < 0 else prim.caps[1]
                e = excess / max(cap * w, 1e-6) if cap > 0 else (0.0 if excess == 0 else 2.0)
                across = lateral / w
                if across * across + e * e > 1.0:
                    continue
                ring = math.sqrt(max(1 - e * e, 0.0))
                x = across * ws / max(ring, 1e-6)
                qa, qb, qc = s * s + c * c / k**2, 2 * c * s * (1 - 1 / k**2) * x, x * x * (c * c + s * s / k**2) - 1
                z = (-qb + math.sqrt(max(qb * qb - 4 * qa * qc, 0.0))) / (2 * qa)
                depth = z0 + t * (z1 - z0) + a * ring * z
                xb, zb = x * c + z * s, -x * s + z * c
                kind = KINDS[prim.kind]
                if kind == KINDS["limb"]:
                    part = prim.parts[1] if zb >= 0 else prim.parts[0]
                elif kind == KINDS["head"]:
                    part = prim.parts[1] if xb >= 0 else prim.parts[0]
                else:
                    part = prim.parts[0]
                if depth > buf.z_app[r, col]:
                    buf.z_app[r, col], buf.layer[r, col] = depth, part
                if not prim.cloth and depth > buf.z_body[r, col]:
                    buf.z_body[r, col], buf.i[r, col] = depth, part if prim.kind != "acc" else 0


CPU = {}


def timed(fn, *args, repeat: int = 1):
    """Best wall-clock time of ``repeat`` runs; the CPU time of that run is kept in ``CPU['last']``."""
    best = float("inf")
    for _ in range(repeat):
        t, c = time.perf_counter(), time.process_time()
        out = fn(*args)
        if time.perf_counter() - t < best:
            best, CPU["last"] = time.perf_counter() - t, time.process_time() - c
    return best, out


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ids", type=int, default=40, help="identities for write_dataset (default 40)")
    ap.add_argument("--images-per-id", type=int, default=8, help="images per identity (default 8)")
    ap.add_argument("--cameras", type=int, default=6, help="cameras (default 6)")
    ap.add_argument("--size", type=parse_size, default=(128, 64), help="image size HxW (default 128x64)")
    ap.add_argument("--supersample", type=int, default=2, help="internal render scale (default 2)")
    ap.add_argument("--naive-images", type=int, default=2, help="images for the per-pixel loop baseline (default 2)")
    ap.add_argument("--workers", type=int, default=1, help="also time write_dataset with this many processes (default 1: skip)")
    ap.add_argument("--seed", type=int, default=0, help="world seed (default 0)")
    args = ap.parse_args(argv)
    H, W = args.size
    print(f"synthetic world bench: {args.ids} ids x {args.images_per_id} images, {args.cameras} cameras, {H}x{W}, "
          f"supersample {args.supersample}")

    with tempfile.TemporaryDirectory() as tmp:
        t, summary = timed(lambda: write_dataset(tmp, args.ids, args.images_per_id, args.cameras, args.seed, size=(H, W),
                                                 progress=False, supersample=args.supersample))
    n = summary["images"]
    print(f"1. write_dataset end to end: {n} images in {t:.2f} s = {n / t:.1f} images/s "
          f"({n / CPU['last']:.1f} images per CPU-second of this process)")

    specs, _ = plan_dataset(args.ids, args.images_per_id, args.cameras, args.seed)
    specs = specs[: min(len(specs), 300)]
    identities = {i.pid: i for i in sample_identities(list(range(1, args.ids + 1)), args.seed)}
    cams = {c: sample_camera(c, args.seed) for c in range(1, args.cameras + 1)}

    def render_all(supersample):
        return [render_person(_identity_for(sp, identities, args.seed), sp.pose, sp.yaw, cams[sp.camid], sp.box, sp.occlusion,
                              size=(H, W), supersample=supersample, seed=sp.render_seed) for sp in specs]

    t_render, results = timed(render_all, args.supersample)
    cpu_render = CPU["last"]
    t_render1, _ = timed(render_all, 1)
    cpu_render1 = CPU["last"]
    with tempfile.TemporaryDirectory() as tmp:
        def write_all():
            for k, r in enumerate(results):
                ok, jpg = cv2.imencode(".jpg", r["image"][..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 90])
                with open(f"{tmp}/{k}.jpg", "wb") as fh:
                    fh.write(jpg.tobytes())
                save_npz(Path(tmp) / f"{k}.npz", i=r["i"], u=r["u"], v=r["v"], parsing=r["parsing"], mask=r["mask"])

        t_write, _ = timed(write_all)
    m = len(specs)
    print(f"2. render_person alone: {m / t_render:.1f} images/s ({1e3 * t_render / m:.2f} ms/image; "
          f"{m / cpu_render:.1f} per CPU-second, {m / cpu_render1:.1f} with supersample 1); "
          f"baseline JPEG encode + sidecar write alone: {m / t_write:.1f} images/s ({1e3 * t_write / m:.2f} ms/image); "
          f"rendering costs {t_render / t_write:.1f}x the file writing; with supersample 1: {m / t_render1:.1f} images/s")
    if args.workers > 1:
        with tempfile.TemporaryDirectory() as tmp:
            t_par, _ = timed(lambda: write_dataset(tmp, args.ids, args.images_per_id, args.cameras, args.seed, size=(H, W),
                                                   progress=False, supersample=args.supersample, workers=args.workers))
        print(f"   write_dataset with {args.workers} worker processes: {n / t_par:.1f} images/s ({t / t_par:.2f}x one process)")

    view = View(30.0, 2 * H / 1.15, 2 * H / 1.15, -0.3, -0.06, ambient=0.5)
    shape = (int(2.3 * H / 1.15) + 8, 2 * W + 16)
    prim_sets = [body_primitives(_identity_for(sp, identities, args.seed), sp.pose) for sp in specs[:20]]
    t_batch, _ = timed(lambda: [rasterise_all(p, view, Buffers.empty(*shape)) for p in prim_sets], repeat=3)
    t_loop, _ = timed(lambda: [[rasterise(q, view, b) for q in p] for p in prim_sets for b in [Buffers.empty(*shape)]], repeat=3)
    agree = []
    t_naive = 0.0
    for p in prim_sets[: args.naive_images]:
        fast, slow = Buffers.empty(*shape), Buffers.empty(*shape)
        rasterise_all(p, view, fast)
        t0 = time.perf_counter()
        naive_rasterise(p, view, slow)
        t_naive += time.perf_counter() - t0
        agree.append(float(np.mean(fast.layer == slow.layer)))
    per_batch = t_batch / len(prim_sets)
    per_naive = t_naive / max(args.naive_images, 1)
    print(f"3. rasterise_all (batched): {1e3 * per_batch:.2f} ms/image; per-primitive vectorised loop: "
          f"{1e3 * t_loop / len(prim_sets):.2f} ms/image ({t_loop / t_batch:.1f}x slower); per-pixel Python loop baseline: "
          f"{1e3 * per_naive:.0f} ms/image ({per_naive / per_batch:.0f}x slower); labels agree on {100 * min(agree):.3f}% of pixels")


if __name__ == "__main__":
    main()

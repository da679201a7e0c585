"""DensePose on re-ID crops: images/s of one crop per pass (apply_net.py) vs batching vs test size vs canvas.

A 128x64 re-ID crop is upscaled to the model's 800-pixel short side (1333x667
after the long-side cap), so one crop costs a full-size forward pass. Schemes,
timed on the same crops in one run, all ending in the same bookkeeping
(DensePose's ``ToChartResultConverter`` on the store-frame box, then
:func:`priors.densepose_charts.best_instance_iuv`):

* ``a_apply_net``  — what ``apply_net.py`` does: detectron2's own ``DefaultPredictor``, one crop per call;
* ``b_batched``    — the ``densepose`` backend: same input size, ``--batch-size`` crops per call;
* ``c_test_size``  — the backend with a test size chosen for crops (``--crop-min-size``, short side), batched;
* ``c_canvas_RxC`` — the backend tiling RxC crops resized to that test size onto one canvas per call
  (:mod:`priors.crop_canvas`), detections split back per crop;
* ``*_kept``       — the same scheme with DensePose's head run only on the detection the bookkeeping
  keeps per crop (the backend's default ``densepose_head="kept"``); the others run it on every
  detection (``"all"``, as ``apply_net.py``). ``b_kept`` is at apply_net's own input size.

IUV agreement against ``a_apply_net``, and of each scheme against the full-head
scheme at the same input scale (``b_batched`` for ``b_kept``, ``c_test_size`` for
``c_kept`` and the canvases, ``c_canvas_RxC`` for ``c_canvas_RxC_kept``), is reported as: status agreement,
foreground IoU (I > 0), part-label agreement on the union of foregrounds, mean
|dU| on pixels with the same part. With random-initialised weights (the default
when ``--weights`` is not given) agreement tests the bookkeeping, not quality:
a random network's output changes with the input scale, so only same-scale
comparisons are expected to agree closely.

Usage (in the detectron2 venv, see scripts/densepose_env.sh)::

    python bench/bench_densepose.py [--n 24] [--crop-min-size 200] [--canvas 2x4 2x5] [--device cpu] [--no-kept]
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]


def default_config() -> str:
    import densepose

    return str(Path(densepose.__file__).resolve().parents[1] / "configs" / "densepose_rcnn_R_50_FPN_s1x.yaml")


def load_crops(data: Path, n: int) -> np.ndarray:
    from PIL import Image

    files = sorted(data.rglob("*.jpg"))
    files = files[:: max(1, len(files) // n)][:n]
    return np.stack([np.asarray(Image.open(f).convert("RGB")) for f in files])


def apply_net_scheme(config: str, weights: str, device: str, score_threshold: float, detections: int):
    """detectron2's DefaultPredictor per crop (apply_net.py), then the backend's bookkeeping."""
    import torch
    from densepose import add_densepose_config
    from densepose.converters import ToChartResultConverter
    from detectron2.config import get_cfg
    from detectron2.engine import DefaultPredictor

    from priors.densepose_charts import best_instance_iuv, to_numpy

    cfg = get_cfg()
    add_densepose_config(cfg)
    cfg.merge_from_file(config)
    cfg.MODEL.WEIGHTS, cfg.MODEL.DEVICE = weights, device
    cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST = score_threshold
    cfg.TEST.DETECTIONS_PER_IMAGE = detections
    cfg.freeze()
    predictor = DefaultPredictor(cfg)

    def run(images: np.ndarray):
        B, H, W, _ = images.shape
        i, u, v, status = np.zeros((B, H, W), np.uint8), np.zeros((B, H, W), np.float32), np.zeros((B, H, W), np.float32), []
        for b, img in enumerate(images):
            with torch.no_grad():
                inst = predictor(np.ascontiguousarray(img[:, :, ::-1]))["instances"].to("cpu")
            boxes = to_numpy(inst.pred_boxes.tensor)

            def chart(k, inst=inst):
                return ToChartResultConverter.convert(inst.pred_densepose[k], inst.pred_boxes[[k]])

            i[b], u[b], v[b], st = best_instance_iuv(boxes, chart, (H, W), (H, W), to_numpy(inst.scores))
            status.append(st)
        return i, u, v, status

    return run


def agreement(ref, got) -> dict[str, float]:
    (i0, u0, _, s0), (i1, u1, _, s1) = ref, got
    f0, f1 = i0 > 0, i1 > 0
    union = f0 | f1
    same = (i0 == i1) & f0 & f1
    return {
        "status": float(np.mean([a == b for a, b in zip(s0, s1)])),
        "fg_iou": float((f0 & f1).sum() / max(union.sum(), 1)),
        "label": float(same.sum() / max(union.sum(), 1)),
        "mean_du": float(np.abs(u0 - u1)[same].mean()) if same.any() else float("nan"),
        "max_du": float(np.abs(u0 - u1)[same].max()) if same.any() else float("nan"),
    }


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "mini_market1501",
                        help="folder of crops (default ../shared/data/mini_market1501)")
    parser.add_argument("--n", type=int, default=24, help="crops per scheme (default 24)")
    parser.add_argument("--config", help="DensePose config (default: densepose_rcnn_R_50_FPN_s1x.yaml of the installed DensePose)")
    parser.add_argument("--weights", help="weights .pth (default: a random-initialised model of the config)")
    parser.add_argument("--device", default="cpu", help="torch device (default cpu)")
    parser.add_argument("--score-threshold", type=float, default=0.5,
                        help="ROI score threshold (default 0.5; the random model scores 0.5-0.9)")
    parser.add_argument("--detections-per-crop", type=int, default=5,
                        help="TEST.DETECTIONS_PER_IMAGE per crop, in every scheme (default 5: a re-ID crop holds "
                             "one or two people; DensePose's head runs on every kept detection)")
    parser.add_argument("--batch-size", type=int, default=8, help="crops per call for b/c_test_size (default 8)")
    parser.add_argument("--crop-min-size", type=int, default=200,
                        help="test size (short side) chosen for crops in c_* (default 200: 128x64 -> 400x200)")
    parser.add_argument("--canvas", nargs="*", default=["2x4", "2x5"], help="canvas grids RxC to time (default 2x4 2x5)")
    parser.add_argument("--skip-a", action="store_true", help="skip the slow apply_net scheme (agreement then vs b)")
    parser.add_argument("--no-kept", action="store_true", help="skip the *_kept schemes (DensePose head on the kept detection)")
    parser.add_argument("--no-b", action="store_true", help="skip b_batched / b_kept (the apply_net-size backend schemes)")
    args = parser.parse_args(argv)

    import torch
    import detectron2

    from priors.backends.densepose import DensePoseEstimator
    from priors.backends.detectron2_model import detectron2_commit, save_random_init_weights

    config = args.config or default_config()
    tmp = tempfile.TemporaryDirectory()
    weights = args.weights or save_random_init_weights(config, os.path.join(tmp.name, "random.pth"), densepose=True)
    images = load_crops(args.data, args.n)
    rows = pd.DataFrame({"image_id": np.arange(len(images)), "relpath": [f"{k}.jpg" for k in range(len(images))]})
    print(f"detectron2 {detectron2.__version__} ({detectron2_commit()[:12]}), torch {torch.__version__}, "
          f"threads {torch.get_num_threads()}, device {args.device}, {len(images)} crops {images.shape[1]}x{images.shape[2]}, "
          f"{'random-initialised' if not args.weights else os.path.basename(weights)} {os.path.basename(config)}")

    common = dict(config=config, weights=weights, device=args.device, score_threshold=args.score_threshold,
                  detections_per_crop=args.detections_per_crop)
    schemes, same_scale = {}, {}  # name -> run; name -> the full-head scheme at the same input scale
    if not args.skip_a:
        schemes["a_apply_net"] = apply_net_scheme(config, weights, args.device, args.score_threshold, args.detections_per_crop)
    plan = [] if args.no_b else [("b_batched", {}, None)]
    plan += [("c_test_size", {"min_size": args.crop_min_size}, None)]
    plan += [(f"c_canvas_{g}", {"min_size": args.crop_min_size, "canvas": g}, "c_test_size") for g in args.canvas]
    if not args.no_kept:
        kept_name = {"b_batched": "b_kept", "c_test_size": "c_kept"}
        plan += [(kept_name.get(name, f"{name}_kept"), opts, name) for name, opts, _ in plan]
    for name, opts, ref_name in plan:
        head = "kept" if name.endswith("_kept") else "all"
        est = DensePoseEstimator(**common, batch_size=args.batch_size, densepose_head=head, **opts)
        schemes[name] = lambda x, est=est: (lambda r: (r.i, r.u, r.v, r.status))(est.estimate(x, rows.iloc[: len(x)]))
        if ref_name:
            same_scale[name] = ref_name

    results, rates, cpu_ms = {}, {}, {}
    for name, run in schemes.items():
        run(images[:2])  # warm-up
        t0, c0 = time.perf_counter(), time.process_time()
        results[name] = run(images)
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        rates[name], cpu_ms[name] = len(images) / wall, 1000 * cpu / len(images)
        print(f"  {name:<22} {rates[name]:7.3f} img/s  ({1000 * wall / len(images):7.0f} ms/img wall, "
              f"{cpu_ms[name]:7.0f} ms/img cpu)  load {os.getloadavg()[0]:.1f}", flush=True)

    ref = "a_apply_net" if "a_apply_net" in results else next(iter(results))
    print(f"\n{'scheme':<22} {'img/s':>7} {'x wall':>7} {'cpu ms':>7} {'x cpu':>6} {'status':>7} {'fg_iou':>7} "
          f"{'label':>7} {'mean_du':>8} {'max_du':>8}  agreement vs")
    for name in results:
        ag = agreement(results[ref], results[name])
        print(f"{name:<22} {rates[name]:7.3f} {rates[name] / rates[ref]:7.2f} {cpu_ms[name]:7.0f} "
              f"{cpu_ms[ref] / cpu_ms[name]:6.2f} {ag['status']:7.3f} {ag['fg_iou']:7.3f} {ag['label']:7.3f} "
              f"{ag['mean_du']:8.4f} {ag['max_du']:8.1e}  {ref}")
    for name, other in same_scale.items():
        if other in results and name in results:
            ag = agreement(results[other], results[name])
            print(f"{name:<22} {'':7} {'':7} {'':7} {'':6} {ag['status']:7.3f} {ag['fg_iou']:7.3f} {ag['label']:7.3f} "
                  f"{ag['mean_du']:8.4f} {ag['max_du']:8.1e}  {other} (same scale)")
    statuses = {name: pd.Series(r[3]).value_counts().to_dict() for name, r in results.items()}
    print("\nstatuses:", statuses)


if __name__ == "__main__":
    main()

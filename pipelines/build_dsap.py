"""``build-dsap``: dense semantics -> IUV in the store -> 24 DSAP-images (DSA-reID Sec. 3.1).

Per write unit, in one task: estimate the IUV (skipped when ``estimates/<backend>``
already holds the unit with the same provenance), then warp it with
:func:`priors.dsap.warp_dsap_batch` into ``priors/dsap``. The expensive step runs
once; re-running with another ``S`` or fill re-warps from the stored IUV
(``--overwrite`` rebuilds only ``priors/dsap`` when the estimator is unchanged).

Quality flags (table ``priors/dsap/coverage``, one row per image): ``coverage``
(mean over the 24 parts of the filled DSAP cells), ``parts_present``,
``visible_landmarks`` (landmarks the estimator saw, of 33; -1 when the backend
does not say), ``view`` and ``limbs_unseen`` (``pose-chart``), and
``low_quality``: "" or a ``;``-joined list of ``estimator_failed``,
``low_coverage`` (coverage < :data:`LOW_COVERAGE`), ``few_parts`` (fewer than
:data:`MIN_PARTS` parts), ``few_landmarks`` (fewer than :data:`MIN_LANDMARKS`
seen). A user filters with ``coverage[coverage.low_quality == ""]``. The
backend's quality columns are kept as table ``estimates/<backend>/quality``, so
a re-warp from stored IUV keeps them.
"""
from __future__ import annotations

import argparse
import json
from typing import Any

import numpy as np
import pandas as pd

from priors.backends.densepose import DENSEPOSE_HEAD_MODES, parse_canvas
from priors.dsap import PART_NAMES, dsap_coverage, warp_dsap_batch
from priors.estimators import OK, DENSE_BACKENDS, dense_estimator, provenance_of
from priors.iuv import pack_iuv
from storage import failures_frame, group_writer, make_provenance, open_store, reopen_writer

from pipelines.backend_flags import DEFAULT_DEVICE
from pipelines.jobs import batches, cached, unit_job
from pipelines.runner import count_reasons, finish, refuse_other_settings, run_tasks

DSAP_GROUP = "priors/dsap"
WARP_VERSION = "1"
LOW_COVERAGE = 0.05
"""mean DSAP coverage under this flags an image: 23 such "ok" images on a real camera were all bad charts"""
MIN_PARTS = 4
"""fewer parts than this (a head and a torso half are 3) flags an image"""
MIN_LANDMARKS = 12
"""fewer seen landmarks than this (of BlazePose's 33) flags an image"""
MAX_CANVAS_SIDE = 8
"""--canvas: at most 8x8 crops per canvas (64 crops of 400x200 are a 3.6k x 1.8k input)"""
DEFAULT_HEAD = "kept"
"""--densepose-head: DensePose's head on the one detection kept per crop (same IUV as "all")"""
QUALITY_DEFAULTS = {"visible_landmarks": -1, "view": "", "limbs_unseen": ""}


def estimator_options(name: str, params: dict[str, Any], store) -> dict[str, Any]:
    """Keyword options of each dense backend, from the flow parameters."""
    if name == "densepose":
        keys = ("config", "weights", "device", "batch_size", "trust_weights", "canvas", "detections_per_crop",
                "densepose_head")
        opts = {k: params[k] for k in keys if params.get(k) is not None}
        if params.get("test_size") is not None:
            opts["min_size"] = params["test_size"]  # detectron2's INPUT.MIN_SIZE_TEST
        return opts
    if name == "densepose-dump":
        return {"dump": params["dump"], "trust_dump": bool(params.get("trust_dump"))}
    if name == "oracle":
        return {"root": params.get("root") or store.attrs["source_root"]}
    return {}


_dense = cached(lambda name, opts: dense_estimator(name, **json.loads(opts)))


def estimate_unit(est, images: np.ndarray, rows: pd.DataFrame) -> tuple[dict[str, np.ndarray], pd.DataFrame, pd.DataFrame]:
    """Run a dense estimator on one unit: store arrays, failure rows and the per-image quality table."""
    res = est.estimate(images, rows)
    if res.i.shape != images.shape[:3]:
        raise ValueError(f"{est.name} returned IUV of shape {res.i.shape} for images {images.shape[:3]}")
    i, uv = pack_iuv(res.i, res.u, res.v)
    fails = failures_frame((int(r), "estimate", s, f"{est.name}: {s}")
                           for r, s in zip(rows["image_id"], res.status) if s != OK)
    quality = pd.DataFrame({"image_id": rows["image_id"].to_numpy().astype(np.int64)})
    for name, default in QUALITY_DEFAULTS.items():
        values = (res.quality or {}).get(name)
        quality[name] = np.asarray(values) if values is not None else default
    quality["visible_landmarks"] = quality["visible_landmarks"].astype(np.int64)
    for name in ("view", "limbs_unseen"):
        quality[name] = quality[name].astype(str)
    return {"i": i, "uv": uv}, fails, quality


def low_quality(coverage: np.ndarray, parts: np.ndarray, landmarks: np.ndarray, failed: np.ndarray) -> np.ndarray:
    """The ``low_quality`` reason per image ("" = fine), from the documented thresholds."""
    flags = [(failed, "estimator_failed"), (~failed & (coverage < LOW_COVERAGE), "low_coverage"),
             (~failed & (parts < MIN_PARTS), "few_parts"),
             (~failed & (landmarks >= 0) & (landmarks < MIN_LANDMARKS), "few_landmarks")]
    return np.array([";".join(name for mask, name in flags if mask[k]) for k in range(len(coverage))], dtype=object)


def dsap_unit(images, i, uv, S: int, fill, ids: np.ndarray, est_fails: pd.DataFrame,
              quality: pd.DataFrame | None = None) -> tuple[dict, dict, pd.DataFrame]:
    """Warp one unit: arrays, the coverage table (with the quality flags) and failure rows."""
    dsap, valid = warp_dsap_batch(images, i, uv[:, 0], uv[:, 1], S=S, fill=fill)
    cov = dsap_coverage(valid)
    table = pd.DataFrame(cov, columns=[f"cov_{n}" for n in PART_NAMES])
    table.insert(0, "image_id", ids.astype(np.int64))
    table["parts_present"] = (cov > 0).sum(axis=1).astype(np.int64)
    table["coverage"] = cov.mean(axis=1).astype(np.float32)
    q = pd.DataFrame({"image_id": ids.astype(np.int64)})
    q = q.merge(quality, on="image_id", how="left") if quality is not None else q
    for name, default in QUALITY_DEFAULTS.items():
        table[name] = q[name].fillna(default).to_numpy() if name in q else default
    table["visible_landmarks"] = table["visible_landmarks"].astype(np.int64)
    failed = np.isin(ids, est_fails["image_id"].to_numpy())
    table["low_quality"] = low_quality(table["coverage"].to_numpy(), table["parts_present"].to_numpy(),
                                       table["visible_landmarks"].to_numpy(), failed).astype(str)
    for name in ("view", "limbs_unseen"):
        table[name] = table[name].astype(str)
    empty = ids[(cov.sum(axis=1) == 0) & ~failed]
    fails = pd.concat([est_fails, failures_frame((int(r), "warp", "no_dense_semantics", "no body pixel estimated")
                                                 for r in empty)], ignore_index=True)
    return {"dsap": dsap, "valid": valid}, {"coverage": table}, fails


@unit_job(retries=2, retry_delay_seconds=2)
def dsap_units(store_url: str, est_group: str, est_name: str, est_opts: str, S: int, fill: Any,
               units: list[int]) -> dict[str, Any]:
    est_w = reopen_writer(store_url, est_group)
    dsap_w = reopen_writer(store_url, DSAP_GROUP)
    store = est_w.store
    ok = store.ok_index
    out = {"written": 0, "skipped": 0, "images": 0, "failures": {}}
    for k in units:
        need_est, need_dsap = not est_w.is_done(k), not dsap_w.is_done(k)
        if not (need_est or need_dsap):
            out["skipped"] += 1
            continue
        _, start, stop = store.units()[k]
        rows = ok.iloc[start:stop]
        images = np.asarray(store.images[start:stop])
        if need_est:
            arrays, est_fails, quality = estimate_unit(_dense(est_name, est_opts), images, rows)
            est_w.write_unit(k, arrays, tables={"quality": quality}, failures=est_fails)
        else:
            g = store.group(est_group)
            arrays = {"i": np.asarray(g.arrays["i"][start:stop]), "uv": np.asarray(g.arrays["uv"][start:stop])}
            est_fails = store._fs.read_table(f"tables/{est_group}/failures/part-{k:06d}.parquet")
            try:  # groups written before the quality table existed have none
                quality = store._fs.read_table(f"tables/{est_group}/quality/part-{k:06d}.parquet")
            except (OSError, FileNotFoundError):
                quality = None
        if need_dsap:
            d_arrays, tables, fails = dsap_unit(images, arrays["i"], arrays["uv"], S, fill,
                                                rows["image_id"].to_numpy(), est_fails, quality)
            dsap_w.write_unit(k, d_arrays, tables=tables, failures=fails)
            out["low_quality"] = out.get("low_quality", 0) + int((tables["coverage"]["low_quality"] != "").sum())
            out["failed_images"] = out.get("failed_images", 0) + int(fails["image_id"].nunique())
            # one count per image and reason (an image is never counted twice for one reason)
            for reason, n in count_reasons(fails.drop_duplicates(["image_id", "reason"])["reason"]).items():
                out["failures"][reason] = out["failures"].get(reason, 0) + n
        out["written"] += 1
        out["images"] += stop - start
    return out


def dataset_mean(store) -> list[float]:
    """Per-channel mean of all stored images, read chunk by chunk."""
    total, n = np.zeros(3), 0
    for _, start, stop in store.units():
        block = np.asarray(store.images[start:stop])
        total += block.reshape(-1, 3).sum(axis=0, dtype=np.float64)
        n += block.shape[0] * block.shape[1] * block.shape[2]
    return (total / max(n, 1)).round(3).tolist()


def build_dsap_flow(
    store: str,
    estimator: str = "oracle",
    weights: str | None = None,
    config: str | None = None,
    dump: str | None = None,
    trust_dump: bool = False,
    trust_weights: bool = False,
    root: str | None = None,
    dsap_size: int = 32,
    fill: str = "image_mean",
    device: str = DEFAULT_DEVICE,
    batch_size: int | None = None,
    test_size: int | None = None,
    canvas: str | None = None,
    detections_per_crop: int | None = None,
    densepose_head: str = DEFAULT_HEAD,
    workers: int = 0,
    units_per_task: int = 4,
    overwrite: bool = False,
    progress: bool = True,
    dask_address: str | None = None,
    dask_workers: int = 0,
) -> dict[str, Any]:
    """Estimate dense semantics and warp every image into 24 DSAP-images of
    ``dsap_size`` x ``dsap_size`` (the ``build-dsap`` flow, :mod:`pipelines.flows`)."""
    S = int(dsap_size)
    if estimator not in DENSE_BACKENDS:
        raise ValueError(f"unknown estimator {estimator!r}; choose one of {sorted(DENSE_BACKENDS)}")
    s = open_store(store, mode="r+")
    params = dict(weights=weights, config=config, dump=dump, trust_dump=trust_dump, trust_weights=trust_weights,
                  root=root, device=device, batch_size=batch_size, test_size=test_size, canvas=canvas,
                  detections_per_crop=detections_per_crop, densepose_head=densepose_head)
    opts = json.dumps(estimator_options(estimator, params, s), sort_keys=True)
    est = _dense(estimator, opts)
    est_group = f"estimates/{estimator}"
    est_prov = make_provenance(provenance_of(est), params={"uv_encoding": "uint16 min(floor(u*65536),65535)"})
    h, w = s.image_size
    est_w = group_writer(s, est_group, {"i": ((h, w), "uint8"), "uv": ((2, h, w), "uint16")}, est_prov,
                         overwrite=overwrite)
    fill_value: Any = dataset_mean(s) if fill == "dataset_mean" else "image_mean"
    if fill not in ("image_mean", "dataset_mean"):
        raise ValueError("fill must be 'image_mean' or 'dataset_mean'")
    dsap_prov = make_provenance({"name": "warp_dsap", "version": WARP_VERSION},
                                params={"S": int(S), "fill": fill, "fill_value": fill_value},
                                inputs={est_group: est_w.store.root[est_group].attrs["provenance"]})
    refuse_other_settings(s, DSAP_GROUP, dsap_prov, {"S": "--dsap-size", "fill": "--fill"}, overwrite)
    dsap_w = group_writer(s, DSAP_GROUP, {"dsap": ((24, 3, S, S), "uint8"), "valid": ((24, S, S), "bool")},
                          dsap_prov, overwrite=overwrite)
    pending = sorted({u[0] for u in est_w.pending()} | {u[0] for u in dsap_w.pending()})
    calls = [(s.url, est_group, estimator, opts, int(S), fill_value, b) for b in batches(pending, units_per_task)]
    results = run_tasks(dsap_units, calls, "build-dsap", progress, dask_address, dask_workers, workers, device)
    s.close()  # release the writer locks of both groups
    return finish("build-dsap", results, already_done=len(s.units()) - len(pending), store=s.url, group=DSAP_GROUP, estimator=estimator)


def canvas_grid(text: str) -> str | None:
    """``--canvas RxC``: ``"2x4"`` (normalised), ``None`` for ``1x1``; argparse's error otherwise."""
    try:
        grid = parse_canvas(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    if grid is not None and max(grid) > MAX_CANVAS_SIDE:
        raise argparse.ArgumentTypeError(f"at most {MAX_CANVAS_SIDE}x{MAX_CANVAS_SIDE} crops per canvas, got {text}")
    return None if grid is None else f"{grid[0]}x{grid[1]}"


def configure_parser(p: argparse.ArgumentParser) -> None:
    from storage.cli import MAX_DSAP_SIDE, bounded_int, existing_file, hidden_alias, positive_int

    from pipelines.backend_flags import add_detectron2_flags, add_device, add_oracle_root, add_store

    add_store(p)
    p.add_argument("--estimator", required=True, choices=sorted(DENSE_BACKENDS),
                   help="dense-semantics backend: densepose (detectron2), densepose-dump (apply_net.py dump file), "
                        "pose-chart (mediapipe, CPU, coarser than DensePose), oracle (synthetic ground truth)")
    p.add_argument("--weights", type=existing_file, help="densepose: model weights (.pkl/.pth); never downloaded")
    p.add_argument("--config", type=existing_file, help="densepose: the DensePose config YAML matching the weights")
    p.add_argument("--dump", type=existing_file, help="densepose-dump: file written by DensePose's `apply_net.py dump`")
    p.add_argument("--trust-dump", action="store_true",
                   help="densepose-dump: allow unpickling the dump (it runs code from the file: only for dumps you made)")
    add_oracle_root(p)
    p.add_argument("--dsap-size", type=bounded_int(1, MAX_DSAP_SIDE), default=32, metavar="S",
                   help="side S of each DSAP-image (paper: 32)")
    hidden_alias(p, "--size", "dsap_size", bounded_int(1, MAX_DSAP_SIDE))
    p.add_argument("--fill", choices=["image_mean", "dataset_mean"], default="image_mean",
                   help="initial value of DSAP cells no pixel lands in: the image's or the dataset's per-channel mean")
    add_device(p, "densepose")
    p.add_argument("--batch-size", type=positive_int, help="densepose: images per forward pass (default: the backend's, 8)")
    add_detectron2_flags(p, "densepose", "DensePose's configs, as apply_net.py", note="; 200 costs ~4x less CPU per crop")
    p.add_argument("--canvas", type=canvas_grid, metavar="RxC",
                   help="densepose: tile R*C resized crops side by side on one canvas per forward pass and split the "
                        "detections back per crop (e.g. 2x4; fewer, larger calls: for GPUs). Default: none, a batch of "
                        "separate images")
    p.add_argument("--densepose-head", choices=list(DENSEPOSE_HEAD_MODES), default=DEFAULT_HEAD,
                   help="densepose: run DensePose's head only on the detection kept per crop (kept: same IUV, less "
                        "CPU) or on every detection, as apply_net.py (all)")


def flow_params(args: argparse.Namespace) -> dict[str, Any]:
    """Flow parameters of a parsed command line (the same names, docs/cli.md); a densepose-only
    flag given with another estimator (``--device cuda`` with oracle, too) is one error line, not
    silently ignored."""
    from storage.cli import refuse_unused_flags

    refuse_unused_flags(args, f"--estimator {args.estimator}", {
        dest: (flag, "--estimator densepose") for dest, flag in (
            ("weights", "--weights"), ("config", "--config"), ("device", "--device"), ("batch_size", "--batch-size"),
            ("test_size", "--test-size"), ("canvas", "--canvas"), ("detections_per_crop", "--detections-per-crop"),
            ("densepose_head", "--densepose-head"))} | {"dump": ("--dump", "--estimator densepose-dump"), "root": ("--root", "--estimator oracle")},
        defaults={"device": DEFAULT_DEVICE, "densepose_head": DEFAULT_HEAD})
    return dict(store=args.store, estimator=args.estimator, weights=args.weights, config=args.config, dump=args.dump,
                trust_dump=args.trust_dump, trust_weights=args.trust_weights, root=args.root, dsap_size=args.dsap_size, fill=args.fill,
                device=args.device, batch_size=args.batch_size, test_size=args.test_size, canvas=args.canvas,
                detections_per_crop=args.detections_per_crop, densepose_head=args.densepose_head, workers=args.workers,
                units_per_task=args.units_per_task, overwrite=args.overwrite, progress=not args.quiet,
                dask_address=args.dask_address, dask_workers=args.dask_workers)

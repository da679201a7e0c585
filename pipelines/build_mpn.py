"""``build-mpn-priors``: parsing + segmentation -> MPN coarse strip priors (MPN Sec. 3.2, Fig. 5a).

Any parsing source combines with any segmentation source; the group's
provenance records both. ``densepose`` sources read an IUV group already in the
store (run ``build-dsap`` first), so no estimator runs twice.

The stats table (``priors/mpn/stats``, one row per image) says *why* an image
falls back: ``fallback_reason`` is one of :data:`~priors.mpn_prior.FALLBACK_REASONS`
when the parsing ran and found the parts absent, or
:data:`~priors.mpn_prior.ESTIMATOR_FAILED` when the parsing source failed on the
image (its own status, e.g. ``pose_not_found``, is in ``parsing_status``).
Quality columns: ``person_frac`` (fraction of the image in the union mask),
``visible_landmarks`` (-1 when the source does not say), ``view`` and
``low_quality``: "" or a ``;``-joined list of ``estimator_failed``,
``few_landmarks`` (< :data:`MIN_LANDMARKS` seen, as in ``build-dsap``) and
``small_person`` (``person_frac`` < :data:`MIN_PERSON_FRAC`). Failure counts in
the flow's summary are per image and reason, never per row (an image the
parsing *and* the segmentation failed on counts once).
"""
from __future__ import annotations

import argparse
import json
from typing import Any

import numpy as np
import pandas as pd

from priors.estimators import (
    OK,
    PARSING_BACKENDS,
    SEGMENTATION_BACKENDS,
    parsing_source,
    provenance_of,
    segmentation_source,
)
from priors.mpn_prior import (
    ESTIMATOR_FAILED,
    BACKBONE_STRIDE,
    BINARIZE_THRESHOLD,
    HEAD_MIN_FRAC,
    K_PARTS,
    LEG_MIN_FRAC,
    coarse_strip_prior_batch,
    feature_map_size,
)
from storage import failures_frame, group_writer, make_provenance, open_store, reopen_writer

from pipelines.backend_flags import DEFAULT_DEVICE
from pipelines.ingest import parse_size
from pipelines.jobs import batches, cached, unit_job
from pipelines.runner import count_reasons, finish, refuse_other_settings, run_tasks

MPN_GROUP = "priors/mpn"
PRIOR_VERSION = "2"  # 2: estimator failures are their own fallback reason; quality columns
MIN_PERSON_FRAC = 0.05
"""a union mask under this fraction of the image flags the image ``small_person``"""
MIN_LANDMARKS = 12
"""fewer seen landmarks than this (of BlazePose's 33) flags an image ``few_landmarks``"""
# provenance params -> the flag that sets them (a refusal names the one that changed)
MPN_FLAGS = {"K": "--parts", "input_size": "--input-size", "stride": "--stride", "feat_hw": "--input-size/--stride",
             "head_min_frac": "--head-min-frac", "leg_min_frac": "--leg-min-frac", "threshold": "--threshold"}
STAT_KEYS = ("upper_frac", "lower_frac", "head_px", "left_leg_px", "right_leg_px")


def source_options(kind: str, name: str, params: dict[str, Any], store) -> dict[str, Any]:
    """Keyword options of a parsing/segmentation backend, from the flow parameters."""
    if name == "oracle":
        return {"root": params.get("root") or store.attrs["source_root"]}
    if name == "densepose":
        return {"store_group": params["iuv_group"]}
    if name == "onnx":
        if not params.get("onnx_model"):
            raise ValueError("--parsing onnx needs --onnx-model (and --label-map unless it is a LIP model)")
        return {"model": params["onnx_model"], "label_map": params.get("label_map") or "lip", "device": params["device"]}
    if name == "maskrcnn":
        opts = {"config": params["maskrcnn_config"], "weights": params["maskrcnn_weights"], "device": params["device"],
                "trust_weights": bool(params.get("trust_weights"))}
        if params.get("test_size") is not None:
            opts["min_size"] = int(params["test_size"])  # detectron2's INPUT.MIN_SIZE_TEST
        if params.get("detections_per_crop") is not None:
            opts["detections_per_crop"] = int(params["detections_per_crop"])
        return opts
    return {}


_parsing = cached(lambda name, opts: parsing_source(name, **json.loads(opts)))
_segmentation = cached(lambda name, opts: segmentation_source(name, **json.loads(opts)))


def _attach_iuv(src, store) -> None:
    """``densepose`` sources read ``i`` of their IUV group from this process's store handle."""
    if getattr(src, "store_group", None):
        from priors.backends.iuv_parsing import iuv_lookup_from_group

        src.iuv_lookup = iuv_lookup_from_group(store.group(src.store_group))


def mpn_unit(parsing, seg, images, rows: pd.DataFrame, prior_params: dict[str, Any]):
    """One unit: run both sources, compute the priors, return arrays, stats table and failures."""
    p = parsing.parse(images, rows)
    m = seg.segment(images, rows)
    p_ok = np.array([s == OK for s in p.status], dtype=bool)
    labels = np.where(p_ok[:, None, None], p.labels, 0).astype(np.uint8)
    mask = np.where(np.array([s == OK for s in m.status])[:, None, None], m.mask, False)
    prior = coarse_strip_prior_batch(labels, mask, **prior_params)
    ids = rows["image_id"].to_numpy().astype(np.int64)
    reason = np.where(prior["fallback"] & ~p_ok, ESTIMATOR_FAILED, prior["reason"].astype(str))
    quality = p.quality or {}
    seen = np.asarray(quality.get("visible_landmarks", np.full(len(ids), -1)), dtype=np.int64)
    view = np.asarray(quality.get("view", np.full(len(ids), "")), dtype=object).astype(str)
    person_frac = ((labels > 0) | mask).reshape(len(ids), -1).mean(axis=1).astype(np.float32)
    flags = [(~p_ok, ESTIMATOR_FAILED), (p_ok & (seen >= 0) & (seen < MIN_LANDMARKS), "few_landmarks"),
             (p_ok & (person_frac < MIN_PERSON_FRAC), "small_person")]
    low = [";".join(name for sel, name in flags if sel[k]) for k in range(len(ids))]
    stats = pd.DataFrame({
        "image_id": ids,
        "upper": prior["roi"][:, 0].astype(np.int64),
        "lower": prior["roi"][:, 1].astype(np.int64),
        **{k: prior[k] for k in STAT_KEYS},
        "fallback": prior["fallback"],
        "fallback_reason": reason,
        "parsing_status": p.status,
        "segmentation_status": m.status,
        "parsing": parsing.name,
        "segmentation": seg.name,
        "person_frac": person_frac,
        "visible_landmarks": seen,
        "view": view,
        "low_quality": np.array(low, dtype=object).astype(str),
    })
    fails = failures_frame(
        [(int(r), "parsing", s, f"{parsing.name}: {s}") for r, s in zip(ids, p.status) if s != OK]
        + [(int(r), "segmentation", s, f"{seg.name}: {s}") for r, s in zip(ids, m.status) if s != OK]
    )
    arrays = {k: prior[k] for k in ("mask", "roi", "fallback", "strips")}
    return arrays, {"stats": stats}, fails


@unit_job(retries=2, retry_delay_seconds=2)
def mpn_units(store_url: str, parsing: tuple[str, str], segmentation: tuple[str, str],
              prior_params: dict[str, Any], units: list[int]) -> dict[str, Any]:
    writer = reopen_writer(store_url, MPN_GROUP)
    store = writer.store
    ok = store.ok_index
    par, seg = _parsing(*parsing), _segmentation(*segmentation)
    _attach_iuv(par, store)
    _attach_iuv(seg, store)
    out = {"written": 0, "skipped": 0, "images": 0, "failures": {}, "fallbacks": 0, "estimator_failed": 0,
           "low_quality": 0}
    for k in units:
        if writer.is_done(k):
            out["skipped"] += 1
            continue
        _, start, stop = store.units()[k]
        arrays, tables, fails = mpn_unit(par, seg, np.asarray(store.images[start:stop]), ok.iloc[start:stop],
                                         prior_params)
        writer.write_unit(k, arrays, tables=tables, failures=fails)
        out["written"] += 1
        out["images"] += stop - start
        out["fallbacks"] += int(arrays["fallback"].sum())
        out["estimator_failed"] = out.get("estimator_failed", 0) + int(
            (tables["stats"]["fallback_reason"] == ESTIMATOR_FAILED).sum())
        out["low_quality"] = out.get("low_quality", 0) + int((tables["stats"]["low_quality"] != "").sum())
        # one count per image and reason: parsing and segmentation failing on one image count once
        for reason, n in count_reasons(fails.drop_duplicates(["image_id", "reason"])["reason"]).items():
            out["failures"][reason] = out["failures"].get(reason, 0) + n
    return out


def build_mpn_flow(
    store: str,
    parsing: str = "oracle",
    segmentation: str = "oracle",
    input_size: str = "384x128",
    stride: int = BACKBONE_STRIDE,
    parts: int = K_PARTS,
    head_min_frac: float = HEAD_MIN_FRAC,
    leg_min_frac: float = LEG_MIN_FRAC,
    threshold: float = BINARIZE_THRESHOLD,
    iuv_group: str | None = None,
    onnx_model: str | None = None,
    label_map: str | None = None,
    maskrcnn_config: str | None = None,
    maskrcnn_weights: str | None = None,
    trust_weights: bool = False,
    test_size: int | None = None,
    detections_per_crop: int | None = None,
    root: str | None = None,
    device: str = DEFAULT_DEVICE,
    workers: int = 0,
    units_per_task: int = 4,
    overwrite: bool = False,
    progress: bool = True,
    dask_address: str | None = None,
    dask_workers: int = 0,
) -> dict[str, Any]:
    """Build MPN's coarse strip priors (mask, ROI, ``parts`` strips) for every image
    of a store (the ``build-mpn-priors`` flow, :mod:`pipelines.flows`)."""
    K = int(parts)
    s = open_store(store, mode="r+")
    for kind, name, table in (("parsing", parsing, PARSING_BACKENDS), ("segmentation", segmentation, SEGMENTATION_BACKENDS)):
        if name not in table:
            raise ValueError(f"unknown {kind} source {name!r}; choose one of {sorted(table)}")
    if "densepose" in (parsing, segmentation):
        iuv_group = iuv_group or next((g for g in s.groups if g.startswith("estimates/")), None)
        if iuv_group is None or not s.has_group(iuv_group):
            raise ValueError("the densepose sources read an IUV group: run build-dsap first (or pass --iuv-group)")
    params = dict(iuv_group=iuv_group, onnx_model=onnx_model, label_map=label_map, maskrcnn_config=maskrcnn_config,
                  maskrcnn_weights=maskrcnn_weights, trust_weights=trust_weights, root=root, device=device,
                  test_size=test_size, detections_per_crop=detections_per_crop)
    par_key = (parsing, json.dumps(source_options("parsing", parsing, params, s), sort_keys=True))
    seg_key = (segmentation, json.dumps(source_options("segmentation", segmentation, params, s), sort_keys=True))
    par, seg = _parsing(*par_key), _segmentation(*seg_key)
    feat_hw = feature_map_size(parse_size(input_size), stride)
    prior_params = dict(feat_hw=list(feat_hw), K=int(K), head_min_frac=float(head_min_frac),
                        leg_min_frac=float(leg_min_frac), threshold=float(threshold))
    inputs = {g: s.groups[g] for g in [iuv_group] if g}
    prov = make_provenance([provenance_of(par), provenance_of(seg)],
                           params={"version": PRIOR_VERSION, "input_size": list(parse_size(input_size)),
                                   "stride": int(stride), **prior_params}, inputs=inputs)
    refuse_other_settings(s, MPN_GROUP, prov, MPN_FLAGS, overwrite)
    h, w = feat_hw
    writer = group_writer(s, MPN_GROUP, {"mask": ((h, w), "uint8"), "roi": ((2,), "int16"), "fallback": ((), "bool"),
                                         "strips": ((int(K), 2), "int16")}, prov, overwrite=overwrite)
    pending = [u[0] for u in writer.pending()]
    prior_params["feat_hw"] = tuple(feat_hw)
    calls = [(s.url, par_key, seg_key, prior_params, b) for b in batches(pending, units_per_task)]
    results = run_tasks(mpn_units, calls, "build-mpn-priors", progress, dask_address, dask_workers, workers, device)
    s.close()  # release the writer lock of priors/mpn
    return finish("build-mpn-priors", results, already_done=len(s.units()) - len(pending), store=s.url, group=MPN_GROUP, parsing=parsing,
                  segmentation=segmentation, feature_map=[h, w], fallbacks=0)


def configure_parser(p: argparse.ArgumentParser) -> None:
    from storage.cli import bounded_int, existing_file, fraction, positive_int, size_hw

    from pipelines.backend_flags import add_detectron2_flags, add_device, add_oracle_root, add_store

    add_store(p)
    p.add_argument("--parsing", required=True, choices=sorted(PARSING_BACKENDS),
                   help="parsing source: densepose (IUV in the store), pose (mediapipe landmarks), "
                        "onnx (your exported LIP/ATR/CIHP network), oracle (synthetic ground truth)")
    p.add_argument("--segmentation", required=True, choices=sorted(SEGMENTATION_BACKENDS),
                   help="segmentation source: pose (mediapipe selfie segmentation), maskrcnn (detectron2), "
                        "densepose (any IUV part), oracle")
    p.add_argument("--input-size", type=size_hw, default="384x128", metavar="HxW",
                   help="training input HxW the feature map is derived from (MPN: 384x128)")
    p.add_argument("--stride", type=positive_int, default=BACKBONE_STRIDE,
                   help="backbone output stride (ResNet-50 with last stride 1: 16)")
    p.add_argument("--parts", type=bounded_int(1, 64), default=K_PARTS, metavar="K", help="number of strips K (MPN: 6)")
    p.add_argument("--head-min-frac", type=fraction, default=HEAD_MIN_FRAC,
                   help="head present when its parsing pixels are at least this fraction of the image")
    p.add_argument("--leg-min-frac", type=fraction, default=LEG_MIN_FRAC,
                   help="a leg present when its parsing pixels are at least this fraction of the image")
    p.add_argument("--threshold", type=fraction, default=BINARIZE_THRESHOLD,
                   help="binarisation threshold of the resized mask (fraction of a feature cell covered)")
    p.add_argument("--iuv-group", help="densepose sources: IUV group to read (default: the first estimates/* group)")
    p.add_argument("--onnx-model", type=existing_file, help="onnx: exported parsing network (.onnx)")
    p.add_argument("--label-map", help="onnx: preset (lip, atr, cihp) or JSON/YAML file naming head/leg/foreground classes")
    p.add_argument("--maskrcnn-config", type=existing_file, help="maskrcnn: detectron2 config YAML")
    p.add_argument("--maskrcnn-weights", type=existing_file, help="maskrcnn: weights file; never downloaded")
    add_detectron2_flags(p, "maskrcnn", "detectron2's COCO configs")
    add_oracle_root(p)
    add_device(p, "onnx, maskrcnn", runtime="onnxruntime/torch")


def flow_params(args: argparse.Namespace) -> dict[str, Any]:
    """Flow parameters of a parsed command line (the same names, docs/cli.md); a flag of a source
    that is not chosen (a Mask R-CNN flag with another segmentation, ``--device cuda`` with sources
    that run no model) is one error line, not silently ignored."""
    from storage.cli import refuse_unused_flags

    maskrcnn, onnx = "--segmentation maskrcnn", "--parsing onnx"
    refuse_unused_flags(args, (f"--parsing {args.parsing}", f"--segmentation {args.segmentation}"), {
        "maskrcnn_config": ("--maskrcnn-config", maskrcnn), "maskrcnn_weights": ("--maskrcnn-weights", maskrcnn),
        "test_size": ("--test-size", maskrcnn), "detections_per_crop": ("--detections-per-crop", maskrcnn),
        "onnx_model": ("--onnx-model", onnx), "label_map": ("--label-map", onnx),
        "iuv_group": ("--iuv-group", ("--parsing densepose", "--segmentation densepose")),
        "root": ("--root", ("--parsing oracle", "--segmentation oracle")),
        "device": ("--device", (onnx, maskrcnn))}, defaults={"device": DEFAULT_DEVICE})
    keys = ("store", "parsing", "segmentation", "input_size", "stride", "parts", "head_min_frac", "leg_min_frac",
            "threshold", "iuv_group", "onnx_model", "label_map", "maskrcnn_config", "maskrcnn_weights", "root", "device",
            "workers", "trust_weights", "test_size", "detections_per_crop", "units_per_task", "overwrite", "dask_address", "dask_workers")
    return {k: getattr(args, k) for k in keys} | {"progress": not args.quiet}

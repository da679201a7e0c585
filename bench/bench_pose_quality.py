"""How good are the CPU estimators (``pose-chart``, ``pose`` parsing/segmentation)? Two yardsticks.

**Real crops** (``bench/data/handchecked_crops.csv``, 201 crops of ``../shared/data`` looked at one by
one, see ``bench/data/README.md``): the images are resized to the store size (256 x 128, as ingest
does) and run through the flows' own unit functions (``pipelines.build_mpn.mpn_unit``,
``pipelines.build_dsap.estimate_unit`` + ``dsap_unit``), so the figures are what a user gets:

* *false fallback*: MPN falls back although the crop shows the head and the legs (% of images);
* *legs painted where hidden*: on crops whose legs are not visible, or whose lower body is hidden
  by something in front, the share of images where ``pose-chart`` paints lower-leg parts
  (11-14) or the parsing paints a leg;
* fallback rate per camera, DSAP coverage of the "ok" images (< 5 %, < 15 %), the quality flags.

**Synthetic world** (:mod:`priors.synthetic`, rendered at 256 x 128 with occluders on half of the
images: railings, parapets, bags, a second person in front; front, back and profile views): on the
images where mediapipe finds the person, the estimated part map against the oracle's
(per-part IoU, pooled over images, then the mean over the 24 parts), the body-mask IoU
(``i > 0`` against the true ``i > 0``) and the segmentation source's mask IoU against the true
person mask, split by view and occlusion; BlazePose's landmark error against the renderer's true joints
(:func:`priors.synthetic.render.joint_positions`, in torso lengths); and bounds: the part IoU the same
skeletons reach on the *true* body mask, BlazePose's mask against the true body (accessories and
occluders excluded), and the part IoU of the *true joints* through the same geometry, on BlazePose's
mask and on the true body -- the chart's geometry apart from the landmarks' error.

Usage::

    python bench/bench_pose_quality.py [--data ../shared/data] [--world /tmp/pose-world] [--seed 13]
        [--ids 30 --per-id 8] [--json out.json] [--maps maps.npz] [--only real|synthetic]

``--maps`` saves the part maps and parsing of the figure crops; ``--compare BEFORE.npz AFTER.npz --figure
PNG`` draws them side by side (``docs/figures/pose_before_after.png``).
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
CSV = ROOT / "bench" / "data" / "handchecked_crops.csv"
SIZE = (256, 128)
LOWER_LEG_PARTS = (11, 12, 13, 14)
FIGURE_CROPS = (  # rows of the hand-checked CSV: cut at the hips behind a railing, railing at the thighs,
    # back view cut at the hips, back view, carried bag, back view behind a block
    "cuhk03_labeled_val/0059_07.jpg", "mini_market1501/query/0025_c6s1_002551_00.jpg", "cuhk03_labeled_val/0022_07.jpg",
    "mini_market1501/bounding_box_test/0018_c1s1_001851_01.jpg",
    "mini_market1501/bounding_box_train/0043_c2s1_003626_02.jpg", "cuhk03_labeled_val/0014_06.jpg",
)


def camera_of(relpath: str) -> str:
    name = Path(relpath).name
    if relpath.startswith("cuhk03"):
        return "cuhk-A" if int(name[5:7]) < 5 else "cuhk-B"
    return "market-" + name.split("_")[1][:2]


def load_real(data: Path) -> tuple[pd.DataFrame, np.ndarray]:
    from storage.decode import read_and_check, resize_rgb

    table = pd.read_csv(CSV).rename(columns={"view": "hand_view"})
    images = np.stack([resize_rgb(read_and_check(str(data / rel)).rgb, SIZE) for rel in table["relpath"]])
    table.insert(0, "image_id", np.arange(len(table), dtype=np.int64))
    return table, images


def run_units(images: np.ndarray, rows: pd.DataFrame, batch: int = 32):
    """MPN stats and DSAP coverage/IUV of every image, through the flows' unit functions."""
    from pipelines.build_dsap import dsap_unit, estimate_unit
    from pipelines.build_mpn import mpn_unit
    from priors.estimators import dense_estimator, parsing_source, segmentation_source
    from priors.mpn_prior import BINARIZE_THRESHOLD, HEAD_MIN_FRAC, LEG_MIN_FRAC, feature_map_size

    par, seg, est = parsing_source("pose"), segmentation_source("pose"), dense_estimator("pose-chart")
    prior = dict(feat_hw=feature_map_size((384, 128), 16), K=6, head_min_frac=HEAD_MIN_FRAC,
                 leg_min_frac=LEG_MIN_FRAC, threshold=BINARIZE_THRESHOLD)
    stats, cover, i_maps, labels, est_fails, views = [], [], [], [], [], []
    for s in range(0, len(images), batch):
        im, r = images[s:s + batch], rows.iloc[s:s + batch]
        _, tables, _ = mpn_unit(par, seg, im, r, prior)
        stats.append(tables["stats"])
        labels.append(par.parse(im, r).labels)
        arrays, fails, quality = estimate_unit(est, im, r)
        est_fails.append(fails)
        views.append(quality["view"].to_numpy())
        _, cov, _ = dsap_unit(im, arrays["i"], arrays["uv"], 32, "image_mean", r["image_id"].to_numpy(), fails, quality)
        cover.append(cov["coverage"])
        i_maps.append(arrays["i"])
    return (pd.concat(stats, ignore_index=True), pd.concat(cover, ignore_index=True), np.concatenate(i_maps),
            np.concatenate(labels), pd.concat(est_fails, ignore_index=True), np.concatenate(views))


def real_report(data: Path, maps: Path | None) -> dict:
    from priors.estimators import CoarseParsing

    table, images = load_real(data)
    t0 = time.perf_counter()
    stats, cover, i_maps, labels, est_fails, views = run_units(images, table)
    seconds = time.perf_counter() - t0
    df = table.merge(stats, on="image_id").merge(cover, on="image_id")
    est_ok = ~df["image_id"].isin(est_fails["image_id"])
    visible = (df.head_visible == 1) & (df.legs_visible == 1)
    lower_legs = np.isin(i_maps, LOWER_LEG_PARTS).reshape(len(df), -1).any(axis=1)
    any_legs = np.isin(i_maps, range(7, 15)).reshape(len(df), -1).any(axis=1)
    parsed_legs = np.isin(labels, (CoarseParsing.LEFT_LEG, CoarseParsing.RIGHT_LEG)).reshape(len(df), -1).any(axis=1)
    hidden = df.legs_visible == 0
    occluded = df.lower_body_occluded == 1
    out = {
        "images": int(len(df)), "seconds": round(seconds, 1),
        "fallback": float(df.fallback.mean()),
        "false_fallback": float((df.fallback & visible).mean()),
        "false_fallback_n": int((df.fallback & visible).sum()),
        "fallback_reasons": df.loc[df.fallback, "fallback_reason"].value_counts().to_dict(),
        "fallback_by_camera": df.groupby(df.relpath.map(camera_of))["fallback"].mean().round(3).to_dict(),
        "fallback_by_view": df.groupby("hand_view")["fallback"].mean().round(3).to_dict(),
        "pose_found": float(est_ok.mean()),
        # pose-chart's view (front/back/profile) against the hand-checked one (side = profile), where a pose was found
        "view_right": float((views == table.hand_view.map({"front": "front", "back": "back", "side": "profile"})
                             .to_numpy())[est_ok.to_numpy()].mean()),
        "legs_hidden_n": int(hidden.sum()),
        "lower_legs_painted_where_hidden": float(lower_legs[hidden].mean()) if hidden.any() else None,
        "leg_parts_painted_where_hidden": float(any_legs[hidden].mean()) if hidden.any() else None,
        "parsed_legs_where_hidden": float(parsed_legs[hidden].mean()) if hidden.any() else None,
        "occluded_n": int(occluded.sum()),
        "lower_legs_painted_occluded": float(lower_legs[occluded].mean()),
        "lower_legs_painted_visible": float(lower_legs[~occluded & ~hidden].mean()),
        "ok_coverage_under_5pct": int(((df.coverage < 0.05) & est_ok).sum()),
        "ok_coverage_under_15pct": int(((df.coverage < 0.15) & est_ok).sum()),
    }
    for col in ("low_quality_x", "low_quality_y"):  # MPN stats, DSAP coverage
        if col in df:
            out[f"{'mpn' if col.endswith('x') else 'dsap'}_low_quality"] = df.loc[df[col] != "", col].value_counts().to_dict()
    if "low_quality_y" in df:
        flagged = df["low_quality_y"] != ""
        out["ok_coverage_under_5pct_unflagged"] = int(((df.coverage < 0.05) & est_ok & ~flagged).sum())
        out["ok_coverage_under_15pct_unflagged"] = int(((df.coverage < 0.15) & est_ok & ~flagged).sum())
    if maps is not None:
        pick = [int(np.flatnonzero(df.relpath == rel)[0]) for rel in FIGURE_CROPS]
        np.savez_compressed(maps, relpath=np.array(FIGURE_CROPS), images=images[pick], i=i_maps[pick],
                            parsing=labels[pick], fallback=df.fallback.to_numpy()[pick],
                            reason=df.fallback_reason.to_numpy().astype(str)[pick])
    return out


def synthetic_world(path: Path, ids: int, per_id: int, seed: int) -> Path:
    from priors.synthetic import write_dataset

    meta = path / "groundtruth" / "meta.json"
    if meta.is_file() and json.loads(meta.read_text())["seed"] != seed:
        raise SystemExit(f"{path} holds the world of seed {json.loads(meta.read_text())['seed']}, not {seed}")
    if not (path / "groundtruth" / "attributes.json").is_file():
        write_dataset(path, ids=ids, images_per_id=per_id, cameras=6, seed=seed, size=SIZE, progress=False,
                      occlusion=0.5, distractors=0)
    return path


def mask_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a, b = a.reshape(len(a), -1), b.reshape(len(b), -1)
    union = (a | b).sum(axis=1)
    return np.where(union > 0, (a & b).sum(axis=1) / np.maximum(union, 1), np.nan)


def part_iou(est: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """Per-part IoU (24,), pooled over the images: sum of intersections / sum of unions."""
    e, g = est.ravel().astype(np.int64), gt.ravel().astype(np.int64)
    inter = np.bincount(e[e == g], minlength=25)[1:25]
    union = np.bincount(e, minlength=25)[1:25] + np.bincount(g, minlength=25)[1:25] - inter
    return np.where(union > 0, inter / np.maximum(union, 1), np.nan)


# BlazePose landmark -> joint of priors.synthetic.render.joint_positions (eyes: midway nose -> ear)
TRUE_JOINTS = {0: "nose", 7: "left_ear", 8: "right_ear", 11: "left_shoulder", 12: "right_shoulder", 13: "left_elbow",
               14: "right_elbow", 15: "left_wrist", 16: "right_wrist", 17: "left_hand_tip", 18: "right_hand_tip",
               19: "left_hand_tip", 20: "right_hand_tip", 21: "left_hand_tip", 22: "right_hand_tip", 23: "left_hip",
               24: "right_hip", 25: "left_knee", 26: "right_knee", 27: "left_ankle", 28: "right_ankle",
               29: "left_heel", 30: "right_heel", 31: "left_toe", 32: "right_toe"}
BODY_LANDMARKS = (11, 12, 13, 14, 15, 16, 23, 24, 25, 26, 27, 28)


def true_landmarks(world: Path, table: pd.DataFrame) -> np.ndarray:
    """(N, 33, 4) BlazePose-style landmarks at the renderer's *true* joints (visibility 1): the geometry
    of ``landmarks_to_iuv`` scored apart from BlazePose's landmark error. Truth: for the bench only."""
    from priors.synthetic.body import Pose
    from priors.synthetic.identity import Identity
    from priors.synthetic.render import BoxError, joint_positions

    attrs = json.loads((world / "groundtruth" / "attributes.json").read_text())
    by_path = {rec["relpath"]: rec for rec in attrs["images"]}
    out = np.ones((len(table), 33, 4))
    for k, rel in enumerate(table.relpath):
        rec = by_path[rel]
        j = joint_positions(Identity.from_dict(attrs["identities"][str(rec["identity_key"])]),
                            Pose(**{key[5:]: rec[key] for key in rec if key.startswith("pose_")}), rec["yaw"],
                            BoxError(**{key[4:]: rec[key] for key in rec if key.startswith("box_")}), SIZE)
        for idx, name in TRUE_JOINTS.items():
            out[k, idx, :3] = j[name]
        for side, eyes, ear, mouth in (("left", (1, 2, 3), 7, 9), ("right", (4, 5, 6), 8, 10)):
            out[k, list(eyes), :3] = (j["nose"] + j[f"{side}_ear"]) / 2
            out[k, mouth, :3] = 0.7 * j["nose"] + 0.3 * j[f"{side}_ear"]
    return out


def landmark_error(est: np.ndarray, truth: np.ndarray, found: np.ndarray, image_h: int) -> np.ndarray:
    """Mean distance of the 12 body landmarks (after :func:`canonical_sides`) to the true joints, in units
    of the true torso length; NaN where no pose was found."""
    from priors.backends.pose_geometry import body_view, canonical_sides, torso_length

    err = np.full(len(est), np.nan)
    for k in np.flatnonzero(found):
        raw = est[k].astype(np.float64)
        lm = canonical_sides(raw, *body_view(raw, torso_length(raw, image_h)))
        d = np.hypot(*(lm[list(BODY_LANDMARKS), :2] - truth[k][list(BODY_LANDMARKS), :2]).T)
        err[k] = d.mean() / torso_length(truth[k], image_h)
    return err


SKELETON_SEGMENTS = ((11, 13), (13, 15), (12, 14), (14, 16), (23, 25), (25, 27), (24, 26), (26, 28), (11, 23),
                     (12, 24), (11, 12), (23, 24))


def grabcut_mask(image: np.ndarray, prob: np.ndarray, landmarks: np.ndarray, iterations: int = 3,
                 core: float = 0.15, far: float = 0.15) -> np.ndarray:
    """BlazePose's mask refined by ``cv2.grabCut``, seeded by the skeleton and that mask (the issue's
    alternative): sure person = the seen skeleton's segments (``core`` T thick) where the probability
    is >= 0.9, probable person = probability >= 0.5, sure background = farther than ``far`` T from it."""
    import cv2

    from priors.backends.pose_geometry import seen_landmarks, torso_length

    h, w = prob.shape
    T = torso_length(landmarks, h)
    seed = np.where(prob >= 0.5, cv2.GC_PR_FGD, cv2.GC_PR_BGD).astype(np.uint8)
    bones = np.zeros((h, w), np.uint8)
    seen = seen_landmarks(landmarks, (h, w), 0.5)
    for a, b in SKELETON_SEGMENTS:
        if seen[a] and seen[b]:
            cv2.line(bones, tuple(int(round(x)) for x in landmarks[a, :2]), tuple(int(round(x)) for x in landmarks[b, :2]),
                     1, max(1, int(core * T)))
    seed[(prob >= 0.9) & (bones > 0)] = cv2.GC_FGD
    near = cv2.dilate((prob >= 0.5).astype(np.uint8), cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * int(far * T) + 1,) * 2))
    seed[near == 0] = cv2.GC_BGD
    if not np.isin(seed, (cv2.GC_FGD, cv2.GC_PR_FGD)).any():
        return prob >= 0.5
    try:
        cv2.grabCut(np.ascontiguousarray(image[:, :, ::-1]), seed, None, np.zeros((1, 65)), np.zeros((1, 65)),
                    iterations, cv2.GC_INIT_WITH_MASK)
    except cv2.error:  # a model with too few pixels of one kind
        return prob >= 0.5
    return np.isin(seed, (cv2.GC_FGD, cv2.GC_PR_FGD))


def joints_figure(images, gt_i, est_i, joint_i, views, out: Path) -> None:
    """Per picked image: the crop, the truth, pose-chart on BlazePose's landmarks, the same on the true joints."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from storage.views_base import part_overlay

    n = len(images)
    fig, axes = plt.subplots(n, 4, figsize=(6.0, 2.6 * n))
    titles = ("crop", "truth (oracle)", "BlazePose landmarks", "true joints")
    for r in range(n):
        for c, img in enumerate((images[r], part_overlay(images[r], gt_i[r]), part_overlay(images[r], est_i[r]),
                                 part_overlay(images[r], joint_i[r]))):
            ax = axes[r, c]
            ax.imshow(img)
            ax.set_xticks([]), ax.set_yticks([])
            if r == 0:
                ax.set_title(titles[c], fontsize=8)
        axes[r, 0].set_ylabel(views[r], fontsize=7)
    fig.suptitle("pose-chart geometry (same mask: BlazePose's) on estimated vs true joints", fontsize=8)
    fig.tight_layout(rect=(0, 0, 1, 0.985))
    fig.savefig(out, dpi=64)


def synthetic_report(world: Path, batch: int = 32, figure: Path | None = None, grabcut: bool = False) -> dict:
    from dataclasses import replace

    import cv2

    from priors.backends.pose_chart import landmarks_to_iuv
    from priors.estimators import OK, dense_estimator, segmentation_source
    from priors.synthetic.dataset import load_sidecar, read_image_table

    table = read_image_table(world)
    est, seg = dense_estimator("pose-chart"), segmentation_source("pose")
    found, est_i, gt_i, seg_m, gt_m, bound_i, landmarks = [], [], [], [], [], [], []
    joints = true_landmarks(world, table)
    joint_i, joint_true_i, grabcut_m, grabcut_i = [], [], [], []
    grabcut_seconds = est_seconds = 0.0
    t0 = time.perf_counter()
    for s in range(0, len(table), batch):
        rows = table.iloc[s:s + batch].assign(image_id=np.arange(s, min(s + batch, len(table))))
        images = np.stack([cv2.imread(str(world / r))[:, :, ::-1] for r in rows.relpath])
        e0 = time.perf_counter()
        res = est.estimate(images, rows)
        est_seconds += time.perf_counter() - e0
        found.extend(st == OK for st in res.status)
        est_i.append(res.i)
        seg_m.append(seg.segment(images, rows).mask)
        truths = [load_sidecar(world, r) for r in rows.relpath]
        gt_i.append(np.stack([t["i"] for t in truths]))
        gt_m.append(np.stack([t["mask"] for t in truths]))
        # the same skeleton on the *true* body mask, every pixel assigned: what a perfect mask would give
        pose, every = est._runner.pose(images), replace(est.chart, max_distance=1e9)  # cached: no second run
        bound_i.append(np.stack([landmarks_to_iuv(pose.landmarks[k], gt_i[-1][k] > 0, every)[0] if st == OK
                                 else np.zeros_like(gt_i[-1][k]) for k, st in enumerate(res.status)]))
        landmarks.append(pose.landmarks)
        if grabcut:  # the alternative mask, and the part map pose-chart draws on it
            g0 = time.perf_counter()
            masks = [grabcut_mask(images[k], pose.mask[k], pose.landmarks[k].astype(np.float64)) if st == OK
                     else np.zeros(images.shape[1:3], bool) for k, st in enumerate(res.status)]
            grabcut_seconds += time.perf_counter() - g0
            grabcut_m.append(np.stack(masks))
            grabcut_i.append(np.stack([landmarks_to_iuv(pose.landmarks[k], masks[k], est.chart)[0] if st == OK
                                       else np.zeros_like(gt_i[-1][k]) for k, st in enumerate(res.status)]))
        # the true joints through the same geometry: on BlazePose's mask (as the estimator), and on the true body
        true_lm = joints[s:s + len(rows)]
        joint_i.append(np.stack([landmarks_to_iuv(true_lm[k], pose.mask[k] >= est.seg_threshold, est.chart)[0] if st == OK
                                 else np.zeros_like(gt_i[-1][k]) for k, st in enumerate(res.status)]))
        joint_true_i.append(np.stack([landmarks_to_iuv(true_lm[k], gt_i[-1][k] > 0, every)[0] for k in range(len(rows))]))
    seconds = time.perf_counter() - t0 - grabcut_seconds
    found = np.array(found)
    est_i, gt_i, seg_m, gt_m, bound_i, landmarks, joint_i, joint_true_i = map(
        np.concatenate, (est_i, gt_i, seg_m, gt_m, bound_i, landmarks, joint_i, joint_true_i))
    lm_err = landmark_error(landmarks, joints, found, gt_i.shape[1])
    if figure is not None:  # two found, unoccluded images of each view, in table order
        plain = found & (table.occlusion == "none").to_numpy()
        pick = [k for v in ("front", "back", "left") for k in np.flatnonzero(plain & (table.view == v).to_numpy())[:2]]
        images = np.stack([cv2.imread(str(world / table.relpath[k]))[:, :, ::-1] for k in pick])
        joints_figure(images, gt_i[pick], est_i[pick], joint_i[pick], list(table.view[pick]), figure)
    view = table.view.map({"front": "front", "back": "back", "left": "profile", "right": "profile"}).to_numpy()
    occ = (table.occlusion != "none").to_numpy()
    body = mask_iou(est_i > 0, gt_i > 0)
    segm = mask_iou(seg_m, gt_m)

    def summary(sel: np.ndarray) -> dict:
        sel = sel & found
        ious = part_iou(est_i[sel], gt_i[sel])
        return {"n": int(sel.sum()), "part_iou": round(float(np.nanmean(ious)), 3),
                "body_mask_iou": round(float(np.nanmean(body[sel])), 3),
                "segmentation_iou": round(float(np.nanmean(segm[sel])), 3),
                "landmark_error_T": round(float(np.nanmean(lm_err[sel])), 3),
                "part_iou_true_joints": round(float(np.nanmean(part_iou(joint_i[sel], gt_i[sel]))), 3)}

    all_found = np.ones(len(table), bool)
    from priors.dsap import PART_NAMES

    ious = part_iou(est_i[found], gt_i[found])
    out = {
        "images": int(len(table)), "found": float(found.mean()), "seconds": round(seconds, 1),
        "all": summary(all_found), "front": summary(view == "front"), "back": summary(view == "back"),
        "profile": summary(view == "profile"), "occluded": summary(occ), "unoccluded": summary(~occ),
        "by_occluder": {k: summary((table.occlusion == k).to_numpy()) for k in sorted(set(table.occlusion))},
        "per_part_iou": {n: round(float(x), 3) for n, x in zip(PART_NAMES, ious)},
        "bound_part_iou_true_mask": round(float(np.nanmean(part_iou(bound_i[found], gt_i[found]))), 3),
        "bound_mask_vs_true_body": round(float(np.nanmean(mask_iou(seg_m[found], gt_i[found] > 0))), 3),
        "true_joints_pose_mask": {"part_iou": round(float(np.nanmean(part_iou(joint_i[found], gt_i[found]))), 3),
                                  "body_mask_iou": round(float(np.nanmean(mask_iou(joint_i[found] > 0,
                                                                                   gt_i[found] > 0))), 3)},
        "true_joints_true_mask_part_iou": round(float(np.nanmean(part_iou(joint_true_i[found], gt_i[found]))), 3),
    }
    if grabcut:
        gm, gi = np.concatenate(grabcut_m), np.concatenate(grabcut_i)
        out["grabcut"] = {
            "mask_vs_true_body": round(float(np.nanmean(mask_iou(gm[found], gt_i[found] > 0))), 3),
            "part_iou": round(float(np.nanmean(part_iou(gi[found], gt_i[found]))), 3),
            "body_mask_iou": round(float(np.nanmean(mask_iou(gi[found] > 0, gt_i[found] > 0))), 3),
            "ms_per_image": round(1000 * grabcut_seconds / max(int(found.sum()), 1), 1),
            "pose_chart_ms_per_image": round(1000 * est_seconds / len(table), 1),
        }
    return out


def compare_figure(before: Path, after: Path, out: Path) -> None:
    """Per figure crop: the crop, then pose-chart parts and MPN parsing before and after."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from storage.views_base import part_overlay

    b, a = np.load(before, allow_pickle=False), np.load(after, allow_pickle=False)
    parsing_rgb = np.array([[0, 0, 0], [230, 60, 60], [60, 120, 230], [60, 200, 90], [200, 200, 200]], np.uint8)
    n = len(a["relpath"])
    fig, axes = plt.subplots(n, 5, figsize=(7.5, 2.6 * n))
    titles = ("crop", "parts before", "parts after", "parsing before", "parsing after")
    for r in range(n):
        panels = (a["images"][r], part_overlay(b["images"][r], b["i"][r]), part_overlay(a["images"][r], a["i"][r]),
                  parsing_rgb[b["parsing"][r]], parsing_rgb[a["parsing"][r]])
        for c, img in enumerate(panels):
            ax = axes[r, c]
            ax.imshow(img)
            ax.set_xticks([]), ax.set_yticks([])
            if r == 0:
                ax.set_title(titles[c], fontsize=8)
        for c, maps in ((3, b), (4, a)):
            if maps["fallback"][r]:
                axes[r, c].set_xlabel(f"fallback: {maps['reason'][r]}", fontsize=6, color="#d62728")
        axes[r, 0].set_ylabel(Path(str(a["relpath"][r])).name, fontsize=6)
    fig.suptitle("pose-chart parts and MPN parsing (red head, blue left leg, green right leg, grey other)", fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=80)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data", help="real crops folder")
    parser.add_argument("--world", type=Path, default=None,
                        help="synthetic world folder, rendered there when absent (default /tmp/pose-quality-world-SEED)")
    parser.add_argument("--ids", type=int, default=30, help="synthetic identities")
    parser.add_argument("--per-id", type=int, default=8, help="synthetic images per identity")
    parser.add_argument("--seed", type=int, default=13, help="synthetic world seed")
    parser.add_argument("--only", choices=["real", "synthetic"], help="run one yardstick only")
    parser.add_argument("--json", type=Path, help="write the figures here too")
    parser.add_argument("--maps", type=Path, help="save the figure crops' part maps (npz)")
    parser.add_argument("--compare", type=Path, nargs=2, metavar=("BEFORE", "AFTER"),
                        help="two --maps files to draw side by side into --figure (nothing else runs)")
    parser.add_argument("--figure", type=Path, default=ROOT / "docs" / "figures" / "pose_before_after.png")
    parser.add_argument("--grabcut", action="store_true", help="also score GrabCut-refined masks (slow)")
    parser.add_argument("--joints-figure", type=Path, default=None,
                        help="draw pose-chart on BlazePose's vs the true joints for six synthetic crops (PNG)")
    args = parser.parse_args(argv)
    if args.compare:
        compare_figure(*args.compare, args.figure)
        print(f"wrote {args.figure}")
        return
    report = {}
    if args.only != "synthetic":
        if not args.data.exists():
            raise SystemExit(f"no real crops at {args.data}")
        report["real"] = real_report(args.data, args.maps)
        print("real:", json.dumps(report["real"], indent=1))
    if args.only != "real":
        world = args.world or Path(f"/tmp/pose-quality-world-{args.seed}")
        report["synthetic"] = synthetic_report(synthetic_world(world, args.ids, args.per_id, args.seed),
                                               figure=args.joints_figure, grabcut=args.grabcut)
        print("synthetic:", json.dumps(report["synthetic"], indent=1))
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()

"""The synthetic world: IUV consistency, visibility vs viewpoint, GT agreement, Market layout, determinism."""
from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from priors.synthetic import (
    LIP, BoxError, Camera, Occlusion, Pose, load_sidecar, plan_dataset, read_image_table, render_person,
    sample_identities, sample_identity, write_dataset,
)
from priors.synthetic.labels import BACK_PARTS, FLIP_PARTS, FRONT_PARTS, LEFT_PARTS, LIP_HEAD, RIGHT_PARTS

NEUTRAL = Camera.neutral()


def plain_identity(**changes):
    """A patterned identity without cloth layers or bag: every visible pixel is body surface."""
    base = sample_identity(1, np.random.default_rng(5))
    fields = dict(
        upper_type="shirt", upper_pattern="checks", stripe_freq=5, upper_colour=(200, 30, 30), upper_colour2=(240, 240, 240),
        lower_type="pants", lower_pattern="side_stripe", lower_colour=(30, 60, 170), lower_colour2=(240, 240, 240),
        hair_style="short", hat=None, bag="none", shoe_colour=(240, 240, 240), socks=None,
    )
    fields.update(changes)
    return dataclasses.replace(base, **fields)


def render(ident, pose=Pose(), view="front", **kw):
    kw.setdefault("camera", NEUTRAL)
    kw.setdefault("background", False)
    return render_person(ident, pose, view, kw.pop("camera"), size=kw.pop("size", (128, 64)), **kw)


CLOTHES = np.array([(200, 30, 30), (240, 240, 240), (30, 60, 170)], float)  # plain_identity's shirt, stripes, trousers
CLOTHED_PARTS = (1, 2) + tuple(range(7, 23))


def surface_classes(r, bins=24):
    """Which clothing colour (index into CLOTHES) each (I, U-bin, V-bin) of the body shows.

    A pixel is classified by its chromaticity (lighting scales a colour, chromaticity does not) and
    dropped when it lies between colours (antialiased pattern edges); a bin keeps its majority class
    when at least 70% of its classified pixels agree.
    """
    img = r["image"].astype(float)
    fg = np.isin(r["i"], CLOTHED_PARTS) & (img.sum(-1) > 40)
    chroma = img[fg][:, :2] / img[fg].sum(-1, keepdims=True)
    ref = CLOTHES[:, :2] / CLOTHES.sum(-1, keepdims=True)
    dist = np.linalg.norm(chroma[:, None] - ref[None], axis=-1)
    cls, pure = dist.argmin(1), dist.min(1) < 0.05
    ub = np.minimum((r["u"][fg] * bins).astype(int), bins - 1)
    vb = np.minimum((r["v"][fg] * bins).astype(int), bins - 1)
    key = (r["i"][fg].astype(int) * bins + ub) * bins + vb
    out = {}
    for k in np.unique(key[pure]):
        votes = np.bincount(cls[pure & (key == k)], minlength=len(CLOTHES))
        if votes.sum() >= 2 and votes.max() >= 0.7 * votes.sum():
            out[int(k)] = int(votes.argmax())
    return out


def agreement(a, b):
    shared = sorted(set(a) & set(b))
    return len(shared), float(np.mean([a[k] == b[k] for k in shared]))


def test_same_iuv_same_clothing_colour_across_poses_and_views():
    ident = plain_identity()
    a = render(ident, Pose(phase=0.3, stride=1.0), "front", supersample=4, size=(192, 96))
    b = render(ident, Pose(phase=2.4, stride=0.8, arm_swing=0.5), 35.0, supersample=4, size=(192, 96))
    n, agree = agreement(surface_classes(a), surface_classes(b))
    assert n > 150
    assert agree > 0.97
    # control: reading B's surface coordinates mirrored (V -> 1 - V) breaks the match, so the check has teeth
    _, agree_wrong = agreement(surface_classes(a), surface_classes(dict(b, v=1.0 - b["v"])))
    assert agree_wrong < 0.85
    # the back charts, seen from behind and from behind-right
    c = render(ident, Pose(phase=4.0, stride=0.6), "back", supersample=4, size=(192, 96))
    d = render(ident, Pose(phase=1.0, stride=1.1), 215.0, supersample=4, size=(192, 96))
    n, agree = agreement(surface_classes(c), surface_classes(d))
    assert n > 150 and agree > 0.97


def test_lighting_scales_colour_but_keeps_albedo():
    ident = plain_identity(upper_pattern="solid")
    flat = render(ident, camera=Camera.neutral(ambient=1.0))
    lit = render(ident, camera=Camera.neutral(ambient=0.4))
    torso = (flat["i"] == 2) & (lit["i"] == 2) & (flat["u"] < 0.8)  # above the waistband
    torso &= np.pad(torso, 1)[2:, 1:-1] & np.pad(torso, 1)[:-2, 1:-1] & np.pad(torso, 1)[1:-1, 2:] & np.pad(torso, 1)[1:-1, :-2]
    f, lt = flat["image"][torso].astype(float), lit["image"][torso].astype(float)
    assert np.allclose(f, (200, 30, 30), atol=3)  # ambient 1: the albedo itself
    assert (lt.sum(-1) < f.sum(-1) - 3).mean() > 0.3  # lit: darker where the surface turns away from the light
    ratio = lt[:, 0] / f[:, 0]
    assert np.allclose(lt[:, 1] / np.maximum(f[:, 1], 1), ratio, atol=0.15)


@pytest.mark.parametrize("view, forbidden, required", [("front", BACK_PARTS, (2, 9, 10, 13, 14, 15, 16)),
                                                       ("back", FRONT_PARTS, (1, 7, 8, 11, 12, 17, 18))])
def test_front_and_back_views_show_only_their_charts(view, forbidden, required):
    r = render(plain_identity(), Pose(phase=1.0), view)
    parts = set(np.unique(r["i"]).tolist())
    assert not parts & set(forbidden)
    assert set(required) <= parts
    assert {23, 24} <= parts  # both halves of the head from the front and from the back


def test_left_and_right_views_mirror_each_other_with_parts_swapped():
    ident = plain_identity(upper_pattern="solid", lower_pattern="solid")
    standing = Pose(stride=0.0, arm_swing=0.0)
    left, right = render(ident, standing, "left"), render(ident, standing, "right")
    count = lambda r, parts: int(np.isin(r["i"], parts).sum())  # noqa: E731
    assert count(left, LEFT_PARTS) > 3 * count(left, RIGHT_PARTS)
    assert count(right, RIGHT_PARTS) > 3 * count(right, LEFT_PARTS)
    assert (left["i"] == 24).sum() > 4 * (left["i"] == 23).sum()
    # the mirror image of the right view is the left view with left/right parts swapped; the ground truth is
    # sampled a quarter output pixel off the block centre (supersample 2), so allow a one-column shift
    mirrored = np.pad(FLIP_PARTS[right["i"][:, ::-1]], ((0, 0), (1, 1)))
    fg = (left["i"] > 0) | (mirrored[:, 1:-1] > 0)
    near = [mirrored[:, d:d + 64][fg] == left["i"][fg] for d in (0, 1, 2)]
    assert (near[0] | near[1] | near[2]).mean() > 0.98
    assert max(n.mean() for n in near) > 0.85


def test_parsing_mask_and_iuv_agree():
    idents = sample_identities(list(range(1, 13)), seed=3)
    rng = np.random.default_rng(0)
    for k, ident in enumerate(idents):
        occ = Occlusion("pole", 0.5, 0.2) if k % 4 == 0 else Occlusion()
        r = render_person(ident, Pose(phase=k), ["front", "left", "back", "right"][k % 4], Camera(cam_id=1), BoxError(dx=0.05),
                          occ, seed=int(rng.integers(1000)))
        i, p, m = r["i"], r["parsing"], r["mask"]
        assert m.dtype == bool and i.dtype == np.uint8 and p.dtype == np.uint8 and r["u"].dtype == np.float32
        assert not (i > 0)[~m].any()  # mask includes the whole IUV foreground
        assert np.array_equal(m, p > 0)
        assert (r["u"][i == 0] == 0).all() and (r["v"][i == 0] == 0).all()
        assert r["u"].min() >= 0 and r["u"].max() <= 1 and r["v"].max() <= 1
        head = np.isin(i, (23, 24))
        assert np.isin(p[head], LIP_HEAD).all()  # head parts are parsed as head
        face_or_hat = np.isin(p, (LIP["face"], LIP["hat"]))
        assert head[face_or_hat].all()  # and face / hat only on the head parts
        hair_elsewhere = (p == LIP["hair"]) & ~head
        assert ident.hair_style == "long" or not hair_elsewhere.any()
        assert (i[p == LIP["left_shoe"]] == 5).all() and (i[p == LIP["right_shoe"]] == 6).all()
        assert (i[p == LIP["bag"]] == 0).all()  # bags hide the body
        assert np.isin(i[p == LIP["left_arm"]], (4, 15, 17, 19, 21)).all()
        if occ.kind != "none":
            assert not m[r["occluded"]].any() and r["occluded"].any()


def test_true_person_extent_and_cut_boxes():
    ident = plain_identity()
    full = render(ident, Pose(), "front", box=BoxError(scale=1.2))
    rows = np.flatnonzero(full["mask"].any(1))
    assert abs(full["person_top"] - rows[0]) <= 1 and abs(full["person_bottom"] - (rows[-1] + 1)) <= 1
    assert 0 < full["person_top"] < 128 * 0.15 and 128 * 0.85 < full["person_bottom"] <= 128
    cut = render(ident, Pose(), "front", box=BoxError(scale=1.0, head_cut=0.12))
    assert cut["person_top"] < -128 * 0.08  # the head starts above the crop
    assert not np.isin(cut["i"][0], (0,)).all()  # and the first row shows the person
    feet = render(ident, Pose(), "front", box=BoxError(scale=1.0, feet_cut=0.15))
    assert feet["person_bottom"] > 128 * 1.1
    assert not np.isin(feet["i"], (5, 6)).any()  # feet cut off


def test_render_is_deterministic_and_seed_moves_only_background_and_noise():
    ident = plain_identity()
    cam = Camera(cam_id=2, noise=3.0, blur=0.5)
    a = render_person(ident, Pose(phase=1), "back", cam, seed=7)
    b = render_person(ident, Pose(phase=1), "back", cam, seed=7)
    c = render_person(ident, Pose(phase=1), "back", cam, seed=8)
    for key in ("image", "i", "u", "v", "parsing", "mask"):
        assert np.array_equal(a[key], b[key])
    assert np.array_equal(a["i"], c["i"]) and not np.array_equal(a["image"], c["image"])


def _digest(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_seed_same_bytes(tmp_path):
    a = write_dataset(tmp_path / "a", ids=4, images_per_id=3, cameras=3, seed=11, progress=False)
    write_dataset(tmp_path / "b", ids=4, images_per_id=3, cameras=3, seed=11, progress=False, workers=2)  # processes: same bytes
    write_dataset(tmp_path / "c", ids=4, images_per_id=3, cameras=3, seed=12, progress=False)
    da, db, dc = _digest(tmp_path / "a"), _digest(tmp_path / "b"), _digest(tmp_path / "c")
    assert da == db
    assert len(da) == 2 * a["images"] + 2  # image + sidecar per image, meta.json, attributes.json
    assert da["groundtruth/meta.json"] != dc["groundtruth/meta.json"]
    assert set(da) != set(dc) or da != dc


MARKET_NAME = re.compile(r"(\d{4})_c(\d)s(\d)_(\d{6})_(\d{2})\.jpg")


def test_market_layout_splits_and_sidecars(tmp_path):
    root = tmp_path / "w"
    summary = write_dataset(root, ids=10, images_per_id=6, cameras=4, seed=2, progress=False, distractors=3)
    table = read_image_table(root)
    assert len(table) == summary["images"] == 10 * 6 + 3
    folders = {"train": "bounding_box_train", "query": "query", "gallery": "bounding_box_test"}
    for rec in table.itertuples():
        folder, name = rec.relpath.split("/")
        assert folder == folders[rec.split]
        m = MARKET_NAME.fullmatch(name)
        assert m and int(m.group(1)) == rec.pid and int(m.group(2)) == rec.camid and 1 <= rec.camid <= 4
        assert (root / rec.relpath).is_file()
    assert table["relpath"].is_unique
    train_pids = set(table.pid[table.split == "train"])
    test_pids = set(table.pid[table.split != "train"]) - {0}
    assert len(train_pids) == 5 and len(test_pids) == 5 and not train_pids & test_pids
    assert set(table.pid[table.pid == 0].index) <= set(table.index[table.split == "gallery"]) and (table.pid == 0).sum() == 3
    for pid in test_pids:  # every query has a cross-camera gallery match
        q = table[(table.pid == pid) & (table.split == "query")]
        g = table[(table.pid == pid) & (table.split == "gallery")]
        assert 1 <= len(q) <= 3
        assert all((g.camid != cam).any() for cam in q.camid)
    for pid in train_pids | test_pids:  # each identity is seen by at least two cameras
        assert table[table.pid == pid].camid.nunique() >= 2
    gt = load_sidecar(root, table.relpath[0])
    assert set(gt) == {"i", "u", "v", "parsing", "mask"} and gt["i"].shape == (128, 64)
    meta = json.loads((root / "groundtruth" / "meta.json").read_text())
    assert meta["parsing_labels"][LIP["bag"]] == "bag" and meta["seed"] == 2
    assert sorted(meta["parsing_groups"]["head"]) == sorted(LIP_HEAD)
    inside = table[(table.person_top >= 0) & (table.person_bottom <= 128) & (table.occlusion == "none")]
    assert len(inside) > 30
    assert (np.abs(inside.person_top - inside.visible_top) <= 1).all()
    assert (np.abs(inside.person_bottom - (inside.visible_bottom + 1)) <= 1).all()
    cut = table[(table.person_top < -1) & (table.occlusion == "none")]
    assert (cut.visible_top == 0).all()


def test_market_adapter_reads_the_synthetic_world(tmp_path):
    scan = pytest.importorskip("storage.datasets").scan_dataset
    write_dataset(tmp_path / "w", ids=4, images_per_id=4, cameras=3, seed=0, progress=False, distractors=1)
    frame = scan("market1501", tmp_path / "w")
    table = read_image_table(tmp_path / "w")
    assert (frame.status == "ok").all() and len(frame) == len(table)
    merged = frame.merge(table, on="relpath", suffixes=("", "_gt"))
    assert (merged.pid == merged.pid_gt).all() and (merged.camid == merged.camid_gt).all() and (merged.split == merged.split_gt).all()


def test_plan_is_a_function_of_the_arguments():
    a, ta = plan_dataset(6, 4, 3, seed=1)
    b, tb = plan_dataset(6, 4, 3, seed=1)
    c, _ = plan_dataset(6, 4, 3, seed=2)
    assert a == b and ta == tb and [s.name for s in a] != [s.name for s in c]
    with pytest.raises(ValueError, match="6 cameras"):
        plan_dataset(3, 2, 7, seed=0)


def test_hard_negatives_share_most_attributes():
    idents = sample_identities(list(range(1, 41)), seed=0, hard_negative_rate=0.5)
    pairs = [(x, next(y for y in idents if y.pid == x.similar_to)) for x in idents if x.similar_to > 0]
    assert pairs
    for x, base in pairs:
        assert x.pid != base.pid and x.upper_type == base.upper_type and x.upper_colour == base.upper_colour
        assert 1 <= len(x.extra["changed"]) <= 2


def test_preview_png(tmp_path):
    pytest.importorskip("matplotlib")
    summary = write_dataset(tmp_path / "w", ids=3, images_per_id=3, cameras=2, seed=0, progress=False,
                            preview=tmp_path / "sheet.png")
    import cv2

    sheet = cv2.imread(summary["preview"])
    assert sheet is not None and sheet.shape[0] > 200 and sheet.shape[1] > 300


def test_batched_rasteriser_matches_the_per_primitive_reference():
    from priors.synthetic.body import body_primitives
    from priors.synthetic.raster import Buffers, View, rasterise, rasterise_all

    for k, ident in enumerate(sample_identities([1, 2, 3, 4], seed=9)):
        prims = body_primitives(ident, Pose(phase=1.7 * k))
        view = View(50.0 * k + 10, 200.0, 190.0, -0.32, -0.05)
        ref, fast = Buffers.empty(220, 128), Buffers.empty(220, 128)
        for p in prims:
            rasterise(p, view, ref)
        rasterise_all(prims, view, fast)
        assert (ref.layer > 0).sum() > 3000
        assert (ref.layer == fast.layer).mean() > 0.999 and (ref.i == fast.i).mean() > 0.999
        same = (ref.i == fast.i) & (ref.i > 0)
        assert np.abs(ref.u[same] - fast.u[same]).max() < 1e-3 and np.abs(ref.v[same] - fast.v[same]).max() < 1e-3


def test_cli_parses_options_and_writes_the_world(tmp_path, capsys):
    import argparse

    from priors.synthetic.cli import configure_parser, parse_size, run

    assert parse_size("128x64") == (128, 64) and parse_size("256X128") == (256, 128)
    for bad in ("128", "64x4", "axb"):
        with pytest.raises(argparse.ArgumentTypeError):
            parse_size(bad)
    parser = configure_parser(argparse.ArgumentParser())
    args = parser.parse_args(["--out", str(tmp_path / "w"), "--ids", "2", "--images-per-id", "2", "--cameras", "2",
                              "--seed", "3", "--size", "64x32", "--quiet"])
    assert run(args) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["images"] == 4 + summary["distractors"] and summary["size"] == [64, 32]
    table = read_image_table(tmp_path / "w")
    gt = load_sidecar(tmp_path / "w", table.relpath[0])
    assert gt["i"].shape == (64, 32)
    with pytest.raises(SystemExit):
        parser.parse_args(["--out", "x", "--ids", "0"])


@settings(max_examples=12, deadline=None)
@given(st.floats(0.0, 360.0))
def test_torso_chart_follows_the_yaw(yaw):
    """The camera sees the front torso chart (2) when it stands in front (cos yaw > 0), the back chart (1) behind."""
    r = render(plain_identity(), Pose(stride=0.5), yaw, size=(96, 48))
    front, back = int((r["i"] == 2).sum()), int((r["i"] == 1).sum())
    c = np.cos(np.radians(yaw))
    if c > 0.3:
        assert front > 2 * back
    elif c < -0.3:
        assert back > 2 * front
    side = np.sin(np.radians(yaw))  # + : the person's left side faces the camera
    left, right = int(np.isin(r["i"], LEFT_PARTS).sum()), int(np.isin(r["i"], RIGHT_PARTS).sum())
    if side > 0.5:
        assert left > right
    elif side < -0.5:
        assert right > left


def test_part_names_follow_densepose_one_table_for_every_backend():
    """DensePose: 15/16, 19/20 are the arms' inside (front) halves, 17/18, 21/22 the outside; 1/2 torso back/front."""
    from priors.dsap import PART_NAMES as DSAP_NAMES
    from priors.synthetic.labels import PART_NAMES

    assert [PART_NAMES[k] for k in range(1, 25)] == list(DSAP_NAMES)
    assert PART_NAMES[15] == "upper_arm_left_inside" and PART_NAMES[22] == "lower_arm_right_outside"
    assert PART_NAMES[7] == "upper_leg_right_back" and PART_NAMES[5] == "left_foot"


@pytest.mark.parametrize("kind", ["railing", "parapet", "bag", "person"])
def test_new_occluders_hide_the_person_and_leave_no_truth_behind(kind):
    ident = plain_identity()
    clear = render(ident, Pose(phase=1.0), "front", size=(256, 128))
    r = render(ident, Pose(phase=1.0), "front", size=(256, 128), occlusion=Occlusion(kind, 0.3, 0.2, (150, 150, 145)))
    occ = r["occluded"]
    assert occ.any() and not r["mask"][occ].any() and (r["i"][occ] == 0).all() and (r["parsing"][occ] == 0).all()
    assert (r["mask"] <= clear["mask"]).all() and r["mask"].sum() < clear["mask"].sum()
    if kind == "parapet":  # a wall from the waist or thighs down: no lower leg is left
        assert not np.isin(r["i"], (11, 12, 13, 14, 5, 6)).any() and np.isin(r["i"], (23, 24)).any()
    if kind == "person":  # a second, nearer pedestrian at the side: drawn, but not the person
        assert not np.array_equal(r["image"][occ], clear["image"][occ])


@pytest.mark.parametrize("view", ["front", "back", "left"])
def test_joint_positions_fall_on_their_parts_and_face_the_camera_the_right_way(view):
    from priors.synthetic.render import joint_positions

    ident, pose, box, size = plain_identity(), Pose(phase=1.0), BoxError(scale=1.1), (256, 128)
    r = render(ident, pose, view, box=box, size=size)
    j = joint_positions(ident, pose, view, box, size)
    at = lambda name: int(r["i"][int(round(j[name][1])), int(round(j[name][0]))])  # noqa: E731
    # joints sit on the axes of their own parts (hip and shoulder: the torso may cover them)
    assert at("left_knee") in (8, 10, 12, 14) and at("right_knee") in (7, 9, 11, 13)
    assert at("head_centre") in (23, 24)
    assert at("left_ankle") in (12, 14, 5) and at("right_ankle") in (11, 13, 6)
    if view != "left":  # the near side in a left view hides the right arm behind the torso
        assert at("left_elbow") in (15, 17, 19, 21) and at("right_elbow") in (16, 18, 20, 22)
    dx = j["left_shoulder"][0] - j["right_shoulder"][0]
    dz = j["left_shoulder"][2] - j["right_shoulder"][2]
    if view == "front":  # the person's left on the image's right, shoulders at the same depth
        assert dx > 0 and abs(dz) < 1
    elif view == "back":
        assert dx < 0 and abs(dz) < 1
    else:  # the left side faces the camera: the left shoulder is nearer (mediapipe: smaller depth)
        assert abs(dx) < 2 and dz < -20
    rows = np.flatnonzero(r["mask"].any(axis=1))
    assert rows[0] < j["head_centre"][1] < j["left_shoulder"][1] < j["left_hip"][1] < j["left_ankle"][1] <= rows[-1]

"""Oracle backends: sidecar -> DenseResult / ParsingResult / MaskResult, at the store's image size."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from priors.backends.oracle import NO_GROUNDTRUTH, OracleDense, OracleParsing, OracleSegmentation, coarse_from_truth, nearest_resize
from priors.estimators import CoarseParsing as C
from priors.estimators import dense_estimator, parsing_source, provenance_of, segmentation_source
from priors.synthetic import (
    GENERATOR_VERSION, LIP, load_sidecar, plan_dataset, read_image_table, render_person, sample_camera, write_dataset,
)
from priors.synthetic.dataset import _identity_for
from priors.synthetic.identity import sample_identities


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("oracle") / "w"
    write_dataset(root, ids=3, images_per_id=3, cameras=2, seed=4, progress=False, distractors=1)
    table = read_image_table(root)
    rows = pd.DataFrame({"image_id": np.arange(len(table)), "relpath": table.relpath.astype(str), "split": table.split})
    return root, table, rows


def blank(rows, size=(128, 64)):
    return np.zeros((len(rows), *size, 3), np.uint8)


def test_round_trip_equals_the_rendered_truth(world):
    root, table, rows = world
    specs, _ = plan_dataset(3, 3, 2, seed=4, distractors=1)
    identities = {i.pid: i for i in sample_identities([1, 2, 3], 4)}
    dense = OracleDense(root).estimate(blank(rows), rows)
    parsing = OracleParsing(root).parse(blank(rows), rows)
    masks = OracleSegmentation(root).segment(blank(rows), rows)
    assert dense.status == ["ok"] * len(rows) == masks.status == parsing.status
    by_relpath = {s.relpath: s for s in specs}
    for b, relpath in enumerate(rows.relpath):
        spec = by_relpath[relpath]
        gt = render_person(_identity_for(spec, identities, 4), spec.pose, spec.yaw, sample_camera(spec.camid, 4), spec.box,
                           spec.occlusion, seed=spec.render_seed)
        assert np.array_equal(dense.i[b], gt["i"]) and np.array_equal(dense.u[b], gt["u"]) and np.array_equal(dense.v[b], gt["v"])
        assert np.array_equal(masks.mask[b], gt["mask"])
        assert np.array_equal(parsing.labels[b], coarse_from_truth(gt["parsing"], gt["i"]))


def test_larger_store_size_is_an_exact_nearest_upsampling(world):
    root, table, rows = world
    dense = OracleDense(root).estimate(blank(rows, (256, 128)), rows)
    seg = OracleSegmentation(root).segment(blank(rows, (256, 128)), rows)
    for b, relpath in enumerate(rows.relpath):
        gt = load_sidecar(root, relpath)
        up = lambda a: np.repeat(np.repeat(a, 2, axis=0), 2, axis=1)  # noqa: E731
        assert np.array_equal(dense.i[b], up(gt["i"])) and np.array_equal(dense.u[b], up(gt["u"]))
        assert np.array_equal(seg.mask[b], up(gt["mask"]))
    assert dense.i.shape == (len(rows), 256, 128) and dense.u.dtype == np.float32


def test_missing_sidecar_is_a_status_not_an_exception(world):
    root, table, rows = world
    rows = pd.concat([rows.iloc[:1], pd.DataFrame({"image_id": [99], "relpath": ["query/9999_c1s1_000001_01.jpg"], "split": ["query"]})])
    dense = OracleDense(root).estimate(blank(rows), rows)
    assert dense.status == ["ok", NO_GROUNDTRUTH]
    assert not dense.i[1].any() and not dense.u[1].any()
    assert OracleParsing(root).parse(blank(rows), rows).status[1] == NO_GROUNDTRUTH
    assert OracleSegmentation(root).segment(blank(rows), rows).status[1] == NO_GROUNDTRUTH
    with pytest.raises(ValueError, match="root"):
        OracleDense().estimate(blank(rows), rows)


def test_registry_and_provenance(world):
    root = world[0]
    dense, parse, seg = dense_estimator("oracle", root=root), parsing_source("oracle", root=root), segmentation_source("oracle", root=root)
    assert isinstance(dense, OracleDense) and isinstance(parse, OracleParsing) and isinstance(seg, OracleSegmentation)
    prov = provenance_of(dense)
    assert prov == {"name": "oracle", "version": GENERATOR_VERSION, "weights_sha256": None, "params": {"root": str(root)}}


def test_coarse_parsing_rules_by_hand():
    P = np.array([[0, LIP["hair"], LIP["face"], LIP["hat"]],
                  [LIP["pants"], LIP["pants"], LIP["left_shoe"], LIP["right_leg"]],
                  [LIP["upper_clothes"], LIP["bag"], LIP["skirt"], LIP["pants"]]], np.uint8)
    I = np.array([[0, 23, 24, 23],
                  [8, 13, 5, 11],
                  [2, 0, 10, 1]], np.uint8)
    expected = np.array([[C.BACKGROUND, C.HEAD, C.HEAD, C.HEAD],
                         [C.LEFT_LEG, C.RIGHT_LEG, C.LEFT_LEG, C.RIGHT_LEG],
                         [C.OTHER, C.OTHER, C.LEFT_LEG, C.OTHER]], np.uint8)  # waistband on the torso is OTHER
    assert np.array_equal(coarse_from_truth(P, I), expected)


def test_oracle_parsing_on_the_world_has_head_and_legs_where_visible(world):
    root, table, rows = world
    labels = OracleParsing(root).parse(blank(rows), rows).labels
    for b, rec in enumerate(table.itertuples()):
        gt = load_sidecar(root, rec.relpath)
        assert np.array_equal(labels[b] > 0, gt["mask"])
        head = labels[b] == C.HEAD
        assert np.isin(gt["i"][head & (gt["parsing"] != LIP["hair"])], (23, 24)).all()  # long hair may hang over the back
        if rec.person_top >= 0 and rec.occlusion == "none":
            assert head.sum() > 20
        if rec.person_bottom <= 128 and rec.occlusion == "none":
            assert (labels[b] == C.LEFT_LEG).sum() > 20 and (labels[b] == C.RIGHT_LEG).sum() > 20


def naive_nearest(arr, size):
    H, W = size
    h, w = arr.shape[:2]
    out = np.empty((H, W) + arr.shape[2:], arr.dtype)
    for r in range(H):
        for c in range(W):
            out[r, c] = arr[min(int((r + 0.5) * h / H), h - 1), min(int((c + 0.5) * w / W), w - 1)]
    return out


@settings(max_examples=25, deadline=None)
@given(st.integers(1, 12), st.integers(1, 12), st.integers(1, 20), st.integers(1, 20))
def test_nearest_resize_matches_naive_reference(h, w, H, W):
    arr = np.arange(h * w, dtype=np.int32).reshape(h, w)
    assert np.array_equal(nearest_resize(arr, (H, W)), naive_nearest(arr, (H, W)))


# ---------------------------------------------------------------- the flows' unit functions on oracle truth


class _FailsOn:
    """Wraps a source: images ``bad`` get ``status`` and empty output (an estimator that failed there)."""

    def __init__(self, inner, bad, status="pose_not_found"):
        self.inner, self.bad, self.status, self.name = inner, set(bad), status, f"broken-{inner.name}"

    def _fix(self, res, field, rows):
        out = getattr(res, field).copy()
        status = list(res.status)
        for k, image_id in enumerate(rows["image_id"]):
            if int(image_id) in self.bad:
                out[k], status[k] = 0, self.status
        setattr(res, field, out)
        res.status = status
        return res

    def parse(self, images, rows):
        return self._fix(self.inner.parse(images, rows), "labels", rows)

    def segment(self, images, rows):
        return self._fix(self.inner.segment(images, rows), "mask", rows)

    def estimate(self, images, rows):
        return self._fix(self.inner.estimate(images, rows), "i", rows)


def test_mpn_unit_says_estimator_failed_not_parts_absent(world):
    from pipelines.build_mpn import mpn_unit
    from priors.mpn_prior import ESTIMATOR_FAILED, FALLBACK_REASONS

    root, table, rows = world
    bad = [0, 2]
    par = _FailsOn(OracleParsing(root), bad)
    seg = _FailsOn(OracleSegmentation(root), bad, "no_person")
    prior = dict(feat_hw=(24, 8), K=6, head_min_frac=0.005, leg_min_frac=0.002, threshold=0.5)
    _, tables, fails = mpn_unit(par, seg, blank(rows), rows, prior)
    st_ = tables["stats"].set_index("image_id")
    assert (st_.loc[bad, "fallback_reason"] == ESTIMATOR_FAILED).all() and st_.loc[bad, "fallback"].all()
    assert (st_.loc[bad, "parsing_status"] == "pose_not_found").all()
    assert (st_.loc[bad, "low_quality"] == ESTIMATOR_FAILED).all()
    good = st_.drop(index=bad)
    assert set(good["fallback_reason"]) <= set(FALLBACK_REASONS) and ESTIMATOR_FAILED not in set(good["fallback_reason"])
    assert (good["visible_landmarks"] == -1).all()  # the oracle does not say
    assert ((good["person_frac"] > 0) & (good["person_frac"] <= 1)).all()
    # both sources failed on images 0 and 2: two rows each in the failures table, ...
    assert sorted(fails["image_id"].tolist()) == [0, 0, 2, 2]
    # ... but the flow counts images per reason
    from pipelines.runner import count_reasons

    per_image = count_reasons(fails.drop_duplicates(["image_id", "reason"])["reason"])
    assert per_image == {"pose_not_found": 2, "no_person": 2} and fails["image_id"].nunique() == 2


def test_dsap_unit_flags_low_quality_with_the_documented_thresholds(world):
    from pipelines.build_dsap import LOW_COVERAGE, MIN_LANDMARKS, dsap_unit, estimate_unit

    root, table, rows = world
    images = np.full((len(rows), 128, 64, 3), 90, np.uint8)
    est = _FailsOn(OracleDense(root), [1])
    arrays, fails, quality = estimate_unit(est, images, rows)
    assert (quality["visible_landmarks"] == -1).all() and (quality["view"] == "").all()
    quality.loc[quality.image_id == 3, "visible_landmarks"] = MIN_LANDMARKS - 1
    arrays["i"][4] = np.where(arrays["i"][4] > 0, 2, 0).astype(np.uint8)  # one part only: few parts
    _, tables, _ = dsap_unit(images, arrays["i"], arrays["uv"], 8, "image_mean", rows["image_id"].to_numpy(), fails,
                             quality)
    cov = tables["coverage"].set_index("image_id")
    assert cov.loc[1, "low_quality"] == "estimator_failed"
    assert "few_landmarks" in cov.loc[3, "low_quality"] and "few_parts" in cov.loc[4, "low_quality"]
    fine = cov.drop(index=[1, 3, 4])
    expect = np.where(fine["coverage"] < LOW_COVERAGE, "low_coverage", "")
    np.testing.assert_array_equal(fine["low_quality"].str.replace(";few_parts", "").to_numpy(), expect)

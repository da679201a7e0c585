"""The detectron2 backends for real: real configs, random-initialised weights, real result objects.

Needs detectron2 + DensePose (plain CI skips this file). Build the environment and run it with::

    scripts/densepose_env.sh DETECTRON2_SRC VENV
    PYTHONPATH=. VENV/bin/python -m pytest -q tests/test_densepose_real.py -p no:cacheprovider

No trained weights exist here, so the models run with the real architecture and
random weights saved as ``.pth`` state dicts (outputs are meaningless, the code
path is the real one). ``DENSEPOSE_CONFIG`` / ``DENSEPOSE_WEIGHTS`` point the
first test at a trained model instead.
"""
from __future__ import annotations

import os
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("detectron2", reason="needs detectron2: build the venv with scripts/densepose_env.sh")
pytest.importorskip("densepose", reason="needs detectron2's DensePose project: scripts/densepose_env.sh")

import torch  # noqa: E402
from densepose.converters import ToChartResultConverter  # noqa: E402
from densepose.structures import DensePoseChartPredictorOutput  # noqa: E402
from detectron2.structures import Boxes, Instances  # noqa: E402

from priors.backends.densepose import DensePoseEstimator, model_input_size  # noqa: E402
from priors.backends.densepose_dump import DensePoseDumpEstimator  # noqa: E402
from priors.backends.detectron2_model import save_random_init_weights  # noqa: E402
from priors.backends.maskrcnn import MaskRCNNSegmentation  # noqa: E402
from priors.crop_canvas import canvas_layout  # noqa: E402
from priors.estimators import dense_estimator, file_sha256  # noqa: E402

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "mini_market1501"
DP_DIR = Path(__import__("densepose").__file__).resolve().parents[1]
DP_CONFIG = str(DP_DIR / "configs" / "densepose_rcnn_R_50_FPN_s1x.yaml")
SMALL = 160  # test size (short side) for crops where only the code path matters: 128x64 -> 320x160
RANDOM = {"score_threshold": 0.5, "detections_per_crop": 5}  # a random model scores ~0.5-0.9; few boxes per crop


def crop_files(n: int) -> list[Path]:
    files = sorted(DATA.rglob("*.jpg")) if DATA.is_dir() else []
    if not files:
        pytest.skip("needs ../shared/data/mini_market1501")
    return files[:: max(1, len(files) // n)][:n]


def read_rgb(files) -> np.ndarray:
    from PIL import Image

    return np.stack([np.asarray(Image.open(f).convert("RGB")) for f in files])


def rows_for(names, hw=(128, 64)) -> pd.DataFrame:
    n = len(names)
    return pd.DataFrame({"image_id": np.arange(n), "relpath": list(names), "orig_height": [hw[0]] * n,
                         "orig_width": [hw[1]] * n})  # fmt: skip


@pytest.fixture(scope="module")
def dp_weights(tmp_path_factory) -> str:
    return save_random_init_weights(DP_CONFIG, tmp_path_factory.mktemp("dp") / "random_densepose.pth", densepose=True)


@pytest.fixture(scope="module")
def dp_small(dp_weights) -> DensePoseEstimator:
    return DensePoseEstimator(DP_CONFIG, dp_weights, min_size=SMALL, **RANDOM)


def test_densepose_estimator_real_model(dp_weights):
    """The real model on real crops (default input size); a trained model via DENSEPOSE_CONFIG/WEIGHTS."""
    config, weights = os.environ.get("DENSEPOSE_CONFIG") or DP_CONFIG, os.environ.get("DENSEPOSE_WEIGHTS") or dp_weights
    est = dense_estimator("densepose", config=config, weights=weights, trust_weights=bool(os.environ.get("DENSEPOSE_WEIGHTS")),
                          **({} if os.environ.get("DENSEPOSE_WEIGHTS") else RANDOM))  # fmt: skip
    images = read_rgb(crop_files(2))
    res = est.estimate(images, rows_for(["a.jpg", "b.jpg"]))
    assert res.i.shape == images.shape[:3] and res.i.max() <= 24
    # random weights: a detection is found and converted, though its chart may hold no part ("no_parts")
    assert set(res.status) <= {"ok", "no_person", "low_crop_iou", "no_parts"} and set(res.status) != {"no_person"}
    for k, st in enumerate(res.status):
        assert res.i[k].any() == (st == "ok")
        assert 0 <= res.u[k].min() and res.u[k].max() <= 1 and not res.u[k][res.i[k] == 0].any()
    p = est.params
    assert p["weights_sha256"] == est.weights_sha256 == file_sha256(weights) and p["config_sha256"] == file_sha256(config)
    assert len(p["merged_config_sha256"]) == 64 and p["detectron2_commit"]
    assert (p["min_size"], p["max_size"]) == (800, 1333)


def _chart_output(k: int, seed: int = 0) -> DensePoseChartPredictorOutput:
    g = torch.Generator().manual_seed(seed)
    S = 112  # DensePose's head resolution
    return DensePoseChartPredictorOutput(coarse_segm=torch.randn(k, 2, S, S, generator=g) + 2.0,
                                         fine_segm=torch.randn(k, 25, S, S, generator=g),
                                         u=torch.rand(k, 25, S, S, generator=g) * 1.2 - 0.1,
                                         v=torch.rand(k, 25, S, S, generator=g))  # fmt: skip


def _instances(hw, boxes, scores, seed=0) -> Instances:
    inst = Instances(hw)
    inst.pred_boxes = Boxes(torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4))
    inst.scores = torch.tensor(scores, dtype=torch.float32)
    inst.pred_classes = torch.zeros(len(scores), dtype=torch.int64)
    inst.pred_densepose = _chart_output(len(scores), seed)
    return inst


class StubModel:
    """Returns fixed real Instances per input (store-frame boxes), or mapped onto a canvas."""

    def __init__(self, per_crop, layout=None, crop_hw=None):
        self.per_crop, self.layout, self.crop_hw, self.calls = per_crop, layout, crop_hw, 0

    def __call__(self, inputs):
        out = []
        for x in inputs:
            if self.layout is None:
                out.append({"instances": self.per_crop[self.calls]})
                self.calls += 1
                continue
            parts = self.per_crop[self.calls : self.calls + self.layout.slots]
            self.calls += len(parts)
            (H, W), lay = self.crop_hw, self.layout
            scale = torch.tensor([lay.tile_w / W, lay.tile_h / H] * 2)
            boxes = [p.pred_boxes.tensor * scale + torch.tensor(lay.origins[t, ::-1].tolist() * 2)
                     for t, p in enumerate(parts)]  # fmt: skip
            inst = Instances((x["height"], x["width"]))
            inst.pred_boxes = Boxes(torch.cat(boxes))
            inst.scores = torch.cat([p.scores for p in parts])
            inst.pred_densepose = DensePoseChartPredictorOutput(
                *(torch.cat([getattr(p.pred_densepose, f) for p in parts]) for f in ("coarse_segm", "fine_segm", "u", "v"))
            )
            out.append({"instances": inst})
        return out


def test_real_chart_objects_box_frame_to_image_frame(dp_small):
    """Real DensePoseChartPredictorOutput / Instances: best instance, box -> image frame, none, several."""
    H, W = 128, 64
    several = _instances((H, W), [[30.2, 0.0, 64.0, 40.7],   # bystander, top right, higher score
                                  [2.6, 3.3, 61.9, 127.4],   # the crop's person
                                  [0.0, 60.0, 20.0, 128.0]], [0.99, 0.6, 0.7], seed=1)  # fmt: skip
    one = _instances((H, W), [[10.5, 20.5, 50.5, 100.5]], [0.3], seed=2)
    none = _instances((H, W), [], [], seed=3)
    est = dp_small
    model, est.model, est.densepose_head = est.model, StubModel([several, one, none]), "all"  # the stub is model(inputs)
    try:
        res = est.estimate(np.zeros((3, H, W, 3), np.uint8), rows_for(["a", "b", "c"]))
    finally:
        est.model, est.densepose_head = model, "kept"
    assert res.status == ["ok", "ok", "no_person"]
    for b, (inst, k) in enumerate([(several, 1), (one, 0)]):
        chart = ToChartResultConverter.convert(inst.pred_densepose[k], inst.pred_boxes[[k]])
        x0, y0 = (int(c) for c in inst.pred_boxes.tensor[k, :2])
        h, w = chart.labels.shape
        assert (h, w) == (int(inst.pred_boxes.tensor[k, 3] - inst.pred_boxes.tensor[k, 1]),
                          int(inst.pred_boxes.tensor[k, 2] - inst.pred_boxes.tensor[k, 0]))  # fmt: skip
        expected = np.zeros((H, W), np.uint8)
        expected[y0 : y0 + h, x0 : x0 + w] = chart.labels.numpy()[: H - y0, : W - x0]
        assert np.array_equal(res.i[b], expected) and expected.any()
        fg = expected > 0
        u = np.clip(chart.uv[0].numpy(), 0, 1)
        np.testing.assert_array_equal(res.u[b][y0 : y0 + h, x0 : x0 + w][fg[y0 : y0 + h, x0 : x0 + w]],
                                      u[: H - y0, : W - x0][fg[y0 : y0 + h, x0 : x0 + w]])  # fmt: skip
        assert not res.u[b][~fg].any()
    assert not res.i[2].any()


def test_canvas_split_matches_one_crop_per_pass_on_real_objects(dp_small):
    """The same detections, once per crop and once tiled on canvases: identical IUV (bookkeeping only)."""
    H, W, n = 128, 64, 5
    rng = np.random.default_rng(0)
    per_crop = []
    for c in range(n):
        k = int(rng.integers(0, 4))
        xy = np.sort(rng.uniform(0, 1, (k, 2, 2)), axis=1) * [W, H] + 0.137  # off-integer corners
        per_crop.append(_instances((H, W), np.minimum(xy, [W, H]).reshape(-1, 4).tolist(), rng.uniform(0.1, 1, k).tolist(), c))
    images = np.zeros((n, H, W, 3), np.uint8)
    est = dp_small
    model, grid, est.densepose_head = est.model, est.grid, "all"  # the stub is model(inputs)
    try:
        est.model, est.grid = StubModel(per_crop), None
        single = est.estimate(images, rows_for(list("abcde")))
        lay = canvas_layout(model_input_size(H, W, est.min_size, est.max_size), 2, 2, gap=est.canvas_gap)
        est.model, est.grid = StubModel(per_crop, lay, (H, W)), (2, 2)
        tiled = est.estimate(images, rows_for(list("abcde")))
    finally:
        est.model, est.grid, est.densepose_head = model, grid, "kept"
    assert tiled.status == single.status and "ok" in single.status
    assert np.array_equal(tiled.i, single.i)
    np.testing.assert_allclose(tiled.u, single.u, atol=1e-5)
    np.testing.assert_allclose(tiled.v, single.v, atol=1e-5)


@pytest.mark.parametrize("canvas", [None, "1x2"])
def test_kept_head_equals_full_path_on_the_real_model(dp_weights, canvas):
    """DensePose's head on the kept detection only == on every detection (same scale), batched and tiled.

    A forward hook on the real DensePose head counts the ROIs it ran on: every detection in
    mode ``all`` (as apply_net), one per crop with a pick in mode ``kept``.
    """
    images = read_rgb(crop_files(4))
    rows = rows_for(list("abcd"))
    res, rois = {}, {}
    for mode in ("all", "kept"):
        est = DensePoseEstimator(DP_CONFIG, dp_weights, min_size=SMALL, canvas=canvas, batch_size=2,
                                 densepose_head=mode, **RANDOM)  # fmt: skip
        assert est.params["densepose_head"] == mode and est.params["canvas"] == canvas
        assert est.params["detections_per_crop"] == 5
        seen = []
        hook = est.model.roi_heads.densepose_head.register_forward_hook(lambda m, args, out: seen.append(len(args[0])))
        res[mode] = est.estimate(images, rows)
        hook.remove()
        rois[mode] = sum(seen)
    full, kept = res["all"], res["kept"]
    assert kept.status == full.status and "ok" in full.status
    for k, st in enumerate(kept.status):
        assert kept.i[k].any() == (st == "ok")
    assert np.array_equal(kept.i, full.i)
    np.testing.assert_allclose(kept.u, full.u, atol=1e-6, rtol=0)
    np.testing.assert_allclose(kept.v, full.v, atol=1e-6, rtol=0)
    picked = sum(st in ("ok", "no_parts") for st in kept.status)  # a detection was kept (low_crop_iou: min_crop_iou 0)
    assert rois["kept"] == picked and rois["all"] > picked


def test_pkl_weights_need_trust_and_load_the_same_model(dp_weights, tmp_path):
    state = torch.load(dp_weights, weights_only=True)
    pkl = tmp_path / "random_densepose.pkl"  # detectron2 model-zoo layout
    with open(pkl, "wb") as f:
        pickle.dump({"model": {k: v.numpy() for k, v in state.items()}, "__author__": "reid-priors test"}, f)
    with pytest.raises(PermissionError, match="--trust-weights"):
        DensePoseEstimator(DP_CONFIG, str(pkl))
    from_pkl = DensePoseEstimator(DP_CONFIG, str(pkl), trust_weights=True, min_size=SMALL)
    from_pth = DensePoseEstimator(DP_CONFIG, dp_weights, min_size=SMALL)
    for name, value in from_pth.model.state_dict().items():
        assert torch.equal(from_pkl.model.state_dict()[name], value), name


def test_apply_net_dump_equals_live_backend(dp_weights, tmp_path):
    """detectron2's own apply_net.py dump, read by densepose-dump, against the live backend.

    Same statuses and part labels; U/V agree to 1e-4, not bit for bit: apply_net runs one crop
    per forward pass, the backend a batch of 3, and batched convolutions sum in another order
    (seen: 3 of 24576 U values off by ~1e-5, below the store's uint16 step of 1/65536).
    """
    files = crop_files(3)
    folder = tmp_path / "crops"
    folder.mkdir()
    for f in files:
        shutil.copy(f, folder / f.name)
    dump = tmp_path / "results.pkl"
    cmd = [sys.executable, str(DP_DIR / "apply_net.py"), "dump", DP_CONFIG, dp_weights, str(folder), "--output", str(dump),
           "--opts", "MODEL.DEVICE", "cpu", "MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.5", "TEST.DETECTIONS_PER_IMAGE", "5",
           "INPUT.MIN_SIZE_TEST", str(SMALL)]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=str(DP_DIR), timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    names = sorted(f.name for f in files)
    images = read_rgb([folder / n for n in names])
    rows = rows_for(names)
    from_dump = DensePoseDumpEstimator(str(dump), trust_dump=True).estimate(images, rows)
    live = DensePoseEstimator(DP_CONFIG, dp_weights, min_size=SMALL, batch_size=len(names), **RANDOM)
    res = live.estimate(images, rows)
    assert from_dump.status == res.status and "ok" in res.status
    assert np.array_equal(from_dump.i, res.i)
    np.testing.assert_allclose(from_dump.u, res.u, atol=1e-4, rtol=0)
    np.testing.assert_allclose(from_dump.v, res.v, atol=1e-4, rtol=0)


@pytest.fixture(scope="module")
def mask_rcnn(tmp_path_factory):
    from detectron2 import model_zoo

    config = model_zoo.get_config_file("COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_3x.yaml")
    weights = save_random_init_weights(config, tmp_path_factory.mktemp("mrcnn") / "random_mask_rcnn.pth")
    state = torch.load(weights, weights_only=True)
    state["roi_heads.box_predictor.cls_score.bias"][0] += 6.0  # random 81-way scores: make "person" the top class
    torch.save(state, weights)
    return config, weights


def test_maskrcnn_real_model_on_real_crops(mask_rcnn):
    config, weights = mask_rcnn
    seg = MaskRCNNSegmentation(config, weights, score_threshold=0.0)
    images = read_rgb(crop_files(2))
    res = seg.segment(images, rows_for(["a", "b"]))
    assert res.mask.shape == images.shape[:3] and res.mask.dtype == bool
    assert set(res.status) <= {"ok", "no_person", "low_crop_iou"} and "ok" in res.status
    assert seg.params["weights_sha256"] == seg.weights_sha256 == file_sha256(weights)
    assert seg.params["config_sha256"] == file_sha256(config) and seg.params["detectron2_commit"]


def test_maskrcnn_real_instances(mask_rcnn):
    """Real Instances from a predictor: person class filter, best crop IoU, no person."""
    H, W = 32, 16
    inst = Instances((H, W))
    inst.pred_boxes = Boxes(torch.tensor([[0.0, 0.0, 16.0, 32.0], [1.0, 2.0, 15.0, 30.0], [0.0, 0.0, 8.0, 8.0]]))
    inst.scores = torch.tensor([0.9, 0.8, 0.95])
    inst.pred_classes = torch.tensor([2, 0, 0])  # a car covering the crop, two persons
    masks = torch.zeros(3, H, W, dtype=torch.bool)
    masks[1, 2:30, 1:15] = True
    masks[2, :8, :8] = True
    inst.pred_masks = masks
    empty = Instances((H, W), pred_boxes=Boxes(torch.zeros(0, 4)), scores=torch.zeros(0),
                      pred_classes=torch.zeros(0, dtype=torch.int64), pred_masks=torch.zeros(0, H, W, dtype=torch.bool))
    outs = iter([{"instances": inst}, {"instances": empty}])
    seg = MaskRCNNSegmentation(predictor=lambda bgr: next(outs), score_threshold=0.5)
    res = seg.segment(np.zeros((2, H, W, 3), np.uint8), rows_for(["a", "b"], (H, W)))
    assert res.status == ["ok", "no_person"]
    assert np.array_equal(res.mask[0], masks[1].numpy()) and not res.mask[1].any()

"""DensePose backends: apply_net dump reading (always) and the detectron2 model (where it imports)."""
from __future__ import annotations

import sys
import types
from dataclasses import dataclass
from typing import Optional

import numpy as np
import pandas as pd
import pytest
import torch

from priors.backends.densepose import file_sha256, model_input_size
from priors.backends.densepose_dump import (
    AMBIGUOUS_IN_DUMP,
    NOT_IN_DUMP,
    DensePoseDumpEstimator,
    DumpRecord,
    load_densepose_dump,
)
from priors.estimators import dense_estimator, provenance_of


@dataclass
class FakeChartResultWithConfidences:
    """Stands in for densepose's DensePoseChartResultWithConfidences: same attribute names."""

    labels: torch.Tensor
    uv: torch.Tensor
    sigma_1: Optional[torch.Tensor] = None
    fine_segm_confidence: Optional[torch.Tensor] = None


def result(labels, u=0.5, v=0.25):
    labels = torch.as_tensor(np.asarray(labels), dtype=torch.long)
    uv = torch.stack([torch.full(labels.shape, float(u)), torch.full(labels.shape, float(v))])
    return FakeChartResultWithConfidences(labels=labels, uv=uv, sigma_1=torch.zeros(labels.shape))


def dump_entry(file_name, boxes=(), charts=(), scores=None):
    """One apply_net.py dump dict: file_name, scores, pred_boxes_XYXY, pred_densepose."""
    boxes_t = torch.tensor(np.asarray(boxes, np.float32).reshape(-1, 4))
    scores_t = torch.tensor(scores if scores is not None else [0.9] * len(boxes_t), dtype=torch.float32)
    return {"file_name": file_name, "scores": scores_t, "pred_boxes_XYXY": boxes_t, "pred_densepose": list(charts)}


def rows_frame(relpaths, orig=(8, 4)):
    n = len(relpaths)
    return pd.DataFrame(
        {"image_id": np.arange(n), "relpath": relpaths, "split": ["train"] * n,
         "orig_height": [orig[0]] * n, "orig_width": [orig[1]] * n}
    )  # fmt: skip


@pytest.fixture
def dump_path(tmp_path):
    # original crops 8x4 (H x W): the person fills the crop, a bystander sits top-right
    person = np.zeros((8, 4), int)
    person[1:7, 1:3] = 2
    person[7, :] = 5
    entries = [
        dump_entry(
            "/data/market/bounding_box_train/0001_c1s1_000001_00.jpg",
            boxes=[[2, 0, 4, 3], [0, 0, 4, 8]],
            charts=[result(np.full((3, 2), 14)), result(person, u=0.75, v=1.0)],
            scores=[0.99, 0.7],
        ),
        dump_entry("/data/market/bounding_box_train/0002_c1s1_000001_00.jpg"),  # no detection
        {"file_name": "/data/market/bounding_box_train/0003_c1s1_000001_00.jpg"},  # no boxes key at all
        dump_entry("/data/market/query/0004_c1s1_000001_00.jpg", [[0, 0, 4, 8]], [result(np.full((8, 4), 1))]),
        dump_entry("/data/market/bounding_box_test/0004_c1s1_000001_00.jpg", [[0, 0, 4, 8]], [result(np.full((8, 4), 3))]),
        dump_entry("C:\\data\\market\\query\\0005_c2s1_000001_00.jpg", [[0, 0, 4, 8]], [result(np.full((8, 4), 9))]),
    ]  # fmt: skip
    path = tmp_path / "results.pkl"
    torch.save(entries, path)
    return path


def test_dump_refuses_without_trust(dump_path):
    with pytest.raises(PermissionError, match="unpickl") as err:
        DensePoseDumpEstimator(str(dump_path))
    assert "arbitrary code" in str(err.value) and "trust_dump=True" in str(err.value)
    with pytest.raises(PermissionError):
        load_densepose_dump(dump_path)


def test_dump_estimates_in_store_frame(dump_path):
    est = DensePoseDumpEstimator(str(dump_path), trust_dump=True)
    rows = rows_frame(
        [
            "bounding_box_train/0001_c1s1_000001_00.jpg",
            "bounding_box_train/0002_c1s1_000001_00.jpg",
            "bounding_box_train/0003_c1s1_000001_00.jpg",
            "bounding_box_train/0099_c1s1_000001_00.jpg",
            "query/0004_c1s1_000001_00.jpg",
            "bounding_box_test/0004_c1s1_000001_00.jpg",
            "0004_c1s1_000001_00.jpg",
            "query/0005_c2s1_000001_00.jpg",
        ]
    )
    images = np.zeros((len(rows), 16, 8, 3), np.uint8)  # store images: 2x the original 8x4 crops
    res = est.estimate(images, rows)
    assert res.status == ["ok", "no_person", "no_person", NOT_IN_DUMP, "ok", "ok", AMBIGUOUS_IN_DUMP, "ok"]
    assert res.i.shape == (8, 16, 8) and res.i.dtype == np.uint8
    # row 0: the crop-covering instance (not the higher-scored bystander), upscaled 2x nearest
    expected = np.zeros((16, 8), np.uint8)
    expected[2:14, 2:6] = 2
    expected[14:16, :] = 5
    assert np.array_equal(res.i[0], expected)
    assert np.all(res.u[0][expected > 0] == 0.75) and np.all(res.v[0][expected > 0] == 1.0)
    assert np.all(res.u[0][expected == 0] == 0)
    assert not res.i[1:4].any()
    assert np.all(res.i[4] == 1) and np.all(res.i[5] == 3) and not res.i[6].any()
    assert np.all(res.i[7] == 9)  # Windows path in the dump matched by basename


def test_dump_without_original_size_columns_uses_store_frame(dump_path):
    est = DensePoseDumpEstimator(str(dump_path), trust_dump=True)
    rows = pd.DataFrame({"image_id": [0], "relpath": ["query/0005_c2s1_000001_00.jpg"]})
    res = est.estimate(np.zeros((1, 8, 4, 3), np.uint8), rows)
    assert res.status == ["ok"] and np.all(res.i[0] == 9)
    with pytest.raises(ValueError):
        est.estimate(np.zeros((2, 8, 4, 3), np.uint8), rows)


def test_dump_provenance_and_registry(dump_path):
    est = dense_estimator("densepose-dump", dump=str(dump_path), trust_dump=True, min_crop_iou=0.3)
    prov = provenance_of(est)
    assert prov["name"] == "densepose-dump" and prov["weights_sha256"] is None
    assert prov["params"]["dump_sha256"] == file_sha256(dump_path) and len(prov["params"]["dump_sha256"]) == 64
    assert prov["params"]["entries"] == 6 and prov["params"]["min_crop_iou"] == 0.3


def test_dump_min_crop_iou(dump_path):
    est = DensePoseDumpEstimator(str(dump_path), trust_dump=True, min_crop_iou=0.95)
    rows = rows_frame(["bounding_box_train/0001_c1s1_000001_00.jpg"])
    assert est.estimate(np.zeros((1, 16, 8, 3), np.uint8), rows).status == ["ok"]  # IoU 1.0
    tight = DensePoseDumpEstimator(str(dump_path), trust_dump=True, min_crop_iou=1.01)
    assert tight.estimate(np.zeros((1, 16, 8, 3), np.uint8), rows).status == ["low_crop_iou"]


def test_dump_readable_without_densepose_installed(tmp_path, monkeypatch):
    """Pickled densepose classes that do not import here load as DumpRecord stand-ins."""
    mod = types.ModuleType("densepose.structures.chart_result")

    @dataclass
    class DensePoseChartResultWithConfidences:
        labels: torch.Tensor
        uv: torch.Tensor

    DensePoseChartResultWithConfidences.__module__ = mod.__name__
    DensePoseChartResultWithConfidences.__qualname__ = "DensePoseChartResultWithConfidences"
    mod.DensePoseChartResultWithConfidences = DensePoseChartResultWithConfidences
    try:
        import densepose  # noqa: F401
    except ImportError:
        pass
    else:  # pragma: no cover - only where the real densepose is installed
        pytest.skip("densepose is importable here; the stand-in path is not exercised")
    fake_packages = ["densepose", "densepose.structures", mod.__name__]
    for name in fake_packages:  # pickle imports the class's module (and its parents) to check it
        monkeypatch.setitem(sys.modules, name, mod if name == mod.__name__ else types.ModuleType(name))
    labels = torch.full((8, 4), 6, dtype=torch.long)
    chart = DensePoseChartResultWithConfidences(labels, torch.full((2, 8, 4), 0.5))
    path = tmp_path / "dp.pkl"
    torch.save([dump_entry("x/0007_c1s1_000001_00.jpg", [[0, 0, 4, 8]], [chart])], path)
    for name in fake_packages:
        monkeypatch.delitem(sys.modules, name)

    entries = load_densepose_dump(path, trust_dump=True)
    rec = entries[0]["pred_densepose"][0]
    assert isinstance(rec, DumpRecord) and type(rec).__name__ == "DensePoseChartResultWithConfidences"
    assert torch.equal(rec.labels, labels)
    est = DensePoseDumpEstimator(str(path), trust_dump=True)
    res = est.estimate(np.zeros((1, 8, 4, 3), np.uint8), rows_frame(["0007_c1s1_000001_00.jpg"]))
    assert res.status == ["ok"] and np.all(res.i == 6) and np.all(res.u == 0.5)


def test_dump_rejects_other_content(tmp_path):
    not_list = tmp_path / "a.pkl"
    torch.save({"file_name": "x.jpg"}, not_list)
    with pytest.raises(ValueError, match="apply_net"):
        load_densepose_dump(not_list, trust_dump=True)
    cse = tmp_path / "b.pkl"
    torch.save([{"file_name": "x.jpg", "pred_boxes_XYXY": torch.zeros(1, 4), "pred_densepose": torch.zeros(1, 16, 8, 8)}], cse)
    with pytest.raises(ValueError, match="chart"):
        load_densepose_dump(cse, trust_dump=True)


def test_dump_unknown_foreign_class_is_not_silently_replaced(tmp_path, monkeypatch):
    mod = types.ModuleType("somebody_elses_module")

    class Thing:
        pass

    Thing.__module__ = mod.__name__
    Thing.__qualname__ = "Thing"
    mod.Thing = Thing
    monkeypatch.setitem(sys.modules, mod.__name__, mod)
    path = tmp_path / "c.pkl"
    torch.save([{"file_name": "x.jpg", "extra": Thing()}], path)
    monkeypatch.delitem(sys.modules, mod.__name__)
    with pytest.raises(ModuleNotFoundError):
        load_densepose_dump(path, trust_dump=True)


def test_model_input_size_matches_resize_shortest_edge():
    assert model_input_size(128, 64, 800, 1333) == (1333, 667)  # long side capped
    assert model_input_size(256, 128, 800, 1333) == (1333, 667)
    assert model_input_size(100, 100, 800, 1333) == (800, 800)
    assert model_input_size(480, 640, 800, 1333) == (800, 1067)


def test_densepose_estimator_names_what_to_install(tmp_path):
    config, weights = tmp_path / "c.yaml", tmp_path / "w.pth"
    config.write_text("MODEL: {}\n")
    weights.write_bytes(b"weights")
    try:
        import detectron2  # noqa: F401
    except ImportError:
        pass
    else:  # pragma: no cover
        pytest.skip("detectron2 is installed")
    with pytest.raises(ImportError, match="detectron2.*scripts/densepose_env.sh"):
        dense_estimator("densepose", config=str(config), weights=str(weights))


# the real model (detectron2 + DensePose installed): tests/test_densepose_real.py


# --- the detectron2 glue, against stand-in detectron2 / densepose modules -----------------------


class _Cfg(types.SimpleNamespace):
    def merge_from_file(self, path):
        self.merged = path

    def freeze(self):
        self.frozen = True

    def dump(self):
        return "merged config"


class _Checkpointer:  # stands in for detectron2's DetectionCheckpointer (the backend subclasses it)
    loaded: list = []

    def __init__(self, model):
        self.model = model

    def load(self, path):
        _Checkpointer.loaded.append(path)


class _Boxes:
    def __init__(self, tensor):
        self.tensor = tensor

    def __getitem__(self, item):
        return _Boxes(self.tensor[item])


class _ChartOutput:  # stands in for DensePoseChartPredictorOutput: one label value per instance
    def __init__(self, values):
        self.values = values

    def __getitem__(self, k):
        return _ChartOutput(self.values[k : k + 1])


class _Instances:
    def __init__(self, boxes, scores, values):
        self._fields = {"pred_boxes": _Boxes(torch.tensor(boxes, dtype=torch.float32)),
                        "scores": torch.tensor(scores), "pred_densepose": _ChartOutput(values)}  # fmt: skip

    def __len__(self):
        return len(self._fields["scores"])

    def __getattr__(self, name):
        return self.__dict__["_fields"][name]

    def has(self, name):
        return name in self._fields

    def get(self, name):
        return self._fields[name]

    def to(self, device):
        return self


class _Model:
    def __init__(self):
        self.calls = []

    def eval(self):
        return self

    def __call__(self, inputs):
        self.calls.append(inputs)
        out = []
        for x in inputs:
            H, W = x["height"], x["width"]  # boxes come back in this (store) frame
            out.append({"instances": _Instances([[0, 0, W / 2, H / 3], [0.4, 0.6, W - 0.2, H - 0.1]], [0.99, 0.8], [7, 4])})
        return out


def _convert(predictor_output, boxes):
    x0, y0, x1, y1 = boxes.tensor[0].tolist()
    h, w = max(int(y1 - y0), 1), max(int(x1 - x0), 1)  # DensePose's box-frame size
    return FakeChartResultWithConfidences(labels=torch.full((h, w), predictor_output.values[0]),
                                          uv=torch.full((2, h, w), 0.5))  # fmt: skip


@pytest.fixture
def fake_detectron2(monkeypatch):
    model = _Model()
    cfg = _Cfg(MODEL=types.SimpleNamespace(WEIGHTS="", DEVICE="", ROI_HEADS=types.SimpleNamespace(SCORE_THRESH_TEST=0.5),
                                           RPN=types.SimpleNamespace(PRE_NMS_TOPK_TEST=1000, POST_NMS_TOPK_TEST=1000),
                                           PIXEL_MEAN=[103.53, 116.28, 123.675]),
               TEST=types.SimpleNamespace(DETECTIONS_PER_IMAGE=100),
               INPUT=types.SimpleNamespace(MIN_SIZE_TEST=800, MAX_SIZE_TEST=1333, FORMAT="BGR"))  # fmt: skip
    mods = {
        "detectron2": {"__version__": "0.6-fake"},
        "detectron2.config": {"get_cfg": lambda: cfg},
        "detectron2.modeling": {"build_model": lambda c: model},
        "detectron2.checkpoint": {"DetectionCheckpointer": _Checkpointer},
        "detectron2.structures": {"Boxes": _Boxes},
        "densepose": {"add_densepose_config": lambda c: None},
        "densepose.converters": {"ToChartResultConverter": types.SimpleNamespace(convert=_convert)},
        "densepose.structures": {"DensePoseChartPredictorOutput": _ChartOutput},
    }
    for name, attrs in mods.items():
        m = types.ModuleType(name)
        m.__dict__.update(attrs)
        monkeypatch.setitem(sys.modules, name, m)
    return model, cfg


def test_densepose_estimator_glue_with_stand_in_detectron2(fake_detectron2, tmp_path):
    model, cfg = fake_detectron2
    config, weights = tmp_path / "dp.yaml", tmp_path / "model_final.pkl"
    config.write_text("MODEL: {}\n")
    weights.write_bytes(b"weights")
    with pytest.raises(PermissionError, match="--trust-weights"):
        dense_estimator("densepose", config=str(config), weights=str(weights))
    assert _Checkpointer.loaded[-1:] != [str(weights)]  # refused before anything was read
    est = dense_estimator("densepose", config=str(config), weights=str(weights), batch_size=2, score_threshold=0.7,
                          trust_weights=True, densepose_head="all")  # the stand-in is model(inputs); "kept": test_densepose_real
    assert _Checkpointer.loaded[-1] == str(weights)
    assert est.weights_sha256 == file_sha256(weights) and est.version == "detectron2-0.6-fake"
    assert cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST == 0.7 and cfg.frozen and cfg.MODEL.WEIGHTS == str(weights)
    images = np.zeros((3, 256, 128, 3), np.uint8)
    images[..., 0] = 255  # pure red RGB
    res = est.estimate(images, rows_frame(["a.jpg", "b.jpg", "c.jpg"], orig=(128, 64)))
    assert [len(c) for c in model.calls] == [2, 1]  # batched
    x = model.calls[0][0]
    assert x["image"].shape == (3, 1333, 667) and x["image"].dtype == torch.float32
    assert (x["height"], x["width"]) == (256, 128)
    assert x["image"][2].min() == 255 and x["image"][0].max() == 0  # BGR for the model
    assert res.status == ["ok"] * 3
    # the crop-covering detection (label 4, box (0.4, 0.6, 127.8, 255.9)) wins over the higher-scored one
    expected = np.zeros((256, 128), np.uint8)
    expected[0:255, 0:127] = 4  # anchor (0, 0), chart int(255.3) x int(127.4)
    assert np.array_equal(res.i[0], expected) and np.all(res.u[0][expected > 0] == 0.5)


def test_densepose_estimator_missing_files(fake_detectron2, tmp_path):
    with pytest.raises(FileNotFoundError, match="weights"):
        dense_estimator("densepose", config=__file__, weights=str(tmp_path / "nope.pkl"))


def test_densepose_head_mode_is_checked(fake_detectron2, tmp_path):
    config, weights = tmp_path / "dp.yaml", tmp_path / "w.pth"
    config.write_text("MODEL: {}\n")
    weights.write_bytes(b"weights")
    with pytest.raises(ValueError, match="densepose_head must be one of"):
        dense_estimator("densepose", config=str(config), weights=str(weights), densepose_head="some")


# --- the backend's speed options on the command lines (no detectron2 needed) ---------------------


def _cli(argv, capsys):
    from pipelines.__main__ import main
    from storage.cli import run_cli

    try:
        code = run_cli(main, argv)
    except SystemExit as exc:  # argparse: --help, its own errors
        code = exc.code
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.mark.parametrize("command, flags", [
    ("build-dsap", ["--test-size SHORT_SIDE", "--canvas RxC", "--detections-per-crop N", "--densepose-head {kept,all}"]),
    ("build-mpn-priors", ["--test-size SHORT_SIDE", "--detections-per-crop N"]),
])  # fmt: skip
def test_speed_flags_in_help_with_defaults(command, flags, capsys):
    code, out, _ = _cli([command, "--help"], capsys)
    text = " ".join(out.split())
    assert code == 0
    for flag in flags:
        assert flag in text
    assert "Default: the config's, 800" in text and "Default: the config's, 100" in text
    if command == "build-dsap":
        assert "(all) (default: kept)" in text and "Default: none, a batch of separate images" in text


@pytest.mark.parametrize("argv, message", [
    (["--canvas", "2by4"], "argument --canvas: canvas must look like ROWSxCOLS (e.g. 2x4), got '2by4'"),
    (["--canvas", "0x4"], "argument --canvas: canvas must look like ROWSxCOLS with positive sides, got '0x4'"),
    (["--canvas", "9x2"], "argument --canvas: at most 8x8 crops per canvas, got 9x2"),
    (["--test-size", "8"], "argument --test-size: must be in 16..4096, got 8"),
    (["--detections-per-crop", "0"], "argument --detections-per-crop: must be >= 1, got 0"),
    (["--densepose-head", "some"], "argument --densepose-head: invalid choice: 'some'"),
])  # fmt: skip
def test_speed_flag_mistakes_are_one_line(argv, message, synthetic_store, capsys):
    code, _, err = _cli(["build-dsap", "--store", str(synthetic_store), "--estimator", "densepose", *argv], capsys)
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and message in lines[0] and lines[0].startswith("python -m pipelines build-dsap: error:")


def test_speed_flags_reach_the_backend_and_its_provenance(fake_detectron2, synthetic_store, tmp_path, capsys):
    """build-dsap with the stand-in detectron2: the flags end in the estimator and in estimates/densepose's provenance."""
    import json
    import shutil

    from storage import open_store

    model, cfg = fake_detectron2
    store = tmp_path / "store"
    shutil.copytree(synthetic_store, store)
    config, weights = tmp_path / "dp.yaml", tmp_path / "w.pth"
    config.write_text("MODEL: {}\n")
    weights.write_bytes(b"weights")
    code, out, err = _cli(["build-dsap", "--store", str(store), "--estimator", "densepose", "--config", str(config),
                           "--weights", str(weights), "--test-size", "200", "--canvas", "1x2", "--detections-per-crop", "3",
                           "--densepose-head", "all", "--workers", "1", "--overwrite", "-q"], capsys)  # fmt: skip
    assert code == 0, err
    assert cfg.TEST.DETECTIONS_PER_IMAGE == 3 * 2 and cfg.MODEL.RPN.POST_NMS_TOPK_TEST == 1000 * 2  # per crop x 2 tiles
    # 1x2 canvas of two 400x200 tiles (pitch 256): one model call of one 400x456 canvas per two crops
    assert model.calls and all(len(c) == 1 and tuple(c[0]["image"].shape) == (3, 400, 456) for c in model.calls)
    prov = open_store(str(store)).groups["estimates/densepose"]
    params = json.dumps(prov, default=str)
    for key, value in [("min_size", 200), ("canvas", "1x2"), ("detections_per_crop", 3), ("densepose_head", "all")]:
        assert f'"{key}": {json.dumps(value)}' in params


def test_maskrcnn_flags_reach_the_backend(synthetic_store):
    from pipelines.__main__ import build_parser
    from pipelines.build_mpn import flow_params, source_options

    args = build_parser("build-mpn-priors").parse_args(
        ["build-mpn-priors", "--store", str(synthetic_store), "--parsing", "oracle", "--segmentation", "maskrcnn", "--test-size", "256",
         "--detections-per-crop", "4"])  # fmt: skip
    params = flow_params(args)
    assert (params["test_size"], params["detections_per_crop"]) == (256, 4)
    opts = source_options("segmentation", "maskrcnn", params | {"maskrcnn_config": "c.yaml", "maskrcnn_weights": "w.pth"}, None)
    assert (opts["min_size"], opts["detections_per_crop"]) == (256, 4)
    from priors.backends.maskrcnn import MaskRCNNSegmentation

    seg = MaskRCNNSegmentation(predictor=lambda bgr: None, min_size=256, detections_per_crop=4)
    assert (seg.params["min_size"], seg.params["detections_per_crop"]) == (256, 4)

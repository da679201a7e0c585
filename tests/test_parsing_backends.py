"""Parsing / segmentation sources for the MPN prior (Sec. 3.2): DensePose IUV, ONNX parsers, Mask R-CNN."""
import hashlib
import json
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch

from priors.backends.iuv_parsing import IUVParsing, IUVSegmentation, iuv_lookup_from_group, iuv_to_coarse_parsing
from priors.backends.maskrcnn import MaskRCNNSegmentation
from priors.backends.onnx_parsing import ATR_CLASSES, CIHP_CLASSES, LIP_CLASSES, label_lut, load_label_map
from priors.estimators import CoarseParsing as P
from priors.estimators import parsing_source, segmentation_source

B_, H_, O_, L_, R_ = int(P.BACKGROUND), int(P.HEAD), int(P.OTHER), int(P.LEFT_LEG), int(P.RIGHT_LEG)


def rows_for(n):
    return pd.DataFrame({"image_id": np.arange(n, dtype=np.int64), "relpath": [f"{i}.jpg" for i in range(n)]})


# ---------------------------------------------------------------- DensePose IUV
def test_iuv_to_coarse_parsing_every_part():
    want = [B_] + [O_] * 6 + [R_, L_] * 4 + [O_] * 8 + [H_, H_]
    assert iuv_to_coarse_parsing(np.arange(25)).tolist() == want
    assert iuv_to_coarse_parsing(np.arange(25, dtype=np.int64).reshape(5, 5)).dtype == np.uint8
    with pytest.raises(ValueError):
        iuv_to_coarse_parsing(np.array([25], np.int64))


class FakeGroup:
    def __init__(self, i):
        self.i = i

    def read(self, name, ids):
        assert name == "i"
        return self.i[ids]


def test_iuv_backends_through_registry_and_lookup():
    i = np.zeros((3, 4, 2), np.uint8)
    i[0] = [[23, 24], [1, 2], [7, 8], [13, 14]]
    i[2, 1, 1] = 5
    lookup = iuv_lookup_from_group(FakeGroup(i))
    parser = parsing_source("densepose", store_group="estimates/densepose", iuv_lookup=lookup)
    seg = IUVSegmentation(iuv_lookup=lookup)
    images = np.zeros((2, 4, 2, 3), np.uint8)
    rows = rows_for(3).iloc[[2, 0]]
    res = parser.parse(images, rows)
    np.testing.assert_array_equal(res.labels[1], [[H_, H_], [O_, O_], [R_, L_], [R_, L_]])
    assert res.labels[0].tolist() == [[B_, B_], [B_, O_], [B_, B_], [B_, B_]]
    assert res.status == ["ok", "ok"] and parser.params == {"store_group": "estimates/densepose"}
    m = seg.segment(images, rows_for(3).iloc[[1, 0]])
    assert m.status == ["no_person", "ok"] and m.mask[1].all() and not m.mask[0].any()
    with pytest.raises(ValueError):
        parser.parse(np.zeros((2, 5, 2, 3), np.uint8), rows)
    with pytest.raises(RuntimeError, match="iuv_lookup"):
        IUVParsing().parse(images, rows)


# ---------------------------------------------------------------- label maps
def test_presets_follow_dataset_class_orders():
    assert len(LIP_CLASSES) == 20 and len(CIHP_CLASSES) == 20 and len(ATR_CLASSES) == 18
    assert CIHP_CLASSES[10] == "Torso-skin" and LIP_CLASSES[10] == "Jumpsuits"
    lip = label_lut(load_label_map("lip"))
    want = [B_] + [O_] * 19
    for c in (1, 2, 4, 13):
        want[c] = H_
    want[16] = want[18] = L_
    want[17] = want[19] = R_
    assert lip.tolist() == want
    assert label_lut(load_label_map("CIHP")).tolist() == want
    atr = label_lut(load_label_map("atr")).tolist()
    assert [atr[c] for c in (1, 2, 3, 11)] == [H_] * 4 and atr[12] == atr[9] == L_ and atr[13] == atr[10] == R_
    assert atr[0] == B_ and atr[16] == O_ and len(atr) == 18  # a bag is person (MPN Fig. 4(a))


def test_custom_label_map_explicit_foreground_and_files(tmp_path):
    m = {"background": [0, 7], "head": [1], "left_leg": [2], "right_leg": [3], "foreground": [4, 5], "num_classes": 8}
    assert label_lut(m, m["num_classes"]).tolist() == [B_, H_, L_, R_, O_, O_, B_, B_]
    assert label_lut({"head": [1]})[[0, 1, 2, 255]].tolist() == [B_, H_, O_, O_]  # 256 long, rest is person
    (tmp_path / "m.json").write_text(json.dumps(m))
    (tmp_path / "m.yaml").write_text("head: [1]\nleft_leg: [2]\nright_leg: [3]\n")
    assert load_label_map(tmp_path / "m.json") == m
    assert load_label_map(str(tmp_path / "m.yaml"))["right_leg"] == [3]
    with pytest.raises(ValueError, match="both"):
        label_lut({"head": [1], "left_leg": [1]})
    with pytest.raises(ValueError, match="both"):
        label_lut({"head": [0]})
    with pytest.raises(ValueError, match="unknown class"):
        label_lut({"classes": ["bg", "face"], "head": ["Face"]})
    with pytest.raises(ValueError, match="preset"):
        load_label_map("pascal")


# ---------------------------------------------------------------- ONNX parsing
# Colour prototypes (RGB in {0,1}) -> LIP class. A 1x1 conv scores class c by
# 2 p_c.x - |p_c|^2 (= |x|^2 - |x - p_c|^2), so the argmax is the nearest prototype.
PROTOS = {(0, 0, 0): 0, (1, 0, 0): 13, (0, 1, 0): 16, (0, 0, 1): 17, (1, 1, 1): 5, (1, 1, 0): 2, (0, 1, 1): 19}
COARSE = {0: B_, 13: H_, 16: L_, 17: R_, 5: O_, 2: H_, 19: R_}


def build_onnx(path, static_hw=None, argmax=False, n_classes=20):
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    w = np.zeros((n_classes, 3, 1, 1), np.float32)
    b = np.full(n_classes, -100.0, np.float32)
    for proto, c in PROTOS.items():
        p = np.array(proto, np.float32)
        w[c, :, 0, 0] = 2 * p
        b[c] = -p.sum()
    hw = list(static_hw) if static_hw else ["H", "W"]
    n = 1 if static_hw else "N"
    x = helper.make_tensor_value_info("image", TensorProto.FLOAT, [n, 3, *hw])
    nodes = [helper.make_node("Conv", ["image", "w", "b"], ["logits"], kernel_shape=[1, 1])]
    if argmax:
        nodes.append(helper.make_node("ArgMax", ["logits"], ["labels"], axis=1, keepdims=0))
        y = helper.make_tensor_value_info("labels", TensorProto.INT64, [n, *hw])
    else:
        y = helper.make_tensor_value_info("logits", TensorProto.FLOAT, [n, n_classes, *hw])
    graph = helper.make_graph(nodes, "tiny_parser", [x], [y], [numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return str(path)


def colour_images(block=4):
    """Two images of 4 x 2 colour blocks; returns images (2, 4*block, 2*block, 3) and the LIP class per block."""
    protos = list(PROTOS)
    rng = np.random.default_rng(0)
    classes = np.array([PROTOS[protos[k]] for k in rng.integers(0, len(protos), 16)]).reshape(2, 4, 2)
    classes[0, 0] = [13, 2]  # make sure head, legs and background all occur
    classes[0, 3] = [16, 0]
    inv = {c: p for p, c in PROTOS.items()}
    images = np.zeros((2, 4 * block, 2 * block, 3), np.uint8)
    for b in range(2):
        for r in range(4):
            for c in range(2):
                images[b, r * block : (r + 1) * block, c * block : (c + 1) * block] = 255 * np.array(inv[classes[b, r, c]])
    return images, classes


def expected_coarse(classes, block, channel_swap=False):
    if channel_swap:  # the network sees B,G,R: red <-> blue prototypes
        inv = {c: p for p, c in PROTOS.items()}
        classes = np.vectorize(lambda c: PROTOS[tuple(reversed(inv[c]))])(classes)
    coarse = np.vectorize(COARSE.get)(classes)
    return np.repeat(np.repeat(coarse, block, axis=1), block, axis=2)


NO_NORM = dict(mean=(0, 0, 0), std=(1, 1, 1))


@pytest.mark.parametrize("argmax", [False, True])
def test_onnx_parsing_end_to_end_same_size(tmp_path, argmax):
    pytest.importorskip("onnxruntime")
    path = build_onnx(tmp_path / "p.onnx", argmax=argmax)
    images, classes = colour_images(4)
    parser = parsing_source("onnx", model=path, label_map="lip", input_size=(16, 8), batch_size=1, **NO_NORM)
    res = parser.parse(images, rows_for(2))
    assert res.labels.dtype == np.uint8 and res.status == ["ok", "ok"]
    np.testing.assert_array_equal(res.labels, expected_coarse(classes, 4))
    assert parser.weights_sha256 == hashlib.sha256(open(path, "rb").read()).hexdigest()
    assert parser.params["input_size"] == [16, 8] and parser.params["label_map"] == "lip"


def test_onnx_parsing_static_model_resizes_and_bgr(tmp_path):
    pytest.importorskip("onnxruntime")
    path = build_onnx(tmp_path / "static.onnx", static_hw=(32, 16))
    images, classes = colour_images(8)  # 32 x 16 images, model input read from the file
    parser = parsing_source("onnx", model=path, label_map="lip", **NO_NORM)
    assert parser.input_size == (32, 16) and parser.batch_size == 1
    np.testing.assert_array_equal(parser.parse(images, rows_for(2)).labels, expected_coarse(classes, 8))
    bgr = parsing_source("onnx", model=path, label_map="lip", channel_order="bgr", **NO_NORM)
    np.testing.assert_array_equal(bgr.parse(images, rows_for(2)).labels, expected_coarse(classes, 8, True))
    # a 16 x 8 image is upsampled to the 32 x 16 input and the logits come back down: blocks stay exact
    small, small_classes = colour_images(4)
    np.testing.assert_array_equal(parser.parse(small, rows_for(2)).labels, expected_coarse(small_classes, 4))
    with pytest.raises(ValueError, match="fixed input"):
        parsing_source("onnx", model=path, input_size=(64, 32), **NO_NORM)


def test_onnx_parsing_interiors_survive_a_different_input_size(tmp_path):
    pytest.importorskip("onnxruntime")
    path = build_onnx(tmp_path / "p.onnx")
    images, classes = colour_images(8)
    parser = parsing_source("onnx", model=path, label_map="lip", input_size=(20, 12), batch_size=3, **NO_NORM)
    got = parser.parse(images, rows_for(2)).labels
    want = expected_coarse(classes, 8)
    interior = np.zeros(want.shape[1:], bool)
    for r in range(4):
        for c in range(2):
            interior[r * 8 + 3 : r * 8 + 5, c * 8 + 3 : c * 8 + 5] = True
    np.testing.assert_array_equal(got[:, interior], want[:, interior])


def test_onnx_parsing_rejects_classes_outside_the_label_map(tmp_path):
    pytest.importorskip("onnxruntime")
    path = build_onnx(tmp_path / "p.onnx")
    parser = parsing_source("onnx", model=path, label_map="atr", input_size=(16, 8), **NO_NORM)
    with pytest.raises(ValueError, match="classes"):
        parser.parse(colour_images(4)[0], rows_for(2))  # 20 logits, ATR has 18 classes


# ---------------------------------------------------------------- Mask R-CNN
def fake_predictor(log):
    H, W = 32, 16

    def predict(bgr):
        log.append(bgr[0, 0].tolist())
        k = int(bgr[0, 0, 2])  # the red channel of the RGB image says which scene to return
        masks = torch.zeros(3, H, W, dtype=torch.bool)
        masks[0, :4], masks[1, 2:30, 1:15], masks[2] = True, True, True
        boxes = torch.tensor([[0, 0, 16, 4], [1, 2, 15, 30], [0, 0, 16, 32]], dtype=torch.float32)
        scenes = {
            0: ([0, 0, 2], [0.9, 0.8, 0.95]),  # the full-frame box is a car: pick instance 1
            1: ([0, 0, 0], [0.9, 0.3, 0.2]),  # only the small box passes the threshold
            2: ([2, 2, 2], [0.9, 0.9, 0.9]),  # no person at all
        }
        cls, sc = scenes[k]
        inst = SimpleNamespace(pred_classes=torch.tensor(cls), scores=torch.tensor(sc),
                               pred_boxes=SimpleNamespace(tensor=boxes), pred_masks=masks)
        return {"instances": inst}

    return predict


def test_maskrcnn_picks_person_instance_and_reports_no_person():
    log = []
    seg = segmentation_source("maskrcnn", predictor=fake_predictor(log), score_threshold=0.5)
    images = np.zeros((3, 32, 16, 3), np.uint8)
    images[:, 0, 0] = [[0, 7, 9], [1, 7, 9], [2, 7, 9]]
    res = seg.segment(images, rows_for(3))
    assert res.status == ["ok", "ok", "no_person"]
    assert log == [[9, 7, 0], [9, 7, 1], [9, 7, 2]]  # the predictor gets BGR
    want1 = np.zeros((32, 16), bool)
    want1[2:30, 1:15] = True
    want2 = np.zeros((32, 16), bool)
    want2[:4] = True
    np.testing.assert_array_equal(res.mask, [want1, want2, np.zeros((32, 16), bool)])
    assert seg.weights_sha256 is None and seg.params["score_threshold"] == 0.5
    # the chosen person box (1, 2, 15, 30) has crop IoU 14*28/512 = 0.766; the small one 0.125
    strict = MaskRCNNSegmentation(predictor=fake_predictor([]), min_crop_iou=0.5)
    assert strict.segment(images, rows_for(3)).status == ["ok", "low_crop_iou", "no_person"]


def test_maskrcnn_needs_local_weights(tmp_path):
    with pytest.raises(ValueError, match="local file"):
        MaskRCNNSegmentation("cfg.yaml", str(tmp_path / "missing.pkl"))


def test_maskrcnn_with_detectron2(tmp_path):
    """The real Mask R-CNN with random weights: a person mask is found and pasted at the crop size.

    No trained weights exist here: ``save_random_init_weights`` (zero-init residual branches, so
    boxes stay finite) plus a bias towards COCO's person class in the 81-way classifier, so that
    the random detections are persons and the path to an ``ok`` mask really runs.
    """
    pytest.importorskip("detectron2", reason="needs detectron2: build the venv with scripts/densepose_env.sh")
    from detectron2 import model_zoo

    from priors.backends.detectron2_model import save_random_init_weights

    config = model_zoo.get_config_file("COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_1x.yaml")
    weights = tmp_path / "random.pth"
    save_random_init_weights(config, weights)
    state = torch.load(weights, weights_only=True)
    state["roi_heads.box_predictor.cls_score.bias"][0] += 6.0  # class 0 = COCO person
    torch.save(state, weights)
    seg = MaskRCNNSegmentation(config, str(weights), score_threshold=0.0, min_size=160)
    images = np.random.default_rng(0).integers(0, 255, (2, 64, 32, 3), dtype=np.uint8)
    res = seg.segment(images, rows_for(2))
    assert res.mask.shape == (2, 64, 32) and set(res.status) <= {"ok", "no_person"} and "ok" in res.status
    assert not res.mask[[st != "ok" for st in res.status]].any()  # no person: an empty mask
    assert seg.weights_sha256 == hashlib.sha256(weights.read_bytes()).hexdigest()
    assert seg.params["min_size"] == 160

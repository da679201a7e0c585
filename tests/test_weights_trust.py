"""Weights are code too: .pkl weights need trust_weights / --trust-weights; .pth state dicts do not."""
from __future__ import annotations

import pickle

import pytest
import torch

from pipelines.__main__ import build_parser
from pipelines.build_dsap import estimator_options
from pipelines.build_mpn import source_options
from priors.backends.detectron2_model import (
    check_model_files,
    check_weights_trust,
    detectron2_provenance,
    load_weights_safely,
)
from priors.backends.maskrcnn import MaskRCNNSegmentation
from priors.estimators import dense_estimator, file_sha256

RAN: list[str] = []


def _record(what: str) -> str:
    RAN.append(what)
    return what


class Payload:
    """Unpickling this calls _record: stands in for code hidden in a weights file."""

    def __reduce__(self):
        return (_record, ("payload ran",))


@pytest.fixture
def files(tmp_path):
    config = tmp_path / "model.yaml"
    config.write_text("MODEL:\n  DEVICE: cpu\n")
    state = {"backbone.weight": torch.arange(6.0).reshape(2, 3), "head.bias": torch.tensor([1.0, -1.0])}
    pth = tmp_path / "random.pth"
    torch.save(state, pth)
    ckpt = tmp_path / "model_final.pth"
    torch.save({"model": state, "iteration": 7}, ckpt)
    evil = tmp_path / "evil.pth"
    torch.save({"model": state, "extra": Payload()}, evil)
    pkl = tmp_path / "model_final.pkl"
    with open(pkl, "wb") as f:
        pickle.dump({"model": {k: v.numpy() for k, v in state.items()}, "__author__": "test"}, f)
    RAN.clear()
    return {"config": config, "pth": pth, "ckpt": ckpt, "evil": evil, "pkl": pkl, "state": state}


def test_pkl_refused_without_trust_with_the_dump_wording(files):
    with pytest.raises(PermissionError) as err:
        check_weights_trust(files["pkl"], trust_weights=False)
    msg = str(err.value)
    assert "trust_weights=True" in msg and "--trust-weights" in msg and "arbitrary code" in msg and "unpickl" in msg
    check_weights_trust(files["pkl"], trust_weights=True)
    check_weights_trust(files["pth"], trust_weights=False)
    with pytest.raises(PermissionError):
        check_model_files(str(files["config"]), str(files["pkl"]), trust_weights=False)
    with pytest.raises(FileNotFoundError, match="weights"):
        check_model_files(str(files["config"]), str(files["pkl"]) + ".missing", trust_weights=True)


def test_pth_state_dict_and_checkpoint_load_without_trust(files):
    sd = load_weights_safely(files["pth"])
    assert set(sd) == {"model"} and torch.equal(sd["model"]["backbone.weight"], files["state"]["backbone.weight"])
    ck = load_weights_safely(files["ckpt"])
    assert ck["iteration"] == 7 and torch.equal(ck["model"]["head.bias"], torch.tensor([1.0, -1.0]))
    with pytest.raises(ValueError, match="detectron2's own loader"):
        load_weights_safely(files["pkl"], trust_weights=True)


def test_pth_with_code_refused_without_trust_and_nothing_runs(files):
    with pytest.raises(PermissionError, match="--trust-weights"):
        load_weights_safely(files["evil"])
    assert RAN == []  # refused before the payload could run
    loaded = load_weights_safely(files["evil"], trust_weights=True)
    assert RAN == ["payload ran"] and loaded["extra"] == "payload ran"  # what trusting means


def test_backends_refuse_pkl_before_importing_detectron2(files):
    # these raise the gate's PermissionError, not detectron2's ImportError, where detectron2 is absent
    with pytest.raises(PermissionError, match="--trust-weights"):
        dense_estimator("densepose", config=str(files["config"]), weights=str(files["pkl"]))
    with pytest.raises(PermissionError, match="--trust-weights"):
        MaskRCNNSegmentation(str(files["config"]), str(files["pkl"]))


def test_cli_flag_reaches_both_backends(tmp_path):
    store = tmp_path / "s"
    store.mkdir()
    (store / "zarr.json").write_text("{}")  # the parser checks a store folder, not its contents
    cfg, weights = tmp_path / "c.yaml", tmp_path / "w.pkl"
    cfg.write_text("MODEL: {}\n")
    weights.write_bytes(b"not read by the parser")
    args = build_parser("build-dsap").parse_args(["build-dsap", "--store", str(store), "--estimator", "densepose",
                                                  "--config", str(cfg), "--weights", str(weights),
                                                  "--trust-weights"])  # fmt: skip
    assert args.trust_weights is True
    opts = estimator_options("densepose", {"config": "c.yaml", "weights": "w.pkl", "trust_weights": True}, None)
    assert opts["trust_weights"] is True
    args = build_parser("build-mpn-priors").parse_args(["build-mpn-priors", "--store", str(store), "--parsing",
                                                        "densepose", "--segmentation", "maskrcnn"])  # fmt: skip
    assert args.trust_weights is False
    params = {"maskrcnn_config": "m.yaml", "maskrcnn_weights": "m.pkl", "device": "cpu", "trust_weights": False}
    assert source_options("segmentation", "maskrcnn", params, None)["trust_weights"] is False


def test_provenance_hashes_config_and_weights(files, monkeypatch):
    monkeypatch.setenv("DETECTRON2_COMMIT", "0" * 40)
    prov = detectron2_provenance(str(files["config"]), str(files["pth"]))
    assert prov == {"detectron2_commit": "0" * 40, "config_sha256": file_sha256(files["config"]),
                    "weights_sha256": file_sha256(files["pth"])}  # fmt: skip

"""reid_train.export: ONNX (onnxruntime) and TorchScript give the PyTorch features on real crops, any batch size."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import yaml

from conftest import MINI_MARKET, need_shared_data
from reid_train import export
from reid_train.checkpoint import save_checkpoint
from reid_train.config import config_from_dict, to_dict
from reid_train.methods import get_method

SIZE = (128, 64)


@pytest.fixture(scope="module")
def crops() -> np.ndarray:
    """12 real Market-1501 crops, decoded and resized as ingest does, normalised as evaluation does."""
    from reid_train.extract import folder_batches, list_images

    paths = list_images(need_shared_data(MINI_MARKET))[:12]
    (_, status, keep, batch), = folder_batches(paths, SIZE, SIZE, batch_size=len(paths))
    assert len(keep) == len(paths), status
    return batch["images"].numpy()


def make_run(tmp_path, method: str, crops: np.ndarray, **fields) -> tuple:
    """A run directory (config.yaml + checkpoint.pt) of an untrained ResNet-18 model whose
    BatchNorm statistics come from the crops (so features have realistic magnitudes)."""
    cls = get_method(method)
    cfg = config_from_dict(cls.Config, {"method": method, "backbone": "resnet18", "size": list(SIZE),
                                        "store": "", **fields})
    torch.manual_seed(0)
    model = cls(cfg, 5)
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.momentum = None  # cumulative average
    model.train()
    with torch.no_grad():
        batch = {"images": torch.from_numpy(crops)}
        model.extract(batch)
    run = tmp_path / method
    run.mkdir()
    (run / "config.yaml").write_text(yaml.safe_dump(to_dict(cfg)))
    save_checkpoint(run / "checkpoint.pt", {"num_classes": 5, "model": model.state_dict()})
    return run, model.eval()


@pytest.mark.real_data
@pytest.mark.parametrize("method, fields, dim", [
    ("baseline", {}, 512),
    ("dsa", {}, 512 + 8 * 64),                       # [f_G, f_L] of the MF-Stream (basic blocks: 64 per part)
    ("mpn", {"parts": 4, "part_dim": 32}, 4 * 32),    # h of the main tasks
    ("alignedreid", {"mutual": True}, 512),           # net 1's global feature
])
@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_export_matches_pytorch(tmp_path, crops, method, fields, dim, fmt):
    pytest.importorskip("onnxruntime")
    run, model = make_run(tmp_path, method, crops, **fields)
    rec = export.export_run(run, fmt, check_images=crops)
    assert rec["output"]["shape"] == ["batch", dim] and rec["check"]["max_abs_difference"] <= 1e-4
    side = json.loads((run / "export" / f"model{export.FORMATS[fmt]}.json").read_text())
    assert side["input"]["shape"] == ["batch", 3, *SIZE] and side["provenance"]["producer"]["weights_sha256"]

    # independently: load the file, any batch size, against the method's own extract
    run_file = export.load_exported(rec["path"], fmt)
    with torch.no_grad():
        ref = model.extract({"images": torch.from_numpy(crops)}).numpy()
    for b in (1, 5, 12):
        got = run_file(crops[:b])
        assert got.shape == (b, dim)
        assert np.abs(got - ref[:b]).max() <= 1e-4
    assert np.abs(ref).max() > 0.1  # real magnitudes, not a vanishing network


def test_inference_model_drops_training_modules():
    cfg = config_from_dict(get_method("dsa").Config, {"method": "dsa", "backbone": "resnet18", "size": list(SIZE)})
    dsa = get_method("dsa")(cfg, 5)
    model = export.inference_model(dsa, SIZE)
    assert isinstance(model.method.dsag, torch.nn.Identity)                 # DSAG-Stream gone
    assert sum(p.numel() for p in model.parameters()) == dsa.inference_parameters()

    cfg = config_from_dict(get_method("mpn").Config, {"method": "mpn", "backbone": "resnet18", "size": list(SIZE),
                                                      "parts": 3, "part_dim": 16})
    mpn = get_method("mpn")(cfg, 5)
    n_inference = mpn.inference_parameters()
    model = export.inference_model(mpn, SIZE)
    assert sum(p.numel() for p in model.parameters()) == n_inference        # MTs + backbone, no ATs/classifiers

    cfg = config_from_dict(get_method("dsa").Config, {"method": "dsa", "backbone": "resnet18", "size": list(SIZE),
                                                      "eval_feature": "fused"})
    with pytest.raises(ValueError, match="needs store priors"):
        export.inference_model(get_method("dsa")(cfg, 5), SIZE)


def test_flip_is_baked_in(tmp_path):
    cfg = config_from_dict(get_method("baseline").Config, {"method": "baseline", "backbone": "resnet18"})
    base = get_method("baseline")(cfg, 5).eval()
    x = torch.randn(3, 3, *SIZE)
    model = export.inference_model(base, SIZE, flip=True)
    with torch.no_grad():
        want = (base.extract({"images": x}) + base.extract({"images": x.flip(-1)})) / 2
        assert torch.allclose(model(x), want, atol=1e-6)
    path = export.export(model, tmp_path / "m.ts", "torchscript", SIZE)
    assert np.abs(export.load_exported(path, "torchscript")(x.numpy()) - want.numpy()).max() <= 1e-4


def test_cli(tmp_path, capsys):
    pytest.importorskip("onnxruntime")
    images = np.random.default_rng(0).standard_normal((4, 3, *SIZE)).astype(np.float32)
    run, _ = make_run(tmp_path, "sn", images)  # no store recorded: checked on random images
    assert export.main(["--run", str(run), "--format", "onnx", "--out", str(tmp_path / "deploy"), "-q"]) == 0
    out = capsys.readouterr().out
    assert "model.onnx" in out and "random" in out and (tmp_path / "deploy" / "model.onnx.json").is_file()
    assert export.main(["--run", str(tmp_path / "nothing")]) == 2
    assert export.main(["--run", str(run), "--set", "no_such_field=1"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 2 and all(e.startswith("error: ") for e in err)
    assert "not a run folder" in err[0] and "no_such_field" in err[1]
    with pytest.raises(SystemExit) as exc:  # a malformed --set is refused by the parser, as in every command
        export.main(["--run", str(run), "--set", "eval_feature"])
    err = capsys.readouterr().err.splitlines()
    assert exc.value.code == 2 and len(err) == 1 and "--set: expected KEY=VALUE" in err[0]

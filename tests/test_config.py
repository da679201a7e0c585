"""TrainConfig YAML round trip and overrides; learning-rate schedules; --init loading."""
from __future__ import annotations

import argparse

import pytest
import torch

from reid_train.config import TrainConfig, apply_overrides, config_from_dict, load_config, save_config
from reid_train.fit import build_parser, resolve_config
from reid_train.methods import get_method
from reid_train.methods.base import lr_factor


def test_yaml_round_trip_keeps_types(tmp_path):
    cls = get_method("baseline").Config
    cfg = cls(size=(96, 48), milestones=(5, 9), augment={"flip_p": 0.0}, amp="bf16")
    save_config(cfg, tmp_path / "c.yaml")
    back = load_config(tmp_path / "c.yaml", cls)
    assert back == cfg and isinstance(back.size, tuple) and isinstance(back.milestones, tuple)


def test_unknown_fields_and_bad_values_rejected(tmp_path):
    (tmp_path / "c.yaml").write_text("lr: 0.1\nlearning_rate: 3\n")
    with pytest.raises(ValueError, match="learning_rate"):
        load_config(tmp_path / "c.yaml")
    with pytest.raises(ValueError, match="optimizer"):
        config_from_dict(TrainConfig, {"optimizer": "rmsprop"})


def test_overrides_precedence(tmp_path):
    (tmp_path / "c.yaml").write_text("lr: 0.1\nepochs: 7\nP: 4\n")
    args = build_parser().parse_args(["--method", "baseline", "--config", str(tmp_path / "c.yaml"), "--epochs", "3",
                                      "--size", "64x32", "--pk", "6", "2", "--set", "milestones=[1, 2]",
                                      "--set", "channels_last=true", "--set", "lr=2e-4"])
    cfg = resolve_config(args)
    assert type(cfg).__qualname__ == "Baseline.Config"
    assert (cfg.epochs, cfg.size, cfg.P, cfg.K, cfg.milestones, cfg.channels_last) == (3, (64, 32), 6, 2, (1, 2), True)
    assert cfg.lr == 2e-4                       # --set beats --config
    assert cfg.backbone == "resnet50" and cfg.last_stride == 1 and cfg.label_smoothing == 0.1  # BoT defaults
    same = apply_overrides(cfg, argparse.Namespace(lr=None, size=None))
    assert same == cfg


def test_warmup_and_step_schedule():
    cfg = TrainConfig(warmup_epochs=10, warmup_factor=0.1, schedule="step", milestones=(40, 70), gamma=0.1)
    spe = 5
    assert lr_factor(0, cfg, spe) == pytest.approx(0.1)
    assert lr_factor(25, cfg, spe) == pytest.approx(0.1 + 0.9 * 5 / 10)   # epoch 5 of 10
    assert lr_factor(50, cfg, spe) == pytest.approx(1.0)
    assert lr_factor(199, cfg, spe) == pytest.approx(1.0)
    assert lr_factor(200, cfg, spe) == pytest.approx(0.1)                   # epoch 40
    assert lr_factor(350, cfg, spe) == pytest.approx(0.01)                  # epoch 70


def test_exponential_schedule_hermans():
    # lr_t = lr_0 * 0.001 ** ((t - t0) / (T - t0)) after t0 (In Defense of the Triplet Loss, Sec. 4.4)
    cfg = TrainConfig(schedule="exp", gamma=0.001, exp_decay_start=10, epochs=30, warmup_epochs=0)
    assert lr_factor(10, cfg, 1) == pytest.approx(1.0)
    assert lr_factor(20, cfg, 1) == pytest.approx(0.001 ** 0.5)
    assert lr_factor(30, cfg, 1) == pytest.approx(0.001)
    assert lr_factor(5, cfg, 1) == pytest.approx(1.0)


def test_scheduler_drives_optimizer_lr():
    cls = get_method("baseline")
    cfg = cls.Config(backbone="resnet18", lr=1.0, warmup_epochs=1, warmup_factor=0.5, milestones=(2,), gamma=0.1)
    m = cls(cfg, 5)
    opt = m.build_optimizer(cfg)
    sched = m.build_scheduler(opt, cfg, steps_per_epoch=4)
    seen = []
    for _ in range(9):
        seen.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert seen == pytest.approx([0.5, 0.625, 0.75, 0.875, 1, 1, 1, 1, 0.1])
    assert {g["name"] for g in opt.param_groups} == {"backbone", "head"}


def test_init_copies_matching_tensors_only():
    cls = get_method("baseline")
    cfg = cls.Config(backbone="resnet18")
    src, dst = cls(cfg, 7), cls(cfg, 9)   # other identity count: classifier shapes differ
    missing, skipped = dst.load_init(src.state_dict())
    assert skipped == ["neck.classifier.weight"] and missing == ["neck.classifier.weight"]
    assert torch.equal(dst.backbone.layer3[0].conv1.weight, src.backbone.layer3[0].conv1.weight)
    assert torch.equal(dst.neck.bn.weight, src.neck.bn.weight)

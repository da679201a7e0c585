"""Training configuration: one plain dataclass, saved as YAML in every run.

:class:`TrainConfig` holds the fields every method shares. A method's
``Config`` subclasses it, adds its own fields (loss weights, margins, ...) and
sets its paper's settings as defaults. Precedence when a run starts:
method defaults < ``--config FILE`` (YAML, any subset of fields) < command-line
flags (``--lr``, ``--pk``, ... and ``--set name=value`` for any field).

``reid_train/configs/NAME.yaml`` holds every method's paper settings, one file
per method and paper version, each value commented with the section it comes
from; ``--config NAME`` (e.g. ``--config mpn``) loads one of them. They equal
the dataclass defaults (``tests/test_configs.py``), so they are a readable copy
to start from, not a second source of truth.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

CHOICES = {
    "optimizer": ("adam", "sgd"),
    "schedule": ("step", "exp", "none"),
    "amp": ("none", "bf16", "fp16"),
    "metric": ("euclidean", "cosine"),
    "last_stride": (1, 2),
}


@dataclass
class TrainConfig:
    """Common training settings (defaults: a small, fast CPU-friendly run).

    An epoch is ``epoch_multiplier`` passes over the training split (1: one
    pass). A paper whose epochs run over a training set enlarged N times
    offline (MPN: five translated copies, Sec. 5.1) sets N, so that its epoch
    counts, milestones included, mean as many iterations as in the paper.

    Schedules (per iteration, epochs may be fractional): linear warm-up from
    ``warmup_factor * lr`` to ``lr`` over ``warmup_epochs``; then ``step``
    multiplies by ``gamma`` at each epoch in ``milestones``; ``exp`` keeps
    ``lr`` until ``exp_decay_start`` and then decays as
    ``lr * gamma ** ((e - start) / (epochs - start))`` (Hermans et al. 2017,
    so ``gamma`` is the factor reached at the last epoch, e.g. 0.001).
    """

    method: str = "baseline"
    store: str = ""                  # store path or URL: evaluation runs on it (and training, when stores is empty)
    stores: tuple[str, ...] = ()     # train on the union of these stores (labels offset per store)
    # model
    backbone: str = "resnet50"       # resnet18 | resnet34 | resnet50 | resnet101 (_wN: base width N)
    last_stride: int = 2
    pretrained: str = ""             # local torchvision ImageNet state_dict file ("" = random init)
    # data
    size: tuple[int, int] = (256, 128)  # (H, W)
    P: int = 16                      # identities per batch
    K: int = 4                       # images per identity
    workers: int = 2
    augment: dict = field(default_factory=dict)  # keyword arguments of reid_train.data.augment.AugmentConfig
    # schedule
    epochs: int = 120
    epoch_multiplier: int = 1        # passes over the training split per epoch (a set enlarged N times)
    max_steps: int = 0               # stop after this many iterations (0 = epochs * steps per epoch)
    optimizer: str = "adam"
    lr: float = 3.5e-4
    weight_decay: float = 5e-4
    momentum: float = 0.9            # SGD only
    nesterov: bool = False           # SGD only
    backbone_lr_mult: float = 1.0    # lr multiplier of the backbone parameters
    warmup_epochs: float = 0.0
    warmup_factor: float = 0.1
    schedule: str = "step"
    milestones: tuple[int, ...] = (40, 70)
    gamma: float = 0.1
    exp_decay_start: float = 0.0
    # execution
    amp: str = "none"                # bf16 / fp16 autocast (fp16 with a GradScaler, CUDA only)
    channels_last: bool = False
    compile: bool = False            # torch.compile the method in place
    seed: int = 0
    device: str = "auto"             # auto | cpu | cuda | cuda:N
    threads: int = 0                 # torch intra-op threads on CPU (0 = all cores)
    log_every: int = 10              # iterations between metrics CSV / TensorBoard rows
    checkpoint_every: int = 0        # iterations between checkpoints (0 = at every epoch end only)
    checkpoint_minutes: float = 5.0  # also checkpoint when this much wall time passed since the last (0 = off)
    # evaluation
    eval_every: int = 0              # epochs between evaluations (0 = only at the end)
    eval_batch_size: int = 128
    flip_eval: bool = False          # average the features of the image and its mirror
    metric: str = "euclidean"        # evaluation distance

    def validate(self) -> "TrainConfig":
        for name, allowed in CHOICES.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name}={getattr(self, name)!r}; expected one of {allowed}")
        if len(self.size) != 2 or min(self.size) <= 0:
            raise ValueError(f"size must be (H, W) > 0, got {self.size}")
        for name in ("P", "K", "epochs", "epoch_multiplier"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.P < 2:
            raise ValueError("P must be >= 2: batch-hard mining needs negatives")
        if not self.checkpoint_minutes >= 0:
            raise ValueError(f"checkpoint_minutes must be >= 0, got {self.checkpoint_minutes}")
        if self.schedule == "exp" and not self.exp_decay_start < self.epochs:
            raise ValueError("exp_decay_start must be < epochs")
        self._check_ranges()
        return self

    def _check_ranges(self) -> None:
        """Values no run can use: non-finite numbers, negative counts or rates (a one-line error at start)."""
        import math

        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if isinstance(v, float) and not math.isfinite(v):
                raise ValueError(f"{f.name} must be a finite number, got {v}")
            if f.name.endswith("_weight") and isinstance(v, (int, float)) and v < 0:
                raise ValueError(f"{f.name} must be >= 0, got {v}")
        at_least = {"lr": 0, "weight_decay": 0, "warmup_epochs": 0, "backbone_lr_mult": 0, "max_steps": 0,
                    "workers": 0, "threads": 0, "checkpoint_every": 0, "eval_every": 0, "log_every": 1,
                    "eval_batch_size": 1, "exp_decay_start": 0}
        for name, low in at_least.items():
            if getattr(self, name) < low:
                raise ValueError(f"{name} must be >= {low}, got {getattr(self, name)}")
        if not 0 < self.warmup_factor <= 1:
            raise ValueError(f"warmup_factor must be in (0, 1], got {self.warmup_factor}")
        if self.gamma <= 0:
            raise ValueError(f"gamma must be > 0, got {self.gamma}")
        smoothing = getattr(self, "label_smoothing", 0.0)
        if not 0 <= smoothing < 1:
            raise ValueError(f"label_smoothing must be in [0, 1), got {smoothing}")


def _coerce(value: Any, default: Any, name: str) -> Any:
    """Convert a YAML / command-line value to the type of the field's default."""
    if isinstance(default, bool):
        if isinstance(value, str):
            if value.lower() in ("1", "true", "yes", "on"):
                return True
            if value.lower() in ("0", "false", "no", "off"):
                return False
        if not isinstance(value, bool):
            raise ValueError(f"{name}: expected a boolean, got {value!r}")
        return value
    if isinstance(default, tuple) and name == "stores":  # paths and URLs: never split, never converted
        return (str(value),) if isinstance(value, str) else tuple(str(v) for v in value)
    if isinstance(default, tuple):
        if isinstance(value, str):
            value = [v for v in value.replace("x", ",").split(",") if v.strip()]
        elem = type(default[0]) if default else float
        return tuple(elem(v) for v in value)
    if isinstance(default, dict):
        if not isinstance(value, dict):
            raise ValueError(f"{name}: expected a mapping, got {value!r}")
        return dict(value)
    if isinstance(default, float) and isinstance(value, (int, float, str)):
        return float(value)
    if isinstance(default, int) and isinstance(value, (int, str)) and not isinstance(value, bool):
        return int(value)
    if isinstance(default, str):
        return "" if value is None else str(value)
    return value


def _defaults(cls: type) -> dict[str, Any]:
    out = {}
    for f in dataclasses.fields(cls):
        if f.default is not dataclasses.MISSING:
            out[f.name] = f.default
        elif f.default_factory is not dataclasses.MISSING:
            out[f.name] = f.default_factory()
    return out


def config_from_dict(cls: type, values: dict[str, Any], base: TrainConfig | None = None) -> TrainConfig:
    """``cls`` instance from ``base`` (or ``cls`` defaults) updated by ``values``;
    unknown names are an error (a typo must not be silently ignored)."""
    defaults = _defaults(cls)
    unknown = sorted(set(values) - set(defaults))
    if unknown:
        raise ValueError(f"unknown config fields {unknown} for {cls.__qualname__}; known: {sorted(defaults)}")
    cfg = base if base is not None else cls()
    changes = {k: _coerce(v, defaults[k], k) for k, v in values.items()}
    return dataclasses.replace(cfg, **changes).validate()


def to_dict(cfg: TrainConfig) -> dict[str, Any]:
    """Plain YAML/JSON-safe dict (tuples become lists)."""
    out = {}
    for f in dataclasses.fields(cfg):
        v = getattr(cfg, f.name)
        out[f.name] = list(v) if isinstance(v, tuple) else v
    return out


def save_config(cfg: TrainConfig, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))


CONFIG_DIR = Path(__file__).resolve().parent / "configs"


def packaged_configs() -> dict[str, Path]:
    """Name -> file of the YAML configs shipped in ``reid_train/configs``."""
    return {p.stem: p for p in sorted(CONFIG_DIR.glob("*.yaml"))}


def config_path(name_or_path: str | Path) -> Path:
    """A config file: an existing path, else a packaged config's name (``mpn``)."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    packaged = packaged_configs()
    if str(name_or_path) in packaged:
        return packaged[str(name_or_path)]
    raise ValueError(f"no config file {name_or_path!r}; packaged configs: {sorted(packaged)}")


def read_config(name_or_path: str | Path) -> dict[str, Any]:
    """The mapping in a config file or packaged config (see :func:`config_path`)."""
    path = config_path(name_or_path)
    values = yaml.safe_load(path.read_text()) or {}
    if not isinstance(values, dict):
        raise ValueError(f"{path}: expected a mapping of config fields")
    return values


def load_config(path: str | Path, cls: type = TrainConfig, base: TrainConfig | None = None) -> TrainConfig:
    """Read a YAML file or packaged config (any subset of ``cls``'s fields) on top of ``base``."""
    return config_from_dict(cls, read_config(path), base)


def train_stores(cfg: TrainConfig) -> list[str]:
    """The stores a run trains on: ``cfg.stores``, else ``[cfg.store]``."""
    return list(cfg.stores) if cfg.stores else [cfg.store]


def parse_size(text: str) -> tuple[int, int]:
    """``"256x128"`` -> (256, 128)."""
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise ValueError(f"size must look like HxW (e.g. 256x128), got {text!r}") from None
    return h, w


# command-line flag (argparse dest) -> config field; None values are "not given"
COMMON_FLAGS = ("backbone", "epochs", "max_steps", "lr", "device", "seed", "workers")


def apply_overrides(cfg: TrainConfig, args: Any) -> TrainConfig:
    """Apply the common flags of :mod:`reid_train.fit` (``args`` is an argparse
    namespace; attributes that are missing or None are left alone):
    ``backbone, size ("HxW"), pk ([P, K]), epochs, max_steps, lr, device, seed,
    workers`` and ``set`` (list of ``name=value`` strings for any field, the
    value parsed as YAML)."""
    values: dict[str, Any] = {}
    for name in COMMON_FLAGS:
        v = getattr(args, name, None)
        if v is not None:
            values[name] = v
    size = getattr(args, "size", None)
    if size is not None:
        values["size"] = parse_size(size) if isinstance(size, str) else tuple(size)
    pk = getattr(args, "pk", None)
    if pk is not None:
        values["P"], values["K"] = int(pk[0]), int(pk[1])
    for item in getattr(args, "set", None) or ():
        name, sep, text = item.partition("=")
        if not sep:
            raise ValueError(f"--set expects name=value, got {item!r}")
        values[name.strip()] = yaml.safe_load(text)
    return config_from_dict(type(cfg), values, cfg) if values else cfg.validate()

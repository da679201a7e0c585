"""Method registry: a method is added by adding a file.

Each method module defines a subclass of :class:`Method` decorated with
``@register("name")``. The engine (``reid_train.fit``) only talks to this
interface, so the method files never touch the training loop.

Contract
--------
* ``Config``: a dataclass with the paper's settings as defaults (input size,
  P×K, optimiser, schedule, epochs, loss weights, ...). See
  :class:`reid_train.config.TrainConfig` for the common fields a method's config
  extends.
* ``requires``: store groups the method reads (``("priors/dsap",)``,
  ``("priors/mpn",)``); the dataset fails clearly when one is missing.
* ``forward(batch) -> dict``: training outputs. ``batch`` is a dict:
  ``images`` (B,3,H,W float, normalised), ``labels`` (B,) long (train labels
  0..P-1), ``pids``, ``camids``, ``image_ids`` (B,) long, and per required
  group: ``dsap`` (B,24,3,S,S) float normalised + ``dsap_valid`` (B,24,S,S)
  bool; ``mpn_mask`` (B,h,w) float, ``mpn_roi`` (B,2) long rows [upper, lower]
  in feature-map rows (inclusive), ``mpn_fallback`` (B,) bool.
* ``losses(out, batch) -> dict[str, Tensor]``: named, already weighted loss
  terms; the engine back-propagates their sum and logs each name.
* ``extract(batch) -> Tensor``: (B, D) features for evaluation.
* ``distance``: ``"euclidean"`` or ``"cosine"`` for evaluation.
"""
from __future__ import annotations

import importlib
import pkgutil
from typing import Callable

METHODS: dict[str, type] = {}


def register(name: str) -> Callable[[type], type]:
    def deco(cls: type) -> type:
        if name in METHODS and METHODS[name] is not cls:
            raise ValueError(f"method {name!r} registered twice")
        cls.method_name = name
        METHODS[name] = cls
        return cls

    return deco


def load_all() -> dict[str, type]:
    """Import every module of this package so that each registers itself."""
    for info in pkgutil.iter_modules(__path__):
        if not info.name.startswith("_"):
            importlib.import_module(f"{__name__}.{info.name}")
    return METHODS


def get_method(name: str) -> type:
    load_all()
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; available: {sorted(METHODS)}")
    return METHODS[name]

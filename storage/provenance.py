"""Provenance stamped on every group of a store.

A provenance record says who produced a group and how: the producer (backend
name and version), the sha256 of model weights when there are weights, the
parameters, the code version, the creation time and the schema version.

``created`` honours ``SOURCE_DATE_EPOCH`` (the reproducible-builds convention),
so two runs with the same inputs can produce byte-identical stores.
"""
from __future__ import annotations

import datetime as _dt
import json
import os
import subprocess
from functools import lru_cache
from importlib import metadata
from pathlib import Path
from typing import Any

SCHEMA_VERSION = 1
# keys that legitimately differ between two runs producing the same data
VOLATILE_KEYS = ("created", "code_version")


def now_iso() -> str:
    """UTC creation time, or SOURCE_DATE_EPOCH when set."""
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    if epoch:
        t = _dt.datetime.fromtimestamp(int(epoch), tz=_dt.timezone.utc)
    else:
        t = _dt.datetime.now(tz=_dt.timezone.utc).replace(microsecond=0)
    return t.isoformat()


@lru_cache(maxsize=1)
def code_version() -> str:
    """Package version, plus the git commit when run from a checkout."""
    try:
        version = metadata.version("reid-priors")
    except metadata.PackageNotFoundError:  # pragma: no cover - running from a bare tree
        version = "0+unknown"
    repo = Path(__file__).resolve().parents[1]
    try:
        commit = subprocess.run(
            ["git", "-C", str(repo), "rev-parse", "--short=12", "HEAD"],
            capture_output=True, text=True, timeout=5, check=True,
        ).stdout.strip()
        if commit:
            version += f"+g{commit}"
    except (OSError, subprocess.SubprocessError):
        pass
    return version


def _jsonable(value: Any) -> Any:
    """Round-trip through JSON so that tuples/numpy scalars compare equal after storage."""
    return json.loads(json.dumps(value, default=_default, sort_keys=True))


def _default(o: Any) -> Any:
    if hasattr(o, "tolist"):
        return o.tolist()
    if isinstance(o, (set, frozenset)):
        return sorted(o)
    if isinstance(o, os.PathLike):
        return os.fspath(o)
    raise TypeError(f"not JSON serialisable in provenance: {o!r}")


def make_provenance(
    producer: dict[str, Any] | list[dict[str, Any]],
    params: dict[str, Any] | None = None,
    inputs: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Build a provenance record.

    ``producer``: ``{"name", "version", "weights_sha256", "params"}`` of one
    backend (see ``priors.estimators.provenance_of``) or a list of them (MPN
    priors record their parsing *and* segmentation sources).
    ``params``: the parameters of the step itself (S, K, thresholds, ...).
    ``inputs``: the groups this one was computed from, with their provenance.
    """
    return _jsonable({
        "producer": producer,
        "params": params or {},
        "inputs": inputs or {},
        "code_version": code_version(),
        "created": now_iso(),
        "schema_version": SCHEMA_VERSION,
    })


def same_provenance(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Equal up to the volatile keys (creation time, code version)."""
    strip = lambda p: {k: v for k, v in _jsonable(p).items() if k not in VOLATILE_KEYS}  # noqa: E731
    return strip(a) == strip(b)

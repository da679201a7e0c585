"""Prefect flows: ingest, build-dsap, build-mpn-priors (and the synthetic-world demo)."""
import os as _os

# these flows run offline: no telemetry calls to the outside world
_os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
_os.environ.setdefault("DO_NOT_TRACK", "1")

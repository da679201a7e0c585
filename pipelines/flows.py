"""The Prefect flows: the pipelines' flow functions, wrapped for Prefect.

``prefect.yaml`` deploys these; ``python -m pipelines`` runs them (reporting to
the server) when ``PREFECT_API_URL`` is set. They are the very functions a local
run calls directly (:func:`pipelines.ingest.ingest_flow`, ...): inside a Prefect
flow run, :func:`pipelines.runner.run_tasks` submits their jobs as Prefect task
runs, so the server sees every batch of write units. This is the only module of
the package that imports Prefect at import time.
"""
from __future__ import annotations

from prefect import flow

from pipelines.build_dsap import build_dsap_flow as _build_dsap
from pipelines.build_mpn import build_mpn_flow as _build_mpn
from pipelines.ingest import ingest_flow as _ingest

ingest_flow = flow(_ingest, name="ingest-dataset", log_prints=True)
build_dsap_flow = flow(_build_dsap, name="build-dsap", log_prints=True)
build_mpn_flow = flow(_build_mpn, name="build-mpn-priors", log_prints=True)

FLOWS = {"ingest": ingest_flow, "build-dsap": build_dsap_flow, "build-mpn-priors": build_mpn_flow}

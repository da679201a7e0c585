"""The store: images, estimator outputs and priors in Zarr; tables in Parquet.

>>> from storage import open_store
>>> s = open_store("demo/store")      # doctest: +SKIP
>>> s.index.groupby("split").size()   # doctest: +SKIP
"""
from .provenance import SCHEMA_VERSION, make_provenance, same_provenance
from .fs import LockError
from .store import GroupView, Store, StoreError, UnitError, contiguous_runs, open_store, read_rows
from .writer import (
    UnitWriter,
    create_store,
    failures_frame,
    group_writer,
    image_writer,
    reopen_writer,
)

__all__ = [
    "SCHEMA_VERSION",
    "GroupView",
    "LockError",
    "Store",
    "StoreError",
    "UnitError",
    "UnitWriter",
    "contiguous_runs",
    "create_store",
    "failures_frame",
    "group_writer",
    "image_writer",
    "make_provenance",
    "open_store",
    "read_rows",
    "reopen_writer",
    "same_provenance",
]

"""Figures of a store's priors, for a notebook or a report: one call per view.

>>> from storage import open_store
>>> from storage import views
>>> s = open_store("demo/store")                        # doctest: +SKIP
>>> views.select(s, split="query", camid=1).head()      # doctest: +SKIP
>>> views.show_iuv(s, 0)                                # doctest: +SKIP
>>> views.show_dsap(s, 0).savefig("dsap.png")           # doctest: +SKIP

Every ``show_*`` returns a :class:`matplotlib.figure.Figure` (shown in Jupyter
when it is a cell's last expression; ``fig.savefig(path)`` writes a PNG). The
24 DensePose parts always wear the colours of :data:`PART_COLORS`.

============================  ===========================================================
``show_iuv(store, id)``       image, parts ``I`` in the part palette, ``U``/``V`` isolines
``show_dsap(store, id)``      the 24 DSAP-images with their validity, the 8 merged groups
``show_mpn_prior(store, id)`` MPN mask, ROI rows and the K strips; fallbacks in red
``show_worst_cases(store)``   lowest coverage / fallbacks / failures, with reasons
``show_dataset_stats(store)`` per camera: part coverage, fallback rate, ROI height
``select(store, ...)``        index rows by split / pid / camid / status
============================  ===========================================================
"""
from __future__ import annotations

from .views_base import PART_CMAP, PART_COLORS, ViewFigure, all_failures, select
from .views_priors import merge_dsap, show_dsap, show_iuv, show_mpn_prior
from .views_stats import WORST_KINDS, show_dataset_stats, show_worst_cases

__all__ = [
    "PART_CMAP",
    "PART_COLORS",
    "WORST_KINDS",
    "ViewFigure",
    "all_failures",
    "merge_dsap",
    "select",
    "show_dataset_stats",
    "show_dsap",
    "show_iuv",
    "show_mpn_prior",
    "show_worst_cases",
]

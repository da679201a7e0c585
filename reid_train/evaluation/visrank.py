"""Ranked results you can look at: each query, its top-k gallery images framed
green (same identity) or red, and the true matches top-k missed at the end.

Rankings follow the evaluation protocol of :mod:`reid_train.evaluation.metrics`
exactly: gallery images of the query's identity seen by the query's camera,
and junk (pid -1), are left out of the ranking; the order is the stable
ascending sort of the distance; AP is ``(1/P) sum_j (j+1)/(r_j+1)``. So the
mean of the per-query APs here is the mAP :func:`evaluate_rank` reports (tested).

* :func:`rank_queries` -- per query: AP, top-k gallery positions, which are
  correct, and the missed true matches with their ranks;
* :func:`plot_rankings` -- one figure, one row per query (a grid of N queries
  or a single one), drawn from the store's images;
* :func:`write_visrank` -- ``DIR/grid.png`` (the ``n`` worst queries by AP,
  worst first), ``DIR/query_XX_IMAGEID.png`` per query and ``DIR/visrank.json``
  (what ``python -m storage report --run RUN`` shows);
* :func:`visrank_for_run` -- the above for a loaded method and its extracted
  query/gallery features, with the method's own test distance (what
  ``python -m reid_train.evaluate --run RUN --visrank N`` calls).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from .metrics import DistanceRows, QueryBlockDistances, as_numpy

CORRECT, WRONG, QUERY, MISSED = (46, 160, 67), (214, 39, 40), (31, 119, 180), (46, 160, 67)
FRAME = 4          # frame width in pixels
GAP = 12           # pixels between thumbnails
SECTION_GAP = 36   # pixels between query | top-k | missed


@dataclass
class QueryRanking:
    """The ranking of one query (positions index the gallery arrays)."""

    query: int                 # position in the query arrays
    ap: float
    top: np.ndarray            # (k,) gallery positions, best first
    distances: np.ndarray      # (k,) their distances
    correct: np.ndarray        # (k,) bool: same identity
    missed: np.ndarray         # gallery positions of true matches ranked after k, best first
    missed_ranks: np.ndarray   # their 0-based ranks
    num_matches: int

    @property
    def first_match_rank(self) -> int:
        """0-based rank of the first true match."""
        hit = np.flatnonzero(self.correct)
        return int(hit[0]) if hit.size else int(self.missed_ranks[0])


def rank_queries(distmat, q_pids, g_pids, q_camids, g_camids, topk: int = 10, block_size: int = 256,
                 junk_pids: Sequence[int] = (-1,)) -> list[QueryRanking]:
    """:class:`QueryRanking` of every query that has a true match in the gallery
    (the others are skipped, as evaluation skips them). ``distmat``: (Q, G)
    array/tensor or a ``(start, stop) -> rows`` callable."""
    q_pids, g_pids = np.asarray(q_pids).ravel(), np.asarray(g_pids).ravel()
    q_camids, g_camids = np.asarray(q_camids).ravel(), np.asarray(g_camids).ravel()
    rows = distmat if callable(distmat) else (lambda a, b: distmat[a:b])
    junk = np.isin(g_pids, np.asarray(junk_pids, dtype=g_pids.dtype))
    out = []
    for start in range(0, len(q_pids), block_size):
        stop = min(start + block_size, len(q_pids))
        dist = as_numpy(rows(start, stop)).astype(np.float64, copy=False)
        for r in range(stop - start):
            qi = start + r
            same = g_pids == q_pids[qi]
            valid = ~(same & (g_camids == q_camids[qi])) & ~junk
            idx = np.flatnonzero(valid)
            order = idx[np.argsort(dist[r, idx], kind="stable")]
            match = same[order]
            if not match.any():
                continue
            pos = np.flatnonzero(match)
            ap = float(np.mean(np.arange(1, pos.size + 1) / (pos + 1.0)))
            k = min(topk, order.size)
            late = pos[pos >= k]
            out.append(QueryRanking(qi, ap, order[:k], dist[r, order[:k]], match[:k], order[late], late,
                                    int(pos.size)))
    return out


def worst_first(rankings: list[QueryRanking], n: int | None = None) -> list[QueryRanking]:
    """Lowest AP first (ties: the later first match first, then query order)."""
    ranked = sorted(rankings, key=lambda r: (r.ap, -r.first_match_rank, r.query))
    return ranked if n is None else ranked[:n]


# ----------------------------------------------------------------------------
# drawing
# ----------------------------------------------------------------------------
def _framed(img: np.ndarray, color: tuple[int, int, int], dashed: bool = False) -> np.ndarray:
    out = img.copy()
    c = np.asarray(color, np.uint8)
    out[:FRAME], out[-FRAME:], out[:, :FRAME], out[:, -FRAME:] = c, c, c, c
    if dashed:  # gaps along the frame mark a match the top-k missed
        h, w = out.shape[:2]
        for y in range(0, h, 12):
            out[y + 6:y + 12, :FRAME] = out[y + 6:y + 12, -FRAME:] = 255
        for x in range(0, w, 12):
            out[:FRAME, x + 6:x + 12] = out[-FRAME:, x + 6:x + 12] = 255
    return out


def plot_rankings(rankings: list[QueryRanking], q_image: Callable[[int], np.ndarray],
                  g_image: Callable[[int], np.ndarray], q_labels: Sequence[str] | None = None,
                  max_missed: int = 5, title: str = ""):
    """One row per ranking: query (blue) | top-k (green = same identity, red =
    not) | up to ``max_missed`` missed true matches (green, dashed), each
    captioned with its rank. ``q_image(query position)`` / ``g_image(gallery
    position)`` return (H, W, 3) uint8 images of one size."""
    from storage.views_base import new_figure

    if not rankings:
        raise ValueError("no query to draw (none has a true match in the gallery)")
    h, w = q_image(rankings[0].query).shape[:2]
    k = max(len(r.top) for r in rankings)
    m = min(max_missed, max(len(r.missed) for r in rankings))
    cols_x = [0] + [w + SECTION_GAP + j * (w + GAP) for j in range(k)]
    miss_x0 = cols_x[-1] + w + SECTION_GAP
    cols_x += [miss_x0 + j * (w + GAP) for j in range(m)]
    label_h = 26
    row_h = h + label_h + 22
    width = cols_x[-1] + w
    canvas = np.full((row_h * len(rankings), width, 3), 255, np.uint8)
    texts = []
    for i, r in enumerate(rankings):
        y = i * row_h + label_h
        tiles = [(_framed(q_image(r.query), QUERY), q_labels[i] if q_labels else f"query #{r.query}", "#1f77b4")]
        for j, (g, ok, d) in enumerate(zip(r.top, r.correct, r.distances)):
            tiles.append((_framed(g_image(int(g)), CORRECT if ok else WRONG), f"{j + 1}  {d:.3g}",
                          "#2ca02c" if ok else "#d62728"))
        tiles += [None] * (k - len(r.top))
        for g, rank in zip(r.missed[:m], r.missed_ranks[:m]):
            tiles.append((_framed(g_image(int(g)), MISSED, dashed=True), f"missed, rank {int(rank) + 1}", "#2ca02c"))
        for x, tile in zip(cols_x, tiles):
            if tile is None:
                continue
            img, text, color = tile
            canvas[y:y + h, x:x + w] = img
            texts.append((x + w / 2, y - 4, text, color, "center", "bottom"))
        texts.append((0, y + h + 6, f"AP {r.ap:.3f}  ·  {r.num_matches} true match" + ("es" if r.num_matches != 1 else "")
                      + (f"  ·  {len(r.missed)} missed by top-{k}" if len(r.missed) else ""), "#222222", "left", "top"))
    scale = 0.01 * max(1.0, 128 / h)  # inches per pixel: small crops are drawn larger
    fig = new_figure(width * scale, canvas.shape[0] * scale + (0.4 if title else 0.1), layout="constrained")
    ax = fig.add_subplot()
    ax.imshow(canvas, interpolation="nearest")
    ax.set_axis_off()
    fontsize = max(6.0, min(10.0, w * scale * 8))
    for x, y, text, color, ha, va in texts:
        ax.text(x, y, text, ha=ha, va=va, color=color, fontsize=fontsize)
    if title:
        fig.suptitle(title, fontsize=fontsize + 2)
    return fig


# ----------------------------------------------------------------------------
# files
# ----------------------------------------------------------------------------
def write_visrank(out_dir: str | Path, store, q: dict, g: dict, distmat, n: int = 10, topk: int = 10,
                  max_missed: int = 5, per_query: bool = True, title: str = "", extra: dict | None = None) -> dict:
    """Draw the ``n`` worst queries (lowest AP first) into ``out_dir``:
    ``grid.png``, ``query_XX_IMAGEID.png`` each (``per_query``) and
    ``visrank.json``. ``q`` / ``g``: dicts with ``image_ids``, ``pids``,
    ``camids`` in the order of ``distmat``'s rows / columns; images come from
    ``store`` (a path or an open store). Returns the JSON summary."""
    from storage import open_store

    store = store if hasattr(store, "ok_index") else open_store(store)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rankings = rank_queries(distmat, q["pids"], g["pids"], q["camids"], g["camids"], topk=topk)
    shown = worst_first(rankings, n)
    q_ids, g_ids = np.asarray(q["image_ids"]), np.asarray(g["image_ids"])
    index = store.ok_index.set_index("image_id")

    def q_image(i: int) -> np.ndarray:
        return store.image(int(q_ids[i]))

    def g_image(i: int) -> np.ndarray:
        return store.image(int(g_ids[i]))

    def label(r: QueryRanking) -> str:
        return f"query {int(q_ids[r.query])}: pid {int(q['pids'][r.query])} cam {int(q['camids'][r.query])}"

    rows = []
    for order, r in enumerate(shown):
        png = f"query_{order:02d}_{int(q_ids[r.query]):06d}.png"
        if per_query:
            fig = plot_rankings([r], q_image, g_image, [label(r)], max_missed=max_missed)
            fig.savefig(out / png, dpi=100)
        rows.append({"order": order, "image_id": int(q_ids[r.query]), "pid": int(q["pids"][r.query]),
                     "camid": int(q["camids"][r.query]), "relpath": str(index.at[int(q_ids[r.query]), "relpath"]),
                     "ap": r.ap, "first_match_rank": r.first_match_rank + 1, "num_matches": r.num_matches,
                     "top": [int(g_ids[x]) for x in r.top], "correct": [bool(c) for c in r.correct],
                     "missed": [int(g_ids[x]) for x in r.missed], "missed_ranks": [int(x) + 1 for x in r.missed_ranks],
                     "png": png if per_query else None})
    fig = plot_rankings(shown, q_image, g_image, [label(r) for r in shown], max_missed=max_missed,
                        title=title or f"{len(shown)} worst of {len(rankings)} queries by AP")
    fig.savefig(out / "grid.png", dpi=100)
    summary = {**(extra or {}), "store": str(store.url), "topk": topk, "num_queries": len(rankings),
               "mAP": float(np.mean([r.ap for r in rankings])), "grid": "grid.png", "queries": rows}
    (out / "visrank.json").write_text(json.dumps(summary, indent=1))
    return summary


def ranking_distance(method, qf, gf, metric: str | None = None) -> DistanceRows | np.ndarray:
    """The distance evaluation uses (:func:`reid_train.engine.score_features`):
    the method's ``eval_distance`` hook, else ``metric`` (default: the
    method's ``distance``) block-wise."""
    dist = method.eval_distance(qf, gf) if metric is None else None
    return dist if dist is not None else QueryBlockDistances(qf, gf, metric or method.distance)


def visrank_for_run(method, q: dict, g: dict, out_dir: str | Path, n: int = 10, topk: int = 10,
                    metric: str | None = None, store: str | None = None, run: str = "") -> dict:
    """:func:`write_visrank` for features extracted by
    :func:`reid_train.engine.extract_features` (query and gallery of
    ``method.cfg.store`` in image_id order)."""
    from storage import open_store

    s = open_store(store or method.cfg.store)
    ok = s.ok_index

    def with_ids(feats: dict, split: str) -> dict:
        ids = ok.loc[ok["split"] == split, "image_id"].to_numpy(np.int64)
        if len(ids) != len(feats["pids"]):
            raise ValueError(f"{split}: {len(feats['pids'])} features for {len(ids)} images")
        return {**feats, "image_ids": ids}

    dist = ranking_distance(method, q["features"], g["features"], metric)
    return write_visrank(out_dir, s, with_ids(q, "query"), with_ids(g, "gallery"), dist, n=n, topk=topk,
                         title=f"{method.cfg.method}: {n} worst queries by AP (top-{topk})",
                         extra={"run": run, "method": method.cfg.method, "metric": metric or method.distance})


__all__ = ["QueryRanking", "rank_queries", "worst_first", "plot_rankings", "write_visrank", "ranking_distance",
           "visrank_for_run"]

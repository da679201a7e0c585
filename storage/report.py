"""What is in a store, as HTML: the notebook summary and a static report with figures.

* :func:`store_html_summary` -- the rich summary Jupyter shows for a store
  (``Store._repr_html_``): dataset, counts per split, identities, cameras, the
  estimate/prior groups with their provenance, and failure counts by reason.
  Self-contained (inline CSS, no scripts); every value is HTML-escaped.
* :func:`write_report` -- ``python -m storage report STORE --out DIR``: the same
  summary plus every view of :mod:`storage.views` that applies to the groups
  present, as ``index.html`` and PNGs, for a quick look over SSH (copy the
  folder back, or ``python -m http.server`` in it). With ``--run RUN`` (a
  training run directory, repeatable) also the run's ranked results: the
  ``RUN/visrank/`` folder ``python -m reid_train.evaluate --run RUN --visrank N``
  writes (read as files: storage never imports the training package).
"""
from __future__ import annotations

import html
import json
import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

DSAP_GROUP, MPN_GROUP = "priors/dsap", "priors/mpn"

EXPECTED_GROUPS = {
    "estimates/*": "python -m pipelines build-dsap --estimator ... (dense semantics: I, U, V)",
    DSAP_GROUP: "python -m pipelines build-dsap",
    MPN_GROUP: "python -m pipelines build-mpn-priors",
}

CSS = """
.rp-summary{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;font-size:13px;line-height:1.35;color:#222}
.rp-summary h3{margin:4px 0 6px 0;font-size:15px}
.rp-summary h4{margin:10px 0 4px 0;font-size:13px}
.rp-summary table{border-collapse:collapse;margin:2px 0 6px 0}
.rp-summary th,.rp-summary td{border:1px solid #ccc;padding:2px 7px;text-align:left;vertical-align:top}
.rp-summary th{background:#f0f0f0}
.rp-summary td.num{text-align:right;font-variant-numeric:tabular-nums}
.rp-summary .bad{color:#c62828;font-weight:600}
.rp-summary .muted{color:#777}
.rp-summary code{font-size:12px}
.rp-summary details pre{max-height:320px;overflow:auto;background:#f7f7f7;padding:6px;font-size:11px}
"""


def _e(x: Any) -> str:
    return html.escape(str(x), quote=True)


def _producers(prov: dict[str, Any]) -> list[dict[str, Any]]:
    prod = prov.get("producer", {})
    return prod if isinstance(prod, list) else [prod]


def _compact(params: dict[str, Any], limit: int = 160) -> str:
    text = ", ".join(f"{k}={json.dumps(v, sort_keys=True)}" for k, v in sorted(params.items()))
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"


def _table(header: list[str], rows: list[list[Any]], numeric: set[int] = frozenset()) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f"<td class=\"num\">{_e(c)}</td>" if k in numeric else f"<td>{c}</td>"
                         for k, c in enumerate(r))
        + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _group_rows(store, summary: dict[str, Any]) -> list[list[Any]]:
    rows = []
    for name, g in summary["groups"].items():
        prov = g["provenance"]
        who = "<br>".join(
            f"<b>{_e(p.get('name', '?'))}</b> {_e(p.get('version', ''))}"
            + (f" <span class=\"muted\">weights sha256 {_e(str(p['weights_sha256'])[:12])}</span>"
               if p.get("weights_sha256") else "")
            for p in _producers(prov))
        arrays = "<br>".join(f"<code>{_e(k)} {_e(tuple(a.shape))} {_e(a.dtype)}</code>"
                             for k, a in store.group(name).arrays.items())
        fails = g["failures"]
        fail_txt = ("<span class=\"bad\">" + "<br>".join(f"{_e(r)}: {_e(n)}" for r, n in sorted(fails.items()))
                    + "</span>") if fails else "0"
        inputs = ", ".join(_e(k) for k in (prov.get("inputs") or {}))
        units = f"{g['units_done']}/{g['units_total']}"
        units_html = _e(units) if g["units_done"] == g["units_total"] else f"<span class=\"bad\">{_e(units)}</span>"
        rows.append([f"<b>{_e(name)}</b>", who, _e(_compact(prov.get("params", {}))) + (
            f"<br><span class=\"muted\">from {inputs}</span>" if inputs else ""), arrays, units_html, fail_txt,
            f"{_e(prov.get('created', ''))}<br><span class=\"muted\">{_e(prov.get('code_version', ''))}</span>"])
    return rows


def missing_groups(store) -> dict[str, str]:
    """Expected groups the store lacks -> the command that builds them."""
    have = list(store.groups)
    out = {}
    for name, cmd in EXPECTED_GROUPS.items():
        present = any(g.startswith("estimates/") for g in have) if name == "estimates/*" else name in have
        if not present:
            out[name] = cmd
    return out


def store_html_summary(store) -> str:
    """Self-contained HTML: dataset, counts, groups with provenance, failures by reason."""
    s = store.summary()
    ok = store.ok_index
    parts = [f"<style>{CSS}</style><div class=\"rp-summary\">"]
    h, w = s["image_size"]
    parts.append(f"<h3>reid-priors store: {_e(s['dataset'])} &mdash; {_e(s['n_images'])} images at "
                 f"{_e(h)}x{_e(w)}</h3>")
    parts.append(f"<div class=\"muted\">{_e(s['store'])} &middot; schema v{_e(s['schema_version'])} &middot; "
                 f"source <code>{_e(s['source_root'])}</code> &middot; {_e(s['index_rows'])} index rows</div>")
    split_rows = [[_e(k), c["images"], c["pids"], c["cameras"]] for k, c in s["splits"].items()]
    split_rows.append(["<b>all ok</b>", len(ok), int(ok["pid"].nunique()), int(ok["camid"].nunique())])
    parts.append("<h4>Counts per split</h4>"
                 + _table(["split", "images", "identities", "cameras"], split_rows, {1, 2, 3}))
    if len(ok):
        per_cam = ok.groupby(["camid", "split"]).size().unstack(fill_value=0)
        cols = [c for c in ("train", "query", "gallery") if c in per_cam.columns]
        cam_rows = [[f"cam {_e(int(c))}", *(int(per_cam.loc[c, k]) for k in cols), int(per_cam.loc[c, cols].sum())]
                    for c in per_cam.index]
        parts.append("<h4>Images per camera</h4>" + _table(["camera", *cols, "total"], cam_rows,
                                                           set(range(1, len(cols) + 2))))
    if s["not_ok"]:
        rows = [[_e(k.split(":", 1)[0]), f"<span class=\"bad\">{_e(k.split(':', 1)[1] or '-')}</span>", n]
                for k, n in sorted(s["not_ok"].items())]
        parts.append("<h4>Not ingested</h4>" + _table(["status", "reason", "images"], rows, {2}))
    else:
        parts.append("<h4>Not ingested</h4><div>none: every source image is stored</div>")
    parts.append("<h4>Estimates and priors</h4>")
    if s["groups"]:
        parts.append(_table(["group", "producer", "params", "arrays", "units", "failures by reason", "created"],
                            _group_rows(store, s)))
    for name, cmd in missing_groups(store).items():
        parts.append(f"<div class=\"muted\">no <code>{_e(name)}</code> &mdash; "
                     f"build it with <code>{_e(cmd)}</code></div>")
    prov = {"ingest": store.attrs.get("provenance", {}), **{k: g["provenance"] for k, g in s["groups"].items()}}
    parts.append("<details><summary>full provenance (JSON)</summary><pre>"
                 + _e(json.dumps(prov, indent=1, sort_keys=True, default=str)) + "</pre></details></div>")
    return "".join(parts)


def example_ids(store, max_examples: int) -> list[int]:
    """``max_examples`` ok image ids spread evenly over the store (identities are contiguous rows)."""
    n = len(store.ok_index)
    if n == 0 or max_examples <= 0:
        return []
    return [int(i) for i in np.unique(np.linspace(0, n - 1, min(max_examples, n)).round().astype(int))]


def _save(fig, out: Path, name: str, dpi: int = 90) -> str:
    fig.savefig(out / name, dpi=dpi)
    return name


def _img(name: str, alt: str) -> str:
    return f"<a href=\"{_e(name)}\"><img src=\"{_e(name)}\" alt=\"{_e(alt)}\" loading=\"lazy\"></a>"


PAGE_CSS = """
body{margin:16px 24px;font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;background:#fff;color:#222}
h2{border-bottom:1px solid #ddd;padding-bottom:3px;margin-top:28px}
img{max-width:100%;height:auto;border:1px solid #e4e4e4;margin:4px 0}
.note{color:#8a6d00;background:#fff8e1;border-left:4px solid #ffb300;padding:4px 10px;margin:6px 0}
.example{margin-bottom:18px}
nav a{margin-right:14px}
"""


def visrank_section(runs: Sequence[str | os.PathLike], out: Path) -> list[str]:
    """HTML of the runs' ranked results (``RUN/visrank/visrank.json`` + ``grid.png``,
    copied into ``out``), worst queries first; a note with the command for a run without them."""
    body = ["<h2 id=\"ranked\">Ranked results</h2>"]
    used: set[str] = set()
    for run in runs:
        run = Path(run)
        vis = run / "visrank"
        if not (vis / "visrank.json").is_file() or not (vis / "grid.png").is_file():
            body.append(f"<p class=\"note\">run <code>{_e(run)}</code> has no ranked results &mdash; draw them with "
                        f"<code>python -m reid_train.evaluate --run {_e(run)} --visrank 10</code></p>")
            continue
        summary = json.loads((vis / "visrank.json").read_text())
        name, k = f"visrank_{run.name}.png", 1
        while name in used:
            k += 1
            name = f"visrank_{run.name}_{k}.png"
        used.add(name)
        shutil.copyfile(vis / "grid.png", out / name)
        body.append(f"<h3>{_e(summary.get('method', ''))} <small><code>{_e(run)}</code></small></h3>"
                    f"<div>mAP {100 * summary['mAP']:.2f}% over {_e(summary['num_queries'])} queries "
                    f"({_e(summary.get('metric', ''))} distance); the {len(summary['queries'])} worst by AP, "
                    f"top-{_e(summary['topk'])} framed green (same identity) / red, missed true matches "
                    "dashed at the end</div>")
        rows = [[q["order"] + 1, q["image_id"], q["pid"], q["camid"], f"{q['ap']:.3f}", q["first_match_rank"],
                 len(q["missed"]), f"<code>{_e(q['relpath'])}</code>"] for q in summary["queries"]]
        body.append(_table(["#", "image_id", "pid", "cam", "AP", "first match rank", "missed", "file"], rows,
                           {0, 1, 2, 3, 4, 5, 6}))
        body.append(_img(name, f"ranked results of {run}"))
    return body


def write_report(store, out_dir: str | os.PathLike, max_examples: int = 6,
                 runs: Sequence[str | os.PathLike] = ()) -> Path:
    """Write ``out_dir/index.html`` and one PNG per view; returns the path of ``index.html``.

    Views: dataset statistics, the three worst-case galleries, then for
    ``max_examples`` images spread over the store the IUV overlay, the 24
    DSAP-images and the MPN prior. A view whose group is missing is skipped
    with a note naming the command that builds it. ``runs``: training run
    directories whose ranked results (:func:`visrank_section`) are shown last.
    """
    from . import views

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    has_est = any(g.startswith("estimates/") for g in store.groups)
    has_dsap, has_mpn = store.has_group(DSAP_GROUP), store.has_group(MPN_GROUP)
    missing = missing_groups(store)

    def note(name: str) -> str:
        return f"<p class=\"note\">skipped: this store has no <code>{_e(name)}</code> &mdash; build it with " \
               f"<code>{_e(missing.get(name, EXPECTED_GROUPS.get(name, '')))}</code></p>"

    body = [f"<h1>reid-priors report: {_e(store.attrs.get('dataset'))}</h1>",
            "<nav><a href=\"#summary\">summary</a><a href=\"#stats\">dataset statistics</a>"
            "<a href=\"#worst\">worst cases</a><a href=\"#examples\">examples</a>"
            + ("<a href=\"#ranked\">ranked results</a>" if runs else "") + "</nav>",
            "<h2 id=\"summary\">Summary</h2>", store_html_summary(store),
            "<h2 id=\"stats\">Dataset statistics (per camera)</h2>",
            _img(_save(views.show_dataset_stats(store), out, "dataset_stats.png"), "dataset statistics")]
    if not has_dsap:
        body.append(note(DSAP_GROUP))
    if not has_mpn:
        body.append(note(MPN_GROUP))
    body.append("<h2 id=\"worst\">Worst cases</h2>")
    for kind, ok in (("coverage", has_dsap), ("fallback", has_mpn), ("failures", True)):
        body.append(f"<h3>{_e(kind)}</h3>")
        if ok:
            fig = views.show_worst_cases(store, kind, n=max(8, max_examples))
            body.append(_img(_save(fig, out, f"worst_{kind}.png"), f"worst cases: {kind}"))
        else:
            body.append(note(DSAP_GROUP if kind == "coverage" else MPN_GROUP))
    body.append("<h2 id=\"examples\">Examples</h2>")
    ids = example_ids(store, max_examples)
    if not ids:
        body.append("<p class=\"note\">no stored images</p>")
    for name, ok in (("estimates/*", has_est), (DSAP_GROUP, has_dsap), (MPN_GROUP, has_mpn)):
        if not ok:
            body.append(note(name))
    for iid in ids:
        row = store.ok_index.iloc[iid]
        body.append(f"<div class=\"example\"><h3>image #{iid}: {_e(row['split'])} pid {_e(int(row['pid']))} "
                    f"cam {_e(int(row['camid']))} <small><code>{_e(row['relpath'])}</code></small></h3>")
        for show, ok, tag in ((views.show_iuv, has_est, "iuv"), (views.show_mpn_prior, has_mpn, "mpn"),
                              (views.show_dsap, has_dsap, "dsap")):
            if ok:
                body.append(_img(_save(show(store, iid), out, f"{tag}_{iid:06d}.png"), f"{tag} of image {iid}"))
        body.append("</div>")
    if runs:
        body += visrank_section(runs, out)
    page = ("<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>reid-priors report: {_e(store.attrs.get('dataset'))}</title><style>{PAGE_CSS}</style></head>"
            f"<body>{''.join(body)}</body></html>")
    index = out / "index.html"
    index.write_text(page, encoding="utf-8")
    return index


__all__ = ["store_html_summary", "write_report", "example_ids", "missing_groups", "visrank_section"]

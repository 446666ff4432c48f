"""The gallery page: one static HTML file over an evaluation (no server, no network).

One card per expression: its thumbnail (a file beside the page, ``loading="lazy"``), the
expression, and each method's outcome.  Filters (split, hit/miss per method, text search) and a
pager run in a few lines of inline JavaScript over the cards' data attributes:

- ``data-split``: the split; ``data-sent-id``; ``data-text``: the lower-cased expression;
- ``data-hit-<method>``: ``1`` when the method hits the referent, else ``0`` (attribute names
  are lower-case in HTML, so the method name is lower-cased there).

The metrics table on top gives, per split and method, the hit rate with its 95 % bootstrap
interval over the expressions (``metrics.json``'s ``hit_rate_ci``, else
:func:`sepnms.evaluation.stats.bootstrap_ci` over the cards) and the other numbers of
``metrics.json``.
"""
from __future__ import annotations

import html
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional

from sepnms.evaluation.stats import bootstrap_ci
from sepnms.io.atomic import atomic_write_text


@dataclass
class Card:
    sent_id: int
    split: str
    image_id: int
    text: str
    hits: dict[str, bool]
    kept: dict[str, int]
    thumb: Optional[str] = None  # path relative to the page
    extra: dict[str, Any] = field(default_factory=dict)


def _pct(v: Optional[float]) -> str:
    return "-" if v is None else f"{100 * float(v):.1f}"


def metrics_rows(cards: list[Card], methods: list[str], splits: list[str],
                 metrics: Mapping[str, Mapping[str, Mapping[str, Any]]]) -> list[dict[str, Any]]:
    """One row per (split, method): hits counted over the cards, with a 95 % interval."""
    rows = []
    for split in splits:
        mine = [c for c in cards if c.split == split]
        for m in methods:
            hits = [float(c.hits[m]) for c in mine]
            mm = (metrics.get(m) or {}).get(split) or {}
            ci = mm.get("hit_rate_ci") or bootstrap_ci(hits)  # evaluate's interval when it wrote one
            rows.append({"split": split, "method": m, "hits": int(sum(hits)), "n": len(hits),
                         "hit_rate": (sum(hits) / len(hits)) if hits else None, "ci": ci,
                         "proposals_per_expression": mm.get("proposals_per_expression"),
                         "top1_accuracy": mm.get("top1_accuracy"), "ctx_recall": mm.get("ctx_recall"),
                         "conf": mm.get("conf")})
    return rows


_CSS = """
body{font-family:system-ui,sans-serif;margin:16px;color:#222}
table{border-collapse:collapse;margin-bottom:12px;font-size:13px}
td,th{border:1px solid #ccc;padding:3px 7px;text-align:right}
td:first-child,td:nth-child(2),th{text-align:left}
#filters{position:sticky;top:0;background:#fff;padding:8px 0;border-bottom:1px solid #ddd;z-index:2}
#filters label{margin-right:12px;font-size:13px}
.cards{display:flex;flex-wrap:wrap;gap:10px;margin-top:10px}
.card{border:1px solid #ccc;border-radius:4px;padding:6px;width:min(100%,{width}px);font-size:12px}
.card img{width:100%;height:auto;display:block}
.card .noimg{color:#888;font-style:italic;padding:12px 0}
.card .text{font-weight:600;margin:4px 0}
.badge{display:inline-block;border:2px solid;border-radius:3px;padding:0 4px;margin:1px;font-size:11px}
.badge.miss{opacity:.55;text-decoration:line-through}
#pager button{margin:0 4px}
"""

_JS = """
(function(){
  const cards = Array.from(document.querySelectorAll('.card'));
  const methods = JSON.parse(document.getElementById('methods').textContent);
  const pageSize = %(page_size)d;
  const split = document.getElementById('f-split'), search = document.getElementById('f-text');
  const selects = methods.map(m => document.getElementById('f-' + m));
  let page = 0, matched = cards;
  function apply(resetPage){
    const q = search.value.trim().toLowerCase();
    matched = cards.filter(c => (!split.value || c.dataset.split === split.value)
      && (!q || c.dataset.text.includes(q))
      && methods.every((m, i) => !selects[i].value || c.getAttribute('data-hit-' + m.toLowerCase()) === selects[i].value));
    if (resetPage) page = 0;
    const pages = Math.max(1, Math.ceil(matched.length / pageSize));
    page = Math.min(page, pages - 1);
    const shown = new Set(matched.slice(page * pageSize, (page + 1) * pageSize));
    for (const c of cards) c.style.display = shown.has(c) ? '' : 'none';
    document.getElementById('count').textContent = matched.length + ' of ' + cards.length + ' expressions; page '
      + (page + 1) + ' of ' + pages;
  }
  split.onchange = search.oninput = () => apply(true);
  selects.forEach(s => s.onchange = () => apply(true));
  document.getElementById('prev').onclick = () => { page = Math.max(0, page - 1); apply(false); };
  document.getElementById('next').onclick = () => { page += 1; apply(false); };
  apply(true);
})();
"""


def write_gallery(path: Path, cards: list[Card], methods: list[str], splits: list[str],
                  metrics: Mapping[str, Any], colours: Mapping[str, str], title: str, page_size: int = 60,
                  thumb_width: int = 360, notes: Optional[list[str]] = None) -> Path:
    """Write the page (atomically).  ``cards`` in display order; ``thumb`` paths relative to the
    page's folder."""
    e = html.escape
    out = [f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{e(title)}</title>",
           f"<style>{_CSS.replace('{width}', str(int(thumb_width)))}</style></head><body>",
           f"<h1>{e(title)}</h1>"]
    for note in notes or []:
        out.append(f"<p>{e(note)}</p>")
    out.append("<table id='metrics'><tr><th>split</th><th>method</th><th>hit rate (%) [95% CI]</th><th>hits / n</th>"
               "<th>proposals / expr</th><th>top-1 (%)</th><th>ctx recall (%)</th><th>conf</th></tr>")
    for r in metrics_rows(cards, methods, splits, metrics):
        ci = f" [{_pct(r['ci'][0])}, {_pct(r['ci'][1])}]" if r["ci"] else ""
        ppe = "-" if r["proposals_per_expression"] is None else f"{r['proposals_per_expression']:.2f}"
        conf = "-" if r["conf"] is None else f"{r['conf']:.3g}"
        out.append(f"<tr><td>{e(r['split'])}</td><td style='color:{e(colours[r['method']])}'>{e(r['method'])}</td>"
                   f"<td>{_pct(r['hit_rate'])}{ci}</td><td>{r['hits']} / {r['n']}</td><td>{ppe}</td>"
                   f"<td>{_pct(r['top1_accuracy'])}</td><td>{_pct(r['ctx_recall'])}</td><td>{conf}</td></tr>")
    out.append("</table>")
    out.append("<div id='filters'><label>split <select id='f-split'><option value=''>all</option>"
               + "".join(f"<option>{e(s)}</option>" for s in splits) + "</select></label>")
    for m in methods:
        out.append(f"<label style='color:{e(colours[m])}'>{e(m)} <select id='f-{e(m)}'><option value=''>any</option>"
                   "<option value='1'>hit</option><option value='0'>miss</option></select></label>")
    out.append("<label>text <input id='f-text' type='search' placeholder='search the expressions'></label>"
               "<span id='pager'><button id='prev'>&lsaquo; prev</button><button id='next'>next &rsaquo;</button></span>"
               "<span id='count'></span></div><div class='cards'>")
    for c in cards:
        attrs = " ".join(f"data-hit-{e(m.lower())}='{int(c.hits[m])}'" for m in methods)
        out.append(f"<div class='card' data-split='{e(c.split)}' data-sent-id='{c.sent_id}' "
                   f"data-text='{e(c.text.lower())}' {attrs}>")
        if c.thumb:
            out.append(f"<img loading='lazy' src='{e(c.thumb)}' alt='sent_id {c.sent_id}'>")
        else:
            out.append("<div class='noimg'>no thumbnail (gallery.max_thumbnails)</div>")
        out.append(f"<div class='text'>{e(c.text)}</div><div>{e(c.split)} &middot; sent_id {c.sent_id} &middot; "
                   f"image {c.image_id}</div><div>")
        for m in methods:
            cls = "hit" if c.hits[m] else "miss"
            out.append(f"<span class='badge {cls}' style='border-color:{e(colours[m])}' title='{c.kept[m]} kept'>"
                       f"{e(m)} {'hit' if c.hits[m] else 'miss'}</span>")
        out.append("</div></div>")
    out.append("</div>")
    out.append(f"<script type='application/json' id='methods'>{json.dumps(methods)}</script>")
    out.append(f"<script>{_JS % {'page_size': int(page_size)}}</script></body></html>")
    path = Path(path)
    atomic_write_text(path, "\n".join(out))
    return path

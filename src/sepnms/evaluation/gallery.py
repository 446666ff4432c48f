"""The gallery page: one static HTML file over an evaluation (no server, no network).

Every expression gets a card, drawn in the browser: the image file itself (``<img>``, a path
relative to the page - never copied) under an SVG of the boxes (ground truth, context objects,
each method's kept proposals, the second stage's pick), scaled with the image at any zoom and
pixel density.  Only the current page's cards are built; the page holds one JSON document
(``<script type="application/json" id="gallery-data">``, see :func:`card_record` for its layout)
from which the inline script draws them, filters them and pages through them:

- filters: split, per method (first stage hit / miss, second stage right / wrong), text;
- a toggle per method shows or hides its boxes (only the shown methods' boxes are built); hovering a box shows its method, category,
  score and rank (SVG ``<title>``), clicking it writes the same line under the card;
- the pager returns to the first card on a page change, its buttons are disabled at the ends and
  the page number is kept in the URL fragment (``#page=3``), so a view can be shared;
- text from the data (expressions, category and method names) only ever reaches the page as
  ``textContent`` / escaped HTML: an expression is shown literally, never run.

The metrics table on top gives, per split and method, the hit rate with its 95 % bootstrap
interval over the expressions (``metrics.json``'s ``hit_rate_ci``, else
:func:`sepnms.evaluation.stats.bootstrap_ci` over the cards), the other numbers of
``metrics.json`` and the second stage's accuracy where ``sepnms ground eval`` ran; it scrolls
sideways on a narrow screen.  Colours: :mod:`sepnms.evaluation.palette`.
"""
from __future__ import annotations

import html
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

import numpy as np

from sepnms.evaluation import palette
from sepnms.evaluation.stats import bootstrap_ci
from sepnms.io.atomic import atomic_write_text

#: digits kept of each score in the page's data
SCORE_DECIMALS = 3


@dataclass
class MethodView:
    """One method as the page shows it: ``name``; ``base`` the fused table it reads (``M@X``
    reads M's); ``second_stage``: the second stage scored it; ``visible``: boxes shown when the
    page opens."""

    name: str
    base: str
    second_stage: bool = False
    visible: bool = True


@dataclass
class MethodOutcome:
    """One method on one expression: ``boxes`` [K, 4] xyxy image pixels by descending fused
    score, ``categories`` [K] category indices, ``scores`` [K] fused scores; ``hit`` as evaluate
    counts it; ``pick`` the row the second stage chose (None: none or not among them);
    ``pick_hit`` the second stage's outcome (None: it did not score this method)."""

    boxes: np.ndarray
    categories: np.ndarray
    scores: np.ndarray
    hit: bool
    pick: Optional[int] = None
    pick_hit: Optional[bool] = None


@dataclass
class Card:
    sent_id: int
    split: str
    image: int  # index into the page's image table
    text: str
    gt: Optional[Sequence[float]]  # [4] xyxy
    ctx: np.ndarray  # [C, 4] xyxy
    outcomes: dict[str, MethodOutcome]
    figure: Optional[str] = None  # the ``show`` figure, relative to the page
    extra: dict[str, Any] = field(default_factory=dict)


def _xywh(box: Sequence[float]) -> list[int]:
    x0, y0, x1, y1 = (float(v) for v in box)
    return [int(round(x0)), int(round(y0)), int(round(x1 - x0)), int(round(y1 - y0))]


def card_record(card: Card, methods: Sequence[MethodView], splits: Sequence[str],
                pool: dict[tuple, int], pool_flat: list[int]) -> dict[str, Any]:
    """The page's JSON of one card (integers are image pixels, boxes ``[x, y, w, h]``):

    - ``s`` sent_id, ``p`` split index, ``i`` image index, ``t`` expression, ``f`` figure path
      (absent: none), ``g`` GT box or null, ``c`` flat context boxes;
    - ``r`` per fused table read (``bases`` of the page, in order) its ranking: flat
      ``[box index, score x 1000, ...]`` as long as the longest kept list among its methods; a
      box index points into the image's box pool (``images[i][3]``, flat ``[x, y, w, h,
      category index]``, shared by all cards of the image - ``pool`` / ``pool_flat`` here);
    - ``m`` per method ``[K, hit, pick, pick_hit]``: its kept proposals are the first K of its
      table's ranking; hit 1/0; pick the rank (0-based) of the second stage's answer or -1;
      pick_hit 1/0, or -1 where the second stage did not score the method.
    """
    rankings = []
    for base in dict.fromkeys(m.base for m in methods):
        mine = [m for m in methods if m.base == base]
        longest = max(mine, key=lambda m: len(card.outcomes[m.name].boxes))
        o = card.outcomes[longest.name]
        ranking: list[int] = []
        for k in range(len(o.boxes)):
            key = (*_xywh(o.boxes[k]), int(o.categories[k]))
            if key not in pool:
                pool[key] = len(pool)
                pool_flat.extend(key)
            ranking += [pool[key], int(round(float(o.scores[k]) * 10 ** SCORE_DECIMALS))]
        rankings.append(ranking)
    per_method = []
    for m in methods:
        o = card.outcomes[m.name]
        per_method.append([len(o.boxes), int(bool(o.hit)), -1 if o.pick is None else int(o.pick),
                           -1 if o.pick_hit is None else int(bool(o.pick_hit))])
    rec: dict[str, Any] = {"s": int(card.sent_id), "p": list(splits).index(card.split), "i": int(card.image),
                           "t": card.text, "g": None if card.gt is None else _xywh(card.gt),
                           "c": [v for b in np.asarray(card.ctx, np.float64).reshape(-1, 4) for v in _xywh(b)],
                           "r": rankings, "m": per_method}
    if card.figure:
        rec["f"] = card.figure
    return rec


def page_data(cards: Sequence[Card], methods: Sequence[MethodView], splits: Sequence[str],
              images: Sequence[tuple[str, int, int]], categories: Sequence[str]) -> dict[str, Any]:
    """The page's JSON document: ``methods`` (name, base index, colour, dash, second_stage,
    visible), ``bases``, ``splits``, ``categories``, ``images`` (``[url relative to the page,
    width, height, box pool]``), ``cards`` (:func:`card_record`) and ``scale`` (scores are stored
    as integers: score x scale)."""
    bases = list(dict.fromkeys(m.base for m in methods))
    ms = []
    for m in methods:
        st = palette.method_style(m.name)
        ms.append({"name": m.name, "base": bases.index(m.base), "colour": st.colour,
                   "dash": list(st.dash) if st.dash else [], "second_stage": m.second_stage, "visible": m.visible})
    pools: list[tuple[dict[tuple, int], list[int]]] = [({}, []) for _ in images]
    records = [card_record(c, methods, splits, *pools[c.image]) for c in cards]
    return {"methods": ms, "bases": bases, "splits": list(splits), "categories": list(categories),
            "images": [[*i, pools[n][1]] for n, i in enumerate(images)], "cards": records,
            "scale": 10 ** SCORE_DECIMALS,
            "style": {"gt": palette.GT_COLOUR, "gt_halo": palette.GT_HALO, "gt_dash": list(palette.GT_DASH),
                      "ctx": palette.CTX_COLOUR, "ctx_halo": palette.CTX_HALO, "ctx_dash": list(palette.CTX_DASH),
                      "halo": palette.BOX_HALO, "pick_halo": palette.PICK_HALO}}


def _pct(v: Optional[float]) -> str:
    return "-" if v is None else f"{100 * float(v):.1f}"


def metrics_rows(cards: Sequence[Card], methods: Sequence[str], splits: Sequence[str],
                 metrics: Mapping[str, Mapping[str, Mapping[str, Any]]],
                 others: Sequence[str] = ()) -> list[dict[str, Any]]:
    """One row per (split, method): for the gallery's ``methods`` hits counted over the cards,
    with a 95 % interval; ``others`` (metrics.json rows without cards, e.g. ``gt``,
    ``mattnet_dets``) with metrics.json's numbers only."""
    rows = []
    for split in splits:
        mine = [c for c in cards if c.split == split]
        for m in list(methods) + [o for o in others if o not in methods]:
            mm = (metrics.get(m) or {}).get(split) or {}
            if m in methods:
                hits = [float(c.outcomes[m].hit) for c in mine]
                ci = mm.get("hit_rate_ci") or bootstrap_ci(hits)  # evaluate's interval when it wrote one
                rate, n_hits, n = (sum(hits) / len(hits)) if hits else None, int(sum(hits)), len(hits)
            else:
                if not mm:
                    continue
                rate, ci, n = mm.get("hit_rate"), mm.get("hit_rate_ci"), mm.get("n_expressions")
                n_hits = None if rate is None or n is None else int(round(rate * n))
            rows.append({"split": split, "method": m, "hits": n_hits, "n": n, "hit_rate": rate, "ci": ci,
                         "proposals_per_expression": mm.get("proposals_per_expression"),
                         "top1_accuracy": mm.get("top1_accuracy"), "ctx_recall": mm.get("ctx_recall"),
                         "conf": mm.get("conf"), "downstream_accuracy": mm.get("downstream_accuracy"),
                         "downstream_accuracy_ci": mm.get("downstream_accuracy_ci")})
    return rows


_CSS = """
*{box-sizing:border-box}
body{font-family:system-ui,sans-serif;margin:12px;color:#222;line-height:1.35}
h1{font-size:1.35em;margin:0 0 6px}
summary{cursor:pointer;font-size:13px;margin:4px 0}
.note{font-size:13px;margin:4px 0;max-width:70em}
.tablewrap{overflow-x:auto;max-width:100%;margin-bottom:10px}
table{border-collapse:collapse;font-size:13px;white-space:nowrap}
td,th{border:1px solid #ccc;padding:3px 7px;text-align:right}
td:nth-child(-n+2),th{text-align:left}
.sw{display:inline-block;width:22px;height:10px;vertical-align:middle;margin-right:4px}
#bar{position:sticky;top:0;background:#fff;padding:6px 0;border-bottom:1px solid #ddd;z-index:3;font-size:13px}
#bar label{margin-right:10px;white-space:nowrap;display:inline-block}
#bar select,#bar input,#bar button{font-size:13px}
#legend{margin:4px 0}
#legend .item{display:inline-block;margin-right:12px;white-space:nowrap}
#pager{display:inline-block;margin-left:6px}
#pager button{margin:0 3px;min-width:4.5em}
.cards{display:flex;flex-wrap:wrap;gap:10px;margin-top:10px}
.card{border:1px solid #ccc;border-radius:4px;padding:6px;width:min(100%,{width}px);font-size:12px}
.pic{position:relative;width:100%;background:#eee}
.pic img{display:block;width:100%;height:auto}
.pic svg{position:absolute;left:0;top:0;width:100%;height:100%;overflow:visible}
.pic svg .box{cursor:pointer}
.pic svg .box:hover .fg{stroke-width:4px}
.text{font-weight:600;margin:4px 0;overflow-wrap:anywhere}
.meta{color:#555}
.info{min-height:1.3em;color:#000;font-family:ui-monospace,monospace;font-size:11px}
.badge{display:inline-block;border:2px solid;border-radius:3px;padding:0 4px;margin:1px;font-size:11px}
.badge.miss{opacity:.6}
@media (max-width:600px){body{margin:6px}.card{width:100%}}
"""

_JS = r"""
(function(){
  'use strict';
  const D = JSON.parse(document.getElementById('gallery-data').textContent);
  const pageSize = %(page_size)d;
  const NS = 'http://www.w3.org/2000/svg';
  const $ = id => document.getElementById(id);
  const M = D.methods, cards = D.cards;
  const fSplit = $('f-split'), fText = $('f-text');
  const fMethod = M.map((m, j) => $('f-m' + j));
  const lower = cards.map(c => c.t.toLowerCase());
  let page = 0, matched = cards;

  function keep(c, j){ return c.m[j][0]; }
  function test(c, j, v){
    const r = c.m[j];
    if (v === 'h1') return r[1] === 1;
    if (v === 'h0') return r[1] === 0;
    if (v === 'g1') return r[3] === 1;
    if (v === 'g0') return r[3] === 0;
    return true;
  }
  function el(tag, attrs, text){
    const e = document.createElementNS(NS, tag);
    for (const k in attrs) e.setAttribute(k, attrs[k]);
    if (text !== undefined) e.textContent = text;
    return e;
  }
  function dash(d, w){ return d.length ? d.map(x => x * w).join(' ') : 'none'; }
  function rect(g, b, stroke, width, d, halo, cls){
    const a = {x: b[0], y: b[1], width: Math.max(b[2], 0.5), height: Math.max(b[3], 0.5), fill: 'none',
               'vector-effect': 'non-scaling-stroke'};
    g.appendChild(el('rect', Object.assign({}, a, {stroke: halo, 'stroke-width': width + 2, class: 'bg'})));
    g.appendChild(el('rect', Object.assign({}, a, {stroke: stroke, 'stroke-width': width,
      'stroke-dasharray': dash(d, width), class: 'fg' + (cls ? ' ' + cls : '')})));
  }
  function draw(c, card){
    const im = D.images[c.i], W = im[1], H = im[2], pool = im[3];
    const pic = document.createElement('div'); pic.className = 'pic';
    pic.style.aspectRatio = W + ' / ' + H;
    const img = document.createElement('img');
    img.loading = 'lazy'; img.alt = 'image of sent_id ' + c.s; img.src = im[0]; img.width = W; img.height = H;
    pic.appendChild(img);
    const svg = el('svg', {viewBox: '0 0 ' + W + ' ' + H, preserveAspectRatio: 'none'});
    const info = document.createElement('div'); info.className = 'info';
    for (let j = M.length - 1; j >= 0; j--) {   // the first method drawn last (on top)
      if (!shown[j]) continue;                  // toggled off: not built (a toggle redraws the page)
      const m = M[j], ranking = c.r[m.base], K = c.m[j][0], pick = c.m[j][2];
      const g = el('g', {class: 'method m' + j});
      for (let k = K - 1; k >= 0; k--) {
        const bi = ranking[2 * k], s = ranking[2 * k + 1] / D.scale, b = pool.slice(5 * bi, 5 * bi + 4);
        const cat = D.categories[pool[5 * bi + 4]];
        const line = m.name + ' - ' + cat + ' - score ' + s.toFixed(3) + ' - rank ' + (k + 1) + ' of ' + K
          + (k === pick ? ' - second stage pick' : '');
        const bg = el('g', {class: 'box'});
        bg.appendChild(el('title', {}, line));
        rect(bg, b, m.colour, k === 0 ? 3 : 1.5, m.dash, k === pick ? D.style.pick_halo : D.style.halo);
        if (k === pick) bg.appendChild(el('text', {x: b[0] + b[2], y: b[1], 'font-size': Math.max(W, H) / 18,
          'text-anchor': 'middle', fill: m.colour, stroke: D.style.pick_halo, 'stroke-width': Math.max(W, H) / 300,
          'paint-order': 'stroke', class: 'pick'}, '\u2605'));
        bg.addEventListener('click', ev => { info.textContent = line; ev.stopPropagation(); });
        g.appendChild(bg);
      }
      svg.appendChild(g);
    }
    const cx = el('g', {class: 'ctx'});
    for (let k = 0; k < c.c.length; k += 4)
      rect(cx, c.c.slice(k, k + 4), D.style.ctx, 1.5, D.style.ctx_dash, D.style.ctx_halo);
    svg.insertBefore(cx, svg.firstChild);
    if (c.g) { const gt = el('g', {class: 'gt'}); rect(gt, c.g, D.style.gt, 2, D.style.gt_dash, D.style.gt_halo);
      svg.appendChild(gt); }
    pic.appendChild(svg); card.appendChild(pic);
    const t = document.createElement('div'); t.className = 'text'; t.textContent = c.t; card.appendChild(t);
    const meta = document.createElement('div'); meta.className = 'meta';
    meta.textContent = D.splits[c.p] + ' \u00b7 sent_id ' + c.s + ' \u00b7 ';
    if (c.f) { const a = document.createElement('a'); a.href = c.f; a.textContent = 'figure'; meta.appendChild(a); }
    else meta.appendChild(document.createTextNode('no figure'));
    card.appendChild(meta);
    const badges = document.createElement('div');
    M.forEach((m, j) => {
      const r = c.m[j], b = document.createElement('span');
      b.className = 'badge ' + (r[1] ? 'hit' : 'miss'); b.style.borderColor = m.colour;
      b.textContent = m.name + ' ' + (r[1] ? 'hit' : 'miss') + ' (' + r[0] + ')'
        + (r[3] < 0 ? '' : (r[3] ? ' \u00b7 2nd \u2713' : ' \u00b7 2nd \u2717'));
      badges.appendChild(b);
    });
    card.appendChild(badges); card.appendChild(info);
  }
  function render(scroll){
    const pages = Math.max(1, Math.ceil(matched.length / pageSize));
    page = Math.min(Math.max(page, 0), pages - 1);
    const box = $('cards'); box.textContent = '';
    for (const c of matched.slice(page * pageSize, (page + 1) * pageSize)) {
      const card = document.createElement('div'); card.className = 'card';
      card.dataset.sentId = c.s; card.dataset.split = D.splits[c.p];
      draw(c, card); box.appendChild(card);
    }
    $('count').textContent = matched.length + ' of ' + cards.length + ' expressions; page ' + (page + 1) + ' of ' + pages;
    $('prev').disabled = page === 0; $('next').disabled = page >= pages - 1;
    const want = '#page=' + (page + 1);
    if (location.hash !== want) history.replaceState(null, '', want);
    if (scroll) {
      const bar = $('bar').getBoundingClientRect().height;
      window.scrollTo(0, box.getBoundingClientRect().top + window.scrollY - bar - 4);
    }
  }
  function apply(){
    const q = fText.value.trim().toLowerCase(), sp = fSplit.value;
    const fs = fMethod.map(f => f.value);
    matched = cards.filter((c, n) => (sp === '' || String(c.p) === sp) && (!q || lower[n].includes(q))
      && fs.every((v, j) => !v || test(c, j, v)));
  }
  function go(p){ page = p; render(true); }
  fSplit.onchange = fText.oninput = () => { apply(); go(0); };
  fMethod.forEach(f => f.onchange = () => { apply(); go(0); });
  $('prev').onclick = () => go(page - 1);
  $('next').onclick = () => go(page + 1);
  const shown = M.map((m, j) => $('t-m' + j).checked);
  M.forEach((m, j) => { $('t-m' + j).onchange = ev => { shown[j] = ev.target.checked; render(false); }; });
  window.addEventListener('hashchange', () => {
    const h = /^#page=(\d+)$/.exec(location.hash);
    if (h && +h[1] - 1 !== page) go(+h[1] - 1);
  });
  apply();
  const h = /^#page=(\d+)$/.exec(location.hash);
  page = h ? +h[1] - 1 : 0;
  render(false);
  document.body.dataset.ready = '1';
})();
"""


def _json_for_script(obj: Any) -> str:
    """JSON that cannot end its ``<script>`` element early (``<``, ``>``, ``&`` escaped)."""
    return (json.dumps(obj, separators=(",", ":"), ensure_ascii=False)
            .replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
            .replace("\u2028", "\\u2028").replace("\u2029", "\\u2029"))


def _swatch(colour: str, dash: Sequence[float], halo: str, width: float = 2.0) -> str:
    d = " ".join(f"{x * width:g}" for x in dash) or "none"
    return (f"<svg class='sw' viewBox='0 0 22 10' aria-hidden='true'>"
            f"<line x1='1' y1='5' x2='21' y2='5' stroke='{halo}' stroke-width='{width + 2:g}'/>"
            f"<line x1='1' y1='5' x2='21' y2='5' stroke='{colour}' stroke-width='{width:g}' stroke-dasharray='{d}'/>"
            "</svg>")


def write_gallery(path: Path, cards: Sequence[Card], methods: Sequence[MethodView], splits: Sequence[str],
                  images: Sequence[tuple[str, int, int]], categories: Sequence[str],
                  metrics: Mapping[str, Any], title: str, page_size: int = 60, card_px: int = 360,
                  notes: Optional[list[str]] = None, other_rows: Sequence[str] = (), open_rows: int = 15) -> Path:
    """Write the page (atomically).

    Args:
        cards: in display order (their ``image`` indexes ``images``; ``figure`` relative to the page).
        images: ``(url relative to the page, width, height)`` per image.
        categories: category names, indexed by :class:`MethodOutcome` ``categories``.
        metrics: ``eval/metrics.json``; ``other_rows``: its rows without cards shown in the table.
        card_px: width of a card on a wide screen.
        open_rows: the metrics table starts unfolded up to this many rows (folded beyond, so
            that the cards stay near the top).
    """
    e = html.escape
    names = [m.name for m in methods]
    out = ["<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
           "<meta name='viewport' content='width=device-width, initial-scale=1'>",
           f"<title>{e(title)}</title><style>{_CSS.replace('{width}', str(int(card_px)))}</style></head><body>",
           f"<h1>{e(title)}</h1>"]
    for note in notes or []:
        out.append(f"<p class='note'>{e(note)}</p>")
    rows = metrics_rows(cards, names, splits, metrics, other_rows)
    is_open = " open" if len(rows) <= open_rows else ""
    out.append(f"<details{is_open}><summary>metrics: {len(rows)} rows (split x method)</summary>"
               "<div class='tablewrap'><table id='metrics'><tr><th>split</th><th>method</th>"
               "<th>hit rate (%) [95% CI]</th><th>hits / n</th><th>proposals / expr</th><th>top-1 (%)</th>"
               "<th>ctx recall (%)</th><th>conf</th><th>2nd stage acc. (%) [95% CI]</th></tr>")
    for r in rows:
        ci = f" [{_pct(r['ci'][0])}, {_pct(r['ci'][1])}]" if r["ci"] else ""
        dci = r["downstream_accuracy_ci"]
        dci = f" [{_pct(dci[0])}, {_pct(dci[1])}]" if dci else ""
        ppe = "-" if r["proposals_per_expression"] is None else f"{r['proposals_per_expression']:.2f}"
        conf = "-" if r["conf"] is None else f"{r['conf']:.3g}"
        hn = "-" if r["hits"] is None else f"{r['hits']} / {r['n']}"
        st = palette.method_style(r["method"])
        sw = _swatch(st.colour, st.dash or (), palette.BOX_HALO) if r["method"] in names else ""
        out.append(f"<tr data-method='{e(r['method'])}' data-split='{e(r['split'])}'><td>{e(r['split'])}</td>"
                   f"<td>{sw}{e(r['method'])}</td><td>{_pct(r['hit_rate'])}{ci}</td><td>{hn}</td><td>{ppe}</td>"
                   f"<td>{_pct(r['top1_accuracy'])}</td><td>{_pct(r['ctx_recall'])}</td><td>{conf}</td>"
                   f"<td>{_pct(r['downstream_accuracy'])}{dci}</td></tr>")
    out.append("</table></div></details>")
    out.append("<div id='bar'><div><label>split <select id='f-split'><option value=''>all</option>"
               + "".join(f"<option value='{i}'>{e(s)}</option>" for i, s in enumerate(splits)) + "</select></label>")
    for j, m in enumerate(methods):
        second = ("<option value='g1'>2nd stage right</option><option value='g0'>2nd stage wrong</option>"
                  if m.second_stage else "")
        out.append(f"<label>{e(m.name)} <select id='f-m{j}' data-method='{e(m.name)}'><option value=''>any</option>"
                   f"<option value='h1'>hit</option><option value='h0'>miss</option>{second}</select></label>")
    out.append("<label>text <input id='f-text' type='search' placeholder='search the expressions'></label>"
               "<span id='pager'><button id='prev'>&lsaquo; prev</button><button id='next'>next &rsaquo;</button>"
               "</span> <span id='count'></span></div>")
    legend = [f"<span class='item'>{_swatch(palette.GT_COLOUR, palette.GT_DASH, palette.GT_HALO)}ground truth</span>",
              f"<span class='item'>{_swatch(palette.CTX_COLOUR, palette.CTX_DASH, palette.CTX_HALO, 1.5)}"
              "context objects</span>",
              "<span class='item'>thick: top-1</span>",
              "<span class='item'>&#9733; second stage's pick</span>"]
    for j, m in enumerate(methods):
        st = palette.method_style(m.name)
        checked = " checked" if m.visible else ""
        legend.append(f"<label class='item'><input type='checkbox' id='t-m{j}'{checked}>"
                      f"{_swatch(st.colour, st.dash or (), palette.BOX_HALO)}{e(m.name)}</label>")
    out.append("<div id='legend'>" + "".join(legend) + "</div></div>")
    out.append("<div class='cards' id='cards'></div>")
    data = page_data(cards, methods, splits, images, categories)
    out.append(f"<script type='application/json' id='gallery-data'>{_json_for_script(data)}</script>")
    out.append(f"<script>{_JS % {'page_size': int(page_size)}}</script></body></html>")
    path = Path(path)
    atomic_write_text(path, "\n".join(out))
    return path

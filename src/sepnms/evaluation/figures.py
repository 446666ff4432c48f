"""Qualitative figures: the proposals of several methods for one expression, side by side.

One panel per method over the same image (never distorted: each panel has the image's aspect
ratio), a title band with the split, sent_id and the expression, and a legend band at the bottom.
Colours and line styles come from :mod:`sepnms.evaluation.palette` (the same in every output):
the ground-truth referent black dashes over a white halo (``GT_COLOUR``, exact pixels: not
antialiased), context objects white dots over a black halo, each kept proposal in the method's
colour over a black halo with ``category score`` (fused score), the top-1 thicker with a ``#1``
tag, the second stage's pick (when given) with a white halo and a star.  Labels are placed
greedily so that they do not cover each other.  Where a method's scores leave [0, 1] (Sep-NMS's
fused score can exceed 1) the legend band says they are not probabilities.

Layout (pixels, at ``dpi``), so a figure's geometry is known without reading it back: every panel
is ``pw x ph`` with ``s = panel_px / max(W, H)``, ``pw = round(W * s)``, ``ph = round(H * s)``;
panel ``i`` starts at ``x = i * (pw + GAP_PX)``, below a title band of ``title_px`` pixels and
above a caption band of ``CAPTION_PX`` and a legend band of ``legend_px``; the figure is
``n * pw + (n - 1) * GAP_PX`` by ``title_px + ph + CAPTION_PX + legend_px``.  Image pixel (x, y)
lands at panel pixel (x * pw / W, y * ph / H).

Pure drawing: the caller (``sepnms.engine.look.show``) gathers boxes and scores.  matplotlib's object
API on an Agg canvas; PNGs written atomically.
"""
from __future__ import annotations

import textwrap
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Rectangle

from sepnms.evaluation import palette
from sepnms.io.atomic import atomic_path

GT_COLOUR = palette.GT_COLOUR
GAP_PX = 8
CAPTION_PX = 22
LEGEND_PX = 34


@dataclass
class Panel:
    """The kept proposals of one method for one expression.

    ``boxes`` [K, 4] xyxy image pixels by descending fused score (row 0 = top-1); ``labels`` K
    category names; ``scores`` [K] fused scores; ``hit``: a kept proposal hits the referent.
    """

    method: str
    boxes: np.ndarray
    labels: list[str]
    scores: np.ndarray
    hit: Optional[bool] = None
    note: str = ""
    pick: Optional[int] = None  # row of ``boxes`` the second stage chose (None: no second stage)
    pick_hit: Optional[bool] = None  # the second stage's answer hits the referent (IoU >= 0.5)
    extra: dict = field(default_factory=dict)


def panel_geometry(width: int, height: int, panel_px: int) -> tuple[int, int]:
    """(pw, ph): the panel size in pixels of a ``width`` x ``height`` image (see the module doc)."""
    s = panel_px / max(width, height)
    return max(1, round(width * s)), max(1, round(height * s))


def figure_size(width: int, height: int, n_panels: int, panel_px: int, title_px: int,
                legend_px: int = LEGEND_PX) -> tuple[int, int]:
    """(figure width, figure height) in pixels."""
    pw, ph = panel_geometry(width, height, panel_px)
    return n_panels * pw + (n_panels - 1) * GAP_PX, title_px + ph + CAPTION_PX + legend_px


def not_probability_note(panels: Sequence["Panel"]) -> str:
    """A sentence naming the methods whose scores leave [0, 1] ("" when none do)."""
    out = []
    for p in panels:
        s = np.asarray(p.scores, np.float64)
        if s.size and (s.max() > 1.0 or s.min() < 0.0):
            out.append(f"{p.method} (up to {s.max():.2f})")
    if not out:
        return ""
    return "Fused scores, not probabilities: " + ", ".join(out) + "."


def _legend_handles(panels: Sequence["Panel"], has_gt: bool, has_ctx: bool) -> list[Line2D]:
    import matplotlib.patheffects as pe

    def halo(colour: str, width: float) -> list:
        return [pe.Stroke(linewidth=width + 2.0, foreground=colour), pe.Normal()]

    handles = []
    if has_gt:
        handles.append(Line2D([], [], color=palette.GT_COLOUR, linewidth=2.0, linestyle=palette.mpl_dash(palette.GT_DASH),
                              path_effects=halo(palette.GT_HALO, 2.0), label="ground truth"))
    if has_ctx:
        handles.append(Line2D([], [], color=palette.CTX_COLOUR, linewidth=1.5,
                              linestyle=palette.mpl_dash(palette.CTX_DASH), path_effects=halo(palette.CTX_HALO, 1.5),
                              label="context objects"))
    for p in panels:
        st = palette.method_style(p.method)
        handles.append(Line2D([], [], color=st.colour, linewidth=2.0, linestyle=palette.mpl_dash(st.dash),
                              path_effects=halo(palette.BOX_HALO, 2.0), label=p.method))
    if any(p.pick is not None for p in panels):
        handles.append(Line2D([], [], color="#333333", marker="*", markersize=8, linestyle="none",
                              markeredgecolor=palette.PICK_HALO, label="second stage's pick"))
    return handles


def _overlaps(a, b) -> bool:
    return not (a[2] <= b[0] or b[2] <= a[0] or a[3] <= b[1] or b[3] <= a[1])


def _place_labels(ax, renderer, items, pw: int, ph: int, sx: float, sy: float, fontsize: float) -> None:
    """Greedy placement of ``(text, colour, box)`` labels in panel pixels: for each label (best
    proposal first) try above the box's top-left corner, inside it, below it, then slide down
    the panel until the label overlaps no placed label; it always stays inside the panel."""
    placed: list[tuple[float, float, float, float]] = []
    for text, colour, box in items:
        t = ax.text(0, 0, text, fontsize=fontsize, color=palette.text_on(colour), va="top", ha="left",
                    bbox={"facecolor": colour, "edgecolor": "none", "pad": 1.0, "alpha": 0.85})
        ext = t.get_window_extent(renderer)
        pad = renderer.points_to_pixels(1.0)  # the label box's pad on every side
        w, h = ext.width + 2 * pad + 1, ext.height + 2 * pad + 1
        x0, y0, x1, y1 = box[0] * sx, box[1] * sy, box[2] * sx, box[3] * sy
        tries = [(x0, y0 - h), (x0, y0), (x0, y1), (x1 - w, y0 - h)]
        tries += [(x0, y) for y in np.arange(0, ph, max(2.0, h / 2))]
        tries += [(x, y) for y in np.arange(0, ph, max(2.0, h / 2)) for x in np.arange(0, pw, max(2.0, w / 2))]
        spot = None
        for tx, ty in tries:
            tx, ty = min(max(tx, 0.0), max(pw - w, 0.0)), min(max(ty, 0.0), max(ph - h, 0.0))
            rect = (tx, ty, tx + w, ty + h)
            if not any(_overlaps(rect, p) for p in placed):
                spot = rect
                break
        if spot is None:  # a crowded panel: leave the remaining proposals unlabelled
            t.remove()
            continue
        placed.append(spot)
        t.set_position(((spot[0] + pad) / sx, (spot[1] + pad) / sy))


def draw_expression(
    image: np.ndarray, title: str, gt_box: Optional[Sequence[float]], ctx_boxes: np.ndarray,
    panels: list[Panel], out: str | Path, panel_px: int = 384, title_px: int = 48, dpi: int = 100,
    fontsize: float = 7.0, max_labels: int = 12, heading: str = "", legend_px: int = LEGEND_PX,
) -> Path:
    """Write the figure of one expression as PNG (:func:`expression_figure`'s arguments);
    returns ``out``."""
    fig = expression_figure(image, title, gt_box, ctx_boxes, panels, panel_px, title_px, dpi, fontsize, max_labels,
                            heading, legend_px)
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png", dpi=dpi)
    return path


def expression_figure(
    image: np.ndarray, title: str, gt_box: Optional[Sequence[float]], ctx_boxes: np.ndarray,
    panels: list[Panel], panel_px: int = 384, title_px: int = 48, dpi: int = 100,
    fontsize: float = 7.0, max_labels: int = 12, heading: str = "", legend_px: int = LEGEND_PX,
) -> Figure:
    """The figure of one expression (see the module doc for the layout), on an Agg canvas.

    Args:
        image: [H, W, 3] uint8 RGB.
        title: the expression.
        gt_box: [4] xyxy referent box, or None (e.g. a free-form ``predict`` expression).
        ctx_boxes: [C, 4] xyxy context boxes (C may be 0).
        panels: one per method, drawn left to right.
        max_labels: at most this many proposals per panel get a text label (all are drawn).
        heading: put before the expression in the title (e.g. ``val - sent_id 12``).
        legend_px: height of the legend band (0: no legend).

    Returns the matplotlib Figure.
    """
    import matplotlib.patheffects as pe

    if not panels:
        raise ValueError("draw_expression needs at least one panel")
    img = np.asarray(image)
    height, width = img.shape[:2]
    pw, ph = panel_geometry(width, height, panel_px)
    fw, fh = figure_size(width, height, len(panels), panel_px, title_px, legend_px)
    sx, sy = pw / width, ph / height
    fig = Figure(figsize=(fw / dpi, fh / dpi), dpi=dpi)
    canvas = FigureCanvasAgg(fig)
    renderer = canvas.get_renderer()
    chars = max(20, int(fw / (0.62 * fontsize * 1.4 * dpi / 72)))
    if title_px > 0:
        text = (f"{heading}: " if heading else "") + f'"{title}"'
        fig.text(0.5, 1 - 4 / fh, "\n".join(textwrap.wrap(text, chars)[:2]), ha="center", va="top",
                 fontsize=fontsize * 1.4)
    ctx = np.asarray(ctx_boxes, dtype=np.float64).reshape(-1, 4)
    bottom = CAPTION_PX + legend_px
    for i, p in enumerate(panels):
        left = i * (pw + GAP_PX)
        ax = fig.add_axes((left / fw, bottom / fh, pw / fw, ph / fh))
        ax.imshow(img, extent=(0, width, height, 0), interpolation="bilinear", aspect="auto")
        ax.set_xlim(0, width)
        ax.set_ylim(height, 0)
        ax.set_axis_off()
        style = palette.method_style(p.method)
        boxes = np.asarray(p.boxes, dtype=np.float64).reshape(-1, 4)
        for k in range(len(boxes) - 1, -1, -1):  # top-1 drawn last (on top)
            x0, y0, x1, y1 = boxes[k]
            lw = 3.0 if k == 0 else 1.4
            halo = palette.PICK_HALO if k == p.pick else palette.BOX_HALO
            ax.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, edgecolor=style.colour, linewidth=lw,
                                   linestyle=palette.mpl_dash(style.dash),
                                   path_effects=[pe.Stroke(linewidth=lw + 2.0, foreground=halo), pe.Normal()]))
        if p.pick is not None and 0 <= p.pick < len(boxes):
            b = boxes[p.pick]
            ax.plot([b[2]], [b[1]], marker="*", markersize=11, color=style.colour, markeredgecolor=palette.PICK_HALO,
                    markeredgewidth=1.0, zorder=6)
        for c in ctx:
            ax.add_patch(Rectangle((c[0], c[1]), c[2] - c[0], c[3] - c[1], fill=False, edgecolor=palette.CTX_COLOUR,
                                   linewidth=1.5, linestyle=palette.mpl_dash(palette.CTX_DASH),
                                   path_effects=[pe.Stroke(linewidth=3.5, foreground=palette.CTX_HALO), pe.Normal()]))
        if gt_box is not None:
            g = [float(v) for v in gt_box]
            # not antialiased: its pixels carry exactly GT_COLOUR (tests read them back)
            ax.add_patch(Rectangle((g[0], g[1]), g[2] - g[0], g[3] - g[1], fill=False, edgecolor=palette.GT_HALO,
                                   linewidth=4.0, antialiased=False, zorder=5))
            ax.add_patch(Rectangle((g[0], g[1]), g[2] - g[0], g[3] - g[1], fill=False, edgecolor=palette.GT_COLOUR,
                                   linewidth=2.0, linestyle=palette.mpl_dash(palette.GT_DASH), antialiased=False,
                                   zorder=5))
        items = [(("#1 " if k == 0 else "") + f"{p.labels[k]} {float(p.scores[k]):.2f}", style.colour, boxes[k])
                 for k in range(min(len(boxes), max_labels))]
        _place_labels(ax, renderer, items, pw, ph, sx, sy, fontsize)
        outcome = "" if p.hit is None else (" - hit" if p.hit else " - miss")
        second = "" if p.pick_hit is None else (", 2nd stage right" if p.pick_hit else ", 2nd stage wrong")
        fig.text((left + pw / 2) / fw, (legend_px + 3) / fh, f"{p.method}{outcome} ({len(boxes)} kept{second}){p.note}",
                 ha="center", va="bottom", fontsize=fontsize * 1.2, color="#222222", fontweight="bold")
    if legend_px > 0:
        handles = _legend_handles(panels, gt_box is not None, len(ctx) > 0)
        fig.legend(handles=handles, loc="lower left", bbox_to_anchor=(0.0, 14 / fh), ncol=min(len(handles), 6),
                   fontsize=fontsize, frameon=False, handlelength=2.6, columnspacing=1.0, borderaxespad=0.0)
        note = not_probability_note(panels)
        if note:
            fig.text(2 / fw, 2 / fh, note, ha="left", va="bottom", fontsize=fontsize, style="italic", color="#444444")
    return fig

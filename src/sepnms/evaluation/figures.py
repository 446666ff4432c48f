"""Qualitative figures: the proposals of several methods for one expression, side by side.

One panel per method over the same image (never distorted: each panel has the image's aspect
ratio), the expression as title.  In every panel: the ground-truth referent as a dashed outline
(``GT_COLOUR``), the context objects dotted (``CTX_COLOUR``), each kept proposal in the method's
colour with ``category score`` (fused score), the top-1 proposal drawn thicker with a ``#1`` tag.
Labels are placed greedily so that they do not cover each other.

Layout (pixels, at ``dpi``), so a figure's geometry is known without reading it back: every panel
is ``pw x ph`` with ``s = panel_px / max(W, H)``, ``pw = round(W * s)``, ``ph = round(H * s)``;
panel ``i`` starts at ``x = i * (pw + GAP_PX)``, below a title band of ``title_px`` pixels and
above a caption band of ``CAPTION_PX``; the figure is ``n * pw + (n - 1) * GAP_PX`` by
``title_px + ph + CAPTION_PX``.  Image pixel (x, y) lands at panel pixel (x * pw / W, y * ph / H).

Pure drawing: the caller (``sepnms.engine.show``) gathers boxes and scores.  matplotlib's object
API on an Agg canvas; PNGs written atomically.
"""
from __future__ import annotations

import textwrap
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from sepnms.io.atomic import atomic_path

GT_COLOUR = "#00ff00"
CTX_COLOUR = "#00e5ff"
#: fixed colours of the standard methods; other names get one of ``_EXTRA`` by a stable hash
METHOD_COLOURS = {
    "det": "#7f7f7f",
    "refnms": "#1f77b4",
    "sepnms": "#d62728",
    "sepnms_clipctx": "#ff7f0e",
    "sepnms_clipctx_clipfuse": "#9467bd",
}
_EXTRA = ("#8c564b", "#e377c2", "#bcbd22", "#17becf", "#393b79", "#843c39")
GAP_PX = 8
CAPTION_PX = 22


def method_colour(name: str) -> str:
    """The colour of a method, the same in every figure and in the gallery."""
    return METHOD_COLOURS.get(name) or _EXTRA[zlib.crc32(name.encode()) % len(_EXTRA)]


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
    extra: dict = field(default_factory=dict)


def panel_geometry(width: int, height: int, panel_px: int) -> tuple[int, int]:
    """(pw, ph): the panel size in pixels of a ``width`` x ``height`` image (see the module doc)."""
    s = panel_px / max(width, height)
    return max(1, round(width * s)), max(1, round(height * s))


def figure_size(width: int, height: int, n_panels: int, panel_px: int, title_px: int) -> tuple[int, int]:
    """(figure width, figure height) in pixels."""
    pw, ph = panel_geometry(width, height, panel_px)
    return n_panels * pw + (n_panels - 1) * GAP_PX, title_px + ph + CAPTION_PX


def _overlaps(a, b) -> bool:
    return not (a[2] <= b[0] or b[2] <= a[0] or a[3] <= b[1] or b[3] <= a[1])


def _place_labels(ax, renderer, items, pw: int, ph: int, sx: float, sy: float, fontsize: float) -> None:
    """Greedy placement of ``(text, colour, box)`` labels in panel pixels: for each label (best
    proposal first) try above the box's top-left corner, inside it, below it, then slide down
    the panel until the label overlaps no placed label; it always stays inside the panel."""
    placed: list[tuple[float, float, float, float]] = []
    for text, colour, box in items:
        t = ax.text(0, 0, text, fontsize=fontsize, color="white", va="top", ha="left",
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
    fontsize: float = 7.0, max_labels: int = 12,
) -> Path:
    """Write the figure of one expression (see the module doc for the layout).

    Args:
        image: [H, W, 3] uint8 RGB.
        gt_box: [4] xyxy referent box, or None (e.g. a free-form ``predict`` expression).
        ctx_boxes: [C, 4] xyxy context boxes (C may be 0).
        panels: one per method, drawn left to right.
        max_labels: at most this many proposals per panel get a text label (all are drawn).

    Returns ``out`` (PNG).
    """
    if not panels:
        raise ValueError("draw_expression needs at least one panel")
    img = np.asarray(image)
    height, width = img.shape[:2]
    pw, ph = panel_geometry(width, height, panel_px)
    fw, fh = figure_size(width, height, len(panels), panel_px, title_px)
    sx, sy = pw / width, ph / height
    fig = Figure(figsize=(fw / dpi, fh / dpi), dpi=dpi)
    canvas = FigureCanvasAgg(fig)
    renderer = canvas.get_renderer()
    chars = max(20, int(fw / (0.62 * fontsize * 1.4 * dpi / 72)))
    if title_px > 0:  # thumbnails (title_px=0) leave the expression to the page
        fig.text(0.5, 1 - 4 / fh, "\n".join(textwrap.wrap(f'"{title}"', chars)[:2]), ha="center", va="top",
                 fontsize=fontsize * 1.4)
    ctx = np.asarray(ctx_boxes, dtype=np.float64).reshape(-1, 4)
    for i, p in enumerate(panels):
        left = i * (pw + GAP_PX)
        ax = fig.add_axes((left / fw, CAPTION_PX / fh, pw / fw, ph / fh))
        ax.imshow(img, extent=(0, width, height, 0), interpolation="bilinear", aspect="auto")
        ax.set_xlim(0, width)
        ax.set_ylim(height, 0)
        ax.set_axis_off()
        colour = method_colour(p.method)
        boxes = np.asarray(p.boxes, dtype=np.float64).reshape(-1, 4)
        for k in range(len(boxes) - 1, -1, -1):  # top-1 drawn last (on top)
            x0, y0, x1, y1 = boxes[k]
            ax.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, edgecolor=colour,
                                   linewidth=3.0 if k == 0 else 1.2, alpha=1.0 if k == 0 else 0.8))
        for c in ctx:
            ax.add_patch(Rectangle((c[0], c[1]), c[2] - c[0], c[3] - c[1], fill=False, edgecolor=CTX_COLOUR,
                                   linewidth=1.5, linestyle=(0, (1, 2))))
        if gt_box is not None:
            g = [float(v) for v in gt_box]
            # not antialiased: its pixels carry exactly GT_COLOUR (tests read them back)
            ax.add_patch(Rectangle((g[0], g[1]), g[2] - g[0], g[3] - g[1], fill=False, edgecolor=GT_COLOUR,
                                   linewidth=2.0, linestyle=(0, (4, 3)), antialiased=False, zorder=5))
        items = [(("#1 " if k == 0 else "") + f"{p.labels[k]} {float(p.scores[k]):.2f}", colour, boxes[k])
                 for k in range(min(len(boxes), max_labels))]
        _place_labels(ax, renderer, items, pw, ph, sx, sy, fontsize)
        outcome = "" if p.hit is None else (" - hit" if p.hit else " - miss")
        fig.text((left + pw / 2) / fw, 3 / fh, f"{p.method}{outcome} ({len(boxes)} kept){p.note}", ha="center",
                 va="bottom", fontsize=fontsize * 1.2, color=colour, fontweight="bold")
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png", dpi=dpi)
    return path

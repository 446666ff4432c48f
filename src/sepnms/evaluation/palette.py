"""The one palette of every output: sweep curves, ``show`` figures, the gallery and the report.

Method colours are five colours of the Okabe-Ito, Paul Tol "bright" and "muted" sets, chosen so
that every pair stays distinct (CIELAB distance >= 30) for normal vision and under simulated
deuteranopia, protanopia and tritanopia (Machado et al. 2009, severity 1), and that each is at
least 25 CIELAB units from every named colour the embedded world paints its objects with
(``sepnms.world.content.PALETTE``) and from the world's grey backgrounds.  Colour alone cannot
keep a box apart from *every* object under colour-vision deficiency (the six world hues cover
the simulated gamuts), so every drawn box also has a halo (a wider contrasting band under it):

- ground-truth referent: black long dashes over a white halo;
- context objects: white dots over a near-black halo (``#1A1A1A``: only the GT outline is pure black);
- a method's kept proposals: its colour, solid, over a near-black halo; the top-1 thicker; the
  second stage's pick (MAttNet's answer among them) with a white halo and a star.

The demo's ablation rows ``ablation_<labels>_<rule>`` take the colour of the demo method that
uses the same fusion rule (``RULE_COLOURS``), dashed for GloVe labels and dash-dotted for
CLIP-dagger labels.  Other methods (``name=model:rule`` methods) take one of ``EXTRA_COLOURS`` by
a stable hash and are drawn dashed; ``M@X`` (method M at another operating point, e.g.
``sepnms@mattnet_dets``) takes M's style, dotted.
"""
from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import Optional

#: fixed colours of the demo's methods (hex sRGB)
METHOD_COLOURS: dict[str, str] = {
    "det": "#DDCC77",                       # Tol muted sand
    "refnms": "#0072B2",                    # Okabe-Ito blue
    "sepnms": "#D55E00",                    # Okabe-Ito vermillion
    "sepnms_clipctx": "#66CCEE",            # Tol bright cyan
    "sepnms_clipctx_clipfuse": "#882255",   # Tol muted wine
}
#: the colour of a fusion rule in the demo's ablation rows (that of the demo method using it)
RULE_COLOURS: dict[str, str] = {"refnms": METHOD_COLOURS["refnms"], "sep": METHOD_COLOURS["sepnms"],
                                "sep+clip": METHOD_COLOURS["sepnms_clipctx_clipfuse"]}
#: colours of the other methods (by a stable hash of the name; drawn dashed)
EXTRA_COLOURS: tuple[str, ...] = ("#009E73", "#AA4499", "#999933", "#EE3377", "#56B4E9", "#44AA99")

GT_COLOUR = "#000000"
GT_HALO = "#FFFFFF"
CTX_COLOUR = "#FFFFFF"
CTX_HALO = "#1A1A1A"  # not pure black: only the GT outline has exactly GT_COLOUR
BOX_HALO = "#1A1A1A"
PICK_HALO = "#FFFFFF"

#: dash patterns in units of the line width (matplotlib ``(offset, (on, off, ...))``, SVG
#: ``stroke-dasharray`` after multiplying by the width)
GT_DASH: tuple[float, ...] = (4.0, 2.5)
CTX_DASH: tuple[float, ...] = (1.0, 1.5)
EXTRA_DASH: tuple[float, ...] = (5.0, 2.0)
LABELS_DASH: dict[str, tuple[float, ...]] = {"glove": (5.0, 2.0), "clip": (4.0, 1.5, 1.0, 1.5)}
VARIANT_DASH: tuple[float, ...] = (1.5, 1.5)


@dataclass(frozen=True)
class MethodStyle:
    """How a method's boxes are drawn: ``colour`` hex; ``dash`` None (solid) or on/off lengths
    in line widths."""

    colour: str
    dash: Optional[tuple[float, ...]]


def base_method(name: str) -> str:
    """``sepnms@mattnet_dets`` -> ``sepnms``: the method whose fused table an ``M@X`` row reads."""
    return name.split("@", 1)[0]


def method_style(name: str) -> MethodStyle:
    """The style of a method, the same in every output."""
    base = base_method(name)
    if base in METHOD_COLOURS:
        return MethodStyle(METHOD_COLOURS[base], VARIANT_DASH if base != name else None)
    parts = base.split("_", 2)
    if len(parts) == 3 and parts[0] == "ablation" and parts[1] in LABELS_DASH and parts[2] in RULE_COLOURS:
        return MethodStyle(RULE_COLOURS[parts[2]], VARIANT_DASH if base != name else LABELS_DASH[parts[1]])
    colour = EXTRA_COLOURS[zlib.crc32(base.encode()) % len(EXTRA_COLOURS)]
    return MethodStyle(colour, VARIANT_DASH if base != name else EXTRA_DASH)


def method_colour(name: str) -> str:
    """The colour of a method (see :func:`method_style`)."""
    return method_style(name).colour


def mpl_dash(dash: Optional[tuple[float, ...]]):
    """A matplotlib ``linestyle`` for a dash pattern (None: solid)."""
    return "-" if dash is None else (0, dash)


def svg_dash(dash: Optional[tuple[float, ...]], width: float) -> str:
    """An SVG ``stroke-dasharray`` value for a dash pattern at ``width`` (``""``: solid)."""
    return "" if dash is None else " ".join(f"{d * width:g}" for d in dash)


def hex_rgb(colour: str) -> tuple[int, int, int]:
    """``#rrggbb`` -> (r, g, b) in 0..255."""
    c = colour.lstrip("#")
    return int(c[0:2], 16), int(c[2:4], 16), int(c[4:6], 16)


def text_on(colour: str) -> str:
    """Black or white, whichever reads better on ``colour`` (WCAG relative luminance)."""
    lin = [c / 255 / 12.92 if c / 255 <= 0.04045 else ((c / 255 + 0.055) / 1.055) ** 2.4 for c in hex_rgb(colour)]
    lum = 0.2126 * lin[0] + 0.7152 * lin[1] + 0.0722 * lin[2]
    return "#111111" if (lum + 0.05) / 0.05 > 1.05 / (lum + 0.05) else "#FFFFFF"  # not GT_COLOUR

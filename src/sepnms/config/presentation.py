"""What is shown to a reader: figures (``show``: ``sepnms show``) and the HTML page
(``gallery``: ``sepnms gallery``)."""
from __future__ import annotations

from typing import Annotated, Literal, Optional

from pydantic import Field

from sepnms.config.fields import NonNegInt, PosInt, Section


class ShowConfig(Section):
    """``sepnms show``: qualitative figures, one PNG per expression (``<workdir>/show/<split>/``)."""

    methods: list[str] = Field(default_factory=lambda: ["det", "refnms", "sepnms"])
    """Fused methods drawn side by side (those without a fused table are skipped unless named
    on the command line)."""
    split: Optional[str] = None
    """Default: the first of ``evaluate.splits``."""
    n: PosInt = 40
    select: Literal["all", "hits", "misses", "disagree"] = "all"
    """``hits`` / ``misses``: the last method hits / misses the referent; ``disagree``: the
    methods' hit/miss differ."""
    panel_px: Annotated[int, Field(ge=32, strict=True)] = 384
    """Longer side of each panel, in pixels."""
    dpi: Annotated[int, Field(ge=10, strict=True)] = 100
    max_labels: NonNegInt = 12
    demo_n: NonNegInt = 4
    """``sepnms demo`` writes this many figures per evaluated split (``disagree`` selection: the
    first expressions on which the methods' outcomes differ); the gallery links to them."""


class GalleryConfig(Section):
    """``sepnms gallery``: one static HTML page over an evaluation (``<workdir>/gallery/index.html``)."""

    methods: Optional[list[str]] = None
    """Default: every method ``evaluate`` scored (``M@X`` rows of metrics.json included)."""
    splits: Optional[list[str]] = None
    """Default: ``evaluate.splits``."""
    visible: Optional[list[str]] = None
    """Methods whose boxes are shown when the page opens (the others have their toggle off).
    Default: ``show.methods``."""
    card_px: Annotated[int, Field(ge=120, strict=True)] = 360
    """Width of a card on a wide screen, in CSS pixels (the image scales with it)."""
    page_size: PosInt = 60
    """Cards per page of the page's pager."""

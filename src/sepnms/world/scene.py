"""The scene model of the embedded world: data only, no sampling.

* :class:`WorldObject` - one object: category, colour, size, RGB, nominal and rendered boxes,
  its label map and annotation id;
* :class:`Expression` - one referring expression: template, words, the context objects it names;
* :class:`Scene` - one image before painting: size, background, objects, the referents and their
  expressions.

``sepnms.world.layout`` samples scenes, ``sepnms.world.expressions`` describes their objects.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from sepnms.world.content import WORLD_CATEGORIES, WorldCategory


@dataclass
class WorldObject:
    """One object of a scene.  ``box``: xyxy from the rendered mask (pixel-edge convention)."""

    kind: int  # index into WORLD_CATEGORIES
    color: str
    size: str  # "small" | "big"
    rgb: tuple[float, float, float]
    nominal: tuple[float, float, float, float]
    box: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 0.0)
    labels: Optional[np.ndarray] = None
    ann_id: int = -1

    @property
    def cat(self) -> WorldCategory:
        return WORLD_CATEGORIES[self.kind]

    @property
    def cx(self) -> float:
        return (self.box[0] + self.box[2]) / 2

    @property
    def cy(self) -> float:
        return (self.box[1] + self.box[3]) / 2


@dataclass
class Expression:
    """A referring expression: its template, words and the context objects it names."""

    template: str
    tokens: list[str]
    mentioned: list[int] = field(default_factory=list)  # object indices, referent excluded

    @property
    def sent(self) -> str:
        return " ".join(self.tokens)


@dataclass
class Scene:
    """One image before painting; ``expressions[i]`` are those of ``objects[referents[i]]``."""

    width: int
    height: int
    background: float
    objects: list[WorldObject]
    referents: list[int]
    expressions: list[list[Expression]]  # per referent

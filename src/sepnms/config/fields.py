"""The bounded field types every section declares its numbers with, and the sections' base.

Numeric types with their bounds declared once (tests/test_config_bounds.py walks the whole model
and fails on a numeric field without them).  Integers are strict (a bool or 2.5 is not a count);
floats are finite (NaN and infinity are refused everywhere).
"""
from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field


PosInt = Annotated[int, Field(ge=1, strict=True)]
"""A count or size: 1, 2, ..."""
NonNegInt = Annotated[int, Field(ge=0, strict=True)]
"""0, 1, 2, ..."""
PosFloat = Annotated[float, Field(gt=0, allow_inf_nan=False)]
"""A finite value > 0 (learning rates, scales, steps)."""
NonNegFloat = Annotated[float, Field(ge=0, allow_inf_nan=False)]
"""A finite value >= 0 (weights of loss terms, margins)."""
Prob = Annotated[float, Field(ge=0, le=1, allow_inf_nan=False)]
"""A probability or fraction in [0, 1]."""
Dropout = Annotated[float, Field(ge=0, lt=1, allow_inf_nan=False)]
"""A dropout rate (or an Adam beta) in [0, 1)."""
IoU = Annotated[float, Field(gt=0, le=1, allow_inf_nan=False)]
"""An IoU threshold (or a decay factor) in (0, 1]."""
Pixel = Annotated[float, Field(ge=0, le=255, allow_inf_nan=False)]
"""An 8-bit pixel value."""


class Section(BaseModel):
    """A config section: unknown keys are refused, assignments are validated."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

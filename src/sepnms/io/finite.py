"""Stage outputs must be finite before they replace earlier ones.

Weights whose values are finite can still produce NaN or Inf (a damaged or hand-edited
checkpoint, weights of 3e38 that overflow): ``detect`` would write all-NaN pickles and an empty
``dets.json``, ``propose`` all-NaN tables over good ones.  Each stage checks what it is about to
write with :func:`check_finite`; the error names the weights that produced it.
"""
from __future__ import annotations

from pathlib import Path
from typing import Mapping, Optional

import numpy as np

from sepnms.errors import InputError


def _numbers(obj, out: list) -> list:
    if isinstance(obj, float):
        out.append(obj)
    elif isinstance(obj, dict):
        for v in obj.values():
            _numbers(v, out)
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            _numbers(v, out)
    return out


def check_finite_tree(obj: object, what: str, source: Optional[Path | str]) -> None:
    """:func:`check_finite` over every float in nested dicts / lists (a JSON-bound output)."""
    check_finite({"values": np.asarray(_numbers(obj, []), np.float64)}, what, source)


def check_finite(arrays: Mapping[str, object], what: str, source: Optional[Path | str]) -> None:
    """InputError naming ``source`` (the weights) unless every array of ``arrays`` is finite.

    ``what`` says where (``detect, image_id 42``); nothing is written by the caller and earlier
    outputs stay."""
    for name, value in arrays.items():
        arr = np.asarray(value)
        if arr.dtype.kind in "fc" and arr.size and not np.isfinite(arr).all():
            bad = int((~np.isfinite(arr)).sum())
            raise InputError(source, f"{what}: the output {name} holds {bad} NaN or infinite value(s) of {arr.size}: "
                                     "these weights produce non-finite outputs (damaged or diverged?); nothing was "
                                     "written, earlier outputs are kept")

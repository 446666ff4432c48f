"""MAttNet-style detection files (FORMATS.md, "Outputs").

Ours (what MAttNet / CM-A-E forks of Ref-NMS read): a JSON list, one entry per kept proposal
per expression::

    {det_id, h5_id (= det_id), ref_id, sent_id, image_id, box: [x, y, w, h] (w = x2 - x1,
     h = y2 - y1, no +1), category_id (COCO id), category_name, split, fin_score}

named ``matt_dets_<model>_<tag>_<dataset>_<splitBy>_<topN>.json``.

MAttNet's own detections (``res101_coco_minus_refer_notime_dets.json``) are per image, use
inclusive pixels (w = x2 - x1 + 1) and carry ``score``.  Ref-NMS's exporter
(``tools/save_matt_dets.py``, and the authors' released files) writes our layout without any
score field: its entries of one expression are in descending fused score, so the order written is
the ranking.  :func:`read_dets` reads all three.
"""
from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any, Mapping, Optional


from sepnms.errors import InputError
from sepnms.io.atomic import atomic_write_json

log = logging.getLogger(__name__)

#: the box conventions :func:`detect_convention` tells apart
SCORED = "sepnms"          # fin_score, w = x2 - x1
MATTNET = "mattnet"        # score, w = x2 - x1 + 1
UNSCORED = "refnms"        # no score field (Ref-NMS's exporter), w = x2 - x1, ranked as written

def matt_dets_filename(model: str, tag: str, dataset: str, split_by: str, top_n: Any) -> str:
    """``matt_dets_<model>_<tag>_<dataset>_<splitBy>_<topN>.json``."""
    return f"matt_dets_{model}_{tag}_{dataset}_{split_by}_{top_n}.json"


def write_matt_dets(path: str | Path, dets: list[dict]) -> None:
    """Write a detection file atomically (JSON list)."""
    atomic_write_json(path, dets)


def _finite4(value: Any) -> Optional[list[float]]:
    if not isinstance(value, (list, tuple)) or len(value) != 4:
        return None
    try:
        box = [float(v) for v in value]
    except (TypeError, ValueError):
        return None
    return box if all(math.isfinite(v) for v in box) else None


def detect_convention(entries: list[dict]) -> Optional[str]:
    """``SCORED`` when every entry has ``fin_score``; ``MATTNET`` when every entry has ``score``
    and none ``fin_score``; ``UNSCORED`` when none has either (Ref-NMS's exporter); None when the
    entries mix these (or there are none)."""
    if not entries:
        return None
    if all("fin_score" in d for d in entries):
        return SCORED
    if all("fin_score" not in d and "score" in d for d in entries):
        return MATTNET
    if all("fin_score" not in d and "score" not in d for d in entries):
        return UNSCORED
    return None


def read_dets(path: str | Path, inclusive: Optional[bool] = None) -> list[dict]:
    """Read a detection file in any of the three conventions.

    Args:
        path: JSON list of entries with ``box: [x, y, w, h]``.
        inclusive: True for MAttNet's own detections (x2 = x + w - 1), False for ours and
            Ref-NMS's (x2 = x + w).  None: decided per file (:func:`detect_convention`) - entries
            with ``fin_score`` are ours; with ``score`` and no ``fin_score``, MAttNet's; with
            neither, Ref-NMS's exporter output (exclusive; said in a log line, and the proposals of
            an expression rank in the order written).

    Returns:
        the entries (as read) with ``box_xyxy`` [x1, y1, x2, y2] added, in the exclusive
        (no +1) convention used everywhere else in sepnms.

    Raises:
        InputError naming the file: missing, not JSON, not a list, an entry without a valid box,
        a mixed convention.
    """
    from sepnms.io.schemas import check_dets, load_json

    path = Path(path)
    if not path.is_file():
        raise InputError(path, "detection file not found")
    data = load_json(path, "a MAttNet-style detection file, a JSON list", expect=list)
    check_dets(data, path)  # every field's type, boxes, duplicates: the path of the bad field in the message
    if inclusive is None and data:
        convention = detect_convention(data)
        if convention is None:
            raise InputError(
                path,
                "cannot tell the box convention: entries must all carry 'fin_score' (sepnms, w = x2 - x1), "
                "all carry 'score' (MAttNet, w = x2 - x1 + 1) or none carry either (Ref-NMS's exporter, "
                "w = x2 - x1), or pass inclusive=True/False",
            )
        inclusive = convention == MATTNET
        if convention == UNSCORED:
            log.info("%s: no 'fin_score' or 'score' fields: read as Ref-NMS exporter output (w = x2 - x1; "
                     "each expression's proposals ranked in the order written)", path)
    extra = 1.0 if inclusive else 0.0
    out = []
    for d in data:
        x, y, w, h = _finite4(d["box"])
        out.append({**d, "box_xyxy": [x, y, x + w - extra, y + h - extra]})
    return out


def det_score(entry: Mapping[str, Any]) -> float:
    """The score of an entry in either convention (``fin_score`` or ``score``)."""
    return float(entry["fin_score"] if "fin_score" in entry else entry["score"])

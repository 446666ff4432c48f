"""Export of fused proposals as MAttNet-style detection entries (the file itself: ``sepnms.io.mattnet_dets``)."""
from __future__ import annotations

from typing import Any, Callable, Mapping, Optional, Sequence, Union

import numpy as np

from sepnms.evaluation.metrics import select_by_conf
from sepnms.io.proposals import ProposalTable

SCORE_COLUMN = "score"

ReferInfo = Union[
    None,
    Callable[[int], Any],
    Mapping[int, Any],
]


def _refer_lookup(refer_info: ReferInfo, sent_id: int, default: tuple[int, int]) -> tuple[int, int]:
    """(ref_id, image_id) of a sentence from ``refer_info``; ``default`` when it is None."""
    if refer_info is None:
        return default
    info = refer_info(sent_id) if callable(refer_info) else refer_info.get(sent_id)
    if info is None:
        raise ValueError(f"refer_info has no entry for sent_id {sent_id}")
    if isinstance(info, Mapping):
        return int(info["ref_id"]), int(info["image_id"])
    ref_id, image_id = info
    return int(ref_id), int(image_id)


def to_matt_dets(
    table: ProposalTable,
    refer_info: ReferInfo,
    coco_cat_ids: Sequence[int],
    cat_names: Mapping[int, str],
    split: Optional[str] = None,
    top_n: Optional[int] = None,
    conf: Optional[float] = None,
    start_det_id: int = 0,
) -> list[dict]:
    """Entries of a MAttNet-style detection file for a fused table.

    Args:
        table: fused table (``scores['score']``).
        refer_info: where ref_id / image_id come from: a callable ``sent_id -> {ref_id,
            image_id}`` (or a ``(ref_id, image_id)`` tuple), a dict of those keyed by sent_id,
            or None to use the ids stored in the table.
        coco_cat_ids: the 80 COCO category ids, in detector class order (cls_idx 1..80).
        cat_names: COCO category id -> name.
        split: written in every entry; default the table's split.
        top_n: keep at most this many proposals per expression (None: no limit).
        conf: if given, first select by confidence (top-1 always, then score > conf).
        start_det_id: det_id of the first entry; det_ids then run 1 by 1 (h5_id = det_id).

    Returns:
        list of entries, expressions in table order, each expression's proposals by descending
        fused score.  ``box`` is ``[x1, y1, x2 - x1, y2 - y1]`` (no +1).
    """
    if len(coco_cat_ids) != 80:
        raise ValueError(f"coco_cat_ids must hold 80 COCO ids (detector classes 1..80), got {len(coco_cat_ids)}")
    if top_n is not None and top_n < 1:
        raise ValueError(f"top_n must be >= 1 or None, got {top_n}")
    split = table.split if split is None else split
    dets: list[dict] = []
    det_id = int(start_det_id)
    for e in table.expressions:
        if SCORE_COLUMN not in e.scores:
            raise ValueError(f"sent_id {e.sent_id} has no fused {SCORE_COLUMN!r} column; fuse first")
        score = np.asarray(e.scores[SCORE_COLUMN], dtype=np.float64)
        if conf is not None:
            idx = select_by_conf(score, conf)
        else:
            idx = np.argsort(-score, kind="stable")
        if top_n is not None:
            idx = idx[:top_n]
        ref_id, image_id = _refer_lookup(refer_info, e.sent_id, (e.ref_id, e.image_id))
        for i in idx:
            x1, y1, x2, y2 = (float(v) for v in e.box[i])
            cls = int(e.cls_idx[i])
            if not 1 <= cls <= 80:
                raise ValueError(f"sent_id {e.sent_id}: detector class index {cls} outside 1..80")
            cat_id = int(coco_cat_ids[cls - 1])
            dets.append(
                {
                    "det_id": det_id,
                    "h5_id": det_id,
                    "ref_id": ref_id,
                    "sent_id": int(e.sent_id),
                    "image_id": image_id,
                    "box": [x1, y1, x2 - x1, y2 - y1],
                    "category_id": cat_id,
                    "category_name": cat_names[cat_id],
                    "split": split,
                    "fin_score": float(score[i]),
                }
            )
            det_id += 1
    return dets



"""How closely a detector output matches reference pickles (``sepnms detect --compare``): rows of
the two ``rpn_boxes.pkl`` / ``rpn_box_scores.pkl`` pairs matched by box, and the differences of
their class probabilities and box coordinates (:func:`compare_rpn`)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from sepnms.errors import InputError
from sepnms.io.rpn import load_rpn


def match_rows_by_box(ours: np.ndarray, ref: np.ndarray, chunk: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """Pair the rows of two images' box arrays ([N, ...] and [M, ...], e.g. [N, 324]) by their boxes:
    greedily, the pair with the smallest max-abs coordinate difference first, each row used once
    (min(N, M) pairs).  Returns (our row indices, reference row indices), ordered by our row."""
    a = np.asarray(ours, np.float64).reshape(len(ours), -1)
    b = np.asarray(ref, np.float64).reshape(len(ref), -1)
    if not len(a) or not len(b):
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    cost = np.concatenate([np.abs(a[i:i + chunk, None, :] - b[None]).max(2) for i in range(0, len(a), chunk)])
    used_a, used_b = np.zeros(len(a), bool), np.zeros(len(b), bool)
    pairs = []
    for flat in np.argsort(cost, axis=None, kind="stable"):
        i, j = divmod(int(flat), len(b))
        if used_a[i] or used_b[j]:
            continue
        used_a[i] = used_b[j] = True
        pairs.append((i, j))
        if len(pairs) == min(len(a), len(b)):
            break
    pairs.sort()
    return np.array([p[0] for p in pairs], np.int64), np.array([p[1] for p in pairs], np.int64)


def compare_rpn(ours_boxes: Path, ours_scores: Path, ref_boxes: Path, ref_scores: Path) -> dict[str, Any]:
    """How closely our detector output matches reference pickles (e.g. Ref-NMS's released
    ``rpn_boxes.pkl`` / ``rpn_box_scores.pkl``) over the images both hold.

    Rows are matched by box (``match_rows_by_box``), not by position: a reordering of near-tied
    proposals is no difference, and an image with a row more or less still compares the rest.
    Returns counts (rows matched, unmatched on each side, matched at another position) and max /
    99th-percentile / median absolute differences over the matched rows of the class probabilities
    and of the box coordinates (pixels), plus the fraction of matched rows whose boxes (all 81
    classes) agree within 1 px.
    """
    ours, ref = load_rpn(ours_boxes, ours_scores), load_rpn(ref_boxes, ref_scores)
    common = sorted(set(ours.boxes) & set(ref.boxes) & set(ours.scores) & set(ref.scores))
    if not common:
        raise InputError(ref_boxes, f"no image_id in common with {ours_boxes}")
    same = [i for i in common if ours.boxes[i].shape[0] == ref.boxes[i].shape[0]]
    sds, bds, moved, only_ours, only_ref = [], [], 0, 0, 0
    for iid in common:
        ob, rb = ours.boxes[iid], ref.boxes[iid]
        oi, ri = match_rows_by_box(ob, rb)
        sds.append(np.abs(ours.scores[iid][oi] - ref.scores[iid][ri]).reshape(len(oi), -1).max(1, initial=0.0))
        bds.append(np.abs(ob[oi] - rb[ri]).reshape(len(oi), -1).max(1, initial=0.0))
        moved += int((oi != ri).sum())
        only_ours += len(ob) - len(oi)
        only_ref += len(rb) - len(ri)
    sd, bd = np.concatenate(sds), np.concatenate(bds)
    stat = lambda a, q: float(np.percentile(a, q)) if a.size else None  # noqa: E731
    return {
        "images_ours": len(ours.boxes), "images_reference": len(ref.boxes), "images_common": len(common),
        "images_same_rows": len(same), "rows_compared": int(sd.size), "rows_only_ours": only_ours,
        "rows_only_reference": only_ref, "rows_matched_elsewhere": moved,
        "score_abs_diff": {"max": stat(sd, 100), "p99": stat(sd, 99), "median": stat(sd, 50)},
        "box_abs_diff_px": {"max": stat(bd, 100), "p99": stat(bd, 99), "median": stat(bd, 50)},
        "rows_boxes_within_1px": float((bd <= 1.0).mean()) if bd.size else None,
    }

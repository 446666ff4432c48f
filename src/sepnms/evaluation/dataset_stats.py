"""Statistics of a referring-expression dataset and its detector output, comparable between the
embedded world and RefCOCO (docs/METHOD.md, "The world beside RefCOCO").

All from the refer files (``refs(<split_by>).p`` + ``instances.json``) and the detector pickles:

* objects per image: instance annotations of the images that carry refs;
* referents per image, expressions per referent;
* same-category distractors per referent: other annotated objects of the referent's category in
  its image;
* relational share: expressions naming a second object.  The world records it (``mentions.json``);
  for other data, expressions containing one of :data:`RELATION_PHRASES` (a word-list proxy);
* candidates per image: the (box, class) pairs whose class probability exceeds the initial filter
  (``prepare.class_prob_threshold``, 0.05), i.e. the candidate pool before any lowering.
"""
from __future__ import annotations

from typing import Mapping, Optional

import numpy as np

#: phrases that make an expression relational in the word-list proxy (lower-case token sequences)
RELATION_PHRASES: tuple[tuple[str, ...], ...] = (
    ("left", "of"), ("right", "of"), ("next", "to"), ("near",), ("beside",), ("behind",), ("in", "front", "of"),
    ("above",), ("below",), ("under",), ("on", "top", "of"), ("holding",), ("with",), ("by",), ("between",),
    ("closest", "to"), ("across", "from"),
)


def is_relational(tokens: list[str]) -> bool:
    """Whether ``tokens`` contain one of :data:`RELATION_PHRASES`."""
    toks = [t.lower() for t in tokens]
    for phrase in RELATION_PHRASES:
        n = len(phrase)
        if any(tuple(toks[i:i + n]) == phrase for i in range(len(toks) - n + 1)):
            return True
    return False


def dataset_statistics(refs: list[dict], annotations: list[dict], scores: Mapping[int, np.ndarray],
                       threshold: float = 0.05, mentions: Optional[Mapping[int, dict]] = None) -> dict:
    """The statistics above.  ``refs``: the refer records; ``annotations``: instances.json's;
    ``scores``: ``{image_id: [N, 81]}`` class probabilities; ``mentions``: the world's
    ``{sent_id: {mentioned_ann_ids}}`` (else the word-list proxy)."""
    images = sorted({int(r["image_id"]) for r in refs})
    anns_by_image: dict[int, list[dict]] = {}
    for a in annotations:
        anns_by_image.setdefault(int(a["image_id"]), []).append(a)
    n_sent = n_rel = 0
    distractors = []
    for r in refs:
        same = [a for a in anns_by_image.get(int(r["image_id"]), [])
                if a["category_id"] == r["category_id"] and a["id"] != r["ann_id"]]
        distractors.append(len(same))
        for s in r["sentences"]:
            n_sent += 1
            if mentions is not None:
                n_rel += bool(mentions[int(s["sent_id"])]["mentioned_ann_ids"])
            else:
                n_rel += is_relational(s["tokens"])
    cands = [int((np.asarray(scores[i])[:, 1:] > threshold).sum()) for i in images if i in scores]
    n_img = max(1, len(images))
    return {
        "images": len(images),
        "objects_per_image": round(sum(len(anns_by_image.get(i, [])) for i in images) / n_img, 2),
        "referents_per_image": round(len(refs) / n_img, 2),
        "expressions_per_referent": round(n_sent / max(1, len(refs)), 2),
        "same_category_distractors_per_referent": round(float(np.mean(distractors)) if distractors else 0.0, 2),
        "relational_share": round(n_rel / max(1, n_sent), 3),
        "relational_source": "mentions" if mentions is not None else "word list",
        "candidates_per_image": round(float(np.mean(cands)), 1) if cands else None,
        "candidate_threshold": threshold,
    }

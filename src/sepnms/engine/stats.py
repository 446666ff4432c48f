"""``sepnms stats``: the dataset statistics of ``sepnms.evaluation.dataset_stats`` for any
configured dataset (the refer files + the detector pickles), e.g. RefCOCO beside the world."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

from sepnms.config import Config


def dataset_stats(cfg: Config, mentions_path: Optional[Path] = None) -> dict[str, Any]:
    """Statistics of the configured dataset; ``mentions_path``: the world's ``mentions.json``
    (relational share from the recorded mentions instead of the word list)."""
    from sepnms.data.refdb import load_refer
    from sepnms.evaluation.dataset_stats import dataset_statistics
    from sepnms.io.rpn import load_rpn
    from sepnms.world import load_mentions

    refer = load_refer(cfg)
    rpn = load_rpn(cfg.need_path("rpn_boxes"), cfg.need_path("rpn_box_scores"))
    mentions = load_mentions(mentions_path) if mentions_path is not None else None
    out = dataset_statistics(refer.refs, refer.instances["annotations"], rpn.scores,
                             cfg.prepare.class_prob_threshold, mentions)
    return {"dataset": cfg.dataset_tag, **out}

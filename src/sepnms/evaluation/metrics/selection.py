"""Selection by confidence (METHOD.md, "Proposal selection and metrics"): sort by fused score, always
keep the top-1, then keep while score > conf (strict)."""
from __future__ import annotations

import numpy as np

from sepnms.rules import kept_by_conf


def rank_order(scores: np.ndarray) -> np.ndarray:
    """Indices by descending score; ties keep the lower index first (stable)."""
    return np.argsort(-scores, kind="stable")


def select_by_conf(scores: np.ndarray, conf: float) -> np.ndarray:
    """Selection by confidence.

    Args:
        scores: [M] fused scores, in any order.
        conf: threshold; kept scores are strictly greater.

    Returns:
        [K] int64 indices into ``scores`` by descending score: the top-1 always (when M > 0),
        then every other candidate with score > conf.
    """
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    if s.size == 0:
        return np.zeros(0, dtype=np.int64)
    order = rank_order(s)
    n = max(1, int(np.count_nonzero(kept_by_conf(s, float(conf)))))
    return order[:n].astype(np.int64)

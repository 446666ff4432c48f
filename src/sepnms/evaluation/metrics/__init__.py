"""First-stage metrics (METHOD.md, "Proposal selection and metrics").

- Selection by confidence: sort by fused score, always keep the top-1, then keep while
  score > conf (strict).
- Referent hit rate: fraction of expressions with at least one kept proposal of IoU > 0.5
  (strict) with the GT box, reported with the mean number of kept proposals per expression.
- Context recall: over expressions with at least one context box, the mean fraction of their
  context boxes matched (IoU > 0.5) by a kept proposal.
- Top-1 accuracy: fraction of expressions whose highest-scoring proposal has IoU >= 0.5 with GT.

Boxes are xyxy float, IoU without the +1 pixel.  An expression with no candidate is a miss for
the hit rate and top-1, keeps 0 proposals, and matches none of its context boxes.

Scores are compared in float64 everywhere (the float32 table columns are widened first), so
:func:`evaluate_at_conf` and the vectorised :func:`conf_sweep` agree exactly.

The package: :mod:`~sepnms.evaluation.metrics.iou` (box overlap),
:mod:`~sepnms.evaluation.metrics.selection` (selection by confidence),
:mod:`~sepnms.evaluation.metrics.at_conf` (the metrics at one conf) and
:mod:`~sepnms.evaluation.metrics.sweep` (the metrics over a conf grid, choosing conf).
"""
from sepnms.evaluation.metrics.at_conf import (
    SCORE_COLUMN,
    ctx_recall,
    evaluate_at_conf,
    expression_outcomes,
    hit_rate,
    kept_outcome,
    outcome_means,
    top1_accuracy,
)
from sepnms.evaluation.metrics.iou import box_iou, paired_iou
from sepnms.evaluation.metrics.selection import select_by_conf
from sepnms.evaluation.metrics.sweep import choose_conf, conf_sweep, mean_kept, sweep_confs

__all__ = ["SCORE_COLUMN", "box_iou", "paired_iou", "select_by_conf", "hit_rate", "ctx_recall", "top1_accuracy",
           "expression_outcomes", "kept_outcome", "evaluate_at_conf", "outcome_means", "conf_sweep", "mean_kept",
           "choose_conf", "sweep_confs"]

"""How many candidates a first stage keeps: the conf of a method on a split (issue 18, item 5).

Every first-stage method ``M`` is evaluated at two budgets:

- ``M``: about ``evaluate.target_proposals`` kept proposals per expression (the paper's setting);
- ``M@mattnet_dets``: as many as MAttNet's own detections give, per split - the mean over the
  split's expressions of the number of detections of the expression's image
  (:class:`MattNetDets`).  At that budget a difference between ``M@mattnet_dets`` and
  ``mattnet_dets`` is a better ranking, not a longer list.

Both are the same mechanism: :func:`selection_conf` picks, with
:func:`sepnms.evaluation.metrics.choose_conf`, the conf whose mean kept count is closest to the
method's target (:func:`target_of`).  ``evaluate`` (first stage) and ``ground eval`` (second stage)
call it, so both stages see the same candidates.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Optional

import numpy as np

from sepnms.config import Config
from sepnms.data.refdb import RefDB, load_refdb
from sepnms.detection.dets import Detection, mattnet_detections
from sepnms.errors import InputError
from sepnms.evaluation.metrics import choose_conf, mean_kept
from sepnms.io.proposals import ProposalTable

log = logging.getLogger(__name__)

#: the method name of MAttNet's own per-image detections
MATTNET_DETS = "mattnet_dets"
#: ``M`` + this suffix: method ``M`` at the budget of MAttNet's detections
AT_MATTNET_DETS = "@" + MATTNET_DETS
#: the largest |mean kept - budget| an equal-budget row may have before a warning
BUDGET_TOLERANCE = 0.1


def split_method(name: str) -> tuple[str, bool]:
    """``("sepnms", True)`` for ``sepnms@mattnet_dets``; ``(name, False)`` otherwise."""
    if name.endswith(AT_MATTNET_DETS) and len(name) > len(AT_MATTNET_DETS):
        return name[:-len(AT_MATTNET_DETS)], True
    return name, False


def has_mattnet_dets(cfg: Config) -> bool:
    """Whether the detector's output (``paths.rpn_boxes`` / ``rpn_box_scores``) is configured."""
    return cfg.paths.rpn_boxes is not None and cfg.paths.rpn_box_scores is not None


class MattNetDets:
    """MAttNet's detections per image: its rule (:func:`sepnms.detection.dets.mattnet_detections`:
    per-class NMS 0.3, score >= 0.65) on the detector output of ``paths.rpn_boxes`` /
    ``paths.rpn_box_scores``, computed once per image and kept."""

    def __init__(self, cfg: Config):
        from sepnms.io.rpn import load_rpn

        self.rpn = load_rpn(cfg.need_path("rpn_boxes"), cfg.need_path("rpn_box_scores"))
        self._dets: dict[int, list[Detection]] = {}

    def of_image(self, image_id: int) -> list[Detection]:
        """The image's detections, highest score first."""
        iid = int(image_id)
        if iid not in self._dets:
            self._dets[iid] = mattnet_detections(*self.rpn.get(iid))
        return self._dets[iid]

    def budget(self, refdb: RefDB, split: str) -> float:
        """Mean number of candidates per expression of ``split`` when every expression takes its
        image's detections (what ``mattnet_dets`` gives the second stage)."""
        exprs = refdb.split(split)
        if not exprs:
            raise InputError(None, f"split {split!r} has no expression")
        return float(np.mean([len(self.of_image(e["image_id"])) for e in exprs]))

    def by_sent(self, refdb: RefDB, split: str) -> dict[int, list[dict]]:
        """``{sent_id: ranked entries {box_xyxy, score, class_index}}``: each expression's candidates
        are its image's detections (the form of :func:`sepnms.evaluation.released.dets_outcomes`)."""
        return {int(e["sent_id"]): [{"box_xyxy": list(d.box), "score": d.score, "class_index": d.class_index}
                                    for d in self.of_image(e["image_id"])] for e in refdb.split(split)}


class Budgets:
    """The target number of kept proposals per expression of every method and split."""

    def __init__(self, cfg: Config, refdb: Optional[RefDB] = None, dets: Optional[MattNetDets] = None):
        self.cfg = cfg
        self._refdb = refdb
        self._dets = dets
        self._budget: dict[str, float] = {}

    @property
    def refdb(self) -> RefDB:
        if self._refdb is None:
            self._refdb = load_refdb(Path(self.cfg.workdir) / "prepare" / "refdb.json")
        return self._refdb

    @property
    def dets(self) -> MattNetDets:
        if self._dets is None:
            self._dets = MattNetDets(self.cfg)
        return self._dets

    def mattnet_dets_budget(self, split: str) -> float:
        if split not in self._budget:
            self._budget[split] = self.dets.budget(self.refdb, split)
        return self._budget[split]

    def target_of(self, method: str, split: str) -> float:
        """``evaluate.target_proposals``, or for ``M@mattnet_dets`` the split's MAttNet-detection budget."""
        _, at_dets = split_method(method)
        return self.mattnet_dets_budget(split) if at_dets else float(self.cfg.evaluate.target_proposals)

    def selection_conf(self, table: ProposalTable, method: str, split: str) -> float:
        """The conf at which ``table`` (the fused table of ``method``'s base method on ``split``)
        keeps about :meth:`target_of` proposals per expression."""
        target = self.target_of(method, split)
        conf = choose_conf(table, target, self.cfg.evaluate.conf_grid_size)
        kept = float(mean_kept(table, [conf])[0])
        if split_method(method)[1] and abs(kept - target) > BUDGET_TOLERANCE:
            log.warning("%s on %s: no conf keeps %.2f proposals per expression (closest: %.2f)", method, split,
                        target, kept)
        return conf

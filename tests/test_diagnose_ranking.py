"""The ranking diagnostic of benchmarks/diagnose_ranking.py: its AUC and its fused scores."""
import importlib.util
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

_PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "diagnose_ranking.py"


@pytest.fixture(scope="module")
def diag():
    spec = importlib.util.spec_from_file_location("diagnose_ranking", _PATH)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_auc_counts_pairs_and_half_ties(diag):
    # pairs (pos, neg): (3,2) win, (3,3) tie, (1,2) loss, (1,3) loss -> (1 + 0.5) / 4
    assert diag._auc(np.array([3.0, 1.0]), np.array([2.0, 3.0])) == pytest.approx(0.375)
    assert np.isnan(diag._auc(np.array([1.0]), np.array([])))


def test_scores_follow_the_paper_fusion(diag):
    cand = SimpleNamespace(det_score=np.array([0.5, 0.9], np.float32),
                           scores={"ctx_score": np.array([0.4, 0.2], np.float32),
                                   "ref_score": np.array([0.8, 0.01], np.float32)})
    s = diag.scores_of(cand, SimpleNamespace(k=2.0, ref_cut=0.03), has_ref=True)
    # sep = x S + k r S, the ref term dropped where r S < 0.03 (0.01 * 0.9 = 0.009)
    assert s["sep"] == pytest.approx([0.4 * 0.5 + 2 * 0.8 * 0.5, 0.2 * 0.9], rel=1e-6)
    assert s["x*det"] == pytest.approx([0.2, 0.18], rel=1e-6)
    assert "r" not in diag.scores_of(cand, SimpleNamespace(k=2.0, ref_cut=0.03), has_ref=False)

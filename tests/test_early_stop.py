"""Early stopping (issue 18, item 6): both trainings stop after ``patience`` validations without
improvement, keep the best weights, and a resumed run stops where an uninterrupted one does."""
from __future__ import annotations

import shutil

import pytest
import torch

from sepnms.training.early_stop import should_stop, validations_since_best


def test_validations_since_best_counts_the_later_validations():
    history = [{"step": 2}, {"step": 4}, {"step": 6}, {"step": 8}]
    assert validations_since_best(history, "step", 8) == 0
    assert validations_since_best(history, "step", 4) == 2
    assert not should_stop(history, "step", 4, None)
    assert not should_stop(history, "step", 4, 3)
    assert should_stop(history, "step", 4, 2)
    assert should_stop(history, "step", 2, 3)


def test_patience_must_be_a_positive_integer():
    from sepnms.config import load_config
    from sepnms.errors import ConfigError

    for key in ("train.early_stop_patience", "grounding.early_stop_patience", "grounding.max_iters"):
        with pytest.raises(ConfigError):
            load_config("demo", [f"{key}=0"])
    assert load_config("demo", ["train.early_stop_patience=3"]).train.early_stop_patience == 3


# the tiny world overfits fast at a high learning rate: the validation loss turns up within a few epochs
FIRST = {"epochs": 40, "eval_every": 2, "checkpoint_every": 3, "lr_head": 0.01, "lr_new": 0.01, "lr_gru": 0.01,
         "plateau_patience": 10, "early_stop_patience": 2}


def _first_stage(prepared, tmp_path, name):
    dst = tmp_path / name
    shutil.copytree(prepared.workdir, dst)
    cfg = prepared.model_copy(update={"workdir": dst}, deep=True)
    cfg.train = cfg.train.model_copy(update=FIRST)
    return cfg


def _check_stopped_at_patience(history, key, value, best_step, best_value, patience, lower_is_better):
    better = (lambda a, b: a < b) if lower_is_better else (lambda a, b: a > b)
    best_at, best = None, None
    for i, h in enumerate(history):
        if best is None or better(h[value], best):
            best_at, best = i, h[value]
    assert history[best_at][key] == best_step and best == best_value
    assert len(history) - 1 - best_at == patience  # exactly `patience` non-improving validations, then stop


def test_first_stage_stops_after_patience_and_keeps_the_best(prepared, tmp_path):
    from sepnms.engine.checkpoint import load_checkpoint
    from sepnms.engine.train import train
    from sepnms.workdir import model_dir

    cfg = _first_stage(prepared, tmp_path, "a")
    s = train(cfg, "refnms", resume=False, progress=False)
    assert s["stopped_early"] and s["steps"] < s["max_steps"] == 40 * s["steps_per_epoch"]
    _check_stopped_at_patience(s["history"], "step", "val_loss", s["best_step"], s["best_val_loss"], 2, True)
    best = load_checkpoint(model_dir(cfg, "refnms") / "best.pt", cfg, "refnms")
    assert best["state"]["step"] == s["best_step"] < s["steps"]
    # without patience the same run goes on past the stop
    cfg.train.early_stop_patience = None
    cfg.train.epochs = 1 + s["steps"] // s["steps_per_epoch"]
    longer = train(cfg, "refnms", resume=False, progress=False)
    assert not longer["stopped_early"] and longer["steps"] > s["steps"]
    assert longer["history"][:len(s["history"])] == s["history"]


def test_first_stage_resume_stops_where_the_uninterrupted_run_does(prepared, tmp_path):
    from sepnms.engine.checkpoint import load_checkpoint
    from sepnms.engine.train import train
    from sepnms.workdir import model_dir

    a, b = _first_stage(prepared, tmp_path, "a"), _first_stage(prepared, tmp_path, "b")
    full = train(a, "refnms", resume=False, progress=False)
    assert full["stopped_early"] and full["steps"] > 5
    assert train(b, "refnms", resume=False, progress=False, stop_after_steps=5)["interrupted"]
    rest = train(b, "refnms", resume=True, progress=False)
    assert (rest["steps"], rest["best_step"], rest["history"]) == (full["steps"], full["best_step"], full["history"])
    again = train(b, "refnms", resume=True, progress=False)  # a stopped run does not train on when resumed
    assert again["steps"] == full["steps"] and again["history"] == full["history"]
    for f in ("best.pt", "last.pt"):
        wa = load_checkpoint(model_dir(a, "refnms") / f)["model"]
        wb = load_checkpoint(model_dir(b, "refnms") / f)["model"]
        assert all(torch.equal(wa[k], wb[k]) for k in wa), f


SECOND = ["grounding.word_embedding_size=16", "grounding.word_vec_size=16", "grounding.rnn_hidden_size=16",
          "grounding.jemb_dim=16", "grounding.num_atts=4", "grounding.batch_images=3", "grounding.max_iters=200",
          "grounding.eval_every=2", "grounding.checkpoint_every=3", "grounding.val_max_sentences=12",
          "grounding.early_stop_patience=3"]


def test_second_stage_stops_after_patience_and_resumes_to_the_same(tiny_world, tmp_path):
    from conftest import TINY
    from sepnms.config import load_config
    from sepnms.engine.ground.train import train_grounding

    a, b = (load_config(tiny_world / "config.yaml", TINY + SECOND + [f"workdir={tmp_path / n}"]) for n in "ab")
    full = train_grounding(a, resume=False, progress=False)
    assert full["stopped_early"] and full["iterations"] < 200
    _check_stopped_at_patience(full["history"], "iter", "val_accuracy", full["best_iter"],
                               full["best_val_accuracy"], 3, False)
    best = torch.load(tmp_path / "a/models/mattnet/best.pt", weights_only=True)
    assert best["state"]["iter"] == full["best_iter"] < full["iterations"]
    stop = max(1, full["iterations"] - 3)
    assert train_grounding(b, resume=False, progress=False, stop_after_steps=stop)["interrupted"]
    rest = train_grounding(b, resume=True, progress=False)
    assert (rest["iterations"], rest["best_iter"], rest["history"]) == (full["iterations"], full["best_iter"],
                                                                         full["history"])
    wa = torch.load(tmp_path / "a/models/mattnet/last.pt", weights_only=True)["model"]
    wb = torch.load(tmp_path / "b/models/mattnet/last.pt", weights_only=True)["model"]
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_report_shows_each_validation_curve_and_the_best_checkpoint(tmp_path):
    from sepnms.evaluation.plots import plot_training_curves
    from sepnms.evaluation.report import training_section

    first = {"refnms": {"steps": 8, "max_steps": 40, "steps_per_epoch": 2, "best_step": 4, "best_val_loss": 0.5,
                        "stopped_early": True, "early_stop_patience": 2,
                        "history": [{"step": 2, "val_loss": 0.7}, {"step": 4, "val_loss": 0.5},
                                    {"step": 6, "val_loss": 0.6}, {"step": 8, "val_loss": 0.55}]},
             "sepnms": {"steps": 4, "max_steps": 4, "steps_per_epoch": 2, "best_step": 4, "best_val_loss": 0.4,
                        "stopped_early": False, "history": [{"step": 2, "val_loss": 0.9}, {"step": 4, "val_loss": 0.4}]}}
    second = {"iterations": 30, "max_iters": 100, "best_iter": 10, "best_val_accuracy": 0.625, "stopped_early": True,
              "early_stop_patience": 2, "history": [{"iter": 10, "val_accuracy": 0.625},
                                                    {"iter": 20, "val_accuracy": 0.5}, {"iter": 30, "val_accuracy": 0.6}]}
    png = plot_training_curves(first, second, tmp_path / "curves.png")
    assert png.stat().st_size > 1000
    text = training_section(first, second, png.name)
    assert "| refnms | 4 | 8 / 40 | step 4 (epoch 2) | val loss 0.5000 | early (2 validations without a new best) |" in text
    assert "| sepnms | 2 | 4 / 4 | step 4 (epoch 2) | val loss 0.4000 | at its bound |" in text
    assert "| mattnet | 3 | 30 / 100 | iteration 10 | val accuracy 62.5 % |" in text
    assert "| 4 | **0.5000** | **0.4000** |" in text and "| 8 | 0.5500 | - |" in text
    assert "| accuracy | **62.5** | 50.0 | 60.0 |" in text and "![validation curves](curves.png)" in text

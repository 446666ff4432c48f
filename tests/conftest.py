"""Shared fixtures: a tiny embedded world, prepared once per test session."""
from __future__ import annotations

from pathlib import Path

import pytest

#: a tiny world and tiny training: the pipeline end to end in seconds
TINY = [
    "world.n_images=24",
    "train.epochs=2",
    "train.batch_size=8",
    "train.eval_every=5",
    "train.checkpoint_every=3",
    "clip.epochs=1",
    "clip.batch_size=8",
    "grounding.max_iters=10",
    "grounding.eval_every=5",
    "grounding.batch_images=4",
]


@pytest.fixture(scope="session")
def tiny_world(tmp_path_factory) -> Path:
    from sepnms.config import load_config
    from sepnms.engine.world import build_world

    out = tmp_path_factory.mktemp("world")
    build_world(out, load_config("demo", TINY), seed=0, progress=False, quality=False)
    return out


@pytest.fixture(scope="session")
def prepared(tiny_world, tmp_path_factory):
    """(config, workdir) after prepare + encode-text on the tiny world."""
    from sepnms.config import load_config
    from sepnms.engine.encode_text import encode_text
    from sepnms.engine.prepare import prepare

    work = tmp_path_factory.mktemp("work")
    cfg = load_config(tiny_world / "config.yaml", TINY + [f"workdir={work}"])
    prepare(cfg, progress=False)
    encode_text(cfg, progress=False)
    return cfg


@pytest.fixture(scope="session")
def trained(prepared, tmp_path_factory):
    """A prepared workdir with a (barely) trained Sep-NMS model: best.pt and last.pt."""
    import shutil

    from sepnms.engine.train import train

    work = tmp_path_factory.mktemp("trained") / "work"
    shutil.copytree(prepared.workdir, work)
    cfg = prepared.model_copy(update={"workdir": work}, deep=True)
    cfg.train.max_steps = 2
    cfg.train.val_max_expressions = 4
    train(cfg, "sepnms", resume=False, progress=False)
    return work


def evaluate_copy(prepared, trained, work: Path):
    """A copy of the trained tiny workdir at ``work`` after propose (sepnms), fuse (det, sepnms)
    and evaluate; returns its config."""
    import shutil

    from sepnms.engine.evaluate import evaluate
    from sepnms.engine.fuse import STANDARD_METHODS, fuse
    from sepnms.engine.propose import propose

    shutil.copytree(trained, work)
    cfg = prepared.model_copy(update={"workdir": work}, deep=True)
    propose(cfg, "sepnms", progress=False)
    methods = [m for m in STANDARD_METHODS if m.name in ("det", "sepnms")]
    for m in methods:
        fuse(cfg, m)
    evaluate(cfg, [m.name for m in methods], progress=False)
    return cfg


@pytest.fixture(scope="session")
def evaluated_workdir(prepared, trained):
    """``evaluate_copy`` as a fixture: modules that need their own evaluated workdir call it."""
    return lambda work: evaluate_copy(prepared, trained, work)


@pytest.fixture(scope="session")
def evaluated(prepared, trained, tmp_path_factory):
    """The trained tiny workdir after propose (sepnms), fuse (det, sepnms) and evaluate.
    Returns (config, path of a config.yaml pointing at it).  Tests that write more than
    ``show/`` or ``gallery/`` into it work on a copy."""
    from sepnms.config import save_config

    root = tmp_path_factory.mktemp("see")
    cfg = evaluate_copy(prepared, trained, root / "work")
    save_config(cfg, root / "config.yaml")
    return cfg, root / "config.yaml"


@pytest.fixture
def one_thread():
    """Small models: one torch thread is faster (and on a loaded 2-core machine, much faster)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)

"""The one training loop (``sepnms.training.loop``, issue 22) and the three trainers through it.

* In process, a toy trainer: an interruption saves ``last.pt`` and the resumed run reaches the
  uninterrupted run's weights; best-keeping in both directions; early stopping; Ctrl-C; a resume
  with another number of processes is refused.
* Through ``sepnms.cli`` in a subprocess, for ``ground train`` and ``clip-finetune`` (``train`` has
  its own in tests/test_crash.py): SIGKILL after a checkpoint, then the re-run resumes from it and
  ends with the uninterrupted run's weights; SIGINT saves ``last.pt`` and exits 130.
* ``clip-finetune`` under torchrun with two ranks (``train`` and ``ground train`` have theirs in
  tests/test_distributed.py and tests/test_grounding.py).
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Optional

import pytest
import torch

from conftest import TINY
from sepnms.errors import InputError
from sepnms.training.loop import LoopSettings, Trainer, TrainingLoop

# ---------------------------------------------------------------------------------------
# a toy trainer


class Toy(Trainer):
    """A linear regression with dropout (so the RNG state matters) on fixed data; ``metrics``
    scripts the validation metric by step when given."""

    def __init__(self, metrics: Optional[dict[int, float]] = None, signal_at: Optional[int] = None):
        torch.manual_seed(0)
        self.net = torch.nn.Sequential(torch.nn.Dropout(0.3), torch.nn.Linear(4, 1))
        self.optimizer = torch.optim.SGD(self.net.parameters(), lr=0.1)
        self.metrics, self.signal_at = metrics, signal_at
        g = torch.Generator().manual_seed(1)
        self.x, self.y = torch.randn(64, 4, generator=g), torch.randn(64, 1, generator=g)

    def payload(self) -> dict[str, Any]:
        return {"model": self.net.state_dict(), "optimizer": self.optimizer.state_dict()}

    def read_last(self, path: Path) -> dict[str, Any]:
        return torch.load(path, weights_only=True)

    def restore(self, ckpt: dict[str, Any], path: Path) -> None:
        self.net.load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])

    def loss(self, batch: int, state: dict[str, Any]):
        if self.signal_at is not None and state["step"] + 1 == self.signal_at:
            os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C in the middle of this step
        rows = slice(8 * (batch % 8), 8 * (batch % 8) + 8)
        return torch.nn.functional.mse_loss(self.net(self.x[rows]), self.y[rows]), {"lr": 0.1}

    def validate(self, state: dict[str, Any]):
        if self.metrics is not None:
            return self.metrics[state["step"]], {}
        with torch.no_grad():
            return float(torch.nn.functional.mse_loss(self.net[1](self.x), self.y)), {}


def _loop(trainer: Toy, folder: Path, **kw) -> TrainingLoop:
    settings = dict(name="toy", folder=folder, total=12, checkpoint_every=5, eval_every=4, progress=False)
    settings.update(kw)
    return TrainingLoop(trainer, LoopSettings(**settings), "cpu")


def _run(trainer: Toy, folder: Path, resume: bool = True, stop_after: Optional[int] = None, **kw):
    loop = _loop(trainer, folder, **kw)
    state = loop.resume(resume)
    start = state["step"]
    interrupted = loop.run(iter(range(start, 1000)), stop_after)
    return loop, interrupted


def _weights(folder: Path, name: str = "last.pt") -> dict[str, torch.Tensor]:
    return torch.load(folder / name, weights_only=True)["model"]


def test_an_interrupted_run_saves_and_resumes_to_the_uninterrupted_weights(tmp_path):
    full, interrupted = _run(Toy(), tmp_path / "a")
    assert not interrupted and full.state["step"] == 12
    assert [h["step"] for h in full.state["history"]] == [4, 8, 12]

    part, interrupted = _run(Toy(), tmp_path / "b", stop_after=7)
    assert interrupted
    saved = torch.load(tmp_path / "b" / "last.pt", weights_only=True)
    assert saved["state"]["step"] == 7  # saved at the interruption, not only at the cadence (5)
    rest, interrupted = _run(Toy(), tmp_path / "b")
    assert not interrupted and rest.steps_this_call == 5
    assert rest.state["history"] == full.state["history"]
    for k, v in _weights(tmp_path / "a").items():
        assert torch.equal(_weights(tmp_path / "b")[k], v), k  # dropout masks included: the RNG was restored


def test_without_the_rng_state_the_resumed_run_differs(tmp_path):
    # the check above can fail: drop the saved RNG state and the dropout masks after the resume differ
    _run(Toy(), tmp_path / "a")
    _run(Toy(), tmp_path / "b", stop_after=7)
    ck = torch.load(tmp_path / "b" / "last.pt", weights_only=True)
    del ck["rng"]
    torch.manual_seed(123)
    torch.save(ck, tmp_path / "b" / "last.pt")
    _run(Toy(), tmp_path / "b")
    a, b = _weights(tmp_path / "a"), _weights(tmp_path / "b")
    assert any(not torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("higher, best_step", [(False, 4), (True, 8)])
def test_best_keeping_in_both_directions(tmp_path, higher, best_step):
    metrics = {4: 0.2, 8: 0.9, 12: 0.5}
    loop, _ = _run(Toy(metrics), tmp_path, higher_is_better=higher, metric="val_x")
    assert loop.state["best_step"] == best_step and loop.state["best_val"] == metrics[best_step]
    assert torch.load(tmp_path / "best.pt", weights_only=True)["state"]["best_step"] == best_step
    assert [h["val_x"] for h in loop.state["history"]] == [0.2, 0.9, 0.5]


def test_early_stopping_after_patience_validations_without_a_new_best(tmp_path):
    metrics = {2: 0.5, 4: 0.6, 6: 0.7, 8: 0.1, 10: 0.1, 12: 0.1}
    loop, _ = _run(Toy(metrics), tmp_path, eval_every=2, patience=2)
    assert loop.state["step"] == 6 and loop.stop_early() and loop.stopped_early()
    assert [h["step"] for h in loop.state["history"]] == [2, 4, 6]


def test_a_patience_running_out_at_the_last_step_did_not_stop_the_run_early(tmp_path):
    # the report said "early" for a run that reached its bound (564 / 564 steps in the demo)
    metrics = {4: 0.5, 8: 0.6, 12: 0.7}
    loop, _ = _run(Toy(metrics), tmp_path, patience=2)
    assert loop.state["step"] == 12 == loop.s.total
    assert loop.stop_early() and not loop.stopped_early()


@pytest.fixture()
def ctrl_c():
    """SIGINT as in an interactive shell (a background job started with nohup ignores it)."""
    before = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, before)


def test_ctrl_c_ends_the_step_saves_last_and_raises(tmp_path, ctrl_c):
    _run(Toy(), tmp_path / "a")
    with pytest.raises(KeyboardInterrupt):
        _run(Toy(signal_at=6), tmp_path / "b")
    assert torch.load(tmp_path / "b" / "last.pt", weights_only=True)["state"]["step"] == 6
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # the handler was put back
    _run(Toy(), tmp_path / "b")
    for k, v in _weights(tmp_path / "a").items():
        assert torch.equal(_weights(tmp_path / "b")[k], v), k


def test_an_ignored_sigint_stays_ignored(tmp_path):
    before = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        loop, interrupted = _run(Toy(signal_at=6), tmp_path)  # the SIGINT of step 6 is ignored
        assert not interrupted and loop.state["step"] == 12
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, before)


def test_a_run_of_another_world_size_is_not_resumed(tmp_path):
    _run(Toy(), tmp_path, stop_after=3)
    ck = torch.load(tmp_path / "last.pt", weights_only=True)
    ck["state"]["world_size"] = 2
    torch.save(ck, tmp_path / "last.pt")
    with pytest.raises(InputError, match=r"started with 2 process\(es\), now 1: resume it with the same number"):
        _loop(Toy(), tmp_path).resume(True)
    _loop(Toy(), tmp_path).resume(False)  # --no-resume starts again


# ---------------------------------------------------------------------------------------
# the trainers through sepnms.cli, killed

#: run sepnms.cli with every save of last.pt logged (the step) to $SAVE_LOG and followed by a
#: pause of $PAUSE_S seconds, so a signal lands right after a checkpoint; SIGINT acts as in an
#: interactive shell even when the tests run in the background (nohup ignores it)
WRAPPER = r"""
import os, signal, sys, time
from sepnms.training import loop

signal.signal(signal.SIGINT, signal.default_int_handler)  # as in a shell, also when started under nohup

save = loop.TrainingLoop.save


def logged(self, path):
    save(self, path)
    if path.name == "last.pt":
        with open(os.environ["SAVE_LOG"], "a") as fh:
            fh.write(f"{self.state[self.s.counter]}\n")
        time.sleep(float(os.environ["PAUSE_S"]))


loop.TrainingLoop.save = logged
from sepnms.cli import main
sys.exit(main(sys.argv[1:]))
"""

GROUND = ["grounding.word_embedding_size=16", "grounding.word_vec_size=16", "grounding.rnn_hidden_size=16",
          "grounding.jemb_dim=16", "grounding.num_atts=4", "grounding.batch_images=3", "grounding.max_iters=6",
          "grounding.eval_every=3", "grounding.checkpoint_every=2", "grounding.val_max_sentences=8"]


def _clip_sets(tmp_path: Path) -> list[str]:
    from test_clip import make_captions

    cap, images = tmp_path / "captions_train2014.json", tmp_path / "coco"
    if not cap.exists():
        make_captions(tmp_path)
    return ["clip.batch_size=2", "clip.epochs=2", "clip.lr=0.001", f"paths.captions={cap}",
            f"paths.captions_images_dir={images}"]


def _command(which: str, world: Path, work: Path, tmp_path: Path) -> tuple[list[str], Path, str]:
    """(cli arguments, the run folder, the unit the resume log names)."""
    if which == "ground":
        args, sets, folder, unit = ["ground", "train"], GROUND, work / "models" / "mattnet", "iteration"
    else:
        args, sets, folder, unit = ["clip-finetune"], _clip_sets(tmp_path), work / "clip", "step"
    flat = [a for o in TINY + sets + [f"workdir={work}"] for a in ("--set", o)]
    return [*args, "--config", str(world / "config.yaml"), *flat, "--quiet"], folder, unit


def _env(**extra: str) -> dict[str, str]:
    src = str(Path(__file__).resolve().parents[1] / "src")
    return {**os.environ, "PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")]),
            "OMP_NUM_THREADS": "1", **extra}


def _cli(args: list[str]) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "sepnms.cli", *args], env=_env(), capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def _started_and_signalled(args: list[str], log: Path, sig: int) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", WRAPPER, *args], env=_env(SAVE_LOG=str(log), PAUSE_S="3"),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    t0 = time.monotonic()
    try:
        while not (log.is_file() and log.read_text().strip()):
            if proc.poll() is not None:
                pytest.fail(f"ended (rc {proc.returncode}) before its first checkpoint: {proc.stderr.read()[-3000:]}")
            if time.monotonic() - t0 > 300:
                pytest.fail("no checkpoint within 300 s")
            time.sleep(0.01)
        proc.send_signal(sig)  # during the pause after the first last.pt
        proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    return proc


def _model(folder: Path) -> dict[str, torch.Tensor]:
    return torch.load(folder / "last.pt", weights_only=True)["model"]


@pytest.mark.parametrize("which", ["ground", "clip"])
def test_sigkill_after_a_checkpoint_then_the_rerun_resumes_to_the_same_weights(which, tiny_world, tmp_path):
    args_a, folder_a, _ = _command(which, tiny_world, tmp_path / "a", tmp_path)
    _cli(args_a)  # uninterrupted
    args_b, folder_b, unit = _command(which, tiny_world, tmp_path / "b", tmp_path)
    proc = _started_and_signalled(args_b, tmp_path / "saves.log", signal.SIGKILL)
    assert proc.returncode == -signal.SIGKILL
    killed_at = int((tmp_path / "saves.log").read_text().split()[0])
    counter = "iter" if which == "ground" else "step"
    assert torch.load(folder_b / "last.pt", weights_only=True)["state"][counter] == killed_at
    assert not (folder_b / ("train_summary.json" if which == "ground" else "finetune_summary.json")).exists()

    rerun = _cli(args_b)
    assert f"resumed {folder_b / 'last.pt'} at {unit} {killed_at}" in rerun.stderr
    a, b = _model(folder_a), _model(folder_b)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_sigint_saves_last_and_exits_130_then_resumes(tiny_world, tmp_path):
    args_a, folder_a, _ = _command("ground", tiny_world, tmp_path / "a", tmp_path)
    _cli(args_a)
    args_b, folder_b, _ = _command("ground", tiny_world, tmp_path / "b", tmp_path)
    proc = _started_and_signalled(args_b, tmp_path / "saves.log", signal.SIGINT)
    err = proc.stderr.read()
    assert proc.returncode == 130, err[-3000:]
    assert "interrupted" in err.splitlines()[-1]
    saved = torch.load(folder_b / "last.pt", weights_only=True)["state"]["iter"]
    assert saved == int((tmp_path / "saves.log").read_text().split()[0])  # the step it was in, then saved
    assert "run the same command to resume" in err
    rerun = _cli(args_b)
    assert f"resumed {folder_b / 'last.pt'} at iteration {saved}" in rerun.stderr
    a, b = _model(folder_a), _model(folder_b)
    for k in a:
        assert torch.equal(a[k], b[k]), k


# ---------------------------------------------------------------------------------------
# clip-finetune under torchrun


@pytest.mark.slow
def test_clip_finetune_under_torchrun_two_ranks(tiny_world, tmp_path):
    from sepnms.clip.finetune import clip_finetune
    from sepnms.config import load_config

    work = tmp_path / "work"
    args, folder, _ = _command("clip", tiny_world, work, tmp_path)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "sepnms.cli",
           *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=_env())
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    summary = json.loads((folder / "finetune_summary.json").read_text())
    # 6 captioned images, batches of 2: 3 batches an epoch, each rank takes every 2nd -> 1 a rank
    assert summary["batches_per_epoch"] == 1 and summary["steps"] == 2 and summary["epochs_done"] == 2
    last = torch.load(folder / "last.pt", weights_only=True)
    assert last["state"]["world_size"] == 2 and last["state"]["step"] == 2
    assert Path(summary["heads"]).is_file()
    cfg = load_config(tiny_world / "config.yaml", TINY + _clip_sets(tmp_path) + [f"workdir={work}"])
    with pytest.raises(InputError, match="same number"):
        clip_finetune(cfg, progress=False)

"""The world's trained detector: its training losses, the shipped checkpoint and its quality."""
from __future__ import annotations

import pytest
import torch

from sepnms.config import load_config


def _scenes(cfg, n: int, seed: int):
    from sepnms.world.train_detector import _batches

    return list(_batches(cfg, seed, 0, n))


def test_legacy_encoding_inverts_decode():
    """The training targets (torchvision BoxCoder on +1 boxes, no clamp) decode back to the ground
    truth with the inference decoder (sepnms.detection.boxes.decode), up to py-faster-rcnn's own
    asymmetry: encode uses ``w = x2 - x1 + 1``, decode puts ``x2 = ctr + w / 2`` (no ``- 1``), so
    x2 / y2 come back one pixel further - as with the released detector."""
    from torchvision.models.detection._utils import BoxCoder

    from sepnms.detection.boxes import decode
    from sepnms.detection.training import DetectorLoss, LossSettings

    crit = DetectorLoss(LossSettings())
    ref = torch.tensor([[10.0, 20.0, 40.0, 35.0], [0.0, 0.0, 15.0, 15.0]])
    gt = torch.tensor([[12.0, 18.0, 50.0, 60.0], [3.0, 1.0, 200.0, 9.0]])
    coder = BoxCoder((10.0, 10.0, 5.0, 5.0), bbox_xform_clip=float("inf"))
    t = crit._encode(coder, gt, ref)
    back = decode(ref, t * torch.tensor([0.1, 0.1, 0.2, 0.2]))
    torch.testing.assert_close(back, gt + torch.tensor([0.0, 0.0, 1.0, 1.0]), atol=1e-4, rtol=0)


def test_a_few_training_steps_lower_the_loss():
    from sepnms.detection.detector import MaskRCNNC4
    from sepnms.detection.training import DetectorLoss, total_loss
    from sepnms.world.detector import world_detector_config
    from sepnms.world.train_detector import attribute_heads, loss_settings

    torch.manual_seed(0)
    cfg = load_config("demo")
    batch = _scenes(cfg, 2, 12345)
    model = MaskRCNNC4(world_detector_config(cfg)).train()
    heads = attribute_heads(model)
    crit = DetectorLoss(loss_settings(cfg))
    opt = torch.optim.AdamW(list(model.parameters()) + list(heads.parameters()), lr=2e-3)

    def loss() -> torch.Tensor:
        return sum(total_loss(crit(model, blob, [t], heads)) for blob, t in batch) / len(batch)

    torch.manual_seed(1)
    with torch.no_grad():
        before = float(loss())
    for _ in range(12):
        opt.zero_grad()
        loss().backward()
        opt.step()
    torch.manual_seed(1)
    with torch.no_grad():
        after = float(loss())
    assert after < 0.8 * before, (before, after)


def test_shipped_checkpoint_is_small_and_loads_strictly():
    from sepnms.detection.checkpoint import expected_keys, load_detector
    from sepnms.io.checkpoints import torch_load_weights
    from sepnms.world.detector import SHIPPED_CHECKPOINT, world_detector_config

    assert SHIPPED_CHECKPOINT.stat().st_size <= 5 * 2**20
    dc = world_detector_config(load_config("demo"))
    model = load_detector(SHIPPED_CHECKPOINT, dc)
    state = torch_load_weights(SHIPPED_CHECKPOINT, "detector checkpoint")
    assert set(state) == set(expected_keys(model))  # MAttNet's keys, nothing more
    # trained, not the seeded random init
    assert not model.training and float(model.resnet.bn1.running_var.mean()) != pytest.approx(1.0, abs=1e-3)


@pytest.fixture(scope="module")
def fresh_world(tmp_path_factory):
    """An 80-image world of seed 7 (the detector trained on scenes of train_seed 9000017 only)."""
    from sepnms.engine.world import build_world

    out = tmp_path_factory.mktemp("fresh_world")
    summary = build_world(out, load_config("demo", ["world.n_images=80"]), seed=7, progress=False)
    return out, summary


def test_shipped_detector_on_a_fresh_world(fresh_world):
    """The quality criteria on a fresh 80-image world: box AP50 (COCOeval) and linear probes of
    category, colour and size on held-out images (fit on ~220 objects).  Bounds sit below the
    goal (AP50 0.8, probes 0.95 on a 400-image world, docs/METHOD.md) for the smaller fit set;
    measured here: AP50 0.966, category 0.892, colour 0.996, size 0.969."""
    import json

    out, summary = fresh_world
    q = summary["quality"]
    assert json.loads((out / "quality.json").read_text()) == q
    assert q["box_ap50"] >= 0.9, q
    for attr in ("category", "color", "size"):
        p = q["probes"][attr]
        assert p["n_test"] >= 150 and p["accuracy"] >= 0.85 and p["accuracy"] > p["majority"] + 0.3, (attr, p)
    # MAttNet's own detections: about one per object, as with the released detector on RefCOCO
    assert 0.7 * summary["objects_per_image"] <= summary["mattnet_dets_per_image"] <= 1.3 * summary["objects_per_image"]


def test_world_quality_report_section(fresh_world, tmp_path):
    """The demo report's data section shows the detector's quality."""
    from sepnms.evaluation.report import write_report

    _, summary = fresh_world
    path = tmp_path / "report.md"
    write_report(path, {}, [], 3.0, world_summary=summary)
    text = path.read_text()
    assert "box AP50 (COCOeval" in text and f"{summary['quality']['box_ap50']:.3f}" in text
    assert "linear probe of category" in text and "linear probe of size" in text
    assert f"| world: objects_per_image | {summary['objects_per_image']} |" in text


def test_training_is_seeded(tmp_path):
    """Same seed, same weights (one CPU thread); another seed, other weights."""
    from sepnms.io.checkpoints import torch_load_weights
    from sepnms.world.train_detector import train_world_detector

    cfg = load_config("demo", ["world_detector.bn_calibration_images=1", "world_detector.log_every=1"])
    runs = {}
    for name, seed in (("a", 0), ("b", 0), ("c", 1)):
        out = train_world_detector(cfg, tmp_path / f"{name}.pth", seed=seed, steps=2)
        assert len(out["history"]) == 2 and out["steps"] == 2
        runs[name] = torch_load_weights(tmp_path / f"{name}.pth", "detector checkpoint")
    assert all(torch.equal(runs["a"][k], runs["b"][k]) for k in runs["a"])
    assert not torch.equal(runs["a"]["rpn_net.weight"], runs["c"]["rpn_net.weight"])


def test_init_continues_from_a_checkpoint_on_new_scenes(tmp_path):
    from sepnms.io.checkpoints import torch_load_weights
    from sepnms.world.detector import SHIPPED_CHECKPOINT
    from sepnms.world.train_detector import train_world_detector

    cfg = load_config("demo", ["world_detector.bn_calibration_images=1", "world_detector.lr=1e-5"])
    out = train_world_detector(cfg, tmp_path / "c.pth", steps=1, init=SHIPPED_CHECKPOINT)
    assert out["train_seed"] == cfg.world_detector.train_seed + 1000 and out["init"] == str(SHIPPED_CHECKPOINT)
    a = torch_load_weights(SHIPPED_CHECKPOINT, "detector checkpoint")
    b = torch_load_weights(tmp_path / "c.pth", "detector checkpoint")
    w = "cls_score_net.weight"
    assert not torch.equal(a[w], b[w]) and float((a[w] - b[w]).abs().max()) < 1e-3  # one small step away


def test_train_detector_refuses_an_unwritable_out_before_training(tmp_path, capsys):
    """``--out`` under a file or at a device: exit 2 and one line, before any training step
    (the steps print their figures: none may appear)."""
    from sepnms.cli import main

    (tmp_path / "f").write_text("x")
    for out in (tmp_path / "f" / "d.pth", "/dev/null"):
        rc = main(["world", "train-detector", "--out", str(out), "--steps", "5"])
        captured = capsys.readouterr()
        assert rc == 2 and captured.out == "" and len(captured.err.strip().splitlines()) == 1, captured
        assert str(out) in captured.err

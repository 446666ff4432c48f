"""Tests for sepnms.detection: MAttNet's Mask R-CNN (C4) on modern PyTorch, and `sepnms detect`."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torchvision

from sepnms.config import DetectorConfig
from sepnms.detection.anchors import generate_anchors, shifted_anchors
from sepnms.detection.box_head import classify
from sepnms.detection.boxes import clip, decode
from sepnms.detection.checkpoint import expected_keys, load_detector, save_detector
from sepnms.detection.detector import MaskRCNNC4
from sepnms.detection.preprocess import image_scale, preprocess
from sepnms.detection.proposal_layer import proposals
from sepnms.detection.rpn import rpn_outputs
from sepnms.errors import InputError

#: a narrow detector with ResNet-101's block counts: the same 536 keys, small tensors
NARROW = DetectorConfig(width=2, rpn_channels=8)


# ---------------------------------------------------------------------------------------
# anchors


def test_anchors_reproduce_the_legacy_values():
    """The nine well-known py-faster-rcnn anchors (scales 8/16/32, ratios 0.5/1/2), in order."""
    known = [[-84, -40, 99, 55], [-176, -88, 191, 103], [-360, -184, 375, 199],
             [-56, -56, 71, 71], [-120, -120, 135, 135], [-248, -248, 263, 263],
             [-36, -80, 51, 95], [-80, -168, 95, 183], [-168, -344, 183, 359]]
    np.testing.assert_array_equal(generate_anchors(16, (0.5, 1, 2), (8, 16, 32)), np.array(known, float))


def test_anchors_mattnet_scales_and_shifts():
    a = generate_anchors(16, (0.5, 1, 2), (4, 8, 16, 32))
    assert a.shape == (12, 4)
    # scale 4, ratio 1: a 64 x 64 box centred at 7.5 (hand computed: 7.5 -+ 31.5)
    np.testing.assert_array_equal(a[4], [-24, -24, 39, 39])
    # scale 4, ratio 0.5: ws = round(sqrt(512)) = 23, hs = round(11.5) = 12 (half to even) -> 92 x 48
    np.testing.assert_array_equal(a[0], [7.5 - 45.5, 7.5 - 23.5, 7.5 + 45.5, 7.5 + 23.5])
    cell = torch.tensor(a, dtype=torch.float32)
    shifted = shifted_anchors(cell, 2, 3, 16).reshape(2, 3, 12, 4)
    # (h=1, w=2, anchor 5) is anchor 5 moved by (32, 16)
    np.testing.assert_array_equal(shifted[1, 2, 5].numpy(), a[5] + [32, 16, 32, 16])


# ---------------------------------------------------------------------------------------
# loop references of decoding, the proposal layer and the box head


def _decode_loop(box, d):
    w, h = box[2] - box[0] + 1.0, box[3] - box[1] + 1.0
    cx, cy = box[0] + 0.5 * w, box[1] + 0.5 * h
    pcx, pcy = d[0] * w + cx, d[1] * h + cy
    pw, ph = math.exp(d[2]) * w, math.exp(d[3]) * h
    return [pcx - 0.5 * pw, pcy - 0.5 * ph, pcx + 0.5 * pw, pcy + 0.5 * ph]


def _clip_loop(b, height, width):
    return [min(max(b[0], 0.0), width - 1.0), min(max(b[1], 0.0), height - 1.0),
            min(max(b[2], 0.0), width - 1.0), min(max(b[3], 0.0), height - 1.0)]


def _clip_one_sided_loop(b, height, width):
    """MAttNet's ``Inference._clip_boxes``: x1, y1 >= 0; x2 <= W - 1; y2 <= H - 1, nothing else."""
    return [max(b[0], 0.0), max(b[1], 0.0), min(b[2], width - 1.0), min(b[3], height - 1.0)]


def _iou_plus_one(a, b):
    iw = min(a[2], b[2]) - max(a[0], b[0]) + 1.0
    ih = min(a[3], b[3]) - max(a[1], b[1]) + 1.0
    if iw <= 0 or ih <= 0:
        return 0.0
    inter = iw * ih
    area = lambda z: (z[2] - z[0] + 1.0) * (z[3] - z[1] + 1.0)  # noqa: E731
    return inter / (area(a) + area(b) - inter)


def _proposals_loop(fg, deltas, anchors, height, width, pre, post, thresh):
    boxes = [_clip_loop(_decode_loop(a, d), height, width) for a, d in zip(anchors.tolist(), deltas.tolist())]
    order = sorted(range(len(boxes)), key=lambda i: -fg[i])[:pre]
    kept = []
    for i in order:
        if all(_iou_plus_one(boxes[i], boxes[j]) <= thresh for j in kept):
            kept.append(i)
        if len(kept) == post:
            break
    return np.array([boxes[i] for i in kept]), np.array([fg[i] for i in kept])


def test_decode_matches_loop_reference_without_clamp():
    g = torch.Generator().manual_seed(0)
    boxes = torch.rand(50, 2, generator=g) * 300
    boxes = torch.cat([boxes, boxes + torch.rand(50, 2, generator=g) * 200], 1).double()
    deltas = torch.randn(50, 12, generator=g).double() * 2  # |dw| up to ~6: above torchvision's clamp
    got = decode(boxes, deltas).reshape(50, 3, 4)
    for i in range(50):
        for k in range(3):
            np.testing.assert_allclose(got[i, k].numpy(), _decode_loop(boxes[i].tolist(), deltas[i, 4 * k:4 * k + 4].tolist()),
                                       rtol=1e-9, atol=1e-6)


def test_proposal_layer_matches_loop_reference():
    g = torch.Generator().manual_seed(1)
    hf, wf, h, w = 12, 16, 190.0, 250.0
    anchors = shifted_anchors(torch.tensor(generate_anchors(16, (0.5, 1, 2), (1, 2, 4, 8)), dtype=torch.float32),
                              hf, wf, 16)
    k = len(anchors)
    fg = torch.rand(k, generator=g)
    deltas = torch.randn(k, 4, generator=g) * 0.3
    rois, scores = proposals(fg, deltas, anchors, h, w, pre_nms_top_n=600, post_nms_top_n=40, nms_thresh=0.7)
    ref_boxes, ref_scores = _proposals_loop(fg.tolist(), deltas.double(), anchors.double(), h, w, 600, 40, 0.7)
    assert rois.shape == (40, 4) and ref_boxes.shape == (40, 4)
    np.testing.assert_allclose(rois.numpy(), ref_boxes, atol=1e-4, rtol=1e-5)
    np.testing.assert_allclose(scores.numpy(), ref_scores, atol=1e-5)
    # a looser NMS keeps fewer than post_nms_top_n: the layer returns what survives
    rois2, _ = proposals(fg, deltas, anchors, h, w, pre_nms_top_n=600, post_nms_top_n=10_000, nms_thresh=0.7)
    ref2, _ = _proposals_loop(fg.tolist(), deltas.double(), anchors.double(), h, w, 600, 10_000, 0.7)
    assert len(rois2) == len(ref2) < 600
    np.testing.assert_allclose(rois2.numpy(), ref2, atol=1e-4, rtol=1e-5)


def test_box_head_decodes_class_boxes_in_original_pixels():
    g = torch.Generator().manual_seed(2)
    fc7 = torch.randn(6, 10, generator=g)
    cls_net, bbox_net = torch.nn.Linear(10, 3), torch.nn.Linear(10, 12)
    rois = torch.tensor([[0, 0, 100, 80], [30, 40, 200, 150], [5, 5, 6, 6], [0, 0, 299, 239],
                         [100, 100, 120, 260], [50, 10, 60, 20]], dtype=torch.float32)
    scale, height, width, stds = 1.5, 160, 200, (0.1, 0.1, 0.2, 0.2)
    scores, boxes = classify(fc7, cls_net, bbox_net, rois, scale, height, width, stds)
    logits, raw = cls_net(fc7).detach(), bbox_net(fc7).detach()
    for i in range(6):
        e = [math.exp(v) for v in logits[i].tolist()]
        np.testing.assert_allclose(scores[i].detach().numpy(), [v / sum(e) for v in e], rtol=1e-5)
        for c in range(3):
            d = [raw[i, 4 * c + j].item() * stds[j] for j in range(4)]
            want = _clip_one_sided_loop(_decode_loop([v / scale for v in rois[i].tolist()], d), height, width)
            np.testing.assert_allclose(boxes[i, c].detach().numpy(), want, rtol=1e-5, atol=1e-4)


def test_class_boxes_are_clipped_one_sided_as_mattnet():
    """A box pushed past the right / bottom edge keeps x1, y1 beyond W - 1, H - 1 (MAttNet's
    ``_clip_boxes`` clamps only x1, y1 from below and x2, y2 from above); one past the left edge
    keeps x2 < 0.  Hand values: roi [150, 100, 199, 149] (50 x 50, centre 175, 125), scale 1,
    dx = dy = +2 (0.1 std x 20 raw) moves it by 100 px: [250, 200, 300, 250] -> only x2, y2 clipped."""
    fc7 = torch.ones(1, 1)
    cls_net, bbox_net = torch.nn.Linear(1, 2), torch.nn.Linear(1, 8)
    with torch.no_grad():
        cls_net.weight.zero_(), cls_net.bias.zero_(), bbox_net.weight.zero_()
        bbox_net.bias.copy_(torch.tensor([0, 0, 0, 0, 20.0, 20.0, 0, 0]))
        rois = torch.tensor([[150.0, 100.0, 199.0, 149.0]])
        _, boxes = classify(fc7, cls_net, bbox_net, rois, 1.0, 160, 200, (0.1, 0.1, 0.2, 0.2))
    np.testing.assert_allclose(boxes[0, 1].numpy(), [250.0, 200.0, 199.0, 159.0], atol=1e-4)
    # zero deltas: x2 = ctr + w / 2 = 200 (the legacy decode), clipped to W - 1; y2 = 150 stays
    np.testing.assert_allclose(boxes[0, 0].numpy(), [150.0, 100.0, 199.0, 150.0], atol=1e-4)
    from sepnms.detection.boxes import clip_one_sided

    got = clip_one_sided(torch.tensor([[-30.0, -5.0, -10.0, 300.0]]), 160, 200)
    np.testing.assert_array_equal(got.numpy(), [[0.0, 0.0, -10.0, 159.0]])


def test_rpn_softmax_pairs_channel_a_with_a_plus_A():
    """fg of anchor a = sigmoid(logit[A + a] - logit[a]), flattened (h, w, a)."""
    torch.manual_seed(3)
    a_num, c = 3, 5
    rpn_net, cls_net, bbox_net = torch.nn.Conv2d(c, 4, 3, padding=1), torch.nn.Conv2d(4, 2 * a_num, 1), \
        torch.nn.Conv2d(4, 4 * a_num, 1)
    x = torch.randn(1, c, 2, 3)
    fg, deltas = rpn_outputs(rpn_net, cls_net, bbox_net, x)
    hidden = torch.relu(rpn_net(x))
    logits, raw = cls_net(hidden), bbox_net(hidden)
    for y in range(2):
        for xx in range(3):
            for a in range(a_num):
                i = (y * 3 + xx) * a_num + a
                want = 1 / (1 + math.exp(-(logits[0, a_num + a, y, xx] - logits[0, a, y, xx]).item()))
                assert fg[0, i].item() == pytest.approx(want, rel=1e-5)
                np.testing.assert_allclose(deltas[0, i].detach().numpy(), raw[0, 4 * a:4 * a + 4, y, xx].detach().numpy())


# ---------------------------------------------------------------------------------------
# preprocessing


def test_image_scale_short_600_long_1000():
    assert image_scale(480, 640, 600, 1000) == pytest.approx(1.25)
    assert image_scale(400, 1500, 600, 1000) == pytest.approx(1000 / 1500)


def test_preprocess_equals_cv2_resize_on_a_coco_sized_image():
    """The blob is OpenCV's: ``cv2.resize(float32 BGR - means, fx=fy=s, INTER_LINEAR)`` to 1e-3 on a
    427 x 640 noise image (s = 600 / 427).  aten's float32 source coordinates were 0.014 away."""
    import cv2

    rng = np.random.default_rng(0)
    bgr = rng.integers(0, 256, (427, 640, 3), dtype=np.uint8)
    means = (102.9801, 115.9465, 122.7717)
    blob, info = preprocess(bgr, means, short=600, max_size=1000)
    s = 600 / 427
    want = cv2.resize(bgr.astype(np.float32) - np.array(means, np.float32), None, None, fx=s, fy=s,
                      interpolation=cv2.INTER_LINEAR)
    assert blob.shape == (1, 3, 600, 899) and want.shape == (600, 899, 3)
    np.testing.assert_allclose(info.numpy(), [600, 899, s], rtol=1e-6)
    np.testing.assert_allclose(blob[0].permute(1, 2, 0).numpy(), want, atol=1e-3, rtol=0)
    # an independent double-precision bilinear sample at a few pixels (OpenCV's formula)
    img = bgr.astype(np.float64) - np.array(means)
    for y, x in [(0, 0), (137, 411), (599, 898), (300, 450)]:
        sy, sx = min(max((y + 0.5) / s - 0.5, 0), 426), min(max((x + 0.5) / s - 0.5, 0), 639)
        y0, x0 = int(np.floor(sy)), int(np.floor(sx))
        y1, x1, fy, fx = min(y0 + 1, 426), min(x0 + 1, 639), sy - y0, sx - x0
        v = ((1 - fy) * ((1 - fx) * img[y0, x0] + fx * img[y0, x1]) + fy * ((1 - fx) * img[y1, x0] + fx * img[y1, x1]))
        np.testing.assert_allclose(blob[0, :, y, x].numpy(), v, atol=2e-3)


def test_preprocess_against_hand_computed_pixels():
    """BGR, means subtracted in float before a bilinear resize (no uint8 rounding in between),
    cv2's half-pixel source coordinates clamped at the border."""
    rgb = np.zeros((2, 3, 3), np.uint8)
    rgb[..., 0] = [[10, 20, 30], [40, 50, 60]]   # R
    rgb[..., 1] = 7                              # G
    rgb[..., 2] = [[1, 2, 4], [8, 16, 32]]       # B
    means = (100.0, 50.0, 25.0)                  # B, G, R
    blob, info = preprocess(np.ascontiguousarray(rgb[..., ::-1]), means, short=4, max_size=1000)  # scale 2 -> 4 x 6
    assert blob.shape == (1, 3, 4, 6)
    np.testing.assert_allclose(info.numpy(), [4, 6, 2])
    # row 0 of the output samples source row -0.25 -> clamped to 0; column 1 samples x = 0.25
    assert blob[0, 0, 0, 1].item() == pytest.approx(0.75 * 1 + 0.25 * 2 - 100.0)    # blue: 1.25 - 100
    assert blob[0, 2, 0, 1].item() == pytest.approx(0.75 * 10 + 0.25 * 20 - 25.0)   # red
    assert blob[0, 1, 2, 3].item() == pytest.approx(7 - 50.0)
    # output (y=1, x=4): source y = 0.25, x = 1.75
    b = (0.75 * (0.25 * 2 + 0.75 * 4) + 0.25 * (0.25 * 16 + 0.75 * 32))
    assert blob[0, 0, 1, 4].item() == pytest.approx(b - 100.0)
    # last column: source x = 2.75 -> clamped to 2
    assert blob[0, 2, 3, 5].item() == pytest.approx(60 - 25.0)


# ---------------------------------------------------------------------------------------
# the network and its checkpoint


def test_caffe_strides_and_c4_size():
    m = MaskRCNNC4(DetectorConfig(width=2, blocks=(1, 1, 1, 1), rpn_channels=4)).eval()
    for layer in (m.resnet.layer2, m.resnet.layer3):
        assert layer[0].conv1.stride == (2, 2) and layer[0].conv2.stride == (1, 1)
        assert layer[0].downsample[0].stride == (2, 2)
    assert m.resnet.layer4[0].conv2.stride == (1, 1) and m.resnet.layer4[0].downsample[0].stride == (1, 1)
    with torch.no_grad():
        assert m.c4(torch.zeros(1, 3, 600, 800)).shape == (1, 32, 38, 50)
        assert m.c4(torch.zeros(1, 3, 601, 1000)).shape == (1, 32, 38, 63)


def _random_state(model: MaskRCNNC4, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    state = {k: torch.randn(shape, generator=g) * 0.01 for k, shape in expected_keys(model).items()}
    # a variance is >= 0 (a negative one is refused at load, issue 21)
    return {k: v.abs() if k.endswith("running_var") else v for k, v in state.items()}


def test_checkpoint_layout_is_the_536_keys():
    model = MaskRCNNC4(NARROW)
    keys = expected_keys(model)
    assert len(keys) == 536
    tv = {f"resnet.{k}" for k in torchvision.models.resnet101().state_dict() if not k.endswith("num_batches_tracked")}
    heads = {f"{n}.{p}" for n in ("rpn_net", "rpn_cls_score_net", "rpn_bbox_pred_net", "cls_score_net",
                                  "bbox_pred_net", "mask_up_sampling", "mask_pred_net") for p in ("weight", "bias")}
    assert set(keys) == tv | heads
    assert sum(k.startswith("resnet.layer4.") for k in keys) == 50
    assert keys["rpn_cls_score_net.weight"] == (24, 8, 1, 1) and keys["bbox_pred_net.weight"] == (324, 64)


def test_random_checkpoint_loads_strictly(tmp_path):
    model = MaskRCNNC4(NARROW)
    state = _random_state(model)
    path = tmp_path / "det.pth"
    torch.save(state, path)
    loaded = load_detector(path, NARROW)
    for k, v in loaded.state_dict().items():
        if not k.endswith("num_batches_tracked"):
            assert torch.equal(v, state[k]), k


@pytest.mark.parametrize("key", ["resnet.layer3.7.bn2.running_var", "rpn_cls_score_net.bias", "mask_pred_net.weight"])
def test_renamed_key_fails_naming_it(tmp_path, key):
    model = MaskRCNNC4(NARROW)
    state = _random_state(model)
    state[key + "_renamed"] = state.pop(key)
    path = tmp_path / "det.pth"
    torch.save(state, path)
    with pytest.raises(InputError) as err:
        load_detector(path, NARROW)
    msg = str(err.value)
    assert key in msg and key + "_renamed" in msg and "det.pth" in msg and "\n" not in msg


def test_wrong_shape_and_not_a_dict_fail(tmp_path):
    model = MaskRCNNC4(NARROW)
    state = _random_state(model)
    state["cls_score_net.weight"] = torch.zeros(80, 64)
    torch.save(state, tmp_path / "a.pth")
    with pytest.raises(InputError, match=r"cls_score_net.weight has shape \(80, 64\)"):
        load_detector(tmp_path / "a.pth", NARROW)
    torch.save([1, 2], tmp_path / "b.pth")
    with pytest.raises(InputError, match="expected a state dict"):
        load_detector(tmp_path / "b.pth", NARROW)


def test_save_detector_round_trip_has_no_num_batches_tracked(tmp_path):
    model = MaskRCNNC4(NARROW)
    state = _random_state(model, 4)
    model.load_state_dict({k: v for k, v in state.items() if not k.startswith("mask_")}, strict=False)
    path = save_detector(model, tmp_path / "d.pth", {k: v for k, v in state.items() if k.startswith("mask_")})
    raw = torch.load(path, weights_only=True)
    assert len(raw) == 536 and not any(k.endswith("num_batches_tracked") for k in raw)
    assert torch.equal(raw["mask_pred_net.weight"], state["mask_pred_net.weight"])


# ---------------------------------------------------------------------------------------
# images and features from images

TINY_DET = DetectorConfig(width=4, blocks=(1, 1, 1, 2), rpn_channels=8, test_scale=96, test_max_size=160)


def _tiny_checkpoint(path, seed=0, dc=TINY_DET):
    torch.manual_seed(seed)
    model = MaskRCNNC4(dc)
    mask = {k: torch.randn(shape) * 0.01 for k, shape in expected_keys(model).items() if k.startswith("mask_")}
    return save_detector(model, path, mask)


def test_read_rgb_errors_name_the_file(tmp_path):
    from sepnms.io.images import image_ids_in_folder, read_bgr, read_rgb

    with pytest.raises(InputError, match="image file not found"):
        read_rgb(tmp_path / "nope.jpg")
    (tmp_path / "bad.jpg").write_bytes(b"not a jpeg at all")
    with pytest.raises(InputError, match=r"bad\.jpg: not an image file"):
        read_rgb(tmp_path / "bad.jpg")
    with pytest.raises(InputError, match=r"bad\.jpg: not an image file"):  # refused by the gate before OpenCV
        read_bgr(tmp_path / "bad.jpg")
    with pytest.raises(InputError, match="image file not found"):
        read_bgr(tmp_path / "nope.jpg")
    from PIL import Image

    Image.fromarray(np.random.default_rng(0).integers(0, 256, (60, 80, 3), dtype=np.uint8)).save(tmp_path / "ok.jpg")
    data = (tmp_path / "ok.jpg").read_bytes()
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) // 2])
    assert read_bgr(tmp_path / "ok.jpg").shape == (60, 80, 3)
    with pytest.raises(InputError, match=r"cut\.jpg: cannot decode the image \(truncated or corrupt\?\)"):
        read_bgr(tmp_path / "cut.jpg")
    (tmp_path / "noid.png").write_bytes(b"")
    with pytest.raises(InputError, match="no image id"):
        image_ids_in_folder(tmp_path)


def test_read_bgr_applies_the_exif_orientation_as_cv2_imread(tmp_path):
    """A JPEG tagged Orientation = 6 (stored sideways, shown rotated 90 degrees clockwise) reads
    upright as ``cv2.imread`` (MAttNet's reader) reads it: [W, H, 3], the raw pixels rotated."""
    from PIL import Image

    from sepnms.io.images import read_bgr

    h, w = 40, 64
    yy, xx = np.mgrid[0:h, 0:w]
    raw = np.stack([xx * 3, yy * 5, np.full((h, w), 128)], -1).astype(np.uint8)  # smooth RGB ramps
    exif = Image.Exif()
    exif[0x0112] = 6
    path = tmp_path / "tagged.jpg"
    Image.fromarray(raw).save(path, quality=98, exif=exif.tobytes())
    bgr = read_bgr(path)
    assert bgr.shape == (w, h, 3)
    upright_rgb = np.rot90(raw, k=-1)  # 90 degrees clockwise
    assert np.abs(bgr[..., ::-1].astype(int) - upright_rgb.astype(int)).max() <= 6
    plain = tmp_path / "plain.jpg"
    Image.fromarray(raw).save(plain, quality=98)
    assert read_bgr(plain).shape == (h, w, 3)


def test_head_cache_from_images_equals_h5_written_by_the_same_trunk(tmp_path):
    from PIL import Image

    from sepnms.config import load_config
    from sepnms.detection.features import c4_from_bgr
    from sepnms.data.head_features import HeadCache
    from sepnms.io.images import read_bgr
    from sepnms.io.head_feats import write_head

    ckpt = _tiny_checkpoint(tmp_path / "det.pth")
    rng = np.random.default_rng(0)
    files = {}
    for iid, (h, w) in {7: (60, 80), 11: (90, 70)}.items():
        files[iid] = tmp_path / f"{iid}.png"
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(files[iid])
    overrides = [f"detector.{k}={v}" for k, v in
                 {"width": 4, "blocks": "[1,1,1,2]", "rpn_channels": 8, "test_scale": 96, "test_max_size": 160}.items()]
    cfg = load_config("demo", overrides + [f"paths.detector_checkpoint={ckpt}", "features.source=images",
                                           f"paths.head_feats_dir={tmp_path / 'h5'}"])
    model = load_detector(ckpt, cfg.detector)
    for iid, p in files.items():
        head, info = c4_from_bgr(model, read_bgr(p))
        write_head(tmp_path / "h5", iid, head, info)
    from_images = HeadCache.for_config(cfg, files, size=1)
    from_h5 = HeadCache.for_config(cfg.model_copy(update={"features": cfg.features.model_copy(update={"source": "h5"})}))
    assert from_images.get(7)[0].shape == (1, 64, 6, 8)  # 60x80 -> 96x128 -> /16
    for iid in (7, 11, 7):
        a, sa = from_images.get(iid)
        b, sb = from_h5.get(iid)
        assert a.shape == b.shape and a.shape[1] == 64
        assert sa == pytest.approx(sb)
        torch.testing.assert_close(a, b, atol=1e-5, rtol=0)
    assert len(from_images._cache) == 1  # bounded


# ---------------------------------------------------------------------------------------
# `sepnms detect` and features from images on the embedded world


@pytest.mark.slow
def test_detect_on_world_images_writes_what_prepare_reads(tiny_world, tmp_path):
    import json

    from conftest import TINY

    from sepnms.config import load_config
    from sepnms.engine.detect import detect, merge_detect
    from sepnms.engine.prepare import prepare
    from sepnms.io.head_feats import read_head
    from sepnms.io.mattnet_dets import read_dets
    from sepnms.io.refer import Refer
    from sepnms.io.rpn import load_rpn

    cfg = load_config(tiny_world / "config.yaml", TINY + [f"workdir={tmp_path / 'w'}"])
    refer = Refer.load(cfg.refs_path(), cfg.instances_path())
    ids = sorted(refer.refs_by_image)
    # shard 0 of 2 alone: the merge refuses, naming what is missing
    detect(cfg, save_head="float16", progress=False, shard=(0, 2), flush_every=5, merge=False)
    with pytest.raises(InputError, match="not done yet"):
        merge_detect(cfg, save_head="float16")
    out = detect(cfg, save_head="float16", progress=False, flush_every=5)  # resumes, then merges
    rpn = load_rpn(out["rpn_boxes"], out["rpn_box_scores"])
    assert sorted(rpn.boxes) == ids
    for iid in ids:
        boxes, scores = rpn.get(iid)
        w, h = refer.image_size(iid)
        assert 0 < boxes.shape[0] <= 300 and boxes.shape[1:] == (81, 4)
        np.testing.assert_allclose(scores.sum(1), 1.0, atol=1e-4)
        assert boxes[..., 0::2].min() >= 0 and boxes[..., 2].max() <= w - 1 and boxes[..., 3].max() <= h - 1
        # the saved head (float16) is the world's head feature (the same trunk, float32)
        mine, info = read_head(out["head_feats_dir"], iid)
        world, winfo = read_head(cfg.paths.head_feats_dir, iid)
        np.testing.assert_allclose(info, winfo, rtol=1e-6)
        np.testing.assert_allclose(mine, world, rtol=2e-3, atol=2e-3)
    raw = json.loads(open(out["dets"]).read())
    assert {d["image_id"] for d in raw} == set(ids)  # the threshold is lowered until an image has one
    assert {"det_id", "h5_id", "box", "image_id", "category_id", "category_name", "score"} <= set(raw[0])
    assert [d["det_id"] for d in raw] == list(range(len(raw)))
    dets = read_dets(out["dets"], inclusive=True)
    assert all(d["box_xyxy"][2] == pytest.approx(d["box"][0] + d["box"][2] - 1) for d in dets[:50])
    # prepare reads the two pickles as they are
    cfg2 = cfg.model_copy(update={"workdir": tmp_path / "w2"}, deep=True)
    cfg2.paths.rpn_boxes, cfg2.paths.rpn_box_scores = out["rpn_boxes"], out["rpn_box_scores"]
    summary = prepare(cfg2, progress=False)
    assert summary["images"] == len(ids)


@pytest.mark.slow
def test_features_from_images_give_the_same_proposals_as_h5(prepared, tmp_path):
    import shutil

    from sepnms.engine.propose import propose
    from sepnms.engine.train import train
    from sepnms.io.proposals import read_proposals

    work = tmp_path / "work"
    shutil.copytree(prepared.workdir, work)
    cfg = prepared.model_copy(update={"workdir": work}, deep=True)
    cfg.train.max_steps, cfg.train.val_max_expressions = 2, 4
    train(cfg, "sepnms", resume=False, progress=False)
    h5 = read_proposals(propose(cfg, "sepnms", ["val"], progress=False)["val"])
    cfg.features.source = "images"
    img = read_proposals(propose(cfg, "sepnms", ["val"], progress=False)["val"])
    assert [e.sent_id for e in h5] == [e.sent_id for e in img] and len(h5) > 0
    worst = 0.0
    for a, b in zip(h5, img):
        assert np.array_equal(a.box, b.box)
        for col in ("ref_score", "ctx_score"):
            worst = max(worst, float(np.abs(a.scores[col] - b.scores[col]).max()))
    assert worst <= 1e-5


def _images_dir(tmp_path, sizes):
    from PIL import Image

    folder = tmp_path / "imgs"
    folder.mkdir()
    rng = np.random.default_rng(1)
    for iid, (h, w) in sizes.items():
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(folder / f"img_{iid:06d}.png")
    return folder


TINY_SETS = ["detector.width=4", "detector.blocks=[1,1,1,2]", "detector.rpn_channels=8", "detector.test_scale=96",
             "detector.test_max_size=160", "model.feat_channels=64"]


def test_cli_detect_on_a_folder_and_compare(tmp_path, capsys):
    import json

    from sepnms.cli import main
    from sepnms.config import load_config
    from sepnms.engine.detect import category_names
    from sepnms.evaluation.rpn_compare import compare_rpn
    from sepnms.io.rpn import load_rpn, write_rpn

    ckpt = _tiny_checkpoint(tmp_path / "det.pth")
    folder = _images_dir(tmp_path, {5: (60, 80), 9: (60, 80), 12: (70, 50)})
    sets = sum((["--set", s] for s in TINY_SETS + [f"paths.detector_checkpoint={ckpt}", f"workdir={tmp_path / 'w'}",
                                                     "detector.batch_images=2"]), [])
    assert main(["detect", "-c", "demo", *sets, "--images", str(folder), "--quiet"]) == 0
    out = tmp_path / "w" / "detect"
    rpn = load_rpn(out / "rpn_boxes.pkl", out / "rpn_box_scores.pkl")
    assert sorted(rpn.boxes) == [5, 9, 12]
    capsys.readouterr()
    # the same outputs compared with themselves
    assert main(["detect", "-c", "demo", *sets, "--images", str(folder), "--quiet", "--compare-only",
                 "--compare", str(out / "rpn_boxes.pkl"), str(out / "rpn_box_scores.pkl")]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["images_same_rows"] == 3 and report["score_abs_diff"]["max"] == 0.0
    assert report["rows_boxes_within_1px"] == 1.0
    # a reference that differs by known amounts on one image, lacks a row on another and lists the
    # third's rows in another order
    boxes = {k: v.copy() for k, v in rpn.boxes.items()}
    scores = {k: v.copy() for k, v in rpn.scores.items()}
    scores[5][0, 3] += 0.25
    boxes[5][1, 2, 0] += 3.0
    boxes[9], scores[9] = boxes[9][1:], scores[9][1:]
    perm = np.random.default_rng(0).permutation(len(boxes[12]))
    assert (perm != np.arange(len(perm))).any()
    boxes[12], scores[12] = boxes[12][perm], scores[12][perm]
    write_rpn(tmp_path / "ref_b.pkl", tmp_path / "ref_s.pkl", boxes, scores)
    cmp = compare_rpn(out / "rpn_boxes.pkl", out / "rpn_box_scores.pkl", tmp_path / "ref_b.pkl", tmp_path / "ref_s.pkl")
    assert cmp["images_common"] == 3 and cmp["images_same_rows"] == 2
    # matched by box: the reordered image is no difference, the shorter one compares its other rows
    assert cmp["score_abs_diff"]["max"] == pytest.approx(0.25, abs=1e-6)
    assert cmp["box_abs_diff_px"]["max"] == pytest.approx(3.0, abs=1e-4)
    n_rows = len(rpn.boxes[5]) + len(rpn.boxes[9]) - 1 + len(rpn.boxes[12])
    assert cmp["rows_compared"] == n_rows and cmp["rows_boxes_within_1px"] == pytest.approx(1 - 1 / n_rows)
    assert cmp["rows_only_ours"] == 1 and cmp["rows_only_reference"] == 0
    assert cmp["rows_matched_elsewhere"] == int((perm != np.arange(len(perm))).sum()) + len(rpn.boxes[9]) - 1
    # dets.json: run_detect.py's order (CPython 2.7 dicts): images 9, 12, 5 (slots 9 & 7 = 1, 4, 5 of
    # an 8-slot table), each image's detections class by class in that dict order, NMS order within
    from sepnms.detection.py2_order import py2_dict_order

    dets = json.loads((out / "dets.json").read_text())
    assert [d["det_id"] for d in dets] == list(range(len(dets))) == [d["h5_id"] for d in dets]
    seen = [d["image_id"] for d in dets]
    assert [iid for k, iid in enumerate(seen) if k == 0 or seen[k - 1] != iid] == [9, 12, 5]
    rank = {n: i for i, n in enumerate(py2_dict_order([n for _, n in category_names(load_config("demo"))]))}
    for iid in (5, 9, 12):
        mine = [(rank[d["category_name"]], -d["score"]) for d in dets if d["image_id"] == iid]
        assert mine == sorted(mine) and len(mine) >= 1


def test_dets_class_order_follows_the_python_27_dict_or_the_category_ids():
    from sepnms.config import load_config
    from sepnms.engine.detect import category_names, dets_class_order

    cfg = load_config("demo")
    cats = category_names(cfg)
    order = dets_class_order(cfg, cats)
    # CPython 2.7's cls_to_dets.keys() starts toilet, teddy bear, cup, bicycle (COCO ids 70, 88, 47, 2)
    assert [cats[c - 1][1] for c in order[:4]] == ["toilet", "teddy bear", "cup", "bicycle"]
    assert sorted(order) == list(range(1, 81))
    py3 = load_config("demo", ["detector.det_order=py3"])
    assert dets_class_order(py3, cats) == list(range(1, 81))


def test_cli_detect_bad_inputs_exit_2_with_one_line(tmp_path, capsys):
    from sepnms.cli import main

    ckpt = _tiny_checkpoint(tmp_path / "det.pth")
    folder = _images_dir(tmp_path, {5: (60, 80)})
    base = sum((["--set", s] for s in TINY_SETS + [f"workdir={tmp_path / 'w'}"]), [])
    # a renamed key in the checkpoint
    state = torch.load(ckpt, weights_only=True)
    state["rpn_netX.weight"] = state.pop("rpn_net.weight")
    torch.save(state, tmp_path / "bad.pth")
    rc = main(["detect", "-c", "demo", *base, "--set", f"paths.detector_checkpoint={tmp_path / 'bad.pth'}",
               "--images", str(folder), "--quiet"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "\n" not in err and "bad.pth" in err and "rpn_net.weight" in err and "rpn_netX.weight" in err
    # a corrupt image in the folder
    (folder / "img_000007.jpg").write_bytes(b"\xff\xd8\xff garbage")
    rc = main(["detect", "-c", "demo", *base, "--set", f"paths.detector_checkpoint={ckpt}",
               "--images", str(folder), "--quiet"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "\n" not in err and "img_000007.jpg" in err
    # no checkpoint configured
    rc = main(["detect", "-c", "demo", *base, "--images", str(folder), "--quiet"])
    assert rc == 2 and "paths.detector_checkpoint" in capsys.readouterr().err


def test_features_from_images_inputs_are_checked(tmp_path):
    from types import SimpleNamespace

    from sepnms.config import load_config
    from sepnms.data.head_features import check_image_inputs
    from sepnms.errors import ConfigError

    ckpt = _tiny_checkpoint(tmp_path / "det.pth")
    folder = _images_dir(tmp_path, {5: (60, 80)})
    refdb = SimpleNamespace(images={5: {"file_name": "img_000005.png"}, 6: {"file_name": "img_000006.png"}})
    cfg = load_config("demo", TINY_SETS + [f"paths.detector_checkpoint={ckpt}", f"paths.images_dir={folder}",
                                           "features.source=images"])
    with pytest.raises(InputError, match=r"img_000006.png: image files missing for 1 of 2 images"):
        check_image_inputs(cfg, refdb)
    refdb.images.pop(6)
    check_image_inputs(cfg, refdb)
    with pytest.raises(ConfigError, match="model.feat_channels"):
        check_image_inputs(cfg.model_copy(update={"model": cfg.model.model_copy(update={"feat_channels": 32})}), refdb)

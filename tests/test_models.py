"""Tests for sepnms.models: pooling, head, relatedness branches, the full model."""
from __future__ import annotations

import math

import pytest
import torch

from sepnms.config import ModelConfig, load_config
from sepnms.errors import ConfigError, InputError
from sepnms.models.head import Layer4Head, load_layer4_from_maskrcnn
from sepnms.models.pooling import pool_rois
from sepnms.models.relatedness import CtxRelatedness, RefRelatedness, location_features
from sepnms.models.sepnms_model import SepNMSModel, build_model, count_parameters

torch.set_num_threads(2)


# ---------------------------------------------------------------------------------------
# helpers


def crop_pool_reference(head, boxes, scale, stride, size=7):
    """Slow reference of the parity crop: for each output cell, the sample point runs
    linearly from the box's first edge to its last edge (feature-map units, corners
    included); bilinear interpolation with zeros outside the map.

    head [1, C, H, W], boxes [R, 4] -> [R, C, size, size] (float64)."""
    feat = head[0].double()
    channels, height, width = feat.shape
    out = torch.zeros(boxes.size(0), channels, size, size, dtype=torch.float64)
    for r in range(boxes.size(0)):
        x1, y1, x2, y2 = (float(v) * scale / stride for v in boxes[r])
        for i in range(size):
            ty = i / (size - 1) if size > 1 else 0.5
            y = y1 + (y2 - y1) * ty
            for j in range(size):
                tx = j / (size - 1) if size > 1 else 0.5
                x = x1 + (x2 - x1) * tx
                x0, y0 = math.floor(x), math.floor(y)
                for yy, wy in ((y0, 1 - (y - y0)), (y0 + 1, y - y0)):
                    for xx, wx in ((x0, 1 - (x - x0)), (x0 + 1, x - x0)):
                        if 0 <= yy < height and 0 <= xx < width:
                            out[r, :, i, j] += wy * wx * feat[:, yy, xx]
    return out


def make_inputs(cfg: ModelConfig, batch=2, rois=3, tokens=5, vocab=10, seed=0):
    g = torch.Generator().manual_seed(seed)
    roi_feats = torch.randn(batch, rois, cfg.head_out_channels, generator=g)
    loc = torch.rand(batch, rois, 5, generator=g)
    word_ids = torch.randint(1, vocab, (batch, tokens), generator=g)
    lengths = torch.tensor([tokens] + [max(1, tokens - 2 - k) for k in range(batch - 1)])
    word_mask = torch.arange(tokens)[None, :] < lengths[:, None]
    word_ids = word_ids.masked_fill(~word_mask, 0)
    text_vec = torch.randn(batch, cfg.text_dim, generator=g)
    return roi_feats, loc, word_ids, word_mask, text_vec


def word_vectors(cfg: ModelConfig, vocab=10, seed=1):
    vectors = torch.randn(vocab, cfg.word_dim, generator=torch.Generator().manual_seed(seed))
    vectors[0] = 0.0
    return vectors


@pytest.fixture(scope="module")
def paper_cfg() -> ModelConfig:
    return load_config("paper").model


@pytest.fixture(scope="module")
def demo_cfg() -> ModelConfig:
    return load_config("demo").model


def tiny_cfg(**update) -> ModelConfig:
    base = dict(
        feat_channels=8, head_mid_channels=4, head_out_channels=16, head_blocks=2, word_dim=6,
        gru_hidden=4, hidden_dim=12, embed_dim=8, text_dim=10,
    )
    base.update(update)
    return ModelConfig(**base)


# ---------------------------------------------------------------------------------------
# parameter count


def test_paper_parameter_count(paper_cfg):
    def linear(a, b):
        return a * b + b

    def conv(a, b, k=1):  # no bias
        return a * b * k * k

    def bn(c):
        return 2 * c  # scale + shift (running stats are buffers)

    def bottleneck(inp, mid, downsample):
        out = 4 * mid
        n = conv(inp, mid) + bn(mid) + conv(mid, mid, 3) + bn(mid) + conv(mid, out) + bn(out)
        if downsample:
            n += conv(inp, out) + bn(out)
        return n

    head = bottleneck(1024, 512, True) + 2 * bottleneck(2048, 512, False)
    # BiGRU(300, 256): per direction 3 gates x (W_ih 256x300 + W_hh 256x256 + b_ih 256 + b_hh 256)
    gru = 2 * 3 * (256 * 300 + 256 * 256 + 256 + 256)
    key_mlp = linear(2048, 1024) + linear(1024, 512)
    score_mlp = linear(2048, 1024) + linear(1024, 512)
    ctx = gru + key_mlp + linear(512 + 512, 1) + score_mlp + linear(512, 1)
    ref = (
        linear(2048 + 5, 1024) + linear(1024, 512)                    # visual
        + linear(768, 512) + bn(512) + linear(512, 512) + bn(512)     # text
    )
    vocab = 10
    model = SepNMSModel(paper_cfg, torch.zeros(vocab, 300))
    total = count_parameters(model)
    assert count_parameters(model.head) == head
    assert total == head + ctx + ref
    assert 24.2e6 < total < 24.6e6
    assert count_parameters(model, trainable_only=False) == total + vocab * 300  # frozen GloVe

    baseline = SepNMSModel(paper_cfg, torch.zeros(vocab, 300), model_type="refnms")
    assert count_parameters(baseline) == head + ctx


# ---------------------------------------------------------------------------------------
# output shapes


@pytest.mark.parametrize("preset", ["paper", "demo"])
def test_output_shapes(preset):
    cfg = load_config(preset).model
    torch.manual_seed(0)
    model = SepNMSModel(cfg, word_vectors(cfg))
    head_map = torch.randn(1, cfg.feat_channels, 6, 8)
    boxes = torch.tensor([[0.0, 0.0, 60.0, 40.0], [10.0, 5.0, 100.0, 90.0]])
    with torch.no_grad():
        model.eval()
        feats = model.roi_features(head_map, boxes, scale=1.2)
    assert feats.shape == (2, cfg.head_out_channels)

    b, r, t = 3, 4, 5
    roi_feats, loc, word_ids, word_mask, text_vec = make_inputs(cfg, batch=b, rois=r, tokens=t)
    model.train()
    ref_logit, ctx_logit = model(roi_feats, loc, word_ids, word_mask, text_vec)
    assert ref_logit.shape == (b, r) and ctx_logit.shape == (b, r)
    ref2, ctx2 = model.relatedness(roi_feats, loc, word_ids, word_mask, text_vec)
    assert ref2.shape == (b, r) and ctx2.shape == (b, r)
    assert torch.isfinite(ref_logit).all() and torch.isfinite(ctx_logit).all()

    baseline = SepNMSModel(cfg, word_vectors(cfg), model_type="refnms")
    ref_none, ctx_only = baseline(roi_feats, loc, word_ids, word_mask, None)
    assert ref_none is None and baseline.ref_relatedness is None
    assert ctx_only.shape == (b, r)


def test_sepnms_needs_text_vec():
    cfg = tiny_cfg()
    model = SepNMSModel(cfg, word_vectors(cfg))
    roi_feats, loc, word_ids, word_mask, _ = make_inputs(cfg)
    with pytest.raises(ValueError, match="text_vec"):
        model(roi_feats, loc, word_ids, word_mask, None)


def test_backward_reaches_all_trainable_parameters():
    cfg = tiny_cfg()
    torch.manual_seed(0)
    model = SepNMSModel(cfg, word_vectors(cfg))
    model.train()
    boxes = torch.tensor([[0.0, 0.0, 40.0, 40.0], [8.0, 16.0, 70.0, 60.0], [30.0, 2.0, 50.0, 20.0]])
    feats = model.roi_features(torch.randn(1, cfg.feat_channels, 6, 6), boxes, scale=1.0)  # [3, 16]
    roi_feats = torch.stack([feats, feats.flip(0)])                                       # [2, 3, 16]
    _, loc, word_ids, word_mask, text_vec = make_inputs(cfg, batch=2, rois=3)
    ref_logit, ctx_logit = model(roi_feats, loc, word_ids, word_mask, text_vec)
    (ref_logit.sum() + ctx_logit.sum()).backward()
    for name, p in model.named_parameters():
        if p.requires_grad:
            assert p.grad is not None, name
    assert model.ctx_relatedness.embedding.weight.grad is None


# ---------------------------------------------------------------------------------------
# pooling


def test_crop_pool_matches_reference():
    g = torch.Generator().manual_seed(0)
    head = torch.randn(1, 3, 9, 13, generator=g)
    scale, stride = 0.5, 16
    # original image about 13*16/0.5 = 416 x 288 pixels
    boxes = torch.tensor([
        [0.0, 0.0, 415.0, 287.0],      # whole image, touches every border
        [0.0, 0.0, 40.0, 30.0],        # top-left corner
        [380.0, 250.0, 415.0, 287.0],  # bottom-right corner
        [-30.0, 100.0, 60.0, 300.0],   # sticks out of the map (zeros outside)
        [123.4, 56.7, 250.1, 199.9],   # interior, fractional
        [200.0, 100.0, 200.0, 180.0],  # zero width
    ])
    fast = pool_rois(head, boxes, scale, stride, size=7, mode="crop")
    slow = crop_pool_reference(head, boxes, scale, stride, size=7)
    assert fast.shape == (6, 3, 7, 7)
    torch.testing.assert_close(fast.double(), slow, atol=1e-5, rtol=0)


def test_crop_pool_other_size_matches_reference():
    g = torch.Generator().manual_seed(1)
    head = torch.randn(1, 2, 5, 6, generator=g)
    boxes = torch.tensor([[3.0, 7.0, 50.0, 61.0], [0.0, 0.0, 80.0, 64.0]])
    fast = pool_rois(head, boxes, 1.0, 16, size=4, mode="crop")
    torch.testing.assert_close(fast.double(), crop_pool_reference(head, boxes, 1.0, 16, size=4), atol=1e-5, rtol=0)


def test_roi_align_mode_shape_and_scale():
    # feature value = x index; with aligned=True an interior bin averages to its centre - 0.5
    height, width = 10, 20
    head = torch.arange(width, dtype=torch.float32).expand(1, 2, height, width).contiguous()
    scale, stride, size = 2.0, 16, 4
    box = torch.tensor([[40.0, 24.0, 104.0, 56.0]])   # feature units: x 5..13, y 3..7
    out = pool_rois(head, box, scale, stride, size=size, mode="roi_align")
    assert out.shape == (1, 2, size, size)
    x1f, x2f = 40.0 * scale / stride, 104.0 * scale / stride
    bin_w = (x2f - x1f) / size
    expected = torch.tensor([x1f + (j + 0.5) * bin_w - 0.5 for j in range(size)])
    torch.testing.assert_close(out[0, 0], expected.expand(size, size), atol=1e-4, rtol=0)


@pytest.mark.parametrize("mode", ["crop", "roi_align"])
def test_pool_no_boxes(mode):
    head = torch.randn(1, 3, 5, 5)
    out = pool_rois(head, torch.zeros(0, 4), 1.0, 16, size=7, mode=mode)
    assert out.shape == (0, 3, 7, 7)


def test_pool_bad_mode():
    with pytest.raises(ValueError, match="mode"):
        pool_rois(torch.randn(1, 3, 5, 5), torch.zeros(1, 4), 1.0, 16, mode="max")


def test_model_roi_features_no_boxes(demo_cfg):
    model = SepNMSModel(demo_cfg, word_vectors(demo_cfg))
    out = model.roi_features(torch.randn(1, demo_cfg.feat_channels, 5, 5), torch.zeros(0, 4), 1.0)
    assert out.shape == (0, demo_cfg.head_out_channels)


def test_model_roi_features_uses_configured_pooling():
    cfg = tiny_cfg(pooling="roi_align", pool_size=3)
    model = SepNMSModel(cfg, word_vectors(cfg)).eval()
    head_map = torch.randn(1, cfg.feat_channels, 6, 6)
    boxes = torch.tensor([[4.0, 4.0, 60.0, 50.0]])
    with torch.no_grad():
        got = model.roi_features(head_map, boxes, 1.0)
        want = model.head(pool_rois(head_map, boxes, 1.0, cfg.feat_stride, 3, "roi_align"))
    torch.testing.assert_close(got, want)


def test_roi_features_wrong_channels(demo_cfg):
    model = SepNMSModel(demo_cfg, word_vectors(demo_cfg))
    with pytest.raises(ConfigError, match="feat_channels"):
        model.roi_features(torch.randn(1, demo_cfg.feat_channels + 1, 5, 5), torch.zeros(1, 4), 1.0)


# ---------------------------------------------------------------------------------------
# head


def test_head_names_shape_and_config_check():
    head = Layer4Head(8, 4, 16, 3)
    keys = head.state_dict().keys()
    for key in ("0.conv1.weight", "0.downsample.0.weight", "0.downsample.1.running_var",
                "0.bn1.running_mean", "2.conv3.weight"):
        assert key in keys
    assert "1.downsample.0.weight" not in keys
    assert head(torch.randn(5, 8, 7, 7)).shape == (5, 16)
    assert head(torch.randn(0, 8, 7, 7)).shape == (0, 16)
    with pytest.raises(ConfigError, match="4 x"):
        Layer4Head(8, 4, 20, 1)


def test_head_batchnorm_trains_like_ref_nms():
    # Ref-NMS keeps the head's BatchNorm in train mode during training (not frozen).
    cfg = tiny_cfg()
    model = SepNMSModel(cfg, word_vectors(cfg))
    model.train()
    bn = model.head[0].bn1
    before = bn.running_mean.clone()
    model.roi_features(torch.randn(1, cfg.feat_channels, 6, 6), torch.tensor([[0.0, 0.0, 50.0, 40.0]] * 2), 1.0)
    assert bn.training and bn.weight.requires_grad
    assert not torch.equal(before, bn.running_mean)


def _fake_checkpoint(head: Layer4Head, nested: bool = True) -> dict:
    tensors = {}
    for key, value in head.state_dict().items():
        if key.endswith("num_batches_tracked"):
            continue  # MAttNet's checkpoint predates these buffers
        tensors["resnet.layer4." + key] = value.clone()
    tensors["resnet.layer3.0.conv1.weight"] = torch.randn(2, 2, 1, 1)
    tensors["rcnn.cls_score.weight"] = torch.randn(81, 16)
    return {"model": tensors, "iter": 1250000} if nested else tensors


def _randomise_bn_stats(head: Layer4Head, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    for module in head.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.copy_(torch.randn(module.num_features, generator=g))
            module.running_var.copy_(torch.rand(module.num_features, generator=g) + 0.5)
            module.weight.data.copy_(torch.randn(module.num_features, generator=g))


@pytest.mark.parametrize("nested", [True, False])
def test_load_layer4_from_maskrcnn(tmp_path, nested):
    torch.manual_seed(0)
    source = Layer4Head(8, 4, 16, 2)
    _randomise_bn_stats(source, 1)
    path = tmp_path / "mrcn.pth"
    torch.save(_fake_checkpoint(source, nested), path)

    target = Layer4Head(8, 4, 16, 2)
    load_layer4_from_maskrcnn(target, path)
    src_state, dst_state = source.state_dict(), target.state_dict()
    for key, value in src_state.items():
        if key.endswith("num_batches_tracked"):
            continue
        assert torch.equal(dst_state[key], value), key


def test_build_model_loads_checkpoint(tmp_path, demo_cfg):
    torch.manual_seed(0)
    source = Layer4Head(demo_cfg.feat_channels, demo_cfg.head_mid_channels,
                        demo_cfg.head_out_channels, demo_cfg.head_blocks)
    _randomise_bn_stats(source, 2)
    path = tmp_path / "mrcn.pth"
    torch.save(_fake_checkpoint(source), path)
    model = build_model(demo_cfg, word_vectors(demo_cfg), maskrcnn_checkpoint=path)
    assert torch.equal(model.head[0].conv1.weight, source[0].conv1.weight)
    assert torch.equal(model.head[-1].bn3.running_var, source[-1].bn3.running_var)


def test_load_layer4_missing_file(tmp_path):
    path = tmp_path / "nope.pth"
    with pytest.raises(InputError, match="nope.pth"):
        load_layer4_from_maskrcnn(Layer4Head(8, 4, 16, 1), path)


def test_load_layer4_not_a_checkpoint(tmp_path):
    path = tmp_path / "garbage.pth"
    path.write_bytes(b"this is not a checkpoint")
    with pytest.raises(InputError, match="garbage.pth"):
        load_layer4_from_maskrcnn(Layer4Head(8, 4, 16, 1), path)


def test_load_layer4_no_layer4_keys(tmp_path):
    path = tmp_path / "other.pth"
    torch.save({"resnet.layer3.0.conv1.weight": torch.zeros(1)}, path)
    with pytest.raises(InputError, match="other.pth") as info:
        load_layer4_from_maskrcnn(Layer4Head(8, 4, 16, 1), path)
    assert "resnet.layer4." in str(info.value)


def test_load_layer4_shape_mismatch(tmp_path):
    path = tmp_path / "wide.pth"
    torch.save(_fake_checkpoint(Layer4Head(8, 4, 16, 1)), path)
    with pytest.raises(InputError) as info:
        load_layer4_from_maskrcnn(Layer4Head(12, 4, 16, 1), path)   # in_channels differ
    message = str(info.value)
    assert "wide.pth" in message and "resnet.layer4.0.conv1.weight" in message
    assert "(4, 8, 1, 1)" in message and "(4, 12, 1, 1)" in message


def test_load_layer4_block_count_mismatch(tmp_path):
    path = tmp_path / "short.pth"
    torch.save(_fake_checkpoint(Layer4Head(8, 4, 16, 1)), path)
    with pytest.raises(InputError, match="lacks"):
        load_layer4_from_maskrcnn(Layer4Head(8, 4, 16, 2), path)
    path2 = tmp_path / "long.pth"
    torch.save(_fake_checkpoint(Layer4Head(8, 4, 16, 3)), path2)
    with pytest.raises(InputError, match="does not have"):
        load_layer4_from_maskrcnn(Layer4Head(8, 4, 16, 2), path2)


# ---------------------------------------------------------------------------------------
# ctx-relatedness


def test_ctx_padded_word_ids_do_not_matter():
    cfg = tiny_cfg()
    torch.manual_seed(0)
    model = SepNMSModel(cfg, word_vectors(cfg)).eval()
    roi_feats, loc, word_ids, word_mask, text_vec = make_inputs(cfg, batch=3, rois=4, tokens=6)
    assert (~word_mask).any()
    other_ids = word_ids.clone()
    other_ids[~word_mask] = torch.randint(1, 10, (int((~word_mask).sum()),))
    with torch.no_grad():
        _, ctx_a = model(roi_feats, loc, word_ids, word_mask, text_vec)
        _, ctx_b = model(roi_feats, loc, other_ids, word_mask, text_vec)
    torch.testing.assert_close(ctx_a, ctx_b, atol=0, rtol=0)


def test_ctx_attention_ignores_padded_words():
    # Padded word states are zero, so without the -inf mask the sentence vector would only
    # shrink and the L2 normalisation would hide it in the logits: check the weights.
    cfg = tiny_cfg()
    torch.manual_seed(0)
    branch = CtxRelatedness(cfg, word_vectors(cfg)).eval()
    roi_feats, _, word_ids, word_mask, _ = make_inputs(cfg, batch=3, rois=4, tokens=6)
    with torch.no_grad():
        weights, words = branch.attend(roi_feats, word_ids, word_mask)
    assert weights.shape == (3, 4, 6) and words.shape == (3, 6, 2 * cfg.gru_hidden)
    pad = (~word_mask)[:, None, :].expand_as(weights)
    assert pad.any()
    assert torch.count_nonzero(weights[pad]) == 0
    assert (weights[~pad] > 0).all()
    torch.testing.assert_close(weights.sum(dim=2), torch.ones(3, 4))


def test_ctx_padded_batch_matches_single_expressions():
    # An expression scored inside a padded batch equals the same expression scored alone.
    cfg = tiny_cfg()
    torch.manual_seed(0)
    branch = CtxRelatedness(cfg, word_vectors(cfg)).eval()
    for p in branch.parameters():
        if p.requires_grad:
            torch.nn.init.normal_(p, std=0.5)  # non-zero biases, so padded states would matter
    roi_feats, _, word_ids, word_mask, _ = make_inputs(cfg, batch=3, rois=4, tokens=7)
    with torch.no_grad():
        batched = branch(roi_feats, word_ids, word_mask)
        for b in range(3):
            n = int(word_mask[b].sum())
            alone = branch(roi_feats[b:b + 1], word_ids[b:b + 1, :n], word_mask[b:b + 1, :n])
            torch.testing.assert_close(batched[b:b + 1], alone, atol=1e-6, rtol=1e-5)


def test_ctx_attention_split_matches_expanded():
    cfg = tiny_cfg()
    branch = CtxRelatedness(cfg, word_vectors(cfg)).eval()
    key = torch.randn(2, 3, cfg.embed_dim)
    words = torch.randn(2, 5, 2 * cfg.gru_hidden)
    fast = branch.attention_logits(key, words, expanded=False)
    slow = branch.attention_logits(key, words, expanded=True)
    assert fast.shape == (2, 3, 5)
    torch.testing.assert_close(fast, slow, atol=1e-6, rtol=1e-5)


def test_ctx_bad_mask():
    cfg = tiny_cfg()
    branch = CtxRelatedness(cfg, word_vectors(cfg))
    roi_feats = torch.randn(1, 2, cfg.head_out_channels)
    with pytest.raises(ValueError, match="at least one"):
        branch(roi_feats, torch.zeros(1, 3, dtype=torch.long), torch.zeros(1, 3, dtype=torch.bool))
    with pytest.raises(ValueError, match="prefix"):
        branch(roi_feats, torch.ones(1, 3, dtype=torch.long), torch.tensor([[True, False, True]]))


def test_ctx_config_checks():
    with pytest.raises(ConfigError, match="embed_dim"):
        CtxRelatedness(tiny_cfg(embed_dim=10), torch.zeros(5, 6))
    with pytest.raises(ConfigError, match="word_dim"):
        CtxRelatedness(tiny_cfg(), torch.zeros(5, 7))
    with pytest.raises(ConfigError, match="model type"):
        SepNMSModel(tiny_cfg(), torch.zeros(5, 6), model_type="mattnet")


def test_embedding_frozen():
    cfg = tiny_cfg()
    vectors = word_vectors(cfg)
    model = SepNMSModel(cfg, vectors)
    emb = model.ctx_relatedness.embedding
    assert not emb.weight.requires_grad
    assert torch.equal(emb.weight, vectors)


# ---------------------------------------------------------------------------------------
# ref-relatedness


def test_ref_logit_is_scaled_dot_product():
    cfg = tiny_cfg()
    torch.manual_seed(0)
    branch = RefRelatedness(cfg).eval()
    hot = RefRelatedness(cfg.model_copy(update={"temperature": cfg.temperature * 2})).eval()
    hot.load_state_dict(branch.state_dict())
    roi_feats, loc, _, _, text_vec = make_inputs(cfg, batch=2, rois=3)
    with torch.no_grad():
        logit = branch(roi_feats, loc, text_vec)
        visual = branch.visual_mlp(torch.cat((roi_feats, loc), dim=2))   # [2, 3, E]
        text = branch.text_mlp(text_vec)                                  # [2, E]
        manual = torch.einsum("bre,be->br", visual, text) / cfg.temperature
        torch.testing.assert_close(logit, manual)
        torch.testing.assert_close(hot(roi_feats, loc, text_vec) * 2, logit)
        moved = branch(roi_feats, loc + 0.3, text_vec)
    assert not torch.allclose(moved, logit)


def test_location_features_hand_computed():
    boxes = torch.tensor([[10.0, 20.0, 50.0, 100.0], [0.0, 0.0, 200.0, 400.0]])
    got = location_features(boxes, width=200.0, height=400.0)
    expected = torch.tensor([
        [10 / 200, 20 / 400, 49 / 200, 99 / 400, (40 * 80) / (200 * 400)],
        [0.0, 0.0, 199 / 200, 399 / 400, 1.0],
    ])
    assert got.shape == (2, 5)
    torch.testing.assert_close(got, expected)


# ---------------------------------------------------------------------------------------
# init and optimisation


def _new_weights(model):
    """(name, weight, bias-or-None) of every new Linear and GRU weight matrix."""
    out = []
    for b, branch in enumerate(model.new_modules()):
        for name, module in branch.named_modules():
            if isinstance(module, torch.nn.Linear):
                out.append((f"{b}.{name}", module.weight, module.bias))
            elif isinstance(module, torch.nn.GRU):
                for pname, p in module.named_parameters():
                    if pname.startswith("weight"):
                        out.append((f"{b}.{name}.{pname}", p, getattr(module, pname.replace("weight", "bias"))))
    return out


def _xavier_violations(model) -> list[str]:
    """Names of new layers whose weights do not look Xavier-uniform or whose bias is not zero.

    Xavier-uniform fills [-a, a] with a = sqrt(6 / (fan_in + fan_out)); PyTorch's default init
    (Linear: kaiming-uniform with a = sqrt(5), i.e. U(+-1/sqrt(fan_in)); GRU: U(+-1/sqrt(hidden)))
    stays below 0.82 a for every layer of the wide model below, so a layer left on the default
    has max |w| < 0.9 a, while Xavier reaches 0.9 a (P(miss) = 0.9^numel < 2e-3 at
    numel >= 64)."""
    bad = []
    for name, w, bias in _new_weights(model):
        fan_out, fan_in = w.shape
        a = math.sqrt(6 / (fan_in + fan_out))
        top = float(w.detach().abs().max())
        if not (0.9 * a <= top <= a + 1e-6):
            bad.append(f"{name}: max |w| {top:.4f}, Xavier bound {a:.4f}")
        if bias is not None and torch.count_nonzero(bias):
            bad.append(f"{name}: non-zero bias")
    return bad


WIDE = dict(word_dim=32, gru_hidden=32, hidden_dim=64, embed_dim=64, text_dim=64, head_out_channels=64,
            head_mid_channels=16)


def test_new_layer_init():
    torch.manual_seed(0)
    cfg = tiny_cfg(**WIDE)
    model = SepNMSModel(cfg, word_vectors(cfg))
    assert len(_new_weights(model)) >= 12  # both branches' Linears and the GRU's 4 matrices
    assert _xavier_violations(model) == []
    bn = model.ref_relatedness.text_mlp[1]
    assert torch.equal(bn.weight, torch.ones_like(bn.weight))
    cfg = tiny_cfg()

    parity = SepNMSModel(tiny_cfg(bn_xavier_init=True), word_vectors(cfg))
    bn = parity.ref_relatedness.text_mlp[1]
    n = bn.weight.numel()
    assert not torch.equal(bn.weight, torch.ones_like(bn.weight))
    assert bn.weight.abs().max() <= math.sqrt(6 / (n + 1)) + 1e-6
    assert torch.count_nonzero(bn.bias) == 0


@pytest.mark.parametrize("model_type", ["sepnms", "refnms"])
def test_param_groups(model_type):
    cfg = tiny_cfg()
    model = SepNMSModel(cfg, word_vectors(cfg), model_type=model_type)
    groups = model.param_groups(lr_head=1e-4, lr_new=2e-4, lr_gru=3e-4, weight_decay=1e-3)
    assert len(groups) == 3
    seen: dict[int, int] = {}
    for group in groups:
        assert group["weight_decay"] == 1e-3
        for p in group["params"]:
            seen[id(p)] = seen.get(id(p), 0) + 1
    trainable = {id(p) for p in model.parameters() if p.requires_grad}
    assert set(seen) == trainable
    assert all(count == 1 for count in seen.values())
    assert id(model.ctx_relatedness.embedding.weight) not in seen
    lrs = {group["lr"] for group in groups}
    assert lrs == {1e-4, 2e-4, 3e-4}
    head_ids = {id(p) for p in model.head.parameters()}
    gru_ids = {id(p) for p in model.ctx_relatedness.gru.parameters()}
    by_lr = {group["lr"]: {id(p) for p in group["params"]} for group in groups}
    assert by_lr[1e-4] == head_ids and by_lr[3e-4] == gru_ids
    torch.optim.Adam(groups)  # accepted by Adam as is


@pytest.mark.parametrize("model_type", ["sepnms", "refnms"])
def test_rois_shared_by_a_batch_of_expressions_broadcast(model_type):
    """[1, R, D] RoI inputs (one image, B expressions) give the same logits as the expanded
    [B, R, D] inputs, in eval mode (propose) and - up to dropout - in training mode."""
    cfg = load_config("demo").model
    torch.manual_seed(0)
    model = SepNMSModel(cfg, torch.randn(20, cfg.word_dim), model_type).eval()
    b, r = 3, 7
    feats = torch.randn(1, r, cfg.head_out_channels)
    loc = torch.rand(1, r, 5)
    ids = torch.randint(1, 20, (b, 5))
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0], [1, 0, 0, 0, 0]], dtype=torch.bool)
    text = torch.randn(b, cfg.text_dim) if model_type == "sepnms" else None
    with torch.no_grad():
        ref_b, ctx_b = model.relatedness(feats, loc, ids, mask, text)
        ref_e, ctx_e = model.relatedness(feats.expand(b, r, -1), loc.expand(b, r, -1), ids, mask, text)
    assert ctx_b.shape == (b, r)
    torch.testing.assert_close(ctx_b, ctx_e, rtol=0, atol=1e-5)  # float32 sums in another order
    if model_type == "sepnms":
        torch.testing.assert_close(ref_b, ref_e, rtol=0, atol=1e-5)
    model.train()
    ref_t, ctx_t = model.relatedness(feats, loc, ids, mask, text)  # the dropout path accepts it too
    assert ctx_t.shape == (b, r)


def test_new_layer_init_check_catches_default_init():
    """A layer left on PyTorch's default init (even with its bias zeroed) fails the check."""
    torch.manual_seed(0)
    cfg = tiny_cfg(**WIDE)
    model = SepNMSModel(cfg, word_vectors(cfg))
    names = [n for n, _, _ in _new_weights(model)]
    for branch in model.new_modules():
        for module in branch.modules():
            if isinstance(module, (torch.nn.Linear, torch.nn.GRU)):
                module.reset_parameters()  # PyTorch's default init
                for pname, p in module.named_parameters():
                    if pname.startswith("bias"):
                        torch.nn.init.zeros_(p)
    flagged = {v.split(":")[0] for v in _xavier_violations(model)}
    assert flagged == set(names)

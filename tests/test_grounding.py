"""The second stage (MAttNet): shapes, masks, geometry, loss, data sampling, training, eval."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from sepnms.config import GroundingConfig, ModelConfig, load_config
from sepnms.grounding.features import location_features, neighbours, object_geometry, offset
from sepnms.grounding.language import PhraseAttention, RNNEncoder
from sepnms.grounding.loss import attribute_weights, ranking_loss
from sepnms.grounding.mattnet import MAttNet, ObjectTable, count_parameters
from sepnms.grounding.vocab import PAD, UNK, build_grounding_vocab, max_length_for


def _objects(n: int, p: int, f: int, k: int = 5, grid: int = 7, seed: int = 0) -> ObjectTable:
    g = torch.Generator().manual_seed(seed)
    mask = torch.rand(n, k, generator=g) > 0.3
    return ObjectTable(torch.randn(n, p, grid, grid, generator=g), torch.randn(n, f, grid, grid, generator=g).relu(),
                       torch.rand(n, 5, generator=g), torch.randn(n, 5 * k, generator=g),
                       torch.randn(n, k, f, generator=g) * mask.unsqueeze(-1), torch.randn(n, k, 5, generator=g), mask)


def _paper_param_count(v: int) -> int:
    """MAttNet's trainable parameters at the released sizes, counted by hand from its layers."""
    lin = lambda i, o: i * o + o  # noqa: E731
    bn = lambda d: 2 * d          # noqa: E731
    mlp = lambda i: lin(i, 512) + bn(512) + lin(512, 512) + bn(512)  # noqa: E731
    language = v * 512 + lin(512, 512) + 2 * (4 * 512 * 512 * 2 + 2 * 4 * 512) + lin(1024, 3) + 3 * lin(1024, 1)
    subject = (1024 + 2048 + 512 + 512) + lin(3072, 512) + bn(512) + lin(512, 50) + lin(3072, 512) + lin(512, 1)
    location = 5 + 25 + lin(30, 512)
    relation = 2048 + 5 + lin(2053, 512)
    matchings = (mlp(2560) + mlp(512)) + (mlp(512) + mlp(512)) + (mlp(512) + mlp(512))
    return language + subject + location + relation + matchings


def test_paper_preset_shapes_and_parameter_count():
    cfg = load_config("paper")
    g, m = cfg.grounding, cfg.model
    assert (g.word_embedding_size, g.rnn_hidden_size, g.jemb_dim, g.num_cxt, g.margin) == (512, 512, 512, 5, 0.1)
    assert (g.lr, tuple(g.betas), g.batch_images, g.seq_per_ref, g.grad_clip, g.max_iters) == (4e-4, (0.8, 0.999), 15, 3, 0.1, 30000)
    net = MAttNet(g, 2000, m.feat_channels, m.head_out_channels)
    assert count_parameters(net) == _paper_param_count(2000)
    net.eval()
    objs = _objects(4, 1024, 2048)
    labels = torch.tensor([[5, 6, 7, 0], [8, 9, 0, 0]])
    out = net(objs, labels, torch.tensor([0, 1, 2, 3, 0]), torch.tensor([0, 0, 1, 1, 1]))
    assert out.scores.shape == (5,)
    assert out.weights.shape == (5, 3) and torch.allclose(out.weights.sum(1), torch.ones(5))
    assert out.grid_attn.shape == (5, 49) and out.sub_attn.shape == (5, 4)
    assert out.att_scores.shape == (4, 50)
    # a score is a convex combination of three cosines
    assert bool((out.scores.abs() <= 1 + 1e-5).all())


def test_phrase_attention_gives_padding_zero_weight():
    torch.manual_seed(0)
    enc = RNNEncoder(20, 8, 8, 6, dropout=0.0).eval()
    att = PhraseAttention(12)
    labels = torch.tensor([[3, 4, 5, 0, 0], [7, 0, 0, 0, 0], [1, 2, 3, 4, 5]])
    context, hidden, embedded = enc(labels)
    attn, phrase = att(context, embedded, labels)
    assert torch.equal(attn[labels == 0], torch.zeros(int((labels == 0).sum())))
    assert torch.allclose(attn.sum(1), torch.ones(3))
    assert torch.allclose(attn[1], torch.tensor([1.0, 0, 0, 0, 0]))
    # whatever sits in the padded positions does not change the phrase or the final hidden state
    emb2 = embedded.clone()
    emb2[0, 3:] = 100.0
    _, phrase2 = att(context, emb2, labels)
    assert torch.allclose(phrase, phrase2)
    ctx_a, hid_a, _ = enc(torch.tensor([[3, 4, 5]]))
    assert torch.allclose(hid_a[0], hidden[0], atol=1e-6)
    assert torch.allclose(ctx_a[0], context[0, :3], atol=1e-6)


def test_location_and_offset_features_against_hand_values():
    # image 200 x 100; box [x=20, y=10, w=40, h=30]
    lf = location_features(np.array([[20, 10, 40, 30]]), 200, 100)
    np.testing.assert_allclose(lf[0], [0.1, 0.1, 59 / 200, 39 / 100, 1200 / 20000], rtol=1e-6)
    # ref centre (40, 25), size 40 x 30; other [100, 40, 20, 10]
    np.testing.assert_allclose(offset(np.array([20, 10, 40, 30]), np.array([100, 40, 20, 10])),
                               [60 / 40, 15 / 30, 80 / 40, 25 / 30, 200 / 1200], rtol=1e-6)
    boxes = np.array([[0, 0, 10, 10], [50, 0, 10, 10], [20, 0, 10, 10], [90, 0, 10, 10]], np.float32)
    cats = np.array([1, 1, 2, 1])
    nb = neighbours(boxes, cats)
    assert nb[0] == ([1, 3], [2])      # same type by distance: centres 55 < 95; other type: 25
    geom = object_geometry(boxes, cats, 100, 100, topk=2)
    np.testing.assert_allclose(geom.dif_lfeats[0, :5], [(50 - 5) / 10, -0.5, (60 - 5) / 10, 0.5, 1.0])
    np.testing.assert_allclose(geom.dif_lfeats[0, 5:], [(90 - 5) / 10, -0.5, (100 - 5) / 10, 0.5, 1.0])
    assert geom.cxt_idx[0].tolist() == [2, 1]      # different type first, then same type
    assert geom.cxt_idx[2].tolist() == [0, 1]      # box 2 (cat 2): both neighbours differ; nearest first
    np.testing.assert_allclose(geom.cxt_lfeats[0, 0], [(20 - 5) / 10, -0.5, (30 - 5) / 10, 0.5, 1.0])
    one = object_geometry(boxes[:1], cats[:1], 100, 100, topk=2)
    assert not one.cxt_mask.any() and not one.dif_lfeats.any()


def test_ranking_loss_matches_a_loop():
    g = torch.Generator().manual_seed(1)
    scores = torch.rand(12, generator=g) * 2 - 1
    n = 4
    expected = 0.0
    for i in range(n):
        expected += max(0.0, 0.1 + float(scores[n + i]) - float(scores[i])) * 1.0
        expected += max(0.0, 0.1 + float(scores[2 * n + i]) - float(scores[i])) * 1.0
    assert float(ranking_loss(scores, 0.1, 1.0, 1.0)) == pytest.approx(expected / n, rel=1e-6)
    expected_w = sum(0.5 * max(0.0, 0.2 + float(scores[n + i]) - float(scores[i])) +
                     2.0 * max(0.0, 0.2 + float(scores[2 * n + i]) - float(scores[i])) for i in range(n)) / n
    assert float(ranking_loss(scores, 0.2, 0.5, 2.0)) == pytest.approx(expected_w, rel=1e-6)
    with pytest.raises(ValueError):
        ranking_loss(torch.zeros(4))


def test_attribute_weights_rescale_inverse_sqrt_counts():
    w = attribute_weights(np.array([100, 25, 4]))
    # 1/sqrt: 0.1, 0.2, 0.5 -> (x - 0.1) / 0.4 * 9 + 1
    np.testing.assert_allclose(w, [1.0, 1 + 9 * 0.25, 10.0], rtol=1e-6)


def test_vocabulary_counts_categories_and_lengths():
    sents = [["the", "red", "cup"]] * 6 + [["the", "blue", "cup"]] * 2
    v = build_grounding_vocab(sents, ["cup", "dining table"], min_count=5)
    assert v.words[:4] == [PAD, UNK, "<BOS>", "<EOS>"] and v.index[PAD] == 0
    assert {"the", "red", "cup", "dining", "table"} <= set(v.words) and "blue" not in v.words
    assert v.encode(["the", "blue", "cup"], 2) == [v.index["the"], v.index[UNK]]
    assert max_length_for("refcocog", None) == 20 and max_length_for("refcoco+", None) == 10

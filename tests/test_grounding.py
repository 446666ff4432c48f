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


pytestmark = pytest.mark.usefixtures("one_thread")


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


# ---------------------------------------------------------------------------------------
# data, training and evaluation on the tiny world

SMALL = ["grounding.word_embedding_size=16", "grounding.word_vec_size=16", "grounding.rnn_hidden_size=16",
         "grounding.jemb_dim=16", "grounding.num_atts=4", "grounding.batch_images=3", "grounding.max_iters=6",
         "grounding.eval_every=3", "grounding.checkpoint_every=2", "grounding.val_max_sentences=8"]


@pytest.fixture()
def gcfg(tiny_world, tmp_path):
    from tests.conftest import TINY

    return load_config(tiny_world / "config.yaml", TINY + SMALL + [f"workdir={tmp_path / 'work'}"])


def test_negatives_never_equal_the_positive(gcfg):
    from sepnms.grounding.data import BatchSampler, GroundingData, VisualFeatures

    data = GroundingData.open(gcfg)
    vocab = data.build_vocab(0)
    sampler = BatchSampler(gcfg, data, vocab, VisualFeatures(gcfg, data))
    same_type = total = other_ref = 0
    for it in range(12):
        b = sampler.batch(it)
        n = len(b.pos_sent_ids)
        assert len(b.obj_idx) == len(b.sent_idx) == len(b.objects) == len(b.labels) == 3 * n and n > 0
        sent_ref = {s: r for r, ref in data.refs.items() for s in ref["sent_ids"]}
        ann_of = {a: (iid, k) for iid in data.images for k, a in enumerate(data.images[iid].ann_ids)}
        for i in range(n):
            pa, na = b.pos_ann_ids[i], b.neg_ann_ids[i]
            img = data.images[ann_of[pa][0]]
            has_other_type = len(set(img.categories.tolist())) > 1
            if has_other_type:   # MAttNet's in-image draw: another object of the image
                assert pa != na and ann_of[pa][0] == ann_of[na][0]
            other_ref += int(sent_ref[b.neg_sent_ids[i]] != sent_ref[b.pos_sent_ids[i]])  # the dataset-wide draw may hit it
            assert ann_of[pa][1] == data.refs[sent_ref[b.pos_sent_ids[i]]]["ann_index"]   # the referent
            same_type += int(ann_of[pa][0] == ann_of[na][0] and img.categories[ann_of[pa][1]] == img.categories[ann_of[na][1]])
            total += 1
    assert 0 < same_type < total and other_ref >= 0.95 * total
    # deterministic in (seed, iteration)
    again = BatchSampler(gcfg, data, vocab, VisualFeatures(gcfg, data)).batch(5)
    first = sampler.batch(5)
    assert again.pos_sent_ids == first.pos_sent_ids and again.neg_ann_ids == first.neg_ann_ids


def test_training_batch_has_one_entry_per_row_as_mattnets_lossfun(gcfg):
    """Rows [pos | visual neg | pos] of objects and [sent | sent | neg sent] of labels, one entry
    each (the att_fuse BatchNorm sees a positive object twice per sentence, and word dropout is
    drawn per row), as MAttNet's lossFun concatenates Feats / labels."""
    from sepnms.grounding.data import BatchSampler, GroundingData, VisualFeatures

    data = GroundingData.open(gcfg)
    vocab = data.build_vocab(0)
    b = BatchSampler(gcfg, data, vocab, VisualFeatures(gcfg, data)).batch(0)
    n = len(b.pos_sent_ids)
    assert n == gcfg.grounding.seq_per_ref * sum(
        len([r for r in data.images[i].ref_ids if data.refs[r]["split"] == "train"]) for i in b.image_ids)
    assert torch.equal(b.obj_idx, torch.arange(3 * n)) and torch.equal(b.sent_idx, torch.arange(3 * n))
    assert torch.equal(b.objects.pool5[:n], b.objects.pool5[2 * n:])
    assert torch.equal(b.objects.lfeats[:n], b.objects.lfeats[2 * n:])
    assert torch.equal(b.labels[:n], b.labels[n:2 * n])
    max_len = b.labels.shape[1]
    for i in range(n):
        want = vocab.encode(data.sentences[b.neg_sent_ids[i]], 10)
        assert b.labels[2 * n + i].tolist() == want + [0] * (max_len - len(want))
    # the same sentence twice in the batch: two rows, two word-dropout draws
    torch.manual_seed(0)
    net = MAttNet(gcfg.grounding, len(vocab), gcfg.model.feat_channels, gcfg.model.head_out_channels).train()
    _, _, embedded = net.rnn_encoder(b.labels)
    assert not torch.equal(embedded[0], embedded[n])


def test_negative_fallbacks_are_mattnets():
    """No different-type object and the coin says no: None (MAttNet draws any annotated object of
    the dataset, not the same-type one); one object: None / None; no other ref: None."""
    from sepnms.grounding.data import ImageObjects, sample_negatives

    boxes = np.array([[0, 0, 5, 5], [10, 0, 15, 5], [20, 0, 25, 5]], np.float32)
    same = ImageObjects(1, 50, 50, [1, 2, 3], boxes, np.array([4, 4, 4]), [7])
    rng = np.random.default_rng(0)
    assert {sample_negatives(rng, same, 0, {0: 7}, 0.0) for _ in range(20)} == {(None, None)}
    assert {sample_negatives(rng, same, 0, {0: 7}, 1.0)[0] for _ in range(40)} == {1, 2}
    one = ImageObjects(2, 50, 50, [9], boxes[:1], np.array([4]), [8])
    assert sample_negatives(rng, one, 0, {0: 8}, 0.3) == (None, None)
    mixed = ImageObjects(3, 50, 50, [1, 2, 3], boxes, np.array([4, 5, 5]), [7, 9])
    picks = {sample_negatives(rng, mixed, 0, {0: 7, 2: 9}, 0.3) for _ in range(40)}
    assert {p[0] for p in picks} == {1, 2} and {p[1] for p in picks} == {9}


def test_one_object_images_keep_their_rows(gcfg):
    """An image reduced to its referent still gives seq_per_ref rows per sentence draw; the visual
    negative is another image's object, pooled on this image's head (as MAttNet's getBatch)."""
    from sepnms.grounding.data import BatchSampler, GroundingData, VisualFeatures

    data = GroundingData.open(gcfg)
    sampler0 = BatchSampler(gcfg, data, data.build_vocab(0), VisualFeatures(gcfg, data))
    iid = sampler0.images_of(0)[0]
    img = data.images[iid]
    rid = next(r for r in img.ref_ids if data.refs[r]["split"] == "train")
    a = data.refs[rid]["ann_index"]
    for r in [r for r in img.ref_ids if r != rid]:
        del data.refs[r]
    img.ref_ids[:] = [rid]
    img.ann_ids[:] = [img.ann_ids[a]]
    img.boxes, img.categories = img.boxes[a:a + 1], img.categories[a:a + 1]
    data.refs[rid]["ann_index"] = 0
    feats = VisualFeatures(gcfg, data)
    b = BatchSampler(gcfg, data, data.build_vocab(0), feats).batch(0)
    rows = [i for i, pa in enumerate(b.pos_ann_ids) if pa == img.ann_ids[0]]
    assert len(rows) == gcfg.grounding.seq_per_ref
    n = len(b.pos_sent_ids)
    for i in rows:
        na = b.neg_ann_ids[i]
        other = next(j for j, o in data.images.items() if na in o.ann_ids)
        k = data.images[other].ann_ids.index(na)
        pool5, _ = feats.grids(iid, data.images[other].boxes[k:k + 1])  # this image's head, that box
        torch.testing.assert_close(b.objects.pool5[n + i], pool5[0])


def test_batchnorm_scales_start_uniform_and_images_keep_a_fixed_order(gcfg):
    from sepnms.grounding.data import BatchSampler, GroundingData, VisualFeatures

    torch.manual_seed(0)
    net = MAttNet(GroundingConfig(jemb_dim=64), 50, 16, 32)
    bns = [m for m in net.modules() if isinstance(m, torch.nn.BatchNorm1d)]
    assert len(bns) == 13   # att_fuse + 2 per matching MLP (3 modules x 2 MLPs)
    w = torch.cat([m.weight.detach() for m in bns])
    assert 0.0 <= float(w.min()) and float(w.max()) < 1.0 and 0.4 < float(w.mean()) < 0.6
    assert all(float(m.bias.detach().abs().max()) == 0.0 for m in bns)
    data = GroundingData.open(gcfg)
    sampler = BatchSampler(gcfg, data, data.build_vocab(0), VisualFeatures(gcfg, data))
    ids, b = data.image_ids("train"), gcfg.grounding.batch_images
    walk = [i for it in range(2 * len(ids)) for i in sampler.images_of(it)]
    assert walk == [ids[p % len(ids)] for p in range(2 * len(ids) * b)]


class _RightmostNet(torch.nn.Module):
    """A stand-in second stage whose score is the candidate's x / W: the rightmost box wins."""

    def forward(self, objects, labels, obj_idx, sent_idx):
        from types import SimpleNamespace

        return SimpleNamespace(scores=objects.lfeats[obj_idx, 0], att_scores=torch.zeros(len(objects), 1))


def test_eval_on_hand_made_candidates_picks_the_expected_box(gcfg):
    from sepnms.evaluation.ground_accuracy import accuracy_of
    from sepnms.grounding.candidates import CandidateSet, predict
    from sepnms.grounding.data import GroundingData, VisualFeatures
    from sepnms.grounding.vocab import GroundingVocab

    data = GroundingData.open(gcfg)
    split = "val"
    sents = data.sent_ids(split)
    sent_ref = {s: data.refs[r] for r in data.ref_ids(split) for s in data.refs[r]["sent_ids"]}
    sets, expected = {}, {}
    for k, s in enumerate(sents):
        ref = sent_ref[s]
        img = data.images[ref["image_id"]]
        gt = img.boxes[ref["ann_index"]]
        w = float(img.width)
        if k % 3 == 0:      # the referent is the rightmost candidate: right
            boxes = np.array([[0, 0, 5, 5], gt, [gt[0] - 2, gt[1], gt[2] - 2, gt[3]]], np.float32)
            expected[s] = True
        elif k % 3 == 1:    # a box further right that misses the referent: wrong
            boxes = np.array([gt, [w - 10, 0, w - 1, 8]], np.float32)
            expected[s] = False
        else:               # nothing to choose from: wrong
            boxes = np.zeros((0, 4), np.float32)
            expected[s] = False
        sets[s] = CandidateSet(ref["image_id"], boxes, np.arange(len(boxes)))
    vocab = GroundingVocab(["<PAD>", "<UNK>"])
    chosen = predict(_RightmostNet(), vocab, VisualFeatures(gcfg, data, size=0), data, sets, gcfg)
    for s in sents:
        if len(sets[s].boxes):
            assert chosen[s] == int(np.argmax(sets[s].boxes[:, 0]))
        else:
            assert chosen[s] is None
    m = accuracy_of(data, split, sets, chosen)
    assert m["downstream_n"] == len(sents)
    assert m["downstream_accuracy"] == pytest.approx(sum(expected.values()) / len(sents))
    lo, hi = m["downstream_accuracy_ci"]
    assert lo <= m["downstream_accuracy"] <= hi


def _one_image_data():
    """A hand-made GroundingData: image 1 (100 x 80) with referent ann 10 at [20, 10, 40, 30]
    (x2 = x + w: w = h = 20) and ann 11 at [21, 10, 41, 30] (IoU with it 19 x 20 / (2 x 400 - 380)
    = 0.905), one ref (ann 10) with sentence 100."""
    from sepnms.grounding.data import GroundingData, ImageObjects

    img = ImageObjects(1, 100, 80, [10, 11], np.array([[20, 10, 40, 30], [21, 10, 41, 30]], np.float32),
                       np.array([1, 1]), [5])
    refs = {5: {"image_id": 1, "ann_index": 0, "split": "val", "sent_ids": [100], "category_id": 1}}
    return GroundingData({1: img}, refs, {100: ["left", "cup"]}, {1: "cup"}, {})


def test_grounding_vocabulary_counts_every_split_as_mattnets_prepro():
    """A word seen 6 times in val sentences only is in (count > 5 over all splits); one seen 5
    times over train + val is not; '__background__' is added with the category words."""
    from sepnms.grounding.data import GroundingData, ImageObjects

    img = ImageObjects(1, 100, 80, [10], np.array([[0, 0, 5, 5]], np.float32), np.array([1]), [5, 6])
    refs = {5: {"image_id": 1, "ann_index": 0, "split": "train", "sent_ids": list(range(100, 106)), "category_id": 1},
            6: {"image_id": 1, "ann_index": 0, "split": "val", "sent_ids": list(range(200, 206)), "category_id": 1}}
    sents = {**{100 + i: ["left", "mug"] + (["red"] if i < 3 else []) for i in range(6)},
             **{200 + i: ["teal"] + (["red"] if i < 2 else []) for i in range(6)}}
    vocab = GroundingData({1: img}, refs, sents, {1: "cup"}, {}).build_vocab(5)
    assert {"left", "mug", "teal", "cup", "__background__"} <= set(vocab.words) and "red" not in vocab.words


def test_gt_accuracy_counts_the_chosen_index_as_mattnets_eval_easy():
    """Choosing ann 11 (not the referent, IoU 0.905 with it) is wrong under MAttNet's rule
    (pred_ann_id == ref ann_id) and right under the IoU option."""
    from sepnms.evaluation.ground_accuracy import accuracy_of, sentence_hits
    from sepnms.grounding.candidates import CandidateSet

    data = _one_image_data()
    img = data.images[1]
    gt = {100: CandidateSet(1, img.boxes, img.categories, ann_ids=list(img.ann_ids))}
    assert sentence_hits(data, [100], gt, {100: 1}) == [0.0]
    assert sentence_hits(data, [100], gt, {100: 0}) == [1.0]
    assert sentence_hits(data, [100], gt, {100: 1}, gt_rule="iou") == [1.0]
    assert accuracy_of(data, "val", gt, {100: 1})["downstream_accuracy"] == 0.0
    assert load_config("demo").grounding.gt_accuracy == "index"


def test_detection_boxes_enter_the_iou_with_plus_one_width():
    """A detection [20, 10, 29, 29] covers pixels 20..29 = 10 of the referent's 20 columns: as
    MAttNet's dets.json writes it (w = x2 - x1 + 1 = 10) its IoU is 200 / 400 = 0.5, a hit; read
    one pixel narrower (w = 9) it is 0.45, a miss."""
    from sepnms.evaluation.ground_accuracy import sentence_hits
    from sepnms.grounding.candidates import CandidateSet

    data = _one_image_data()
    box = np.array([[20, 10, 29, 29]], np.float32)
    det = CandidateSet(1, box, np.array([1]), plus_one=True)
    assert det.xywh(0) == [20.0, 10.0, 10.0, 20.0]
    assert sentence_hits(data, [100], {100: det}, {100: 0}) == [1.0]
    assert sentence_hits(data, [100], {100: CandidateSet(1, box, np.array([1]))}, {100: 0}) == [0.0]


def test_mattnet_detections_and_their_files_are_plus_one_sets(gcfg, tmp_path):
    import json

    from sepnms.grounding.candidates import file_sets
    from sepnms.grounding.data import GroundingData

    data = GroundingData.open(gcfg)
    s0 = data.sent_ids("val")[0]
    iid = next(r for r in data.refs.values() if s0 in r["sent_ids"])["image_id"]
    theirs = tmp_path / "theirs.json"
    theirs.write_text(json.dumps([{"det_id": 1, "image_id": iid, "box": [10, 20, 31, 41], "category_id": 3, "score": 0.9}]))
    assert file_sets(theirs, data, "val")[s0].xywh(0) == [10.0, 20.0, 31.0, 41.0]  # the file's own box
    ours = tmp_path / "ours.json"
    ours.write_text(json.dumps([{"sent_id": s0, "image_id": iid, "box": [10, 20, 30, 40], "fin_score": 0.5}]))
    assert file_sets(ours, data, "val")[s0].xywh(0) == [10.0, 20.0, 30.0, 40.0]
    # the detector's own detections: w = x2 - x1 + 1, as run_detect.py writes dets.json
    from sepnms.evaluation.budget import Budgets
    from sepnms.engine.ground.candidates import mattnet_det_sets

    dets = mattnet_det_sets(Budgets(gcfg), data, "val")
    cs = next(c for c in dets.values() if len(c.boxes))
    x1, y1, x2, y2 = (float(v) for v in cs.boxes[0])
    assert cs.plus_one and cs.xywh(0) == [x1, y1, x2 - x1 + 1, y2 - y1 + 1]


def test_resume_equals_uninterrupted(gcfg, tmp_path):
    from sepnms.engine.ground.train import train_grounding

    a = gcfg.model_copy(update={"workdir": tmp_path / "a"}, deep=True)
    b = gcfg.model_copy(update={"workdir": tmp_path / "b"}, deep=True)
    full = train_grounding(a, resume=False, progress=False)
    part = train_grounding(b, resume=False, progress=False, stop_after_steps=4)
    assert part == {"interrupted": True, "iter": 4}
    rest = train_grounding(b, resume=True, progress=False)
    assert full["iterations"] == rest["iterations"] == 6
    assert full["history"] == rest["history"]
    wa = torch.load(tmp_path / "a/models/mattnet/last.pt", weights_only=True)["model"]
    wb = torch.load(tmp_path / "b/models/mattnet/last.pt", weights_only=True)["model"]
    assert wa.keys() == wb.keys()
    for k in wa:
        assert torch.equal(wa[k], wb[k]), k


def test_learning_rate_schedule():
    from sepnms.engine.ground.train import learning_rate

    g = GroundingConfig()
    assert learning_rate(g, 0) == learning_rate(g, 8000) == pytest.approx(4e-4)
    assert learning_rate(g, 16000) == pytest.approx(4e-5)
    assert learning_rate(g, 12000) == pytest.approx(4e-4 * 0.1 ** 0.5)


@pytest.mark.slow
def test_tiny_training_overfits_to_full_gt_box_accuracy(tmp_path):
    """A handful of images, trained and evaluated on the same split: every sentence right."""
    from sepnms.engine.ground.train import load_trained, train_grounding
    from sepnms.evaluation.ground_accuracy import accuracy_of
    from sepnms.grounding.candidates import gt_sets, predict
    from sepnms.grounding.data import GroundingData, VisualFeatures
    from sepnms.engine.world import build_world

    over = ["world.n_images=4", "world.sentences_per_ref=1", "world.split_fractions={train: 1.0}"]
    build_world(tmp_path / "w", load_config("demo", over), seed=3, progress=False, quality=False)
    cfg = load_config(tmp_path / "w" / "config.yaml", over + SMALL + [
        f"workdir={tmp_path / 'work'}", "grounding.val_split=train", "grounding.batch_images=4",
        "grounding.word_drop_out=0", "grounding.jemb_drop_out=0", "grounding.visual_drop_out=0",
        "grounding.lr=0.01", "grounding.lr_decay_start=0", "grounding.max_iters=120", "grounding.eval_every=40",
        "grounding.checkpoint_every=120", "grounding.val_max_sentences=null"])
    summary = train_grounding(cfg, resume=False, progress=False)
    data = GroundingData.open(cfg)
    net, vocab = load_trained(cfg, "best")
    sets = gt_sets(data, "train")
    m = accuracy_of(data, "train", sets, predict(net, vocab, VisualFeatures(cfg, data, size=0), data, sets, cfg))
    assert m["downstream_n"] >= 8
    assert summary["best_val_accuracy"] == 1.0 and m["downstream_accuracy"] == 1.0


def test_ground_eval_without_a_trained_model_is_one_line_and_exit_2(gcfg, tmp_path, capsys):
    from sepnms.cli import main
    from sepnms.config import save_config

    save_config(gcfg, tmp_path / "cfg.yaml")
    assert main(["ground", "eval", "-c", str(tmp_path / "cfg.yaml"), "-q", "--methods", "gt"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "best.pt" in err and "Traceback" not in err


def test_detection_files_become_candidate_sets(gcfg, tmp_path):
    import json

    from sepnms.grounding.candidates import file_sets
    from sepnms.grounding.data import GroundingData
    from sepnms.errors import InputError

    data = GroundingData.open(gcfg)
    s0 = data.sent_ids("val")[0]
    ref = next(r for r in data.refs.values() if s0 in r["sent_ids"])
    iid = ref["image_id"]
    # MAttNet's own per-image file: inclusive pixels (w = x2 - x1 + 1), 'score'
    theirs = tmp_path / "theirs.json"
    theirs.write_text(json.dumps([{"det_id": 1, "image_id": iid, "box": [10, 20, 31, 41], "category_id": 3, "score": 0.9}]))
    sets = file_sets(theirs, data, "val")
    np.testing.assert_allclose(sets[s0].boxes, [[10, 20, 40, 60]])
    assert sets[s0].categories.tolist() == [3]
    other = next(s for s in data.sent_ids("val") if sets[s].image_id != iid)
    assert len(sets[other].boxes) == 0
    # ours: per sentence, exclusive (w = x2 - x1), 'fin_score'
    ours = tmp_path / "ours.json"
    ours.write_text(json.dumps([{"sent_id": s0, "image_id": iid, "box": [10, 20, 30, 40], "category_id": 3,
                                 "fin_score": 0.5}]))
    sets = file_sets(ours, data, "val")
    np.testing.assert_allclose(sets[s0].boxes, [[10, 20, 40, 60]])
    assert all(len(sets[s].boxes) == 0 for s in sets if s != s0)
    mixed = tmp_path / "mixed.json"
    mixed.write_text(json.dumps([{"sent_id": s0, "image_id": iid, "box": [1, 1, 2, 2], "fin_score": 0.5},
                                 {"image_id": iid, "box": [1, 1, 2, 2], "fin_score": 0.5}]))
    with pytest.raises(InputError, match="mixed"):
        file_sets(mixed, data, "val")


def test_two_stage_report_table_and_paired_difference():
    from sepnms.evaluation.ground_report import paired_differences, two_stage_table

    res = {"gt": {"val": {"downstream_accuracy": 0.75, "downstream_accuracy_ci": [0.5, 1.0], "downstream_n": 4,
                          "candidates_per_sentence": 5.0}}}
    table = two_stage_table(res, ["val", "testA"])
    assert "| gt | 75.0 [50.0, 100.0] | 5.00 | - | - |" in table
    hits = {"a": {"val": {1: 1.0, 2: 1.0, 3: 0.0, 4: 1.0}}, "b": {"val": {1: 0.0, 2: 1.0, 3: 0.0, 4: 0.0}}}
    text = paired_differences(hits, [("a", "b"), ("a", "missing")], ["val"])
    assert "| a - b | +50.0 [" in text and "missing" not in text


@pytest.mark.slow
def test_ground_train_under_torchrun_two_ranks(tiny_world, tmp_path):
    """2 ranks (gloo, CPU): trains to max_iters, rank 0 writes the checkpoints, and the run refuses
    to resume in one process."""
    import json
    import os
    import subprocess
    import sys

    from sepnms.engine.ground.train import train_grounding
    from sepnms.errors import InputError
    from tests.conftest import TINY

    work = tmp_path / "work"
    sets = [a for o in TINY + SMALL + [f"workdir={work}"] for a in ("--set", o)]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "sepnms.cli",
           "ground", "train", "--config", str(tiny_world / "config.yaml"), *sets, "--quiet"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    summary = json.loads((work / "models" / "mattnet" / "train_summary.json").read_text())
    assert summary["iterations"] == 6 and len(summary["history"]) == 2
    last = torch.load(work / "models" / "mattnet" / "last.pt", weights_only=True)
    assert last["state"]["world_size"] == 2 and last["state"]["iter"] == 6
    cfg = load_config(tiny_world / "config.yaml", TINY + SMALL + [f"workdir={work}"])
    with pytest.raises(InputError, match="same number"):
        train_grounding(cfg, resume=True, progress=False)


def test_layer4_source_detector_reads_the_detectors_layer4(gcfg):
    """``grounding.layer4_source: detector`` (the demo's): fc7 comes from the layer4 of the
    checkpoint ``detect`` runs (the world's trained detector), not from a seeded random one."""
    from sepnms.grounding.data import GroundingData, VisualFeatures
    from sepnms.data.head_features import detector_checkpoint
    from sepnms.io.checkpoints import torch_load_weights

    assert gcfg.paths.maskrcnn_checkpoint is None and gcfg.grounding.layer4_source == "detector"
    data = GroundingData.open(gcfg)
    state = torch_load_weights(detector_checkpoint(gcfg), "detector")
    state = state.get("model", state) if isinstance(state, dict) else state
    got = VisualFeatures(gcfg, data).layer4.state_dict()
    compared = 0
    for k, v in got.items():
        theirs = state.get(f"resnet.layer4.{k}")
        if theirs is not None and v.is_floating_point():
            assert torch.equal(v.cpu(), theirs.to(v.dtype)), k
            compared += 1
    assert compared >= 10
    rnd = gcfg.model_copy(update={"grounding": gcfg.grounding.model_copy(update={"layer4_source": "random"})})
    other = VisualFeatures(rnd, data).layer4.state_dict()
    assert any(not torch.equal(other[k], got[k]) for k in got if got[k].is_floating_point())

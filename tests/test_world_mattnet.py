"""The world's ``prepro/data.json`` opens the way MAttNet's loaders open theirs.

MAttNet's ``tools/prepro.py`` writes ``refs, images, anns, sentences, word_to_ix, att_to_ix,
att_to_cnt, cat_to_ix, label_length``; ``lib/loaders/loader.py`` and the gt / dets loaders read
all of them, index the ann / det features and the label matrix by ``h5_id``, and read ``att_wds``
of every ref for the attribute labels.  This test repeats those reads (written from those facts).
"""
from __future__ import annotations

import json

import numpy as np

KEYS = {"refs", "images", "anns", "sentences", "word_to_ix", "att_to_ix", "att_to_cnt", "cat_to_ix", "label_length"}


def test_data_json_opens_like_mattnets_loader(tiny_world):
    info = json.loads((tiny_world / "prepro" / "data.json").read_text())
    assert KEYS <= set(info)

    # Loader.__init__
    word_to_ix, cat_to_ix = info["word_to_ix"], info["cat_to_ix"]
    ix_to_word = {ix: wd for wd, ix in word_to_ix.items()}
    assert len(ix_to_word) == len(word_to_ix) and "<UNK>" in word_to_ix
    assert len({ix: c for c, ix in cat_to_ix.items()}) == 80
    Refs = {r["ref_id"]: r for r in info["refs"]}
    Images = {i["image_id"]: i for i in info["images"]}
    Anns = {a["ann_id"]: a for a in info["anns"]}
    Sentences = {s["sent_id"]: s for s in info["sentences"]}
    sent_to_ref = {sid: r for r in info["refs"] for sid in r["sent_ids"]}
    assert len(Refs) == len(info["refs"]) and len(Images) == len(info["images"]) and len(Anns) == len(info["anns"])

    # GtMRCNLoader / DetsLoader.__init__: the attribute vocabulary (empty in the world)
    att_to_ix, att_to_cnt = info["att_to_ix"], info["att_to_cnt"]
    assert att_to_ix == {} and att_to_cnt == {}
    num_atts = len(att_to_ix)
    ix_to_att = {ix: wd for wd, ix in att_to_ix.items()}
    assert [att_to_cnt[ix_to_att[ix]] for ix in range(num_atts)] == []
    for ref in info["refs"]:  # attribute labels: one row per ref, a 1 per att_wd
        labels = np.zeros(num_atts)
        for wd in ref["att_wds"]:
            labels[att_to_ix[wd]] = 1
        assert set(ref) >= {"ref_id", "ann_id", "box", "image_id", "split", "category_id", "sent_ids"}
        assert ref["ann_id"] in Anns and ref["image_id"] in Images
        assert Anns[ref["ann_id"]]["image_id"] == ref["image_id"]

    # h5_id: the row of each image / ann / sentence in MAttNet's feature and label files,
    # numbered 0..N-1 in list order, the anns image by image
    for key in ("images", "anns", "sentences"):
        assert [x["h5_id"] for x in info[key]] == list(range(len(info[key]))), key
    anns_in_image_order = [a for img in info["images"] for a in img["ann_ids"]]
    assert [a["ann_id"] for a in info["anns"]] == anns_in_image_order
    for img in info["images"]:
        for ann_id in img["ann_ids"]:
            assert Anns[ann_id]["image_id"] == img["image_id"]
        for ref_id in img["ref_ids"]:
            assert Refs[ref_id]["image_id"] == img["image_id"]

    # prepro.encode_captions: L[h5_id, j] = word_to_ix[token], label_length columns
    L = np.zeros((len(info["sentences"]), info["label_length"]), dtype=np.int32)
    for s in info["sentences"]:
        for j, w in enumerate(s["tokens"][: info["label_length"]]):
            L[s["h5_id"], j] = word_to_ix[w]
    assert (L[:, 0] > 0).all()
    assert set(Sentences) == set(sent_to_ref)

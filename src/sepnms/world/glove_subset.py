"""The embedded world's GloVe file: the real GloVe 6B-50d vectors of the words it uses, and more.

:func:`write_glove_subset` keeps the vectors of every expression and caption word, every COCO
category and world noun, the colour and number words, and :data:`DISTRACTOR_WORDS` (everyday
words, so that the world's words are not the whole vocabulary), and writes them as a GloVe text
file (``sepnms.io.glove``).  An expression word that GloVe lacks is a template bug: refused.
"""
from __future__ import annotations

from pathlib import Path

from sepnms.errors import SepNMSError
from sepnms.io.glove import load_glove, write_glove_text
from sepnms.world.captions import NUMBER_WORDS, caption_words
from sepnms.world.content import COCO_CATEGORIES, PALETTE, WORLD_CATEGORIES

#: everyday words kept in the GloVe subset beside the world's own (vocabulary distractors)
DISTRACTOR_WORDS: tuple[str, ...] = (
    "man", "woman", "person", "people", "boy", "girl", "child", "car", "truck", "dog", "cat",
    "table", "chair", "tree", "house", "shirt", "hat", "white", "black", "orange", "brown",
    "gray", "middle", "center", "front", "back", "behind", "far", "closest", "second", "first",
    "other", "one", "large", "tall", "short", "round", "square", "thing", "object", "picture",
    "image", "photo", "corner", "edge", "guy", "lady", "bottle", "cup", "plate", "ball", "box",
    "bag", "glass", "window", "door", "wall", "floor", "water", "red", "sky", "grass", "road",
    "sign", "light", "near", "farthest", "biggest", "smallest", "leftmost", "rightmost",
)



def write_glove_subset(path: Path, glove_dir: Path, words_used: set[str], captions: list[dict]) -> int:
    """Write the subset to ``path`` from the kumo package's ``glove_dir``; ``words_used``: the
    expressions' words, ``captions``: the COCO caption records.  Returns the number of words."""
    words_in_captions = {w for a in captions for w in caption_words(a["caption"])}
    category_words = {w for _, name, _ in COCO_CATEGORIES for w in name.split()}
    world_words = {w for c in WORLD_CATEGORIES for w in (c.noun, c.plural, *[s for p in c.synonyms for s in p])}
    wanted = words_used | words_in_captions | category_words | world_words | set(DISTRACTOR_WORDS) | {
        name for name, _ in PALETTE} | set(NUMBER_WORDS)
    vectors = load_glove(glove_dir / "glove_6B_50d_emb.npy", wanted)
    missing = sorted(words_used - set(vectors))
    if missing:
        raise SepNMSError(f"expression words absent from GloVe 6B: {missing} (a world template bug)")
    write_glove_text(path, {w: vectors[w] for w in sorted(vectors)})
    return len(vectors)

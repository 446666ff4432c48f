"""What the Ref-relatedness branch can read from its sentence vector (a linear probe).

    python benchmarks/diagnose_text.py DEMO_DIR

The ref branch sees an expression only through its cached sentence vector
(``work/text/sentence_vectors.h5``: the frozen BERT-family encoder, ``text.pooling``); the ctx
branch reads the words through GloVe and a trained BiGRU. On a demo world (``DEMO_DIR/world``:
``mentions.json`` says which objects an expression names, ``objects.json`` their colour / size /
category) this fits a multinomial logistic regression (``sepnms.evaluation.world_quality.fit_probe``,
standardised inputs) on the training split's expressions and scores it on val + testA + testB, for:

- the referent's category, on relational expressions ("the kite left of the green oven"), where
  the sentence names two categories and only word order tells which is the referent;
- the mentioned context object's category, on the same expressions;
- the referent's category on attribute-only expressions (one category named);

each from (1) the sentence vector, (2) a bag of words (token counts, order-free: about what an
order-blind text representation can give), (3) one-hot words per position (order kept: a
control that the fit set is large enough to learn the target when the order is there), by a linear
and a one-hidden-layer probe.
Accuracies carry the project's bootstrap interval. A diagnostic, not a test.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import h5py
import numpy as np
import torch

from sepnms.data.refdb import load_refdb
from sepnms.evaluation.stats import bootstrap_ci
from sepnms.evaluation.world_quality import fit_probe


def _probe(x: np.ndarray, y: np.ndarray, fit: np.ndarray) -> tuple[float, tuple[float, float], float]:
    classes = sorted(set(y.tolist()))
    yi = np.array([classes.index(v) for v in y.tolist()])
    mu, sd = x[fit].mean(0), x[fit].std(0) + 1e-6
    z = (x - mu) / sd
    w, b = fit_probe(z[fit], yi[fit])
    pred = (torch.from_numpy(z[~fit]) @ w.T + b).argmax(1).numpy()
    ok = (pred == yi[~fit]).astype(np.float64)
    majority = float(np.mean(yi[~fit] == np.bincount(yi[fit]).argmax()))
    return float(ok.mean()), bootstrap_ci(ok), majority


def _mlp_probe(x: np.ndarray, y: np.ndarray, fit: np.ndarray, hidden: int = 64, steps: int = 800,
               seed: int = 0) -> tuple[float, tuple[float, float]]:
    """A one-hidden-layer probe (ReLU, Adam, weight decay 1e-3, dropout 0.1), the shape of the
    ref branch's text MLP: whether a nonlinear reader finds more than the linear one."""
    classes = sorted(set(y.tolist()))
    yi = torch.tensor([classes.index(v) for v in y.tolist()])
    mu, sd = x[fit].mean(0), x[fit].std(0) + 1e-6
    z = torch.from_numpy((x - mu) / sd).float()
    torch.manual_seed(seed)
    net = torch.nn.Sequential(torch.nn.Linear(z.shape[1], hidden), torch.nn.ReLU(), torch.nn.Dropout(0.1),
                              torch.nn.Linear(hidden, len(classes)))
    opt = torch.optim.Adam(net.parameters(), lr=3e-3, weight_decay=1e-3)
    f = torch.from_numpy(fit)
    for _ in range(steps):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(net(z[f]), yi[f]).backward()
        opt.step()
    net.eval()
    with torch.no_grad():
        ok = (net(z[~f]).argmax(1) == yi[~f]).double().numpy()
    return float(ok.mean()), bootstrap_ci(ok)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("demo_dir", type=Path)
    ap.add_argument("--write-positional-vectors", type=Path, default=None, metavar="H5",
                    help="also write, for every expression, one-hot words per position (12 x V) times a "
                         "fixed Gaussian matrix (seed 0) to the sentence vectors' width: an order-aware "
                         "stand-in for the frozen encoder, for a counterfactual training")
    args = ap.parse_args(argv)
    d = args.demo_dir
    refdb = load_refdb(d / "work" / "prepare" / "refdb.json")
    mentions = {int(k): v for k, v in json.loads((d / "world" / "mentions.json").read_text()).items()}
    inst = json.loads((d / "world" / "refer" / "refcoco" / "instances.json").read_text())
    cat_of_ann = {a["id"]: a["category_id"] for a in inst["annotations"]}
    with h5py.File(d / "work" / "text" / "sentence_vectors.h5", "r") as f:
        vec = dict(zip(f["sent_id"][()].tolist(), f["vectors"][()]))
        print(f"sentence vectors: {dict(f.attrs)}")
    exprs = [e for e in refdb.expressions if int(e["sent_id"]) in mentions]
    vocab = sorted({t for e in exprs for t in e["tokens"]})
    widx = {w: i for i, w in enumerate(vocab)}

    def bow(tokens):
        v = np.zeros(len(vocab))
        for t in tokens:
            v[widx[t]] += 1
        return v

    def positional(tokens, length=12):
        v = np.zeros((length, len(vocab)))
        for i, t in enumerate(tokens[:length]):
            v[i, widx[t]] = 1
        return v.ravel()

    rows = []
    for e in exprs:
        m = mentions[int(e["sent_id"])]
        rel = m["template"].startswith("rel_") and m["mentioned_ann_ids"]
        rows.append({"split": e["split"], "rel": bool(rel), "ref_cat": cat_of_ann[m["referent_ann_id"]],
                     "ctx_cat": cat_of_ann[m["mentioned_ann_ids"][0]] if rel else -1,
                     "vec": np.asarray(vec[int(e["sent_id"])], np.float64), "bow": bow(e["tokens"]), "pos": positional(e["tokens"])})
    if args.write_positional_vectors is not None:
        from sepnms.text.sentence_encoder import save_vectors

        dim = next(iter(vec.values())).shape[0]
        proj = np.random.default_rng(0).standard_normal((12 * len(vocab), dim)) / np.sqrt(12.0)
        ids = [int(e["sent_id"]) for e in refdb.expressions]
        all_vocab = {t for e in refdb.expressions for t in e["tokens"]} - set(vocab)
        if all_vocab:
            raise SystemExit(f"tokens outside the mentioned expressions: {sorted(all_vocab)[:5]}")
        out = np.stack([positional(e["tokens"]) @ proj for e in refdb.expressions]).astype(np.float32)
        save_vectors(args.write_positional_vectors, ids, out, {"pooling": "positional one-hot x Gaussian(0)"})
        print(f"wrote {len(ids)} order-aware {dim}-d vectors to {args.write_positional_vectors}")
    for group, want_rel, target in (("relational", True, "ref_cat"), ("relational", True, "ctx_cat"),
                                    ("attribute", False, "ref_cat")):
        sel = [r for r in rows if r["rel"] == want_rel]
        fit = np.array([r["split"] == "train" for r in sel])
        y = np.array([r[target] for r in sel])
        same = np.mean([r["ref_cat"] == r["ctx_cat"] for r in sel]) if want_rel else float("nan")
        print(f"\n{group} expressions, target {target}: {fit.sum()} fit (train), {(~fit).sum()} scored"
              + (f"; referent and context of the same category in {100 * same:.1f} %" if want_rel else ""))
        for name in ("vec", "bow", "pos"):
            x = np.stack([r[name] for r in sel])
            acc, ci, maj = _probe(x, y, fit)
            print(f"  {name:4s} linear probe accuracy {100 * acc:.1f} [{100 * ci[0]:.1f}, {100 * ci[1]:.1f}] (majority {100 * maj:.1f})")
            acc, ci = _mlp_probe(x, y, fit)
            print(f"  {name:4s} MLP probe accuracy    {100 * acc:.1f} [{100 * ci[0]:.1f}, {100 * ci[1]:.1f}]")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""``sepnms propose``: score every candidate of every expression with all branches.

The shared path runs the layer4 head once per image over the union of its candidates and scores
all expressions of that image in one batch; ``per_expression_scores`` is the straightforward
reference (head recomputed per expression, as the released code does), kept for tests and the
benchmark.  Output: ``<workdir>/proposals/<name>/<split>.h5`` (``sepnms.io.proposals``), with
``ref_score`` = sigmoid(ref logit) (absent for Ref-NMS), ``ctx_score`` = sigmoid(ctx logit).
"""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any, Iterable, Optional

import numpy as np
import torch
from tqdm import tqdm

from sepnms.config import Config
from sepnms.data.candidates import Candidates
from sepnms.engine.inputs import HeadCache, Workspace, pad_words
from sepnms.engine.train import load_checkpoint, model_dir, run_name
from sepnms.io.proposals import ExpressionCandidates, ProposalTable, proposals_path, read_proposals, write_proposals
from sepnms.models.relatedness import location_features
from sepnms.models.sepnms_model import SepNMSModel, build_model


def load_trained(cfg: Config, ws: Workspace, model_type: str, which: str = "best") -> SepNMSModel:
    path = model_dir(cfg, run_name(cfg, model_type)) / f"{which}.pt"
    ckpt = load_checkpoint(path, cfg, model_type)
    model = build_model(cfg.model, torch.from_numpy(ws.word_vectors), model_type)
    model.load_state_dict(ckpt["model"])
    return model.to(cfg.device).eval()


@torch.no_grad()
def score_image(
    model: SepNMSModel, head: torch.Tensor, scale: float, cand: Candidates, exprs: list[dict[str, Any]],
    ws: Workspace, width: float, height: float, device: str = "cpu", chunk: int = 64,
) -> list[ExpressionCandidates]:
    """Score all ``exprs`` of one image over its candidate pool (head run once)."""
    boxes = torch.from_numpy(cand.box).to(device)
    m = len(cand)
    feats = model.roi_features(head.to(device), boxes, scale)  # [M, D]
    loc = location_features(boxes, width, height)  # [M, 5]
    out: list[ExpressionCandidates] = []
    for start in range(0, len(exprs), chunk):
        part = exprs[start:start + chunk]
        b = len(part)
        ids, mask = pad_words([ws.word_ids(e["tokens"], None) for e in part])
        text = _text(ws, part, model, device)
        ref, ctx = model.relatedness(feats.unsqueeze(0).expand(b, m, -1), loc.unsqueeze(0).expand(b, m, -1),
                                     ids.to(device), mask.to(device), text)
        out.extend(_pack(part, cand, ref, ctx))
    return out


def _text(ws: Workspace, exprs, model: SepNMSModel, device: str) -> Optional[torch.Tensor]:
    if model.ref_relatedness is None:
        return None
    return torch.from_numpy(np.stack([ws.text_vectors[int(e["sent_id"])] for e in exprs])).to(device)


def _pack(exprs, cand: Candidates, ref, ctx) -> list[ExpressionCandidates]:
    out = []
    ctx_p = torch.sigmoid(ctx).float().cpu().numpy()
    ref_p = torch.sigmoid(ref).float().cpu().numpy() if ref is not None else None
    for i, e in enumerate(exprs):
        scores = {"ctx_score": ctx_p[i]}
        if ref_p is not None:
            scores["ref_score"] = ref_p[i]
        out.append(ExpressionCandidates(int(e["sent_id"]), int(e["ref_id"]), int(e["image_id"]),
                                        cand.box, cand.cls_idx, cand.det_score, scores))
    return out


@torch.no_grad()
def per_expression_scores(
    model: SepNMSModel, head: torch.Tensor, scale: float, cand: Candidates, exprs: list[dict[str, Any]],
    ws: Workspace, width: float, height: float, device: str = "cpu",
) -> list[ExpressionCandidates]:
    """Reference path: the head is recomputed for every expression."""
    out = []
    boxes = torch.from_numpy(cand.box).to(device)
    for e in exprs:
        feats = model.roi_features(head.to(device), boxes, scale).unsqueeze(0)
        loc = location_features(boxes, width, height).unsqueeze(0)
        ids, mask = pad_words([ws.word_ids(e["tokens"], None)])
        ref, ctx = model.relatedness(feats, loc, ids.to(device), mask.to(device), _text(ws, [e], model, device))
        out.extend(_pack([e], cand, ref, ctx))
    return out


def iter_images(ws: Workspace, split: str, shard: tuple[int, int] = (0, 1)) -> Iterable[tuple[int, list[dict]]]:
    """(image_id, its expressions of ``split``) for this shard (images split round-robin)."""
    by_image: dict[int, list[dict]] = {}
    for e in ws.refdb.split(split):
        by_image.setdefault(int(e["image_id"]), []).append(e)
    i, n = shard
    for k, iid in enumerate(sorted(by_image)):
        if k % n == i:
            yield iid, by_image[iid]


def _parts_dir(path: Path) -> Path:
    return path.with_name(path.stem + ".parts")


def _done_images(parts: Path) -> set[int]:
    """Image ids already scored (recorded in the attrs of finished part files)."""
    done: set[int] = set()
    for part in sorted(parts.glob("part-*.h5")):
        table = read_proposals(part)
        done.update(int(v) for v in table.attrs.get("images", "").split(",") if v)
    return done


def merge_parts(path: Path, split: str, expected_images: list[int], attrs: dict[str, str]) -> bool:
    """Join the part files of ``path`` into one table (image order, then refdb order) if every
    expected image is covered; remove the parts.  Returns whether the final file was written."""
    parts = _parts_dir(path)
    if not parts.is_dir():
        return path.is_file()
    if not set(expected_images) <= _done_images(parts):
        return False
    exprs: list[ExpressionCandidates] = []
    for part in sorted(parts.glob("part-*.h5")):
        exprs.extend(read_proposals(part).expressions)
    order = {iid: k for k, iid in enumerate(sorted(expected_images))}
    exprs.sort(key=lambda e: order[e.image_id])  # stable: keeps refdb order inside an image
    write_proposals(path, ProposalTable(split, "scored", exprs, attrs))
    shutil.rmtree(parts)
    return True


def propose(cfg: Config, model_type: Optional[str] = None, splits: Optional[list[str]] = None,
            progress: bool = True, reference: bool = False, shard: tuple[int, int] = (0, 1),
            flush_every: int = 64, merge: bool = True) -> dict[str, Path]:
    """Score the candidates of every expression of ``splits``.

    Work is streamed per image and flushed every ``flush_every`` images to part files
    (``<split>.parts/part-<first image>.h5``, atomic); a re-run skips images already scored, so an
    interrupted run resumes without redoing work.  ``shard=(i, n)`` scores every n-th image only;
    once every image of a split is covered (by this or other shards) the parts are merged into
    ``<workdir>/proposals/<name>/<split>.h5``.  Returns the final paths (or the parts folders of
    splits still waiting for other shards).
    """
    model_type = model_type or cfg.train.model
    ws = Workspace.open(cfg, need_text=(model_type == "sepnms"))
    model = load_trained(cfg, ws, model_type)
    heads = HeadCache(cfg.need_path("head_feats_dir"), cfg.model.feat_channels, size=2)
    name = run_name(cfg, model_type)
    attrs = {"model": name, "config": cfg.fingerprint("model", "train")}
    fn = per_expression_scores if reference else score_image
    written = {}
    for split in splits or cfg.evaluate.splits:
        path = proposals_path(cfg.workdir, name, split)
        parts = _parts_dir(path)
        all_images = [iid for iid, _ in iter_images(ws, split)]
        if path.is_file() and not parts.is_dir():
            path.unlink()  # a finished table from an earlier run: recompute
        done = _done_images(parts) if parts.is_dir() else set()
        todo = [(iid, ex) for iid, ex in iter_images(ws, split, shard) if iid not in done]
        buffer: list[ExpressionCandidates] = []
        buffer_images: list[int] = []

        def flush() -> None:
            if not buffer_images:
                return
            write_proposals(parts / f"part-{buffer_images[0]:012d}.h5",
                            ProposalTable(split, "scored", list(buffer),
                                          {**attrs, "images": ",".join(map(str, buffer_images))}))
            buffer.clear()
            buffer_images.clear()

        for iid, exprs in tqdm(todo, desc=f"propose {name} {split}", disable=not progress):
            head, scale = heads.get(iid)
            w, h = ws.refdb.image_size(iid)
            buffer.extend(fn(model, head, scale, ws.candidates.get(iid), exprs, ws, float(w), float(h), cfg.device))
            buffer_images.append(iid)
            if len(buffer_images) >= flush_every:
                flush()
        if todo or not parts.is_dir():
            parts.mkdir(parents=True, exist_ok=True)
        flush()
        if merge and merge_parts(path, split, all_images, attrs):
            written[split] = path
        else:
            written[split] = parts
    return written

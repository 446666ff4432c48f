"""``sepnms propose``: score every candidate of every expression with all branches.

The shared path runs the layer4 head once per image over the union of its candidates and scores
all expressions of that image in one batch; ``per_expression_scores`` is the straightforward
reference (head recomputed per expression, as the released code does), kept for tests and the
benchmark.  Output: ``<workdir>/proposals/<name>/<split>.h5`` (``sepnms.io.proposals``), with
``ref_score`` = sigmoid(ref logit) (absent for Ref-NMS), ``ctx_score`` = sigmoid(ctx logit).
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Optional

import h5py
import numpy as np
import torch
from tqdm import tqdm

from sepnms.config import Config
from sepnms.data.candidates import Candidates
from sepnms.distributed import resolve_device
from sepnms.engine.image_features import HeadCache
from sepnms.engine.inputs import Workspace, pad_words
from sepnms.clip.labeller import clip_autocast
from sepnms.engine.checkpoint import load_checkpoint, load_weights
from sepnms.errors import InputError
from sepnms.io.finite import check_finite
from sepnms.io.parts import PartFiles, chunked, describe_missing, file_digest, h5_attr_keys, shard_keys
from sepnms.io.proposals import FORMAT as PROPOSALS_FORMAT
from sepnms.io.proposals import VERSION as PROPOSALS_VERSION
from sepnms.io.proposals import ExpressionCandidates, ProposalTable, proposals_path, write_proposals
from sepnms.models.relatedness import location_features
from sepnms.models.sepnms_model import SepNMSModel, build_model
from sepnms.workdir import model_dir, run_name


def load_trained(cfg: Config, ws: Workspace, model_type: str, which: str = "best") -> SepNMSModel:
    path = model_dir(cfg, run_name(cfg, model_type)) / f"{which}.pt"
    ckpt = load_checkpoint(path, cfg, model_type)
    model = build_model(cfg.model, torch.from_numpy(ws.word_vectors), model_type)
    load_weights(model, ckpt, path)
    return model.to(cfg.device).eval()


#: RoIs per pass through the layer4 head in ``score_image``.  A fixed batch keeps the sizes of
#: the head's large activations to a small set: with one pass over all M candidates every image
#: allocates differently sized tensors, glibc's allocator fragments, and the peak RSS of a long
#: ``propose`` keeps growing (benchmarks/RESULTS.md); with fixed chunks it stays flat, at no cost.
HEAD_CHUNK = 32


def head_features(model: SepNMSModel, head: torch.Tensor, boxes: torch.Tensor, scale: float,
                  chunk: Optional[int] = None) -> torch.Tensor:
    """head [1, C, Hf, Wf], boxes [M, 4] xyxy -> [M, head_out] RoI features, ``chunk`` (default
    ``HEAD_CHUNK``) RoIs at a time."""
    chunk = chunk or HEAD_CHUNK
    if len(boxes) <= chunk:
        return model.roi_features(head, boxes, scale)
    return torch.cat([model.roi_features(head, boxes[i:i + chunk], scale) for i in range(0, len(boxes), chunk)])


def roi_inputs(model: SepNMSModel, head: torch.Tensor, scale: float, boxes: np.ndarray, width: float,
               height: float, device: str = "cpu", chunk: Optional[int] = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The expression-independent inputs of the branches for one image's candidates.

    head [1, C, Hf, Wf], boxes [M, 4] xyxy original-image pixels -> (RoI features [M, head_out],
    location features [M, 5]), on ``device``.
    """
    b = torch.from_numpy(np.ascontiguousarray(boxes, dtype=np.float32)).to(device)
    return head_features(model, head.to(device), b, scale, chunk), location_features(b, width, height)


def relatedness_scores(model: SepNMSModel, feats: torch.Tensor, loc: torch.Tensor, word_ids: list[list[int]],
                       text: Optional[np.ndarray], device: str = "cpu") -> tuple[Optional[np.ndarray], np.ndarray]:
    """Both branches for B expressions over the M candidates of one image.

    feats [M, D] and loc [M, 5] from :func:`roi_inputs`; ``word_ids``: B lists of vocabulary ids;
    ``text``: [B, text_dim] sentence vectors (ignored, may be None, for refnms).  The RoI-only MLPs
    run once for the B expressions.  Returns (ref_score [B, M] or None for refnms, ctx_score
    [B, M]): float32 sigmoids of the logits, the columns of the proposal tables.
    """
    ids, mask = pad_words(word_ids)
    text_t = None
    if model.ref_relatedness is not None:
        if text is None:
            raise ValueError("the sepnms model needs sentence vectors for ref-relatedness")
        text_t = torch.from_numpy(np.asarray(text, np.float32)).to(device)
    ref, ctx = model.relatedness(feats.unsqueeze(0), loc.unsqueeze(0), ids.to(device), mask.to(device), text_t)
    ctx_p = torch.sigmoid(ctx).float().cpu().numpy()
    return (torch.sigmoid(ref).float().cpu().numpy() if ref is not None else None), ctx_p


@torch.no_grad()
def score_image(
    model: SepNMSModel, head: torch.Tensor, scale: float, cand: Candidates, exprs: list[dict[str, Any]],
    ws: Workspace, width: float, height: float, device: str = "cpu", chunk: int = 64,
) -> list[ExpressionCandidates]:
    """Score all ``exprs`` of one image over its candidate pool: the head and the RoI-only MLPs of
    both branches run once per candidate (the head in chunks of ``HEAD_CHUNK`` RoIs), the
    expression-dependent parts over ``chunk`` expressions at a time."""
    feats, loc = roi_inputs(model, head, scale, cand.box, width, height, device)  # [M, D], [M, 5]
    out: list[ExpressionCandidates] = []
    for start in range(0, len(exprs), chunk):
        part = exprs[start:start + chunk]
        ref, ctx = relatedness_scores(model, feats, loc, [ws.word_ids(e["tokens"], None) for e in part],
                                      _text(ws, part, model), device)
        out.extend(pack_scores(part, cand, ref, ctx))
    return out


def _text(ws: Workspace, exprs, model: SepNMSModel) -> Optional[np.ndarray]:
    """[B, text_dim] cached sentence vectors of ``exprs`` (None for refnms)."""
    if model.ref_relatedness is None:
        return None
    return np.stack([ws.text_vectors[int(e["sent_id"])] for e in exprs])


def pack_scores(exprs, cand: Candidates, ref: Optional[np.ndarray], ctx: np.ndarray) -> list[ExpressionCandidates]:
    """One ExpressionCandidates per expression: the pool of ``cand`` with row i of ref / ctx [B, M]."""
    out = []
    for i, e in enumerate(exprs):
        scores = {"ctx_score": ctx[i]}
        if ref is not None:
            scores["ref_score"] = ref[i]
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
    for e in exprs:
        feats, loc = roi_inputs(model, head, scale, cand.box, width, height, device, chunk=len(cand.box) or 1)
        ref, ctx = relatedness_scores(model, feats, loc, [ws.word_ids(e["tokens"], None)], _text(ws, [e], model),
                                      device)
        out.extend(pack_scores([e], cand, ref, ctx))
    return out


def image_path(cfg: Config, ws: Workspace, image_id: int) -> Path:
    name = ws.refdb.images[int(image_id)].get("file_name") or f"COCO_train2014_{int(image_id):012d}.jpg"
    return cfg.images_dir() / name


def add_clip_scores(cfg: Config, dagger, ws: Workspace, image_id: int, cand: Candidates,
                    exprs: list[dict[str, Any]], scored: list[ExpressionCandidates]) -> None:
    """Add ``clip_score`` (softmax over the image's candidate crops) and ``clip_cos`` columns,
    computed from the *proposal* crops (never from ground-truth boxes); crops encoded once."""
    from PIL import Image

    from sepnms.clip.proposals import clip_scores_for_image
    from sepnms.io.images import read_image

    image = Image.fromarray(read_image(image_path(cfg, ws, image_id), max_pixels=cfg.images.max_pixels,
                                       expect_size=ws.refdb.image_size(image_id)))
    with clip_autocast(cfg):
        cos, score = clip_scores_for_image(dagger, image, cand.box, [e["sent"] for e in exprs], cfg.clip.score_scale,
                                           cfg.clip.image_size, cfg.clip.bgr_parity)
    for i, sc in enumerate(scored):
        sc.scores["clip_score"] = score[i].float().numpy()
        sc.scores["clip_cos"] = cos[i].float().numpy()


# ---------------------------------------------------------------------------------------
# part files and their merge


def _part_images(path: Path) -> list[int]:
    return h5_attr_keys(path, "meta_images", "proposal")


def _outputs(cfg: Config, model_type: str) -> tuple[str, dict[str, str], str]:
    """(run name, attrs of the final tables, fingerprint of the parts): the parts depend on the
    model config, the trained weights (digest of ``best.pt``) and the CLIP scoring set-up."""
    name = run_name(cfg, model_type)
    attrs = {"model": name, "config": cfg.fingerprint("model", "train")}
    ckpt = model_dir(cfg, name) / "best.pt"
    if not ckpt.is_file():
        raise InputError(ckpt, "checkpoint not found (run `sepnms train` first)")
    key = {"attrs": attrs, "weights": file_digest(ckpt)}
    if cfg.clip.score_proposals:
        from sepnms.clip.model import default_heads_path

        attrs["clip"] = "proposal crops"
        heads = default_heads_path(cfg)
        key["clip"] = {"config": cfg.fingerprint("clip"), "heads": file_digest(heads) if heads.is_file() else None}
    return name, attrs, hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]


def _parts(cfg: Config, name: str, split: str, fingerprint: str) -> PartFiles:
    return PartFiles(proposals_path(cfg.workdir, name, split), ".h5", fingerprint, _part_images)


#: per-candidate columns of the proposals layout: (shape after the row axis, dtype); score columns
#: not listed are float32 [M]
_ROW_LAYOUT = {"box": ((4,), np.float32), "cls_idx": ((), np.int32), "det_score": ((), np.float32)}


def write_merged_proposals(parts: list[Path], out: Path, split: str, attrs: dict[str, str],
                           image_order: list[int]) -> None:
    """Join proposal part files into one ``sepnms-proposals`` table at ``out``, streaming.

    Expressions come in ``image_order``, in their part's (refdb) order inside an image.  Only the
    per-expression index (ids, offsets: O(expressions) integers) is held in memory; the candidate
    rows are copied image by image from the parts into preallocated datasets.
    """
    files = [h5py.File(p, "r") for p in parts]
    try:
        cols: Optional[str] = None
        where: dict[int, tuple[int, int, int]] = {}  # image id -> (part, first expr, end expr)
        offsets = []
        for k, f in enumerate(files):
            if f.attrs.get("format") != PROPOSALS_FORMAT or int(f.attrs.get("version", -1)) != PROPOSALS_VERSION:
                raise InputError(parts[k], f"not a {PROPOSALS_FORMAT} v{PROPOSALS_VERSION} part")
            if cols is None:
                cols = str(f.attrs.get("score_columns", ""))
            elif str(f.attrs.get("score_columns", "")) != cols:
                raise InputError(parts[k], f"score columns {f.attrs.get('score_columns')!r} differ from {cols!r}")
            iids = f["image_id"][()]
            offsets.append(f["offsets"][()])
            bounds = np.flatnonzero(np.diff(iids)) + 1
            for s, e in zip(np.r_[0, bounds], np.r_[bounds, len(iids)]):
                where[int(iids[s])] = (k, int(s), int(e))
        blocks = [where[iid] for iid in image_order if iid in where]  # (part, first expr, end expr)
        rows = [(k, int(offsets[k][s]), int(offsets[k][e])) for k, s, e in blocks]  # (part, first row, end row)
        counts = np.concatenate([np.diff(offsets[k][s:e + 1]) for k, s, e in blocks]) if blocks else np.zeros(0, np.int64)
        score_cols = [c for c in (cols or "").split(",") if c]
        with h5py.File(out, "w") as g:
            g.attrs.update({"format": PROPOSALS_FORMAT, "version": PROPOSALS_VERSION, "split": split,
                            "stage": "scored", "score_columns": ",".join(score_cols)})
            for key, value in attrs.items():
                g.attrs[f"meta_{key}"] = str(value)
            for key in ("sent_id", "ref_id", "image_id"):
                g.create_dataset(key, data=np.concatenate([files[k][key][s:e] for k, s, e in blocks]).astype(np.int64)
                                 if blocks else np.zeros(0, np.int64))
            g.create_dataset("offsets", data=np.concatenate([[0], np.cumsum(counts)]).astype(np.int64))
            total = int(counts.sum())
            for key in ("box", "cls_idx", "det_score", *score_cols):
                shape, dtype = _ROW_LAYOUT.get(key, ((), np.float32))
                dst = g.create_dataset(key, shape=(total, *shape), dtype=dtype)
                at = 0
                for k, a, b in rows:
                    dst[at:at + b - a] = files[k][key][a:b]
                    at += b - a
    finally:
        for f in files:
            f.close()


def merge_proposals(cfg: Config, model_type: Optional[str] = None, splits: Optional[list[str]] = None,
                    ) -> dict[str, Path]:
    """Merge the part files of every split (``sepnms merge propose``, or rank 0 under torchrun).

    Raises an InputError naming the missing images when a split is not fully covered.
    """
    from sepnms.data.refdb import load_refdb

    model_type = model_type or cfg.train.model
    name, attrs, fingerprint = _outputs(cfg, model_type)
    refdb = load_refdb(Path(cfg.workdir) / "prepare" / "refdb.json")
    written = {}
    for split in splits or cfg.evaluate.splits:
        parts = _parts(cfg, name, split, fingerprint)
        if not parts.exists() and not parts.final.is_file():
            raise InputError(parts.folder, f"no proposal parts for split {split!r}: run `sepnms propose` first")
        if not _merge_split(parts, refdb, split, attrs):
            raise InputError(parts.folder, describe_missing(parts, parts.missing(refdb.by_image(split))))
        written[split] = parts.final
    return written


def _merge_split(parts: PartFiles, refdb, split: str, attrs: dict[str, str]) -> bool:
    images = list(refdb.by_image(split))
    return parts.merge(images, lambda paths, tmp: write_merged_proposals(paths, tmp, split, attrs, images))


def propose(cfg: Config, model_type: Optional[str] = None, splits: Optional[list[str]] = None,
            progress: bool = True, reference: bool = False, shard: tuple[int, int] = (0, 1),
            flush_every: Optional[int] = None, merge: bool = True) -> dict[str, Path]:
    """Score the candidates of every expression of ``splits``.

    Work is streamed per image and written every ``flush_every`` images (default
    ``propose.flush_every``) to part files
    (``<split>.parts/part-<first image>.h5``, atomic; see ``sepnms.io.parts``): a re-run skips
    images already scored, so an interrupted run resumes without redoing work.  ``shard=(i, n)``
    scores every n-th image only (other processes do the rest).  With ``merge``, once every image
    of a split is covered the parts are merged into ``<workdir>/proposals/<name>/<split>.h5``.
    Returns the final paths (or the parts folders of splits still waiting for other shards).
    Parts written with another model or config are discarded, never mixed in.
    """
    model_type = model_type or cfg.train.model
    flush_every = flush_every or cfg.propose.flush_every
    cfg = cfg.model_copy(update={"device": resolve_device(cfg.device)})  # cuda -> cuda:<LOCAL_RANK>
    name, attrs, fingerprint = _outputs(cfg, model_type)
    ws = Workspace.open(cfg, need_text=(model_type == "sepnms"))
    ws.refdb.check_splits(splits or cfg.evaluate.splits, Path(cfg.workdir) / "prepare" / "refdb.json")
    model = load_trained(cfg, ws, model_type)
    weights = model_dir(cfg, run_name(cfg, model_type)) / "best.pt"  # named when its outputs are not finite
    heads = HeadCache.for_config(cfg, ws.refdb, size=2)
    fn = per_expression_scores if reference else score_image
    dagger = None
    if cfg.clip.score_proposals:
        from sepnms.clip.model import load_dagger

        dagger = load_dagger(cfg, device=cfg.device)
    written = {}
    for split in splits or cfg.evaluate.splits:
        parts = _parts(cfg, name, split, fingerprint)
        done = parts.begin()
        by_image = ws.refdb.by_image(split)
        mine = shard_keys(by_image, shard)
        bar = tqdm(total=len(mine), initial=sum(1 for iid in mine if iid in done),
                   desc=f"propose {name} {split}", disable=not progress)
        for chunk in chunked(mine, flush_every, done):
            scored: list[ExpressionCandidates] = []
            for iid in chunk:
                head, scale = heads.get(iid)
                w, h = ws.refdb.image_size(iid)
                cand = ws.candidates.get(iid)
                out = fn(model, head, scale, cand, by_image[iid], ws, float(w), float(h), cfg.device)
                if dagger is not None:
                    add_clip_scores(cfg, dagger, ws, iid, cand, by_image[iid], out)
                for sc in out:
                    check_finite(sc.scores, f"propose {name}, image_id {iid}, sent_id {sc.sent_id}", weights)
                scored.extend(out)
                bar.update(1)
            write_proposals(parts.part_path(chunk),
                            ProposalTable(split, "scored", scored, {**attrs, "images": ",".join(map(str, chunk))}))
        bar.close()
        written[split] = parts.final if merge and _merge_split(parts, ws.refdb, split, attrs) else parts.folder
    return written

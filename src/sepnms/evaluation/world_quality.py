"""How good the world's detector and its features are, with no REC method involved.

* :func:`box_ap50`: COCO box AP at IoU 0.5 (pycocotools' ``COCOeval``) of the detector output
  (Ref-NMS's ``rpn_boxes.pkl`` / ``rpn_box_scores.pkl``) against ``instances.json``, with the
  usual test-time post-processing of the C4 Faster R-CNN (py-faster-rcnn ``test_net``): per class,
  rows with a score >= ``score_thresh``, NMS at ``nms_iou`` (``+1`` areas), at most
  ``max_per_image`` detections per image.
* :func:`linear_probes`: for every ground-truth object, the C4 head map mean-pooled over its box
  (the 7x7 parity crop, ``models.pooling``, averaged); a multinomial logistic regression
  (standardised features, L2, L-BFGS) per attribute - category, colour, size - fit on a seeded
  share of the images and scored on the others (held-out images, not objects).
* :func:`world_measures`: both over a world's files (its detector output, head features,
  ``instances.json`` and ``objects.json``).
"""
from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from sepnms.detection.boxes import nms_plus_one
from sepnms.errors import InputError
from sepnms.io.head_feats import read_head
from sepnms.models.pooling import pool_rois


def detections_for_eval(boxes: np.ndarray, scores: np.ndarray, score_thresh: float = 0.05, nms_iou: float = 0.3,
                    max_per_image: int = 100) -> list[tuple[int, float, np.ndarray]]:
    """One image: boxes [N, K*4] or [N, K, 4], scores [N, K] -> [(class index, score, xyxy)],
    best first, at most ``max_per_image``."""
    scores = np.asarray(scores, np.float32)
    boxes = np.asarray(boxes, np.float32).reshape(len(scores), -1, 4)
    out = []
    for c in range(1, scores.shape[1]):
        rows = np.nonzero(scores[:, c] >= score_thresh)[0]
        if rows.size == 0:
            continue
        keep = nms_plus_one(torch.from_numpy(boxes[rows, c]), torch.from_numpy(scores[rows, c]), nms_iou).numpy()
        out += [(c, float(scores[r, c]), boxes[r, c]) for r in rows[keep]]
    out.sort(key=lambda d: -d[1])
    return out[:max_per_image]


def box_ap50(instances_path: str | Path, boxes: Mapping[int, np.ndarray], scores: Mapping[int, np.ndarray],
             coco_ids: list[int], score_thresh: float = 0.05, nms_iou: float = 0.3,
             max_per_image: int = 100) -> dict:
    """COCO AP50 (and AP, AP at IoU 0.5:0.95) of the detector output over the images of ``boxes``.

    ``coco_ids[k - 1]`` is the COCO category of detector class k.  Boxes are written to COCO as
    ``[x1, y1, x2 - x1 + 1, y2 - y1 + 1]`` (MAttNet's convention).  Categories without ground
    truth are left out of the mean (COCOeval's -1)."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(instances_path))
    results = []
    for iid in boxes:
        for c, s, b in detections_for_eval(boxes[iid], scores[iid], score_thresh, nms_iou, max_per_image):
            results.append({"image_id": int(iid), "category_id": int(coco_ids[c - 1]), "score": s,
                            "bbox": [float(b[0]), float(b[1]), float(b[2] - b[0] + 1), float(b[3] - b[1] + 1)]})
    if not results:
        return {"ap50": 0.0, "ap": 0.0, "n_detections": 0, "n_images": len(boxes)}
    with contextlib.redirect_stdout(io.StringIO()):
        dt = gt.loadRes(results)
        ev = COCOeval(gt, dt, "bbox")
        ev.params.imgIds = sorted(int(i) for i in boxes)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return {"ap50": round(float(ev.stats[1]), 4), "ap": round(float(ev.stats[0]), 4),
            "n_detections": len(results), "n_images": len(boxes)}


def box_features(head: np.ndarray, im_info: np.ndarray, boxes_xyxy: np.ndarray, stride: int) -> np.ndarray:
    """head [1, C, H', W'], boxes [G, 4] original pixels -> [G, C]: the 7x7 crop of each box, averaged."""
    pooled = pool_rois(torch.from_numpy(np.asarray(head, np.float32)), torch.from_numpy(np.asarray(boxes_xyxy, np.float32)),
                       float(im_info[2]), stride, 7, "crop")
    return pooled.mean(dim=(2, 3)).numpy()


def fit_probe(x: np.ndarray, y: np.ndarray, l2: float = 1e-3, iters: int = 200) -> tuple[torch.Tensor, torch.Tensor]:
    """Multinomial logistic regression (L-BFGS, L2 ``l2`` on the weights) on standardised ``x``;
    returns (weight [K, C], bias [K]) for standardised inputs."""
    xt = torch.from_numpy(np.asarray(x, np.float64))
    yt = torch.from_numpy(np.asarray(y, np.int64))
    k = int(yt.max()) + 1
    w = torch.zeros(k, xt.shape[1], dtype=torch.float64, requires_grad=True)
    b = torch.zeros(k, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], max_iter=iters, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(xt @ w.T + b, yt) + l2 * (w * w).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return w.detach(), b.detach()


def linear_probes(features: np.ndarray, labels: Mapping[str, np.ndarray], image_of: np.ndarray,
                  fit_fraction: float = 0.5, seed: int = 0) -> dict:
    """features [G, C] (one row per object), labels {attribute: [G] values}, image_of [G] image ids ->
    {attribute: {accuracy, majority, n_fit, n_test, classes}}: fit on a seeded ``fit_fraction`` of
    the images, accuracy on the objects of the other images."""
    images = np.unique(image_of)
    rng = np.random.default_rng(seed)
    fit_imgs = set(rng.permutation(images)[: max(1, int(round(fit_fraction * len(images))))].tolist())
    fit = np.array([i in fit_imgs for i in image_of])
    mu, sd = features[fit].mean(0), features[fit].std(0) + 1e-6
    z = ((features - mu) / sd).astype(np.float64)
    out = {}
    for name, values in labels.items():
        values = np.asarray(values)
        classes = sorted(set(values.tolist()))
        y = np.array([classes.index(v) for v in values.tolist()])
        w, b = fit_probe(z[fit], y[fit])
        pred = (torch.from_numpy(z[~fit]) @ w.T + b).argmax(1).numpy()
        k_fit = int(y[fit].max()) + 1
        pred = np.where(pred < k_fit, pred, -1)
        majority = float(np.mean(y[~fit] == np.bincount(y[fit]).argmax())) if (~fit).any() else 0.0
        out[name] = {"accuracy": round(float(np.mean(pred == y[~fit])) if (~fit).any() else 0.0, 4),
                     "majority": round(majority, 4), "n_fit": int(fit.sum()), "n_test": int((~fit).sum()),
                     "classes": len(classes)}
    return out


def world_measures(instances: Path, boxes: Mapping[int, np.ndarray], scores: Mapping[int, np.ndarray],
                   head_dir: Path, objects_path: Path, category_ids: Sequence[int], score_thresh: float,
                   feat_stride: int, fit_fraction: float, seed: int) -> dict[str, Any]:
    """``{n_images, box_ap50, box_ap, n_detections, probes}`` of a world: :func:`box_ap50` of the
    detector output (``boxes`` / ``scores`` by image id) and :func:`linear_probes` of the head maps
    in ``head_dir`` over its ground-truth objects (category from ``instances``, colour and size from
    ``objects_path``, the world's ``objects.json``)."""
    det = box_ap50(instances, boxes, scores, list(category_ids), score_thresh)
    try:
        objects = json.loads(objects_path.read_text())
        anns = json.loads(instances.read_text())["annotations"]
    except (OSError, json.JSONDecodeError) as exc:
        raise InputError(objects_path, f"cannot read the world's ground truth ({exc})") from None
    by_image: dict[int, list[dict]] = {}
    for a in anns:
        by_image.setdefault(int(a["image_id"]), []).append(a)
    feats, image_of, labels = [], [], {"category": [], "color": [], "size": []}
    for iid in sorted(by_image):
        head, info = read_head(head_dir, iid)
        group = by_image[iid]
        xyxy = np.array([[x, y, x + w - 1, y + h - 1] for x, y, w, h in (a["bbox"] for a in group)], np.float32)
        feats.append(box_features(head, info, xyxy, feat_stride))
        for a in group:
            o = objects[str(a["id"])]
            image_of.append(iid)
            labels["category"].append(int(a["category_id"]))
            labels["color"].append(o["color"])
            labels["size"].append(o["size"])
    probes = linear_probes(np.concatenate(feats), {k: np.array(v) for k, v in labels.items()},
                           np.array(image_of), fit_fraction, seed=seed)
    return {"n_images": len(by_image), "box_ap50": det["ap50"], "box_ap": det["ap"], "n_detections": det["n_detections"],
            "probes": probes}

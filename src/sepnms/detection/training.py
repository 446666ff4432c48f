"""Training losses of MAttNet's Mask R-CNN C4 (without the mask branch): py-faster-rcnn's targets.

* RPN: anchors inside the resized image are matched to the ground truth (IoU >= ``fg_iou``
  foreground, < ``bg_iou`` background, each GT's best anchors foreground too; torchvision's
  ``Matcher``), ``rpn_batch`` of them sampled (``BalancedPositiveNegativeSampler``); the objectness
  is the Caffe two-group softmax's ``fg - bg`` logit (binary cross-entropy), the deltas a smooth L1
  (beta 1/9) over the foreground anchors, normalised by the sampled count.
* Box head: the RPN's proposals (no gradient) plus the ground truth, matched at ``roi_fg_iou``,
  ``roi_batch`` sampled with ``roi_fg_fraction`` foreground; 81-way cross-entropy and the
  true class's deltas (smooth L1, beta 1), targets divided by ``bbox_stds``.
* Optionally an attribute head (any ``{name: [N] labels}`` of the ground truth, e.g. colour and
  size) on the foreground RoIs' fc7, as bottom-up-attention detectors train.

Every IoU and delta uses the legacy ``+1`` widths (DETECTOR_AND_MATTNET.md A.6): torchvision's
``box_iou`` and ``BoxCoder.encode`` on ``boxes + [0, 0, 1, 1]``; decoding stays
``sepnms.detection.boxes.decode`` (no clamp).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.models.detection._utils import BalancedPositiveNegativeSampler, BoxCoder, Matcher
from torchvision.ops import box_iou

from sepnms.detection.anchors import shifted_anchors
from sepnms.detection.box_head import roi_fc7
from sepnms.detection.detector import MaskRCNNC4
from sepnms.detection.proposal_layer import proposals


def _plus_one(boxes: Tensor) -> Tensor:
    return boxes + boxes.new_tensor([0.0, 0.0, 1.0, 1.0])


def iou_plus_one(a: Tensor, b: Tensor) -> Tensor:
    """[N, 4] x [M, 4] xyxy -> [N, M] IoU with ``w = x2 - x1 + 1``."""
    return box_iou(_plus_one(a), _plus_one(b))


@dataclass
class ImageTargets:
    """One image's ground truth in *resized*-image pixels (legacy xyxy: ``x2 = x + w - 1``)."""

    boxes: Tensor   # [G, 4]
    labels: Tensor  # [G] class index 1..K-1
    attrs: dict[str, Tensor]  # name -> [G] attribute label


@dataclass(frozen=True)
class LossSettings:
    """Sampling and matching of the losses (``world_detector.*`` fills them; py-faster-rcnn's values
    except ``roi_batch`` 64 instead of 128 and the proposal counts, sized for small images)."""

    rpn_batch: int = 256
    rpn_fg_fraction: float = 0.5
    rpn_fg_iou: float = 0.7
    rpn_bg_iou: float = 0.3
    pre_nms_top_n: int = 2000
    post_nms_top_n: int = 300
    roi_batch: int = 64
    roi_fg_fraction: float = 0.25
    roi_fg_iou: float = 0.5
    attr_weight: float = 0.5


def rpn_logits(model: MaskRCNNC4, c4: Tensor) -> tuple[Tensor, Tensor]:
    """c4 [B, C, H, W] -> (objectness logits fg - bg [B, H*W*A], deltas [B, H*W*A, 4]), ordered
    (h, w, a) like ``sepnms.detection.rpn.rpn_outputs`` (channel a = background, A + a = foreground)."""
    x = torch.relu(model.rpn_net(c4))
    logits = model.rpn_cls_score_net(x)
    b, two_a, h, w = logits.shape
    a = two_a // 2
    bg = logits[:, :a].permute(0, 2, 3, 1).reshape(b, -1)
    fg = logits[:, a:].permute(0, 2, 3, 1).reshape(b, -1)
    deltas = model.rpn_bbox_pred_net(x).permute(0, 2, 3, 1).reshape(b, -1, 4)
    return fg - bg, deltas


class DetectorLoss(nn.Module):
    """The training losses of one batch of images of one resized size.

    ``forward(model, blob [B, 3, H', W'], targets (B ImageTargets), attr_heads)`` -> dict of scalar
    losses (``rpn_cls``, ``rpn_box``, ``cls``, ``box``, ``attr``) and ``fg_acc`` (foreground RoI
    classification accuracy, no gradient).
    """

    def __init__(self, s: LossSettings):
        super().__init__()
        self.s = s
        self.rpn_matcher = Matcher(s.rpn_fg_iou, s.rpn_bg_iou, allow_low_quality_matches=True)
        self.roi_matcher = Matcher(s.roi_fg_iou, s.roi_fg_iou, allow_low_quality_matches=False)
        self.rpn_sampler = BalancedPositiveNegativeSampler(s.rpn_batch, s.rpn_fg_fraction)
        self.roi_sampler = BalancedPositiveNegativeSampler(s.roi_batch, s.roi_fg_fraction)
        self.rpn_coder = BoxCoder((1.0, 1.0, 1.0, 1.0), bbox_xform_clip=float("inf"))

    def _encode(self, coder: BoxCoder, gt: Tensor, ref: Tensor) -> Tensor:
        return coder.encode_single(_plus_one(gt), _plus_one(ref))

    def forward(self, model: MaskRCNNC4, blob: Tensor, targets: list[ImageTargets],
                attr_heads: nn.ModuleDict | None = None) -> dict[str, Tensor]:
        dc, s = model.dc, self.s
        height, width = int(blob.shape[2]), int(blob.shape[3])
        c4 = model.c4(blob)
        logits, deltas = rpn_logits(model, c4)
        anchors = shifted_anchors(model.cell_anchors, c4.shape[2], c4.shape[3], dc.feat_stride)
        inside = ((anchors[:, 0] >= 0) & (anchors[:, 1] >= 0)
                  & (anchors[:, 2] < width) & (anchors[:, 3] < height))  # py-faster-rcnn: allowed_border 0
        stds = tuple(1.0 / v for v in dc.bbox_stds)
        roi_coder = BoxCoder(stds, bbox_xform_clip=float("inf"))
        rpn_cls, rpn_box, cls, box, attr = [], [], [], [], []
        n_fg = n_correct = 0
        for i, t in enumerate(targets):
            # ---- RPN targets
            match = torch.full((len(anchors),), -1, dtype=torch.long)
            if len(t.boxes):
                match[inside] = self.rpn_matcher(iou_plus_one(t.boxes, anchors[inside]))
            lab = torch.full((len(anchors),), -1.0)
            lab[inside & (match >= 0)] = 1.0
            lab[inside & (match == Matcher.BELOW_LOW_THRESHOLD)] = 0.0
            pos, neg = self._sample(self.rpn_sampler, lab)
            sel = pos | neg
            n_sel = max(1, int(sel.sum()))
            rpn_cls.append(F.binary_cross_entropy_with_logits(logits[i][sel], lab[sel], reduction="sum") / n_sel)
            if pos.any():
                tgt = self._encode(self.rpn_coder, t.boxes[match[pos]], anchors[pos])
                rpn_box.append(F.smooth_l1_loss(deltas[i][pos], tgt, beta=1.0 / 9, reduction="sum") / n_sel)
            # ---- box head targets
            with torch.no_grad():
                fg_prob = torch.sigmoid(logits[i].detach())
                rois, _ = proposals(fg_prob, deltas[i].detach(), anchors, float(height), float(width),
                                    s.pre_nms_top_n, s.post_nms_top_n, dc.rpn_nms_thresh)
                rois = torch.cat([rois, t.boxes]) if len(t.boxes) else rois
                if len(t.boxes):
                    m = self.roi_matcher(iou_plus_one(t.boxes, rois))
                else:
                    m = torch.full((len(rois),), -1, dtype=torch.long)
                rlab = (m >= 0).float()
                rpos, rneg = self._sample(self.roi_sampler, rlab)
                keep = torch.nonzero(rpos | rneg).flatten()
                rois, m, rpos = rois[keep], m[keep], rpos[keep]
                classes = torch.zeros(len(rois), dtype=torch.long)
                classes[rpos] = t.labels[m[rpos]]
            fc7 = roi_fc7(c4[i:i + 1], rois, model.resnet.layer4, dc.feat_stride, dc.pool_size, dc.roi_chunk)
            scores = model.cls_score_net(fc7)
            cls.append(F.cross_entropy(scores, classes))
            if rpos.any():
                d = model.bbox_pred_net(fc7[rpos]).reshape(int(rpos.sum()), -1, 4)
                d = d[torch.arange(len(d)), classes[rpos]]
                tgt = self._encode(roi_coder, t.boxes[m[rpos]], rois[rpos])
                box.append(F.smooth_l1_loss(d, tgt, beta=1.0, reduction="sum") / max(1, len(rois)))
                if attr_heads is not None and s.attr_weight > 0:
                    attr.append(sum(F.cross_entropy(head(fc7[rpos]), t.attrs[name][m[rpos]])
                                    for name, head in attr_heads.items()))
                with torch.no_grad():
                    n_fg += int(rpos.sum())
                    n_correct += int((scores[rpos].argmax(1) == classes[rpos]).sum())
        zero = blob.new_zeros(())
        n = len(targets)
        out = {
            "rpn_cls": sum(rpn_cls) / n,
            "rpn_box": (sum(rpn_box) / n) if rpn_box else zero,
            "cls": sum(cls) / n,
            "box": (sum(box) / n) if box else zero,
            "attr": (s.attr_weight * sum(attr) / n) if attr else zero,
        }
        out["fg_acc"] = torch.tensor(n_correct / max(1, n_fg))
        return out

    def _sample(self, sampler: BalancedPositiveNegativeSampler, labels: Tensor) -> tuple[Tensor, Tensor]:
        """(positive mask, negative mask) of one image; the sampler draws with ``torch.randperm`` from
        the global generator, which the trainer seeds."""
        pos, neg = sampler([labels])
        return pos[0].bool(), neg[0].bool()


def total_loss(losses: dict[str, Tensor]) -> Tensor:
    """The sum of the loss terms (``fg_acc`` excluded)."""
    return sum(v for k, v in losses.items() if k != "fg_acc")

"""Input files (``paths``) and the limit on every image read (``images``)."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

from sepnms.config.fields import PosInt, Section


class PathsConfig(Section):
    """Input files.  ``None`` means "not supplied"; a stage that needs it says so."""

    refer_root: Optional[Path] = None
    """``<refer_root>/<dataset>/refs(<split_by>).p`` and ``instances.json``."""
    images_dir: Optional[Path] = None
    """Folder of the COCO train2014 images (``COCO_train2014_%012d.jpg``); default
    ``<refer_root>/images/mscoco/images/train2014``."""
    rpn_boxes: Optional[Path] = None
    rpn_box_scores: Optional[Path] = None
    head_feats_dir: Optional[Path] = None
    data_json: Optional[Path] = None
    glove: Optional[Path] = None
    """GloVe vectors: a text file (``word v1 ... vD`` per line) or a ``.npy`` matrix with a
    word list beside it (see ``sepnms.io.glove``)."""
    text_encoder: Optional[Path] = None
    """A BERT-family model folder loadable by ``transformers`` ``from_pretrained``."""
    maskrcnn_checkpoint: Optional[Path] = None
    """MAttNet's Mask R-CNN checkpoint; its ``resnet.layer4.*`` tensors initialise the head."""
    detector_checkpoint: Optional[Path] = None
    """MAttNet's Mask R-CNN res101 state dict (``res101_mask_rcnn_iter_1250000_cpu.pth``) run by
    ``sepnms detect`` and by ``features.source: images``; default ``paths.maskrcnn_checkpoint``."""
    clip_checkpoint: Optional[Path] = None
    """OpenAI-layout CLIP checkpoint (``RN101.pt``) or open_clip state dict."""
    clip_heads: Optional[Path] = None
    """CLIP-dagger heads; default ``<workdir>/clip/heads.pt``."""
    captions: Optional[Path] = None
    """COCO-format captions file for CLIP-dagger fine-tuning."""
    captions_images_dir: Optional[Path] = None


class ImagesConfig(Section):
    """Every image read (``sepnms.io.images.read_image``: detect, predict, show, gallery, clip-ctx,
    clip-finetune, ``features.source: images``, CLIP-dagger proposal scores)."""

    max_pixels: PosInt = 40_000_000
    """Largest width x height decoded (from the file's header, before decoding): a small file can
    declare a huge image.  COCO's largest are 640 x 640."""

"""A dataset's image files by image_id: where each one is (its ``file_name`` in
``cfg.images_dir()``, else COCO train2014's name), the size the dataset records for it, and its
pixels through the one image gate (:func:`sepnms.io.images.read_image`).  Used by the detector's
features (:mod:`sepnms.data.head_features`) and by the figures (``show``, ``gallery``,
``Predictor.image``).

The path rule itself is :func:`sepnms.io.images.dataset_image_path`; this module adds what needs
the config and the RefDB (``io`` sits below both).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from sepnms.config import Config
from sepnms.data.refdb import RefDB
from sepnms.io.images import dataset_image_path, read_image


def refdb_image_files(cfg: Config, refdb: RefDB) -> dict[int, Path]:
    """{image_id: path} of the dataset's images (``file_name`` in ``cfg.images_dir()``)."""
    return {iid: image_file(cfg, refdb, iid) for iid in refdb.images}


def refdb_image_sizes(refdb: RefDB) -> dict[int, tuple[int, int]]:
    """{image_id: (width, height)} as the dataset records them (checked against each image file)."""
    return {iid: refdb.image_size(iid) for iid in refdb.images}


def image_file(cfg: Config, refdb: RefDB, image_id: int) -> Path:
    """The file of a dataset image: its ``file_name`` in ``cfg.images_dir()``, else COCO
    train2014's name for ``image_id``."""
    return dataset_image_path(cfg.images_dir(), image_id, refdb.images[int(image_id)].get("file_name"))


def load_image(cfg: Config, refdb: RefDB, image_id: int) -> np.ndarray:
    """[H, W, 3] uint8 RGB pixels of a dataset image (through the image gate, ``io.images.read_image``:
    ``images.max_pixels`` and the size the dataset records)."""
    return read_image(image_file(cfg, refdb, image_id), max_pixels=cfg.images.max_pixels,
                      expect_size=refdb.image_size(image_id))

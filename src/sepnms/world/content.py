"""The embedded world's tables: what its images hold, apart from where things are and what is said.

* :data:`COCO_CATEGORIES` - all 80 real COCO categories (instances.json, the detector's classes:
  :data:`CLASS_INDEX`);
* :data:`WORLD_CATEGORIES` - the 8 of them the world draws, each as a distinct shape
  (``sepnms.world.render.SHAPES``), with its nouns and synonyms;
* :data:`PALETTE` - the 6 named colours objects are painted in;
* :data:`SIZE_RANGES`, :data:`IMAGE_SHAPES` - object and image sizes as fractions of
  ``cfg.world.image_size``.
"""
from __future__ import annotations

from dataclasses import dataclass

#: All 80 COCO categories: (id, name, supercategory), ids 1..90 with gaps.
COCO_CATEGORIES: tuple[tuple[int, str, str], ...] = (
    (1, "person", "person"), (2, "bicycle", "vehicle"), (3, "car", "vehicle"),
    (4, "motorcycle", "vehicle"), (5, "airplane", "vehicle"), (6, "bus", "vehicle"),
    (7, "train", "vehicle"), (8, "truck", "vehicle"), (9, "boat", "vehicle"),
    (10, "traffic light", "outdoor"), (11, "fire hydrant", "outdoor"), (13, "stop sign", "outdoor"),
    (14, "parking meter", "outdoor"), (15, "bench", "outdoor"), (16, "bird", "animal"),
    (17, "cat", "animal"), (18, "dog", "animal"), (19, "horse", "animal"), (20, "sheep", "animal"),
    (21, "cow", "animal"), (22, "elephant", "animal"), (23, "bear", "animal"),
    (24, "zebra", "animal"), (25, "giraffe", "animal"), (27, "backpack", "accessory"),
    (28, "umbrella", "accessory"), (31, "handbag", "accessory"), (32, "tie", "accessory"),
    (33, "suitcase", "accessory"), (34, "frisbee", "sports"), (35, "skis", "sports"),
    (36, "snowboard", "sports"), (37, "sports ball", "sports"), (38, "kite", "sports"),
    (39, "baseball bat", "sports"), (40, "baseball glove", "sports"), (41, "skateboard", "sports"),
    (42, "surfboard", "sports"), (43, "tennis racket", "sports"), (44, "bottle", "kitchen"),
    (46, "wine glass", "kitchen"), (47, "cup", "kitchen"), (48, "fork", "kitchen"),
    (49, "knife", "kitchen"), (50, "spoon", "kitchen"), (51, "bowl", "kitchen"),
    (52, "banana", "food"), (53, "apple", "food"), (54, "sandwich", "food"), (55, "orange", "food"),
    (56, "broccoli", "food"), (57, "carrot", "food"), (58, "hot dog", "food"), (59, "pizza", "food"),
    (60, "donut", "food"), (61, "cake", "food"), (62, "chair", "furniture"),
    (63, "couch", "furniture"), (64, "potted plant", "furniture"), (65, "bed", "furniture"),
    (67, "dining table", "furniture"), (70, "toilet", "furniture"), (72, "tv", "electronic"),
    (73, "laptop", "electronic"), (74, "mouse", "electronic"), (75, "remote", "electronic"),
    (76, "keyboard", "electronic"), (77, "cell phone", "electronic"), (78, "microwave", "appliance"),
    (79, "oven", "appliance"), (80, "toaster", "appliance"), (81, "sink", "appliance"),
    (82, "refrigerator", "appliance"), (84, "book", "indoor"), (85, "clock", "indoor"),
    (86, "vase", "indoor"), (87, "scissors", "indoor"), (88, "teddy bear", "indoor"),
    (89, "hair drier", "indoor"), (90, "toothbrush", "indoor"),
)
COCO_IDS: tuple[int, ...] = tuple(sorted(c[0] for c in COCO_CATEGORIES))
#: detector class index (1..80; 0 = background) of each COCO id
CLASS_INDEX: dict[int, int] = {cid: i + 1 for i, cid in enumerate(COCO_IDS)}
COCO_NAME: dict[int, str] = {c[0]: c[1] for c in COCO_CATEGORIES}


@dataclass(frozen=True)
class WorldCategory:
    """One category of the world: a real COCO category drawn as a distinct shape."""

    coco_id: int
    noun: str
    plural: str
    synonyms: tuple[tuple[str, str], ...]  # (singular, plural)
    shape: str
    aspect: float  # nominal width / height


#: The world's categories.  Chosen so that, in GloVe 6B-50d, their names are far apart (max
#: pairwise cosine 0.39) and far from the template words ("left", "top", "red", "next", ...;
#: max cosine 0.44), so the GloVe noun rule is not swamped by spurious matches; and so that
#: their shapes differ at stride 16.
WORLD_CATEGORIES: tuple[WorldCategory, ...] = (
    WorldCategory(60, "donut", "donuts", (("doughnut", "doughnuts"),), "ring", 1.0),
    WorldCategory(38, "kite", "kites", (), "diamond", 0.72),
    WorldCategory(90, "toothbrush", "toothbrushes", (), "toothbrush", 3.6),
    WorldCategory(86, "vase", "vases", (("urn", "urns"),), "vase", 0.62),
    WorldCategory(33, "suitcase", "suitcases", (("briefcase", "briefcases"), ("luggage", "luggage")),
                  "suitcase", 1.4),
    WorldCategory(76, "keyboard", "keyboards", (("keypad", "keypads"),), "keyboard", 2.6),
    WorldCategory(56, "broccoli", "broccoli", (), "broccoli", 0.9),
    WorldCategory(79, "oven", "ovens", (("stove", "stoves"),), "oven", 1.05),
)

#: named colours and their RGB
PALETTE: tuple[tuple[str, tuple[int, int, int]], ...] = (
    ("red", (205, 35, 35)),
    ("green", (40, 160, 60)),
    ("blue", (40, 85, 215)),
    ("yellow", (235, 205, 35)),
    ("purple", (135, 55, 180)),
    ("pink", (245, 135, 195)),
)
COLOR_RGB: dict[str, tuple[int, int, int]] = dict(PALETTE)
COLOR_NOISE = 10.0  # per-object colour jitter (RGB std)

#: object long side as a fraction of cfg.world.image_size, per size class (disjoint ranges)
SIZE_RANGES: dict[str, tuple[float, float]] = {"small": (0.1, 0.14), "big": (0.19, 0.26)}
#: (width, height) shapes as fractions of cfg.world.image_size
IMAGE_SHAPES: tuple[tuple[float, float], ...] = ((1.0, 0.75), (0.75, 1.0), (1.0, 1.0))

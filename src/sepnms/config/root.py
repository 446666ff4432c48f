"""The whole config (``Config``): the run's own keys, the sections in their order (the order of
``model_dump``, so of every written ``config.yaml`` and fingerprint), and what is derived from them
(input paths, ``fingerprint``, ``to_yaml``)."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Literal

import yaml
from pydantic import Field, model_validator

from sepnms.config.clip import ClipConfig
from sepnms.config.detector import DetectorConfig, FeaturesConfig
from sepnms.config.fields import NonNegInt, Section
from sepnms.config.fusion import EvaluateConfig, FusionConfig, ProposeConfig
from sepnms.config.grounding import GroundingConfig
from sepnms.config.model import ModelConfig, TextConfig
from sepnms.config.paths import ImagesConfig, PathsConfig
from sepnms.config.prepare import PrepareConfig
from sepnms.config.presentation import GalleryConfig, ShowConfig
from sepnms.config.train import TrainConfig
from sepnms.config.world import WorldConfig, WorldDetectorConfig
from sepnms.errors import ConfigError


DATASET_SPLIT_BYS = {"refcoco": ("unc", "google"), "refcoco+": ("unc",), "refcocog": ("umd", "google")}


class Config(Section):
    preset: Literal["paper", "demo"] = "paper"
    dataset: Literal["refcoco", "refcoco+", "refcocog"] = "refcoco"
    split_by: str = "unc"
    workdir: Path = Path("work")
    seed: NonNegInt = 0
    device: str = "cpu"
    paths: PathsConfig = Field(default_factory=PathsConfig)
    prepare: PrepareConfig = Field(default_factory=PrepareConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    text: TextConfig = Field(default_factory=TextConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    fusion: FusionConfig = Field(default_factory=FusionConfig)
    evaluate: EvaluateConfig = Field(default_factory=EvaluateConfig)
    propose: ProposeConfig = Field(default_factory=ProposeConfig)
    clip: ClipConfig = Field(default_factory=ClipConfig)
    show: ShowConfig = Field(default_factory=ShowConfig)
    gallery: GalleryConfig = Field(default_factory=GalleryConfig)
    detector: DetectorConfig = Field(default_factory=DetectorConfig)
    features: FeaturesConfig = Field(default_factory=FeaturesConfig)
    images: ImagesConfig = Field(default_factory=ImagesConfig)
    world: WorldConfig = Field(default_factory=WorldConfig)
    world_detector: WorldDetectorConfig = Field(default_factory=WorldDetectorConfig)
    grounding: GroundingConfig = Field(default_factory=GroundingConfig)

    @model_validator(mode="after")
    def _check_dataset(self) -> "Config":
        valid = DATASET_SPLIT_BYS[self.dataset]
        if self.split_by not in valid:
            raise ValueError(
                f"split_by {self.split_by!r} is not valid for dataset {self.dataset!r}; "
                f"choose one of {list(valid)}"
            )
        return self

    # -- derived values -------------------------------------------------------------
    @property
    def dataset_tag(self) -> str:
        """``refcoco_unc``-style tag used in file names."""
        return f"{self.dataset}_{self.split_by}"

    def refs_path(self) -> Path:
        return self._need("refer_root") / self.dataset / f"refs({self.split_by}).p"

    def instances_path(self) -> Path:
        return self._need("refer_root") / self.dataset / "instances.json"

    def images_dir(self) -> Path:
        if self.paths.images_dir is not None:
            return self.paths.images_dir
        return self._need("refer_root") / "images" / "mscoco" / "images" / "train2014"

    def _need(self, key: str) -> Path:
        value = getattr(self.paths, key)
        if value is None:
            raise ConfigError(f"config key paths.{key} is not set; this stage needs it")
        return value

    def need_path(self, key: str) -> Path:
        """The value of ``paths.<key>``, or a ConfigError naming the key."""
        return self._need(key)

    def fingerprint(self, *sections: str) -> str:
        """A short hash of the given sections (all if none), to detect stale outputs."""
        data = self.model_dump(mode="json")
        if sections:
            data = {s: data[s] for s in sections}
        blob = json.dumps(data, sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)

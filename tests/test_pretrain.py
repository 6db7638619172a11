"""vireid pretrain: backbone -> torchvision conversion, the packaged asset, end to end."""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from vireid.apps.pretrain import backbone_to_torchvision, sha256_file, tensor_digest
from vireid.config import Config
from vireid.errors import CheckpointError, ConfigError
from vireid.models import assets
from vireid.models.build import build_model
from vireid.models.dscsn import DSCSN
from vireid.models.resnet import ResNet, load_imagenet_weights


def _cfg(shared: str) -> Config:
    cfg = Config()
    cfg.model.arch, cfg.model.width, cfg.model.last_stride = "resnet18", 0.125, 1
    cfg.model.shared_stages, cfg.model.pretrained = shared, "none"
    cfg.data.height, cfg.data.width = 64, 32
    cfg.ccn.kernel_size = [2, 2]
    return cfg


def _randomize_bn(module: torch.nn.Module, gen: torch.Generator) -> None:
    """Non-trivial BN statistics, so that a swapped bn1/bn2 or stem key would show."""
    for m in module.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=gen) * 0.1)
            m.running_var.copy_(torch.rand(m.running_var.shape, generator=gen) + 0.5)
            m.weight.data.copy_(torch.rand(m.weight.shape, generator=gen) + 0.5)
            m.bias.data.copy_(torch.randn(m.bias.shape, generator=gen) * 0.1)


def test_key_mapping_hand_worked():
    t = torch.zeros(1)
    state = {"backbone.shared.stem.0.weight": t, "backbone.shared.stem.1.running_var": t,
             "backbone.shared.layer1.0.conv1.weight": t, "backbone.shared.layer2.0.conv1.weight": t,
             "backbone.shared.layer3.0.conv1.weight": t, "backbone.shared.layer4.0.conv1.weight": t,
             "backbone.shared.stem.1.weight": t,
             "classifier.weight": t, "ccn.fc.weight": t}
    out = backbone_to_torchvision(state)
    assert set(out) == {"conv1.weight", "bn1.running_var", "bn1.weight", "layer1.0.conv1.weight",
                        "layer2.0.conv1.weight", "layer3.0.conv1.weight", "layer4.0.conv1.weight"}


@pytest.mark.parametrize("shared,path", [("all", "rgb"), ("3-4", "rgb"), ("3-4", "ir"), ("none", "ir")])
def test_converted_backbone_reproduces_the_path(tmp_path, shared, path):
    """The converted file, loaded the way model.pretrained loads it, computes the same stage-4
    map as the chosen path of the trained DSCSN (eval mode, non-trivial BN statistics)."""
    gen = torch.Generator().manual_seed(0)
    model = build_model(_cfg(shared), num_classes=5)
    _randomize_bn(model, gen)
    if shared != "all":  # make the two paths differ, so taking the wrong one would show
        with torch.no_grad():
            for p in model.backbone.ir.parameters():
                p.add_(torch.randn(p.shape, generator=gen) * 0.05)
    file = tmp_path / "w.pth"
    torch.save(backbone_to_torchvision(model.state_dict(), path), file)
    net = ResNet("resnet18", last_stride=1, width=0.125, num_classes=None)
    load_imagenet_weights(net, None, file)  # strict: every key and shape must match
    model.eval(), net.eval()
    x = torch.randn(3, 3, 64, 32, generator=gen)
    with torch.no_grad():
        ref, _ = model.backbone(x, path)
        got = net.features(x)
    assert torch.allclose(ref, got, atol=1e-6)
    if shared != "all":
        other = "rgb" if path == "ir" else "ir"
        with torch.no_grad():
            assert not torch.allclose(model.backbone(x, other)[0], got, atol=1e-3)


def test_pretrained_file_starts_both_paths(tmp_path):
    gen = torch.Generator().manual_seed(1)
    src = ResNet("resnet18", last_stride=1, width=0.125, num_classes=None)
    _randomize_bn(src, gen)
    file = tmp_path / "w.pth"
    torch.save(src.state_dict(), file)
    dscsn = DSCSN("resnet18", shared_stages="3-4", last_stride=1, width=0.125, pretrained=str(file))
    dscsn.eval(), src.eval()
    x = torch.randn(2, 3, 64, 32, generator=gen)
    with torch.no_grad():
        want = src.features(x)
        for modality in ("rgb", "ir"):
            assert torch.allclose(dscsn(x, modality)[0], want, atol=1e-6)


def test_conversion_errors():
    with pytest.raises(ConfigError, match="'rgb' or 'ir'"):
        backbone_to_torchvision({}, path="thermal")
    with pytest.raises(CheckpointError, match="unexpected backbone key"):
        backbone_to_torchvision({"backbone.shared.head.weight": torch.zeros(1)})
    with pytest.raises(CheckpointError, match="conv1.weight"):
        backbone_to_torchvision({"backbone.shared.layer1.0.conv1.weight": torch.zeros(1)})


def test_digests_against_hashlib(tmp_path):
    f = tmp_path / "a.bin"
    f.write_bytes(b"abc")
    assert sha256_file(f) == hashlib.sha256(b"abc").hexdigest()
    a = {"x": torch.tensor([1.0, 2.0])}
    assert tensor_digest(a) == tensor_digest({"x": torch.tensor([1.0, 2.0])})
    assert tensor_digest(a) != tensor_digest({"x": torch.tensor([1.0, 2.5])})
    assert tensor_digest(a) != tensor_digest({"y": torch.tensor([1.0, 2.0])})


def _pretrain_in_fresh_process(out, tiny_config):
    """One tiny pretrain in its own interpreter, as the CLI runs it. (In a process that has
    already run a convolution, the trainer's weights differ from a fresh process's: that is
    the trainer's determinism scope, not this module's.)"""
    code = (
        "import sys, json; from vireid.apps.pretrain import pretrain; "
        "r = pretrain(sys.argv[1], preset=sys.argv[2], ids=14, data_seed=11, difficulty=0.7, "
        "threads=1, progress=False, name='w', "
        "synth_options={'images_per_camera': (2, 2), 'rgb_size': (64, 32), 'ir_size': (64, 32)}, "
        "overrides=['train.epochs=2', 'train.iters_per_epoch=2', 'train.lr_milestones=[1]']); "
        "print(json.dumps([str(r.weights), str(r.record), r.content_digest]))")
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-c", code, str(out), str(tiny_config)],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    weights, record, digest = json.loads(proc.stdout.strip().splitlines()[-1])
    return Path(weights), Path(record), digest


def test_pretrain_end_to_end_is_reproducible(tmp_path, tiny_config):
    """Synthesise + train + convert twice (fresh processes): same tensors; the record's
    digest is the file's; the weights are the trained backbone's and load through
    model.pretrained into both paths."""
    a_weights, a_record, a_digest = _pretrain_in_fresh_process(tmp_path / "a", tiny_config)
    _, _, b_digest = _pretrain_in_fresh_process(tmp_path / "b", tiny_config)
    assert a_digest == b_digest
    assert tensor_digest(torch.load(a_weights, weights_only=True)) == a_digest
    record = json.loads(a_record.read_text())
    assert record["sha256"] == hashlib.sha256(a_weights.read_bytes()).hexdigest()
    assert record["data"]["seed"] == 11 and record["data"]["difficulty"] == 0.7
    assert record["config"]["loss"]["kind"] == "idl"
    assert record["config"]["model"]["shared_stages"] == "all"
    assert record["train"]["iterations"] == 4
    assert list(record["machine"]) == ["platform", "python", "torch", "cpu_count"]  # the file format
    sd = torch.load(a_weights, weights_only=True)
    ckpt = torch.load(tmp_path / "a" / "run" / "checkpoints" / "last.pt", weights_only=True)
    assert torch.equal(sd["layer4.1.conv2.weight"], ckpt["model"]["backbone.shared.layer4.1.conv2.weight"])
    assert torch.equal(sd["conv1.weight"], ckpt["model"]["backbone.shared.stem.0.weight"])
    cfg = _cfg("3-4")
    cfg.model.pretrained = str(a_weights)
    model = build_model(cfg, num_classes=3)
    assert torch.equal(model.backbone.ir["stem"][0].weight, sd["conv1.weight"])
    assert torch.equal(model.backbone.shared["layer3"][0].bn1.running_mean, sd["layer3.0.bn1.running_mean"])


def test_packaged_asset_digest_and_fit(tmp_path, monkeypatch):
    path = assets.resolve_pretrained("synthetic-r18w025", "resnet18", 0.25)
    assert sha256_file(path) == assets.ASSETS["synthetic-r18w025"].sha256
    net = ResNet("resnet18", last_stride=1, width=0.25, num_classes=None)
    load_imagenet_weights(net, None, path)
    with pytest.raises(CheckpointError, match="no packaged weights named"):
        assets.resolve_pretrained("imagenet-r18", "resnet18", 0.25)
    with pytest.raises(CheckpointError, match="width 0.25"):
        assets.resolve_pretrained("synthetic-r18w025", "resnet18", 0.5)
    bad = tmp_path / "synthetic-r18w025.pth"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte inside a tensor
    bad.write_bytes(bytes(data))
    monkeypatch.setattr(assets, "ASSET_DIR", tmp_path)
    with pytest.raises(CheckpointError, match="damaged or replaced"):
        assets.resolve_pretrained("synthetic-r18w025", "resnet18", 0.25)
    bad.unlink()
    with pytest.raises(CheckpointError, match="missing"):
        assets.resolve_pretrained("synthetic-r18w025", "resnet18", 0.25)

"""ResNet: torchvision key set, parameter counts, weight loading and its errors."""
from __future__ import annotations

import urllib.error

import pytest
import torch

from vireid.errors import CheckpointError, ConfigError
from vireid.models import resnet as resnet_mod
from vireid.models.resnet import ResNet, feature_hw, load_imagenet_weights

BN = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")


def torchvision_keys(arch: str) -> set[str]:
    """The state-dict names of torchvision's resnet18/34/50, written out from its structure."""
    blocks = {"resnet18": [2, 2, 2, 2], "resnet34": [3, 4, 6, 3], "resnet50": [3, 4, 6, 3]}[arch]
    bottleneck = arch == "resnet50"
    keys = {"conv1.weight", "fc.weight", "fc.bias"} | {f"bn1.{b}" for b in BN}
    for layer, nblocks in enumerate(blocks, start=1):
        for i in range(nblocks):
            pre = f"layer{layer}.{i}."
            convs = (1, 2, 3) if bottleneck else (1, 2)
            for c in convs:
                keys.add(f"{pre}conv{c}.weight")
                keys |= {f"{pre}bn{c}.{b}" for b in BN}
            # Block 0 downsamples when the stride or the width changes: layers 2–4 always,
            # layer 1 only for Bottleneck (64 → 256 channels).
            if i == 0 and (layer > 1 or bottleneck):
                keys.add(f"{pre}downsample.0.weight")
                keys |= {f"{pre}downsample.1.{b}" for b in BN}
    return keys


@pytest.mark.parametrize("arch,params", [
    # torchvision's published parameter counts.
    ("resnet18", 11_689_512), ("resnet34", 21_797_672), ("resnet50", 25_557_032),
])
def test_keys_and_param_counts_match_torchvision(arch, params):
    with torch.device("meta"):
        model = ResNet(arch)
    assert set(model.state_dict()) == torchvision_keys(arch)
    assert sum(p.numel() for p in model.parameters()) == params


def test_resnet50_known_shapes():
    with torch.device("meta"):
        sd = ResNet(50).state_dict()
    assert sd["conv1.weight"].shape == (64, 3, 7, 7)
    assert sd["layer1.0.downsample.0.weight"].shape == (256, 64, 1, 1)
    assert sd["layer2.0.conv2.weight"].shape == (128, 128, 3, 3)  # v1.5: stride on the 3×3
    assert sd["layer4.2.conv3.weight"].shape == (2048, 512, 1, 1)
    assert sd["fc.weight"].shape == (1000, 2048)


def _tiny_file(tmp_path, arch="resnet18", width=0.125):
    torch.manual_seed(0)
    src = ResNet(arch, width=width)
    path = tmp_path / f"{arch}.pth"
    torch.save(src.state_dict(), path)
    return src, path


def test_local_file_round_trip(tmp_path):
    src, path = _tiny_file(tmp_path)
    assert set(torch.load(path, weights_only=True)) == torchvision_keys("resnet18")
    dst = ResNet(18, width=0.125)
    load_imagenet_weights(dst, "resnet18", str(path))
    for k, v in src.state_dict().items():
        assert torch.equal(v, dst.state_dict()[k]), k
    headless = ResNet(18, width=0.125, num_classes=None)  # fc entries of the file are ignored
    load_imagenet_weights(headless, None, path)
    assert torch.equal(headless.layer4[1].conv2.weight, src.layer4[1].conv2.weight)


def test_mismatched_keys_are_named(tmp_path):
    src, path = _tiny_file(tmp_path)
    sd = src.state_dict()
    sd.pop("layer3.1.bn2.running_var")
    sd["layer5.0.conv1.weight"] = torch.zeros(1)
    torch.save(sd, path)
    with pytest.raises(CheckpointError) as err:
        load_imagenet_weights(ResNet(18, width=0.125), None, path)
    assert "layer3.1.bn2.running_var" in str(err.value) and "layer5.0.conv1.weight" in str(err.value)
    with pytest.raises(CheckpointError, match="resnet34"):
        load_imagenet_weights(ResNet(34, width=0.125), None, _tiny_file(tmp_path)[1])
    with pytest.raises(CheckpointError, match="not found"):
        load_imagenet_weights(ResNet(18, width=0.125), None, tmp_path / "missing.pth")


def test_width_multiplier_cannot_load_imagenet(tmp_path):
    _, path = _tiny_file(tmp_path, width=0.125)
    narrow = ResNet(18, width=0.25)
    assert narrow.out_channels == 128 and set(narrow.state_dict()) == torchvision_keys("resnet18")
    with pytest.raises(CheckpointError, match="width"):  # shapes of another width
        load_imagenet_weights(narrow, None, path)
    with pytest.raises(CheckpointError, match="width 1.0"):  # ImageNet: width 1 only
        load_imagenet_weights(narrow, None, "imagenet")


def test_offline_without_cache_names_file_and_directory(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))

    def offline(*a, **k):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    with torch.device("meta"), pytest.raises(CheckpointError) as err:
        load_imagenet_weights(ResNet(18, num_classes=None), None, "imagenet")
    msg = str(err.value)
    assert "resnet18-f37072fd.pth" in msg and str(tmp_path / "hub" / "checkpoints") in msg


def test_cached_file_is_used_without_download(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    (tmp_path / "hub" / "checkpoints").mkdir(parents=True)
    src = ResNet(18)
    torch.save(src.state_dict(), tmp_path / "hub" / "checkpoints" / "resnet18-f37072fd.pth")

    def no_download(*a, **k):
        raise AssertionError("should not download")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", no_download)
    dst = resnet_mod.resnet(18, pretrained="imagenet")
    assert torch.equal(dst.conv1.weight, src.conv1.weight)


@pytest.mark.parametrize("hw", [(256, 128), (128, 64), (97, 45)])
@pytest.mark.parametrize("last_stride", [1, 2])
def test_last_stride_and_feature_size(hw, last_stride):
    model = ResNet(18, last_stride=last_stride, width=0.0625, num_classes=None).eval()
    with torch.no_grad():
        f = model.features(torch.zeros(1, 3, *hw))
    assert tuple(f.shape[2:]) == feature_hw(*hw, last_stride)
    if hw == (256, 128):
        assert tuple(f.shape[2:]) == ((8, 4) if last_stride == 2 else (16, 8))


def test_bad_options():
    with pytest.raises(ConfigError):
        ResNet(101)
    with pytest.raises(ConfigError):
        ResNet(18, last_stride=3)

"""DSCSN: stage sharing, equal start, F/G shapes, paper-preset size; build_model and model_info."""
from __future__ import annotations

import pytest
import torch

from vireid.config import Config
from vireid.errors import ConfigError
from vireid.models.build import build_model, model_info
from vireid.models.dscsn import DSCSN
from vireid.models.resnet import ResNet

# Parts owned per modality for each variant of the paper's Table III.
SPECIFIC = {
    "none": ["stem", "layer1", "layer2", "layer3", "layer4"],
    "4": ["stem", "layer1", "layer2", "layer3"],
    "3-4": ["stem", "layer1", "layer2"],
    "2-4": ["stem", "layer1"],
    "1-4": ["stem"],
    "all": [],
}


def _part_params(net: ResNet, part: str) -> int:
    mods = [net.conv1, net.bn1] if part == "stem" else [getattr(net, part)]
    return sum(p.numel() for m in mods for p in m.parameters())


@pytest.mark.parametrize("shared", list(SPECIFIC))
def test_sharing_variants(shared):
    torch.manual_seed(0)
    net = DSCSN("resnet18", shared_stages=shared, width=0.0625)
    assert list(net.rgb.keys()) == SPECIFIC[shared] == list(net.ir.keys())
    # Both paths start equal but own distinct tensors.
    for p in SPECIFIC[shared]:
        for (k, a), (_, b) in zip(net.rgb[p].state_dict().items(), net.ir[p].state_dict().items()):
            assert torch.equal(a, b), k
        assert all(x is not y for x, y in zip(net.rgb[p].parameters(), net.ir[p].parameters()))
    # Size: one single-path ResNet plus a second copy of every specific part.
    with torch.device("meta"):
        ref = ResNet(18, width=0.0625, num_classes=None)
    expected = sum(p.numel() for p in ref.parameters()) + sum(_part_params(ref, p) for p in SPECIFIC[shared])
    assert sum(p.numel() for p in net.parameters()) == expected
    # Identical start → identical outputs; after changing the IR stem they differ iff it is specific.
    net.eval()
    x = torch.rand(2, 3, 64, 32)
    with torch.no_grad():
        fr, gr = net(x, "rgb")
        fi, _ = net(x, "ir")
        assert torch.allclose(fr, fi)
        assert torch.allclose(gr, fr.mean(dim=(2, 3)))
        stem_ir = net.ir["stem"][0] if "stem" in net.ir else net.shared["stem"][0]
        stem_ir.weight.mul_(1.5)
        fr2, _ = net(x, "rgb")
        fi2, _ = net(x, "ir")
    assert torch.allclose(fr2, fi2) == (shared == "all")


def test_forward_pair_matches_separate_passes_in_eval():
    torch.manual_seed(0)
    net = DSCSN("resnet18", "3-4", width=0.0625).eval()
    xr, xi = torch.rand(3, 3, 64, 32), torch.rand(2, 3, 64, 32)
    with torch.no_grad():
        fr, gr, fi, gi = net.forward_pair(xr, xi)
        assert torch.allclose(fr, net(xr, "rgb")[0], atol=1e-6)
        assert torch.allclose(fi, net(xi, "ir")[0], atol=1e-6)


def test_pretrained_file_loads_into_both_paths(tmp_path):
    torch.manual_seed(0)
    src = ResNet(18, width=0.0625)
    torch.save(src.state_dict(), tmp_path / "w.pth")
    net = DSCSN("resnet18", "3-4", width=0.0625, pretrained=str(tmp_path / "w.pth"))
    assert torch.equal(net.rgb["stem"][0].weight, src.conv1.weight)
    assert torch.equal(net.ir["layer2"][1].conv2.weight, src.layer2[1].conv2.weight)
    assert torch.equal(net.shared["layer4"][0].downsample[0].weight, src.layer4[0].downsample[0].weight)


def test_paper_geometry_feature_map_and_size():
    # A narrow ResNet-50 has the paper network's spatial geometry at a fraction of the cost.
    net = DSCSN("resnet50", "3-4", last_stride=2, width=0.0625).eval()
    with torch.no_grad():
        f, g = net(torch.zeros(2, 3, 256, 128), "rgb")
    assert f.shape == (2, 2048 // 16, 8, 4) and g.shape == (2, 2048 // 16)
    info = model_info(Config(), num_classes=395)  # paper SYSU preset: ResNet-50, 256×128, 3-4
    assert abs(info["params_without_classifier"] - 25e6) <= 1e6
    assert info["params_total"] - info["params_without_classifier"] == 395 * 2048  # no bias
    assert info["feature_map"] == [2048, 8, 4]
    assert info["num_kernels"] == 12
    assert 14.0e6 < info["ccn_macs_per_pair"] < 14.3e6


def test_build_model_small_forward():
    cfg = Config()
    cfg.model.arch, cfg.model.width, cfg.model.pretrained = "resnet18", 0.125, "none"
    cfg.model.last_stride = 1
    cfg.data.height, cfg.data.width = 128, 64
    model = build_model(cfg, num_classes=7).eval()
    with torch.no_grad():
        f, g = model.forward_features(torch.rand(2, 3, 128, 64), "ir")
        logits = model.classify(g)
        d = model.ccn(f, f, torch.tensor([0, 1]), torch.tensor([1, 1]))
    assert f.shape == (2, 64, 8, 4) and logits.shape == (2, 7)
    assert list(f.shape[1:]) == model_info(cfg, 7)["feature_map"]
    assert d.shape == (2,) and ((d > 0) & (d < 1)).all()


def test_bad_shared_stages():
    with pytest.raises(ConfigError, match="shared_stages"):
        DSCSN("resnet18", "2-3", width=0.0625)

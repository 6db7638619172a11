"""AGW building blocks: GeM, BNNeck, non-local blocks and their placement."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from vireid.errors import ConfigError
from vireid.models.agw import (
    BNNeck,
    GeM,
    NonLocalBlock,
    StageWithNonLocal,
    insert_non_local,
)
from vireid.models.resnet import ResNet


def test_gem_shapes_and_limits():
    torch.manual_seed(0)
    x = torch.rand(2, 5, 6, 4, dtype=torch.float64)
    assert GeM()(x).shape == (2, 5)
    torch.testing.assert_close(GeM(p=1.0, eps=0.0)(x), F.adaptive_avg_pool2d(x, 1).flatten(1))
    big = GeM(p=200.0, eps=0.0)(x)
    mx = F.adaptive_max_pool2d(x, 1).flatten(1)
    # (mean x^p)^(1/p) = max * (share of the max ...)^(1/p) -> max, from below.
    assert torch.all(big <= mx + 1e-12) and torch.allclose(big, mx, rtol=0.02)
    # p = 3 by hand on one channel: values 1, 2 -> ((1 + 8) / 2 + 1e-12)^(1/3)
    one = torch.tensor([[[[1.0, 2.0]]]], dtype=torch.float64)
    assert GeM()(one).item() == pytest.approx((4.5 + 1e-12) ** (1 / 3))


def test_gem_learnable_p_gets_gradient():
    g = GeM(p=3.0, learn_p=True)
    assert isinstance(g.p, nn.Parameter)
    g(torch.rand(2, 3, 4, 4) + 0.1).sum().backward()
    assert g.p.grad is not None and g.p.grad.abs() > 0
    assert not isinstance(GeM().p, nn.Parameter)
    with pytest.raises(ConfigError):
        GeM(p=0)


def test_bnneck_bias_frozen_and_outputs():
    neck = BNNeck(8, num_classes=5)
    assert not neck.bn.bias.requires_grad and torch.all(neck.bn.bias == 0)
    assert neck.classifier.bias is None
    f = torch.randn(6, 8)
    before, after, logits = neck(f)
    assert before is f and after.shape == (6, 8) and logits.shape == (6, 5)
    torch.testing.assert_close(after, F.batch_norm(f, None, None, neck.bn.weight, neck.bn.bias,
                                                   training=True, eps=neck.bn.eps))
    logits.sum().backward()
    assert neck.bn.bias.grad is None and neck.bn.weight.grad is not None
    assert BNNeck(8)(f)[2] is None


@pytest.mark.parametrize("mode", ["dot", "gaussian"])
def test_non_local_starts_as_identity_and_learns(mode):
    torch.manual_seed(0)
    blk = NonLocalBlock(16, mode=mode)
    assert blk.inter_channels == 1  # AGW's reduc_ratio // reduc_ratio
    x = torch.randn(2, 16, 6, 3)
    torch.testing.assert_close(blk(x), x)
    blk.eval()
    torch.testing.assert_close(blk(x), x)
    # Once W's BN is non-zero the block is not the identity: it really attends.
    nn.init.ones_(blk.W[1].weight)
    assert not torch.allclose(blk(x), x)
    assert NonLocalBlock(16, reduc_ratio=2, inter_channels=None).inter_channels == 8


def test_non_local_dot_product_formula():
    torch.manual_seed(1)
    blk = NonLocalBlock(4, inter_channels=2).double().eval()
    nn.init.normal_(blk.W[1].weight)
    x = torch.randn(1, 4, 3, 2, dtype=torch.float64)
    n = 6
    th = blk.theta(x).reshape(2, n)
    ph = blk.phi(x).reshape(2, n)
    g = blk.g(x).reshape(2, n)
    y = torch.zeros(2, n, dtype=torch.float64)
    for i in range(n):
        for j in range(n):
            y[:, i] += (th[:, i] @ ph[:, j]) / n * g[:, j]
    want = blk.W(y.reshape(1, 2, 3, 2)) + x
    torch.testing.assert_close(blk(x), want)


def test_insert_non_local_agw_placement():
    torch.manual_seed(0)
    net = ResNet(50, width=0.125, num_classes=None).eval()
    x = torch.randn(1, 3, 64, 32)
    before = net.features(x) if hasattr(net, "features") else None
    keys_before = set(net.state_dict())
    insert_non_local(net, (0, 2, 3, 0))
    assert not isinstance(net.layer1, StageWithNonLocal)
    assert isinstance(net.layer2, StageWithNonLocal) and isinstance(net.layer3, StageWithNonLocal)
    assert sorted(net.layer2.nl) == ["2", "3"]        # after the last 2 of 4 blocks
    assert sorted(net.layer3.nl) == ["3", "4", "5"]   # after the last 3 of 6 blocks
    assert net.layer2.nl["2"].in_channels == net.layer2[2].bn3.num_features
    assert keys_before <= set(net.state_dict())  # residual-block keys unchanged
    if before is not None:
        torch.testing.assert_close(net.features(x), before)  # identity at insertion
    # The order of application: block 2, NL 2, block 3, NL 3.
    calls = []
    for name, m in [("b2", net.layer2[2]), ("n2", net.layer2.nl["2"]), ("b3", net.layer2[3]),
                    ("n3", net.layer2.nl["3"])]:
        m.register_forward_hook(lambda *_, name=name: calls.append(name))
    net.layer2(torch.randn(1, net.layer2[0].conv1.in_channels, 16, 8))
    assert calls == ["b2", "n2", "b3", "n3"]
    with pytest.raises(ConfigError):
        insert_non_local(net, (0, 1, 0, 0))  # already inserted
    with pytest.raises(ConfigError):
        insert_non_local(ResNet(50, width=0.125, num_classes=None), (0, 5, 0, 0))

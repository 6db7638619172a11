"""PBCE (Eq. 8), ID loss (Eqs. 9–11), total loss: hand computations, saturation, training."""
from __future__ import annotations

import math

import pytest
import torch

from vireid.config import Config
from vireid.data.sampler import build_pairs
from vireid.losses.paper import id_loss, pbce_loss, total_loss
from vireid.models.build import build_model


def sig(t: float) -> float:
    return 1.0 / (1.0 + math.exp(-t))


def test_pbce_hand_computation():
    la = [0.3, -1.2, 2.0, 0.0]
    lb = [-0.5, 0.7, 1.5, -3.0]
    lab = [0, 1, 1, 0]
    total = 0.0
    for a, b, l in zip(la, lb, lab):
        d = (sig(a) + sig(b)) / 2
        total += l * math.log(d) + (1 - l) * math.log(1 - d)
    expected = -total / len(la)
    got = pbce_loss(torch.tensor(la), torch.tensor(lb), torch.tensor(lab))
    assert got.item() == pytest.approx(expected, rel=1e-6)


def test_pbce_saturation_is_finite():
    la = torch.tensor([200.0, 200.0, -200.0, -200.0, 200.0], requires_grad=True)
    lb = torch.tensor([200.0, 200.0, -200.0, -200.0, -200.0], requires_grad=True)
    labels = torch.tensor([1.0, 0.0, 0.0, 1.0, 0.0])
    per = []
    for i in range(5):
        per.append(pbce_loss(la[i:i + 1], lb[i:i + 1], labels[i:i + 1]).item())
    # D = 1 and label "different": no loss. D = 1 and label "same": −log(1 − D) = −log σ(−200) = 200.
    assert per[0] == pytest.approx(0.0, abs=1e-12)
    assert per[1] == pytest.approx(200.0, rel=1e-6)
    assert per[2] == pytest.approx(0.0, abs=1e-12)
    assert per[3] == pytest.approx(200.0, rel=1e-6)
    assert per[4] == pytest.approx(math.log(2.0), rel=1e-6)  # D = 1/2 exactly
    loss = pbce_loss(la, lb, labels)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(la.grad).all() and torch.isfinite(lb.grad).all()


def test_id_loss_hand_computation():
    logits = [[1.0, 2.0, 0.5], [0.0, -1.0, 3.0], [2.0, 2.0, 2.0], [-1.0, 0.5, 0.0]]
    targets = [1, 2, 0, 0]
    total = 0.0
    for row, t in zip(logits, targets):
        z = sum(math.exp(v) for v in row)
        total += -math.log(math.exp(row[t]) / z)
    got = id_loss(torch.tensor(logits), torch.tensor(targets))
    assert got.item() == pytest.approx(total / 4, rel=1e-6)


def test_total_is_pbce_plus_lambda_id():
    torch.manual_seed(0)
    la, lb = torch.randn(6), torch.randn(6)
    pl = torch.tensor([0, 0, 1, 1, 1, 1])
    lg, t = torch.randn(4, 5), torch.tensor([0, 1, 2, 3])
    out = total_loss(la, lb, pl, lg, t)
    assert out["loss"].item() == pytest.approx(out["pbce"].item() + 0.1 * out["id"].item(), rel=1e-6)
    out2 = total_loss(la, lb, pl, lg, t, id_weight=0.4)
    assert out2["loss"].item() == pytest.approx(out["pbce"].item() + 0.4 * out["id"].item(), rel=1e-6)


def test_few_optimizer_steps_lower_the_loss():
    torch.manual_seed(0)
    cfg = Config()
    cfg.model.arch, cfg.model.width, cfg.model.last_stride = "resnet18", 0.125, 1
    cfg.model.pretrained = "none"
    cfg.data.height, cfg.data.width = 64, 32  # → 4×2 map with last stride 1
    cfg.ccn.kernel_size = [2, 2]
    n = 4
    model = build_model(cfg, num_classes=n)
    x_rgb, x_ir = torch.rand(n, 3, 64, 32), torch.rand(n, 3, 64, 32)
    labels = torch.arange(n)
    ia, ib, target = build_pairs(labels, labels, 2, torch.Generator().manual_seed(0))
    # Plain SGD written out: torch.optim's first use imports torch._dynamo (seconds on CPU).
    params = [p for p in model.parameters() if p.requires_grad]
    losses = []
    for _ in range(6):
        fr, gr, fi, gi = model.forward_pair(x_rgb, x_ir)
        la, lb = model.ccn.logits(fr, fi, ia, ib)
        out = total_loss(la, lb, target, model.classify(torch.cat([gr, gi])), torch.cat([labels, labels]))
        grads = torch.autograd.grad(out["loss"], params)
        with torch.no_grad():
            for p, g in zip(params, grads):
                p.sub_(0.05 * g)
        losses.append(out["loss"].item())
    assert all(math.isfinite(v) for v in losses)
    assert losses[-1] < losses[0]

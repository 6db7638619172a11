"""Baseline losses (paper Table I) against literal loops over pairs and anchors."""
from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch

from vireid.losses.baselines import KernelVerificationHead, VerificationHead, ranking_loss
from vireid.losses.registry import LOSSES, StepBatch, attach_loss_head

torch.manual_seed(0)


def _sig(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def _bce_loop(scores: list[float], targets: list[float]) -> float:
    total = 0.0
    for s, t in zip(scores, targets):
        p = _sig(s)
        total += -(t * math.log(p) + (1 - t) * math.log(1 - p))
    return total / len(scores)


def _cfg(kind: str, margin: float = 0.5) -> SimpleNamespace:
    return SimpleNamespace(loss=SimpleNamespace(kind=kind, rank_margin=margin, lambda_id=0.1),
                           ccn=SimpleNamespace(kernel_size=[3, 3], stride=[1, 1]))


def _batch(n: int = 4) -> dict:
    labels = torch.tensor([3, 7, 1, 5])[:n]
    ia = torch.tensor([0, 1, 2, 3, 0, 1, 2, 3])
    ib = torch.tensor([0, 1, 2, 3, 2, 0, 3, 1])
    target = (labels[ia] != labels[ib]).float()
    return {"ia": ia, "ib": ib, "target": target, "labels_rgb": labels, "labels_ir": labels.clone()}


def _step(batch: dict, F_rgb=None, F_ir=None, G_rgb=None, G_ir=None) -> StepBatch:
    """A registry StepBatch from the test's tensors (unused fields empty)."""
    e = torch.zeros(0)
    lab = batch.get("labels_rgb", torch.zeros(0, dtype=torch.long))
    return StepBatch(F_rgb if F_rgb is not None else e, G_rgb if G_rgb is not None else e,
                     F_ir if F_ir is not None else e, G_ir if G_ir is not None else e,
                     lab, batch.get("labels_ir", lab), batch.get("ia", e), batch.get("ib", e),
                     batch.get("target", e))


def _registry_loss(kind: str, step: StepBatch, head=None, margin: float = 0.5, **model_attrs):
    """loss.kind through the one registry, on a stand-in model carrying ``head``."""
    model = SimpleNamespace(baseline_head=head, **model_attrs)
    return LOSSES[kind].fn(model, step, _cfg(kind, margin))


def test_vl_matches_loop() -> None:
    c = 5
    head = VerificationHead(c)
    g_rgb, g_ir = torch.randn(4, c), torch.randn(4, c)
    batch = _batch()
    loss, parts = _registry_loss("vl", _step(batch, G_rgb=g_rgb, G_ir=g_ir), head)
    w, b = head.fc.weight[0].tolist(), head.fc.bias.item()
    scores = []
    for a, bb in zip(batch["ia"].tolist(), batch["ib"].tolist()):
        s = b
        for k in range(c):
            s += w[k] * (g_rgb[a, k].item() - g_ir[bb, k].item()) ** 2
        scores.append(s)
    assert loss.item() == pytest.approx(_bce_loop(scores, batch["target"].tolist()), rel=1e-5)
    assert parts["vl"].item() == pytest.approx(loss.item())
    loss.backward()
    assert head.fc.weight.grad is not None


def test_vl_hand_worked() -> None:
    # One positive pair, G_R = [1, 2], G_I = [0, 0], w = [1, -1], β = 0:
    # s = 1·1 − 1·4 = −3, target 0 → loss = −log(1 − σ(−3)) = log(1 + e^{−3}).
    head = VerificationHead(2)
    with torch.no_grad():
        head.fc.weight.copy_(torch.tensor([[1.0, -1.0]]))
        head.fc.bias.zero_()
    batch = {"ia": torch.tensor([0]), "ib": torch.tensor([0]), "target": torch.tensor([0.0])}
    step = _step(batch, G_rgb=torch.tensor([[1.0, 2.0]]), G_ir=torch.zeros(1, 2))
    loss, _ = _registry_loss("vl", step, head)
    assert loss.item() == pytest.approx(math.log(1 + math.exp(-3)), rel=1e-6)


def _dist(x: list[float], y: list[float]) -> float:
    nx = math.sqrt(sum(v * v for v in x))
    ny = math.sqrt(sum(v * v for v in y))
    return math.sqrt(sum((a / nx - b / ny) ** 2 for a, b in zip(x, y)))


def _rkl_loop(gr, gi, lr, li, margin, intra=True) -> float:
    terms = []
    for anchors, others, la, lo in ((gr, gi, lr, li), (gi, gr, li, lr)):
        for i, x in enumerate(anchors):
            pos = [_dist(x, others[j]) for j in range(len(others)) if lo[j] == la[i]]
            neg = [_dist(x, others[j]) for j in range(len(others)) if lo[j] != la[i]]
            if pos and neg:
                terms.append(max(0.0, margin + max(pos) - min(neg)))
            if intra:
                negi = [_dist(x, anchors[k]) for k in range(len(anchors)) if la[k] != la[i]]
                if pos and negi:
                    terms.append(max(0.0, margin + max(pos) - min(negi)))
    return sum(terms) / max(len(terms), 1)


@pytest.mark.parametrize("intra", [True, False])
def test_rkl_matches_loop(intra: bool) -> None:
    # Repeated labels so "hardest positive" is a real max over several positives.
    lr = torch.tensor([0, 0, 1, 2, 2])
    li = torch.tensor([0, 1, 1, 2, 3])
    gr, gi = torch.randn(5, 6), torch.randn(5, 6)
    got = ranking_loss(gr, gi, lr, li, margin=0.7, intra=intra)
    want = _rkl_loop(gr.tolist(), gi.tolist(), lr.tolist(), li.tolist(), 0.7, intra)
    assert got.item() == pytest.approx(want, rel=1e-5, abs=1e-6)


def test_rkl_registry_uses_margin_and_is_zero_when_separated() -> None:
    # Identities on orthogonal axes, both modalities identical: d(pos) = 0, d(neg) = √2,
    # so every hinge is max(0, ρ − √2): zero for ρ = 1, 1.5 − √2 for ρ = 1.5.
    g = torch.eye(3)
    lab = torch.arange(3)
    step = _step({"labels_rgb": lab, "labels_ir": lab}, G_rgb=g, G_ir=g.clone())
    assert _registry_loss("rkl", step, margin=1.0)[0].item() == pytest.approx(0.0)
    got = _registry_loss("rkl", step, margin=1.5)[0].item()
    assert got == pytest.approx(1.5 - math.sqrt(2), rel=1e-5)


def test_kvl_matches_loop() -> None:
    c, h, w = 3, 5, 4
    head = KernelVerificationHead(c, (h, w), (3, 3), (1, 1))
    n = head.num_kernels
    assert n == (h - 3 + 1) * (w - 3 + 1)
    fr, fi = torch.randn(4, c, h, w), torch.randn(4, c, h, w)
    batch = _batch()
    loss, _ = _registry_loss("kvl", _step(batch, F_rgb=fr, F_ir=fi), head)
    wt, b = head.fc.weight[0].tolist(), head.fc.bias.item()
    scores = []
    for a, bb in zip(batch["ia"].tolist(), batch["ib"].tolist()):
        s, k = b, 0
        for i in range(0, h - 3 + 1):          # Algorithm 1: rows outer, columns inner
            for j in range(0, w - 3 + 1):
                for ch in range(c):
                    acc = 0.0
                    for p in range(3):
                        for q in range(3):
                            acc += abs(fr[a, ch, i + p, j + q].item() - fi[bb, ch, i + p, j + q].item())
                    s += wt[k * c + ch] * acc / 9.0
                k += 1
        scores.append(s)
    assert loss.item() == pytest.approx(_bce_loop(scores, batch["target"].tolist()), rel=1e-5)


def test_kvl_stride_counts_kernels() -> None:
    head = KernelVerificationHead(2, (8, 4), (3, 3), (2, 1))
    assert head.num_kernels == 3 * 2  # rows 0, 2, 4; columns 0, 1


def test_idl_and_pbce_only_match_loops() -> None:
    logits = torch.randn(4, 3)
    targets = torch.tensor([0, 2, 1, 2])
    # IDL classifies [G_rgb; G_ir]: an identity classifier makes G the logits themselves.
    step = _step({"labels_rgb": targets[:2], "labels_ir": targets[2:]},
                 G_rgb=logits[:2], G_ir=logits[2:])
    loss, _ = _registry_loss("idl", step, classify=lambda g: g)
    want = 0.0
    for r, t in zip(logits.tolist(), targets.tolist()):
        want += -(r[t] - math.log(sum(math.exp(v) for v in r)))
    assert loss.item() == pytest.approx(want / 4, rel=1e-5)

    la, lb = torch.randn(6), torch.randn(6)
    tgt = torch.tensor([0.0, 0, 1, 1, 1, 0])
    fake_ccn = SimpleNamespace(logits=lambda fa, fb, ia, ib: (la, lb))
    loss, parts = _registry_loss("ccn-noid", _step({"target": tgt}), ccn=fake_ccn)
    want = 0.0
    for x, y, t in zip(la.tolist(), lb.tolist(), tgt.tolist()):
        d = (_sig(x) + _sig(y)) / 2
        want += -(t * math.log(d) + (1 - t) * math.log(1 - d))
    assert loss.item() == pytest.approx(want / 6, rel=1e-5)
    # The logged pair accuracies: positives (t = 0) with D < 0.5, negatives with D >= 0.5.
    d = [(_sig(x) + _sig(y)) / 2 for x, y in zip(la.tolist(), lb.tolist())]
    pos = [di < 0.5 for di, t in zip(d, tgt.tolist()) if t == 0]
    neg = [di >= 0.5 for di, t in zip(d, tgt.tolist()) if t == 1]
    assert parts["acc_pos"].item() == pytest.approx(sum(pos) / len(pos))
    assert parts["acc_neg"].item() == pytest.approx(sum(neg) / len(neg))


def test_build_head_from_model_geometry() -> None:
    def head(kind: str):
        model = SimpleNamespace(ccn=SimpleNamespace(channels=7, feat_hw=(8, 4)))
        return getattr(attach_loss_head(model, _cfg(kind)), "baseline_head", None)

    assert isinstance(head("vl"), VerificationHead)
    kv = head("kvl")
    assert isinstance(kv, KernelVerificationHead) and kv.fc.in_features == 12 * 7
    assert head("rkl") is None
    assert head("idl") is None


def test_registry_holds_the_built_in_kinds_and_config_accepts_a_new_one() -> None:
    from vireid.config import Config, validate
    from vireid.errors import ConfigError

    assert set(LOSSES) >= {"ccn", "ccn-noid", "idl", "vl", "rkl", "kvl", "agw", "triplet",
                           "agw+pbce"}
    cfg = Config()
    cfg.loss.kind = "not-registered-yet"
    validate(cfg)  # the config checks the form; the name is resolved when things are built
    with pytest.raises(ConfigError, match=r"loss\.kind: expected one of .*ccn.*found 'not-registered-yet'"):
        LOSSES.get("not-registered-yet")

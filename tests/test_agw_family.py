"""The AGW family on the DSCSN (model.pool / bnneck / non_local, loss kinds agw, triplet,
agw+pbce): each option against a literal computation, old configs and checkpoints unchanged,
and CCN full scoring on a trained AGW+PBCE model equal to the CCN's direct form."""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from conftest import TINY_CONFIG
from vireid.config import Config, apply_overrides, from_dict, validate
from vireid.errors import ConfigError
from vireid.losses.registry import LOSSES, StepBatch
from vireid.models.agw import NonLocalBlock, StageWithNonLocal
from vireid.models.build import build_model

TINY = ["model.arch=resnet18", "model.width=0.125", "model.last_stride=1",
        "model.pretrained=none", "data.height=64", "data.width=32", "ccn.kernel_size=[2,2]"]


def _cfg(*overrides: str) -> Config:
    return validate(apply_overrides(Config(), [*TINY, *overrides]))


def _x(seed: int, n: int = 3) -> torch.Tensor:
    return torch.randn(n, 3, 64, 32, generator=torch.Generator().manual_seed(seed))


# ----------------------------------------------------------------------------- model options
def test_gem_pool_is_the_generalised_mean_of_the_map() -> None:
    torch.manual_seed(0)
    model = build_model(_cfg("model.pool=gem"), 4).eval()
    with torch.no_grad():
        f, g = model.forward_features(_x(1), "ir")
        _, g_r, _, g_i = model.forward_pair(_x(2), _x(1))
    for b in range(f.shape[0]):
        for c in range(f.shape[1]):
            vals = [max(float(v), 0.0) for v in f[b, c].flatten()]
            literal = (sum(v ** 3 for v in vals) / len(vals) + 1e-12) ** (1 / 3)
            assert float(g[b, c]) == pytest.approx(literal, rel=1e-4, abs=1e-6)
    assert torch.allclose(g_i, g, atol=1e-6)  # the pair path pools the same way
    avg = build_model(_cfg(), 4).eval()
    with torch.no_grad():
        fa, ga = avg.forward_features(_x(1), "ir")
    assert torch.allclose(ga, fa.mean(dim=(2, 3)))


def test_bnneck_classifier_reads_bn_feature_and_eval_returns_it() -> None:
    torch.manual_seed(0)
    model = build_model(_cfg("model.bnneck=true"), 5)
    bn = model.neck.bn
    assert not bn.bias.requires_grad and float(bn.bias.abs().max()) == 0.0
    with torch.no_grad():
        bn.running_mean.copy_(torch.linspace(-0.5, 0.5, bn.num_features))
        bn.running_var.copy_(torch.linspace(0.5, 2.0, bn.num_features))
        bn.weight.copy_(torch.linspace(0.8, 1.2, bn.num_features))
    model.eval()
    with torch.no_grad():
        f, g_eval = model.forward_features(_x(3), "rgb")
        g_pre = f.mean(dim=(2, 3))  # the pooled feature before the neck
        literal = ((g_pre - bn.running_mean) / torch.sqrt(bn.running_var + bn.eps) * bn.weight
                   + bn.bias)
        assert torch.allclose(g_eval, literal, atol=1e-5)
        logits = model.classify(g_pre)
        assert torch.allclose(logits, literal @ model.classifier.weight.T, atol=1e-5)
        # training: forward_pair gives G before the neck (what the triplet losses use)
        _, g_r, _, _ = model.forward_pair(_x(3), _x(4))
        assert torch.allclose(g_r, g_pre, atol=1e-6)


def test_non_local_blocks_at_agw_places_and_identity_at_start() -> None:
    # ResNet-50 (3/4/6/3 blocks): after blocks 2, 3 of layer2 and 3, 4, 5 of layer3.
    cfg = validate(apply_overrides(Config(), ["model.pretrained=none", "model.non_local=true",
                                              "model.shared_stages=3-4"]))
    with torch.device("meta"):
        model = build_model(cfg, 3, load_pretrained=False)
    bb = model.backbone
    for path in (bb.rgb, bb.ir):
        assert isinstance(path["layer2"], StageWithNonLocal)
        assert sorted(path["layer2"].nl) == ["2", "3"]
        assert isinstance(path["layer1"], torch.nn.Sequential)
        assert not isinstance(path["layer1"], StageWithNonLocal)
    assert sorted(bb.shared["layer3"].nl) == ["3", "4", "5"]
    assert not isinstance(bb.shared["layer4"], StageWithNonLocal)
    nl = bb.shared["layer3"].nl["3"]
    assert isinstance(nl, NonLocalBlock) and nl.in_channels == 1024
    # torchvision keys of the residual blocks unchanged
    keys = set(model.state_dict())
    assert "backbone.shared.layer3.5.conv3.weight" in keys
    assert "backbone.shared.layer3.nl.5.W.1.weight" in keys

    # Tiny ResNet-18 (2 blocks per stage): capped to [0, 2, 2, 0]; the blocks start as the
    # identity, so outputs equal those of the same weights without them.
    torch.manual_seed(0)
    with_nl = build_model(_cfg("model.non_local=true"), 4).eval()
    plain = build_model(_cfg(), 4).eval()
    missing, unexpected = plain.load_state_dict(with_nl.state_dict(), strict=False)
    assert not missing and all(".nl." in k for k in unexpected) and unexpected
    assert sorted(with_nl.backbone.rgb["layer2"].nl) == ["0", "1"]
    assert sorted(with_nl.backbone.shared["layer3"].nl) == ["0", "1"]
    with torch.no_grad():
        a = with_nl.forward_features(_x(5), "rgb")[0]
        b = plain.forward_features(_x(5), "rgb")[0]
    assert torch.allclose(a, b, atol=1e-6)


def test_default_model_keys_digest_and_initial_weights_unchanged() -> None:
    cfg = _cfg()
    torch.manual_seed(0)
    model = build_model(cfg, 4)
    keys = list(model.state_dict())
    assert not any(".nl." in k or k.startswith("neck.") or k.endswith("pool.p") for k in keys)
    # The digest of a default config is the pre-AGW formula (model fields without the new ones)
    arch = {"model": dataclasses.asdict(cfg.model), "ccn": dataclasses.asdict(cfg.ccn),
            "input": [cfg.data.height, cfg.data.width]}
    for k in ("pretrained", "init_from", "pool", "bnneck", "non_local", "shared_bn"):
        arch["model"].pop(k)
    arch["ccn"].pop("fc_bias")
    old = hashlib.sha256(json.dumps(arch, sort_keys=True).encode()).hexdigest()[:16]
    assert cfg.digest() == old
    for changed in ("model.pool=gem", "model.bnneck=true", "model.non_local=true",
                    "model.shared_bn=per_modality", "ccn.fc_bias=false"):
        assert _cfg(changed).digest() != old, changed


def test_config_options_validated() -> None:
    from vireid.engine.resolve import resolve_names

    with pytest.raises(ConfigError, match=r"loss\.kind.*agw\+pbce.*'agw2'"):
        resolve_names(_cfg("loss.kind=agw2"))  # names are resolved against the loss registry
    for bad, word in (("model.pool=max", "model.pool"),
                      ("loss.triplet_margin=-1", "loss.triplet_margin"),
                      ("loss.pbce_weight=-0.5", "loss.pbce_weight"),
                      ("data.channel_aug=swap", "data.channel_aug"),
                      ("data.channel_aug_p=1.5", "data.channel_aug_p"),
                      ("data.random_erasing=-0.1", "data.random_erasing")):
        with pytest.raises(ConfigError, match=word.replace(".", r"\.")):
            _cfg(bad)


def test_agw_preset_loads_and_states_agw_settings() -> None:
    from vireid.config import load_config, preset_path

    cfg = load_config(preset_path("agw-sysu"))
    assert (cfg.model.arch, cfg.model.pool, cfg.model.bnneck, cfg.model.non_local) == \
        ("resnet50", "gem", True, True)
    assert (cfg.model.last_stride, cfg.model.shared_stages, cfg.model.pretrained) == \
        (1, "1-4", "imagenet")
    assert (cfg.data.height, cfg.data.width, cfg.data.pad) == (288, 144, 10)
    assert cfg.loss.kind == "agw"
    assert (cfg.train.lr, cfg.train.warmup_epochs, cfg.train.lr_milestones) == (0.1, 10, [20, 50])


# ----------------------------------------------------------------------------- losses
def _literal_wrt(g: torch.Tensor, y: torch.Tensor) -> float:
    """AGW's WRT written out per anchor (softmax over positives / negatives)."""
    n = g.shape[0]
    d = [[math.sqrt(max(float(((g[i] - g[j]) ** 2).sum()), 1e-12)) for j in range(n)]
         for i in range(n)]
    total = 0.0
    for i in range(n):
        pos = [j for j in range(n) if y[j] == y[i]]
        neg = [j for j in range(n) if y[j] != y[i]]
        wp = [math.exp(d[i][j] - max(d[i][k] for k in pos)) for j in pos]
        wn = [math.exp(-d[i][j] - max(-d[i][k] for k in neg)) for j in neg]
        dp = sum(w * d[i][j] for w, j in zip(wp, pos)) / (sum(wp) + 1e-6)
        dn = sum(w * d[i][j] for w, j in zip(wn, neg)) / (sum(wn) + 1e-6)
        total += math.log1p(math.exp(dp - dn))
    return total / n


def _literal_batch_hard(g: torch.Tensor, y: torch.Tensor, margin: float) -> float:
    n = g.shape[0]
    total = 0.0
    for i in range(n):
        d = [math.sqrt(max(float(((g[i] - g[j]) ** 2).sum()), 1e-12)) for j in range(n)]
        ap = max(d[j] for j in range(n) if y[j] == y[i])
        an = min(d[j] for j in range(n) if y[j] != y[i])
        total += max(0.0, ap - an + margin)
    return total / n


def _literal_ce(logits: torch.Tensor, y: torch.Tensor) -> float:
    total = 0.0
    for row, t in zip(logits.tolist(), y.tolist()):
        m = max(row)
        total += -(row[t] - m - math.log(sum(math.exp(v - m) for v in row)))
    return total / logits.shape[0]


@pytest.mark.parametrize("kind", ["agw", "triplet", "agw+pbce"])
def test_agw_loss_kinds_equal_literal_sums(kind: str) -> None:
    torch.manual_seed(0)
    cfg = _cfg("model.bnneck=true", f"loss.kind={kind}", "loss.triplet_margin=0.7",
               "loss.pbce_weight=0.4")
    model = build_model(cfg, 6)
    with torch.no_grad():  # a neck that is not the identity
        model.neck.bn.weight.uniform_(0.5, 1.5)
    y_r, y_i = torch.tensor([0, 3, 5]), torch.tensor([0, 3, 5])
    f_r, g_r, f_i, g_i = model.forward_pair(_x(7), _x(8))
    ia, ib = torch.tensor([0, 1, 2, 0, 1]), torch.tensor([0, 1, 2, 1, 2])
    t = (y_r[ia] != y_i[ib]).float()
    step = StepBatch(f_r, g_r, f_i, g_i, y_r, y_i, ia, ib, t)
    loss, parts = LOSSES[kind].fn(model, step, cfg)
    parts = {k: v.detach() for k, v in parts.items()}
    g = torch.cat([g_r, g_i]).detach().double()
    y = torch.cat([y_r, y_i])
    with torch.no_grad():
        # BN in training mode: batch statistics (biased variance) of the 6 features
        bn = model.neck.bn
        mu, var = g.mean(0), g.var(0, unbiased=False)
        g_bn = (g - mu) / torch.sqrt(var + bn.eps) * bn.weight.double() + bn.bias.double()
        logits = g_bn @ model.classifier.weight.double().T
    expected = _literal_ce(logits, y)
    assert float(parts["id"]) == pytest.approx(expected, rel=1e-4)
    if kind == "triplet":
        tri = _literal_batch_hard(g, y, 0.7)
        assert float(parts["triplet"]) == pytest.approx(tri, rel=1e-4, abs=1e-6)
    else:
        tri = _literal_wrt(g, y)
        assert float(parts["wrt"]) == pytest.approx(tri, rel=1e-4)
    expected += tri
    if kind == "agw+pbce":
        with torch.no_grad():
            d = model.ccn(f_r, f_i, ia, ib).double()
        pbce = -sum(float(tt) * math.log(float(dd)) + (1 - float(tt)) * math.log(1 - float(dd))
                    for tt, dd in zip(t, d)) / len(t)
        assert float(parts["pbce"]) == pytest.approx(pbce, rel=1e-4)
        expected += 0.4 * pbce
        assert LOSSES[kind].trains_ccn
    else:
        assert not LOSSES[kind].trains_ccn
    assert float(loss) == pytest.approx(expected, rel=1e-4)
    loss.backward()  # the loss reaches the backbone and the classifier
    assert model.classifier.weight.grad is not None
    assert model.neck.bn.bias.grad is None  # frozen


# ----------------------------------------------------------------------------- end to end
@pytest.fixture(scope="module")
def agw_run(tmp_path_factory: pytest.TempPathFactory, sysu_root: Path) -> Path:
    """A tiny AGW + PBCE run (GeM, BNNeck, non-local) on the synthetic SYSU data."""
    from vireid.engine.trainer import train

    data = yaml.safe_load(TINY_CONFIG)
    data["model"].update(pool="gem", bnneck=True, non_local=True)
    data["loss"] = {"kind": "agw+pbce", "pbce_weight": 1.0}
    data["train"].update(epochs=1, iters_per_epoch=2)
    data["data"]["root"] = str(sysu_root)
    cfg = from_dict(data)
    run_dir = tmp_path_factory.mktemp("agw") / "run"
    train(cfg, run_dir, progress=False)
    return run_dir


def test_full_scoring_on_agw_model_equals_direct_ccn(agw_run: Path, sysu_root: Path,
                                                     tmp_path: Path) -> None:
    from vireid.engine.checkpoint import load_model_from_checkpoint
    from vireid.engine.evaluate import evaluate
    from vireid.engine.features import load_features
    from vireid.evaluation.protocols import evaluate_split, get_protocol
    from vireid.engine.evaluate import _stored_splits
    from vireid.scoring.scorers import score_full

    feats_path = tmp_path / "f.pt"
    res = evaluate([agw_run], data_root=sysu_root, scoring="full", trials=[0, 1],
                   save_features_path=feats_path)
    model, cfg, _ = load_model_from_checkpoint(agw_run)
    assert (cfg.model.pool, cfg.model.bnneck, cfg.model.non_local) == ("gem", True, True)
    feats, meta = load_features(feats_path)
    proto = get_protocol("sysu-all")
    splits = _stored_splits(meta, feats, proto.name, [0, 1])
    for sp, got in zip(splits, res["per_trial"]):
        q = feats.subset(feats.rows_of(sp.query))
        g = feats.subset(feats.rows_of(sp.gallery))
        # direct form, one pair at a time: IR query is side b, the RGB gallery image side a
        D = np.empty((len(q), len(g)))
        with torch.no_grad():
            for i in range(len(q)):
                for j in range(len(g)):
                    D[i, j] = float(model.ccn(g.F[j:j + 1], q.F[i:i + 1], torch.tensor([0]),
                                              torch.tensor([0]))[0])
        fast = score_full(model.ccn, q.F, g.F, query_side="b").double().numpy()
        assert np.allclose(fast, D, atol=1e-5)
        want = evaluate_split(D, sp, proto)
        for k in ("rank1", "mAP", "mINP"):
            assert got[k] == pytest.approx(want[k], abs=1e-6)


def test_old_checkpoint_without_agw_fields_still_loads(trained_run: Path, tmp_path: Path) -> None:
    from vireid.engine.checkpoint import load_model_from_checkpoint

    ckpt = torch.load(trained_run / "checkpoints" / "last.pt", map_location="cpu",
                      weights_only=True)
    for section, keys in (("model", ("pool", "bnneck", "non_local")),
                          ("loss", ("triplet_margin", "pbce_weight")),
                          ("data", ("channel_aug", "channel_aug_p", "channel_aug_ir",
                                    "random_erasing"))):
        for k in keys:
            ckpt["config"][section].pop(k)
    old = tmp_path / "old.pt"
    torch.save(ckpt, old)
    model, cfg, _ = load_model_from_checkpoint(old)
    assert (cfg.model.pool, cfg.model.bnneck, cfg.model.non_local) == ("avg", False, False)
    assert model.neck is None and model.backbone.pool is None
    assert cfg.digest() == ckpt["config_digest"]

"""The training loop's options: background loading (data.workers), mixed precision
(train.amp), diagnostics in metrics.jsonl, and the pieces it is built from."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from vireid.config import load_config
from vireid.data.sampler import CrossModalitySampler
from vireid.data.transforms import TrainTransform
from vireid.engine.schedule import lr_at
from vireid.engine.train_data import StepSource, prepare_data
from vireid.engine.trainer import train
from vireid.errors import ConfigError

from conftest import run_cli


def _cfg(tiny_config: Path, root: Path, *more: str):
    return load_config(tiny_config, [f"data.root={root}", "train.threads=1", *more])


def _weights(run: Path) -> dict[str, torch.Tensor]:
    return torch.load(run / "checkpoints" / "last.pt", map_location="cpu",
                      weights_only=True)["model"]


def _records(run: Path, kind: str) -> list[dict]:
    lines = (run / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["type"] == kind]


def test_workers_build_the_same_steps_as_the_main_process(tiny_config, sysu_root):
    cfg = _cfg(tiny_config, sysu_root)
    data = prepare_data(cfg, sysu_root)
    source = StepSource(data, TrainTransform(pad=cfg.data.pad, flip=True), cfg.data.neg_ratio,
                        seed=5, first_group=0, group_size=cfg.data.ids_per_batch)
    sampler = CrossModalitySampler(data.labels_rgb, data.labels_ir, cfg.data.ids_per_batch, 4)
    keys = [(it, np.asarray(b, dtype=np.int64)) for it, b in enumerate(sampler)]
    here = [source[k] for k in keys]
    loader = torch.utils.data.DataLoader(source, batch_size=None, sampler=keys, num_workers=2,
                                         collate_fn=lambda x: x)
    there = list(loader)
    assert len(here) == len(there) == 4
    for a, b in zip(here, there):
        assert torch.equal(a.x_rgb, b.x_rgb) and torch.equal(a.x_ir, b.x_ir)
        assert torch.equal(a.y_rgb, b.y_rgb) and torch.equal(a.y_ir, b.y_ir)
        for name in a.pairs:
            assert all(torch.equal(u, v) for u, v in zip(a.pairs[name], b.pairs[name]))
    # and the steps differ from one iteration to the next (the test can fail)
    assert not torch.equal(here[0].x_rgb, here[1].x_rgb)


def test_a_run_with_workers_equals_one_without(tiny_config, sysu_root, tmp_path):
    # Each run in a fresh process, as bit-identity is promised for (in one long-lived process
    # the allocator's history can move the last bit of a convolution).
    for w in (0, 2):
        run_cli("train", "--config", tiny_config, "--data-root", sysu_root, "-o", tmp_path / f"w{w}",
                "--threads", "1", f"data.workers={w}", check=True)
    a, b = _weights(tmp_path / "w0"), _weights(tmp_path / "w2")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    # and a run with workers, stopped after epoch 1 and resumed, ends with the same weights
    cut = tmp_path / "w2cut"
    run_cli("train", "--config", tiny_config, "--data-root", sysu_root, "-o", cut, "--threads",
            "1", "data.workers=2", "--stop-after", "1", check=True)
    run_cli("train", "--resume", cut, check=True)
    c = _weights(cut)
    assert all(torch.equal(a[k], c[k]) for k in a)


def test_bf16_autocast_steps_stay_finite_and_close_to_fp32(tiny_config, sysu_root, tmp_path):
    train(_cfg(tiny_config, sysu_root, "train.log_every=1"), tmp_path / "fp32", progress=False)
    train(_cfg(tiny_config, sysu_root, "train.log_every=1", "train.amp=bf16"), tmp_path / "bf16",
          progress=False)
    ref, got = _records(tmp_path / "fp32", "step"), _records(tmp_path / "bf16", "step")
    assert len(ref) == len(got) == 6
    for a, b in zip(ref, got):
        assert np.isfinite(b["loss"])
        assert abs(a["loss"] - b["loss"]) <= 0.05 * abs(a["loss"]), (a["loss"], b["loss"])
    w32, w16 = _weights(tmp_path / "fp32"), _weights(tmp_path / "bf16")
    assert any(not torch.equal(w32[k], w16[k]) for k in w32)  # bf16 really ran


def test_fp16_is_refused_on_the_cpu(tiny_config, sysu_root, tmp_path):
    with pytest.raises(ConfigError, match="fp16"):
        train(_cfg(tiny_config, sysu_root, "train.amp=fp16", "train.device=cpu"), tmp_path / "x",
              progress=False)


def test_diagnostics_are_logged(tiny_config, sysu_root, tmp_path):
    run = tmp_path / "diag"
    train(_cfg(tiny_config, sysu_root, "train.diag_every=2", "train.log_every=1"), run,
          progress=False)
    steps = _records(run, "step")
    sampled = [r for r in steps if "grad_pbce" in r]
    # iterations 0, 2, 4 are sampled; each lands on the step logged right after it
    assert [r["iteration"] for r in sampled] == [1, 3, 5]
    for r in sampled:
        assert r["grad_pbce"] > 0 and r["grad_id"] > 0
    for r in steps:
        assert 0.0 <= r["acc_pos"] <= 1.0 and 0.0 <= r["acc_neg"] <= 1.0


def test_diagnostic_gradient_norm_is_the_backbone_gradient_of_the_part(tiny_config, sysu_root):
    """grad_<part> is ‖∂(w·L_part)/∂θ_backbone‖, checked against a plain backward pass."""
    from vireid.engine.hooks import DiagnosticsHook
    from vireid.models.build import build_model

    cfg = _cfg(tiny_config, sysu_root)
    torch.manual_seed(0)
    model = build_model(cfg, 5)
    x = torch.randn(4, 3, 64, 32)
    _, g_rgb, _, _ = model.forward_pair(x, x)
    part = model.classify(g_rgb).logsumexp(1).mean()

    class S:  # the fields of TrainState the hook reads
        world, global_it = 1, 0

    S.model, S.cfg = model, cfg
    hook = DiagnosticsHook(every=1)
    hook.on_loss(S, part, {"id": part})
    part.backward()
    want = torch.sqrt(sum((p.grad.double() ** 2).sum() for p in model.backbone.parameters()
                          if p.grad is not None))
    assert hook.pending["grad_id"] == pytest.approx(float(want) * cfg.loss.lambda_id, rel=1e-6)


def test_lr_schedule_literal(tiny_config, sysu_root):
    cfg = _cfg(tiny_config, sysu_root, "train.epochs=4", "train.lr=0.1", "train.lr_milestones=[2]",
               "train.warmup_epochs=1")
    # warm-up over epoch 0 (2 iterations): 0.1·1/2, 0.1·2/2; then 0.1; from epoch 2: 0.01
    got = [lr_at(cfg, e, i, 2) for e in range(4) for i in range(2)]
    want = [0.05, 0.1, 0.1, 0.1, 0.01, 0.01, 0.01, 0.01]
    assert got == pytest.approx(want)


def test_backbone_lr_mult_splits_backbone_and_heads(tiny_config, sysu_root, tmp_path):
    from vireid.engine.params import param_groups as _param_groups
    from vireid.models.build import build_model

    cfg = _cfg(tiny_config, sysu_root)
    model = build_model(cfg, 5)
    assert len(_param_groups(model, 1.0)) == 1  # one learning rate: the old single group
    slow, heads = _param_groups(model, 0.25)
    ids = lambda ps: {id(p) for p in ps}  # noqa: E731
    assert ids(slow["params"]) == ids(model.backbone.parameters()) and slow["lr_mult"] == 0.25
    assert ids(heads["params"]) == ids(model.parameters()) - ids(model.backbone.parameters())
    assert ids(model.ccn.parameters()) <= ids(heads["params"])
    # through a run: the saved optimizer ran the backbone at lr·mult and the heads at lr
    run = tmp_path / "mult"
    train(_cfg(tiny_config, sysu_root, "train.backbone_lr_mult=0.25", "train.lr_milestones=[2]"),
          run, progress=False)
    groups = torch.load(run / "checkpoints" / "last.pt", weights_only=True)["optimizer"]["param_groups"]
    assert [g["lr"] for g in groups] == pytest.approx([0.01 * 0.25, 0.01])


def test_shared_bn_per_modality_normalises_each_modality_alone(tiny_config, sysu_root):
    import copy

    from vireid.models.build import build_model

    torch.manual_seed(0)
    joint = build_model(_cfg(tiny_config, sysu_root), 5).backbone.train()
    per = build_model(_cfg(tiny_config, sysu_root, "model.shared_bn=per_modality"), 5).backbone
    per.load_state_dict(joint.state_dict())
    per.train()
    x_rgb, x_ir = torch.randn(4, 3, 64, 32), torch.randn(4, 3, 64, 32) * 3 + 1
    ref = copy.deepcopy(per)
    f_rgb, _ = ref(x_rgb, "rgb")  # each modality through its path alone: its own statistics
    f_ir, _ = copy.deepcopy(per)(x_ir, "ir")
    got = per.forward_pair(x_rgb, x_ir)
    torch.testing.assert_close(got[0], f_rgb)
    torch.testing.assert_close(got[2], f_ir)
    mixed = joint.forward_pair(x_rgb, x_ir)  # joint statistics give other maps
    assert not torch.allclose(mixed[0], f_rgb, atol=1e-4)


def test_wd_without_bias_keeps_full_mode_exact():
    from vireid.models.ccn import CCN
    from vireid.scoring.scorers import score_full

    torch.manual_seed(0)
    ccn = CCN(8, (4, 2), kernel_size=(2, 2), padding=1, fc_bias=False).eval()
    assert ccn.fc.bias is None
    q, g = torch.rand(3, 8, 4, 2), torch.rand(5, 8, 4, 2)
    want = torch.stack([ccn(g[[j]], q[[i]], torch.tensor([0]), torch.tensor([0]))[0]
                        for i in range(3) for j in range(5)]).reshape(3, 5)
    torch.testing.assert_close(score_full(ccn, q, g, query_side="b"), want, atol=1e-5, rtol=0)

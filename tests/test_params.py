"""model.init_from, train.freeze=embedding and train.ccn_lr_mult (issue 24, 1b and 1c).

The properties: a head trained on a frozen embedding leaves every tensor outside the CCN
bit-identical to the starting run's (weights and BatchNorm statistics), while the CCN
moves; the CCN's learning rate is train.lr times its multiplier at every step; bad
combinations are refused before a run folder exists.
"""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from conftest import run_cli
from vireid.config import load_config
from vireid.engine.checkpoint import load_checkpoint
from vireid.engine.params import param_groups
from vireid.engine.trainer import train
from vireid.errors import CheckpointError, ConfigError


def _cfg(tiny_config: Path, root: Path, *overrides: str):
    return load_config(tiny_config, [f"data.root={root}", "train.threads=1", *overrides])


@pytest.fixture(scope="module")
def base_run(tmp_path_factory, tiny_config: Path, sysu_root: Path) -> Path:
    """The finished embedding: the ID loss alone, 2 epochs."""
    out = tmp_path_factory.mktemp("base") / "idl"
    train(_cfg(tiny_config, sysu_root, "loss.kind=idl"), out, progress=False)
    return out


def test_head_on_frozen_embedding_changes_only_the_ccn(tmp_path, base_run, tiny_config,
                                                       sysu_root):
    head = tmp_path / "head"
    train(_cfg(tiny_config, sysu_root, "loss.kind=ccn-noid", f"model.init_from={base_run}",
               "train.freeze=embedding", "train.lr=0.5"), head, progress=False)
    before = load_checkpoint(base_run)["model"]
    after = load_checkpoint(head)["model"]
    assert set(before) == set(after)
    ccn_keys = [k for k in before if k.startswith("ccn.")]
    assert ccn_keys, "the model has no CCN tensors"
    for k in before:
        if k.startswith("ccn."):
            continue
        # BatchNorm running means/vars and num_batches_tracked too: eval mode kept them
        assert torch.equal(before[k], after[k]), f"{k} changed although frozen"
    assert any(not torch.equal(before[k], after[k]) for k in ccn_keys), "the CCN did not train"


def test_ccn_lr_mult_sets_the_ccn_group_rate(tmp_path, tiny_config, sysu_root):
    run = tmp_path / "run"
    cfg = _cfg(tiny_config, sysu_root, "train.ccn_lr_mult=10", "train.lr_milestones=[2]")
    train(cfg, run, progress=False)
    groups = load_checkpoint(run)["optimizer"]["param_groups"]
    model_ckpt = load_checkpoint(run)["model"]
    mults = sorted(g["lr_mult"] for g in groups)
    assert mults == [1.0, 1.0, 10.0]  # backbone, CCN, the other heads
    ccn_group = next(g for g in groups if g["lr_mult"] == 10.0)
    # the CCN's parameters are exactly the ccn.* weights of the checkpoint
    n_ccn = sum(1 for k in model_ckpt if k.startswith("ccn."))
    assert len(ccn_group["params"]) == n_ccn
    # last step of epoch 2 (no decay before the milestone at 2, no warm-up): lr * 10
    assert ccn_group["lr"] == pytest.approx(cfg.train.lr * 10)


class _Toy(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.backbone = nn.Linear(2, 2)
        self.ccn = nn.Linear(2, 1)
        self.classifier = nn.Linear(2, 3)


def test_param_groups_split_and_skip_frozen():
    m = _Toy()
    one = param_groups(m)
    assert len(one) == 1 and len(one[0]["params"]) == 6
    # ccn_mult 1: the CCN stays with the heads (the layout before ccn_lr_mult)
    two = param_groups(m, backbone_mult=0.1)
    assert [g["lr_mult"] for g in two] == [0.1, 1.0]
    assert [id(p) for p in two[1]["params"]] == [id(p) for p in (*m.ccn.parameters(),
                                                                 *m.classifier.parameters())]
    three = param_groups(m, backbone_mult=0.1, ccn_mult=5.0)
    assert [g["lr_mult"] for g in three] == [0.1, 5.0, 1.0]
    for p in m.backbone.parameters():
        p.requires_grad_(False)
    groups = param_groups(m, ccn_mult=5.0)
    assert [g["lr_mult"] for g in groups] == [5.0, 1.0]
    for p in m.parameters():
        p.requires_grad_(False)
    with pytest.raises(ConfigError, match="no trainable parameter"):
        param_groups(m)


def test_freeze_needs_init_from_and_a_ccn_loss(tmp_path, base_run, tiny_config, sysu_root):
    with pytest.raises(ConfigError, match="model.init_from"):
        train(_cfg(tiny_config, sysu_root, "train.freeze=embedding"), tmp_path / "r0",
              progress=False)
    assert not (tmp_path / "r0").exists()
    with pytest.raises(ConfigError, match="gives it no training signal"):
        train(_cfg(tiny_config, sysu_root, "loss.kind=idl", f"model.init_from={base_run}",
                   "train.freeze=embedding"), tmp_path / "r", progress=False)
    assert not (tmp_path / "r").exists()


def test_init_from_refuses_another_network_naming_the_field(tmp_path, base_run, tiny_config,
                                                            sysu_root):
    with pytest.raises(CheckpointError, match=r"model\.pool: checkpoint has 'avg', expected 'gem'"):
        train(_cfg(tiny_config, sysu_root, f"model.init_from={base_run}", "model.pool=gem"),
              tmp_path / "r", progress=False)
    assert not (tmp_path / "r").exists()
    proc = run_cli("train", "--config", tiny_config, "--data-root", sysu_root, "-o",
                   tmp_path / "r2", f"model.init_from={tmp_path / 'nothing'}")
    assert proc.returncode == 2
    assert "checkpoint not found" in proc.stderr and str(tmp_path / "nothing") in proc.stderr
    assert not (tmp_path / "r2").exists()


def test_freeze_choices_are_the_modes_params_knows():
    from vireid.config import FREEZES
    from vireid.engine.params import TRAINABLE_PARTS
    assert set(FREEZES) == set(TRAINABLE_PARTS)

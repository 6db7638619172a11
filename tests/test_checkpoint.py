"""Checkpoints: round trip, RNG restore, atomic write, strict loading."""
from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from vireid.config import apply_overrides, load_config, validate
from vireid.engine import checkpoint as C
from vireid.utils.runtime import capture_rng_state, restore_rng_state
from vireid.errors import CheckpointError
from vireid.models.build import build_model


@pytest.fixture()
def cfg(tiny_config):
    return load_config(tiny_config)


def _save(path, cfg, num_classes=5, **kw):
    torch.manual_seed(0)
    model = build_model(cfg, num_classes)
    C.save_checkpoint(path, model=model, cfg=cfg, num_classes=num_classes, epoch=1, iteration=3,
                      **kw)
    return model


def test_round_trip_rebuilds_the_same_model(tmp_path, cfg):
    model = _save(tmp_path / "a.pt", cfg)
    loaded, cfg2, meta = C.load_model_from_checkpoint(tmp_path / "a.pt")
    assert cfg2.to_dict() == cfg.to_dict()
    assert meta["num_classes"] == 5 and meta["epoch"] == 1 and meta["iteration"] == 3
    assert meta["format_version"] == C.FORMAT_VERSION
    ref = model.state_dict()
    got = loaded.state_dict()
    assert ref.keys() == got.keys()
    assert all(torch.equal(ref[k], got[k]) for k in ref)
    model.eval()
    x = torch.randn(2, 3, cfg.data.height, cfg.data.width)
    with torch.no_grad():
        assert torch.equal(model.forward_features(x, "ir")[0], loaded.forward_features(x, "ir")[0])


def test_rng_states_restore_the_same_draws():
    torch.manual_seed(3), np.random.seed(3), random.seed(3)
    state = capture_rng_state()
    expected = (torch.rand(4), np.random.rand(4), [random.random() for _ in range(4)])
    torch.manual_seed(99), np.random.seed(99), random.seed(99)
    restore_rng_state(state)
    got = (torch.rand(4), np.random.rand(4), [random.random() for _ in range(4)])
    assert torch.equal(expected[0], got[0])
    assert np.array_equal(expected[1], got[1])
    assert expected[2] == got[2]


def test_failed_write_keeps_the_previous_checkpoint(tmp_path, cfg, monkeypatch):
    path = tmp_path / "last.pt"
    _save(path, cfg)
    before = path.read_bytes()

    def broken_save(obj, fh, *a, **k):
        fh.write(b"half a checkpoint")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(Exception):
        _save(path, cfg)
    assert path.read_bytes() == before  # untouched, not half-written
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]  # no temp files left


def test_other_width_is_refused_naming_the_field(tmp_path, cfg):
    _save(tmp_path / "a.pt", cfg)
    ckpt = C.load_checkpoint(tmp_path / "a.pt")
    wider = validate(apply_overrides(cfg, ["model.width=0.25"]))
    with pytest.raises(CheckpointError, match=r"model\.width: checkpoint has 0\.125, expected 0\.25"):
        C.check_compatible(ckpt, wider, 5)
    with pytest.raises(CheckpointError, match="num_classes: checkpoint has 5, expected 7"):
        C.check_compatible(ckpt, cfg, 7)
    C.check_compatible(ckpt, cfg, 5)  # the same config passes


def test_weights_of_another_stage_split_do_not_load(tmp_path, cfg):
    _save(tmp_path / "a.pt", cfg)
    ckpt = C.load_checkpoint(tmp_path / "a.pt")
    other = build_model(validate(apply_overrides(cfg, ["model.shared_stages=all"])), 5)
    with pytest.raises(CheckpointError, match="missing keys|unexpected keys"):
        C.load_state_strict(other, ckpt["model"])
    fewer = build_model(cfg, 4)  # C = 512 · 0.125 = 64 channels for ResNet-18
    with pytest.raises(CheckpointError, match=r"classifier\.weight: checkpoint \(5, 64\), model \(4, 64\)"):
        C.load_state_strict(fewer, ckpt["model"])


def test_other_format_version_and_foreign_files_are_refused(tmp_path, cfg):
    _save(tmp_path / "a.pt", cfg)
    obj = torch.load(tmp_path / "a.pt", weights_only=True)
    obj["format_version"] = C.FORMAT_VERSION + 1
    torch.save(obj, tmp_path / "future.pt")
    with pytest.raises(CheckpointError, match=f"format version {C.FORMAT_VERSION + 1}"):
        C.load_checkpoint(tmp_path / "future.pt")
    torch.save({"state_dict": {}}, tmp_path / "foreign.pt")
    with pytest.raises(CheckpointError, match="not a vireid checkpoint"):
        C.load_checkpoint(tmp_path / "foreign.pt")
    (tmp_path / "garbage.pt").write_bytes(b"not a zip")
    with pytest.raises(CheckpointError, match="cannot read checkpoint"):
        C.load_checkpoint(tmp_path / "garbage.pt")
    with pytest.raises(CheckpointError, match="not found"):
        C.load_checkpoint(tmp_path / "missing.pt")

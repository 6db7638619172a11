"""Model identity from one field list: checkpoint compatibility and `vireid eval`'s refusal
name every field that defines the network (utils.identity.MODEL_IDENTITY), including the ones the
old hand-written list missed (model.shared_bn, ccn.kg_hidden)."""
from __future__ import annotations

import pytest
import torch

from conftest import run_cli
from vireid.config import Config, apply_overrides, load_config
from vireid.utils.identity import MODEL_IDENTITY
from vireid.engine.checkpoint import arch_differences, check_compatible, save_checkpoint
from vireid.errors import CheckpointError
from vireid.models.build import build_model

#: For every identity field, a value other than the default (Config()). Written out by hand:
#: a new identity field must be added here, or the first test fails.
OTHER_VALUE = {
    "model.arch": "resnet18", "model.width": 0.5, "model.last_stride": 1,
    "model.shared_stages": "all", "model.pool": "gem", "model.bnneck": True,
    "model.non_local": True, "model.shared_bn": "per_modality",
    "ccn.kernel_size": [2, 2], "ccn.stride": [2, 1], "ccn.padding": 0, "ccn.corr_scale": 0.5,
    "ccn.share_fc": False, "ccn.fc_bias": False, "ccn.kernel_source": "generator",
    "ccn.kg_hidden": 8, "data.height": 128, "data.width": 64,
}


def test_every_identity_field_is_named_when_it_differs():
    assert set(OTHER_VALUE) == {f.key for f in MODEL_IDENTITY}
    base = Config()
    for key, value in OTHER_VALUE.items():
        other = apply_overrides(base, [f"{key}={value}"])
        default = getattr(getattr(base, key.split(".")[0]), key.split(".")[1])
        assert arch_differences(other, base) == [
            f"{key}: checkpoint has {value!r}, expected {default!r}"], key
    # model.pretrained only sets initial weights; training options are not the model
    assert arch_differences(apply_overrides(base, ["model.pretrained=none", "train.lr=0.5"]),
                            base) == []


def test_check_compatible_refuses_another_shared_bn():
    cfg = Config()
    other = apply_overrides(cfg, ["model.shared_bn=per_modality"])
    ckpt = {"config": other.to_dict(), "num_classes": 5, "path": "x.pt"}
    with pytest.raises(CheckpointError,
                       match=r"model\.shared_bn: checkpoint has 'per_modality', expected 'joint'"):
        check_compatible(ckpt, cfg, 5)


def _save(path, cfg, num_classes=4):
    torch.manual_seed(0)
    model = build_model(cfg, num_classes, load_pretrained=False)
    save_checkpoint(path, model=model, cfg=cfg, num_classes=num_classes, epoch=1, iteration=1)
    return path


@pytest.mark.parametrize("base, changed, words", [
    ([], ["model.shared_bn=per_modality"], ["model.shared_bn", "'per_modality'", "'joint'"]),
    (["ccn.kernel_source=generator"], ["ccn.kernel_source=generator", "ccn.kg_hidden=8"],
     ["ccn.kg_hidden", "8", "None"]),
])
def test_eval_refuses_checkpoints_that_differ_in_one_field(tiny_config, sysu_root, tmp_path,
                                                           base, changed, words):
    first = _save(tmp_path / "a.pt", load_config(tiny_config, base))
    second = _save(tmp_path / "b.pt", load_config(tiny_config, changed))
    proc = run_cli("eval", "--checkpoint", first, second, "--data-root", sysu_root)
    assert proc.returncode == 2, proc.stderr
    line = proc.stderr.strip().splitlines()[-1]
    assert line.startswith("error:") and "checkpoints of different models" in line
    reason = line[line.rindex("(") + 1:line.rindex(")")]
    assert reason.split(":")[0] == changed[-1].split("=")[0]  # exactly that field, first
    for word in words:
        assert word in reason

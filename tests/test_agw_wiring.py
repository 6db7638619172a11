"""AGW / CAJ options that need the engine wiring (proposed engine.patch): channel
augmentation reaches the training batch, and evaluation scores the model's G (GeM, BNNeck)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import yaml

from conftest import TINY_CONFIG
from vireid.config import from_dict


def _cfg(root: Path, **data_opts):
    d = yaml.safe_load(TINY_CONFIG)
    d["data"].update(root=str(root), **data_opts)
    return from_dict(d)


def test_channel_aug_reaches_the_visible_half_of_a_training_step(sysu_root: Path) -> None:
    from vireid.data.transforms import TrainTransform
    from vireid.engine.train_data import StepSource, prepare_data

    cfg = _cfg(sysu_root, channel_aug="exchange", channel_aug_p=1.0)
    data = prepare_data(cfg, sysu_root)
    idx = np.stack([np.arange(4), np.arange(4)], axis=1)
    on = StepSource(data, TrainTransform.from_config(cfg.data), 2, 0, 0, 4)[(0, idx)]
    off_cfg = _cfg(sysu_root)
    off = StepSource(data, TrainTransform.from_config(off_cfg.data), 2, 0, 0, 4)[(0, idx)]
    x = on.x_rgb
    assert torch.all(x[:, 0] == x[:, 1]) and torch.all(x[:, 1] == x[:, 2])
    assert not torch.equal(on.x_rgb, off.x_rgb)
    # data.channel_aug is for the visible images: normalised IR images keep distinct channels
    assert not torch.all(on.x_ir[:, 0] == on.x_ir[:, 1])


def test_extracted_G_is_the_models_pooled_bn_feature(sysu_root: Path) -> None:
    from vireid.config import apply_overrides, validate
    from vireid.data.registry import get_dataset
    from vireid.engine.features import extract_features, open_images
    from vireid.models.build import build_model

    cfg = validate(apply_overrides(from_dict(yaml.safe_load(TINY_CONFIG)),
                                   ["model.pool=gem", "model.bnneck=true"]))
    torch.manual_seed(0)
    model = build_model(cfg, 5)
    with torch.no_grad():
        model.neck.bn.running_mean.uniform_(-0.2, 0.2)
    rgb, ir = get_dataset("sysu").test_images(sysu_root)
    recs = rgb[:5] + ir[:5]
    images = open_images(sysu_root, recs, (64, 32), use_cache=False)
    for flip in (False, True):
        fs = extract_features(model, recs, images, batch_size=4, flip=flip)
        bn = model.neck.bn
        f = fs.F.clamp(min=0)
        gem = (f.pow(3).mean(dim=(2, 3)) + 1e-12).pow(1 / 3)
        want = (gem - bn.running_mean) / torch.sqrt(bn.running_var + bn.eps) * bn.weight + bn.bias
        assert torch.allclose(fs.G, want, atol=1e-5)

"""Channel augmentation (CAJ): branch frequencies within binomial tolerance, channel equalities."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from vireid.data.channel_aug import (
    ERASE_MEAN,
    GRAY_WEIGHTS,
    ChannelAugment,
    channel_adap_gray,
    channel_exchange,
    channel_random_erasing,
)
from vireid.errors import ConfigError

N = 4000


def _distinct_batch(n=N, h=4, w=3):
    # Channels of every image differ (c + 1 plus a per-image offset and a pixel ramp), so the
    # branch taken can be read off the output.
    off = torch.arange(n, dtype=torch.float64).view(n, 1, 1, 1) * 10
    base = torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64).view(1, 3, 1, 1)
    ramp = torch.arange(h * w, dtype=torch.float64).view(1, 1, h, w) / 100
    return base + off + ramp


def _branches(out, x):
    """Count per image: 0-2 = channel k replicated, 3 = greyscale, 4 = unchanged."""
    w = torch.tensor(GRAY_WEIGHTS, dtype=x.dtype).view(1, 3, 1, 1)
    grey = (x * w).sum(dim=1, keepdim=True).expand_as(x)
    cand = [x[:, k:k + 1].expand_as(x) for k in range(3)] + [grey, x]
    kinds = []
    for i in range(x.shape[0]):
        hits = [k for k, c in enumerate(cand) if torch.allclose(out[i], c[i], rtol=0.0, atol=1e-9)]
        assert len(hits) == 1, (i, hits)  # exactly one branch explains each output
        kinds.append(hits[0])
    return np.bincount(kinds, minlength=5)


def _within_binomial(count, n, p, z=4.5):
    sd = math.sqrt(n * p * (1 - p))
    return abs(count - n * p) <= z * max(sd, 1e-9)


def test_channel_exchange_frequencies_and_equalities():
    x = _distinct_batch()
    out = channel_exchange(x, torch.Generator().manual_seed(0))
    counts = _branches(out, x)
    assert counts[3] == 0 and counts[4] == 0  # gray=2: always one channel replicated
    for k in range(3):
        assert _within_binomial(counts[k], N, 1 / 3), counts
    assert torch.all(out[:, 0] == out[:, 1]) and torch.all(out[:, 1] == out[:, 2])
    c3 = _branches(channel_exchange(x, torch.Generator().manual_seed(1), gray=3), x)
    assert c3[4] == 0
    for k in range(4):
        assert _within_binomial(c3[k], N, 1 / 4), c3


def test_channel_adap_gray_frequencies():
    x = _distinct_batch()
    out = channel_adap_gray(x, torch.Generator().manual_seed(2), p=0.5)
    counts = _branches(out, x)
    for k, p in zip(range(5), (1 / 4, 1 / 4, 1 / 4, 1 / 8, 1 / 8)):
        assert _within_binomial(counts[k], N, p), counts
    out1 = channel_adap_gray(x, torch.Generator().manual_seed(3), p=1.0)
    c1 = _branches(out1, x)
    assert c1[4] == 0 and _within_binomial(c1[3], N, 1 / 4)


def test_random_erasing_frequency_region_and_values():
    n, h, w = 2000, 32, 16
    x = torch.full((n, 3, h, w), -5.0)
    out = channel_random_erasing(x, torch.Generator().manual_seed(4), p=0.5)
    erased = (out != x).any(dim=3).any(dim=2).any(dim=1)
    assert _within_binomial(int(erased.sum()), n, 0.5)
    areas = []
    for img in out[erased]:
        for c in range(3):
            m = img[c] != -5.0
            assert torch.all(img[c][m] == torch.tensor(ERASE_MEAN[c]))
        m = img[0] != -5.0
        rows = torch.nonzero(m.any(dim=1)).view(-1)
        cols = torch.nonzero(m.any(dim=0)).view(-1)
        # A single axis-aligned rectangle, strictly smaller than the image in each direction.
        assert m.sum() == len(rows) * len(cols)
        assert len(rows) < h and len(cols) < w
        assert rows.max() - rows.min() + 1 == len(rows)
        areas.append(m.sum().item() / (h * w))
    areas = np.array(areas)
    # Target areas are uniform in [0.02, 0.4]; rounding of h and w moves them a little.
    assert areas.min() >= 0.005 and areas.max() <= 0.5
    assert 0.15 < areas.mean() < 0.25
    assert torch.equal(channel_random_erasing(x, torch.Generator().manual_seed(4), p=0.0), x)


def test_seeded_and_composed():
    x = torch.randn(16, 3, 8, 4)
    a = ChannelAugment("exchange")(x, torch.Generator().manual_seed(5))
    b = ChannelAugment("exchange")(x, torch.Generator().manual_seed(5))
    assert torch.equal(a, b)
    assert torch.all(a[:, 0] == a[:, 1])
    with pytest.raises(ConfigError, match="channel_aug"):
        ChannelAugment("swap")
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        channel_exchange(torch.zeros(2, 1, 4, 4))


# ------------------------------------------------------------------ through the TrainTransform
def _uint8_batch(n=N, h=4, w=3, seed=11):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, h, w, 3), generator=g, dtype=torch.uint8).numpy()


def test_train_transform_channel_aug_distributions_by_modality():
    from vireid.data.transforms import TrainTransform, normalize, to_float

    images = _uint8_batch()
    x = normalize(to_float(images))  # pad 0, no flip: the normalised images themselves
    ex = TrainTransform(pad=0, flip=False, channel_aug="exchange", channel_aug_p=0.5)
    c = _branches(ex(images, torch.Generator().manual_seed(0), modality="rgb"), x)
    assert c[3] == 0
    assert _within_binomial(c[4], N, 0.5), c
    for k in range(3):
        assert _within_binomial(c[k], N, 0.5 / 3), c
    # Infrared images are untouched by data.channel_aug (it is for the visible ones).
    assert torch.equal(ex(images, torch.Generator().manual_seed(0), modality="ir"), x)

    ag = TrainTransform(pad=0, flip=False, channel_aug="adap_gray", channel_aug_p=0.5)
    c = _branches(ag(images, torch.Generator().manual_seed(1), modality="rgb"), x)
    for k, p in zip(range(5), (1 / 8, 1 / 8, 1 / 8, 1 / 16, 1 / 2 + 1 / 16)):
        assert _within_binomial(c[k], N, p), c

    ir = TrainTransform(pad=0, flip=False, channel_aug_ir=True)
    c = _branches(ir(images, torch.Generator().manual_seed(2), modality="ir"), x)
    for k, p in zip(range(5), (1 / 4, 1 / 4, 1 / 4, 1 / 8, 1 / 8)):
        assert _within_binomial(c[k], N, p), c
    assert torch.equal(ir(images, torch.Generator().manual_seed(2), modality="rgb"), x)

    full = TrainTransform(pad=0, flip=False, channel_aug="exchange", channel_aug_p=1.0)
    out = full(images, torch.Generator().manual_seed(3), modality="rgb")
    assert torch.all(out[:, 0] == out[:, 1]) and torch.all(out[:, 1] == out[:, 2])
    with pytest.raises(ValueError, match="modality"):
        ex(images, torch.Generator().manual_seed(0))
    with pytest.raises(ConfigError, match="data.channel_aug"):
        TrainTransform(channel_aug="swap")


def test_train_transform_keeps_crop_flip_draws_and_default_is_unchanged():
    from vireid.data.transforms import (TrainTransform, normalize, random_hflip, random_pad_crop,
                                        to_float)

    images = _uint8_batch(n=64, h=16, w=8)
    # Default: exactly pad/crop + flip + normalise from the generator, nothing more drawn.
    g1, g2 = torch.Generator().manual_seed(9), torch.Generator().manual_seed(9)
    got = TrainTransform(pad=2, flip=True)(images, g1)
    want = normalize(random_hflip(random_pad_crop(to_float(images), 2, g2), 0.5, g2))
    assert torch.equal(got, want)
    assert torch.equal(g1.get_state(), g2.get_state())
    # With channel augmentation, the crop/flip draws come first and are the same: every image
    # the coin leaves alone equals the un-augmented output.
    aug = TrainTransform(pad=2, flip=True, channel_aug="exchange", channel_aug_p=0.5,
                         random_erasing=0.0)(images, torch.Generator().manual_seed(9),
                                             modality="rgb")
    same = [bool(torch.equal(aug[i], want[i])) for i in range(64)]
    replicated = [bool(torch.all(aug[i, 0] == aug[i, 1]) and torch.all(aug[i, 1] == aug[i, 2]))
                  for i in range(64)]
    assert all(s or r for s, r in zip(same, replicated)) and 10 < sum(same) < 54
    # Seeded: the same generator seed gives the same batch.
    t = TrainTransform(pad=2, channel_aug="adap_gray", random_erasing=0.5)
    a = t(images, torch.Generator().manual_seed(4), modality="rgb")
    b = t(images, torch.Generator().manual_seed(4), modality="rgb")
    assert torch.equal(a, b)


def test_train_transform_from_config():
    from vireid.config import Config, apply_overrides, validate
    from vireid.data.transforms import TrainTransform

    cfg = validate(apply_overrides(Config(), ["data.channel_aug=adap_gray", "data.channel_aug_p=0.25",
                                              "data.channel_aug_ir=true", "data.random_erasing=0.5",
                                              "data.pad=3", "data.flip=false"]))
    t = TrainTransform.from_config(cfg.data)
    assert (t.pad, t.flip, t.channel_aug, t.channel_aug_p, t.channel_aug_ir, t.random_erasing) == \
        (3, False, "adap_gray", 0.25, True, 0.5)
    assert t.modality_dependent and not TrainTransform.from_config(Config().data).modality_dependent

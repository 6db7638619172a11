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

"""loss.pbce_negatives: the hard negatives of PBCE against a literal loop."""
from __future__ import annotations

import math
from pathlib import Path

import torch

from vireid.config import load_config
from vireid.engine.checkpoint import load_checkpoint
from vireid.engine.trainer import train
from vireid.losses.pairs import PBCE_NEGATIVES, hardest_negative_pairs


def _literal(g_rgb, g_ir, y_rgb, y_ir, r):
    pairs = [(k, k) for k in range(len(y_rgb))]
    for k in range(len(y_rgb)):
        cands = []
        for j in range(len(y_ir)):
            if int(y_ir[j]) == int(y_rgb[k]):
                continue
            a, b = g_rgb[k].tolist(), g_ir[j].tolist()
            cos = sum(x * y for x, y in zip(a, b)) / (math.sqrt(sum(x * x for x in a))
                                                      * math.sqrt(sum(y * y for y in b)))
            cands.append((-cos, j))
        pairs += [(k, j) for _, j in sorted(cands)[:r]]
    return pairs


def test_hardest_negatives_match_a_literal_loop():
    gen = torch.Generator().manual_seed(0)
    n, c = 7, 5
    g_rgb, g_ir = torch.randn(n, c, generator=gen), torch.randn(n, c, generator=gen)
    g_ir[5] = g_ir[2]  # an exact tie: the lower column must come first
    y = torch.tensor([0, 1, 2, 3, 3, 4, 5])  # ids 3 twice: positions 3 and 4 are no negatives
    for r in (1, 3, 6):
        ia, ib, t = hardest_negative_pairs(g_rgb, g_ir, y, y, (None, None, None), r)
        want = _literal(g_rgb, g_ir, y, y, r)
        assert list(zip(ia.tolist(), ib.tolist())) == want, r
        assert t.tolist() == [float(y[a] != y[b]) for a, b in want]
        assert t[:n].sum() == 0 and t[n:].min() == 1  # positives first, then true negatives


def test_random_keeps_the_sampled_pairs():
    sampled = (torch.tensor([0, 1, 0]), torch.tensor([0, 1, 1]), torch.tensor([0., 0., 1.]))
    out = PBCE_NEGATIVES["random"](torch.zeros(2, 3), torch.zeros(2, 3), torch.tensor([0, 1]),
                                   torch.tensor([0, 1]), sampled, 1)
    assert out is sampled


def test_training_with_hard_negatives_differs_from_random(tmp_path: Path, tiny_config: Path,
                                                          sysu_root: Path):
    weights = {}
    for mode in ("random", "hard"):
        cfg = load_config(tiny_config, [f"data.root={sysu_root}", "train.threads=1",
                                        f"loss.pbce_negatives={mode}"])
        train(cfg, tmp_path / mode, progress=False)
        weights[mode] = load_checkpoint(tmp_path / mode)["model"]["ccn.fc.weight"]
    assert not torch.equal(weights["random"], weights["hard"])


def test_pbce_negative_choices_are_the_ones_implemented():
    from vireid.config import PBCE_NEGATIVE_CHOICES
    assert set(PBCE_NEGATIVE_CHOICES) == set(PBCE_NEGATIVES)

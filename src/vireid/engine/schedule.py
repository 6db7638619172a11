"""The learning-rate schedule, a pure function of (epoch, iteration): resuming needs no
scheduler state.

``lr · gamma^(number of milestones ≤ epoch)`` with 0-based epochs (milestone 30 of 60: the
last 30 epochs run at lr·gamma), times a linear warm-up ``(t + 1) / (warmup_epochs · iters)``
over the first ``warmup_epochs`` epochs (t = iteration since the start).
"""
from __future__ import annotations

from vireid.config import Config


def lr_at(cfg: Config, epoch: int, it: int, iters_per_epoch: int) -> float:
    """Learning rate of iteration ``it`` (0-based) of epoch ``epoch`` (0-based)."""
    t = cfg.train
    lr = t.lr * t.lr_gamma ** sum(1 for m in t.lr_milestones if epoch >= m)
    if epoch < t.warmup_epochs:
        lr *= (epoch * iters_per_epoch + it + 1) / (t.warmup_epochs * iters_per_epoch)
    return lr

"""A toy loss kind registered from outside vireid through the public decorator only.

``toy-idl``: the ID loss of both modalities' global features, half-weighted, logged as
``toy``. It needs no head of its own and does not train the CCN.
"""
from __future__ import annotations

import torch
import torch.nn.functional as nnf

from vireid import register_loss

NAME = "toy-idl"


@register_loss(NAME)
def toy_idl(model, batch, cfg):
    """0.5 · cross-entropy of W_ID·G over the batch's RGB and IR images."""
    logits = model.classify(torch.cat([batch.G_rgb, batch.G_ir], 0))
    loss = 0.5 * nnf.cross_entropy(logits, torch.cat([batch.y_rgb, batch.y_ir], 0))
    return loss, {"toy": loss}

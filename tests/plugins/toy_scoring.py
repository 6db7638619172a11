"""A toy scoring mode, registered the way a lab's plugin would: one function, one decorator.

``toy-l1``: the L1 distance of the global features G (lower = more similar). It needs no
CCN and no feature maps; evaluation (``--scoring toy-l1`` and ``all``), k-reciprocal
re-ranking and search all work from the function alone.
"""
from __future__ import annotations

import torch

from vireid import register_scoring

NAME = "toy-l1"


@register_scoring(NAME, uses_maps=False, paper="toy plugin",
                  native="L1 distance of global features (lower = more similar)")
def toy_l1(q, g, ctx) -> torch.Tensor:
    """(Q, G) L1 distance of q.G (Q, C) and g.G (G, C)."""
    return torch.cdist(q.G.double(), g.G.double(), p=1).float()

"""Full-mode scoring over mixed-modality queries and galleries (open set) equals the CCN's
direct form pair by pair, with each pair's images on the sides the CCN contract gives them."""
import numpy as np
import torch

from vireid.data.records import IR, RGB
from vireid.engine.features import FeatureSet
from vireid.scoring.inputs import as_features
from vireid.scoring.scorers import MIXED, ScoringContext
from vireid.models.ccn import CCN


def _features(mods, gen, c=6, h=5, w=3):
    n = len(mods)
    F = torch.rand(n, c, h, w, generator=gen)
    return FeatureSet(F, F.mean(dim=(2, 3)), np.arange(n), np.ones(n, dtype=np.int64),
                      list(mods), [f"img{i}" for i in range(n)])


def test_mixed_blocks_equal_the_direct_form_with_unshared_fc():
    gen = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    ccn = CCN(6, (5, 3), kernel_size=(2, 2), stride=(1, 1), padding=1, share_fc=False)
    with torch.no_grad():  # distinct, non-trivial W_a and W_b so a swapped side would show
        ccn.fc.weight.normal_(0, 3.0, generator=gen)
        ccn.fc_b.weight.normal_(0, 3.0, generator=gen)
    q = _features([RGB, IR, IR, RGB, IR], gen)
    g = _features([IR, RGB, RGB, IR, RGB, IR], gen)
    ctx = ScoringContext(ccn=ccn, chunk_size=2)
    assert ctx.side(as_features(q), as_features(g)) == MIXED  # each block on its own
    with torch.no_grad():
        D = ctx.d_ri(as_features(q), as_features(g))
        zero = torch.zeros(1, dtype=torch.long)
        for i, mq in enumerate(q.modalities):
            for j, mg in enumerate(g.modalities):
                # The contract: the RGB image of a cross-modality pair is side a; a
                # same-modality pair puts the query on side a.
                if (mq, mg) == (IR, RGB):
                    fa, fb = g.F[j:j + 1], q.F[i:i + 1]
                else:
                    fa, fb = q.F[i:i + 1], g.F[j:j + 1]
                want = ccn(fa, fb, zero, zero)[0]
                assert torch.allclose(D[i, j], want, rtol=1e-4, atol=1e-6), (i, j, mq, mg)
    # The sides matter with unshared W_D: the swapped pair gives another score somewhere.
    swapped = ccn(q.F[1:2], g.F[1:2], zero, zero)[0]
    assert not torch.allclose(D[1, 1], swapped, rtol=1e-3)

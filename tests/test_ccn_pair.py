"""The export form of the CCN (models/ccn_pair.py: unfold + batched matmul) against the
direct form CCN.forward / CCN.logits (grouped convolution, itself checked against a literal
transcription of the paper in test_ccn.py), on random maps."""
from __future__ import annotations

import copy

import pytest
import torch

from vireid.models.ccn import CCN
from vireid.models.ccn_pair import CCNPairModule


def _ccn(share_fc: bool, kernel_source: str, kernel_size, stride, padding) -> CCN:
    torch.manual_seed(0)
    ccn = CCN(6, (5, 4), kernel_size=kernel_size, stride=stride, padding=padding,
              share_fc=share_fc, kernel_source=kernel_source, kg_hidden=3)
    # Random W_D (and a second, different one when unshared) and non-zero biases, so that
    # a swapped direction or a wrong layer would show.
    with torch.no_grad():
        for fc in (ccn.fc, ccn.fc_b):
            if fc is not None:
                fc.weight.normal_(0, 0.5)
                fc.bias.normal_(0, 0.5)
    return ccn.eval()


@pytest.mark.parametrize("share_fc", [True, False])
@pytest.mark.parametrize("kernel_source", ["sample", "generator"])
@pytest.mark.parametrize("kernel_size, stride, padding", [((3, 3), (1, 1), 1),
                                                          ((2, 3), (2, 1), 0)])
def test_pair_module_equals_direct_form(share_fc, kernel_source, kernel_size, stride, padding):
    ccn = _ccn(share_fc, kernel_source, kernel_size, stride, padding)
    assert (ccn.fc_b is None) == share_fc
    pair = CCNPairModule(ccn).eval()
    gen = torch.Generator().manual_seed(1)
    fa = torch.rand(4, 6, 5, 4, generator=gen) * 3  # ReLU-like maps, not in [0, 1] only
    fb = torch.rand(4, 6, 5, 4, generator=gen) * 3
    idx = torch.arange(4)
    with torch.no_grad():
        for x, y in ((fa, fb), (fb, fa)):  # both orders: side a is the first argument
            d, la, lb = pair(x, y)
            ref_la, ref_lb = ccn.logits(x, y, idx, idx)
            ref_d = ccn(x, y, idx, idx)
            assert la.shape == lb.shape == d.shape == (4,)
            torch.testing.assert_close(la, ref_la, rtol=1e-5, atol=1e-5)
            torch.testing.assert_close(lb, ref_lb, rtol=1e-5, atol=1e-5)
            torch.testing.assert_close(d, ref_d, rtol=1e-5, atol=1e-6)
        # the two directions are distinct numbers (the check above could not pass by swapping
        # la and lb), and unshared W_D changes direction b only
        d, la, lb = pair(fa, fb)
        assert not torch.allclose(la, lb)
        if not share_fc:
            shared = CCNPairModule(_shared_copy(ccn)).eval()
            _, la_s, lb_s = shared(fa, fb)
            torch.testing.assert_close(la_s, la)
            assert not torch.allclose(lb_s, lb)


def _shared_copy(ccn: CCN) -> CCN:
    out = copy.deepcopy(ccn)
    out.fc_b = None
    return out

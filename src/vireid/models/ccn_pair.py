"""The CCN on aligned pairs in a form that exports to ONNX with a dynamic batch axis.

:meth:`vireid.models.ccn.CCN.logits` computes each pair's correlation as one grouped
convolution with ``groups = M`` pairs. ONNX fixes ``group`` in the graph, so a traced
grouped convolution would freeze the batch size. :class:`CCNPairModule` computes the same
sum, Ca[k, y, x] = Σ_{c,p,q} K^ab_k[c, p, q] · Fa_pad[c, y+p, x+q], as ``unfold`` (im2col
with zero padding ``padding``) followed by a batched matrix product, whose shapes all follow
the batch. Everything else is the CCN's own: the kernels come from :meth:`CCN.kernels`
(Algorithm 1's crops or the KG generator), W_D from its ``fc`` / ``fc_b`` and the scale
from ``corr_scale``, so sampled and generated kernels, shared and unshared W_D, all work.

``vireid export`` traces it into ``ccn_pair.onnx`` (:mod:`vireid.apps.export`).
"""
from __future__ import annotations

import torch
import torch.nn.functional as nnf
from torch import Tensor, nn

from vireid.models.ccn import CCN


class CCNPairModule(nn.Module):
    """CCN on aligned pairs (pair i is F_a[i] with F_b[i]).

    forward(F_a (B, C, h, w), F_b (B, C, h, w)) -> D (B,), la (B,), lb (B,), equal (up to
    float summation order) to ``ccn(F_a, F_b, arange(B), arange(B))`` and
    ``ccn.logits(...)``; side a is the RGB side of a cross-modality pair.
    """

    def __init__(self, ccn: CCN) -> None:
        super().__init__()
        self.ccn = ccn

    def _correlate(self, feat: Tensor, kab: Tensor) -> Tensor:
        """feat (B, C, h, w), kab (B, n, C·hK·wK) -> scaled correlation, flattened (B, n·h'·w').

        unfold lays each window out as (c, p, q) row-major, the same order as the kernels'
        flattened (C, hK, wK), so one matmul per pair is the correlation of all n kernels,
        and its (n, h'·w') result flattens row-major over (k, y, x) as CCN's FC expects.
        """
        # (B, C·hK·wK, h'·w')
        cols = nnf.unfold(feat, self.ccn.kernel_size, padding=self.ccn.padding)
        return torch.matmul(kab, cols).flatten(1) * self.ccn.corr_scale

    def forward(self, fa: Tensor, fb: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        ccn = self.ccn
        kab = (ccn.kernels(fa) - ccn.kernels(fb)).abs().flatten(2)  # (B, n, C·hK·wK)
        fc_b = ccn.fc if ccn.fc_b is None else ccn.fc_b
        la = ccn.fc(self._correlate(fa, kab)).squeeze(1)
        lb = fc_b(self._correlate(fb, kab)).squeeze(1)
        d = 0.5 * (torch.sigmoid(la) + torch.sigmoid(lb))
        return d, la, lb

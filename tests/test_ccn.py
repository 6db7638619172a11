"""CCN against literal transcriptions of Algorithm 1 and Eqs. (2)–(7)."""
from __future__ import annotations

import math

import pytest
import torch

from vireid.errors import ConfigError
from vireid.models.ccn import CCN, kernel_offsets, num_kernels, sample_kernels


def algorithm1(fmap: torch.Tensor, hk: int, wk: int, stride_h: int, stride_v: int) -> list[torch.Tensor]:
    """Literal Algorithm 1: fmap (C, hF, wF) -> list of C×hK×wK crops."""
    kernels = []
    h_f, w_f = fmap.shape[1], fmap.shape[2]
    i = 0
    while i + hk <= h_f:
        j = 0
        while j + wk <= w_f:
            kernels.append(fmap[:, i:i + hk, j:j + wk].clone())
            j = j + stride_h
        i = i + stride_v
    return kernels


def zero_pad(fmap: torch.Tensor, p: int) -> torch.Tensor:
    c, h, w = fmap.shape
    out = torch.zeros(c, h + 2 * p, w + 2 * p, dtype=fmap.dtype)
    out[:, p:p + h, p:p + w] = fmap
    return out


def correlate_naive(kernel: torch.Tensor, fmap: torch.Tensor, p: int) -> list[list[float]]:
    """One kernel (C, hK, wK) over one map (C, h, w), conv2d semantics, zero padding p."""
    fp = zero_pad(fmap, p)
    hk, wk = kernel.shape[1], kernel.shape[2]
    rows = []
    for y in range(fp.shape[1] - hk + 1):
        row = []
        for x in range(fp.shape[2] - wk + 1):
            row.append(float((kernel * fp[:, y:y + hk, x:x + wk]).sum()))
        rows.append(row)
    return rows


def pair_reference(fa, fb, ka, kb, p, scale, wa, ba, wb, bb):
    """Eqs. (4)–(7) for one pair with given per-image kernel lists; returns (la, lb, D)."""
    kab = [(x - y).abs() for x, y in zip(ka, kb)]  # Eq. (4)
    vec_a, vec_b = [], []
    for k in kab:  # Eq. (5), vec row-major over (k, y, x)
        for row in correlate_naive(k, fa, p):
            vec_a.extend(row)
        for row in correlate_naive(k, fb, p):
            vec_b.extend(row)
    la = sum(w * scale * v for w, v in zip(wa, vec_a)) + ba  # Eq. (6) before σ
    lb = sum(w * scale * v for w, v in zip(wb, vec_b)) + bb
    sig = lambda t: 1.0 / (1.0 + math.exp(-t))  # noqa: E731
    return la, lb, (sig(la) + sig(lb)) / 2  # Eq. (7)


@pytest.mark.parametrize("h,w,hk,wk,sv,sh", [
    (8, 4, 3, 3, 1, 1), (8, 4, 3, 3, 2, 1), (7, 5, 2, 3, 3, 2), (6, 6, 1, 1, 2, 3), (5, 4, 5, 4, 1, 1),
])
def test_sample_kernels_equals_algorithm1(h, w, hk, wk, sv, sh):
    torch.manual_seed(0)
    feat = torch.randn(3, 4, h, w)
    got = sample_kernels(feat, (hk, wk), (sv, sh))
    for b in range(feat.shape[0]):
        ref = algorithm1(feat[b], hk, wk, stride_h=sh, stride_v=sv)
        assert got.shape == (3, len(ref), 4, hk, wk)
        for k, kern in enumerate(ref):
            assert torch.equal(got[b, k], kern)
    assert num_kernels(h, w, (hk, wk), (sv, sh)) == len(ref)
    assert len(kernel_offsets(h, w, (hk, wk), (sv, sh))) == len(ref)


def test_kernel_counts_8x4():
    # Algorithm 1 gives 12, 6, 4, 4, 4 for stride_v = 1..5 (the paper's text claims 12, 8, 6, 4, 2).
    feat = torch.zeros(2048 // 256, 8, 4)
    counts = [len(algorithm1(feat, 3, 3, stride_h=1, stride_v=sv)) for sv in range(1, 6)]
    assert counts == [12, 6, 4, 4, 4]
    assert [num_kernels(8, 4, 3, (sv, 1)) for sv in range(1, 6)] == counts
    assert [CCN(8, (8, 4), 3, (sv, 1)).num_kernels for sv in range(1, 6)] == counts


CASES = [
    # (C, h, w, kernel, stride, padding, share_fc, corr_scale)
    (3, 5, 4, (3, 3), (1, 1), 1, True, None),
    (3, 5, 4, (3, 3), (1, 1), 0, True, None),
    (2, 6, 5, (2, 3), (2, 1), 2, False, None),
    (4, 7, 4, (3, 2), (3, 2), 1, False, 0.5),
    (2, 4, 4, (1, 1), (1, 3), 0, True, 2.0),
    (3, 6, 3, (3, 3), (2, 1), 2, True, None),
]


def _fc_params(ccn: CCN):
    fcb = ccn.fc if ccn.fc_b is None else ccn.fc_b
    wa, ba = ccn.fc.weight[0].detach().tolist(), float(ccn.fc.bias[0].detach())
    return wa, ba, fcb.weight[0].detach().tolist(), float(fcb.bias[0].detach())


@pytest.mark.parametrize("case", CASES)
def test_batched_ccn_equals_naive_loops(case):
    c, h, w, ks, st, pad, share, scale = case
    torch.manual_seed(1)
    ccn = CCN(c, (h, w), ks, st, padding=pad, share_fc=share, corr_scale=scale)
    with torch.no_grad():  # non-trivial weights (default init is fine, bias made non-zero)
        ccn.fc.bias.fill_(0.3)
        if ccn.fc_b is not None:
            ccn.fc_b.weight.normal_(0.0, 0.2)
            ccn.fc_b.bias.fill_(-0.2)
    fa, fb = torch.rand(3, c, h, w) * 2, torch.rand(4, c, h, w) * 2
    ia = torch.tensor([0, 1, 2, 0, 2])
    ib = torch.tensor([0, 1, 3, 2, 2])
    la, lb = ccn.logits(fa, fb, ia, ib)
    d = ccn(fa, fb, ia, ib)
    s = scale if scale is not None else 1.0 / (c * ks[0] * ks[1])
    wa, ba, wb, bb = _fc_params(ccn)
    assert ccn.out_hw == (h + 2 * pad - ks[0] + 1, w + 2 * pad - ks[1] + 1)
    for m in range(len(ia)):
        xa, xb = fa[ia[m]], fb[ib[m]]
        ka = algorithm1(xa, ks[0], ks[1], stride_h=st[1], stride_v=st[0])
        kb = algorithm1(xb, ks[0], ks[1], stride_h=st[1], stride_v=st[0])
        rla, rlb, rd = pair_reference(xa, xb, ka, kb, pad, s, wa, ba, wb, bb)
        assert la[m].item() == pytest.approx(rla, abs=1e-5)
        assert lb[m].item() == pytest.approx(rlb, abs=1e-5)
        assert d[m].item() == pytest.approx(rd, abs=1e-5)


def test_same_modality_pairs():
    torch.manual_seed(2)
    ccn = CCN(3, (5, 4), 3, 1, padding=1)
    f = torch.rand(4, 3, 5, 4)
    ia, ib = torch.tensor([0, 1, 3, 2]), torch.tensor([1, 1, 2, 0])
    la, lb = ccn.logits(f, f, ia, ib)
    wa, ba, wb, bb = _fc_params(ccn)
    for m in range(4):
        x, y = f[ia[m]], f[ib[m]]
        rla, rlb, _ = pair_reference(x, y, algorithm1(x, 3, 3, 1, 1), algorithm1(y, 3, 3, 1, 1),
                                     1, 1 / 27, wa, ba, wb, bb)
        assert la[m].item() == pytest.approx(rla, abs=1e-5)
        assert lb[m].item() == pytest.approx(rlb, abs=1e-5)
    # An image paired with itself has zero contrastive kernels: only the bias is left.
    assert la[1].item() == pytest.approx(ba, abs=1e-7)


def test_generator_variant_correlation_given_its_kernels():
    torch.manual_seed(3)
    ccn = CCN(4, (6, 4), (3, 3), (2, 1), padding=1, kernel_source="generator", share_fc=False,
              kg_hidden=5)
    fa, fb = torch.rand(2, 4, 6, 4), torch.rand(3, 4, 6, 4)
    ia, ib = torch.tensor([0, 1, 1]), torch.tensor([2, 0, 1])
    with torch.no_grad():
        ka_all, kb_all = ccn.kernels(fa), ccn.kernels(fb)
        la, lb = ccn.logits(fa, fb, ia, ib)
    assert ka_all.shape == (2, ccn.num_kernels, 4, 3, 3)
    wa, ba, wb, bb = _fc_params(ccn)
    for m in range(3):
        ka = list(ka_all[ia[m]])
        kb = list(kb_all[ib[m]])
        rla, rlb, _ = pair_reference(fa[ia[m]], fb[ib[m]], ka, kb, 1, 1 / 36, wa, ba, wb, bb)
        assert la[m].item() == pytest.approx(rla, abs=1e-5)
        assert lb[m].item() == pytest.approx(rlb, abs=1e-5)
    # Generated kernels are not crops of F (it is a learned mapping).
    assert not torch.allclose(ka_all, sample_kernels(fa, 3, (2, 1)))


def test_generator_size_at_paper_geometry():
    with torch.device("meta"):
        plain = CCN(2048, (8, 4))
        kg = CCN(2048, (8, 4), kernel_source="generator")
    extra = sum(p.numel() for p in kg.parameters()) - sum(p.numel() for p in plain.parameters())
    assert 23e6 <= extra <= 25e6  # paper Table IV: 49M vs 25M


def test_macs_per_pair_paper_geometry():
    ccn = CCN(2048, (8, 4))
    assert ccn.num_kernels == 12 and ccn.out_hw == (8, 4)
    # per direction: 12 kernels × 32 outputs × 2048·3·3 products, plus the 384-long FC.
    assert ccn.macs_per_pair() == 2 * (12 * 32 * 2048 * 9 + 384)
    assert 14.0e6 < ccn.macs_per_pair() < 14.3e6


def test_gradients_flow_to_both_maps():
    ccn = CCN(3, (5, 4))
    fa = torch.rand(2, 3, 5, 4, requires_grad=True)
    fb = torch.rand(2, 3, 5, 4, requires_grad=True)
    ccn(fa, fb, torch.tensor([0, 1]), torch.tensor([1, 0])).sum().backward()
    assert fa.grad is not None and fa.grad.abs().sum() > 0
    assert fb.grad is not None and fb.grad.abs().sum() > 0
    assert ccn.fc.weight.grad is not None


def test_bad_inputs():
    with pytest.raises(ConfigError):
        CCN(3, (2, 2), 3)
    with pytest.raises(ConfigError):
        CCN(3, (5, 4), kernel_source="learned")
    ccn = CCN(3, (5, 4))
    with pytest.raises(ConfigError, match=r"\(B, 3, 5, 4\)"):
        ccn(torch.rand(1, 3, 6, 4), torch.rand(1, 3, 5, 4), torch.tensor([0]), torch.tensor([0]))

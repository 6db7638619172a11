"""The folded full-mode scorer equals a literal per-pair loop of the paper's equations."""
import itertools

import pytest
import torch
import torch.nn.functional as nnf

from vireid.errors import ConfigError
from vireid.scoring import fastccn, numba_full
from vireid.scoring.fastccn import CCNParams


def naive_pair(p: CCNParams, fa, fb, ka=None, kb=None):
    """D_RI of one pair, literally: Algorithm 1 crops (or given kernels), |Ka − Kb|, one
    conv2d per kernel per direction, FC, sigmoid, mean. fa, fb: (C, h, w)."""
    (h, w), (hk, wk), (sv, sh) = p.feat_hw, p.kernel_size, p.stride
    if ka is None:
        ka, kb = [], []
        i = 0
        while i + hk <= h:
            j = 0
            while j + wk <= w:
                ka.append(fa[:, i:i + hk, j:j + wk])
                kb.append(fb[:, i:i + hk, j:j + wk])
                j += sh
            i += sv
    logits = []
    for f, (wmat, bias) in ((fa, p.weight("a")), (fb, p.weight("b"))):
        # The n contrastive kernels |K^a_k − K^b_k| as the n output channels of one conv2d.
        kab = torch.stack([(a - b).abs() for a, b in zip(ka, kb)]).double()
        c = nnf.conv2d(f[None].double(), kab, padding=p.padding)[0] * p.corr_scale  # (n, h', w')
        logits.append(float((wmat * c).sum()) + bias)
    return 0.5 * (torch.sigmoid(torch.tensor(logits[0])) + torch.sigmoid(torch.tensor(logits[1])))


def make_params(c, hw, ks=(3, 3), stride=(1, 1), padding=1, shared=True, scale=None, seed=0):
    g = torch.Generator().manual_seed(seed)
    (h, w), (hk, wk) = hw, ks
    n = len(range(0, h - hk + 1, stride[0])) * len(range(0, w - wk + 1, stride[1]))
    hp, wp = h + 2 * padding - hk + 1, w + 2 * padding - wk + 1
    w_a = torch.randn(n, hp, wp, generator=g, dtype=torch.float64) * 0.5
    w_b = w_a if shared else torch.randn(n, hp, wp, generator=g, dtype=torch.float64) * 0.5
    b_a, b_b = 0.3, (0.3 if shared else -0.2)
    s = scale if scale is not None else 1.0 / (c * hk * wk)
    return CCNParams(c, hw, ks, stride, padding, s, w_a, b_a, w_b, b_b)


def reference(p, qF, gF, query_side):
    out = torch.empty(len(qF), len(gF), dtype=torch.float64)
    for q, g in itertools.product(range(len(qF)), range(len(gF))):
        fa, fb = (gF[g], qF[q]) if query_side == "b" else (qF[q], gF[g])
        out[q, g] = naive_pair(p, fa, fb)
    return out


CASES = [
    # (hw, kernel, stride, padding, shared, corr_scale)
    ((6, 4), (3, 3), (1, 1), 1, True, None),
    ((6, 4), (3, 3), (1, 1), 0, True, None),
    ((6, 4), (3, 3), (1, 1), 2, False, None),
    ((7, 5), (3, 3), (2, 1), 1, True, 0.05),
    ((7, 5), (3, 2), (3, 1), 0, False, None),
    ((6, 5), (2, 3), (1, 2), 2, True, None),
    ((6, 6), (3, 3), (1, 3), 1, False, 0.2),
    ((8, 4), (3, 3), (3, 3), 2, True, None),
]


@pytest.mark.parametrize("hw,ks,stride,padding,shared,scale", CASES)
def test_fast_equals_naive_loop(hw, ks, stride, padding, shared, scale):
    p = make_params(3, hw, ks, stride, padding, shared, scale)
    g = torch.Generator().manual_seed(1)
    qF, gF = torch.randn(5, 3, *hw, generator=g), torch.randn(3, 3, *hw, generator=g)
    # Exact zeros (as after a ReLU) beside signed values: the sparse kernel's two regions.
    qF = torch.where(torch.rand(qF.shape, generator=g) < 0.4, 0.0, qF)
    gF = torch.where(torch.rand(gF.shape, generator=g) < 0.4, 0.0, gF)
    gF[0] = 0.0   # an all-zero map on one side
    for side in ("a", "b"):
        ref = reference(p, qF, gF, side)
        for backend in ("numba", "sparse", "torch"):
            d = fastccn.score_full(p, qF, gF, query_side=side, chunk_size=2, backend=backend)
            assert d.shape == (5, 3) and d.dtype == torch.float32
            torch.testing.assert_close(d.double(), ref, rtol=1e-4, atol=0)


def test_unshared_directions_are_not_swapped():
    # With very different W_a / W_b, swapping which image's term multiplies which direction
    # changes D; only the right assignment matches the literal loop.
    p = make_params(2, (5, 4), shared=False, scale=0.1)
    g = torch.Generator().manual_seed(3)
    qF, gF = torch.rand(3, 2, 5, 4, generator=g), torch.rand(4, 2, 5, 4, generator=g)
    swapped = CCNParams(p.channels, p.feat_hw, p.kernel_size, p.stride, p.padding, p.corr_scale,
                        p.w_b, p.b_b, p.w_a, p.b_a)
    ref = reference(p, qF, gF, "b")
    torch.testing.assert_close(fastccn.score_full(p, qF, gF).double(), ref, rtol=1e-4, atol=0)
    assert not torch.allclose(fastccn.score_full(swapped, qF, gF).double(), ref, rtol=1e-3)


def test_chunks_and_odd_sizes_in_blocked_kernel():
    # Sizes not divisible by the 2×2 register tile nor by the cache blocks (set small here).
    g = torch.Generator().manual_seed(4)
    X, WX = torch.rand(37, 19, generator=g), torch.randn(37, 19, generator=g)
    Y, WY = torch.rand(35, 19, generator=g), torch.randn(35, 19, generator=g)
    old = numba_full.QB, numba_full.GB, numba_full.TD
    try:
        numba_full.QB, numba_full.GB, numba_full.TD = 6, 5, 7
        ox, oy = fastccn.weighted_l1(X, WX, Y, WY, backend="numba")
    finally:
        numba_full.QB, numba_full.GB, numba_full.TD = old
    diff = (X[:, None, :].double() - Y[None].double()).abs()
    torch.testing.assert_close(ox.double(), (diff * WX[:, None].double()).sum(-1), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(oy.double(), (diff * WY[None].double()).sum(-1), rtol=1e-5, atol=1e-5)
    tx, ty = fastccn.weighted_l1(X, WX, Y, WY, backend="torch")
    torch.testing.assert_close(tx, ox, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(ty, oy, rtol=1e-5, atol=1e-5)


def test_sparse_kernel_blocks_and_zero_patterns():
    # Chunk and block sizes that do not divide the shapes, rows and columns entirely zero,
    # signed values: the zero-skipping kernel equals the literal sums.
    from vireid.scoring import sparse_full

    g = torch.Generator().manual_seed(7)
    X, WX = torch.randn(37, 29, generator=g), torch.randn(37, 29, generator=g)
    Y, WY = torch.randn(35, 29, generator=g), torch.randn(35, 29, generator=g)
    X = torch.where(torch.rand(X.shape, generator=g) < 0.6, 0.0, X)
    Y = torch.where(torch.rand(Y.shape, generator=g) < 0.6, 0.0, Y)
    X[3], Y[5], X[:, 4], Y[:, 4:9] = 0.0, 0.0, 0.0, 0.0
    old = sparse_full._GB, sparse_full._TD
    try:
        sparse_full._GB, sparse_full._TD = 8, 6
        ox, oy = sparse_full.weighted_l1_sparse(X, WX, Y, WY)
    finally:
        sparse_full._GB, sparse_full._TD = old
    diff = (X[:, None, :].double() - Y[None].double()).abs()
    torch.testing.assert_close(ox.double(), (diff * WX[:, None].double()).sum(-1), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(oy.double(), (diff * WY[None].double()).sum(-1), rtol=1e-5, atol=1e-5)
    # Reusing a prepared gallery gives the same sums.
    gal = sparse_full.prepare_gallery(Y, WY)
    ox2, oy2 = sparse_full.weighted_l1_sparse(X, WX, gal)
    torch.testing.assert_close(ox2, ox, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(oy2, oy, rtol=1e-5, atol=1e-5)


def test_auto_backend_choice():
    cpu = torch.zeros(2, 3)
    assert fastccn.resolve_backend("auto", cpu) == ("numba" if fastccn.numba_available() else "torch")
    assert fastccn.resolve_backend("sparse", cpu) == "sparse"
    if not fastccn.triton_available():
        with pytest.raises(ConfigError, match="triton"):
            fastccn.resolve_backend("triton", cpu)


def test_score_pairs_and_pair_logits_match_loop():
    p = make_params(3, (6, 4), stride=(2, 1), shared=False)
    g = torch.Generator().manual_seed(5)
    qF, gF = torch.randn(4, 3, 6, 4, generator=g), torch.randn(5, 3, 6, 4, generator=g)
    qi, gi = torch.tensor([0, 3, 3, 1, 2]), torch.tensor([4, 0, 2, 2, 1])
    ref = reference(p, qF, gF, "b")[qi, gi]
    for backend in ("numba", "sparse", "torch"):
        d = fastccn.score_pairs(p, qF, gF, qi, gi, query_side="b", backend=backend)
        torch.testing.assert_close(d.double(), ref, rtol=1e-4, atol=0)
    la, lb = fastccn.pair_logits(p, gF, qF, gi, qi)   # side a = gallery
    d = 0.5 * (torch.sigmoid(la) + torch.sigmoid(lb))
    torch.testing.assert_close(d.double(), ref, rtol=1e-4, atol=0)


def test_precompute_is_the_folded_term():
    # A of the docstring, summed literally over kernels covering (u, v).
    p = make_params(2, (5, 4), padding=1, shared=True, scale=0.5)
    F = torch.randn(1, 2, 5, 4, dtype=torch.float64)
    A = fastccn.precompute(p, F.float(), "a")[0].double()
    fp = nnf.pad(F[0], (1, 1, 1, 1))
    ref = torch.zeros(2, 5, 4, dtype=torch.float64)
    (hk, wk), (hp, wp) = p.kernel_size, p.out_hw
    for k, (i, j) in enumerate(p.offsets):
        for u, v in itertools.product(range(i, i + hk), range(j, j + wk)):
            for y, x in itertools.product(range(hp), range(wp)):
                ref[:, u, v] += p.corr_scale * p.w_a[k, y, x] * fp[:, y + u - i, x + v - j]
    torch.testing.assert_close(A, ref, rtol=1e-5, atol=1e-5)


def test_model_ccn_and_generator_kernels():
    from vireid.models.ccn import CCN

    torch.manual_seed(0)
    for kw in (dict(share_fc=False, padding=0, stride=(1, 2)),
               dict(kernel_source="generator", kg_hidden=3, share_fc=False)):
        ccn = CCN(4, (5, 5), **kw)
        with torch.no_grad():
            for fc in (ccn.fc, ccn.fc_b):
                fc.weight.normal_(0, 2.0)
                fc.bias.normal_()
        qF, gF = torch.randn(3, 4, 5, 5), torch.randn(4, 4, 5, 5)
        p = fastccn.ccn_params(ccn)
        with torch.no_grad():
            if ccn.generator is None:
                ref = reference(p, qF, gF, "a")
            else:
                ka, kb = ccn.kernels(qF), ccn.kernels(gF)
                ref = torch.tensor([[float(naive_pair(p, qF[q], gF[g], list(ka[q]), list(kb[g])))
                                     for g in range(4)] for q in range(3)], dtype=torch.float64)
        for backend in ("numba", "sparse", "torch"):
            d = fastccn.score_full(ccn, qF, gF, query_side="a", chunk_size=2, backend=backend)
            torch.testing.assert_close(d.double(), ref, rtol=1e-4, atol=0)


def test_bad_inputs_raise():
    p = make_params(3, (6, 4))
    with pytest.raises(ConfigError, match="query_side"):
        fastccn.score_full(p, torch.rand(1, 3, 6, 4), torch.rand(1, 3, 6, 4), query_side="x")
    with pytest.raises(ConfigError, match=r"\(N, 3, 6, 4\)"):
        fastccn.score_full(p, torch.rand(1, 3, 5, 4), torch.rand(1, 3, 6, 4))
    with pytest.raises(ConfigError, match="backend"):
        fastccn.score_full(p, torch.rand(1, 3, 6, 4), torch.rand(1, 3, 6, 4), backend="cuda")

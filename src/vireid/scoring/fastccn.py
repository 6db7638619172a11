r"""Exact full-mode CCN scoring in folded form: two fused weighted-L1 sums per pair.

The CCN of docs/architecture.md ("Model contract") costs, in its direct form, two
correlations of n contrastive kernels with the C×h×w maps per pair (≈ 14 M multiply-adds at
the paper geometry). Everything between the correlation and the sigmoid is linear, so the
learned FC weights fold into per-image terms computed once, and the per-pair work becomes two
weighted L1 sums. This module computes exactly the same D_RI (up to float32 rounding); the
direct form (``CCN.forward``) stays the reference and the tests compare the two.

Derivation
----------
Notation for one pair (Fa, Fb), each C×h×w. Algorithm 1 gives n kernel corners (i_k, j_k)
(i = 0, sv, … while i + hK ≤ h; j = 0, sh, … while j + wK ≤ w; i outer). P is the zero
padding, Fa_pad[c, Y, X] = Fa[c, Y − P, X − P] inside the map and 0 outside;
h' = h + 2P − hK + 1, w' = w + 2P − wK + 1. W_a (n×h'×w', the FC weight reshaped row-major
over (k, y, x)) and β_a are the FC of direction a; W_b, β_b of direction b (W_b = W_a, β_b =
β_a when ``share_fc``). s is ``corr_scale``.

1. Kernels are crops: K^a_k[c, p, q] = Fa[c, i_k + p, j_k + q], so the contrastive kernel is
   a crop of one map, Δ = |Fa − Fb| (C×h×w):  K^ab_k[c, p, q] = Δ[c, i_k + p, j_k + q].

2. Direction a:
       la = s · Σ_{k,y,x} W_a[k,y,x] · Σ_{c,p,q} Δ[c, i_k+p, j_k+q] · Fa_pad[c, y+p, x+q] + β_a.
   Swap the finite sums and substitute u = i_k + p, v = j_k + q (each (k, p, q) maps to one
   (u, v), and (u, v) is reached from kernel k iff 0 ≤ u − i_k < hK and 0 ≤ v − j_k < wK):
       la = Σ_{c,u,v} Δ[c,u,v] · Aa[c,u,v] + β_a,
       Aa[c,u,v] = s · Σ_{k: (u−i_k, v−j_k) ∈ [0,hK)×[0,wK)} Σ_{y,x} W_a[k,y,x] · Fa_pad[c, y+u−i_k, x+v−j_k].
   Aa depends on Fa and W_a only: it is a per-image term, computed once per image.

3. Direction b is the same with Fb and W_b (Δ is symmetric):
       lb = Σ_{c,u,v} Δ[c,u,v] · Ab[c,u,v] + β_b,  Ab from Fb with W_b.
   So **la pairs Δ with the side-a image's own Aa, lb with the side-b image's own Ab**. In
   cross-modality scoring with IR queries (``query_side="b"``), la uses the gallery image's
   A (from W_a) and lb the query image's A (from W_b); with ``query_side="a"`` the reverse.

4. Aa is linear in Fa and acts on every channel c alike, through the same (h·w)×(h·w)
   matrix: Aa[c] = M_aᵀ vec(Fa[c]) with
       M_a[(Y,X), (u,v)] = s · Σ_k Σ_{y,x} W_a[k,y,x] · [Y = y + u − i_k − P] · [X = x + v − j_k − P]
   over the (k, y, x) whose kernel covers (u, v) and whose padded index falls inside the map
   (padding zeros contribute nothing, which is how padding enters). ``fold_matrix`` builds M
   in float64 by enumerating (k, y, x, p, q); the precompute is then one (N·C, h·w)×(h·w, h·w)
   matrix product (≈ 2 M multiply-adds per image at the paper geometry).
   Positions (u, v) covered by no kernel (possible with strides > 1) have a zero column in M,
   so A = 0 there; they are dropped from the sums (exactly, they contribute 0).

5. D_RI = (σ(la) + σ(lb)) / 2, as in the model. Per pair: two weighted L1 sums over C·h·w
   values (65 536 at the paper geometry) sharing |Fa − Fb|.

Learned kernels (``kernel_source="generator"``): K^a, K^b are no longer crops, so only the
first fold applies: la = Σ_{k,c,p,q} |K^a − K^b|[k,c,p,q] · Ba[k,c,p,q] + β_a with
Ba[k,c,p,q] = s · Σ_{y,x} W_a[k,y,x] · Fa_pad[c, y+p, x+q] (linear in Fa, through the
(h·w)×(n·hK·wK) matrix of ``kg_fold_matrix``), a weighted L1 over n·C·hK·wK values per pair.

Kernel
------
All pairs of a query block and a gallery block reduce to the fused sums
    OX[q, g] = Σ_d |X_q[d] − Y_g[d]| · WX_q[d],   OY[q, g] = Σ_d |X_q[d] − Y_g[d]| · WY_g[d]
computed without materialising any Q×G×D tensor: the numba backend works on cache-sized
(query block × gallery block × d-chunk) tiles with a 2×2 register tile, float32 products
summed in float32 within a d-chunk and in float64 across chunks. The ``sparse`` backend
(:mod:`vireid.scoring.sparse_full`, numba) skips the exact zeros that ReLU features hold; it
is exact but measured slower than the dense kernel here, so only an explicit choice. On CUDA the ``triton`` backend
(:mod:`vireid.scoring.triton_full`) fuses the same sums in a Triton kernel. The torch backend
(the fallback on CUDA without triton, and on CPU without numba) materialises bounded chunks.
"""
from __future__ import annotations

import importlib
import importlib.util
import logging
from dataclasses import dataclass
from typing import Any, Optional

import numpy as np
import torch
from torch import Tensor

from vireid.errors import ConfigError
from vireid.scoring import numba_full

if numba_full.AVAILABLE:  # the zero-skipping kernel is numba code too
    from vireid.scoring import sparse_full

log = logging.getLogger(__name__)

BACKENDS = ("auto", "numba", "sparse", "triton", "torch")
SIDES = ("a", "b")

# Elements materialised at once by the torch backend (per chunk of |x − y|): 2^25 float32 = 128 MiB.
_TORCH_CHUNK_ELEMS = 1 << 25


@dataclass(frozen=True)
class CCNParams:
    """What folded scoring needs from a CCN (geometry and FC weights), as plain values.

    w_a, w_b: (n, h', w') float64 FC weights of directions a and b (equal when shared);
    b_a, b_b: the biases; corr_scale: the resolved s.
    """

    channels: int
    feat_hw: tuple[int, int]
    kernel_size: tuple[int, int]
    stride: tuple[int, int]
    padding: int
    corr_scale: float
    w_a: Tensor
    b_a: float
    w_b: Tensor
    b_b: float
    kernel_source: str = "sample"

    @property
    def offsets(self) -> list[tuple[int, int]]:
        """Algorithm 1's kernel corners (i, j), rows outer."""
        (h, w), (hk, wk), (sv, sh) = self.feat_hw, self.kernel_size, self.stride
        return [(i, j) for i in range(0, h - hk + 1, sv) for j in range(0, w - wk + 1, sh)]

    @property
    def out_hw(self) -> tuple[int, int]:
        (h, w), (hk, wk), p = self.feat_hw, self.kernel_size, self.padding
        return h + 2 * p - hk + 1, w + 2 * p - wk + 1

    def weight(self, side: str) -> tuple[Tensor, float]:
        _check_side(side, "side")
        return (self.w_a, self.b_a) if side == "a" else (self.w_b, self.b_b)


def _check_side(side: str, name: str) -> None:
    if side not in SIDES:
        raise ConfigError(f"{name}: expected 'a' or 'b', got {side!r}")


def ccn_params(ccn: Any) -> CCNParams:
    """Read a :class:`vireid.models.ccn.CCN` (attributes ``fc``, ``fc_b``, geometry) into
    :class:`CCNParams`. A ``CCNParams`` is returned unchanged."""
    if isinstance(ccn, CCNParams):
        return ccn
    n = int(ccn.num_kernels)
    hp, wp = (int(v) for v in ccn.out_hw)

    def fc(layer: Any) -> tuple[Tensor, float]:
        w = layer.weight.detach().to("cpu", torch.float64).reshape(n, hp, wp)
        b = float(layer.bias.detach().cpu().item()) if layer.bias is not None else 0.0
        return w, b

    w_a, b_a = fc(ccn.fc)
    w_b, b_b = fc(ccn.fc_b) if getattr(ccn, "fc_b", None) is not None else (w_a, b_a)
    return CCNParams(int(ccn.channels), tuple(ccn.feat_hw), tuple(ccn.kernel_size),  # type: ignore[arg-type]
                     tuple(ccn.stride), int(ccn.padding), float(ccn.corr_scale),  # type: ignore[arg-type]
                     w_a, b_a, w_b, b_b, str(getattr(ccn, "kernel_source", "sample")))


def _fold_terms(p: CCNParams, side: str) -> tuple[np.ndarray, ...]:
    """Index arrays of every (k, y, x, pk, qk) term whose padded index lies inside the map:
    t = unpadded source position, k, (pk, qk) in-kernel offset, and its weight s·W[k,y,x]."""
    w, _ = p.weight(side)
    (h, wd), (hk, wk), pad = p.feat_hw, p.kernel_size, p.padding
    hp, wp = p.out_hw
    k, y, x, pk, qk = np.meshgrid(np.arange(len(p.offsets)), np.arange(hp), np.arange(wp),
                                  np.arange(hk), np.arange(wk), indexing="ij")
    k, y, x, pk, qk = (a.ravel() for a in (k, y, x, pk, qk))
    ty, tx = y + pk - pad, x + qk - pad  # index into the unpadded map
    keep = (ty >= 0) & (ty < h) & (tx >= 0) & (tx < wd)
    k, y, x, pk, qk, ty, tx = (a[keep] for a in (k, y, x, pk, qk, ty, tx))
    coef = p.corr_scale * w.numpy()[k, y, x]
    return k, pk, qk, ty * wd + tx, coef


def fold_matrix(params: CCNParams, side: str) -> Tensor:
    """M (h·w, h·w) float64 with A[c] = vec(F[c]) @ M (step 4 of the module docstring)."""
    h, wd = params.feat_hw
    offs = np.asarray(params.offsets, dtype=np.int64).reshape(-1, 2)
    k, pk, qk, t, coef = _fold_terms(params, side)
    u = (offs[k, 0] + pk) * wd + (offs[k, 1] + qk)
    m = np.zeros((h * wd, h * wd), dtype=np.float64)
    np.add.at(m, (t, u), coef)
    return torch.from_numpy(m)


def kg_fold_matrix(params: CCNParams, side: str) -> Tensor:
    """Mk (h·w, n·hK·wK) float64 with B[:, c] = vec(F[c]) @ Mk, B laid out (k, p, q)."""
    h, wd = params.feat_hw
    hk, wk = params.kernel_size
    k, pk, qk, t, coef = _fold_terms(params, side)
    m = np.zeros((h * wd, len(params.offsets) * hk * wk), dtype=np.float64)
    np.add.at(m, (t, (k * hk + pk) * wk + qk), coef)
    return torch.from_numpy(m)


def _check_maps(p: CCNParams, F: Tensor, name: str) -> None:
    if F.dim() != 4 or F.shape[1] != p.channels or tuple(F.shape[2:]) != tuple(p.feat_hw):
        raise ConfigError(f"{name}: expected feature maps (N, {p.channels}, {p.feat_hw[0]}, "
                          f"{p.feat_hw[1]}) matching the CCN, got {tuple(F.shape)}")


def precompute(ccn: Any, F: Tensor, side: str) -> Tensor:
    """Per-image folded term A of direction ``side``: F (N, C, h, w) -> A (N, C, h, w) float32.

    ``side="a"`` uses W_a (A multiplies |Fa − Fb| in la when F is the side-a image), ``"b"``
    uses W_b.
    """
    p = ccn_params(ccn)
    _check_maps(p, F, "precompute F")
    m = fold_matrix(p, side).to(F.device, torch.float32)
    n, c, h, w = F.shape
    return (F.reshape(n * c, h * w).float() @ m).reshape(n, c, h, w)


def precompute_kg(ccn: Any, F: Tensor, side: str) -> Tensor:
    """Per-image term B for learned kernels: F (N, C, h, w) -> B (N, n, C, hK, wK) float32,
    laid out like the kernels (N, n, C, hK, wK) it multiplies."""
    p = ccn_params(ccn)
    _check_maps(p, F, "precompute_kg F")
    m = kg_fold_matrix(p, side).to(F.device, torch.float32)
    n_img, c, h, w = F.shape
    hk, wk = p.kernel_size
    b = (F.reshape(n_img * c, h * w).float() @ m).reshape(n_img, c, -1, hk, wk)
    return b.transpose(1, 2).contiguous()


def support(params: CCNParams) -> Tensor:
    """Flat positions u (of h·w) covered by at least one kernel with non-zero weight in
    either direction; the others have A ≡ 0 and are dropped (exactly) from the sums."""
    cols = fold_matrix(params, "a").abs().sum(0) + fold_matrix(params, "b").abs().sum(0)
    return torch.nonzero(cols > 0).flatten()


# --------------------------------------------------------------------------------------
# Fused kernels

def numba_available() -> bool:
    """Whether the fused numba kernel can run here."""
    return numba_full.AVAILABLE


def weighted_l1(X: Tensor, WX: Tensor, Y: Tensor, WY: Tensor, backend: str = "auto",
                mask: Optional[Tensor] = None) -> tuple[Tensor, Tensor]:
    """Fused weighted L1 sums of every (query, gallery) pair.

    X, WX: (Q, D); Y, WY: (G, D). Returns OX, OY (Q, G) float32 with
    OX[q, g] = Σ_d |X[q,d] − Y[g,d]|·WX[q,d] and OY[q, g] = Σ_d |X[q,d] − Y[g,d]|·WY[g,d].
    ``mask`` (Q, G) bool: only pairs where it is True need be exact (others may be 0).
    Memory: the numba backend allocates nothing beyond the outputs; the torch backend
    materialises |X − Y| in chunks of at most 2^25 elements.
    """
    backend = resolve_backend(backend, X, Y)
    if backend == "triton":
        if mask is not None:  # the triton kernel scores whole tiles; a mask only saves work
            log.debug("weighted_l1: mask ignored by the triton backend (all pairs are exact)")
        return _triton_module().weighted_l1_triton(X, WX, Y, WY)
    if backend == "sparse":
        return sparse_full.weighted_l1_sparse(X, WX, Y, WY)
    if backend == "numba":
        return numba_full.weighted_l1_numba(X, WX, Y, WY, mask)
    return weighted_l1_torch(X, WX, Y, WY)


def weighted_l1_torch(X: Tensor, WX: Tensor, Y: Tensor, WY: Tensor,
                       max_elems: int = _TORCH_CHUNK_ELEMS) -> tuple[Tensor, Tensor]:
    """Torch version of :func:`weighted_l1` (any device): materialises |x − y| for a bounded
    block of pairs, then one batched mat-vec per direction."""
    nq, nd = X.shape
    ng = Y.shape[0]
    ox = torch.empty(nq, ng, dtype=torch.float32, device=X.device)
    oy = torch.empty_like(ox)
    gc = max(1, min(ng, max_elems // max(1, nd)))
    qc = max(1, max_elems // max(1, gc * nd))
    for q0 in range(0, nq, qc):
        x, wx = X[q0:q0 + qc].float(), WX[q0:q0 + qc].float()
        for g0 in range(0, ng, gc):
            y, wy = Y[g0:g0 + gc].float(), WY[g0:g0 + gc].float()
            diff = (x[:, None, :] - y[None, :, :]).abs_()              # (qc, gc, D)
            ox[q0:q0 + qc, g0:g0 + gc] = torch.bmm(diff, wx[:, :, None])[..., 0]
            oy[q0:q0 + qc, g0:g0 + gc] = diff.mul_(wy[None]).sum(-1)
    return ox, oy


def weighted_l1_pairs(X: Tensor, WX: Tensor, Y: Tensor, WY: Tensor, qi: Tensor, gi: Tensor,
                      max_elems: int = _TORCH_CHUNK_ELEMS) -> tuple[Tensor, Tensor]:
    """The two weighted L1 sums for listed pairs only (gathered, chunked, any device).

    X, WX: (Q, D); Y, WY: (G, D); qi, gi: (M,) long. Returns ox, oy: (M,) float32.
    """
    m, nd = qi.numel(), X.shape[1]
    ox = torch.empty(m, dtype=torch.float32, device=X.device)
    oy = torch.empty_like(ox)
    step = max(1, max_elems // max(1, nd))
    for s in range(0, m, step):
        a, b = qi[s:s + step], gi[s:s + step]
        diff = (X[a].float() - Y[b].float()).abs_()
        ox[s:s + step] = (diff * WX[a].float()).sum(1)
        oy[s:s + step] = diff.mul_(WY[b].float()).sum(1)
    return ox, oy


_TRITON: Any = None


def triton_available() -> bool:
    """Whether the triton package can be imported (checked without importing it)."""
    try:
        return importlib.util.find_spec("triton") is not None
    except (ImportError, ValueError):  # pragma: no cover - broken installs
        return False


def _triton_module() -> Any:
    # Imported on first use, not at module top: importing triton costs ≈ 1 s (measured here)
    # and must happen after TRITON_INTERPRET is set by whoever wants the interpreter.
    global _TRITON
    if _TRITON is None:
        _TRITON = importlib.import_module("vireid.scoring.triton_full")
    return _TRITON


def density(*ts: Tensor) -> float:
    """Fraction of non-zero values over the given tensors (1.0 for empty input)."""
    n = sum(t.numel() for t in ts)
    if n == 0:
        return 1.0
    return float(sum(int(torch.count_nonzero(t)) for t in ts)) / n


def resolve_backend(backend: str, like: Optional[Tensor] = None,
                    other: Optional[Tensor] = None) -> str:
    """The backend that ``backend`` means for operands like ``like`` (and ``other``).

    ``auto``: CUDA tensors → ``triton`` when importable, else ``torch``; CPU → ``numba``
    when importable, else ``torch``. ``sparse`` (zero-skipping, CPU) is never chosen by
    ``auto``: on the 2-core EPYC it measured slower than ``numba`` at every density tried
    (0.16–0.50; trained features hold 0.62–0.71 non-zeros), see docs/performance.md.
    ``other`` is accepted for symmetry and future density-based choices.
    """
    if backend not in BACKENDS:
        raise ConfigError(f"scoring backend: expected one of {', '.join(BACKENDS)}, got {backend!r}")
    if backend == "auto":
        if like is not None and like.is_cuda:
            return "triton" if triton_available() else "torch"
        return "numba" if numba_full.AVAILABLE else "torch"
    if backend == "triton":
        if not triton_available():
            raise ConfigError("scoring backend 'triton' requested but triton is not importable; "
                              "install the 'gpu' extra (pip install 'vireid[gpu]') or use 'torch'")
        return backend
    if backend in ("numba", "sparse"):
        if not numba_full.AVAILABLE:
            raise ConfigError(f"scoring backend {backend!r} requested but numba is not importable; "
                              "install numba or use backend 'torch'")
        if like is not None and like.is_cuda:
            raise ConfigError(f"scoring backend {backend!r} runs on the CPU; features are on CUDA "
                              "(use backend 'triton', 'torch' or 'auto')")
    return backend


# --------------------------------------------------------------------------------------
# Scoring


class _Operands:
    """Flattened operands of one side: X (N, D) values compared by |·|, and the folded
    weights of each direction computed on demand (W of direction a or b)."""

    def __init__(self, p: CCNParams, ccn: Any, F: Tensor, cols: Optional[Tensor]) -> None:
        self.p, self.ccn, self.F, self.cols = p, ccn, F, cols
        if p.kernel_source == "sample":
            self.X = _select(F.float(), cols)
        else:
            if ccn is None or isinstance(ccn, CCNParams):
                raise ConfigError("learned-kernel (generator) scoring needs the CCN module "
                                  "itself, not only its parameters")
            self.X = ccn.kernels(F.float()).reshape(F.shape[0], -1).float()

    def weight(self, side: str) -> Tensor:
        if self.p.kernel_source == "sample":
            return _select(precompute(self.p, self.F, side), self.cols)
        return precompute_kg(self.p, self.F, side).reshape(self.F.shape[0], -1)


def _select(F: Tensor, cols: Optional[Tensor]) -> Tensor:
    n, c = F.shape[:2]
    flat = F.reshape(n, c, -1)
    if cols is not None:
        flat = flat[:, :, cols.to(F.device)]
    return flat.reshape(n, -1)


def _prepare(ccn: Any, qF: Tensor, gF: Tensor, query_side: str) -> tuple[CCNParams, Optional[Tensor], str]:
    p = ccn_params(ccn)
    _check_side(query_side, "query_side")
    _check_maps(p, qF, "query features")
    _check_maps(p, gF, "gallery features")
    if p.kernel_source not in ("sample", "generator"):
        raise ConfigError(f"ccn.kernel_source: expected 'sample' or 'generator', got {p.kernel_source!r}")
    cols = None
    if p.kernel_source == "sample":
        sup = support(p)
        if sup.numel() < p.feat_hw[0] * p.feat_hw[1]:
            cols = sup
    return p, cols, "a" if query_side == "b" else "b"


def _combine(lx: Tensor, ly: Tensor, p: CCNParams, query_side: str) -> tuple[Tensor, Tensor]:
    """(OX from the query's weight, OY from the gallery's) -> (la, lb) with biases."""
    la, lb = (ly, lx) if query_side == "b" else (lx, ly)
    return la + p.b_a, lb + p.b_b


@torch.no_grad()
def score_full(ccn: Any, qF: Tensor, gF: Tensor, query_side: str = "b", chunk_size: int = 256,
               backend: str = "auto", return_logits: bool = False) -> Tensor | tuple[Tensor, Tensor]:
    """Full-mode distance D_RI of every query–gallery pair (lower = closer).

    qF: (Q, C, h, w), gF: (G, C, h, w). ``query_side`` says which side of the CCN the
    queries are ("b": IR queries against an RGB gallery; "a": the reverse). Queries are
    processed ``chunk_size`` at a time. Returns D (Q, G) float32 on qF's device, or with
    ``return_logits`` the pre-sigmoid (la, lb), each (Q, G).

    Memory beyond the inputs and the output: the gallery's folded weights (size of gF), the
    query chunk's (chunk_size·C·h·w floats) and two (chunk_size, G) logit blocks.
    """
    if chunk_size < 1:
        raise ConfigError(f"chunk_size: expected an integer >= 1, got {chunk_size!r}")
    p, cols, gallery_side = _prepare(ccn, qF, gF, query_side)
    backend = resolve_backend(backend, qF)
    g_ops = _Operands(p, ccn, gF, cols)
    gX, gW = g_ops.X, g_ops.weight(gallery_side)
    # The sparse kernel indexes the gallery's non-zeros once for every query chunk.
    g_sparse = sparse_full.prepare_gallery(gX, gW) if backend == "sparse" else None
    nq, ng = qF.shape[0], gF.shape[0]
    la = torch.empty(nq, ng, dtype=torch.float32, device=qF.device)
    lb = torch.empty_like(la)
    for q0 in range(0, nq, chunk_size):
        q_ops = _Operands(p, ccn, qF[q0:q0 + chunk_size], cols)
        if backend == "sparse":
            ox, oy = sparse_full.weighted_l1_sparse(q_ops.X, q_ops.weight(query_side), g_sparse)
        else:
            ox, oy = weighted_l1(q_ops.X, q_ops.weight(query_side), gX, gW, backend=backend)
        a, b = _combine(ox.to(la.device), oy.to(la.device), p, query_side)
        if return_logits:
            la[q0:q0 + chunk_size], lb[q0:q0 + chunk_size] = a, b
        else:
            # Per chunk, not on the whole matrix: a vectorised sigmoid rounds its SIMD tail
            # differently, so D of a query would depend on how many queries share the call
            # (and a row-sharded run would not equal one process bit for bit).
            la[q0:q0 + chunk_size] = 0.5 * (torch.sigmoid(a) + torch.sigmoid(b))
    return (la, lb) if return_logits else la


@torch.no_grad()
def score_pairs(ccn: Any, qF: Tensor, gF: Tensor, qi: Tensor, gi: Tensor, query_side: str = "b",
                backend: str = "auto") -> Tensor:
    """D_RI of listed pairs only: pair m is (query qi[m], gallery gi[m]).

    qF: (Q, C, h, w), gF: (G, C, h, w), qi, gi: (M,) long. Returns D (M,) float32.
    Per-image terms are computed once; pairs are gathered (no Python loop over pairs). With
    the numba backend the pairs are scored by the blocked kernel restricted to the listed
    pairs (a mask), which keeps the cache blocking.
    """
    p, cols, gallery_side = _prepare(ccn, qF, gF, query_side)
    backend = resolve_backend(backend, qF)
    if backend == "sparse":  # listed pairs: the masked dense kernel keeps its cache blocking
        backend = "numba"
    qi, gi = qi.long().to(qF.device), gi.long().to(qF.device)
    q_ops, g_ops = _Operands(p, ccn, qF, cols), _Operands(p, ccn, gF, cols)
    qX, qW, gX, gW = q_ops.X, q_ops.weight(query_side), g_ops.X, g_ops.weight(gallery_side)
    if backend == "numba":
        mask = torch.zeros(qF.shape[0], gF.shape[0], dtype=torch.bool)
        mask[qi.cpu(), gi.cpu()] = True
        ox, oy = weighted_l1(qX, qW, gX, gW, backend="numba", mask=mask)
        ox, oy = ox[qi.cpu(), gi.cpu()], oy[qi.cpu(), gi.cpu()]
    else:
        ox, oy = weighted_l1_pairs(qX, qW, gX, gW, qi, gi)
    la, lb = _combine(ox, oy, p, query_side)
    return 0.5 * (torch.sigmoid(la) + torch.sigmoid(lb))


@torch.no_grad()
def pair_logits(ccn: Any, fa: Tensor, fb: Tensor, ia: Tensor, ib: Tensor) -> tuple[Tensor, Tensor]:
    """Folded-form twin of ``CCN.logits``: fa (Ba, C, h, w), fb (Bb, C, h, w), ia, ib (M,)
    -> la, lb (M,) float32. Pair m compares fa[ia[m]] (side a) with fb[ib[m]] (side b)."""
    p, cols, _ = _prepare(ccn, fb, fa, "b")
    a_ops, b_ops = _Operands(p, ccn, fa, cols), _Operands(p, ccn, fb, cols)
    ia, ib = ia.long().to(fa.device), ib.long().to(fa.device)
    # queries = side b (fb), gallery = side a (fa): OX uses Ab of fb, OY uses Aa of fa.
    ox, oy = weighted_l1_pairs(b_ops.X, b_ops.weight("b"), a_ops.X, a_ops.weight("a"), ib, ia)
    return _combine(ox, oy, p, "b")


def macs_per_pair(ccn: Any) -> int:
    """Multiply-adds per pair of the folded form (both directions): 2·D, D = C·h·w
    (sample) or n·C·hK·wK (generator), plus the |·| subtraction per value."""
    p = ccn_params(ccn)
    if p.kernel_source == "sample":
        d = p.channels * int(support(p).numel())
    else:
        d = len(p.offsets) * p.channels * p.kernel_size[0] * p.kernel_size[1]
    return 2 * d


def warmup() -> None:
    """Compile (or load from numba's cache) the numba kernel on a tiny input."""
    if numba_full.AVAILABLE:
        x = torch.zeros(3, 5)
        weighted_l1(x, x, x, x, backend="numba")


__all__ = ["CCNParams", "ccn_params", "fold_matrix", "kg_fold_matrix", "precompute",
           "precompute_kg", "support", "weighted_l1", "weighted_l1_pairs", "resolve_backend",
           "score_full", "score_pairs", "pair_logits", "macs_per_pair", "numba_available",
           "triton_available", "density", "warmup", "BACKENDS"]


"""CCN: the Contrastive Correlation Network (paper Sec. III-B, Eqs. (2)–(7), Algorithm 1).

Definition for one pair of maps Fa, Fb (C×h×w), as fixed in docs/architecture.md:

1. Kernels (Algorithm 1): for i = 0, sv, 2sv, … while i + hK ≤ h; for j = 0, sh, … while
   j + wK ≤ w (i outer, j inner): K_k = F[:, i:i+hK, j:j+wK]; n kernels.
2. Contrastive kernels K^ab_k = |K^a_k − K^b_k|.
3. Correlation (conv2d semantics: no flip, stride 1, zero padding ``padding`` on every side):
   Ca[k, y, x] = Σ_{c,p,q} K^ab_k[c, p, q] · Fa_pad[c, y+p, x+q]; Cb likewise from Fb.
   Shape n × h' × w' with h' = h + 2·padding − hK + 1, w' = w + 2·padding − wK + 1.
4. la = W_a · (s · vec(Ca)) + β_a, lb = W_b · (s · vec(Cb)) + β_b, vec row-major over (k, y, x),
   s = ``corr_scale`` (None → 1/(C·hK·wK)); W_a = W_b when ``share_fc`` (the paper's choice).
5. D = (σ(la) + σ(lb)) / 2; high D means "different people".

Options the paper leaves open (named, with defaults):

* ``padding`` = 1: the paper gives none. With 1, an 8×4 map and 3×3 kernels give an 8×4
  response per kernel (a "same" correlation), so every location of F contributes equally.
* ``corr_scale`` = None → 1/(C·hK·wK): the raw correlation is a sum of C·hK·wK products
  (18 432 at the paper geometry) and would saturate the sigmoid at initialisation; dividing
  by the number of terms makes it a mean. It is a constant, so it only rescales W_D.
* The FC has a bias (β), as an ``nn.Linear`` layer does by default.

Kernel count: Algorithm 1 gives n = (⌊(h−hK)/sv⌋+1)·(⌊(w−wK)/sh⌋+1). For an 8×4 map, 3×3
kernels, sh = 1 and sv = 1..5 this is 12, 6, 4, 4, 4. The paper's Fig. 3 text claims
12, 8, 6, 4, 2, which no reading of Algorithm 1 produces; we follow Algorithm 1.

Batched evaluation: the kernels of every image of a batch are cropped once (``unfold``);
pairs are index tensors ``ia``, ``ib``; the per-pair correlation is one grouped convolution
(groups = M pairs). There is no Python loop over pairs or kernels.
"""
from __future__ import annotations

import logging
from collections.abc import Sequence

import torch
import torch.nn.functional as nnf
from torch import Tensor, nn

from vireid.errors import ConfigError

log = logging.getLogger(__name__)

KERNEL_SOURCES = ("sample", "generator")


def _pair(v: int | Sequence[int], name: str) -> tuple[int, int]:
    if isinstance(v, int):
        v = (v, v)
    t = tuple(int(a) for a in v)
    if len(t) != 2 or min(t) < 1:
        raise ConfigError(f"ccn.{name}: expected a positive int or a pair of them, got {v!r}")
    return t  # type: ignore[return-value]


def kernel_offsets(h: int, w: int, kernel_size: int | Sequence[int],
                   stride: int | Sequence[int]) -> list[tuple[int, int]]:
    """Top-left corners (i, j) of Algorithm 1's crops, i outer, j inner.

    stride is (stride_v, stride_h).
    """
    (hk, wk), (sv, sh) = _pair(kernel_size, "kernel_size"), _pair(stride, "stride")
    return [(i, j) for i in range(0, h - hk + 1, sv) for j in range(0, w - wk + 1, sh)]


def num_kernels(h: int, w: int, kernel_size: int | Sequence[int],
                stride: int | Sequence[int]) -> int:
    """n = (⌊(h−hK)/sv⌋+1)·(⌊(w−wK)/sh⌋+1), or 0 when the kernel does not fit."""
    (hk, wk), (sv, sh) = _pair(kernel_size, "kernel_size"), _pair(stride, "stride")
    if hk > h or wk > w:
        return 0
    return ((h - hk) // sv + 1) * ((w - wk) // sh + 1)


def sample_kernels(feat: Tensor, kernel_size: int | Sequence[int],
                   stride: int | Sequence[int]) -> Tensor:
    """Algorithm 1 on a batch: feat (B, C, h, w) -> kernels (B, n, C, hK, wK).

    ``unfold`` enumerates windows in the same order as Algorithm 1 (rows outer, columns inner)
    and lays each window out as (C, hK, wK), so a reshape gives the kernels.
    """
    hk, wk = _pair(kernel_size, "kernel_size")
    b, c, h, w = feat.shape
    n = num_kernels(h, w, (hk, wk), stride)
    if n == 0:
        raise ConfigError(f"ccn.kernel_size {hk}x{wk} does not fit the {h}x{w} feature map")
    cols = nnf.unfold(feat, (hk, wk), stride=_pair(stride, "stride"))  # (B, C·hK·wK, n)
    return cols.transpose(1, 2).reshape(b, n, c, hk, wk)


class KernelGenerator(nn.Module):
    """Learned kernel generator (variant "KG", paper Table IV), in the style of Han et al.,
    "Face Recognition with Contrastive Convolution", ECCV 2018 (the paper's ref. [18]).

    Design (ours; the paper gives only its size, ~24M extra parameters at its geometry):

    1. ``reduce``: 1×1 conv C → r, ReLU — compress F to a small hidden map;
    2. ``mix``: 3×3 conv r → r (zero padding 1), ReLU — each location sees its neighbourhood;
    3. per-location kernel extraction: crop hK×wK windows of the hidden map at Algorithm 1's
       locations (so there are exactly as many kernels as with sampling, at the same places);
    4. ``expand``: one Linear r·hK·wK → C·hK·wK shared by all locations, reshaped to a C×hK×wK
       kernel — like ref. [18]'s generators, each kernel is a learned function of a local
       patch of the feature map rather than a crop of it.

    With ``hidden`` = None, r = max(1, 9·C // 128) (144 at C = 2048). At the paper geometry
    (C = 2048, 3×3 kernels) this adds 295k + 187k + 23.9M ≈ 24.4M parameters, matching the
    49M vs 25M of Table IV.

    forward: feat (B, C, h, w) -> kernels (B, n, C, hK, wK).
    """

    def __init__(self, channels: int, kernel_size: tuple[int, int], stride: tuple[int, int],
                 hidden: int | None = None) -> None:
        super().__init__()
        r = max(1, 9 * channels // 128) if hidden is None else int(hidden)
        self.channels, self.kernel_size, self.stride, self.hidden = channels, kernel_size, stride, r
        hk, wk = kernel_size
        self.reduce = nn.Conv2d(channels, r, 1)
        self.mix = nn.Conv2d(r, r, 3, padding=1)
        self.expand = nn.Linear(r * hk * wk, channels * hk * wk)

    def forward(self, feat: Tensor) -> Tensor:
        hid = nnf.relu(self.mix(nnf.relu(self.reduce(feat))))
        patches = sample_kernels(hid, self.kernel_size, self.stride)  # (B, n, r, hK, wK)
        b, n = patches.shape[:2]
        hk, wk = self.kernel_size
        return self.expand(patches.reshape(b, n, -1)).reshape(b, n, self.channels, hk, wk)


class CCN(nn.Module):
    """Contrastive Correlation Network over maps of a fixed size (the FC needs it).

    Args:
        channels: C of the feature maps.
        feat_hw: (h, w) of the feature maps.
        kernel_size: (hK, wK), paper 3×3.
        stride: (stride_v, stride_h) of Algorithm 1, paper 1×1.
        padding: zero padding of the correlation (default 1, see module docstring).
        share_fc: one W_D for both directions (paper, default) or W_a / W_b (Table VI).
        kernel_source: ``"sample"`` (Algorithm 1, parameter-free) or ``"generator"`` (KG).
        corr_scale: constant s multiplying the correlation; None → 1/(C·hK·wK).
        kg_hidden: hidden width r of the KG generator (None → see KernelGenerator).
        fc_bias: a bias β in W_D (not in Eq. 5; on by default, ``ccn.fc_bias``).

    Parameters: ``fc`` (W_D, or W_a when unshared), ``fc_b`` (W_b, only when unshared),
    ``generator`` (only for KG).
    """

    def __init__(self, channels: int, feat_hw: Sequence[int],
                 kernel_size: int | Sequence[int] = (3, 3), stride: int | Sequence[int] = (1, 1),
                 padding: int = 1, share_fc: bool = True, kernel_source: str = "sample",
                 corr_scale: float | None = None, kg_hidden: int | None = None,
                 fc_bias: bool = True) -> None:
        super().__init__()
        self.channels = int(channels)
        self.feat_hw = _pair(tuple(feat_hw), "feat_hw")
        self.kernel_size = _pair(kernel_size, "kernel_size")
        self.stride = _pair(stride, "stride")
        if int(padding) < 0:
            raise ConfigError(f"ccn.padding: expected an int >= 0, got {padding!r}")
        self.padding = int(padding)
        if kernel_source not in KERNEL_SOURCES:
            raise ConfigError(
                f"ccn.kernel_source: expected one of {', '.join(KERNEL_SOURCES)}, got {kernel_source!r}"
            )
        self.kernel_source = kernel_source
        self.share_fc = bool(share_fc)
        h, w = self.feat_hw
        hk, wk = self.kernel_size
        self.num_kernels = num_kernels(h, w, self.kernel_size, self.stride)
        if self.num_kernels == 0:
            raise ConfigError(f"ccn.kernel_size {hk}x{wk} does not fit the {h}x{w} feature map")
        self.out_hw = (h + 2 * self.padding - hk + 1, w + 2 * self.padding - wk + 1)
        if corr_scale is not None and not corr_scale > 0:
            raise ConfigError(f"ccn.corr_scale: expected a positive number or null, got {corr_scale!r}")
        self.corr_scale = float(corr_scale) if corr_scale is not None else 1.0 / (self.channels * hk * wk)
        self.fc_in = self.num_kernels * self.out_hw[0] * self.out_hw[1]
        self.fc = nn.Linear(self.fc_in, 1, bias=fc_bias)
        self.fc_b = None if self.share_fc else nn.Linear(self.fc_in, 1, bias=fc_bias)
        self.generator = (KernelGenerator(self.channels, self.kernel_size, self.stride, kg_hidden)
                          if kernel_source == "generator" else None)

    def extra_repr(self) -> str:
        return (f"channels={self.channels}, feat_hw={self.feat_hw}, kernel_size={self.kernel_size}, "
                f"stride={self.stride}, padding={self.padding}, num_kernels={self.num_kernels}, "
                f"share_fc={self.share_fc}, kernel_source={self.kernel_source!r}, "
                f"corr_scale={self.corr_scale:.6g}")

    def _check(self, feat: Tensor, name: str) -> None:
        if feat.dim() != 4 or feat.shape[1] != self.channels or tuple(feat.shape[2:]) != self.feat_hw:
            raise ConfigError(
                f"CCN input {name}: expected (B, {self.channels}, {self.feat_hw[0]}, "
                f"{self.feat_hw[1]}), got {tuple(feat.shape)}"
            )

    def kernels(self, feat: Tensor) -> Tensor:
        """Personalised kernels: feat (B, C, h, w) -> (B, n, C, hK, wK)."""
        if self.generator is not None:
            return self.generator(feat)
        return sample_kernels(feat, self.kernel_size, self.stride)

    def correlate(self, feat: Tensor, kernels: Tensor) -> Tensor:
        """Per-pair correlation: feat (M, C, h, w), kernels (M, n, C, hK, wK) -> (M, n, h', w').

        One grouped conv2d: the M pairs are the groups, so pair m's n kernels only see
        pair m's C input channels.
        """
        m, c, h, w = feat.shape
        n = kernels.shape[1]
        out = nnf.conv2d(feat.reshape(1, m * c, h, w), kernels.reshape(m * n, c, *kernels.shape[3:]),
                         padding=self.padding, groups=m)
        return out.reshape(m, n, out.shape[-2], out.shape[-1])

    def logits_from_kernels(self, fa: Tensor, fb: Tensor, ka: Tensor, kb: Tensor) -> tuple[Tensor, Tensor]:
        """Pre-sigmoid scores for aligned pairs: fa, fb (M, C, h, w); ka, kb (M, n, C, hK, wK)."""
        kab = (ka - kb).abs()
        ca = self.correlate(fa, kab).flatten(1) * self.corr_scale
        cb = self.correlate(fb, kab).flatten(1) * self.corr_scale
        fc_b = self.fc if self.fc_b is None else self.fc_b
        return self.fc(ca).squeeze(1), fc_b(cb).squeeze(1)

    def logits(self, fa: Tensor, fb: Tensor, ia: Tensor, ib: Tensor) -> tuple[Tensor, Tensor]:
        """fa: (Ba, C, h, w), fb: (Bb, C, h, w), ia, ib: (M,) long -> la, lb: (M,).

        Pair m compares fa[ia[m]] (side a, RGB in cross-modality pairs) with fb[ib[m]].
        Kernels are computed once per image, then gathered per pair.
        """
        self._check(fa, "fa")
        self._check(fb, "fb")
        ka = self.kernels(fa)
        kb = ka if fb is fa else self.kernels(fb)
        return self.logits_from_kernels(fa[ia], fb[ib], ka[ia], kb[ib])

    def forward(self, fa: Tensor, fb: Tensor, ia: Tensor, ib: Tensor) -> Tensor:
        """D (M,) = (σ(la) + σ(lb)) / 2; high = different people."""
        la, lb = self.logits(fa, fb, ia, ib)
        return 0.5 * (torch.sigmoid(la) + torch.sigmoid(lb))

    def macs_per_pair(self) -> int:
        """Multiply-adds of the direct form for one pair, both directions: the two
        correlations (n·h'·w'·C·hK·wK each) and the two FC dot products (n·h'·w' each).
        Excludes |K_a − K_b| (subtractions) and, for KG, the generator, which runs once per
        image, not per pair. Paper geometry with padding 1: 2·(12·32·18432 + 384) ≈ 14.2M.
        """
        hk, wk = self.kernel_size
        per_dir = self.fc_in * self.channels * hk * wk + self.fc_in
        return 2 * per_dir

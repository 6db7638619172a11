"""The full model: DSCSN backbone + CCN + shared ID classifier, built from a Config.

The backbone is the entry ``model.arch`` of :data:`vireid.models.backbones.BACKBONES`; its
channels and feature-map size (from the entry, no forward pass) size the CCN and classifier.

With ``model.bnneck`` (AGW, not in the paper) a BNNeck sits between the global feature G and
the classifier: BatchNorm1d with a frozen zero bias (:class:`vireid.models.agw.BNNeck`,
weights ``neck.bn.*``). Training losses get G before the neck (triplet losses use it as AGW
does); :meth:`ReIDModel.classify` passes it through the neck; and
:meth:`ReIDModel.forward_features` returns the BN'd feature, which is what evaluation scores
(AGW's test mode: ``l2norm(bottleneck(x_pool))``; cosine scoring normalises anyway).
"""
from __future__ import annotations

import logging
from typing import Any

import torch
from torch import Tensor, nn

from vireid.models.agw import BNNeck
from vireid.models.assets import ASSETS, resolve_pretrained
from vireid.models.ccn import CCN
from vireid.models.backbones import get_backbone
from vireid.models.dscsn import DSCSN

log = logging.getLogger(__name__)


class ReIDModel(nn.Module):
    """DSCSN + CCN + ID classifier W_ID.

    The classifier is ``nn.Linear(C, num_classes, bias=False)``: Eqs. (9)–(10) are
    p = softmax(W_ID · G) with no bias, and it is shared by both modalities.
    """

    def __init__(self, backbone: DSCSN, ccn: CCN, num_classes: int, bnneck: bool = False) -> None:
        super().__init__()
        self.backbone = backbone
        self.ccn = ccn
        # Without a neck nothing is drawn from the global RNG here, so the classifier's
        # initial weights (and hence every default run) are what they were before bnneck.
        self.neck = BNNeck(backbone.out_channels) if bnneck else None
        self.classifier = nn.Linear(backbone.out_channels, num_classes, bias=False)
        if not self.classifier.weight.is_meta:  # meta: shapes only (see model_info)
            nn.init.normal_(self.classifier.weight, std=0.001)
        self.num_classes = int(num_classes)

    def embed(self, g: Tensor) -> Tensor:
        """G (B, C) -> the feature evaluation scores: G itself, or BN(G) with a BNNeck."""
        return g if self.neck is None else self.neck.bn(g)

    def global_of(self, f: Tensor) -> Tensor:
        """The evaluation feature of a map: F (B, C, h, w) -> embed(pool(F)) (B, C); what
        :meth:`forward_features` returns as G, for maps averaged outside the model (flip)."""
        return self.embed(self.backbone.global_feature(f))

    def forward_features(self, x: Tensor, modality: str) -> tuple[Tensor, Tensor]:
        """x: (B, 3, H, W) -> F (B, C, h, w), G (B, C) (BN'd when model.bnneck)."""
        f, g = self.backbone(x, modality)
        return f, self.embed(g)

    def forward_pair(self, x_rgb: Tensor, x_ir: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Both modalities in one pass (shared BN sees both): F_rgb, G_rgb, F_ir, G_ir, with
        G before any BNNeck (what triplet losses use; :meth:`classify` applies the neck)."""
        return self.backbone.forward_pair(x_rgb, x_ir)

    def classify(self, g: Tensor) -> Tensor:
        """G (B, C) before the neck -> ID logits (B, num_classes) (through the BNNeck when
        model.bnneck, as AGW's classifier reads the BN'd feature)."""
        return self.classifier(self.embed(g))

    def forward(self, x: Tensor, modality: str) -> tuple[Tensor, Tensor]:
        return self.forward_features(x, modality)


def _ccn_kwargs(cfg: Any) -> dict[str, Any]:
    c = cfg.ccn
    return dict(kernel_size=tuple(c.kernel_size), stride=tuple(c.stride), padding=c.padding,
                share_fc=c.share_fc, kernel_source=c.kernel_source, corr_scale=c.corr_scale,
                kg_hidden=c.kg_hidden, fc_bias=c.fc_bias)


def build_model(cfg: Any, num_classes: int, load_pretrained: bool = True) -> ReIDModel:
    """Build the model of ``cfg`` (a vireid.config.Config) with ``num_classes`` identities.

    ``load_pretrained=False`` skips ``cfg.model.pretrained`` (e.g. when a checkpoint will
    overwrite all weights anyway, or only shapes are needed).
    """
    m = cfg.model
    pretrained = m.pretrained if load_pretrained else None
    if pretrained in ASSETS:  # weights packaged with vireid, checked against their digest
        pretrained = str(resolve_pretrained(pretrained, m.arch, m.width))
    backbone = DSCSN(get_backbone(m.arch), shared_stages=m.shared_stages,
                     last_stride=m.last_stride, width=m.width, pretrained=pretrained, pool=m.pool,
                     non_local=m.non_local, shared_bn=m.shared_bn)
    # The CCN's FC needs the map size; the backbone entry knows it without a forward pass.
    hw = backbone.feature_hw(cfg.data.height, cfg.data.width)
    ccn = CCN(backbone.out_channels, hw, **_ccn_kwargs(cfg))
    return ReIDModel(backbone, ccn, num_classes, bnneck=m.bnneck)


def _count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def model_info(cfg: Any, num_classes: int) -> dict[str, Any]:
    """Size facts of the configured model, without loading weights or running it.

    Built on the meta device (no memory, no init cost). Keys: params_total,
    params_without_classifier, feature_map [C, h, w], num_kernels, ccn_macs_per_pair.
    """
    with torch.device("meta"):
        model = build_model(cfg, num_classes, load_pretrained=False)
    total = _count(model)
    h, w = model.ccn.feat_hw
    return {
        "params_total": total,
        "params_without_classifier": total - _count(model.classifier),
        "feature_map": [model.backbone.out_channels, h, w],
        "num_kernels": model.ccn.num_kernels,
        "ccn_macs_per_pair": model.ccn.macs_per_pair(),
    }

"""The backbone registry: ``model.arch`` → everything vireid asks about a backbone.

A backbone is a network cut into **stages** that run one after the other: stage ``i`` takes
stage ``i − 1``'s output, the first takes the image (B, 3, H, W) and the last gives the
feature map F (B, C, h, w). The DSCSN (:mod:`vireid.models.dscsn`) gives each modality its
own copy of the first stages and shares the rest; ``model.shared_stages`` says how many are
shared, counted from the end, in ResNet's stage numbering (paper Table III):

==============  ============================  ==========================================
shared_stages   shared stages (from the end)  ResNet (stages stem, layer1 … layer4)
==============  ============================  ==========================================
``none``        0 (two networks)              –
``4``           1                             layer4
``3-4``         2                             layer3, layer4 (paper)
``2-4``         3                             layer2 … layer4
``1-4``         4                             layer1 … layer4
``all``         every stage (one network)     stem, layer1 … layer4
==============  ============================  ==========================================

A backbone with n stages supports ``none``, ``all`` and the values that share fewer than n
stages (a value that would share all n is ``all``'s job); an entry may narrow this further
(:attr:`BackboneSpec.shared_stages`). A value it does not support is a ConfigError naming
the ones it does, at resolve time (:func:`vireid.engine.resolve.resolve_names`) and when
the model is built.

An entry (:class:`BackboneSpec`) carries how to build the network (from
:class:`BackboneOptions`: width multiplier and stride of the last stage), its stage names,
its output channels C, the size (h, w) of F for an input size, how its pretrained weights
load (``model.pretrained``), and how it takes AGW's non-local blocks (``model.non_local``);
global pooling (``model.pool``), the BNNeck and the shared-stage batch norm
(``model.shared_bn``) are the DSCSN's and work with every backbone.

Adding a backbone is one module and one registration (docs/architecture.md, "How to add a
backbone")::

    from vireid import register_backbone   # or vireid.models.backbones

    @register_backbone("tiny-cnn", stages=("s1", "s2", "s3"), out_channels=64,
                       feature_hw=lambda h, w, o: (h // 8, w // 8))
    def tiny_cnn(opts):
        return TinyCNN(opts.width)          # an nn.Module with attributes s1, s2, s3

Built in: ``resnet18``, ``resnet34``, ``resnet50`` (torchvision-keyed, ImageNet weights
through :func:`vireid.models.resnet.load_imagenet_weights`).
"""
from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Optional, Union

from torch import nn

from vireid.errors import ConfigError
from vireid.models import resnet as R
from vireid.models.agw import AGW_NON_LAYERS, insert_non_local
from vireid.utils.registry import Registry

#: ``model.shared_stages`` value → number of stages shared, counted from the last one
#: (None: every stage). The values are ResNet's stage numbers, kept for every backbone so
#: that configs and the paper's Table III read the same.
SHARED_TAIL: dict[str, Optional[int]] = {
    "none": 0, "4": 1, "3-4": 2, "2-4": 3, "1-4": 4, "all": None,
}


@dataclass(frozen=True)
class BackboneOptions:
    """What a backbone's build function is given (from ``model.width``, ``model.last_stride``).

    width: channel-width multiplier (1.0 = the published network); last_stride: stride of
    the last stage (1 or 2; a backbone without such a stride may ignore it).
    """

    width: float = 1.0
    last_stride: int = 2


#: build(options) -> the network (random init); its stages are found by ``stage_modules``.
BuildFn = Callable[[BackboneOptions], nn.Module]
#: feature_hw(height, width, options) -> (h, w) of the last stage's map for that input size.
FeatureHwFn = Callable[[int, int, BackboneOptions], tuple[int, int]]
#: load_pretrained(network, source): ``source`` is "imagenet" or a path to a weights file.
LoadFn = Callable[[nn.Module, str], None]


def _stage_attributes(net: nn.Module, stages: Sequence[str]) -> dict[str, nn.Module]:
    """Default ``stage_modules``: stage ``s`` is the attribute ``net.s``."""
    out = {}
    for s in stages:
        mod = getattr(net, s, None)
        if not isinstance(mod, nn.Module):
            raise ConfigError(f"backbone {type(net).__name__}: expected a module attribute "
                              f"{s!r} for stage {s!r}, found {type(mod).__name__}")
        out[s] = mod
    return out


@dataclass(frozen=True)
class BackboneSpec:
    """One registered backbone (``model.arch``).

    Attributes:
        name: the ``model.arch`` value.
        build: ``build(BackboneOptions) -> nn.Module``, the network with random weights.
        stages: stage names in forward order (what ``model.shared_stages`` splits); they are
            the keys under ``rgb.`` / ``ir.`` / ``shared.`` in the model's state dict.
        out_channels: ``out_channels(options) -> C`` of the last stage.
        feature_hw: ``feature_hw(height, width, options) -> (h, w)`` of the last stage's map.
        load_pretrained: ``load_pretrained(network, source)`` loads weights into the network
            ``build`` made (before the stages are split); None: the backbone has none, and
            ``model.pretrained`` must be ``none``.
        non_local: ``non_local(network)`` inserts AGW's non-local blocks in place (after
            pretrained weights are loaded, so weight files need no non-local keys); None:
            ``model.non_local`` is not available for this backbone.
        stage_modules: ``stage_modules(network) -> {stage: module}``; default: attributes
            named like the stages.
        shared_stages: the ``model.shared_stages`` values supported; None: every value
            that fits the number of stages (module docstring).
        description: one line for listings.
    """

    name: str
    build: BuildFn
    stages: tuple[str, ...]
    out_channels: Callable[[BackboneOptions], int]
    feature_hw: FeatureHwFn
    load_pretrained: Optional[LoadFn] = None
    non_local: Optional[Callable[[nn.Module], None]] = None
    stage_modules: Optional[Callable[[nn.Module], dict[str, nn.Module]]] = None
    shared_stages: Optional[tuple[str, ...]] = None
    description: str = ""

    # ------------------------------------------------------------------ stage split
    def supported_shared_stages(self) -> tuple[str, ...]:
        """The ``model.shared_stages`` values this backbone accepts, in SHARED_TAIL order."""
        if self.shared_stages is not None:
            return tuple(v for v in SHARED_TAIL if v in self.shared_stages)
        n = len(self.stages)
        return tuple(v for v, tail in SHARED_TAIL.items() if tail is None or tail < n)

    def split(self, shared_stages: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """``shared_stages`` value -> (modality-specific stage names, shared stage names).

        Raises:
            ConfigError: a value this backbone does not support (naming the ones it does).
        """
        key = str(shared_stages)
        supported = self.supported_shared_stages()
        if key not in supported:
            raise ConfigError(f"model.shared_stages: expected one of {', '.join(supported)} for "
                              f"model.arch={self.name} ({len(self.stages)} stages: "
                              f"{', '.join(self.stages)}), found {shared_stages!r}")
        tail = SHARED_TAIL[key]
        first_shared = 0 if tail is None else len(self.stages) - tail
        return self.stages[:first_shared], self.stages[first_shared:]

    # ------------------------------------------------------------------ checks
    def check(self, shared_stages: Optional[str], pretrained: Union[str, os.PathLike, None],
              non_local: bool) -> None:
        """Refuse options this backbone cannot honour (ConfigError naming the option): an
        unsupported ``shared_stages`` value (None: not checked), pretrained weights without
        a loader, non-local blocks without an inserter. ``pretrained`` None/"none": random
        init."""
        if shared_stages is not None:
            self.split(shared_stages)
        if _wants_weights(pretrained) and self.load_pretrained is None:
            raise ConfigError(f"model.pretrained: model.arch={self.name} has no pretrained "
                              f"weights to load, found {str(pretrained)!r}; set "
                              f"model.pretrained=none")
        if non_local and self.non_local is None:
            raise ConfigError(f"model.non_local: model.arch={self.name} has no non-local "
                              f"blocks; set model.non_local=false")

    # ------------------------------------------------------------------ building
    def make_stages(self, options: BackboneOptions,
                    pretrained: Union[str, os.PathLike, None] = None,
                    non_local: bool = False) -> dict[str, nn.Module]:
        """Build the network, load ``pretrained`` weights into it, insert non-local blocks,
        and return its stages ``{name: module}`` in forward order."""
        self.check(None, pretrained, non_local)
        net = self.build(options)
        if _wants_weights(pretrained) and self.load_pretrained is not None:
            self.load_pretrained(net, str(pretrained))
        if non_local and self.non_local is not None:
            self.non_local(net)
        parts = (self.stage_modules or (lambda m: _stage_attributes(m, self.stages)))(net)
        if list(parts) != list(self.stages):
            raise ConfigError(f"backbone {self.name}: stage_modules gave stages "
                              f"{list(parts)}, expected {list(self.stages)}")
        return parts

    def feature_size(self, height: int, width: int, options: BackboneOptions) -> tuple[int, int]:
        """(h, w) of F for a height×width input, checked to be at least 1×1."""
        h, w = (int(v) for v in self.feature_hw(int(height), int(width), options))
        if h < 1 or w < 1:
            raise ConfigError(f"data.height x data.width: {height}x{width} is too small for "
                              f"model.arch={self.name} (its feature map would be {h}x{w})")
        return h, w


def _constant(value: int, _options: BackboneOptions) -> int:
    return value  # a module-level function (not a lambda), so a spec pickles


def _wants_weights(pretrained: Union[str, os.PathLike, None]) -> bool:
    return pretrained not in (None, "", "none", False)


#: ``model.arch`` → :class:`BackboneSpec`.
BACKBONES: Registry[BackboneSpec] = Registry("backbone", "model.arch")


def register_backbone(name: str, *, stages: Sequence[str],
                      out_channels: Union[int, Callable[[BackboneOptions], int]],
                      feature_hw: FeatureHwFn,
                      load_pretrained: Optional[LoadFn] = None,
                      non_local: Optional[Callable[[nn.Module], None]] = None,
                      stage_modules: Optional[Callable[[nn.Module], dict[str, nn.Module]]] = None,
                      shared_stages: Optional[Sequence[str]] = None,
                      description: str = "", replace: bool = False) -> Callable[[BuildFn], BuildFn]:
    """Decorator registering ``build(BackboneOptions) -> nn.Module`` as ``model.arch == name``
    (public: ``vireid.register_backbone``).

    Args:
        stages: stage names in forward order (at least one; unique).
        out_channels: C of the last stage, or ``fn(options) -> C`` when it depends on the
            width.
        feature_hw: ``fn(height, width, options) -> (h, w)``, the last stage's map size.
        load_pretrained, non_local, stage_modules, shared_stages, description: see
            :class:`BackboneSpec`.
        replace: replace an entry of the same name (otherwise a second one is refused).
    """
    stages = tuple(stages)
    if not stages or len(set(stages)) != len(stages) or not all(
            isinstance(s, str) and s and "." not in s for s in stages):
        raise ConfigError(f"backbone {name}: stages: expected unique non-empty names without "
                          f"'.', found {list(stages)}")
    if shared_stages is not None:
        unknown = [v for v in shared_stages if v not in SHARED_TAIL]
        if unknown:
            raise ConfigError(f"backbone {name}: shared_stages: expected values among "
                              f"{', '.join(SHARED_TAIL)}, found {unknown}")
    channels = out_channels if callable(out_channels) else partial(_constant, int(out_channels))

    def deco(build: BuildFn) -> BuildFn:
        BACKBONES.register(name, BackboneSpec(
            name=name, build=build, stages=stages, out_channels=channels, feature_hw=feature_hw,
            load_pretrained=load_pretrained, non_local=non_local, stage_modules=stage_modules,
            shared_stages=None if shared_stages is None else tuple(shared_stages),
            description=description), replace=replace)
        return build
    return deco


def get_backbone(name: str) -> BackboneSpec:
    """The registered backbone ``name``; ConfigError naming the backbones there are otherwise."""
    return BACKBONES.get(name)


# --------------------------------------------------------------------------- ResNet entries
# Everything ResNet-specific that the rest of vireid needs lives in these entries: the
# stage cut (the stem is conv1/bn1/relu/maxpool), the stride arithmetic, torchvision-keyed
# ImageNet weights, and where AGW puts its non-local blocks.
RESNET_STAGES = ("stem", "layer1", "layer2", "layer3", "layer4")


def _resnet_stage_modules(net: nn.Module) -> dict[str, nn.Module]:
    # A Sequential of the torchvision modules themselves: keys stem.0 (conv1), stem.1 (bn1).
    stem = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool)
    return {"stem": stem, **{s: getattr(net, s) for s in RESNET_STAGES[1:]}}


def _resnet_non_local(net: nn.Module) -> None:
    # AGW's counts are for ResNet-50's 3/4/6/3 blocks; ResNet-18 has 2 per stage.
    layers = RESNET_STAGES[1:]
    counts = [min(c, len(getattr(net, s))) for c, s in zip(AGW_NON_LAYERS, layers)]
    insert_non_local(net, counts, layers)


def _resnet_load(net: nn.Module, source: str) -> None:
    R.load_imagenet_weights(net, None, source)  # type: ignore[arg-type]


# Module-level functions bound with partial (not lambdas), so that a spec, and a model
# holding one, can be pickled.
def _resnet_build(arch: str, o: BackboneOptions) -> nn.Module:
    return R.ResNet(arch, last_stride=o.last_stride, width=o.width, num_classes=None)


def _resnet_channels(arch: str, o: BackboneOptions) -> int:
    return R.resnet_out_channels(arch, o.width)


def _resnet_hw(height: int, width: int, o: BackboneOptions) -> tuple[int, int]:
    return R.feature_hw(height, width, o.last_stride)


for _arch in R.ARCHS:
    register_backbone(
        _arch, stages=RESNET_STAGES, out_channels=partial(_resnet_channels, _arch),
        feature_hw=_resnet_hw, load_pretrained=_resnet_load, non_local=_resnet_non_local,
        stage_modules=_resnet_stage_modules,
        description=f"torchvision-keyed {_arch} (ImageNet weights: model.pretrained=imagenet)",
    )(partial(_resnet_build, _arch))

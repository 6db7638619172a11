"""ResNet-18/34/50 with torchvision's module names, so the official ImageNet checkpoints load as-is.

Module and state-dict names follow torchvision exactly: ``conv1, bn1, relu, maxpool,
layer1..layer4, avgpool, fc``; blocks ``conv1/bn1/conv2/bn2[/conv3/bn3]`` and
``downsample.0`` (1×1 conv) / ``downsample.1`` (BN). Like torchvision v1.5, the stride of a
Bottleneck sits on its 3×3 conv.

Two options torchvision does not have:

* ``last_stride``: stride of the first block of ``layer4`` (1 or 2). ReID code commonly uses 1
  for a larger map; the paper uses 2 (8×4 map for a 256×128 input).
* ``width``: multiplier of the base width 64 (stage widths 64·width … 512·width). Keys stay the
  same, only shapes change, so ``width != 1`` cannot load ImageNet weights (a clear error).
"""
from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path

import torch
from torch import Tensor, nn

from vireid.errors import CheckpointError, ConfigError
from vireid.utils.messages import echo, short_load_reason

log = logging.getLogger(__name__)

#: Official torchvision ImageNet checkpoints (IMAGENET1K_V1 weights).
IMAGENET_URLS: dict[str, str] = {
    "resnet18": "https://download.pytorch.org/models/resnet18-f37072fd.pth",
    "resnet34": "https://download.pytorch.org/models/resnet34-b627a593.pth",
    "resnet50": "https://download.pytorch.org/models/resnet50-0676ba61.pth",
}

ARCHS = tuple(IMAGENET_URLS)


class BasicBlock(nn.Module):
    """Two 3×3 convs (ResNet-18/34). x: (B, in_ch, H, W) -> (B, planes, H/stride, W/stride)."""

    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1,
                 downsample: nn.Module | None = None) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    """1×1 → 3×3 (strided) → 1×1 block (ResNet-50). Output channels planes·4."""

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1,
                 downsample: nn.Module | None = None) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


_SPECS: dict[str, tuple[type[nn.Module], list[int]]] = {
    "resnet18": (BasicBlock, [2, 2, 2, 2]),
    "resnet34": (BasicBlock, [3, 4, 6, 3]),
    "resnet50": (Bottleneck, [3, 4, 6, 3]),
}

_DEPTH_TO_ARCH = {18: "resnet18", 34: "resnet34", 50: "resnet50"}


def arch_name(depth: int | str) -> str:
    """Normalise ``50`` / ``"50"`` / ``"resnet50"`` to ``"resnet50"``; ConfigError otherwise."""
    if isinstance(depth, str) and depth in _SPECS:
        return depth
    try:
        return _DEPTH_TO_ARCH[int(depth)]
    except (KeyError, ValueError, TypeError):
        raise ConfigError(
            f"model.arch: expected one of {', '.join(ARCHS)} (or depth 18/34/50), got {depth!r}"
        ) from None


def _base_width(width: float) -> int:
    """Channels of the stem for a width multiplier (64 at width 1)."""
    return max(1, int(round(64 * width)))


def resnet_out_channels(depth: int | str, width: float = 1.0) -> int:
    """C of layer4's map: 512·expansion channels at width 1 (512 for ResNet-18/34, 2048 for
    ResNet-50), scaled through the stem width ``round(64·width)``."""
    block, _ = _SPECS[arch_name(depth)]
    return _base_width(width) * 8 * block.expansion


class ResNet(nn.Module):
    """torchvision-keyed ResNet.

    Args:
        depth: 18, 34, 50 or "resnet18"/"resnet34"/"resnet50".
        last_stride: stride of layer4 (1 or 2).
        width: base-width multiplier (stage widths ``round(64·width)·2^s``); must be > 0.
        num_classes: size of ``fc``; ``None`` builds no ``fc`` (feature extractor).

    forward: x (B, 3, H, W) -> logits (B, num_classes), or the pooled feature (B, C) when
    there is no fc. ``features(x)`` returns the stage-4 map (B, C, H/32·ls, W/32·ls).
    """

    def __init__(self, depth: int | str = 50, last_stride: int = 2, width: float = 1.0,
                 num_classes: int | None = 1000) -> None:
        super().__init__()
        self.arch = arch_name(depth)
        if last_stride not in (1, 2):
            raise ConfigError(f"model.last_stride: expected 1 or 2, got {last_stride!r}")
        if not width > 0:
            raise ConfigError(f"model.width: expected a positive multiplier, got {width!r}")
        self.width = float(width)
        self.last_stride = int(last_stride)
        block, layers = _SPECS[self.arch]
        base = _base_width(width)
        self.inplanes = base
        self.conv1 = nn.Conv2d(3, base, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(base)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = self._make_layer(block, base, layers[0], 1)
        self.layer2 = self._make_layer(block, base * 2, layers[1], 2)
        self.layer3 = self._make_layer(block, base * 4, layers[2], 2)
        self.layer4 = self._make_layer(block, base * 8, layers[3], self.last_stride)
        self.out_channels = resnet_out_channels(self.arch, width)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(self.out_channels, num_classes) if num_classes else None
        self._init_weights()

    def _make_layer(self, block: type[nn.Module], planes: int, blocks: int,
                    stride: int) -> nn.Sequential:
        downsample = None
        out_ch = planes * block.expansion
        if stride != 1 or self.inplanes != out_ch:
            downsample = nn.Sequential(
                nn.Conv2d(self.inplanes, out_ch, 1, stride, bias=False), nn.BatchNorm2d(out_ch)
            )
        layers = [block(self.inplanes, planes, stride, downsample)]
        self.inplanes = out_ch
        layers += [block(self.inplanes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def _init_weights(self) -> None:
        # Same scheme as torchvision: Kaiming-normal convs, unit BN. Used when training from
        # scratch (CPU presets); overwritten when ImageNet weights are loaded.
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.BatchNorm2d)) and m.weight.is_meta:
                # Shape-only models (model_info) need no init; normal_ on meta tensors
                # would also import torch._dynamo, which takes seconds.
                continue
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def stem(self, x: Tensor) -> Tensor:
        """x: (B, 3, H, W) -> (B, base, H/4, W/4)."""
        return self.maxpool(self.relu(self.bn1(self.conv1(x))))

    def features(self, x: Tensor) -> Tensor:
        """x: (B, 3, H, W) -> stage-4 map (B, C, h, w)."""
        x = self.stem(x)
        for name in ("layer1", "layer2", "layer3", "layer4"):
            x = getattr(self, name)(x)
        return x

    def forward(self, x: Tensor) -> Tensor:
        g = torch.flatten(self.avgpool(self.features(x)), 1)
        return g if self.fc is None else self.fc(g)


def _read_state_dict(path: Path) -> dict[str, Tensor]:
    """The ``name -> tensor`` mapping of a pretrained weights file (``torch.load`` with
    ``weights_only=True``; a ``{"state_dict": …}`` wrapper is unwrapped)."""
    try:
        with warnings.catch_warnings():
            # A foreign pickle makes torch warn about its protocol before failing: noise here.
            warnings.filterwarnings("ignore", message=".*pickle protocol", category=UserWarning)
            sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is a user error here
        # The same short reason as the checkpoint reader: never torch's advice to retry
        # with weights_only=False.
        raise CheckpointError(f"cannot read pretrained weights {path}: expected a "
                              f"torchvision-keyed state dict (name -> tensor), found "
                              f"{short_load_reason(exc)}") from exc
    if isinstance(sd, dict) and "state_dict" in sd and isinstance(sd["state_dict"], dict):
        sd = sd["state_dict"]
    if not isinstance(sd, dict):
        raise CheckpointError(f"{path}: expected a state dict (name -> tensor), found a "
                              f"{type(sd).__name__}")
    odd = [k for k, v in sd.items() if not isinstance(k, str) or not isinstance(v, Tensor)]
    if odd:
        raise CheckpointError(f"{path}: expected a state dict (name -> tensor), found "
                              f"{len(odd)} entries that are not a name and a tensor (e.g. "
                              f"{echo(odd[0])}: {type(sd[odd[0]]).__name__})")
    return sd


def _fetch_imagenet(arch: str) -> Path:
    """Path of the cached official checkpoint, downloading it through torch.hub if needed."""
    url = IMAGENET_URLS[arch]
    fname = os.path.basename(url)
    cache_dir = Path(torch.hub.get_dir()) / "checkpoints"
    cached = cache_dir / fname
    if cached.is_file():
        return cached
    try:
        torch.hub.load_state_dict_from_url(url, model_dir=str(cache_dir), map_location="cpu",
                                           progress=False, check_hash=True)
    except Exception as exc:  # noqa: BLE001 - offline, proxy, hash mismatch … all end the same
        raise CheckpointError(
            f"ImageNet weights for {arch} are not cached and could not be downloaded from {url} "
            f"({type(exc).__name__}: {exc}). Put the file {fname} into {cache_dir} "
            f"(torch.hub.get_dir()/checkpoints), or set model.pretrained to the path of a local "
            f"torchvision-keyed {arch} state dict."
        ) from exc
    return cached


def load_imagenet_weights(model: ResNet, arch: str | int | None = None,
                          source: str | os.PathLike = "imagenet") -> None:
    """Load torchvision ImageNet weights into ``model`` in place (strict key match).

    source: ``"imagenet"`` (official URL through torch.hub, cache checked first; width 1.0
    only) or a path to a torchvision-keyed state dict (any width, shapes must match). When ``model`` has no ``fc`` the file's ``fc.*`` entries
    are ignored; every other missing or unexpected key, or a shape mismatch, raises
    :class:`CheckpointError` naming the keys.
    """
    arch = model.arch if arch is None else arch_name(arch)
    if arch != model.arch:
        raise CheckpointError(f"weights for {arch} requested for a {model.arch} model")
    if str(source) == "imagenet":
        if model.width != 1.0:
            raise CheckpointError(
                f"ImageNet weights exist only for width 1.0; this {arch} has width {model.width}. "
                "Set model.pretrained to none to train from scratch."
            )
        path = _fetch_imagenet(arch)
    else:
        path = Path(source).expanduser()
        if not path.is_file():
            raise CheckpointError(f"pretrained weights file not found: {path}")
    sd = _read_state_dict(path)
    if model.fc is None:
        sd = {k: v for k, v in sd.items() if not k.startswith("fc.")}
    own = model.state_dict()
    missing = sorted(set(own) - set(sd))
    unexpected = sorted(set(sd) - set(own))
    if missing or unexpected:
        raise CheckpointError(
            f"{path} does not match {arch}: missing keys {missing[:20]}"
            f"{' …' if len(missing) > 20 else ''} ({len(missing)}), unexpected keys "
            f"{unexpected[:20]}{' …' if len(unexpected) > 20 else ''} ({len(unexpected)})"
        )
    bad = [f"{k}: file {tuple(sd[k].shape)} vs model {tuple(v.shape)}"
           for k, v in own.items() if tuple(sd[k].shape) != tuple(v.shape)]
    if bad:
        raise CheckpointError(
            f"{path} does not match {arch} with width {model.width}: shape mismatch in "
            + "; ".join(bad[:10]) + (" …" if len(bad) > 10 else "")
        )
    model.load_state_dict(sd, strict=True)
    log.info("loaded ImageNet weights for %s from %s", arch, path)


def resnet(depth: int | str = 50, last_stride: int = 2, width: float = 1.0,
           pretrained: str | os.PathLike | None = None,
           num_classes: int | None = 1000) -> ResNet:
    """Build a ResNet and optionally load ImageNet weights (``pretrained`` as in load_imagenet_weights)."""
    model = ResNet(depth, last_stride, width, num_classes)
    if pretrained not in (None, "", "none", False):
        load_imagenet_weights(model, None, pretrained)
    return model


def feature_hw(height: int, width: int, last_stride: int = 2) -> tuple[int, int]:
    """Spatial size of the stage-4 map for an input of height×width (analytic, no forward).

    conv1 (7×7, s2, p3) → maxpool (3×3, s2, p1) → layer2, layer3 (s2) → layer4 (last_stride);
    every stride-2 3×3/1×1 layer maps n to ⌊(n − 1)/2⌋ + 1.
    """

    def down(n: int) -> int:
        return (n - 1) // 2 + 1

    def size(n: int) -> int:
        n = (n + 6 - 7) // 2 + 1  # conv1
        n = down(down(down(n)))  # maxpool, layer2, layer3
        return down(n) if last_stride == 2 else n

    return size(int(height)), size(int(width))

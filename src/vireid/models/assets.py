"""Pretrained weights shipped inside the package (``src/vireid/assets/``).

``model.pretrained: synthetic-r18w025`` names the CPU backbone's ImageNet stand-in: a
quarter-width ResNet-18 (last stride 1) pretrained by ``vireid pretrain`` with the ID loss on
a synthetic population disjoint from every benchmark (500 ids, generator seed 11, difficulty
0.7; 2000 iterations). The file is a torchvision-keyed state dict (no ``fc``); its JSON record
beside it holds the command, config, data and timings that made it. The sha256 below is
checked on every load, so a damaged or swapped file fails loudly instead of training from
other weights.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from vireid.config import ASSET_DIR
from vireid.errors import CheckpointError
from vireid.utils.digest import file_sha256
from vireid.utils.messages import echo


@dataclass(frozen=True)
class PretrainedAsset:
    """One packaged weight file and the model it fits."""

    file: str
    sha256: str  # of the file's bytes
    arch: str
    width: float
    last_stride: int


#: name -> asset. Rebuild: ``vireid pretrain -o OUT`` (see the record's "command").
ASSETS: dict[str, PretrainedAsset] = {
    "synthetic-r18w025": PretrainedAsset(
        file="synthetic-r18w025.pth",
        sha256="f2369e7574d7cc53f16b6c166ad4603846a22dc7edd868abc019adaf53db9b91",
        arch="resnet18", width=0.25, last_stride=1),
}


def resolve_pretrained(name: str, arch: str, width: float) -> Path:
    """Path of the packaged weights ``name`` after checking its digest and that it fits.

    arch, width: the configured model (``model.arch``, ``model.width``); the last stride
    has no weights, so any value loads (the asset was trained with ``last_stride``).

    Raises:
        CheckpointError: unknown name, missing file, digest mismatch, or another model.
    """
    asset = ASSETS.get(name)
    if asset is None:
        raise CheckpointError(f"model.pretrained: no packaged weights named {echo(name)}; "
                              f"expected one of {', '.join(sorted(ASSETS))}")
    if asset.arch != arch or float(asset.width) != float(width):
        raise CheckpointError(f"model.pretrained={name}: these weights are for {asset.arch} width "
                              f"{asset.width}, the config has {arch} width {width}")
    path = ASSET_DIR / asset.file
    if not path.is_file():
        raise CheckpointError(f"model.pretrained={name}: packaged file {path} is missing "
                              f"(rebuild it with `vireid pretrain`, or reinstall vireid)")
    digest = file_sha256(path)
    if digest != asset.sha256:
        raise CheckpointError(f"model.pretrained={name}: {path} has sha256 {digest}, expected "
                              f"{asset.sha256} (damaged or replaced file)")
    return path

"""``vireid pretrain``: a pretrained starting point made by the project itself.

The paper fine-tunes an ImageNet-pretrained ResNet-50. ImageNet weights exist only for full
widths, and a from-scratch quarter-width ResNet-18 barely learns in the CPU budget (issue 15),
so this module makes the CPU stand-in for ImageNet:

1. generate a synthetic SYSU-layout population (:func:`vireid.data.synthetic.generate`) that
   is disjoint from every evaluation population: its own identities (generator seed 11, not
   the benchmarks' 0), its own difficulty (0.7, not the default 1.0), 500 ids;
2. train the CPU backbone on its training ids (train + val split files) with the ID loss only
   (``loss.kind=idl``) and one path for both modalities (``model.shared_stages=all``), so
   that the single backbone suits both the RGB and the IR path it is later copied into;
3. convert the trained backbone to a torchvision-keyed ResNet state dict (``conv1.weight``,
   ``bn1.*``, ``layerK.*``; no ``fc``), the format ``model.pretrained=/path.pth`` reads
   (:func:`vireid.models.resnet.load_imagenet_weights`, strict key and shape check), and
   write it with a JSON record beside it: sha256 of the file, content digest of the tensors,
   the exact command, the resolved training config, the data summary and the timings.

Training is deterministic on the CPU with a fixed thread count (docs/training.md), so the
same call on the same machine class gives the same weights bit for bit; the JSON keeps the
content digest so that a rebuild can be compared with the shipped file.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence, Union

import torch

from vireid.config import load_config, preset_or_path
from vireid.data.synthetic import generate
from vireid.engine.trainer import train
from vireid.errors import CheckpointError, ConfigError
from vireid.models.resnet import ResNet, load_imagenet_weights
from vireid.utils.atomic import atomic_save_torch, atomic_write_text, undo_new_folders
from vireid.utils.provenance import machine_info

log = logging.getLogger(__name__)

PathLike = Union[str, os.PathLike]

#: Population of the pretraining data (disjoint from the benchmarks: other seed, difficulty).
PRETRAIN_IDS = 500
PRETRAIN_SEED = 11
PRETRAIN_DIFFICULTY = 0.7
#: Overrides applied on top of the preset: ID loss, one shared path, from scratch,
#: 20 epochs x 100 iterations = 2000 steps, lr x0.1 for the last 5 epochs.
PRETRAIN_OVERRIDES = (
    "name=pretrain-synthetic",
    "loss.kind=idl",
    "model.shared_stages=all",
    "model.pretrained=none",
    "train.epochs=20",
    "train.iters_per_epoch=100",
    "train.lr_milestones=[15]",
    "train.selection=last",
    "data.val_ids=0",
)

# DSCSN part name -> torchvision prefix. The stem is nn.Sequential(conv1, bn1, relu, maxpool).
_STEM = {"stem.0.": "conv1.", "stem.1.": "bn1."}
_LAYERS = ("layer1", "layer2", "layer3", "layer4")


@dataclass
class PretrainResult:
    """What :func:`pretrain` produced."""

    weights: Path  # the torchvision-keyed state dict (.pth)
    record: Path  # the JSON beside it
    sha256: str  # of the .pth file's bytes
    content_digest: str  # of its tensors (independent of the serialisation)
    seconds: dict[str, float]


def sha256_file(path: PathLike) -> str:
    """sha256 (hex) of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def tensor_digest(state: dict[str, torch.Tensor]) -> str:
    """sha256 (hex) over the sorted names, dtypes, shapes and bytes of a state dict."""
    h = hashlib.sha256()
    for key in sorted(state):
        t = state[key].detach().cpu().contiguous()
        h.update(f"{key}|{t.dtype}|{tuple(t.shape)}|".encode())
        if t.numel():
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def backbone_to_torchvision(model_state: dict[str, torch.Tensor], path: str = "rgb"
                            ) -> dict[str, torch.Tensor]:
    """Torchvision-keyed ResNet state dict of a vireid model's DSCSN backbone.

    model_state: ``ReIDModel.state_dict()`` (keys ``backbone.{rgb,ir,shared}.<part>.*``,
    parts ``stem`` = Sequential(conv1, bn1, relu, maxpool) and ``layer1..4``).
    path: which modality's copy of the unshared parts to take ("rgb" or "ir"); parts the
    two paths share are taken from ``backbone.shared``.
    Returns ``{conv1.weight, bn1.*, layer1.*, …, layer4.*}`` (no ``fc``: the ReID
    classifier has another shape than ImageNet's and the loader ignores ``fc``).

    Raises:
        CheckpointError: a part is found in no path, or a key is not a backbone key.
    """
    if path not in ("rgb", "ir"):
        raise ConfigError(f"path: expected 'rgb' or 'ir', found {path!r}")
    out: dict[str, torch.Tensor] = {}
    for key, value in model_state.items():
        if not key.startswith("backbone."):
            continue
        _, branch, rest = key.split(".", 2)
        if branch not in ("shared", path):
            continue
        if rest.startswith("stem."):
            prefix = next((p for p in _STEM if rest.startswith(p)), None)
            if prefix is None:
                raise CheckpointError(f"unexpected stem key {key!r} (expected stem.0 conv, stem.1 bn)")
            out[_STEM[prefix] + rest[len(prefix):]] = value.detach().cpu().clone()
        elif rest.split(".", 1)[0] in _LAYERS:
            out[rest] = value.detach().cpu().clone()
        else:
            raise CheckpointError(f"unexpected backbone key {key!r}")
    for need in ("conv1.weight", "bn1.weight") + tuple(f"{l}.0.conv1.weight" for l in _LAYERS):
        if need not in out:
            raise CheckpointError(f"backbone part for {need} not found in the model state "
                                  f"(path {path!r})")
    return out


def check_loads(weights: PathLike, arch: str, width: float, last_stride: int) -> None:
    """Load ``weights`` into a fresh ResNet exactly as ``model.pretrained`` does (strict)."""

    net = ResNet(arch, last_stride=last_stride, width=width, num_classes=None)
    load_imagenet_weights(net, None, weights)


def pretrain_config(data_root: PathLike, preset: str = "cpu-synthetic",
                    overrides: Sequence[str] = (), seed: int = 0, threads: Optional[int] = 1
                    ) -> Any:
    """The resolved training config of the pretraining run (preset + PRETRAIN_OVERRIDES +
    ``overrides``, which win)."""
    extra = [f"data.root={data_root}", f"train.seed={seed}"]
    if threads is not None:
        extra.append(f"train.threads={threads}")
    return load_config(preset_or_path(preset), list(PRETRAIN_OVERRIDES) + extra + list(overrides))


def pretrain(out: PathLike, *, preset: str = "cpu-synthetic", overrides: Sequence[str] = (),
             ids: int = PRETRAIN_IDS, data_seed: int = PRETRAIN_SEED,
             difficulty: float = PRETRAIN_DIFFICULTY, seed: int = 0, threads: Optional[int] = 1,
             workers: int = 1, data_root: Optional[PathLike] = None, name: Optional[str] = None,
             overwrite: bool = False, progress: bool = True, command: str = "",
             synth_options: Optional[dict[str, Any]] = None) -> PretrainResult:
    """Synthesise, train and convert (see the module docstring); returns the files written.

    out: folder for ``data/`` (unless ``data_root``), ``run/`` and ``<name>.pth`` + ``.json``.
    preset, overrides: the training config (PRETRAIN_OVERRIDES are applied in between).
    ids, data_seed, difficulty: the synthetic population (docs/synthetic.md).
    seed, threads: training seed and torch threads (fix threads for a bit-exact rebuild).
    data_root: an existing dataset folder to train on instead of generating one.
    name: file stem of the weights; default ``synthetic-<arch>w<width>``.
    overwrite: replace an earlier run in ``out/run``.
    command: the command line to record (the CLI passes its own).
    synth_options: extra keyword arguments of ``generate`` (image sizes, images per camera;
        for tests), recorded in the JSON.
    """

    out = Path(out)
    seconds: dict[str, float] = {}
    data_info: dict[str, Any]
    # The synthesis writes into a temp folder that an error or Ctrl-C removes (also through
    # a second Ctrl-C); the output folder, when this call created it, goes with it.
    with undo_new_folders(out):
        out.mkdir(parents=True, exist_ok=True)
        if data_root is None:
            data_root = out / "data"
            t0 = time.perf_counter()
            log.info("pretrain 1/3: synthesising %d ids (seed %d, difficulty %g) into %s",
                     ids, data_seed, difficulty, data_root)
            data_info = generate("sysu", data_root, ids=ids, seed=data_seed, workers=workers,
                                 difficulty=difficulty, **(synth_options or {}))
            seconds["data"] = time.perf_counter() - t0
        else:
            data_info = {"root": str(data_root), "given": True}
    data_info = {k: v for k, v in data_info.items() if k != "out"}

    cfg = pretrain_config(data_root, preset, overrides, seed, threads)
    if cfg.loss.kind != "idl" and cfg.model.shared_stages != "all":
        log.warning("pretraining with loss %s and shared stages %s: the converted weights come "
                    "from the RGB path", cfg.loss.kind, cfg.model.shared_stages)
    t0 = time.perf_counter()
    log.info("pretrain 2/3: training %s %s width %g (%s) for %d x %d iterations",
             cfg.loss.kind, cfg.model.arch, cfg.model.width, cfg.model.shared_stages,
             cfg.train.epochs, cfg.train.iters_per_epoch or 0)
    res = train(cfg, out / "run", overwrite=overwrite, progress=progress)
    seconds["train"] = time.perf_counter() - t0

    log.info("pretrain 3/3: converting %s to a torchvision-keyed state dict", res.last_checkpoint)
    ckpt = torch.load(res.last_checkpoint, map_location="cpu", weights_only=True)
    sd = backbone_to_torchvision(ckpt["model"])
    stem = name or f"synthetic-{cfg.model.arch.replace('resnet', 'r')}w{_width_tag(cfg.model.width)}"
    weights = out / f"{stem}.pth"
    atomic_save_torch(sd, weights)
    check_loads(weights, cfg.model.arch, cfg.model.width, cfg.model.last_stride)
    digest = sha256_file(weights)
    content = tensor_digest(sd)
    last = [h for h in res.history if "loss" in h]
    record = {
        "name": stem,
        "file": weights.name,
        "sha256": digest,
        "content_sha256": content,
        "format": "torchvision ResNet state dict (no fc); load with model.pretrained=<path>",
        "arch": cfg.model.arch, "width": cfg.model.width, "last_stride": cfg.model.last_stride,
        "input": [cfg.data.height, cfg.data.width],
        "command": command or None,
        "library_call": {"preset": preset, "overrides": list(overrides), "ids": ids,
                         "data_seed": data_seed, "difficulty": difficulty, "seed": seed,
                         "threads": threads, "synth_options": synth_options or {}},
        "data": {"generator": "vireid.data.synthetic.generate", "layout": "sysu", "ids": ids,
                 "seed": data_seed, "difficulty": difficulty, **data_info},
        "config": cfg.to_dict(),
        "train": {"iterations": res.iterations, "epochs": res.epochs_done,
                  "final_epoch": last[-1] if last else None,
                  "checkpoint_model_digest": ckpt.get("model_digest")},
        "seconds": {k: round(v, 1) for k, v in seconds.items()},
        "machine": machine_info("platform", "python", "torch", "cpu_count"),
    }
    record_path = out / f"{stem}.json"
    atomic_write_text(record_path, json.dumps(record, indent=2, default=str) + "\n")
    log.info("pretrain: wrote %s (sha256 %s) and %s", weights, digest, record_path)
    return PretrainResult(weights, record_path, digest, content, seconds)


def _width_tag(width: float) -> str:
    """0.25 -> '025', 1.0 -> '1', 0.5 -> '05' (file-name friendly)."""
    text = f"{width:g}"
    return text.replace(".", "") if "." in text else text

"""The Python API: load a trained model, extract features, score pairs, evaluate, train.

Three lines from a run folder to a distance matrix::

    import vireid
    model = vireid.load("runs/x")                   # a run folder or a checkpoint file
    q = model.extract(ir_paths, modality="ir")      # FeatureSet: F, G, paths, pids, camids
    g = model.extract(rgb_paths, modality="rgb")
    D = model.distance(q, g, scoring="full")        # (len(q), len(g)) numpy, lower = closer
    vireid.evaluate(D, q, g, metric="sysu")         # {"rank1": …, "mAP": …, "mINP": …}

Every name a config or an argument takes (data set, loss, scoring mode, backbone, metric
rule) is resolved through its registry, so entries registered by a plugin work here as
they do on the command line. Errors are :class:`~vireid.errors.VireidError` subclasses
naming what was expected and what was found. Nothing here changes global state on import.
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np
import torch

from vireid.config import Config, apply_overrides, load_config, preset_or_path, validate
from vireid.data.images import resize_rgb, show_path
from vireid.data.records import MODALITIES, ImageRecord
from vireid.engine.checkpoint import load_model_from_checkpoint
from vireid.engine.features import FeatureSet, RecordImages, extract_features
from vireid.engine.trainer import train as _train
from vireid.errors import ConfigError, DataError
from vireid.data.registry import DATASETS
from vireid.evaluation.metrics import METRIC_RULES, metric_rule
from vireid.evaluation.protocols import PROTOCOLS, get_protocol, metric_summary
from vireid.losses.registry import LOSSES
from vireid.models.backbones import BACKBONES
from vireid.utils.plugins import load_plugins, loaded_plugins
from vireid.scoring.scorers import SCORING_MODES, get_scoring
from vireid.utils.runtime import resolve_device

PathLike = Union[str, os.PathLike]
#: What :meth:`Model.extract` takes: image files, or decoded images as a (N, H, W, 3) uint8
#: array / tensor (any size: they are resized to the model's input as files are).
Images = Union[Sequence[PathLike], np.ndarray, torch.Tensor]


class _ArrayImages:
    """Decoded images as the :class:`~vireid.engine.features.ImageSource` extraction reads."""

    def __init__(self, images: np.ndarray, size: tuple[int, int]) -> None:
        self.images, self.size = images, size

    def batch(self, indices: Sequence[int] | np.ndarray) -> np.ndarray:
        if len(indices) == 0:
            return np.zeros((0, *self.size, 3), np.uint8)
        return np.stack([resize_rgb(self.images[int(i)], self.size) for i in indices])


def _as_uint8_images(images: Union[np.ndarray, torch.Tensor]) -> np.ndarray:
    arr = images.detach().cpu().numpy() if isinstance(images, torch.Tensor) else np.asarray(images)
    if arr.ndim != 4 or arr.shape[-1] != 3 or arr.dtype != np.uint8:
        raise DataError(f"images: expected image paths or a (N, H, W, 3) uint8 array, found "
                        f"an array of shape {tuple(arr.shape)} and dtype {arr.dtype}")
    return arr


def _id_array(name: str, values: Optional[Sequence[int]], n: int, unknown: int) -> list[int]:
    if values is None:
        return [unknown] * n
    out = [int(v) for v in np.asarray(values).reshape(-1)]
    if len(out) != n:
        raise ConfigError(f"{name}: expected one value per image ({n}), found {len(out)}")
    return out


def as_feature_set(feats: Any, modality: Optional[str] = None) -> FeatureSet:
    """A :class:`FeatureSet` of ``feats``: a FeatureSet (tensors or numpy arrays inside), or a
    pair ``(F, G)`` of arrays or tensors, F (N, C, h, w) and G (N, C), with ``modality``.
    """
    if isinstance(feats, FeatureSet):
        F, G = feats.F, feats.G
        rest = (feats.pids, feats.camids, feats.modalities, feats.paths)
    elif isinstance(feats, (tuple, list)) and len(feats) == 2:
        F, G = feats
        if modality not in MODALITIES:
            raise ConfigError(f"modality: features given as (F, G) need modality= one of "
                              f"{', '.join(MODALITIES)}, found {modality!r}")
        n = len(G)
        rest = (np.full(n, -1, np.int64), np.zeros(n, np.int64), [modality] * n,
                [f"#{i}" for i in range(n)])
    else:
        raise ConfigError(f"features: expected a FeatureSet or a pair (F, G), found "
                          f"{type(feats).__name__}")
    F = torch.as_tensor(np.asarray(F) if not isinstance(F, torch.Tensor) else F, dtype=torch.float32)
    G = torch.as_tensor(np.asarray(G) if not isinstance(G, torch.Tensor) else G, dtype=torch.float32)
    if F.dim() != 4 or G.dim() != 2 or F.shape[0] != G.shape[0] or F.shape[1] != G.shape[1]:
        raise ConfigError(f"features: expected F (N, C, h, w) and G (N, C), found F "
                          f"{tuple(F.shape)} and G {tuple(G.shape)}")
    pids, camids, modalities, paths = rest
    return FeatureSet(F, G, np.asarray(pids, np.int64), np.asarray(camids, np.int64),
                      list(modalities), list(paths))


@dataclass
class Model:
    """A trained vireid model ready for inference (what :func:`load` returns).

    Attributes:
        net: the :class:`~vireid.models.build.ReIDModel` in eval mode on ``device``.
        cfg: the config it was trained with.
        path: the checkpoint file.
        model_digest: content hash of its weights (what feature files and indexes record).
        device: where features are extracted and full mode is scored.
    """

    net: torch.nn.Module
    cfg: Config
    path: Path
    model_digest: str
    device: torch.device

    @property
    def config_digest(self) -> str:
        """Hash of the fields that define the network (``Config.digest``)."""
        return self.cfg.digest()

    def extract(self, images: Images, modality: str, *, pids: Optional[Sequence[int]] = None,
                camids: Optional[Sequence[int]] = None, batch_size: Optional[int] = None,
                flip: Optional[bool] = None) -> FeatureSet:
        """Features of ``images`` through ``modality``'s path ("rgb" or "ir"), exactly as
        ``vireid eval`` extracts them (decoding, resizing, normalisation, optional flip).

        Returns a :class:`FeatureSet`: F (N, C, h, w), G (N, C) float32 tensors on the CPU,
        the image paths (``#i`` for arrays), and ``pids``/``camids`` when given (-1 and 0
        otherwise), which :func:`evaluate` reads.
        """
        if modality not in MODALITIES:
            raise ConfigError(f"modality: expected one of {', '.join(MODALITIES)}, found "
                              f"{modality!r}")
        size = (self.cfg.data.height, self.cfg.data.width)
        if isinstance(images, (np.ndarray, torch.Tensor)):
            arr = _as_uint8_images(images)
            n, source = len(arr), _ArrayImages(arr, size)
            paths = [f"#{i}" for i in range(n)]
        else:
            paths = [Path(p).absolute().as_posix() for p in images]
            for p in paths:
                if not Path(p).is_file():
                    raise DataError(f"image file not found: expected an image at "
                                    f"{show_path(p)}, found nothing")
            n = len(paths)
            source = RecordImages(Path("/"), [ImageRecord(p, -1, 0, modality) for p in paths], size)
        if n == 0:
            raise DataError("images: expected at least one image, found none")
        p_ids = _id_array("pids", pids, n, -1)
        c_ids = _id_array("camids", camids, n, 0)
        records = [ImageRecord(paths[i], p_ids[i], c_ids[i], modality) for i in range(n)]
        return extract_features(self.net, records, source,
                                batch_size=batch_size or self.cfg.eval.batch_size,
                                flip=self.cfg.eval.flip if flip is None else flip,
                                device=self.device)

    def distance(self, query: Any, gallery: Any, scoring: str = "simplified", *,
                 topk: Optional[int] = None, chunk_size: Optional[int] = None,
                 query_modality: Optional[str] = None,
                 gallery_modality: Optional[str] = None,
                 fusion_weight: Optional[float] = None) -> np.ndarray:
        """Distance (Q, G) float32 numpy, lower = closer, of every query against every
        gallery image under the registered scoring mode ``scoring``.

        ``query``/``gallery``: FeatureSets (from :meth:`extract` or a feature file), or
        pairs ``(F, G)`` of numpy arrays or tensors with ``query_modality`` /
        ``gallery_modality``. The CCN side of each pair follows from the two modalities.
        ``topk``, ``chunk_size``, ``fusion_weight`` (the ``fused`` mode's w): default the
        model config's ``eval`` values.
        """
        q = as_feature_set(query, query_modality)
        g = as_feature_set(gallery, gallery_modality)
        dist = get_scoring(scoring).distance(q, g, **self._options(topk, chunk_size, fusion_weight))
        return dist.float().numpy()

    def search(self, query: Any, gallery: Any, k: int = 10, scoring: str = "simplified", *,
               topk: Optional[int] = None, chunk_size: Optional[int] = None,
               query_modality: Optional[str] = None, gallery_modality: Optional[str] = None,
               fusion_weight: Optional[float] = None) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` nearest gallery images of each query under ``scoring``: (gallery rows
        (Q, k') int64, distances (Q, k') float32), nearest first, equal distances by the
        lower row (the one top-k rule of :mod:`vireid.scoring.topk`); k' = min(k, G)."""
        q = as_feature_set(query, query_modality)
        g = as_feature_set(gallery, gallery_modality)
        d, rows = get_scoring(scoring).topk(q, g, k, **self._options(topk, chunk_size, fusion_weight))
        return rows.numpy(), d.float().numpy()

    def _options(self, topk: Optional[int], chunk_size: Optional[int],
                 fusion_weight: Optional[float] = None) -> dict[str, Any]:
        w = self.cfg.eval.fusion_weight if fusion_weight is None else fusion_weight
        return {"ccn": self.net.ccn, "topk": topk or self.cfg.eval.topk, "fusion_weight": w,
                "chunk_size": chunk_size or self.cfg.eval.chunk_size, "device": self.device}


def load(path: PathLike, device: Union[str, torch.device] = "cpu") -> Model:
    """Load a run folder (its selected checkpoint) or a checkpoint file for inference.

    Raises:
        CheckpointError: not a vireid checkpoint, or its weights do not fit its config.
        ConfigError: a name in its config is not registered (e.g. its plugin is not loaded).
    """
    dev = resolve_device(str(device)) if not isinstance(device, torch.device) else device
    net, cfg, meta = load_model_from_checkpoint(path, dev)
    return Model(net, cfg, Path(meta["path"]), str(meta["model_digest"]), torch.device(dev))


def evaluate(distance: Any, query: FeatureSet, gallery: FeatureSet,
             metric: str = "regdb") -> dict[str, float]:
    """Rank-1/5/10/20, mAP and mINP (percent) of a distance matrix (Q, G), lower = closer.

    ``metric``: a metric rule (``"sysu"``: SYSU-MM01's reference code, a cam3 query ignores
    cam2 of the same id; ``"regdb"``: nothing removed; ``"llcm"``; ``"open"``; or a rule a
    plugin registered) or a protocol name, whose rule is used. Identities and cameras come
    from the feature sets (``pids``/``camids`` given to :meth:`Model.extract`).
    """
    dist = np.asarray(torch.as_tensor(distance).float().cpu().numpy() if isinstance(distance, torch.Tensor)
                      else distance, dtype=np.float32)
    if dist.shape != (len(query), len(gallery)):
        raise ConfigError(f"distance: expected shape ({len(query)}, {len(gallery)}) for these "
                          f"query and gallery sets, found {dist.shape}")
    for role, feats in (("query", query), ("gallery", gallery)):
        if (np.asarray(feats.pids) < 0).any():
            raise ConfigError(f"{role}: evaluation needs the identity of every image; pass "
                              f"pids= (and camids=) to Model.extract")
    rule = get_protocol(metric).metric if metric in PROTOCOLS else metric
    cmc, m_ap, m_inp = metric_rule(rule)(dist, np.asarray(query.pids), np.asarray(gallery.pids),
                                         np.asarray(query.camids), np.asarray(gallery.camids))
    return metric_summary(cmc, m_ap, m_inp)


def train(config: Union[PathLike, Config], data_root: PathLike, out: PathLike,
          overrides: Sequence[str] = (), *, resume: bool = False, overwrite: bool = False,
          progress: bool = False) -> Path:
    """Train a model as ``vireid train`` does and return its run folder.

    ``config``: a preset name (``"cpu-pretrained"``), a YAML file or a :class:`Config`;
    ``overrides``: dotted ``KEY=VALUE`` strings applied on top. Every registered name is
    resolved before any data is read.
    """
    if isinstance(config, Config):
        cfg = apply_overrides(config, list(overrides))
    else:
        cfg = apply_overrides(load_config(preset_or_path(str(config))), list(overrides))
    # Set directly, not as an override: a folder name is not parsed as YAML.
    cfg.data.root = os.fspath(data_root)
    validate(cfg)
    _train(cfg, out, resume=resume, overwrite=overwrite, progress=progress)
    return Path(out)


def registered() -> dict[str, list[str]]:
    """Every registered name by kind (data sets, protocols, losses, scoring modes, backbones,
    metric rules) and the plugin modules imported, after importing the plugins."""
    load_plugins()
    return {"datasets": DATASETS.names(), "protocols": list(PROTOCOLS),
            "losses": LOSSES.names(), "scoring": SCORING_MODES.names(),
            "backbones": BACKBONES.names(), "metric_rules": METRIC_RULES.names(),
            "plugins": loaded_plugins()}

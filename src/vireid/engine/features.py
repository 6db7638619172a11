"""Feature extraction for evaluation, and feature files that can be scored without images.

Every image goes through its own modality's path of the DSCSN (RGB records through the RGB
path, IR records through the IR path), in batches of one modality at a time; the output keeps
the order of the input records.

Flip test-time augmentation (``flip=True``, not in the paper, off by default): the image and
its horizontal mirror both go through the network; the mirror's map is flipped back
(``F(mirror(x)).flip(-1)``) so that both maps describe the same spatial positions, and the
two maps are averaged: ``F = (F(x) + flip(F(mirror(x)))) / 2``. G is the global average of
that F, which equals the average of the two G's. Flipping back matters for full-mode
scoring: the CCN compares maps position by position.

A feature file (``torch.save``, atomic) holds the FeatureSet, the digest of the model weights
that produced it, the architecture digest of its config and the flip setting; loading it for
a checkpoint with other weights is refused. Reading checks every field (keys, types, and
that F, G, pids, camids, modalities and paths describe the same N images) and names the
file and the field of the first one that is wrong.
"""
from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Protocol, Union

import numpy as np
import torch
from torch import nn

from vireid.data.cache import ImageCache
from vireid.data.images import decode_image
from vireid.data.records import IR, MODALITIES, RGB, ImageRecord
from vireid.data.transforms import EvalTransform
from vireid.errors import CheckpointError, DataError
from vireid.utils.atomic import atomic_save_torch
from vireid.utils.schema import (BOOL, DICT, INT, STR, Kind, check_fields, describe, each,
                                 field_error, is_exactly, kind_of, list_of, one_of, opt,
                                 optional)

log = logging.getLogger(__name__)

FEATURES_FORMAT = "vireid-features"
FEATURES_VERSION = 1

PathLike = Union[str, os.PathLike]


class ImageSource(Protocol):
    """Anything that returns decoded images of records by index: ``(B, H, W, 3) uint8``."""

    def batch(self, indices: Sequence[int] | np.ndarray) -> np.ndarray: ...


@dataclass
class FeatureSet:
    """Features of a list of images (row i ↔ record i).

    F: (N, C, h, w) float32; G: (N, C) float32; pids, camids: (N,) int64 numpy;
    modalities, paths: lists of N strings.
    """

    F: torch.Tensor
    G: torch.Tensor
    pids: np.ndarray
    camids: np.ndarray
    modalities: list[str]
    paths: list[str]
    _row: dict[tuple[str, str], int] = field(default_factory=dict, repr=False, compare=False)

    def __len__(self) -> int:
        return len(self.paths)

    def subset(self, rows: Sequence[int] | np.ndarray) -> "FeatureSet":
        """Rows ``rows`` as a new FeatureSet (tensors are indexed, not copied per row)."""
        idx = torch.as_tensor(np.asarray(rows, dtype=np.int64))
        r = np.asarray(rows, dtype=np.int64)
        return FeatureSet(self.F[idx], self.G[idx], self.pids[r], self.camids[r],
                          [self.modalities[i] for i in r], [self.paths[i] for i in r])

    def rows_of(self, records: Sequence[ImageRecord]) -> np.ndarray:
        """Row of each record (matched by path and modality).

        Raises:
            CheckpointError: a record is not in this set (e.g. a feature file of other images).
        """
        if not self._row:
            self._row = {(p, m): i for i, (p, m) in enumerate(zip(self.paths, self.modalities))}
        out = np.empty(len(records), dtype=np.int64)
        for i, rec in enumerate(records):
            row = self._row.get((rec.path, rec.modality))
            if row is None:
                raise CheckpointError(f"feature set has no features of {rec.path} ({rec.modality}); "
                                      f"it holds {len(self)} images: was it extracted for another "
                                      f"dataset or protocol?")
            out[i] = row
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"F": self.F, "G": self.G, "pids": torch.from_numpy(self.pids),
                "camids": torch.from_numpy(self.camids), "modalities": list(self.modalities),
                "paths": list(self.paths)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "FeatureSet":
        return cls(d["F"], d["G"], d["pids"].numpy().astype(np.int64),
                   d["camids"].numpy().astype(np.int64), list(d["modalities"]), list(d["paths"]))


class RecordImages:
    """Decode images of records on demand (no cache): ``batch(i)`` -> (B, H, W, 3) uint8.

    With ``skip_corrupt`` every distinct file is decoded once up front; undecodable ones are
    listed in ``.bad`` (relative paths) and come back as zeros (callers drop those records).
    """

    def __init__(self, root: PathLike, records: Sequence[ImageRecord], size: tuple[int, int],
                 skip_corrupt: bool = False):
        self.root, self.records, self.size = Path(root), list(records), size
        self.bad: list[str] = []
        if skip_corrupt:
            for rel in sorted({r.path for r in self.records}):
                try:
                    decode_image(self.root / rel)
                except DataError as exc:
                    if not (self.root / rel).is_file():
                        raise
                    log.warning("corrupt image skipped: %s", exc)
                    self.bad.append(rel)
            if self.bad:
                log.warning("skipping %d corrupt image(s) (skip_corrupt): %s", len(self.bad),
                            ", ".join(str(self.root / b) for b in self.bad[:5]))

    def batch(self, indices: Sequence[int] | np.ndarray) -> np.ndarray:
        bad = set(self.bad)
        if len(indices) == 0:  # an empty batch is a (0, H, W, 3) array, as the cache gives
            return np.zeros((0, *self.size, 3), np.uint8)
        return np.stack([np.zeros((*self.size, 3), np.uint8) if self.records[int(i)].path in bad
                         else decode_image(self.root / self.records[int(i)].path, self.size)
                         for i in indices])


def open_images(root: PathLike, records: Sequence[ImageRecord], size: tuple[int, int],
                use_cache: bool = True, cache_dir: Optional[PathLike] = None,
                skip_corrupt: bool = False) -> ImageSource:
    """An image source for ``records`` at ``size = (H, W)``: the memory-mapped cache of
    decoded images (built on first use) or, with ``use_cache=False``, decoding on demand.

    Without ``skip_corrupt`` a corrupt or truncated file raises DataError naming it. With it,
    the source's ``.bad`` lists the relative paths of undecodable files (logged with a count);
    the caller must drop their records (see :func:`drop_paths`). A missing file always fails.
    """
    if not use_cache:
        return RecordImages(root, records, size, skip_corrupt=skip_corrupt)
    return ImageCache.build(root, records, size, cache_dir=cache_dir or None,
                            skip_corrupt=skip_corrupt)


def drop_paths(records: Sequence[ImageRecord], bad: Sequence[str]) -> list[ImageRecord]:
    """``records`` without those whose path is in ``bad`` (order kept)."""
    b = set(bad)
    return [r for r in records if r.path not in b]


@torch.no_grad()
def extract_features(model: nn.Module, records: Sequence[ImageRecord], images: ImageSource,
                     batch_size: int = 128, flip: bool = False,
                     device: Union[str, torch.device] = "cpu") -> FeatureSet:
    """Run every record through its own modality's path.

    model: a ReIDModel (``forward_features(x, modality) -> (F, G)``), put in eval mode here.
    images: ``images.batch(indices)`` returns the images of ``records[indices]``.
    Returns the FeatureSet in record order; F, G on the CPU as float32.
    """
    model.eval()
    transform = EvalTransform()
    n = len(records)
    if n == 0:
        raise CheckpointError("no images to extract features from")
    out_F: Optional[torch.Tensor] = None
    out_G: Optional[torch.Tensor] = None
    t0 = time.perf_counter()
    for modality in (RGB, IR):
        idx = np.array([i for i, r in enumerate(records) if r.modality == modality], dtype=np.int64)
        for start in range(0, len(idx), batch_size):
            rows = idx[start:start + batch_size]
            x = transform(images.batch(rows)).to(device)
            f, _ = model.forward_features(x, modality)
            if flip:
                f_m, _ = model.forward_features(x.flip(-1), modality)
                f = 0.5 * (f + f_m.flip(-1))
            # G as the model pools and embeds it (GeM, BNNeck: model.pool / model.bnneck);
            # for the default model this is f.mean(dim=(2, 3)), as before.
            global_of = getattr(model, "global_of", None)
            g = global_of(f) if global_of is not None else f.mean(dim=(2, 3))
            g = g.float().cpu()
            f = f.float().cpu()
            if out_F is None:
                out_F = torch.empty((n, *f.shape[1:]), dtype=torch.float32)
                out_G = torch.empty((n, f.shape[1]), dtype=torch.float32)
            out_F[torch.from_numpy(rows)] = f
            out_G[torch.from_numpy(rows)] = g
    log.info("extracted features of %d images in %.1f s%s", n, time.perf_counter() - t0,
             " (flip TTA)" if flip else "")
    assert out_F is not None and out_G is not None
    return FeatureSet(out_F, out_G, np.array([r.pid for r in records], dtype=np.int64),
                      np.array([r.camid for r in records], dtype=np.int64),
                      [r.modality for r in records], [r.path for r in records])


def save_features(path: PathLike, feats: FeatureSet, *, model_digest: str, config_digest: str,
                  flip: bool, dataset: Optional[dict[str, Any]] = None) -> Path:
    """Write a feature file atomically (see the module docstring)."""
    obj = {"format": FEATURES_FORMAT, "format_version": FEATURES_VERSION,
           "model_digest": model_digest, "config_digest": config_digest, "flip": bool(flip),
           "dataset": dataset or {}, "features": feats.to_dict()}
    return atomic_save_torch(obj, path)


def load_features(path: PathLike, *, model_digest: Optional[str] = None,
                  flip: Optional[bool] = None) -> tuple[FeatureSet, dict[str, Any]]:
    """Read a feature file; refuse it when it was made by other weights or another flip setting.

    Returns ``(features, meta)`` with meta keys model_digest, config_digest, flip, dataset.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"feature file not found: {path}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        # Only the first line of torch's message: the rest is advice about weights_only
        # (several lines) that does not apply to a file that is simply not ours.
        first = (str(exc).strip().splitlines() or [""])[0][:160]
        if "Weights only load failed" in first or not first:
            first = "not a torch file written by vireid eval --save-features"
        raise CheckpointError(f"cannot read feature file {path}: expected a file written by "
                              f"`vireid eval --save-features`, found {type(exc).__name__}: "
                              f"{first}") from None
    if not isinstance(obj, dict) or not is_exactly(obj.get("format"), FEATURES_FORMAT):
        found = f"a {type(obj).__name__}" if not isinstance(obj, dict) else \
            f"format {describe(obj.get('format'))}"
        raise CheckpointError(f"{path} is not a vireid feature file: expected format "
                              f"{FEATURES_FORMAT!r}, found {found}")
    if not is_exactly(obj.get("format_version"), FEATURES_VERSION):
        raise CheckpointError(f"{path}: feature file version {describe(obj.get('format_version'))}"
                              f", this vireid reads version {FEATURES_VERSION}")
    _check_feature_file(obj, path)
    if model_digest is not None and obj["model_digest"] != model_digest:
        raise CheckpointError(f"{path} was extracted with model weights {obj['model_digest']}, "
                              f"but the checkpoint has weights {model_digest}")
    if flip is not None and bool(obj["flip"]) != bool(flip):
        raise CheckpointError(f"{path} was extracted with flip={obj['flip']}, requested flip={flip}")
    meta = {k: obj[k] for k in ("model_digest", "config_digest", "flip", "dataset")}
    return FeatureSet.from_dict(obj["features"]), meta


_TENSOR = kind_of(torch.Tensor, "a tensor")

#: The fields of a feature file (``dataset`` may be empty: features saved without splits).
FEATURES_SCHEMA = {
    "model_digest": STR,
    "config_digest": STR,
    "flip": BOOL,
    "dataset": DICT,
    "features": {"F": _TENSOR, "G": _TENSOR, "pids": _TENSOR, "camids": _TENSOR,
                 "modalities": list_of(one_of(*MODALITIES)),
                 "paths": list_of(STR)},
}


def _check_feature_file(obj: dict[str, Any], path: Path) -> None:
    """Keys and types (:data:`FEATURES_SCHEMA`), then the shapes: F (N, C, h, w) and
    G (N, C) floating point, pids and camids (N,) integers, N modalities and paths, and
    the stored splits' rows within 0..N-1.

    Raises:
        CheckpointError: naming the file and the first field that is wrong.
    """
    where = f"feature file {path}"
    check_fields(obj, FEATURES_SCHEMA, where, CheckpointError)
    f = obj["features"]
    F, G = f["F"], f["G"]

    def bad(field: str, expected: str, found: str) -> CheckpointError:
        return field_error(where, f"features.{field}", expected, found, CheckpointError)

    if F.dim() != 4 or not F.is_floating_point():
        raise bad("F", "a floating-point tensor (N, C, h, w)",
                  f"{F.dtype} of shape {tuple(F.shape)}")
    n, c = F.shape[0], F.shape[1]
    if tuple(G.shape) != (n, c) or not G.is_floating_point():
        raise bad("G", f"a floating-point tensor of shape ({n}, {c}) (N, C of F)",
                  f"{G.dtype} of shape {tuple(G.shape)}")
    for name in ("pids", "camids"):
        t = f[name]
        if tuple(t.shape) != (n,) or t.is_floating_point() or t.is_complex():
            raise bad(name, f"an integer tensor of shape ({n},)",
                      f"{t.dtype} of shape {tuple(t.shape)}")
    for name in ("modalities", "paths"):
        if len(f[name]) != n:
            raise bad(name, f"{n} items (one per row of F)", f"{len(f[name])}")
    row = Kind(f"a list of row numbers in 0..{n - 1}",
               lambda v: isinstance(v, list) and all(isinstance(i, int) and not isinstance(i, bool)
                                                     and 0 <= i < n for i in v))
    check_fields(obj["dataset"], {opt("name"): optional(STR), opt("trial"): optional(INT),
                                  opt("protocol"): optional(STR),
                                  opt("splits"): each({"trial": INT, "name": STR,
                                                       "query": row, "gallery": row})},
                 where, CheckpointError, "dataset.")

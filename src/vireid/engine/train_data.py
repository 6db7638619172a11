"""What one training iteration consumes: the training split, its images, the held-out
validation ids, and the per-rank share of each iteration (images, labels, pairs).

An epoch is ``cfg.train.iters_per_epoch`` iterations, or by default
``ceil(max(#RGB, #IR training images) / N)``: every image of the larger modality is drawn about
once per epoch (see docs/training.md).

All randomness of an iteration comes from :func:`step_generator`, a pure function of
(seed, stream, iteration, pair group): a resumed run and every DDP rank draw exactly what one
uninterrupted process draws, with no generator state to save or share.
"""
from __future__ import annotations

import logging
import math
import os
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np
import torch
from torch import Tensor

from vireid.config import Config
from vireid.data.records import ImageRecord, TrainSplit
from vireid.data.registry import get_dataset
from vireid.data.sampler import build_pair_sets
from vireid.data.transforms import TrainTransform
from vireid.engine.features import open_images
from vireid.errors import ConfigError, DataError

log = logging.getLogger(__name__)

PathLike = Union[str, os.PathLike]


def iterations_per_epoch(cfg: Config, split: TrainSplit) -> int:
    """cfg.train.iters_per_epoch, or ceil(max(#RGB, #IR) / N)."""
    if cfg.train.iters_per_epoch:
        return int(cfg.train.iters_per_epoch)
    return max(1, math.ceil(max(len(split.rgb), len(split.ir)) / cfg.data.ids_per_batch))


@dataclass
class TrainData:
    """The training split (after carving validation ids), its images and the val split."""

    split: TrainSplit
    root: Path
    images: Any  # .batch(indices) over split.rgb + split.ir
    labels_rgb: np.ndarray
    labels_ir: np.ndarray
    val_query: list[ImageRecord] = field(default_factory=list)  # IR images of held-out ids
    val_gallery: list[ImageRecord] = field(default_factory=list)  # RGB images of held-out ids
    val_rows_query: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    val_rows_gallery: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    val_pids: list[int] = field(default_factory=list)
    val_images: Any = None  # .batch(rows) over all training images (val rows included)


def load_train_split(cfg: Config, root: PathLike) -> TrainSplit:
    """Training split of cfg.data.dataset at ``root`` (RegDB: trial cfg.data.trial)."""
    return get_dataset(cfg.data.dataset).train_split(root, cfg.data.trial)


def carve_validation(split: TrainSplit, num_val: int, seed: int
                     ) -> tuple[TrainSplit, list[int]]:
    """Hold out ``num_val`` identities (with images of both modalities) for model selection.

    The held-out ids are ``random.Random(seed).sample`` of the eligible ids (sorted); the
    remaining ids are relabelled 0..K'-1 by increasing pid. Returns (train split, val pids).
    """
    eligible = sorted({r.pid for r in split.rgb} & {r.pid for r in split.ir})
    if num_val > len(eligible) - 2:
        raise ConfigError(f"data.val_ids: {num_val} held-out ids leave fewer than 2 of the "
                          f"{len(eligible)} training ids that have both modalities")
    val = sorted(random.Random(seed).sample(eligible, num_val))
    keep = sorted(set(split.labels) - set(val))
    labels = {p: i for i, p in enumerate(keep)}
    vs = set(val)
    return TrainSplit([r for r in split.rgb if r.pid not in vs],
                      [r for r in split.ir if r.pid not in vs], labels), val


@dataclass
class SplitPlan:
    """The training split before any image is decoded: ``full`` as loaded, ``split`` after
    carving the held-out ``val`` ids."""

    full: TrainSplit
    split: TrainSplit
    val: list[int]


def plan_split(cfg: Config, root: PathLike) -> SplitPlan:
    """Load the training split's records (the dataset's layout is checked, no image is
    decoded), carve the validation ids, and check that a batch of ``data.ids_per_batch``
    identities can be drawn: everything about the data a run can know before it starts.

    Raises:
        DataError: the folder is not the dataset's layout, or a modality has no images.
        ConfigError: ``data.val_ids`` or ``data.ids_per_batch`` larger than the ids allow.
    """
    root = Path(root)
    full = load_train_split(cfg, root)
    if not full.rgb or not full.ir:
        raise DataError(f"training split of {cfg.data.dataset} at {root} has {len(full.rgb)} RGB "
                        f"and {len(full.ir)} IR images; both modalities are needed")
    split, val = full, []
    if cfg.data.val_ids > 0:
        split, val = carve_validation(full, cfg.data.val_ids, cfg.train.seed)
    both = {r.pid for r in split.rgb} & {r.pid for r in split.ir}
    if cfg.data.ids_per_batch > len(both):
        held = f" after holding out data.val_ids={len(val)}" if val else ""
        raise ConfigError(f"data.ids_per_batch: expected at most {len(both)} (the training ids "
                          f"of {cfg.data.dataset} at {root} with both RGB and IR images{held}), "
                          f"found {cfg.data.ids_per_batch}")
    return SplitPlan(full, split, val)


def prepare_data(cfg: Config, root: PathLike, plan: Optional[SplitPlan] = None) -> TrainData:
    """Load the split, carve validation ids, open the image cache over all training images
    (``plan``: the split already loaded by :func:`plan_split`).

    With ``cfg.data.skip_corrupt`` undecodable images are dropped from the training and
    validation lists (their cache rows are never used) and counted in a warning; the
    validation ids are carved before that, so they do not depend on which files are corrupt.
    An identity left without images keeps its class (the classifier's size stays that of
    the split) and is simply never drawn by the sampler.
    """
    root = Path(root)
    plan = plan if plan is not None else plan_split(cfg, root)
    full, split, val = plan.full, plan.split, plan.val
    # One cache over every training image (val ids included), RGB first then IR.
    images = open_images(root, full.rgb + full.ir, (cfg.data.height, cfg.data.width),
                         use_cache=cfg.data.cache, cache_dir=cfg.data.cache_dir or None,
                         skip_corrupt=cfg.data.skip_corrupt)
    bad = set(getattr(images, "bad", None) or [])
    vs = set(val)
    # (cache row, record) of every usable image; rows index full.rgb + full.ir.
    rgb_rows = [(i, r) for i, r in enumerate(full.rgb) if r.path not in bad]
    ir_rows = [(len(full.rgb) + i, r) for i, r in enumerate(full.ir) if r.path not in bad]
    if bad:
        n_rgb = sum(1 for r in full.rgb if r.path in bad)
        n_ir = sum(1 for r in full.ir if r.path in bad)
        shown = sorted(bad)[:3]
        log.warning("training skipped %d corrupt image(s): e.g. %s (%d RGB and %d IR records "
                    "dropped; data.skip_corrupt)", len(bad),
                    ", ".join(str(root / b) for b in shown), n_rgb, n_ir)
        train_rgb = [r for _, r in rgb_rows if r.pid not in vs]
        train_ir = [r for _, r in ir_rows if r.pid not in vs]
        if not train_rgb or not train_ir:
            raise DataError(f"training split of {cfg.data.dataset} at {root}: after skipping "
                            f"{len(bad)} corrupt image(s), {len(train_rgb)} RGB and "
                            f"{len(train_ir)} IR training images remain; expected both")
        split = TrainSplit(train_rgb, train_ir, split.labels)
    row_rgb = [i for i, r in rgb_rows if r.pid not in vs]
    row_ir = [i for i, r in ir_rows if r.pid not in vs]
    data = TrainData(split=split, root=root, images=RowView(images, np.array(row_rgb + row_ir)),
                     labels_rgb=np.array([split.labels[r.pid] for r in split.rgb], np.int64),
                     labels_ir=np.array([split.labels[r.pid] for r in split.ir], np.int64))
    if val:
        data.val_pids = val
        data.val_query = [r for _, r in ir_rows if r.pid in vs]
        data.val_gallery = [r for _, r in rgb_rows if r.pid in vs]
        data.val_rows_query = np.array([i for i, r in ir_rows if r.pid in vs], np.int64)
        data.val_rows_gallery = np.array([i for i, r in rgb_rows if r.pid in vs], np.int64)
        data.val_images = images
        if bad and (not data.val_query or not data.val_gallery):
            raise DataError(f"data.val_ids: after skipping {len(bad)} corrupt image(s), the "
                            f"held-out ids {val} keep {len(data.val_query)} IR and "
                            f"{len(data.val_gallery)} RGB images; expected at least one of each")
    return data


class RowView:
    """A view of an image source through a row map: ``batch(i)`` = ``source.batch(rows[i])``."""

    def __init__(self, source: Any, rows: np.ndarray) -> None:
        self.source, self.rows = source, rows

    def batch(self, indices: Any) -> np.ndarray:
        return self.source.batch(self.rows[np.asarray(indices, dtype=np.int64)])


#: Streams of :func:`step_generator`.
AUGMENT_STREAM, PAIRS_STREAM = 1, 2


def step_generator(seed: int, stream: int, iteration: int, group: int) -> torch.Generator:
    """The generator of one (iteration, pair group): a pure function of its arguments, so a
    resumed run and every DDP rank draw exactly what one uninterrupted process draws for
    that group, with no generator state to save or share."""
    s = np.random.SeedSequence([int(seed), stream, int(iteration), int(group)])
    return torch.Generator().manual_seed(int(s.generate_state(1, np.uint64)[0]))


def resolve_pair_groups(num_ids: int, world: int, requested: Optional[int]) -> int:
    """Number G of equal groups each global batch's N ids are split into for pair building
    (default: the number of processes, each building pairs among its own N/G ids)."""
    g = world if requested is None else int(requested)
    if g < 1 or g % world or num_ids % g:
        raise ConfigError(f"pair groups: expected a multiple of the {world} processes that "
                          f"divides data.ids_per_batch={num_ids}, found {g}")
    if num_ids // g < 2:
        raise ConfigError(f"pair groups: {g} groups of data.ids_per_batch={num_ids} leave fewer "
                          f"than 2 identities per group (no negative pairs)")
    return g


@dataclass
class LocalStep:
    """One rank's share of an iteration, ready for the model.

    x_rgb, x_ir: (d·n, 3, H, W), the n first draws then (open set, d = 2) the n second draws;
    y_rgb, y_ir: (d·n,); pairs: {set name: (ia, ib, target)} with indices into those rows.
    """

    x_rgb: Tensor
    x_ir: Tensor
    y_rgb: Tensor
    y_ir: Tensor
    pairs: dict[str, tuple[Tensor, Tensor, Tensor]]

    def pin_memory(self) -> "LocalStep":
        """Page-locked copy (DataLoader's ``pin_memory`` calls this), for non-blocking copies."""
        return self._map(torch.Tensor.pin_memory)

    def _map(self, fn: Any) -> "LocalStep":
        return LocalStep(fn(self.x_rgb), fn(self.x_ir), fn(self.y_rgb), fn(self.y_ir),
                         {k: tuple(fn(t) for t in v) for k, v in self.pairs.items()})  # type: ignore[misc]


def build_local_step(idx: np.ndarray, images: Any, n_rgb: int, labels_rgb: Tensor,
                     labels_ir: Tensor, transform: TrainTransform, neg_ratio: int, seed: int,
                     iteration: int, first_group: int, group_size: int) -> LocalStep:
    """Images, labels and pairs of this rank's identities of one iteration.

    idx: (n, 2·d) sampler rows ``(rgb, ir[, rgb2, ir2])``; they form n / group_size groups
    numbered from ``first_group`` (global group numbers). Each group is augmented and paired
    with its own :func:`step_generator` s, and pairs never cross groups: so a DDP rank
    holding groups [a, b) computes exactly what one process with the same G computes for
    them.
    """
    n, cols = idx.shape
    draws = cols // 2
    raw_rgb = [images.batch(idx[:, 2 * d]) for d in range(draws)]
    raw_ir = [images.batch(idx[:, 2 * d + 1] + n_rgb) for d in range(draws)]
    xr: list[list[Tensor]] = [[] for _ in range(draws)]
    xi: list[list[Tensor]] = [[] for _ in range(draws)]
    sets: dict[str, list[tuple[Tensor, Tensor, Tensor]]] = {}
    lab_r = [labels_rgb[torch.from_numpy(idx[:, 2 * d])] for d in range(draws)]
    lab_i = [labels_ir[torch.from_numpy(idx[:, 2 * d + 1])] for d in range(draws)]
    for j in range(n // group_size):
        o = j * group_size
        sl = slice(o, o + group_size)
        gen = step_generator(seed, AUGMENT_STREAM, iteration, first_group + j)
        for d in range(draws):
            xr[d].append(transform(raw_rgb[d][sl], gen, modality="rgb"))
            xi[d].append(transform(raw_ir[d][sl], gen, modality="ir"))
        pgen = step_generator(seed, PAIRS_STREAM, iteration, first_group + j)
        second = (lab_r[1][sl], lab_i[1][sl]) if draws == 2 else (None, None)
        got = build_pair_sets(lab_r[0][sl], lab_i[0][sl], neg_ratio, pgen, *second)
        for name, (ia, ib, t) in got.items():
            # The second draws sit after the n first ones in the same-modality tensors.
            off_b = o if name == "rgb-ir" else n + o
            sets.setdefault(name, []).append((ia + o, ib + off_b, t))
    pairs = {name: tuple(torch.cat([p[k] for p in parts]) for k in range(3))
             for name, parts in sets.items()}
    return LocalStep(torch.cat([t for d in range(draws) for t in xr[d]]),
                     torch.cat([t for d in range(draws) for t in xi[d]]),
                     torch.cat(lab_r), torch.cat(lab_i), pairs)  # type: ignore[arg-type]


class StepSource(torch.utils.data.Dataset):
    """This rank's LocalStep of any iteration: ``source[(iteration, idx)]`` with ``idx`` the
    sampler's (n, 2·d) rows. A pure function of its key, so background workers
    (``data.workers``) build exactly the steps the main process would."""

    def __init__(self, data: TrainData, transform: TrainTransform, neg_ratio: int, seed: int,
                 first_group: int, group_size: int) -> None:
        self.data, self.transform = data, transform
        self.neg_ratio, self.seed = neg_ratio, seed
        self.first_group, self.group_size = first_group, group_size
        self.labels_rgb = torch.from_numpy(data.labels_rgb)
        self.labels_ir = torch.from_numpy(data.labels_ir)

    def __getitem__(self, key: tuple[int, np.ndarray]) -> LocalStep:
        iteration, idx = key
        return build_local_step(idx, self.data.images, len(self.data.split.rgb), self.labels_rgb,
                                self.labels_ir, self.transform, self.neg_ratio, self.seed,
                                iteration, self.first_group, self.group_size)


def to_device(s: LocalStep, device: torch.device) -> LocalStep:
    if device.type == "cpu":
        return s
    nb = device.type == "cuda"  # non-blocking from pinned memory (data.workers > 0)
    return LocalStep(s.x_rgb.to(device, non_blocking=nb), s.x_ir.to(device, non_blocking=nb),
                     s.y_rgb.to(device, non_blocking=nb), s.y_ir.to(device, non_blocking=nb),
                     {k: tuple(t.to(device, non_blocking=nb) for t in v)
                      for k, v in s.pairs.items()})  # type: ignore[misc]

"""Cross-modality identity sampler and pair builder (paper Sec. III-C).

Each iteration takes N distinct identities that have images of both modalities and one RGB
and one IR image of each (2N images). ``build_pairs`` then forms the N positive pairs
(R_k, I_k) and r·N negative pairs (R_k, I_j), j ≠ k.

Identities are drawn by walking through random permutations of the eligible identities
(a new permutation when one is used up, never repeating an identity inside a batch), so all
identities are seen about equally often; the image of each modality is drawn uniformly.

Reproducibility: epoch e's whole plan is a pure function of (seed, e), so resuming only needs
(epoch, position). With DDP every rank builds the same global plan and takes its own
contiguous slice of each batch's N identities.

Open-set training (``draws=2``, paper appendix): each identity also gets a second RGB and a
second IR image (a different one when the identity has several), so that same-modality
positive pairs compare two images; :func:`build_pair_sets` then adds RGB–RGB and IR–IR pairs
1:1:1 with the RGB–IR ones.
"""
from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import torch
from torch import Tensor

from vireid.errors import ConfigError, DataError

Batch = list[tuple[int, ...]]


class CrossModalitySampler:
    """Batch sampler over a TrainSplit's two modality lists.

    Args:
        labels_rgb: label of each RGB record (index i ↔ ``split.rgb[i]``).
        labels_ir: label of each IR record.
        num_ids: N, identities per global batch (paper 32).
        iters_per_epoch: number of batches that make one epoch.
        seed: base seed; epoch e uses ``np.random.default_rng([seed, e])``.
        rank, world_size: DDP sharding; N must be divisible by world_size; rank r yields
            identities ``[r·N/ws, (r+1)·N/ws)`` of each global batch.
        draws: images per modality and identity: 1 (the paper's closed-set batches) or 2
            (open-set training: a second RGB and IR image, distinct from the first when the
            identity has more than one).

    Iteration yields, for the remaining batches of the current epoch, a list of
    ``(rgb_index, ir_index)`` tuples (N / world_size of them; the two images of one identity;
    with ``draws=2`` ``(rgb, ir, rgb2, ir2)``), then advances to the next epoch. Usable as a DataLoader ``batch_sampler`` with a dataset
    indexed by such tuples.

    Resume: ``state_dict()`` holds ``epoch`` and ``position`` (batches of that epoch already
    yielded). A DataLoader prefetches, so a trainer should save ``state_dict()`` with the
    number of batches it actually consumed: ``sampler.state_dict(position=consumed)``.
    """

    def __init__(self, labels_rgb: Sequence[int], labels_ir: Sequence[int], num_ids: int,
                 iters_per_epoch: int, seed: int = 0, rank: int = 0, world_size: int = 1,
                 draws: int = 1) -> None:
        if draws not in (1, 2):
            raise ConfigError(f"sampler draws: expected 1 or 2 images per modality, got {draws}")
        self.draws = int(draws)
        if num_ids < 1:
            raise ConfigError(f"sampler num_ids: expected >= 1, got {num_ids}")
        if iters_per_epoch < 1:
            raise ConfigError(f"sampler iters_per_epoch: expected >= 1, got {iters_per_epoch}")
        if world_size < 1 or not 0 <= rank < world_size:
            raise ConfigError(f"sampler rank/world_size: got rank {rank}, world_size {world_size}")
        if num_ids % world_size:
            raise ConfigError(
                f"identities per batch ({num_ids}) must be divisible by the number of processes "
                f"({world_size})"
            )
        self.num_ids, self.iters_per_epoch, self.seed = int(num_ids), int(iters_per_epoch), int(seed)
        self.rank, self.world_size = int(rank), int(world_size)
        by_rgb: dict[int, list[int]] = {}
        by_ir: dict[int, list[int]] = {}
        for i, lab in enumerate(labels_rgb):
            by_rgb.setdefault(int(lab), []).append(i)
        for i, lab in enumerate(labels_ir):
            by_ir.setdefault(int(lab), []).append(i)
        self.identities = np.array(sorted(set(by_rgb) & set(by_ir)), dtype=np.int64)
        if len(self.identities) < self.num_ids:
            raise DataError(
                f"the sampler needs {self.num_ids} identities with both RGB and IR images per "
                f"batch; the training split has only {len(self.identities)}"
            )
        self._rgb = [np.asarray(by_rgb[int(p)], dtype=np.int64) for p in self.identities]
        self._ir = [np.asarray(by_ir[int(p)], dtype=np.int64) for p in self.identities]
        self.epoch = 0
        self.position = 0

    def __len__(self) -> int:
        return self.iters_per_epoch

    def set_epoch(self, epoch: int) -> None:
        """Start epoch ``epoch`` from its first batch."""
        self.epoch, self.position = int(epoch), 0

    def epoch_plan(self, epoch: int) -> np.ndarray:
        """Global plan of one epoch: (iters_per_epoch, N, 2·draws) int64 of
        (rgb_index, ir_index[, rgb_index2, ir_index2])."""
        rng = np.random.default_rng([self.seed, int(epoch)])
        k, n = len(self.identities), self.num_ids
        ids = np.empty((self.iters_per_epoch, n), dtype=np.int64)
        perm, at = rng.permutation(k), 0
        for b in range(self.iters_per_epoch):
            chosen: list[int] = []
            while len(chosen) < n:
                if at == k:
                    perm, at = rng.permutation(k), 0
                cand = int(perm[at])
                at += 1
                if cand in chosen:
                    # Only happens right after a new permutation starts; defer it to the
                    # end of that permutation so it is not lost.
                    perm = np.append(np.delete(perm, at - 1), cand)
                    at -= 1
                    continue
                chosen.append(cand)
            ids[b] = chosen
        plan = np.empty((self.iters_per_epoch, n, 2 * self.draws), dtype=np.int64)
        for b in range(self.iters_per_epoch):
            for t, idx in enumerate(ids[b]):
                if self.draws == 1:  # the closed-set stream, unchanged
                    plan[b, t, 0] = self._rgb[idx][rng.integers(len(self._rgb[idx]))]
                    plan[b, t, 1] = self._ir[idx][rng.integers(len(self._ir[idx]))]
                else:
                    r2, i2 = self._two(self._rgb[idx], rng), self._two(self._ir[idx], rng)
                    plan[b, t] = (r2[0], i2[0], r2[1], i2[1])
        return plan

    @staticmethod
    def _two(images: np.ndarray, rng: np.random.Generator) -> tuple[int, int]:
        """Two distinct images of one identity (the same one twice if it has only one)."""
        if len(images) < 2:
            return int(images[0]), int(images[0])
        a, b = rng.choice(len(images), size=2, replace=False)
        return int(images[a]), int(images[b])

    def _local(self, batch: np.ndarray) -> Batch:
        per = self.num_ids // self.world_size
        part = batch[self.rank * per:(self.rank + 1) * per]
        return [tuple(int(v) for v in row) for row in part]

    def __iter__(self) -> Iterator[Batch]:
        plan = self.epoch_plan(self.epoch)
        while self.position < self.iters_per_epoch:
            batch = plan[self.position]
            self.position += 1
            yield self._local(batch)
        self.epoch, self.position = self.epoch + 1, 0

    def state_dict(self, position: int | None = None) -> dict[str, int]:
        """Resume state; ``position`` overrides the count of batches consumed this epoch."""
        return {"seed": self.seed, "num_ids": self.num_ids, "iters_per_epoch": self.iters_per_epoch,
                "draws": self.draws, "epoch": self.epoch, "position": self.position if position is None else int(position)}

    def load_state_dict(self, state: dict[str, int]) -> None:
        for key in ("seed", "num_ids", "iters_per_epoch", "draws"):
            if key in state and int(state[key]) != getattr(self, key):
                raise ConfigError(
                    f"sampler state was saved with {key}={state[key]}, this run has "
                    f"{key}={getattr(self, key)}"
                )
        pos = int(state["position"])
        if not 0 <= pos <= self.iters_per_epoch:
            raise ConfigError(f"sampler state position {pos} outside 0..{self.iters_per_epoch}")
        self.epoch, self.position = int(state["epoch"]), pos
        if self.position == self.iters_per_epoch:
            self.epoch, self.position = self.epoch + 1, 0


def build_pairs(labels_rgb_batch: Tensor, labels_ir_batch: Tensor, neg_ratio: int = 3,
                generator: torch.Generator | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """Pairs of one batch: N positives (R_k, I_k) and r·N negatives (R_k, I_j), j ≠ k.

    labels_rgb_batch, labels_ir_batch: (N,) labels of the k-th RGB and IR image (normally
    equal, one identity per k). For each k, r partners j ≠ k are drawn without replacement
    from the other N − 1 positions (with replacement when r > N − 1).

    Returns ia, ib (M,) long indices into the RGB / IR batch and target (M,) float with
    0 = same label, 1 = different (computed from the labels, so a repeated identity in the
    batch is labelled correctly). M = N + r·N; positives first, then negatives grouped by k.
    """
    la = torch.as_tensor(labels_rgb_batch).reshape(-1)
    lb = torch.as_tensor(labels_ir_batch).reshape(-1)
    n = la.numel()
    if lb.numel() != n:
        raise ValueError(f"build_pairs: {n} RGB labels but {lb.numel()} IR labels")
    if neg_ratio < 0:
        raise ConfigError(f"neg_ratio: expected >= 0, got {neg_ratio}")
    pos = torch.arange(n)
    if neg_ratio == 0 or n < 2:
        ia, ib = pos, pos
    else:
        scores = torch.rand(n, n - 1, generator=generator)
        if neg_ratio <= n - 1:
            # Random ranks among the N−1 others: without replacement, vectorised.
            off = scores.argsort(dim=1)[:, :neg_ratio]
        else:
            off = torch.randint(0, n - 1, (n, neg_ratio), generator=generator)
        # Map 0..N−2 onto the N−1 positions j ≠ k.
        j = off + (off >= pos[:, None]).long()
        ia = torch.cat([pos, pos.repeat_interleave(neg_ratio)])
        ib = torch.cat([pos, j.reshape(-1)])
    target = (la[ia] != lb[ib]).float()
    return ia, ib, target


#: Names of the pair sets of :func:`build_pair_sets`, in order.
PAIR_SETS = ("rgb-ir", "rgb-rgb", "ir-ir")


def build_pair_sets(labels_rgb: Tensor, labels_ir: Tensor, neg_ratio: int = 3,
                    generator: torch.Generator | None = None,
                    labels_rgb2: Tensor | None = None, labels_ir2: Tensor | None = None
                    ) -> dict[str, tuple[Tensor, Tensor, Tensor]]:
    """The pair sets of one group of n identities.

    Always ``"rgb-ir"``: :func:`build_pairs` of (R_k, I_k), indices into the first RGB / IR
    images. With ``labels_rgb2`` and ``labels_ir2`` (the second draws, open-set training)
    also ``"rgb-ir"``'s same-modality siblings ``"rgb-rgb"`` (side a: first RGB images, side b:
    second RGB images) and ``"ir-ir"``, built the same way, so the three sets have n·(1 + r)
    pairs each: 1:1:1 as in the paper's appendix. Draws from ``generator`` in the order
    rgb-ir, rgb-rgb, ir-ir.

    Returns {name: (ia, ib, target)}; target 0 = same identity, 1 = different.
    """
    out = {"rgb-ir": build_pairs(labels_rgb, labels_ir, neg_ratio, generator)}
    if (labels_rgb2 is None) != (labels_ir2 is None):
        raise ValueError("build_pair_sets: give both second-draw label sets or neither")
    if labels_rgb2 is not None:
        out["rgb-rgb"] = build_pairs(labels_rgb, labels_rgb2, neg_ratio, generator)
        out["ir-ir"] = build_pairs(labels_ir, labels_ir2, neg_ratio, generator)
    return out

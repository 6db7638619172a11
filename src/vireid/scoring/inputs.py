"""What the scoring modes read: feature sets (:class:`Features`) and galleries.

:func:`as_features` turns anything with ``.F`` (N, C, h, w) and/or ``.G`` (N, C) — numpy
arrays or torch tensors, a :class:`vireid.engine.features.FeatureSet`, a shard of a gallery
index — into float32 torch :class:`Features`; :meth:`Features.rows` takes rows as a view that
remembers its parent, which is how a memoised :class:`vireid.scoring.scorers.ScoringContext`
computes on a whole set once and indexes it. :class:`GalleryReader` reads a gallery for a
mode's top-k, shard by shard: an index-like object or a feature set.
"""
from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, Optional, Union

import numpy as np
import torch
from torch import Tensor

from vireid.errors import ConfigError

ArrayLike = Union[np.ndarray, Tensor]


def _tensor(x: Any) -> Optional[Tensor]:
    """float32 torch view of a numpy array or tensor (read-only or strided arrays copied)."""
    if x is None:
        return None
    if isinstance(x, Tensor):
        return x if x.dtype == torch.float32 or not x.is_floating_point() else x.float()
    a = np.asarray(x, dtype=np.float32)
    if not (a.flags.writeable and a.flags.c_contiguous):
        a = np.array(a, dtype=np.float32, order="C")  # e.g. a memory-mapped index shard
    return torch.from_numpy(a)


class Features:
    """Feature rows as the scoring modes read them.

    ``F``: (N, C, h, w) float32 feature maps or None; ``G``: (N, C) global features or None
    (at least one is given); ``modalities``: N strings ("rgb"/"ir") or None when unknown.
    A set made by :meth:`rows` is a view: it remembers the set it was taken from (``parent``,
    ``index``), indexes its F and G only when they are read, and lets a memoised context
    compute on the whole set once.
    """

    def __init__(self, F: Optional[Tensor] = None, G: Optional[Tensor] = None,
                 modalities: Optional[Sequence[str]] = None) -> None:
        if F is None and G is None:
            raise ConfigError("features: expected feature maps F (N, C, h, w) or global "
                              "features G (N, C), found neither")
        for name, t, dim in (("F", F, 4), ("G", G, 2)):
            if t is not None and t.dim() != dim:
                raise ConfigError(f"features: expected {name} with {dim} dimensions, found "
                                  f"shape {tuple(t.shape)}")
        sizes = {len(t) for t in (F, G) if t is not None}
        if modalities is not None:
            sizes.add(len(modalities))
        if len(sizes) != 1:
            raise ConfigError(f"features: F, G and modalities hold different numbers of rows "
                              f"({sorted(sizes)})")
        self._F, self._G = F, G
        self.modalities: Optional[tuple[str, ...]] = (None if modalities is None
                                                      else tuple(modalities))
        self._n = sizes.pop()
        self.parent: Optional[Features] = None
        self.index: Optional[Tensor] = None

    @property
    def F(self) -> Optional[Tensor]:
        if self.parent is None or self.parent.F is None:
            return self._F
        return self.parent.F[self.index]

    @property
    def G(self) -> Optional[Tensor]:
        if self.parent is None or self.parent.G is None:
            return self._G
        return self.parent.G[self.index]

    def __len__(self) -> int:
        return self._n

    def __repr__(self) -> str:
        shapes = ", ".join(f"{k}={tuple(t.shape)}" for k, t in (("F", self._F), ("G", self._G))
                           if t is not None)
        return f"Features({len(self)} rows{', view' if self.parent is not None else ''}" \
               f"{', ' + shapes if shapes else ''})"

    def rows(self, rows: Union[Sequence[int], np.ndarray, Tensor]) -> "Features":
        """The rows ``rows`` as a view of the set they come from (nothing copied yet)."""
        idx = torch.as_tensor(np.asarray(rows, dtype=np.int64))
        root, base = self.origin()
        mods = None if self.modalities is None else [self.modalities[int(i)] for i in idx]
        view = Features.__new__(Features)
        view._F = view._G = None
        view.modalities = None if mods is None else tuple(mods)
        view._n = len(idx)
        view.parent, view.index = root, (idx if base is None else base[idx])
        return view

    def origin(self) -> tuple["Features", Optional[Tensor]]:
        """(the set these rows were first taken from, their rows there; None = all)."""
        return (self, None) if self.parent is None else (self.parent, self.index)


def as_features(x: Any) -> Features:
    """A :class:`Features` of ``x``: a Features, or anything with ``.F`` and/or ``.G`` (numpy
    arrays or tensors; a :class:`vireid.engine.features.FeatureSet`, an index shard) and
    optionally ``.modalities`` (one per row) or ``.modality`` (one for all)."""
    if isinstance(x, Features):
        return x
    F, G = getattr(x, "F", None), getattr(x, "G", None)
    if callable(G) or callable(F):
        raise ConfigError(f"features: expected .F/.G arrays, found methods on a "
                          f"{type(x).__name__} (a gallery index: pass it to a mode's topk)")
    F, G = _tensor(F), _tensor(G)
    mods = getattr(x, "modalities", None)
    if mods is None and isinstance(getattr(x, "modality", None), str):
        n = len(G) if G is not None else (len(F) if F is not None else 0)
        mods = (x.modality,) * n
    return Features(F, G, None if mods is None else tuple(mods))


class GalleryReader:
    """What a mode's top-k reads of a gallery: an index-like object (``count``, ``G()``,
    ``iter_shards()`` -> (start, F, G), ``take_F(rows)``, ``modality``; see
    :class:`vireid.apps.search.Gallery`) or a feature set (one shard)."""

    def __init__(self, gallery: Any) -> None:
        self.obj = gallery
        self.indexed = hasattr(gallery, "iter_shards")
        self.fs = None if self.indexed else as_features(gallery)
        self.modality: Optional[str] = getattr(gallery, "modality", None) if self.indexed else None
        self.count = int(gallery.count) if self.indexed else len(self.fs)  # type: ignore[arg-type]

    def G(self) -> ArrayLike:
        if self.indexed:
            return self.obj.G()
        if self.fs.G is None:  # type: ignore[union-attr]
            raise ConfigError("this scoring mode needs the gallery's global features G")
        return self.fs.G  # type: ignore[union-attr]

    def _mods(self, n: int) -> Optional[tuple[str, ...]]:
        return None if self.modality is None else (self.modality,) * n

    def shards(self) -> Iterator[tuple[int, Features]]:
        if not self.indexed:
            yield 0, self.fs  # type: ignore[misc]
            return
        for start, F, G in self.obj.iter_shards():
            yield start, Features(_tensor(F), _tensor(G), self._mods(len(G)))

    def take(self, rows: np.ndarray) -> Features:
        """Feature maps of gallery rows ``rows`` (each read once), without G."""
        if not self.indexed:
            return self.fs.rows(rows)  # type: ignore[union-attr]
        return Features(_tensor(self.obj.take_F(rows)), None, self._mods(len(rows)))

    def cache(self) -> dict[str, Any]:
        """Search structures kept on the gallery object (normalised G, a FAISS index);
        dropped when its row count changes (an extended index is a new object anyway)."""
        if not self.indexed:
            return {}
        cache = getattr(self.obj, "_search_cache_", None)
        if cache is None or cache.get("count") != self.count:
            cache = {"count": self.count}
            try:
                self.obj._search_cache_ = cache
            except AttributeError:  # an object that refuses attributes: no caching
                pass
        return cache

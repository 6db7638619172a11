"""Search a gallery (an index, or features in memory) with query features.

Every scoring mode of :data:`vireid.scoring.scorers.SCORING_MODES` searches through its own
entry (:meth:`~vireid.scoring.scorers.ScoringMode.topk`): the best ``topk`` gallery items of
each query by the mode's distance, ties by lower gallery row (:mod:`vireid.scoring.topk`),
reported with the mode's native score (:attr:`~vireid.scoring.scorers.ScoringMode.native`).
The built-in modes (docs/architecture.md, "Features and scoring"):

* ``simplified``: cosine similarity of the global features G; **higher = more similar**.
  Two exact backends give the same ranking: FAISS (``IndexFlatIP`` on L2-normalised G, the
  optional ``faiss-cpu`` package, imported lazily) and a chunked torch search.
  ``backend="auto"`` picks FAISS for galleries of at least
  :data:`vireid.scoring.topk.FAISS_MIN_GALLERY` images when it is installed, else torch.
* ``full``: the CCN's D_RI for every gallery item, gallery shard by shard; **lower = more
  similar** (D is the probability of "different").
* ``rerank``: the simplified top-``rerank_depth`` candidates (default: ``topk``) re-ordered by
  D_RI; the score shown is D (lower = more similar). Candidates beyond the top-K are not
  returned (the eval-time rerank puts them behind, in simplified order; search only shows
  the top).
* ``fused``: (1 − w)(1 − S)/2 + w·D_RI for every gallery item, shard by shard, w =
  ``fusion_weight`` (default the model config's ``eval.fusion_weight``); lower = more similar.
* ``fused-rerank``: as ``rerank``, the candidates ordered by that fused value instead of D.

Which side of the CCN a query takes (the CCN is not symmetric with ``share_fc=False`` and
its sides are fixed by modality): side "a" is RGB, side "b" IR in cross-modality search; when
query and gallery have the same modality the query is side "a" (the "first image").

Pictures are drawn on a :class:`matplotlib.figure.Figure` with the Agg canvas, so importing
this module changes no global matplotlib state (no backend switch, no pyplot).
"""
from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional, Protocol, Union

import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from vireid.apps.index import GalleryIndex, embed_images, load_checkpoint_model
from vireid.data.images import decode_image
from vireid.data.records import IR, RGB
from vireid.errors import ConfigError, DataError
from vireid.scoring.fusion import check_fusion_weight
from vireid.scoring.inputs import Features
from vireid.scoring.scorers import SCORING_MODES, ScoringContext, get_scoring, query_side
from vireid.utils.atomic import atomic_path

log = logging.getLogger(__name__)

ArrayLike = Union[np.ndarray, torch.Tensor]


class Gallery(Protocol):
    """What search needs of a gallery (a :class:`vireid.apps.index.GalleryIndex` qualifies)."""

    paths: list[str]
    labels: Optional[list[str]]

    @property
    def count(self) -> int: ...

    @property
    def modality(self) -> str: ...

    def G(self) -> np.ndarray: ...

    def iter_shards(self) -> Iterator[tuple[int, np.ndarray, np.ndarray]]: ...

    def take_F(self, rows: Sequence[int] | np.ndarray) -> np.ndarray: ...


@dataclass
class ArrayGallery:
    """A gallery held in memory: F (N, C, h, w), G (N, C), N paths, optional labels.

    ``shard_rows`` splits it into shards like an index's (for tests and benchmarks).
    """

    F: np.ndarray
    G_: np.ndarray
    paths: list[str]
    modality: str = RGB
    labels: Optional[list[str]] = None
    shard_rows: int = 1 << 30

    @property
    def count(self) -> int:
        return len(self.G_)

    def G(self) -> np.ndarray:
        return self.G_

    def iter_shards(self) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
        for s in range(0, self.count, self.shard_rows):
            yield s, self.F[s:s + self.shard_rows], self.G_[s:s + self.shard_rows]

    def take_F(self, rows: Sequence[int] | np.ndarray) -> np.ndarray:
        return np.asarray(self.F[np.asarray(rows, dtype=np.int64)])


@dataclass(frozen=True)
class Match:
    """One ranked gallery item: ``row`` of the gallery, its path, score and label."""

    rank: int
    row: int
    path: str
    score: float
    label: Optional[str] = None


# --------------------------------------------------------------------------- search
def search(gallery: Gallery, query_F: Optional[ArrayLike], query_G: ArrayLike, *,
           scoring: str = "simplified", topk: int = 10, query_modality: Optional[str] = None,
           ccn: Optional[torch.nn.Module] = None, backend: str = "auto",
           rerank_depth: Optional[int] = None, chunk_size: int = 256,
           fusion_weight: Optional[float] = None) -> list[list[Match]]:
    """Ranked matches of each query, best first.

    Args:
        gallery: a :class:`vireid.apps.index.GalleryIndex` or :class:`ArrayGallery`.
        query_F: (Q, C, h, w) feature maps (unused by ``simplified``; may be None there).
        query_G: (Q, C) global features.
        scoring: "simplified", "full" or "rerank" (see the module docstring).
        topk: matches returned per query (at most the gallery size).
        query_modality: "rgb" or "ir"; None = the other modality than the gallery's.
        ccn: the model's CCN (``model.ccn``); required by full and rerank.
        backend: simplified stage: "auto", "faiss" or "torch".
        rerank_depth: rerank: simplified candidates re-scored (≥ topk; None = topk).
        chunk_size: queries per full-mode chunk.
        fusion_weight: fused: the weight w of D_RI (None = eval.fusion_weight's default).

    Returns:
        One list of :class:`Match` per query; ``score`` as :attr:`vireid.scoring.scorers.ScoringMode.native` says.
    """
    return _search(gallery, query_F, query_G, scoring=scoring, topk=topk,
                   query_modality=query_modality, ccn=ccn, backend=backend,
                   rerank_depth=rerank_depth, chunk_size=chunk_size,
                   fusion_weight=fusion_weight)[0]


def _search(gallery: Gallery, query_F: Optional[ArrayLike], query_G: ArrayLike, *,
            scoring: str, topk: int, query_modality: Optional[str], ccn: Optional[torch.nn.Module],
            backend: str, rerank_depth: Optional[int], chunk_size: int,
            fusion_weight: Optional[float] = None) -> tuple[list[list[Match]], Optional[str]]:
    """:func:`search`, and the cosine search backend that ran (None when none did)."""
    mode = get_scoring(scoring)
    if topk < 1:
        raise ConfigError(f"topk: expected an integer ≥ 1, found {topk}")
    qmod = query_modality or (IR if gallery.modality == RGB else RGB)
    side = query_side(qmod, gallery.modality)
    if mode.needs_ccn and ccn is None:
        raise ConfigError(f"scoring {scoring} needs the model's CCN (ccn=model.ccn)")
    if mode.uses_maps and query_F is None:
        raise ConfigError(f"scoring {scoring} needs the queries' feature maps F")
    depth = topk if rerank_depth is None else int(rerank_depth)
    if mode.uses_topk and depth < topk:
        raise ConfigError(f"rerank_depth: expected ≥ topk ({topk}), found {depth}")
    if gallery.count == 0:
        raise DataError("the gallery is empty")
    q = Features(None if query_F is None else torch.from_numpy(_np32(query_F)),
                 torch.from_numpy(_np32(query_G)))
    ctx = ScoringContext(ccn=ccn, query_side=side, topk=depth, chunk_size=chunk_size,
                         search_backend=backend)
    if fusion_weight is not None:
        ctx.fusion_weight = check_fusion_weight(fusion_weight)
    dist, rows = mode.topk(q, gallery, topk, ctx)
    scores = mode.native_score(dist).numpy()
    rows = rows.numpy()
    log.debug("%s search, cosine backend %s", scoring, ctx.backend_used)
    out = []
    for q in range(len(rows)):
        out.append([Match(r + 1, int(row), gallery.paths[int(row)], float(s),
                          gallery.labels[int(row)] if gallery.labels is not None else None)
                    for r, (row, s) in enumerate(zip(rows[q], scores[q]))])
    return out, ctx.backend_used


def _np32(x: ArrayLike) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    return np.array(x, dtype=np.float32, order="C")  # a writable copy: torch.from_numpy


@dataclass
class SearchResult:
    """Result of :func:`search_images`: per query path, its ranked matches."""

    queries: list[str]
    matches: list[list[Match]]
    scoring: str
    query_modality: str
    gallery_modality: str
    index: str
    backend: Optional[str] = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def score_meaning(self) -> str:
        return SCORING_MODES[self.scoring].native

    def to_dict(self) -> dict[str, Any]:
        return {"index": self.index, "scoring": self.scoring, "score": self.score_meaning,
                "higher_is_better": SCORING_MODES[self.scoring].higher_is_better,
                "query_modality": self.query_modality, "gallery_modality": self.gallery_modality,
                "backend": self.backend, **self.extra,
                "results": [{"query": q, "matches": [asdict(m) for m in ms]}
                            for q, ms in zip(self.queries, self.matches)]}


def search_images(index: Union[str, os.PathLike, Any], query_paths: Sequence[Union[str, os.PathLike]],
                  *, checkpoint: Optional[Union[str, os.PathLike]] = None,
                  query_modality: Optional[str] = None, scoring: str = "simplified",
                  topk: int = 10, backend: str = "auto", rerank_depth: Optional[int] = None,
                  batch_size: int = 64, chunk_size: int = 256,
                  fusion_weight: Optional[float] = None,
                  device: Union[str, torch.device] = "cpu") -> SearchResult:
    """Embed query images with the index's model and search the index.

    The model is the checkpoint recorded in the index unless ``checkpoint`` is given; its
    weights must be those the index was built with (else :class:`CheckpointError`). Queries
    go through ``query_modality``'s path (default: the modality other than the gallery's)
    with the index's flip setting. ``fusion_weight`` (fused mode): default the model
    config's eval.fusion_weight.
    """
    ix = index if isinstance(index, GalleryIndex) else GalleryIndex.open(index)
    if not query_paths:
        raise DataError("no query images given")
    ckpt = checkpoint if checkpoint is not None else ix.manifest["model"]["checkpoint"]
    model, cfg, ident = load_checkpoint_model(ckpt, device)
    ix.check_model(ident.model_digest, ident.config_digest)
    qmod = query_modality or (IR if ix.modality == RGB else RGB)
    paths = [Path(p).resolve().as_posix() for p in query_paths]
    w = check_fusion_weight(cfg.eval.fusion_weight if fusion_weight is None else fusion_weight)
    qF, qG = embed_images(model, cfg, paths, qmod, batch_size=batch_size, flip=ix.flip, device=device)
    matches, used = _search(ix, qF, qG, scoring=scoring, topk=topk, query_modality=qmod,
                            ccn=model.ccn, backend=backend, rerank_depth=rerank_depth,
                            chunk_size=chunk_size, fusion_weight=w)
    mode = get_scoring(scoring)
    extra: dict[str, Any] = {"rerank_depth": rerank_depth or topk} if mode.uses_topk else {}
    if mode.uses_fusion_weight:
        extra["fusion_weight"] = w
    return SearchResult(paths, matches, scoring, qmod, ix.modality, str(ix.path), used, extra)


def save_match_figure(result: SearchResult, out: Union[str, os.PathLike], max_matches: int = 10,
                      size: tuple[int, int] = (128, 64)) -> Path:
    """A picture of each query (left) beside its top matches with their scores; one row per
    query. Matches whose label equals the query folder's name are framed green, others red
    (no frame when the gallery has no labels). Written atomically (PNG)."""
    out = Path(out)
    nq = len(result.queries)
    ncol = 1 + min(max_matches, max((len(m) for m in result.matches), default=0))
    fig = Figure(figsize=(1.3 * ncol, 2.4 * nq))
    FigureCanvasAgg(fig)  # the figure's own canvas: no pyplot, no global backend
    axes = fig.subplots(nq, ncol, squeeze=False)
    for q, (qpath, ms) in enumerate(zip(result.queries, result.matches)):
        qlabel = Path(qpath).parent.name
        axes[q][0].imshow(decode_image(qpath, size))
        axes[q][0].set_title(f"query ({result.query_modality})", fontsize=7)
        for c in range(1, ncol):
            ax = axes[q][c]
            ax.set_xticks([])
            ax.set_yticks([])
            if c - 1 >= len(ms):
                ax.axis("off")
                continue
            m = ms[c - 1]
            ax.imshow(decode_image(m.path, size))
            ax.set_title(f"#{m.rank} {m.score:.3f}" + (f"\n{m.label}" if m.label else ""), fontsize=7)
            if m.label is not None:
                color = "green" if m.label == qlabel else "red"
                for spine in ax.spines.values():
                    spine.set_edgecolor(color)
                    spine.set_linewidth(2.5)
        axes[q][0].set_xticks([])
        axes[q][0].set_yticks([])
    fig.suptitle(f"{result.scoring}: {result.score_meaning}", fontsize=8)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    return out

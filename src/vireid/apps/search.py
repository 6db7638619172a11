"""Search a gallery (an index, or features in memory) with query features.

Three scorings, as in evaluation (docs/architecture.md, "Features and scoring"):

* ``simplified``: cosine similarity of the global features G; **higher = more similar**.
  Two exact backends give the same ranking (ties aside): FAISS (``IndexFlatIP`` on
  L2-normalised G, i.e. exact cosine; the optional ``faiss-cpu`` package, imported lazily)
  and a chunked torch search (gallery blocks of about 2^24 / Q rows, running top-K).
  ``backend="auto"`` picks FAISS for galleries of at least :data:`FAISS_MIN_GALLERY` images
  when it is installed, else torch (see that constant for why it defaults to torch).
* ``full``: the CCN's D_RI for every gallery item (:func:`vireid.scoring.scorers.score_full`,
  gallery shard by shard); **lower = more similar** (D is the probability of "different").
* ``rerank``: the simplified top-``rerank_depth`` candidates (default: ``topk``) re-ordered by
  D_RI; the score shown is D (lower = more similar). Ties in D keep the simplified order.
  Candidates beyond the top-K are not returned (the eval-time rerank puts them behind, in
  simplified order; search only shows the top).

Which side of the CCN a query takes (the CCN is not symmetric with ``share_fc=False`` and
its sides are fixed by modality): side "a" is RGB, side "b" IR in cross-modality search; when
query and gallery have the same modality the query is side "a" (the "first image").
"""
from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional, Protocol, Union

import matplotlib

matplotlib.use("Agg")  # files only, never a window
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from vireid.apps.index import GalleryIndex, embed_images, load_checkpoint_model  # noqa: E402
from vireid.data.images import decode_image  # noqa: E402
from vireid.data.records import IR, RGB  # noqa: E402
from vireid.errors import ConfigError, DataError  # noqa: E402
from vireid.scoring.scorers import (SCORING_MODES, full_pair_fn, get_scoring,  # noqa: E402
                                    query_side, score_full)
from vireid.utils.atomic import atomic_path  # noqa: E402

log = logging.getLogger(__name__)

BACKENDS = ("auto", "faiss", "torch")
#: ``backend="auto"`` uses FAISS (when installed) from this many gallery images on; None =
#: never. Measured on the reference 2-core CPU (docs/scaling.md), the exact FAISS flat index
#: (faiss-cpu 1.15, AVX2) was slower than the chunked torch search at every gallery size up
#: to 10^6 and every batch size from 1 to 100 queries, so auto picks torch there. Set it
#: where FAISS is faster (other CPUs, a FAISS GPU build), or pass backend="faiss".
FAISS_MIN_GALLERY: Optional[int] = None

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


# --------------------------------------------------------------------------- helpers
def _np32(x: ArrayLike) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    return np.ascontiguousarray(x, dtype=np.float32)


def l2_normalize(x: ArrayLike, eps: float = 1e-12) -> np.ndarray:
    """Rows of ``x`` (N, C) scaled to unit length (zero rows stay zero), float32."""
    x = _np32(x)
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norm, eps)


def faiss_available() -> bool:
    """True when the optional ``faiss`` module can be imported."""
    try:
        import faiss  # noqa: F401
    except ImportError:
        return False
    return True


def resolve_backend(backend: str, gallery_size: int) -> str:
    """``"faiss"`` or ``"torch"`` for a requested backend and gallery size.

    Raises:
        ConfigError: unknown backend, or ``faiss`` requested but not installed.
    """
    if backend not in BACKENDS:
        raise ConfigError(f"search backend: expected one of {', '.join(BACKENDS)}, found {backend!r}")
    if backend == "faiss":
        if not faiss_available():
            raise ConfigError("search backend faiss: the faiss module is not installed "
                              "(pip install faiss-cpu, or `pip install vireid[faiss]`); "
                              "use --backend torch")
        return "faiss"
    if backend == "torch":
        return "torch"
    if FAISS_MIN_GALLERY is not None and gallery_size >= FAISS_MIN_GALLERY and faiss_available():
        return "faiss"
    return "torch"


def _merge_topk(best_s: Optional[torch.Tensor], best_i: Optional[torch.Tensor], s: torch.Tensor,
                i: torch.Tensor, k: int, largest: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Running top-k: keep the k best of the current best and a new block (Q, ·)."""
    if best_s is not None:
        s = torch.cat([best_s, s], dim=1)
        i = torch.cat([best_i, i], dim=1)
    kk = min(k, s.shape[1])
    top_s, pos = torch.topk(s, kk, dim=1, largest=largest, sorted=True)
    return top_s, torch.gather(i, 1, pos)


def _order_rows(scores: torch.Tensor, idx: torch.Tensor, largest: bool
                ) -> tuple[np.ndarray, np.ndarray]:
    """Deterministic order of each row: by score, ties by gallery row (topk's tie order is
    unspecified)."""
    s, i = scores.numpy(), idx.numpy()
    out_s, out_i = np.empty_like(s), np.empty_like(i)
    for q in range(len(s)):
        key = np.lexsort((i[q], -s[q] if largest else s[q]))
        out_s[q], out_i[q] = s[q][key], i[q][key]
    return out_s, out_i


# --------------------------------------------------------------------------- simplified stage
def simplified_topk(query_G: ArrayLike, gallery: Union[Gallery, ArrayLike], k: int,
                    backend: str = "auto", block_elems: int = 1 << 24
                    ) -> tuple[np.ndarray, np.ndarray, str]:
    """Top-k cosine similarities of each query against the gallery's G.

    query_G: (Q, C); gallery: a Gallery or a (N, C) array of global features.
    block_elems: the torch backend scores gallery blocks of ``block_elems // Q`` rows
    at a time, which bounds its memory to about 4·block_elems bytes.
    Returns (scores (Q, k') float32 descending, rows (Q, k') int64, backend used),
    k' = min(k, N). Ties are ordered by gallery row.
    """
    is_gallery = hasattr(gallery, "G") and callable(gallery.G)
    gG = gallery.G() if is_gallery else _np32(gallery)
    n = len(gG)
    if n == 0:
        raise DataError("the gallery is empty")
    if k < 1:
        raise ConfigError(f"topk: expected an integer ≥ 1, found {k}")
    k = min(k, n)
    used = resolve_backend(backend, n)
    qn = l2_normalize(query_G)
    # Normalising the gallery (and filling a FAISS index) costs about as much as one search
    # of a 100-query batch: done once per gallery object and kept on it.
    cache = _search_cache(gallery) if is_gallery else {}
    if "Gn" not in cache:
        cache["Gn"] = l2_normalize(gG)
    gn = cache["Gn"]
    if used == "faiss":
        if "faiss" not in cache:
            import faiss

            cache["faiss"] = faiss.IndexFlatIP(gn.shape[1])
            cache["faiss"].add(gn)
        scores, rows = cache["faiss"].search(qn, k)
        s, i = _order_rows(torch.from_numpy(scores), torch.from_numpy(rows.astype(np.int64)), True)
        return s, i, used
    qt = torch.from_numpy(qn)
    # Blocks of gallery rows bound the (Q, rows) similarity block to ~block_elems values.
    rows_per_block = max(1, block_elems // max(1, len(qt)))
    best_s = best_i = None
    for lo in range(0, n, rows_per_block):
        gb = torch.from_numpy(gn[lo:lo + rows_per_block])
        s, pos = torch.topk(qt @ gb.T, min(k, len(gb)), dim=1, largest=True, sorted=False)
        best_s, best_i = _merge_topk(best_s, best_i, s, pos + lo, k, largest=True)
    assert best_s is not None and best_i is not None
    s, i = _order_rows(best_s, best_i, True)
    return s, i, used


def _search_cache(gallery: Any) -> dict[str, Any]:
    """Per-gallery-object cache of search structures (normalised G, FAISS index); dropped
    when the row count changes (an extended index is a new object anyway)."""
    cache = getattr(gallery, "_search_cache_", None)
    if cache is None or cache.get("count") != gallery.count:
        cache = {"count": gallery.count}
        try:
            gallery._search_cache_ = cache
        except AttributeError:  # an object that refuses attributes: no caching
            pass
    return cache


# --------------------------------------------------------------------------- full stage
def full_topk(ccn: torch.nn.Module, query_F: ArrayLike, gallery: Gallery, k: int, side: str,
              chunk_size: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """Top-k smallest D_RI of each query over every gallery item, shard by shard.

    query_F: (Q, C, h, w). Returns (D (Q, k') ascending, rows (Q, k') int64), ties by row.
    """
    qF = torch.from_numpy(_np32(query_F))
    best_s = best_i = None
    for start, F, _ in gallery.iter_shards():
        # A writable in-memory copy of the (read-only, memory-mapped) shard.
        gF = torch.from_numpy(np.array(F, dtype=np.float32))
        with torch.no_grad():
            D = torch.as_tensor(score_full(ccn, qF, gF, query_side=side, chunk_size=chunk_size)).float()
        i = torch.arange(start, start + len(gF), dtype=torch.int64).expand(len(qF), -1)
        best_s, best_i = _merge_topk(best_s, best_i, D, i, k, largest=False)
    if best_s is None:
        raise DataError("the gallery is empty")
    return _order_rows(best_s, best_i, False)


def rerank_topk(ccn: torch.nn.Module, query_F: ArrayLike, gallery: Gallery, cand: np.ndarray,
                side: str) -> tuple[np.ndarray, np.ndarray]:
    """Re-order each query's candidate rows ``cand`` (Q, K), given in simplified order, by D_RI.

    Returns (D (Q, K) ascending, rows (Q, K)); equal D keeps the simplified order.
    """
    qF = torch.from_numpy(_np32(query_F))
    uniq, inverse = np.unique(cand, return_inverse=True)
    gF = torch.from_numpy(gallery.take_F(uniq))  # each candidate read once
    nq, k = cand.shape
    qi = torch.arange(nq, dtype=torch.int64).repeat_interleave(k)
    gi = torch.from_numpy(inverse.reshape(-1).astype(np.int64))
    d = torch.as_tensor(full_pair_fn(ccn, qF, gF, side)(qi, gi)).float()
    d = d.reshape(nq, k).numpy()
    order = np.argsort(d, axis=1, kind="stable")
    return np.take_along_axis(d, order, 1), np.take_along_axis(cand, order, 1)


# --------------------------------------------------------------------------- search
def search(gallery: Gallery, query_F: Optional[ArrayLike], query_G: ArrayLike, *,
           scoring: str = "simplified", topk: int = 10, query_modality: Optional[str] = None,
           ccn: Optional[torch.nn.Module] = None, backend: str = "auto",
           rerank_depth: Optional[int] = None, chunk_size: int = 256) -> list[list[Match]]:
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

    Returns:
        One list of :class:`Match` per query; ``score`` as :attr:`vireid.scoring.scorers.ScoringMode.native` says.
    """
    mode = get_scoring(scoring)
    if topk < 1:
        raise ConfigError(f"topk: expected an integer ≥ 1, found {topk}")
    qmod = query_modality or (IR if gallery.modality == RGB else RGB)
    side = query_side(qmod, gallery.modality)
    if mode.needs_ccn:
        if ccn is None:
            raise ConfigError(f"scoring {scoring} needs the model's CCN (ccn=model.ccn)")
        if query_F is None:
            raise ConfigError(f"scoring {scoring} needs the queries' feature maps F")
    if scoring == "simplified":
        scores, rows, used = simplified_topk(query_G, gallery, topk, backend)
        log.debug("simplified search with %s", used)
    elif scoring == "full":
        scores, rows = full_topk(ccn, query_F, gallery, topk, side, chunk_size)
    else:
        depth = topk if rerank_depth is None else int(rerank_depth)
        if depth < topk:
            raise ConfigError(f"rerank_depth: expected ≥ topk ({topk}), found {depth}")
        _, cand, used = simplified_topk(query_G, gallery, depth, backend)
        scores, rows = rerank_topk(ccn, query_F, gallery, cand, side)
        scores, rows = scores[:, :topk], rows[:, :topk]
    out = []
    for q in range(len(rows)):
        out.append([Match(r + 1, int(row), gallery.paths[int(row)], float(s),
                          gallery.labels[int(row)] if gallery.labels is not None else None)
                    for r, (row, s) in enumerate(zip(rows[q], scores[q]))])
    return out


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
                  device: Union[str, torch.device] = "cpu") -> SearchResult:
    """Embed query images with the index's model and search the index.

    The model is the checkpoint recorded in the index unless ``checkpoint`` is given; its
    weights must be those the index was built with (else :class:`CheckpointError`). Queries
    go through ``query_modality``'s path (default: the modality other than the gallery's)
    with the index's flip setting.
    """
    ix = index if isinstance(index, GalleryIndex) else GalleryIndex.open(index)
    if not query_paths:
        raise DataError("no query images given")
    ckpt = checkpoint if checkpoint is not None else ix.manifest["model"]["checkpoint"]
    model, cfg, ident = load_checkpoint_model(ckpt, device)
    ix.check_model(ident.model_digest, ident.config_digest)
    qmod = query_modality or (IR if ix.modality == RGB else RGB)
    paths = [Path(p).resolve().as_posix() for p in query_paths]
    qF, qG = embed_images(model, cfg, paths, qmod, batch_size=batch_size, flip=ix.flip, device=device)
    used = resolve_backend(backend, ix.count) if scoring != "full" else None
    matches = search(ix, qF, qG, scoring=scoring, topk=topk, query_modality=qmod, ccn=model.ccn,
                     backend=backend, rerank_depth=rerank_depth, chunk_size=chunk_size)
    extra = {"rerank_depth": rerank_depth or topk} if scoring == "rerank" else {}
    return SearchResult(paths, matches, scoring, qmod, ix.modality, str(ix.path), used, extra)


def save_match_figure(result: SearchResult, out: Union[str, os.PathLike], max_matches: int = 10,
                      size: tuple[int, int] = (128, 64)) -> Path:
    """A picture of each query (left) beside its top matches with their scores; one row per
    query. Matches whose label equals the query folder's name are framed green, others red
    (no frame when the gallery has no labels). Written atomically (PNG)."""
    out = Path(out)
    nq = len(result.queries)
    ncol = 1 + min(max_matches, max((len(m) for m in result.matches), default=0))
    fig, axes = plt.subplots(nq, ncol, figsize=(1.3 * ncol, 2.4 * nq), squeeze=False)
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
    try:
        with atomic_path(out) as tmp:
            fig.savefig(tmp, dpi=100, format="png")
    finally:
        plt.close(fig)
    return out

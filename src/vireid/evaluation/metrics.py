"""CMC, mAP and mINP with the semantics of the field's reference evaluation code.

Published visible-infrared re-id numbers come from the AGW baseline's ``eval_sysu`` and
``eval_regdb``. :func:`eval_sysu` and :func:`eval_regdb` here return the same numbers on the
same distance matrix, tie order included, but vectorised: the reference loops over queries in
Python (30+ s for 3803 queries x 3000 gallery images on a 2-core CPU); these take about a
second. See docs/protocols.md for every place where the reference differs from a textbook
CMC/mAP; in short:

* rows are ordered with ``np.argsort(distmat, axis=1)`` (numpy's default, *unstable* sort) on
  the matrix exactly as given, so ties break the way the reference breaks them;
* SYSU: a query from camera 3 drops every gallery image from camera 2 (same room), whatever its
  identity; nothing else is removed;
* SYSU's CMC counts *distinct identities*: the kept ranked list is collapsed to identities in
  order of first appearance, and rank-k means "the true id is among the first k distinct ids";
* AP and INP use every kept gallery item (no collapsing);
* queries without a true match among the kept items are left out of CMC, mAP and mINP; if no
  query is valid, :class:`NoValidQueryError` is raised (the reference fails an assert);
* with fewer than ``max_rank`` gallery items, ``max_rank`` shrinks to the gallery size; where
  the reference crashes because queries have different numbers of distinct identities, each
  curve is padded with its last value (which leaves every case the reference can run
  unchanged).

:func:`eval_llcm` is the DEEN release's LLCM variant of ``eval_sysu``: the same identity-collapsed
CMC and AP/INP, but its removal rule drops the gallery items with the query's identity *and*
camera number (LLCM's visible and near-infrared cameras share the numbers 1..9).

:func:`cmc_map` is the textbook variant (used for the open-set protocol): same ranking, AP and
INP, but the Market-1501 removal rule (same identity *and* same camera) and no identity
collapsing.

One ranking kernel, :func:`_rank_queries`, does the work of all four: it orders the rows once,
drops the gallery items a query's *removal key* selects (a query drops every gallery item whose
key equals its own), and computes per query the first hit, AP and INP -- and, on request, the
identity-collapsed rank. The public functions only state their removal keys, whether the CMC is
collapsed, and how long the curve is.

Exactness: AP sums are computed with the same float64 operations and the same summation
order as the reference (numpy's pairwise sum over each query's kept list, which is why kept
lists are compacted before summing rather than masked), so mAP/mINP match a per-query loop bit
for bit, and the CMC is the same float32 division of exact integer counts.

All functions take a distance: lower = closer (callers pass e.g. the negative cosine
similarity).
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from functools import partial
from typing import Literal, NamedTuple, Union

import numpy as np

from vireid.errors import DataError
from vireid.utils.registry import Registry

log = logging.getLogger(__name__)

__all__ = [
    "NoValidQueryError",
    "eval_sysu",
    "eval_regdb",
    "eval_llcm",
    "cmc_map",
    "METRIC_RULES",
    "metric_rule",
    "SYSU_REMOVE_QUERY_CAM",
    "SYSU_REMOVE_GALLERY_CAM",
]

#: The SYSU-MM01 removal rule: queries of this camera ...
SYSU_REMOVE_QUERY_CAM = 3
#: ... ignore gallery images of this camera (cam3 IR and cam2 RGB film the same room).
SYSU_REMOVE_GALLERY_CAM = 2

# Rows per block in the vectorised passes: bounds the float64 temporaries to a few tens of MB
# whatever the number of queries. Blocking rows never changes a result (each row is
# computed independently).
_BLOCK_ELEMS = 1 << 22


class NoValidQueryError(DataError, ValueError):
    """No query has a true match in the gallery (after removal), so nothing can be scored.

    The reference fails an ``assert`` here. Derives from :class:`DataError` (the CLI reports it
    as a user-input error: usually features and labels of the wrong split were passed) and from
    :class:`ValueError`.
    """


def _check_inputs(distmat, q_pids, g_pids, q_camids=None, g_camids=None):
    # np.asarray on an ndarray is a no-op: no copy and, crucially, no cast, so the argsort sees
    # exactly the values (and dtype) the reference would see.
    distmat = np.asarray(distmat)
    if distmat.ndim != 2:
        raise ValueError(f"distmat must be 2-D (num_query, num_gallery); got shape {distmat.shape}")
    q_pids = np.asarray(q_pids).reshape(-1)
    g_pids = np.asarray(g_pids).reshape(-1)
    num_q, num_g = distmat.shape
    if q_pids.shape[0] != num_q or g_pids.shape[0] != num_g:
        raise ValueError(
            f"distmat is {num_q} x {num_g} but got {q_pids.shape[0]} query and "
            f"{g_pids.shape[0]} gallery ids"
        )
    out = [distmat, q_pids, g_pids]
    if q_camids is not None:
        q_camids = np.asarray(q_camids).reshape(-1)
        g_camids = np.asarray(g_camids).reshape(-1)
        if q_camids.shape[0] != num_q or g_camids.shape[0] != num_g:
            raise ValueError(
                f"distmat is {num_q} x {num_g} but got {q_camids.shape[0]} query and "
                f"{g_camids.shape[0]} gallery camera ids"
            )
        out += [q_camids, g_camids]
    if num_q == 0 or num_g == 0:
        raise NoValidQueryError(
            f"cannot evaluate an empty ranking: {num_q} queries x {num_g} gallery images"
        )
    return out


def _effective_max_rank(max_rank: int, num_g: int) -> int:
    if max_rank < 1:
        raise ValueError(f"max_rank must be >= 1, got {max_rank}")
    if num_g < max_rank:
        # Same as the reference, which prints a note and shrinks max_rank.
        log.info("gallery has only %d items: max_rank shrinks from %d to %d", num_g, max_rank, num_g)
        return num_g
    return max_rank


def _row_blocks(num_rows: int, num_cols: int):
    step = max(1, _BLOCK_ELEMS // max(1, num_cols))
    for start in range(0, num_rows, step):
        yield slice(start, min(num_rows, start + step))


def _ap_inp(matches: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """AP and INP of ranked binary match rows, each row having at least one match.

    matches: (R, K) bool, the kept ranked list of each query (True = same identity).
    Returns (ap, inp), each (R,) float64.

    Same float64 values and summation order as the reference: the precision at a hit at
    0-based position i is hits_so_far / (i + 1.), every other entry is 0.0, and each row of
    length K is summed with numpy's pairwise sum (a row of a C-contiguous 2-D array reduced
    along axis 1 is summed exactly like the 1-D row); then divided by the number of hits.
    INP = hits / (position of the last hit + 1.). Only the hits are computed; the zeros come
    from a zero-filled array.
    """
    rows, cols = np.nonzero(matches)  # row-major: hits of each row in rank order
    counts = np.bincount(rows, minlength=matches.shape[0])
    row_start = np.cumsum(counts) - counts
    hits_so_far = np.arange(1, rows.size + 1, dtype=np.int64) - np.repeat(row_start, counts)
    prec = np.zeros(matches.shape, dtype=np.float64)
    prec[rows, cols] = hits_so_far / (cols + 1.0)
    ap = prec.sum(axis=1) / counts
    last = cols[row_start + counts - 1]
    inp = counts / (last + 1.0)
    return ap, inp


def _identity_codes(q_pids: np.ndarray, g_pids: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """Small integer codes 0..P-1 of the gallery identities; -1 for a query id absent from it.

    Returns (q_code (Q,), g_code (G,), P). Code equality <=> identity equality, so matches are
    unchanged; the codes are narrow because the (Q, G) gathers and compares are memory-bound.
    """
    uniq, g_code = np.unique(g_pids, return_inverse=True)
    g_code = g_code.reshape(-1).astype(np.int16 if len(uniq) < 2**15 else np.int64)
    pos = np.minimum(np.searchsorted(uniq, q_pids), len(uniq) - 1)
    q_code = np.where(uniq[pos] == q_pids, pos, -1).astype(g_code.dtype)
    return q_code, g_code, len(uniq)


def _removal_groups(num_q: int, q_key: np.ndarray | None, g_key: np.ndarray | None):
    """Yield ``(rows, dropped)``: the query numbers (R,) sharing one removal key, ascending,
    and the (G,) bool mask of the gallery items they drop (None when they drop nothing)."""
    if q_key is None:
        yield np.arange(num_q), None
        return
    keys, group_of_row = np.unique(q_key, return_inverse=True)
    group_of_row = group_of_row.reshape(-1)
    rows_by_group = np.argsort(group_of_row, kind="stable")
    stops = np.cumsum(np.bincount(group_of_row, minlength=len(keys)))
    for key, start, stop in zip(keys, np.r_[0, stops[:-1]], stops):
        dropped = g_key == key  # built per group: a (groups, G) table can be large
        yield rows_by_group[start:stop], (dropped if dropped.any() else None)


def _pair_keys(
    q_pids: np.ndarray, g_pids: np.ndarray, q_camids: np.ndarray, g_camids: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Removal keys of the "same identity *and* same camera" rule: (q_key (Q,), g_key (G,)).

    The key is the (identity, camera) pair, numbered over query and gallery together, so two
    keys are equal exactly when both the identities and the camera numbers are equal.
    """
    _, pid_code = np.unique(np.concatenate([q_pids, g_pids]), return_inverse=True)
    cams, cam_code = np.unique(np.concatenate([q_camids, g_camids]), return_inverse=True)
    pair_code = pid_code.reshape(-1).astype(np.int64) * len(cams) + cam_code.reshape(-1)
    return pair_code[: len(q_pids)], pair_code[len(q_pids):]


class _PerQuery(NamedTuple):
    """What the kernel finds for each query; every field is (Q,)."""

    valid: np.ndarray  # bool: a true match is among the kept items
    first: np.ndarray  # int64: 0-based CMC rank of the first true match (0 where not valid)
    length: np.ndarray  # int64: entries of the query's CMC list (kept items or distinct ids)
    ap: np.ndarray  # float64 (0 where not valid)
    inp: np.ndarray  # float64 (0 where not valid)


def _rank_queries(
    distmat: np.ndarray,
    q_pids: np.ndarray,
    g_pids: np.ndarray,
    q_key: np.ndarray | None = None,
    g_key: np.ndarray | None = None,
    collapse_ids: bool = False,
) -> _PerQuery:
    """The ranking kernel shared by :func:`eval_sysu`, :func:`eval_regdb`, :func:`eval_llcm` and
    :func:`cmc_map`.

    distmat: (Q, G) distances, lower = closer; q_pids (Q,), g_pids (G,).
    Removal: query i drops every gallery item j with ``g_key[j] == q_key[i]`` (q_key (Q,),
    g_key (G,) integer keys; None = nothing is dropped). Queries with the same key drop the same
    items, so each key's queries are one group whose kept lists share one length: a group is
    compacted into a dense (rows, kept) block, which keeps the reference's per-query pairwise
    summation order (masking would insert zeros and regroup the sum).
    collapse_ids: the CMC rank of the first hit is the number of *distinct* identities ranked
    before it (SYSU's CMC) instead of the number of items, and ``length`` counts distinct ids.
    Rows are ordered once with ``np.argsort(distmat, axis=1)``: numpy's default (unstable)
    sort on the matrix as given, so ties break as in the reference.
    """
    num_q, num_g = distmat.shape
    indices = np.argsort(distmat, axis=1)  # once, unstable default kind: the reference's ties
    q_code, g_code, num_ids = _identity_codes(q_pids, g_pids)

    valid = np.zeros(num_q, dtype=bool)
    first = np.zeros(num_q, dtype=np.int64)
    length = np.zeros(num_q, dtype=np.int64)
    ap = np.zeros(num_q)
    inp = np.zeros(num_q)

    for rows, dropped in _removal_groups(num_q, q_key, g_key):
        if dropped is None:
            num_kept = num_g
            ids_kept = num_ids
        else:
            num_kept = num_g - int(dropped.sum())
            ids_kept = int(np.unique(g_code[~dropped]).size)
        length[rows] = ids_kept if collapse_ids else num_kept
        if num_kept == 0:  # every gallery item dropped: nothing to rank, the queries are invalid
            continue
        for blk in _row_blocks(len(rows), num_g):
            out = rows[blk]  # query numbers of this block
            idx = indices[out]  # (R, G) ranked gallery indices of these queries
            if dropped is not None:
                idx = idx[~dropped[idx]].reshape(idx.shape[0], num_kept)
            codes = g_code[idx]  # (R, K) identity code of each kept ranked item
            m = codes == q_code[out, None]  # a q_code of -1 (absent id) never matches
            r_valid = m.any(axis=1)
            r_first = np.argmax(m, axis=1)  # kept position of the first hit (0 if none)
            if collapse_ids:
                # Collapsed rank of the hit = number of distinct ids ranked before it: mark the
                # ids of each row's prefix in a (R, P) table and count them.
                prefix = np.arange(num_kept) < np.where(r_valid, r_first, 0)[:, None]
                pr, pc = np.nonzero(prefix)
                seen = np.zeros((idx.shape[0], num_ids), dtype=bool)
                seen[pr, codes[pr, pc]] = True
                r_first = seen.sum(axis=1)
            valid[out] = r_valid
            first[out] = np.where(r_valid, r_first, 0)
            vsel = np.flatnonzero(r_valid)
            if vsel.size:
                ap[out[vsel]], inp[out[vsel]] = _ap_inp(m[vsel])
    return _PerQuery(valid, first, length, ap, inp)


def _summarise(
    per_query: _PerQuery, cmc_length: int, no_valid_message: str
) -> tuple[np.ndarray, float, float]:
    """(cmc (cmc_length,) float32, mAP, mINP) over the valid queries.

    Each valid curve is 0 before its first hit and 1 from it on (so a curve shorter than
    ``cmc_length`` is padded with its last value); invalid queries add nothing. The reference
    sums float32 0/1 curves (exact integer counts) and divides by the number of valid queries
    as a Python float, i.e. a float32 division: reproduced literally. mAP/mINP: ``np.mean`` of
    the valid queries' values in query order, as the reference's ``np.mean(list)``.
    """
    valid = per_query.valid
    if not valid.any():
        raise NoValidQueryError(no_valid_message)
    counts = np.bincount(per_query.first[valid], minlength=cmc_length)[:cmc_length]
    cmc = np.cumsum(counts).astype(np.float32) / float(int(valid.sum()))
    return cmc, float(np.mean(per_query.ap[valid])), float(np.mean(per_query.inp[valid]))


def eval_sysu(
    distmat: np.ndarray,
    q_pids: np.ndarray,
    g_pids: np.ndarray,
    q_camids: np.ndarray,
    g_camids: np.ndarray,
    max_rank: int = 20,
) -> tuple[np.ndarray, float, float]:
    """SYSU-MM01 evaluation with the reference's semantics (AGW's ``eval_sysu``).

    distmat: (Q, G) distances, lower = closer; q_pids, q_camids: (Q,); g_pids, g_camids: (G,).
    Deviations from a textbook CMC (docs/protocols.md, rules 2, 3 and 7): a query from camera 3
    drops every gallery image of camera 2 whatever its identity, and nothing else is dropped (no
    same-id/same-camera rule); the CMC counts *distinct identities* (rank-k = the true id is
    among the first k distinct ids of the kept list), while AP and INP use every kept item.
    Returns ``(cmc, mAP, mINP)``: cmc (L,) float32 with L = min(max_rank, G) unless every
    query sees fewer distinct identities (then the largest such count, as the reference);
    mAP and mINP as fractions in [0, 1].
    Raises NoValidQueryError when no query has a true match after removal.
    """
    distmat, q_pids, g_pids, q_camids, g_camids = _check_inputs(
        distmat, q_pids, g_pids, q_camids, g_camids
    )
    num_q, num_g = distmat.shape
    max_rank = _effective_max_rank(max_rank, num_g)
    # Removal keys: cam2 gallery items carry key 1, cam3 queries drop key 1, other queries
    # carry -1, which no gallery item has.
    q_key = np.where(q_camids == SYSU_REMOVE_QUERY_CAM, 1, -1)
    g_key = (g_camids == SYSU_REMOVE_GALLERY_CAM).astype(np.int64)
    per_query = _rank_queries(distmat, q_pids, g_pids, q_key, g_key, collapse_ids=True)
    # Every query's curve (valid or not) is max_rank long unless it sees fewer distinct ids;
    # the reference needs them all equally long, we pad to the longest.
    cmc_length = int(np.minimum(per_query.length, max_rank).max())
    return _summarise(
        per_query,
        cmc_length,
        f"none of the {num_q} queries has a true match among the {num_g} gallery images "
        "(after removing cam2 gallery images for cam3 queries): are query and gallery "
        "from the same test split?",
    )


def eval_regdb(
    distmat: np.ndarray,
    q_pids: np.ndarray,
    g_pids: np.ndarray,
    max_rank: int = 20,
) -> tuple[np.ndarray, float, float]:
    """RegDB evaluation with the reference's semantics (AGW's ``eval_regdb``): textbook CMC.

    distmat: (Q, G) distances, lower = closer; q_pids: (Q,); g_pids: (G,).
    Nothing is dropped and the CMC is not collapsed (rank-k = a true match among the first k
    gallery items); the only deviations from a textbook CMC are the shared ones
    (docs/protocols.md rules 1, 5-7: reference tie order, queries without a match skipped,
    ``max_rank`` shrunk to G).
    Returns ``(cmc (min(max_rank, G),) float32, mAP, mINP)``, fractions.
    Raises NoValidQueryError when no query id appears in the gallery.
    """
    distmat, q_pids, g_pids = _check_inputs(distmat, q_pids, g_pids)
    num_q, num_g = distmat.shape
    max_rank = _effective_max_rank(max_rank, num_g)
    return _summarise(
        _rank_queries(distmat, q_pids, g_pids),
        max_rank,
        f"none of the {num_q} queries has its identity among the {num_g} gallery images: "
        "are query and gallery from the same test trial?",
    )


def eval_llcm(
    distmat: np.ndarray,
    q_pids: np.ndarray,
    g_pids: np.ndarray,
    q_camids: np.ndarray,
    g_camids: np.ndarray,
    max_rank: int = 20,
) -> tuple[np.ndarray, float, float]:
    """LLCM evaluation with the semantics of the DEEN release's ``eval_llcm`` (CVPR 2023).

    distmat: (Q, G) distances, lower = closer; q_pids, q_camids: (Q,); g_pids, g_camids: (G,).
    Removal (differs from SYSU): a query drops the gallery items with its identity *and* its
    camera number. LLCM's visible and near-infrared folders share the numbering (``camK``),
    and the rule compares the numbers only, so a NIR cam4 query drops the VIS cam4 images of
    the same person although they are of the other modality. CMC collapsed to distinct
    identities as in :func:`eval_sysu`; AP and INP over every kept item; queries without a kept
    true match are left out (docs/protocols.md, "LLCM").
    Returns ``(cmc, mAP, mINP)``: cmc (L,) float32 with L = the longest query curve,
    min(max_rank, G, distinct ids the query keeps) -- the reference's curve length, since the
    reference cuts each collapsed list at ``max_rank`` (shrunk to G). A valid query only drops
    items of its own id, so it keeps every gallery identity and its curve has the full length;
    only an invalid query can be one id shorter, where the reference crashes on the unequal
    lengths and the padding of :func:`eval_sysu` applies (it adds nothing: invalid queries
    count nowhere).
    Raises NoValidQueryError when no query has a true match after removal.
    """
    distmat, q_pids, g_pids, q_camids, g_camids = _check_inputs(
        distmat, q_pids, g_pids, q_camids, g_camids
    )
    num_q, num_g = distmat.shape
    max_rank = _effective_max_rank(max_rank, num_g)
    q_key, g_key = _pair_keys(q_pids, g_pids, q_camids, g_camids)
    per_query = _rank_queries(distmat, q_pids, g_pids, q_key, g_key, collapse_ids=True)
    cmc_length = int(np.minimum(per_query.length, max_rank).max())
    return _summarise(
        per_query,
        cmc_length,
        f"none of the {num_q} queries has a true match among the {num_g} gallery images "
        "(after removing gallery images with the query's identity and camera number): are "
        "query and gallery from the same LLCM test split?",
    )


Removal = Literal["same_camera", "none"]


def cmc_map(
    distmat: np.ndarray,
    q_pids: np.ndarray,
    g_pids: np.ndarray,
    q_camids: np.ndarray | None = None,
    g_camids: np.ndarray | None = None,
    max_rank: int = 20,
    removal: Removal = "same_camera",
) -> tuple[np.ndarray, float, float]:
    """Textbook CMC, mAP and mINP (used for the open-set protocol).

    distmat: (Q, G) distances, lower = closer; pids/camids: (Q,), (G,).
    Definition: rows ordered by ``np.argsort(distmat, axis=1)`` (as the reference); with
    ``removal="same_camera"`` (default, the Market-1501/torchreid rule) gallery items with the
    query's identity *and* camera are dropped; ``removal="none"`` drops nothing. CMC is not
    collapsed to identities: rank-k = a true match among the first k kept items. AP/INP as in
    :func:`eval_sysu`, over the kept items. Queries without a match are skipped; none valid ->
    NoValidQueryError. Curves shorter than ``min(max_rank, G)`` (queries that lost items) are
    padded with their last value. On the paper's open-set split query and gallery cameras are
    disjoint, so both removal options give the same numbers there.
    Returns ``(cmc (min(max_rank, G),) float32, mAP, mINP)``, fractions.
    """
    if removal not in ("same_camera", "none"):
        raise ValueError(f"removal must be 'same_camera' or 'none', got {removal!r}")
    q_key = g_key = None
    if removal == "same_camera":
        if q_camids is None or g_camids is None:
            raise ValueError("removal='same_camera' needs q_camids and g_camids")
        distmat, q_pids, g_pids, q_camids, g_camids = _check_inputs(
            distmat, q_pids, g_pids, q_camids, g_camids
        )
        q_key, g_key = _pair_keys(q_pids, g_pids, q_camids, g_camids)
    else:
        distmat, q_pids, g_pids = _check_inputs(distmat, q_pids, g_pids)
    num_q, num_g = distmat.shape
    max_rank = _effective_max_rank(max_rank, num_g)
    return _summarise(
        _rank_queries(distmat, q_pids, g_pids, q_key, g_key),
        max_rank,
        f"none of the {num_q} queries has a true match among the {num_g} gallery images",
    )


# ---------------------------------------------------------------------------------------------
# Metric rules: the names a protocol gives its metric (vireid.data.registry.Protocol.metric)
# ---------------------------------------------------------------------------------------------
#: ``fn(distmat, q_pids, g_pids, q_camids, g_camids) -> (cmc, mAP, mINP)``.
MetricFn = Callable[..., tuple[np.ndarray, float, float]]

#: Rule name -> metric function. The built-in rules are named after the reference functions
#: they reproduce: ``sysu`` (:func:`eval_sysu`), ``regdb`` (:func:`eval_regdb`, cameras
#: unused), ``llcm`` (:func:`eval_llcm`) and ``open`` (:func:`cmc_map` with
#: ``removal="same_camera"``).
METRIC_RULES: Registry[MetricFn] = Registry("metric rule", "protocol metric")
METRIC_RULES.register("sysu", eval_sysu)
METRIC_RULES.register("regdb", lambda distmat, q_pids, g_pids, q_camids, g_camids:
                      eval_regdb(distmat, q_pids, g_pids))
METRIC_RULES.register("llcm", eval_llcm)
METRIC_RULES.register("open", partial(cmc_map, removal="same_camera"))


def metric_rule(rule: Union[str, MetricFn]) -> MetricFn:
    """The metric function of a protocol's ``metric``: a registered rule name, or a function
    (returned as it is). ConfigError listing the rules when the name is unknown."""
    return rule if callable(rule) else METRIC_RULES.get(rule)

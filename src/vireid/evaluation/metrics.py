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

Exactness: AP sums are computed with the same float64 operations and the same summation
order as the reference (numpy's pairwise sum over each query's kept list, which is why kept
lists are compacted before summing rather than masked), so mAP/mINP match bit for bit, and the
CMC is the same float32 division of exact integer counts.

All functions take a distance: lower = closer (callers pass e.g. the negative cosine
similarity).
"""
from __future__ import annotations

import logging
from typing import Literal

import numpy as np

from vireid.errors import DataError

log = logging.getLogger(__name__)

__all__ = [
    "NoValidQueryError",
    "eval_sysu",
    "eval_regdb",
    "cmc_map",
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


def _cmc_from_first_rank(first: np.ndarray, valid: np.ndarray, length: int) -> np.ndarray:
    """CMC (length,) float32 from each valid query's 0-based rank of its first hit.

    Each valid curve is 0 before ``first`` and 1 from it on; invalid queries add nothing. The
    reference sums float32 0/1 curves (exact integer counts) and divides by the number of
    valid queries as a Python float, i.e. a float32 division: reproduced literally.
    """
    num_valid = int(valid.sum())
    counts = np.bincount(first[valid], minlength=length)[:length]
    curve = np.cumsum(counts).astype(np.float32)
    return curve / float(num_valid)


def eval_sysu(
    distmat: np.ndarray,
    q_pids: np.ndarray,
    g_pids: np.ndarray,
    q_camids: np.ndarray,
    g_camids: np.ndarray,
    max_rank: int = 20,
) -> tuple[np.ndarray, float, float]:
    """SYSU-MM01 evaluation with the reference's semantics (see the module docstring).

    distmat: (Q, G) distances, lower = closer; q_pids, q_camids: (Q,); g_pids, g_camids: (G,).
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
    indices = np.argsort(distmat, axis=1)  # once, unstable default kind: the reference's ties

    # Identity codes 0..P-1 of the gallery; a query's code is -1 when its id is absent.
    uniq, g_code = np.unique(g_pids, return_inverse=True)
    # Narrow codes: the (Q, G) gathers and compares below are memory-bound.
    g_code = g_code.reshape(-1).astype(np.int16 if len(uniq) < 2**15 else np.int64)
    q_pos_in_uniq = np.searchsorted(uniq, q_pids)
    q_pos_in_uniq = np.minimum(q_pos_in_uniq, len(uniq) - 1)
    q_code = np.where(uniq[q_pos_in_uniq] == q_pids, q_pos_in_uniq, -1).astype(g_code.dtype)

    removed_cols = g_camids == SYSU_REMOVE_GALLERY_CAM
    q_removes = (q_camids == SYSU_REMOVE_QUERY_CAM) & removed_cols.any()

    ap = np.zeros(num_q)
    inp = np.zeros(num_q)
    valid = np.zeros(num_q, dtype=bool)
    first_distinct = np.zeros(num_q, dtype=np.int64)  # rank of the true id among distinct ids
    n_distinct = np.zeros(num_q, dtype=np.int64)  # distinct ids in the kept list

    num_ids = len(uniq)
    # Distinct ids in a kept list depend only on which columns are kept, i.e. on the group.
    n_distinct_all = num_ids
    n_distinct_removing = int(np.unique(g_code[~removed_cols]).size)
    for blk in _row_blocks(num_q, num_g):
        idx = indices[blk]
        codes = g_code[idx]  # (rows, G) identity code of each ranked item
        matches = codes == q_code[blk, None]  # q_code -1 (absent id) never matches
        rem = q_removes[blk]
        # Queries that remove columns all remove the same columns, so their kept lists share
        # one length and are compacted into a dense block (the reference's exact AP summation
        # order); the other queries keep everything.
        for compact, group in ((True, rem), (False, ~rem)):
            sel = np.flatnonzero(group)
            if sel.size == 0:
                continue
            m, c = matches[sel], codes[sel]
            if compact:
                keep = ~removed_cols[idx[sel]]
                m = m[keep].reshape(sel.size, -1)
                c = c[keep].reshape(sel.size, -1)
            out = blk.start + sel
            if m.shape[1] == 0:  # every gallery item removed: nothing to rank
                continue
            g_valid = m.any(axis=1)
            first = np.argmax(m, axis=1)  # kept position of the first hit
            # Identity-collapsed rank of the hit = number of distinct ids ranked before it:
            # mark the ids of each row's prefix in a (rows, P) table and count them.
            prefix = np.arange(m.shape[1]) < np.where(g_valid, first, 0)[:, None]
            pr, pc = np.nonzero(prefix)
            seen = np.zeros((sel.size, num_ids), dtype=bool)
            seen[pr, c[pr, pc]] = True
            first_distinct[out] = seen.sum(axis=1)
            n_distinct[out] = n_distinct_removing if compact else n_distinct_all
            valid[out] = g_valid
            vsel = np.flatnonzero(g_valid)
            if vsel.size:
                ap[out[vsel]], inp[out[vsel]] = _ap_inp(m[vsel])

    if not valid.any():
        raise NoValidQueryError(
            f"none of the {num_q} queries has a true match among the {num_g} gallery images "
            "(after removing cam2 gallery images for cam3 queries): are query and gallery "
            "from the same test split?"
        )
    # Curves of all queries (valid or not) are max_rank long unless they see fewer distinct
    # ids; the reference needs them all equally long, we pad to the longest.
    length = int(np.minimum(n_distinct, max_rank).max())
    cmc = _cmc_from_first_rank(first_distinct, valid, length)
    # np.mean over the valid queries' values in query order = the reference's np.mean(list).
    return cmc, float(np.mean(ap[valid])), float(np.mean(inp[valid]))


def eval_regdb(
    distmat: np.ndarray,
    q_pids: np.ndarray,
    g_pids: np.ndarray,
    max_rank: int = 20,
) -> tuple[np.ndarray, float, float]:
    """RegDB evaluation with the reference's semantics: textbook CMC, no removal.

    distmat: (Q, G) distances, lower = closer; q_pids: (Q,); g_pids: (G,).
    Returns ``(cmc (min(max_rank, G),) float32, mAP, mINP)``, fractions.
    Raises NoValidQueryError when no query id appears in the gallery.
    """
    distmat, q_pids, g_pids = _check_inputs(distmat, q_pids, g_pids)
    num_q, num_g = distmat.shape
    max_rank = _effective_max_rank(max_rank, num_g)
    indices = np.argsort(distmat, axis=1)
    ap = np.zeros(num_q)
    inp = np.zeros(num_q)
    valid = np.zeros(num_q, dtype=bool)
    first = np.zeros(num_q, dtype=np.int64)
    for blk in _row_blocks(num_q, num_g):
        matches = g_pids[indices[blk]] == q_pids[blk, None]
        blk_valid = matches.any(axis=1)
        first[blk] = np.argmax(matches, axis=1)
        valid[blk] = blk_valid
        sel = np.flatnonzero(blk_valid)
        if sel.size:
            ap[blk.start + sel], inp[blk.start + sel] = _ap_inp(matches[sel])
    if not valid.any():
        raise NoValidQueryError(
            f"none of the {num_q} queries has its identity among the {num_g} gallery images: "
            "are query and gallery from the same test trial?"
        )
    cmc = _cmc_from_first_rank(first, valid, max_rank)
    return cmc, float(np.mean(ap[valid])), float(np.mean(inp[valid]))


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
    :func:`eval_sysu`. Queries without a match are skipped; none valid -> NoValidQueryError.
    Curves shorter than ``min(max_rank, G)`` (queries that lost items) are padded with their
    last value. On the paper's open-set split query and gallery cameras are disjoint, so both
    removal options give the same numbers there.
    Returns ``(cmc (min(max_rank, G),) float32, mAP, mINP)``; AP sums may differ from a
    per-query loop in the last bit (masked rather than compacted rows).
    """
    if removal not in ("same_camera", "none"):
        raise ValueError(f"removal must be 'same_camera' or 'none', got {removal!r}")
    if removal == "same_camera":
        if q_camids is None or g_camids is None:
            raise ValueError("removal='same_camera' needs q_camids and g_camids")
        distmat, q_pids, g_pids, q_camids, g_camids = _check_inputs(
            distmat, q_pids, g_pids, q_camids, g_camids
        )
    else:
        distmat, q_pids, g_pids = _check_inputs(distmat, q_pids, g_pids)
    num_q, num_g = distmat.shape
    max_rank = _effective_max_rank(max_rank, num_g)
    indices = np.argsort(distmat, axis=1)
    ap = np.zeros(num_q)
    inp = np.zeros(num_q)
    valid = np.zeros(num_q, dtype=bool)
    first = np.zeros(num_q, dtype=np.int64)
    for blk in _row_blocks(num_q, num_g):
        idx = indices[blk]
        same_id = g_pids[idx] == q_pids[blk, None]
        if removal == "same_camera":
            keep = ~(same_id & (g_camids[idx] == q_camids[blk, None]))
        else:
            keep = np.ones_like(same_id)
        matches = same_id & keep
        kept_pos = np.cumsum(keep, axis=1) - 1  # position of each item in its kept list
        blk_valid = matches.any(axis=1)
        valid[blk] = blk_valid
        first_col = np.argmax(matches, axis=1)
        first[blk] = kept_pos[np.arange(idx.shape[0]), first_col]
        hits = np.cumsum(matches, axis=1)
        # kept_pos is -1 before the first kept item: clamp (those entries are never matches).
        prec = np.where(matches, hits / (np.maximum(kept_pos, 0) + 1.0), 0.0)
        num_rel = hits[:, -1]
        last_col = num_g - 1 - np.argmax(matches[:, ::-1], axis=1)
        last = kept_pos[np.arange(idx.shape[0]), last_col]
        sel = np.flatnonzero(blk_valid)
        ap[blk.start + sel] = prec[sel].sum(axis=1) / num_rel[sel]
        inp[blk.start + sel] = num_rel[sel] / (last[sel] + 1.0)
    if not valid.any():
        raise NoValidQueryError(
            f"none of the {num_q} queries has a true match among the {num_g} gallery images"
        )
    cmc = _cmc_from_first_rank(first, valid, max_rank)
    return cmc, float(np.mean(ap[valid])), float(np.mean(inp[valid]))

"""Metrics against literal per-query loops written from shared/protocols.md and hand-worked cases."""
from __future__ import annotations

import numpy as np
import pytest

from vireid.errors import DataError
from vireid.evaluation.metrics import NoValidQueryError, cmc_map, eval_regdb, eval_sysu


# ---------------------------------------------------------------------------------------------
# Slow references: one plain Python loop per query, as the reference code does it.
# ---------------------------------------------------------------------------------------------
def _ap_inp_literal(match_list):
    """AP and INP of one kept ranked 0/1 list, the reference's way (1-D numpy sum)."""
    hits = 0
    prec = np.zeros(len(match_list))
    last = -1
    for j, m in enumerate(match_list):
        if m:
            hits += 1
            prec[j] = hits / (j + 1.0)
            last = j
    return prec.sum() / hits, hits / (last + 1.0)


def slow_eval_sysu(distmat, q_pids, g_pids, q_cams, g_cams, max_rank=20):
    num_q, num_g = distmat.shape
    if num_g < max_rank:
        max_rank = num_g
    order_all = np.argsort(distmat, axis=1)
    curves, aps, inps, n_valid = [], [], [], 0
    for i in range(num_q):
        kept = [g for g in order_all[i] if not (q_cams[i] == 3 and g_cams[g] == 2)]
        kept_pids = [g_pids[g] for g in kept]
        distinct = []
        for p in kept_pids:
            if p not in distinct:
                distinct.append(p)
        curve, found = [], 0
        for p in distinct[:max_rank]:
            found = found or int(p == q_pids[i])
            curve.append(found)
        curves.append(curve)  # appended for every query, valid or not (zeros if not)
        match_list = [p == q_pids[i] for p in kept_pids]
        if not any(match_list):
            continue
        n_valid += 1
        ap, inp = _ap_inp_literal(match_list)
        aps.append(ap)
        inps.append(inp)
    if n_valid == 0:
        raise AssertionError("no valid query")
    length = max(len(c) for c in curves)
    padded = [c + [c[-1] if c else 0] * (length - len(c)) for c in curves]
    cmc = np.asarray(padded).astype(np.float32).sum(0) / float(n_valid)
    return cmc, np.mean(aps), np.mean(inps)


def slow_eval_regdb(distmat, q_pids, g_pids, max_rank=20):
    num_q, num_g = distmat.shape
    if num_g < max_rank:
        max_rank = num_g
    order_all = np.argsort(distmat, axis=1)
    curves, aps, inps = [], [], []
    for i in range(num_q):
        match_list = [g_pids[g] == q_pids[i] for g in order_all[i]]
        if not any(match_list):
            continue
        curve, found = [], 0
        for m in match_list[:max_rank]:
            found = found or int(m)
            curve.append(found)
        curves.append(curve)
        ap, inp = _ap_inp_literal(match_list)
        aps.append(ap)
        inps.append(inp)
    if not curves:
        raise AssertionError("no valid query")
    cmc = np.asarray(curves).astype(np.float32).sum(0) / float(len(curves))
    return cmc, np.mean(aps), np.mean(inps)


def slow_cmc_map(distmat, q_pids, g_pids, q_cams, g_cams, max_rank=20, removal="same_camera"):
    num_q, num_g = distmat.shape
    max_rank = min(max_rank, num_g)
    order_all = np.argsort(distmat, axis=1)
    curves, aps, inps = [], [], []
    for i in range(num_q):
        kept = [
            g
            for g in order_all[i]
            if removal == "none" or not (g_pids[g] == q_pids[i] and g_cams[g] == q_cams[i])
        ]
        match_list = [g_pids[g] == q_pids[i] for g in kept]
        if not any(match_list):
            continue
        first = match_list.index(True)
        curves.append([int(r >= first) for r in range(max_rank)])
        ap, inp = _ap_inp_literal(match_list)
        aps.append(ap)
        inps.append(inp)
    cmc = np.asarray(curves).astype(np.float32).sum(0) / float(len(curves))
    return cmc, np.mean(aps), np.mean(inps)


def _random_case(rng, num_q, num_g, num_ids, int_levels, dtype):
    """Random SYSU-like case: integer-valued distances (many ties), cams incl. cam3/cam2."""
    q_pids = rng.integers(0, num_ids + 2, num_q)  # some ids absent from the gallery
    g_pids = rng.integers(0, num_ids, num_g)
    q_cams = rng.choice([3, 6], num_q)
    g_cams = rng.choice([1, 2, 4, 5], num_g)
    dist = rng.integers(0, int_levels, (num_q, num_g)).astype(dtype)
    return dist, q_pids, g_pids, q_cams, g_cams


def _assert_same(got, want):
    cmc, m_ap, m_inp = got
    rcmc, rap, rinp = want
    assert cmc.dtype == np.float32
    assert cmc.shape == rcmc.shape
    np.testing.assert_array_equal(cmc, rcmc)
    # Same float64 operations in the same order: equal to the last bit.
    assert m_ap == rap
    assert m_inp == rinp


# ---------------------------------------------------------------------------------------------
# Equality with the slow references on random cases.
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("seed", range(12))
def test_eval_sysu_matches_literal_loop(seed):
    rng = np.random.default_rng(seed)
    num_q = int(rng.integers(1, 40))
    num_g = int(rng.choice([3, 7, 15, 25, 60, 200]))  # includes galleries < max_rank
    num_ids = int(rng.integers(2, 12))
    dtype = [np.float32, np.float64, np.int64][seed % 3]
    case = _random_case(rng, num_q, num_g, num_ids, int(rng.choice([3, 10, 1000])), dtype)
    try:
        want = slow_eval_sysu(*case)
    except AssertionError:
        with pytest.raises(NoValidQueryError):
            eval_sysu(*case)
        return
    _assert_same(eval_sysu(*case), want)
    for max_rank in (1, 5):
        _assert_same(eval_sysu(*case, max_rank=max_rank), slow_eval_sysu(*case, max_rank=max_rank))


@pytest.mark.parametrize("seed", range(8))
def test_eval_regdb_matches_literal_loop(seed):
    rng = np.random.default_rng(100 + seed)
    num_q = int(rng.integers(1, 40))
    num_g = int(rng.choice([4, 12, 30, 150]))
    dist, q_pids, g_pids, _, _ = _random_case(rng, num_q, num_g, 8, 6, np.float32)
    q_pids[0] = g_pids[0]  # at least one valid query
    _assert_same(eval_regdb(dist, q_pids, g_pids), slow_eval_regdb(dist, q_pids, g_pids))


@pytest.mark.parametrize("removal", ["same_camera", "none"])
@pytest.mark.parametrize("seed", range(5))
def test_cmc_map_matches_literal_loop(seed, removal):
    rng = np.random.default_rng(200 + seed)
    num_q, num_g = int(rng.integers(2, 30)), int(rng.choice([5, 40, 120]))
    dist, q_pids, g_pids, _, _ = _random_case(rng, num_q, num_g, 5, 8, np.float64)
    q_cams = rng.integers(1, 4, num_q)
    g_cams = rng.integers(1, 4, num_g)
    q_pids[0] = g_pids[0]
    g_cams[0] = q_cams[0] % 3 + 1  # a match in another camera, so query 0 stays valid
    cmc, m_ap, m_inp = cmc_map(dist, q_pids, g_pids, q_cams, g_cams, removal=removal)
    rcmc, rap, rinp = slow_cmc_map(dist, q_pids, g_pids, q_cams, g_cams, removal=removal)
    np.testing.assert_array_equal(cmc, rcmc)
    assert m_ap == pytest.approx(rap, abs=1e-12)
    assert m_inp == pytest.approx(rinp, abs=1e-12)


def test_blocks_do_not_change_results(monkeypatch):
    """Row blocking (memory bound) must not change a single bit."""
    import vireid.evaluation.metrics as metrics

    rng = np.random.default_rng(7)
    case = _random_case(rng, 50, 90, 6, 5, np.float32)
    case[0][:] = rng.integers(0, 5, case[0].shape)
    full = eval_sysu(*case)
    monkeypatch.setattr(metrics, "_BLOCK_ELEMS", 200)  # 2 rows per block
    _assert_same(eval_sysu(*case), full)


# ---------------------------------------------------------------------------------------------
# Hand-worked examples.
# ---------------------------------------------------------------------------------------------
def test_sysu_hand_worked_removal_and_collapse():
    # Gallery: g0 pid1 cam2, g1 pid1 cam1, g2 pid2 cam4, g3 pid3 cam5.
    g_pids = np.array([1, 1, 2, 3])
    g_cams = np.array([2, 1, 4, 5])
    # Both queries are pid 1 and rank the gallery g0, g2, g3, g1 (distances 0, 3, 1, 2).
    dist = np.array([[0.0, 3.0, 1.0, 2.0], [0.0, 3.0, 1.0, 2.0]])
    q_pids = np.array([1, 1])
    q_cams = np.array([3, 6])
    # Query 0 (cam3) drops g0 (cam2): kept pids 2, 3, 1 -> distinct ids [2, 3, 1] -> curve
    #   [0, 0, 1]; one match at position 3: AP = 1/3, INP = 1/3.
    # Query 1 (cam6) keeps all: pids 1, 2, 3, 1 -> distinct [1, 2, 3] -> curve [1, 1, 1];
    #   matches at positions 1 and 4: AP = (1/1 + 2/4) / 2 = 3/4, INP = 2/4.
    # max_rank shrinks to 4, but every query sees 3 distinct ids -> curves of length 3.
    cmc, m_ap, m_inp = eval_sysu(dist, q_pids, g_pids, q_cams, g_cams)
    np.testing.assert_allclose(cmc, [0.5, 0.5, 1.0])
    assert m_ap == pytest.approx((1 / 3 + 3 / 4) / 2)
    assert m_inp == pytest.approx((1 / 3 + 1 / 2) / 2)


def test_sysu_cmc_counts_distinct_ids_not_items():
    # One query pid 3 (cam6). Ranked gallery: pid1, pid1, pid1, pid3. Textbook rank of the hit
    # is 4 (rank-1..3 = 0); collapsed to distinct ids [1, 3] it is rank 2, and the curve has
    # only 2 entries (2 distinct ids), exactly as the reference returns it.
    g_pids = np.array([1, 1, 1, 3])
    dist = np.array([[0.0, 1.0, 2.0, 3.0]])
    cmc, m_ap, m_inp = eval_sysu(dist, np.array([3]), g_pids, np.array([6]), np.array([1, 4, 5, 1]))
    np.testing.assert_array_equal(cmc, np.array([0.0, 1.0], dtype=np.float32))
    assert m_ap == pytest.approx(1 / 4)  # AP/INP are not collapsed: one hit at position 4
    assert m_inp == pytest.approx(1 / 4)
    # The textbook CMC on the same ranking says rank 4.
    tcmc, _, _ = eval_regdb(dist, np.array([3]), g_pids)
    np.testing.assert_array_equal(tcmc, [0, 0, 0, 1])


def test_sysu_removal_is_only_cam3_to_cam2_whatever_the_id():
    # Gallery g0 pid2 cam2 (nearest), g1 pid1 cam2, g2 pid1 cam1.
    g_pids, g_cams = np.array([2, 1, 1]), np.array([2, 2, 1])
    dist = np.array([[0.0, 1.0, 2.0], [0.0, 1.0, 2.0]])
    # cam3 query pid1: g0 and g1 dropped (g0 although it is another id) -> kept [g2] -> hit at 1.
    # cam6 query pid1: nothing dropped (not even same id) -> pids 2, 1, 1 -> distinct [2, 1].
    cmc, m_ap, m_inp = eval_sysu(dist, np.array([1, 1]), g_pids, np.array([3, 6]), g_cams)
    # Query 0: 1 distinct id -> curve [1], padded with its last value to [1, 1].
    # Query 1: curve [0, 1]. CMC = [0.5, 1.0]. (The reference crashes on these unequal lengths.)
    np.testing.assert_array_equal(cmc, np.array([0.5, 1.0], dtype=np.float32))
    # AP: q0 = 1; q1 = (1/2 + 2/3) / 2 = 7/12. INP: q0 = 1; q1 = 2/3.
    assert m_ap == pytest.approx((1 + 7 / 12) / 2)
    assert m_inp == pytest.approx((1 + 2 / 3) / 2)


def test_query_without_match_is_excluded():
    g_pids, g_cams = np.array([1, 2]), np.array([1, 2])
    dist = np.array([[1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])
    # q0 pid1 cam6: ranked pid2, pid1 -> distinct [2, 1] -> curve [0, 1]; AP = 1/2, INP = 1/2.
    # q1 pid2 cam3: g1 (cam2, its only match) dropped -> no match -> excluded everywhere.
    # q2 pid9: not in the gallery -> excluded.
    cmc, m_ap, m_inp = eval_sysu(dist, np.array([1, 2, 9]), g_pids, np.array([6, 3, 6]), g_cams)
    np.testing.assert_array_equal(cmc, np.array([0.0, 1.0], dtype=np.float32))
    assert m_ap == 0.5 and m_inp == 0.5


def test_cam3_query_facing_an_all_cam2_gallery():
    # Every gallery item is cam2: cam3 queries keep nothing (invalid), cam6 queries keep all.
    rng = np.random.default_rng(5)
    dist = rng.integers(0, 3, (6, 5)).astype(np.float64)
    q_pids, g_pids = np.array([0, 1, 2, 0, 1, 2]), np.array([0, 1, 1, 2, 0])
    q_cams, g_cams = np.array([3, 3, 3, 6, 6, 6]), np.full(5, 2)
    _assert_same(eval_sysu(dist, q_pids, g_pids, q_cams, g_cams),
                 slow_eval_sysu(dist, q_pids, g_pids, q_cams, g_cams))
    with pytest.raises(NoValidQueryError):
        eval_sysu(dist[:3], q_pids[:3], g_pids, q_cams[:3], g_cams)


def test_no_valid_query_raises():
    dist = np.zeros((2, 3))
    with pytest.raises(NoValidQueryError, match="none of the 2 queries"):
        eval_sysu(dist, np.array([5, 6]), np.array([1, 2, 3]), np.array([3, 6]), np.array([1, 2, 4]))
    with pytest.raises(NoValidQueryError):
        # the only match is in cam2 and the query is cam3
        eval_sysu(dist[:1], np.array([2]), np.array([1, 2, 3]), np.array([3]), np.array([1, 2, 4]))
    with pytest.raises(NoValidQueryError):
        eval_regdb(dist, np.array([5, 6]), np.array([1, 2, 3]))
    assert issubclass(NoValidQueryError, DataError) and issubclass(NoValidQueryError, ValueError)


def test_regdb_hand_worked():
    # Query pid 1, gallery pids [2, 1, 3, 1] at distances [0.1, 0.2, 0.3, 0.4].
    # Hits at positions 2 and 4: CMC [0, 1, 1, 1]; AP = (1/2 + 2/4) / 2 = 1/2; INP = 2/4.
    cmc, m_ap, m_inp = eval_regdb(np.array([[0.1, 0.2, 0.3, 0.4]]), np.array([1]), np.array([2, 1, 3, 1]))
    np.testing.assert_array_equal(cmc, np.array([0, 1, 1, 1], dtype=np.float32))
    assert m_ap == 0.5 and m_inp == 0.5


def test_ties_follow_numpy_default_argsort_not_a_stable_sort():
    """Find a tied row where numpy's default argsort differs from a stable sort, then check the
    metrics follow the default order (the reference's) and not the stable one."""
    rng = np.random.default_rng(0)
    for _ in range(200):
        row = rng.integers(0, 3, 300).astype(np.float32)
        if not np.array_equal(np.argsort(row), np.argsort(row, kind="stable")):
            break
    else:  # pragma: no cover - would mean numpy's default sort became stable
        pytest.fail("could not find a row where the default argsort is not stable")
    order = np.argsort(row)
    stable = np.argsort(row, kind="stable")
    g_pids = np.arange(300)  # every gallery item its own id: a query's rank is its position
    differing = np.flatnonzero(order != stable)
    targets = np.r_[order[differing[:5]], rng.choice(300, 5, replace=False)]
    for target in targets:
        pos = int(np.flatnonzero(order == target)[0])
        cmc, m_ap, _ = eval_regdb(row[None, :], np.array([target]), g_pids, max_rank=300)
        assert m_ap == 1.0 / (pos + 1)
        assert int(np.argmax(cmc)) == pos
        sysu_cmc, s_ap, _ = eval_sysu(
            row[None, :], np.array([target]), g_pids, np.array([6]), np.ones(300, int), max_rank=300
        )
        assert int(np.argmax(sysu_cmc)) == pos and s_ap == 1.0 / (pos + 1)
    # at least one checked target sits elsewhere in the stable order
    assert any(np.flatnonzero(stable == t)[0] != np.flatnonzero(order == t)[0] for t in targets)


def test_max_rank_shrinks_and_curve_lengths():
    rng = np.random.default_rng(3)
    dist = rng.random((4, 6))
    g_pids = np.array([0, 1, 2, 3, 4, 5])
    cmc, _, _ = eval_regdb(dist, np.array([0, 1, 2, 3]), g_pids, max_rank=20)
    assert cmc.shape == (6,) and cmc[-1] == 1.0
    cmc, _, _ = eval_sysu(dist, np.array([0, 1, 2, 3]), g_pids, np.full(4, 6), np.full(6, 1))
    assert cmc.shape == (6,) and cmc[-1] == 1.0


def test_input_validation():
    with pytest.raises(ValueError, match="2-D"):
        eval_regdb(np.zeros(3), np.zeros(3), np.zeros(3))
    with pytest.raises(ValueError, match="query and"):
        eval_regdb(np.zeros((2, 3)), np.zeros(3), np.zeros(3))
    with pytest.raises(ValueError, match="removal"):
        cmc_map(np.zeros((1, 1)), [0], [0], removal="junk")


# ---------------------------------------------------------------------------------------------
# The shared ranking kernel: all three public functions against their literal loops, exactly.
# ---------------------------------------------------------------------------------------------
def _has_valid_query(q_pids, g_pids, q_cams, g_cams, drop):
    """Independent of the loops: does any query keep a gallery item of its own identity?"""
    return any(
        g_pids[j] == q_pids[i] and not drop(i, j)
        for i in range(len(q_pids))
        for j in range(len(g_pids))
    )


_DROPS = {
    "sysu": lambda qp, gp, qc, gc: (lambda i, j: qc[i] == 3 and gc[j] == 2),
    "regdb": lambda qp, gp, qc, gc: (lambda i, j: False),
    "same_camera": lambda qp, gp, qc, gc: (lambda i, j: gp[j] == qp[i] and gc[j] == qc[i]),
    "none": lambda qp, gp, qc, gc: (lambda i, j: False),
}


def _run_three(case, max_rank):
    """(name, fast call, literal-loop call) for eval_sysu, eval_regdb and both cmc_map rules."""
    dist, qp, gp, qc, gc = case
    return [
        ("sysu", lambda: eval_sysu(*case, max_rank=max_rank),
         lambda: slow_eval_sysu(*case, max_rank=max_rank)),
        ("regdb", lambda: eval_regdb(dist, qp, gp, max_rank=max_rank),
         lambda: slow_eval_regdb(dist, qp, gp, max_rank=max_rank)),
        *[(removal, lambda r=removal: cmc_map(*case, max_rank=max_rank, removal=r),
           lambda r=removal: slow_cmc_map(*case, max_rank=max_rank, removal=r))
          for removal in ("same_camera", "none")],
    ]


@pytest.mark.parametrize("seed", range(40))
def test_all_three_match_their_literal_loops_bit_for_bit(seed):
    """Random cases with heavy ties, all six cameras on both sides (cam3 queries, cam2 gallery
    items, same-id-same-camera pairs), galleries from 1 item to 300, max_rank below, equal to
    and above the gallery size: every metric equal to the last bit, cmc_map included (its kept
    lists are compacted like SYSU's, so its AP sums follow the per-query order too)."""
    rng = np.random.default_rng(1000 + seed)
    num_q = int(rng.integers(1, 50))
    num_g = int(rng.choice([1, 2, 6, 19, 20, 21, 64, 300]))
    num_ids = int(rng.integers(1, 12))
    dtype = [np.float32, np.float64, np.int64, np.float16][seed % 4]
    dist = rng.integers(0, int(rng.choice([2, 4, 50, 1000])), (num_q, num_g)).astype(dtype)
    q_pids = rng.integers(0, num_ids + 2, num_q)
    g_pids = rng.integers(0, num_ids, num_g)
    q_cams = rng.integers(1, 7, num_q)
    g_cams = rng.integers(1, 7, num_g)
    case = (dist, q_pids, g_pids, q_cams, g_cams)
    max_rank = int(rng.choice([1, 5, 20, 500]))
    for name, fast, slow in _run_three(case, max_rank):
        if not _has_valid_query(q_pids, g_pids, q_cams, g_cams, _DROPS[name](*case[1:])):
            with pytest.raises(NoValidQueryError):
                fast()
            continue
        _assert_same(fast(), slow())


@pytest.mark.parametrize("block_elems", [1, 150, 1000])
def test_blocks_and_removal_groups_do_not_change_results(monkeypatch, block_elems):
    """Row blocks that cut through removal groups (1 row per block up to many) give the loops'
    numbers for all three functions; cmc_map here has many small groups (id x camera)."""
    import vireid.evaluation.metrics as metrics

    monkeypatch.setattr(metrics, "_BLOCK_ELEMS", block_elems)
    rng = np.random.default_rng(block_elems)
    dist = rng.integers(0, 4, (37, 45)).astype(np.float32)
    q_pids, g_pids = rng.integers(0, 7, 37), rng.integers(0, 6, 45)
    q_cams, g_cams = rng.integers(1, 7, 37), rng.integers(1, 7, 45)
    q_pids[0], g_pids[0], q_cams[0], g_cams[0] = 1, 1, 6, 1  # query 0 valid under every rule
    for _, fast, slow in _run_three((dist, q_pids, g_pids, q_cams, g_cams), 20):
        _assert_same(fast(), slow())


def test_results_depend_only_on_identity_and_camera_equality():
    """Relabelling ids (strings, negative or sparse numbers) and cameras other than 2 and 3 by a
    one-to-one map leaves every metric unchanged: the kernel's identity codes and removal keys
    only encode equality (SYSU's rule names cameras 2 and 3, so those keep their numbers)."""
    rng = np.random.default_rng(11)
    dist = rng.integers(0, 5, (30, 40)).astype(np.float64)
    q_pids, g_pids = rng.integers(0, 6, 30), rng.integers(0, 5, 40)
    q_cams, g_cams = rng.integers(1, 7, 30), rng.integers(1, 7, 40)
    q_pids[0] = g_pids[0]
    id_map = np.array(["p-17", "p03", "-4", "zz", "p100", "a"])
    sparse = np.array([-5, 1000, 7, 3, 99999, 42])
    cam_map = np.array([0, 11, 2, 3, 14, 15, 16])  # 1 -> 11, 4..6 -> 14..16; 2 and 3 kept
    for new_q, new_g in ((id_map[q_pids], id_map[g_pids]), (sparse[q_pids], sparse[g_pids])):
        for (_, fast, _), (_, fast_new, _) in zip(
            _run_three((dist, q_pids, g_pids, q_cams, g_cams), 10),
            _run_three((dist, new_q, new_g, cam_map[q_cams], cam_map[g_cams]), 10),
        ):
            _assert_same(fast_new(), fast())

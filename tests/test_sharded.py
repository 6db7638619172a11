"""Sharded full-mode scoring: two gloo processes under torchrun give exactly the
single-process matrices; the shard split covers every query once."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from vireid.utils import distributed as D
from vireid.scoring.scorers import score_full
from vireid.scoring.sharded import full_topk_sharded, score_sharded

sys.path.insert(0, str(Path(__file__).parent))
import _sharded_worker as W  # noqa: E402

HERE = Path(__file__).parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _direct_D(ccn, qF, gF, query_side):
    """Every pair by the CCN's direct form (the reference of the folded scorer)."""
    nq, ng = len(qF), len(gF)
    qi, gi = torch.arange(nq).repeat_interleave(ng), torch.arange(ng).repeat(nq)
    with torch.no_grad():
        d = ccn(gF, qF, gi, qi) if query_side == "b" else ccn(qF, gF, qi, gi)
    return d.reshape(nq, ng)


def _rerank_reference(S, D_full, k):
    """The contract's rerank distance, literally: D on each row's simplified top-k, 3 − S
    behind them."""
    out = 3.0 - S.double()
    for q in range(S.shape[0]):
        top = np.argsort(-S[q].numpy(), kind="stable")[:k]
        out[q, top] = D_full[q, top].double()
    return out


@pytest.mark.parametrize("n,parts,align", [(13, 2, 4), (13, 3, 1), (5, 4, 2), (0, 2, 3), (100, 7, 8)])
def test_shard_bounds_cover_each_row_once(n, parts, align):
    seen = []
    for p in range(parts):
        lo, hi = D.shard_bounds(n, parts, p, align)
        assert lo <= hi and (lo % align == 0 or lo == n)
        seen.extend(range(lo, hi))
    assert seen == list(range(n))


def test_single_process_is_plain_scoring():
    ccn, qF, gF = W.problem()
    assert D.world_size() == 1 and D.is_main()
    want = score_full(ccn, qF, gF, query_side="b", chunk_size=W.CHUNK)
    assert torch.equal(score_sharded(ccn, qF, gF, query_side="b", chunk_size=W.CHUNK), want)
    d, rows = full_topk_sharded(ccn, qF, gF, 4, query_side="b", chunk_size=W.CHUNK)
    ref = _direct_D(ccn, qF, gF, "b").numpy()
    np.testing.assert_array_equal(rows.numpy(), np.argsort(ref, axis=1, kind="stable")[:, :4])


def _launch_two_ranks(out: Path) -> None:
    """Start two ranks the way ``torchrun --nproc_per_node=2`` does (same environment
    variables, ``env://`` rendezvous on a free local port), without the launcher process,
    which would cost another torch import on a 2-core machine."""
    port = str(_free_port())
    procs = []
    for rank in range(2):
        env = dict(os.environ, OMP_NUM_THREADS="1", RANK=str(rank), LOCAL_RANK=str(rank),
                   WORLD_SIZE="2", LOCAL_WORLD_SIZE="2", MASTER_ADDR="127.0.0.1",
                   MASTER_PORT=port)
        procs.append(subprocess.Popen([sys.executable, str(HERE / "_sharded_worker.py"), str(out)],
                                      env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                      text=True))
    logs = []
    try:
        for p in procs:
            logs.append(p.communicate(timeout=120)[0])
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    assert all(p.returncode == 0 for p in procs), "\n".join(x[-3000:] for x in logs)


def test_two_gloo_processes_equal_single_process(tmp_path):
    out = tmp_path / "rank0.pt"
    _launch_two_ranks(out)
    got = torch.load(out, weights_only=True)
    assert got["world_size"] == 2
    assert got["rank_rows"] == [(0, 8), (8, 13)]  # 2 + 2 chunks of 4 queries; uneven rows
    ccn, qF, gF = W.problem()
    for key, side in (("full_b", "b"), ("full_a_dst0", "a")):
        single = score_full(ccn, qF, gF, query_side=side, chunk_size=W.CHUNK)
        assert torch.equal(got[key], single), f"{key}: sharded differs from one process"
        # and both are the CCN's D (direct form, independent of the folded scorer)
        torch.testing.assert_close(got[key], _direct_D(ccn, qF, gF, side), atol=1e-5, rtol=0)
    # Rankings are therefore identical too.
    assert torch.equal(torch.argsort(got["full_b"], dim=1, stable=True),
                       torch.argsort(score_full(ccn, qF, gF, query_side="b", chunk_size=W.CHUNK),
                                     dim=1, stable=True))
    from vireid.scoring.scorers import score_rerank

    single = score_rerank(got["S"], lambda qi, gi: got["full_b"][qi, gi], 3)
    assert torch.equal(got["rerank"], single)
    np.testing.assert_allclose(got["rerank"].double().numpy(),
                               _rerank_reference(got["S"], got["full_b"], 3).numpy(), atol=1e-6)
    ref = got["full_b"].numpy()
    want_rows = np.argsort(ref, axis=1, kind="stable")[:, :4]
    np.testing.assert_array_equal(got["topk_rows"].numpy(), want_rows)
    # Gallery sharding folds each rank's gallery slice on its own, and a matrix product's
    # rows can round differently with the batch size: equal to float rounding, not bitwise.
    np.testing.assert_allclose(got["topk_D"].numpy(), np.take_along_axis(ref, want_rows, 1),
                               rtol=1e-6, atol=0)

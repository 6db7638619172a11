"""Run under ``torchrun --nproc_per_node=2`` by test_sharded.py: sharded scorers on gloo.

Every rank builds the same seeded CCN and features (see ``problem``), runs the sharded
scorers and rank 0 saves what it got to ``argv[1]`` (a .pt file).
"""
from __future__ import annotations

import sys

import torch

from vireid.utils import distributed as D
from vireid.scoring.sharded import full_topk_sharded, rerank_sharded, score_sharded
from vireid.models.ccn import CCN

NQ, NG, CHUNK = 13, 11, 4


def problem() -> tuple[CCN, torch.Tensor, torch.Tensor]:
    """A seeded CCN (unshared FCs, so the query side matters) and features; Q=13 queries in
    chunks of 4 split 2 + 2 chunks, i.e. 8 and 5 rows on two ranks."""
    g = torch.Generator().manual_seed(0)
    ccn = CCN(16, (4, 2), kernel_size=(2, 2), padding=1, share_fc=False).eval()
    with torch.no_grad():
        for p in ccn.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.5)
        ccn.fc.weight.mul_(8.0)
        ccn.fc_b.weight.mul_(8.0)
    qF = torch.randn(NQ, 16, 4, 2, generator=g)
    gF = torch.randn(NG, 16, 4, 2, generator=g)
    return ccn, qF, gF


def main(out: str) -> None:
    torch.set_num_threads(1)
    info = D.init_from_env(device="cpu")
    assert info.backend == "gloo" and D.world_size() == 2, (info, D.world_size())
    ccn, qF, gF = problem()
    result = {"world_size": D.world_size(), "rank_rows": D.all_gather_object(
        D.shard_bounds(NQ, D.world_size(), D.rank(), CHUNK))}
    result["full_b"] = score_sharded(ccn, qF, gF, query_side="b", chunk_size=CHUNK)
    result["full_a_dst0"] = score_sharded(ccn, qF, gF, query_side="a", chunk_size=CHUNK, dst=0)
    if D.rank() != 0:
        assert result["full_a_dst0"] is None
    S = torch.nn.functional.normalize(qF.mean((2, 3)), dim=1) @ \
        torch.nn.functional.normalize(gF.mean((2, 3)), dim=1).T
    full = result["full_b"]

    def d_fn(qi: torch.Tensor, gi: torch.Tensor) -> torch.Tensor:
        return full[qi, gi]

    result["S"] = S
    result["rerank"] = rerank_sharded(S, d_fn, 3, chunk_size=CHUNK)
    result["topk_D"], result["topk_rows"] = full_topk_sharded(ccn, qF, gF, 4, query_side="b",
                                                              chunk_size=CHUNK)
    if D.is_main():
        torch.save(result, out)
    D.barrier()
    D.cleanup()


if __name__ == "__main__":
    main(sys.argv[1])

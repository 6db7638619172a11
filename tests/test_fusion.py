"""The ``fused`` scoring mode (issue 24, 1a): D = (1 − w)(1 − S)/2 + w·D_RI against a literal
loop (cosine by hand, D_RI from CCN.forward one pair at a time), its ends (w = 0 ranks as
simplified, w = 1 is full mode), and the choice of w on a run's held-out validation ids."""
import json
import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from conftest import run_cli
from vireid.apps.fusion_weight import choose_fusion_weight, parse_weight_grid, select_weight
from vireid.config import load_config
from vireid.errors import ConfigError
from vireid.models.ccn import CCN
from vireid.scoring.scorers import get_scoring


def _sets(seed=3, nq=4, ng=6, c=5, hw=(4, 3)):
    g = torch.Generator().manual_seed(seed)
    q = SimpleNamespace(F=torch.randn(nq, c, *hw, generator=g), G=torch.randn(nq, c, generator=g),
                        modalities=["ir"] * nq)
    gal = SimpleNamespace(F=torch.randn(ng, c, *hw, generator=g),
                          G=torch.randn(ng, c, generator=g), modalities=["rgb"] * ng)
    return q, gal


def _ccn(c=5, hw=(4, 3)):
    torch.manual_seed(0)
    ccn = CCN(c, hw, kernel_size=(2, 2), stride=(1, 1), padding=1, share_fc=False).eval()
    with torch.no_grad():  # a non-trivial W_D / W_b so that the two sides differ
        ccn.fc.weight.normal_(0, 3.0)
        ccn.fc_b.weight.normal_(0, 3.0)
    return ccn


def _literal(q, gal, ccn, w):
    """The formula pair by pair: cosine of G by hand, D_RI by CCN.forward on the one pair (an
    IR query is side b, the RGB gallery image side a)."""
    out = torch.empty(len(q.G), len(gal.G), dtype=torch.float64)
    for i in range(len(q.G)):
        for j in range(len(gal.G)):
            a, b = q.G[i].double(), gal.G[j].double()
            s = float(a @ b) / math.sqrt(float(a @ a) * float(b @ b))
            with torch.no_grad():
                d = float(ccn(gal.F[j:j + 1], q.F[i:i + 1], torch.tensor([0]), torch.tensor([0])))
            out[i, j] = (1 - w) * (1 - s) / 2 + w * d
    return out


@pytest.mark.parametrize("w", [0.0, 0.3, 0.75, 1.0])
def test_fused_against_literal_loop(w):
    q, gal = _sets()
    ccn = _ccn()
    dist = get_scoring("fused").distance(q, gal, ccn=ccn, fusion_weight=w, chunk_size=3)
    torch.testing.assert_close(dist.double(), _literal(q, gal, ccn, w), rtol=1e-5, atol=1e-6)


def test_fused_ends_are_simplified_and_full():
    q, gal = _sets(seed=5)
    ccn = _ccn()
    fused = get_scoring("fused")
    full = get_scoring("full").distance(q, gal, ccn=ccn)
    assert torch.equal(fused.distance(q, gal, ccn=ccn, fusion_weight=1.0), full)
    simp = get_scoring("simplified").distance(q, gal)
    d0 = fused.distance(q, gal, ccn=ccn, fusion_weight=0.0)
    torch.testing.assert_close(d0, (1 + simp) / 2)  # −S is simplified's distance
    for i in range(len(q.G)):  # the same ranking, query by query
        assert torch.argsort(d0[i], stable=True).tolist() == \
            torch.argsort(simp[i], stable=True).tolist()
    # in between, it is neither (else the test of the mix could not fail)
    mid = fused.distance(q, gal, ccn=ccn, fusion_weight=0.5)
    assert not torch.allclose(mid, full) and not torch.allclose(mid, d0)


def test_fused_needs_ccn_and_a_weight_in_range():
    q, gal = _sets()
    fused = get_scoring("fused")
    assert fused.needs_ccn and fused.uses_fusion_weight
    with pytest.raises(ConfigError, match="CCN"):
        fused.distance(q, gal)
    with pytest.raises(ConfigError, match=r"fusion_weight: expected a number in \[0, 1\]"):
        fused.distance(q, gal, ccn=_ccn(), fusion_weight=1.5)


def test_config_fusion_weight_default_and_range():
    assert load_config(None).eval.fusion_weight == 0.5
    assert load_config(None, ["eval.fusion_weight=0.2"]).eval.fusion_weight == 0.2
    with pytest.raises(ConfigError, match=r"eval.fusion_weight: expected a number in \[0, 1\]"):
        load_config(None, ["eval.fusion_weight=-0.1"])


def test_parse_grid_and_select_weight():
    assert parse_weight_grid("0:1:0.25") == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert parse_weight_grid("0.5,0,0.5") == [0.0, 0.5]
    for bad in ("0:1:0", "a,b", "0,2", ""):
        with pytest.raises(ConfigError, match="fusion"):
            parse_weight_grid(bad)
    rows = [{"w": 0.0, "rank1": 40.0, "mAP": 30.0},   # score 35
            {"w": 0.5, "rank1": 38.0, "mAP": 36.0},   # score 37: best
            {"w": 0.7, "rank1": 36.0, "mAP": 38.0},   # score 37: tie, later
            {"w": 1.0, "rank1": 50.0, "mAP": 10.0}]   # score 30 (best R1 alone)
    assert select_weight(rows) == 1


def test_choose_on_validation_ids_of_a_tiny_run(trained_run, sysu_root):
    last = trained_run / "checkpoints" / "last.pt"
    choice = choose_fusion_weight(last, sysu_root, [0.0, 0.5, 1.0])
    assert [r["w"] for r in choice["grid"]] == [0.0, 0.5, 1.0]
    assert choice["val_ids"] == 3
    # w = 0 ranks as simplified: the numbers of the training loop's own validation pass
    # (simplified mode on the same held-out ids) at the last epoch
    hist = [json.loads(x) for x in (trained_run / "metrics.jsonl").read_text().splitlines()]
    val = [h for h in hist if "val_rank1" in h][-1]
    assert choice["grid"][0]["rank1"] == pytest.approx(val["val_rank1"], abs=1e-6)
    assert choice["grid"][0]["mAP"] == pytest.approx(val["val_mAP"], abs=1e-6)
    scores = [(r["rank1"] + r["mAP"]) / 2 for r in choice["grid"]]
    assert choice["chosen"] == choice["grid"][int(np.argmax(scores))]["w"]  # first of the best


def test_eval_cli_chooses_then_scores_with_the_chosen_weight(trained_run, sysu_root):
    proc = run_cli("eval", "--checkpoint", trained_run, "--data-root", sysu_root, "--no-save",
                   "--scoring", "all", "--choose-fusion-weight", "0,1", "--json", "-",
                   check=True)
    res = json.loads(proc.stdout)
    choice = res["fused"]["fusion_weight_choice"]
    assert res["fused"]["fusion_weight"] == choice["chosen"]
    assert res["full"]["fusion_weight"] is None and "fusion_weight_choice" not in res["full"]
    same = "full" if choice["chosen"] == 1.0 else "simplified"  # the ends equal those modes
    for k in ("rank1", "mAP", "mINP"):
        assert res["fused"]["mean"][k] == pytest.approx(res[same]["mean"][k], abs=1e-9)
    # --fusion-weight sets it directly; both together are refused with one line
    proc = run_cli("eval", "--checkpoint", trained_run, "--data-root", sysu_root, "--no-save",
                   "--scoring", "fused", "--fusion-weight", "1", "--json", "-", check=True)
    one = json.loads(proc.stdout)
    assert one["fusion_weight"] == 1.0
    assert one["mean"]["rank1"] == pytest.approx(res["full"]["mean"]["rank1"], abs=1e-9)
    proc = run_cli("eval", "--checkpoint", trained_run, "--data-root", sysu_root, "--no-save",
                   "--fusion-weight", "1", "--choose-fusion-weight")
    assert proc.returncode == 2 and "expected one of them, found both" in proc.stderr


def test_search_with_fused_is_the_fused_distance_ranked():
    from vireid.apps.search import ArrayGallery, search

    q, gal = _sets(seed=9, nq=3, ng=8)
    ccn = _ccn()
    ref = _literal(q, gal, ccn, 0.4)
    arr = ArrayGallery(gal.F.numpy(), gal.G.numpy(), [f"g{i}" for i in range(8)], shard_rows=3)
    matches = search(arr, q.F.numpy(), q.G.numpy(), scoring="fused", topk=5, ccn=ccn,
                     query_modality="ir", fusion_weight=0.4)
    for i, ms in enumerate(matches):
        assert [m.path for m in ms] == [f"g{j}" for j in torch.argsort(ref[i])[:5].tolist()]
        for m in ms:
            assert m.score == pytest.approx(float(ref[i, int(m.path[1:])]), abs=1e-5)


def test_choosing_needs_held_out_ids(tmp_path, tiny_config, sysu_root):
    run = tmp_path / "noval"
    run_cli("train", "--config", tiny_config, "--data-root", sysu_root, "-o", run,
            "--threads", "1", "train.epochs=1", "train.iters_per_epoch=1", check=True)
    with pytest.raises(ConfigError, match="data.val_ids=0; train it with data.val_ids=K"):
        choose_fusion_weight(run / "checkpoints" / "last.pt", sysu_root, [0.0, 1.0])
    proc = run_cli("eval", "--checkpoint", run, "--data-root", sysu_root, "--no-save",
                   "--choose-fusion-weight", "0,1")
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1
    assert "needs held-out validation ids" in proc.stderr

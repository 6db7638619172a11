"""`vireid reproduce` recipes: well-formed configs, and a smoke run of every table."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from vireid.config import validate
from vireid.apps import reproduce as R
from vireid.models.ccn import num_kernels
from vireid.models.resnet import feature_hw


@pytest.mark.parametrize("budget", ["smoke", "cpu-short", "cpu", "paper"])
def test_every_variant_is_a_valid_config(budget: str, tmp_path: Path) -> None:
    base = R.base_config(budget)
    for recipe in R.RECIPES.values():
        assert all(r.variant in recipe.variants for r in recipe.rows), recipe.name
        for name, overrides in recipe.variants.items():
            cfg = R.variant_config(base, overrides, tmp_path, name)
            validate(cfg)
            for ov in overrides:  # every override really landed in the config
                key, text = ov.split("=", 1)
                sect, leaf = key.split(".")
                want = yaml.safe_load(text)
                got = getattr(getattr(cfg, sect), leaf)
                assert got == want or str(got) == str(want), (recipe.name, name, ov, got)

def test_cpu_short_budget_is_the_cpu_preset_with_fewer_iterations() -> None:
    cpu, short = R.base_config("cpu").to_dict(), R.base_config("cpu-short").to_dict()
    assert short["train"]["epochs"] * short["train"]["iters_per_epoch"] == 6 * 50
    assert short["train"]["lr_milestones"] == [5]
    for sect in ("model", "ccn", "loss", "data"):  # only the schedule differs
        assert short[sect] == cpu[sect], sect
    diff = {k for k in cpu["train"] if cpu["train"][k] != short["train"][k]}
    assert diff <= {"epochs", "iters_per_epoch", "lr_milestones", "warmup_epochs"}


def test_fig3_kernel_counts_follow_algorithm1() -> None:
    # cpu preset: 128x64 input, last stride 1 -> 8x4 map; 3x3 kernels; stride_h 1.
    base = R.base_config("cpu")
    h, w = feature_hw(base.data.height, base.data.width, base.model.last_stride)
    assert (h, w) == (8, 4)
    counts = []
    for sv in range(1, 6):
        # literal enumeration of Algorithm 1's top-left corners
        n = sum(1 for i in range(0, h) if i + 3 <= h and i % sv == 0 for j in range(0, w) if j + 3 <= w)
        assert num_kernels(h, w, (3, 3), (sv, 1)) == n
        counts.append(n)
    assert counts == [12, 6, 4, 4, 4]


def test_paper_values_are_those_of_the_text() -> None:
    paper = Path(__file__).resolve().parents[1].parent / "shared" / "paper" / "attend-to-the-difference.txt"
    text = paper.read_text() if paper.is_file() else ""
    for recipe in R.RECIPES.values():
        for row in recipe.rows:
            for vals in row.paper.values():
                for v in vals.values():
                    if text:
                        assert f"{v:.1f}" in text, (recipe.name, row.label, v)


@pytest.fixture(scope="module")
def smoke_out(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("reproduce")


# Two variants per table at most (the "ours" run is shared, so it trains once).
SMOKE_VARIANTS = {"table1": ["rkl", "ours-noid", "ours"], "table3": ["noid-3-4"], "table4": ["kg", "ours"],
                  "table6": ["unshared"], "table7": ["lambda-0.4"], "fig3": ["stride-v2"],
                  "table8": ["ours-openset"], "cost": ["ours"]}


@pytest.mark.parametrize("table", list(SMOKE_VARIANTS))
def test_smoke_run_of_each_table(table: str, smoke_out: Path) -> None:
    res = R.reproduce(table, smoke_out, budget="smoke", synthetic=True,
                      variants=SMOKE_VARIANTS[table], overrides=["data.workers=0"])
    data = json.loads(res.json.read_text())
    md = res.markdown.read_text()
    assert data["table"] == table and data["budget"] == "smoke" and data["seeds"] == [0]
    for run in data["runs"].values():
        assert run["config"]["data"]["height"] == 64 and run["config"]["train"]["seed"] == 0
        assert Path(run["run_dir"], "checkpoints", "last.pt").is_file()
    if table == "cost":
        c = data["runs"]["ours"]["cost"]
        assert set(c["seconds"]) == {"features", "simplified", "full", "rerank"}
        assert c["paper_seconds"]["full"] == 5280.0
        assert all(v >= 0 for v in c["seconds"].values())
        return
    assert data["rows"], "no rows"
    for row in data["rows"]:
        assert 0.0 <= row["ours"]["rank1"] <= 100.0 and 0.0 <= row["ours"]["mAP"] <= 100.0
        assert row["label"] in md
    if table == "table3":  # noid-3-4 is Table I's ours-noid: same config, trained once
        run = data["runs"]["noid-3-4"]
        assert run["reused"] and Path(run["run_dir"]).name.startswith("ours-noid-")
    if table == "table8":  # the open-set model trains with the same-modality pairs (appendix)
        assert data["runs"]["ours-openset"]["config"]["data"]["same_modality_pairs"] is True
        assert data["runs"]["ours-openset"]["protocol"] == "sysu-openset"
    if table == "table4":
        assert all("params" in r for r in data["rows"])
        kg = next(r for r in data["rows"] if r["variant"] == "kg")["params"]
        ours = next(r for r in data["rows"] if r["variant"] == "ours")["params"]
        assert kg > ours  # the generator adds parameters


def test_regdb_recipe_trains_one_model_per_trial(tmp_path: Path) -> None:
    """RegDB's trials are different train/test splits: the recipe trains one model per trial
    and scores each on its own trial, and the table's mean is over those per-trial models."""
    import numpy as np

    from vireid.engine.checkpoint import load_checkpoint
    from vireid.engine.evaluate import evaluate

    res = R.reproduce("table6", tmp_path, budget="smoke", dataset="regdb", synthetic=True,
                      trials=[1, 2], variants=["ours"], overrides=["data.workers=0"])
    data = json.loads(res.json.read_text())
    run = data["runs"]["ours"]
    assert set(run["run_dirs"]) == {"1", "2"}
    for t, d in run["run_dirs"].items():
        assert load_checkpoint(Path(d, "checkpoints", "last.pt"))["config"]["data"]["trial"] == int(t)
    ev = run["eval"]["simplified"]
    assert [p["trial"] for p in ev["per_trial"]] == [1, 2]
    for p in ev["per_trial"]:  # each trial's numbers are those of its own model, alone
        alone = evaluate([Path(run["run_dirs"][str(p["trial"])])], data_root=data["data_root"],
                         protocol=run["protocol"], scoring="simplified", trials=[p["trial"]])
        assert alone["per_trial"][0]["rank1"] == pytest.approx(p["rank1"])
        assert alone["per_trial"][0]["mAP"] == pytest.approx(p["mAP"])
    row = next(r for r in data["rows"] if r["scoring"] == "simplified")
    assert row["ours"]["rank1"] == pytest.approx(np.mean([p["rank1"] for p in ev["per_trial"]]))
    assert row["paper"] == {"rank1": 53.1, "mAP": 53.5}  # the paper's RegDB Ours-S
    assert "one model trained per trial" in res.markdown.read_text()

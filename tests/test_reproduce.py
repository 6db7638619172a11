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


@pytest.mark.parametrize("budget", ["smoke", "cpu-short", "cpu", "cpu-pretrained", "paper"])
def test_every_variant_is_a_valid_config(budget: str, tmp_path: Path) -> None:
    for _, recipe in R.RECIPES.items():
        assert all(r.variant in recipe.variants for r in recipe.rows), recipe.name
        for name, overrides in recipe.variants.items():
            base = R.variant_base(budget, "sysu", overrides)
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
    for _, recipe in R.RECIPES.items():
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
    assert list(data["machine"]) == ["platform", "processor", "threads", "torch"]  # the file format
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
        trained = json.loads(Path(run["run_dir"], "summary.json").read_text())["seconds_this_session"]
        assert run["trained_seconds"] == trained and f"reused (trained in {trained:.0f})" in md
    if table == "table8":  # the open-set model trains with the same-modality pairs (appendix)
        assert data["runs"]["ours-openset"]["config"]["data"]["same_modality_pairs"] is True
        assert data["runs"]["ours-openset"]["protocol"] == "sysu-openset"
    if table == "fig3":  # each row records its stride_v, and `figures --sweep` draws them
        for row in data["rows"]:
            run = data["runs"][row["variant"]]
            assert row["axis"] == {"key": "ccn.stride", "label": "stride_v",
                                   "value": run["config"]["ccn"]["stride"][0]}
        from vireid.viz.figures import plot_sweep_file
        png = plot_sweep_file(res.json, smoke_out / "fig")["sweep"]
        assert png.name == "fig3.png" and png.read_bytes()[:4] == b"\x89PNG"
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


def test_cpu_pretrained_budget_takes_each_kinds_own_preset() -> None:
    """The regime's CCN kinds start from configs/cpu-pretrained.yaml, every other kind from
    configs/cpu-pretrained-idl.yaml, but RKL from configs/cpu-pretrained-rkl.yaml (each with
    its own validation-chosen values)."""
    root = Path(__file__).resolve().parents[1] / "configs"
    ccn = yaml.safe_load((root / "cpu-pretrained.yaml").read_text())
    idl = yaml.safe_load((root / "cpu-pretrained-idl.yaml").read_text())
    rkl = yaml.safe_load((root / "cpu-pretrained-rkl.yaml").read_text())
    assert rkl["loss"]["kind"] == "rkl"
    assert R.variant_base("cpu-pretrained", "sysu", ["loss.kind=rkl"]).loss.rank_margin \
        == rkl["loss"]["rank_margin"] == 0.3
    for kind, want in (("ccn", ccn), ("ccn-noid", ccn), ("idl", idl), ("vl", idl), ("kvl", idl),
                       ("rkl", rkl)):
        cfg = R.variant_base("cpu-pretrained", "sysu", [f"loss.kind={kind}"])
        for key in ("lr", "warmup_epochs", "epochs", "iters_per_epoch"):
            assert getattr(cfg.train, key) == want["train"][key], (kind, key)
        assert cfg.loss.lambda_id == want["loss"]["lambda_id"], kind
        assert cfg.model.pretrained == want["model"]["pretrained"] == "synthetic-r18w025"
    # the last loss.kind of the variant's and the user's overrides decides; none: the CCN preset
    last = R.variant_base("cpu-pretrained", "sysu", ["loss.kind=ccn", "train.epochs=3", "loss.kind=idl"])
    assert last.train.lr == idl["train"]["lr"] and last.train.warmup_epochs == idl["train"]["warmup_epochs"]
    none = R.variant_base("cpu-pretrained", "sysu", [])
    assert none.train.lr == ccn["train"]["lr"] and none.loss.lambda_id == ccn["loss"]["lambda_id"]


def test_table7_preset_row_only_where_its_lambda_is_not_listed(tmp_path: Path) -> None:
    rec = R.RECIPES["table7"]
    # cpu: λ 0.1 is the preset's, so "ours" is the λ = 0.1 run and not a row of its own
    assert R._optional_aliases(rec, "cpu", "sysu", [], tmp_path) == {"ours": "lambda-0.1"}
    # cpu-pretrained: λ 0.5 is none of the paper's values, so it is a row
    assert R._optional_aliases(rec, "cpu-pretrained", "sysu", [], tmp_path) == {}


def test_seeds_aggregate_mean_and_std_over_seeds(tmp_path: Path) -> None:
    """--seeds: one run per variant and seed; each cell is the mean over seeds of that seed's
    trial mean, ± the sample std over seeds; Δ is the per-seed difference to the reference."""
    import statistics

    res = R.reproduce("table7", tmp_path, budget="smoke", synthetic=True, seeds=[0, 1, 2],
                      variants=["lambda-0.1", "lambda-1.0", "ours"], overrides=["data.workers=0"])
    data = json.loads(res.json.read_text())
    assert data["seeds"] == [0, 1, 2] and data["std_over"] == "seeds"
    assert sorted(data["runs"]) == sorted(f"{v}@s{s}" for v in ("lambda-0.1", "lambda-1.0")
                                          for s in (0, 1, 2))
    dirs = {run["run_dir"] for run in data["runs"].values()}
    assert len(dirs) == 6  # a separate run per seed
    for key, run in data["runs"].items():
        assert run["config"]["train"]["seed"] == run["seed"] == int(key.rsplit("@s", 1)[1])
    assert [r["variant"] for r in data["rows"]] == ["lambda-0.1", "lambda-1.0"]  # "ours" = λ 0.1
    for row in data["rows"]:
        per = [data["runs"][f"{row['variant']}@s{s}"]["eval"]["simplified"]["mean"] for s in (0, 1, 2)]
        for k in ("rank1", "mAP"):
            vals = [float(p[k]) for p in per]
            assert row["ours"][f"{k}_seeds"] == pytest.approx(vals)
            assert row["ours"][k] == pytest.approx(sum(vals) / 3)
            assert row["ours"][f"{k}_std"] == pytest.approx(statistics.stdev(vals))
    lam1 = data["rows"][1]
    assert lam1["reference"]["variant"] == "lambda-0.1"
    ref = data["rows"][0]["ours"]
    assert lam1["delta"]["mAP"] == pytest.approx([a - b for a, b in zip(lam1["ours"]["mAP_seeds"],
                                                                        ref["mAP_seeds"])])
    md = res.markdown.read_text()
    assert "± the sample std over seeds" in md and "(vs lambda-0.1)" in md
    from vireid.viz.report import render_json
    html = render_json(data)  # `vireid report`: mean ± std over seeds, per-seed R1 and Δ
    r1 = lam1["ours"]
    assert f"{r1['rank1']:.1f} ± {r1['rank1_std']:.1f}" in html
    assert " / ".join(f"{v:.1f}" for v in r1["rank1_seeds"]) in html
    assert f"{lam1['delta']['rank1'][0]:+.1f}/{lam1['delta']['mAP'][0]:+.1f}" in html
    assert "rank1_seeds" not in html


def test_evaluation_is_cached_per_run_and_redone_after_retraining(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    from vireid.engine import runcache

    calls = []
    real = runcache.evaluate_run

    def counting(*a, **k):  # type: ignore[no-untyped-def]
        calls.append(a[0])
        return real(*a, **k)

    monkeypatch.setattr(runcache, "evaluate_run", counting)
    kw = dict(budget="smoke", synthetic=True, variants=["ours"], overrides=["data.workers=0"])
    first = json.loads(R.reproduce("table6", tmp_path, **kw).json.read_text())
    assert len(calls) == 1
    # another table sharing the run reads the cached result: same numbers, no evaluation
    again = json.loads(R.reproduce("table4", tmp_path, **kw).json.read_text())
    assert len(calls) == 1
    assert again["runs"]["ours"]["eval"]["simplified"]["mean"] == first["runs"]["ours"]["eval"]["simplified"]["mean"]
    # a retrained checkpoint (new file) is scored anew
    ckpt = Path(first["runs"]["ours"]["run_dir"], "checkpoints", "last.pt")
    blob = ckpt.read_bytes()
    ckpt.unlink()
    ckpt.write_bytes(blob + b"")
    import os
    os.utime(ckpt, ns=(1, 1))
    R.reproduce("table6", tmp_path, **kw)
    assert len(calls) == 2


def test_table3_recipe_expands_into_the_override_lists_it_had() -> None:
    """The recipe records are data; these literals are the override lists and references the
    code before the records produced (captured by running it), in their order."""
    rec = R.RECIPES["table3"]
    stages = ["none", "4", "3-4", "2-4", "1-4", "all"]
    assert list(rec.variants) == [f"noid-{s}" for s in stages] + [f"idl-{s}" for s in stages]
    assert {v: rec.overrides(v) for v in rec.variants} == {
        "noid-none": ["loss.kind=ccn-noid", "model.shared_stages=none"],
        "noid-4": ["loss.kind=ccn-noid", "model.shared_stages=4"],
        "noid-3-4": ["loss.kind=ccn-noid", "model.shared_stages=3-4"],
        "noid-2-4": ["loss.kind=ccn-noid", "model.shared_stages=2-4"],
        "noid-1-4": ["loss.kind=ccn-noid", "model.shared_stages=1-4"],
        "noid-all": ["loss.kind=ccn-noid", "model.shared_stages=all"],
        "idl-none": ["loss.kind=idl", "model.shared_stages=none"],
        "idl-4": ["loss.kind=idl", "model.shared_stages=4"],
        "idl-3-4": ["loss.kind=idl", "model.shared_stages=3-4"],
        "idl-2-4": ["loss.kind=idl", "model.shared_stages=2-4"],
        "idl-1-4": ["loss.kind=idl", "model.shared_stages=1-4"],
        "idl-all": ["loss.kind=idl", "model.shared_stages=all"]}
    # a run's list: the variant's, then the user's, then the seed's (the last one wins)
    assert rec.overrides("noid-2-4", ["data.workers=0", "train.seed=1"]) == [
        "loss.kind=ccn-noid", "model.shared_stages=2-4", "data.workers=0", "train.seed=1"]
    assert {v: rec.reference_of(v) for v in rec.variants} == {
        **{f"noid-{s}": "noid-3-4" for s in stages if s != "3-4"}, "noid-3-4": None,
        **{f"idl-{s}": "idl-3-4" for s in stages if s != "3-4"}, "idl-3-4": None}
    assert [(r.label, r.variant, r.scoring, r.paper) for r in rec.rows[:2]] == [
        ("Ours(w/o ID) None", "noid-none", "simplified", {"sysu": {"rank1": 25.9, "mAP": 29.3}}),
        ("Ours(w/o ID) Stage 4", "noid-4", "simplified", {"sysu": {"rank1": 29.3, "mAP": 33.6}})]
    fig3 = R.RECIPES["fig3"]
    assert {v: fig3.overrides(v) for v in fig3.variants} == {
        "ours": ["loss.kind=ccn"], "stride-v2": ["loss.kind=ccn", "ccn.stride=[2,1]"],
        "stride-v3": ["loss.kind=ccn", "ccn.stride=[3,1]"], "stride-v4": ["loss.kind=ccn", "ccn.stride=[4,1]"],
        "stride-v5": ["loss.kind=ccn", "ccn.stride=[5,1]"]}


@pytest.mark.parametrize("budget,dataset,table,variant,extra,key", [
    ("cpu", "sysu", "table3", "noid-2-4", [], "noid-2-4-7a87776901"),
    ("cpu-pretrained", "sysu", "table1", "idl", [], "idl-ff3465423e"),
    ("smoke", "regdb", "table7", "lambda-0.4", ["train.seed=3"], "lambda-0.4-63b5d0123f"),
    ("paper", "regdb", "fig3", "stride-v3", [], "stride-v3-8a53ab7296"),
])
def test_run_folders_keep_their_names(budget: str, dataset: str, table: str, variant: str,
                                      extra: list[str], key: str) -> None:
    """A variant's run folder (name + hash of its resolved config) is the one the code had
    before the recipes became records (literal, captured from it): existing OUT/runs are
    reused. A new config field with a default changes these names (and retrains)."""
    rec = R.RECIPES[table]
    cfg = R.variant_config(R.variant_base(budget, dataset, rec.overrides(variant, extra)),
                           rec.variants[variant], "/data/x", variant, extra)
    assert R.run_key(variant, cfg) == key


def test_a_table_is_refused_on_a_dataset_it_is_not_defined_on(tmp_path: Path) -> None:
    from vireid.errors import ConfigError

    with pytest.raises(ConfigError, match=r"--dataset: table8 .* defined on sysu only.*found 'regdb'"):
        R.reproduce("table8", tmp_path / "out", budget="smoke", dataset="regdb", synthetic=True)
    assert not (tmp_path / "out").exists()  # refused before anything is written


def test_cli_choices_are_the_registries() -> None:
    from vireid.apps.recipes import BUDGETS, RECIPES
    from vireid.cli import _all_parsers, build_parser
    from vireid.data.registry import DATASETS

    sub = next(p for p in _all_parsers(build_parser()) if p.prog.endswith(" reproduce"))
    acts = {a.dest: a for a in sub._actions}
    assert list(acts["table"].choices) == ["table1", "table3", "table4", "table6", "table7", "fig3",
                                          "table8", "cost", "all"] == RECIPES.names() + ["all"]
    assert list(acts["dataset"].choices) == DATASETS.names() and "llcm" in acts["dataset"].choices
    assert list(acts["budget"].choices) == ["smoke", "cpu-short", "cpu", "cpu-pretrained", "paper"]
    assert list(acts["budget"].choices) == BUDGETS.names()

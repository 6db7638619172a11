"""A data set registered from outside the package (tests/plugins/toy_dataset.py, one
``register_dataset`` call) is accepted everywhere the built-ins are: ``resolve_names``,
``vireid synth --layout``, ``vireid data summary`` and ``vireid data split``. Also the
registry's own checks and the ``data.trial`` rule, which moved from the config to the entry.

Every count and list is checked against a literal walk over the folder written.
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from conftest import run_cli
from vireid.config import load_config
from vireid.data.records import IR, RGB, EvalSplit, ImageRecord, TrainSplit
from vireid.data.registry import (DATASETS, PROTOCOLS, SYNTHETIC_LAYOUTS, DatasetSpec, Protocol,
                                  TrialRule, get_dataset, register_dataset)
from vireid.engine.resolve import resolve_names
from vireid.errors import ConfigError
from vireid.utils import plugins

TESTS = Path(__file__).resolve().parent
PLUGIN = "plugins.toy_dataset"


@pytest.fixture
def toy_plugin(monkeypatch: pytest.MonkeyPatch):
    """The toy plugin imported as vireid imports plugins (VIREID_PLUGINS); removed after."""
    monkeypatch.setenv(plugins.ENV_VAR, PLUGIN)
    plugins.load_plugins(force=True)
    yield get_dataset("toy")
    DATASETS.unregister("toy")
    sys.modules.pop(PLUGIN, None)  # a later load imports (and registers) it again


@pytest.fixture
def plugin_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Environment of a CLI subprocess that loads the toy plugin from tests/."""
    monkeypatch.setenv(plugins.ENV_VAR, PLUGIN)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(
        [str(TESTS), *filter(None, [os.environ.get("PYTHONPATH")])]))


def _walk(root: Path) -> list[tuple[str, int, int, str]]:
    """(relative path, pid, camera, modality) of every image, read from the names alone."""
    out = []
    for pid_dir in os.listdir(root / "images"):
        for name in os.listdir(root / "images" / pid_dir):
            modality, cam, _ = name[:-len(".jpg")].split("_")
            out.append((f"images/{pid_dir}/{name}", int(pid_dir), int(cam), modality))
    return out


def test_plugin_registers_in_one_call_and_resolves(toy_plugin: DatasetSpec) -> None:
    assert toy_plugin.name == "toy" and "toy" in DATASETS.names()
    assert [p.dataset for p in toy_plugin.protocols] == ["toy", "toy"]  # filled in
    assert PROTOCOLS["toy-v2i"] is toy_plugin.protocol("v2i")
    assert toy_plugin.protocol(None).name == "toy-i2v"  # default: the first
    assert "toy" in SYNTHETIC_LAYOUTS.names()
    resolved = resolve_names(load_config(None, ["data.dataset=toy", "data.trial=7"]))
    assert resolved.dataset is toy_plugin  # no trial rule: data.trial does not apply
    assert not toy_plugin.per_trial and toy_plugin.check_trial(7) is None


def test_plugin_through_the_cli(tmp_path: Path, plugin_env: None) -> None:
    root = tmp_path / "toy"
    proc = run_cli("synth", "--layout", "toy", "--out", root, "--ids", "7", "--json",
                   check=True)
    assert json.loads(proc.stdout)["layout"] == "toy"
    images = _walk(root)
    test_ids = {int(x) for x in (root / "test_ids.txt").read_text().strip().split(",")}
    assert len(images) == 7 * 6 and test_ids and len(test_ids) < 7

    summary = json.loads(run_cli("data", "summary", "--dataset", "toy", "--root", root,
                                 "--json", check=True).stdout)
    for split, in_test in (("train", False), ("test", True)):
        part = [im for im in images if (im[1] in test_ids) == in_test]
        assert summary["splits"][split]["ids"] == len({im[1] for im in part})
        for mod in (RGB, IR):
            mine = [im for im in part if im[3] == mod]
            assert summary["splits"][split][mod]["images"] == len(mine)
            assert summary["splits"][split][mod]["cameras"] == {
                str(c): {"ids": len({im[1] for im in mine if im[2] == c}),
                         "images": sum(1 for im in mine if im[2] == c)}
                for c in sorted({im[2] for im in mine})}
    test_ir = [im for im in images if im[1] in test_ids and im[3] == IR]
    test_rgb = [im for im in images if im[1] in test_ids and im[3] == RGB]
    assert summary["protocols"]["toy-i2v"]["metric"] == "regdb"
    assert summary["protocols"]["toy-i2v"]["trials"] == [{
        "trial": 0, "query": {"ids": len(test_ids), "images": len(test_ir)},
        "gallery": {"ids": len(test_ids), "images": len(test_rgb)}}]
    text = run_cli("data", "summary", "--dataset", "toy", "--root", root, check=True).stdout
    assert "toy-i2v" in text and "toy-v2i" in text

    for proto in ("v2i", "toy-v2i"):
        lists = json.loads(run_cli("data", "split", "--dataset", "toy", "--root", root,
                                   "--protocol", proto, "--trial", "0", "--json",
                                   check=True).stdout)
        assert sorted(map(tuple, lists["query"])) == sorted(im[:3] for im in test_rgb)
        assert sorted(map(tuple, lists["gallery"])) == sorted(im[:3] for im in test_ir)
    bad = run_cli("data", "split", "--dataset", "toy", "--root", root, "--protocol", "all",
                  "--trial", "0")
    assert bad.returncode == 2 and "toy-i2v" in bad.stderr and "'all'" in bad.stderr


def test_without_the_plugin_the_name_is_refused(tmp_path: Path) -> None:
    for args in (("data", "summary", "--dataset", "toy", "--root", tmp_path),
                 ("synth", "--layout", "toy", "--out", tmp_path / "x")):
        proc = run_cli(*args)
        assert proc.returncode == 2 and "invalid choice: 'toy'" in proc.stderr
        assert "sysu" in proc.stderr and "llcm" in proc.stderr


# --- the registry's checks -----------------------------------------------------------------------
def _proto(name: str, **kw) -> Protocol:
    fields = dict(name=name, build=lambda ds, trial: EvalSplit(name, trial, [], []), trials=(0,),
                  metric="regdb", query_modality=IR, gallery_modality=RGB)
    return Protocol(**{**fields, **kw})


def _spec_fields(**kw) -> dict:
    fields = dict(name="probe", title="Probe", load=lambda root: None,
                  train_of=lambda ds, t: None, test_of=lambda ds, t: ([], []), marker="x",
                  protocols=(_proto("probe-a"),))
    return {**fields, **kw}


@pytest.mark.parametrize("kw, words", [
    ({"protocols": ()}, ["protocols", "at least one"]),
    ({"default_protocol": "probe-b"}, ["default_protocol", "probe-a", "probe-b"]),
    ({"protocols": (_proto("probe-a"), _proto("probe-b", aliases=("probe-a",)))},
     ["probe-a", "more than once"]),
    ({"protocols": (_proto("probe-a", multi_shot="probe-z"),)}, ["multi_shot", "probe-z"]),
    ({"summary": lambda ds: {}}, ["summary_lines"]),
    ({"load": "not a function"}, ["load", "function"]),
])
def test_malformed_entries_are_refused(kw: dict, words: list[str]) -> None:
    with pytest.raises(ConfigError) as err:
        register_dataset(**_spec_fields(**kw))
    for word in words:
        assert word in str(err.value)
    assert "probe" not in DATASETS.names()


@pytest.mark.parametrize("kw, words", [
    ({"trials": ()}, ["trials", "at least one"]),
    ({"trials": (0, 0)}, ["trials", "distinct"]),
    ({"query_modality": "thermal"}, ["query_modality", "mixed", "thermal"]),
    ({"shot": "few"}, ["shot", "multi", "few"]),
    ({"metric": 3}, ["metric"]),
])
def test_malformed_protocols_are_refused(kw: dict, words: list[str]) -> None:
    with pytest.raises(ConfigError) as err:
        _proto("probe-a", **kw)
    for word in words:
        assert word in str(err.value)


def test_names_are_not_taken_twice() -> None:
    with pytest.raises(ConfigError, match="'sysu' is already registered"):
        register_dataset(**_spec_fields(name="sysu"))
    with pytest.raises(ConfigError, match="sysu-all.*already belong to data set 'sysu'"):
        register_dataset(**_spec_fields(protocols=(_proto("sysu-all"),)))
    assert "probe" not in DATASETS.names()


def test_unknown_metric_rule_is_refused_when_resolved() -> None:
    register_dataset(**_spec_fields(protocols=(_proto("probe-a", metric="nope"),)))
    try:
        with pytest.raises(ConfigError) as err:
            resolve_names(load_config(None, ["data.dataset=probe"]))
        assert "protocol metric" in str(err.value) and "'nope'" in str(err.value)
        assert "sysu" in str(err.value)  # the rules there are, listed
    finally:
        DATASETS.unregister("probe")


# --- data.trial: its form in the config, its range in the entry ------------------------------------
def test_trial_range_is_the_entrys_rule() -> None:
    cfg = load_config(None, ["data.dataset=regdb", "data.trial=11"])  # form only: accepted
    with pytest.raises(ConfigError) as err:
        resolve_names(cfg)
    assert "data.trial" in str(err.value) and "1..10" in str(err.value) and "11" in str(err.value)
    for t in (1, 10):
        assert resolve_names(load_config(None, ["data.dataset=regdb", f"data.trial={t}"]))
    assert resolve_names(load_config(None, ["data.dataset=sysu", "data.trial=11"]))  # ignored
    with pytest.raises(ConfigError, match="data.trial"):
        load_config(None, ["data.trial=0"])


def test_default_summary_per_trial_and_available_trials() -> None:
    # trial t: training ids {t, t+1}, test id 9; one RGB camera 1 and one IR camera 2 image each
    def rec(pid: int, mod: str) -> ImageRecord:
        return ImageRecord(f"{mod}/{pid}.jpg", pid, 1 if mod == RGB else 2, mod)

    def train_of(ds, t):
        return TrainSplit([rec(p, RGB) for p in (t, t + 1)], [rec(t, IR)], {t: 0, t + 1: 1})

    spec = DatasetSpec(**_spec_fields(
        train_of=train_of, test_of=lambda ds, t: ([rec(9, RGB)], [rec(9, IR), rec(9, IR)]),
        protocols=(_proto("probe-a", trials=(1, 2, 3)),),
        trial_rule=TrialRule(trials=(1, 2, 3), available=lambda ds: [1, 3])))
    assert spec.per_trial and spec.protocol_trials(spec.protocols[0], ds=None) == [1, 3]
    splits = spec.summarize(None)
    assert list(splits) == ["1", "3"]
    assert splits["3"]["train"] == {
        "ids": 2, "rgb": {"ids": 2, "images": 2, "cameras": {"1": {"ids": 2, "images": 2}}},
        "ir": {"ids": 1, "images": 1, "cameras": {"2": {"ids": 1, "images": 1}}}}
    assert splits["1"]["test"]["ids"] == 1 and splits["1"]["test"]["ir"]["images"] == 2
    text = "\n".join(spec.summary_text(splits))
    assert "trial 1" in text and "trial 3" in text and "trial 2" not in text
    with pytest.raises(ConfigError, match=r"data.trial: expected an integer in 1..3"):
        spec.check_trial(4)

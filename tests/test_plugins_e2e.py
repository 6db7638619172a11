"""A toy data set, loss, scoring mode and backbone, registered from modules outside ``src/``
through vireid's public names only (tests/plugins/), train, evaluate and search through the
command line and through the Python API (the docs' "How to add …" sections, end to end)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

TESTS = Path(__file__).resolve().parent
PLUGINS = "plugins.toy_dataset,plugins.toy_loss,plugins.toy_scoring,plugins.toy_backbone"
OVERRIDES = ["data.dataset=toy", "model.arch=toy", "model.width=0.5", "model.pretrained=none",
             "model.shared_stages=4", "loss.kind=toy-idl", "eval.scoring=toy-l1",
             "data.height=64", "data.width=32", "data.ids_per_batch=4", "data.neg_ratio=2",
             "train.epochs=1", "train.iters_per_epoch=3", "train.lr=0.01", "train.lr_milestones=[1]",
             "train.diag_every=0", "train.seed=0", "train.warmup_epochs=0", "data.val_ids=0",
             "train.selection=last"]


def _env() -> dict[str, str]:
    path = os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return dict(os.environ, PYTHONPATH=path, VIREID_PLUGINS=PLUGINS, OMP_NUM_THREADS="1",
                MKL_NUM_THREADS="1", PYTHONHASHSEED="0")


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "vireid", *map(str, args)], capture_output=True,
                          text=True, env=_env(), cwd=cwd, timeout=300)
    assert proc.returncode == 0, f"vireid {' '.join(map(str, args))}:\n{proc.stdout}\n{proc.stderr}"
    return proc


@pytest.fixture(scope="module")
def toy_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("toy")
    data, run = tmp / "data", tmp / "run"
    _cli("synth", "--layout", "toy", "--out", data, "--ids", "12", cwd=tmp)
    _cli("train", "--config", "cpu-synthetic", "--data-root", data, "-o", run, "--no-progress",
         *OVERRIDES, cwd=tmp)
    return {"tmp": tmp, "data": data, "run": run}


def _l1(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    out = np.zeros((len(a), len(b)))
    for i in range(len(a)):  # literal loop: Σ_c |a_ic − b_jc|
        for j in range(len(b)):
            out[i, j] = sum(abs(float(x) - float(y)) for x, y in zip(a[i], b[j]))
    return out


def test_cli_trains_evaluates_and_searches_with_plugin_entries(toy_run):
    tmp, data, run = toy_run["tmp"], toy_run["data"], toy_run["run"]
    ckpt = __import__("torch").load(run / "checkpoints" / "last.pt", weights_only=True)
    cfg = ckpt["config"]
    assert (cfg["data"]["dataset"], cfg["model"]["arch"], cfg["loss"]["kind"]) == \
        ("toy", "toy", "toy-idl")
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert any("toy" in m for m in metrics), "the toy loss's logged part is missing"

    res = json.loads(_cli("eval", "--checkpoint", run, "--data-root", data, "--scoring",
                          "toy-l1", "--json", "-", "--no-save", cwd=tmp).stdout)
    text = json.dumps(res)
    assert "toy-i2v" in text and "toy-l1" in text

    gallery = data / "images"
    _cli("index", "build", "--checkpoint", run, "--images", gallery, "-o", tmp / "ix", "--modality", "rgb",
         "--labels-from-folders", "--no-progress", cwd=tmp)
    query = sorted(gallery.glob("*/ir_3_0.jpg"))[0]
    out = json.loads(_cli("search", "--index", tmp / "ix", "--query", query, "--scoring",
                          "toy-l1", "--topk", "5", "--json", cwd=tmp).stdout)
    assert out, "search returned nothing"


def test_python_api_trains_evaluates_and_searches_with_plugin_entries(toy_run):
    tmp, data, run = toy_run["tmp"], toy_run["data"], toy_run["run"]
    script = f"""
import json, sys
import numpy as np
import vireid
from vireid.utils.plugins import loaded_plugins
run2 = vireid.train("cpu-synthetic", {str(data)!r}, {str(tmp / 'api-run')!r}, {OVERRIDES!r})
for path in ({str(run)!r}, str(run2)):
    model = vireid.load(path)
    import plugins.toy_dataset as toy
    ds = toy.load({str(data)!r})
    ir, rgb = ds.of(True, "ir"), ds.of(True, "rgb")
    root = {str(data)!r}
    q = model.extract([root + "/" + r.path for r in ir], modality="ir",
                      pids=[r.pid for r in ir], camids=[r.camid for r in ir])
    g = model.extract([root + "/" + r.path for r in rgb], modality="rgb",
                      pids=[r.pid for r in rgb], camids=[r.camid for r in rgb])
    D = model.distance(q, g, scoring="toy-l1")
    rows, dist = model.search(q, g, k=3, scoring="toy-l1")
    print(json.dumps({{"D": D.tolist(), "qG": q.G.numpy().tolist(), "gG": g.G.numpy().tolist(),
                      "rows": rows.tolist(), "metrics": vireid.evaluate(D, q, g, metric="toy-i2v"),
                      "plugins": loaded_plugins()}}))
"""
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          env=_env(), cwd=tmp, timeout=300)
    assert proc.returncode == 0, proc.stderr
    first, second = (json.loads(line) for line in proc.stdout.strip().splitlines()[-2:])
    assert set(first["plugins"]) == set(PLUGINS.split(","))
    for out in (first, second):
        D = np.array(out["D"])
        ref = _l1(np.array(out["qG"]), np.array(out["gG"]))
        np.testing.assert_allclose(D, ref, rtol=1e-4, atol=1e-4)
        # search: the 3 nearest by the literal distance, ties by lower row
        want = [sorted(range(D.shape[1]), key=lambda j: (ref[i, j], j))[:3] for i in range(len(D))]
        near = np.array(out["rows"])
        for i in range(len(D)):
            assert [round(ref[i, j], 3) for j in near[i]] == [round(ref[i, j], 3) for j in want[i]]
    # The API's evaluation of the CLI-trained run equals `vireid eval`'s on the same checkpoint
    # (one trial: the toy protocol has one).
    cli = json.loads(_cli("eval", "--checkpoint", run, "--data-root", data, "--scoring", "toy-l1",
                          "--json", "-", "--no-save", cwd=tmp).stdout)
    assert cli["protocol"] == "toy-i2v" and cli["scoring"] == "toy-l1"
    for key in ("rank1", "rank5", "mAP", "mINP"):
        assert first["metrics"][key] == pytest.approx(cli["mean"][key], abs=1e-9), key


def test_info_lists_the_plugins_entries_beside_the_built_ins(tmp_path):
    names = json.loads(_cli("info", "--registered", "--json", cwd=tmp_path).stdout)
    assert {"sysu", "toy"} <= set(names["datasets"]) and "toy-i2v" in names["protocols"]
    assert {"ccn", "toy-idl"} <= set(names["losses"]) and {"full", "toy-l1"} <= set(names["scoring"])
    assert {"resnet50", "toy"} <= set(names["backbones"])
    assert set(names["plugins"]) == set(PLUGINS.split(","))


def test_a_plugin_named_by_an_installed_distributions_entry_point_is_imported(tmp_path):
    # An installed distribution is a *.dist-info folder on sys.path; its entry_points.txt
    # names the module in the group vireid.plugins (as `pip install mylab` would leave it).
    dist = tmp_path / "site" / "mylab_vireid-0.1.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: mylab-vireid\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[vireid.plugins]\nmylab = plugins.toy_loss\n")
    env = dict(_env(), PYTHONPATH=os.pathsep.join([str(tmp_path / "site"), str(TESTS)]))
    env.pop("VIREID_PLUGINS")
    proc = subprocess.run([sys.executable, "-m", "vireid", "info", "--registered", "--json"],
                          capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    names = json.loads(proc.stdout)
    assert "toy-idl" in names["losses"] and names["plugins"] == ["plugins.toy_loss"]
    # a plugin that cannot be imported is one error line naming it and its group, exit 2
    (dist / "entry_points.txt").write_text("[vireid.plugins]\nmylab = plugins.no_such_module\n")
    proc = subprocess.run([sys.executable, "-m", "vireid", "info", "--registered"],
                          capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 2 and proc.stderr.count("error:") == 1, proc.stderr
    assert "plugins.no_such_module" in proc.stderr and "vireid.plugins" in proc.stderr

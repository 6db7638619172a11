"""The list-file data set (``data.dataset=list``, :mod:`vireid.data.listfile`).

* Against SYSU-MM01: list files that describe exactly a SYSU folder's training set (a literal
  walk of the folder) and two trials of its all-search protocol (the lists of ``vireid data
  split --json``) train the same weights and give the same metrics, number for number.
* End to end through the CLI: ``vireid synth --layout list`` → ``data check`` → ``train`` →
  ``eval`` → ``index build --list`` → ``search``.
* The checker on each kind of bad list: one ``error:`` line counting the problems by kind,
  exit 2; the same checks before training.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import run_cli

KEYS = ("rank1", "rank5", "rank10", "rank20", "mAP", "mINP")
SYSU_RGB_CAMS, SYSU_IR_CAMS = (1, 2, 4, 5), (3, 6)


def _ids(path: Path) -> list[int]:
    return [int(x) for x in path.read_text().splitlines()[0].split(",") if x.strip()]


def _write(path: Path, lines: list[str]) -> None:
    path.write_text("".join(f"{ln}\n" for ln in lines))


# ---------------------------------------------------------------------------------------------
# The same images in the SYSU layout and as lists: the same training, the same metrics
# ---------------------------------------------------------------------------------------------
def test_list_matches_sysu_number_for_number(tmp_path: Path, sysu_root: Path,
                                             tiny_config: Path) -> None:
    # The fixture's training ids with images of both modalities (a literal walk); the list
    # data set refuses a one-modality training id, so a SYSU copy without those ids is the
    # folder both describe.
    trainval = sorted(set(_ids(sysu_root / "exp" / "train_id.txt"))
                      | set(_ids(sysu_root / "exp" / "val_id.txt")))
    test_ids = _ids(sysu_root / "exp" / "test_id.txt")

    def has(pid: int, cams: tuple[int, ...]) -> bool:
        return any((sysu_root / f"cam{c}" / f"{pid:04d}").is_dir() for c in cams)

    both = [p for p in trainval if has(p, SYSU_RGB_CAMS) and has(p, SYSU_IR_CAMS)]
    assert 4 <= len(both) <= len(trainval)
    sysu = tmp_path / "sysu"
    for cam in range(1, 7):
        (sysu / f"cam{cam}").mkdir(parents=True)
        for pid in both + test_ids:
            src = sysu_root / f"cam{cam}" / f"{pid:04d}"
            if src.is_dir():
                (sysu / f"cam{cam}" / f"{pid:04d}").symlink_to(src)
    (sysu / "exp").mkdir()
    train_ids = [p for p in _ids(sysu_root / "exp" / "train_id.txt") if p in both]
    val_ids = [p for p in _ids(sysu_root / "exp" / "val_id.txt") if p in both]
    for name, ids in (("train_id.txt", train_ids), ("val_id.txt", val_ids),
                      ("test_id.txt", test_ids)):
        (sysu / "exp" / name).write_text(",".join(map(str, ids)) + "\n")

    # The list folder: the same image files, SYSU's training order (ids ascending, cameras
    # in order, names sorted; RGB and IR records each in that order), the query and the
    # galleries of trials 0 and 1 as `vireid data split --json` gives them.
    lists = tmp_path / "lists"
    lists.mkdir()
    for cam in range(1, 7):
        (lists / f"cam{cam}").symlink_to(sysu / f"cam{cam}")
    train = [f"cam{cam}/{pid:04d}/{name} {pid} {cam} {mod}"
             for mod, cams in (("rgb", SYSU_RGB_CAMS), ("ir", SYSU_IR_CAMS))
             for pid in both for cam in cams if (sysu / f"cam{cam}" / f"{pid:04d}").is_dir()
             for name in sorted(os.listdir(sysu / f"cam{cam}" / f"{pid:04d}"))]
    _write(lists / "train.txt", ["# the SYSU folder's training set", *train])

    def line(path: str, pid: int, cam: int) -> str:
        return f"{path} {pid} {cam} {'ir' if cam in SYSU_IR_CAMS else 'rgb'}"

    sysu_splits = {}
    for trial in (0, 1):
        split = json.loads(run_cli("data", "split", "--dataset", "sysu", "--root", sysu,
                                   "--protocol", "all", "--trial", trial, "--json",
                                   check=True).stdout)
        sysu_splits[trial] = split
        _write(lists / f"gallery_{trial}.txt", [line(*r) for r in split["gallery"]])
    assert sysu_splits[0]["query"] == sysu_splits[1]["query"]
    _write(lists / "query.txt", [line(*r) for r in sysu_splits[0]["query"]])
    (lists / "vireid-list.yaml").write_text("metric: sysu\n")

    run_cli("data", "check", "--dataset", "list", "--root", lists, check=True)
    for trial in (0, 1):
        mine = json.loads(run_cli("data", "split", "--dataset", "list", "--root", lists,
                                  "--protocol", "list", "--trial", trial, "--json",
                                  check=True).stdout)
        assert mine == sysu_splits[trial]

    runs = {}
    for name, root in (("sysu", sysu), ("list", lists)):
        runs[name] = tmp_path / f"run-{name}"
        run_cli("train", "--config", tiny_config, "--data-root", root, "-o", runs[name],
                "--threads", "1", f"data.dataset={name}", "train.epochs=1", check=True,
                timeout=300)
    weights = {name: torch.load(run / "checkpoints" / "last.pt", map_location="cpu",
                                weights_only=True)["model"] for name, run in runs.items()}
    assert weights["sysu"].keys() == weights["list"].keys()
    for key, value in weights["sysu"].items():
        assert torch.equal(value, weights["list"][key]), key

    results = {}
    for name, root, extra in (("sysu", sysu, ["--protocol", "all", "--trials", "0,1"]),
                              ("list", lists, [])):
        out = tmp_path / f"{name}.json"
        run_cli("eval", "--checkpoint", runs[name], "--data-root", root, "--scoring", "all",
                "--no-save", "--json", out, *extra, check=True, timeout=300)
        results[name] = json.loads(out.read_text())
    for mode in ("simplified", "full", "rerank"):
        s, li = results["sysu"][mode], results["list"][mode]
        assert (li["dataset"], li["protocol"], li["trials"]) == ("list", "list", [0, 1])
        assert [[t[k] for k in ("trial", *KEYS)] for t in s["per_trial"]] == \
            [[t[k] for k in ("trial", *KEYS)] for t in li["per_trial"]]
        assert s["mean"] == li["mean"] and s["cmc"] == li["cmc"]


# ---------------------------------------------------------------------------------------------
# End to end through the CLI
# ---------------------------------------------------------------------------------------------
def _list_lines(path: Path) -> list[list[str]]:
    return [ln.split() for ln in path.read_text().splitlines()
            if ln.strip() and not ln.startswith("#")]


def test_synth_check_train_eval_search(tmp_path: Path, tiny_config: Path) -> None:
    root = tmp_path / "mine"
    summary = json.loads(run_cli("synth", "--layout", "list", "--out", root, "--ids", "9",
                                 "--seed", "3", "--json", check=True, timeout=300).stdout)
    assert (summary["layout"], summary["train_ids"] + summary["test_ids"]) == ("list", 9)
    galleries = sorted(p.name for p in root.glob("gallery_*.txt"))
    assert galleries == [f"gallery_{t}.txt" for t in range(summary["trials"])]
    train, query = _list_lines(root / "train.txt"), _list_lines(root / "query.txt")
    assert {ln[3] for ln in train} == {"rgb", "ir"} and {ln[3] for ln in query} == {"ir"}
    metric = (root / "vireid-list.yaml").read_text().split("metric:")[1].strip()

    ok = run_cli("data", "check", "--dataset", "list", "--root", root, check=True)
    assert ok.stdout.count("\n") == 1 and "no problems" in ok.stdout
    assert f"metric {metric}" in ok.stdout
    assert f"training {len({ln[1] for ln in train})} ids" in ok.stdout

    run = tmp_path / "run"
    run_cli("train", "--config", tiny_config, "--data-root", root, "-o", run, "--threads", "1",
            "data.dataset=list", "train.epochs=1", "data.same_modality_pairs=true", check=True,
            timeout=300)
    ckpt = torch.load(run / "checkpoints" / "last.pt", map_location="cpu", weights_only=True)
    # one class per training id (labels relabelled 0..K-1)
    assert ckpt["num_classes"] == summary["train_ids"]

    out = tmp_path / "eval.json"
    run_cli("eval", "--checkpoint", run, "--data-root", root, "--json", out, check=True,
            timeout=300)
    res = json.loads(out.read_text())
    assert (res["dataset"], res["protocol"]) == ("list", "list")
    assert res["trials"] == list(range(summary["trials"]))
    for t in res["per_trial"]:
        assert all(0 <= t[k] <= 100 for k in KEYS) and t["rank1"] <= t["rank5"] <= t["rank20"]
    # the protocol as the folder defines it: its trials and metric rule
    data = json.loads(run_cli("data", "summary", "--dataset", "list", "--root", root, "--json",
                              check=True).stdout)
    proto = data["protocols"]["list"]
    assert proto["metric"] == metric and [t["trial"] for t in proto["trials"]] == res["trials"]
    gallery0 = _list_lines(root / "gallery_0.txt")
    assert proto["trials"][0]["query"] == {"ids": len({ln[1] for ln in query}),
                                           "images": len(query)}
    assert proto["trials"][0]["gallery"]["images"] == len(gallery0)

    index = tmp_path / "index"
    built = run_cli("index", "build", "--checkpoint", run, "--list", root / "gallery_0.txt",
                    "-o", index, "--no-progress", check=True, timeout=300)
    assert f"{len(gallery0)} rgb images" in built.stdout
    assert (index / "labels.txt").read_text().split() == [ln[1] for ln in gallery0]
    q = root / query[0][0]
    found = json.loads(run_cli("search", "--index", index, "--query", q, "--topk", "2",
                               "--json", check=True, timeout=300).stdout)
    (result,) = found["results"]
    assert result["query"] == str(q) and found["gallery_modality"] == "rgb"
    by_path = {str(root / ln[0]): ln[1] for ln in gallery0}
    assert len(result["matches"]) == 2
    for m in result["matches"]:
        assert by_path[m["path"]] == m["label"]  # the list's images, labelled with their pid

    # a mixed list cannot be one index: one error line
    bad = run_cli("index", "build", "--checkpoint", run, "--list", root / "train.txt", "-o",
                  tmp_path / "index2", "--no-progress")
    assert bad.returncode == 2 and "one modality" in bad.stderr


# ---------------------------------------------------------------------------------------------
# The checker on each kind of bad list
# ---------------------------------------------------------------------------------------------
def _image(path: Path, value: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((16, 8, 3), value, np.uint8)).save(path)


def _good_folder(root: Path) -> dict[str, list[str]]:
    """Ids 1, 2 train (both modalities), ids 3, 4 test (IR query, RGB gallery); returns the
    lines of each list (written as well)."""
    lists: dict[str, list[str]] = {"train.txt": [], "query.txt": [], "gallery.txt": []}
    for pid in (1, 2, 3, 4):
        for cam, mod in ((1, "rgb"), (3, "ir")):
            for k in range(2):
                rel = f"img/{pid}/c{cam}_{k}.png"
                _image(root / rel, 40 * pid + 10 * cam + k)
                name = "train.txt" if pid <= 2 else ("query.txt" if mod == "ir" else "gallery.txt")
                lists[name].append(f"{rel} {pid} {cam} {mod}")
    _rewrite(root, lists)
    (root / "vireid-list.yaml").write_text("metric: regdb\n")
    return lists


def _rewrite(root: Path, lists: dict[str, list[str]]) -> None:
    for name, lines in lists.items():
        _write(root / name, ["# path pid camid modality", *lines])


def _error_line(proc) -> str:
    assert proc.returncode == 2, proc.stdout + proc.stderr
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1, proc.stderr
    return errors[0]


def test_checker_accepts_a_good_folder(tmp_path: Path, sysu_root: Path) -> None:
    _good_folder(tmp_path)
    ok = run_cli("data", "check", "--dataset", "list", "--root", tmp_path, check=True)
    assert ok.stdout.strip().count("\n") == 0
    assert "no problems" in ok.stdout and "training 2 ids (4 rgb, 4 ir images)" in ok.stdout
    assert "query 2 ids/4 images (ir), gallery 2 ids/4 images (rgb" in ok.stdout
    assert "metric regdb" in ok.stdout
    # a data set without a checker of its own: its loader's checks
    sysu = run_cli("data", "check", "--dataset", "sysu", "--root", sysu_root, check=True)
    assert "no problems" in sysu.stdout and "no checker of its own" in sysu.stdout


def _missing(root: Path, lists: dict[str, list[str]]) -> None:
    lists["train.txt"] += ["img/1/gone.png 1 1 rgb", "img/2/gone.png 2 3 ir"]


def _undecodable(root: Path, lists: dict[str, list[str]]) -> None:
    (root / "img" / "3" / "c1_0.png").write_bytes(b"not an image")


def _modality(root: Path, lists: dict[str, list[str]]) -> None:
    lists["gallery.txt"][0] = lists["gallery.txt"][0].replace(" rgb", " nir")


def _one_modality(root: Path, lists: dict[str, list[str]]) -> None:
    _image(root / "img" / "5" / "c1_0.png", 7)
    _image(root / "img" / "6" / "c3_0.png", 8)
    lists["train.txt"] += ["img/5/c1_0.png 5 1 rgb", "img/6/c3_0.png 6 3 ir"]


def _overlap(root: Path, lists: dict[str, list[str]]) -> None:
    _image(root / "img" / "1" / "c2_0.png", 9)
    lists["gallery.txt"].append("img/1/c2_0.png 1 2 rgb")


def _duplicate(root: Path, lists: dict[str, list[str]]) -> None:
    lists["train.txt"] += lists["train.txt"][:2]


def _no_gallery(root: Path, lists: dict[str, list[str]]) -> None:
    _image(root / "img" / "7" / "c3_0.png", 11)
    lists["query.txt"].append("img/7/c3_0.png 7 3 ir")


BAD = {
    "missing image: 2": _missing,
    "undecodable image: 1": _undecodable,
    "bad modality: 1": _modality,
    "training id with one modality: 2": _one_modality,
    "id in train and test: 1": _overlap,
    "duplicate line: 2": _duplicate,
    "query id in no gallery: 1": _no_gallery,
}


@pytest.mark.parametrize("count", list(BAD))
def test_checker_counts_each_kind(tmp_path: Path, count: str) -> None:
    lists = _good_folder(tmp_path)
    BAD[count](tmp_path, lists)
    _rewrite(tmp_path, lists)
    err = _error_line(run_cli("data", "check", "--dataset", "list", "--root", tmp_path))
    assert count in err
    total = int(count.rsplit(": ", 1)[1])
    assert f"{total} problem{'s' if total > 1 else ''}: {count}" in err


def test_checker_reports_every_problem_at_once_and_training_refuses(
        tmp_path: Path, tiny_config: Path) -> None:
    lists = _good_folder(tmp_path)
    for kind in ("missing image: 2", "duplicate line: 2", "query id in no gallery: 1",
                 "id in train and test: 1"):
        BAD[kind](tmp_path, lists)
    _rewrite(tmp_path, lists)
    err = _error_line(run_cli("data", "check", "--dataset", "list", "--root", tmp_path))
    assert "6 problems" in err
    for kind in ("missing image: 2", "duplicate line: 2", "query id in no gallery: 1",
                 "id in train and test: 1"):
        assert kind in err
    assert "train.txt:10 img/1/gone.png" in err  # file:line and the path, as examples
    # the same checks before training: refused with the same counts, nothing trained
    run = tmp_path / "run"
    err = _error_line(run_cli("train", "--config", tiny_config, "--data-root", tmp_path, "-o",
                              run, "--threads", "1", "data.dataset=list"))
    assert "missing image: 2" in err and "duplicate line: 2" in err
    assert not (run / "checkpoints" / "last.pt").exists()


def test_load_does_not_decode_but_the_checker_does(tmp_path: Path) -> None:
    lists = _good_folder(tmp_path)
    _undecodable(tmp_path, lists)
    run_cli("data", "summary", "--dataset", "list", "--root", tmp_path, check=True)
    err = _error_line(run_cli("data", "check", "--dataset", "list", "--root", tmp_path))
    assert "undecodable image: 1 (gallery.txt:2 img/3/c1_0.png" in err


@pytest.mark.parametrize("mistake, why", [
    ("csv", "a comma-separated (CSV) file (9 lines)"),  # one problem at its first line
    ("csv line", "comma-separated (CSV)"),               # one CSV line among good ones
    ("header", "a header line"),
])
def test_csv_and_header_are_refused_with_file_line_and_form(tmp_path: Path, mistake: str,
                                                           why: str) -> None:
    good = _good_folder(tmp_path)["train.txt"]
    assert len(good) == 8
    if mistake == "csv":
        lines = ["path,pid,camid,modality"] + [",".join(ln.split()) for ln in good]
    elif mistake == "csv line":
        lines = ["img/1/c1_0.png, 1, 1, rgb"] + good
    else:
        lines = ["path pid camid modality"] + good
    _write(tmp_path / "train.txt", lines)
    err = _error_line(run_cli("data", "check", "--dataset", "list", "--root", tmp_path))
    assert "1 problem: malformed line: 1 (train.txt:1 " in err
    assert why in err and "expected PATH PID CAMID MODALITY" in err


@pytest.mark.parametrize("settings, found", [
    (None, "settings: 1 (vireid-list.yaml missing"),
    ("metric: [sysu]\n", "settings: 1 (vireid-list.yaml metric:"),
    ("metric: sysu\nmode: x\n", "unknown key(s) mode"),
    ("metric: nosuchrule\n", "nosuchrule"),
])
def test_settings_file_is_required_and_checked(tmp_path: Path, settings, found: str) -> None:
    _good_folder(tmp_path)
    path = tmp_path / "vireid-list.yaml"
    if settings is None:
        path.unlink()
    else:
        path.write_text(settings)
    err = _error_line(run_cli("data", "check", "--dataset", "list", "--root", tmp_path))
    assert found in err
    if settings == "metric: nosuchrule\n":
        assert "sysu" in err and "regdb" in err  # the rules there are, from their registry


def test_gallery_files_name_the_trials(tmp_path: Path) -> None:
    lists = _good_folder(tmp_path)
    gallery = lists.pop("gallery.txt")
    (tmp_path / "gallery.txt").unlink()
    _write(tmp_path / "gallery_0.txt", gallery)
    _write(tmp_path / "gallery_1.txt", gallery[:2])
    summary = json.loads(run_cli("data", "summary", "--dataset", "list", "--root", tmp_path,
                                 "--json", check=True).stdout)
    trials = summary["protocols"]["list"]["trials"]
    assert [(t["trial"], t["gallery"]["images"]) for t in trials] == [(0, 4), (1, 2)]
    _write(tmp_path / "gallery.txt", gallery)
    err = _error_line(run_cli("data", "check", "--dataset", "list", "--root", tmp_path))
    assert "list file: 1 (gallery.txt beside gallery_0.txt, gallery_1.txt" in err

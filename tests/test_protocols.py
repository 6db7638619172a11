"""Protocol construction on tiny SYSU-MM01 / RegDB layouts written here, checked against literal
re-implementations of the reference's loops (random.seed(t) + random.choice over os.listdir)."""
from __future__ import annotations

import argparse
import json
import os
import random

import numpy as np
import pytest
from PIL import Image

from vireid.data import regdb as R
from vireid.data import sysu as S
from vireid.data.regdb import load_regdb
from vireid.data.sysu import load_sysu
from vireid.errors import ConfigError
from vireid.evaluation import protocols as P
from vireid.evaluation.metrics import eval_regdb, eval_sysu
from vireid.evaluation.summary import dataset_summary, format_summary, resolve_protocol, split_lists

TRAIN, VAL, TEST, UNLISTED = [1, 2, 3], [4], [5, 6, 7, 8], [9]
# (cam, pid) -> number of images; missing keys = no folder. Some folders have >= 10 images
# (multi-shot draws), some fewer (taken whole), some ids miss cameras.
rng0 = np.random.default_rng(0)
SYSU_COUNTS = {}
for pid in TRAIN + VAL + TEST + UNLISTED:
    for cam in range(1, 7):
        if (pid, cam) in {(6, 5), (7, 2), (8, 4), (5, 6), (2, 3)}:
            continue
        SYSU_COUNTS[(cam, pid)] = int(rng0.choice([1, 3, 10, 12]))


def _img(path, size=(4, 8), mode="RGB"):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, 0 if mode == "L" else (10, 20, 30)).save(path)


@pytest.fixture(scope="module")
def sysu_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("sysu")
    for (cam, pid), n in SYSU_COUNTS.items():
        # non-contiguous stems, written in a shuffled order (listdir order != sorted order)
        stems = sorted(random.Random(pid * 10 + cam).sample(range(1, 60), n))
        random.Random(cam).shuffle(stems)
        for s in stems:
            _img(root / f"cam{cam}" / f"{pid:04d}" / f"{s:04d}.jpg",
                 mode="L" if cam in (3, 6) else "RGB")
    (root / "exp").mkdir()
    for name, ids in (("train", TRAIN), ("val", VAL), ("test", [8, 5, 7, 6])):
        (root / "exp" / f"{name}_id.txt").write_text(",".join(str(i) for i in ids) + "\n")
    return root


@pytest.fixture(scope="module")
def sysu(sysu_root):
    return load_sysu(sysu_root)


# --- literal re-implementations of the reference's data_manager loops ---------------------------
def ref_query(root):
    ids = ["%04d" % int(x) for x in open(os.path.join(root, "exp/test_id.txt")).read().splitlines()[0].split(",")]
    files = []
    for pid in sorted(ids):
        for cam in ["cam3", "cam6"]:
            d = os.path.join(root, cam, pid)
            if os.path.isdir(d):
                files.extend(sorted([d + "/" + i for i in os.listdir(d)]))
    return files


def ref_gallery(root, mode, trial, multi=False):
    random.seed(trial)
    rs = np.random.RandomState(trial)
    cams = ["cam1", "cam2", "cam4", "cam5"] if mode == "all" else ["cam1", "cam2"]
    ids = ["%04d" % int(x) for x in open(os.path.join(root, "exp/test_id.txt")).read().splitlines()[0].split(",")]
    files = []
    for pid in sorted(ids):
        for cam in cams:
            d = os.path.join(root, cam, pid)
            if os.path.isdir(d):
                new = sorted([d + "/" + i for i in os.listdir(d)])
                if not multi:
                    files.append(random.choice(new))
                elif len(new) < 10:
                    files.extend(new)
                else:
                    files.extend(rs.choice(new, 10, replace=False).tolist())
    return files


def _rel(root, paths):
    return [os.path.relpath(p, root).replace(os.sep, "/") for p in paths]


def _parse(path):  # the reference's own parsing of camera and id from the path
    return int(path[-15]), int(path[-13:-9])


# --- SYSU ----------------------------------------------------------------------------------------
def test_sysu_query_matches_reference(sysu, sysu_root):
    q = S.sysu_query(sysu)
    want = ref_query(str(sysu_root))
    assert [r.path for r in q] == _rel(sysu_root, want)
    assert [(r.camid, r.pid) for r in q] == [_parse(p) for p in want]
    assert len(q) == sum(n for (c, p), n in SYSU_COUNTS.items() if p in TEST and c in (3, 6))
    assert {r.modality for r in q} == {"ir"}


@pytest.mark.parametrize("mode", ["all", "indoor"])
def test_sysu_single_shot_gallery_matches_reference(sysu, sysu_root, mode):
    galleries = []
    for t in S.SYSU_TRIALS:
        split = S.sysu_split(sysu, mode=mode, trial=t)
        want = ref_gallery(str(sysu_root), mode, t)
        assert [r.path for r in split.gallery] == _rel(sysu_root, want)
        assert [(r.camid, r.pid) for r in split.gallery] == [_parse(p) for p in want]
        cams = (1, 2, 4, 5) if mode == "all" else (1, 2)
        assert len(split.gallery) == sum(1 for (c, p) in SYSU_COUNTS if p in TEST and c in cams)
        assert split.trial == t and split.name == f"sysu-{mode}"
        galleries.append(tuple(r.path for r in split.gallery))
    assert len(set(galleries)) > 1  # trials differ
    # deterministic: building again gives the same picks, whatever was drawn in between
    random.seed(12345)
    assert tuple(r.path for r in S.sysu_split(sysu, mode=mode, trial=3).gallery) == galleries[3]


@pytest.mark.parametrize("mode", ["all", "indoor"])
def test_sysu_multi_shot_gallery_matches_seeded_convention(sysu, sysu_root, mode):
    for t in (0, 1, 7):
        split = S.sysu_split(sysu, mode=mode, trial=t, shot="multi")
        want = ref_gallery(str(sysu_root), mode, t, multi=True)
        assert [r.path for r in split.gallery] == _rel(sysu_root, want)
        cams = (1, 2, 4, 5) if mode == "all" else (1, 2)
        assert len(split.gallery) == sum(
            min(n, 10) for (c, p), n in SYSU_COUNTS.items() if p in TEST and c in cams)
        assert len(set(r.path for r in split.gallery)) == len(split.gallery)
        assert split.name == f"sysu-{mode}-multi"


def test_no_train_test_overlap_and_modalities(sysu):
    train_pids = {r.pid for r in sysu.train.rgb + sysu.train.ir}
    for name in ("sysu-all", "sysu-indoor", "sysu-all-multi", "sysu-openset"):
        split = P.build_split(name, sysu, 0)
        pids = {r.pid for r in split.query + split.gallery}
        assert pids <= set(TEST) and not pids & train_pids
    g = S.sysu_split(sysu, "all", 0).gallery
    assert {r.modality for r in g} == {"rgb"} and {r.camid for r in g} <= {1, 2, 4, 5}


def test_open_set_split(sysu):
    s = S.sysu_open_set_split(sysu)
    n = lambda cams: sum(v for (c, p), v in SYSU_COUNTS.items() if p in TEST and c in cams)  # noqa: E731
    assert len(s.query) == n((1, 3, 4)) and len(s.gallery) == n((2, 5, 6))
    assert {r.camid for r in s.query} == {1, 3, 4} and {r.camid for r in s.gallery} == {2, 5, 6}
    assert not {r.path for r in s.query} & {r.path for r in s.gallery}
    assert [r.pid for r in s.query] == sorted(r.pid for r in s.query)


def test_rand_perm_cam_gallery(sysu, sysu_root, tmp_path):
    from scipy.io import savemat

    # The kit's structure: a 6-cell of per-id cells of (10 trials x n images) 1-based numbers.
    cells = np.empty((6, 1), dtype=object)
    expect = {}
    for cam in range(1, 7):
        inner = np.empty((9, 1), dtype=object)
        for pid in range(1, 10):
            n = SYSU_COUNTS.get((cam, pid), 0)
            if n == 0:
                inner[pid - 1, 0] = np.zeros((0, 0))
                continue
            stems = sorted(int(f[:4]) for f in os.listdir(sysu_root / f"cam{cam}" / f"{pid:04d}"))
            rows = np.array([np.random.default_rng(t + 100 * pid + cam).permutation(stems) for t in range(10)],
                            dtype=np.float64)
            inner[pid - 1, 0] = rows
            expect[(cam, pid)] = rows
        cells[cam - 1, 0] = inner
    mat = tmp_path / "rand_perm_cam.mat"
    savemat(str(mat), {"rand_perm_cam": cells})
    for shot, k in (("single", 1), ("multi", 10)):
        split = S.sysu_split(sysu, "all", trial=4, shot=shot, gallery_source="rand_perm_cam", perm_file=mat)
        want = [f"cam{c}/{p:04d}/{int(s):04d}.jpg" for p in sorted(TEST) for c in (1, 2, 4, 5)
                if (c, p) in expect for s in expect[(c, p)][4][:k]]
        assert [r.path for r in split.gallery] == want
    with pytest.raises(Exception, match="rand_perm_cam.mat"):
        S.sysu_split(sysu, "all", 0, gallery_source="rand_perm_cam", perm_file=tmp_path / "nope.mat")


def test_build_split_checks(sysu):
    with pytest.raises(ConfigError, match="trials"):
        P.build_split("sysu-all", sysu, 10)
    with pytest.raises(ConfigError, match="unknown protocol"):
        P.build_split("sysu-everything", sysu, 0)
    with pytest.raises(ConfigError):
        S.sysu_split(sysu, mode="outdoor")


# --- RegDB ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def regdb_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("regdb")
    ids = list(range(1, 7))
    for pid in ids:
        for k in range(3):
            _img(root / "Visible" / f"{pid}" / f"female_{pid}_{k}.bmp")
            _img(root / "Thermal" / f"{pid}" / f"female_{pid}_{k}.bmp", mode="L")
    (root / "idx").mkdir()
    for t in R.TRIALS:
        perm = random.Random(t).sample(ids, len(ids))
        for split, chosen in (("train", sorted(perm[:3])), ("test", sorted(perm[3:]))):
            for mod, folder in (("visible", "Visible"), ("thermal", "Thermal")):
                lines = [f"{folder}/{pid}/female_{pid}_{k}.bmp {lab}"
                         for lab, pid in enumerate(chosen) for k in range(3)]
                (root / "idx" / f"{split}_{mod}_{t}.txt").write_text("\n".join(lines) + "\n")
    return root


def test_regdb_split_and_direction_swap(regdb_root):
    ds = load_regdb(regdb_root)
    for t in (1, 5, 10):
        v2t = R.regdb_split(ds, t, "v2t")
        t2v = R.regdb_split(ds, t, "t2v")
        lines_v = (regdb_root / "idx" / f"test_visible_{t}.txt").read_text().split("\n")
        lines_t = (regdb_root / "idx" / f"test_thermal_{t}.txt").read_text().split("\n")
        assert [r.path for r in v2t.query] == [ln.split(" ")[0] for ln in lines_v if ln]
        assert [r.pid for r in v2t.gallery] == [int(ln.split(" ")[1]) for ln in lines_t if ln]
        assert t2v.query == v2t.gallery and t2v.gallery == v2t.query
        assert {r.modality for r in v2t.query} == {"rgb"} and {r.modality for r in t2v.query} == {"ir"}
        assert len(v2t.query) == len(v2t.gallery) == 9
        train_folders = {ds.folder_id(r) for r in ds.train(t).rgb}
        assert not train_folders & {ds.folder_id(r) for r in v2t.query + v2t.gallery}


# --- scoring -------------------------------------------------------------------------------------
def test_evaluate_split_uses_the_right_metric(sysu, regdb_root):
    rng = np.random.default_rng(0)
    split = P.build_split("sysu-all", sysu, 2)
    dist = rng.integers(0, 4, (len(split.query), len(split.gallery))).astype(np.float32)
    res = P.evaluate_split(dist, split, "sysu-all")
    q = np.array([r.pid for r in split.query]), np.array([r.camid for r in split.query])
    g = np.array([r.pid for r in split.gallery]), np.array([r.camid for r in split.gallery])
    cmc, m_ap, m_inp = eval_sysu(dist, q[0], g[0], q[1], g[1])
    assert res["rank1"] == pytest.approx(100 * cmc[0]) and res["mAP"] == pytest.approx(100 * m_ap)
    assert res["mINP"] == pytest.approx(100 * m_inp)
    assert res["rank20"] == pytest.approx(100 * cmc[min(20, len(cmc)) - 1])

    ds = load_regdb(regdb_root)
    split = P.build_split("regdb-t2v", ds, 3)
    same = np.array([[0.0 if a.pid == b.pid else 1.0 for b in split.gallery] for a in split.query])
    res = P.evaluate_split(same, split, "regdb-t2v")
    assert res["rank1"] == 100.0 and res["mAP"] == 100.0 and res["mINP"] == 100.0
    cmc, m_ap, _ = eval_regdb(-same, [r.pid for r in split.query], [r.pid for r in split.gallery])
    assert P.evaluate_split(-same, split, "regdb-t2v")["mAP"] == pytest.approx(100 * m_ap)
    with pytest.raises(ValueError, match="does not match"):
        P.evaluate_split(same[:, :-1], split, "regdb-t2v")


def test_aggregate_population_std():
    trials = [{"rank1": 10.0, "mAP": 1.0}, {"rank1": 20.0, "mAP": 3.0}, {"rank1": 30.0, "mAP": 5.0}]
    mean, std = P.aggregate(trials)
    assert mean == {"rank1": 20.0, "mAP": 3.0}
    # population std: sqrt(((10-20)^2 + 0 + (30-20)^2) / 3)
    assert std["rank1"] == pytest.approx((200 / 3) ** 0.5) and std["mAP"] == pytest.approx((8 / 3) ** 0.5)


def test_registry_trials():
    assert P.PROTOCOLS["sysu-all"].trials == tuple(range(10))
    assert P.PROTOCOLS["regdb-v2t"].trials == tuple(range(1, 11))
    assert {"sysu-all", "sysu-indoor", "sysu-all-multi", "sysu-indoor-multi", "regdb-v2t",
            "regdb-t2v", "sysu-openset"} <= set(P.PROTOCOLS)


# --- summary / split lists / CLI -----------------------------------------------------------------
def test_summary_and_split_lists(sysu_root, regdb_root):
    s = dataset_summary("sysu", sysu_root)
    assert s["splits"]["test"]["ids"] == 4
    sizes = {tr["trial"]: tr for tr in s["protocols"]["sysu-all"]["trials"]}
    assert set(sizes) == set(range(10))
    assert sizes[0]["gallery"]["images"] == len(ref_gallery(str(sysu_root), "all", 0))
    assert sizes[0]["query"]["images"] == len(ref_query(str(sysu_root)))
    assert "sysu-openset" in format_summary(s)

    lists = split_lists("sysu", sysu_root, "indoor", 5, shot="multi")
    assert set(lists) == {"query", "gallery"}
    assert [p for p, _, _ in lists["gallery"]] == _rel(sysu_root, ref_gallery(str(sysu_root), "indoor", 5, True))
    for path, pid, cam in lists["query"][:3] + lists["gallery"][:3]:
        assert (sysu_root / path).is_file() and path == f"cam{cam}/{pid:04d}/{path[-8:]}"

    r = dataset_summary("regdb", regdb_root)
    assert [tr["trial"] for tr in r["protocols"]["regdb-v2t"]["trials"]] == list(range(1, 11))
    assert r["splits"]["1"]["test"]["visible"] == 9
    assert resolve_protocol("sysu", "all", "multi") == "sysu-all-multi"
    with pytest.raises(ConfigError):
        resolve_protocol("regdb", "all", None)


def test_cli_data_commands(sysu_root, regdb_root, tmp_path, capsys):
    from vireid.commands import data as data_cmd

    parser = argparse.ArgumentParser()
    data_cmd.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["data", "split", "--dataset", "regdb", "--root", str(regdb_root),
                              "--protocol", "t2v", "--trial", "2", "--json"])
    assert args.func(args) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["query"][0][0].startswith("Thermal/") and out["query"][0][2] == 2
    args = parser.parse_args(["data", "summary", "--dataset", "sysu", "--root", str(sysu_root), "--json"])
    assert args.func(args) == 0
    assert json.loads(capsys.readouterr().out)["dataset"] == "sysu"
    dest = tmp_path / "split.json"
    args = parser.parse_args(["data", "split", "--dataset", "sysu", "--root", str(sysu_root),
                              "--protocol", "sysu-all", "--trial", "0", "--json", "--out", str(dest)])
    assert args.func(args) == 0
    assert json.loads(dest.read_text())["gallery"] == split_lists("sysu", sysu_root, "all", 0)["gallery"]

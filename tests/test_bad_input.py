"""Bad input through the real CLI: every case exits non-zero with a message naming what was
expected and what was found, or (odd but valid images) works.

Each process start pays the torch import (about 3 s here), so the cases are grouped: a
module fixture starts two driver subprocesses in parallel, each of which calls the CLI entry
point of ``python -m vireid`` (``vireid.cli.main``, which maps errors to "error: …" and exit
code 2) once per case with fresh stdout/stderr/logging, and reports exit code and output.
One case (`eval_corrupt`) also runs as a plain ``python -m vireid`` subprocess, to check the
process exit status itself.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from test_sharded_eval import write_checkpoint, write_sysu
from vireid.utils.atomic import TMP_MARK

TRAIN_YAML = """\
name: tiny-bad
model: {arch: resnet18, width: 0.125, last_stride: 1, shared_stages: "3-4", pretrained: none}
ccn: {kernel_size: [2, 2], stride: [1, 1], padding: 1}
data: {dataset: sysu, height: 64, width: 32, pad: 2, ids_per_batch: 2, neg_ratio: 1}
train: {epochs: 1, iters_per_epoch: 1, lr: 0.01, lr_milestones: [1], log_every: 1, seed: 0}
eval: {batch_size: 64, chunk_size: 4, topk: 2}
"""


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])


def _odd_images(root: Path, pids: tuple[int, ...]) -> list[str]:
    """Replace images of ``pids`` by grayscale, RGBA, 16-bit, 1x1 and 3x2 files (same names)."""
    made = []
    kinds = [np.full((40, 20), 90, np.uint8),                      # L (grayscale)
             np.dstack([np.full((40, 20, 3), 120, np.uint8), np.full((40, 20), 7, np.uint8)]),
             np.full((30, 16), 40000, np.uint16),                   # I;16
             np.full((1, 1, 3), 200, np.uint8),                     # 1x1
             np.full((2, 3, 3), 60, np.uint8)]                      # 3 wide, 2 high
    k = 0
    for pid in pids:
        for cam in (1, 3):
            f = root / f"cam{cam}" / f"{pid:04d}" / "0001.png"
            img = Image.fromarray(kinds[k % len(kinds)])
            img.save(f)
            made.append(f"{img.mode} {img.size}")
            k += 1
    return made


_DRIVER = r"""
import contextlib, io, json, logging, sys
from vireid.cli import main
cases = json.loads(open(sys.argv[1]).read())
out = {}
for name, argv in cases.items():
    o, e = io.StringIO(), io.StringIO()
    logging.root.handlers.clear()  # basicConfig binds the current sys.stderr
    with contextlib.redirect_stdout(o), contextlib.redirect_stderr(e):
        try:
            rc = main(argv)
        except SystemExit as exc:
            rc = exc.code if isinstance(exc.code, int) else 1
        except BaseException as exc:
            import traceback; traceback.print_exc(); rc = 99
    out[name] = {"rc": rc, "stdout": o.getvalue(), "stderr": e.getvalue()}
open(sys.argv[2], "w").write(json.dumps(out))
"""


def _env() -> dict[str, str]:
    return dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONHASHSEED="0")


def _run(args: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "vireid", *map(str, args)], capture_output=True,
                          text=True, env=_env(), timeout=120)


def _run_group(cases: dict[str, list], tmp: Path, tag: str) -> dict[str, subprocess.CompletedProcess]:
    import json

    spec, out = tmp / f"cases_{tag}.json", tmp / f"out_{tag}.json"
    spec.write_text(json.dumps({k: [str(a) for a in v] for k, v in cases.items()}))
    proc = subprocess.run([sys.executable, "-c", _DRIVER, spec, out], capture_output=True,
                          text=True, env=_env(), timeout=180)
    assert proc.returncode == 0, proc.stderr
    res = json.loads(out.read_text())
    return {k: subprocess.CompletedProcess(cases[k], r["rc"], r["stdout"], r["stderr"])
            for k, r in res.items()}


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> dict[str, tuple[subprocess.CompletedProcess, dict]]:
    t = tmp_path_factory.mktemp("bad")
    good = write_sysu(t / "good")
    ckpt = write_checkpoint(t / "tiny.pt")
    cfg = t / "tiny.yaml"
    cfg.write_text(TRAIN_YAML)
    info: dict[str, dict] = {}

    # Corrupt test images (eval) and a corrupt training image (train).
    corrupt = t / "corrupt"
    shutil.copytree(good, corrupt)
    bad_eval = corrupt / "cam3" / "0004" / "0001.png"
    _truncate(bad_eval)
    (corrupt / "cam1" / "0005" / "0002.png").write_bytes(b"not an image at all")
    corrupt_train = t / "corrupt_train"
    shutil.copytree(good, corrupt_train)
    bad_train = corrupt_train / "cam1" / "0002" / "0001.png"
    _truncate(bad_train)

    # Odd but valid images in test and training ids; id 103 (val) has RGB only.
    odd = t / "odd"
    write_sysu(odd, train=(1, 2, 3), test=(4, 5, 6, 7))
    info["odd"] = {"modes": _odd_images(odd, (1, 3, 4, 5, 6))}
    for cam in (3, 6):
        shutil.rmtree(odd / f"cam{cam}" / "0103")

    empty_split = t / "empty_split"
    shutil.copytree(good, empty_split)
    (empty_split / "exp" / "test_id.txt").write_text("")

    from vireid.data.synthetic import generate

    regdb = t / "regdb"
    generate("regdb", regdb, ids=4, seed=0, rgb_size=(16, 8), ir_size=(16, 8))
    (regdb / "idx" / "train_visible_1.txt").write_text("")
    (t / "empty_dir").mkdir()
    (t / "a_file").write_text("x")

    # Checkpoints of another model: tampered weights, class count, stage split; broken files.
    ck = torch.load(ckpt, map_location="cpu", weights_only=True)
    tam = dict(ck, model=dict(ck["model"]))
    key = "backbone.rgb.stem.0.weight" if "backbone.rgb.stem.0.weight" in tam["model"] \
        else next(iter(tam["model"]))
    tam["model"][key] = torch.zeros(3, 3)
    torch.save(tam, t / "tampered.pt")
    torch.save(dict(ck, num_classes=ck["num_classes"] + 4), t / "classes.pt")
    cfg_all = dict(ck["config"], model=dict(ck["config"]["model"], shared_stages="all"))
    torch.save(dict(ck, config=cfg_all), t / "stages.pt")
    (t / "truncated.pt").write_bytes(Path(ckpt).read_bytes()[:2000])
    (t / "garbage.pt").write_bytes(b"\x80\x04garbage, not a checkpoint" * 10)
    other = write_checkpoint(t / "other.pt", seed=1)

    # An index built by the tiny model; searched with another model's checkpoint.
    from vireid.apps.index import build_index

    gallery = sorted(str(p) for p in (good / "cam1").rglob("*.png"))[:4]
    build_index(ckpt, gallery, t / "index", modality="rgb")
    info["index_digest"] = {"ckpt": ck["model_digest"]}

    (t / "unknown.yaml").write_text(TRAIN_YAML.replace("pad: 2,", "pad: 2, colour: red,"))
    (t / "wrongtype.yaml").write_text(TRAIN_YAML.replace("epochs: 1,", "epochs: one,"))

    ev = ["eval", "--checkpoint"]
    cases: dict[str, list] = {
        "eval_corrupt": [*ev, ckpt, "--data-root", corrupt, "--no-cache", "--trials", "0"],
        "eval_skip_corrupt": [*ev, ckpt, "--data-root", corrupt, "--skip-corrupt", "--trials", "0"],
        "train_corrupt": ["train", "--config", cfg, "--data-root", corrupt_train, "-o",
                          t / "run_corrupt", "--threads", "1", "--no-progress"],
        # After train_corrupt (same root, same cache entry): the flag skips the file.
        "train_skip_corrupt": ["train", "--config", cfg, "--data-root", corrupt_train, "-o",
                               t / "run_skip", "--threads", "1", "--no-progress",
                               "--skip-corrupt"],
        "eval_odd": [*ev, ckpt, "--data-root", odd, "--trials", "0", "--scoring", "all"],
        "train_odd": ["train", "--config", cfg, "--data-root", odd, "-o", t / "run_odd",
                      "--threads", "1", "--no-progress"],
        "eval_empty_split": [*ev, ckpt, "--data-root", empty_split],
        "regdb_empty_idx": ["data", "summary", "--dataset", "regdb", "--root", regdb],
        "eval_regdb_as_sysu": [*ev, ckpt, "--data-root", regdb],
        "sysu_empty_dir": ["data", "summary", "--dataset", "sysu", "--root", t / "empty_dir"],
        "sysu_file": ["data", "summary", "--dataset", "sysu", "--root", t / "a_file"],
        "config_unknown_key": ["train", "--config", t / "unknown.yaml", "--data-root", good,
                               "-o", t / "r1"],
        "config_wrong_type": ["train", "--config", t / "wrongtype.yaml", "--data-root", good,
                              "-o", t / "r2"],
        "override_wrong_type": ["train", "--config", cfg, "--data-root", good, "-o", t / "r3",
                                "train.lr=fast"],
        "eval_tampered": [*ev, t / "tampered.pt", "--data-root", good, "--trials", "0"],
        "eval_classes": [*ev, t / "classes.pt", "--data-root", good, "--trials", "0"],
        "eval_stages": [*ev, t / "stages.pt", "--data-root", good, "--trials", "0"],
        "eval_truncated": [*ev, t / "truncated.pt", "--data-root", good],
        "export_truncated": ["export", "--checkpoint", t / "truncated.pt", "-o", t / "onnx"],
        "index_garbage": ["index", "build", "--checkpoint", t / "garbage.pt", "--images",
                          good / "cam1", "-o", t / "index2"],
        "search_other_model": ["search", "--index", t / "index", "--checkpoint", other,
                               "--query", gallery[0]],
    }
    info["paths"] = {"bad_eval": str(bad_eval), "bad_train": str(bad_train), "t": str(t),
                     "corrupt_train": str(corrupt_train), "cfg": str(cfg)}
    names = list(cases)
    groups = [{k: cases[k] for k in names if k.startswith(("train_", "eval_odd", "eval_skip"))},
              {k: cases[k] for k in names if not k.startswith(("train_", "eval_odd", "eval_skip"))}]
    with ThreadPoolExecutor(max_workers=3) as pool:
        futs = [pool.submit(_run_group, g, t, str(i)) for i, g in enumerate(groups)]
        plain = pool.submit(_run, cases["eval_corrupt"])
        merged: dict[str, subprocess.CompletedProcess] = {}
        for f in futs:
            merged.update(f.result())
        merged["eval_corrupt_plain"] = plain.result()
    out = {k: (v, info) for k, v in merged.items()}
    return out


def _fails(results, name: str, *needles: str) -> str:
    proc, _ = results[name]
    msg = proc.stderr
    assert proc.returncode == 2, f"{name}: rc {proc.returncode}\n{proc.stdout}\n{msg}"
    err = [ln for ln in msg.splitlines() if ln.startswith("error: ")]
    assert len(err) == 1, f"{name}: expected one 'error:' line, got\n{msg}"
    assert "Traceback" not in msg, msg
    for n in needles:
        assert n in err[0], f"{name}: {n!r} not in {err[0]!r}"
    return err[0]


def test_corrupt_eval_image_stops_naming_the_file(results):
    for name in ("eval_corrupt", "eval_corrupt_plain"):  # via the driver and a plain process
        line = _fails(results, name, "cannot decode image", "expected a readable image",
                      "--skip-corrupt")
        assert "cam3/0004/0001.png" in line or "cam1/0005/0002.png" in line, line


def test_corrupt_eval_images_skipped_and_counted_with_flag(results):
    proc, _ = results["eval_skip_corrupt"]
    assert proc.returncode == 0, proc.stderr
    assert "evaluation skipped 2 corrupt image(s)" in proc.stderr, proc.stderr
    assert "| simplified |" in proc.stdout


def test_corrupt_training_image_stops_naming_the_file(results):
    p = results["train_corrupt"][1]["paths"]
    _fails(results, "train_corrupt", "cannot decode image", "0002/0001.png")
    assert not (Path(p["t"]) / "run_corrupt" / "checkpoints" / "last.pt").exists()


def _train_images(root: Path, cams: tuple[int, ...]) -> list[str]:
    """Relative paths of the training images (train + val ids, as SYSU-MM01 trains) of
    ``cams``, listed from the folder itself."""
    ids = set()
    for name in ("train_id.txt", "val_id.txt"):
        ids |= {int(x) for x in (root / "exp" / name).read_text().replace("\n", ",").split(",")
                if x.strip()}
    return sorted(str(f.relative_to(root)) for c in cams for f in (root / f"cam{c}").rglob("*.png")
                  if int(f.parent.name) in ids)


def test_corrupt_training_image_skipped_and_counted_with_flag(results):
    proc, info = results["train_skip_corrupt"]
    p = info["paths"]
    root, bad = Path(p["corrupt_train"]), Path(p["bad_train"])
    assert proc.returncode == 0, f"{proc.stdout}\n{proc.stderr}"
    assert "finished after epoch 1/1" in proc.stdout
    assert (Path(p["t"]) / "run_skip" / "checkpoints" / "last.pt").is_file()
    assert f"training skipped 1 corrupt image(s): e.g. {bad}" in proc.stderr, proc.stderr
    n_rgb, n_ir = len(_train_images(root, (1, 2))), len(_train_images(root, (3, 6)))
    assert f"{n_rgb - 1} RGB + {n_ir} IR images" in proc.stderr, proc.stderr


def test_skip_corrupt_drops_the_record_and_keeps_rows_aligned(results):
    """prepare_data itself (decoding on demand, no cache): the corrupt record is gone from
    the training lists and every remaining training row still points at its own image."""
    from vireid.config import load_config
    from vireid.engine.train_data import prepare_data

    p = results["train_skip_corrupt"][1]["paths"]
    root, bad = Path(p["corrupt_train"]), Path(p["bad_train"])
    rel = str(bad.relative_to(root))
    cfg = load_config(p["cfg"], [f"data.root={root}", "data.skip_corrupt=true",
                                 "data.cache=false"])
    data = prepare_data(cfg, root)
    paths = [r.path for r in data.split.rgb + data.split.ir]
    assert rel not in paths
    assert sorted(r.path for r in data.split.rgb) == [x for x in _train_images(root, (1, 2))
                                                      if x != rel]
    assert sorted(r.path for r in data.split.ir) == _train_images(root, (3, 6))
    src = data.images.source
    assert list(src.bad) == [rel]
    rows = data.images.rows
    assert len(rows) == len(paths)
    assert [src.records[int(i)].path for i in rows] == paths
    assert len(data.labels_rgb) == len(data.split.rgb) and len(data.labels_ir) == len(data.split.ir)


def test_odd_images_are_decoded_and_used(results):
    modes = results["eval_odd"][1]["odd"]["modes"]
    assert {m.split()[0] for m in modes} >= {"L", "RGBA", "I;16", "RGB"}
    assert any("(1, 1)" in m for m in modes) and any("(3, 2)" in m for m in modes)
    for name in ("eval_odd", "train_odd"):
        proc, _ = results[name]
        assert proc.returncode == 0, f"{name}\n{proc.stdout}\n{proc.stderr}"
    assert "| full |" in results["eval_odd"][0].stdout
    assert "finished after epoch 1/1" in results["train_odd"][0].stdout


def test_single_modality_training_id_skipped_with_logged_count(results):
    err = results["train_odd"][0].stderr
    assert "skipping 1 of 4 training ids in cross-modality sampling: images of one modality " \
           "only (e.g. 0103)" in err, err


def test_empty_split_files(results):
    _fails(results, "eval_empty_split", "test_id.txt is empty", "expected comma-separated ids")
    _fails(results, "regdb_empty_idx", "train_visible_1.txt lists no images",
           "expected one 'PATH LABEL' line", "found an empty file")


def test_wrong_dataset_layout(results):
    _fails(results, "eval_regdb_as_sysu", "does not hold a sysu dataset", "expected cam1..cam6",
           "found ['Thermal', 'Visible', 'idx']")
    _fails(results, "sysu_empty_dir", "expected cam1..cam6", "found []")
    _fails(results, "sysu_file", "is not a folder", "a_file")


def test_bad_config(results):
    _fails(results, "config_unknown_key", "unknown config key 'data.colour'", "allowed here")
    _fails(results, "config_wrong_type", "train.epochs: expected int, found 'one'")
    _fails(results, "override_wrong_type", "train.lr: expected float, found 'fast'")


def test_checkpoint_of_another_model(results):
    _fails(results, "eval_tampered", "tampered.pt", "do not fit the model", "shape mismatch",
           "checkpoint (3, 3)")
    _fails(results, "eval_classes", "classes.pt", "classifier.weight", "checkpoint (3,")
    _fails(results, "eval_stages", "stages.pt", "missing keys", "unexpected keys")


def test_truncated_or_garbage_checkpoint_files(results):
    t = Path(results["eval_truncated"][1]["paths"]["t"])
    for name, f in (("eval_truncated", "truncated.pt"), ("export_truncated", "truncated.pt"),
                    ("index_garbage", "garbage.pt")):
        line = _fails(results, name, "cannot read checkpoint", str(t / f),
                      "not a readable vireid checkpoint")
        assert len(line) < 300, line  # torch's own advice (weights_only=False, …) is cut
        assert "weights_only" not in line and "Traceback" not in results[name][0].stderr
        assert "Unpickl" not in line.split(":")[1]


def test_index_of_another_model(results):
    line = _fails(results, "search_other_model")
    assert "index" in line.lower() and ("model" in line.lower() or "weights" in line.lower())


def test_half_written_image_cache_is_rebuilt(tmp_path):
    """A crash while the cache is written leaves an entry without its manifest (written
    last) or a cut-off array: the next run rebuilds it from the images, it never reads it."""
    from vireid.data.cache import ImageCache
    from vireid.data.images import decode_image
    from vireid.data.sysu import load_sysu

    root = write_sysu(tmp_path / "d", train=(1, 2), test=(3, 4), per_cam=1)
    recs = load_sysu(root).train.rgb
    size = (8, 4)
    want = np.stack([decode_image(root / r.path, size) for r in recs])  # independent decode
    c = ImageCache.build(root, recs, size, cache_dir=tmp_path / "c")
    npy, manifest = c.path, c.path.with_suffix(".json")
    del c
    # 1) the array is complete but garbage and the manifest was never written
    npy.write_bytes(npy.read_bytes()[:128] + b"\0" * (npy.stat().st_size - 128))
    manifest.unlink()
    assert np.array_equal(ImageCache.build(root, recs, size, cache_dir=tmp_path / "c")
                          .batch(range(len(recs))), want)
    # 2) the manifest is there but the array was cut off
    npy.write_bytes(npy.read_bytes()[: npy.stat().st_size // 2])
    assert np.array_equal(ImageCache.build(root, recs, size, cache_dir=tmp_path / "c")
                          .batch(range(len(recs))), want)
    assert not [p for p in (tmp_path / "c").iterdir() if TMP_MARK in p.name]

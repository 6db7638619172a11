"""Fuzz-style robustness of the CLI: seeded random mutations of config files, RegDB index
files (``idx/*.txt``), SYSU-MM01 id files (``exp/*_id.txt``) and command lines, and (issue 23)
of the files vireid writes itself (checkpoints, feature files, gallery-index manifests) and
of the values a training run checks before it starts, fed to ``vireid.cli.main`` in process.
Every case must end with exit code 0 or 2 (usage and input errors are one ``error:`` line),
never an uncaught exception, a traceback or exit 1 (a bug), within a bounded time; a refused
training leaves no run folder. 112 cases in all, seeded, so a failure reproduces.
"""
from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import random
import shutil
import time
from pathlib import Path
from typing import Any

import pytest
import torch

from conftest import assert_handled
from test_sharded_eval import write_checkpoint
from vireid.cli import main

SEED = int(os.environ.get("VIREID_FUZZ_SEED", "16"))  # another seed explores further
PER_CASE_S = 20.0  # generous: the slowest valid case (info of a config) takes < 1 s here

CONFIG = """\
name: fuzz
model: {arch: resnet18, width: 0.125, last_stride: 1, shared_stages: "3-4", pretrained: none}
ccn: {kernel_size: [2, 2], stride: [1, 1], padding: 1, share_fc: true}
loss: {kind: ccn, lambda_id: 0.1}
data: {dataset: sysu, height: 64, width: 32, pad: 2, ids_per_batch: 4, neg_ratio: 2}
train: {epochs: 2, iters_per_epoch: 2, lr: 0.01, lr_milestones: [1], log_every: 2, seed: 0}
eval: {batch_size: 64, chunk_size: 16, topk: 3, trials: [0, 1]}
"""

# Fragments a mutation inserts: odd bytes, separators, numbers out of every range.
FRAGMENTS = [b"\xff", b"\xfe\xff", b"\x00", b"\n", b",", b"-", b" ", b":", b"{", b"]", b"\t",
             b"0", b"-1", b"99999999999", b"1e400", b".nan", b".inf", b"2024-13-45", b"null",
             b"~", b"&a", b"*a", b"!!python/object:os.system", b"'", b'"', b"#", b"\r\n",
             b"\xc3\x28", b"id", b"../../etc/passwd", b"Visible/1/x.bmp 0"]

TOKENS = ["0", "-1", "-2", "1", "3", "42", "99999999999", "5-2", "0,0,0", "1-10", "x", "",
          "nan", "inf", "--", "-q", "-v", "--json", "/proc/vireid-x", "\udcff\udcfe",
          "all", "indoor", "v2t", "openset", "multi", "regdb", "sysu", "llcm", "--bogus",
          "train.lr=.inf", "model.width=0", "data.height=17", "a=b=c", "=", "train.x=1"]


def mutate(data: bytes, rng: random.Random) -> bytes:
    """One to three random edits of ``data``."""
    for _ in range(rng.randint(1, 3)):
        op = rng.randrange(7)
        n = len(data)
        i = rng.randrange(n + 1)
        if op == 0 and n:  # delete a span
            data = data[:i] + data[i + rng.randint(1, 12):]
        elif op == 1:  # insert a fragment
            data = data[:i] + rng.choice(FRAGMENTS) + data[i:]
        elif op == 2 and n:  # replace a byte
            data = data[:i] + bytes([rng.randrange(256)]) + data[i + 1:]
        elif op == 3:  # truncate
            data = data[:i]
        elif op == 4:  # duplicate a line
            lines = data.split(b"\n")
            j = rng.randrange(len(lines))
            lines.insert(j, lines[j])
            data = b"\n".join(lines)
        elif op == 5:  # replace a digit run by a number out of range
            digits = [k for k in range(n) if data[k:k + 1].isdigit()]
            if digits:
                k = rng.choice(digits)
                data = data[:k] + rng.choice([b"0", b"-7", b"999999", b"3.5", b"1e9"]) + data[k + 1:]
        else:  # swap two lines
            lines = data.split(b"\n")
            a, b = rng.randrange(len(lines)), rng.randrange(len(lines))
            lines[a], lines[b] = lines[b], lines[a]
            data = b"\n".join(lines)
    return data


def run_case(args: list) -> tuple[int, str, float]:
    """``vireid ARGS`` in process: (exit code, stderr, seconds); an escaping exception fails."""
    out, err = io.StringIO(), io.StringIO()
    logging.root.handlers.clear()
    t0 = time.perf_counter()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main([os.fsdecode(a) if isinstance(a, bytes) else str(a) for a in args])
    return rc, err.getvalue(), time.perf_counter() - t0


def check(args: list, what: str) -> int:
    try:
        rc, err, secs = run_case(args)
    except BaseException as exc:  # noqa: BLE001 - the property under test
        raise AssertionError(f"{what}: uncaught {type(exc).__name__}: {exc}\nargs {args}") from exc
    assert_handled(rc, err, what, context=f"args {args}\n")
    assert secs < PER_CASE_S, f"{what}: {secs:.1f} s\nargs {args}"
    return rc


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict[str, Path]:
    t = tmp_path_factory.mktemp("fuzz")
    assert run_case(["synth", "--layout", "sysu", "--out", t / "sysu", "--ids", "12",
                     "--seed", "1"])[0] == 0
    assert run_case(["synth", "--layout", "regdb", "--out", t / "regdb", "--ids", "4",
                     "--seed", "1"])[0] == 0
    return {"t": t, "sysu": t / "sysu", "regdb": t / "regdb"}


def test_fuzz_config_files(data):
    rng = random.Random(SEED)
    f = data["t"] / "fuzz.yaml"
    f.write_text(CONFIG)
    seen = {check(["info", "--config", f], "the unmutated config")}
    for k in range(20):
        f.write_bytes(mutate(CONFIG.encode(), rng))
        cmd = ["info", "--config", f] if k % 2 else ["info", "--config", f, "--json", "-q"]
        seen.add(check(cmd, f"config case {k}: {f.read_bytes()[:400]!r}"))
    # both valid and refused configs occurred (a duplicated line is a key given twice, refused
    # since issue 23, so some seeds refuse every mutation: the valid one is the base config)
    assert seen == {0, 2}


def test_fuzz_regdb_index_files(data):
    rng = random.Random(SEED + 1)
    root = data["t"] / "regdb_fuzz"
    shutil.copytree(data["regdb"], root, symlinks=True)
    idx = sorted((root / "idx").glob("*_1.txt"))
    originals = {p: p.read_bytes() for p in idx}
    for k in range(14):
        victim = rng.choice(idx)
        victim.write_bytes(mutate(originals[victim], rng))
        cmd = (["data", "summary", "--dataset", "regdb", "--root", root] if k % 2 else
               ["data", "split", "--dataset", "regdb", "--root", root, "--protocol",
                rng.choice(["v2t", "t2v"]), "--trial", "1", "--json"])
        check(cmd, f"regdb case {k}: {victim.name}: {victim.read_bytes()[:300]!r}")
        victim.write_bytes(originals[victim])


def test_fuzz_sysu_id_files(data):
    rng = random.Random(SEED + 2)
    root = data["t"] / "sysu_fuzz"
    shutil.copytree(data["sysu"], root, symlinks=True)
    ids = sorted((root / "exp").glob("*_id.txt"))
    originals = {p: p.read_bytes() for p in ids}
    for k in range(14):
        victim = rng.choice(ids)
        victim.write_bytes(mutate(originals[victim], rng))
        cmd = (["data", "summary", "--dataset", "sysu", "--root", root] if k % 2 else
               ["data", "split", "--dataset", "sysu", "--root", root, "--protocol",
                rng.choice(["all", "indoor", "openset"]), "--trial", "0"])
        check(cmd, f"sysu case {k}: {victim.name}: {victim.read_bytes()[:300]!r}")
        victim.write_bytes(originals[victim])


def test_fuzz_command_lines(data, tmp_path, monkeypatch):
    # A mutated command line may name an output file relative to the working folder (the
    # `-o` value dropped, a token in its place): keep such files out of the repository.
    monkeypatch.chdir(tmp_path)
    rng = random.Random(SEED + 3)
    cfg = data["t"] / "ok.yaml"
    cfg.write_text(CONFIG)
    s, r = data["sysu"], data["regdb"]
    bases = [
        ["data", "summary", "--dataset", "sysu", "--root", s],
        ["data", "split", "--dataset", "sysu", "--root", s, "--protocol", "all", "--trial", "0"],
        ["data", "split", "--dataset", "regdb", "--root", r, "--protocol", "v2t", "--trial", "1",
         "--json"],
        ["info", "--config", cfg, "--num-classes", "10"],
        ["info", "--config", "cpu-synthetic", "model.width=0.25"],
        ["eval", "--checkpoint", data["t"] / "none.pt", "--data-root", s, "--trials", "0"],
        ["report", s, "-o", data["t"] / "r.html"],
    ]
    for k in range(16):
        args = list(rng.choice(bases))
        for _ in range(rng.randint(1, 3)):
            op = rng.randrange(3)
            i = rng.randrange(len(args) + 1)
            if op == 0 and len(args) > 1:
                del args[min(i, len(args) - 1)]
            elif op == 1:
                args.insert(i, rng.choice(TOKENS))
            elif i < len(args) and i > 0:
                args[i] = rng.choice(TOKENS)
        check(args, f"command line case {k}")


# --------------------------------------------------------------------------- files vireid wrote
#: Values a structured mutation puts in place of a field: every JSON and torch kind, and
#: numbers out of every range.
VALUES: list[Any] = [None, "x", "", -1, 0, 3.5, True, 2**70, float("nan"), [], {}, [1, "a"],
                     {"a": None}, "../../etc/passwd"]


def _tensor_values() -> list[Any]:
    return [torch.zeros(2), torch.zeros(0), torch.zeros(3, dtype=torch.int64), torch.tensor(1.0)]


def mutate_tree(obj: Any, rng: random.Random, values: list[Any]) -> Any:
    """One to three edits of a nested dict/list: a field deleted, replaced by a value of
    another kind, or a list cut short. Returns the (copied and) edited object."""
    import copy

    obj = copy.deepcopy(obj)
    for _ in range(rng.randint(1, 3)):
        parent, key = None, None
        node = obj
        for _ in range(rng.randint(1, 4)):  # walk down a random path
            if isinstance(node, dict) and node:
                k = rng.choice(sorted(node, key=str))
            elif isinstance(node, list) and node:
                k = rng.randrange(len(node))
            else:
                break
            parent, key, node = node, k, node[k]
        if parent is None:
            continue
        op = rng.randrange(3)
        if op == 0 and isinstance(parent, dict):
            del parent[key]
        elif op == 1 and isinstance(node, list) and node:
            del node[rng.randrange(len(node)):]
        else:
            parent[key] = copy.deepcopy(rng.choice(values))  # never share the pool's objects
    return obj


@pytest.fixture(scope="module")
def written(data) -> dict[str, Path]:
    """A checkpoint, a feature file and a gallery index of it, as vireid writes them."""
    t = data["t"]
    ckpt = write_checkpoint(t / "ck.pt")
    feats = t / "feats.pt"
    assert run_case(["eval", "--checkpoint", ckpt, "--data-root", data["sysu"], "--trials", "0",
                     "--save-features", feats])[0] == 0
    images = sorted((data["sysu"] / "cam1").iterdir())[0]
    ix = t / "ix"
    assert run_case(["index", "build", "--checkpoint", ckpt, "--images", images, "-o", ix,
                     "--no-progress", "--shard-size", "2"])[0] == 0
    query = sorted(images.iterdir())[0]
    return {"ckpt": ckpt, "feats": feats, "images": images, "ix": ix, "query": query}


def test_fuzz_checkpoint_files(data, written):
    rng = random.Random(SEED + 4)
    good = torch.load(written["ckpt"], weights_only=True)
    f = data["t"] / "fuzz_ck.pt"
    for k in range(12):
        torch.save(mutate_tree(good, rng, VALUES + _tensor_values()), f)
        out = data["t"] / f"fuzz_ix{k}"
        check(["index", "build", "--checkpoint", f, "--images", written["images"], "-o", out,
               "--no-progress"], f"checkpoint case {k}")
        shutil.rmtree(out, ignore_errors=True)


def test_fuzz_feature_files(data, written):
    rng = random.Random(SEED + 5)
    good = torch.load(written["feats"], weights_only=True)
    f = data["t"] / "fuzz_feats.pt"
    for k in range(12):
        torch.save(mutate_tree(good, rng, VALUES + _tensor_values()), f)
        check(["eval", "--checkpoint", written["ckpt"], "--features", f, "--trials", "0"],
              f"feature file case {k}")


def test_fuzz_index_manifests(data, written):
    rng = random.Random(SEED + 6)
    manifest = (written["ix"] / "manifest.json").read_bytes()
    good = json.loads(manifest)
    root = data["t"] / "ix_fuzz"
    shutil.copytree(written["ix"], root)
    for k in range(14):
        # even cases: bytes mutated (broken JSON too); odd: fields deleted or replaced
        text = (mutate(manifest, rng) if k % 2 == 0 else
                json.dumps(mutate_tree(good, rng, [v for v in VALUES if v == v])).encode())
        (root / "manifest.json").write_bytes(text)
        cmd = (["index", "info", "--index", root] if k % 4 < 2 else
               ["search", "--index", root, "--query", written["query"], "--json"])
        check(cmd, f"index manifest case {k}: {text[:300]!r}")


# --------------------------------------------------------------------------- checks before a run
#: Overrides at and past the edges of what a training run checks before it starts.
RUN_VALUES = ["train.seed=-1", "train.seed=4294967295", "train.seed=4294967296",
              f"train.seed={2**64 + 1}", "train.threads=0", "train.threads=1025",
              "train.threads=100000", "ccn.kernel_size=[5,2]", "ccn.kernel_size=[4,3]",
              "ccn.kernel_size=[1,1]", "data.ids_per_batch=64", "data.ids_per_batch=2",
              "data.val_ids=5", "data.val_ids=99", "model.pretrained=missing.pth",
              "model.pretrained=ok.yaml.pt", "loss.kind=kvl", "data.neg_ratio=1",
              "train.selection=val", "data.val_ids=2", "data.root=/proc/nothere"]


def test_fuzz_training_checks(data, tmp_path, monkeypatch):
    """Random combinations of the values above: a run starts and finishes (exit 0) or is
    refused (exit 2, one line) before its folder exists."""
    monkeypatch.chdir(tmp_path)  # relative pretrained paths resolve here
    (tmp_path / "ok.yaml.pt").write_text(CONFIG)  # a file that is not a state dict
    cfg = tmp_path / "ok.yaml"
    cfg.write_text(CONFIG.replace("epochs: 2, iters_per_epoch: 2", "epochs: 1, iters_per_epoch: 1"))
    rng = random.Random(SEED + 7)
    seen = set()
    for k in range(10):
        run = tmp_path / f"run{k}"
        overrides = rng.sample(RUN_VALUES, rng.randint(1, 3))
        rc = check(["train", "--config", cfg, "--data-root", data["sysu"], "-o", run,
                    "--no-progress", "-q", f"data.cache_dir={tmp_path / 'cache'}", *overrides],
                   f"training case {k}: {overrides}")
        seen.add(rc)
        if rc == 2:
            assert not run.exists(), f"training case {k}: {overrides} left {sorted(run.iterdir())}"
    assert 2 in seen

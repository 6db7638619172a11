"""Reliability classes of issue 16 through the CLI entry point (``vireid.cli.main``, in
process): every bad input or fault ends in one ``error: …`` line naming what was expected and
what was found, exit code 2, and no half-written output.

Classes: config files; output paths that are files, unwritable or on a full disk (a real
tmpfs); option values out of range; two runs into one folder; file names with odd bytes;
dangling symlinks; a closed stdout; -q/-v after the sub-command; --help texts; a real SIGINT
during a checkpoint write. Issue 23: files vireid wrote itself (checkpoints, feature files,
index manifests and shards) checked field by field; an unexpected exception is one line and
exit 1; every check a run can make before it starts is made before its folder exists, and
a run that fails before its first step leaves no folder and no file behind.
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import io
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from test_sharded_eval import write_checkpoint, write_sysu
from vireid.cli import _all_parsers, build_parser, main
from vireid.utils.atomic import TMP_MARK

TINY_YAML = """\
name: tiny
model: {arch: resnet18, width: 0.125, last_stride: 1, shared_stages: "3-4", pretrained: none}
ccn: {kernel_size: [2, 2], stride: [1, 1], padding: 1}
data: {dataset: sysu, height: 64, width: 32, pad: 2, ids_per_batch: 2, neg_ratio: 1}
train: {epochs: 1, iters_per_epoch: 1, lr: 0.01, lr_milestones: [1], log_every: 1, seed: 0}
eval: {batch_size: 64, chunk_size: 4, topk: 2}
"""


def cli(*args) -> tuple[int, str, str]:
    """``vireid ARGS`` in this process: (exit code, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    logging.root.handlers.clear()  # basicConfig binds the current sys.stderr
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main([os.fsdecode(a) if isinstance(a, bytes) else str(a) for a in args])
    return rc, out.getvalue(), err.getvalue()


def fails(*args, needles=()) -> str:
    """Run a case that must fail: exit 2, exactly one ``error:`` line, no traceback."""
    rc, out, err = cli(*args)
    lines = [ln for ln in err.splitlines() if ln.startswith("error: ")]
    assert rc == 2, f"{args}: rc {rc}\n{out}\n{err}"
    assert len(lines) == 1, f"{args}: expected one error line, got\n{err}"
    assert "Traceback" not in err, err
    for n in needles:
        assert n in lines[0], f"{n!r} not in {lines[0]!r}"
    return lines[0]


def no_temp(folder: Path) -> bool:
    return not [p for p in folder.rglob("*") if TMP_MARK in p.name]


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    t = tmp_path_factory.mktemp("rel")
    root = write_sysu(t / "sysu", train=(1, 2), test=(3, 4))
    ckpt = write_checkpoint(t / "tiny.pt")
    (t / "tiny.yaml").write_text(TINY_YAML)
    (t / "a_file").write_text("x")
    return {"t": t, "root": root, "ckpt": ckpt, "cfg": t / "tiny.yaml"}


# --------------------------------------------------------------------------- config files
def test_config_file_errors(env):
    t, cfg = env["t"], env["cfg"]
    (t / "latin1.yaml").write_bytes("name: caf\xe9\n".encode("latin-1"))
    (t / "empty.yaml").write_text("")
    (t / "inf.yaml").write_text(TINY_YAML.replace("lr: 0.01", "lr: .inf"))
    (t / "date.yaml").write_text(TINY_YAML.replace("lr: 0.01", "lr: 2024-13-45"))
    (t / "list.yaml").write_text("- 1\n- 2\n")
    fails("info", "--config", t / "latin1.yaml", needles=("expected UTF-8", "0xe9"))
    fails("train", "--config", t / "latin1.yaml", "-o", t / "r_latin1",
          needles=("expected UTF-8",))
    assert not (t / "r_latin1").exists()
    # an empty file used to become the ResNet-50 defaults (and an ImageNet download)
    fails("info", "--config", t / "empty.yaml", needles=("is empty", "expected a YAML mapping"))
    fails("info", "--config", t / "nothere.yaml", needles=("nothere.yaml does not exist",))
    line = fails("info", "--config", "nothere", needles=("no preset named 'nothere' and no file",
                                                         "expected a YAML file or a preset"))
    assert "cpu-synthetic" in line
    fails("info", "--config", t, needles=("expected a YAML file, found a folder",))
    fails("info", "--config", t / "inf.yaml", needles=("train.lr: expected a finite number",))
    fails("info", "--config", cfg, "train.lr=.inf", needles=("train.lr: expected a finite",))
    fails("info", "--config", cfg, "train.lr=nan", needles=("train.lr: expected a finite",))
    fails("info", "--config", t / "date.yaml", needles=("date.yaml",))
    fails("info", "--config", cfg, "train.lr=2024-13-45", needles=("train.lr: expected float",))
    fails("info", "--config", t / "list.yaml", needles=("expected a YAML mapping", "list"))
    fails("info", "--config", cfg, "data.height=25600", needles=("data.height",))


# --------------------------------------------------------------------------- output paths
def test_output_path_that_is_a_file_or_unwritable(env):
    t, root, ckpt, af = env["t"], env["root"], env["ckpt"], env["t"] / "a_file"
    fails("synth", "--layout", "sysu", "--out", af, "--ids", "4", needles=("found a file",))
    fails("synth", "--layout", "sysu", "--out", "/proc/vireid-x", "--ids", "4",
          needles=("/proc/vireid-x", "ENOENT"))
    fails("reproduce", "table1", "--data-root", root, "-o", af, "--tiny",
          needles=("found a file",))
    fails("reproduce", "table1", "--data-root", root, "-o", "/proc/vireid-x", "--tiny",
          needles=("/proc/vireid-x",))
    fails("index", "build", "--checkpoint", ckpt, "--images", root / "cam1", "-o",
          "/proc/vireid-x", "--no-progress", needles=("/proc/vireid-x", "ENOENT"))
    fails("index", "build", "--checkpoint", ckpt, "--images", root / "cam1", "-o", af,
          "--no-progress", needles=("found a file",))
    fails("figures", "--checkpoint", ckpt, "--data-root", root, "-o", af,
          needles=("found a file",))
    fails("report", root, "-o", t, needles=("expected a file path, found a folder",))
    # --json / --save-features are checked before the evaluation, not after it
    fails("eval", "--checkpoint", ckpt, "--data-root", root, "--json", t,
          needles=("--json", "found a folder"))
    fails("eval", "--checkpoint", ckpt, "--data-root", root, "--save-features", af / "f.pt",
          needles=("--save-features", "found a file"))
    fails("data", "split", "--dataset", "sysu", "--root", root, "--protocol", "all",
          "--trial", "0", "--out", t, needles=("found a folder",))
    fails("train", "--config", env["cfg"], "--data-root", root, "-o", af,
          needles=("found a file",))
    assert af.read_text() == "x"


def _tmpfs(path: Path, size: str) -> None:
    path.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs for a real full disk: {proc.stderr.strip()}")


@pytest.fixture
def small_disk(tmp_path):
    mounted = []

    def make(size: str) -> Path:
        d = tmp_path / f"disk{len(mounted)}"
        _tmpfs(d, size)
        mounted.append(d)
        return d
    yield make
    for d in mounted:
        subprocess.run(["umount", str(d)], check=False)


def test_real_full_disk(env, small_disk, tmp_path):
    """A tmpfs of a few hundred KiB: training, index build and synth stop with ENOSPC named,
    exit 2, and leave no temp file and no half-written output."""
    root, ckpt = env["root"], env["ckpt"]
    disk = small_disk("900k")  # config + log fit; the 1.6 MB checkpoint does not
    run = disk / "run"
    line = fails("train", "--config", env["cfg"], "--data-root", root, "-o", run,
                 "--threads", "1", "--no-progress", "data.cache_dir=" + str(tmp_path / "c"))
    assert "last.pt" in line and "no space left on device (ENOSPC)" in line, line
    assert "inline_container" not in line
    assert no_temp(disk) and not (run / "checkpoints" / "last.pt").exists()

    disk = small_disk("64k")  # the tiny model's shards need ~100 KiB
    fails("index", "build", "--checkpoint", ckpt, "--images", root, "-o", disk / "ix",
          "--no-progress", needles=("ENOSPC",))
    assert list(disk.iterdir()) == []  # neither shards without a manifest nor a temp folder

    disk = small_disk("300k")
    fails("synth", "--layout", "sysu", "--out", disk / "s", "--ids", "12",
          needles=("ENOSPC", "partial dataset was removed"))
    assert list(disk.iterdir()) == []


def _default_sigint() -> None:
    """In the child before exec: SIGINT back to its default disposition. A test run started
    in the background by a shell inherits SIGINT ignored, and Python then installs no
    KeyboardInterrupt handler, so the signal these tests raise would be lost."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_sigint_during_a_checkpoint_write_is_an_interrupt_and_keeps_the_previous_file(tmp_path):
    """A real SIGINT while torch writes a checkpoint: KeyboardInterrupt (not torch's
    inline_container RuntimeError), no temp file, the previous file byte-identical.

    Deterministic: the writer's test hook (utils/atomic.SIGINT_AFTER_BYTES_ENV) sends the
    process SIGINT once the first bytes of the new file are written, so the signal always
    lands mid-write; the test never polls or sleeps."""
    script = tmp_path / "saver.py"
    script.write_text(
        "import os, sys, torch\n"
        "from vireid.utils.atomic import SIGINT_AFTER_BYTES_ENV, atomic_save_torch\n"
        "path = sys.argv[1]\n"
        "atomic_save_torch({'v': torch.arange(10)}, path)\n"
        "print('ready', flush=True)\n"
        "os.environ[SIGINT_AFTER_BYTES_ENV] = '1'  # after the first chunk of the next save\n"
        "big = {'x': [torch.randn(100_000) for _ in range(20)]}\n"
        "try:\n"
        "    atomic_save_torch(big, path)\n"
        "    print('saved', flush=True)\n"
        "except KeyboardInterrupt:\n"
        "    print('KeyboardInterrupt', flush=True)\n"
        "except BaseException as exc:\n"
        "    print(type(exc).__name__, str(exc)[:200], flush=True)\n")
    d = tmp_path / "ck"
    d.mkdir()
    target = d / "last.pt"
    proc = subprocess.run([sys.executable, str(script), str(target)], capture_output=True,
                          text=True, env=dict(os.environ, OMP_NUM_THREADS="1"), timeout=120,
                          preexec_fn=_default_sigint)
    out = proc.stdout.split()
    assert out[:1] == ["ready"], f"the first save did not happen:\n{proc.stdout}\n{proc.stderr}"
    assert out[1:] == ["KeyboardInterrupt"], f"{proc.stdout}\n{proc.stderr}"
    assert [p.name for p in d.iterdir()] == ["last.pt"]  # no temp file left
    assert torch.equal(torch.load(target, weights_only=True)["v"], torch.arange(10))


def test_sigint_during_a_training_checkpoint_exits_130_without_a_temp_file(env, tmp_path):
    """The same hook through `vireid train`: Ctrl-C while the first checkpoint is written
    prints `interrupted` (no traceback), exits 130, and leaves no temp file and no
    half-written last.pt."""
    run = tmp_path / "run"
    proc = subprocess.run([sys.executable, "-m", "vireid", "train", "--config", str(env["cfg"]),
                           "--data-root", str(env["root"]), "-o", str(run), "--threads", "1",
                           "--no-progress", f"data.cache_dir={tmp_path / 'cache'}"],
                          capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, OMP_NUM_THREADS="1",
                                   VIREID_TEST_SIGINT_AFTER_BYTES="1"),
                          preexec_fn=_default_sigint)
    assert proc.returncode == 130, proc.stderr
    assert proc.stderr.rstrip().endswith("interrupted") and "Traceback" not in proc.stderr
    assert no_temp(tmp_path) and not (run / "checkpoints" / "last.pt").exists()


# --------------------------------------------------------------------------- option ranges
def test_option_values_out_of_range(env):
    t, root, ckpt = env["t"], env["root"], env["ckpt"]
    ev = ["eval", "--checkpoint", ckpt, "--data-root", root]
    fails(*ev, "--trials", "5-2", needles=("LO ≤ HI", "'5-2'"))
    fails(*ev, "--trials", "0,0,0", needles=("each trial once", "0"))
    fails(*ev, "--trials", ",", needles=("at least one trial",))
    fails(*ev, "--trials", "42", needles=("trials 0..9", "42"))
    fails(*ev, "--batch-size", "0", needles=("--batch-size", "≥ 1", "found 0"))
    fails(*ev, "--chunk-size", "0", needles=("--chunk-size",))
    fails(*ev, "--topk", "-1", needles=("--topk",))
    fails(*ev, "--device", "gpu", needles=("expected cpu, cuda or cuda:N", "'gpu'"))
    cuda = "cuda:999" if torch.cuda.is_available() else "cuda"
    fails(*ev, "--device", cuda, needles=("--device",))
    fails("figures", "--checkpoint", ckpt, "--data-root", root, "-o", t / "figs", "--which",
          "ranked", "--queries", "0", needles=("--queries",))
    assert not (t / "figs").exists()
    for n in ("0", "-2"):
        fails("train", "--config", env["cfg"], "--data-root", root, "-o", t / "r_stop",
              "--stop-after", n, needles=("--stop-after",))
    assert not (t / "r_stop").exists()
    fails("train", "--config", env["cfg"], "--data-root", root, "-o", t / "r_dev",
          "train.device=gpu", needles=("train.device",))
    fails("index", "build", "--checkpoint", ckpt, "--images", root, "-o", t / "ix0",
          "--shard-size", "0", needles=("--shard-size",))
    fails("synth", "--layout", "sysu", "--out", t / "s0", "--ids", "1", needles=("--ids",))
    # reproduce: a trial the protocol lacks is refused before anything trains or is written
    fails("reproduce", "table1", "--data-root", root, "-o", t / "rep", "--tiny", "--trials",
          "42", needles=("trials 0..9", "42"))
    fails("reproduce", "table1", "--data-root", root, "-o", t / "rep", "--tiny",
          "--variants", "ours,nope", needles=("'nope'",))
    fails("reproduce", "table1", "--data-root", root, "-o", t / "rep", "--tiny",
          "--seeds", "0,0", needles=("--seeds", "more than once"))
    not_sweep = t / "not-sweep.json"
    not_sweep.write_text('{"table": "table1", "rows": [{"label": "IDL", "ours": {"rank1": 1.0}}]}')
    fails("figures", "--sweep", not_sweep, "-o", t / "fig", needles=("--sweep", "fig3 or table7"))
    assert not (t / "rep").exists()


# --------------------------------------------------------------------------- one folder, two runs
def _digest(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file()}


def test_two_datasets_into_one_folder_are_refused(env, tmp_path):
    out = tmp_path / "syn"
    args = ["synth", "--layout", "sysu", "--out", out, "--ids", "4", "--seed", "1"]
    assert cli(*args)[0] == 0
    first = _digest(out)
    assert cli(*args)[0] == 0  # the same parameters again: the same bytes
    assert _digest(out) == first
    fails("synth", "--layout", "sysu", "--out", out, "--ids", "4", "--seed", "2",
          needles=("seed=1", "seed=2", "choose another --out"))
    fails("synth", "--layout", "sysu", "--out", out, "--ids", "5", "--seed", "1",
          needles=("ids=4", "ids=5"))
    fails("synth", "--layout", "regdb", "--out", out, "--ids", "4", "--seed", "1",
          needles=("layout='sysu'", "layout='regdb'"))
    assert _digest(out) == first
    fails("synth", "--layout", "regdb", "--out", env["root"], "--ids", "4",
          needles=("expected an empty folder",))
    # reproduce: an output folder holds the runs of one dataset
    from vireid.apps.reproduce import _claim_output

    rep = tmp_path / "rep"
    rep.mkdir()
    _claim_output(rep, "sysu", env["root"])
    other = tmp_path / "other"
    shutil.copytree(env["root"], other)
    fails("reproduce", "table1", "--data-root", other, "-o", rep, "--tiny",
          needles=("holds runs of dataset 'sysu'", str(other.resolve())))


# --------------------------------------------------------------------------- odd file names
def test_file_names_with_odd_bytes(env, tmp_path):
    """A training and a gallery image whose names are not UTF-8: summary, training-data
    caching, index build and search work; a corrupt one is named by the repr of its bytes."""
    root = tmp_path / "odd"
    shutil.copytree(env["root"], root)
    src = root / "cam1" / "0001" / "0001.png"
    odd = os.fsencode(root / "cam1" / "0001") + b"/\xff\xfeodd.png"
    shutil.copyfile(src, odd)
    gal = os.fsencode(root / "cam1" / "0003") + b"/\xe9t\xe9.png"
    shutil.copyfile(root / "cam1" / "0003" / "0001.png", gal)
    rc, out, err = cli("data", "summary", "--dataset", "sysu", "--root", root, "--json")
    assert rc == 0, err
    assert json.loads(out)["splits"]["trainval"]["cameras"]["cam1"]["images"] == 2 * 3 + 1
    # the image cache of the training images fingerprints the odd name (was UnicodeEncodeError)
    from vireid.data.cache import ImageCache
    from vireid.data.sysu import load_sysu

    recs = load_sysu(root).train.rgb
    assert any(r.path.endswith(os.fsdecode(b"\xff\xfeodd.png")) for r in recs)
    cache = ImageCache.build(root, recs, (16, 8), cache_dir=tmp_path / "c")
    assert len(cache) == len(recs)
    ix = tmp_path / "ix"
    rc, out, err = cli("index", "build", "--checkpoint", env["ckpt"], "--images",
                       root / "cam1" / "0003", "-o", ix, "--no-progress")
    assert rc == 0, err
    rc, out, err = cli("search", "--index", ix, "--query", root / "cam1" / "0003", "--json")
    assert rc == 0, err
    assert "\\udce9t\\udce9.png" in out  # JSON escapes the name's undecodable bytes
    assert (ix / "paths.txt").read_bytes().count(b"\xe9t\xe9.png") == 1
    Path(os.fsdecode(gal)).write_bytes(b"")  # a corrupt file with an odd name
    line = fails("index", "build", "--checkpoint", env["ckpt"], "--images",
                 root / "cam1" / "0003", "-o", tmp_path / "ix2", "--no-progress")
    assert repr(b"\xe9t\xe9.png")[2:-1] in line, line
    assert "--skip-corrupt" not in line
    assert not (tmp_path / "ix2").exists() and no_temp(tmp_path)


def test_dangling_symlink_is_counted_in_a_warning(env, tmp_path):
    root = tmp_path / "links"
    shutil.copytree(env["root"], root)
    os.symlink(tmp_path / "gone.png", root / "cam1" / "0003" / "0009.png")
    rc, out, err = cli("data", "summary", "--dataset", "sysu", "--root", root)
    assert rc == 0, err
    assert "ignoring 1 image link(s) whose target does not exist" in err and "0009.png" in err
    rc, out, err = cli("index", "build", "--checkpoint", env["ckpt"], "--images",
                       root / "cam1" / "0003", "-o", tmp_path / "ix", "--no-progress")
    assert rc == 0 and "ignoring 1 image link(s)" in err, err


# --------------------------------------------------------------------------- other commands
def test_zero_byte_query_and_non_feature_file(env, tmp_path):
    ix = tmp_path / "ix"
    assert cli("index", "build", "--checkpoint", env["ckpt"], "--images",
               env["root"] / "cam1" / "0003", "-o", ix, "--no-progress")[0] == 0
    (tmp_path / "zero.png").write_bytes(b"")
    line = fails("search", "--index", ix, "--query", tmp_path / "zero.png",
                 needles=("zero.png", "empty (0-byte) file"))
    assert "--skip-corrupt" not in line
    (tmp_path / "notes.pt").write_bytes(b"\x80\x04 not features at all")
    line = fails("eval", "--checkpoint", env["ckpt"], "--features", tmp_path / "notes.pt",
                 needles=("notes.pt", "expected a file written by `vireid eval --save-features`"))
    assert "weights_only" not in line and len(line) < 400


def test_report_refuses_folders_with_nothing_to_report(env, tmp_path):
    (tmp_path / "empty").mkdir()
    fails("report", tmp_path / "empty", "-o", tmp_path / "r.html",
          needles=("expected a run or reproduce output folder", "empty folder"))
    fails("report", env["root"], "-o", tmp_path / "r.html", needles=("cam1",))
    assert not (tmp_path / "r.html").exists()


def test_quiet_and_verbose_after_the_subcommand(env):
    base = ["data", "summary", "--dataset", "sysu", "--root", env["root"]]
    rc, _, err = cli(*base)
    assert rc == 0 and "INFO" in err
    for args in (["-q", *base], [*base, "-q"]):
        rc, _, err = cli(*args)
        assert rc == 0 and "INFO" not in err, (args, err)
    rc, _, err = cli(*base, "-v")
    assert rc == 0 and "INFO" in err


def test_closed_stdout_ends_quietly(tmp_path):
    """`vireid data split … | head -1`: no BrokenPipeError traceback."""
    root = write_sysu(tmp_path / "big", train=(1, 2), test=tuple(range(3, 40)), per_cam=1)
    for pid in range(3, 40):  # many gallery files (empty ones: split lists decode nothing)
        for k in range(2, 40):
            (root / "cam1" / f"{pid:04d}" / f"{k:04d}.png").write_bytes(b"")
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = f"{sys.executable} -m vireid data split --dataset sysu --root {root} " \
          f"--protocol all --trial 0 --shot multi | head -1"
    proc = subprocess.run(["bash", "-o", "pipefail", "-c", cmd], capture_output=True, text=True,
                          env=env, timeout=120)
    assert proc.stdout.startswith("set\tpath"), proc.stdout
    assert "Traceback" not in proc.stderr and "BrokenPipe" not in proc.stderr, proc.stderr
    assert proc.returncode in (0, 141), proc.returncode


def test_every_option_has_a_description_and_default():
    for p in _all_parsers(build_parser()):
        help_text = p.format_help()
        for a in p._actions:
            if isinstance(a, (argparse._HelpAction, argparse._SubParsersAction)):
                continue
            assert a.help, f"{p.prog} {a.option_strings or a.dest}: no help"
            if a.option_strings and a.nargs != 0 and not a.required \
                    and a.default is not argparse.SUPPRESS:
                shown = p._get_formatter()._get_help_string(a)
                assert "default" in shown.lower(), f"{p.prog} {a.option_strings}: {shown}"
        assert "(default: none)" not in help_text or "none" in help_text


def test_usage_errors_are_one_error_line():
    line = fails("eval", "--trials", "x")
    assert line.startswith("error: vireid eval: ")
    fails("synth", "--layout", "market", "--out", "x", needles=("--layout",))


# --------------------------------------------------------------------------- issue 23, class 1
def _save_ckpt(obj: dict, path: Path) -> Path:
    torch.save(obj, path)
    return path


def test_checkpoints_are_checked_field_by_field(env, tmp_path):
    """A checkpoint with a field removed or of the wrong kind: one line naming the file and
    the field, for every command that reads checkpoints (was KeyError / TypeError)."""
    good = torch.load(env["ckpt"], weights_only=True)
    images = env["root"] / "cam1" / "0003"
    cases = [("config", lambda d: d.pop("config"), "is missing"),
             ("model", lambda d: d.pop("model"), "is missing"),
             ("num_classes", lambda d: d.pop("num_classes"), "is missing"),
             ("num_classes", lambda d: d.__setitem__("num_classes", "three"), "'three'"),
             ("model", lambda d: d.__setitem__("model", [1, 2]), "state dict"),
             ("config", lambda d: d.__setitem__("config", None), "found null"),
             ("epoch", lambda d: d.__setitem__("epoch", -1), "≥ 0"),
             ("extra", lambda d: d.__setitem__("extra", "x"), "a mapping")]
    for k, (field, mutate, hint) in enumerate(cases):
        obj = copy.copy(good)
        mutate(obj)
        bad = _save_ckpt(obj, tmp_path / f"bad{k}.pt")
        needles = (str(bad), f"field '{field}'", hint)
        fails("index", "build", "--checkpoint", bad, "--images", images, "-o",
              tmp_path / f"ix{k}", "--no-progress", needles=needles)
        assert not (tmp_path / f"ix{k}").exists()
        if k < 3:  # the same reader behind eval and export
            fails("eval", "--checkpoint", bad, "--data-root", env["root"], needles=needles)
            fails("export", "--checkpoint", bad, "-o", tmp_path / f"onnx{k}", needles=needles)


def test_a_resumed_checkpoint_needs_its_training_state(env, tmp_path):
    run = tmp_path / "run"
    rc, _, err = cli("train", "--config", env["cfg"], "--data-root", env["root"], "-o", run,
                     "--threads", "1", "--no-progress", f"data.cache_dir={tmp_path / 'c'}")
    assert rc == 0, err
    last = run / "checkpoints" / "last.pt"
    good = torch.load(last, weights_only=True)
    for field, mutate in (("optimizer", lambda d: d.__setitem__("optimizer", None)),
                          ("rng", lambda d: d.pop("rng")),
                          ("sampler.position", lambda d: d.__setitem__("sampler", {"epoch": 1})),
                          ("rng.numpy.keys", lambda d: d["rng"]["numpy"].__setitem__("keys", 5))):
        obj = copy.deepcopy(good)
        mutate(obj)
        _save_ckpt(obj, last)
        before = _digest(run)
        fails("train", "--resume", run, "--threads", "1", "--no-progress", "train.epochs=2",
              needles=(str(last), f"'{field}'"))
        assert _digest(run) == before  # nothing of the run changed
    # right kinds, wrong content: an optimizer state of another parameter count
    obj = copy.deepcopy(good)
    obj["optimizer"]["param_groups"][0]["params"] = [0]
    _save_ckpt(obj, last)
    fails("train", "--resume", run, "--threads", "1", "--no-progress", "train.epochs=2",
          needles=(str(last), "field 'optimizer'", "cannot restore"))


@pytest.fixture(scope="module")
def features(env):
    path = env["t"] / "feats.pt"
    rc, _, err = cli("eval", "--checkpoint", env["ckpt"], "--data-root", env["root"],
                     "--trials", "0", "--save-features", path)
    assert rc == 0, err
    return path


def test_feature_files_are_checked_field_by_field(env, features, tmp_path):
    good = torch.load(features, weights_only=True)
    n = len(good["features"]["paths"])

    def feats(d):
        return d["features"]

    cases = [("features", lambda d: d.pop("features"), "is missing"),
             ("features.G", lambda d: feats(d).pop("G"), "is missing"),
             ("features.F", lambda d: feats(d).__setitem__("F", feats(d)["F"][0]), "(N, C, h, w)"),
             ("features.G", lambda d: feats(d).__setitem__("G", feats(d)["G"][:2]), "shape"),
             ("features.pids", lambda d: feats(d).__setitem__("pids", feats(d)["pids"].double()),
              "integer tensor"),
             ("features.paths", lambda d: feats(d)["paths"].pop(), f"{n} items"),
             ("features.modalities", lambda d: feats(d)["modalities"].__setitem__(0, "uv"),
              "one of"),
             ("flip", lambda d: d.__setitem__("flip", None), "found null"),
             ("dataset.splits[0].query",
              lambda d: d["dataset"]["splits"][0]["query"].append(n), f"0..{n - 1}"),
             ("dataset.splits[0].gallery",
              lambda d: d["dataset"]["splits"][0]["gallery"].append(-1), f"0..{n - 1}")]
    for k, (field, mutate, hint) in enumerate(cases):
        obj = copy.deepcopy(good)
        mutate(obj)
        bad = _save_ckpt(obj, tmp_path / f"f{k}.pt")
        fails("eval", "--checkpoint", env["ckpt"], "--features", bad, "--trials", "0",
              needles=(str(bad), f"field '{field}'", hint))
    # the untouched file still scores
    rc, _, err = cli("eval", "--checkpoint", env["ckpt"], "--features", features, "--trials", "0")
    assert rc == 0, err


@pytest.fixture(scope="module")
def index(env):
    ix = env["t"] / "ix_good"
    rc, _, err = cli("index", "build", "--checkpoint", env["ckpt"], "--images",
                     env["root"] / "cam1", "-o", ix, "--no-progress", "--shard-size", "4")
    assert rc == 0, err
    return ix


def _tampered_index(index: Path, dest: Path, mutate) -> Path:
    shutil.copytree(index, dest)
    m = json.loads((dest / "manifest.json").read_text())
    mutate(m)
    (dest / "manifest.json").write_text(json.dumps(m))
    return dest


def test_index_manifests_and_shards_are_checked_field_by_field(env, index, tmp_path):
    query = env["root"] / "cam1" / "0003" / "0001.png"
    cases = [("shards", lambda m: m.pop("shards"), "is missing"),
             ("feature", lambda m: m.__setitem__("feature", None), "found null"),
             ("count", lambda m: m.__setitem__("count", "sixty-one"), "'sixty-one'"),
             ("count", lambda m: m.__setitem__("count", m["count"] + 1), "sum of the shards"),
             ("feature.F_shape", lambda m: m["feature"].__setitem__("F_shape", [64, 4]), "3 items"),
             ("feature.G_dim", lambda m: m["feature"].__setitem__("G_dim", 3), "channels"),
             ("model.model_digest", lambda m: m["model"].pop("model_digest"), "is missing"),
             ("modality", lambda m: m.__setitem__("modality", "uv"), "one of"),
             ("shards[1].count", lambda m: m["shards"][1].__setitem__("count", 2.5), "≥ 0"),
             ("shards[0].F", lambda m: m["shards"][0].__setitem__("F", "../../etc/passwd"),
              "inside the index folder"),
             ("shards[0].G", lambda m: m["shards"][0].__setitem__("G", "/etc/passwd"),
              "inside the index folder"),
             ("shards", lambda m: m["shards"][1].__setitem__("id", m["shards"][0]["id"]),
              "distinct")]
    for k, (field, mutate, hint) in enumerate(cases):
        ix = _tampered_index(index, tmp_path / f"ix{k}", mutate)
        needles = (str(ix / "manifest.json"), f"field '{field}'", hint)
        fails("index", "info", "--index", ix, needles=needles)
        fails("search", "--index", ix, "--query", query, needles=needles)
    # A shard replaced: the message names the file that is wrong (G, not F).
    ix = _tampered_index(index, tmp_path / "pickled", lambda m: None)
    np.save(ix / "shards" / "G-00000.npy", np.array([{"a": 1}] * 4, dtype=object),
            allow_pickle=True)
    line = fails("search", "--index", ix, "--query", query, needles=("G-00000.npy",))
    assert "F-00000.npy" not in line
    ix = _tampered_index(index, tmp_path / "f64", lambda m: None)
    F = np.load(index / "shards" / "F-00001.npy")
    np.save(ix / "shards" / "F-00001.npy", F.astype(np.float64))
    line = fails("search", "--index", ix, "--query", query,
                 needles=("F-00001.npy", "float32", "float64"))
    assert "G-00001.npy" not in line


def test_an_unexpected_exception_is_one_line_exit_1_and_a_traceback_with_v(env, monkeypatch):
    import vireid.commands.info as info

    def boom(args):
        raise KeyError("shards")

    monkeypatch.setattr(info, "run", boom)
    rc, out, err = cli("info", "--config", env["cfg"])
    lines = [ln for ln in err.splitlines() if ln.startswith("error: ")]
    assert rc == 1 and len(lines) == 1, err
    assert "KeyError" in lines[0] and "'shards'" in lines[0]
    assert "this is a bug, please report it" in lines[0] and "-v" in lines[0]
    assert "Traceback" not in err
    rc, out, err = cli("info", "--config", env["cfg"], "-v")
    assert rc == 1 and "Traceback" in err and "in boom" in err, err
    assert err.splitlines()[-1].startswith("error: KeyError")  # the line comes last
    # Ctrl-C and a closed stdout keep their own exit codes.
    for exc, code in ((KeyboardInterrupt(), 130), (BrokenPipeError(), 141)):
        def raiser(args, exc=exc):
            raise exc
        monkeypatch.setattr(info, "run", raiser)
        rc, out, err = cli("info", "--config", env["cfg"])
        assert rc == code and "error" not in err and "Traceback" not in err, (code, err)


# --------------------------------------------------------------------------- issue 23, class 2
def test_what_a_run_can_check_is_checked_before_its_folder_exists(env, tmp_path):
    """Seeds, threads, the kernel against the feature map, id counts against the batch, the
    data root and the pretrained file: exit 2, one line, and neither a new run folder nor a
    change to an existing one (was: a traceback, a segfault, or the right message after the
    data was cached, with config.yaml / metrics.jsonl / .train.lock left behind)."""
    t = tmp_path
    (t / "garbage.pth").write_bytes(b"\x80\x04 not a state dict")
    torch.save({"not.a.resnet": torch.zeros(1)}, t / "keys.pth")
    (t / "empty").mkdir()
    pre = t / "pre"  # an output folder that exists, holding a run that never checkpointed
    pre.mkdir()
    (pre / "notes.txt").write_text("mine")
    (pre / "config.yaml").write_text("name: earlier\n")
    root = ["--data-root", env["root"]]
    cases = [
        (root + ["train.seed=-1"], ("train.seed", "0..4294967295", "-1")),
        (root + [f"train.seed={2**64 + 1}"], ("train.seed", str(2**64 + 1))),
        (root + ["train.threads=100000"], ("train.threads", "1..1024", "100000")),
        (root + ["train.threads=0"], ("train.threads",)),
        (["--threads", "100000", *root], ("--threads", "1..1024")),
        (root + ["ccn.kernel_size=[9,9]"], ("ccn.kernel_size", "does not fit")),
        (root + ["data.ids_per_batch=4", "data.neg_ratio=1"], ("data.ids_per_batch", "at most 3")),
        (root + ["data.val_ids=2"], ("data.val_ids", "fewer than 2")),
        (["--data-root", t / "nothere"], ("nothere",)),
        (["--data-root", t / "empty"], ("cam1",)),
        (["--data-root", t / "garbage.pth"], ("garbage.pth",)),
        (root + [f"model.pretrained={t / 'missing.pth'}"], ("missing.pth", "not found")),
        (root + [f"model.pretrained={t / 'garbage.pth'}"], ("garbage.pth",)),
        (root + [f"model.pretrained={t / 'keys.pth'}"], ("keys.pth", "not.a.resnet")),
        (root + ["loss.kind=nope"], ("loss.kind", "'nope'")),
    ]
    for extra, needles in cases:
        before = _digest(pre)
        for out in (t / "new" / "run", pre):
            fails("train", "--config", env["cfg"], "-o", out, "--no-progress", *extra,
                  needles=needles)
            assert not (t / "new").exists(), extra
            assert _digest(pre) == before, extra
    assert sorted(p.name for p in pre.iterdir()) == ["config.yaml", "notes.txt"]
    for option in (["pretrain", "--out", t / "pt"], ["sweep", "--data-root", env["root"],
                                                      "-o", t / "sw"]):
        fails(*option, "--threads", "100000", needles=("--threads", "1..1024"))
    for option in (["demo", "-o", t / "demo"], ["pretrain", "--out", t / "pt"]):
        fails(*option, "--seed", "-1", needles=("--seed", "0..4294967295"))
    fails("reproduce", "table1", "--data-root", env["root"], "-o", t / "rep", "--tiny",
          "--seeds", "0,-1", needles=("seed",))
    assert not [p.name for p in t.iterdir() if p.name in ("pt", "sw", "demo", "rep")]


def test_a_run_that_fails_before_its_first_step_leaves_nothing(env, tmp_path):
    """A corrupt training image is only found while the images are cached, after the run
    folder is made: the folder the run created goes (with the parents it created), an
    existing folder is left as it was, and a folder in use by another run is not touched."""
    from vireid.engine.rundir import run_lock

    root = tmp_path / "corrupt"
    shutil.copytree(env["root"], root)
    (root / "cam1" / "0001" / "0001.png").write_bytes(b"")
    args = ["--config", env["cfg"], "--data-root", root, "--threads", "1", "--no-progress",
            f"data.cache_dir={tmp_path / 'cache'}"]
    fails("train", "-o", tmp_path / "a" / "b" / "run", *args, needles=("0001.png",))
    assert not (tmp_path / "a").exists()
    pre = tmp_path / "pre"
    pre.mkdir()
    (pre / "notes.txt").write_text("mine")
    fails("train", "-o", pre, *args, needles=("0001.png",))
    assert _digest(pre) == {"notes.txt": b"mine"} and [p.name for p in pre.iterdir()] == ["notes.txt"]
    # Another process's run: its lock is held, so nothing is cleared, not even with --overwrite.
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "config.yaml").write_text("name: theirs\n")
    (busy / "metrics.jsonl").write_text("")
    lock = run_lock(busy).acquire()
    try:
        before = _digest(busy)
        fails("train", "-o", busy, "--overwrite", *args, needles=("in use",))
        assert _digest(busy) == before
    finally:
        lock.release()

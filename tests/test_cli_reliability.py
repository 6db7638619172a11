"""Reliability classes of issue 16 through the CLI entry point (``vireid.cli.main``, in
process): every bad input or fault ends in one ``error: …`` line naming what was expected and
what was found, exit code 2, and no half-written output.

Classes: config files; output paths that are files, unwritable or on a full disk (a real
tmpfs); option values out of range; two runs into one folder; file names with odd bytes;
dangling symlinks; a closed stdout; -q/-v after the sub-command; --help texts; a real SIGINT
during a checkpoint write.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

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


def test_sigint_during_a_checkpoint_write_is_an_interrupt_and_keeps_the_previous_file(tmp_path):
    """A real SIGINT while torch writes a ~400 MB checkpoint: KeyboardInterrupt (not torch's
    inline_container RuntimeError), no temp file, the previous file byte-identical."""
    script = tmp_path / "saver.py"
    script.write_text(
        "import sys, torch\n"
        "from vireid.utils.atomic import atomic_save_torch\n"
        "path = sys.argv[1]\n"
        "atomic_save_torch({'v': torch.arange(10)}, path)\n"
        "print('ready', flush=True)\n"
        "big = {'x': [torch.randn(1_000_000) for _ in range(100)]}\n"
        "try:\n"
        "    while True:\n"
        "        atomic_save_torch(big, path)\n"
        "        print('saved', flush=True)\n"
        "except KeyboardInterrupt:\n"
        "    print('KeyboardInterrupt', flush=True)\n"
        "except BaseException as exc:\n"
        "    print(type(exc).__name__, str(exc)[:200], flush=True)\n")
    d = tmp_path / "ck"
    d.mkdir()
    target = d / "last.pt"
    proc = subprocess.Popen([sys.executable, str(script), str(target)], stdout=subprocess.PIPE,
                            text=True, env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert proc.stdout.readline().strip() == "ready"
    before = target.read_bytes()
    deadline, sent = time.time() + 60, False
    while time.time() < deadline and proc.poll() is None:
        tmps = [p for p in d.iterdir() if TMP_MARK in p.name]
        try:
            if tmps and tmps[0].stat().st_size > 40_000_000:  # mid-write of ~400 MB
                proc.send_signal(signal.SIGINT)
                sent = True
                break
        except FileNotFoundError:
            pass
        time.sleep(0.001)
    out = proc.communicate(timeout=60)[0].split()
    assert sent
    assert out[-1] == "KeyboardInterrupt", out
    assert [p.name for p in d.iterdir()] == ["last.pt"]  # no temp file left
    if "saved" not in out:
        assert target.read_bytes() == before
    else:  # a whole save finished first: the file is that complete save
        assert torch.load(target, weights_only=True)["x"][0].shape == (1_000_000,)


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

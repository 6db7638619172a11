"""Issue 23, classes 5 and 6 and the report's order, through the CLI entry point.

Class 5 (output writers): a symbolic link is followed and its target written (the link stays
a link); a stream or a FIFO is written in place, never replaced; ``-`` means standard output
for every ``--json FILE``-style option; ``export --overwrite`` replaces only the export's own
files; the report embeds only regular files inside the run folder.

Class 6 (interrupts): a Ctrl-C in the middle of a command that writes many files, followed by
a second Ctrl-C inside its clean-up, leaves nothing. The interrupts are driven from inside the
process by the test hooks of ``vireid.utils.atomic`` (``VIREID_TEST_INTERRUPT_AFTER_FILES``:
a KeyboardInterrupt when the N-th file is complete; ``VIREID_TEST_INTERRUPT_IN_CLEANUP``: a
second one in the middle of the clean-up), so nothing depends on timing; each case first
checks that both interrupts really happened and fails at once, saying so, when they did not.

Also: ``vireid eval`` of a run folder keeps its results in ``RUN/eval/`` and the report shows
them first, the configuration folded at the end.
"""
from __future__ import annotations

import contextlib
import html
import io
import json
import logging
import os
import re
import signal
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from test_sharded_eval import write_checkpoint, write_sysu
from vireid.cli import _all_parsers, build_parser, main
from vireid.utils.atomic import (ENV_INTERRUPT_AFTER_FILES, ENV_INTERRUPT_IN_CLEANUP,
                                 TMP_MARK)

# the in-process CLI runner and the tiny config of the reliability tests, with 2 iterations
from test_cli_reliability import TINY_YAML as _ONE_ITERATION, cli, no_temp  # noqa: E402

TINY_YAML = _ONE_ITERATION.replace("iters_per_epoch: 1,", "iters_per_epoch: 2,")
assert TINY_YAML != _ONE_ITERATION


def ok(*args) -> tuple[str, str]:
    rc, out, err = cli(*args)
    assert rc == 0, f"{args}: rc {rc}\n{out}\n{err}"
    return out, err


def run_process(*args, env: dict | None = None, cwd: Path | None = None,
                timeout: float = 300) -> subprocess.CompletedProcess:
    """``python -m vireid ARGS`` in a fresh process (the interrupt hooks count per process)."""
    full = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", **(env or {}))
    return subprocess.run([sys.executable, "-m", "vireid", *map(str, args)], capture_output=True,
                          text=True, env=full, cwd=cwd, timeout=timeout)


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    t = tmp_path_factory.mktemp("writers")
    root = write_sysu(t / "sysu", train=(1, 2), test=(3, 4))
    ckpt = write_checkpoint(t / "tiny.pt")
    (t / "tiny.yaml").write_text(TINY_YAML)
    return {"t": t, "root": root, "ckpt": ckpt, "cfg": t / "tiny.yaml"}


def _split_args(env) -> list:
    return ["data", "split", "--dataset", "sysu", "--root", env["root"], "--protocol", "all",
            "--trial", "0", "--json"]


# =========================================================================== class 5
def test_a_symlinked_output_writes_its_target_and_stays_a_link(env, tmp_path):
    """eval --json, eval --save-features, data split --out and report -o onto links: the
    link's target receives what a plain file would, the link stays a link."""
    real, links = tmp_path / "real", tmp_path / "links"
    real.mkdir()
    links.mkdir()
    (real / "old.json").write_text("previous content")
    (links / "split.json").symlink_to(real / "old.json")  # an existing target: replaced
    (links / "res.json").symlink_to(real / "new.json")  # a dangling link: its target is made
    (links / "hop.json").symlink_to(links / "res.json")  # a chain of two links
    (links / "feats.pt").symlink_to(real / "feats.pt")
    (links / "page.html").symlink_to(real / "page.html")

    reference = json.loads(ok(*_split_args(env))[0])  # what stdout shows
    ok(*_split_args(env), "--out", links / "split.json")
    assert json.loads((real / "old.json").read_text()) == reference

    ok("eval", "--checkpoint", env["ckpt"], "--data-root", env["root"], "--trials", "0",
       "--json", links / "hop.json", "--save-features", links / "feats.pt")
    res = json.loads((real / "new.json").read_text())
    assert res["protocol"] == "sysu-all" and res["trials"] == [0] and "rank1" in res["mean"]
    feats = torch.load(real / "feats.pt", weights_only=False)
    assert isinstance(feats, dict) and feats

    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.jsonl").write_text(json.dumps({"type": "epoch", "epoch": 1, "loss": 0.5}))
    ok("report", run, "-o", links / "page.html")
    assert (real / "page.html").read_text().startswith("<!DOCTYPE html>")

    for name, target in (("split.json", "old.json"), ("res.json", "new.json"),
                         ("hop.json", "res.json"), ("feats.pt", "feats.pt"),
                         ("page.html", "page.html")):
        link = links / name
        assert link.is_symlink() and Path(os.readlink(link)).name == target, name
    assert no_temp(real) and no_temp(links)
    assert sorted(p.name for p in links.iterdir()) == ["feats.pt", "hop.json", "page.html",
                                                      "res.json", "split.json"]


def test_streams_and_fifos_are_written_in_place(env, tmp_path):
    """/dev/stdout (a link to /proc/self/fd/1; as root, replacing it would break the
    machine's /dev), a link to it, and a FIFO: written in place, never replaced."""
    reference = json.loads(ok(*_split_args(env))[0])
    was_link = os.path.islink("/dev/stdout")
    for target in ("/dev/stdout", tmp_path / "to-stdout"):
        if target != "/dev/stdout":
            target.symlink_to("/dev/stdout")
        proc = run_process(*_split_args(env), "--out", target)
        assert proc.returncode == 0, proc.stderr
        assert json.loads(proc.stdout) == reference, target
    assert os.path.islink("/dev/stdout") == was_link and os.path.exists("/dev/stdout")
    assert os.path.islink(tmp_path / "to-stdout")

    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)  # a reader exists: the open never blocks
    try:
        ok(*_split_args(env), "--out", fifo)
        data = b""
        while True:
            try:
                chunk = os.read(reader, 1 << 16)
            except BlockingIOError:
                break
            if not chunk:
                break
            data += chunk
    finally:
        os.close(reader)
    assert json.loads(data) == reference
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)  # still the FIFO, not a regular file
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pipe", "to-stdout"]


def _json_file_options() -> dict[str, str]:
    """Every command option named --json (or --out/-o of a text output) that takes a value."""
    found = {}
    for p in _all_parsers(build_parser()):
        for action in p._actions:
            if "--json" in action.option_strings and action.nargs != 0:
                found[p.prog] = "--json"
    return found


def test_dash_means_standard_output_for_every_json_file_option(env, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a file named "-" would appear here
    # Every --json that takes a path is covered below; a new one must be added here.
    assert set(_json_file_options()) == {"vireid eval", "vireid bench"}

    rc, out, err = cli("eval", "--checkpoint", env["ckpt"], "--data-root", env["root"],
                       "--trials", "0,1", "--json", "-")
    assert rc == 0, err
    res = json.loads(out)  # stdout holds the JSON alone
    assert res["trials"] == [0, 1] and "R1" in err  # the table went to stderr
    assert res["mean"]["rank1"] == pytest.approx(sum(t["rank1"] for t in res["per_trial"]) / 2)

    import vireid.apps.bench as bench_app

    canned = {"summary": {"paper_pairs_per_s": 1.0, "full_pairs_per_s": 2.0,
                          "speedup_full_vs_paper_per_pair": 2.0, "regdb_full_extrapolated_s": 3.0,
                          "regdb_full_paper_s": 5280.0, "regdb_simplified_s": 0.5,
                          "fraction_of_incache_kernel": None},
              "full": {"max_rel_error_vs_direct": 1e-7}}
    monkeypatch.setattr(bench_app, "run_benchmark", lambda **kw: canned)
    rc, out, err = cli("bench", "--json", "-")
    assert rc == 0, err
    assert json.loads(out) == canned and "pairs/s" in err

    # the text outputs that already defaulted to stdout accept '-' too
    assert json.loads(ok(*_split_args(env), "--out", "-")[0]) == json.loads(ok(*_split_args(env))[0])
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.jsonl").write_text(json.dumps({"type": "epoch", "epoch": 1, "loss": 0.5}))
    page, _ = ok("report", run, "-o", "-")
    assert page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>")
    # a binary output refuses '-' with one error line, before any work
    rc, out, err = cli("eval", "--checkpoint", env["ckpt"], "--data-root", env["root"],
                       "--save-features", "-")
    assert rc == 2 and err.count("error: ") == 1 and "--save-features -" in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]  # no file named "-"


def test_export_overwrite_replaces_only_its_own_files(env, tmp_path):
    out = tmp_path / "onnx"
    ok("-q", "export", "--checkpoint", env["ckpt"], "-o", out, "--no-verify")
    own = ["ccn_pair.onnx", "embed_ir.onnx", "embed_rgb.onnx", "manifest.json"]
    assert sorted(p.name for p in out.iterdir()) == own
    # the user's files, and a file an earlier export listed in its manifest
    (out / "notes.txt").write_text("mine")
    (out / "sub").mkdir()
    (out / "sub" / "keep.onnx").write_bytes(b"user model")
    man = json.loads((out / "manifest.json").read_text())
    man["files"]["retired.onnx"] = {"bytes": 3}
    (out / "manifest.json").write_text(json.dumps(man))
    (out / "retired.onnx").write_bytes(b"old")
    old_rgb = (out / "embed_rgb.onnx").read_bytes()
    rc, _, err = cli("-q", "export", "--checkpoint", env["ckpt"], "-o", out, "--no-verify")
    assert rc == 2 and "--overwrite" in err  # still refused without --overwrite
    ok("-q", "export", "--checkpoint", env["ckpt"], "-o", out, "--no-verify", "--overwrite",
       "--opset", "13")
    assert sorted(p.name for p in out.iterdir()) == [*own[:3], "manifest.json", "notes.txt",
                                                    "sub"]
    assert (out / "notes.txt").read_text() == "mine"
    assert (out / "sub" / "keep.onnx").read_bytes() == b"user model"
    assert json.loads((out / "manifest.json").read_text())["opset"] == 13
    assert (out / "embed_rgb.onnx").read_bytes() != old_rgb  # replaced (another opset)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["onnx"]  # no temp or backup folder


def test_report_embeds_only_regular_files_inside_the_run_folder(tmp_path, caplog):
    from vireid.viz.figures import plot_cmc

    outside = tmp_path / "outside"
    outside.mkdir()
    secret_png = plot_cmc({"secret": [1.0, 2.0, 3.0]}, outside / "secret.png").read_bytes()
    (outside / "secret.yaml").write_text("api_key: SECRET-TOKEN-123\n")
    (outside / "secret.json").write_text(json.dumps({"mean": {"rank1": 77.7777}}))
    run = tmp_path / "run"
    (run / "figures").mkdir(parents=True)
    inside_png = plot_cmc({"mine": [3.0, 2.0, 1.0]}, run / "figures" / "mine.png").read_bytes()
    (run / "loss_curve.png").symlink_to(outside / "secret.png")
    (run / "figures" / "leak.png").symlink_to(outside / "secret.png")
    (run / "config.yaml").symlink_to(outside / "secret.yaml")
    (run / "eval.json").symlink_to(outside / "secret.json")
    (run / "alias.png").symlink_to(run / "figures" / "mine.png")  # a link inside: fine
    os.mkfifo(run / "pipe.png")  # never opened (reading it would block)
    (run / "metrics.jsonl").write_text(json.dumps({"type": "epoch", "epoch": 1, "loss": 0.5}))
    with caplog.at_level(logging.WARNING):
        rc, out, err = cli("report", run, "-o", tmp_path / "r.html")
    assert rc == 0, err
    page = (tmp_path / "r.html").read_text()
    import base64

    assert base64.b64encode(secret_png).decode() not in page
    assert "SECRET-TOKEN-123" not in page and "77.78" not in page
    assert page.count(base64.b64encode(inside_png).decode()) == 2  # figures/mine.png, alias.png
    warned = caplog.text + err
    for name in ("loss_curve.png", "leak.png", "config.yaml", "eval.json"):
        assert re.search(re.escape(name) + r".*outside the run folder", warned), name
    assert "pipe.png: not a regular file" in warned


# =========================================================================== class 6
def _interrupted(args, after: int, cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run a command that is interrupted when its ``after``-th file is complete and again in
    the middle of its clean-up; fail at once, saying which, when an interrupt never came."""
    proc = run_process(*args, cwd=cwd, timeout=timeout,
                       env={ENV_INTERRUPT_AFTER_FILES: str(after), ENV_INTERRUPT_IN_CLEANUP: "1"})
    if proc.returncode == 0:
        pytest.fail(f"precondition not met: the first interrupt never came ({args[0]} wrote "
                    f"fewer than {after} files and finished)\n{proc.stderr[-2000:]}")
    assert proc.returncode == 130, f"rc {proc.returncode}\n{proc.stderr[-3000:]}"
    assert proc.stderr.rstrip().endswith("interrupted"), proc.stderr[-2000:]
    if "interrupted again while removing" not in proc.stderr:
        pytest.fail(f"precondition not met: the second interrupt never came (no clean-up of a "
                    f"temp folder ran)\n{proc.stderr[-2000:]}")
    assert "Traceback" not in proc.stderr
    return proc


def test_interrupted_synth_leaves_nothing_after_a_second_interrupt(tmp_path):
    place = tmp_path / "place"
    place.mkdir()
    _interrupted(["synth", "--layout", "sysu", "--out", place / "s", "--ids", "6"], 12, tmp_path)
    assert list(place.iterdir()) == []  # neither images nor a temp folder


def test_interrupted_pretrain_synthesis_leaves_nothing(tmp_path):
    _interrupted(["pretrain", "-o", tmp_path / "pre", "--ids", "6", "--no-progress"], 12,
                 tmp_path)
    assert list(tmp_path.iterdir()) == []  # not even the output folder it created


def test_interrupted_demo_data_leaves_nothing(tmp_path):
    _interrupted(["demo", "-o", tmp_path / "demo", "--quick", "--no-progress"], 12, tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_interrupted_index_build_and_export_leave_nothing(env, tmp_path):
    place = tmp_path / "place"
    place.mkdir()
    _interrupted(["index", "build", "--checkpoint", env["ckpt"], "--images", env["root"], "-o",
                  place / "ix", "--shard-size", "2", "--no-progress"], 3, tmp_path)
    assert [p.name for p in place.iterdir() if p.name.startswith(("ix", ".ix."))] == []
    _interrupted(["export", "--checkpoint", env["ckpt"], "-o", place / "onnx", "--no-verify"], 1,
                 tmp_path)
    assert [p.name for p in place.iterdir() if p.name.startswith(("onnx", ".onnx."))] == []


def test_a_temp_folder_left_by_a_killed_process_is_removed_next_time(tmp_path):
    """A SIGKILL (no clean-up can run) leaves the temp folder; the next run into the same
    output removes it. The kill comes from inside the writer, at a known point."""
    out = tmp_path / "s"
    script = ("import os, signal, sys\n"
              "from vireid.utils.atomic_dir import atomic_dir\n"
              "with atomic_dir(sys.argv[1]) as tmp:\n"
              "    (tmp / 'cam1').mkdir()\n"
              "    (tmp / 'cam1' / 'x.jpg').write_bytes(b'half')\n"
              "    os.kill(os.getpid(), signal.SIGKILL)\n")
    proc = subprocess.run([sys.executable, "-c", script, str(out)], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    left = [p.name for p in tmp_path.iterdir()]
    if not (len(left) == 1 and left[0].startswith(".s.") and left[0].endswith(TMP_MARK)):
        pytest.fail(f"precondition not met: the killed writer left {left}, expected one temp "
                    f"folder .s.*{TMP_MARK}")
    ok("synth", "--layout", "sysu", "--out", out, "--ids", "4", "--seed", "3")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s"]
    assert (out / "exp" / "test_id.txt").is_file() and any((out / "cam1").rglob("*.jpg"))


# =========================================================================== eval → report
def _eval_table_cells(page: str, heading: str) -> dict[str, list[str]]:
    """The metric rows of the table that follows ``heading`` in the report: metric -> cells."""
    start = page.index(heading)
    table = page[start:page.index("</table>", start)]
    rows = {}
    for row in re.findall(r"<tr>(.*?)</tr>", table):
        cells = [html.unescape(c) for c in re.findall(r"<td[^>]*>(.*?)</td>", row)]
        if cells:
            rows[cells[0]] = cells[1:]
    return rows


def test_eval_keeps_its_results_in_the_run_folder_and_the_report_shows_them_first(env, tmp_path):
    run = tmp_path / "run"
    ok("train", "--config", env["cfg"], "--data-root", env["root"], "-o", run, "--threads", "1",
       "--no-progress", "data.cache_dir=" + str(tmp_path / "cache"))
    ok("eval", "--checkpoint", run, "--data-root", env["root"], "--trials", "0,1",
       "--json", tmp_path / "asked.json")
    kept = run / "eval" / "sysu-all-simplified.json"
    assert kept.is_file() and no_temp(run)
    res = json.loads(kept.read_text())
    assert res == json.loads((tmp_path / "asked.json").read_text())
    # --no-save keeps nothing; a checkpoint file (not a run folder) keeps nothing either
    ok("eval", "--checkpoint", run, "--data-root", env["root"], "--trials", "0",
       "--scoring", "full", "--no-save")
    ok("eval", "--checkpoint", run / "checkpoints" / "last.pt", "--data-root", env["root"],
       "--trials", "0", "--scoring", "full")
    assert sorted(p.name for p in (run / "eval").iterdir()) == ["sysu-all-simplified.json"]

    ok("report", run, "-o", tmp_path / "r.html")
    page = (tmp_path / "r.html").read_text()
    heading = "eval/sysu-all-simplified.json"
    assert heading in page
    config_at = page.index("<h3>Configuration</h3>")
    assert page.index(heading) < page.index("<h3>Training</h3>") < config_at
    assert "<details><summary>config.yaml</summary>" in page  # folded, not open
    assert page.index("<details>") > config_at
    cells = _eval_table_cells(page, heading)
    for metric in ("rank1", "mAP", "mINP"):
        want = [res["mean"][metric], res["std"][metric]] + [t[metric] for t in res["per_trial"]]
        assert cells[metric] == [f"{v:.2f}" if abs(v) >= 0.01 or v == 0 else f"{v:.4g}"
                                 for v in want], metric

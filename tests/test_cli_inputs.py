"""Reliability classes 3, 4 and 7 of issue 23 through the CLI entry point (``vireid.cli.main``,
in process).

3. Loaders are equally strict: one rule for every layout (data/layout_checks.py): id files
   read as the reference code reads them (one comma-separated line) or refused; id folders
   spelled as the reference builds them (``%04d``) or refused; every listed path of the right
   kind; every listed id with images; unused entries counted in one warning.
4. Messages have limits: echoed values are cut to a prefix with their size; YAML alias
   expansion is bounded; pretrained weights are refused with the checkpoint reader's short
   reason.
7. YAML 1.1 and the command line: documented words (``amp: off``) accepted as written,
   duplicate keys refused, KEY=VALUE overrides accepted anywhere after the command.

Plus seeded fuzzing of the new input kinds: SYSU-MM01 and LLCM id files and folder trees,
and YAML files with anchors, aliases, repeated keys and YAML 1.1 words.
"""
from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path

import pytest
import torch
import yaml

from conftest import assert_handled
from test_sharded_eval import write_checkpoint, write_sysu
from vireid.cli import _all_parsers, build_parser
from vireid.data.synthetic import generate

# the reliability tests' in-process CLI runner, failure check and tiny config
from test_cli_reliability import TINY_YAML, cli, fails  # noqa: E402

#: An error line never needs more than this: a temporary path, the allowed keys of a
#: section and a short echo of a value (the alias bomb of the issue gave 254 MB).
SHORT_LINE = 600


def warnings_of(err: str) -> list[str]:
    return [ln for ln in err.splitlines() if ln.startswith("WARNING")]


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    t = tmp_path_factory.mktemp("inputs")
    sysu = write_sysu(t / "sysu", train=(1, 2), test=(3, 4))
    llcm = t / "llcm"
    generate("llcm", llcm, ids=6, seed=0, images_per_camera=(1, 2), rgb_size=(64, 32),
             ir_size=(64, 32))
    regdb = t / "regdb"
    generate("regdb", regdb, ids=4, seed=0, rgb_size=(64, 32), ir_size=(64, 32))
    (t / "tiny.yaml").write_text(TINY_YAML)
    return {"t": t, "sysu": sysu, "llcm": llcm, "regdb": regdb, "cfg": t / "tiny.yaml",
            "ckpt": write_checkpoint(t / "tiny.pt")}


def copy_of(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst, symlinks=True)
    return dst


def sysu_summary(root: Path) -> tuple[int, str, str]:
    return cli("data", "summary", "--dataset", "sysu", "--root", root, "--json")


def llcm_split_args(root: Path) -> list:
    """``vireid data split`` of LLCM trial 0 (i2v: all NIR queries, sampled VIS gallery):
    the loader and a protocol's lists, as evaluation reads them."""
    return ["data", "split", "--dataset", "llcm", "--root", root, "--protocol", "i2v",
            "--trial", "0", "--json"]


def reference_ids(path: Path) -> list[int]:
    """The reference loader's reading of a SYSU/LLCM id file (AGW data_manager.py)."""
    with open(path) as f:
        lines = f.read().splitlines()
    return sorted(int(y) for y in lines[0].split(","))


def any_id_folder(root: Path, tree: str, pid: int) -> Path:
    """The first ``camK/PPPP`` folder of id ``pid`` under ``root/tree`` (a literal walk)."""
    for cam in sorted((root / tree).glob("cam*")) if tree else sorted(root.glob("cam*")):
        d = cam / f"{pid:04d}"
        if d.is_dir():
            return d
    raise AssertionError(f"no folder of id {pid} under {root / tree}")


# =========================================================================== class 3
def test_valid_layouts_read_the_ids_as_the_reference_and_produce_existing_paths(env, tmp_path):
    root = env["sysu"]
    rc, out, err = sysu_summary(root)
    assert rc == 0, err
    summary = json.loads(out)
    for split in ("train", "val", "test"):
        want = reference_ids(root / "exp" / f"{split}_id.txt")
        assert summary["splits"][split]["ids"] == len(want)
    # every path that `data split` prints exists, as printed
    rc, out, err = cli("data", "split", "--dataset", "sysu", "--root", root, "--protocol", "all",
                       "--trial", "0", "--json")
    assert rc == 0, err
    lists = json.loads(out)
    paths = [p for part in ("query", "gallery") for p, _, _ in lists[part]]
    assert paths and all((root / p).is_file() for p in paths)
    # every test id has IR images here, so the query holds exactly the reference's test ids
    assert {pid for _, pid, _ in lists["query"]} == set(reference_ids(root / "exp" /
                                                                      "test_id.txt"))
    # LLCM: the valid tree loads without a warning, every printed path exists, and every
    # test id of the reference's reading has images in both lists (the synthetic layout
    # gives every id both modalities)
    llcm = env["llcm"]
    rc, out, err = cli(*llcm_split_args(llcm))
    assert rc == 0 and not warnings_of(err), err
    lists = json.loads(out)
    assert all((llcm / p).is_file() for part in ("query", "gallery") for p, _, _ in lists[part])
    want = set(reference_ids(llcm / "idx" / "test_id.txt"))
    assert {pid for _, pid, _ in lists["query"]} == want
    assert {pid for _, pid, _ in lists["gallery"]} == want
    rc, out, err = cli("data", "summary", "--dataset", "llcm", "--root", llcm, "--json")
    assert rc == 0 and not warnings_of(err), err


def test_id_files_on_several_lines_are_refused_in_every_layout(env, tmp_path):
    # SYSU: the ids one per line (the reference reads line 1 only: 3 ids would vanish)
    root = copy_of(env["sysu"], tmp_path / "sysu")
    (root / "exp" / "test_id.txt").write_text("3\n4\n")
    fails("data", "summary", "--dataset", "sysu", "--root", root,
          needles=("test_id.txt", "one comma-separated line", "found 2 non-empty lines"))
    fails("data", "split", "--dataset", "sysu", "--root", root, "--protocol", "all",
          "--trial", "0", needles=("test_id.txt", "found 2 non-empty lines"))
    # the same rule for LLCM's idx/test_id.txt
    llcm = copy_of(env["llcm"], tmp_path / "llcm")
    ids = reference_ids(llcm / "idx" / "test_id.txt")
    (llcm / "idx" / "test_id.txt").write_text("\n".join(map(str, ids)) + "\n")
    fails(*llcm_split_args(llcm), needles=("test_id.txt", f"found {len(ids)} non-empty lines"))
    fails("data", "summary", "--dataset", "llcm", "--root", llcm,
          needles=("test_id.txt", f"found {len(ids)} non-empty lines"))
    # tokens the reference cannot read as ids are named
    (root / "exp" / "test_id.txt").write_text("3,-4\n")
    fails("data", "summary", "--dataset", "sysu", "--root", root, needles=("'-4'",))


def test_id_folders_not_zero_padded_are_refused_in_every_layout(env, tmp_path):
    root = copy_of(env["sysu"], tmp_path / "sysu")
    (root / "cam1" / "0003").rename(root / "cam1" / "3")
    for args in (("data", "summary", "--dataset", "sysu", "--root", root),
                 ("data", "split", "--dataset", "sysu", "--root", root, "--protocol", "all",
                  "--trial", "0"),
                 ("eval", "--checkpoint", env["ckpt"], "--data-root", root, "--trials", "0")):
        fails(*args, needles=("cam1/3", "expected 0003", "'%04d'"))
    llcm = copy_of(env["llcm"], tmp_path / "llcm")
    pid = reference_ids(llcm / "idx" / "test_id.txt")[0]
    folder = any_id_folder(llcm, "test_nir", pid)
    folder.rename(folder.parent / str(pid))
    fails(*llcm_split_args(llcm), needles=(f"{folder.parent.name}/{pid}", f"expected {pid:04d}"))


def test_paths_of_the_wrong_kind_are_refused_in_every_layout(env, tmp_path):
    # a camera folder that is a file
    root = copy_of(env["sysu"], tmp_path / "sysu")
    shutil.rmtree(root / "cam2")
    (root / "cam2").write_text("")
    fails("data", "summary", "--dataset", "sysu", "--root", root,
          needles=("cam2 is a file",))
    llcm = copy_of(env["llcm"], tmp_path / "llcm")
    shutil.rmtree(llcm / "test_vis" / "cam3")
    (llcm / "test_vis" / "cam3").write_text("")
    fails(*llcm_split_args(llcm), needles=("test_vis", "cam3: a file"))
    # the id folder of a listed id that is a file
    root = copy_of(env["sysu"], tmp_path / "sysu2")
    shutil.rmtree(root / "cam6" / "0004")
    (root / "cam6" / "0004").write_text("")
    fails("data", "summary", "--dataset", "sysu", "--root", root,
          needles=("cam6/0004 is a file", "listed ids"))
    llcm = copy_of(env["llcm"], tmp_path / "llcm2")
    pid = reference_ids(llcm / "idx" / "test_id.txt")[-1]
    folder = any_id_folder(llcm, "test_vis", pid)
    shutil.rmtree(folder)
    folder.write_text("")
    fails(*llcm_split_args(llcm), needles=(f"{pid:04d} is a file",))
    # a split file that is a folder
    root = copy_of(env["sysu"], tmp_path / "sysu3")
    (root / "exp" / "val_id.txt").unlink()
    (root / "exp" / "val_id.txt").mkdir()
    fails("data", "summary", "--dataset", "sysu", "--root", root,
          needles=("val_id.txt", "found a folder"))
    # RegDB: a listed image that is a folder, an index file that is a folder
    regdb = copy_of(env["regdb"], tmp_path / "regdb")
    first = (regdb / "idx" / "test_thermal_1.txt").read_text().split()[0]
    (regdb / first).unlink()
    (regdb / first).mkdir()
    fails("data", "summary", "--dataset", "regdb", "--root", regdb,
          needles=(f"{first}: a folder", "test_thermal_1.txt"))
    (regdb / "idx" / "train_visible_2.txt").unlink()
    (regdb / "idx" / "train_visible_2.txt").mkdir()
    fails("data", "summary", "--dataset", "regdb", "--root", regdb,
          needles=("train_visible_2.txt is a folder",))


def test_listed_ids_without_images_are_refused_in_every_layout(env, tmp_path):
    root = copy_of(env["sysu"], tmp_path / "sysu")
    (root / "exp" / "test_id.txt").write_text("3,4,77\n")
    fails("data", "summary", "--dataset", "sysu", "--root", root, needles=("0077",))
    llcm = copy_of(env["llcm"], tmp_path / "llcm")
    ids = reference_ids(llcm / "idx" / "test_id.txt")
    (llcm / "idx" / "test_id.txt").write_text(",".join(map(str, ids + [77])) + "\n")
    fails(*llcm_split_args(llcm), needles=("0077", "test_id.txt", "no images"))


def test_unused_entries_are_counted_in_one_warning_in_every_layout(env, tmp_path):
    root = copy_of(env["sysu"], tmp_path / "sysu")
    os.symlink(tmp_path / "gone.png", root / "cam1" / "0003" / "0009.png")
    (root / "cam3" / "0004" / "notes.txt").write_text("x")
    (root / "cam2" / "README").write_text("x")
    (root / "cam2" / "0055").mkdir()  # an id folder without images
    (root / "cam1" / ".DS_Store").write_text("hidden: never counted")
    rc, out, err = sysu_summary(root)
    assert rc == 0, err
    (line,) = warnings_of(err)
    for needle in ("1 image link(s) whose target does not exist", "1 entries that are not "
                   "image files", "1 entries that are not id folders", "1 id folders without "
                   "images", "(4 in all)", "0009.png"):
        assert needle in line, line
    assert ".DS_Store" not in line
    llcm = copy_of(env["llcm"], tmp_path / "llcm")
    pid = reference_ids(llcm / "idx" / "test_id.txt")[0]
    folder = any_id_folder(llcm, "test_vis", pid)
    os.symlink(tmp_path / "gone.jpg", folder / "zz.jpg")
    (llcm / "test_nir" / "notes").write_text("x")
    rc, out, err = cli(*llcm_split_args(llcm))
    assert rc == 0, err
    (line,) = warnings_of(err)
    assert "1 image link(s) whose target does not exist" in line and "zz.jpg" in line, line
    assert "1 entries that are not camera folders" in line and "(2 in all)" in line, line


def test_llcm_test_lists_with_other_paths_load_with_one_warning(env, tmp_path):
    # idx/test_vis.txt / test_nir.txt are read but no protocol uses them: a release whose
    # lists spell paths another way (here under a top folder "LLCM/") still loads, the
    # paths are counted in the one warning, and the protocol lists are those of the tree.
    rc, out, err = cli(*llcm_split_args(env["llcm"]))
    assert rc == 0, err
    valid = json.loads(out)
    llcm = copy_of(env["llcm"], tmp_path / "llcm")
    moved = 0
    for name in ("test_vis.txt", "test_nir.txt"):
        lines = (llcm / "idx" / name).read_text().splitlines()
        moved += len([ln for ln in lines if ln.strip()])
        (llcm / "idx" / name).write_text("".join(f"LLCM/{ln}\n" for ln in lines if ln.strip()))
    rc, out, err = cli(*llcm_split_args(llcm))
    assert rc == 0, err
    assert json.loads(out) == valid
    (line,) = warnings_of(err)
    assert f"ignoring {moved} paths in idx/test_vis.txt or idx/test_nir.txt that are not " \
           f"files" in line and "LLCM/test_" in line, line
    rc, out, err = cli("data", "summary", "--dataset", "llcm", "--root", llcm, "--json")
    assert rc == 0 and len(warnings_of(err)) == 1, err
    # the training lists are used: a path they list that is not a file is refused
    first = (llcm / "idx" / "train_vis.txt").read_text().split()[0]
    (llcm / first).unlink()
    fails(*llcm_split_args(llcm), needles=("train_vis.txt", f"{first}: nothing"))


# =========================================================================== class 4
def _bomb(levels: int) -> str:
    """A "billion laughs" config under a known key: ``model.arch`` is a list whose last item
    expands to 10**levels strings (each item names the one before it ten times)."""
    items = ["&x0 [" + ", ".join(["'lol'"] * 10) + "]"]
    for k in range(1, levels):
        items.append(f"&x{k} [" + ", ".join([f"*x{k - 1}"] * 10) + "]")
    return "model:\n  arch: [" + ", ".join(items) + "]\n"


def test_yaml_alias_expansion_is_bounded_and_names_the_file(env, tmp_path):
    cfg = tmp_path / "bomb.yaml"
    # 10**9 strings once expanded: refused before anything walks it
    cfg.write_text(_bomb(9))
    line = fails("info", "--config", cfg, needles=("bomb.yaml", "at most 10,000 YAML nodes"))
    assert len(line) < SHORT_LINE
    # in an override too
    fails("info", "--config", env["cfg"],
          "model.arch=[&a [1,1,1,1,1,1,1,1,1,1], &b [*a,*a,*a,*a,*a,*a,*a,*a,*a,*a], "
          "&c [*b,*b,*b,*b,*b,*b,*b,*b,*b,*b], [*c,*c,*c,*c,*c,*c,*c,*c,*c,*c]]",
          needles=("override", "at most 10,000 YAML nodes"))
    # an anchor used inside itself
    (tmp_path / "loop.yaml").write_text("model: &m\n  arch: *m\n")
    fails("info", "--config", tmp_path / "loop.yaml", needles=("loop.yaml", "inside itself"))


def test_echoed_values_are_cut_with_their_size(env, tmp_path):
    cfg = tmp_path / "small_bomb.yaml"  # 1,000 strings: under the bound, too long to echo
    cfg.write_text(_bomb(3))
    line = fails("info", "--config", cfg, needles=("model.arch: expected str", "[['lol', ",
                                                   "… (a list of 3 items)"))
    assert len(line) < SHORT_LINE
    long = "9" * 100_000
    line = fails("info", "--config", env["cfg"], f"train.epochs=x{long}",
                 needles=("train.epochs: expected int", "(a str of 100001 characters)"))
    assert len(line) < SHORT_LINE
    line = fails("info", "--config", env["cfg"], f"model.shared_stages={long}x",
                 needles=("model.shared_stages", "(a str of 100001 characters)"))
    assert len(line) < SHORT_LINE
    # (an explicit key: YAML limits implicit ones to 1024 characters)
    (tmp_path / "key.yaml").write_text(f"train:\n  ? {'k' * 50_000}\n  : 1\n")
    line = fails("info", "--config", tmp_path / "key.yaml",
                 needles=("unknown config key", "(a str of 50006 characters)"))
    assert len(line) < SHORT_LINE
    # integer options of the command line (argparse types) echo through the same cut
    line = fails("info", "--config", env["cfg"], "--num-classes", "9" * 5000,
                 needles=("--num-classes", "(a str of 5000 characters)"))
    assert len(line) < SHORT_LINE
    line = fails("pretrain", "-o", tmp_path / "p", "--seed", "9" * 100,
                 needles=("--seed", "in 0..4294967295", "an int of about"))
    assert len(line) < SHORT_LINE
    root = copy_of(env["sysu"], tmp_path / "sysu")
    (root / "exp" / "test_id.txt").write_text("3," + "x" * 50_000 + "\n")
    line = fails("data", "summary", "--dataset", "sysu", "--root", root,
                 needles=("test_id.txt", "(a str of 50000 characters)"))
    assert len(line) < SHORT_LINE


def test_list_settings_file_reads_yaml_as_config_files_do(env, tmp_path):
    # vireid-list.yaml (the list-file data set) goes through the same YAML reader: a key
    # given twice is refused (YAML would keep the last rule silently), an alias bomb is not
    # expanded, and an odd value is echoed cut with its size
    root = tmp_path / "list"
    generate("list", root, ids=6, seed=0, images_per_camera=(1, 2), rgb_size=(64, 32),
             ir_size=(64, 32))
    settings = root / "vireid-list.yaml"
    check = ("data", "check", "--dataset", "list", "--root", root)
    settings.write_text("metric: sysu\nmetric: regdb\n")
    fails(*check, needles=("vireid-list.yaml", "key 'metric' is given twice",
                           "line 1 and line 2"))
    settings.write_text(_bomb(9).replace("model:\n  arch:", "metric:"))
    line = fails(*check, needles=("vireid-list.yaml", "at most 10,000 YAML nodes"))
    assert len(line) < SHORT_LINE
    settings.write_text(_bomb(3).replace("model:\n  arch:", "metric:"))
    line = fails(*check, needles=("metric: expected a metric rule", "… (a list of 3 items)"))
    assert len(line) < SHORT_LINE
    settings.write_text("metric: sysu\n")
    rc, out, err = cli(*check)
    assert rc == 0, err


class _RunsACommand:
    """Pickled as a call of os.system: a loader that ran it would create ``MARK``."""

    def __init__(self, mark: Path) -> None:
        self.mark = mark

    def __reduce__(self):
        return (os.system, (f"touch {self.mark}",))


def test_pretrained_weights_are_refused_with_the_checkpoint_readers_short_reason(env, tmp_path):
    mark = tmp_path / "MARK"
    evil = tmp_path / "evil.pth"
    torch.save({"conv1.weight": _RunsACommand(mark)}, evil)
    ckpt_line = fails("eval", "--checkpoint", evil, "--data-root", env["sysu"],
                      needles=("cannot read checkpoint",))
    pre_line = fails("train", "--config", env["cfg"], "--data-root", env["sysu"], "-o",
                     tmp_path / "run", f"model.pretrained={evil}",
                     needles=("cannot read pretrained weights", "evil.pth"))
    for line in (ckpt_line, pre_line):
        assert "weights_only" not in line and "Re-running" not in line, line
        assert "UnpicklingError: Trying to load unsupported GLOBAL" in line, line
        assert len(line) < SHORT_LINE
    # the same reason, word for word, after "found"
    assert ckpt_line.split("found ")[-1].rstrip(")") == pre_line.split("found ")[-1]
    assert not mark.exists()


# =========================================================================== class 7
def test_documented_words_are_accepted_as_written(env, tmp_path):
    cfg = tmp_path / "amp.yaml"
    cfg.write_text(TINY_YAML.replace("seed: 0}", "seed: 0, amp: off}"))
    for k, args in enumerate(((cfg,), (env["cfg"], "train.amp=off"),
                              (env["cfg"], "train.amp=OFF"))):
        run = tmp_path / f"run{k}"
        rc, out, err = cli("train", "--config", *args, "--data-root", env["sysu"], "-o", run,
                           "--no-progress")
        assert rc == 0, err
        saved = yaml.safe_load((run / "config.yaml").read_text())
        assert saved["train"]["amp"] == "off"
    # a word that is no documented value of the option: refused, saying to quote it
    fails("info", "--config", env["cfg"], "train.amp=yes",
          needles=("train.amp", "found True (bool)", "quote"))
    (tmp_path / "name.yaml").write_text("name: no\n")
    fails("info", "--config", tmp_path / "name.yaml", needles=("name: expected str", "quote"))


def test_duplicate_keys_are_refused_naming_the_key_and_lines(env, tmp_path):
    cfg = tmp_path / "two_data.yaml"
    cfg.write_text(TINY_YAML + "data: {dataset: regdb}\n")
    first = 1 + TINY_YAML.splitlines().index(next(ln for ln in TINY_YAML.splitlines()
                                                  if ln.startswith("data:")))
    last = len(TINY_YAML.splitlines()) + 1
    fails("info", "--config", cfg, needles=("two_data.yaml", "key 'data' is given twice",
                                            f"line {first} and line {last}"))
    fails("info", "--config", env["cfg"], "train={lr: 0.1, lr: 0.2}",
          needles=("override", "key 'lr' is given twice"))
    fails("info", "--config", env["cfg"], "train.lr=0.1", "--json", "train.lr=0.2",
          needles=("train.lr is given twice",))
    # YAML's own way of extending a mapping (a merge key) is not a duplicate
    (tmp_path / "merge.yaml").write_text(
        TINY_YAML.replace("ccn: {kernel_size: [2, 2], stride: [1, 1], padding: 1}",
                          "ccn: {<<: {kernel_size: [2, 2], padding: 0}, padding: 1}"))
    rc, out, err = cli("info", "--config", tmp_path / "merge.yaml", "--json")
    assert rc == 0, err


#: A command line for every command that takes KEY=VALUE overrides, with the overrides
#: placed between the options (where argparse used to refuse them).
OVERRIDE_COMMANDS = {
    "info": ["info", "a.b=1", "--config", "C", "c.d=2", "--json", "e.f=3"],
    "train": ["train", "--config", "C", "a.b=1", "--data-root", "D", "c.d=2", "-o", "R",
              "e.f=3"],
    "sweep": ["sweep", "a.b=1", "--config", "C", "c.d=2", "--data-root", "D", "-o", "O",
              "e.f=3"],
    "pretrain": ["pretrain", "-o", "O", "a.b=1", "--ids", "5", "c.d=2", "--json", "e.f=3"],
    "reproduce": ["reproduce", "table1", "a.b=1", "-o", "O", "c.d=2", "--tiny", "e.f=3"],
}


def test_overrides_are_accepted_anywhere_in_every_command_that_takes_them(env, tmp_path):
    parser = build_parser()
    takes = {p.prog.split()[-1] for p in _all_parsers(parser)
             if any(a.dest == "overrides" for a in p._actions)}
    assert takes == set(OVERRIDE_COMMANDS)
    for name, argv in OVERRIDE_COMMANDS.items():
        args = build_parser().parse_args(argv)
        assert args.overrides == ["a.b=1", "c.d=2", "e.f=3"], (name, args.overrides)
        # anything else is still refused, with one line
        fails(*argv, "--bogus", needles=(f"vireid {name}", "--bogus"))
    # the command line, end to end
    run = tmp_path / "run"
    rc, out, err = cli("train", "--config", env["cfg"], "loss.kind=idl", "--data-root",
                       env["sysu"], "-o", run, "--no-progress")
    assert rc == 0, err
    assert yaml.safe_load((run / "config.yaml").read_text())["loss"]["kind"] == "idl"
    # a word that is neither an option nor KEY=VALUE is named with the form expected
    fails("info", "--config", env["cfg"], "--json", "stray", needles=("'stray'", "KEY=VALUE"))


# =========================================================================== fuzzing
SEED = int(os.environ.get("VIREID_FUZZ_SEED", "23"))

#: Fragments a YAML mutation inserts: anchors and aliases, merge keys, YAML 1.1 words,
#: repeated keys, odd bytes and numbers out of every range.
YAML_FRAGMENTS = [b"&a ", b"*a", b"<<: *a\n", b"&b [*a, *a, *a]", b"off", b"yes", b"on",
                  b"no", b"\ndata: {}\n", b"\ntrain: {amp: off}\n", b"\nmodel: *a\n", b"{",
                  b"]", b"\n", b",", b":", b"-1", b"1e400", b".nan", b"99999999999",
                  b"!!python/object:os.system", b"\xff", b"\x00", b"~", b"'", b"2024-13-45"]

ID_FRAGMENTS = [b"\n", b",", b", ", b"-1", b"007", b"x", b"\xff", b"\x00", b"99999", b" ",
                b"\r\n", b"1e3", b"+4", b"\t", b"3,3"]


def _mutate(data: bytes, fragments: list[bytes], rng: random.Random) -> bytes:
    for _ in range(rng.randint(1, 3)):
        op = rng.randrange(5)
        i = rng.randrange(len(data) + 1)
        if op == 0 and data:
            data = data[:i] + data[i + rng.randint(1, 8):]
        elif op in (1, 2):
            data = data[:i] + rng.choice(fragments) + data[i:]
        elif op == 3:
            lines = data.split(b"\n")
            j = rng.randrange(len(lines))
            lines.insert(j, lines[j])  # a duplicated line: a repeated key or id line
            data = b"\n".join(lines)
        else:
            data = data[:i]
    return data


def _mutate_tree(root: Path, trees: list[Path], rng: random.Random, tmp: Path) -> str:
    """One random change of the folder tree (what a user's copy might hold); returns what."""
    cams = [c for t in trees for c in sorted(t.glob("cam*")) if c.is_dir()]
    cam = rng.choice(cams)
    ids = sorted(d for d in cam.iterdir() if d.is_dir())
    op = rng.randrange(7)
    if op == 0 and ids:  # an id folder without zero padding
        d = rng.choice(ids)
        d.rename(d.parent / str(int(d.name)))
        return f"unpadded {d}"
    if op == 1 and ids:  # an id folder replaced by a file
        d = rng.choice(ids)
        shutil.rmtree(d)
        d.write_text("")
        return f"file {d}"
    if op == 2:  # a camera folder replaced by a file
        shutil.rmtree(cam)
        cam.write_text("")
        return f"camera file {cam}"
    if op == 3 and ids:  # a dangling image link
        os.symlink(tmp / "gone.jpg", rng.choice(ids) / "zz.jpg")
        return "dangling link"
    if op == 4 and ids:  # an id folder emptied
        d = rng.choice(ids)
        for f in d.iterdir():
            f.unlink()
        return f"emptied {d}"
    if op == 5:  # stray entries
        (cam / "notes.txt").write_text("x")
        (cam / "0abc").mkdir()
        return "stray entries"
    (cam / "00001").mkdir()  # an id spelled with five digits
    return "five digits"


def _check(args: list, what: str) -> int:
    try:
        rc, out, err = cli(*args)
    except BaseException as exc:  # noqa: BLE001 - the property under test
        raise AssertionError(f"{what}: uncaught {type(exc).__name__}: {exc}\nargs {args}") from exc
    errors = assert_handled(rc, err, what)
    assert all(len(e) < 2000 for e in errors), f"{what}: error lines\n{err}"
    unused = [w for w in warnings_of(err) if ": ignoring " in w]
    assert len(unused) <= 1, f"{what}: unused entries reported in more than one warning\n{err}"
    return rc


def test_fuzz_id_files_of_sysu_and_llcm(env, tmp_path):
    rng = random.Random(SEED)
    sysu = copy_of(env["sysu"], tmp_path / "sysu")
    llcm = copy_of(env["llcm"], tmp_path / "llcm")
    files = [*sorted((sysu / "exp").glob("*_id.txt")), llcm / "idx" / "test_id.txt"]
    originals = {p: p.read_bytes() for p in files}
    seen = set()
    for k in range(16):
        victim = rng.choice(files)
        victim.write_bytes(_mutate(originals[victim], ID_FRAGMENTS, rng))
        args = (llcm_split_args(llcm) if victim.is_relative_to(llcm) else
                ["data", "summary", "--dataset", "sysu", "--root", sysu])
        seen.add(_check(args, f"id file case {k}: {victim.name}: {victim.read_bytes()[:200]!r}"))
        victim.write_bytes(originals[victim])
    assert 2 in seen


def test_fuzz_folder_trees_of_sysu_and_llcm(env, tmp_path):
    rng = random.Random(SEED + 1)
    seen = set()
    for k in range(12):
        if k % 2:
            root = copy_of(env["llcm"], tmp_path / f"llcm{k}")
            what = _mutate_tree(root, [root / "test_vis", root / "test_nir"], rng, tmp_path)
            args = llcm_split_args(root)
        else:
            root = copy_of(env["sysu"], tmp_path / f"sysu{k}")
            what = _mutate_tree(root, [root], rng, tmp_path)
            args = (["data", "split", "--dataset", "sysu", "--root", root, "--protocol",
                     "all", "--trial", "0", "--json"] if k % 4 else
                    ["data", "summary", "--dataset", "sysu", "--root", root])
        rc = _check(args, f"tree case {k}: {what}")
        seen.add(rc)
        if rc == 0 and "split" in args:  # whatever was accepted: its paths exist
            rc, out, _ = cli(*args)
            lists = json.loads(out)
            assert all((root / p).is_file() for part in lists.values() for p, _, _ in part)
    assert 2 in seen


#: Valid configs built from the same pieces the YAML fuzzing inserts (each must load).
YAML_CONTROLS = [
    TINY_YAML.replace("seed: 0}", "seed: 0, amp: off}"),
    TINY_YAML.replace("lr_milestones: [1]", "lr_milestones: &m [1]") + "loss: {kind: ccn}\n",
    TINY_YAML.replace("ccn: {", "ccn: {<<: {padding: 0}, "),
    TINY_YAML + "loss: &l {kind: ccn}\n",
]


def test_fuzz_yaml_with_aliases_repeated_keys_and_words(env, tmp_path):
    rng = random.Random(SEED + 2)
    f = tmp_path / "fuzz.yaml"
    for k, text in enumerate(YAML_CONTROLS):
        f.write_text(text)
        assert _check(["info", "--config", f, "--json", "-q"], f"control {k}") == 0
    seen = set()
    for k in range(24):
        f.write_bytes(_mutate(rng.choice(YAML_CONTROLS).encode(), YAML_FRAGMENTS, rng))
        seen.add(_check(["info", "--config", f, "--json", "-q"],
                        f"yaml case {k}: {f.read_bytes()[:300]!r}"))
    assert 2 in seen

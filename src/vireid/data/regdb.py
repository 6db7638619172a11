"""RegDB: the loader of the layout as downloaded, its protocols, its summary, its synthetic
layout and its registry entry (``data.dataset=regdb``).

Layout::

    <root>/Visible/<id>/*.bmp, <root>/Thermal/<id>/*.bmp
    <root>/idx/{train,test}_{visible,thermal}_{1..10}.txt   lines "<path relative to root> <label>"

Trial t trains on ``train_*_t`` (labels 0..205 in the real files) and tests on ``test_*_t``.
A record's ``pid`` is the label of its index line; ``camid`` is 1 (visible) or 2 (thermal).
A model belongs to one trial (``data.trial``, 1..10): the trials' training ids differ.

Protocols: trial t (1..10) lists ``test_visible_t`` and ``test_thermal_t`` in file order;
v2t queries the visible list against the thermal one, t2v swaps the roles (the reference's
``--tvsearch``). Metric: ``eval_regdb`` (nothing removed, textbook CMC).

The rules of :mod:`vireid.data.layout_checks` hold: ``Visible/``, ``Thermal/``, ``idx/`` and
every index file present must be of the right kind, and every listed image a file. RegDB
names its images by path in the index files, so its folders are not scanned (there are no
id folders to spell and nothing unlisted to count).
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Literal

from vireid.data.indexfile import read_path_labels
from vireid.data.layout_checks import check_listed_files, kind_of, require_folder
from vireid.data.records import IR, RGB, EvalSplit, ImageRecord, TrainSplit
from vireid.data.registry import Protocol, SyntheticLayout, TrialRule, register_dataset
from vireid.data.synthetic import SynthJob, SynthPlan, SynthRequest
from vireid.data.synthetic_render import TAG_PLAN, make_camera, make_identity, make_pools, seeded_rng
from vireid.errors import ConfigError, DataError
from vireid.utils.atomic import atomic_write_text
from vireid.utils.messages import echo

log = logging.getLogger(__name__)

TRIALS = tuple(range(1, 11))
VISIBLE_CAM = 1
THERMAL_CAM = 2


def read_index(path: Path, root: Path, camid: int, modality: str,
               check_files: bool = True) -> list[ImageRecord]:
    """Records of one ``idx`` file, in file order.

    Each non-empty line must be ``<relative path> <integer label>``; with ``check_files``
    every listed path must be a file (:func:`~vireid.data.layout_checks.check_listed_files`).
    """
    out = [ImageRecord(rel, label, camid, modality) for rel, label in read_path_labels(path)]
    if check_files:
        check_listed_files(root, (r.path for r in out), path)
    return out


def _check_trial(trial: int) -> int:
    if isinstance(trial, bool) or not isinstance(trial, int) or trial not in TRIALS:
        raise ConfigError(f"RegDB trial must be an integer in 1..10, got {echo(trial)}")
    return trial


@dataclass
class RegdbDataset:
    """A loaded RegDB folder. ``trials``: trial numbers whose four index files exist."""

    root: Path
    trials: list[int]
    check_files: bool = True

    def _idx(self, split: str, modality: str, trial: int) -> Path:
        return self.root / "idx" / f"{split}_{modality}_{trial}.txt"

    def train(self, trial: int) -> TrainSplit:
        """Training split of ``trial`` (1..10); labels as in the files, which must be
        contiguous 0..K-1 and the same set in both modalities."""
        t = _check_trial(trial)
        rgb = read_index(self._idx("train", "visible", t), self.root, VISIBLE_CAM, RGB,
                         self.check_files)
        ir = read_index(self._idx("train", "thermal", t), self.root, THERMAL_CAM, IR,
                        self.check_files)
        ids_v = {r.pid for r in rgb}
        ids_t = {r.pid for r in ir}
        if ids_v != ids_t:
            raise DataError(f"RegDB trial {t}: train_visible and train_thermal label sets differ "
                            f"({len(ids_v)} vs {len(ids_t)} labels, e.g. "
                            f"{sorted(ids_v ^ ids_t)[:5]} in only one)")
        labels = sorted(ids_v)
        if labels != list(range(len(labels))):
            gaps = sorted(set(range(labels[-1] + 1)) - ids_v)[:5]
            raise DataError(f"RegDB trial {t}: training labels must be contiguous 0..K-1; found "
                            f"{len(labels)} labels from {labels[0]} to {labels[-1]} "
                            f"(missing e.g. {gaps})")
        return TrainSplit(rgb=rgb, ir=ir, labels={p: p for p in labels})

    def test(self, trial: int) -> tuple[list[ImageRecord], list[ImageRecord]]:
        """``(visible, thermal)`` test records of ``trial`` in file order."""
        t = _check_trial(trial)
        vis = read_index(self._idx("test", "visible", t), self.root, VISIBLE_CAM, RGB,
                         self.check_files)
        th = read_index(self._idx("test", "thermal", t), self.root, THERMAL_CAM, IR,
                        self.check_files)
        return vis, th

    @staticmethod
    def folder_id(record: ImageRecord) -> int | None:
        """The identity folder of a record (``Visible/<id>/…``), which stays the same across
        trials whereas labels are per-file; None when the path has no numeric folder."""
        parts = record.path.split("/")
        return int(parts[1]) if len(parts) >= 3 and parts[1].isdigit() else None

    def summary(self, trial: int = 1) -> dict:
        """Counts of ids and images per split and modality for one trial."""
        tr = self.train(trial)
        vis, th = self.test(trial)
        return {"root": str(self.root), "trial": trial, "trials": self.trials,
                "train": {"ids": tr.num_classes, "visible": len(tr.rgb), "thermal": len(tr.ir)},
                "test": {"ids": len({r.pid for r in vis} | {r.pid for r in th}),
                         "visible": len(vis), "thermal": len(th)}}


def load_regdb(root: str | os.PathLike, check_files: bool = True) -> RegdbDataset:
    """Load a RegDB folder as downloaded.

    Args:
        root: folder holding ``Visible/``, ``Thermal/`` and ``idx/``.
        check_files: verify that every listed image exists when a split is read.

    Raises:
        DataError: the root, one of its three folders, or every trial's index files missing.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"RegDB root not found: {root}" if kind_of(root) == "nothing" else
                        f"RegDB root is not a folder: {root} is {kind_of(root)}")
    found = sorted(p.name for p in root.iterdir() if not p.name.startswith("."))[:20]
    for sub in ("Visible", "Thermal", "idx"):
        if kind_of(root / sub) == "nothing":
            raise DataError(f"not a RegDB folder: expected {root / sub}/ "
                            f"(Visible/, Thermal/, idx/); found {found}")
        require_folder(root / sub, "a RegDB folder")
    # Every index file that is there must be a file; a trial is complete with all four.
    names = [f"{s}_{m}_{t}.txt" for t in TRIALS for s in ("train", "test")
             for m in ("visible", "thermal")]
    odd = [n for n in names if kind_of(root / "idx" / n) not in ("nothing", "a file")]
    if odd:
        raise DataError(f"expected the RegDB index files in {root / 'idx'} to be files, found "
                        f"{len(odd)} that are not: " + "; ".join(
                            f"{n} is {kind_of(root / 'idx' / n)}" for n in odd[:3]))
    trials = [t for t in TRIALS if all(
        (root / "idx" / f"{s}_{m}_{t}.txt").is_file()
        for s in ("train", "test") for m in ("visible", "thermal"))]
    if not trials:
        have = sorted(p.name for p in (root / "idx").iterdir())[:10]
        raise DataError(f"no complete RegDB trial in {root / 'idx'}: expected "
                        f"train_visible_t.txt, train_thermal_t.txt, test_visible_t.txt, "
                        f"test_thermal_t.txt for t in 1..10; found {have}")
    if len(trials) < len(TRIALS):
        log.warning("RegDB at %s: only trials %s have all four index files", root, trials)
    return RegdbDataset(root=root, trials=trials, check_files=check_files)


# ---------------------------------------------------------------------------------------------
# Protocols
# ---------------------------------------------------------------------------------------------
Direction = Literal["v2t", "t2v"]


def regdb_split(ds: Any, trial: int, direction: Direction = "v2t") -> EvalSplit:
    """EvalSplit of RegDB trial ``trial`` (1..10): v2t = visible query vs thermal gallery,
    t2v = the roles swapped (the reference's ``--tvsearch``). Lists in index-file order."""
    if direction not in ("v2t", "t2v"):
        raise ConfigError(f"RegDB direction must be 'v2t' or 't2v', got {direction!r}")
    visible, thermal = ds.test(trial)
    query, gallery = (visible, thermal) if direction == "v2t" else (thermal, visible)
    return EvalSplit(name=f"regdb-{direction}", trial=trial, query=list(query), gallery=list(gallery))


# ---------------------------------------------------------------------------------------------
# Summary (``vireid data summary``): per-trial counts (each trial has its own index files)
# ---------------------------------------------------------------------------------------------
def trial_summaries(ds: RegdbDataset) -> dict:
    """``{trial: {"train": {ids, visible, thermal}, "test": {...}}}`` of every trial on disk."""
    out = {}
    for t in ds.trials:
        tr = ds.train(t)
        vis, th = ds.test(t)
        out[str(t)] = {
            "train": {"ids": tr.num_classes, "visible": len(tr.rgb), "thermal": len(tr.ir)},
            "test": {"ids": len({r.pid for r in vis} | {r.pid for r in th}),
                     "visible": len(vis), "thermal": len(th)},
        }
    return out


def summary_lines(splits: dict) -> list[str]:
    """Text table of :func:`trial_summaries`."""
    lines = ["trial  train ids  vis  th   test ids  vis  th"]
    for t, s in splits.items():
        tr, te = s["train"], s["test"]
        lines.append(
            f"{t:>5}  {tr['ids']:>9} {tr['visible']:>4} {tr['thermal']:>4}"
            f"  {te['ids']:>8} {te['visible']:>4} {te['thermal']:>4}"
        )
    return lines


# ---------------------------------------------------------------------------------------------
# Synthetic layout (``vireid synth --layout regdb``)
# ---------------------------------------------------------------------------------------------
def write_synthetic(req: SynthRequest) -> SynthPlan:
    """The RegDB layout: ten images per id and modality (``Visible/<id>/…bmp``,
    ``Thermal/<id>/…bmp``) and ``idx/{train,test}_{visible,thermal}_t.txt`` for t = 1..10,
    ids split half/half per trial."""
    seed, ids, out, k = req.seed, req.ids, req.out, req.knobs
    rgb_hw, ir_hw = req.rgb_size or (128, 64), req.ir_size or (120, 56)
    cams = {VISIBLE_CAM: make_camera(seed, VISIBLE_CAM, False),
            THERMAL_CAM: make_camera(seed, THERMAL_CAM, True)}
    # RegDB films front and back views only.
    for c in cams.values():
        vp = c["view_p"].copy()
        vp[2:] = 0.0
        c["view_p"] = vp / vp.sum()
    jobs, names = [], {}
    pools = make_pools(seed, k)
    for pid in range(1, ids + 1):
        rp = seeded_rng(seed, TAG_PLAN, 3, pid)
        gender = "female" if make_identity(seed, pid, pools, k)["female"] else "male"
        items, nm = [], {"v": [], "t": []}
        for j in range(10):
            serial = (pid - 1) * 10 + j + 1
            view = "front" if rp.random() < 0.5 else "back"
            for mod, cam, folder, hw in (("v", VISIBLE_CAM, "Visible", rgb_hw),
                                         ("t", THERMAL_CAM, "Thermal", ir_hw)):
                rel = f"{folder}/{pid}/{gender}_{view}_{mod}_{serial:05d}_{pid}.bmp"
                items.append((rel, cam, cam == THERMAL_CAM, tuple(hw), j, "bmp"))
                nm[mod].append(rel)
        names[pid] = nm
        jobs.append(SynthJob(seed, pid, str(out), tuple(items)))
    all_ids = list(range(1, ids + 1))
    for t in TRIALS:
        perm = seeded_rng(seed, TAG_PLAN, 4, t).permutation(all_ids)
        half = ids // 2
        splits = {"train": sorted(int(x) for x in perm[:half]),
                  "test": sorted(int(x) for x in perm[half:])}
        for split, sids in splits.items():
            for mod, word in (("v", "visible"), ("t", "thermal")):
                lines = [f"{rel} {label}" for label, pid in enumerate(sids)
                         for rel in names[pid][mod]]
                atomic_write_text(out / "idx" / f"{split}_{word}_{t}.txt", "\n".join(lines) + "\n")
    return SynthPlan(cams, jobs, {"train_ids_per_trial": ids // 2,
                                  "test_ids_per_trial": ids - ids // 2})


# ---------------------------------------------------------------------------------------------
# The registry entry
# ---------------------------------------------------------------------------------------------
register_dataset(
    name="regdb", title="RegDB", load=load_regdb,
    train_of=lambda ds, trial: ds.train(trial),
    test_of=lambda ds, trial: tuple(map(list, ds.test(trial))),
    marker="idx",
    protocols=(
        Protocol(name="regdb-v2t", build=partial(regdb_split, direction="v2t"), trials=TRIALS,
                 metric="regdb", query_modality=RGB, gallery_modality=IR, aliases=("v2t",),
                 description="RegDB visible query vs thermal gallery, split t"),
        Protocol(name="regdb-t2v", build=partial(regdb_split, direction="t2v"), trials=TRIALS,
                 metric="regdb", query_modality=IR, gallery_modality=RGB, aliases=("t2v",),
                 description="RegDB thermal query vs visible gallery, split t"),
    ),
    trial_rule=TrialRule(trials=TRIALS, available=lambda ds: ds.trials),
    summary=trial_summaries, summary_lines=summary_lines,
    synthetic=SyntheticLayout(write=write_synthetic, min_ids=2),
    train_classes=206,
)

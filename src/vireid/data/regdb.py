"""RegDB loader for the layout as downloaded.

Layout::

    <root>/Visible/<id>/*.bmp, <root>/Thermal/<id>/*.bmp
    <root>/idx/{train,test}_{visible,thermal}_{1..10}.txt   lines "<path relative to root> <label>"

Trial t trains on ``train_*_t`` (labels 0..205 in the real files) and tests on ``test_*_t``.
A record's ``pid`` is the label of its index line; ``camid`` is 1 (visible) or 2 (thermal).

The rules of :mod:`vireid.data.layout_checks` hold: ``Visible/``, ``Thermal/``, ``idx/`` and
every index file present must be of the right kind, and every listed image a file. RegDB
names its images by path in the index files, so its folders are not scanned (there are no
id folders to spell and nothing unlisted to count).
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

from vireid.data.indexfile import read_path_labels
from vireid.data.layout_checks import check_listed_files, kind_of, require_folder
from vireid.data.records import IR, RGB, ImageRecord, TrainSplit
from vireid.errors import ConfigError, DataError
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

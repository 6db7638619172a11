"""SYSU-MM01 loader for the layout as downloaded.

Layout (see docs/protocols.md)::

    <root>/cam1 .. cam6/<PPPP>/<NNNN>.jpg     4-digit ids and stems
    <root>/exp/train_id.txt, val_id.txt, test_id.txt   first line: comma-separated ids

RGB cameras are 1, 2, 4, 5; IR cameras 3 and 6. Training uses train ∪ val ids (395 in the
real data) with labels 0..K-1 by increasing id. Id folders listed in no split file are
ignored (the real data has some). A root whose files live one level down in ``ori_data/``
(a common re-packaging) is accepted.
"""
from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from vireid.data.layout_checks import (Unused, id_folder_name, kind_of, read_id_line,
                                       refuse_bad_id_entries, require_file, require_images_of,
                                       scan_camera)
from vireid.data.records import IR, RGB, ImageRecord, TrainSplit
from vireid.errors import DataError

log = logging.getLogger(__name__)

CAMERAS = (1, 2, 3, 4, 5, 6)
RGB_CAMERAS = (1, 2, 4, 5)
IR_CAMERAS = (3, 6)
#: The indoor RGB cameras (indoor-search galleries); cam1–3 film indoors.
INDOOR_RGB_CAMERAS = (1, 2)
SPLIT_FILES = ("train_id.txt", "val_id.txt", "test_id.txt")


def camera_modality(cam: int) -> str:
    """``"rgb"`` for cameras 1, 2, 4, 5 and ``"ir"`` for 3, 6."""
    if cam in RGB_CAMERAS:
        return RGB
    if cam in IR_CAMERAS:
        return IR
    raise DataError(f"SYSU-MM01 has cameras 1..6, got camera {cam}")


@dataclass
class SysuDataset:
    """A loaded SYSU-MM01 folder.

    Attributes:
        root: the folder that holds cam1..cam6 and exp/.
        train_ids, val_ids, test_ids: sorted ids of the three split files.
        train: TrainSplit over train ∪ val ids (labels 0..K-1 by increasing id).
        train_single_modality_ids: training ids with images of one modality only (kept in
            ``train``; cross-modality samplers skip them).
        unlisted_ids: ids with folders on disk that no split file lists (ignored).
        index: ``{(cam, pid): sorted file names}`` of every id folder on disk.
    """

    root: Path
    train_ids: list[int]
    val_ids: list[int]
    test_ids: list[int]
    index: dict[tuple[int, int], list[str]]
    train: TrainSplit = field(default_factory=lambda: TrainSplit([], []))
    train_single_modality_ids: list[int] = field(default_factory=list)
    unlisted_ids: list[int] = field(default_factory=list)

    @property
    def trainval_ids(self) -> list[int]:
        return sorted(set(self.train_ids) | set(self.val_ids))

    def cameras_of(self, pid: int) -> list[int]:
        """Cameras in which ``pid`` has an image folder."""
        return [c for c in CAMERAS if (c, pid) in self.index]

    def files(self, pid: int, cam: int) -> list[str]:
        """Sorted file names of ``camK/PPPP`` (empty when the folder does not exist)."""
        return list(self.index.get((cam, pid), []))

    def images(self, pids: Iterable[int], cams: Sequence[int] = CAMERAS) -> list[ImageRecord]:
        """Records of ``pids`` in ``cams``: sorted by id, then camera in the given order, then
        file name. Missing folders contribute nothing."""
        out: list[ImageRecord] = []
        for pid in sorted(set(pids)):
            for cam in cams:
                mod = camera_modality(cam)
                for name in self.index.get((cam, pid), ()):
                    out.append(ImageRecord(f"cam{cam}/{id_folder_name(pid)}/{name}", pid,
                                           cam, mod))
        return out

    def summary(self) -> dict:
        """Counts per split, camera and modality (ids and images), for ``vireid data summary``."""
        res: dict = {"root": str(self.root)}
        for name, ids in (("train", self.train_ids), ("val", self.val_ids),
                          ("trainval", self.trainval_ids), ("test", self.test_ids)):
            per_cam = {}
            for cam in CAMERAS:
                n_ids = sum(1 for p in ids if (cam, p) in self.index)
                n_img = sum(len(self.index.get((cam, p), ())) for p in ids)
                per_cam[f"cam{cam}"] = {"ids": n_ids, "images": n_img,
                                        "modality": camera_modality(cam)}
            per_mod = {m: {"images": sum(v["images"] for v in per_cam.values()
                                         if v["modality"] == m)} for m in (RGB, IR)}
            res[name] = {"ids": len(ids), "cameras": per_cam, "modalities": per_mod}
        res["unlisted_ids"] = len(self.unlisted_ids)
        res["train_single_modality_ids"] = len(self.train_single_modality_ids)
        return res


def _resolve_root(root: Path) -> Path:
    if not root.exists():
        raise DataError(f"SYSU-MM01 root not found: {root}")
    if not root.is_dir():
        raise DataError(f"SYSU-MM01 root is not a folder: {root}")
    if not (root / "exp").is_dir() and (root / "ori_data" / "exp").is_dir():
        log.info("using %s/ori_data as the SYSU-MM01 root", root)
        return root / "ori_data"
    return root


def load_sysu(root: str | os.PathLike) -> SysuDataset:
    """Load a SYSU-MM01 folder as downloaded (the rules of :mod:`vireid.data.layout_checks`).

    Raises:
        DataError: missing root; cam1..cam6 or exp/ missing or not folders; a split file
            missing, not a file, or not one line of comma-separated ids; ids that overlap
            between train/val and test; id folders not named ``"%04d" % id``; the entry of
            a listed id that is not a folder; listed ids without images. The message says
            what was expected where and what was found.
    """
    root = _resolve_root(Path(root))
    found = sorted(p.name for p in root.iterdir() if not p.name.startswith("."))
    cam_dirs = {c: root / f"cam{c}" for c in CAMERAS}
    problems = []
    missing = [d.name for d in [*cam_dirs.values(), root / "exp"] if kind_of(d) == "nothing"]
    if missing:
        problems.append(f"missing {', '.join(missing)}")
    problems += [f"{d.name} is {kind_of(d)}" for d in [*cam_dirs.values(), root / "exp"]
                 if d.name not in missing and not d.is_dir()]
    if problems:
        raise DataError(f"not a SYSU-MM01 folder: expected cam1..cam6 and exp/ folders "
                        f"in {root}; {'; '.join(problems)}; found {found[:20]}")
    for name in SPLIT_FILES:
        require_file(root / "exp" / name, "split file")
    train_ids, val_ids, test_ids = (read_id_line(root / "exp" / f) for f in SPLIT_FILES)
    overlap = (set(train_ids) | set(val_ids)) & set(test_ids)
    if overlap:
        raise DataError(f"exp/test_id.txt shares {len(overlap)} ids with train/val "
                        f"(e.g. {sorted(overlap)[:5]}); the splits must be disjoint")
    listed = set(train_ids) | set(val_ids) | set(test_ids)

    unused = Unused(f"SYSU-MM01 at {root}", root)
    scans = {cam: scan_camera(d, listed, unused) for cam, d in cam_dirs.items()}
    refuse_bad_id_entries(scans.values(), "SYSU-MM01")
    index = {(cam, pid): files for cam, scan in scans.items()
             for pid, files in scan.images.items()}
    if not index:
        raise DataError(f"no images found: expected {root}/camK/PPPP/NNNN.jpg folders, "
                        f"all six camera folders are empty")
    on_disk = {pid for (_, pid) in index}
    require_images_of(listed, on_disk, str(root / "exp"), "SYSU-MM01")
    unused.warn(log)
    ds = SysuDataset(root=root, train_ids=train_ids, val_ids=val_ids, test_ids=test_ids,
                     index=index, unlisted_ids=sorted(on_disk - listed))
    trainval = ds.trainval_ids
    rgb = ds.images(trainval, RGB_CAMERAS)
    ir = ds.images(trainval, IR_CAMERAS)
    ds.train = TrainSplit(rgb=rgb, ir=ir, labels={pid: i for i, pid in enumerate(trainval)})
    has_rgb = {r.pid for r in rgb}
    has_ir = {r.pid for r in ir}
    ds.train_single_modality_ids = sorted(set(trainval) - (has_rgb & has_ir))
    if ds.train_single_modality_ids:
        # Logged as a warning with a count: the field's loaders would fail on such ids; ours
        # keep them as classes but the cross-modality pair sampler never draws them.
        log.warning("SYSU-MM01: skipping %d of %d training ids in cross-modality sampling: "
                    "images of one modality only (e.g. %s)", len(ds.train_single_modality_ids),
                    len(trainval), ", ".join(f"{p:04d}" for p in ds.train_single_modality_ids[:5]))
    if ds.unlisted_ids:
        log.info("SYSU-MM01: ignoring %d id folders listed in no split file", len(ds.unlisted_ids))
    log.info("SYSU-MM01 at %s: %d train+val ids (%d RGB, %d IR images), %d test ids",
             root, len(trainval), len(rgb), len(ir), len(test_ids))
    return ds

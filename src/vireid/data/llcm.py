"""LLCM loader (Zhang & Wang, CVPR 2023), following the layout the public code reads.

What public code establishes (the DEEN release and its forks' ``data_loader.py`` /
``data_manager.py``)::

    <root>/idx/train_vis.txt, idx/train_nir.txt   lines "<path relative to root> <label>"
    <root>/idx/test_id.txt                          first line: comma-separated test ids
    <root>/test_vis/cam1..cam9/<PPPP>/*.jpg         visible test images
    <root>/test_nir/cam1,2,4..9/<PPPP>/*.jpg        near-infrared test images (no cam3)
    <root>/idx/test_vis.txt, idx/test_nir.txt       lines "<path relative to root> <label>"
                                                    listing the test images (read by the
                                                    DEEN release's visualisation scripts,
                                                    camera = digit after the first "c0")

The public code lists test images per sorted id, then camera, then sorted file name, and
reads the camera from the ``camK`` folder and the id from the 4-digit folder.

Uncertain (not established from public code, so handled leniently here):
- the training label values: the public code uses them as given; we keep the file label as
  ``pid`` and map sorted labels to 0..K-1 (identity when already contiguous);
- the training camera: taken from a ``_cNN_`` field of the file name when present
  (file names like ``0001_c01_s185535_f7010_nir.jpg`` appear in public scripts), else 0;
- the cameras present on disk: every ``camK`` folder found is used, not only the lists above.

The rules of :mod:`vireid.data.layout_checks` hold as for SYSU-MM01: the index files and the
``test_id.txt`` line as the public code reads them, every listed image a file, every test id
with images, ``camK`` entries of the test trees folders named ``cam`` + the number without
leading zeros (the public code's names), id folders named ``"%04d" % id``, and other entries
of the test trees counted in one warning.
"""
from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from vireid.data.indexfile import read_path_labels
from vireid.data.layout_checks import (NOT_CAMERA, Unused, check_listed_files, id_folder_name,
                                       kind_of, read_id_line, refuse_bad_id_entries,
                                       require_images_of, scan_camera)
from vireid.data.records import IR, RGB, ImageRecord, TrainSplit
from vireid.errors import DataError

log = logging.getLogger(__name__)

_CAM_IN_NAME = re.compile(r"_c(\d+)_")
TEST_DIRS = {RGB: "test_vis", IR: "test_nir"}


def _read_train_index(path: Path, root: Path, modality: str) -> list[ImageRecord]:
    out = []
    for rel, label in read_path_labels(path, "LLCM index file"):
        m = _CAM_IN_NAME.search(rel.rsplit("/", 1)[-1])
        out.append(ImageRecord(rel, label, int(m.group(1)) if m else 0, modality))
    return out


@dataclass
class LlcmDataset:
    """A loaded LLCM folder.

    Attributes:
        root: dataset folder.
        train: TrainSplit from ``idx/train_vis.txt`` (rgb) and ``idx/train_nir.txt`` (ir).
        test_ids: sorted ids of ``idx/test_id.txt``.
        index: ``{(modality, cam, pid): sorted file names}`` of the test trees.
    """

    root: Path
    train: TrainSplit
    test_ids: list[int]
    index: dict[tuple[str, int, int], list[str]] = field(default_factory=dict)
    #: Records of ``idx/test_vis.txt`` (rgb) / ``idx/test_nir.txt`` (ir) in file order, when
    #: those files exist (the protocols use the folder tree, as DEEN's test code does).
    test_lists: dict[str, list[ImageRecord]] = field(default_factory=dict)

    def cameras(self, modality: str) -> list[int]:
        return sorted({c for (m, c, _) in self.index if m == modality})

    def images(self, pids: Iterable[int], modality: str,
               cams: Iterable[int] | None = None) -> list[ImageRecord]:
        """Test records of ``pids`` in ``modality``: by id, then camera, then file name."""
        cam_list = list(cams) if cams is not None else self.cameras(modality)
        out = []
        for pid in sorted(set(pids)):
            for cam in cam_list:
                for name in self.index.get((modality, cam, pid), ()):
                    out.append(ImageRecord(
                        f"{TEST_DIRS[modality]}/cam{cam}/{id_folder_name(pid)}/{name}", pid,
                        cam, modality))
        return out


_CAMERA_FOLDER = re.compile(r"cam([0-9]+)")


def load_llcm(root: str | os.PathLike, check_files: bool = True) -> LlcmDataset:
    """Load an LLCM folder (layout and rules in the module docstring).

    Raises:
        DataError: missing root, index files, test trees, malformed lines, missing images,
            test ids without images, or test-tree entries of the wrong kind or spelling.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"LLCM root not found: {root}" if kind_of(root) == "nothing" else
                        f"LLCM root is not a folder: {root} is {kind_of(root)}")
    found = sorted(p.name for p in root.iterdir() if not p.name.startswith("."))[:20]
    for sub in ("idx", "test_vis", "test_nir"):
        if not (root / sub).is_dir():
            raise DataError(f"not an LLCM folder: expected a folder at {root / sub} (idx/, "
                            f"test_vis/, test_nir/), found {kind_of(root / sub)}; {root} holds "
                            f"{found}")
    rgb = _read_train_index(root / "idx" / "train_vis.txt", root, RGB)
    ir = _read_train_index(root / "idx" / "train_nir.txt", root, IR)
    if check_files:
        check_listed_files(root, (r.path for r in rgb), root / "idx" / "train_vis.txt")
        check_listed_files(root, (r.path for r in ir), root / "idx" / "train_nir.txt")
    labels = {p: i for i, p in enumerate(sorted({r.pid for r in rgb} | {r.pid for r in ir}))}
    test_ids = read_id_line(root / "idx" / "test_id.txt")

    unused = Unused(f"LLCM at {root}", root)
    index: dict[tuple[str, int, int], list[str]] = {}
    scans = []
    for modality, dirname in TEST_DIRS.items():
        misnamed, not_folders = [], []
        with os.scandir(root / dirname) as it:
            entries = sorted(it, key=lambda e: e.name)
        for entry in entries:
            if entry.name.startswith("."):
                continue
            m = _CAMERA_FOLDER.fullmatch(entry.name)
            if not m:
                unused.add(NOT_CAMERA, entry.path)
            elif entry.name != f"cam{int(m.group(1))}":
                misnamed.append(f"{entry.name}: a name with leading zeros (expected "
                                f"cam{int(m.group(1))})")
            elif not entry.is_dir():
                not_folders.append(f"{entry.name}: {kind_of(Path(entry.path))}")
            else:
                scan = scan_camera(Path(entry.path), test_ids, unused)
                scans.append(scan)
                for pid, files in scan.images.items():
                    index[(modality, int(m.group(1)), pid)] = files
        if misnamed or not_folders:
            raise DataError(f"LLCM: expected the camera entries of {root / dirname} to be "
                            f"folders named camK (K without leading zeros), found "
                            + "; ".join((misnamed + not_folders)[:3]))
    refuse_bad_id_entries(scans, "LLCM")
    for modality, dirname in TEST_DIRS.items():
        have = {p for (m, _, p) in index if m == modality}
        if not have & set(test_ids):
            raise DataError(f"LLCM: no test images of the {len(test_ids)} ids of "
                            f"idx/test_id.txt under {root / dirname}/camK/PPPP/")
    require_images_of(test_ids, {p for (_, _, p) in index}, str(root / "idx" / "test_id.txt"),
                      "LLCM")
    test_lists = {}
    for modality, fname in ((RGB, "test_vis.txt"), (IR, "test_nir.txt")):
        path = root / "idx" / fname
        if kind_of(path) != "nothing":
            test_lists[modality] = _read_train_index(path, root, modality)
            if check_files:
                check_listed_files(root, (r.path for r in test_lists[modality]), path)
    unused.warn(log)
    log.info("LLCM at %s: %d train ids (%d vis, %d nir), %d test ids", root, len(labels),
             len(rgb), len(ir), len(test_ids))
    return LlcmDataset(root=root, train=TrainSplit(rgb=rgb, ir=ir, labels=labels),
                       test_ids=test_ids, index=index, test_lists=test_lists)

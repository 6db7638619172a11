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
"""
from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from vireid.data.records import IR, RGB, ImageRecord, TrainSplit
from vireid.data.sysu import IMAGE_EXTENSIONS, read_id_line
from vireid.errors import DataError
from vireid.data.indexfile import read_path_labels

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
                    out.append(ImageRecord(f"{TEST_DIRS[modality]}/cam{cam}/{pid:04d}/{name}",
                                           pid, cam, modality))
        return out


def load_llcm(root: str | os.PathLike, check_files: bool = True) -> LlcmDataset:
    """Load an LLCM folder (layout in the module docstring).

    Raises:
        DataError: missing root, index files, test trees, malformed lines, or missing images.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"LLCM root not found: {root}")
    found = sorted(p.name for p in root.iterdir())[:20]
    for sub in ("idx", "test_vis", "test_nir"):
        if not (root / sub).is_dir():
            raise DataError(f"not an LLCM folder: expected {root / sub}/ (idx/, test_vis/, "
                            f"test_nir/); found {found}")
    rgb = _read_train_index(root / "idx" / "train_vis.txt", root, RGB)
    ir = _read_train_index(root / "idx" / "train_nir.txt", root, IR)
    if check_files:
        missing = [r.path for r in rgb + ir if not (root / r.path).is_file()]
        if missing:
            raise DataError(f"{len(missing)} LLCM training images listed in {root / 'idx'} "
                            f"are missing (e.g. {missing[:3]})")
    labels = {p: i for i, p in enumerate(sorted({r.pid for r in rgb} | {r.pid for r in ir}))}
    test_ids = read_id_line(root / "idx" / "test_id.txt")

    index: dict[tuple[str, int, int], list[str]] = {}
    for modality, dirname in TEST_DIRS.items():
        for cam_dir in sorted((root / dirname).iterdir()):
            m = re.fullmatch(r"cam(\d+)", cam_dir.name)
            if not (m and cam_dir.is_dir()):
                continue
            for id_dir in cam_dir.iterdir():
                if not (id_dir.is_dir() and id_dir.name.isdigit()):
                    continue
                files = sorted(f.name for f in id_dir.iterdir()
                               if f.is_file() and f.name.lower().endswith(IMAGE_EXTENSIONS))
                if files:
                    index[(modality, int(m.group(1)), int(id_dir.name))] = files
    for modality, dirname in TEST_DIRS.items():
        have = {p for (m, _, p) in index if m == modality}
        if not have & set(test_ids):
            raise DataError(f"LLCM: no test images of the {len(test_ids)} ids of "
                            f"idx/test_id.txt under {root / dirname}/camK/PPPP/")
    test_lists = {}
    for modality, fname in ((RGB, "test_vis.txt"), (IR, "test_nir.txt")):
        path = root / "idx" / fname
        if path.is_file():
            test_lists[modality] = _read_train_index(path, root, modality)
    log.info("LLCM at %s: %d train ids (%d vis, %d nir), %d test ids", root, len(labels),
             len(rgb), len(ir), len(test_ids))
    return LlcmDataset(root=root, train=TrainSplit(rgb=rgb, ir=ir, labels=labels),
                       test_ids=test_ids, index=index, test_lists=test_lists)

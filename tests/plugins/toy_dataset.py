"""A toy data set registered from outside vireid: one module, one ``register_dataset`` call.

Layout::

    <root>/images/<pid>/<modality>_<cam>_<k>.jpg    modality "rgb" or "ir"
    <root>/test_ids.txt                              comma-separated test ids

Training uses every id not listed in ``test_ids.txt`` (labels 0..K-1 by increasing id).
Protocols: ``toy-i2v`` (default; all IR test images query all RGB ones) and ``toy-v2i``
(the roles swapped), one trial each, metric rule ``regdb`` (nothing removed). ``vireid synth
--layout toy`` writes a synthetic copy: 2 RGB cameras, 1 IR camera, 2 images per id and
camera, the last third of the ids for testing.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from pathlib import Path

from vireid import EvalSplit, ImageRecord, Protocol, TrainSplit, register_dataset
# The synthetic writer is optional and uses the generator's internal interface.
from vireid.data.registry import SyntheticLayout
from vireid.data.synthetic import SynthJob, SynthPlan, SynthRequest
from vireid.data.synthetic_render import make_camera
from vireid.errors import DataError
from vireid.utils.atomic import atomic_write_text

RGB, IR = "rgb", "ir"
CAMERAS = {1: RGB, 2: RGB, 3: IR}


@dataclass
class ToyData:
    records: list[ImageRecord]
    test_ids: set[int]

    def of(self, test: bool, modality: str) -> list[ImageRecord]:
        return [r for r in self.records
                if (r.pid in self.test_ids) == test and r.modality == modality]


def load(root) -> ToyData:
    root = Path(root)
    if not (root / "images").is_dir() or not (root / "test_ids.txt").is_file():
        raise DataError(f"not a toy folder: expected {root / 'images'}/ and "
                        f"{root / 'test_ids.txt'}")
    test_ids = {int(x) for x in (root / "test_ids.txt").read_text().split(",") if x.strip()}
    records = []
    for path in sorted((root / "images").glob("*/*.jpg")):
        modality, cam, _ = path.stem.split("_")
        records.append(ImageRecord(path.relative_to(root).as_posix(), int(path.parent.name),
                                   int(cam), modality))
    return ToyData(records, test_ids)


def train_of(ds: ToyData, trial) -> TrainSplit:
    rgb, ir = ds.of(False, RGB), ds.of(False, IR)
    ids = sorted({r.pid for r in rgb + ir})
    return TrainSplit(rgb, ir, {pid: i for i, pid in enumerate(ids)})


def split(ds: ToyData, trial: int, query: str) -> EvalSplit:
    gallery = RGB if query == IR else IR
    return EvalSplit(f"toy-{query[0]}2{gallery[0]}", trial, ds.of(True, query),
                     ds.of(True, gallery))


def write_synthetic(req: SynthRequest) -> SynthPlan:
    hw = req.rgb_size or (64, 32)
    test = list(range(req.ids - req.ids // 3 + 1, req.ids + 1))
    atomic_write_text(req.out / "test_ids.txt", ",".join(map(str, test)) + "\n")
    jobs = [SynthJob(req.seed, pid, str(req.out), tuple(
        (f"images/{pid}/{mod}_{cam}_{k}.jpg", cam, False, hw, 2 * cam + k, "jpg")
        for cam, mod in CAMERAS.items() for k in range(2))) for pid in range(1, req.ids + 1)]
    cameras = {cam: make_camera(req.seed, cam, mod == IR) for cam, mod in CAMERAS.items()}
    return SynthPlan(cameras, jobs, {"train_ids": req.ids - len(test), "test_ids": len(test)})


register_dataset(
    name="toy", title="Toy", load=load, train_of=train_of,
    test_of=lambda ds, trial: (ds.of(True, RGB), ds.of(True, IR)),
    marker="images",
    protocols=(
        Protocol(name="toy-i2v", build=partial(split, query=IR), trials=(0,), metric="regdb",
                 query_modality=IR, gallery_modality=RGB, aliases=("i2v",),
                 description="toy: all IR test images vs all RGB test images"),
        Protocol(name="toy-v2i", build=partial(split, query=RGB), trials=(0,), metric="regdb",
                 query_modality=RGB, gallery_modality=IR, aliases=("v2i",),
                 description="toy: all RGB test images vs all IR test images"),
    ),
    synthetic=SyntheticLayout(write=write_synthetic, min_ids=4),
)

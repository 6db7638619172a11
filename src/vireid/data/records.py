"""Plain records shared by datasets, protocols, the engine and the scorers."""
from __future__ import annotations

from dataclasses import dataclass, field

RGB = "rgb"
IR = "ir"
MODALITIES = (RGB, IR)
#: A list that holds images of both modalities (the open-set protocol's query and gallery).
MIXED = "mixed"


@dataclass(frozen=True)
class ImageRecord:
    """One image of a dataset.

    path: posix path relative to the dataset root (e.g. ``cam3/0001/0004.jpg``).
    pid: the dataset's own identity number (SYSU: int of the id folder; RegDB: label of the
        index file).
    camid: camera number (SYSU 1..6; RegDB 1 = visible, 2 = thermal; LLCM as on disk).
    modality: ``"rgb"`` or ``"ir"``.
    """

    path: str
    pid: int
    camid: int
    modality: str


@dataclass
class TrainSplit:
    """Training images of both modalities, with contiguous labels.

    labels: maps the dataset pid to the training label 0..num_classes-1 (by increasing pid).
    """

    rgb: list[ImageRecord]
    ir: list[ImageRecord]
    labels: dict[int, int] = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        return len(self.labels)


@dataclass
class EvalSplit:
    """Query and gallery of one protocol trial (trial numbers as the protocol names them)."""

    name: str
    trial: int
    query: list[ImageRecord]
    gallery: list[ImageRecord]

"""The one registry of datasets: name → loader, training split, layout marker and the
protocol an evaluation uses when none is given.

Every place that dispatches on ``data.dataset`` (training, evaluation, summaries, figures,
recipes) asks this registry, so adding a dataset is one entry here plus its loader module.
"""
from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Optional, Union

from vireid.data.llcm import load_llcm
from vireid.data.records import IR, RGB, ImageRecord, TrainSplit
from vireid.data.regdb import load_regdb
from vireid.data.sysu import IR_CAMERAS, RGB_CAMERAS, load_sysu
from vireid.utils.registry import Registry

PathLike = Union[str, os.PathLike]


@dataclass(frozen=True)
class DatasetSpec:
    """How to read one dataset.

    ``load(root)`` returns the loaded dataset object; ``train_of(ds, trial)`` its training
    split and ``test_of(ds, trial)`` every (RGB, IR) test image (``trial`` matters only where
    ``per_trial`` is True: RegDB's ten splits each have their own ids, so a model belongs to
    one trial). ``marker`` is the sub-folder
    that identifies the layout on disk; ``default_protocol`` the evaluation protocol used
    when none is named.
    """

    name: str
    title: str
    load: Callable[[PathLike], Any]
    train_of: Callable[[Any, Optional[int]], TrainSplit]
    test_of: Callable[[Any, Optional[int]], tuple[list[ImageRecord], list[ImageRecord]]]
    marker: str
    default_protocol: str
    per_trial: bool = False

    def train_split(self, root: PathLike, trial: Optional[int] = None) -> TrainSplit:
        """The training split at ``root`` (of ``trial`` where the dataset has per-trial splits)."""
        return self.train_of(self.load(root), trial)

    def test_images(self, root: PathLike, trial: Optional[int] = None
                    ) -> tuple[list[ImageRecord], list[ImageRecord]]:
        """Every (RGB, IR) image of the test identities at ``root`` (of ``trial``)."""
        return self.test_of(self.load(root), trial)


#: ``data.dataset`` -> :class:`DatasetSpec`.
DATASETS: Registry[DatasetSpec] = Registry("dataset", "data.dataset")
for _spec in (
    DatasetSpec("sysu", "SYSU-MM01", load_sysu, lambda ds, trial: ds.train,
                        lambda ds, trial: (ds.images(ds.test_ids, RGB_CAMERAS),
                                           ds.images(ds.test_ids, IR_CAMERAS)),
                        marker="exp", default_protocol="sysu-all"),
    DatasetSpec("regdb", "RegDB", load_regdb, lambda ds, trial: ds.train(trial),
                         lambda ds, trial: tuple(map(list, ds.test(trial))),  # type: ignore[arg-type]
                         marker="idx", default_protocol="regdb-v2t", per_trial=True),
    DatasetSpec("llcm", "LLCM", load_llcm, lambda ds, trial: ds.train,
                        lambda ds, trial: (ds.images(ds.test_ids, RGB),
                                           ds.images(ds.test_ids, IR)),
                        marker="idx", default_protocol="llcm-v2i"),
):
    DATASETS.register(_spec.name, _spec)


def get_dataset(name: str) -> DatasetSpec:
    """The registered dataset ``name``; ConfigError naming the registered ones otherwise."""
    return DATASETS.get(name)


def load_dataset(name: str, root: PathLike) -> Any:
    """Load dataset ``name`` from ``root`` with its loader."""
    return get_dataset(name).load(root)

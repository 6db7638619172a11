"""Library side of ``vireid data summary``, ``vireid data split`` and ``vireid data check``
(no printing here).

``dataset_summary`` counts ids and images per split, camera and modality, and the query and
gallery sizes of every protocol and trial; ``split_lists`` gives the exact query and gallery
lists of one trial as ``{"query": [[path, pid, camid], ...], "gallery": [...]}`` with paths
relative to the dataset root, so they can be checked against other code; ``check_dataset``
runs a data set's checker (:attr:`DatasetSpec.check`) and its loader and says in one line
what is wrong, counted by kind, or what the folder holds.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from vireid.data.images import show_path
from vireid.data.records import EvalSplit, ImageRecord
from vireid.data.registry import DataProblem, describe_problems, get_dataset
from vireid.errors import ConfigError, DataError
from vireid.evaluation.metrics import metric_rule
from vireid.evaluation.protocols import build_split

log = logging.getLogger(__name__)


def _count(records: list[ImageRecord]) -> dict[str, int]:
    return {"ids": len({r.pid for r in records}), "images": len(records)}


def _split_sizes(split: EvalSplit) -> dict[str, Any]:
    return {"trial": split.trial, "query": _count(split.query), "gallery": _count(split.gallery)}


def dataset_summary(dataset: str, root: str | Path, ds: Any | None = None) -> dict[str, Any]:
    """Counts of a dataset folder and the query/gallery sizes of each protocol and trial.

    Returns ``{"dataset", "root", "splits": ..., "protocols": {name: {"description",
    "metric", "trials": [{trial, query: {ids, images}, gallery: {ids, images}}, ...]}}}``.
    ``splits`` is the data set's own summary (:meth:`DatasetSpec.summarize`: SYSU-MM01 per
    split, camera and modality; RegDB per trial; by default ids and images per modality and
    camera of the training and test records).
    """
    spec = get_dataset(dataset)
    ds = ds if ds is not None else spec.load(root)
    res: dict[str, Any] = {"dataset": dataset, "root": str(root), "splits": spec.summarize(ds)}
    protos: dict[str, Any] = {}
    for proto in (p.on(ds) for p in spec.protocols):
        trials = [_split_sizes(build_split(proto, ds, t)) for t in spec.protocol_trials(proto, ds)]
        protos[proto.name] = {"description": proto.description, "metric": proto.metric_name,
                              "trials": trials}
    res["protocols"] = protos
    return res


def format_summary(summary: dict[str, Any]) -> str:
    """Plain-text rendering of :func:`dataset_summary`."""
    lines = [f"dataset {summary['dataset']} at {summary['root']}"]
    lines.extend(get_dataset(summary["dataset"]).summary_text(summary["splits"]))
    lines.append("")
    lines.append("protocol           trials  query ids/images  gallery ids/images")
    for name, p in summary["protocols"].items():
        # Consecutive trials with identical sizes share one line (sizes rarely vary by trial).
        groups: list[list[dict[str, Any]]] = []
        for tr in p["trials"]:
            key = (tr["query"], tr["gallery"])
            if groups and (groups[-1][-1]["query"], groups[-1][-1]["gallery"]) == key:
                groups[-1].append(tr)
            else:
                groups.append([tr])
        for grp in groups:
            q, g = grp[0]["query"], grp[0]["gallery"]
            first, last = grp[0]["trial"], grp[-1]["trial"]
            trials = str(first) if first == last else f"{first}-{last}"
            lines.append(
                f"{name:<19}{trials:>6}  {q['ids']:>9}/{q['images']:<7}  {g['ids']:>9}/{g['images']}"
            )
    return "\n".join(lines)


def resolve_protocol(dataset: str, protocol: str, shot: str | None = None) -> str:
    """Registry name for a (dataset, protocol, shot) given on the command line.

    ``protocol`` is a protocol's full name or one of its aliases (its short form without the
    data set, e.g. "all", "t2v"); ``shot="multi"`` selects the multi-shot variant of a
    protocol that has one. ConfigError naming the data set's protocols otherwise.
    """
    return get_dataset(dataset).protocol(protocol, shot).name


def split_lists(
    dataset: str,
    root: str | Path,
    protocol: str,
    trial: int,
    shot: str | None = None,
    ds: Any | None = None,
) -> dict[str, list[list[Any]]]:
    """Exact query and gallery lists of one trial: ``{"query": [[path, pid, camid], ...],
    "gallery": [...]}``, paths relative to the dataset root (``/`` separators), in the order
    the protocol builds them (the order features are extracted and ranked in)."""
    name = resolve_protocol(dataset, protocol, shot)
    ds = ds if ds is not None else get_dataset(dataset).load(root)
    split = build_split(name, ds, trial)
    return {
        "query": [[r.path, r.pid, r.camid] for r in split.query],
        "gallery": [[r.path, r.pid, r.camid] for r in split.gallery],
    }


def check_dataset(dataset: str, root: str | Path) -> str:
    """Check a data set folder; a one-line summary when all is right.

    Runs the data set's checker (:attr:`DatasetSpec.check`, which reports every problem at
    once; a data set without one has only its loader's checks), then loads the folder and
    resolves the metric rule of each protocol as the folder defines it (:meth:`Protocol.on`).

    Returns:
        e.g. ``"list data set at DIR: no problems (its checker and loader); training 6
        ids (30 rgb, 28 ir images); protocol list: trials 0-2, query 3 ids/12 images (ir),
        gallery 3 ids/6 images (rgb, trial 0), metric llcm"``.

    Raises:
        DataError: one line counting the problems by kind, with a few examples of each.
    """
    spec = get_dataset(dataset)
    what = f"{show_path(root)} is not a usable {spec.name} data set"
    if spec.check is not None:
        problems = list(spec.check(root))
        if problems:
            raise DataError(describe_problems(problems, what))
    ds = spec.load(root)
    bound = []
    for proto in spec.protocols:
        p = proto.on(ds)
        try:
            metric_rule(p.metric)
        except ConfigError as exc:
            raise DataError(describe_problems([DataProblem("settings", f"protocol {p.name}",
                                                           str(exc))], what)) from None
        bound.append(p)
    proto = next(p for p in bound if p.name == spec.default_protocol)
    trials = spec.protocol_trials(proto, ds)
    t0 = None
    if spec.trial_rule is not None:
        rule = spec.trial_rule
        t0 = list(rule.available(ds) if rule.available else rule.trials)[0]
    train = spec.train_of(ds, t0)
    split = build_split(proto, ds, trials[0])
    q, g = _count(split.query), _count(split.gallery)
    span = str(trials[0]) if len(trials) == 1 else f"{trials[0]}-{trials[-1]}"
    checked = "its checker and loader" if spec.check is not None else \
        f"its loader; {spec.title} has no checker of its own"
    return (f"{spec.name} data set at {root}: no problems ({checked}); training "
            f"{train.num_classes} ids ({len(train.rgb)} rgb, {len(train.ir)} ir images"
            f"{f', trial {t0}' if t0 is not None else ''}); protocol {proto.name}: "
            f"trial{'s' if len(trials) > 1 else ''} {span}, query {q['ids']} ids/{q['images']} "
            f"images ({proto.query_modality}), gallery {g['ids']} ids/{g['images']} images "
            f"({proto.gallery_modality}, trial {trials[0]}), metric {proto.metric_name}")

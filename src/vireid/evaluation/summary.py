"""Library side of ``vireid data summary`` and ``vireid data split`` (no printing here).

``dataset_summary`` counts ids and images per split, camera and modality, and the query and
gallery sizes of every protocol and trial; ``split_lists`` gives the exact query and gallery
lists of one trial as ``{"query": [[path, pid, camid], ...], "gallery": [...]}`` with paths
relative to the dataset root, so they can be checked against other code.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from vireid.data.records import EvalSplit, ImageRecord
from vireid.data.registry import load_dataset
from vireid.errors import ConfigError
from vireid.evaluation.protocols import PROTOCOLS, build_split, get_protocol, protocols_for

log = logging.getLogger(__name__)

def _count(records: list[ImageRecord]) -> dict[str, int]:
    return {"ids": len({r.pid for r in records}), "images": len(records)}


def _split_sizes(split: EvalSplit) -> dict[str, Any]:
    return {"trial": split.trial, "query": _count(split.query), "gallery": _count(split.gallery)}


def _trials_of(dataset_obj: Any, proto_trials: tuple[int, ...], dataset: str) -> list[int]:
    if dataset == "regdb":
        have = set(getattr(dataset_obj, "trials", proto_trials))
        return [t for t in proto_trials if t in have]
    return list(proto_trials)


def _regdb_splits(ds: Any) -> dict[str, Any]:
    """Per-trial train/test counts of RegDB (each trial has its own index files)."""
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


def dataset_summary(dataset: str, root: str | Path, ds: Any | None = None) -> dict[str, Any]:
    """Counts of a dataset folder and the query/gallery sizes of each protocol and trial.

    Returns ``{"dataset", "root", "splits": ..., "protocols": {name: {"trials": [{trial,
    query: {ids, images}, gallery: {ids, images}}, ...]}}}``. ``splits`` is the loader's own
    summary for SYSU-MM01 (per split, camera, modality) and per-trial counts for RegDB.
    """
    ds = ds if ds is not None else load_dataset(dataset, root)
    res: dict[str, Any] = {"dataset": dataset, "root": str(root)}
    if dataset == "sysu":
        res["splits"] = ds.summary()
    else:
        res["splits"] = _regdb_splits(ds)
    protos: dict[str, Any] = {}
    for proto in protocols_for(dataset):
        trials = [_split_sizes(build_split(proto, ds, t)) for t in _trials_of(ds, proto.trials, dataset)]
        protos[proto.name] = {"description": proto.description, "metric": proto.metric, "trials": trials}
    res["protocols"] = protos
    return res


def format_summary(summary: dict[str, Any]) -> str:
    """Plain-text rendering of :func:`dataset_summary`."""
    lines = [f"dataset {summary['dataset']} at {summary['root']}"]
    splits = summary["splits"]
    if summary["dataset"] == "sysu":
        lines.append("split     ids   images (per camera: ids/images, modality)")
        for name in ("train", "val", "trainval", "test"):
            s = splits[name]
            images = sum(c["images"] for c in s["cameras"].values())
            cams = "  ".join(
                f"{cam}:{c['ids']}/{c['images']}{'(ir)' if c['modality'] == 'ir' else ''}"
                for cam, c in s["cameras"].items()
            )
            lines.append(f"{name:<9}{s['ids']:>5}{images:>9}   {cams}")
            lines.append(
                " " * 14 + "rgb " + str(s["modalities"]["rgb"]["images"])
                + "  ir " + str(s["modalities"]["ir"]["images"])
            )
        lines.append(f"id folders in no split: {splits.get('unlisted_ids', 0)}")
    else:
        lines.append("trial  train ids  vis  th   test ids  vis  th")
        for t, s in splits.items():
            tr, te = s["train"], s["test"]
            lines.append(
                f"{t:>5}  {tr['ids']:>9} {tr['visible']:>4} {tr['thermal']:>4}"
                f"  {te['ids']:>8} {te['visible']:>4} {te['thermal']:>4}"
            )
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

    ``protocol`` is a registry name ("sysu-all", "regdb-t2v", ...) or its short form without
    the dataset ("all", "indoor", "openset", "v2t", "t2v"); ``shot="multi"`` selects the
    multi-shot variant of a SYSU search protocol.
    """
    name = protocol if protocol in PROTOCOLS else f"{dataset}-{protocol}"
    proto = get_protocol(name)
    if proto.dataset != dataset:
        raise ConfigError(f"protocol {name} belongs to dataset {proto.dataset}, not {dataset}")
    if shot not in (None, "single", "multi"):
        raise ConfigError(f"shot must be 'single' or 'multi', got {shot!r}")
    if shot == "multi" and not name.endswith("-multi"):
        multi = f"{name}-multi"
        if multi not in PROTOCOLS:
            raise ConfigError(f"protocol {name} has no multi-shot variant")
        name = multi
    elif shot == "single" and name.endswith("-multi"):
        raise ConfigError(f"protocol {name} is multi-shot but --shot single was given")
    return name


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
    ds = ds if ds is not None else load_dataset(dataset, root)
    split = build_split(name, ds, trial)
    return {
        "query": [[r.path, r.pid, r.camid] for r in split.query],
        "gallery": [[r.path, r.pid, r.camid] for r in split.gallery],
    }

"""The fields that define a model: one list, read by the config digest, checkpoint
compatibility (``engine.checkpoint.arch_differences``), feature files and gallery indexes.

Two models load each other's weights, and share feature files and indexes, only when all
of :data:`MODEL_IDENTITY` agree. The functions take a :class:`vireid.config.Config` or its
``to_dict()`` mapping (what a checkpoint stores), so nothing here imports the config.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class IdentityField:
    """One config field that defines the network: two models load each other's weights,
    and share feature files and gallery indexes, only when all of these agree.

    ``legacy`` is the value that reproduces the network from before the field existed: a
    config holding it leaves the field out of the digest, so the digests of older runs
    (and the indexes and feature files keyed by them) stay valid.
    """

    section: str
    name: str
    legacy: Any = None
    has_legacy: bool = False

    @property
    def key(self) -> str:
        return f"{self.section}.{self.name}"


def _since(section: str, name: str, legacy: Any) -> IdentityField:
    return IdentityField(section, name, legacy, True)


#: The one list of the fields that define a model: the digest, checkpoint compatibility
#: (``engine.checkpoint``) and feature files / indexes all read it. A new architecture
#: field goes here, with ``_since(...)`` and the value that keeps old models unchanged.
MODEL_IDENTITY: tuple[IdentityField, ...] = (
    IdentityField("model", "arch"), IdentityField("model", "width"),
    IdentityField("model", "last_stride"), IdentityField("model", "shared_stages"),
    _since("model", "pool", "avg"), _since("model", "bnneck", False),
    _since("model", "non_local", False), _since("model", "shared_bn", "joint"),
    IdentityField("ccn", "kernel_size"), IdentityField("ccn", "stride"),
    IdentityField("ccn", "padding"), IdentityField("ccn", "corr_scale"),
    IdentityField("ccn", "share_fc"), _since("ccn", "fc_bias", True),
    IdentityField("ccn", "kernel_source"), IdentityField("ccn", "kg_hidden"),
    IdentityField("data", "height"), IdentityField("data", "width"),
)

#: Fields of the model/ccn sections that do not define the network (initial weights only).
NOT_IDENTITY = frozenset({"model.pretrained", "model.init_from"})


def identity_values(cfg: Any) -> dict[str, Any]:
    """``{"model.arch": "resnet50", …}`` of every :data:`MODEL_IDENTITY` field of ``cfg``
    (a :class:`Config` or its ``to_dict()`` mapping); a field missing from an old mapping
    takes its legacy value."""
    out: dict[str, Any] = {}
    for f in MODEL_IDENTITY:
        if isinstance(cfg, dict):
            section = cfg.get(f.section) or {}
            value = section.get(f.name, f.legacy) if f.has_legacy else section.get(f.name)
        else:
            value = getattr(getattr(cfg, f.section), f.name)
        out[f.key] = list(value) if isinstance(value, tuple) else value
    return out


def identity_digest(cfg: Any) -> str:
    """16 hex digits of sha256 over the identity fields (the layout of the first release:
    ``{"model": {...}, "ccn": {...}, "input": [height, width]}``, legacy values left out)."""
    values = identity_values(cfg)
    arch: dict[str, Any] = {"model": {}, "ccn": {}, "input": [values["data.height"],
                                                                values["data.width"]]}
    for f in MODEL_IDENTITY:
        if f.section == "data":
            continue
        value = values[f.key]
        if f.has_legacy and value == f.legacy:
            continue
        arch[f.section][f.name] = value
    blob = json.dumps(arch, sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def identity_differences(a: Any, b: Any) -> list[str]:
    """``["model.shared_bn: 'joint' vs 'per_modality'", …]``: the identity fields where the
    configs (or config mappings) ``a`` and ``b`` differ, in :data:`MODEL_IDENTITY` order."""
    va, vb = identity_values(a), identity_values(b)
    return [f"{k}: {va[k]!r} vs {vb[k]!r}" for k in va if va[k] != vb[k]]

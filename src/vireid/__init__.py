"""vireid: visible-infrared cross-modality person re-identification (DSCSN + CCN).

The public API is the names in ``__all__`` (see the README, "Use as a library"); everything
else may change between versions. Importing ``vireid`` is light: torch and the rest load on
first use of a name that needs them, and nothing changes global state.
"""
from __future__ import annotations

import importlib
from typing import Any

from vireid.errors import CheckpointError, ConfigError, DataError, VireidError

__version__ = "0.1.0"

#: public name -> module that defines it (imported on first access)
_LAZY = {
    "load": "vireid.api",
    "Model": "vireid.api",
    "evaluate": "vireid.api",
    "train": "vireid.api",
    "FeatureSet": "vireid.engine.features",
    "Config": "vireid.config",
    "load_config": "vireid.config",
    "register_dataset": "vireid.data.registry",
    "register_loss": "vireid.losses.registry",
    "register_scoring": "vireid.scoring.scorers",
    "register_backbone": "vireid.models.backbones",
    # the types a plugin's entries are made of
    "Protocol": "vireid.data.registry",
    "ImageRecord": "vireid.data.records",
    "TrainSplit": "vireid.data.records",
    "EvalSplit": "vireid.data.records",
    "BackboneOptions": "vireid.models.backbones",
}

__all__ = ["__version__", "VireidError", "ConfigError", "DataError", "CheckpointError",
           *_LAZY]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'vireid' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))

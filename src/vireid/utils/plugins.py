"""Plugins: modules imported before any registered name is resolved.

A plugin is an ordinary Python module that registers entries through vireid's public
decorators (``vireid.register_loss``, ``register_dataset``, ``register_scoring``,
``register_backbone``). It is named

* in the environment variable ``VIREID_PLUGINS`` (comma-separated module names), or
* in the entry-point group ``vireid.plugins`` of an installed distribution
  (``[project.entry-points."vireid.plugins"] mylab = "mylab.vireid_plugin"``).

Both are imported once per process, the first time any registry is asked for a name.
"""
from __future__ import annotations

import importlib
import logging
import os
from importlib import metadata

from vireid.errors import ConfigError

log = logging.getLogger(__name__)

ENV_VAR = "VIREID_PLUGINS"
ENTRY_POINT_GROUP = "vireid.plugins"

_state = {"loaded": False, "loading": False}
_loaded: list[str] = []


def _env_modules() -> list[str]:
    raw = os.environ.get(ENV_VAR, "")
    return [m.strip() for m in raw.split(",") if m.strip()]


def load_plugins(force: bool = False) -> list[str]:
    """Import every plugin module (once; ``force`` imports again, for tests that change
    ``VIREID_PLUGINS``). Returns the names of the modules imported so far.

    Raises:
        ConfigError: a named module cannot be imported (the message names it, where it was
            named, and the import's own error).
    """
    if (_state["loaded"] and not force) or _state["loading"]:
        return list(_loaded)
    _state["loading"] = True  # a plugin that looks a name up while importing must not recurse
    try:
        for name in _env_modules():
            if name in _loaded and not force:
                continue
            try:
                importlib.import_module(name)
            except Exception as exc:  # any failure of third-party code: name it, once
                raise ConfigError(f"plugin module {name!r} named in {ENV_VAR} could not be "
                                  f"imported: {type(exc).__name__}: {str(exc)[:300]}") from exc
            if name not in _loaded:
                _loaded.append(name)
            log.debug("plugin %s imported (%s)", name, ENV_VAR)
        for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
            if ep.value in _loaded and not force:
                continue
            try:
                ep.load()
            except Exception as exc:
                raise ConfigError(f"plugin {ep.name!r} = {ep.value!r} of the entry-point group "
                                  f"{ENTRY_POINT_GROUP!r} could not be imported: "
                                  f"{type(exc).__name__}: {str(exc)[:300]}") from exc
            if ep.value not in _loaded:
                _loaded.append(ep.value)
            log.debug("plugin %s imported (entry point %s)", ep.value, ep.name)
        _state["loaded"] = True
    finally:
        _state["loading"] = False
    return list(_loaded)


def loaded_plugins() -> list[str]:
    """Modules imported as plugins so far (for ``vireid info`` and run provenance)."""
    return list(_loaded)

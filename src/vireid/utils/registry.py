"""The one registry type behind every extensible name of vireid.

Data sets (``data.dataset``), losses (``loss.kind``), scoring modes (``eval.scoring``) and
backbones (``model.arch``) are each a :class:`Registry` whose entries carry everything the
rest of the code asks about them. The config only checks types and ranges; a name is
resolved against its registry when something is built, so an entry registered from outside
the package (a plugin, see :mod:`vireid.utils.plugins`) is as good as a built-in one.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, Generic, Optional, TypeVar, overload

from vireid.errors import ConfigError
from vireid.utils import plugins

T = TypeVar("T")
_MISSING: Any = object()


class Registry(Generic[T]):
    """Names → entries of one kind.

    ``key`` is the config option the names are the values of (``"loss.kind"``); it leads
    the message of a failed look-up, which lists the names there are. Every look-up and
    every listing first imports the plugins (once per process), so a plugin's entries are
    there before any name is resolved.
    """

    def __init__(self, kind: str, key: str) -> None:
        self.kind = kind
        self.key = key
        self._entries: dict[str, T] = {}

    # ------------------------------------------------------------------ registering
    @overload
    def register(self, name: str, entry: T, *, replace: bool = False) -> T: ...

    @overload
    def register(self, name: str, entry: None = None, *, replace: bool = False
                 ) -> Callable[[T], T]: ...

    def register(self, name: str, entry: Optional[T] = None, *, replace: bool = False):  # type: ignore[no-untyped-def]
        """Register ``entry`` as ``name``; without ``entry``, a decorator that registers
        what it decorates. A name registered twice is refused unless ``replace=True``
        (two plugins claiming one name should not silently shadow each other)."""
        if not isinstance(name, str) or not name or name != name.strip():
            raise ConfigError(f"{self.kind} name: expected a non-empty string without "
                              f"surrounding spaces, found {name!r}")

        def put(obj: T) -> T:
            if name in self._entries and not replace:
                raise ConfigError(f"{self.kind} {name!r} is already registered; pass "
                                  f"replace=True to replace it")
            self._entries[name] = obj
            return obj

        return put if entry is None else put(entry)

    def unregister(self, name: str) -> None:
        """Remove ``name`` (tests and plugins that replace a built-in)."""
        self._entries.pop(name, None)

    # ------------------------------------------------------------------ looking up
    def get(self, name: str, default: Any = _MISSING) -> T:
        """The entry ``name``; :class:`ConfigError` listing the registered names otherwise
        (or ``default`` when one is given, as a mapping's ``get`` does)."""
        plugins.load_plugins()
        try:
            return self._entries[name]
        except (KeyError, TypeError):
            if default is not _MISSING:
                return default
            raise ConfigError(f"{self.key}: expected one of {', '.join(self.names())}, "
                              f"found {name!r}") from None

    def names(self) -> list[str]:
        """Registered names, in registration order (built-ins first)."""
        plugins.load_plugins()
        return list(self._entries)

    def items(self) -> list[tuple[str, T]]:
        plugins.load_plugins()
        return list(self._entries.items())

    def __getitem__(self, name: str) -> T:
        return self.get(name)

    def __setitem__(self, name: str, entry: T) -> None:
        self._entries[name] = entry

    def __delitem__(self, name: str) -> None:
        del self._entries[name]

    def __contains__(self, name: object) -> bool:
        plugins.load_plugins()
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self.names())

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}: {', '.join(self._entries)})"

"""Schema checks of the files vireid writes itself (checkpoints, feature files, index
manifests): every key a reader uses is present and of the kind it expects, so that a file
that was edited, cut or written by something else is refused with one message naming the
file and the field, instead of a ``KeyError`` or ``TypeError`` deep inside the reader.

A schema is a mapping ``field name -> Kind`` (a nested mapping for a sub-object)::

    check_fields(obj, {"count": NONNEG_INT,
                       "feature": optional({"F_shape": list_of(POS_INT, 3)})},
                 "INDEX/manifest.json", CheckpointError)

raises ``CheckpointError("INDEX/manifest.json: field 'feature.F_shape': expected a list of
3 items, each an integer ≥ 1, found 'x' (str)")``, or ``… field 'count' is missing
(expected an integer ≥ 0)``. A field whose name is wrapped in :func:`opt` may be
missing (older files); when present it is checked like any other.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Union

from vireid.errors import VireidError

#: Longest part of a found value's repr quoted in a message (the rest is counted).
MAX_VALUE_CHARS = 60


@dataclass(frozen=True)
class Kind:
    """What a field must be: ``name`` for messages ("an integer ≥ 0"), ``test`` the check."""

    name: str
    test: Callable[[Any], bool]


@dataclass(frozen=True)
class MayLack:
    """A schema key that older files may lack (see :func:`opt`)."""

    key: str


Schema = Mapping[Union[str, MayLack], Union[Kind, "Schema", "NullableSchema", "Each"]]


@dataclass(frozen=True)
class NullableSchema:
    """A sub-object that may also be ``None`` (see :func:`optional`)."""

    schema: Schema


@dataclass(frozen=True)
class Each:
    """A list of sub-objects, each checked against ``schema`` (see :func:`each`)."""

    schema: Schema


def each(schema: Schema) -> Each:
    """A list whose items are mappings of ``schema`` (named ``field[i].sub`` in messages)."""
    return Each(schema)


def opt(key: str) -> MayLack:
    """A field that older files may lack: checked only when present."""
    return MayLack(key)


def optional(kind: Union[Kind, Schema]) -> Union[Kind, NullableSchema]:
    """``kind`` or ``None``."""
    if isinstance(kind, Kind):
        return Kind(f"{kind.name} or null", lambda v: v is None or kind.test(v))
    return NullableSchema(kind)


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


INT = Kind("an integer", _is_int)
NONNEG_INT = Kind("an integer ≥ 0", lambda v: _is_int(v) and v >= 0)
POS_INT = Kind("an integer ≥ 1", lambda v: _is_int(v) and v >= 1)
BOOL = Kind("true or false", lambda v: isinstance(v, bool))
STR = Kind("a string", lambda v: isinstance(v, str))
NUMBER = Kind("a number", lambda v: isinstance(v, (int, float)) and not isinstance(v, bool))
DICT = Kind("a mapping", lambda v: isinstance(v, dict))


def one_of(*values: Any) -> Kind:
    """Exactly one of ``values`` (same type and value)."""
    return Kind(f"one of {', '.join(map(repr, values))}",
                lambda v: any(is_exactly(v, x) for x in values))


def list_of(item: Kind, length: int | None = None) -> Kind:
    """A list (or tuple) of ``item``; exactly ``length`` items when given."""
    n = "" if length is None else f"{length} "
    return Kind(f"a list of {n}items, each {item.name}",
                lambda v: isinstance(v, (list, tuple))
                and (length is None or len(v) == length) and all(item.test(x) for x in v))


def kind_of(tp: type, name: str) -> Kind:
    """An instance of ``tp`` (e.g. ``torch.Tensor``), called ``name`` in messages."""
    return Kind(name, lambda v: isinstance(v, tp))


def is_exactly(value: Any, expected: Any) -> bool:
    """``value == expected`` and of the same type: a format marker compared without
    ``True == 1`` and without a tensor's elementwise ``==`` (ambiguous as a bool)."""
    return type(value) is type(expected) and value == expected


def describe(value: Any) -> str:
    """A short account of a found value: its repr cut to :data:`MAX_VALUE_CHARS` (with the
    full length) and its type."""
    if value is None:
        return "null"
    text = repr(value)
    if len(text) > MAX_VALUE_CHARS:
        text = f"{text[:MAX_VALUE_CHARS]}… ({len(text)} characters)"
    return f"{text} ({type(value).__name__})"


def field_error(where: str, field: str, expected: str, found: str,
                error: type[VireidError]) -> VireidError:
    """The one message of a bad field: ``WHERE: field 'F': expected E, found X``."""
    return error(f"{where}: field {field!r}: expected {expected}, found {found}")


def check_fields(obj: Any, schema: Schema, where: str, error: type[VireidError],
                 prefix: str = "") -> None:
    """Check ``obj`` (a mapping) against ``schema``; raise ``error`` naming ``where`` (the
    file) and the first bad field (dotted for nested ones)."""
    if not isinstance(obj, dict):
        raise field_error(where, prefix.rstrip(".") or "(top level)", "a mapping",
                          describe(obj), error)
    for key, kind in schema.items():
        name = key.key if isinstance(key, MayLack) else key
        field = f"{prefix}{name}"
        if name not in obj:
            if isinstance(key, MayLack):
                continue
            raise error(f"{where}: field {field!r} is missing (expected {_expected(kind)})")
        value = obj[name]
        if isinstance(kind, Kind):
            if not kind.test(value):
                raise field_error(where, field, kind.name, describe(value), error)
        elif isinstance(kind, NullableSchema):
            if value is not None:
                check_fields(value, kind.schema, where, error, field + ".")
        elif isinstance(kind, Each):
            if not isinstance(value, list):
                raise field_error(where, field, _expected(kind), describe(value), error)
            for i, item in enumerate(value):
                check_fields(item, kind.schema, where, error, f"{field}[{i}].")
        else:
            check_fields(value, kind, where, error, field + ".")


def _expected(kind: Any) -> str:
    if isinstance(kind, Kind):
        return kind.name
    if isinstance(kind, NullableSchema):
        return "a mapping or null"
    if isinstance(kind, Each):
        return "a list of mappings"
    return "a mapping"

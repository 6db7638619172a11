"""Bounded pieces of error messages: a value echoed back to the user, and the reason of a
failed ``torch.load``.

Every message that quotes a value the user gave (a config value, an override, a token of a
split file) goes through :func:`echo`, so that a 250 MB string or a YAML alias bomb gives a
one-line message instead of a line as long as the input. Every message that quotes why
``torch.load`` refused a file (checkpoints, pretrained weights) goes through
:func:`short_load_reason`, which keeps torch's one-line reason and drops its advice to retry
with ``weights_only=False`` (unsafe advice for a file that is not ours).
"""
from __future__ import annotations

from typing import Any

#: Longest echo of a value in a message, before the "… (size)" tail.
ECHO_CHARS = 60

#: Longest part of torch's own error message quoted in a message.
MAX_REASON_CHARS = 120

# Integers above this many bits are not printed (Python refuses str() past 4300 digits, and
# no option of vireid means anything at that size).
_MAX_INT_BITS = 1024


def size_of(value: Any) -> str:
    """The type and size of ``value`` in words: "a str of 5000 characters", "a list of 12
    items", "a dict of 3 keys", "an int of about 400 digits"."""
    name = type(value).__name__
    article = "an" if name[:1] in "aeiou" else "a"
    if isinstance(value, str):
        return f"a str of {_count(len(value), 'character')}"
    if isinstance(value, (bytes, bytearray)):
        return _count(len(value), "byte")
    if isinstance(value, dict):
        return f"a dict of {_count(len(value), 'key')}"
    if isinstance(value, (list, tuple, set, frozenset)):
        return f"{article} {name} of {_count(len(value), 'item')}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"an int of about {_int_digits(value)} digits"
    return f"{article} {name}"


def _count(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def _int_digits(value: int) -> int:
    return max(1, int(abs(value).bit_length() * 0.30103) + 1)


def _bounded_repr(value: Any, budget: int) -> str:
    """``repr(value)`` cut after about ``budget`` characters, built without ever making the
    whole repr (a nested alias structure can expand to gigabytes; a recursive one never
    ends). Each step writes at least one character, so this ends on any input."""
    out: list[str] = []
    used = 0

    def emit(text: str) -> None:
        nonlocal used
        out.append(text)
        used += len(text)

    def walk(v: Any) -> None:
        if used > budget:
            return
        room = budget - used + 1
        if isinstance(v, (str, bytes, bytearray)):
            text = repr(v[:room])
            emit(text if len(v) <= room else text[:-1])  # cut: no closing quote
        elif isinstance(v, bool) or v is None or isinstance(v, float):
            emit(repr(v))
        elif isinstance(v, int):
            emit(repr(v) if v.bit_length() <= _MAX_INT_BITS else f"<{size_of(v)}>")
        elif isinstance(v, dict):
            emit("{")
            for i, (k, item) in enumerate(v.items()):
                if used > budget:
                    return
                if i:
                    emit(", ")
                walk(k)
                emit(": ")
                walk(item)
            emit("}")
        elif isinstance(v, (list, tuple, set, frozenset)):
            left, right = {list: "[]", tuple: "()"}.get(type(v), "{}")
            emit(left)
            for i, item in enumerate(v):
                if used > budget:
                    return
                if i:
                    emit(", ")
                walk(item)
            emit(right)
        else:
            emit(repr(v)[:room])

    walk(value)
    return "".join(out)


def echo(value: Any, limit: int = ECHO_CHARS) -> str:
    """``repr(value)`` for a message when it is at most ``limit`` characters long; else its
    first ``limit`` characters, "…" and the value's type and size, e.g.
    ``'aaaa…' (a str of 5000 characters)``.

    Never builds more than about ``limit`` characters, whatever the value's size.
    """
    text = _bounded_repr(value, limit)
    if len(text) <= limit:
        return text
    return f"{text[:limit]}… ({size_of(value)})"


def echo_typed(value: Any, limit: int = ECHO_CHARS) -> str:
    """:func:`echo` followed by the type in parentheses, e.g. ``'one' (str)``; a cut value
    already ends with its type and size."""
    text = _bounded_repr(value, limit)
    if len(text) <= limit:
        return f"{text} ({type(value).__name__})"
    return f"{text[:limit]}… ({size_of(value)})"


def short_load_reason(exc: BaseException) -> str:
    """One short line from the error of a failed ``torch.load``: the weights-only unpickler's
    reason when there is one (the rest of that message is advice about
    ``weights_only=False``, wrong advice for a file that is not ours), else the first
    sentence of the first line; at most :data:`MAX_REASON_CHARS` characters of torch's text,
    after the exception's type name."""
    text = str(exc)
    marker = "WeightsUnpickler error:"
    if marker in text:
        rest = [ln.strip() for ln in text.split(marker, 1)[1].splitlines() if ln.strip()]
        line = rest[0] if rest else ""
    elif text.startswith("Weights only load failed"):
        # The reason is the first line that is not torch's advice (about weights_only, or
        # pointing to its documentation), e.g. "Trying to load unsupported GLOBAL …".
        rest = [ln.strip() for ln in text.splitlines()[1:] if ln.strip()]
        reasons = [ln for ln in rest if "weights_only" not in ln
                   and not ln.startswith("Check the documentation")]
        line = reasons[0] if reasons else "Weights only load failed."
    else:
        line = next((ln.strip() for ln in text.splitlines() if ln.strip()), "")
        # miniz and friends append paragraphs of advice after the first sentence
        end = line.find(". ")
        if end > 0:
            line = line[:end + 1]
    if len(line) > MAX_REASON_CHARS:
        line = line[:MAX_REASON_CHARS - 1] + "…"
    name = type(exc).__name__
    if not line:
        return f"{name} (the file ends early)" if isinstance(exc, EOFError) else name
    return f"{name}: {line}"

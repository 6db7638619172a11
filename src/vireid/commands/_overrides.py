"""Dotted ``KEY=VALUE`` config overrides on the command line, accepted anywhere after the
sub-command (``vireid train --config P loss.kind=idl --data-root D -o R``).

argparse gives a ``nargs="*"`` positional only the first run of positional words; later
ones come back as "unrecognized arguments". A command that takes overrides therefore
parses with :class:`OverridesParsing`, which moves every leftover ``KEY=VALUE`` word into
``args.overrides`` (in command-line order) and still refuses anything else, and a key
given twice, with one ``error:`` line.
"""
from __future__ import annotations

import argparse
from typing import Optional, Sequence

#: Said in every such command's help, so that the usage line's place is not taken as a rule.
WHERE = "KEY=VALUE overrides may come anywhere after the command name"


def is_override(word: str) -> bool:
    """A ``KEY=VALUE`` word (not an option such as ``--data-root=D``)."""
    return "=" in word and not word.startswith("-")


def override_key(word: str) -> str:
    """The dotted key of an override word (``train.lr`` of ``train.lr=0.05``)."""
    return word.split("=", 1)[0].strip()


class OverridesParsing(argparse.ArgumentParser):
    """Parsing of a sub-command with an ``overrides`` positional (see the module docstring).

    Only the argument-parsing step differs; :func:`add_overrides` switches a sub-parser made
    by ``add_parser`` (whatever its class) to it.
    """

    def parse_known_args(self, args: Optional[Sequence[str]] = None,
                         namespace: Optional[argparse.Namespace] = None
                         ) -> tuple[argparse.Namespace, list[str]]:
        ns, rest = super().parse_known_args(args, namespace)
        ns.overrides = list(getattr(ns, "overrides", None) or []) + \
            [w for w in rest if is_override(w)]
        rest = [w for w in rest if not is_override(w)]
        if rest:
            hint = "" if all(w.startswith("-") for w in rest) else \
                " (config overrides take the form KEY=VALUE, e.g. train.lr=0.05)"
            self.error(f"unrecognized arguments: {' '.join(rest)}{hint}")
        first: dict[str, str] = {}
        for word in ns.overrides:
            key = override_key(word)
            if key in first:
                self.error(f"override key {key} is given twice ({first[key]} and {word}); "
                           f"expected each key once")
            first[key] = word
        return ns, rest


_CLASSES: dict[type, type] = {}


def add_overrides(p: argparse.ArgumentParser, help: str = "dotted config overrides") -> None:
    """Add the ``overrides`` positional (``KEY=VALUE …``) to the sub-parser ``p`` and make
    such words welcome anywhere on its command line."""
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help=f"{help} ({WHERE})")
    base = type(p)
    if not issubclass(base, OverridesParsing):
        # The sub-parser was made by argparse with the top-level parser's class (the CLI's
        # one-line error reporting); keep that class and add the override parsing on top.
        if base not in _CLASSES:
            _CLASSES[base] = type(f"{base.__name__}WithOverrides", (OverridesParsing, base), {})
        p.__class__ = _CLASSES[base]


"""The ``vireid`` command line: builds the parser from :mod:`vireid.commands` and runs one command.

Each command module parses its own arguments and calls library code. Errors caused by user
input (:class:`~vireid.errors.VireidError`) become one ``error: …`` line and exit code 2.
"""
from __future__ import annotations

import argparse
import importlib
import logging
import sys
from typing import Optional, Sequence

from . import __version__
from .errors import VireidError

# Sub-command modules, in the order `vireid --help` lists them.
COMMANDS = ("info", "synth", "data", "train", "eval", "demo", "bench", "reproduce", "report",
            "figures", "index", "search", "export")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vireid",
        description="Visible-infrared person re-identification: DSCSN + Contrastive Correlation Network.")
    parser.add_argument("--version", action="version", version=f"vireid {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("-q", "--quiet", action="store_true", help="warnings and errors only")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"vireid.commands.{name}").register(sub)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    level = logging.DEBUG if args.verbose else logging.WARNING if args.quiet else logging.INFO
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except VireidError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

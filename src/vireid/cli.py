"""The ``vireid`` command line: builds the parser from :mod:`vireid.commands` and runs one command.

Each command module parses its own arguments and calls library code. Errors caused by user
input (:class:`~vireid.errors.VireidError`) become one ``error: …`` line and exit code 2, and
so do OS errors that reach this level (a full disk, a missing permission): they name the
file and the errno. ``-v``/``-q`` work before and after the sub-command. A closed stdout
(``vireid data split … | head``) ends the command quietly with exit code 141 (128 + SIGPIPE,
what a shell reports for a program killed by SIGPIPE); Ctrl-C prints ``interrupted`` and
exits 130. Any other exception is a bug of vireid: one ``error: … (this is a bug, please
report it)`` line and exit code 1, the traceback only with ``-v``.
"""
from __future__ import annotations

import argparse
import errno
import importlib
import logging
import os
import sys
import traceback
import typing
from typing import Iterator, Optional, Sequence

from . import __version__
from .errors import VireidError
from .utils.atomic import describe_os_error

# Sub-command modules, in the order `vireid --help` lists them.
COMMANDS = ("info", "synth", "data", "train", "eval", "demo", "bench", "reproduce", "report",
            "figures", "index", "search", "export", "pretrain", "sweep")

#: Exit code of a command whose stdout reader went away (128 + SIGPIPE).
EXIT_BROKEN_PIPE = 141
#: Exit code of an unexpected exception (a bug), as Python's own for an uncaught one.
EXIT_BUG = 1
#: Longest part of an unexpected exception's message printed on its error line.
MAX_BUG_MESSAGE = 300


class HelpFormatter(argparse.HelpFormatter):
    """Appends "(default: X)" to an option's help ("(default: none)" when it has no value)
    unless the help already names its default or the option takes no value (flags) or is
    required."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if ("default" in text.lower() or action.required or not action.option_strings
                or action.nargs == 0 or action.default is argparse.SUPPRESS):
            return text
        if action.default is None:
            return f"{text} (default: none)"
        return f"{text} (default: %(default)s)"


class ArgumentParser(argparse.ArgumentParser):
    """argparse's parser, reporting a usage error as one ``error: …`` line (exit code 2)
    like every other bad input, instead of the usage block followed by ``prog: error:``."""

    def error(self, message: str) -> "typing.NoReturn":  # type: ignore[name-defined]
        self.exit(2, f"error: {self.prog}: {message} (see {self.prog} --help)\n")


def _all_parsers(parser: argparse.ArgumentParser) -> Iterator[argparse.ArgumentParser]:
    """``parser`` and every sub-parser below it (depth first)."""
    yield parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            seen: set[int] = set()
            for sp in action.choices.values():
                if id(sp) not in seen:  # aliases map several names to one parser
                    seen.add(id(sp))
                    yield from _all_parsers(sp)


def _add_log_options(p: argparse.ArgumentParser, top: bool) -> None:
    # Below the top level the defaults are SUPPRESS, so a sub-parser does not reset a flag
    # given before the sub-command (argparse copies sub-parser defaults over the namespace).
    kw = {} if top else {"default": argparse.SUPPRESS}
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging", **kw)
    p.add_argument("-q", "--quiet", action="store_true", help="warnings and errors only", **kw)


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(
        prog="vireid", formatter_class=HelpFormatter,
        description="Visible-infrared person re-identification: DSCSN + Contrastive Correlation Network.")
    parser.add_argument("--version", action="version", version=f"vireid {__version__}",
                        help="print the version and exit")
    _add_log_options(parser, top=True)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"vireid.commands.{name}").register(sub)
    for p in _all_parsers(parser):
        p.formatter_class = HelpFormatter
        if p is not parser and "--verbose" not in p._option_string_actions:
            _add_log_options(p, top=False)
    return parser


def _quiet_stdout() -> None:
    """After EPIPE: point stdout at /dev/null so the interpreter's final flush cannot raise
    (the documented recipe for a Python program writing into ``| head``)."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):  # stdout without a file descriptor (tests)
        pass


def _os_error_line(exc: OSError) -> str:

    where = exc.filename if exc.filename is not None else None
    if where is not None:
        where = os.fsdecode(where) if isinstance(where, bytes) else str(where)
        return f"{where!r}: {describe_os_error(exc)}" if not where.isprintable() else \
            f"{where}: {describe_os_error(exc)}"
    return describe_os_error(exc)


def _bug_line(exc: BaseException, verbose: bool) -> str:
    """The one line of an unexpected exception: its type, the start of its message, and
    that it is a bug (with -v the traceback follows)."""
    text = " ".join(str(exc).split())
    if len(text) > MAX_BUG_MESSAGE:
        text = text[:MAX_BUG_MESSAGE] + f"… ({len(text)} characters)"
    hint = "" if verbose else "; run with -v for the traceback"
    return (f"error: {type(exc).__name__}{': ' + text if text else ''} (this is a bug, please "
            f"report it{hint})")


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run one command; returns its exit code (0; 2 for bad input; 1 for a bug; 130 after
    Ctrl-C; 141 after a closed stdout).

    A torchrun rank (``WORLD_SIZE`` > 1) running as a program (``argv`` None) ends here with
    ``os._exit`` once its output is flushed: the interpreter's teardown destroys gloo's and
    numba's native threads, and one of them now and then aborted a rank whose work was done
    ("terminate called without an active exception", exit -6).
    """
    rc = _run(argv)
    if argv is None and _torchrun_world() > 1:
        logging.shutdown()
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):
                pass
        os._exit(rc)
    return rc


def _torchrun_world() -> int:
    try:
        return int(os.environ.get("WORLD_SIZE", "1") or 1)
    except ValueError:
        return 1


def _run(argv: Optional[Sequence[str]] = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    # -v as given, until the parser has read it (the parser itself may be what fails).
    seen = {"verbose": any(a in ("-v", "--verbose") for a in args_list)}
    try:
        return _main(args_list, seen)
    except BrokenPipeError:
        _quiet_stdout()
        return EXIT_BROKEN_PIPE
    except VireidError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        if exc.errno == errno.EPIPE:
            _quiet_stdout()
            return EXIT_BROKEN_PIPE
        # An OS error no library layer turned into a VireidError (a full disk, a missing
        # permission while reading or writing): still one line naming the file and errno.
        print(f"error: {_os_error_line(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - the last resort: a bug, reported in one line
        if seen["verbose"]:
            traceback.print_exc(file=sys.stderr)
        print(_bug_line(exc, seen["verbose"]), file=sys.stderr)
        return EXIT_BUG


def _main(argv: list[str], seen: dict[str, bool]) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version, or a usage error (already printed)
        return exc.code if isinstance(exc.code, int) else 2
    verbose, quiet = getattr(args, "verbose", False), getattr(args, "quiet", False)
    args.verbose, args.quiet = verbose, quiet
    seen["verbose"] = bool(verbose)
    level = logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    # File names that are not valid UTF-8 reach Python as lone surrogates; print them back
    # as the original bytes (as `ls` does) instead of failing with UnicodeEncodeError.
    for stream in (sys.stdout, sys.stderr):
        if hasattr(stream, "reconfigure"):
            try:
                stream.reconfigure(errors="surrogateescape" if stream is sys.stdout
                                   else "backslashreplace")
            except (ValueError, OSError):
                pass
    rc = int(args.func(args) or 0)
    sys.stdout.flush()  # surface a broken pipe here, not in the interpreter's exit
    return rc


if __name__ == "__main__":
    sys.exit(main())

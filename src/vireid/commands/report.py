"""``vireid report RUN_DIR… -o report.html``: one self-contained HTML page over run folders."""
from __future__ import annotations

import argparse

from ._checks import check_output_file, is_stdout, write_text_output


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("report", help="one self-contained HTML page of run folders "
                                      "(results, curves, figures, then the config)")
    p.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="run or reproduce output folders")
    p.add_argument("-o", "--output", default="report.html",
                   help="HTML file to write; '-' is stdout (default report.html)")
    p.add_argument("--title", default="vireid report", help="page title")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    # late: keeps `vireid --help` fast (the library imports torch, ~1.7 s)
    from ..viz.report import build_report, write_report

    check_output_file(args.output, "-o", stdout_ok=True)
    if is_stdout(args.output):
        write_text_output(args.output, build_report(args.run_dirs, title=args.title))
        return 0
    path = write_report(args.run_dirs, args.output, title=args.title)
    print(f"wrote {path}")
    return 0

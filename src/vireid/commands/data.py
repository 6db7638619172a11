"""``vireid data summary``, ``vireid data split`` and ``vireid data check``: dataset counts,
exact protocol lists, and every problem of a folder at once."""
from __future__ import annotations

import argparse
import json

from ._checks import RegistryChoices, check_output_file, write_text_output

#: The registered data sets (looked up only when a value is checked or help is printed).
DATASET_CHOICES = RegistryChoices("vireid.data.registry:DATASETS")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("data", help="dataset summary, exact query/gallery lists of a protocol, "
                                    "folder check")
    dsub = p.add_subparsers(dest="data_command", metavar="SUBCOMMAND")

    s = dsub.add_parser("summary", help="ids and images per split/camera/modality; protocol sizes")
    s.add_argument("--dataset", required=True, choices=DATASET_CHOICES, metavar="NAME",
                   help="layout of the folder, a registered data set: %(choices)s")
    s.add_argument("--root", required=True, help="dataset folder as downloaded")
    s.add_argument("--json", action="store_true", help="print JSON instead of a table")
    s.set_defaults(func=run)

    sp = dsub.add_parser("split", help="exact query and gallery lists of one protocol trial")
    sp.add_argument("--dataset", required=True, choices=DATASET_CHOICES, metavar="NAME",
                    help="layout of the folder, a registered data set: %(choices)s")
    sp.add_argument("--root", required=True, help="dataset folder as downloaded")
    sp.add_argument("--protocol", required=True,
                    help="a protocol of the data set, by name or short form (sysu-all or all); "
                         "`vireid data summary` lists them")
    sp.add_argument("--trial", type=int, required=True,
                    help="trial number, one of the protocol's (`vireid data summary` lists them)")
    sp.add_argument("--shot", choices=("single", "multi"), default=None,
                    help="multi: the protocol's multi-shot variant, where it has one "
                         "(default: the protocol as named)")
    sp.add_argument("--json", action="store_true",
                    help='print {"query": [[path, pid, camid], ...], "gallery": [...]}')
    sp.add_argument("--out", default=None,
                    help="write the output to this file instead of stdout; '-' is stdout "
                         "(default: stdout)")
    sp.set_defaults(func=run)

    c = dsub.add_parser("check", help="every problem of a dataset folder at once, counted by "
                                      "kind (one error line, exit 2), or a one-line summary")
    c.add_argument("--dataset", required=True, choices=DATASET_CHOICES, metavar="NAME",
                   help="layout of the folder, a registered data set: %(choices)s")
    c.add_argument("--root", required=True, help="dataset folder")
    c.set_defaults(func=run)

    p.set_defaults(func=run, _data_parser=p)


def _emit(text: str, out: str | None) -> None:
    if out is None:
        print(text)
        return
    write_text_output(out, text + "\n")


def run(args: argparse.Namespace) -> int:
    # late: keeps `vireid --help` fast (the library imports torch, ~1.7 s)
    from ..evaluation import summary as summ

    if args.data_command == "summary":
        res = summ.dataset_summary(args.dataset, args.root)
        print(json.dumps(res, indent=2) if args.json else summ.format_summary(res))
        return 0
    if args.data_command == "split":
        check_output_file(args.out, "--out", stdout_ok=True)
        lists = summ.split_lists(args.dataset, args.root, args.protocol, args.trial, args.shot)
        if args.json:
            text = json.dumps(lists)
        else:
            rows = [f"{part}\t{path}\t{pid}\t{cam}"
                    for part in ("query", "gallery") for path, pid, cam in lists[part]]
            text = "\n".join(["set\tpath\tpid\tcamid", *rows])
        _emit(text, args.out)
        return 0
    if args.data_command == "check":
        print(summ.check_dataset(args.dataset, args.root))
        return 0
    args._data_parser.print_help()
    return 2

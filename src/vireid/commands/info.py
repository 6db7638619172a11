"""``vireid info``: parameter counts, feature-map shape, kernel count and CCN cost of a config."""
from __future__ import annotations

import argparse
import json

from ..config import load_config, preset_or_path
from ..errors import ConfigError
from ._checks import int_at_least


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("info", help="model size, feature map, CCN kernels and cost of a config")
    p.add_argument("--config", default=None,
                   help="YAML file or preset name (e.g. paper-sysu); required unless --registered")
    p.add_argument("--registered", action="store_true",
                   help="list every registered data set, protocol, loss, scoring mode, backbone "
                        "and metric rule (plugins included: VIREID_PLUGINS) and exit")
    p.add_argument("--num-classes", type=int_at_least(1), default=None,
                   help="ID classes (default: the training identities of the data set's "
                        "standard split, e.g. 395 for SYSU-MM01)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="dotted config overrides")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    # late: keeps `vireid --help` fast (the library imports torch, ~1.7 s)
    from ..data.registry import get_dataset
    from ..api import registered
    from ..models.build import model_info

    if args.registered:
        names = registered()
        if args.json:
            print(json.dumps(names, indent=2))
        else:
            for kind, values in names.items():
                print(f"{kind:<13}{', '.join(values) or '(none)'}")
        return 0
    if args.config is None:
        raise ConfigError("--config: expected a YAML file or a preset name (or --registered)")
    cfg = load_config(preset_or_path(args.config), args.overrides)
    num_classes = args.num_classes or get_dataset(cfg.data.dataset).train_classes
    if num_classes is None:
        raise ConfigError(f"--num-classes: data set {cfg.data.dataset!r} has no standard "
                          f"number of training identities; give --num-classes N")
    info = model_info(cfg, num_classes)
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    c, h, w = info["feature_map"]
    print(f"config                     {args.config} ({cfg.model.arch}, width {cfg.model.width}, "
          f"shared stages {cfg.model.shared_stages}, input {cfg.data.height}x{cfg.data.width})")
    print(f"parameters (total)         {info['params_total']:,}")
    print(f"parameters (no classifier) {info['params_without_classifier']:,}")
    print(f"feature map F              {c} x {h} x {w}")
    print(f"CCN kernels                {info['num_kernels']}")
    print(f"CCN multiply-adds / pair   {info['ccn_macs_per_pair']:,} (direct form, both directions)")
    return 0

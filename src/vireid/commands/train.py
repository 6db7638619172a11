"""``vireid train``: train a model from a config (preset or YAML) into a run folder.

Under ``torchrun --nproc_per_node=K -m vireid train …`` every process joins the process
group (gloo on the CPU, nccl on GPUs) and trains its share of each batch with DDP; rank 0
alone writes files and prints.
"""
from __future__ import annotations

import argparse
import logging
from pathlib import Path

from ..config import load_config, preset_or_path
from ..errors import ConfigError
from ._checks import check_device, check_output_folder, int_at_least, threads_type

log = logging.getLogger(__name__)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train", help="train a model (checkpoints, metrics log and loss curve in RUN_DIR)",
        description="Train DSCSN + CCN (or a baseline loss) from a config. Dotted KEY=VALUE "
                    "overrides follow the options, e.g. train.epochs=5 data.trial=3.")
    p.add_argument("--config", help="YAML file or preset name (paper-sysu, paper-regdb, "
                                    "cpu-synthetic); optional with --resume")
    p.add_argument("--data-root", help="dataset folder (sets data.root)")
    p.add_argument("-o", "--output", "--run-dir", dest="run_dir",
                   help="run folder (config.yaml, metrics.jsonl, checkpoints/)")
    p.add_argument("--resume", nargs="?", const=True, default=False, metavar="RUN_DIR",
                   help="continue the run in RUN_DIR (or in -o) from checkpoints/last.pt")
    p.add_argument("--overwrite", action="store_true",
                   help="delete the run files in RUN_DIR and start over")
    p.add_argument("--stop-after", type=int_at_least(1), default=None, metavar="EPOCHS",
                   help="stop once this many epochs (≥ 1) are done (schedule unchanged; "
                        "--resume continues; default: train.epochs)")
    p.add_argument("--threads", type=threads_type, default=None,
                   help="CPU threads for torch per process (sets train.threads; default: "
                        "torch's choice, or cores / processes under torchrun; fix it for runs "
                        "that must repeat bit for bit across machines)")
    p.add_argument("--pair-groups", type=int_at_least(1), default=None, metavar="G",
                   help="build pairs within G equal groups of each batch's identities "
                        "(default: the number of processes): one process with G=k computes "
                        "what a k-process torchrun run computes")
    p.add_argument("--skip-corrupt", action="store_true",
                   help="drop training images that cannot be decoded (counted in the log) "
                        "instead of stopping (sets data.skip_corrupt=true)")
    p.add_argument("--no-progress", action="store_true", help="log lines instead of a progress bar")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="dotted config overrides")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    run_dir = args.run_dir
    if isinstance(args.resume, str):
        if run_dir and Path(run_dir) != Path(args.resume):
            raise ConfigError(f"--resume {args.resume} and -o {run_dir} name different folders")
        run_dir = args.resume
    if not run_dir:
        raise ConfigError("expected a run folder: -o RUN_DIR (or --resume RUN_DIR)")
    resume = bool(args.resume)
    overrides = list(args.overrides)
    if args.data_root:
        overrides.append(f"data.root={args.data_root}")
    if args.threads is not None:
        overrides.append(f"train.threads={args.threads}")
    if args.skip_corrupt:
        overrides.append("data.skip_corrupt=true")
    if args.config:
        cfg_path = preset_or_path(args.config)
    elif resume:
        cfg_path = Path(run_dir) / "config.yaml"  # the run's own resolved config
    else:
        raise ConfigError("expected --config FILE or a preset name (e.g. --config cpu-synthetic)")
    cfg = load_config(cfg_path, overrides)
    check_output_folder(run_dir, "-o")
    if cfg.train.device == "cuda":  # "auto" falls back to the CPU by itself
        check_device("cuda", "train.device")
    # Imported after validating the config, so that config errors come back without the
    # seconds torch takes to import.
    from ..engine.trainer import train
    from ..utils import distributed as D

    is_main = True
    if D.env_world_size() > 1:
        info = D.init_from_env(device=cfg.train.device, threads_per_rank=cfg.train.threads)
        is_main = info.is_main
        if not is_main:  # one voice: the other ranks only report warnings and errors
            logging.getLogger().setLevel(logging.WARNING)
    try:
        result = train(cfg, run_dir, resume=resume, overwrite=args.overwrite,
                       progress=not args.no_progress and not getattr(args, "quiet", False),
                       stop_after=args.stop_after, pair_groups=args.pair_groups)
        # Every rank done before the group is torn down: a gloo rank whose peer has already
        # left can abort at exit ("terminate called without an active exception").
        D.barrier()
    finally:
        D.cleanup()
    if not is_main:
        return 0
    state = "finished" if result.finished else "stopped"
    print(f"{state} after epoch {result.epochs_done}/{result.epochs_total} "
          f"({result.iterations} iterations, {result.seconds:.1f} s)")
    print(f"checkpoint: {result.selected_checkpoint} (selection: {result.selection})")
    print(f"run folder: {result.run_dir}")
    return 0

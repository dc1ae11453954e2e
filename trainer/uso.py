"""python -m trainer.uso: USO fine-tuning of the ReViSE generator (also SFT and RWR, as ablations).

    python -m trainer.uso --config configs/train/uso.yaml [--lr 1e-5] [key=value ...]
    python -m trainer.uso --demo --steps 4 --out /tmp/uso-demo [--resume]
    python -m trainer.uso --demo revise --steps 2 --out /tmp/uso-demo   # the tiny ReViSE release folder
    torchrun --nproc_per_node 2 -m trainer.uso --config ...     # DDP (or strategy=fsdp)

Every setting (see --help) has the paper's default; a YAML/JSON file and then flags / key=value
overrides change them. Checkpoints are resumable with --resume; Ctrl-C saves and exits.
"""

from __future__ import annotations

import argparse
import logging
import sys
from dataclasses import MISSING, fields

from revise_core.cli import add_debug_flag
from revise_core.cli import run as run_cli

from .config import USOConfig, build_config, parse_override

logger = logging.getLogger("trainer.uso")

EXIT_DIVERGED = 3
EXIT_INTERRUPTED = 130


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m trainer.uso", description=__doc__.split("\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--config", help="YAML or JSON file of settings (below); flags override it")
    parser.add_argument("--resume", action="store_true",
                        help="continue from the newest intact checkpoint in output_dir (settings must match the run's, "
                             "except steps, checkpoint and logging settings)")
    parser.add_argument("--overwrite", action="store_true",
                        help="start a fresh run in an output_dir that holds a run, deleting that run")
    parser.add_argument("--demo", nargs="?", const="tiny", metavar="{tiny,revise}",
                        help="train the tiny random model set on synthetic triplets (plumbing check, CPU); "
                             "'--demo revise' trains the kit's tiny ReViSE release folder")
    parser.add_argument("--out", help="with --demo: folder for models, data and the run (default /tmp/revise-uso-demo)")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="extra overrides of any setting")
    add_debug_flag(parser)
    group = parser.add_argument_group("settings (USOConfig)")
    for f in fields(USOConfig):
        default = f.default if f.default is not MISSING else f.default_factory()
        flag = "--" + f.name.replace("_", "-")
        kind = type(default)
        if kind is bool:
            group.add_argument(flag, dest=f.name, default=None, type=_bool, metavar="{true,false}",
                               help=f"{f.metadata['help']} (default: {default})")
        elif kind is list:
            group.add_argument(flag, dest=f.name, default=None, help=f"{f.metadata['help']}, comma-separated "
                                                                     f"(default: {','.join(default)})")
        else:
            group.add_argument(flag, dest=f.name, default=None, type=kind,
                               help=f"{f.metadata['help']} (default: {default!r})")
    return parser


def _bool(text: str) -> bool:
    if text.lower() in ("1", "true", "yes", "on"):
        return True
    if text.lower() in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got '{text}'")


def parse_args(parser: argparse.ArgumentParser, argv: list[str] | None):
    """Parse; `--demo lr=1e-3` means the tiny demo with an override (the optional value is not a demo name)."""
    args = parser.parse_args(argv)
    if args.demo is not None and args.demo not in ("tiny", "revise"):
        if "=" not in args.demo:
            parser.error(f"--demo takes 'tiny' or 'revise', got '{args.demo}'")
        args.overrides.insert(0, args.demo)
        args.demo = "tiny"
    return args


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parse_args(parser, argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    overrides: dict = {}
    if args.demo:
        from .demo import prepare

        overrides.update(prepare(args.out or "/tmp/revise-uso-demo", args.demo))
        overrides["steps"] = 4
    for item in args.overrides:
        key, value = parse_override(item)
        overrides[key] = value
    for f in fields(USOConfig):
        value = getattr(args, f.name)
        if value is not None:
            overrides[f.name] = value
    try:
        config = build_config(args.config, overrides)
    except (ValueError, FileNotFoundError) as error:
        parser.error(str(error))
    if not args.demo and (not config.manifest or not config.models):
        parser.error("set manifest and models (in --config or as flags), or use --demo")

    from . import state
    from .loop import TerminationRequested, TrainingDivergedError, USOTrainer

    trainer = USOTrainer(config)
    try:
        trainer.setup(resume=args.resume, overwrite=args.overwrite)
    except state.RunExistsError as error:
        raise state.RunExistsError(f"{error}: --resume, --output-dir DIR or --overwrite") from error
    except state.ResumeError as error:
        raise state.ResumeError(f"--resume: {error}") from error
    try:
        history = trainer.train()
    except TrainingDivergedError as error:
        logger.error("%s", error)
        return EXIT_DIVERGED
    except KeyboardInterrupt as error:
        logger.error("interrupted; resume with --resume (output_dir %s)", config.output_dir)
        return 128 + error.signum if isinstance(error, TerminationRequested) else EXIT_INTERRUPTED
    outputs = trainer.cleanup()
    if trainer.rank == 0:
        last = history[-1] if history else {}
        print(f"done: {len(history)} steps logged, last loss {last.get('loss', float('nan')):.5f}; "
              + ", ".join(f"{k}: {v}" for k, v in outputs.items()))
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))

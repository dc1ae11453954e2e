"""python -m bench.toy_rve --quick | --full | --smoke [--out DIR]: run the experiment, write results."""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import shlex
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

import torch

from bench.common import RESULTS

from .conditions import EXACT, FLAWED, UNSEEN
from .config import CRITICS, PRESETS, ToyConfig
from .experiment import plan_runs, run_experiment
from .report import write

CONDITIONS = {"exact": EXACT, "flawed": FLAWED, "unseen": UNSEEN}  # --conditions names


def configure(args: argparse.Namespace) -> tuple[str, ToyConfig]:
    """The preset the flags name, with the flags' changes on top."""
    preset = "quick" if args.quick else "full" if args.full else "smoke"
    config = PRESETS[preset]
    overrides = {name: value for name, value in (("reason_weight", args.reason_weight), ("sigma_max", args.sigma_max))
                 if value is not None}
    if args.learned_critics:
        overrides["learned_critics"] = tuple(dict.fromkeys(args.learned_critics))
    if args.rwr:
        overrides["rwr"] = True
    if args.lambdas is not None:
        overrides["lambdas"] = tuple(dict.fromkeys(args.lambdas))
    if args.sigma_maxes is not None:
        overrides["sigma_maxes"] = tuple(dict.fromkeys(args.sigma_maxes))
    chosen = tuple(CONDITIONS[name] for name in dict.fromkeys(args.conditions)) if args.conditions else config.conditions
    if args.conditions:
        overrides["conditions"] = chosen
    if args.sweep_condition:
        if CONDITIONS[args.sweep_condition] not in chosen:
            raise ValueError(f"--sweep-condition {args.sweep_condition} is not among the conditions run")
        overrides["sweep_condition"] = CONDITIONS[args.sweep_condition].name
    elif config.sweep_condition not in {c.name for c in chosen}:
        overrides["sweep_condition"] = chosen[0].name
    return preset, replace(config, **overrides)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.toy_rve", description=__doc__.split(":")[0])
    size = parser.add_mutually_exclusive_group(required=True)
    size.add_argument("--quick", action="store_true", help="the sensitivity checks and the ideal critic against SFT on exact targets (CPU, under 25 minutes on 2 cores)")
    size.add_argument("--full", action="store_true", help="every condition, arm and sweep (CPU, hours on 2 cores)")
    size.add_argument("--smoke", action="store_true", help="seconds-long plumbing check (numbers mean nothing)")
    parser.add_argument("--out", type=Path, default=None, help="results folder (default bench/results; smoke: a temp dir)")
    parser.add_argument("--workers", type=int, default=2,
                        help="one-thread worker processes (default 2, one per core of a 2-core machine; 1: all in "
                             "this process)")
    parser.add_argument("--workdir", type=Path, default=None,
                        help="work folder (default: a temporary one); given again, the experiment reuses the stages "
                             "and runs recorded there with the same settings and resumes where it stopped")
    parser.add_argument("--reason-weight", type=float, default=None,
                        help="λ of the main runs, instead of the preset's (its sweep must not contain it)")
    parser.add_argument("--sigma-max", type=float, default=None, help="σ_max of the main runs, instead of the preset's")
    parser.add_argument("--conditions", nargs="+", choices=sorted(CONDITIONS), default=None,
                        help="the conditions to run, instead of the preset's (exact targets; 40 %% flawed targets; a "
                             "rule no training target carries out); SFT's sensitivity check needs exact")
    parser.add_argument("--learned-critics", nargs="+", choices=CRITICS, default=None,
                        help="a USO arm per learned critic, instead of the preset's (trains the critics first); their "
                             "share of the ideal critic's gain is reported where that gain is real")
    parser.add_argument("--rwr", action="store_true", help="add the reward-weighted regression arm")
    parser.add_argument("--lambdas", nargs="+", type=float, default=None,
                        help="the ideal critic's λ sweep (besides the main λ), instead of the preset's")
    parser.add_argument("--sigma-maxes", nargs="+", type=float, default=None,
                        help="the ideal critic's σ_max sweep (besides the main σ_max), instead of the preset's")
    parser.add_argument("--sweep-condition", choices=sorted(CONDITIONS), default=None,
                        help="the condition the sweeps run in (default: the preset's, if chosen, else the first)")
    parser.add_argument("--records-only", action="store_true",
                        help="compute nothing: report the runs the work folder (--workdir) has records of, refused "
                             "naming what is missing (a report while another invocation computes the rest)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if args.records_only and args.workdir is None:
        parser.error("--records-only reports a work folder's records: give it with --workdir")
    try:
        preset, config = configure(args)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    try:
        plan_runs(config)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    out = args.out or (RESULTS if not args.smoke else Path(tempfile.mkdtemp(prefix="toy-rve-out-")))
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="toy-rve-"))
    torch.manual_seed(0)
    try:
        results = run_experiment(config, workdir, workers=args.workers, records_only=args.records_only)
    except ValueError as error:  # records_only: what the folder lacks
        print(f"error: {error}", file=sys.stderr)
        return 2
    results["preset"] = preset
    results["device"] = f"CPU ({platform.processor() or platform.machine()}, {os.cpu_count()} cores)"
    results["command"] = shlex.join(["python", "-m", "bench.toy_rve", *(argv if argv is not None else sys.argv[1:])])
    paths = write(results, out)
    summary = {name: {row: round(values["Overall"]["mean"], 3) for row, values in section["objectives"].items()}
               | {f"{row} beats sft": check["beats_sft"] for row, check in section["comparisons"].items()}
               for name, section in results["conditions"].items()}
    checks = {name: check["passes"] for name, check in results["sensitivity"].items()}
    print(json.dumps({"sensitivity_checks_pass": checks, "overall": summary, "files": [str(p) for p in paths]},
                     indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""python -m bench.toy_rve --quick | --full | --smoke [--out DIR]: run the experiment, write results."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
from pathlib import Path

import torch

from bench.common import RESULTS, device_name
from .experiment import FULL, METRICS, QUICK, SMOKE, run_experiment
from .report import write


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.toy_rve", description=__doc__.split(":")[0])
    size = parser.add_mutually_exclusive_group(required=True)
    size.add_argument("--quick", action="store_true", help="CPU preset, about 10 minutes on 2 cores")
    size.add_argument("--full", action="store_true", help="larger preset, meant for a GPU machine")
    size.add_argument("--smoke", action="store_true", help="seconds-long plumbing check (numbers mean nothing)")
    parser.add_argument("--out", type=Path, default=None, help="results folder (default bench/results; smoke: a temp dir)")
    parser.add_argument("--workdir", type=Path, default=None, help="scratch folder (default: a temporary one)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    config = QUICK if args.quick else FULL if args.full else SMOKE
    preset = "quick" if args.quick else "full" if args.full else "smoke"
    out = args.out or (RESULTS if not args.smoke else Path(tempfile.mkdtemp(prefix="toy-rve-out-")))
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="toy-rve-"))
    torch.manual_seed(0)
    results = run_experiment(config, workdir)
    results["preset"], results["device"] = preset, device_name(torch.device("cpu"))
    results["command"] = f"python -m bench.toy_rve --{preset}"
    paths = write(results, out)
    summary = {k: round(v["Overall"]["mean"], 3) for k, v in results["objectives"].items()}
    print(json.dumps({"overall": summary, "files": [str(p) for p in paths]}, indent=2))
    assert set(METRICS) <= set(results["objectives"]["uso"])
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""python -m bench.toy_rve.followup --workdir W [--sigma-max S] [--reason-weight L] [--condition NAME ...]:
USO over every seed at another σ_max / λ, on the stages of an earlier `python -m bench.toy_rve --quick
--workdir W` run, paired seed by seed with that run's SFT results.

The sweeps of the main run use one seed; a point that stands out there (σ_max 0.9 did) needs every seed
before it means anything. This reuses the earlier run's critics, generators and feature cache, so it costs
only the new runs.
"""

from __future__ import annotations

import argparse
import json
import logging
import shlex
import sys
from dataclasses import asdict
from pathlib import Path

from bench.common import RESULTS

from .experiment import QUICK, Run, executor, finetune_all, mean_std

PRESETS = {"quick": QUICK}


def run_followup(results: dict, workdir: Path, *, sigma_max: float, reason_weight: float, conditions: list[str],
                 workers: int) -> dict:
    config = PRESETS[results["preset"]]
    if json.loads(json.dumps(asdict(config))) != results["config"]:
        raise ValueError(f"the '{results['preset']}' preset has changed since these results were made; rerun "
                         "`python -m bench.toy_rve` first")
    unknown = set(conditions) - set(results["conditions"])
    if unknown:
        raise ValueError(f"unknown condition(s) {sorted(unknown)}; the results have {sorted(results['conditions'])}")
    runs = [Run(f"uso-lambda{reason_weight}-sigma{sigma_max}-s{seed}", "uso", seed, condition=name,
                reason_weight=reason_weight, sigma_max=sigma_max) for name in conditions for seed in config.seeds]
    with executor(workers) as pool:
        done = [r for chunk in [pool.submit(finetune_all, config, workdir, [run]) for run in runs]
                for r in chunk.result()]
    sections = {}
    for name in conditions:
        sft_runs = sorted((r for r in results["conditions"][name]["runs"] if r["objective"] == "sft"),
                          key=lambda r: r["seed"])
        sft = [r["scores"]["Overall"] for r in sft_runs]
        uso = [r.scores["Overall"] for r in sorted((r for r in done if r.condition == name), key=lambda r: r.seed)]
        bar = 2 * max(mean_std(sft)["std"], mean_std(uso)["std"])
        margin = mean_std(uso)["mean"] - mean_std(sft)["mean"]
        sections[name] = {"sft": sft, "uso": uso, "sft_overall": mean_std(sft), "uso_overall": mean_std(uso),
                          "paired_difference": mean_std([u - s for u, s in zip(uso, sft, strict=True)]),
                          "verdict": {"uso_minus_sft": margin, "twice_larger_std": bar, "uso_beats_sft": margin > bar},
                          "triggered": [r.triggered for r in done if r.condition == name]}
    return {"sigma_max": sigma_max, "reason_weight": reason_weight, "seeds": list(config.seeds),
            "conditions": sections, "runs": [asdict(r) for r in done]}


def write(followup: dict, out: Path, command: str) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    json_path = out / "toy_rve_followup.json"
    json_path.write_text(json.dumps({**followup, "command": command}, indent=2) + "\n")
    lines = [f"# Toy-RVE follow-up: USO at σ_max {followup['sigma_max']}, λ {followup['reason_weight']}, "
             f"seeds {tuple(followup['seeds'])}", "", f"Command: `{command}` (on the work folder of the quick run "
             "in toy_rve.json; SFT per seed from there).", "",
             "| condition | sft | uso | USO − SFT | 2 × larger std | paired difference (mean ± std) | per seed (uso − sft) |",
             "|---|---|---|---|---|---|---|"]
    for name, section in followup["conditions"].items():
        paired = section["paired_difference"]
        seeds = ", ".join(f"{u - s:+.3f}" for u, s in zip(section["uso"], section["sft"], strict=True))
        lines.append(f"| {name} | {section['sft_overall']['mean']:.3f} ± {section['sft_overall']['std']:.3f} | "
                     f"{section['uso_overall']['mean']:.3f} ± {section['uso_overall']['std']:.3f} | "
                     f"{section['verdict']['uso_minus_sft']:+.3f} | {section['verdict']['twice_larger_std']:.3f} | "
                     f"{paired['mean']:+.3f} ± {paired['std']:.3f} | {seeds} |")
    md_path = out / "toy_rve_followup.md"
    md_path.write_text("\n".join(lines) + "\n")
    return [json_path, md_path]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.toy_rve.followup", description=__doc__.split(":")[0])
    parser.add_argument("--workdir", type=Path, required=True, help="the --workdir of the earlier run")
    parser.add_argument("--results", type=Path, default=RESULTS / "toy_rve.json", help="that run's toy_rve.json")
    parser.add_argument("--sigma-max", type=float, default=0.9)
    parser.add_argument("--reason-weight", type=float, default=None, help="λ (default: the preset's)")
    parser.add_argument("--condition", action="append", default=None,
                        help="a condition name (repeatable; default: every condition of the results)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        results = json.loads(args.results.read_text())
        if not (args.workdir / "generators").is_dir():
            raise ValueError(f"{args.workdir} holds no generators: give the --workdir of a finished "
                             "`python -m bench.toy_rve` run")
        followup = run_followup(results, args.workdir, sigma_max=args.sigma_max,
                                reason_weight=args.reason_weight or PRESETS[results["preset"]].reason_weight,
                                conditions=args.condition or list(results["conditions"]), workers=args.workers)
    except (OSError, ValueError, KeyError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    command = shlex.join(["python", "-m", "bench.toy_rve.followup", *(argv if argv is not None else sys.argv[1:])])
    print(json.dumps({"files": [str(p) for p in write(followup, args.out, command)]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())

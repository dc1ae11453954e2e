"""python -m revise_core.data: dataset-pipeline stages (see docs/data.md).

    python -m revise_core.data rave --pairs literal.jsonl --out DATA [--llm openai|local ...]
    python -m revise_core.data icvg --films FILMS_DIR --vlm VLM_DIR --encoder SIGLIP_DIR --out DATA [--llm ...]
    python -m revise_core.data split --manifest DATA/rave.jsonl --out DATA [--benchmark-fraction 0.1]
    python -m revise_core.data shots --video film.mp4 [--json]
"""

from __future__ import annotations

import argparse
import json
import logging
import sys

from ..cli import add_debug_flag
from ..cli import run as run_cli
from . import stages

EXIT_PENDING = 3


def _chat(args):
    from ..llm import LocalChat, OpenAIChat

    if args.llm == "local":
        return LocalChat(args.llm_folder)
    return OpenAIChat(base_url=args.llm_url, model=args.llm_model, api_key=args.llm_key, retries=args.retries,
                      timeout=args.llm_timeout)


def _status(report) -> int:
    """0 when every item was processed; EXIT_PENDING when some could not reach the LLM (rerun to retry)."""
    if report.pending:
        print(f"{report.pending} item(s) could not reach the LLM ({'; '.join(report.pending_errors)[:200]}); "
              "run the same command again to retry them (finished shards are kept)", file=sys.stderr)
        return EXIT_PENDING
    return 0


def _add_llm_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--llm", choices=("openai", "local"), default="openai", help="LLM backend")
    parser.add_argument("--llm-url", help="OpenAI-compatible base URL (default $OPENAI_BASE_URL)")
    parser.add_argument("--llm-model", help="model name (default $OPENAI_MODEL)")
    parser.add_argument("--llm-key", help="API key (default $OPENAI_API_KEY)")
    parser.add_argument("--llm-folder", help="local causal LM folder (--llm local)")
    parser.add_argument("--retries", type=int, default=2, help="HTTP retries per request")
    parser.add_argument("--llm-timeout", type=float, default=60.0,
                        help="total seconds per request: connecting, sending and reading the answer (default 60)")


def _rave(args) -> int:
    rows, report = stages.build_rave(args.pairs, args.out, _chat(args), fewshot=args.fewshot,
                                     max_overlap=args.max_overlap, shard_size=args.shard_size)
    print(json.dumps(report.to_dict(), indent=2))
    return _status(report)


def _icvg(args) -> int:
    rows, report = stages.build_icvg(args.films, args.out, _chat(args), vlm_folder=args.vlm,
                                     encoder_folder=args.encoder)
    print(json.dumps(report.to_dict(), indent=2))
    return _status(report)


def _split(args) -> int:
    print(json.dumps(stages.split_manifest(args.manifest, args.out, benchmark_fraction=args.benchmark_fraction,
                                           benchmark_max=args.benchmark_max, seed=args.seed)))
    return 0


def _shots(args) -> int:
    print(json.dumps(stages.shot_ranges(args.video, threshold=args.threshold)))
    return 0


def main(argv: list[str] | None = None) -> int:
    from .rave import FEWSHOT_FILE

    parser = argparse.ArgumentParser(prog="python -m revise_core.data", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="stage", required=True)
    rave = sub.add_parser("rave", help="rewrite literal edit instructions into reason-informed cues (RAVE)")
    rave.add_argument("--pairs", required=True, help="JSONL of literal pairs: id, source, target, instruction "
                                                     "[, object, result]")
    rave.add_argument("--out", required=True, help="output folder (shards, report, rave.jsonl)")
    _add_llm_args(rave)
    rave.add_argument("--fewshot", default=str(FEWSHOT_FILE), help="few-shot examples per reasoning type (JSON)")
    rave.add_argument("--max-overlap", type=float, default=0.5, help="largest share of literal words a cue may repeat")
    rave.add_argument("--shard-size", type=int, default=100, help="items per resumable shard")
    icvg = sub.add_parser("icvg", help="in-context generation pairs from long videos (ICVG)")
    icvg.add_argument("--films", required=True, help="a folder of .mp4 films, or one film")
    icvg.add_argument("--vlm", required=True, help="VLM folder (writes the clip captions)")
    icvg.add_argument("--encoder", required=True, help="SigLIP / CLIP folder (clip and caption embeddings)")
    icvg.add_argument("--out", required=True, help="output folder (clips, shards, report, icvg.jsonl)")
    _add_llm_args(icvg)
    split = sub.add_parser("split", help="train / benchmark split, disjoint by film or source video")
    split.add_argument("--manifest", required=True)
    split.add_argument("--out", required=True)
    split.add_argument("--benchmark-fraction", type=float, default=0.1)
    split.add_argument("--benchmark-max", type=int, default=None)
    split.add_argument("--seed", type=int, default=0)
    shots = sub.add_parser("shots", help="detect shot boundaries of a video")
    shots.add_argument("--video", required=True)
    shots.add_argument("--threshold", type=float, default=0.5, help="histogram distance that marks a cut")
    for stage in (rave, icvg, split, shots):
        add_debug_flag(stage)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    return {"rave": _rave, "icvg": _icvg, "split": _split, "shots": _shots}[args.stage](args)


if __name__ == "__main__":
    sys.exit(run_cli(main))

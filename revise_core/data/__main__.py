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
from pathlib import Path

from ..cli import add_debug_flag
from ..cli import run as run_cli


def _chat(args):
    from ..llm import LocalChat, OpenAIChat

    if args.llm == "local":
        return LocalChat(args.llm_folder)
    return OpenAIChat(base_url=args.llm_url, model=args.llm_model, api_key=args.llm_key, retries=args.retries,
                      timeout=args.llm_timeout)


EXIT_PENDING = 3


def _llm_identity(chat) -> dict:
    """The LLM settings that shape a stage's output (part of each shard's fingerprint; never the key)."""
    if hasattr(chat, "base_url"):
        return {"backend": "openai", "url": chat.base_url, "model": chat.model, "temperature": chat.temperature}
    return {"backend": "local", "folder": chat.folder}


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
    from .rave import LiteralPair, Rules, load_fewshot, manifest_row, rewrite
    from .runner import Kept, Rejected, run_stage

    chat = _chat(args)
    fewshot, rules = load_fewshot(args.fewshot), Rules(max_overlap=args.max_overlap)
    items = [json.loads(line) for line in Path(args.pairs).read_text(encoding="utf-8").splitlines() if line.strip()]

    def stage(item: dict):
        pair = LiteralPair(str(item.get("id", "")), str(item.get("source", "")), str(item.get("target", "")),
                           str(item.get("instruction", "")), str(item.get("object", "")), str(item.get("result", "")))
        outcome = rewrite(pair, chat, fewshot, rules)
        return Kept(manifest_row(outcome)) if outcome.accepted else Rejected("; ".join(outcome.reasons))

    settings = {"fewshot": fewshot, "max_overlap": args.max_overlap, "llm": _llm_identity(chat)}
    rows, report = run_stage("rave", items, stage, args.out, shard_size=args.shard_size, settings=settings)
    _write_manifest(Path(args.out) / "rave.jsonl", rows)
    print(json.dumps(report.to_dict(), indent=2))
    return _status(report)


def _icvg(args) -> int:
    from ..evaluation.quality import ImageEncoder
    from ..vlm import load_vlm
    from .icvg_build import build_film
    from .runner import Kept, run_stage

    chat = _chat(args)
    vlm, encoder = load_vlm(args.vlm, dtype="fp32"), ImageEncoder(args.encoder)
    films = sorted(Path(args.films).glob("*.mp4")) if Path(args.films).is_dir() else [Path(args.films)]
    out = Path(args.out)

    def stage(item: dict):
        return Kept(build_film(Path(item["path"]), out, vlm=vlm, encoder=encoder, chat=chat, film_id=item["id"]))

    settings = {"vlm": str(Path(args.vlm).resolve()), "encoder": str(Path(args.encoder).resolve()),
                "llm": _llm_identity(chat)}
    rows, report = run_stage("icvg", [{"id": f.stem, "path": str(f)} for f in films], stage, out, shard_size=1,
                             settings=settings)
    _write_manifest(out / "icvg.jsonl", rows)
    print(json.dumps(report.to_dict(), indent=2))
    return _status(report)


def _split(args) -> int:
    from .splits import split_rows

    rows = [json.loads(line) for line in Path(args.manifest).read_text(encoding="utf-8").splitlines() if line.strip()]
    train, benchmark = split_rows(rows, benchmark_fraction=args.benchmark_fraction, benchmark_max=args.benchmark_max,
                                  seed=args.seed)
    _write_manifest(Path(args.out) / "train.jsonl", train)
    _write_manifest(Path(args.out) / "benchmark.jsonl", benchmark)
    print(json.dumps({"train": len(train), "benchmark": len(benchmark)}))
    return 0


def _shots(args) -> int:
    from ..video import read_video
    from .shots import ShotConfig, shots

    clip = read_video(args.video)
    ranges = shots(clip.frames, ShotConfig(threshold=args.threshold))
    print(json.dumps([{"start": s, "end": e, "seconds": [s / float(clip.fps), e / float(clip.fps)]} for s, e in ranges]))
    return 0


def _write_manifest(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")


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

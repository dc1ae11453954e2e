"""RVE-Bench command line: judge predictions on a benchmark manifest and write tables and a chart.

    python -m revise_core.evaluation.rve --manifest bench.jsonl --predictions ours=preds/ --judge openai \\
        --judge-model gpt-4o --out report/
    python -m revise_core.evaluation.rve --manifest bench.jsonl --edit --models MODELS_DIR --judge local --out report/
    python -m revise_core.evaluation.rve --demo --out /tmp/rve-demo

The protocol itself (editing, judging, the journal of verdicts, the report) is protocol.py.
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
from pathlib import Path

from ..checkpoints import DTYPE_CHOICES, auto_dtype, default_device
from ..cli import add_debug_flag, add_placement_flags, placement_config
from ..cli import run as run_cli
from ..manifest import read_manifest
from ..output_paths import refuse_overwriting_inputs, writable_output
from .judge import Judge, LocalJudge, OpenAIJudge
from .protocol import evaluate, make_predictions, prediction_path, write_demo_benchmark, write_report
from .quality import ImageEncoder, TextVideoScorer
from .scores import OVERALL_MODES


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m revise_core.evaluation.rve", description=__doc__.split("\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--manifest", type=Path, help="benchmark manifest (JSONL: id, source, instruction, subset, category)")
    parser.add_argument("--predictions", action="append", default=[], metavar="[NAME=]DIR",
                        help="folder of <id>.mp4 edits; repeat to compare methods")
    parser.add_argument("--edit", action="store_true", help="first produce predictions with ReViSE (--models)")
    parser.add_argument("--models", type=Path, help="a model set: a models.json folder or a release folder (the editor, and the local judge's VLM)")
    parser.add_argument("--edit-steps", type=int, default=40, help="sampler steps with --edit (default 40)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the edits made with --edit")
    parser.add_argument("--judge", choices=("local", "openai"), default="openai", help="judge backend")
    parser.add_argument("--judge-mode", choices=("generate", "expected"), default="generate",
                        help="local judge: parse generated JSON, or the expected value of the score tokens")
    parser.add_argument("--judge-url", help="OpenAI-compatible base URL (default $OPENAI_BASE_URL)")
    parser.add_argument("--judge-model", help="judge model name (default $OPENAI_MODEL or gpt-4o)")
    parser.add_argument("--judge-key", help="API key (default $OPENAI_API_KEY)")
    parser.add_argument("--judge-frames", type=int, default=4, help="frames per video shown to the judge")
    parser.add_argument("--judge-timeout", type=float, default=60.0,
                        help="total seconds per judge request: connecting, sending and reading the answer (default 60)")
    parser.add_argument("--retries", type=int, default=2, help="retries of an unparsable answer (default 2)")
    parser.add_argument("--clip", type=Path, help="CLIP folder for text-video similarity (and default encoder)")
    parser.add_argument("--subject-encoder", type=Path, help="image encoder folder for subject consistency (VBench: DINO)")
    parser.add_argument("--background-encoder", type=Path, help="image encoder for background consistency (VBench: CLIP)")
    parser.add_argument("--overall", choices=OVERALL_MODES, default="viescore", help="how Overall is formed")
    parser.add_argument("--out", type=Path, required=True, help="report folder")
    parser.add_argument("--dtype", choices=DTYPE_CHOICES, default="auto",
                        help="compute dtype of the editor and the local judge; auto = bf16 on GPU, fp32 on CPU")
    parser.add_argument("--device", help="torch device (default: cuda if available, else cpu)")
    parser.add_argument("--demo", action="store_true", help="tiny models + synthetic videos: a full report on CPU")
    add_placement_flags(parser)
    add_debug_flag(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.demo:
        from ..testing import write_tiny_models

        work = Path(tempfile.mkdtemp(prefix="rve-demo-"))
        write_tiny_models(work / "models")
        args.manifest, args.models, args.edit, args.edit_steps = write_demo_benchmark(work / "data"), work / "models", True, 2
        args.judge, args.judge_mode, args.clip = "local", "expected", work / "models" / "clip" / "tiny-clip"
    if args.manifest is None:
        parser.error("--manifest is required (or use --demo)")
    triplets = read_manifest(args.manifest, min_frames=1, require_target=False)
    predictions = {}
    for item in args.predictions:
        name, _, folder = item.rpartition("=")
        if not Path(folder).is_dir():
            raise FileNotFoundError(f"--predictions {item}: {folder} is not a folder of <id>.mp4 edits")
        predictions[name or Path(folder).name] = Path(folder)
    writable_output(args.out / "report.md", what="--out")  # before any model is loaded
    refuse_overwriting_inputs(args.out / "report.md", [args.manifest], what="--out's report")
    if args.edit:  # the edits are written as <out>/predictions/<id>.mp4: never over a source video
        for triplet in triplets:
            refuse_overwriting_inputs(prediction_path(args.out / "predictions", triplet.id),
                                      [triplet.source, getattr(triplet, "target", None)], what=f"{triplet.id}: the edit")
    if args.edit:
        if args.models is None:
            parser.error("--edit needs --models")
        predictions["revise"] = make_predictions(triplets, args.models, args.out / "predictions",
                                                 steps=args.edit_steps, seed=args.seed, dtype=args.dtype,
                                                 device=args.device, placement=placement_config(args))
    if not predictions:
        parser.error("give --predictions DIR (or --edit)")
    judge = _judge(args, parser)
    quality = _quality(args)
    samples, records = evaluate(triplets, predictions, judge, quality=quality, journal=args.out / "verdicts.jsonl")
    paths = write_report(samples, records, args.out, mode=args.overall, title="RVE-Bench report")
    print(f"wrote {paths['report']} ({len(samples)} sample evaluations, "
          f"{sum(1 for s in samples if s.failures)} with failures)")
    return 0


def _judge(args, parser) -> Judge:
    if args.judge == "openai":
        return OpenAIJudge(base_url=args.judge_url, model=args.judge_model, api_key=args.judge_key,
                           num_frames=args.judge_frames, retries=args.retries, timeout=args.judge_timeout)
    if args.models is None:
        parser.error("the local judge needs --models (a models.json folder with a 'vlm' entry, or a release folder)")
    from ..model_sets import vlm_folder
    from ..vlm import load_vlm

    device = default_device(args.device)
    vlm = load_vlm(vlm_folder(args.models), dtype=auto_dtype(args.dtype, device), device=device)
    return LocalJudge(vlm, num_frames=args.judge_frames, retries=args.retries, mode=args.judge_mode)


def _quality(args) -> dict:
    encoders: dict[Path, ImageEncoder] = {}

    def encoder(folder):
        if folder is None:
            return None
        return encoders.setdefault(folder, ImageEncoder(folder))

    clip = encoder(args.clip)
    return {"text_scorer": TextVideoScorer(clip) if clip is not None else None,
            "subject_encoder": encoder(args.subject_encoder) or clip,
            "background_encoder": encoder(args.background_encoder) or clip}


if __name__ == "__main__":
    sys.exit(run_cli(main))

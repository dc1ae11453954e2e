"""RVE-Bench: judge predictions on a benchmark manifest and write tables and a chart.

    python -m revise_core.evaluation.rve --manifest bench.jsonl --predictions ours=preds/ --judge openai \\
        --judge-model gpt-4o --out report/
    python -m revise_core.evaluation.rve --manifest bench.jsonl --edit --models MODELS_DIR --judge local --out report/
    python -m revise_core.evaluation.rve --demo --out /tmp/rve-demo

Predictions are `<folder>/<sample id>.mp4`. A missing prediction or an answer that never parses is
recorded as a failure for that sample and sub-metric, counted in the report, and never scored.
Outputs: report.md, summary.csv (per method / subset / category), samples.csv, samples.jsonl (every
judge answer and error), scores.png.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
from pathlib import Path

import torch

from .. import jsonio
from ..checkpoints import DTYPE_CHOICES, auto_dtype
from ..cli import add_debug_flag, add_placement_flags, placement_config, refuse_overwriting_inputs, writable_output
from ..cli import run as run_cli
from ..manifest import SAFE_ID, Triplet, read_manifest
from ..video import VideoError, read_video, resize_frames
from .judge import Judge, LocalJudge, OpenAIJudge
from .quality import ImageEncoder, TextVideoScorer, video_quality
from .scores import COLUMNS, OVERALL_MODES, SampleScore, applicable, bar_chart, markdown_table, summarize, write_csv

logger = logging.getLogger(__name__)


def evaluate(triplets: list[Triplet], predictions: dict[str, Path], judge: Judge, *, quality: dict | None = None,
             on_sample=None, journal: Path | None = None) -> tuple[list[SampleScore], list[dict]]:
    """Judge every (method, sample); returns scores and the raw verdict records.

    With `journal`, every verdict is appended to that JSONL file as soon as it is made, and a rerun reuses
    the successful verdicts of the same judge found there: an interrupted benchmark resumes where it
    stopped (failed verdicts are asked again)."""
    samples, records = [], []
    done = _open_journal(journal, judge.identity()) if journal is not None else {}
    for method, folder in predictions.items():
        for triplet in triplets:
            score = SampleScore(triplet.id, triplet.subset, triplet.category, method, {})
            try:
                source, edited = _pair(triplet, prediction_path(folder, triplet.id))
            except VideoError as error:
                score.failures.append(f"prediction: {error}")
                score.metrics = {m: None for m in applicable(triplet.subset)}
                records.append({"id": triplet.id, "method": method, "error": str(error)})
                samples.append(score)
                continue
            for metric in applicable(triplet.subset):
                record = done.get((method, triplet.id, metric))
                if record is None:
                    verdict = judge.score(metric, triplet.instruction, source, edited)
                    record = {"id": triplet.id, "method": method, **verdict.to_dict()}
                    if journal is not None:
                        with open(journal, "a", encoding="utf-8") as handle:
                            handle.write(jsonio.dumps(record) + "\n")
                score.metrics[metric] = record["score"]
                if record["score"] is None:
                    score.failures.append(f"{metric}: {record['error']}")
                records.append(record)
            if quality is not None:
                score.quality = video_quality(edited, triplet.instruction, **quality)
            samples.append(score)
            if on_sample is not None:
                on_sample(score)
    return samples, records


def _open_journal(path: Path, identity: dict) -> dict[tuple[str, str, str], dict]:
    """Successful verdicts already in the journal (keyed by method, id, metric) when it was written by the
    same judge; otherwise the journal is started afresh. A torn last line is ignored."""
    header = {"judge": identity}
    if path.is_file():
        lines = path.read_text(encoding="utf-8").splitlines()
        try:
            first = json.loads(lines[0]) if lines else None
        except json.JSONDecodeError:
            first = None
        if first == header:
            done = {}
            for line in lines[1:]:
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:
                    logger.warning("%s: skipping a torn line", path)
                    continue
                if record.get("score") is not None:
                    done[(record["method"], record["id"], record["metric"])] = record
            logger.info("%s: resuming with %d verdicts already made", path, len(done))
            return done
        logger.warning("%s was written by another judge (%s); judging again", path, first)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(jsonio.dumps(header) + "\n", encoding="utf-8")
    return {}


def _pair(triplet: Triplet, prediction: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """Source and prediction at the same frame count and size (the source is fitted to the prediction)."""
    edited = read_video(prediction).frames
    source = read_video(triplet.source).frames
    count = min(source.shape[0], edited.shape[0])
    # The editor centre-crops sources to its size by default; the judge compares like with like.
    source = resize_frames(source[:count], edited.shape[1], edited.shape[2], "crop")
    return source, edited[:count]


def write_report(samples: list[SampleScore], records: list[dict], out: Path, *, mode: str, title: str) -> dict[str, Path]:
    out.mkdir(parents=True, exist_ok=True)
    rows = summarize(samples, mode)
    paths = {
        "summary_csv": write_csv(rows, out / "summary.csv"),
        "samples_csv": write_csv([s.row(mode) for s in samples], out / "samples.csv"),
        "chart": bar_chart(rows, out / "scores.png"),
    }
    (out / "samples.jsonl").write_text("".join(jsonio.dumps(r) + "\n" for r in records), encoding="utf-8")
    paths["samples_jsonl"] = out / "samples.jsonl"
    quality_keys = sorted({k for s in samples for k in s.quality})
    overall_rows = [r for r in rows if r["category"] == "all"]
    lines = [f"# {title}", "", f"Overall: `{mode}` (see revise_core/evaluation/scores.py). Scores 0-10 from the judge; "
             "'–' = not applicable or no valid sample.", "", "## Per subset (Table 1 layout)", "",
             markdown_table(overall_rows, ["method", "subset", "samples", "failed", *COLUMNS]), ""]
    category_rows = [r for r in rows if r["category"] != "all"]
    if category_rows:
        lines += ["## Per category", "", markdown_table(category_rows, ["method", "subset", "category", "samples",
                                                                        "failed", *COLUMNS]), ""]
    if quality_keys:
        lines += ["## Video quality", "", markdown_table(overall_rows, ["method", "subset", *quality_keys]), ""]
    failed = [s for s in samples if s.failures]
    lines += ["## Failures", "", f"{len(failed)} of {len(samples)} samples have at least one failed sub-metric "
              "(missing prediction, or a judge answer that did not parse after retries).", ""]
    lines += [f"- {s.method} / {s.id}: {'; '.join(s.failures)[:300]}" for s in failed[:50]]
    lines += ["", "![scores](scores.png)", ""]
    (out / "report.md").write_text("\n".join(lines), encoding="utf-8")
    paths["report"] = out / "report.md"
    return paths


def prediction_path(folder: Path, sample_id: str) -> Path:
    """`<folder>/<id>.mp4`, refusing any id that would leave the folder (manifests validate ids too; this
    holds for every caller)."""
    if not SAFE_ID.fullmatch(sample_id or ""):
        raise ValueError(f"sample id {sample_id!r} cannot name a file: use letters, digits, '.', '_' or '-'")
    path = Path(folder) / f"{sample_id}.mp4"
    if path.resolve().parent != Path(folder).resolve():
        raise ValueError(f"sample id {sample_id!r} would write outside {folder}")
    return path


def make_predictions(triplets: list[Triplet], models_dir: Path, out: Path, *, steps: int, seed: int,
                     reasoning: str = "none", dtype: str = "auto", device: str | None = None,
                     placement=None) -> Path:
    """Edit every source with ReViSE and write `<out>/<id>.mp4`. `placement`: a PlacementConfig (placement.py;
    default: every model resident)."""
    from ..editor import EditModels, EditSettings, ReviseEditor
    from ..placement import Placement
    from ..sampler import SamplerConfig
    from ..video import write_video

    device = device or _default_device()
    models = EditModels.load(models_dir, dtype=auto_dtype(dtype, device), device="cpu")
    editor = ReviseEditor.placed(models, Placement(placement, device))
    out.mkdir(parents=True, exist_ok=True)
    for triplet in triplets:
        target = prediction_path(out, triplet.id)
        if target.is_file():
            logger.info("%s exists: kept (delete it to edit again)", target)
            continue  # an interrupted run resumes; files appear only once complete (renamed below)
        clip = read_video(triplet.source)
        result = editor.edit(clip.frames, triplet.instruction,
                             EditSettings(sampler=SamplerConfig(steps=steps, seed=seed), reasoning=reasoning,
                                          fps=float(clip.fps)))
        partial = target.with_name(f".{triplet.id}.partial.mp4")
        write_video(partial, result.frames, clip.fps)
        os.replace(partial, target)
    return out


def write_demo_benchmark(folder: Path) -> Path:
    """Four synthetic samples (5 frames, 32 x 32: quick in every precision on a CPU), two per subset, in four
    categories; returns the manifest."""
    from ..video import synthetic_clip, write_video

    (folder / "videos").mkdir(parents=True, exist_ok=True)
    entries = [("rave-0", "RAVE", "physical causality", "what will the square look like after an hour in the sun ?"),
               ("rave-1", "RAVE", "temporal", "two seconds later"),
               ("icvg-0", "ICVG", "camera", "the camera pulls back to show the whole scene"),
               ("icvg-1", "ICVG", "emotional", "show the moment that makes the viewer smile")]
    lines = []
    for index, (sample_id, subset, category, instruction) in enumerate(entries):
        clip = synthetic_clip(num_frames=5, height=32, width=32, seed=index)
        write_video(folder / "videos" / f"{sample_id}.mp4", clip.frames, clip.fps)
        lines.append({"id": sample_id, "source": f"videos/{sample_id}.mp4", "instruction": instruction,
                      "subset": subset, "category": category})
    manifest = folder / "bench.jsonl"
    manifest.write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")
    return manifest


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m revise_core.evaluation.rve", description=__doc__.split("\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--manifest", type=Path, help="benchmark manifest (JSONL: id, source, instruction, subset, category)")
    parser.add_argument("--predictions", action="append", default=[], metavar="[NAME=]DIR",
                        help="folder of <id>.mp4 edits; repeat to compare methods")
    parser.add_argument("--edit", action="store_true", help="first produce predictions with ReViSE (--models)")
    parser.add_argument("--models", type=Path, help="models.json folder (editor, and the local judge's VLM)")
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
        parser.error("the local judge needs --models (a models.json folder with a 'vlm' entry)")
    from ..checkpoints import read_json
    from ..vlm import load_vlm

    spec = read_json(args.models / "models.json", what="model set description (models.json)")
    device = args.device or _default_device()
    vlm = load_vlm(args.models / spec["vlm"], dtype=auto_dtype(args.dtype, device), device=device)
    return LocalJudge(vlm, num_frames=args.judge_frames, retries=args.retries, mode=args.judge_mode)


def _default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


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

"""The RVE-Bench protocol: edit the sources (optional), judge the predictions, write tables and a chart.

The command line is `python -m revise_core.evaluation.rve` (rve.py). Predictions are `<folder>/<sample id>.mp4`.
A missing prediction or an answer that never parses is recorded as a failure for that sample and sub-metric, counted in the report, and never scored.
Outputs: report.md, summary.csv (per method / subset / category), samples.csv, samples.jsonl (every
judge answer and error), scores.png (scores.csv without matplotlib).
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import torch

from .. import jsonio
from ..checkpoints import auto_dtype, default_device
from ..manifest import SAFE_ID, Triplet
from ..video import VideoError, read_video, resize_frames
from .judge import Judge
from .quality import video_quality
from .scores import COLUMNS, SampleScore, applicable, bar_chart, markdown_table, summarize, write_csv

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
    chart = paths["chart"]  # scores.png, or scores.csv without matplotlib
    lines += ["", f"![scores]({chart.name})" if chart.suffix == ".png" else f"Chart values: [{chart.name}]({chart.name})", ""]
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
    from ..edit_inputs import read_edit_source
    from ..editor import EditSettings, ReviseEditor
    from ..model_sets import EditModels
    from ..placement import Placement
    from ..sampler import SamplerConfig
    from ..video import write_video

    device = default_device(device)
    models = EditModels.load(models_dir, dtype=auto_dtype(dtype, device), device="cpu")
    editor = ReviseEditor.placed(models, Placement(placement, device))
    out.mkdir(parents=True, exist_ok=True)
    for triplet in triplets:
        target = prediction_path(out, triplet.id)
        if target.is_file():
            logger.info("%s exists: kept (delete it to edit again)", target)
            continue  # an interrupted run resumes; files appear only once complete (renamed below)
        settings = EditSettings(sampler=SamplerConfig(steps=steps, seed=seed), reasoning=reasoning)
        clip = read_edit_source(triplet.source, settings).clip  # what the edit command line reads
        settings.fps = float(clip.fps)
        result = editor.edit(clip.frames, triplet.instruction, settings)
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

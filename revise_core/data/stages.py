"""The dataset-pipeline stages as functions: what `python -m revise_core.data` (its __main__) runs, usable
from Python. Each LLM stage is resumable through the sharded runner (runner.py) and returns its rows and
report; the manifests are JSONL."""

from __future__ import annotations

import json
from pathlib import Path


def llm_identity(chat) -> dict:
    """The LLM settings that shape a stage's output (part of each shard's fingerprint; never the key)."""
    if hasattr(chat, "base_url"):
        return {"backend": "openai", "url": chat.base_url, "model": chat.model, "temperature": chat.temperature}
    return {"backend": "local", "folder": chat.folder}


def read_jsonl(path: str | Path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]


def write_manifest(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")


def build_rave(pairs: str | Path, out: str | Path, chat, *, fewshot: str | Path, max_overlap: float = 0.5,
               shard_size: int = 100):
    """Literal pairs (JSONL: id, source, target, instruction [, object, result]) -> reason-informed cues in
    `<out>/rave.jsonl`; returns (rows, report)."""
    from .rave import LiteralPair, Rules, load_fewshot, manifest_row, rewrite
    from .runner import Kept, Rejected, run_stage

    examples, rules = load_fewshot(fewshot), Rules(max_overlap=max_overlap)

    def stage(item: dict):
        pair = LiteralPair(str(item.get("id", "")), str(item.get("source", "")), str(item.get("target", "")),
                           str(item.get("instruction", "")), str(item.get("object", "")), str(item.get("result", "")))
        outcome = rewrite(pair, chat, examples, rules)
        return Kept(manifest_row(outcome)) if outcome.accepted else Rejected("; ".join(outcome.reasons))

    settings = {"fewshot": examples, "max_overlap": max_overlap, "llm": llm_identity(chat)}
    rows, report = run_stage("rave", read_jsonl(pairs), stage, out, shard_size=shard_size, settings=settings)
    write_manifest(Path(out) / "rave.jsonl", rows)
    return rows, report


def build_icvg(films: str | Path, out: str | Path, chat, *, vlm_folder: str | Path, encoder_folder: str | Path):
    """In-context generation pairs from long videos (a folder of .mp4 films, or one film) in `<out>/icvg.jsonl`;
    returns (rows, report)."""
    from ..evaluation.quality import ImageEncoder
    from ..vlm import load_vlm
    from .icvg_build import build_film
    from .runner import Kept, run_stage

    vlm, encoder = load_vlm(vlm_folder, dtype="fp32"), ImageEncoder(encoder_folder)
    paths = sorted(Path(films).glob("*.mp4")) if Path(films).is_dir() else [Path(films)]
    out = Path(out)

    def stage(item: dict):
        return Kept(build_film(Path(item["path"]), out, vlm=vlm, encoder=encoder, chat=chat, film_id=item["id"]))

    settings = {"vlm": str(Path(vlm_folder).resolve()), "encoder": str(Path(encoder_folder).resolve()),
                "llm": llm_identity(chat)}
    rows, report = run_stage("icvg", [{"id": f.stem, "path": str(f)} for f in paths], stage, out, shard_size=1,
                             settings=settings)
    write_manifest(out / "icvg.jsonl", rows)
    return rows, report


def split_manifest(manifest: str | Path, out: str | Path, *, benchmark_fraction: float = 0.1,
                   benchmark_max: int | None = None, seed: int = 0) -> dict[str, int]:
    """`<out>/train.jsonl` and `<out>/benchmark.jsonl`, disjoint by film or source video; returns the counts."""
    from .splits import split_rows

    train, benchmark = split_rows(read_jsonl(manifest), benchmark_fraction=benchmark_fraction,
                                  benchmark_max=benchmark_max, seed=seed)
    write_manifest(Path(out) / "train.jsonl", train)
    write_manifest(Path(out) / "benchmark.jsonl", benchmark)
    return {"train": len(train), "benchmark": len(benchmark)}


def shot_ranges(video: str | Path, *, threshold: float = 0.5) -> list[dict]:
    """The shots of a video: first and end frame, and the same in seconds."""
    from ..video import read_video
    from .shots import ShotConfig, shots

    clip = read_video(video)
    fps = float(clip.fps)
    return [{"start": s, "end": e, "seconds": [s / fps, e / fps]}
            for s, e in shots(clip.frames, ShotConfig(threshold=threshold))]

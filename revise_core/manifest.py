"""Triplet manifests: the one JSONL format the trainer, RVE-Bench and the dataset pipeline share.

One triplet per line:
    {"id": "rave-0001", "source": "videos/a.mp4", "target": "videos/a_edit.mp4",
     "instruction": "what will the ice cube look like after an hour in the sun?",
     "subset": "RAVE", "category": "physical causality"}
Paths are relative to the manifest's folder. `id` is optional (defaults to the line number) and, when
given, a string of letters, digits, `.`, `_` and `-` (ids name output files, so they can never point
outside an output folder); `target` is optional for benchmark manifests (`require_target=False`). Subsets and their reasoning categories follow
the paper (section 3): RAVE edits and ICVG in-context generation.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

from . import video as video_ops

SUBSETS = ("RAVE", "ICVG")
CATEGORIES = {
    "RAVE": ("temporal", "spatial", "physical causality", "semantic inference"),
    "ICVG": ("camera", "causal", "emotional", "commonsense"),
}


SAFE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


class ManifestError(ValueError):
    """A manifest that cannot be trained on; lists every problem found, with line numbers."""


@dataclass(frozen=True)
class Triplet:
    id: str
    source: Path
    target: Path | None
    instruction: str
    subset: str = "RAVE"
    category: str = ""


def read_manifest(path: str | os.PathLike, *, min_frames: int = 5, check_videos: bool = True,
                  require_target: bool = True) -> list[Triplet]:
    """Parse and validate a manifest; every problem (bad JSON, missing field or file, unreadable or too
    short video) is collected and reported at once, so nothing fails half-way through training."""
    path = Path(path)
    if not path.is_file():
        raise ManifestError(f"manifest not found: {path}")
    root = path.parent
    triplets, problems, seen = [], [], set()
    rows_without_id: dict[tuple, int] = {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
        except json.JSONDecodeError as error:
            problems.append(f"line {number}: not JSON ({error.msg})")
            continue
        if not isinstance(entry, dict):
            problems.append(f"line {number}: expected an object, got {type(entry).__name__}")
            continue
        required = ("source", "target", "instruction") if require_target else ("source", "instruction")
        missing = [f for f in required if entry.get(f) is None or (isinstance(entry.get(f), str) and not entry[f].strip())]
        if missing:
            problems.append(f"line {number}: missing or empty field(s) {missing}")
            continue
        wrong = [f"{f} ({type(entry[f]).__name__})" for f in ("source", "target", "instruction", "subset", "category", "id")
                 if entry.get(f) is not None and not isinstance(entry[f], str)]
        if wrong:
            problems.append(f"line {number}: these fields must be strings: {', '.join(wrong)}")
            continue
        subset = entry.get("subset", "RAVE")
        if subset not in SUBSETS:
            problems.append(f"line {number}: subset must be one of {SUBSETS}, got '{subset}'")
            continue
        if "id" in entry and not SAFE_ID.fullmatch(entry["id"]):
            problems.append(f"line {number}: id {entry['id']!r} must be 1-128 letters, digits, '.', '_' or '-' "
                            "(not starting with '.' or '-'): ids name output files")
            continue
        sample_id = entry.get("id", f"line{number}")
        if sample_id in seen:
            problems.append(f"line {number}: duplicate id '{sample_id}'")
            continue
        if "id" not in entry:
            row = (entry["source"], entry.get("target"), entry["instruction"])
            if row in rows_without_id:
                problems.append(f"line {number}: repeats line {rows_without_id[row]} (same source, target and "
                                "instruction); remove it, or give both rows ids if the repetition is intended")
                continue
            rows_without_id[row] = number
        seen.add(sample_id)
        category = entry.get("category", "")
        if category and category not in CATEGORIES[subset]:
            problems.append(f"line {number}: category '{category}' is not one of {subset}'s {CATEGORIES[subset]}")
            continue
        target = root / entry["target"] if entry.get("target") else None
        triplet = Triplet(sample_id, root / entry["source"], target, str(entry["instruction"]), subset, category)
        if check_videos:
            for role in ("source", "target") if target is not None else ("source",):
                problem = _probe_video(getattr(triplet, role), min_frames)
                if problem:
                    problems.append(f"line {number} ({role}): {problem}")
        triplets.append(triplet)
    if problems:
        shown = "\n".join(f"  - {p}" for p in problems[:20])
        more = f"\n  (+{len(problems) - 20} more)" if len(problems) > 20 else ""
        raise ManifestError(f"{path}: {len(problems)} problem(s):\n{shown}{more}")
    if not triplets:
        raise ManifestError(f"{path}: no triplets")
    return triplets


def _probe_video(path: Path, min_frames: int) -> str | None:
    """Every frame is decoded (not converted): a file truncated after its first frames fails here, not at
    the training step that first reads its end."""
    if not path.is_file():
        return f"file not found: {path}"
    try:
        count = video_ops.count_frames(path)
    except video_ops.VideoError as error:
        return str(error)
    if count < min_frames:
        return f"{path}: {count} frames, at least {min_frames} needed"
    return None

"""ICVG construction for one film (paper section 3.1.2): shots -> clips -> captions and embeddings -> pairs
within sub-clusters -> an LLM-written instruction of one of four types -> manifest rows.

The VLM only writes text (captions); the video content of every pair is two real clips of the film.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..manifest import CATEGORIES
from ..video import read_video, write_video
from .icvg import PairingConfig, select_pairs
from .shots import ShotConfig, shots

logger = logging.getLogger(__name__)

TYPES = CATEGORIES["ICVG"]
CAPTION_PROMPT = "Describe this video clip in one sentence ."
WRITER_PROMPT = (
    "Two consecutive clips of the same film are described below. Write one instruction that asks a video model "
    "to generate the second clip from the first, requiring {kind} reasoning, without describing the second clip "
    'literally. Answer only a JSON object: {{"type": "{kind}", "instruction": "<instruction>"}}.\n'
    "First clip: {source}\nSecond clip: {target}"
)


@dataclass
class ICVGConfig:
    shot: ShotConfig = field(default_factory=ShotConfig)
    pairing: PairingConfig = field(default_factory=PairingConfig)
    min_clip_frames: int = 5  # shorter shots are not used as clips
    caption_tokens: int = 48
    writer_attempts: int = 3


class FilmTooShort(ValueError):
    """A film with fewer than two usable shots: nothing to pair."""


def build_film(film: Path, out_dir: Path, *, vlm, encoder, chat, config: ICVGConfig | None = None,
               film_id: str | None = None) -> list[dict]:
    """Manifest rows (subset ICVG) for one film; clip videos are written under `out_dir/clips/`."""

    config = config or ICVGConfig()
    film_id = film_id or film.stem
    clip = read_video(film)
    ranges = [(s, e) for s, e in shots(clip.frames, config.shot) if e - s >= config.min_clip_frames]
    if len(ranges) < 2:
        raise FilmTooShort(f"{film}: {len(ranges)} usable shot(s) of >= {config.min_clip_frames} frames; need 2")
    frames = [clip.frames[s:e] for s, e in ranges]
    captions = [vlm.generate(f, CAPTION_PROMPT, max_new_tokens=config.caption_tokens) or "a scene" for f in frames]
    visual = torch.stack([encoder.image_features(f[len(f) // 2:len(f) // 2 + 1])[0] for f in frames])
    text = encoder.text_features(captions)
    rows = []
    for number, pair in enumerate(select_pairs(visual, text, config.pairing)):
        kind = TYPES[number % len(TYPES)]
        instruction = _write_instruction(chat, kind, captions[pair.source], captions[pair.target], config)
        if instruction is None:
            logger.warning("%s: no usable instruction for clips %d -> %d", film, pair.source, pair.target)
            continue
        names = []
        for role, index in (("src", pair.source), ("tgt", pair.target)):
            path = out_dir / "clips" / f"{film_id}_{index:04d}_{role}.mp4"
            write_video(path, frames[index], clip.fps)
            names.append(path.relative_to(out_dir).as_posix())
        rows.append({"id": f"{film_id}-{pair.source:04d}-{pair.target:04d}", "source": names[0], "target": names[1],
                     "instruction": instruction, "subset": "ICVG", "category": kind, "film": film_id,
                     "source_caption": captions[pair.source], "target_caption": captions[pair.target]})
    return rows


def _write_instruction(chat, kind: str, source: str, target: str, config: ICVGConfig) -> str | None:
    from ..llm import LLMError

    prompt = WRITER_PROMPT.format(kind=kind, source=source, target=target)
    unreachable, answered = None, False
    for _ in range(config.writer_attempts):
        try:
            answer = chat.complete([{"role": "user", "content": prompt}], max_tokens=120)
        except LLMError as error:
            logger.warning("instruction writer: %s", error)
            unreachable = error
            continue
        answered = True
        for candidate in re.findall(r"\{.*?\}", answer, flags=re.S):
            try:
                data = json.loads(candidate)
            except json.JSONDecodeError:
                continue
            if isinstance(data, dict) and data.get("type") == kind and str(data.get("instruction", "")).strip():
                return str(data["instruction"]).strip()
    if not answered and unreachable is not None:
        raise unreachable  # the LLM never answered: the film is retried on the next run, not dropped
    return None

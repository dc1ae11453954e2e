"""RAVE rewriting: literal edit instructions -> implicit, reason-informed cues (paper section 3.1.1).

An LLM sees few-shot examples per reasoning type (`configs/data/rave_fewshot.json`, editable) and answers a
JSON object {"type": <one of the four RAVE types>, "instruction": <cue>}. Rule-based checks then reject a
rewrite that leaks the literal operation (its result words, operation verbs, or too many of its content
words) or loses the target (the edited object, when the pair names it), and record why.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

from ..manifest import CATEGORIES
from ..resources import config_path

logger = logging.getLogger(__name__)

TYPES = CATEGORIES["RAVE"]
FEWSHOT_FILE = config_path("data", "rave_fewshot.json")
STOPWORDS = frozenset("a an the of to in on at into onto with and or for from by it its is are be this that "
                      "them they his her their as up down".split())
SYSTEM_PROMPT = (
    "You rewrite literal video-editing instructions into implicit, reason-informed cues. The cue must not state "
    "the operation or its result; a reader must infer them by reasoning (temporal, spatial, physical causality or "
    "semantic inference). Keep the edited object recognisable. Answer only a JSON object: "
    '{"type": "<temporal | spatial | physical causality | semantic inference>", "instruction": "<cue>"}.'
)


@dataclass(frozen=True)
class LiteralPair:
    id: str
    source: str
    target: str
    instruction: str
    object: str = ""  # the edited object, e.g. "car" (optional; enables the target-loss check)
    result: str = ""  # the result the cue must withhold, e.g. "red" (optional; enables the leak check)


@dataclass
class Rules:
    """Configurable rejection rules."""

    operation_words: tuple[str, ...] = ("add", "remove", "replace", "change", "turn", "make", "convert", "delete",
                                        "insert", "paint", "recolor", "recolour")
    max_overlap: float = 0.5  # largest share of the literal's content words a cue may repeat
    min_words: int = 3
    max_words: int = 40


@dataclass
class Outcome:
    pair: LiteralPair
    type: str = ""
    instruction: str = ""
    reasons: list[str] = field(default_factory=list)  # empty: accepted

    @property
    def accepted(self) -> bool:
        return not self.reasons


def load_fewshot(path: str | Path = FEWSHOT_FILE) -> dict[str, list[dict]]:
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    shots = {k: v for k, v in data.items() if not k.startswith("_")}
    unknown = sorted(set(shots) - set(TYPES))
    if unknown:
        raise ValueError(f"{path}: unknown reasoning types {unknown}; expected {list(TYPES)}")
    return shots


def messages(pair: LiteralPair, fewshot: dict[str, list[dict]]) -> list[dict]:
    out = [{"role": "system", "content": SYSTEM_PROMPT}]
    for kind, examples in fewshot.items():
        for example in examples:
            out.append({"role": "user", "content": f"Literal instruction: {example['literal']}"})
            out.append({"role": "assistant", "content": json.dumps({"type": kind, "instruction": example["implicit"]})})
    out.append({"role": "user", "content": f"Literal instruction: {pair.instruction}"})
    return out


def parse(text: str) -> tuple[str, str]:
    """(type, instruction) from the LLM's answer; ValueError if it is not the requested JSON."""
    for candidate in re.findall(r"\{.*?\}", text or "", flags=re.S):
        try:
            data = json.loads(candidate)
        except json.JSONDecodeError:
            continue
        if isinstance(data, dict) and isinstance(data.get("instruction"), str) and isinstance(data.get("type"), str):
            return data["type"].strip().lower(), data["instruction"].strip()
    raise ValueError(f"no JSON object with 'type' and 'instruction' in {text[:120]!r}")


def _words(text: str) -> list[str]:
    return re.findall(r"[a-z]+", text.lower())


def check(pair: LiteralPair, kind: str, cue: str, rules: Rules) -> list[str]:
    """Reasons to reject a rewrite (empty list: accepted)."""
    reasons = []
    if kind not in TYPES:
        reasons.append(f"type '{kind}' is not one of {list(TYPES)}")
    words = _words(cue)
    if not rules.min_words <= len(words) <= rules.max_words:
        reasons.append(f"{len(words)} words, expected {rules.min_words}-{rules.max_words}")
    cue_words = set(words)
    leaked_result = [w for w in _words(pair.result) if w not in STOPWORDS and w in cue_words]
    if leaked_result:
        reasons.append(f"leaks the result {leaked_result}")
    literal = [w for w in _words(pair.instruction) if w not in STOPWORDS]
    operations = [w for w in literal if w in rules.operation_words and w in cue_words]
    if operations:
        reasons.append(f"states the operation {operations}")
    content = [w for w in literal if w not in rules.operation_words and w not in _words(pair.object)]
    if content:
        overlap = sum(1 for w in content if w in cue_words) / len(content)
        if overlap > rules.max_overlap:
            reasons.append(f"repeats {overlap:.0%} of the literal instruction's words")
    if pair.object and not set(_words(pair.object)) & cue_words:
        reasons.append(f"loses the target '{pair.object}'")
    return reasons


def rewrite(pair: LiteralPair, chat, fewshot: dict[str, list[dict]], rules: Rules, *, attempts: int = 3) -> Outcome:
    """One pair through the LLM with retries on unparsable answers; failures become rejection reasons.

    When no attempt got an answer at all (the LLM was unreachable), the LLMError is raised instead: that is
    not the pair's fault, and the stage runner keeps the pair for the next run rather than rejecting it."""
    from ..llm import LLMError

    if not pair.instruction.strip():
        return Outcome(pair, reasons=["empty literal instruction"])
    errors: list[Exception] = []
    for _ in range(attempts):
        try:
            kind, cue = parse(chat.complete(messages(pair, fewshot), max_tokens=120))
        except (ValueError, LLMError) as error:
            errors.append(error)
            continue
        return Outcome(pair, kind, cue, check(pair, kind, cue, rules))
    if all(isinstance(error, LLMError) for error in errors):
        raise errors[-1]
    reasons = "; ".join(str(error) for error in errors)
    return Outcome(pair, reasons=[f"no usable answer after {attempts} attempts: {reasons[:300]}"])


def manifest_row(outcome: Outcome) -> dict:
    pair = outcome.pair
    return {"id": pair.id, "source": pair.source, "target": pair.target, "instruction": outcome.instruction,
            "subset": "RAVE", "category": outcome.type, "literal_instruction": pair.instruction}

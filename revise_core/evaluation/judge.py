"""The VLM judge of RVE-Bench: one prompt per sub-metric, 0-10 scores with a short reason, parsed strictly.

Sub-metrics (section 3.2): EA edit accuracy, PC preservation consistency (RAVE only), GN generation
naturalness, GR generation realism. A judge answer must contain a JSON object with a numeric "score" in
[0, 10]; anything else is retried and, if it never parses, recorded as failed: never silently scored.

Backends: the local transformers VLM (`LocalJudge`) and any OpenAI-compatible chat-completions endpoint
(`OpenAIJudge`, standard library HTTP; frames sent as JPEG data URLs).
"""

from __future__ import annotations

import base64
import io
import json
import logging
import re
import time
from dataclasses import dataclass

import torch

logger = logging.getLogger(__name__)

METRICS = ("EA", "PC", "GN", "GR")
SYSTEM_PROMPT = (
    "You are an expert evaluator of instruction-based video editing. You are shown an edit instruction, the "
    "source video and the edited video (as frames). Score one aspect from 0 (worst) to 10 (best). Reply with "
    'a JSON object only: {"score": <number 0-10>, "reason": "<one short sentence>"}.'
)
QUESTIONS = {
    "EA": "Edit accuracy: does the edited video carry out the instruction, including what has to be reasoned out "
          "(causes, consequences, elapsed time, implied objects)?",
    "PC": "Preservation consistency: are the regions and attributes that the instruction does not ask to change "
          "kept as in the source video (no over-editing)?",
    "GN": "Generation naturalness: does the edited video move and change smoothly and naturally over time?",
    "GR": "Generation realism: do the edited frames look real, free of artifacts, distortions or unnatural textures?",
}


class JudgeError(RuntimeError):
    """A judge backend could not produce a parsable answer (after retries)."""


@dataclass
class Verdict:
    """One sub-metric for one sample: a score, or a failure with what went wrong."""

    metric: str
    score: float | None
    reason: str = ""
    attempts: int = 1
    error: str = ""

    @property
    def failed(self) -> bool:
        return self.score is None

    def to_dict(self) -> dict:
        return {"metric": self.metric, "score": self.score, "reason": self.reason, "attempts": self.attempts,
                "error": self.error}


_JSON_OBJECT = re.compile(r"\{.*?\}", re.S)


def parse_answer(text: str) -> tuple[float, str]:
    """(score, reason) from a judge's answer; ValueError when there is no valid JSON score.

    Accepts prose or code fences around the object; the score must be a number in [0, 10].
    """
    if not isinstance(text, str) or not text.strip():
        raise ValueError("empty answer")
    for candidate in _JSON_OBJECT.findall(text):
        try:
            data = json.loads(candidate)
        except json.JSONDecodeError:
            continue
        if not isinstance(data, dict) or "score" not in data:
            continue
        score = data["score"]
        if isinstance(score, bool) or not isinstance(score, (int, float, str)):
            raise ValueError(f"score is not a number: {score!r}")
        try:
            value = float(score)
        except ValueError:
            raise ValueError(f"score is not a number: {score!r}") from None
        if not 0.0 <= value <= 10.0:
            raise ValueError(f"score {value} outside [0, 10]")
        return value, str(data.get("reason", ""))
    raise ValueError(f"no JSON object with a 'score' in the answer: {text[:120]!r}")


def user_prompt(metric: str, instruction: str) -> str:
    if metric not in QUESTIONS:
        raise ValueError(f"unknown metric '{metric}'; expected one of {METRICS}")
    return f"Instruction: {instruction}\n{QUESTIONS[metric]}"


class Judge:
    """Asks `ask(metric, instruction, source, edited) -> str` and parses, with retries."""

    name = "judge"

    def __init__(self, retries: int = 2) -> None:
        self.retries = retries

    def ask(self, metric: str, instruction: str, source: torch.Tensor, edited: torch.Tensor) -> str:
        raise NotImplementedError

    def identity(self) -> dict:
        """What makes two judges' verdicts interchangeable (a resumed benchmark reuses only a same judge's)."""
        return {"backend": self.name}

    def score(self, metric: str, instruction: str, source: torch.Tensor, edited: torch.Tensor) -> Verdict:
        errors = []
        for attempt in range(1, self.retries + 2):
            try:
                answer = self.ask(metric, instruction, source, edited)
                value, reason = parse_answer(answer)
                return Verdict(metric, value, reason, attempt)
            except (ValueError, JudgeError) as error:
                errors.append(str(error))
                logger.warning("%s judge, %s, attempt %d: %s", self.name, metric, attempt, error)
        return Verdict(metric, None, "", self.retries + 1, "; ".join(errors))


class LocalJudge(Judge):
    """The local transformers VLM (revise_core.vlm), source and edited videos in one chat.

    mode="generate": the VLM writes the JSON answer (parsed like any backend's).
    mode="expected": the answer is forced to begin with `{"score": ` and the score is the expected value
    of the number tokens 0..10 at that position (soft, always defined; reason left empty). Tokenizers that
    split "10" use 0..9 rescaled to 0..10.
    """

    name = "local"

    def __init__(self, vlm, *, num_frames: int = 8, max_new_tokens: int = 96, retries: int = 2,
                 mode: str = "generate") -> None:
        super().__init__(retries)
        if mode not in ("generate", "expected"):
            raise ValueError(f"local judge mode must be 'generate' or 'expected', got '{mode}'")
        self.vlm, self.num_frames, self.max_new_tokens, self.mode = vlm, num_frames, max_new_tokens, mode

    def identity(self) -> dict:
        return {"backend": self.name, "model": self.vlm.source or type(self.vlm).__name__, "mode": self.mode,
                "frames": self.num_frames, "max_new_tokens": self.max_new_tokens}

    def _messages(self, metric: str, instruction: str) -> list[dict]:
        return [
            {"role": "system", "content": SYSTEM_PROMPT},
            {"role": "user", "content": [
                {"type": "text", "text": "Source video:"}, {"type": "video"},
                {"type": "text", "text": "Edited video:"}, {"type": "video"},
                {"type": "text", "text": user_prompt(metric, instruction)},
            ]},
        ]

    def ask(self, metric, instruction, source, edited) -> str:
        if self.mode == "expected":
            return json.dumps({"score": self._expected_score(metric, instruction, source, edited), "reason": ""})
        return self.vlm.chat(self._messages(metric, instruction), [source, edited], max_new_tokens=self.max_new_tokens,
                             num_frames=self.num_frames)

    def _expected_score(self, metric, instruction, source, edited) -> float:
        numbers = _number_tokens(self.vlm.tokenizer)
        with torch.no_grad():
            logits = self.vlm.answer_logits(self._messages(metric, instruction), [source, edited],
                                            num_frames=self.num_frames, assistant_prefix='{"score": ')
        values = torch.tensor([v for v, _ in numbers], dtype=torch.float32)
        probs = torch.softmax(logits[[t for _, t in numbers]], dim=0)
        top = float(values.max())
        return float((probs * values).sum()) * (10.0 / top)


def _number_tokens(tokenizer) -> list[tuple[int, int]]:
    """(value, token id) for the scores 0..10 that are single tokens (with a leading space or not)."""
    found = []
    for value in range(11):
        for text in (str(value), f" {value}"):
            ids = tokenizer.encode(text, add_special_tokens=False)
            if len(ids) == 1:
                found.append((value, ids[0]))
                break
    if len(found) < 2:
        raise JudgeError("the VLM tokenizer has no single-token digits; use mode='generate'")
    return found


class OpenAIJudge(Judge):
    """Any OpenAI-compatible /chat/completions endpoint (base URL, model and key from flags or environment)."""

    name = "openai"

    def __init__(self, *, base_url: str | None = None, model: str | None = None, api_key: str | None = None,
                 num_frames: int = 4, timeout: float = 60.0, retries: int = 2, backoff: float = 1.0,
                 max_tokens: int = 200) -> None:
        from ..llm import OpenAIChat

        super().__init__(retries)
        # One HTTP attempt per judge attempt: the judge's retries cover transport errors and bad answers alike.
        self.chat = OpenAIChat(base_url=base_url, model=model, api_key=api_key, timeout=timeout, retries=0)
        self.num_frames, self.backoff, self.max_tokens = num_frames, backoff, max_tokens

    def identity(self) -> dict:
        return {"backend": self.name, "url": self.chat.base_url, "model": self.chat.model, "frames": self.num_frames,
                "max_tokens": self.max_tokens}

    def ask(self, metric, instruction, source, edited) -> str:
        from ..llm import LLMError

        content = [{"type": "text", "text": "Source video frames:"}]
        content += [_image_part(frame) for frame in _sample(source, self.num_frames)]
        content.append({"type": "text", "text": "Edited video frames:"})
        content += [_image_part(frame) for frame in _sample(edited, self.num_frames)]
        content.append({"type": "text", "text": user_prompt(metric, instruction)})
        messages = [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": content}]
        try:
            return self.chat.complete(messages, max_tokens=self.max_tokens)
        except LLMError as error:
            time.sleep(self.backoff)
            raise JudgeError(str(error)) from error


def _sample(frames: torch.Tensor, count: int) -> torch.Tensor:
    index = torch.linspace(0, frames.shape[0] - 1, min(count, frames.shape[0])).round().long()
    return frames[index]


def _image_part(frame: torch.Tensor) -> dict:
    from PIL import Image

    pixels = (frame.clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=90)
    encoded = base64.b64encode(buffer.getvalue()).decode()
    return {"type": "image_url", "image_url": {"url": f"data:image/jpeg;base64,{encoded}"}}

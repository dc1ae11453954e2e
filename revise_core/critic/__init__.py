"""SelfCritic: the model's own VLM judges an edit; its Yes/No logits are a differentiable reward.

Paper section 4.2.2: the frozen VLM sees the instruction, the source video and the (one-step) edited
video, and is asked whether the edit satisfies the four dimensions of section 3.2. The reward is read at
the verdict position: Δ = ℓ_Yes − ℓ_No, P(Yes) = σ(Δ) (the softmax over {Yes, No}). The relative reward
Δ − Δ_base subtracts the verdict on the (source, source) pair, computed once per (source, instruction)
without gradient and cached, so an unedited video scores exactly 0.

Gradients flow from Δ through the VLM (frozen: eval, no parameter gradients) into the edited pixels.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field

import torch

from ..chat_text import check_instruction
from ..video import preprocessing_for
from ..vlm import VisionLanguageModel

logger = logging.getLogger(__name__)

DIMENSIONS: dict[str, str] = {
    "edit_accuracy": "Edit accuracy: the edited video shows the change the instruction asks for, including what "
                     "must be reasoned out (causes, consequences, elapsed time, implied objects).",
    "preservation_consistency": "Preservation consistency: everything the instruction does not ask to change "
                                "stays as in the source video (no over-editing).",
    "generation_naturalness": "Generation naturalness: motion and changes flow smoothly and naturally over time.",
    "generation_realism": "Generation realism: the frames look real, without artifacts, distortions or "
                          "unnatural textures.",
}
SYSTEM_PROMPT = (
    "You are a strict judge of instruction-based video edits. You will see an edit instruction, the source "
    "video and the edited video. Judge the edit on four dimensions:\n"
    + "\n".join(f"{i}. {text}" for i, text in enumerate(DIMENSIONS.values(), start=1))
    + "\nAnswer Yes only if all four hold; otherwise answer No."
)
ALL_QUESTION = "Does the edited video satisfy the instruction on all four dimensions ? Answer Yes or No ."
DIMENSION_QUESTION = "Consider only this dimension . {text} Does the edited video satisfy it ? Answer Yes or No ."
COT_REQUEST = "First explain your judgement briefly , then answer Yes or No ."
VERDICT_CUE = "\nVerdict :"


class CriticError(ValueError):
    """The critic cannot judge these inputs (or with this tokenizer)."""


@dataclass
class CriticConfig:
    """How the critic looks at videos and answers."""

    num_frames: int = 4  # F frames sampled uniformly from each video
    fps: float = 16.0
    cot: bool = False  # write a concise reasoning first (no gradient), then the verdict
    cot_tokens: int = 64  # bound on the reasoning length


@dataclass
class Verdict:
    """Δ (with gradient when the inputs have one) and what it means."""

    delta: torch.Tensor  # ℓ_Yes − ℓ_No at the verdict position, scalar
    reasoning: str = ""
    preprocessing: str = "exact"  # the pixel path both videos took (video.PREPROCESSING)

    @property
    def p_yes(self) -> torch.Tensor:
        return torch.sigmoid(self.delta)


@dataclass
class CriticReport:
    """Everything the CLI / node reports about one judged edit."""

    p_yes: float
    delta: float
    relative_delta: float
    per_dimension: dict[str, dict[str, float]] = field(default_factory=dict)
    reasoning: str = ""

    def to_dict(self) -> dict:
        return {"p_yes": self.p_yes, "delta": self.delta, "relative_delta": self.relative_delta,
                "per_dimension": self.per_dimension, "reasoning": self.reasoning}


def answer_token_ids(tokenizer, word: str, *, source: str = "") -> dict[bool, int]:
    """Single-token ids of `word` without (False) and with (True) a leading space; CriticError if not single."""
    ids = {}
    for leading_space in (False, True):
        text = (" " if leading_space else "") + word
        encoded = tokenizer.encode(text, add_special_tokens=False)
        if len(encoded) != 1:
            raise CriticError(
                f"{source + ': ' if source else ''}the VLM tokenizer splits {text!r} into {len(encoded)} tokens {encoded}; the critic needs '{word}' "
                "to be a single token (with and without a leading space) to read its logit"
            )
        ids[leading_space] = encoded[0]
    return ids


class SelfCritic:
    """Scores edits with a frozen VLM. Holds the Δ_base cache for one training run or session."""

    def __init__(self, vlm: VisionLanguageModel, config: CriticConfig | None = None) -> None:
        self.vlm = vlm
        self.config = config or CriticConfig()
        self.yes_ids = answer_token_ids(vlm.tokenizer, "Yes", source=vlm.source)
        self.no_ids = answer_token_ids(vlm.tokenizer, "No", source=vlm.source)
        vlm.model.eval().requires_grad_(False)
        self._baseline_cache: dict[tuple[str, str, str], torch.Tensor] = {}

    # --- inputs ---

    def _check(self, source: torch.Tensor, edited: torch.Tensor, instruction: str) -> None:
        check_instruction(instruction)
        for name, frames in (("source", source), ("edited", edited)):
            if frames.ndim != 4 or frames.shape[-1] != 3:
                raise CriticError(f"{name} frames must be [T, H, W, 3], got shape {tuple(frames.shape)}")
        if source.shape != edited.shape:
            raise CriticError(
                f"edited frames {tuple(edited.shape)} differ from the source {tuple(source.shape)}: the critic compares "
                "videos of the same frame count and size"
            )

    def _messages(self, instruction: str, question: str) -> list[dict]:
        return [
            {"role": "system", "content": SYSTEM_PROMPT},
            {"role": "user", "content": [
                {"type": "text", "text": f"Instruction : {instruction}\nSource video :"}, {"type": "video"},
                {"type": "text", "text": "\nEdited video :"}, {"type": "video"},
                {"type": "text", "text": "\n" + question + (" " + COT_REQUEST if self.config.cot else "")},
            ]},
        ]

    # --- verdicts ---

    def verdict(self, source: torch.Tensor, edited: torch.Tensor, instruction: str, *, dimension: str | None = None,
                preprocessing: str | None = None) -> Verdict:
        """Δ for (source, edited); differentiable in `edited` ([T, H, W, 3], roughly 0..1). `preprocessing`
        (video.PREPROCESSING) is the pixel path of both videos, by default `preprocessing_for(source, edited)`."""
        self._check(source, edited, instruction)
        preprocessing = preprocessing or preprocessing_for(source, edited)
        if dimension is not None and dimension not in DIMENSIONS:
            raise CriticError(f"unknown dimension '{dimension}'; known: {list(DIMENSIONS)}")
        question = ALL_QUESTION if dimension is None else DIMENSION_QUESTION.format(text=DIMENSIONS[dimension])
        messages = self._messages(instruction, question)
        reasoning, prefix = "", ""
        if self.config.cot:
            reasoning = self._reason(messages, source, edited, preprocessing)
            prefix = reasoning + VERDICT_CUE
        logits = self.vlm.answer_logits(messages, [source, edited], num_frames=self.config.num_frames,
                                        fps=self.config.fps, assistant_prefix=prefix, preprocessing=preprocessing)
        # After the generation prompt the answer starts a line ("Yes"); after "Verdict :" it follows a
        # space (" Yes"). Tokenizers with byte-level BPE give these different ids.
        spaced = bool(prefix) and not prefix[-1].isspace()
        delta = logits[self.yes_ids[spaced]] - logits[self.no_ids[spaced]]
        return Verdict(delta=delta, reasoning=reasoning, preprocessing=preprocessing)

    def _reason(self, messages: list[dict], source: torch.Tensor, edited: torch.Tensor, preprocessing: str) -> str:
        # Generated without gradient (vlm.chat runs under no_grad); only the verdict keeps the graph.
        return self.vlm.chat(messages, [source.detach(), edited.detach()], max_new_tokens=self.config.cot_tokens,
                             num_frames=self.config.num_frames, fps=self.config.fps, preprocessing=preprocessing)

    def baseline(self, source: torch.Tensor, instruction: str, *, dimension: str | None = None,
                 preprocessing: str = "exact") -> torch.Tensor:
        """Δ_base of the (source, source) pair: no gradient, computed once per (source, instruction, pixel path);
        `preprocessing` must be the path of the Δ it is subtracted from (`relative` sees to it)."""
        key = (_fingerprint(source), instruction, dimension or "all", preprocessing)
        cached = self._baseline_cache.get(key)
        if cached is None:
            with torch.no_grad():
                cached = self.verdict(source.detach(), source.detach(), instruction, dimension=dimension,
                                      preprocessing=preprocessing).delta.detach()
            self._baseline_cache[key] = cached
        return cached

    def relative(self, source: torch.Tensor, edited: torch.Tensor, instruction: str, *, dimension: str | None = None) -> tuple[torch.Tensor, Verdict]:
        """(Δ − Δ_base, the verdict on the edit): the zero-centred reward of section 4.2.3. Both verdicts take one
        pixel path: differentiable when the edit carries a gradient (training), else the release's exact one, so
        an unedited video scores exactly 0 either way."""
        preprocessing = preprocessing_for(source, edited)
        verdict = self.verdict(source, edited, instruction, dimension=dimension, preprocessing=preprocessing)
        return verdict.delta - self.baseline(source, instruction, dimension=dimension,
                                             preprocessing=preprocessing), verdict

    def report(self, source: torch.Tensor, edited: torch.Tensor, instruction: str, *, per_dimension: bool = True) -> CriticReport:
        """All numbers for one edit, without gradient (for the CLI, nodes and best-of-N)."""
        with torch.no_grad():
            relative, verdict = self.relative(source, edited, instruction)
            dims = {}
            if per_dimension:
                for name in DIMENSIONS:
                    dim_verdict = self.verdict(source, edited, instruction, dimension=name)
                    dims[name] = {"p_yes": float(dim_verdict.p_yes), "delta": float(dim_verdict.delta)}
        return CriticReport(p_yes=float(verdict.p_yes), delta=float(verdict.delta), relative_delta=float(relative),
                            per_dimension=dims, reasoning=verdict.reasoning)


def _fingerprint(frames: torch.Tensor) -> str:
    """Content hash of a video, the key of the Δ_base cache."""
    data = frames.detach().float().cpu().contiguous()
    digest = hashlib.sha1(data.numpy().tobytes())
    digest.update(str(tuple(data.shape)).encode())
    return digest.hexdigest()

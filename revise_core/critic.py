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

from . import vlm as vlm_ops
from .vlm import VisionLanguageModel

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


def answer_token_ids(tokenizer, word: str) -> dict[bool, int]:
    """Single-token ids of `word` without (False) and with (True) a leading space; CriticError if not single."""
    ids = {}
    for leading_space in (False, True):
        text = (" " if leading_space else "") + word
        encoded = tokenizer.encode(text, add_special_tokens=False)
        if len(encoded) != 1:
            raise CriticError(
                f"the VLM tokenizer splits {text!r} into {len(encoded)} tokens {encoded}; the critic needs '{word}' "
                "to be a single token (with and without a leading space) to read its logit"
            )
        ids[leading_space] = encoded[0]
    return ids


class SelfCritic:
    """Scores edits with a frozen VLM. Holds the Δ_base cache for one training run or session."""

    def __init__(self, vlm: VisionLanguageModel, config: CriticConfig | None = None) -> None:
        self.vlm = vlm
        self.config = config or CriticConfig()
        self.yes_ids = answer_token_ids(vlm.tokenizer, "Yes")
        self.no_ids = answer_token_ids(vlm.tokenizer, "No")
        vlm.model.eval().requires_grad_(False)
        self._baseline_cache: dict[tuple[str, str, str], torch.Tensor] = {}

    # --- inputs ---

    def _check(self, source: torch.Tensor, edited: torch.Tensor, instruction: str) -> None:
        if not isinstance(instruction, str) or not instruction.strip():
            raise CriticError("the edit instruction is empty")
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

    def verdict(self, source: torch.Tensor, edited: torch.Tensor, instruction: str, *, dimension: str | None = None) -> Verdict:
        """Δ for (source, edited); differentiable in `edited` ([T, H, W, 3], roughly 0..1)."""
        self._check(source, edited, instruction)
        if dimension is not None and dimension not in DIMENSIONS:
            raise CriticError(f"unknown dimension '{dimension}'; known: {list(DIMENSIONS)}")
        question = ALL_QUESTION if dimension is None else DIMENSION_QUESTION.format(text=DIMENSIONS[dimension])
        messages = self._messages(instruction, question)
        videos = [vlm_ops.to_vlm_frames(frames, self.config.num_frames) for frames in (source, edited)]
        reasoning, prefix = "", ""
        if self.config.cot:
            reasoning = self._reason(messages, videos)
            prefix = reasoning + VERDICT_CUE
        inputs = vlm_ops.build_inputs(self.vlm, messages, videos, fps=self.config.fps, assistant_prefix=prefix)
        vlm_ops._reset_rope_cache(self.vlm)
        logits = self.vlm.model(**inputs.kwargs, logits_to_keep=1).logits[0, -1].float()
        # After the generation prompt the answer starts a line ("Yes"); after "Verdict :" it follows a
        # space (" Yes"). Tokenizers with byte-level BPE give these different ids.
        spaced = bool(prefix) and not prefix[-1].isspace()
        delta = logits[self.yes_ids[spaced]] - logits[self.no_ids[spaced]]
        return Verdict(delta=delta, reasoning=reasoning)

    def _reason(self, messages: list[dict], videos: list[torch.Tensor]) -> str:
        inputs = vlm_ops.build_inputs(self.vlm, messages, [v.detach() for v in videos], fps=self.config.fps)
        vlm_ops._reset_rope_cache(self.vlm)
        with torch.no_grad():
            output = self.vlm.model.generate(
                **inputs.kwargs, max_new_tokens=self.config.cot_tokens, do_sample=False,
                pad_token_id=self.vlm.tokenizer.pad_token_id, eos_token_id=self.vlm.tokenizer.eos_token_id,
            )
        vlm_ops._reset_rope_cache(self.vlm)
        new_tokens = output[0, inputs.kwargs["input_ids"].shape[1]:]
        return self.vlm.tokenizer.decode(new_tokens, skip_special_tokens=True).strip()

    def baseline(self, source: torch.Tensor, instruction: str, *, dimension: str | None = None) -> torch.Tensor:
        """Δ_base of the (source, source) pair: no gradient, computed once per (source, instruction)."""
        key = (_fingerprint(source), instruction, dimension or "all")
        cached = self._baseline_cache.get(key)
        if cached is None:
            with torch.no_grad():
                cached = self.verdict(source.detach(), source.detach(), instruction, dimension=dimension).delta.detach()
            self._baseline_cache[key] = cached
        return cached

    def relative(self, source: torch.Tensor, edited: torch.Tensor, instruction: str, *, dimension: str | None = None) -> tuple[torch.Tensor, Verdict]:
        """(Δ − Δ_base, the verdict on the edit): the zero-centred reward of section 4.2.3."""
        verdict = self.verdict(source, edited, instruction, dimension=dimension)
        return verdict.delta - self.baseline(source, instruction, dimension=dimension), verdict

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


# --- command line ---------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    """python -m revise_core.critic --models DIR --source A --edited B --instruction TEXT [--cot] [--json]"""
    import argparse
    import json
    import sys
    import tempfile
    from pathlib import Path

    parser = argparse.ArgumentParser(prog="python -m revise_core.critic",
                                     description="Judge an edit with the model's own VLM: P(Yes), Δ, relative Δ.")
    parser.add_argument("--models", type=Path, help="folder with models.json (only its 'vlm' entry is used)")
    parser.add_argument("--source", type=Path, help="source video file")
    parser.add_argument("--edited", type=Path, help="edited video file (same frame count and size as the source)")
    parser.add_argument("--instruction", help="the edit instruction")
    parser.add_argument("--cot", action="store_true", help="let the VLM write a concise reasoning before the verdict")
    parser.add_argument("--frames", type=int, default=4, help="frames sampled uniformly from each video (default 4)")
    parser.add_argument("--no-per-dimension", action="store_true", help="skip the four per-dimension questions")
    parser.add_argument("--dtype", choices=("fp32", "bf16", "fp16"), default=None,
                        help="VLM dtype (default: bf16 on GPU, fp32 on CPU)")
    parser.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument("--demo", action="store_true",
                        help="tiny random VLM + synthetic videos (random weights: the numbers mean nothing)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    from .checkpoints import read_json
    from .video import conform, read_video, synthetic_clip
    from .vlm import load_vlm

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    dtype = args.dtype or ("bf16" if device.startswith("cuda") else "fp32")
    if args.demo:
        from .testing import tiny_vlm

        vlm = tiny_vlm()
        source = synthetic_clip(9, 64, 64, seed=0).frames
        edited = synthetic_clip(9, 64, 64, seed=1).frames
        instruction = args.instruction or "make the square red"
    else:
        missing = [n for n in ("models", "source", "edited", "instruction") if getattr(args, n) is None]
        if missing:
            parser.error("missing " + ", ".join(f"--{m}" for m in missing) + " (or use --demo)")
        spec = read_json(args.models / "models.json", what="model set description (models.json)")
        if "vlm" not in spec:
            parser.error(f"{args.models / 'models.json'} has no 'vlm' entry")
        vlm = load_vlm(args.models / spec["vlm"], dtype=dtype, device=device)
        source = read_video(args.source).frames
        edited = read_video(args.edited).frames
        if edited.shape[1:] != source.shape[1:]:
            raise CriticError(
                f"{args.edited}: frames are {tuple(edited.shape[1:3])} (HxW) but the source {args.source} has "
                f"{tuple(source.shape[1:3])}"
            )
        count = min(source.shape[0], edited.shape[0])
        source, edited = conform(source[:count], min_frames=1), conform(edited[:count], min_frames=1)
        instruction = args.instruction
    critic = SelfCritic(vlm, CriticConfig(num_frames=args.frames, cot=args.cot))
    report = critic.report(source, edited, instruction, per_dimension=not args.no_per_dimension)
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        print(f"P(Yes) = {report.p_yes:.4f}   Δ = {report.delta:+.4f}   Δ − Δ_base = {report.relative_delta:+.4f}")
        for name, values in report.per_dimension.items():
            print(f"  {name:<26} P(Yes) = {values['p_yes']:.4f}")
        if report.reasoning:
            print(f"reasoning: {report.reasoning}")
    return 0


if __name__ == "__main__":
    import sys

    sys.exit(main())

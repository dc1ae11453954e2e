"""The interface every VLM family implements, and the parts all families share.

A VLM `U` has three uses in ReViSE (paper §3.2, §4.2): it encodes the source video and the instruction
into hidden states `u` for the connector, it writes text (captions, chain of thought), and it answers
Yes / No about an edit, whose logits are the differentiable reward. Each family (Qwen2-VL / Qwen2.5-VL,
VILA, ...) lives in one module and subclasses `VisionLanguageModel`; callers (editor, SelfCritic, trainer,
RVE-Bench judge, nodes) only see this class.

A family implements five things:
- `build_inputs(messages, videos)`: a chat with `{"type": "video"}` placeholders rendered in the family's
  chat template, with the videos' pixels prepared differentiably, as a `VLMInputs`;
- `forward(inputs)`: logits of the last positions (and the last hidden states when asked), differentiable;
- `generate_from(inputs)`: greedy, bounded text generation;
- `encode(frames, instruction)`: the conditioning states `u` exactly as the family's release builds them;
- `hidden_size`, and optionally `reset_state` / `set_gradient_checkpointing`.
Everything else (chat, captions, the verdict logits) is written once here.
"""

from __future__ import annotations

import abc
import contextlib
import logging
from dataclasses import dataclass, field
from typing import ClassVar

import torch
from torch import nn

logger = logging.getLogger(__name__)


class VLMError(ValueError):
    """A VLM cannot take these inputs (empty instruction, wrong frame layout, placeholder mismatch)."""


@dataclass
class VLMInputs:
    """One conversation (batch 1) prepared for a family's forward.

    `kwargs` is family-specific (the model's own keyword arguments for Qwen-VL; ids with image markers and
    pixels for VILA); callers treat it as opaque and pass the object back to the same VLM.
    """

    kwargs: dict
    # Leading tokens of the prompt that `encode` drops from u (Omni-Video 2 drops the system message).
    prefix_len: int = 0
    # Text token ids of the prompt, [L] (family placeholders for visual tokens included).
    token_ids: torch.Tensor = field(default_factory=lambda: torch.zeros(0, dtype=torch.long))


@dataclass
class VLMOutput:
    """Logits of the last positions [K, V] and, when requested, the last-layer hidden states [L, H]."""

    logits: torch.Tensor
    hidden_states: torch.Tensor | None = None


@dataclass
class SampledFrames:
    """Frames [T, H, W, 3] in 0..1 taken at `indices` of a video of `fps` frames per second (the Omni-Video 2
    release hands its VLM the video file, whose processor samples frames over the whole video and writes
    their times). Families without timestamps use the frames alone."""

    frames: torch.Tensor
    indices: list[int]
    fps: float

    def detach(self) -> SampledFrames:
        return SampledFrames(self.frames.detach(), self.indices, self.fps)

    def float(self) -> SampledFrames:
        return SampledFrames(self.frames.float(), self.indices, self.fps)


@dataclass(frozen=True)
class CaptionPrompts:
    """The two turns of caption reasoning (a source caption, then a target caption from it and the
    instruction); `target_user` is formatted with {source} and {instruction}. Families whose release writes
    its own prompts (Omni-Video 2 for Qwen3-VL) return those from `VisionLanguageModel.caption_prompts`."""

    source_user: str = "Describe the source video ."
    target_user: str = "Source video : {source} Edit : {instruction} Describe the target video after the edit ."
    source_system: str | None = None
    target_system: str | None = None
    # family-specific keyword arguments of build_inputs for the caption turns (Qwen3-VL: Omni-Video 2's pixels)
    options: dict = field(default_factory=dict)


class VisionLanguageModel(abc.ABC):
    """A VLM with its tokenizer and preprocessing; frozen unless a caller trains it on purpose.

    `model` is one `nn.Module` holding every weight (so `.parameters()`, `.eval()`, `.to()` and
    `.requires_grad_()` act on the whole VLM) and `tokenizer` its tokenizer.
    """

    family: ClassVar[str] = ""
    model: nn.Module
    tokenizer: object
    source: str  # where it was loaded from ("" when built in memory); named in errors

    # --- what each family implements ---------------------------------------------------------------

    @property
    @abc.abstractmethod
    def hidden_size(self) -> int:
        """Width of u (the LLM's hidden size)."""

    @abc.abstractmethod
    def build_inputs(self, messages: list[dict], videos: list[torch.Tensor] = (), *, fps: float = 16.0,
                     add_generation_prompt: bool = True, assistant_prefix: str = "",
                     preprocessing: str | None = None) -> VLMInputs:
        """Render `messages` (roles system / user / assistant; content a string or a list of
        `{"type": "text", "text": ...}` and `{"type": "video"}` parts) and attach `videos`, frames
        [F, 3, H, W] in 0..1, one per placeholder, in order. `assistant_prefix` is text placed after the
        generation prompt (e.g. a chain of thought before the verdict position). `preprocessing`
        (video.PREPROCESSING) is the pixel path of every video, by default `video.preprocessing_for(*videos)`;
        families with one path serve both. Differentiable in the videos (with "differentiable")."""

    @abc.abstractmethod
    def forward(self, inputs: VLMInputs, *, last: int = 1, hidden_states: bool = False) -> VLMOutput:
        """Logits of the last `last` positions; with `hidden_states`, also the last layer's states."""

    @abc.abstractmethod
    def generate_from(self, inputs: VLMInputs, *, max_new_tokens: int) -> torch.Tensor:
        """Ids of the greedily generated continuation (at most `max_new_tokens`), without gradient."""

    @abc.abstractmethod
    def encode(self, frames: torch.Tensor, instruction: str, *, num_frames: int | None = 8,
               fps: float = 16.0) -> torch.Tensor:
        """u = hidden states [L_u, H] for (source video frames [T, H, W, 3] in 0..1, instruction), built as
        the family's release builds them. Differentiable in `frames` when gradients are enabled."""

    def caption_prompts(self) -> CaptionPrompts:
        """The prompts of caption reasoning; the generic ones unless the family's release has its own."""
        return CaptionPrompts()

    def reset_state(self) -> None:  # noqa: B027 (a no-op by default: only some families keep state)
        """Forget state cached between calls (Qwen-VL keeps rope deltas on the model)."""

    def encode_options(self) -> dict:
        """What, besides the weights and the inputs, decides `encode`'s output (keys of feature caches)."""
        return {"family": self.family}

    def set_gradient_checkpointing(self, enabled: bool) -> None:
        """Turn activation checkpointing on or off in every transformer of the VLM."""
        for module in self.checkpointable_modules():
            _set_checkpointing(module, enabled)

    def checkpointable_modules(self) -> list[nn.Module]:
        return [self.model]

    # --- shared ---------------------------------------------------------------------------------

    def prepare_frames(self, frames: torch.Tensor | SampledFrames, num_frames: int | None) -> torch.Tensor:
        """ComfyUI frames [T, H, W, 3] (or SampledFrames) -> the [F, 3, H, W] a video placeholder takes."""
        if isinstance(frames, SampledFrames):
            frames = frames.frames
        return to_vlm_frames(frames, num_frames)

    def answer_logits(self, messages: list[dict], videos: list[torch.Tensor], *, num_frames: int | None = 4,
                      fps: float = 16.0, assistant_prefix: str = "", preprocessing: str | None = None) -> torch.Tensor:
        """Logits [V] of the token that answers the chat (the verdict position), differentiable in the
        videos ([T, H, W, 3] in 0..1); gradients never reach the VLM's weights while it is frozen."""
        inputs = self.build_inputs(messages, [self.prepare_frames(v, num_frames) for v in videos], fps=fps,
                                   assistant_prefix=assistant_prefix, preprocessing=preprocessing)
        self.reset_state()
        with _checkpointing_active(self.checkpointable_modules()):
            return self.forward(inputs).logits[-1].float()

    def chat(self, messages: list[dict], videos: list[torch.Tensor] = (), *, max_new_tokens: int = 128,
             num_frames: int | None = 8, fps: float = 16.0, options: dict | None = None,
             preprocessing: str | None = None) -> str:
        """Greedy answer to a chat with `{"type": "video"}` placeholders; `videos` are [T, H, W, 3] in 0..1.
        `options`: family-specific keyword arguments of `build_inputs` (e.g. CaptionPrompts.options)."""
        if max_new_tokens < 1:
            raise VLMError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
        with torch.no_grad():
            inputs = self.build_inputs(messages, [self.prepare_frames(v.detach(), num_frames) for v in videos],
                                       fps=fps, preprocessing=preprocessing, **(options or {}))
            self.reset_state()
            new_tokens = self.generate_from(inputs, max_new_tokens=max_new_tokens)
            self.reset_state()
        return self.tokenizer.decode(new_tokens, skip_special_tokens=True).strip()

    def generate(self, frames: torch.Tensor | None, prompt: str, *, system_prompt: str | None = None,
                 max_new_tokens: int = 128, num_frames: int | None = 8, fps: float = 16.0,
                 options: dict | None = None) -> str:
        """Greedy text about an optional video (no gradient); returns the new text only."""
        content = ([{"type": "video"}] if frames is not None else []) + [{"type": "text", "text": prompt}]
        messages = ([{"role": "system", "content": system_prompt}] if system_prompt else []) + [
            {"role": "user", "content": content}]
        return self.chat(messages, [frames] if frames is not None else [], max_new_tokens=max_new_tokens,
                         num_frames=num_frames, fps=fps, options=options)

    @property
    def device(self) -> torch.device:
        from ..checkpoints import device_of

        return device_of(self.model)

    @property
    def dtype(self) -> torch.dtype:
        from ..checkpoints import compute_dtype

        return compute_dtype(self.model)


# --- helpers shared by the families ----------------------------------------------------------------

def to_vlm_frames(frames: torch.Tensor, num_frames: int | None = None) -> torch.Tensor:
    """ComfyUI frames [T, H, W, 3] -> [F, 3, H, W], F frames sampled uniformly (all when None)."""
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise VLMError(f"expected frames [T, H, W, 3], got shape {tuple(frames.shape)}")
    if num_frames is not None and num_frames < frames.shape[0]:
        frames = frames[torch.tensor(vlm_frame_indices(frames.shape[0], num_frames), device=frames.device)]
    return frames.permute(0, 3, 1, 2)


def vlm_frame_indices(total: int, num_frames: int | None) -> list[int]:
    """Which of `total` frames `to_vlm_frames` keeps: `num_frames` spread uniformly (all when None or more)."""
    if num_frames is None or num_frames >= total:
        return list(range(total))
    return torch.linspace(0, total - 1, num_frames).round().long().tolist()


def message_parts(message: dict) -> list[dict]:
    """The content of a chat message as a list of parts (a plain string is one text part)."""
    content = message.get("content", "")
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    if not isinstance(content, list):
        raise VLMError(f"message content must be a string or a list of parts, got {type(content).__name__}")
    for part in content:
        if part.get("type") not in ("text", "video"):
            raise VLMError(f"unsupported message part type {part.get('type')!r}; expected 'text' or 'video'")
    return content


@contextlib.contextmanager
def _checkpointing_active(modules: list[nn.Module]):
    """Let transformers checkpoint the layers it was told to, although the frozen VLM is in eval mode.

    transformers checkpoints a layer only while the layer's own `training` flag is set, so on the critic's
    frozen (eval-mode) VLM `gradient_checkpointing_enable` alone saves nothing. Only the flag of each
    checkpointing layer is raised, not its children's: attention dropout and the like still see eval mode.
    """
    from transformers.modeling_layers import GradientCheckpointingLayer

    layers = [m for root in modules for m in root.modules()
              if isinstance(m, GradientCheckpointingLayer) and m.gradient_checkpointing and not m.training]
    for layer in layers:
        layer.training = True
    try:
        yield
    finally:
        for layer in layers:
            layer.training = False


def _set_checkpointing(module: nn.Module, enabled: bool) -> None:
    # transformers 5 renamed the methods (activation_checkpointing_*); older names still exist.
    if enabled:
        (getattr(module, "activation_checkpointing_enable", None) or module.gradient_checkpointing_enable)()
    else:
        (getattr(module, "activation_checkpointing_disable", None) or module.gradient_checkpointing_disable)()

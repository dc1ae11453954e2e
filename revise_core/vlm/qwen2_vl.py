"""Qwen2-VL / Qwen2.5-VL family (transformers `AutoModelForImageTextToText`), the Omni-Video 2 style VLM.

Loaded from a Hugging Face folder only (config.json, weights, tokenizer, preprocessor config). The
transformers *processors* are not used: on machines without torchvision the video processors cannot be
imported, and the critic needs a differentiable path anyway. The preprocessing numbers are read from the
folder's (video_)preprocessor_config.json into `VisionPreprocessConfig`.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from .. import chat_text
from .. import checkpoints as ckpt
from ..chat_text import check_instruction
from .base import VisionLanguageModel, VLMError, VLMInputs, VLMOutput

logger = logging.getLogger(__name__)

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
MODEL_TYPES = ("qwen2_vl", "qwen2_5_vl")
TOKEN_TYPE_VIDEO = 2  # mm_token_type_ids: 0 text, 1 image, 2 video

FEATURE_SYSTEM_PROMPT = (
    "You are a video editing assistant. Read the source video and the edit instruction, and think about "
    "what the edited video must show."
)


@dataclass(frozen=True)
class VisionPreprocessConfig:
    """How frames become vision patches (Qwen2-VL family). Defaults are Qwen2.5-VL's video processor."""

    patch_size: int = 14
    merge_size: int = 2
    temporal_patch_size: int = 2
    min_pixels: int = 128 * 28 * 28
    max_pixels: int = 768 * 28 * 28
    image_mean: tuple[float, float, float] = CLIP_MEAN
    image_std: tuple[float, float, float] = CLIP_STD

    @classmethod
    def from_folder(cls, folder: Path) -> VisionPreprocessConfig:
        for name in ("video_preprocessor_config.json", "preprocessor_config.json"):
            path = folder / name
            if path.is_file():
                return cls.from_dict(ckpt.read_json(path, what="VLM preprocessor config"), source=path)
        raise ckpt.ModelFileNotFoundError(
            f"{folder}: no video_preprocessor_config.json or preprocessor_config.json; the VLM folder must "
            "be a complete Hugging Face model folder"
        )

    def to_processor_config(self) -> dict:
        """The preprocessor_config.json a Qwen2-VL folder carries for these numbers (what from_dict reads)."""
        return dict(patch_size=self.patch_size, merge_size=self.merge_size, temporal_patch_size=self.temporal_patch_size,
                    min_pixels=self.min_pixels, max_pixels=self.max_pixels, image_mean=list(self.image_mean),
                    image_std=list(self.image_std), image_processor_type="Qwen2VLImageProcessor")

    @classmethod
    def from_dict(cls, data: dict, *, source: Path | str = "<dict>") -> VisionPreprocessConfig:
        size = data.get("size") or {}
        min_pixels = data.get("min_pixels", size.get("shortest_edge", cls.min_pixels))
        max_pixels = data.get("max_pixels", size.get("longest_edge", cls.max_pixels))
        try:
            return cls(
                patch_size=int(data.get("patch_size", cls.patch_size)),
                merge_size=int(data.get("merge_size", cls.merge_size)),
                temporal_patch_size=int(data.get("temporal_patch_size", cls.temporal_patch_size)),
                min_pixels=int(min_pixels),
                max_pixels=int(max_pixels),
                image_mean=tuple(float(x) for x in data.get("image_mean", CLIP_MEAN)),
                image_std=tuple(float(x) for x in data.get("image_std", CLIP_STD)),
            )
        except (TypeError, ValueError) as error:
            raise ckpt.CheckpointError(f"{source}: invalid preprocessing value ({error})") from error


@dataclass
class Qwen2VLModel(VisionLanguageModel):
    """A Qwen2-VL / Qwen2.5-VL model with its tokenizer and preprocessing numbers."""

    family = "qwen2_vl"
    model: nn.Module
    tokenizer: object
    preprocess: VisionPreprocessConfig
    source: str = ""  # the folder it was loaded from (named in errors)

    @property
    def hidden_size(self) -> int:
        config = self.model.config
        return int(getattr(config, "text_config", config).hidden_size)

    def build_inputs(self, messages, videos=(), *, fps=16.0, add_generation_prompt=True, assistant_prefix="",
                     preprocessing=None):
        # One preprocessing path (torch, equal to the transformers processor) serves both video.PREPROCESSING modes.
        model_type = self.model.config.model_type
        if model_type not in MODEL_TYPES:
            raise VLMError(f"'{model_type}' is not a Qwen2-VL family model; expected one of {MODEL_TYPES}")
        tokenizer = self.tokenizer
        # Message text is literal: only the template's own video placeholders count, and control-token strings
        # in an instruction stay text (chat_text).
        pieces = chat_text.render_chat(tokenizer, messages, add_generation_prompt=add_generation_prompt)
        if assistant_prefix:
            pieces.append((assistant_prefix, True))
        video_token = tokenizer.convert_ids_to_tokens(self.model.config.video_token_id)
        merge = self.preprocess.merge_size ** 2

        def video_text(video: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int, int], str]:
            video_patches, grid = frames_to_patches(video, self.preprocess)
            return video_patches, grid, video_token * (grid[0] * grid[1] * grid[2] // merge)

        expanded, patches, grids = expand_video_placeholders(pieces, video_token, videos, video_text)
        device = self.device
        input_ids = torch.tensor([chat_text.tokenize(tokenizer, expanded)], device=device)
        limit = getattr(getattr(self.model.config, "text_config", self.model.config), "max_position_embeddings", None)
        if limit is not None and input_ids.shape[1] > int(limit):
            logger.warning("the VLM prompt has %d tokens, more than the model's context of %d; expect degraded "
                           "answers (fewer frames or a shorter instruction fit)", input_ids.shape[1], limit)
        kwargs = {
            "input_ids": input_ids,
            "attention_mask": torch.ones_like(input_ids),
            # Without it Qwen2.5-VL silently falls back to 1-D positions for the video tokens.
            "mm_token_type_ids": (input_ids == self.model.config.video_token_id).long() * TOKEN_TYPE_VIDEO,
        }
        if videos:
            kwargs["pixel_values_videos"] = torch.cat(patches).to(device=device, dtype=self.dtype)
            kwargs["video_grid_thw"] = torch.tensor(grids, device=device)
            if model_type == "qwen2_5_vl":
                kwargs["second_per_grid_ts"] = torch.tensor(
                    [self.preprocess.temporal_patch_size / fps] * len(videos), device=device)
        system = [message for message in messages if message.get("role") == "system"]
        prefix_len = 0
        if system and messages[0].get("role") == "system":
            prefix_len = len(chat_text.tokenize(tokenizer, chat_text.render_chat(tokenizer, system[:1],
                                                                                  add_generation_prompt=False)))
        return VLMInputs(kwargs, prefix_len, input_ids[0])

    def forward(self, inputs, *, last=1, hidden_states=False):
        output = self.model(**inputs.kwargs, output_hidden_states=hidden_states, logits_to_keep=last,
                            use_cache=False)  # one pass, nothing to cache (and checkpointing refuses a cache)
        states = output.hidden_states[-1][0] if hidden_states else None
        return VLMOutput(output.logits[0, -last:], states)

    def generate_from(self, inputs, *, max_new_tokens):
        output = self.model.generate(
            **inputs.kwargs, max_new_tokens=max_new_tokens, do_sample=False,
            pad_token_id=self.tokenizer.pad_token_id, eos_token_id=self.tokenizer.eos_token_id,
        )
        return output[0, inputs.kwargs["input_ids"].shape[1]:]

    def encode(self, frames, instruction, *, num_frames=8, fps=16.0, system_prompt=FEATURE_SYSTEM_PROMPT):
        """u = last hidden states of (system, video + instruction, generation prompt), system dropped."""
        check_instruction(instruction)
        messages = [
            {"role": "system", "content": system_prompt},
            {"role": "user", "content": [{"type": "video"}, {"type": "text", "text": instruction}]},
        ]
        inputs = self.build_inputs(messages, [self.prepare_frames(frames, num_frames)], fps=fps)
        self.reset_state()
        return self.forward(inputs, hidden_states=True).hidden_states[inputs.prefix_len:]

    def reset_state(self) -> None:
        # Qwen-VL caches rope deltas on the model between calls; a stale value from generate() would shift
        # the positions of the next forward, so every use starts fresh.
        inner = getattr(self.model, "model", None)
        if inner is not None and hasattr(inner, "rope_deltas"):
            inner.rope_deltas = None


def matches(config: dict) -> bool:
    return config.get("model_type") in MODEL_TYPES


def load(folder: Path, *, dtype: torch.dtype, device: torch.device | str) -> Qwen2VLModel:
    """Load a Qwen2-VL / Qwen2.5-VL Hugging Face folder; missing or unexpected weights are an error."""
    preprocess = VisionPreprocessConfig.from_folder(folder)
    model, tokenizer = load_model_and_tokenizer(folder, dtype=dtype, device=device)
    return Qwen2VLModel(model=model, tokenizer=tokenizer, preprocess=preprocess, source=str(folder))


def load_model_and_tokenizer(folder: Path, *, dtype: torch.dtype, device: torch.device | str):
    """A Hugging Face image-text folder's model (frozen, eval, on `device`) and tokenizer."""
    from transformers import AutoConfig

    from ..text import load_tokenizer

    try:
        config = AutoConfig.from_pretrained(str(folder), local_files_only=True)
    except (ValueError, KeyError) as error:
        raise ckpt.CheckpointError(f"{folder}/config.json: unsupported VLM config ({error})") from error
    model = load_image_text_model(folder, config, dtype=dtype)
    model.to(device).eval().requires_grad_(False)
    return model, load_tokenizer(folder, what="VLM tokenizer")


def load_image_text_model(folder: Path, config, *, dtype: torch.dtype) -> nn.Module:
    """`AutoModelForImageTextToText` from a local folder, strictly (missing / mis-shaped weights raise)."""
    from transformers import AutoModelForImageTextToText

    try:
        model, info = AutoModelForImageTextToText.from_pretrained(
            str(folder), config=config, dtype=dtype, local_files_only=True, output_loading_info=True,
        )
    except ValueError as error:
        raise ckpt.CheckpointError(
            f"{folder}: '{config.model_type}' cannot be loaded as an image-text-to-text model ({error})"
        ) from error
    except OSError as error:
        raise ckpt.CorruptCheckpointError(f"{folder}: the VLM weights are missing or unreadable ({error})") from error
    missing = sorted(info.get("missing_keys", []))
    mismatched = info.get("mismatched_keys", [])
    if missing or mismatched:
        raise ckpt.UnknownLayoutError(
            f"{folder}: the VLM weights do not fit its config: {len(missing)} missing {missing[:8]}, "
            f"{len(mismatched)} wrong shape {list(mismatched)[:8]}"
        )
    return model


def expand_video_placeholders(pieces: list, video_token: str, videos, video_text
                              ) -> tuple[list, list[torch.Tensor], list[tuple[int, int, int]]]:
    """Replace each video placeholder of the template's own text (never of literal user text) by the
    family's text for the next video; `video_text(video) -> (patches, grid, text)`. Returns the expanded
    pieces, the patches and the grids, in order; a placeholder count that differs from the videos is an error."""
    placeholders = sum(text.count(video_token) for text, literal in pieces if not literal)
    if placeholders != len(videos):
        raise VLMError(f"the chat has {placeholders} video placeholders but {len(videos)} videos were given")
    patches, grids, expanded = [], [], []
    remaining = iter(videos)
    for text, literal in pieces:
        if literal:
            expanded.append((text, True))
            continue
        parts = text.split(video_token)
        expanded.append((parts[0], False))
        for part in parts[1:]:
            video_patches, grid, replacement = video_text(next(remaining))
            patches.append(video_patches)
            grids.append(grid)
            expanded.append((replacement + part, False))
    return expanded, patches, grids


# --- differentiable preprocessing --------------------------------------------------------------------
# Reimplemented in torch on purpose: the transformers video processors need torchvision (absent on
# CPU-only machines), and the critic needs gradients from the VLM back to the pixels.

def smart_resize(height: int, width: int, factor: int, min_pixels: int, max_pixels: int) -> tuple[int, int]:
    """Qwen2-VL's rule: sides multiples of `factor`, area within [min_pixels, max_pixels], aspect kept."""
    if max(height, width) / min(height, width) > 200:
        raise VLMError(f"aspect ratio {max(height, width) / min(height, width):.0f} is above 200")
    h_bar = round(height / factor) * factor
    w_bar = round(width / factor) * factor
    if h_bar * w_bar > max_pixels:
        beta = math.sqrt(height * width / max_pixels)
        h_bar = max(factor, math.floor(height / beta / factor) * factor)
        w_bar = max(factor, math.floor(width / beta / factor) * factor)
    elif h_bar * w_bar < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h_bar = math.ceil(height * beta / factor) * factor
        w_bar = math.ceil(width * beta / factor) * factor
    return h_bar, w_bar


def frames_to_patches(frames: torch.Tensor, config: VisionPreprocessConfig) -> tuple[torch.Tensor, tuple[int, int, int]]:
    """Frames [T, 3, H, W] in 0..1 -> (pixel_values_videos [N, 3·tp·p·p], grid (t, h, w)); differentiable.

    Resize (antialiased bicubic, as torchvision does on float input), normalise, repeat the last frame
    up to a multiple of the temporal patch, then patchify in the processor's exact order.
    """
    if frames.ndim != 4 or frames.shape[1] != 3:
        raise VLMError(f"expected frames [T, 3, H, W], got shape {tuple(frames.shape)}")
    p, m, tp = config.patch_size, config.merge_size, config.temporal_patch_size
    height, width = smart_resize(frames.shape[2], frames.shape[3], p * m, config.min_pixels, config.max_pixels)
    frames = frames.float()
    if (height, width) != tuple(frames.shape[2:]):
        frames = F.interpolate(frames, size=(height, width), mode="bicubic", align_corners=False, antialias=True)
    mean = frames.new_tensor(config.image_mean).view(1, 3, 1, 1)
    std = frames.new_tensor(config.image_std).view(1, 3, 1, 1)
    frames = (frames - mean) / std
    return patchify(frames, p, m, tp)


def patchify(frames: torch.Tensor, patch: int, merge: int, temporal_patch: int
             ) -> tuple[torch.Tensor, tuple[int, int, int]]:
    """Normalised frames [T, 3, H, W] -> (patches [N, 3·tp·p·p], grid (t, h, w)) in the Qwen-VL processors'
    order (Qwen2-VL, Qwen2.5-VL and Qwen3-VL alike): the last frame repeated up to a multiple of the temporal
    patch, then merge-window-major patches."""
    remainder = frames.shape[0] % temporal_patch
    if remainder:
        frames = torch.cat([frames, frames[-1:].expand(temporal_patch - remainder, -1, -1, -1)])
    grid = (frames.shape[0] // temporal_patch, frames.shape[2] // patch, frames.shape[3] // patch)
    patches = rearrange(
        frames, "(gt tp) c (gh mh ph) (gw mw pw) -> (gt gh gw mh mw) (c tp ph pw)",
        tp=temporal_patch, mh=merge, ph=patch, mw=merge, pw=patch,
    )
    return patches, grid

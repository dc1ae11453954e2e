"""The VLM U (transformers `AutoModelForImageTextToText`, Qwen2.5-VL / Qwen3-VL family): loading.

Loaded from a Hugging Face folder only (config.json, weights, tokenizer, preprocessor config). The
transformers *processors* are not used: on machines without torchvision the video processors cannot be
imported, and the critic needs a differentiable path anyway. The preprocessing numbers are read from the
folder's (video_)preprocessor_config.json into `VisionPreprocessConfig`.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from . import checkpoints as ckpt
from .text import load_tokenizer

logger = logging.getLogger(__name__)

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


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
class VisionLanguageModel:
    """The VLM with what it needs around it: tokenizer and preprocessing numbers."""

    model: nn.Module
    tokenizer: object
    preprocess: VisionPreprocessConfig

    @property
    def hidden_size(self) -> int:
        config = self.model.config
        return int(getattr(getattr(config, "text_config", config), "hidden_size"))


def load_vlm(
    folder: str | os.PathLike,
    *,
    dtype: torch.dtype | str = torch.bfloat16,
    device: torch.device | str = "cpu",
) -> VisionLanguageModel:
    """Load a VLM from a local Hugging Face folder; missing or unexpected weights are an error."""
    ckpt.enforce_offline()
    from transformers import AutoConfig, AutoModelForImageTextToText

    folder = Path(folder)
    if not folder.is_dir():
        raise ckpt.ModelFileNotFoundError(
            f"VLM folder not found: {folder} (expected a Hugging Face folder with config.json, weights, "
            "tokenizer and preprocessor_config.json)"
        )
    if not (folder / "config.json").is_file():
        raise ckpt.ModelFileNotFoundError(f"{folder}: no config.json; not a Hugging Face model folder")
    try:
        config = AutoConfig.from_pretrained(str(folder), local_files_only=True)
    except (ValueError, KeyError) as error:
        raise ckpt.CheckpointError(f"{folder}/config.json: unsupported VLM config ({error})") from error
    try:
        model, info = AutoModelForImageTextToText.from_pretrained(
            str(folder), config=config, dtype=ckpt.resolve_dtype(dtype), local_files_only=True,
            output_loading_info=True,
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
    model.to(device).eval().requires_grad_(False)
    tokenizer = load_tokenizer(folder, what="VLM tokenizer")
    return VisionLanguageModel(model=model, tokenizer=tokenizer, preprocess=VisionPreprocessConfig.from_folder(folder))

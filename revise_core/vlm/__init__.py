"""The VLM U: model families behind one interface (`VisionLanguageModel`, see base.py).

    qwen2_vl.py   Qwen2-VL / Qwen2.5-VL (Hugging Face folders)
    qwen3_vl.py   Qwen3-VL dense and MoE (Hugging Face folders), Omni-Video 2's VLM
    vila.py       VILA: Llama-3 + SigLIP + projector, the ReViSE release's encoder and critic

`load_vlm(folder)` reads the folder's config.json and hands it to the one family that recognises it;
callers never branch on the family. A new family is one module with `matches(config)` and
`load(folder, dtype=, device=)`, added to FAMILIES.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from .. import checkpoints as ckpt
from . import qwen2_vl, qwen3_vl, vila
from .base import VisionLanguageModel, VLMError, VLMInputs, VLMOutput, to_vlm_frames

FAMILIES = (qwen2_vl, qwen3_vl, vila)

__all__ = ["FAMILIES", "VLMError", "VLMInputs", "VLMOutput", "VisionLanguageModel", "load_vlm", "to_vlm_frames"]


def load_vlm(
    folder: str | os.PathLike,
    *,
    dtype: torch.dtype | str = torch.bfloat16,
    device: torch.device | str = "cpu",
) -> VisionLanguageModel:
    """Load a VLM from a local folder of any supported family; missing or unexpected weights are an error."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ckpt.ModelFileNotFoundError(
            f"VLM folder not found: {folder} (expected a Hugging Face VLM folder, or a VILA checkpoint folder "
            "such as revise_ckpt/ar_model/checkpoint)"
        )
    if not (folder / "config.json").is_file():
        raise ckpt.ModelFileNotFoundError(f"{folder}: no config.json; not a Hugging Face model folder")
    config = ckpt.read_json(folder / "config.json", what="VLM config")
    for family in FAMILIES:
        if family.matches(config):
            return family.load(folder, dtype=ckpt.resolve_dtype(dtype), device=device)
    raise ckpt.UnknownLayoutError(
        f"{folder / 'config.json'}: model_type {config.get('model_type')!r} (architectures "
        f"{config.get('architectures')}) is not a supported VLM family; supported: Qwen2-VL / Qwen2.5-VL "
        f"(model_type {', '.join(qwen2_vl.MODEL_TYPES)}), Qwen3-VL (model_type {', '.join(qwen3_vl.MODEL_TYPES)}) "
        "and VILA (model_type llava_llama)"
    )

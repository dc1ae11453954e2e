"""The bridge to ComfyUI's own Wan path: the ReViSE condition as native CONDITIONING for KSampler.

ComfyUI's Wan text encoder hands the DiT umT5 states zero-padded to at least 512 rows, and the Wan model
applies `text_embedding` to every row, padding included. The ReViSE condition is the same kind of tensor,
the connector's context zero-padded to its `max_context_len` (2560 for the releases), and the releases' Wan
attends to all those rows: so the condition goes into CONDITIONING exactly as it is, and one call of ComfyUI's
Wan on it equals one call of our DiT (tests/test_real_comfyui.py). Both branches have the same length, so
ComfyUI batches them into one model call as it does for its own prompts.
"""

from __future__ import annotations

import torch

from revise_core.editor import Condition

from .common import CATEGORY, COND, expect


def native_conditioning(condition: Condition) -> tuple[list, list, dict]:
    """(positive, negative, empty latent) in ComfyUI's formats: CONDITIONING is a list of
    [context [1, L, D], options]; the latent is raw VAE space (ComfyUI's Wan21 latent format normalises it),
    zeros of the source's shape, as KSampler at denoise 1 starts from pure noise."""
    if condition.cond.shape != condition.uncond.shape:
        raise ValueError(f"cond {tuple(condition.cond.shape)} and uncond {tuple(condition.uncond.shape)} differ in "
                         "shape; both must be padded to the connector's max_context_len")
    positive = [[condition.cond.detach().float().cpu(), {}]]
    negative = [[condition.uncond.detach().float().cpu(), {}]]
    latent = {"samples": torch.zeros(condition.source_latents.shape, dtype=torch.float32)}
    return positive, negative, latent


class ReViSEWanConditioning:
    CATEGORY = f"{CATEGORY}/conditioning"
    FUNCTION = "convert"
    DESCRIPTION = (
        "The ReViSE condition as ComfyUI CONDITIONING, for ComfyUI's own Wan model (UNETLoader with a file from "
        "python -m revise_core.convert) and KSampler: positive = the edit context, negative = the connector's null "
        "branch, plus an empty latent of the edit's size. ComfyUI's CFG is uncond + cfg·(cond − uncond): the "
        "ReViSE release's guidance s (cond + s·(cond − uncond)) is cfg = s + 1, so its guidance 3 is cfg 4.")
    RETURN_TYPES = ("CONDITIONING", "CONDITIONING", "LATENT")
    RETURN_NAMES = ("positive", "negative", "latent")
    OUTPUT_TOOLTIPS = (
        "The connector's context [1, max_context_len, 4096], zero-padded as the release pads it.",
        "The null branch (Omni-Video 2: the source tokens alone; the ReViSE release: its unconditioned umT5 and "
        "VLM states with the source).",
        "Zeros of the source latent's shape [1, 16, t, h, w]: KSampler's latent_image at denoise 1.0.",
    )

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "cond": (COND, {"tooltip": "From ReViSE Connector."}),
        }}

    def convert(self, cond):
        expect(cond, Condition, "cond", COND)
        return native_conditioning(cond)


NODES = {"ReViSEWanConditioning": ReViSEWanConditioning}
DISPLAY_NAMES = {"ReViSEWanConditioning": "ReViSE → Wan Conditioning (native KSampler)"}

"""The bridge to ComfyUI's own Wan path: the ReViSE condition as native CONDITIONING for KSampler.

ComfyUI's Wan text encoder hands the DiT umT5 states zero-padded to at least 512 rows, and the Wan model
applies `text_embedding` to every row, padding included. The ReViSE condition is the same kind of tensor,
the connector's context zero-padded to its `max_context_len` (2560 for the releases), and the releases' Wan
attends to all those rows: so the condition goes into CONDITIONING exactly as it is, and one call of ComfyUI's
Wan on it equals one call of our DiT (tests/test_real_comfyui.py). Both branches have the same length, so
ComfyUI batches them into one model call as it does for its own prompts.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import torch

from revise_core.editor import Condition

from .common import CATEGORY, COND, expect

logger = logging.getLogger(__name__)


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


RESIZE_CALLBACK_KEY = "revise_window_context"
_FINGERPRINT_ROWS = 64  # rows compared to recognise our contexts among the cond items ComfyUI resizes


def window_context_callback(condition: Condition) -> Callable:
    """A RESIZE_COND_ITEM callback for ComfyUI's context-window handler (comfy/context_windows.py).

    ComfyUI slices cond tensors with a frame axis; our context has none (it holds the source tokens of every
    latent frame), so each window would attend to the whole clip's source. This callback recognises our positive
    and negative contexts (by a fixed set of rows) and returns them rebuilt for the window's latent frames
    (`Condition.window_context`): that slice of the source, the same VLM rows and instruction."""
    if condition.window_context is None or condition.cond is None:
        raise ValueError("this ReViSE condition cannot be rebuilt per window (it was made by a windowed ReViSE "
                         "Connector, or by an older version); connect a Connector without context options")
    full = {"cond": condition.cond.detach().float().cpu(), "uncond": condition.uncond.detach().float().cpu()}
    rows = torch.linspace(0, full["cond"].shape[1] - 1, _FINGERPRINT_ROWS).long()
    fingerprints = {name: tensor[:, rows] for name, tensor in full.items()}
    cache: dict[tuple[int, ...], tuple[torch.Tensor, torch.Tensor]] = {}

    def resize(cond_key, cond_value, window, x_in, device, cond_item):
        tensor = getattr(cond_value, "cond", None)
        if cond_key != "c_crossattn" or not isinstance(tensor, torch.Tensor) or tensor.shape != full["cond"].shape:
            return None
        sample = tensor[:, rows].detach().float().cpu()
        which = next((name for name, print_ in fingerprints.items() if torch.equal(sample, print_)), None)
        if which is None:
            return None
        frames = tuple(int(i) for i in window.index_list)
        if frames not in cache:
            logger.info("ReViSE context rebuilt for the window of latent frames %s", list(frames))
            with torch.no_grad():
                cache[frames] = tuple(t.float().cpu() for t in condition.window_context(frames))
        rebuilt = cache[frames][0 if which == "cond" else 1]
        return cond_value._copy_with(rebuilt.to(device=device if device is not None else tensor.device,
                                                dtype=tensor.dtype))

    return resize


class ReViSEContextWindows:
    CATEGORY = f"{CATEGORY}/conditioning"
    FUNCTION = "patch"
    DESCRIPTION = (
        "Makes ComfyUI's own context windows work with a ReViSE condition on the native path: put it after "
        "WAN Context Windows (Manual). ComfyUI slices what has a frame axis; the ReViSE context holds the source "
        "video's tokens of every frame, so each window would otherwise see the whole clip's source. This node "
        "rebuilds the context for each window's latent frames (that slice of the source, the instruction and "
        "VLM rows shared).")
    RETURN_TYPES = ("MODEL",)
    RETURN_NAMES = ("model",)
    OUTPUT_TOOLTIPS = ("The model with the per-window ReViSE context; wire it into KSampler.",)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "model": ("MODEL", {"tooltip": "The output of WAN Context Windows (Manual)."}),
            "cond": (COND, {"tooltip": "From ReViSE Connector (the same one ReViSE → Wan Conditioning reads), "
                                      "without context options."}),
        }}

    def patch(self, model, cond):
        expect(cond, Condition, "cond", COND)
        handler = getattr(model, "model_options", {}).get("context_handler")
        if handler is None or not hasattr(handler, "callbacks"):
            raise ValueError("the model has no context windows: put ComfyUI's WAN Context Windows (Manual) node "
                             "before ReViSE Context Windows (native)")
        import comfy.context_windows
        import comfy.patcher_extension

        patched = model.clone()  # deep-copies model_options, the handler with it
        comfy.patcher_extension.add_callback_with_key(
            comfy.context_windows.IndexListCallbacks.RESIZE_COND_ITEM, RESIZE_CALLBACK_KEY,
            window_context_callback(cond), patched.model_options["context_handler"].callbacks)
        return (patched,)


NODES = {"ReViSEWanConditioning": ReViSEWanConditioning, "ReViSEContextWindows": ReViSEContextWindows}
DISPLAY_NAMES = {"ReViSEWanConditioning": "ReViSE → Wan Conditioning (native KSampler)",
                 "ReViSEContextWindows": "ReViSE Context Windows (native)"}

"""SelfCritic and best-of-N nodes: the model's own VLM judges edits."""

from __future__ import annotations

from revise_core import jsonio
from revise_core.connector import ContextConnector
from revise_core.critic import CriticConfig, SelfCritic
from revise_core.editor import EditSettings, ReviseEditor
from revise_core.model_sets import EditModels
from revise_core.sampler import SamplerConfig
from revise_core.text import TextEncoder
from revise_core.vlm import VisionLanguageModel

from . import comfy_bridge as bridge
from . import node_text
from .common import (
    CATEGORY,
    CONNECTOR,
    DIT,
    T5,
    VAE,
    VLM,
    clip_memory,
    clip_size_inputs,
    expect,
    expect_dit,
    expect_vae,
    fps_input,
    using,
)


class ReViSESelfCritic:
    CATEGORY = f"{CATEGORY}/critic"
    FUNCTION = "judge"
    DESCRIPTION = ("Asks the VLM whether the edit satisfies the instruction on edit accuracy, preservation, "
                   "naturalness and realism; P(Yes) and the relative logit difference Δ − Δ(source, source).")
    RETURN_TYPES = ("FLOAT", "FLOAT", "STRING")
    RETURN_NAMES = ("p_yes", "relative_delta", "report")
    OUTPUT_TOOLTIPS = ("P(Yes) for all four dimensions.", "Δ − Δ_base: > 0 means better than leaving the source "
                       "unchanged.", "JSON report with per-dimension P(Yes) and the reasoning.")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "vlm": (VLM, {"tooltip": "From ReViSE Load VLM."}),
            "source": ("IMAGE", {"tooltip": "Source frames, fitted like the edit (ReViSE VAE Encode's 'frames')."}),
            "edited": ("IMAGE", {"tooltip": "Edited frames (same count and size as the source)."}),
            "instruction": ("STRING", {"multiline": True, "default": "", "tooltip": "The edit instruction."}),
            "chain_of_thought": ("BOOLEAN", {"default": False,
                                             "tooltip": "Let the VLM explain its judgement before the verdict."}),
            "frames": ("INT", {"default": 4, "min": 1, "max": 32, "tooltip": "Frames sampled uniformly from each video."}),
        }}

    def judge(self, vlm, source, edited, instruction, chain_of_thought, frames):
        expect(vlm, VisionLanguageModel, "vlm", VLM)
        critic = SelfCritic(vlm, CriticConfig(num_frames=frames, cot=chain_of_thought))
        device = bridge.compute_device_of(vlm.model)
        with using(vlm):
            report = critic.report(source.float().to(device), edited.float().to(device), instruction)
        return (report.p_yes, report.relative_delta, jsonio.dumps(report.to_dict(), indent=2))


class ReViSEBestOfEdit:
    CATEGORY = f"{CATEGORY}/critic"
    FUNCTION = "edit"
    DESCRIPTION = ("Edits with N seeds and keeps the one the model's own critic scores highest (test-time, beyond "
                   "the paper). The condition is encoded once.")
    RETURN_TYPES = ("IMAGE", "STRING", "INT")
    RETURN_NAMES = ("frames", "scores", "best_seed")
    OUTPUT_TOOLTIPS = ("The best edit.", "JSON: seed, relative Δ and P(Yes) of every candidate.", "Its seed.")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "dit": (DIT, {"tooltip": "From ReViSE Load DiT."}),
            "vae": (VAE, {"tooltip": "From ReViSE Load VAE."}),
            "t5": (T5, {"tooltip": "From ReViSE Load umT5."}),
            "vlm": (VLM, {"tooltip": "From ReViSE Load VLM (encoder and critic)."}),
            "connector": (CONNECTOR, {"tooltip": "From ReViSE Load Connector."}),
            "images": ("IMAGE", {"tooltip": "Source frames (fitted to 4k+1 frames and multiples of 32 by cropping)."}),
            "instruction": ("STRING", {"multiline": True, "default": "", "tooltip": "The edit instruction."}),
            "candidates": ("INT", {"default": 4, "min": 1, "max": 32, "tooltip": "N, seeds tried."}),
            "steps": ("INT", {"default": 40, "min": 1, "max": 200, "tooltip": "Denoising steps per candidate."}),
            "guidance": ("FLOAT", {"default": 3.0, "min": 0.0, "max": 20.0, "step": 0.1, "tooltip": "Guidance scale."}),
            "shift": ("FLOAT", {"default": 5.0, "min": 0.1, "max": 20.0, "step": 0.1, "tooltip": "Flow shift."}),
            "seed": ("INT", {"default": 0, "min": 0, "max": 2**63 - 1, "control_after_generate": True,
                             "tooltip": "First seed; candidates use seed, seed+1, ..."}),
        }, "optional": {**clip_size_inputs("edit"), "fps": fps_input()}}

    def edit(self, dit, vae, t5, vlm, connector, images, instruction, candidates, steps, guidance, shift, seed,
             num_frames=0, width=0, height=0, fps=16.0):
        expect_dit(dit)
        expect_vae(vae)
        for value, kind, wire in ((t5, TextEncoder, T5), (vlm, VisionLanguageModel, VLM), (connector, ContextConnector, CONNECTOR)):
            expect(value, kind, wire.lower(), wire)
        editor = ReviseEditor(EditModels(dit=dit, vae=vae, text=t5, vlm=vlm, connector=connector))
        settings = EditSettings(sampler=SamplerConfig(steps=steps, guidance_scale=guidance, shift=shift, seed=seed),
                                num_frames=num_frames or None, width=width or None, height=height or None, fps=fps)
        clip = (num_frames or images.shape[0], height or images.shape[1], width or images.shape[2])  # about the fitted
        # on a CPU the node says what N edits at the GPU defaults will cost, measured on the first step
        clock = node_text.cpu_clock(bridge.compute_device_of(dit), f"best-of-{candidates} sampling",
                                    steps * candidates)
        with using(dit, vae, t5, vlm, connector, memory_required=clip_memory(dit, vae, *clip)):
            result = editor.edit(images.float(), instruction, settings, best_of=candidates,
                                 callback=node_text.timed(bridge.progress(steps * candidates, preview_latents=True),
                                                          clock))
        return (result.frames, jsonio.dumps(result.scores, indent=2), result.seed)


NODES = {cls.__name__: cls for cls in (ReViSESelfCritic, ReViSEBestOfEdit)}
DISPLAY_NAMES = {"ReViSESelfCritic": "ReViSE SelfCritic", "ReViSEBestOfEdit": "ReViSE Best-of-N Edit"}

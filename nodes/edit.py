"""Edit-pipeline nodes: VAE encode/decode, VLM encode, connector, sampler."""

from __future__ import annotations

import logging

from revise_core import vae as vae_ops
from revise_core import video as video_ops
from revise_core.attention import BACKENDS, AttentionBackendError, check_backend
from revise_core.connector import ContextConnector
from revise_core.editor import (
    REASONING_MODES,
    Condition,
    EditSettings,
    VLMCondition,
    assemble_condition,
    encode_instruction,
)
from revise_core.lora import load_loras, patched_loras
from revise_core.sampler import GUIDANCE_MODES, SCHEDULERS, SIGMA_SCHEDULES, SamplerConfig, sample
from revise_core.step_cache import CACHES, StepCache, parse_mag_ratios
from revise_core.text import TextEncoder
from revise_core.vlm import VisionLanguageModel
from revise_core.windows import AUTO, WINDOW_SCHEDULES, TemporalWindows

from . import comfy_bridge as bridge
from . import node_text
from .common import (
    CATEGORY,
    COND,
    CONNECTOR,
    CONTEXT_OPTIONS,
    DIT,
    LORAS,
    T5,
    VAE,
    VLM,
    VLM_COND,
    clip_size_inputs,
    dit_memory,
    expect,
    expect_dit,
    expect_loras,
    expect_vae,
    fps_input,
    using,
    vae_decode_memory,
    vae_encode_memory,
)

FRAMES_TOOLTIP = "Video frames (IMAGE batch [T, H, W, 3]), e.g. from Get Video Components."

logger = logging.getLogger(__name__)


class ReViSEVAEEncode:
    CATEGORY = f"{CATEGORY}/latent"
    FUNCTION = "encode"
    DESCRIPTION = ("Fits the source video to Wan's shape (4k+1 frames, sides multiple of 32, no distortion unless "
                   "'stretch') and encodes it; also returns the fitted frames for the VLM and the critic.")
    RETURN_TYPES = ("LATENT", "IMAGE")
    RETURN_NAMES = ("latent", "frames")
    OUTPUT_TOOLTIPS = ("Source latents (raw Wan VAE space).", "The fitted source frames.")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "vae": (VAE, {"tooltip": "From ReViSE Load VAE."}),
            "images": ("IMAGE", {"tooltip": FRAMES_TOOLTIP}),
            **clip_size_inputs("keep"),
            "resize": (list(video_ops.RESIZE_POLICIES), {"default": "crop",
                       "tooltip": "crop: cover and centre-crop; pad: fit and letterbox; stretch: ignore aspect ratio; "
                                  "official: centre-crop to the aspect, then bilinear (the ReViSE release)."}),
            "frame_policy": (list(video_ops.FRAME_POLICIES), {"default": "trim",
                             "tooltip": "trim: drop frames down to 4k+1; pad: repeat the last frame up to 4k+1."}),
        }, "optional": {
            "skip_frames": ("INT", {"default": 0, "min": 0, "max": 1024,
                                    "tooltip": "Source frames left out before the clip (the ReViSE release: 1; its VLM "
                                               "still reads frame 0)."}),
        }}

    def encode(self, vae, images, num_frames, width, height, resize, frame_policy, skip_frames=0):
        expect_vae(vae)
        frames = video_ops.conform(video_ops.skip_leading(images, skip_frames).float().cpu(), num_frames=num_frames or None,
                                   height=height or None, width=width or None, resize=resize, frame_policy=frame_policy)
        pixels = video_ops.to_model_space(frames)
        with using(vae, memory_required=vae_encode_memory(vae, pixels.shape)), \
                vae_ops.on_each_chunk(vae, bridge.progress(vae_ops.encode_chunk_count(pixels.shape[2]))):
            latents = vae_ops.encode(vae, pixels.to(bridge.compute_device_of(vae)))
        return ({"samples": latents.float().cpu()}, frames)


class ReViSEVAEDecode:
    CATEGORY = f"{CATEGORY}/latent"
    FUNCTION = "decode"
    DESCRIPTION = "Decodes Wan latents into video frames; 'tiled' trades a little speed for much less memory."
    RETURN_TYPES = ("IMAGE",)
    RETURN_NAMES = ("frames",)
    OUTPUT_TOOLTIPS = ("Decoded frames [T, H, W, 3] in 0..1.",)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "vae": (VAE, {"tooltip": "From ReViSE Load VAE."}),
            "latent": ("LATENT", {"tooltip": "Latents from the ReViSE Sampler (or ReViSE VAE Encode)."}),
            "tiled": ("BOOLEAN", {"default": False, "tooltip": "Decode in spatial tiles to save memory."}),
        }}

    def decode(self, vae, latent, tiled):
        expect_vae(vae)
        samples = latent["samples"]
        with using(vae, memory_required=vae_decode_memory(vae, samples.shape)), \
                vae_ops.on_each_chunk(vae, bridge.progress(vae_ops.chunk_count(vae, samples.shape, tiled=tiled))):
            pixels = vae_ops.decode(vae, samples.to(bridge.compute_device_of(vae)), tiled=tiled)
        return (video_ops.from_model_space(pixels.float()).cpu(),)


class ReViSEVLMEncode:
    CATEGORY = f"{CATEGORY}/conditioning"
    FUNCTION = "encode"
    DESCRIPTION = ("The VLM reads the source video and the instruction: hidden states u for the connector, and with "
                   "reasoning='caption' a source and a target caption first (Omni-Video 2).")
    RETURN_TYPES = (VLM_COND, "STRING")
    RETURN_NAMES = ("vlm_cond", "reasoning")
    OUTPUT_TOOLTIPS = ("u and the prompts for umT5.", "What the VLM wrote (empty when reasoning is 'none').")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "vlm": (VLM, {"tooltip": "From ReViSE Load VLM."}),
            "frames": ("IMAGE", {"tooltip": "The frames the VLM reads: ReViSE VAE Encode's fitted 'frames', or the video "
                                            "as loaded, at its own size (as the releases do: the VLM samples "
                                            "vlm_frames over the whole clip)."}),
            "instruction": ("STRING", {"multiline": True, "default": "",
                                       "tooltip": "The edit instruction; it may need reasoning."}),
            "reasoning": (list(REASONING_MODES), {"default": "none",
                          "tooltip": "'caption': the VLM describes the source, then the expected result."}),
            "vlm_frames": ("INT", {"default": 8, "min": 1, "max": 64, "tooltip": "Frames the VLM sees."}),
            "caption_tokens": ("INT", {"default": 128, "min": 8, "max": 1024,
                                       "tooltip": "Upper bound on each generated caption."}),
        }, "optional": {"fps": fps_input()}}

    def encode(self, vlm, frames, instruction, reasoning, vlm_frames, caption_tokens, fps=16.0):
        expect(vlm, VisionLanguageModel, "vlm", VLM)
        settings = EditSettings(reasoning=reasoning, vlm_frames=vlm_frames, caption_tokens=caption_tokens, fps=fps)
        with using(vlm):
            result = encode_instruction(vlm, frames.float().to(bridge.compute_device_of(vlm.model)), instruction, settings)
        return (VLMCondition(result.u.cpu(), result.prompts, result.reasoning), result.reasoning)


class ReViSEContextOptions:
    CATEGORY = f"{CATEGORY}/conditioning"
    FUNCTION = "options"
    DESCRIPTION = ("Temporal context windows for long clips: the ReViSE Connector builds one context per window (its "
                   "slice of the source video, the instruction and VLM rows shared), and the ReViSE Sampler denoises "
                   "window by window, blending the overlaps linearly. Sizes count latent frames: one latent frame is "
                   "4 video frames with Wan's VAE (the first window's first latent frame is 1).")
    RETURN_TYPES = (CONTEXT_OPTIONS,)
    RETURN_NAMES = ("context_options",)
    OUTPUT_TOOLTIPS = ("Wire into the ReViSE Connector's context_options.",)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "window": ("INT", {"default": 0, "min": 0, "max": 256,
                               "tooltip": "Latent frames per window; 0 = auto: the most the model's context holds "
                                          "beside the instruction and VLM rows (about 6 for the ReViSE release at "
                                          "640x352). 5 = 17-20 video frames, what the release edits at once. The "
                                          "Connector refuses a window whose context would cut the instruction and says "
                                          "the largest that fits."}),
            "overlap": ("INT", {"default": 1, "min": 0, "max": 255,
                                "tooltip": "Latent frames neighbouring windows share (below the window)."}),
            "schedule": (list(WINDOW_SCHEDULES), {"default": "static",
                                                  "tooltip": "static: the same windows at every step."}),
        }}

    def options(self, window, overlap, schedule):
        return (TemporalWindows(window or AUTO, overlap, schedule),)


class ReViSEConnector:
    CATEGORY = f"{CATEGORY}/conditioning"
    FUNCTION = "connect"
    DESCRIPTION = ("f_C: umT5 over the prompts, then u, T5 and the source tokens as the DiT context in the connector "
                   "family's order; the guidance condition is the family's null branch (Omni-Video 2: the source tokens "
                   "alone; the ReViSE release: its unconditioned umT5 and VLM states with the source).")
    RETURN_TYPES = (COND,)
    RETURN_NAMES = ("cond",)
    OUTPUT_TOOLTIPS = ("Conditional and unconditional contexts for the ReViSE Sampler.",)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "connector": (CONNECTOR, {"tooltip": "From ReViSE Load Connector."}),
            "t5": (T5, {"tooltip": "From ReViSE Load umT5."}),
            "vae": (VAE, {"tooltip": "The VAE that encoded the source (its latent statistics are used)."}),
            "vlm_cond": (VLM_COND, {"tooltip": "From ReViSE VLM Encode."}),
            "source_latent": ("LATENT", {"tooltip": "From ReViSE VAE Encode."}),
            "max_text_len": ("INT", {"default": 512, "min": 16, "max": 1024, "tooltip": "umT5 tokens per prompt."}),
        }, "optional": {
            "context_options": (CONTEXT_OPTIONS, {"tooltip": "From ReViSE Context Options: edit a long clip in "
                                                             "overlapping temporal windows."}),
            "allow_context_cut": ("BOOLEAN", {"default": False,
                                              "tooltip": "Off: a source too long for the context (which would cut "
                                                         "the instruction and VLM rows) is refused with the largest "
                                                         "frame count or window that fits. On: cut as the release "
                                                         "does."}),
        }}

    def connect(self, connector, t5, vae, vlm_cond, source_latent, max_text_len, context_options=None,
                allow_context_cut=False):
        expect(connector, ContextConnector, "connector", CONNECTOR)
        expect(t5, TextEncoder, "t5", T5)
        expect(vlm_cond, VLMCondition, "vlm_cond", VLM_COND)
        if context_options is not None:
            expect(context_options, TemporalWindows, "context_options", CONTEXT_OPTIONS)
        device = bridge.compute_device_of(connector)
        with using(connector, t5):
            condition = assemble_condition(connector, t5, vae, source_latent["samples"].to(device),
                                           VLMCondition(vlm_cond.u.to(device), vlm_cond.prompts, vlm_cond.reasoning),
                                           max_text_len, window=context_options, allow_cut=allow_context_cut)
        return (condition,)


class ReViSESampler:
    CATEGORY = f"{CATEGORY}/sampling"
    FUNCTION = "sample"
    DESCRIPTION = "Flow-matching sampling of the Wan DiT (UniPC or Euler) with guidance; interruptible, with previews."
    RETURN_TYPES = ("LATENT",)
    RETURN_NAMES = ("latent",)
    OUTPUT_TOOLTIPS = ("The edited video's latents (raw VAE space).",)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "dit": (DIT, {"tooltip": "From ReViSE Load DiT."}),
            "cond": (COND, {"tooltip": "From ReViSE Connector."}),
            "steps": ("INT", {"default": 40, "min": 1, "max": 200, "tooltip": "Denoising steps (Omni-Video 2: 40)."}),
            "guidance": ("FLOAT", {"default": 3.0, "min": 0.0, "max": 20.0, "step": 0.1,
                                   "tooltip": "g of the guidance formula (guidance_mode); standard guidance at 1 is off "
                                              "(half the cost)."}),
            "shift": ("FLOAT", {"default": 5.0, "min": 0.1, "max": 20.0, "step": 0.1,
                                "tooltip": "Flow shift of the schedule (Wan: 3 for 480p, 5 for 720p)."}),
            "scheduler": (list(SCHEDULERS), {"default": "unipc", "tooltip": "diffusers flow-matching scheduler."}),
            "seed": ("INT", {"default": 0, "min": 0, "max": 2**63 - 1, "control_after_generate": True,
                             "tooltip": "Noise seed (same seed, same edit)."}),
        }, "optional": {
            "guidance_mode": (list(GUIDANCE_MODES), {"default": "standard",
                              "tooltip": "standard: uncond + g·(cond − uncond); official: cond + g·(cond − uncond), the "
                                         "ReViSE release's formula (= standard at g + 1)."}),
            "sigma_schedule": (list(SIGMA_SCHEDULES), {"default": "diffusers",
                               "tooltip": "diffusers: the scheduler's own flow sigmas; official: linspace(0.999, 0) "
                                          "shifted, as the ReViSE / Wan2.1 releases sample."}),
            "attention": (list(BACKENDS), {"default": "auto",
                          "tooltip": "The DiT's attention kernel. auto: what ComfyUI was started with "
                                     "(--use-sage-attention, --use-flash-attention, xformers) when installed, else "
                                     "the fastest installed that agrees with native; native: torch SDPA (the parity "
                                     "figures). Only for these DiT calls: other models keep theirs."}),
            "cache": (list(CACHES), {"default": "none",
                      "tooltip": "Step cache (approximate, fewer DiT block evaluations): first-block reuses the later "
                                 "blocks while the first block's output barely changes; taylorseer predicts attention "
                                 "between full steps; magcache needs the model's magnitude ratios (mag_ratios)."}),
            "cache_threshold": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 2.0, "step": 0.01,
                                "tooltip": "first-block: relative change below which blocks are reused (0 = 0.05; "
                                           "0.1-0.3 skip more); magcache: error allowed (0 = 0.06)."}),
            "cache_interval": ("INT", {"default": 5, "min": 1, "max": 50,
                               "tooltip": "taylorseer: a full step every N."}),
            "mag_ratios": ("STRING", {"default": "", "tooltip": "magcache: the model's magnitude ratios, comma-"
                                                                 "separated, as python -m revise_core.edit "
                                                                 "--cache-calibrate prints them."}),
            "loras": (LORAS, {"tooltip": "Wan2.1 LoRAs from ReViSE LoRA nodes, added to the DiT's weights while this "
                                         "node samples (its exact weights are restored after). A step-distilled LoRA "
                                         "samples in 4 steps: steps 4, guidance 1, scheduler euler, shift 5."}),
        }}

    def sample(self, dit, cond, steps, guidance, shift, scheduler, seed, guidance_mode="standard",
               sigma_schedule="diffusers", attention="auto", cache="none", cache_threshold=0.0, cache_interval=5,
               mag_ratios="", loras=None):
        expect_dit(dit)
        expect(cond, Condition, "cond", COND)
        loras = expect_loras(loras)
        config = SamplerConfig(steps=steps, guidance_scale=guidance, shift=shift, scheduler=scheduler, seed=seed,
                               guidance_mode=guidance_mode, sigma_schedule=sigma_schedule,
                               attention=node_attention(attention),
                               cache=StepCache(cache, threshold=cache_threshold or None, interval=cache_interval,
                                               mag_ratios=parse_mag_ratios(mag_ratios)))
        # on a CPU the node says what the GPU defaults will cost, measured on the first step
        clock = node_text.cpu_clock(bridge.compute_device_of(dit), "sampling", steps)
        shape = tuple(cond.source_latents.shape)
        if cond.windows:  # one progress tick per window and step; ComfyUI's interrupt is checked at each tick
            window_shape = (*shape[:2], max(w.end - w.start for w in cond.windows), *shape[3:])
            tick = bridge.progress(steps * len(cond.windows))
            with using(dit, memory_required=dit_memory(dit, window_shape)), _with_loras(dit, loras):
                latents = sample(dit, None, None, latent_shape=shape, config=config, windows=cond.windows,
                                 on_window=lambda step, window: tick(None))
            return ({"samples": cond.denormalize(latents.float()).cpu()},)
        with using(dit, memory_required=dit_memory(dit, shape)), _with_loras(dit, loras):
            latents = sample(dit, cond.cond, cond.uncond, latent_shape=shape, config=config,
                             callback=node_text.timed(bridge.progress(steps, preview_latents=True), clock))
        return ({"samples": cond.denormalize(latents.float()).cpu()},)


def _with_loras(dit, loras):
    """The chosen LoRAs on the DiT (loaded where ComfyUI put it) while the block samples, its weights restored
    after: ComfyUI caches the DiT and other nodes share it."""
    return patched_loras(dit, load_loras(loras, dit))


def node_attention(choice: str) -> str:
    """The sampler node's attention: "auto" follows ComfyUI's own flags when their package is installed (else
    attention.resolve_backend's auto); any other choice is used as given."""
    wanted = bridge.comfy_attention() if choice == "auto" else None
    if wanted is not None:
        try:
            check_backend(wanted)
            return wanted
        except AttentionBackendError as error:
            logger.warning("ComfyUI asks for %s attention, which the DiT cannot use here (%s): auto instead", wanted,
                           error)
    return choice


NODES = {cls.__name__: cls for cls in (ReViSEVAEEncode, ReViSEVAEDecode, ReViSEVLMEncode, ReViSEContextOptions,
                                        ReViSEConnector, ReViSESampler)}
DISPLAY_NAMES = {
    "ReViSEVAEEncode": "ReViSE VAE Encode (fit video)", "ReViSEVAEDecode": "ReViSE VAE Decode",
    "ReViSEVLMEncode": "ReViSE VLM Encode", "ReViSEContextOptions": "ReViSE Context Options",
    "ReViSEConnector": "ReViSE Connector", "ReViSESampler": "ReViSE Sampler",
}

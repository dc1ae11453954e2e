"""Named inference presets that reproduce a release's own settings (CLI `--preset`, ComfyUI, Python API).

`revise-official` is the ReViSE release's `tools/inference/inference.sh` as its code runs it
(its sampler and guidance as the official inference code applies them):
- FlowUniPC, 40 steps, shift 5 (the script passes no --task, so `validate_args` picks t2v's 5.0, not the
  3.0 the training used), sigmas `linspace(0.999, 0, 41)[:-1]` then shifted;
- guidance `cond + 3·(cond − uncond)` (= standard guidance at 4), the null branch from the release's
  unconditioned umT5 and VLM states with the real source latents (the connector's `null_context`);
- 17 frames at 640×352, source frames 1..17 for the VAE (`--skip_num 1`) and frame 0 for the VLM at its
  native size, each frame centre-cropped to the aspect then resized (bilinear);
- every frame preprocessed with the release's own arithmetic (PIL on 8-bit frames: video.PREPROCESSING "exact");
- written at 8 fps, 8-bit pixels truncated as the release's cache_video does (not rounded); the release's
  encoder settings (imageio, libx264 at quality 8) are not copied: the codec is ours (crf 19); seed 1818 (the release draws its noise on CUDA, which a CPU generator cannot
  reproduce: the noise here comes from our CPU generator, so edits match the release's only with injected
  noise).

`omnivideo2-official` is the Omni-Video 2 1.3B release's `tools/inference/inference_omni_v2v_1_3B.sh` with
`omnivideo/x2x_gen_unified.py`: FlowUniPC 40 steps, shift 5, standard guidance 3; the null branch is umT5 of
its English negative prompt with u = 2 tokens of 1e-6 and the source kept; 41 frames at 832×480 from every
3rd source frame (`sampling_rate 3`, lowered for short videos), centre crop then resize; the VLM writes a
source then a target caption and umT5 reads [target caption; instruction]; contexts padded to
`MAX_CONTEXT_LEN` 6272; captions of up to 512 tokens; the VLM reads 6 frames sampled over the whole video
(its file), with their times; 8 fps; seed 1818 (CUDA noise, as above). Its target caption is greedy
(QWEN3VL_TEMPERATURE 0), its source caption follows the Qwen3-VL folder's generation defaults (greedy here).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from .sampler import SamplerConfig

# omnivideo/configs/shared_config.py: sample_neg_prompt_en (the Omni-Video 2 release's negative prompt)
OMNIVIDEO2_NEGATIVE_PROMPT = (
    "overly vivid colors, overexposed, static, blurry and unclear details, subtitles, text overlays, stylized "
    "artwork, painting, illustration, still image, frozen frame, grayish overall tone, worst quality, low quality, "
    "JPEG compression artifacts, ugly, incomplete, extra fingers, poorly drawn hands, poorly drawn face, deformed, "
    "disfigured, malformed anatomy, distorted limbs, fused fingers, motionless frame, cluttered background, three "
    "legs, walking backward, expression drift, teeth flickering, uneven facial muscles, facial shivering"
)


@dataclass(frozen=True)
class Preset:
    name: str
    description: str
    sampler: dict = field(default_factory=dict)  # SamplerConfig fields
    settings: dict = field(default_factory=dict)  # EditSettings fields (not the sampler)
    output_fps: float | None = None  # None: the source's frame rate
    vlm_sees_native_frames: bool = False  # the VLM gets the video's own frames, not the fitted clip
    # with vlm_sees_native_frames: "first frame" (the ReViSE release's VILA reads frame 0) or "whole video"
    # (Omni-Video 2's processor samples vlm_frames frames over the whole file and writes their times)
    vlm_reads: str = "first frame"
    # how the written video's 8-bit pixels are made (video.QUANTIZATIONS)
    output_quantization: str = "round"


PRESETS: dict[str, Preset] = {
    "revise-official": Preset(
        name="revise-official",
        description="the ReViSE release's inference.sh: UniPC 40 steps, shift 5, release sigmas, cond + 3·(cond − "
                    "uncond), 17 frames 640x352 from frame 1, VLM on frame 0, 8 fps",
        sampler=dict(steps=40, guidance_scale=3.0, guidance_mode="official", shift=5.0, scheduler="unipc",
                     sigma_schedule="official", seed=1818),
        settings=dict(num_frames=17, height=352, width=640, resize="official", frame_policy="trim", skip_frames=1,
                      reasoning="none", max_text_len=512),
        output_fps=8.0,
        vlm_sees_native_frames=True,
        output_quantization="truncate",  # cache_video: (x * 255).type(torch.uint8)
    ),
    "omnivideo2-official": Preset(
        name="omnivideo2-official",
        description="the Omni-Video 2 1.3B release's inference_omni_v2v_1_3B.sh: UniPC 40 steps, shift 5, release "
                    "sigmas, uncond + 3·(cond − uncond) against its negative prompt with u = 2 tokens of 1e-6, 41 "
                    "frames 832x480 at a source stride of 3, captions first, contexts padded to 6272, 8 fps",
        sampler=dict(steps=40, guidance_scale=3.0, guidance_mode="standard", shift=5.0, scheduler="unipc",
                     sigma_schedule="official", seed=1818),
        settings=dict(num_frames=41, height=480, width=832, resize="official", frame_policy="trim", skip_frames=0,
                      frame_stride=3, reasoning="caption", max_text_len=512, vlm_frames=6, caption_tokens=512,
                      negative_prompt=OMNIVIDEO2_NEGATIVE_PROMPT, context_len=6272),
        output_fps=8.0,
        vlm_sees_native_frames=True,
        vlm_reads="whole video",  # the release hands the VLM the video file: 6 frames over the whole video
    ),
}


NO_PRESET = Preset(name="none", description="no preset: every setting from the caller")


def get_preset(name: str) -> Preset:
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown preset '{name}'; known presets: {', '.join(PRESETS)}") from None


# Sampling for step-distilled Wan LoRAs (CausVid, lightx2v): 4 Euler steps at shift 5 over the flow sigmas (their
# timesteps 1000, 750, 500, 250, shifted), guidance off, so one DiT call per step. A LoRA distilled on base Wan's
# text conditioning is not known to keep its quality on ReViSE's connector context.
FEW_STEP = dict(steps=4, guidance_scale=1.0, guidance_mode="standard", scheduler="euler", shift=5.0,
                sigma_schedule="diffusers")


def edit_settings(preset: Preset | str, **overrides):
    """EditSettings of a preset, with `overrides` (EditSettings or SamplerConfig field names) on top."""
    from .editor import EditSettings

    preset = get_preset(preset) if isinstance(preset, str) else preset
    sampler_fields = {f.name for f in dataclasses.fields(SamplerConfig)}
    settings_fields = {f.name for f in dataclasses.fields(EditSettings)} - {"sampler"}
    unknown = sorted(set(overrides) - sampler_fields - settings_fields)
    if unknown:
        raise ValueError(f"unknown settings {unknown} for preset '{preset.name}'")
    sampler = SamplerConfig(**{**preset.sampler, **{k: v for k, v in overrides.items() if k in sampler_fields}})
    values = {**preset.settings, **{k: v for k, v in overrides.items() if k in settings_fields}}
    return EditSettings(sampler=sampler, **values)

"""Qwen3-VL family (dense `Qwen3VLForConditionalGeneration`, MoE `Qwen3VLMoeForConditionalGeneration`):
Omni-Video 2's VLM, and a current encoder / critic.

What differs from Qwen2-VL (qwen2_vl.py, whose forward / generate / loading this reuses):
- Video preprocessing: patch 16, temporal patch 2, merge 2 (sides multiples of 32), and a pixel budget over
  the whole clip (`size.longest_edge` counts every frame, not one), as `Qwen3VLVideoProcessor` resizes.
- The prompt: each temporal patch of a video is written as `<{t:.1f} seconds>` followed by
  `<|vision_start|>` + its tokens + `<|vision_end|>`, where t is the mean time of the patch's two frames
  (the processor's `replace_video_token`, which in transformers 4.57, the release's version, replaces the
  template's `<|vision_start|><|video_pad|><|vision_end|>` as a whole). `mm_token_type_ids` marks the video
  tokens.
- DeepStack and interleaved MRoPE come from the model's own forward.

The processors are not used (the transformers video processor needs torchvision, and the critic needs
gradients to the pixels); tests compare this module with the processor's own functions.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from .. import chat_text
from .. import checkpoints as ckpt
from ..chat_text import check_instruction
from ..resources import config_path
from .base import CaptionPrompts, SampledFrames, VLMError, VLMInputs
from .qwen2_vl import TOKEN_TYPE_VIDEO, Qwen2VLModel, expand_video_placeholders, load_model_and_tokenizer, patchify

MODEL_TYPES = ("qwen3_vl", "qwen3_vl_moe")
IMAGENET_STANDARD = (0.5, 0.5, 0.5)
VIDEO_CONFIG_FILE = "video_preprocessor_config.json"

# Omni-Video 2's feature pass (omnivideo/vllm_model.py, extract_qwen3vl_features): the processor samples 6
# frames and resizes them with size {shortest_edge: 480, longest_edge: 1920}, pixel counts for the whole
# clip (a quirk of the release: frames of about 32 x 32; kept for parity).
OMNIVIDEO2_FEATURE_FRAMES = 6
OMNIVIDEO2_FEATURE_PIXELS = (480, 1920)
# Its caption turns (load_qwen3vl_model_and_processor, target_short_side 480): the video processor's size set to
# {shortest_edge: 480², longest_edge: 480 · 1920}, again for the whole clip.
OMNIVIDEO2_CAPTION_PIXELS = (480 * 480, 480 * 480 * 4)
# Omni-Video 2's prompts, verbatim (configs/prompts/omnivideo2.json names where each comes from).
PROMPTS_FILE = config_path("prompts", "omnivideo2.json")


def omnivideo2_prompts() -> dict[str, str]:
    return ckpt.read_json(PROMPTS_FILE, what="Omni-Video 2 prompts")


@dataclass(frozen=True)
class VideoPreprocessConfig:
    """Qwen3-VL's video preprocessing numbers (video_preprocessor_config.json); defaults are the processor's."""

    patch_size: int = 16
    merge_size: int = 2
    temporal_patch_size: int = 2
    min_pixels: int = 128 * 32 * 32  # size.shortest_edge: pixels of the whole clip
    max_pixels: int = 32 * 32 * 768  # size.longest_edge
    image_mean: tuple[float, float, float] = IMAGENET_STANDARD
    image_std: tuple[float, float, float] = IMAGENET_STANDARD
    cap_pixels_per_frame: bool = False  # the processor's current default (qwen-vl-utils caps)
    max_video_tokens: int = 768

    @classmethod
    def from_folder(cls, folder: Path) -> VideoPreprocessConfig:
        path = folder / VIDEO_CONFIG_FILE
        if not path.is_file():
            raise ckpt.ModelFileNotFoundError(
                f"{folder}: no {VIDEO_CONFIG_FILE}; a Qwen3-VL folder carries its video preprocessing there "
                "(patch 16, merge 2, temporal patch 2, pixel budget); copy it from the model's release")
        return cls.from_dict(ckpt.read_json(path, what="Qwen3-VL video preprocessor config"), source=path)

    @classmethod
    def from_dict(cls, data: dict, *, source: Path | str = "<dict>") -> VideoPreprocessConfig:
        size = data.get("size") or {}
        try:
            return cls(
                patch_size=int(data.get("patch_size", cls.patch_size)),
                merge_size=int(data.get("merge_size", cls.merge_size)),
                temporal_patch_size=int(data.get("temporal_patch_size", cls.temporal_patch_size)),
                min_pixels=int(size.get("shortest_edge", data.get("min_pixels", cls.min_pixels))),
                max_pixels=int(size.get("longest_edge", data.get("max_pixels", cls.max_pixels))),
                image_mean=tuple(float(x) for x in data.get("image_mean", IMAGENET_STANDARD)),
                image_std=tuple(float(x) for x in data.get("image_std", IMAGENET_STANDARD)),
                cap_pixels_per_frame=bool(data.get("cap_pixels_per_frame") or False),
                max_video_tokens=int(data.get("max_video_tokens", cls.max_video_tokens)),
            )
        except (TypeError, ValueError) as error:
            raise ckpt.CheckpointError(f"{source}: invalid preprocessing value ({error})") from error

    def to_processor_config(self) -> dict:
        return dict(patch_size=self.patch_size, merge_size=self.merge_size, temporal_patch_size=self.temporal_patch_size,
                    size={"shortest_edge": self.min_pixels, "longest_edge": self.max_pixels},
                    image_mean=list(self.image_mean), image_std=list(self.image_std),
                    cap_pixels_per_frame=self.cap_pixels_per_frame, max_video_tokens=self.max_video_tokens,
                    video_processor_type="Qwen3VLVideoProcessor")

    def with_pixels(self, min_pixels: int, max_pixels: int) -> VideoPreprocessConfig:
        return VideoPreprocessConfig(**{**self.__dict__, "min_pixels": min_pixels, "max_pixels": max_pixels})


@dataclass
class SampledVideo:
    """Frames [F, 3, H, W] in 0..1 with the indices they were taken at in the source video (of `fps` frames
    per second; None: the fps `build_inputs` is given): the prompt's timestamps come from them."""

    frames: torch.Tensor
    indices: list[int]
    fps: float | None = None


def video_smart_resize(num_frames: int, height: int, width: int, config: VideoPreprocessConfig) -> tuple[int, int]:
    """`Qwen3VLVideoProcessor.resize`'s size rule: sides multiples of patch x merge, the clip's pixels
    (every frame) within [min_pixels, max_pixels] (optionally capped per frame), aspect kept."""
    factor, temporal = config.patch_size * config.merge_size, config.temporal_patch_size
    if num_frames < temporal:
        raise VLMError(f"Qwen3-VL needs at least {temporal} frames per video, got {num_frames}")
    max_pixels = config.max_pixels
    if config.cap_pixels_per_frame:
        per_frame = max(min(config.max_video_tokens * factor * factor, config.max_pixels // num_frames),
                        int(config.min_pixels * 1.05))
        max_pixels = per_frame * num_frames
    if height < factor or width < factor:
        scale = max(factor / height, factor / width)
        height, width = int(height * scale), int(width * scale)
    if max(height, width) / min(height, width) > 200:
        raise VLMError(f"aspect ratio {max(height, width) / min(height, width):.0f} is above 200")
    h_bar, w_bar = round(height / factor) * factor, round(width / factor) * factor
    t_bar = round(num_frames / temporal) * temporal
    if t_bar * h_bar * w_bar > max_pixels:
        beta = math.sqrt(num_frames * height * width / max_pixels)
        h_bar = max(factor, math.floor(height / beta / factor) * factor)
        w_bar = max(factor, math.floor(width / beta / factor) * factor)
    elif t_bar * h_bar * w_bar < config.min_pixels:
        beta = math.sqrt(config.min_pixels / (num_frames * height * width))
        h_bar = math.ceil(height * beta / factor) * factor
        w_bar = math.ceil(width * beta / factor) * factor
    return h_bar, w_bar


def frames_to_patches(frames: torch.Tensor, config: VideoPreprocessConfig
                      ) -> tuple[torch.Tensor, tuple[int, int, int]]:
    """Frames [F, 3, H, W] in 0..1 -> (pixel_values_videos [N, 3·2·16·16], grid (t, h, w)), differentiable:
    resize (antialiased bicubic, as torchvision does on float input), normalise, pad, patchify."""
    if frames.ndim != 4 or frames.shape[1] != 3:
        raise VLMError(f"expected frames [F, 3, H, W], got shape {tuple(frames.shape)}")
    if frames.shape[0] < config.temporal_patch_size:  # a single frame (an image): repeated, as the pad would
        frames = torch.cat([frames, frames[-1:].expand(config.temporal_patch_size - frames.shape[0], -1, -1, -1)])
    height, width = video_smart_resize(frames.shape[0], frames.shape[2], frames.shape[3], config)
    frames = frames.float()
    if (height, width) != tuple(frames.shape[2:]):
        frames = F.interpolate(frames, size=(height, width), mode="bicubic", align_corners=False, antialias=True)
    mean = frames.new_tensor(config.image_mean).view(1, 3, 1, 1)
    std = frames.new_tensor(config.image_std).view(1, 3, 1, 1)
    return patchify((frames - mean) / std, config.patch_size, config.merge_size, config.temporal_patch_size)


def patch_timestamps(indices: list[int], fps: float, temporal_patch: int) -> list[float]:
    """One time per temporal patch: the mean of its first and last frame's time (`_calculate_timestamps`),
    the index list padded with its last entry as the frames are."""
    indices = list(indices)
    if len(indices) % temporal_patch:
        indices += [indices[-1]] * (temporal_patch - len(indices) % temporal_patch)
    times = [index / fps for index in indices]
    return [(times[i] + times[i + temporal_patch - 1]) / 2 for i in range(0, len(times), temporal_patch)]


def sample_indices(total: int, num_frames: int | None) -> list[int]:
    """The processor's uniform sampling: linspace(0, total - 1, n), rounded, repeating frames of a shorter
    video as it does (all frames when n is None)."""
    if num_frames is None:
        return list(range(total))
    return torch.linspace(0, total - 1, num_frames).round().long().tolist()


@dataclass
class Qwen3VLModel(Qwen2VLModel):
    """A Qwen3-VL (dense or MoE) model with its tokenizer and video preprocessing numbers."""

    family = "qwen3_vl"
    preprocess: VideoPreprocessConfig = VideoPreprocessConfig()

    def prepare_frames(self, frames, num_frames: int | None, fps: float | None = None) -> SampledVideo:
        """ComfyUI frames [T, H, W, 3] (or SampledFrames, whose indices and fps are kept) -> the sampled video
        (frames and their indices in the source) a placeholder takes."""
        known = None
        if isinstance(frames, SampledFrames):
            known, fps, frames = frames.indices, frames.fps, frames.frames
        if frames.ndim != 4 or frames.shape[-1] != 3:
            raise VLMError(f"expected frames [T, H, W, 3], got shape {tuple(frames.shape)}")
        chosen = sample_indices(frames.shape[0], num_frames if known is None or num_frames != len(known) else None)
        indices = [known[i] for i in chosen] if known is not None else chosen
        picked = frames[torch.tensor(chosen, device=frames.device)]
        return SampledVideo(picked.permute(0, 3, 1, 2), indices, fps)

    def build_inputs(self, messages, videos=(), *, fps=16.0, add_generation_prompt=True, assistant_prefix="",
                     video_pixels: tuple[int, int] | None = None, preprocessing=None):
        """`video_pixels` (min, max) replaces the folder's pixel budget (Omni-Video 2 sets its own per pass). One
        preprocessing path (torch, equal to the transformers processor) serves both video.PREPROCESSING modes."""
        config = self.model.config
        if config.model_type not in MODEL_TYPES:
            raise VLMError(f"'{config.model_type}' is not a Qwen3-VL family model; expected one of {MODEL_TYPES}")
        preprocess = self.preprocess.with_pixels(*video_pixels) if video_pixels else self.preprocess
        tokenizer = self.tokenizer
        pieces = chat_text.render_chat(tokenizer, messages, add_generation_prompt=add_generation_prompt)
        if assistant_prefix:
            pieces.append((assistant_prefix, True))
        video_token = tokenizer.convert_ids_to_tokens(config.video_token_id)
        start = tokenizer.convert_ids_to_tokens(config.vision_start_token_id)
        end = tokenizer.convert_ids_to_tokens(config.vision_end_token_id)
        # transformers 4.57 (the version the Omni-Video 2 release pins) replaces the template's whole
        # `<|vision_start|><|video_pad|><|vision_end|>` by the per-patch text, so each temporal patch has one
        # start / end pair; 5.x replaces the pad alone and keeps an outer pair. The release's is kept.
        pieces = [(text if literal else text.replace(f"{start}{video_token}{end}", video_token), literal)
                  for text, literal in pieces]

        def video_text(video) -> tuple[torch.Tensor, tuple[int, int, int], str]:
            if not isinstance(video, SampledVideo):  # frames given directly: consecutive frames at `fps`
                video = SampledVideo(video, list(range(video.shape[0])))
            video_patches, grid = frames_to_patches(video.frames, preprocess)
            per_step = grid[1] * grid[2] // preprocess.merge_size ** 2
            stamps = patch_timestamps(video.indices, video.fps or fps, preprocess.temporal_patch_size)
            return video_patches, grid, "".join(f"<{t:.1f} seconds>{start}{video_token * per_step}{end}"
                                                for t in stamps)

        expanded, patches, grids = expand_video_placeholders(pieces, video_token, videos, video_text)
        device = self.device
        input_ids = torch.tensor([chat_text.tokenize(tokenizer, expanded)], device=device)
        kwargs = {
            "input_ids": input_ids,
            "attention_mask": torch.ones_like(input_ids),
            "mm_token_type_ids": (input_ids == config.video_token_id).long() * TOKEN_TYPE_VIDEO,
        }
        if videos:
            kwargs["pixel_values_videos"] = torch.cat(patches).to(device=device, dtype=self.dtype)
            kwargs["video_grid_thw"] = torch.tensor(grids, device=device)
        return VLMInputs(kwargs, self._system_prefix_len(messages), input_ids[0])

    def _system_prefix_len(self, messages: list[dict]) -> int:
        """Omni-Video 2's drop index: the tokens of `<|im_start|>system\\n{system}<|im_end|>\\n<|im_start|>user\\n`
        (compute_system_prompt_drop_idx), i.e. the system turn and the user turn's header."""
        if not messages or messages[0].get("role") != "system":
            return 0
        system = messages[0]["content"]
        if not isinstance(system, str):
            system = "".join(part.get("text", "") for part in system)
        pieces = [("<|im_start|>system\n", False), (system, True), ("<|im_end|>\n<|im_start|>user\n", False)]
        return len(chat_text.tokenize(self.tokenizer, pieces))

    def caption_prompts(self) -> CaptionPrompts:
        """Omni-Video 2's source- and target-caption turns (omnivideo/vllm_model.py), with its caption-pass
        pixels. Its inference script asks for greedy target captions (temperature 0); its source caption uses the
        Qwen3-VL folder's generation defaults, here greedy."""
        prompts = omnivideo2_prompts()
        return CaptionPrompts(source_user=prompts["source_caption_user"], target_user=prompts["target_caption_user"],
                              source_system=prompts["source_caption_system"],
                              target_system=prompts["target_caption_system"],
                              options={"video_pixels": OMNIVIDEO2_CAPTION_PIXELS})

    def encode(self, frames, instruction, *, num_frames=OMNIVIDEO2_FEATURE_FRAMES, fps=16.0, system_prompt=None):
        """u as Omni-Video 2 extracts it: (feature system prompt, video + instruction, generation prompt),
        the processor's 6 frames at its feature-pass pixel budget, `hidden_states[-1]`, the system turn and
        the user header dropped."""
        check_instruction(instruction)
        messages = [
            {"role": "system", "content": system_prompt or omnivideo2_prompts()["feature_extraction_system"]},
            {"role": "user", "content": [{"type": "video"}, {"type": "text", "text": instruction}]},
        ]
        video = self.prepare_frames(frames, num_frames, fps)
        inputs = self.build_inputs(messages, [video], fps=fps, video_pixels=OMNIVIDEO2_FEATURE_PIXELS)
        self.reset_state()
        return self.forward(inputs, hidden_states=True).hidden_states[inputs.prefix_len:]

    def encode_options(self) -> dict:
        return {"family": self.family, "feature_pixels": list(OMNIVIDEO2_FEATURE_PIXELS)}


def matches(config: dict) -> bool:
    return config.get("model_type") in MODEL_TYPES


def load(folder: Path, *, dtype: torch.dtype, device: torch.device | str) -> Qwen3VLModel:
    """Load a Qwen3-VL / Qwen3-VL-MoE Hugging Face folder; missing or unexpected weights are an error."""
    preprocess = VideoPreprocessConfig.from_folder(folder)  # before the weights: a missing file fails fast
    model, tokenizer = load_model_and_tokenizer(folder, dtype=dtype, device=device)
    return Qwen3VLModel(model=model, tokenizer=tokenizer, preprocess=preprocess, source=str(folder))

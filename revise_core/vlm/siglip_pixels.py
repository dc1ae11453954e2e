"""VILA's pixels: SigLIP's image processor settings and the release's two pixel paths (video.PREPROCESSING).

`exact` is llava's `process_image` and SigLIP's processor on 8-bit PIL images, bit for bit; `differentiable`
the same steps in torch, for frames that carry a gradient. Every quirk copied from the release is named
"Official quirk".
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from .. import checkpoints as ckpt
from ..video import check_preprocessing, preprocessing_for, to_pil_images
from .base import VLMError

RESAMPLE = {2: "bilinear", 3: "bicubic"}  # PIL resample codes of preprocessor_config.json

@dataclass(frozen=True)
class SiglipPreprocess:
    """SigLIP's image processor settings (vision_tower/preprocessor_config.json) + VILA's aspect rule."""

    height: int = 384
    width: int = 384
    resample: str = "bicubic"
    do_resize: bool = True
    do_rescale: bool = True
    rescale_factor: float = 1 / 255
    do_normalize: bool = True
    image_mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    image_std: tuple[float, float, float] = (0.5, 0.5, 0.5)
    image_aspect_ratio: str = "resize"  # VILA config: "resize" | "pad" | anything else = the processor alone

    @classmethod
    def from_dict(cls, data: dict, *, image_aspect_ratio: str, source: Path | str) -> SiglipPreprocess:
        size = data.get("size") or {}
        try:
            if "height" in size:
                height, width = int(size["height"]), int(size["width"])
            elif "shortest_edge" in size:
                height = width = int(size["shortest_edge"])
            else:
                raise ValueError(f"size {size!r} has neither height/width nor shortest_edge")
            resample = int(data.get("resample", 3))
            if resample not in RESAMPLE:
                raise ValueError(f"resample {resample} is not bilinear (2) or bicubic (3)")
            return cls(
                height=height, width=width, resample=RESAMPLE[resample],
                do_resize=bool(data.get("do_resize", True)), do_rescale=bool(data.get("do_rescale", True)),
                rescale_factor=float(data.get("rescale_factor", 1 / 255)),
                do_normalize=bool(data.get("do_normalize", True)),
                image_mean=tuple(float(x) for x in data.get("image_mean", (0.5, 0.5, 0.5))),
                image_std=tuple(float(x) for x in data.get("image_std", (0.5, 0.5, 0.5))),
                image_aspect_ratio=str(image_aspect_ratio),
            )
        except (TypeError, ValueError, KeyError) as error:
            raise ckpt.CheckpointError(f"{source}: invalid SigLIP preprocessing settings ({error})") from error



def preprocess_images(images: torch.Tensor, config: SiglipPreprocess, *, preprocessing: str | None = None) -> torch.Tensor:
    """Images [N, 3, H, W] in 0..1 -> SigLIP pixel values [N, 3, height, width].

    `preprocessing` (video.PREPROCESSING; default `video.preprocessing_for(images)`, exact for data):
    - exact: the release's own path, bit for bit: 8-bit PIL images; "resize" resizes with PIL's default
      (bicubic) to `(height, width)` given as PIL's (width, height) (official quirk, seen only for non-square
      sizes); "pad" pastes the image centred on a square of the mean colour (int(mean * 255)); then the SigLIP
      processor's PIL path: resize to the processor's size (a copy when already there), rescale in float64 then
      float32, normalise in float32.
    - differentiable: the same steps in torch on floats (antialiased bicubic, which computes PIL's bicubic
      filter without its 8-bit rounding); docs/models.md gives the measured difference.
    """
    if images.ndim != 4 or images.shape[1] != 3:
        raise VLMError(f"expected images [N, 3, H, W], got shape {tuple(images.shape)}")
    mode = check_preprocessing(preprocessing or preprocessing_for(images), images)
    if mode == "exact":
        return _preprocess_exact(images, config).to(images.device)
    images = images.float()
    if config.image_aspect_ratio == "pad":
        images = _expand_to_square(images, config.image_mean)
    if config.do_resize and tuple(images.shape[2:]) != (config.height, config.width):
        # The official (height, width) quirk of "resize" only shows for non-square sizes, and SigLIP's are square:
        # one resize to (height, width) is the same.
        images = F.interpolate(images, size=(config.height, config.width), mode=config.resample,
                               align_corners=False, antialias=True)
        # PIL resizes uint8 frames and so clips the bicubic overshoot at edges; do the same.
        images = images.clamp(0.0, 1.0)
    values = images * 255.0
    if config.do_rescale:
        values = values * config.rescale_factor
    if config.do_normalize:
        mean = values.new_tensor(config.image_mean).view(1, 3, 1, 1)
        std = values.new_tensor(config.image_std).view(1, 3, 1, 1)
        values = (values - mean) / std
    return values


def _preprocess_exact(images: torch.Tensor, config: SiglipPreprocess) -> torch.Tensor:
    """llava/mm_utils.py process_image + SigLIP's image processor (PIL backend), on 8-bit PIL images."""
    import numpy as np
    from PIL import Image

    resample = {"bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC}[config.resample]
    out = []
    for image in to_pil_images(images):
        if config.image_aspect_ratio == "resize":
            image = image.resize((config.height, config.width), Image.BICUBIC)  # official quirk: (h, w) as (w, h)
        elif config.image_aspect_ratio == "pad":
            image = _expand_to_square_pil(image, tuple(int(m * 255) for m in config.image_mean))
        if config.do_resize:
            image = image.resize((config.width, config.height), resample)
        values = torch.from_numpy(np.array(image, dtype=np.uint8)).permute(2, 0, 1)
        if config.do_rescale:  # transformers' rescale: float64 multiply, then float32
            values = (values.double() * config.rescale_factor).float()
        values = values.float()
        if config.do_normalize:  # transformers' normalize, in float32
            mean = torch.tensor(config.image_mean, dtype=torch.float32).view(3, 1, 1)
            std = torch.tensor(config.image_std, dtype=torch.float32).view(3, 1, 1)
            values = (values - mean) / std
        out.append(values)
    return torch.stack(out)


def _expand_to_square_pil(image, fill: tuple[int, ...]):
    # llava/mm_utils.py expand2square
    from PIL import Image

    width, height = image.size
    if width == height:
        return image
    side = max(width, height)
    result = Image.new(image.mode, (side, side), fill)
    result.paste(image, ((side - width) // 2, (side - height) // 2))
    return result


def _expand_to_square(images: torch.Tensor, mean: tuple[float, float, float]) -> torch.Tensor:
    height, width = images.shape[2:]
    if height == width:
        return images
    side = max(height, width)
    fill = torch.tensor([int(m * 255) / 255 for m in mean], dtype=images.dtype, device=images.device)
    canvas = fill.view(1, 3, 1, 1).expand(images.shape[0], 3, side, side).clone()
    top, left = (side - height) // 2, (side - width) // 2
    canvas[:, :, top:top + height, left:left + width] = images
    return canvas

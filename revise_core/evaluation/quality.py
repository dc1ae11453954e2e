"""Video-quality metrics of RVE-Bench's second metric group (Table 1, right), on frames [T, H, W, 3] in 0..1.

How each relates to VBench (Huang et al.), which the paper cites:
- temporal_flickering: VBench's formula, 1 − mean |f_t − f_{t−1}| (pixels in 0..1), over all frames;
  VBench restricts it to static-camera clips, we apply it to every clip. `flicker_mae` is the raw mean
  absolute difference (0 = no flicker).
- motion_smoothness: approximates VBench. VBench drops odd frames, re-creates them with the AMT frame
  interpolation network and compares; we re-create them by averaging the neighbours (no network).
- subject_consistency / background_consistency: VBench's formula, the mean over t >= 1 of
  (cos(φ(f_t), φ(f_0)) + cos(φ(f_t), φ(f_{t−1}))) / 2, with a configurable image encoder φ (VBench uses
  DINO ViT-B/16 for subjects and CLIP ViT-B/32 for backgrounds; any transformers CLIP / DINO folder here).
- text_video_similarity: approximates ViCLIP-T with a CLIP model: the mean over frames of the cosine
  between the frame embedding and the instruction's text embedding.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
import torch.nn.functional as F

from ..checkpoints import ModelFileNotFoundError, read_json


def temporal_flickering(frames: torch.Tensor) -> dict[str, float]:
    _check(frames)
    if frames.shape[0] < 2:
        return {"flicker_mae": 0.0, "temporal_flickering": 1.0}
    mae = (frames[1:].float() - frames[:-1].float()).abs().mean().item()
    return {"flicker_mae": mae, "temporal_flickering": 1.0 - mae}


def motion_smoothness(frames: torch.Tensor) -> float:
    _check(frames)
    if frames.shape[0] < 3:
        return 1.0
    frames = frames.float()
    middle = frames[1:-1:2]
    interpolated = (frames[0:-2:2] + frames[2::2]) / 2
    return 1.0 - (middle - interpolated).abs().mean().item()


def feature_consistency(features: torch.Tensor) -> float:
    """VBench's consistency of per-frame features [T, D]: identical frames give exactly 1."""
    if features.ndim != 2:
        raise ValueError(f"features must be [T, D], got {tuple(features.shape)}")
    if features.shape[0] < 2:
        return 1.0
    normed = F.normalize(features.float(), dim=-1)
    to_first = (normed[1:] * normed[:1]).sum(-1)
    to_previous = (normed[1:] * normed[:-1]).sum(-1)
    return ((to_first + to_previous) / 2).mean().clamp(max=1.0).item()


def _check(frames: torch.Tensor) -> None:
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames must be [T, H, W, 3], got {tuple(frames.shape)}")


class ImageEncoder:
    """A transformers image encoder from a local folder (CLIP: image features; DINO/others: CLS token)."""

    def __init__(self, folder: str | os.PathLike, device: torch.device | str = "cpu") -> None:
        from transformers import AutoConfig, AutoModel

        folder = Path(folder)
        if not (folder / "config.json").is_file():
            raise ModelFileNotFoundError(f"image encoder folder not found or without config.json: {folder}")
        config = AutoConfig.from_pretrained(str(folder), local_files_only=True)
        self.model = AutoModel.from_pretrained(str(folder), local_files_only=True).to(device).eval()
        self.is_clip = hasattr(self.model, "get_image_features")
        vision = getattr(config, "vision_config", config)
        size = getattr(vision, "image_size", 224)
        self.size = size if isinstance(size, int) else size[0]
        processor = folder / "preprocessor_config.json"
        data = read_json(processor, what="image preprocessor config") if processor.is_file() else {}
        self.mean = torch.tensor(data.get("image_mean", [0.48145466, 0.4578275, 0.40821073])).view(1, 3, 1, 1)
        self.std = torch.tensor(data.get("image_std", [0.26862954, 0.26130258, 0.27577711])).view(1, 3, 1, 1)
        self.folder = folder
        self.tokenizer = None

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @torch.no_grad()
    def image_features(self, frames: torch.Tensor) -> torch.Tensor:
        _check(frames)
        pixels = F.interpolate(frames.permute(0, 3, 1, 2).float(), size=(self.size, self.size), mode="bicubic",
                               align_corners=False, antialias=True)
        pixels = ((pixels - self.mean) / self.std).to(self.device)
        if self.is_clip:
            out = self.model.get_image_features(pixel_values=pixels)
            return getattr(out, "pooler_output", out)
        return self.model(pixel_values=pixels).last_hidden_state[:, 0]


    @torch.no_grad()
    def text_features(self, texts: list[str]) -> torch.Tensor:
        """Text-tower embeddings [N, D] (CLIP / SigLIP models only)."""
        if not self.is_clip:
            raise ValueError(f"{self.folder}: text features need a CLIP / SigLIP model (text and image towers)")
        if self.tokenizer is None:
            from transformers import AutoTokenizer

            self.tokenizer = AutoTokenizer.from_pretrained(str(self.folder), local_files_only=True)
        tokens = self.tokenizer(texts, padding="max_length", truncation=True, max_length=64, return_tensors="pt")
        tokens = {k: v.to(self.device) for k, v in tokens.items() if k in ("input_ids", "attention_mask")}
        out = self.model.get_text_features(**tokens)
        return getattr(out, "pooler_output", out)


class TextVideoScorer:
    """CLIP text-frame similarity (the ViCLIP-T column, approximated)."""

    def __init__(self, encoder: ImageEncoder) -> None:
        if not encoder.is_clip:
            raise ValueError(f"{encoder.folder}: text-video similarity needs a CLIP model (text and image towers)")
        self.encoder = encoder

    @torch.no_grad()
    def __call__(self, frames: torch.Tensor, text: str) -> float:
        text_features = self.encoder.text_features([text])
        image_features = self.encoder.image_features(frames)
        return F.cosine_similarity(image_features.float(), text_features.float()).mean().item()


def video_quality(frames: torch.Tensor, text: str, *, text_scorer: TextVideoScorer | None = None,
                  subject_encoder: ImageEncoder | None = None,
                  background_encoder: ImageEncoder | None = None) -> dict[str, float]:
    """Every metric that the given encoders allow, for one edited video."""
    out = dict(temporal_flickering(frames))
    out["motion_smoothness"] = motion_smoothness(frames)
    if subject_encoder is not None:
        out["subject_consistency"] = feature_consistency(subject_encoder.image_features(frames))
    if background_encoder is not None:
        out["background_consistency"] = feature_consistency(background_encoder.image_features(frames))
    if text_scorer is not None:
        out["text_video_similarity"] = text_scorer(frames, text)
    return out

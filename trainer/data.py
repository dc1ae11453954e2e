"""Training data: the triplet manifest (revise_core.manifest) and the frozen-encoder feature cache.

Frozen encoders (VAE, umT5, VLM) run once per sample: their outputs are cached in memory and, when a
folder is given, in safetensors files keyed by a content hash of the inputs and of the encoders.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from revise_core import checkpoints as ckpt
from revise_core import vae as vae_ops
from revise_core import video as video_ops
from revise_core.manifest import ManifestError, Triplet, read_manifest  # noqa: F401 - re-exported for the trainer
from revise_core.placement import Placement
from revise_core.text import encode_text

logger = logging.getLogger(__name__)

@dataclass
class Features:
    """Frozen-encoder outputs for one triplet (latents normalised, as the DiT sees them)."""

    source_frames: torch.Tensor  # [T, H, W, 3] in 0..1 (float16), what the critic compares against
    source_latents: torch.Tensor  # [1, 16, t, h, w]
    target_latents: torch.Tensor  # [1, 16, t, h, w] = x0
    text_tokens: torch.Tensor  # [L_t, D] umT5 features of the instruction
    vlm_states: torch.Tensor  # [L_u, H] raw VLM hidden states u (connector projection still to apply)
    # u through the connector's frozen projection, computed with the features when the projection waits off
    # the device (offload_connector_heads); fp32 holds its bf16 or fp32 values exactly
    vlm_tokens: torch.Tensor | None = None

    def to_tensors(self) -> dict[str, torch.Tensor]:
        return {k: v.contiguous() for k, v in self.__dict__.items() if v is not None}


class FeatureStore:
    """Computes features with the frozen encoders once per sample; caches them in memory and on disk."""

    def __init__(self, models, *, num_frames: int, height: int, width: int, resize: str, max_text_len: int,
                 vlm_frames: int, cache_dir: str | os.PathLike | None = None,
                 placement: Placement | None = None,
                 project: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None) -> None:
        """`placement`: where the frozen encoders wait between feature passes (placement.py); each is on its
        compute device while it encodes. None: they compute where they are. `project(source_latents, u)`:
        the connector's frozen projection of u, stored as a feature (offload_connector_heads)."""
        self.models = models
        self.placement = placement or Placement()
        self.project = project
        self.shape = dict(num_frames=num_frames, height=height, width=width, resize=resize)
        self.max_text_len, self.vlm_frames = max_text_len, vlm_frames
        self.cache_dir = Path(cache_dir) if cache_dir else None
        self._memory: dict[str, Features] = {}
        self._encoders = _encoder_fingerprint(models)

    def get(self, triplet: Triplet) -> Features:
        key = self._key(triplet)
        if key in self._memory:
            return self._memory[key]
        features = self._load(key)
        if features is None:
            features = self._compute(triplet)
            self._save(key, features)
        self._memory[key] = features
        return features

    def _key(self, triplet: Triplet) -> str:
        digest = hashlib.sha256()
        for path in (triplet.source, triplet.target):
            digest.update(_file_digest(path).encode())
        # "exact": the features come from the releases' own pixel arithmetic (video.PREPROCESSING); caches made
        # before it (torch's approximation of PIL) lack the entry and are recomputed
        digest.update(json.dumps([triplet.instruction, self.shape, self.max_text_len, self.vlm_frames,
                                  self._encoders, self.models.vlm.encode_options(), {"preprocessing": "exact"},
                                  *([{"encoders": self.placement.config.encoders}]
                                    if self.placement.config.encoders != "compute" else []),
                                  *([{"vlm_tokens": True}] if self.project is not None else [])],
                                 sort_keys=True).encode())
        return digest.hexdigest()[:32]

    def _compute(self, triplet: Triplet) -> Features:
        m, use = self.models, self.placement.use
        device = ckpt.device_of(m.vae)
        clips = []
        for path in (triplet.source, triplet.target):
            # Decoded as needed: the clip's frames only, each fitted to the training size as it is decoded.
            frames = video_ops.read_video(path, max_frames=self.shape["num_frames"],
                                          size=(self.shape["height"], self.shape["width"]),
                                          resize=self.shape["resize"]).frames
            clips.append(video_ops.conform(frames, frame_policy="pad", min_frames=1, **self.shape))
        with torch.no_grad():
            with use("vae"):
                latents = [vae_ops.normalize_latents(m.vae, vae_ops.encode(m.vae, video_ops.to_model_space(c).to(device))
                                                     .float()) for c in clips]
            with use("t5"):
                (text,) = encode_text(m.text, [triplet.instruction], max_length=self.max_text_len)
            with use("vlm"):
                u = m.vlm.encode(clips[0], triplet.instruction, num_frames=self.vlm_frames)
            u = u.float()  # as the step reads it back
            tokens = None if self.project is None else self.project(latents[0], u).float().cpu()
        return Features(clips[0].half().cpu(), latents[0].cpu(), latents[1].cpu(), text.float().cpu(), u.cpu(), tokens)

    def _load(self, key: str) -> Features | None:
        if self.cache_dir is None:
            return None
        path = self.cache_dir / f"{key}.safetensors"
        if not path.is_file():
            return None
        return Features(**ckpt.read_state_dict(path).tensors)

    def _save(self, key: str, features: Features) -> None:
        if self.cache_dir is not None:
            ckpt.save_safetensors(features.to_tensors(), self.cache_dir / f"{key}.safetensors",
                                  format_name="revise.features")


def _file_digest(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def _encoder_fingerprint(models) -> str:
    """Identifies the frozen encoders: configs plus a checksum of a few weights (cheap, catches swaps)."""
    digest = hashlib.sha256()
    for module in (models.vae, models.text.model, models.vlm.model):
        config = getattr(module, "config", None)
        # diffusers' private entries (`_use_default_values` is a list made from a set) change order from one
        # process to the next with the hash seed; keyed on them, the cache missed in every new process
        digest.update(repr(sorted((k, v) for k, v in dict(config).items() if not k.startswith("_"))
                           if isinstance(config, dict) else
                           (config.to_json_string() if hasattr(config, "to_json_string") else config)).encode())
        params = list(module.parameters())
        for tensor in (params[0], params[-1]):
            digest.update(f"{float(tensor.detach().float().sum()):.6e}".encode())
    return digest.hexdigest()[:16]


def sample_index(step: int, micro: int, per_step: int, count: int, seed: int) -> int:
    """The dataset index of global micro-sample `micro` of optimizer step `step`.

    Every epoch is a fresh permutation drawn from (seed, epoch), so the order depends only on the seed
    and the position: a resumed run and a run on more processes read exactly the same samples.
    """
    position = step * per_step + micro
    epoch, offset = divmod(position, count)
    generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return int(torch.randperm(count, generator=generator)[offset])

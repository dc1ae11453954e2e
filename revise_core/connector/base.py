"""What every connector family shares: the interface callers use, and the modules both releases have.

A connector f_C turns the VLM states u, the umT5 tokens of the instruction and the source-video latents v
into the one token sequence every DiT block attends to. Families differ in how u becomes tokens, in the
order and boundary tokens of the sequence, in how it is cut to `max_context_len`, and in what the null
(unconditional) branch of guidance and of the training-time condition drop contains:
- `omnivideo2.Connector`: u -> RMSNorm -> Linear; null = the source video alone;
- `revise.VisionHeadConnector` (the ReViSE release, Omni-Video v1 layout): u -> VisionHead -> DM_Adapter;
  null = the release's unconditioned umT5 and VLM states with the real source video.
Callers (editor, trainer, nodes, benchmarks) use only `ContextConnector`.
"""

from __future__ import annotations

import abc
from typing import ClassVar

import torch
from einops import rearrange
from torch import nn


class ContextConnector(nn.Module, abc.ABC):
    """The interface of a connector family. `config` has at least `vlm_dim`, `context_dim`,
    `latent_channels` and `max_context_len`; `visual_context_adapter` is the part that trains."""

    family: ClassVar[str]
    boundary_names: ClassVar[tuple[str, ...]]  # the boundary tokens `assemble` puts around the parts
    config: object
    visual_context_adapter: nn.Module

    @abc.abstractmethod
    def project_vlm(self, u: torch.Tensor) -> torch.Tensor:
        """VLM hidden states u [L, vlm_dim] -> context tokens [L', context_dim]."""

    def adapt_video(self, latents: torch.Tensor) -> torch.Tensor:
        """Normalised source latents [B, C, T, H, W] -> [B, N, context_dim]."""
        if latents.shape[-4] != self.config.latent_channels:
            raise ValueError(
                f"source latents have {latents.shape[-4]} channels, the connector expects "
                f"{self.config.latent_channels}"
            )
        return self.visual_context_adapter(latents)

    @abc.abstractmethod
    def assemble(self, vlm_tokens: torch.Tensor | None, text_tokens: torch.Tensor | None,
                 video_tokens: torch.Tensor) -> torch.Tensor:
        """One context sequence [L <= max_context_len, context_dim] in the family's order."""

    def uncut_length(self, vlm_rows: int, text_rows: int, video_rows: int) -> int:
        """Rows of the conditional sequence `assemble` builds from parts of these lengths, before any cut to
        `max_context_len` (every part and boundary token of the family counted)."""
        boundary = sum(getattr(self.boundary, name).shape[0] for name in self.boundary_names)
        return vlm_rows + text_rows + video_rows + boundary

    @abc.abstractmethod
    def null_context(self, video_tokens: torch.Tensor, *, vlm_tokens: torch.Tensor | None = None) -> torch.Tensor:
        """The unconditional sequence of guidance and of the training-time condition drop. `vlm_tokens`: the
        projection of `null_vlm_states()` computed beforehand (a trainer that keeps the projection off the
        device); families without null VLM states ignore it."""

    def null_vlm_states(self) -> torch.Tensor | None:
        """The VLM states the null branch projects (None: the family's null branch has none)."""
        return None

    @property
    def takes_negative_prompt(self) -> bool:
        """Whether this family's release encodes a negative prompt (it overrides `negative_context`)."""
        return type(self).negative_context is not ContextConnector.negative_context

    def negative_context(self, text_tokens: torch.Tensor, video_tokens: torch.Tensor) -> torch.Tensor:
        """The unconditional sequence of a release that encodes a negative prompt at inference (its umT5
        tokens `text_tokens`); families whose release fixes its null branch refuse."""
        raise ValueError(f"{type(self).__name__}: this connector family's null branch is fixed by its release "
                         "(null_context); a negative prompt does not apply to it")

    def condition(self, u: torch.Tensor, text_tokens: torch.Tensor, video_tokens: torch.Tensor) -> torch.Tensor:
        """The conditional sequence from raw u, umT5 tokens [L, context_dim] and video tokens [N, context_dim]."""
        vlm_tokens = self.project_vlm(u.to(video_tokens))
        return self.assemble(vlm_tokens, text_tokens.to(vlm_tokens), video_tokens)

    def frozen_storage_modules(self) -> list[nn.Module]:
        """Frozen parts a trainer may store in bf16 without changing what the release computes (none here)."""
        return []

    def check_part(self, name: str, part: torch.Tensor | None) -> None:
        width = self.config.context_dim
        if part is not None and (part.ndim != 2 or part.shape[-1] != width):
            raise ValueError(
                f"{name} tokens must be [L, {width}] (the DiT's text_dim), got {tuple(part.shape)}: the "
                "text encoder / VLM and the connector do not belong together"
            )


class WanRMSNorm(nn.Module):
    """RMSNorm as in Wan/Omni-Video: statistics in fp32, result cast back, then scaled."""

    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x32 = x.float()
        normed = x32 * torch.rsqrt(x32.pow(2).mean(dim=-1, keepdim=True) + self.eps)
        return normed.type_as(x) * self.weight


class VisualContextAdapter(nn.Module):
    """Source-video latents [B, C, T, H, W] -> context tokens [B, N, context_dim], N = T'·H'·W'."""

    def __init__(self, latent_channels: int, hidden_dim: int, context_dim: int, patch_size: tuple[int, int, int],
                 eps: float) -> None:
        super().__init__()
        self.patch_size = tuple(patch_size)
        self.patch_embedding = nn.Conv3d(latent_channels, hidden_dim, self.patch_size, stride=self.patch_size)
        self.norm1 = nn.LayerNorm(hidden_dim, eps=eps, elementwise_affine=False)
        self.projection = nn.Linear(hidden_dim, context_dim)
        self.norm2 = nn.LayerNorm(context_dim, eps=eps, elementwise_affine=False)

    def forward(self, latents: torch.Tensor) -> torch.Tensor:
        if latents.ndim == 4:
            latents = latents.unsqueeze(0)
        if latents.ndim != 5:
            raise ValueError(f"visual adapter expects latents [B, C, T, H, W], got shape {tuple(latents.shape)}")
        _, _, t, h, w = latents.shape
        pt, ph, pw = self.patch_size
        if t % pt or h % ph or w % pw:
            raise ValueError(
                f"latent size (T={t}, H={h}, W={w}) must be divisible by the adapter patch {self.patch_size}; "
                f"pixel sides must be multiples of {8 * ph}x{8 * pw}"
            )
        tokens = rearrange(self.patch_embedding(latents), "b c t h w -> b (t h w) c")
        return self.norm2(self.projection(self.norm1(tokens)))



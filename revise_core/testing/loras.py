"""Tiny Wan LoRAs in the key layouts users download, for a given (tiny) DiT: every attention projection and
feed-forward layer of every block, with the names each tool writes.

- "comfyui": ComfyUI / original Wan keys (`diffusion_model.blocks.0.self_attn.q.lora_down.weight`, `.alpha`);
- "kohya": kohya / musubi-tuner keys (`lora_unet_blocks_0_self_attn_q.lora_down.weight`, `.alpha`);
- "diffusers": written by diffusers' own `WanLoraLoaderMixin.save_lora_weights`, peft's names and its adapter
  metadata (r, lora_alpha);
- "step-distill": the layout of step-distilled LoRAs (CausVid, lightx2v): ComfyUI keys without alpha, plus
  `diff_b` bias deltas of those layers and of the time projection, and whole `.diff` deltas of the q/k norms and
  the output head.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import nn

LAYOUTS = ("comfyui", "kohya", "diffusers", "step-distill")
# original Wan module -> diffusers module, per block (the LoRA targets)
_TARGETS = {"self_attn.q": "attn1.to_q", "self_attn.k": "attn1.to_k", "self_attn.v": "attn1.to_v",
            "self_attn.o": "attn1.to_out.0", "cross_attn.q": "attn2.to_q", "cross_attn.k": "attn2.to_k",
            "cross_attn.v": "attn2.to_v", "cross_attn.o": "attn2.to_out.0", "ffn.0": "ffn.net.0.proj",
            "ffn.2": "ffn.net.2"}


def write_tiny_lora(path: str | Path, dit: nn.Module, layout: str, *, seed: int = 0, rank: int = 2,
                    alpha: float = 1.0, size: float = 0.05) -> Path:
    """A LoRA over `dit` in `layout` at `path` (factors of about `size`)."""
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, got '{layout}'")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    modules = dict(dit.named_modules())
    blocks = len(dit.blocks)
    tensors: dict[str, torch.Tensor] = {}
    generator = torch.Generator().manual_seed(seed)

    def randn(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=generator)

    factors = {}
    for block in range(blocks):
        for original, ours in _TARGETS.items():
            layer = modules[f"blocks.{block}.{ours}"]
            factors[(block, original, ours)] = (randn(rank, layer.in_features) * size,
                                                randn(layer.out_features, rank) * size)
    for (block, original, ours), (down, up) in factors.items():
        if layout in ("comfyui", "step-distill"):
            name = f"diffusion_model.blocks.{block}.{original}"
            tensors[f"{name}.lora_down.weight"], tensors[f"{name}.lora_up.weight"] = down, up
            if layout == "comfyui":
                tensors[f"{name}.alpha"] = torch.tensor(alpha)
            else:
                tensors[f"{name}.diff_b"] = randn(up.shape[0]) * size
        elif layout == "kohya":
            name = f"lora_unet_blocks_{block}_{original.replace('.', '_')}"
            tensors[f"{name}.lora_down.weight"], tensors[f"{name}.lora_up.weight"] = down, up
            tensors[f"{name}.alpha"] = torch.tensor(alpha)
        else:
            tensors[f"blocks.{block}.{ours}.lora_A.weight"], tensors[f"blocks.{block}.{ours}.lora_B.weight"] = (
                down, up)
    if layout == "step-distill":
        for block in range(blocks):
            for norm in ("self_attn.norm_q", "self_attn.norm_k"):
                weight = modules[f"blocks.{block}.attn1.{norm.split('.')[-1]}"].weight
                tensors[f"diffusion_model.blocks.{block}.{norm}.diff"] = randn(*weight.shape) * size
        projection = modules["condition_embedder.time_proj"]
        tensors["diffusion_model.time_projection.1.diff_b"] = randn(projection.out_features) * size
        head = modules["proj_out"]
        tensors["diffusion_model.head.head.diff"] = randn(*head.weight.shape) * size
    if layout == "diffusers":
        from diffusers.loaders.lora_pipeline import WanLoraLoaderMixin

        with tempfile.TemporaryDirectory() as folder:
            WanLoraLoaderMixin.save_lora_weights(folder, transformer_lora_layers=tensors, weight_name="lora.safetensors",
                                                 transformer_lora_adapter_metadata={"r": rank, "lora_alpha": alpha})
            path.write_bytes((Path(folder) / "lora.safetensors").read_bytes())
        return path
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(path))
    return path

"""G_φ as one module: the connector (only its visual adapter trains) feeding the Wan DiT (full or LoRA).

Wrapping both in one nn.Module lets DDP / FSDP see exactly the parameters that train, and keeps the
frozen pieces (VLM projection, boundary tokens) in the graph without parameter gradients.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import torch
from torch import nn

from revise_core.attention import attention_scope
from revise_core.checkpoints import compute_dtype
from revise_core.connector import ContextConnector, save_connector
from revise_core.dit import save_dit
from revise_core.text import pad_context

logger = logging.getLogger(__name__)


class Generator(nn.Module):
    """Velocity prediction v_φ(z_t, t | f_C(v, t5, u))."""

    def __init__(self, dit: nn.Module, connector: ContextConnector) -> None:
        super().__init__()
        self.dit = dit
        self.connector = connector
        # The null branch's projected VLM states, when the frozen projection is kept off the device (the
        # trainer's offload_connector_heads); a plain attribute: not part of the weights.
        self.null_vlm_tokens: torch.Tensor | None = None
        # The DiT's attention backend (revise_core.attention; resolved, with a backward pass), scoped to its calls.
        self.attention = "native"

    def project(self, source_latents: torch.Tensor, vlm_states: torch.Tensor) -> torch.Tensor:
        """The frozen VLM projection of u as `context` computes it (u cast like the video tokens), for features
        computed ahead of the step."""
        video_tokens = self.connector.adapt_video(source_latents)[0]
        return self.connector.project_vlm(vlm_states.to(video_tokens))

    def context(self, source_latents: torch.Tensor, vlm_states: torch.Tensor, text_tokens: torch.Tensor,
                drop: bool, vlm_tokens: torch.Tensor | None = None) -> torch.Tensor:
        """[1, max_context_len, D]; `drop` is the CFG drop: the connector family's null context (T5 and u
        replaced together; the source video kept). `vlm_tokens`: u already projected (`project`)."""
        connector = self.connector
        video_tokens = connector.adapt_video(source_latents)[0]
        if drop:
            tokens = connector.null_context(video_tokens, vlm_tokens=self.null_vlm_tokens)
        else:
            if vlm_tokens is None:
                vlm_tokens = connector.project_vlm(vlm_states.to(video_tokens))
            tokens = connector.assemble(vlm_tokens, text_tokens.to(video_tokens), video_tokens)
        return pad_context(tokens, connector.config.max_context_len)[None]

    def forward(self, z_t: torch.Tensor, sigma: torch.Tensor, source_latents: torch.Tensor,
                vlm_states: torch.Tensor, text_tokens: torch.Tensor, drop: bool,
                vlm_tokens: torch.Tensor | None = None) -> torch.Tensor:
        context = self.context(source_latents, vlm_states, text_tokens, drop, vlm_tokens)
        dtype = compute_dtype(self.dit)
        timestep = (sigma * 1000.0).to(z_t.device)  # Wan's timestep is σ·1000
        with attention_scope(self.attention):
            return self.dit(hidden_states=z_t.to(dtype), timestep=timestep, encoder_hidden_states=context.to(dtype),
                            return_dict=False)[0]


def configure_trainable(generator: Generator, *, mode: str, lora_rank: int = 32, lora_alpha: float = 32.0,
                        lora_targets: list[str] | tuple[str, ...] = ()) -> list[str]:
    """Freeze everything, then unfreeze the DiT (or its LoRA) and the visual context adapter.

    Returns the names of the trainable parameters.
    """
    generator.requires_grad_(False)
    if mode == "lora":
        from peft import LoraConfig

        generator.dit.add_adapter(LoraConfig(r=lora_rank, lora_alpha=lora_alpha, target_modules=list(lora_targets),
                                             init_lora_weights=True))
        for name, parameter in generator.dit.named_parameters():
            parameter.requires_grad_("lora_" in name)
    elif mode == "full":
        generator.dit.requires_grad_(True)
    else:
        raise ValueError(f"train mode must be 'full' or 'lora', got '{mode}'")
    generator.connector.visual_context_adapter.requires_grad_(True)
    names = [n for n, p in generator.named_parameters() if p.requires_grad]
    if not names:
        raise ValueError(f"no trainable parameters (mode={mode}, LoRA targets {list(lora_targets)})")
    return names


def merged_dit_state(dit: nn.Module, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """DiT weights (from a full state dict of the DiT) with any LoRA folded in, under plain diffusers names.

    W' = W + scaling · B @ A for every LoRA-wrapped layer (peft's merge, done on the saved tensors so that
    it also works for weights gathered from FSDP shards).
    """
    from peft.tuners.lora import LoraLayer

    merged = {}
    for name, module in dit.named_modules():
        if isinstance(module, LoraLayer):
            weight = state[f"{name}.base_layer.weight"].clone()
            for adapter in module.active_adapters:
                delta = state[f"{name}.lora_B.{adapter}.weight"].float() @ state[f"{name}.lora_A.{adapter}.weight"].float()
                weight += (delta * module.scaling[adapter]).to(weight.dtype)
            merged[f"{name}.weight"] = weight
    out = {}
    for key, tensor in state.items():
        if "lora_" in key:
            continue
        clean = key.replace(".base_layer.", ".")
        out[clean] = merged.get(clean, tensor)
    return out


def export(generator: Generator, folder: str | os.PathLike, *, state: dict[str, torch.Tensor] | None = None) -> dict[str, Path]:
    """Write the trained DiT (original Wan layout, LoRA merged) and connector, ready for the loaders/ComfyUI.

    `state` is the generator's full state dict (gathered from all processes); default: the live module's.
    """
    from diffusers import WanTransformer3DModel

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    state = state if state is not None else generator.state_dict()
    dit_state = {k[len("dit."):]: v for k, v in state.items() if k.startswith("dit.")}
    config = {k: v for k, v in dict(generator.dit.config).items() if not k.startswith("_")}
    dit = WanTransformer3DModel.from_config(config)
    dit.load_state_dict(merged_dit_state(generator.dit, dit_state))
    connector = type(generator.connector)(generator.connector.config)
    connector.load_state_dict({k[len("connector."):]: v for k, v in state.items() if k.startswith("connector.")})
    outputs = {"dit": Path(save_dit(dit, folder / "dit.safetensors")),
               "connector": Path(save_connector(connector, folder / "connector.safetensors"))}
    if getattr(connector, "family", None) == "revise":
        outputs["release_transformer"] = write_release_transformer(dit, connector, folder / "transformer" / "model.pt")
    return outputs


def write_release_transformer(dit: nn.Module, connector: nn.Module, path: Path) -> Path:
    """`transformer/model.pt` as the ReViSE release ships it ({"module": wan_model.*, adapter.*, ar_vision_head.*,
    visual_context_adapter.*}, tensors only, so `torch.load(weights_only=True)` reads it): it replaces the
    release folder's own file, and the official code loads it too."""
    from revise_core import wan_keys

    module = {f"wan_model.{k}": v for k, v in wan_keys.dit_diffusers_to_original(dit.state_dict()).items()}
    for ours, theirs in (("dm_adapter.", "adapter."), ("vision_head.", "ar_vision_head."),
                         ("visual_context_adapter.", "visual_context_adapter.")):
        module.update({theirs + k[len(ours):]: v for k, v in connector.state_dict().items() if k.startswith(ours)})
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"module": {k: v.detach().cpu().contiguous() for k, v in module.items()}}, path)
    return path

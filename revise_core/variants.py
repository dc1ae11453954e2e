"""The named table of models this project knows, each with a shipped config (no hub access ever).

A single-file checkpoint carries no config. Its variant comes from, in order: the caller (a name, a
config dict or a config.json path), the config that this project embeds in files it writes, or an
exact match of every tensor name and shape against the variants below. Anything else is an error that
names the file; we never guess a configuration from a few tensor shapes.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from . import resources

CONFIG_ROOT = resources.config_path("models")

COMPONENTS = ("dit", "vae", "t5", "connector", "vlm")


@dataclass(frozen=True)
class Variant:
    """One known model: which component it is, where its config lives and what files users have."""

    name: str
    component: str
    description: str
    # Folder under configs/models holding config.json (diffusers / transformers / connector format).
    config_dir: str
    # Usual file names, shown in docs and error messages.
    typical_files: tuple[str, ...] = ()

    @property
    def config_path(self) -> Path:
        return CONFIG_ROOT / self.config_dir / "config.json"

    def load_config(self) -> dict:
        path = self.config_path
        if not path.is_file():
            raise FileNotFoundError(
                f"shipped config for variant '{self.name}' is missing: {path}. The configs/ folder must stay "
                "next to revise_core/ in a clone, or inside it in an installed wheel (revise_core/resources.py)."
            )
        return json.loads(path.read_text(encoding="utf-8"))


KNOWN_VARIANTS: tuple[Variant, ...] = (
    Variant(
        "wan2.1-t2v-1.3b", "dit", "Wan2.1 text-to-video DiT, 1.3B (30 blocks, width 1536)", "wan2.1-t2v-1.3b",
        ("wan2.1_t2v_1.3B_fp16.safetensors", "wan2.1_t2v_1.3B_bf16.safetensors", "diffusion_pytorch_model.safetensors"),
    ),
    Variant(
        "wan2.1-t2v-14b", "dit", "Wan2.1 text-to-video DiT, 14B (40 blocks, width 5120)", "wan2.1-t2v-14b",
        ("wan2.1_t2v_14B_fp16.safetensors", "wan2.1_t2v_14B_fp8_e4m3fn.safetensors"),
    ),
    Variant(
        "wan2.1-vae", "vae", "Wan2.1 causal video VAE (16 latent channels, 4x8x8)", "wan2.1-vae",
        ("Wan2.1_VAE.pth", "wan_2.1_vae.safetensors"),
    ),
    Variant(
        "umt5-xxl", "t5", "umT5-XXL encoder used by Wan2.1 (4096 wide, 24 layers)", "umt5-xxl",
        ("umt5_xxl_fp16.safetensors", "umt5_xxl_fp8_e4m3fn_scaled.safetensors", "models_t5_umt5-xxl-enc-bf16.pth"),
    ),
    Variant(
        "omnivideo2-1.3b", "connector",
        "Omni-Video 2 connector for Wan2.1-1.3B with a Qwen3-VL-30B-A3B VLM (u width 2048)", "omnivideo2-1.3b",
        ("transformer/pytorch_model.pt",),
    ),
    Variant(
        "qwen2.5-vl-7b", "vlm",
        "Qwen2.5-VL-7B-Instruct architecture (config only: real VLMs load from their own HF folder; used by the "
        "real-size benchmarks)", "qwen2.5-vl-7b", ("Qwen/Qwen2.5-VL-7B-Instruct/",),
    ),
    Variant(
        "qwen3-vl-30b-a3b", "vlm",
        "Qwen3-VL-30B-A3B-Instruct architecture, Omni-Video 2's VLM (MoE, 128 experts / 8 active, width 2048; config "
        "only: real VLMs load from their own HF folder; meta-device sizes)", "qwen3-vl-30b-a3b",
        ("Qwen/Qwen3-VL-30B-A3B-Instruct/",),
    ),
    Variant(
        "qwen3-vl-2b", "vlm",
        "Qwen3-VL-2B-Instruct architecture (dense, width 2048, the smallest Qwen3-VL critic; config only)",
        "qwen3-vl-2b", ("Qwen/Qwen3-VL-2B-Instruct/",),
    ),
    Variant(
        "revise-vila-8b", "vlm",
        "VILA of the ReViSE release: Llama-3-8B + SigLIP-so400m-384 + mlp_downsample (config only: the release "
        "loads from its own ar_model/checkpoint folder; used for meta-device sizes and cost models)",
        "revise-vila-8b", ("revise_ckpt/ar_model/checkpoint/",),
    ),
)


def variants_for(component: str, variants: tuple[Variant, ...] = KNOWN_VARIANTS) -> tuple[Variant, ...]:
    if component not in COMPONENTS:
        raise ValueError(f"unknown component '{component}'; expected one of {COMPONENTS}")
    return tuple(v for v in variants if v.component == component)


def get_variant(name: str, variants: tuple[Variant, ...] = KNOWN_VARIANTS) -> Variant:
    for variant in variants:
        if variant.name == name:
            return variant
    known = ", ".join(v.name for v in variants)
    raise ValueError(f"unknown model variant '{name}'; known variants: {known}")


ConfigSpec = str | os.PathLike | dict | None


def resolve_config(spec: ConfigSpec, component: str, variants: tuple[Variant, ...] = KNOWN_VARIANTS) -> dict | None:
    """Turn what a caller passed as `config` into a config dict (None when nothing was given).

    Accepted: a dict, a variant name, a config.json path, or a folder containing config.json.
    """
    if spec is None:
        return None
    if isinstance(spec, dict):
        return dict(spec)
    text = os.fspath(spec)
    for variant in variants_for(component, variants):
        if variant.name == text:
            return variant.load_config()
    path = Path(text).expanduser()
    if path.is_dir():
        path = path / "config.json"
    if path.is_file():
        from .checkpoints import read_json

        return read_json(path, what=f"{component} config")
    names = ", ".join(v.name for v in variants_for(component, variants)) or "none"
    raise ValueError(
        f"{component} config '{text}' is neither a known variant ({names}) nor an existing config.json "
        "file or folder"
    )

"""umT5 text encoder (`transformers.UMT5EncoderModel`) and its tokenizer.

Sources: a Hugging Face folder (config.json, weights and tokenizer files; decoder weights of a full
umT5 checkpoint are ignored), or a single weights file plus a tokenizer folder. Single files may use
HF key names (ComfyUI's `umt5_xxl_fp16.safetensors`, `umt5_xxl_fp8_e4m3fn_scaled.safetensors`) or the
original Wan names (`models_t5_umt5-xxl-enc-bf16.pth`).
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from . import checkpoints as ckpt
from .variants import KNOWN_VARIANTS, ConfigSpec, Variant, resolve_config

logger = logging.getLogger(__name__)

# The embedding is stored once in most files; the encoder's copy is tied to it.
TIED_KEYS = ("shared.weight", "encoder.embed_tokens.weight")
# Entries of ComfyUI text-encoder files that are not weights (the tokenizer model blob).
NON_WEIGHT_KEYS = ("spiece_model",)


@dataclass
class TextEncoder:
    """The umT5 encoder and its tokenizer, which always travel together."""

    model: nn.Module
    tokenizer: object


_WAN_TO_HF = (
    (r"^token_embedding\.", "shared."),
    (r"^norm\.", "encoder.final_layer_norm."),
    (r"^blocks\.(\d+)\.norm1\.", r"encoder.block.\1.layer.0.layer_norm."),
    (r"^blocks\.(\d+)\.attn\.(q|k|v|o)\.", r"encoder.block.\1.layer.0.SelfAttention.\2."),
    (r"^blocks\.(\d+)\.pos_embedding\.embedding\.", r"encoder.block.\1.layer.0.SelfAttention.relative_attention_bias."),
    (r"^blocks\.(\d+)\.norm2\.", r"encoder.block.\1.layer.1.layer_norm."),
    # Wan computes fc1(x) * gelu(gate(x)); HF computes gelu(wi_0(x)) * wi_1(x): gate is wi_0.
    (r"^blocks\.(\d+)\.ffn\.gate\.0\.", r"encoder.block.\1.layer.1.DenseReluDense.wi_0."),
    (r"^blocks\.(\d+)\.ffn\.fc1\.", r"encoder.block.\1.layer.1.DenseReluDense.wi_1."),
    (r"^blocks\.(\d+)\.ffn\.fc2\.", r"encoder.block.\1.layer.1.DenseReluDense.wo."),
)


def wan_t5_to_hf(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Original Wan umT5 encoder keys -> HF `UMT5EncoderModel` keys."""
    out = {}
    for key, tensor in state_dict.items():
        for pattern, replacement in _WAN_TO_HF:
            new, count = re.subn(pattern, replacement, key)
            if count:
                out[new] = tensor
                break
        else:
            raise ckpt.UnknownLayoutError(f"unexpected key '{key}' in a Wan umT5 checkpoint")
    return out


def hf_t5_to_wan(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """HF `UMT5EncoderModel` keys -> original Wan keys (inverse of `wan_t5_to_hf`)."""
    inverse = (
        (r"^shared\.", "token_embedding."),
        (r"^encoder\.final_layer_norm\.", "norm."),
        (r"^encoder\.block\.(\d+)\.layer\.0\.layer_norm\.", r"blocks.\1.norm1."),
        (r"^encoder\.block\.(\d+)\.layer\.0\.SelfAttention\.relative_attention_bias\.", r"blocks.\1.pos_embedding.embedding."),
        (r"^encoder\.block\.(\d+)\.layer\.0\.SelfAttention\.(q|k|v|o)\.", r"blocks.\1.attn.\2."),
        (r"^encoder\.block\.(\d+)\.layer\.1\.layer_norm\.", r"blocks.\1.norm2."),
        (r"^encoder\.block\.(\d+)\.layer\.1\.DenseReluDense\.wi_0\.", r"blocks.\1.ffn.gate.0."),
        (r"^encoder\.block\.(\d+)\.layer\.1\.DenseReluDense\.wi_1\.", r"blocks.\1.ffn.fc1."),
        (r"^encoder\.block\.(\d+)\.layer\.1\.DenseReluDense\.wo\.", r"blocks.\1.ffn.fc2."),
    )
    out = {}
    for key, tensor in state_dict.items():
        if key == "encoder.embed_tokens.weight":
            continue  # tied to shared.weight
        for pattern, replacement in inverse:
            new, count = re.subn(pattern, replacement, key)
            if count:
                out[new] = tensor
                break
        else:
            raise ValueError(f"cannot map umT5 key '{key}' to the Wan layout")
    return out


T5_LAYOUTS = (
    ckpt.Layout("wan", "original Wan umT5 keys (models_t5_umt5-xxl-enc-bf16.pth)", ("token_embedding.weight",)),
    ckpt.Layout(
        "hf", "transformers / ComfyUI umT5 keys (encoder.block.N.layer.0.SelfAttention.q.weight)",
        ("encoder.block.0.layer.0.SelfAttention.q.weight",),
    ),
)


def _hf_encoder_tensors(tensors: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Drop what an encoder does not use: a full umT5's decoder / LM head, ComfyUI's tokenizer blob."""
    dropped = [k for k in tensors if k.startswith(("decoder.", "lm_head.")) or k in NON_WEIGHT_KEYS]
    if dropped:
        logger.info("ignoring %d non-encoder entries (e.g. %s)", len(dropped), dropped[0])
    return {k: v for k, v in tensors.items() if k not in dropped and not k.startswith(("decoder.", "lm_head."))}


def load_text_encoder(
    path: str | os.PathLike,
    *,
    tokenizer: str | os.PathLike | None = None,
    config: ConfigSpec = None,
    dtype: torch.dtype | str = torch.float32,
    device: torch.device | str = "cpu",
    variants: tuple[Variant, ...] = KNOWN_VARIANTS,
) -> TextEncoder:
    """Load umT5 from an HF folder, or from one weights file plus a tokenizer folder."""
    from transformers import UMT5Config, UMT5EncoderModel

    dtype = ckpt.resolve_dtype(dtype)
    path = Path(path)
    if not path.exists():
        raise ckpt.ModelFileNotFoundError(f"text encoder not found: {path}")
    config_dict = resolve_config(config, "t5", variants)
    if path.is_dir():
        config_dict = config_dict or ckpt.read_json(path / "config.json", what="umT5 config")
        tensors, layout = _read_hf_folder(path), "hf-folder"
        tokenizer_dir = Path(tokenizer) if tokenizer is not None else path
    else:
        source = ckpt.read_state_dict(path)
        found = ckpt.detect_layout(source.tensors, T5_LAYOUTS, path=path, component="umT5 text encoder")
        layout = found.name
        raw = {k: v for k, v in source.tensors.items() if k not in NON_WEIGHT_KEYS}
        tensors = wan_t5_to_hf(raw) if layout == "wan" else _hf_encoder_tensors(raw)
        config_dict = config_dict or source.embedded_config() or _match_t5_variant(tensors, path, variants)
        if tokenizer is None:
            raise ckpt.ModelFileNotFoundError(
                f"{path}: a single umT5 weights file needs a tokenizer folder (tokenizer=...), e.g. the "
                "'google/umt5-xxl' tokenizer files (spiece.model / tokenizer.json)"
            )
        tokenizer_dir = Path(tokenizer)
    cfg = UMT5Config.from_dict({k: v for k, v in config_dict.items() if not k.startswith("_")})
    model = ckpt.load_into(
        lambda: UMT5EncoderModel(cfg), _fill_tied(tensors), path=path, component="umT5 text encoder",
        layout=layout, dtype=dtype, device=device, optional_keys=TIED_KEYS,
    )
    model.tie_weights()
    return TextEncoder(model=model, tokenizer=load_tokenizer(tokenizer_dir, what="umT5 tokenizer"))


def _fill_tied(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out = dict(tensors)
    for present, absent in (TIED_KEYS, TIED_KEYS[::-1]):
        if present in out and absent not in out:
            out[absent] = out[present]
    return out


def _read_hf_folder(folder: Path) -> dict[str, torch.Tensor]:
    return _hf_encoder_tensors(ckpt.read_weights_folder(folder, ("model.safetensors.index.json",),
                                                        ("model.safetensors", "pytorch_model.bin"), what="umT5"))


def _match_t5_variant(tensors: Mapping[str, torch.Tensor], path: Path, variants: tuple[Variant, ...]) -> dict:
    from transformers import UMT5Config, UMT5EncoderModel

    from .component_loading import match_variant

    return match_variant("t5", lambda data: UMT5EncoderModel(UMT5Config.from_dict(data)), _fill_tied(dict(tensors)),
                         path, variants)


def load_tokenizer(folder: str | os.PathLike, *, what: str = "tokenizer"):
    """`AutoTokenizer` from a local folder only, with an error that lists what the folder holds."""
    from transformers import AutoTokenizer

    folder = Path(folder)
    if not folder.is_dir():
        raise ckpt.ModelFileNotFoundError(f"{what} folder not found: {folder}")
    try:
        return AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    except (OSError, ValueError, KeyError) as error:
        present = sorted(p.name for p in folder.iterdir())[:12]
        raise ckpt.CheckpointError(
            f"{folder}: could not load the {what} ({error}). The folder holds {present}; expected "
            "tokenizer.json or spiece.model with tokenizer_config.json"
        ) from error


def save_text_encoder(encoder: TextEncoder, folder: str | os.PathLike) -> Path:
    """Write an HF folder (config, safetensors weights, tokenizer) that `load_text_encoder` reads."""
    folder = Path(folder)
    encoder.model.save_pretrained(str(folder), safe_serialization=True)
    encoder.tokenizer.save_pretrained(str(folder))
    return folder


# --- encoding ------------------------------------------------------------------------------------

def clean_prompt(text: str) -> str:
    """Wan's prompt cleaning: HTML entities unescaped (twice, as Wan does) and whitespace collapsed."""
    import html

    return re.sub(r"\s+", " ", html.unescape(html.unescape(text))).strip()


def encode_text(encoder: TextEncoder, prompts: list[str], *, max_length: int = 512) -> list[torch.Tensor]:
    """umT5 features of each prompt, trimmed to its true length: a list of [L_i, D], L_i <= max_length.

    Tokenised as Wan does (padding to `max_length` on the right, truncation, </s> appended); the encoder
    sees the attention mask, and the padded positions are cut off afterwards.
    """
    if not prompts:
        raise ValueError("encode_text needs at least one prompt")
    for prompt in prompts:
        if not isinstance(prompt, str) or not prompt.strip():
            raise ValueError(f"prompts must be non-empty strings, got {prompt!r}")
    cleaned = [clean_prompt(p) for p in prompts]
    for prompt, full in zip(cleaned, encoder.tokenizer(cleaned, add_special_tokens=True)["input_ids"], strict=True):
        if len(full) > max_length:
            logger.warning("umT5 keeps the first %d of the %d tokens of the prompt %r; the rest is cut off",
                           max_length, len(full), prompt[:80] + ("..." if len(prompt) > 80 else ""))
    batch = encoder.tokenizer(
        cleaned, padding="max_length", max_length=max_length, truncation=True,
        add_special_tokens=True, return_attention_mask=True, return_tensors="pt",
    )
    device = ckpt.device_of(encoder.model)
    mask = batch["attention_mask"].to(device)
    hidden = encoder.model(batch["input_ids"].to(device), mask).last_hidden_state
    lengths = mask.gt(0).sum(dim=1).tolist()
    return [states[:length] for states, length in zip(hidden, lengths, strict=True)]


def pad_context(tokens: torch.Tensor, length: int) -> torch.Tensor:
    """Zero-pad [L, D] to [length, D]: Wan attends to a fixed-length context without a key mask."""
    if tokens.shape[0] > length:
        raise ValueError(f"context of {tokens.shape[0]} tokens exceeds the fixed length {length}")
    return torch.cat([tokens, tokens.new_zeros(length - tokens.shape[0], tokens.shape[1])])

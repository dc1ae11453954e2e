"""The Omni-Video 2 / Qwen3-VL side of the tiny test kit (the rest is in `testing/__init__.py`): tiny Qwen3-VL
(dense and MoE) models and folders, a models.json set with a Qwen3-VL, and a tiny Omni-Video 2 release folder whose sizes
ComfyUI's own Wan nodes load too (the real-ComfyUI test's native kit).
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import torch

from .. import wan_keys
from ..connector import BOUNDARY_NAMES, save_connector
from ..models_file import write_models_file
from ..text import hf_t5_to_wan, save_text_encoder
from ..vae import save_vae
from ..vlm.qwen3_vl import Qwen3VLModel, VideoPreprocessConfig
from . import (
    TINY_PREPROCESS,
    VLM_HIDDEN,
    VLM_SPECIAL_TOKENS,
    _randomize,
    seeded,
    tiny_connector,
    tiny_dit,
    tiny_text_encoder,
    tiny_vae,
    tiny_vlm,
    train_tokenizer,
)

# ComfyUI's own Wan model reads most sizes from the tensors but fixes two: text_dim 4096 (WanModel's default,
# which its detection never sets) and num_heads = dim // 128. The native kit (`write_native_models`) keeps
# those two and stays tiny elsewhere (a 1-head DiT, a narrow-attention umT5).
NATIVE_TEXT_DIM, NATIVE_HEAD_DIM = 4096, 128

TINY_QWEN3_PREPROCESS = VideoPreprocessConfig(min_pixels=4 * 32 * 32, max_pixels=32 * 32 * 32)
TIMESTAMP_TEXT = ("< > . seconds " + " ".join(str(digit) for digit in range(10)),)  # "<0.5 seconds>" tokens


def tiny_qwen3_vl_config(tokenizer, *, moe: bool = False) -> dict:
    """Qwen3-VL (or Qwen3-VL-MoE) scaled down: 2 LLM layers, a 3-block vision tower with DeepStack after
    blocks 0 and 1, interleaved MRoPE sections summing to head_dim / 2."""
    ids = {name: tokenizer.convert_tokens_to_ids(name) for name in VLM_SPECIAL_TOKENS}
    head_dim = VLM_HIDDEN // 4
    text = dict(vocab_size=len(tokenizer), hidden_size=VLM_HIDDEN, intermediate_size=128, num_hidden_layers=2,
                num_attention_heads=4, num_key_value_heads=2, head_dim=head_dim, max_position_embeddings=4096,
                rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_interleaved": True,
                                 "mrope_section": [head_dim // 2 - 4, 2, 2]},
                bos_token_id=ids["<|endoftext|>"], eos_token_id=ids["<|im_end|>"], pad_token_id=ids["<|endoftext|>"])
    if moe:
        text.update(num_experts=4, num_experts_per_tok=2, moe_intermediate_size=32, decoder_sparse_step=1,
                    mlp_only_layers=[])
    return dict(
        model_type="qwen3_vl_moe" if moe else "qwen3_vl",
        text_config=text,
        vision_config=dict(depth=3, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=VLM_HIDDEN,
                           patch_size=TINY_QWEN3_PREPROCESS.patch_size,
                           spatial_merge_size=TINY_QWEN3_PREPROCESS.merge_size,
                           temporal_patch_size=TINY_QWEN3_PREPROCESS.temporal_patch_size, num_position_embeddings=64,
                           deepstack_visual_indexes=[0, 1]),
        image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"],
        tie_word_embeddings=False,
    )


def tiny_qwen3_vl(seed: int = 0, *, moe: bool = False, extra_text: tuple[str, ...] = ()) -> Qwen3VLModel:
    from transformers import (
        Qwen3VLConfig,
        Qwen3VLForConditionalGeneration,
        Qwen3VLMoeConfig,
        Qwen3VLMoeForConditionalGeneration,
    )

    tokenizer = train_tokenizer("vlm", TIMESTAMP_TEXT + tuple(extra_text))
    config_class, model_class = ((Qwen3VLMoeConfig, Qwen3VLMoeForConditionalGeneration) if moe
                                 else (Qwen3VLConfig, Qwen3VLForConditionalGeneration))
    config = config_class(**{k: v for k, v in tiny_qwen3_vl_config(tokenizer, moe=moe).items() if k != "model_type"})
    with seeded(seed):
        model = model_class(config)
        _randomize(model)  # the MoE router and some norms start at constants
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.eval().requires_grad_(False)
    return Qwen3VLModel(model=model, tokenizer=tokenizer, preprocess=TINY_QWEN3_PREPROCESS)


def write_qwen3_vl_folder(vlm: Qwen3VLModel, folder: str | Path) -> Path:
    """A Hugging Face Qwen3-VL folder as released: weights, config, tokenizer, video_preprocessor_config.json."""
    folder = Path(folder)
    vlm.model.save_pretrained(str(folder), safe_serialization=True)
    vlm.tokenizer.save_pretrained(str(folder))
    (folder / "video_preprocessor_config.json").write_text(json.dumps(vlm.preprocess.to_processor_config(), indent=2))
    return folder


def write_qwen3_model_set(out_dir: str | Path, seed: int = 0) -> Path:
    """`<out_dir>/qwen3/models.json`: the tiny set of `write_tiny_models(out_dir)` with a tiny Qwen3-VL folder as
    its VLM (same width as the tiny connector's u). Call after write_tiny_models."""
    out = Path(out_dir)
    write_qwen3_vl_folder(tiny_qwen3_vl(seed + 9), out / "vlm" / "tiny-qwen3-vl")
    folder = out / "qwen3"
    folder.mkdir(parents=True, exist_ok=True)
    write_models_file(folder, {
        "dit": "../dit/wan_tiny_comfyui.safetensors", "vae": "../vae/wan_2.1_vae_tiny.safetensors",
        "t5": "../t5/umt5_tiny.safetensors", "t5_tokenizer": "../t5/tokenizer", "vlm": "../vlm/tiny-qwen3-vl",
        "connector": "../connector/revise_connector_tiny.safetensors",
    })
    return folder


def write_native_models(out_dir: str | Path, seed: int = 0) -> dict[str, Path]:
    """A tiny set that ComfyUI's own Wan nodes load too (sizes: NATIVE_TEXT_DIM, NATIVE_HEAD_DIM): an
    Omni-Video 2 1.3B release folder `omnivideo2/` (`transformer/pytorch_model.pt`: DiT under `wan_model.` and
    the connector; `special_tokens.pkl`; Wan's umT5 .pth + tokenizer and VAE .pth; a Qwen3-VL folder inside;
    plus `dit_config.json`, not part of the release), and a `models.json` folder of the encoders only
    (VAE in original keys, umT5, a Qwen2.5-VL folder, our connector file; no DiT: ComfyUI's UNETLoader loads
    it, `EditModels.load(..., with_dit=False)`). Returns the paths by role."""
    out = Path(out_dir)
    dit = tiny_dit(seed, heads=1, head_dim=NATIVE_HEAD_DIM, text_dim=NATIVE_TEXT_DIM, freq_dim=256)
    text = tiny_text_encoder(seed + 2, d_model=NATIVE_TEXT_DIM)
    connector = tiny_connector(seed + 4, context_dim=NATIVE_TEXT_DIM)
    vae, vlm = tiny_vae(seed + 1), tiny_vlm(seed + 3)
    omni = out / "omnivideo2"
    (omni / "transformer").mkdir(parents=True, exist_ok=True)
    state = {f"wan_model.{k}": v for k, v in wan_keys.dit_diffusers_to_original(dit.state_dict()).items()}
    state.update({k: v for k, v in connector.state_dict().items() if not k.startswith("boundary.")})
    torch.save(state, omni / "transformer" / "pytorch_model.pt")
    with open(omni / "special_tokens.pkl", "wb") as handle:
        pickle.dump({f"<{name}>": connector.boundary_token(name).clone() for name in BOUNDARY_NAMES}, handle)
    (omni / "dit_config.json").write_text(json.dumps(
        {k: v for k, v in dict(dit.config).items() if not k.startswith("_")}, indent=2) + "\n")
    # the rest of an Omni-Video 2 1.3B release folder: Wan's umT5 (+ tokenizer) and VAE, and its Qwen3-VL inside
    torch.save(hf_t5_to_wan(text.model.state_dict()), omni / "models_t5_umt5-xxl-enc-bf16.pth")
    text.tokenizer.save_pretrained(str(omni / "google" / "umt5-xxl"))
    torch.save(wan_keys.vae_diffusers_to_original(vae.state_dict()), omni / "Wan2.1_VAE.pth")
    write_qwen3_vl_folder(tiny_qwen3_vl(seed + 9), omni / "Qwen3-VL-tiny")
    encoders = out / "encoders"
    save_vae(vae, encoders / "wan_2.1_vae_native_tiny.safetensors")
    save_text_encoder(text, encoders / "t5")
    text.tokenizer.save_pretrained(str(encoders / "t5_tokenizer"))
    save_connector(connector, encoders / "connector.safetensors")
    vlm.model.save_pretrained(str(encoders / "vlm"), safe_serialization=True)
    vlm.tokenizer.save_pretrained(str(encoders / "vlm"))
    (encoders / "vlm" / "preprocessor_config.json").write_text(json.dumps(TINY_PREPROCESS.to_processor_config()))
    write_models_file(encoders, {"vae": "wan_2.1_vae_native_tiny.safetensors", "t5": "t5",
                                 "t5_tokenizer": "t5_tokenizer", "vlm": "vlm", "connector": "connector.safetensors"})
    return {"omnivideo2": omni / "transformer" / "pytorch_model.pt", "release": omni, "dit_config": omni / "dit_config.json",
            "model_set": encoders, "vae": encoders / "wan_2.1_vae_native_tiny.safetensors"}

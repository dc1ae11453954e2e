"""Tiny random models built from the real diffusers / transformers classes, for tests and demos.

No weights can be downloaded, so every test, demo and workflow check runs on these: a 2-block Wan DiT,
a small Wan VAE (same block structure as Wan2.1, so the original key layout applies), a 2-layer umT5, a
2-layer Qwen2.5-VL, a tokenizer trained at run time (every word one token, so "Yes"/"No" are single
tokens) and a connector sized to fit them. Everything is deterministic from a seed and leaves the global
RNG untouched.

`python -m revise_core.testing write-tiny-models DIR` writes the whole set in every supported layout,
plus `manifest.json` describing each file (`__main__.py`). The Qwen3-VL / Omni-Video 2 kit is in omnivideo2.py,
the ReViSE release folder of the parity test (written identically everywhere) in parity.py.
"""

from __future__ import annotations

import json
import logging
import pickle
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from .. import checkpoints as ckpt
from .. import wan_keys
from ..connector import (
    BOUNDARY_NAMES,
    Connector,
    ConnectorConfig,
    VisionHeadConnector,
    VisionHeadConnectorConfig,
    save_connector,
)
from ..connector.revise import BOUNDARY_NAMES as BOUNDARY_NAMES_RELEASE
from ..connector.revise import TransformerShape
from ..dit import save_dit
from ..models_file import write_models_file
from ..text import TextEncoder, hf_t5_to_wan, save_text_encoder
from ..vae import save_vae
from ..variants import get_variant
from ..vlm import vila
from ..vlm.qwen2_vl import Qwen2VLModel, VisionPreprocessConfig
from ..vlm.vila import VilaModel

logger = logging.getLogger(__name__)

# Sizes shared by the factories so that the pieces fit together.
TEXT_DIM = 32  # umT5 width = DiT text_dim = connector context_dim
DIT_HEADS, DIT_HEAD_DIM = 2, 32  # 3-axis RoPE needs a head dim that splits three ways
VLM_HIDDEN = 64
LATENT_CHANNELS = 16

# Llama-3's special tokens as the VILA of the ReViSE release uses them, plus its generation tokens.
LLAMA3_SPECIAL_TOKENS = (
    "<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>", "[GEN_IMG]",
    "[GEN_VID]", "<unk>",
)
VILA_IMAGE_SIZE, VILA_PATCH = 42, 14  # a 3 x 3 SigLIP grid, merged 2 x 2 (with padding) into 4 tokens per image
VLM_SPECIAL_TOKENS = (
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<unk>", "<|vision_start|>", "<|vision_end|>",
    "<|image_pad|>", "<|video_pad|>",
)
T5_SPECIAL_TOKENS = ("<pad>", "</s>", "<unk>")
# Training corpus of the run-time tokenizer: the words of our prompts (critic, captions, instructions).
CORPUS = (
    "Yes No yes no . , ? ! : ; ' \" ( ) - 0 1 2 3 4 5 6 7 8 9 10",
    "You are a careful video editing critic . Answer Yes only if all four hold , otherwise answer No .",
    "edit accuracy preservation consistency generation naturalness generation realism",
    "Does the edited video satisfy the instruction ? Consider the source video and the edited video .",
    "Instruction : what will the ice cube look like after an hour in the sun ? it melts into a puddle",
    "a deep frost settles two seconds later the ball moves to the right the egg is fried",
    "make the car red turn the sky blue add snow remove the person the cat jumps over the fence",
    "Describe the source video . Describe the target video after the edit . Source video Edit Target",
    "system user assistant reasoning verdict score the a an of in on to and is are with after before",
    "red green blue yellow white black bright dark small large left right up down moving static",
    "You are a helpful language and vision assistant . You are able to understand the visual content that the "
    "user provides , and assist the user with a variety of tasks using natural language . < video > image",
)
VLM_CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'video' %}<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif part['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}{% endfor %}{% endif %}"
    "<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
VILA_CHECKPOINT = "revise_ckpt/ar_model/checkpoint"  # where the ReViSE release keeps its VILA
TINY_PREPROCESS = VisionPreprocessConfig(min_pixels=4 * 28 * 28, max_pixels=64 * 28 * 28)


@contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Run a block with a fixed CPU seed without disturbing the caller's RNG state."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


# --- tokenizers ----------------------------------------------------------------------------------

def train_tokenizer(kind: str = "vlm", extra_text: tuple[str, ...] = (), *, fixed: bool = False):
    """A word-level tokenizer trained now on CORPUS (+ extra_text); `kind` is "vlm", "t5" or "llama3".

    "llama3" is Llama-3-style: its special tokens, BOS `<|begin_of_text|>` added to every encoded text by
    the post-processor (as Llama-3's tokenizer.json does), pad `<|end_of_text|>`. `fixed`: the same words
    with ids given in sorted order instead of by a trainer, so that they never change with the tokenizers
    library (the parity references in tests/parity store token ids)."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    if kind not in ("vlm", "t5", "llama3"):
        raise ValueError(f"tokenizer kind must be 'vlm', 't5' or 'llama3', got '{kind}'")
    specials = {"vlm": VLM_SPECIAL_TOKENS, "t5": T5_SPECIAL_TOKENS, "llama3": LLAMA3_SPECIAL_TOKENS}[kind]
    corpus = list(CORPUS) + list(extra_text)
    if fixed:
        split = pre_tokenizers.Whitespace()
        words = sorted({word for text in corpus for word, _ in split.pre_tokenize_str(text)} - set(specials))
        tokenizer = Tokenizer(models.WordLevel(vocab={word: index for index, word in enumerate([*specials, *words])},
                                               unk_token="<unk>"))
        tokenizer.pre_tokenizer = split
    else:
        tokenizer = Tokenizer(models.WordLevel(unk_token="<unk>"))
        tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
        trainer = trainers.WordLevelTrainer(special_tokens=list(specials), min_frequency=1)
        tokenizer.train_from_iterator(corpus, trainer=trainer)
    if kind == "t5":
        # umT5 appends </s> to every sequence; Wan pads on the right and trims by the mask.
        eos_id = tokenizer.token_to_id("</s>")
        tokenizer.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", eos_id)])
        return PreTrainedTokenizerFast(
            tokenizer_object=tokenizer, unk_token="<unk>", pad_token="<pad>", eos_token="</s>",
            padding_side="right",
        )
    if kind == "llama3":
        bos_id = tokenizer.token_to_id("<|begin_of_text|>")
        tokenizer.post_processor = processors.TemplateProcessing(
            single="<|begin_of_text|> $A", special_tokens=[("<|begin_of_text|>", bos_id)])
        return PreTrainedTokenizerFast(
            tokenizer_object=tokenizer, unk_token="<unk>", bos_token="<|begin_of_text|>", eos_token="<|end_of_text|>",
            pad_token="<|end_of_text|>", additional_special_tokens=list(LLAMA3_SPECIAL_TOKENS[2:7]),
            padding_side="right",
        )
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, unk_token="<unk>", pad_token="<|endoftext|>", eos_token="<|im_end|>",
        additional_special_tokens=list(VLM_SPECIAL_TOKENS[4:]) + ["<|im_start|>"],
        chat_template=VLM_CHAT_TEMPLATE, padding_side="left",
    )


# --- model factories -----------------------------------------------------------------------------

def tiny_dit_config(in_channels: int = LATENT_CHANNELS, *, heads: int = DIT_HEADS, head_dim: int = DIT_HEAD_DIM,
                    text_dim: int = TEXT_DIM, freq_dim: int = 32) -> dict:
    return dict(
        patch_size=[1, 2, 2], num_attention_heads=heads, attention_head_dim=head_dim,
        in_channels=in_channels, out_channels=LATENT_CHANNELS, text_dim=text_dim, freq_dim=freq_dim, ffn_dim=128,
        num_layers=2, cross_attn_norm=True, qk_norm="rms_norm_across_heads", eps=1e-6, image_dim=None,
        added_kv_proj_dim=None, rope_max_seq_len=1024, pos_embed_seq_len=None,
    )


def tiny_dit(seed: int = 0, in_channels: int = LATENT_CHANNELS, **sizes: int) -> nn.Module:
    from diffusers import WanTransformer3DModel

    with seeded(seed):
        model = WanTransformer3DModel.from_config(tiny_dit_config(in_channels, **sizes))
        # diffusers zero-initialises some output layers; random values make every path observable.
        _randomize(model)
    return model.eval()


def tiny_vae_config() -> dict:
    # num_res_blocks=2 and four levels: the Wan2.1 structure, which the original key layout assumes.
    return dict(base_dim=16, z_dim=LATENT_CHANNELS, dim_mult=[1, 2, 4, 4], num_res_blocks=2,
                temperal_downsample=[False, True, True])


def tiny_vae(seed: int = 0) -> nn.Module:
    from diffusers import AutoencoderKLWan

    with seeded(seed):
        return AutoencoderKLWan.from_config(tiny_vae_config()).eval()


def tiny_t5_config(vocab_size: int, d_model: int = TEXT_DIM) -> dict:
    return dict(vocab_size=vocab_size, d_model=d_model, d_kv=8, d_ff=64, num_layers=2, num_decoder_layers=2,
                num_heads=4, relative_attention_num_buckets=8, relative_attention_max_distance=16,
                feed_forward_proj="gated-gelu", tie_word_embeddings=False, pad_token_id=0, eos_token_id=1,
                decoder_start_token_id=0, dropout_rate=0.0)


def tiny_text_encoder(seed: int = 0, extra_text: tuple[str, ...] = (), d_model: int = TEXT_DIM) -> TextEncoder:
    from transformers import UMT5Config, UMT5EncoderModel

    tokenizer = train_tokenizer("t5", extra_text)
    with seeded(seed):
        model = UMT5EncoderModel(UMT5Config(**tiny_t5_config(len(tokenizer), d_model)))
    return TextEncoder(model=model.eval(), tokenizer=tokenizer)


def tiny_vlm_config(tokenizer) -> dict:
    ids = {name: tokenizer.convert_tokens_to_ids(name) for name in VLM_SPECIAL_TOKENS}
    head_dim = VLM_HIDDEN // 4
    return dict(
        model_type="qwen2_5_vl",
        text_config=dict(
            vocab_size=len(tokenizer), hidden_size=VLM_HIDDEN, intermediate_size=128, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096,
            # mrope sections (t, h, w) must add up to head_dim / 2.
            rope_parameters={"rope_type": "default", "rope_theta": 10000.0,
                             "mrope_section": [2, 3, head_dim // 2 - 5]},
            bos_token_id=ids["<|endoftext|>"], eos_token_id=ids["<|im_end|>"], pad_token_id=ids["<|endoftext|>"],
        ),
        vision_config=dict(
            depth=2, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=VLM_HIDDEN,
            patch_size=TINY_PREPROCESS.patch_size, spatial_merge_size=TINY_PREPROCESS.merge_size,
            temporal_patch_size=TINY_PREPROCESS.temporal_patch_size, window_size=56, fullatt_block_indexes=[1],
            tokens_per_second=2,
        ),
        image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"],
        tie_word_embeddings=False,
    )


def tiny_vlm(seed: int = 0, extra_text: tuple[str, ...] = ()) -> Qwen2VLModel:
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    tokenizer = train_tokenizer("vlm", extra_text)
    config = Qwen2_5_VLConfig(**{k: v for k, v in tiny_vlm_config(tokenizer).items() if k != "model_type"})
    with seeded(seed):
        model = Qwen2_5_VLForConditionalGeneration(config)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.eval().requires_grad_(False)
    return Qwen2VLModel(model=model, tokenizer=tokenizer, preprocess=TINY_PREPROCESS)


def tiny_vila(seed: int = 0, extra_text: tuple[str, ...] = (), *, fixed_tokenizer: bool = False) -> VilaModel:
    """A tiny VILA as the ReViSE release builds it: Llama LLM, SigLIP tower (select layer -2, all tokens),
    mlp_downsample projector, llama_3-style tokenizer (`fixed_tokenizer`: see train_tokenizer's `fixed`)."""
    from transformers import LlamaConfig, LlamaForCausalLM, SiglipVisionConfig, SiglipVisionModel

    tokenizer = train_tokenizer("llama3", extra_text, fixed=fixed_tokenizer)
    llm_config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=VLM_HIDDEN, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096, tie_word_embeddings=False,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )
    tower_config = SiglipVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                                      image_size=VILA_IMAGE_SIZE, patch_size=VILA_PATCH)
    with seeded(seed):
        llm = LlamaForCausalLM(llm_config)
        tower = SiglipVisionModel(tower_config)
        projector = vila.MultimodalProjector("mlp_downsample", tower_config.hidden_size, VLM_HIDDEN)
        _randomize(projector)
    llm.generation_config.eos_token_id = tokenizer.eos_token_id
    llm.generation_config.pad_token_id = tokenizer.pad_token_id
    modules = vila.VilaModules(llm, tower, projector, select_layer=-2, select_feature="cls_patch")
    modules.eval().requires_grad_(False)
    preprocess = vila.SiglipPreprocess(height=VILA_IMAGE_SIZE, width=VILA_IMAGE_SIZE)
    return VilaModel(model=modules, tokenizer=tokenizer, preprocess=preprocess)


def tiny_connector_config(context_dim: int = TEXT_DIM, max_context_len: int = 256) -> ConnectorConfig:
    return ConnectorConfig(
        vlm_dim=VLM_HIDDEN, context_dim=context_dim, latent_channels=LATENT_CHANNELS,
        adapter_hidden_dim=DIT_HEADS * DIT_HEAD_DIM, adapter_patch_size=(1, 4, 4), max_context_len=max_context_len,
        boundary_token_len=1,
    )


def tiny_connector(seed: int = 0, **sizes: int) -> Connector:
    with seeded(seed):
        connector = Connector(tiny_connector_config(**sizes))
        _randomize(connector)
    return connector.eval()


def tiny_release_connector_config() -> VisionHeadConnectorConfig:
    """The ReViSE release's connector, scaled down: the official 8 heads and 2560 context rows, every
    width and count smaller, boundary tokens of different lengths as in the release (6 and 7 rows there)."""
    return VisionHeadConnectorConfig(
        vision_head=TransformerShape(in_dim=VLM_HIDDEN, dim=16, queries=4, encoder_layers=1, decoder_layers=2,
                                     ffn_dim=32),
        dm_adapter=TransformerShape(in_dim=16, dim=TEXT_DIM, queries=8, encoder_layers=2, decoder_layers=1,
                                    ffn_dim=64),
        latent_channels=LATENT_CHANNELS, adapter_hidden_dim=DIT_HEADS * DIT_HEAD_DIM, adapter_patch_size=(1, 4, 4),
        boundary_lengths={"img_st": 2, "img_ed": 2, "ipl_st": 1, "ipl_ed": 1, "prp_st": 3, "prp_ed": 3},
        null_text_len=5, null_vlm_len=7,
    )


def tiny_release_connector(seed: int = 0) -> VisionHeadConnector:
    with seeded(seed):
        connector = VisionHeadConnector(tiny_release_connector_config())
        _randomize(connector)
    return connector.eval()


def write_release_connector(folder: str | Path, connector: VisionHeadConnector,
                            dit_original: dict[str, torch.Tensor] | None = None) -> None:
    """The connector's files of a ReViSE release folder (`revise_ckpt/`), in the release's own formats:
    `adapter/model.pt` ({"model_state_dict"} with DDP's `module.` prefixes), the VisionHead's
    `pytorch_model.bin`, `transformer/model.pt` (a DeepSpeed-style {"module": ...} holding `wan_model.*`,
    `adapter.*`, `ar_vision_head.*` and `visual_context_adapter.*`, which override the separate files),
    and the plain pickles of the boundary tokens and the unconditioned context."""
    folder = Path(folder)
    state = {k: v.clone() for k, v in connector.state_dict().items()}

    def part(prefix: str) -> dict[str, torch.Tensor]:
        return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}

    for relative in ("adapter", "vision_head/vision_head", "transformer", "special_tokens", "unconditioned_context"):
        (folder / relative).mkdir(parents=True, exist_ok=True)
    # The separate files hold other values for one tensor each: transformer/model.pt must win, as in the release.
    adapter = {f"module.{k}": v for k, v in part("dm_adapter.").items()}
    adapter["module.decoder_query"] = adapter["module.decoder_query"] + 1.0
    torch.save({"model_state_dict": adapter, "epoch": 3, "step": 1200}, folder / "adapter" / "model.pt")
    head = part("vision_head.")
    torch.save({**head, "fc.0.bias": head["fc.0.bias"] - 1.0}, folder / "vision_head/vision_head/pytorch_model.bin")
    module = {f"wan_model.{k}": v for k, v in (dit_original or {}).items()}
    module.update({f"adapter.{k}": v for k, v in part("dm_adapter.").items()})
    module.update({f"ar_vision_head.{k}": v for k, v in part("vision_head.").items()})
    module.update({f"visual_context_adapter.{k}": v for k, v in part("visual_context_adapter.").items()})
    torch.save({"module": module, "global_steps": 1200}, folder / "transformer" / "model.pt")
    tokens = {f"<{name}>": state[f"boundary.{name}"] for name in BOUNDARY_NAMES_RELEASE}
    with open(folder / "special_tokens" / "tokens.pkl", "wb") as handle:
        pickle.dump(tokens, handle)  # a plain pickle, as the release ships it
    # text_emb_siglip2 is read but unused on the release's v2v path; zeros of the DM_Adapter's input width
    context = {"text_emb_siglip2": [torch.zeros(3, connector.config.dm_adapter.in_dim)], "text_emb": [state["null.text"]],
               "vlm_last_hidden_states": state["null.vlm"][None]}
    with open(folder / "unconditioned_context" / "context.pkl", "wb") as handle:
        pickle.dump(context, handle)


def tiny_release_text_encoder(seed: int = 0, *, fixed_tokenizer: bool = False) -> TextEncoder:
    """umT5 as the release's `models_t5_umt5-xxl-enc-bf16.pth` holds it, scaled down: umt5-xxl's config
    (the official code fixes relative_attention_max_distance 128) with small sizes."""
    from transformers import UMT5Config, UMT5EncoderModel

    tokenizer = train_tokenizer("t5", fixed=fixed_tokenizer)
    config = {k: v for k, v in get_variant("umt5-xxl").load_config().items() if not k.startswith("_")}
    config.update(vocab_size=len(tokenizer), d_model=TEXT_DIM, d_kv=8, d_ff=64, num_layers=2, num_decoder_layers=2,
                  num_heads=4, relative_attention_num_buckets=8)
    with seeded(seed):
        model = UMT5EncoderModel(UMT5Config(**config))
        _randomize(model)
    return TextEncoder(model=model.eval(), tokenizer=tokenizer)


# How the kit writes the release's Wan config.json: "kit" adds text_dim (what earlier kits wrote); "official" is
# exactly what the official `WanModel.save_pretrained` writes (ReViSE's copy of Wan2.1's model.py: its __init__
# arguments without the `ignore_for_config` ones, text_dim among them, plus use_gradient_checkpointing).
WAN_CONFIG_STYLES = ("kit", "official")


def release_wan_config(dit: nn.Module, style: str = "kit") -> dict:
    """The original `WanModel` config.json of `dit` in one of WAN_CONFIG_STYLES."""
    if style not in WAN_CONFIG_STYLES:
        raise ValueError(f"config style must be one of {WAN_CONFIG_STYLES}, got '{style}'")
    cfg = dit.config
    data = {"_class_name": "WanModel", "_diffusers_version": "0.30.0", "model_type": "t2v", "text_len": 512,
            "in_dim": cfg.in_channels, "dim": cfg.num_attention_heads * cfg.attention_head_dim, "ffn_dim": cfg.ffn_dim,
            "freq_dim": cfg.freq_dim, "out_dim": cfg.out_channels, "num_heads": cfg.num_attention_heads,
            "num_layers": cfg.num_layers, "eps": cfg.eps}
    if style == "official":
        return {**data, "_diffusers_version": "0.31.0", "use_gradient_checkpointing": False}
    return {**data, "text_dim": cfg.text_dim}


def write_release_wan_folder(folder: str | Path, dit: nn.Module, vae: nn.Module, text: TextEncoder, *,
                             config_style: str = "kit", head_bias_offset: float = 1.0) -> None:
    """`revise_ckpt/wan/wanxiang1_3b` as Wan-AI ships it: an original `WanModel` config.json (`config_style`, see
    WAN_CONFIG_STYLES), the DiT in original keys, the umT5 `.pth`, its tokenizer under google/umt5-xxl, and
    `Wan2.1_VAE.pth`. The DiT's head bias is written off by `head_bias_offset` (transformer/model.pt holds the
    trained value and must win)."""
    from safetensors.torch import save_file

    folder = Path(folder)
    (folder / "google" / "umt5-xxl").mkdir(parents=True, exist_ok=True)
    # diffusers' save_config writes sorted keys, two-space indent and a final newline
    (folder / "config.json").write_text(json.dumps(release_wan_config(dit, config_style), indent=2, sort_keys=True)
                                        + "\n")
    original = wan_keys.dit_diffusers_to_original(dit.state_dict())
    original["head.head.bias"] = original["head.head.bias"] + head_bias_offset
    save_file({k: v.contiguous() for k, v in original.items()}, str(folder / "diffusion_pytorch_model.safetensors"))
    torch.save(hf_t5_to_wan(text.model.state_dict()), folder / "models_t5_umt5-xxl-enc-bf16.pth")
    text.tokenizer.save_pretrained(str(folder / "google" / "umt5-xxl"))
    torch.save(wan_keys.vae_diffusers_to_original(vae.state_dict()), folder / "Wan2.1_VAE.pth")


def tiny_clip(seed: int = 0):
    """A tiny CLIP (image and text towers) + tokenizer, for the benchmark's quality metrics."""
    from transformers import CLIPConfig, CLIPModel

    tokenizer = train_tokenizer("t5")  # appends </s>, which CLIP pools at
    config = CLIPConfig(
        text_config=dict(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=2, max_position_embeddings=77, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.pad_token_id),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                           image_size=32, patch_size=8),
        projection_dim=16,
    )
    with seeded(seed):
        model = CLIPModel(config)
    return model.eval(), tokenizer


def _randomize(module: nn.Module) -> None:
    """Overwrite every parameter/buffer that is saved with small random values (seeded by the caller)."""
    with torch.no_grad():
        for tensor in module.state_dict().values():
            if tensor.is_floating_point() and tensor.numel():
                tensor.copy_(torch.randn_like(tensor) * 0.1)


# --- writing a complete tiny model set ---------------------------------------------------------

@dataclass
class TinyModelSet:
    """One of each component, sized to fit together."""

    dit: nn.Module
    vae: nn.Module
    text: TextEncoder
    vlm: Qwen2VLModel
    connector: Connector
    vila: VilaModel
    release_connector: VisionHeadConnector
    release_text: TextEncoder


def tiny_model_set(seed: int = 0) -> TinyModelSet:
    """The models `write_tiny_models(dir, seed)` writes, rebuilt in memory (same seed, same weights)."""
    return TinyModelSet(
        dit=tiny_dit(seed), vae=tiny_vae(seed + 1), text=tiny_text_encoder(seed + 2), vlm=tiny_vlm(seed + 3),
        connector=tiny_connector(seed + 4), vila=tiny_vila(seed + 6), release_connector=tiny_release_connector(seed + 7),
        release_text=tiny_release_text_encoder(seed + 8),
    )


def write_tiny_models(out_dir: str | Path, seed: int = 0) -> dict:
    """Write every component in every supported layout under `out_dir`; return the manifest."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    entries: list[dict] = []

    def record(component: str, rel: str, layout: str, storage: str = "fp32", **extra: object) -> None:
        entries.append(dict(component=component, path=rel, layout=layout, storage=storage, **extra))

    configs = out / "configs"
    models = tiny_model_set(seed)
    dit, vae, text, vlm, connector = models.dit, models.vae, models.text, models.vlm, models.connector
    dit_config = {k: v for k, v in dict(dit.config).items() if not k.startswith("_")}
    vae_config = {k: v for k, v in dict(vae.config).items() if not k.startswith("_")}
    for name, data in (("dit", dit_config), ("vae", vae_config), ("t5", text.model.config.to_dict()),
                       ("connector", connector.config.to_dict())):
        (configs / name).mkdir(parents=True, exist_ok=True)
        (configs / name / "config.json").write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")

    # DiT
    dit.save_pretrained(str(out / "dit" / "diffusers"), safe_serialization=True)
    record("dit", "dit/diffusers", "diffusers-folder")
    save_dit(dit, out / "dit" / "wan_tiny.safetensors")
    record("dit", "dit/wan_tiny.safetensors", "wan")
    save_dit(dit, out / "dit" / "wan_tiny_comfyui.safetensors", comfyui_prefix=True)
    record("dit", "dit/wan_tiny_comfyui.safetensors", "wan-comfyui")
    ckpt.save_safetensors(dit.state_dict(), out / "dit" / "diffusers_keys_tiny.safetensors",
                          format_name="revise.dit.diffusers", config=dit_config)
    record("dit", "dit/diffusers_keys_tiny.safetensors", "diffusers")
    original = wan_keys.dit_diffusers_to_original(dit.state_dict())
    for storage, dtype in (("fp16", torch.float16), ("bf16", torch.bfloat16), ("fp8_e4m3fn", torch.float8_e4m3fn)):
        rel = f"dit/wan_tiny_{storage}.safetensors"
        # fp16 is written as ComfyUI repackages it (prefixed); the others bare.
        prefix = wan_keys.COMFYUI_DIT_PREFIX if storage == "fp16" else ""
        ckpt.save_safetensors({prefix + k: v.to(dtype) for k, v in original.items()}, out / rel,
                              format_name="revise.dit.wan", config=dit_config)
        record("dit", rel, "wan-comfyui" if storage == "fp16" else "wan", storage)
    scaled = _scaled_fp8(original)
    ckpt.save_safetensors(scaled, out / "dit" / "wan_tiny_fp8_scaled.safetensors",
                          format_name="revise.dit.wan", config=dit_config)
    record("dit", "dit/wan_tiny_fp8_scaled.safetensors", "wan", "fp8_e4m3fn_scaled")

    # LoRAs for that DiT (and the release's, which has its shapes), in every layout users download
    from .loras import LAYOUTS, write_tiny_lora

    for index, layout in enumerate(LAYOUTS):
        rel = f"loras/wan_tiny_{layout.replace('-', '_')}_lora.safetensors"
        write_tiny_lora(out / rel, dit, layout, seed=seed + 11 + index)
        record("lora", rel, layout)

    # VAE
    vae.save_pretrained(str(out / "vae" / "diffusers"), safe_serialization=True)
    record("vae", "vae/diffusers", "diffusers-folder")
    save_vae(vae, out / "vae" / "wan_2.1_vae_tiny.safetensors")
    record("vae", "vae/wan_2.1_vae_tiny.safetensors", "wan")
    torch.save(wan_keys.vae_diffusers_to_original(vae.state_dict()), out / "vae" / "Wan2.1_VAE_tiny.pth")
    record("vae", "vae/Wan2.1_VAE_tiny.pth", "wan", config="configs/vae")

    # umT5
    save_text_encoder(text, out / "t5" / "hf")
    record("t5", "t5/hf", "hf-folder")
    text.tokenizer.save_pretrained(str(out / "t5" / "tokenizer"))
    hf_weights = {k: v for k, v in text.model.state_dict().items() if k != "encoder.embed_tokens.weight"}
    # ComfyUI's text-encoder files carry the tokenizer model as a uint8 tensor; include one.
    hf_weights["spiece_model"] = torch.frombuffer(bytearray(b"tokenizer-blob"), dtype=torch.uint8)
    ckpt.save_safetensors(hf_weights, out / "t5" / "umt5_tiny.safetensors", format_name="revise.t5.hf",
                          config=text.model.config.to_dict())
    record("t5", "t5/umt5_tiny.safetensors", "hf", tokenizer="t5/tokenizer")
    torch.save(hf_t5_to_wan(text.model.state_dict()), out / "t5" / "models_t5_umt5_tiny_enc.pth")
    record("t5", "t5/models_t5_umt5_tiny_enc.pth", "wan", tokenizer="t5/tokenizer", config="configs/t5")

    # VLM (Hugging Face folder, with the preprocessing configs a real folder has)
    vlm_dir = out / "vlm" / "tiny-qwen2_5-vl"
    vlm.model.save_pretrained(str(vlm_dir), safe_serialization=True)
    vlm.tokenizer.save_pretrained(str(vlm_dir))
    preprocess = TINY_PREPROCESS.to_processor_config()
    for name in ("preprocessor_config.json", "video_preprocessor_config.json"):
        (vlm_dir / name).write_text(json.dumps(preprocess, indent=2) + "\n")
    record("vlm", "vlm/tiny-qwen2_5-vl", "hf-folder")

    # VILA in the ReViSE release's folder format (revise_ckpt/ar_model/checkpoint)
    vila.save(models.vila, out / VILA_CHECKPOINT)
    record("vlm", VILA_CHECKPOINT, "vila")

    # The rest of the ReViSE release folder: VisionHead, DM_Adapter, visual adapter (+ DiT), tokens, null context,
    # and Wan's own folder (its DiT weights differ in one tensor: transformer/model.pt must win)
    release = out / "revise_ckpt"
    write_release_connector(release, models.release_connector, original)
    write_release_wan_folder(release / "wan" / "wanxiang1_3b", dit, vae, models.release_text, config_style="official")
    record("model_set", "revise_ckpt", "revise release")

    # CLIP-family image/text encoder for the benchmark's video-quality metrics
    clip, clip_tokenizer = tiny_clip(seed + 5)
    clip_dir = out / "clip" / "tiny-clip"
    clip.save_pretrained(str(clip_dir), safe_serialization=True)
    clip_tokenizer.save_pretrained(str(clip_dir))
    (clip_dir / "preprocessor_config.json").write_text(json.dumps(
        {"image_mean": list(TINY_PREPROCESS.image_mean), "image_std": list(TINY_PREPROCESS.image_std),
         "crop_size": 32, "size": 32}, indent=2) + "\n")
    record("clip", "clip/tiny-clip", "hf-folder")

    # Connector: ours, and the Omni-Video 2 checkpoint (DiT + connector in one .pt, tokens in a .pkl)
    save_connector(connector, out / "connector" / "revise_connector_tiny.safetensors")
    record("connector", "connector/revise_connector_tiny.safetensors", "revise")
    omni = {f"wan_model.{k}": v for k, v in original.items()}
    omni.update({k: v for k, v in connector.state_dict().items() if not k.startswith("boundary.")})
    (out / "omnivideo2" / "transformer").mkdir(parents=True, exist_ok=True)
    torch.save(omni, out / "omnivideo2" / "transformer" / "pytorch_model.pt")
    tokens = {f"<{name}>": connector.boundary_token(name).clone() for name in BOUNDARY_NAMES}
    with open(out / "omnivideo2" / "special_tokens.pkl", "wb") as handle:
        pickle.dump(tokens, handle)  # the format Omni-Video 2 ships; read back without full unpickling
    record("dit", "omnivideo2/transformer/pytorch_model.pt", "omnivideo", config="configs/dit")
    record("connector", "omnivideo2/transformer/pytorch_model.pt", "omnivideo2", config="configs/connector",
           special_tokens="omnivideo2/special_tokens.pkl")

    # One layout per component, as a user's models.json would name them (for the editor and the demos).
    write_models_file(out, {
        "dit": "dit/wan_tiny_comfyui.safetensors", "vae": "vae/wan_2.1_vae_tiny.safetensors",
        "t5": "t5/umt5_tiny.safetensors", "t5_tokenizer": "t5/tokenizer", "vlm": "vlm/tiny-qwen2_5-vl",
        "connector": "connector/revise_connector_tiny.safetensors",
    })
    manifest = {"seed": seed, "format": 1, "files": entries,
                "configs": {name: f"configs/{name}" for name in ("dit", "vae", "t5", "connector")}}
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    logger.info("wrote %d tiny model files under %s", len(entries), out)
    return manifest


def _scaled_fp8(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """ComfyUI-style scaled fp8: 2-D weights stored as fp8 / scale, with a scalar scale per layer."""
    out: dict[str, torch.Tensor] = {"scaled_fp8": torch.zeros(0, dtype=torch.float8_e4m3fn)}
    for key, tensor in state_dict.items():
        if key.endswith(".weight") and tensor.ndim == 2:
            scale = tensor.abs().max().clamp(min=1e-12) / 448.0  # 448 = largest e4m3fn value
            out[key] = (tensor / scale).to(torch.float8_e4m3fn)
            out[key[: -len(".weight")] + ".scale_weight"] = scale.reshape(()).float()
        else:
            out[key] = tensor
    return out

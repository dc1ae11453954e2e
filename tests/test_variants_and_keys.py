"""Shipped variants describe the real models; key maps round-trip through diffusers' converters."""

from __future__ import annotations

import torch

from revise_core import checkpoints as ckpt
from revise_core import wan_keys
from revise_core.component_loading import _match_variant
from revise_core.dit import DIT_SPEC
from revise_core.text import hf_t5_to_wan, wan_t5_to_hf
from revise_core.variants import KNOWN_VARIANTS, get_variant, variants_for


def _meta_state(model_class, config):
    from accelerate import init_empty_weights

    with init_empty_weights():
        model = model_class.from_config({k: v for k, v in config.items() if not k.startswith("_")})
    return model


def _param_count(module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_shipped_wan_configs_have_the_published_sizes():
    from diffusers import AutoencoderKLWan, WanTransformer3DModel

    assert _param_count(_meta_state(WanTransformer3DModel, get_variant("wan2.1-t2v-1.3b").load_config())) == 1_418_996_800
    assert _param_count(_meta_state(WanTransformer3DModel, get_variant("wan2.1-t2v-14b").load_config())) == 14_288_491_584
    vae = _meta_state(AutoencoderKLWan, get_variant("wan2.1-vae").load_config())
    assert 126_000_000 < _param_count(vae) < 128_000_000
    assert vae.config.latents_mean[0] == -0.7571 and vae.config.latents_std[-1] == 1.916


def test_shipped_umt5_config_is_umt5_xxl():
    from accelerate import init_empty_weights
    from transformers import UMT5Config, UMT5EncoderModel

    with init_empty_weights():
        model = UMT5EncoderModel(UMT5Config.from_dict(get_variant("umt5-xxl").load_config()))
    assert model.config.d_model == 4096 and model.config.num_layers == 24 and model.config.vocab_size == 256384
    model.tie_weights()  # as the loader does: the encoder's embedding is the shared one
    assert 5.6e9 < _param_count(model) < 5.8e9


def test_real_size_state_dicts_are_identified_by_exact_match():
    """Meta tensors stand in for a real 1.3B / 14B file: only names and shapes are compared."""
    from diffusers import WanTransformer3DModel

    for name in ("wan2.1-t2v-1.3b", "wan2.1-t2v-14b"):
        variant = get_variant(name)
        state = _meta_state(WanTransformer3DModel, variant.load_config()).state_dict()
        assert _match_variant(DIT_SPEC, WanTransformer3DModel, state, "x", KNOWN_VARIANTS) == variant.load_config()


def test_every_component_has_a_variant():
    for component in ("dit", "vae", "t5", "connector"):
        assert variants_for(component)


def test_dit_key_maps_round_trip(tiny_models):
    state = tiny_models.dit.state_dict()
    original = wan_keys.dit_diffusers_to_original(state)
    assert "head.modulation" in original and "blocks.0.norm3.weight" in original
    assert "blocks.0.cross_attn.o.weight" in original and "time_projection.1.weight" in original
    back = wan_keys.dit_original_to_diffusers(original)
    assert back.keys() == state.keys()
    assert all(back[k] is state[k] for k in state)
    prefixed = {wan_keys.COMFYUI_DIT_PREFIX + k: v for k, v in original.items()}
    assert wan_keys.dit_original_to_diffusers(prefixed).keys() == state.keys()


def test_vae_key_maps_round_trip(tiny_models):
    state = tiny_models.vae.state_dict()
    original = wan_keys.vae_diffusers_to_original(state)
    assert {"encoder.conv1.weight", "decoder.head.2.weight", "conv2.weight", "decoder.upsamples.3.resample.1.weight",
            "decoder.upsamples.4.shortcut.weight", "encoder.middle.1.to_qkv.weight"} <= original.keys()
    back = wan_keys.vae_original_to_diffusers(original)
    assert back.keys() == state.keys() and all(back[k] is state[k] for k in state)


def test_t5_key_maps_round_trip(tiny_models):
    state = tiny_models.text.model.state_dict()
    wan = hf_t5_to_wan(state)
    assert {"token_embedding.weight", "norm.weight", "blocks.1.ffn.gate.0.weight", "blocks.1.ffn.fc1.weight",
            "blocks.0.pos_embedding.embedding.weight"} <= wan.keys()
    assert torch.equal(wan["blocks.1.ffn.gate.0.weight"], state["encoder.block.1.layer.1.DenseReluDense.wi_0.weight"])
    back = wan_t5_to_hf(wan)
    assert back.keys() == state.keys() - {"encoder.embed_tokens.weight"}


def test_scaled_fp8_is_folded_into_the_weights():
    weight = torch.tensor([[1.0, -2.0], [0.5, 4.0]])
    scale = torch.tensor(0.25)
    stored = {"scaled_fp8": torch.zeros(0, dtype=torch.float8_e4m3fn), "lin.weight": (weight / scale).to(torch.float8_e4m3fn),
              "lin.scale_weight": scale, "lin.scale_input": torch.tensor(1.0), "lin.bias": torch.ones(2)}
    folded = ckpt.fold_fp8_scales(stored)
    assert set(folded) == {"lin.weight", "lin.bias"}
    assert torch.equal(folded["lin.weight"], weight)

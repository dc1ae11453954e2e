"""A whole Omni-Video 2 edit (`omnivideo2-official`) under the stream placement, simulated on fake tensors.

The preset: 41 frames 480x832, UniPC 40 steps with standard guidance against umT5 of the release's negative
prompt, contexts padded to 6272 rows, caption reasoning (the VLM writes a source caption from 6 frames, then
a target caption from it and the instruction, each up to `caption_tokens` = 512 tokens, greedy), u from the
feature pass (6 frames at the release's feature-pass pixel budget), umT5 over [target caption; instruction].
Models: Qwen3-VL-30B-A3B (MoE: 48 layers of 128 experts, 8 per token) built from configs/models at real size,
the Omni-Video 2 connector, Wan2.1-1.3B, umT5-XXL, the Wan VAE, all bf16.

What the fake run cannot follow is replaced, and named here:
- MoE routing: which experts a token picks depends on values fake tensors do not have. Each layer's experts
  run transformers' own loop (gather, gate-up, SiLU, down, weight, index_add) over a balanced assignment: the
  tokens x 8 picks spread evenly over the experts (the FLOPs of any routing; the temporaries of an even one).
- Generation: each caption is its prefill (the prompt, with the KV cache) plus one decode step with the cache,
  repeated `caption_tokens - 1` times (FLOPs and streamed transfers x 511: every decode step streams the whole
  VLM through the device). The real captions stop at the end token, usually earlier: the figures are the
  preset's bound.
- The target caption's prompt holds a 512-token source caption (filler words of the test kit's tokenizer).
"""

from __future__ import annotations

import contextlib
import time
import types
from collections.abc import Iterator
from unittest import mock

import torch

CAPTION_TOKENS = 512  # omnivideo2-official caption_tokens (the bound on each generated caption)
VLM_FRAMES = 6
CONTEXT_LEN = 6272
TEXT_LEN = 512
STEPS = 40
GUIDANCE = 3.0
FPS = 16.0
INSTRUCTION = "make the car red"
VLM_NAME = "qwen3-vl-30b-a3b"
QWEN3_MOE_ROPE = ("transformers.models.qwen3_vl_moe.modeling_qwen3_vl_moe", "Qwen3VLMoeModel", "get_rope_index")


def _balanced_experts(self, hidden_states: torch.Tensor, top_k_index: torch.Tensor,
                      top_k_weights: torch.Tensor) -> torch.Tensor:
    """Qwen3VLMoeTextExperts.forward over an even assignment of the tokens' picks to the experts."""
    tokens, picks = hidden_states.shape[0], top_k_index.shape[1]
    total = tokens * picks
    final = torch.zeros_like(hidden_states)
    hit = min(self.num_experts, total)
    start = 0
    for expert in range(hit):
        count = total // hit + (1 if expert < total % hit else 0)
        token_idx = torch.arange(start, start + count) % tokens
        start += count
        current = hidden_states[token_idx]
        gate, up = torch.nn.functional.linear(current, self.gate_up_proj[expert]).chunk(2, dim=-1)
        current = torch.nn.functional.linear(self.act_fn(gate) * up, self.down_proj[expert])
        current = current * top_k_weights[token_idx, 0, None]
        final.index_add_(0, token_idx, current.to(final.dtype))
    return final


@contextlib.contextmanager
def fake_context() -> Iterator:
    """bench/whole_edit.fake_context with Qwen3-VL-MoE's rope index computed on real values too."""
    from bench import fake_measure
    from bench.whole_edit import fake_context as base

    with mock.patch.object(fake_measure, "REAL_HELPERS", fake_measure.REAL_HELPERS + (QWEN3_MOE_ROPE,)):
        with base() as mode:
            yield mode


def build_vlm(mode):
    """Qwen3-VL-30B-A3B at real size in bf16 with the test kit's tokenizer (its ids pointed at the config's)."""
    from transformers import Qwen3VLMoeConfig, Qwen3VLMoeForConditionalGeneration

    from bench.fake_measure import default_dtype
    from bench.project_composition import _config
    from revise_core.testing import VLM_SPECIAL_TOKENS, train_tokenizer
    from revise_core.testing.omnivideo2 import TIMESTAMP_TEXT
    from revise_core.vlm.qwen3_vl import Qwen3VLModel, VideoPreprocessConfig

    tokenizer = train_tokenizer("vlm", TIMESTAMP_TEXT)
    ids = {name: tokenizer.convert_tokens_to_ids(name) for name in VLM_SPECIAL_TOKENS}
    data = _config(VLM_NAME)
    text = dict(data["text_config"], bos_token_id=ids["<|endoftext|>"], eos_token_id=ids["<|im_end|>"],
                pad_token_id=ids["<|endoftext|>"])
    config = Qwen3VLMoeConfig(
        text_config=text, vision_config=data["vision_config"], image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"], vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"], tie_word_embeddings=False)
    for sub in (config, config.text_config, config.vision_config):
        sub._attn_implementation = "sdpa"
    with default_dtype(torch.bfloat16):
        model = Qwen3VLMoeForConditionalGeneration(config)
    model.eval().requires_grad_(False)
    experts = 0
    for module in model.modules():
        if type(module).__name__ == "Qwen3VLMoeTextExperts":
            module.forward = types.MethodType(_balanced_experts, module)
            experts += 1
    if not experts:
        raise AssertionError("no Qwen3VLMoeTextExperts found: the transformers MoE layout changed")
    return Qwen3VLModel(model=model, tokenizer=tokenizer, preprocess=VideoPreprocessConfig())


def _fake_inputs(mode, inputs):
    from bench.whole_edit import to_fake

    for key, value in list(inputs.kwargs.items()):
        if isinstance(value, torch.Tensor):
            inputs.kwargs[key] = to_fake(mode, value, constant=not value.is_floating_point())
    return inputs


def build(mode, frames: int = 41, height: int = 480, width: int = 832):
    """The five models on the fake device and the edit's inputs (built from real frames where the VLM's
    preprocessing needs values)."""
    from diffusers import AutoencoderKLWan, WanTransformer3DModel
    from torch._subclasses.fake_tensor import unset_fake_temporarily
    from transformers import UMT5Config, UMT5EncoderModel

    from bench.fake_measure import default_dtype
    from bench.project_composition import _config, build_connector
    from revise_core.vlm.qwen3_vl import OMNIVIDEO2_CAPTION_PIXELS, OMNIVIDEO2_FEATURE_PIXELS, omnivideo2_prompts

    bf16 = torch.bfloat16
    vlm = build_vlm(mode)
    prompts = omnivideo2_prompts()
    with unset_fake_temporarily():
        source = torch.zeros(frames, height, width, 3)
        video = vlm.prepare_frames(source, VLM_FRAMES, FPS)
        caption_source = vlm.build_inputs(
            [{"role": "system", "content": prompts["source_caption_system"]},
             {"role": "user", "content": [{"type": "video"}, {"type": "text", "text": prompts["source_caption_user"]}]}],
            [video], fps=FPS, video_pixels=OMNIVIDEO2_CAPTION_PIXELS)
        filler = " ".join(["red"] * CAPTION_TOKENS)  # a source caption of the preset's bound
        caption_target = vlm.build_inputs(
            [{"role": "system", "content": prompts["target_caption_system"]},
             {"role": "user", "content": [{"type": "text", "text": prompts["target_caption_user"].format(
                 source=filler, instruction=INSTRUCTION)}]}], [], fps=FPS)
        feature = vlm.build_inputs(
            [{"role": "system", "content": prompts["feature_extraction_system"]},
             {"role": "user", "content": [{"type": "video"}, {"type": "text", "text": INSTRUCTION}]}],
            [vlm.prepare_frames(source, VLM_FRAMES, FPS)], fps=FPS, video_pixels=OMNIVIDEO2_FEATURE_PIXELS)
        lengths = dict(caption_source=caption_source.kwargs["input_ids"].shape[1],
                       caption_target=caption_target.kwargs["input_ids"].shape[1],
                       feature=feature.kwargs["input_ids"].shape[1] - feature.prefix_len)
    for inputs in (caption_source, caption_target, feature):
        _fake_inputs(mode, inputs)
    video_tokens = ((frames - 1) // 4 + 1) * (height // 32) * (width // 32)
    with default_dtype(bf16):
        dit = WanTransformer3DModel.from_config(_config("wan2.1-t2v-1.3b"))
        connector = build_connector("omnivideo2", vlm.hidden_size, video_tokens, lengths["feature"])
        vae = AutoencoderKLWan.from_config(_config("wan2.1-vae"))
        t5 = UMT5EncoderModel(UMT5Config(**_config("umt5-xxl")))
    t5.tie_weights()
    models = dict(vae=vae, vlm=vlm.model, t5=t5, connector=connector, dit=dit)
    for model in models.values():
        model.eval().requires_grad_(False)
    state = dict(pixels=torch.empty(1, 3, frames, height, width, dtype=bf16),
                 caption_source=caption_source, caption_target=caption_target, feature=feature,
                 t5_ids=torch.zeros(2, TEXT_LEN, dtype=torch.long), t5_mask=torch.ones(2, TEXT_LEN, dtype=torch.long),
                 negative_ids=torch.zeros(1, TEXT_LEN, dtype=torch.long),
                 negative_mask=torch.ones(1, TEXT_LEN, dtype=torch.long),
                 next_token=torch.zeros(1, 1, dtype=torch.long),
                 noise=torch.randn(1, 16, (frames - 1) // 4 + 1, height // 8, width // 8))
    return models, state, vlm, lengths


def stages(models: dict, vlm, lengths: dict) -> list:
    from bench.placement_sim import Stage
    from revise_core import vae as vae_ops
    from revise_core.text import pad_context

    vae, t5, connector, dit, model = models["vae"], models["t5"], models["connector"], models["dit"], models["vlm"]
    bf16 = torch.bfloat16

    def vae_encode(state):
        state["raw"] = vae_ops.encode(vae, state["pixels"])

    def prefill(key):
        def run(state):
            vlm.reset_state()
            output = model(**state[key].kwargs, use_cache=True, logits_to_keep=1)
            state[key + "_cache"] = output.cache if getattr(output, "cache", None) is not None else output.past_key_values
        return run

    def decode(key):
        def run(state):  # one greedy step as generate() calls it (the token's id and positions do not change the cost)
            cache = state[key + "_cache"]
            past = cache.get_seq_length()
            model(input_ids=state["next_token"], cache=cache, position_ids=torch.full((4, 1, 1), past),
                  mm_token_type_ids=torch.zeros(1, 1, dtype=torch.long), use_cache=True, logits_to_keep=1)
        return run

    def drop_caches(state):
        state.pop("caption_source_cache", None)
        state.pop("caption_target_cache", None)

    def feature(state):
        drop_caches(state)
        vlm.reset_state()
        inputs = state["feature"]
        state["u"] = vlm.forward(inputs, hidden_states=True).hidden_states[inputs.prefix_len:]

    def umt5(state):
        hidden = t5(state["t5_ids"], state["t5_mask"]).last_hidden_state  # [target caption; instruction]
        state["text"] = torch.cat([hidden[0, :CAPTION_TOKENS], hidden[1, :8]])
        state["negative"] = t5(state["negative_ids"], state["negative_mask"]).last_hidden_state[0, :TEXT_LEN]

    def connector_pass(state):
        latents = vae_ops.normalize_latents(vae, state["raw"].float())
        video = connector.adapt_video(latents.to(bf16))[0]
        cond = connector.assemble(connector.project_vlm(state["u"].to(video)), state["text"].to(video), video)
        state["cond"] = pad_context(cond, CONTEXT_LEN)[None]
        state["uncond"] = pad_context(connector.negative_context(state["negative"].to(video), video), CONTEXT_LEN)[None]
        state["latents"] = state["noise"].clone()

    def sampling_step(state):  # guidance mode standard, in the model's dtype
        latents = state["latents"]
        timestep = torch.tensor([500.0])
        cond = dit(hidden_states=latents.to(bf16), timestep=timestep, encoder_hidden_states=state["cond"],
                   return_dict=False)[0]
        uncond = dit(hidden_states=latents.to(bf16), timestep=timestep, encoder_hidden_states=state["uncond"],
                     return_dict=False)[0]
        state["latents"] = latents - (1.0 / STEPS) * (uncond + GUIDANCE * (cond - uncond)).float()

    def vae_decode(state):
        state["frames"] = vae_ops.decode(vae, vae_ops.denormalize_latents(vae, state["latents"]))

    decode_steps = CAPTION_TOKENS - 1
    return [
        Stage("VAE encode", ("vae",), vae_encode),
        Stage(f"VLM source caption: prefill ({lengths['caption_source']} tokens)", ("vlm",), prefill("caption_source")),
        Stage(f"VLM source caption: decode x {decode_steps}", ("vlm",), decode("caption_source"), repeat=decode_steps),
        Stage(f"VLM target caption: prefill ({lengths['caption_target']} tokens)", ("vlm",), prefill("caption_target")),
        Stage(f"VLM target caption: decode x {decode_steps}", ("vlm",), decode("caption_target"), repeat=decode_steps),
        Stage("VLM feature pass (u)", ("vlm",), feature),
        Stage("umT5 encode (caption + instruction, negative prompt)", ("t5",), umt5),
        Stage("connector", ("connector",), connector_pass),
        Stage(f"DiT x {STEPS} steps (cond + uncond)", ("dit",), sampling_step, repeat=STEPS),
        Stage("VAE decode", ("vae",), vae_decode),
    ]


def measure(key: str = "omnivideo2-stream"):
    """The row: Omni-Video 2's whole edit under the stream placement (target: device <= 24 GiB)."""
    from bench.placement_sim import simulate
    from bench.whole_edit import HOST_TO_DEVICE_BYTES_PER_S, STREAM, EditPlacement, edit_row

    placement = EditPlacement("Omni-Video 2, stream", STREAM, target="device <= 24 GiB", device_target_gib=24)
    frames, height, width = 41, 480, 832
    started = time.perf_counter()
    with fake_context() as mode, torch.no_grad():
        models, state, vlm, lengths = build(mode, frames, height, width)
        result = simulate(models, placement.modes, stages(models, vlm, lengths), state)
    per_token = result.weights["vlm"] / HOST_TO_DEVICE_BYTES_PER_S
    notes = list(result.notes) + [
        f"the VLM is streamed through the device once per generated token: {per_token:.1f} s of transfer per "
        f"caption token at {HOST_TO_DEVICE_BYTES_PER_S / 1e9:.0f} GB/s ({2 * (CAPTION_TOKENS - 1)} decode steps "
        "at the preset's 512-token bound)",
        "MoE routing balanced over the experts, generation as prefill + one decode step x 511 (bench/omnivideo2_edit.py)"]
    return edit_row(placement, result, size=(frames, height, width), vlm=VLM_NAME, notes=notes, started=started,
                    key=key, method="simulated: fake tensors, weights moved per stage (MoE routing balanced, generation "
                                    "as prefill + decode step x 511)")

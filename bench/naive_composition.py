"""The naive USO step that was measured on an H100, rebuilt for the fake-tensor cost model.

Exactly the composition measured on an H100 (`bench/results/h100_naive_uso/`; its results are the validation
targets): Wan2.1-1.3B DiT, Wan2.1 VAE and Qwen2.5-VL-7B all resident in bf16, AdamW on the bf16 DiT, a
512-token text context, the critic on 4 source frames and the first 4 frames decoded from 2 latent frames of
x̂0 (with the VAE's clamp), at the critic size 28 * round(side / 28). No checkpointing anywhere.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

QWEN_VISION = dict(depth=32, hidden_size=1280, intermediate_size=3420, num_heads=16, out_hidden_size=3584,
                   fullatt_block_indexes=[7, 15, 23, 31], window_size=112)
QWEN_TEXT = dict(hidden_size=3584, intermediate_size=18944, num_hidden_layers=28, num_attention_heads=28,
                 num_key_value_heads=4, vocab_size=152064,
                 rope_parameters={"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": [16, 24, 24]})
WAN_13B = dict(num_attention_heads=12, attention_head_dim=128, ffn_dim=8960, num_layers=30, text_dim=4096,
               freq_dim=256)
YES, NO = 9454, 2753  # "Yes" / "No" in the Qwen2 vocabulary (as the anchor reads them)


def setup(frames: int, height: int, width: int, *, step: str) -> dict:
    """Models, optimizer and inputs of the anchor, built in the current (fake) mode in bf16."""
    from diffusers import AutoencoderKLWan, WanTransformer3DModel
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    from bench.fake_measure import default_dtype

    with default_dtype(torch.bfloat16):
        dit = WanTransformer3DModel(**WAN_13B)
        vae = AutoencoderKLWan()
        config = Qwen2_5_VLConfig(vision_config=QWEN_VISION, text_config=QWEN_TEXT)
        config._attn_implementation = "sdpa"
        vlm = Qwen2_5_VLForConditionalGeneration(config).eval()
    vae.requires_grad_(False)
    vlm.requires_grad_(False)
    optimizer = torch.optim.AdamW(dit.parameters(), lr=3e-6, weight_decay=1e-4) if step != "edit" else None
    latent = (1, 16, (frames - 1) // 4 + 1, height // 8, width // 8)
    state = dict(dit=dit, vae=vae, vlm=vlm, config=config, optimizer=optimizer,
                 x0=torch.randn(latent, dtype=torch.bfloat16),
                 text=torch.randn(1, 512, dit.config.text_dim, dtype=torch.bfloat16),
                 source=torch.rand(4, 3, height, width, dtype=torch.bfloat16) * 2 - 1,
                 critic_size=(28 * round(height / 28), 28 * round(width / 28)))
    state["tracked"] = [m for m in (dit, vae, vlm, optimizer) if m is not None] + [state["x0"], state["text"],
                                                                                   state["source"]]
    return state


def _patchify(frames: torch.Tensor, patch: int = 14, temporal: int = 2, merge: int = 2):
    count, channels, height, width = frames.shape
    gt, gh, gw = count // temporal, height // patch, width // patch
    x = frames.reshape(gt, temporal, channels, gh // merge, merge, patch, gw // merge, merge, patch)
    x = x.permute(0, 3, 6, 4, 7, 2, 1, 5, 8)
    return x.reshape(gt * gh * gw, channels * temporal * patch * patch), (gt, gh, gw)


def critic_logit(state: dict, source: torch.Tensor, edited: torch.Tensor, prompt_len: int = 160) -> torch.Tensor:
    """The anchor's Yes - No logit for (source, edited) frames [T, 3, H, W] in -1..1."""
    vlm, config = state["vlm"], state["config"]
    mean = torch.tensor([0.48145466, 0.4578275, 0.40821073]).view(1, 3, 1, 1)
    std = torch.tensor([0.26862954, 0.26130258, 0.27577711]).view(1, 3, 1, 1)
    patches, grids = [], []
    for video in (source, edited):
        video = F.interpolate(video.float(), size=state["critic_size"], mode="bilinear", align_corners=False)
        video = ((video + 1) / 2 - mean) / std
        values, grid = _patchify(video)
        patches.append(values)
        grids.append(grid)
    pixel_values = torch.cat(patches).to(source.dtype)
    ids = [1000] * 20
    for gt, gh, gw in grids:
        ids += [config.vision_start_token_id] + [config.video_token_id] * (gt * gh * gw // 4) + [config.vision_end_token_id]
    ids = torch.tensor([ids + [2000] * prompt_len])
    out = vlm(input_ids=ids, attention_mask=torch.ones_like(ids), pixel_values_videos=pixel_values,
              video_grid_thw=torch.tensor(grids))
    last = out.logits[0, -1].float()
    return last[YES] - last[NO]


def train_step(state: dict, *, with_critic: bool) -> None:
    dit, vae, optimizer, x0 = state["dit"], state["vae"], state["optimizer"], state["x0"]
    t = torch.rand(()) * (0.5 if with_critic else 1.0)
    noise = torch.randn_like(x0)
    z_t = (1 - t) * x0 + t * noise
    velocity = dit(z_t, (t * 1000).reshape(1), state["text"], return_dict=False)[0]
    loss = F.mse_loss(velocity.float(), (noise - x0).float())
    if with_critic:
        estimate = z_t - t * velocity
        pixels = vae.decode(estimate[:, :, :2], return_dict=False)[0]  # 2 latent frames -> 5 frames
        frames = pixels[0].permute(1, 0, 2, 3)[:4]
        with torch.no_grad():
            base = critic_logit(state, state["source"], state["source"])
        relative = critic_logit(state, state["source"], frames) - base
        loss = loss + 0.25 * F.softplus(-relative)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(dit.parameters(), 0.1)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def edit_step(state: dict) -> None:
    """One guided denoising step: cond and uncond as a batch of two, no gradient."""
    with torch.no_grad():
        z_t = torch.randn_like(state["x0"])
        state["dit"](torch.cat([z_t, z_t]), torch.tensor([500.0, 500.0]), torch.cat([state["text"], state["text"]]),
                     return_dict=False)


def step_function(step: str):
    return {"edit": edit_step, "sft": lambda s: train_step(s, with_critic=False),
            "uso": lambda s: train_step(s, with_critic=True)}[step]

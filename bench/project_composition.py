"""The project's own edit and training steps at real size, for the fake-tensor cost model.

The training step is `trainer.step.loss_parts` (what `python -m trainer.uso` runs per sample) on the
project's Generator (Wan2.1-1.3B DiT + connector), its SelfCritic and its VAE decode, followed by
backward, gradient clipping and the AdamW step, under bf16 autocast. The trained modules keep fp32 master
weights (as the trainer does); the frozen ones are stored in `frozen_dtype`. The edit step is one guided
sampler step (conditional then unconditional DiT call) with every model of the editor resident in bf16.

`Settings` holds one switch per memory feature, so that the cost model can add them one at a time.
Deliberate simplifications (stated in docs/performance.md): umT5 tokens and u come from the feature cache
(their lengths are typical ones, below), the critic's Δ_base is cached (the trainer computes it once per
sample), and the tokenizers are the test kit's with the real models' vocabulary sizes.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

import torch

TEXT_TOKENS = 128  # umT5 tokens of an instruction (the trainer trims them to their true length)
SIGMA = 0.3  # inside σ_max: the critic runs


@dataclass(frozen=True)
class Settings:
    """One training-memory feature per field (USOConfig names where the trainer has the switch)."""

    frozen_dtype: str = "fp32"  # storage of the frozen VAE / umT5 / VLM ("bf16": frozen_dtype=auto on a GPU)
    t5_resident: bool = True  # umT5 on the GPU during training steps (offload_text_encoder=false)
    checkpointing_dit: bool = False
    checkpointing_vlm: bool = False
    checkpointing_vae: bool = False
    critic_decode: str = "video"  # video: decode a latent prefix | frames: critic_frames latent frames, one by one
    decode_latent_frames: int = 0  # 0: decode every latent frame of x̂0 for the critic
    critic_frames: int = 4
    train: str = "full"  # full | lora (bench/train_memory.add_lora: PEFT's LoRA as a forward hook)
    vlm_storage: str = "compute"  # compute | int8 (torchao int8 weight-only Linear layers, bench/whole_edit.store_int8)
    optimizer: str = "adamw"  # adamw (torch, fp32 states) | adamw8bit (torchao's states, bench/train_memory)
    # device | host: offload_connector_heads, the frozen VLM projection computed with the cached features (its
    # output is a feature; its weights are not on the device during the step)
    connector_heads: str = "device"

    def describe(self) -> dict:
        return asdict(self)


def _config(name: str) -> dict:
    from revise_core.variants import get_variant

    return {k: v for k, v in get_variant(name).load_config().items() if not k.startswith("_")}


def build_vlm(name: str, dtype: torch.dtype):
    """A real-size VLM of a supported family with the test kit's tokenizer (token ids pointed at its own)."""
    from bench.fake_measure import default_dtype

    if name == "qwen2.5-vl-7b":
        from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

        from revise_core.testing import train_tokenizer
        from revise_core.vlm.qwen2_vl import Qwen2VLModel, VisionPreprocessConfig

        tokenizer = train_tokenizer("vlm")
        data = _config(name)
        for key, token in (("image_token_id", "<|image_pad|>"), ("video_token_id", "<|video_pad|>"),
                           ("vision_start_token_id", "<|vision_start|>"), ("vision_end_token_id", "<|vision_end|>")):
            data[key] = tokenizer.convert_tokens_to_ids(token)
        config = Qwen2_5_VLConfig(**{k: v for k, v in data.items() if k not in ("architectures", "model_type")})
        config._attn_implementation = "sdpa"
        with default_dtype(dtype):
            model = Qwen2_5_VLForConditionalGeneration(config)
        model.eval().requires_grad_(False)
        return Qwen2VLModel(model=model, tokenizer=tokenizer, preprocess=VisionPreprocessConfig())
    if name == "revise-vila-8b":
        from transformers import AutoConfig, AutoModelForCausalLM, SiglipVisionConfig, SiglipVisionModel

        from revise_core.testing import train_tokenizer
        from revise_core.vlm import vila

        data = _config(name)
        llm_cfg = dict(data["llm_cfg"])
        llm_config = AutoConfig.for_model(llm_cfg.pop("model_type"), **llm_cfg)
        llm_config._attn_implementation = "sdpa"
        tower_config = SiglipVisionConfig(**{k: v for k, v in data["vision_tower_cfg"].items()
                                             if k not in ("model_type", "architectures")})
        tower_config._attn_implementation = "sdpa"
        with default_dtype(dtype):
            modules = vila.VilaModules(
                AutoModelForCausalLM.from_config(llm_config), SiglipVisionModel(tower_config),
                vila.MultimodalProjector(data["mm_projector_cfg"]["mm_projector_type"], tower_config.hidden_size,
                                         llm_config.hidden_size),
                select_layer=int(data["mm_vision_select_layer"]), select_feature=data["mm_vision_select_feature"])
        modules.eval().requires_grad_(False)
        return vila.VilaModel(model=modules, tokenizer=train_tokenizer("llama3"), preprocess=vila.SiglipPreprocess())
    raise ValueError(f"unknown VLM '{name}'")


def u_length(vlm, frames: int, height: int, width: int) -> int:
    """How many states u the VLM gives for a source clip (its own prompt and preprocessing, no forward)."""
    from torch._subclasses.fake_tensor import unset_fake_temporarily

    with unset_fake_temporarily():  # the release's preprocessing (PIL on 8-bit frames) needs real pixels
        return _u_length(vlm, torch.zeros(frames, height, width, 3))


def _u_length(vlm, clip: torch.Tensor) -> int:
    if hasattr(vlm, "conditioning_inputs"):
        inputs = vlm.conditioning_inputs(clip, "make it red")
        images = 0 if inputs.kwargs["pixels"] is None else inputs.kwargs["pixels"].shape[0]
        per_image = (vlm.preprocess.height // 14 + 1) // 2 * ((vlm.preprocess.width // 14 + 1) // 2)
        return len(inputs.token_ids) - images + images * per_image
    messages = [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": "make it red"}]}]
    return len(vlm.build_inputs(messages, [vlm.prepare_frames(clip, 8)]).token_ids)


def build_connector(vlm_name: str, vlm_dim: int, video_tokens: int, u_len: int):
    """The connector of the model set: the ReViSE release's (VisionHead + DM_Adapter, 2.1B parameters) with its
    VILA, the Omni-Video 2 layout with another VLM. The context holds the whole source video: at 81 frames
    480x832 the video alone is 8190 tokens, more than either release's context (2560 / 6144), so those rows
    use a longer one (no release runs at that size)."""
    from revise_core.connector import Connector, ConnectorConfig
    from revise_core.connector.revise import TransformerShape, VisionHeadConnector, VisionHeadConnectorConfig

    if vlm_name == "revise-vila-8b":
        lengths = {"img_st": 6, "img_ed": 6, "ipl_st": 6, "ipl_ed": 6, "prp_st": 7, "prp_ed": 7}  # as the release's
        config = VisionHeadConnectorConfig(
            vision_head=TransformerShape(in_dim=vlm_dim, dim=1152, queries=4, encoder_layers=4, decoder_layers=4,
                                         ffn_dim=4608),
            dm_adapter=TransformerShape(in_dim=1152, dim=4096, queries=256, encoder_layers=4, decoder_layers=4,
                                        ffn_dim=16384),
            boundary_lengths=lengths, null_text_len=TEXT_TOKENS, null_vlm_len=164)
        needed = video_tokens + config.vlm_tokens + TEXT_TOKENS + sum(lengths.values())
        config.max_context_len = max(config.max_context_len, needed)
        return VisionHeadConnector(config)
    config = ConnectorConfig.from_dict(_config("omnivideo2-1.3b"))
    config.vlm_dim = vlm_dim
    config.max_context_len = max(config.max_context_len, video_tokens + u_len + TEXT_TOKENS)
    return Connector(config)


def setup(frames: int, height: int, width: int, *, step: str, vlm_name: str, settings: Settings) -> dict:
    """Everything resident on the GPU for `step`, built in the current (fake) mode."""
    from diffusers import AutoencoderKLWan, WanTransformer3DModel
    from transformers import UMT5Config, UMT5EncoderModel

    from bench.fake_measure import default_dtype
    from trainer.model import Generator, configure_trainable

    train = step != "edit"
    frozen = torch.bfloat16 if (settings.frozen_dtype == "bf16" or not train) else torch.float32
    vlm = build_vlm(vlm_name, frozen)
    if settings.vlm_storage == "int8":
        from bench.int8_storage import store_int8

        store_int8(vlm.model)
    u_len = u_length(vlm, frames, height, width)
    video_tokens = ((frames - 1) // 4 + 1) * (height // 32) * (width // 32)  # the visual adapter's (1, 4, 4) patches
    trained_dtype = torch.float32 if train else torch.bfloat16
    with default_dtype(trained_dtype):
        dit = WanTransformer3DModel.from_config(_config("wan2.1-t2v-1.3b"))
        connector = build_connector(vlm_name, vlm.hidden_size, video_tokens, u_len)
    if train and frozen == torch.bfloat16:  # as the trainer: the release's frozen heads in bf16
        for module in connector.frozen_storage_modules():
            for parameter in module.parameters():
                parameter.data = parameter.data.to(frozen)
    connector_config = connector.config
    with default_dtype(frozen):
        vae = AutoencoderKLWan.from_config(_config("wan2.1-vae")).eval().requires_grad_(False)
        t5 = UMT5EncoderModel(UMT5Config(**_config("umt5-xxl"))).eval() if (settings.t5_resident or not train) else None
    if t5 is not None:
        # Built under no_init_weights, transformers leaves the encoder's embedding untied from `shared` (two
        # copies of 256384 x 4096); the loaded umT5 holds one (revise_core/text.py ties them).
        t5.tie_weights()
        t5.requires_grad_(False)
    vlm_tokens = None
    if settings.connector_heads == "host":  # the step reads u's projection from the features, never the heads
        heads = connector.frozen_storage_modules()
        for name, child in list(connector.named_children()):
            if any(child is head for head in heads):
                setattr(connector, name, torch.nn.Identity())
        vlm_tokens = torch.randn(connector_config.vlm_tokens, connector_config.context_dim)
    generator = Generator(dit, connector)
    if not train:  # the editor's models are all frozen
        generator.requires_grad_(False)
    latent = (1, 16, (frames - 1) // 4 + 1, height // 8, width // 8)
    state = dict(generator=generator, vae=vae, vlm=vlm, t5=t5, step=step, settings=settings,
                 source_latents=torch.randn(latent), target_latents=torch.randn(latent),
                 text=torch.randn(TEXT_TOKENS, connector_config.context_dim),
                 u=torch.randn(u_len, vlm.hidden_size), vlm_tokens=vlm_tokens,
                 source_frames=torch.rand(frames, height, width, 3).half())
    tracked = [generator, vae, vlm.model] + ([t5] if t5 is not None else [])
    if train:
        if settings.train == "lora":  # trainer.model.configure_trainable, with the LoRA added as a hook
            from bench.train_memory import add_lora
            from trainer.config import USOConfig

            defaults = USOConfig()
            generator.requires_grad_(False)
            names = ["dit." + n for n in add_lora(generator.dit, rank=defaults.lora_rank, alpha=defaults.lora_alpha,
                                                   targets=list(defaults.lora_targets))]
            generator.connector.visual_context_adapter.requires_grad_(True)
            names += [n for n, p in generator.named_parameters() if p.requires_grad and n not in names]
            for name, parameter in generator.named_parameters():  # the frozen base in bf16; what trains in fp32
                parameter.data = parameter.data.to(torch.float32 if name in names else torch.bfloat16)
        else:
            names = configure_trainable(generator, mode=settings.train, lora_rank=32,
                                        lora_targets=["to_q", "to_k", "to_v", "to_out.0", "ffn.net.0.proj", "ffn.net.2"])
        generator.dit.train()
        if settings.checkpointing_dit:
            generator.dit.enable_gradient_checkpointing()
        if settings.checkpointing_vlm:
            vlm.set_gradient_checkpointing(True)
        params = [p for p in generator.parameters() if p.requires_grad]
        state["params"] = params
        if settings.optimizer == "adamw8bit":
            from bench.train_memory import AdamW8bitModel

            state["optimizer"] = AdamW8bitModel(params, lr=3e-6, weight_decay=1e-4)
        else:
            state["optimizer"] = torch.optim.AdamW(params, lr=3e-6, weight_decay=1e-4)
        tracked.append(state["optimizer"])
    state["tracked"] = tracked + [state[k] for k in ("source_latents", "target_latents", "text", "u", "source_frames")
                                  if state[k] is not None] + ([vlm_tokens] if vlm_tokens is not None else [])
    return state


def train_step(state: dict) -> None:
    from revise_core import critic as critic_module
    from trainer.config import USOConfig
    from trainer.data import Features
    from trainer.step import loss_parts

    settings: Settings = state["settings"]
    config = USOConfig(objective=state["step"], sigma_max=0.5, critic_decode=settings.critic_decode,
                       decode_latent_frames=settings.decode_latent_frames,
                       checkpointing_vae=settings.checkpointing_vae, critic_frames=settings.critic_frames)
    critic = state.setdefault("critic", critic_module.SelfCritic(
        state["vlm"], critic_module.CriticConfig(num_frames=settings.critic_frames)))
    feats = Features(source_frames=state["source_frames"], source_latents=state["source_latents"],
                     target_latents=state["target_latents"], text_tokens=state["text"], vlm_states=state["u"],
                     vlm_tokens=state.get("vlm_tokens"))
    parts = loss_parts(state["generator"], state["vae"], critic, feats, "make the car red",
                       sigma=torch.tensor([SIGMA]), noise=torch.randn_like(state["target_latents"]), drop=False,
                       triggered=state["step"] == "uso", config=config, device=torch.device("cpu"),
                       autocast_dtype=torch.bfloat16)
    parts.loss.backward()
    torch.nn.utils.clip_grad_norm_(state["params"], 0.1)
    state["optimizer"].step()
    state["optimizer"].zero_grad(set_to_none=True)


def edit_step(state: dict) -> None:
    """One sampler step of the editor: the conditional and the unconditional DiT call, one after the other."""
    from revise_core.text import pad_context

    generator = state["generator"]
    with torch.no_grad():
        connector = generator.connector
        video = connector.adapt_video(state["source_latents"].to(torch.bfloat16))[0]
        cond = pad_context(connector.assemble(connector.project_vlm(state["u"].to(video)), state["text"].to(video),
                                              video), connector.config.max_context_len)[None]
        uncond = pad_context(connector.null_context(video), connector.config.max_context_len)[None]
        z_t = torch.randn_like(state["target_latents"]).to(torch.bfloat16)
        timestep = torch.tensor([500.0])
        for context in (cond, uncond):
            generator.dit(hidden_states=z_t, timestep=timestep, encoder_hidden_states=context, return_dict=False)


def with_switch(settings: Settings, **changes) -> Settings:
    return replace(settings, **changes)

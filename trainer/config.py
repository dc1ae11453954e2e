"""USOConfig: every setting of a training run, with the paper's defaults, from YAML/JSON + overrides.

Precedence: dataclass defaults < config file < command-line flags / `key=value` overrides. The resolved
config is logged and saved with every checkpoint.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path

from revise_core.attention import AttentionBackendError, check_backend
from revise_core.lora import LoraChoice
from revise_core.losses import OBJECTIVES
from revise_core.resources import config_path
from revise_core.video import MAX_FRAMES, MAX_SIDE

OPTIMIZERS = ("adamw", "adamw8bit")
LR_SCHEDULES = ("constant", "cosine")


def _opt(default, help: str, **kw):  # noqa: A002 - mirrors argparse's name
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata={"help": help, **kw})
    return field(default=default, metadata={"help": help, **kw})


@dataclass
class USOConfig:
    """A USO / SFT / RWR fine-tuning run of the ReViSE generator (DiT + visual context adapter)."""

    # --- data ---
    manifest: str = _opt("", "triplet manifest (JSONL: source, target, instruction, subset, category)")
    models: str = _opt("", "folder with models.json naming DiT, VAE, umT5, VLM and connector")
    output_dir: str = _opt("runs/uso", "where checkpoints, logs and plots are written")
    feature_cache: str = _opt("", "folder caching frozen-encoder features per sample ('' = memory only)")
    num_frames: int = _opt(17, "frames per training clip (4k+1)")
    height: int = _opt(352, "clip height (multiple of 32)")
    width: int = _opt(640, "clip width (multiple of 32)")
    resize: str = _opt("crop", "how clips are fitted: crop | pad | stretch")
    max_text_len: int = _opt(512, "umT5 tokens per instruction")
    vlm_frames: int = _opt(8, "frames the VLM sees when computing u")
    # --- objective ---
    objective: str = _opt("uso", "uso (L_FM + λ L_reason) | sft (L_FM) | rwr (P(Yes)-weighted L_FM)")
    reason_weight: float = _opt(0.25, "λ, weight of L_reason (paper: 0.25)")
    sigma_max: float = _opt(0.5, "the critic runs only when σ <= sigma_max (paper: 0.5)")
    timestep_shift: float = _opt(3.0, "shift of the uniform timestep distribution (3 reproduces Table 6)")
    critic_frames: int = _opt(4, "F, frames the critic samples uniformly from the decoded estimate")
    critic_decode: str = _opt("video", "how x̂0 reaches the critic: video (decode the first decode_latent_frames "
                                       "latent frames as a video; the critic samples critic_frames of it) | frames "
                                       "(section 3.2: critic_frames latent frames sampled uniformly, each decoded "
                                       "alone to one frame; the memory of critic_frames single frames)")
    decode_latent_frames: int = _opt(0, "critic_decode=video: decode only this many leading latent frames (0 = all)")
    cot: bool = _opt(False, "critic writes a chain of thought before the verdict (slower)")
    critic_vlm: str = _opt("", "a VLM folder for the SelfCritic that differs from the encoder VLM (any supported "
                               "family, e.g. a Qwen3-VL-8B-Instruct folder); '' = the encoder VLM itself (the paper)")
    cfg_drop: float = _opt(0.2, "probability of dropping T5 and u together (source tokens kept)")
    # --- optimisation ---
    lr: float = _opt(3e-6, "AdamW learning rate (paper: 3e-6)")
    weight_decay: float = _opt(1e-4, "AdamW weight decay (paper: 1e-4)")
    grad_clip: float = _opt(0.1, "gradient norm clip (paper: 0.1; 0 = off)")
    warmup_steps: int = _opt(0, "linear learning-rate warm-up steps")
    lr_schedule: str = _opt("constant", "learning rate after the warm-up: constant (the paper) | cosine (decays to 0 "
                                        "at the last step)")
    global_batch: int = _opt(8, "samples per optimizer step across all processes (gradient accumulation)")
    steps: int = _opt(1000, "optimizer steps")
    train: str = _opt("full", "what trains in the DiT: full | lora (the visual adapter always trains)")
    lora_rank: int = _opt(32, "LoRA rank (train=lora)")
    lora_alpha: float = _opt(32.0, "LoRA alpha (train=lora)")
    lora_targets: list = _opt(["to_q", "to_k", "to_v", "to_out.0", "ffn.net.0.proj", "ffn.net.2"],
                              "DiT module names LoRA wraps (train=lora)")
    base_loras: list = _opt([], "Wan2.1 LoRA files (PATH or PATH:STRENGTH; ComfyUI, kohya or diffusers keys) fused "
                                "into the DiT's weights before training: what trains (all weights, or a LoRA) then "
                                "starts from that base, and the exported DiT holds them")
    # --- runtime ---
    seed: int = _opt(0, "seed of data order, noise, timesteps and CFG drops")
    device: str = _opt("auto", "auto | cpu | cuda | cuda:N")
    dtype: str = _opt("auto", "autocast dtype: auto (bf16 on GPU, fp32 on CPU) | bf16 | fp16 (with loss scaling) | "
                              "fp32; trained weights and optimizer state stay fp32")
    frozen_dtype: str = _opt("auto", "storage dtype of the frozen VAE, umT5 and VLM (and, when bf16, of the ReViSE "
                                     "release's frozen connector heads): auto (the compute dtype: bf16 on a GPU, "
                                     "fp32 on the CPU) | bf16 | fp16 | fp32")
    offload_text_encoder: bool = _opt(True, "keep umT5 off the GPU except while it encodes a sample's instruction "
                                            "(features are cached; identical losses)")
    offload_connector_heads: bool = _opt(False, "compute the connector's frozen VLM projection (the ReViSE release's "
                                                "VisionHead + DM_Adapter, 3.9 GiB in bf16) with the cached features and "
                                                "keep it in host memory between feature passes; identical losses; "
                                                "single-process runs")
    frozen_placement: str = _opt("resident", "where the frozen feature encoders wait between feature passes "
                                             "(revise_core/placement.py): resident | sequential | stream; the critic's "
                                             "VLM and the VAE stay resident, since gradients pass through them")
    encoders: str = _opt("compute", "storage of the frozen VLM and umT5 (and of a critic VLM loaded from critic_vlm): "
                                    "compute (frozen_dtype) | int8 (torchao weight-only, half of bf16; gradients "
                                    "still reach the pixels through the int8 critic)")
    optimizer: str = _opt("adamw", "adamw | adamw8bit (torchao 8-bit states: 2 bytes per parameter instead of 8; its "
                                   "first step compiles for about a minute on a CPU)")
    attention: str = _opt("native", "the DiT's attention backend: native (torch SDPA) | auto (the fastest installed "
                                    "that agrees with native; never sage) | flash | xformers | flex (CUDA only) | math; "
                                    "sage has no backward pass and is refused, nor has flex on a CPU")
    checkpointing_dit: bool = _opt(False, "gradient checkpointing in the DiT blocks")
    checkpointing_vlm: bool = _opt(False, "gradient checkpointing in the critic's VLM")
    checkpointing_vae: bool = _opt(False, "gradient checkpointing per latent frame in the VAE decoder (critic path)")
    allow_dataset_change: bool = _opt(False, "resume even when the manifest's rows or videos changed since the run "
                                             "started (they are compared row by row; without this the resume is "
                                             "refused and the changed rows are named)")
    checkpoint_every: int = _opt(100, "save a resumable checkpoint every N steps (and at the end)")
    keep_checkpoints: int = _opt(3, "how many recent checkpoints to keep")
    tensorboard: bool = _opt(True, "also log to TensorBoard (needs the tensorboard package)")
    strategy: str = _opt("ddp", "multi-process strategy under torchrun: ddp | fsdp (FSDP2)")

    def __post_init__(self) -> None:
        problems = []
        if self.objective not in OBJECTIVES:
            problems.append(f"objective must be one of {OBJECTIVES}, got '{self.objective}'")
        if self.train not in ("full", "lora"):
            problems.append(f"train must be 'full' or 'lora', got '{self.train}'")
        if self.strategy not in ("ddp", "fsdp"):
            problems.append(f"strategy must be 'ddp' or 'fsdp', got '{self.strategy}'")
        if self.dtype not in ("auto", "bf16", "fp16", "fp32"):
            problems.append(f"dtype must be auto, bf16, fp16 or fp32, got '{self.dtype}'")
        if self.frozen_dtype not in ("auto", "bf16", "fp16", "fp32"):
            problems.append(f"frozen_dtype must be auto, bf16, fp16 or fp32, got '{self.frozen_dtype}'")
        if (self.num_frames - 1) % 4 or self.num_frames < 1:
            problems.append(f"num_frames must be 4k+1, got {self.num_frames}")
        if self.height % 32 or self.width % 32:
            problems.append(f"height and width must be multiples of 32, got {self.height}x{self.width}")
        for f in fields(self):  # NaN and inf pass every range check below
            value = getattr(self, f.name)
            if isinstance(value, float) and not math.isfinite(value):
                problems.append(f"{f.name} must be a finite number, got {value}")
        for name in ("height", "width"):
            if getattr(self, name) > MAX_SIDE:
                problems.append(f"{name} must be at most {MAX_SIDE}, got {getattr(self, name)}")
        if self.num_frames > MAX_FRAMES:
            problems.append(f"num_frames must be at most {MAX_FRAMES}, got {self.num_frames}")
        for name in ("sigma_max", "cfg_drop"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                problems.append(f"{name} must be in [0, 1], got {getattr(self, name)}")
        for name in ("steps", "global_batch", "checkpoint_every", "critic_frames", "lora_rank"):
            if getattr(self, name) < 1:
                problems.append(f"{name} must be >= 1, got {getattr(self, name)}")
        for name, allowed in (("frozen_placement", ("resident", "sequential", "stream")),
                              ("encoders", ("compute", "int8")), ("optimizer", OPTIMIZERS),
                              ("lr_schedule", LR_SCHEDULES)):
            if getattr(self, name) not in allowed:
                problems.append(f"{name} must be one of {allowed}, got '{getattr(self, name)}'")
        for text in self.base_loras:
            try:
                LoraChoice.parse(str(text))
            except ValueError as error:
                problems.append(f"base_loras: {error}")
        try:
            check_backend(self.attention, training=True)
        except AttentionBackendError as error:
            problems.append(str(error))
        if self.critic_decode not in ("video", "frames"):
            problems.append(f"critic_decode must be 'video' or 'frames', got '{self.critic_decode}'")
        elif self.critic_decode == "frames" and self.decode_latent_frames:
            problems.append("decode_latent_frames applies to critic_decode=video; critic_decode=frames decodes "
                            "critic_frames latent frames spread over the clip")
        if self.reason_weight < 0 or self.lr <= 0:
            problems.append("reason_weight must be >= 0 and lr > 0")
        if problems:
            raise ValueError("invalid training config: " + "; ".join(problems))

    def to_dict(self) -> dict:
        return asdict(self)


def read_config_file(path: str | os.PathLike) -> dict:
    """A YAML or JSON mapping of USOConfig fields; unknown fields are an error naming the file."""
    import yaml

    path = Path(path)
    if not path.is_file() and path.parts[:1] == ("configs",) and config_path(*path.parts[1:]).is_file():
        # `--config configs/train/x.yaml` as the docs write it, run outside a clone (an installed wheel)
        path = config_path(*path.parts[1:])
    if not path.is_file():
        raise FileNotFoundError(f"config file not found: {path}")
    text = path.read_text(encoding="utf-8")
    try:
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as error:
        raise ValueError(f"{path}: not valid {'JSON' if path.suffix == '.json' else 'YAML'} ({error})") from error
    data = data or {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping of settings, found {type(data).__name__}")
    _check_names(data, source=str(path))
    return data


def parse_override(text: str) -> tuple[str, object]:
    """`key=value` with the value read as YAML (numbers, booleans, lists) and the key checked."""
    import yaml

    if "=" not in text:
        raise ValueError(f"override '{text}' must look like key=value")
    key, raw = text.split("=", 1)
    key = key.strip().replace("-", "_")
    _check_names({key: None}, source="command line")
    return key, yaml.safe_load(raw) if raw.strip() else ""


def _check_names(data: dict, *, source: str) -> None:
    known = {f.name for f in fields(USOConfig)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"{source}: unknown settings {unknown}; known settings: {sorted(known)}")


def build_config(file: str | os.PathLike | None, overrides: dict) -> USOConfig:
    """Defaults < file < overrides, converted to each field's type."""
    data = read_config_file(file) if file else {}
    data.update(overrides)
    converted = {}
    for f in fields(USOConfig):
        if f.name not in data:
            continue
        value = data[f.name]
        default = f.default if f.default is not MISSING else f.default_factory()
        try:
            converted[f.name] = _convert(value, default)
        except (TypeError, ValueError) as error:
            raise ValueError(f"setting '{f.name}': cannot use {value!r} ({error})") from error
    return USOConfig(**converted)


def _convert(value, default):
    if isinstance(default, bool):
        if isinstance(value, str):
            if value.lower() in ("1", "true", "yes", "on"):
                return True
            if value.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError("expected a boolean")
        return bool(value)
    if isinstance(default, int):
        if isinstance(value, float) and not value.is_integer():
            raise ValueError("expected an integer")
        return int(value)
    if isinstance(default, float):
        return float(value)
    if isinstance(default, list):
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return list(value)
    return str(value)

"""A release folder as a model set: the ReViSE release's `revise_ckpt/` loads as it is downloaded.

`detect(folder)` tells a folder with a hand-written `models.json` from a ReViSE release folder; the latter
is read by `load_revise_release`:

    revise_ckpt/
      wan/wanxiang1_3b/            the Wan2.1-T2V-1.3B folder as Wan-AI ships it: config.json of the original
                                   `WanModel` (as its save_pretrained writes it: no text_dim, patch_size or
                                   norm switches, which are read from the tensors), the DiT
                                   weights in original keys, models_t5_umt5-xxl-enc-bf16.pth,
                                   google/umt5-xxl/ (tokenizer) and Wan2.1_VAE.pth
      transformer/model.pt         {"module": ...}: wan_model.* (overrides the DiT weights above), adapter.*,
                                   ar_vision_head.*, visual_context_adapter.*
      adapter/  vision_head/  special_tokens/  unconditioned_context/   the connector (connector/revise.py)
      ar_model/checkpoint/         VILA (vlm/vila.py)

The original Wan code fixes the umT5 and VAE architectures in code and ships no config for them, so their
configs are the shipped ones (umt5-xxl, wan2.1-vae) with the widths and counts read from the tensors; a
folder in this layout with smaller consistent models loads the same way (the test kit's). Every parameter
must come from a file (strict loads), unlike the official `strict=False` load.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from . import checkpoints as ckpt
from . import wan_keys
from .connector import ContextConnector, load_connector, load_release_connector
from .connector.omnivideo2 import config_from_tensors
from .dit import load_dit
from .models_file import MODELS_FILE, check_models_file
from .release_layouts import (
    OMNIVIDEO2_FILE,
    OMNIVIDEO2_MARKERS,
    OMNIVIDEO2_TOKENS,
    RELEASE_MARKERS,
    TRANSFORMER_FILE,
    VILA_FOLDER,
    WAN_DIT_WEIGHTS,
    WAN_FOLDER,
    WAN_T5_FILE,
    WAN_T5_TOKENIZER,
    WAN_VAE_FILE,
)
from .text import TextEncoder, load_text_encoder
from .vae import load_vae
from .variants import get_variant
from .vlm import VisionLanguageModel, load_vlm

logger = logging.getLogger(__name__)

WAN_HEAD_DIM = 128  # every released Wan2.1 / 2.2 DiT (1.3B: 1536 / 12, 14B: 5120 / 40)
WAN_EPS = 1e-6  # WanModel's default eps (`wan/modules/model.py`)
# Fields of an original `WanModel` config.json that its tensors decide, and the tensor each is read from. The
# official WanModel lists text_dim, patch_size, qk_norm, cross_attn_norm and window_size in
# `ignore_for_config`, so the config.json its `save_pretrained` writes lacks them: they are read, never guessed.
WAN_SHAPE_SOURCES = {
    "dim": "patch_embedding.weight", "in_dim": "patch_embedding.weight", "patch_size": "patch_embedding.weight",
    "out_dim": "head.head.weight", "text_dim": "text_embedding.0.weight", "freq_dim": "time_embedding.0.weight",
    "ffn_dim": "blocks.0.ffn.0.weight", "num_layers": "blocks.<N>.*", "qk_norm": "blocks.0.self_attn.norm_q.weight",
    "cross_attn_norm": "blocks.0.norm3.weight",
}
# The official umT5 (`wan/modules/t5.py`, umt5_xxl) fixes these in code; the rest comes from the tensors.
T5_RELATIVE_MAX_DISTANCE = 128


def detect(folder: str | os.PathLike) -> str:
    """'models.json' or 'revise release'; anything else is an error naming what was looked for."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ckpt.ModelFileNotFoundError(f"model folder not found: {folder}")
    if (folder / MODELS_FILE).is_file():
        return "models.json"
    present = [marker for marker in RELEASE_MARKERS if (folder / marker).exists()]
    if present and len(present) == len(RELEASE_MARKERS):
        return "revise release"
    if all((folder / marker).exists() for marker in OMNIVIDEO2_MARKERS):
        return "omnivideo2 release"
    if present:
        missing = [m for m in RELEASE_MARKERS if m not in present]
        raise ckpt.ModelFileNotFoundError(
            f"{folder}: looks like a ReViSE release folder (has {present}) but lacks {missing}; see docs/models.md")
    raise ckpt.ModelFileNotFoundError(
        f"{folder}: neither a {MODELS_FILE} nor a ReViSE release folder ({', '.join(RELEASE_MARKERS)}) nor an "
        f"Omni-Video 2 release folder ({', '.join(OMNIVIDEO2_MARKERS)}); see docs/models.md")


def wan_dit_shape(tensors: dict[str, torch.Tensor], *, path: Path) -> dict:
    """What the tensors of an original-key Wan DiT say about its architecture (WAN_SHAPE_SOURCES)."""
    try:
        patch = tensors["patch_embedding.weight"]  # Conv3d [dim, in_dim, pt, ph, pw]
        patch_size = [int(side) for side in patch.shape[2:]]
        head_rows = int(tensors["head.head.weight"].shape[0])  # out_dim * pt * ph * pw
        text_dim = int(tensors["text_embedding.0.weight"].shape[1])
        freq_dim = int(tensors["time_embedding.0.weight"].shape[1])
        ffn_dim = int(tensors["blocks.0.ffn.0.weight"].shape[0])
    except (KeyError, IndexError) as error:
        raise ckpt.UnknownLayoutError(f"{path}: not an original-key Wan DiT (no tensor {error})") from None
    if patch.ndim != 5:
        raise ckpt.UnknownLayoutError(f"{path}: patch_embedding.weight is {list(patch.shape)}, not a Conv3d kernel")
    patch_volume = patch_size[0] * patch_size[1] * patch_size[2]
    if head_rows % patch_volume:
        raise ckpt.CheckpointError(f"{path}: head.head.weight has {head_rows} rows, not a multiple of the patch "
                                   f"volume {patch_volume} (patch {patch_size})")
    blocks = {int(key.split(".")[1]) for key in tensors if key.startswith("blocks.")}
    if not blocks or blocks != set(range(len(blocks))):
        raise ckpt.CheckpointError(f"{path}: the DiT's blocks are numbered {sorted(blocks)[:8]}..., not 0..N-1")
    return {"dim": int(patch.shape[0]), "in_dim": int(patch.shape[1]), "patch_size": patch_size,
            "out_dim": head_rows // patch_volume, "text_dim": text_dim, "freq_dim": freq_dim, "ffn_dim": ffn_dim,
            "num_layers": len(blocks), "qk_norm": "blocks.0.self_attn.norm_q.weight" in tensors,
            "cross_attn_norm": "blocks.0.norm3.weight" in tensors}


def wan_model_config_to_diffusers(data: dict, tensors: dict[str, torch.Tensor], *, path: Path,
                                  weights: Path | str = "") -> dict:
    """An original `WanModel` config.json (`data`, read from `path`; {} when there is none) and the DiT's
    tensors (original keys, from `weights`) -> a `WanTransformer3DModel` config.

    Every width, count and switch comes from the tensors (`wan_dit_shape`); the config is read only for what
    tensors cannot decide (num_heads, eps) and checked against them: a config value that contradicts the
    tensors is an error naming the file, the field and both values. Without num_heads, heads of WAN_HEAD_DIM
    (every released Wan DiT)."""
    where = f"{path}" + (f" (weights {weights})" if weights else "")
    if data.get("_class_name") not in (None, "WanModel"):
        raise ckpt.CheckpointError(f"{path}: expected an original Wan 'WanModel' config, found "
                                   f"_class_name={data.get('_class_name')!r}")
    if data.get("model_type", "t2v") != "t2v":
        raise ckpt.CheckpointError(f"{path}: model_type {data['model_type']!r}; the ReViSE release uses a 't2v' Wan")
    shape = wan_dit_shape(tensors, path=Path(weights or path))
    for name, value in shape.items():
        if name not in data:
            continue
        given = [int(v) for v in data[name]] if name == "patch_size" and isinstance(data[name], (list, tuple)) \
            else data[name]
        if given != value:
            raise ckpt.CheckpointError(
                f"{where}: config field '{name}' is {data[name]!r} but the weights say {value!r} (read from "
                f"{WAN_SHAPE_SOURCES[name]}); the config does not describe these weights")
    if tuple(data.get("window_size", (-1, -1))) != (-1, -1):
        raise ckpt.CheckpointError(f"{path}: config field 'window_size' is {data['window_size']!r}; diffusers' Wan "
                                   "DiT attends globally, (-1, -1)")
    if not shape["qk_norm"]:
        raise ckpt.CheckpointError(f"{where}: the DiT has no q/k RMSNorm (no {WAN_SHAPE_SOURCES['qk_norm']}); "
                                   "diffusers' Wan DiT always normalises q and k, as every released Wan does")
    dim = shape["dim"]
    heads = data.get("num_heads")
    if heads is None:
        heads = dim // WAN_HEAD_DIM
        logger.info("%s: no num_heads in the config; %d heads of %d, as every released Wan", where, heads, WAN_HEAD_DIM)
    if not isinstance(heads, int) or heads < 1 or dim % heads:
        raise ckpt.CheckpointError(f"{where}: config field 'num_heads' is {heads!r}; the DiT's width {dim} must be a "
                                   "positive multiple of it")
    return dict(patch_size=shape["patch_size"], num_attention_heads=heads, attention_head_dim=dim // heads,
                in_channels=shape["in_dim"], out_channels=shape["out_dim"], text_dim=shape["text_dim"],
                freq_dim=shape["freq_dim"], ffn_dim=shape["ffn_dim"], num_layers=shape["num_layers"],
                cross_attn_norm=shape["cross_attn_norm"], qk_norm="rms_norm_across_heads",
                eps=float(data.get("eps", WAN_EPS)), image_dim=None, added_kv_proj_dim=None, rope_max_seq_len=1024,
                pos_embed_seq_len=None)


def _wan_dit_tensors(wan_dir: Path) -> dict[str, torch.Tensor]:
    return ckpt.read_weights_folder(wan_dir, ("diffusion_pytorch_model.safetensors.index.json",), WAN_DIT_WEIGHTS,
                                    what="Wan DiT")


def load_release_dit(folder: Path, transformer_state: dict[str, torch.Tensor], *, dtype, device):
    """Wan's own folder, then `wan_model.*` of transformer/model.pt on top (the official load order); the
    architecture from the merged tensors, checked against Wan's config.json."""
    from diffusers import WanTransformer3DModel

    wan_dir = folder / WAN_FOLDER
    config_path = wan_dir / "config.json"
    tensors = _wan_dit_tensors(wan_dir)
    tensors.pop("freqs", None)  # WanModel's RoPE table is a buffer some saves include; diffusers recomputes it
    state = {k[len("module."):] if k.startswith("module.") else k: v for k, v in transformer_state.items()}
    overrides = {k[len("wan_model."):]: v for k, v in state.items() if k.startswith("wan_model.")}
    overrides.pop("freqs", None)
    if not overrides:
        logger.warning("%s has no wan_model.* tensors: the DiT is the base Wan2.1 of %s, not the release's "
                       "fine-tuned one", folder / TRANSFORMER_FILE, WAN_FOLDER)
    changed = sum(1 for k, v in overrides.items() if k not in tensors or not torch.equal(tensors[k], v.to(tensors[k].dtype)))
    logger.info("%s: %d DiT tensors from %s (%d with other values than %s)", folder, len(overrides),
                TRANSFORMER_FILE, changed, WAN_FOLDER)
    tensors.update(overrides)
    config = wan_model_config_to_diffusers(ckpt.read_json(config_path, what="Wan DiT config"), tensors,
                                           path=config_path, weights=f"{wan_dir} + {folder / TRANSFORMER_FILE}")
    keep_fp32 = tuple(getattr(WanTransformer3DModel, "_keep_in_fp32_modules", None) or ())
    return ckpt.load_into(lambda: WanTransformer3DModel.from_config(config), wan_keys.dit_original_to_diffusers(tensors),
                          path=folder / TRANSFORMER_FILE, component="DiT", layout="revise release", dtype=dtype,
                          device=device, keep_fp32=keep_fp32)


def release_vae_config(path: Path) -> dict:
    """wan2.1-vae's config with the width and latent channels of the file (WanVAE fixes the rest in code)."""
    tensors = ckpt.read_state_dict(path).tensors
    try:
        base_dim, z_dim = tensors["encoder.conv1.weight"].shape[0], tensors["conv2.weight"].shape[0]
    except KeyError as error:
        raise ckpt.CheckpointError(f"{path}: not an original Wan2.1 VAE file (no tensor {error})") from None
    config = get_variant("wan2.1-vae").load_config()
    if z_dim != config["z_dim"]:
        raise ckpt.CheckpointError(f"{path}: {z_dim} latent channels; the Wan2.1 VAE has {config['z_dim']}")
    return {**config, "base_dim": base_dim}


def release_t5_config(path: Path) -> dict:
    """umt5-xxl's config with the sizes of the file (the official umt5_xxl fixes the rest in code)."""
    tensors = ckpt.read_state_dict(path).tensors
    try:
        vocab, d_model = tensors["token_embedding.weight"].shape
        inner = tensors["blocks.0.attn.q.weight"].shape[0]
        buckets, heads = tensors["blocks.0.pos_embedding.embedding.weight"].shape
        d_ff = tensors["blocks.0.ffn.fc1.weight"].shape[0]
    except KeyError as error:
        raise ckpt.CheckpointError(f"{path}: not an original Wan umT5 encoder file (no tensor {error})") from None
    layers = len({k.split(".")[1] for k in tensors if k.startswith("blocks.")})
    if inner % heads:
        raise ckpt.CheckpointError(f"{path}: attention width {inner} is not divisible by {heads} heads")
    config = get_variant("umt5-xxl").load_config()
    return {**config, "vocab_size": vocab, "d_model": d_model, "d_kv": inner // heads, "num_heads": heads,
            "d_ff": d_ff, "num_layers": layers, "num_decoder_layers": layers,
            "relative_attention_num_buckets": buckets, "relative_attention_max_distance": T5_RELATIVE_MAX_DISTANCE}


def load_wan_vae_and_text(wan_dir: Path, *, dtypes: dict, device: torch.device | str):
    """Wan2.1's VAE and umT5 (+ tokenizer) as Wan-AI ships them (`Wan2.1_VAE.pth`,
    `models_t5_umt5-xxl-enc-bf16.pth`, `google/umt5-xxl/`), which both releases keep."""
    vae_path, t5_path = wan_dir / WAN_VAE_FILE, wan_dir / WAN_T5_FILE
    vae = load_vae(vae_path, config=release_vae_config(vae_path), dtype=dtypes["vae"], device=device)
    text = load_text_encoder(t5_path, tokenizer=wan_dir / WAN_T5_TOKENIZER, config=release_t5_config(t5_path),
                             dtype=dtypes["t5"], device=device)
    return vae, text


def load_revise_release(folder: str | os.PathLike, *, dtypes: dict, device: torch.device | str = "cpu",
                        with_dit: bool = True):
    """The five components of a ReViSE release folder, as `EditModels` (dtypes per component; the DiT None
    without `with_dit`)."""

    folder = Path(folder)
    dtypes = {name: ckpt.resolve_dtype(value) for name, value in dtypes.items()}
    wan_dir = folder / WAN_FOLDER
    for relative in (WAN_T5_FILE, WAN_VAE_FILE, WAN_T5_TOKENIZER, "config.json"):
        if not (wan_dir / relative).exists():
            raise ckpt.ModelFileNotFoundError(f"{folder}: missing {WAN_FOLDER}/{relative} (the Wan2.1-T2V-1.3B "
                                              "folder of the release has it); see docs/models.md")
    transformer_state = dict(ckpt.read_state_dict(folder / TRANSFORMER_FILE).tensors)
    dit = load_release_dit(folder, transformer_state, dtype=dtypes["dit"], device=device) if with_dit else None
    connector = load_release_connector(folder, transformer_state=transformer_state, dtype=dtypes["connector"],
                                       device=device)
    del transformer_state
    vae, text = load_wan_vae_and_text(wan_dir, dtypes=dtypes, device=device)
    models = EditModels(
        dit=dit, vae=vae, text=text,
        vlm=load_vlm(folder / VILA_FOLDER, dtype=dtypes["vlm"], device=device),
        connector=connector,
    )
    models.check()
    return models


def load_omnivideo2_dit(path: Path, state: dict[str, torch.Tensor], *, dtype, device):
    """The DiT (`wan_model.*`) of an Omni-Video 2 checkpoint already read into `state`, its config read off the
    tensors (the release ships none)."""
    from diffusers import WanTransformer3DModel

    tensors = {k[len("wan_model."):]: v for k, v in state.items() if k.startswith("wan_model.")}
    tensors.pop("freqs", None)  # WanModel's RoPE table, recomputed by diffusers
    config = wan_model_config_to_diffusers({}, tensors, path=path)  # the release ships no config
    keep_fp32 = tuple(getattr(WanTransformer3DModel, "_keep_in_fp32_modules", None) or ())
    return ckpt.load_into(lambda: WanTransformer3DModel.from_config(config), wan_keys.dit_original_to_diffusers(tensors),
                          path=path, component="DiT", layout="omnivideo", dtype=dtype, device=device,
                          keep_fp32=keep_fp32)


def find_qwen3_vl(folder: Path) -> Path:
    """The one Qwen3-VL folder inside an Omni-Video 2 release folder (its VLM), or an error saying what to do."""
    found = []
    # os.walk follows links (a ~60 GB VLM folder is usually linked in; Path.rglob does not descend into links)
    for root, dirs, files in os.walk(folder, followlinks=True):
        if len(Path(root).relative_to(folder).parts) >= 3:
            dirs.clear()  # a VLM folder sits at most two levels down
        if "config.json" not in files:
            continue
        try:
            data = ckpt.read_json(Path(root) / "config.json", what="config")
        except ValueError:
            continue
        if isinstance(data, dict) and data.get("model_type") in ("qwen3_vl", "qwen3_vl_moe"):
            found.append(Path(root))
    found.sort()
    if len(found) != 1:
        what = "no Qwen3-VL folder" if not found else f"{len(found)} Qwen3-VL folders {[str(f) for f in found]}"
        raise ckpt.ModelFileNotFoundError(
            f"{folder}: an Omni-Video 2 release folder with {what}; put the Qwen3-VL-30B-A3B-Instruct folder (its "
            "VLM) inside it (the edit command line can also name it: --vlm; Python: vlm=)")
    return found[0]


def vlm_folder(folder: str | os.PathLike) -> Path:
    """The VLM folder of a model set (a models.json's 'vlm' entry, or a release folder's own VLM): the critic
    and the local judge load only the VLM."""
    folder = Path(folder)
    kind = detect(folder)
    if kind == "revise release":
        return folder / VILA_FOLDER
    if kind == "omnivideo2 release":
        return find_qwen3_vl(folder)
    spec = ckpt.read_json(folder / MODELS_FILE, what="model set description (models.json)")
    if not isinstance(spec.get("vlm"), str):
        raise ValueError(f"{folder / MODELS_FILE} has no 'vlm' entry: name the VLM folder there")
    return folder / spec["vlm"]


def load_omnivideo2_release(folder: str | os.PathLike, *, dtypes: dict, device: torch.device | str = "cpu",
                            with_dit: bool = True, vlm: str | os.PathLike | None = None):
    """The five components of an Omni-Video 2 1.3B release folder as `EditModels` (dtypes per component)."""

    folder = Path(folder)
    dtypes = {name: ckpt.resolve_dtype(value) for name, value in dtypes.items()}
    for relative in (WAN_T5_FILE, WAN_T5_TOKENIZER, WAN_VAE_FILE):
        if not (folder / relative).exists():
            raise ckpt.ModelFileNotFoundError(f"{folder}: missing {relative} (the Omni-Video 2 release keeps Wan's "
                                              "umT5, its tokenizer and VAE beside its model); see docs/models.md")
    vlm_folder = Path(vlm) if vlm is not None else find_qwen3_vl(folder)
    path = folder / OMNIVIDEO2_FILE
    state = ckpt.read_state_dict(path).tensors
    dit = load_omnivideo2_dit(path, state, dtype=dtypes["dit"], device=device) if with_dit else None
    connector = load_connector(path, config=config_from_tensors(state, path=path),
                               special_tokens=folder / OMNIVIDEO2_TOKENS, dtype=dtypes["connector"], device=device)
    del state
    vae, text = load_wan_vae_and_text(folder, dtypes=dtypes, device=device)
    models = EditModels(
        dit=dit, vae=vae, text=text,
        vlm=load_vlm(vlm_folder, dtype=dtypes["vlm"], device=device),
        connector=connector,
    )
    models.check()
    return models


@dataclass
class EditModels:
    """The five components of the edit pipeline; `check()` verifies that they belong together. `dit` is
    None for a set loaded without it (ComfyUI's native path loads the DiT with its own UNETLoader)."""

    dit: nn.Module | None
    vae: nn.Module
    text: TextEncoder
    vlm: VisionLanguageModel
    connector: ContextConnector

    def components(self) -> dict[str, nn.Module]:
        """The modules a placement plan places, by its model names (placement.COMPONENTS)."""
        modules = {"vlm": self.vlm.model, "t5": self.text.model, "connector": self.connector, "vae": self.vae}
        return modules if self.dit is None else {"dit": self.dit, **modules}

    def check(self) -> None:
        cfg = self.connector.config
        problems = []
        if cfg.vlm_dim != self.vlm.hidden_size:
            problems.append(f"connector vlm_dim={cfg.vlm_dim} but the VLM's hidden size is {self.vlm.hidden_size}")
        if self.text.model.config.d_model != cfg.context_dim:
            problems.append(f"umT5 width {self.text.model.config.d_model} but the connector's context_dim is "
                            f"{cfg.context_dim}")
        if cfg.latent_channels != self.vae.config.z_dim:
            problems.append(f"latent channels disagree: connector {cfg.latent_channels}, VAE {self.vae.config.z_dim}")
        if self.dit is not None:
            if cfg.context_dim != self.dit.config.text_dim:
                problems.append(f"connector context_dim={cfg.context_dim} but the DiT's text_dim is "
                                f"{self.dit.config.text_dim}")
            if cfg.latent_channels != self.dit.config.in_channels:
                problems.append(f"latent channels disagree: connector and VAE {cfg.latent_channels}, DiT "
                                f"{self.dit.config.in_channels}")
        if problems:
            raise ValueError("mismatched model set: " + "; ".join(problems))

    @classmethod
    def load(cls, folder: str | os.PathLike, *, dtype: torch.dtype | str = torch.float32,
             device: torch.device | str = "cpu", component_dtypes: dict | None = None,
             with_dit: bool = True, vlm: str | os.PathLike | None = None) -> EditModels:
        """Load a model set: a folder with a `models.json` (paths relative to the folder), or a ReViSE release
        folder (`revise_ckpt/`) or an Omni-Video 2 release folder as downloaded (the loaders above).

        `component_dtypes` overrides `dtype` per component ("dit", "vae", "t5", "vlm", "connector"): the
        trainer loads what it trains in fp32 and the frozen models in the compute dtype. `with_dit=False` leaves
        the DiT out (None): the encoders of a set whose DiT ComfyUI's own UNETLoader loads."""
        folder = Path(folder)
        dtypes = {name: (component_dtypes or {}).get(name, dtype) for name in ("dit", "vae", "t5", "vlm", "connector")}
        kind = detect(folder)
        if vlm is not None and kind != "omnivideo2 release":
            raise ValueError(f"{folder}: vlm= (--vlm) names the VLM of an Omni-Video 2 release folder; this is a "
                             f"{kind} folder, whose VLM is set in it")
        if kind == "revise release":
            return load_revise_release(folder, dtypes=dtypes, device=device, with_dit=with_dit)
        if kind == "omnivideo2 release":  # `vlm`: its Qwen3-VL folder when it is not inside the release folder
            return load_omnivideo2_release(folder, dtypes=dtypes, device=device, with_dit=with_dit, vlm=vlm)
        spec = ckpt.read_json(folder / MODELS_FILE, what="model set description (models.json)")
        check_models_file(folder, spec)
        needed = ("dit", "vae", "t5", "vlm", "connector") if with_dit else ("vae", "t5", "vlm", "connector")
        missing = [key for key in needed if key not in spec]
        if missing:
            raise ValueError(f"{folder / MODELS_FILE}: missing entries {missing}; see docs/models.md")

        def path(key: str) -> Path | None:
            return folder / spec[key] if spec.get(key) else None

        models = cls(
            dit=load_dit(path("dit"), config=spec.get("dit_config"), dtype=dtypes["dit"], device=device)
            if with_dit else None,
            vae=load_vae(path("vae"), config=spec.get("vae_config"), dtype=dtypes["vae"], device=device),
            text=load_text_encoder(path("t5"), tokenizer=path("t5_tokenizer"), config=spec.get("t5_config"),
                                   dtype=dtypes["t5"], device=device),
            vlm=load_vlm(path("vlm"), dtype=dtypes["vlm"], device=device),
            connector=load_connector(path("connector"), config=spec.get("connector_config"),
                                     special_tokens=path("special_tokens"), dtype=dtypes["connector"], device=device),
        )
        models.check()
        return models

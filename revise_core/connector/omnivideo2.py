"""The connector f_C in the Omni-Video 2 layout, so that its released checkpoint loads as it is.

Parameters (names are those of `transformer/pytorch_model.pt`):
- `vlm_norm.weight`: RMSNorm over the VLM hidden states u (Wan's RMSNorm: statistics in fp32);
- `vlm_proj.{weight,bias}`: Linear(vlm_dim -> context_dim), into the 4096-wide "T5 space";
- `visual_context_adapter.{patch_embedding,projection}.*`: source latents -> context tokens
  (Conv3d k=s=(1,4,4) -> LayerNorm -> Linear -> LayerNorm, norms without affine);
- optional fixed boundary tokens (`boundary.{img_st,img_ed,prp_st,prp_ed}`), which Omni-Video 2 keeps
  in a separate `special_tokens.pkl`.
"""

from __future__ import annotations

import logging
import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import torch
from torch import nn

from .. import checkpoints as ckpt
from ..variants import KNOWN_VARIANTS, ConfigSpec, Variant, resolve_config
from . import revise
from .base import ContextConnector, VisualContextAdapter, WanRMSNorm

logger = logging.getLogger(__name__)

BOUNDARY_NAMES = ("img_st", "img_ed", "prp_st", "prp_ed")
CONNECTOR_KEYS = ("vlm_norm.", "vlm_proj.", "visual_context_adapter.", "boundary.")
FORMAT_NAME = "revise.connector"
# Omni-Video 2's null u at inference and in training's condition drop: torch.zeros(2, vlm_dim) + 1e-6
NULL_U_TOKENS, NULL_U_VALUE = 2, 1e-6
# tools/inference/inference_omni_v2v_1_3B.sh: MAX_CONTEXT_LEN (Wan's text_len is set to it: contexts padded to it)
RELEASE_MAX_CONTEXT_LEN = 6272


@dataclass
class ConnectorConfig:
    """Shapes of the connector; `configs/models/<variant>/config.json` holds the shipped ones."""

    vlm_dim: int = 2048  # width of the VLM hidden states u (Qwen3-VL-30B-A3B: 2048)
    context_dim: int = 4096  # the DiT's text_dim: every context token has this width
    latent_channels: int = 16  # Wan2.1 VAE latent channels
    adapter_hidden_dim: int = 1536  # the DiT's model width, used inside the visual adapter
    adapter_patch_size: tuple[int, int, int] = (1, 4, 4)  # (t, h, w) latent patch per visual token
    eps: float = 1e-6
    max_context_len: int = 6144  # tokens kept after assembling [u; T5; v]
    boundary_token_len: int = 0  # rows per boundary token; 0 = no boundary tokens
    _class_name: str = field(default="ReviseConnector", repr=False)

    def __post_init__(self) -> None:
        self.adapter_patch_size = tuple(int(x) for x in self.adapter_patch_size)
        if len(self.adapter_patch_size) != 3:
            raise ValueError(f"adapter_patch_size must have 3 entries (t, h, w), got {self.adapter_patch_size}")
        for name in ("vlm_dim", "context_dim", "latent_channels", "adapter_hidden_dim", "max_context_len"):
            if int(getattr(self, name)) <= 0:
                raise ValueError(f"connector config field '{name}' must be positive, got {getattr(self, name)}")
        if self.boundary_token_len < 0:
            raise ValueError(f"boundary_token_len must be >= 0, got {self.boundary_token_len}")

    @classmethod
    def from_dict(cls, data: dict) -> ConnectorConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known - {"_diffusers_version"})
        if unknown:
            raise ValueError(f"unknown connector config fields {unknown}; known fields: {sorted(known)}")
        return cls(**{k: v for k, v in data.items() if k in known})

    def to_dict(self) -> dict:
        data = asdict(self)
        data["adapter_patch_size"] = list(self.adapter_patch_size)
        return data


class Connector(ContextConnector):
    """Omni-Video 2: u -> RMSNorm -> Linear; order [u] [<prp_st> T5 <prp_ed>] [<img_st> v <img_ed>]."""

    family = "omnivideo2"
    boundary_names = BOUNDARY_NAMES

    def __init__(self, config: ConnectorConfig) -> None:
        super().__init__()
        self.config = config
        self.vlm_norm = WanRMSNorm(config.vlm_dim, config.eps)
        self.vlm_proj = nn.Linear(config.vlm_dim, config.context_dim)
        self.visual_context_adapter = VisualContextAdapter(config.latent_channels, config.adapter_hidden_dim,
                                                           config.context_dim, config.adapter_patch_size, config.eps)
        self.boundary = nn.Module()
        for name in BOUNDARY_NAMES:
            # Fixed (never trained) tokens, hence buffers; saved with the module.
            self.boundary.register_buffer(name, torch.zeros(config.boundary_token_len, config.context_dim))

    def project_vlm(self, u: torch.Tensor) -> torch.Tensor:
        """u [..., L, vlm_dim] -> [..., L, context_dim]."""
        if u.shape[-1] != self.config.vlm_dim:
            raise ValueError(
                f"VLM hidden states have width {u.shape[-1]} but the connector expects vlm_dim="
                f"{self.config.vlm_dim}: the VLM and the connector checkpoint do not belong together"
            )
        # In the projection's own dtype: the trainer may store this frozen part in bf16 while computing in fp32.
        return self.vlm_proj(self.vlm_norm(u.to(self.vlm_proj.weight.dtype)))

    def boundary_token(self, name: str) -> torch.Tensor:
        return getattr(self.boundary, name)

    def assemble(
        self, vlm_tokens: torch.Tensor | None, text_tokens: torch.Tensor | None, video_tokens: torch.Tensor
    ) -> torch.Tensor:
        """One context sequence [L, context_dim]: [u] [<prp_st> T5 <prp_ed>] [<img_st> v <img_ed>].

        The order is Omni-Video 2's. When the sequence exceeds `max_context_len`, the T5 tokens are cut
        first (from their end), then u; the source-video block is never cut (Omni-Video 2 cuts the tail,
        which in its order would drop source-video tokens first). `None` parts are left out: the null
        condition for guidance is `assemble(None, None, v)`.
        """
        if video_tokens.ndim != 2 or video_tokens.shape[-1] != self.config.context_dim:
            raise ValueError(f"video tokens must be [N, {self.config.context_dim}], got {tuple(video_tokens.shape)}")
        width = self.config.context_dim
        self.check_part("VLM", vlm_tokens)
        self.check_part("text", text_tokens)
        like = video_tokens
        boundary = {name: self.boundary_token(name).to(like) for name in BOUNDARY_NAMES}
        video_block = torch.cat([boundary["img_st"], video_tokens, boundary["img_ed"]])
        fixed = video_block.shape[0] + boundary["prp_st"].shape[0] + boundary["prp_ed"].shape[0]
        budget = self.config.max_context_len - fixed
        if budget < 0:
            raise ValueError(
                f"the source video alone needs {fixed} context tokens, more than max_context_len="
                f"{self.config.max_context_len}; use a lower resolution or fewer frames"
            )
        vlm_part = vlm_tokens if vlm_tokens is not None else like.new_zeros(0, width)
        text_part = text_tokens if text_tokens is not None else like.new_zeros(0, width)
        overflow = vlm_part.shape[0] + text_part.shape[0] - budget
        if overflow > 0:
            cut_text = min(overflow, text_part.shape[0])
            text_part = text_part[: text_part.shape[0] - cut_text]
            vlm_part = vlm_part[: vlm_part.shape[0] - (overflow - cut_text)]
            logger.warning("context longer than max_context_len=%d: dropped %d tokens (text first)",
                           self.config.max_context_len, overflow)
        return torch.cat([vlm_part.to(like), boundary["prp_st"], text_part.to(like), boundary["prp_ed"], video_block])

    def null_context(self, video_tokens: torch.Tensor, *, vlm_tokens: torch.Tensor | None = None) -> torch.Tensor:
        """Omni-Video 2's null condition: the source video alone (with its boundary tokens)."""
        return self.assemble(None, None, video_tokens)

    def negative_context(self, text_tokens: torch.Tensor, video_tokens: torch.Tensor) -> torch.Tensor:
        """Omni-Video 2's inference null branch (omnivideo/x2x_gen_unified.py): umT5 of the negative prompt, u
        replaced by 2 tokens of 1e-6 (in the VLM's width, then vlm_norm and vlm_proj as any u), the source
        video kept."""
        null_u = video_tokens.new_full((NULL_U_TOKENS, self.config.vlm_dim), NULL_U_VALUE)
        vlm_tokens = self.project_vlm(null_u)
        return self.assemble(vlm_tokens, text_tokens.to(vlm_tokens), video_tokens)


# --- loading / saving ---------------------------------------------------------------------------

# Checked in order: the Omni-Video 2 file also holds the DiT, which tells it apart from ours.
CONNECTOR_LAYOUTS = (
    ckpt.Layout(
        "omnivideo2", "Omni-Video 2 transformer/pytorch_model.pt (wan_model.*, vlm_norm.*, vlm_proj.*, "
        "visual_context_adapter.*)",
        ("vlm_proj.weight", "visual_context_adapter.projection.weight", "wan_model.patch_embedding.weight"),
    ),
    ckpt.Layout(
        "revise", "this project's connector safetensors (connector keys, config in the metadata)",
        ("vlm_proj.weight", "visual_context_adapter.projection.weight"),
    ),
)


def config_from_tensors(tensors: dict[str, torch.Tensor], *, path: os.PathLike | str,
                        max_context_len: int = RELEASE_MAX_CONTEXT_LEN) -> dict:
    """An Omni-Video 2 connector's config read off its tensors (the release ships none: its code fixes it);
    eps is the release's 1e-6 and `max_context_len` its inference script's."""
    needed = ("vlm_proj.weight", "visual_context_adapter.patch_embedding.weight")
    missing = [key for key in needed if key not in tensors]
    if missing:
        raise ckpt.UnknownLayoutError(f"{path}: no Omni-Video 2 connector tensors {missing}")
    proj, patch = tensors["vlm_proj.weight"], tensors["visual_context_adapter.patch_embedding.weight"]
    return {"vlm_dim": int(proj.shape[1]), "context_dim": int(proj.shape[0]), "latent_channels": int(patch.shape[1]),
            "adapter_hidden_dim": int(patch.shape[0]), "adapter_patch_size": [int(x) for x in patch.shape[2:]],
            "eps": 1e-6, "max_context_len": max_context_len, "boundary_token_len": 0}


def load_connector(
    path: str | os.PathLike,
    *,
    config: ConfigSpec = None,
    special_tokens: str | os.PathLike | None = None,
    dtype: torch.dtype | str = torch.float32,
    device: torch.device | str = "cpu",
    variants: tuple[Variant, ...] = KNOWN_VARIANTS,
) -> Connector:
    """Load a connector from our safetensors (either family) or from an Omni-Video 2 checkpoint.

    `special_tokens` is Omni-Video 2's `special_tokens.pkl` (boundary tokens); without it an
    Omni-Video 2 checkpoint loads without boundary tokens (a warning says so).
    """
    dtype = ckpt.resolve_dtype(dtype)
    source = ckpt.read_state_dict(path)
    embedded = source.embedded_config() or {}
    if embedded.get("_class_name") == revise.CLASS_NAME:  # our file of the ReViSE release's connector
        return revise.load_saved(source, dtype=dtype, device=device)
    keys = [k for k in source.tensors if k.startswith(CONNECTOR_KEYS)]
    layout = ckpt.detect_layout(source.tensors, CONNECTOR_LAYOUTS, path=source.path, component="connector")
    tensors = {k: source.tensors[k] for k in keys}
    if special_tokens is not None:
        tensors.update(_read_boundary_tokens(special_tokens))
    data = resolve_config(config, "connector", variants) or source.embedded_config()
    if data is None:
        data = _match_connector_variant(tensors, source.path, variants)
    data = dict(data)
    boundary_len = tensors["boundary.img_st"].shape[0] if "boundary.img_st" in tensors else 0
    if boundary_len != data.get("boundary_token_len", 0):
        data["boundary_token_len"] = boundary_len
    if layout.name == "omnivideo2" and boundary_len == 0:
        logger.warning(
            "%s: loaded without boundary tokens; pass special_tokens=<special_tokens.pkl> to match "
            "Omni-Video 2 inference exactly", source.path,
        )
    cfg = ConnectorConfig.from_dict(data)
    if boundary_len == 0:
        tensors.update({f"boundary.{n}": torch.zeros(0, cfg.context_dim) for n in BOUNDARY_NAMES})
    return ckpt.load_into(
        lambda: Connector(cfg), tensors, path=source.path, component="connector", layout=layout.name,
        dtype=dtype, device=device,
    )


def _read_boundary_tokens(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    raw = ckpt.read_tensor_pickle(path)
    out = {}
    for name in BOUNDARY_NAMES:
        key = f"<{name}>"
        if key not in raw:
            raise ckpt.CheckpointError(f"{path}: special tokens file lacks '{key}'; it has {sorted(raw)}")
        tensor = raw[key].float()
        # Omni-Video accepts [D], [n, D] or [1, n, D] per token.
        tensor = tensor.reshape(-1, tensor.shape[-1])
        out[f"boundary.{name}"] = tensor
    lengths = {t.shape[0] for t in out.values()}
    if len(lengths) != 1:
        raise ckpt.CheckpointError(f"{path}: boundary tokens have different lengths {sorted(lengths)}")
    return out


def _match_connector_variant(tensors: dict[str, torch.Tensor], path: Path, variants: tuple[Variant, ...]) -> dict:
    from ..component_loading import match_variant

    # Boundary tokens live in a separate file for Omni-Video 2, so they take no part in the match.
    return match_variant("connector", lambda data: Connector(ConnectorConfig.from_dict(data)), tensors, path,
                         variants, ignore_prefixes=("boundary.",))


def save_connector(connector: ContextConnector, path: str | os.PathLike) -> Path:
    """Write our self-describing safetensors layout (config embedded in the metadata)."""
    state = {k: v for k, v in connector.state_dict().items() if v.numel() > 0}
    return ckpt.save_safetensors(state, path, format_name=FORMAT_NAME, config=connector.config.to_dict())

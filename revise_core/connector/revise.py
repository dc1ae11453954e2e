"""The ReViSE release's connector (Omni-Video v1 layout): VisionHead + DM_Adapter + VisualContextAdapter.

Reproduces the official inference (the release's connector modules, `RM:227-437`):
- u (VILA's last hidden states over the whole prompt, [L, 4096]) -> VisionHead: `fc` (Linear, GELU, Linear)
  into 1152, then an `nn.Transformer` (src = fc(u), tgt = 4 learned queries) -> 4 tokens of 1152;
- each of the 4 tokens is its own one-token source for DM_Adapter: `fc` (1152 -> 4096), an `nn.Transformer`
  with 256 learned queries -> [4, 256, 4096], flattened token-major to 1024 context tokens;
- the source latents -> VisualContextAdapter (the same module as Omni-Video 2's);
- order `<img_st> v <img_ed> <ipl_st> adapter <ipl_ed> <prp_st> T5 <prp_ed>`, cut to the first
  `max_context_len` (2560) rows (official: the tail goes first, so a long prompt loses its end);
- the null branch uses the release's unconditioned umT5 and VLM states (`unconditioned_context/context.pkl`)
  with the real source video (`RU:298-352`); the training-time condition drop does the same (`RM:234-249`).

Widths, query and layer counts are read from the tensors (`config_from_tensors`); what the official code
fixes in code and the tensors cannot tell is in `OFFICIAL`. Parameter names are the official ones under
`vision_head.` / `dm_adapter.` / `visual_context_adapter.`, plus fixed buffers `boundary.*` and `null.*`.

Line references name files of the official repository (Liuxinyv/ReViSE): `RM` nets/revise/modules/
revise_video_model.py, `RU` nets/revise/revise_video_unified_gen.py, `RG` nets/revise/revise_video_generator.py,
`AD` nets/revise/modules/adapter.py.
"""

from __future__ import annotations

import logging
import re
from dataclasses import asdict, dataclass, field, fields

import torch
from einops import rearrange
from torch import nn

from ..release_layouts import ADAPTER_FILE, SPECIAL_TOKENS_FILE, TRANSFORMER_FILE, UNCONDITIONED_FILE, VISION_HEAD_FILE
from .base import ContextConnector, VisualContextAdapter

logger = logging.getLogger(__name__)

BOUNDARY_NAMES = ("img_st", "img_ed", "ipl_st", "ipl_ed", "prp_st", "prp_ed")
CLASS_NAME = "VisionHeadConnector"  # `_class_name` in the config our safetensors files embed


@dataclass(frozen=True)
class _Official:
    """Numbers the official code fixes in code (no file of the release records them)."""

    nhead: int = 8  # nn.Transformer's default, used by both VisionHead and DM_Adapter (AD:60, vila_with_vision_head.py:46)
    transformer_eps: float = 1e-5  # nn.Transformer's LayerNorm default
    adapter_eps: float = 1e-6  # the VisualContextAdapter's LayerNorms (RM eps default)
    max_context_len: int = 2560  # inf.sh --max_context_len; Wan's text_len is set to it (RM:69-71)


OFFICIAL = _Official()


@dataclass
class TransformerShape:
    """One `nn.Transformer(batch_first, norm_first, relu, dropout 0)` with learned decoder queries."""

    in_dim: int  # width of the input of `fc`
    dim: int  # d_model
    queries: int
    encoder_layers: int
    decoder_layers: int
    ffn_dim: int
    nhead: int = OFFICIAL.nhead
    eps: float = OFFICIAL.transformer_eps


@dataclass
class VisionHeadConnectorConfig:
    vision_head: TransformerShape  # VILA hidden (4096) -> 4 queries of 1152
    dm_adapter: TransformerShape  # 1152 -> 256 queries of 4096
    latent_channels: int = 16
    adapter_hidden_dim: int = 1536  # the DiT's width, inside the visual adapter
    adapter_patch_size: tuple[int, int, int] = (1, 4, 4)
    eps: float = OFFICIAL.adapter_eps
    max_context_len: int = OFFICIAL.max_context_len
    boundary_lengths: dict = field(default_factory=lambda: {name: 0 for name in BOUNDARY_NAMES})
    null_text_len: int = 0  # rows of the unconditioned umT5 context
    null_vlm_len: int = 0  # rows of the unconditioned VLM states
    _class_name: str = field(default=CLASS_NAME, repr=False)

    def __post_init__(self) -> None:
        if isinstance(self.vision_head, dict):
            self.vision_head = TransformerShape(**self.vision_head)
        if isinstance(self.dm_adapter, dict):
            self.dm_adapter = TransformerShape(**self.dm_adapter)
        self.adapter_patch_size = tuple(int(x) for x in self.adapter_patch_size)
        problems = []
        if self.dm_adapter.in_dim != self.vision_head.dim:
            problems.append(f"DM_Adapter takes {self.dm_adapter.in_dim}-wide tokens but the VisionHead gives "
                            f"{self.vision_head.dim}")
        for name, shape in (("vision_head", self.vision_head), ("dm_adapter", self.dm_adapter)):
            if shape.dim % shape.nhead:
                problems.append(f"{name} width {shape.dim} is not divisible by its {shape.nhead} heads")
        if sorted(self.boundary_lengths) != sorted(BOUNDARY_NAMES):
            problems.append(f"boundary_lengths must name {list(BOUNDARY_NAMES)}, got {sorted(self.boundary_lengths)}")
        if problems:
            raise ValueError("inconsistent ReViSE connector: " + "; ".join(problems))

    @property
    def vlm_dim(self) -> int:
        return self.vision_head.in_dim

    @property
    def context_dim(self) -> int:
        return self.dm_adapter.dim

    @property
    def vlm_tokens(self) -> int:
        """Context tokens u becomes: one DM_Adapter output (its queries) per VisionHead token."""
        return self.vision_head.queries * self.dm_adapter.queries

    @classmethod
    def from_dict(cls, data: dict) -> VisionHeadConnectorConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown ReViSE connector config fields {unknown}; known fields: {sorted(known)}")
        return cls(**data)

    def to_dict(self) -> dict:
        data = asdict(self)
        data["adapter_patch_size"] = list(self.adapter_patch_size)
        return data


class QueryTransformer(nn.Module):
    """`fc` (Linear, GELU, Linear) then `nn.Transformer(src=fc(x), tgt=queries)`: the official VisionHead /
    DM_Adapter body. `transformer_name` keeps the official key names (`visionHeadAdapter` / `adapter`)."""

    def __init__(self, shape: TransformerShape, transformer_name: str) -> None:
        super().__init__()
        self.transformer_name = transformer_name
        self.decoder_query = nn.Parameter(torch.zeros(1, shape.queries, shape.dim))
        self.fc = nn.Sequential(nn.Linear(shape.in_dim, shape.dim), nn.GELU(), nn.Linear(shape.dim, shape.dim))
        self.add_module(transformer_name, _transformer(shape))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        source = self.fc(x)
        queries = self.decoder_query.to(source.dtype).expand(source.shape[0], -1, -1)
        return getattr(self, self.transformer_name)(src=source, tgt=queries)


def _transformer(shape: TransformerShape) -> nn.Transformer:
    """`nn.Transformer(d_model, nhead, layers, ffn, dropout=0, relu, batch_first, norm_first)` as the release
    builds it, with the same parameter names. Each layer is constructed on its own instead of deep-copied
    from a template (what nn.Transformer does): deep copies of fake or meta tensors (cost model, empty loads)
    do not belong to the mode that made them."""
    options = dict(d_model=shape.dim, nhead=shape.nhead, dim_feedforward=shape.ffn_dim, dropout=0.0,
                   layer_norm_eps=shape.eps, batch_first=True, norm_first=True)

    def stack(kind, layer, count: int):
        # num_layers=0: the template layer is only inspected, never copied; the real layers are set below.
        built = kind(layer(**options), 0, norm=nn.LayerNorm(shape.dim, eps=shape.eps), **(
            {"enable_nested_tensor": False} if kind is nn.TransformerEncoder else {}))
        built.layers = nn.ModuleList([layer(**options) for _ in range(count)])
        built.num_layers = count
        return built

    return nn.Transformer(d_model=shape.dim, nhead=shape.nhead, batch_first=True, norm_first=True,
                          custom_encoder=stack(nn.TransformerEncoder, nn.TransformerEncoderLayer, shape.encoder_layers),
                          custom_decoder=stack(nn.TransformerDecoder, nn.TransformerDecoderLayer, shape.decoder_layers))


class VisionHeadConnector(ContextConnector):
    family = "revise"
    boundary_names = BOUNDARY_NAMES

    def __init__(self, config: VisionHeadConnectorConfig) -> None:
        super().__init__()
        self.config = config
        self.vision_head = QueryTransformer(config.vision_head, "visionHeadAdapter")
        self.dm_adapter = QueryTransformer(config.dm_adapter, "adapter")
        self.visual_context_adapter = VisualContextAdapter(config.latent_channels, config.adapter_hidden_dim,
                                                           config.context_dim, config.adapter_patch_size, config.eps)
        self.boundary = nn.Module()
        for name in BOUNDARY_NAMES:  # fixed (never trained) tokens: buffers, saved with the module
            self.boundary.register_buffer(name, torch.zeros(config.boundary_lengths[name], config.context_dim))
        self.null = nn.Module()
        self.null.register_buffer("text", torch.zeros(config.null_text_len, config.context_dim))
        self.null.register_buffer("vlm", torch.zeros(config.null_vlm_len, config.vlm_dim))

    def frozen_storage_modules(self) -> list[nn.Module]:
        # The release runs its VisionHead and DM_Adapter with bf16 parameters (TRAINABLE_PRECISION, param_dtype),
        # so storing them in bf16 changes nothing it computes; they are 2.1B parameters (7.7 GiB in fp32).
        return [self.vision_head, self.dm_adapter]

    def project_vlm(self, u: torch.Tensor) -> torch.Tensor:
        """u [L, vlm_dim] -> [queries_head · queries_adapter, context_dim] (RM:276-283, the video branch)."""
        if u.ndim != 2 or u.shape[-1] != self.config.vlm_dim:
            raise ValueError(
                f"VLM hidden states must be [L, {self.config.vlm_dim}], got {tuple(u.shape)}: the VLM and the "
                "connector checkpoint do not belong together"
            )
        # In the heads' own dtype: the trainer may store these frozen parts in bf16 while computing in fp32.
        head = self.vision_head(u[None].to(self.vision_head.decoder_query.dtype))  # [1, 4, 1152]
        adapted = self.dm_adapter(head.reshape(-1, 1, head.shape[-1]))  # each head token alone: [4, 256, 4096]
        return rearrange(adapted, "(b n) c d -> b (n c) d", b=1)[0]

    def assemble(self, vlm_tokens: torch.Tensor | None, text_tokens: torch.Tensor | None,
                 video_tokens: torch.Tensor) -> torch.Tensor:
        """`<img_st> v <img_ed> <ipl_st> vlm <ipl_ed> <prp_st> T5 <prp_ed>`, the first `max_context_len` rows.

        Mixed dtypes are promoted as `torch.cat` does in the release (the boundary tokens are fp32 there).
        """
        self.check_part("video", video_tokens)
        self.check_part("VLM", vlm_tokens)
        self.check_part("text", text_tokens)
        bound = {name: getattr(self.boundary, name) for name in BOUNDARY_NAMES}
        parts = [bound["img_st"], video_tokens, bound["img_ed"]]
        if vlm_tokens is not None:
            parts += [bound["ipl_st"], vlm_tokens, bound["ipl_ed"]]
        if text_tokens is not None:
            parts += [bound["prp_st"], text_tokens, bound["prp_ed"]]
        dtype = parts[0].dtype
        for part in parts[1:]:
            dtype = torch.promote_types(dtype, part.dtype)
        context = torch.cat([part.to(device=video_tokens.device, dtype=dtype) for part in parts])
        if context.shape[0] > self.config.max_context_len:
            logger.warning("context of %d tokens cut to max_context_len=%d (its end: the instruction's last tokens)",
                           context.shape[0], self.config.max_context_len)
            context = context[: self.config.max_context_len]
        return context

    def null_context(self, video_tokens: torch.Tensor, *, vlm_tokens: torch.Tensor | None = None) -> torch.Tensor:
        """The release's null branch: unconditioned umT5 and VLM states, the real source video (RU:298-352)."""
        if self.null.vlm.shape[0] == 0 or self.null.text.shape[0] == 0:
            raise ValueError("this ReViSE connector has no unconditioned context (unconditioned_context/context.pkl); "
                             "guidance and the training-time condition drop need it")
        if vlm_tokens is None:
            vlm_tokens = self.project_vlm(self.null.vlm.to(video_tokens.device))
        return self.assemble(vlm_tokens.to(video_tokens.device), self.null.text, video_tokens)

    def null_vlm_states(self) -> torch.Tensor:
        return self.null.vlm


# --- reading the release's files -----------------------------------------------------------------

_LAYER = re.compile(r"^(encoder|decoder)\.layers\.(\d+)\.")


def transformer_shape(tensors: dict[str, torch.Tensor], transformer_name: str, *, what: str) -> TransformerShape:
    """A QueryTransformer's shape from its state dict (keys without the module prefix)."""
    try:
        query = tensors["decoder_query"]
        fc_in = tensors["fc.0.weight"]
        ffn = tensors[f"{transformer_name}.encoder.layers.0.linear1.weight"]
    except KeyError as error:
        raise ValueError(f"{what}: missing tensor {error}; expected an official {transformer_name} state dict") from None
    counts = {"encoder": set(), "decoder": set()}
    for key in tensors:
        if key.startswith(transformer_name + "."):
            match = _LAYER.match(key[len(transformer_name) + 1:])
            if match:
                counts[match.group(1)].add(int(match.group(2)))
    if query.ndim != 3 or query.shape[0] != 1:
        raise ValueError(f"{what}: decoder_query must be [1, queries, width], got {tuple(query.shape)}")
    shape = TransformerShape(in_dim=fc_in.shape[1], dim=query.shape[2], queries=query.shape[1],
                             encoder_layers=len(counts["encoder"]), decoder_layers=len(counts["decoder"]),
                             ffn_dim=ffn.shape[0])
    if fc_in.shape[0] != shape.dim or ffn.shape[1] != shape.dim:
        raise ValueError(f"{what}: widths do not fit together: fc gives {fc_in.shape[0]}, the queries are "
                         f"{shape.dim} wide, the feed-forward takes {ffn.shape[1]}")
    for side in ("encoder", "decoder"):
        if counts[side] != set(range(len(counts[side]))) or not counts[side]:
            raise ValueError(f"{what}: {side} layers {sorted(counts[side])} are not numbered 0..N-1")
    return shape


# transformer/model.pt prefix -> our module; its keys override the separate files (RG:211-230).
TRANSFORMER_PREFIXES = {"adapter.": "dm_adapter.", "ar_vision_head.": "vision_head.",
                        "visual_context_adapter.": "visual_context_adapter."}


def _strip_module(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k[len("module."):] if k.startswith("module.") else k: v for k, v in tensors.items()}


def read_release_tensors(folder, transformer_state: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
    """Every tensor of the connector from a `revise_ckpt/` folder, under our names, in the official order:
    the adapter file, the VisionHead file, then the keys of `transformer/model.pt` (which win), then the
    boundary and unconditioned pickles. `transformer_state` is that file already read (it also holds the DiT)."""
    from pathlib import Path

    from .. import checkpoints as ckpt

    folder = Path(folder)
    tensors: dict[str, torch.Tensor] = {}
    for relative, prefix in ((ADAPTER_FILE, "dm_adapter."), (VISION_HEAD_FILE, "vision_head.")):
        source = ckpt.read_state_dict(_required(folder, relative))
        tensors.update({prefix + k: v for k, v in _strip_module(source.tensors).items()})
    if transformer_state is None:
        transformer_state = ckpt.read_state_dict(_required(folder, TRANSFORMER_FILE)).tensors
    transformer_state = _strip_module(transformer_state)
    overridden = []
    for key, value in transformer_state.items():
        for prefix, ours in TRANSFORMER_PREFIXES.items():
            if key.startswith(prefix):
                name = ours + key[len(prefix):]
                if name in tensors and (tensors[name].shape != value.shape
                                        or not torch.equal(tensors[name].float(), value.float())):
                    overridden.append(name)
                tensors[name] = value
    if overridden:
        logger.info("%s overrides %d tensors of the adapter / vision head files with other values (as the release "
                    "does), e.g. %s", folder / TRANSFORMER_FILE, len(overridden), overridden[:3])
    if not any(k.startswith("visual_context_adapter.") for k in tensors):
        raise ckpt.CheckpointError(
            f"{folder / TRANSFORMER_FILE}: has no visual_context_adapter.* tensors; the release keeps the visual "
            "adapter only there, and it is never left at random weights here")
    tokens = ckpt.read_pickled_tensors(_required(folder, SPECIAL_TOKENS_FILE))
    for name in BOUNDARY_NAMES:
        value = tokens.get(f"<{name}>") if isinstance(tokens, dict) else None
        if not isinstance(value, torch.Tensor):
            raise ckpt.CheckpointError(f"{folder / SPECIAL_TOKENS_FILE}: lacks the tensor '<{name}>'; it has "
                                       f"{sorted(tokens) if isinstance(tokens, dict) else type(tokens).__name__}")
        tensors[f"boundary.{name}"] = value.float().reshape(-1, value.shape[-1])  # [n, D] (also from [1, n, D])
    tensors.update(_unconditioned(folder / UNCONDITIONED_FILE))
    return tensors


def _required(folder, relative: str):
    from .. import checkpoints as ckpt

    path = folder / relative
    if not path.is_file():
        raise ckpt.ModelFileNotFoundError(f"{folder}: missing {relative} (a ReViSE release folder has it)")
    return path


def _unconditioned(path) -> dict[str, torch.Tensor]:
    from .. import checkpoints as ckpt

    if not path.is_file():
        raise ckpt.ModelFileNotFoundError(f"missing {path} (a ReViSE release folder has it)")
    raw = ckpt.read_pickled_tensors(path)
    out = {}
    for key, ours in (("text_emb", "null.text"), ("vlm_last_hidden_states", "null.vlm")):
        value = raw.get(key) if isinstance(raw, dict) else None
        if isinstance(value, (list, tuple)) and value:  # the release stores lists of one tensor (RG:112-163)
            value = value[0]
        if not isinstance(value, torch.Tensor):
            raise ckpt.CheckpointError(f"{path}: expected a tensor (or a list of one) under '{key}', found "
                                       f"{type(value).__name__}")
        out[ours] = value.float().reshape(-1, value.shape[-1])  # [L, D] (also from [1, L, D])
    return out


def config_from_tensors(tensors: dict[str, torch.Tensor], *, what: str) -> VisionHeadConnectorConfig:
    """The connector's shapes from its tensors, each derivation checked against the others."""
    def part(prefix: str) -> dict[str, torch.Tensor]:
        return {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}

    head = transformer_shape(part("vision_head."), "visionHeadAdapter", what=f"{what} (VisionHead)")
    adapter = transformer_shape(part("dm_adapter."), "adapter", what=f"{what} (DM_Adapter)")
    conv = tensors.get("visual_context_adapter.patch_embedding.weight")
    projection = tensors.get("visual_context_adapter.projection.weight")
    if conv is None or projection is None or conv.ndim != 5:
        raise ValueError(f"{what}: the visual_context_adapter needs patch_embedding.weight [D, C, t, h, w] and "
                         "projection.weight")
    problems = []
    if projection.shape != (adapter.dim, conv.shape[0]):
        problems.append(f"the visual adapter projects {conv.shape[0]} -> {projection.shape[0]} with a "
                        f"{tuple(projection.shape)} matrix, but the context is {adapter.dim} wide")
    lengths = {}
    for name in BOUNDARY_NAMES:
        token = tensors[f"boundary.{name}"]
        if token.shape[-1] != adapter.dim:
            problems.append(f"boundary token <{name}> is {token.shape[-1]} wide, the context {adapter.dim}")
        lengths[name] = token.shape[0]
    null_text, null_vlm = tensors["null.text"], tensors["null.vlm"]
    if null_text.shape[-1] != adapter.dim:
        problems.append(f"the unconditioned umT5 context is {null_text.shape[-1]} wide, the context {adapter.dim}")
    if null_vlm.shape[-1] != head.in_dim:
        problems.append(f"the unconditioned VLM states are {null_vlm.shape[-1]} wide, the VisionHead takes {head.in_dim}")
    if problems:
        raise ValueError(f"{what}: widths do not fit together: " + "; ".join(problems))
    return VisionHeadConnectorConfig(
        vision_head=head, dm_adapter=adapter, latent_channels=conv.shape[1], adapter_hidden_dim=conv.shape[0],
        adapter_patch_size=tuple(conv.shape[2:]), boundary_lengths=lengths, null_text_len=null_text.shape[0],
        null_vlm_len=null_vlm.shape[0])


def load_release_connector(folder, *, transformer_state: dict[str, torch.Tensor] | None = None,
                           dtype: torch.dtype | str = torch.float32, device: torch.device | str = "cpu",
                           ) -> VisionHeadConnector:
    """The connector of a ReViSE release folder (`revise_ckpt/`), every parameter from a file (strict)."""
    from pathlib import Path

    from .. import checkpoints as ckpt

    folder = Path(folder)
    tensors = read_release_tensors(folder, transformer_state)
    try:
        config = config_from_tensors(tensors, what=str(folder))
    except ValueError as error:
        raise ckpt.CheckpointError(str(error)) from error
    return ckpt.load_into(lambda: VisionHeadConnector(config), tensors, path=folder, component="ReViSE connector",
                          layout="revise release", dtype=ckpt.resolve_dtype(dtype), device=device)


def load_saved(source, *, dtype: torch.dtype, device: torch.device | str) -> VisionHeadConnector:
    """Our safetensors of this family (`save_connector`), its config embedded in the metadata."""
    from .. import checkpoints as ckpt

    data = dict(source.embedded_config())
    data.pop("_diffusers_version", None)
    config = VisionHeadConnectorConfig.from_dict(data)
    tensors = dict(source.tensors)
    empty = {f"boundary.{n}": (config.boundary_lengths[n], config.context_dim) for n in BOUNDARY_NAMES}
    empty |= {"null.text": (config.null_text_len, config.context_dim), "null.vlm": (config.null_vlm_len, config.vlm_dim)}
    for key, shape in empty.items():  # zero-row buffers are not written to the file
        if shape[0] == 0:
            tensors.setdefault(key, torch.zeros(shape))
    return ckpt.load_into(lambda: VisionHeadConnector(config), tensors, path=source.path, component="connector",
                          layout="revise", dtype=dtype, device=device)

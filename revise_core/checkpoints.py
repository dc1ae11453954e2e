"""Reading checkpoint files safely and loading them into modules with errors a user can act on.

Everything that touches a weights file goes through here:
- `read_state_dict` reads safetensors directly and `.pt/.pth/.bin/.ckpt` only through
  `torch.load(..., weights_only=True)` (never a full unpickle), and turns truncated or corrupt files
  into a `CorruptCheckpointError` that names the file.
- `fold_fp8_scales` / `cast_floating` turn fp8 storage (plain e4m3fn/e5m2 and ComfyUI "scaled fp8")
  into the compute dtype.
- `load_into` builds a module on the meta device and loads a state dict strictly, so a wrong layout is
  reported with the first missing / unexpected / mis-shaped keys instead of a silent partial load.
- `find_model_file` resolves a name against a list of folders and lists every folder it searched.

Layout detection and key mapping live in the component modules (`dit.py`, `vae.py`, ...), which call
`detect_layout` with their own table of layouts.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

logger = logging.getLogger(__name__)

SAFETENSORS_SUFFIXES = (".safetensors",)
PICKLE_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt")
# safetensors metadata keys written by this project so that files it writes describe themselves.
METADATA_FORMAT_KEY = "revise.format"
METADATA_CONFIG_KEY = "revise.config"
# Keys under which training frameworks nest a state dict inside a pickle (DeepSpeed: "module").
_NESTED_STATE_KEYS = ("module", "state_dict", "model", "model_state_dict")
_SHOW_KEYS = 8


class CheckpointError(ValueError):
    """A model file exists but cannot be used as the requested component."""


class UnknownLayoutError(CheckpointError):
    """The keys of a file match none of the layouts this project can load."""


class CorruptCheckpointError(CheckpointError):
    """A file is truncated, not a checkpoint at all, or otherwise unreadable."""


class ModelFileNotFoundError(FileNotFoundError):
    """A model file or folder was not found in any of the folders searched."""


def find_model_file(name: str | os.PathLike, search_dirs: Sequence[str | os.PathLike] = ()) -> Path:
    """Resolve `name` (an absolute/relative path, or a name inside one of `search_dirs`).

    Raises ModelFileNotFoundError listing every place that was tried.
    """
    candidate = Path(name).expanduser()
    tried: list[Path] = []
    if candidate.is_absolute() or not search_dirs:
        tried.append(candidate)
        if candidate.exists():
            return candidate
    else:
        if candidate.exists():
            return candidate
        tried.append(candidate.resolve())
        for folder in search_dirs:
            path = Path(folder).expanduser() / candidate
            tried.append(path)
            if path.exists():
                return path
    searched = "\n".join(f"  - {p}" for p in tried)
    raise ModelFileNotFoundError(f"model file '{name}' not found. Looked for:\n{searched}")


@dataclass(frozen=True)
class StateDictFile:
    """The tensors of one checkpoint file, plus the safetensors metadata (empty for pickles)."""

    path: Path
    tensors: dict[str, torch.Tensor]
    metadata: dict[str, str]

    def embedded_config(self) -> dict | None:
        """The module config this project embeds in files it writes, if any."""
        raw = self.metadata.get(METADATA_CONFIG_KEY)
        if raw is None:
            return None
        try:
            return json.loads(raw)
        except json.JSONDecodeError as error:
            raise CorruptCheckpointError(
                f"{self.path}: metadata field '{METADATA_CONFIG_KEY}' is not valid JSON ({error})"
            ) from error


def read_state_dict(path: str | os.PathLike) -> StateDictFile:
    """Read all tensors of a safetensors or pickle checkpoint onto the CPU, safely.

    Pickles are read with `weights_only=True` (no arbitrary code execution); a pickle that needs more
    than tensors and plain containers is refused with a message that says so.
    """
    path = Path(path)
    if not path.is_file():
        raise ModelFileNotFoundError(f"model file not found: {path}")
    suffix = path.suffix.lower()
    if suffix in SAFETENSORS_SUFFIXES:
        return _read_safetensors(path)
    if suffix in PICKLE_SUFFIXES:
        return StateDictFile(path, _read_pickle(path), {})
    raise CheckpointError(
        f"{path}: unsupported file type '{suffix}'. Expected one of "
        f"{', '.join(SAFETENSORS_SUFFIXES + PICKLE_SUFFIXES)} (safetensors preferred)."
    )


def _read_safetensors(path: Path) -> StateDictFile:
    from safetensors import SafetensorError, safe_open

    size = path.stat().st_size
    try:
        with safe_open(str(path), framework="pt", device="cpu") as handle:
            metadata = dict(handle.metadata() or {})
            tensors = {key: handle.get_tensor(key) for key in handle.keys()}
    except (SafetensorError, OSError, RuntimeError) as error:
        raise CorruptCheckpointError(
            f"{path}: the safetensors file is truncated or corrupt ({size} bytes on disk): {error}. "
            "Download it again and compare its size with the source."
        ) from error
    return StateDictFile(path, tensors, metadata)


def _read_pickle(path: Path) -> dict[str, torch.Tensor]:
    import pickle
    import zipfile

    size = path.stat().st_size
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True, mmap=_is_zip(path))
    except pickle.UnpicklingError as error:
        raise CheckpointError(
            f"{path}: refused to unpickle: the file holds more than tensors ({error}). Only plain "
            "weight files are read; convert it to safetensors with the tool that made it."
        ) from error
    except (RuntimeError, EOFError, OSError, zipfile.BadZipFile, ValueError) as error:
        raise CorruptCheckpointError(
            f"{path}: the checkpoint is truncated or corrupt ({size} bytes on disk): {error}. "
            "Download it again and compare its size with the source."
        ) from error
    return _unwrap_state_dict(obj, path)


def read_weights_folder(folder: Path, index_names: Sequence[str], weight_names: Sequence[str], *,
                        what: str) -> dict[str, torch.Tensor]:
    """A model folder's tensors: every shard of the first index present, else the first single weights file."""
    for index_name in index_names:
        index_path = folder / index_name
        if index_path.is_file():
            shards = sorted(set(read_json(index_path, what="weights index").get("weight_map", {}).values()))
            if not shards:
                raise CheckpointError(f"{index_path}: 'weight_map' is empty or missing")
            tensors: dict[str, torch.Tensor] = {}
            for shard in shards:
                tensors.update(read_state_dict(folder / shard).tensors)
            return tensors
    for name in weight_names:
        if (folder / name).is_file():
            return dict(read_state_dict(folder / name).tensors)
    raise ModelFileNotFoundError(
        f"{folder}: no {what} weights found; looked for {', '.join(tuple(weight_names) + tuple(index_names))}")


def read_tensor_pickle(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read a plain `pickle.dump` of a dict of tensors (Omni-Video's `special_tokens.pkl`) safely."""
    return _unwrap_state_dict(read_pickled_tensors(path), Path(path))


def read_pickled_tensors(path: str | os.PathLike) -> object:
    """Read a plain `pickle.dump` of tensors (dicts, lists and tuples of them) without running any code.

    `torch.load(weights_only=True)` refuses such files (they are not in torch.save format), so this
    unpickler admits exactly the three globals a pickled tensor needs and nothing else; the storage bytes
    inside are themselves read with `weights_only=True` and mapped to the CPU (the release's pickles were
    written from `cuda:0`).
    """
    import collections
    import io
    import pickle

    import torch._utils

    def load_storage(data: bytes) -> object:
        return torch.load(io.BytesIO(data), weights_only=True, map_location="cpu")

    allowed = {
        ("torch._utils", "_rebuild_tensor_v2"): torch._utils._rebuild_tensor_v2,
        ("collections", "OrderedDict"): collections.OrderedDict,
        ("torch.storage", "_load_from_bytes"): load_storage,
    }

    class TensorOnlyUnpickler(pickle.Unpickler):
        def find_class(self, module: str, name: str) -> object:
            try:
                return allowed[(module, name)]
            except KeyError:
                raise pickle.UnpicklingError(f"global '{module}.{name}' is not allowed") from None

    path = Path(path)
    if not path.is_file():
        raise ModelFileNotFoundError(f"file not found: {path}")
    try:
        with open(path, "rb") as handle:
            return TensorOnlyUnpickler(handle).load()
    except pickle.UnpicklingError as error:
        if "truncated" in str(error):
            raise CorruptCheckpointError(f"{path}: truncated pickle ({path.stat().st_size} bytes): {error}") from error
        raise CheckpointError(f"{path}: refused to unpickle: {error}; expected plain tensors") from error
    except (EOFError, RuntimeError, ValueError) as error:
        raise CorruptCheckpointError(f"{path}: truncated or corrupt pickle: {error}") from error


def _is_zip(path: Path) -> bool:
    # mmap only works on the zip format that torch.save has written since 1.6.
    with open(path, "rb") as handle:
        return handle.read(4) == b"PK\x03\x04"


def _unwrap_state_dict(obj: object, path: Path) -> dict[str, torch.Tensor]:
    """Accept a flat {name: tensor} dict, possibly nested once under a framework key."""
    if isinstance(obj, Mapping):
        for key in _NESTED_STATE_KEYS:
            inner = obj.get(key)
            if isinstance(inner, Mapping) and inner and all(isinstance(v, torch.Tensor) for v in inner.values()):
                logger.info("%s: using the state dict nested under '%s'", path, key)
                return dict(inner)
        tensors = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
        if tensors and len(tensors) == len(obj):
            return dict(tensors)
        if tensors:
            skipped = sorted(str(k) for k, v in obj.items() if not isinstance(v, torch.Tensor))
            raise CheckpointError(
                f"{path}: mixes tensors with other entries {skipped[:_SHOW_KEYS]}; expected a plain "
                f"state dict or one nested under one of {list(_NESTED_STATE_KEYS)}."
            )
    raise CheckpointError(
        f"{path}: not a state dict (found {type(obj).__name__}); expected a mapping of parameter "
        f"names to tensors, or one nested under one of {list(_NESTED_STATE_KEYS)}."
    )


def fold_fp8_scales(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Undo ComfyUI "scaled fp8": weight = fp8 * scale, computed in fp32; marker keys removed.

    Such files carry a marker tensor `scaled_fp8` and, per quantised Linear, a scalar
    `<layer>.scale_weight` and sometimes `<layer>.scale_input` (used only by fp8 matmuls, so dropped:
    we compute in a float dtype). Files without the marker are returned unchanged.
    """
    scales = {k[: -len(".scale_weight")]: v for k, v in state_dict.items() if k.endswith(".scale_weight")}
    if "scaled_fp8" not in state_dict and not scales:
        return dict(state_dict)
    out: dict[str, torch.Tensor] = {}
    for key, tensor in state_dict.items():
        if key == "scaled_fp8" or key.endswith((".scale_weight", ".scale_input")):
            continue
        layer = key[: -len(".weight")] if key.endswith(".weight") else None
        if layer is not None and layer in scales:
            # Multiply in fp32: the scale is often far outside the fp8 range.
            out[key] = tensor.to(torch.float32) * scales[layer].to(torch.float32)
        else:
            out[key] = tensor
    return out


def cast_floating(state_dict: Mapping[str, torch.Tensor], dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """Copy every tensor into fresh memory, floating ones (fp8 storage included) cast to `dtype`.

    Always a copy: tensors read from a file are views into a memory map whose data offsets depend on
    the header length; unaligned weights take other SIMD paths and change results in the last bits,
    and a model must not keep the file mapped anyway.
    """
    return {k: v.to(dtype if v.is_floating_point() else v.dtype, copy=True) for k, v in state_dict.items()}


def strip_prefix(state_dict: Mapping[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """The entries under `prefix`, with the prefix removed."""
    return {k[len(prefix):]: v for k, v in state_dict.items() if k.startswith(prefix)}


@dataclass(frozen=True)
class Layout:
    """A named key layout: how to recognise it and which prefix holds the component's tensors."""

    name: str
    description: str
    # Keys (after nothing is stripped) that must all be present for the layout to match.
    required_keys: tuple[str, ...]
    # Prefix to strip to get the component's own keys ("" for none).
    prefix: str = ""
    # Keys that must be absent (to tell apart layouts that share keys).
    forbidden_keys: tuple[str, ...] = ()


def detect_layout(keys: Iterable[str], layouts: Sequence[Layout], *, path: Path, component: str) -> Layout:
    """The first layout whose required keys are all present; UnknownLayoutError otherwise."""
    key_set = set(keys)
    for layout in layouts:
        if all(k in key_set for k in layout.required_keys) and not any(k in key_set for k in layout.forbidden_keys):
            return layout
    sample = sorted(key_set)[:_SHOW_KEYS]
    supported = "\n".join(f"  - {layout.name}: {layout.description}" for layout in layouts)
    raise UnknownLayoutError(
        f"{path}: not a {component} checkpoint in any supported layout. It has {len(key_set)} tensors; "
        f"the first keys are {sample}.\nSupported {component} layouts:\n{supported}"
    )


def describe_key_mismatch(
    expected: Mapping[str, torch.Size], found: Mapping[str, torch.Tensor]
) -> tuple[list[str], list[str], list[str]]:
    """Missing keys, unexpected keys and shape mismatches (as readable strings), each sorted."""
    missing = sorted(set(expected) - set(found))
    unexpected = sorted(set(found) - set(expected))
    mismatched = sorted(
        f"{k}: file {tuple(found[k].shape)} vs model {tuple(expected[k])}"
        for k in set(expected) & set(found)
        if tuple(found[k].shape) != tuple(expected[k])
    )
    return missing, unexpected, mismatched


def format_key_mismatch(missing: list[str], unexpected: list[str], mismatched: list[str]) -> str:
    parts = []
    for label, items in (("missing", missing), ("unexpected", unexpected), ("wrong shape", mismatched)):
        if items:
            more = f" (+{len(items) - _SHOW_KEYS} more)" if len(items) > _SHOW_KEYS else ""
            parts.append(f"{len(items)} {label}: {items[:_SHOW_KEYS]}{more}")
    return "; ".join(parts)


def expected_shapes(factory: Callable[[], nn.Module]) -> dict[str, torch.Size]:
    """Parameter/buffer shapes of a module built on the meta device (no memory, no init cost)."""
    module = _build_empty(factory)
    return {k: v.shape for k, v in module.state_dict().items()}


def _build_empty(factory: Callable[[], nn.Module]) -> nn.Module:
    from accelerate import init_empty_weights

    # Parameters go to the meta device; buffers (e.g. RoPE tables, not saved in checkpoints) stay real.
    with init_empty_weights(include_buffers=False):
        return factory()


def load_into(
    factory: Callable[[], nn.Module],
    state_dict: Mapping[str, torch.Tensor],
    *,
    path: Path,
    component: str,
    layout: str,
    dtype: torch.dtype,
    device: torch.device | str = "cpu",
    keep_fp32: Sequence[str] = (),
    optional_keys: Sequence[str] = (),
) -> nn.Module:
    """Build `factory()` without allocating, then load `state_dict` strictly in `dtype`.

    `keep_fp32` names submodules kept in float32 when `dtype` is half precision (diffusers' own
    policy for numerically fragile layers: norms, modulation tables, the time embedding). `optional_keys` may be absent from the file (e.g. tied embeddings);
    the module's own value is kept for them.
    """
    state_dict = fold_fp8_scales(state_dict)
    module = _build_empty(factory)
    expected = {k: v.shape for k, v in module.state_dict().items()}
    persistent = set(expected) - _non_persistent_buffers(module)
    expected_saved = {k: expected[k] for k in persistent}
    missing, unexpected, mismatched = describe_key_mismatch(expected_saved, state_dict)
    missing = [k for k in missing if k not in optional_keys]
    if missing or unexpected or mismatched:
        raise UnknownLayoutError(
            f"{path}: detected the '{layout}' {component} layout, but its tensors do not fit the "
            f"configured model: {format_key_mismatch(missing, unexpected, mismatched)}. "
            "Check that the config (or model variant) matches this file."
        )
    # The same rule as diffusers' from_pretrained (any half dtype, any dotted component of the key),
    # so our half-precision models compute like diffusers-loaded ones; the fp32 values stay exact.
    kept = {k for k in state_dict if dtype != torch.float32 and any(n in k.split(".") for n in keep_fp32)}
    tensors = cast_floating({k: v for k, v in state_dict.items() if k not in kept}, dtype)
    tensors.update(cast_floating({k: state_dict[k] for k in kept}, torch.float32))
    module.load_state_dict(tensors, strict=False, assign=True)
    still_meta = [n for n, p in module.named_parameters() if p.is_meta]
    if still_meta:
        raise UnknownLayoutError(f"{path}: {component} parameters left without weights: {still_meta[:_SHOW_KEYS]}")
    module.to(device)
    module.eval()
    logger.info("loaded %s from %s (layout %s, %s)", component, path, layout, dtype)
    return module


def _non_persistent_buffers(module: nn.Module) -> set[str]:
    names = set()
    for prefix, sub in module.named_modules():
        for buffer_name in getattr(sub, "_non_persistent_buffers_set", ()):
            names.add(f"{prefix}.{buffer_name}" if prefix else buffer_name)
    return names


def save_safetensors(
    tensors: Mapping[str, torch.Tensor], path: str | os.PathLike, *, format_name: str, config: dict | None = None
) -> Path:
    """Write tensors as safetensors with this project's self-describing metadata, atomically."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    metadata = {METADATA_FORMAT_KEY: format_name}
    if config is not None:
        metadata[METADATA_CONFIG_KEY] = json.dumps(config, sort_keys=True)
    contiguous = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")  # per process: two writers never share one file
    save_file(contiguous, str(tmp), metadata=metadata)
    os.replace(tmp, path)
    return path


def read_json(path: str | os.PathLike, *, what: str) -> dict:
    """Read a JSON config with an error that names the file."""
    path = Path(path)
    if not path.is_file():
        raise ModelFileNotFoundError(f"{what} not found: {path}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise CheckpointError(f"{path}: {what} is not valid JSON ({error})") from error
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: {what} must be a JSON object, found {type(data).__name__}")
    return data


def compute_dtype(module: nn.Module) -> torch.dtype:
    """The dtype a model computes in: the one it was loaded as.

    Not the dtype of its first parameter: diffusers and transformers keep some modules in fp32 in a half
    precision model (Wan's `scale_shift_table` is the DiT's first parameter), and inputs cast to that dtype
    crash the first half-precision layer. Their `dtype` property skips those modules; for other modules the
    dtype that holds most of the floating-point weights is the compute dtype.
    """
    dtype = getattr(module, "dtype", None)
    if isinstance(dtype, torch.dtype):
        return dtype
    sizes: dict[torch.dtype, int] = {}
    for parameter in module.parameters():
        if parameter.is_floating_point():
            sizes[parameter.dtype] = sizes.get(parameter.dtype, 0) + parameter.numel()
    if not sizes:
        raise ValueError(f"{type(module).__name__} has no floating-point parameters to take a dtype from")
    return max(sizes, key=sizes.get)


# Set on a model whose weights may rest off the device it computes on (placement.py, the nodes): where its
# inputs must go.
COMPUTE_DEVICE_ATTRIBUTE = "revise_compute_device"


def device_of(module: nn.Module) -> torch.device:
    """The device a model computes on: its placement's when it has one (its weights may rest on the host or
    stream in layer by layer), else where its parameters are."""
    device = getattr(module, COMPUTE_DEVICE_ATTRIBUTE, None)
    return torch.device(device) if device is not None else next(module.parameters()).device


DTYPE_CHOICES = ("auto", "fp32", "bf16", "fp16")


def default_device(name: str | None = None) -> str:
    """The device a command runs on: `name` when given, else cuda when there is one, else cpu."""
    return name or ("cuda" if torch.cuda.is_available() else "cpu")


def auto_dtype(name: str | None, device: torch.device | str) -> str:
    """'auto' (or None) -> bf16 on CUDA, fp32 elsewhere; other names pass through.

    Half precision on the CPU is slow (no half-precision conv3d kernels: a tiny VAE encode takes minutes)
    and saves nothing, so it is used there only when asked for.
    """
    if name in (None, "auto"):
        return "bf16" if torch.device(device).type == "cuda" else "fp32"
    if name not in DTYPE_CHOICES:
        raise ValueError(f"unknown dtype '{name}'; expected one of {DTYPE_CHOICES}")
    return name


def resolve_dtype(dtype: torch.dtype | str) -> torch.dtype:
    """Accept a torch dtype or one of 'fp32', 'fp16', 'bf16' (and their long names)."""
    if isinstance(dtype, torch.dtype):
        return dtype
    names = {
        "fp32": torch.float32, "float32": torch.float32,
        "fp16": torch.float16, "float16": torch.float16,
        "bf16": torch.bfloat16, "bfloat16": torch.bfloat16,
    }
    try:
        return names[str(dtype).lower()]
    except KeyError:
        raise ValueError(f"unknown dtype '{dtype}'; expected one of {sorted(names)}") from None

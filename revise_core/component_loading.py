"""One loading pipeline for the diffusers-class components (DiT, VAE): folder or single file.

folder (config.json + weights, sharded or not)  ┐
single file in any layout of the component        ├─> tensors in diffusers names -> config -> strict load
                                                  ┘
The config comes from the caller, the file's embedded metadata, the folder's config.json, or an exact
match of every tensor name and shape against the known variants, in that order.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from . import checkpoints as ckpt
from .variants import ConfigSpec, Variant, resolve_config, variants_for

logger = logging.getLogger(__name__)

WEIGHT_NAMES = ("diffusion_pytorch_model.safetensors", "model.safetensors", "diffusion_pytorch_model.bin")
INDEX_NAMES = ("diffusion_pytorch_model.safetensors.index.json", "model.safetensors.index.json")


@dataclass(frozen=True)
class SingleFileLayout:
    """A single-file layout plus the function that renames its (prefix-stripped) keys to diffusers."""

    layout: ckpt.Layout
    to_diffusers: Callable[[Mapping[str, torch.Tensor]], dict[str, torch.Tensor]]


@dataclass(frozen=True)
class ComponentSpec:
    component: str  # "dit", "vae"
    model_class: Callable[[], type[nn.Module]]  # lazy: importing diffusers costs seconds
    layouts: Sequence[SingleFileLayout]


def load_component(
    spec: ComponentSpec,
    path: str | os.PathLike,
    *,
    config: ConfigSpec,
    dtype: torch.dtype | str,
    device: torch.device | str,
    variants: tuple[Variant, ...],
) -> nn.Module:
    dtype = ckpt.resolve_dtype(dtype)
    path = Path(path)
    if not path.exists():
        raise ckpt.ModelFileNotFoundError(f"{spec.component} model not found: {path}")
    config_dict = resolve_config(config, spec.component, variants)
    if path.is_dir():
        tensors, layout_name, folder_config = _read_folder(path, spec.component)
        config_dict = config_dict or folder_config
    else:
        source = ckpt.read_state_dict(path)
        tensors, layout_name = _to_diffusers_keys(spec, source)
        config_dict = config_dict or source.embedded_config()
    model_class = spec.model_class()
    if config_dict is None:
        config_dict = _match_variant(spec, model_class, tensors, path, variants)
    config_dict = {k: v for k, v in config_dict.items() if not k.startswith("_")}
    keep_fp32 = tuple(getattr(model_class, "_keep_in_fp32_modules", None) or ())
    return ckpt.load_into(
        lambda: model_class.from_config(config_dict), tensors, path=path, component=spec.component,
        layout=layout_name, dtype=dtype, device=device, keep_fp32=keep_fp32,
    )


def _read_folder(folder: Path, component: str) -> tuple[dict[str, torch.Tensor], str, dict]:
    """A diffusers model folder: config.json plus one weights file or an index of shards."""
    config = ckpt.read_json(folder / "config.json", what=f"{component} config") if (folder / "config.json").is_file() else None
    if config is None:
        raise ckpt.ModelFileNotFoundError(
            f"{folder}: a {component} folder needs a config.json (diffusers layout); found "
            f"{sorted(p.name for p in folder.iterdir())[:12]}"
        )
    return ckpt.read_weights_folder(folder, INDEX_NAMES, WEIGHT_NAMES, what=component), "diffusers-folder", config


def _to_diffusers_keys(spec: ComponentSpec, source: ckpt.StateDictFile) -> tuple[dict[str, torch.Tensor], str]:
    layouts = [entry.layout for entry in spec.layouts]
    layout = ckpt.detect_layout(source.tensors, layouts, path=source.path, component=spec.component)
    entry = next(e for e in spec.layouts if e.layout is layout)
    own = ckpt.strip_prefix(source.tensors, layout.prefix) if layout.prefix else dict(source.tensors)
    logger.info("%s: detected %s layout '%s'", source.path, spec.component, layout.name)
    return entry.to_diffusers(own), layout.name


def _match_variant(
    spec: ComponentSpec, model_class: type[nn.Module], tensors: Mapping[str, torch.Tensor], path: Path,
    variants: tuple[Variant, ...],
) -> dict:
    def build(config: dict) -> nn.Module:
        return model_class.from_config({k: v for k, v in config.items() if not k.startswith("_")})

    return match_variant(spec.component, build, tensors, path, variants)


def match_variant(
    component: str, build: Callable[[dict], nn.Module], tensors: Mapping[str, torch.Tensor], path: Path,
    variants: tuple[Variant, ...], *, ignore_prefixes: tuple[str, ...] = (),
) -> dict:
    """The config of the one known variant whose every tensor name and shape equals the file's.

    `build(config)` makes the module (on the meta device, so real sizes cost nothing); keys under
    `ignore_prefixes` are left out of the comparison on both sides.
    """
    def kept(names):
        return {k: v for k, v in names.items() if not k.startswith(ignore_prefixes)} if ignore_prefixes else dict(names)

    found = kept(tensors)
    report, matches = [], []
    for variant in variants_for(component, variants):
        data = variant.load_config()
        expected = kept(ckpt.expected_shapes(lambda data=data: build(data)))
        missing, unexpected, mismatched = ckpt.describe_key_mismatch(expected, found)
        if missing or unexpected or mismatched:
            report.append(f"  - {variant.name}: {ckpt.format_key_mismatch(missing, unexpected, mismatched)}")
        else:
            matches.append((variant, data))
    if len(matches) == 1:
        logger.info("%s: matches variant '%s'", path, matches[0][0].name)
        return matches[0][1]
    if len(matches) > 1:
        names = [v.name for v, _ in matches]
        raise ckpt.UnknownLayoutError(f"{path}: matches several variants {names}; pass config=<one of them>")
    raise ckpt.UnknownLayoutError(
        f"{path}: the {component} tensors match no known variant and no config was given "
        "(pass config=<variant name or config.json>). Compared with:\n" + ("\n".join(report) or "  (none)")
    )

"""External Wan2.1 LoRAs on the DiT: read in the layouts users have, applied with a strength each, stacked.

Layouts, told apart by their keys:
- ComfyUI / original Wan (`diffusion_model.blocks.0.self_attn.q.lora_down.weight` or `lora_A`, `.alpha`);
  step-distilled LoRAs add `.diff_b` (a bias delta) and `.diff` (a whole-weight delta, e.g. of a norm);
- kohya / musubi-tuner (`lora_unet_blocks_0_self_attn_q.lora_down.weight`, `.alpha`);
- diffusers / peft (`transformer.blocks.0.attn1.to_q.lora_A.weight`, alpha in the file's adapter metadata).
diffusers' Wan LoRA conversion (`WanLoraLoaderMixin.lora_state_dict`) turns the first two into the third with
alpha folded into the factors. Whole-weight and bias deltas of modules without factors are taken here, before
that conversion, which would drop them (it treats norm deltas as zeros and skips bias-only ones), and mapped
with the DiT's own key table (`wan_keys`).

A LoRA is applied as weight deltas, per parameter and in float32: ΔW = strength · (alpha / rank) · B·A,
Δb = strength · diff_b, ΔW = strength · diff. `fuse_loras` adds them for good (the command line owns its DiT);
`patched_loras` adds them for one use and puts the exact weights back after (a ComfyUI graph shares its cached
DiT between nodes). Nothing is kept per step, so sampling costs what it costs without a LoRA.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from . import checkpoints as ckpt
from .wan_keys import dit_diffusers_to_original

logger = logging.getLogger(__name__)

LORA_SUFFIXES = (".safetensors",)
DIFFUSERS_PREFIX = "transformer."
ORIGINAL_PREFIX = "diffusion_model."
KOHYA_PREFIX = "lora_unet_"
# low-rank factor names: (down, up) in the original / kohya layouts and in peft's
_DOWN, _UP = (".lora_down.weight", ".lora_A.weight"), (".lora_up.weight", ".lora_B.weight")
_WHOLE = (".diff", ".diff_b")  # whole-weight and bias deltas
_SHOWN_KEYS = 3
STRENGTH_RANGE = (-10.0, 10.0)  # beyond it a typo, not a choice (ComfyUI's LoRA loaders allow -100..100)


class LoraError(ckpt.CheckpointError):
    """A LoRA file that cannot be applied to this DiT."""


@dataclass(frozen=True)
class LoraChoice:
    """A LoRA file and the strength to apply it at (1.0: as trained; 0: off; negative: subtracted)."""

    path: Path
    strength: float = 1.0

    def __post_init__(self) -> None:
        low, high = STRENGTH_RANGE
        if not (math.isfinite(self.strength) and low <= self.strength <= high):
            raise ValueError(f"LoRA {self.path}: strength must be a number in [{low}, {high}], got {self.strength}")

    @classmethod
    def parse(cls, text: str) -> LoraChoice:
        """`PATH` or `PATH:STRENGTH` (the command line's --lora)."""
        path, sep, strength = text.rpartition(":")
        if sep and path and not re.fullmatch(r"[\\/].*", strength):  # "C:\x.safetensors" has no strength
            try:
                return cls(Path(path), float(strength))
            except ValueError as error:
                if "strength must be" in str(error):
                    raise
        return cls(Path(text))


@dataclass
class WanLora:
    """A LoRA in the DiT's own names (diffusers `WanTransformer3DModel` modules and parameters)."""

    path: Path
    # module -> (down [r, in], up [out, r], scale): ΔW = scale · up @ down
    factors: dict[str, tuple[torch.Tensor, torch.Tensor, float]] = field(default_factory=dict)
    deltas: dict[str, torch.Tensor] = field(default_factory=dict)  # parameter -> whole delta (diff, diff_b)

    @property
    def parameters(self) -> set[str]:
        return {f"{module}.weight" for module in self.factors} | set(self.deltas)

    def delta(self, parameter: str) -> torch.Tensor | None:
        """This LoRA's float32 delta of one DiT parameter at strength 1, or None where it has none."""
        total = self.deltas[parameter].float() if parameter in self.deltas else None
        module, _, kind = parameter.rpartition(".")
        if kind == "weight" and module in self.factors:
            down, up, scale = self.factors[module]
            product = (up.float() @ down.float().flatten(1)).reshape(-1, *down.shape[1:]) * scale
            total = product if total is None else total + product
        return total


def read_lora(path: str | os.PathLike, dit: nn.Module) -> WanLora:
    """The LoRA at `path` in `dit`'s names, checked against its parameters (names and shapes)."""
    path = Path(path)
    if path.suffix.lower() not in LORA_SUFFIXES:
        raise LoraError(f"{path}: a LoRA is read from a .safetensors file (pickled LoRAs are not loaded: they can "
                        f"run code); got '{path.suffix}'")
    stored = ckpt.read_state_dict(path)
    tensors = _with_layout_prefix(dict(stored.tensors), path)
    lora = WanLora(path)
    names = _dit_names(dit)
    low_rank_modules = {key[: -len(s)] for key in tensors for s in _DOWN + _UP if key.endswith(s)}
    for key in [k for k in tensors if k.endswith(_WHOLE)]:
        module, _, kind = key.rpartition(".")
        if kind == "diff_b" and module in low_rank_modules and not key.startswith(DIFFUSERS_PREFIX):
            continue  # a LoRA's own bias: diffusers' conversion makes it lora_B.bias
        parameter = names.get(f"{module}.{'bias' if kind == 'diff_b' else 'weight'}")
        lora.deltas[parameter or key] = tensors.pop(key)  # an unknown name is reported by _check below
    native = not tensors or next(iter(tensors)).startswith(DIFFUSERS_PREFIX)
    if not native:
        tensors = _diffusers_conversion(tensors, path)
    # peft's alpha / rank from a diffusers file's metadata; the conversion folds a converted file's alpha already
    scale_of = _peft_scales(stored.metadata, path) if native else (lambda module, rank: 1.0)
    biases = {key[len(DIFFUSERS_PREFIX): -len(".lora_B.bias")]: tensors.pop(key)
              for key in [k for k in tensors if k.endswith(".lora_B.bias")]}
    for key in [k for k in tensors if k.endswith(".lora_A.weight")]:
        module = key[len(DIFFUSERS_PREFIX): -len(".lora_A.weight")]
        up_key = f"{DIFFUSERS_PREFIX}{module}.lora_B.weight"
        if up_key not in tensors:
            raise LoraError(f"{path}: '{key}' has no up factor '{up_key}'")
        down, up = tensors.pop(key), tensors.pop(up_key)
        alpha = tensors.pop(f"{DIFFUSERS_PREFIX}{module}.alpha", None)
        scale = float(alpha) / down.shape[0] if alpha is not None else scale_of(module, down.shape[0])
        lora.factors[module] = (down, up, scale)
    for module, bias in biases.items():  # peft scales lora_B's bias with its factors (1 once alpha is folded)
        scaled = bias * (lora.factors[module][2] if module in lora.factors else 1.0)
        name = f"{module}.bias"
        lora.deltas[name] = scaled if name not in lora.deltas else lora.deltas[name] + scaled
    if tensors:
        raise LoraError(f"{path}: keys this loader does not understand: {_some(tensors)}")
    _check(lora, dit)
    return lora


def _with_layout_prefix(tensors: dict[str, torch.Tensor], path: Path) -> dict[str, torch.Tensor]:
    """The tensors with their layout's prefix: ComfyUI's `model.diffusion_model.` and bare original keys become
    `diffusion_model.`, bare diffusers keys `transformer.`; an unknown layout is an error naming three keys."""
    if not tensors:
        raise LoraError(f"{path}: the file holds no tensors")
    keys = list(tensors)
    if all(k.startswith("model." + ORIGINAL_PREFIX) for k in keys):
        return {k[len("model."):]: v for k, v in tensors.items()}
    for prefix in (ORIGINAL_PREFIX, KOHYA_PREFIX, DIFFUSERS_PREFIX):  # one layout per file
        if all(k.startswith(prefix) for k in keys):
            return tensors
    for prefix, bare in ((ORIGINAL_PREFIX, r"(blocks\.\d+\.(self_attn|cross_attn|ffn|norm3)|head|text_embedding|"
                                           r"time_embedding|time_projection)\."),
                         (DIFFUSERS_PREFIX, r"(blocks\.\d+\.(attn1|attn2|ffn|norm2)|proj_out|condition_embedder)\.")):
        if all(re.match(bare, k) for k in keys):  # keys without their layout's prefix
            return {prefix + k: v for k, v in tensors.items()}
    raise LoraError(f"{path}: not a Wan LoRA layout this loader knows; keys such as {_some(keys)} (expected "
                    f"ComfyUI '{ORIGINAL_PREFIX}…', kohya '{KOHYA_PREFIX}…' or diffusers '{DIFFUSERS_PREFIX}…' keys)")


def _diffusers_conversion(tensors: dict[str, torch.Tensor], path: Path) -> dict[str, torch.Tensor]:
    from diffusers.loaders.lora_pipeline import WanLoraLoaderMixin

    before = dict(tensors)
    try:
        converted = WanLoraLoaderMixin.lora_state_dict(dict(tensors))
    except (KeyError, ValueError) as error:  # its converters pop what they expect: a missing factor or alpha
        raise LoraError(f"{path}: diffusers' Wan LoRA conversion failed ({type(error).__name__}: {error}); keys "
                        f"such as {_some(before)}") from error
    if not converted:
        raise LoraError(f"{path}: diffusers' Wan LoRA conversion kept none of its keys, such as {_some(before)}")
    return dict(converted)


def _peft_scales(metadata: dict[str, str], path: Path):
    """alpha / rank of each module of a diffusers / peft file, from its adapter metadata (LoraConfig fields);
    1 without metadata (alpha = rank, peft's default)."""
    raw = metadata.get("lora_adapter_metadata")
    config: dict = {}
    if raw:
        try:
            stored = json.loads(raw)
        except json.JSONDecodeError as error:
            raise LoraError(f"{path}: metadata 'lora_adapter_metadata' is not JSON ({error})") from error
        config = stored.get("transformer", {}) if isinstance(stored.get("transformer"), dict) else {
            k[len(DIFFUSERS_PREFIX):]: v for k, v in stored.items() if k.startswith(DIFFUSERS_PREFIX)}

    def scale(module: str, rank: int) -> float:
        alpha = config.get("lora_alpha")
        for pattern, value in (config.get("alpha_pattern") or {}).items():
            if module == pattern or module.endswith("." + pattern):
                alpha = value
        if alpha is None:
            return 1.0
        return alpha / (math.sqrt(rank) if config.get("use_rslora") else rank)

    return scale


def _dit_names(dit: nn.Module) -> dict[str, str]:
    """Every name a LoRA may give a DiT parameter -> its diffusers name: the diffusers name itself, the original
    Wan name, and both with kohya's underscores."""
    names = {}
    for name, _ in dit.named_parameters():
        names[name] = name
        try:
            (original,) = dit_diffusers_to_original({name: None})
        except ValueError:  # a module the original T2V layout lacks (image embedder): its diffusers name only
            continue
        names[original] = name
    with_prefixes = {}
    for alias, name in names.items():
        module, _, param = alias.rpartition(".")
        with_prefixes[DIFFUSERS_PREFIX + alias] = with_prefixes[ORIGINAL_PREFIX + alias] = name
        with_prefixes[f"{KOHYA_PREFIX}{module.replace('.', '_')}.{param}"] = name
    return with_prefixes


def _check(lora: WanLora, dit: nn.Module) -> None:
    parameters = dict(dit.named_parameters())
    unknown = sorted(p for p in lora.parameters if p not in parameters)
    if unknown and len(unknown) == len(lora.parameters):
        raise LoraError(f"{lora.path}: none of its keys matches this DiT (a LoRA for another model?); keys such "
                        f"as {_some(unknown)}")
    if unknown:
        raise LoraError(f"{lora.path}: {len(unknown)} of its {len(lora.parameters)} targets are not in this DiT "
                        f"(a LoRA for a larger model?), such as {_some(unknown)}")
    for module, (down, up, _) in lora.factors.items():
        weight = parameters[f"{module}.weight"]
        if (up.shape[0], *down.shape[1:]) != tuple(weight.shape) or up.shape[1] != down.shape[0]:
            raise LoraError(f"{lora.path}: '{module}' factors {tuple(up.shape)} x {tuple(down.shape)} do not make "
                            f"the DiT's {tuple(weight.shape)} weight (a LoRA for another Wan size?)")
    for name, delta in lora.deltas.items():
        if delta.shape != parameters[name].shape:
            raise LoraError(f"{lora.path}: the delta of '{name}' is {tuple(delta.shape)}, the DiT's parameter "
                            f"{tuple(parameters[name].shape)}")


def _some(keys) -> str:
    shown = sorted(keys)[:_SHOWN_KEYS]
    return ", ".join(f"'{k}'" for k in shown)


@dataclass
class LoraReport:
    files: list[str]
    strengths: list[float]
    parameters: int  # DiT parameters changed

    def summary(self) -> str:
        loras = ", ".join(f"{Path(f).name} at {s:g}" for f, s in zip(self.files, self.strengths, strict=True))
        return f"{len(self.files)} LoRA(s) ({loras}) on {self.parameters} DiT parameters"


def load_loras(choices: Sequence[LoraChoice], dit: nn.Module) -> list[tuple[WanLora, float]]:
    """Each chosen file read and checked against `dit`, with its strength."""
    return [(read_lora(choice.path, dit), choice.strength) for choice in choices]


def _combined(loras: Sequence[tuple[WanLora, float]], dit: nn.Module) -> Iterator[tuple[nn.Parameter, torch.Tensor]]:
    """(parameter, summed float32 delta) for every parameter any LoRA changes, one at a time: a dense delta of
    every block at once would cost the DiT's size again."""
    parameters = dict(dit.named_parameters())
    for name in sorted(set().union(*(lora.parameters for lora, _ in loras))):
        total = None
        for lora, strength in loras:
            delta = lora.delta(name)
            if delta is not None and strength != 0:
                total = delta * strength if total is None else total + delta * strength
        if total is not None:
            yield parameters[name], total


def _refuse_storage(dit: nn.Module) -> None:
    low = sorted({str(p.dtype) for p in dit.parameters() if p.dtype.itemsize == 1})
    if low:
        raise LoraError(f"the DiT stores its weights as {', '.join(low)}: a LoRA added to them would be lost in "
                        "rounding; apply the LoRA to the DiT before storing it in fp8 (load it with storage "
                        "'compute')")


@torch.no_grad()
def fuse_loras(dit: nn.Module, loras: Sequence[tuple[WanLora, float]]) -> LoraReport:
    """Add the LoRAs' deltas to `dit`'s weights for good (in the weights' dtype, summed in float32)."""
    _refuse_storage(dit)
    count = 0
    for parameter, delta in _combined(loras, dit):
        _add(parameter, delta)
        count += 1
    report = LoraReport([str(lora.path) for lora, _ in loras], [s for _, s in loras], count)
    logger.info("fused %s", report.summary())
    return report


@contextlib.contextmanager
@torch.no_grad()
def patched_loras(dit: nn.Module, loras: Sequence[tuple[WanLora, float]]) -> Iterator[LoraReport]:
    """`dit` with the LoRAs' deltas added while the block runs, its exact weights back after (even on error):
    each changed parameter's original is kept on the host meanwhile."""
    if not loras:
        yield LoraReport([], [], 0)
        return
    _refuse_storage(dit)
    kept: list[tuple[nn.Parameter, torch.Tensor]] = []
    try:
        for parameter, delta in _combined(loras, dit):
            kept.append((parameter, parameter.detach().to("cpu", copy=True)))
            _add(parameter, delta)
        report = LoraReport([str(lora.path) for lora, _ in loras], [s for _, s in loras], len(kept))
        logger.info("applied %s for this run", report.summary())
        yield report
    finally:
        for parameter, original in kept:
            parameter.copy_(original.to(parameter.device))


def _add(parameter: nn.Parameter, delta: torch.Tensor) -> None:
    """parameter += delta, summed in float32 and rounded once to the parameter's dtype."""
    parameter.copy_((parameter.float() + delta.to(parameter.device)).to(parameter.dtype))

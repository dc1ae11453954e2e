"""Where each model's weights live while an edit or a training run uses them: the placement plan.

One plan serves the edit CLI, the editor behind the nodes and the trainer. Per model ("vlm", "t5",
"connector", "dit", "vae") it decides one of:

- resident:   on the device for the whole run (fastest; needs every model's memory at once);
- sequential: in host memory, the whole model on the device only while its stage runs (the models of an
              edit are used one after the other, so the device holds about the largest one);
- stream:     blocks onloaded just ahead of use by diffusers' group offloading (a side CUDA stream
              prefetches the next one); the device holds a few layers of it at a time. Used for the VLM and
              umT5, which run once per edit; the DiT, which runs at every step, stays whole on the device
              while it samples when it fits, and streams block by block only when it does not.

`PlacementConfig.placement` picks one of those for the whole set, or `auto`: resident when everything fits
the device, else sequential when the largest model fits, else stream. Two storage options shrink the
models: `encoders="int8"` (torchao int8 weight-only for the VLM and umT5 Linear layers) and
`dit_storage="fp8"` (diffusers layerwise casting: float8_e4m3fn storage, compute in the loaded dtype).
`host="disk"` keeps streamed weights in safetensors files instead of host RAM.

Every weight transfer the plan makes is recorded in `Placement.transfers` (bytes onloaded per model),
which is how the tests see what a placement does on a CPU, where CPU-to-CPU moves copy nothing.

Backward passes never run through offloaded weights: diffusers' group offloading swaps a parameter's
storage after its forward, and autograd then reads whatever the parameter holds at backward time (silent
garbage when the storage really moved). A streamed model refuses to run a forward that records a graph,
and a sequential model refuses to move while gradients are enabled; a model that gradients pass through
(the critic's VLM in USO) must be resident, int8 allowed.
"""

from __future__ import annotations

import contextlib
import logging
import tempfile
from collections import Counter
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

from .checkpoints import COMPUTE_DEVICE_ATTRIBUTE, compute_dtype

logger = logging.getLogger(__name__)

COMPONENTS = ("vlm", "t5", "connector", "dit", "vae")
PLACEMENTS = ("auto", "resident", "sequential", "stream")
MODES = ("resident", "sequential", "stream")
HOSTS = ("ram", "disk")
ENCODER_STORAGES = ("compute", "int8")
DIT_STORAGES = ("compute", "fp8")
STREAMED = ("vlm", "t5")  # run once per edit: streamed under `stream`; the VAE and connector move whole
GIB = 2**30
ALIGNMENT = 64  # bytes: what CPU allocations guarantee and vectorised kernels expect
# What `auto` and `stream` keep free for activations besides the weights: the whole 17-frame 352x640 edit
# peaks at about 1.5 GiB of activations (VAE decode; bench/results/cost_model.md), rounded up for the CUDA
# allocator's fragmentation and the context.
DEFAULT_ACTIVATION_RESERVE_GIB = 2.5
# What each choice costs, in words: the CLI's help and the nodes' tooltips.
PLACEMENT_HELP = (
    "auto: resident if every model fits the device, else sequential, else stream. "
    "resident: all five models on the device (fastest; about 35 GiB in bf16 for the ReViSE release). "
    "sequential: each model on the device only while it runs (about the largest model, the 8B VLM: ~16 GiB; "
    "copies each model over once per edit, a second or two on PCIe 4). "
    "stream: the VLM and umT5 layer by layer, the DiT whole while it samples (about 6 GiB; the VLM and umT5 "
    "are copied once per edit, the DiT too unless it does not fit, then once per step).")
ENCODER_HELP = ("compute: the VLM and umT5 in the loaded precision. int8: their Linear weights in int8 (torchao "
                "weight-only; half of bf16, about 1 % relative difference in their outputs).")
DIT_STORAGE_HELP = ("compute: the DiT in the loaded precision. fp8: weights stored in float8_e4m3fn and cast to the "
                    "compute precision layer by layer (half of bf16; a few percent relative difference).")
HOST_HELP = ("ram: offloaded weights wait in system RAM. disk: streamed weights wait in safetensors files "
             "(offload_dir) and are read back at every use: little RAM, slower.")


class PlacementError(ValueError):
    """A placement that cannot work: an unknown choice, a combination the libraries refuse, or a backward pass
    through weights that move."""


@dataclass
class PlacementConfig:
    placement: str = "resident"
    host: str = "ram"
    offload_dir: str = ""  # host=disk: folder of the offloaded weights ("" = a temporary folder)
    encoders: str = "compute"
    dit_storage: str = "compute"
    device_budget_gib: float = 0.0  # memory the models may take on the device; 0 = its free memory now
    activation_reserve_gib: float = DEFAULT_ACTIVATION_RESERVE_GIB

    def __post_init__(self) -> None:
        for name, allowed in (("placement", PLACEMENTS), ("host", HOSTS), ("encoders", ENCODER_STORAGES),
                              ("dit_storage", DIT_STORAGES)):
            if getattr(self, name) not in allowed:
                raise PlacementError(f"placement setting '{name}' must be one of {allowed}, got "
                                     f"'{getattr(self, name)}'")
        if self.device_budget_gib < 0 or self.activation_reserve_gib < 0:
            raise PlacementError("device_budget_gib and activation_reserve_gib must be >= 0")
        if self.host == "disk" and self.encoders == "int8":
            # diffusers' disk offload serialises plain tensors only; torchao's int8 tensors raise there.
            raise PlacementError("host=disk cannot hold int8 weights (diffusers writes plain tensors only): use "
                                 "host=ram with encoders=int8, or encoders=compute with host=disk")

    def to_dict(self) -> dict:
        return asdict(self)


def tensor_bytes(tensor: torch.Tensor) -> int:
    """Bytes a tensor really stores: the inner tensors of a quantised subclass (torchao's int8 data and
    scales), not its logical dtype's size."""
    flatten = getattr(tensor, "__tensor_flatten__", None)
    if flatten is not None and type(tensor) not in (torch.Tensor, nn.Parameter):
        names, _ = flatten()
        return sum(tensor_bytes(getattr(tensor, name)) for name in names)
    return tensor.numel() * tensor.element_size()


def module_bytes(module: nn.Module) -> int:
    """Bytes of a module's parameters and buffers (each storage once)."""
    seen, total = set(), 0
    for tensor in [*module.parameters(), *module.buffers()]:
        key = id(tensor)
        if key not in seen:
            seen.add(key)
            total += tensor_bytes(tensor)
    return total


def resolve_modes(config: PlacementConfig, sizes: dict[str, int], budget: int | None) -> dict[str, str]:
    """Per model: resident, sequential or stream, from the user's choice and the device's budget (bytes the
    models may take; None = unbounded, as on a CPU)."""
    reserve = int(config.activation_reserve_gib * GIB)
    fits = (lambda nbytes: True) if budget is None else (lambda nbytes: nbytes + reserve <= budget)
    choice = config.placement
    if choice == "auto":
        if fits(sum(sizes.values())):
            choice = "resident"
        elif fits(max(sizes.values(), default=0)):
            choice = "sequential"
        else:
            choice = "stream"
    if choice in ("resident", "sequential"):
        return dict.fromkeys(sizes, choice)
    modes = {name: "stream" if name in STREAMED else "sequential" for name in sizes}
    if "dit" in sizes and not fits(sizes["dit"]):  # used at every step: whole while it fits
        modes["dit"] = "stream"
    return modes


def free_device_bytes(device: torch.device) -> int | None:
    """Free memory of a CUDA device (None elsewhere: a CPU's RAM is the host's)."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free)
    return None


@dataclass
class TransferLog:
    """Weight bytes onloaded to the device, per model, and how many onloads."""

    onloaded: Counter
    onloads: Counter

    @classmethod
    def empty(cls) -> TransferLog:
        return cls(Counter(), Counter())

    def record(self, component: str, nbytes: int) -> None:
        self.onloaded[component] += nbytes
        self.onloads[component] += 1

    @property
    def total_bytes(self) -> int:
        return sum(self.onloaded.values())


class Placement:
    """A resolved plan over a set of modules, and the moves it makes while they are used.

    `apply(modules)` stores, quantises and places each module; `use(*names)` brackets a stage (sequential
    models move in for it and back out after); streamed models onload themselves layer by layer."""

    def __init__(self, config: PlacementConfig | None = None, device: torch.device | str = "cpu") -> None:
        self.config = config or PlacementConfig()
        self.device = torch.device(device)
        self.host = torch.device("cpu")
        self.modes: dict[str, str] = {}
        self.modules: dict[str, nn.Module] = {}
        self.transfers = TransferLog.empty()
        self._offload_dir: tempfile.TemporaryDirectory | None = None

    def apply(self, modules: dict[str, nn.Module], *, fixed: dict[str, str] | None = None) -> Placement:
        """Store, quantise and place each module. `fixed`: modes the caller imposes on some models (the trainer
        keeps what gradients pass through resident), whatever the plan would choose."""
        unknown = sorted(set(modules) - set(COMPONENTS))
        if unknown:
            raise PlacementError(f"unknown model names {unknown}; expected some of {COMPONENTS}")
        cfg = self.config
        if cfg.encoders == "int8":
            for name in ("vlm", "t5"):
                if name in modules:
                    quantize_int8(modules[name])
        if cfg.dit_storage == "fp8" and "dit" in modules:
            store_fp8(modules["dit"])
        sizes = {name: module_bytes(module) for name, module in modules.items()}
        budget = int(cfg.device_budget_gib * GIB) if cfg.device_budget_gib else free_device_bytes(self.device)
        self.modes = {**resolve_modes(cfg, sizes, budget), **(fixed or {})}
        if set(self.modes.values()) - set(MODES):
            raise PlacementError(f"fixed modes must be among {MODES}, got {fixed}")
        self.modules = dict(modules)
        for name, module in modules.items():
            setattr(module, COMPUTE_DEVICE_ATTRIBUTE, self.device)  # where inputs must go
            mode = self.modes[name]
            if mode == "resident":
                module.to(self.device)
            elif mode == "sequential":
                module.to(self.host)
            else:
                self._stream(name, module)
        logger.info("placement %s on %s: %s (weights %s GiB)", cfg.placement, self.device, self.modes,
                    {name: round(size / GIB, 2) for name, size in sizes.items()})
        return self

    @contextlib.contextmanager
    def use(self, *names: str) -> Iterator[None]:
        """The models a stage runs: sequential ones are moved to the device for the block and back after."""
        moving = [name for name in names if self.modes.get(name) == "sequential"]
        if moving and torch.is_grad_enabled():
            raise PlacementError(
                f"{', '.join(moving)}: sequential placement moves the weights off the device after use, so a "
                "backward pass through them would read moved weights; place models that gradients pass through "
                "resident (int8 allowed)")
        for name in moving:
            module = self.modules[name]
            self.transfers.record(name, module_bytes(module))
            module.to(self.device)
        try:
            yield
        finally:
            for name in moving:
                self.modules[name].to(self.host)
            if moving and self.device.type == "cuda":
                torch.cuda.empty_cache()  # hand the freed blocks to the next model's stage

    def summary(self) -> dict:
        return {"config": self.config.to_dict(), "device": str(self.device), "modes": dict(self.modes),
                "onloaded_bytes": dict(self.transfers.onloaded), "onloads": dict(self.transfers.onloads)}

    def _stream(self, name: str, module: nn.Module) -> None:
        from diffusers.hooks import apply_group_offloading

        on_cuda = self.device.type == "cuda"
        if self.config.host == "disk":
            _merge_tied_leaves(module, name)
        options = {"onload_device": self.device, "offload_device": self.host,
                   "offload_to_disk_path": self._disk_folder(name)}
        if name == "dit":
            # Called through its forward at every step: whole blocks, one group each, the next one prefetched on
            # a side CUDA stream while the current one computes.
            apply_group_offloading(module, offload_type="block_level", num_blocks_per_group=1, use_stream=on_cuda,
                                   non_blocking=on_cuda, **options)
        else:
            # Leaf level: the families call submodules directly (VILA embeds tokens with the LLM's embedding, and
            # its root module's forward never runs), which a block group would not onload. Synchronous copies: a
            # side stream's prefetch order is traced through the root's forward, which these models skip; they run
            # once per edit, so the copies cost a second or two, not a step's worth each time.
            apply_group_offloading(module, offload_type="leaf_level", **options)
            _onload_attention_projections(module)
        for group in _offload_groups(module):
            _count_onloads(group, name, self.transfers, realign=self.config.host == "disk" and not on_cuda)
        _refuse_backward(module, name)

    def _disk_folder(self, name: str) -> str | None:
        if self.config.host != "disk":
            return None
        if self.config.offload_dir:
            root = Path(self.config.offload_dir)
        else:
            if self._offload_dir is None:
                self._offload_dir = tempfile.TemporaryDirectory(prefix="revise-offload-")
            root = Path(self._offload_dir.name)
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        return str(folder)


def quantize_int8(module: nn.Module) -> None:
    """torchao int8 weight-only on the Linear layers (per output channel: no layer is skipped for its size).

    `set_inductor_config=False`: torchao's default changes torch._inductor's global settings."""
    try:
        from torchao.quantization import Int8WeightOnlyConfig, quantize_
    except ImportError as error:
        raise PlacementError("int8 weights need torchao: pip install -e \".[lowmem]\" (or pip install torchao)") from error
    # torchao's default filter: every nn.Linear except attention's fused out_proj (SigLIP's pooling head runs it
    # through F.multi_head_attention_forward, which quantised weights do not support).
    quantize_(module, Int8WeightOnlyConfig(set_inductor_config=False))


def store_fp8(dit: nn.Module) -> None:
    """float8_e4m3fn storage, compute in the DiT's loaded dtype. Wan's own `enable_layerwise_casting` keeps its
    timestep embedder, patch embedding and norms out (the generic skip list crashes on Wan's embedder)."""
    dit.enable_layerwise_casting(storage_dtype=torch.float8_e4m3fn, compute_dtype=compute_dtype(dit))


def _merge_tied_leaves(module: nn.Module, name: str) -> None:
    """Make leaves that share their weights one module. Disk offload writes each group's file from its tensors
    when the group first offloads, and empties them after: a second group holding the same (tied) tensor then
    writes the emptied memory (umT5's `shared` and `encoder.embed_tokens`). One module in two places is one
    group. Tied leaves of different kinds (an embedding tied to an output layer) cannot merge: refused."""
    owners: dict[int, tuple[str, nn.Module]] = {}
    for path, leaf in list(module.named_modules(remove_duplicate=False)):
        params = list(leaf.parameters(recurse=False))
        if not params or any(True for _ in leaf.children()):
            continue
        first = owners.get(id(params[0]))
        if first is None:
            owners.update({id(p): (path, leaf) for p in params})
        elif first[1] is not leaf:
            same = [id(p) for p in first[1].parameters(recurse=False)] == [id(p) for p in params]
            if type(first[1]) is not type(leaf) or not same:
                raise PlacementError(f"{name}: '{first[0]}' and '{path}' share weights but are different layers; "
                                     "host=disk cannot stream them (use host=ram)")
            parent_path, _, attribute = path.rpartition(".")
            setattr(module.get_submodule(parent_path) if parent_path else module, attribute, first[1])


def _onload_attention_projections(module: nn.Module) -> None:
    """nn.MultiheadAttention (SigLIP's pooling head) hands its `out_proj` weight to F.multi_head_attention_forward
    without calling `out_proj`, so diffusers' hook on that leaf never onloads it: the attention module's own
    forward onloads and offloads it instead."""
    for attention in module.modules():
        if not isinstance(attention, nn.MultiheadAttention):
            continue
        registry = getattr(attention.out_proj, "_diffusers_hook", None)
        hook = registry.get_hook("group_offloading") if registry is not None else None
        if hook is None:
            continue
        group = hook.group
        attention.register_forward_pre_hook(lambda m, args, group=group: group.onload_())
        attention.register_forward_hook(lambda m, args, output, group=group: group.offload_())


def _offload_groups(module: nn.Module) -> list:
    """diffusers' ModuleGroups installed on `module`'s submodules (each once)."""
    groups, seen = [], set()
    for sub in module.modules():
        registry = getattr(sub, "_diffusers_hook", None)
        hook = registry.get_hook("group_offloading") if registry is not None else None
        group = getattr(hook, "group", None)
        if group is not None and id(group) not in seen:
            seen.add(id(group))
            groups.append(group)
    return groups


def _count_onloads(group, name: str, log: TransferLog, *, realign: bool = False) -> None:
    """Record the group's bytes at every onload (an instance attribute: diffusers' class is untouched).

    `realign`: tensors read from a safetensors file onto the CPU are views at unaligned offsets of one buffer,
    and CPU GEMMs round differently on unaligned operands; a copy makes them aligned like any allocation, so a
    disk placement computes the same bits as the others (on CUDA the reads land in fresh device memory)."""
    tensors = list({id(t): t for m in group.modules for t in [*m.parameters(), *m.buffers()]}.values())
    tensors += [t for t in [*group.parameters, *group.buffers] if all(t is not other for other in tensors)]
    nbytes = sum(tensor_bytes(t) for t in tensors)
    onload = group.onload_

    def counted_onload() -> None:
        log.record(name, nbytes)
        onload()
        if realign:
            for tensor in tensors:
                if tensor.data.data_ptr() % ALIGNMENT:
                    tensor.data = tensor.data.clone()

    group.onload_ = counted_onload


def _refuse_backward(module: nn.Module, name: str) -> None:
    def check(leaf, args, output) -> None:
        outputs = output if isinstance(output, (tuple, list)) else (output,)
        if torch.is_grad_enabled() and any(isinstance(o, torch.Tensor) and o.requires_grad for o in outputs):
            raise PlacementError(
                f"{name} is streamed (placement stream): its weights move after each layer, so a backward pass "
                "through it would compute with moved weights. Place models that gradients pass through resident "
                "(int8 allowed)")

    for sub in module.modules():
        registry = getattr(sub, "_diffusers_hook", None)
        if registry is not None and registry.get_hook("group_offloading") is not None:
            sub.register_forward_hook(check)

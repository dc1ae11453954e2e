"""Measuring a real-size step on a CPU without allocating it: fake tensors, MemTracker, FlopCounterMode.

`measure(setup, step)` builds everything `setup()` returns inside `FakeTensorMode` (shapes and dtypes, no
storage), runs `step` once to warm up (AdamW creates its state lazily), then runs it again under
`torch.distributed._tools.mem_tracker.MemTracker` (live tensor bytes by category: parameters, buffers,
gradients, activations, optimizer state, temporaries; the peak of the second step is what a GPU's
`max_memory_allocated` reports after a warm-up) and `FlopCounterMode`.

Attention is accounted as on a GPU: on the CPU, `scaled_dot_product_attention` runs
`_scaled_dot_product_flash_attention_for_cpu`, which like FlashAttention keeps only q, k, v, the output and
the log-sum-exp for backward (never the L x L score matrix). `AttentionAudit` checks that every attention
call took that path and fails loudly if an L x L matrix appears anywhere; FLOPs of the CPU flash kernel use
torch's SDPA formulas (FlopCounterMode only registers the CUDA kernels).

Index bookkeeping stays exact: VLMs compute window indices, cumulative sequence lengths and 3-D rotary
positions from token ids and grids with data-dependent shapes, which plain fake tensors cannot follow.
Small integer tensors (ids, grids, aranges: at most CONSTANT_LIMIT elements) are therefore kept as fake
tensors that carry their real values (FakeTensor constants), so that bookkeeping runs for real while every
floating-point tensor stays fake.

RMSNorm is the other kernel whose saved tensors differ by device: on CUDA `torch.rms_norm` runs the fused
kernel, which keeps the input and one fp32 rstd per row for backward; on the CPU with autograd it is
decomposed into pow / mean / rsqrt / mul and keeps several fp32 copies of the input (about 1.2 GiB more per
DiT block at 33 frames). `gpu_rms_norm()` makes `F.rms_norm` save what the CUDA kernel saves.
"""

from __future__ import annotations

import contextlib
import copy
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import torch
from torch.utils._python_dispatch import TorchDispatchMode

GIB = 2**30
CATEGORIES = ("Parameter", "Buffer", "Gradient", "Activation", "Optstate", "Temp", "Other")
# An attention score matrix is at least this long on both sides in the real-size runs; smaller products
# (e.g. the 4x4 merges of a projector) are not attention.
SCORE_SIDE = 1024


@dataclass
class Measurement:
    peak_bytes: int
    split: dict[str, int]  # bytes per category at the peak
    flops: int
    flops_by_op: dict[str, int]
    attention_calls: int
    seconds: float  # wall time of the fake run (not a GPU estimate)
    notes: list[str] = field(default_factory=list)

    def split_gib(self) -> dict[str, float]:
        return {name: round(value / GIB, 3) for name, value in self.split.items() if value}


class AttentionAudit(TorchDispatchMode):
    """Counts flash-style attention calls and records any op that materialises an L x L score matrix."""

    FLASH = ("_scaled_dot_product_flash_attention_for_cpu", "_scaled_dot_product_flash_attention",
             "_scaled_dot_product_efficient_attention")
    SCORES = ("_softmax", "_safe_softmax", "bmm", "baddbmm")

    def __init__(self) -> None:
        super().__init__()
        self.flash_calls = 0
        self.materialised: Counter = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        name = func.__name__.split(".")[0] if hasattr(func, "__name__") else str(func)
        if any(name == flash for flash in self.FLASH):
            self.flash_calls += 1
        elif name in self.SCORES and isinstance(out, torch.Tensor) and out.ndim >= 2:
            if min(out.shape[-2:]) >= SCORE_SIDE:
                self.materialised[f"{name}{tuple(out.shape)}"] += 1
        return out


def _cpu_flash_mapping() -> dict:
    from torch.utils.flop_counter import sdpa_backward_flop_count, sdpa_flop_count

    aten = torch.ops.aten

    def forward(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
        return sdpa_flop_count(query_shape, key_shape, value_shape)

    def backward(grad_out_shape, query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
        return sdpa_backward_flop_count(grad_out_shape, query_shape, key_shape, value_shape)

    return {aten._scaled_dot_product_flash_attention_for_cpu: forward,
            aten._scaled_dot_product_flash_attention_for_cpu_backward: backward}


@contextlib.contextmanager
def default_dtype(dtype: torch.dtype) -> Iterator[None]:
    """Build modules directly in `dtype`, without running weight initialisers (their values are never read,
    and some initialisers need real data)."""
    from transformers.initialization import no_init_weights

    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with no_init_weights():
            yield
    finally:
        torch.set_default_dtype(previous)


class _FusedRMSNorm(torch.autograd.Function):
    """torch.rms_norm with the CUDA fused kernel's saved tensors: input, weight, rstd [..., 1] fp32."""

    @staticmethod
    def forward(ctx, input, normalized_shape, weight, eps):
        with torch.no_grad():
            dims = tuple(range(input.ndim - len(normalized_shape), input.ndim))
            eps = torch.finfo(input.dtype).eps if eps is None else eps
            rstd = torch.rsqrt(input.float().pow(2).mean(dims, keepdim=True) + eps)
            output = input.float() * rstd
            if weight is not None:
                output = output * weight.float()
            output = output.to(input.dtype)
        ctx.save_for_backward(input, weight, rstd)
        ctx.normalized_shape = list(normalized_shape)
        return output

    @staticmethod
    def backward(ctx, grad_output):
        input, weight, rstd = ctx.saved_tensors
        dims = tuple(range(input.ndim - len(ctx.normalized_shape), input.ndim))
        normalized = input.float() * rstd
        grad = grad_output.float() * (weight.float() if weight is not None else 1.0)
        grad_input = rstd * (grad - normalized * (grad * normalized).mean(dims, keepdim=True))
        grad_weight = None
        if weight is not None and ctx.needs_input_grad[2]:
            reduce = tuple(range(input.ndim - len(ctx.normalized_shape)))
            grad_weight = (grad_output.float() * normalized).sum(reduce).to(weight.dtype)
        return grad_input.to(input.dtype), None, grad_weight, None


def _gpu_like_rms_norm(input, normalized_shape, weight=None, eps=None):
    return _FusedRMSNorm.apply(input, tuple(normalized_shape), weight, eps)


@contextlib.contextmanager
def gpu_rms_norm() -> Iterator[None]:
    """F.rms_norm (what torch.nn.RMSNorm calls) keeps for backward what CUDA's fused kernel keeps."""
    import torch.nn.functional as F

    original = F.rms_norm
    F.rms_norm = _gpu_like_rms_norm
    try:
        yield
    finally:
        F.rms_norm = original


CONSTANT_LIMIT = 1 << 16
class ConstantIndices(TorchDispatchMode):
    """Small tensors made by factories (arange, zeros, ones, full) become constant fake tensors, which
    FakeTensorMode then propagates through all-constant ops (ids == token, cumsum, repeat_interleave)."""

    def __init__(self, fake_mode) -> None:
        super().__init__()
        aten = torch.ops.aten
        self.fake_mode = fake_mode
        self.factories = {aten.arange.default, aten.arange.start, aten.arange.start_step, aten.ones.default,
                          aten.zeros.default, aten.full.default, aten.scalar_tensor.default}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        from torch._guards import active_fake_mode
        from torch.utils._mode_utils import no_dispatch

        kwargs = kwargs or {}
        if func in self.factories and active_fake_mode() is self.fake_mode and _factory_numel(func, args) <= CONSTANT_LIMIT:
            with no_dispatch():
                real = func(*args, **{**kwargs, "device": "cpu"})
            return self.fake_mode.fake_tensor_converter.from_real_tensor(self.fake_mode, real, make_constant=True)
        return func(*args, **kwargs)


def _factory_numel(func, args) -> float:
    """Elements a factory call will make, from its arguments (before making anything)."""
    import math

    if "arange" in str(func):
        start, end, step = (0, args[0], 1) if len(args) == 1 else (args[0], args[1], args[2] if len(args) > 2 else 1)
        return max(0, math.ceil((float(end) - float(start)) / float(step)))
    if "scalar_tensor" in str(func):
        return 1
    return math.prod(int(x) for x in args[0])


# Index bookkeeping that builds tensors from lists of 0-d tensors (which fake tensors cannot give values to):
# run for real on the constants' values, outside the fake mode.
REAL_HELPERS = (("transformers.models.qwen2_5_vl.modeling_qwen2_5_vl", "Qwen2_5_VLModel", "get_rope_index"),)


@contextlib.contextmanager
def real_helpers(fake_mode) -> Iterator[None]:
    import importlib

    from torch._subclasses.fake_tensor import FakeTensor, unset_fake_temporarily
    from torch.utils._pytree import tree_map

    def to_real(value):
        if isinstance(value, FakeTensor):
            if value.constant is None:
                raise AssertionError("an index helper got a tensor without known values")
            return value.constant
        return value

    def to_fake(value):
        if isinstance(value, torch.Tensor) and not isinstance(value, FakeTensor):
            return fake_mode.fake_tensor_converter.from_real_tensor(fake_mode, value, make_constant=True)
        return value

    def wrap(original):
        def run(*args, **kwargs):
            args, kwargs = tree_map(to_real, (args, kwargs))
            with unset_fake_temporarily():
                out = original(*args, **kwargs)
            return tree_map(to_fake, out)
        return run

    patched = []
    for module_name, class_name, method in REAL_HELPERS:
        owner = getattr(importlib.import_module(module_name), class_name)
        patched.append((owner, method, getattr(owner, method)))
        setattr(owner, method, wrap(getattr(owner, method)))
    try:
        yield
    finally:
        for owner, method, original in patched:
            setattr(owner, method, original)


@contextlib.contextmanager
def _constant_limit(limit: int) -> Iterator[None]:
    import torch._subclasses.fake_tensor as fake_tensor

    previous = fake_tensor.CONSTANT_NUMEL_LIMIT
    fake_tensor.CONSTANT_NUMEL_LIMIT = limit
    try:
        yield
    finally:
        fake_tensor.CONSTANT_NUMEL_LIMIT = previous


def _tracker():
    """MemTracker with the per-module statistics switched off: its per-op update walks every module's
    snapshots (minutes for a 30-block DiT); only the global peak and its split are needed here."""
    import weakref

    from torch.distributed._tools.mem_tracker import MemTracker, _ModMemStats

    class _NoHook:
        def remove(self) -> None:
            pass

    class GlobalPeakTracker(MemTracker):
        def _track_module_params_and_buffers(self, module, install_grad_hooks: bool = True):
            # MemTracker hooks every parameter's gradient, which a frozen parameter (VAE, VLM) refuses.
            for parameter in module.parameters():
                if not parameter.requires_grad:
                    self._param_to_grad_hook_handles.setdefault(parameter, (_NoHook(), _NoHook()))
            return super()._track_module_params_and_buffers(module, install_grad_hooks)

        # Per-module snapshots are not needed; without them a module may also run twice in one step (the
        # critic's VLM judges the source pair and the edit), which MemTracker otherwise refuses.
        def _pre_fw_hook(self, module, inputs) -> None:
            if module not in self.memory_tracking:
                self._track_module_params_and_buffers(module, install_grad_hooks=True)
                self.memory_tracking[module] = _ModMemStats(self._mod_tracker.get_known_fqn(module) or "?")
            elif self._mod_tracker.is_bw and self._ac_mod is None:  # recomputation under checkpointing
                self._ac_mod = weakref.ref(module)
                self._in_ac = True

        def _post_fw_hook(self, module, inputs, outputs) -> None:
            if self._mod_tracker.is_bw and self._ac_mod is not None and self._ac_mod() is module:
                self._ac_mod = None
                self._in_ac = False

        def _pre_bw_hook(self, module, args) -> None:
            pass

        def _post_bw_hook(self, module, args) -> None:
            pass

        def _update_peak_stats(self, peak_state) -> None:
            for device, snapshot in self._curr_mem_snap.items():
                if self._peak_mem.get(device, 0) < snapshot["Total"]:
                    self._peak_mem[device] = snapshot["Total"]
                    self._peak_mem_snap[device] = dict(snapshot)

    return GlobalPeakTracker()


def measure(setup: Callable[[], dict], step: Callable[[dict], None], *, fake: bool = True) -> Measurement:
    """Peak memory (by category) and FLOPs of `step(state)` on `state = setup()`, all in fake tensors.

    The step runs twice: the first run creates what is made lazily (AdamW state) and is counted for FLOPs;
    the second is measured for memory (its peak alone, as after `torch.cuda.reset_peak_memory_stats()`).

    `setup` returns a dict; its "tracked" entry lists the modules, optimizers and tensors that exist before
    the step (they are registered with the tracker, the rest is tracked as it is created)."""
    from torch._subclasses.fake_tensor import FakeTensorMode
    from torch.utils.flop_counter import FlopCounterMode

    start = time.perf_counter()
    with contextlib.ExitStack() as stack:
        if fake:  # fake=False runs the same on real tensors (the tests compare the two on small models)
            stack.enter_context(_constant_limit(CONSTANT_LIMIT))
            fake_mode = stack.enter_context(FakeTensorMode())
            stack.enter_context(ConstantIndices(fake_mode))
            stack.enter_context(real_helpers(fake_mode))
        stack.enter_context(gpu_rms_norm())
        state = setup()
        tracker = _tracker()
        tracker.track_external(*state["tracked"])
        with tracker:
            # FLOPs are counted on the first (warm-up) run: FlopCounterMode's module hooks keep tensors alive
            # through backward, so its presence would inflate the measured run's peak (under activation
            # checkpointing, by several times).
            flops = FlopCounterMode(display=False, custom_mapping=_cpu_flash_mapping())
            with flops:
                step(state)
            tracker.reset_mod_stats()
            # The peak of the measured step alone, as after torch.cuda.reset_peak_memory_stats().
            tracker._peak_mem = {}
            tracker._peak_mem_snap = copy.deepcopy(tracker._curr_mem_snap)
            audit = AttentionAudit()
            with audit:
                step(state)
        snapshot = tracker.get_tracker_snapshot("peak")
    if audit.materialised:
        raise AssertionError(f"an attention score matrix was materialised (not as on a GPU): {dict(audit.materialised)}")
    device_snapshot = next(iter(snapshot.values()))
    split = {getattr(key, "value", str(key)): int(value) for key, value in device_snapshot.items() if key != "Total"}
    by_op = {str(op): int(count) for op, count in flops.get_flop_counts().get("Global", {}).items()}
    return Measurement(peak_bytes=int(device_snapshot["Total"]), split=split, flops=int(flops.get_total_flops()),
                       flops_by_op=by_op, attention_calls=audit.flash_calls, seconds=time.perf_counter() - start)

"""Where the weights are during a whole edit, simulated on fake tensors: device, host and transfer bytes.

Inside `FakeTensorMode` nothing is allocated; fake 'cpu' plays the accelerator (DEVICE) and fake 'meta' plays host RAM (HOST). `DeviceMemory` counts the live
bytes of every storage per device (a dispatch mode plus weakref finalizers) and keeps their peaks. Weights
move by re-creating Parameters (`Module.to` refuses fake tensors), and every move is counted.

A model's mode decides how it moves (the semantics of revise_core/placement.py):
- resident:   on the device for the whole edit; nothing moves;
- sequential: rests on the host; the whole model moves to the device for each stage that uses it and back after
              (`Module.to`: the host copy is freed while it is on the device, the way back is a copy too);
- stream:     diffusers' leaf-level group offloading with a CUDA side stream (`leaf_units`: a group per
              Conv / Linear / Embedding, the other tensors grouped by the module holding them): each group has a
              pinned host copy that stays; it is onloaded before its module's forward and dropped after. After
              the root's first forward (which records the execution order), a group's pre-hook also prefetches
              the next group, so the device holds the current group and the next one;
- disk:       as stream, but the host holds no copy: each onload reads the leaf's safetensors file into host
              memory and pins a copy before the upload (2 x the leaf on the host while it is read); diffusers'
              `empty_like` placeholders are allocated but never touched, so they are not counted.

`simulate()` runs each stage twice: a warm-up pass (counts FLOPs, records the streamed leaves' order) and the
measured pass (device / host peaks and transfers, as in a steady-state edit). A stage's `repeat` (the DiT's
sampling steps) multiplies its FLOPs and the transfers made inside its body (streamed per step); a
sequential model's move into the stage happens once.
"""

from __future__ import annotations

import collections
import contextlib
import itertools
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves
from torch.utils.weak import WeakIdKeyDictionary

DEVICE = "cpu"  # fake 'cpu' plays the accelerator
HOST = "meta"  # fake 'meta' plays host memory
MODES = ("resident", "sequential", "stream", "disk")
GIB = 2**30


class DeviceMemory(TorchDispatchMode):
    """Live bytes per device of every storage it has seen (made by an op under it, or given to `track`), and
    their peaks since `reset_peak`."""

    def __init__(self) -> None:
        super().__init__()
        self.seen = WeakIdKeyDictionary()
        self.live: collections.Counter = collections.Counter()
        self.peak: collections.Counter = collections.Counter()
        self._counting = True

    def track(self, *objects) -> None:
        for item in tree_leaves(objects):
            if isinstance(item, nn.Module):
                self.track(*item.parameters(), *item.buffers())
                continue
            if not isinstance(item, torch.Tensor):
                continue
            storage = item.untyped_storage()
            if storage in self.seen:
                continue
            self.seen[storage] = True
            if not self._counting:
                continue
            device, nbytes = str(item.device), storage.nbytes()
            weakref.finalize(storage, self._free, device, nbytes)
            self.live[device] += nbytes
            self.peak[device] = max(self.peak[device], self.live[device])

    def _free(self, device: str, nbytes: int) -> None:
        self.live[device] -= nbytes

    def reset_peak(self) -> None:
        self.peak = collections.Counter(self.live)

    @contextlib.contextmanager
    def uncounted(self) -> Iterator[None]:
        """Storages made here are never counted (memory that is allocated but never touched)."""
        previous, self._counting = self._counting, False
        try:
            yield
        finally:
            self._counting = previous

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        self.track(out)
        return out


class Unit:
    """Tensors that move together: a whole model, or one leaf (group) of a streamed model. Tensors shared
    between modules (tied weights) are one slot."""

    def __init__(self, name: str, component: str, owners: list[nn.Module]) -> None:
        self.name, self.component = name, component
        slots: dict[int, list] = {}
        tensors: dict[int, torch.Tensor] = {}
        for owner in owners:
            for kind in ("_parameters", "_buffers"):
                for key, tensor in getattr(owner, kind).items():
                    if tensor is not None:
                        slots.setdefault(id(tensor), []).append((owner, kind, key))
                        tensors[id(tensor)] = tensor
        self.slots = list(slots.values())
        self.on_device = False
        self.host_copy: list[torch.Tensor] | None = None

    def tensors(self) -> list[torch.Tensor]:
        return [getattr(owner, kind)[key] for (owner, kind, key), *_ in self.slots]

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.tensors())

    def set(self, tensors: list[torch.Tensor]) -> None:
        for group, tensor in zip(self.slots, tensors, strict=True):
            owner, kind, key = group[0]
            old = getattr(owner, kind)[key]
            if kind == "_parameters":
                tensor = nn.Parameter(tensor, requires_grad=old.requires_grad)
            for owner, kind, key in group:
                getattr(owner, kind)[key] = tensor


@dataclass
class Transfers:
    onloaded: collections.Counter = field(default_factory=collections.Counter)  # host -> device bytes per model
    offloaded: collections.Counter = field(default_factory=collections.Counter)  # device -> host copies per model
    onloads: collections.Counter = field(default_factory=collections.Counter)

    def total(self) -> int:
        return sum(self.onloaded.values())


class Mover:
    """Moves units between DEVICE and HOST by the mode's rule and counts what crosses."""

    def __init__(self, memory: DeviceMemory) -> None:
        self.memory = memory
        self.transfers = Transfers()
        self.counting = True

    def _count(self, counter: collections.Counter, unit: Unit, nbytes: int) -> None:
        if self.counting:
            counter[unit.component] += nbytes
            if counter is self.transfers.onloaded:
                self.transfers.onloads[unit.component] += 1

    def rest(self, unit: Unit, mode: str) -> None:
        """Put a unit where it waits between uses (before the edit; not counted as a transfer)."""
        if mode == "sequential":
            unit.set([t.to(HOST) for t in unit.tensors()])
        elif mode == "stream":
            unit.host_copy = [t.to(HOST) for t in unit.tensors()]  # the pinned copy diffusers keeps
            unit.set(unit.host_copy)
        elif mode == "disk":
            with self.memory.uncounted():
                unit.set([torch.empty_like(t, device=HOST) for t in unit.tensors()])
        elif mode != "resident":
            raise ValueError(f"unknown mode '{mode}'")
        unit.on_device = mode == "resident"

    def onload(self, unit: Unit, mode: str) -> None:
        if unit.on_device:
            return
        if mode == "disk":
            read = [torch.empty_like(t, device=HOST) for t in unit.tensors()]  # safetensors.load_file(device="cpu")
            pinned = [torch.empty_like(t) for t in read]  # .pin_memory() of each before the upload
            unit.set([t.to(DEVICE) for t in pinned])
            del read, pinned
        else:
            unit.set([t.to(DEVICE) for t in unit.tensors()])
        self._count(self.transfers.onloaded, unit, unit.nbytes)
        unit.on_device = True

    def offload(self, unit: Unit, mode: str) -> None:
        if not unit.on_device:
            return
        if mode == "sequential":
            self._count(self.transfers.offloaded, unit, unit.nbytes)
            unit.set([t.to(HOST) for t in unit.tensors()])
        elif mode == "stream":
            unit.set(unit.host_copy)
        elif mode == "disk":
            with self.memory.uncounted():
                unit.set([torch.empty_like(t, device=HOST) for t in unit.tensors()])
        else:
            raise ValueError(f"a {mode} unit does not offload")
        unit.on_device = False


# diffusers' _GO_LC_SUPPORTED_PYTORCH_LAYERS: the layers leaf-level offloading gives a group of their own
GROUPED_LAYERS = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d,
                  nn.Linear, nn.Embedding)


def leaf_units(component: str, model: nn.Module) -> tuple[list[tuple[nn.Module, Unit]], list[str]]:
    """diffusers' leaf-level groups (_apply_group_offloading_leaf_level): one per Conv / Linear / Embedding
    module, and the remaining parameters and buffers grouped by the module that holds them (onloaded by that
    module's forward). Returns (trigger module, unit) pairs and the names of groups whose module never runs its
    own forward (nn.MultiheadAttention reads out_proj.weight directly): diffusers would leave those on the host
    and the forward would fail on a GPU; here the attention module onloads them."""
    units, grouped, unreachable = [], [], []
    attention_out = {id(m.out_proj): m for m in model.modules() if isinstance(m, nn.MultiheadAttention)}
    for name, module in model.named_modules():
        if isinstance(module, GROUPED_LAYERS):
            trigger = module
            if id(module) in attention_out:
                trigger = attention_out[id(module)]
                unreachable.append(name)
            units.append((trigger, Unit(name, component, list(module.modules()))))
            grouped.append(name + ".")
    for name, module in model.named_modules():
        if any((name + ".").startswith(prefix) for prefix in grouped):
            continue
        if any(t is not None for t in [*module._parameters.values(), *module._buffers.values()]):
            units.append((module, Unit(name or "<root>", component, [module])))
    return units, unreachable


class Streamer:
    """diffusers' group-offloading hooks, leaf level: a group onloads before its module's forward and is dropped
    after. With a side stream, the root module's first forward records the execution order (diffusers' lazy
    prefetch hook); from then on each group also prefetches the next one. A model whose root forward is never
    called (its parts are called directly) never gets prefetching."""

    def __init__(self, mover: Mover, mode: str, model: nn.Module, units: list[tuple[nn.Module, Unit]]) -> None:
        self.mover, self.mode = mover, mode
        self.units = [unit for _, unit in units]
        self.order: list[Unit] = []
        self.next: dict[int, Unit] = {}
        self.recording = True
        self.root_called = False
        self.handles = [model.register_forward_pre_hook(lambda m, a: setattr(self, "root_called", True))]
        for module, unit in units:
            self.handles.append(module.register_forward_pre_hook(lambda m, a, unit=unit: self._pre(unit)))
            self.handles.append(module.register_forward_hook(lambda m, a, o, unit=unit: self._post(unit)))

    def _pre(self, unit: Unit) -> None:
        if self.recording and all(u is not unit for u in self.order):
            self.order.append(unit)
        self.mover.onload(unit, self.mode)
        following = self.next.get(id(unit))
        if following is not None:
            self.mover.onload(following, self.mode)

    def _post(self, unit: Unit) -> None:
        self.mover.offload(unit, self.mode)

    def finish_recording(self) -> None:
        if self.recording:
            if self.root_called:
                self.next = {id(a): b for a, b in itertools.pairwise(self.order)}
            self.recording = False

    @property
    def prefetching(self) -> bool:
        return bool(self.next)


@dataclass
class Stage:
    name: str
    components: tuple[str, ...]  # the models it runs
    run: Callable[[dict], None]  # reads and writes the edit's state
    repeat: int = 1  # how many times the body runs per edit (sampling steps)


@dataclass
class StageResult:
    name: str
    device_peak: int
    host_peak: int
    flops: int  # per edit (x repeat)
    onloaded: int  # per edit: the move into the stage + repeat x the body's


@dataclass
class Simulation:
    device_peak: int
    host_peak: int
    host_at_rest: int  # weights waiting on the host between stages
    transfers: Transfers  # per edit (bodies x repeat)
    flops: int
    stages: list[StageResult]
    weights: dict[str, int]  # bytes per model as placed (storage dtype)
    notes: list[str] = field(default_factory=list)

    @property
    def onloaded(self) -> int:
        return self.transfers.total()

    @property
    def offloaded(self) -> int:
        return sum(self.transfers.offloaded.values())


def simulate(models: dict[str, nn.Module], modes: dict[str, str], stages: list[Stage], state: dict,
             memory: DeviceMemory | None = None) -> Simulation:
    """Run `stages` on `models` (built on DEVICE, in the current fake mode) placed by `modes`.

    `state` holds the edit's inputs (on DEVICE); stages add their outputs. Call inside FakeTensorMode (or on
    real tensors for tests: then DEVICE and HOST copies are real and meta tensors)."""
    from torch.utils.flop_counter import FlopCounterMode

    from bench.fake_measure import _cpu_flash_mapping

    memory = memory or DeviceMemory()
    mover = Mover(memory)
    wholes: dict[str, Unit] = {}
    streamers: dict[str, Streamer] = {}
    weights, notes = {}, []
    with memory:
        for name, model in models.items():
            mode = modes[name]
            if mode not in MODES:
                raise ValueError(f"unknown mode '{mode}' for {name}; expected one of {MODES}")
            weights[name] = Unit(name, name, list(model.modules())).nbytes
            if mode in ("resident", "sequential"):
                wholes[name] = Unit(name, name, list(model.modules()))
                mover.rest(wholes[name], mode)
            else:
                units, unreachable = leaf_units(name, model)
                for _, unit in units:
                    mover.rest(unit, mode)
                streamers[name] = Streamer(mover, mode, model, units)
                notes += [f"{name}: {group} never runs its own forward (diffusers would not onload it)"
                          for group in unreachable]
        memory.track(*models.values(), state)
        host_at_rest = memory.live[HOST]
        results, total = [], Transfers()
        for stage in stages:
            unknown = [c for c in stage.components if c not in models]
            if unknown:
                raise ValueError(f"stage {stage.name} uses unknown models {unknown}")
            moving = [wholes[c] for c in stage.components if modes[c] == "sequential"]
            counter = FlopCounterMode(display=False, custom_mapping=_cpu_flash_mapping())
            mover.counting = False
            for unit in moving:
                mover.onload(unit, "sequential")
            with counter:
                stage.run(state)
            for unit in moving:
                mover.offload(unit, "sequential")
            for component in stage.components:
                if component in streamers:
                    streamers[component].finish_recording()
            mover.counting = True
            memory.reset_peak()
            before = Transfers()
            mover.transfers = before
            for unit in moving:
                mover.onload(unit, "sequential")
            body = Transfers()
            mover.transfers = body
            stage.run(state)
            mover.transfers = before
            for unit in moving:
                mover.offload(unit, "sequential")
            for counter_name in ("onloaded", "offloaded", "onloads"):
                per_edit = getattr(before, counter_name) + collections.Counter(
                    {k: v * stage.repeat for k, v in getattr(body, counter_name).items()})
                getattr(total, counter_name).update(per_edit)
            flops = counter.get_total_flops() * stage.repeat
            results.append(StageResult(stage.name, memory.peak[DEVICE], memory.peak[HOST], flops,
                                       before.total() + body.total() * stage.repeat))
        for name, streamer in streamers.items():
            for handle in streamer.handles:
                handle.remove()
            notes.append(f"{name}: streamed in {len(streamer.units)} groups, "
                         + ("the next one prefetched" if streamer.prefetching else
                            "no prefetch (its root forward never runs, so diffusers' lazy prefetch hook never fires)"))
    return Simulation(device_peak=max((r.device_peak for r in results), default=memory.live[DEVICE]),
                      host_peak=max([host_at_rest] + [r.host_peak for r in results]), host_at_rest=host_at_rest,
                      transfers=total, flops=sum(r.flops for r in results), stages=results, weights=weights,
                      notes=notes)

"""A whole ReViSE edit at the release's setting, per placement: device / host peaks, transfers, compute.

The release preset `revise-official` (revise_core/presets.py): 17 frames 352x640, UniPC 40 steps, guidance
mode official (one conditional and one unconditional DiT call per step), umT5 over the instruction padded to
512 tokens, VILA-8B reading frame 0. Models of the ReViSE release in bf16: VILA-8B (revise-vila-8b), its
connector (VisionHead + DM_Adapter), Wan2.1-1.3B, umT5-XXL, the Wan VAE. Stages, in the editor's order
(ReviseEditor.condition: the connector needs the source latents): VAE encode, VLM pass (u), umT5 encode,
connector (cond and the null branch), 40 sampling steps (one step simulated: cond + uncond; FLOPs x 40, the
DiT moves in once), VAE decode.

Every placement is simulated on fake tensors with bench/placement_sim.py (weights moved per the plan at each
stage, live bytes counted per device): the peaks, the transfers and the FLOPs all come from that one run.
Storage options are simulated the way the libraries store and compute:
- int8 (torchao Int8WeightOnlyConfig on every nn.Linear of the VLM and umT5): int8 weight [out, in], fp32
  scale and int8 zero point [out, 1]; the forward is torchao's weight-only path (`qdata.t().to(bf16)`, mm,
  times the scale), so one layer's weight exists in bf16 while it runs;
- fp8 (diffusers `enable_layerwise_casting`, float8_e4m3fn storage, bf16 compute): exactly the modules that
  diffusers hooks on Wan (found by applying it to a meta-device copy; patch_embedding, condition_embedder and
  the norms stay bf16); a hooked layer is cast to bf16 before its forward and back after (Module.to).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field

import torch
from torch import nn

CONSUMER_BF16_FLOPS = 165e12  # RTX 4090-class dense bf16 roofline (FLOP/s)
HOST_TO_DEVICE_BYTES_PER_S = 25e9  # PCIe 4.0 x16, practical host-to-device copy rate
GIB = 2**30
RELEASE_VLM = "revise-vila-8b"
STEPS = 40  # revise-official: UniPC 40 steps
GUIDANCE = 3.0  # official guidance: cond + 3 (cond - uncond)
TEXT_LEN = 512  # revise-official max_text_len: umT5 reads the prompt padded to 512 tokens
TEXT_TOKENS = 128  # umT5 rows kept for the context (trimmed to the prompt's length; a typical bound)
INSTRUCTION = "make the car red"
COMPONENTS = ("vae", "vlm", "t5", "connector", "dit")


@dataclass(frozen=True)
class EditPlacement:
    """One row: per model a mode of bench/placement_sim.py, the storage options and the row's target."""

    name: str
    modes: dict
    int8_encoders: bool = False
    fp8_dit: bool = False
    tiled_decode: bool = False
    target: str = ""
    device_target_gib: float | None = None
    host_target_gib: float | None = None
    transfer_share_target: float | None = None  # transfer seconds / compute seconds

    def describe(self) -> str:
        modes = ", ".join(f"{name} {self.modes[name]}" for name in COMPONENTS)
        extras = [text for flag, text in ((self.int8_encoders, "VLM + umT5 int8"), (self.fp8_dit, "DiT fp8 storage"),
                                          (self.tiled_decode, "tiled VAE decode")) if flag]
        return modes + ("; " + ", ".join(extras) if extras else "")


def _modes(default: str, **overrides) -> dict:
    return {name: overrides.get(name, default) for name in COMPONENTS}


# revise_core/placement.py's resolve_modes: `stream` streams the VLM and umT5 (run once per edit) leaf by
# leaf, moves the VAE and the connector whole, and keeps the DiT whole while it samples when it fits the
# budget (it does at 6 GiB: 2.6 GiB + the 2.5 GiB activation reserve). host=disk changes where streamed
# weights wait.
STREAM = _modes("sequential", vlm="stream", t5="stream")
PLACEMENTS = {
    "resident": EditPlacement("resident", _modes("resident"), target="(reference: every model on the device)"),
    "sequential": EditPlacement("sequential", _modes("sequential"), target="device <= 17 GiB",
                                device_target_gib=17),
    "stream": EditPlacement("stream", STREAM, target="device <= 6 GiB, transfer <= 25 % of compute",
                            device_target_gib=6, transfer_share_target=0.25),
    "stream-tiled": EditPlacement("stream, tiled VAE decode", STREAM, tiled_decode=True,
                                  target="device <= 6 GiB, transfer <= 25 % of compute", device_target_gib=6,
                                  transfer_share_target=0.25),
    "int8-fp8-sequential": EditPlacement("sequential, int8 VLM + umT5, fp8 DiT", _modes("sequential"),
                                         int8_encoders=True, fp8_dit=True, target="device <= 10 GiB",
                                         device_target_gib=10),
    "disk": EditPlacement("stream, host=disk", _modes("sequential", vlm="disk", t5="disk"),
                          target="host <= 12 GiB", host_target_gib=12),
}


@dataclass
class EditRow:
    """A whole edit under one placement (per edit: 40 steps; bytes in GiB, times in seconds)."""

    placement: str
    description: str
    frames: int
    height: int
    width: int
    vlm: str
    device_gib: float
    host_gib: float
    transfer_gib: float
    transfer_s: float
    compute_s: float
    transfer_share: float
    target: str
    target_met: bool | None
    method: str
    device_to_host_gib: float = 0.0  # copies back of sequential models (Module.to), not counted as transfers
    host_at_rest_gib: float = 0.0
    stages: list = field(default_factory=list)  # per stage: name, device / host peak GiB, TFLOP, transfer GiB
    weights_gib: dict = field(default_factory=dict)  # per model, as stored
    tflop: float = 0.0
    notes: list = field(default_factory=list)
    fake_run_s: float = 0.0
    key: str = ""  # the PLACEMENTS key


# --- fake-tensor context -------------------------------------------------------------------------

@contextlib.contextmanager
def fake_context() -> Iterator:
    """The fake mode bench/fake_measure.measure() runs in (constant index tensors, real index helpers)."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    from bench import fake_measure

    with contextlib.ExitStack() as stack:
        stack.enter_context(fake_measure._constant_limit(fake_measure.CONSTANT_LIMIT))
        mode = stack.enter_context(FakeTensorMode())
        stack.enter_context(fake_measure.ConstantIndices(mode))
        stack.enter_context(fake_measure.real_helpers(mode))
        stack.enter_context(fake_measure.gpu_rms_norm())
        yield mode


def to_fake(mode, tensor: torch.Tensor, *, constant: bool = False) -> torch.Tensor:
    """A real tensor as a fake one (`constant`: with its values, for index bookkeeping)."""
    if constant:
        return mode.fake_tensor_converter.from_real_tensor(mode, tensor, make_constant=True)
    return mode.from_tensor(tensor)


# --- storage options (int8: bench/int8_storage.py) ---------------------------------------------

def fp8_cast_modules(config: dict) -> set[str]:
    """Names of the Wan modules diffusers' `enable_layerwise_casting` hooks (a meta-device copy)."""
    from diffusers import WanTransformer3DModel
    from torch._subclasses.fake_tensor import unset_fake_temporarily

    from bench.fake_measure import default_dtype

    with unset_fake_temporarily(), default_dtype(torch.bfloat16), torch.device("meta"):
        dit = WanTransformer3DModel.from_config(config)
        dit.enable_layerwise_casting(storage_dtype=torch.float8_e4m3fn, compute_dtype=torch.bfloat16)
    names = set()
    for name, module in dit.named_modules():
        registry = getattr(module, "_diffusers_hook", None)
        if registry is not None and registry.get_hook("layerwise_casting") is not None:
            names.add(name)
    return names


def _cast(module: nn.Module, dtype: torch.dtype) -> None:
    """Module.to(dtype) for the module's own floating tensors, by re-creating them (works on fake tensors)."""
    for kind in ("_parameters", "_buffers"):
        tensors = getattr(module, kind)
        for key, tensor in tensors.items():
            if tensor is not None and tensor.is_floating_point() and tensor.dtype != dtype:
                new = tensor.detach().to(dtype)
                tensors[key] = nn.Parameter(new, requires_grad=False) if kind == "_parameters" else new


def store_fp8(dit: nn.Module, names: set[str]) -> int:
    """float8_e4m3fn storage on `names`, cast to bf16 around each forward (diffusers' LayerwiseCastingHook)."""
    count = 0
    for name, module in dit.named_modules():
        if name in names:
            _cast(module, torch.float8_e4m3fn)
            module.register_forward_pre_hook(lambda m, args: _cast(m, torch.bfloat16))
            module.register_forward_hook(lambda m, args, out: _cast(m, torch.float8_e4m3fn))
            count += 1
    return count


# --- the release's models and the edit's stages ----------------------------------------------------

def build_release(mode, frames: int, height: int, width: int, *, int8_encoders: bool = False,
                  fp8_dit: bool = False) -> tuple[dict, dict, object]:
    """The five models in bf16 on the fake device, and the edit's inputs. Returns (models, state, vlm)."""
    from diffusers import AutoencoderKLWan, WanTransformer3DModel
    from torch._subclasses.fake_tensor import unset_fake_temporarily
    from transformers import UMT5Config, UMT5EncoderModel

    from bench import project_composition as project
    from bench.fake_measure import default_dtype
    from bench.int8_storage import store_int8

    bf16 = torch.bfloat16
    vlm = project.build_vlm(RELEASE_VLM, bf16)
    with unset_fake_temporarily():  # the release's preprocessing (PIL on 8-bit frames) needs real pixels
        source = torch.zeros(frames, height, width, 3)
        inputs = vlm.conditioning_inputs(source, INSTRUCTION)
        u_len = project.u_length(vlm, frames, height, width)
    inputs.kwargs["input_ids"] = to_fake(mode, inputs.kwargs["input_ids"], constant=True)
    inputs.kwargs["pixels"] = to_fake(mode, inputs.kwargs["pixels"])
    video_tokens = ((frames - 1) // 4 + 1) * (height // 32) * (width // 32)
    dit_config = project._config("wan2.1-t2v-1.3b")
    with default_dtype(bf16):
        dit = WanTransformer3DModel.from_config(dit_config)
        connector = project.build_connector(RELEASE_VLM, vlm.hidden_size, video_tokens, u_len)
        vae = AutoencoderKLWan.from_config(project._config("wan2.1-vae"))
        t5 = UMT5EncoderModel(UMT5Config(**project._config("umt5-xxl")))
    t5.tie_weights()  # one embedding, as loaded (no_init_weights leaves encoder.embed_tokens untied)
    models = dict(vae=vae, vlm=vlm.model, t5=t5, connector=connector, dit=dit)
    for model in models.values():
        model.eval().requires_grad_(False)
    if int8_encoders:
        store_int8(vlm.model)
        store_int8(t5)
    if fp8_dit:
        store_fp8(dit, fp8_cast_modules(dit_config))
    state = dict(pixels=torch.empty(1, 3, frames, height, width, dtype=bf16), vlm_inputs=inputs,
                 t5_ids=torch.zeros(1, TEXT_LEN, dtype=torch.long), t5_mask=torch.ones(1, TEXT_LEN, dtype=torch.long),
                 noise=torch.randn(1, 16, (frames - 1) // 4 + 1, height // 8, width // 8))
    return models, state, vlm


def edit_stages(models: dict, vlm, *, tiled_decode: bool = False, steps: int = STEPS) -> list:
    """The stages of ReviseEditor.edit, in its order, as bench/placement_sim.Stage objects."""
    from bench.placement_sim import Stage
    from revise_core import vae as vae_ops
    from revise_core.text import pad_context

    vae, t5, connector, dit = models["vae"], models["t5"], models["connector"], models["dit"]
    bf16 = torch.bfloat16

    def vae_encode(state: dict) -> None:
        state["raw"] = vae_ops.encode(vae, state["pixels"])

    def vlm_pass(state: dict) -> None:
        state["u"] = vlm.forward(state["vlm_inputs"], hidden_states=True).hidden_states

    def t5_pass(state: dict) -> None:
        hidden = t5(state["t5_ids"], state["t5_mask"]).last_hidden_state
        state["text"] = hidden[0, :TEXT_TOKENS]

    def connector_pass(state: dict) -> None:  # editor.assemble_condition
        latents = vae_ops.normalize_latents(vae, state["raw"].float())
        video = connector.adapt_video(latents.to(bf16))[0]
        length = connector.config.max_context_len
        cond = pad_context(connector.assemble(connector.project_vlm(state["u"].to(video)), state["text"].to(video),
                                              video), length)
        state["cond"], state["uncond"] = cond[None], pad_context(connector.null_context(video), length)[None]
        state["latents"] = state["noise"].clone()

    def sampling_step(state: dict) -> None:  # sampler.sample, guidance mode official
        latents = state["latents"]
        timestep = torch.tensor([500.0])
        velocity = dit(hidden_states=latents.to(bf16), timestep=timestep, encoder_hidden_states=state["cond"],
                       return_dict=False)[0].float()
        unconditional = dit(hidden_states=latents.to(bf16), timestep=timestep, encoder_hidden_states=state["uncond"],
                            return_dict=False)[0].float()
        velocity = velocity + GUIDANCE * (velocity - unconditional)
        state["latents"] = latents - (1.0 / steps) * velocity

    def vae_decode(state: dict) -> None:
        raw = vae_ops.denormalize_latents(vae, state["latents"])
        state["frames"] = vae_ops.decode(vae, raw, tiled=tiled_decode)

    return [Stage("VAE encode", ("vae",), vae_encode), Stage("VLM pass", ("vlm",), vlm_pass),
            Stage("umT5 encode", ("t5",), t5_pass), Stage("connector", ("connector",), connector_pass),
            Stage(f"DiT x {steps} steps (cond + uncond)", ("dit",), sampling_step, repeat=steps),
            Stage("VAE decode" + (" (tiled)" if tiled_decode else ""), ("vae",), vae_decode)]


def share(transfer_s: float, compute_s: float) -> float:
    return transfer_s / compute_s if compute_s else float("inf")


def target_met(placement: EditPlacement, device_gib: float, host_gib: float, transfer_share: float) -> bool | None:
    checks = []
    if placement.device_target_gib is not None:
        checks.append(device_gib <= placement.device_target_gib)
    if placement.host_target_gib is not None:
        checks.append(host_gib <= placement.host_target_gib)
    if placement.transfer_share_target is not None:
        checks.append(transfer_share <= placement.transfer_share_target)
    return all(checks) if checks else None


def measure_placement(key: str, size: tuple[int, int, int] = (17, 352, 640)) -> EditRow:
    """Simulate one placement of PLACEMENTS over a whole edit (a fresh fake mode; about a minute)."""
    import time

    from bench.placement_sim import simulate

    placement = PLACEMENTS[key]
    frames, height, width = size
    started = time.perf_counter()
    with fake_context() as mode, torch.no_grad():
        models, state, vlm = build_release(mode, frames, height, width, int8_encoders=placement.int8_encoders,
                                           fp8_dit=placement.fp8_dit)
        result = simulate(models, placement.modes, edit_stages(models, vlm, tiled_decode=placement.tiled_decode),
                          state)
    notes = list(result.notes)
    if any(mode == "disk" for mode in placement.modes.values()):
        notes.append("steady state: the streamed models were loaded into RAM and written to the offload folder "
                     "before the first edit (that edit's host peak includes them)")
    return edit_row(placement, result, size=size, vlm=RELEASE_VLM, notes=notes, started=started, key=key,
                    method="simulated: fake tensors, weights moved per stage, live bytes per device")


def edit_row(placement: EditPlacement, result, *, size: tuple[int, int, int], vlm: str, notes: list[str],
             method: str, started: float, key: str) -> EditRow:
    """One whole-edit row from a simulation's result: device, host and transfer figures against the target."""
    import time

    frames, height, width = size
    transfer_s = result.onloaded / HOST_TO_DEVICE_BYTES_PER_S
    compute_s = result.flops / CONSUMER_BF16_FLOPS
    device_gib, host_gib = result.device_peak / GIB, result.host_peak / GIB
    ratio = share(transfer_s, compute_s)
    stages = [dict(stage=s.name, device_gib=round(s.device_peak / GIB, 3), host_gib=round(s.host_peak / GIB, 3),
                   tflop=round(s.flops / 1e12, 2), transfer_gib=round(s.onloaded / GIB, 3)) for s in result.stages]
    return EditRow(placement=placement.name, description=placement.describe(), frames=frames, height=height,
                   width=width, vlm=vlm, device_gib=round(device_gib, 2), host_gib=round(host_gib, 2),
                   transfer_gib=round(result.onloaded / GIB, 2), transfer_s=round(transfer_s, 3),
                   compute_s=round(compute_s, 3), transfer_share=round(ratio, 4), target=placement.target,
                   target_met=target_met(placement, device_gib, host_gib, ratio), method=method,
                   device_to_host_gib=round(result.offloaded / GIB, 2),
                   host_at_rest_gib=round(result.host_at_rest / GIB, 2), stages=stages,
                   weights_gib={k: round(v / GIB, 3) for k, v in result.weights.items()},
                   tflop=round(result.flops / 1e12, 1), notes=notes,
                   fake_run_s=round(time.perf_counter() - started, 1), key=key)


def row_dict(row: EditRow) -> dict:
    return asdict(row)

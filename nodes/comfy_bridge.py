"""The only module that touches ComfyUI's runtime: model folders, progress, interruption, previews, memory.

Every function degrades to plain behaviour outside ComfyUI (tests, scripts): folder lists come from the
`REVISE_MODEL_DIRS` environment variable (`name=path;name=path`), progress goes to tqdm, interruption
never fires, and a node's models move to their compute device for the block and back (`models_on_device`).

Memory: who places what.
- ComfyUI places whole models. Every model a ReViSE loader returns gets one ModelPatcher
  (`make_patcher`, through `comfy.model_patcher.CoreModelPatcher` where it exists), kept alive on the
  module itself (`PATCHER_ATTRIBUTE`). A node asks for all the models it uses together in ONE
  `load_models_gpu(..., memory_required=<its activation estimate>, force_full_load=True)` call and then
  does nothing: the models stay registered and ComfyUI evicts them (partially first) when something else
  needs the memory, exactly as it does its own models. Its flags (--lowvram / --novram / --highvram /
  --gpu-only / --cpu, --reserve-vram, --disable-smart-memory) and its devices apply: the encoders (VLM,
  umT5) load on `text_encoder_device()` and rest on `text_encoder_offload_device()`, the VAE on
  `vae_device()` / `vae_offload_device()`, the DiT and the connector on `get_torch_device()` /
  `unet_offload_device()`; a loader's explicit `device` widget (cpu / cuda) wins as the load device.
  `force_full_load`: ReViSE's diffusers / transformers layers are not ComfyUI ops, so a partial (lowvram)
  load would leave a model split across devices. --novram keeps every such model off the device; the
  nodes then stop with a clear error (`models_on_device`) instead of a device-mismatch crash.
- Inside one model, the project's own `stream` placement (revise_core/placement.py: diffusers group
  offloading, blocks onloaded ahead of use) may decide where its blocks live. Such a model's patcher
  is made with `make_patcher(module, size=<the streamed working set>)`, the hook for it: ComfyUI then
  accounts for what the model really holds on the device, not its full size.
- Code that moves models itself (the trainer, trainer/loop.py) gets them through `placed_by_caller`:
  ComfyUI unloads exactly those models and frees room for the run, and they go back to their offload
  device afterwards, so ComfyUI's view of them (not loaded, at rest) stays true.
- Nothing here unloads every model: ComfyUI's unload-all evicts the user's own models too.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import logging
import os
import struct
from collections.abc import Callable, Iterator
from pathlib import Path

import torch

from revise_core.checkpoints import COMPUTE_DEVICE_ATTRIBUTE, METADATA_FORMAT_KEY
from revise_core.connector import CONNECTOR_MODULES
from revise_core.connector import FORMAT_NAME as CONNECTOR_FORMAT_NAME
from revise_core.models_file import MODELS_FILE
from revise_core.release_layouts import OMNIVIDEO2_MARKERS, RELEASE_MARKERS

logger = logging.getLogger(__name__)

# Our model kinds -> ComfyUI folder names. "vlm" is registered by us (HF-format model folders).
FOLDERS = {"dit": "diffusion_models", "vae": "vae", "t5": "text_encoders", "vlm": "vlm", "connector": "diffusion_models",
           "model_set": "revise", "lora": "loras"}
VLM_FOLDER = "vlm"
MODEL_SET_FOLDER = "revise"  # models/revise/<set>/: a ReViSE release folder (revise_ckpt/) or a models.json set


def in_comfyui() -> bool:
    return importlib.util.find_spec("folder_paths") is not None and importlib.util.find_spec("comfy") is not None


def register_folders() -> None:
    """Add `models/vlm` and `models/revise` (model sets) to ComfyUI's folder list: both hold folders."""
    if not in_comfyui():
        return
    import folder_paths

    for name in (VLM_FOLDER, MODEL_SET_FOLDER):
        if name not in folder_paths.folder_names_and_paths:
            folder_paths.add_model_folder_path(name, os.path.join(folder_paths.models_dir, name), is_default=True)


def folder_paths_for(kind: str) -> list[Path]:
    """Folders searched for a model kind."""
    name = FOLDERS[kind]
    if in_comfyui():
        import folder_paths

        register_folders()
        return [Path(p) for p in folder_paths.get_folder_paths(name)]
    configured = dict(item.split("=", 1) for item in os.environ.get("REVISE_MODEL_DIRS", "").split(";") if "=" in item)
    return [Path(p) for p in configured.get(name, "").split(os.pathsep) if p]


def list_models(kind: str, *, folders: bool = False) -> list[str]:
    """Names for a loader's dropdown: weight files, or (folders=True) model folders, in the kind's folders.

    The DiT and the connector share `diffusion_models`: each list keeps only its own candidates (see
    `_candidate_for`), so the DiT dropdown shows no connector file and no token pickle."""
    names: set[str] = set()
    for root in folder_paths_for(kind):
        if not root.is_dir():
            continue
        for entry in root.rglob("*"):
            wanted = _is_model_folder(entry) if folders else (entry.is_file() and entry.suffix in WEIGHT_SUFFIXES
                                                               and _candidate_for(kind, entry))
            if wanted:
                names.add(entry.relative_to(root).as_posix())
    return sorted(names)


WEIGHT_SUFFIXES = (".safetensors", ".sft", ".pt", ".pth", ".bin", ".pkl")
SAFETENSORS_SUFFIXES = (".safetensors", ".sft")


def _candidate_for(kind: str, path: Path) -> bool:
    """Whether a weights file in a shared folder can be a `kind` ("dit" / "connector"; other kinds: any).

    .pkl files are token and context pickles, never weights to pick. A .safetensors header (read without
    the tensors) tells: ReViSE's files name their content ('revise.format'); otherwise the tensor names do
    (connector modules, with or without an Omni-Video-style `wan_model.` DiT beside them; anything else, as
    ComfyUI's and Comfy-Org's Wan files, is a DiT). Pickled checkpoints (.pt/.pth/.bin) cannot be read without
    loading them and may hold both, as Omni-Video 2's pytorch_model.pt does, so both lists keep them. A file
    whose header cannot be read stays in both lists: the loader reports it properly when it is picked."""
    if kind not in ("dit", "connector"):
        return True
    if path.suffix == ".pkl":
        return False
    if path.suffix not in SAFETENSORS_SUFFIXES:
        return True
    header = _safetensors_header(path)
    if header is None:
        return True
    metadata = header.get("__metadata__") or {}
    if metadata.get(METADATA_FORMAT_KEY):
        is_connector = metadata[METADATA_FORMAT_KEY] == CONNECTOR_FORMAT_NAME
        return is_connector if kind == "connector" else not is_connector
    names = [name for name in header if name != "__metadata__"]
    has_connector = any(name.split(".", 1)[0] in CONNECTOR_MODULES for name in names)
    has_dit = not has_connector or any(name.startswith("wan_model.") for name in names)
    return has_connector if kind == "connector" else has_dit


def _safetensors_header(path: Path) -> dict | None:
    """The JSON header of a safetensors file (tensor names, metadata), or None if it cannot be read."""
    try:
        with open(path, "rb") as handle:
            (length,) = struct.unpack("<Q", handle.read(8))
            if length > 100_000_000:
                return None
            header = json.loads(handle.read(length))
    except (OSError, ValueError, struct.error):
        return None
    return header if isinstance(header, dict) else None


def list_token_files() -> list[str]:
    """The boundary-token pickles (Omni-Video 2's special_tokens.pkl) in the connector's folders."""
    names: set[str] = set()
    for root in folder_paths_for("connector"):
        if root.is_dir():
            names.update(entry.relative_to(root).as_posix() for entry in root.rglob("*.pkl") if entry.is_file())
    return sorted(names)


def list_model_sets() -> list[str]:
    """Folders in models/revise that are model sets: a ReViSE release folder or a folder with a models.json."""
    names: set[str] = set()
    for root in folder_paths_for("model_set"):
        if not root.is_dir():
            continue
        for entry in [root, *root.rglob("*")]:
            if entry.is_dir() and entry != root and _is_model_set(entry):
                names.add(entry.relative_to(root).as_posix())
    return sorted(names)


def _is_model_set(path: Path) -> bool:
    return (path / MODELS_FILE).is_file() or any(all((path / marker).exists() for marker in markers)
                                                    for markers in (RELEASE_MARKERS, OMNIVIDEO2_MARKERS))


def _is_model_folder(path: Path) -> bool:
    """A Hugging Face model or tokenizer folder."""
    return path.is_dir() and any((path / name).is_file() for name in ("config.json", "tokenizer.json", "spiece.model",
                                                                       "tokenizer_config.json"))


def resolve(kind: str, name: str) -> Path:
    """Full path of a dropdown entry; the error lists every folder searched."""
    from revise_core.checkpoints import find_model_file

    return find_model_file(name, folder_paths_for(kind))


# --- memory (see the module docstring: who places what) -------------------------------------------------

# Per kind of model: ComfyUI's (load device, offload device) functions in comfy.model_management.
KIND_DEVICES = {
    "dit": ("get_torch_device", "unet_offload_device"),
    "connector": ("get_torch_device", "unet_offload_device"),
    "vae": ("vae_device", "vae_offload_device"),
    "t5": ("text_encoder_device", "text_encoder_offload_device"),
    "vlm": ("text_encoder_device", "text_encoder_offload_device"),
}
KIND_NAMES = {"dit": "DiT", "connector": "connector", "vae": "VAE", "t5": "umT5 text encoder", "vlm": "VLM"}
PATCHER_ATTRIBUTE = "revise_patcher"  # the model's ComfyUI patcher (in ComfyUI only), see _PatcherSlot
CPU = torch.device("cpu")


def compute_device_of(module: torch.nn.Module) -> torch.device:
    """The device a loader chose for this model (models rest on the offload device between uses)."""
    return getattr(module, COMPUTE_DEVICE_ATTRIBUTE, None) or next(module.parameters()).device


def compute_device(choice: str = "auto", kind: str = "dit") -> torch.device:
    """Where a model of `kind` computes: the loader's `device` widget when it names one, else ComfyUI's
    device for the kind (outside ComfyUI: CUDA when there is one)."""
    if choice != "auto":
        device = torch.device(choice)
        if device.type == "cuda" and device.index is None and in_comfyui():
            # ComfyUI keys its registry by device: "cuda" and its "cuda:0" would be two devices to it.
            device = torch.device("cuda", torch.cuda.current_device())
        return device
    if in_comfyui():
        import comfy.model_management as mm

        return getattr(mm, KIND_DEVICES[kind][0])()
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def offload_device_for(kind: str = "dit", load_device: torch.device | None = None) -> torch.device:
    """Where a model of `kind` rests between uses: ComfyUI's offload device for the kind (the CPU when the
    model computes there); the CPU outside ComfyUI."""
    if not in_comfyui() or (load_device is not None and torch.device(load_device) == CPU):
        return CPU
    import comfy.model_management as mm

    return getattr(mm, KIND_DEVICES[kind][1])()


def place(module: torch.nn.Module, kind: str, device: torch.device) -> torch.nn.Module:
    """A loader's model: it computes on `device`. In ComfyUI it is handed to ComfyUI's memory manager
    (`register`), which moves it from then on; outside ComfyUI it rests in host memory until a node uses it."""
    setattr(module, COMPUTE_DEVICE_ATTRIBUTE, device)
    if in_comfyui():
        return register(module, kind)
    return module.to(CPU)


def register(module: torch.nn.Module, kind: str) -> torch.nn.Module:
    """In ComfyUI, give a model we built (a loader's, the trainer's) its patcher; it rests on its offload
    device until a node asks ComfyUI for it. Outside ComfyUI: nothing."""
    if not in_comfyui():
        return module
    load = compute_device_of(module)
    offload = offload_device_for(kind, load)
    if offload.type == "cpu" and _weights_device(module) != offload:
        module.to(offload)  # not registered yet: ours to move
    make_patcher(module, kind=kind, load_device=load, offload_device=offload)
    return module


class ReViSEModel(torch.nn.Module):
    """What ComfyUI's ModelPatcher wraps: a container holding one of our models as `inner`. The patcher
    writes `device` and its bookkeeping onto the module it is given, and diffusers' / transformers' models
    have a read-only `device` property (docs: the memory reference, section 1). The class name is what
    ComfyUI's log shows ("Requested to load ReViSEDiT")."""

    def __init__(self, inner: torch.nn.Module) -> None:
        super().__init__()
        self.inner = inner


class ReViSEDiT(ReViSEModel):
    """A ReViSE DiT in ComfyUI's registry."""


class ReViSEConnector(ReViSEModel):
    """A ReViSE connector in ComfyUI's registry."""


class ReViSEVAE(ReViSEModel):
    """A ReViSE VAE in ComfyUI's registry."""


class ReViSET5(ReViSEModel):
    """A ReViSE umT5 encoder in ComfyUI's registry."""


class ReViSEVLM(ReViSEModel):
    """A ReViSE VLM in ComfyUI's registry."""


HOLDERS = {"dit": ReViSEDiT, "connector": ReViSEConnector, "vae": ReViSEVAE, "t5": ReViSET5, "vlm": ReViSEVLM}


class _PatcherSlot:
    """Keeps a model's patcher on the model itself (PATCHER_ATTRIBUTE), with the model's kind.

    ComfyUI's registry holds patchers by weak reference only (LoadedModel), so the patcher must live
    exactly as long as the model: module -> slot -> patcher -> holder -> module is one cycle, which the
    garbage collector frees as a whole once ComfyUI's cache lets the model go; ComfyUI never sees a dead
    patcher beside a live model. No registry keyed by module: a WeakKeyDictionary whose value (the
    patcher) holds its key would never let the model go. A copy of the model (the trainer's deepcopy,
    pickling) is a new model and gets an empty slot, never the original's patcher: two patchers on one
    module count as clones to ComfyUI, which then unloads one whenever it loads the other."""

    __slots__ = ("kind", "patcher")

    def __init__(self, patcher=None, kind: str | None = None) -> None:
        self.patcher, self.kind = patcher, kind

    def __reduce__(self):
        return (_PatcherSlot, ())


def existing_patcher(module: torch.nn.Module):
    """The model's patcher if it has one (None outside ComfyUI and before `make_patcher`)."""
    slot = module.__dict__.get(PATCHER_ATTRIBUTE)
    return slot.patcher if slot is not None else None


def patcher_of(module: torch.nn.Module):
    """The model's patcher, made on first use for a model no loader registered."""
    return existing_patcher(module) or make_patcher(module, kind=_kind_of(module))


def make_patcher(module: torch.nn.Module, *, kind: str = "dit", load_device: torch.device | None = None,
                 offload_device: torch.device | None = None, size: int | None = None):
    """Register `module` with ComfyUI's memory manager: its one patcher, made through
    `comfy.model_patcher.CoreModelPatcher` where it exists (v0.12+: dynamic VRAM; looked up now, because
    ComfyUI's main.py swaps it in at start-up) and kept on the module.

    The hook for placements inside one model: `size` is what the model holds on the device once loaded,
    by default all its weights (tied weights once); a model streamed block by block (revise_core's
    `stream` placement) passes its streamed working set, so ComfyUI frees and accounts for that. A module
    that had a patcher leaves ComfyUI's registry first (one patcher per module). Defaults: the model's
    compute device and its kind's offload device."""
    import comfy.model_management as mm
    import comfy.model_patcher as mp

    previous = existing_patcher(module)
    if previous is not None:
        unload(mm, [previous])
    load = torch.device(load_device) if load_device is not None else compute_device_of(module)
    offload = torch.device(offload_device) if offload_device is not None else offload_device_for(kind, load)
    holder = HOLDERS.get(kind, ReViSEModel)(module)
    holder.device = _weights_device(module)  # where the weights are now (the patcher would assume `offload`)
    patcher_class = getattr(mp, "CoreModelPatcher", mp.ModelPatcher)
    patcher = patcher_class(holder, load, offload, size=weight_bytes(module) if size is None else int(size))
    setattr(module, PATCHER_ATTRIBUTE, _PatcherSlot(patcher, kind))
    return patcher


def weight_bytes(module: torch.nn.Module) -> int:
    """Bytes of a model's parameters and buffers, each tensor once (ComfyUI's own count, its state dict's,
    counts tied weights twice: umT5's embedding is 2 GB in bf16); quantised weights (int8, fp8) by what they
    store."""
    from revise_core.placement import module_bytes

    return module_bytes(module)


def _weights_device(module: torch.nn.Module) -> torch.device:
    return next(module.parameters()).device


def _kind_of(module: torch.nn.Module) -> str:
    """The kind of a model that did not come from a loader (its slot says it otherwise)."""
    slot = module.__dict__.get(PATCHER_ATTRIBUTE)
    if slot is not None and slot.kind:
        return slot.kind
    name = type(module).__name__
    if "Autoencoder" in name:
        return "vae"
    if "Connector" in name:
        return "connector"
    if "T5" in name:
        return "t5"
    return "vlm" if hasattr(module, "generate") else "dit"


def unique_modules(modules) -> list[torch.nn.Module]:
    out: list[torch.nn.Module] = []
    for module in modules:
        if module is not None and not any(module is seen for seen in out):
            out.append(module)
    return out


def unload(mm, patchers) -> None:
    """ComfyUI unloads exactly these patchers' models (free_memory with every other model kept loaded, as
    ComfyUI-Florence2 does); they stay unregistered until the next load_models_gpu."""
    ours = {id(p) for p in patchers}
    for device in {p.load_device for p in patchers}:
        keep = [loaded for loaded in mm.current_loaded_models if id(loaded.model) not in ours]
        mm.free_memory(1e30, device, keep_loaded=keep)


@contextlib.contextmanager
def models_on_device(modules, *, memory_required: int = 0) -> Iterator[None]:
    """The models one node uses together, on their compute devices for the block.

    In ComfyUI: ONE `load_models_gpu` request for all of them, with `memory_required` (the node's
    activation estimate) and `force_full_load`, then the --novram check; afterwards nothing (ComfyUI
    evicts them when another model needs the memory). Outside ComfyUI: each moves to its compute device
    and back to where it rested."""
    modules = unique_modules(modules)
    if not in_comfyui():
        with contextlib.ExitStack() as stack:
            for module in modules:
                stack.enter_context(on_device(module, compute_device_of(module)))
            yield
        return
    import comfy.model_management as mm

    patchers = [patcher_of(module) for module in modules]
    # Outside inference mode: ComfyUI runs nodes under torch.inference_mode(), and weights copied to the
    # device there would become inference tensors, which no later backward pass can use (the trainer, the
    # critic's gradient path); the loaders create weights outside it for the same reason.
    with torch.inference_mode(False):
        mm.load_models_gpu(patchers, memory_required=int(memory_required), force_full_load=True)
    for module, patcher in zip(modules, patchers, strict=True):
        _check_loaded(module, patcher)
    yield


def _check_loaded(module: torch.nn.Module, patcher) -> None:
    """--novram: ComfyUI keeps every model that is not made of its own ops off the device (a load budget of
    0.1 byte even with force_full_load); our layers would then compute with weights on the wrong device.
    A dynamic-VRAM patcher streams by design and is not checked."""
    dynamic = getattr(patcher, "is_dynamic", None)
    if dynamic is not None and dynamic():
        return
    loaded, size = patcher.loaded_size(), patcher.model_size()
    if loaded < size:
        slot = module.__dict__.get(PATCHER_ATTRIBUTE)
        name = KIND_NAMES.get(slot.kind if slot else "", "model")
        raise RuntimeError(
            f"ReViSE: ComfyUI did not load the {name} ({type(module).__name__}, {size / 2**20:.1f} MiB) onto "
            f"{patcher.load_device}, only {loaded / 2**20:.1f} MiB of it. ReViSE's models compute with all their "
            "weights on the device (their layers are not ComfyUI ops that could run from host memory), and "
            "ComfyUI started with --novram keeps them off it: start ComfyUI without --novram (--lowvram works), "
            "or set this model's loader to device 'cpu'.")


@contextlib.contextmanager
def placed_by_caller(moved, *, device: torch.device, unloaded=(), memory_required: int = 0) -> Iterator[None]:
    """For code that moves models itself (the trainer, trainer/loop.py): the `moved` models go to `device`
    (the caller's) for the block and back to where they rested after it, as outside ComfyUI.

    In ComfyUI, first: ComfyUI unloads exactly `moved` and `unloaded` (models the block copies, not
    uses); they leave its registry, keep their patchers and come back with the next load_models_gpu.
    Then it frees `memory_required` on `device` (the run's models and working memory), evicting other
    models as it would for its own. The caller's moves never touch a model ComfyUI believes loaded."""
    moved, device = unique_modules(moved), torch.device(device)
    if in_comfyui():
        import comfy.model_management as mm

        patchers = [p for p in (existing_patcher(m) for m in unique_modules([*moved, *unloaded])) if p is not None]
        if patchers:
            unload(mm, patchers)
        if device != CPU:
            mm.free_memory(int(memory_required), device)
    with contextlib.ExitStack() as stack:
        for module in moved:
            stack.enter_context(on_device(module, device))
        yield


@contextlib.contextmanager
def on_device(module: torch.nn.Module, device: torch.device) -> Iterator[torch.nn.Module]:
    """Move a model to the compute device only while it is used, then back to where it rested (outside
    ComfyUI, and for models handed to code that moves them itself)."""
    home = next(module.parameters()).device
    module.to(device)
    try:
        yield module
    finally:
        if home != device:
            module.to(home)
            if in_comfyui():
                import comfy.model_management as mm

                mm.soft_empty_cache()

def check_interrupted() -> None:
    """Raise ComfyUI's interruption exception if the user pressed Cancel."""
    if in_comfyui():
        import comfy.model_management as mm

        mm.throw_exception_if_processing_interrupted()


def progress(total: int, *, preview_latents: bool = False) -> Callable:
    """A per-step callback: ComfyUI's ProgressBar (+ latent preview, + interruption), or tqdm outside it.

    Each call counts one step; a sampler's StepInfo (with `denoised`) feeds the preview, None is fine."""
    if in_comfyui():
        import comfy.utils

        bar = comfy.utils.ProgressBar(total)
        previewer = _wan_previewer() if preview_latents else None
        done = [0]  # counted here: best-of-N runs several samplings through one bar

        def update(info=None) -> None:
            done[0] += 1
            image = None
            if previewer is not None and getattr(info, "denoised", None) is not None:
                image = previewer.decode_latent_to_preview_image("JPEG", info.denoised)
            bar.update_absolute(min(done[0], total), total, image)
            check_interrupted()

        return update
    from tqdm import tqdm

    bar = tqdm(total=total, unit="step", leave=False)

    def update(info=None) -> None:
        bar.update(1)
        if bar.n >= total:
            bar.close()

    return update


def is_interruption(error: BaseException) -> bool:
    """Whether `error` is ComfyUI's answer to Cancel (InterruptProcessingException)."""
    if in_comfyui():
        import comfy.model_management as mm

        return isinstance(error, mm.InterruptProcessingException)
    return False


def interrupt_requested() -> bool:
    """Whether the user pressed Cancel (without consuming the flag)."""
    if in_comfyui():
        import comfy.model_management as mm

        return mm.processing_interrupted()
    return False


def comfy_attention() -> str | None:
    """The attention backend ComfyUI's own flags ask for (--use-sage-attention, --use-flash-attention, xformers),
    in revise_core.attention's names; None outside ComfyUI or when it runs torch's own attention."""
    if not in_comfyui():
        return None
    import comfy.model_management as mm

    for flag, name in (("sage_attention_enabled", "sage"), ("flash_attention_enabled", "flash"),
                       ("xformers_enabled", "xformers")):
        enabled = getattr(mm, flag, None)  # older ComfyUI versions lack some of these
        if enabled is not None and enabled():
            return name
    return None


def _wan_previewer():
    """ComfyUI's own Wan2.1 latent previewer (latent2rgb or TAEHV, as the user configured)."""
    import comfy.latent_formats
    import comfy.model_management as mm
    import latent_preview

    return latent_preview.get_previewer(mm.get_torch_device(), comfy.latent_formats.Wan21())


def diffusion_models_directory() -> Path:
    """`models/diffusion_models` itself. ComfyUI's folder list for "diffusion_models" starts with the legacy
    `models/unet`, so its first entry is not the folder users (and the Save node's tooltip) mean. Outside
    ComfyUI: the first configured diffusion_models folder."""
    if in_comfyui():
        import folder_paths

        return Path(folder_paths.models_dir) / "diffusion_models"
    folders = folder_paths_for("dit")
    if not folders:
        raise ValueError("no diffusion_models folder configured (REVISE_MODEL_DIRS=diffusion_models=PATH)")
    return folders[0]


def output_directory() -> Path:
    if in_comfyui():
        import folder_paths

        return Path(folder_paths.get_output_directory())
    return Path(os.environ.get("REVISE_OUTPUT_DIR", "output"))

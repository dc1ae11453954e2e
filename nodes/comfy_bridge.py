"""The only module that touches ComfyUI's runtime: model folders, progress, interruption, previews, memory.

Every function degrades to plain behaviour outside ComfyUI (tests, scripts): folder lists come from the
`REVISE_MODEL_DIRS` environment variable (`name=path;name=path`), progress goes to tqdm, interruption
never fires, memory helpers do nothing.
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

logger = logging.getLogger(__name__)

# Our model kinds -> ComfyUI folder names. "vlm" is registered by us (HF-format model folders).
FOLDERS = {"dit": "diffusion_models", "vae": "vae", "t5": "text_encoders", "vlm": "vlm", "connector": "diffusion_models",
           "model_set": "revise"}
VLM_FOLDER = "vlm"
MODEL_SET_FOLDER = "revise"  # models/revise/<set>/: a ReViSE release folder (revise_ckpt/) or a models.json set
RELEASE_MARKERS = ("wan/wanxiang1_3b", "transformer/model.pt", "ar_model/checkpoint")  # revise_core.model_sets
OMNIVIDEO2_MARKERS = ("transformer/pytorch_model.pt", "special_tokens.pkl")  # revise_core.model_sets


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
CONNECTOR_FORMAT = "revise.connector"  # revise_core.connector.omnivideo2.FORMAT_NAME (not imported: start-up cost)


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
    if metadata.get("revise.format"):
        is_connector = metadata["revise.format"] == CONNECTOR_FORMAT
        return is_connector if kind == "connector" else not is_connector
    names = [name for name in header if name != "__metadata__"]
    has_connector = any(name.split(".", 1)[0] in CONNECTOR_MODULES for name in names)
    has_dit = not has_connector or any(name.startswith("wan_model.") for name in names)
    return has_connector if kind == "connector" else has_dit


# Top-level module names of the connector families' state dicts (connector/omnivideo2.py, connector/revise.py).
CONNECTOR_MODULES = ("vlm_proj", "vlm_norm", "visual_context_adapter", "vision_head", "dm_adapter")


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
    return (path / "models.json").is_file() or any(all((path / marker).exists() for marker in markers)
                                                    for markers in (RELEASE_MARKERS, OMNIVIDEO2_MARKERS))


def _is_model_folder(path: Path) -> bool:
    """A Hugging Face model or tokenizer folder."""
    return path.is_dir() and any((path / name).is_file() for name in ("config.json", "tokenizer.json", "spiece.model",
                                                                       "tokenizer_config.json"))


def compute_device_of(module: torch.nn.Module) -> torch.device:
    """The device a loader chose for this model (models rest on the offload device between uses)."""
    return getattr(module, "revise_compute_device", next(module.parameters()).device)


def resolve(kind: str, name: str) -> Path:
    """Full path of a dropdown entry; the error lists every folder searched."""
    from revise_core.checkpoints import find_model_file

    return find_model_file(name, folder_paths_for(kind))


def compute_device(choice: str = "auto") -> torch.device:
    if choice != "auto":
        return torch.device(choice)
    if in_comfyui():
        import comfy.model_management as mm

        return mm.get_torch_device()
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def offload_device() -> torch.device:
    if in_comfyui():
        import comfy.model_management as mm

        return mm.unet_offload_device()
    return torch.device("cpu")


def free_memory_for_loading() -> None:
    """Ask ComfyUI to unload its own models before we load large ones."""
    if in_comfyui():
        import comfy.model_management as mm

        mm.unload_all_models()
        mm.soft_empty_cache()


@contextlib.contextmanager
def on_device(module: torch.nn.Module, device: torch.device) -> Iterator[torch.nn.Module]:
    """Move a model to the compute device only while it is used, then back to the offload device."""
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

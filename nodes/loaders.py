"""Loader nodes: one per component, each a few lines over revise_core's loaders."""

from __future__ import annotations

from revise_core.connector import load_connector
from revise_core.dit import load_dit
from revise_core.lora import STRENGTH_RANGE, LoraChoice
from revise_core.text import load_text_encoder
from revise_core.vae import load_vae
from revise_core.variants import KNOWN_VARIANTS, variants_for
from revise_core.vlm import load_vlm

from . import comfy_bridge as bridge
from .common import (
    CATEGORY,
    CONNECTOR,
    DIT,
    LORAS,
    T5,
    VAE,
    VLM,
    device_input,
    dtype_of,
    expect_loras,
    precision_input,
    storage_input,
    store,
    weights_outside_inference_mode,
)

AUTO = "auto"


def _config_input(component: str) -> tuple:
    names = [AUTO] + [v.name for v in variants_for(component, KNOWN_VARIANTS)]
    return (names, {"default": AUTO, "tooltip": "Model variant. 'auto': from the file's embedded config or an exact "
                                                "match of every tensor against the known variants."})


def _place(module, kind: str, device_choice: str):
    """The model computes on its kind's device (or the widget's); in ComfyUI it gets its ModelPatcher and
    ComfyUI's memory manager moves it from now on, outside ComfyUI it rests in host memory until a node
    uses it (comfy_bridge.place). A bundle (VLM, umT5) is placed by its `.model`."""
    bridge.place(getattr(module, "model", module), kind, bridge.compute_device(device_choice, kind))
    return module


# EditModels field -> kind of model (comfy_bridge.KIND_DEVICES), in the Model Set loader's output order
SET_KINDS = {"dit": "dit", "vae": "vae", "text": "t5", "vlm": "vlm", "connector": "connector"}


class _Loader:
    CATEGORY = f"{CATEGORY}/loaders"
    FUNCTION = "load"


class ReViSEDiTLoader(_Loader):
    DESCRIPTION = "Loads a Wan2.1 DiT: ComfyUI/Wan single files (fp16/bf16/fp8), diffusers keys, or an Omni-Video checkpoint."
    RETURN_TYPES = (DIT,)
    RETURN_NAMES = ("dit",)
    OUTPUT_TOOLTIPS = ("The Wan2.1 DiT generator.",)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "dit_name": (bridge.list_models("dit"), {"tooltip": "File in models/diffusion_models (e.g. "
                                                                "wan2.1_t2v_1.3B_fp16.safetensors)."}),
            "config": _config_input("dit"),
            "precision": precision_input(),
            "device": device_input(),
        }, "optional": {"storage": storage_input("dit")}}

    def load(self, dit_name, config, precision, device, storage="compute"):
        with weights_outside_inference_mode():
            dit = load_dit(bridge.resolve("dit", dit_name), config=None if config == AUTO else config,
                           dtype=dtype_of(precision, device))
            store(dit, "dit", storage)
        return (_place(dit, "dit", device),)


class ReViSELoRA(_Loader):
    DESCRIPTION = ("Picks a Wan2.1 LoRA (ComfyUI, kohya/musubi or diffusers keys; step-distilled LoRAs' diff/diff_b "
                   "too) for the ReViSE Sampler, which adds it to the DiT's weights while it samples and restores "
                   "them after. Chain several to stack them.")
    RETURN_TYPES = (LORAS,)
    RETURN_NAMES = ("loras",)
    OUTPUT_TOOLTIPS = ("The LoRAs chosen so far, with their strengths: wire into the ReViSE Sampler's loras.",)

    @classmethod
    def INPUT_TYPES(cls):
        low, high = STRENGTH_RANGE
        return {"required": {
            "lora_name": (bridge.list_models("lora"), {"tooltip": "File in models/loras (.safetensors)."}),
            "strength": ("FLOAT", {"default": 1.0, "min": low, "max": high, "step": 0.05,
                                   "tooltip": "1: as trained; 0: off; negative: subtracted."}),
        }, "optional": {"loras": (LORAS, {"tooltip": "LoRAs chosen before this one (chain to stack)."})}}

    def load(self, lora_name, strength, loras=None):
        return ((*expect_loras(loras), LoraChoice(bridge.resolve("lora", lora_name), strength)),)


class ReViSEVAELoader(_Loader):
    DESCRIPTION = "Loads the Wan2.1 VAE (wan_2.1_vae.safetensors, Wan2.1_VAE.pth, or a diffusers file)."
    RETURN_TYPES = (VAE,)
    RETURN_NAMES = ("vae",)
    OUTPUT_TOOLTIPS = ("The Wan2.1 video VAE.",)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "vae_name": (bridge.list_models("vae"), {"tooltip": "File in models/vae (wan_2.1_vae.safetensors)."}),
            "precision": precision_input("VAE dtype; fp32 is the most exact, bf16 halves memory."),
            "device": device_input(),
        }}

    def load(self, vae_name, precision, device):
        with weights_outside_inference_mode():
            vae = load_vae(bridge.resolve("vae", vae_name), dtype=dtype_of(precision, device, "vae"))
        return (_place(vae, "vae", device),)


class ReViSET5Loader(_Loader):
    DESCRIPTION = "Loads the umT5-XXL text encoder from one weights file plus a tokenizer folder, or an HF folder."
    RETURN_TYPES = (T5,)
    RETURN_NAMES = ("t5",)
    OUTPUT_TOOLTIPS = ("umT5 encoder with its tokenizer.",)

    @classmethod
    def INPUT_TYPES(cls):
        files = bridge.list_models("t5") + bridge.list_models("t5", folders=True)
        return {"required": {
            "t5_name": (sorted(files), {"tooltip": "umT5 weights in models/text_encoders (umt5_xxl_fp16.safetensors, "
                                                   "..._fp8_e4m3fn_scaled, models_t5_umt5-xxl-enc-bf16.pth) or an HF folder."}),
            "tokenizer": ([AUTO] + bridge.list_models("t5", folders=True),
                          {"default": AUTO, "tooltip": "umT5 tokenizer folder in models/text_encoders ('auto': the "
                                                       "model folder itself)."}),
            "precision": precision_input(),
            "device": device_input(),
        }, "optional": {"storage": storage_input("t5")}}

    def load(self, t5_name, tokenizer, precision, device, storage="compute"):
        with weights_outside_inference_mode():
            text = load_text_encoder(bridge.resolve("t5", t5_name),
                                     tokenizer=None if tokenizer == AUTO else bridge.resolve("t5", tokenizer),
                                     dtype=dtype_of(precision, device, "t5"))
            store(text, "t5", storage)
        return (_place(text, "t5", device),)


class ReViSEVLMLoader(_Loader):
    DESCRIPTION = ("Loads the VLM used for u, reasoning and the critic: a Qwen2-VL / Qwen2.5-VL Hugging Face folder, or "
                   "the ReViSE release's VILA folder (ar_model/checkpoint), in models/vlm.")
    RETURN_TYPES = (VLM,)
    RETURN_NAMES = ("vlm",)
    OUTPUT_TOOLTIPS = ("The vision-language model with its tokenizer and preprocessing settings.",)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "vlm_name": (bridge.list_models("vlm", folders=True),
                         {"tooltip": "Folder in models/vlm: a Hugging Face VLM (config.json, weights, tokenizer) or "
                                     "the ReViSE release's VILA checkpoint folder (config.json, llm/, vision_tower/, "
                                     "mm_projector/)."}),
            "precision": precision_input(),
            "device": device_input(),
        }, "optional": {"storage": storage_input("vlm")}}

    def load(self, vlm_name, precision, device, storage="compute"):
        with weights_outside_inference_mode():
            vlm = load_vlm(bridge.resolve("vlm", vlm_name), dtype=dtype_of(precision, device, "vlm"))
            store(vlm, "vlm", storage)
        return (_place(vlm, "vlm", device),)


class ReViSEConnectorLoader(_Loader):
    DESCRIPTION = ("Loads the connector f_C (VLM projection + visual context adapter): Omni-Video 2 "
                   "pytorch_model.pt (with special_tokens.pkl) or a ReViSE connector .safetensors.")
    RETURN_TYPES = (CONNECTOR,)
    RETURN_NAMES = ("connector",)
    OUTPUT_TOOLTIPS = ("The connector that fuses u, umT5 tokens and source latents.",)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "connector_name": (bridge.list_models("connector"), {"tooltip": "File in models/diffusion_models."}),
            "special_tokens": (["none"] + bridge.list_token_files(),
                               {"default": "none", "tooltip": "Omni-Video 2 special_tokens.pkl (boundary tokens); "
                                                              "'none' for files that carry their own."}),
            "config": _config_input("connector"),
            "precision": precision_input(),
            "device": device_input(),
        }}

    def load(self, connector_name, special_tokens, config, precision, device):
        tokens = None if special_tokens == "none" else bridge.resolve("connector", special_tokens)
        with weights_outside_inference_mode():
            connector = load_connector(bridge.resolve("connector", connector_name), special_tokens=tokens,
                                       config=None if config == AUTO else config,
                                       dtype=dtype_of(precision, device, "connector"))
        return (_place(connector, "connector", device),)


class ReViSEModelSetLoader(_Loader):
    DESCRIPTION = ("Loads a whole model set from models/revise: the ReViSE release folder (revise_ckpt/) as downloaded "
                   "(Wan DiT + umT5 + VAE + VILA + VisionHead / DM_Adapter connector), or a folder with a models.json. "
                   "Feeds the sampler, critic and trainer nodes like the single loaders.")
    RETURN_TYPES = (DIT, VAE, T5, VLM, CONNECTOR)
    RETURN_NAMES = ("dit", "vae", "t5", "vlm", "connector")
    OUTPUT_TOOLTIPS = ("The Wan2.1 DiT.", "The Wan2.1 VAE.", "umT5 with its tokenizer.", "The VLM (VILA in the release).",
                       "The connector (VisionHead + DM_Adapter + visual adapter in the release).")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "model_set": (bridge.list_model_sets(),
                          {"tooltip": "Folder in models/revise: the downloaded revise_ckpt/ of Liuxinyv/ReViSE (layout "
                                      "detected, nothing to convert) or a folder with a models.json (docs/models.md)."}),
            "precision": precision_input(),
            "device": device_input(),
        }, "optional": {
            "load_dit": ("BOOLEAN", {"default": True, "label_on": "load", "label_off": "skip (native UNETLoader)",
                                     "tooltip": "Off: the set's DiT is not loaded (its output is empty), for the native "
                                                "path where ComfyUI's UNETLoader loads the DiT converted by "
                                                "python -m revise_core.convert; the DiT then takes no memory here (5.7 GB in fp32 for 1.3B)."}),
            "encoders": storage_input("vlm"),
            "dit_storage": storage_input("dit"),
        }}

    def load(self, model_set, precision, device, load_dit=True, encoders="compute", dit_storage="compute"):
        from revise_core.model_sets import EditModels

        # "auto" precision per model, from the device each computes on (in ComfyUI the encoders' may differ)
        dtypes = {kind: dtype_of(precision, device, kind) for kind in SET_KINDS.values()}
        with weights_outside_inference_mode():
            models = EditModels.load(bridge.resolve("model_set", model_set), dtype=dtypes["dit"],
                                     component_dtypes=dtypes, with_dit=load_dit)
            store(models.vlm, "vlm", encoders)
            store(models.text, "t5", encoders)
            if models.dit is not None:
                store(models.dit, "dit", dit_storage)
        return tuple(None if getattr(models, name) is None else _place(getattr(models, name), kind, device)
                     for name, kind in SET_KINDS.items())


NODES = {cls.__name__: cls for cls in (ReViSEDiTLoader, ReViSEVAELoader, ReViSET5Loader, ReViSEVLMLoader,
                                        ReViSEConnectorLoader, ReViSEModelSetLoader, ReViSELoRA)}
DISPLAY_NAMES = {
    "ReViSEDiTLoader": "ReViSE Load DiT (Wan2.1)", "ReViSEVAELoader": "ReViSE Load VAE",
    "ReViSET5Loader": "ReViSE Load umT5", "ReViSEVLMLoader": "ReViSE Load VLM",
    "ReViSEConnectorLoader": "ReViSE Load Connector", "ReViSEModelSetLoader": "ReViSE Load Model Set",
    "ReViSELoRA": "ReViSE LoRA (Wan2.1)",
}

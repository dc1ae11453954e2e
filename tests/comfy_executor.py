"""A test-only stand-in for ComfyUI's executor: UI workflow -> API prompt -> node-by-node execution.

It follows ComfyUI's input semantics: widget values map onto the widget inputs in declaration order
(required, then optional; seeds with control_after_generate carry one extra value), links map onto
[source id, output slot], combo values must be among the options, link types must match the socket,
only output nodes and their ancestors run, and every node runs under torch.inference_mode(). Built-in
nodes the workflows use are replaced by small stand-ins with the same inputs and outputs.
"""

from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path

import torch

from revise_core.video import read_video, write_video

VIRTUAL = {"MarkdownNote", "Note"}
WIDGET_TYPES = ("INT", "FLOAT", "STRING", "BOOLEAN")


class _Video:
    def __init__(self, images: torch.Tensor, fps: float) -> None:
        self.images, self.fps = images, fps


class LoadVideo:
    input_dir: Path = Path(".")
    RETURN_TYPES = ("VIDEO",)
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"file": ([p.name for p in cls.input_dir.glob("*.mp4")], {})}}

    def load(self, file):
        clip = read_video(self.input_dir / file)
        return (_Video(clip.frames, float(clip.fps)),)


class GetVideoComponents:
    RETURN_TYPES = ("IMAGE", "AUDIO", "FLOAT")
    FUNCTION = "get"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"video": ("VIDEO", {})}}

    def get(self, video):
        return (video.images, None, video.fps)


class CreateVideo:
    RETURN_TYPES = ("VIDEO",)
    FUNCTION = "create"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"images": ("IMAGE", {}), "fps": ("FLOAT", {})}, "optional": {"audio": ("AUDIO", {})}}

    def create(self, images, fps, audio=None):
        return (_Video(images, fps),)


class SaveVideo:
    output_dir: Path = Path(".")
    RETURN_TYPES = ()
    FUNCTION = "save"
    OUTPUT_NODE = True

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"video": ("VIDEO", {}), "filename_prefix": ("STRING", {}),
                             "format": (["auto", "mp4"], {}), "codec": (["auto", "h264"], {})}}

    def save(self, video, filename_prefix, format, codec):  # noqa: A002 - ComfyUI's input name
        path = self.output_dir / f"{filename_prefix}_00001_.mp4"
        write_video(path, video.images, Fraction(video.fps).limit_denominator(1001))
        return {"ui": {"files": [str(path)]}}


class PreviewAny:
    RETURN_TYPES = ()
    FUNCTION = "show"
    OUTPUT_NODE = True

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"source": ("*", {})}}

    def show(self, source):
        return {"ui": {"text": [source if isinstance(source, str) else json.dumps(source)]}}


class PreviewImage:
    RETURN_TYPES = ()
    FUNCTION = "show"
    OUTPUT_NODE = True

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"images": ("IMAGE", {})}}

    def show(self, images):
        assert images.ndim == 4 and images.shape[-1] == 3
        return {"ui": {"images": [list(images.shape)]}}


class _ComfyOnly:
    """ComfyUI's own Wan nodes (the native workflow): their inputs, for conversion and validation; running
    them needs ComfyUI itself (tests/test_real_comfyui.py)."""

    FUNCTION = "run"

    def run(self, **kwargs):
        raise NotImplementedError(f"{type(self).__name__} is ComfyUI's own node; tests/test_real_comfyui.py runs it")


class UNETLoader(_ComfyOnly):
    RETURN_TYPES = ("MODEL",)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"unet_name": (["revise_dit.safetensors"], {}),
                             "weight_dtype": (["default", "fp8_e4m3fn", "fp8_e4m3fn_fast", "fp8_e5m2"], {})}}


class VAELoader(_ComfyOnly):
    RETURN_TYPES = ("VAE",)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"vae_name": (["wan_2.1_vae.safetensors"], {})}}


class ModelSamplingSD3(_ComfyOnly):
    RETURN_TYPES = ("MODEL",)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"model": ("MODEL", {}), "shift": ("FLOAT", {"default": 3.0, "min": 0.0, "max": 100.0})}}


class KSampler(_ComfyOnly):
    RETURN_TYPES = ("LATENT",)
    # a part of ComfyUI 0.8.0's lists, with every value the shipped workflow and the docs use
    SAMPLERS = ["euler", "euler_ancestral", "heun", "dpmpp_2m", "uni_pc", "uni_pc_bh2", "res_multistep"]
    SCHEDULERS = ["simple", "sgm_uniform", "karras", "exponential", "ddim_uniform", "beta", "normal",
                  "linear_quadratic", "kl_optimal"]

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "model": ("MODEL", {}), "seed": ("INT", {"default": 0, "min": 0, "max": 0xffffffffffffffff,
                                                    "control_after_generate": True}),
            "steps": ("INT", {"default": 20, "min": 1, "max": 10000}),
            "cfg": ("FLOAT", {"default": 8.0, "min": 0.0, "max": 100.0}),
            "sampler_name": (cls.SAMPLERS, {}), "scheduler": (cls.SCHEDULERS, {}),
            "positive": ("CONDITIONING", {}), "negative": ("CONDITIONING", {}), "latent_image": ("LATENT", {}),
            "denoise": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 1.0})}}


class VAEDecode(_ComfyOnly):
    RETURN_TYPES = ("IMAGE",)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"samples": ("LATENT", {}), "vae": ("VAE", {})}}


BUILTIN_STAND_INS = {cls.__name__: cls for cls in (LoadVideo, GetVideoComponents, CreateVideo, SaveVideo, PreviewAny,
                                                    PreviewImage, UNETLoader, VAELoader, ModelSamplingSD3, KSampler,
                                                    VAEDecode)}


def _widgets(cls) -> list[tuple[str, object, dict]]:
    """(name, type, options) of widget inputs in declaration order, plus ComfyUI's hidden extra values."""
    out = []
    spec = cls.INPUT_TYPES()
    for section in ("required", "optional"):
        for name, (kind, options) in spec.get(section, {}).items():
            if isinstance(kind, list) or kind in WIDGET_TYPES:
                out.append((name, kind, options))
                # The frontend adds this widget to INT inputs named seed / noise_seed even without the option.
                if options.get("control_after_generate") or (kind == "INT" and name in ("seed", "noise_seed")):
                    out.append((None, "control_after_generate", {}))
    return out


def ui_to_api(workflow: dict, classes: dict[str, type]) -> dict:
    links = {link[0]: link for link in workflow["links"]}
    api = {}
    for node in workflow["nodes"]:
        if node["type"] in VIRTUAL:
            continue
        if node["type"] not in classes:
            raise KeyError(f"node {node['id']}: unknown node type '{node['type']}'")
        cls = classes[node["type"]]
        values = list(node.get("widgets_values") or [])
        widgets = _widgets(cls)
        if node["type"] == "LoadVideo":
            values = values[:1]  # the upload button's value is not an input
        if len(values) != len(widgets):
            raise ValueError(f"node {node['id']} ({node['type']}): {len(values)} widget values for "
                             f"{len(widgets)} widgets {[w[0] for w in widgets]}")
        inputs = {}
        for (name, _, _), value in zip(widgets, values, strict=True):  # lengths checked above
            if name is not None:
                inputs[name] = value
        for entry in node.get("inputs", []):
            if entry.get("link") is not None:
                link = links[entry["link"]]
                if link[3] != node["id"]:
                    raise ValueError(f"link {link[0]} does not end at node {node['id']}")
                inputs[entry["name"]] = [str(link[1]), link[2]]
        api[str(node["id"])] = {"class_type": node["type"], "inputs": inputs}
    return api


def validate(api: dict, classes: dict[str, type]) -> None:
    for node_id, node in api.items():
        cls = classes[node["class_type"]]
        spec = cls.INPUT_TYPES()
        declared = {**spec.get("required", {}), **spec.get("optional", {})}
        for name in spec.get("required", {}):
            if name not in node["inputs"]:
                raise ValueError(f"node {node_id} ({node['class_type']}): required input '{name}' missing")
        for name, value in node["inputs"].items():
            if name not in declared:
                raise ValueError(f"node {node_id}: unknown input '{name}'")
            kind, options = declared[name]
            if isinstance(value, list):
                source = api.get(value[0])
                if source is None:
                    raise ValueError(f"node {node_id}: input '{name}' links to missing node {value[0]}")
                produced = classes[source["class_type"]].RETURN_TYPES[value[1]]
                if kind not in ("*", produced) and not (kind in WIDGET_TYPES and produced == kind):
                    raise ValueError(f"node {node_id}: input '{name}' expects {kind}, linked to {produced}")
            elif isinstance(kind, list) and value not in kind:
                raise ValueError(f"node {node_id} ({node['class_type']}): '{value}' is not an option of '{name}': {kind}")
            elif kind == "INT" and not isinstance(value, int) or kind == "FLOAT" and not isinstance(value, (int, float)):
                raise ValueError(f"node {node_id}: '{name}' must be {kind}, got {value!r}")
            elif kind in ("INT", "FLOAT") and not options.get("min", -float("inf")) <= value <= options.get("max", float("inf")):
                raise ValueError(f"node {node_id}: '{name}'={value} outside [{options.get('min')}, {options.get('max')}]")


def execute(api: dict, classes: dict[str, type], outputs: list[str] | None = None) -> dict[str, object]:
    """Run output nodes (or the nodes `outputs` names) and their ancestors, each once, under inference mode;
    returns outputs by node id."""
    validate(api, classes)
    results: dict[str, object] = {}

    def run(node_id: str):
        if node_id in results:
            return results[node_id]
        node = api[node_id]
        cls = classes[node["class_type"]]
        kwargs = {}
        for name, value in node["inputs"].items():
            if isinstance(value, list):
                kwargs[name] = _output(run(value[0]), value[1])
            else:
                kwargs[name] = value
        with torch.inference_mode():
            results[node_id] = getattr(cls(), cls.FUNCTION)(**kwargs)
        return results[node_id]

    if outputs is None:
        outputs = [node_id for node_id, node in api.items() if getattr(classes[node["class_type"]], "OUTPUT_NODE", False)]
    for node_id in outputs:
        run(node_id)
    return results


def _output(result, slot: int):
    if isinstance(result, dict):
        result = result.get("result", ())
    return result[slot]

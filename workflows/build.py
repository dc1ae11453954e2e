"""Writes the shipped example workflows (UI format, as the ComfyUI frontend saves them).

    python workflows/build.py        # regenerates workflows/*.json

The graphs are described here once; sockets and widget order come from the node classes themselves,
so a workflow cannot drift from the nodes it uses (a test regenerates them and compares).
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent
WIDGET_TYPES = ("INT", "FLOAT", "STRING", "BOOLEAN")
# The frontend adds a "control after generate" widget to these INT inputs even without the option.
SEED_NAMES = ("seed", "noise_seed")

# ComfyUI built-ins used by the workflows: (socket inputs, widget names, outputs, output node?)
BUILTINS: dict[str, dict] = {
    "LoadVideo": {"inputs": [], "widgets": ["file", "upload"], "outputs": [("VIDEO", "VIDEO")]},
    "GetVideoComponents": {"inputs": [("video", "VIDEO")], "widgets": [],
                           "outputs": [("images", "IMAGE"), ("audio", "AUDIO"), ("fps", "FLOAT")]},
    "CreateVideo": {"inputs": [("images", "IMAGE"), ("audio", "AUDIO")], "widgets": ["fps"],
                    "outputs": [("VIDEO", "VIDEO")], "optional": ["audio"]},
    "SaveVideo": {"inputs": [("video", "VIDEO")], "widgets": ["filename_prefix", "format", "codec"], "outputs": []},
    "PreviewAny": {"inputs": [("source", "*")], "widgets": [], "outputs": [("STRING", "STRING")]},
    "PreviewImage": {"inputs": [("images", "IMAGE")], "widgets": [], "outputs": []},
    "MarkdownNote": {"inputs": [], "widgets": ["text"], "outputs": []},
}


def node_spec(node_type: str) -> dict:
    """Sockets, widgets (in the frontend's order) and outputs of a node type."""
    if node_type in BUILTINS:
        return BUILTINS[node_type]
    sys.path.insert(0, str(ROOT.parent))
    from nodes import NODE_CLASS_MAPPINGS

    cls = NODE_CLASS_MAPPINGS[node_type]
    spec = cls.INPUT_TYPES()
    inputs, widgets, optional = [], [], []
    for section in ("required", "optional"):
        for name, (kind, options) in spec.get(section, {}).items():
            if isinstance(kind, list) or kind in WIDGET_TYPES:
                widgets.append(name)
                if options.get("control_after_generate") or (kind == "INT" and name in SEED_NAMES):
                    widgets.append(f"{name}:control_after_generate")
            else:
                inputs.append((name, kind))
                if section == "optional":
                    optional.append(name)
    names = getattr(cls, "RETURN_NAMES", None) or cls.RETURN_TYPES
    return {"inputs": inputs, "widgets": widgets, "outputs": list(zip(names, cls.RETURN_TYPES)), "optional": optional}


@dataclass
class Node:
    id: int
    type: str
    pos: tuple[int, int]
    widgets: dict
    size: tuple[int, int] = (320, 160)
    title: str | None = None
    links_in: dict = field(default_factory=dict)  # input name -> link id
    links_out: dict = field(default_factory=dict)  # output slot -> [link ids]


class Graph:
    def __init__(self) -> None:
        self.nodes: list[Node] = []
        self.links: list[list] = []

    def add(self, node_type: str, pos: tuple[int, int], size: tuple[int, int] = (320, 160), title: str | None = None,
            **widgets) -> Node:
        node = Node(len(self.nodes) + 1, node_type, pos, widgets, size, title)
        self.nodes.append(node)
        return node

    def connect(self, source: Node, output: str, target: Node, name: str) -> None:
        outputs = [n for n, _ in node_spec(source.type)["outputs"]]
        slot = outputs.index(output)
        kind = node_spec(source.type)["outputs"][slot][1]
        link_id = len(self.links) + 1
        self.links.append([link_id, source.id, slot, target.id, name, kind])  # input name -> slot in to_ui
        target.links_in[name] = link_id
        source.links_out.setdefault(slot, []).append(link_id)

    def to_ui(self) -> dict:
        nodes, slots = [], {}
        for order, node in enumerate(self.nodes):
            spec = node_spec(node.type)
            inputs = []
            for name, kind in spec["inputs"]:
                entry = {"name": name, "type": kind, "link": node.links_in.get(name)}
                if name in spec.get("optional", []):
                    entry["shape"] = 7  # the frontend's marker for optional sockets
                inputs.append(entry)
            for name in spec["widgets"]:  # widgets fed by a link (e.g. fps) are listed as inputs too
                if name in node.links_in:
                    inputs.append({"name": name, "type": "FLOAT", "widget": {"name": name}, "link": node.links_in[name]})
            for index, entry in enumerate(inputs):
                slots[(node.id, entry["name"])] = index
            values = []
            for name in spec["widgets"]:
                if name.endswith(":control_after_generate"):
                    values.append("fixed")
                elif name == "upload":
                    values.append("image")
                else:
                    if name not in node.widgets:
                        raise KeyError(f"{node.type}: widget '{name}' needs a value")
                    values.append(node.widgets[name])
            extra = set(node.widgets) - {w for w in spec["widgets"]}
            if extra:
                raise KeyError(f"{node.type}: unknown widgets {sorted(extra)}")
            outputs = [{"name": name, "type": kind, "slot_index": slot, "links": node.links_out.get(slot, [])}
                       for slot, (name, kind) in enumerate(spec["outputs"])]
            entry = {"id": node.id, "type": node.type, "pos": list(node.pos), "size": list(node.size), "flags": {},
                     "order": order, "mode": 0, "inputs": inputs, "outputs": outputs,
                     "properties": {"Node name for S&R": node.type}, "widgets_values": values}
            if node.title:
                entry["title"] = node.title
            nodes.append(entry)
        links = [[i, src, slot, dst, slots[(dst, name)], kind] for i, src, slot, dst, name, kind in self.links]
        return {"last_node_id": len(self.nodes), "last_link_id": len(self.links), "nodes": nodes, "links": links,
                "groups": [], "config": {}, "extra": {"ds": {"scale": 0.8, "offset": [0, 0]}}, "version": 0.4}


# --- the shipped graphs ----------------------------------------------------------------------------

INSTRUCTION = "What will the ice cube look like after an hour in the sun?"
MODELS_NOTE = """## ReViSE: what to download
Put the files in ComfyUI's model folders (details: docs/comfyui.md, docs/models.md):
* **models/diffusion_models**: `wan2.1_t2v_1.3B_fp16.safetensors` (Comfy-Org/Wan_2.1_ComfyUI_repackaged), and the
  Omni-Video 2 release's `transformer/pytorch_model.pt` + `special_tokens.pkl` (connector) in `omnivideo2/`
* **models/vae**: `wan_2.1_vae.safetensors`
* **models/text_encoders**: `umt5_xxl_fp16.safetensors` and the umT5 tokenizer folder `umt5-xxl-tokenizer/`
* **models/vlm**: a Qwen2.5-VL instruct folder, e.g. `Qwen2.5-VL-7B-Instruct/`

The connector must match the VLM's width (the loaders say so when it does not)."""


def readme(graph: Graph, text: str, height: int = 420) -> None:
    graph.add("MarkdownNote", (-420, 0), (400, height), title="Read me", text=MODELS_NOTE + "\n\n" + text)


def connect_models(graph: Graph, models: dict[str, Node], node: Node) -> None:
    for name in ("dit", "vae", "t5", "vlm", "connector"):
        graph.connect(models[name], name, node, name)


def loaders(graph: Graph, x: int = 0) -> dict[str, Node]:
    return {
        "dit": graph.add("ReViSEDiTLoader", (x, 0), dit_name="wan2.1_t2v_1.3B_fp16.safetensors", config="auto",
                         precision="auto", device="auto"),
        "vae": graph.add("ReViSEVAELoader", (x, 190), vae_name="wan_2.1_vae.safetensors", precision="auto",
                         device="auto"),
        "t5": graph.add("ReViSET5Loader", (x, 350), t5_name="umt5_xxl_fp16.safetensors",
                        tokenizer="umt5-xxl-tokenizer", precision="auto", device="auto"),
        "vlm": graph.add("ReViSEVLMLoader", (x, 540), vlm_name="Qwen2.5-VL-7B-Instruct", precision="auto",
                         device="auto"),
        "connector": graph.add("ReViSEConnectorLoader", (x, 700), connector_name="omnivideo2/transformer/pytorch_model.pt",
                               special_tokens="omnivideo2/special_tokens.pkl", config="auto", precision="auto",
                               device="auto"),
    }


def edit_chain(graph: Graph, m: dict[str, Node], video: Node) -> tuple[Node, Node, Node, Node]:
    """LoadVideo components -> fit/encode -> VLM -> connector -> sampler -> decode."""
    encode = graph.add("ReViSEVAEEncode", (380, 300), num_frames=33, width=640, height=352, resize="crop",
                       frame_policy="trim", skip_frames=0)
    graph.connect(m["vae"], "vae", encode, "vae")
    graph.connect(video, "images", encode, "images")
    vlm = graph.add("ReViSEVLMEncode", (760, 0), (360, 240), instruction=INSTRUCTION, reasoning="caption",
                    vlm_frames=8, caption_tokens=128)
    graph.connect(m["vlm"], "vlm", vlm, "vlm")
    graph.connect(encode, "frames", vlm, "frames")
    connector = graph.add("ReViSEConnector", (760, 300), max_text_len=512)
    for name in ("connector", "t5", "vae"):
        graph.connect(m[name], name, connector, name)
    graph.connect(vlm, "vlm_cond", connector, "vlm_cond")
    graph.connect(encode, "latent", connector, "source_latent")
    sampler = graph.add("ReViSESampler", (1160, 0), (320, 260), steps=40, guidance=3.0, shift=5.0, scheduler="unipc",
                        seed=0, guidance_mode="standard", sigma_schedule="diffusers")
    graph.connect(m["dit"], "dit", sampler, "dit")
    graph.connect(connector, "cond", sampler, "cond")
    decode = graph.add("ReViSEVAEDecode", (1160, 300), tiled=False)
    graph.connect(m["vae"], "vae", decode, "vae")
    graph.connect(sampler, "latent", decode, "latent")
    return encode, vlm, sampler, decode


def save_video(graph: Graph, frames_from: Node, frames_output: str, components: Node, x: int, prefix: str) -> None:
    create = graph.add("CreateVideo", (x, 0), fps=16.0)
    graph.connect(frames_from, frames_output, create, "images")
    graph.connect(components, "fps", create, "fps")
    save = graph.add("SaveVideo", (x, 220), (400, 400), filename_prefix=prefix, format="auto", codec="auto")
    graph.connect(create, "VIDEO", save, "video")


def source_video(graph: Graph) -> Node:
    load = graph.add("LoadVideo", (380, 0), (300, 260), file="source.mp4")
    components = graph.add("GetVideoComponents", (380, 560))
    graph.connect(load, "VIDEO", components, "video")
    return components


def edit_workflow() -> dict:
    graph = Graph()
    readme(graph, """**Reason-informed edit.** The VLM reads the source and the instruction (and, with reasoning = caption, writes
what the result should show); the connector fuses that with umT5 and the source latents; the Wan DiT edits.""")
    m = loaders(graph)
    components = source_video(graph)
    _, vlm, _, decode = edit_chain(graph, m, components)
    reasoning = graph.add("PreviewAny", (760, 560), title="VLM reasoning")
    graph.connect(vlm, "reasoning", reasoning, "source")
    save_video(graph, decode, "frames", components, 1540, "revise/edit")
    return graph.to_ui()


def critic_workflow() -> dict:
    graph = Graph()
    readme(graph, """**Edit + SelfCritic.** After the edit, the same VLM judges it on edit accuracy, preservation, naturalness and
realism: P(Yes) and the relative score Δ − Δ(source, source) (> 0: better than leaving the video unchanged).""")
    m = loaders(graph)
    components = source_video(graph)
    encode, _, _, decode = edit_chain(graph, m, components)
    critic = graph.add("ReViSESelfCritic", (1540, 500), (360, 260), instruction=INSTRUCTION, chain_of_thought=False,
                       frames=4)
    graph.connect(m["vlm"], "vlm", critic, "vlm")
    graph.connect(encode, "frames", critic, "source")
    graph.connect(decode, "frames", critic, "edited")
    report = graph.add("PreviewAny", (1940, 500), title="critic report")
    graph.connect(critic, "report", report, "source")
    save_video(graph, decode, "frames", components, 1540, "revise/edit_critic")
    return graph.to_ui()


def best_of_workflow() -> dict:
    graph = Graph()
    readme(graph, """**Best-of-N.** Samples N seeds and keeps the edit the model's own critic scores highest (a test-time use of
the critic, beyond the paper). The scores of every candidate are shown.""")
    m = loaders(graph)
    components = source_video(graph)
    best = graph.add("ReViSEBestOfEdit", (760, 0), (380, 420), instruction=INSTRUCTION, candidates=4, steps=40,
                     guidance=3.0, shift=5.0, seed=0)
    connect_models(graph, m, best)
    graph.connect(components, "images", best, "images")
    scores = graph.add("PreviewAny", (760, 460), title="candidate scores")
    graph.connect(best, "scores", scores, "source")
    save_video(graph, best, "frames", components, 1200, "revise/best_of")
    return graph.to_ui()


def finetune_workflow() -> dict:
    graph = Graph()
    readme(graph, """**USO fine-tune.** Trains the DiT (LoRA or full) and the visual adapter on a triplet manifest (JSONL of
source, target, instruction; docs/training.md) with flow matching + λ·L_reason from the VLM's own verdict.
Checkpoints: output/revise_training/<name>; tick 'resume' to continue an interrupted run.""", height=460)
    m = loaders(graph)
    trainer = graph.add("ReViSEUSOTrainer", (380, 0), (400, 620), manifest="data/train.jsonl", output_name="uso_run",
                        objective="uso", steps=1000, reason_weight=0.25, sigma_max=0.5, learning_rate=1e-4,
                        train="lora", lora_rank=32, global_batch=8, num_frames=17, width=640, height=352, training_seed=0,
                        resume=False)
    connect_models(graph, m, trainer)
    save = graph.add("ReViSESaveCheckpoint", (820, 0), filename_prefix="revise/uso_finetuned", save_to="output")
    graph.connect(trainer, "dit", save, "dit")
    graph.connect(trainer, "connector", save, "connector")
    curves = graph.add("PreviewImage", (820, 220), (500, 320))
    graph.connect(trainer, "curves", curves, "images")
    report = graph.add("PreviewAny", (820, 580), title="training report")
    graph.connect(trainer, "report", report, "source")
    return graph.to_ui()


RELEASE_NOTE = """## ReViSE release: what to download
Put the `revise_ckpt/` folder of **Liuxinyv/ReViSE** (Hugging Face) as it is into **models/revise/** (so that
`models/revise/revise_ckpt/transformer/model.pt` exists). Nothing needs converting: the **ReViSE Load Model Set**
node detects the layout and loads the Wan2.1-1.3B DiT, umT5, the VAE, VILA and the VisionHead + DM_Adapter
connector (docs/models.md lists every file)."""


def official_edit_workflow() -> dict:
    graph = Graph()
    graph.add("MarkdownNote", (-420, 0), (400, 460), title="Read me", text=RELEASE_NOTE + """

**The release's own settings** (`--preset revise-official`): 17 frames at 640x352 from frame 1 (skip 1), centre crop
then bilinear resize; VILA reads frame 0 of the video; UniPC, 40 steps, shift 5, the release's sigmas,
guidance cond + 3·(cond − uncond) (`official` mode) against its unconditioned context; written at 8 fps, seed 1818.""")
    models = graph.add("ReViSEModelSetLoader", (0, 0), (320, 200), model_set="revise_ckpt", precision="auto",
                       device="auto")
    components = source_video(graph)
    encode = graph.add("ReViSEVAEEncode", (380, 300), num_frames=17, width=640, height=352, resize="official",
                       frame_policy="trim", skip_frames=1)
    graph.connect(models, "vae", encode, "vae")
    graph.connect(components, "images", encode, "images")
    vlm = graph.add("ReViSEVLMEncode", (760, 0), (360, 240), instruction=INSTRUCTION, reasoning="none",
                    vlm_frames=8, caption_tokens=128)
    graph.connect(models, "vlm", vlm, "vlm")
    graph.connect(components, "images", vlm, "frames")  # the video itself: VILA reads its frame 0
    connector = graph.add("ReViSEConnector", (760, 300), max_text_len=512)
    for name in ("connector", "t5", "vae"):
        graph.connect(models, name, connector, name)
    graph.connect(vlm, "vlm_cond", connector, "vlm_cond")
    graph.connect(encode, "latent", connector, "source_latent")
    sampler = graph.add("ReViSESampler", (1160, 0), (320, 260), steps=40, guidance=3.0, shift=5.0, scheduler="unipc",
                        seed=1818, guidance_mode="official", sigma_schedule="official")
    graph.connect(models, "dit", sampler, "dit")
    graph.connect(connector, "cond", sampler, "cond")
    decode = graph.add("ReViSEVAEDecode", (1160, 300), tiled=False)
    graph.connect(models, "vae", decode, "vae")
    graph.connect(sampler, "latent", decode, "latent")
    create = graph.add("CreateVideo", (1540, 0), fps=8.0)
    graph.connect(decode, "frames", create, "images")
    save = graph.add("SaveVideo", (1540, 220), (400, 400), filename_prefix="revise/official_edit", format="auto",
                     codec="auto")
    graph.connect(create, "VIDEO", save, "video")
    return graph.to_ui()


WORKFLOWS = {
    "revise_official_edit.json": official_edit_workflow,
    "revise_edit.json": edit_workflow,
    "revise_edit_and_critic.json": critic_workflow,
    "revise_best_of_n.json": best_of_workflow,
    "revise_uso_finetune.json": finetune_workflow,
}


def render(name: str) -> str:
    return json.dumps(WORKFLOWS[name](), indent=2) + "\n"


def main() -> int:
    for name in WORKFLOWS:
        (ROOT / name).write_text(render(name), encoding="utf-8")
        print(f"wrote {ROOT / name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Writes the shipped example workflows (UI format, as the ComfyUI frontend saves them).

    python workflows/build.py        # regenerates workflows/*.json
    python workflows/thumbnails.py   # redraws their thumbnails (workflows/*.jpg)

File names are what ComfyUI's Templates dialog shows: frontend 1.35.9 reads nothing but the names of an
extension's templates (title = the name, description = the name again), so the names read as titles.

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
    # ComfyUI's own Wan path (the native workflow)
    "UNETLoader": {"inputs": [], "widgets": ["unet_name", "weight_dtype"], "outputs": [("MODEL", "MODEL")]},
    "VAELoader": {"inputs": [], "widgets": ["vae_name"], "outputs": [("VAE", "VAE")]},
    "ModelSamplingSD3": {"inputs": [("model", "MODEL")], "widgets": ["shift"], "outputs": [("MODEL", "MODEL")]},
    "KSampler": {"inputs": [("model", "MODEL"), ("positive", "CONDITIONING"), ("negative", "CONDITIONING"),
                            ("latent_image", "LATENT")],
                 "widgets": ["seed", "seed:control_after_generate", "steps", "cfg", "sampler_name", "scheduler",
                             "denoise"], "outputs": [("LATENT", "LATENT")]},
    "VAEDecode": {"inputs": [("samples", "LATENT"), ("vae", "VAE")], "widgets": [], "outputs": [("IMAGE", "IMAGE")]},
}
# Nodes whose size the frontend sets from their content (a video or image preview, a text box): room for it,
# and nothing placed below the video previews, whose height follows the video's aspect ratio.
FIXED_SIZES = {"LoadVideo": (320, 440), "SaveVideo": (420, 440), "PreviewAny": (340, 220), "PreviewImage": (500, 360)}
TITLE_HEIGHT = 30  # LiteGraph draws a node's title bar above its position
ROW_GAP, COLUMN_GAP = 40, 60
# Room a node grows by while it runs (frontend 1.35.9), left free below it: a latent preview is an image
# widget of at least 220 px plus 4 of margin (useImagePreviewWidget.ts), a text from the node (node_text.py,
# PromptServer.send_progress_text) a text widget of at least 58 px plus 4 (useProgressTextWidget.ts).
IMAGE_PREVIEW, PROGRESS_TEXT = 224, 62
RUNTIME_GROWTH = {"ReViSESampler": IMAGE_PREVIEW + PROGRESS_TEXT, "ReViSEBestOfEdit": IMAGE_PREVIEW + PROGRESS_TEXT,
                  "KSampler": IMAGE_PREVIEW, "ReViSEUSOTrainer": PROGRESS_TEXT}


def auto_size(node_type: str, width: int = 320) -> tuple[int, int]:
    """A node's size with room to spare over what the frontend computes (checked in ComfyUI's frontend:
    socket rows of 20 px, widget rows of 24 px, a multiline text box of about 100 px)."""
    if node_type in FIXED_SIZES:
        return FIXED_SIZES[node_type]
    spec = node_spec(node_type)
    rows = max(len(spec["inputs"]), len(spec["outputs"]))
    multiline = 0
    if node_type not in BUILTINS:
        from nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS

        for section in NODE_CLASS_MAPPINGS[node_type].INPUT_TYPES().values():
            multiline += sum(1 for kind, options in section.values() if kind == "STRING" and options.get("multiline"))
        width = max(width, 8 * len(NODE_DISPLAY_NAME_MAPPINGS.get(node_type, node_type)) + 40)  # the title fits
    return width, rows * 20 + len(spec["widgets"]) * 24 + multiline * 100 + 40


class Column:
    """Places nodes top to bottom without overlap; `next()` starts the column to the right."""

    def __init__(self, graph: "Graph", x: int = 0) -> None:
        self.graph, self.x, self.y, self.width = graph, x, 0, 0

    def add(self, node_type: str, size: tuple[int, int] | None = None, title: str | None = None,
            node_width: int = 320, **widgets) -> "Node":
        size = size or auto_size(node_type, node_width)
        node = self.graph.add(node_type, (self.x, self.y), size, title, **widgets)
        self.y += size[1] + RUNTIME_GROWTH.get(node_type, 0) + TITLE_HEIGHT + ROW_GAP
        self.width = max(self.width, size[0])
        return node

    def next(self) -> "Column":
        """Moves this column to the right of its widest node (the same object, returned for chaining)."""
        self.x, self.y, self.width = self.x + self.width + COLUMN_GAP, 0, 0
        return self



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
    outputs = list(zip(names, cls.RETURN_TYPES, strict=True))
    return {"inputs": inputs, "widgets": widgets, "outputs": outputs, "optional": optional}


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


def readme(graph: Graph, text: str, height: int = 420, head: str = MODELS_NOTE) -> Node:
    return graph.add("MarkdownNote", (-460, 0), (400, height), title="Read me", text=head + "\n\n" + text)


# The CPU figure the notes scale: workflows/cpu_step_time.py measured one Wan2.1-1.3B block (of 30) at 33
# frames 640x352 with 2560 context rows in 20.7 s, fp32, on a 2-core x86 CPU (AVX2, torch 2.13, a machine
# shared with other jobs), i.e. 58 GFLOP/s sustained. Other sizes scale by the block's FLOP count.
CPU_BLOCK_SECONDS, CPU_MACHINE, DIT_BLOCKS = 20.7, "a 2-core x86 CPU", 30


def cpu_seconds(frames: int, width: int, height: int, steps: int, passes: int = 2) -> float:
    """Seconds the 1.3B DiT's sampling takes on the reference CPU: steps x passes (2 with guidance) x 30
    blocks, each block's FLOPs at the measured rate."""
    from cpu_step_time import CONTEXT, TOKENS, block_flops

    rate = block_flops(TOKENS, CONTEXT) / CPU_BLOCK_SECONDS
    tokens = ((frames - 1) // 4 + 1) * (height // 16) * (width // 16)
    return steps * passes * DIT_BLOCKS * block_flops(tokens, CONTEXT) / rate


def hours(seconds: float) -> str:
    return f"{seconds / 3600:.0f} h" if seconds >= 36000 else f"{seconds / 3600:.1f} h" if seconds >= 3600 \
        else f"{max(1, round(seconds / 60))} min"


SAMPLER_MEASURES = "The ReViSE Sampler shows on the node, after its first step, the time this machine needs."


def cpu_note(graph: Graph, below: Node, frames: int, steps: int, measured_by: str, candidates: int = 1) -> None:
    """A note under the Read me (`below`) saying what the GPU defaults cost on a CPU, and a size to try there."""
    top = below.pos[1] + below.size[1] + TITLE_HEIGHT + ROW_GAP
    run = candidates * cpu_seconds(frames, 640, 352, steps)
    many = f"{candidates} candidates x " if candidates > 1 else ""
    try_size = candidates * cpu_seconds(9, 320, 192, 10)
    graph.add("MarkdownNote", (-460, top), (400, 250), title="On a CPU", text=f"""## On a CPU: hours
These are the release's GPU settings. On {CPU_MACHINE}, sampling alone ({many}{steps} steps at {frames} frames
640x352) takes about **{hours(run)}**: one Wan2.1-1.3B block measured {CPU_BLOCK_SECONDS:.0f} s there (fp32,
`workflows/cpu_step_time.py`), other sizes scaled by its FLOP count; a CPU with more cores takes less.
{measured_by}
To try it on a CPU: 9 frames at 320x192 and 10 steps, about {hours(try_size)} there.""")


def connect_models(graph: Graph, models: dict[str, Node], node: Node) -> None:
    for name in ("dit", "vae", "t5", "vlm", "connector"):
        graph.connect(models[name], name, node, name)


def loaders(column: Column) -> dict[str, Node]:
    return {
        "dit": column.add("ReViSEDiTLoader", dit_name="wan2.1_t2v_1.3B_fp16.safetensors", config="auto",
                          precision="auto", device="auto", storage="compute"),
        "vae": column.add("ReViSEVAELoader", vae_name="wan_2.1_vae.safetensors", precision="auto", device="auto"),
        "t5": column.add("ReViSET5Loader", t5_name="umt5_xxl_fp16.safetensors", tokenizer="umt5-xxl-tokenizer",
                         precision="auto", device="auto", storage="compute"),
        "vlm": column.add("ReViSEVLMLoader", vlm_name="Qwen2.5-VL-7B-Instruct", precision="auto", device="auto",
                          storage="compute"),
        "connector": column.add("ReViSEConnectorLoader", connector_name="omnivideo2/transformer/pytorch_model.pt",
                                special_tokens="omnivideo2/special_tokens.pkl", config="auto", precision="auto",
                                device="auto"),
    }


def source_video(column: Column) -> Node:
    """Load Video alone in its column (its preview grows with the video), Get Video Components to its right."""
    load = column.add("LoadVideo", file="source.mp4")
    components = column.next().add("GetVideoComponents")
    column.graph.connect(load, "VIDEO", components, "video")
    return components


def encode_video(column: Column, vae_from: Node, components: Node, **widgets) -> Node:
    settings = dict(num_frames=33, width=640, height=352, resize="crop", frame_policy="trim", skip_frames=0)
    encode = column.add("ReViSEVAEEncode", **{**settings, **widgets})
    column.graph.connect(vae_from, "vae", encode, "vae")
    column.graph.connect(components, "images", encode, "images")
    return encode


def condition(column: Column, models: Node | dict[str, Node], frames_from: tuple[Node, str], encode: Node,
              reasoning: str, components: Node) -> tuple[Node, Node]:
    """VLM Encode and Connector, stacked in `column`; `models` is a model-set loader or the five loaders;
    the source's frame rate comes from `components` (Get Video Components)."""
    graph = column.graph

    def model(name: str) -> tuple[Node, str]:
        return (models[name], name) if isinstance(models, dict) else (models, name)

    vlm = column.add("ReViSEVLMEncode", node_width=360, instruction=INSTRUCTION, reasoning=reasoning, vlm_frames=8,
                     caption_tokens=128, fps=16.0)
    graph.connect(*model("vlm"), vlm, "vlm")
    graph.connect(*frames_from, vlm, "frames")
    graph.connect(components, "fps", vlm, "fps")
    connector = column.add("ReViSEConnector", max_text_len=512, allow_context_cut=False)
    for name in ("connector", "t5", "vae"):
        graph.connect(*model(name), connector, name)
    graph.connect(vlm, "vlm_cond", connector, "vlm_cond")
    graph.connect(encode, "latent", connector, "source_latent")
    return vlm, connector


def sample_and_decode(column: Column, models: Node | dict[str, Node], connector: Node, loras: Node | None = None,
                      **sampler_widgets) -> Node:
    graph = column.graph
    dit, vae = (models["dit"], models["vae"]) if isinstance(models, dict) else (models, models)
    settings = dict(steps=40, guidance=3.0, shift=5.0, scheduler="unipc", seed=0, guidance_mode="standard",
                    sigma_schedule="diffusers", attention="auto", cache="none", cache_threshold=0.0, cache_interval=5,
                    mag_ratios="")
    sampler = column.add("ReViSESampler", **{**settings, **sampler_widgets})
    graph.connect(dit, "dit", sampler, "dit")
    graph.connect(connector, "cond", sampler, "cond")
    if loras is not None:
        graph.connect(loras, "loras", sampler, "loras")
    decode = column.add("ReViSEVAEDecode", tiled=False)
    graph.connect(vae, "vae", decode, "vae")
    graph.connect(sampler, "latent", decode, "latent")
    return decode


def save_video(column: Column, frames_from: Node, frames_output: str, prefix: str, fps_from: Node | None = None,
               fps: float = 16.0) -> None:
    """Create Video above Save Video, whose preview grows with the video: nothing goes below it."""
    create = column.add("CreateVideo", fps=fps)
    column.graph.connect(frames_from, frames_output, create, "images")
    if fps_from is not None:
        column.graph.connect(fps_from, "fps", create, "fps")
    save = column.add("SaveVideo", filename_prefix=prefix, format="auto", codec="auto")
    column.graph.connect(create, "VIDEO", save, "video")


def edit_workflow() -> dict:
    graph = Graph()
    note = readme(graph, """\
**Reason-informed edit.** The VLM reads the source and the instruction (and, with reasoning = caption, writes
what the result should show); the connector fuses that with umT5 and the source latents; the Wan DiT edits.""")
    cpu_note(graph, note, 33, 40, SAMPLER_MEASURES)
    column = Column(graph)
    m = loaders(column)
    components = source_video(column.next())
    encode = encode_video(column, m["vae"], components)
    vlm, connector = condition(column.next(), m, (encode, "frames"), encode, "caption", components)
    reasoning = column.add("PreviewAny", title="VLM reasoning")
    graph.connect(vlm, "reasoning", reasoning, "source")
    decode = sample_and_decode(column.next(), m, connector)
    save_video(column.next(), decode, "frames", "revise/edit", fps_from=components)
    return graph.to_ui()


def critic_workflow() -> dict:
    graph = Graph()
    note = readme(graph, """\
**Edit + SelfCritic.** After the edit, the same VLM judges it on edit accuracy, preservation, naturalness and
realism: P(Yes) and the relative score Δ − Δ(source, source) (> 0: better than leaving the video unchanged).""")
    cpu_note(graph, note, 33, 40, SAMPLER_MEASURES)
    column = Column(graph)
    m = loaders(column)
    components = source_video(column.next())
    encode = encode_video(column, m["vae"], components)
    _, connector = condition(column.next(), m, (encode, "frames"), encode, "caption", components)
    decode = sample_and_decode(column.next(), m, connector)
    critic = column.next().add("ReViSESelfCritic", node_width=360, instruction=INSTRUCTION, chain_of_thought=False,
                               frames=4)
    graph.connect(m["vlm"], "vlm", critic, "vlm")
    graph.connect(encode, "frames", critic, "source")
    graph.connect(decode, "frames", critic, "edited")
    report = column.add("PreviewAny", title="critic report")
    graph.connect(critic, "report", report, "source")
    save_video(column.next(), decode, "frames", "revise/edit_critic", fps_from=components)
    return graph.to_ui()


def best_of_workflow() -> dict:
    graph = Graph()
    note = readme(graph, """\
**Best-of-N.** Samples N seeds and keeps the edit the model's own critic scores highest (a test-time use of
the critic, beyond the paper). The scores of every candidate are shown.""")
    cpu_note(graph, note, 33, 40, SAMPLER_MEASURES.replace("ReViSE Sampler", "Best-of-N node"), candidates=4)
    column = Column(graph)
    m = loaders(column)
    components = source_video(column.next())
    best = column.next().add("ReViSEBestOfEdit", node_width=380, instruction=INSTRUCTION, candidates=4, steps=40,
                             guidance=3.0, shift=5.0, seed=0, num_frames=33, width=640, height=352,
                             fps=16.0)
    connect_models(graph, m, best)
    graph.connect(components, "images", best, "images")
    graph.connect(components, "fps", best, "fps")
    scores = column.add("PreviewAny", title="candidate scores")
    graph.connect(best, "scores", scores, "source")
    save_video(column.next(), best, "frames", "revise/best_of", fps_from=components)
    return graph.to_ui()


def finetune_workflow() -> dict:
    graph = Graph()
    readme(graph, f"""\
**USO fine-tune.** Trains the DiT (LoRA or full) and the visual adapter on a triplet manifest (JSONL of
source, target, instruction; docs/training.md) with flow matching + λ·L_reason from the VLM's own verdict.
Checkpoints: output/revise_training/<name>; tick 'resume' to continue an interrupted run.

**Needs a GPU.** On {CPU_MACHINE} one step at these settings takes about {hours(cpu_seconds(17, 640, 352, 8, 3))}
(8 samples, each a forward and a backward pass of the DiT ≈ 3 forward passes; the VAE and the critic not counted):
1000 steps would take months. Cancel saves the last finished step, and the node says so.""", height=560)
    column = Column(graph)
    m = loaders(column)
    trainer = column.next().add("ReViSEUSOTrainer", node_width=400, manifest="data/train.jsonl", output_name="uso_run",
                                objective="uso", steps=1000, reason_weight=0.25, sigma_max=0.5, learning_rate=1e-4,
                                train="lora", lora_rank=32, global_batch=8, num_frames=17, width=640, height=352,
                                training_seed=0, resume=False)
    connect_models(graph, m, trainer)
    save = column.next().add("ReViSESaveCheckpoint", filename_prefix="revise/uso_finetuned", save_to="output")
    graph.connect(trainer, "dit", save, "dit")
    graph.connect(trainer, "connector", save, "connector")
    report = column.add("PreviewAny", title="training report")
    graph.connect(trainer, "report", report, "source")
    curves = column.add("PreviewImage")
    graph.connect(trainer, "curves", curves, "images")
    return graph.to_ui()


RELEASE_NOTE = """## ReViSE release: what to download
Put the `revise_ckpt/` folder of **Liuxinyv/ReViSE** (Hugging Face) as it is into **models/revise/** (so that
`models/revise/revise_ckpt/transformer/model.pt` exists). Nothing needs converting: the **ReViSE Load Model Set**
node detects the layout and loads the Wan2.1-1.3B DiT, umT5, the VAE, VILA and the VisionHead + DM_Adapter
connector (docs/models.md lists every file)."""


def official_edit_workflow() -> dict:
    graph = Graph()
    note = readme(graph, head=RELEASE_NOTE, height=460, text="""**The release's own settings**
(`--preset revise-official`): 17 frames at 640x352 from frame 1 (skip 1), centre crop then bilinear resize; VILA reads
frame 0 of the video; UniPC, 40 steps, shift 5, the release's sigmas, guidance cond + 3·(cond − uncond) (`official`
mode) against its unconditioned context; written at 8 fps, seed 1818.""")
    cpu_note(graph, note, 17, 40, SAMPLER_MEASURES)
    column = Column(graph)
    models = column.add("ReViSEModelSetLoader", model_set="revise_ckpt", precision="auto", device="auto",
                        load_dit=True, encoders="compute", dit_storage="compute")
    components = source_video(column.next())
    encode = encode_video(column, models, components, num_frames=17, resize="official", skip_frames=1)
    # the video itself: VILA reads its frame 0
    _, connector = condition(column.next(), models, (components, "images"), encode, "none", components)
    decode = sample_and_decode(column.next(), models, connector, seed=1818, guidance_mode="official",
                               sigma_schedule="official")
    save_video(column.next(), decode, "frames", "revise/official_edit", fps=8.0)
    return graph.to_ui()


def long_clip_workflow() -> dict:
    graph = Graph()
    note = readme(graph, head=RELEASE_NOTE, height=500, text="""**A long clip in temporal windows.** The release's
context holds about 6 latent frames of 640x352 video beside its VLM rows and the instruction (one latent frame is 4
video frames). **ReViSE Context Options** makes the Connector build one context per window of 5 latent frames (its
slice of the source, the instruction and VLM rows shared); the Sampler denoises window by window and blends the
1-frame overlaps. Every frame of the video is edited (num_frames 0). The video's frames stay in RAM as IMAGE tensors;
the GPU holds one window at a time.""")
    cpu_note(graph, note, 81, 40, SAMPLER_MEASURES)
    column = Column(graph)
    models = column.add("ReViSEModelSetLoader", model_set="revise_ckpt", precision="auto", device="auto",
                        load_dit=True, encoders="compute", dit_storage="compute")
    components = source_video(column.next())
    encode = encode_video(column, models, components, num_frames=0, resize="official", skip_frames=1)
    options = column.next().add("ReViSEContextOptions", window=5, overlap=1, schedule="static")
    _, connector = condition(column, models, (components, "images"), encode, "none", components)
    graph.connect(options, "context_options", connector, "context_options")
    decode = sample_and_decode(column.next(), models, connector, seed=1818, guidance_mode="official",
                               sigma_schedule="official")
    save_video(column.next(), decode, "frames", "revise/long_clip_edit", fps=8.0)
    return graph.to_ui()


FEW_STEP_LORA = "Wan21_CausVid_bidirect2_T2V_1_3B_lora_rank32.safetensors"


def few_step_workflow() -> dict:
    from revise_core.presets import FEW_STEP

    graph = Graph()
    note = readme(graph, head=RELEASE_NOTE, height=560, text=f"""**A 4-step edit with a step-distilled LoRA.**
Put a Wan2.1-1.3B step-distilled LoRA (e.g. CausVid's `{FEW_STEP_LORA}`) into **models/loras**. **ReViSE LoRA**
picks it (chain several to stack them, each with its strength); the Sampler adds it to the DiT's weights while it
samples and restores them after. Sampling as the LoRA was distilled: {FEW_STEP["steps"]} Euler steps at shift
{FEW_STEP["shift"]:g}, guidance off (guidance 1), so 4 DiT calls instead of 80. Such a LoRA was distilled on base
Wan's text conditioning: whether it keeps its quality on ReViSE's connector context is not known; compare with the
template "ReViSE release edit".""")
    cpu_note(graph, note, 17, FEW_STEP["steps"], SAMPLER_MEASURES)
    column = Column(graph)
    models = column.add("ReViSEModelSetLoader", model_set="revise_ckpt", precision="auto", device="auto",
                        load_dit=True, encoders="compute", dit_storage="compute")
    lora = column.add("ReViSELoRA", lora_name=FEW_STEP_LORA, strength=1.0)
    components = source_video(column.next())
    encode = encode_video(column, models, components, num_frames=17, resize="official", skip_frames=1)
    _, connector = condition(column.next(), models, (components, "images"), encode, "none", components)
    decode = sample_and_decode(column.next(), models, connector, loras=lora, seed=1818, steps=FEW_STEP["steps"],
                               guidance=FEW_STEP["guidance_scale"], shift=FEW_STEP["shift"],
                               scheduler=FEW_STEP["scheduler"], guidance_mode=FEW_STEP["guidance_mode"],
                               sigma_schedule=FEW_STEP["sigma_schedule"])
    save_video(column.next(), decode, "frames", "revise/few_step_edit", fps=8.0)
    return graph.to_ui()


NATIVE_NOTE = RELEASE_NOTE + """

**ComfyUI's own sampler.** Convert the release's DiT once into a file `UNETLoader` reads as Wan2.1:
`python -m revise_core.convert models/revise/revise_ckpt models/diffusion_models/revise_dit.safetensors`
and put **wan_2.1_vae.safetensors** (Comfy-Org/Wan_2.1_ComfyUI_repackaged, the same VAE) into **models/vae**."""


def native_workflow() -> dict:
    graph = Graph()
    note = readme(graph, head=NATIVE_NOTE, height=560, text="""The ReViSE nodes encode (VLM, umT5,
connector; the model set loads without its DiT); **ReViSE → Wan Conditioning** hands the context to KSampler as
positive and the release's null branch as negative. ComfyUI's cfg is uncond + cfg·(cond − uncond): the release's
guidance 3 (cond + 3·(cond − uncond)) is **cfg 4**. ModelSamplingSD3 sets the release's shift 5. For the release's
exact sampler (its UniPC and sigmas) use the template "ReViSE release edit"; KSampler brings ComfyUI's samplers, memory management, fp8 weights, LoRAs and caches.""")
    cpu_note(graph, note, 17, 40, "ComfyUI's console shows KSampler's time per step.")
    column = Column(graph)
    models = column.add("ReViSEModelSetLoader", model_set="revise_ckpt", precision="auto", device="auto",
                        load_dit=False, encoders="compute", dit_storage="compute")
    unet = column.add("UNETLoader", unet_name="revise_dit.safetensors", weight_dtype="default")
    vae = column.add("VAELoader", vae_name="wan_2.1_vae.safetensors")
    components = source_video(column.next())
    encode = encode_video(column, models, components, num_frames=17, resize="official", skip_frames=1)
    _, connector = condition(column.next(), models, (components, "images"), encode, "none", components)
    native = column.add("ReViSEWanConditioning")
    graph.connect(connector, "cond", native, "cond")
    shift = column.next().add("ModelSamplingSD3", shift=5.0)
    graph.connect(unet, "MODEL", shift, "model")
    sampler = column.add("KSampler", seed=1818, steps=40, cfg=4.0, sampler_name="uni_pc_bh2", scheduler="simple",
                         denoise=1.0)
    graph.connect(shift, "MODEL", sampler, "model")
    graph.connect(native, "positive", sampler, "positive")
    graph.connect(native, "negative", sampler, "negative")
    graph.connect(native, "latent", sampler, "latent_image")
    decode = column.add("VAEDecode")
    graph.connect(sampler, "LATENT", decode, "samples")
    graph.connect(vae, "VAE", decode, "vae")
    save_video(column.next(), decode, "IMAGE", "revise/native_edit", fps=8.0)
    return graph.to_ui()


# File name -> graph. The names are the Templates dialog's titles (see the module's docstring).
WORKFLOWS = {
    "ReViSE release edit.json": official_edit_workflow,
    "ReViSE edit via KSampler.json": native_workflow,
    "ReViSE reasoning edit.json": edit_workflow,
    "ReViSE edit and SelfCritic.json": critic_workflow,
    "ReViSE best-of-N edit.json": best_of_workflow,
    "ReViSE USO fine-tune.json": finetune_workflow,
    "ReViSE long clip edit.json": long_clip_workflow,
    "ReViSE 4-step LoRA edit.json": few_step_workflow,
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

"""Reference tensors of the official ReViSE code on the kit's parity folder, for tests/test_release_parity.py.

    python tests/parity/make_revise_reference.py --official /path/to/ReViSE
        [--out tests/parity/revise_official.safetensors]

`--official` is a checkout (or `git archive`) of the official repository, Liuxinyv/ReViSE (commit 12caf25 made
the committed file), holding `nets/` and `tools/`. Nothing of it is installed or copied: its files are loaded
from that path. The script needs, besides this project: torchvision's Python files (its compiled operators
are not used, so a torchvision wheel that does not match the installed torch does), `ftfy` and `easydict`
(imported by the official files). It writes the tiny folder with the kit (revise_core.testing.parity) into a
temporary folder, runs the official inference on it in fp32 on the CPU, and stores each stage.

What cannot run here is stubbed; every stub is listed in STUBS and none changes a number:
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import functools
import importlib
import importlib.util
import inspect
import json
import math
import sys
import tempfile
import types
import typing
from pathlib import Path

import numpy as np
import torch

STUBS = (
    "flash_attention (CUDA-only): scaled_dot_product_attention with the same key-length mask, in the input dtype",
    "cv2.VideoCapture: serves the kit's uint8 frames (as BGR) to the official read_video_frames",
    "decord.VideoReader: serves the same frames to the official load_video",
    "imageio's writer: the official cache_video's uint8 frames are kept instead of encoded",
    ("DiffSynth's umT5 (loaded from a hard-coded path): the official T5Encoder of t5.py, the same module, loaded "
     "from the kit's models_t5_umt5-xxl-enc-bf16.pth"),
    ("VILA loading (load_pretrained_model needs deepspeed, flash-attn, s2wrapper): the LLM through "
     "AutoModelForCausalLM, the tower through the official SiglipVisionTower, the official MultimodalProjector; "
     "LlavaLlamaModel.forward, prepare_inputs_labels_for_multimodal and encode_images are the official functions, "
     "taken from their files; a one-process gloo group for the loss rescale"),
    "sizes the official code fixes: VisionHead width 1152 -> 16, WanVAE width 96 -> 16, their bf16 -> fp32",
    ("WanModel built at the tiny sizes (the official config.json lacks text_dim, so from_pretrained would build "
     "4096) and loaded from the folder's weights; its save_pretrained config is checked equal to the folder's"),
    ("the generate loop (CUDA generator, autocast, synchronize): its lines rebuilt on the official modules and "
     "scheduler, with injected noise, in fp32"),
    "Tensor.cuda / Tensor.half: identity (fp32 on the CPU)",
    ("the SigLIP image processor behind a view without `crop_size`: transformers 5 sets it to None on every image "
     "processor, where 4.51's SigLIP processor (the release's) had none, and llava's process_image tests hasattr"),
)
__doc__ += "".join(f"\n- {stub}" for stub in STUBS) + "\n"

HERE = Path(__file__).resolve().parent
DEFAULT_OUT = HERE / "revise_official.safetensors"
NOISE_SEED = 1818  # the release's base_seed; its noise comes from a CUDA generator, so it is drawn here and stored


# --- loading official files --------------------------------------------------------------------------

class Official:
    """Loads single files of the official tree under their own module names, with stub packages above them."""

    def __init__(self, root: Path) -> None:
        self.root = root
        if not (root / "nets" / "revise" / "revise_video_unified_gen.py").is_file():
            raise SystemExit(f"{root}: not a checkout of the official ReViSE repository (no nets/revise/...)")
        for name in ("nets", "nets.third_party", "nets.third_party.wan", "nets.third_party.wan.modules",
                     "nets.third_party.wan.utils", "nets.third_party.wan.configs", "nets.revise",
                     "nets.revise.modules", "nets.third_party.llava", "nets.third_party.llava.model", "llava",
                     "llava.model", "llava.model.multimodal_encoder", "llava.model.multimodal_projector",
                     "llava.train"):
            self.package(name)

    def package(self, name: str) -> types.ModuleType:
        module = types.ModuleType(name)
        module.__path__ = []
        sys.modules[name] = module
        return module

    def stub(self, name: str, **attributes) -> types.ModuleType:
        module = types.ModuleType(name)
        module.__dict__.update(attributes)
        sys.modules[name] = module
        return module

    def load(self, name: str, relative: str, *aliases: str) -> types.ModuleType:
        spec = importlib.util.spec_from_file_location(name, self.root / relative)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        for alias in aliases:
            sys.modules[alias] = module
        spec.loader.exec_module(module)
        return module

    def extract(self, relative: str, names: list[str], namespace: dict) -> dict:
        """Execute only the named top-level functions / classes / assignments (or class methods as
        'Class.method') of an official file, in `namespace`."""
        tree = ast.parse((self.root / relative).read_text())
        nodes = []
        for wanted in names:
            owner, _, member = wanted.partition(".")
            for node in tree.body:
                node_name = getattr(node, "name", None) or (
                    node.targets[0].id if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name)
                    else None)
                if node_name != owner:
                    continue
                if member:
                    node = next(child for child in node.body if getattr(child, "name", None) == member)
                nodes.append(node)
                break
            else:
                raise SystemExit(f"{relative}: no {wanted}")
        # the official functions themselves, run from the user's checkout (never copied into this project)
        exec(compile(ast.Module(body=nodes, type_ignores=[]), str(self.root / relative), "exec"), namespace)  # noqa: S102
        return namespace


def sdpa_attention(q, k, v, q_lens=None, k_lens=None, dropout_p=0.0, softmax_scale=None, q_scale=None, causal=False,
                   window_size=(-1, -1), deterministic=False, dtype=torch.bfloat16, version=None):
    """flash_attention's contract ([B, L, N, C] in and out; keys past k_lens ignored) on SDPA, in q's dtype."""
    assert window_size == (-1, -1) and not causal and q_scale is None
    mask = None
    if k_lens is not None:
        mask = (torch.arange(k.shape[1], device=k.device)[None] < k_lens.to(k.device)[:, None])[:, None, None, :]
    out = torch.nn.functional.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                                                           attn_mask=mask, scale=softmax_scale)
    return out.transpose(1, 2).contiguous()


def load_torchvision_python(folder: Path | None):
    """torchvision's transforms and utils: the installed package, or (`--torchvision`, e.g. an unpacked wheel whose
    compiled operators do not match this torch) its Python files under a private name, so that no library sees
    a torchvision it cannot load."""
    if folder is None:
        try:
            import torchvision.transforms
            import torchvision.utils  # noqa: F401

            return sys.modules["torchvision"]
        except (ImportError, RuntimeError) as error:  # its compiled operators need the matching torch
            raise SystemExit(f"torchvision does not import ({error}); give --torchvision DIR, a folder holding its "
                             "Python files (an unpacked wheel)") from None
    if not (folder / "torchvision" / "transforms" / "transforms.py").is_file():
        raise SystemExit(f"{folder}: no torchvision/transforms/transforms.py in it")
    name = "_torchvision_python"
    package = types.ModuleType(name)
    package.__path__ = [str(folder / "torchvision")]
    sys.modules[name] = package
    importlib.import_module(f"{name}.transforms")
    importlib.import_module(f"{name}.utils")
    return package


class FrameSource:
    """The kit's uint8 RGB frames behind cv2.VideoCapture and decord.VideoReader."""

    def __init__(self, frames: np.ndarray) -> None:
        self.frames = frames

    def cv2_module(self) -> types.ModuleType:
        frames = self.frames

        class VideoCapture:
            def __init__(self, path):
                self.index = 0

            def isOpened(self):  # cv2's name
                return True

            def get(self, prop):
                return {7: len(frames), 5: 8.0, 3: frames.shape[2], 4: frames.shape[1]}[prop]

            def read(self):
                if self.index >= len(frames):
                    return False, None
                self.index += 1
                return True, np.ascontiguousarray(frames[self.index - 1][..., ::-1])  # cv2 decodes BGR

            def release(self):
                pass

        def cvt_color(frame, code):
            assert code == 4  # COLOR_BGR2RGB
            return np.ascontiguousarray(frame[..., ::-1])

        return types.SimpleNamespace(VideoCapture=VideoCapture, cvtColor=cvt_color, COLOR_BGR2RGB=4,
                                     CAP_PROP_FRAME_COUNT=7, CAP_PROP_FPS=5, CAP_PROP_FRAME_WIDTH=3,
                                     CAP_PROP_FRAME_HEIGHT=4)

    def decord_module(self) -> dict:
        frames = self.frames

        class VideoReader:
            def __init__(self, path, ctx=None):
                pass

            def __len__(self):
                return len(frames)

            def get_avg_fps(self):
                return 8.0

            def get_batch(self, index):
                return types.SimpleNamespace(asnumpy=lambda: frames[np.asarray(index)])

        return {"VideoReader": VideoReader, "cpu": lambda index: None}


class ProcessorWithoutCropSize:
    """An image processor without a `crop_size` attribute (see STUBS)."""

    def __init__(self, processor) -> None:
        self._processor = processor

    def __getattr__(self, name):
        if name == "crop_size":
            raise AttributeError(name)
        return getattr(self._processor, name)


@contextlib.contextmanager
def cpu_tensors():
    """`.cuda()` and `.half()` of the official code as identities: the whole run stays fp32 on the CPU."""
    cuda, half = torch.Tensor.cuda, torch.Tensor.half
    torch.Tensor.cuda = lambda self, *args, **kwargs: self
    torch.Tensor.half = lambda self, *args, **kwargs: self
    try:
        yield
    finally:
        torch.Tensor.cuda, torch.Tensor.half = cuda, half


# --- the run -------------------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--official", type=Path, required=True, help="the official ReViSE checkout (nets/, tools/)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"output file (default {DEFAULT_OUT})")
    parser.add_argument("--torchvision", type=Path, default=None,
                        help="a folder holding torchvision's Python files, when the installed one does not import")
    args = parser.parse_args(argv)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    with tempfile.TemporaryDirectory(prefix="revise-parity-") as tmp:
        references, notes = run(args.official.resolve(), Path(tmp), args.torchvision)
    from safetensors.torch import save_file

    metadata = {"official": "Liuxinyv/ReViSE", "stubs": json.dumps(STUBS), **{k: json.dumps(v) for k, v in notes.items()}}
    save_file({k: v.contiguous() for k, v in references.items()}, str(args.out), metadata=metadata)
    size = args.out.stat().st_size
    print(f"wrote {args.out} ({size / 1024:.0f} KiB, {len(references)} tensors)")
    if size > 1024 * 1024:
        raise SystemExit(f"{args.out} is {size} bytes, over the 1 MiB a tracked file may have")
    return 0


def run(root: Path, tmp: Path, torchvision_folder: Path | None) -> tuple[dict[str, torch.Tensor], dict]:
    # The kit's folder first: the official VILA utilities disable torch's initialisers process-wide.
    from revise_core.critic import ALL_QUESTION, SelfCritic
    from revise_core.testing import parity
    from revise_core.vlm import vila as our_vila

    folder = parity.write_parity_release(tmp / "revise_ckpt")
    source = parity.parity_source_frames().numpy()
    refs: dict[str, torch.Tensor] = {}
    notes: dict = {}

    official = Official(root)
    torchvision = load_torchvision_python(torchvision_folder)
    frames = FrameSource(source)
    sys.modules["cv2"] = frames.cv2_module()
    official.stub("decord", **frames.decord_module())
    captured_video: list[np.ndarray] = []

    class Writer:
        def append_data(self, frame):
            captured_video.append(np.array(frame))

        def close(self):
            pass

    official.stub("imageio", get_writer=lambda *args, **kwargs: Writer())
    official.stub("diffsynth")
    official.stub("diffsynth.pipelines")
    official.stub("diffsynth.pipelines.wan_video_new", WanVideoPipeline=None, ModelConfig=None)
    official.stub("s2wrapper", forward=None)

    # --- Wan: model, VAE, umT5, scheduler, utils ---
    official.load("nets.third_party.wan.modules.attention", "nets/third_party/wan/modules/attention.py")
    wan_model = official.load("nets.third_party.wan.modules.model", "nets/third_party/wan/modules/model.py")
    wan_model.flash_attention = sdpa_attention
    wan_vae = official.load("nets.third_party.wan.modules.vae", "nets/third_party/wan/modules/vae.py")
    official.load("nets.third_party.wan.modules.tokenizers", "nets/third_party/wan/modules/tokenizers.py")
    current_device = torch.cuda.current_device
    torch.cuda.current_device = lambda: 0  # evaluated as a default argument when t5.py is imported
    try:
        t5 = official.load("nets.third_party.wan.modules.t5", "nets/third_party/wan/modules/t5.py")
    finally:
        torch.cuda.current_device = current_device
    unipc = official.load("nets.third_party.wan.utils.fm_solvers_unipc", "nets/third_party/wan/utils/fm_solvers_unipc.py")
    installed = sys.modules.get("torchvision")
    sys.modules["torchvision"] = torchvision  # for utils.py's own `import torchvision` (make_grid)
    try:
        wan_utils = official.load("nets.third_party.wan.utils.utils", "nets/third_party/wan/utils/utils.py")
    finally:
        if installed is None:
            del sys.modules["torchvision"]

    # --- the connector and the mixed-condition model ---
    head_namespace = official.extract("nets/third_party/llava/model/vila_with_vision_head.py",
                                      ["TRAINABLE_PRECISION", "VisionHead"],
                                      {"torch": torch, "nn": torch.nn, "Module": torch.nn.Module, "os": __import__("os")})
    head_namespace["TRAINABLE_PRECISION"] = torch.float32  # bf16 in the release; fp32 here
    official.stub("nets.third_party.llava.model.vila_with_vision_head", **head_namespace)
    official.load("nets.revise.modules.adapter", "nets/revise/modules/adapter.py")
    official.load("nets.revise.modules.visual_context_adapter", "nets/revise/modules/visual_context_adapter.py")
    rm = official.load("nets.revise.modules.revise_video_model", "nets/revise/modules/revise_video_model.py")
    rm.VisionHead = functools.partial(head_namespace["VisionHead"], hidden_size=parity.VISION_HEAD_DIM)

    # --- VILA ---
    constants = official.load("llava.constants", "nets/third_party/llava/constants.py",
                              "nets.third_party.llava.constants")
    mm_utils = official.load("llava.mm_utils", "nets/third_party/llava/mm_utils.py", "nets.third_party.llava.mm_utils")
    official.load("nets.third_party.llava.conversation", "nets/third_party/llava/conversation.py",
                  "llava.conversation")
    official.load("llava.model.multimodal_encoder.vision_encoder",
                  "nets/third_party/llava/model/multimodal_encoder/vision_encoder.py")
    siglip = official.load("llava.model.multimodal_encoder.siglip_encoder",
                           "nets/third_party/llava/model/multimodal_encoder/siglip_encoder.py")
    projector = official.load("llava.model.multimodal_projector.base_projector",
                              "nets/third_party/llava/model/multimodal_projector/base_projector.py")
    official.stub("nets.third_party.llava.model.builder", load_pretrained_model=None)
    official.stub("nets.third_party.llava.utils", disable_torch_init=lambda: None)  # loads below set every weight
    vila_ar = official.load("nets.revise.modules.vila_ar_model", "nets/revise/modules/vila_ar_model.py")
    train_utils = official.extract("nets/third_party/llava/train/utils.py", ["calculate_loss_weight"],
                                   {"copy": __import__("copy"), "dist": torch.distributed})
    arch = official.extract(
        "nets/third_party/llava/model/llava_arch.py",
        ["LlavaMetaModel.encode_images", "LlavaMetaForCausalLM.prepare_inputs_labels_for_multimodal"]
        if _has_method(root, "nets/third_party/llava/model/llava_arch.py", "LlavaMetaModel", "encode_images") else
        ["LlavaMetaForCausalLM.encode_images", "LlavaMetaForCausalLM.prepare_inputs_labels_for_multimodal"],
        {"torch": torch, "warnings": __import__("warnings"), "get_pg_manager": lambda: None,
         "IGNORE_INDEX": constants.IGNORE_INDEX, "IMAGE_TOKEN_INDEX": constants.IMAGE_TOKEN_INDEX})
    forward_namespace = official.extract(
        "nets/third_party/llava/model/language_model/llava_llama.py", ["LlavaLlamaModel.forward"],
        {"torch": torch, "inspect": inspect, "calculate_loss_weight": train_utils["calculate_loss_weight"],
         "Optional": typing.Optional, "Union": typing.Union, "Tuple": tuple, "List": list,
         "CausalLMOutputWithPast": object})

    # --- generative.py: the source frames and the VAE's input ---
    gen = official.extract("tools/inference/generative.py", ["transform_image_to_tensor", "read_video_frames"],
                           {"torch": torch, "np": np, "Image": __import__("PIL.Image").Image, "os": __import__("os"),
                            "cv2": sys.modules["cv2"], "transforms": torchvision.transforms,
                            "logging": __import__("logging"), "Union": typing.Union, "Tuple": tuple,
                            "Optional": typing.Optional})

    import os

    if not torch.distributed.is_initialized():  # calculate_loss_weight all-reduces over the group
        os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
        os.environ.setdefault("MASTER_PORT", str(29500 + os.getpid() % 1000))
        torch.distributed.init_process_group("gloo", rank=0, world_size=1)

    height, width = parity.CLIP_SIZE
    frame_num = 17
    video_path = str(tmp / "source.mp4")  # never opened: the stubs serve the frames
    (tmp / "source.mp4").write_bytes(b"")  # read_video_frames checks that the file exists

    # 1. the VAE's input frames, then its latents (generative.py: sampling_rate 1, skip_num 1)
    vae_input = gen["read_video_frames"](video_path, frame_num, 1, 1, (height, width))
    assert vae_input is not None, "read_video_frames refused the frames"
    eight_bit = (vae_input * 0.5 + 0.5) * 255
    refs["vae_input_uint8"] = eight_bit.round().to(torch.uint8).permute(0, 2, 3, 1)  # [T, H, W, 3]
    assert torch.allclose(eight_bit, eight_bit.round(), atol=1e-4), "the VAE input is not 8-bit"
    wan_dir = folder / "wan" / "wanxiang1_3b"
    wan_vae._video_vae = functools.partial(wan_vae._video_vae, dim=16)  # the kit's VAE width (96 in the release)
    vae = wan_vae.WanVAE(z_dim=16, vae_pth=str(wan_dir / "Wan2.1_VAE.pth"), dtype=torch.float32, device="cpu")
    with torch.no_grad():
        visual_emb = vae.encode(vae_input.transpose(0, 1).unsqueeze(0))[0]
    refs["source_latents"] = visual_emb[None]  # normalised, [1, 16, 5, 4, 8]

    # 2. VILA: general_emb(prompt, video, "v2v") with the official prompt, tokens, pixels and splice
    checkpoint = folder / "ar_model" / "checkpoint"
    top = json.loads((checkpoint / "config.json").read_text())
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(checkpoint / "llm"), use_fast=False, legacy=False,
                                              padding_side="right")
    llm = AutoModelForCausalLM.from_pretrained(str(checkpoint / "llm"), dtype=torch.float32).eval()
    tower_config = types.SimpleNamespace(mm_vision_select_layer=top["mm_vision_select_layer"],
                                         mm_vision_select_feature=top["mm_vision_select_feature"],
                                         model_dtype="torch.float32")
    tower = siglip.SiglipVisionTower(str(checkpoint / "vision_tower"), tower_config).eval()
    llm_config = types.SimpleNamespace(mm_hidden_size=tower.vision_tower.config.hidden_size,
                                       hidden_size=llm.config.hidden_size)
    mm_projector = projector.MultimodalProjector(
        projector.MultimodalProjectorConfig(top["mm_projector_cfg"]["mm_projector_type"]), llm_config)
    from safetensors.torch import load_file

    mm_projector.load_state_dict(load_file(str(checkpoint / "mm_projector" / "model.safetensors")))
    mm_projector.eval()
    recorded: dict = {}

    class VilaHarness(torch.nn.Module):
        """What load_pretrained_model would build, with the official forward / splice / encode_images bound."""

        def __init__(self):
            super().__init__()
            self.llm, self.vision_tower, self.mm_projector = llm, tower, mm_projector
            self.config = types.SimpleNamespace(**top)
            self.device = torch.device("cpu")

        get_vision_tower = lambda self: self.vision_tower
        get_mm_projector = lambda self: self.mm_projector
        freezed_module_patch = lambda self: None  # only acts while training
        encode_images = arch["encode_images"]
        _prepare = arch["prepare_inputs_labels_for_multimodal"]
        _forward = forward_namespace["forward"]

        def prepare_inputs_labels_for_multimodal(self, input_ids, *rest):
            recorded.setdefault("input_ids", input_ids.clone())
            recorded.setdefault("attention_mask", rest[1].clone() if rest[1] is not None else None)
            outputs = self._prepare(input_ids, *rest)
            recorded.setdefault("inputs_embeds", outputs[4].clone())
            return outputs

        def forward(self, *args, **kwargs):
            return self._forward(*args, **kwargs)

    harness = VilaHarness().eval()
    image_processor = ProcessorWithoutCropSize(tower.image_processor)
    ar_model = vila_ar.VilaARVideoModel.__new__(vila_ar.VilaARVideoModel)
    ar_model.tokenizer, ar_model.model, ar_model.image_processor = tokenizer, harness, image_processor
    with cpu_tensors(), torch.no_grad():
        states = ar_model.general_emb(parity.INSTRUCTION, video_path, task_type="v2v")
    ids, mask = recorded["input_ids"][0], recorded["attention_mask"][0]
    refs["vila_input_ids"] = ids[mask.bool()].to(torch.int64)  # positions the splice keeps (pad ids deleted)
    refs["vila_hidden_states"] = states[0].float()
    # the SigLIP pixels of the frame the LLM sees: the official process_images on load_video's frames
    loaded = vila_ar.load_video(video_path, 8)
    with cpu_tensors():
        pixels = mm_utils.process_images(loaded, image_processor, harness.config)
    refs["vila_pixels_frame0"] = pixels[0].float()

    # 3. the mixed-condition model, loaded in the official order
    wan = wan_model.WanModel(model_type="t2v", patch_size=(1, 2, 2), text_len=512, in_dim=16, dim=64, ffn_dim=128,
                             freq_dim=32, text_dim=32, out_dim=16, num_heads=2, num_layers=2, window_size=(-1, -1),
                             qk_norm=True, cross_attn_norm=True, eps=1e-6)
    wan.save_pretrained(str(tmp / "official_wan"))
    written = json.loads((tmp / "official_wan" / "config.json").read_text())
    kit = json.loads((wan_dir / "config.json").read_text())
    differing = {k for k in set(written) | set(kit) if k != "_diffusers_version" and written.get(k) != kit.get(k)}
    if differing:
        raise SystemExit(f"the kit's Wan config.json differs from WanModel.save_pretrained's in {sorted(differing)}")
    notes["official_wan_config"] = written
    wan.load_state_dict(load_file(str(wan_dir / "diffusion_pytorch_model.safetensors")))
    model = rm.ReviseVideoMixedConditionModel(
        wan, str(folder / "adapter" / "model.pt"), str(folder / "vision_head" / "vision_head"),
        llm_hidden_size=llm.config.hidden_size, learnable_query_length=4, adapter_in_channels=parity.VISION_HEAD_DIM,
        adapter_out_channels=32, adapter_query_length=8, precision_dtype=torch.float32, use_visual_context_adapter=True,
        visual_context_adapter_patch_size=(1, 4, 4), max_context_len=2560)
    state = torch.load(folder / "transformer" / "model.pt", map_location="cpu", weights_only=True)
    model.load_state_dict(state.get("module", state), strict=False)  # load_transformer_checkpoint
    model.enable_eval()
    generator_module = _load_generator(official)
    generator = generator_module.ReviseVideoGenerator.__new__(generator_module.ReviseVideoGenerator)
    generator.args, generator.device = types.SimpleNamespace(adapter_in_channels=parity.VISION_HEAD_DIM), "cpu"
    generator.model_paths = {"special_tokens": str(folder / "special_tokens" / "tokens.pkl"),
                             "unconditioned_context": str(folder / "unconditioned_context" / "context.pkl")}
    generator.special_tokens = generator.unconditioned_context = None
    generator.load_special_tokens()
    generator.load_unconditioned_context()
    assert generator.special_tokens is not None and generator.unconditioned_context is not None

    with torch.no_grad():
        head = model.ar_vision_head(states.float())
        refs["vision_head"] = head[0]
        adapted = model.adapter(head.reshape(-1, 1, head.size(2)))
        refs["dm_adapter"] = adapted

    # 4. umT5 (the release's T5EncoderModel wrapper over the official encoder)
    t5_state = torch.load(wan_dir / "models_t5_umt5-xxl-enc-bf16.pth", map_location="cpu", weights_only=True)
    encoder = t5.T5Encoder(vocab=t5_state["token_embedding.weight"].shape[0], dim=32, dim_attn=32, dim_ffn=64,
                           num_heads=4, num_layers=2, num_buckets=8, shared_pos=False, dropout=0.0)
    encoder.load_state_dict(t5_state)
    text_encoder = t5.T5EncoderModel.__new__(t5.T5EncoderModel)
    text_encoder.text_len, text_encoder.dtype, text_encoder.device = 512, torch.float32, torch.device("cpu")
    text_encoder.model = encoder.eval()
    text_encoder.tokenizer = sys.modules["nets.third_party.wan.modules.tokenizers"].HuggingfaceTokenizer(
        name=str(wan_dir / "google" / "umt5-xxl"), seq_len=512, clean="whitespace")
    with torch.no_grad():
        context = text_encoder([parity.INSTRUCTION], torch.device("cpu"))
    refs["t5"] = context[0]

    # 5. the sampling loop of ReviseVideoX2XUnified.generate (RU:217-369), on the official modules
    target_shape = (16, (frame_num - 1) // 4 + 1, height // 8, width // 8)
    seq_len = math.ceil((target_shape[2] * target_shape[3]) / (2 * 2) * target_shape[1])
    noise = torch.randn(target_shape, generator=torch.Generator().manual_seed(NOISE_SEED), dtype=torch.float32)
    refs["noise"] = noise[None]
    scheduler = unipc.FlowUniPCMultistepScheduler(num_train_timesteps=1000, shift=1, use_dynamic_shifting=False)
    scheduler.set_timesteps(parity.STEPS, device="cpu", shift=5.0)
    uncond = generator.unconditioned_context
    arg_c = {"context": context, "seq_len": seq_len, "aligned_emb": None, "ar_vision_input": states.float(),
             "visual_emb": visual_emb, "ref_images": None, "special_token_dict": generator.special_tokens,
             "classifier_free_ratio": 0.0, "unconditioned_context": uncond, "condition_mode": "full"}
    arg_null = {**arg_c, "context": [uncond["uncond_context"] for _ in context],
                "ar_vision_input": uncond["uncond_ar_vision"]}
    calls: list = []
    wan_forward = model.wan_model.forward

    def recording_forward(x, t, context, seq_len, **kwargs):
        out = wan_forward(x, t=t, context=context, seq_len=seq_len, **kwargs)
        calls.append((context[0].clone(), out[0].clone()))
        return out

    model.wan_model.forward = recording_forward
    latents = [noise]
    guide_scale = 3.0
    refs["timesteps"] = scheduler.timesteps.clone().to(torch.int64)
    with torch.no_grad():
        for t in scheduler.timesteps:
            timestep = torch.stack([t])
            cond = model(latents, t=timestep, **arg_c)[0]
            null = model(latents, t=timestep, **arg_null)[0]
            noise_pred = cond + guide_scale * (cond - null)
            latents = [scheduler.step(noise_pred.unsqueeze(0), t, latents[0].unsqueeze(0), return_dict=False)[0]
                       .squeeze(0)]
    refs["context_cond"], refs["dit_cond_step0"] = calls[0]
    refs["context_uncond"], refs["dit_uncond_step0"] = calls[1]
    refs["latents"] = latents[0][None]  # normalised
    with torch.no_grad():
        decoded = vae.decode(latents)[0]  # [3, T, H, W], clamped to [-1, 1]
    refs["decoded"] = decoded
    wan_utils.cache_video(tensor=decoded[None], save_file=str(tmp / "edited.mp4"), fps=8, nrow=1, normalize=True,
                          value_range=(-1, 1))
    refs["output_uint8"] = torch.from_numpy(np.stack(captured_video))  # [T, H, W, 3], the release's pixels

    # 6. the critic's forward: our prompt and frame choice, the official pixels, splice and forward
    from revise_core.vlm import load_vlm

    our_vlm = load_vlm(checkpoint, dtype=torch.float32, device="cpu")
    critic = SelfCritic(our_vlm)
    critic_source = refs["vae_input_uint8"].float() / 255
    critic_edited = refs["output_uint8"].float() / 255
    messages = critic._messages(parity.INSTRUCTION, ALL_QUESTION)
    videos = [our_vlm.prepare_frames(v, critic.config.num_frames) for v in (critic_source, critic_edited)]
    critic_ids = our_vlm.build_inputs(messages, videos).token_ids
    from PIL import Image

    images = [Image.fromarray((frame.permute(1, 2, 0) * 255).round().to(torch.uint8).numpy())
              for video in videos for frame in video]
    with cpu_tensors(), torch.no_grad():
        critic_pixels = mm_utils.process_images(images, image_processor, harness.config)
        prepared = harness.prepare_inputs_labels_for_multimodal(critic_ids[None], None, None, None, None, critic_pixels)
        logits = llm(inputs_embeds=prepared[4], attention_mask=prepared[2], position_ids=prepared[1]).logits[0, -1]
    refs["critic_input_ids"] = critic_ids.to(torch.int64)
    refs["critic_logits"] = logits.float()
    notes["critic_question"] = messages[-1]["content"][-1]["text"]
    assert our_vila.IMAGE_TOKEN_INDEX == constants.IMAGE_TOKEN_INDEX
    return refs, notes


def _has_method(root: Path, relative: str, owner: str, method: str) -> bool:
    tree = ast.parse((root / relative).read_text())
    return any(getattr(node, "name", None) == owner and any(getattr(c, "name", None) == method for c in node.body)
               for node in tree.body)


def _load_generator(official: Official):
    """revise_video_generator.py for its special-token and unconditioned-context loaders (plain pickles)."""
    official.stub("nets.third_party.wan.configs", WAN_CONFIGS={}, SIZE_CONFIGS={})
    official.stub("nets.revise.revise_video_unified_gen", ReviseVideoX2XUnified=None)
    return official.load("nets.revise.revise_video_generator", "nets/revise/revise_video_generator.py")


if __name__ == "__main__":
    sys.exit(main())

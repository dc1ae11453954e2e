"""VILA family (the ReViSE release's VLM): Llama-3 LLM + SigLIP vision tower + projector, on stock classes.

The release ships VILA in its own folder format (`revise_ckpt/ar_model/checkpoint`):

    config.json      model_type "llava_llama"; llm_cfg / vision_tower_cfg / mm_projector_cfg (dicts naming
                     the sub-folders below, or paths), mm_vision_select_layer / _feature, image_aspect_ratio
    llm/             a Hugging Face causal LM folder (LlamaForCausalLM) with its tokenizer
    vision_tower/    a SiglipVisionModel folder with preprocessor_config.json
    mm_projector/    config.json (mm_projector_type) + weights with keys layers.<i>.*

It is built here from `AutoModelForCausalLM`, `SiglipVisionModel` and a hand-written projector that keeps
the official key names; no VILA code is imported. It reproduces the official VILA path line by line (tests/test_release_parity.py
compares the two); every quirk copied from it is named
"Official quirk" below and in docs/models.md.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .. import chat_text
from .. import checkpoints as ckpt
from ..chat_text import check_instruction
from ..video import preprocessing_for
from .base import VisionLanguageModel, VLMError, VLMInputs, VLMOutput, message_parts
from .siglip_pixels import RESAMPLE, SiglipPreprocess, preprocess_images

logger = logging.getLogger(__name__)

IMAGE_TOKEN_INDEX = -200  # the id LLaVA/VILA puts where image features are spliced in
IM_START, IM_END = "<im_start>", "<im_end>"
SUB_FOLDERS = ("llm", "vision_tower", "mm_projector")
PROJECTOR_TYPES = ("mlp_downsample", "mlpNx_gelu (e.g. mlp2x_gelu)", "linear", "identity")

# The llama_3 conversation template of the release (llava/conversation.py `llama_3_chat`).
LLAMA3_SYSTEM_HEADER = "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\n"
LLAMA3_SYSTEM = (
    "You are a helpful language and vision assistant. You are able to understand the visual content that the "
    "user provides, and assist the user with a variety of tasks using natural language."
)
LLAMA3_ROLES = {"user": "<|start_header_id|>user<|end_header_id|>\n\n",
                "assistant": "<|start_header_id|>assistant<|end_header_id|>\n\n"}
LLAMA3_SEP, LLAMA3_SEP2 = "<|eot_id|>", "<|end_of_text|>"
# The release's video-edit conditioning (nets/revise/modules/vila_ar_model.py, task "vid_edit").
EDIT_PREFIX = "<video>\n"
EDIT_ANSWER = "[GEN_VID]"
EDIT_FRAMES = 8  # frames the release samples from the source for the VLM


# --- the folder ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class VilaFolder:
    """What the top-level config.json of a VILA checkpoint says, with its sub-folders resolved."""

    root: Path
    llm: Path
    vision_tower: Path
    mm_projector: Path
    select_layer: int = -2
    select_feature: str = "patch"
    image_aspect_ratio: str = "resize"
    use_im_start_end: bool = False
    raw: dict = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def read(cls, folder: Path) -> VilaFolder:
        config_path = folder / "config.json"
        config = ckpt.read_json(config_path, what="VILA config")
        if not matches(config):
            raise ckpt.UnknownLayoutError(
                f"{config_path}: not a VILA checkpoint config (model_type {config.get('model_type')!r}, architectures "
                f"{config.get('architectures')}); expected model_type 'llava_llama' with llm_cfg, vision_tower_cfg "
                "and mm_projector_cfg"
            )
        if config.get("s2"):
            raise ckpt.CheckpointError(f"{config_path}: the S2 multi-scale vision tower (s2: true) is not supported")
        sub = {name: _sub_folder(folder, config, name) for name in SUB_FOLDERS}
        feature = config.get("mm_vision_select_feature", "patch")
        if feature not in ("patch", "cls_patch"):
            raise ckpt.CheckpointError(
                f"{config_path}: mm_vision_select_feature {feature!r} is not supported; expected 'patch' or 'cls_patch'")
        try:
            select_layer = int(config.get("mm_vision_select_layer", -2))
        except (TypeError, ValueError) as error:
            raise ckpt.CheckpointError(f"{config_path}: mm_vision_select_layer must be an integer ({error})") from error
        return cls(root=folder, select_layer=select_layer, select_feature=feature,
                   image_aspect_ratio=str(config.get("image_aspect_ratio", "resize")),
                   use_im_start_end=bool(config.get("mm_use_im_start_end", False)), raw=config, **sub)


def matches(config: dict) -> bool:
    """A VILA (LLaVA-Llama) checkpoint config: model_type llava_llama or a 'llava' architecture + llm_cfg."""
    architectures = [str(a).lower() for a in config.get("architectures") or []]
    return config.get("model_type") == "llava_llama" or (
        any("llava" in a for a in architectures) and "llm_cfg" in config)


def _sub_folder(root: Path, config: dict, name: str) -> Path:
    # The official get_model_config: a dict (or config) field means <root>/<name>; a string is a path.
    value = config.get(f"{name}_cfg")
    if value is None and name == "vision_tower":
        value = config.get("mm_vision_tower")  # the deprecated field prepare_config_for_eval falls back to
    if value is None:
        raise ckpt.CheckpointError(f"{root / 'config.json'}: no '{name}_cfg' entry; a VILA config names its {name}")
    folder = root / name
    if isinstance(value, str) and not folder.is_dir():
        given = Path(value)
        folder = given if given.is_absolute() else root / given
    if not folder.is_dir():
        raise ckpt.ModelFileNotFoundError(
            f"{root}: the VILA checkpoint has no '{name}/' sub-folder (looked for {folder}); expected the official "
            f"layout with {', '.join(s + '/' for s in SUB_FOLDERS)} next to config.json"
        )
    return folder


# --- the modules ---------------------------------------------------------------------------------

class DownSampleBlock(nn.Module):
    """VILA's 2x2 token merge, reproduced exactly (no parameters).

    Official order: the N = s*s tokens form a row-major s x s grid, zero-padded at the bottom row and the
    right column up to an even side; each output token concatenates the channels of (r, c), (r, c+1),
    (r+1, c), (r+1, c+1), and the output tokens are in column-major order (index = col_pair * rows + row_pair)
    because of the official view / permute / view.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, tokens, c = x.shape
        side = int(tokens ** 0.5)
        if side * side != tokens:
            raise VLMError(f"mlp_downsample needs a square token grid, got {tokens} tokens (feature 'patch' drops one "
                           "token of SigLIP's grid; use mm_vision_select_feature 'cls_patch')")
        x = x.reshape(n, side, side, c)
        if side % 2:
            x = F.pad(x, (0, 0, 0, 1, 0, 1))  # one zero column (dim 2) and one zero row (dim 1)
            side += 1
        # The official view / permute / view, kept literally: it defines the channel and token order.
        x = x.reshape(n, side, side // 2, 2 * c).permute(0, 2, 1, 3).reshape(n, side // 2, side // 2, 4 * c)
        return x.reshape(n, -1, 4 * c)


class MultimodalProjector(nn.Module):
    """VILA's mm_projector with the official parameter names (`layers.<i>.*`)."""

    def __init__(self, projector_type: str, vision_dim: int, llm_dim: int) -> None:
        super().__init__()
        self.projector_type = projector_type
        if projector_type == "identity":
            self.layers = nn.Identity()
        elif projector_type == "linear":
            self.layers = nn.Linear(vision_dim, llm_dim)
        elif projector_type == "mlp_downsample":
            self.layers = nn.Sequential(DownSampleBlock(), nn.LayerNorm(vision_dim * 4), nn.Linear(vision_dim * 4, llm_dim),
                                        nn.GELU(), nn.Linear(llm_dim, llm_dim))
        elif match := re.fullmatch(r"mlp(\d+)x_gelu", projector_type):
            modules: list[nn.Module] = [nn.Linear(vision_dim, llm_dim)]
            for _ in range(1, int(match.group(1))):
                modules += [nn.GELU(), nn.Linear(llm_dim, llm_dim)]
            self.layers = nn.Sequential(*modules)
        else:
            raise VLMError(f"unknown projector type {projector_type!r}; supported: {', '.join(PROJECTOR_TYPES)}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class VilaModules(nn.Module):
    """The three parts of VILA in one module, so the VLM freezes, moves and casts as one."""

    def __init__(self, llm: nn.Module, vision_tower: nn.Module, mm_projector: MultimodalProjector, *,
                 select_layer: int = -2, select_feature: str = "patch") -> None:
        super().__init__()
        self.llm, self.vision_tower, self.mm_projector = llm, vision_tower, mm_projector
        self.select_layer, self.select_feature = select_layer, select_feature

    @property
    def config(self):
        return self.llm.config

    def encode_images(self, pixels: torch.Tensor) -> torch.Tensor:
        """Preprocessed images [N, 3, S, S] -> projected features [N, T, H_llm] (official encode_images)."""
        dtype = ckpt.compute_dtype(self.vision_tower)
        states = self.vision_tower(pixels.to(dtype), output_hidden_states=True).hidden_states[self.select_layer]
        if self.select_feature == "patch":
            states = states[:, 1:]  # Official quirk: drops token 0 even though SigLIP has no CLS token.
        return self.mm_projector(states)

    def embed(self, ids: torch.Tensor, pixels: torch.Tensor | None) -> torch.Tensor:
        """Token ids [L] with IMAGE_TOKEN_INDEX markers + images -> input embeddings [L', H] (official splice:
        each marker is replaced by all feature tokens of the next image, in order)."""
        text = self.llm.get_input_embeddings()(ids.clamp(min=0))
        markers = (ids == IMAGE_TOKEN_INDEX).nonzero().flatten().tolist()
        count = 0 if pixels is None else pixels.shape[0]
        if len(markers) != count:
            raise VLMError(f"the prompt has {len(markers)} image positions but {count} images were given")
        if not markers:
            return text
        features = self.encode_images(pixels).to(text.dtype)
        pieces, start = [], 0
        for index, position in enumerate(markers):
            pieces += [text[start:position], features[index]]
            start = position + 1
        pieces.append(text[start:])
        return torch.cat(pieces)


# --- prompts -------------------------------------------------------------------------------------

IMAGE = object()  # marks an image position among the pieces of a prompt


def render_llama3(turns: list[tuple[str, list]], system: str = LLAMA3_SYSTEM) -> list:
    """The release's llama_3 template (Conversation.get_prompt, SeparatorStyle.LLAMA_3) over prompt pieces.

    `turns` are (role, message) with role "user" / "assistant"; a message is a list of pieces: IMAGE markers
    and (text, literal) pairs (chat_text: literal text never becomes control tokens). An empty message
    renders as the bare role header (the generation prompt); the last non-empty message ends with
    `<|end_of_text|>` (sep2), the others with `<|eot_id|>`. The template's own text is not literal.
    """
    pieces: list = [(LLAMA3_SYSTEM_HEADER, False), (system, True), (LLAMA3_SEP, False)]
    for index, (role, message) in enumerate(turns):
        pieces.append((LLAMA3_ROLES[role], False))
        if message:
            pieces += message
            pieces.append((LLAMA3_SEP if index < len(turns) - 1 else LLAMA3_SEP2, False))
    return pieces


def tokenize_with_images(tokenizer, pieces: list) -> list[int]:
    """The release's tokenizer_image_token over (text, literal) pieces and IMAGE markers.

    The text between images is tokenized chunk by chunk with the tokenizer's own special tokens (BOS).
    Official quirk: when the first chunk starts with BOS, that BOS is kept once and the first id of every
    chunk is dropped, so a template that already starts with `<|begin_of_text|>` gets two BOS ids from a
    tokenizer that adds BOS. Images become IMAGE_TOKEN_INDEX. Unlike the official `prompt.split("<image>")`,
    a literal "<image>" in user text stays text: image positions are given as markers, never parsed; and
    control-token strings in literal text stay text (chat_text).
    """
    chunks: list[list] = [[]]
    for piece in pieces:
        if piece is IMAGE:
            chunks.append([])
        else:
            chunks[-1].append(piece)
    encoded = [chat_text.tokenize(tokenizer, chunk or [("", False)], add_special_tokens=True) for chunk in chunks]
    ids: list[int] = []
    offset = 0
    if encoded and encoded[0] and encoded[0][0] == tokenizer.bos_token_id:
        offset = 1
        ids.append(encoded[0][0])
    for index, chunk in enumerate(encoded):
        if index:
            ids.append(IMAGE_TOKEN_INDEX)
        ids.extend(chunk[offset:])
    return ids


# --- the model -----------------------------------------------------------------------------------

@dataclass
class VilaModel(VisionLanguageModel):
    """VILA behind the VLM interface. `condition_on_all_frames` (off by default, as the release) puts all
    EDIT_FRAMES sampled source frames into the conditioning prompt instead of only the first."""

    family = "vila"
    model: VilaModules
    tokenizer: object
    preprocess: SiglipPreprocess
    use_im_start_end: bool = False
    condition_on_all_frames: bool = False
    source: str = ""  # the folder it was loaded from (named in errors)

    @property
    def hidden_size(self) -> int:
        return int(self.model.llm.config.hidden_size)

    def checkpointable_modules(self) -> list[nn.Module]:
        return [self.model.llm, self.model.vision_tower]

    def encode_options(self) -> dict:
        return super().encode_options() | {"all_frames": self.condition_on_all_frames}

    def _image(self) -> list:
        return [(IM_START, False), IMAGE, (IM_END, False)] if self.use_im_start_end else [IMAGE]

    def build_inputs(self, messages, videos=(), *, fps=16.0, add_generation_prompt=True, assistant_prefix="",
                     preprocessing=None):
        """Chat -> llama_3 prompt; every frame of a video placeholder is one image followed by a newline
        (VILA's own rendering of a video), the system message replaces the template's."""
        system, turns, images, used = LLAMA3_SYSTEM, [], [], 0
        for position, message in enumerate(messages):
            role = message.get("role")
            if role == "system":
                if position:
                    raise VLMError("a system message must come first")
                system = "".join(part["text"] for part in message_parts(message) if part["type"] == "text")
                continue
            if role not in LLAMA3_ROLES:
                raise VLMError(f"unknown chat role {role!r}; expected system, user or assistant")
            pieces: list = []
            for part in message_parts(message):
                if part["type"] == "text":
                    pieces.append((part["text"], True))
                    continue
                if used >= len(videos):
                    raise VLMError(f"the chat has more video placeholders than the {len(videos)} videos given")
                frames = videos[used]
                used += 1
                for frame in frames:
                    pieces += self._image() + [("\n", False)]
                    images.append(frame)
            turns.append((role, pieces))
        if used != len(videos):
            raise VLMError(f"the chat has {used} video placeholders but {len(videos)} videos were given")
        if add_generation_prompt:
            turns.append(("assistant", []))
        pieces = render_llama3(turns, system)
        if assistant_prefix:
            pieces.append((assistant_prefix, True))
        return self._inputs(pieces, images, preprocessing=preprocessing)

    def _inputs(self, pieces: list, images: list[torch.Tensor], *, drop_pad_positions: bool = False,
                preprocessing: str | None = None) -> VLMInputs:
        ids = torch.tensor(tokenize_with_images(self.tokenizer, pieces), dtype=torch.long)
        if drop_pad_positions:
            # Official quirk (general_emb): attention_mask = ids != pad (or eos when there is no pad), and the
            # splice deletes masked positions, so a template token equal to the pad id disappears.
            pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.tokenizer.eos_token_id
            ids = ids[ids != pad]
        pixels = None
        if images:
            same_size = all(image.shape == images[0].shape for image in images)
            groups = [torch.stack(images)] if same_size else [image[None] for image in images]
            # one path for every image of the prompt: the source beside an edit that carries a gradient takes it too
            mode = preprocessing or preprocessing_for(*images)
            pixels = torch.cat([preprocess_images(group, self.preprocess, preprocessing=mode) for group in groups])
        device = self.device
        return VLMInputs({"input_ids": ids.to(device), "pixels": None if pixels is None else pixels.to(device)},
                         0, ids)

    def embed(self, inputs: VLMInputs) -> torch.Tensor:
        embeds = self.model.embed(inputs.kwargs["input_ids"], inputs.kwargs["pixels"])
        limit = getattr(self.model.llm.config, "tokenizer_model_max_length", None)
        if limit is not None and embeds.shape[0] > int(limit):
            # The release truncates the spliced sequence to the LLM's tokenizer_model_max_length.
            logger.warning("VILA input of %d tokens truncated to tokenizer_model_max_length %d", embeds.shape[0], limit)
            embeds = embeds[: int(limit)]
        return embeds

    def forward(self, inputs, *, last=1, hidden_states=False):
        embeds = self.embed(inputs)
        positions = torch.arange(embeds.shape[0], device=embeds.device)[None]
        output = self.model.llm(inputs_embeds=embeds[None], attention_mask=torch.ones_like(positions),
                                position_ids=positions, output_hidden_states=hidden_states, logits_to_keep=last,
                                use_cache=False)  # one pass, nothing to cache (and checkpointing refuses a cache)
        states = output.hidden_states[-1][0] if hidden_states else None
        return VLMOutput(output.logits[0, -last:], states)

    def generate_from(self, inputs, *, max_new_tokens):
        embeds = self.embed(inputs)
        # The release stops at the template separator <|eot_id|> as well as at the LLM's end token.
        stop = [i for i in (self.tokenizer.eos_token_id, self.tokenizer.convert_tokens_to_ids(LLAMA3_SEP))
                if i is not None and i != self.tokenizer.unk_token_id]
        output = self.model.llm.generate(
            inputs_embeds=embeds[None], attention_mask=torch.ones(1, embeds.shape[0], dtype=torch.long,
                                                                   device=embeds.device),
            max_new_tokens=max_new_tokens, do_sample=False, eos_token_id=stop,
            pad_token_id=self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else stop[0],
        )
        return output[0]  # with inputs_embeds only, generate returns the new tokens alone

    def conditioning_inputs(self, frames: torch.Tensor, instruction: str) -> VLMInputs:
        """The release's video-edit prompt (VilaARVideoModel.general_emb, task v2v), exactly.

        Official quirks reproduced: EDIT_FRAMES frames are sampled at linspace(0, T-2, 8) but the prompt holds
        one `<image>`, so only the first (frame 0) reaches the LLM; the llama_3 template with its system
        message, the user turn "<image>\\n<video>\\n" + instruction and the teacher-forced answer
        "[GEN_VID]<|end_of_text|>"; the double BOS of tokenize_with_images; positions equal to the pad id
        deleted. `condition_on_all_frames` puts all sampled frames in the prompt instead.
        """
        check_instruction(instruction)
        video = self._edit_frames(frames)
        if not self.condition_on_all_frames:
            video = video[:1]
        images = []
        for _ in video:
            images += self._image() + [("\n", False)]
        turns = [("user", images + [(EDIT_PREFIX, False), (instruction, True)]), ("assistant", [(EDIT_ANSWER, False)])]
        return self._inputs(render_llama3(turns), list(video), drop_pad_positions=True)

    def encode(self, frames, instruction, *, num_frames=8, fps=16.0):
        """u = hidden_states[-1] over every token of the conditioning prompt (nothing dropped), as the release.

        `num_frames` and `fps` are not used: the release always samples EDIT_FRAMES frames (see
        `conditioning_inputs`)."""
        inputs = self.conditioning_inputs(frames, instruction)
        return self.forward(inputs, hidden_states=True).hidden_states

    @staticmethod
    def _edit_frames(frames: torch.Tensor) -> torch.Tensor:
        # load_video: np.linspace(0, len - 2, 8, dtype=int) (truncation), RGB frames at native size.
        if frames.ndim != 4 or frames.shape[-1] != 3:
            raise VLMError(f"expected frames [T, H, W, 3], got shape {tuple(frames.shape)}")
        last = max(frames.shape[0] - 2, 0)
        index = torch.linspace(0, last, EDIT_FRAMES, dtype=torch.float64).floor().long()
        return frames[index.to(frames.device)].permute(0, 3, 1, 2)


# --- loading and saving --------------------------------------------------------------------------

def load(folder: Path, *, dtype: torch.dtype, device: torch.device | str) -> VilaModel:
    """Load a VILA checkpoint folder in the official format; every weight must be covered by its files."""
    layout = VilaFolder.read(folder)
    llm, tokenizer = _load_llm(layout.llm, dtype)
    tower = _load_vision_tower(layout.vision_tower, dtype)
    vision_dim, llm_dim = int(tower.config.hidden_size), int(llm.config.hidden_size)
    projector = load_projector(layout.mm_projector, vision_dim, llm_dim, dtype)
    preprocess = SiglipPreprocess.from_dict(
        ckpt.read_json(layout.vision_tower / "preprocessor_config.json", what="SigLIP preprocessor config"),
        image_aspect_ratio=layout.image_aspect_ratio, source=layout.vision_tower / "preprocessor_config.json")
    if layout.use_im_start_end:
        unknown = [t for t in (IM_START, IM_END) if tokenizer.convert_tokens_to_ids(t) in (None, tokenizer.unk_token_id)]
        if unknown:
            raise ckpt.CheckpointError(f"{layout.root / 'config.json'}: mm_use_im_start_end is set but the tokenizer in "
                                       f"{layout.llm} has no {unknown} tokens")
    modules = VilaModules(llm, tower, projector, select_layer=layout.select_layer, select_feature=layout.select_feature)
    modules.to(device).eval().requires_grad_(False)
    return VilaModel(model=modules, tokenizer=tokenizer, preprocess=preprocess, use_im_start_end=layout.use_im_start_end,
                     source=str(folder))


def _load_llm(folder: Path, dtype: torch.dtype):
    from transformers import AutoModelForCausalLM

    from ..text import load_tokenizer

    model = _strict_from_pretrained(AutoModelForCausalLM, folder, dtype, what="VILA LLM")
    tokenizer_dir = folder if _has_tokenizer(folder) else folder / "llm"  # the release's fallback
    if not _has_tokenizer(tokenizer_dir):
        raise ckpt.ModelFileNotFoundError(f"{folder}: no tokenizer (tokenizer_config.json) in the VILA llm/ folder")
    return model, load_tokenizer(tokenizer_dir, what="VILA tokenizer")


def _has_tokenizer(folder: Path) -> bool:
    return (folder / "tokenizer_config.json").is_file()


def _load_vision_tower(folder: Path, dtype: torch.dtype) -> nn.Module:
    from transformers import SiglipVisionModel

    config = ckpt.read_json(folder / "config.json", what="VILA vision tower config")
    architecture = (config.get("architectures") or [config.get("model_type", "")])[0]
    if "siglip" not in str(architecture).lower():
        raise ckpt.CheckpointError(f"{folder / 'config.json'}: vision tower '{architecture}' is not supported; the "
                                   "VILA family here takes a SigLIP tower")
    return _strict_from_pretrained(SiglipVisionModel, folder, dtype, what="VILA vision tower")


def _strict_from_pretrained(cls, folder: Path, dtype: torch.dtype, *, what: str) -> nn.Module:
    import pickle

    try:
        model, info = cls.from_pretrained(str(folder), dtype=dtype, local_files_only=True, output_loading_info=True)
    except pickle.UnpicklingError as error:
        # torch's message is a page long; its line naming the refused global is the useful part.
        lines = [line.strip() for line in str(error).splitlines() if "GLOBAL" in line] or [str(error).splitlines()[0]]
        raise ckpt.CheckpointError(
            f"{folder}: refused to unpickle the {what} weights: the file holds more than tensors ({lines[0]}). Only "
            "plain weight files are read (never unpickled); convert it to safetensors.") from error
    except (OSError, ValueError, RuntimeError) as error:
        raise ckpt.CorruptCheckpointError(f"{folder}: the {what} weights are missing or unreadable ({error})") from error
    missing, mismatched = sorted(info.get("missing_keys", [])), info.get("mismatched_keys", [])
    if missing or mismatched:
        raise ckpt.UnknownLayoutError(f"{folder}: the {what} weights do not fit its config: {len(missing)} missing "
                                      f"{missing[:8]}, {len(mismatched)} wrong shape {list(mismatched)[:8]}")
    return model


PROJECTOR_WEIGHTS = ("model.safetensors", "pytorch_model.bin")


def load_projector(folder: Path, vision_dim: int, llm_dim: int, dtype: torch.dtype) -> MultimodalProjector:
    config = ckpt.read_json(folder / "config.json", what="VILA projector config")
    projector_type = config.get("mm_projector_type")
    try:
        MultimodalProjector(str(projector_type), 1, 1)  # validates the type before any weight is read
    except VLMError as error:
        raise ckpt.CheckpointError(f"{folder / 'config.json'}: {error}") from error
    files = [folder / name for name in PROJECTOR_WEIGHTS if (folder / name).is_file()]
    if not files:
        raise ckpt.ModelFileNotFoundError(f"{folder}: no projector weights; expected one of {list(PROJECTOR_WEIGHTS)}")
    state = ckpt.read_state_dict(files[0])
    return ckpt.load_into(lambda: MultimodalProjector(projector_type, vision_dim, llm_dim), state.tensors,
                          path=files[0], component="VILA projector", layout=projector_type, dtype=dtype)


def build_empty(config: dict) -> VilaModules:
    """VILA from a top-level config whose llm_cfg / vision_tower_cfg are full config dicts, on the meta
    device (no memory): for parameter counts and cost models of real sizes."""
    from accelerate import init_empty_weights
    from transformers import AutoConfig, AutoModelForCausalLM, SiglipVisionConfig, SiglipVisionModel

    llm_cfg = dict(config["llm_cfg"])
    llm_config = AutoConfig.for_model(llm_cfg.pop("model_type"), **llm_cfg)
    tower_cfg = {k: v for k, v in config["vision_tower_cfg"].items() if k not in ("model_type", "architectures")}
    tower_config = SiglipVisionConfig(**tower_cfg)
    with init_empty_weights():
        llm = AutoModelForCausalLM.from_config(llm_config)
        tower = SiglipVisionModel(tower_config)
        projector = MultimodalProjector(config["mm_projector_cfg"]["mm_projector_type"], tower_config.hidden_size,
                                        llm_config.hidden_size)
    return VilaModules(llm, tower, projector, select_layer=int(config.get("mm_vision_select_layer", -2)),
                       select_feature=config.get("mm_vision_select_feature", "patch"))


def save(vlm: VilaModel, folder: str | Path, *, select_layer: int = -2, select_feature: str = "cls_patch",
         extra_config: dict | None = None) -> Path:
    """Write `vlm` as a VILA checkpoint folder in the official layout (what `load` reads)."""
    folder = Path(folder)
    modules = vlm.model
    modules.llm.save_pretrained(str(folder / "llm"), safe_serialization=True)
    vlm.tokenizer.save_pretrained(str(folder / "llm"))
    modules.vision_tower.save_pretrained(str(folder / "vision_tower"), safe_serialization=True)
    p = vlm.preprocess
    (folder / "vision_tower" / "preprocessor_config.json").write_text(_json({
        "image_processor_type": "SiglipImageProcessor", "processor_class": "SiglipProcessor",
        "do_resize": p.do_resize, "size": {"height": p.height, "width": p.width},
        "resample": {v: k for k, v in RESAMPLE.items()}[p.resample], "do_rescale": p.do_rescale,
        "rescale_factor": p.rescale_factor, "do_normalize": p.do_normalize, "image_mean": list(p.image_mean),
        "image_std": list(p.image_std)}))
    projector_config = {"model_type": "v2l_projector", "architectures": ["MultimodalProjector"],
                        "mm_projector_type": modules.mm_projector.projector_type}
    (folder / "mm_projector").mkdir(parents=True, exist_ok=True)
    (folder / "mm_projector" / "config.json").write_text(_json(projector_config))
    ckpt.save_safetensors(modules.mm_projector.state_dict(), folder / "mm_projector" / "model.safetensors",
                          format_name="vila.mm_projector")
    top = {
        "architectures": ["LlavaLlamaModel"], "model_type": "llava_llama",
        "llm_cfg": modules.llm.config.to_dict(), "vision_tower_cfg": modules.vision_tower.config.to_dict(),
        "mm_projector_cfg": projector_config, "mm_vision_select_layer": select_layer,
        "mm_vision_select_feature": select_feature, "image_aspect_ratio": p.image_aspect_ratio,
        "mm_use_im_start_end": vlm.use_im_start_end, "mm_use_im_patch_token": False,
        "num_video_frames": EDIT_FRAMES, "hidden_size": vlm.hidden_size,
        "mm_hidden_size": int(modules.vision_tower.config.hidden_size),
    } | (extra_config or {})
    (folder / "config.json").write_text(_json(top))
    return folder


def _json(data: dict) -> str:
    import json

    return json.dumps(data, indent=2, sort_keys=True, default=str) + "\n"

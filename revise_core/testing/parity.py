"""The tiny ReViSE release folder of the parity test (tests/test_release_parity.py), written identically on
every machine and with every library version, plus its source frames.

The official code fixes several sizes (VisionHead and DM_Adapter: 8 heads, 4 + 4 layers, a feed-forward 4x
wide), so this folder follows them, scaled down. Its weights are drawn per tensor name from numpy's frozen
`RandomState` stream (not from the libraries' initialisers, which change between versions), its tokenizers
have fixed vocabularies, its Wan config.json is written as the official `WanModel.save_pretrained` writes it,
and its source video is integer arithmetic. `tests/parity/make_revise_reference.py` runs the official code on
this folder and stores the reference tensors the test compares with.
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..connector import VisionHeadConnector, VisionHeadConnectorConfig
from ..connector.revise import TransformerShape
from ..vlm import vila
from . import (
    LATENT_CHANNELS,
    TEXT_DIM,
    VILA_CHECKPOINT,
    VLM_HIDDEN,
    tiny_dit,
    tiny_release_text_encoder,
    tiny_vae,
    tiny_vila,
    write_release_connector,
    write_release_wan_folder,
)

SEED = 20261206
SOURCE_FRAMES, SOURCE_SIZE = 18, (45, 100)  # the release skips frame 0 for the VAE and reads 17 frames from frame 1
CLIP_SIZE = (32, 64)  # (height, width): 5 latent frames of 4 x 8, the visual adapter's 4 x 4 patches fit
STEPS = 4
INSTRUCTION = "make the car red"
VISION_HEAD_DIM = 16  # 1152 in the release: 8 heads of 2 here


def parity_connector_config() -> VisionHeadConnectorConfig:
    """The release's connector with the official head count, layer counts and feed-forward widths, narrower."""
    return VisionHeadConnectorConfig(
        vision_head=TransformerShape(in_dim=VLM_HIDDEN, dim=VISION_HEAD_DIM, queries=4, encoder_layers=4,
                                     decoder_layers=4, ffn_dim=4 * VISION_HEAD_DIM),
        dm_adapter=TransformerShape(in_dim=VISION_HEAD_DIM, dim=TEXT_DIM, queries=8, encoder_layers=4,
                                    decoder_layers=4, ffn_dim=4 * TEXT_DIM),
        latent_channels=LATENT_CHANNELS, adapter_hidden_dim=64, adapter_patch_size=(1, 4, 4),
        boundary_lengths={"img_st": 2, "img_ed": 2, "ipl_st": 1, "ipl_ed": 1, "prp_st": 3, "prp_ed": 3},
        null_text_len=5, null_vlm_len=7,
    )


def fill_by_name(module: nn.Module, seed: int = SEED) -> nn.Module:
    """Overwrite every floating tensor of the state dict with values drawn from numpy's RandomState (whose
    stream numpy keeps frozen) seeded by the tensor's name: matrices N(0, 1 / fan_in), scales (1-D weights and
    the VAE's per-channel gammas) 1 + N(0, 0.01), everything else N(0, 0.01)."""
    with torch.no_grad():
        for name, tensor in module.state_dict().items():
            if not tensor.is_floating_point() or not tensor.numel():
                continue
            stream = np.random.RandomState((seed + zlib.crc32(name.encode())) % 2**32)
            values = stream.standard_normal(tuple(tensor.shape))
            per_channel = tensor.ndim == 1 or tensor.numel() == tensor.shape[0]
            if per_channel and name.endswith(("weight", "gamma")):
                values = 1.0 + 0.1 * values
            elif per_channel or tensor.ndim < 2:
                values = 0.1 * values
            else:
                values = values / math.sqrt(math.prod(tensor.shape[1:]))
            tensor.copy_(torch.from_numpy(values.astype(np.float32)).reshape(tensor.shape))
    return module


@dataclass
class ParityModels:
    dit: nn.Module
    vae: nn.Module
    text: object  # TextEncoder
    vila: vila.VilaModel
    connector: VisionHeadConnector


def parity_models() -> ParityModels:
    text = tiny_release_text_encoder(fixed_tokenizer=True)
    vlm = tiny_vila(fixed_tokenizer=True)
    fill_by_name(text.model)
    fill_by_name(vlm.model)
    return ParityModels(dit=fill_by_name(tiny_dit()), vae=fill_by_name(tiny_vae()), text=text, vila=vlm,
                        connector=fill_by_name(VisionHeadConnector(parity_connector_config())).eval())


def write_parity_release(folder: str | Path) -> Path:
    """A complete `revise_ckpt/` folder in the release's own layout and formats; returns it."""
    from .. import wan_keys

    folder = Path(folder)
    models = parity_models()
    original = wan_keys.dit_diffusers_to_original(models.dit.state_dict())
    write_release_connector(folder, models.connector, original)
    write_release_wan_folder(folder / "wan" / "wanxiang1_3b", models.dit, models.vae, models.text,
                             config_style="official")
    vila.save(models.vila, folder / Path(VILA_CHECKPOINT).relative_to("revise_ckpt"))
    return folder


def parity_source_frames() -> torch.Tensor:
    """The source video, uint8 [SOURCE_FRAMES, 45, 100, 3]: a gradient, a square moving right and a fixed
    pixel texture, from integer arithmetic alone."""
    height, width = SOURCE_SIZE
    rows, cols = np.meshgrid(np.arange(height), np.arange(width), indexing="ij")
    texture = (rows * 7919 + cols * 104729) % 61
    frames = np.empty((SOURCE_FRAMES, height, width, 3), dtype=np.uint8)
    for t in range(SOURCE_FRAMES):
        red = (40 + rows * 3 + texture) % 256
        green = (60 + cols * 2 + t * 5) % 256
        blue = (200 - rows - cols // 2 + texture // 2) % 256
        frame = np.stack([red, green, blue], axis=-1)
        left = 5 + 4 * t
        frame[12:30, left:left + 18] = (230, 40 + 3 * t, 30)
        frames[t] = frame
    return torch.from_numpy(frames)

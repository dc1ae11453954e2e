"""The DiT's attention backend as one setting, scoped to our own DiT calls (diffusers' attention dispatcher).

Backends (BACKENDS): "native" is torch's scaled_dot_product_attention, what every parity figure uses and the
default; "math" its reference kernel; "flex" torch's flex_attention (slow unless compiled); "flash", "sage" and
"xformers" need their packages (flash-attn, sageattention, xformers), on CUDA. "auto" picks, on CUDA, the first
installed of AUTO_ORDER whose output on a probe stays within AUTO_TOLERANCE of native, and logs its choice; on
a CPU it is native.

Only the Wan DiT follows the setting: the VLM and umT5 are transformers models with their own attention
implementation (sdpa). The choice is scoped: `attention_scope` wraps diffusers' `attention_backend` context
manager, which restores the process-wide default when the block ends, so no other diffusers model in a ComfyUI
process is switched (`set_attention_backend` would change it for good).
"""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import Iterator

import torch

logger = logging.getLogger(__name__)

BACKENDS = ("auto", "native", "math", "flex", "flash", "sage", "xformers")
# our names -> diffusers' AttentionBackendName values
DIFFUSERS_NAMES = {"native": "native", "math": "_native_math", "flex": "flex", "flash": "flash", "sage": "sage",
                   "xformers": "xformers"}
NO_BACKWARD = ("sage",)  # SageAttention's kernels are forward-only: training needs a backward pass
AUTO_ORDER = ("flash", "sage", "xformers", "native")  # fastest first on a CUDA GPU (flex only pays when compiled)
# Largest |out - native| / max |native| on the probe that `auto` accepts: sage quantises Q and K to int8 (about
# 1e-2 on random inputs); a larger difference means a broken or mismatched kernel.
AUTO_TOLERANCE = 3e-2


class AttentionBackendError(ValueError):
    """An attention backend that cannot run here: unknown, not installed, or without the backward pass needed."""


def check_backend(name: str, *, training: bool = False) -> None:
    """Raise AttentionBackendError, naming the package to install, unless `name` can run (with a backward pass
    when `training`)."""
    if name not in BACKENDS:
        raise AttentionBackendError(f"attention backend must be one of {BACKENDS}, got '{name}'")
    if training and name in NO_BACKWARD:
        raise AttentionBackendError(f"the '{name}' attention backend has no backward pass, which training needs; use "
                                    "native or flash (flex on CUDA)")
    if name == "auto":
        return
    from diffusers.models.attention_dispatch import AttentionBackendName, _check_attention_backend_requirements

    try:
        _check_attention_backend_requirements(AttentionBackendName(DIFFUSERS_NAMES[name]))
    except RuntimeError as error:  # diffusers names the package and the version it needs
        raise AttentionBackendError(f"attention backend '{name}': {error}") from None


def resolve_backend(name: str, device: torch.device | str, *, training: bool = False,
                    candidates: tuple[str, ...] | None = None) -> str:
    """The backend `name` stands for on `device`: itself once checked, or for "auto" the first usable of
    `candidates` (default AUTO_ORDER on CUDA, native elsewhere) that agrees with native on a probe."""
    check_backend(name, training=training)
    device = torch.device(device)
    if training and name == "flex" and device.type == "cpu":
        raise AttentionBackendError("the 'flex' attention backend has no backward pass on a CPU (torch's "
                                    "flex_attention), which training needs; use native")
    if name != "auto":
        return name
    if candidates is None:
        candidates = AUTO_ORDER if device.type == "cuda" else ("native",)
    for candidate in candidates:
        if training and candidate in NO_BACKWARD:
            continue
        try:
            check_backend(candidate)
        except AttentionBackendError:
            continue
        difference = _probe(candidate, str(device))
        if difference <= AUTO_TOLERANCE:
            logger.info("attention backend auto: %s on %s (probe difference from native %.1e)", candidate, device,
                        difference)
            return candidate
        logger.warning("attention backend %s differs from native by %.1e on the probe (more than %.0e): not used",
                       candidate, difference, AUTO_TOLERANCE)
    return "native"


@functools.lru_cache(maxsize=None)
def _probe(name: str, device: str) -> float:
    """Relative max difference from native of `name` on one attention call of the DiT's head shape (Wan2.1-1.3B:
    12 heads of 128), in bf16 on CUDA and fp32 elsewhere. Cached per process: the kernels do not change."""
    from diffusers.models.attention_dispatch import dispatch_attention_fn

    dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
    generator = torch.Generator("cpu").manual_seed(0)
    q, k, v = (torch.randn(1, 256, 12, 128, generator=generator).to(device=device, dtype=dtype) for _ in range(3))
    with torch.no_grad():
        with attention_scope("native"):
            reference = dispatch_attention_fn(q, k, v).float()
        with attention_scope(name):
            out = dispatch_attention_fn(q, k, v).float()
    return float((out - reference).abs().max() / reference.abs().max())


@contextlib.contextmanager
def attention_scope(name: str) -> Iterator[None]:
    """Run the block's diffusers attention on backend `name` (resolved: not "auto"); the previous default comes
    back when the block ends."""
    from diffusers.models.attention_dispatch import attention_backend

    if name not in DIFFUSERS_NAMES:  # "auto" or unknown: resolve_backend first (it checks the requirements, which
        # diffusers' context manager checks again on entry)
        raise AttentionBackendError(f"resolve '{name}' first (resolve_backend): 'auto' depends on the device")
    with attention_backend(DIFFUSERS_NAMES[name]):
        yield

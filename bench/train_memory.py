"""Training-memory features the cost model simulates where the real library cannot run on fake tensors.

- LoRA (`add_lora`): PEFT replaces each adapted nn.Linear with a wrapper whose parameters it swaps in place,
  which fake tensors refuse. The same computation is added with a forward hook instead: fp32 `lora_A`
  [rank, in] and `lora_B` [out, rank] registered on the adapted layer itself, and PEFT's vanilla LoRA forward
  (`result + lora_B(lora_A(x.to(fp32))) * alpha / rank`, result cast back to its dtype). Parameters,
  gradients, AdamW states and the activations LoRA keeps for backward are therefore all measured.
- 8-bit AdamW (`AdamW8bitModel`): torchao.optim.AdamW8bit compiles its step (torch.compile), which fake
  tensors cannot run. This optimizer holds exactly torchao's state (per state: uint8 codes like the
  parameter, one fp32 scale per 256-element block and a 256-entry fp32 qmap, for tensors of >= 4096
  elements divisible by 256; plain fp32 otherwise) and runs torchao's single_param_adam in eager fp32, one
  tensor at a time (an upper bound on the compiled kernel's temporaries).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

BLOCK = 256  # torchao AdamW8bit block_size
MIN_QUANTISED = 4096  # torchao follows bitsandbytes: only tensors with >= 4096 values get 8-bit states


def lora_target(name: str, module: nn.Module, targets: list[str]) -> bool:
    """PEFT's rule for a list of target names: the module's name is one of them or ends with '.' + one."""
    return isinstance(module, nn.Linear) and any(name == t or name.endswith("." + t) for t in targets)


def _lora_hook(module: nn.Linear, args: tuple, output: torch.Tensor) -> torch.Tensor:
    x = args[0]
    x = x if x.dtype == module.lora_A.dtype else x.to(module.lora_A.dtype)  # PEFT's _cast_input_dtype
    result = output + F.linear(F.linear(x, module.lora_A), module.lora_B) * module.lora_scaling
    return result.to(output.dtype)


def add_lora(model: nn.Module, *, rank: int, alpha: float, targets: list[str]) -> list[str]:
    """Add fp32 LoRA parameters (trainable) to every targeted nn.Linear of `model`; returns their names."""
    names = []
    for name, module in list(model.named_modules()):
        if not lora_target(name, module, targets):
            continue
        out_features, in_features = module.weight.shape
        device = module.weight.device
        module.lora_A = nn.Parameter(torch.zeros(rank, in_features, dtype=torch.float32, device=device))
        module.lora_B = nn.Parameter(torch.zeros(out_features, rank, dtype=torch.float32, device=device))
        module.lora_scaling = alpha / rank
        module.register_forward_hook(_lora_hook)
        names += [f"{name}.lora_A", f"{name}.lora_B"]
    if not names:
        raise ValueError(f"no nn.Linear matches the LoRA targets {targets}")
    return names


def lora_parameter_count(model: nn.Module, *, rank: int, targets: list[str]) -> int:
    """rank x (in + out) per targeted layer (no fake run)."""
    return sum(rank * (m.weight.shape[0] + m.weight.shape[1]) for n, m in model.named_modules()
               if lora_target(n, m, targets))


def adamw8bit_state_bytes(numel: int) -> int:
    """Bytes of torchao AdamW8bit's two states for one parameter of `numel` values (the step counter aside)."""
    if numel >= MIN_QUANTISED and numel % BLOCK == 0:
        return 2 * (numel + 4 * (numel // BLOCK) + 4 * 256)
    return 2 * 4 * numel


class AdamW8bitModel(torch.optim.Optimizer):
    """torchao.optim.AdamW8bit's state layout and update, in eager mode (see the module docstring)."""

    def __init__(self, params, lr: float = 1e-3, betas=(0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 1e-2) -> None:
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay))

    @staticmethod
    def _new_state(p: torch.Tensor) -> dict:
        if p.numel() >= MIN_QUANTISED and p.numel() % BLOCK == 0:
            return dict(codes=torch.zeros(p.shape, dtype=torch.uint8, device=p.device),
                        scale=torch.zeros(p.numel() // BLOCK, device=p.device),
                        qmap=torch.zeros(256, device=p.device))
        return dict(value=torch.zeros_like(p, dtype=torch.float32))

    @staticmethod
    def _read(state: dict, name: str) -> torch.Tensor:
        if f"{name}.value" in state:
            return state[f"{name}.value"]
        codes, scale = state[f"{name}.codes"], state[f"{name}.scale"]
        return (state[f"{name}.qmap"][codes.long()].view(-1, BLOCK) * scale[:, None]).view(codes.shape)

    @staticmethod
    def _write(state: dict, name: str, value: torch.Tensor) -> None:
        if f"{name}.value" in state:
            state[f"{name}.value"].copy_(value)
            return
        blocks = value.view(-1, BLOCK)
        scale = blocks.abs().amax(dim=1)
        state[f"{name}.scale"].copy_(scale)
        state[f"{name}.codes"].copy_((blocks / scale[:, None].clamp(min=1e-12)).view(value.shape).to(torch.uint8))

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            lr, (beta1, beta2), eps, decay = group["lr"], group["betas"], group["eps"], group["weight_decay"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state["step"] = torch.tensor(0.0)
                    for name in ("exp_avg", "exp_avg_sq"):
                        for key, value in self._new_state(p).items():
                            state[f"{name}.{key}"] = value
                state["step"] += 1
                step = 1  # the fake step counter has no value; bias corrections of the first step
                p32, g32 = p.float(), p.grad.float()
                p32 = p32 - lr * decay * p32
                exp_avg = self._read(state, "exp_avg").lerp(g32, 1 - beta1)
                exp_avg_sq = self._read(state, "exp_avg_sq").lerp(g32.square(), 1 - beta2)
                self._write(state, "exp_avg", exp_avg)
                self._write(state, "exp_avg_sq", exp_avg_sq)
                denom = exp_avg_sq.sqrt() / math.sqrt(1 - beta2**step) + eps
                p.copy_(p32 - (lr / (1 - beta1**step)) * exp_avg / denom)

"""torchao's int8 weight-only storage, reproduced on any tensors (fake ones included) for the cost model: the
layout and the matmul of its weight-only path, without torchao's tensor subclass (which fake tensors do not
take)."""

from __future__ import annotations

import types

import torch
from torch import nn


def _int8_linear_forward(self: nn.Linear, x: torch.Tensor) -> torch.Tensor:
    # torchao Int8Tensor, weight-only per-row path (quantize_/workflows/int8/int8_tensor.py)
    m = torch.mm(x.reshape(-1, x.shape[-1]), self.weight.t().to(x.dtype))
    y = (m * self.weight_scale.to(m.dtype).flatten()).reshape(*x.shape[:-1], self.weight.shape[0])
    if self.bias is not None:
        y = y + self.bias
    return y.to(x.dtype)


def store_int8(model: nn.Module) -> int:
    """Every nn.Linear as torchao's Int8WeightOnlyConfig stores it: int8 [out, in] + fp32 scale [out, 1] + int8
    zero point [out, 1] (the bias stays). Returns how many layers changed."""
    count = 0
    for module in model.modules():
        if isinstance(module, nn.Linear) and module.weight.dtype != torch.int8:
            out_features = module.weight.shape[0]
            device = module.weight.device
            module._parameters["weight"] = nn.Parameter(torch.empty(module.weight.shape, dtype=torch.int8,
                                                                    device=device), requires_grad=False)
            module.register_buffer("weight_scale", torch.empty(out_features, 1, dtype=torch.float32, device=device))
            module.register_buffer("weight_zero_point", torch.empty(out_features, 1, dtype=torch.int8, device=device))
            module.forward = types.MethodType(_int8_linear_forward, module)
            count += 1
    return count


def int8_bytes(model: nn.Module) -> int:
    """Bytes of `model` (as built, unquantised) once its nn.Linear weights are int8 (exact, no fake run)."""
    total = 0
    for tensor in [*model.parameters(), *model.buffers()]:
        total += tensor.numel() * tensor.element_size()
    for module in model.modules():
        if isinstance(module, nn.Linear):
            out_features, in_features = module.weight.shape
            total += out_features * (in_features + 4 + 1) - module.weight.numel() * module.weight.element_size()
    return total

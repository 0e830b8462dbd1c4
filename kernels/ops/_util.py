"""Small checks shared by op specs."""

from __future__ import annotations

import torch

from kernels.errors import KernelInputError


def require_tensor(op: str, name: str, value) -> torch.Tensor:
    if not isinstance(value, torch.Tensor):
        raise KernelInputError(f"{op}: {name} must be a torch.Tensor, got {type(value).__name__}")
    return value


def require_same_dtype(op: str, **tensors: torch.Tensor) -> None:
    (first, t0), *rest = tensors.items()
    for name, t in rest:
        if t.dtype != t0.dtype:
            raise KernelInputError(f"{op}: {first} is {t0.dtype} but {name} is {t.dtype}; they must match")


def require_floating(op: str, name: str, t: torch.Tensor) -> None:
    if not t.is_floating_point():
        raise KernelInputError(f"{op}: {name} must be a floating-point tensor, got {t.dtype}")

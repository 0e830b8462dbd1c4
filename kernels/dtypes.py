"""The dtypes kernelwatch speaks of, with their short names (used in test ids, the CLI and the lock)."""

from __future__ import annotations

import torch

_SHORT = {
    torch.float64: "f64",
    torch.float32: "f32",
    torch.float16: "f16",
    torch.bfloat16: "bf16",
    torch.float8_e4m3fn: "e4m3",
    torch.float8_e5m2: "e5m2",
    torch.int8: "i8",
    torch.int32: "i32",
    torch.int64: "i64",
}
_BY_SHORT = {v: k for k, v in _SHORT.items()}

FLOATS = (torch.float32, torch.float16, torch.bfloat16)
FP8 = (torch.float8_e4m3fn, torch.float8_e5m2)


def short(dtype: torch.dtype) -> str:
    """`torch.bfloat16` -> `"bf16"`."""
    try:
        return _SHORT[dtype]
    except KeyError:
        raise ValueError(f"kernelwatch has no short name for dtype {dtype}") from None


def parse(name: str | torch.dtype) -> torch.dtype:
    """`"bf16"`, `"bfloat16"` or `torch.bfloat16` -> `torch.bfloat16`."""
    if isinstance(name, torch.dtype):
        return name
    if name in _BY_SHORT:
        return _BY_SHORT[name]
    candidate = getattr(torch, name, None)
    if isinstance(candidate, torch.dtype):
        return candidate
    raise ValueError(f"unknown dtype {name!r}; known: {', '.join(sorted(_BY_SHORT))}")


def is_float(dtype: torch.dtype) -> bool:
    return dtype.is_floating_point

"""Allocation for variants and entry points, with a poisoning mode for the correctness suite.

Variants allocate their outputs and scratch buffers through ``empty``. Under ``poisoned()``, every such buffer
is filled with NaN (or the dtype's max for integers), so a kernel that leaves an element unwritten fails the
comparison instead of passing on whatever memory happened to hold.
"""

from __future__ import annotations

import contextlib
import gc
import threading

import torch

_state = threading.local()


def poisoning() -> bool:
    return getattr(_state, "poison", False)


@contextlib.contextmanager
def poisoned():
    previous = poisoning()
    _state.poison = True
    try:
        yield
    finally:
        _state.poison = previous


def poison_(t: torch.Tensor) -> torch.Tensor:
    if t.is_floating_point():
        if t.dtype in (torch.float8_e4m3fn, torch.float8_e5m2):
            # e4m3fn has a NaN encoding (0x7f/0xff); fill through the byte view.
            return t.view(torch.uint8).fill_(0x7F).view(t.dtype) if t.numel() else t
        return t.fill_(float("nan"))
    return t.fill_(torch.iinfo(t.dtype).max)


def empty(shape, *, dtype: torch.dtype, device) -> torch.Tensor:
    t = torch.empty(shape, dtype=dtype, device=device)
    return poison_(t) if poisoning() else t


def empty_like(t: torch.Tensor, dtype: torch.dtype | None = None) -> torch.Tensor:
    return empty(t.shape, dtype=dtype or t.dtype, device=t.device)


def release(device: torch.device | str) -> None:
    """Free what no longer has a reference and, on a GPU, hand the caching allocator's unused blocks back to the
    driver, so that a process sharing the GPU with others (test workers) or moving on to a larger problem (the asv
    suite's next case) does not keep the peak of what it ran before."""
    gc.collect()
    if torch.device(device).type == "cuda":
        torch.cuda.empty_cache()


HOLD_BYTES = 1 << 30
"""What a test worker may keep cached on its GPU between tests (tests/conftest.py): 16 workers on one GPU then hold
16 GiB at most between their tests."""


def release_above(device: torch.device | str, limit: int) -> None:
    """``release(device)`` when the caching allocator holds more than ``limit`` bytes on it, else nothing: a garbage
    collection costs about 0.1 s in a process that has imported torch, Triton and every variant."""
    if torch.device(device).type == "cuda" and torch.cuda.memory_reserved(device) > limit:
        release(device)

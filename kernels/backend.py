"""Where kernels run: Triton's interpreter on the CPU, or a CUDA GPU."""

from __future__ import annotations

import functools
import os

import torch


def interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def name() -> str:
    """``"interpreter"`` or ``"cuda"``; raises where neither is available."""
    if interpreting():
        return "interpreter"
    if torch.cuda.is_available():
        return "cuda"
    raise RuntimeError(
        "no backend for Triton kernels: there is no CUDA device and TRITON_INTERPRET is not set. "
        "Run `nox -s tests-cpu` (which sets TRITON_INTERPRET=1) or use a GPU machine."
    )


def device() -> torch.device:
    return torch.device("cpu") if name() == "interpreter" else torch.device("cuda")


@functools.cache
def capability(index: int = 0) -> tuple[int, int] | None:
    """Compute capability of the CUDA device, or None under the interpreter."""
    if name() != "cuda":
        return None
    return torch.cuda.get_device_capability(index)


def describe() -> str:
    import triton

    if name() == "interpreter":
        where = "Triton interpreter on CPU"
    else:
        major, minor = capability()
        where = f"{torch.cuda.get_device_name()} (sm_{major}{minor})"
    return f"{where}; torch {torch.__version__}; triton {triton.__version__}"


# Errors after which CUDA refuses every further call in the process (the context is lost), as torch and Triton
# word them.
FATAL_CUDA_ERRORS = (
    "an illegal memory access was encountered",
    "unspecified launch failure",
    "misaligned address",
    "device-side assert triggered",
    "an illegal instruction was encountered",
)


def is_fatal_cuda_error(exc: BaseException) -> bool:
    """True for an error that leaves this process's CUDA context unusable, so every later test in it would fail."""
    text = str(exc).lower()
    return any(marker in text for marker in FATAL_CUDA_ERRORS)

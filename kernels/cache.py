"""Where a run keeps what the next one can reuse: Triton's compiled kernels, its autotune results and the ledger.

A whole ``tests-gpu`` run spends most of its time compiling. Compiled kernels are only valid for the Triton that
built them and the GPU and CUDA they were built for, so the cache lives in one directory per (Triton version, GPU
model, CUDA version), under ``$KERNELWATCH_CACHE_DIR`` or ``<repo>/.cache/kernelwatch/``:

    <base>/triton-3.6.0_cuda-13.0_NVIDIA-H200/
        triton/        TRITON_CACHE_DIR: compiled kernels, and autotune results (TRITON_CACHE_AUTOTUNING=1)
        ledger.json    what passed, under which kernels (tests/ledger.py, for ``--changed``)

Nothing in it can hide a change: Triton keys each compiled kernel and each autotune result on the kernel's
source, and the ledger keys each entry on the variants' fingerprints (docs/gpu-runs.md).

``python -m kernels.cache`` prints ``directory=...`` and ``name=...`` lines (for GitHub's ``$GITHUB_OUTPUT``),
and ``--env`` the variables ``nox -s tests-gpu`` sets.
"""

from __future__ import annotations

import functools
import os
import platform
import re
from pathlib import Path

from kernels import gpus

DIR_ENV = "KERNELWATCH_CACHE_DIR"
LEDGER = "ledger.json"
ROOT = Path(__file__).resolve().parents[1]


@functools.cache
def environment() -> dict[str, str]:
    """What a cached result depends on besides the code: the backend, Triton, torch, and on a GPU its model, driver
    and CUDA. numpy and Python count too: the interpreter's behaviour follows numpy (kernels/triton_matrix.py pins
    it for that reason), and the references run in torch on the host."""
    import numpy
    import torch
    import triton

    from kernels import backend

    env = {
        "backend": backend.name(),
        "triton": triton.__version__,
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "python": platform.python_version(),
    }
    if env["backend"] == "cuda":
        env |= {"gpu": torch.cuda.get_device_name(), "cuda": torch.version.cuda or "unknown", "driver": _driver()}
    return env


def _driver() -> str:
    """The NVIDIA driver version, without a CUDA call: /proc on Linux, else nvidia-smi; "unknown" if neither says."""
    try:
        found = re.search(r"Kernel Module\s+(\S+)", Path("/proc/driver/nvidia/version").read_text())
        if found:
            return found.group(1)
    except OSError:
        pass
    found = gpus.nvidia_smi("driver_version")
    return found[0] if found else "unknown"


def name() -> str:
    """The directory's own name: the Triton version, and the CUDA version and GPU model (or "interpreter")."""
    env = environment()
    parts = [f"triton-{env['triton']}"]
    parts += [f"cuda-{env['cuda']}", env["gpu"]] if env["backend"] == "cuda" else [env["backend"]]
    return "_".join(re.sub(r"[^A-Za-z0-9.+-]+", "-", part).strip("-") for part in parts)


def base() -> Path:
    return Path(os.environ.get(DIR_ENV) or ROOT / ".cache" / "kernelwatch")


def directory() -> Path:
    """This machine's cache directory (not created here: Triton and the ledger create what they write)."""
    return base() / name()


def run_env() -> dict[str, str]:
    """The environment a test run gets (noxfile's tests-gpu) to use ``directory()``. TRITON_CACHE_DIR holds
    compiled kernels and, with TRITON_CACHE_AUTOTUNING=1, each autotuner's timings (Triton 3.6 to 3.9 read both; the
    autotuner reads TRITON_CACHE_AUTOTUNING when it is created, at import, so it is set before the run starts).
    KERNELWATCH_LEDGER is the ledger's default path, named so that pytest's controller need not ask CUDA for the
    GPU model (under xdist it would hold a CUDA context of its own for the whole run)."""
    where = directory()
    return {
        "TRITON_CACHE_DIR": str(where / "triton"),
        "TRITON_CACHE_AUTOTUNING": "1",
        "KERNELWATCH_LEDGER": str(where / LEDGER),
    }


def main(argv: list[str]) -> int:
    """``directory=`` and ``name=`` lines, or with ``--env`` the variables of ``run_env()``: ``NAME=value`` lines."""
    lines = run_env() if argv == ["--env"] else {"directory": directory(), "name": name()}
    print("\n".join(f"{k}={v}" for k, v in lines.items()))
    return 0


if __name__ == "__main__":
    import sys

    raise SystemExit(main(sys.argv[1:]))

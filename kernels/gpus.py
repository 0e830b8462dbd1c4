"""Spreading work over every visible GPU: which GPUs there are, pinning a process to one, and splitting ops.

Test workers and benchmark runs each see exactly one GPU through ``CUDA_VISIBLE_DEVICES``, set before CUDA is
initialized in that process, so that code which says ``"cuda"`` lands on the worker's own device. Benchmarks are
split by op, one process per GPU, so no two timed processes ever share a GPU.
No torch import here: the nox sessions and the pytest controller call it before any CUDA context exists.
"""

from __future__ import annotations

import os
import subprocess

GPUS_ENV = "KERNELWATCH_GPUS"
"""Comma-separated GPU ids the run may use (default: every GPU ``nvidia-smi`` lists, within CUDA_VISIBLE_DEVICES)."""


def visible() -> list[str]:
    """The GPU ids this run may use, as strings for CUDA_VISIBLE_DEVICES. Empty without a GPU."""
    chosen = os.environ.get(GPUS_ENV)
    if chosen:
        return [g.strip() for g in chosen.split(",") if g.strip()]
    already = os.environ.get("CUDA_VISIBLE_DEVICES")
    if already is not None:
        return [g.strip() for g in already.split(",") if g.strip() and g.strip() != "-1"]
    return nvidia_smi("index") or []


def nvidia_smi(field: str) -> list[str] | None:
    """One field of ``nvidia-smi --query-gpu``, a value per GPU; None where nvidia-smi is missing or fails."""
    try:
        out = subprocess.run(
            ["nvidia-smi", f"--query-gpu={field}", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return [line.strip() for line in out.splitlines() if line.strip()]


def worker_gpu(worker: str, gpus: list[str]) -> str:
    """The GPU of pytest-xdist worker ``gwN``: workers are dealt round-robin over the GPUs."""
    if not worker.startswith("gw") or not worker[2:].isdigit():
        raise ValueError(f"not a pytest-xdist worker id: {worker!r}")
    return gpus[int(worker[2:]) % len(gpus)]


def pin_this_worker() -> str | None:
    """In a pytest-xdist worker of a multi-GPU run, restrict this process to its GPU. Must run before CUDA starts."""
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    gpus = [g for g in os.environ.get(GPUS_ENV, "").split(",") if g]
    if not worker or len(gpus) < 2:
        return None
    gpu = worker_gpu(worker, gpus)
    os.environ["CUDA_VISIBLE_DEVICES"] = gpu
    return gpu


def split(weights: dict[str, int], parts: int) -> list[list[str]]:
    """Deal the keys of ``weights`` (ops, weighted by their number of benchmark cases) into ``parts`` groups of
    nearly equal total weight: the heaviest first, each to the lightest group so far. Deterministic."""
    groups: list[list[str]] = [[] for _ in range(parts)]
    totals = [0] * parts
    for key in sorted(weights, key=lambda k: (-weights[k], k)):
        i = totals.index(min(totals))
        groups[i].append(key)
        totals[i] += weights[key]
    return [sorted(g) for g in groups if g]

"""Timing on the GPU: CUDA events through ``triton.testing.do_bench`` (L2 flushed between runs), all samples kept.

Performance is measured here and by the benchmarks, never in unit tests.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable

import torch


def samples_ms(fn: Callable[[], object], *, warmup_ms: float = 25, rep_ms: float = 100) -> list[float]:
    """Every timed run of ``fn`` in milliseconds (CUDA events; do_bench clears L2 before each run)."""
    import triton.testing

    return list(triton.testing.do_bench(fn, warmup=warmup_ms, rep=rep_ms, return_mode="all"))


def samples_n(fn: Callable[[], object], n: int, *, warmup_ms: float = 25) -> list[float]:
    """About ``n`` timed runs of ``fn`` in milliseconds. do_bench sizes its repeat count from a time budget and
    counts its L2 flush in the estimate; this sizes the budget from the kernel's own time, and widens it once if
    the flush left fewer than ``n`` runs."""
    fn()
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(5):
        fn()
    end.record()
    torch.cuda.synchronize()
    budget = max(start.elapsed_time(end) / 5, 1e-3) * n
    runs = samples_ms(fn, warmup_ms=warmup_ms, rep_ms=budget)
    if len(runs) < n:
        runs = samples_ms(fn, warmup_ms=0, rep_ms=budget * n / max(len(runs), 1))
    return runs


def median_ms(fn: Callable[[], object], **kwargs) -> float:
    return statistics.median(samples_ms(fn, **kwargs))


def copy_bandwidth_gbs(nbytes: int = 1 << 30, timer: Callable[..., list[float]] = samples_ms) -> float:
    """Device-to-device copy bandwidth in GB/s, counting bytes read plus bytes written: the ceiling for a
    memory-bound kernel, measured in the same run as what it is compared with."""
    src = torch.empty(nbytes // 2, dtype=torch.uint8, device="cuda").random_()
    dst = torch.empty_like(src)
    ms = statistics.median(timer(lambda: dst.copy_(src)))
    return 2 * src.numel() / (ms * 1e-3) / 1e9

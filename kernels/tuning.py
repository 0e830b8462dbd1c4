"""``triton.autotune`` for variants, working under Triton's interpreter too.

Under TRITON_INTERPRET=1 Triton's autotuner cannot time configs: its default benchmarker asks for the active GPU
driver and raises "0 active drivers" (https://github.com/triton-lang/triton/issues/6150), and CPU timings of
interpreted kernels would say nothing about a GPU anyway. There, each surviving config runs once, so a config that
cannot run still fails the suite, and all report the same time, so the first surviving config is chosen, the same
one on every run. On a GPU this is plain ``triton.autotune``.
"""

from __future__ import annotations

import triton

from kernels import backend


def _run_once_untimed(kernel_call, quantiles):
    kernel_call()
    return [0.0] * len(quantiles)


def autotune(configs, key, **kwargs):
    """``triton.autotune(configs, key, **kwargs)``, with an untimed benchmarker under the interpreter."""
    if backend.interpreting():
        kwargs.setdefault("do_bench", _run_once_untimed)
    return triton.autotune(configs=configs, key=key, **kwargs)

"""``triton.autotune`` for variants, working under Triton's interpreter too.

Under TRITON_INTERPRET=1 Triton's autotuner cannot time configs: its default benchmarker asks for the active GPU
driver and raises "0 active drivers" (https://github.com/triton-lang/triton/issues/6150), and CPU timings of
interpreted kernels would say nothing about a GPU anyway. There, each surviving config runs once, so a config that
cannot run still fails the suite, and all report the same time, so the first surviving config is chosen, the same
one on every run. On a GPU this is plain ``triton.autotune``.
"""

from __future__ import annotations

import sys

import triton

from kernels import backend


def _run_once_untimed(kernel_call, quantiles):
    kernel_call()
    return [0.0] * len(quantiles)


TUNERS: list = []
"""(module that made it, autotuner) for every autotuner made here, so the benchmarks can record which config
each one chose."""


def autotune(configs, key, **kwargs):
    """``triton.autotune(configs, key, **kwargs)``, with an untimed benchmarker under the interpreter."""
    if backend.interpreting():
        kwargs.setdefault("do_bench", _run_once_untimed)
    decorate = triton.autotune(configs=configs, key=key, **kwargs)
    # The module that asked for the tuner (a variant file), which may tune a kernel defined in another one.
    owner = sys._getframe(1).f_globals.get("__name__", "")

    def remember(fn):
        tuner = decorate(fn)
        TUNERS.append((owner, tuner))
        return tuner

    return remember


def chosen_configs(module: str) -> dict[str, str]:
    """The config each autotuner defined in ``module`` chose on its latest call, by kernel name: what the
    benchmarks record beside a variant's time. Empty for a variant that is not autotuned."""
    chosen = {}
    for owner, tuner in TUNERS:
        if owner == module and getattr(tuner, "best_config", None) is not None:
            kernel = getattr(tuner, "base_fn", None) or tuner.fn
            chosen[kernel.__name__] = str(tuner.best_config)
    return chosen

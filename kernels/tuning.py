"""``triton.autotune`` for variants, working under Triton's interpreter too.

Under TRITON_INTERPRET=1 Triton's autotuner cannot time configs: its default benchmarker asks for the active GPU
driver and raises "0 active drivers" (https://github.com/triton-lang/triton/issues/6150), and CPU timings of
interpreted kernels would say nothing about a GPU anyway. There, each surviving config runs once, so a config that
cannot run still fails the suite, and all report the same time, so the first surviving config is chosen, the same
one on every run. On a GPU this is ``triton.autotune`` with Triton's own benchmarker (``triton.testing.do_bench``,
25 ms of warm-up and 100 ms of timed runs for each config and key), except where QUICK_ENV is 1.

QUICK_ENV=1 is what the test suite sets on a GPU (tests/conftest.py): correctness tests need a working config, not
the fastest, and the full timing of every config at every test shape is what held a GPU run of tests-gpu back:
each autotuned test asks for fresh keys, and the workers that share a GPU queue their timing runs on it. The quick
benchmarker still runs and times each config (a few runs each), so a config that fails still fails the test, and
tests/test_autotune_configs.py runs every config on its own. The benchmarks never set it.
"""

from __future__ import annotations

import os
import sys

import triton

from kernels import backend


def _run_once_untimed(kernel_call, quantiles):
    kernel_call()
    return [0.0] * len(quantiles)


QUICK_ENV = "KERNELWATCH_QUICK_AUTOTUNE"


def _timed(kernel_call, quantiles):
    """Triton's default benchmarker, or with QUICK_ENV=1 one that spends about 1 ms of warm-up and 5 ms of timed runs
    a config (``do_bench`` still times at least one run of each)."""
    import triton.testing

    if os.environ.get(QUICK_ENV) == "1":
        return triton.testing.do_bench(kernel_call, warmup=1, rep=5, quantiles=quantiles)
    return triton.testing.do_bench(kernel_call, quantiles=quantiles)


TUNERS: list = []
"""(module that made it, autotuner) for every autotuner made here, so the benchmarks can record which config
each one chose."""


def autotune(configs, key, **kwargs):
    """``triton.autotune(configs, key, **kwargs)``, with an untimed benchmarker under the interpreter."""
    kwargs.setdefault("do_bench", _run_once_untimed if backend.interpreting() else _timed)
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

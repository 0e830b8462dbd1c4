"""``triton.autotune`` for variants, working under Triton's interpreter too, with one pinned config under test.

Three ways an autotuned variant picks its config:

- **Benchmarks and public calls** (the default): ``triton.autotune`` with Triton's own benchmarker
  (``triton.testing.do_bench``: 25 ms of warm-up and 100 ms of timed runs for each config and key).
- **Correctness tests** (PIN_ENV=1, set by tests/conftest.py on every backend): no tuning at all. Each tuner runs
  one pinned config: the smallest (``_size``) that survives the variant's own pruning and fits this GPU. A
  correctness test needs a config that works, not the fastest, and compiling and timing every config at every test
  shape was most of what a cold tests-gpu spent. tests/test_autotune_configs.py runs every config on its own, so
  pinning drops no coverage. The choice is the same in every worker and every run, so a failure reproduces.
- **Under Triton's interpreter without PIN_ENV** (the asv smoke run): the autotuner cannot time configs, since its
  default benchmarker asks for the active GPU driver and raises "0 active drivers"
  (https://github.com/triton-lang/triton/issues/6150), and CPU timings of interpreted kernels would say nothing
  about a GPU anyway. Each surviving config runs once, untimed, and the first is chosen.
"""

from __future__ import annotations

import os
import sys

import triton
from triton.runtime.errors import OutOfResources

from kernels import backend

PIN_ENV = "KERNELWATCH_PIN_CONFIG"
"""Set to 1 to run one pinned config per tuner instead of tuning (the test suite sets it)."""


def pinning() -> bool:
    return os.environ.get(PIN_ENV) == "1"


def _run_once_untimed(kernel_call, quantiles):
    kernel_call()
    return [0.0] * len(quantiles)


def _benchmark(kernel_call, quantiles):
    """Triton's own benchmarker; a single untimed run when pinned (a Triton that times even a lone surviving config
    then spends nothing on it)."""
    import triton.testing

    if pinning():
        return _run_once_untimed(kernel_call, quantiles)
    return triton.testing.do_bench(kernel_call, quantiles=quantiles)


def _unfit_errors() -> tuple[type[Exception], ...]:
    """What Triton's autotuner takes to mean "this config does not fit this GPU" and drops the config for."""
    from triton.compiler.errors import CompileTimeAssertionFailure

    try:
        from triton.runtime.errors import PTXASError
    except ImportError:  # older Triton: no such error
        return (OutOfResources, CompileTimeAssertionFailure)
    return (OutOfResources, CompileTimeAssertionFailure, PTXASError)


TUNERS: list = []
"""(module that made it, autotuner) for every autotuner made here, so the benchmarks can record which config
each one chose."""


def autotune(configs, key, **kwargs):
    """``triton.autotune(configs, key, **kwargs)``, with an untimed benchmarker under the interpreter, and one pinned
    config when PIN_ENV is 1."""
    kwargs.setdefault("do_bench", _run_once_untimed if backend.interpreting() else _benchmark)
    decorate = triton.autotune(configs=configs, key=key, **kwargs)
    # The module that asked for the tuner (a variant file), which may tune a kernel defined in another one.
    owner = sys._getframe(1).f_globals.get("__name__", "")

    def remember(fn):
        tuner = decorate(fn)
        _pin_when_asked(tuner)
        TUNERS.append((owner, tuner))
        return tuner

    return remember


def _dtypes(args) -> tuple[str, ...]:
    """The dtypes of a call's tensor arguments: whether a config fits depends on them (an fp32 tile takes twice the
    shared memory of a bf16 one), as Triton's own tuning key does."""
    return tuple(str(a.dtype) for a in args if hasattr(a, "dtype"))


def _size(config) -> tuple[int, int, int]:
    """How much code a config asks the compiler for: the elements of its tiles (the product of its BLOCK_* sizes),
    then its pipeline stages and warps. The smallest compiles fastest (the first conv2d config, 128 x 128 x 64 tiles
    in 4 stages, took 21 s to compile for float32 on an H200) and is the likeliest to fit any GPU."""
    elements = 1
    for name, value in config.kwargs.items():
        if name.startswith("BLOCK") and isinstance(value, int):
            elements *= value
    return elements, config.num_stages or 0, config.num_warps or 0


def _pin_when_asked(tuner) -> None:
    """Make ``tuner`` keep a single config when PIN_ENV is 1, the smallest: Triton's autotuner runs a lone surviving
    config without timing it. The variant's own pruning still applies first. A pinned config that does not fit (too much
    shared memory for this GPU and dtype) is set aside and the next one pinned, which is what tuning would have
    done, so a test never fails for a config that tuning would drop.

    Installed on the tuner object, not passed as ``prune_configs_by``: the variant's fingerprint records its own
    pruning hook, and pinning is how the tests run a kernel, not part of the kernel."""
    prune, run = tuner.prune_configs, tuner.run
    unfit: set[tuple] = set()

    def prune_configs(kwargs):
        kept = prune(kwargs)
        if not pinning():
            return kept
        dtypes = _dtypes((tuner.nargs or {}).values())  # the autotuner sets nargs, the positional args, before pruning
        fitting = [c for c in kept if (str(c), dtypes) not in unfit]
        return [min(fitting, key=_size)] if fitting else kept[:1]

    def run_pinned(*args, **kwargs):
        while True:
            try:
                return run(*args, **kwargs)
            except _unfit_errors():
                chosen = tuner.best_config
                dtypes = _dtypes(args)
                if not pinning() or chosen is None or (str(chosen), dtypes) in unfit:
                    raise
                unfit.add((str(chosen), dtypes))
                # Forget the keys that chose it, so the next call prunes again and pins the next config.
                for k in [k for k, c in tuner.cache.items() if c is chosen]:
                    del tuner.cache[k]

    tuner.prune_configs, tuner.run = prune_configs, run_pinned


def chosen_configs(module: str) -> dict[str, str]:
    """The config each autotuner defined in ``module`` chose on its latest call, by kernel name: what the
    benchmarks record beside a variant's time. Empty for a variant that is not autotuned."""
    chosen = {}
    for owner, tuner in TUNERS:
        if owner == module and getattr(tuner, "best_config", None) is not None:
            kernel = getattr(tuner, "base_fn", None) or tuner.fn
            chosen[kernel.__name__] = str(tuner.best_config)
    return chosen

"""Every config of every autotuned kernel, one at a time, through its variant's own entry point, forward and
backward. Parametrized from the registry and kernels.tuning.TUNERS: a new autotuned variant is covered with no edit.

The generated cases reach only the config the autotuner picks, and on a GPU the fastest config can change from run
to run. A config that is wrong only on some operand layouts then fails only some runs. That happened with
lora_linear's fused dx on an H100: four of six configs returned wrong results or faulted under Triton 3.6, while
the autotuner mostly picked a good one. Here each config is pinned (the tuner is given that one config, so it runs
it without timing), and the variant runs at its op's CPU shapes until the pinned kernel has launched.

Under the interpreter this also runs the GPU configs, with their GPU tiles, through the bounds check.
"""

from __future__ import annotations

import contextlib
import os

import pytest
import torch
from triton.runtime.errors import OutOfResources

from kernels import cases, registry, tuning
from tests import test_correctness

registry.discover()


def _kernel_name(tuner) -> str:
    return (getattr(tuner, "base_fn", None) or tuner.fn).__name__


def _config_id(config) -> str:
    # BLOCK_M1=64 reads M1_64, not M164.
    names = {k: k.removeprefix("BLOCK_") for k in config.kwargs if k.startswith("BLOCK")}
    blocks = [f"{n}{'_' if n[-1].isdigit() else ''}{config.kwargs[k]}" for k, n in names.items()]
    return "-".join([*blocks, f"w{config.num_warps}", f"s{config.num_stages}"])


def _candidates(variant: registry.Variant) -> list[cases.Case]:
    """The cases to try, in order, until a pinned kernel has run: fp16 (or the variant's first dtype) in each of its
    modes at each of its op's CPU shapes, small on a GPU too. Some kernels run only in some modes (quantize's tile
    kernels: tensor and block scales)."""
    dtype = torch.float16 if torch.float16 in variant.dtypes else variant.dtypes[0]
    return [c for c in cases.cases("interpreter", [variant]) if c.dtype == dtype]


def _pins() -> list:
    """(case, tuner, config) for every config of every tuner that a variant's module made. The case is the
    variant's first candidate; the test moves on from there until the pinned kernel runs."""
    params = []
    for variant in registry.all_variants():
        tuners = [t for owner, t in tuning.TUNERS if owner == variant.module]
        if not tuners:
            continue
        # Every variant has CPU cases (test_registry checks its contract): an IndexError here would be loud.
        first = _candidates(variant)[0]
        for tuner in tuners:
            for i, config in enumerate(tuner.configs):
                name = f"{variant.key}-{_kernel_name(tuner)}-{i}-{_config_id(config)}"
                params.append(pytest.param(first, tuner, config, id=name))
    return params


PINS = _pins()


@contextlib.contextmanager
def _pinned(tuner, config):
    """The tuner with ``config`` alone: Triton's autotuner runs a single config without timing or pruning."""
    configs = tuner.configs
    tuner.configs, tuner.best_config = [config], None
    try:
        yield
    finally:
        tuner.configs = configs


def test_every_tuner_belongs_to_a_variant() -> None:
    # A tuner made in a module that registers no variant would be missed by the test below.
    modules = {v.module for v in registry.all_variants()}
    strays = sorted({owner for owner, _ in tuning.TUNERS} - modules)
    assert not strays, f"autotuners made outside a variant module, so never pinned here: {strays}"
    assert PINS, "no autotuned variant found: the registry or kernels.tuning.TUNERS is empty"


@pytest.mark.parametrize(("case", "tuner", "config"), PINS)
def test_autotune_config(case: cases.Case, tuner, config) -> None:
    tried = _candidates(case.variant)
    for at in tried:
        try:
            with _pinned(tuner, config):
                test_correctness.test_matches_reference(at)
                if at.spec.has_backward and at.variant.backward is not None:
                    test_correctness.test_backward(at)
                ran = tuner.best_config is config
        except OutOfResources as exc:
            pytest.skip(f"{config} does not fit this GPU for {case.dtype} (the autotuner drops it too): {exc}")
        if ran:
            return
    pytest.fail(
        f"{_kernel_name(tuner)} never launched for {case.variant.key} in {[c.id for c in tried]}: give {case.op} "
        "a CPU shape (or mode) that reaches it, so its configs are tested"
    )


def test_gpu_runs_of_the_suite_time_configs_briefly_and_benchmarks_in_full(monkeypatch) -> None:
    """The suite sets the quick benchmarker for autotuners (tests/conftest.py); without it, Triton's full one."""
    import triton.testing

    from kernels import tuning

    assert os.environ.get(tuning.QUICK_ENV) == "1"
    seen = []
    monkeypatch.setattr(triton.testing, "do_bench", lambda fn, **kw: seen.append(kw) or [1.0, 1.0, 1.0])
    tuning._timed(lambda: None, (0.5, 0.2, 0.8))
    monkeypatch.delenv(tuning.QUICK_ENV)
    tuning._timed(lambda: None, (0.5, 0.2, 0.8))
    assert seen == [{"warmup": 1, "rep": 5, "quantiles": (0.5, 0.2, 0.8)}, {"quantiles": (0.5, 0.2, 0.8)}]

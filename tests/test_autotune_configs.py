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


def _probe_tuner(monkeypatch, unfit: set[int]):
    """A three-config tuner over a copy kernel that records which configs launched; the configs in ``unfit`` raise
    OutOfResources when launched, as a tile too large for this GPU does."""
    import triton
    import triton.language as tl

    launched = []

    def hook(i):
        def pre_hook(nargs):
            launched.append(i)
            if i in unfit:
                raise OutOfResources(required=1 << 20, limit=1 << 16, name="shared memory")

        return pre_hook

    @triton.jit
    def copy_kernel(src, dst, n, BLOCK: tl.constexpr):
        offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
        tl.store(dst + offs, tl.load(src + offs, mask=offs < n), mask=offs < n)

    configs = [triton.Config({"BLOCK": b}, pre_hook=hook(i)) for i, b in enumerate((64, 16, 32))]
    tuner = tuning.autotune(configs=configs, key=["n"])(copy_kernel)
    tuning.TUNERS.remove(next(t for t in tuning.TUNERS if t[1] is tuner))  # not a variant's: keep it out of PINS
    return tuner, launched


@pytest.mark.parametrize("pin", ["1", "0"])
def test_tests_run_one_pinned_config_and_skip_those_that_do_not_fit(monkeypatch, pin: str) -> None:
    """Under test (PIN_ENV=1, set by tests/conftest.py) a tuner runs its smallest config that fits, and nothing
    else: no other config is compiled or timed. Without it the tuner tries every config."""
    from kernels import backend

    if pin == "0" and not backend.interpreting():
        pytest.skip("unpinned tuning on a GPU times every config for about a second; the benchmarks cover it")
    assert os.environ.get(tuning.PIN_ENV) == "1", "tests/conftest.py pins the tuners for the whole suite"
    monkeypatch.setenv(tuning.PIN_ENV, pin)
    tuner, launched = _probe_tuner(monkeypatch, unfit={1} if pin == "1" else {0})
    src = torch.randn(40, device=backend.device())
    dst = torch.full_like(src, float("nan"))
    tuner[lambda meta: (triton_cdiv(40, meta["BLOCK"]),)](src, dst, 40)
    assert torch.equal(dst, src)
    if pin == "1":
        # Config 1 (BLOCK 16) is the smallest but does not fit, so config 2 (BLOCK 32) is pinned, and config 0 never
        # launches. (Triton 3.6 also runs a lone surviving config once through the benchmarker, untimed when
        # pinned: hence the distinct launches.)
        assert list(dict.fromkeys(launched)) == [1, 2]
        assert tuner.best_config is tuner.configs[2]
        launched.clear()
        tuner[lambda meta: (triton_cdiv(40, meta["BLOCK"]),)](src, dst, 40)
        assert set(launched) == {2}, "the pinned config is kept for later calls"
    else:
        # Every config runs once (config 0 fails and is dropped), then the chosen one.
        assert sorted(set(launched)) == [0, 1, 2]


def triton_cdiv(a: int, b: int) -> int:
    return -(-a // b)

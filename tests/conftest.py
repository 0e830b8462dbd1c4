"""Suite-wide set-up: make sure `kernels` is ours, print where kernels run, apply the known-failure manifest."""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# --shard K/N, KERNELWATCH_JOURNAL: a record that survives a run cut short, and the ledger of what passed with
# --changed to run only what changed since (each module says more).
pytest_plugins = ["tests.shard", "tests.journal", "tests.ledger"]


def _pin_worker_to_its_gpu() -> str | None:
    """In a multi-GPU run each xdist worker sees only its own GPU. CUDA_VISIBLE_DEVICES must be set before anything
    imports the `kernels` package (and torch with it), so kernels/gpus.py is loaded here as a plain file."""
    spec = importlib.util.spec_from_file_location("_kernelwatch_gpus", ROOT / "kernels" / "gpus.py")
    gpus = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gpus)
    return gpus.pin_this_worker()


PINNED_GPU = _pin_worker_to_its_gpu()


def _check_imports() -> None:
    """PyPI has another distribution importable as `kernels`. If it shadows ours, stop loudly."""
    import kernels

    where = Path(getattr(kernels, "__file__", "") or "<namespace>")
    if not getattr(kernels, "__kernelwatch__", False):
        raise pytest.UsageError(
            f"`import kernels` found {where}, which is NOT kernelwatch's kernels package (PyPI has another "
            f"project importable as `kernels`). Uninstall it (`pip uninstall kernels`) or put {ROOT} first on "
            "sys.path. Refusing to run: every result would be about the wrong code."
        )
    if os.environ.get("KERNELWATCH_ALLOW_FOREIGN_TREE") != "1" and ROOT not in where.resolve().parents:
        raise pytest.UsageError(
            f"`import kernels` found kernelwatch at {where}, not this checkout ({ROOT}); a stale install would be "
            "tested instead of your tree. Reinstall with `pip install -e .` or set KERNELWATCH_ALLOW_FOREIGN_TREE=1."
        )


def pytest_configure(config: pytest.Config) -> None:
    _check_imports()
    from kernels import backend, cases

    try:
        backend.name()
    except RuntimeError as exc:
        raise pytest.UsageError(str(exc)) from None
    cases.session_seed()  # fixed here, before xdist workers start, so they all share it
    # Autotuners run one pinned config instead of tuning: tests need a config that works, and each config is tested
    # on its own by tests/test_autotune_configs.py (kernels/tuning.py says why). Inherited by the xdist workers.
    from kernels import tuning

    os.environ.setdefault(tuning.PIN_ENV, "1")
    if config.pluginmanager.hasplugin("xdist"):
        # --dist loadgroup deals the tests that launch the same kernels to one worker (tests/grouping.py).
        from tests import grouping

        config.pluginmanager.register(grouping, "kernelwatch-grouping")


def pytest_report_header(config: pytest.Config) -> list[str]:
    from kernels import backend, cases

    gpus = os.environ.get("KERNELWATCH_GPUS", "")
    spread = [f"kernelwatch: xdist workers dealt over GPUs {gpus}, one GPU per worker"] if "," in gpus else []
    return [
        *spread,
        f"kernelwatch: {backend.describe()}",
        f"kernelwatch: input seed {cases.session_seed()} (reproduce with {cases.SEED_ENV}={cases.session_seed()})",
    ]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    import triton

    from kernels import backend, cases, known_failures

    where = backend.name()
    unmet = known_failures.unmet_interpreter_pins()
    for item in items:
        if unmet and item.get_closest_marker("interpreter_subprocess"):
            item.add_marker(pytest.mark.xfail(strict=True, reason="known failure: " + "; ".join(unmet)))
        case = getattr(item, "callspec", None) and item.callspec.params.get("case")
        if case is None:
            continue
        # The cases were enumerated as supported: what is left is this machine's say. A known breakage is not a
        # skip: the test runs the kernel with the refusal lifted (pytest_runtest_call), as a strict expected failure.
        with known_failures.lifted():
            reason = cases.support(case)
        if reason:
            item.add_marker(pytest.mark.skip(reason=reason))
            continue
        entry = known_failures.lookup(
            op=case.op,
            variant=case.variant.name,
            dtype=case.dtype,
            backend=where,
            test=item.originalname,
            triton=triton.__version__,
        )
        if entry:
            item.add_marker(pytest.mark.xfail(strict=True, reason=entry.describe()))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item):
    """A generated case runs its kernel even where kernels/known_failures.py refuses it at run time: the strict
    expected failure must meet the bug itself, so that it passes, and fails the run, the day upstream fixes it (a
    test that met the refusal would fail forever and never say so). Only the suite lifts it; callers get the
    UnsupportedError (tests/test_known_failures.py)."""
    if getattr(item, "callspec", None) is None or "case" not in item.callspec.params:
        return (yield)
    from kernels import known_failures

    with known_failures.lifted():
        return (yield)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    report = yield
    from kernels import backend

    if call.excinfo is not None and backend.is_fatal_cuda_error(call.excinfo.value):
        # The CUDA context of this process is gone: every later test here would fail too and bury the one that
        # faulted. Name it and end the process. Under xdist the worker is replaced and this test is reported as
        # the one it crashed on; without xdist the run stops here.
        sys.stderr.write(f"\nkernelwatch: fatal CUDA error in {item.nodeid} ({call.when}): {call.excinfo.value}\n")
        sys.stderr.flush()
        os._exit(3)
    return report


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    """Name each failure the moment it happens, not only in the summary: a GPU run cut short by a time limit
    (or killed before pytest can write its summary and junit) still says which tests failed and why. Under xdist
    this runs in the controller, on every worker's reports."""
    # A worker's stderr reaches the terminal too: only the controller (or a run without xdist) speaks.
    if report.failed and "PYTEST_XDIST_WORKER" not in os.environ:
        crash = getattr(report.longrepr, "reprcrash", None)
        lines = (report.longreprtext or "").strip().splitlines()
        why = crash.message if crash is not None else (lines[-1] if lines else "")
        sys.stderr.write(
            f"\nkernelwatch: FAILED {report.nodeid} ({report.when}): {why.splitlines()[0][:300] if why else ''}\n"
        )
        sys.stderr.flush()


@pytest.fixture(autouse=True)
def _bounds_checked_interpreter():
    """Under the interpreter every load, store and atomic must stay inside the launch's tensors (kernels/bounds.py):
    what the interpreter would let through silently is an illegal memory access on a GPU."""
    from kernels import backend

    if backend.name() != "interpreter":
        yield
        return
    from kernels import bounds, tf32

    # And float32 dots round as a GPU's tensor cores round them (kernels/tf32.py), so that a float32 tolerance too
    # tight for tf32 fails here, not only on a GPU.
    with bounds.check(), tf32.emulate():
        yield


@pytest.fixture(autouse=True)
def _gpu_memory_handed_back():
    """On a GPU, a test that leaves its worker holding more than ``memory.HOLD_BYTES`` hands it back to the driver
    when it ends. Workers share a GPU (up to 16 on one); without this each one's caching allocator keeps the peak of
    the largest test it has run (float64 references of [16384, 8192] are 1 GiB each), and together they ran an
    H200's 140 GB out of memory. Only above the limit: the full garbage collection that must come first (tensors in
    reference cycles hold blocks too) took about 0.1 s a test, a third of a warm tests-gpu run's worker time."""
    yield
    from kernels import backend, memory

    if backend.name() == "cuda":
        memory.release_above("cuda", memory.HOLD_BYTES)

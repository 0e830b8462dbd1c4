"""The cache directory and the ledger of what passed can never hide a change: a changed kernel, framework or machine
reruns its tests, and a kernel that now fails fails. Each end-to-end test runs pytest on a copy of the checkout,
on one gelu case and one framework test, so each child run takes a few seconds under the interpreter."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest

from kernels import backend, cases, registry
from tests import ledger
from tests.tree import Tree, copy_checkout

FRAMEWORK_TEST = "tests/test_tolerance.py::test_check_close_takes_atol_plus_rtol_times_the_reference"
# Reads the registry whole (registry.all_variants), so it is keyed on every variant and on variants.lock.
CATALOGUE_TEST = "tests/test_versioning.py::test_lock_has_no_stale_entries"


def _gelu_case() -> str:
    """One small float32 tanh case of gelu's fused variant on this backend, as a node id."""
    found = [
        c
        for c in cases.cases(backend.name(), [registry.get("gelu", "fused")])
        if c.mode == "tanh" and c.dtype.itemsize == 4 and c.dtype.is_floating_point
    ]
    case = min(found, key=lambda c: (math.prod(c.shape) < 1000, math.prod(c.shape)))
    return f"tests/test_correctness.py::test_matches_reference[{case.id}]"


@pytest.fixture
def tree(tmp_path, monkeypatch) -> Tree:
    """A copy of the checkout whose child runs use their own cache directory and ledger."""
    copy = copy_checkout(tmp_path / "repo")
    cache = tmp_path / "cache"
    monkeypatch.setenv("KERNELWATCH_CACHE_DIR", str(cache))
    monkeypatch.setenv("TRITON_CACHE_DIR", str(cache / "triton"))
    monkeypatch.setenv(ledger.ENV, str(cache / "ledger.json"))
    monkeypatch.setenv(ledger.COMMIT_ENV, "c0ffee")
    for name in ("KERNELWATCH_JOURNAL", "KERNELWATCH_JOURNAL_OWNER"):
        monkeypatch.delenv(name, raising=False)
    return copy


def _pytest(tree: Tree, *args: str):
    run = tree.run("-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:xdist", *args)
    return run, run.stdout + run.stderr


def _ledger() -> Path:
    return Path(os.environ[ledger.ENV])


@pytest.mark.slow
def test_a_kernel_edited_to_compute_a_wrong_answer_fails_with_the_same_caches(tree) -> None:
    case = _gelu_case()
    run, out = _pytest(tree, case, "--changed")
    assert run.returncode == 0 and "1 passed" in out, out[-3000:]
    if backend.name() == "cuda":  # on a GPU the kernel was compiled into the given Triton cache
        assert any(Path(os.environ["TRITON_CACHE_DIR"]).rglob("*.json")), "nothing compiled into TRITON_CACHE_DIR"
    # Wrong by a few percent, and neither version= nor the lock is touched.
    tree.edit("variants/gelu/fused.py", "y = x / (1.0 + tl.exp(-2.0 * u))", "y = x / (1.0 + tl.exp(-2.5 * u))")
    run, out = _pytest(tree, case, "--changed")
    assert run.returncode == 1 and "1 failed" in out, out[-3000:]
    assert "rerun: variant gelu.fused changed" in out, out[-3000:]
    assert case not in json.loads(_ledger().read_text())["entries"], "a failed test keeps no entry"


@pytest.mark.slow
def test_changed_skips_what_passed_and_reruns_what_a_change_concerns(tree) -> None:
    tests = [_gelu_case(), FRAMEWORK_TEST, CATALOGUE_TEST]
    run, out = _pytest(tree, *tests, "--changed")
    assert run.returncode == 0 and "3 passed" in out and f"no ledger at {_ledger()}" in out, out[-3000:]
    assert all(e["seconds"] > 0 for e in json.loads(_ledger().read_text())["entries"].values()), "durations kept"

    run, out = _pytest(tree, *tests, "--changed")
    assert run.returncode == 0, out[-3000:]  # not 5, "no tests ran": nothing had to
    assert "NOTHING CHANGED since commit c0ffee" in out and "3 tests skipped" in out, out[-3000:]

    # A new fingerprint (a launch constant), correct and unbumped: the gelu case reruns, and so does the test that
    # read the registry whole; the framework test, which exercised no variant, does not.
    tree.edit("variants/gelu/fused.py", "BLOCK = 4096", "BLOCK = 2048")
    run, out = _pytest(tree, *tests, "--changed")
    assert run.returncode == 0 and "2 passed, 1 deselected" in out, out[-3000:]
    assert "rerun: variant gelu.fused changed" in out and "depends on the whole catalogue" in out, out[-3000:]
    assert "SKIPPED 1 tests unchanged" in out, out[-3000:]

    tree.edit("kernels/dispatch.py", '"""The path', '"""(edited) The path')
    run, out = _pytest(tree, *tests, "--changed")
    assert run.returncode == 0 and "3 passed" in out and "3 rerun: framework changed" in out, out[-3000:]


@pytest.mark.slow
def test_a_ledger_from_another_machine_or_a_corrupt_one_is_not_used(tree) -> None:
    tests = [_gelu_case(), FRAMEWORK_TEST]
    run, out = _pytest(tree, *tests)  # a run without --changed writes the ledger too
    assert run.returncode == 0 and "2 passed" in out, out[-3000:]
    data = json.loads(_ledger().read_text())
    (env,) = data["environments"].values()
    # One entry as if written on another GPU model, the other under another Triton.
    for nodeid, change in zip(tests, [{"gpu": "another GPU"}, {"triton": "0.0.0"}], strict=True):
        key = f"elsewhere-{len(data['environments'])}"
        data["environments"][key] = {**env, **change}
        data["entries"][nodeid]["env"] = key
    _ledger().write_text(json.dumps(data))
    run, out = _pytest(tree, *tests, "--changed")
    assert run.returncode == 0 and "2 passed" in out, out[-3000:]
    assert "2 rerun: written under another environment" in out, out[-3000:]

    _ledger().write_text(_ledger().read_text()[:-40])  # cut short, as by a crash of something other than us
    run, out = _pytest(tree, *tests, "--changed")
    assert run.returncode == 0 and "2 passed" in out and "is corrupt" in out, out[-3000:]
    assert ledger.load(_ledger())[0] is not None, "the full run wrote a whole ledger again"


def test_an_unreadable_ledger_says_why(tmp_path) -> None:
    where = tmp_path / "ledger.json"
    assert ledger.load(where) == (None, f"no ledger at {where}")
    where.write_text('{"format": 1, "entries": ')
    assert "is corrupt" in ledger.load(where)[1]
    where.write_text('{"format": 0, "entries": {}, "environments": {}}')
    assert "has format 0, this kernelwatch reads format 1" in ledger.load(where)[1]
    where.write_text('{"format": 1, "entries": []}')
    assert "is corrupt" in ledger.load(where)[1]


def test_the_ledger_keeps_passes_drops_failures_and_is_replaced_whole(tmp_path) -> None:
    where = tmp_path / "cache" / "ledger.json"
    env = {"backend": "interpreter", "triton": "3.9.0"}
    passed = {"outcome": "passed", "env": env, "variants": {}}
    ledger.write(where, {"a": passed, "b": passed}, "c0ffee")
    ledger.write(where, {"b": None, "c": passed}, "beef")  # b failed this time; a did not run
    data, why = ledger.load(where)
    assert data is not None, why
    assert sorted(data["entries"]) == ["a", "c"] and data["commit"] == "beef"
    assert list(data["environments"].values()) == [env]
    assert [p.name for p in where.parent.iterdir()] == ["ledger.json"], "no temporary file left behind"


def test_the_commit_comes_from_the_environment_first(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv(ledger.COMMIT_ENV, "0123456789abcdef")
    assert ledger.commit(tmp_path) == "0123456789ab"
    monkeypatch.delenv(ledger.COMMIT_ENV)
    monkeypatch.delenv("GITHUB_SHA", raising=False)
    assert ledger.commit(tmp_path) == "unknown commit"  # not a git checkout

"""tests/grouping.py: which tests tests-gpu's ``--dist loadgroup`` deals to one worker."""

from __future__ import annotations

import pytest

pytest.importorskip("xdist", reason="the grouping is an xdist scheduler; without xdist there is nothing to deal")

from kernels import backend, cases, registry
from kernels.dtypes import short
from tests import grouping


def test_a_generated_case_groups_with_its_variant_and_dtype() -> None:
    case = next(c for c in cases.cases(backend.name()) if c.variant.name != "naive")
    ids = [f"tests/test_correctness.py::{t}[{case.id}]" for t in ("test_matches_reference", "test_backward")]
    groups = {grouping.group_of(i) for i in ids}
    assert groups == {f"{case.variant.key}-{short(case.dtype)}"}


def test_an_op_module_test_groups_with_the_variant_it_names() -> None:
    variant = registry.variants_of("cross_entropy")[-1]
    nodeid = f"tests/test_cross_entropy.py::test_something[0.1-mean-{variant.name}]"
    assert grouping.group_of(nodeid) == f"cross_entropy.{variant.name}"


@pytest.mark.parametrize(
    "nodeid",
    [
        "tests/test_docs.py::test_commands_run",
        "tests/test_docs.py::test_page[README.md:nox -s tests-cpu]",
        "tests/test_cross_entropy.py::test_no_rows[sum]",
        "tests/test_correctness.py::test_matches_reference[not-a-case-id]",
    ],
)
def test_any_other_test_is_its_own_group(nodeid: str) -> None:
    assert grouping.group_of(nodeid) is None
    assert grouping.CompileGroupScheduling._split_scope(None, nodeid) == nodeid


def test_loadgroup_uses_the_compile_group_scheduler(pytestconfig) -> None:
    class Config:
        def __init__(self, dist):
            self.dist = dist

        def getvalue(self, name):
            return self.dist

    assert grouping.pytest_xdist_make_scheduler(Config("load"), None) is None
    assert grouping.pytest_xdist_make_scheduler.__module__ == "tests.grouping"
    assert pytestconfig.pluginmanager.hasplugin("kernelwatch-grouping")


def test_the_longest_groups_are_dealt_first_by_the_ledgers_record() -> None:
    queue = {"short": {"a": False, "b": False}, "long": {"c": False}, "unknown": {"d": False, "e": False, "f": False}}
    seconds = {"a": 1.0, "b": 2.0, "c": 100.0, "e": 3.0}
    # The median of the recorded times (3 s) stands for a test the ledger has not timed: "unknown" weighs 9 s.
    assert [name for name, _ in grouping.longest_first(queue, seconds)] == ["long", "unknown", "short"]


def test_the_recorded_seconds_come_from_the_ledger(tmp_path, monkeypatch) -> None:
    from tests import ledger

    where = tmp_path / "ledger.json"
    monkeypatch.setenv(ledger.ENV, str(where))
    assert grouping.recorded_seconds() == {}, "no ledger: xdist's own order"
    ledger.write(
        where, {"t": {"outcome": "passed", "env": {}, "seconds": 2.5}, "u": {"outcome": "passed", "env": {}}}, "c"
    )
    assert grouping.recorded_seconds() == {"t": 2.5}

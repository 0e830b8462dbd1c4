"""``--dist loadgroup`` (what ``nox -s tests-gpu`` runs with): the tests that launch the same kernels go to one worker.

Why: xdist's default scheduler deals neighbouring tests round-robin, one to each worker. The suite lists one
variant's cases side by side (the same kernels at consecutive shapes), so on a cold GPU run every worker compiled the
same kernels at the same moment, and the host, not the GPU, set the pace (docs/gpu-runs.md). Dealt as one unit, a
group's kernels are compiled once, by its worker.

A group is a variant and a dtype for the generated cases (tests/test_correctness.py, whose test ids are case ids:
its four tests of one case share the forward kernels), and a variant for an op's own test module
(``tests/test_<op>.py`` with the variant's name among the test's parameters). Any other test is a group of its own.
The groups are read off the node ids, because xdist's controller, which deals the tests, does not collect them.
Grouping decides only where a test runs, never whether it runs or what it checks, so a test that falls into no
group, or into a coarser one, is merely scheduled like any other.

xdist's own loadgroup reads ``xdist_group`` marks by appending the group to each node id, which pytest 9.2's node
ids no longer allow (``Node.nodeid`` became a read-only view of ``Node._id``; pytest-xdist 3.8 still assigns
``item._nodeid``, so its groups are silently ignored). This scheduler replaces it for this suite, and leaves node
ids as they are, so the journal, the shards and the ledger see the same ids with or without it.
"""

from __future__ import annotations

import functools
import re

from xdist.scheduler import LoadScopeScheduling

_PARAMS = re.compile(r"^(?P<path>[^:]+)::[^\[]+\[(?P<params>.*)\]$")


@functools.cache
def _case_groups() -> dict[str, str]:
    """Case id -> group, for every generated case on this backend (the controller builds it once)."""
    from kernels import backend, cases, registry
    from kernels.dtypes import short

    registry.discover()
    return {c.id: f"{c.variant.key}-{short(c.dtype)}" for c in cases.cases(backend.name())}


@functools.cache
def _op_variants() -> dict[str, frozenset[str]]:
    from kernels import registry, spec

    registry.discover()
    return {op: frozenset(v.name for v in registry.variants_of(op)) for op in spec.OPS}


def group_of(nodeid: str) -> str | None:
    """The compile group of a test, or None for a test that shares its kernels with no other."""
    match = _PARAMS.match(nodeid)
    if match is None:
        return None
    params = match["params"]
    if params in _case_groups():
        return _case_groups()[params]
    op = match["path"].rsplit("/", 1)[-1].removesuffix(".py").removeprefix("test_")
    names = _op_variants().get(op, frozenset())
    chosen = [p for p in params.split("-") if p in names]
    return f"{op}.{chosen[0]}" if len(chosen) == 1 else None


def recorded_seconds() -> dict[str, float]:
    """How long each test took when it last passed, from the ledger (tests/ledger.py); empty without one."""
    from tests import ledger

    data, _ = ledger.load(ledger.path())
    if data is None:
        return {}
    found = {n: e.get("seconds") for n, e in data["entries"].items() if isinstance(e, dict)}
    return {n: float(s) for n, s in found.items() if isinstance(s, int | float)}


def longest_first(workqueue: dict[str, dict], seconds: dict[str, float]) -> list[tuple[str, dict]]:
    """The groups in the order to deal them: the longest first, by the seconds their tests took last time (a test
    the ledger has not timed counts as the median of those it has). Dealing the longest first keeps a long test from
    starting last and holding up the end of the run: a scaffolding test that runs the suite in a child process took
    100 s of a 244 s warm run on an H200 because it was dealt last."""
    known = sorted(seconds.values())
    typical = known[len(known) // 2] if known else 1.0

    def weight(group: tuple[str, dict]) -> float:
        return sum(seconds.get(nodeid, typical) for nodeid in group[1])

    return sorted(workqueue.items(), key=weight, reverse=True)


class CompileGroupScheduling(LoadScopeScheduling):
    """xdist's scope scheduler with compile groups as scopes: a group is dealt whole to one worker, the longest
    first by the ledger's record of the last run, or the largest first where there is none (xdist's
    --loadscope-reorder, on by default)."""

    _ordered = False

    def _split_scope(self, nodeid: str) -> str:
        return group_of(nodeid) or nodeid

    def _assign_work_unit(self, node) -> None:
        # The first call comes once xdist has built its queue of groups and before it deals any: reorder it then.
        if not self._ordered:
            self._ordered = True
            seconds = recorded_seconds()
            if seconds:
                ordered = longest_first(self.workqueue, seconds)
                self.workqueue.clear()
                self.workqueue.update(ordered)
        super()._assign_work_unit(node)


def pytest_xdist_make_scheduler(config, log):
    if config.getvalue("dist") == "loadgroup":
        return CompileGroupScheduling(config, log)
    return None

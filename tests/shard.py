"""``--shard K/N``: run the K-th of N fixed, disjoint parts of the suite.

A GPU runner with a per-job time limit (or several runners side by side) splits one run into N jobs; together
they run every test exactly once, and their junit files add up to the whole run. A test's part follows from its
node id alone (CRC-32, the same in every process and on every machine), so xdist workers, which each collect the
suite, agree on it, and a test keeps its part as others are added.

pytest-split was weighed and not used: it needs a committed durations file from a GPU run, which every version bump
(our ids carry it) makes stale, and its parts move when tests are added or re-timed, for a balance no better than
CRC's on a run it had not seen (docs/gpu-runs.md, "Why our own journal and shard plugins").
"""

from __future__ import annotations

import zlib

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--shard",
        default=None,
        metavar="K/N",
        help="run only part K of N (1 <= K <= N) of the collected tests, split by node id",
    )


def parse(text: str) -> tuple[int, int]:
    """``"K/N"`` as (K, N), or a UsageError that says what a shard must look like."""
    try:
        k, n = (int(part) for part in text.split("/"))
    except ValueError:
        raise pytest.UsageError(f"--shard {text!r}: expected K/N with whole numbers, e.g. --shard 1/2") from None
    if not 1 <= k <= n:
        raise pytest.UsageError(f"--shard {text!r}: K must be between 1 and N")
    return k, n


def part_of(nodeid: str, n: int) -> int:
    """The part (1..n) a test belongs to."""
    return zlib.crc32(nodeid.encode()) % n + 1


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    text = config.getoption("shard")
    if text is None:
        return
    k, n = parse(text)
    kept, others = [], []
    for item in items:
        (kept if part_of(item.nodeid, n) == k else others).append(item)
    config.hook.pytest_deselected(items=others)
    items[:] = kept


def pytest_report_header(config: pytest.Config) -> list[str]:
    text = config.getoption("shard")
    return [f"kernelwatch: shard {text} of the suite (--shard)"] if text else []

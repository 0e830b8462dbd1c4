"""The suite's own run plumbing: --shard splits it exactly, and the journal keeps a cut-short run's record."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests import journal, shard
from tests.tree import ROOT

IDS = [f"tests/test_x.py::test_{i}[case{i % 7}]" for i in range(500)]


@pytest.mark.parametrize("n", [1, 2, 3, 5])
def test_shards_cover_every_test_exactly_once(n) -> None:
    parts = [shard.part_of(nodeid, n) for nodeid in IDS]
    assert set(parts) <= set(range(1, n + 1))
    assert sum(len([p for p in parts if p == k]) for k in range(1, n + 1)) == len(IDS)
    # Balanced enough that N parts each take about 1/N of the time: no part is empty or holds more than half again.
    assert all(len(IDS) / n / 1.5 < parts.count(k) < 1.5 * len(IDS) / n for k in range(1, n + 1))


def test_a_tests_part_depends_on_its_id_only() -> None:
    # The same in another process (no per-process hash salt), which is what keeps xdist workers in agreement.
    here = [shard.part_of(nodeid, 4) for nodeid in IDS[:20]]
    code = f"from tests import shard; print([shard.part_of(i, 4) for i in {IDS[:20]!r}])"
    there = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert there.stdout.strip() == str(here)


@pytest.mark.parametrize("text", ["0/2", "3/2", "1", "a/b", "1/2/3", "-1/2"])
def test_a_malformed_shard_is_a_usage_error(text) -> None:
    with pytest.raises(pytest.UsageError, match="--shard"):
        shard.parse(text)


def test_the_shard_option_deselects_the_other_parts(pytester_free_run) -> None:
    counts = [pytester_free_run("--shard", f"{k}/2") for k in (1, 2)]
    assert sum(counts) == pytester_free_run() > 0 and all(counts)


@pytest.fixture
def pytester_free_run():
    """How many tests of tests/test_registry.py a collection (with extra options) selects, in a child pytest."""

    def collect(*options: str) -> int:
        run = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--collect-only", "tests/test_registry.py",
             *options],
            cwd=ROOT, capture_output=True, text=True,
        )  # fmt: skip
        assert run.returncode == 0, run.stdout + run.stderr
        return sum(1 for line in run.stdout.splitlines() if "::" in line)

    return collect


def _lines(*records: dict) -> list[str]:
    return [json.dumps(r) for r in records]


def test_the_journal_summary_counts_outcomes_and_names_what_was_still_running() -> None:
    lines = [
        *_lines(
            {"event": "start", "nodeid": "a", "t": 0.0},
            {"event": "start", "nodeid": "b", "t": 0.5},
            {"event": "report", "nodeid": "a", "when": "call", "outcome": "passed", "duration": 2.0, "t": 2.0},
            {"event": "start", "nodeid": "c", "t": 2.0},
            {"event": "report", "nodeid": "c", "when": "setup", "outcome": "skipped", "duration": 0.0, "t": 2.1},
            {"event": "start", "nodeid": "d", "t": 2.1},
            {"event": "report", "nodeid": "d", "when": "call", "outcome": "xfailed", "duration": 0.3, "t": 2.4},
            {"event": "start", "nodeid": "e", "t": 2.4},
            {"event": "report", "nodeid": "e", "when": "call", "outcome": "failed", "duration": 0.1, "t": 2.5},
            {"event": "start", "nodeid": "f", "t": 3.0},
            {"event": "report", "nodeid": "f", "when": "setup", "outcome": "failed", "duration": 0.1, "t": 3.1},
            {"event": "start", "nodeid": "g", "t": 9.0},
        ),
        '{"event": "report", "nodeid": "g", "wh',  # the last line, cut when the process was killed
    ]
    text = journal.summarize(lines)
    assert "outcomes: 1 error, 1 failed, 1 passed, 1 skipped, 1 xfailed" in text
    assert "none recorded (cut short)" in text
    assert text.index("2.00 s  a") < text.index("0.30 s  d")  # slowest first
    running = text.split("started, never reported (2):")[1]
    assert "running     8.5 s  b" in running and "running     0.0 s  g" in running


def test_the_journal_is_written_by_a_real_run_and_appended_to(tmp_path) -> None:
    path = tmp_path / "journal.jsonl"
    path.write_text('{"event": "finish", "exitstatus": 9, "t": 0}\n')  # an earlier run's record stays
    test = "tests/test_shard_and_journal.py::test_a_malformed_shard_is_a_usage_error"
    # A run of its own: not one of this run's xdist workers, nor a child of a journalled run.
    env = {k: v for k, v in os.environ.items() if k not in ("PYTEST_XDIST_WORKER", journal.OWNER_ENV)}
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", test],
        cwd=ROOT, capture_output=True, text=True, env={**env, journal.ENV: str(path)},
    )  # fmt: skip
    assert run.returncode == 0, run.stdout + run.stderr
    records = [json.loads(line) for line in path.read_text().splitlines()]
    assert records[0]["exitstatus"] == 9 and records[-1] == {**records[-1], "event": "finish", "exitstatus": 0}
    calls = [r for r in records if r["event"] == "report" and r["when"] == "call"]
    assert len(calls) == 6 and {r["outcome"] for r in calls} == {"passed"}
    assert len([r for r in records if r["event"] == "start"]) == 6


def test_a_pytest_run_started_by_a_journalled_run_leaves_the_journal_alone(tmp_path) -> None:
    # The scaffold, versioning and registry tests start pytest in a subprocess; in a GPU run their results had
    # been counted as the suite's. A child inherits the owner's pid and writes nothing.
    path = tmp_path / "journal.jsonl"
    env = {k: v for k, v in os.environ.items() if k != "PYTEST_XDIST_WORKER"}
    env.update({journal.ENV: str(path), journal.OWNER_ENV: str(os.getpid())})  # this process owns it
    test = "tests/test_shard_and_journal.py::test_a_malformed_shard_is_a_usage_error"
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", test],
        cwd=ROOT, capture_output=True, text=True, env=env,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout + run.stderr
    assert not path.exists()


def test_the_journal_summary_of_a_run_that_recorded_nothing_says_so(tmp_path, capsys) -> None:
    assert journal.main([str(tmp_path / "never-written.jsonl")]) == 1
    assert "recorded no test" in capsys.readouterr().out

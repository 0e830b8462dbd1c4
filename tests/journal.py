"""``KERNELWATCH_JOURNAL=FILE``: a line of JSON per test as the run goes, so that a run cut short keeps its record.

pytest writes its summary, ``--durations`` and junit only when the session ends. A GPU job killed by its time
limit ends without them, and with them goes what was done, how long each test took and which tests were still
running when it stopped. The journal is appended and flushed test by test from the controller (under xdist, from
every worker's reports):

- ``{"event": "start", "nodeid": ...}`` when a test starts;
- ``{"event": "report", "nodeid", "when", "outcome", "duration", "worker"}`` for each phase that failed or was
  skipped, and for every call;
- ``{"event": "finish", "exitstatus": ...}`` if the session ends at all.

``python -m tests.journal FILE`` summarizes it: the counts, the slowest tests, and those started but never done.

pytest-reportlog was weighed and not used: it records no test start, empties its file on each run, and a child
pytest that inherits its option overwrites the suite's record (docs/gpu-runs.md, "Why our own journal and shard
plugins").
"""

from __future__ import annotations

import collections
import json
import os
import sys
import time
from pathlib import Path

import pytest

ENV = "KERNELWATCH_JOURNAL"
OWNER_ENV = "KERNELWATCH_JOURNAL_OWNER"
"""The pid of the pytest process that writes the journal, set by it and inherited by every process it starts."""


def pytest_configure(config: pytest.Config) -> None:
    # The first pytest process of the run owns the journal. Its xdist workers, and the pytest runs that some tests
    # start in a subprocess (the scaffold, versioning and registry tests), inherit the owner's pid and stay silent:
    # the workers' reports reach the owner anyway, and a child run's results are not the suite's.
    if os.environ.get(ENV) and "PYTEST_XDIST_WORKER" not in os.environ:
        os.environ.setdefault(OWNER_ENV, str(os.getpid()))


def _path() -> Path | None:
    if not os.environ.get(ENV) or os.environ.get(OWNER_ENV) != str(os.getpid()):
        return None
    return Path(os.environ[ENV])


def _write(record: dict) -> None:
    path = _path()
    if path is None:
        return
    record["t"] = round(time.time(), 3)
    with path.open("a", encoding="utf-8") as out:  # appended: an earlier run's lines are never overwritten
        out.write(json.dumps(record) + "\n")


def pytest_runtest_logstart(nodeid: str, location) -> None:
    _write({"event": "start", "nodeid": nodeid})


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.when == "call" or not report.passed:
        _write(
            {
                "event": "report",
                "nodeid": report.nodeid,
                "when": report.when,
                "outcome": "xfailed" if hasattr(report, "wasxfail") and report.skipped else report.outcome,
                "duration": round(report.duration, 3),
                "worker": getattr(getattr(report, "node", None), "workerinput", {}).get("workerid"),
            }
        )


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    _write({"event": "finish", "exitstatus": int(exitstatus)})


def summarize(lines: list[str], slowest: int = 25) -> str:
    """The counts by outcome, the slowest calls, and the tests started but never reported."""
    started, done, outcomes, durations, finish, end = {}, set(), collections.Counter(), {}, None, 0.0
    for line in lines:
        try:
            record = json.loads(line)
        except json.JSONDecodeError:  # a line cut by a killed process: the rest still counts
            continue
        end = max(end, record.get("t", 0.0))
        if record.get("event") == "start":
            started[record["nodeid"]] = record["t"]
        elif record.get("event") == "report":
            if record["when"] == "call" or record["outcome"] in ("skipped", "xfailed"):
                outcomes[record["outcome"]] += record["nodeid"] not in done
            elif record["outcome"] == "failed":  # a setup or teardown error
                outcomes["error"] += 1
            done.add(record["nodeid"])
            durations[record["nodeid"]] = durations.get(record["nodeid"], 0.0) + record["duration"]
        elif record.get("event") == "finish":
            finish = record["exitstatus"]
    running = sorted((nodeid for nodeid in started if nodeid not in done), key=started.get)
    out = [
        "outcomes: " + ", ".join(f"{n} {k}" for k, n in sorted(outcomes.items())),
        f"session end: {'exit status ' + str(finish) if finish is not None else 'none recorded (cut short)'}",
        f"slowest {slowest} calls:",
        *(f"  {d:8.2f} s  {n}" for n, d in sorted(durations.items(), key=lambda kv: -kv[1])[:slowest]),
        f"started, never reported ({len(running)}):",
        *(f"  running {end - started[n]:7.1f} s  {n}" for n in running),
    ]
    return "\n".join(out)


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m tests.journal FILE", file=sys.stderr)
        return 2
    path = Path(argv[0])
    if not path.is_file():
        # The run ended before its first test (a failed install, no GPU): say so rather than fail with a traceback.
        print(f"no journal at {path}: the run recorded no test")
        return 1
    print(summarize(path.read_text(encoding="utf-8").splitlines()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))

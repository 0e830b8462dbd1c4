"""The ledger of what passed, and ``--changed``: run only the tests whose kernels or framework changed since.

Every run records, for each test that passed (or failed as a strict expected failure), the key it passed under
(tests/ledger_keys.py: the environment, the framework's files, the test's module, and the version, fingerprint
and contract of each variant it exercised). Tests that fail lose their entry. ``--changed`` deselects the tests
whose entry still holds and says, in the header and the summary, how many and since which commit.

The ledger is JSON (``{"format": 1, "commit", "written", "environments": {digest: env}, "entries": {nodeid:
entry}}``) at ``$KERNELWATCH_LEDGER`` or ``kernels.cache.directory()/ledger.json``, beside Triton's caches, so
CI restores both together. Only the controller writes it, once, at the end of the session, through a temporary
file and ``os.replace``: a run cut short leaves the previous ledger whole. Under xdist each worker records what
its tests exercised and sends it on the teardown report (``user_properties``); every worker computes the same
deselection from the same files (the controller writes nothing until all of them have finished collecting).
"""

from __future__ import annotations

import collections
import datetime
import json
import os
import subprocess
import tempfile
from pathlib import Path

import pytest

from kernels import usage
from tests.ledger_keys import PASSING, Keys, digest

FORMAT = 1
ENV = "KERNELWATCH_LEDGER"
COMMIT_ENV = "KERNELWATCH_COMMIT"
PROPERTY = "kernelwatch_ledger"
"""The user_properties name that carries a test's entry from the worker that ran it to the controller."""


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--changed",
        action="store_true",
        default=False,
        help="run only the tests whose variants, test module or framework changed since they last passed "
        "(the ledger in the kernelwatch cache directory; docs/gpu-runs.md)",
    )


def path() -> Path:
    if os.environ.get(ENV):
        return Path(os.environ[ENV])
    from kernels import cache

    return cache.directory() / cache.LEDGER


def commit(root: Path) -> str:
    """The commit this run tests: $KERNELWATCH_COMMIT, $GITHUB_SHA, or git's HEAD; "unknown commit" without them."""
    found = os.environ.get(COMMIT_ENV) or os.environ.get("GITHUB_SHA")
    if not found:
        try:
            run = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=30)
            found = run.stdout.strip() if run.returncode == 0 else ""
        except (OSError, subprocess.SubprocessError):
            found = ""
    return found[:12] or "unknown commit"


def load(where: Path) -> tuple[dict | None, str]:
    """The ledger, or None and why it cannot be used."""
    if not where.is_file():
        return None, f"no ledger at {where}"
    try:
        data = json.loads(where.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        return None, f"the ledger at {where} is corrupt ({exc})"
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        found = data.get("format") if isinstance(data, dict) else type(data).__name__
        return None, f"the ledger at {where} has format {found!r}, this kernelwatch reads format {FORMAT}"
    if not isinstance(data.get("entries"), dict) or not isinstance(data.get("environments"), dict):
        return None, f"the ledger at {where} is corrupt (no entries or environments table)"
    return data, ""


def since(data: dict) -> str:
    return f"commit {data.get('commit', 'unknown commit')} ({data.get('written', 'unknown date')})"


def pytest_configure(config: pytest.Config) -> None:
    worker = hasattr(config, "workerinput")
    config.pluginmanager.register(Runner(config), "kernelwatch-ledger-runner")
    if not worker:
        config.pluginmanager.register(Controller(config), "kernelwatch-ledger-controller")


class Runner:
    """Where tests run (an xdist worker, or the one process without xdist): deselects, and records usage."""

    def __init__(self, config: pytest.Config):
        self.config = config
        self.keys = Keys(config.rootpath)
        self.commit = commit(config.rootpath)
        self.report: dict = {}

    @pytest.hookimpl(trylast=True)
    def pytest_collection_modifyitems(self, config: pytest.Config, items: list[pytest.Item]) -> None:
        if not config.getoption("changed"):
            return
        data, why = load(path())
        if data is None:
            self.report = {"unusable": why}
            return
        entries, envs = data["entries"], data["environments"]
        kept, skipped, reasons = [], [], collections.Counter()
        for item in items:
            entry = entries.get(item.nodeid)
            if not isinstance(entry, dict):
                reason = "not in the ledger"
            else:
                reason = self.keys.stale(item, entry, digest(json.dumps(envs.get(entry.get("env")), sort_keys=True)))
            (kept if reason else skipped).append(item)
            if reason:
                reasons[reason] += 1
        if skipped:
            config.hook.pytest_deselected(items=skipped)
            items[:] = kept
        self.report = {"skipped": len(skipped), "ran": len(kept), "reasons": dict(reasons.most_common(8))}

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_protocol(self, item: pytest.Item, nextitem):
        usage.take()  # what collection or the previous test resolved is not this test's
        yield

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_makereport(self, item: pytest.Item, call: pytest.CallInfo):
        outcome = yield
        report = outcome.get_result()
        if call.when == "call":
            item.stash[_OUTCOME] = _classify(item, report)
        elif call.when == "teardown":
            entry = self.keys.entry(item, usage.take(), item.stash.get(_OUTCOME, "not run"), self.commit)
            # A list of its own: item.user_properties also feeds junit, which must not carry the entry.
            report.user_properties = [*report.user_properties, (PROPERTY, json.dumps(entry))]

    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        if hasattr(self.config, "workeroutput"):
            self.config.workeroutput[PROPERTY] = json.dumps(self.report)


_OUTCOME = pytest.StashKey[str]()


def _classify(item: pytest.Item, report: pytest.TestReport) -> str:
    if hasattr(report, "wasxfail"):
        marker = item.get_closest_marker("xfail")
        strict = marker is not None and marker.kwargs.get("strict", item.config.getini("xfail_strict"))
        return "xfailed" if report.skipped and strict else "xfail-other"
    return report.outcome


class Controller:
    """The run's first process: says what --changed did, gathers each test's entry, and writes the ledger."""

    def __init__(self, config: pytest.Config):
        self.config = config
        self.results: dict[str, dict | None] = {}
        self.seconds: collections.Counter[str] = collections.Counter()
        self.workers: list[dict] = []
        self.runner: Runner = config.pluginmanager.get_plugin("kernelwatch-ledger-runner")
        self.data, self.why = load(path()) if config.getoption("changed") else (None, "")

    def pytest_report_header(self, config: pytest.Config) -> list[str]:
        if not config.getoption("changed"):
            return [f"kernelwatch: ledger {path()} (refreshed at the end; --changed to skip what passed)"]
        if self.data is None:
            return [f"kernelwatch: --changed: {self.why.upper()}: RUNNING EVERY SELECTED TEST"]
        n = len(self.data["entries"])
        return [f"kernelwatch: --changed: ledger {path()} of {since(self.data)}, {n} entries"]

    @pytest.hookimpl(optionalhook=True)
    def pytest_testnodedown(self, node, error) -> None:
        text = getattr(node, "workeroutput", {}).get(PROPERTY)
        if text:
            self.workers.append(json.loads(text))

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        self.seconds[report.nodeid] += report.duration
        if report.failed:
            self.results[report.nodeid] = None
        carried = [value for name, value in report.user_properties if name == PROPERTY]
        if not carried:
            return
        report.user_properties = [(n, v) for n, v in report.user_properties if n != PROPERTY]
        # How long the test took, setup to teardown: tests/grouping.py deals the longest tests out first next time.
        entry = {**json.loads(carried[-1]), "seconds": round(self.seconds[report.nodeid], 3)}
        fine = report.passed and entry["outcome"] in PASSING and self.results.get(report.nodeid, {}) is not None
        self.results[report.nodeid] = entry if fine else None

    def _what_changed_did(self) -> dict:
        # Every worker computed the same deselection; without xdist the runner in this process did.
        return self.workers[0] if self.workers else self.runner.report

    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        done = self._what_changed_did()
        if (
            self.config.getoption("changed")
            and exitstatus == pytest.ExitCode.NO_TESTS_COLLECTED
            and done.get("skipped")
        ):
            session.exitstatus = pytest.ExitCode.OK  # everything selected had passed unchanged: nothing to do
        if self.results and not self.config.getoption("collectonly"):
            write(path(), self.results, self.runner.commit)

    def pytest_terminal_summary(self, terminalreporter, exitstatus: int, config: pytest.Config) -> None:
        if not config.getoption("changed"):
            return
        done, write_sep = self._what_changed_did(), terminalreporter.write_sep
        if self.data is None or "unusable" in done:
            write_sep("=", f"kernelwatch --changed: {self.why or done.get('unusable')}: ran every selected test")
            return
        skipped, ran = done.get("skipped", 0), done.get("ran", 0)
        if not ran and skipped:
            write_sep("=", f"kernelwatch --changed: NOTHING CHANGED since {since(self.data)}: {skipped} tests skipped")
            return
        write_sep("=", f"kernelwatch --changed: SKIPPED {skipped} tests unchanged since {since(self.data)}; ran {ran}")
        for reason, n in done.get("reasons", {}).items():
            terminalreporter.write_line(f"  {n:6d} rerun: {reason}")


def write(where: Path, results: dict[str, dict | None], at_commit: str) -> None:
    """Merge this run's results into the ledger on disk (another run may have written it since this one started)
    and replace it atomically."""
    data, _ = load(where)
    entries = dict(data["entries"]) if data else {}
    envs = dict(data["environments"]) if data else {}
    for nodeid, entry in results.items():
        if entry is None:
            entries.pop(nodeid, None)
            continue
        env_key = digest(json.dumps(entry["env"], sort_keys=True))
        envs[env_key] = entry["env"]
        entries[nodeid] = {**entry, "env": env_key}
    used = {e["env"] for e in entries.values()}
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    out = {
        "format": FORMAT,
        "commit": at_commit,
        "written": now,
        "environments": {k: v for k, v in envs.items() if k in used},
        "entries": dict(sorted(entries.items())),
    }
    where.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=where.name, suffix=".tmp", dir=where.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(out, f, separators=(",", ":"))
        os.chmod(tmp, 0o644)  # mkstemp makes it private; the ledger is no secret, and CI's cache steps read it
        os.replace(tmp, where)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise

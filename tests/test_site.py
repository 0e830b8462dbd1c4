"""The published history (benchmarks/site.py, benchmarks/provenance.py): what `nox -s bench-publish` builds from the
committed results, and the workflow that deploys it. No torch, no GPU: a few seconds each."""

from __future__ import annotations

import contextlib
import functools
import http.server
import json
import os
import re
import select
import shutil
import subprocess
import threading
import time
from pathlib import Path
from typing import ClassVar

import pytest
import yaml

from benchmarks import history, provenance, site
from tests.tree import ROOT

pytestmark = pytest.mark.xdist_group("history-site")


def _full_history() -> bool:
    shallow = subprocess.run(
        ["git", "rev-parse", "--is-shallow-repository"], cwd=ROOT, capture_output=True, text=True
    ).stdout.strip()
    return shallow == "false"


full_history = pytest.mark.skipif(
    not _full_history(), reason="asv publish needs the full git history (clone without --depth)"
)


def _root(tmp_path: Path) -> Path:
    """A checkout's shape in tmp_path: asv.conf.json (this repository as its repo), a copy of the committed
    results, and the site under html/."""
    config = history.load_config()
    shutil.copytree(ROOT / config["results_dir"], tmp_path / "results")
    config.update(
        repo=str(ROOT),
        results_dir=str(tmp_path / "results"),
        html_dir=str(tmp_path / "html"),
        benchmark_dir=str(ROOT / config["benchmark_dir"]),
    )
    (tmp_path / "asv.conf.json").write_text(json.dumps(config))
    return tmp_path


@pytest.fixture(scope="module")
def published(tmp_path_factory) -> Path:
    """The committed history, published once for this module's tests."""
    if not _full_history():
        pytest.skip("asv publish needs the full git history (clone without --depth)")
    root = _root(tmp_path_factory.mktemp("site"))
    assert site.publish(root=root) == 0
    return root / "html"


# -- a bad machine.json ------------------------------------------------------------------------------------------


@full_history
def test_a_truncated_machine_json_is_named_and_everything_else_published(tmp_path, capsys) -> None:
    root = _root(tmp_path)
    machine = root / "results" / "nvidia-h200" / "machine.json"
    machine.write_text(machine.read_text()[:40])  # cut off mid-write
    assert site.publish(root=root) == 1
    err = capsys.readouterr().err
    assert f"bad results file {machine}" in err and "the rest was published" in err
    html = root / "html"
    assert "https://" not in "".join(re.findall(r"<(?:script|link)[^>]*>", (html / "index.html").read_text()))
    # Both GPUs' graphs: the H200's machine fields come from its results files.
    machines = json.loads((html / "index.json").read_text())["machines"]
    assert {"nvidia-h100-80gb-hbm3", "nvidia-h200"} <= set(machines)
    for name in ("nvidia-h100-80gb-hbm3", "nvidia-h200"):
        assert list((html / "graphs").rglob(f"*machine-{name}*/**/ops.Softmax.track_time.json")), name
    assert len(machine.read_text()) == 40  # the committed file is left as it was, for a human to repair


@full_history
def test_a_failed_publish_keeps_the_previous_site(tmp_path, monkeypatch) -> None:
    root = _root(tmp_path)
    (root / "html").mkdir()
    (root / "html" / "index.html").write_text("the previous site")

    def broken(html):
        raise history.HistoryError("asv changed its page")

    monkeypatch.setattr(site, "make_offline", broken)
    with pytest.raises(history.HistoryError):
        site.publish(root=root)
    assert (root / "html" / "index.html").read_text() == "the previous site"
    assert not list(root.glob(".publish-*"))


# -- a shallow clone ----------------------------------------------------------------------------------------------


def test_a_shallow_clone_is_refused_with_how_to_fetch_the_history(tmp_path) -> None:
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", "--depth", "1", f"file://{ROOT}", str(clone)], check=True)
    with pytest.raises(history.HistoryError, match="shallow clone") as err:
        site.publish(root=clone)
    assert "git fetch --unshallow" in str(err.value) and "fetch-depth: 0" in str(err.value)
    assert not (clone / ".asv").exists()


# -- regressions: only lower-is-better series ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("series", "judged"),
    [("track_time", True), ("track_error", True), ("track_throughput", False), ("track_roofline", False)],
)
@pytest.mark.parametrize("cls", ["Add", "SoftmaxBackward", "LoraLinear"])
def test_only_lower_is_better_series_feed_asvs_regression_detection(cls, series, judged) -> None:
    # asv's own filter, read from our asv.conf.json: a start revision of None skips the series' step detection.
    from asv.config import Config
    from asv.plugins.regressions import _GraphDataFilter

    class Graph:
        params: ClassVar[dict] = {}

    conf = Config.load(str(ROOT / "asv.conf.json"))
    found = _GraphDataFilter(conf, None, {"a" * 40: 0})._get_start_revision(
        Graph(), {}, f"ops.{cls}.{series}('fused', '4096x4096', 'bf16')"
    )
    assert (found is not None) == judged
    assert series.endswith(tuple(s.lstrip(".") for s in site.LOWER_IS_BETTER)) == judged


def test_the_regressions_tab_lists_no_higher_is_better_series(published) -> None:
    listed = json.loads((published / "regressions.json").read_text())["regressions"]
    names = {entry[0].split("(")[0].rsplit(".", 1)[1] for entry in listed}
    assert names <= {"track_time", "track_error"}, names
    # ... while their graphs are still published.
    assert list((published / "graphs").rglob("ops.Add.track_roofline.json"))


# -- the deploy ---------------------------------------------------------------------------------------------------


def _workflow(name: str) -> dict:
    data = yaml.safe_load((ROOT / ".github" / "workflows" / name).read_text())
    data["on"] = data.pop(True, data.get("on"))  # YAML 1.1 reads the key `on` as true
    return data


def test_the_site_is_deployed_after_every_stored_run() -> None:
    # The bench job pushes its results with GITHUB_TOKEN and [skip ci]: neither push triggers a workflow, so the
    # pages workflow must run when the gpu workflow that stored them completes.
    gpu = _workflow("gpu.yml")
    assert "commit the results" in [s.get("name") for s in gpu["jobs"]["bench"]["steps"]]
    pages = _workflow("pages.yml")
    trigger = pages["on"]["workflow_run"]
    assert trigger["workflows"] == [gpu["name"]] and trigger["types"] == ["completed"]
    assert trigger["branches"] == ["main"]
    build = pages["jobs"]["build"]
    assert "github.event.workflow_run.event == 'push'" in build["if"]
    checkout = build["steps"][0]
    assert checkout["uses"].startswith("actions/checkout@") and checkout["with"]["fetch-depth"] == 0


# -- the provenance page ------------------------------------------------------------------------------------------


def _one_result(where: Path, fingerprint: str) -> None:
    case = {"version": "1.0.0", "fingerprint": fingerprint, "autotune": {}, "mode": "default"}
    cases = {"fused|1x7|bf16": case, "naive|1x7|fp32": case}
    record = {"cases": cases, "backward": {"cases": {"fused|1x7|bf16": case}}}
    (where / "gpu").mkdir(parents=True)
    (where / "gpu" / "aaaaaaaa-kernelwatch.json").write_text(
        json.dumps({"commit_hash": "a" * 40, "date": 0, history.PROVENANCE_KEY: {"ops": {"layernorm": record}}})
    )


def test_the_provenance_page_shows_whole_fingerprints_and_filters_by_op_and_variant(tmp_path) -> None:
    fingerprint = "src1:0123456789abcdef"  # as long as the lock's
    _one_result(tmp_path / "results", fingerprint)
    provenance.write_page(tmp_path / "results", tmp_path / "provenance.html")
    page = (tmp_path / "provenance.html").read_text()
    assert f">{fingerprint}</td>" in page
    for name in ("op", "variant", "machine", "pass"):
        assert re.search(rf'<select data-col="\d+" data-name="{name}">', page), name
    assert "<option>fused</option><option>naive</option>" in page
    assert "http://" not in page and "https://" not in page  # self-contained: no CDN
    assert "<thead><tr><th>machine</th>" in page and "addEventListener('click'" in page


def test_the_asv_pages_link_the_provenance_page(tmp_path) -> None:
    import asv

    shutil.copy(Path(asv.__file__).parent / "www" / "index.html", tmp_path / "index.html")
    site.link_provenance(tmp_path)
    page = (tmp_path / "index.html").read_text()
    tab = r'id="nav-li-regressions">.*?</li>\s*<li id="nav-li-provenance"><a href="provenance.html">'
    assert re.search(tab, page, re.S)


def test_the_published_provenance_page_covers_the_history(published) -> None:
    page = (published / "provenance.html").read_text()
    locked = set(re.findall(r'fingerprint = "(src1:[0-9a-f]+)"', (ROOT / "variants.lock").read_text()))
    shown = set(re.findall(r">(src1:[0-9a-f]+)</td>", page))
    assert shown and {len(f) for f in shown} == {len(f) for f in locked}, sorted(shown)[:3]
    assert shown & locked  # a variant unchanged since the history was recorded reads as in the lock
    assert 'href="provenance.html"' in (published / "index.html").read_text()


# -- in a browser -------------------------------------------------------------------------------------------------


def _chromium() -> str | None:
    return next(filter(None, map(shutil.which, ("chromium", "chromium-browser", "google-chrome"))), None)


class _Quiet(http.server.SimpleHTTPRequestHandler):
    log: ClassVar[list] = []

    def log_message(self, format, *args):
        self.log.append((self.path, args[1] if len(args) > 1 else ""))


class _Browser:
    """Headless Chromium driven over its DevTools pipe (fds 3 and 4, NUL-terminated JSON): no driver to install."""

    def __init__(self) -> None:
        self.to_chrome_r, self.to_chrome_w = os.pipe()
        self.from_chrome_r, self.from_chrome_w = os.pipe()
        to_r, from_w = self.to_chrome_r, self.from_chrome_w

        def fds() -> None:
            # In the child, before exec: its fds 3 and 4 are the pipe's ends (close_fds would close them).
            a, b = os.dup(to_r), os.dup(from_w)
            os.dup2(a, 3)
            os.dup2(b, 4)

        self.proc = subprocess.Popen(
            [_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--remote-debugging-pipe",
             # No route anywhere but this machine: a CDN the page still asked for would fail and be logged.
             "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1", "about:blank"],
            close_fds=False, preexec_fn=fds, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        os.close(to_r)
        os.close(from_w)
        self.buffer, self.next_id, self.events, self.session = b"", 0, [], None

    def send(self, method: str, timeout: float = 30, **params):
        self.next_id += 1
        message = {"id": self.next_id, "method": method, "params": params}
        if self.session:
            message["sessionId"] = self.session
        os.write(self.to_chrome_w, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            for reply in self.read(deadline - time.monotonic()):
                if reply.get("id") == self.next_id:
                    assert "error" not in reply, reply
                    return reply["result"]
            assert time.monotonic() < deadline, f"no reply to {method}"

    def read(self, timeout: float) -> list[dict]:
        ready, _, _ = select.select([self.from_chrome_r], [], [], max(0.0, timeout))
        if ready:
            self.buffer += os.read(self.from_chrome_r, 1 << 20)
        *messages, self.buffer = self.buffer.split(b"\0")
        found = [json.loads(m) for m in messages]
        self.events += [m for m in found if "method" in m]
        return found

    def open(self, url: str, settle: float = 3.0) -> None:
        target = self.send("Target.createTarget", url="about:blank")["targetId"]
        self.session = self.send("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        for domain in ("Runtime", "Log", "Page"):
            self.send(f"{domain}.enable")
        self.send("Page.navigate", url=url)
        deadline = time.monotonic() + 60
        while not any(e["method"] == "Page.loadEventFired" for e in self.events):
            assert time.monotonic() < deadline, "the page never loaded"
            self.read(1)
        end = time.monotonic() + settle  # the graphs' JSON arrives after the load event
        while time.monotonic() < end:
            self.read(end - time.monotonic())

    def evaluate(self, expression: str):
        reply = self.send("Runtime.evaluate", expression=expression, returnByValue=True)
        assert "exceptionDetails" not in reply, reply
        return reply["result"].get("value")

    def errors(self) -> list[str]:
        found = []
        for event in self.events:
            method, params = event["method"], event.get("params", {})
            if method == "Runtime.exceptionThrown":
                found.append(json.dumps(params["exceptionDetails"])[:500])
            elif method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
                found.append(json.dumps(params.get("args"))[:500])
            elif method == "Log.entryAdded" and params["entry"]["level"] == "error":
                found.append(f"{params['entry'].get('text')} {params['entry'].get('url', '')}")
        return found

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait()
        os.close(self.to_chrome_w)
        os.close(self.from_chrome_r)


@contextlib.contextmanager
def _browse(html: Path, path: str):
    """A browser on ``path`` of a local server of ``html``; the server's (path, status) log is ``browser.requests``."""
    _Quiet.log = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=str(html)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    browser = _Browser()
    try:
        browser.open(f"http://127.0.0.1:{server.server_port}/{path}")
        browser.requests = list(_Quiet.log)
        yield browser
    finally:
        browser.close()
        server.shutdown()


needs_chromium = pytest.mark.skipif(
    _chromium() is None,
    reason="no chromium binary on PATH (apt-get install chromium): the headless-browser check of the site is skipped",
)


@needs_chromium
def test_the_site_renders_offline_with_points_and_no_console_errors(published) -> None:
    with _browse(published, "index.html#ops.Softmax.track_time") as browser:
        assert browser.errors() == []
        assert [r for r in browser.requests if r[1] != "200"] == []
        # flot's plot of the graph, and how many points its series hold.
        points = browser.evaluate(
            "(function(){var p=$('#main-graph').data('plot'); if(!p){return -1;}"
            " return p.getData().reduce(function(n,s){return n+s.data.length;},0);})()"
        )
        assert points > 0, points
        assert browser.evaluate("$('#nav-li-provenance a').attr('href')") == "provenance.html"


@needs_chromium
def test_the_browser_check_sees_a_missing_script(published, tmp_path) -> None:
    # The check above could pass by seeing nothing: here a vendored script is gone, and it must be reported.
    shutil.copytree(published, tmp_path / "html")
    (tmp_path / "html" / "vendor" / "md5.js").unlink()
    with _browse(tmp_path / "html", "index.html") as browser:
        assert any("404" in e or "md5" in e for e in browser.errors()), browser.errors()


@needs_chromium
def test_the_provenance_page_sorts_and_filters_in_a_browser(published) -> None:
    with _browse(published, "provenance.html?op=softmax&variant=fused") as browser:
        assert browser.errors() == []
        shown, total = map(int, re.search(r"(\d+) of (\d+) rows", browser.evaluate("count.textContent")).groups())
        assert 0 < shown < total
        column = "document.querySelectorAll('#provenance tbody tr:not([hidden]) td:nth-child(%d)')"
        ops = browser.evaluate(f"Array.from({column % 4}).map(function(td){{return td.textContent;}})")
        assert set(ops) == {"softmax"} and len(ops) == shown
        browser.evaluate("document.querySelectorAll('#provenance th')[6].click()")  # shape
        shapes = browser.evaluate(f"Array.from({column % 7}).map(function(td){{return td.textContent;}})")
        key = [int(x) for x in re.findall(r"\d+", shapes[0])]
        assert shapes == sorted(shapes, key=lambda s: [int(x) for x in re.findall(r"\d+", s)]) and key

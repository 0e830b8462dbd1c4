"""The published history (``nox -s bench-publish``): asv's HTML of the committed results, made to render offline, with
a provenance page linked from its navigation bar. It needs asv and git, not torch: publishing runs on any machine.

The site is built in a scratch directory beside ``.asv/html`` from a staged copy of the results that leaves out every
file asv cannot read (a truncated ``machine.json`` is rebuilt from its machine's results files), and replaces the
old site only once it is whole: a failure never leaves a half-built site.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from benchmarks import history, provenance
from benchmarks.history import HistoryError

VENDOR = Path(__file__).resolve().parent / "www_vendor"
OFFLINE_SCRIPTS = {
    "https://code.jquery.com/jquery-3.3.1.min.js": "jquery-3.3.1.min.js",
    "https://cdnjs.cloudflare.com/ajax/libs/flot/0.8.3/jquery.flot.min.js": "jquery.flot-0.8.3.min.js",
    "https://cdnjs.cloudflare.com/ajax/libs/flot/0.8.3/jquery.flot.time.min.js": "jquery.flot-0.8.3.time.min.js",
    "https://cdnjs.cloudflare.com/ajax/libs/flot/0.8.3/jquery.flot.selection.min.js": (
        "jquery.flot-0.8.3.selection.min.js"
    ),
    "https://cdnjs.cloudflare.com/ajax/libs/flot/0.8.3/jquery.flot.categories.min.js": (
        "jquery.flot-0.8.3.categories.min.js"
    ),
    "https://cdn.jsdelivr.net/npm/flot-orderbars@1.0.0/js/jquery.flot.orderBars.js": "jquery.flot.orderBars.js",
    "https://cdnjs.cloudflare.com/ajax/libs/stupidtable/1.0.1/stupidtable.min.js": "stupidtable.js",
    "https://cdnjs.cloudflare.com/ajax/libs/blueimp-md5/2.19.0/js/md5.min.js": "md5.js",
    "https://cdn.jsdelivr.net/npm/bootstrap@3.1.1/dist/js/bootstrap.min.js": "bootstrap-3.1.0.min.js",
    "https://cdn.jsdelivr.net/npm/bootstrap@3.1.1/dist/css/bootstrap.min.css": "bootstrap-3.1.0.min.css",
}
"""The CDN URLs in asv's index.html and the local copy of each (benchmarks/www_vendor/README.md says where they come
from), so the published history renders with no network: on a GPU box, in CI, from a file server."""
_EXTERNAL_ASSET = re.compile(r"""<(?:script|link)\b[^>]*\b(?:src|href)=["'](https?://[^"']+)["']""")

MACHINE_FIELDS = ("arch", "cpu", "machine", "num_cpu", "os", "ram")
"""The fields of asv's machine.json that each results file repeats in its ``params``."""

LOWER_IS_BETTER = (".track_time", ".track_error")
"""The series asv's step detection may judge: it assumes lower is better. Throughput and % of roofline are
higher-is-better, so asv.conf.json's ``regressions_first_commits`` maps them to null (asv then skips their step
detection); their graphs are published all the same."""


def require_full_history(root: Path) -> None:
    """Refuse a shallow clone: asv publish finds none of the benchmarked commits there and writes an empty site."""
    shallow = subprocess.run(
        ["git", "rev-parse", "--is-shallow-repository"], cwd=root, capture_output=True, text=True
    ).stdout.strip()
    if shallow == "true":
        raise HistoryError(
            "this is a shallow clone, and publishing needs every benchmarked commit of the history: run "
            "`git fetch --unshallow` (or clone without --depth; in GitHub Actions, actions/checkout with "
            "`fetch-depth: 0`), then publish again"
        )


def stage_results(results: Path, stage: Path, bad: list[Path]) -> list[str]:
    """Copy ``results`` to ``stage`` without the files in ``bad``. A machine whose machine.json is bad keeps its
    graphs: its machine.json is rebuilt from the ``params`` its results files repeat. Returns what was done, per
    bad file."""
    skipped = {p.resolve() for p in bad}
    shutil.copytree(results, stage, ignore=lambda d, names: [n for n in names if (Path(d) / n).resolve() in skipped])
    notes = []
    for path in bad:
        rel = path.relative_to(results)
        if path.name != "machine.json":
            notes.append(f"left out {rel}")
            continue
        machine = stage / rel.parent
        params = _machine_params(machine)
        if params:
            history.write_json_atomic(machine / "machine.json", {**params, "version": 1})
            notes.append(f"left out {rel}; {rel.parent}'s graphs use the machine fields of its results files")
        else:
            shutil.rmtree(machine)
            notes.append(f"left out {rel} and the rest of {rel.parent} (no results file to rebuild it from)")
    return notes


def _machine_params(machine: Path) -> dict:
    for path in sorted(machine.glob("*-*.json")):
        try:
            params = json.loads(path.read_text()).get("params", {})
        except (OSError, ValueError, AttributeError):
            continue
        found = {k: params[k] for k in MACHINE_FIELDS if k in params}
        if found.get("machine") == machine.name:
            return found
    return {}


def publish(preview: bool = False, root: Path | None = None) -> int:
    """``python -m benchmarks.history publish``: the whole site into the config's html_dir, or nothing changed."""
    root = root or history.ROOT
    config = history.load_config(root / "asv.conf.json")
    where = root / config["results_dir"]
    require_full_history(root / config["repo"])
    bad = history.check_results(where)
    if not any(where.glob("*/*-*.json")):
        raise HistoryError(f"no results under {_rel(where, root)}: run `nox -s bench` on a GPU first")
    if not (where / "benchmarks.json").exists() or where / "benchmarks.json" in bad:
        raise HistoryError(
            f"{_rel(where, root)}/benchmarks.json is missing or unreadable: run `nox -s bench` once to "
            "write it (asv needs the benchmark list to publish)"
        )
    out = root / config["html_dir"]
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".publish-", dir=out.parent) as scratch:
        scratch = Path(scratch)
        notes = stage_results(where, scratch / "results", bad)
        conf = dict(config)
        conf.update(
            results_dir=str(scratch / "results"),
            html_dir=str(scratch / "html"),
            repo=str(root / config["repo"]),
            benchmark_dir=str(root / config["benchmark_dir"]),
        )
        (scratch / "asv.conf.json").write_text(json.dumps(conf))
        history._asv(["publish"], env=history._sessions_env(), config=scratch / "asv.conf.json")
        built = scratch / "html"
        make_offline(built)
        link_provenance(built)
        provenance.write_page(scratch / "results", built / "provenance.html")
        regressions = surface_regressions(built / "regressions.json", _revisions(built))
        if out.exists():
            shutil.rmtree(out)
        built.rename(out)
    print(
        f"kernelwatch: HTML in {_rel(out, root)}; "
        f"{len(regressions)} regression(s) in the history; provenance in provenance.html"
    )
    if preview:
        history._asv(["preview"], env=history._sessions_env())
    if bad:
        for note in notes:
            print(f"kernelwatch: {note}", file=sys.stderr)
        print(
            f"kernelwatch: {len(bad)} bad results file(s), listed above, were left out; the rest was published",
            file=sys.stderr,
        )
        return 1
    return 0


def _rel(path: Path, root: Path) -> Path:
    return path.relative_to(root) if path.is_relative_to(root) else path


def make_offline(html: Path) -> None:
    """Copy the vendored scripts beside asv's pages and point index.html at them, each with the subresource-integrity
    hash of the local copy (asv's tags carry the CDN files' hashes, which a browser would refuse). Fails loudly when
    asv's page asks for a script or stylesheet that has no local copy (say, after an asv upgrade), rather than
    publish a page that renders empty offline."""
    index = html / "index.html"
    (html / "vendor").mkdir(exist_ok=True)

    def localize(tag: re.Match) -> str:
        text = tag.group(0)
        for url, name in OFFLINE_SCRIPTS.items():
            if f'"{url}"' in text:
                shutil.copyfile(VENDOR / name, html / "vendor" / name)
                digest = base64.b64encode(hashlib.sha384((VENDOR / name).read_bytes()).digest()).decode()
                text = text.replace(url, f"vendor/{name}")
                return re.sub(r'integrity="[^"]*"', f'integrity="sha384-{digest}"', text)
        return text

    text = re.sub(r"<(?:script|link)\b[^>]*>", localize, index.read_text())
    left = _EXTERNAL_ASSET.findall(text)
    if left:
        raise HistoryError(
            f"{index} still loads {', '.join(left)} from the network; add a local copy to benchmarks/www_vendor "
            "and OFFLINE_SCRIPTS in benchmarks/site.py"
        )
    index.write_text(text)


_REGRESSIONS_TAB = re.compile(r'(<li id="nav-li-regressions">.*?</li>)', re.S)
PROVENANCE_TAB = '<li id="nav-li-provenance"><a href="provenance.html">Provenance</a></li>'


def link_provenance(html: Path) -> None:
    """A "Provenance" tab after asv's "Regressions" in index.html's navigation bar, linking provenance.html."""
    index = html / "index.html"
    text = index.read_text()
    if PROVENANCE_TAB in text:
        return
    text, n = _REGRESSIONS_TAB.subn(lambda m: m.group(1) + "\n\t" + PROVENANCE_TAB, text, count=1)
    if not n:
        raise HistoryError(f"{index} has no Regressions tab to put the provenance link after (did asv change it?)")
    index.write_text(text)


def surface_regressions(path: Path, revisions: dict[int, str] | None = None) -> list:
    """Print the regressions asv's step detection found in the history (regressions.json)."""
    if not path.exists():
        return []
    with open(path) as f:
        data = json.load(f).get("regressions", [])
    found = []
    for name, _graph, _params, _idx, _last, _best, jumps in (entry[:7] for entry in data):
        if not name.split("(")[0].endswith(LOWER_IS_BETTER):
            continue
        found.append(name)
        for _rev1, rev2, before, after in jumps:
            at = (revisions or {}).get(rev2, f"revision {rev2}")
            print(f"REGRESSION {name}: {before:.4g} -> {after:.4g} ({after / before:.2f}x) at {at}")
    return found


def _revisions(html: Path) -> dict[int, str]:
    """asv numbers commits by their position on the branch; index.json maps them back to hashes."""
    try:
        with open(html / "index.json") as f:
            return {int(rev): f"commit {sha[:8]}" for rev, sha in json.load(f).get("revision_to_hash", {}).items()}
    except (OSError, ValueError):
        return {}

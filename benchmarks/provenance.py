"""The provenance page of the published history (``provenance.html``): per machine, commit, op, pass and case, the
variant version, the full fingerprint, the autotune choice and the torch, triton and GPU that produced the point.

One self-contained page (its script and style inline, nothing from the network): a table sortable by any column
(click its header) and filtered by machine, op, pass, variant and free text. It needs no torch: publishing runs on
any machine.
"""

from __future__ import annotations

import html
import json
from pathlib import Path

PROVENANCE_KEY = "kernelwatch"
COLUMNS = (
    "machine",
    "commit",
    "date",
    "op",
    "pass",
    "variant",
    "shape",
    "dtype",
    "mode",
    "version",
    "fingerprint",
    "autotune choice",
    "torch",
    "triton",
    "GPU",
)
FILTERS = ("machine", "op", "pass", "variant")
"""The columns with a drop-down filter (each lists the values present)."""


def rows(results: Path) -> list[list[str]]:
    """One row per machine, commit, op, pass and case of every results file under ``results`` (unreadable files are
    left out: publishing names them)."""
    found = []
    for path in sorted(results.glob("*/*-*.json")):
        try:
            with open(path) as f:
                data = json.load(f)
        except (OSError, ValueError):
            continue
        if not isinstance(data, dict):
            continue
        record = data.get(PROVENANCE_KEY, {})
        date = _date(data.get("date"))
        for op, entry in sorted(record.get("ops", {}).items()):
            env = entry.get("environment", {})
            # Results written before the backward series have no "backward" key.
            passes = (("fwd", entry.get("cases", {})), ("bwd", entry.get("backward", {}).get("cases", {})))
            for direction, cases in passes:
                for key, case in sorted(cases.items()):
                    variant, shape, dtype = [*key.split("|"), "", "", ""][:3]
                    autotune = "; ".join(f"{k}: {v}" for k, v in case.get("autotune", {}).items()) or "(not autotuned)"
                    found.append(
                        [
                            path.parent.name,
                            str(data.get("commit_hash", ""))[:8],
                            date,
                            op,
                            direction,
                            variant,
                            shape,
                            dtype,
                            case.get("mode", ""),
                            case.get("version", ""),
                            case.get("fingerprint", ""),  # whole: the lock's fingerprints are compared in full
                            autotune,
                            env.get("torch", ""),
                            env.get("triton", ""),
                            env.get("gpu", ""),
                        ]
                    )
    # Per case, its history in date order.
    order = [COLUMNS.index(c) for c in ("machine", "op", "pass", "variant", "shape", "dtype", "date", "commit")]
    found.sort(key=lambda row: [row[i] for i in order])
    return found


def _date(millis) -> str:
    import datetime

    if not isinstance(millis, int | float):
        return ""
    return datetime.datetime.fromtimestamp(millis / 1000, datetime.UTC).strftime("%Y-%m-%d %H:%M")


_STYLE = (
    "body{font:13px sans-serif;margin:1em}td,th{border:1px solid #ccc;padding:2px 6px;white-space:nowrap}"
    "table{border-collapse:collapse}th{background:#eee;cursor:pointer;position:sticky;top:0}"
    "th[aria-sort=ascending]::after{content:' \\25B2'}th[aria-sort=descending]::after{content:' \\25BC'}"
    "#filters label{margin-right:1em}td.fp{font-family:monospace}"
)

_SCRIPT = """
(function () {
  var table = document.getElementById('provenance');
  var body = table.tBodies[0];
  var rows = Array.prototype.slice.call(body.rows);
  var selects = document.querySelectorAll('#filters select');
  var text = document.getElementById('filter-text');
  var count = document.getElementById('count');
  function apply() {
    var want = {};
    for (var i = 0; i < selects.length; i++) {
      if (selects[i].value) { want[selects[i].getAttribute('data-col')] = selects[i].value; }
    }
    var needle = text.value.toLowerCase();
    var shown = 0;
    rows.forEach(function (row) {
      var ok = true;
      for (var col in want) { if (row.cells[col].textContent !== want[col]) { ok = false; break; } }
      if (ok && needle && row.textContent.toLowerCase().indexOf(needle) < 0) { ok = false; }
      row.hidden = !ok;
      if (ok) { shown++; }
    });
    count.textContent = shown + ' of ' + rows.length + ' rows';
  }
  function sortBy(th) {
    var col = th.cellIndex;
    var dir = th.getAttribute('aria-sort') === 'ascending' ? -1 : 1;
    var heads = table.tHead.rows[0].cells;
    for (var i = 0; i < heads.length; i++) { heads[i].removeAttribute('aria-sort'); }
    th.setAttribute('aria-sort', dir === 1 ? 'ascending' : 'descending');
    rows.sort(function (a, b) {
      return dir * a.cells[col].textContent.localeCompare(b.cells[col].textContent, undefined, {numeric: true});
    });
    rows.forEach(function (row) { body.appendChild(row); });
  }
  var heads = table.tHead.rows[0].cells;
  for (var i = 0; i < heads.length; i++) {
    heads[i].addEventListener('click', function (event) { sortBy(event.currentTarget); });
  }
  for (var j = 0; j < selects.length; j++) { selects[j].addEventListener('change', apply); }
  text.addEventListener('input', apply);
  var query = new URLSearchParams(window.location.search);
  for (var k = 0; k < selects.length; k++) {
    var name = selects[k].getAttribute('data-name');
    if (query.get(name)) { selects[k].value = query.get(name); }
  }
  apply();
})();
"""


def page(found: list[list[str]]) -> str:
    """The HTML of the page for ``rows``."""
    esc = html.escape
    filters = []
    for name in FILTERS:
        col = COLUMNS.index(name)
        values = sorted({row[col] for row in found})
        options = "".join(f"<option>{esc(v)}</option>" for v in values)
        filters.append(
            f'<label>{esc(name)} <select data-col="{col}" data-name="{esc(name)}"><option value="">(all)</option>'
            f"{options}</select></label>"
        )
    fp = COLUMNS.index("fingerprint")
    cells = "\n".join(
        "<tr>" + "".join(f"<td{' class=fp' if i == fp else ''}>{esc(str(c))}</td>" for i, c in enumerate(row)) + "</tr>"
        for row in found
    )
    return (
        "<!doctype html><html lang=en><meta charset=utf-8><title>kernelwatch provenance</title>"
        "<link rel=icon href=swallow.ico>"  # asv's, beside it (without one the browser asks for favicon.ico)
        f"<style>{_STYLE}</style><h1>What produced each point</h1>"
        "<p><a href=index.html>back to the history</a>. Click a column's header to sort by it.</p>"
        f'<p id="filters">{"".join(filters)}<label>text <input id="filter-text" type="search"></label>'
        f'<span id="count">{len(found)} rows</span></p>'
        '<table id="provenance"><thead><tr>'
        + "".join(f"<th>{esc(h)}</th>" for h in COLUMNS)
        + "</tr></thead><tbody>\n"
        + cells
        + f"\n</tbody></table><script>{_SCRIPT}</script></html>\n"
    )


def write_page(results: Path, target: Path) -> None:
    """The provenance page of every results file under ``results``, written to ``target``."""
    target.write_text(page(rows(results)))

"""Every command the docs show is one the project accepts, and the docs site's config names every page.

Commands are taken from the README, CONTRIBUTING.md and docs/: fenced shell blocks, and inline code that starts
with `nox -s` or `python -m kernels`. A nox command must name sessions the noxfile defines. A `python -m kernels`
command must parse with the CLI's own parser. So a renamed session, subcommand or flag fails here, not in a user's
terminal. The sessions themselves run in CI (lint, tests-cpu, docs) or on the GPU runner.
"""

from __future__ import annotations

import argparse
import ast
import re
import shlex
from pathlib import Path

import pytest

from kernels import cli

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", ROOT / "CONTRIBUTING.md", *sorted((ROOT / "docs").glob("*.md"))]
_FENCE = re.compile(r"```(?:bash|sh|console)?\n(.*?)```", re.S)
_INLINE = re.compile(r"`((?:python3? -m nox|nox|python3? -m kernels)\b[^`]*)`")


def _commands() -> list[tuple[str, str]]:
    """(page, command) pairs. A command from a shell block must be complete; one mentioned inline in prose (e.g.
    "`python -m kernels bench` times ...") only has to name a real subcommand, so it is marked with a leading "~"."""
    found = []
    for page in PAGES:
        text = page.read_text()
        lines = [line for block in _FENCE.findall(text) for line in block.splitlines()]
        lines += ["~" + line for line in _INLINE.findall(text)]
        for line in lines:
            line = line.split(" #")[0].strip()
            if re.match(r"^~?(python3? -m nox|nox|python3? -m kernels)\b", line):
                found.append((page.name, line))
    return found


def _sessions() -> set[str]:
    tree = ast.parse((ROOT / "noxfile.py").read_text())
    names = set()
    for node in tree.body:
        if not isinstance(node, ast.FunctionDef):
            continue
        for deco in node.decorator_list:
            call = deco if isinstance(deco, ast.Call) else None
            target = call.func if call else deco
            if ast.unparse(target) != "nox.session":
                continue
            name = node.name.replace("_", "-")
            for kw in call.keywords if call else []:
                if kw.arg == "name":
                    name = kw.value.value
            names.add(name)
    return names


def _placeholders(args: list[str]) -> list[str]:
    """Usage syntax (`OP`, `<op>`, `[--variant V]`) stands for a value; give argparse one."""
    out = []
    for arg in args:
        if arg.startswith("[") or arg.endswith("]"):
            continue
        out.append(re.sub(r"<[^>]+>", "x", arg))
    return out


COMMANDS = _commands()


def test_the_docs_show_commands() -> None:
    pages = {page for page, _ in COMMANDS}
    assert {"README.md", "adding-a-variant.md", "benchmarks.md"} <= pages, pages


@pytest.mark.parametrize(("page", "command"), COMMANDS, ids=[f"{p}:{c}" for p, c in COMMANDS])
def test_every_command_in_the_docs_is_accepted(page: str, command: str) -> None:
    inline = command.startswith("~")
    words = shlex.split(command.lstrip("~").replace("$OUT", "out").replace("$GITHUB_STEP_SUMMARY", "summary"))
    if words[0] == "nox" or words[1:3] == ["-m", "nox"]:
        names, i = [], words.index("-s") + 1 if "-s" in words else len(words)
        while i < len(words) and not words[i].startswith("-"):
            names.append(words[i])
            i += 1
        assert names, f"{page}: `{command}` names no session"
        known = _sessions()
        for name in names:
            assert name.split("(")[0] in known, f"{page}: `{command}`: no nox session {name!r} (have {sorted(known)})"
        return
    parser = cli.build_parser()
    if inline and len(words) <= 4:
        subcommands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices
        assert len(words) == 3 or words[3] in subcommands, f"{page}: `{command}`: no subcommand {words[3]!r}"
        return
    try:
        parser.parse_args(_placeholders(words[3:]))
    except SystemExit as exc:
        pytest.fail(f"{page}: `{command}` is rejected by python -m kernels (exit {exc.code})")


_ITEM = re.compile(r"^( *)(?:[-*+]|\d+\.) +\S")
_FENCE_LINE = re.compile(r"^ *(```|~~~)")


def lists_run_into_paragraphs(text: str) -> list[tuple[int, str]]:
    """(line number, line) of each list item that Python-Markdown (what mkdocs renders with) would fold into the
    paragraph above it: an item right after a line of text, with no blank line between, unless that text belongs to an
    item of the same list (a sibling, or a list nested 4 spaces deeper, as Python-Markdown nests). Fenced code and
    headings end a block as a blank line does."""
    found: list[tuple[int, str]] = []
    fence = None
    boundary = True  # the previous line ended a block: blank, a heading or a fence
    block_item: int | None = None  # indentation of the item this block (paragraph) started with, or None for text
    prev_is_item = False
    for number, line in enumerate(text.splitlines(), 1):
        opener = _FENCE_LINE.match(line)
        if fence is not None:
            if opener and opener.group(1) == fence:
                fence, boundary = None, True
            continue
        if opener:
            fence, boundary = opener.group(1), True
            continue
        if not line.strip() or line.startswith("#"):
            boundary, block_item, prev_is_item = True, None, False
            continue
        item = _ITEM.match(line)
        if item:
            indent = len(item.group(1))
            if boundary:
                block_item = indent
            elif block_item is None or (block_item < indent < block_item + 4 and not prev_is_item):
                found.append((number, line))  # the list's first item: its siblings fold with it
                block_item = indent
        elif boundary:
            block_item = None
        boundary, prev_is_item = False, bool(item)
    return found


def test_the_list_check_sees_what_python_markdown_folds() -> None:
    assert lists_run_into_paragraphs("Text:\n- a\n- b\n") == [(2, "- a")]
    assert lists_run_into_paragraphs("Text:\n\n- a\n  more\n- b\n    - nested\n\n1. c\n") == []
    assert lists_run_into_paragraphs("- a\n  text:\n  - b\n") == [(3, "  - b")]
    assert lists_run_into_paragraphs("1. a\n\n   para\n2. b\n") == [(4, "2. b")]
    assert lists_run_into_paragraphs("## Head\n- a\n```\nx\n- not a list\n```\n") == []


@pytest.mark.parametrize("page", [*PAGES, *sorted((ROOT / "docs").rglob("*/*.md"))], ids=lambda p: p.name)
def test_every_list_is_preceded_by_a_blank_line(page: Path) -> None:
    """A list right after a line of text renders as a run-on paragraph ("... as follows: - a - b"). The support
    matrix page is generated (kernels/support.py), so a miss there is the generator's."""
    bad = lists_run_into_paragraphs(page.read_text())
    where = "; ".join(f"line {n}: {line.strip()[:60]}" for n, line in bad)
    assert not bad, f"{page.relative_to(ROOT)}: add a blank line before (or indent a nested list 4 spaces): {where}"


def test_the_site_lists_every_page() -> None:
    config = (ROOT / "mkdocs.yml").read_text()
    for page in sorted((ROOT / "docs").glob("*.md")):
        assert f": {page.name}" in config, f"docs/{page.name} is not in mkdocs.yml's nav"


def test_the_offline_check_finds_what_a_browser_would_fetch(tmp_path) -> None:
    from tests import site_offline

    (tmp_path / "js").mkdir()
    (tmp_path / "js" / "mermaid-1.0.0.min.js").write_text("")
    pages = {
        "fonts.html": '<link rel="stylesheet" href="https://fonts.googleapis.com/css?family=Roboto">',
        "diagram.html": '<pre class="mermaid">flowchart LR</pre><script src="assets/bundle.js"></script>',
        "fine.html": '<a href="https://github.com/x/y">a link is fine</a><script src="js/mermaid-1.0.0.min.js">'
        '</script><pre class="mermaid">flowchart LR</pre>',
    }
    for name, text in pages.items():
        (tmp_path / name).write_text(text)
    found = site_offline.problems(tmp_path)
    assert any(p.startswith("fonts.html: <link> fetches https://fonts.googleapis.com") for p in found), found
    assert any(p.startswith("diagram.html: has a mermaid diagram but loads no mermaid") for p in found), found
    assert not [p for p in found if p.startswith("fine.html")], found


def test_the_site_is_configured_to_work_offline() -> None:
    """What the built site's check (`nox -s docs` runs tests/site_offline.py) needs of mkdocs.yml: no web fonts, and a
    vendored, pinned mermaid that Material uses instead of its CDN's."""
    config = (ROOT / "mkdocs.yml").read_text()
    assert re.search(r"^  font: false$", config, re.M), "Material fetches Google Fonts unless font: false"
    scripts = re.findall(r"^  - (js/mermaid-[\d.]+\.min\.js)", config, re.M)
    assert scripts and (ROOT / "docs" / scripts[0]).stat().st_size > 1_000_000, "vendor a mermaid build under docs/js"
    assert "mermaid" in (ROOT / "docs" / "architecture.md").read_text()


def test_the_built_site_fetches_nothing_from_another_host(tmp_path) -> None:
    """Builds the site where mkdocs is installed (the docs session runs the same check on every build)."""
    import shutil
    import subprocess

    from tests import site_offline

    mkdocs = shutil.which("mkdocs")
    if mkdocs is None:
        pytest.skip("mkdocs is not installed here; `nox -s docs` runs this check after its build")
    subprocess.run(
        [mkdocs, "build", "--strict", "-q", "-d", str(tmp_path / "site")],
        cwd=ROOT,
        check=True,
        env={**__import__("os").environ, "NO_MKDOCS_2_WARNING": "1"},
    )
    assert site_offline.problems(tmp_path / "site") == []

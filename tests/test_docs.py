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


def test_the_site_lists_every_page() -> None:
    config = (ROOT / "mkdocs.yml").read_text()
    for page in sorted((ROOT / "docs").glob("*.md")):
        assert f": {page.name}" in config, f"docs/{page.name} is not in mkdocs.yml's nav"

"""A throw-away copy of this checkout, for tests that edit variant files and run the CLI or pytest on them."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


class Tree:
    def __init__(self, path: Path):
        self.path = path

    def write(self, relative: str, text: str) -> Path:
        target = self.path / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
        return target

    def edit(self, relative: str, old: str, new: str) -> None:
        target = self.path / relative
        text = target.read_text()
        assert old in text, f"{old!r} not in {relative}"
        target.write_text(text.replace(old, new, 1))

    def run(self, *args: str, check: bool = False) -> subprocess.CompletedProcess:
        """``python ARGS`` inside the tree, importing the tree's kernels and variants (not this checkout's)."""
        env = {**os.environ, "PYTHONPATH": str(self.path), "KERNELWATCH_LOCK": str(self.path / "variants.lock")}
        env.pop("PYTEST_XDIST_WORKER", None)
        proc = subprocess.run(
            [sys.executable, *args], cwd=self.path, env=env, capture_output=True, text=True, timeout=900
        )
        if check and proc.returncode != 0:
            raise AssertionError(f"python {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
        return proc


def copy_checkout(dest: Path) -> Tree:
    for name in ("kernels", "variants", "tests"):
        shutil.copytree(ROOT / name, dest / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "variants.lock"):
        if (ROOT / name).exists():
            shutil.copy2(ROOT / name, dest / name)
    return Tree(dest)

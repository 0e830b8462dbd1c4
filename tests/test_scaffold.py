"""`python -m kernels new OP NAME` writes a variant that passes the suite as generated, and refuses bad requests."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from kernels import scaffold
from kernels.errors import RegistrationError

ROOT = Path(__file__).resolve().parent.parent


def _copy_checkout(dest: Path) -> Path:
    for name in ("kernels", "variants", "tests", "pyproject.toml", "variants.lock"):
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(src, dest / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(src, dest / name)
    return dest


def _run(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "TRITON_INTERPRET": "1", "KERNELWATCH_LOCK": str(cwd / "variants.lock")}
    env.pop("PYTHONPATH", None)
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=900)


@pytest.mark.slow
@pytest.mark.interpreter_subprocess
def test_a_scaffolded_variant_passes_the_suite_as_generated(tmp_path) -> None:
    repo = _copy_checkout(tmp_path)
    made = _run(repo, "-m", "kernels", "new", "softmax", "mine")
    assert made.returncode == 0, made.stdout + made.stderr
    source = (repo / "variants" / "softmax" / "mine.py").read_text()
    assert "DELEGATES TO softmax.naive until edited" in source.splitlines()[0]
    assert 'variant."softmax.mine"' in (repo / "variants.lock").read_text()

    listed = _run(repo, "-m", "kernels", "list", "softmax")
    assert "mine" in listed.stdout and "0.1.0" in listed.stdout, listed.stdout + listed.stderr
    assert _run(repo, "-m", "kernels", "lock", "--check").returncode == 0

    # Every generated test of the new variant (reference, naive, backward, determinism), plus the lock check.
    tests = _run(
        repo, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:xdist",
        "tests/test_correctness.py", "tests/test_versioning.py", "-k", "mine or lock",
    )  # fmt: skip
    assert tests.returncode == 0, tests.stdout[-4000:] + tests.stderr[-2000:]
    summary = tests.stdout.strip().splitlines()[-1]
    assert " passed" in summary and "failed" not in summary, summary


@pytest.mark.parametrize(
    ("op", "name", "message"),
    [
        ("softmax", "naive", "already exists"),
        ("softmax", "Mine", "lower_snake_case"),
        ("no_such_op", "mine", "unknown op 'no_such_op'"),
    ],
)
def test_bad_requests_are_refused_and_write_nothing(op, name, message) -> None:
    before = sorted(p.name for p in (ROOT / "variants").rglob("*.py"))
    lock = (ROOT / "variants.lock").read_text()
    with pytest.raises(RegistrationError, match=message):
        scaffold.new_variant(op, name)
    assert sorted(p.name for p in (ROOT / "variants").rglob("*.py")) == before
    assert (ROOT / "variants.lock").read_text() == lock


@pytest.mark.parametrize("op", ["softmax", "cross_entropy"])
def test_the_scaffold_holds_a_masked_triton_kernel_to_edit_in_place(op) -> None:
    """The generated file has a @triton.jit skeleton with masks, switched off (USE_KERNEL = False) so the variant
    delegates until edited; the skeleton itself runs, and its mask holds at a size that is no multiple of BLOCK."""
    import torch

    from kernels import backend, registry

    registry.discover()
    source = scaffold.render(op, "mine")
    assert "@triton.jit" in source and "mask = offsets < n_elements" in source
    assert "USE_KERNEL = False" in source and "if USE_KERNEL:" in source
    # Everything above the registration: the kernel and its launch, without registering a variant here.
    namespace: dict = {}
    exec(compile(source[: source.index("@register(")], f"variants/{op}/mine.py", "exec"), namespace)
    device = backend.device()
    x = torch.randn(3, 517, device=device)
    out = torch.full((3, 517), float("nan"), device=device)
    assert namespace["_launch"](x, out, BLOCK=256) is out
    assert torch.equal(out, x)
    pair = (torch.full((1500,), float("nan"), device=device), torch.zeros(2, device=device))
    assert namespace["_launch"](x, pair)[0].equal(x.flatten()[:1500]), "an op with several outputs: the first"

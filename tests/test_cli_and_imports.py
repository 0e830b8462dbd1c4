"""`python -m kernels list`, and the loud refusal to run against a `kernels` that is not ours."""

from __future__ import annotations

import json
import subprocess
import sys
import types

import pytest

from kernels import registry
from tests import conftest
from tests.tree import ROOT


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "kernels", *args], cwd=ROOT, capture_output=True, text=True)


def test_list_prints_a_table_of_every_variant() -> None:
    run = _cli("list")
    assert run.returncode == 0, run.stderr
    header = run.stdout.splitlines()[0].split()
    assert header == ["op", "variant", "version", "dtypes", "min", "CC", "interp", "determ", "bwd", "fingerprint"]
    for v in registry.all_variants():
        assert any(
            line.split()[:3] == [v.op, v.name, v.version] and v.fingerprint in line for line in run.stdout.splitlines()
        ), f"{v.key} missing from the table"


def test_list_json_matches_the_registry() -> None:
    run = _cli("list", "--json")
    assert run.returncode == 0, run.stderr
    rows = {(r["op"], r["variant"]): r for r in json.loads(run.stdout)}
    assert len(rows) == len(registry.all_variants())
    fp8 = rows[("matmul", "fp8")]
    assert fp8["dtypes"] == ["e4m3"] and fp8["min_cc"] == "8.9" and fp8["backward"] is False
    assert rows[("matmul", "splitk_atomic")]["deterministic"] is False
    assert rows[("softmax", "fused")]["limits"] == {"cols": [1, 32768]}


def test_list_one_op() -> None:
    run = _cli("list", "softmax", "--json")
    assert {r["op"] for r in json.loads(run.stdout)} == {"softmax"}
    assert _cli("list", "nonsense").returncode == 2


def test_lock_check_passes_on_the_committed_tree() -> None:
    run = _cli("lock", "--check")
    assert run.returncode == 0, run.stderr


def test_a_foreign_kernels_package_is_refused_loudly(monkeypatch) -> None:
    impostor = types.ModuleType("kernels")
    impostor.__file__ = "/site-packages/kernels/__init__.py"
    monkeypatch.setitem(sys.modules, "kernels", impostor)
    with pytest.raises(pytest.UsageError, match="NOT kernelwatch's kernels package"):
        conftest._check_imports()


def test_a_stale_install_of_ours_is_refused(monkeypatch) -> None:
    stale = types.ModuleType("kernels")
    stale.__file__ = "/elsewhere/site-packages/kernels/__init__.py"
    stale.__kernelwatch__ = True
    monkeypatch.setitem(sys.modules, "kernels", stale)
    monkeypatch.delenv("KERNELWATCH_ALLOW_FOREIGN_TREE", raising=False)
    with pytest.raises(pytest.UsageError, match="not this checkout"):
        conftest._check_imports()


@pytest.mark.parametrize("interpret", ["", "1"], ids=["no-backend", "interpreter"])
def test_bench_without_a_gpu_is_one_clean_line(interpret: str) -> None:
    """With no GPU and no TRITON_INTERPRET, backend.name() raises: bench must still answer in one line."""
    import os

    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"} | {"CUDA_VISIBLE_DEVICES": ""}
    if interpret:
        env["TRITON_INTERPRET"] = interpret
    run = subprocess.run(
        [sys.executable, "-m", "kernels", "bench", "softmax"], cwd=ROOT, capture_output=True, text=True, env=env
    )
    assert run.returncode == 2, run.stderr
    assert "Traceback" not in run.stderr, run.stderr
    assert run.stderr.strip().startswith("error: bench needs a CUDA GPU"), run.stderr
    assert len(run.stderr.strip().splitlines()) == 1, run.stderr

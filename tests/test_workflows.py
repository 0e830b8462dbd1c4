"""The workflows' Triton matrices follow kernels/triton_matrix.py, so a version added there is tested on the GPU
runners and the CI subset stays the one the README and the support matrix describe."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from kernels import triton_matrix

WORKFLOWS = Path(__file__).resolve().parent.parent / ".github" / "workflows"


def _triton_axis(workflow: str) -> list[str]:
    text = (WORKFLOWS / workflow).read_text()
    found = re.findall(r"^\s+triton:\s*(\[.*\])\s*$", text, flags=re.MULTILINE)
    assert len(found) == 1, f"{workflow}: expected one `triton: [...]` matrix axis, found {len(found)}"
    return ast.literal_eval(found[0])


def test_gpu_matrix_covers_every_supported_triton() -> None:
    assert _triton_axis("gpu.yml") == list(triton_matrix.VERSIONS)


def test_cpu_matrix_is_the_ci_subset_less_what_tests_cpu_runs() -> None:
    # tests-cpu (in .ci/run) runs NEWEST; the triton job adds the rest of CI_SUBSET.
    expected = [v for v in triton_matrix.CI_SUBSET if v != triton_matrix.NEWEST]
    assert _triton_axis("cpu.yml") == expected
    assert triton_matrix.NEWEST in triton_matrix.CI_SUBSET


def test_gpu_runner_labels_are_declared() -> None:
    declared = set(re.findall(r"^\s+-\s+(\S+)\s*$", (WORKFLOWS.parent / "actionlint.yaml").read_text(), re.MULTILINE))
    gpus = re.findall(r"^\s+gpu:\s*\[(.*)\]\s*$", (WORKFLOWS / "gpu.yml").read_text(), flags=re.MULTILINE)
    assert len(gpus) == 1
    models = {g.strip() for g in gpus[0].split(",")}
    assert models <= declared, f"runner labels not declared in .github/actionlint.yaml: {models - declared}"


def test_ci_script_runs_the_same_subset() -> None:
    script = (WORKFLOWS.parent.parent / ".ci" / "run").read_text()
    sessions = re.findall(r"tests-triton\(triton='([0-9.]+)'\)", script)
    assert sessions == _triton_axis("cpu.yml"), ".ci/run and cpu.yml's triton job must run the same versions"

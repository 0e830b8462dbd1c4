"""Spreading over GPUs: workers dealt round-robin, ops split evenly, per-GPU results merged into one file."""

from __future__ import annotations

import json

import pytest

from benchmarks import history
from kernels import gpus


def test_workers_are_dealt_round_robin_over_the_gpus() -> None:
    assert [gpus.worker_gpu(f"gw{i}", ["0", "1"]) for i in range(5)] == ["0", "1", "0", "1", "0"]
    with pytest.raises(ValueError, match="not a pytest-xdist worker"):
        gpus.worker_gpu("master", ["0", "1"])


def test_a_worker_is_pinned_only_in_a_multi_gpu_run(monkeypatch) -> None:
    monkeypatch.setenv("PYTEST_XDIST_WORKER", "gw3")
    monkeypatch.setenv(gpus.GPUS_ENV, "4,5")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "4,5")
    assert gpus.pin_this_worker() == "5"
    monkeypatch.setenv(gpus.GPUS_ENV, "0")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert gpus.pin_this_worker() is None


def test_ops_are_split_into_balanced_groups_covering_each_once() -> None:
    weights = {"matmul": 6, "softmax": 4, "rmsnorm": 4, "add": 1, "rope": 2, "gelu": 2}
    groups = gpus.split(weights, 2)
    assert sorted(op for g in groups for op in g) == sorted(weights)
    totals = [sum(weights[op] for op in g) for g in groups]
    assert max(totals) - min(totals) <= 1, groups
    assert gpus.split({"add": 1}, 2) == [["add"]]  # never an empty group


def test_per_gpu_results_merge_into_one_file(tmp_path) -> None:
    def results(names, prov_ops):
        return {
            "commit_hash": "c" * 40,
            "result_columns": ["result"],
            "results": {f"ops.{n}.track_time": [[1.0]] for n in names},
            "durations": {f"ops.{n}.track_time": 1.0 for n in names},
            history.PROVENANCE_KEY: {"ops": {op: {"run": "new"} for op in prov_ops}},
            "version": 2,
        }

    main = tmp_path / "main.json"
    old = results(["Softmax", "Add"], ["softmax", "add"])
    old[history.PROVENANCE_KEY]["ops"]["add"] = {"run": "old"}
    main.write_text(json.dumps(old))
    part0, part1 = tmp_path / "p0.json", tmp_path / "p1.json"
    part0.write_text(json.dumps(results(["Softmax"], ["softmax"])))
    part1.write_text(json.dumps(results(["CrossEntropy"], ["cross_entropy"])))
    merged = history.merge_results(main, [(part0, ["softmax"]), (part1, ["cross_entropy"])])
    assert set(merged["results"]) == {"ops.Softmax.track_time", "ops.Add.track_time", "ops.CrossEntropy.track_time"}
    assert merged[history.PROVENANCE_KEY]["ops"]["add"] == {"run": "old"}  # not rerun: kept as it was
    assert merged[history.PROVENANCE_KEY]["ops"]["cross_entropy"] == {"run": "new"}


def test_a_worker_hands_gpu_memory_back_only_above_the_limit(monkeypatch) -> None:
    """tests/conftest.py releases a worker's cached GPU memory after a test only when it holds more than
    memory.HOLD_BYTES: the garbage collection a release needs first is too slow to run after every test."""
    import torch

    from kernels import memory

    released = []
    monkeypatch.setattr(memory, "release", released.append)
    monkeypatch.setattr(torch.cuda, "memory_reserved", lambda device=None: 3 << 30)
    memory.release_above("cuda", memory.HOLD_BYTES)
    memory.release_above("cuda", 4 << 30)
    memory.release_above("cpu", 0)
    assert released == ["cuda"]

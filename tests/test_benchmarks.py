"""The asv suite and the history tools, on the CPU: the suite enumerates (and runs, under the interpreter) every
variant; the gate's verdicts and exit codes; bad results files; and the committed history publishes."""

from __future__ import annotations

import dataclasses
import importlib
import json
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from benchmarks import history, provenance, site
from kernels import backend, benchsuite, registry, spec
from kernels.dtypes import short
from tests.test_registry import NEW_VARIANT
from tests.tree import ROOT, copy_checkout

registry.discover()
ops_module = importlib.import_module("benchmarks.ops")


def test_every_variant_is_a_benchmark_parameter() -> None:
    for op in spec.OPS:
        variants = registry.variants_of(op)
        if not variants:
            continue
        cls = getattr(ops_module, ops_module.class_name(op))
        names, shapes, dtypes = cls.params
        assert names == [v.name for v in variants]
        assert shapes == [benchsuite.shape_label(s) for s in spec.get(op).bench_shapes or spec.get(op).gpu_shapes]
        assert dtypes == [short(d) for d in spec.get(op).bench_dtypes]
        assert cls.version == ops_module.VERSION
        for series in ("track_time", "track_throughput", "track_roofline", "track_error"):
            assert getattr(cls, series).unit
        # Every variant is timed at some shape and dtype of its op (none is only ever skipped).
        timed = {c.variant.name for c in benchsuite.cases(op, smoke_run=False)}
        assert timed == {v.name for v in variants}, f"{op}: variants never benchmarked: {set(names) - timed}"
        backward = getattr(ops_module, ops_module.backward_class_name(op), None)
        assert (backward is not None) == spec.get(op).has_backward, op
        if backward is not None:
            # The same grid as the forward: a variant with no backward is a parameter whose points are skipped.
            assert backward.params == cls.params and backward.param_names == cls.param_names
            assert backward.version == ops_module.VERSION
            for series in ("track_time", "track_throughput", "track_roofline", "track_error"):
                assert getattr(backward, series).unit == getattr(cls, series).unit or series == "track_roofline"
            assert history._backward_class(op) == backward.__name__
        assert history._class(op) == cls.__name__


def test_backward_cases_are_the_forward_cases_of_variants_with_a_backward() -> None:
    for op in spec.OPS:
        forward = benchsuite.cases(op, smoke_run=False)
        backward = benchsuite.cases(op, smoke_run=False, direction="bwd")
        with_backward = {v.name for v in registry.variants_of(op) if spec.get(op).has_backward and v.backward}
        assert {c.variant.name for c in backward} == with_backward, op
        # Same shapes, dtypes and modes as the forward, for exactly those variants.
        same = [dataclasses.replace(c, direction="bwd") for c in forward if c.variant.name in with_backward]
        assert backward == same, op
        assert all(c.direction == "bwd" for c in backward)


def test_a_variant_without_a_backward_is_not_a_backward_case() -> None:
    import torch

    assert registry.get("matmul", "fp8").backward is None
    assert "fp8" not in {c.variant.name for c in benchsuite.cases("matmul", direction="bwd")}
    assert "fp8" in {c.variant.name for c in benchsuite.cases("matmul")}
    reason = benchsuite.why_not("matmul", "fp8", (16, 8192, 8192), torch.float8_e4m3fn, "bwd")
    assert reason.startswith("matmul.fp8 has no backward: fp8 path is inference-only")
    assert benchsuite.why_not("matmul", "fp8", (16, 8192, 8192), torch.float8_e4m3fn) is None
    # An op with no backward has no backward cases and no backward benchmark class.
    assert benchsuite.cases("quantize", direction="bwd") == []
    assert benchsuite.why_not("quantize", "naive", (8192, 8192), torch.bfloat16, "bwd") == "quantize has no backward"
    assert not hasattr(ops_module, ops_module.backward_class_name("quantize"))


def _measure(op: str) -> dict:
    """One op's report entry at the smoke shapes on this machine's backend, each case run once by a fake timer."""

    def once(fn):
        fn()
        return [1.0]

    run = benchsuite.Run(backend.device(), once, float("nan"), smoke=True)
    return benchsuite.measure_op(op, run, log=lambda line: None)


def test_the_backward_error_series_passes_a_real_gradient_and_catches_a_wrong_one(monkeypatch) -> None:
    # layernorm has no tl.dot (so the interpreter computes it right) and three variants with a backward; its smallest
    # CPU shape, 1x7, has gradients for x, weight and bias that are not all zero.
    data = _measure("layernorm")
    backward = data["backward"]
    assert set(backward["cases"]) == set(data["cases"]) and backward["skipped"] == {}
    for key, case in backward["cases"].items():
        assert 0 < case["error"] < 1, (key, case["error"])
        assert case["samples"] == [1.0] and case["fingerprint"].startswith("src1:") and case["mode"] == "default"
    # bench.model's backward bytes: dy read, and x, weight and bias read and their gradients written.
    rows, cols = 1, 7
    nbytes = 2 * (rows * cols + 2 * (rows * cols + 2 * cols))
    assert backward["cases"]["fused|1x7|bf16"]["throughput"] == pytest.approx(nbytes / 1e-3 / 1e9)

    fused = registry.get("layernorm", "fused")

    def doubled(inputs, out, grad_out):
        return {name: 2 * grad for name, grad in fused.backward(inputs, out, grad_out).items()}

    monkeypatch.setitem(registry._VARIANTS, fused.key, dataclasses.replace(fused, backward=doubled))
    broken = _measure("layernorm")
    assert broken["backward"]["cases"]["fused|1x7|bf16"]["error"] > 10
    assert broken["backward"]["cases"]["naive|1x7|bf16"]["error"] < 1
    # The forward is untouched, and so is its series.
    assert broken["cases"]["fused|1x7|bf16"]["error"] == data["cases"]["fused|1x7|bf16"]["error"]


def test_a_gradient_the_backward_leaves_out_is_as_wrong_as_can_be(monkeypatch) -> None:
    fused = registry.get("layernorm", "fused")

    def no_bias(inputs, out, grad_out):
        grads = fused.backward(inputs, out, grad_out)
        return {name: grad for name, grad in grads.items() if name != "bias"}

    monkeypatch.setitem(registry._VARIANTS, fused.key, dataclasses.replace(fused, backward=no_bias))
    assert _measure("layernorm")["backward"]["cases"]["fused|1x7|bf16"]["error"] == benchsuite.ERROR_CAP


def test_provenance_records_the_backward_cases() -> None:
    report = {"environment": {}, "copy_gbs": 1.0, "ops": {"layernorm": _measure("layernorm")}}
    recorded = benchsuite.provenance(report)["ops"]["layernorm"]
    assert set(recorded["backward"]["cases"]) == set(recorded["cases"])
    assert set(recorded["backward"]["cases"]["fused|1x7|bf16"]) == {"version", "fingerprint", "autotune", "mode"}
    assert recorded["roofline"] == recorded["backward"]["roofline"] == "copy bandwidth"
    json.dumps(recorded)


def test_the_issue_shapes_are_tracked() -> None:
    assert {(4096, 4096, 4096), (8192, 8192, 8192), (1024, 1024, 65536), (16, 8192, 8192)} <= set(
        spec.get("matmul").bench_shapes
    )
    assert (16384, 8192) in spec.get("softmax").bench_shapes


def test_a_grid_point_that_is_not_a_case_says_why() -> None:
    import torch

    assert "does not support dtype" in benchsuite.why_not("matmul", "naive", (16, 8192, 8192), torch.float8_e4m3fn)
    assert "supports 1 <= cols <= 32768" in benchsuite.why_not("softmax", "fused", (256, 131072), torch.bfloat16)
    assert benchsuite.why_not("softmax", "fused", (16384, 8192), torch.bfloat16) is None


def test_a_new_variant_file_is_benchmarked(tmp_path) -> None:
    tree = copy_checkout(tmp_path)
    shutil.copytree(ROOT / "benchmarks", tmp_path / "benchmarks", ignore=shutil.ignore_patterns("results", "host"))
    tree.write("variants/softmax/mine.py", textwrap.dedent(NEW_VARIANT))
    probe = "import benchmarks.ops as o; print(o.Softmax.params[0])"
    out = tree.run("-c", probe, check=True).stdout
    assert "'mine'" in out, out


@pytest.mark.interpreter_subprocess
def test_the_suite_runs_every_case_under_the_interpreter() -> None:
    """The CPU smoke check: asv discovers the suite, runs setup_cache and all four series for every case."""
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.history", "smoke"], cwd=ROOT, capture_output=True, text=True, timeout=900
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    forward = sum(len(benchsuite.cases(op, smoke_run=True)) for op in spec.OPS)
    backward = sum(len(benchsuite.cases(op, smoke_run=True, direction="bwd")) for op in spec.OPS)
    assert backward > 0
    assert f"ran all {forward} forward and {backward} backward cases" in proc.stdout


# -- the gate ---------------------------------------------------------------------------------------------------


def _point(value: float, spread: float, n: int = 200) -> history.Point:
    import random

    rng = random.Random(int(value * 1e6))
    samples = [value * (1 + rng.uniform(-spread, spread)) for _ in range(n)]
    from asv_runner.statistics import compute_stats

    _, stats = compute_stats(samples, 1)
    return history.Point("ops.Softmax.track_time", ("fused", "16384x8192", "bf16"), value, samples, stats)


KEY = ("ops.Softmax.track_time", ("fused", "16384x8192", "bf16"))


@pytest.mark.parametrize(
    ("base", "head", "status"),
    [
        (1.00, 1.00, "unchanged"),
        (1.00, 1.08, "regression"),
        (1.00, 1.03, "unchanged"),  # significant, but under the factor
        (1.08, 1.00, "improvement"),
    ],
)
def test_judge_needs_both_significance_and_the_factor(base, head, status) -> None:
    (verdict,) = history.judge({KEY: _point(base, 0.005)}, {KEY: _point(head, 0.005)}, factor=1.05)
    assert verdict.status == status


def test_noise_wider_than_the_change_is_not_a_regression() -> None:
    # Two draws from one wide distribution: the ratio may pass the factor, Mann-Whitney does not call it.
    (verdict,) = history.judge({KEY: _point(1.0, 0.5, n=6)}, {KEY: _point(1.06, 0.5, n=6)}, factor=1.05)
    assert verdict.status == "unchanged" and not verdict.significant


def test_a_variant_that_stops_working_is_broken() -> None:
    failed = history.Point(KEY[0], KEY[1], None, None, None)
    (verdict,) = history.judge({KEY: _point(1.0, 0.01)}, {KEY: failed}, factor=1.05)
    assert verdict.status == "broken"


def test_report_is_markdown_with_the_verdict_first() -> None:
    verdicts = history.judge({KEY: _point(1.0, 0.005)}, {KEY: _point(1.2, 0.005)}, factor=1.05)
    text = history.report(verdicts, "a" * 40, "b" * 40, "nvidia-h100-80gb-hbm3", 1.05, 2)
    assert text.startswith("### kernelwatch bench-compare: FAIL")
    assert "| Softmax(fused, 16384x8192, bf16) | 1.0000 | 1.2000 | 1.200 | yes | **regression** |" in text


def test_a_changed_variant_is_set_beside_the_best_other_variant(tmp_path) -> None:
    machine = "gpu"
    for sha, fingerprint in (("a" * 40, "src1:old"), ("b" * 40, "src1:new")):
        results = tmp_path / sha[0] / machine
        results.mkdir(parents=True)
        cases = {
            "fused|16384x8192|bf16": {"fingerprint": fingerprint},
            "online|16384x8192|bf16": {"fingerprint": "src1:same"},
        }
        (results / f"{sha[:8]}-kernelwatch.json").write_text(
            json.dumps({history.PROVENANCE_KEY: {"ops": {"softmax": {"cases": cases}}}})
        )
    changed = history.changed_variants(tmp_path / "a", tmp_path / "b", machine, "a" * 40, "b" * 40)
    assert changed == {("Softmax", "fused")}
    online = ("ops.Softmax.track_time", ("online", "16384x8192", "bf16"))
    head = {KEY: _point(1.2, 0.005), online: _point(1.0, 0.005)}
    lines = history.versus_best(head, changed)
    assert "| Softmax(fused, 16384x8192, bf16) | 1.2000 | online | 1.0000 | 1.200 |" in lines
    assert history.versus_best(head, set()) == []


BACKWARD_KEY = ("ops.SoftmaxBackward.track_time", ("fused", "16384x8192", "bf16"))


def test_the_gate_judges_backward_benchmarks_like_any_other() -> None:
    base = {KEY: _point(1.0, 0.005), BACKWARD_KEY: _point(1.0, 0.005)}
    head = {KEY: _point(1.0, 0.005), BACKWARD_KEY: _point(1.2, 0.005)}
    verdicts = {v.name: v.status for v in history.judge(base, head, factor=1.05)}
    assert verdicts == {
        "Softmax(fused, 16384x8192, bf16)": "unchanged",
        "SoftmaxBackward(fused, 16384x8192, bf16)": "regression",
    }
    # --op softmax runs both of its classes, and no other op's.
    (flag, pattern) = history._bench_regex(["softmax"])
    assert flag == "--bench"
    assert re.match(pattern, "ops.Softmax.track_time") and re.match(pattern, "ops.SoftmaxBackward.track_error")
    assert not re.match(pattern, "ops.Gelu.track_time") and not re.match(pattern, "ops.GeluBackward.track_time")


def test_a_changed_variant_is_compared_in_its_backward_class_too(tmp_path) -> None:
    machine = "gpu"
    for sha, fingerprint in (("a" * 40, "src1:old"), ("b" * 40, "src1:new")):
        results = tmp_path / sha[0] / machine
        results.mkdir(parents=True)
        cases = {"fused|16384x8192|bf16": {"fingerprint": fingerprint}}
        record = {"cases": cases, "backward": {"cases": cases}}
        (results / f"{sha[:8]}-kernelwatch.json").write_text(
            json.dumps({history.PROVENANCE_KEY: {"ops": {"softmax": record}}})
        )
    changed = history.changed_variants(tmp_path / "a", tmp_path / "b", machine, "a" * 40, "b" * 40)
    assert changed == {("Softmax", "fused"), ("SoftmaxBackward", "fused")}


def test_a_spread_run_keeps_each_ops_backward_benchmarks(tmp_path) -> None:
    part = tmp_path / "part.json"
    names = ("ops.Softmax.track_time", "ops.SoftmaxBackward.track_time", "ops.Gelu.track_time")
    part.write_text(json.dumps({"results": {n: [1.0] for n in names}, history.PROVENANCE_KEY: {"ops": {}}}))
    merged = history.merge_results(tmp_path / "none.json", [(part, ["softmax"])])
    assert set(merged["results"]) == {"ops.Softmax.track_time", "ops.SoftmaxBackward.track_time"}


def test_the_provenance_page_lists_backward_cases(tmp_path) -> None:
    case = {"version": "1.0.0", "fingerprint": "src1:abc", "autotune": {}, "mode": "default"}
    record = {"cases": {"fused|1x7|bf16": case}, "backward": {"cases": {"fused|1x7|bf16": case}}}
    (tmp_path / "gpu").mkdir()
    (tmp_path / "gpu" / "aaaaaaaa-kernelwatch.json").write_text(
        json.dumps({"commit_hash": "a" * 40, history.PROVENANCE_KEY: {"ops": {"layernorm": record}}})
    )
    provenance.write_page(tmp_path, tmp_path / "provenance.html")
    page = (tmp_path / "provenance.html").read_text()
    assert "<td>layernorm</td><td>fwd</td>" in page and "<td>layernorm</td><td>bwd</td>" in page


def test_the_suite_still_runs_an_older_commits_kernels(monkeypatch) -> None:
    """asv imports this checkout's benchmarks/ops.py beside the kernels (and kernels/benchsuite.py) of the commit
    under test: one from before the backward series has no PASSES and a four-argument why_not, and its forward
    classes must still run (bench-compare's base is such a commit the first time)."""
    import importlib.util

    current = benchsuite.why_not

    def old_why_not(op, variant, shape, dtype):
        return current(op, variant, shape, dtype)

    monkeypatch.delattr(benchsuite, "PASSES")
    monkeypatch.delattr(benchsuite, "roofline_name")
    monkeypatch.setattr(benchsuite, "why_not", old_why_not)
    loader = importlib.util.spec_from_file_location("old_commit_ops", ROOT / "benchmarks" / "ops.py")
    old = importlib.util.module_from_spec(loader)
    loader.loader.exec_module(old)
    assert hasattr(old, "Softmax") and not hasattr(old, "SoftmaxBackward")
    case = {"samples": [1.0], "throughput": 2.0, "pct_roofline": 3.0, "error": 0.5}
    cache = {"ops": {"softmax": {"cases": {"fused|16384x8192|bf16": case}, "skipped": {}}}}
    bench = old.Softmax()
    bench.setup(cache, "fused", "16384x8192", "bf16")
    assert bench.track_error(cache, "fused", "16384x8192", "bf16") == 0.5
    assert old.Softmax.track_roofline.unit == "% of copy bandwidth"


# -- results files ------------------------------------------------------------------------------------------------


def test_a_corrupt_results_file_is_named_and_set_aside(tmp_path, capsys, monkeypatch) -> None:
    monkeypatch.setattr(history, "ROOT", tmp_path)
    machine = tmp_path / "results" / "gpu"
    machine.mkdir(parents=True)
    good = machine / "aaaaaaaa-kernelwatch.json"
    good.write_text(json.dumps({"results": {}, "version": 2}))
    bad = machine / "bbbbbbbb-kernelwatch.json"
    bad.write_text('{"results": {"ops.Softmax.track_time": [1.0,')  # cut off mid-write
    found = history.check_results(tmp_path / "results")
    assert found == [bad]
    assert "bad results file results/gpu/bbbbbbbb-kernelwatch.json" in capsys.readouterr().err
    history.quarantine(found)
    assert not bad.exists() and (machine / "bbbbbbbb-kernelwatch.json.corrupt").exists() and good.exists()


def test_provenance_survives_a_partial_rerun() -> None:
    old = {"ops": {"softmax": {"cases": {"fused|1x1|bf16": {"version": "1.0.0"}}}}}
    new = {"environment": {"triton": "3.6.0"}, "copy_gbs": 3000.0, "ops": {"matmul": {"cases": {}}}}
    merged = history.merge_provenance(old, new)
    assert set(merged["ops"]) == {"softmax", "matmul"}
    assert merged["ops"]["matmul"]["environment"]["triton"] == "3.6.0"


def test_committed_results_name_version_fingerprint_triton_and_autotune() -> None:
    files = sorted((ROOT / "benchmarks" / "results").glob("*/*-kernelwatch.json"))
    assert len({f.name.split("-")[0] for f in files}) >= 5, "the committed history covers at least 5 commits"
    for path in files:
        data = json.loads(path.read_text())
        for op, record in data[history.PROVENANCE_KEY]["ops"].items():
            assert record["environment"]["triton"] and record["environment"]["gpu"], (path, op)
            for key, case in record["cases"].items():
                assert case["version"] and case["fingerprint"].startswith("src1:"), (path, key)
                assert "autotune" in case
        autotuned = data[history.PROVENANCE_KEY]["ops"]["matmul"]["cases"]["autotuned|4096x4096x4096|bf16"]
        assert "BLOCK" in " ".join(autotuned["autotune"].values()), autotuned


def _full_history() -> bool:
    shallow = subprocess.run(
        ["git", "rev-parse", "--is-shallow-repository"], cwd=ROOT, capture_output=True, text=True
    ).stdout.strip()
    return shallow == "false"


@pytest.mark.skipif(not _full_history(), reason="asv publish needs the full git history (clone without --depth)")
def test_the_committed_history_publishes(tmp_path) -> None:
    config = history.load_config()
    config.update(
        html_dir=str(tmp_path / "html"),
        repo=str(ROOT),
        results_dir=str(ROOT / config["results_dir"]),
        benchmark_dir=str(ROOT / config["benchmark_dir"]),
    )
    conf = tmp_path / "asv.conf.json"
    conf.write_text(json.dumps(config))
    proc = subprocess.run(
        [sys.executable, "-m", "asv", "--config", str(conf), "publish"], cwd=ROOT, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    index = json.loads((tmp_path / "html" / "index.json").read_text())
    assert len(index["revision_to_hash"]) >= 5
    graphs = list((tmp_path / "html" / "graphs").rglob("ops.Softmax.track_time.json"))
    assert graphs and any(json.loads(g.read_text()) for g in graphs)
    provenance.write_page(ROOT / config["results_dir"], tmp_path / "html" / "provenance.html")
    assert "src1:" in (tmp_path / "html" / "provenance.html").read_text()
    # The page must render with no network: every script and stylesheet it loads is a local file.
    site.make_offline(tmp_path / "html")
    page = (tmp_path / "html" / "index.html").read_text()
    assert "https://" not in "".join(re.findall(r"<(?:script|link)[^>]*>", page))
    for local in re.findall(r'(?:src|href)="(vendor/[^"]+)"', page):
        assert (tmp_path / "html" / local).stat().st_size > 1000, local


def test_an_unknown_cdn_script_fails_publishing(tmp_path) -> None:
    (tmp_path / "index.html").write_text(
        '<script src="https://code.jquery.com/jquery-3.3.1.min.js"></script>'
        '<script src="https://cdn.example.com/new-plot-lib.js"></script>'
    )
    with pytest.raises(history.HistoryError, match=r"new-plot-lib\.js from the network"):
        site.make_offline(tmp_path)


def test_history_files_are_not_run_as_benchmarks() -> None:
    # asv imports every module of benchmarks/; only ops.py may define benchmarks.
    names = [n for n in dir(history) if n.startswith(("time_", "track_", "mem_", "peakmem_", "timeraw_"))]
    assert names == []
    assert not (Path(ROOT) / "benchmarks" / "host" / "__init__.py").exists()

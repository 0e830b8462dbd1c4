"""The bench command's arithmetic and table, with a fake timer (real timings come only from a GPU run)."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from kernels import backend, bench, spec
from tests.tree import ROOT


def fake_timer(fn):
    fn()  # the variant or peer really runs (under the interpreter on a CPU)
    return [2.0, 1.0, 3.0]  # median 2 ms


def recorder():
    """A timer that runs each call once and keeps what it returned, in call order; and that list."""
    results = []

    def timer(fn):
        results.append(fn())
        return [1.0]

    return timer, results


def no_copy_at_size(nbytes):
    """On a GPU bench.run times a same-size copy with the test's timer too; tests that record what the timer ran
    leave it out so that only the kernels are recorded."""
    return None


def test_rows_carry_metrics_versions_and_the_eager_ratio() -> None:
    shape = (7, 129)
    rows = bench.run("softmax", shapes=[shape], dtype="f32", peers=["eager"], timer=fake_timer, copy_gbs=1000.0)
    names = {(r.name, r.kind) for r in rows}
    assert ("eager", "peer") in names and ("fused", "variant") in names and ("naive", "variant") in names
    nbytes = spec.get("softmax").bytes_moved(shape, torch.float32)
    for r in rows:
        assert r.ms == 2.0
        assert r.gbs == pytest.approx(nbytes / 2e-3 / 1e9)
        assert r.pct_copy == pytest.approx(100 * r.gbs / 1000.0)
        assert r.vs_eager == pytest.approx(1.0)
        assert (r.version != "") == (r.kind == "variant")
    table = bench.format_table(rows, 1000.0)
    assert "copy bandwidth measured in this run: 1000 GB/s" in table and "[eager]" in table


def test_rows_are_also_judged_against_a_copy_of_their_own_bytes() -> None:
    shape = (7, 129)
    asked = []

    def copy_at(nbytes):
        asked.append(nbytes)
        return 500.0

    rows = bench.run(
        "softmax", shapes=[shape], dtype="f32", peers=[], timer=fake_timer, copy_gbs=1000.0, copy_gbs_at=copy_at
    )
    assert asked == [spec.get("softmax").bytes_moved(shape, torch.float32)]  # once per shape, at the model's bytes
    for r in rows:
        assert r.pct_copy_at_size == pytest.approx(100 * r.gbs / 500.0) == pytest.approx(2 * r.pct_copy)
    table = bench.format_table(rows, 1000.0)
    assert "% copy@size" in table and f"{rows[0].pct_copy_at_size:.1f}" in table
    # Without a measure (no room for the copy; the interpreter, where nothing is timed for real) it stays empty.
    assert all(r.pct_copy_at_size is None for r in bench.run("softmax", shapes=[shape], dtype="f32", peers=[],
                                                               timer=fake_timer, copy_gbs=1000.0,
                                                               copy_gbs_at=lambda nbytes: None))  # fmt: skip


def test_variants_that_cannot_take_the_shape_are_left_out() -> None:
    rows = bench.run("softmax", shapes=[(2, 40000)], dtype="f32", peers=[], timer=fake_timer, copy_gbs=1.0)
    assert "fused" not in {r.name for r in rows}  # cols limit 32768
    assert "online" in {r.name for r in rows}


def test_unknown_peer_is_an_error() -> None:
    with pytest.raises(ValueError, match="unknown peers"):
        bench.run("softmax", shapes=[(2, 3)], peers=["liger-typo"], timer=fake_timer, copy_gbs=1.0)


@pytest.mark.skipif(backend.name() == "cuda", reason="on a GPU the command really benchmarks")
def test_bench_refuses_to_time_the_interpreter() -> None:
    run = subprocess.run(
        [sys.executable, "-m", "kernels", "bench", "softmax"], cwd=ROOT, capture_output=True, text=True
    )
    assert run.returncode == 2 and "bench needs a CUDA GPU" in run.stderr


def test_a_peer_that_cannot_run_is_left_out_not_fatal(capsys) -> None:
    from kernels import spec as spec_module

    op_spec = spec_module.get("softmax")

    def refusing():
        def run(x):
            raise RuntimeError("n exceeds the blocksize")

        return run

    original = dict(op_spec.peers)
    op_spec.peers["refuser"] = refusing
    try:
        rows = bench.run(
            "softmax", shapes=[(3, 5)], dtype="f32", peers=["refuser", "eager"], timer=fake_timer, copy_gbs=1.0
        )
    finally:
        op_spec.peers.clear()
        op_spec.peers.update(original)
    assert {r.name for r in rows} >= {"eager", "naive"} and "refuser" not in {r.name for r in rows}
    assert "peer refuser cannot run softmax (3, 5): RuntimeError" in capsys.readouterr().err


def test_backward_rows_time_the_gradient_and_count_its_bytes() -> None:
    shape = (7, 129)
    recording_timer, results = recorder()
    rows = bench.run(
        "softmax",
        shapes=[shape],
        dtype="f32",
        peers=["eager"],
        direction="bwd",
        timer=recording_timer,
        copy_gbs=1.0,
        copy_gbs_at=no_copy_at_size,
    )
    assert {r.direction for r in rows} == {"bwd"} and ("eager", "peer") in {(r.name, r.kind) for r in rows}
    # Default model: dy read, x read, dx written.
    assert all(r.nbytes == 3 * 7 * 129 * 4 for r in rows)
    # What was timed is the gradient: every variant's and the peer's equal autograd's of the reference.
    generator = torch.Generator().manual_seed(0)
    x = spec.get("softmax").make_inputs(shape, torch.float32, backend.device(), generator, "default")["x"]
    x64 = x.double().requires_grad_()
    dy = bench.make_grad_out(spec.get("softmax"), x, shape, generator, backend.device())
    (expected,) = torch.autograd.grad(torch.softmax(x64, -1), x64, dy.double())
    assert len(results) == len(rows)
    for r in results:
        dx = r["x"] if isinstance(r, dict) else r[0]
        torch.testing.assert_close(dx.double(), expected, atol=1e-5, rtol=1e-4)


def test_backward_rows_compute_every_gradient() -> None:
    # conv2d's backward computes dx only for an x that requires grad, as autograd tells it in a training step; the
    # timed backward must be that full one, whose bytes the model counts.
    recording_timer, results = recorder()
    rows = bench.run(
        "conv2d",
        variants=["naive"],
        shapes=[(1, 3, 7, 5, 4, 3, 3, 1, 1)],
        dtype="f32",
        peers=[],
        direction="bwd",
        timer=recording_timer,
        copy_gbs=1.0,
        copy_gbs_at=no_copy_at_size,
    )
    assert len(rows) == len(results) == 1
    assert set(results[0]) == {"x", "weight"}  # the default mode (nhwc) has no bias


def test_forward_backward_uses_the_ops_own_byte_model() -> None:
    shape = (5, 4099)
    rows = bench.run(
        "cross_entropy",
        shapes=[shape],
        dtype="f32",
        peers=["eager"],
        direction="fwd+bwd",
        timer=fake_timer,
        copy_gbs=1.0,
    )
    assert {r.name for r in rows} >= {"fused", "naive", "eager"}
    # Logits read once and their gradient written once, targets read and losses written: not forward + backward.
    assert all(r.nbytes == 2 * 5 * 4099 * 4 + 5 * 12 for r in rows)
    rope = bench.run(
        "rope", shapes=[(1, 2, 1, 7, 8)], dtype="f32", peers=[], direction="bwd", timer=fake_timer, copy_gbs=1.0
    )
    # A linear map: output gradients read, input gradients written, cos and sin read; q and k are not needed.
    assert all(r.nbytes == (2 * (2 + 1) * 7 * 8 + 2 * 7 * 8) * 4 for r in rope)


def test_a_pass_the_op_lacks_is_an_error() -> None:
    with pytest.raises(ValueError, match="no backward"):
        bench.run("quantize", shapes=[(2, 128)], peers=[], direction="bwd", timer=fake_timer, copy_gbs=1.0)
    with pytest.raises(ValueError, match="unknown pass"):
        bench.run("softmax", shapes=[(2, 3)], peers=[], direction="backward", timer=fake_timer, copy_gbs=1.0)


def test_a_mode_that_moves_more_is_counted_so() -> None:
    # rmsnorm's residual mode reads x and the residual and writes the output and the sum: twice the default's bytes.
    rows, cols = 7, 129
    default = bench.run("rmsnorm", shapes=[(rows, cols)], dtype="f32", peers=[], timer=fake_timer, copy_gbs=1.0)
    residual = bench.run(
        "rmsnorm", shapes=[(rows, cols)], dtype="f32", mode="residual", peers=[], timer=fake_timer, copy_gbs=1.0
    )
    assert {r.nbytes for r in default} == {(2 * rows * cols + cols) * 4}
    assert {r.nbytes for r in residual} == {(4 * rows * cols + cols) * 4}

"""The registry: contracts are sound, discovery is loud, and a new variant file is picked up with no other edit."""

from __future__ import annotations

import dataclasses
import json
import textwrap

import pytest
import torch

from kernels import backend, cases, registry, spec
from kernels.errors import KernelInputError
from tests.tree import copy_checkout

registry.discover()


def test_every_op_has_its_variants_and_default() -> None:
    for name, op_spec in spec.OPS.items():
        names = {v.name for v in registry.variants_of(name)}
        assert "naive" in names, f"op {name} has no naive variant (every op keeps its plain reference kernel)"
        assert op_spec.default_variant in names, f"op {name}: default variant {op_spec.default_variant} missing"


def test_expected_variants_are_registered() -> None:
    keys = {v.key for v in registry.all_variants()}
    expected = {
        "add.naive",
        *(f"softmax.{n}" for n in ("naive", "fused", "online", "autotuned")),
        *(f"matmul.{n}" for n in ("naive", "autotuned", "splitk", "splitk_atomic", "fp8", "fused")),
        *(f"layernorm.{n}" for n in ("naive", "fused", "welford")),
        *(f"rmsnorm.{n}" for n in ("naive", "fused", "autotuned", "fused_residual")),
        *(f"{op}.{n}" for op in ("gelu", "swiglu", "rope") for n in ("naive", "fused")),
        "dropout.naive",
        "dropout.seeded",
        "cross_entropy.naive",
        "cross_entropy.fused",
        # Operation catalogue II (issue 5).
        "lora_linear.naive",
        "lora_linear.fused",
        *(f"int8_matmul.{n}" for n in ("naive", "splitk", "autotuned")),
        *(f"{op}.{n}" for op in ("quantize", "dequantize", "nf4_dequantize") for n in ("naive", "fused")),
        *(f"conv2d.{n}" for n in ("naive", "implicit_gemm", "fused", "splitk")),
        *(f"attention.{n}" for n in ("naive", "flash", "flash_autotuned", "fp8")),
        "windowed_rope_attention.naive",
        "windowed_rope_attention.fused",
    }
    assert expected <= keys, f"missing: {sorted(expected - keys)}"


@pytest.mark.parametrize("variant", registry.all_variants(), ids=lambda v: v.key)
def test_contract_is_complete(variant: registry.Variant) -> None:
    assert variant.dtypes, "a variant declares the dtypes it supports"
    assert variant.interpreter or variant.interpreter_reason, "a variant that cannot be interpreted says why"
    if variant.spec.has_backward:
        assert variant.backward is not None or variant.no_backward, "backward, or the reason there is none"
    assert variant.description, f"{variant.key}: its launcher needs a one-line docstring"
    assert cases.cases("interpreter", [variant]) or not variant.interpreter, "no CPU case would test it"


def test_splitk_declares_both_reductions() -> None:
    assert registry.get("matmul", "splitk").deterministic
    assert not registry.get("matmul", "splitk_atomic").deterministic


def test_case_ids_read_well() -> None:
    ids = {c.id for c in cases.cases("interpreter")}
    # The version is the registered one: the id names the exact kernel, and a bump must not break this test.
    splitk, fused = registry.get("matmul", "splitk").version, registry.get("softmax", "fused").version
    assert f"matmul-splitk-v{splitk}-bf16-127x255x63" in ids
    assert f"softmax-fused-v{fused}-f32-7x129" in ids


@pytest.mark.parametrize("name", ["nope", "", "Naive", 3])
def test_unknown_variant_lists_the_known_ones(name) -> None:
    """CONTRIBUTING promises KernelInputError for bad input; the empty string is a bad name, not the default."""
    with pytest.raises(KernelInputError, match="its variants are: naive"):
        registry.get("matmul", name)


def test_an_unknown_variant_through_the_public_api_is_a_kernel_input_error() -> None:
    import kernels

    x = torch.ones(2, 3, device=backend.device())
    for name in ("nope", ""):
        with pytest.raises(KernelInputError, match="has no variant"):
            kernels.softmax(x, variant=name)
    assert registry.get("softmax", None).name == spec.get("softmax").default_variant


# -- discovery on a copy of the tree ---------------------------------------------------------------------------
NEW_VARIANT = '''
"""softmax, mine: a contributor's new variant, dropped in as one file."""

import triton
import triton.language as tl

from kernels.dtypes import FLOATS
from kernels.ops.softmax import as_rows
from kernels.registry import register
from variants.softmax._backward import softmax_backward


@triton.jit
def _mine_kernel(x_ptr, out_ptr, x_row_stride, out_row_stride, cols, BLOCK_COLS: tl.constexpr):
    row = tl.program_id(0)
    offsets = tl.arange(0, BLOCK_COLS)
    mask = offsets < cols
    x = tl.load(x_ptr + row * x_row_stride + offsets, mask=mask, other=-float("inf")).to(tl.float32)
    e = tl.exp(x - tl.max(x, axis=0))
    tl.store(out_ptr + row * out_row_stride + offsets, (e / tl.sum(e, axis=0)).to(out_ptr.dtype.element_ty),
             mask=mask)


@register(op="softmax", name="mine", version="0.1.0", dtypes=FLOATS, limits={"cols": (1, 8192)},
          backward=softmax_backward)
def softmax_mine(x, *, out):
    """A whole row per program."""
    x2, o2 = as_rows(x), as_rows(out)
    rows, cols = x2.shape
    _mine_kernel[(rows,)](x2, o2, x2.stride(0), o2.stride(0), cols, BLOCK_COLS=triton.next_power_of_2(cols))
    return out
'''


@pytest.mark.slow
def test_new_variant_file_is_listed_and_tested(tmp_path) -> None:
    tree = copy_checkout(tmp_path)
    tree.write("variants/softmax/mine.py", textwrap.dedent(NEW_VARIANT))

    listing = json.loads(tree.run("-m", "kernels", "list", "--json", check=True).stdout)
    mine = [r for r in listing if r["op"] == "softmax" and r["variant"] == "mine"]
    assert mine and mine[0]["version"] == "0.1.0" and mine[0]["fingerprint"].startswith("src1:")

    run = tree.run("-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_correctness.py", "-k", "softmax-mine")
    assert run.returncode == 0, run.stdout + run.stderr
    assert "failed" not in run.stdout and " passed" in run.stdout, run.stdout
    collected = tree.run("-m", "pytest", "-q", "--collect-only", "tests/test_correctness.py", "-k", "softmax-mine")
    shape = next(s for s in cases.shapes_for(spec.get("softmax"), backend.name()) if s[1] <= 8192)
    for test in ("test_matches_reference", "test_backward", "test_agrees_with_naive", "test_deterministic"):
        for dtype in ("f32", "f16", "bf16"):
            case_id = f"{test}[softmax-mine-v0.1.0-{dtype}-{shape[0]}x{shape[1]}]"
            assert case_id in collected.stdout, collected.stdout

    # The lock does not know it yet, and says what to do.
    check = tree.run("-m", "kernels", "lock", "--check")
    assert check.returncode == 1 and "softmax.mine v0.1.0 is not in variants.lock: run `nox -s lock`" in check.stderr


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("raise RuntimeError('kernel file is half-written')\n", "RuntimeError: kernel file is half-written"),
        ("def broken(:\n", "SyntaxError"),
        ("import triton\n", "registers no variant"),
    ],
    ids=["raises", "syntax-error", "registers-nothing"],
)
def test_broken_variant_file_fails_loudly_naming_it(tmp_path, body: str, message: str) -> None:
    tree = copy_checkout(tmp_path)
    tree.write("variants/softmax/broken.py", body)
    listing = tree.run("-m", "kernels", "list")
    assert listing.returncode != 0
    assert "variants/softmax/broken.py" in listing.stderr and message in listing.stderr, listing.stderr
    collect = tree.run("-m", "pytest", "-q", "-p", "no:cacheprovider", "--collect-only", "tests/test_correctness.py")
    assert collect.returncode != 0 and "variants/softmax/broken.py" in collect.stdout + collect.stderr


def test_a_gpu_below_the_variants_capability_skips_it_with_the_reason(monkeypatch) -> None:
    monkeypatch.setattr(backend, "name", lambda: "cuda")
    monkeypatch.setattr(backend, "capability", lambda index=0: (8, 0))
    fp8 = registry.get("matmul", "fp8")
    assert fp8.unsupported_backend() == "matmul.fp8 needs compute capability 8.9, this GPU has 8.0"
    assert registry.get("matmul", "naive").unsupported_backend() is None
    monkeypatch.setattr(backend, "capability", lambda index=0: (9, 0))
    assert fp8.unsupported_backend() is None


def test_a_variant_that_cannot_be_interpreted_says_why(monkeypatch) -> None:
    monkeypatch.setattr(backend, "name", lambda: "interpreter")
    variant = registry.get("matmul", "fp8")
    blocked = dataclasses.replace(variant, interpreter=False, interpreter_reason="uses inline PTX")
    assert blocked.unsupported_backend() == "matmul.fp8 does not run in Triton's interpreter: uses inline PTX"

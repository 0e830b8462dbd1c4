"""nf4_dequantize sweep on a GPU (meant for an H200): the 1.0.0 fused kernel, the lookup forms of the 1.1.0 layout
over BLOCKS / TILES / warps, the registered fused variant, naive, and torch.compile of the eager version.

    PYTHONPATH=. python docs/studies/sweep_nf4.py      # from the repository root, on a CUDA GPU; about a minute

For n in (45088768, 67108864), bf16 output, it prints the median ms (kernels.timing.samples_ms, L2 flushed before
every run), % of copy bandwidth with the byte model n/2 + 4 * n/64 + 2n, and whether the output equals the reference
exactly (torch.equal with the float64 reference rounded to fp32 then bf16, which is what the contract asks).

Forms (all share 1.1.0's layout: flat 1-D tiles, 4 packed bytes and 8 values a thread for BLOCKS = 4 * warps, the
next tile's loads issued before the current tile's store):
  table_global  codebook from a 16-entry fp32 table in global memory (an L1-resident gather,
                tl.load(codebook_ptr + code)): the form 1.1.0 had before this sweep chose the next one
  table_shared  the registered kernel (variants/nf4_dequantize/fused.py), launched by hand: the table loaded once a
                program into registers, looked up with tl.gather (Triton puts it in shared memory: 64 bytes, a
                barrier around each lookup)
  select        1.0.0's fifteen-select tree in registers, in the new layout (separates layout from lookup cost)
and old_1.0.0 is a verbatim copy of the 1.0.0 kernel (its [BLOCKS, 32]-byte tile and select tree), over its configs.
"""

from __future__ import annotations

import statistics
import sys
import time
import traceback
from pathlib import Path

import torch
import triton
import triton.language as tl

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository root

import kernels
from kernels import timing
from kernels.ops.nf4_dequantize import NF4_BLOCK, _make_inputs, _torch_nf4_dequantize, reference
from variants.nf4_dequantize import fused, naive

NS = (45088768, 67108864)
DTYPE = torch.bfloat16
DEVICE = "cuda"
DEADLINE_S = 70.0  # the hand-launched candidates stop here; the whole script stays under 90 s
T0 = time.time()


# -- 1.0.0, verbatim (less the autotuner): the [BLOCKS, 32]-byte tile and the select tree ---------------------------
@triton.jit
def _nf4_value(code):
    bit0 = (code & 1) != 0
    v01 = tl.where(bit0, -0.6961928009986877, -1.0)
    v23 = tl.where(bit0, -0.39491748809814453, -0.5250730514526367)
    v45 = tl.where(bit0, -0.18477343022823334, -0.28444138169288635)
    v67 = tl.where(bit0, 0.0, -0.09105003625154495)
    v89 = tl.where(bit0, 0.16093020141124725, 0.07958029955625534)
    v1011 = tl.where(bit0, 0.33791524171829224, 0.24611230194568634)
    v1213 = tl.where(bit0, 0.5626170039176941, 0.44070982933044434)
    v1415 = tl.where(bit0, 1.0, 0.7229568362236023)
    bit1 = (code & 2) != 0
    v0_3 = tl.where(bit1, v23, v01)
    v4_7 = tl.where(bit1, v67, v45)
    v8_11 = tl.where(bit1, v1011, v89)
    v12_15 = tl.where(bit1, v1415, v1213)
    bit2 = (code & 4) != 0
    v0_7 = tl.where(bit2, v4_7, v0_3)
    v8_15 = tl.where(bit2, v12_15, v8_11)
    return tl.where((code & 8) != 0, v8_15, v0_7)


@triton.jit
def _old_kernel(packed_ptr, absmax_ptr, out_ptr, n, NF4_BLOCK: tl.constexpr, BLOCKS: tl.constexpr):
    HALF: tl.constexpr = NF4_BLOCK // 2
    block = tl.program_id(0) * BLOCKS + tl.arange(0, BLOCKS)
    n_blocks = tl.cdiv(n, NF4_BLOCK)
    byte_idx = block[:, None].to(tl.int64) * HALF + tl.arange(0, HALF)[None, :]
    byte = tl.load(packed_ptr + byte_idx, mask=byte_idx < n // 2, other=0)
    absmax = tl.load(absmax_ptr + block, mask=block < n_blocks, other=0.0)[:, None]
    high = _nf4_value(byte >> 4) * absmax
    low = _nf4_value(byte & 0xF) * absmax
    values = tl.interleave(high, low)
    out_idx = block[:, None].to(tl.int64) * NF4_BLOCK + tl.arange(0, NF4_BLOCK)[None, :]
    tl.store(out_ptr + out_idx, values.to(out_ptr.dtype.element_ty), mask=out_idx < n)


OLD_CONFIGS = [(16, 4), (32, 4), (64, 8), (128, 8)]  # (BLOCKS, warps), 1.0.0's autotune list


# -- the other lookup forms in 1.1.0's layout (the registered kernel's _load_tile is reused) ----------------------
@triton.jit
def _store_tile_form(
    packed, absmax, first_byte, bytes_left, codebook_ptr, out_ptr, BYTES: tl.constexpr, FORM: tl.constexpr
):
    if FORM == "global":
        # Masked-off bytes were loaded as 0: code 0, still inside the table.
        high = tl.load(codebook_ptr + (packed >> 4))
        low = tl.load(codebook_ptr + (packed & 0xF))
    else:
        high = _nf4_value(packed >> 4)
        low = _nf4_value(packed & 0xF)
    values = tl.interleave(high * absmax, low * absmax)
    offs = tl.arange(0, 2 * BYTES)
    tl.store(out_ptr + 2 * first_byte + offs, values.to(out_ptr.dtype.element_ty), mask=offs < 2 * bytes_left)


@triton.jit
def _form_kernel(
    packed_ptr,
    absmax_ptr,
    codebook_ptr,
    out_ptr,
    n,
    NF4_BLOCK: tl.constexpr,
    BLOCKS: tl.constexpr,
    TILES: tl.constexpr,
    FORM: tl.constexpr,
):
    BYTES: tl.constexpr = BLOCKS * (NF4_BLOCK // 2)
    tile = tl.program_id(0).to(tl.int64) * TILES
    packed, absmax, first_byte, bytes_left = fused._load_tile(packed_ptr, absmax_ptr, n, tile, NF4_BLOCK, BLOCKS)
    for t in tl.static_range(1, TILES):
        next_tile = fused._load_tile(packed_ptr, absmax_ptr, n, tile + t, NF4_BLOCK, BLOCKS)
        _store_tile_form(packed, absmax, first_byte, bytes_left, codebook_ptr, out_ptr, BYTES, FORM)
        packed, absmax, first_byte, bytes_left = next_tile
    _store_tile_form(packed, absmax, first_byte, bytes_left, codebook_ptr, out_ptr, BYTES, FORM)


# (BLOCKS, TILES, warps): BLOCKS = 4 * warps is 8 bf16 values (one 16-byte store) a thread a tile.
SETTINGS = [(16, 1, 4), (16, 2, 4), (16, 4, 4), (16, 8, 4), (32, 2, 8), (32, 4, 8), (64, 2, 16), (8, 4, 4)]
FORMS = ["table_global", "table_shared", "select"]


def _launch_form(form, blocks, tiles, warps, packed, absmax, codebook, out, n):
    grid = (triton.cdiv(triton.cdiv(n, NF4_BLOCK), blocks * tiles),)
    if form == "table_shared":
        # The registered kernel itself (its JITFunction, under the autotuner), with this config pinned.
        kernel = fused._nf4_kernel.fn
        return lambda: kernel[grid](
            packed, absmax, codebook, out, n, NF4_BLOCK=NF4_BLOCK, BLOCKS=blocks, TILES=tiles, num_warps=warps
        )
    name = {"table_global": "global", "select": "select"}[form]
    return lambda: _form_kernel[grid](
        packed, absmax, codebook, out, n, NF4_BLOCK=NF4_BLOCK, BLOCKS=blocks, TILES=tiles, FORM=name, num_warps=warps
    )


def sweep_n(n, copy_gbs, compiled, results) -> None:
    """Every candidate at n values, appended to results as (n, label, ms, % of copy, exact)."""
    inputs = _make_inputs((n,), DTYPE, DEVICE, torch.Generator().manual_seed(0), None)
    packed, absmax = inputs["packed"], inputs["absmax"]
    want = reference(packed, absmax, (n,)).float().to(DTYPE)
    codebook = naive._codebook(packed.device)
    nbytes = n // 2 + 4 * -(-n // NF4_BLOCK) + 2 * n
    out = torch.empty(n, dtype=DTYPE, device=DEVICE)
    print(f"\nn = {n}  ({nbytes / 1e6:.1f} MB moved, {time.time() - T0:.0f} s in)", flush=True)
    print(f"{'candidate':44s} {'ms':>8s} {'% copy':>7s}  exact", flush=True)

    def run(label, fn, *, returns_output=False, deadline=True):
        if deadline and time.time() - T0 > DEADLINE_S:
            print(f"{label:44s} skipped (past {DEADLINE_S:.0f} s)", flush=True)
            return
        try:
            out.fill_(float("nan"))
            got = fn()
            if DEVICE == "cuda":
                torch.cuda.synchronize()
            exact = torch.equal((got if returns_output else out).reshape(-1), want)
            ms = statistics.median(timing.samples_ms(fn))
            pct = 100 * nbytes / (ms * 1e-3) / 1e9 / copy_gbs
            results.append((n, label, ms, pct, exact))
            print(f"{label:44s} {ms:8.4f} {pct:6.1f}%  {exact}", flush=True)
        except Exception as e:  # report and go on
            print(f"{label:44s} FAILED {type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}")
            traceback.print_exc(limit=2, file=sys.stdout)

    # The registered variant: its autotuner picks among fused.CONFIGS on the first call (timed in full).
    run(
        "fused 1.1.0 (variant .forward, autotuned)",
        lambda: fused.nf4_dequantize_fused.forward(packed, absmax, (n,), DTYPE, out=out),
        deadline=False,
    )
    print(f"{'':44s} chose {getattr(fused._nf4_kernel, 'best_config', None)}", flush=True)
    run(
        "fused 1.1.0 (kernels.nf4_dequantize)",
        lambda: kernels.nf4_dequantize(packed, absmax, shape=(n,), dtype=DTYPE, variant="fused", out=out),
        deadline=False,
    )
    run(
        "naive 1.0.0",
        lambda: kernels.nf4_dequantize(packed, absmax, shape=(n,), dtype=DTYPE, variant="naive", out=out),
        deadline=False,
    )
    run(
        "torch.compile(_torch_nf4_dequantize)",
        lambda: compiled(packed, absmax, (n,), DTYPE),
        returns_output=True,
        deadline=False,
    )
    for blocks, warps in OLD_CONFIGS:
        grid = (triton.cdiv(triton.cdiv(n, NF4_BLOCK), blocks),)
        run(
            f"old_1.0.0 BLOCKS={blocks} w={warps}",
            lambda grid=grid, blocks=blocks, warps=warps: _old_kernel[grid](
                packed, absmax, out, n, NF4_BLOCK=NF4_BLOCK, BLOCKS=blocks, num_warps=warps
            ),
        )
    for form in FORMS:
        for blocks, tiles, warps in SETTINGS:
            run(
                f"{form} BLOCKS={blocks} TILES={tiles} w={warps}",
                _launch_form(form, blocks, tiles, warps, packed, absmax, codebook, out, n),
            )


def main() -> None:
    assert torch.cuda.is_available(), "needs a GPU"
    print(f"{torch.cuda.get_device_name()}  torch {torch.__version__}  triton {triton.__version__}", flush=True)
    copy_gbs = timing.copy_bandwidth_gbs()
    print(f"copy bandwidth {copy_gbs:.0f} GB/s", flush=True)
    compiled = torch.compile(_torch_nf4_dequantize, dynamic=False)
    results = []
    for n in NS:
        sweep_n(n, copy_gbs, compiled, results)
    print("\nbest of each family (% of copy, exact):")
    for n in NS:
        rows = [r for r in results if r[0] == n]
        families = {}
        for _, label, ms, pct, exact in rows:
            family = label.split(" ")[0] if not label.startswith(("fused", "naive", "torch")) else label
            if exact and (family not in families or ms < families[family][1]):
                families[family] = (label, ms, pct)
        for label, ms, pct in sorted(families.values(), key=lambda row: row[1]):
            print(f"  n={n} {label:44s} {ms:8.4f} ms {pct:6.1f}%")
    print(f"\ntotal {time.time() - T0:.0f} s")


if __name__ == "__main__":
    main()

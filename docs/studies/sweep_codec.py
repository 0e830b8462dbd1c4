"""fp8 codec sweep for an H200 (or any sm_90+ GPU): quantize and dequantize, fused, 8192 x 8192 bf16, every mode.

    PYTHONPATH=. python docs/studies/sweep_codec.py      # from the repository root, on a CUDA GPU

About a minute, mostly compiles and tuning. Prints, per mode and op: the median ms (kernels.timing.samples_ms),
% of kernels.timing.copy_bandwidth_gbs() with the ops' byte models, and % of a torch copy_ moving the same bytes
(read + write) as the op's model: the fair ceiling. Then exactness:

* codec: encode / decode kernels (variants/quantize/_codec.py) with HW_FP8 on and off against the float64 rounding,
  on every finite fp8 value, every midpoint and its fp32 neighbours, ties at the subnormal boundary, values past
  FMAX, +-inf, NaNs of both signs and odd payloads, +-0.0, fp32 subnormals; decode on all 256 bytes; plus the raw
  hardware NaN byte (no fix-up), for information;
* ops: the fused variants' codes and scales on the full 8192 x 8192 bf16 input (the timed one, and one carrying
  finite specials: exact ties, an all-(-0.0) block, tiny values, bf16 subnormals; and the same poisoned with a NaN
  and a -inf), bit for bit against the op spec's float64 reference, computed on the GPU; dequantize bit for bit
  against torch's fp32 product rounded once to bf16, over its timed codes and over every code (NaN and inf too).

Every item is wrapped in try/except; the last line says PASS or lists what failed.
"""

from __future__ import annotations

import os
import statistics
import sys
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository root

import torch
import triton
import triton.language as tl

from kernels import dispatch, registry, timing
from kernels.ops import _quant
from kernels.ops import dequantize as deq_op
from kernels.ops import quantize as q_op
from tests.test_quantize import _decode_kernel, _encode_kernel
from variants.quantize import _codec

T0 = time.time()
# SWEEP_DRY=1 TRITON_INTERPRET=1: a logic check on the CPU (256 x 256 fp32, the software codec, no timings).
DRY = os.environ.get("SWEEP_DRY") == "1"
ROWS, COLS = (256, 256) if DRY else (8192, 8192)
DTYPE = torch.float32 if DRY else torch.bfloat16
DEV = torch.device("cpu" if DRY else "cuda")
FAILED: list[str] = []


def log(msg: str) -> None:
    print(f"[{time.time() - T0:6.1f}s] {msg}", flush=True)


def item(name: str, fn, *args, **kwargs):
    try:
        return fn(*args, **kwargs)
    except Exception as exc:
        FAILED.append(name)
        log(f"ERROR {name}: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")
        traceback.print_exc(limit=4)
        return None


def check(name: str, ok: bool, detail: str = "") -> None:
    if not ok:
        FAILED.append(name)
    log(f"{'ok  ' if ok else 'FAIL'} {name}{(': ' + detail) if detail else ''}")


# -- codec kernels: tests/test_quantize.py's probes (_encode_kernel, _decode_kernel), imported above ------------------
@triton.jit
def _raw_cvt_kernel(v_ptr, code_ptr, n, E5M2: tl.constexpr, BLOCK: tl.constexpr):
    # The bare hardware conversion, without the codec's NaN fix-up.
    i = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    v = tl.load(v_ptr + i, mask=i < n)
    if E5M2:  # noqa: SIM108 (a constexpr branch)
        c = v.to(tl.float8e5).to(tl.uint8, bitcast=True)
    else:
        c = v.to(tl.float8e4nv).to(tl.uint8, bitcast=True)
    tl.store(code_ptr + i, c, mask=i < n)


def _f32(bits: list[int]) -> torch.Tensor:
    return torch.tensor(bits, dtype=torch.int64).to(torch.int32).view(torch.float32)


NAN_BITS = [0x7FC00000, 0xFFC00000, 0x7F800001, 0xFF800001, 0x7FFFFFFF, 0xFFFFFFFF, 0x7FA00000, 0xFFA5A5A5]


def _codec_inputs(fmt: str) -> torch.Tensor:
    dtype = _quant.FORMATS[fmt]
    values = torch.arange(256, dtype=torch.int32).to(torch.uint8).view(dtype).float()
    finite = values[torch.isfinite(values)].unique()
    mid = (finite[1:] + finite[:-1]) / 2  # exact ties (the midpoints are fp32 numbers), subnormal ones included
    fmax = _quant.FMAX[fmt]
    mbits, emin = _quant.FP8_GRID[fmt]
    sub = 2.0 ** (emin - mbits)  # the smallest subnormal
    special = torch.tensor(
        [
            fmax, -fmax, fmax * 1.0001, -fmax * 1.0001, fmax * 1.0625, fmax * 1.125, fmax * 2, 1e6, -1e6, 1e30,
            -1e30, 3.0e38, -3.0e38, float("inf"), float("-inf"), 0.0, -0.0, sub / 2, -sub / 2, sub * 1.5, -sub * 1.5,
            sub / 4, -sub / 4, 1e-30, -1e-30, 2.0**-126, -(2.0**-126), 2.0**-149, -(2.0**-149), 2.0**-130,
        ]
    )  # fmt: skip
    nans = _f32(NAN_BITS)
    return torch.cat([finite, mid, torch.nextafter(mid, mid + 1), torch.nextafter(mid, mid - 1), special, nans])


def codec_check(fmt: str, hw: bool) -> None:
    dtype = _quant.FORMATS[fmt]
    name = f"codec {fmt} {'hardware' if hw else 'software'}"
    v = _codec_inputs(fmt)
    code = torch.empty(v.shape, dtype=torch.int32, device=DEV)
    fmt_code = _codec.FORMAT_CODE[fmt]
    _encode_kernel[(triton.cdiv(v.numel(), 256),)](v.to(DEV), code, v.numel(), FORMAT=fmt_code, HW_FP8=hw, BLOCK=256)
    got = code.cpu()
    want = _quant.round_fp8(v.double(), fmt).to(dtype).view(torch.uint8).to(torch.int32)
    want = torch.where(torch.isnan(v), torch.full_like(want, 0x7F), want)
    bad = (got != want).nonzero().flatten()
    detail = ", ".join(
        f"{v[i].item()!r} (bits {v.view(torch.int32)[i].item() & 0xFFFFFFFF:#010x}) -> {got[i].item():#04x} "
        f"want {want[i].item():#04x}"
        for i in bad[:8]
    )
    check(f"{name} encode ({v.numel()} values)", bad.numel() == 0, f"{bad.numel()} differ: {detail}" if detail else "")
    every = torch.arange(256, dtype=torch.int32).to(torch.uint8)
    decoded = torch.empty(256, dtype=torch.float32, device=DEV)
    _decode_kernel[(1,)](every.to(DEV), decoded, 256, FORMAT=fmt_code, HW_FP8=hw, BLOCK=256)
    decoded = decoded.cpu()
    values = every.view(dtype).float()
    same = (decoded.view(torch.int32) == values.view(torch.int32)) | (torch.isnan(decoded) & torch.isnan(values))
    bad = (~same).nonzero().flatten()
    detail = ", ".join(f"{b.item():#04x} -> {decoded[b].item()!r} want {values[b].item()!r}" for b in bad[:8])
    check(f"{name} decode (256 bytes, bits incl. -0.0)", bad.numel() == 0, detail)


def raw_nan_bytes(fmt: str) -> None:
    v = torch.cat([_f32(NAN_BITS), torch.tensor([float("inf"), float("-inf"), -0.0])])
    code = torch.empty(v.shape, dtype=torch.uint8, device=DEV)
    _raw_cvt_kernel[(1,)](v.to(DEV), code, v.numel(), E5M2=fmt == "e5m2", BLOCK=32)
    got = [f"{b:#04x}" for b in code.cpu().tolist()]
    labels = [f"{b:#010x}" for b in NAN_BITS] + ["+inf", "-inf", "-0.0"]
    log(f"info raw cvt {fmt} (no fix-up): " + ", ".join(f"{lab}->{g}" for lab, g in zip(labels, got, strict=True)))


# -- ops -----------------------------------------------------------------------------------------------------------
Q_FUSED = registry.get("quantize", "fused")
D_FUSED = registry.get("dequantize", "fused")


def groups(granularity: str) -> int:
    return {"tensor": 1, "row": ROWS, "block": ROWS * (COLS // _quant.BLOCK)}[granularity]


def q_bytes(granularity: str) -> int:
    return q_op._bytes((ROWS, COLS), DTYPE, granularity)


def d_bytes(granularity: str) -> int:
    # dequantize's model is for row scales (q read, x written, one fp32 scale per row): the scales per granularity.
    return deq_op.SPEC.bytes_moved((ROWS, COLS), DTYPE) - 4 * ROWS + 4 * groups(granularity)


COPY_MS: dict[int, float] = {}


def samples_ms(fn) -> list[float]:
    if DRY:
        start = time.perf_counter()
        fn()
        return [1e3 * (time.perf_counter() - start)]
    return timing.samples_ms(fn)


def copy_ms(nbytes: int) -> float:
    """A device copy_ whose read + write bytes are ``nbytes``."""
    if nbytes not in COPY_MS:
        src = torch.empty(nbytes // 2, dtype=torch.uint8, device=DEV).random_()
        dst = torch.empty_like(src)
        COPY_MS[nbytes] = statistics.median(samples_ms(lambda: dst.copy_(src)))
        del src, dst
    return COPY_MS[nbytes]


def report(op: str, mode: str, ms: float, nbytes: int, copy_gbs: float) -> None:
    gbs = nbytes / (ms * 1e-3) / 1e9
    c_ms = item(f"copy {nbytes}", copy_ms, nbytes)
    fair = f"{100 * c_ms / ms:5.1f} % of same-bytes copy ({c_ms:.4f} ms)" if c_ms else "same-bytes copy failed"
    log(f"{op:10s} {mode:12s} {ms:8.4f} ms  {gbs:7.0f} GB/s  {100 * gbs / copy_gbs:5.1f} % of copy  {fair}")


def quantize_inputs(x: torch.Tensor, mode: str) -> dict:
    fmt, granularity = _quant.split_mode(mode)
    return {"x": x, "qdtype": _quant.FORMATS[fmt], "granularity": granularity}


def run_quantize(inputs: dict):
    out = q_op.SPEC.make_output(inputs)
    return dispatch.call_forward(Q_FUSED, inputs, out, None)


def expected_codes(x: torch.Tensor, fmt: str, granularity: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The float64 reference (on the GPU) as the bytes / int8 the kernels store, NaN as 0x7F; and its scale."""
    want_q, want_scale = _quant.reference_quantize(x, fmt, granularity)
    if fmt == "int8":
        return want_q.to(torch.int8), want_scale.float()
    bits = want_q.to(_quant.FORMATS[fmt]).view(torch.uint8)
    return torch.where(torch.isnan(want_q), torch.full_like(bits, 0x7F), bits), want_scale.float()


def exact_quantize(label: str, x: torch.Tensor, mode: str, expect_q: dict | None = None) -> None:
    fmt, granularity = _quant.split_mode(mode)
    q, scale = run_quantize(quantize_inputs(x, mode))
    got = q if fmt == "int8" else q.view(torch.uint8)
    want, want_scale = expected_codes(x, fmt, granularity)
    diff = got != want
    n = int(diff.sum())
    detail = ""
    if n:
        idx = diff.nonzero()[:6].tolist()
        detail = "; ".join(
            f"[{r},{c}] x={x[r, c].item()!r} got {int(got[r, c]) & 0xFF:#04x} want {int(want[r, c]) & 0xFF:#04x}"
            for r, c in idx
        )
    check(f"quantize fused {mode} {label}: codes bit-exact", n == 0, f"{n} differ: {detail}" if n else "")
    same_scale = torch.equal(torch.isnan(scale), torch.isnan(want_scale)) and torch.equal(
        scale.nan_to_num(nan=0.0), want_scale.nan_to_num(nan=0.0)
    )
    check(f"quantize fused {mode} {label}: scales exact", same_scale)
    if expect_q:
        for what, (mask, byte) in expect_q.items():
            vals = got[mask]
            ok = vals.numel() > 0 and bool((vals.to(torch.int32) & 0xFF == byte).all())
            check(f"quantize fused {mode} {label}: {what} -> {byte:#04x}", ok, f"{vals.numel()} elements")
    del q, scale, got, want


def exact_dequantize(label: str, q: torch.Tensor, scale: torch.Tensor, granularity: str) -> None:
    inputs = {"q": q, "scale": scale, "granularity": granularity, "dtype": DTYPE}
    out = deq_op.SPEC.make_output(inputs)
    got = dispatch.call_forward(D_FUSED, inputs, out, None)
    # The op's definition: the product in fp32, rounded once to bf16 (torch's upcast decodes every code exactly).
    want = (q.float() * _quant.expand_scale(scale, q.shape[1], granularity)).to(DTYPE)
    nan = torch.isnan(want)
    as_int = {2: torch.int16, 4: torch.int32}[got.element_size()]
    same = (got.view(as_int) == want.view(as_int)) | (nan & torch.isnan(got))
    n = int((~same).sum())
    detail = ""
    if n:
        r, c = (~same).nonzero()[0].tolist()
        byte = q.view(torch.uint8)[r, c].item() if q.dtype != torch.int8 else q[r, c].item()
        detail = f"{n} differ, e.g. [{r},{c}] code {byte} got {got[r, c].item()!r} want {want[r, c].item()!r}"
    check(f"dequantize fused {_quant.mode(_quant.FORMAT_OF[q.dtype], granularity)} {label}: bit-exact", n == 0, detail)


def special_input(fmt: str, base: torch.Tensor) -> tuple[torch.Tensor, dict]:
    """``base`` with finite specials: row 0 is exact ties (scale 2**-3 in every granularity but tensor), the first
    block of row 1 is all -0.0 (floor scale; codes 0x80), row 2 holds values 2**-24 times smaller (subnormal-range
    quotients for tensor scales), and row 3 bf16 subnormals; masks of what must code to a known byte."""
    x = base.clone()
    step = 2.0**-3
    ties = {
        "int8": [0.5, 1.5, 2.5, -0.5, -1.5, -2.5, 126.5],
        "e4m3": [1.0625, 1.1875, -1.0625, 2.0**-10, -(2.0**-10), 3 * 2.0**-10, 432.0, 2.0**-11],
        "e5m2": [1.125, 1.375, -1.375, 2.0**-17, -(2.0**-17), 3 * 2.0**-17, 53248.0, 2.0**-18],
    }[fmt]
    row = torch.full((COLS,), step, dtype=torch.float64)
    row[0] = _quant.FMAX[fmt] * step
    pattern = torch.tensor(ties, dtype=torch.float64) * step
    for start in range(128, COLS, 128):  # every block: its absmax FMAX * step at column 0 of the block
        row[start] = _quant.FMAX[fmt] * step
        row[start + 1 : start + 1 + pattern.numel()] = pattern
    row[1 : 1 + pattern.numel()] = pattern
    x[0] = row.to(DTYPE)
    x[1, :128] = -0.0
    x[2] = (x[2].double() * 2.0**-24).to(DTYPE)
    x[3, ::2] = torch.tensor(2.0**-133, dtype=DTYPE)  # bf16 subnormals
    x[3, 1::2] = torch.tensor(-(2.0**-130), dtype=DTYPE)
    expect = {}
    if fmt != "int8":
        mask = torch.zeros(ROWS, COLS, dtype=torch.bool, device=DEV)
        mask[1, :128] = True
        expect["-0.0 block"] = (mask, 0x80)
    return x, expect


def poisoned(x: torch.Tensor, fmt: str, granularity: str) -> tuple[torch.Tensor, dict]:
    """``x`` with NaNs of both signs at [5, 3] and [5, 4] and a -inf at [6, 200], next to a -1.0 at [6, 201]: the
    NaNs and the inf code 0x7F, and the rest of their groups +-0 (the -1.0: 0x80) where the group's scale is inf,
    0x7F where it is NaN (a tensor scale sees the NaN), bit for bit as the reference says."""
    x = x.clone()
    x[5, 3] = float("nan")
    x[5, 4] = -float("nan")
    x[6, 200] = float("-inf")
    x[6, 201] = -1.0
    expect = {}
    if fmt != "int8":
        m = torch.zeros(ROWS, COLS, dtype=torch.bool, device=DEV)
        m[5, 3:5] = True
        m[6, 200] = True
        expect["NaN, -NaN and -inf"] = (m, 0x7F)
        m2 = torch.zeros(ROWS, COLS, dtype=torch.bool, device=DEV)
        m2[6, 201] = True
        expect["-1.0 in the -inf's group"] = (m2, 0x7F if granularity == "tensor" else 0x80)
    return x, expect


def reference_on_gpu_matches_cpu(x: torch.Tensor) -> None:
    """The float64 reference runs on the GPU here (on the CPU it would take minutes): first check that it gives the
    CPU's codes (ldexp, frexp, round and division in float64 on CUDA) on the codec inputs and a slice of x."""
    for fmt in ("e4m3", "e5m2"):
        v = _codec_inputs(fmt).double()
        cpu = _quant.round_fp8(v, fmt)
        gpu = _quant.round_fp8(v.to(DEV), fmt).cpu()
        same = (cpu.view(torch.int64) == gpu.view(torch.int64)) | (torch.isnan(cpu) & torch.isnan(gpu))
        check(f"reference round_fp8 {fmt}: GPU == CPU", bool(same.all()))
        for granularity in _quant.GRANULARITIES:
            part = x[:64]
            c, cs = _quant.reference_quantize(part.cpu(), fmt, granularity)
            g, gs = _quant.reference_quantize(part, fmt, granularity)
            ok = torch.equal(c.view(torch.int64), g.cpu().view(torch.int64)) and torch.equal(cs, gs.cpu())
            check(f"reference_quantize {fmt}_{granularity} on 64 rows: GPU == CPU", ok)


def main() -> None:
    where = "interpreter (dry run)" if DRY else torch.cuda.get_device_name()
    if not DRY:
        where += f" sm_{''.join(map(str, torch.cuda.get_device_capability()))}"
    log(f"{where}; torch {torch.__version__}; triton {triton.__version__}; hw_fp8={_codec.hw_fp8(DEV)}")
    if not _codec.hw_fp8(DEV):
        log("WARNING: hw_fp8 is False here: the variants take the software codec")
    for fmt in ("e4m3", "e5m2"):
        for hw in (False, True) if not DRY else (False,):
            item(f"codec {fmt} hw={hw}", codec_check, fmt, hw)
        if not DRY:
            item(f"raw nan bytes {fmt}", raw_nan_bytes, fmt)

    copy_gbs = float("nan") if DRY else item("copy bandwidth", timing.copy_bandwidth_gbs) or float("nan")
    log(f"copy bandwidth {copy_gbs:.0f} GB/s (1 GiB read + written)")
    g = torch.Generator(device=DEV).manual_seed(0)
    base = (torch.randn((ROWS, COLS), generator=g, device=DEV) * 3.0).to(DTYPE)
    item("reference on GPU", reference_on_gpu_matches_cpu, special_input("e4m3", base)[0])
    for mode in _quant.MODES:
        fmt, granularity = _quant.split_mode(mode)

        def timed(mode=mode, fmt=fmt, granularity=granularity):
            inputs = quantize_inputs(base, mode)
            out = q_op.SPEC.make_output(inputs)
            dispatch.call_forward(Q_FUSED, inputs, out, None)  # compile and tune
            ms = statistics.median(samples_ms(lambda: dispatch.call_forward(Q_FUSED, inputs, out, None)))
            report("quantize", mode, ms, q_bytes(granularity), copy_gbs)
            q, scale = out
            d_inputs = {"q": q, "scale": scale, "granularity": granularity, "dtype": DTYPE}
            d_out = deq_op.SPEC.make_output(d_inputs)
            dispatch.call_forward(D_FUSED, d_inputs, d_out, None)
            ms = statistics.median(samples_ms(lambda: dispatch.call_forward(D_FUSED, d_inputs, d_out, None)))
            report("dequantize", mode, ms, d_bytes(granularity), copy_gbs)
            return q, scale

        qs = item(f"time {mode}", timed)
        item(f"exact quantize {mode} timed input", exact_quantize, "randn*3", base, mode)
        if qs is not None:
            item(f"exact dequantize {mode} timed codes", exact_dequantize, "quantized randn*3", *qs, granularity)
        x, expect = special_input(fmt, base)
        item(f"exact quantize {mode} specials", exact_quantize, "finite specials", x, mode, expect)
        xp, expect_p = poisoned(x, fmt, granularity)
        item(f"exact quantize {mode} poisoned", exact_quantize, "NaN/-inf groups", xp, mode, expect_p)
        del x, xp
        # Every code (NaN and inf included) tiled over the full shape, under the mode's scale layout.
        every = torch.arange(256, dtype=torch.int32, device=DEV).to(torch.uint8).repeat(ROWS * COLS // 256)
        q_all = every.view(ROWS, COLS)
        q_all = q_all.view(torch.int8) if fmt == "int8" else q_all.view(_quant.FORMATS[fmt])
        sg = torch.Generator(device=DEV).manual_seed(1)
        scale = torch.rand(_quant.scale_shape(ROWS, COLS, granularity), generator=sg, device=DEV) + 0.5
        item(f"exact dequantize {mode} every code", exact_dequantize, "every code", q_all, scale, granularity)
        del every, q_all
        if not DRY:
            torch.cuda.empty_cache()
    log("same-bytes copies: " + ", ".join(f"{b / 2**20:.1f} MiB {ms:.4f} ms" for b, ms in sorted(COPY_MS.items())))
    log(f"done in {time.time() - T0:.1f} s: " + ("PASS" if not FAILED else f"FAILED: {', '.join(FAILED)}"))


if __name__ == "__main__":
    item("main", main)
    if FAILED:
        sys.exit(1)

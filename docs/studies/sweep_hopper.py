"""Sweep of flash_hopper's forward configs at issue 5's shape on a Hopper GPU.

    PYTHONPATH=. python docs/studies/sweep_hopper.py      # from the repository root, on a Hopper GPU

B 4, H 32, S 4096, D 128, bf16, without a mask and causal. For each mask it times (median of kernels.timing's
samples) every hand-launched flash_hopper config, _flash.flash_forward_kernel's two best configs, the registered
(autotuned) flash_hopper, and torch SDPA, and prints ms, TFLOP/s (4 * B * H * S * S * D, halved for causal), the
ratio to SDPA and each config's max abs error against SDPA. Then a few odd shapes (ragged lengths, grouped-query
heads, small head_dim) against SDPA and a float32 reference, logsumexp included. Every config runs in its own
try/except; a budget stops the sweep before 150 s.
"""

import statistics
import sys
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository root

import torch
import triton

import kernels
from kernels import backend, timing
from variants.attention import _flash, _flash_tma

START = time.time()
BUDGET_S = float(__import__("os").environ.get("SWEEP_BUDGET_S", 135))
B, H, S, D = 4, 32, 4096, 128
DT = torch.bfloat16
HOPPER = [(128, n, w, s) for n in (64, 128) for w in (4, 8) for s in (2, 3, 4)]
POINTER = [(128, 64, 8, 3), (128, 128, 8, 3)]


def over_budget() -> bool:
    return time.time() - START > BUDGET_S


def median_ms(fn) -> float:
    return statistics.median(timing.samples_ms(fn))


def sdpa(q, k, v, causal):
    return torch.nn.functional.scaled_dot_product_attention(
        q, k, v, is_causal=causal, enable_gqa=q.shape[1] != k.shape[1]
    )


def pointer_launch(q, k, v, out, causal, cfg):
    block_m, block_n, warps, stages = cfg
    Bq, Hq, Sq, Dq = q.shape
    args = (q, k, v, out, None, None, Dq**-0.5, Hq, Hq // k.shape[1], Sq, k.shape[2],
            *q.stride(), *k.stride(), *v.stride(), *out.stride())  # fmt: skip
    _flash.flash_forward_kernel[(triton.cdiv(Sq, block_m), Bq * Hq)](
        *args, CAUSAL=causal, STORE_LSE=False, FP8=False, ROUND_FP8_P=False, HEAD_DIM=Dq,
        BLOCK_M=block_m, BLOCK_N=block_n, num_warps=warps, num_stages=stages,
    )  # fmt: skip
    return out


def hopper_launch(q, k, v, out, causal, cfg, lse=None):
    block_m, block_n, warps, stages = cfg
    return _flash_tma.launch_forward_config(
        q, k, v, out, causal=causal, scale=None, lse=lse,
        block_m=block_m, block_n=block_n, num_warps=warps, num_stages=stages,
    )  # fmt: skip


def row(name, ms, flops, sdpa_ms, err=None):
    tflops = flops / (ms * 1e-3) / 1e12
    ratio = sdpa_ms / ms
    tail = "" if err is None else f"  max|err| vs SDPA {err:.3e}"
    print(f"  {name:<34} {ms:8.3f} ms {tflops:7.1f} TFLOP/s  {ratio:5.3f}x SDPA{tail}", flush=True)


def sweep(causal: bool) -> None:
    gen = torch.Generator(device="cuda").manual_seed(0)
    q, k, v = (torch.randn((B, H, S, D), dtype=DT, device="cuda", generator=gen) for _ in range(3))
    flops = 4 * B * H * S * S * D // (2 if causal else 1)
    want = sdpa(q, k, v, causal)
    sdpa_ms = median_ms(lambda: sdpa(q, k, v, causal))
    print(f"\n== {'causal' if causal else 'no mask'}: B{B} H{H} S{S} D{D} {DT}", flush=True)
    row("torch SDPA", sdpa_ms, flops, sdpa_ms)
    out = torch.empty_like(q)
    results = []
    kinds = (("flash_hopper", hopper_launch, HOPPER), ("_flash pointer", pointer_launch, POINTER))
    for label, launch, configs in kinds:
        for cfg in configs:
            name = f"{label} {cfg[0]}x{cfg[1]} w{cfg[2]} s{cfg[3]}"
            if over_budget():
                print(f"  {name:<34} skipped: over the {BUDGET_S} s budget", flush=True)
                continue
            try:
                out.fill_(float("nan"))
                launch(q, k, v, out, causal, cfg)
                torch.cuda.synchronize()
                err = (out.float() - want.float()).abs().max().item()
                ms = median_ms(lambda launch=launch, cfg=cfg: launch(q, k, v, out, causal, cfg))
                row(name, ms, flops, sdpa_ms, err)
                results.append((ms, name))
            except Exception as exc:  # a config that fails to compile, run or fit is reported, not fatal
                print(f"  {name:<34} FAILED: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")
                traceback.print_exc(limit=2)
    if not over_budget():
        try:
            got = kernels.attention(q, k, v, causal=causal, variant="flash_hopper")
            err = (got.float() - want.float()).abs().max().item()
            ms = median_ms(lambda: kernels.attention(q, k, v, causal=causal, variant="flash_hopper"))
            row("flash_hopper registered (autotuned)", ms, flops, sdpa_ms, err)
            tuner = _flash_tma_tuner()
            if tuner is not None:
                print(f"  autotuner chose {tuner.best_config}")
        except Exception as exc:
            print(f"  flash_hopper registered FAILED: {type(exc).__name__}: {exc}")
            traceback.print_exc(limit=3)
    if results:
        ms, name = min(results)
        print(f"  best: {name} {ms:.3f} ms, {sdpa_ms / ms:.3f}x SDPA (target >= 0.90x)")


def _flash_tma_tuner():
    from kernels import tuning

    for owner, tuner in tuning.TUNERS:
        if owner == "variants.attention.flash_hopper":
            return tuner
    return None


def odd_shapes() -> None:
    """Ragged lengths, grouped-query heads and small head_dims with one config: output against SDPA and the
    logsumexp against float32, as the backward reads it (base 2, [B * Hq, Sq])."""
    print("\n== odd shapes, flash_hopper 128x64 w8 s3 (fp16 and bf16)", flush=True)
    shapes = [(1, 2, 1, 17, 33, 16, True), (2, 3, 3, 63, 63, 128, True), (1, 4, 2, 1000, 1000, 64, False),
              (2, 8, 2, 1000, 777, 128, True), (1, 4, 4, 257, 4096, 128, False)]  # fmt: skip
    gen = torch.Generator(device="cuda").manual_seed(1)
    for dtype in (torch.float16, torch.bfloat16):
        for b, hq, hkv, sq, sk, d, causal in shapes:
            if over_budget():
                print("  skipped: over the budget")
                return
            name = f"{b}x{hq}x{hkv}x{sq}x{sk}x{d} {'causal' if causal else 'full'} {dtype}"
            try:
                q = torch.randn((b, hq, sq, d), dtype=dtype, device="cuda", generator=gen)
                k, v = (torch.randn((b, hkv, sk, d), dtype=dtype, device="cuda", generator=gen) for _ in range(2))
                out = torch.full_like(q, float("nan"))
                lse = torch.full((b * hq, sq), float("nan"), dtype=torch.float32, device="cuda")
                hopper_launch(q, k, v, out, causal, (128, 64, 8, 3), lse=lse)
                want = sdpa(q.float(), k.float(), v.float(), causal)
                err = (out.float() - want).abs().max().item()
                group = hq // hkv
                s = (q.float() @ k.float().repeat_interleave(group, 1).transpose(-1, -2)) * d**-0.5
                if causal:
                    s = s.masked_fill(~torch.ones(sq, sk, dtype=torch.bool, device="cuda").tril(), float("-inf"))
                want_lse = (torch.logsumexp(s, -1) * 1.4426950408889634).reshape(b * hq, sq)
                lse_err = (lse - want_lse).abs().max().item()
                print(f"  {name:<40} max|out err| {err:.3e}  max|lse err| {lse_err:.3e}", flush=True)
            except Exception as exc:
                print(f"  {name:<40} FAILED: {type(exc).__name__}: {exc}")
                traceback.print_exc(limit=2)


def main() -> None:
    print(backend.describe(), "| torch", torch.__version__, "| triton", triton.__version__, flush=True)
    for causal in (False, True):
        sweep(causal)
    odd_shapes()
    print(f"\ntotal {time.time() - START:.0f} s")


if __name__ == "__main__":
    main()

"""Isolate what limits the catalogue II ops that miss their targets (one GPU, < 150 s).

    PYTHONPATH=. python docs/studies/isolate.py      # from the repository root, on a CUDA GPU

Times (median ms, kernels.timing.samples_ms unless said otherwise), bf16:

1. Ceilings at each op's own size: copy_ of the same bytes (64, 128, 192, 256 and 1024 MB moved), and a read-only
   pass (int8 8192 x 8192 weight amax), timed as the bench times (do_bench, L2 flushed with a write), and again with
   the flush's dirty lines cleaned by a read of a second buffer before each run (own CUDA-event loop): do the
   flush's write-backs cost a small kernel its target?
2. int8_matmul decode (8192 x 8192 int8 weight, M = 1 and 16): the autotuned kernel under both timings; the same
   kernel on a bf16 copy of the weight (no conversion, twice the bytes): what the in-loop int8 -> bf16 conversion
   costs per byte.
3. lora_linear (M 8192, N 4096, K 4096, rank 16): fused against our best Triton GEMM (matmul autotuned) on the base
   layer alone and cuBLAS: the adapter's cost inside the fused kernel, apart from how fast a Triton GEMM is at all.
4. conv2d (ResNet-50 layers at batch 32, channels-last): implicit_gemm / fused / splitk against cuDNN, matmul
   autotuned and cuBLAS on the dense GEMM of the same dims (M = N*H*W, N = K_out, K = C*R*S): what the on-the-fly
   im2col gather costs.
5. attention (B 4, H 32, S 4096, D 128, without a mask and causal): torch.profiler over a training step of
   flash_hopper and of SDPA: time per kernel.
"""

import statistics
import time
import traceback

import torch

import kernels
from kernels import backend, timing

dev = "cuda"
bf = torch.bfloat16
T0 = time.time()
print(backend.describe(), flush=True)
copy_gbs = timing.copy_bandwidth_gbs()
print(f"copy 1 GiB: {copy_gbs:.0f} GB/s", flush=True)
clean = torch.empty(512 << 20, dtype=torch.uint8, device=dev)
flush = torch.empty(256 << 20, dtype=torch.uint8, device=dev)


def bench_ms(fn):
    return statistics.median(timing.samples_ms(fn))


def clean_ms(fn, n=50):
    """Median of n runs, each after a write flush and then a read of a 512 MB buffer (evicts the dirty lines)."""
    fn()
    torch.cuda.synchronize()
    out = []
    for _ in range(n):
        flush.zero_()
        clean.max()
        s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        s.record()
        fn()
        e.record()
        torch.cuda.synchronize()
        out.append(s.elapsed_time(e))
    return statistics.median(out)


def show(name, nbytes, fn):
    try:
        a, b = bench_ms(fn), clean_ms(fn)
        print(
            f"  {name:<52} do_bench {a:.4f} ms {nbytes / a / 1e6:7.0f} GB/s "
            f"({100 * nbytes / a / 1e6 / copy_gbs:5.1f} %)"
            f" | clean L2 {b:.4f} ms {nbytes / b / 1e6:7.0f} GB/s ({100 * nbytes / b / 1e6 / copy_gbs:5.1f} %)",
            flush=True,
        )
    except Exception as exc:
        print(f"  {name}: FAILED {type(exc).__name__}: {exc}", flush=True)


def section(title, body):
    print(f"\n== {title} ({time.time() - T0:.0f} s)", flush=True)
    try:
        body()
    except Exception:
        traceback.print_exc()


def ceilings():
    for mb in (64, 128, 192, 256, 1024):
        src = torch.empty(mb << 19, dtype=torch.uint8, device=dev).random_()
        dst = torch.empty_like(src)
        show(f"copy_ of {mb} MB moved", 2 * src.numel(), lambda src=src, dst=dst: dst.copy_(src))
    w = torch.randint(-127, 128, (8192, 8192), dtype=torch.int8, device=dev)
    show("read-only: int8 8192x8192 amax (67 MB read)", w.numel(), lambda: w.view(torch.int32).amax())


def int8():
    from variants.int8_matmul import autotuned as a

    w = torch.randint(-127, 128, (8192, 8192), dtype=torch.int8, device=dev)
    scale = torch.rand(8192, device=dev) / 127
    wb = w.to(bf)
    for m in (1, 16):
        x = torch.randn(m, 8192, dtype=bf, device=dev)
        out = torch.empty(m, 8192, dtype=bf, device=dev)
        nb = w.numel() + 4 * 8192 + 2 * x.numel() + 2 * out.numel()
        show(
            f"int8_matmul autotuned M={m}",
            nb,
            lambda x=x, out=out: kernels.int8_matmul(x, w, scale, variant="autotuned", out=out),
        )
        for cfg in (
            dict(BLOCK_M=16, BLOCK_N=32, BLOCK_K=512, GROUP_M=8, num_stages=4, num_warps=4),
            dict(BLOCK_M=16, BLOCK_N=64, BLOCK_K=256, GROUP_M=8, num_stages=4, num_warps=4),
        ):
            tag = f"{cfg['BLOCK_N']}x{cfg['BLOCK_K']}"
            show(f"  int8 weight, config {tag}", nb, lambda x=x, out=out, cfg=cfg: a.launch(x, w, scale, out, **cfg))
            show(
                f"  bf16 weight (no conversion, 2x bytes), {tag}",
                nb + w.numel(),
                lambda x=x, out=out, cfg=cfg: a.launch(x, wb, scale, out, **cfg),
            )
        show(f"  cuBLAS x @ w_bf16.T M={m}", 2 * w.numel(), lambda x=x: torch.mm(x, wb.t()))


def lora():
    M, N, K, R = 8192, 4096, 4096, 16
    x = torch.randn(M, K, dtype=bf, device=dev) * K**-0.25
    w = torch.randn(N, K, dtype=bf, device=dev) * K**-0.25
    a_ = torch.randn(R, K, dtype=bf, device=dev) * K**-0.25
    b_ = torch.randn(N, R, dtype=bf, device=dev) * R**-0.5
    out = torch.empty(M, N, dtype=bf, device=dev)
    flops = 2 * M * N * K
    for name, fn in [
        ("lora fused", lambda: kernels.lora_linear(x, w, a_, b_, variant="fused", out=out)),
        ("lora epilogue", lambda: kernels.lora_linear(x, w, a_, b_, variant="epilogue", out=out)),
        ("matmul autotuned, base only", lambda: kernels.matmul(x, w.t(), variant="autotuned", out=out)),
        ("cuBLAS base only", lambda: torch.mm(x, w.t())),
        ("3x cuBLAS", lambda: torch.mm(x, w.t()).addmm_(torch.mm(x, a_.t()), b_.t())),
    ]:
        try:
            t = bench_ms(fn)
            print(f"  {name:<32} {t:.4f} ms {flops / t / 1e9:6.0f} TFLOP/s (base GEMM flops)", flush=True)
        except Exception as exc:
            print(f"  {name}: FAILED {type(exc).__name__}: {exc}", flush=True)


def conv():
    for n, c, h, k, r in ((32, 64, 56, 64, 3), (32, 128, 28, 128, 3), (32, 512, 7, 512, 3), (32, 256, 56, 64, 1)):
        x = torch.randn(n, c, h, h, dtype=bf, device=dev).to(memory_format=torch.channels_last)
        wt = torch.randn(k, c, r, r, dtype=bf, device=dev).to(memory_format=torch.channels_last)
        pad = r // 2
        flops = 2 * n * h * h * k * c * r * r
        gm, gk = n * h * h, c * r * r
        A = torch.randn(gm, gk, dtype=bf, device=dev)
        B = torch.randn(gk, k, dtype=bf, device=dev)
        print(f"  conv {n}x{c}x{h}x{h}->{k} {r}x{r} (GEMM {gm}x{k}x{gk})", flush=True)
        for name, fn in [
            ("implicit_gemm", lambda x=x, wt=wt, pad=pad: kernels.conv2d(x, wt, padding=pad, variant="implicit_gemm")),
            ("fused", lambda x=x, wt=wt, pad=pad: kernels.conv2d(x, wt, padding=pad, variant="fused")),
            ("splitk", lambda x=x, wt=wt, pad=pad: kernels.conv2d(x, wt, padding=pad, variant="splitk")),
            ("cuDNN", lambda x=x, wt=wt, pad=pad: torch.nn.functional.conv2d(x, wt, padding=pad)),
            ("matmul autotuned, dense GEMM", lambda A=A, B=B: kernels.matmul(A, B, variant="autotuned")),
            ("cuBLAS dense GEMM", lambda A=A, B=B: torch.mm(A, B)),
        ]:
            try:
                t = bench_ms(fn)
                print(f"    {name:<30} {t:.4f} ms {flops / t / 1e9:6.0f} TFLOP/s", flush=True)
            except Exception as exc:
                print(f"    {name}: FAILED {type(exc).__name__}: {exc}", flush=True)


def attention():
    from torch.profiler import ProfilerActivity, profile

    B, H, S, D = 4, 32, 4096, 128
    q, k, v = (torch.randn(B, H, S, D, dtype=bf, device=dev, requires_grad=True) for _ in range(3))
    do = torch.randn(B, H, S, D, dtype=bf, device=dev)
    for causal in (False, True):
        for name, f in [
            ("flash_hopper", lambda causal=causal: kernels.attention(q, k, v, causal=causal, variant="flash_hopper")),
            (
                "SDPA",
                lambda causal=causal: torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=causal),
            ),
        ]:

            def step(f=f):
                return torch.autograd.grad(f(), (q, k, v), do)

            step()
            torch.cuda.synchronize()
            with profile(activities=[ProfilerActivity.CUDA]) as prof:
                for _ in range(5):
                    step()
                torch.cuda.synchronize()
            print(f"  -- {name}, causal={causal}: CUDA time per kernel over 5 steps", flush=True)
            print(
                prof.key_averages().table(sort_by="device_time_total", row_limit=8, max_name_column_width=60),
                flush=True,
            )


section("ceilings at the ops' sizes", ceilings)
section("int8_matmul decode", int8)
section("lora_linear: the adapter's cost", lora)
section("conv2d: the gather's cost", conv)
section("attention training step, per kernel", attention)
print(f"\ntotal {time.time() - T0:.0f} s")

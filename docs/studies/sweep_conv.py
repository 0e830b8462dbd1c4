"""GPU sweep for conv2d.splitk (issue 5): ResNet-50 layers at batch 32, NHWC bf16 (x and weight channels-last):
N x C x H x W -> K, R x S = 32x512x7x7 -> 512 3x3, 32x128x28x28 -> 128 3x3, 32x256x56x56 -> 64 1x1 and
32x64x56x56 -> 64 3x3, stride 1, "same" padding.

For each layer: cuDNN (torch.nn.functional.conv2d), the registered splitk / fused / implicit_gemm through
kernels.conv2d(..., variant=...) (after one untimed call, so autotuning is not timed; splitk's chosen config and
SPLIT_K are printed), then splitk's two kernels launched by hand over hand-picked tiles and SPLIT_K values (the
partial kernel plus, for SPLIT_K > 1, the sum: the time a call pays). Each line: ms (median of
kernels.timing.samples_ms), TFLOP/s, ratio cuDNN / ours (>= 0.8 is issue 5's target), and for splitk the max abs
error against cuDNN in fp32 (TF32 off).

    PYTHONPATH=. python docs/studies/sweep_conv.py [budget_s]      # from the repository root, on a CUDA GPU

The default budget is 90 s; the whole sweep takes < 100 s on an H200.
Every item runs in its own try/except; items past the budget are skipped and counted.
"""

import statistics
import sys
import time

import torch
import torch.nn.functional as F
import triton

import kernels
from kernels import registry, timing
from variants.conv2d import splitk

T0 = time.monotonic()
BUDGET_S = float(sys.argv[1]) if len(sys.argv) > 1 else 90.0
DEV = "cuda"
CL = torch.channels_last
# (N, C, H, W, K, R, S), stride 1, "same" padding; the H200 ratios of 2026-11-28 (best variant / cuDNN) beside.
# The small-spatial layers first: they are what split-K is for, and the budget may cut the list short.
LAYERS = [
    ((32, 512, 7, 7, 512, 3, 3), "0.29x"),
    ((32, 128, 28, 28, 128, 3, 3), "0.48x"),
    ((32, 256, 56, 56, 64, 1, 1), "0.59x"),
    ((32, 64, 56, 56, 64, 3, 3), "0.78x"),
]
# (BLOCK_M, BLOCK_N, BLOCK_K, stages, warps)
TILES = [(128, 128, 64, 4, 8), (128, 64, 64, 4, 4), (64, 128, 64, 4, 4), (64, 64, 64, 5, 4), (128, 256, 64, 3, 8)]
SPLITS_SMALL = [1, 2, 3, 4, 6, 8]  # the 7x7 and 28x28 layers
SPLITS_LARGE = [1, 2, 4]  # the 56x56 layers, which fill the GPU already
skipped = 0
best = {}  # layer -> [(ms, label)]
cudnn_ms = {}  # layer -> ms


def ms(fn):
    # Shorter than the benchmarks' 25 + 100 ms: these kernels take 20-80 us, so 50 ms still gives hundreds of runs.
    return statistics.median(timing.samples_ms(fn, warmup_ms=10, rep_ms=50))


def left():
    return BUDGET_S - (time.monotonic() - T0)


def item(label, fn, flops, ref_ms, err_of=None):
    """Time fn and print one line; never raises."""
    global skipped
    if left() <= 0:
        skipped += 1
        return None
    try:
        fn()  # compile (and autotune) untimed
        torch.cuda.synchronize()
        t = ms(fn)
        err = f"  max|err| {err_of():.3g}" if err_of else ""
        ratio = f"  cuDNN/this {ref_ms / t:.2f}x" if ref_ms else ""
        print(f"  {label:<44} {t:8.4f} ms {flops / t / 1e9:7.1f} TFLOP/s{ratio}{err}", flush=True)
        return t
    except Exception as exc:  # one failing item must not stop the sweep
        print(f"  {label:<44} FAILED {type(exc).__name__}: {str(exc).splitlines()[0][:160]}", flush=True)
        return None


def hand_launch(x, w, out, part, g, tile, split):
    """splitk's two kernels with a fixed tile and SPLIT_K, bypassing the autotuner and the host's choice."""
    bm, bn, bk, stages, warps = tile
    M = g.N * g.P * g.Q
    grid = (triton.cdiv(M, bm), triton.cdiv(g.K, bn), split)
    splitk._partial_kernel.fn[grid](
        x, w, None, out, part if split > 1 else out, g.N, g.C, g.H, g.W, g.K, g.P, g.Q, *g.conv_args,
        *x.stride(), *w.stride(), *out.stride(),
        R=g.R, S=g.S, HAS_BIAS=False, RELU=False, BLOCK_M=bm, BLOCK_N=bn, BLOCK_K=bk,
        num_warps=warps, num_stages=stages,
    )  # fmt: skip
    if split > 1:
        sum_grid = (triton.cdiv(M, splitk.SUM_BLOCK_M), triton.cdiv(g.K, splitk.SUM_BLOCK_N))
        splitk._sum_splits_kernel[sum_grid](
            part, None, out, split, g.N, g.K, g.P, g.Q, *out.stride(),
            HAS_BIAS=False, RELU=False, BLOCK_M=splitk.SUM_BLOCK_M, BLOCK_N=splitk.SUM_BLOCK_N,
            num_warps=splitk.SUM_WARPS,
        )  # fmt: skip
    return out


def main():
    registry.discover()
    from variants.conv2d._common import geometry

    props = torch.cuda.get_device_properties(0)
    print(f"{props.name}, {props.multi_processor_count} SMs, torch {torch.__version__}, triton {triton.__version__}")
    print(f"splitk {registry.get('conv2d', 'splitk').version}, budget {BUDGET_S:.0f} s")
    torch.backends.cudnn.allow_tf32 = False
    for (N, C, H, W, K, R, S), before in LAYERS:
        if left() <= 0:
            break
        pad = (R - 1) // 2
        gen = torch.Generator(device=DEV).manual_seed(0)
        x = torch.randn((N, C, H, W), generator=gen, device=DEV).to(torch.bfloat16).contiguous(memory_format=CL)
        w = (torch.randn((K, C, R, S), generator=gen, device=DEV) * (C * R * S) ** -0.5).to(torch.bfloat16)
        w = w.contiguous(memory_format=CL)
        g = geometry(x, w, 1, pad, 1)
        flops = 2 * N * K * g.P * g.Q * C * R * S
        M = N * g.P * g.Q
        print(f"\n{N}x{C}x{H}x{W}->{K} {R}x{S} (GEMM {M} x {K} x {C * R * S}; before: {before})", flush=True)
        try:
            ref32 = F.conv2d(x.float(), w.float(), padding=pad)
        except Exception as exc:  # one failing item must not stop the sweep
            print(f"  fp32 reference FAILED: {exc}")
            continue

        def err(out, ref32=ref32):
            return (out.float() - ref32).abs().max().item()

        ref_ms = item("cuDNN bf16", lambda x=x, w=w, pad=pad: F.conv2d(x, w, padding=pad), flops, None)
        cudnn_ms[(N, C, H, W, K, R, S)] = ref_ms
        layer = (N, C, H, W, K, R, S)

        def registered(name, x=x, w=w, pad=pad, g=g, ref_ms=ref_ms, layer=layer, flops=flops, err=err):
            result = {}

            def call():
                result["y"] = kernels.conv2d(x, w, padding=pad, variant=name)
                return result["y"]

            err_of = (lambda: err(result["y"])) if name == "splitk" else None
            t = item(f"{name} (registered)", call, flops, ref_ms, err_of)
            if name == "splitk" and t is not None:
                cfg = splitk._partial_kernel.best_config
                split = splitk._plan(g, cfg.kwargs, props.multi_processor_count)
                print(f"    chose {cfg.kwargs} w{cfg.num_warps} s{cfg.num_stages}, SPLIT_K {split}")
            if t is not None:
                best.setdefault(layer, []).append((t, name))

        registered("splitk")
        out = torch.empty((N, K, g.P, g.Q), dtype=torch.bfloat16, device=DEV, memory_format=CL)
        splits = SPLITS_SMALL if M * K <= 25088 * 128 else SPLITS_LARGE
        part = torch.empty((max(splits), M, K), dtype=torch.float32, device=DEV)
        for tile in TILES:
            steps = R * S * triton.cdiv(C, tile[2])
            tiles = triton.cdiv(M, tile[0]) * triton.cdiv(K, tile[1])
            for split in splits:
                if split > steps:
                    continue
                label = (
                    f"splitk {tile[0]}x{tile[1]}x{tile[2]} w{tile[4]} s{tile[3]} SPLIT_K {split} ({tiles * split} pr)"
                )

                def run(tile=tile, split=split, x=x, w=w, out=out, part=part, g=g):
                    return hand_launch(x, w, out, part, g, tile, split)

                t = item(label, run, flops, ref_ms, lambda out=out: err(out))
                if t is not None:
                    best.setdefault(layer, []).append((t, label))
        del part
        torch.cuda.empty_cache()
        # Last: their times are on record (docs/performance.md); the budget may skip them.
        registered("fused")
        registered("implicit_gemm")
    print("\nbest per layer (cuDNN excluded):")
    for layer, runs in best.items():
        t, label = min(runs)
        ref = cudnn_ms.get(layer)
        print(f"  {layer}: {label} {t:.4f} ms" + (f", cuDNN {ref:.4f} ms, cuDNN/best {ref / t:.2f}x" if ref else ""))
    print(f"\n{time.monotonic() - T0:.0f} s, {skipped} items skipped for the budget")


if __name__ == "__main__":
    main()

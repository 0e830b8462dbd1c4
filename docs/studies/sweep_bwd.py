"""flash's FA2 backward kernels, launch choices one by one, at B4 H32 S4096 D128 bf16, without a mask and causal
(< 120 s on an H200).

    PYTHONPATH=. python docs/studies/sweep_bwd.py      # from the repository root, on a CUDA GPU

It times (do_bench medians, kernels.timing.samples_ms) the delta kernel, then the dK/dV pass and the dQ pass
separately over tiles, warps and stages, each against the current backward_config, and last SDPA's backward for
scale.
"""

import statistics
import time

import torch
import triton

import kernels
from kernels import timing
from variants.attention import _flash
from variants.attention import flash as F
from variants.attention._flash import new_lse

T0 = time.time()
BUDGET = 110
B, H, S, D = 4, 32, 4096, 128
bf = torch.bfloat16
dev = "cuda"
q, k, v, do = (torch.randn(B, H, S, D, dtype=bf, device=dev) for _ in range(4))


def ms(fn):
    return statistics.median(timing.samples_ms(fn))


def sweep(causal):
    out = torch.empty_like(q)
    lse = new_lse(q)
    kernels.attention(q, k, v, causal=causal, variant="flash_hopper")  # warm
    _flash.launch_forward(q, k, v, out, causal=causal, scale=None, lse=lse)
    sm = D**-0.5
    delta = torch.empty((B * H, S), dtype=torch.float32, device=dev)
    F._delta_kernel[(triton.cdiv(S, 128), B * H)](
        out, do, delta, H, S, *out.stride(), *do.stride(), HEAD_DIM=D, BLOCK_M=128, num_warps=4
    )
    dq, dk, dv = (torch.empty_like(t) for t in (q, k, v))
    flops_kv = 4 * B * H * S * S * D * (0.5 if causal else 1)  # dV += P^T dO, dK += dS^T Q (plus the recomputed S, dP)
    print(f"\n== causal={causal}; current config {F.backward_config(D, 2)}", flush=True)
    t = ms(
        lambda: F._delta_kernel[(triton.cdiv(S, 128), B * H)](
            out, do, delta, H, S, *out.stride(), *do.stride(), HEAD_DIM=D, BLOCK_M=128, num_warps=4
        )
    )
    print(f"  delta: {t:.4f} ms", flush=True)
    for bm1, bn1 in ((32, 128), (64, 128), (32, 64), (64, 64), (16, 128)):
        for w in (4, 8):
            for st in (2, 3, 4):
                if time.time() - T0 > BUDGET:
                    break
                try:
                    t = ms(lambda bm1=bm1, bn1=bn1, w=w, st=st: F._dkdv_kernel[(triton.cdiv(S, bn1), B * H)](
                        q, k, v, do, lse, delta, dk, dv, sm, H, 1, S, S, *q.stride(), *k.stride(), *v.stride(),
                        *do.stride(), *dk.stride(), *dv.stride(), CAUSAL=causal, HEAD_DIM=D, BLOCK_M1=bm1,
                        BLOCK_N1=bn1, num_warps=w, num_stages=st))  # fmt: skip
                    print(
                        f"  dkdv M1={bm1:3d} N1={bn1:3d} w{w} s{st}: {t:.4f} ms {2 * flops_kv / t / 1e9:5.0f} TFLOP/s",
                        flush=True,
                    )
                except Exception as exc:
                    print(f"  dkdv M1={bm1} N1={bn1} w{w} s{st}: {type(exc).__name__}", flush=True)
    for bm2, bn2 in ((128, 32), (128, 64), (64, 64), (64, 32), (128, 16)):
        for w in (4, 8):
            for st in (2, 3, 4):
                if time.time() - T0 > BUDGET:
                    break
                try:
                    t = ms(lambda bm2=bm2, bn2=bn2, w=w, st=st: F._dq_kernel[(triton.cdiv(S, bm2), B * H)](
                        q, k, v, do, lse, delta, dq, sm, H, 1, S, S, *q.stride(), *k.stride(), *v.stride(),
                        *do.stride(), *dq.stride(), CAUSAL=causal, HEAD_DIM=D, BLOCK_M2=bm2, BLOCK_N2=bn2,
                        num_warps=w, num_stages=st))  # fmt: skip
                    print(f"  dq   M2={bm2:3d} N2={bn2:3d} w{w} s{st}: {t:.4f} ms", flush=True)
                except Exception as exc:
                    print(f"  dq M2={bm2} N2={bn2} w{w} s{st}: {type(exc).__name__}", flush=True)
    qg, kg, vg = (t.clone().requires_grad_() for t in (q, k, v))
    o = torch.nn.functional.scaled_dot_product_attention(qg, kg, vg, is_causal=causal)
    t = ms(lambda: torch.autograd.grad(o, (qg, kg, vg), do, retain_graph=True))
    print(f"  SDPA backward: {t:.4f} ms", flush=True)


print(torch.cuda.get_device_name(), torch.__version__, triton.__version__, flush=True)
for causal in (False, True):
    sweep(causal)
print(f"total {time.time() - T0:.0f} s")

"""GPU sweep of flash_hopper's TMA backward (issue 5) at B4 H32 S4096 D128 bf16, without a mask and causal.

    PYTHONPATH=. python docs/studies/sweep_attn_bwd.py [--budget SECONDS]      # repository root, Hopper GPU

For each mask it prints (median ms of kernels.timing.samples_ms):
- the new backward's dQ/dK/dV against flash_backward's (max abs error) at the issue's shape;
- flash's current backward, kernel by kernel at its backward_config, and whole (flash_backward);
- the new delta kernel, every hand-launched dK/dV config and every dQ config of _flash_tma_bwd;
- the whole new backward: as registered (autotuned) and with the sweep's fastest dK/dV and dQ configs;
- SDPA's backward (autograd.grad on SDPA's output, retain_graph);
- the training step (forward + autograd.grad) of flash_hopper through kernels.attention against SDPA's;
then the error checks at odd grouped-query shapes. Each item is guarded (an error is printed, the sweep goes on) and
skipped once the time budget (default 110 s) would be overrun. Kernels are compiled up front in a pool of
processes that share Triton's on-disk cache, so the timed process mostly loads cubins.
"""

from __future__ import annotations

import argparse
import itertools
import os
import statistics
import sys
import time
import traceback
from concurrent.futures import ProcessPoolExecutor, as_completed
from multiprocessing import get_context

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the repository root
sys.path.insert(0, ROOT)

B, H, S, D = 4, 32, 4096, 128
DEVICE, DTYPE, SMOKE = "cuda", "bfloat16", False
MASKS = (False, True)
DKDV = list(itertools.product((32, 64), (64, 128), (4, 8), (2, 3)))  # (BLOCK_M1, BLOCK_N1, warps, stages)
DQ = list(itertools.product((64, 128), (32, 64), (4, 8), (2, 3)))  # (BLOCK_M2, BLOCK_N2, warps, stages)
FWD = list(itertools.product((64, 128), (4, 8), (2, 3, 4)))  # flash_hopper's forward: (BLOCK_N, warps, stages)
# The configs the checks run (FA2's narrow-step shapes at 8 warps, no spills at head_dim 128 on sm_90).
CHECK_DKDV, CHECK_DQ = (32, 128, 8, 2), (128, 32, 8, 2)
ODD_SHAPES = [(2, 8, 2, 1000, 777, 128, True), (1, 4, 4, 257, 4096, 64, False), (1, 4, 4, 257, 4096, 64, True)]


def mask_name(causal: bool) -> str:
    return "causal" if causal else "full"


# -- compiling ahead, in worker processes ------------------------------------------------------------------------
def _tensors(b, hq, hkv, sq, sk, d, seed=0):
    import torch

    dtype = getattr(torch, DTYPE)
    gen = torch.Generator(device=DEVICE).manual_seed(seed)
    q = torch.randn((b, hq, sq, d), device=DEVICE, dtype=dtype, generator=gen)
    k = torch.randn((b, hkv, sk, d), device=DEVICE, dtype=dtype, generator=gen)
    v = torch.randn((b, hkv, sk, d), device=DEVICE, dtype=dtype, generator=gen)
    do = torch.randn((b, hq, sq, d), device=DEVICE, dtype=dtype, generator=gen)
    return q, k, v, do


def _forward_stash(q, k, v, causal):
    """flash_hopper's forward (autotuned) with its logsumexp: (out, inputs as a backward takes them)."""
    import torch

    from kernels import registry

    variant = registry.get("attention", "flash_hopper")
    stash = {}
    out = variant.forward(q, k, v, causal, None, out=torch.empty_like(q), stash=stash)
    return out, {"q": q, "k": k, "v": v, "causal": causal, "scale": None, "stash": stash}


def _warm(job):
    """Compile one kernel config by launching it once at batch 1 (same specialization as the sweep's shape: the
    descriptors' global shapes are runtime values, and every integer argument keeps its divisibility)."""
    kind, causal, cfg = job
    import torch

    from variants.attention import _flash_tma, flash
    from variants.attention import _flash_tma_bwd as bwd
    from variants.attention._flash import new_lse

    q, k, v, do = _tensors(1, H, H, S, S, D)
    lse = new_lse(q)
    out = torch.empty_like(q)
    if kind == "fwd":
        _flash_tma.launch_forward_config(
            q, k, v, out, causal=causal, scale=None, block_m=128, block_n=cfg[0], num_warps=cfg[1],
            num_stages=cfg[2], lse=lse,
        )  # fmt: skip
    else:
        _flash_tma.launch_forward_config(
            q, k, v, out, causal=causal, scale=None, block_m=128, block_n=64, num_warps=8, num_stages=2, lse=lse
        )
        delta = bwd.launch_delta(out, do)
        inputs = {"q": q, "k": k, "v": v, "causal": causal, "scale": None, "stash": {"lse": lse}}
        if kind == "dkdv":
            bwd.launch_dkdv(q, k, v, do, lse, delta, torch.empty_like(k), torch.empty_like(v), causal=causal,
                            scale=None, config=cfg)  # fmt: skip
        elif kind == "dq":
            bwd.launch_dq(q, k, v, do, lse, delta, torch.empty_like(q), causal=causal, scale=None, config=cfg)
        elif kind == "flash":
            flash.flash_backward(inputs, out, do)
    torch.cuda.synchronize()
    return job


def precompile(budget) -> None:
    jobs = [("flash", c, None) for c in MASKS]
    jobs += [("dkdv", c, cfg) for c in MASKS for cfg in DKDV] + [("dq", c, cfg) for c in MASKS for cfg in DQ]
    jobs += [("fwd", c, cfg) for c in MASKS for cfg in FWD]
    workers = max(1, min(12, (os.cpu_count() or 2) - 2))
    started, failed, done = time.time(), 0, 0
    pool = ProcessPoolExecutor(workers, mp_context=get_context("spawn"))
    futures = [pool.submit(_warm, job) for job in jobs]
    try:
        for fut in as_completed(futures, timeout=max(1.0, budget.left() - budget.reserve)):
            done += 1
            try:
                fut.result()
            except Exception as exc:  # a config that does not compile or launch: the sweep reports it later
                failed += 1
                print(f"  precompile: {type(exc).__name__}: {str(exc).splitlines()[0][:160]}")
    except TimeoutError:
        print("  precompile: out of time; the rest compiles in the timed process")
    # Never wait on workers still compiling: what they finish lands in the cache anyway.
    pool.shutdown(wait=False, cancel_futures=True)
    print(f"precompiled {done - failed} of {len(jobs)} kernels in {time.time() - started:.1f} s ({workers} workers)")


# -- timing -------------------------------------------------------------------------------------------------------
class Budget:
    def __init__(self, seconds: float, reserve: float):
        self.end = time.time() + seconds
        self.reserve = reserve

    def left(self) -> float:
        return self.end - time.time()


def median_ms(fn, quick=False) -> float:
    if SMOKE:  # the CPU smoke run: one untimed-quality wall-clock run, to exercise the code paths
        started = time.perf_counter()
        fn()
        return (time.perf_counter() - started) * 1e3
    from kernels import timing

    kw = {"warmup_ms": 10, "rep_ms": 40} if quick else {}
    return statistics.median(timing.samples_ms(fn, **kw))


def item(budget, label, fn, *, keep=0.0):
    """Run one guarded item unless fewer than ``keep`` seconds are left; None when skipped or failed."""
    if budget.left() < keep:
        print(f"  {label:58s} skipped (time budget)")
        return None
    try:
        return fn()
    except Exception as exc:
        print(f"  {label:58s} FAILED {type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}")
        if os.environ.get("SWEEP_TRACEBACK"):
            traceback.print_exc()
        return None


def max_errs(got: dict, want: dict) -> str:
    parts = []
    for name in ("q", "k", "v"):
        err = (got[name].float() - want[name].float()).abs().max().item()
        ref = want[name].float().abs().max().item()
        nan = " NaN!" if not bool(got[name].isfinite().all()) else ""
        parts.append(f"d{name} {err:.3e} (max |ref| {ref:.2e}){nan}")
    return ", ".join(parts)


def check(b, hq, hkv, sq, sk, d, causal, seed=1):
    from variants.attention import _flash_tma_bwd as bwd
    from variants.attention import flash

    q, k, v, do = _tensors(b, hq, hkv, sq, sk, d, seed)
    out, inputs = _forward_stash(q, k, v, causal)
    want = flash.flash_backward(inputs, out, do)
    got = bwd.flash_tma_backward(inputs, out, do, dkdv=CHECK_DKDV, dq=CHECK_DQ)
    return max_errs(got, want)


def sweep_mask(causal, budget, results) -> None:
    import torch
    import torch.nn.functional as F
    import triton

    import kernels
    from kernels import registry
    from variants.attention import _flash_tma_bwd as bwd
    from variants.attention import flash
    from variants.attention.flash import _delta_kernel, _dkdv_kernel, _dq_kernel, backward_config

    hopper = sys.modules[registry.get("attention", "flash_hopper").module]
    name = mask_name(causal)
    print(f"\n=== B{B} H{H} S{S} D{D} {DTYPE}, {name} ===")
    q, k, v, do = _tensors(B, H, H, S, S, D)
    out, inputs = _forward_stash(q, k, v, causal)
    lse = inputs["stash"]["lse"]
    r = results[name] = {}

    msg = item(budget, "check", lambda: check(B, H, H, S, S, D, causal), keep=5)
    if msg:
        print(f"  new backward (dkdv {CHECK_DKDV}, dq {CHECK_DQ}) vs flash_backward: {msg}")

    # flash's current backward, kernel by kernel, launched as flash_backward launches them.
    cfg = backward_config(D, 2)
    warps = {"num_warps": cfg["num_warps"], "num_stages": cfg["num_stages"]}
    sm_scale = D**-0.5
    delta = torch.empty((B * H, S), device=DEVICE, dtype=torch.float32)
    dq, dk, dv = torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)

    def flash_delta():
        _delta_kernel[(triton.cdiv(S, cfg["BLOCK_M2"]), B * H)](
            out, do, delta, H, S, *out.stride(), *do.stride(), HEAD_DIM=D, BLOCK_M=cfg["BLOCK_M2"], num_warps=4
        )

    def flash_dkdv():
        _dkdv_kernel[(triton.cdiv(S, cfg["BLOCK_N1"]), B * H)](
            q, k, v, do, lse, delta, dk, dv, sm_scale, H, 1, S, S,
            *q.stride(), *k.stride(), *v.stride(), *do.stride(), *dk.stride(), *dv.stride(),
            CAUSAL=causal, HEAD_DIM=D, BLOCK_M1=cfg["BLOCK_M1"], BLOCK_N1=cfg["BLOCK_N1"], **warps,
        )  # fmt: skip

    def flash_dq():
        _dq_kernel[(triton.cdiv(S, cfg["BLOCK_M2"]), B * H)](
            q, k, v, do, lse, delta, dq, sm_scale, H, 1, S, S,
            *q.stride(), *k.stride(), *v.stride(), *do.stride(), *dq.stride(),
            CAUSAL=causal, HEAD_DIM=D, BLOCK_M2=cfg["BLOCK_M2"], BLOCK_N2=cfg["BLOCK_N2"], **warps,
        )  # fmt: skip

    for label, fn in (("flash delta", flash_delta), ("flash dkdv", flash_dkdv), ("flash dq", flash_dq),
                      ("flash_backward", lambda: flash.flash_backward(inputs, out, do))):  # fmt: skip
        ms = item(budget, label, lambda fn=fn: median_ms(fn), keep=budget.reserve)
        if ms is not None:
            r[label] = ms
            print(f"  {label + ' ' + str(cfg if label != 'flash_backward' else ''):58s} {ms:8.3f} ms")

    # The new backward, kernel by kernel. Hand launches take inputs that can take descriptors (these do).
    ms = item(budget, "tma delta", lambda: median_ms(lambda: bwd.launch_delta(out, do)), keep=budget.reserve)
    if ms is not None:
        r["tma delta"] = ms
        print(f"  {'tma delta (flash delta kernel, 64 rows)':58s} {ms:8.3f} ms")
    delta = bwd.launch_delta(out, do)
    best = {}
    for kind, configs in (("dkdv", DKDV), ("dq", DQ)):
        timed = {}
        for c in configs:
            label = f"tma {kind} {c}"
            if kind == "dkdv":

                def fn(c=c):
                    return bwd.launch_dkdv(q, k, v, do, lse, delta, dk, dv, causal=causal, scale=None, config=c)
            else:

                def fn(c=c):
                    return bwd.launch_dq(q, k, v, do, lse, delta, dq, causal=causal, scale=None, config=c)

            ms = item(budget, label, lambda fn=fn: median_ms(fn, quick=True), keep=budget.reserve)
            if ms is not None:
                timed[c] = ms
                base = r.get(f"flash {kind}")
                vs = f"  ({base / ms:.2f}x flash's)" if base else ""
                print(f"  {label:58s} {ms:8.3f} ms{vs}")
        if timed:
            best[kind] = min(timed, key=timed.get)
            r[f"best tma {kind}"] = timed[best[kind]]
            print(f"  fastest {kind}: {best[kind]} {timed[best[kind]]:.3f} ms")

    # The whole new backward: as registered (autotuned; the first call tunes), and with the sweep's fastest configs.
    def tuned():
        return bwd.flash_tma_backward(inputs, out, do, dkdv_kernel=hopper._tuned_dkdv, dq_kernel=hopper._tuned_dq)

    ms = item(budget, "tma backward (autotuned)", lambda: (tuned(), median_ms(tuned))[1], keep=8)
    if ms is not None:
        r["tma backward"] = ms
        chosen = f"dkdv {hopper._tuned_dkdv.best_config}; dq {hopper._tuned_dq.best_config}"
        print(f"  {'tma backward (autotuned)':58s} {ms:8.3f} ms   [{chosen}]")
    if len(best) == 2:
        ms = item(budget, "tma backward (sweep's best)",
                  lambda: median_ms(lambda: bwd.flash_tma_backward(inputs, out, do, dkdv=best["dkdv"], dq=best["dq"])),
                  keep=3)  # fmt: skip
        if ms is not None:
            r["tma backward (best)"] = ms
            print(f"  {'tma backward (best: ' + str(best['dkdv']) + ', ' + str(best['dq']) + ')':58s} {ms:8.3f} ms")

    # SDPA's backward and the two training steps.
    qg, kg, vg = (t.detach().requires_grad_() for t in (q, k, v))

    def sdpa_bwd():
        o = F.scaled_dot_product_attention(qg, kg, vg, is_causal=causal)
        return lambda: torch.autograd.grad(o, (qg, kg, vg), do, retain_graph=True)

    ms = item(budget, "SDPA backward", lambda: median_ms(sdpa_bwd()), keep=2)
    if ms is not None:
        r["SDPA backward"] = ms
        print(f"  {'SDPA backward':58s} {ms:8.3f} ms")

    def step(variant):
        def run():
            if variant == "SDPA":
                o = F.scaled_dot_product_attention(qg, kg, vg, is_causal=causal)
            else:
                o = kernels.attention(qg, kg, vg, causal=causal, variant=variant)
            return torch.autograd.grad(o, (qg, kg, vg), do)

        return run

    for label, variant in (("step flash_hopper", "flash_hopper"), ("step SDPA", "SDPA")):
        ms = item(budget, label, lambda variant=variant: (step(variant)(), median_ms(step(variant)))[1], keep=3)
        if ms is not None:
            r[label] = ms
            print(f"  {label:58s} {ms:8.3f} ms")

    print(f"  --- ratios ({name}; > 1 means faster than the denominator)")
    for num, den in (("flash_backward", "tma backward"), ("flash_backward", "tma backward (best)"),
                     ("flash dkdv", "best tma dkdv"), ("flash dq", "best tma dq"),
                     ("SDPA backward", "tma backward"), ("SDPA backward", "tma backward (best)"),
                     ("SDPA backward", "flash_backward"), ("step SDPA", "step flash_hopper")):  # fmt: skip
        if num in r and den in r:
            print(f"  {num + ' / ' + den:58s} {r[num] / r[den]:8.3f}x")
    if "step SDPA" in r and "step flash_hopper" in r:
        ratio = r["step SDPA"] / r["step flash_hopper"]
        print(f"  issue 5 target (training step >= 0.80x SDPA): {ratio:.3f}x, {'met' if ratio >= 0.8 else 'NOT met'}")


def _smoke() -> None:
    """Shrink everything for a CPU run under Triton's interpreter (fp16: its bf16 tl.dot is broken)."""
    global B, H, S, D, DEVICE, DTYPE, SMOKE, DKDV, DQ, ODD_SHAPES
    assert os.environ.get("TRITON_INTERPRET") == "1", "--smoke runs under TRITON_INTERPRET=1"
    B, H, S, D, DEVICE, DTYPE, SMOKE = 1, 2, 80, 32, "cpu", "float16", True
    DKDV, DQ = DKDV[:1] + DKDV[-1:], DQ[:1] + DQ[-1:]
    ODD_SHAPES = [(1, 4, 2, 50, 37, 32, True), (1, 2, 2, 33, 130, 16, False)]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--budget", type=float, default=110.0, help="seconds for the whole sweep")
    parser.add_argument("--no-precompile", action="store_true")
    parser.add_argument("--smoke", action="store_true", help="CPU, TRITON_INTERPRET=1: tiny shapes, code paths only")
    args = parser.parse_args()
    budget = Budget(args.budget, reserve=0.0)
    if args.smoke:
        _smoke()
    import torch
    import triton

    from kernels import registry

    if not SMOKE and not torch.cuda.is_available():
        sys.exit("needs a CUDA GPU")
    variant = registry.get("attention", "flash_hopper")
    where = "CPU (interpreter)" if SMOKE else f"{torch.cuda.get_device_name()} cc {torch.cuda.get_device_capability()}"
    print(f"{where}, torch {torch.__version__}, triton {triton.__version__}, flash_hopper {variant.version}")
    budget.reserve = 0.0
    if not args.no_precompile and not SMOKE:
        # Leave most of the budget for the timed part.
        budget.reserve = 0.55 * args.budget
        item(budget, "precompile", lambda: precompile(budget))
    results = {}
    for i, causal in enumerate(MASKS):
        # Keep room for the headline items of this mask and the next: the config sweep stops first.
        budget.reserve = 30.0 if i == 0 else 12.0
        item(budget, f"sweep {mask_name(causal)}", lambda causal=causal: sweep_mask(causal, budget, results))
    budget.reserve = 0.0
    print(f"\n=== checks at odd grouped-query shapes (dkdv {CHECK_DKDV}, dq {CHECK_DQ} vs flash_backward) ===")
    for shape in ODD_SHAPES:
        b, hq, hkv, sq, sk, d, causal = shape
        label = f"{b}x{hq}x{hkv}x{sq}x{sk}x{d} {mask_name(causal)}"
        msg = item(budget, label, lambda s=shape: check(*s), keep=4)
        if msg:
            print(f"  {label}: {msg}")
    print(f"\ndone, {args.budget - budget.left():.1f} s")


if __name__ == "__main__":
    main()

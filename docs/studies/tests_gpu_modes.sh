#!/usr/bin/env bash
# Times `nox -s tests-gpu` on part of the suite in the modes that issue 15 weighs, each with its own Triton cache:
#   pinned+load       cold cache, one pinned config per tuner, xdist's default scheduler
#   pinned+loadgroup  cold cache, pinned, the tests that launch the same kernels dealt to one worker
#   warm              the loadgroup run again over the cache the run before left
# Usage (on the GPU box, nox importable): bash docs/studies/tests_gpu_modes.sh OUTDIR [SHARD] [MODES...]
# Each run's journal and log land in OUTDIR; the last lines printed are one wall time per mode.
set -uo pipefail
out=${1:?usage: tests_gpu_modes.sh OUTDIR [SHARD] [MODES...]}; shard=${2:-2/16}; shift 2 || shift $#
modes=("$@"); [ ${#modes[@]} -gt 0 ] || modes=(pinned+loadgroup warm pinned+load)
mkdir -p "$out"
export KERNELWATCH_WORKERS=${KERNELWATCH_WORKERS:-16} PYTHONUNBUFFERED=1
python3 -c "import torch, triton, pytest, xdist; print('torch', torch.__version__, 'triton', triton.__version__, \
'pytest', pytest.__version__, 'xdist', xdist.__version__, torch.cuda.get_device_name())" | tee "$out/versions.txt"
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee -a "$out/versions.txt"
summary=()
for mode in "${modes[@]}"; do
  case $mode in
    pinned+load) cache="$out/cache-load"; rm -rf "$cache"; dist=(--dist load) ;;
    pinned+loadgroup) cache="$out/cache-group"; rm -rf "$cache"; dist=() ;;
    warm) cache="$out/cache-group"; dist=() ;;
    *) echo "unknown mode $mode"; exit 2 ;;
  esac
  tag=${mode//+/-}
  start=$(date +%s.%N)
  TRITON_CACHE_DIR=$cache KERNELWATCH_JOURNAL="$out/journal-$tag.jsonl" \
    python3 -m nox --no-venv --no-install -s tests-gpu -- --shard "$shard" "${dist[@]}" -q -p no:cacheprovider \
    >"$out/log-$tag.txt" 2>&1
  rc=$?
  wall=$(python3 -c "import sys, time; print(f'{time.time() - float(sys.argv[1]):.1f}')" "$start")
  summary+=("$mode shard $shard: ${wall} s, exit $rc, $(tail -1 "$out/log-$tag.txt")")
  echo "${summary[-1]}"
done
printf '%s\n' "${summary[@]}" | tee "$out/summary.txt"

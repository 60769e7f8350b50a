#!/usr/bin/env bash
# The GPU checks of benchmarks/RESULTS.md, as one command for a bare GPU machine: only python3
# with torch and transformers is needed (no network, no model hub, no vLLM, nothing to carry:
# the model is Qwen2.5-1.5B-Instruct's architecture from benchmarks/models/ with random bf16
# weights, built there). Everything it prints also goes to $OUT/gpu_check.txt (default
# ./gpu-out), with the machine first. Runs within 8 minutes (the script skips what would not
# fit in --budget, 420 s by default).
#
#   bash benchmarks/gpu_check.sh              # then read gpu-out/gpu_check.txt
#   bash benchmarks/gpu_check.sh --tiny --device cpu   # the same path on a CPU, seconds
set -u
cd "$(dirname "$0")/.."
OUT=${OUT:-gpu-out}
mkdir -p "$OUT"
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
{
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1 || echo "no nvidia-smi"
  lscpu 2>/dev/null | grep -E 'Model name|^CPU\(s\)'
} > "$OUT/machine.txt"
cat "$OUT/machine.txt"
timeout 480 python3 benchmarks/gpu_check.py --out "$OUT/gpu_check.txt" "$@"
rc=$?
cat "$OUT/machine.txt" >> "$OUT/gpu_check.txt"
echo "gpu_check: exit $rc; results in $OUT/gpu_check.txt"
exit $rc

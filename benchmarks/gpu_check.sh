#!/usr/bin/env bash
# The GPU checks of benchmarks/RESULTS.md, as one script for a lent GPU machine (device tool):
# no network there and at most 64 MiB travel, so the model is SmolLM2-135M's architecture with
# random weights (its config and tokenizer in $1) under the machine's own torch/transformers.
# Results go to $OUT (or ./gpu-out). Each stage has its own time limit; a failed stage does not
# stop the others.
#
#   bash benchmarks/gpu_check.sh .gpu/smollm2
set -u
D=${1:?config+tokenizer directory}
OUT=${OUT:-gpu-out}
mkdir -p "$OUT"
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
{
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
  python3 -c "import torch, transformers, sys; print('python', sys.version.split()[0], 'torch', torch.__version__, 'transformers', transformers.__version__, torch.cuda.get_device_name())"
  lscpu | grep -E 'Model name|^CPU\(s\)'
} > "$OUT/machine.txt" 2>&1
stage() {  # name, seconds, command...
  local name=$1 limit=$2; shift 2
  local start=$SECONDS
  timeout "$limit" "$@" > "$OUT/$name.txt" 2>&1
  echo "$name: rc=$? in $((SECONDS - start)) s" | tee -a "$OUT/stages.txt"
}
T="python3 benchmarks/throughput.py --model random:$D --device cuda"
# 1. the paper's batch: 30 prompts x 32 rows = 960 rows, our step loop vs model.generate
stage throughput_960 170 $T --prompts 30 --max-seqs 32 --max-new-tokens 384
# 2. decode-step time against live rows (wall time follows steps when this is flat)
stage rows_sweep 80 $T --rows-sweep 32,128,512,960 --max-new-tokens 128
# 3. one prompt x 32 rows (the first throughput figure)
stage throughput_32 80 $T --prompts 1 --max-seqs 32 --max-new-tokens 384 --repeats 2
# 4. the runner's and the vLLM backend's CPU per token on this machine's idle CPU
stage scale 170 python3 benchmarks/scale.py --tokenizer "$D"

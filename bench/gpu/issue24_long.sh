#!/bin/bash
# Device call 2 of issue 24 (one H200, wall <= 450 s): the CUDA exactness tests of document attention
# (tests/arch/test_attention.py, marked gpu: FlexAttention's block mask against causal attention and
# against each document alone, gradients), then the long-window table (bench/long_context.py): tokens/s and
# peak memory, causal vs document attention, Qwen2.5-0.5B and Qwen2.5-1.5B shapes with random weights,
# batch 1 x 8k / 16k / 32k, compiled blocks with activation checkpointing. From the checkout root, no carry:
#   bash bench/gpu/issue24_long.sh                  # on the device ($OUT set)
#   DRYRUN=1 bash bench/gpu/issue24_long.sh         # here on CPU: the same steps at tiny sizes
# Every step has its own timeout and the script goes on when one fails; results land under $OUT.
DRY=${DRYRUN:-0}
if [ "$DRY" = 1 ]; then
  PY=${PY:-.venv/bin/python}; OUT=${OUT:-/tmp/issue24-dry/long}; DEV=cpu
  T_TESTS=600; T_SMALL=300; T_LARGE=300
  SMALL=(--device cpu --preset qwen2-tiny --seq-len 256 --seq-len 512 --doc-mean 64 --steps 1 --warmup 1 --no-compile)
  LARGE=(--device cpu --preset llama-tiny --seq-len 256 --doc-mean 64 --steps 1 --warmup 1 --no-compile)
  MARK="not gpu"
else
  PY=python3; DEV=cuda
  T_TESTS=110; T_SMALL=170; T_LARGE=150
  SMALL=(--preset qwen2.5-0.5b --seq-len 8192 --seq-len 16384 --seq-len 32768 --budget-s 135)
  LARGE=(--preset qwen2.5-1.5b --seq-len 8192 --seq-len 16384 --seq-len 32768 --first-only "" --budget-s 110)
  MARK="gpu"
  ls .whl/*.whl >/dev/null 2>&1 && python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \
    --upgrade --target /tmp/site .whl/*.whl
fi
mkdir -p "$OUT"
export PYTHONPATH=$PWD/src:/tmp/site PYTHONUNBUFFERED=1
L=$OUT/call2.log
log() { echo "[$(date +%T) +${SECONDS}s] $*" | tee -a "$L"; }
log "device $DEV; torch $($PY -c 'import torch; print(torch.__version__)')"
[ "$DEV" = cuda ] && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee -a "$L"
log "1. exactness tests ($MARK), timeout $T_TESTS s"
timeout "$T_TESTS" $PY -m pytest -q -p no:cacheprovider -m "$MARK" tests/arch/test_attention.py -rfE 2>&1 \
  | tail -40 > "$OUT/gpu_tests.txt"; log "tests rc=${PIPESTATUS[0]}: $(tail -1 "$OUT/gpu_tests.txt")"
log "2. long windows, Qwen2.5-0.5B shape, timeout $T_SMALL s"
timeout "$T_SMALL" $PY bench/long_context.py "${SMALL[@]}" --out "$OUT/long_qwen05.jsonl" > "$OUT/long_qwen05.log" 2>&1
log "rc=$?: $(grep -c tokens_per_s "$OUT/long_qwen05.jsonl" 2>/dev/null) configurations measured"
log "3. long windows, Qwen2.5-1.5B shape, timeout $T_LARGE s"
timeout "$T_LARGE" $PY bench/long_context.py "${LARGE[@]}" --out "$OUT/long_qwen15.jsonl" > "$OUT/long_qwen15.log" 2>&1
log "rc=$?: $(grep -c tokens_per_s "$OUT/long_qwen15.jsonl" 2>/dev/null) configurations measured"
$PY bench/long_context_table.py "$OUT"/long_qwen*.jsonl 2>&1 | tee "$OUT/table.md" | tee -a "$L"
log "done"

#!/bin/bash
# Device call 1 of issue 23 (one H200, about 440 s): --fp8 and the low-memory optimizers. In order, each step under
# its own timeout and a deadline for the whole call (TOTAL seconds; a step that would start too late is skipped):
#   tests    the GPU tests: tests/gpu/test_fp8.py, the CUDA cases of tests/train/test_lowbit.py
#   large    throughput, Qwen2.5-1.5B B8: warmstart bf16, --fp8 tensorwise, litgpt 0.5.13 (seq 2048, one process)
#   8b       the Llama-3-8B shape on one GPU, B4, activation checkpointing, --fp8 tensorwise, with each optimizer
#            (adamw-8bit, adamw-bf16, adamw: an out-of-memory is recorded, with its peak)
#   first    `pretrain --fp8 --compile` time to the first step, SmolLM2 shape B16, empty compile caches (the stdlib
#            corpus tokenized by a one-step run before, as issue 12's bench/gpu/first_step.sh measured it)
#   optim    100 steps from scratch of the SmolLM2 shape (B16, --fp8 tensorwise, real text) with each optimizer
#   xl       throughput, Qwen2.5-3B B4: warmstart bf16, --fp8 tensorwise, litgpt
#   small    throughput, SmolLM2-135M B16 and Qwen2.5-0.5B B8: warmstart bf16 and --fp8 tensorwise
#   extra    Qwen2.5-1.5B B8 --fp8 rowwise; the 8B shape without --fp8 (adamw-8bit); `pretrain --compile` (no fp8)
#            time to the first step, cold
# Results under $OUT (six files): steps.txt (each step's exit status and seconds), gpu_tests.txt, throughput.jsonl
# (bench/train_throughput.py records of every throughput step), optim_loss.jsonl (metrics.jsonl of each optimizer
# run, with "run" added), first_step.txt, logs.tar.gz (every log). bench/results/issue23.py turns them into tables.
# From the checkout root, carrying .whl (bench/gpu/wheels.txt) and .perf/tok:
#   bash bench/gpu/issue23_perf.sh                 (STEPS="tests large" for a subset; TOTAL=440 by default)
#   DRYRUN=1 OUT=/tmp/out bash bench/gpu/issue23_perf.sh    (on a CPU: every step at tiny sizes, no litgpt)
START=$(date +%s)
TOTAL=${TOTAL:-440}
STEPS=${STEPS:-tests large 8b first optim xl small extra}
mkdir -p "$OUT/logs"
if [ -n "$DRYRUN" ]; then
  export WARMSTART_TEST_FP8_ON_CPU=1 TORCHDYNAMO_DISABLE=1 PYTHONPATH=$PWD/src PYTHONUNBUFFERED=1
  PY=${PY:-python3}; DEV=cpu; SEQ=64; SMOL=llama-tiny; Q05=qwen2-tiny; Q15=llama-tiny; Q3=qwen2-tiny
  L8=llama-tiny; B8=2; B16=2; B4=2; NSTEP=1; WARM=1; OSTEPS=4; LITGPT=; CORPUS="--max-corpus-bytes 2000000"
  SCALE=4; TOTAL=$((TOTAL * SCALE))  # a CPU shared with others: the same steps, more time
else
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=$PWD/src:/tmp/site PYTHONUNBUFFERED=1 PYTHONPYCACHEPREFIX=/tmp/pyc
  PY=python3; DEV=cuda; SEQ=2048; SMOL=smollm2-135m; Q05=qwen2.5-0.5b; Q15=qwen2.5-1.5b; Q3=qwen2.5-3b
  L8=llama3-8b; B8=8; B16=16; B4=4; NSTEP=10; WARM=3; OSTEPS=100; LITGPT=,litgpt; CORPUS=; SCALE=1
fi
TOK=.perf/tok/smollm2-tokenizer.json
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null
  $PY -c "import torch, torchao; print('torch', torch.__version__, 'torchao', torchao.__version__)"; } > $OUT/steps.txt 2>&1

run() {  # name budget command...: one step under min(budget, time left); its output in logs/NAME.log
  local name=$1 budget=$2; shift 2
  local left=$((TOTAL - $(date +%s) + START)) t0=$(date +%s)
  budget=$((budget * SCALE))
  local t=$((budget < left ? budget : left))
  if [ $t -lt 15 ]; then echo "$name skipped: ${left}s left" >> $OUT/steps.txt; return; fi
  timeout -k 15 $t "$@" > $OUT/logs/$name.log 2>&1
  echo "$name rc=$? $(( $(date +%s) - t0 ))s (limit ${t}s)" >> $OUT/steps.txt
  tar -czf $OUT/logs.tar.gz -C $OUT logs
}
bench() {  # name budget bench-args...: bench/train_throughput.py appending to throughput.jsonl
  local name=$1 budget=$2; shift 2
  run $name $budget $PY bench/train_throughput.py --device $DEV --seq-len $SEQ --steps $NSTEP --warmup $WARM \
    --out $OUT/throughput.jsonl "$@"
}
pretrain() {  # name budget pretrain-args...: one CLI run, each line stamped with the seconds since it started
  local name=$1 budget=$2; shift 2
  rm -rf /tmp/run-$name
  run $name $budget bash -c "$PY -m warmstart pretrain --device $DEV --tokenizer $TOK $CORPUS --out /tmp/run-$name $* 2>&1 \
    | $PY -c 'import sys, time
t = time.time()
for line in sys.stdin: print(f\"{time.time() - t:6.1f}s\", line, end=\"\", flush=True)'"
}

for s in $STEPS; do case $s in
tests)
  run tests 100 $PY -m pytest -q -p no:warnings -m gpu tests/gpu/test_fp8.py tests/train/test_lowbit.py
  tail -n 30 $OUT/logs/tests.log > $OUT/gpu_tests.txt ;;
large)
  bench large 120 --preset $Q15 --batch-size $B8 --variants warmstart,warmstart-fp8$LITGPT ;;
8b)
  bench 8b 100 --preset $L8 --batch-size $B4 --activation-checkpointing --variants warmstart-fp8 \
    --optimizer adamw-8bit,adamw-bf16,adamw --steps $((NSTEP / 2 + 1)) --warmup 2 ;;
first)  # a one-step llama-tiny run first: the stdlib's tokens cached for --seq-len, the CLI's bytecode cached
  pretrain warmup 40 --preset llama-tiny --seq-len $SEQ --batch-size 1 --max-steps 1 --eval-tokens 4096 --save-every 0
  TORCHINDUCTOR_CACHE_DIR=/tmp/ind-first TRITON_CACHE_DIR=/tmp/ind-first/triton pretrain first-fp8 45 --compile \
    --fp8 tensorwise --preset $SMOL --seq-len $SEQ --batch-size $B16 --max-steps 20 --log-every 10 --eval-every 0 \
    --save-every 0
  grep -h "first step after\|^ *[0-9.]*s model:" $OUT/logs/first-fp8.log >> $OUT/first_step.txt ;;
optim)  # first's shape and fp8 setting: its compiled blocks are in the cache
  for o in adamw adamw-bf16 adamw-8bit; do
    TORCHINDUCTOR_CACHE_DIR=/tmp/ind-first TRITON_CACHE_DIR=/tmp/ind-first/triton pretrain optim-$o 40 --compile \
      --fp8 tensorwise --preset $SMOL --seq-len $SEQ --batch-size $B16 --max-steps $OSTEPS --warmup 10 --lr 2e-3 \
      --eval-every 25 --eval-tokens 65536 --save-every 0 --log-every 5 --optimizer $o
    $PY -c "import json, sys
for l in open('/tmp/run-optim-$o/metrics.jsonl'): print(json.dumps({'run': '$o', **json.loads(l)}))" \
      >> $OUT/optim_loss.jsonl 2>/dev/null
  done ;;
xl)
  bench xl 150 --preset $Q3 --batch-size $B4 --variants warmstart,warmstart-fp8$LITGPT ;;
small)
  bench small 60 --preset $SMOL --preset $Q05 --batch-size $B16 --batch-size $B8 --variants warmstart,warmstart-fp8 ;;
extra)
  bench rowwise 40 --preset $Q15 --batch-size $B8 --variants warmstart-fp8-rowwise
  bench 8b-bf16 60 --preset $L8 --batch-size $B4 --activation-checkpointing --variants warmstart --optimizer adamw-8bit \
    --steps $((NSTEP / 2 + 1)) --warmup 2
  TORCHINDUCTOR_CACHE_DIR=/tmp/ind-first-bf16 TRITON_CACHE_DIR=/tmp/ind-first-bf16/triton pretrain first-bf16 40 \
    --compile --preset $SMOL --seq-len $SEQ --batch-size $B16 --max-steps 20 --log-every 10 --eval-every 0 --save-every 0
  grep -h "first step after\|^ *[0-9.]*s model:" $OUT/logs/first-bf16.log >> $OUT/first_step.txt ;;
esac; done
echo "total $(( $(date +%s) - START ))s" >> $OUT/steps.txt
cat $OUT/steps.txt

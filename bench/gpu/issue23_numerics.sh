#!/bin/bash
# Device call 3 of issue 23 (one H200, about 200 s): what --fp8 tensorwise does to the loss. Five `pretrain --compile`
# runs on the Python stdlib (the device's own), seq 1024, evaluation every 25 steps on 65,536 validation tokens:
#   smol-bf16, smol-fp8    300 steps warm-started from the real SmolLM2-135M-Instruct GGUF (B8, --lr 3e-4)
#   qwen-scratch           100 steps from scratch of the Qwen2.5-0.5B shape with the SmolLM2 tokenizer (vocab
#                          49152 instead of Qwen's 151936: the real Qwen2.5 GGUF is too large to carry), B8, --lr 2e-3
#   qwen-bf16, qwen-fp8    300 steps warm-started from qwen-scratch's checkpoint (B4, --lr 1e-3)
# Each run under its own timeout, within TOTAL seconds. The GGUF is $GGUF (default /tmp/smollm2.gguf, joined there
# from the parts the calls before carried), checked against bench/gpu/smollm2.sha256. Results under $OUT:
# steps.txt, numerics.jsonl (every metrics.jsonl record with "run" added), logs.tar.gz.
# bench/issue23_report.py draws the curves and writes the table. From the checkout root, .whl and .perf/tok carried:
#   bash bench/gpu/issue23_numerics.sh
#   DRYRUN=1 OUT=/tmp/out GGUF=path/to/SmolLM2-135M-Instruct.Q4_1.gguf bash bench/gpu/issue23_numerics.sh   (CPU)
START=$(date +%s)
TOTAL=${TOTAL:-215}
GGUF=${GGUF:-/tmp/smollm2.gguf}
mkdir -p "$OUT/logs"
if [ -n "$DRYRUN" ]; then
  export WARMSTART_TEST_FP8_ON_CPU=1 TORCHDYNAMO_DISABLE=1 PYTHONPATH=$PWD/src PYTHONUNBUFFERED=1
  PY=${PY:-python3}; DEV=cpu; SEQ=64; QWEN=qwen2-tiny; N=4; NS=4; EVERY=2; EVAL=512; CORPUS="--max-corpus-bytes 2000000"
  B=2; B2=2; SCALE=6; TOTAL=$((TOTAL * SCALE)); UNTRAINED=--allow-untrained-init  # 4 steps train nothing
else
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=$PWD/src:/tmp/site PYTHONUNBUFFERED=1 PYTHONPYCACHEPREFIX=/tmp/pyc
  PY=python3; DEV=cuda; SEQ=1024; QWEN=qwen2.5-0.5b; N=300; NS=100; EVERY=25; EVAL=65536; CORPUS=; B=8; B2=4; SCALE=1; UNTRAINED=
fi
[ "$(sha256sum < "$GGUF" | cut -d' ' -f1)" = "$(cut -d' ' -f1 bench/gpu/smollm2.sha256)" ] \
  || { echo "$GGUF: missing or not the SmolLM2 GGUF (sha256)" | tee $OUT/steps.txt; exit 2; }
COMMON="--device $DEV --compile --seq-len $SEQ --eval-every $EVERY --eval-tokens $EVAL --log-every 5 --save-every 0 $CORPUS"

train() {  # name budget pretrain-args...
  local name=$1 budget=$2; shift 2
  local left=$((TOTAL - $(date +%s) + START)) t0=$(date +%s)
  budget=$((budget * SCALE))
  local t=$((budget < left ? budget : left))
  if [ $t -lt 15 ]; then echo "$name skipped: ${left}s left" >> $OUT/steps.txt; return; fi
  rm -rf /tmp/run-$name
  timeout -k 20 $t $PY -m warmstart pretrain $COMMON --out /tmp/run-$name "$@" > $OUT/logs/$name.log 2>&1
  echo "$name rc=$? $(( $(date +%s) - t0 ))s (limit ${t}s)" >> $OUT/steps.txt
  $PY -c "import json
for l in open('/tmp/run-$name/metrics.jsonl'): print(json.dumps({'run': '$name', **json.loads(l)}))" \
    >> $OUT/numerics.jsonl 2>/dev/null
  tar -czf $OUT/logs.tar.gz -C $OUT logs
}

train smol-bf16 50 --init $GGUF --batch-size $B --max-steps $N --lr 3e-4 --warmup 20
train smol-fp8 50 --init $GGUF --batch-size $B --max-steps $N --lr 3e-4 --warmup 20 --fp8 tensorwise
train qwen-scratch 35 --preset $QWEN --tokenizer .perf/tok/smollm2-tokenizer.json --batch-size $B --max-steps $NS \
  --lr 2e-3 --warmup 10
train qwen-bf16 40 --init /tmp/run-qwen-scratch --batch-size $B2 --max-steps $N --lr 1e-3 --warmup 20 $UNTRAINED
train qwen-fp8 40 --init /tmp/run-qwen-scratch --batch-size $B2 --max-steps $N --lr 1e-3 --warmup 20 --fp8 tensorwise $UNTRAINED
echo "total $(( $(date +%s) - START ))s" >> $OUT/steps.txt
cat $OUT/steps.txt

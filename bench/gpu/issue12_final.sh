#!/bin/bash
# Device call (issue 12, session 4, the committed code): pretrain --compile's time to the first step with cold and
# then warm compile caches (each output line stamped with seconds since start), before / after this session's step
# changes (.perf/base: `git archive 102f561 src bench`), side by side with litgpt's recipe + profiles, the GPU
# tests. From the checkout root, carrying .whl and .perf (tok/smollm2-tokenizer.json, base/):
#   bash bench/gpu/issue12_final.sh
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site PYTHONUNBUFFERED=1
L=$OUT/call.log
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee -a $L
stamp() { python3 -c "import sys,time
t=time.time()
for l in sys.stdin: print(f'{time.time()-t:6.1f}s', l, end='', flush=True)"; }
S="--preset smollm2-135m --preset qwen2.5-0.5b --batch-size 16 --batch-size 8 --steps 20 --warmup 4"
for cache in cold warm; do
  rm -rf /tmp/run-$cache
  (PYTHONPATH=src:/tmp/site timeout 100 python3 -m warmstart pretrain --device cuda --compile --preset smollm2-135m \
    --seq-len 2048 --batch-size 16 --tokenizer .perf/tok/smollm2-tokenizer.json --max-steps 40 --log-every 10 \
    --eval-every 0 --save-every 0 --out /tmp/run-$cache 2>&1) | stamp | tee $OUT/pretrain-compile-$cache.log | tail -4
done
timeout 100 python3 .perf/base/bench/train_throughput.py $S --variants warmstart --out $OUT/before.jsonl 2>&1 | tail -3 | tee -a $L
timeout 250 python3 bench/train_throughput.py $S --variants warmstart,litgpt --profile-dir $OUT/prof \
  --profile-variants warmstart --out $OUT/side_by_side.jsonl 2>&1 | tail -5 | tee -a $L
PYTHONPATH=src:/tmp/site timeout 150 python3 -m pytest -q -p no:warnings -m gpu tests/gpu 2>&1 | tail -5 | tee -a $L

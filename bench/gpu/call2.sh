#!/bin/bash
# Device call 2 (issue 12's numbers): GPU tests, side by side with litgpt + profiles, the largest shapes,
# `pretrain --compile` time to first step, the pre-issue-12 path. From the main checkout root:
#   bash .perf/bench/gpu/call2.sh        (needs .perf = src/ bench/ tests/ + tok/smollm2-tokenizer.json, and .whl)
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
cd .perf
export PYTHONPATH=src:/tmp/site:$PYTHONPATH PYTHONUNBUFFERED=1
L=$OUT/call2.log
B="python3 bench/train_throughput.py"
timeout 150 python3 -m pytest -q -p no:warnings -m gpu tests/gpu/test_perf.py 2>&1 | tail -6 | tee -a $L
$B --preset smollm2-135m --preset qwen2.5-0.5b --batch-size 16 --batch-size 8 --variants warmstart,litgpt \
  --steps 20 --warmup 4 --profile-dir $OUT/prof --profile-variants warmstart --out $OUT/side_by_side.jsonl 2>&1 | tee -a $L
$B --preset qwen2.5-1.5b --batch-size 8 --variants warmstart --steps 8 --warmup 3 --out $OUT/large.jsonl 2>&1 | tee -a $L
$B --preset qwen2.5-1.5b --preset qwen2.5-3b --batch-size 16 --batch-size 8 --activation-checkpointing \
  --variants warmstart --steps 6 --warmup 3 --out $OUT/large.jsonl 2>&1 | tee -a $L
timeout 150 python3 -m warmstart pretrain --device cuda --compile --preset smollm2-135m --seq-len 2048 --batch-size 16 \
  --tokenizer tok/smollm2-tokenizer.json --max-steps 40 --log-every 10 --eval-every 0 --save-every 0 \
  --out /tmp/run-compile 2>&1 | tee $OUT/pretrain-compile.log
cp /tmp/run-compile/metrics.jsonl $OUT/pretrain-compile-metrics.jsonl
$B --preset qwen2.5-0.5b --preset smollm2-135m --batch-size 8 --batch-size 16 --variants warmstart-logits --steps 20 \
  --warmup 4 --out $OUT/side_by_side.jsonl 2>&1 | tee -a $L

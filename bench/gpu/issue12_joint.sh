#!/bin/bash
# Device call (issue 12, session 4), with bench/results/h100/issue12/session4/joint_projections.patch applied (not
# kept: no gain): q/k/v and gate/up as joint matmuls + the clip inside fused AdamW (304cc8c), against the
# code before them (.perf/base: `git archive 102f561 src bench`), then side by side with litgpt, the CLI's time to
# the first step (run first, cold caches) and the GPU tests. From the checkout root, carrying .whl and .perf
# (.perf/tok/smollm2-tokenizer.json, .perf/base):  bash bench/gpu/issue12_joint.sh
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site PYTHONUNBUFFERED=1
L=$OUT/call.log
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee -a $L
python3 -c "import torch, triton, litgpt; print(torch.__version__, triton.__version__)" | tee -a $L
S="--preset smollm2-135m --preset qwen2.5-0.5b --batch-size 16 --batch-size 8 --steps 20 --warmup 4"
# 1. pretrain --compile, cold: time to the first step (summary line)
PYTHONPATH=src:/tmp/site timeout 100 python3 -m warmstart pretrain --device cuda --compile --preset smollm2-135m \
  --seq-len 2048 --batch-size 16 --tokenizer .perf/tok/smollm2-tokenizer.json --max-steps 40 --log-every 10 \
  --eval-every 0 --save-every 0 --out /tmp/run-compile 2>&1 | tee $OUT/pretrain-compile.log | tail -4
cp /tmp/run-compile/metrics.jsonl $OUT/pretrain-compile-metrics.jsonl 2>/dev/null
# 2. before / after, separate processes, the same machine
timeout 110 python3 .perf/base/bench/train_throughput.py $S --variants warmstart --out $OUT/ab_before.jsonl 2>&1 | tail -4 | tee -a $L
timeout 110 python3 bench/train_throughput.py $S --variants warmstart --out $OUT/ab_after.jsonl 2>&1 | tail -4 | tee -a $L
# 3. side by side with litgpt's recipe (one process), profile of warmstart
timeout 260 python3 bench/train_throughput.py $S --variants warmstart,litgpt --profile-dir $OUT/prof \
  --profile-variants warmstart --out $OUT/side_by_side.jsonl 2>&1 | tail -6 | tee -a $L
# 4. GPU tests
PYTHONPATH=src:/tmp/site timeout 100 python3 -m pytest -q -p no:warnings -m gpu tests/gpu/test_cuda.py tests/gpu/test_perf.py 2>&1 | tail -5 | tee -a $L

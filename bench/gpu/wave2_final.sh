#!/bin/bash
# Device call (wave 2, after the seams / dist / perf / harden merges): GPU tests, FSDP2 overhead at world
# size 1, side by side with litgpt, `pretrain --compile` time to first step (plain and FSDP2 under torchrun).
# From the checkout root with .whl (litgpt + typer/pydantic and their deps) and tok/ carried:
#   bash bench/gpu/wave2_final.sh [part]     part: tests | fsdp | perf | cli (default: all)
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=$PWD/src:/tmp/site PYTHONUNBUFFERED=1
part=${1:-all}
TOK=.perf/tok/smollm2-tokenizer.json
{ nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
  python3 -c "import torch, transformers, triton; print('torch', torch.__version__, 'transformers', transformers.__version__, 'triton', triton.__version__)"; } > $OUT/env.txt 2>&1
if [[ $part == all || $part == tests ]]; then
  timeout 420 python3 -m pytest -q -p no:warnings -m gpu tests/gpu 2>&1 | tail -25 > $OUT/gpu_tests.txt
fi
if [[ $part == all || $part == fsdp ]]; then
  timeout 500 python3 bench/fsdp_overhead.py --out $OUT/fsdp_overhead.json 2>&1 | tail -30 > $OUT/fsdp_overhead.log
fi
if [[ $part == all || $part == perf ]]; then
  timeout 400 python3 bench/train_throughput.py --preset smollm2-135m --preset qwen2.5-0.5b --batch-size 16 --batch-size 8 \
    --variants warmstart,litgpt --steps 20 --warmup 4 --out $OUT/side_by_side.jsonl 2>&1 | tail -30 > $OUT/side_by_side.log
fi
if [[ $part == all || $part == cli ]]; then
  common="--device cuda --compile --preset smollm2-135m --seq-len 2048 --batch-size 16 --tokenizer $TOK \
    --max-steps 40 --log-every 10 --eval-every 0 --save-every 0"
  timeout 200 python3 -m warmstart pretrain $common --out /tmp/run-compile > $OUT/pretrain-compile.log 2>&1
  cp /tmp/run-compile/metrics.jsonl $OUT/pretrain-compile-metrics.jsonl
  timeout 200 torchrun --standalone --nproc-per-node 1 -m warmstart pretrain $common --parallel fsdp \
    --out /tmp/run-fsdp > $OUT/pretrain-fsdp-compile.log 2>&1
  cp /tmp/run-fsdp/metrics.jsonl $OUT/pretrain-fsdp-compile-metrics.jsonl
fi
ls $OUT

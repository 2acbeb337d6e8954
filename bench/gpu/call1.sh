#!/bin/bash
# Device call 1: environment, GPU tests of issue 12, SDPA backends, side by side with litgpt + profiles.
# Run from the main checkout root on the device: bash .perf/bench/gpu/call1.sh
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PYTHONPATH PYTHONUNBUFFERED=1
cd .perf
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv | tee -a $OUT/call1.log
python3 -c "import torch, triton, litgpt, transformers; print(torch.__version__, triton.__version__, transformers.__version__)" | tee -a $OUT/call1.log
PYTHONPATH=src:$PYTHONPATH timeout 120 python3 -m pytest -q -m gpu tests/gpu/test_perf.py 2>&1 | tail -15 | tee -a $OUT/call1.log
timeout 90 python3 bench/attn_backends.py 2>&1 | tee -a $OUT/call1.log
PYTHONPATH=src:$PYTHONPATH python3 bench/train_throughput.py --preset smollm2-135m --preset qwen2.5-0.5b \
  --batch-size 16 --batch-size 8 --variants warmstart,litgpt,litgpt-full --steps 20 --warmup 4 \
  --profile-dir $OUT/prof --profile-variants warmstart,litgpt-full --out $OUT/side_by_side.jsonl 2>&1 | tee $OUT/side.log

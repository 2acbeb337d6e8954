#!/bin/bash
# Device call (issue 12): `pretrain --compile`'s time to the first step, SmolLM2 shape, B16 x 2048, on a Python whose
# bytecode is cached as any pip install leaves it (the device image's venv is read-only and has no .pyc: every
# process there compiles some 1,800 modules from source, 4.4 s of `builtins.compile` before a step; bytecode goes to
# PYTHONPYCACHEPREFIX here). A first --compile run of another shape (llama-tiny) writes the bytecode of everything
# compilation imports; then SmolLM2 runs with empty compile caches (cold), then again (warm). Each output line is
# stamped with the seconds since its process started. From the checkout root, carrying .whl and .perf/tok:
#   bash bench/gpu/first_step.sh
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=src:/tmp/site PYTHONUNBUFFERED=1 PYTHONPYCACHEPREFIX=/tmp/pyc
stamp() { python3 -c "import sys,time
t=time.time()
for l in sys.stdin: print(f'{time.time()-t:6.1f}s', l, end='', flush=True)"; }
run() {  # name preset batch seq: one pretrain --compile run, 20 steps
  rm -rf /tmp/run-$1
  (timeout 120 python3 -m warmstart pretrain --device cuda --compile --preset $2 --seq-len $4 --batch-size $3 \
    --tokenizer .perf/tok/smollm2-tokenizer.json --max-steps 20 --log-every 10 --eval-every 0 --save-every 0 \
    --out /tmp/run-$1 2>&1) | stamp | tee $OUT/first-step-$1.log | tail -3
}
TORCHINDUCTOR_CACHE_DIR=/tmp/ind-warmup TRITON_CACHE_DIR=/tmp/ind-warmup/triton run bytecode llama-tiny 4 256
export TORCHINDUCTOR_CACHE_DIR=/tmp/ind TRITON_CACHE_DIR=/tmp/ind/triton
run cold smollm2-135m 16 2048
run warm smollm2-135m 16 2048

#!/bin/bash
# Second device call on nvidia-h100-x2 (issue 10): NCCL bus bandwidth; weak scaling 1 -> 2 GPUs again, variants
# interleaved (is FSDP2's reshard / reduce dtype or noise what differed?); the same step through the CLI (the whole
# loop: data, logging, stop agreement) with FSDP2 and with --parallel auto (DDP for this size); the Llama-3-8B
# shape at micro-batch 2. From the checkout root, .whl and .perf/tok carried:  bash bench/gpu/scaling2.sh
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=$PWD/src:/tmp/site PYTHONUNBUFFERED=1 NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
NCCL_DEBUG=INFO timeout 60 torchrun --standalone --nproc-per-node 2 bench/nccl_bandwidth.py > $OUT/nccl.log 2>&1
grep -E "GB/s|via (P2P|SHM|NET)" $OUT/nccl.log | sort | uniq -c | sort -rn | head -12
R=$OUT/scaling.jsonl
run() { local n=$1 t=$2; shift 2; timeout $t torchrun --standalone --nproc-per-node $n bench/scaling.py --out $R "$@" \
  2>&1 | grep -E "Error|error" | tail -n 3; }
run 1 120 --preset qwen2.5-0.5b --batch-size 8 --variant fsdp --variant none
run 2 200 --preset qwen2.5-0.5b --batch-size 8 --variant fsdp --variant fsdp:reshard=no --variant ddp --variant fsdp
run 1 90 --preset qwen2.5-0.5b --vocab-size 49152 --batch-size 8 --variant fsdp --variant none
run 2 120 --preset qwen2.5-0.5b --vocab-size 49152 --batch-size 8 --variant fsdp --variant ddp
TOK=.perf/tok/smollm2-tokenizer.json
cli() { local n=$1 name=$2; shift 2
  timeout 150 torchrun --standalone --nproc-per-node $n -m warmstart pretrain --device cuda --compile --seq-len 2048 \
    --log-every 10 --eval-every 0 --save-every 0 --preset qwen2.5-0.5b --tokenizer $TOK --batch-size 8 --max-steps 40 \
    --out /tmp/$name "$@" > $OUT/cli-$name.log 2>&1; echo "$name rc=$?"; grep -E "^model:" $OUT/cli-$name.log | head -1
  python3 -c "import json,sys; r=[json.loads(l) for l in open('/tmp/$name/metrics.jsonl')]; r=[x for x in r if x['step']>=30 and 'tokens_per_s' in x]; print('$name', [(x['step'], x['tokens_per_s'], x.get('mfu')) for x in r])" 2>&1 | tail -1; }
cli 1 cli-fsdp-1gpu --parallel fsdp
cli 2 cli-fsdp-2gpu --parallel fsdp
cli 2 cli-auto-2gpu
run 2 200 --preset llama3-8b --batch-size 2 --steps 6 --warmup 3 --variant fsdp:ac=1
python3 bench/scaling.py --summary $R

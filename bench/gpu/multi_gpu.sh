#!/bin/bash
# Device call on nvidia-h100-x2 (issue 10, what two GPUs allow): weak scaling 1 -> 2 GPUs with FSDP2 + compile for
# the Qwen2.5-0.5B and SmolLM2 shapes (fixed micro-batch per GPU), a warm start on 1 and 2 GPUs from a checkpoint
# trained on the machine (same step-0 val_loss, then 200 steps on 2 GPUs), resume of the 2-GPU run on 1 GPU, and
# the two-GPU tests. From the checkout root with .whl and .perf/tok carried:  bash bench/gpu/multi_gpu.sh
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=$PWD/src:/tmp/site PYTHONUNBUFFERED=1 NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
{ nvidia-smi --query-gpu=index,name,driver_version,memory.total --format=csv,noheader; nvidia-smi topo -m
  python3 -c "import torch; print('torch', torch.__version__, 'nccl', torch.cuda.nccl.version())"; } > $OUT/env.txt 2>&1
TOK=.perf/tok/smollm2-tokenizer.json
COMMON="--device ${DEVICE:-cuda} ${COMPILE---compile} --seq-len ${SEQ:-2048} --log-every 10 --eval-every 0 --save-every 0"
ws() { local n=$1 name=$2 t=$3; shift 3
  timeout $t torchrun --standalone --nproc-per-node $n -m warmstart pretrain $COMMON --out /tmp/$name "$@" > $OUT/$name.log 2>&1
  echo "$name rc=$?" >> $OUT/rc.txt; cp /tmp/$name/metrics.jsonl $OUT/$name-metrics.jsonl 2>/dev/null; tail -n 4 $OUT/$name.log; }
ws 1 qwen-1gpu 100 --preset ${QWEN:-qwen2.5-0.5b} --tokenizer $TOK --batch-size 8 --parallel fsdp --max-steps 30
ws 2 qwen-2gpu 110 --preset ${QWEN:-qwen2.5-0.5b} --tokenizer $TOK --batch-size 8 --parallel fsdp --max-steps 30
ws 1 smol-1gpu 80 --preset ${SMOL:-smollm2-135m} --tokenizer $TOK --batch-size 16 --parallel fsdp --max-steps 30
INIT=/tmp/smol-1gpu/checkpoints/$(cat /tmp/smol-1gpu/checkpoints/latest)
WARM="--init $INIT --lr 3e-4 --warmup 10 --eval-every 50 --eval-tokens 65536"
ws 1 warm-1gpu 80 $WARM --batch-size 16 --max-steps 10
ws 2 warm-2gpu 120 $WARM --batch-size 8 --max-steps 200 --save-every 100
timeout 80 torchrun --standalone --nproc-per-node 1 -m warmstart pretrain --resume /tmp/warm-2gpu --max-steps 220 \
  > $OUT/resume-1gpu.log 2>&1; echo "resume-1gpu rc=$?" >> $OUT/rc.txt; tail -n 5 $OUT/resume-1gpu.log
cp /tmp/warm-2gpu/metrics.jsonl $OUT/warm-2gpu-then-1gpu-metrics.jsonl
ws 2 smol-2gpu 90 --preset ${SMOL:-smollm2-135m} --tokenizer $TOK --batch-size 16 --parallel fsdp --max-steps 30
[ -n "$SKIP_TESTS" ] || timeout 120 python3 -m pytest -q -p no:warnings -m gpu tests/gpu/test_fsdp.py -k two_gpus 2>&1 | tail -5 > $OUT/two_gpu_tests.txt
cat $OUT/rc.txt $OUT/two_gpu_tests.txt

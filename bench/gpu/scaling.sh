#!/bin/bash
# Device call on nvidia-h100-x2 (issue 10): weak scaling 1 -> 2 GPUs of warmstart's step (bench/scaling.py), the
# parallel variants side by side (FSDP2 as pretrain runs it, layers not resharded, bf16 reduction, DDP), a profile
# of the two-GPU FSDP2 step, and the Llama-3-8B shape with FSDP2 on 2 GPUs. From the checkout root, .whl carried:
#   bash bench/gpu/scaling.sh            (PART=qwen|8b|all, default all)
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=$PWD/src:/tmp/site PYTHONUNBUFFERED=1 NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
nvidia-smi --query-gpu=index,name,driver_version,memory.total --format=csv,noheader > $OUT/env.txt 2>&1
python3 -c "import torch; print('torch', torch.__version__, 'nccl', torch.cuda.nccl.version())" >> $OUT/env.txt 2>&1
R=$OUT/scaling.jsonl
run() { local n=$1 t=$2; shift 2; timeout $t torchrun --standalone --nproc-per-node $n bench/scaling.py --out $R "$@" \
  2>&1 | grep -v "^\[rank.\]:\[W\|Warning\|warn(" | tail -n 3; }
if [ "${PART:-all}" != 8b ]; then
  run 1 150 --preset qwen2.5-0.5b --batch-size 8 ${V1:---variant none --variant fsdp --variant none:cmode=reduce-overhead}
  run 2 240 --preset qwen2.5-0.5b --batch-size 8 ${V2:---variant fsdp:profile=1 --variant fsdp:reshard=no --variant fsdp:reduce=bf16 --variant ddp}
fi
if [ "${PART:-all}" != qwen ]; then
  run 2 200 --preset llama3-8b --batch-size 1 --steps 6 --warmup 3 ${V8:---variant fsdp:ac=1}
fi
python3 bench/scaling.py --summary $R
cat $OUT/profile-*.txt 2>/dev/null | head -60

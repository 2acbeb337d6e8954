python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=src:/tmp/site PYTHONUNBUFFERED=1
for i in 1 2; do /usr/bin/time -f "cli import %e s" python3 -c "from warmstart.cli import _register; _register()"; done
python3 -X importtime -c "from warmstart.cli import _register; _register()" 2> $OUT/importtime.txt
sort -t'|' -k2 -n $OUT/importtime.txt | tail -40 | cut -c1-140
python3 -c "
import time; t=time.time()
import torch; a=time.time(); print('import torch', round(a-t,2))
torch.cuda.init(); torch.zeros(1,device='cuda'); b=time.time(); print('cuda init', round(b-a,2))
import torch._dynamo; c=time.time(); print('dynamo', round(c-b,2))
import torch._inductor.config; import triton; d=time.time(); print('inductor+triton', round(d-c,2))
"
python3 -m cProfile -o $OUT/pretrain.prof -m warmstart pretrain --device cuda --preset smollm2-135m --seq-len 2048 \
  --batch-size 16 --tokenizer .perf/tok/smollm2-tokenizer.json --max-steps 1 --log-every 1 --eval-every 0 \
  --save-every 0 --out /tmp/run-prof 2>&1 | tail -2
python3 -c "
import pstats; p=pstats.Stats('$OUT/pretrain.prof'); p.sort_stats('cumulative').print_stats(45)" | tail -60 | cut -c1-160

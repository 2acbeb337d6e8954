import json, os, sys, time, functools
sys.path.insert(0, "bench"); sys.path.insert(0, "src")
import torch
import torch.distributed.fsdp as F
import fsdp_overhead as fo
from warmstart.train.distributed import setup_distributed
orig = F.fully_shard
def patched(raf):
    @functools.wraps(orig)
    def fs(m, **kw):
        kw.setdefault("reshard_after_forward", raf)
        return orig(m, **kw)
    return fs
dist = setup_distributed("cuda", want_group=True)
torch.backends.cuda.matmul.allow_tf32 = True
torch.backends.cudnn.allow_tf32 = True
out = open(os.environ["OUT"] + "/fsdp_exp.jsonl", "a")
preset, B = sys.argv[1], int(sys.argv[2])
V = [("plain", "none", True, None), ("fsdp", "fsdp", True, True), ("fsdp-noreshard", "fsdp", True, False),
                              ("plain-eager", "none", False, None), ("fsdp-eager", "fsdp", False, True)]
if len(sys.argv) > 3: V = V[:3]
for name, mode, comp, raf in V:
    F.fully_shard = patched(raf) if raf is not None else orig
    r = fo.bench_one(preset, mode, device="cuda", seq_len=2048, batch_size=B, steps=20, warmup=6, compile_=comp, dist=dist)
    r["variant"] = name
    print(json.dumps(r), flush=True); out.write(json.dumps(r) + "\n"); out.flush()

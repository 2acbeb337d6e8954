#!/bin/bash
# Device call 3 of issue 24 (one H200, wall <= 220 s): a long-context extension of the real SmolLM2-135M-Instruct
# GGUF. Its GGUF declares 8192 positions (rope_theta 1e5), so the extension goes 8192 -> 16384 (SEQ/CTX): run A
# trains at the new length with --context-length alone (no RoPE change: positions past the trained ones), run B
# the same with --rope-scaling yarn:2 (ROPE). Each reports the val loss at the new length at step 0 (gate 7,
# recorded-loss comparison skipped: the line says so) and after STEPS steps (B2 x 16k windows of Python
# stdlib source). The GGUF must lie at /tmp/smollm2.gguf (sha256 in bench/gpu/smollm2.sha256).
# From the checkout root, carrying .whl (gguf-0.19.0-py3-none-any.whl):
#   bash bench/gpu/issue24_extend.sh
#   DRYRUN=1 bash bench/gpu/issue24_extend.sh      # here on CPU: the same steps, 256-token windows, 2 steps
DRY=${DRYRUN:-0}
ROPE=${ROPE:---rope-scaling yarn:2}
if [ "$DRY" = 1 ]; then
  PY=${PY:-.venv/bin/python}; OUT=${OUT:-/tmp/issue24-dry/extend}
  GGUF=${GGUF:-$(cut -d' ' -f3 bench/gpu/smollm2.sha256)}  # the one make setup installs
  CTX=${CTX:-16384}; SEQ=${SEQ:-256}; STEPS=${STEPS:-2}; BATCH=1; T_RUN=600
  PACKAGES="email json"
  RUN=(--device cpu --no-compile)
else
  PY=python3; GGUF=${GGUF:-/tmp/smollm2.gguf}
  CTX=${CTX:-16384}; SEQ=${SEQ:-16384}; STEPS=${STEPS:-60}; BATCH=2; T_RUN=100
  PACKAGES="asyncio email unittest multiprocessing xml http idlelib tkinter importlib logging concurrent json"
  RUN=(--device cuda --compile)
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
fi
mkdir -p "$OUT"
export PYTHONPATH=$PWD/src:/tmp/site PYTHONUNBUFFERED=1 WARMSTART_CACHE=/tmp/issue24-cache
L=$OUT/call3.log
log() { echo "[$(date +%T) +${SECONDS}s] $*" | tee -a "$L"; }
want=$(cut -d' ' -f1 bench/gpu/smollm2.sha256); got=$(sha256sum "$GGUF" | cut -d' ' -f1)
[ "$want" = "$got" ] && log "GGUF $GGUF sha256 ok" || { log "GGUF $GGUF sha256 $got, expected $want: stop"; exit 1; }
STDLIB=$($PY -c 'import os; print(os.path.dirname(os.__file__))')
DATA=(); for d in $PACKAGES; do [ -d "$STDLIB/$d" ] && DATA+=(--data "$STDLIB/$d"); done  # whole packages:
log "data: ${DATA[*]}"  # --max-corpus-bytes would pick documents by their split hash, all of them held out
COMMON=(pretrain --init "$GGUF" "${RUN[@]}" "${DATA[@]}" --include '*.py'
        --val-fraction 0.05 --seq-len $SEQ --context-length $CTX --batch-size $BATCH --max-steps $STEPS
        --eval-tokens $((16 * SEQ)) --eval-every $STEPS --save-every 0 --log-every 10 --lr 2e-4 --warmup-steps 10)
for run in A B; do
  extra=(); [ $run = B ] && extra=($ROPE)
  log "run $run: ${extra[*]:-no RoPE change}, timeout $T_RUN s"
  rm -rf /tmp/issue24-ext-$run
  timeout $T_RUN $PY -m warmstart "${COMMON[@]}" "${extra[@]}" --out /tmp/issue24-ext-$run > "$OUT/extend_$run.log" 2>&1
  log "run $run rc=$?: $(grep -E 'context extended|step 0 val_loss|^val_loss|^done' "$OUT/extend_$run.log" | tr '\n' ' ')"
  cp /tmp/issue24-ext-$run/metrics.jsonl "$OUT/metrics_$run.jsonl" 2>/dev/null
done
log "done"

#!/usr/bin/env bash
# temporary device script (not committed)
python3 -c "import quack, flash_attn.cute" 2>/dev/null || bash bench/fa4_wheels.sh install || exit 3
[ -d /tmp/ocw ] || python3 -m pip install --no-deps -q --target /tmp/ocw .carry/wheels/*.whl
export PYTHONPATH=src:/tmp/ocw
timeout -k 10 -s INT 560 python3 bench/train_throughput.py --out $OUT/b32 --models ViT-B-32 \
  --only 'train/open_clip/ViT-B-32/eager,train/open_clip/ViT-B-32/compile,compile-model$,cudnn-fa4+step-graph+streams$,quack-mlp+cudnn-fa4+cudagraphs' \
  --time-budget-s 540 2>&1 | grep -v "Warning\|exe_args\|_warn_once" | tail -14

#!/usr/bin/env bash
# Class A graft tuning on the testbed (SmolLM2 LLaVA donor -> arithmetic SmolLM2, base SmolLM2).
set -euo pipefail
cd /work/main
LIMIT=${LIMIT:-48}
OMP_NUM_THREADS=1 /work/venv/bin/vadasm tune \
  --donor testbed:llava-smollm2 --recipient testbed:smollm2-arith --base testbed:smollm2 \
  --param beta=0:1.5@1 --grid-points 4 --tasks easyvqa,arith --limit "$LIMIT" --seed 0 --threads 1 \
  --out results/tune_class_a --output /tmp/tb/smollm2-sees-tuned --force

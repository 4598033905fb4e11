#!/usr/bin/env bash
# Class A graft tuning on the testbed (SmolLM2 LLaVA donor -> arithmetic SmolLM2, base SmolLM2).
set -euo pipefail
cd "$(dirname "$0")/../.."
VADASM=${VADASM:-.venv/bin/vadasm}
LIMIT=${LIMIT:-48}
OMP_NUM_THREADS=1 "$VADASM" tune \
  --donor testbed:llava-smollm2 --recipient testbed:smollm2-arith --base testbed:smollm2 \
  --param beta=0:1.5@1 --grid-points 4 --tasks easyvqa,arith --limit "$LIMIT" --seed 0 --threads 1 \
  --out results/tune_class_a --output out/smollm2-sees-tuned --force

#!/usr/bin/env bash
# Class A graft tuning on the testbed (SmolLM2 LLaVA donor -> arithmetic SmolLM2, base SmolLM2).
set -euo pipefail
cd "$(dirname "$0")/../.."
VADASM=${VADASM:-.venv/bin/vadasm}
LIMIT=${LIMIT:-100}
THREADS=${THREADS:-2}
"$VADASM" tune \
  --donor testbed:llava-smollm2 --recipient testbed:smollm2-arith --base testbed:smollm2 \
  --param beta=0:3@1 --grid-points 7 --tasks easyvqa,arith --limit "$LIMIT" --seed 0 --threads "$THREADS" \
  --out results/tune_class_a --output out/smollm2-sees-tuned --force
